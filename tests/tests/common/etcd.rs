//! A private etcd (Debian's etcd-server) in a test's namespace: one member or a cluster of
//! several (each on an address of its own), its own data dirs, stopped by PID on drop.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use super::*;

struct Member {
    child: Option<Child>,
    ip: String,
}

pub struct Etcd {
    members: Vec<Member>,
    ns: String,
    token: String,
    dir: TempDir,
    /// Client TLS: the CA, the server's certificate and key, and a client's certificate and
    /// key (for etcdctl) — the members then demand client certificates.
    tls: Option<Tls>,
}

#[derive(Clone)]
pub struct Tls {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl Tls {
    /// A CA, a server certificate for `ip` and a client certificate, made with openssl in
    /// `dir`.
    pub fn make(dir: &TempDir, ip: &str) -> Tls {
        let p = |n: &str| dir.path(n).display().to_string();
        let script = format!(
            "set -e; cd {d}
             openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
               -keyout ca.key -out ca.crt -days 2 -subj /CN=vswitch-test-ca 2>/dev/null
             for who in server client; do
               openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
                 -keyout $who.key -out $who.csr -subj /CN=$who 2>/dev/null
             done
             printf 'subjectAltName=IP:{ip}\nextendedKeyUsage=serverAuth\n' > server.ext
             printf 'extendedKeyUsage=clientAuth\n' > client.ext
             for who in server client; do
               openssl x509 -req -in $who.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
                 -out $who.crt -days 2 -extfile $who.ext 2>/dev/null
             done",
            d = dir.0.display()
        );
        must("sh", &["-c", &script]);
        Tls {
            ca: PathBuf::from(p("ca.crt")),
            server_cert: PathBuf::from(p("server.crt")),
            server_key: PathBuf::from(p("server.key")),
            client_cert: PathBuf::from(p("client.crt")),
            client_key: PathBuf::from(p("client.key")),
        }
    }
}

impl Etcd {
    /// One member listening on `ip`:2379 in `ns`.
    pub fn start(ns: &Netns, ip: &str) -> Etcd {
        Etcd::start_members(ns, &[ip])
    }

    /// A cluster of one member per address (all addresses of `ns`).
    pub fn start_members(ns: &Netns, ips: &[&str]) -> Etcd {
        Etcd::start_with(ns, ips, None)
    }

    /// One member on `ip` that speaks TLS to clients and wants their certificates.
    pub fn start_tls(ns: &Netns, ip: &str, tls: Tls) -> Etcd {
        Etcd::start_with(ns, &[ip], Some(tls))
    }

    fn start_with(ns: &Netns, ips: &[&str], tls: Option<Tls>) -> Etcd {
        assert!(
            sh("sh", &["-c", "command -v etcd && command -v etcdctl"])
                .status
                .success(),
            "etcd is not installed (scripts/deps.sh installs etcd-server)"
        );
        let mut e = Etcd {
            members: ips
                .iter()
                .map(|ip| Member {
                    child: None,
                    ip: ip.to_string(),
                })
                .collect(),
            ns: ns.name.clone(),
            token: unique("etcd"),
            dir: TempDir::new("etcd"),
            tls,
        };
        for i in 0..ips.len() {
            e.spawn(i);
        }
        assert!(
            wait_until(30, || e.healthy()),
            "etcd did not come up:\n{}",
            e.log()
        );
        e
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("m{i}=http://{}:2380", m.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn spawn(&mut self, i: usize) {
        let ip = self.members[i].ip.clone();
        let client = format!("{}://{ip}:2379", self.scheme());
        let peer = format!("http://{ip}:2380");
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.path(&format!("etcd{i}.log")))
            .unwrap();
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.ns,
                "etcd",
                "--name",
                &format!("m{i}"),
            ])
            .arg("--data-dir")
            .arg(self.dir.path(&format!("data{i}")))
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
            .args(["--initial-cluster", &self.initial_cluster()])
            .args(["--initial-cluster-token", &self.token])
            .args(self.tls.iter().flat_map(|t| {
                [
                    "--cert-file".into(),
                    t.server_cert.display().to_string(),
                    "--key-file".into(),
                    t.server_key.display().to_string(),
                    "--trusted-ca-file".into(),
                    t.ca.display().to_string(),
                    "--client-cert-auth".into(),
                ]
            }))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.members[i].child = Some(child);
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// etcdctl's TLS flags.
    fn ctl_tls(&self) -> Vec<String> {
        self.tls
            .iter()
            .flat_map(|t| {
                [
                    format!("--cacert={}", t.ca.display()),
                    format!("--cert={}", t.client_cert.display()),
                    format!("--key={}", t.client_key.display()),
                ]
            })
            .collect()
    }

    fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}://{}:2379", self.scheme(), m.ip))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Whether the cluster answers (a quorum of its members is up).
    pub fn healthy(&self) -> bool {
        let ep = self.endpoints();
        let tls = self.ctl_tls();
        let mut a = vec!["netns", "exec", &self.ns, "etcdctl", "--endpoints", &ep];
        a.extend(tls.iter().map(String::as_str));
        a.extend(["--command-timeout=2s", "put", "/health-check", "ok"]);
        sh("ip", &a).status.success()
    }

    /// `etcd://…` with every member.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}:2379", m.ip))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    /// `etcdctl ARGS` against the cluster.
    pub fn ctl(&self, args: &[&str]) -> String {
        let ep = self.endpoints();
        let tls = self.ctl_tls();
        let mut a = vec!["netns", "exec", &self.ns, "etcdctl", "--endpoints", &ep];
        a.extend(tls.iter().map(String::as_str));
        a.extend_from_slice(args);
        must("ip", &a)
    }

    pub fn log(&self) -> String {
        (0..self.members.len())
            .map(|i| {
                std::fs::read_to_string(self.dir.path(&format!("etcd{i}.log"))).unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Stops member `i` (SIGTERM by PID), keeping its data.
    pub fn stop_member(&mut self, i: usize) {
        if let Some(mut c) = self.members[i].child.take() {
            let _ = sh("kill", &["-TERM", &c.id().to_string()]);
            let _ = c.wait();
        }
    }

    pub fn start_member(&mut self, i: usize) {
        self.stop_member(i);
        self.spawn(i);
    }

    /// Stops every member.
    pub fn stop(&mut self) {
        for i in 0..self.members.len() {
            self.stop_member(i);
        }
    }

    /// Starts every member again, on its data, and waits for the cluster.
    pub fn restart(&mut self) {
        self.stop();
        for i in 0..self.members.len() {
            self.spawn(i);
        }
        assert!(
            wait_until(30, || self.healthy()),
            "etcd did not come back:\n{}",
            self.log()
        );
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut c) = m.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}
