//! Real podman (Debian's 4.3, CNI backend) running containers on vswitchd's networks through
//! `vswitch-cni`: a private podman (its own root, runroot, tmpdir, config, network config dir
//! and plugin dir; vfs storage; runc with cgroupfs under a cgroup parent of the test's own),
//! an image imported from a busybox-static rootfs. Everything it leaves — containers, mounts,
//! cgroup dirs, libcni's cache dir — is removed by a Drop guard.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::runtimes::{busybox_rootfs_tar, remove_cgroup_parent, unmount_under};
use common::*;
use serde_json::{json, Value};

/// libcni's result cache, which podman 4.3 does not let us move.
const CNI_CACHE: &str = "/var/lib/cni";

struct Podman {
    dir: TempDir,
    cgroup_parent: String,
    made_cni_cache: bool,
}

impl Podman {
    /// A private podman whose CNI networks are `networks` of `daemon`.
    fn new(daemon: &Daemon, networks: &[(&str, &str)]) -> Podman {
        for tool in ["podman", "runc", "conmon"] {
            assert!(
                sh("sh", &["-c", &format!("command -v {tool}")])
                    .status
                    .success(),
                "{tool} is not installed (scripts/deps.sh installs it)"
            );
        }
        let dir = TempDir::new("pm");
        let p = Podman {
            cgroup_parent: format!("/{}", unique("pmcg")),
            made_cni_cache: !Path::new(CNI_CACHE).exists(),
            dir,
        };
        let plugins = p.dir.path("plugins");
        let netconf = p.dir.path("net.d");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::create_dir_all(&netconf).unwrap();
        std::os::unix::fs::symlink(bin("vswitch-cni"), plugins.join("vswitch-cni")).unwrap();
        // The example the README and install.sh ship, with the test's names and socket.
        let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/vswitch.conflist");
        let example: Value =
            serde_json::from_str(&std::fs::read_to_string(example).unwrap()).unwrap();
        for (name, version) in networks {
            let mut list = example.clone();
            list["cniVersion"] = json!(version);
            list["name"] = json!(name);
            list["plugins"][0]["network"] = json!(name);
            list["plugins"][0]["socket"] = json!(daemon.socket.display().to_string());
            std::fs::write(netconf.join(format!("{name}.conflist")), list.to_string()).unwrap();
        }
        // These machines lack CAP_SYS_RESOURCE: ulimits within the hard limits.
        let conf = format!(
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=4096:4096\"]\n\
             [network]\nnetwork_backend = \"cni\"\ncni_plugin_dirs = [\"{}\"]\nnetwork_config_dir = \"{}\"\n\
             [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nevents_logfile_path = \"{}\"\n",
            plugins.display(),
            netconf.display(),
            p.dir.path("events.log").display()
        );
        std::fs::write(p.dir.path("containers.conf"), conf).unwrap();
        // The image: busybox-static and its applets.
        let tar = busybox_rootfs_tar(&p.dir, "hello from podman\n");
        p.ok(&["import", tar.to_str().unwrap(), "bb"]);
        p
    }

    fn cmd(&self, args: &[&str]) -> Output {
        Command::new("podman")
            .env("CONTAINERS_CONF", self.dir.path("containers.conf"))
            .arg("--root")
            .arg(self.dir.path("root"))
            .arg("--runroot")
            .arg(self.dir.path("runroot"))
            .arg("--tmpdir")
            .arg(self.dir.path("tmp"))
            .args(["--storage-driver", "vfs", "--runtime", "runc"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run podman")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cmd(args);
        assert!(
            out.status.success(),
            "podman {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `podman run -d` in the test's cgroup parent.
    fn run(&self, name: &str, extra: &[&str]) -> String {
        let mut a = vec![
            "run",
            "-d",
            "--name",
            name,
            "--cgroup-parent",
            &self.cgroup_parent,
        ];
        a.extend_from_slice(extra);
        a.extend(["bb", "sleep", "600"]);
        self.ok(&a).trim().to_string()
    }

    fn exec(&self, name: &str, cmd: &[&str]) -> Output {
        let mut a = vec!["exec", name];
        a.extend_from_slice(cmd);
        self.cmd(&a)
    }

    fn inspect(&self, name: &str) -> Value {
        let v: Value = serde_json::from_str(&self.ok(&["inspect", name])).unwrap();
        v[0].clone()
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-af", "-t", "0"]);
        // Mounts podman may have left under its dirs (shm, overlay of a crashed container),
        // and the cgroup dirs of the test's parent.
        unmount_under(&self.dir.0);
        remove_cgroup_parent(&self.cgroup_parent);
        if self.made_cni_cache {
            let _ = std::fs::remove_dir(Path::new(CNI_CACHE).join("results"));
            let _ = std::fs::remove_dir(CNI_CACHE);
        }
    }
}

fn port_of<'a>(ports: &'a [Value], id: &str, ifname: &str) -> Option<&'a Value> {
    ports
        .iter()
        .find(|p| p["owner"] == format!("cni:{id}:{ifname}"))
}

fn ports(d: &Daemon) -> Vec<Value> {
    d.json(&["show"])["ports"].as_array().unwrap().clone()
}

#[test]
fn podman_containers_on_vswitch_networks() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "pweb", "--subnet", "10.81.0.0/24"]);
    d.ok(&["network", "create", "pdb", "--subnet", "10.82.0.0/24"]);
    // pweb in CNI 1.0.0 (podman 4.3's newest), pdb in 0.4.0.
    let pm = Podman::new(&d, &[("pweb", "1.0.0"), ("pdb", "0.4.0")]);
    let nets = pm.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(nets.contains("pweb vswitch-cni"), "{nets}");

    // Two containers: one with --ip, one given an address by the switch's IPAM.
    let a = pm.run("ctra", &["--network", "pweb", "--ip", "10.81.0.50"]);
    let b = pm.run("ctrb", &["--network", "pweb", "--network-alias", "bee"]);
    let ps = ports(&d);
    let pa = port_of(&ps, &a, "eth0").expect("a port for ctra").clone();
    let pb = port_of(&ps, &b, "eth0").expect("a port for ctrb").clone();
    assert_eq!(pa["ip"], "10.81.0.50/24", "--ip is honoured");
    let b_ip = pb["ip"]
        .as_str()
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    assert!(b_ip.starts_with("10.81.0."), "{pb}");
    // podman knows the addresses the plugin returned.
    let ia = pm.inspect("ctra");
    assert_eq!(
        ia["NetworkSettings"]["Networks"]["pweb"]["IPAddress"],
        "10.81.0.50"
    );
    let ib = pm.inspect("ctrb");
    assert_eq!(
        ib["NetworkSettings"]["Networks"]["pweb"]["IPAddress"],
        b_ip.as_str()
    );
    assert_eq!(
        ib["NetworkSettings"]["Networks"]["pweb"]["MacAddress"], pb["mac"],
        "podman shows the switch's MAC"
    );
    // Inside, the interface has the address; they ping each other by address and by name.
    let addr = pm.exec("ctra", &["ip", "-4", "addr", "show", "eth0"]);
    assert!(String::from_utf8_lossy(&addr.stdout).contains("10.81.0.50/24"));
    let ping = |from: &str, to: &str| {
        pm.exec(from, &["ping", "-c", "2", "-W", "2", to])
            .status
            .success()
    };
    assert!(ping("ctra", &b_ip), "ctra pings ctrb's address");
    assert!(ping("ctrb", "10.81.0.50"), "ctrb pings ctra's address");
    assert!(ping("ctrb", "10.81.0.1"), "the gateway answers");
    let look = pm.exec("ctra", &["nslookup", "bee", "10.81.0.1"]);
    let text = String::from_utf8_lossy(&look.stdout);
    assert!(text.contains(&b_ip), "ctra resolves ctrb's alias: {text}");
    let look = pm.exec("ctrb", &["nslookup", "ctra", "10.81.0.1"]);
    let text = String::from_utf8_lossy(&look.stdout);
    assert!(
        text.contains("10.81.0.50"),
        "ctrb resolves ctra by name: {text}"
    );
    // HTTP between them.
    assert!(pm
        .exec("ctra", &["httpd", "-p", "80", "-h", "/www"])
        .status
        .success());
    let page = pm.exec("ctrb", &["wget", "-q", "-O", "-", "http://ctra/"]);
    assert_eq!(String::from_utf8_lossy(&page.stdout), "hello from podman\n");

    // network connect: eth1 on pdb; disconnect takes it away again.
    pm.ok(&["network", "connect", "pdb", "ctra"]);
    let ps = ports(&d);
    let p1 = port_of(&ps, &a, "eth1")
        .expect("connect made a port on pdb")
        .clone();
    assert_eq!(p1["network"], "pdb");
    let addr = pm.exec("ctra", &["ip", "-4", "addr", "show", "eth1"]);
    let db_ip = p1["ip"].as_str().unwrap().to_string();
    assert!(
        String::from_utf8_lossy(&addr.stdout).contains(&db_ip),
        "eth1 has {db_ip}"
    );
    assert!(ping("ctra", "10.82.0.1"), "eth1 reaches pdb's gateway");
    pm.ok(&["network", "disconnect", "pdb", "ctra"]);
    assert!(
        port_of(&ports(&d), &a, "eth1").is_none(),
        "disconnect removed the port"
    );
    assert!(!pm
        .exec("ctra", &["ip", "link", "show", "eth1"])
        .status
        .success());

    // -p arrives as a publish of the container's port.
    let c = pm.run("ctrc", &["--network", "pweb", "-p", "18081:80"]);
    let pc = port_of(&ports(&d), &c, "eth0").unwrap().clone();
    let published = d.json(&["publish", "ls"]);
    assert!(
        published
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["port"] == pc["name"]
                && r["host_port"] == 18081
                && r["container_port"] == 80),
        "{published}"
    );

    // podman rm runs DEL: nothing is left, and ctra's address is free for another.
    pm.ok(&["rm", "-f", "-t", "0", "ctra", "ctrb", "ctrc"]);
    let left: Vec<Value> = ports(&d)
        .into_iter()
        .filter(|p| p["owner"].as_str().is_some_and(|o| o.starts_with("cni:")))
        .collect();
    assert!(left.is_empty(), "ports left: {left:?}");
    assert!(d.json(&["publish", "ls"]).as_array().unwrap().is_empty());
    let again = pm.run("ctrd", &["--network", "pweb", "--ip", "10.81.0.50"]);
    let pd = port_of(&ports(&d), &again, "eth0").unwrap().clone();
    assert_eq!(pd["ip"], "10.81.0.50/24");

    // vswitchd restarted (kill -9): the container keeps its port and its traffic.
    let mut d = d;
    d.stop_with(9);
    d.restart();
    d.wait_up(&[pd["name"].as_str().unwrap()]);
    assert!(pm
        .exec("ctrd", &["ping", "-c", "2", "-W", "2", "10.81.0.1"])
        .status
        .success());
    pm.ok(&["rm", "-f", "-t", "0", "ctrd"]);
    assert!(port_of(&ports(&d), &again, "eth0").is_none());
}
