//! ipvlan networks: containers on a parent interface's segment behind the parent's one MAC.
//! The switch tells containers apart by address, as the kernel's ipvlan does, and rewrites
//! MACs at the edge: a container keeps its own MAC on its port, the segment sees only the
//! parent's.
//!
//! - **l2**: the network is one L2 domain with the segment. Everything a container sends
//!   leaves with the parent's MAC as its source (ARP's sender too); what comes back for the
//!   parent's MAC goes to the container whose address it is for. The switch answers the
//!   segment's ARP for container addresses itself. Containers know each other (and the
//!   segment knows them) as the parent's MAC; frames between them are delivered by address.
//! - **l3**: the switch is a router between the containers and the segment. It answers every
//!   ARP request of a container with the parent's MAC (whatever the container's routes say,
//!   its packets come to the switch), routes unicast IPv4 only (TTL decremented), and puts no
//!   container broadcast or multicast on the segment. Next hops on the segment follow the
//!   host's routes via the parent (pushed by the control plane), resolved by ARP from the
//!   parent's MAC. Several l3 networks may share one parent (and VLAN): they are one routing
//!   domain, reached from the segment by address.
//!
//! Pure code: the pipeline calls it with the frame; MACs, ARP fields and TTL are rewritten in
//! place.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;

use etherparse::{ArpOperation, ArpPacketSlice};
use ipnet::Ipv4Net;

use super::gateway::write_arp_reply;
use super::nat::Neighbors;
use super::trace::Step;
use super::{Actions, DropReason, NetId, Pipeline, PortId};
use crate::wire::ipv4::Ipv4;
use crate::wire::offload::{self, VnetHdr};
use crate::wire::{EtherType, MacAddr};

/// Frames that wait for a next hop's MAC, over every hop of a network.
const MAX_PENDING: usize = 64;
/// How long one waits before it is given up.
const PENDING_MS: u64 = 3000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    L2,
    L3,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "l2" => Some(Mode::L2),
            "l3" => Some(Mode::L3),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Mode::L2 => "l2",
            Mode::L3 => "l3",
        }
    }
}

/// What the control plane tells the pipeline about an ipvlan network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub mode: Mode,
    /// The parent's MAC: every container's on the wire.
    pub parent_mac: MacAddr,
    /// The network's subnet (l3: on the segment's link when no route says otherwise).
    pub subnet: Ipv4Net,
    /// l3: the containers' gateway address, the source of the switch's ICMP errors.
    pub router: Ipv4Addr,
    /// l3: the host's routes via the parent, `(prefix, gateway)` (`None`: on the link),
    /// longest prefix first.
    pub routes: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
}

/// What a container's frame needs of its network's settings (copied per frame).
#[derive(Debug, Clone, Copy)]
struct Edge {
    mode: Mode,
    parent_mac: MacAddr,
    subnet: Ipv4Net,
    router: Ipv4Addr,
}

/// An ipvlan network's state in the pipeline.
#[derive(Debug, Clone)]
pub struct Ipvlan {
    pub params: Params,
    /// The network's containers by address: their port and their own MAC.
    hosts: HashMap<Ipv4Addr, (PortId, MacAddr)>,
    /// l3: stations on the segment (next hops), learned from ARP.
    neighbors: Neighbors,
    /// l3: frames waiting for their next hop's MAC: hop, since when, frame.
    pending: VecDeque<(Ipv4Addr, u64, Vec<u8>)>,
}

impl Ipvlan {
    pub fn new(params: Params) -> Ipvlan {
        Ipvlan {
            params,
            hosts: HashMap::new(),
            neighbors: Neighbors::new(),
            pending: VecDeque::new(),
        }
    }

    pub fn add_host(&mut self, ip: Ipv4Addr, port: PortId, mac: MacAddr) {
        self.hosts.insert(ip, (port, mac));
    }

    pub fn remove_port(&mut self, port: PortId) {
        self.hosts.retain(|_, (p, _)| *p != port);
    }

    fn edge(&self) -> Edge {
        Edge {
            mode: self.params.mode,
            parent_mac: self.params.parent_mac,
            subnet: self.params.subnet,
            router: self.params.router,
        }
    }

    pub fn host(&self, ip: Ipv4Addr) -> Option<(PortId, MacAddr)> {
        self.hosts.get(&ip).copied()
    }

    pub fn expire(&mut self, now: u64) {
        self.neighbors.expire(now);
        self.pending
            .retain(|(_, t, _)| now.saturating_sub(*t) < PENDING_MS);
    }

    /// l3: the next hop on the segment for `dst`.
    fn next_hop(&self, dst: Ipv4Addr) -> Option<Ipv4Addr> {
        for (prefix, gw) in &self.params.routes {
            if prefix.contains(&dst) {
                return Some(gw.unwrap_or(dst));
            }
        }
        self.params.subnet.contains(&dst).then_some(dst)
    }
}

/// The fields of an Ethernet/IPv4 ARP packet the switch acts on.
struct Arp {
    request: bool,
    sha: MacAddr,
    spa: Ipv4Addr,
    tpa: Ipv4Addr,
}

/// Where the ARP sender and target MACs sit in a frame (Ethernet/IPv4 ARP after 14 bytes).
const ARP_SHA: std::ops::Range<usize> = 22..28;
const ARP_THA: std::ops::Range<usize> = 32..38;

fn arp_of(frame: &[u8]) -> Option<Arp> {
    let arp = ArpPacketSlice::from_slice(frame.get(14..)?)
        .ok()?
        .to_packet()
        .try_eth_ipv4()
        .ok()?;
    Some(Arp {
        request: arp.operation == ArpOperation::REQUEST,
        sha: MacAddr(arp.sender_mac),
        spa: arp.sender_ipv4_addr(),
        tpa: arp.target_ipv4_addr(),
    })
}

fn ipv4_addrs(frame: &[u8]) -> Option<(Ipv4Addr, Ipv4Addr)> {
    let ip = Ipv4::new_checked(frame.get(14..)?).ok()?;
    Some((ip.src(), ip.dst()))
}

/// Decrements a routed packet's TTL; false when it ran out.
fn forward_ttl(frame: &mut [u8]) -> bool {
    match Ipv4::new_checked(&mut frame[14..]) {
        Ok(mut ip) if ip.ttl() > 1 => {
            ip.decrement_ttl();
            true
        }
        _ => false,
    }
}

fn set_macs(frame: &mut [u8], dst: MacAddr, src: MacAddr) {
    frame[0..6].copy_from_slice(&dst.0);
    frame[6..12].copy_from_slice(&src.0);
}

fn is_type(frame: &[u8], ty: u16) -> bool {
    frame[12..14] == ty.to_be_bytes()
}

impl Pipeline {
    /// The network (and container) an address is on, among the ipvlan networks reached
    /// through segment port `seg`.
    fn ipvlan_host(&self, seg: PortId, ip: Ipv4Addr) -> Option<(NetId, PortId, MacAddr)> {
        self.networks().find_map(|(id, n)| {
            if n.parent != Some(seg) {
                return None;
            }
            let (p, m) = n.ipvlan.as_ref()?.host(ip)?;
            Some((id, p, m))
        })
    }

    /// The parent's MAC of an ipvlan network (zero for another network: never a frame's).
    fn parent_mac_of(&self, net: NetId) -> MacAddr {
        self.network(net)
            .and_then(|n| n.ipvlan.as_ref())
            .map_or(MacAddr::ZERO, |i| i.params.parent_mac)
    }

    fn drop_for(&mut self, port: PortId, reason: DropReason, why: &str, actions: &mut Actions) {
        actions.note(|| Step::new("ipvlan", "drop", format!("{}: {why}", reason.name())));
        self.count(port, reason, actions);
    }

    /// An ipvlan network's frame, after learning: from its segment or from a container
    /// (`vnet`: its offload header, for a frame that waits for its next hop).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn process_ipvlan(
        &mut self,
        now: u64,
        in_port: PortId,
        net_id: NetId,
        from_segment: bool,
        frame: &mut [u8],
        vnet: Option<&VnetHdr>,
        actions: &mut Actions,
    ) {
        if from_segment {
            self.ipvlan_from_segment(now, in_port, net_id, frame, actions)
        } else {
            self.ipvlan_from_container(now, in_port, net_id, frame, vnet, actions)
        }
    }

    fn ipvlan_from_segment(
        &mut self,
        now: u64,
        seg: PortId,
        net_id: NetId,
        frame: &mut [u8],
        actions: &mut Actions,
    ) {
        let Some(mode) = self
            .network(net_id)
            .and_then(|n| n.ipvlan.as_ref())
            .map(|i| i.params.mode)
        else {
            return self.count(seg, DropReason::UnknownPort, actions);
        };
        if is_type(frame, EtherType::ARP) {
            let Some(arp) = arp_of(frame) else {
                return self.drop_for(seg, DropReason::BadArp, "a malformed ARP packet", actions);
            };
            // l3: the segment's stations are next hops (those asked for, or in use).
            if !arp.spa.is_unspecified() && !arp.sha.is_multicast() {
                for n in self.networks.iter_mut().flatten() {
                    if n.parent != Some(seg) {
                        continue;
                    }
                    let Some(iv) = n.ipvlan.as_mut().filter(|i| i.params.mode == Mode::L3) else {
                        continue;
                    };
                    if iv.neighbors.wanted(arp.spa) {
                        iv.neighbors.confirm(arp.spa, arp.sha, now);
                        iv.release(seg, arp.spa, arp.sha, &mut actions.emit);
                    }
                }
            }
            let Some((net, port, mac)) = self.ipvlan_host(seg, arp.tpa) else {
                return self.drop_for(
                    seg,
                    DropReason::NoDestination,
                    "ARP for no container's address",
                    actions,
                );
            };
            let parent_mac = self.parent_mac_of(net);
            if arp.request {
                if arp.spa != arp.tpa {
                    write_arp_reply(&mut actions.reply, parent_mac, arp.tpa, arp.sha, arp.spa);
                }
                actions.note(|| {
                    Step::new(
                        "ipvlan",
                        "answer",
                        format!("{} is at the parent's {parent_mac}", arp.tpa),
                    )
                });
                return;
            }
            if mode == Mode::L3 {
                actions.note(|| Step::new("ipvlan", "consumed", "a next hop's ARP reply"));
                return;
            }
            frame[0..6].copy_from_slice(&mac.0);
            frame[ARP_THA].copy_from_slice(&mac.0);
            actions.note(|| Step::new("ipvlan", "deliver", format!("to {mac}")).port(port));
            actions.out.push(port);
            return;
        }
        let to_parent = frame[0..6] == self.parent_mac_of(net_id).0;
        // Unicast to the parent's MAC (not a group, nor another station's in promiscuous mode).
        if is_type(frame, EtherType::IPV4) && to_parent {
            if let Some((_, dst)) = ipv4_addrs(frame) {
                if let Some((net, port, mac)) = self.ipvlan_host(seg, dst) {
                    let parent_mac = self.parent_mac_of(net);
                    if mode == Mode::L3 {
                        if !forward_ttl(frame) {
                            return self.drop_for(
                                seg,
                                DropReason::TtlExceeded,
                                "routed with its TTL run out",
                                actions,
                            );
                        }
                        frame[6..12].copy_from_slice(&parent_mac.0);
                    }
                    frame[0..6].copy_from_slice(&mac.0);
                    actions.note(|| {
                        Step::new("ipvlan", "deliver", format!("{dst} is {mac}")).port(port)
                    });
                    actions.out.push(port);
                    return;
                }
            }
        }
        // Broadcast and multicast: l2 containers hear the segment's.
        if mode == Mode::L2 && frame[0] & 1 == 1 {
            let Some(net) = self.network(net_id) else {
                return;
            };
            actions.flooded = true;
            actions
                .out
                .extend(net.members.iter().copied().filter(|p| *p != seg));
            actions.note(|| Step::new("ipvlan", "flood", "the segment's, to the containers"));
            if actions.out.is_empty() {
                self.count(seg, DropReason::NoDestination, actions);
            }
            return;
        }
        self.drop_for(
            seg,
            DropReason::NoDestination,
            "for no container's address",
            actions,
        )
    }

    fn ipvlan_from_container(
        &mut self,
        now: u64,
        in_port: PortId,
        net_id: NetId,
        frame: &mut [u8],
        vnet: Option<&VnetHdr>,
        actions: &mut Actions,
    ) {
        let Some((edge, seg)) = self
            .network(net_id)
            .and_then(|n| Some((n.ipvlan.as_ref()?.edge(), n.parent)))
        else {
            return self.count(in_port, DropReason::UnknownPort, actions);
        };
        match edge.mode {
            Mode::L2 => self.ipvlan_l2_out(now, in_port, net_id, seg, edge, frame, actions),
            Mode::L3 => self.ipvlan_l3_out(now, in_port, net_id, seg, edge, frame, vnet, actions),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ipvlan_l2_out(
        &mut self,
        now: u64,
        in_port: PortId,
        net_id: NetId,
        seg: Option<PortId>,
        params: Edge,
        frame: &mut [u8],
        actions: &mut Actions,
    ) {
        let pm = params.parent_mac;
        let src = MacAddr::from_slice(&frame[6..12]);
        let dst = MacAddr::from_slice(&frame[0..6]);
        // Whom a frame to the parent's MAC is for: a container, by address.
        let mut target = None;
        if is_type(frame, EtherType::ARP) {
            let Some(arp) = arp_of(frame) else {
                return self.drop_for(
                    in_port,
                    DropReason::BadArp,
                    "a malformed ARP packet",
                    actions,
                );
            };
            if arp.sha == src {
                frame[ARP_SHA].copy_from_slice(&pm.0);
            }
            target = Some((arp.tpa, !arp.request));
        } else if is_type(frame, EtherType::IPV4) {
            target = ipv4_addrs(frame).map(|(_, d)| (d, false));
        }
        frame[6..12].copy_from_slice(&pm.0);
        let Some(net) = self.network(net_id) else {
            return;
        };
        if dst.is_multicast() {
            actions.flooded = true;
            actions
                .out
                .extend(net.members.iter().copied().filter(|p| *p != in_port));
            actions.note(|| {
                Step::new(
                    "ipvlan",
                    "flood",
                    format!("to the containers and the segment, as the parent's {pm}"),
                )
            });
            if actions.out.is_empty() {
                self.count(in_port, DropReason::NoDestination, actions);
            }
            return;
        }
        if dst == pm {
            let host = target.and_then(|(ip, reply)| {
                let iv = net.ipvlan.as_ref()?;
                iv.host(ip).map(|(p, m)| (p, m, reply))
            });
            match host {
                Some((port, _, _)) if port == in_port => {
                    self.drop_for(in_port, DropReason::Hairpin, "to its own address", actions)
                }
                Some((port, mac, arp_reply)) => {
                    frame[0..6].copy_from_slice(&mac.0);
                    if arp_reply {
                        frame[ARP_THA].copy_from_slice(&mac.0);
                    }
                    actions.note(|| Step::new("ipvlan", "deliver", format!("to {mac}")).port(port));
                    actions.out.push(port);
                }
                None => self.drop_for(
                    in_port,
                    DropReason::NoRoute,
                    "to the parent's MAC for no container (the host is reached by --host-access)",
                    actions,
                ),
            }
            return;
        }
        // A container's own MAC (known to the sender some other way), or the segment's.
        let out = net
            .fdb
            .lookup(&dst, now)
            .filter(|p| Some(*p) != seg)
            .or(seg);
        match out {
            Some(p) if p == in_port => self.drop_for(
                in_port,
                DropReason::Hairpin,
                "back where it came from",
                actions,
            ),
            Some(p) => {
                actions.note(|| Step::new("ipvlan", "out", format!("to {dst}")).port(p));
                actions.out.push(p);
            }
            None => self.drop_for(
                in_port,
                DropReason::NoRoute,
                "the parent is not served",
                actions,
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn ipvlan_l3_out(
        &mut self,
        now: u64,
        in_port: PortId,
        net_id: NetId,
        seg: Option<PortId>,
        params: Edge,
        frame: &mut [u8],
        vnet: Option<&VnetHdr>,
        actions: &mut Actions,
    ) {
        let pm = params.parent_mac;
        if is_type(frame, EtherType::ARP) {
            let Some(arp) = arp_of(frame) else {
                return self.drop_for(
                    in_port,
                    DropReason::BadArp,
                    "a malformed ARP packet",
                    actions,
                );
            };
            // Every address is behind the switch, but the asker's own (duplicate address
            // detection and announcements get no answer).
            if arp.request && arp.spa != arp.tpa && !arp.spa.is_unspecified() {
                write_arp_reply(&mut actions.reply, pm, arp.tpa, arp.sha, arp.spa);
                actions.note(|| {
                    Step::new(
                        "ipvlan",
                        "answer",
                        format!("l3: {} is behind the switch, at {pm}", arp.tpa),
                    )
                });
            } else {
                actions.note(|| Step::new("ipvlan", "consumed", "l3: ARP stays here"));
            }
            return;
        }
        let dst_mac = MacAddr::from_slice(&frame[0..6]);
        let addrs = is_type(frame, EtherType::IPV4)
            .then(|| ipv4_addrs(frame))
            .flatten();
        let Some((src, dst)) = addrs else {
            let reason = if dst_mac.is_multicast() {
                DropReason::NoBroadcast
            } else {
                DropReason::NoRoute
            };
            return self.drop_for(in_port, reason, "l3 routes unicast IPv4 only", actions);
        };
        if dst_mac.is_multicast()
            || dst.is_multicast()
            || dst.is_broadcast()
            || (params.subnet.prefix_len() < 31 && dst == params.subnet.broadcast())
        {
            return self.drop_for(
                in_port,
                DropReason::NoBroadcast,
                "l3 puts no broadcast or multicast on the segment",
                actions,
            );
        }
        if !forward_ttl(frame) {
            // As a router: ICMP time exceeded back to the container, from its gateway address.
            time_exceeded(params.router, pm, frame, &mut actions.reply);
            return self.drop_for(
                in_port,
                DropReason::TtlExceeded,
                "routed with its TTL run out (ICMP time exceeded sent back)",
                actions,
            );
        }
        // Another container of the routing domain (this network, or another l3 network on the
        // parent), or the segment.
        let local = match seg {
            Some(s) => self.ipvlan_host(s, dst),
            None => self
                .network(net_id)
                .and_then(|n| n.ipvlan.as_ref())
                .and_then(|i| i.host(dst))
                .map(|(p, m)| (net_id, p, m)),
        };
        if let Some((_, port, mac)) = local {
            if port == in_port {
                return self.drop_for(in_port, DropReason::Hairpin, "to its own address", actions);
            }
            set_macs(frame, mac, pm);
            actions.note(|| Step::new("ipvlan", "route", format!("{dst} is {mac}")).port(port));
            actions.out.push(port);
            return;
        }
        let Some(seg) = seg else {
            return self.drop_for(
                in_port,
                DropReason::NoRoute,
                "the parent is not served",
                actions,
            );
        };
        let Some(iv) = self.network_mut(net_id).and_then(|n| n.ipvlan.as_mut()) else {
            return;
        };
        let Some(hop) = iv.next_hop(dst) else {
            return self.drop_for(
                in_port,
                DropReason::NoRoute,
                "the host has no route to it via the parent",
                actions,
            );
        };
        let (mac, ask) = iv.neighbors.lookup(hop, now);
        if ask {
            arp_request(seg, pm, src, hop, &mut actions.emit);
        }
        match mac {
            Some(mac) => {
                set_macs(frame, mac, pm);
                actions.note(|| {
                    Step::new("ipvlan", "route", format!("{dst} via {hop} ({mac})")).port(seg)
                });
                actions.out.push(seg);
            }
            None if iv.pending.len() < MAX_PENDING => {
                set_macs(frame, MacAddr::ZERO, pm);
                // It leaves later as a plain frame: offloads finished now (checksums, and a
                // TSO super-frame cut into segments, each waiting).
                match vnet.filter(|v| v.needs_work()) {
                    None => iv.pending.push_back((hop, now, frame.to_vec())),
                    Some(v) => {
                        let mut buf = vec![0u8; 65_536 + 128];
                        let mut segs = Vec::new();
                        if offload::finish_frame(v, frame, &mut buf, |f| segs.push(f.to_vec()))
                            .is_err()
                        {
                            return self.drop_for(
                                in_port,
                                DropReason::NeedsOffload,
                                "an offload that could not be finished",
                                actions,
                            );
                        }
                        let room = MAX_PENDING - iv.pending.len();
                        for f in segs.into_iter().take(room) {
                            iv.pending.push_back((hop, now, f));
                        }
                    }
                }
                actions.note(|| {
                    Step::new(
                        "ipvlan",
                        "wait",
                        format!("for {hop}'s MAC (asked on the segment)"),
                    )
                });
            }
            None => self.drop_for(
                in_port,
                DropReason::NoNeighbor,
                "the next hop's MAC is unknown and its queue is full",
                actions,
            ),
        }
    }
}

impl Ipvlan {
    /// Sends what waited for `hop`, now that its MAC is known.
    fn release(&mut self, seg: PortId, hop: Ipv4Addr, mac: MacAddr, emit: &mut super::Emit) {
        if !self.pending.iter().any(|(h, _, _)| *h == hop) {
            return;
        }
        let mut keep = VecDeque::new();
        while let Some((h, t, mut f)) = self.pending.pop_front() {
            if h == hop {
                f[0..6].copy_from_slice(&mac.0);
                emit.push((seg, f));
            } else {
                keep.push_back((h, t, f));
            }
        }
        self.pending = keep;
    }
}

/// ICMP time exceeded for the IPv4 packet in `frame` (quoting its header and 8 bytes), from
/// `router` and `mac` back to the frame's sender, into `reply`.
fn time_exceeded(router: Ipv4Addr, mac: MacAddr, frame: &[u8], reply: &mut Vec<u8>) {
    use etherparse::{icmpv4, Icmpv4Type, PacketBuilder};
    let Ok(ip) = Ipv4::new_checked(&frame[14..]) else {
        return;
    };
    let quoted = &frame[14..(14 + ip.header_len() + 8).min(frame.len())];
    let to = MacAddr::from_slice(&frame[6..12]);
    let t = Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit);
    let b = PacketBuilder::ethernet2(mac.0, to.0)
        .ipv4(router.octets(), ip.src().octets(), 64)
        .icmpv4(t);
    reply.clear();
    if b.write(reply, quoted).is_err() {
        reply.clear();
    }
}

/// "Who has `target`? Tell `ip`", broadcast on the segment from the parent's MAC.
fn arp_request(seg: PortId, mac: MacAddr, ip: Ipv4Addr, target: Ipv4Addr, emit: &mut super::Emit) {
    let arp = etherparse::ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac.0,
        sender_ipv4: ip.octets(),
        target_mac: [0; 6],
        target_ipv4: target.octets(),
    };
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&MacAddr::BROADCAST.0);
    f.extend_from_slice(&mac.0);
    f.extend_from_slice(&EtherType::ARP.to_be_bytes());
    f.extend_from_slice(&arp.to_bytes());
    emit.push((seg, f));
}

#[cfg(test)]
#[path = "ipvlan_tests.rs"]
mod tests;
