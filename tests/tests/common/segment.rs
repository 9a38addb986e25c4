//! A "host" namespace for vswitchd and the "segment" beyond its parent veth, for macvlan and
//! ipvlan tests (never a real interface of the machine), and what tests do on it.

use super::*;

/// The host namespace (vswitchd's) and the segment beyond its parent veth. The segment end
/// is the router 192.0.2.1; the host has its own 192.0.2.2 on the parent.
pub struct Segment {
    pub seg: Netns,
    pub host: Netns,
    pub parent: String,
    pub seg_if: String,
}

pub fn segment() -> Segment {
    let host = Netns::new("mh");
    let seg = Netns::new("ms");
    let parent = format!("{}p", host.name);
    let seg_if = format!("{}s", host.name);
    must(
        "ip",
        &[
            "link", "add", &parent, "netns", &host.name, "type", "veth", "peer", "name", &seg_if,
            "netns", &seg.name,
        ],
    );
    for ns in [&host, &seg] {
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
    }
    host.exec_ok(&["ip", "link", "set", &parent, "up"]);
    host.exec_ok(&["ip", "addr", "add", "192.0.2.2/24", "dev", &parent]);
    seg.exec_ok(&["ip", "addr", "add", "192.0.2.1/24", "dev", &seg_if]);
    seg.exec_ok(&["ip", "link", "set", &seg_if, "up"]);
    // A real NIC hands over complete checksums; a veth would leave them pending.
    for (ns, i) in [(&seg, &seg_if), (&host, &parent)] {
        ns.exec_ok(&["ethtool", "-K", i, "tx", "off", "tso", "off", "gso", "off"]);
    }
    Segment {
        seg,
        host,
        parent,
        seg_if,
    }
}

/// The segment namespace's neighbour entry for `ip` (its MAC), after a ping.
pub fn neighbour_mac(ns: &Netns, ip: &str) -> String {
    let out = ns.exec_ok(&["ip", "neigh", "show", ip]);
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

pub fn http_server(ns: &Netns, dir: &TempDir, bind: &str) -> Bg {
    let child = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-m", "http.server"])
        .args(["--bind", bind, "--directory"])
        .arg(&dir.0)
        .arg("8080")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let bg = Bg(child);
    assert!(
        wait_until(10, || ns
            .exec(&["ss", "-ltn", "sport", "=", ":8080"])
            .stdout
            .windows(4)
            .any(|w| w == b"8080")),
        "http.server did not start"
    );
    bg
}

pub fn curl(ns: &Netns, url: &str) -> Option<Vec<u8>> {
    let out = ns.exec(&["curl", "-sS", "--max-time", "10", "-o", "-", url]);
    out.status.success().then_some(out.stdout)
}

/// Whether a UDP broadcast `from` sends to `bcast` (port 9999) reaches a receiver in `to`.
pub fn broadcast_reaches(from: &Netns, to: &Netns, bcast: &str) -> bool {
    let dir = TempDir::new("bc");
    let file = dir.path("got");
    let rx = std::process::Command::new("ip")
        .args(["netns", "exec", &to.name, "timeout", "8", "socat", "-u"])
        .arg("UDP-RECV:9999,reuseaddr")
        .arg(format!("OPEN:{},creat,append", file.display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let _rx = Bg(rx);
    wait_until(6, || {
        from.exec(&[
            "sh",
            "-c",
            &format!("echo hello-bcast | socat - UDP-DATAGRAM:{bcast}:9999,broadcast"),
        ]);
        std::thread::sleep(std::time::Duration::from_millis(200));
        std::fs::read_to_string(&file).is_ok_and(|s| s.contains("hello-bcast"))
    })
}
