//! A shared uplink: the "host" namespace keeps its own address on the uplink (and its own
//! server and outgoing connections) while containers are masqueraded behind that address with
//! the switch's NAT port range only.

mod common;

use common::egress::*;
use common::*;

fn reserved(ns: &Netns) -> String {
    ns.exec_ok(&["cat", "/proc/sys/net/ipv4/ip_local_reserved_ports"])
        .trim()
        .to_string()
}

fn curl(ns: &Netns, url: &str) -> Vec<u8> {
    let out = ns.exec(&["curl", "-sS", "--max-time", "15", "-o", "-", url]);
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn shared_uplink_keeps_the_host_working() {
    require_root();
    let w = shared_world();
    // The host's own server, on a port of its own.
    let hdir = TempDir::new("hw");
    std::fs::write(hdir.path("hello"), b"the host's own page\n").unwrap();
    // Not `python3 -m http.server`: it looks its address up in DNS before it listens, which
    // with the host's default route through the test's external namespace takes a timeout.
    let mut host_server = Bg(std::process::Command::new("ip")
        .args(["netns", "exec", &w.host.name, "python3", "-c"])
        .arg(
            "import http.server, os, socketserver, sys\nos.chdir(sys.argv[1])\n\
             socketserver.TCPServer((sys.argv[2], 8000), \
             http.server.SimpleHTTPRequestHandler).serve_forever()",
        )
        .arg(&hdir.0)
        .arg(HOST_IP)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(hdir.path("server.log")).unwrap())
        .spawn()
        .unwrap());
    assert!(
        wait_until(10, || w
            .host
            .exec(&["bash", "-c", &format!("echo > /dev/tcp/{HOST_IP}/8000")])
            .status
            .success()),
        "the host's server is up: {} {:?}",
        std::fs::read_to_string(hdir.path("server.log")).unwrap_or_default(),
        host_server.0.try_wait(),
    );
    let dir = TempDir::new("www");
    let body: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 251) as u8).collect();
    std::fs::write(dir.path("blob"), &body).unwrap();
    let log = dir.path("server.log");
    let _server = http_server(&w.ext, &dir, &log);

    let d = Daemon::start_with(Some(&w.host), &[]);
    let before = reserved(&w.host);
    d.ok(&["network", "create", "web", "--subnet", "10.78.0.0/24"]);
    let c1 = Netns::new("c1");
    let c2 = Netns::new("c2");
    d.ok(&["add-port", "web", "--netns", &c1.name, "--name", "c1"]);
    d.ok(&["add-port", "web", "--netns", &c2.name, "--name", "c2"]);
    // Shared is the default mode; the address and gateway are the host's.
    let shown = d.ok(&["uplink", "set", &w.uplink]);
    assert!(
        shown.contains("shared") && shown.contains(HOST_IP) && shown.contains("xdp skb"),
        "{shown}"
    );
    let up = d.json(&["uplink", "show"]).to_string();
    assert!(up.contains("192.0.2.1"), "the host's gateway: {up}");
    // The range is reserved from the host's ephemeral ports while the switch holds it.
    let held = reserved(&w.host);
    assert!(held.contains("61000-65535"), "reserved: {held:?}");

    // Containers reach the outside, behind the host's address.
    for c in [&c1, &c2] {
        assert!(
            curl(c, &format!("http://{SERVER}:8080/blob")) == body,
            "the page arrives intact"
        );
    }
    assert!(c1.ping(SERVER, 3), "ping through the shared uplink");
    let served = std::fs::read_to_string(&log).unwrap();
    let clients = served_clients(&log, "/blob");
    assert_eq!(clients, vec![HOST_IP, HOST_IP], "{served}");
    let ct = d.json(&["conntrack", "show"]).to_string();
    for port in ct
        .split("\"nat_port\":")
        .skip(1)
        .filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next())
        .filter_map(|s| s.parse::<u32>().ok())
    {
        assert!(
            (61000..=65535).contains(&port),
            "NAT ports come from the range only: {port}"
        );
    }

    // Meanwhile the host keeps working: the outside reaches its server, it reaches the
    // outside itself (from its own ephemeral ports), and it answers ping.
    assert_eq!(
        curl(&w.ext, &format!("http://{HOST_IP}:8000/hello")),
        b"the host's own page\n"
    );
    assert!(curl(&w.host, &format!("http://{SERVER}:8080/blob")) == body);
    assert!(w.ext.ping(HOST_IP, 2), "the host answers ping");
    assert!(w.host.ping(SERVER, 2), "the host's own ping");
    let served = std::fs::read_to_string(&log).unwrap();
    let host_line = served.lines().filter(|l| l.contains("GET /blob")).nth(2);
    assert!(host_line.is_some(), "the host's own request: {served}");

    // Given back on rm, and on a clean stop.
    d.ok(&["uplink", "rm"]);
    assert_eq!(reserved(&w.host), before, "the range is the host's again");
    assert!(curl(&w.host, &format!("http://{SERVER}:8080/blob")) == body);
    d.ok(&["uplink", "set", &w.uplink]);
    assert!(reserved(&w.host).contains("61000-65535"));
    let mut d = d;
    d.stop_with(15);
    assert_eq!(reserved(&w.host), before, "given back on stop");
    d.restart();
    assert!(
        wait_until(10, || reserved(&w.host).contains("61000-65535")),
        "restored: {}",
        d.log()
    );
    assert!(curl(&c1, &format!("http://{SERVER}:8080/blob")) == body);
}

fn bad_shared_uplinks_are_clear_errors() {
    require_root();
    let w = shared_world();
    let d = Daemon::start_with(Some(&w.host), &[]);
    // An address not on the interface.
    let (_, err) = d.err(&["uplink", "set", &w.uplink, "--ip", "192.0.2.99"]);
    assert!(err.contains("not an address of"), "{err}");
    // The whole ephemeral range.
    let (_, err) = d.err(&["uplink", "set", &w.uplink, "--nat-ports", "1024-65535"]);
    assert!(err.contains("ephemeral"), "{err}");
    // A range the host's own sockets use.
    let _listener = Bg(std::process::Command::new("ip")
        .args(["netns", "exec", &w.host.name, "python3", "-c"])
        .arg(
            "import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', 62500))\n\
             s.listen()\ntime.sleep(120)",
        )
        .spawn()
        .unwrap());
    assert!(wait_until(5, || w
        .host
        .exec(&["bash", "-c", "echo > /dev/tcp/127.0.0.1/62500"])
        .status
        .success()));
    let (_, err) = d.err(&["uplink", "set", &w.uplink]);
    assert!(
        err.contains("overlap the host's own") && err.contains("62500"),
        "{err}"
    );
    // No address at all on the interface.
    w.host.exec_ok(&["ip", "addr", "flush", "dev", &w.uplink]);
    let (_, err) = d.err(&["uplink", "set", &w.uplink, "--nat-ports", "63000-63999"]);
    assert!(err.contains("has no IPv4 address"), "{err}");
    assert!(d.ok(&["uplink", "show"]).contains("no uplink"));
    assert_eq!(
        reserved(&w.host),
        "",
        "nothing reserved by the failed attempts"
    );
}

fn the_daemon_sets_its_uplink_from_the_command_line() {
    require_root();
    let w = shared_world();
    let d = Daemon::start_with(Some(&w.host), &["--uplink", &w.uplink]);
    let shown = d.ok(&["uplink", "show"]);
    assert!(
        shown.contains("(shared, up)") && shown.contains(HOST_IP),
        "{shown}"
    );
    d.ok(&["network", "create", "web", "--subnet", "10.79.0.0/24"]);
    let c = Netns::new("c");
    d.ok(&["add-port", "web", "--netns", &c.name, "--name", "c"]);
    assert!(c.ping(SERVER, 2), "out through the uplink of --uplink");
    // A saved uplink wins over the command line at the next start.
    d.ok(&["uplink", "rm"]);
    d.ok(&["uplink", "set", &w.uplink, "--nat-ports", "63000-63999"]);
    let mut d = d;
    d.stop_with(15);
    d.restart();
    assert!(wait_until(10, || d
        .ok(&["uplink", "show"])
        .contains("63000-63999")));
}

#[test]
fn uplink_from_the_command_line() {
    with_port_type("tap", the_daemon_sets_its_uplink_from_the_command_line);
}

#[test]
fn shared_uplink() {
    with_port_type("tap", shared_uplink_keeps_the_host_working);
}

#[test]
fn bad_shared_uplinks() {
    with_port_type("tap", bad_shared_uplinks_are_clear_errors);
}
