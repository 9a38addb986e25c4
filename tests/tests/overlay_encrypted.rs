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
    // 20 MB with a marker in it, intact.
    let dir = TempDir::new("enw");
    let root = dir.path(c2);
    std::fs::create_dir_all(&root).unwrap();
    let blob = root.join("blob");
    let mut data = Vec::with_capacity(20 << 20);
    while data.len() < 20 << 20 {
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
        raw.len() > 20 << 20,
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
    let v = hs.d1.json(&["vtep", "show"]);
    let peer = &v["wg_peers"][0];
    assert_eq!(peer["tunnel_ip"], H2, "{v}");
    assert!(peer["handshake_age_secs"].is_u64(), "a session: {v}");

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
}
