//! Control-socket authorisation (issue 18, item 6): the peer's credentials decide what it may
//! do, and idle clients cannot lock anyone out. Unprivileged clients are `nobody` run through
//! setpriv, with existing groups (`users` may change, `staff` may read), so nothing on the host
//! is created or changed.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const CHANGE_GROUP: &str = "users";
const READ_GROUP: &str = "staff";

fn gid_of(group: &str) -> u32 {
    must("getent", &["group", group])
        .split(':')
        .nth(2)
        .and_then(|g| g.trim().parse().ok())
        .unwrap_or_else(|| panic!("no gid for group {group}"))
}

/// `setpriv` arguments that run a command as nobody with primary group nogroup and exactly the
/// supplementary `groups`.
fn as_nobody(groups: &[&str]) -> Vec<String> {
    let mut a = vec!["--reuid=nobody".to_string(), "--regid=nogroup".to_string()];
    if groups.is_empty() {
        a.push("--clear-groups".into());
    } else {
        a.push(format!("--groups={}", groups.join(",")));
    }
    a.push("--".into());
    a
}

/// vswitchctl --json ARGS as nobody in `groups`.
fn ctl_as_nobody(d: &Daemon, groups: &[&str], args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(as_nobody(groups))
        .arg(bin("vswitchctl"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--json")
        .args(args)
        .output()
        .expect("run setpriv")
}

/// The error code of a failed --json vswitchctl run.
fn error_code(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "unexpectedly succeeded: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON error: stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    v["error"]["code"].as_str().unwrap_or_default().to_string()
}

fn network_names(d: &Daemon) -> Vec<String> {
    let v = d.json(&["network", "ls"]);
    let list = v
        .as_array()
        .or_else(|| v["networks"].as_array())
        .cloned()
        .unwrap_or_default();
    list.iter()
        .filter_map(|n| n["name"].as_str().map(str::to_owned))
        .collect()
}

/// Holds N connections to the socket as nobody (in `users`) that never send a byte: a python3
/// child which, when told (a line on its stdin), reports how each connection ended.
struct IdleClients {
    child: Bg,
    out: BufReader<std::process::ChildStdout>,
}

const IDLE_PY: &str = r#"
import json, socket, sys
path, n = sys.argv[1], int(sys.argv[2])
socks, failed = [], 0
for _ in range(n):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        socks.append(s)
    except OSError:
        failed += 1
print(json.dumps({"connected": len(socks), "failed": failed}), flush=True)
sys.stdin.readline()
busy = closed = still_open = other = 0
for s in socks:
    s.settimeout(0.5)
    try:
        d = s.recv(65536)
        if b'"busy"' in d:
            busy += 1
        elif d == b"":
            closed += 1
        else:
            other += 1
    except socket.timeout:
        still_open += 1
print(json.dumps({"busy": busy, "closed": closed, "open": still_open, "other": other}), flush=True)
"#;

impl IdleClients {
    fn open(d: &Daemon, n: usize) -> (IdleClients, Value) {
        let mut child = Command::new("setpriv")
            .args(as_nobody(&[CHANGE_GROUP]))
            // The system interpreter: a per-user one (pyenv under /root) is not nobody's to run.
            .args(["/usr/bin/python3", "-c", IDLE_PY])
            .arg(&d.socket)
            .arg(n.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn python3");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut c = IdleClients {
            child: Bg(child),
            out,
        };
        let first = c.line();
        (c, first)
    }

    fn line(&mut self) -> Value {
        let mut l = String::new();
        self.out.read_line(&mut l).expect("read python3");
        serde_json::from_str(&l).unwrap_or_else(|_| panic!("python3 said {l:?}"))
    }

    fn report(&mut self) -> Value {
        let stdin = self.child.0.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
        self.line()
    }
}

#[test]
fn two_hundred_idle_connections_do_not_lock_out_root() {
    require_root();
    let d = Daemon::start_with(None, &["--group", CHANGE_GROUP]);
    let (mut idle, opened) = IdleClients::open(&d, 200);
    assert_eq!(opened["failed"], 0, "{opened}");
    assert_eq!(opened["connected"], 200, "{opened}");

    // Root is answered at once, not told `busy` (and not after a deadline of the others).
    let t = Instant::now();
    let out = d.ctl(&["show"]);
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "root's show failed with 200 idle clients: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        took < Duration::from_millis(1500),
        "root's show took {took:?} (the first-byte deadline is 2 s)"
    );
    d.ok(&["network", "ls"]);

    // Past the first-byte deadline every idle connection has been let go: those over the
    // per-user bound were told `busy` straight away, the rest closed silently.
    std::thread::sleep(Duration::from_secs(3));
    let r = idle.report();
    assert_eq!(
        r["open"], 0,
        "connections still held after the deadline: {r}"
    );
    assert_eq!(r["other"], 0, "{r}");
    let busy = r["busy"].as_u64().unwrap();
    let closed = r["closed"].as_u64().unwrap();
    assert_eq!(busy + closed, 200, "{r}");
    assert!(
        closed <= 32,
        "one user held more than 32 connections at once: {r}"
    );
    assert!(busy >= 168, "{r}");
    // And the daemon serves normally afterwards, also to the group's member.
    let out = ctl_as_nobody(&d, &[CHANGE_GROUP], &["show"]);
    assert!(out.status.success(), "{:?}", out);
}

#[test]
fn the_socket_has_the_group_and_mode_0660() {
    require_root();
    let d = Daemon::start_with(None, &["--group", CHANGE_GROUP]);
    let m = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(m.gid(), gid_of(CHANGE_GROUP));
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    // Outside the group, nobody cannot even connect.
    let out = ctl_as_nobody(&d, &[], &["show"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.to_lowercase().contains("permission denied"),
        "expected EACCES connecting: {err}"
    );
}

#[test]
fn changes_need_the_group_and_reads_the_read_group() {
    require_root();
    let d = Daemon::start_with(None, &["--group", CHANGE_GROUP, "--read-group", READ_GROUP]);
    let net = unique("ha");
    let create = [
        "network",
        "create",
        net.as_str(),
        "--subnet",
        "10.213.7.0/24",
    ];
    let root_view = d.json(&["show"]);
    let before_names = network_names(&d);

    // nobody in neither group: refused, reads too, and nothing changes.
    assert_eq!(
        error_code(&ctl_as_nobody(&d, &[], &create)),
        "permission_denied"
    );
    assert_eq!(
        error_code(&ctl_as_nobody(&d, &[], &["show"])),
        "permission_denied"
    );
    assert_eq!(
        error_code(&ctl_as_nobody(&d, &[], &["network", "rm", "bridge"])),
        "permission_denied"
    );
    assert_eq!(
        network_names(&d),
        before_names,
        "a refused change changed nothing"
    );
    assert!(!network_names(&d).contains(&net));

    // The read group reads, and still may not change.
    let out = ctl_as_nobody(&d, &[READ_GROUP], &["show"]);
    assert!(out.status.success(), "read group's show: {out:?}");
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names = |v: &Value| -> Vec<String> {
        v["networks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|n| n["name"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(!names(&root_view).is_empty(), "{root_view}");
    assert_eq!(
        names(&shown),
        names(&root_view),
        "the read group sees what root sees"
    );
    let out = ctl_as_nobody(&d, &[READ_GROUP], &["network", "ls"]);
    assert!(out.status.success(), "{out:?}");
    let out = ctl_as_nobody(&d, &[READ_GROUP], &create);
    assert_eq!(error_code(&out), "permission_denied");
    let msg = String::from_utf8_lossy(&out.stderr);
    assert!(
        msg.contains("network-create") && msg.contains("65534"),
        "{msg}"
    );
    assert!(!network_names(&d).contains(&net));

    // A member of the change group changes things; the change is logged with uid and pid.
    let out = ctl_as_nobody(&d, &[CHANGE_GROUP], &create);
    assert!(out.status.success(), "group member's create: {out:?}");
    assert!(network_names(&d).contains(&net));
    let out = ctl_as_nobody(&d, &[CHANGE_GROUP], &["network", "rm", net.as_str()]);
    assert!(out.status.success(), "group member's rm: {out:?}");
    assert!(!network_names(&d).contains(&net));
    let log = d.log();
    let logged = log
        .lines()
        .filter(|l| l.contains("change") && l.contains("uid=65534") && l.contains("pid="))
        .count();
    assert!(logged >= 2, "changes not logged with uid and pid:\n{log}");
    assert!(
        log.lines()
            .any(|l| l.contains("permission denied") && l.contains("uid=65534")),
        "refusals not logged:\n{log}"
    );
    // Root still changes everything.
    d.ok(&[
        "network",
        "create",
        net.as_str(),
        "--subnet",
        "10.213.7.0/24",
    ]);
    d.ok(&["network", "rm", net.as_str()]);
}

#[test]
fn without_a_group_only_root_is_served() {
    require_root();
    let d = Daemon::start();
    let m = std::fs::metadata(&d.socket).unwrap();
    assert_eq!(m.permissions().mode() & 0o777, 0o660);
    assert_eq!(m.gid(), 0);
    d.ok(&["show"]);
    // A member of the socket's group (root's) that is not root may not change anything.
    let out = Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=root", "--clear-groups", "--"])
        .arg(bin("vswitchctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "network", "rm", "bridge"])
        .output()
        .unwrap();
    assert_eq!(error_code(&out), "permission_denied");
    assert!(network_names(&d).contains(&"bridge".to_string()));
}
