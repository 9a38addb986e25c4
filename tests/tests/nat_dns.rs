//! Names from the outside: containers resolve names through a real resolver (dnsmasq) in the
//! "external" namespace — asked directly through the NAT, or through their gateway's embedded
//! DNS, which forwards to the resolvers of the host's resolv.conf when none are configured.
//!
//! The daemon runs in the test's "host" namespace through `ip netns exec`, so its
//! `/etc/resolv.conf` is the bind mount of `/etc/netns/HOST/resolv.conf` that the test writes (the
//! machine's own resolv.conf is never read or touched). The host namespace also gets a link of its
//! own into the external one (as a real host has its own NIC beside the switch's dedicated uplink):
//! the forwarder's queries leave from the host's stack, as the host's would.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::egress::*;
use common::*;
use serde_json::Value;

/// A second resolver address in the external namespace.
const SERVER2: &str = "203.0.113.11";
/// What each resolver answers for `only.dnsmasq.test`.
const ANSWER1: &str = "198.51.100.7";
const ANSWER2: &str = "198.51.100.8";
const NAME: &str = "only.dnsmasq.test";

/// dnsmasq on `ip` in `ns`, answering `NAME` with `answer`, NXDOMAIN for other names under
/// dnsmasq.test and REFUSED for the rest (it has no upstream of its own); queries logged to
/// `dir/dnsmasq-IP.log`. Killed by PID on drop.
fn dnsmasq(ns: &Netns, ip: &str, answer: &str, dir: &TempDir) -> Bg {
    let log = std::fs::File::create(dir.path(&format!("dnsmasq-{ip}.log"))).unwrap();
    let child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "dnsmasq", "--keep-in-foreground"])
        .arg("--conf-file=/dev/null")
        .args([
            "--no-resolv",
            "--no-hosts",
            "--bind-interfaces",
            "--port=53",
        ])
        .arg(format!("--listen-address={ip}"))
        .arg(format!(
            "--pid-file={}",
            dir.path(&format!("dnsmasq-{ip}.pid")).display()
        ))
        .args(["--user=root", "--log-queries", "--log-facility=-"])
        .arg("--local=/dnsmasq.test/")
        .arg(format!("--host-record={NAME},{answer}"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .expect("start dnsmasq (scripts/deps.sh installs dnsmasq-base)");
    let bg = Bg(child);
    assert!(
        wait_until(10, || dig(ns, ip, NAME).1 == vec![answer.to_string()]),
        "dnsmasq answers on {ip}: {}",
        dnsmasq_log(dir, ip)
    );
    bg
}

fn dnsmasq_log(dir: &TempDir, ip: &str) -> String {
    std::fs::read_to_string(dir.path(&format!("dnsmasq-{ip}.log"))).unwrap_or_default()
}

/// One query with dig: (status, the A records answered).
fn dig(ns: &Netns, server: &str, name: &str) -> (String, Vec<String>) {
    let at = format!("@{server}");
    let out = ns.exec(&["dig", "+time=2", "+tries=2", &at, name, "A"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or("no answer")
        .to_string();
    let answers = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_string())
        })
        .collect();
    (status, answers)
}

/// The host namespace's own link into the external one (198.18.0.2/30 ↔ 198.18.0.1/30) and its
/// route to the "internet": what the host's stack — and so the forwarder — uses.
fn host_link(w: &World) {
    let here = format!("{}l", w.host.name);
    let there = format!("{}m", w.host.name);
    must(
        "ip",
        &[
            "link",
            "add",
            &here,
            "netns",
            &w.host.name,
            "type",
            "veth",
            "peer",
            "name",
            &there,
            "netns",
            &w.ext.name,
        ],
    );
    w.host
        .exec_ok(&["ip", "addr", "add", "198.18.0.2/30", "dev", &here]);
    w.host.exec_ok(&["ip", "link", "set", &here, "up"]);
    w.ext
        .exec_ok(&["ip", "addr", "add", "198.18.0.1/30", "dev", &there]);
    w.ext.exec_ok(&["ip", "link", "set", &there, "up"]);
    w.host
        .exec_ok(&["ip", "route", "add", "203.0.113.0/24", "via", "198.18.0.1"]);
}

/// `/etc/netns/NS/resolv.conf` written by the test (what `ip netns exec NS` mounts over
/// `/etc/resolv.conf`); the file and its directory are removed on drop.
struct NetnsResolvConf {
    dir: PathBuf,
}

impl NetnsResolvConf {
    fn new(ns: &Netns, text: &str) -> NetnsResolvConf {
        let dir = Path::new("/etc/netns").join(&ns.name);
        std::fs::create_dir_all(&dir).unwrap();
        let guard = NetnsResolvConf { dir };
        guard.write(text);
        guard
    }

    fn path(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }

    /// Rewrites the file in place (same inode: the bind mount shows the new text).
    fn write(&self, text: &str) {
        std::fs::write(self.path(), text).unwrap();
    }
}

impl Drop for NetnsResolvConf {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The daemon's DNS forwarding as `show` reports it.
fn dns_info(d: &Daemon) -> Value {
    d.json(&["show"])["daemon"]["dns"].clone()
}

fn upstreams(d: &Daemon) -> Vec<String> {
    dns_info(d)["upstreams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A container on network `web` (10.77.0.0/24, gateway 10.77.0.1), named `c1`.
fn container(d: &Daemon) -> Netns {
    d.ok(&["network", "create", "web", "--subnet", "10.77.0.0/24"]);
    let c1 = Netns::new("c1");
    d.ok(&["add-port", "web", "--netns", &c1.name, "--name", "c1"]);
    c1
}

fn a_container_asks_a_resolver_outside_through_the_nat() {
    require_root();
    let w = world();
    let tmp = TempDir::new("dns");
    let _dns = dnsmasq(&w.ext, SERVER, ANSWER1, &tmp);
    let d = Daemon::start_with(Some(&w.host), &[]);
    let c1 = container(&d);
    assert_eq!(
        dig(&c1, SERVER, NAME).1,
        Vec::<String>::new(),
        "no uplink yet: no answer"
    );
    set_uplink(&d, &w);
    assert_eq!(
        dig(&c1, SERVER, NAME),
        ("NOERROR".to_string(), vec![ANSWER1.to_string()])
    );
    let (status, answers) = dig(&c1, SERVER, "nobody.dnsmasq.test");
    assert_eq!((status.as_str(), answers.len()), ("NXDOMAIN", 0));
    let log = dnsmasq_log(&tmp, SERVER);
    assert!(
        log.contains(&format!("query[A] {NAME} from 192.0.2.2")),
        "the resolver saw the uplink's address: {log}"
    );
    let ct = d.json(&["conntrack", "show"]);
    let rows = ct.as_array().cloned().unwrap_or_default();
    assert!(
        rows.iter().any(|r| r["proto"] == "udp"
            && r["dst"] == SERVER
            && r["dport"] == 53
            && r["src"] == "10.77.0.2"),
        "a UDP flow to the resolver: {ct}"
    );
}

fn the_hosts_resolv_conf_is_followed() {
    require_root();
    let w = world();
    host_link(&w);
    w.ext
        .exec_ok(&["ip", "addr", "add", &format!("{SERVER2}/32"), "dev", "lo"]);
    let tmp = TempDir::new("dns");
    let _dns1 = dnsmasq(&w.ext, SERVER, ANSWER1, &tmp);
    let _dns2 = dnsmasq(&w.ext, SERVER2, ANSWER2, &tmp);
    let conf = NetnsResolvConf::new(
        &w.host,
        &format!("# the test's host resolvers\nsearch example.test\nnameserver {SERVER}\noptions edns0 timeout:1\n"),
    );
    let d = Daemon::start_with_host_resolv_conf(Some(&w.host), &[]);
    // The daemon sees the test's file at /etc/resolv.conf (ip netns exec's bind mount).
    let seen = std::fs::read_to_string(format!("/proc/{}/root/etc/resolv.conf", d.pid())).unwrap();
    assert!(
        seen.contains(&format!("nameserver {SERVER}")),
        "bind-mounted: {seen}"
    );
    let info = dns_info(&d);
    assert_eq!(info["source"], "resolv.conf", "{info}");
    assert_eq!(info["resolv_conf"], "/etc/resolv.conf", "{info}");
    assert_eq!(upstreams(&d), vec![format!("{SERVER}:53")]);
    assert!(
        d.ok(&["show"]).contains(&format!(
            "dns upstreams (from /etc/resolv.conf): {SERVER}:53"
        )),
        "{}",
        d.ok(&["show"])
    );

    let c1 = container(&d);
    set_uplink(&d, &w);
    assert_eq!(
        dig(&c1, "10.77.0.1", NAME),
        ("NOERROR".to_string(), vec![ANSWER1.to_string()]),
        "forwarded to the host's resolver"
    );
    // Through the container's own resolv.conf (the switch's gateway) too.
    let out = c1.exec_ok(&["getent", "hosts", NAME]);
    assert!(out.starts_with(ANSWER1), "{out}");
    let log = dnsmasq_log(&tmp, SERVER);
    assert!(
        log.contains(&format!("query[A] {NAME} from 198.18.0.2")),
        "asked from the host's own stack: {log}"
    );
    // The resolver's own answers pass through as they are.
    assert_eq!(
        dig(&c1, "10.77.0.1", "nobody.dnsmasq.test"),
        dig(&w.ext, SERVER, "nobody.dnsmasq.test")
    );
    assert_eq!(dig(&c1, "10.77.0.1", "nobody.dnsmasq.test").0, "NXDOMAIN");
    assert_eq!(dig(&w.ext, SERVER, "example.com").0, "REFUSED");
    assert_eq!(dig(&c1, "10.77.0.1", "example.com").0, "REFUSED");
    // The network's own names stay local.
    assert_eq!(dig(&c1, "10.77.0.1", "c1").1, vec!["10.77.0.2".to_string()]);

    // The file rewritten in place: the next answers come from the second resolver.
    let inode = |p: &Path| std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(p).unwrap());
    let before = inode(&conf.path());
    conf.write(&format!("nameserver {SERVER2}\n"));
    assert_eq!(inode(&conf.path()), before, "rewritten in place");
    assert!(
        wait_until(10, || dig(&c1, "10.77.0.1", NAME).1
            == vec![ANSWER2.to_string()]),
        "the new resolver answers: {:?}\n{}",
        dig(&c1, "10.77.0.1", NAME),
        d.log()
    );
    assert_eq!(upstreams(&d), vec![format!("{SERVER2}:53")]);
    assert!(
        d.log().contains(&format!("upstreams={SERVER2}:53")),
        "the change is logged: {}",
        d.log()
    );

    // No nameserver left: SERVFAIL at once, as without any upstream.
    conf.write("# nothing\n");
    assert!(
        wait_until(10, || upstreams(&d).is_empty()),
        "{}",
        dns_info(&d)
    );
    assert_eq!(dig(&c1, "10.77.0.1", NAME).0, "SERVFAIL");
    let info = dns_info(&d);
    assert!(info["servfail"].as_u64().unwrap() >= 1, "{info}");
    assert!(info["answered"].as_u64().unwrap() >= 5, "{info}");
}

fn a_resolv_conf_replaced_by_rename_is_followed() {
    require_root();
    let w = world();
    host_link(&w);
    let tmp = TempDir::new("dns");
    let _dns = dnsmasq(&w.ext, SERVER, ANSWER1, &tmp);
    // A resolv.conf of the daemon's own (--resolv-conf), missing at start.
    let file = tmp.path("resolv.conf");
    let d = Daemon::start_with_host_resolv_conf(
        Some(&w.host),
        &["--resolv-conf", file.to_str().unwrap()],
    );
    assert!(upstreams(&d).is_empty(), "{}", dns_info(&d));
    let c1 = container(&d);
    assert_eq!(dig(&c1, "10.77.0.1", NAME).0, "SERVFAIL", "no upstream yet");
    // Created the way resolvconf and systemd-resolved do it: a new file renamed over the path.
    let new = tmp.path("resolv.conf.new");
    std::fs::write(&new, format!("nameserver {SERVER}\n")).unwrap();
    std::fs::rename(&new, &file).unwrap();
    assert!(
        wait_until(10, || dig(&c1, "10.77.0.1", NAME).1
            == vec![ANSWER1.to_string()]),
        "{}",
        d.log()
    );
    // Replaced again by one naming nothing that answers: no longer the old resolver's answer.
    std::fs::write(&new, "nameserver 198.18.0.1\n").unwrap();
    std::fs::rename(&new, &file).unwrap();
    assert!(
        wait_until(10, || upstreams(&d) == vec!["198.18.0.1:53".to_string()]),
        "{}",
        dns_info(&d)
    );
    assert_eq!(dig(&c1, "10.77.0.1", NAME).0, "SERVFAIL");
    let mut d = d;
    let status = d.stop_with(15);
    assert!(status.success(), "SIGTERM stops vswitchd cleanly: {status}");
}

fn configured_upstreams_win_over_resolv_conf() {
    require_root();
    let w = world();
    host_link(&w);
    w.ext
        .exec_ok(&["ip", "addr", "add", &format!("{SERVER2}/32"), "dev", "lo"]);
    let tmp = TempDir::new("dns");
    let _dns1 = dnsmasq(&w.ext, SERVER, ANSWER1, &tmp);
    let _dns2 = dnsmasq(&w.ext, SERVER2, ANSWER2, &tmp);
    let _conf = NetnsResolvConf::new(&w.host, &format!("nameserver {SERVER}\n"));
    let d = Daemon::start_with_host_resolv_conf(Some(&w.host), &["--dns-upstream", SERVER2]);
    let info = dns_info(&d);
    assert_eq!(info["source"], "config", "{info}");
    assert_eq!(upstreams(&d), vec![format!("{SERVER2}:53")]);
    let c1 = container(&d);
    assert_eq!(dig(&c1, "10.77.0.1", NAME).1, vec![ANSWER2.to_string()]);
    assert!(!dnsmasq_log(&tmp, SERVER).contains(&format!("{NAME} from 198.18.0.2")));
    // A clean stop with the forwarder running (its workers hold the dataplane's injector).
    let mut d = d;
    let status = d.stop_with(15);
    assert!(status.success(), "SIGTERM stops vswitchd cleanly: {status}");
}

#[test]
fn udp_through_nat() {
    with_port_type("tap", a_container_asks_a_resolver_outside_through_the_nat);
}

#[test]
fn host_resolv_conf() {
    with_port_type("tap", the_hosts_resolv_conf_is_followed);
}

#[test]
fn resolv_conf_renamed() {
    with_port_type("tap", a_resolv_conf_replaced_by_rename_is_followed);
}

#[test]
fn configured_win() {
    with_port_type("tap", configured_upstreams_win_over_resolv_conf);
}
