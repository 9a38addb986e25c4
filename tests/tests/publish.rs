//! Published ports (`add-port --publish`, `publish add/rm/ls`): clients in the external
//! namespace reach servers in containers through the uplink's address, and the servers see
//! the clients' real addresses; containers reach published ports through that address too
//! (hairpin). The daemon runs in the test's "host" namespace; nothing leaves the namespaces.

mod common;

use common::egress::*;
use common::*;

/// An HTTP server in `ns` on each port of `ports` that answers every GET with
/// "port N\n" (N its own port) and logs "CLIENT GET PATH" lines to `log`; and a UDP echo
/// server on `udp` answering "echo: DATA".
fn servers(ns: &Netns, dir: &TempDir, ports: &[u16], udp: u16) -> Bg {
    let script = dir.path("servers.py");
    std::fs::write(
        &script,
        r#"
import http.server, socket, socketserver, sys, threading
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("port %d\n" % self.server.server_address[1]).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        sys.stderr.write("%s GET %s\n" % (self.client_address[0], self.path))
        sys.stderr.flush()
    def log_message(self, *a):
        pass
socketserver.TCPServer.allow_reuse_address = True
socketserver.TCPServer.request_queue_size = 512
for p in sys.argv[2:]:
    s = socketserver.ThreadingTCPServer(("0.0.0.0", int(p)), H)
    threading.Thread(target=s.serve_forever, daemon=True).start()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("0.0.0.0", int(sys.argv[1])))
while True:
    data, addr = u.recvfrom(2048)
    sys.stderr.write("%s UDP\n" % addr[0])
    sys.stderr.flush()
    u.sendto(b"echo: " + data, addr)
"#,
    )
    .unwrap();
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &ns.name, "python3", "-u"])
        .arg(&script)
        .arg(udp.to_string());
    for p in ports {
        cmd.arg(p.to_string());
    }
    let bg = Bg(cmd
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path("server.log")).unwrap())
        .spawn()
        .unwrap());
    for p in ports {
        assert!(
            wait_until(10, || ns
                .exec(&["bash", "-c", &format!("echo > /dev/tcp/127.0.0.1/{p}")])
                .status
                .success()),
            "server on {p} up"
        );
    }
    bg
}

/// The body curl gets from `url` in `ns`, or `None` when it fails (within `secs`).
fn get(ns: &Netns, url: &str, secs: u32) -> Option<String> {
    let t = secs.to_string();
    let out = ns.exec(&["curl", "-sS", "--max-time", &t, url]);
    if !out.status.success() {
        eprintln!(
            "curl {url} in {}: {}",
            ns.name,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The UDP echo's answer to `msg` sent from `ns` to `addr:port`.
fn udp_echo(ns: &Netns, addr: &str, port: u16, msg: &str) -> String {
    let out = ns.exec(&[
        "python3",
        "-c",
        "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.settimeout(2)\nfor _ in range(3):\n    s.sendto(sys.argv[3].encode(), (sys.argv[1], int(sys.argv[2])))\n\
         \x20   try:\n        print(s.recv(2048).decode()); break\n    except socket.timeout:\n        pass\n",
        addr,
        &port.to_string(),
        msg,
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The clients of "GET path" lines in the server log.
fn clients(dir: &TempDir, what: &str) -> Vec<String> {
    std::fs::read_to_string(dir.path("server.log"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with(what))
        .map(|l| l.split_whitespace().next().unwrap_or("").to_string())
        .collect()
}

const UPLINK_IP: &str = "192.0.2.2";
const EXT_IP: &str = "192.0.2.1";

fn published_ports_reach_containers_with_the_clients_address() {
    require_root();
    let w = world();
    let mut d = Daemon::start_with(Some(&w.host), &[]);
    d.ok(&["network", "create", "web", "--subnet", "10.81.0.0/24"]);
    let c1 = Netns::new("p1");
    let c2 = Netns::new("p2");
    d.ok(&[
        "add-port",
        "web",
        "--netns",
        &c1.name,
        "--name",
        "c1",
        "--publish",
        "8080:80",
        "--publish",
        "5353:53/udp",
    ]);
    d.ok(&["add-port", "web", "--netns", &c2.name, "--name", "c2"]);
    // A range, added at run time.
    d.ok(&["publish", "add", "c1", "9000-9002:7000-7002"]);
    let dir = TempDir::new("pw");
    let _srv = servers(&c1, &dir, &[80, 7000, 7001, 7002], 53);
    let ls = d.json(&["publish", "ls"]);
    let rows = ls.as_array().cloned().unwrap_or_default();
    assert_eq!(rows.len(), 3, "{ls}");
    assert!(
        rows.iter().all(|r| r["status"] == "no uplink"),
        "nothing is active without an uplink: {ls}"
    );
    assert!(get(&w.ext, &format!("http://{UPLINK_IP}:8080/"), 2).is_none());
    // The host's own stack needs no uplink: the loopback relay brings it in from the
    // gateway's address.
    assert_eq!(
        get(&w.host, "http://127.0.0.1:8080/lo", 10).as_deref(),
        Some("port 80\n"),
        "{}",
        d.log()
    );
    assert_eq!(clients(&dir, "GET /lo"), vec!["10.81.0.1"]);
    // The external host gave up resolving the address nobody answered for ...
    let neigh = || {
        let out = w.ext.exec(&["ip", "neigh", "show", UPLINK_IP]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(
        wait_until(8, || neigh().contains("FAILED")),
        "the external host's entry: {}",
        neigh()
    );
    set_uplink(&d, &w);
    // ... and the uplink's announcement puts it right before anyone asks again.
    assert!(
        wait_until(3, || neigh().contains("lladdr")),
        "announced: {}",
        neigh()
    );
    let ls = d.json(&["publish", "ls"]);
    assert!(
        ls.as_array()
            .is_some_and(|r| r.iter().all(|r| r["status"] == "active")),
        "{ls}"
    );

    // From outside: the page, and the server sees the external client's address.
    assert_eq!(
        get(&w.ext, &format!("http://{UPLINK_IP}:8080/a"), 10).as_deref(),
        Some("port 80\n")
    );
    assert_eq!(
        clients(&dir, "GET /a"),
        vec![EXT_IP],
        "the client's own address"
    );
    let ct = d.json(&["conntrack", "show"]);
    assert!(
        ct.as_array()
            .is_some_and(|r| r.iter().any(|r| r["kind"] == "dnat"
                && r["src"] == "10.81.0.2"
                && r["sport"] == 80
                && r["dst"] == EXT_IP
                && r["nat_port"] == 8080)),
        "a dnat flow: {ct}"
    );
    // UDP.
    assert_eq!(udp_echo(&w.ext, UPLINK_IP, 5353, "hi"), "echo: hi");
    assert_eq!(clients(&dir, "UDP"), vec![EXT_IP]);
    // The range maps port to port.
    for (host, cont) in [(9000, 7000), (9001, 7001), (9002, 7002)] {
        assert_eq!(
            get(&w.ext, &format!("http://{UPLINK_IP}:{host}/r"), 10),
            Some(format!("port {cont}\n")),
            "{host} leads to {cont}"
        );
    }
    // A port not published goes nowhere.
    assert!(get(&w.ext, &format!("http://{UPLINK_IP}:9003/"), 2).is_none());

    // Hairpin: another container and the publisher itself, through the uplink's address.
    // They come to the server from the gateway, so its replies go back through the switch.
    for (c, path) in [(&c2, "/h2"), (&c1, "/h1")] {
        assert_eq!(
            get(c, &format!("http://{UPLINK_IP}:8080{path}"), 10).as_deref(),
            Some("port 80\n"),
            "hairpin {path}: {}",
            d.log()
        );
        assert_eq!(clients(&dir, &format!("GET {path}")), vec!["10.81.0.1"]);
    }
    assert_eq!(udp_echo(&c2, UPLINK_IP, 5353, "hp"), "echo: hp");

    // Removed: new connections stop at once.
    d.ok(&["publish", "rm", "c1", "8080:80"]);
    assert!(get(&w.ext, &format!("http://{UPLINK_IP}:8080/gone"), 3).is_none());
    assert!(clients(&dir, "GET /gone").is_empty());
    assert_eq!(
        get(&w.ext, &format!("http://{UPLINK_IP}:9001/still"), 10).as_deref(),
        Some("port 7001\n"),
        "the others stay"
    );
    d.ok(&["publish", "add", "c1", "8080:80/tcp"]);

    // Every publish survives a clean restart and a kill -9.
    for signal in [15, 9] {
        d.stop_with(signal);
        d.restart();
        assert!(
            wait_until(15, || get(
                &w.ext,
                &format!("http://{UPLINK_IP}:8080/s{signal}"),
                2
            )
            .as_deref()
                == Some("port 80\n")),
            "published after signal {signal}: {}",
            d.log()
        );
        assert_eq!(udp_echo(&w.ext, UPLINK_IP, 5353, "again"), "echo: again");
        assert_eq!(
            get(&w.host, &format!("http://127.0.0.1:9001/lo{signal}"), 10).as_deref(),
            Some("port 7001\n"),
            "the loopback relay after signal {signal}"
        );
        assert_eq!(
            get(&w.ext, &format!("http://{UPLINK_IP}:9002/"), 10).as_deref(),
            Some("port 7002\n")
        );
    }
    let port = d.port("c1");
    assert_eq!(
        port["publish"],
        serde_json::json!(["5353:53/udp", "9000-9002:7000-7002/tcp", "8080:80/tcp"]),
        "{port}"
    );
    // Deleting the port takes its publishes.
    d.ok(&["del-port", "c1"]);
    assert_eq!(d.json(&["publish", "ls"]), serde_json::json!([]));
}

fn bad_publishes_are_clear_errors_that_change_nothing() {
    require_root();
    let w = world();
    let d = Daemon::start_with(Some(&w.host), &[]);
    set_uplink(&d, &w);
    d.ok(&["network", "create", "web", "--subnet", "10.82.0.0/24"]);
    d.ok(&[
        "network",
        "create",
        "inside",
        "--subnet",
        "10.83.0.0/24",
        "--internal",
    ]);
    let c1 = Netns::new("b1");
    let c2 = Netns::new("b2");
    let c3 = Netns::new("b3");
    d.ok(&[
        "add-port",
        "web",
        "--netns",
        &c1.name,
        "--name",
        "c1",
        "--publish",
        "8080:80",
    ]);
    d.ok(&["add-port", "web", "--netns", &c2.name, "--name", "c2"]);
    d.ok(&["add-port", "inside", "--netns", &c3.name, "--name", "c3"]);
    // A listener of the host's own (vswitchd's namespace).
    let _listener = Bg(std::process::Command::new("ip")
        .args(["netns", "exec", &w.host.name, "python3", "-c"])
        .arg(
            "import socket, time\ns = socket.socket()\ns.bind(('0.0.0.0', 7777))\n\
             s.listen()\ntime.sleep(120)",
        )
        .spawn()
        .unwrap());
    assert!(wait_until(5, || w
        .host
        .exec(&["bash", "-c", "echo > /dev/tcp/127.0.0.1/7777"])
        .status
        .success()));
    let before = d.json(&["publish", "ls"]);
    let show = d.show_stable();
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["publish", "add", "c2", "8080:80"],
            "port_in_use",
            "published already",
        ),
        (
            &["publish", "add", "c2", "8079-8081:79-81"],
            "port_in_use",
            "published already",
        ),
        (
            &["publish", "add", "c1", "8080:80"],
            "port_in_use",
            "already",
        ),
        (
            &["publish", "add", "c2", "7777:80"],
            "port_in_use",
            "in use by a socket on the host",
        ),
        (
            &["publish", "add", "c2", "62000:80"],
            "port_in_use",
            "NAT range",
        ),
        (
            &["publish", "add", "c2", "80"],
            "invalid_argument",
            "HOSTPORT",
        ),
        (
            &["publish", "add", "c2", "70000:80"],
            "invalid_argument",
            "not a port",
        ),
        (
            &["publish", "add", "c2", "81:80/sctp"],
            "invalid_argument",
            "not tcp or udp",
        ),
        (
            &["publish", "add", "c2", "9000-9002:80-81"],
            "invalid_argument",
            "unequal length",
        ),
        (
            &["publish", "add", "c3", "8081:80"],
            "invalid_argument",
            "--internal",
        ),
        (
            &["publish", "add", "nope", "8081:80"],
            "port_not_found",
            "not found",
        ),
        (
            &["publish", "rm", "c2", "8080:80"],
            "invalid_argument",
            "does not publish",
        ),
    ];
    for (args, code, text) in cases {
        let (c, m) = d.err(args);
        assert_eq!(&c, code, "{args:?}: {m}");
        assert!(m.contains(text), "{args:?}: {m}");
    }
    // At add-port: nothing is created.
    let c4 = Netns::new("b4");
    let (c, m) = d.err(&[
        "add-port",
        "web",
        "--netns",
        &c4.name,
        "--name",
        "c4",
        "--publish",
        "8080:80",
    ]);
    assert_eq!(c, "port_in_use", "{m}");
    let (c, m) = d.err(&[
        "add-port",
        "web",
        "--netns",
        &c4.name,
        "--name",
        "c4",
        "--publish",
        "1:2:3:4",
    ]);
    assert_eq!(c, "invalid_argument", "{m}");
    assert!(!c4.has_link("eth0"));
    assert_eq!(d.json(&["publish", "ls"]), before, "nothing changed");
    assert_eq!(d.show_stable(), show, "nothing changed");
    // A NAT range holding a published port is refused too.
    d.ok(&["uplink", "rm"]);
    let (c, m) = d.err(&[
        "uplink",
        "set",
        &w.uplink,
        "--mode",
        "dedicated",
        "--ip",
        "192.0.2.2/24",
        "--nat-ports",
        "8000-9000",
    ]);
    assert_eq!(c, "port_in_use", "{m}");
}

/// A shared uplink: the steering program hands the published ports to the switch and
/// leaves the host's own services alone.
fn published_ports_on_a_shared_uplink() {
    require_root();
    let w = shared_world();
    let d = Daemon::start_with(Some(&w.host), &[]);
    d.ok(&["network", "create", "web", "--subnet", "10.84.0.0/24"]);
    let c1 = Netns::new("s1");
    let c2 = Netns::new("s2");
    d.ok(&[
        "add-port",
        "web",
        "--netns",
        &c1.name,
        "--name",
        "c1",
        "--publish",
        "8080:80",
        "--publish",
        "5353:53/udp",
    ]);
    d.ok(&["add-port", "web", "--netns", &c2.name, "--name", "c2"]);
    let dir = TempDir::new("ps");
    let _srv = servers(&c1, &dir, &[80], 53);
    // The host's own server on another port.
    let hdir = TempDir::new("ph");
    let _host_srv = servers(&w.host, &hdir, &[8000], 5454);
    d.ok(&["uplink", "set", &w.uplink]);
    assert_eq!(
        get(&w.ext, &format!("http://{HOST_IP}:8080/x"), 10).as_deref(),
        Some("port 80\n"),
        "{}",
        d.log()
    );
    assert_eq!(clients(&dir, "GET /x"), vec![EXT_IP]);
    assert_eq!(udp_echo(&w.ext, HOST_IP, 5353, "u"), "echo: u");
    // The host keeps its own.
    assert_eq!(
        get(&w.ext, &format!("http://{HOST_IP}:8000/own"), 10).as_deref(),
        Some("port 8000\n")
    );
    assert_eq!(udp_echo(&w.ext, HOST_IP, 5454, "own"), "echo: own");
    // Hairpin through the host's address.
    assert_eq!(
        get(&c2, &format!("http://{HOST_IP}:8080/hp"), 10).as_deref(),
        Some("port 80\n")
    );
    // Unpublished, the port is the host's again (nothing listens there: refused at once).
    d.ok(&["publish", "rm", "c1", "8080:80"]);
    let out = w.ext.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "5",
        &format!("http://{HOST_IP}:8080/"),
    ]);
    // curl's 7 is "could not connect" (a reset); a frame the switch took would time out (28).
    assert_eq!(
        out.status.code(),
        Some(7),
        "the host's stack answers: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn tcp_udp_ranges_hairpin_and_restarts() {
    with_port_type(
        "tap",
        published_ports_reach_containers_with_the_clients_address,
    );
}

#[test]
fn afxdp_ports() {
    with_port_type(
        "afxdp",
        published_ports_reach_containers_with_the_clients_address,
    );
}

#[test]
fn bad_publishes() {
    with_port_type("tap", bad_publishes_are_clear_errors_that_change_nothing);
}

#[test]
fn shared_uplink() {
    with_port_type("tap", published_ports_on_a_shared_uplink);
}

/// A TCP sink in `ns` on `port`: each connection's bytes are counted and hashed, and
/// "BYTES SHA256" appended to `out`.
fn sink(ns: &Netns, port: u16, out: &std::path::Path) -> Bg {
    let code = r#"
import hashlib, socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(4)
while True:
    c, _ = s.accept()
    h, n = hashlib.sha256(), 0
    while True:
        b = c.recv(1 << 20)
        if not b:
            break
        h.update(b)
        n += len(b)
    c.close()
    with open(sys.argv[2], "a") as f:
        f.write("%d %s\n" % (n, h.hexdigest()))
"#;
    let bg = Bg(std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-u", "-c", code])
        .arg(port.to_string())
        .arg(out)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap());
    assert!(
        wait_until(10, || ns
            .exec(&["bash", "-c", &format!("echo > /dev/tcp/127.0.0.1/{port}")])
            .status
            .success()),
        "sink on {port} up"
    );
    bg
}

fn sha256(path: &std::path::Path) -> String {
    let out = must("sha256sum", &[path.to_str().unwrap()]);
    out.split_whitespace().next().unwrap_or("").to_string()
}

/// The host's own stack reaches published ports through the loopback relay: localhost and
/// the host's address, TCP both ways (checked byte for byte) and UDP; `publish rm` closes it.
fn loopback_relay_carries_the_hosts_own_connections() {
    require_root();
    let w = shared_world();
    let d = Daemon::start_with(Some(&w.host), &[]);
    d.ok(&["network", "create", "web", "--subnet", "10.86.0.0/24"]);
    let c1 = Netns::new("lr");
    d.ok(&[
        "add-port",
        "web",
        "--netns",
        &c1.name,
        "--name",
        "c1",
        "--publish",
        "8080:80",
        "--publish",
        "5353:53/udp",
        "--publish",
        "9100:9100",
        "--publish",
        "9200:9200",
    ]);
    d.ok(&["uplink", "set", &w.uplink]);
    let dir = TempDir::new("lr");
    let _srv = servers(&c1, &dir, &[80], 53);
    for (url, path) in [
        ("http://127.0.0.1:8080/l1", "GET /l1"),
        (&format!("http://{HOST_IP}:8080/l2"), "GET /l2"),
    ] {
        assert_eq!(
            get(&w.host, url, 10).as_deref(),
            Some("port 80\n"),
            "{url}: {}",
            d.log()
        );
        assert_eq!(clients(&dir, path), vec!["10.86.0.1"], "from the gateway");
    }
    assert_eq!(udp_echo(&w.host, "127.0.0.1", 5353, "lo"), "echo: lo");
    assert_eq!(clients(&dir, "UDP"), vec!["10.86.0.1"]);

    // 50 MB from the container, through the relay, intact.
    let files = TempDir::new("lrf");
    let big = files.path("big");
    must(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", big.display()),
            "bs=1M",
            "count=50",
            "status=none",
        ],
    );
    let _files_srv = Bg(std::process::Command::new("ip")
        .args(["netns", "exec", &c1.name, "python3", "-m", "http.server"])
        .args(["9100", "--directory", files.path("").to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap());
    assert!(wait_until(10, || c1
        .exec(&["bash", "-c", "echo > /dev/tcp/127.0.0.1/9100"])
        .status
        .success()));
    let got = files.path("got");
    let out = w.host.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "60",
        "-o",
        got.to_str().unwrap(),
        "http://127.0.0.1:9100/big",
    ]);
    assert!(
        out.status.success(),
        "download: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256(&got), sha256(&big), "50 MB down through the relay");
    // And 50 MB to it.
    let sums = files.path("sums");
    let _sink = sink(&c1, 9200, &sums);
    w.host.exec_ok(&[
        "bash",
        "-c",
        &format!("cat {} > /dev/tcp/127.0.0.1/9200", big.display()),
    ]);
    let want = format!("{} {}", 50 << 20, sha256(&big));
    assert!(
        wait_until(20, || std::fs::read_to_string(&sums)
            .unwrap_or_default()
            .lines()
            .any(|l| l == want)),
        "50 MB up through the relay: {:?} (want {want})",
        std::fs::read_to_string(&sums)
    );

    let ls = d.json(&["publish", "ls"]);
    let row = |spec: &str| {
        ls.as_array()
            .and_then(|r| r.iter().find(|r| r["spec"] == spec).cloned())
            .unwrap_or_default()
    };
    assert_eq!(row("8080:80/tcp")["relay"], "listening", "{ls}");
    assert_eq!(row("8080:80/tcp")["relay_connections"], 2, "{ls}");
    assert_eq!(row("5353:53/udp")["relay_connections"], 1, "{ls}");

    // Bounded: the relay runs 256 at once (`relay::MAX_RELAYS`, the UDP session counts) and
    // refuses, counted, what comes past that; the host's connections held open come free.
    let hold = Bg(std::process::Command::new("ip")
        .args(["netns", "exec", &w.host.name, "python3", "-c"])
        .arg(
            "import socket, time\ncs = []\nfor _ in range(300):\n    \
             cs.append(socket.create_connection(('127.0.0.1', 8080)))\ntime.sleep(60)\n",
        )
        .spawn()
        .unwrap());
    let relay = |spec: &str| {
        let ls = d.json(&["publish", "ls"]);
        ls.as_array()
            .and_then(|r| r.iter().find(|r| r["spec"] == spec).cloned())
            .unwrap_or_default()
    };
    assert!(
        wait_until(20, || {
            let r = relay("8080:80/tcp");
            r["relay_active"] == 255 && r["relay_refused"] == 45
        }),
        "255 relayed beside the UDP session, 45 refused: {}",
        relay("8080:80/tcp")
    );
    drop(hold);
    assert!(
        wait_until(30, || relay("8080:80/tcp")["relay_active"] == 0),
        "the held connections end: {}",
        relay("8080:80/tcp")
    );
    assert_eq!(
        get(&w.host, "http://127.0.0.1:8080/after", 10).as_deref(),
        Some("port 80\n")
    );

    // Unpublished: the host refuses at once.
    d.ok(&["publish", "rm", "c1", "8080:80"]);
    let out = w
        .host
        .exec(&["curl", "-sS", "--max-time", "5", "http://127.0.0.1:8080/"]);
    assert_eq!(
        out.status.code(),
        Some(7),
        "refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn loopback_relay() {
    with_port_type("tap", loopback_relay_carries_the_hosts_own_connections);
}
