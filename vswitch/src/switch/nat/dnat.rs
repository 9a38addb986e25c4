//! Published ports: the table of host ports that lead to a container, and the translation of
//! hairpin flows (a container reaching a published port through the uplink's address). Flows
//! from outside to a published port are ordinary conntrack entries of kind `Dnat`, created in
//! `Uplink::inbound`; the container sees the client's real address.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::conntrack::{Dir, HairpinSide, Kind, OrigKey, Refused};
use super::{tcp_udp_flags, Routed, Uplink, Via, ETH};
use crate::switch::{DropReason, NetId};
use crate::wire::ipv4::{l4, word, Ipv4, L4Sum, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN};
use crate::wire::offload::{self, VnetHdr};
use crate::wire::{Frame, MacAddr};

/// At most this many published (protocol, port) pairs.
pub const MAX_PUBLISHED: usize = 16_384;

/// Where a published port leads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub net: NetId,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub port: u16,
    /// The gateway of the container's network: hairpin flows come to the container from it.
    pub gateway: Ipv4Addr,
}

/// One published (protocol, host port) on the uplink's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub proto: u8,
    pub host_port: u16,
    pub target: Target,
}

/// The published ports, by protocol and host port.
#[derive(Debug, Default, Clone)]
pub struct Published {
    map: HashMap<(u8, u16), Target>,
}

impl Published {
    /// Replaces the table (the control plane sends it whole). Rules past `MAX_PUBLISHED` and
    /// for protocols other than TCP and UDP are ignored.
    pub fn set(&mut self, rules: &[Rule]) {
        self.map = rules
            .iter()
            .filter(|r| matches!(r.proto, PROTO_TCP | PROTO_UDP))
            .take(MAX_PUBLISHED)
            .map(|r| ((r.proto, r.host_port), r.target))
            .collect();
    }

    pub fn get(&self, proto: u8, port: u16) -> Option<&Target> {
        self.map.get(&(proto, port))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// The addresses and ports a translated packet gets.
struct Rewrite {
    src: Ipv4Addr,
    sport: u16,
    dst: Ipv4Addr,
    dport: u16,
}

impl Uplink {
    /// A new flow from outside to a published port: `remote:rport` sent to the uplink's
    /// address at `port` with TCP `flags`. Only a TCP SYN (or any UDP datagram) opens one.
    pub(super) fn dnat_new(
        &mut self,
        now: u64,
        proto: u8,
        remote: Ipv4Addr,
        rport: u16,
        port: u16,
        flags: u8,
    ) -> Result<u32, DropReason> {
        let Some(t) = self.published.get(proto, port).copied() else {
            return Err(DropReason::NoConntrack);
        };
        if proto == PROTO_TCP && (flags & TCP_SYN == 0 || flags & TCP_ACK != 0) {
            return Err(DropReason::NoConntrack);
        }
        let orig = OrigKey {
            net: t.net,
            proto,
            src: t.ip,
            sport: t.port,
            dst: remote,
            dport: rport,
        };
        match self.ct.dnat(now, orig, port, t.mac) {
            Ok(Some(slot)) => Ok(slot),
            Ok(None) => Err(DropReason::NoConntrack),
            Err(_) => Err(DropReason::ConntrackFull),
        }
    }

    /// A container's packet to the uplink's own address: when it is for a published port (or
    /// of a hairpin flow already), it goes to the publishing container from that container's
    /// gateway. `None`: not a hairpin packet (it is routed as any other).
    pub(super) fn hairpin_out(
        &mut self,
        now: u64,
        via: Via,
        frame: &mut [u8],
        vnet: Option<&VnetHdr>,
    ) -> Option<Routed> {
        let src_mac = Frame::new_unchecked(&*frame).src();
        let (mut ip, sum) = view(frame, vnet)?;
        let proto = ip.protocol();
        if !matches!(proto, PROTO_TCP | PROTO_UDP) || ip.frag_offset() != 0 {
            return None;
        }
        let payload = ip.payload();
        let flags = tcp_udp_flags(proto, payload)?;
        let key = OrigKey {
            net: via.net,
            proto,
            src: ip.src(),
            sport: word(payload, l4::SRC_PORT)?,
            dst: ip.dst(),
            dport: word(payload, l4::DST_PORT)?,
        };
        let slot = match self.ct.lookup(now, &key) {
            Some(slot) => slot,
            None => {
                let t = *self.published.get(proto, key.dport)?;
                let side = HairpinSide {
                    key: OrigKey {
                        net: t.net,
                        proto,
                        src: t.ip,
                        sport: t.port,
                        dst: t.gateway,
                        dport: 0,
                    },
                    mac: t.mac,
                };
                match self.ct.hairpin(now, key, src_mac, side, self.cfg.nat_ports) {
                    Ok(slot) => slot,
                    Err(Refused::TableFull) => {
                        return Some(Routed::Drop(DropReason::ConntrackFull))
                    }
                    Err(Refused::SourceLimit) => {
                        return Some(Routed::Drop(DropReason::ConntrackSourceLimit))
                    }
                    Err(Refused::PortsExhausted) => {
                        return Some(Routed::Drop(DropReason::NatExhausted))
                    }
                }
            }
        };
        let e = *self.ct.get(slot)?;
        if e.kind != Kind::Hairpin {
            // A masqueraded flow to our own address (not published when it began).
            return None;
        }
        let side = *self.ct.hairpin_side(slot)?;
        let rw = Rewrite {
            src: side.key.dst,
            sport: side.key.dport,
            dst: side.key.src,
            dport: side.key.sport,
        };
        let len = ip.total_len();
        Some(self.hairpin_rewrite(now, slot, &mut ip, sum, rw, Dir::Orig, flags, len, side))
    }

    /// A container's TCP/UDP packet to its gateway's own address: the publishing side of a
    /// hairpin flow, back to the client container as if from the published address.
    pub fn hairpin_back(
        &mut self,
        now: u64,
        via: Via,
        frame: &mut [u8],
        vnet: Option<&VnetHdr>,
    ) -> Routed {
        let Some((mut ip, sum)) = view(frame, vnet) else {
            return Routed::Drop(DropReason::BadIp);
        };
        let proto = ip.protocol();
        let payload = ip.payload();
        let Some(flags) = tcp_udp_flags(proto, payload) else {
            return Routed::Drop(DropReason::BadIp);
        };
        let key = OrigKey {
            net: via.net,
            proto,
            src: ip.src(),
            sport: word(payload, l4::SRC_PORT).unwrap_or(0),
            dst: ip.dst(),
            dport: word(payload, l4::DST_PORT).unwrap_or(0),
        };
        let Some(slot) = self.ct.lookup(now, &key) else {
            return Routed::Drop(DropReason::NoRoute);
        };
        let (Some(e), Some(side)) = (
            self.ct.get(slot).copied(),
            self.ct.hairpin_side(slot).copied(),
        ) else {
            return Routed::Drop(DropReason::NoRoute);
        };
        if side.key != key {
            return Routed::Drop(DropReason::NoRoute);
        }
        let rw = Rewrite {
            src: e.orig.dst,
            sport: e.orig.dport,
            dst: e.orig.src,
            dport: e.orig.sport,
        };
        let back = HairpinSide {
            key: e.orig,
            mac: e.mac,
        };
        let len = ip.total_len();
        self.hairpin_rewrite(now, slot, &mut ip, sum, rw, Dir::Reply, flags, len, back)
    }

    /// Rewrites both ends of a hairpinned packet and addresses it to `to`'s container.
    #[allow(clippy::too_many_arguments)]
    fn hairpin_rewrite(
        &mut self,
        now: u64,
        slot: u32,
        ip: &mut Ipv4<&mut [u8]>,
        sum: L4Sum,
        rw: Rewrite,
        dir: Dir,
        flags: u8,
        len: usize,
        to: HairpinSide,
    ) -> Routed {
        if ip.ttl() <= 1 {
            return Routed::Drop(DropReason::TtlExceeded);
        }
        ip.set_addr(false, rw.src, sum);
        ip.set_addr(true, rw.dst, sum);
        if ip.set_l4_word(l4::SRC_PORT.start, rw.sport, sum).is_err()
            || ip.set_l4_word(l4::DST_PORT.start, rw.dport, sum).is_err()
        {
            return Routed::Drop(DropReason::BadIp);
        }
        ip.decrement_ttl();
        self.ct.update(slot, now, dir, flags, len);
        self.counters.hairpin_packets += 1;
        Routed::Deliver {
            net: to.key.net,
            mac: to.mac,
        }
    }
}

/// The IPv4 packet of a container's frame and how its checksum is to be updated (a TAP's
/// frame may carry a pending checksum or be a TSO super-frame).
fn view<'a>(frame: &'a mut [u8], vnet: Option<&VnetHdr>) -> Option<(Ipv4<&'a mut [u8]>, L4Sum)> {
    let gso = vnet.is_some_and(|v| v.gso_type & !offload::GSO_ECN != offload::GSO_NONE);
    let sum = if vnet.is_some_and(|v| v.flags & offload::F_NEEDS_CSUM != 0) {
        L4Sum::Partial
    } else {
        L4Sum::Full
    };
    let ip = if gso {
        Ipv4::new_gso(frame.get_mut(ETH..)?)
    } else {
        Ipv4::new_checked(frame.get_mut(ETH..)?)
    };
    Some((ip.ok()?, sum))
}
