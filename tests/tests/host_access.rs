//! Host access (`network create --host-access`, `host_access = true`): vswitchd's namespace —
//! here a test "host" namespace the daemon runs in, never the real root namespace — gets
//! `vsw-NETWORK` with an address of its own, reaches containers by address, and containers
//! reach a server on the host as `host.vswitch.internal`. The interface goes with its network
//! and on a clean stop, comes back on start and survives `kill -9`.

mod common;

use std::process::{Command, Stdio};

use common::*;

fn serve(ns: &Netns, dir: &TempDir, tag: &str, bind: &str, port: u16) -> Bg {
    let root = dir.path(tag);
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), format!("hello from {tag}\n")).unwrap();
    let port = port.to_string();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-m", "http.server"])
        .args([port.as_str(), "--bind", bind, "--directory"])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Bg(child)
}

fn fetch(ns: &Netns, url: &str) -> Option<String> {
    let out = ns.exec(&["curl", "-sf", "-m", "3", url]);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn host_reaches_containers_and_containers_reach_the_host() {
    require_root();
    let host = Netns::new("hah");
    let mut d = Daemon::start_with(Some(&host), &[]);
    let tmp = TempDir::new("ha");
    d.ok(&[
        "network",
        "create",
        "web",
        "--subnet",
        "10.88.74.0/24",
        "--host-access",
    ]);
    let info = d.json(&["network", "inspect", "web"]);
    assert_eq!(info["host_access"]["ifname"], "vsw-web", "{info}");
    assert_eq!(info["host_access"]["ip"], "10.88.74.2/24", "{info}");
    assert_eq!(info["host_access"]["status"], "up", "{info}");
    let addr = host.exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "vsw-web"]);
    assert!(addr.contains("10.88.74.2/24"), "{addr}");
    let route = host.exec_ok(&["ip", "route", "show", "10.88.74.0/24"]);
    assert!(route.contains("dev vsw-web"), "{route}");
    let default = host.exec_ok(&["ip", "route", "show", "default"]);
    assert!(
        default.trim().is_empty(),
        "no default route for the host: {default}"
    );

    let c = Netns::new("hac");
    d.ok(&["add-port", "web", "--netns", &c.name, "--name", "c1"]);
    d.wait_up(&["c1", "vsw-web"]);
    assert_eq!(d.port("c1")["ip"], "10.88.74.3/24", "IPAM skips the host's");
    let _web = serve(&c, &tmp, "c1", "0.0.0.0", 8000);
    let _hostweb = serve(&host, &tmp, "host", "0.0.0.0", 8001);

    let check = |d: &Daemon| {
        assert!(host.ping("10.88.74.3", 2), "the host pings the container");
        assert!(
            wait_until(10, || fetch(&host, "http://10.88.74.3:8000/")
                .is_some_and(|p| p.contains("hello from c1"))),
            "the host fetches the container's page"
        );
        let dig = c.exec_ok(&[
            "dig",
            "+tries=1",
            "+time=3",
            "@10.88.74.1",
            "+short",
            "host.vswitch.internal",
        ]);
        assert_eq!(dig.trim(), "10.88.74.2");
        assert!(
            wait_until(10, || fetch(&c, "http://host.vswitch.internal:8001/")
                .is_some_and(|p| p.contains("hello from host"))),
            "the container fetches the host's page by name"
        );
        let s = d.stats("vsw-web");
        assert!(s["rx_packets"].as_u64().unwrap() > 0, "{s}");
    };
    check(&d);

    // It goes with its network only.
    let (code, msg) = d.err(&["del-port", "vsw-web"]);
    assert_eq!(code, "invalid_argument", "{msg}");
    assert!(msg.contains("host access"), "{msg}");
    let (code, msg) = d.err(&["network", "rm", "web"]);
    assert_eq!(code, "network_in_use", "{msg}");
    assert!(msg.contains("1 port(s) attached (c1)"), "{msg}");

    // A clean stop takes the interface away; the next start brings it back as it was.
    d.stop_with(15);
    assert!(!host.has_link("vsw-web"), "a clean stop removes it");
    d.restart();
    d.wait_up(&["c1", "vsw-web"]);
    assert!(host.has_link("vsw-web"));
    c.exec_ok(&["ip", "neigh", "flush", "dev", "eth0"]);
    check(&d);
    // kill -9: the interface stays (with the host's sockets on it) and is taken over.
    let index = host.ifindex("vsw-web");
    d.stop_with(9);
    assert!(host.has_link("vsw-web"));
    d.restart();
    d.wait_up(&["c1", "vsw-web"]);
    assert_eq!(host.ifindex("vsw-web"), index, "taken over, not re-made");
    check(&d);

    // A subnet the host already routes elsewhere is refused, and nothing is left of it.
    host.exec_ok(&[
        "ip", "link", "add", "hadummy", "type", "veth", "peer", "name", "hadummy1",
    ]);
    host.exec_ok(&["ip", "addr", "add", "10.88.75.1/24", "dev", "hadummy"]);
    host.exec_ok(&["ip", "link", "set", "hadummy", "up"]);
    host.exec_ok(&["ip", "link", "set", "hadummy1", "up"]);
    let (code, msg) = d.err(&[
        "network",
        "create",
        "taken",
        "--subnet",
        "10.88.75.0/24",
        "--host-access",
    ]);
    assert_eq!(code, "invalid_argument", "{msg}");
    assert!(msg.contains("overlaps") && msg.contains("hadummy"), "{msg}");
    let nets = d.json(&["network", "ls"]);
    assert!(
        !nets
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "taken"),
        "{nets}"
    );
    assert!(!host.has_link("vsw-taken"));

    d.ok(&["network", "rm", "web", "--force"]);
    assert!(!host.has_link("vsw-web"), "gone with its network");
    assert!(!host.ping_any("10.88.74.3", 1));

    // A network declared in the config with host_access = true gets it on start.
    d.stop_with(15);
    let cfg = std::fs::read_to_string(&d.config).unwrap();
    std::fs::write(&d.config, format!("{cfg}host_access = true\n")).unwrap();
    d.restart();
    assert!(
        wait_until(5, || host.has_link("vsw-bridge")),
        "the declared bridge network's host access"
    );
    let info = d.json(&["network", "inspect", "bridge"]);
    assert_eq!(info["host_access"]["ip"], "172.17.0.2/16", "{info}");
    let b = Netns::new("hab");
    d.ok(&["add-port", "bridge", "--netns", &b.name, "--name", "b1"]);
    assert!(b.ping("172.17.0.2", 2), "a container pings the host");
    // And the config turning it off again takes it away.
    d.stop_with(15);
    std::fs::write(&d.config, &cfg).unwrap();
    d.restart();
    d.wait_up(&["b1"]);
    assert!(!host.has_link("vsw-bridge"));
    assert!(d.json(&["network", "inspect", "bridge"])["host_access"].is_null());
    assert!(b.ping("172.17.0.1", 2), "the network itself carries on");
}

mod tap {
    #[test]
    fn host_reaches_containers_and_containers_reach_the_host() {
        crate::common::with_port_type(
            "tap",
            super::host_reaches_containers_and_containers_reach_the_host,
        )
    }
}

mod afxdp {
    /// The containers' ports are AF_XDP; the host's interface is a TAP either way.
    #[test]
    fn host_reaches_containers_and_containers_reach_the_host() {
        crate::common::with_port_type(
            "afxdp",
            super::host_reaches_containers_and_containers_reach_the_host,
        )
    }
}
