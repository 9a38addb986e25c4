//! Egress through the uplink: containers reach a server in an "external" namespace through the
//! switch's own routing and masquerade. The daemon runs in a "host" namespace of the test; its
//! uplink is a veth into the external namespace (never a real interface of the machine).

mod common;

use common::egress::*;
use common::*;

fn egress_curl_ping_and_time_exceeded() {
    require_root();
    let w = world();
    let d = Daemon::start_with(Some(&w.host), &[]);
    d.ok(&["network", "create", "web", "--subnet", "10.77.0.0/24"]);
    let c1 = Netns::new("c1");
    let c2 = Netns::new("c2");
    d.ok(&["add-port", "web", "--netns", &c1.name, "--name", "c1"]);
    d.ok(&["add-port", "web", "--netns", &c2.name, "--name", "c2"]);
    // No uplink yet: nothing leaves.
    assert!(!c1.ping(SERVER, 1));
    set_uplink(&d, &w);

    let dir = TempDir::new("www");
    let body: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(dir.path("blob"), &body).unwrap();
    let log = dir.path("server.log");
    let _server = http_server(&w.ext, &dir, &log);

    for c in [&c1, &c2] {
        let out = c.exec(&[
            "curl",
            "-sS",
            "--max-time",
            "20",
            "-o",
            "-",
            &format!("http://{SERVER}:8080/blob"),
        ]);
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stdout == body,
            "the page arrives intact ({} bytes)",
            out.stdout.len()
        );
    }
    let served = std::fs::read_to_string(&log).unwrap();
    let clients = served_clients(&log, "/blob");
    assert_eq!(
        clients,
        vec!["192.0.2.2", "192.0.2.2"],
        "the server sees the uplink address: {served}"
    );

    // Ping from both containers at once with the same identifier (ping -e), each gets all.
    let p1 = std::process::Command::new("ip")
        .args([
            "netns", "exec", &c1.name, "ping", "-c", "5", "-i", "0.2", "-e", "4242", "-W", "2",
            SERVER,
        ])
        .output();
    let p2 = c2.exec(&[
        "ping", "-c", "5", "-i", "0.2", "-e", "4242", "-W", "2", SERVER,
    ]);
    let p1 = p1.unwrap();
    for (p, who) in [(&p1, "c1"), (&p2, "c2")] {
        let out = String::from_utf8_lossy(&p.stdout);
        assert!(out.contains("5 received"), "{who} gets every reply: {out}");
    }

    // TTL 1: time exceeded from the gateway (what traceroute shows first).
    let t = c1.exec(&["ping", "-c", "1", "-t", "1", "-W", "2", SERVER]);
    let out = String::from_utf8_lossy(&t.stdout);
    assert!(
        out.contains("From 10.77.0.1") && out.contains("Time to live exceeded"),
        "time exceeded from the gateway: {out}"
    );

    // The flows are tracked; the uplink resolved its next hop and counts its frames.
    let ct = d.json(&["conntrack", "show"]);
    let rows = ct["ok"]["conntrack"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let rows = if rows.is_empty() {
        ct.as_array().cloned().unwrap_or_default()
    } else {
        rows
    };
    assert!(
        rows.iter()
            .any(|r| r["proto"] == "tcp" && r["dst"] == SERVER && r["dport"] == 8080),
        "a TCP flow to the server: {ct}"
    );
    let up = d.json(&["uplink", "show"]);
    let text = up.to_string();
    assert!(text.contains("192.0.2.1"), "next hop resolved: {text}");
    let st = d.json(&["port", "stats", &format!("uplink:{}", w.uplink)]);
    let st = st.to_string();
    assert!(
        st.contains("\"rx_packets\""),
        "uplink counters in port stats: {st}"
    );
}

fn internal_networks_have_no_way_out_and_networks_stay_apart() {
    require_root();
    let w = world();
    let d = Daemon::start_with(Some(&w.host), &[]);
    set_uplink(&d, &w);
    d.ok(&[
        "network",
        "create",
        "inside",
        "--subnet",
        "10.78.0.0/24",
        "--internal",
    ]);
    d.ok(&["network", "create", "other", "--subnet", "10.79.0.0/24"]);
    let a = Netns::new("ia");
    let b = Netns::new("ib");
    d.ok(&["add-port", "inside", "--netns", &a.name, "--name", "a"]);
    d.ok(&["add-port", "other", "--netns", &b.name, "--name", "b"]);
    assert!(b.ping(SERVER, 1), "a normal network gets out");
    assert!(!a.ping(SERVER, 1), "an internal network does not");
    assert!(a.ping("10.78.0.1", 1), "but reaches its gateway");
    // Two networks of the switch do not reach each other through their gateways.
    assert!(!b.ping("10.78.0.2", 1));
    let sa = d.json(&["port", "stats", "a"]).to_string();
    assert!(
        sa.contains("\"internal\":1") || sa.contains("\"internal\": 1"),
        "{sa}"
    );
    let sb = d.json(&["port", "stats", "b"]).to_string();
    assert!(sb.contains("\"isolated\":1"), "{sb}");
}

fn bad_uplinks_are_clear_errors_that_change_nothing() {
    require_root();
    let w = world();
    let d = Daemon::start_with(Some(&w.host), &[]);
    let (_, m) = d.err(&[
        "uplink",
        "set",
        "nosuchif0",
        "--mode",
        "dedicated",
        "--ip",
        "192.0.2.2/24",
    ]);
    assert!(m.contains("no interface"), "{m}");
    let (_, m) = d.err(&["uplink", "set", &w.uplink, "--mode", "dedicated"]);
    assert!(m.contains("--ip"), "{m}");
    let (_, m) = d.err(&[
        "uplink",
        "set",
        &w.uplink,
        "--mode",
        "dedicated",
        "--ip",
        "192.0.2.2/24",
        "--nat-ports",
        "70-20",
    ]);
    assert!(m.contains("port range"), "{m}");
    let (_, m) = d.err(&[
        "uplink",
        "set",
        &w.uplink,
        "--mode",
        "dedicated",
        "--ip",
        "192.0.2.2/24",
        "--gateway",
        "10.9.9.9",
    ]);
    assert!(m.contains("gateway"), "{m}");
    assert!(d.ok(&["uplink", "show"]).contains("no uplink"));
    set_uplink(&d, &w);
    let (_, m) = d.err(&[
        "uplink",
        "set",
        &w.uplink,
        "--mode",
        "dedicated",
        "--ip",
        "192.0.2.3/24",
    ]);
    assert!(m.contains("already"), "{m}");
    // The uplink answers ARP and ping for its own address.
    assert!(w.ext.ping("192.0.2.2", 1));
    // It survives a clean restart and a kill -9 (state), then goes with `uplink rm`.
    let mut d = d;
    for signal in [15, 9] {
        d.stop_with(signal);
        d.restart();
        assert!(
            wait_until(10, || w.ext.ping("192.0.2.2", 1)),
            "uplink restored after signal {signal}: {}",
            d.log()
        );
    }
    d.ok(&["uplink", "rm"]);
    assert!(!w.ext.ping("192.0.2.2", 1));
    assert!(d.ok(&["uplink", "show"]).contains("no uplink"));
}

per_port_type!(egress_curl_ping_and_time_exceeded);

#[test]
fn internal_and_isolated() {
    with_port_type(
        "tap",
        internal_networks_have_no_way_out_and_networks_stay_apart,
    );
}

#[test]
fn bad_uplinks() {
    with_port_type("tap", bad_uplinks_are_clear_errors_that_change_nothing);
}
