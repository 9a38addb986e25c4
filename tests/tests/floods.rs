//! Bounds on what one container costs the others (issue 18, item 2): a container that floods
//! its gateway with DNS queries, ARP requests or pings is held to its share a second
//! (`--gateway-rate`, counted `rate_limited`) while its neighbours still resolve names and
//! ping; the limit is persisted, shown, and off with 0.

mod common;

use common::*;

/// `count` frames of `kind` ("dns": A queries for `name` to the gateway; "arp": who-has
/// requests for `target`) from `ns`'s eth0 as fast as it can send them.
fn flood(ns: &Netns, kind: &str, count: u32, gateway: &str, target: &str) {
    let script = r#"
import socket, struct, sys, time
kind, n, gw, target = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
if kind == 'dns':
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    q = b''.join(bytes([len(l)]) + l.encode() for l in target.split('.')) + b'\0'
    for i in range(n):
        msg = struct.pack('>HHHHHH', i & 0xffff, 0x0100, 1, 0, 0, 0) + q + struct.pack('>HH', 1, 1)
        s.sendto(msg, (gw, 53))
else:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(('eth0', 0))
    mac = open('/sys/class/net/eth0/address').read().strip()
    me = bytes(int(x, 16) for x in mac.split(':'))
    ip = socket.inet_aton
    src = socket.inet_aton(sys.argv[5])
    frame = b'\xff' * 6 + me + b'\x08\x06' + b'\x00\x01\x08\x00\x06\x04\x00\x01' + me + src + b'\0' * 6 + ip(target)
    for i in range(n):
        if i % 100 == 0:
            time.sleep(0.001)   # the TAP's queue (1000 frames) would overflow before the switch
        try:
            s.send(frame)
        except OSError:
            pass
"#;
    let n = count.to_string();
    let me = ns
        .exec_ok(&["ip", "-4", "-o", "addr", "show", "dev", "eth0"])
        .split_whitespace()
        .nth(3)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    ns.exec_ok(&["python3", "-c", script, kind, &n, gateway, target, &me]);
}

fn limited(d: &Daemon, port: &str) -> u64 {
    d.stats(port)["drops"]["rate_limited"].as_u64().unwrap()
}

fn resolves(ns: &Netns, name: &str, gw: &str) -> bool {
    // -q: a name such as "a" is not taken for a record type.
    let out = ns.exec(&[
        "dig",
        "+short",
        "+tries=1",
        "+time=2",
        &format!("@{gw}"),
        "-q",
        name,
    ]);
    out.status.success() && !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

fn a_flooding_container_gets_its_share_and_the_others_are_served() {
    require_root();
    let mut d = Daemon::start();
    d.ok(&[
        "network",
        "create",
        "fl",
        "--subnet",
        "10.88.100.0/24",
        "--gateway-rate",
        "200",
    ]);
    d.ok(&[
        "network",
        "create",
        "nolim",
        "--subnet",
        "10.88.101.0/24",
        "--gateway-rate",
        "0",
    ]);
    d.ok(&["network", "create", "dflt", "--subnet", "10.88.102.0/24"]);
    assert_eq!(d.json(&["network", "inspect", "fl"])["gateway_rate"], 200);
    assert_eq!(d.json(&["network", "inspect", "nolim"])["gateway_rate"], 0);
    assert_eq!(
        d.json(&["network", "inspect", "dflt"])["gateway_rate"],
        1000
    );
    let (f, a, b) = (Netns::new("flf"), Netns::new("fla"), Netns::new("flb"));
    d.ok(&["add-port", "fl", "--netns", &f.name, "--name", "f"]);
    d.ok(&["add-port", "fl", "--netns", &a.name, "--name", "a"]);
    d.ok(&["add-port", "fl", "--netns", &b.name, "--name", "b"]);
    d.wait_up(&["f", "a", "b"]);
    let gw = "10.88.100.1";
    assert!(resolves(&a, "b", gw), "names resolve before the flood");

    // 20000 DNS queries from f, as fast as python sends them: most are over f's share.
    let t = std::thread::scope(|s| {
        let h = s.spawn(|| flood(&f, "dns", 20_000, gw, "a"));
        // Meanwhile a and b are served.
        let ok = (0..5).filter(|_| resolves(&a, "b", gw)).count();
        let pinged = b.ping("10.88.100.3", 3) && b.ping(gw, 2);
        h.join().unwrap();
        (ok, pinged)
    });
    assert_eq!(t.0, 5, "a resolved names all through the flood");
    assert!(t.1, "b pinged a and the gateway all through the flood");
    let dns_limited = limited(&d, "f");
    assert!(
        dns_limited > 10_000,
        "f's flood was held to its share: {dns_limited}"
    );
    assert_eq!(limited(&d, "a"), 0);
    assert_eq!(limited(&d, "b"), 0);
    let answered = d.json(&["arp", "show", "fl"])[0]["counters"]["dns_replies"]
        .as_u64()
        .unwrap();
    assert!(
        answered < 8_000,
        "the gateway answered about its share, not the flood: {answered}"
    );

    // An ARP flood the same way.
    flood(&f, "arp", 20_000, gw, "10.88.100.3");
    assert!(limited(&d, "f") > dns_limited + 10_000, "{}", d.stats("f"));
    assert!(a.ping("10.88.100.4", 2), "a still reaches b");

    // The share refills: f is served again once it stops.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert!(resolves(&f, "a", gw), "f is served again at its rate");

    // Without a limit nothing is rate-limited.
    let u = Netns::new("flu");
    d.ok(&["add-port", "nolim", "--netns", &u.name, "--name", "u"]);
    d.wait_up(&["u"]);
    flood(&u, "dns", 3000, "10.88.101.1", "u");
    assert_eq!(limited(&d, "u"), 0);

    // Persisted.
    d.stop_with(15);
    d.restart();
    assert_eq!(d.json(&["network", "inspect", "fl"])["gateway_rate"], 200);
    let (_, msg) = d.err(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.88.103.0/24",
        "--gateway-rate",
        "99999999",
    ]);
    assert!(msg.contains("gateway rate"), "{msg}");
}

#[test]
fn floods_a_flooding_container_gets_its_share_and_the_others_are_served() {
    with_port_type(
        "tap",
        a_flooding_container_gets_its_share_and_the_others_are_served,
    )
}
