//! vswitch itself: a daemon of our own ([`Vswitchd`], also used by the scale scenario) and the
//! topology of two ports of one type (`vswitch-tap`, `vswitch-afxdp`).

use std::path::PathBuf;
use std::process::{Command, Stdio};

use super::{Topology, CLIENT_IP, SERVER_IP};
use crate::sandbox::{prefix, sibling, temp_dir, wait_for, Ns, Proc, TempDir};

/// A vswitchd of our own (the release binary beside this one), in `host` when given.
pub struct Vswitchd {
    proc: Proc,
    pub socket: PathBuf,
    _dir: TempDir,
}

impl Vswitchd {
    pub fn start(host: Option<&Ns>) -> Result<Vswitchd, String> {
        Self::start_with(host, &[])
    }

    /// As `start`, with more arguments for vswitchd.
    pub fn start_with(host: Option<&Ns>, extra: &[&str]) -> Result<Vswitchd, String> {
        let dir = temp_dir("vswitchd");
        let socket = dir.0.join("sock");
        let bin = sibling("vswitchd");
        if !bin.exists() {
            return Err(format!(
                "{} not found: build the workspace first",
                bin.display()
            ));
        }
        let mut cmd = match host {
            // `ip netns exec` execs in place: the pid is the daemon's (for RSS).
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.0]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let proc = Proc(
            cmd.arg("--socket")
                .arg(&socket)
                .arg("--state-dir")
                .arg(dir.0.join("state"))
                .args(["--log-level", "warn"])
                .args(extra)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?,
        );
        let v = Vswitchd {
            proc,
            socket,
            _dir: dir,
        };
        if !wait_for(20, || v.client().is_ok()) {
            return Err("vswitchd did not start".into());
        }
        Ok(v)
    }

    pub fn client(&self) -> Result<vswitch::api::Client, String> {
        vswitch::api::Client::connect(&self.socket).map_err(|e| e.to_string())
    }

    pub fn call(&self, op: vswitch::api::Op) -> Result<vswitch::api::Reply, String> {
        self.client()?.call(op).map_err(|e| e.to_string())
    }

    pub fn pid(&self) -> u32 {
        self.proc.0.id()
    }

    pub fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.proc.0.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }
}

/// vswitch with two ports of `port_type` ("tap" or "afxdp"). For AF_XDP the daemon runs in a
/// bench "host" namespace, so the veths' host ends stay out of the real root namespace.
pub fn vswitch_topology(port_type: &str) -> Result<Topology, String> {
    use vswitch::api::{NetworkCreate, Op, PortAdd};
    let p = prefix();
    let host = match port_type {
        "tap" => None,
        _ => Some(Ns::new(format!("{p}h"))?),
    };
    let d = Vswitchd::start(host.as_ref())?;
    d.call(Op::NetworkCreate(NetworkCreate {
        name: "bench".into(),
        subnet: "10.250.0.0/24".into(),
        gateway: Some("10.250.0.254".into()),
        fdb_limit: Some(131_072),
        // As the peers' tables: no per-port share of it (the macs scenario's 100 000 MACs
        // come from one port).
        port_mac_limit: Some(0),
        ..Default::default()
    }))?;
    let client = Ns::new(format!("{p}c"))?;
    let server = Ns::new(format!("{p}s"))?;
    for (ns, ip) in [(&client, CLIENT_IP), (&server, SERVER_IP)] {
        d.call(Op::PortAdd(PortAdd {
            network: "bench".into(),
            netns: ns.0.clone(),
            ip: Some(ip.into()),
            kind: Some(port_type.into()),
            // The client sends as 100 000 MACs in the macs scenario, as a router container
            // would (`--no-port-security`); the peers check no source either.
            port_security: (ip == CLIENT_IP).then_some(false),
            ..Default::default()
        }))?;
    }
    // The daemon goes first, then its host namespace (and the veths' host ends with it).
    let mut keep: Vec<Box<dyn std::any::Any>> = vec![Box::new(d)];
    if let Some(h) = host {
        keep.push(Box::new(h));
    }
    Ok(Topology {
        client,
        server,
        server_ip: SERVER_IP,
        client_ip: CLIENT_IP,
        gateway_mac: None,
        _keep: keep,
    })
}
