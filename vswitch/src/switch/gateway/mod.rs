//! The switch as each network's router: it owns the gateway address with a MAC of its own and
//! answers ARP, ICMP echo, DHCP and DNS itself. Pure like the rest of the pipeline: frames and
//! time in, a reply frame and events (lease changes for the control plane to persist) out.
//!
//! Protocol parsing and building use maintained codecs: etherparse (ARP, IPv4, UDP, ICMP),
//! dhcproto (DHCP) and hickory-proto (DNS).

pub mod dhcp;
pub mod dns;

use std::collections::HashMap;
use std::net::Ipv4Addr;

use etherparse::{
    ArpEthIpv4Packet, ArpOperation, ArpPacketSlice, Icmpv4Type, NetSlice, PacketBuilder,
    SlicedPacket, TransportSlice,
};
use ipnet::Ipv4Net;

use super::{DropReason, NetId, PortId};
use crate::wire::{EtherType, Frame, MacAddr};

pub use dhcp::{DhcpConfig, LeaseRecord};

/// A message a codec could not read, or that breaks its protocol's rules (counted as a drop).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Malformed;

/// DHCP's well-known ports.
pub const DHCP_SERVER_PORT: u16 = 67;
pub const DHCP_CLIENT_PORT: u16 = 68;
pub const DNS_PORT: u16 = 53;

/// How a network's gateway behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub subnet: Ipv4Net,
    /// Answer ARP requests for known container addresses on their behalf.
    pub arp_suppress: bool,
    pub dhcp: Option<DhcpConfig>,
    /// Serve container names over DNS (off on Docker's default `bridge`).
    pub dns_names: bool,
    /// Search domain handed out by DHCP; names also resolve as `name.domain`.
    pub domain: String,
    /// Queries for other names (UDP and TCP) are handed to the shell's forwarder, which answers
    /// them from its upstream resolvers (or SERVFAIL when it has none); false: SERVFAIL here.
    pub dns_forward: bool,
}

/// What the control plane tells the gateway about a port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub mac: MacAddr,
    pub ip: Option<Ipv4Addr>,
    /// DNS names: port name, container name, aliases (lowercase).
    pub names: Vec<String>,
}

/// Something the control plane must know about (and persist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Lease {
        network: NetId,
        lease: LeaseRecord,
        /// The DHCPACK that grants it and the port it goes out of: the dataplane hands it to
        /// the control plane, which sends it only once the lease is saved (RFC 2131 4.3.1: a
        /// server records a binding in persistent storage before it acknowledges it), so an
        /// acknowledged lease survives a crash. `None` as the gateway makes the event.
        ack: Option<(PortId, Vec<u8>)>,
    },
    Released {
        network: NetId,
        mac: MacAddr,
    },
    /// A VXLAN datagram for an overlay network that learns its peers (`--learn-peers`) came
    /// from a VTEP that is not one yet: the control plane adds it.
    PeerLearned {
        network: NetId,
        vtep: Ipv4Addr,
    },
    /// A UDP DNS query for a name the network does not own, for the upstream resolvers; the
    /// answer is sent back to `client` out of `port` as if from the gateway.
    DnsForward(Box<DnsForward>),
    /// A MAC learned on one port was heard on another (`vswitchctl events`).
    MacMoved {
        network: NetId,
        mac: MacAddr,
        from: PortId,
        to: PortId,
    },
    /// The dataplane took a port out of service (its interface or namespace vanished).
    PortDown {
        port: PortId,
        reason: String,
    },
    /// New flows were refused in the last second because the conntrack table is full.
    ConntrackFull {
        refused: u64,
    },
}

impl Event {
    /// Whether losing this event loses something a frame asked for (a lease, an answer):
    /// then the frame is counted `overloaded`. Notices (MAC moves…) are just shed.
    pub fn is_request(&self) -> bool {
        matches!(
            self,
            Event::Lease { .. }
                | Event::Released { .. }
                | Event::DnsForward(_)
                | Event::PeerLearned { .. }
        )
    }
}

/// Everything needed to send an upstream's answer back to the asking container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsForward {
    pub port: PortId,
    pub query: Vec<u8>,
    pub client_mac: MacAddr,
    pub client_ip: Ipv4Addr,
    pub client_port: u16,
    pub gateway_mac: MacAddr,
    pub gateway_ip: Ipv4Addr,
    /// Asked over TCP: answer with one segment carrying these numbers (see `dns::tcp`).
    pub tcp: Option<TcpReply>,
}

/// Sequence and acknowledgment numbers of a DNS-over-TCP answer sent later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpReply {
    pub seq: u32,
    pub ack: u32,
}

/// The gateway's verdict on a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not for the gateway: switch it at L2.
    Pass,
    /// Handled here (a reply may have been written).
    Consumed,
    /// Dropped and to be counted under this reason.
    Drop(DropReason),
    /// An IPv4 packet to the gateway's MAC for this address outside the network: to be routed.
    Route(Ipv4Addr),
    /// TCP or UDP to the gateway's own address for a port it does not serve: the return side
    /// of a hairpin flow, if the NAT stage knows it (otherwise `no_route`).
    Local,
}

/// How a neighbour entry was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NeighborKind {
    /// From the port's configuration.
    Static,
    /// From a DHCP lease.
    Dhcp,
    /// Gleaned from ARP traffic.
    Learned,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Neighbor {
    pub mac: MacAddr,
    pub port: PortId,
    pub kind: NeighborKind,
    pub last_seen: u64,
}

/// Counters of one gateway.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GatewayCounters {
    pub arp_replies: u64,
    pub arp_suppressed: u64,
    pub icmp_replies: u64,
    pub dhcp_requests: u64,
    pub dhcp_replies: u64,
    pub dns_queries: u64,
    pub dns_replies: u64,
}

/// Learned neighbours older than this are forgotten (static ones never are).
const NEIGHBOR_AGING_MS: u64 = 300_000;
/// Bound on learned neighbours per network.
const MAX_LEARNED_NEIGHBORS: usize = 4096;

/// One network's gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    cfg: GatewayConfig,
    neighbors: HashMap<Ipv4Addr, Neighbor>,
    endpoints: HashMap<PortId, Endpoint>,
    dhcp: Option<dhcp::Server>,
    dns: dns::Resolver,
    pub counters: GatewayCounters,
}

impl Gateway {
    pub fn new(cfg: GatewayConfig) -> Gateway {
        let dhcp = cfg
            .dhcp
            .clone()
            .map(|d| dhcp::Server::new(d, cfg.ip, cfg.mac, cfg.subnet, cfg.domain.clone()));
        Gateway {
            dns: dns::Resolver::new(cfg.domain.clone(), cfg.dns_names, cfg.dns_forward),
            cfg,
            neighbors: HashMap::new(),
            endpoints: HashMap::new(),
            dhcp,
            counters: GatewayCounters::default(),
        }
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.cfg
    }

    /// A port joined (or changed): its address becomes a static neighbour, a DHCP reservation
    /// and DNS records.
    pub fn add_endpoint(&mut self, port: PortId, ep: Endpoint) {
        self.remove_endpoint(port);
        if let Some(ip) = ep.ip {
            self.neighbors.insert(
                ip,
                Neighbor {
                    mac: ep.mac,
                    port,
                    kind: NeighborKind::Static,
                    last_seen: 0,
                },
            );
            if let Some(d) = &mut self.dhcp {
                d.reserve(ep.mac, ip, ep.names.first().cloned());
            }
        }
        if let Some(ip) = ep.ip {
            self.dns.add_records(&ep.names, ip);
        }
        self.endpoints.insert(port, ep);
    }

    pub fn remove_endpoint(&mut self, port: PortId) {
        if let Some(ep) = self.endpoints.remove(&port) {
            if let Some(d) = &mut self.dhcp {
                d.unreserve(ep.mac);
            }
            if let Some(ip) = ep.ip {
                self.dns.remove_records(&ep.names, ip);
            }
        }
        self.neighbors.retain(|_, n| n.port != port);
    }

    /// A static neighbour behind another port (`fdb add … --ip` on an overlay: a container on
    /// a remote VTEP), answered for by ARP suppression before any traffic.
    pub fn set_static_neighbor(
        &mut self,
        ip: Ipv4Addr,
        mac: MacAddr,
        port: PortId,
        names: &[String],
    ) {
        self.dns.add_records(names, ip);
        self.neighbors.insert(
            ip,
            Neighbor {
                mac,
                port,
                kind: NeighborKind::Static,
                last_seen: 0,
            },
        );
    }

    /// Forgets a static neighbour set by `set_static_neighbor` (not a port's own address).
    pub fn remove_static_neighbor(&mut self, ip: Ipv4Addr, mac: MacAddr, names: &[String]) {
        self.dns.remove_records(names, ip);
        let own = self.endpoints.values().any(|e| e.ip == Some(ip));
        if !own && self.neighbors.get(&ip).is_some_and(|n| n.mac == mac) {
            self.neighbors.remove(&ip);
        }
    }

    /// Restores a persisted lease (at start-up).
    pub fn restore_lease(&mut self, now: u64, lease: &LeaseRecord) {
        if let Some(d) = &mut self.dhcp {
            d.restore(now, lease);
        }
    }

    pub fn neighbors(&self) -> impl Iterator<Item = (&Ipv4Addr, &Neighbor)> {
        self.neighbors.iter()
    }

    pub fn leases(&self, now: u64) -> Vec<LeaseRecord> {
        self.dhcp
            .as_ref()
            .map(|d| d.leases(now))
            .unwrap_or_default()
    }

    pub fn dhcp_enabled(&self) -> bool {
        self.dhcp.is_some()
    }

    /// Forgets learned neighbours and expired leases.
    pub fn expire(&mut self, now: u64) {
        self.neighbors.retain(|_, n| {
            n.kind != NeighborKind::Learned || now.saturating_sub(n.last_seen) < NEIGHBOR_AGING_MS
        });
        if let Some(d) = &mut self.dhcp {
            d.expire(now);
        }
    }

    fn learn_neighbor(&mut self, ip: Ipv4Addr, mac: MacAddr, port: PortId, now: u64) {
        if !self.cfg.subnet.contains(&ip)
            || ip == self.cfg.ip
            || ip == self.cfg.subnet.network()
            || ip == self.cfg.subnet.broadcast()
            || !mac.is_valid_source()
        {
            return;
        }
        let room = self.neighbors.len() < MAX_LEARNED_NEIGHBORS + self.endpoints.len();
        match self.neighbors.get_mut(&ip) {
            Some(n) if n.kind == NeighborKind::Static => {}
            Some(n) => {
                n.mac = mac;
                n.port = port;
                n.last_seen = now;
            }
            None if room => {
                self.neighbors.insert(
                    ip,
                    Neighbor {
                        mac,
                        port,
                        kind: NeighborKind::Learned,
                        last_seen: now,
                    },
                );
            }
            None => {}
        }
    }

    /// Looks at a frame from `in_port`; answers it when it is for the gateway.
    pub fn handle(
        &mut self,
        now: u64,
        network: NetId,
        in_port: PortId,
        frame: &[u8],
        reply: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Verdict {
        let eth = Frame::new_unchecked(frame);
        let dst = eth.dst();
        let to_gateway = dst == self.cfg.mac;
        match eth.ethertype() {
            EtherType::ARP => self.handle_arp(now, in_port, eth.payload(), reply, to_gateway),
            EtherType::IPV4 if to_gateway || dst.is_broadcast() => {
                self.handle_ipv4(now, network, in_port, frame, reply, events, to_gateway)
            }
            EtherType::IPV4 => self.check_rogue_dhcp(frame),
            _ if to_gateway => Verdict::Drop(DropReason::NoRoute),
            _ => Verdict::Pass,
        }
    }

    fn handle_arp(
        &mut self,
        now: u64,
        in_port: PortId,
        payload: &[u8],
        reply: &mut Vec<u8>,
        to_gateway: bool,
    ) -> Verdict {
        let Ok(arp) = ArpPacketSlice::from_slice(payload)
            .map_err(|_| Malformed)
            .and_then(|s| s.to_packet().try_eth_ipv4().map_err(|_| Malformed))
        else {
            return if to_gateway {
                Verdict::Drop(DropReason::BadArp)
            } else {
                Verdict::Pass
            };
        };
        let sender_ip = arp.sender_ipv4_addr();
        let target_ip = arp.target_ipv4_addr();
        let sender_mac = MacAddr(arp.sender_mac);
        self.learn_neighbor(sender_ip, sender_mac, in_port, now);
        if arp.operation != ArpOperation::REQUEST {
            // Replies addressed to the gateway end here; others are switched.
            return if to_gateway {
                Verdict::Consumed
            } else {
                Verdict::Pass
            };
        }
        if target_ip == self.cfg.ip {
            write_arp_reply(reply, self.cfg.mac, target_ip, sender_mac, sender_ip);
            self.counters.arp_replies += 1;
            return Verdict::Consumed;
        }
        // ARP suppression: answer for a known container, unless it is the asker itself
        // (duplicate address detection and gratuitous ARP must reach everyone).
        if self.cfg.arp_suppress && sender_ip != target_ip && !sender_ip.is_unspecified() {
            if let Some(n) = self.neighbors.get(&target_ip) {
                if n.port != in_port {
                    write_arp_reply(reply, n.mac, target_ip, sender_mac, sender_ip);
                    self.counters.arp_suppressed += 1;
                    return Verdict::Consumed;
                }
            }
        }
        Verdict::Pass
    }

    /// A DHCP server message (UDP 67 -> 68) from a container port: a rogue server.
    fn check_rogue_dhcp(&self, frame: &[u8]) -> Verdict {
        // This runs on every unicast IPv4 frame: look at the IPv4 protocol byte before parsing,
        // so only UDP pays for the full slice.
        const IPV4_PROTO: usize = 14 + 9;
        if frame.get(IPV4_PROTO) != Some(&17) {
            return Verdict::Pass;
        }
        if let Ok(p) = SlicedPacket::from_ethernet(frame) {
            if let Some(TransportSlice::Udp(udp)) = &p.transport {
                if udp.source_port() == DHCP_SERVER_PORT
                    && udp.destination_port() == DHCP_CLIENT_PORT
                {
                    return Verdict::Drop(DropReason::RogueDhcp);
                }
            }
        }
        Verdict::Pass
    }

    #[allow(clippy::too_many_arguments)]
    fn handle_ipv4(
        &mut self,
        now: u64,
        network: NetId,
        in_port: PortId,
        frame: &[u8],
        reply: &mut Vec<u8>,
        events: &mut Vec<Event>,
        to_gateway: bool,
    ) -> Verdict {
        let Ok(packet) = SlicedPacket::from_ethernet(frame) else {
            return if to_gateway {
                Verdict::Drop(DropReason::BadIp)
            } else {
                Verdict::Pass
            };
        };
        let Some(NetSlice::Ipv4(ip)) = &packet.net else {
            return if to_gateway {
                Verdict::Drop(DropReason::BadIp)
            } else {
                Verdict::Pass
            };
        };
        let src_ip = ip.header().source_addr();
        let dst_ip = ip.header().destination_addr();
        let src_mac = Frame::new_unchecked(frame).src();
        match &packet.transport {
            Some(TransportSlice::Udp(udp)) if udp.destination_port() == DHCP_SERVER_PORT => {
                let Some(server) = &mut self.dhcp else {
                    return if to_gateway {
                        Verdict::Drop(DropReason::NoRoute)
                    } else {
                        Verdict::Pass
                    };
                };
                self.counters.dhcp_requests += 1;
                match server.handle(now, network, udp.payload(), reply, events) {
                    Ok(true) => {
                        self.counters.dhcp_replies += 1;
                        // A bound client is a neighbour.
                        for e in events.iter() {
                            if let Event::Lease { lease, .. } = e {
                                if lease.mac == src_mac {
                                    self.neighbors.insert(
                                        lease.ip,
                                        Neighbor {
                                            mac: src_mac,
                                            port: in_port,
                                            kind: NeighborKind::Dhcp,
                                            last_seen: now,
                                        },
                                    );
                                }
                            }
                        }
                        Verdict::Consumed
                    }
                    Ok(false) => Verdict::Consumed,
                    Err(Malformed) => Verdict::Drop(DropReason::BadDhcp),
                }
            }
            Some(TransportSlice::Udp(udp))
                if udp.source_port() == DHCP_SERVER_PORT
                    && udp.destination_port() == DHCP_CLIENT_PORT =>
            {
                Verdict::Drop(DropReason::RogueDhcp)
            }
            _ if !to_gateway => Verdict::Pass,
            _ if dst_ip != self.cfg.ip && !self.cfg.subnet.contains(&dst_ip) => {
                Verdict::Route(dst_ip)
            }
            _ if dst_ip != self.cfg.ip => Verdict::Drop(DropReason::NoRoute),
            Some(TransportSlice::Icmpv4(icmp)) => match icmp.icmp_type() {
                Icmpv4Type::EchoRequest(echo) => {
                    let builder = PacketBuilder::ethernet2(self.cfg.mac.0, src_mac.0)
                        .ipv4(self.cfg.ip.octets(), src_ip.octets(), 64)
                        .icmpv4_echo_reply(echo.id, echo.seq);
                    reply.clear();
                    if builder.write(reply, icmp.payload()).is_err() {
                        reply.clear();
                        return Verdict::Drop(DropReason::BadIp);
                    }
                    self.counters.icmp_replies += 1;
                    Verdict::Consumed
                }
                _ => Verdict::Consumed,
            },
            Some(TransportSlice::Udp(udp)) if udp.destination_port() == DNS_PORT => {
                self.counters.dns_queries += 1;
                match self.dns.resolve(udp.payload(), dns::MAX_UDP_RESPONSE) {
                    Ok(dns::Answer::Forward) => {
                        events.push(Event::DnsForward(Box::new(DnsForward {
                            port: in_port,
                            query: udp.payload().to_vec(),
                            client_mac: src_mac,
                            client_ip: src_ip,
                            client_port: udp.source_port(),
                            gateway_mac: self.cfg.mac,
                            gateway_ip: self.cfg.ip,
                            tcp: None,
                        })));
                        Verdict::Consumed
                    }
                    Ok(dns::Answer::Reply(resp)) => {
                        let builder = PacketBuilder::ethernet2(self.cfg.mac.0, src_mac.0)
                            .ipv4(self.cfg.ip.octets(), src_ip.octets(), 64)
                            .udp(DNS_PORT, udp.source_port());
                        reply.clear();
                        if builder.write(reply, &resp).is_err() {
                            reply.clear();
                            return Verdict::Drop(DropReason::BadDns);
                        }
                        self.counters.dns_replies += 1;
                        Verdict::Consumed
                    }
                    Err(Malformed) => Verdict::Drop(DropReason::BadDns),
                }
            }
            Some(TransportSlice::Tcp(tcp)) if tcp.destination_port() == DNS_PORT => {
                match dns::tcp::segment(&self.dns, &self.cfg, src_mac, src_ip, tcp, reply) {
                    dns::tcp::Outcome::Replied { query } => {
                        if query {
                            self.counters.dns_queries += 1;
                            self.counters.dns_replies += 1;
                        }
                        Verdict::Consumed
                    }
                    dns::tcp::Outcome::Forward { query, seq, ack } => {
                        self.counters.dns_queries += 1;
                        events.push(Event::DnsForward(Box::new(DnsForward {
                            port: in_port,
                            query,
                            client_mac: src_mac,
                            client_ip: src_ip,
                            client_port: tcp.source_port(),
                            gateway_mac: self.cfg.mac,
                            gateway_ip: self.cfg.ip,
                            tcp: Some(TcpReply { seq, ack }),
                        })));
                        Verdict::Consumed
                    }
                    dns::tcp::Outcome::Ignored => Verdict::Consumed,
                    dns::tcp::Outcome::Malformed => Verdict::Drop(DropReason::BadDns),
                }
            }
            Some(TransportSlice::Tcp(_) | TransportSlice::Udp(_)) => Verdict::Local,
            _ => Verdict::Drop(DropReason::NoRoute),
        }
    }
}

impl Gateway {
    /// Writes into `reply` the ICMP "fragmentation needed" (next-hop MTU `mtu`) the gateway
    /// sends, as a router of the path would, to the sender of `frame`: an IPv4 packet with DF
    /// set that is too big for the way it was going (an overlay's tunnels). Writes nothing for
    /// anything else (no DF: the caller drops it; not IPv4; malformed).
    pub fn write_frag_needed(&self, frame: &[u8], mtu: u32, reply: &mut Vec<u8>) {
        let Some(packet) = frame.get(14..).filter(|_| frame[12..14] == [0x08, 0x00]) else {
            return;
        };
        let Ok(ip) = etherparse::Ipv4HeaderSlice::from_slice(packet) else {
            return;
        };
        if !ip.dont_fragment() || ip.source_addr().is_unspecified() {
            return;
        }
        let quoted = &packet[..(ip.slice().len() + 8).min(packet.len())];
        let to = Frame::new_unchecked(frame).src();
        let t = Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded {
                next_hop_mtu: u16::try_from(mtu).unwrap_or(u16::MAX),
            },
        );
        let builder = PacketBuilder::ethernet2(self.cfg.mac.0, to.0)
            .ipv4(self.cfg.ip.octets(), ip.source(), 64)
            .icmpv4(t);
        reply.clear();
        if builder.write(reply, quoted).is_err() {
            reply.clear();
        }
    }
}

/// Writes an ARP reply "`ip` is at `mac`" to `to_mac`/`to_ip` into `buf`.
pub(crate) fn write_arp_reply(
    buf: &mut Vec<u8>,
    mac: MacAddr,
    ip: Ipv4Addr,
    to_mac: MacAddr,
    to_ip: Ipv4Addr,
) {
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REPLY,
        sender_mac: mac.0,
        sender_ipv4: ip.octets(),
        target_mac: to_mac.0,
        target_ipv4: to_ip.octets(),
    };
    buf.clear();
    buf.extend_from_slice(&to_mac.0);
    buf.extend_from_slice(&mac.0);
    buf.extend_from_slice(&EtherType::ARP.to_be_bytes());
    buf.extend_from_slice(&arp.to_bytes());
}

#[cfg(test)]
mod tests;
