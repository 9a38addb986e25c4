//! Foundation: TAP ports, L2 learning per network, the control socket, vswitchctl, state.
//! Every test builds its own namespaces and its own vswitchd, and cleans up on drop.

mod common;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn rx_tx(d: &Daemon, port: &str) -> (u64, u64) {
    let s = d.stats(port);
    (
        s["rx_packets"].as_u64().unwrap(),
        s["tx_packets"].as_u64().unwrap(),
    )
}

/// A daemon with network `net` (10.77.0.0/24 unless told) and `n` namespaces attached as
/// ports `p1..pn` with addresses .2, .3, ...
fn setup(n: usize, subnet_prefix: &str) -> (Daemon, Vec<Netns>) {
    require_root();
    let d = Daemon::start();
    d.ok(&[
        "network",
        "create",
        "net",
        "--subnet",
        &format!("{subnet_prefix}.0/24"),
    ]);
    let mut nss = Vec::new();
    for i in 0..n {
        let ns = Netns::new(&format!("p{}", i + 1));
        d.ok(&[
            "add-port",
            "net",
            "--netns",
            &ns.name,
            "--ip",
            &format!("{subnet_prefix}.{}", i + 2),
            "--name",
            &format!("p{}", i + 1),
        ]);
        nss.push(ns);
    }
    (d, nss)
}

fn two_namespaces_ping_each_other_both_ways() {
    let (d, ns) = setup(2, "10.77.1");
    assert!(ns[0].ping("10.77.1.3", 3), "p1 -> p2");
    assert!(ns[1].ping("10.77.1.2", 3), "p2 -> p1");
    // The interface looks as asked: name, Docker-style MAC, address, default route.
    let link = ns[0].exec_ok(&["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("02:42:0a:4d:01:02"), "{link}");
    assert!(link.contains("mtu 1500"), "{link}");
    let addr = ns[0].exec_ok(&["ip", "-o", "-4", "addr", "show", "eth0"]);
    assert!(addr.contains("10.77.1.2/24"), "{addr}");
    let route = ns[0].exec_ok(&["ip", "route", "show", "default"]);
    assert!(route.contains("via 10.77.1.1 dev eth0"), "{route}");
    let lo = ns[0].exec_ok(&["ip", "-o", "link", "show", "lo"]);
    assert!(lo.contains("UP"), "lo is up: {lo}");
    // Only `lo` and `eth0` (the interface is born under another name and renamed), and no
    // IPv6 on it, as Docker does for networks without IPv6.
    assert_eq!(ns[0].links(), ["lo", "eth0"]);
    let v6 = ns[0].exec_ok(&["cat", "/proc/sys/net/ipv6/conf/eth0/disable_ipv6"]);
    assert_eq!(v6.trim(), "1");
    assert_eq!(
        ns[0].exec_ok(&["ip", "-o", "-6", "addr", "show", "eth0"]),
        ""
    );
    let (rx, tx) = rx_tx(&d, "p1");
    assert!(rx >= 6 && tx >= 6, "counters moved: rx {rx} tx {tx}");
}

fn custom_ifname_mac_mtu_and_pid_namespace() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "net", "--subnet", "10.77.2.0/24"]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    // A jumbo MTU: 9000 on a TAP; an AF_XDP port's frames must fit a UMEM frame (4096 bytes).
    let type_a = d.take_port_type();
    let (mtu, frame): (&str, &[&str]) = match type_a {
        "tap" => ("9000", &[]),
        _ => ("3000", &["--frame-size", "4096"]),
    };
    let mut args = vec![
        "add-port",
        "net",
        "--netns",
        &a.name,
        "--ifname",
        "data0",
        "--mac",
        "02:00:00:aa:bb:01",
        "--ip",
        "10.77.2.10/24",
        "--mtu",
        mtu,
        "--type",
        type_a,
    ];
    args.extend_from_slice(frame);
    d.ok(&args);
    // Name b's namespace by the pid of a process living in it.
    let mut sleeper = std::process::Command::new("ip")
        .args(["netns", "exec", &b.name, "sleep", "60"])
        .spawn()
        .unwrap();
    let pid = sleeper.id().to_string();
    // `ip netns exec` execs sleep in place, so the pid is the sleeper's once it is in the netns.
    assert!(wait_until(5, || {
        std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()
            != std::fs::read_link("/proc/self/ns/net").ok()
    }));
    let type_b = d.take_port_type();
    d.ok(&[
        "add-port",
        "net",
        "--netns",
        &pid,
        "--ip",
        "10.77.2.11",
        "--name",
        "bypid",
        "--type",
        type_b,
    ]);
    let link = a.exec_ok(&["ip", "-o", "link", "show", "data0"]);
    assert!(
        link.contains("02:00:00:aa:bb:01") && link.contains(&format!("mtu {mtu} ")),
        "{link}"
    );
    assert!(a.ping("10.77.2.11", 2));
    let show = d.json(&["show"]);
    let port = show["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bypid")
        .unwrap()
        .clone();
    assert_eq!(port["netns"], Value::String(pid.clone()));
    assert_eq!(port["status"], "up");
    assert_eq!(port["kind"], type_b);
    let default_name = show["ports"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p["name"] == format!("{}-data0", a.name));
    assert!(default_name, "default port name is NETNS-IFNAME: {show}");
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

fn learning_flooding_and_known_unicast() {
    let (d, ns) = setup(3, "10.77.3");
    // Traffic between p1 and p2 teaches the switch both MACs.
    assert!(ns[0].ping("10.77.3.3", 2));
    let fdb = d.json(&["fdb", "show", "net"]);
    let entries = fdb[0]["entries"].as_array().unwrap();
    let has = |mac: &str, port: &str| entries.iter().any(|e| e["mac"] == mac && e["port"] == port);
    assert!(has("02:42:0a:4d:03:02", "p1"), "{fdb}");
    assert!(has("02:42:0a:4d:03:03", "p2"), "{fdb}");
    assert!(fdb[0]["counters"]["learned"].as_u64().unwrap() >= 2);

    // Known unicast p1 -> p2 reaches only p2: p3 sees none of it.
    let (_, p3_tx0) = rx_tx(&d, "p3");
    let (_, p2_tx0) = rx_tx(&d, "p2");
    assert!(ns[0].ping("10.77.3.3", 10));
    let (_, p3_tx1) = rx_tx(&d, "p3");
    let (_, p2_tx1) = rx_tx(&d, "p2");
    assert!(p2_tx1 - p2_tx0 >= 10, "p2 got the echo requests");
    assert_eq!(p3_tx1, p3_tx0, "known unicast must not leak to p3");

    // Unknown unicast floods: frames to a MAC nobody has reach p2 and p3.
    ns[0].exec_ok(&[
        "ip",
        "neigh",
        "replace",
        "10.77.3.99",
        "lladdr",
        "02:00:00:00:00:99",
        "dev",
        "eth0",
        "nud",
        "permanent",
    ]);
    let (_, p2_a) = rx_tx(&d, "p2");
    let (_, p3_a) = rx_tx(&d, "p3");
    assert!(!ns[0].ping_any("10.77.3.99", 5));
    let (_, p2_b) = rx_tx(&d, "p2");
    let (_, p3_b) = rx_tx(&d, "p3");
    assert!(
        p2_b - p2_a >= 5,
        "unknown unicast flooded to p2: {p2_a} -> {p2_b}"
    );
    assert!(
        p3_b - p3_a >= 5,
        "unknown unicast flooded to p3: {p3_a} -> {p3_b}"
    );
    // And it was never sent back out of p1.
    let s = d.stats("p1");
    assert_eq!(s["drops"]["hairpin"], 0);
}

fn mac_move_updates_the_entry() {
    let (d, ns) = setup(2, "10.77.4");
    let c = Netns::new("c");
    d.ok(&[
        "add-port",
        "net",
        "--netns",
        &c.name,
        "--ip",
        "10.77.4.4",
        "--name",
        "p3",
    ]);
    assert!(ns[0].ping("10.77.4.3", 1));
    // p2's MAC now shows up on p3 (a migrated container): delete p2, give p3 its MAC.
    d.ok(&["del-port", "p3"]);
    d.ok(&["del-port", "p2"]);
    d.ok(&[
        "add-port",
        "net",
        "--netns",
        &c.name,
        "--ip",
        "10.77.4.3",
        "--name",
        "p3",
        "--mac",
        "02:42:0a:4d:04:03",
    ]);
    assert!(ns[0].ping("10.77.4.3", 2));
    let fdb = d.json(&["fdb", "show"]);
    let net = fdb
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["network"] == "net")
        .unwrap();
    let e = net["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["mac"] == "02:42:0a:4d:04:03")
        .unwrap();
    assert_eq!(e["port"], "p3");
}

fn networks_are_isolated() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "red", "--subnet", "10.77.5.0/24"]);
    d.ok(&["network", "create", "blue", "--subnet", "10.77.6.0/24"]);
    let r1 = Netns::new("r1");
    let r2 = Netns::new("r2");
    let b1 = Netns::new("b1");
    d.ok(&[
        "add-port",
        "red",
        "--netns",
        &r1.name,
        "--ip",
        "10.77.5.2",
        "--name",
        "r1",
    ]);
    d.ok(&[
        "add-port",
        "red",
        "--netns",
        &r2.name,
        "--ip",
        "10.77.5.3",
        "--name",
        "r2",
    ]);
    d.ok(&[
        "add-port",
        "blue",
        "--netns",
        &b1.name,
        "--ip",
        "10.77.6.2",
        "--name",
        "b1",
    ]);
    assert!(r1.ping("10.77.5.3", 2), "same network works");
    // Make r1 treat blue's subnet as on-link, so it ARPs for b1 directly on its wire.
    r1.exec_ok(&["ip", "route", "add", "10.77.6.0/24", "dev", "eth0"]);
    b1.exec_ok(&["ip", "route", "add", "10.77.5.0/24", "dev", "eth0"]);
    let (_, b1_tx0) = rx_tx(&d, "b1");
    assert!(!r1.ping_any("10.77.6.2", 3), "red must not reach blue");
    assert!(!b1.ping_any("10.77.5.2", 3), "blue must not reach red");
    let (_, b1_tx1) = rx_tx(&d, "b1");
    assert_eq!(
        b1_tx0, b1_tx1,
        "nothing from red was delivered to blue's port"
    );
    let fdb = d.json(&["fdb", "show", "blue"]);
    let macs: Vec<&str> = fdb[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["mac"].as_str().unwrap())
        .collect();
    assert!(
        !macs.contains(&"02:42:0a:4d:05:02"),
        "red's MAC not in blue's table: {macs:?}"
    );
}

fn del_port_and_network_rm_rules() {
    let (d, ns) = setup(2, "10.77.7");
    assert!(ns[0].has_link("eth0"));
    d.ok(&["del-port", "p1"]);
    assert!(!ns[0].has_link("eth0"), "del-port removes the interface");
    assert!(!ns[1].ping_any("10.77.7.2", 2));
    let (code, msg) = d.err(&["del-port", "p1"]);
    assert_eq!(code, "port_not_found", "{msg}");

    let (code, msg) = d.err(&["network", "rm", "net"]);
    assert_eq!(code, "network_in_use");
    assert!(msg.contains("p2") && msg.contains("--force"), "{msg}");
    assert!(ns[1].has_link("eth0"), "a refused rm changes nothing");
    let (code, _) = d.err(&["network", "rm", "nope"]);
    assert_eq!(code, "network_not_found");
    let (code, msg) = d.err(&["network", "rm", "bridge"]);
    assert_eq!(
        code, "invalid_argument",
        "the config's network stays: {msg}"
    );

    d.ok(&["network", "rm", "net", "--force"]);
    assert!(
        !ns[1].has_link("eth0"),
        "--force removes the ports' interfaces"
    );
    let nets = d.json(&["network", "ls"]);
    assert_eq!(nets.as_array().unwrap().len(), 1, "{nets}");
    assert_eq!(d.json(&["show"])["ports"].as_array().unwrap().len(), 0);
    // An empty network goes without --force.
    d.ok(&["network", "create", "empty", "--subnet", "10.77.8.0/24"]);
    d.ok(&["network", "rm", "empty"]);
}

fn restart_restores_networks_and_ports() {
    let (mut d, ns) = setup(2, "10.77.9");
    d.ok(&[
        "network",
        "create",
        "other",
        "--subnet",
        "10.78.0.0/16",
        "--gateway",
        "10.78.0.254",
        "--mac-aging",
        "60",
        "--fdb-limit",
        "100",
    ]);
    assert!(ns[0].ping("10.77.9.3", 1));
    let before = d.show_stable();

    // Clean stop: the interfaces leave the namespaces, the configuration stays.
    let status = d.stop_with(15);
    assert!(status.success(), "SIGTERM is a clean exit: {status}");
    assert!(
        !ns[0].has_link("eth0") && !ns[1].has_link("eth0"),
        "ports removed on exit"
    );
    assert!(!d.socket.exists(), "socket removed on exit");
    d.restart();
    let mut after = d.show_stable();
    after["daemon"]["pid"] = before["daemon"]["pid"].clone();
    assert_eq!(before["networks"], after["networks"]);
    assert_eq!(before["ports"], after["ports"]);
    assert!(
        ns[0].ping("10.77.9.3", 2),
        "traffic flows after SIGTERM restart"
    );
    let link = ns[0].exec_ok(&["ip", "-o", "link", "show", "eth0"]);
    assert!(
        link.contains("02:42:0a:4d:09:02"),
        "same MAC after restart: {link}"
    );

    // kill -9: nothing is cleaned up by the daemon, and nothing is lost.
    d.stop_with(9);
    d.restart();
    let after = d.show_stable();
    assert_eq!(before["networks"], after["networks"]);
    assert_eq!(before["ports"], after["ports"]);
    assert!(
        ns[1].ping("10.77.9.2", 2),
        "traffic flows after kill -9 restart"
    );
    let other = d.json(&["network", "inspect", "other"]);
    assert_eq!(other["gateway"], "10.78.0.254");
    assert_eq!(other["mac_aging_secs"], 60);
    assert_eq!(other["fdb_limit"], 100);
}

fn restart_reports_ports_whose_namespace_is_gone() {
    let (mut d, mut ns) = setup(2, "10.77.10");
    assert!(d.stop_with(2).success(), "SIGINT is a clean exit too");
    assert!(!ns[0].has_link("eth0"));
    let gone = ns.pop().unwrap();
    let gone_name = gone.name.clone();
    let resolv = std::path::Path::new("/etc/netns")
        .join(&gone_name)
        .join("resolv.conf");
    assert!(
        resolv.exists(),
        "a clean stop keeps the resolver config of a port that stays configured"
    );
    // The container goes while the switch is stopped (the guard still cleans up at the end).
    must("ip", &["netns", "del", &gone_name]);
    d.restart();
    assert!(
        !resolv.exists(),
        "the resolver config of a namespace gone while the daemon was stopped is removed on start"
    );
    let show = d.json(&["show"]);
    let p2 = show["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p2")
        .unwrap()
        .clone();
    assert_eq!(p2["status"], "detached", "{p2}");
    assert!(p2["detail"].as_str().unwrap().contains(&gone_name), "{p2}");
    assert!(d.log().contains("could not be restored"));
    // The rest works, and the detached port can be deleted.
    let p1 = show["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "p1")
        .unwrap()
        .clone();
    assert_eq!(p1["status"], "up");
    d.ok(&["del-port", "p2"]);
    assert!(ns[0].has_link("eth0"));
    drop(gone);
}

fn namespace_vanishing_at_runtime_marks_port_down() {
    let (d, mut ns) = setup(3, "10.77.11");
    assert!(ns[0].ping("10.77.11.4", 1));
    let gone = ns.remove(2);
    let resolv = std::path::Path::new("/etc/netns")
        .join(&gone.name)
        .join("resolv.conf");
    assert!(resolv.exists(), "vswitchd wrote {}", resolv.display());
    // `ip netns del` (the guard cleans up at the end of the test): the port goes down, and
    // traffic towards it (flooded ARP) or its own fd reports the loss.
    must("ip", &["netns", "del", &gone.name]);
    ns[0].exec_ok(&["ip", "neigh", "flush", "all"]);
    let _ = ns[0].ping_any("10.77.11.4", 2);
    assert!(
        wait_until(10, || d.stats("p3")["status"] == "down"),
        "p3 marked down: {}",
        d.stats("p3")
    );
    assert!(ns[0].ping("10.77.11.3", 2), "the others keep working");
    assert!(d.ok(&["show"]).contains("down"));
    assert_eq!(d.json(&["show"])["daemon"]["ports_lost"], 1, "counted once");
    assert!(
        wait_until(5, || !resolv.exists()),
        "the resolver config of the vanished namespace is removed"
    );
    d.ok(&["del-port", "p3"]);
    drop(gone);
}

/// An interface deleted while frames flood into and out of it (a TAP read and written in
/// io_uring batches at that rate): the port goes down once, the daemon keeps serving the others.
fn interface_deleted_under_a_flood_marks_port_down() {
    let (d, ns) = setup(3, "10.77.17");
    assert!(ns[0].ping("10.77.17.4", 1));
    assert!(ns[2].ping("10.77.17.2", 1));
    let flood = |from: &Netns, to: &str| {
        Bg(std::process::Command::new("ip")
            .args([
                "netns", "exec", &from.name, "ping", "-f", "-l", "64", "-w", "8", to,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap())
    };
    let _into = flood(&ns[0], "10.77.17.4");
    let _out_of = flood(&ns[2], "10.77.17.2");
    assert!(
        wait_until(5, || d.stats("p3")["rx_packets"].as_u64().unwrap_or(0)
            > 5000),
        "the flood is on: {}",
        d.stats("p3")
    );
    if port_type() == "tap" && io_uring_allowed() {
        let batches = &d.json(&["show"])["daemon"]["io_uring_read_batches"];
        assert!(batches.as_u64().unwrap() > 0, "read in io_uring batches");
    }
    ns[2].exec_ok(&["ip", "link", "del", "eth0"]);
    assert!(
        wait_until(10, || d.stats("p3")["status"] == "down"),
        "p3 marked down: {}",
        d.stats("p3")
    );
    assert!(ns[0].ping("10.77.17.3", 2), "the others keep working");
    assert_eq!(d.json(&["show"])["daemon"]["ports_lost"], 1, "counted once");
    d.ok(&["del-port", "p3"]);
}

fn mac_aging_and_table_limit() {
    require_root();
    let d = Daemon::start();
    d.ok(&[
        "network",
        "create",
        "net",
        "--subnet",
        "10.77.12.0/24",
        "--mac-aging",
        "2",
        "--fdb-limit",
        "2",
    ]);
    let ns: Vec<Netns> = (0..3).map(|i| Netns::new(&format!("a{i}"))).collect();
    for (i, n) in ns.iter().enumerate() {
        d.ok(&[
            "add-port",
            "net",
            "--netns",
            &n.name,
            "--ip",
            &format!("10.77.12.{}", i + 2),
            "--name",
            &format!("p{i}"),
        ]);
    }
    assert!(ns[0].ping("10.77.12.3", 1));
    assert!(ns[0].ping("10.77.12.4", 1));
    let fdb = d.json(&["fdb", "show", "net"]);
    assert!(
        fdb[0]["entries"].as_array().unwrap().len() <= 2,
        "never more than the limit: {fdb}"
    );
    assert!(
        fdb[0]["counters"]["evicted"].as_u64().unwrap() >= 1,
        "evictions counted: {fdb}"
    );
    // Entries age out after 2 s of silence, and the periodic sweep counts them.
    assert!(
        wait_until(10, || {
            let t = &d.json(&["fdb", "show", "net"])[0];
            t["entries"].as_array().unwrap().is_empty()
                && t["counters"]["expired"].as_u64().unwrap() >= 1
        }),
        "entries age out: {}",
        d.json(&["fdb", "show", "net"])
    );
    // Forwarding still works after aging (it floods and relearns).
    assert!(ns[1].ping("10.77.12.2", 1));
}

fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let (d, ns) = setup(1, "10.77.13");
    let spare = Netns::new("sp");
    spare.exec_ok(&[
        "ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0peer",
    ]);
    let before = d.show_stable();
    let links_before = spare.links();
    let n = &spare.name;

    let cases: Vec<(Vec<&str>, &str, &str)> = vec![
        (
            vec!["network", "create", "net", "--subnet", "10.99.0.0/24"],
            "network_exists",
            "10.77.13.0/24",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.99.13.5/24"],
            "invalid_argument",
            "host bits",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.77.13.128/25"],
            "subnet_overlap",
            "net",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.77.0.0/16"],
            "subnet_overlap",
            "net",
        ),
        (
            vec!["network", "create", "x", "--subnet", "172.17.5.0/24"],
            "subnet_overlap",
            "bridge",
        ),
        (
            vec!["network", "create", "x", "--subnet", "10.0.0.0/33"],
            "invalid_argument",
            "CIDR",
        ),
        (
            vec!["network", "create", "x", "--subnet", "banana"],
            "invalid_argument",
            "banana",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.98.0.0/24",
                "--gateway",
                "10.97.0.1",
            ],
            "invalid_argument",
            "gateway",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.98.0.0/24",
                "--driver",
                "nosuchdriver",
            ],
            "invalid_argument",
            "driver",
        ),
        (
            // Overlays exist now, but need a VTEP (overlay.rs covers the rest).
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.98.0.0/24",
                "--driver",
                "overlay",
            ],
            "invalid_argument",
            "VTEP",
        ),
        (
            vec!["network", "create", "bad/name", "--subnet", "10.98.0.0/24"],
            "invalid_argument",
            "name",
        ),
        (
            vec![
                "network",
                "create",
                "x",
                "--subnet",
                "10.98.0.0/24",
                "--fdb-limit",
                "0",
            ],
            "invalid_argument",
            "FDB",
        ),
        (
            vec!["network", "inspect", "nope"],
            "network_not_found",
            "nope",
        ),
        (
            vec!["add-port", "nope", "--netns", n],
            "network_not_found",
            "nope",
        ),
        (
            vec!["add-port", "net", "--netns", n, "--name", "p1"],
            "port_exists",
            "p1",
        ),
        (
            vec![
                "add-port",
                "net",
                "--netns",
                n,
                "--ifname",
                "eth1",
                "--mac",
                "zz:00:00:00:00:01",
            ],
            "invalid_argument",
            "MAC",
        ),
        (
            vec![
                "add-port",
                "net",
                "--netns",
                n,
                "--ifname",
                "eth1",
                "--mac",
                "01:00:5e:00:00:01",
            ],
            "invalid_argument",
            "multicast",
        ),
        (
            vec![
                "add-port",
                "net",
                "--netns",
                n,
                "--ifname",
                "eth1",
                "--mac",
                "02:42:0a:4d:0d:02",
            ],
            "mac_in_use",
            "p1",
        ),
        (
            vec![
                "add-port", "net", "--netns", n, "--ifname", "eth1", "--mtu", "20",
            ],
            "invalid_argument",
            "MTU",
        ),
        (
            vec![
                "add-port", "net", "--netns", n, "--ifname", "eth1", "--mtu", "70000",
            ],
            "invalid_argument",
            "MTU",
        ),
        (
            vec![
                "add-port",
                "net",
                "--netns",
                n,
                "--ifname",
                "eth1",
                "--ip",
                "10.78.0.5",
            ],
            "invalid_argument",
            "outside",
        ),
        (
            vec![
                "add-port",
                "net",
                "--netns",
                n,
                "--ifname",
                "eth1",
                "--ip",
                "10.77.13.2",
            ],
            "address_in_use",
            "p1",
        ),
        (
            vec![
                "add-port",
                "net",
                "--netns",
                n,
                "--ifname",
                "eth1",
                "--ip",
                "10.77.13.1",
            ],
            "address_in_use",
            "gateway",
        ),
        (
            vec![
                "add-port",
                "net",
                "--netns",
                n,
                "--ifname",
                "eth1",
                "--ip",
                "10.77.13.255",
            ],
            "invalid_argument",
            "broadcast",
        ),
        (
            vec![
                "add-port",
                "net",
                "--netns",
                n,
                "--ifname",
                "eth1",
                "--ip",
                "10.77.13.9/16",
            ],
            "invalid_argument",
            "prefix",
        ),
        (
            vec![
                "add-port",
                "net",
                "--netns",
                n,
                "--ifname",
                "eth1",
                "--ip",
                "10.77.13.300",
            ],
            "invalid_argument",
            "address",
        ),
        (
            vec![
                "add-port",
                "net",
                "--netns",
                "vt-no-such-ns",
                "--ip",
                "10.77.13.9",
            ],
            "netns_not_found",
            "vt-no-such-ns",
        ),
        (
            vec!["add-port", "net", "--netns", "/nonexistent/ns"],
            "netns_not_found",
            "nonexistent",
        ),
        (
            vec!["add-port", "net", "--netns", "/etc/hostname", "--name", "q"],
            "netns_not_found",
            "not a network namespace",
        ),
        (
            vec!["add-port", "net", "--netns", "999999999"],
            "netns_not_found",
            "999999999",
        ),
        (
            vec!["add-port", "net", "--netns", "a/b"],
            "invalid_argument",
            "namespace",
        ),
        (
            vec!["add-port", "net", "--netns", n, "--ip", "10.77.13.9"],
            "ifname_taken",
            "eth0",
        ),
        (
            vec![
                "add-port",
                "net",
                "--netns",
                n,
                "--ifname",
                "much-too-long-name0",
            ],
            "invalid_argument",
            "interface name",
        ),
        (vec!["del-port", "nope"], "port_not_found", "nope"),
        (vec!["port", "stats", "nope"], "port_not_found", "nope"),
        (vec!["fdb", "show", "nope"], "network_not_found", "nope"),
    ];
    for (args, code, needle) in &cases {
        let (got, msg) = d.err(args);
        assert_eq!(&got, code, "{args:?}: {msg}");
        assert!(
            msg.contains(needle),
            "{args:?}: message {msg:?} should mention {needle:?}"
        );
    }
    assert_eq!(d.show_stable(), before, "no bad request changed anything");
    assert_eq!(spare.links(), links_before, "no interface was left behind");
    assert!(ns[0].has_link("eth0"));
}

#[test]
fn hostile_clients_do_not_disturb_the_daemon() {
    require_root();
    let d = Daemon::start();
    let before = d.show_stable();

    let v = d.raw(b"this is not json\n");
    assert_eq!(v["error"]["code"], "bad_request");
    let v = d.raw(b"{\"op\":\"show\"}\n");
    assert_eq!(v["error"]["code"], "bad_request", "{v}");
    let v = d.raw(b"{\"version\":7,\"op\":\"show\"}\n");
    assert_eq!(v["error"]["code"], "unsupported_version");
    let v = d.raw(b"{\"version\":1,\"op\":\"format-disk\"}\n");
    assert_eq!(v["error"]["code"], "bad_request");
    let v = d.raw(
        b"{\"version\":1,\"op\":\"network-create\",\"name\":[1,2],\"subnet\":\"10.1.0.0/24\"}\n",
    );
    assert_eq!(v["error"]["code"], "bad_request");
    let v = d.raw(b"\xff\xfe\x00garbage\n");
    assert_eq!(v["error"]["code"], "bad_request");
    // Oversized: 2 MiB without a newline.
    let big = vec![b'{'; 2 << 20];
    let v = d.raw(&big);
    assert_eq!(v["error"]["code"], "request_too_large");

    // Clients that connect and never send (or send half a line) do not block others.
    let idle: Vec<UnixStream> = (0..20)
        .map(|_| UnixStream::connect(&d.socket).unwrap())
        .collect();
    let mut half = UnixStream::connect(&d.socket).unwrap();
    half.write_all(b"{\"version\":1,\"op\":").unwrap();
    for _ in 0..3 {
        d.ok(&["network", "ls"]);
    }
    // A request pipelined on one connection gets answers in order.
    let v = d.raw(b"{\"version\":1,\"op\":\"network-list\"}\n{\"version\":1,\"op\":\"show\"}\n");
    assert!(v["ok"]["networks"].is_array(), "{v}");
    drop(idle);
    drop(half);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(d.show_stable(), before);
    assert!(d.ok(&["show"]).contains("bridge"));
}

#[test]
fn second_instance_is_refused() {
    require_root();
    let d = Daemon::start();
    let out = std::process::Command::new(bin("vswitchd"))
        .arg("--socket")
        .arg(d.dir.join("other.sock"))
        .arg("--state-dir")
        .arg(&d.state_dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("in use by another vswitchd"));
    let other_state = d.dir.join("other-state");
    let out = std::process::Command::new(bin("vswitchd"))
        .arg("--socket")
        .arg(&d.socket)
        .arg("--state-dir")
        .arg(&other_state)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already listening"));
    // The first one is unharmed.
    d.ok(&["show"]);
    let mode = std::fs::metadata(&d.socket)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .unwrap();
    assert_eq!(mode, 0o660, "socket mode");
}

#[test]
fn json_on_every_read_command() {
    let (d, _ns) = setup(1, "10.77.14");
    for args in [
        vec!["show"],
        vec!["network", "ls"],
        vec!["network", "inspect", "net"],
        vec!["fdb", "show"],
        vec!["fdb", "show", "net"],
        vec!["port", "stats"],
        vec!["port", "stats", "p1"],
    ] {
        let v = d.json(&args);
        assert!(v.is_object() || v.is_array(), "{args:?}: {v}");
    }
    let stats = d.stats("p1");
    for reason in [
        "runt",
        "bad_length",
        "invalid_source",
        "hairpin",
        "no_destination",
        "tx_error",
    ] {
        assert!(
            stats["drops"][reason].is_u64(),
            "drop reason {reason} listed: {stats}"
        );
    }
    // Human output too.
    assert!(d.ok(&["network", "ls"]).contains("10.77.14.0/24"));
    assert!(d.ok(&["port", "stats", "p1"]).contains("rx:"));
}

/// Sends raw Ethernet frames (hex strings) out of `ifname` in `ns` through an AF_PACKET socket.
fn send_raw(ns: &Netns, ifname: &str, frames: &[String]) {
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)\ns.bind(({ifname:?}, 0))\nfor f in {frames:?}:\n    s.send(bytes.fromhex(f))\n"
    );
    ns.exec_ok(&["python3", "-c", &script]);
}

fn malformed_frames_from_a_container_are_counted_not_forwarded() {
    let (d, ns) = setup(2, "10.77.15");
    assert!(ns[0].ping("10.77.15.3", 1));
    let (_, p2_tx0) = rx_tx(&d, "p2");
    let dst = "ffffffffffff";
    let payload = "00".repeat(46);
    let frames = vec![
        // 802.3 length field claiming 1000 bytes in a 60-byte frame.
        format!("{dst}020000000001{:04x}{payload}", 1000),
        // Neither a length nor an EtherType (1501..1535).
        format!("{dst}020000000001{:04x}{payload}", 1510),
        // Multicast source MAC.
        format!("{dst}01005e000001{:04x}{payload}", 0x0800),
        // All-zero source MAC.
        format!("{dst}000000000000{:04x}{payload}", 0x0800),
    ];
    send_raw(&ns[0], "eth0", &frames);
    assert!(
        wait_until(5, || {
            let s = d.stats("p1");
            s["drops"]["bad_length"] == 2 && s["drops"]["invalid_source"] == 2
        }),
        "drops counted by reason: {}",
        d.stats("p1")
    );
    let (_, p2_tx1) = rx_tx(&d, "p2");
    assert_eq!(p2_tx0, p2_tx1, "none of them reached p2");
    let fdb = d.json(&["fdb", "show", "net"]);
    let macs: Vec<&str> = fdb[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["mac"].as_str().unwrap())
        .collect();
    assert!(
        !macs.contains(&"02:00:00:00:00:01") && !macs.contains(&"01:00:5e:00:00:01"),
        "{macs:?}"
    );
    // A valid frame after them is still switched.
    assert!(ns[0].ping("10.77.15.3", 1));
}

per_port_type!(
    two_namespaces_ping_each_other_both_ways,
    custom_ifname_mac_mtu_and_pid_namespace,
    learning_flooding_and_known_unicast,
    mac_move_updates_the_entry,
    networks_are_isolated,
    del_port_and_network_rm_rules,
    restart_restores_networks_and_ports,
    restart_reports_ports_whose_namespace_is_gone,
    namespace_vanishing_at_runtime_marks_port_down,
    interface_deleted_under_a_flood_marks_port_down,
    mac_aging_and_table_limit,
    bad_input_gets_a_clear_error_and_changes_nothing,
    malformed_frames_from_a_container_are_counted_not_forwarded,
);

/// TAPs are persistent while their port exists: after kill -9 the containers keep their
/// interfaces (without carrier: no switch behind them), and the restarted daemon attaches to
/// them again instead of re-creating them — same index, addresses and routes. A TAP changed
/// while the daemon was down is re-created; a clean stop still removes them.
#[test]
fn kill_9_restart_takes_over_tap_interfaces() {
    let (mut d, ns) = setup(2, "10.77.16");
    assert!(ns[0].ping("10.77.16.3", 1));
    let (index_a, index_b) = (ns[0].ifindex("eth0"), ns[1].ifindex("eth0"));

    d.stop_with(9);
    let link = ns[0].exec_ok(&["ip", "-o", "link", "show", "eth0"]);
    assert!(link.contains("NO-CARRIER"), "kept, without carrier: {link}");
    d.restart();
    d.wait_up(&["p1", "p2"]);
    assert_eq!(
        ns[0].ifindex("eth0"),
        index_a,
        "p1's TAP taken over, not re-created"
    );
    assert_eq!(
        ns[1].ifindex("eth0"),
        index_b,
        "p2's TAP taken over, not re-created"
    );
    assert!(
        ns[0]
            .exec_ok(&["ip", "-o", "addr", "show", "eth0"])
            .contains("10.77.16.2/24"),
        "address kept"
    );
    assert!(
        ns[0].ping("10.77.16.3", 2),
        "traffic p1 -> p2 after the takeover"
    );
    assert!(
        ns[1].ping("10.77.16.2", 2),
        "traffic p2 -> p1 after the takeover"
    );
    assert!(d.log().contains("TAP taken over"), "the log says so");

    // Killed again, and p1's MAC changed meanwhile: re-created with the port's own MAC.
    d.stop_with(9);
    ns[0].exec_ok(&["ip", "link", "set", "eth0", "address", "02:00:00:00:00:aa"]);
    d.restart();
    d.wait_up(&["p1"]);
    assert_ne!(
        ns[0].ifindex("eth0"),
        index_a,
        "p1's changed TAP re-created"
    );
    assert!(ns[0]
        .exec_ok(&["ip", "-o", "link", "show", "eth0"])
        .contains("02:42:0a:4d:10:02"));
    assert!(ns[0].ping("10.77.16.3", 2));

    // A clean stop removes the TAPs; del-port too.
    d.ok(&["del-port", "p2"]);
    assert!(!ns[1].has_link("eth0"), "del-port removes the TAP");
    assert!(d.stop_with(15).success());
    assert!(!ns[0].has_link("eth0"), "a clean stop removes the TAP");
}
