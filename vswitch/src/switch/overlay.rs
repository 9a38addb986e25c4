//! VXLAN (RFC 7348): the 8-byte header, and the table that maps a datagram from the underlay to
//! the tunnel port it came in on (one per overlay network and remote VTEP). Pure: the UDP socket
//! is `ports/vxlan.rs`; the pipeline treats a tunnel as one more port of its network, except that
//! what comes in from a remote VTEP is never flooded to another (head-end replication with split
//! horizon).
//!
//! The header is written by hand: two fields, read on every datagram.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::{DropReason, NetId, PortId};

/// The VXLAN header's length, ahead of the inner Ethernet frame.
pub const HEADER_LEN: usize = 8;
/// IANA's VXLAN port.
pub const DEFAULT_PORT: u16 = 4789;
/// Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14): what encapsulation adds on
/// the underlay, so an overlay port's MTU is the underlay's minus this.
pub const OVERHEAD: u32 = 50;
/// The largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// The I flag: the VNI is valid.
const FLAG_I: u8 = 0x08;

/// The header for `vni`.
pub fn header(vni: u32) -> [u8; HEADER_LEN] {
    let v = vni.to_be_bytes();
    [FLAG_I, 0, 0, 0, v[1], v[2], v[3], 0]
}

/// The VNI of a datagram's header, or why it is not VXLAN the switch takes.
pub fn parse(datagram: &[u8]) -> Result<u32, DropReason> {
    if datagram.len() < HEADER_LEN + 14 {
        return Err(DropReason::BadVxlan);
    }
    if datagram[0] & FLAG_I == 0 {
        return Err(DropReason::BadVxlan);
    }
    Ok(u32::from_be_bytes([
        0,
        datagram[4],
        datagram[5],
        datagram[6],
    ]))
}

/// Overlay networks by VNI and their tunnel ports by remote VTEP.
#[derive(Debug, Default)]
pub struct Tunnels {
    vnis: HashMap<u32, NetId>,
    ports: HashMap<(u32, Ipv4Addr), PortId>,
}

impl Tunnels {
    pub fn add_network(&mut self, vni: u32, net: NetId) {
        self.vnis.insert(vni, net);
    }

    pub fn remove_network(&mut self, net: NetId) {
        let gone: Vec<u32> = self
            .vnis
            .iter()
            .filter(|(_, n)| **n == net)
            .map(|(v, _)| *v)
            .collect();
        for v in gone {
            self.vnis.remove(&v);
            self.ports.retain(|(pv, _), _| *pv != v);
        }
    }

    pub fn network_of(&self, vni: u32) -> Option<NetId> {
        self.vnis.get(&vni).copied()
    }

    pub fn add_tunnel(&mut self, vni: u32, remote: Ipv4Addr, port: PortId) {
        self.ports.insert((vni, remote), port);
    }

    pub fn remove_tunnel(&mut self, port: PortId) {
        self.ports.retain(|_, p| *p != port);
    }

    /// The tunnel port a datagram from `src` came in on, or why it is dropped.
    pub fn demux(&self, src: Ipv4Addr, datagram: &[u8]) -> Result<PortId, DropReason> {
        let vni = parse(datagram)?;
        if !self.vnis.contains_key(&vni) {
            return Err(DropReason::UnknownVni);
        }
        self.ports
            .get(&(vni, src))
            .copied()
            .ok_or(DropReason::UnknownVtep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_demux() {
        let h = header(0x12_3456);
        assert_eq!(h, [0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0]);
        let mut d = h.to_vec();
        d.extend_from_slice(&[0u8; 14]);
        assert_eq!(parse(&d), Ok(0x12_3456));
        let mut t = Tunnels::default();
        let peer: Ipv4Addr = "192.0.2.2".parse().unwrap();
        assert_eq!(t.demux(peer, &d), Err(DropReason::UnknownVni));
        t.add_network(0x12_3456, NetId(1));
        assert_eq!(t.demux(peer, &d), Err(DropReason::UnknownVtep));
        t.add_tunnel(0x12_3456, peer, PortId(7));
        assert_eq!(t.demux(peer, &d), Ok(PortId(7)));
        d[0] = 0;
        assert_eq!(t.demux(peer, &d), Err(DropReason::BadVxlan));
        assert_eq!(parse(&d[..10]), Err(DropReason::BadVxlan));
        t.remove_network(NetId(1));
        d[0] = 0x08;
        assert_eq!(t.demux(peer, &d), Err(DropReason::UnknownVni));
    }
}
