//! `vswitchctl capture`: pcaps of what a port receives and sends, read back by a real tcpdump
//! (from a file and streamed through a pipe); frames as received or as the NAT rewrote them;
//! and a capture that cannot keep up leaves frames out of the capture (and says how many)
//! while the switch forwards every frame of a flood.

mod common;

use std::io::Read;
use std::process::{Child, Command, Stdio};

use common::egress::*;
use common::*;

/// vswitchctl with the daemon's socket, in the background.
fn ctl_bg(d: &Daemon, args: &[&str], stdout: Stdio) -> Child {
    Command::new(bin("vswitchctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .stdout(stdout)
        .stderr(Stdio::piped())
        .spawn()
        .expect("vswitchctl")
}

/// Interrupts a background vswitchctl (by its PID) and returns its stderr.
fn interrupt(mut c: Child) -> String {
    must("kill", &["-INT", &c.id().to_string()]);
    assert!(
        wait_until(10, || c.try_wait().ok().flatten().is_some()),
        "vswitchctl capture did not stop at SIGINT"
    );
    let mut err = String::new();
    c.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    err
}

fn tcpdump_read(file: &std::path::Path) -> String {
    let out = Command::new("tcpdump")
        .args(["-n", "-e", "-r"])
        .arg(file)
        .output()
        .expect("tcpdump");
    assert!(
        out.status.success(),
        "tcpdump -r: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A capture has started once the daemon has it (its header line or the pcap header is out).
fn started(file: &std::path::Path) -> bool {
    std::fs::metadata(file).is_ok_and(|m| m.len() >= 24)
}

/// A daemon with network `net` on `subnet` (a /24 written `A.B.C`) and ports a (.2) and b
/// (.3) that reach each other; returns a's MAC too.
fn two_ports(net: &str, subnet: &str, tag: &str) -> (Daemon, Netns, Netns, String) {
    require_root();
    let d = Daemon::start();
    d.ok(&[
        "network",
        "create",
        net,
        "--subnet",
        &format!("{subnet}.0/24"),
    ]);
    let (a, b) = (
        Netns::new(&format!("{tag}a")),
        Netns::new(&format!("{tag}b")),
    );
    d.ok(&["add-port", net, "--netns", &a.name, "--name", "a"]);
    d.ok(&["add-port", net, "--netns", &b.name, "--name", "b"]);
    d.wait_up(&["a", "b"]);
    assert!(a.ping(&format!("{subnet}.3"), 1), "a reaches b");
    let mac_a = d.port("a")["mac"].as_str().unwrap().to_string();
    (d, a, b, mac_a)
}

fn pings_are_captured_and_read_by_tcpdump() {
    let (d, a, _b, mac_a) = two_ports("cap", "10.88.90", "cp");
    let (ip_a, ip_b) = ("10.88.90.2", "10.88.90.3");
    let dir = TempDir::new("cpt");

    // Into a file, both directions, until Ctrl-C.
    let file = dir.path("a.pcap");
    let c = ctl_bg(
        &d,
        &["capture", "a", "-w", file.to_str().unwrap()],
        Stdio::null(),
    );
    assert!(wait_until(10, || started(&file)), "the capture started");
    assert!(a.ping(ip_b, 3), "pings while capturing");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let err = interrupt(c);
    assert!(err.contains("frame(s) captured, 0 left out"), "{err}");
    let text = tcpdump_read(&file);
    let requests = text
        .lines()
        .filter(|l| l.contains(&format!("{ip_a} > {ip_b}: ICMP echo request")))
        .count();
    let replies = text
        .lines()
        .filter(|l| l.contains(&format!("{ip_b} > {ip_a}: ICMP echo reply")))
        .count();
    assert_eq!((requests, replies), (3, 3), "{text}");
    assert!(text.contains(&mac_a), "Ethernet headers are there: {text}");

    // Streamed to tcpdump through a pipe, received frames only, ending after --count.
    let out = dir.path("piped.txt");
    let sh = format!(
        "{} --socket {} capture a --direction in -c 3 -w - | tcpdump -n -r - > {} 2>/dev/null",
        bin("vswitchctl").display(),
        d.socket.display(),
        out.display()
    );
    let mut p = Command::new("sh")
        .args(["-c", &sh])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(a.ping(ip_b, 3));
    assert!(
        wait_until(10, || p.try_wait().ok().flatten().is_some()),
        "the capture ends after 3 frames"
    );
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines.iter().all(|l| !l.contains("echo reply")),
        "--direction in: {text}"
    );
    assert!(text.contains("ICMP echo request"), "{text}");
    let mut err = String::new();
    p.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(err.contains("3 frame(s) captured"), "{err}");

    // The text form: a line per frame, in the flow syntax.
    let c = ctl_bg(&d, &["capture", "b", "-c", "4"], Stdio::piped());
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(a.ping(ip_b, 2));
    let o = c.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        text.contains(&format!("out 98 bytes icmp,dl_src={mac_a}"))
            && text.contains("in  98 bytes icmp,"),
        "{text}"
    );

    // Bad requests.
    for (args, want) in [
        (vec!["capture", "nope"], "not found"),
        (vec!["capture", "a", "--snaplen", "0"], "snaplen"),
        (vec!["capture", "a", "-c", "0"], "count"),
    ] {
        let (_, msg) = d.err(&args);
        assert!(msg.contains(want), "{args:?}: {msg}");
    }
}

fn received_frames_as_read_or_as_rewritten_by_nat() {
    require_root();
    let w = world();
    let d = Daemon::start_with(Some(&w.host), &[]);
    set_uplink(&d, &w);
    d.ok(&["network", "create", "cn", "--subnet", "10.88.91.0/24"]);
    let c1 = Netns::new("cpn");
    d.ok(&["add-port", "cn", "--netns", &c1.name, "--name", "c1"]);
    d.wait_up(&["c1"]);
    assert!(c1.ping(SERVER, 1), "c1 reaches the internet");
    let dir = TempDir::new("cpn");
    let (asread, rewritten, uplink) = (
        dir.path("read.pcap"),
        dir.path("rewritten.pcap"),
        dir.path("uplink.pcap"),
    );
    let caps = [
        ctl_bg(
            &d,
            &[
                "capture",
                "c1",
                "--direction",
                "in",
                "-w",
                asread.to_str().unwrap(),
            ],
            Stdio::null(),
        ),
        ctl_bg(
            &d,
            &[
                "capture",
                "c1",
                "--direction",
                "in",
                "--rewritten",
                "-w",
                rewritten.to_str().unwrap(),
            ],
            Stdio::null(),
        ),
        ctl_bg(
            &d,
            &[
                "capture",
                "uplink",
                "--direction",
                "out",
                "-w",
                uplink.to_str().unwrap(),
            ],
            Stdio::null(),
        ),
    ];
    for f in [&asread, &rewritten, &uplink] {
        assert!(wait_until(10, || started(f)), "capture into {f:?} started");
    }
    // Three run: a fourth is fine, a fifth is one too many.
    let fourth = ctl_bg(
        &d,
        &["capture", "c1", "-w", dir.path("4.pcap").to_str().unwrap()],
        Stdio::null(),
    );
    assert!(wait_until(10, || started(&dir.path("4.pcap"))));
    let (code, msg) = d.err(&["capture", "c1"]);
    assert_eq!(code, "busy", "{msg}");
    assert!(msg.contains("captures are running"), "{msg}");
    interrupt(fourth);

    assert!(c1.ping(SERVER, 2));
    std::thread::sleep(std::time::Duration::from_millis(300));
    for c in caps {
        interrupt(c);
    }
    let req = |s: &str, from: &str| {
        s.lines()
            .filter(|l| l.contains(&format!("{from} > {SERVER}: ICMP echo request")))
            .count()
    };
    let t = tcpdump_read(&asread);
    assert_eq!(req(&t, "10.88.91.2"), 2, "as read, from the container: {t}");
    let t = tcpdump_read(&rewritten);
    assert_eq!(req(&t, "192.0.2.2"), 2, "as the NAT left them: {t}");
    assert_eq!(req(&t, "10.88.91.2"), 0, "{t}");
    let t = tcpdump_read(&uplink);
    assert_eq!(req(&t, "192.0.2.2"), 2, "as sent on the uplink: {t}");
}

fn a_capture_that_cannot_keep_up_leaves_frames_out_not_the_switch() {
    let (d, a, _b, mac_a) = two_ports("cf", "10.88.92", "cf");
    // A reader that reads nothing: the pipe and the socket fill, then the capture's queue.
    let mut c = ctl_bg(
        &d,
        &["capture", "a", "--direction", "in", "-w", "-"],
        Stdio::piped(),
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let rx = |p: &str| d.stats(p)["rx_packets"].as_u64().unwrap();
    let tx = |p: &str| d.stats(p)["tx_packets"].as_u64().unwrap();
    let (rx_a, tx_b) = (rx("a"), tx("b"));
    // 100000 frames (paced so that they reach the switch) from a's own MAC to a MAC nobody has: each one flooded to b.
    let script = r#"
import socket, sys, time
src = bytes(int(x, 16) for x in sys.argv[1].split(':'))
frame = b'\x02\x00\x5e\x00\x00\x42' + src + b'\x88\xb5' + b'\0' * 46
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(('eth0', 0))
for i in range(100000):
    if i % 100 == 0:
        time.sleep(0.001)   # keeps the TAP's queue (1000 frames) from overflowing
    try:
        s.send(frame)
    except OSError:
        pass
"#;
    a.exec_ok(&["python3", "-c", script, &mac_a]);
    let settled = || {
        let r = rx("a");
        std::thread::sleep(std::time::Duration::from_millis(300));
        r == rx("a")
    };
    assert!(wait_until(10, settled));
    let (got, sent) = (rx("a") - rx_a, tx("b") - tx_b);
    assert!(got > 50_000, "the flood reached the switch: {got}");
    assert_eq!(
        sent, got,
        "every frame of the flood was forwarded despite the capture"
    );
    // Now read: the capture catches up, and says what it left out.
    let mut out = c.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = out.read_to_end(&mut sink);
        sink.len()
    });
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let err = interrupt(c);
    let bytes = reader.join().unwrap();
    let left_out: u64 = err
        .split(" frame(s) captured, ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {err}"));
    assert!(
        left_out > 10_000,
        "a capture that could not keep up left frames out: {err}"
    );
    assert!(bytes > 24, "and wrote what it kept");
    assert!(a.ping("10.88.92.3", 2), "the switch is fine");
}

#[test]
fn capture_pings_are_captured_and_read_by_tcpdump() {
    with_port_type("tap", pings_are_captured_and_read_by_tcpdump)
}

#[test]
fn capture_received_frames_as_read_or_as_rewritten_by_nat() {
    with_port_type("tap", received_frames_as_read_or_as_rewritten_by_nat)
}

#[test]
fn capture_that_cannot_keep_up_leaves_frames_out_not_the_switch() {
    with_port_type(
        "tap",
        a_capture_that_cannot_keep_up_leaves_frames_out_not_the_switch,
    )
}
