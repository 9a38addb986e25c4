//! Gateway services: IPAM, ARP (with suppression), ICMP, DHCP with real clients (busybox udhcpc,
//! isc-dhcp-client's dhclient), the embedded DNS with getent/nslookup/dig, several networks per
//! namespace. Every client runs with its own script and lease files: the host's resolv.conf is
//! never touched.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

/// `dig` against `server` from inside `ns`: one try, a short timeout (extra `+time=` wins).
fn dig(ns: &Netns, server: &str, args: &[&str]) -> String {
    let at = format!("@{server}");
    let mut a = vec!["dig", "+tries=1", "+time=3", at.as_str()];
    a.extend_from_slice(args);
    ns.exec_ok(&a)
}

fn gw_counters(d: &Daemon, net: &str) -> Value {
    d.json(&["arp", "show", net])[0]["counters"].clone()
}

fn gateway_answers_ping_and_arp_and_suppresses_arp_for_known_peers() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "net", "--subnet", "10.88.1.0/24"]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    d.ok(&["add-port", "net", "--netns", &a.name, "--name", "a"]);
    d.ok(&["add-port", "net", "--netns", &b.name, "--name", "b"]);
    assert_eq!(
        d.port("a")["ip"],
        "10.88.1.2/24",
        "IPAM: first free address"
    );
    assert_eq!(d.port("b")["ip"], "10.88.1.3/24");

    assert!(a.ping("10.88.1.1", 3), "the gateway answers ping");
    let neigh = a.exec_ok(&["ip", "neigh", "show", "10.88.1.1"]);
    let gw_mac = d.json(&["network", "inspect", "net"])["gateway_mac"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        neigh.contains(&gw_mac),
        "ARP for the gateway resolved to its MAC {gw_mac}: {neigh}"
    );
    let c = gw_counters(&d, "net");
    assert!(
        c["icmp_replies"].as_u64().unwrap() >= 3 && c["arp_replies"].as_u64().unwrap() >= 1,
        "{c}"
    );

    // a asks for b: the switch answers, b never sees the request.
    let (b_tx0, sup0) = (
        d.stats("b")["tx_packets"].as_u64().unwrap(),
        c["arp_suppressed"].as_u64().unwrap(),
    );
    let out = a.exec_ok(&["arping", "-c", "1", "-w", "2", "-I", "eth0", "10.88.1.3"]);
    assert!(out.to_lowercase().contains("02:42:0a:58:01:03"), "{out}");
    let c = gw_counters(&d, "net");
    assert!(
        c["arp_suppressed"].as_u64().unwrap() > sup0,
        "suppressed: {c}"
    );
    assert_eq!(
        d.stats("b")["tx_packets"].as_u64().unwrap(),
        b_tx0,
        "the request never reached b"
    );
    // The kernel's own resolution is answered the same way.
    assert!(a.ping("10.88.1.3", 2));
    let neigh = a.exec_ok(&["ip", "neigh", "show", "10.88.1.3"]);
    assert!(neigh.contains("02:42:0a:58:01:03"), "{neigh}");

    let arp = d.json(&["arp", "show", "net"]);
    let rows = arp[0]["neighbors"].as_array().unwrap();
    assert!(
        rows.iter()
            .any(|r| r["ip"] == "10.88.1.3" && r["port"] == "b" && r["kind"] == "static"),
        "{arp}"
    );

    // Suppression off: requests reach the peer, which answers itself.
    d.ok(&[
        "network",
        "create",
        "plain",
        "--subnet",
        "10.88.2.0/24",
        "--no-arp-suppress",
    ]);
    let c1 = Netns::new("c1");
    let c2 = Netns::new("c2");
    d.ok(&["add-port", "plain", "--netns", &c1.name, "--name", "c1"]);
    d.ok(&["add-port", "plain", "--netns", &c2.name, "--name", "c2"]);
    let c2_rx0 = d.stats("c2")["rx_packets"].as_u64().unwrap();
    assert!(c1.ping("10.88.2.3", 1));
    assert_eq!(gw_counters(&d, "plain")["arp_suppressed"], 0);
    assert!(
        d.stats("c2")["rx_packets"].as_u64().unwrap() > c2_rx0,
        "c2 answered itself"
    );
}

fn ipam_allocates_releases_persists_and_refuses_clearly() {
    require_root();
    let mut d = Daemon::start();
    // /29: .1 gateway, .2 to .6 for ports.
    d.ok(&["network", "create", "tiny", "--subnet", "10.88.3.0/29"]);
    let nss: Vec<Netns> = (0..6).map(|i| Netns::new(&format!("t{i}"))).collect();
    for (i, ns) in nss.iter().take(5).enumerate() {
        d.ok(&[
            "add-port",
            "tiny",
            "--netns",
            &ns.name,
            "--name",
            &format!("t{i}"),
        ]);
        assert_eq!(
            d.port(&format!("t{i}"))["ip"],
            format!("10.88.3.{}/29", i + 2)
        );
    }
    let (code, msg) = d.err(&["add-port", "tiny", "--netns", &nss[5].name, "--name", "t5"]);
    assert_eq!(code, "address_pool_exhausted", "{msg}");
    assert!(msg.contains("10.88.3.0/29"), "{msg}");
    assert!(!nss[5].has_link("eth0"), "nothing left behind");
    // Release and reuse.
    d.ok(&["del-port", "t2"]);
    d.ok(&["add-port", "tiny", "--netns", &nss[5].name, "--name", "t5"]);
    assert_eq!(d.port("t5")["ip"], "10.88.3.4/29");
    let (code, msg) = d.err(&[
        "add-port",
        "tiny",
        "--netns",
        &nss[2].name,
        "--ip",
        "10.88.3.5",
    ]);
    assert_eq!(code, "address_in_use", "{msg}");
    // --ip-range: allocation comes from the range only.
    d.ok(&[
        "network",
        "create",
        "ranged",
        "--subnet",
        "10.88.4.0/24",
        "--ip-range",
        "10.88.4.128/25",
    ]);
    d.ok(&[
        "add-port",
        "ranged",
        "--netns",
        &nss[2].name,
        "--name",
        "r0",
    ]);
    assert_eq!(d.port("r0")["ip"], "10.88.4.128/24");
    // --aux-address: never handed out, and refused when asked for.
    d.ok(&[
        "network",
        "create",
        "aux",
        "--subnet",
        "10.88.7.0/24",
        "--aux-address",
        "router=10.88.7.2",
        "--aux-address",
        "10.88.7.3",
    ]);
    assert_eq!(
        d.json(&["network", "inspect", "aux"])["aux_addresses"],
        serde_json::json!(["10.88.7.2", "10.88.7.3"])
    );
    d.ok(&[
        "add-port",
        "aux",
        "--netns",
        &nss[2].name,
        "--name",
        "x0",
        "--ifname",
        "eth1",
    ]);
    assert_eq!(
        d.port("x0")["ip"],
        "10.88.7.4/24",
        "aux addresses are skipped"
    );
    let (code, msg) = d.err(&[
        "add-port",
        "aux",
        "--netns",
        &nss[1].name,
        "--name",
        "x1",
        "--ifname",
        "eth1",
        "--ip",
        "10.88.7.2",
    ]);
    assert_eq!(code, "address_in_use", "{msg}");
    let (code, _) = d.err(&[
        "network",
        "create",
        "aux2",
        "--subnet",
        "10.88.8.0/24",
        "--aux-address",
        "10.88.9.1",
    ]);
    assert_eq!(code, "invalid_argument");
    let (code, _) = d.err(&[
        "network",
        "create",
        "bad",
        "--subnet",
        "10.88.5.0/24",
        "--ip-range",
        "10.88.6.0/25",
    ]);
    assert_eq!(code, "invalid_argument");
    // Allocations survive a restart.
    let before = d.show_stable()["ports"].clone();
    d.stop_with(9);
    d.restart();
    assert_eq!(d.show_stable()["ports"], before);
    assert!(nss[0].ping("10.88.3.4", 1), "t0 reaches t5 after restart");
}

/// A udhcpc script that records every event and applies bound/renew to the interface.
fn udhcpc_script(dir: &TempDir) -> (String, std::path::PathBuf) {
    let out = dir.path("udhcpc.out");
    let script = dir.path("udhcpc.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1 ip=$ip mask=$mask router=$router dns=$dns domain=$domain lease=$lease hostname=$hostname mtu=$mtu\" >> {out}\ncase \"$1\" in bound|renew) ip addr replace \"$ip/$mask\" dev \"$interface\";; esac\n",
            out = out.display()
        ),
    )
    .unwrap();
    must("chmod", &["+x", script.to_str().unwrap()]);
    (script.to_str().unwrap().to_string(), out)
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn udhcpc_gets_a_lease_renews_it_and_keeps_it_across_restart() {
    require_root();
    let mut d = Daemon::start();
    d.ok(&[
        "network",
        "create",
        "web",
        "--subnet",
        "10.88.10.0/24",
        "--lease-time",
        "120",
    ]);
    let ns = Netns::new("u");
    let tmp = TempDir::new("udhcpc");
    let (script, out) = udhcpc_script(&tmp);
    // The client later changes its MAC (one the switch does not know): port security, which
    // would stop that, is off for this port.
    d.ok(&[
        "add-port",
        "web",
        "--netns",
        &ns.name,
        "--dhcp",
        "--name",
        "u1",
        "--no-port-security",
    ]);
    let addr = ns.exec_ok(&["ip", "-4", "-o", "addr", "show", "eth0"]);
    assert!(
        addr.trim().is_empty(),
        "--dhcp leaves the interface unconfigured: {addr}"
    );

    // A port's own MAC gets its IPAM address (10.88.10.2), with every option.
    ns.exec_ok(&[
        "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "3", "-T", "2", "-s", &script,
    ]);
    let bound = lines(&out)
        .into_iter()
        .find(|l| l.starts_with("bound"))
        .expect("bound");
    for want in [
        "ip=10.88.10.2",
        "mask=24",
        "router=10.88.10.1",
        "dns=10.88.10.1",
        "domain=web.vswitch",
        "lease=120",
        "hostname=u1",
        "mtu=1500",
    ] {
        assert!(bound.contains(want), "{want} in {bound}");
    }
    assert!(ns.ping("10.88.10.1", 1));

    // A MAC the switch does not know gets an address from the range; renew keeps it.
    ns.exec_ok(&["ip", "link", "set", "eth0", "address", "02:aa:bb:cc:dd:01"]);
    ns.exec_ok(&["ip", "addr", "flush", "dev", "eth0"]);
    std::fs::remove_file(&out).unwrap();
    let client = Bg(Command::new("ip")
        .args([
            "netns", "exec", &ns.name, "busybox", "udhcpc", "-i", "eth0", "-f", "-t", "5", "-T",
            "2", "-s", &script,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    assert!(
        wait_until(15, || lines(&out).iter().any(|l| l.starts_with("bound"))),
        "{:?}",
        lines(&out)
    );
    let bound = lines(&out)
        .into_iter()
        .find(|l| l.starts_with("bound"))
        .unwrap();
    assert!(
        bound.contains("ip=10.88.10.3 "),
        "first free address: {bound}"
    );
    must("kill", &["-USR1", &client.0.id().to_string()]);
    assert!(
        wait_until(15, || lines(&out).iter().any(|l| l.starts_with("renew"))),
        "{:?}",
        lines(&out)
    );
    let renew = lines(&out)
        .into_iter()
        .find(|l| l.starts_with("renew"))
        .unwrap();
    assert!(renew.contains("ip=10.88.10.3 "), "{renew}");
    drop(client);
    let leases = d.json(&["dhcp", "leases", "web"]);
    let l = leases
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["mac"] == "02:aa:bb:cc:dd:01")
        .expect("lease listed")
        .clone();
    assert_eq!(l["ip"], "10.88.10.3");
    assert_eq!(l["port"], Value::Null, "not one of the switch's MACs");

    // Restart: the lease is persisted; the same client gets the same address back.
    d.stop_with(15);
    d.restart();
    assert!(d
        .json(&["dhcp", "leases", "web"])
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["ip"] == "10.88.10.3"));
    ns.exec_ok(&["ip", "link", "set", "eth0", "address", "02:aa:bb:cc:dd:01"]);
    std::fs::remove_file(&out).unwrap();
    ns.exec_ok(&[
        "busybox", "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "3", "-T", "2", "-s", &script,
    ]);
    let bound = lines(&out)
        .into_iter()
        .find(|l| l.starts_with("bound"))
        .expect("bound after restart");
    assert!(
        bound.contains("ip=10.88.10.3 "),
        "same address after restart: {bound}"
    );
    // A new port now gets an address the lease does not hold.
    let other = Netns::new("o");
    d.ok(&["add-port", "web", "--netns", &other.name, "--name", "o1"]);
    assert_eq!(d.port("o1")["ip"], "10.88.10.4/24");
    let (code, msg) = d.err(&[
        "add-port",
        "web",
        "--netns",
        &other.name,
        "--ifname",
        "eth1",
        "--ip",
        "10.88.10.3",
    ]);
    assert_eq!(code, "address_in_use", "{msg}");
}

/// A dhclient script (`-sf`) that configures the address itself (never touching the host's
/// resolv.conf) and logs every event with the lease's fields to the returned file.
fn dhclient_script(dir: &TempDir) -> (std::path::PathBuf, std::path::PathBuf) {
    let out = dir.path("events");
    let script = dir.path("dhclient.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$reason ip=$new_ip_address router=$new_routers dns=$new_domain_name_servers domain=$new_domain_name lease=$new_dhcp_lease_time\" >> {}\ncase \"$reason\" in PREINIT) ip link set \"$interface\" up;; BOUND|RENEW|REBIND|REBOOT) ip addr replace \"$new_ip_address/24\" dev \"$interface\";; esac\nexit 0\n",
            out.display()
        ),
    )
    .unwrap();
    must("chmod", &["+x", script.to_str().unwrap()]);
    (script, out)
}

fn dhclient_gets_a_lease_and_the_same_address_after_restart() {
    require_root();
    let mut d = Daemon::start();
    d.ok(&[
        "network",
        "create",
        "web",
        "--subnet",
        "10.88.11.0/24",
        "--domain",
        "corp.example",
    ]);
    let ns = Netns::new("dc");
    let tmp = TempDir::new("dhclient");
    let (script, out) = dhclient_script(&tmp);
    // A MAC the switch does not know: port security, which would stop it, is off here.
    d.ok(&[
        "add-port",
        "web",
        "--netns",
        &ns.name,
        "--dhcp",
        "--name",
        "dc",
        "--no-port-security",
    ]);
    ns.exec_ok(&["ip", "link", "set", "eth0", "address", "02:aa:bb:cc:dd:02"]);
    // dhclient runs in the foreground (-d) as our child, so it is stopped by PID (a daemonized
    // one writes its pid file too late to be caught reliably). `want` is the event to wait for.
    let run = |want: &[&str]| {
        let client = Bg(Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "dhclient",
                "-d",
                "-sf",
                script.to_str().unwrap(),
            ])
            .arg("-lf")
            .arg(tmp.path("leases"))
            .arg("-pf")
            .arg(tmp.path("pid"))
            .arg("eth0")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap());
        assert!(
            wait_until(30, || lines(&out)
                .iter()
                .any(|l| want.iter().any(|w| l.starts_with(w)))),
            "dhclient did not report {want:?}: {:?}",
            lines(&out)
        );
        drop(client);
    };
    run(&["BOUND"]);
    let ev = lines(&out);
    let bound = ev
        .iter()
        .find(|l| l.starts_with("BOUND"))
        .unwrap_or_else(|| panic!("{ev:?}"));
    for want in [
        "ip=10.88.11.3",
        "router=10.88.11.1",
        "dns=10.88.11.1",
        "domain=corp.example",
        "lease=3600",
    ] {
        assert!(bound.contains(want), "{want} in {bound}");
    }
    assert!(ns.ping("10.88.11.1", 1));
    d.stop_with(9);
    d.restart();
    ns.exec_ok(&["ip", "link", "set", "eth0", "address", "02:aa:bb:cc:dd:02"]);
    std::fs::remove_file(&out).unwrap();
    // dhclient remembers the lease: INIT-REBOOT asks for it again and gets it.
    run(&["REBOOT", "BOUND"]);
    let ev = lines(&out);
    let again = ev
        .iter()
        .find(|l| l.starts_with("REBOOT") || l.starts_with("BOUND"))
        .unwrap_or_else(|| panic!("{ev:?}"));
    assert!(again.contains("ip=10.88.11.3"), "{again}");
}

fn dhclient_renews_its_lease() {
    require_root();
    let d = Daemon::start();
    // 60 s leases: dhclient renews (unicast REQUEST from its address) after T1 = 30 s.
    d.ok(&[
        "network",
        "create",
        "web",
        "--subnet",
        "10.88.12.0/24",
        "--lease-time",
        "60",
    ]);
    let ns = Netns::new("dr");
    let tmp = TempDir::new("dhclient-renew");
    let (script, out) = dhclient_script(&tmp);
    d.ok(&[
        "add-port", "web", "--netns", &ns.name, "--dhcp", "--name", "dr",
    ]);
    // In the foreground (-d) so it is our child, stopped by PID when the test ends.
    let _client = Bg(Command::new("ip")
        .args([
            "netns",
            "exec",
            &ns.name,
            "dhclient",
            "-d",
            "-sf",
            script.to_str().unwrap(),
        ])
        .arg("-lf")
        .arg(tmp.path("leases"))
        .arg("-pf")
        .arg(tmp.path("pid"))
        .arg("eth0")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    assert!(
        wait_until(20, || lines(&out).iter().any(|l| l.starts_with("BOUND"))),
        "{:?}",
        lines(&out)
    );
    assert!(
        wait_until(60, || lines(&out).iter().any(|l| l.starts_with("RENEW"))),
        "no renewal: {:?}",
        lines(&out)
    );
    let renew = lines(&out)
        .into_iter()
        .find(|l| l.starts_with("RENEW"))
        .unwrap();
    assert!(
        renew.contains("ip=10.88.12.2 ") && renew.contains("lease=60"),
        "{renew}"
    );
}

fn dns_resolves_names_and_aliases_per_network() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "front", "--subnet", "10.88.20.0/24"]);
    d.ok(&["network", "create", "back", "--subnet", "10.88.21.0/24"]);
    let web = Netns::new("web");
    let api = Netns::new("api");
    let db = Netns::new("db");
    d.ok(&["add-port", "front", "--netns", &web.name, "--name", "web1"]);
    d.ok(&[
        "add-port",
        "front",
        "--netns",
        &api.name,
        "--name",
        "api1",
        "--alias",
        "api,service.v1",
    ]);
    d.ok(&["add-port", "back", "--netns", &db.name, "--name", "db1"]);
    let resolv = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", web.name)).unwrap();
    assert!(
        resolv.contains("nameserver 10.88.20.1") && resolv.contains("search front.vswitch"),
        "{resolv}"
    );

    // getent through the namespace's resolv.conf (port name, namespace name, alias).
    for name in ["api1", &api.name, "api", "service.v1", "api.front.vswitch"] {
        let out = web.exec_ok(&["getent", "hosts", name]);
        assert!(out.starts_with("10.88.20.3"), "{name}: {out}");
    }
    let out = web.exec_ok(&["nslookup", "api"]);
    assert!(out.contains("10.88.20.3"), "{out}");
    // dig over UDP and TCP, and PTR.
    let udp = dig(&web, "10.88.20.1", &["+short", "service.v1"]);
    assert_eq!(udp.trim(), "10.88.20.3");
    let tcp = dig(&web, "10.88.20.1", &["+tcp", "+short", "api1"]);
    assert_eq!(tcp.trim(), "10.88.20.3");
    let ptr = dig(&web, "10.88.20.1", &["+short", "-x", "10.88.20.3"]);
    assert_eq!(ptr.trim(), "api1.front.vswitch.");
    let ptr_tcp = dig(&web, "10.88.20.1", &["+tcp", "+short", "-x", "10.88.20.2"]);
    assert_eq!(ptr_tcp.trim(), "web1.front.vswitch.");
    // A name of another network does not resolve here (and does there).
    let out = web.exec(&["getent", "hosts", "db1"]);
    assert!(
        !out.status.success(),
        "db1 is on another network: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    let st = dig(&web, "10.88.20.1", &["db1.back.vswitch"]);
    assert!(st.contains("status: SERVFAIL"), "{st}");
    assert!(db
        .exec_ok(&["getent", "hosts", "db1"])
        .starts_with("10.88.21.2"));
    // Unknown name in our domain: NXDOMAIN; outside it with no upstream: SERVFAIL at once.
    let st = dig(&web, "10.88.20.1", &["nobody.front.vswitch"]);
    assert!(st.contains("status: NXDOMAIN"), "{st}");
    let st = dig(&web, "10.88.20.1", &["example.com"]);
    assert!(st.contains("status: SERVFAIL"), "{st}");
    let c = gw_counters(&d, "front");
    assert!(c["dns_replies"].as_u64().unwrap() >= 8, "{c}");

    // del-port removes the name.
    d.ok(&["del-port", "api1"]);
    let st = dig(&web, "10.88.20.1", &["api.front.vswitch"]);
    assert!(st.contains("status: NXDOMAIN"), "{st}");
}

fn default_bridge_network_does_not_resolve_names() {
    require_root();
    let d = Daemon::start(); // its config declares `bridge` without DNS names
    let a = Netns::new("a");
    let b = Netns::new("b");
    d.ok(&["add-port", "bridge", "--netns", &a.name, "--name", "a"]);
    d.ok(&["add-port", "bridge", "--netns", &b.name, "--name", "b"]);
    assert!(!std::path::Path::new(&format!("/etc/netns/{}/resolv.conf", a.name)).exists());
    assert!(a.ping("172.17.0.3", 1), "reachable by address");
    let st = dig(&a, "172.17.0.1", &["b"]);
    assert!(st.contains("status: SERVFAIL"), "{st}");
}

/// Sends UDP `payload_hex` from `sport` to `dst:dport` inside `ns` (broadcast allowed).
fn send_udp(ns: &Netns, sport: u16, dst: &str, dport: u16, payload_hex: &str) {
    let script = format!(
        "import socket\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\ns.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\ns.bind(('0.0.0.0', {sport}))\ns.sendto(bytes.fromhex('{payload_hex}'), ('{dst}', {dport}))\n"
    );
    ns.exec_ok(&["python3", "-c", &script]);
}

fn malformed_dhcp_and_dns_are_counted_and_rogue_servers_blocked() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "net", "--subnet", "10.88.30.0/24"]);
    let a = Netns::new("a");
    let b = Netns::new("b");
    d.ok(&["add-port", "net", "--netns", &a.name, "--name", "a"]);
    d.ok(&["add-port", "net", "--netns", &b.name, "--name", "b"]);
    assert!(a.ping("10.88.30.3", 1));
    let leases0 = d.json(&["dhcp", "leases"]);

    // DHCP: garbage, a BOOTREQUEST cut short in its options, a bad magic cookie.
    let mut bootp = String::from("01010600")
        + "12345678"
        + &"00".repeat(20)
        + "02aabbccdd03"
        + &"00".repeat(10 + 64 + 128);
    let truncated = bootp.clone() + "63825363" + "3501"; // message type option without its value
    let bad_cookie = bootp.clone() + "deadbeef" + "350101ff";
    bootp.push_str("638253633501");
    for p in ["00", &truncated, &bad_cookie, &bootp] {
        send_udp(&a, 68, "255.255.255.255", 67, p);
    }
    // DNS: garbage and a query cut short.
    for p in ["ff", "abcd0100000100000000000003617069"] {
        send_udp(&a, 5353, "10.88.30.1", 53, p);
    }
    assert!(
        wait_until(5, || {
            let s = d.stats("a");
            s["drops"]["bad_dhcp"].as_u64().unwrap() >= 4
                && s["drops"]["bad_dns"].as_u64().unwrap() >= 2
        }),
        "{}",
        d.stats("a")
    );
    assert_eq!(d.json(&["dhcp", "leases"]), leases0, "no lease came of it");

    // A rogue server in `a` offers addresses: nothing reaches b.
    let b_tx0 = d.stats("b")["tx_packets"].as_u64().unwrap();
    let offer = String::from("02010600")
        + "12345678"
        + &"00".repeat(20)
        + "02aabbccdd03"
        + &"00".repeat(10 + 64 + 128)
        + "63825363"
        + "350102"
        + "ff";
    send_udp(&a, 67, "255.255.255.255", 68, &offer);
    send_udp(&a, 67, "10.88.30.3", 68, &offer);
    assert!(
        wait_until(5, || d.stats("a")["drops"]["rogue_dhcp"].as_u64().unwrap()
            >= 2),
        "{}",
        d.stats("a")
    );
    assert_eq!(
        d.stats("b")["tx_packets"].as_u64().unwrap(),
        b_tx0,
        "no rogue OFFER reached b"
    );
    // The switch still serves both.
    assert!(a.ping("10.88.30.3", 1) && b.ping("10.88.30.1", 1));
}

fn a_namespace_on_two_networks_reaches_both_and_they_stay_isolated() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "red", "--subnet", "10.88.40.0/24"]);
    d.ok(&["network", "create", "blue", "--subnet", "10.88.41.0/24"]);
    let both = Netns::new("both");
    let r = Netns::new("r");
    let b = Netns::new("b");
    d.ok(&[
        "add-port", "red", "--netns", &both.name, "--ifname", "eth0", "--name", "both-red",
    ]);
    d.ok(&[
        "add-port",
        "blue",
        "--netns",
        &both.name,
        "--ifname",
        "eth1",
        "--name",
        "both-blue",
    ]);
    d.ok(&["add-port", "red", "--netns", &r.name, "--name", "r"]);
    d.ok(&["add-port", "blue", "--netns", &b.name, "--name", "b"]);
    assert!(both.ping("10.88.40.3", 2), "red peer over eth0");
    assert!(both.ping("10.88.41.3", 2), "blue peer over eth1");
    let route = both.exec_ok(&["ip", "route", "get", "10.88.41.3"]);
    assert!(route.contains("dev eth1"), "{route}");
    // r cannot reach b (no routing between networks; b's subnet is not on r's wire).
    r.exec_ok(&["ip", "route", "add", "10.88.41.0/24", "dev", "eth0"]);
    assert!(!r.ping_any("10.88.41.3", 2));
    // Names: both resolves each network's names through its two nameservers.
    assert!(both
        .exec_ok(&["getent", "hosts", "r"])
        .starts_with("10.88.40.3"));
    assert!(both
        .exec_ok(&["getent", "hosts", "b"])
        .starts_with("10.88.41.3"));
    let resolv = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", both.name)).unwrap();
    assert!(
        resolv.contains("nameserver 10.88.40.1") && resolv.contains("nameserver 10.88.41.1"),
        "{resolv}"
    );
    d.ok(&["del-port", "both-blue"]);
    let resolv = std::fs::read_to_string(format!("/etc/netns/{}/resolv.conf", both.name)).unwrap();
    assert!(!resolv.contains("10.88.41.1"), "{resolv}");
}

/// A tiny DNS server answering every A query with 203.0.113.7.
const UPSTREAM: &str = r#"
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("127.0.0.1", 5300))
while True:
    q, a = s.recvfrom(4096)
    i = 12
    while q[i] != 0:
        i += q[i] + 1
    qend = i + 5
    ans = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([203, 0, 113, 7])
    s.sendto(q[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q[12:qend] + ans, a)
"#;

fn other_names_are_forwarded_to_the_upstream_resolver() {
    require_root();
    // The daemon runs in a "host" namespace of the test's own, where the upstream lives.
    let host = Netns::new("host");
    host.exec_ok(&["ip", "link", "set", "lo", "up"]);
    let upstream = Bg(Command::new("ip")
        .args(["netns", "exec", &host.name, "python3", "-c", UPSTREAM])
        .spawn()
        .unwrap());
    assert!(wait_until(10, || host
        .exec(&[
            "dig",
            "+short",
            "+tries=1",
            "+time=1",
            "-p",
            "5300",
            "@127.0.0.1",
            "probe.test"
        ])
        .status
        .success()));
    let d = Daemon::start_with(Some(&host), &["--dns-upstream", "127.0.0.1:5300"]);
    d.ok(&["network", "create", "web", "--subnet", "10.88.50.0/24"]);
    let c = Netns::new("c");
    d.ok(&["add-port", "web", "--netns", &c.name, "--name", "c1"]);
    let out = dig(&c, "10.88.50.1", &["+short", "example.test"]);
    assert_eq!(out.trim(), "203.0.113.7", "answered by the upstream");
    assert!(c
        .exec_ok(&["getent", "hosts", "www.example.test"])
        .starts_with("203.0.113.7"));
    // Over TCP too (the switch acknowledges at once and answers when the upstream does).
    let out = dig(&c, "10.88.50.1", &["+tcp", "+short", "tcp.example.test"]);
    assert_eq!(
        out.trim(),
        "203.0.113.7",
        "answered by the upstream over TCP"
    );
    // Its own names stay local.
    let out = dig(&c, "10.88.50.1", &["+short", "c1"]);
    assert_eq!(out.trim(), "10.88.50.2");
    // Upstream gone: SERVFAIL, not silence.
    drop(upstream);
    let out = dig(&c, "10.88.50.1", &["+time=5", "gone.test"]);
    assert!(out.contains("status: SERVFAIL"), "{out}");
}

per_port_type!(
    gateway_answers_ping_and_arp_and_suppresses_arp_for_known_peers,
    ipam_allocates_releases_persists_and_refuses_clearly,
    udhcpc_gets_a_lease_renews_it_and_keeps_it_across_restart,
    dhclient_gets_a_lease_and_the_same_address_after_restart,
    dhclient_renews_its_lease,
    dns_resolves_names_and_aliases_per_network,
    default_bridge_network_does_not_resolve_names,
    malformed_dhcp_and_dns_are_counted_and_rogue_servers_blocked,
    a_namespace_on_two_networks_reaches_both_and_they_stay_isolated,
    other_names_are_forwarded_to_the_upstream_resolver,
);
