//! `vswitchctl trace`: frames described in the flow syntax (or as hex, or taken from a pcap a
//! real tcpdump wrote) run through the live pipeline, and each stage says what it did: ARP
//! suppression, an FDB hit, a flood, port security, isolation, NAT with its translated tuple,
//! published ports, VXLAN encapsulation. Tracing changes no counter and no table.

mod common;

use std::process::{Command, Stdio};

use common::egress::*;
use common::*;
use serde_json::Value;

fn trace(d: &Daemon, port: &str, flow: &str) -> Value {
    d.json(&["trace", port, flow])
}

/// The steps of `stage` in a trace, as (verdict, detail, port).
fn steps<'a>(t: &'a Value, stage: &str) -> Vec<(&'a str, &'a str, &'a str)> {
    t["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["stage"] == stage)
        .map(|s| {
            (
                s["verdict"].as_str().unwrap(),
                s["detail"].as_str().unwrap(),
                s["port"].as_str().unwrap_or(""),
            )
        })
        .collect()
}

fn verdict<'a>(t: &'a Value, stage: &str) -> &'a str {
    let s = steps(t, stage);
    assert!(!s.is_empty(), "no {stage} stage in {t:#}");
    s[0].0
}

fn outputs(t: &Value) -> Vec<String> {
    let mut v: Vec<String> = t["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["port"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

/// What a trace must not change: every port's counters, the MAC tables (MACs and ports, not
/// ages), the neighbour tables, and the conntrack table's size and counters.
fn tables(d: &Daemon) -> Value {
    let fdb: Vec<Value> = d
        .json(&["fdb", "show"])
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let mut rows: Vec<(String, String)> = t["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| (e["mac"].to_string(), e["port"].to_string()))
                .collect();
            rows.sort();
            serde_json::json!({"network": t["network"], "entries": rows, "counters": t["counters"]})
        })
        .collect();
    let mut arp = d.json(&["arp", "show"]);
    for t in arp.as_array_mut().unwrap() {
        t.as_object_mut().unwrap().remove("counters");
    }
    serde_json::json!({
        "stats": d.json(&["port", "stats"]),
        "fdb": fdb,
        "arp": arp,
        "ct": d.json(&["conntrack", "stats"]),
    })
}

fn mac_of(d: &Daemon, port: &str) -> String {
    d.port(port)["mac"].as_str().unwrap().to_string()
}

/// `tcpdump -w FILE` in `ns` for `count` ICMP frames while `during` runs.
fn capture(ns: &Netns, file: &std::path::Path, count: u32, during: impl FnOnce()) {
    let mut child = Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "tcpdump", "-i", "eth0", "-U", "-n",
        ])
        .args(["-c", &count.to_string(), "-w"])
        .arg(file)
        .arg("icmp")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump");
    assert!(wait_until(10, || file.exists()), "tcpdump did not start");
    std::thread::sleep(std::time::Duration::from_millis(300));
    during();
    let done = wait_until(10, || child.try_wait().ok().flatten().is_some());
    if !done {
        let _ = child.kill();
    }
    let _ = child.wait();
    assert!(done, "tcpdump saw fewer than {count} ICMP frames");
}

fn l2_stages_and_no_side_effects() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "tr", "--subnet", "10.88.80.0/24"]);
    d.ok(&["network", "create", "tr2", "--subnet", "10.88.81.0/24"]);
    let (a, b, c, x) = (
        Netns::new("tra"),
        Netns::new("trb"),
        Netns::new("trc"),
        Netns::new("trx"),
    );
    for (ns, name, net) in [
        (&a, "a", "tr"),
        (&b, "b", "tr"),
        (&c, "c", "tr"),
        (&x, "x", "tr2"),
    ] {
        d.ok(&["add-port", net, "--netns", &ns.name, "--name", name]);
    }
    d.wait_up(&["a", "b", "c", "x"]);
    let (ip_a, ip_b) = ("10.88.80.2", "10.88.80.3");
    let (mac_a, mac_b) = (mac_of(&d, "a"), mac_of(&d, "b"));
    let dir = TempDir::new("trp");
    let pcap = dir.path("a.pcap");
    // A real echo request from a to b, as tcpdump sees it leave a.
    capture(&a, &pcap, 2, || assert!(a.ping(ip_b, 1), "a reaches b"));
    assert!(b.ping(ip_a, 1));
    let before = tables(&d);

    // ARP for a known container: answered by suppression, nobody else hears it.
    let t = trace(&d, "a", &format!("arp,arp_tpa={ip_b}"));
    assert_eq!(t["network"], "tr");
    assert_eq!(verdict(&t, "port_security"), "pass");
    assert_eq!(verdict(&t, "learn"), "refresh", "{t:#}");
    let (v, detail, _) = steps(&t, "gateway")[0];
    assert_eq!(v, "consumed");
    assert!(detail.contains("ARP suppression"), "{detail}");
    let reply = t["reply"].as_str().unwrap();
    assert!(
        reply.contains(&format!("arp_op=2,arp_spa={ip_b},"))
            && reply.contains(&format!("arp_sha={mac_b}")),
        "{reply}"
    );
    assert!(outputs(&t).is_empty() && t["drop"].is_null(), "{t:#}");

    // The same frame as hex gives the same decisions.
    let hex = t["hex"].as_str().unwrap().to_string();
    let again = d.json(&["trace", "a", "--hex", &hex]);
    assert_eq!(again["steps"], t["steps"]);
    assert_eq!(again["reply"], t["reply"]);

    // A known MAC: one FDB hit, one output port.
    let t = trace(&d, "a", &format!("icmp,nw_dst={ip_b}"));
    assert_eq!(verdict(&t, "gateway"), "pass");
    assert_eq!(
        steps(&t, "fdb")[0],
        ("hit", &*format!("{mac_b} is on"), "b")
    );
    assert_eq!(outputs(&t), vec!["b"]);
    assert_eq!(t["flooded"], false);

    // The frame tcpdump captured: the same path.
    let t = d.json(&["trace", "a", "--from-pcap", pcap.to_str().unwrap()]);
    assert!(
        t["flow"].as_str().unwrap().starts_with(&format!(
            "icmp,dl_src={mac_a},dl_dst={mac_b},nw_src={ip_a},nw_dst={ip_b}"
        )),
        "{t:#}"
    );
    assert_eq!(outputs(&t), vec!["b"]);
    let t = d.json(&[
        "trace",
        "b",
        "--from-pcap",
        pcap.to_str().unwrap(),
        "--index",
        "2",
    ]);
    assert!(
        t["flow"].as_str().unwrap().contains("icmp_type=0"),
        "the echo reply: {t:#}"
    );
    assert_eq!(outputs(&t), vec!["a"]);

    // An unknown MAC: flooded to every other port of the network, not to tr2's.
    let t = trace(&d, "a", "dl_dst=02:00:5e:00:00:77");
    assert_eq!(verdict(&t, "fdb"), "miss");
    assert_eq!(verdict(&t, "flood"), "flood");
    assert_eq!(outputs(&t), vec!["b", "c"]);
    assert_eq!(t["flooded"], true);

    // Spoofed sources: port security drops them and says why.
    let t = trace(&d, "a", &format!("icmp,nw_dst={ip_b},nw_src=10.88.80.99"));
    assert_eq!(verdict(&t, "port_security"), "drop");
    assert_eq!(t["drop"], "spoofed_ip");
    assert!(outputs(&t).is_empty());
    let t = trace(
        &d,
        "a",
        &format!("icmp,nw_dst={ip_b},dl_src=02:00:5e:00:00:66"),
    );
    assert_eq!(t["drop"], "spoofed_mac");
    let t = trace(
        &d,
        "a",
        &format!("arp,arp_op=2,arp_tpa={ip_b},arp_spa=10.88.80.4"),
    );
    assert_eq!(t["drop"], "spoofed_arp");

    // Another network of the switch: routed by the gateway, and dropped as isolated.
    let t = trace(&d, "a", "tcp,nw_dst=10.88.81.2,tp_dst=80");
    assert_eq!(verdict(&t, "gateway"), "route");
    assert_eq!(verdict(&t, "route"), "drop");
    assert_eq!(t["drop"], "isolated");

    // The text form says the same.
    let text = d.ok(&["trace", "a", &format!("arp,arp_tpa={ip_b}")]);
    assert!(text.contains("ARP suppression"), "{text}");
    assert!(text.contains("Final: answered by the switch"), "{text}");
    let text = d.ok(&["trace", "a", "dl_dst=02:00:5e:00:00:77"]);
    assert!(text.contains("Final: flooded to b, c"), "{text}");

    // Bad requests are clear errors.
    for (args, want) in [
        (vec!["trace", "nope", "arp,arp_tpa=10.88.80.3"], "not found"),
        (vec!["trace", "a", "arp"], "arp_tpa"),
        (
            vec!["trace", "a", "tcp,nw_dst=10.88.80.3,tp_dst=http"],
            "tp_dst",
        ),
        (vec!["trace", "a", "--hex", "0102"], "at least 14"),
        (vec!["trace", "a", "--hex", "xyz1"], "hex"),
        (vec!["trace", "uplink", "icmp"], "no uplink"),
    ] {
        let (_, err) = d.err(&args);
        assert!(err.contains(want), "{args:?}: {err}");
    }
    let out = d.ctl(&["trace", "a", "--from-pcap", "/nonexistent.pcap"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("/nonexistent.pcap"),
        "{err}"
    );

    // Nothing was learned, counted or answered for real.
    assert_eq!(tables(&d), before, "a trace changed the switch");
    assert!(a.ping(ip_b, 1), "and the network still works");
}

fn nat_and_published_ports_show_the_translated_tuple() {
    require_root();
    let w = world();
    let d = Daemon::start_with(Some(&w.host), &[]);
    set_uplink(&d, &w);
    d.ok(&["network", "create", "tn", "--subnet", "10.88.82.0/24"]);
    let c1 = Netns::new("trn");
    d.ok(&[
        "add-port",
        "tn",
        "--netns",
        &c1.name,
        "--name",
        "c1",
        "--publish",
        "8080:80",
    ]);
    d.wait_up(&["c1"]);
    // The uplink learns its next hop's MAC.
    assert!(c1.ping(SERVER, 1), "c1 reaches the internet");
    let uplink = format!("uplink:{}", w.uplink);
    let before = tables(&d);

    // Out: routed, a new conntrack entry, masqueraded behind the uplink's address.
    let t = trace(
        &d,
        "c1",
        &format!("tcp,nw_dst={SERVER},tp_dst=80,tp_src=41000"),
    );
    assert_eq!(verdict(&t, "gateway"), "route");
    assert_eq!(verdict(&t, "route"), "uplink");
    assert_eq!(verdict(&t, "conntrack"), "new");
    let rewritten = t["rewritten"].as_str().unwrap();
    assert!(
        rewritten.contains(&format!("nw_src=192.0.2.2,nw_dst={SERVER},nw_ttl=63"))
            && rewritten.contains("tp_dst=80")
            && rewritten.contains("dl_dst=")
            && rewritten.contains("tcp_flags=syn"),
        "{rewritten}"
    );
    assert_eq!(outputs(&t), vec![uplink.clone()]);
    let (_, nat, _) = steps(&t, "nat")[1];
    assert!(
        nat.starts_with(&format!(
            "tcp 10.88.82.2:41000 -> {SERVER}:80 becomes 192.0.2.2:"
        )),
        "{nat}"
    );

    // In: a client outside on the published port goes to c1, its address kept.
    let t = trace(
        &d,
        "uplink",
        "tcp,nw_src=192.0.2.1,tp_src=50000,tp_dst=8080",
    );
    assert_eq!(steps(&t, "ingress")[0].2, uplink);
    assert_eq!(verdict(&t, "nat"), "deliver");
    assert_eq!(verdict(&t, "conntrack"), "new");
    let rewritten = t["rewritten"].as_str().unwrap();
    assert!(
        rewritten.contains("nw_src=192.0.2.1,nw_dst=10.88.82.2")
            && rewritten.contains("tp_dst=80,"),
        "{rewritten}"
    );
    assert_eq!(outputs(&t), vec!["c1"]);
    assert_eq!(
        steps(&t, "nat")[1].1,
        "tcp 192.0.2.1:50000 -> 192.0.2.2:8080 becomes 192.0.2.1:50000 -> 10.88.82.2:80"
    );
    // And a port nobody published: no flow for it.
    let t = trace(&d, &uplink, "tcp,nw_src=192.0.2.1,tp_dst=8081");
    assert_eq!(t["drop"], "no_conntrack", "{t:#}");

    // Nothing tracked, translated or counted for real.
    assert_eq!(tables(&d), before, "a trace changed the switch");
}

fn overlay_frames_show_their_encapsulation() {
    require_root();
    let host = Netns::new("trh");
    let (u, peer) = (unique("tru"), unique("trv"));
    host.exec_ok(&[
        "ip", "link", "add", &u, "type", "veth", "peer", "name", &peer,
    ]);
    host.exec_ok(&["ip", "addr", "add", "192.168.253.1/24", "dev", &u]);
    host.exec_ok(&["ip", "link", "set", &u, "up"]);
    host.exec_ok(&["ip", "link", "set", &peer, "up"]);
    let d = Daemon::start_with(Some(&host), &[]);
    d.ok(&["vtep", "set", "--local-ip", "192.168.253.1"]);
    d.ok(&[
        "network",
        "create",
        "ov",
        "--driver",
        "overlay",
        "--vni",
        "4242",
        "--subnet",
        "10.88.83.0/24",
        "--peer",
        "192.168.253.2",
    ]);
    let (o1, o2) = (Netns::new("tro1"), Netns::new("tro2"));
    d.ok(&["add-port", "ov", "--netns", &o1.name, "--name", "o1"]);
    d.ok(&["add-port", "ov", "--netns", &o2.name, "--name", "o2"]);
    d.wait_up(&["o1", "o2"]);
    let remote_mac = "02:42:0a:58:53:32";
    d.ok(&[
        "fdb",
        "add",
        "ov",
        remote_mac,
        "--vtep",
        "192.168.253.2",
        "--ip",
        "10.88.83.50",
    ]);
    let before = tables(&d);

    // Broadcast: to the other local port and, replicated head-end, to the peer VTEP.
    let t = trace(&d, "o1", "dl_dst=ff:ff:ff:ff:ff:ff");
    assert_eq!(outputs(&t), vec!["o2", "vxlan:192.168.253.2"]);
    let (v, detail, port) = steps(&t, "overlay")[0];
    assert_eq!((v, port), ("encap", "vxlan:192.168.253.2"));
    assert!(
        detail.contains("VNI 4242 to VTEP 192.168.253.2"),
        "{detail}"
    );
    let vx = t["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|o| o["vxlan"].as_str())
        .unwrap();
    assert!(
        vx.starts_with("vni 4242, 192.168.253.1:") && vx.contains("-> 192.168.253.2:4789"),
        "{vx}"
    );

    // A static remote entry: ARP answered from it, unicast to its VTEP only.
    let t = trace(&d, "o1", "arp,arp_tpa=10.88.83.50");
    assert!(
        steps(&t, "gateway")[0].1.contains("ARP suppression"),
        "{t:#}"
    );
    assert!(t["reply"]
        .as_str()
        .unwrap()
        .contains(&format!("arp_sha={remote_mac}")));
    let t = trace(
        &d,
        "o1",
        &format!("icmp,nw_dst=10.88.83.50,dl_dst={remote_mac}"),
    );
    assert_eq!(steps(&t, "fdb")[0].2, "vxlan:192.168.253.2");
    assert_eq!(outputs(&t), vec!["vxlan:192.168.253.2"]);

    // Too big for the tunnel (1450 inside): the gateway answers frag-needed, nothing leaves.
    let t = trace(
        &d,
        "o1",
        &format!("udp,nw_dst=10.88.83.50,dl_dst={remote_mac},tp_dst=9,payload_len=1500"),
    );
    assert_eq!(t["drop"], "too_big", "{t:#}");
    assert!(
        t["reply"]
            .as_str()
            .unwrap()
            .contains("icmp_type=3,icmp_code=4"),
        "{t:#}"
    );
    assert_eq!(tables(&d), before, "a trace changed the switch");
}

#[test]
fn trace_l2_stages_and_no_side_effects() {
    with_port_type("tap", l2_stages_and_no_side_effects)
}

#[test]
fn trace_nat_and_published_ports_show_the_translated_tuple() {
    with_port_type("tap", nat_and_published_ports_show_the_translated_tuple)
}

#[test]
fn trace_overlay_frames_show_their_encapsulation() {
    with_port_type("tap", overlay_frames_show_their_encapsulation)
}
