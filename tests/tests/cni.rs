//! The CNI plugin driven as a runtime drives it: `vswitch-cni` exec'd with the spec's
//! environment and a network configuration on stdin, for every command and every spec
//! version it supports, with its results checked against the spec's result schema and its
//! errors against the spec's error object. The container is a namespace of the test's own.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

const VERSIONS: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// One plugin run: (exit status success, stdout as JSON or Null when empty).
fn cni(command: &str, env: &[(&str, &str)], stdin: &str) -> (bool, Value) {
    let mut cmd = Command::new(bin("vswitch-cni"));
    cmd.env_clear()
        .env("CNI_COMMAND", command)
        .env("CNI_PATH", "/nonexistent")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run vswitch-cni");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let v = if text.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
    };
    (out.status.success(), v)
}

fn conf(version: &str, name: &str, daemon: &Daemon, extra: Value) -> String {
    let mut c = json!({
        "cniVersion": version,
        "name": name,
        "type": "vswitch-cni",
        "socket": daemon.socket.display().to_string(),
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        c[k] = v;
    }
    c.to_string()
}

fn is_ipv4(s: &Value) -> bool {
    s.as_str()
        .is_some_and(|s| s.parse::<std::net::Ipv4Addr>().is_ok())
}

fn is_cidr(s: &Value) -> bool {
    s.as_str().is_some_and(|s| {
        s.split_once('/').is_some_and(|(a, p)| {
            a.parse::<std::net::Ipv4Addr>().is_ok() && p.parse::<u8>().is_ok_and(|p| p <= 32)
        })
    })
}

fn is_mac(s: &Value) -> bool {
    s.as_str().is_some_and(|s| {
        s.len() == 17
            && s.split(':').count() == 6
            && s.split(':').all(|b| u8::from_str_radix(b, 16).is_ok())
    })
}

/// The spec's result schema for `version` (SPEC.md "Success", and for 0.3.1/0.4.0 the
/// `version` field of each IP): every field present has its type, no unknown field.
fn check_result(version: &str, r: &Value) {
    let obj = r.as_object().expect("result is an object");
    for k in obj.keys() {
        assert!(
            ["cniVersion", "interfaces", "ips", "routes", "dns"].contains(&k.as_str()),
            "unknown result field {k} in {r}"
        );
    }
    assert_eq!(r["cniVersion"], version, "result version: {r}");
    let ifaces = r["interfaces"].as_array().expect("interfaces");
    for i in ifaces {
        let keys: Vec<&str> = i.as_object().unwrap().keys().map(String::as_str).collect();
        for k in &keys {
            let allowed =
                ["name", "mac", "sandbox"].contains(k) || (version == "1.1.0" && *k == "mtu");
            assert!(allowed, "interface field {k} not in {version}: {i}");
        }
        assert!(i["name"].is_string(), "{i}");
        assert!(is_mac(&i["mac"]), "{i}");
        assert!(i["sandbox"].is_string(), "{i}");
        if version == "1.1.0" {
            assert!(i["mtu"].is_u64(), "{i}");
        }
    }
    for ip in r["ips"].as_array().expect("ips") {
        assert!(is_cidr(&ip["address"]), "{ip}");
        assert!(is_ipv4(&ip["gateway"]), "{ip}");
        let idx = ip["interface"].as_u64().expect("interface index") as usize;
        assert!(idx < ifaces.len(), "{ip}");
        if version.starts_with("0.") {
            assert_eq!(ip["version"], "4", "{version} names the IP version: {ip}");
        } else {
            assert!(
                ip.get("version").is_none(),
                "{version} has no IP version: {ip}"
            );
        }
    }
    for rt in r["routes"].as_array().expect("routes") {
        assert!(is_cidr(&rt["dst"]), "{rt}");
        assert!(rt.get("gw").is_none_or(is_ipv4), "{rt}");
    }
    if let Some(dns) = r.get("dns") {
        assert!(
            dns["nameservers"].as_array().unwrap().iter().all(is_ipv4),
            "{dns}"
        );
        assert!(dns.get("domain").is_none_or(Value::is_string), "{dns}");
        assert!(dns.get("search").is_none_or(Value::is_array), "{dns}");
    }
}

/// The spec's error object, with the code expected.
fn check_error(out: (bool, Value), code: u64) -> Value {
    let (ok, e) = out;
    assert!(!ok, "expected an error, got {e}");
    assert_eq!(e["code"], code, "error code: {e}");
    assert!(e["msg"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    assert!(e["cniVersion"].is_string(), "{e}");
    for k in e.as_object().unwrap().keys() {
        assert!(
            ["cniVersion", "code", "msg", "details"].contains(&k.as_str()),
            "unknown error field {k}: {e}"
        );
    }
    e
}

fn ports(d: &Daemon) -> Vec<Value> {
    d.json(&["show"])["ports"].as_array().unwrap().clone()
}

#[test]
fn every_command_and_version_as_the_spec_says() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "web", "--subnet", "10.71.0.0/24"]);
    for version in VERSIONS {
        let ns = Netns::new("cni");
        let netns = format!("/run/netns/{}", ns.name);
        let id = format!("c{}", unique("id"));
        let env = [
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
            ("CNI_ARGS", "IgnoreUnknown=1;K8S_POD_NAME=web1"),
        ];
        let c = conf(version, "web", &d, json!({}));

        // VERSION echoes the asked version and lists all four.
        let (ok, v) = cni("VERSION", &[], &json!({"cniVersion": version}).to_string());
        assert!(ok);
        assert_eq!(v["cniVersion"], version);
        assert_eq!(v["supportedVersions"], json!(VERSIONS));

        // ADD: a real interface with the result's address, reaching its gateway.
        let (ok, r) = cni("ADD", &env, &c);
        assert!(ok, "ADD {version}: {r}");
        check_result(version, &r);
        assert_eq!(r["interfaces"][0]["name"], "eth0");
        assert_eq!(r["interfaces"][0]["sandbox"], netns.as_str());
        let addr = r["ips"][0]["address"].as_str().unwrap().to_string();
        assert!(addr.starts_with("10.71.0."), "{r}");
        assert_eq!(r["ips"][0]["gateway"], "10.71.0.1");
        assert_eq!(
            r["routes"][0],
            json!({"dst": "0.0.0.0/0", "gw": "10.71.0.1"})
        );
        assert_eq!(r["dns"]["nameservers"], json!(["10.71.0.1"]));
        let shown = ns.exec_ok(&["ip", "-o", "-4", "addr", "show", "dev", "eth0"]);
        assert!(shown.contains(&addr), "{shown}");
        let mac = ns.exec_ok(&["cat", "/sys/class/net/eth0/address"]);
        assert_eq!(mac.trim(), r["interfaces"][0]["mac"].as_str().unwrap());
        assert!(ns.ping("10.71.0.1", 2), "the container reaches its gateway");
        // Its runtime's name for it resolves (the gateway's DNS).
        let dig = ns.exec_ok(&["dig", "+short", "+time=2", "@10.71.0.1", "web1.web.vswitch"]);
        assert_eq!(dig.trim(), addr.split('/').next().unwrap(), "{dig}");
        let p = ports(&d)
            .into_iter()
            .find(|p| p["owner"] == format!("cni:{id}:eth0"))
            .expect("the port carries its owner");

        // A repeated ADD of the same attachment gets the same result.
        let (ok, again) = cni("ADD", &env, &c);
        assert!(ok, "{again}");
        assert_eq!(again["ips"], r["ips"]);

        // CHECK: from 0.4.0, against the previous result.
        let with_prev = conf(version, "web", &d, json!({"prevResult": r}));
        if version == "0.3.1" {
            check_error(cni("CHECK", &env, &with_prev), 1);
        } else {
            let (ok, out) = cni("CHECK", &env, &with_prev);
            assert!(ok, "CHECK {version}: {out}");
            assert!(out.is_null(), "CHECK prints nothing: {out}");
            // A previous result that does not match what is there fails.
            let mut wrong = r.clone();
            wrong["ips"][0]["address"] = json!("10.71.0.250/24");
            let c2 = conf(version, "web", &d, json!({"prevResult": wrong}));
            check_error(cni("CHECK", &env, &c2), 100);
            check_error(cni("CHECK", &env, &c), 7); // no prevResult
        }

        // STATUS and GC are 1.1.0's.
        if version == "1.1.0" {
            let (ok, out) = cni("STATUS", &[], &c);
            assert!(ok, "STATUS: {out}");
            let keep = conf(
                version,
                "web",
                &d,
                json!({"cni.dev/valid-attachments": [{"containerID": id, "ifname": "eth0"}]}),
            );
            let (ok, out) = cni("GC", &[], &keep);
            assert!(ok, "GC: {out}");
            assert!(
                ports(&d).iter().any(|x| x["name"] == p["name"]),
                "a valid attachment stays"
            );
        } else {
            check_error(cni("STATUS", &[], &c), 1);
            check_error(cni("GC", &[], &c), 1);
        }

        // DEL removes it; DEL again, and DEL of a namespace gone, are success.
        let (ok, out) = cni("DEL", &env, &with_prev);
        assert!(ok, "DEL {version}: {out}");
        assert!(out.is_null(), "DEL prints nothing: {out}");
        assert!(
            !ports(&d).iter().any(|x| x["name"] == p["name"]),
            "the port is gone"
        );
        assert!(!ns.has_link("eth0"), "the interface is gone");
        assert!(cni("DEL", &env, &c).0, "a second DEL is success");
        let gone = [
            ("CNI_CONTAINERID", id.as_str()),
            ("CNI_NETNS", "/run/netns/vswitch-test-never-made"),
            ("CNI_IFNAME", "eth0"),
        ];
        assert!(
            cni("DEL", &gone, &c).0,
            "DEL with a missing namespace is success"
        );
    }
}

#[test]
fn addresses_macs_and_ports_from_the_runtime() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "web", "--subnet", "10.72.0.0/24"]);
    let ns = Netns::new("cnia");
    let netns = format!("/run/netns/{}", ns.name);
    // podman's --ip and --mac-address arrive in CNI_ARGS; -p as portMappings.
    let env = [
        ("CNI_CONTAINERID", "abcdef0123456789"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "net1"),
        (
            "CNI_ARGS",
            "IgnoreUnknown=1;IP=10.72.0.77;MAC=02:00:00:aa:bb:cc",
        ),
    ];
    let c = conf(
        "1.0.0",
        "web",
        &d,
        json!({
            "capabilities": {"portMappings": true, "aliases": true},
            "runtimeConfig": {
                "portMappings": [{"hostPort": 18080, "containerPort": 80, "protocol": "tcp"}],
                "aliases": {"web": ["api", "Bad_Name!"]},
            },
        }),
    );
    let (ok, r) = cni("ADD", &env, &c);
    assert!(ok, "{r}");
    check_result("1.0.0", &r);
    assert_eq!(r["ips"][0]["address"], "10.72.0.77/24");
    assert_eq!(r["interfaces"][0]["mac"], "02:00:00:aa:bb:cc");
    assert_eq!(r["interfaces"][0]["name"], "net1");
    assert!(ns.has_link("net1"));
    let p = ports(&d)
        .into_iter()
        .find(|p| p["owner"] == "cni:abcdef0123456789:net1")
        .unwrap();
    assert_eq!(p["aliases"], json!(["api"]), "invalid names are left out");
    let publish = d.json(&["publish", "ls"]);
    let row = publish
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["port"] == p["name"])
        .unwrap_or_else(|| panic!("published: {publish}"));
    assert_eq!(row["host_port"], 18080);
    assert_eq!(row["container_port"], 80);

    // The address is taken: another ADD asking for it is refused with the switch's reason.
    let ns2 = Netns::new("cnib");
    let netns2 = format!("/run/netns/{}", ns2.name);
    let env2 = [
        ("CNI_CONTAINERID", "second"),
        ("CNI_NETNS", netns2.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "IP=10.72.0.77"),
    ];
    let e = check_error(cni("ADD", &env2, &conf("1.0.0", "web", &d, json!({}))), 100);
    assert!(
        e["details"].as_str().unwrap().contains("address_in_use"),
        "{e}"
    );
    // An unknown CNI_ARGS key without IgnoreUnknown is refused (code 2).
    let env3 = [
        ("CNI_CONTAINERID", "third"),
        ("CNI_NETNS", netns2.as_str()),
        ("CNI_IFNAME", "eth0"),
        ("CNI_ARGS", "FOO=1"),
    ];
    check_error(cni("ADD", &env3, &conf("1.0.0", "web", &d, json!({}))), 2);
    assert!(!ns2.has_link("eth0"), "nothing was made");

    // GC removes this network's attachments the runtime no longer knows.
    let gc = conf("1.1.0", "web", &d, json!({"cni.dev/valid-attachments": []}));
    assert!(cni("GC", &[], &gc).0);
    assert!(
        !ports(&d).iter().any(|x| x["name"] == p["name"]),
        "a stale attachment is collected"
    );
    assert!(!ns.has_link("net1"));
}

#[test]
fn errors_are_the_specs() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "web", "--subnet", "10.73.0.0/24"]);
    let ns = Netns::new("cnie");
    let netns = format!("/run/netns/{}", ns.name);
    let env = [
        ("CNI_CONTAINERID", "err1"),
        ("CNI_NETNS", netns.as_str()),
        ("CNI_IFNAME", "eth0"),
    ];
    let good = conf("1.0.0", "web", &d, json!({}));
    // A namespace that does not exist: 3.
    let missing = [
        ("CNI_CONTAINERID", "err1"),
        ("CNI_NETNS", "/run/netns/vswitch-test-never-made"),
        ("CNI_IFNAME", "eth0"),
    ];
    check_error(cni("ADD", &missing, &good), 3);
    // Environment missing: 4.
    check_error(cni("ADD", &env[..2], &good), 4);
    check_error(cni("", &env, &good), 4);
    check_error(cni("FROB", &env, &good), 4);
    // Not JSON: 6. Not a configuration: 7. A version it does not speak: 1.
    check_error(cni("ADD", &env, "{not json"), 6);
    check_error(cni("ADD", &env, r#"{"cniVersion":"1.0.0"}"#), 7);
    check_error(cni("ADD", &env, &conf("0.2.0", "web", &d, json!({}))), 1);
    check_error(cni("ADD", &env, &conf("2.0.0", "web", &d, json!({}))), 1);
    // An IPAM section of its own: 2 (the switch's IPAM assigns addresses).
    let ipam = conf("1.0.0", "web", &d, json!({"ipam": {"type": "host-local"}}));
    check_error(cni("ADD", &env, &ipam), 2);
    // An unknown network: 7, with vswitchd's code in the details.
    let e = check_error(cni("ADD", &env, &conf("1.0.0", "nosuch", &d, json!({}))), 7);
    assert!(e["msg"].as_str().unwrap().contains("nosuch"), "{e}");
    assert!(
        e["details"].as_str().unwrap().contains("network_not_found"),
        "{e}"
    );
    let bad_type = conf("1.0.0", "web", &d, json!({"portType": "vhost"}));
    check_error(cni("ADD", &env, &bad_type), 7);
    // An error carries the configuration's version.
    let e = check_error(
        cni("ADD", &missing, &conf("0.4.0", "web", &d, json!({}))),
        3,
    );
    assert_eq!(e["cniVersion"], "0.4.0");
    assert!(!ns.has_link("eth0"), "no error made an interface");
    assert!(ports(&d).is_empty(), "no error made a port");

    // vswitchd not running: ADD says try again later (11), STATUS not available (50).
    let away = json!({
        "cniVersion": "1.1.0", "name": "web", "type": "vswitch-cni",
        "socket": d.dir.join("nobody-listens.sock").display().to_string(),
    })
    .to_string();
    check_error(cni("ADD", &env, &away), 11);
    check_error(cni("STATUS", &[], &away), 50);
    // STATUS of a network vswitchd does not have: 50.
    check_error(
        cni("STATUS", &[], &conf("1.1.0", "nosuch", &d, json!({}))),
        50,
    );
}
