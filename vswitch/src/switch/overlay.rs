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

/// A hash of an Ethernet frame's flow: MACs and EtherType, and for IPv4 the addresses,
/// protocol and (first fragments) TCP/UDP ports. The same flow always hashes the same, so its
/// datagrams keep one outer source port (one underlay path, no reordering).
pub fn flow_hash(frame: &[u8]) -> u32 {
    // FNV-1a over the fields: cheap, and stable across versions.
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for b in bytes {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
    };
    let Some(l2) = frame.get(..14) else {
        eat(frame);
        return h;
    };
    eat(l2);
    if l2[12..14] == [0x08, 0x00] {
        if let Some(ip) = frame.get(14..34) {
            eat(&ip[9..10]);
            eat(&ip[12..20]);
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let first_fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
            if first_fragment && matches!(ip[9], 6 | 17) {
                if let Some(ports) = frame.get(14 + ihl..14 + ihl + 4) {
                    eat(ports);
                }
            }
        }
    }
    h
}

/// Overlay networks by VNI and their tunnel ports by remote VTEP.
#[derive(Debug, Default, Clone)]
pub struct Tunnels {
    vnis: HashMap<u32, NetId>,
    ports: HashMap<(u32, Ipv4Addr), PortId>,
    /// VNIs whose networks accept a datagram from an unknown VTEP as a new peer.
    learning: std::collections::HashSet<u32>,
    /// VNIs of encrypted networks: their datagrams count only when they came out of a
    /// WireGuard session (`demux_decrypted`), never as plain VXLAN.
    encrypted: std::collections::HashSet<u32>,
}

impl Tunnels {
    pub fn add_network(&mut self, vni: u32, net: NetId) {
        self.vnis.insert(vni, net);
    }

    /// `--learn-peers`: a datagram from an unknown VTEP for `vni` makes it a peer.
    pub fn set_learning(&mut self, vni: u32, learn: bool) {
        if learn {
            self.learning.insert(vni);
        } else {
            self.learning.remove(&vni);
        }
    }

    /// `--encrypted`: the VNI's datagrams are taken only from WireGuard sessions.
    pub fn set_encrypted(&mut self, vni: u32, encrypted: bool) {
        if encrypted {
            self.encrypted.insert(vni);
        } else {
            self.encrypted.remove(&vni);
        }
    }

    pub fn is_encrypted(&self, vni: u32) -> bool {
        self.encrypted.contains(&vni)
    }

    /// The network and VNI of a datagram from an unknown VTEP, if that network learns peers.
    pub fn learner(&self, datagram: &[u8]) -> Option<(u32, NetId)> {
        let vni = parse(datagram).ok()?;
        self.learning
            .contains(&vni)
            .then(|| self.vnis.get(&vni).map(|n| (vni, *n)))
            .flatten()
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
            self.learning.remove(&v);
            self.encrypted.remove(&v);
            self.ports.retain(|(pv, _), _| *pv != v);
        }
    }

    pub fn network_of(&self, vni: u32) -> Option<NetId> {
        self.vnis.get(&vni).copied()
    }

    pub fn add_tunnel(&mut self, vni: u32, remote: Ipv4Addr, port: PortId) {
        self.ports.insert((vni, remote), port);
    }

    /// The VNI and remote VTEP of a tunnel port (a scan: for traces and views, not per packet).
    pub fn tunnel_of(&self, port: PortId) -> Option<(u32, Ipv4Addr)> {
        self.ports
            .iter()
            .find(|(_, p)| **p == port)
            .map(|((vni, ip), _)| (*vni, *ip))
    }

    pub fn remove_tunnel(&mut self, port: PortId) {
        self.ports.retain(|_, p| *p != port);
    }

    /// The tunnel port a datagram from `src` came in on, or why it is dropped.
    /// The tunnel port a plain VXLAN datagram from `src` comes in on. An encrypted network's
    /// VNI is refused here (`unencrypted`): its datagrams come out of WireGuard only.
    pub fn demux(&self, src: Ipv4Addr, datagram: &[u8]) -> Result<PortId, DropReason> {
        let vni = parse(datagram)?;
        if self.encrypted.contains(&vni) {
            return Err(DropReason::Unencrypted);
        }
        self.lookup(vni, src)
    }

    /// The tunnel port a VXLAN datagram decrypted from the WireGuard session of the peer
    /// whose tunnel address is `src` comes in on: encrypted networks only (a plain network's
    /// datagrams have no business inside a session).
    pub fn demux_decrypted(&self, src: Ipv4Addr, datagram: &[u8]) -> Result<PortId, DropReason> {
        let vni = parse(datagram)?;
        if !self.encrypted.contains(&vni) {
            return Err(DropReason::UnknownVni);
        }
        self.lookup(vni, src)
    }

    fn lookup(&self, vni: u32, src: Ipv4Addr) -> Result<PortId, DropReason> {
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
    fn flow_hash_follows_the_flow() {
        let tcp = |sport: u16| {
            let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
                .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(sport, 80, 1, 1000);
            let mut v = Vec::new();
            b.write(&mut v, b"x").unwrap();
            v
        };
        assert_eq!(flow_hash(&tcp(1000)), flow_hash(&tcp(1000)));
        let spread: std::collections::HashSet<usize> = (1000..1064)
            .map(|p| flow_hash(&tcp(p)) as usize % 8)
            .collect();
        assert!(spread.len() >= 6, "64 flows over 8 sockets: {spread:?}");
        assert_ne!(flow_hash(&[0u8; 3]), flow_hash(&[1u8; 3]), "runts hash too");
    }

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
