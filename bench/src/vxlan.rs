//! The `vxlan` scenario: two "hosts" (namespaces joined by an underlay veth, 10.200.0.1 and
//! .2), one container behind each on one overlay (VNI 42, 10.250.0.0/24, MTU 1450), the
//! container on host A the client of the one on host B — vswitch's overlay (`vswitch-vxlan`:
//! a vswitchd in each host, TAP ports) against the kernel's (`kernel-vxlan`: a vxlan device
//! and a Linux bridge in each host, the containers on veths), side by side: TCP 1 and 4
//! streams, 64-byte pps, UDP RTT. The target: TCP ≥ 0.8× the kernel's vxlan.

use indicatif::ProgressBar;

use crate::peers::{Topology, Vswitchd};
use crate::report::{record, Goal, Target};
use crate::sandbox::{prefix, Ns};
use crate::scenarios::{pps, set_up, tcp_streams, udp_rtt, Durations, Sink};
use crate::Gathered;

pub const PEERS: [&str; 2] = ["kernel-vxlan", "vswitch-vxlan"];

const HOST_A: &str = "10.200.0.1";
const HOST_B: &str = "10.200.0.2";
const CLIENT: &str = "10.250.0.1";
const SERVER: &str = "10.250.0.2";
const VNI: &str = "42";

pub fn steps(rounds: u32) -> u64 {
    rounds as u64 * PEERS.len() as u64
}

pub fn targets() -> Vec<Target> {
    vec![Target {
        scenario: "vxlan",
        metric: "TCP 1 stream",
        goal: Goal::RatioAtLeast {
            ours: "vswitch-vxlan",
            peer: "kernel-vxlan",
            min: 0.8,
        },
    }]
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
        host.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
        host.exec(&[
            "ip", "link", "add", "v0", "mtu", "1450", "type", "veth", "peer", "name", "eth0",
            "netns", &ns.0,
        ])?;
        for dev in ["vx0", "v0"] {
            host.exec(&["ip", "link", "set", dev, "master", "br0"])?;
            host.exec(&["ip", "link", "set", dev, "up"])?;
        }
        host.exec(&["ip", "link", "set", "br0", "up"])?;
        ns.exec(&["ip", "link", "set", "eth0", "mtu", "1450"])?;
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
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

fn build(peer: &str) -> Result<Topology, String> {
    match peer {
        "kernel-vxlan" => kernel_vxlan(),
        "vswitch-vxlan" => vswitch_vxlan(),
        other => Err(format!("unknown vxlan peer {other}")),
    }
}

pub fn run_peer(peer: &str, stage: &str, d: &Durations, bar: &ProgressBar, g: &mut Gathered) {
    let Some(t) = set_up("vxlan", peer, stage, bar, g, build) else {
        return;
    };
    // The first frames resolve the peer's MAC across the overlay.
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
    g.notes.push("vxlan: two hosts (namespaces on one underlay veth, 10.200.0.1 and .2) with a container behind each on VNI 42 (10.250.0.0/24, MTU 1450); kernel-vxlan is a vxlan device and a Linux bridge in each host with the container on a veth, vswitch-vxlan a vswitchd in each host with the container on a TAP. The underlay veth keeps its offloads (the kernel's vxlan sends GSO super-packets across it).".into());
    bar.inc(1);
}
