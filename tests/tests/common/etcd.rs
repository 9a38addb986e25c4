//! A private etcd (Debian's etcd-server) in a test's namespace: its own data dir, stopped by
//! PID on drop.

use std::process::{Child, Command, Stdio};

use super::*;

pub struct Etcd {
    child: Option<Child>,
    ns: String,
    pub ip: String,
    dir: TempDir,
}

impl Etcd {
    /// One member listening on `ip`:2379 in `ns`.
    pub fn start(ns: &Netns, ip: &str) -> Etcd {
        assert!(
            sh("sh", &["-c", "command -v etcd && command -v etcdctl"])
                .status
                .success(),
            "etcd is not installed (scripts/deps.sh installs etcd-server)"
        );
        let mut e = Etcd {
            child: None,
            ns: ns.name.clone(),
            ip: ip.to_string(),
            dir: TempDir::new("etcd"),
        };
        e.spawn();
        e
    }

    fn spawn(&mut self) {
        let client = format!("http://{}:2379", self.ip);
        let peer = format!("http://{}:2380", self.ip);
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path("etcd.log"))
            .unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "etcd",
                "--name",
                "m1",
                "--data-dir",
            ])
            .arg(self.dir.path("data"))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("m1={peer}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        assert!(
            wait_until(20, || self.healthy()),
            "etcd did not come up:\n{}",
            self.log()
        );
    }

    pub fn healthy(&self) -> bool {
        let ep = format!("http://{}:2379", self.ip);
        sh(
            "ip",
            &[
                "netns",
                "exec",
                &self.ns,
                "etcdctl",
                "--endpoints",
                &ep,
                "endpoint",
                "health",
            ],
        )
        .status
        .success()
    }

    pub fn url(&self) -> String {
        format!("etcd://{}:2379", self.ip)
    }

    /// `etcdctl ARGS` against this member.
    pub fn ctl(&self, args: &[&str]) -> String {
        let ep = format!("http://{}:2379", self.ip);
        let mut a = vec!["netns", "exec", &self.ns, "etcdctl", "--endpoints", &ep];
        a.extend_from_slice(args);
        must("ip", &a)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path("etcd.log")).unwrap_or_default()
    }

    /// Stops it (SIGTERM by PID), keeping its data.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = sh("kill", &["-TERM", &c.id().to_string()]);
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
