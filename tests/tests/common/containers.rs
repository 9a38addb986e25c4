//! Helpers for tests that drive containers (`vswitchctl container ...`).

use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::Value;

use super::*;

/// Container names the test uses: their namespaces and /etc/netns files removed on drop
/// whatever happened (the switch's own removal is what the tests check).
pub struct Names(pub Vec<String>);

impl Names {
    pub fn new(tags: &[&str]) -> Names {
        Names(tags.iter().map(|t| unique(t)).collect())
    }
    pub fn get(&self, i: usize) -> &str {
        &self.0[i]
    }
}

impl Drop for Names {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = sh("ip", &["netns", "del", n]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(n));
        }
    }
}

pub fn exec(d: &Daemon, c: &str, cmd: &[&str]) -> std::process::Output {
    let mut a = vec!["container", "exec", c, "--"];
    a.extend_from_slice(cmd);
    d.ctl(&a)
}

pub fn exec_ok(d: &Daemon, c: &str, cmd: &[&str]) -> String {
    let out = exec(d, c, cmd);
    assert!(
        out.status.success(),
        "container exec {c} {cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `python3 -m http.server PORT` inside the container, started through `container exec` (which
/// execs in place: the PID is the server's), serving a directory with an index naming it.
pub fn http_server(d: &Daemon, c: &str, dir: &TempDir, port: u16) -> Bg {
    let root = dir.path(c);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), format!("hello from {c}\n")).unwrap();
    let child = Command::new(bin("vswitchctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["container", "exec", c, "--", "python3", "-m", "http.server"])
        .arg(port.to_string())
        .arg("--directory")
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Bg(child)
}

pub fn curl(d: &Daemon, c: &str, url: &str) -> Option<String> {
    let out = exec(d, c, &["curl", "-sf", "-m", "3", url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn inspect(d: &Daemon, c: &str) -> Value {
    d.json(&["container", "inspect", c])
}

pub fn ip_of(d: &Daemon, c: &str, net: &str) -> String {
    let v = inspect(d, c);
    let n = v["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["network"] == net)
        .unwrap_or_else(|| panic!("{c} not on {net}: {v}"));
    n["ip"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

pub fn links(d: &Daemon, c: &str) -> Vec<String> {
    let out = exec_ok(d, c, &["ip", "-o", "link"]);
    out.lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|s| s.trim().split('@').next().unwrap().to_string())
        .collect()
}

/// iperf3 TCP both ways from container `c1` of `d1` to a server in container `c2` of `d2` at
/// `ip2`: each way must move data (over 1 Mbit/s). A run may start before the server listens
/// (or meet the last one's end): tried again for a while, each run's JSON kept for the message.
pub fn iperf_both_ways(d1: &Daemon, c1: &str, d2: &Daemon, c2: &str, ip2: &str) {
    let _server = Bg(Command::new(bin("vswitchctl"))
        .arg("--socket")
        .arg(&d2.socket)
        .args(["container", "exec", c2, "--", "iperf3", "-s"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    for reverse in [false, true] {
        let mut args = vec!["iperf3", "-c", ip2, "-t", "2", "-J"];
        if reverse {
            args.push("-R");
        }
        let mut last = String::new();
        let moved = wait_until(15, || {
            let o = exec(d1, c1, &args);
            last = String::from_utf8_lossy(&o.stdout).into_owned();
            let v: Value = serde_json::from_str(&last).unwrap_or_default();
            let bps = v["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0);
            o.status.success() && bps > 1e6
        });
        assert!(moved, "iperf3 moved data (reverse={reverse}): {last}");
    }
}
