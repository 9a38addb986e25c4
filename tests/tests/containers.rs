//! Containers and Docker's network modes: namespaces the switch creates and manages (`container
//! create/exec/rm`), on the default bridge, user-defined networks with DNS, host, none and
//! `container:OTHER`, legacy links, `network connect/disconnect`, restarts and clean-up.
//!
//! The daemons run in the root namespace (TAP ports: their interfaces live only in the
//! containers' namespaces); the AF_XDP case runs the daemon in a "host" namespace entered with
//! nsenter, which keeps the mount namespace, so the namespaces it mounts are seen by the test.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::containers::*;
use common::*;

#[test]
fn seed_example_two_containers_serve_each_other_by_ip_and_name() {
    require_root();
    let d = Daemon::start();
    let names = Names::new(&["c1", "c2", "c3"]);
    let (c1, c2, c3) = (names.get(0), names.get(1), names.get(2));
    let net = unique("mb");
    let other = unique("on");
    d.ok(&["network", "create", &net, "--subnet", "10.61.0.0/24"]);
    d.ok(&["network", "create", &other, "--subnet", "10.62.0.0/24"]);
    d.ok(&["container", "create", c1, "--network", &net]);
    d.ok(&["container", "create", c2, "--network", &net]);
    d.ok(&["container", "create", c3, "--network", &other]);
    let dir = TempDir::new("www");
    let _s1 = http_server(&d, c1, &dir, 80);
    let _s2 = http_server(&d, c2, &dir, 80);
    let (ip1, ip2) = (ip_of(&d, c1, &net), ip_of(&d, c2, &net));
    for (client, server, ip) in [(c1, c2, &ip2), (c2, c1, &ip1)] {
        let want = format!("hello from {server}\n");
        assert!(
            wait_until(10, || curl(&d, client, &format!("http://{ip}/")).as_deref()
                == Some(want.as_str())),
            "{client} -> {server} by IP"
        );
        assert_eq!(
            curl(&d, client, &format!("http://{server}/")).as_deref(),
            Some(want.as_str()),
            "{client} -> {server} by name"
        );
    }
    // A container on another network reaches neither, by address or by name.
    assert_eq!(curl(&d, c3, &format!("http://{ip2}/")), None);
    assert_eq!(curl(&d, c3, &format!("http://{c2}/")), None);
    assert!(!exec(&d, c3, &["getent", "hosts", c2]).status.success());
    // The files `container exec` mounts: the container's own resolver, hosts and hostname.
    let resolv = exec_ok(&d, c1, &["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.61.0.1"), "{resolv}");
    let hosts = exec_ok(&d, c1, &["cat", "/etc/hosts"]);
    assert!(hosts.contains(&format!("{ip1}\t{c1}")), "{hosts}");
    assert_eq!(exec_ok(&d, c1, &["cat", "/etc/hostname"]).trim(), c1);
    // Inspect: what docker inspect users look for.
    let v = inspect(&d, c1);
    assert_eq!(v["mode"], net.as_str());
    assert_eq!(v["netns"], c1);
    assert_eq!(v["netns_path"], format!("/run/netns/{c1}"));
    assert_eq!(v["networks"][0]["gateway"], "10.61.0.1");
    assert_eq!(v["networks"][0]["ifname"], "eth0");
    assert!(v["networks"][0]["mac"]
        .as_str()
        .unwrap()
        .starts_with("02:42:"));
    assert_eq!(v["dns_servers"], serde_json::json!(["10.61.0.1"]));
}

#[test]
fn none_host_and_container_modes() {
    require_root();
    let d = Daemon::start();
    let names = Names::new(&["nn", "hh", "ow", "jn"]);
    let (none, host, owner, joined) = (names.get(0), names.get(1), names.get(2), names.get(3));
    let net = unique("m");
    d.ok(&["network", "create", &net, "--subnet", "10.63.0.0/24"]);
    d.ok(&["container", "create", none, "--network", "none"]);
    assert_eq!(links(&d, none), vec!["lo".to_string()]);
    assert!(
        exec_ok(&d, none, &["ip", "-o", "link"]).contains("UP"),
        "lo is up"
    );
    assert_eq!(inspect(&d, none)["mode"], "none");

    d.ok(&["container", "create", host, "--network", "host"]);
    let host_links: Vec<String> = must("ip", &["-o", "link"])
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(|s| s.trim().split('@').next().unwrap().to_string())
        .collect();
    assert_eq!(
        links(&d, host),
        host_links,
        "host mode runs in vswitchd's namespace"
    );
    let v = inspect(&d, host);
    assert_eq!(v["mode"], "host");
    assert!(v["netns"].is_null());
    assert_eq!(v["netns_path"], format!("/proc/{}/ns/net", d.pid()));
    assert!(v["networks"].as_array().unwrap().is_empty());

    d.ok(&["container", "create", owner, "--network", &net]);
    d.ok(&[
        "container",
        "create",
        joined,
        "--network",
        &format!("container:{owner}"),
    ]);
    assert_eq!(links(&d, joined), links(&d, owner));
    assert_eq!(
        exec_ok(&d, joined, &["ip", "-br", "addr"]),
        exec_ok(&d, owner, &["ip", "-br", "addr"])
    );
    // A server in OTHER on 127.0.0.1 is reachable from the joined container.
    let dir = TempDir::new("lo");
    let root = dir.path("r");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::write(root.join("index.html"), "loopback\n").unwrap();
    let _srv = Bg(Command::new(bin("vswitchctl"))
        .arg("--socket")
        .arg(&d.socket)
        .args([
            "container",
            "exec",
            owner,
            "--",
            "python3",
            "-m",
            "http.server",
            "8081",
        ])
        .args(["--bind", "127.0.0.1", "--directory"])
        .arg(&root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    assert!(wait_until(10, || curl(
        &d,
        joined,
        "http://127.0.0.1:8081/"
    )
    .as_deref()
        == Some("loopback\n")));
    let v = inspect(&d, joined);
    assert_eq!(v["mode"], format!("container:{owner}"));
    assert_eq!(v["netns"], owner);
    assert_eq!(inspect(&d, owner)["joined_by"], serde_json::json!([joined]));
    // Removing OTHER while one is joined is refused, naming it; --force removes both.
    let (code, msg) = d.err(&["container", "rm", owner]);
    assert_eq!(code, "container_in_use");
    assert!(msg.contains(joined), "{msg}");
    assert!(Path::new("/run/netns").join(owner).exists());
    d.ok(&["container", "rm", owner, "--force"]);
    let ls = d.json(&["container", "ls"]);
    let left: Vec<&str> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(left, {
        let mut v = vec![none, host];
        v.sort();
        v
    });
    assert!(!Path::new("/run/netns").join(owner).exists());
    // Host mode removes nothing of the host's.
    d.ok(&["container", "rm", host]);
    assert!(Path::new(&format!("/proc/{}/ns/net", d.pid())).exists());
}

#[test]
fn default_bridge_has_no_names_but_links_follow_their_container() {
    require_root();
    let d = Daemon::start();
    let names = Names::new(&["db", "web", "tmp"]);
    let (db, web, tmp) = (names.get(0), names.get(1), names.get(2));
    d.ok(&["container", "create", db]);
    let db_ip = ip_of(&d, db, "bridge");
    assert!(db_ip.starts_with("172.17."), "{db_ip}");
    assert_eq!(inspect(&d, db)["mode"], "bridge");
    d.ok(&[
        "container",
        "create",
        web,
        "--link",
        &format!("{db}:database"),
    ]);
    // Names do not resolve on the default bridge...
    let plain = unique("x");
    d.ok(&["container", "create", &plain]);
    let _plain = Names(vec![plain.clone()]);
    assert!(!exec(&d, &plain, &["getent", "hosts", db]).status.success());
    // ...but links do, through /etc/hosts, by name and by alias.
    for n in [db, "database"] {
        let got = exec_ok(&d, web, &["getent", "hosts", n]);
        assert!(got.starts_with(&format!("{db_ip} ")), "{n}: {got}");
    }
    assert!(exec_ok(&d, web, &["ping", "-c1", "-W2", "database"]).contains("1 received"));
    assert_eq!(
        inspect(&d, web)["links"],
        serde_json::json!([format!("{db}:database")])
    );
    // The linked container is re-created with a new address: the link follows.
    d.ok(&["container", "rm", db]);
    assert!(!exec(&d, web, &["getent", "hosts", "database"])
        .status
        .success());
    d.ok(&["container", "create", tmp]);
    d.ok(&["container", "create", db]);
    let new_ip = ip_of(&d, db, "bridge");
    assert_ne!(new_ip, db_ip);
    let got = exec_ok(&d, web, &["getent", "hosts", "database"]);
    assert!(got.starts_with(&format!("{new_ip} ")), "{got}");
    assert!(exec_ok(&d, web, &["ping", "-c1", "-W2", db]).contains("1 received"));
}

#[test]
fn several_networks_and_connect_disconnect_update_dns() {
    require_root();
    let d = Daemon::start();
    let names = Names::new(&["multi", "peer"]);
    let (multi, peer) = (names.get(0), names.get(1));
    let (a, b, c) = (unique("na"), unique("nb"), unique("nc"));
    d.ok(&["network", "create", &a, "--subnet", "10.64.0.0/24"]);
    d.ok(&["network", "create", &b, "--subnet", "10.65.0.0/24"]);
    d.ok(&["network", "create", &c, "--subnet", "10.66.0.0/24"]);
    d.ok(&[
        "container",
        "create",
        multi,
        "--network",
        &a,
        "--network",
        &b,
        "--alias",
        "api",
    ]);
    let v = inspect(&d, multi);
    let ifs: Vec<(&str, &str)> = v["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["ifname"].as_str().unwrap(),
                n["network"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ifs, vec![("eth0", a.as_str()), ("eth1", b.as_str())]);
    let got = links(&d, multi);
    assert!(
        got.contains(&"eth0".into()) && got.contains(&"eth1".into()),
        "{got:?}"
    );
    d.ok(&["container", "create", peer, "--network", &c]);
    // Not yet on c: the peer cannot resolve it.
    assert!(!exec(&d, peer, &["getent", "hosts", multi]).status.success());
    d.ok(&["network", "connect", &c, multi, "--alias", "late"]);
    assert!(links(&d, multi).contains(&"eth2".into()));
    let ip_c = ip_of(&d, multi, &c);
    for n in [multi, "late", "api"] {
        let got = exec_ok(&d, peer, &["getent", "hosts", n]);
        assert!(got.starts_with(&format!("{ip_c} ")), "{n}: {got}");
    }
    assert!(exec_ok(&d, peer, &["ping", "-c1", "-W2", multi]).contains("1 received"));
    let resolv = exec_ok(&d, multi, &["cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.66.0.1"), "{resolv}");
    d.ok(&["network", "disconnect", &c, multi]);
    assert!(!links(&d, multi).contains(&"eth2".into()));
    assert!(!exec(&d, peer, &["getent", "hosts", multi]).status.success());
    assert!(!exec(&d, peer, &["ping", "-c1", "-W1", &ip_c])
        .status
        .success());
    let resolv = exec_ok(&d, multi, &["cat", "/etc/resolv.conf"]);
    assert!(!resolv.contains("10.66.0.1"), "{resolv}");
    // Connect picks the first free interface name again.
    d.ok(&["network", "disconnect", &a, multi]);
    d.ok(&["network", "connect", &c, multi]);
    let v = inspect(&d, multi);
    let c_if = v["networks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["network"] == c.as_str())
        .unwrap()["ifname"]
        .clone();
    assert_eq!(c_if, "eth0");
}

/// Nothing the switch made for a container stays behind after `container rm`, `network rm
/// --force` or `del-port`; containers and their modes survive SIGTERM and kill -9.
#[test]
fn removal_leaves_nothing_and_restarts_keep_containers() {
    require_root();
    let mut d = Daemon::start();
    let names = Names::new(&["ra", "rb", "rn", "rj"]);
    let (ra, rb, rn, rj) = (names.get(0), names.get(1), names.get(2), names.get(3));
    let net = unique("rn");
    d.ok(&["network", "create", &net, "--subnet", "10.67.0.0/24"]);
    d.ok(&["container", "create", ra, "--network", &net]);
    d.ok(&[
        "container",
        "create",
        rb,
        "--network",
        &net,
        "--network",
        "bridge",
    ]);
    d.ok(&[
        "container",
        "create",
        rn,
        "--network",
        "none",
        "--dns",
        "192.0.2.53",
    ]);
    d.ok(&[
        "container",
        "create",
        rj,
        "--network",
        &format!("container:{ra}"),
    ]);
    assert!(exec_ok(&d, rn, &["cat", "/etc/resolv.conf"]).contains("nameserver 192.0.2.53"));
    // A plain add-port namespace on the same network: its resolv.conf entry must go with the
    // network too (it used to stay, naming the vanished gateway).
    let plain = Netns::new("pl");
    d.ok(&["add-port", &net, "--netns", &plain.name]);
    let plain_resolv = Path::new("/etc/netns")
        .join(&plain.name)
        .join("resolv.conf");
    assert!(plain_resolv.exists());

    let summary = |d: &Daemon| -> Vec<(String, String, Vec<String>)> {
        let ls = d.json(&["container", "ls"]);
        ls.as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["name"].as_str().unwrap().to_string(),
                    c["mode"].as_str().unwrap().to_string(),
                    c["networks"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|n| format!("{}={}", n["network"], n["ip"]))
                        .collect(),
                )
            })
            .collect()
    };
    let before = summary(&d);
    assert_eq!(before.len(), 4);
    for signal in [15, 9] {
        d.stop_with(signal);
        d.restart();
        assert_eq!(summary(&d), before, "after signal {signal}");
        d.wait_up(&[
            &format!("{ra}-eth0"),
            &format!("{rb}-eth0"),
            &format!("{rb}-eth1"),
        ]);
        let ip = ip_of(&d, ra, &net);
        assert!(
            wait_until(10, || exec(&d, rb, &["ping", "-c1", "-W1", &ip])
                .status
                .success()),
            "traffic between containers after signal {signal}"
        );
        assert_eq!(links(&d, rn), vec!["lo".to_string()]);
    }
    // del-port of a container's interface: gone from the container, its files updated.
    d.ok(&["del-port", &format!("{rb}-eth1")]);
    assert!(!links(&d, rb).contains(&"eth1".into()));
    assert!(!exec_ok(&d, rb, &["cat", "/etc/resolv.conf"]).contains("172.17.0.1"));
    // network rm --force: every port on it goes, the containers stay (without it), and no
    // file names its gateway.
    d.ok(&["network", "rm", &net, "--force"]);
    assert!(
        !plain_resolv.exists(),
        "network rm --force left {}",
        plain_resolv.display()
    );
    assert!(!plain.has_link("eth0"));
    for c in [ra, rb] {
        assert!(
            links(&d, c) == vec!["lo".to_string()],
            "{c}: {:?}",
            links(&d, c)
        );
        let resolv = exec_ok(&d, c, &["cat", "/etc/resolv.conf"]);
        assert!(!resolv.contains("10.67.0.1"), "{c}: {resolv}");
    }
    // container rm: namespace, interfaces, files and ports all gone.
    d.ok(&["container", "rm", ra, "--force"]);
    d.ok(&["container", "rm", rb]);
    d.ok(&["container", "rm", rn]);
    for c in [ra, rb, rn, rj] {
        assert!(
            !Path::new("/run/netns").join(c).exists(),
            "{c}'s namespace left"
        );
        assert!(
            !Path::new("/etc/netns").join(c).exists(),
            "{c}'s /etc/netns left"
        );
    }
    assert!(d.json(&["container", "ls"]).as_array().unwrap().is_empty());
    let ports = d.json(&["show"])["ports"].as_array().unwrap().len();
    assert_eq!(ports, 0);
    // And they stay gone after a restart.
    d.stop_with(15);
    d.restart();
    assert!(d.json(&["container", "ls"]).as_array().unwrap().is_empty());
}

#[test]
fn bad_input_is_a_clear_error_and_changes_nothing() {
    require_root();
    let d = Daemon::start();
    let names = Names::new(&["ok", "sq", "hs", "nx"]);
    let (ok, squat, host, nx) = (names.get(0), names.get(1), names.get(2), names.get(3));
    let net = unique("b");
    d.ok(&["network", "create", &net, "--subnet", "10.68.0.0/24"]);
    d.ok(&[
        "container",
        "create",
        ok,
        "--network",
        &net,
        "--ip",
        "10.68.0.5",
    ]);
    d.ok(&["container", "create", host, "--network", "host"]);
    let before = d.show_stable();
    let cases: Vec<(Vec<String>, &str, &str)> = vec![
        (
            vec!["--network".into(), "nosuchnet".into()],
            "network_not_found",
            "nosuchnet",
        ),
        (
            vec![
                "--network".into(),
                "host".into(),
                "--network".into(),
                net.clone(),
            ],
            "invalid_argument",
            "combined",
        ),
        (
            vec!["--network".into(), format!("container:{nx}")],
            "invalid_argument",
            "own namespace",
        ),
        (
            vec!["--network".into(), "container:nosuchcontainer".into()],
            "container_not_found",
            "nosuchcontainer",
        ),
        (
            vec![
                "--network".into(),
                net.clone(),
                "--ip".into(),
                "10.99.0.5".into(),
            ],
            "invalid_argument",
            "10.99.0.5",
        ),
        (
            vec![
                "--network".into(),
                net.clone(),
                "--ip".into(),
                "10.68.0.5".into(),
            ],
            "address_in_use",
            "10.68.0.5",
        ),
        (
            vec![
                "--network".into(),
                "none".into(),
                "--ip".into(),
                "10.68.0.9".into(),
            ],
            "invalid_argument",
            "--ip",
        ),
        (
            vec!["--link".into(), "nosuchcontainer".into()],
            "container_not_found",
            "nosuchcontainer",
        ),
        (
            vec!["--network".into(), net.clone(), "--net".into(), net.clone()],
            "invalid_argument",
            "twice",
        ),
    ];
    for (args, want_code, want_msg) in cases {
        let mut a = vec!["container", "create", nx];
        a.extend(args.iter().map(String::as_str));
        let (code, msg) = d.err(&a);
        assert_eq!(code, want_code, "{args:?}: {msg}");
        assert!(msg.contains(want_msg), "{args:?}: {msg}");
        assert!(
            !Path::new("/run/netns").join(nx).exists(),
            "{args:?} left a namespace"
        );
    }
    let (code, msg) = d.err(&["container", "create", ok, "--network", &net]);
    assert_eq!(code, "container_exists", "{msg}");
    // A namespace by that name already exists (not the switch's): refused, left alone.
    must("ip", &["netns", "add", squat]);
    let (code, msg) = d.err(&["container", "create", squat]);
    assert_eq!(code, "invalid_argument");
    assert!(msg.contains("already exists"), "{msg}");
    assert!(Path::new("/run/netns").join(squat).exists());
    // connect: already on it, unknown network, a mode without interfaces.
    let (_, msg) = d.err(&["network", "connect", &net, ok]);
    assert!(msg.contains("already on network"), "{msg}");
    let (code, _) = d.err(&["network", "connect", "nosuchnet", ok]);
    assert_eq!(code, "network_not_found");
    let (code, _) = d.err(&["network", "connect", &net, "nosuchcontainer"]);
    assert_eq!(code, "container_not_found");
    let (_, msg) = d.err(&["network", "connect", &net, host]);
    assert!(msg.contains("host"), "{msg}");
    // disconnect: from a mode that has none, from a network it is not on.
    let (_, msg) = d.err(&["network", "disconnect", &net, host]);
    assert!(msg.contains("no interface"), "{msg}");
    let (_, msg) = d.err(&["network", "disconnect", "bridge", ok]);
    assert!(msg.contains("not on network"), "{msg}");
    let (code, _) = d.err(&["container", "rm", "nosuchcontainer"]);
    assert_eq!(code, "container_not_found");
    assert_eq!(d.show_stable(), before, "nothing changed");
    // exec of a command that does not exist: a clear error, exit 127.
    let out = exec(&d, ok, &["no-such-command-here"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no such command"));
    let out = exec(&d, "nosuchcontainer", &["true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // And the container that exists still works.
    assert!(exec_ok(&d, ok, &["ping", "-c1", "-W2", "10.68.0.1"]).contains("1 received"));
}

/// `--type afxdp` containers: veth pairs whose host ends an AF_XDP socket serves, in a "host"
/// namespace of the test's (the daemon enters it with nsenter, keeping the mount namespace);
/// traffic flows, and survives kill -9 (the veths are taken over).
#[test]
fn afxdp_containers() {
    require_root();
    let host = Netns::new("ah");
    let mut d = Daemon::start_keeping_mounts(&host, &[]);
    let names = Names::new(&["xa", "xb"]);
    let (xa, xb) = (names.get(0), names.get(1));
    let net = unique("x");
    d.ok(&["network", "create", &net, "--subnet", "10.69.0.0/24"]);
    d.ok(&[
        "container",
        "create",
        xa,
        "--network",
        &net,
        "--type",
        "afxdp",
    ]);
    d.ok(&[
        "container",
        "create",
        xb,
        "--network",
        &net,
        "--type",
        "afxdp",
    ]);
    let port = d.port(&format!("{xa}-eth0"));
    assert_eq!(port["kind"], "afxdp");
    let veth = port["host_ifname"].as_str().unwrap().to_string();
    assert!(
        host.has_link(&veth),
        "the veth's host end is in the daemon's namespace"
    );
    let dir = TempDir::new("xw");
    let _srv = http_server(&d, xb, &dir, 80);
    let want = format!("hello from {xb}\n");
    assert!(wait_until(10, || curl(&d, xa, &format!("http://{xb}/"))
        .as_deref()
        == Some(want.as_str())));
    d.stop_with(9);
    d.restart();
    d.wait_up(&[&format!("{xa}-eth0"), &format!("{xb}-eth0")]);
    assert!(wait_until(10, || curl(&d, xa, &format!("http://{xb}/"))
        .as_deref()
        == Some(want.as_str())));
    d.ok(&["container", "rm", xa]);
    assert!(!host.has_link(&veth), "container rm removed the veth");
    assert!(!Path::new("/run/netns").join(xa).exists());
}
