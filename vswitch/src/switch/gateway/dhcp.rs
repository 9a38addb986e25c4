//! The DHCPv4 server (RFC 2131/2132) of one network, on dhcproto.
//!
//! A port's address (IPAM) is reserved for its MAC, so static configuration and DHCP agree; other
//! MACs get addresses from the range. Leases live here (the dataplane owns them) and every change
//! is reported as an event for the control plane to persist.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use dhcproto::v4::DhcpOptions;
use dhcproto::v4::{
    Decodable, Decoder, DhcpOption, Encodable, Encoder, HType, Message, MessageType, Opcode,
    OptionCode,
};
use etherparse::PacketBuilder;
use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use super::{Event, Malformed, DHCP_CLIENT_PORT, DHCP_SERVER_PORT};
use crate::switch::NetId;
use crate::wire::MacAddr;

/// How long an offer holds its address for the client.
const OFFER_HOLD_MS: u64 = 60_000;
/// How long a declined address stays out of the pool.
const DECLINE_HOLD_MS: u64 = 600_000;

/// Settings of one network's DHCP server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DhcpConfig {
    /// Dynamic addresses are handed out from this range (inclusive).
    pub range_start: Ipv4Addr,
    pub range_end: Ipv4Addr,
    pub lease_secs: u32,
    pub mtu: u16,
    /// Never handed out (the network's `--aux-address`es).
    pub excluded: Vec<Ipv4Addr>,
}

/// A lease as the control plane stores and shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Seconds left when the record was made.
    pub remaining_secs: u32,
}

#[derive(Debug, Clone)]
struct Lease {
    expires: u64,
    hostname: Option<String>,
}

/// Most offers outstanding at once: a container spraying DISCOVERs from made-up MACs cannot
/// hold the whole pool (or unbounded memory) with them.
const MAX_OFFERS: usize = 1024;

/// Addresses held for MACs, indexed both ways, so "who holds this address?" costs O(1) — the
/// question every candidate address of a DISCOVER asks.
#[derive(Debug, Clone)]
struct Holds<V> {
    by_mac: HashMap<MacAddr, (Ipv4Addr, V)>,
    by_ip: HashMap<Ipv4Addr, MacAddr>,
}

impl<V> Default for Holds<V> {
    fn default() -> Self {
        Holds {
            by_mac: HashMap::new(),
            by_ip: HashMap::new(),
        }
    }
}

impl<V> Holds<V> {
    fn insert(&mut self, mac: MacAddr, ip: Ipv4Addr, v: V) {
        if let Some((old, _)) = self.by_mac.insert(mac, (ip, v)) {
            if old != ip && self.by_ip.get(&old) == Some(&mac) {
                self.by_ip.remove(&old);
            }
        }
        self.by_ip.insert(ip, mac);
    }

    fn remove(&mut self, mac: &MacAddr) -> Option<(Ipv4Addr, V)> {
        let (ip, v) = self.by_mac.remove(mac)?;
        if self.by_ip.get(&ip) == Some(mac) {
            self.by_ip.remove(&ip);
        }
        Some((ip, v))
    }

    fn get(&self, mac: &MacAddr) -> Option<&(Ipv4Addr, V)> {
        self.by_mac.get(mac)
    }

    /// The MAC holding `ip`, with its value.
    fn holder(&self, ip: &Ipv4Addr) -> Option<(MacAddr, &V)> {
        let mac = self.by_ip.get(ip)?;
        self.by_mac.get(mac).map(|(_, v)| (*mac, v))
    }

    fn retain(&mut self, keep: impl Fn(&V) -> bool) {
        self.by_mac.retain(|_, (_, v)| keep(v));
        let by_mac = &self.by_mac;
        self.by_ip
            .retain(|ip, mac| by_mac.get(mac).is_some_and(|(i, _)| i == ip));
    }

    fn len(&self) -> usize {
        self.by_mac.len()
    }
}

#[derive(Debug, Clone)]
pub struct Server {
    cfg: DhcpConfig,
    gw: Ipv4Addr,
    gw_mac: MacAddr,
    subnet: Ipv4Net,
    domain: String,
    /// Port addresses (IPAM) with the port's hostname.
    reservations: Holds<Option<String>>,
    leases: Holds<Lease>,
    /// Offers with their expiry.
    offers: Holds<u64>,
    declined: HashMap<Ipv4Addr, u64>,
}

impl Server {
    pub fn new(
        cfg: DhcpConfig,
        gw: Ipv4Addr,
        gw_mac: MacAddr,
        subnet: Ipv4Net,
        domain: String,
    ) -> Server {
        Server {
            cfg,
            gw,
            gw_mac,
            subnet,
            domain,
            reservations: Holds::default(),
            leases: Holds::default(),
            offers: Holds::default(),
            declined: HashMap::new(),
        }
    }

    pub fn reserve(&mut self, mac: MacAddr, ip: Ipv4Addr, hostname: Option<String>) {
        self.reservations.insert(mac, ip, hostname);
    }

    pub fn unreserve(&mut self, mac: MacAddr) {
        self.reservations.remove(&mac);
        self.leases.remove(&mac);
        self.offers.remove(&mac);
    }

    pub fn restore(&mut self, now: u64, r: &LeaseRecord) {
        self.leases.insert(
            r.mac,
            r.ip,
            Lease {
                expires: now + u64::from(r.remaining_secs) * 1000,
                hostname: r.hostname.clone(),
            },
        );
    }

    pub fn leases(&self, now: u64) -> Vec<LeaseRecord> {
        let mut v: Vec<LeaseRecord> = self
            .leases
            .by_mac
            .iter()
            .filter(|(_, (_, l))| l.expires > now)
            .map(|(mac, (ip, l))| LeaseRecord {
                mac: *mac,
                ip: *ip,
                hostname: l.hostname.clone(),
                remaining_secs: ((l.expires - now) / 1000) as u32,
            })
            .collect();
        v.sort_by_key(|l| l.ip);
        v
    }

    pub fn expire(&mut self, now: u64) {
        self.leases.retain(|l| l.expires > now);
        self.offers.retain(|t| *t > now);
        self.declined.retain(|_, t| *t > now);
    }

    fn host_address(&self, ip: Ipv4Addr) -> bool {
        self.subnet.contains(&ip)
            && ip != self.gw
            && ip != self.subnet.network()
            && ip != self.subnet.broadcast()
    }

    /// May `mac` have `ip`?
    fn acceptable(&self, now: u64, mac: MacAddr, ip: Ipv4Addr) -> bool {
        if !self.host_address(ip) {
            return false;
        }
        if let Some((reserved, _)) = self.reservations.get(&mac) {
            return *reserved == ip;
        }
        let in_range = ip >= self.cfg.range_start && ip <= self.cfg.range_end;
        in_range
            && !self.cfg.excluded.contains(&ip)
            && self.declined.get(&ip).is_none_or(|t| *t <= now)
            && self.reservations.holder(&ip).is_none_or(|(m, _)| m == mac)
            && self
                .leases
                .holder(&ip)
                .is_none_or(|(m, l)| m == mac || l.expires <= now)
            && self
                .offers
                .holder(&ip)
                .is_none_or(|(m, t)| m == mac || *t <= now)
    }

    /// The address to offer `mac`.
    fn choose(&self, now: u64, mac: MacAddr, requested: Option<Ipv4Addr>) -> Option<Ipv4Addr> {
        if let Some((ip, _)) = self.reservations.get(&mac) {
            return Some(*ip);
        }
        let previous = self
            .leases
            .get(&mac)
            .map(|(ip, _)| *ip)
            .or_else(|| self.offers.get(&mac).map(|(ip, _)| *ip));
        for candidate in [previous, requested].into_iter().flatten() {
            if self.acceptable(now, mac, candidate) {
                return Some(candidate);
            }
        }
        let (start, end) = (
            u32::from(self.cfg.range_start),
            u32::from(self.cfg.range_end),
        );
        (start..=end)
            .map(Ipv4Addr::from)
            .find(|ip| self.acceptable(now, mac, *ip))
    }

    fn hostname_for(&self, mac: MacAddr, req: &Message) -> Option<String> {
        self.reservations
            .get(&mac)
            .and_then(|(_, h)| h.clone())
            .or_else(|| match req.opts().get(OptionCode::Hostname) {
                Some(DhcpOption::Hostname(h)) => Some(h.clone()),
                _ => None,
            })
    }

    /// Handles one DHCP message from a client. `Ok(true)` when `reply` holds a frame to send
    /// back out of the ingress port; `Err` for a malformed message.
    pub fn handle(
        &mut self,
        now: u64,
        network: NetId,
        payload: &[u8],
        reply: &mut Vec<u8>,
        events: &mut Vec<Event>,
    ) -> Result<bool, Malformed> {
        // A DHCP message is a BOOTP message whose options start with the magic cookie.
        if payload.get(236..240) != Some(&[99, 130, 83, 99][..]) {
            return Err(Malformed);
        }
        let req = Message::decode(&mut Decoder::new(payload)).map_err(|_| Malformed)?;
        // dhcproto's `chaddr()` slices its 16-byte field by `hlen` unchecked: a message with
        // hlen > 16 would panic there (found by fuzzing). Ethernet's is 6; more than the field
        // holds is malformed.
        if req.opcode() != Opcode::BootRequest
            || req.htype() != HType::Eth
            || !(6..=16).contains(&req.hlen())
        {
            return Err(Malformed);
        }
        let mac = MacAddr::from_slice(req.chaddr());
        if !mac.is_valid_source() {
            return Err(Malformed);
        }
        let requested = match req.opts().get(OptionCode::RequestedIpAddress) {
            Some(DhcpOption::RequestedIpAddress(ip)) => Some(*ip),
            _ => None,
        };
        let server_id = match req.opts().get(OptionCode::ServerIdentifier) {
            Some(DhcpOption::ServerIdentifier(ip)) => Some(*ip),
            _ => None,
        };
        let ciaddr = req.ciaddr();
        match req.opts().msg_type().ok_or(Malformed)? {
            MessageType::Discover => {
                let known = self.reservations.get(&mac).is_some()
                    || self.leases.get(&mac).is_some()
                    || self.offers.get(&mac).is_some();
                if !known && self.offers.len() >= MAX_OFFERS {
                    self.offers.retain(|t| *t > now);
                    if self.offers.len() >= MAX_OFFERS {
                        return Ok(false); // too many strangers at once: stay silent
                    }
                }
                let Some(ip) = self.choose(now, mac, requested) else {
                    return Ok(false); // pool exhausted: stay silent, as RFC 2131 allows
                };
                self.offers.insert(mac, ip, now + OFFER_HOLD_MS);
                let hostname = self.hostname_for(mac, &req);
                self.write_reply(&req, MessageType::Offer, ip, hostname.as_deref(), reply)?;
                Ok(true)
            }
            MessageType::Request => {
                let ip = match (server_id, requested) {
                    // SELECTING: the client picked a server.
                    (Some(sid), _) if sid != self.gw => {
                        self.offers.remove(&mac);
                        return Ok(false);
                    }
                    (Some(_), Some(ip)) => ip,
                    (Some(_), None) => ciaddr,
                    // INIT-REBOOT: the client asks for the address it remembers.
                    (None, Some(ip)) => ip,
                    // RENEWING / REBINDING.
                    (None, None) if !ciaddr.is_unspecified() => ciaddr,
                    (None, None) => return Err(Malformed),
                };
                if !self.acceptable(now, mac, ip) {
                    self.offers.remove(&mac);
                    self.write_nak(
                        &req,
                        reply,
                        &format!("address {ip} is not available to this client"),
                    )?;
                    return Ok(true);
                }
                let hostname = self.hostname_for(mac, &req);
                self.offers.remove(&mac);
                self.leases.insert(
                    mac,
                    ip,
                    Lease {
                        expires: now + u64::from(self.cfg.lease_secs) * 1000,
                        hostname: hostname.clone(),
                    },
                );
                events.push(Event::Lease {
                    network,
                    lease: LeaseRecord {
                        mac,
                        ip,
                        hostname: hostname.clone(),
                        remaining_secs: self.cfg.lease_secs,
                    },
                    ack: None,
                });
                self.write_reply(&req, MessageType::Ack, ip, hostname.as_deref(), reply)?;
                Ok(true)
            }
            MessageType::Decline => {
                let ip = requested.ok_or(Malformed)?;
                if self.leases.get(&mac).is_some_and(|(l, _)| *l == ip) {
                    self.leases.remove(&mac);
                    events.push(Event::Released { network, mac });
                }
                self.offers.remove(&mac);
                self.declined.insert(ip, now + DECLINE_HOLD_MS);
                Ok(false)
            }
            MessageType::Release => {
                if self.leases.get(&mac).is_some_and(|(l, _)| *l == ciaddr) {
                    self.leases.remove(&mac);
                    events.push(Event::Released { network, mac });
                }
                Ok(false)
            }
            MessageType::Inform => {
                if ciaddr.is_unspecified() {
                    return Err(Malformed);
                }
                self.write_reply(&req, MessageType::Ack, Ipv4Addr::UNSPECIFIED, None, reply)?;
                Ok(true)
            }
            _ => Err(Malformed),
        }
    }

    fn base_reply(&self, req: &Message, kind: MessageType, yiaddr: Ipv4Addr) -> Message {
        let mut m = Message::new_with_id(
            req.xid(),
            if kind == MessageType::Nak {
                Ipv4Addr::UNSPECIFIED
            } else {
                req.ciaddr()
            },
            yiaddr,
            Ipv4Addr::UNSPECIFIED,
            req.giaddr(),
            req.chaddr(),
        );
        m.set_opcode(Opcode::BootReply);
        m.set_flags(req.flags());
        let mut opts = DhcpOptions::new();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(self.gw));
        m.set_opts(opts);
        m
    }

    fn write_reply(
        &self,
        req: &Message,
        kind: MessageType,
        yiaddr: Ipv4Addr,
        hostname: Option<&str>,
        reply: &mut Vec<u8>,
    ) -> Result<(), Malformed> {
        let mut m = self.base_reply(req, kind, yiaddr);
        let o = m.opts_mut();
        o.insert(DhcpOption::SubnetMask(self.subnet.netmask()));
        o.insert(DhcpOption::BroadcastAddr(self.subnet.broadcast()));
        o.insert(DhcpOption::Router(vec![self.gw]));
        o.insert(DhcpOption::DomainNameServer(vec![self.gw]));
        if !self.domain.is_empty() {
            o.insert(DhcpOption::DomainName(self.domain.clone()));
        }
        o.insert(DhcpOption::InterfaceMtu(self.cfg.mtu));
        if !yiaddr.is_unspecified() {
            let lease = self.cfg.lease_secs;
            o.insert(DhcpOption::AddressLeaseTime(lease));
            o.insert(DhcpOption::Renewal(lease / 2));
            o.insert(DhcpOption::Rebinding(lease / 8 * 7));
        }
        if let Some(h) = hostname {
            o.insert(DhcpOption::Hostname(h.to_string()));
        }
        self.emit(req, &m, false, reply)
    }

    fn write_nak(&self, req: &Message, reply: &mut Vec<u8>, why: &str) -> Result<(), Malformed> {
        let mut m = self.base_reply(req, MessageType::Nak, Ipv4Addr::UNSPECIFIED);
        m.opts_mut().insert(DhcpOption::Message(why.to_string()));
        self.emit(req, &m, true, reply)
    }

    /// Frames the reply per RFC 2131 4.1: NAKs and clients that asked for it get a broadcast;
    /// a client with an address gets unicast to it; otherwise unicast to the offered address.
    fn emit(
        &self,
        req: &Message,
        m: &Message,
        nak: bool,
        reply: &mut Vec<u8>,
    ) -> Result<(), Malformed> {
        let mut payload = Vec::with_capacity(512);
        m.encode(&mut Encoder::new(&mut payload))
            .map_err(|_| Malformed)?;
        let chaddr = MacAddr::from_slice(req.chaddr());
        let (dst_mac, dst_ip) = if nak || (req.flags().broadcast() && req.ciaddr().is_unspecified())
        {
            (MacAddr::BROADCAST, Ipv4Addr::BROADCAST)
        } else if !req.ciaddr().is_unspecified() {
            (chaddr, req.ciaddr())
        } else {
            (chaddr, m.yiaddr())
        };
        let builder = PacketBuilder::ethernet2(self.gw_mac.0, dst_mac.0)
            .ipv4(self.gw.octets(), dst_ip.octets(), 64)
            .udp(DHCP_SERVER_PORT, DHCP_CLIENT_PORT);
        reply.clear();
        builder.write(reply, &payload).map_err(|_| Malformed)
    }
}
