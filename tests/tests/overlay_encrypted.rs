//! Encrypted overlays: two "hosts" (namespaces on one underlay veth), each running vswitchd,
//! share an `--encrypted` overlay network; what crosses the underlay is WireGuard only.

mod common;

use std::process::{Command, Stdio};

use common::containers::*;
use common::*;

const H1: &str = "192.168.240.1";
const H2: &str = "192.168.240.2";

struct Hosts {
    d1: Daemon,
    d2: Daemon,
    h1: Netns,
    _h2: Netns,
    dev1: String,
}

fn hosts() -> Hosts {
    let u = common::underlay::underlay("w", H1, H2);
    let d1 = Daemon::start_keeping_mounts(&u.h1, &[]);
    let d2 = Daemon::start_keeping_mounts(&u.h2, &[]);
    d1.ok(&["vtep", "set", "--local-ip", H1]);
    d2.ok(&["vtep", "set", "--local-ip", H2]);
    Hosts {
        d1,
        d2,
        h1: u.h1,
        _h2: u.h2,
        dev1: u.dev1,
    }
}

fn public_key(d: &Daemon) -> String {
    let v = d.json(&["vtep", "show"]);
    let k = v["public_key"].as_str().unwrap_or("").to_string();
    assert_eq!(k.len(), 44, "a base64 WireGuard key: {v}");
    k
}

fn encrypted(d: &Daemon, name: &str, range: &str, peer: &str, key: &str) {
    d.ok(&[
        "network",
        "create",
        name,
        "--driver",
        "overlay",
        "--vni",
        "77",
        "--subnet",
        "10.77.0.0/24",
        "--ip-range",
        range,
        "--encrypted",
        "--peer",
        peer,
        "--peer-key",
        key,
    ]);
}

fn vtep_drops(d: &Daemon, reason: &str) -> u64 {
    d.json(&["vtep", "show"])["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn two_vswitchd_hosts_on_an_encrypted_overlay() {
    require_root();
    let hs = hosts();
    let (k1, k2) = (public_key(&hs.d1), public_key(&hs.d2));
    let net = unique("en");
    encrypted(&hs.d1, &net, "10.77.0.0/25", H2, &k2);
    encrypted(&hs.d2, &net, "10.77.0.128/25", H1, &k1);
    let names = Names::new(&["e1", "e2"]);
    let (c1, c2) = (names.get(0), names.get(1));
    hs.d1.ok(&["container", "create", c1, "--network", &net]);
    hs.d2.ok(&["container", "create", c2, "--network", &net]);
    let ip2 = ip_of(&hs.d2, c2, &net);
    let ip1 = ip_of(&hs.d1, c1, &net);
    let mtu = exec_ok(&hs.d1, c1, &["cat", "/sys/class/net/eth0/mtu"]);
    assert_eq!(
        mtu.trim(),
        "1390",
        "underlay MTU minus VXLAN's 50 and WireGuard's 60"
    );

    // Everything on the underlay from here on is captured.
    let pcap = TempDir::new("enc");
    let file = pcap.path("underlay.pcap");
    let dump = Bg(Command::new("ip")
        .args(["netns", "exec", &hs.h1.name, "tcpdump", "-nn", "-U", "-i"])
        .arg(&hs.dev1)
        .arg("-w")
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        wait_until(15, || exec(&hs.d1, c1, &["ping", "-c1", "-W1", &ip2])
            .status
            .success()),
        "the first ping waits for the handshake: {}",
        hs.d1.log()
    );
    assert!(exec_ok(&hs.d2, c2, &["ping", "-c3", "-i0.2", "-W2", &ip1]).contains("3 received"));
    // A DF ping filling the 1390 MTU crosses.
    assert!(exec_ok(
        &hs.d1,
        c1,
        &["ping", "-c1", "-W2", "-M", "do", "-s", "1362", &ip2]
    )
    .contains("1 received"));
    // 50 MB with a marker in it, intact.
    let dir = TempDir::new("enw");
    let root = dir.path(c2);
    std::fs::create_dir_all(&root).unwrap();
    let blob = root.join("blob");
    let mut data = Vec::with_capacity(50 << 20);
    while data.len() < 50 << 20 {
        data.extend_from_slice(b"MARKER-PLAINTEXT-4711 ");
    }
    std::fs::write(&blob, &data).unwrap();
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
        std::fs::read(&got).unwrap(),
        data,
        "the download arrives intact"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop(dump);
    let raw = std::fs::read(&file).unwrap();
    assert!(
        raw.len() > 50 << 20,
        "the capture has the transfer: {}",
        raw.len()
    );
    assert!(
        !raw.windows(21).any(|w| w == b"MARKER-PLAINTEXT-4711"),
        "no plaintext on the underlay"
    );
    let text = must("tcpdump", &["-nn", "-r", file.to_str().unwrap()]);
    assert!(!text.contains(".4789:"), "no plain VXLAN on the underlay");
    assert!(
        text.lines()
            .filter(|l| l.contains(" IP "))
            .all(|l| l.contains(".51820")),
        "only WireGuard messages"
    );
    // iperf3 TCP both ways (after the capture: its volume need not be kept).
    iperf_both_ways(&hs.d1, c1, &hs.d2, c2, &ip2);
    // Every datagram is a WireGuard message: type 1 to 4, then three zero bytes.
    let odd = must(
        "tcpdump",
        &[
            "-nn",
            "-r",
            file.to_str().unwrap(),
            "udp and (udp[8] < 1 or udp[8] > 4 or udp[9:2] != 0 or udp[11] != 0)",
        ],
    );
    assert!(odd.trim().is_empty(), "not WireGuard messages: {odd}");
    let v = hs.d1.json(&["vtep", "show"]);
    let peer = &v["wg_peers"][0];
    assert_eq!(peer["tunnel_ip"], H2, "{v}");
    assert!(peer["handshake_age_secs"].is_u64(), "a session: {v}");
    assert!(
        peer["queued"].as_u64().unwrap_or(0) >= 1,
        "the first ping waited for the handshake, counted: {v}"
    );

    // Plain VXLAN for the encrypted VNI: dropped, counted.
    let before = vtep_drops(&hs.d1, "unencrypted");
    let inject = "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
                  frame = bytes([0xff]*6 + [2,0,0,0,0,9] + [0x08,0x06]) + bytes(28)\n\
                  s.sendto(bytes([8,0,0,0,0,0,77,0]) + frame, ('192.168.240.1', 4789))\n";
    hs._h2.exec_ok(&["python3", "-c", inject]);
    assert!(
        wait_until(5, || vtep_drops(&hs.d1, "unencrypted") > before),
        "plain VXLAN for VNI 77 is counted: {}",
        hs.d1.json(&["vtep", "show"])
    );

    // Restarts keep the key pair and the peers; traffic resumes after a new handshake.
    let mut d1 = hs.d1;
    for signal in [15, 9] {
        d1.stop_with(signal);
        d1.restart();
        assert_eq!(
            public_key(&d1),
            k1,
            "the same key pair after signal {signal}"
        );
        assert!(
            wait_until(20, || exec(&d1, c1, &["ping", "-c1", "-W1", &ip2])
                .status
                .success()),
            "traffic resumes after signal {signal}: {}",
            d1.log()
        );
    }
}

#[test]
fn bad_encrypted_overlays_are_clear_errors() {
    require_root();
    let hs = hosts();
    let (c, m) = hs.d1.err(&[
        "network",
        "create",
        "x1",
        "--driver",
        "overlay",
        "--vni",
        "90",
        "--subnet",
        "10.90.0.0/24",
        "--encrypted",
        "--peer",
        H2,
        "--peer-key",
        "not-a-key",
    ]);
    assert_eq!(c, "invalid_argument", "{m}");
    let (c, m) = hs.d1.err(&[
        "network",
        "create",
        "x2",
        "--subnet",
        "10.91.0.0/24",
        "--encrypted",
    ]);
    assert_eq!(c, "invalid_argument", "{m}");
    assert!(m.contains("overlay"), "{m}");
    let nets = hs.d1.json(&["network", "ls"]).to_string();
    assert!(!nets.contains("x1") && !nets.contains("x2"), "{nets}");

    // A key file others may read: refused, and the VTEP stays as it was.
    let before = hs.d1.json(&["vtep", "show"]);
    let key_file = hs.d1.state_dir.join("wireguard.key");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (c, m) = hs
        .d1
        .err(&["vtep", "set", "--local-ip", H1, "--wg-port", "51821"]);
    assert_eq!(c, "invalid_argument", "{m}");
    assert!(m.contains("chmod 600"), "{m}");
    let after = hs.d1.json(&["vtep", "show"]);
    assert_eq!(after["wg_port"], before["wg_port"], "{after}");
    assert_eq!(after["public_key"], before["public_key"], "{after}");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// A `wireguard-go` interface of ours in a namespace; stopped by PID (SIGTERM, so it removes
/// its control socket under /var/run/wireguard) on drop, the socket removed if it is left.
struct WireguardGo {
    child: std::process::Child,
    sock: std::path::PathBuf,
}

impl WireguardGo {
    fn start(ns: &Netns, ifname: &str) -> WireguardGo {
        assert!(
            sh("sh", &["-c", "command -v wireguard-go && command -v wg"])
                .status
                .success(),
            "wireguard-go and wg are not installed (scripts/deps.sh installs them)"
        );
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "wireguard-go", "-f", ifname])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let sock = std::path::PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
        let w = WireguardGo { child, sock };
        assert!(
            wait_until(10, || w.sock.exists() && ns.has_link(ifname)),
            "wireguard-go made {ifname}"
        );
        w
    }
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        // By its PID, with SIGTERM: it removes its socket and interface as it goes.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// The reference WireGuard in a namespace of its own, with the kernel's vxlan device over its
/// interface, reaches a container behind vswitchd on the same encrypted VNI (what a kernel
/// host with `wg-quick` and `ip link add … type vxlan` would run).
#[test]
fn interop_with_wireguard_go_and_the_kernel_vxlan() {
    require_root();
    let u = common::underlay::underlay("wk", H1, H2);
    let d1 = Daemon::start_keeping_mounts(&u.h1, &[]);
    // The kernel peer routes its tunnel addresses through its WireGuard interface: the
    // switch's tunnel address is not its VTEP address, or the messages would loop.
    d1.ok(&[
        "vtep",
        "set",
        "--local-ip",
        H1,
        "--tunnel-ip",
        "10.250.0.1/24",
    ]);
    let k1 = public_key(&d1);
    let keys = TempDir::new("wgk");
    let private = keys.path("private");
    must(
        "sh",
        &[
            "-c",
            &format!("umask 077; wg genkey > {}", private.display()),
        ],
    );
    let k2 = must("sh", &["-c", &format!("wg pubkey < {}", private.display())])
        .trim()
        .to_string();
    let ifname = unique("wg");
    let wgo = WireguardGo::start(&u.h2, &ifname);
    let private_arg = private.display().to_string();
    let endpoint1 = format!("{H1}:51820");
    u.h2.exec_ok(&[
        "wg",
        "set",
        &ifname,
        "private-key",
        &private_arg,
        "listen-port",
        "51820",
        "peer",
        &k1,
        "endpoint",
        &endpoint1,
        "allowed-ips",
        "10.250.0.1/32",
    ]);
    // The interface's MTU leaves the encrypted overlay's 1390 to the vxlan device inside.
    u.h2.exec_ok(&["ip", "addr", "add", "10.250.0.2/24", "dev", &ifname]);
    u.h2.exec_ok(&["ip", "link", "set", &ifname, "mtu", "1440", "up"]);
    u.h2.exec_ok(&[
        "ip",
        "link",
        "add",
        "vx0",
        "type",
        "vxlan",
        "id",
        "77",
        "local",
        "10.250.0.2",
        "remote",
        "10.250.0.1",
        "dstport",
        "4789",
    ]);
    u.h2.exec_ok(&["ip", "link", "set", "vx0", "mtu", "1390", "up"]);
    u.h2.exec_ok(&["ip", "addr", "add", "10.77.0.200/24", "dev", "vx0"]);

    let net = unique("ek");
    d1.ok(&[
        "network",
        "create",
        &net,
        "--driver",
        "overlay",
        "--vni",
        "77",
        "--subnet",
        "10.77.0.0/24",
        "--ip-range",
        "10.77.0.0/25",
        "--encrypted",
    ]);
    let endpoint2 = format!("{H2}:51820");
    d1.ok(&[
        "network",
        "peer",
        "add",
        &net,
        "10.250.0.2",
        "--key",
        &k2,
        "--endpoint",
        &endpoint2,
    ]);
    let names = Names::new(&["ek"]);
    let c = names.get(0);
    d1.ok(&["container", "create", c, "--network", &net]);
    let ip = ip_of(&d1, c, &net);
    assert!(
        wait_until(15, || u.h2.ping(&ip, 1)),
        "the kernel side reaches the container through wireguard-go: {}\n{}",
        d1.json(&["vtep", "show"]),
        u.h2.exec_ok(&["wg", "show", &ifname])
    );
    assert!(
        exec_ok(&d1, c, &["ping", "-c3", "-i0.2", "-W2", "10.77.0.200"]).contains("3 received")
    );
    // A DF ping filling the MTU, and a download, both ways of the session.
    assert!(exec_ok(
        &d1,
        c,
        &[
            "ping",
            "-c1",
            "-W2",
            "-M",
            "do",
            "-s",
            "1362",
            "10.77.0.200"
        ]
    )
    .contains("1 received"));
    let dir = TempDir::new("ekw");
    let _srv = http_server(&d1, c, &dir, 8080);
    let root = dir.path(c);
    let blob: Vec<u8> = (0..10u32 << 20).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(root.join("blob"), &blob).unwrap();
    let got = dir.path("got");
    let got_arg = got.display().to_string();
    let url = format!("http://{ip}:8080/blob");
    assert!(wait_until(10, || u
        .h2
        .exec(&["curl", "-sf", "-m", "30", "-o", &got_arg, &url])
        .status
        .success()));
    assert_eq!(std::fs::read(&got).unwrap(), blob, "10 MB intact");
    let shown = u.h2.exec_ok(&["wg", "show", &ifname, "latest-handshakes"]);
    assert!(
        shown.split_whitespace().nth(1).is_some_and(|t| t != "0"),
        "wireguard-go has a session with the switch: {shown}"
    );
    let v = d1.json(&["vtep", "show"]);
    assert_eq!(v["wg_peers"][0]["tunnel_ip"], "10.250.0.2", "{v}");
    assert!(v["wg_peers"][0]["handshake_age_secs"].is_u64(), "{v}");
    drop(wgo);
}

/// A peer that has the wrong key for us gets nothing through, both ways, and is counted; with
/// the right key the session comes up.
#[test]
fn a_wrong_key_gets_nothing_through() {
    require_root();
    let hs = hosts();
    let (k1, k2) = (public_key(&hs.d1), public_key(&hs.d2));
    // Some other host's key.
    let wrong = "6iDzd60sFtDqpPzlnTyFa2aO0OAJkZhXnE50Dl86qT8=";
    assert_ne!(wrong, k1);
    let net = unique("ew");
    encrypted(&hs.d1, &net, "10.77.0.0/25", H2, &k2);
    encrypted(&hs.d2, &net, "10.77.0.128/25", H1, wrong);
    let names = Names::new(&["w1", "w2"]);
    let (c1, c2) = (names.get(0), names.get(1));
    hs.d1.ok(&["container", "create", c1, "--network", &net]);
    hs.d2.ok(&["container", "create", c2, "--network", &net]);
    let ip2 = ip_of(&hs.d2, c2, &net);
    let ip1 = ip_of(&hs.d1, c1, &net);
    for _ in 0..3 {
        assert!(!exec(&hs.d1, c1, &["ping", "-c1", "-W1", &ip2])
            .status
            .success());
        assert!(!exec(&hs.d2, c2, &["ping", "-c1", "-W1", &ip1])
            .status
            .success());
    }
    // d2's handshakes are sealed for a key d1 does not have; d1's carry a key d2 does not
    // expect: each side counts what it cannot accept.
    assert!(
        wait_until(10, || vtep_drops(&hs.d1, "bad_wireguard") > 0
            && vtep_drops(&hs.d2, "bad_wireguard") > 0),
        "both refuse: {} {}",
        hs.d1.json(&["vtep", "show"]),
        hs.d2.json(&["vtep", "show"])
    );
    for d in [&hs.d1, &hs.d2] {
        let v = d.json(&["vtep", "show"]);
        assert!(
            v["wg_peers"][0]["handshake_age_secs"].is_null(),
            "no session: {v}"
        );
        assert_eq!(v["wg_peers"][0]["rx_packets"], 0, "{v}");
    }
    // The right key: the session comes up.
    hs.d2.ok(&["network", "peer", "rm", &net, H1]);
    hs.d2
        .ok(&["network", "peer", "add", &net, H1, "--key", &k1]);
    assert!(
        wait_until(20, || exec(&hs.d2, c2, &["ping", "-c1", "-W1", &ip1])
            .status
            .success()),
        "with the right key: {}",
        hs.d2.json(&["vtep", "show"])
    );
}
