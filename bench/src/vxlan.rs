//! The `vxlan` scenario: two "hosts" (namespaces joined by an underlay veth, 10.200.0.1 and
//! .2), one container behind each on one overlay (VNI 42, 10.250.0.0/24, MTU 1450), the
//! container on host A the client of the one on host B — vswitch's overlay (`vswitch-vxlan`:
//! a vswitchd in each host, TAP ports) against the kernel's (`kernel-vxlan`: a vxlan device
//! and a Linux bridge in each host, the containers on veths), side by side: TCP 1 and 4
//! streams, 64-byte pps, UDP RTT. The target: TCP ≥ 0.8× the kernel's vxlan.
//!
//! Encrypted overlays (MTU 1390 inside): `vswitch-vxlan-encrypted` (vswitchd's `--encrypted`
//! network, VXLAN inside WireGuard in the switch) against the reference userspace WireGuard,
//! `wireguard-go-vxlan` (wireguard-go in each host, the kernel's vxlan device over its
//! interface, a Linux bridge). Target: TCP ≥ 1.0× wireguard-go with the kernel's vxlan.

use indicatif::ProgressBar;

use crate::peers::{Topology, Vswitchd};
use crate::report::{record, Goal, Target};
use crate::sandbox::{prefix, run, temp_dir, wait_for, Ns, Proc};
use crate::scenarios::{pps, set_up, tcp_streams, udp_rtt, Durations, Sink};
use crate::Gathered;

pub const PEERS: [&str; 4] = [
    "kernel-vxlan",
    "vswitch-vxlan",
    "wireguard-go-vxlan",
    "vswitch-vxlan-encrypted",
];

const HOST_A: &str = "10.200.0.1";
const HOST_B: &str = "10.200.0.2";
const CLIENT: &str = "10.250.0.1";
const SERVER: &str = "10.250.0.2";
const VNI: &str = "42";
/// The wireguard-go hosts' addresses inside their sessions.
const TUNNEL_A: &str = "10.201.0.1";
const TUNNEL_B: &str = "10.201.0.2";
/// An encrypted overlay's MTU inside: 1500 − VXLAN's 50 − WireGuard's 60.
const ENCRYPTED_MTU: &str = "1390";

pub fn steps(rounds: u32) -> u64 {
    rounds as u64 * PEERS.len() as u64
}

pub fn targets() -> Vec<Target> {
    vec![
        Target {
            scenario: "vxlan",
            metric: "TCP 1 stream",
            goal: Goal::RatioAtLeast {
                ours: "vswitch-vxlan",
                peer: "kernel-vxlan",
                min: 0.8,
            },
        },
        Target {
            scenario: "vxlan",
            metric: "TCP 1 stream",
            goal: Goal::RatioAtLeast {
                ours: "vswitch-vxlan-encrypted",
                peer: "wireguard-go-vxlan",
                min: 1.0,
            },
        },
        Target {
            scenario: "vxlan",
            metric: "TCP 4 streams",
            goal: Goal::RatioAtLeast {
                ours: "vswitch-vxlan-encrypted",
                peer: "wireguard-go-vxlan",
                min: 1.0,
            },
        },
    ]
}

/// The two hosts and the underlay between them.
fn underlay() -> Result<(Ns, Ns), String> {
    let p = prefix();
    let a = Ns::new(format!("{p}a"))?;
    let b = Ns::new(format!("{p}b"))?;
    a.exec(&[
        "ip", "link", "add", "ul", "type", "veth", "peer", "name", "ul", "netns", &b.0,
    ])?;
    for (ns, ip) in [(&a, HOST_A), (&b, HOST_B)] {
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "ul"])?;
        ns.exec(&["ip", "link", "set", "ul", "up"])?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
    }
    Ok((a, b))
}

/// A Linux bridge in `host` joining its `vx0` and a veth to the container `ns` (`eth0`, `ip`,
/// `mtu`): the kernel peers' side of a host.
fn bridge_container(host: &Ns, ns: &Ns, ip: &str, mtu: &str) -> Result<(), String> {
    host.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
    host.exec(&[
        "ip", "link", "add", "v0", "mtu", mtu, "type", "veth", "peer", "name", "eth0", "netns",
        &ns.0,
    ])?;
    for dev in ["vx0", "v0"] {
        host.exec(&["ip", "link", "set", dev, "master", "br0"])?;
        host.exec(&["ip", "link", "set", dev, "up"])?;
    }
    host.exec(&["ip", "link", "set", "br0", "up"])?;
    ns.exec(&["ip", "link", "set", "eth0", "mtu", mtu])?;
    ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
    ns.exec(&["ip", "link", "set", "eth0", "up"])?;
    ns.exec(&["ip", "link", "set", "lo", "up"])?;
    Ok(())
}

fn kernel_vxlan() -> Result<Topology, String> {
    let (a, b) = underlay()?;
    let p = prefix();
    let client = Ns::new(format!("{p}c"))?;
    let server = Ns::new(format!("{p}s"))?;
    for (host, me, other, ns, ip) in [
        (&a, HOST_A, HOST_B, &client, CLIENT),
        (&b, HOST_B, HOST_A, &server, SERVER),
    ] {
        host.exec(&[
            "ip", "link", "add", "vx0", "type", "vxlan", "id", VNI, "local", me, "remote", other,
            "dstport", "4789",
        ])?;
        bridge_container(host, ns, ip, "1450")?;
    }
    Ok(Topology::new(
        client,
        server,
        SERVER,
        CLIENT,
        vec![Box::new(a), Box::new(b)],
    ))
}

fn vswitch_vxlan() -> Result<Topology, String> {
    use vswitch::api::{NetworkCreate, Op, PortAdd, VtepSet};
    let (a, b) = underlay()?;
    let p = prefix();
    let client = Ns::new(format!("{p}c"))?;
    let server = Ns::new(format!("{p}s"))?;
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    for (host, me, other, ns, ip) in [
        (&a, HOST_A, HOST_B, &client, CLIENT),
        (&b, HOST_B, HOST_A, &server, SERVER),
    ] {
        let d = Vswitchd::start(Some(host))?;
        d.call(Op::VtepSet(VtepSet {
            local_ip: me.into(),
            ..Default::default()
        }))?;
        d.call(Op::NetworkCreate(NetworkCreate {
            name: "ov".into(),
            driver: Some("overlay".into()),
            vni: Some(42),
            subnet: "10.250.0.0/24".into(),
            gateway: Some("10.250.0.254".into()),
            peers: vec![other.into()],
            ..Default::default()
        }))?;
        d.call(Op::PortAdd(PortAdd {
            network: "ov".into(),
            netns: ns.0.clone(),
            ip: Some(ip.into()),
            ..Default::default()
        }))?;
        keep.push(Box::new(d));
    }
    // The daemons go first, then the hosts.
    keep.push(Box::new(a));
    keep.push(Box::new(b));
    Ok(Topology::new(client, server, SERVER, CLIENT, keep))
}

/// A wireguard-go interface of ours; stopped by PID with SIGTERM (it removes its control
/// socket under /var/run/wireguard), the socket removed if it is left.
struct WireguardGo {
    proc: Proc,
    sock: std::path::PathBuf,
}

impl Drop for WireguardGo {
    fn drop(&mut self) {
        let _ = run("kill", &["-TERM", &self.proc.0.id().to_string()]);
        let _ = wait_for(5, || self.proc.0.try_wait().ok().flatten().is_some());
        let _ = std::fs::remove_file(&self.sock);
    }
}

/// wireguard-go in each host, the kernel's vxlan device over its interface and a bridge.
fn wireguard_go_vxlan() -> Result<Topology, String> {
    let (a, b) = underlay()?;
    let p = prefix();
    let client = Ns::new(format!("{p}c"))?;
    let server = Ns::new(format!("{p}s"))?;
    let keys = temp_dir("wgkeys");
    let mut private = Vec::new();
    let mut public = Vec::new();
    for side in ["a", "b"] {
        let k = run("wg", &["genkey"]).map_err(|e| format!("{e} (install wireguard-tools)"))?;
        let file = keys.0.join(side);
        std::fs::write(&file, &k).map_err(|e| e.to_string())?;
        let pubkey = run("sh", &["-c", &format!("wg pubkey < {}", file.display())])?;
        private.push(file);
        public.push(pubkey.trim().to_string());
    }
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    for (i, (host, other, me_t, other_t, ns, ip)) in [
        (&a, HOST_B, TUNNEL_A, TUNNEL_B, &client, CLIENT),
        (&b, HOST_A, TUNNEL_B, TUNNEL_A, &server, SERVER),
    ]
    .into_iter()
    .enumerate()
    {
        let ifname = format!("{p}w{i}");
        let sock = std::path::PathBuf::from(format!("/var/run/wireguard/{ifname}.sock"));
        let proc = Proc(
            std::process::Command::new("ip")
                .args(["netns", "exec", &host.0, "wireguard-go", "-f", &ifname])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("wireguard-go: {e} (install wireguard-go)"))?,
        );
        let w = WireguardGo { proc, sock };
        if !wait_for(10, || w.sock.exists()) {
            return Err("wireguard-go did not make its interface".into());
        }
        keep.push(Box::new(w));
        let endpoint = format!("{other}:51820");
        let allowed = format!("{other_t}/32");
        host.exec(&[
            "wg",
            "set",
            &ifname,
            "private-key",
            &private[i].display().to_string(),
            "listen-port",
            "51820",
            "peer",
            &public[1 - i],
            "endpoint",
            &endpoint,
            "allowed-ips",
            &allowed,
        ])?;
        host.exec(&["ip", "addr", "add", &format!("{me_t}/24"), "dev", &ifname])?;
        host.exec(&["ip", "link", "set", &ifname, "mtu", "1440", "up"])?;
        host.exec(&[
            "ip", "link", "add", "vx0", "type", "vxlan", "id", VNI, "local", me_t, "remote",
            other_t, "dstport", "4789",
        ])?;
        host.exec(&["ip", "link", "set", "vx0", "mtu", ENCRYPTED_MTU])?;
        bridge_container(host, ns, ip, ENCRYPTED_MTU)?;
    }
    keep.push(Box::new(keys));
    keep.push(Box::new(a));
    keep.push(Box::new(b));
    Ok(Topology::new(client, server, SERVER, CLIENT, keep))
}

/// vswitchd in each host on an `--encrypted` overlay (each given the other's public key).
fn vswitch_vxlan_encrypted() -> Result<Topology, String> {
    use vswitch::api::{NetworkCreate, Op, PortAdd, Reply, VtepSet};
    let (a, b) = underlay()?;
    let p = prefix();
    let client = Ns::new(format!("{p}c"))?;
    let server = Ns::new(format!("{p}s"))?;
    let mut daemons = Vec::new();
    let mut keys = Vec::new();
    for (host, me) in [(&a, HOST_A), (&b, HOST_B)] {
        let d = Vswitchd::start(Some(host))?;
        d.call(Op::VtepSet(VtepSet {
            local_ip: me.into(),
            ..Default::default()
        }))?;
        match d.call(Op::VtepShow)? {
            Reply::Vtep(Some(v)) if !v.public_key.is_empty() => keys.push(v.public_key),
            other => return Err(format!("vtep show: no public key: {other:?}")),
        }
        daemons.push(d);
    }
    for (i, (d, other, ns, ip)) in [(HOST_B, &client, CLIENT), (HOST_A, &server, SERVER)]
        .into_iter()
        .enumerate()
        .map(|(i, (o, n, ip))| (i, (&daemons[i], o, n, ip)))
    {
        d.call(Op::NetworkCreate(NetworkCreate {
            name: "ov".into(),
            driver: Some("overlay".into()),
            vni: Some(42),
            subnet: "10.250.0.0/24".into(),
            gateway: Some("10.250.0.254".into()),
            peers: vec![other.into()],
            encrypted: true,
            peer_keys: vec![keys[1 - i].clone()],
            ..Default::default()
        }))?;
        d.call(Op::PortAdd(PortAdd {
            network: "ov".into(),
            netns: ns.0.clone(),
            ip: Some(ip.into()),
            ..Default::default()
        }))?;
    }
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    for d in daemons {
        keep.push(Box::new(d));
    }
    keep.push(Box::new(a));
    keep.push(Box::new(b));
    Ok(Topology::new(client, server, SERVER, CLIENT, keep))
}

fn build(peer: &str) -> Result<Topology, String> {
    match peer {
        "kernel-vxlan" => kernel_vxlan(),
        "vswitch-vxlan" => vswitch_vxlan(),
        "wireguard-go-vxlan" => wireguard_go_vxlan(),
        "vswitch-vxlan-encrypted" => vswitch_vxlan_encrypted(),
        other => Err(format!("unknown vxlan peer {other}")),
    }
}

pub fn run_peer(peer: &str, stage: &str, d: &Durations, bar: &ProgressBar, g: &mut Gathered) {
    let Some(t) = set_up("vxlan", peer, stage, bar, g, build) else {
        return;
    };
    // The first frames resolve the peer's MAC across the overlay (and, encrypted, wait for
    // the sessions' handshake).
    let _ = wait_for(15, || {
        t.client
            .exec(&["ping", "-c", "1", "-W", "1", SERVER])
            .is_ok()
    });
    let _ = t
        .client
        .exec(&["ping", "-c", "3", "-i", "0.2", "-W", "1", SERVER]);
    tcp_streams("vxlan", peer, stage, &t, d, bar, g);
    bar.set_message(format!("{stage}: {peer}: 64-byte pps"));
    match pps(&t, d.pps, Sink::Interface) {
        Ok((kpps, loss)) => {
            record(
                &mut g.figures,
                "vxlan",
                "64B UDP forwarded",
                "kpps",
                true,
                peer,
                kpps,
            );
            record(&mut g.figures, "vxlan", "64B loss", "%", false, peer, loss);
        }
        Err(e) => g.notes.push(format!("vxlan: {peer} pps: {e}")),
    }
    udp_rtt("vxlan", peer, stage, &t, d, bar, g);
    g.notes.push("vxlan: two hosts (namespaces on one underlay veth, 10.200.0.1 and .2) with a container behind each on VNI 42 (10.250.0.0/24, MTU 1450); kernel-vxlan is a vxlan device and a Linux bridge in each host with the container on a veth, vswitch-vxlan a vswitchd in each host with the container on a TAP. The underlay veth keeps its offloads (the kernel's vxlan sends GSO super-packets across it). Encrypted (MTU 1390 inside): wireguard-go-vxlan is wireguard-go (Debian's 0.0.20220316) in each host with the kernel's vxlan device over its interface and a bridge; vswitch-vxlan-encrypted is vswitchd's --encrypted overlay (boringtun's noise sessions in the dataplane thread).".into());
    bar.inc(1);
}
