//! Port security and `--no-icc`, with real kernels on both sides: a container that changes its
//! MAC, sends from an address it was not given or forges ARP replies is cut off (and counted)
//! while its neighbours keep talking; the same attacks work where port security is off (so the
//! test shows it is the switch that stops them); the containers of a `--no-icc` network reach
//! the gateway (ping, DNS) but not each other. Everything persists across a restart.

mod common;

use std::process::{Command, Stdio};

use common::*;

/// Sends, from `ns`'s eth0, `count` forged ARP replies to `to_mac`/`to_ip` claiming `claim_ip`
/// is at `ns`'s own MAC (the classic cache poisoning; the frame's source MAC is honest).
fn forge_arp_reply(ns: &Netns, own_mac: &str, claim_ip: &str, to_mac: &str, to_ip: &str) {
    let script = r#"
import socket, sys, time
own, claim, to_mac, to_ip = sys.argv[1:5]
mac = lambda m: bytes(int(x, 16) for x in m.split(':'))
ip = lambda a: socket.inet_aton(a)
frame = mac(to_mac) + mac(own) + b'\x08\x06' + b'\x00\x01\x08\x00\x06\x04\x00\x02' \
    + mac(own) + ip(claim) + mac(to_mac) + ip(to_ip)
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
for _ in range(5):
    s.send(frame)
    time.sleep(0.2)
"#;
    ns.exec_ok(&["python3", "-c", script, own_mac, claim_ip, to_mac, to_ip]);
}

/// The MAC `ns` has cached for `ip` ("" when none).
fn neigh_mac(ns: &Netns, ip: &str) -> String {
    let out = ns.exec_ok(&["ip", "neigh", "show", ip, "dev", "eth0"]);
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or("")
        .to_string()
}

fn drops(d: &Daemon, port: &str, reason: &str) -> u64 {
    d.stats(port)["drops"][reason].as_u64().unwrap()
}

fn mac_of(d: &Daemon, port: &str) -> String {
    d.port(port)["mac"].as_str().unwrap().to_string()
}

fn spoofing_ports_are_cut_off_and_counted_while_others_talk() {
    require_root();
    let mut d = Daemon::start();
    d.ok(&["network", "create", "sec", "--subnet", "10.88.70.0/24"]);
    let a = Netns::new("psa");
    let b = Netns::new("psb");
    let m = Netns::new("psm");
    let n = Netns::new("psn");
    d.ok(&["add-port", "sec", "--netns", &a.name, "--name", "a"]);
    d.ok(&["add-port", "sec", "--netns", &b.name, "--name", "b"]);
    d.ok(&["add-port", "sec", "--netns", &m.name, "--name", "m"]);
    d.ok(&[
        "add-port",
        "sec",
        "--netns",
        &n.name,
        "--name",
        "n",
        "--no-port-security",
    ]);
    d.wait_up(&["a", "b", "m", "n"]);
    let (ip_a, ip_b) = ("10.88.70.2", "10.88.70.3");
    assert_eq!(d.port("a")["ip"], "10.88.70.2/24");
    assert_eq!(d.port("m")["port_security"], true, "on by default");
    assert_eq!(d.port("n")["port_security"], false);
    let (mac_a, mac_b, mac_m, mac_n) = (
        mac_of(&d, "a"),
        mac_of(&d, "b"),
        mac_of(&d, "m"),
        mac_of(&d, "n"),
    );
    assert!(b.ping(ip_a, 2), "b reaches a");
    assert!(m.ping(ip_b, 2), "an honest m is not held back");
    assert!(n.ping(ip_b, 1));
    assert_eq!(neigh_mac(&b, ip_a), mac_a);

    // Forged ARP replies from m claiming a's address: dropped at m's port.
    std::thread::sleep(std::time::Duration::from_millis(1200)); // past the kernel's locktime
    forge_arp_reply(&m, &mac_m, ip_a, &mac_b, ip_b);
    assert!(drops(&d, "m", "spoofed_arp") >= 5, "{}", d.stats("m"));
    assert_eq!(neigh_mac(&b, ip_a), mac_a, "b's cache is not poisoned");
    assert!(b.ping(ip_a, 2), "b still reaches a");

    // An address m was not given.
    m.exec_ok(&["ip", "addr", "add", "10.88.70.200/32", "dev", "eth0"]);
    let spoof = m.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "1",
        "-I",
        "10.88.70.200",
        ip_b,
    ]);
    assert!(!spoof.status.success(), "a spoofed source gets no answer");
    assert!(drops(&d, "m", "spoofed_ip") >= 3, "{}", d.stats("m"));
    m.exec_ok(&["ip", "addr", "del", "10.88.70.200/32", "dev", "eth0"]);

    // Another MAC: cut off until it takes its own back.
    m.exec_ok(&["ip", "link", "set", "eth0", "address", "02:00:5e:00:00:99"]);
    assert!(!m.ping_any("10.88.70.1", 3), "another MAC reaches nobody");
    assert!(drops(&d, "m", "spoofed_mac") >= 1, "{}", d.stats("m"));
    m.exec_ok(&["ip", "link", "set", "eth0", "address", &mac_m]);
    m.exec_ok(&["ip", "neigh", "flush", "dev", "eth0"]);
    assert!(m.ping(ip_b, 2), "its own MAC again: back in");
    assert!(a.ping(ip_b, 2), "the neighbours never lost each other");

    // Without port security the same attacks work: it is the switch that stops them above.
    n.exec_ok(&["ip", "link", "set", "eth0", "address", "02:00:5e:00:00:98"]);
    assert!(
        n.ping("10.88.70.1", 2),
        "an unsecured port may change its MAC"
    );
    std::thread::sleep(std::time::Duration::from_millis(1200));
    forge_arp_reply(&n, "02:00:5e:00:00:98", ip_a, &mac_b, ip_b);
    assert!(
        wait_until(3, || neigh_mac(&b, ip_a) == "02:00:5e:00:00:98"),
        "the forged reply reaches b and poisons its cache: {}",
        b.exec_ok(&["ip", "neigh"])
    );
    assert_eq!(drops(&d, "n", "spoofed_arp"), 0);
    b.exec_ok(&["ip", "neigh", "flush", "dev", "eth0"]);
    n.exec_ok(&["ip", "link", "set", "eth0", "address", &mac_n]);

    // A --dhcp port keeps port security: its client (from 0.0.0.0) gets its lease and works.
    let h = Netns::new("psh");
    d.ok(&[
        "add-port", "sec", "--netns", &h.name, "--name", "h", "--dhcp",
    ]);
    assert_eq!(d.port("h")["port_security"], true);
    let tmp = TempDir::new("psdhcp");
    let script = tmp.path("udhcpc.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\ncase \"$1\" in bound) ip addr add \"$ip/$mask\" dev \"$interface\";; esac\nexit 0\n",
    )
    .unwrap();
    must("chmod", &["+x", script.to_str().unwrap()]);
    h.exec_ok(&[
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-f",
        "-q",
        "-n",
        "-t",
        "3",
        "-T",
        "2",
        "-s",
        script.to_str().unwrap(),
    ]);
    let leased = d.port("h")["ip"].as_str().unwrap().to_string();
    assert!(
        h.exec_ok(&["ip", "-4", "-o", "addr", "show", "eth0"])
            .contains(&leased),
        "the lease is the port's address {leased}"
    );
    assert!(
        h.ping(ip_b, 2),
        "a secured DHCP client reaches its neighbours"
    );
    assert_eq!(drops(&d, "h", "spoofed_ip"), 0);

    // A network with port security off: its ports may change their MAC.
    d.ok(&[
        "network",
        "create",
        "open",
        "--subnet",
        "10.88.71.0/24",
        "--port-security=false",
    ]);
    let o = Netns::new("pso");
    d.ok(&["add-port", "open", "--netns", &o.name, "--name", "o"]);
    assert_eq!(
        d.json(&["network", "inspect", "open"])["port_security"],
        false
    );
    assert_eq!(d.port("o")["port_security"], false, "the network's default");
    o.exec_ok(&["ip", "link", "set", "eth0", "address", "02:00:5e:00:00:97"]);
    assert!(o.ping("10.88.71.1", 2));

    // All of it persists.
    d.stop_with(15);
    d.restart();
    d.wait_up(&["a", "b", "m", "n", "o"]);
    assert_eq!(d.port("m")["port_security"], true);
    assert_eq!(d.port("n")["port_security"], false);
    assert_eq!(d.port("o")["port_security"], false);
    assert_eq!(
        d.json(&["network", "inspect", "sec"])["port_security"],
        true
    );
    assert_eq!(
        d.json(&["network", "inspect", "open"])["port_security"],
        false
    );
    m.exec_ok(&["ip", "neigh", "flush", "dev", "eth0"]);
    assert!(
        wait_until(5, || m.ping(ip_b, 1)),
        "m back after the restart"
    );
    m.exec_ok(&["ip", "link", "set", "eth0", "address", "02:00:5e:00:00:99"]);
    let before = drops(&d, "m", "spoofed_mac");
    assert!(
        !m.ping_any("10.88.70.1", 3),
        "still guarded after a restart"
    );
    assert!(drops(&d, "m", "spoofed_mac") > before);
    n.exec_ok(&["ip", "link", "set", "eth0", "address", "02:00:5e:00:00:98"]);
    n.exec_ok(&["ip", "neigh", "flush", "dev", "eth0"]);
    assert!(
        wait_until(5, || n.ping("10.88.70.1", 1)),
        "still unguarded after a restart"
    );
}

fn no_icc_networks_reach_the_gateway_but_not_each_other() {
    require_root();
    let mut d = Daemon::start();
    d.ok(&[
        "network",
        "create",
        "iso",
        "--subnet",
        "10.88.72.0/24",
        "--no-icc",
    ]);
    assert_eq!(d.json(&["network", "inspect", "iso"])["icc"], false);
    let c1 = Netns::new("icc1");
    let c2 = Netns::new("icc2");
    d.ok(&["add-port", "iso", "--netns", &c1.name, "--name", "c1"]);
    d.ok(&["add-port", "iso", "--netns", &c2.name, "--name", "c2"]);
    d.wait_up(&["c1", "c2"]);
    let ip2 = "10.88.72.3";
    let _web = Bg(Command::new("ip")
        .args(["netns", "exec", &c2.name, "python3", "-m", "http.server"])
        .args(["8000", "--bind", ip2])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    assert!(
        wait_until(10, || c2
            .exec(&["curl", "-sf", "-m", "1", &format!("http://{ip2}:8000/")])
            .status
            .success()),
        "c2's server is up (from c2 itself)"
    );

    let check = |d: &Daemon| {
        assert!(c1.ping("10.88.72.1", 2), "c1 reaches the gateway");
        assert!(c2.ping("10.88.72.1", 2), "c2 reaches the gateway");
        let dig = c1.exec_ok(&["dig", "+tries=1", "+time=3", "@10.88.72.1", "+short", "c2"]);
        assert_eq!(dig.trim(), ip2, "names still resolve");
        let before = drops(d, "c1", "icc_denied");
        assert!(!c1.ping_any(ip2, 3), "c1 cannot ping c2");
        let curl = c1.exec(&["curl", "-sf", "-m", "3", &format!("http://{ip2}:8000/")]);
        assert!(!curl.status.success(), "c1 cannot fetch from c2");
        assert!(!c2.ping_any("10.88.72.2", 2), "nor c2 ping c1");
        assert!(
            drops(d, "c1", "icc_denied") >= before + 3,
            "{}",
            d.stats("c1")
        );
    };
    check(&d);
    d.stop_with(15);
    d.restart();
    d.wait_up(&["c1", "c2"]);
    assert_eq!(d.json(&["network", "inspect", "iso"])["icc"], false);
    check(&d);

    // The same two on a network with icc (the default) reach each other: the drops above are
    // the switch's doing.
    d.ok(&["network", "create", "open", "--subnet", "10.88.73.0/24"]);
    for (ns, name) in [(&c1, "c1o"), (&c2, "c2o")] {
        d.ok(&[
            "add-port", "open", "--netns", &ns.name, "--name", name, "--ifname", "eth1",
        ]);
    }
    d.wait_up(&["c1o", "c2o"]);
    assert!(
        c1.ping("10.88.73.3", 2),
        "c1 reaches c2 over the icc network"
    );
}

/// Sends `count` broadcast frames from `ns`'s eth0, each from a new random unicast MAC; with
/// `paced`, a millisecond's pause every 100 frames keeps the TAP's queue (1000 frames) from
/// overflowing, so that every frame reaches the switch.
fn mac_flood(ns: &Netns, count: u32, paced: bool) {
    let script = r#"
import os, socket, sys, time
n = int(sys.argv[1])
paced = sys.argv[2] == '1'
macs = bytearray(os.urandom(6 * n))
for i in range(0, 6 * n, 6):
    macs[i] = (macs[i] & 0xfc) | 0x02   # locally administered unicast
tail = b'\x88\xb5' + b'\0' * 46
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
dst = b'\xff' * 6
for i in range(0, 6 * n, 6):
    if paced and i % 600 == 0:
        time.sleep(0.001)
    try:
        s.send(dst + macs[i:i + 6] + tail)
    except OSError:
        pass   # a full queue: the frame is lost, the flood goes on
"#;
    let n = count.to_string();
    ns.exec_ok(&["python3", "-c", script, &n, if paced { "1" } else { "0" }]);
}

fn fdb_count(d: &Daemon, net: &str, port: &str) -> usize {
    let fdb = d.json(&["fdb", "show", net]);
    fdb[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["port"] == port)
        .count()
}

fn a_mac_flood_is_bounded_per_port_and_the_others_keep_talking() {
    require_root();
    let d = Daemon::start();
    d.ok(&[
        "network",
        "create",
        "fl",
        "--subnet",
        "10.88.76.0/24",
        "--fdb-limit",
        "4096",
    ]);
    d.ok(&[
        "network",
        "create",
        "nolimit",
        "--subnet",
        "10.88.77.0/24",
        "--fdb-limit",
        "4096",
        "--port-mac-limit",
        "0",
    ]);
    assert_eq!(d.json(&["network", "inspect", "fl"])["port_mac_limit"], 64);
    assert_eq!(
        d.json(&["network", "inspect", "nolimit"])["port_mac_limit"],
        0
    );
    let a = Netns::new("fla");
    let b = Netns::new("flb");
    let f = Netns::new("flf");
    let g = Netns::new("flg");
    d.ok(&["add-port", "fl", "--netns", &a.name, "--name", "a"]);
    d.ok(&["add-port", "fl", "--netns", &b.name, "--name", "b"]);
    // Flooders need their port security off (it would stop them at their first frame).
    d.ok(&[
        "add-port",
        "fl",
        "--netns",
        &f.name,
        "--name",
        "f",
        "--no-port-security",
    ]);
    d.ok(&[
        "add-port",
        "nolimit",
        "--netns",
        &g.name,
        "--name",
        "g",
        "--no-port-security",
    ]);
    d.wait_up(&["a", "b", "f", "g"]);
    assert!(a.ping("10.88.76.3", 2));

    // Without a per-port limit one port fills the table with its junk.
    mac_flood(&g, 3000, true);
    assert!(
        fdb_count(&d, "nolimit", "g") > 1000,
        "unbounded: {} entries; {}",
        fdb_count(&d, "nolimit", "g"),
        d.stats("g")
    );

    // With it, 1 000 000 random MACs leave at most 64 entries, while a and b ping on.
    let pinger = Command::new("ip")
        .args([
            "netns", "exec", &a.name, "ping", "-c", "40", "-i", "0.1", "-W", "1", "-q",
        ])
        .arg("10.88.76.3")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    mac_flood(&f, 1_000_000, false);
    let out = pinger.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(" 0% packet loss"),
        "a ping across the flood loses nothing: {text}"
    );
    let n = fdb_count(&d, "fl", "f");
    assert!(n <= 64, "{n} entries for the flooding port");
    let dropped = drops(&d, "f", "mac_limit");
    assert!(dropped > 100_000, "{}", d.stats("f"));
    let fdb = d.json(&["fdb", "show", "fl"]);
    assert!(
        fdb[0]["entries"].as_array().unwrap().len() <= 64 + 3,
        "the network's table holds the flooder's 64 and the others: {fdb}"
    );
    assert!(a.ping("10.88.76.3", 2) && b.ping("10.88.76.2", 2));
}

mod tap {
    #[test]
    fn spoofing_ports_are_cut_off_and_counted_while_others_talk() {
        crate::common::with_port_type(
            "tap",
            super::spoofing_ports_are_cut_off_and_counted_while_others_talk,
        )
    }
    #[test]
    fn a_mac_flood_is_bounded_per_port_and_the_others_keep_talking() {
        crate::common::with_port_type(
            "tap",
            super::a_mac_flood_is_bounded_per_port_and_the_others_keep_talking,
        )
    }
    #[test]
    fn no_icc_networks_reach_the_gateway_but_not_each_other() {
        crate::common::with_port_type(
            "tap",
            super::no_icc_networks_reach_the_gateway_but_not_each_other,
        )
    }
}

mod afxdp {
    #[test]
    fn spoofing_ports_are_cut_off_and_counted_while_others_talk() {
        crate::common::with_port_type(
            "afxdp",
            super::spoofing_ports_are_cut_off_and_counted_while_others_talk,
        )
    }
}
