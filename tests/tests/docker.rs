//! Real dockerd (Debian's docker.io 20.10) driving vswitchd through its remote network and IPAM
//! plugin. Both run in the test's "host" namespace (dockerd moves the TAP vswitchd makes into
//! each container's sandbox, so they share a network namespace; nsenter keeps the mount
//! namespace, so vswitchd sees dockerd's sandboxes), with an external namespace behind the
//! uplink for published ports. dockerd is private: its own data root, exec root, socket,
//! pidfile and cgroup parent, `--iptables=false --ip6tables=false --ip-masq=false
//! --ip-forward=false --bridge=none`; the plugin has a name of the test's own, found through a
//! spec file. What dockerd leaves (mounts, cgroup dirs, /run/docker/plugins, /etc/docker/key.json)
//! is removed by a Drop guard.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::egress::{set_uplink, world};
use common::runtimes::{busybox_rootfs_tar, remove_cgroup_parent, unmount_under};
use common::*;
use serde_json::Value;

const PLUGIN_DIR: &str = "/etc/docker/plugins";
const KEY: &str = "/etc/docker/key.json";
const RUN_PLUGINS: &str = "/run/docker/plugins";

struct Dockerd {
    dir: TempDir,
    host: String,
    child: Option<std::process::Child>,
    cgroup_parent: String,
    spec: PathBuf,
    made: Vec<PathBuf>,
    made_key: bool,
}

impl Dockerd {
    /// A private dockerd in `host`, with the plugin `name` at `socket`.
    fn start(host: &Netns, name: &str, socket: &Path) -> Dockerd {
        assert!(
            sh("sh", &["-c", "command -v dockerd"]).status.success(),
            "dockerd is not installed (scripts/deps.sh installs docker.io)"
        );
        let mut made = Vec::new();
        for d in ["/etc/docker", PLUGIN_DIR, "/run/docker", RUN_PLUGINS] {
            // Another test's dockerd may make it at the same moment.
            match std::fs::create_dir(d) {
                Ok(()) => made.push(PathBuf::from(d)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => panic!("cannot make {d}: {e}"),
            }
        }
        let spec = Path::new(PLUGIN_DIR).join(format!("{name}.spec"));
        std::fs::write(&spec, format!("unix://{}\n", socket.display())).unwrap();
        let mut d = Dockerd {
            dir: TempDir::new("dk"),
            host: host.name.clone(),
            child: None,
            cgroup_parent: format!("/{}", unique("dkcg")),
            spec,
            made,
            made_key: !Path::new(KEY).exists(),
        };
        d.spawn();
        d
    }

    fn spawn(&mut self) {
        let p = |n: &str| self.dir.path(n).display().to_string();
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path("dockerd.log"))
            .unwrap();
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.host))
            .arg("dockerd")
            .args(["--data-root", &p("data"), "--exec-root", &p("exec")])
            .args(["--host", &format!("unix://{}", p("docker.sock"))])
            .args(["--pidfile", &p("docker.pid")])
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-parent",
                &self.cgroup_parent,
            ])
            .args(["--iptables=false", "--ip6tables=false", "--ip-masq=false"])
            .args(["--ip-forward=false", "--bridge=none"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        self.child = Some(child);
        let up = wait_until(60, || self.cmd(&["version"]).status.success());
        assert!(up, "dockerd did not answer:\n{}", self.log());
    }

    /// Stops dockerd (SIGTERM, as systemd would), waiting for it.
    fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = sh("kill", &["-TERM", &c.id().to_string()]);
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while std::time::Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("dockerd.log")).unwrap_or_default()
    }

    fn cmd(&self, args: &[&str]) -> Output {
        // docker.io's own client where there is one (another may come first in PATH).
        let client = if Path::new("/usr/bin/docker").exists() {
            "/usr/bin/docker"
        } else {
            "docker"
        };
        Command::new(client)
            .arg("-H")
            .arg(format!("unix://{}", self.dir.path("docker.sock").display()))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run docker")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}{}\n--- dockerd log (tail) ---\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            tail(&self.log(), 30)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn exec_ok(&self, name: &str, cmd: &[&str]) -> String {
        let mut a = vec!["exec", name];
        a.extend_from_slice(cmd);
        self.ok(&a)
    }

    fn pings(&self, from: &str, to: &str) -> bool {
        self.cmd(&["exec", from, "ping", "-c", "2", "-W", "2", to])
            .status
            .success()
    }

    fn inspect(&self, what: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", what])).unwrap();
        v[0].clone()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let ids = self.cmd(&["ps", "-aq"]);
            for id in String::from_utf8_lossy(&ids.stdout).split_whitespace() {
                let _ = self.cmd(&["rm", "-f", id]);
            }
            if std::thread::panicking() {
                eprintln!("--- dockerd log (tail) ---\n{}", tail(&self.log(), 60));
            }
        }
        self.stop();
        unmount_under(&self.dir.0);
        remove_cgroup_parent(&self.cgroup_parent);
        let _ = std::fs::remove_file(&self.spec);
        if self.made_key {
            let _ = std::fs::remove_file(KEY);
        }
        for d in self.made.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn ports(d: &Daemon) -> Vec<Value> {
    d.json(&["show"])["ports"].as_array().unwrap().clone()
}

fn port_for(d: &Daemon, endpoint: &str) -> Option<Value> {
    ports(d)
        .into_iter()
        .find(|p| p["owner"] == format!("docker:{endpoint}"))
}

fn docker_networks(d: &Daemon) -> Vec<Value> {
    d.json(&["network", "ls"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|n| {
            n["owner"]
                .as_str()
                .is_some_and(|o| o.starts_with("docker:"))
        })
        .cloned()
        .collect()
}

/// The endpoint of `container` on docker network `net`.
fn endpoint(dk: &Dockerd, container: &str, net: &str) -> Value {
    dk.inspect(container)["NetworkSettings"]["Networks"][net].clone()
}

fn busybox_image(dk: &Dockerd) {
    let tar = busybox_rootfs_tar(&dk.dir, "hello from docker\n");
    dk.ok(&["import", tar.to_str().unwrap(), "bb"]);
}

#[test]
fn docker_networks_containers_and_restarts() {
    require_root();
    let w = world();
    let plugin_dir = TempDir::new("dkp");
    let plugin_sock = plugin_dir.path("vswitch.sock");
    let sock = plugin_sock.display().to_string();
    let mut d =
        Daemon::start_keeping_mounts(&w.host, &["--docker-plugin", "--docker-socket", &sock]);
    set_uplink(&d, &w);
    let name = unique("vsw");
    let mut dk = Dockerd::start(&w.host, &name, &plugin_sock);
    busybox_image(&dk);

    // A network with the plugin as driver and IPAM: a vswitchd network of that subnet.
    let net_id = dk.ok(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "--subnet",
        "10.91.0.0/24",
        "--ip-range",
        "10.91.0.128/25",
        "--aux-address",
        "router=10.91.0.128",
        "web",
    ]);
    let nets = docker_networks(&d);
    assert_eq!(nets.len(), 1, "{nets:?}");
    assert_eq!(nets[0]["owner"], format!("docker:{net_id}"));
    assert_eq!(nets[0]["subnet"], "10.91.0.0/24");
    assert_eq!(nets[0]["gateway"], "10.91.0.1");
    assert_eq!(
        nets[0]["ip_range"], "10.91.0.128/25",
        "--ip-range is the IPAM sub-pool"
    );
    assert_eq!(nets[0]["aux_addresses"], serde_json::json!(["10.91.0.128"]));
    // The switch's refusal reaches the user.
    let dup = dk.cmd(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "--subnet",
        "10.91.0.0/25",
        "dup",
    ]);
    assert!(!dup.status.success());
    assert!(
        String::from_utf8_lossy(&dup.stderr).contains("overlaps"),
        "{}",
        String::from_utf8_lossy(&dup.stderr)
    );
    // --internal means no way out. (dockerd 20.10 refuses a plugin IPAM network without
    // --subnet before asking the plugin.)
    dk.ok(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "--subnet",
        "10.92.0.0/24",
        "--internal",
        "db",
    ]);
    let db = docker_networks(&d)
        .into_iter()
        .find(|n| n["subnet"] == "10.92.0.0/24")
        .unwrap();
    assert_eq!(db["internal"], true);

    // Two containers: addresses from the sub-pool and --ip, the switch's MAC applied.
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "c1",
        "--network",
        "web",
        "bb",
        "sleep",
        "3600",
    ]);
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "c2",
        "--network",
        "web",
        "--ip",
        "10.91.0.10",
        "bb",
        "sleep",
        "3600",
    ]);
    let e1 = endpoint(&dk, "c1", "web");
    let e2 = endpoint(&dk, "c2", "web");
    let ip1 = e1["IPAddress"].as_str().unwrap().to_string();
    let last: u8 = ip1.split('.').nth(3).unwrap().parse().unwrap();
    assert!(
        ip1.starts_with("10.91.0.") && last > 128,
        "from the sub-pool, not the aux address: {ip1}"
    );
    assert_eq!(e2["IPAddress"], "10.91.0.10");
    let p1 = port_for(&d, e1["EndpointID"].as_str().unwrap()).expect("c1's port");
    assert_eq!(p1["ip"], format!("{ip1}/24"));
    assert_eq!(
        p1["mac"], e1["MacAddress"],
        "dockerd applied the switch's MAC"
    );
    let inside = dk.exec_ok("c1", &["cat", "/sys/class/net/eth0/address"]);
    assert_eq!(inside, p1["mac"].as_str().unwrap());
    assert!(dk.pings("c1", "10.91.0.10"), "c1 reaches c2");
    assert!(dk.pings("c2", &ip1), "c2 reaches c1");
    assert!(dk.pings("c1", "c2"), "c1 reaches c2 by name");
    assert!(dk.pings("c1", "10.91.0.1"), "the gateway answers");

    // network connect/disconnect: eth1 comes and goes, with its port.
    dk.ok(&["network", "connect", "db", "c1"]);
    let edb = endpoint(&dk, "c1", "db");
    let ipdb = edb["IPAddress"].as_str().unwrap().to_string();
    assert!(ipdb.starts_with("10.92.0."), "{ipdb}");
    let addrs = dk.exec_ok("c1", &["ip", "-4", "addr", "show", "eth1"]);
    assert!(addrs.contains(&ipdb), "{addrs}");
    assert!(port_for(&d, edb["EndpointID"].as_str().unwrap()).is_some());
    let routes = dk.exec_ok("c1", &["ip", "route"]);
    assert!(
        !routes.contains("via 10.92.0.1"),
        "an internal network gives no default route: {routes}"
    );
    dk.ok(&["network", "disconnect", "db", "c1"]);
    assert!(port_for(&d, edb["EndpointID"].as_str().unwrap()).is_none());
    assert!(!dk
        .cmd(&["exec", "c1", "ip", "link", "show", "eth1"])
        .status
        .success());

    // -p: the switch publishes it on the uplink; the external side fetches the page.
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "www",
        "--network",
        "web",
        "-p",
        "8080:80",
        "bb",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/www",
    ]);
    let published = d.json(&["publish", "ls"]);
    assert!(
        published
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["host_port"] == 8080),
        "{published}"
    );
    let page = w
        .ext
        .exec_ok(&["curl", "-sf", "--max-time", "10", "http://192.0.2.2:8080/"]);
    assert_eq!(page, "hello from docker\n");
    dk.ok(&["rm", "-f", "www"]);
    assert!(d.json(&["publish", "ls"]).as_array().unwrap().is_empty());

    // vswitchd killed (-9) and restarted: the containers keep their interfaces and traffic.
    d.stop_with(9);
    d.restart();
    assert!(dk.pings("c1", "10.91.0.10"), "traffic after kill -9");
    // A clean stop leaves dockerd's interfaces in place too.
    d.stop_with(15);
    d.restart();
    assert!(dk.pings("c2", &ip1), "traffic after a clean restart");
    // A stopped container starts again (new endpoint, same --ip).
    dk.ok(&["stop", "-t", "0", "c2"]);
    dk.ok(&["start", "c2"]);
    assert!(dk.pings("c1", "10.91.0.10"), "c2 started again");

    // dockerd restarted: containers stop with it and start again on the same networks.
    dk.stop();
    dk.spawn();
    dk.ok(&["start", "c1", "c2"]);
    assert!(dk.pings("c1", "c2"), "after dockerd restarted");

    // Removing everything leaves nothing in the switch or in the host namespace.
    dk.ok(&["rm", "-f", "c1", "c2"]);
    dk.ok(&["network", "rm", "web", "db"]);
    let left: Vec<Value> = ports(&d)
        .into_iter()
        .filter(|p| {
            p["owner"]
                .as_str()
                .is_some_and(|o| o.starts_with("docker:"))
        })
        .collect();
    assert!(left.is_empty(), "ports left: {left:?}");
    assert!(docker_networks(&d).is_empty(), "networks left");
    let links = w.host.links();
    assert!(
        !links.iter().any(|l| l.starts_with("vsd")),
        "interfaces left: {links:?}"
    );
}

/// `--opt encrypted` on an overlay through the plugin: a `docker run` container on host 1
/// reaches a container of a second vswitchd host over WireGuard. Host 1's vswitchd has a
/// cluster store: the plugin tells dockerd its networks reach across hosts.
#[test]
fn docker_encrypted_overlay() {
    require_root();
    const H1: &str = "192.168.238.1";
    const H2: &str = "192.168.238.2";
    let u = common::underlay::underlay("dw", H1, H2);
    let plugin_dir = TempDir::new("dkp");
    let plugin_sock = plugin_dir.path("vswitch.sock");
    let sock = plugin_sock.display().to_string();
    let etcd = common::etcd::Etcd::start(&u.h2, H2);
    let url = etcd.url();
    let d1 = Daemon::start_keeping_mounts(
        &u.h1,
        &[
            "--docker-plugin",
            "--docker-socket",
            &sock,
            "--store",
            &url,
            "--node-name",
            "d1",
        ],
    );
    let d2 = Daemon::start_keeping_mounts(&u.h2, &[]);
    assert!(wait_until(15, || d1.json(&["cluster", "show"])["status"]
        == "connected"));
    d1.ok(&["vtep", "set", "--local-ip", H1]);
    d2.ok(&["vtep", "set", "--local-ip", H2]);
    let key = |d: &Daemon| {
        d.json(&["vtep", "show"])["public_key"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let (k1, k2) = (key(&d1), key(&d2));
    d2.ok(&[
        "network",
        "create",
        "enc",
        "--driver",
        "overlay",
        "--vni",
        "93",
        "--subnet",
        "10.93.0.0/24",
        "--ip-range",
        "10.93.0.128/25",
        "--encrypted",
        "--peer",
        H1,
        "--peer-key",
        &k1,
    ]);
    let names = common::containers::Names::new(&["dw"]);
    let c2 = names.get(0);
    d2.ok(&["container", "create", c2, "--network", "enc"]);
    let ip2 = common::containers::ip_of(&d2, c2, "enc");

    let name = unique("vsw");
    let dk = Dockerd::start(&u.h1, &name, &plugin_sock);
    busybox_image(&dk);
    let peers = format!("peers={H2}");
    let keys = format!("peer-keys={k2}");
    dk.ok(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "--subnet",
        "10.93.0.0/24",
        "--ip-range",
        "10.93.0.0/25",
        "--opt",
        "driver=overlay",
        "--opt",
        "vni=93",
        "--opt",
        "encrypted",
        "--opt",
        &peers,
        "--opt",
        &keys,
        "enc",
    ]);
    assert!(
        d1.log()
            .contains("scope=\"local\" connectivity_scope=\"global\""),
        "with a store the driver's networks reach across hosts: {}",
        d1.log()
    );
    let nets = docker_networks(&d1);
    assert_eq!(nets.len(), 1, "{nets:?}");
    assert_eq!(nets[0]["driver"], "overlay");
    assert_eq!(nets[0]["vni"], 93);
    assert_eq!(nets[0]["encrypted"], true, "{:?}", nets[0]);
    dk.ok(&[
        "run",
        "-d",
        "--name",
        "e1",
        "--network",
        "enc",
        "bb",
        "sleep",
        "3600",
    ]);
    assert!(
        wait_until(20, || dk.pings("e1", &ip2)),
        "the docker container reaches the other host's: {}",
        d1.json(&["vtep", "show"])
    );
    let v = d1.json(&["vtep", "show"]);
    assert!(
        v["wg_peers"][0]["handshake_age_secs"].is_u64(),
        "a session: {v}"
    );
    assert!(
        v["wg_peers"][0]["rx_packets"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );
    // A bad key through the plugin: Docker shows the switch's refusal.
    let bad = dk.cmd(&[
        "network",
        "create",
        "-d",
        &name,
        "--ipam-driver",
        &name,
        "--subnet",
        "10.94.0.0/24",
        "--opt",
        "driver=overlay",
        "--opt",
        "vni=94",
        "--opt",
        "encrypted",
        "--opt",
        &peers,
        "--opt",
        "peer-keys=not-a-key",
        "bad",
    ]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("WireGuard key"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
    dk.ok(&["rm", "-f", "e1"]);
    dk.ok(&["network", "rm", "enc"]);
    assert!(docker_networks(&d1).is_empty(), "networks left");
    drop(etcd);
}
