//! macvlan networks: containers straight on a parent's segment. vswitchd runs in a "host"
//! namespace of the test; its parent is a veth into a "segment" namespace holding the router
//! and a server (never a real interface of the machine). The host keeps using the parent too.

mod common;

use common::segment::*;
use common::*;

fn macvlan(d: &Daemon, name: &str, parent: &str, extra: &[&str]) {
    let mut args = vec![
        "network",
        "create",
        name,
        "--driver",
        "macvlan",
        "--parent",
        parent,
        "--subnet",
        "192.0.2.0/24",
        "--gateway",
        "192.0.2.1",
        "--ip-range",
        "192.0.2.128/25",
    ];
    args.extend_from_slice(extra);
    d.ok(&args);
}

fn bridge_mode_reaches_the_segment_and_each_other() {
    require_root();
    let w = segment();
    let d = Daemon::start_with(Some(&w.host), &[]);
    macvlan(&d, "lan", &w.parent, &[]);
    let c1 = Netns::new("c1");
    let c2 = Netns::new("c2");
    d.ok(&["add-port", "lan", "--netns", &c1.name, "--name", "c1"]);
    d.ok(&["add-port", "lan", "--netns", &c2.name, "--name", "c2"]);
    let ip1 = d.port("c1")["ip"].as_str().unwrap().to_string();
    let ip2 = d.port("c2")["ip"].as_str().unwrap().to_string();
    let mac1 = d.port("c1")["mac"].as_str().unwrap().to_string();
    let mac2 = d.port("c2")["mac"].as_str().unwrap().to_string();
    let (ip1, ip2) = (
        ip1.split('/').next().unwrap().to_string(),
        ip2.split('/').next().unwrap().to_string(),
    );
    assert!(ip1.starts_with("192.0.2.1") || ip1.starts_with("192.0.2.2"));

    // The segment's router reaches both containers and they reach it: no NAT, no proxy.
    assert!(w.seg.ping(&ip1, 3), "segment -> c1");
    assert!(w.seg.ping(&ip2, 3), "segment -> c2");
    assert!(
        c1.ping("192.0.2.1", 3),
        "c1 -> its gateway, the segment's router"
    );
    assert!(c1.ping(&ip2, 3), "bridge mode: c1 -> c2 through the switch");
    let n1 = neighbour_mac(&w.seg, &ip1);
    let n2 = neighbour_mac(&w.seg, &ip2);
    assert_eq!(n1, mac1, "the segment sees c1's own MAC");
    assert_eq!(n2, mac2, "the segment sees c2's own MAC");
    assert_ne!(n1, n2);

    // A page from the segment, intact, with the container's own address as the client.
    let dir = TempDir::new("www");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(dir.path("blob"), &body).unwrap();
    let _srv = http_server(&w.seg, &dir, "192.0.2.1");
    let got = curl(&c2, "http://192.0.2.1:8080/blob").expect("curl from c2");
    assert!(got == body, "the page arrives intact ({} bytes)", got.len());
    // And the other way: a server in c1, reached from the segment.
    let server = std::process::Command::new("ip")
        .args(["netns", "exec", &c1.name, "socat"])
        .arg(format!("TCP-LISTEN:8080,bind={ip1},reuseaddr,fork"))
        .arg("SYSTEM:echo from-c1")
        .spawn()
        .unwrap();
    let _server = Bg(server);
    assert!(
        wait_until(10, || w
            .seg
            .exec(&[
                "socat",
                "-t",
                "5",
                "-T",
                "5",
                "-",
                &format!("TCP:{ip1}:8080")
            ])
            .stdout
            .starts_with(b"from-c1")),
        "the segment reaches a server in c1"
    );
    // The segment's broadcasts reach the containers (a copy: the host has them too).
    assert!(
        broadcast_reaches(&w.seg, &c1, "192.0.2.255"),
        "a broadcast from the segment reaches c1: {}",
        d.log()
    );
    assert!(
        broadcast_reaches(&w.seg, &w.host, "192.0.2.255"),
        "and the host still gets the segment's broadcasts"
    );
    // The host keeps its own use of the parent meanwhile.
    assert!(
        w.host.ping("192.0.2.1", 3),
        "the host's own traffic on the parent"
    );
    let net = d.json(&["network", "inspect", "lan"]);
    assert_eq!(net["driver"], "macvlan");
    assert_eq!(net["parent"], w.parent.as_str());
    assert_eq!(net["mode"], "bridge");
    assert!(net["parent_error"].is_null(), "{net}");

    // Restart, clean and killed: the network and its ports come back and work.
    let mut d = d;
    for (signal, how) in [(15, "SIGTERM"), (9, "kill -9")] {
        d.stop_with(signal);
        d.restart();
        assert!(
            wait_until(10, || w.seg.ping(&ip1, 1)),
            "segment -> c1 after {how}: {}",
            d.log()
        );
        assert!(c2.ping("192.0.2.1", 2), "c2 -> router after {how}");
        assert!(c1.ping(&ip2, 2), "c1 -> c2 after {how}");
        assert!(w.host.ping("192.0.2.1", 1), "the host's own after {how}");
        assert_eq!(
            d.json(&["network", "inspect", "lan"])["parent"],
            w.parent.as_str()
        );
    }
    // Removing the network gives the parent back to the host alone.
    d.ok(&["network", "rm", "lan", "--force"]);
    let link = w.host.exec_ok(&["ip", "link", "show", "dev", &w.parent]);
    assert!(
        !link.contains("xdp"),
        "the program goes with the last network: {link}"
    );
    assert!(w.host.ping("192.0.2.1", 2), "the host still has its parent");
}

fn private_mode_reaches_the_segment_only() {
    require_root();
    let w = segment();
    let d = Daemon::start_with(Some(&w.host), &[]);
    macvlan(&d, "priv", &w.parent, &["--mode", "private"]);
    let c1 = Netns::new("p1");
    let c2 = Netns::new("p2");
    d.ok(&["add-port", "priv", "--netns", &c1.name, "--name", "p1"]);
    d.ok(&["add-port", "priv", "--netns", &c2.name, "--name", "p2"]);
    let ip2 = d.port("p2")["ip"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(c1.ping("192.0.2.1", 3), "p1 -> the segment");
    assert!(c2.ping("192.0.2.1", 3), "p2 -> the segment");
    assert!(w.seg.ping(&ip2, 2), "the segment -> p2");
    assert!(!c1.ping_any(&ip2, 3), "private: p1 does not reach p2");
    assert_eq!(d.json(&["network", "inspect", "priv"])["mode"], "private");
    // p1's ARP for p2 reached the segment only, and (with a static entry) unicast is refused
    // and counted.
    c1.exec_ok(&[
        "ip",
        "neigh",
        "replace",
        &ip2,
        "lladdr",
        d.port("p2")["mac"].as_str().unwrap(),
        "dev",
        "eth0",
    ]);
    assert!(!c1.ping_any(&ip2, 2));
    let drops = d.stats("p1");
    assert!(
        drops["drops"]["icc_denied"].as_u64().unwrap_or(0) >= 1,
        "counted: {drops}"
    );
}

fn vlans_are_tagged_by_the_switch_and_isolated() {
    require_root();
    let w = segment();
    let d = Daemon::start_with(Some(&w.host), &[]);
    // This kernel has no 802.1Q (CONFIG_VLAN_8021Q is off): the peer beyond the tagged link
    // is a second switch, in the segment namespace, on VLANs of its own end. Its XDP program
    // takes what is for its containers before tcpdump could see it; what it leaves to its
    // host (ARP for an address on the other VLAN) shows the tags on the wire.
    let peer = Daemon::start_with(Some(&w.seg), &[]);
    let net = |d: &Daemon, name: &str, parent: String, range: &str| {
        d.ok(&[
            "network",
            "create",
            name,
            "--driver",
            "macvlan",
            "--parent",
            &parent,
            "--subnet",
            "10.10.0.0/24",
            "--gateway",
            "10.10.0.1",
            "--ip-range",
            range,
        ]);
    };
    net(&d, "v10", format!("{}.10", w.parent), "10.10.0.128/25");
    net(&d, "v20", format!("{}.20", w.parent), "10.10.0.128/25");
    net(&peer, "v10", format!("{}.10", w.seg_if), "10.10.0.64/26");
    net(&peer, "v20", format!("{}.20", w.seg_if), "10.10.0.64/26");
    let a = Netns::new("va");
    let b = Netns::new("vb");
    let r10 = Netns::new("r10");
    let r20 = Netns::new("r20");
    d.ok(&[
        "add-port",
        "v10",
        "--netns",
        &a.name,
        "--name",
        "va",
        "--ip",
        "10.10.0.130",
    ]);
    d.ok(&[
        "add-port",
        "v20",
        "--netns",
        &b.name,
        "--name",
        "vb",
        "--ip",
        "10.10.0.140",
    ]);
    peer.ok(&[
        "add-port",
        "v10",
        "--netns",
        &r10.name,
        "--name",
        "r10",
        "--ip",
        "10.10.0.66",
    ]);
    peer.ok(&[
        "add-port",
        "v20",
        "--netns",
        &r20.name,
        "--name",
        "r20",
        "--ip",
        "10.10.0.77",
    ]);

    let cap = TempDir::new("cap");
    let dump_file = cap.path("seg.txt");
    let dump = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &w.seg.name,
            "tcpdump",
            "-l",
            "-n",
            "-e",
            "-i",
        ])
        .arg(&w.seg_if)
        .args(["-Q", "in"])
        .stdout(std::fs::File::create(&dump_file).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dump = Bg(dump);
    std::thread::sleep(std::time::Duration::from_millis(800));
    assert!(
        wait_until(10, || a.ping("10.10.0.66", 1)),
        "VLAN 10 across the tagged link: {}",
        d.log()
    );
    assert!(
        a.ping("10.10.0.66", 3),
        "VLAN 10 across the tagged link, every echo"
    );
    assert!(r20.ping("10.10.0.140", 3), "VLAN 20 across the tagged link");
    // Isolated: the same subnet on both VLANs, and neither hears the other.
    assert!(
        !a.ping_any("10.10.0.77", 2),
        "VLAN 10 does not reach VLAN 20"
    );
    assert!(
        !b.ping_any("10.10.0.66", 2),
        "VLAN 20 does not reach VLAN 10"
    );
    // Untagged frames stay with each side's host: the host's own ping on the parent works.
    assert!(w.host.ping("192.0.2.1", 2), "untagged: the hosts' own");
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(dump);
    let seen = std::fs::read_to_string(&dump_file).unwrap();
    let tagged = |vid: &str, who: &str| {
        seen.lines()
            .any(|l| l.contains(&format!("vlan {vid},")) && l.contains(&format!("tell {who}")))
    };
    assert!(
        tagged("10", "10.10.0.130"),
        "VLAN 10's ARP carries tag 10: {seen}"
    );
    assert!(
        tagged("20", "10.10.0.140"),
        "VLAN 20's ARP carries tag 20: {seen}"
    );
    assert!(
        !seen
            .lines()
            .any(|l| l.contains("10.10.0.") && !l.contains("vlan")),
        "no container frame leaves untagged: {seen}"
    );
}

fn bad_input_is_refused_and_changes_nothing() {
    require_root();
    let w = segment();
    let d = Daemon::start_with(Some(&w.host), &[]);
    macvlan(&d, "lan", &w.parent, &[]);
    let before = d.json(&["network", "ls"]);
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--parent".into(), "nosuchif0".into()],
            "does not exist",
        ),
        (
            vec!["--parent".into(), format!("{}.0", w.parent)],
            "1 to 4094",
        ),
        (
            vec!["--parent".into(), format!("{}.4095", w.parent)],
            "1 to 4094",
        ),
        (vec!["--parent".into(), w.parent.clone()], "different VLANs"),
        (
            vec![
                "--parent".into(),
                format!("{}.7", w.parent),
                "--mode".into(),
                "vepa".into(),
            ],
            "does not exist",
        ),
        (vec![], "needs --parent"),
    ];
    for (extra, want) in cases {
        let mut args: Vec<&str> = vec![
            "network",
            "create",
            "bad",
            "--driver",
            "macvlan",
            "--subnet",
            "10.99.0.0/24",
        ];
        args.extend(extra.iter().map(String::as_str));
        let (_, err) = d.err(&args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let (_, err) = d.err(&[
        "network",
        "create",
        "br",
        "--subnet",
        "10.98.0.0/24",
        "--parent",
        &w.parent,
    ]);
    assert!(err.contains("macvlan and ipvlan networks only"), "{err}");
    assert_eq!(d.json(&["network", "ls"]), before, "nothing changed");

    // A parent that vanishes takes the network's ports down, with the reason.
    let c = Netns::new("gone");
    d.ok(&["add-port", "lan", "--netns", &c.name, "--name", "g1"]);
    assert!(c.ping("192.0.2.1", 2));
    w.host.exec_ok(&["ip", "link", "del", &w.parent]);
    assert!(
        wait_until(10, || {
            let p = d.port("g1");
            p["status"] == "down" && p["detail"].as_str().unwrap_or("").contains("parent")
        }),
        "the container's port goes down with its parent: {}",
        d.port("g1")
    );
}

#[test]
fn macvlan_bridge_mode() {
    bridge_mode_reaches_the_segment_and_each_other();
}

#[test]
fn macvlan_private_mode() {
    private_mode_reaches_the_segment_only();
}

#[test]
fn macvlan_vlans() {
    vlans_are_tagged_by_the_switch_and_isolated();
}

#[test]
fn macvlan_bad_input() {
    bad_input_is_refused_and_changes_nothing();
}
