//! Installed like a service: systemd's readiness protocol (READY=1 on $NOTIFY_SOCKET only once
//! the control socket answers, a path or an abstract name), `scripts/install.sh` into a
//! temporary root installing and uninstalling exactly its files, the unit accepted by
//! `systemd-analyze verify`, completion scripts and man pages that name every command, and
//! `vswitchctl --version` with the daemon's version and protocol.

mod common;

use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Starts vswitchd (its own namespace, socket and state) with NOTIFY_SOCKET=`notify` and
/// checks that READY=1 arrives on `sock`, that the control socket answers right then, and that
/// a SIGTERM sends STOPPING=1.
///
/// An abstract socket name belongs to a network namespace: with one, the daemon runs in the
/// test's own namespace (without a config it makes no network and touches no interface).
fn ready_via(notify: &str, sock: &UnixDatagram) {
    let ns = Netns::new("sn");
    let dir = TempDir::new("sn");
    let socket = dir.path("vswitchd.sock");
    let mut cmd = if notify.starts_with('@') {
        Command::new("env")
    } else {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &ns.name, "env"]);
        c
    };
    let child = cmd
        .arg(format!("NOTIFY_SOCKET={notify}"))
        .arg(bin("vswitchd"))
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path("state"))
        .arg("--resolv-conf")
        .arg(dir.path("resolv.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("vswitchd");
    let _child = Bg(child);
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).expect("READY=1 within 30 s");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    // At this moment the control socket must answer.
    let mut c = vswitch_api_client(&socket);
    let answered = c.call_show();
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    assert!(msg.contains("MAINPID="), "{msg:?}");
    assert!(answered, "the control socket answers when READY=1 arrives");
    let pid: u32 = msg
        .lines()
        .find_map(|l| l.strip_prefix("MAINPID="))
        .and_then(|p| p.parse().ok())
        .unwrap();
    // A clean stop says so.
    must("kill", &["-TERM", &pid.to_string()]);
    let n = sock.recv(&mut buf).expect("STOPPING=1");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
}

/// A raw control-protocol client (the tests crate has no dependency on vswitch).
struct RawClient(UnixStream);

fn vswitch_api_client(socket: &Path) -> RawClient {
    RawClient(UnixStream::connect(socket).expect("the control socket exists"))
}

impl RawClient {
    fn call_show(&mut self) -> bool {
        use std::io::{BufRead, BufReader, Write};
        self.0
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        if self
            .0
            .write_all(b"{\"version\":1,\"op\":\"show\"}\n")
            .is_err()
        {
            return false;
        }
        let mut line = String::new();
        BufReader::new(&self.0).read_line(&mut line).is_ok() && line.starts_with("{\"ok\"")
    }
}

fn readiness_is_sent_once_the_socket_answers() {
    require_root();
    let dir = TempDir::new("sd");
    let path = dir.path("notify");
    let sock = UnixDatagram::bind(&path).unwrap();
    ready_via(path.to_str().unwrap(), &sock);
    // An abstract name, as systemd gives.
    use std::os::linux::net::SocketAddrExt;
    let name = unique("vsw-notify");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    ready_via(&format!("@{name}"), &sock);
}

/// Every file under `root`, relative.
fn tree(root: &Path) -> Vec<String> {
    fn walk(root: &Path, d: &Path, out: &mut Vec<String>) {
        for e in std::fs::read_dir(d).unwrap().flatten() {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if p.is_dir() {
                walk(root, &p, out);
            }
        }
    }
    let mut v = Vec::new();
    walk(root, root, &mut v);
    v.sort();
    v
}

fn install(args: &[&str]) -> std::process::Output {
    let out = Command::new(repo().join("scripts/install.sh"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "install.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn install_sh_installs_and_uninstalls_exactly_its_files() {
    require_root();
    let bins = bin("vswitchd").parent().unwrap().display().to_string();
    let dest = TempDir::new("inst");
    let root = dest.path("");
    let root_s = root.display().to_string();
    // A config already there, and an unrelated file in a directory the install uses.
    std::fs::create_dir_all(root.join("etc/vswitch")).unwrap();
    std::fs::write(root.join("etc/vswitch/vswitchd.toml"), "# mine\n").unwrap();
    std::fs::create_dir_all(root.join("usr/local/bin")).unwrap();
    std::fs::write(root.join("usr/local/bin/other-tool"), "x").unwrap();
    let before = tree(&root);

    install(&["--destdir", &root_s, "--bin-dir", &bins]);
    let after = tree(&root);
    let manifest =
        std::fs::read_to_string(root.join("usr/local/share/vswitch/install-manifest")).unwrap();
    let listed: Vec<String> = manifest
        .lines()
        .map(|l| {
            l.split_whitespace()
                .nth(1)
                .unwrap()
                .trim_start_matches('/')
                .to_string()
        })
        .collect();
    for f in [
        "usr/local/bin/vswitchd",
        "usr/local/bin/vswitchctl",
        "usr/local/lib/cni/vswitch-cni",
        "usr/local/share/vswitch/vswitch.conflist",
        "usr/local/share/bash-completion/completions/vswitchctl",
        "usr/local/share/zsh/site-functions/_vswitchctl",
        "usr/local/share/fish/vendor_completions.d/vswitchctl.fish",
        "usr/local/share/man/man1/vswitchctl.1",
        "usr/local/share/man/man1/vswitchctl-network-create.1",
        "etc/systemd/system/vswitchd.service",
    ] {
        assert!(listed.iter().any(|l| l == f), "{f} installed: {manifest}");
        assert!(root.join(f).is_file(), "{f}");
    }
    assert_eq!(
        std::fs::read_to_string(root.join("etc/vswitch/vswitchd.toml")).unwrap(),
        "# mine\n",
        "an existing config is kept"
    );
    // Every new file is in the manifest (or is the manifest).
    for f in after.iter().filter(|f| !before.contains(f)) {
        let p = root.join(f);
        if p.is_file() && !f.ends_with("install-manifest") && !f.ends_with("install-manifest.dirs")
        {
            assert!(listed.contains(f), "{f} installed but not recorded");
        }
    }
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/vswitchd.service")).unwrap();
    assert!(unit.contains("ExecStart=/usr/local/bin/vswitchd --config /etc/vswitch/vswitchd.toml"));
    // The installed vswitchctl runs.
    let v = Command::new(root.join("usr/local/bin/vswitchctl"))
        .args(["--socket", "/nonexistent", "--version"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&v.stdout).starts_with("vswitchctl "));

    install(&["--destdir", &root_s, "--uninstall"]);
    assert_eq!(
        tree(&root),
        before,
        "uninstall leaves exactly what was there"
    );

    // Without a config: installed, and taken away again when unchanged; kept when edited.
    std::fs::remove_file(root.join("etc/vswitch/vswitchd.toml")).unwrap();
    let before = tree(&root);
    install(&[
        "--destdir",
        &root_s,
        "--bin-dir",
        &bins,
        "--prefix",
        "/opt/vsw",
    ]);
    assert!(root.join("etc/vswitch/vswitchd.toml").is_file());
    assert!(root.join("opt/vsw/bin/vswitchd").is_file());
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/vswitchd.service")).unwrap();
    assert!(unit.contains("ExecStart=/opt/vsw/bin/vswitchd "), "{unit}");
    install(&["--destdir", &root_s, "--prefix", "/opt/vsw", "--uninstall"]);
    assert_eq!(tree(&root), before);
    install(&["--destdir", &root_s, "--bin-dir", &bins]);
    std::fs::write(root.join("etc/vswitch/vswitchd.toml"), "# edited\n").unwrap();
    let out = install(&["--destdir", &root_s, "--uninstall"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("was changed since it was installed"));
    assert_eq!(
        std::fs::read_to_string(root.join("etc/vswitch/vswitchd.toml")).unwrap(),
        "# edited\n"
    );
}

fn the_unit_passes_systemd_analyze_verify() {
    if sh("which", &["systemd-analyze"]).stdout.is_empty() {
        eprintln!("systemd-analyze is not installed here: the unit is not verified");
        return;
    }
    let dir = TempDir::new("unit");
    let unit = std::fs::read_to_string(repo().join("configs/vswitchd.service")).unwrap();
    let unit = unit.replace(
        "ExecStart=/usr/local/bin/vswitchd",
        &format!("ExecStart={}", bin("vswitchd").display()),
    );
    assert!(unit.contains("Type=notify") && unit.contains("Restart=on-failure"));
    assert!(unit.contains("RuntimeDirectory=vswitch") && unit.contains("StateDirectory=vswitch"));
    let path = dir.path("vswitchd.service");
    std::fs::write(&path, unit).unwrap();
    // --man=no: the man page it names is installed by install.sh, not on this machine.
    let out = sh(
        "systemd-analyze",
        &["verify", "--man=no", path.to_str().unwrap()],
    );
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The commands `vswitchctl [PATH] --help` lists, recursively, as "network create" etc.
fn commands(path: &[String]) -> Vec<String> {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let out = Command::new(bin("vswitchctl"))
        .args(&args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut found = Vec::new();
    let mut in_commands = false;
    for line in text.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands {
            if !line.starts_with("  ") {
                break;
            }
            let name = line.split_whitespace().next().unwrap_or("");
            if name.is_empty() || name == "help" {
                continue;
            }
            let mut p = path.to_vec();
            p.push(name.to_string());
            found.push(p.join(" "));
            found.extend(commands(&p));
        }
    }
    found
}

fn completions_and_man_pages_name_every_command() {
    let cmds = commands(&[]);
    assert!(cmds.len() > 30, "{cmds:?}");
    for c in [
        "network create",
        "trace",
        "capture",
        "events",
        "completion",
        "uplink set",
    ] {
        assert!(cmds.iter().any(|x| x == c), "{c} in {cmds:?}");
    }
    let run = |args: &[&str]| {
        let o = Command::new(bin("vswitchctl")).args(args).output().unwrap();
        assert!(o.status.success(), "{args:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["completion", shell]);
        for c in &cmds {
            let last = c.rsplit(' ').next().unwrap();
            assert!(script.contains(last), "{shell} completion lacks {c}");
        }
    }
    let page = run(&["man"]);
    assert!(
        page.starts_with(".ie") || page.contains(".TH vswitchctl"),
        "roff"
    );
    for c in &cmds {
        assert!(
            page.contains(&format!("\\fB{}\\fR", c.replace('-', "\\-")))
                || page.contains(&format!("\\fB{c}\\fR")),
            "the man page lists {c}"
        );
    }
    let dir = TempDir::new("man");
    run(&["man", "--dir", dir.path("").to_str().unwrap()]);
    for c in &cmds {
        let f = dir.path(&format!("vswitchctl-{}.1", c.replace(' ', "-")));
        assert!(f.is_file(), "{} for {c}", f.display());
    }
    let out = sh("man", &["-l", dir.path("vswitchctl.1").to_str().unwrap()]);
    if out.status.success() {
        assert!(String::from_utf8_lossy(&out.stdout).contains("vswitchctl"));
    }
}

fn version_shows_the_daemon_and_its_protocol() {
    require_root();
    let d = Daemon::start();
    let text = d.ok(&["--version"]);
    let v = env!("CARGO_PKG_VERSION");
    assert!(
        text.starts_with(&format!("vswitchctl {v} (control protocol 1)\n")),
        "{text}"
    );
    assert!(
        text.contains(&format!("vswitchd {v} (control protocol 1), pid ")),
        "{text}"
    );
    let j = d.json(&["--version"]);
    assert_eq!(j["vswitchd"]["protocol"], 1);
    assert_eq!(j["vswitchctl"]["version"], v);
    let out = Command::new(bin("vswitchctl"))
        .args(["--socket", "/nonexistent.sock", "--version"])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("vswitchd: not reachable"));
}

#[test]
fn service_readiness_is_sent_once_the_socket_answers() {
    readiness_is_sent_once_the_socket_answers()
}

#[test]
fn service_install_sh_installs_and_uninstalls_exactly_its_files() {
    install_sh_installs_and_uninstalls_exactly_its_files()
}

#[test]
fn service_the_unit_passes_systemd_analyze_verify() {
    the_unit_passes_systemd_analyze_verify()
}

#[test]
fn service_completions_and_man_pages_name_every_command() {
    completions_and_man_pages_name_every_command()
}

#[test]
fn service_version_shows_the_daemon_and_its_protocol() {
    version_shows_the_daemon_and_its_protocol()
}
