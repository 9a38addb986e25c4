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
