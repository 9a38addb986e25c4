//! Egress: the gateway routes packets for the outside world to the uplink, masquerading them
//! behind the uplink's address, and translates the replies back (`conntrack` keeps the flows).
//! Pure like the rest of the pipeline: frames are rewritten in place (addresses, ports, TTL,
//! MSS, incremental checksums), next-hop MACs come from a neighbour cache this module fills
//! from ARP, and whatever it has to say itself (ARP requests, ICMP errors, frames that waited
//! for a next hop) it writes into buffers the shell sends.

pub mod conntrack;
pub mod dnat;
mod frags;
mod neighbors;

use std::collections::VecDeque;
use std::net::Ipv4Addr;

use etherparse::{
    icmpv4, ArpEthIpv4Packet, ArpOperation, ArpPacketSlice, Icmpv4Type, PacketBuilder,
};

use super::{DropReason, NetId, PortId};
use crate::wire::checksum::checksum;
use crate::wire::ipv4::{
    self, l4, word, Ipv4, L4Sum, ICMP_DEST_UNREACHABLE, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST,
    ICMP_PARAMETER_PROBLEM, ICMP_TIME_EXCEEDED, PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_RST, TCP_SYN,
};
use crate::wire::offload::{self, VnetHdr};
use crate::wire::{EtherType, Frame, MacAddr};
use conntrack::{Conntrack, Dir, OrigKey, PortPolicy, Refused, ReplyKey};
use frags::Frags;
pub use neighbors::Neighbors;

const ETH: usize = crate::wire::ethernet::HEADER_LEN;
/// Frames that may wait for a next hop's MAC at once (Linux keeps a few per neighbour too).
const MAX_PENDING: usize = 64;
/// A frame that waited this long for its next hop is dropped.
const PENDING_MS: u64 = 3000;

/// How the uplink is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkMode {
    /// The host keeps the interface and its address; the switch masquerades behind that address
    /// using only its NAT port range.
    Shared,
    /// The interface and its address belong to the switch.
    Dedicated,
}

/// What the pipeline needs to know of the uplink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UplinkConfig {
    pub mode: UplinkMode,
    /// The address flows are masqueraded behind, and its prefix on the uplink's link.
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mac: MacAddr,
    /// The next hop for destinations off the uplink's link.
    pub gateway: Option<Ipv4Addr>,
    pub mtu: u16,
    /// NAT ports and ICMP identifiers come from this range.
    pub nat_ports: (u16, u16),
    /// Bound on tracked flows.
    pub conntrack_max: usize,
    /// Bound on one initiator's tracked flows (0: none).
    pub conntrack_per_source: usize,
}

impl UplinkConfig {
    fn on_link(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix_len))
            .unwrap_or(0);
        u32::from(ip) & mask == u32::from(self.ip) & mask
    }

    fn policy(&self) -> PortPolicy {
        PortPolicy {
            lo: self.nat_ports.0,
            hi: self.nat_ports.1,
            keep_any: self.mode == UplinkMode::Dedicated,
        }
    }
}

/// Counters of routing and NAT, shown by `uplink show` and `conntrack stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NatCounters {
    /// Packets translated on their way out / back in.
    pub out_packets: u64,
    pub in_packets: u64,
    /// ICMP errors from the outside translated back to a container (inner header restored).
    pub icmp_errors_in: u64,
    /// ICMP errors the gateway sent (time exceeded, fragmentation needed).
    pub icmp_errors_sent: u64,
    /// TCP SYNs whose MSS was lowered to fit the uplink's MTU.
    pub mss_clamped: u64,
    /// ARP requests sent for next hops, and replies to ARP for the uplink's address.
    pub arp_requests: u64,
    pub arp_replies: u64,
    /// Frames that waited for a next hop's MAC, and those dropped waiting.
    pub queued: u64,
    pub queue_dropped: u64,
    /// Echo requests to the uplink's own address answered (dedicated mode).
    pub echo_replies: u64,
    /// Packets of hairpin flows (a container to a published port through the uplink's
    /// address) translated, either way.
    #[serde(default)]
    pub hairpin_packets: u64,
}

/// What became of a frame the gateway routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Rewritten in place; send it out of this port.
    Out(PortId),
    /// Rewritten for a container of `net` whose MAC is `mac`; the pipeline picks the port and
    /// sets the gateway's MAC as the source.
    Deliver {
        net: NetId,
        mac: MacAddr,
    },
    /// Answered (the answer is in `reply`, to go back out of the ingress port).
    Replied,
    /// Handled with nothing to forward now (queued for a next hop, an ARP reply learnt).
    Consumed,
    Drop(DropReason),
}

/// The uplink as the pipeline sees it: its port, addresses, flows and neighbours.
#[derive(Debug, Clone)]
pub struct Uplink {
    pub port: PortId,
    pub cfg: UplinkConfig,
    pub ct: Conntrack,
    neighbors: Neighbors,
    frags: Frags,
    /// Frames waiting for their next hop's MAC: (next hop, since, frame).
    pending: VecDeque<(Ipv4Addr, u64, Vec<u8>)>,
    /// Shared mode: next hops to look up in the host's neighbour table (the shell drains it and
    /// answers with `set_neighbor`); at most one per address a second.
    pub wanted: Vec<Ipv4Addr>,
    pub counters: NatCounters,
    /// Published ports on the uplink's address.
    pub published: dnat::Published,
}

/// The gateway a routed frame came through.
#[derive(Debug, Clone, Copy)]
pub struct Via {
    pub net: NetId,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
}

/// Frames the NAT stage sends on its own (ARP requests, frames released by an ARP reply).
pub type Emit = Vec<(PortId, Vec<u8>)>;

impl Uplink {
    pub fn new(port: PortId, cfg: UplinkConfig) -> Uplink {
        Uplink {
            port,
            ct: Conntrack::with_source_limit(cfg.conntrack_max, cfg.conntrack_per_source),
            cfg,
            neighbors: Neighbors::new(),
            frags: Frags::new(),
            pending: VecDeque::new(),
            wanted: Vec::new(),
            counters: NatCounters::default(),
            published: dnat::Published::default(),
        }
    }

    /// Neighbours of the uplink: (address, MAC, milliseconds since confirmed).
    pub fn neighbors(&self, now: u64) -> Vec<(Ipv4Addr, MacAddr, u64)> {
        self.neighbors.entries(now)
    }

    /// Tells the uplink a neighbour's MAC (from the host's table in shared mode); frames that
    /// waited for it are released into `emit`.
    pub fn set_neighbor(&mut self, now: u64, ip: Ipv4Addr, mac: MacAddr, emit: &mut Emit) {
        self.neighbors.confirm(ip, mac, now);
        self.release(ip, mac, emit);
    }

    /// Forgets a neighbour the host's table no longer has (or has as failed).
    pub fn forget_neighbor(&mut self, ip: Ipv4Addr) {
        self.neighbors.forget(ip);
    }

    /// Ages neighbours, fragments, waiting frames and flows (a bounded sweep).
    pub fn expire(&mut self, now: u64) {
        self.ct.sweep(now);
        self.frags.expire(now);
        self.neighbors.expire(now);
        while self
            .pending
            .front()
            .is_some_and(|(_, t, _)| now.saturating_sub(*t) > PENDING_MS)
        {
            self.pending.pop_front();
            self.counters.queue_dropped += 1;
        }
    }

    /// The next hop's MAC for `dst`, or `None` when it must be resolved first (an ARP request
    /// is then written into `emit` in dedicated mode; shared mode learns the host's entries).
    fn next_hop(
        &mut self,
        now: u64,
        dst: Ipv4Addr,
        emit: &mut Emit,
    ) -> Result<(Ipv4Addr, Option<MacAddr>), DropReason> {
        let hop = if self.cfg.on_link(dst) {
            dst
        } else {
            self.cfg.gateway.ok_or(DropReason::NoRoute)?
        };
        let (mac, ask) = self.neighbors.lookup(hop, now);
        if ask {
            match self.cfg.mode {
                UplinkMode::Dedicated => self.arp_request(hop, emit),
                UplinkMode::Shared if self.wanted.len() < MAX_PENDING => self.wanted.push(hop),
                UplinkMode::Shared => {}
            }
        }
        Ok((hop, mac))
    }

    /// A dedicated uplink announces its address when it takes it (an RFC 5227 ARP
    /// announcement: a request for its own address, broadcast), so neighbours that cached
    /// another MAC for it, or gave up resolving it while nobody answered, use the switch at
    /// once instead of failing for a neighbour timeout. Shared uplinks leave that to the host.
    pub fn announce(&mut self, emit: &mut Emit) {
        if self.cfg.mode == UplinkMode::Dedicated {
            let ip = self.cfg.ip;
            self.arp_request(ip, emit);
        }
    }

    fn arp_request(&mut self, ip: Ipv4Addr, emit: &mut Emit) {
        let arp = ArpEthIpv4Packet {
            operation: ArpOperation::REQUEST,
            sender_mac: self.cfg.mac.0,
            sender_ipv4: self.cfg.ip.octets(),
            target_mac: [0; 6],
            target_ipv4: ip.octets(),
        };
        let mut f = Vec::with_capacity(42);
        f.extend_from_slice(&MacAddr::BROADCAST.0);
        f.extend_from_slice(&self.cfg.mac.0);
        f.extend_from_slice(&EtherType::ARP.to_be_bytes());
        f.extend_from_slice(&arp.to_bytes());
        emit.push((self.port, f));
        self.counters.arp_requests += 1;
    }

    fn release(&mut self, ip: Ipv4Addr, mac: MacAddr, emit: &mut Emit) {
        let mut keep = VecDeque::new();
        while let Some((hop, t, mut f)) = self.pending.pop_front() {
            if hop == ip {
                f[0..6].copy_from_slice(&mac.0);
                emit.push((self.port, f));
            } else {
                keep.push_back((hop, t, f));
            }
        }
        self.pending = keep;
    }

    /// Routes a frame a container sent to its gateway for an address outside the switch:
    /// checks TTL and MTU, finds or creates its flow, masquerades it behind the uplink's
    /// address and addresses it to the next hop. `vnet` is the frame's virtio-net header (TAP
    /// ports): its checksum offsets stay valid, and a pending checksum is updated as such.
    #[allow(clippy::too_many_arguments)]
    pub fn outbound(
        &mut self,
        now: u64,
        via: Via,
        frame: &mut [u8],
        vnet: Option<&VnetHdr>,
        reply: &mut Vec<u8>,
        emit: &mut Emit,
    ) -> Routed {
        let gso = vnet.is_some_and(|v| v.gso_type & !offload::GSO_ECN != offload::GSO_NONE);
        let sum = if vnet.is_some_and(|v| v.flags & offload::F_NEEDS_CSUM != 0) {
            L4Sum::Partial
        } else {
            L4Sum::Full
        };
        let to_us = frame.get(ETH + 16..ETH + 20) == Some(&self.cfg.ip.octets()[..]);
        if to_us {
            // A container to a published port through the uplink's address (hairpin).
            if let Some(r) = self.hairpin_out(now, via, frame, vnet) {
                return r;
            }
        }
        let src_mac = Frame::new_unchecked(&*frame).src();
        let ip = if gso {
            Ipv4::new_gso(&mut frame[ETH..])
        } else {
            Ipv4::new_checked(&mut frame[ETH..])
        };
        let Ok(mut ip) = ip else {
            return Routed::Drop(DropReason::BadIp);
        };
        if ip.ttl() <= 1 {
            let t = Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit);
            return self.icmp_error(via, src_mac, &frame[ETH..], t, reply);
        }
        if !gso && ip.total_len() > usize::from(self.cfg.mtu) {
            if !ip.dont_frag() {
                // Software fragmentation is not done yet: say so in the counters.
                return Routed::Drop(DropReason::TooBig);
            }
            let t = Icmpv4Type::DestinationUnreachable(
                icmpv4::DestUnreachableHeader::FragmentationNeeded {
                    next_hop_mtu: self.cfg.mtu,
                },
            );
            return self.icmp_error(via, src_mac, &frame[ETH..], t, reply);
        }
        let dst = ip.dst();
        let proto = ip.protocol();
        let len = ip.total_len();
        if ip.frag_offset() != 0 {
            // A later fragment: no ports in it; it follows the first.
            let Some(slot) = self
                .frags
                .get(now, Dir::Orig, ip.src(), dst, ip.ident(), proto)
            else {
                return Routed::Drop(DropReason::BadFragment);
            };
            ip.set_addr(false, self.cfg.ip, sum);
            ip.decrement_ttl();
            self.ct.update(slot, now, Dir::Orig, 0, len);
            return self.send_to_next_hop(now, dst, frame, vnet, emit);
        }
        let payload = ip.payload();
        let (sport_at, key, flags) = match proto {
            PROTO_TCP | PROTO_UDP => {
                let Some(flags) = tcp_udp_flags(proto, payload) else {
                    return Routed::Drop(DropReason::BadIp);
                };
                (
                    l4::SRC_PORT.start,
                    (
                        word(payload, l4::SRC_PORT).unwrap_or(0),
                        word(payload, l4::DST_PORT).unwrap_or(0),
                    ),
                    flags,
                )
            }
            PROTO_ICMP if payload.first() == Some(&ICMP_ECHO_REQUEST) && payload.len() >= 8 => (
                l4::ICMP_ECHO_ID.start,
                (word(payload, l4::ICMP_ECHO_ID).unwrap_or(0), 0),
                0,
            ),
            _ => return Routed::Drop(DropReason::NatUnsupported),
        };
        let okey = OrigKey {
            net: via.net,
            proto,
            src: ip.src(),
            sport: key.0,
            dst,
            dport: key.1,
        };
        let create = !(proto == PROTO_TCP && flags & TCP_RST != 0);
        let slot = match self
            .ct
            .outbound(now, okey, src_mac, self.cfg.policy(), create)
        {
            Ok(Some(s)) => s,
            Ok(None) => return Routed::Drop(DropReason::NoConntrack),
            Err(Refused::TableFull) => return Routed::Drop(DropReason::ConntrackFull),
            Err(Refused::SourceLimit) => return Routed::Drop(DropReason::ConntrackSourceLimit),
            Err(Refused::PortsExhausted) => return Routed::Drop(DropReason::NatExhausted),
        };
        let nat_port = self.ct.get(slot).map_or(key.0, |e| e.nat_port);
        if ip.more_frags() {
            self.frags
                .insert(now, Dir::Orig, okey.src, dst, ip.ident(), proto, slot);
        }
        ip.set_addr(false, self.cfg.ip, sum);
        if nat_port != key.0 && ip.set_l4_word(sport_at, nat_port, sum).is_err() {
            return Routed::Drop(DropReason::BadIp);
        }
        if proto == PROTO_TCP && flags & TCP_SYN != 0 && self.clamp_mss(&mut ip, sum) {
            self.counters.mss_clamped += 1;
        }
        ip.decrement_ttl();
        self.ct.update(slot, now, Dir::Orig, flags, len);
        self.send_to_next_hop(now, dst, frame, vnet, emit)
    }

    /// Addresses a translated frame to its next hop, or queues it until the hop is resolved.
    fn send_to_next_hop(
        &mut self,
        now: u64,
        dst: Ipv4Addr,
        frame: &mut [u8],
        vnet: Option<&VnetHdr>,
        emit: &mut Emit,
    ) -> Routed {
        let (hop, mac) = match self.next_hop(now, dst, emit) {
            Ok(h) => h,
            Err(r) => return Routed::Drop(r),
        };
        frame[6..12].copy_from_slice(&self.cfg.mac.0);
        if let Some(mac) = mac {
            frame[0..6].copy_from_slice(&mac.0);
            self.counters.out_packets += 1;
            return Routed::Out(self.port);
        }
        if self.pending.len() >= MAX_PENDING {
            self.counters.queue_dropped += 1;
            return Routed::Drop(DropReason::NoNeighbor);
        }
        // The frame waits as a plain frame (its offload finished now; a super-frame is not
        // kept: the sender retransmits it).
        let plain = match vnet.filter(|v| v.needs_work()) {
            None => frame.to_vec(),
            Some(v) => {
                let mut buf = vec![0u8; frame.len()];
                let mut out = None;
                match offload::finish_frame(v, frame, &mut buf, |seg| out = Some(seg.to_vec())) {
                    Ok(1) => out.unwrap_or_default(),
                    _ => return Routed::Drop(DropReason::NoNeighbor),
                }
            }
        };
        self.pending.push_back((hop, now, plain));
        self.counters.queued += 1;
        self.counters.out_packets += 1;
        Routed::Consumed
    }

    /// Lowers a SYN's MSS option to what fits the uplink's MTU. True when it changed.
    fn clamp_mss(&self, ip: &mut Ipv4<&mut [u8]>, sum: L4Sum) -> bool {
        let max = self.cfg.mtu.saturating_sub(40);
        let p = ip.payload();
        let doff = usize::from(p.get(l4::TCP_DATA_OFF).copied().unwrap_or(0) >> 4) * 4;
        let opts = p.get(20..doff.min(p.len())).unwrap_or(&[]);
        let mut i = 0;
        while i < opts.len() {
            match opts[i] {
                0 => break,
                1 => i += 1,
                kind => {
                    let Some(&olen) = opts.get(i + 1) else { break };
                    let olen = usize::from(olen);
                    if olen < 2 || i + olen > opts.len() {
                        break;
                    }
                    if kind == 2 && olen == 4 {
                        let mss = u16::from_be_bytes([opts[i + 2], opts[i + 3]]);
                        if mss > max {
                            return ip.set_l4_word(20 + i + 2, max, sum).is_ok();
                        }
                        return false;
                    }
                    i += olen;
                }
            }
        }
        false
    }

    /// Writes an ICMP error from the gateway about `packet` (an IPv4 packet a container sent)
    /// into `reply`: its header and first 8 bytes of payload, as RFC 792 asks.
    fn icmp_error(
        &mut self,
        via: Via,
        to: MacAddr,
        packet: &[u8],
        t: Icmpv4Type,
        reply: &mut Vec<u8>,
    ) -> Routed {
        let Ok(ip) = Ipv4::new_gso(packet) else {
            return Routed::Drop(DropReason::BadIp);
        };
        let quoted = &packet[..(ip.header_len() + 8).min(packet.len())];
        let builder = PacketBuilder::ethernet2(via.mac.0, to.0)
            .ipv4(via.ip.octets(), ip.src().octets(), 64)
            .icmpv4(t);
        reply.clear();
        if builder.write(reply, quoted).is_err() {
            reply.clear();
            return Routed::Drop(DropReason::BadIp);
        }
        self.counters.icmp_errors_sent += 1;
        Routed::Replied
    }

    /// Takes a frame that arrived on the uplink: ARP for the uplink's address or from its
    /// neighbours, echo requests to it, and replies of tracked flows, translated back for their
    /// container (`Routed::Deliver`). Anything else is not the switch's.
    pub fn inbound(
        &mut self,
        now: u64,
        frame: &mut [u8],
        reply: &mut Vec<u8>,
        emit: &mut Emit,
    ) -> Routed {
        let eth = Frame::new_unchecked(&*frame);
        let (dst_mac, src_mac) = (eth.dst(), eth.src());
        match eth.ethertype() {
            EtherType::ARP => return self.inbound_arp(now, &frame[ETH..], reply, emit),
            EtherType::IPV4 if dst_mac == self.cfg.mac => {}
            _ => return Routed::Drop(DropReason::NotOurs),
        }
        let Ok(mut ip) = Ipv4::new_checked(&mut frame[ETH..]) else {
            return Routed::Drop(DropReason::BadIp);
        };
        if ip.dst() != self.cfg.ip {
            return Routed::Drop(DropReason::NotOurs);
        }
        let remote = ip.src();
        let proto = ip.protocol();
        let len = ip.total_len();
        if ip.frag_offset() != 0 {
            let Some(slot) =
                self.frags
                    .get(now, Dir::Reply, remote, self.cfg.ip, ip.ident(), proto)
            else {
                return Routed::Drop(DropReason::BadFragment);
            };
            return self.deliver(now, slot, &mut ip, None, 0, len);
        }
        let payload = ip.payload();
        match proto {
            PROTO_TCP | PROTO_UDP => {
                let Some(flags) = tcp_udp_flags(proto, payload) else {
                    return Routed::Drop(DropReason::BadIp);
                };
                let rk = ReplyKey {
                    proto,
                    remote,
                    rport: word(payload, l4::SRC_PORT).unwrap_or(0),
                    nat_port: word(payload, l4::DST_PORT).unwrap_or(0),
                };
                let slot = match self.ct.inbound(now, &rk) {
                    Some(s) => s,
                    // A new flow to a published port?
                    None => match self.dnat_new(now, proto, remote, rk.rport, rk.nat_port, flags) {
                        Ok(s) => s,
                        Err(r) => return Routed::Drop(r),
                    },
                };
                if ip.more_frags() {
                    self.frags.insert(
                        now,
                        Dir::Reply,
                        remote,
                        self.cfg.ip,
                        ip.ident(),
                        proto,
                        slot,
                    );
                }
                self.deliver(now, slot, &mut ip, Some(l4::DST_PORT.start), flags, len)
            }
            PROTO_ICMP => match payload.first().copied() {
                Some(ICMP_ECHO_REPLY) if payload.len() >= 8 => {
                    let rk = ReplyKey {
                        proto,
                        remote,
                        rport: 0,
                        nat_port: word(payload, l4::ICMP_ECHO_ID).unwrap_or(0),
                    };
                    let Some(slot) = self.ct.inbound(now, &rk) else {
                        return Routed::Drop(DropReason::NoConntrack);
                    };
                    self.deliver(now, slot, &mut ip, Some(l4::ICMP_ECHO_ID.start), 0, len)
                }
                Some(ICMP_ECHO_REQUEST) if self.cfg.mode == UplinkMode::Dedicated => {
                    self.echo_reply(src_mac, &frame[ETH..], reply)
                }
                Some(ICMP_DEST_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM) => {
                    self.inbound_icmp_error(now, &mut ip)
                }
                _ => Routed::Drop(DropReason::NoConntrack),
            },
            _ => Routed::Drop(DropReason::NoConntrack),
        }
    }

    /// Rewrites a reply for the container of flow `slot`: destination address, the port (or
    /// ICMP identifier) at `port_at` of the transport header, TTL.
    fn deliver(
        &mut self,
        now: u64,
        slot: u32,
        ip: &mut Ipv4<&mut [u8]>,
        port_at: Option<usize>,
        flags: u8,
        len: usize,
    ) -> Routed {
        let Some(e) = self.ct.get(slot).copied() else {
            return Routed::Drop(DropReason::NoConntrack);
        };
        if ip.ttl() <= 1 {
            return Routed::Drop(DropReason::TtlExceeded);
        }
        ip.set_addr(true, e.orig.src, L4Sum::Full);
        if let Some(at) = port_at {
            if e.nat_port != e.orig.sport && ip.set_l4_word(at, e.orig.sport, L4Sum::Full).is_err()
            {
                return Routed::Drop(DropReason::BadIp);
            }
        }
        ip.decrement_ttl();
        self.ct.update(slot, now, Dir::Reply, flags, len);
        self.counters.in_packets += 1;
        Routed::Deliver {
            net: e.orig.net,
            mac: e.mac,
        }
    }

    /// An ICMP error about a packet the switch masqueraded: the quoted packet (whose source is
    /// the uplink's address and NAT port) is restored to the container's, then the outer
    /// destination, and the ICMP checksum computed again.
    fn inbound_icmp_error(&mut self, now: u64, ip: &mut Ipv4<&mut [u8]>) -> Routed {
        let icmp = ip.payload_mut();
        if icmp.len() < 8 + ipv4::MIN_HEADER_LEN + 8 {
            return Routed::Drop(DropReason::BadIp);
        }
        let (rk, port_at) = {
            let Ok(inner) = Ipv4::new_gso(&icmp[8..]) else {
                return Routed::Drop(DropReason::BadIp);
            };
            if inner.src() != self.cfg.ip {
                return Routed::Drop(DropReason::NoConntrack);
            }
            // The quote holds at least the first 8 bytes of the transport header.
            let q = &icmp[8 + inner.header_len()..];
            if q.len() < 8 {
                return Routed::Drop(DropReason::BadIp);
            }
            match inner.protocol() {
                p @ (PROTO_TCP | PROTO_UDP) => (
                    ReplyKey {
                        proto: p,
                        remote: inner.dst(),
                        rport: word(q, l4::DST_PORT).unwrap_or(0),
                        nat_port: word(q, l4::SRC_PORT).unwrap_or(0),
                    },
                    l4::SRC_PORT.start,
                ),
                PROTO_ICMP if q[0] == ICMP_ECHO_REQUEST => (
                    ReplyKey {
                        proto: PROTO_ICMP,
                        remote: inner.dst(),
                        rport: 0,
                        nat_port: word(q, l4::ICMP_ECHO_ID).unwrap_or(0),
                    },
                    l4::ICMP_ECHO_ID.start,
                ),
                _ => return Routed::Drop(DropReason::NoConntrack),
            }
        };
        let Some(slot) = self.ct.inbound(now, &rk) else {
            return Routed::Drop(DropReason::NoConntrack);
        };
        let Some(e) = self.ct.get(slot).copied() else {
            return Routed::Drop(DropReason::NoConntrack);
        };
        // The quoted packet: its source address (the header checksum and, where the quote
        // holds it, the transport checksum follow) and its source port or identifier.
        let Ok(mut inner) = Ipv4::new_gso(&mut icmp[8..]) else {
            return Routed::Drop(DropReason::BadIp);
        };
        inner.set_addr(false, e.orig.src, L4Sum::Full);
        if e.nat_port != e.orig.sport
            && inner
                .set_l4_word(port_at, e.orig.sport, L4Sum::Full)
                .is_err()
        {
            return Routed::Drop(DropReason::BadIp);
        }
        // The ICMP checksum covers the whole message, quote included: sum it again.
        icmp[l4::ICMP_CHECKSUM].copy_from_slice(&[0, 0]);
        let c = checksum(icmp, 0);
        icmp[l4::ICMP_CHECKSUM].copy_from_slice(&c.to_be_bytes());
        let len = ip.total_len();
        self.counters.icmp_errors_in += 1;
        self.deliver(now, slot, ip, None, 0, len)
    }

    fn echo_reply(&mut self, to: MacAddr, packet: &[u8], reply: &mut Vec<u8>) -> Routed {
        let Ok(ip) = Ipv4::new_checked(packet) else {
            return Routed::Drop(DropReason::BadIp);
        };
        let icmp = ip.payload();
        let (Some(id), Some(seq)) = (word(icmp, 4..6), word(icmp, 6..8)) else {
            return Routed::Drop(DropReason::BadIp);
        };
        let builder = PacketBuilder::ethernet2(self.cfg.mac.0, to.0)
            .ipv4(self.cfg.ip.octets(), ip.src().octets(), 64)
            .icmpv4_echo_reply(id, seq);
        reply.clear();
        if builder.write(reply, &icmp[8..]).is_err() {
            reply.clear();
            return Routed::Drop(DropReason::BadIp);
        }
        self.counters.echo_replies += 1;
        Routed::Replied
    }

    fn inbound_arp(
        &mut self,
        now: u64,
        payload: &[u8],
        reply: &mut Vec<u8>,
        emit: &mut Emit,
    ) -> Routed {
        let Ok(arp) = ArpPacketSlice::from_slice(payload)
            .map_err(|_| ())
            .and_then(|s| s.to_packet().try_eth_ipv4().map_err(|_| ()))
        else {
            return Routed::Drop(DropReason::BadArp);
        };
        let sender = Ipv4Addr::from(arp.sender_ipv4);
        let sender_mac = MacAddr(arp.sender_mac);
        let target = Ipv4Addr::from(arp.target_ipv4);
        // Learn (or refresh) the sender when it is a neighbour we use or asked for; a frame
        // waiting for it goes now.
        if sender_mac.is_valid_source() && self.cfg.on_link(sender) && sender != self.cfg.ip {
            let wanted = self.neighbors.wanted(sender) || target == self.cfg.ip;
            if wanted {
                self.neighbors.confirm(sender, sender_mac, now);
                self.release(sender, sender_mac, emit);
            }
        }
        if arp.operation == ArpOperation::REQUEST
            && target == self.cfg.ip
            && self.cfg.mode == UplinkMode::Dedicated
        {
            let answer = ArpEthIpv4Packet {
                operation: ArpOperation::REPLY,
                sender_mac: self.cfg.mac.0,
                sender_ipv4: self.cfg.ip.octets(),
                target_mac: arp.sender_mac,
                target_ipv4: arp.sender_ipv4,
            };
            reply.clear();
            reply.extend_from_slice(&arp.sender_mac);
            reply.extend_from_slice(&self.cfg.mac.0);
            reply.extend_from_slice(&EtherType::ARP.to_be_bytes());
            reply.extend_from_slice(&answer.to_bytes());
            self.counters.arp_replies += 1;
            return Routed::Replied;
        }
        Routed::Consumed
    }
}

/// The TCP flags of a TCP/UDP header at the start of `payload` (0 for UDP), or `None` when the
/// header is not all there — for TCP, also when its data offset is below the 20-byte header or
/// past the packet (Linux's conntrack calls such a segment invalid and leaves it untranslated).
fn tcp_udp_flags(proto: u8, payload: &[u8]) -> Option<u8> {
    let min = if proto == PROTO_TCP { 20 } else { 8 };
    if payload.len() < min {
        return None;
    }
    if proto != PROTO_TCP {
        return Some(0);
    }
    let doff = usize::from(payload[l4::TCP_DATA_OFF] >> 4) * 4;
    if doff < 20 || doff > payload.len() {
        return None;
    }
    Some(payload[l4::TCP_FLAGS])
}

#[cfg(test)]
mod tests;
