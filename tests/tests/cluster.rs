//! The cluster store: hosts (namespaces on one underlay bridge) each running vswitchd with
//! `--store` pointing at one real etcd (Debian's etcd-server) in the underlay's hub namespace.
//! No `--peer` anywhere: networks, addresses, endpoints and peers come from the store.

mod common;

use std::process::{Command, Stdio};

use common::containers::*;
use common::etcd::Etcd;
use common::underlay::{star, Star};
use common::*;
use serde_json::Value;

/// Daemons first, then etcd, then the namespaces (fields drop in order).
struct Cluster {
    d: Vec<Daemon>,
    etcd: Etcd,
    net: Star,
    ips: Vec<String>,
}

fn cluster(tag: &str, third: u8, hosts: usize) -> Cluster {
    cluster_of(tag, third, hosts, 1)
}

/// `hosts` vswitchd hosts and an etcd of `members` members in the hub namespace.
fn cluster_of(tag: &str, third: u8, hosts: usize, members: usize) -> Cluster {
    let ips: Vec<String> = (1..=hosts)
        .map(|i| format!("192.168.{third}.{i}"))
        .collect();
    let hub = format!("192.168.{third}.254");
    let refs: Vec<&str> = ips.iter().map(String::as_str).collect();
    let net = star(tag, &hub, &refs);
    let mut store_ips = vec![hub.clone()];
    for m in 1..members {
        let ip = format!("192.168.{third}.{}", 250 + m);
        net.hub
            .exec_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "br0"]);
        store_ips.push(ip);
    }
    let store_refs: Vec<&str> = store_ips.iter().map(String::as_str).collect();
    let etcd = Etcd::start_members(&net.hub, &store_refs);
    let url = etcd.url();
    let mut d = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let name = format!("n{i}");
        let dm = Daemon::start_keeping_mounts(
            &net.hosts[i],
            &["--store", &url, "--node-name", &name, "--store-ttl", "3"],
        );
        dm.ok(&["vtep", "set", "--local-ip", ip]);
        d.push(dm);
    }
    Cluster { d, etcd, net, ips }
}

/// An overlay network created on host 0, and seen by every other host through the store.
fn cluster_overlay(c: &Cluster, name: &str, vni: &str, subnet: &str, extra: &[&str]) {
    let mut args = vec![
        "network", "create", name, "--driver", "overlay", "--vni", vni, "--subnet", subnet,
    ];
    args.extend_from_slice(extra);
    c.d[0].ok(&args);
    for d in &c.d[1..] {
        assert!(
            wait_until(10, || has_network(d, name)),
            "the network reaches every host: {}",
            d.log()
        );
    }
}

fn nodes(d: &Daemon) -> Vec<Value> {
    d.json(&["cluster", "show"])["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The static entries of `net` as (address, VTEP).
fn static_entries(d: &Daemon, net: &str) -> Vec<(String, String)> {
    let v = d.json(&["fdb", "show", net]);
    v[0]["entries"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|e| e["static"] == true)
        .map(|e| {
            (
                e["ip"].as_str().unwrap_or("").to_string(),
                e["vtep"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn has_entry(d: &Daemon, net: &str, ip: &str, vtep: &str) -> bool {
    static_entries(d, net)
        .iter()
        .any(|(i, v)| i == ip && v == vtep)
}

fn has_network(d: &Daemon, net: &str) -> bool {
    d.json(&["network", "ls"])
        .as_array()
        .is_some_and(|a| a.iter().any(|n| n["name"] == net))
}

fn capture(ns: &Netns, dev: &str, file: &std::path::Path) -> Bg {
    let b = Bg(Command::new("ip")
        .args(["netns", "exec", &ns.name, "tcpdump", "-nn", "-U", "-i", dev])
        .args(["-w"])
        .arg(file)
        .arg("udp port 4789")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    capture_ready(file);
    b
}

/// Waits until tcpdump has opened its file (it writes the header once it captures).
fn capture_ready(file: &std::path::Path) {
    assert!(
        wait_until(10, || std::fs::metadata(file).is_ok_and(|m| m.len() >= 24)),
        "tcpdump started"
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
}

fn read_capture(file: &std::path::Path, filter: &str) -> String {
    must("tcpdump", &["-nn", "-r", file.to_str().unwrap(), filter])
}

#[test]
fn three_hosts_share_overlays_through_etcd() {
    require_root();
    let mut c = cluster("cs", 236, 3);
    assert!(
        wait_until(15, || nodes(&c.d[0]).len() == 3
            && nodes(&c.d[0]).iter().all(|n| n["vtep"].is_string())),
        "every node registered with its VTEP: {}",
        c.d[0].json(&["cluster", "show"])
    );
    let show = c.d[0].json(&["cluster", "show"]);
    assert_eq!(show["status"], "connected", "{show}");
    assert_eq!(show["node"], "n0");

    // A network created on host 0 appears on 1 and 2.
    cluster_overlay(&c, "ov", "300", "10.30.0.0/24", &[]);
    let names = Names::new(&["b", "c"]);
    let (b, cc) = (names.get(0), names.get(1));
    c.d[1].ok(&["container", "create", b, "--network", "ov"]);
    c.d[2].ok(&["container", "create", cc, "--network", "ov"]);
    let (ip_b, ip_c) = (ip_of(&c.d[1], b, "ov"), ip_of(&c.d[2], cc, "ov"));
    assert_ne!(ip_b, ip_c, "one address each");
    // Host 0 lists both endpoints with their VTEPs before any traffic; B knows C's, C B's.
    assert!(
        wait_until(10, || has_entry(&c.d[0], "ov", &ip_b, &c.ips[1])
            && has_entry(&c.d[0], "ov", &ip_c, &c.ips[2])
            && has_entry(&c.d[1], "ov", &ip_c, &c.ips[2])
            && has_entry(&c.d[2], "ov", &ip_b, &c.ips[1])),
        "remote endpoints installed: {} {}",
        c.d[0].json(&["fdb", "show", "ov"]),
        c.d[0].json(&["network", "inspect", "ov"])
    );

    // B and C talk (by address and by name) and nothing is flooded: host 0 gets no datagram,
    // and no inner broadcast crosses the underlay.
    let dir = TempDir::new("csc");
    let (f0, f1) = (dir.path("h0.pcap"), dir.path("h1.pcap"));
    let d0 = capture(&c.net.hosts[0], &c.net.devs[0], &f0);
    let d1 = capture(&c.net.hosts[1], &c.net.devs[1], &f1);
    assert!(exec_ok(&c.d[1], b, &["ping", "-c3", "-i0.2", "-W2", &ip_c]).contains("3 received"));
    assert!(
        exec(&c.d[2], cc, &["ping", "-c1", "-W2", b])
            .status
            .success(),
        "{cc} resolves {b} (on another host) by name"
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    drop((d0, d1));
    let at0 = read_capture(&f0, "");
    assert!(at0.trim().is_empty(), "nothing flooded to host 0: {at0}");
    let bcast = read_capture(&f1, "udp[16:4] = 0xffffffff and udp[20:2] = 0xffff");
    assert!(bcast.trim().is_empty(), "no broadcast crossed: {bcast}");
    let all = read_capture(&f1, "");
    assert!(!all.trim().is_empty(), "the exchange was captured");

    // 60 add-ports at once, 20 on each host: never the same address twice.
    let mut handles = Vec::new();
    let mut spaces = Vec::new();
    for (i, d) in c.d.iter().enumerate() {
        let ns = Netns::new(&format!("cp{i}"));
        for j in 0..20 {
            let sock = d.socket.clone();
            let ns = ns.name.clone();
            handles.push(std::thread::spawn(move || {
                let out = Command::new(bin("vswitchctl"))
                    .arg("--socket")
                    .arg(&sock)
                    .args(["--json", "add-port", "ov", "--netns", &ns])
                    .args(["--ifname", &format!("e{j}"), "--type", "tap"])
                    .output()
                    .unwrap();
                assert!(
                    out.status.success(),
                    "add-port: {}",
                    String::from_utf8_lossy(&out.stdout)
                );
                let v: Value = serde_json::from_slice(&out.stdout).unwrap();
                v["ip"]
                    .as_str()
                    .unwrap()
                    .split('/')
                    .next()
                    .unwrap()
                    .to_string()
            }));
        }
        spaces.push(ns);
    }
    let mut got: Vec<String> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    got.push(ip_b.clone());
    got.push(ip_c.clone());
    let n = got.len();
    got.sort();
    got.dedup();
    assert_eq!(got.len(), n, "62 ports, 62 addresses: {got:?}");

    // Host 2 killed: after its lease, the others forget its endpoints and its addresses are
    // free again.
    c.d[2].stop_with(9);
    assert!(
        wait_until(20, || !nodes(&c.d[0]).iter().any(|n| n["name"] == "n2")
            && !static_entries(&c.d[0], "ov")
                .iter()
                .any(|(_, v)| *v == c.ips[2])
            && !static_entries(&c.d[1], "ov")
                .iter()
                .any(|(_, v)| *v == c.ips[2])),
        "host 2's endpoints leave with its lease: {:?}",
        static_entries(&c.d[0], "ov")
    );
    let claims = c
        .etcd
        .ctl(&["get", "--prefix", "--keys-only", "/vswitch/ipam/ov/"]);
    assert!(
        !claims
            .lines()
            .any(|l| l.trim() == format!("/vswitch/ipam/ov/{ip_c}")),
        "host 2's address is free: {claims}"
    );
    assert_eq!(
        claims.lines().filter(|l| !l.trim().is_empty()).count(),
        41,
        "hosts 0 and 1 keep their 41 addresses, host 2's 21 are free: {claims}"
    );
    // Restarted, it comes back with its ports, and B reaches C again.
    c.d[2].restart();
    assert!(
        wait_until(20, || has_entry(&c.d[1], "ov", &ip_c, &c.ips[2])),
        "host 2's endpoints are back: {:?}",
        static_entries(&c.d[1], "ov")
    );
    assert!(wait_until(10, || exec(
        &c.d[1],
        b,
        &["ping", "-c1", "-W1", &ip_c]
    )
    .status
    .success()));
    drop(spaces);
}

#[test]
fn traffic_survives_a_store_outage_and_changes_wait_for_it() {
    require_root();
    let mut c = cluster("co", 235, 2);
    cluster_overlay(&c, "ov", "301", "10.31.0.0/24", &[]);
    let names = Names::new(&["x", "y", "z"]);
    let (x, y, z) = (names.get(0), names.get(1), names.get(2));
    c.d[0].ok(&["container", "create", x, "--network", "ov"]);
    c.d[1].ok(&["container", "create", y, "--network", "ov"]);
    let ip_y = ip_of(&c.d[1], y, "ov");
    assert!(wait_until(10, || exec(
        &c.d[0],
        x,
        &["ping", "-c1", "-W1", &ip_y]
    )
    .status
    .success()));

    c.etcd.stop();
    assert!(
        wait_until(15, || c.d[0].json(&["cluster", "show"])["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("unavailable"))),
        "the outage is seen"
    );
    // Known traffic goes on, a new port of the cluster's overlay is refused clearly.
    assert!(exec_ok(&c.d[0], x, &["ping", "-c3", "-i0.2", "-W2", &ip_y]).contains("3 received"));
    let (code, msg) = c.d[0].err(&["container", "create", z, "--network", "ov"]);
    assert_eq!(code, "store_unavailable", "{msg}");
    assert!(
        !c.d[0].json(&["container", "ls"]).to_string().contains(z),
        "nothing was made"
    );
    // A host restarted while the store is away starts from its state dir and still reaches
    // what it knew.
    c.d[0].stop_with(9);
    c.d[0].restart();
    assert!(
        wait_until(15, || exec(&c.d[0], x, &["ping", "-c1", "-W1", &ip_y])
            .status
            .success()),
        "restarted without the store, the known endpoint is reachable: {:?}",
        static_entries(&c.d[0], "ov")
    );

    c.etcd.restart();
    assert!(
        wait_until(20, || c.d[0].json(&["cluster", "show"])["status"]
            == "connected"),
        "reconnected: {}",
        c.d[0].log()
    );
    c.d[0].ok(&["container", "create", z, "--network", "ov"]);
    let ip_z = ip_of(&c.d[0], z, "ov");
    assert!(
        wait_until(15, || has_entry(&c.d[1], "ov", &ip_z, &c.ips[0])),
        "the new container is known on the other host: {:?}\n{}\n{}",
        static_entries(&c.d[1], "ov"),
        c.d[1].log(),
        c.etcd.ctl(&["get", "--prefix", "/vswitch/"])
    );
    assert!(exec(&c.d[1], y, &["ping", "-c1", "-W2", &ip_z])
        .status
        .success());
    // Both nodes are registered again after the outage.
    assert!(wait_until(15, || nodes(&c.d[1]).len() == 2));
}

#[test]
fn without_a_store_there_is_no_cluster() {
    require_root();
    let d = Daemon::start();
    let v = d.json(&["cluster", "show"]);
    assert_eq!(v["configured"], false, "{v}");
    let out = Command::new(bin("vswitchd"))
        .args([
            "--store",
            "http://127.0.0.1:2379",
            "--socket",
            "/nonexistent/x.sock",
        ])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a bad store URL is refused at start"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("etcd://"));
}

/// An encrypted overlay of the cluster: the nodes' WireGuard keys come from the store (no
/// `--peer-key`), and what crosses the underlay is WireGuard only.
#[test]
fn encrypted_overlays_learn_keys_from_the_store() {
    require_root();
    let c = cluster("ce", 234, 2);
    cluster_overlay(&c, "sec", "302", "10.32.0.0/24", &["--encrypted"]);
    let names = Names::new(&["p", "q"]);
    let (p, q) = (names.get(0), names.get(1));
    c.d[0].ok(&["container", "create", p, "--network", "sec"]);
    c.d[1].ok(&["container", "create", q, "--network", "sec"]);
    let ip_q = ip_of(&c.d[1], q, "sec");
    let dir = TempDir::new("cec");
    let file = dir.path("u.pcap");
    let dump = Bg(Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.net.hosts[0].name,
            "tcpdump",
            "-nn",
            "-U",
            "-i",
        ])
        .arg(&c.net.devs[0])
        .arg("-w")
        .arg(&file)
        .arg("udp")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    capture_ready(&file);
    assert!(
        wait_until(15, || exec(&c.d[0], p, &["ping", "-c1", "-W1", &ip_q])
            .status
            .success()),
        "an encrypted session from the store's keys: {}",
        c.d[0].json(&["vtep", "show"])
    );
    assert!(exec_ok(&c.d[0], p, &["ping", "-c3", "-i0.2", "-W2", &ip_q]).contains("3 received"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    drop(dump);
    let v = c.d[0].json(&["vtep", "show"]);
    let k1 = c.d[1].json(&["vtep", "show"])["public_key"].clone();
    assert_eq!(v["wg_peers"][0]["public_key"], k1, "{v}");
    let text = read_capture(&file, "");
    assert!(!text.contains(".4789:"), "no plain VXLAN: {text}");
    assert!(text.contains(".51820:"), "WireGuard: {text}");
}

/// A three-member etcd: one member down changes nothing; two down (no quorum) and the nodes
/// serve what they know and refuse new ports of the cluster's overlays; back, and changes go
/// through again.
#[test]
fn a_three_member_store_loses_its_quorum_and_recovers() {
    require_root();
    let mut c = cluster_of("cq", 233, 2, 3);
    cluster_overlay(&c, "ov", "303", "10.33.0.0/24", &[]);
    let names = Names::new(&["m", "n", "o", "r"]);
    let (m, n, o, r) = (names.get(0), names.get(1), names.get(2), names.get(3));
    c.d[0].ok(&["container", "create", m, "--network", "ov"]);
    c.d[1].ok(&["container", "create", n, "--network", "ov"]);
    let ip_n = ip_of(&c.d[1], n, "ov");
    assert!(wait_until(10, || exec(
        &c.d[0],
        m,
        &["ping", "-c1", "-W1", &ip_n]
    )
    .status
    .success()));
    // One member down: a quorum is left; a new port goes through and reaches the other host
    // (the client may need a moment to move off the stopped member).
    c.etcd.stop_member(0);
    assert!(
        wait_until(20, || c.d[0]
            .ctl(&["container", "create", o, "--network", "ov"])
            .status
            .success()),
        "one member down changes nothing: {}",
        c.d[0].json(&["cluster", "show"])
    );
    let ip_o = ip_of(&c.d[0], o, "ov");
    assert!(
        wait_until(15, || has_entry(&c.d[1], "ov", &ip_o, &c.ips[0])),
        "{:?}\n{}\n{}",
        static_entries(&c.d[1], "ov"),
        c.d[0].log(),
        c.d[1].log()
    );
    // Two down: no quorum.
    c.etcd.stop_member(1);
    assert!(
        wait_until(20, || c.d[0].json(&["cluster", "show"])["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("unavailable"))),
        "without a quorum the store is unavailable: {}",
        c.d[0].json(&["cluster", "show"])
    );
    assert!(exec_ok(&c.d[0], m, &["ping", "-c3", "-i0.2", "-W2", &ip_n]).contains("3 received"));
    let (code, msg) = c.d[0].err(&["container", "create", r, "--network", "ov"]);
    assert_eq!(code, "store_unavailable", "{msg}");
    // Back.
    c.etcd.start_member(0);
    c.etcd.start_member(1);
    assert!(
        wait_until(40, || c.d[0].json(&["cluster", "show"])["status"]
            == "connected"),
        "reconnected: {}",
        c.d[0].json(&["cluster", "show"])
    );
    c.d[0].ok(&["container", "create", r, "--network", "ov"]);
    let ip_r = ip_of(&c.d[0], r, "ov");
    assert!(
        wait_until(20, || has_entry(&c.d[1], "ov", &ip_r, &c.ips[0])),
        "{:?}",
        static_entries(&c.d[1], "ov")
    );
}

/// A store with authentication: the user and password are passed through; a wrong password
/// leaves the node unconnected, saying why.
#[test]
fn the_store_user_and_password_are_passed_through() {
    require_root();
    let net = star("ca", "192.168.232.254", &["192.168.232.1", "192.168.232.2"]);
    let etcd = Etcd::start(&net.hub, "192.168.232.254");
    etcd.ctl(&["user", "add", "root", "--new-user-password=s3cret"]);
    etcd.ctl(&["auth", "enable"]);
    let url = etcd.url();
    // A user needs a password: refused at start, clearly.
    let out = Command::new(bin("vswitchd"))
        .args([
            "--store",
            &url,
            "--store-user",
            "root",
            "--socket",
            "/nonexistent/x.sock",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("password"));
    let with_pw = |pw: &str, name: &str, host: &Netns| {
        Daemon::start_keeping_mounts(
            host,
            &[
                "--store",
                &url,
                "--node-name",
                name,
                "--store-user",
                "root",
                "--store-password",
                pw,
            ],
        )
    };
    let ok = with_pw("s3cret", "a", &net.hosts[0]);
    let bad = with_pw("wrong", "b", &net.hosts[1]);
    assert!(
        wait_until(15, || ok.json(&["cluster", "show"])["status"]
            == "connected"),
        "{}",
        ok.json(&["cluster", "show"])
    );
    ok.ok(&["vtep", "set", "--local-ip", "192.168.232.1"]);
    assert!(wait_until(10, || nodes(&ok)
        .iter()
        .any(|n| n["name"] == "a")));
    let v = bad.json(&["cluster", "show"]);
    assert!(
        v["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("unavailable")),
        "a wrong password is not let in: {v}"
    );
    assert!(
        !nodes(&ok).iter().any(|n| n["name"] == "b"),
        "the refused node is not registered"
    );
}

/// A store that speaks TLS and wants client certificates: the CA, certificate and key are
/// passed through; without a client certificate the node is not let in.
#[test]
fn the_store_over_tls_with_client_certificates() {
    require_root();
    let net = star("ct", "192.168.231.254", &["192.168.231.1", "192.168.231.2"]);
    let certs = TempDir::new("ctls");
    let tls = common::etcd::Tls::make(&certs, "192.168.231.254");
    let etcd = Etcd::start_tls(&net.hub, "192.168.231.254", tls.clone());
    let url = etcd.url();
    let (ca, cert, key) = (
        tls.ca.display().to_string(),
        tls.client_cert.display().to_string(),
        tls.client_key.display().to_string(),
    );
    let ok = Daemon::start_keeping_mounts(
        &net.hosts[0],
        &[
            "--store",
            &url,
            "--node-name",
            "a",
            "--store-ca",
            &ca,
            "--store-cert",
            &cert,
            "--store-key",
            &key,
        ],
    );
    let no_cert = Daemon::start_keeping_mounts(
        &net.hosts[1],
        &["--store", &url, "--node-name", "b", "--store-ca", &ca],
    );
    assert!(
        wait_until(15, || ok.json(&["cluster", "show"])["status"]
            == "connected"),
        "{}",
        ok.json(&["cluster", "show"])
    );
    assert!(ok.json(&["cluster", "show"])["store"]
        .as_str()
        .is_some_and(|s| s.starts_with("https://")));
    ok.ok(&["vtep", "set", "--local-ip", "192.168.231.1"]);
    ok.ok(&[
        "network",
        "create",
        "ov",
        "--driver",
        "overlay",
        "--vni",
        "304",
        "--subnet",
        "10.34.0.0/24",
    ]);
    assert!(etcd
        .ctl(&["get", "/vswitch/networks/ov"])
        .contains("10.34.0.0/24"));
    std::thread::sleep(std::time::Duration::from_secs(2));
    let v = no_cert.json(&["cluster", "show"]);
    assert!(
        v["status"]
            .as_str()
            .is_some_and(|s| s.starts_with("unavailable")),
        "no client certificate, no session: {v}"
    );
}
