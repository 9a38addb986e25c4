//! VXLAN overlays: two "hosts" (namespaces joined by an underlay veth), each running its own
//! vswitchd (entered with nsenter, so the container namespaces it makes are visible here), with
//! containers on one overlay network on both; and the kernel's own vxlan device as a peer.

mod common;

use std::process::{Command, Stdio};

use common::containers::*;
use common::*;

const H1: &str = "192.168.250.1";
const H2: &str = "192.168.250.2";

/// Two hosts on an underlay /24, a daemon in each.
struct Hosts {
    d1: Daemon,
    d2: Daemon,
    h1: Netns,
    h2: Netns,
}

fn hosts() -> Hosts {
    let u = common::underlay::underlay("u", H1, H2);
    let d1 = Daemon::start_keeping_mounts(&u.h1, &[]);
    let d2 = Daemon::start_keeping_mounts(&u.h2, &[]);
    d1.ok(&["vtep", "set", "--local-ip", H1]);
    d2.ok(&["vtep", "set", "--local-ip", H2]);
    Hosts {
        d1,
        d2,
        h1: u.h1,
        h2: u.h2,
    }
}

fn overlay(d: &Daemon, name: &str, vni: &str, range: &str, peer: &str) {
    overlay_on(d, name, vni, "10.42.0.0/24", range, peer)
}

fn overlay_on(d: &Daemon, name: &str, vni: &str, subnet: &str, range: &str, peer: &str) {
    d.ok(&[
        "network",
        "create",
        name,
        "--driver",
        "overlay",
        "--vni",
        vni,
        "--subnet",
        subnet,
        "--ip-range",
        range,
        "--peer",
        peer,
    ]);
}

fn vtep_drops(d: &Daemon, reason: &str) -> u64 {
    d.json(&["vtep", "show"])["drops"][reason].as_u64().unwrap()
}

fn sha256_in(d: &Daemon, c: &str, path: &str) -> String {
    exec_ok(d, c, &["sha256sum", path])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Containers behind two vswitchd share a network: ping both ways, names of local
/// containers, a 50 MB download intact, iperf3 both ways; fdb shows the remote MAC's VTEP.
/// `kind`: host 1's container's port type, `kind2` host 2's.
fn two_hosts(kind: &str, kind2: &str) {
    require_root();
    let hs = hosts();
    let names = Names::new(&["o1", "o2", "o3"]);
    let (c1, c2, c3) = (names.get(0), names.get(1), names.get(2));
    let net = unique("ov");
    overlay(&hs.d1, &net, "42", "10.42.0.0/25", H2);
    overlay(&hs.d2, &net, "42", "10.42.0.128/25", H1);
    hs.d1
        .ok(&["container", "create", c1, "--network", &net, "--type", kind]);
    hs.d1.ok(&["container", "create", c3, "--network", &net]);
    hs.d2.ok(&[
        "container",
        "create",
        c2,
        "--network",
        &net,
        "--type",
        kind2,
    ]);
    let (ip1, ip2) = (ip_of(&hs.d1, c1, &net), ip_of(&hs.d2, c2, &net));
    assert!(ip2.starts_with("10.42.0.1"), "{ip2}: from host 2's range");
    let mtu = exec_ok(&hs.d1, c1, &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(mtu.trim(), "1450", "underlay MTU minus 50");
    assert!(exec_ok(&hs.d1, c1, &["ping", "-c3", "-i0.2", "-W2", &ip2]).contains("3 received"));
    assert!(exec_ok(&hs.d2, c2, &["ping", "-c3", "-i0.2", "-W2", &ip1]).contains("3 received"));
    // A 1422-byte ping with DF fills the 1450 MTU exactly and crosses.
    assert!(exec_ok(
        &hs.d1,
        c1,
        &["ping", "-c1", "-W2", "-M", "do", "-s", "1422", &ip2]
    )
    .contains("1 received"));
    // Names of local containers resolve on each host.
    assert!(exec_ok(&hs.d1, c1, &["getent", "hosts", c3]).contains("10.42.0."));
    // The remote MAC is learned with its VTEP.
    let fdb = hs.d1.json(&["fdb", "show", &net]);
    let mac2 = inspect(&hs.d2, c2)["networks"][0]["mac"].clone();
    let row = fdb[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["mac"] == mac2)
        .unwrap_or_else(|| panic!("{mac2} not in {fdb}"))
        .clone();
    assert_eq!(row["vtep"], H2);
    assert_eq!(row["port"], format!("vxlan:{H2}"));
    // 50 MB over HTTP, sha256 intact.
    let dir = TempDir::new("ovw");
    let root = dir.path(c2);
    std::fs::create_dir_all(&root).unwrap();
    let blob = root.join("blob");
    must(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", blob.display()),
            "bs=1M",
            "count=50",
            "status=none",
        ],
    );
    let _srv = http_server(&hs.d2, c2, &dir, 8080);
    let got = dir.path("got");
    assert!(wait_until(10, || exec(
        &hs.d1,
        c1,
        &[
            "curl",
            "-sf",
            "-m",
            "60",
            "-o",
            got.to_str().unwrap(),
            &format!("http://{ip2}:8080/blob")
        ]
    )
    .status
    .success()));
    assert_eq!(
        sha256_in(&hs.d1, c1, got.to_str().unwrap()),
        sha256_in(&hs.d2, c2, blob.to_str().unwrap())
    );
    // iperf3 TCP both ways.
    iperf_both_ways(&hs.d1, c1, &hs.d2, c2, &ip2);
    // The datagrams went as UDP GSO super-datagrams (the veth underlay takes them), with no
    // fall-back to one send each.
    for d in [&hs.d1, &hs.d2] {
        assert_eq!(d.json(&["vtep", "show"])["tx_batching"], "udp-gso");
    }
}

#[test]
fn two_vswitchd_hosts_tap() {
    two_hosts("tap", "tap");
}

#[test]
fn two_vswitchd_hosts_afxdp() {
    two_hosts("afxdp", "afxdp");
}

#[test]
fn two_vswitchd_hosts_mixed() {
    two_hosts("tap", "afxdp");
}

/// The kernel's vxlan device on a bridge, in a namespace routed to host 1's underlay, talks to
/// a container behind vswitchd both ways; the underlay carries valid VXLAN with the VNI.
#[test]
fn interop_with_the_kernel_vxlan_device() {
    require_root();
    let hs = hosts();
    let k = Netns::new("kx");
    let (a, b) = (unique("ka"), unique("kb"));
    must(
        "ip",
        &[
            "link",
            "add",
            &a,
            "netns",
            &hs.h1.name,
            "type",
            "veth",
            "peer",
            "name",
            &b,
            "netns",
            &k.name,
        ],
    );
    hs.h1
        .exec_ok(&["ip", "addr", "add", "192.168.251.1/24", "dev", &a]);
    hs.h1.exec_ok(&["ip", "link", "set", &a, "up"]);
    hs.h1.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    k.exec_ok(&["ip", "addr", "add", "192.168.251.2/24", "dev", &b]);
    k.exec_ok(&["ip", "link", "set", &b, "up"]);
    // Complete frames on the wire, as a NIC would send them: over a veth the kernel leaves
    // the inner TCP checksum of a VXLAN datagram to an offload that never happens (the
    // receiving host reads it pending from its UDP socket).
    k.exec_ok(&["ethtool", "-K", &b, "tx", "off"]);
    k.exec_ok(&["ip", "link", "set", "lo", "up"]);
    k.exec_ok(&[
        "ip",
        "route",
        "add",
        "192.168.250.0/24",
        "via",
        "192.168.251.1",
    ]);
    k.exec_ok(&[
        "ip",
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "4242",
        "remote",
        H1,
        "local",
        "192.168.251.2",
        "dstport",
        "4789",
    ]);
    k.exec_ok(&["ip", "link", "set", "vx0", "mtu", "1450"]);
    k.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    k.exec_ok(&["ip", "link", "set", "vx0", "master", "br0"]);
    k.exec_ok(&["ip", "link", "set", "vx0", "up"]);
    k.exec_ok(&["ip", "link", "set", "br0", "up"]);
    k.exec_ok(&["ip", "addr", "add", "10.42.0.200/24", "dev", "br0"]);
    let names = Names::new(&["kc"]);
    let c = names.get(0);
    let net = unique("kv");
    overlay(&hs.d1, &net, "4242", "10.42.0.0/25", "192.168.251.2");
    hs.d1.ok(&["container", "create", c, "--network", &net]);
    let ip = ip_of(&hs.d1, c, &net);
    let dump = Command::new("ip")
        .args([
            "netns",
            "exec",
            &hs.h1.name,
            "tcpdump",
            "-nn",
            "-l",
            "-c",
            "2",
            "-i",
            &a,
        ])
        .args(["udp", "port", "4789"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(k
        .exec_ok(&["ping", "-c3", "-i0.2", "-W2", &ip])
        .contains("3 received"));
    assert!(exec_ok(&hs.d1, c, &["ping", "-c2", "-W2", "10.42.0.200"]).contains("2 received"));
    let out = dump.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("VXLAN") && text.contains("vni 4242"),
        "{text}"
    );
    // HTTP both ways.
    let dir = TempDir::new("kw");
    let _srv = http_server(&hs.d1, c, &dir, 8080);
    let want = format!("hello from {c}\n");
    assert!(wait_until(10, || k
        .exec(&["curl", "-sf", "-m", "3", &format!("http://{ip}:8080/")])
        .stdout
        == want.as_bytes()));
    let root = dir.path("k");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "kernel side\n").unwrap();
    let _ksrv = Bg(Command::new("ip")
        .args([
            "netns",
            "exec",
            &k.name,
            "python3",
            "-m",
            "http.server",
            "8081",
        ])
        .arg("--directory")
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    assert!(wait_until(10, || curl(
        &hs.d1,
        c,
        "http://10.42.0.200:8081/"
    )
    .as_deref()
        == Some("kernel side\n")));
}

/// Different VNIs are isolated, and an overlay from a bridge network; malformed VXLAN, an
/// unknown VNI and an unknown VTEP are counted and change nothing; restarts keep everything.
#[test]
fn isolation_drops_restart_and_bad_input() {
    require_root();
    let mut hs = hosts();
    let names = Names::new(&["ia", "ib", "ic", "id"]);
    let (a, b, c, dd) = (names.get(0), names.get(1), names.get(2), names.get(3));
    let (n1, n2) = (unique("i1"), unique("i2"));
    overlay(&hs.d1, &n1, "100", "10.42.0.0/25", H2);
    overlay(&hs.d2, &n1, "100", "10.42.0.128/25", H1);
    overlay_on(&hs.d1, &n2, "200", "10.43.0.0/24", "10.43.0.0/25", H2);
    overlay_on(&hs.d2, &n2, "200", "10.43.0.0/24", "10.43.0.128/25", H1);
    hs.d1.ok(&["container", "create", a, "--network", &n1]);
    hs.d2.ok(&["container", "create", b, "--network", &n1]);
    hs.d2.ok(&[
        "container",
        "create",
        c,
        "--network",
        &n2,
        "--ip",
        "10.43.0.130",
    ]);
    hs.d2.ok(&["container", "create", dd]); // the default bridge
    let ipb = ip_of(&hs.d2, b, &n1);
    assert!(exec_ok(&hs.d1, a, &["ping", "-c2", "-W2", &ipb]).contains("2 received"));
    // VNI 200's container and the bridge's are unreachable from VNI 100.
    assert!(!exec(&hs.d1, a, &["ping", "-c2", "-W1", "10.43.0.130"])
        .status
        .success());
    let ipd = ip_of(&hs.d2, dd, "bridge");
    assert!(!exec(&hs.d1, a, &["ping", "-c2", "-W1", &ipd])
        .status
        .success());
    // Hostile datagrams at host 1's VTEP, from host 2 (a peer) and from elsewhere.
    let send = |from: &Netns, bind: &str, hex: &str| {
        let py = format!(
            "import socket;s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);s.bind(('{bind}',0));s.sendto(bytes.fromhex('{hex}'),('{H1}',4789))"
        );
        from.exec_ok(&["python3", "-c", &py]);
    };
    let frame = "ffffffffffff02420a2a00990806".to_string() + &"00".repeat(28);
    let before: Vec<u64> = ["bad_vxlan", "unknown_vni", "unknown_vtep"]
        .iter()
        .map(|r| vtep_drops(&hs.d1, r))
        .collect();
    send(&hs.h2, H2, "0800"); // too short
    send(&hs.h2, H2, &format!("0000000000006400{frame}")); // no I flag
    send(&hs.h2, H2, &format!("0800000000030900{frame}")); // VNI 777
    hs.h2
        .exec_ok(&["ip", "addr", "add", "192.168.250.9/32", "dev", "lo"]);
    send(&hs.h2, "192.168.250.9", &format!("0800000000006400{frame}")); // not a peer
    let want = [before[0] + 2, before[1] + 1, before[2] + 1];
    assert!(
        wait_until(5, || {
            ["bad_vxlan", "unknown_vni", "unknown_vtep"]
                .iter()
                .map(|r| vtep_drops(&hs.d1, r))
                .collect::<Vec<_>>()
                == want
        }),
        "{}",
        hs.d1.json(&["vtep", "show"])
    );
    // The forged unknown-VTEP frame's MAC was not learned.
    let fdb = hs.d1.json(&["fdb", "show", &n1]).to_string();
    assert!(!fdb.contains("02:42:0a:2a:00:99"), "{fdb}");
    // Bad input: clear errors, nothing changed.
    let before = hs.d1.show_stable();
    for (args, want) in [
        (vec!["--vni", "0"], "out of range"),
        (vec!["--vni", "16777216"], "out of range"),
        (vec!["--vni", "100"], "already used"),
        (vec!["--vni", "300", "--peer", H1], "own address"),
        (vec!["--vni", "300", "--peer", "nonsense"], "invalid peer"),
    ] {
        let mut a = vec![
            "network",
            "create",
            "zzbad",
            "--driver",
            "overlay",
            "--subnet",
            "10.44.0.0/24",
        ];
        a.extend(args.iter().copied());
        let (_, msg) = hs.d1.err(&a);
        assert!(msg.contains(want), "{args:?}: {msg}");
    }
    let (_, msg) = hs.d1.err(&["network", "peer", "add", &n1, H2]);
    assert!(msg.contains("already a peer"), "{msg}");
    let (_, msg) = hs.d1.err(&["network", "peer", "add", "bridge", H2]);
    assert!(msg.contains("not an overlay"), "{msg}");
    assert_eq!(hs.d1.show_stable(), before);
    // No VTEP: an overlay is refused.
    let lone = Daemon::start();
    let (_, msg) = lone.err(&[
        "network",
        "create",
        "zzov",
        "--driver",
        "overlay",
        "--vni",
        "5",
        "--subnet",
        "10.45.0.0/24",
    ]);
    assert!(msg.contains("needs a VTEP"), "{msg}");
    // Restarts keep the VTEP, the overlays and their peers; traffic resumes.
    hs.d1.ok(&["network", "peer", "add", &n1, "192.168.250.77"]);
    let vtep = hs.d1.json(&["vtep", "show"])["networks"].clone();
    for signal in [15, 9] {
        hs.d1.stop_with(signal);
        hs.d1.restart();
        let after = hs.d1.json(&["vtep", "show"]);
        assert_eq!(after["networks"], vtep, "after signal {signal}");
        assert_eq!(after["status"], "up");
        hs.d1.wait_up(&[&format!("{a}-eth0")]);
        assert!(
            wait_until(10, || exec(&hs.d1, a, &["ping", "-c1", "-W1", &ipb])
                .status
                .success()),
            "after signal {signal}"
        );
    }
    hs.d1.ok(&["network", "peer", "rm", &n1, "192.168.250.77"]);
    let peers = &hs.d1.json(&["network", "inspect", &n1])["peers"];
    assert_eq!(peers, &serde_json::json!([H2]));
}

/// Static FDB entries with no peers at all: each host knows the other's container (MAC, VTEP,
/// address) before any traffic, so ARP is answered locally and frames are unicast to the VTEP.
/// A frame over the overlay MTU with DF gets fragmentation needed from the gateway; an
/// address behind the remote VTEP is refused to a local container; restarts keep the entries;
/// `fdb del` takes the way away again; bad entries are clear errors that change nothing.
#[test]
fn static_fdb_entries_without_peers() {
    require_root();
    let mut hs = hosts();
    let names = Names::new(&["sa", "sb", "sc"]);
    let (a, b, c) = (names.get(0), names.get(1), names.get(2));
    let net = unique("sf");
    for d in [&hs.d1, &hs.d2] {
        d.ok(&[
            "network",
            "create",
            &net,
            "--driver",
            "overlay",
            "--vni",
            "77",
            "--subnet",
            "10.47.0.0/24",
        ]);
    }
    let (ipa, maca, ipb, macb) = (
        "10.47.0.10",
        "02:42:0a:2f:00:0a",
        "10.47.0.130",
        "02:42:0a:2f:00:82",
    );
    hs.d1.ok(&[
        "container",
        "create",
        a,
        "--network",
        &net,
        "--ip",
        ipa,
        "--mac",
        maca,
    ]);
    hs.d2.ok(&[
        "container",
        "create",
        b,
        "--network",
        &net,
        "--ip",
        ipb,
        "--mac",
        macb,
    ]);
    assert!(
        !exec(&hs.d1, a, &["ping", "-c1", "-W1", ipb])
            .status
            .success(),
        "no peer, no entry: no way across"
    );
    hs.d1
        .ok(&["fdb", "add", &net, macb, "--vtep", H2, "--ip", ipb]);
    hs.d2
        .ok(&["fdb", "add", &net, maca, "--vtep", H1, "--ip", ipa]);
    assert!(exec_ok(&hs.d1, a, &["ping", "-c3", "-i0.2", "-W2", ipb]).contains("3 received"));
    assert!(exec_ok(&hs.d2, b, &["ping", "-c3", "-i0.2", "-W2", ipa]).contains("3 received"));
    let fdb = hs.d1.json(&["fdb", "show", &net]);
    let row = fdb[0]["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["mac"] == macb)
        .unwrap_or_else(|| panic!("{macb} not in {fdb}"))
        .clone();
    assert_eq!(row["static"], true, "{row}");
    assert_eq!(row["vtep"], H2);
    assert_eq!(row["ip"], ipb);
    // Too big for the tunnel: the sender hears the path MTU from the gateway.
    exec_ok(&hs.d1, a, &["ip", "link", "set", "eth0", "mtu", "1500"]);
    let out = exec(
        &hs.d1,
        a,
        &["ping", "-c1", "-W2", "-M", "do", "-s", "1472", ipb],
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("mtu = 1450") || text.contains("mtu=1450"),
        "{text}"
    );
    assert!(exec_ok(
        &hs.d1,
        a,
        &["ping", "-c1", "-W2", "-M", "do", "-s", "1422", ipb]
    )
    .contains("1 received"));
    // The remote container's address is not handed to a local one.
    let (_, msg) = hs
        .d1
        .err(&["container", "create", c, "--network", &net, "--ip", ipb]);
    assert!(msg.contains("remote VTEP"), "{msg}");
    // Bad entries change nothing.
    let before = hs.d1.show_stable();
    for (args, want) in [
        (
            vec!["fdb", "add", "bridge", "02:42:00:00:00:01", "--vtep", H2],
            "not an overlay",
        ),
        (
            vec!["fdb", "add", &net, "nonsense", "--vtep", H2],
            "invalid MAC",
        ),
        (
            vec!["fdb", "add", &net, "ff:ff:ff:ff:ff:ff", "--vtep", H2],
            "not a unicast MAC",
        ),
        (
            vec!["fdb", "add", &net, "02:42:00:00:00:01", "--vtep", H1],
            "own address",
        ),
        (
            vec!["fdb", "add", &net, macb, "--vtep", H2],
            "already has a static entry",
        ),
        (
            vec![
                "fdb",
                "add",
                &net,
                "02:42:00:00:00:01",
                "--vtep",
                H2,
                "--ip",
                ipa,
            ],
            "local port",
        ),
        (
            vec![
                "fdb",
                "add",
                &net,
                "02:42:00:00:00:01",
                "--vtep",
                H2,
                "--ip",
                "10.9.9.9",
            ],
            "not a host address",
        ),
        (
            vec!["fdb", "del", &net, "02:42:00:00:00:01"],
            "no static entry",
        ),
    ] {
        let (_, msg) = hs.d1.err(&args);
        assert!(msg.contains(want), "{args:?}: {msg}");
    }
    assert_eq!(hs.d1.show_stable(), before);
    // Restarts keep the entries (and their tunnel).
    for signal in [15, 9] {
        hs.d1.stop_with(signal);
        hs.d1.restart();
        hs.d1.wait_up(&[&format!("{a}-eth0")]);
        assert!(
            wait_until(10, || exec(&hs.d1, a, &["ping", "-c1", "-W1", ipb])
                .status
                .success()),
            "after signal {signal}"
        );
    }
    hs.d1.ok(&["fdb", "del", &net, macb]);
    let fdb = hs.d1.json(&["fdb", "show", &net]).to_string();
    assert!(!fdb.contains(macb), "{fdb}");
    assert!(!exec(&hs.d1, a, &["ping", "-c2", "-W1", ipb])
        .status
        .success());
}

/// `--learn-peers`: host 1 has no peers; the first datagrams from host 2 (which has host 1 as
/// a peer) are dropped as unknown_vtep but make host 2 a peer, persisted: pings then cross
/// both ways, and survive a restart. Without the flag the same datagrams change nothing.
#[test]
fn learn_peers_adds_a_vtep_that_sends() {
    require_root();
    let mut hs = hosts();
    let names = Names::new(&["la", "lb"]);
    let (a, b) = (names.get(0), names.get(1));
    let net = unique("lp");
    hs.d1.ok(&[
        "network",
        "create",
        &net,
        "--driver",
        "overlay",
        "--vni",
        "88",
        "--subnet",
        "10.48.0.0/24",
        "--ip-range",
        "10.48.0.0/25",
        "--learn-peers",
    ]);
    overlay_on(&hs.d2, &net, "88", "10.48.0.0/24", "10.48.0.128/25", H1);
    hs.d1.ok(&["container", "create", a, "--network", &net]);
    hs.d2.ok(&["container", "create", b, "--network", &net]);
    let (ipa, ipb) = (ip_of(&hs.d1, a, &net), ip_of(&hs.d2, b, &net));
    let before = vtep_drops(&hs.d1, "unknown_vtep");
    assert!(
        wait_until(10, || exec(&hs.d2, b, &["ping", "-c1", "-W1", &ipa])
            .status
            .success()),
        "host 2's container reaches host 1's once host 1 learned it"
    );
    assert!(
        vtep_drops(&hs.d1, "unknown_vtep") > before,
        "the first datagrams were dropped"
    );
    let peers = &hs.d1.json(&["network", "inspect", &net])["peers"];
    assert_eq!(peers, &serde_json::json!([H2]));
    assert!(exec_ok(&hs.d1, a, &["ping", "-c2", "-W2", &ipb]).contains("2 received"));
    hs.d1.stop_with(9);
    hs.d1.restart();
    assert_eq!(
        &hs.d1.json(&["network", "inspect", &net])["peers"],
        &serde_json::json!([H2]),
        "a learned peer is kept"
    );
    // Without --learn-peers nothing is learned; on a bridge network the flag is refused.
    let other = unique("lq");
    hs.d1.ok(&[
        "network",
        "create",
        &other,
        "--driver",
        "overlay",
        "--vni",
        "89",
        "--subnet",
        "10.49.0.0/24",
    ]);
    overlay_on(&hs.d2, &other, "89", "10.49.0.0/24", "10.49.0.128/25", H1);
    let names2 = Names::new(&["lc"]);
    hs.d2
        .ok(&["container", "create", names2.get(0), "--network", &other]);
    let _ = exec(
        &hs.d2,
        names2.get(0),
        &["ping", "-c3", "-i0.3", "-W1", "10.49.0.1"],
    );
    let _ = exec(
        &hs.d2,
        names2.get(0),
        &["arping", "-c2", "-w2", "-I", "eth0", "10.49.0.7"],
    );
    let d1_drops = vtep_drops(&hs.d1, "unknown_vtep");
    let peers = hs.d1.json(&["network", "inspect", &other])["peers"].clone();
    assert!(
        peers.as_array().is_none_or(|p| p.is_empty()),
        "nothing learned without the flag: {peers} ({d1_drops} unknown_vtep drops)"
    );
    let (_, msg) = hs.d1.err(&[
        "network",
        "create",
        "zzlp",
        "--subnet",
        "10.50.0.0/24",
        "--learn-peers",
    ]);
    assert!(msg.contains("--learn-peers"), "{msg}");
}
