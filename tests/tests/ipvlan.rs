//! ipvlan networks: containers on a parent's segment behind the parent's one MAC, told apart
//! by address (the kernel here has no ipvlan: the switch does it). vswitchd runs in a "host"
//! namespace of the test; its parent is a veth into a "segment" namespace holding the router
//! 192.0.2.1 (never a real interface of the machine). The host has 192.0.2.2 on the parent.

mod common;

use common::segment::*;
use common::*;

fn ipvlan(d: &Daemon, name: &str, parent: &str, subnet: &str, extra: &[&str]) {
    let mut args = vec![
        "network", "create", name, "--driver", "ipvlan", "--parent", parent, "--subnet", subnet,
    ];
    args.extend_from_slice(extra);
    d.ok(&args);
}

fn addr_of(d: &Daemon, port: &str) -> String {
    d.port(port)["ip"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string()
}

fn parent_mac(w: &Segment) -> String {
    w.host
        .exec_ok(&["cat", &format!("/sys/class/net/{}/address", w.parent)])
        .trim()
        .to_string()
}

/// The TTL of the echo reply `ns` gets from `ip`.
fn reply_ttl(ns: &Netns, ip: &str) -> Option<u32> {
    let out = ns.exec(&["ping", "-c", "1", "-W", "2", ip]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    text.split_whitespace()
        .find_map(|w| w.strip_prefix("ttl="))
        .and_then(|t| t.parse().ok())
}

fn socat_server(ns: &Netns, ip: &str, says: &str) -> Bg {
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "socat"])
        .arg(format!("TCP-LISTEN:8080,bind={ip},reuseaddr,fork"))
        .arg(format!("SYSTEM:echo {says}"))
        .spawn()
        .unwrap();
    Bg(child)
}

fn fetch(ns: &Netns, ip: &str) -> String {
    let out = ns.exec(&[
        "socat",
        "-t",
        "5",
        "-T",
        "5",
        "-",
        &format!("TCP:{ip}:8080"),
    ]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn l2_shares_the_parents_mac() {
    require_root();
    let w = segment();
    let d = Daemon::start_with(Some(&w.host), &[]);
    ipvlan(
        &d,
        "l2net",
        &w.parent,
        "192.0.2.0/24",
        &["--gateway", "192.0.2.1", "--ip-range", "192.0.2.128/25"],
    );
    let c1 = Netns::new("i1");
    let c2 = Netns::new("i2");
    d.ok(&["add-port", "l2net", "--netns", &c1.name, "--name", "i1"]);
    d.ok(&["add-port", "l2net", "--netns", &c2.name, "--name", "i2"]);
    let (ip1, ip2) = (addr_of(&d, "i1"), addr_of(&d, "i2"));
    let pmac = parent_mac(&w);

    assert!(w.seg.ping(&ip1, 3), "segment -> i1: {}", d.log());
    assert!(w.seg.ping(&ip2, 3), "segment -> i2");
    assert!(
        c1.ping("192.0.2.1", 3),
        "i1 -> its gateway, the segment's router"
    );
    assert!(c1.ping(&ip2, 3), "i1 -> i2 through the switch");
    // One MAC on the wire for every container: the parent's.
    assert_eq!(
        neighbour_mac(&w.seg, &ip1),
        pmac,
        "the segment sees i1 as the parent"
    );
    assert_eq!(
        neighbour_mac(&w.seg, &ip2),
        pmac,
        "the segment sees i2 as the parent"
    );
    assert_ne!(d.port("i1")["mac"].as_str().unwrap(), pmac);
    // l2 does not route: the segment's reply keeps its TTL.
    assert_eq!(reply_ttl(&c1, "192.0.2.1"), Some(64));

    // A page from the segment, intact, and a server in a container reached from it.
    let dir = TempDir::new("www");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 253) as u8).collect();
    std::fs::write(dir.path("blob"), &body).unwrap();
    let _srv = http_server(&w.seg, &dir, "192.0.2.1");
    let got = curl(&c2, "http://192.0.2.1:8080/blob").expect("curl from i2");
    assert!(got == body, "the page arrives intact ({} bytes)", got.len());
    let _server = socat_server(&c1, &ip1, "from-i1");
    assert!(
        wait_until(10, || fetch(&w.seg, &ip1).starts_with("from-i1")),
        "the segment reaches a server in i1"
    );
    assert!(w.host.ping("192.0.2.1", 2), "the host keeps its parent");
    // l2: the segment's broadcasts reach the containers (and the host still has them).
    assert!(
        broadcast_reaches(&w.seg, &c2, "192.0.2.255"),
        "a broadcast from the segment reaches i2: {}",
        d.log()
    );
    assert!(broadcast_reaches(&w.seg, &w.host, "192.0.2.255"));
    let net = d.json(&["network", "inspect", "l2net"]);
    assert_eq!(net["driver"], "ipvlan");
    assert_eq!(net["mode"], "l2");
    assert!(net["parent_error"].is_null(), "{net}");

    let mut d = d;
    for (signal, how) in [(15, "SIGTERM"), (9, "kill -9")] {
        d.stop_with(signal);
        d.restart();
        assert!(
            wait_until(10, || w.seg.ping(&ip1, 1)),
            "segment -> i1 after {how}: {}",
            d.log()
        );
        assert!(c2.ping("192.0.2.1", 2), "i2 -> router after {how}");
        assert!(c1.ping(&ip2, 2), "i1 -> i2 after {how}");
        assert_eq!(d.json(&["network", "inspect", "l2net"])["mode"], "l2");
    }
    d.ok(&["network", "rm", "l2net", "--force"]);
    let link = w.host.exec_ok(&["ip", "link", "show", "dev", &w.parent]);
    assert!(
        !link.contains("xdp"),
        "the program goes with the network: {link}"
    );
}

fn l3_routes_and_keeps_broadcasts_off_the_segment() {
    require_root();
    let w = segment();
    let d = Daemon::start_with(Some(&w.host), &[]);
    // Two l3 networks share the parent: one in the segment's subnet, one the segment's router
    // reaches through the host (192.0.2.2), as it would the kernel's ipvlan l3.
    ipvlan(
        &d,
        "l3a",
        &w.parent,
        "192.0.2.0/24",
        &[
            "--mode",
            "l3",
            "--gateway",
            "192.0.2.1",
            "--ip-range",
            "192.0.2.128/25",
        ],
    );
    ipvlan(&d, "l3b", &w.parent, "10.78.0.0/24", &["--mode", "l3"]);
    w.seg
        .exec_ok(&["ip", "route", "add", "10.78.0.0/24", "via", "192.0.2.2"]);
    let a1 = Netns::new("a1");
    let a2 = Netns::new("a2");
    let b1 = Netns::new("b1");
    d.ok(&["add-port", "l3a", "--netns", &a1.name, "--name", "a1"]);
    d.ok(&["add-port", "l3a", "--netns", &a2.name, "--name", "a2"]);
    d.ok(&[
        "add-port",
        "l3b",
        "--netns",
        &b1.name,
        "--name",
        "b1",
        "--ip",
        "10.78.0.10",
    ]);
    let (ip1, ip2) = (addr_of(&d, "a1"), addr_of(&d, "a2"));
    let pmac = parent_mac(&w);

    assert!(
        wait_until(10, || a1.ping("192.0.2.1", 1)),
        "a1 -> the segment's router: {}",
        d.log()
    );
    assert!(a2.ping("192.0.2.1", 3), "a2 -> the router");
    assert!(w.seg.ping(&ip1, 3), "the router -> a1");
    // Routed: the TTL is one less each way through the switch.
    assert_eq!(
        reply_ttl(&a1, "192.0.2.1"),
        Some(63),
        "routed, TTL decremented"
    );
    assert_eq!(reply_ttl(&w.seg, &ip2), Some(63));
    assert_eq!(neighbour_mac(&w.seg, &ip1), pmac);
    assert_eq!(neighbour_mac(&w.seg, &ip2), pmac);
    // The second subnet: reached by routing, from the segment and from the first subnet.
    assert!(
        b1.ping("192.0.2.1", 3),
        "b1 -> the router, routed by the switch"
    );
    assert!(
        w.seg.ping("10.78.0.10", 3),
        "the router -> b1 via the host's address"
    );
    assert_eq!(reply_ttl(&w.seg, "10.78.0.10"), Some(63));
    assert!(a1.ping("10.78.0.10", 3), "a1 -> b1 across the two subnets");
    assert_eq!(reply_ttl(&a1, "10.78.0.10"), Some(63));
    // A router's answer to a TTL run out: ICMP time exceeded from the container's gateway.
    let out = b1.exec(&["ping", "-c", "1", "-t", "1", "-W", "2", "192.0.2.1"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("From 10.78.0.1") && text.contains("Time to live exceeded"),
        "{text}"
    );
    let _server = socat_server(&b1, "10.78.0.10", "from-b1");
    assert!(
        wait_until(10, || fetch(&w.seg, "10.78.0.10").starts_with("from-b1")),
        "TCP from the segment to b1"
    );

    // No container broadcast or multicast on the segment.
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
        .args(["-Q", "in", "ether multicast"])
        .stdout(std::fs::File::create(&dump_file).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dump = Bg(dump);
    std::thread::sleep(std::time::Duration::from_millis(800));
    a1.exec(&[
        "ping",
        "-b",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "1",
        "192.0.2.255",
    ]);
    a1.exec(&[
        "ping",
        "-b",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "1",
        "255.255.255.255",
    ]);
    a1.exec(&[
        "ping",
        "-c",
        "3",
        "-i",
        "0.2",
        "-W",
        "1",
        "-I",
        "eth0",
        "224.0.0.1",
    ]);
    // An address nobody has, so the container's own ARP is asked (and answered by the switch).
    a2.exec(&["ping", "-c", "2", "-i", "0.2", "-W", "1", "192.0.2.77"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(dump);
    let seen = std::fs::read_to_string(&dump_file).unwrap();
    for ip in [&ip1, &ip2] {
        assert!(
            !seen
                .lines()
                .any(|l| l.contains(ip.as_str()) && !l.contains("Request who-has 192.0.2.77")),
            "no broadcast or multicast from {ip} on the segment: {seen}"
        );
    }
    assert!(!seen.contains("224.0.0.1"), "no multicast: {seen}");
    let stats = d.stats("a1");
    assert!(
        stats["drops"]["no_broadcast"].as_u64().unwrap_or(0) >= 6,
        "counted: {stats}"
    );

    let mut d = d;
    for (signal, how) in [(15, "SIGTERM"), (9, "kill -9")] {
        d.stop_with(signal);
        d.restart();
        assert!(
            wait_until(10, || w.seg.ping("10.78.0.10", 1)),
            "the router -> b1 after {how}: {}",
            d.log()
        );
        assert!(a1.ping("192.0.2.1", 2), "a1 -> router after {how}");
        assert!(a1.ping("10.78.0.10", 2), "a1 -> b1 after {how}");
    }
    // The first network goes; the second keeps the shared segment.
    d.ok(&["network", "rm", "l3a", "--force"]);
    assert!(w.seg.ping("10.78.0.10", 2), "b1 after l3a is gone");
}

fn host_reaches_macvlan_and_ipvlan_containers() {
    require_root();
    let w = segment();
    let d = Daemon::start_with(Some(&w.host), &[]);
    // The host's own 192.0.2.2/24 is on the parent: its route holds the whole subnet, the
    // switch's TAP the containers' range.
    d.ok(&[
        "network",
        "create",
        "mv",
        "--driver",
        "macvlan",
        "--parent",
        &w.parent,
        "--subnet",
        "192.0.2.0/24",
        "--gateway",
        "192.0.2.1",
        "--ip-range",
        "192.0.2.128/25",
        "--host-access",
    ]);
    let vlan = format!("{}.30", w.parent);
    ipvlan(&d, "iv", &vlan, "10.30.0.0/24", &["--host-access"]);
    let m = Netns::new("hm");
    let i = Netns::new("hi");
    d.ok(&["add-port", "mv", "--netns", &m.name, "--name", "hm"]);
    d.ok(&["add-port", "iv", "--netns", &i.name, "--name", "hi"]);
    let (mip, iip) = (addr_of(&d, "hm"), addr_of(&d, "hi"));
    assert!(
        wait_until(10, || w.host.ping(&mip, 1)),
        "the host pings its macvlan container: {}",
        d.log()
    );
    assert!(w.host.ping(&mip, 3));
    assert!(w.host.ping(&iip, 3), "the host pings its ipvlan container");
    // curl from the host to a server in each container (an answer without HTTP headers:
    // curl takes it as HTTP/0.9).
    let _s1 = socat_server(&m, &mip, "from-macvlan");
    let _s2 = socat_server(&i, &iip, "from-ipvlan");
    for (ip, says) in [(&mip, "from-macvlan"), (&iip, "from-ipvlan")] {
        let url = format!("http://{ip}:8080/");
        assert!(
            wait_until(10, || {
                let out = w
                    .host
                    .exec(&["curl", "-s", "--http0.9", "--max-time", "5", &url]);
                String::from_utf8_lossy(&out.stdout).starts_with(says)
            }),
            "the host curls {ip}"
        );
    }
    // And the macvlan container still has its segment.
    assert!(
        m.ping("192.0.2.1", 2),
        "the container -> the segment's router"
    );
    let net = d.json(&["network", "inspect", "mv"]);
    assert_eq!(net["host_access"]["status"], "up", "{net}");
    // A range the host routes already is refused, clearly.
    let (_, err) = d.err(&[
        "network",
        "create",
        "mv2",
        "--driver",
        "macvlan",
        "--parent",
        &format!("{}.40", w.parent),
        "--subnet",
        "192.0.2.0/24",
        "--host-access",
    ]);
    assert!(err.contains("routed by the host already"), "{err}");
}

fn bad_input_is_refused_and_changes_nothing() {
    require_root();
    let w = segment();
    let d = Daemon::start_with(Some(&w.host), &[]);
    ipvlan(&d, "l2", &w.parent, "10.50.0.0/24", &[]);
    let v = format!("{}.9", w.parent);
    ipvlan(&d, "l3", &v, "10.51.0.0/24", &["--mode", "l3"]);
    let before = d.json(&["network", "ls"]);
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec!["--parent".into(), "nosuchif0".into()],
            "10.60.0.0/24",
            "does not exist",
        ),
        (
            vec!["--parent".into(), format!("{}.4095", w.parent)],
            "10.60.0.0/24",
            "1 to 4094",
        ),
        (
            vec!["--parent".into(), w.parent.clone()],
            "10.60.0.0/24",
            "different VLANs",
        ),
        (
            vec![
                "--parent".into(),
                w.parent.clone(),
                "--mode".into(),
                "l3".into(),
            ],
            "10.60.0.0/24",
            "different VLANs",
        ),
        (
            vec!["--parent".into(), v.clone(), "--mode".into(), "l3".into()],
            "10.51.0.0/25",
            "overlaps",
        ),
        (
            vec![
                "--parent".into(),
                format!("{}.7", w.parent),
                "--mode".into(),
                "l4".into(),
            ],
            "10.60.0.0/24",
            "does not exist",
        ),
        (
            vec![
                "--parent".into(),
                format!("{}.7", w.parent),
                "--mode".into(),
                "private".into(),
            ],
            "10.60.0.0/24",
            "l2 or l3",
        ),
        (vec![], "10.60.0.0/24", "needs --parent"),
    ];
    for (extra, subnet, want) in cases {
        let mut args: Vec<&str> = vec![
            "network", "create", "bad", "--driver", "ipvlan", "--subnet", subnet,
        ];
        args.extend(extra.iter().map(String::as_str));
        let (_, err) = d.err(&args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    assert_eq!(d.json(&["network", "ls"]), before, "nothing changed");
    // A second l3 network on that VLAN, with a disjoint subnet, is fine.
    ipvlan(&d, "l3b", &v, "10.52.0.0/24", &["--mode", "l3"]);
}

#[test]
fn ipvlan_l2() {
    l2_shares_the_parents_mac();
}

#[test]
fn ipvlan_l3() {
    l3_routes_and_keeps_broadcasts_off_the_segment();
}

#[test]
fn ipvlan_host_access() {
    host_reaches_macvlan_and_ipvlan_containers();
}

#[test]
fn ipvlan_bad_input() {
    bad_input_is_refused_and_changes_nothing();
}
