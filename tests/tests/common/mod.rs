//! Shared test scaffolding: namespaces and daemons that clean up after themselves (Drop guards),
//! names unique per test process and call so tests run in parallel without colliding.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod containers;
pub mod egress;
pub mod etcd;
pub mod runtimes;
pub mod segment;
pub mod underlay;

static COUNTER: AtomicU32 = AtomicU32::new(0);

thread_local! {
    /// The port type this test runs with: "tap", "afxdp" or "mixed" (see `per_port_type!`).
    static PORT_TYPE: std::cell::Cell<&'static str> = const { std::cell::Cell::new("tap") };
}

/// Runs `test` with ports of `port_type`: every `add-port` a Daemon started by the test sends
/// without its own `--type` gets `--type tap`, `--type afxdp`, or (mixed) the two in turn.
pub fn with_port_type(port_type: &'static str, test: fn()) {
    set_port_type(port_type);
    test();
}

/// Sets the port type for daemons this thread starts from now on.
pub fn set_port_type(port_type: &'static str) {
    PORT_TYPE.with(|t| t.set(port_type));
}

/// The test's port type ("tap", "afxdp" or "mixed").
pub fn port_type() -> &'static str {
    PORT_TYPE.with(|t| t.get())
}

/// Generates, for each named test body, a module with the tests `tap`, `afxdp` and `mixed`:
/// the same assertions over TAP ports, AF_XDP ports and networks mixing both.
#[macro_export]
macro_rules! per_port_type {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn tap() {
                $crate::common::with_port_type("tap", super::$name)
            }
            #[test]
            fn afxdp() {
                $crate::common::with_port_type("afxdp", super::$name)
            }
            #[test]
            fn mixed() {
                $crate::common::with_port_type("mixed", super::$name)
            }
        }
    )*};
}

/// A short unique name: `vt<pid><n><tag>`.
pub fn unique(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    format!("vt{}x{n}{tag}", std::process::id() % 100_000)
}

/// Whether this host lets processes use io_uring (`kernel.io_uring_disabled`); where it does
/// not, vswitchd falls back to read/write by itself and the batched path cannot be checked.
pub fn io_uring_allowed() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .map(|v| v.trim() == "0")
        .unwrap_or(true)
}

pub fn require_root() {
    assert_eq!(
        must("id", &["-u"]).trim(),
        "0",
        "integration tests need root (network namespaces, TAP devices)"
    );
}

/// A binary of this workspace, built by `cargo build --workspace`.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} not found: run `cargo build --workspace` before the tests (the README's test command does)",
        p.display()
    );
    p
}

pub fn sh(cmd: &str, args: &[&str]) -> Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

pub fn must(cmd: &str, args: &[&str]) -> String {
    let out = sh(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A network namespace, deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(tag: &str) -> Netns {
        let name = unique(tag);
        must("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        // Quiet namespaces: no IPv6 chatter (router solicitations, DAD) to disturb counters.
        ns.exec_ok(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]);
        ns
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    pub fn exec_ok(&self, args: &[&str]) -> String {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "in {}: {args:?} failed: {}{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `count` pings to `ip`; true when all of them were answered.
    pub fn ping(&self, ip: &str, count: u32) -> bool {
        let c = count.to_string();
        self.exec(&["ping", "-c", &c, "-i", "0.2", "-W", "1", "-q", ip])
            .status
            .success()
    }

    /// True when at least one of `count` pings was answered.
    pub fn ping_any(&self, ip: &str, count: u32) -> bool {
        let c = count.to_string();
        let out = self.exec(&["ping", "-c", &c, "-i", "0.2", "-W", "1", "-q", ip]);
        let text = String::from_utf8_lossy(&out.stdout);
        !text.contains(" 0 received") && text.contains("received")
    }

    pub fn has_link(&self, ifname: &str) -> bool {
        sh("ip", &["-n", &self.name, "link", "show", "dev", ifname])
            .status
            .success()
    }

    /// The index of `ifname` (`ip -o link` prints "N: name@peer: ...").
    pub fn ifindex(&self, ifname: &str) -> u32 {
        let out = must(
            "ip",
            &["-n", &self.name, "-o", "link", "show", "dev", ifname],
        );
        out.split(':')
            .next()
            .and_then(|i| i.trim().parse().ok())
            .unwrap_or_else(|| panic!("no index in {out:?}"))
    }

    /// Names of all links in the namespace.
    pub fn links(&self) -> Vec<String> {
        must("ip", &["-n", &self.name, "-o", "link", "show"])
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|s| s.split('@').next().unwrap_or(s).to_string())
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = sh("ip", &["netns", "del", &self.name]);
        // The resolver config vswitchd may have written for this namespace.
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.name));
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(unique(tag));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A background process killed (by PID) on drop.
pub struct Bg(pub Child);

impl Drop for Bg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A vswitchd of our own with a private socket and state dir; killed (by PID) and removed on drop.
pub struct Daemon {
    child: Option<Child>,
    /// "tap", "afxdp" or "mixed": the `--type` given to add-port requests (see `with_port_type`).
    pub port_type: &'static str,
    ports_added: std::cell::Cell<u32>,
    /// The "host" namespace an AF_XDP test daemon runs in, so the veths' host ends never
    /// appear in the real root namespace. Dropped (with the veths) after the daemon is killed.
    _host: Option<Netns>,
    /// Run inside this namespace (its "host"), with these extra arguments.
    netns: Option<String>,
    /// Enter `netns` with nsenter (network namespace only) instead of `ip netns exec` (which
    /// gives the daemon a private mount namespace: namespaces it mounts would not be seen).
    keep_mounts: bool,
    extra: Vec<String>,
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state_dir: PathBuf,
    pub config: PathBuf,
}

impl Daemon {
    /// Starts a daemon whose config declares a `bridge` network on a subnet unique to the test
    /// (so parallel tests never overlap in spirit), and waits until it answers.
    pub fn start() -> Daemon {
        Daemon::start_with(None, &[])
    }

    /// Starts a daemon inside `netns` (when given) with extra command-line arguments. Its DNS
    /// upstreams (unless `extra` names some) come from a resolv.conf of its own that does not
    /// exist: no test forwards names to the machine's real resolvers by accident.
    pub fn start_with(netns: Option<&Netns>, extra: &[&str]) -> Daemon {
        Daemon::start_opts(netns, extra, false)
    }

    /// As `start_with`, but the daemon follows the resolv.conf it finds at the default place,
    /// `/etc/resolv.conf` — under `ip netns exec NS` the bind mount of
    /// `/etc/netns/NS/resolv.conf`, when that file exists at start.
    pub fn start_with_host_resolv_conf(netns: Option<&Netns>, extra: &[&str]) -> Daemon {
        Daemon::start_opts(netns, extra, true)
    }

    /// As `start_with`, entering `netns` with nsenter: the daemon shares the test's mount
    /// namespace (the namespaces it creates for containers are visible to the test).
    pub fn start_keeping_mounts(netns: &Netns, extra: &[&str]) -> Daemon {
        let mut d = Daemon::start_opts_unspawned(Some(netns), extra, false);
        d.keep_mounts = true;
        d.spawn();
        d
    }

    /// As `start_with`, with `toml` added to the daemon's config file (e.g. a `[daemon]`
    /// table).
    pub fn start_with_config(netns: Option<&Netns>, toml: &str) -> Daemon {
        let mut d = Daemon::start_opts_unspawned(netns, &[], false);
        let mut text = std::fs::read_to_string(&d.config).unwrap();
        text.push_str(toml);
        std::fs::write(&d.config, text).unwrap();
        d.spawn();
        d
    }

    fn start_opts(netns: Option<&Netns>, extra: &[&str], host_resolv_conf: bool) -> Daemon {
        let mut d = Daemon::start_opts_unspawned(netns, extra, host_resolv_conf);
        d.spawn();
        d
    }

    fn start_opts_unspawned(
        netns: Option<&Netns>,
        extra: &[&str],
        host_resolv_conf: bool,
    ) -> Daemon {
        let port_type = port_type();
        let host = match (netns, port_type) {
            (None, "afxdp" | "mixed") => Some(Netns::new("h")),
            _ => None,
        };
        let netns_name = netns.or(host.as_ref()).map(|n| n.name.clone());
        let dir = std::env::temp_dir().join(unique("d"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("vswitchd.toml");
        std::fs::write(
            &config,
            "[[network]]\nname = \"bridge\"\nsubnet = \"172.17.0.0/16\"\ngateway = \"172.17.0.1\"\ndns = false\n",
        )
        .unwrap();
        let mut extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        if !host_resolv_conf {
            extra.push("--resolv-conf".into());
            extra.push(dir.join("resolv.conf").display().to_string());
        }
        Daemon {
            child: None,
            port_type,
            ports_added: std::cell::Cell::new(0),
            _host: host,
            netns: netns_name,
            keep_mounts: false,
            extra,
            socket: dir.join("vswitchd.sock"),
            state_dir: dir.join("state"),
            config,
            dir,
        }
    }

    /// The namespace the daemon runs in when the test did not give one (AF_XDP tests).
    pub fn host_netns(&self) -> Option<&Netns> {
        self._host.as_ref()
    }

    /// The port type the next add-port gets (and counts it as used): "tap" or "afxdp".
    pub fn take_port_type(&self) -> &'static str {
        let n = self.ports_added.get();
        self.ports_added.set(n + 1);
        match self.port_type {
            "mixed" if n.is_multiple_of(2) => "tap",
            "mixed" => "afxdp",
            t => t,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("daemon running").id()
    }

    fn spawn(&mut self) {
        assert!(self.child.is_none());
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("vswitchd.log"))
            .unwrap();
        let mut cmd = match &self.netns {
            // nsenter without --fork execs in place too.
            Some(ns) if self.keep_mounts => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg(bin("vswitchd"));
                c
            }
            // `ip netns exec` execs in place: the child's PID is the daemon's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(bin("vswitchd"));
                c
            }
            None => Command::new(bin("vswitchd")),
        };
        let child = cmd
            .args(&self.extra)
            .arg("--config")
            .arg(&self.config)
            .arg("--socket")
            .arg(&self.socket)
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start vswitchd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.ctl(&["show"]).status.success() {
                return;
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("vswitchd exited during start ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "vswitchd did not answer:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("vswitchd.log")).unwrap_or_default()
    }

    /// Sends `signal` to the daemon and waits for it to exit.
    pub fn stop_with(&mut self, signal: i32) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("daemon running");
        let pid = child.id().to_string();
        let sig = format!("-{signal}");
        must("kill", &[&sig, &pid]);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if Instant::now() >= deadline {
                // Not left running: the guard no longer holds it.
                let _ = child.kill();
                let _ = child.wait();
                panic!("vswitchd did not exit on signal {signal}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn restart(&mut self) {
        self.spawn();
    }

    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut args: Vec<&str> = args.to_vec();
        let is_add = args.iter().take(2).any(|a| *a == "add-port");
        if is_add && !args.contains(&"--type") {
            let t = self.take_port_type();
            args.extend(["--type", t]);
        }
        Command::new(bin("vswitchctl"))
            .arg("--socket")
            .arg(&self.socket)
            .args(&args)
            .output()
            .expect("run vswitchctl")
    }

    /// Runs vswitchctl and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "vswitchctl {args:?} failed: {}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs a read command with --json.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&self.ok(&a)).expect("vswitchctl --json prints JSON")
    }

    /// Runs vswitchctl expecting failure; returns (error code, message).
    pub fn err(&self, args: &[&str]) -> (String, String) {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let out = self.ctl(&a);
        assert!(
            !out.status.success(),
            "vswitchctl {args:?} unexpectedly succeeded: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "no JSON error for {args:?}: stdout {:?} stderr {:?}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let e = &v["error"];
        let stderr = String::from_utf8_lossy(&out.stderr);
        let msg = e["message"].as_str().unwrap_or_default().to_string();
        assert!(
            stderr.contains(&msg),
            "the message is printed on stderr too"
        );
        (e["code"].as_str().unwrap_or_default().to_string(), msg)
    }

    /// `show` without the parts that change by themselves (uptime).
    pub fn show_stable(&self) -> Value {
        let mut v = self.json(&["show"]);
        v["daemon"]["uptime_secs"] = Value::Null;
        // The frame pool's chunks are made afresh by a restart, their free frames move.
        v["daemon"]["afxdp_pool"] = Value::Null;
        // Where an AF_XDP port's frames are and how they moved changes with every frame.
        if let Some(ports) = v["ports"].as_array_mut() {
            for p in ports {
                if let Some(x) = p.get_mut("xdp").and_then(Value::as_object_mut) {
                    for k in [
                        "frames",
                        "fill_target",
                        "rx_frames_in_kernel",
                        "frames_free",
                        "tx_frames_in_flight",
                        "pool_short",
                        "rx_lent",
                        "rx_copied",
                        "tx_by_descriptor",
                        "tx_copied",
                    ] {
                        x.remove(k);
                    }
                }
            }
        }
        v
    }

    /// One port as `show` describes it.
    pub fn port(&self, name: &str) -> Value {
        self.json(&["show"])["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no port {name}"))
    }

    /// Counters of one port.
    /// Waits (up to 10 s) until every port in `ports` is `up`; fails with their state if not.
    pub fn wait_up(&self, ports: &[&str]) {
        let up = wait_until(10, || ports.iter().all(|p| self.port(p)["status"] == "up"));
        let state: Vec<Value> = ports.iter().map(|p| self.port(p)).collect();
        assert!(up, "ports not up: {state:?}");
    }

    pub fn stats(&self, port: &str) -> Value {
        self.json(&["port", "stats", port])[0].clone()
    }

    /// Sends raw bytes on a fresh connection and returns the first response line.
    pub fn raw(&self, bytes: &[u8]) -> Value {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.write_all(bytes);
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line:?}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- vswitchd log ({}) ---\n{}",
                self.dir.display(),
                self.log()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls `f` until it is true or `secs` pass.
pub fn wait_until(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    f()
}

// ---- traffic helpers shared by the offload and AF_XDP tests ----

pub fn iperf(client: &Netns, server: &Netns, server_ip: &str, reverse: bool) -> Value {
    iperf_for(client, server, server_ip, reverse, 3)
}

/// An iperf3 TCP run of `secs` seconds; killed (and failing) if it stalls.
pub fn iperf_for(
    client: &Netns,
    server: &Netns,
    server_ip: &str,
    reverse: bool,
    secs: u32,
) -> Value {
    let _srv = Bg(Command::new("ip")
        .args([
            "netns",
            "exec",
            &server.name,
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5201",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    assert!(wait_until(10, || server
        .exec_ok(&["ss", "-Hltn", "sport", "=", ":5201"])
        .contains("5201")));
    // Bounded: a stalled transfer (bad segments) must fail the test, not hang it.
    let mut args = vec![
        "timeout".to_string(),
        "-s".into(),
        "KILL".into(),
        (secs + 30).to_string(),
        "iperf3".into(),
        "-c".into(),
        server_ip.into(),
        "-p".into(),
        "5201".into(),
        "-t".into(),
        secs.to_string(),
        "--json".into(),
    ];
    if reverse {
        args.push("-R".into());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    serde_json::from_str(&client.exec_ok(&args)).expect("iperf3 JSON")
}

/// Serves an `mb` MB random file from each side over HTTP (python3) and fetches it from the
/// other with curl: the sha256 must match both ways.
pub fn http_both_ways(a: &Netns, ip_a: &str, b: &Netns, ip_b: &str, mb: u32) {
    let tmp = TempDir::new("http");
    let file = tmp.path("blob");
    must(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", file.display()),
            "bs=1M",
            &format!("count={mb}"),
            "status=none",
        ],
    );
    let want = sha256(a, file.to_str().unwrap());
    for (server, client, ip) in [(a, b, ip_a), (b, a, ip_b)] {
        let _http = Bg(Command::new("ip")
            .args([
                "netns",
                "exec",
                &server.name,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                ip,
                "--directory",
            ])
            .arg(&tmp.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap());
        let out = tmp.path(&format!("got-{}", client.name));
        assert!(wait_until(10, || client
            .exec(&[
                "curl",
                "-sf",
                "-m",
                "60",
                "-o",
                out.to_str().unwrap(),
                &format!("http://{ip}:8080/blob")
            ])
            .status
            .success()));
        assert_eq!(
            sha256(client, out.to_str().unwrap()),
            want,
            "{} -> {}",
            server.name,
            client.name
        );
    }
}

fn sha256(ns: &Netns, path: &str) -> String {
    ns.exec_ok(&["sha256sum", path])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}
