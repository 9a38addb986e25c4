//! Egress, the harder proofs: bulk TCP through the masquerade (a 50 MB download, iperf3 both
//! ways), conntrack entries that appear, expire and are flushed, a full table that refuses new
//! flows while an established one keeps flowing, ICMP errors from outside delivered to the
//! right container with their quoted header restored, fragmented UDP both ways, and malformed
//! frames from either side counted as drops while the daemon carries on. Real peers only: the
//! kernel stacks of the containers and of the external namespace, curl, iperf3, python3.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::egress::*;
use common::*;
use serde_json::Value;

/// `python3 -c SCRIPT ARGS...` in `ns`, in the background; its stdout goes to `log`.
fn py_bg(ns: &Netns, script: &str, args: &[&str], log: &std::path::Path) -> Bg {
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "python3", "-u", "-c", script])
        .args(args)
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3");
    Bg(child)
}

/// `python3 -c SCRIPT ARGS...` in `ns`; its stdout (it must succeed).
fn py(ns: &Netns, script: &str, args: &[&str]) -> String {
    let mut a = vec!["timeout", "30", "python3", "-c", script];
    a.extend_from_slice(args);
    ns.exec_ok(&a)
}

/// Waits until `log` holds a line starting with `word`.
fn wait_for_line(log: &std::path::Path, word: &str) {
    assert!(
        wait_until(10, || std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with(word))),
        "no {word:?} in {}: {:?}",
        log.display(),
        std::fs::read_to_string(log)
    );
}

/// The tracked flows (`conntrack show --json`), optionally of one network.
fn flows(d: &Daemon, network: Option<&str>) -> Vec<Value> {
    let mut args = vec!["conntrack", "show"];
    if let Some(n) = network {
        args.extend(["--network", n]);
    }
    let v = d.json(&args);
    v.as_array()
        .cloned()
        .unwrap_or_else(|| panic!("conntrack show --json is a list of flows: {v}"))
}

fn ct_stats(d: &Daemon) -> Value {
    d.json(&["conntrack", "stats"])
}

/// One drop counter of a port (`port stats --json`).
fn drops(d: &Daemon, port: &str, reason: &str) -> u64 {
    let s = d.stats(port);
    s["drops"][reason]
        .as_u64()
        .unwrap_or_else(|| panic!("no drop reason {reason} in {s}"))
}

fn sha256_of(path: &std::path::Path) -> String {
    must("sha256sum", &[path.to_str().unwrap()])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `mb` MB of deterministic bytes (xorshift), written to `path`.
fn write_blob(path: &std::path::Path, mb: usize) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut data = Vec::with_capacity(mb << 20);
    while data.len() < mb << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        data.extend_from_slice(&x.to_le_bytes());
    }
    std::fs::write(path, &data).unwrap();
}

/// A daemon in the world's host namespace with network `name` on `subnet`, one container per
/// entry of `containers` (port named as given), and the uplink set.
fn egress(w: &World, name: &str, subnet: &str, containers: &[&str]) -> (Daemon, Vec<Netns>) {
    let d = Daemon::start_with(Some(&w.host), &[]);
    d.ok(&["network", "create", name, "--subnet", subnet]);
    let cs: Vec<Netns> = containers
        .iter()
        .map(|c| {
            let ns = Netns::new(c);
            d.ok(&["add-port", name, "--netns", &ns.name, "--name", c]);
            ns
        })
        .collect();
    d.wait_up(containers);
    (d, cs)
}

// ---- 1. bulk TCP ----

fn download_50mb_and_iperf3_both_ways() {
    bulk_through(&[]);
}

/// The same through a dedicated uplink on a packet socket (`--type packet`: virtio-net
/// headers, GSO frames both ways) instead of AF_XDP.
fn download_50mb_and_iperf3_through_a_packet_socket() {
    bulk_through(&["--type", "packet"]);
}

fn bulk_through(uplink: &[&str]) {
    require_root();
    let w = world();
    let (d, cs) = egress(&w, "bulk", "10.81.0.0/24", &["c"]);
    let c = &cs[0];
    set_uplink_with(&d, &w, uplink);
    let up = d.json(&["uplink", "show"]);
    let want_socket = if uplink.is_empty() {
        "af_xdp"
    } else {
        "af_packet"
    };
    assert_eq!(up["socket"], want_socket, "{up}");
    let dir = TempDir::new("dl");
    write_blob(&dir.path("blob"), 50);
    let want = sha256_of(&dir.path("blob"));
    let _http = http_server(&w.ext, &dir, &dir.path("server.log"));
    let got = dir.path(&format!("got-{}", c.name));
    let t = Instant::now();
    let out = c.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "60",
        "-o",
        got.to_str().unwrap(),
        &format!("http://{SERVER}:8080/blob"),
    ]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(sha256_of(&got), want, "50 MB arrive intact");
    eprintln!("{}: 50 MB through NAT in {secs:.2} s", common::port_type());

    for reverse in [false, true] {
        let r = iperf_for(c, &w.ext, SERVER, reverse, 2);
        assert!(r.get("error").is_none(), "iperf3 -R={reverse}: {r}");
        let bytes = r["end"]["sum_received"]["bytes"].as_u64().unwrap_or(0);
        assert!(bytes > 0, "iperf3 -R={reverse} moved bytes: {r}");
        eprintln!(
            "{}: iperf3{} {:.0} Mbit/s",
            common::port_type(),
            if reverse { " -R" } else { "" },
            r["end"]["sum_received"]["bits_per_second"]
                .as_f64()
                .unwrap_or(0.0)
                / 1e6
        );
    }
    // All of it was masqueraded: the server saw the uplink's address.
    let served = std::fs::read_to_string(dir.path("server.log")).unwrap();
    assert!(served.contains("192.0.2.2") && served.contains("GET /blob"));
}

#[test]
fn bulk_tcp_tap() {
    with_port_type("tap", download_50mb_and_iperf3_both_ways);
}

/// Where no XDP program attaches (native mode asked on a veth whose MTU is past what XDP
/// takes), a dedicated uplink is served by a packet socket, and says so.
fn a_dedicated_uplink_falls_back_to_a_packet_socket() {
    require_root();
    let w = world();
    let (d, cs) = egress(&w, "fb", "10.82.0.0/24", &["c"]);
    w.host
        .exec_ok(&["ip", "link", "set", &w.uplink, "mtu", "9000"]);
    let peer = format!("{}p", w.host.name);
    w.ext.exec_ok(&["ip", "link", "set", &peer, "mtu", "9000"]);
    set_uplink_with(&d, &w, &["--xdp-mode", "native"]);
    let up = d.json(&["uplink", "show"]);
    assert_eq!(up["socket"], "af_packet", "{up}");
    assert_eq!(up["xdp_mode"], "none", "{up}");
    assert!(
        d.log().contains("serving it with a packet socket"),
        "a warning says why: {}",
        d.log()
    );
    let dir = TempDir::new("fb");
    write_blob(&dir.path("blob"), 5);
    let _http = http_server(&w.ext, &dir, &dir.path("server.log"));
    let got = dir.path("got");
    let out = cs[0].exec(&[
        "curl",
        "-sS",
        "--max-time",
        "30",
        "-o",
        got.to_str().unwrap(),
        &format!("http://{SERVER}:8080/blob"),
    ]);
    assert!(
        out.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sha256_of(&got), sha256_of(&dir.path("blob")));
    // A shared uplink has no such fallback: its program is what keeps the host's traffic.
    d.ok(&["uplink", "rm"]);
    let (code, msg) = d.err(&["uplink", "set", &w.uplink, "--type", "packet"]);
    assert_eq!(code, "invalid_argument", "{msg}");
}

#[test]
fn packet_socket_fallback() {
    with_port_type("tap", a_dedicated_uplink_falls_back_to_a_packet_socket);
}

#[test]
fn bulk_tcp_packet_uplink() {
    with_port_type("tap", download_50mb_and_iperf3_through_a_packet_socket);
}

#[test]
fn bulk_tcp_afxdp() {
    with_port_type("afxdp", download_50mb_and_iperf3_both_ways);
}

// ---- 2. conntrack entries appear, expire, are flushed ----

const UDP_SINK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
echo = sys.argv[3] == "echo"
print("ready", flush=True)
while True:
    d, a = s.recvfrom(65535)
    print("got", len(d), a[0], a[1], flush=True)
    if echo:
        s.sendto(d, a)
"#;

const UDP_ASK: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", int(sys.argv[3])))
s.settimeout(5)
s.sendto(b"ping", (sys.argv[1], int(sys.argv[2])))
print(s.recv(100).decode())
"#;

fn conntrack_entries_appear_expire_and_are_flushed() {
    require_root();
    let w = world();
    let d = Daemon::start_with(Some(&w.host), &[]);
    d.ok(&["network", "create", "ta", "--subnet", "10.82.0.0/24"]);
    d.ok(&["network", "create", "tb", "--subnet", "10.83.0.0/24"]);
    let ca = Netns::new("ca");
    let cb = Netns::new("cb");
    d.ok(&["add-port", "ta", "--netns", &ca.name, "--name", "ca"]);
    d.ok(&["add-port", "tb", "--netns", &cb.name, "--name", "cb"]);
    set_uplink(&d, &w);
    let tmp = TempDir::new("ct");
    let sink_log = tmp.path("sink.log");
    let echo_log = tmp.path("echo.log");
    let _sink = py_bg(&w.ext, UDP_SINK, &[SERVER, "7001", "sink"], &sink_log);
    let _echo = py_bg(&w.ext, UDP_SINK, &[SERVER, "7002", "echo"], &echo_log);
    wait_for_line(&sink_log, "ready");
    wait_for_line(&echo_log, "ready");

    // From tb: one datagram nobody answers, one exchange that is answered.
    cb.exec_ok(&[
        "bash",
        "-c",
        &format!("echo hello > /dev/udp/{SERVER}/7001"),
    ]);
    wait_for_line(&sink_log, "got");
    assert_eq!(py(&cb, UDP_ASK, &[SERVER, "7002", "40702"]).trim(), "ping");
    let rows = flows(&d, Some("tb"));
    let find = |rows: &[Value], dport: u64| {
        rows.iter()
            .find(|r| r["proto"] == "udp" && r["dst"] == SERVER && r["dport"] == dport)
            .cloned()
            .unwrap_or_else(|| panic!("no UDP flow to port {dport}: {rows:?}"))
    };
    let unreplied = find(&rows, 7001);
    assert_eq!(unreplied["state"], "UNREPLIED", "{unreplied}");
    assert_eq!(unreplied["network"], "tb");
    assert!(unreplied["expires_in_secs"].as_u64().unwrap() <= 30);
    assert_eq!(unreplied["packets_in"], 0);
    let replied = find(&rows, 7002);
    assert_eq!(replied["state"], "REPLIED", "{replied}");
    assert_eq!(replied["sport"], 40702);
    assert_eq!(
        replied["nat_port"], 40702,
        "dedicated mode keeps a free port"
    );
    assert!(replied["expires_in_secs"].as_u64().unwrap() > 30);
    assert!(
        replied["packets_out"].as_u64() >= Some(1) && replied["packets_in"].as_u64() >= Some(1)
    );
    // What the server saw is the uplink's address and the flow's NAT port.
    let echo = std::fs::read_to_string(&echo_log).unwrap();
    assert!(echo.contains("got 4 192.0.2.2 40702"), "{echo}");

    // From ta: a TCP connection refused by the server's kernel (RST): CLOSE, gone in 10 s.
    let refused = ca.exec(&["bash", "-c", &format!("echo > /dev/tcp/{SERVER}/9")]);
    let rst_at = Instant::now();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("refused"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let rows = flows(&d, Some("ta"));
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["proto"], "tcp");
    assert_eq!(rows[0]["dport"], 9);
    assert_eq!(rows[0]["state"], "CLOSE", "{rows:?}");
    assert!(rows[0]["expires_in_secs"].as_u64().unwrap() <= 10);
    let before = ct_stats(&d);
    assert_eq!(before["entries"], 3, "{before}");

    // Flushing tb leaves ta's flow alone.
    d.ok(&["conntrack", "flush", "--network", "tb"]);
    assert!(flows(&d, Some("tb")).is_empty());
    assert_eq!(flows(&d, Some("ta")).len(), 1);
    assert_eq!(ct_stats(&d)["counters"]["flushed"], 2);

    // The closed flow times out by itself (swept: counted as expired).
    let expired0 = before["counters"]["expired"].as_u64().unwrap();
    assert!(
        wait_until(15, || flows(&d, None).is_empty()
            && ct_stats(&d)["counters"]["expired"].as_u64().unwrap() > expired0),
        "the CLOSE flow expires: {:?} {}",
        flows(&d, None),
        ct_stats(&d)
    );
    let waited = rst_at.elapsed();
    assert!(
        waited >= Duration::from_secs(8),
        "gone after its timeout, not before ({waited:?})"
    );
    eprintln!("CLOSE flow gone {waited:?} after the RST");
    assert_eq!(ct_stats(&d)["entries"], 0);

    // A new flow, then a flush of everything.
    assert!(ca.ping(SERVER, 1));
    assert_eq!(flows(&d, None).len(), 1);
    assert!(d.ok(&["conntrack", "flush"]).contains('1'));
    assert!(flows(&d, None).is_empty());
    let after = ct_stats(&d);
    assert_eq!(after["entries"], 0);
    assert_eq!(after["counters"]["flushed"], 3);
}

#[test]
fn conntrack_lifecycle() {
    with_port_type("tap", conntrack_entries_appear_expire_and_are_flushed);
}

// ---- 3. a full table ----

fn a_full_table_refuses_new_flows_while_an_established_one_flows() {
    require_root();
    let w = world();
    let (d, cs) = egress(&w, "full", "10.84.0.0/24", &["c"]);
    let c = &cs[0];
    set_uplink_with(&d, &w, &["--conntrack-max", "4"]);
    assert_eq!(ct_stats(&d)["max"], 4);
    let dir = TempDir::new("full");
    write_blob(&dir.path("blob"), 4);
    let body = std::fs::read(dir.path("blob")).unwrap();
    let _http = http_server(&w.ext, &dir, &dir.path("server.log"));
    // ~10 s at 400 KiB/s: long enough to fill the table and be refused behind it, even on a
    // loaded machine (the suite runs this beside bulk transfers).
    let got = dir.path("got");
    let mut curl = Bg(Command::new("ip")
        .args(["netns", "exec", &c.name, "curl", "-sS", "--max-time", "30"])
        .args(["--limit-rate", "400K", "-o"])
        .arg(&got)
        .arg(format!("http://{SERVER}:8080/blob"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    assert!(
        wait_until(10, || flows(&d, None)
            .iter()
            .any(|r| r["proto"] == "tcp" && r["state"] == "ESTABLISHED")),
        "the download is established: {:?}",
        flows(&d, None)
    );
    // Three more flows fill the table.
    for port in 7101..7104 {
        c.exec_ok(&["bash", "-c", &format!("echo x > /dev/udp/{SERVER}/{port}")]);
    }
    assert!(
        wait_until(5, || ct_stats(&d)["entries"] == 4),
        "{}",
        ct_stats(&d)
    );
    // New flows are refused and counted: a ping, a second download, another datagram.
    let refused0 = ct_stats(&d)["counters"]["refused_full"].as_u64().unwrap();
    assert!(!c.ping(SERVER, 1), "no new ICMP flow");
    let second = c.exec(&[
        "curl",
        "-sS",
        "--max-time",
        "1",
        "-o",
        "/dev/null",
        &format!("http://{SERVER}:8080/blob"),
    ]);
    assert!(!second.status.success(), "no new TCP flow");
    c.exec_ok(&["bash", "-c", &format!("echo x > /dev/udp/{SERVER}/7104")]);
    let stats = ct_stats(&d);
    let refused = stats["counters"]["refused_full"].as_u64().unwrap() - refused0;
    assert!(refused >= 3, "ping, SYN(s), datagram refused: {stats}");
    assert_eq!(stats["entries"], 4);
    assert!(drops(&d, "c", "conntrack_full") >= 3);
    assert!(
        curl.0.try_wait().unwrap().is_none(),
        "the download was still going while new flows were refused"
    );
    // The established download finishes, every byte intact.
    let status = curl.0.wait().unwrap();
    let mut err = String::new();
    if let Some(mut e) = curl.0.stderr.take() {
        use std::io::Read;
        let _ = e.read_to_string(&mut err);
    }
    assert!(status.success(), "download: {err}");
    assert!(std::fs::read(&got).unwrap() == body, "4 MB arrive intact");
    // Room again after a flush: new flows pass.
    d.ok(&["conntrack", "flush"]);
    assert!(c.ping(SERVER, 1));
}

#[test]
fn full_table() {
    with_port_type(
        "tap",
        a_full_table_refuses_new_flows_while_an_established_one_flows,
    );
}

/// One container floods new flows: it gets its share of the table (`--conntrack-per-source`),
/// refused beyond it and counted, while its neighbour still opens flows.
fn one_container_gets_its_share_of_the_table() {
    require_root();
    let w = world();
    let (d, cs) = egress(&w, "share", "10.85.0.0/24", &["a", "b"]);
    set_uplink_with(&d, &w, &["--conntrack-per-source", "5"]);
    assert_eq!(ct_stats(&d)["per_source_max"], 5);
    let (a, b) = (&cs[0], &cs[1]);
    for port in 7201..7211 {
        a.exec_ok(&["bash", "-c", &format!("echo x > /dev/udp/{SERVER}/{port}")]);
    }
    let stats = ct_stats(&d);
    assert_eq!(stats["entries"], 5, "a has its five flows: {stats}");
    assert_eq!(stats["counters"]["refused_source_limit"], 5, "{stats}");
    assert_eq!(stats["counters"]["refused_full"], 0, "{stats}");
    assert!(drops(&d, "a", "ct_source_limit") >= 5);
    assert!(!a.ping(SERVER, 1), "a's new flows are refused");
    // b is another source: its flows pass, the table is far from full.
    assert!(b.ping(SERVER, 2), "b still reaches the outside");
    for port in 7301..7304 {
        b.exec_ok(&["bash", "-c", &format!("echo x > /dev/udp/{SERVER}/{port}")]);
    }
    let rows = flows(&d, None);
    let of = |ip: &str| rows.iter().filter(|r| r["src"] == ip).count();
    assert_eq!(of("10.85.0.2"), 5, "{rows:?}");
    assert!(of("10.85.0.3") >= 4, "{rows:?}");
    // A bad limit is a clear error; 0 lifts the bound.
    let (code, _) = d.err(&[
        "uplink",
        "set",
        &w.uplink,
        "--mode",
        "dedicated",
        "--ip",
        "192.0.2.2/24",
        "--gateway",
        "192.0.2.1",
        "--conntrack-per-source",
        "99999999999",
    ]);
    assert_eq!(code, "invalid_argument");
}

#[test]
fn per_source_share() {
    with_port_type("tap", one_container_gets_its_share_of_the_table);
}

// ---- 4. ICMP errors from outside ----

/// A connected UDP socket from a fixed port: send, then wait for the answer or the error.
const UDP_CONNECTED: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("", int(sys.argv[3])))
s.connect((sys.argv[1], int(sys.argv[2])))
s.settimeout(5)
s.send(b"anyone?")
try:
    s.recv(100)
    print("answered")
except ConnectionRefusedError:
    print("refused")
except socket.timeout:
    print("timeout")
"#;

/// In the external namespace: a UDP listener (so the kernel sends no port unreachable) and a
/// raw socket that sees each datagram to it as it arrived (IP header included) and answers it
/// with ICMP fragmentation needed quoting exactly that header, as a router on a narrower link
/// would.
const FRAG_NEEDED_ROUTER: &str = r#"
import socket, struct, sys
server, port, mtu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind((server, port))
raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
print("ready", flush=True)
while True:
    pkt = raw.recv(65535)
    ihl = (pkt[0] & 15) * 4
    sport, dport = struct.unpack("!HH", pkt[ihl:ihl + 4])
    if dport != port:
        continue
    msg = struct.pack("!BBHHH", 3, 4, 0, 0, mtu) + pkt[:ihl + 8]
    msg = msg[:2] + struct.pack("!H", csum(msg)) + msg[4:]
    src = socket.inet_ntoa(pkt[12:16])
    icmp.sendto(msg, (src, 0))
    print("sent", src, sport, flush=True)
"#;

/// A connected UDP socket with IP_RECVERR and DF: sends, then reads the ICMP error the kernel
/// queued for it (errno, origin, type, code, info, offender) and the path MTU it learnt.
const UDP_PMTU: &str = r#"
import socket, struct, sys, time
IP_RECVERR, IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 11, 10, 2, 14
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_IP, IP_RECVERR, 1)
s.setsockopt(socket.SOL_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
s.bind(("", int(sys.argv[3])))
s.connect((sys.argv[1], int(sys.argv[2])))
s.send(b"x" * 1000)
deadline = time.time() + 5
while time.time() < deadline:
    try:
        _, anc, _, _ = s.recvmsg(2048, 512, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
    except BlockingIOError:
        time.sleep(0.05)
        continue
    for level, kind, d in anc:
        if level == socket.SOL_IP and kind == IP_RECVERR:
            errno, origin, t, code, _, info, _ = struct.unpack("=IBBBBII", d[:16])
            offender = socket.inet_ntoa(d[20:24])
            mtu = s.getsockopt(socket.SOL_IP, IP_MTU)
            print(errno, origin, t, code, info, offender, mtu)
            sys.exit(0)
print("no error")
sys.exit(1)
"#;

fn icmp_errors_reach_the_right_container_with_the_quote_restored() {
    require_root();
    let w = world();
    let (d, cs) = egress(&w, "icmp", "10.85.0.0/24", &["c1", "c2"]);
    let (c1, c2) = (&cs[0], &cs[1]);
    set_uplink(&d, &w);
    assert!(c1.ping(SERVER, 1));

    // Port unreachable from the server's kernel: both containers use source port 40000 to the
    // same closed port, so the second is translated to a NAT port, and its error only reaches
    // its socket if the quoted header is restored to 10.85.0.3:40000.
    for c in [c1, c2] {
        let out = py(c, UDP_CONNECTED, &[SERVER, "9999", "40000"]);
        assert_eq!(out.trim(), "refused", "{}: ECONNREFUSED", c.name);
    }
    let rows = flows(&d, None);
    let nat_port = |src: &str, dport: u64| {
        rows.iter()
            .find(|r| r["src"] == src && r["dport"] == dport)
            .unwrap_or_else(|| panic!("no flow from {src} to {dport}: {rows:?}"))["nat_port"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(nat_port("10.85.0.2", 9999), 40000);
    assert_ne!(nat_port("10.85.0.3", 9999), 40000, "c2 was translated");

    // Fragmentation needed, crafted by a "router" in ext quoting the translated datagram.
    let tmp = TempDir::new("icmp");
    let log = tmp.path("router.log");
    let _router = py_bg(&w.ext, FRAG_NEEDED_ROUTER, &[SERVER, "7777", "1200"], &log);
    wait_for_line(&log, "ready");
    for c in [c1, c2] {
        let out = py(c, UDP_PMTU, &[SERVER, "7777", "40001"]);
        let f: Vec<&str> = out.split_whitespace().collect();
        // EMSGSIZE, from ICMP, type 3 code 4, MTU 1200, sent by 192.0.2.1; the route learnt it.
        assert_eq!(
            f,
            ["90", "2", "3", "4", "1200", "192.0.2.1", "1200"],
            "{}: {out}",
            c.name
        );
    }
    let rows = flows(&d, None);
    let p2 = rows
        .iter()
        .find(|r| r["src"] == "10.85.0.3" && r["dport"] == 7777)
        .unwrap()["nat_port"]
        .as_u64()
        .unwrap();
    assert_ne!(p2, 40001);
    let router = std::fs::read_to_string(&log).unwrap();
    assert!(
        router.contains("sent 192.0.2.2 40001") && router.contains(&format!("sent 192.0.2.2 {p2}")),
        "the router quoted both translated datagrams: {router}"
    );
    let up = d.json(&["uplink", "show"]);
    assert!(
        up["counters"]["icmp_errors_in"].as_u64().unwrap() >= 4,
        "{up}"
    );
}

#[test]
fn icmp_errors() {
    with_port_type(
        "tap",
        icmp_errors_reach_the_right_container_with_the_quote_restored,
    );
}

// ---- 5. fragments ----

const UDP_ECHO_BIG: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_IP, 10, 0)  # IP_MTU_DISCOVER = IP_PMTUDISC_DONT: fragment freely
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    d, a = s.recvfrom(65535)
    print("got", len(d), a[0], flush=True)
    s.sendto(d, a)
"#;

const UDP_BIG: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_IP, 10, 0)
s.settimeout(5)
data = bytes((i * 7 + 3) % 251 for i in range(int(sys.argv[3])))
s.sendto(data, (sys.argv[1], int(sys.argv[2])))
back, _ = s.recvfrom(65535)
print(len(back), back == data)
"#;

fn a_fragmented_datagram_arrives_whole_both_ways() {
    require_root();
    let w = world();
    let (d, cs) = egress(&w, "frag", "10.86.0.0/24", &["c"]);
    let c = &cs[0];
    set_uplink(&d, &w);
    let tmp = TempDir::new("frag");
    let log = tmp.path("echo.log");
    let _echo = py_bg(&w.ext, UDP_ECHO_BIG, &[SERVER, "7000", ""], &log);
    wait_for_line(&log, "ready");
    // The next hop is resolved first, so the datagram's fragments do not wait for it.
    assert!(c.ping(SERVER, 1));
    let out = py(c, UDP_BIG, &[SERVER, "7000", "4000"]);
    assert_eq!(
        out.trim(),
        "4000 True",
        "the 4000-byte echo comes back byte-exact"
    );
    let echo = std::fs::read_to_string(&log).unwrap();
    assert!(
        echo.contains("got 4000 192.0.2.2"),
        "the server reassembled 4000 bytes from the uplink's address: {echo}"
    );
    // Three fragments each way (MTU 1500), all on the one flow.
    let rows = flows(&d, None);
    let r = rows
        .iter()
        .find(|r| r["proto"] == "udp" && r["dport"] == 7000)
        .unwrap_or_else(|| panic!("{rows:?}"));
    assert_eq!(r["packets_out"], 3, "{r}");
    assert_eq!(r["packets_in"], 3, "{r}");
    assert_eq!(r["bytes_out"], 4008 + 3 * 20, "{r}");
    assert_eq!(r["bytes_in"], 4008 + 3 * 20, "{r}");
    assert_eq!(drops(&d, "c", "bad_fragment"), 0);
    assert_eq!(
        drops(&d, &format!("uplink:{}", w.uplink), "bad_fragment"),
        0
    );
}

#[test]
fn fragments_tap() {
    with_port_type("tap", a_fragmented_datagram_arrives_whole_both_ways);
}

#[test]
fn fragments_afxdp() {
    with_port_type("afxdp", a_fragmented_datagram_arrives_whole_both_ways);
}

// ---- 6. malformed frames ----

/// Sends malformed frames out of IFACE with an AF_PACKET socket: `inside` (a container to its
/// gateway's MAC, for SERVER) or `outside` (the external router to the uplink's MAC). Prints
/// one name per frame sent.
const MANGLER: &str = r#"
import socket, struct, sys
side, ifname, dmac, smac, sip, dip = sys.argv[1:7]
live = [int(p) for p in sys.argv[7:]]
M = lambda m: bytes.fromhex(m.replace(":", ""))
def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
def ip(proto, payload, src=sip, dst=dip, ihl=5, total=None, frag=0, ident=0x1234, ver=4):
    opts = b"\0" * (max(ihl, 5) * 4 - 20)
    tl = 20 + len(opts) + len(payload) if total is None else total
    h = struct.pack("!BBHHHBBH4s4s", (ver << 4) | ihl, 0, tl, ident, frag, 64, proto, 0,
                    socket.inet_aton(src), socket.inet_aton(dst)) + opts
    return h[:10] + struct.pack("!H", csum(h)) + h[12:] + payload
def eth(payload, etype=0x0800, dst=None):
    return M(dst or dmac) + M(smac) + struct.pack("!H", etype) + payload
def udp(sp, dp, data, length=None):
    return struct.pack("!HHHH", sp, dp, 8 + len(data) if length is None else length, 0) + data
def tcp(sp, dp, flags, doff):
    return struct.pack("!HHIIBBHHH", sp, dp, 1, 0, doff << 4, flags, 64240, 0, 0)
def icmp(t, code, rest, body):
    m = struct.pack("!BBHI", t, code, 0, rest) + body
    return m[:2] + struct.pack("!H", csum(m)) + m[4:]
good = ip(17, udp(45000, 9, b"x" * 16))
frames = [
    ("bad_ip", eth(good[:10])),                                  # truncated IPv4 header
    ("bad_ip", eth(ip(17, udp(45000, 9, b"x" * 16), ihl=3))),    # IHL under 5
    ("bad_ip", eth(ip(17, udp(45000, 9, b"x" * 16), total=200))),  # longer than the frame
    ("bad_ip", eth(ip(17, udp(45000, 9, b"x" * 16), total=12))),   # shorter than its header
    ("bad_ip", eth(ip(17, udp(45000, 9, b"x"), ver=6))),         # not version 4
    ("bad_ip", eth(ip(17, b"\x01\x02\x03\x04"))),                # UDP header cut short
    ("bad_fragment", eth(ip(17, b"y" * 64, frag=185, ident=0x4444))),  # no first fragment
]
if side == "inside":
    frames += [
        ("bad_ip", eth(ip(6, tcp(45001, 80, 0x02, 2)))),         # TCP data offset 8 bytes
        ("bad_ip", eth(ip(6, tcp(45001, 80, 0x02, 15)))),        # TCP data offset past the end
        # An ICMP error from a container is not something the switch masquerades.
        ("nat_unsupported", eth(ip(1, icmp(3, 3, 0, good[:28])))),
        # Overlapping fragments: forwarded as fragments are (the receiver discards them).
        ("forwarded", eth(ip(17, udp(45002, 9, b"a" * 16), frag=0x2000, ident=0x5555))),
        ("forwarded", eth(ip(17, b"b" * 24, frag=1, ident=0x5555))),
    ]
else:
    rst = 0x04 | 0x10
    frames += [
        ("bad_arp", eth(b"\x00\x01\x08\x00\x06", etype=0x0806)),    # ARP cut short
        ("not_ours", eth(good, dst="02:00:00:00:00:99")),           # another MAC
        ("not_ours", eth(ip(17, udp(9, 45000, b"x"), dst="192.0.2.99"))),  # another address
        ("not_ours", eth(b"\x60" + b"\0" * 39, etype=0x86dd)),     # IPv6
        # An RST for a live flow, with a data offset under / past the header.
        ("bad_ip", eth(ip(6, tcp(8080, live[0], rst, 2)))),
        ("bad_ip", eth(ip(6, tcp(8080, live[0], rst, 15)))),
        # ICMP errors: a quote too short to hold a header and 8 bytes; a quoted header whose
        # IHL runs past the quote; a well-formed quote of a flow that does not exist.
        ("bad_ip", eth(ip(1, icmp(3, 4, 1200, b"\x45" + b"\0" * 7)))),
        ("bad_ip", eth(ip(1, icmp(3, 4, 1200, b"\x4f" + b"\0" * 27)))),
        ("no_conntrack", eth(ip(1, icmp(3, 3, 0, ip(17, udp(1, 2, b""), src=dip, dst=sip))))),
        ("no_conntrack", eth(ip(17, udp(9, 1, b"stray")))),
        ("no_conntrack", eth(ip(1, icmp(99, 0, 0, b"what")))),
    ]
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((ifname, 0))
for name, f in frames:
    s.send(f)
    print(name)
"#;

fn counts(names: &str) -> std::collections::BTreeMap<String, u64> {
    let mut m = std::collections::BTreeMap::new();
    for n in names.lines() {
        *m.entry(n.trim().to_string()).or_default() += 1;
    }
    m
}

fn malformed_frames_are_counted_drops_and_the_switch_carries_on() {
    require_root();
    let w = world();
    let (d, cs) = egress(&w, "junk", "10.87.0.0/24", &["c"]);
    let c = &cs[0];
    set_uplink(&d, &w);
    let up = format!("uplink:{}", w.uplink);
    let dir = TempDir::new("junk");
    std::fs::write(dir.path("page"), b"still here").unwrap();
    let _http = http_server(&w.ext, &dir, &dir.path("server.log"));
    let url = format!("http://{SERVER}:8080/page");
    assert_eq!(
        c.exec_ok(&["curl", "-sS", "--max-time", "10", &url]),
        "still here"
    );
    // The page's connection is closed and tracked (TIME_WAIT): the outside's junk aims at it.
    let rows = flows(&d, None);
    let live = rows
        .iter()
        .find(|r| r["proto"] == "tcp" && r["dport"] == 8080)
        .unwrap_or_else(|| panic!("{rows:?}"));
    let live_state = live["state"].clone();
    let live_port = live["nat_port"].to_string();

    let reasons = [
        "bad_ip",
        "bad_fragment",
        "nat_unsupported",
        "bad_arp",
        "not_ours",
        "no_conntrack",
    ];
    let snapshot =
        |port: &str| -> Vec<u64> { reasons.iter().map(|r| drops(&d, port, r)).collect() };
    let (c0, u0) = (snapshot("c"), snapshot(&up));

    // From the container, to its gateway's MAC.
    let gw_mac = d.json(&["network", "inspect", "junk"])["gateway_mac"]
        .as_str()
        .unwrap()
        .to_string();
    let c_mac = c.exec_ok(&["cat", "/sys/class/net/eth0/address"]);
    let sent_in = counts(&py(
        c,
        MANGLER,
        &["inside", "eth0", &gw_mac, c_mac.trim(), "10.87.0.2", SERVER],
    ));
    // From outside, to the uplink's MAC.
    let up_mac = w
        .host
        .exec_ok(&["cat", &format!("/sys/class/net/{}/address", w.uplink)]);
    let peer = format!("{}p", w.host.name);
    let peer_mac = w
        .ext
        .exec_ok(&["cat", &format!("/sys/class/net/{peer}/address")]);
    let sent_out = counts(&py(
        &w.ext,
        MANGLER,
        &[
            "outside",
            &peer,
            up_mac.trim(),
            peer_mac.trim(),
            SERVER,
            "192.0.2.2",
            &live_port,
        ],
    ));
    assert!(sent_in.values().sum::<u64>() >= 12 && sent_out.values().sum::<u64>() >= 18);

    // Every malformed frame is a counted drop under its reason, on the port it came in by.
    let check = |port: &str, before: &[u64], sent: &std::collections::BTreeMap<String, u64>| {
        let ok = wait_until(5, || {
            let now = snapshot(port);
            reasons.iter().enumerate().all(|(i, r)| {
                let want = sent.get(*r).copied().unwrap_or(0);
                let got = now[i] - before[i];
                // Other frames may be not ours or untracked too (stray replies, probes).
                if matches!(*r, "not_ours" | "no_conntrack") {
                    got >= want
                } else {
                    got == want
                }
            })
        });
        let now = snapshot(port);
        let got: Vec<(&str, u64)> = reasons
            .iter()
            .enumerate()
            .map(|(i, r)| (*r, now[i] - before[i]))
            .collect();
        assert!(ok, "{port}: sent {sent:?}, counted {got:?}");
    };
    check("c", &c0, &sent_in);
    check(&up, &u0, &sent_out);

    // The daemon is alive, the live flow untouched by the bad RSTs, and traffic flows.
    assert!(sh("kill", &["-0", &d.pid().to_string()]).status.success());
    d.ok(&["show"]);
    let rows = flows(&d, None);
    let still = rows
        .iter()
        .find(|r| r["proto"] == "tcp" && r["dport"] == 8080)
        .unwrap_or_else(|| panic!("the flow survives: {rows:?}"));
    assert_eq!(still["state"], live_state, "{still}");
    assert_eq!(
        c.exec_ok(&["curl", "-sS", "--max-time", "10", &url]),
        "still here"
    );
    assert!(c.ping(SERVER, 1));
    assert!(!d.log().contains("panicked"), "{}", d.log());
}

#[test]
fn malformed_frames() {
    with_port_type(
        "tap",
        malformed_frames_are_counted_drops_and_the_switch_carries_on,
    );
}
