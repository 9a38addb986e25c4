//! The `nat` scenario's two worlds: a container reaching a server in an "external" namespace
//! through NAT — the kernel's (`kernel-nat`: a router namespace forwarding with an nftables
//! `masquerade` rule, veths to both sides) or vswitch's (`vswitch-nat`: the container on a TAP
//! port, the gateway routing to an AF_XDP uplink in dedicated mode). The container and the
//! external namespace are set up the same way in both, so the same client and server programs
//! run in both.
//!
//! The external namespace has the router 192.0.2.1 on its `eth0` and the server's address
//! 203.0.113.10 on `lo` (off the NAT's link, so its route via the gateway is exercised), and
//! sends complete checksums (a real NIC's, not a veth's pending ones).

use super::{Topology, Vswitchd};
use crate::sandbox::{prefix, Ns};

pub const NAT_CLIENT_IP: &str = "10.251.0.2";
pub const NAT_SERVER_IP: &str = "203.0.113.10";
const NAT_SUBNET: &str = "10.251.0.0/24";
const NAT_GATEWAY: &str = "10.251.0.1";
/// The external router, and the NAT's own address on its link.
const EXT_ROUTER: &str = "192.0.2.1";
const NAT_OUTSIDE: &str = "192.0.2.2/24";
const NFT_TABLE: &str = "vswitch_bench_nat";

/// The external namespace's side, once its `eth0` (a veth end) is there.
fn external(ext: &Ns) -> Result<(), String> {
    ext.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{EXT_ROUTER}/24"),
        "dev",
        "eth0",
    ])?;
    ext.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{NAT_SERVER_IP}/32"),
        "dev",
        "lo",
    ])?;
    ext.exec(&["ip", "link", "set", "eth0", "up"])?;
    // A veth leaves checksums pending, which AF_XDP hands over unfinished; a NIC would not.
    ext.exec(&[
        "ethtool", "-K", "eth0", "tx", "off", "tso", "off", "gso", "off",
    ])?;
    Ok(())
}

/// The kernel doing the same job: a router namespace with `ip_forward=1` and an nftables
/// masquerade rule on its external veth, veths to the container and to the external side.
pub fn kernel_nat() -> Result<Topology, String> {
    let p = prefix();
    let router = Ns::new(format!("{p}r"))?;
    let client = Ns::new(format!("{p}c"))?;
    let ext = Ns::new(format!("{p}e"))?;
    for (v, ns) in [("v1", &client), ("v2", &ext)] {
        router.exec(&[
            "ip", "link", "add", v, "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
        ])?;
    }
    router.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{NAT_GATEWAY}/24"),
        "dev",
        "v1",
    ])?;
    router.exec(&["ip", "addr", "add", NAT_OUTSIDE, "dev", "v2"])?;
    for v in ["v1", "v2"] {
        router.exec(&["ip", "link", "set", v, "up"])?;
    }
    router.exec(&["ip", "route", "add", "default", "via", EXT_ROUTER])?;
    router.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
    let t = NFT_TABLE;
    router
        .exec(&["nft", "add", "table", "ip", t])
        .map_err(|e| format!("nft (install the nftables package): {e}"))?;
    router.exec(&[
        "nft",
        "add",
        "chain",
        "ip",
        t,
        "post",
        "{",
        "type",
        "nat",
        "hook",
        "postrouting",
        "priority",
        "100",
        ";",
        "}",
    ])?;
    router.exec(&[
        "nft",
        "add",
        "rule",
        "ip",
        t,
        "post",
        "oifname",
        "v2",
        "masquerade",
    ])?;
    container(&client)?;
    external(&ext)?;
    let gateway_mac = router
        .exec(&["cat", "/sys/class/net/v1/address"])?
        .trim()
        .to_string();
    Ok(Topology {
        client,
        server: ext,
        server_ip: NAT_SERVER_IP,
        client_ip: NAT_CLIENT_IP,
        gateway_mac: Some(gateway_mac),
        _keep: vec![Box::new(router)],
    })
}

/// The container's `eth0` (a veth end) in the kernel's world: addressed and routed as vswitch
/// configures its TAP ports.
fn container(client: &Ns) -> Result<(), String> {
    client.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{NAT_CLIENT_IP}/24"),
        "dev",
        "eth0",
    ])?;
    client.exec(&["ip", "link", "set", "eth0", "up"])?;
    client.exec(&["ip", "route", "add", "default", "via", NAT_GATEWAY])?;
    Ok(())
}

/// vswitch's NAT: vswitchd in a bench "host" namespace whose veth `up0` into the external
/// namespace is the uplink (dedicated mode, 192.0.2.2, gateway 192.0.2.1), the container on a
/// TAP port of network `nat`. `conntrack_max` bounds the flow table (the daemon's default
/// otherwise).
pub fn vswitch_nat(conntrack_max: Option<usize>) -> Result<Topology, String> {
    vswitch_nat_publishing(conntrack_max, vec![])
}

/// `vswitch_nat` with the uplink on a packet socket (`uplink set --type packet`: virtio-net
/// headers, so TSO frames leave whole) instead of AF_XDP.
pub fn vswitch_nat_packet() -> Result<Topology, String> {
    vswitch_nat_with(None, vec![], Some("packet"))
}

/// The `publish` scenario's ports: iperf3's and the short connections'.
pub const PUBLISHED: [u16; 2] = [5201, 7100];

/// The kernel publishing the container's ports: `kernel_nat` with an nftables `dnat` of
/// [`PUBLISHED`] on its external address to the container; the external namespace is the
/// client, the container the server.
pub fn kernel_dnat() -> Result<Topology, String> {
    let t = kernel_nat()?;
    let router = t.kept::<Ns>().ok_or("no router namespace")?;
    let tb = NFT_TABLE;
    router.exec(&[
        "nft",
        "add",
        "chain",
        "ip",
        tb,
        "pre",
        "{",
        "type",
        "nat",
        "hook",
        "prerouting",
        "priority",
        "-100",
        ";",
        "}",
    ])?;
    let ports = PUBLISHED.map(|p| p.to_string()).join(", ");
    router.exec(&[
        "nft",
        "add",
        "rule",
        "ip",
        tb,
        "pre",
        "iifname",
        "v2",
        "tcp",
        "dport",
        &format!("{{ {ports} }}"),
        "dnat",
        "to",
        NAT_CLIENT_IP,
    ])?;
    Ok(inbound(t))
}

/// vswitch publishing the container's ports: `vswitch_nat` with `--publish P:P` of each of
/// [`PUBLISHED`]; the external namespace is the client, the container the server.
pub fn vswitch_dnat() -> Result<Topology, String> {
    let publish = PUBLISHED.iter().map(|p| format!("{p}:{p}/tcp")).collect();
    Ok(inbound(vswitch_nat_publishing(None, publish)?))
}

/// The loopback relay's peers: the host's own client reaching the published ports at
/// `127.0.0.1`. `socat-relay` is the kernel's world with a plain userspace relay in the
/// router namespace (the "host"): one `socat` (default options: 8 KiB buffers, a process
/// per connection) per port, listening on 127.0.0.1 and connecting to the container.
pub fn socat_relay() -> Result<Topology, String> {
    let t = kernel_nat()?;
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut router = None;
    for k in t._keep {
        match k.downcast::<Ns>() {
            Ok(ns) => router = Some(*ns),
            Err(other) => keep.push(other),
        }
    }
    let router = router.ok_or("no router namespace")?;
    for p in PUBLISHED {
        let relay = router.spawn(&[
            "socat",
            &format!("TCP-LISTEN:{p},bind=127.0.0.1,fork,reuseaddr"),
            &format!("TCP:{NAT_CLIENT_IP}:{p}"),
        ])?;
        keep.push(Box::new(relay));
    }
    keep.push(Box::new(t.server));
    std::thread::sleep(std::time::Duration::from_millis(300));
    Ok(loopback(router, t.client, keep))
}

/// vswitch's loopback relay: `vswitch_dnat`'s world, the client in the daemon's own ("host")
/// namespace connecting to 127.0.0.1 on the published ports.
pub fn vswitch_relay() -> Result<Topology, String> {
    let publish = PUBLISHED.iter().map(|p| format!("{p}:{p}/tcp")).collect();
    let t = vswitch_nat_publishing(None, publish)?;
    let mut keep: Vec<Box<dyn std::any::Any>> = Vec::new();
    let mut host = None;
    for k in t._keep {
        match k.downcast::<Ns>() {
            Ok(ns) => host = Some(*ns),
            Err(other) => keep.push(other),
        }
    }
    let host = host.ok_or("no host namespace")?;
    keep.push(Box::new(t.server));
    Ok(loopback(host, t.client, keep))
}

fn loopback(host: Ns, container: Ns, keep: Vec<Box<dyn std::any::Any>>) -> Topology {
    Topology {
        client: host,
        server: container,
        server_ip: "127.0.0.1",
        client_ip: "127.0.0.1",
        gateway_mac: None,
        _keep: keep,
    }
}

/// The NAT world turned around: the external namespace connects to the NAT's outside
/// address, which leads to the container.
fn inbound(t: Topology) -> Topology {
    Topology {
        client: t.server,
        server: t.client,
        server_ip: NAT_OUTSIDE_IP,
        client_ip: EXT_ROUTER,
        gateway_mac: None,
        _keep: t._keep,
    }
}

const NAT_OUTSIDE_IP: &str = "192.0.2.2";

fn vswitch_nat_publishing(
    conntrack_max: Option<usize>,
    publish: Vec<String>,
) -> Result<Topology, String> {
    vswitch_nat_with(conntrack_max, publish, None)
}

fn vswitch_nat_with(
    conntrack_max: Option<usize>,
    publish: Vec<String>,
    socket: Option<&str>,
) -> Result<Topology, String> {
    use vswitch::api::{NetworkCreate, Op, PortAdd, Reply, UplinkSet};
    let p = prefix();
    let host = Ns::new(format!("{p}h"))?;
    let ext = Ns::new(format!("{p}e"))?;
    host.exec(&[
        "ip", "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", &ext.0,
    ])?;
    host.exec(&["ip", "link", "set", "up0", "up"])?;
    external(&ext)?;
    let d = Vswitchd::start(Some(&host))?;
    d.call(Op::NetworkCreate(NetworkCreate {
        name: "nat".into(),
        subnet: NAT_SUBNET.into(),
        gateway: Some(NAT_GATEWAY.into()),
        ..Default::default()
    }))?;
    let client = Ns::new(format!("{p}c"))?;
    d.call(Op::PortAdd(PortAdd {
        network: "nat".into(),
        netns: client.0.clone(),
        ip: Some(NAT_CLIENT_IP.into()),
        publish,
        ..Default::default()
    }))?;
    d.call(Op::UplinkSet(UplinkSet {
        iface: "up0".into(),
        mode: Some("dedicated".into()),
        ip: Some(NAT_OUTSIDE.into()),
        gateway: Some(EXT_ROUTER.into()),
        conntrack_max,
        // The kernel peer has no per-source bound: neither has this side (the fill and the
        // connection rate put hundreds of thousands of flows on one container).
        conntrack_per_source: Some(0),
        socket: socket.map(str::to_string),
        ..Default::default()
    }))?;
    let gateway_mac = match d.call(Op::ArpShow {
        network: Some("nat".into()),
    })? {
        Reply::Arp(tables) => tables
            .first()
            .map(|t| t.gateway_mac.clone())
            .ok_or("no gateway for network nat")?,
        other => return Err(format!("arp-show: unexpected reply {other:?}")),
    };
    Ok(Topology {
        client,
        server: ext,
        server_ip: NAT_SERVER_IP,
        client_ip: NAT_CLIENT_IP,
        gateway_mac: Some(gateway_mac),
        // The daemon goes first, then its host namespace (and the uplink's veth with it).
        _keep: vec![Box::new(d), Box::new(host)],
    })
}
