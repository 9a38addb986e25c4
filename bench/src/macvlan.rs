//! The `macvlan` scenario: a container on a parent's segment reaching a server beyond it (TCP
//! with iperf3, 1 and 4 streams, and UDP round trips), through the kernel's macvlan
//! (`kernel-macvlan`: a macvlan device of the parent, bridge mode, moved into the container)
//! against vswitch's (`vswitch-macvlan`: `--driver macvlan`, the parent served by AF_XDP in
//! generic mode, the container on a TAP) and vswitch's ipvlan (`vswitch-ipvlan`, l2; this
//! kernel has no ipvlan, so it is measured against the kernel's macvlan, the nearest kernel
//! path). The parent is a veth of a bench "host" namespace into a "segment" namespace that
//! holds the server; nothing touches the machine's own interfaces.

use indicatif::ProgressBar;

use crate::peers::{Topology, Vswitchd};
use crate::sandbox::{prefix, Ns};
use crate::scenarios::{set_up, tcp_streams, udp_rtt, Durations};
use crate::Gathered;

pub const PEERS: [&str; 3] = ["kernel-macvlan", "vswitch-macvlan", "vswitch-ipvlan"];

const SERVER: &str = "10.240.0.1";
const CONTAINER: &str = "10.240.0.10";

pub fn steps(rounds: u32) -> u64 {
    rounds as u64 * PEERS.len() as u64
}

/// The host namespace with the parent `par`, and the segment namespace beyond it holding the
/// server on its `eth0`.
fn segment() -> Result<(Ns, Ns), String> {
    let p = prefix();
    let host = Ns::new(format!("{p}h"))?;
    let seg = Ns::new(format!("{p}s"))?;
    host.exec(&[
        "ip", "link", "add", "par", "type", "veth", "peer", "name", "eth0", "netns", &seg.0,
    ])?;
    host.exec(&["ip", "link", "set", "par", "up"])?;
    seg.exec(&["ip", "addr", "add", &format!("{SERVER}/24"), "dev", "eth0"])?;
    seg.exec(&["ip", "link", "set", "eth0", "up"])?;
    seg.exec(&["ip", "link", "set", "lo", "up"])?;
    // As a real NIC: complete checksums on the wire (a veth would leave them pending, which an
    // AF_XDP socket cannot finish); the same for both peers.
    for ns_if in [(&host, "par"), (&seg, "eth0")] {
        ns_if.0.exec(&[
            "ethtool", "-K", ns_if.1, "tx", "off", "tso", "off", "gso", "off",
        ])?;
    }
    Ok((host, seg))
}

fn kernel_macvlan() -> Result<Topology, String> {
    let (host, seg) = segment()?;
    let client = Ns::new(format!("{}c", prefix()))?;
    host.exec(&[
        "ip", "link", "add", "mv0", "link", "par", "type", "macvlan", "mode", "bridge",
    ])?;
    host.exec(&["ip", "link", "set", "mv0", "netns", &client.0])?;
    client.exec(&["ip", "link", "set", "mv0", "name", "eth0"])?;
    client.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{CONTAINER}/24"),
        "dev",
        "eth0",
    ])?;
    client.exec(&["ip", "link", "set", "eth0", "up"])?;
    client.exec(&["ip", "link", "set", "lo", "up"])?;
    Ok(Topology::new(
        client,
        seg,
        SERVER,
        CONTAINER,
        vec![Box::new(host)],
    ))
}

fn vswitch(driver: &str) -> Result<Topology, String> {
    use vswitch::api::{NetworkCreate, Op, PortAdd};
    let (host, seg) = segment()?;
    let d = Vswitchd::start(Some(&host))?;
    d.call(Op::NetworkCreate(NetworkCreate {
        name: "seg".into(),
        driver: Some(driver.into()),
        parent: Some("par".into()),
        subnet: "10.240.0.0/24".into(),
        gateway: Some(SERVER.into()),
        ..Default::default()
    }))?;
    let client = Ns::new(format!("{}c", prefix()))?;
    d.call(Op::PortAdd(PortAdd {
        network: "seg".into(),
        netns: client.0.clone(),
        ip: Some(CONTAINER.into()),
        ..Default::default()
    }))?;
    // The daemon goes first, then its host namespace (and the parent with it).
    Ok(Topology::new(
        client,
        seg,
        SERVER,
        CONTAINER,
        vec![Box::new(d), Box::new(host)],
    ))
}

fn build(peer: &str) -> Result<Topology, String> {
    match peer {
        "kernel-macvlan" => kernel_macvlan(),
        "vswitch-macvlan" => vswitch("macvlan"),
        "vswitch-ipvlan" => vswitch("ipvlan"),
        other => Err(format!("unknown macvlan peer {other}")),
    }
}

pub fn run_peer(peer: &str, stage: &str, d: &Durations, bar: &ProgressBar, g: &mut Gathered) {
    let Some(t) = set_up("macvlan", peer, stage, bar, g, build) else {
        return;
    };
    tcp_streams("macvlan", peer, stage, &t, d, bar, g);
    udp_rtt("macvlan", peer, stage, &t, d, bar, g);
    g.notes.push("macvlan: a container (10.240.0.10) reaching a server beyond the parent veth (10.240.0.1, in a segment namespace), the parent's offloads off as on a real NIC; kernel-macvlan is a macvlan device of the parent in bridge mode, vswitch-macvlan and vswitch-ipvlan (l2) serve the parent with AF_XDP in generic mode and the container with a TAP. This kernel has no ipvlan: vswitch-ipvlan has no kernel peer of its own.".into());
    bar.inc(1);
}
