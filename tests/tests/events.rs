//! `vswitchctl events`: the switch's changes as they happen, to every follower — networks and
//! ports added, a MAC that moves to another port, a container's namespace deleted (port down,
//! with why), overlay peers, a full conntrack table.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use common::egress::*;
use common::*;
use serde_json::Value;

/// A `vswitchctl events` in the background and the lines it printed so far.
struct Follower {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Follower {
    fn start(d: &Daemon, json: bool) -> Follower {
        let mut cmd = Command::new(bin("vswitchctl"));
        cmd.arg("--socket").arg(&d.socket);
        if json {
            cmd.arg("--json");
        }
        let mut child = cmd
            .arg("events")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("vswitchctl events");
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let l = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                l.lock().unwrap().push(line);
            }
        });
        // The subscription is made before the client is answered; give it that moment.
        std::thread::sleep(std::time::Duration::from_millis(400));
        Follower { child, lines }
    }

    /// Waits for an event of `kind` (JSON) for which `pred` holds.
    fn wait(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let mut found = None;
        let ok = wait_until(10, || {
            found = self.lines.lock().unwrap().iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                (v["kind"] == kind && pred(&v)).then_some(v)
            });
            found.is_some()
        });
        assert!(ok, "no {kind} event: {:#?}", self.lines.lock().unwrap());
        found.unwrap()
    }

    fn text_line(&self, needle: &str) -> String {
        let mut found = None;
        let ok = wait_until(10, || {
            found = self
                .lines
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
                .cloned();
            found.is_some()
        });
        assert!(
            ok,
            "no line with {needle:?}: {:#?}",
            self.lines.lock().unwrap()
        );
        found.unwrap()
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ports_macs_and_a_deleted_namespace() {
    require_root();
    let d = Daemon::start();
    let f = Follower::start(&d, true);
    let text = Follower::start(&d, false);
    d.ok(&["network", "create", "ev", "--subnet", "10.88.95.0/24"]);
    f.wait("network-created", |v| v["network"] == "ev");
    let a = Netns::new("eva");
    let b = Netns::new("evb");
    d.ok(&["add-port", "ev", "--netns", &a.name, "--name", "a"]);
    d.ok(&[
        "add-port",
        "ev",
        "--netns",
        &b.name,
        "--name",
        "b",
        "--no-port-security",
    ]);
    d.wait_up(&["a", "b"]);
    let ev = f.wait("port-added", |v| v["port"] == "a");
    assert_eq!(ev["network"], "ev");
    assert!(
        ev["detail"].as_str().unwrap().contains("10.88.95.2"),
        "{ev}"
    );
    assert!(a.ping("10.88.95.3", 1));

    // b takes a's MAC: the switch hears it move.
    let mac_a = d.port("a")["mac"].as_str().unwrap().to_string();
    b.exec_ok(&["ip", "link", "set", "eth0", "address", &mac_a]);
    let _ = b.ping_any("10.88.95.1", 1);
    let ev = f.wait("mac-moved", |v| v["port"] == "b");
    assert_eq!(
        ev["detail"].as_str().unwrap(),
        format!("{mac_a} moved here from a")
    );

    // a's namespace goes: a is down, and says why.
    let a_name = a.name.clone();
    drop(a);
    let ev = f.wait("port-down", |v| v["port"] == "a");
    assert_eq!(ev["network"], "ev");
    assert!(
        ev["detail"].as_str().unwrap().contains(&a_name)
            || ev["detail"].as_str().unwrap().contains("namespace"),
        "{ev}"
    );
    let line = text.text_line(" port-down port=a network=ev: ");
    assert!(line.starts_with("20"), "an RFC 3339 time first: {line}");

    d.ok(&["del-port", "b"]);
    f.wait("port-removed", |v| v["port"] == "b");
    // A request that fails changes nothing, and says nothing.
    let _ = d.err(&["network", "create", "ev", "--subnet", "10.88.96.0/24"]);
    d.ok(&["network", "rm", "ev", "--force"]);
    f.wait("network-removed", |v| v["network"] == "ev");
    let created = f
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("\"network-created\""))
        .count();
    assert_eq!(created, 1, "the refused create made no event");
    let downs = f
        .lines
        .lock()
        .unwrap()
        .iter()
        .filter(|l| l.contains("\"port-down\""))
        .count();
    assert_eq!(downs, 1, "one port-down for one namespace gone");
}

fn a_full_conntrack_table_and_overlay_peers() {
    require_root();
    let w = world();
    let d = Daemon::start_with(Some(&w.host), &[]);
    let f = Follower::start(&d, true);
    set_uplink_with(&d, &w, &["--conntrack-max", "2"]);
    f.wait("uplink-set", |v| v["port"] == w.uplink.as_str());
    d.ok(&["network", "create", "ec", "--subnet", "10.88.97.0/24"]);
    let c = Netns::new("evc");
    d.ok(&["add-port", "ec", "--netns", &c.name, "--name", "c"]);
    d.wait_up(&["c"]);
    // Five UDP flows out: two fit, three are refused.
    let script = "import socket\nfor p in range(5):\n    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n    s.sendto(b'x', ('203.0.113.10', 9000 + p))\n";
    c.exec_ok(&["python3", "-c", script]);
    let ev = f.wait("conntrack-full", |_| true);
    assert!(ev["detail"].as_str().unwrap().contains("refused"), "{ev}");

    // Overlay peers added and removed at run time.
    w.host
        .exec_ok(&["ip", "addr", "add", "192.168.254.1/32", "dev", "lo"]);
    d.ok(&["vtep", "set", "--local-ip", "192.168.254.1"]);
    d.ok(&[
        "network",
        "create",
        "eo",
        "--driver",
        "overlay",
        "--vni",
        "77",
        "--subnet",
        "10.88.98.0/24",
    ]);
    d.ok(&["network", "peer", "add", "eo", "192.168.254.9"]);
    let ev = f.wait("peer-added", |v| v["network"] == "eo");
    assert_eq!(ev["detail"], "VTEP 192.168.254.9");
    d.ok(&["network", "peer", "rm", "eo", "192.168.254.9"]);
    f.wait("peer-removed", |v| v["network"] == "eo");
}

#[test]
fn events_ports_macs_and_a_deleted_namespace() {
    with_port_type("tap", ports_macs_and_a_deleted_namespace)
}

#[test]
fn events_a_full_conntrack_table_and_overlay_peers() {
    with_port_type("tap", a_full_conntrack_table_and_overlay_peers)
}
