//! The pure pipeline: bytes and time in, forwarding decisions out. No syscalls, no clock reads,
//! no allocation per packet (the action buffers are reused and only grow to the widest flood).
//!
//! Stages (classify → L2 → gateway → routing and NAT to the uplink → later overlay) read the
//! frame through `wire` views; only a routed frame is rewritten, in place.

pub mod fdb;
pub mod gateway;
pub mod ipvlan;
pub mod nat;
pub mod overlay;
pub mod security;
pub mod trace;
pub mod vlan;

use crate::wire::ethernet::FrameError;
use crate::wire::{Frame, MacAddr};
use fdb::{Fdb, Learned};
use gateway::{Endpoint, Event, Gateway, GatewayConfig, Verdict};
use nat::{Emit, Routed, Uplink, UplinkConfig, Via};
use security::PortGuard;
use trace::Step;

use crate::wire::offload::VnetHdr;

/// A port's index in the dataplane's tables (stable while the port exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PortId(pub u32);

/// A network's index in the dataplane's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NetId(pub u32);

impl PortId {
    #[inline]
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}

impl NetId {
    #[inline]
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal: $doc:literal,)*) => {
        /// Why a frame was dropped. Every drop is counted on a port under one of these.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// The stable name shown by `vswitchctl port stats`.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    Runt => "runt": "Shorter than an Ethernet header.",
    BadLength => "bad_length": "An 802.3 length field that is invalid or longer than the frame.",
    InvalidSource => "invalid_source": "A multicast, broadcast or all-zero source MAC.",
    Hairpin => "hairpin": "The destination was learned on the port the frame came in on.",
    NoDestination => "no_destination": "Flooded on a network with no other port.",
    UnknownPort => "unknown_port": "Arrived on a port the pipeline does not know (a race with del-port).",
    Truncated => "truncated": "Larger than the receive buffer.",
    TxError => "tx_error": "The egress port refused the frame (interface down or gone).",
    RogueDhcp => "rogue_dhcp": "A DHCP server message (UDP 67 to 68) sent by a container.",
    NoRoute => "no_route": "Addressed to the gateway but not something it serves, or routed with no uplink (or no next hop) to take it.",
    BadArp => "bad_arp": "A malformed ARP packet addressed to the gateway.",
    BadIp => "bad_ip": "A malformed IPv4 packet addressed to the gateway.",
    BadDhcp => "bad_dhcp": "A malformed or invalid DHCP message.",
    BadDns => "bad_dns": "A malformed DNS query to the gateway.",
    Overloaded => "overloaded": "A DHCP lease or DNS query the control plane had no room for (event queue full).",
    NeedsOffload => "needs_offload": "A TSO/GSO or checksum-pending frame that software offload could not finish (malformed, or UFO).",
    Internal => "internal": "Routed out of an --internal network, which has no way out.",
    Isolated => "isolated": "Routed to another network of the switch: networks are isolated from each other.",
    TtlExceeded => "ttl_exceeded": "A routed packet whose TTL ran out (the gateway answers a container's with ICMP time exceeded).",
    TooBig => "too_big": "Larger than the uplink's MTU (with DF set the sender gets ICMP fragmentation needed).",
    ConntrackFull => "conntrack_full": "A new flow refused because the connection tracking table is full.",
    ConntrackSourceLimit => "ct_source_limit": "A new flow refused because its initiator (a container, or an outside client of a published port) has its share of the connection tracking table (--conntrack-per-source).",
    NatExhausted => "nat_exhausted": "A new flow refused because no NAT port was free for its destination.",
    NoConntrack => "no_conntrack": "Arrived on the uplink for no tracked flow (or a TCP RST for none).",
    NatUnsupported => "nat_unsupported": "A protocol masquerade does not translate (only TCP, UDP and ICMP echo).",
    NoNeighbor => "no_neighbor": "The next hop's MAC is unknown and the frames waiting for it are at their bound.",
    BadFragment => "bad_fragment": "A later IPv4 fragment whose first fragment was not seen.",
    NotOurs => "not_ours": "Arrived on the uplink for another MAC or address than the uplink's.",
    BadVxlan => "bad_vxlan": "A datagram at the VTEP too short for VXLAN or without the I flag.",
    UnknownVni => "unknown_vni": "A VXLAN datagram for a VNI no overlay network has.",
    UnknownVtep => "unknown_vtep": "A VXLAN datagram from an address that is not a peer of its network.",
    Unencrypted => "unencrypted": "A plain VXLAN datagram for an encrypted network's VNI.",
    NoKey => "no_key": "A frame for a peer of an encrypted network that has no key: never sent in the clear.",
    BadWireguard => "bad_wireguard": "A WireGuard message that did not authenticate (a wrong key, a replay, garbage).",
    SpoofedMac => "spoofed_mac": "Port security: a source MAC that is not the port's.",
    SpoofedIp => "spoofed_ip": "Port security: an IPv4 source address that is not the port's (DHCP from 0.0.0.0 excepted).",
    SpoofedArp => "spoofed_arp": "Port security: an ARP packet claiming another MAC or address than the port's.",
    IccDenied => "icc_denied": "Between two containers of a --no-icc network (they reach the gateway only).",
    MacLimit => "mac_limit": "From a new source MAC on a port that has as many as one port may (--port-mac-limit).",
    RateLimited => "rate_limited": "To the gateway's services (ARP, ICMP, DHCP, DNS) past the port's share a second (--gateway-rate).",
    NoBroadcast => "no_broadcast": "A broadcast or multicast a container of an ipvlan l3 network sent (l3 routes unicast IPv4 only).",
}

/// Per-port counters, owned by the dataplane thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl Default for PortCounters {
    fn default() -> Self {
        PortCounters {
            rx_packets: 0,
            rx_bytes: 0,
            tx_packets: 0,
            tx_bytes: 0,
            drops: [0; DropReason::COUNT],
        }
    }
}

impl PortCounters {
    #[inline]
    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    /// Frames dropped for what the port itself did: spoofing, past its MAC limit or its
    /// share of the gateway's services (what the dataplane damps a port for).
    pub fn abuse_drops(&self) -> u64 {
        [
            DropReason::SpoofedMac,
            DropReason::SpoofedIp,
            DropReason::SpoofedArp,
            DropReason::MacLimit,
            DropReason::RateLimited,
        ]
        .iter()
        .map(|r| self.drops[*r as usize])
        .sum()
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// What the pipeline decided for one frame. Reused across frames: `clear` keeps the capacity.
#[derive(Debug, Default)]
pub struct Actions {
    /// Ports the frame goes out of, unmodified.
    pub out: Vec<PortId>,
    /// Set when the frame went nowhere, with the reason it was counted under.
    pub drop: Option<DropReason>,
    /// The frame was flooded (broadcast, multicast or unknown unicast).
    pub flooded: bool,
    /// A frame the gateway wrote in answer, to go back out of the ingress port (empty if none).
    pub reply: Vec<u8>,
    /// Changes the control plane must hear about (DHCP leases).
    pub events: Vec<Event>,
    /// Frames the switch sends on its own, each out of its port (ARP requests for a next hop,
    /// frames that waited for one). The slow path: empty for almost every frame.
    pub emit: Emit,
    /// A trace's recorder (`trace::run`): each stage notes its decision. `None` on the
    /// dataplane's path, where noting costs a test and nothing else.
    pub trace: Option<Vec<trace::Step>>,
}

impl Actions {
    pub fn with_capacity(ports: usize) -> Actions {
        Actions {
            out: Vec::with_capacity(ports),
            drop: None,
            flooded: false,
            reply: Vec::with_capacity(2048),
            events: Vec::new(),
            emit: Vec::new(),
            trace: None,
        }
    }

    /// Records a stage's decision when the frame is traced; `step` runs only then.
    #[inline]
    pub fn note(&mut self, step: impl FnOnce() -> trace::Step) {
        if let Some(t) = &mut self.trace {
            t.push(step());
        }
    }

    #[inline]
    pub fn clear(&mut self) {
        self.out.clear();
        self.drop = None;
        self.flooded = false;
        self.reply.clear();
    }
}

#[derive(Debug, Clone)]
struct PortEntry {
    /// The port's network; `None` for the uplink.
    network: Option<NetId>,
    /// A tunnel to a remote VTEP: what comes in from it is not replicated to other VTEPs.
    tunnel: bool,
    /// A macvlan network's parent: it stands for a whole segment (no MAC limit), and it is the
    /// one port the others may reach in `--mode private`.
    segment: bool,
    /// Port security: what the port may send as (`None`: anything).
    guard: Option<PortGuard>,
    /// The loopback relay's port (`Network::relay`): it speaks as the gateway.
    relay: bool,
    /// The port's share of its gateway's services (`--gateway-rate`).
    bucket: Bucket,
    counters: PortCounters,
}

/// A token bucket, in thousandths of a frame so that a rate per second refills exactly by
/// the millisecond. Starts full.
#[derive(Debug, Clone, Default)]
struct Bucket {
    milli: u64,
    /// When it was last filled (`None`: never used, so full).
    last: Option<u64>,
}

impl Bucket {
    /// Takes one frame's token at `now` (ms) from a bucket of `rate` a second holding as
    /// many; false when it is empty.
    #[inline]
    fn take(&mut self, now: u64, rate: u32) -> bool {
        let cap = u64::from(rate) * 1000;
        self.milli = match self.last {
            None => cap,
            Some(t) => (self.milli + now.saturating_sub(t) * u64::from(rate)).min(cap),
        };
        self.last = Some(now);
        if self.milli >= 1000 {
            self.milli -= 1000;
            true
        } else {
            false
        }
    }
}

/// One broadcast domain: its ports and its MAC table.
#[derive(Debug, Clone)]
pub struct Network {
    /// Local ports.
    pub members: Vec<PortId>,
    /// Tunnel ports to remote VTEPs (overlay networks) that floods are replicated to (the
    /// peers), from local ports only. Tunnels for static FDB entries only are not here.
    pub remotes: Vec<PortId>,
    /// Every tunnel port of the network (peers and static-entry-only ones).
    pub tunnels: Vec<PortId>,
    /// Overlay networks: the largest IPv4 packet a tunnel carries (the underlay's MTU minus
    /// the encapsulation); bigger frames are not sent to a remote VTEP.
    pub overlay_mtu: Option<u32>,
    pub fdb: Fdb,
    pub gateway: Option<Gateway>,
    /// Routed packets may leave through the uplink (false for `--internal`).
    pub egress: bool,
    /// Containers may reach each other (false for `--no-icc`: only the gateway).
    pub icc: bool,
    /// Frames a second one port may send to the gateway's services (0: no limit).
    pub gateway_rate: u32,
    /// A macvlan network's parent (the segment outside): with `icc` false (`--mode private`)
    /// containers reach it, and it them, but not each other.
    pub parent: Option<PortId>,
    /// An ipvlan network: containers behind the parent's MAC, told apart by address.
    pub ipvlan: Option<ipvlan::Ipvlan>,
    /// The loopback relay's port: its connections to containers come from the gateway's
    /// address, from local ports in this range, and the containers' answers go back to it.
    pub relay: Option<RelayPort>,
}

/// Where a network's loopback relay is (`Pipeline::add_relay_port`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelayPort {
    pub port: PortId,
    /// The gateway's ports (TCP and UDP) the relay's connections use.
    pub ports: (u16, u16),
}

/// The switch's forwarding state and logic.
#[derive(Debug, Default, Clone)]
pub struct Pipeline {
    ports: Vec<Option<PortEntry>>,
    networks: Vec<Option<Network>>,
    uplink: Option<Uplink>,
    /// Overlay networks by VNI, tunnel ports by remote VTEP.
    pub tunnels: overlay::Tunnels,
}

/// Settings of a network the pipeline needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkParams {
    pub fdb_limit: usize,
    pub aging_ms: u64,
    /// The switch's router on this network, if it has one.
    pub gateway: Option<GatewayConfig>,
    /// Routed packets may leave through the uplink (false for `--internal`).
    pub egress: bool,
    /// Overlay networks: the VXLAN network identifier.
    pub vni: Option<u32>,
    /// Overlay networks: the largest IPv4 packet sent to a remote VTEP (the ports' MTU).
    pub overlay_mtu: Option<u32>,
    /// Overlay networks: a datagram from an unknown VTEP makes it a peer (`--learn-peers`).
    pub learn_peers: bool,
    /// Overlay networks: VXLAN only inside WireGuard sessions (`--encrypted`).
    pub encrypted: bool,
    /// Containers may reach each other at L2 (false: `--no-icc`).
    pub icc: bool,
    /// MACs one (non-tunnel) port may have in the network's table (0: no limit).
    pub port_mac_limit: u32,
    /// Frames a second one port may send to the gateway's services (ARP, ICMP, DHCP, DNS to
    /// the gateway), with as many in a burst (0: no limit).
    pub gateway_rate: u32,
}

fn slot<T>(v: &mut Vec<Option<T>>, idx: usize) -> &mut Option<T> {
    if v.len() <= idx {
        v.resize_with(idx + 1, || None);
    }
    &mut v[idx]
}

impl Pipeline {
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    pub fn add_network(&mut self, id: NetId, params: NetworkParams) {
        if let Some(vni) = params.vni {
            self.tunnels.add_network(vni, id);
            self.tunnels.set_learning(vni, params.learn_peers);
            self.tunnels.set_encrypted(vni, params.encrypted);
        }
        *slot(&mut self.networks, id.idx()) = Some(Network {
            members: Vec::new(),
            remotes: Vec::new(),
            tunnels: Vec::new(),
            overlay_mtu: params.vni.and(params.overlay_mtu),
            fdb: Fdb::new(params.fdb_limit, params.aging_ms).with_port_limit(params.port_mac_limit),
            gateway: params.gateway.map(Gateway::new),
            egress: params.egress,
            icc: params.icc,
            gateway_rate: params.gateway_rate,
            parent: None,
            ipvlan: None,
            relay: None,
        });
    }

    /// Makes a network an ipvlan network (or updates its settings: the host's routes via the
    /// parent), keeping the containers it knows. Returns false for an unknown network.
    pub fn set_ipvlan(&mut self, id: NetId, params: ipvlan::Params) -> bool {
        let Some(net) = self.network_mut(id) else {
            return false;
        };
        match &mut net.ipvlan {
            Some(iv) => iv.params = params,
            None => net.ipvlan = Some(ipvlan::Ipvlan::new(params)),
        }
        true
    }

    /// Removes a network and every port still on it.
    pub fn remove_network(&mut self, id: NetId) {
        if let Some(net) = self.networks.get_mut(id.idx()).and_then(Option::take) {
            if let Some(r) = net.relay {
                self.ports[r.port.idx()] = None;
            }
            // A segment port shared with other ipvlan l3 networks passes to one of them.
            let heir = net.parent.and_then(|seg| {
                self.networks()
                    .find(|(_, n)| n.parent == Some(seg))
                    .map(|(h, _)| (seg, h))
            });
            for p in net.members.into_iter().chain(net.tunnels) {
                match heir {
                    Some((seg, h)) if seg == p => {
                        if let Some(e) = self.ports[p.idx()].as_mut() {
                            e.network = Some(h);
                        }
                        if let Some(n) = self.network_mut(h) {
                            n.members.push(seg);
                        }
                    }
                    _ => self.ports[p.idx()] = None,
                }
            }
        }
        self.tunnels.remove_network(id);
    }

    /// Whether `port` is a segment port (a macvlan or ipvlan network's parent, one VLAN of it).
    pub fn is_segment(&self, port: PortId) -> bool {
        self.ports
            .get(port.idx())
            .and_then(Option::as_ref)
            .is_some_and(|p| p.segment)
    }

    /// Whether `port` is a segment port that networks other than `net` are behind too.
    pub fn segment_shared(&self, port: PortId, net: NetId) -> bool {
        self.networks()
            .any(|(id, n)| id != net && n.parent == Some(port))
    }

    pub fn network(&self, id: NetId) -> Option<&Network> {
        self.networks.get(id.idx()).and_then(Option::as_ref)
    }

    pub fn network_mut(&mut self, id: NetId) -> Option<&mut Network> {
        self.networks.get_mut(id.idx()).and_then(Option::as_mut)
    }

    pub fn networks(&self) -> impl Iterator<Item = (NetId, &Network)> {
        self.networks
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (NetId(i as u32), n)))
    }

    /// Attaches a port to a network; the gateway learns its address and names. Returns false
    /// when the network does not exist.
    pub fn add_port(&mut self, id: PortId, network: NetId, endpoint: Option<Endpoint>) -> bool {
        let Some(net) = self.network_mut(network) else {
            return false;
        };
        net.members.push(id);
        if let (Some(iv), Some(ep)) = (&mut net.ipvlan, &endpoint) {
            if let Some(ip) = ep.ip {
                iv.add_host(ip, id, ep.mac);
            }
        }
        if let (Some(gw), Some(ep)) = (&mut net.gateway, endpoint) {
            gw.add_endpoint(id, ep);
        }
        *slot(&mut self.ports, id.idx()) = Some(PortEntry {
            network: Some(network),
            tunnel: false,
            segment: false,
            guard: None,
            relay: false,
            bucket: Bucket::default(),
            counters: PortCounters::default(),
        });
        true
    }

    /// Attaches a macvlan network's parent (one VLAN of it): the segment's MACs are learned
    /// on it without a per-port limit. Returns false when the network does not exist or has a
    /// parent already.
    ///
    /// ipvlan l3 networks share one: a segment port that exists already joins `network` to
    /// its routing domain when both are l3 (the frames from the segment find their network by
    /// address).
    pub fn add_segment_port(&mut self, id: PortId, network: NetId) -> bool {
        let is_l3 = |n: &Network| {
            n.ipvlan
                .as_ref()
                .is_some_and(|i| i.params.mode == ipvlan::Mode::L3)
        };
        if let Some(owner) = self
            .ports
            .get(id.idx())
            .and_then(Option::as_ref)
            .filter(|p| p.segment)
            .and_then(|p| p.network)
        {
            let shares = owner != network
                && self.network(owner).is_some_and(is_l3)
                && self
                    .network(network)
                    .is_some_and(|n| is_l3(n) && n.parent.is_none());
            if shares {
                if let Some(n) = self.network_mut(network) {
                    n.parent = Some(id);
                }
            }
            return shares;
        }
        let Some(net) = self.network_mut(network).filter(|n| n.parent.is_none()) else {
            return false;
        };
        net.members.push(id);
        net.parent = Some(id);
        *slot(&mut self.ports, id.idx()) = Some(PortEntry {
            network: Some(network),
            tunnel: false,
            segment: true,
            guard: None,
            relay: false,
            bucket: Bucket::default(),
            counters: PortCounters::default(),
        });
        true
    }

    /// Attaches a network's loopback relay: frames from it speak as the gateway (its MAC is
    /// not learned, `--no-icc` does not stop them), and TCP and UDP to the gateway's address
    /// on `ports` go to it. It is no member: floods never reach it. Returns false when the
    /// network does not exist or has a relay already.
    pub fn add_relay_port(&mut self, id: PortId, network: NetId, ports: (u16, u16)) -> bool {
        let Some(net) = self.network_mut(network).filter(|n| n.relay.is_none()) else {
            return false;
        };
        net.relay = Some(RelayPort { port: id, ports });
        *slot(&mut self.ports, id.idx()) = Some(PortEntry {
            network: Some(network),
            tunnel: false,
            segment: false,
            guard: None,
            relay: true,
            bucket: Bucket::default(),
            counters: PortCounters::default(),
        });
        true
    }

    /// Port security for a port: frames not from `guard`'s MAC and address are dropped (see
    /// `PortGuard::check`); `None` turns it off. Returns false for an unknown port.
    pub fn set_port_guard(&mut self, id: PortId, guard: Option<PortGuard>) -> bool {
        match self.ports.get_mut(id.idx()).and_then(Option::as_mut) {
            Some(p) if p.network.is_some() && !p.tunnel => {
                p.guard = guard;
                true
            }
            _ => false,
        }
    }

    /// Attaches a tunnel port to the remote VTEP `remote` on an overlay network; `flood`: a
    /// peer that broadcasts and unknown unicast are replicated to (otherwise only static FDB
    /// entries point at it). Returns false when the network does not exist or is not an
    /// overlay.
    pub fn add_tunnel(
        &mut self,
        id: PortId,
        network: NetId,
        vni: u32,
        remote: std::net::Ipv4Addr,
        flood: bool,
    ) -> bool {
        if self.tunnels.network_of(vni) != Some(network) {
            return false;
        }
        let Some(net) = self.network_mut(network) else {
            return false;
        };
        if flood {
            net.remotes.push(id);
        }
        net.tunnels.push(id);
        self.tunnels.add_tunnel(vni, remote, id);
        *slot(&mut self.ports, id.idx()) = Some(PortEntry {
            network: Some(network),
            tunnel: true,
            segment: false,
            guard: None,
            relay: false,
            bucket: Bucket::default(),
            counters: PortCounters::default(),
        });
        true
    }

    /// Makes a tunnel a peer that floods are replicated to, or takes it out of the flood list
    /// (static FDB entries still point at it). Returns false when `id` is not a tunnel.
    pub fn set_tunnel_flood(&mut self, id: PortId, flood: bool) -> bool {
        let Some(PortEntry {
            network: Some(net),
            tunnel: true,
            ..
        }) = self.ports.get(id.idx()).and_then(Option::as_ref)
        else {
            return false;
        };
        let net = *net;
        let Some(n) = self.network_mut(net) else {
            return false;
        };
        n.remotes.retain(|p| *p != id);
        if flood {
            n.remotes.push(id);
        }
        true
    }

    /// A static FDB entry on network `net`: `mac` is behind `port` (a tunnel: a container on a
    /// remote VTEP), and with `ip` ARP suppression answers for its address before any traffic.
    /// Returns false when the network or the port is unknown, or the port is not on it.
    pub fn fdb_pin(
        &mut self,
        net: NetId,
        mac: MacAddr,
        port: PortId,
        ip: Option<std::net::Ipv4Addr>,
        names: &[String],
    ) -> bool {
        let on_net = self
            .ports
            .get(port.idx())
            .and_then(Option::as_ref)
            .is_some_and(|p| p.network == Some(net));
        let Some(n) = self.network_mut(net).filter(|_| on_net) else {
            return false;
        };
        n.fdb.pin(mac, port);
        if let (Some(gw), Some(ip)) = (&mut n.gateway, ip) {
            gw.set_static_neighbor(ip, mac, port, names);
        }
        true
    }

    /// Removes a static FDB entry (and its ARP suppression entry).
    pub fn fdb_unpin(
        &mut self,
        net: NetId,
        mac: MacAddr,
        ip: Option<std::net::Ipv4Addr>,
        names: &[String],
    ) {
        if let Some(n) = self.network_mut(net) {
            n.fdb.unpin(&mac);
            if let (Some(gw), Some(ip)) = (&mut n.gateway, ip) {
                gw.remove_static_neighbor(ip, mac, names);
            }
        }
    }

    /// Makes `id` the uplink: routed packets leave through it, masqueraded behind its address.
    /// Returns false when there is one already.
    pub fn set_uplink(&mut self, id: PortId, cfg: UplinkConfig) -> bool {
        if self.uplink.is_some() {
            return false;
        }
        self.uplink = Some(Uplink::new(id, cfg));
        *slot(&mut self.ports, id.idx()) = Some(PortEntry {
            network: None,
            tunnel: false,
            segment: false,
            guard: None,
            relay: false,
            bucket: Bucket::default(),
            counters: PortCounters::default(),
        });
        true
    }

    pub fn uplink(&self) -> Option<&Uplink> {
        self.uplink.as_ref()
    }

    pub fn uplink_mut(&mut self) -> Option<&mut Uplink> {
        self.uplink.as_mut()
    }

    /// Detaches a port, forgetting the MACs learned on it. Returns its final counters.
    pub fn remove_port(&mut self, id: PortId) -> Option<PortCounters> {
        let entry = self.ports.get_mut(id.idx()).and_then(Option::take)?;
        self.tunnels.remove_tunnel(id);
        if entry.network.is_none() && self.uplink.as_ref().is_some_and(|u| u.port == id) {
            // The uplink goes, and every flow through it.
            self.uplink = None;
        }
        if let Some(net) = entry
            .network
            .and_then(|n| self.networks.get_mut(n.idx()))
            .and_then(Option::as_mut)
        {
            net.members.retain(|p| *p != id);
            if let Some(iv) = &mut net.ipvlan {
                iv.remove_port(id);
            }
            net.remotes.retain(|p| *p != id);
            net.tunnels.retain(|p| *p != id);
            net.fdb.flush_port(id);
            if let Some(gw) = &mut net.gateway {
                gw.remove_endpoint(id);
            }
            if net.relay.is_some_and(|r| r.port == id) {
                net.relay = None;
            }
        }
        if entry.segment {
            // Every network behind it (ipvlan l3 networks share one).
            for net in self.networks.iter_mut().flatten() {
                if net.parent == Some(id) {
                    net.parent = None;
                }
            }
        }
        Some(entry.counters)
    }

    pub fn port_counters(&self, id: PortId) -> Option<&PortCounters> {
        self.ports
            .get(id.idx())
            .and_then(Option::as_ref)
            .map(|p| &p.counters)
    }

    pub fn port_counters_mut(&mut self, id: PortId) -> Option<&mut PortCounters> {
        self.ports
            .get_mut(id.idx())
            .and_then(Option::as_mut)
            .map(|p| &mut p.counters)
    }

    /// Ages out MAC entries on every network.
    pub fn expire(&mut self, now: u64) {
        for net in self.networks.iter_mut().flatten() {
            net.fdb.expire(now);
            if let Some(gw) = &mut net.gateway {
                gw.expire(now);
            }
            if let Some(iv) = &mut net.ipvlan {
                iv.expire(now);
            }
        }
        if let Some(u) = &mut self.uplink {
            u.expire(now);
        }
    }

    /// Decides where one frame received on `in_port` at `now` (milliseconds, any monotonic origin)
    /// goes. Counts rx and drops on the ingress port; tx is counted by the shell when it sends.
    pub fn process(&mut self, now: u64, in_port: PortId, frame: &mut [u8], actions: &mut Actions) {
        self.process_vnet(now, in_port, frame, None, actions)
    }

    /// `process` for a frame that came with a virtio-net header (a TAP with offloads): a
    /// routed frame's pending checksum is updated as such, and a TSO super-frame is translated
    /// whole.
    pub fn process_vnet(
        &mut self,
        now: u64,
        in_port: PortId,
        frame: &mut [u8],
        vnet: Option<&VnetHdr>,
        actions: &mut Actions,
    ) {
        actions.clear();
        let Some(port) = self.ports.get_mut(in_port.idx()).and_then(Option::as_mut) else {
            actions.note(|| Step::new("ingress", "drop", "the pipeline does not know this port"));
            actions.drop = Some(DropReason::UnknownPort);
            return;
        };
        actions.note(|| {
            let what = match (port.network, port.tunnel) {
                (None, _) => "the uplink",
                (Some(_), true) => "a tunnel from a remote VTEP",
                (Some(_), false) => "a port",
            };
            let s = Step::new(
                "ingress",
                "port",
                format!("{} bytes on {what}", frame.len()),
            )
            .port(in_port);
            match port.network {
                Some(n) => s.network(n),
                None => s,
            }
        });
        let counters = &mut port.counters;
        counters.rx_packets += 1;
        counters.rx_bytes += frame.len() as u64;

        let eth = match Frame::new_checked(&*frame) {
            Ok(f) => f,
            Err(e) => {
                let reason = match e {
                    FrameError::Runt => DropReason::Runt,
                    FrameError::BadLength => DropReason::BadLength,
                };
                counters.count_drop(reason);
                actions.note(|| Step::new("classify", "drop", "not an Ethernet frame"));
                actions.drop = Some(reason);
                return;
            }
        };
        let src = eth.src();
        if !src.is_valid_source() {
            actions.note(|| {
                Step::new(
                    "classify",
                    "drop",
                    format!("source MAC {src} is not a station's"),
                )
            });
            counters.count_drop(DropReason::InvalidSource);
            actions.drop = Some(DropReason::InvalidSource);
            return;
        }
        let Some(net_id) = port.network else {
            return self.route_in(now, in_port, frame, actions);
        };
        let from_tunnel = port.tunnel;
        let from_segment = port.segment;
        if let Some(guard) = &port.guard {
            if let Err(reason) = guard.check(frame) {
                actions.note(|| {
                    Step::new(
                        "port_security",
                        "drop",
                        format!(
                            "{}: the port may send only as {} / {}",
                            reason.name(),
                            guard.mac,
                            guard.ip
                        ),
                    )
                });
                counters.count_drop(reason);
                actions.drop = Some(reason);
                return;
            }
            actions.note(|| {
                Step::new(
                    "port_security",
                    "pass",
                    format!("sent as the port's own {} / {}", guard.mac, guard.ip),
                )
            });
        } else if !from_tunnel {
            actions.note(|| Step::new("port_security", "off", "the port may send as anyone"));
        }
        let Some(net) = self.networks.get_mut(net_id.idx()).and_then(Option::as_mut) else {
            counters.count_drop(DropReason::UnknownPort);
            actions.drop = Some(DropReason::UnknownPort);
            return;
        };
        if port.relay {
            // The loopback relay speaks as the gateway, to one container: not learned, not
            // flooded to tunnels, past `--no-icc`.
            let dst = eth.dst();
            match net.fdb.lookup(&dst, now) {
                Some(out) if out != in_port => {
                    actions.note(|| {
                        Step::new("relay", "out", format!("from the loopback relay to {dst}"))
                            .port(out)
                    });
                    actions.out.push(out);
                }
                _ => {
                    actions.note(|| {
                        Step::new(
                            "relay",
                            "flood",
                            format!("{dst} not heard from lately: to the network's ports"),
                        )
                    });
                    actions.flooded = true;
                    actions.out.extend(net.members.iter().copied());
                    if actions.out.is_empty() {
                        counters.count_drop(DropReason::NoDestination);
                        actions.drop = Some(DropReason::NoDestination);
                    }
                }
            }
            return;
        }
        if net.gateway.as_ref().is_some_and(|g| g.config().mac == src) {
            // Only the switch speaks with the gateway's MAC.
            actions.note(|| Step::new("classify", "drop", "sent as the gateway's MAC"));
            counters.count_drop(DropReason::InvalidSource);
            actions.drop = Some(DropReason::InvalidSource);
            return;
        }

        // L2: learn, then let the gateway take what is addressed to it.
        let learned = net
            .fdb
            .learn(src, in_port, now, !from_tunnel && !from_segment);
        actions.note(|| {
            let (verdict, detail) = match learned {
                Learned::Refreshed => ("refresh", format!("{src} was already here")),
                Learned::New => ("new", format!("{src} learned here")),
                Learned::Moved(_) => ("moved", format!("{src} moved here from another port")),
                Learned::NewEvicting => (
                    "new",
                    format!("{src} learned here, pushing out the oldest entry (table full)"),
                ),
                Learned::Refused => (
                    "refused",
                    format!("{src} has a static entry elsewhere (or the table is full of them)"),
                ),
                Learned::PortFull => (
                    "drop",
                    format!("mac_limit: the port has as many MACs as one may ({src} is one more)"),
                ),
            };
            let s = Step::new("learn", verdict, detail);
            match learned {
                Learned::Moved(from) => s.port(from),
                _ => s,
            }
        });
        if let Learned::Moved(from) = learned {
            actions.events.push(Event::MacMoved {
                network: net_id,
                mac: src,
                from,
                to: in_port,
            });
        }
        if learned == Learned::PortFull {
            counters.count_drop(DropReason::MacLimit);
            actions.drop = Some(DropReason::MacLimit);
            return;
        }
        if net.ipvlan.is_some() {
            return self.process_ipvlan(now, in_port, net_id, from_segment, frame, vnet, actions);
        }
        if let Some(gw) = &mut net.gateway {
            if net.gateway_rate > 0
                && !from_tunnel
                && for_the_gateway(frame, gw.config())
                && !port.bucket.take(now, net.gateway_rate)
            {
                actions.note(|| {
                    Step::new(
                        "gateway",
                        "drop",
                        format!(
                            "rate_limited: past the port's {} frames a second to the gateway",
                            net.gateway_rate
                        ),
                    )
                });
                counters.count_drop(DropReason::RateLimited);
                actions.drop = Some(DropReason::RateLimited);
                return;
            }
            let verdict = gw.handle(
                now,
                net_id,
                in_port,
                frame,
                &mut actions.reply,
                &mut actions.events,
            );
            if actions.trace.is_some() {
                let gw_ip = gw.config().ip;
                let (v, detail) = match verdict {
                    Verdict::Pass => ("pass", "not for the gateway: switched at L2".to_string()),
                    Verdict::Consumed if actions.reply.is_empty() => (
                        "consumed",
                        "taken by the gateway, nothing to answer".to_string(),
                    ),
                    Verdict::Consumed => ("consumed", answer_kind(&actions.reply, gw_ip)),
                    Verdict::Drop(r) => ("drop", r.name().to_string()),
                    Verdict::Route(dst) => ("route", format!("to {dst}, outside the network")),
                    Verdict::Local => (
                        "local",
                        format!("to the gateway's own {gw_ip}: the return side of a hairpin flow?"),
                    ),
                };
                actions.note(|| Step::new("gateway", v, detail));
            }
            match verdict {
                Verdict::Pass => {}
                Verdict::Consumed => return,
                Verdict::Drop(reason) => {
                    actions.reply.clear();
                    counters.count_drop(reason);
                    actions.drop = Some(reason);
                    return;
                }
                Verdict::Route(dst) => {
                    let via = Via {
                        net: net_id,
                        ip: gw.config().ip,
                        mac: gw.config().mac,
                    };
                    let egress = net.egress;
                    return self.route_out(now, in_port, via, egress, dst, frame, vnet, actions);
                }
                Verdict::Local => {
                    if let Some(r) = net.relay.filter(|r| to_relay(frame, r.ports)) {
                        actions.note(|| {
                            Step::new(
                                "relay",
                                "out",
                                "to the gateway's address on a port of the loopback relay",
                            )
                            .port(r.port)
                        });
                        actions.out.push(r.port);
                        return;
                    }
                    let via = Via {
                        net: net_id,
                        ip: gw.config().ip,
                        mac: gw.config().mac,
                    };
                    let routed = match self.uplink.as_mut() {
                        Some(up) => up.hairpin_back(now, via, frame, vnet),
                        None => Routed::Drop(DropReason::NoRoute),
                    };
                    return self.routed_local(now, in_port, routed, frame, actions);
                }
            }
        }

        // Forward to the known port or flood within the network.
        let dst = eth.dst();
        // A frame a tunnel cannot carry (over the overlay's MTU; a TSO super-frame is cut to
        // its MSS later) is never sent to a remote VTEP.
        let too_big_for_tunnels = !from_tunnel
            && net.overlay_mtu.is_some_and(|mtu| {
                frame.len() > 14 + mtu as usize
                    && !vnet.is_some_and(|v| {
                        v.gso_type & !crate::wire::offload::GSO_ECN
                            != crate::wire::offload::GSO_NONE
                    })
            });
        if !dst.is_multicast() {
            if let Some(out) = net.fdb.lookup(&dst, now) {
                actions.note(|| Step::new("fdb", "hit", format!("{dst} is on")).port(out));
                if out == in_port {
                    actions.note(|| Step::new("fdb", "drop", "hairpin: back where it came from"));
                    counters.count_drop(DropReason::Hairpin);
                    actions.drop = Some(DropReason::Hairpin);
                } else if !net.icc && !net.parent.is_some_and(|p| p == in_port || p == out) {
                    actions.note(|| {
                        Step::new("icc", "drop", "--no-icc: containers reach the gateway only")
                    });
                    counters.count_drop(DropReason::IccDenied);
                    actions.drop = Some(DropReason::IccDenied);
                } else if too_big_for_tunnels && net.tunnels.contains(&out) {
                    actions.note(|| {
                        Step::new(
                            "overlay",
                            "drop",
                            format!(
                                "too_big: {} bytes over the overlay's MTU {}",
                                frame.len() - 14,
                                net.overlay_mtu.unwrap_or(0)
                            ),
                        )
                    });
                    // With DF set the sender learns the path MTU from the gateway, as from a
                    // router; without it there is no fragmenting the inner packet here.
                    if let (Some(gw), Some(mtu)) = (&net.gateway, net.overlay_mtu) {
                        gw.write_frag_needed(frame, mtu, &mut actions.reply);
                    }
                    counters.count_drop(DropReason::TooBig);
                    actions.drop = Some(DropReason::TooBig);
                } else {
                    actions.out.push(out);
                }
                return;
            }
        }
        actions.note(|| {
            let why = if dst.is_broadcast() {
                "broadcast".to_string()
            } else if dst.is_multicast() {
                "multicast".to_string()
            } else {
                format!("{dst} is not in the table: unknown unicast")
            };
            Step::new("fdb", "miss", why)
        });
        if !net.icc && net.parent.is_some() {
            // A private macvlan network: what the segment sends reaches every container, what
            // a container floods reaches the segment only.
            actions.flooded = true;
            match net.parent {
                Some(p) if p == in_port => actions
                    .out
                    .extend(net.members.iter().copied().filter(|m| *m != in_port)),
                Some(p) => actions.out.push(p),
                None => {}
            }
            actions.note(|| {
                Step::new(
                    "flood",
                    "private",
                    "--mode private: containers hear the parent's segment only",
                )
            });
            if actions.out.is_empty() {
                counters.count_drop(DropReason::NoDestination);
                actions.drop = Some(DropReason::NoDestination);
            }
            return;
        }
        if !net.icc {
            actions.note(|| {
                Step::new(
                    "icc",
                    "drop",
                    "--no-icc: a flood reaches no other container",
                )
            });
            // Nobody but the gateway (which took what was for it) is to hear it.
            let reason = if net.members.len() > 1 || !net.tunnels.is_empty() {
                DropReason::IccDenied
            } else {
                DropReason::NoDestination
            };
            counters.count_drop(reason);
            actions.drop = Some(reason);
            return;
        }
        actions.flooded = true;
        actions
            .out
            .extend(net.members.iter().copied().filter(|p| *p != in_port));
        // Head-end replication with split horizon: what came from a remote VTEP is not sent
        // to the others (each VTEP floods to all peers itself).
        if !from_tunnel {
            if too_big_for_tunnels && !net.remotes.is_empty() {
                actions.note(|| {
                    Step::new(
                        "overlay",
                        "drop",
                        "too_big: not replicated to the remote VTEPs (over the overlay's MTU)",
                    )
                });
                counters.count_drop(DropReason::TooBig);
                if actions.out.is_empty() {
                    actions.drop = Some(DropReason::TooBig);
                }
                return;
            }
            actions.out.extend(net.remotes.iter().copied());
        }
        if actions.trace.is_some() {
            let remotes = actions
                .out
                .iter()
                .filter(|p| net.tunnels.contains(p))
                .count();
            let local = actions.out.len() - remotes;
            let split = if from_tunnel {
                " (not to other VTEPs: it came from one)"
            } else {
                ""
            };
            let verdict = if actions.out.is_empty() {
                "drop"
            } else {
                "flood"
            };
            let detail = format!("to {local} local port(s) and {remotes} remote VTEP(s){split}");
            actions.note(|| Step::new("flood", verdict, detail));
        }
        if actions.out.is_empty() {
            counters.count_drop(DropReason::NoDestination);
            actions.drop = Some(DropReason::NoDestination);
        }
    }

    fn count(&mut self, port: PortId, reason: DropReason, actions: &mut Actions) {
        if let Some(c) = self.port_counters_mut(port) {
            c.count_drop(reason);
        }
        actions.drop = Some(reason);
    }

    /// A container's packet for `dst`, outside its network: out through the uplink, unless the
    /// network is internal or `dst` is another network of the switch.
    #[allow(clippy::too_many_arguments)]
    fn route_out(
        &mut self,
        now: u64,
        in_port: PortId,
        via: Via,
        egress: bool,
        dst: std::net::Ipv4Addr,
        frame: &mut [u8],
        vnet: Option<&VnetHdr>,
        actions: &mut Actions,
    ) {
        let reason = if !egress {
            Some(DropReason::Internal)
        } else if self.networks().any(|(_, n)| {
            n.gateway
                .as_ref()
                .is_some_and(|g| g.config().subnet.contains(&dst))
        }) {
            Some(DropReason::Isolated)
        } else if self.uplink.is_none() {
            Some(DropReason::NoRoute)
        } else {
            None
        };
        if let Some(r) = reason {
            actions.note(|| {
                let why = match r {
                    DropReason::Internal => "an --internal network has no way out".to_string(),
                    DropReason::Isolated => {
                        format!("{dst} is on another network of the switch: networks are isolated")
                    }
                    _ => "no uplink: `vswitchctl uplink set` gives the switch one".to_string(),
                };
                Step::new("route", "drop", format!("{}: {why}", r.name()))
            });
            return self.count(in_port, r, actions);
        }
        let Some(up) = self.uplink.as_mut() else {
            return;
        };
        actions.note(|| {
            Step::new("route", "uplink", format!("{dst} through the uplink")).port(up.port)
        });
        let routed = up.outbound(now, via, frame, vnet, &mut actions.reply, &mut actions.emit);
        self.routed_local(now, in_port, routed, frame, actions)
    }

    /// Acts on what the NAT stage made of a frame: out of a port, to a container of the
    /// switch (`Deliver`: a reply from outside, or a hairpinned packet), or nowhere.
    fn routed_local(
        &mut self,
        now: u64,
        in_port: PortId,
        routed: Routed,
        frame: &mut [u8],
        actions: &mut Actions,
    ) {
        actions.note(|| match &routed {
            Routed::Deliver { net, mac } => Step::new(
                "nat",
                "deliver",
                format!("to {mac}, a container of the switch"),
            )
            .network(*net),
            Routed::Out(p) => Step::new("nat", "out", "translated, out of").port(*p),
            Routed::Replied => Step::new("nat", "replied", "answered by the uplink"),
            Routed::Consumed => Step::new(
                "nat",
                "consumed",
                "taken by the uplink (an ARP reply, or waiting for the next hop's MAC)",
            ),
            Routed::Drop(r) => Step::new("nat", "drop", r.name()),
        });
        match routed {
            Routed::Deliver { net, mac } => {
                let Some(n) = self.networks.get_mut(net.idx()).and_then(Option::as_mut) else {
                    return self.count(in_port, DropReason::NoDestination, actions);
                };
                let gw_mac = n.gateway.as_ref().map_or(MacAddr::ZERO, |g| g.config().mac);
                frame[0..6].copy_from_slice(&mac.0);
                frame[6..12].copy_from_slice(&gw_mac.0);
                match n.fdb.lookup(&mac, now) {
                    Some(out) => {
                        actions.note(|| Step::new("fdb", "hit", format!("{mac} is on")).port(out));
                        actions.out.push(out)
                    }
                    None => {
                        actions.note(|| {
                            Step::new(
                                "fdb",
                                "miss",
                                format!("{mac} not heard from lately: flooded"),
                            )
                        });
                        // Not heard from lately: flood it within its network, as L2 does.
                        actions.flooded = true;
                        actions.out.extend(n.members.iter().copied());
                        if actions.out.is_empty() {
                            self.count(in_port, DropReason::NoDestination, actions);
                        }
                    }
                }
            }
            Routed::Out(p) => actions.out.push(p),
            Routed::Replied | Routed::Consumed => {}
            Routed::Drop(r) => {
                actions.reply.clear();
                self.count(in_port, r, actions)
            }
        }
    }

    /// A frame from the uplink: ARP and echo for its address, or a reply of a tracked flow,
    /// which goes to its container with the gateway's MAC as the source.
    fn route_in(&mut self, now: u64, in_port: PortId, frame: &mut [u8], actions: &mut Actions) {
        let Some(up) = self.uplink.as_mut().filter(|u| u.port == in_port) else {
            return self.count(in_port, DropReason::UnknownPort, actions);
        };
        let routed = up.inbound(now, frame, &mut actions.reply, &mut actions.emit);
        self.routed_local(now, in_port, routed, frame, actions)
    }
}

/// Whether a frame asks the gateway's services for work: any ARP (answered by the gateway or
/// by suppression, or flooded), IPv4 to the gateway's own address (ICMP, DNS), and broadcast
/// DHCP. Routed traffic (to the gateway's MAC, for another address) is not. Header reads only:
/// it runs before the gateway parses anything.
#[inline]
fn for_the_gateway(frame: &[u8], gw: &GatewayConfig) -> bool {
    let Some(ty) = frame.get(12..14) else {
        return false;
    };
    match [ty[0], ty[1]] {
        [0x08, 0x06] => true,
        [0x08, 0x00] => {
            let dst_ip = frame.get(30..34);
            if frame[0..6] == gw.mac.0 {
                // Its services: ICMP, DNS (UDP and TCP), DHCP. Not the containers' side of a
                // hairpin flow or of the loopback relay's connections.
                dst_ip == Some(&gw.ip.octets()[..])
                    && match frame.get(23) {
                        Some(1) => true,
                        Some(6 | 17) => {
                            matches!(l4_ports(frame), Some((_, 53 | 67)) | None)
                        }
                        _ => false,
                    }
            } else {
                // A broadcast DHCP request: UDP (protocol 17) to port 67.
                frame[0..6] == [0xff; 6]
                    && frame.get(23) == Some(&17)
                    && frame.get(14).is_some_and(|v| v >> 4 == 4)
                    && {
                        let ihl = usize::from(frame[14] & 0x0f) * 4;
                        frame.get(14 + ihl + 2..14 + ihl + 4) == Some(&[0, 67][..])
                    }
            }
        }
        _ => false,
    }
}

/// The (source, destination) ports of an IPv4 TCP or UDP frame, if it has them.
#[inline]
fn l4_ports(frame: &[u8]) -> Option<(u16, u16)> {
    let ihl = usize::from(frame.get(14)? & 0x0f) * 4;
    let p = frame.get(14 + ihl..14 + ihl + 4)?;
    Some((
        u16::from_be_bytes([p[0], p[1]]),
        u16::from_be_bytes([p[2], p[3]]),
    ))
}

/// Whether an IPv4 frame is TCP or UDP to a destination port in `lo..=hi` (the loopback
/// relay's).
#[inline]
fn to_relay(frame: &[u8], (lo, hi): (u16, u16)) -> bool {
    matches!(frame.get(23), Some(6 | 17))
        && l4_ports(frame).is_some_and(|(_, d)| (lo..=hi).contains(&d))
}

/// What the gateway wrote in answer, for a trace: ARP suppression (an answer for another
/// address than its own), its own ARP, ICMP, DHCP or DNS.
fn answer_kind(reply: &[u8], gw_ip: std::net::Ipv4Addr) -> String {
    let what = crate::wire::flow::describe(reply);
    let kind = if what.starts_with("arp,") {
        if what.contains(&format!("arp_spa={gw_ip},")) {
            "the gateway's own ARP reply"
        } else {
            "ARP suppression: answered for the container"
        }
    } else if what.contains("(DHCP") {
        "DHCP server"
    } else if what.contains("(DNS") {
        "DNS: answered from the network's names"
    } else if what.starts_with("icmp,") {
        "ICMP"
    } else {
        "answered"
    };
    kind.to_string()
}

#[cfg(test)]
mod tests;
