//! The egress world: a "host" namespace where vswitchd runs, joined by a veth (its uplink) to an
//! "external" namespace that routes to the test's "internet" address.

use super::*;

/// A host namespace (where vswitchd runs) joined to an external one by a veth: the host end
/// is the uplink, the external end is the router 192.0.2.1 that also owns the "internet"
/// address 203.0.113.10 (off the uplink's link, so the switch must use its gateway).
pub struct World {
    pub ext: Netns,
    pub host: Netns,
    pub uplink: String,
}

pub const SERVER: &str = "203.0.113.10";

pub fn world() -> World {
    let host = Netns::new("nh");
    let ext = Netns::new("ne");
    let uplink = format!("{}u", host.name);
    let peer = format!("{}p", host.name);
    must(
        "ip",
        &[
            "link", "add", &uplink, "netns", &host.name, "type", "veth", "peer", "name", &peer,
            "netns", &ext.name,
        ],
    );
    host.exec_ok(&["ip", "link", "set", &uplink, "up"]);
    host.exec_ok(&["ip", "link", "set", "lo", "up"]);
    ext.exec_ok(&["ip", "link", "set", "lo", "up"]);
    ext.exec_ok(&["ip", "addr", "add", "192.0.2.1/24", "dev", &peer]);
    ext.exec_ok(&["ip", "addr", "add", &format!("{SERVER}/32"), "dev", "lo"]);
    ext.exec_ok(&["ip", "link", "set", &peer, "up"]);
    // A real NIC hands the switch complete checksums; a veth would leave them pending.
    ext.exec_ok(&[
        "ethtool", "-K", &peer, "tx", "off", "tso", "off", "gso", "off",
    ]);
    World { ext, host, uplink }
}

/// The host's own address on a shared uplink.
pub const HOST_IP: &str = "192.0.2.2";

/// The world with the host's own address and default route on the uplink.
pub fn shared_world() -> World {
    let w = world();
    w.host.exec_ok(&[
        "ip",
        "addr",
        "add",
        &format!("{HOST_IP}/24"),
        "dev",
        &w.uplink,
    ]);
    w.host
        .exec_ok(&["ip", "route", "add", "default", "via", "192.0.2.1"]);
    // The host's veth end hands over complete checksums too (its own replies pass XDP).
    w.host.exec_ok(&[
        "ethtool", "-K", &w.uplink, "tx", "off", "tso", "off", "gso", "off",
    ]);
    w
}

pub fn set_uplink(d: &Daemon, w: &World) {
    set_uplink_with(d, w, &[]);
}

/// The dedicated uplink 192.0.2.2/24 via 192.0.2.1, with more options of `uplink set`.
pub fn set_uplink_with(d: &Daemon, w: &World, extra: &[&str]) {
    let mut args = vec![
        "uplink",
        "set",
        &w.uplink,
        "--mode",
        "dedicated",
        "--ip",
        "192.0.2.2/24",
        "--gateway",
        "192.0.2.1",
    ];
    args.extend_from_slice(extra);
    d.ok(&args);
}

/// The client address of each `GET /path` line of an http.server log.
pub fn served_clients(log: &std::path::Path, path: &str) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&format!("GET {path}")))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

/// An HTTP server in the external namespace serving `dir`; its log goes to `log`.
pub fn http_server(ext: &Netns, dir: &TempDir, log: &std::path::Path) -> Bg {
    let child = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &ext.name,
            "python3",
            "-m",
            "http.server",
            "--bind",
            SERVER,
        ])
        .arg("--directory")
        .arg(&dir.0)
        .arg("8080")
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let bg = Bg(child);
    assert!(
        wait_until(10, || ext
            .exec(&["bash", "-c", &format!("echo > /dev/tcp/{SERVER}/8080")])
            .status
            .success()),
        "http server up"
    );
    bg
}
