//! Port security: a container may speak only with the MAC and the IPv4 address the switch gave
//! its port. A pure check on the ingress frame, before anything is learned from it.
//!
//! Hand-written rather than parsed with etherparse: it runs on every frame of a secured port
//! and reads four fixed fields (the ethertype behind up to two VLAN tags, the IPv4 source and
//! protocol, the ARP sender), which needs no more than bounds-checked slicing.

use std::net::Ipv4Addr;

use super::DropReason;
use crate::wire::MacAddr;

/// What a secured port may send as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortGuard {
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
}

const ETH_IPV4: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_VLAN: u16 = 0x8100;
const ETH_QINQ: u16 = 0x88a8;
const UDP: u8 = 17;
const DHCP_SERVER_PORT: u16 = 67;

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ipv4_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

impl PortGuard {
    /// `Ok` when `frame` (a whole Ethernet frame, at least its 14-byte header) may leave the
    /// port; otherwise the reason it is dropped: another source MAC (`SpoofedMac`); an IPv4
    /// packet from another address (`SpoofedIp`), except a DHCP client's
    /// message from 0.0.0.0; an ARP packet whose sender is another MAC or another address
    /// (`SpoofedArp`: forged replies, gratuitous ARP for someone else's address), except an
    /// RFC 5227 probe from 0.0.0.0. A frame too short to tell is malformed: `Runt` (no
    /// ethertype behind its tags), `BadIp`, `BadArp`, as the gateway would count it. VLAN-tagged
    /// frames are checked on what they carry. Other
    /// protocols (IPv6: the switch does not route it) are checked on their MAC only.
    pub fn check(&self, frame: &[u8]) -> Result<(), DropReason> {
        if frame.get(6..12) != Some(&self.mac.0[..]) {
            return Err(DropReason::SpoofedMac);
        }
        let mut at = 12;
        let mut ethertype = be16(frame, at).ok_or(DropReason::Runt)?;
        for _ in 0..2 {
            if ethertype != ETH_VLAN && ethertype != ETH_QINQ {
                break;
            }
            at += 4;
            ethertype = be16(frame, at).ok_or(DropReason::Runt)?;
        }
        let l3 = at + 2;
        match ethertype {
            ETH_IPV4 => self.check_ipv4(frame, l3),
            ETH_ARP => self.check_arp(frame, l3),
            _ => Ok(()),
        }
    }

    fn check_ipv4(&self, frame: &[u8], l3: usize) -> Result<(), DropReason> {
        let src = ipv4_at(frame, l3 + 12).ok_or(DropReason::BadIp)?;
        if src == self.ip {
            return Ok(());
        }
        if src.is_unspecified() {
            // A DHCP client before it has its address: UDP to the server port.
            let ihl = usize::from(frame[l3] & 0x0f) * 4;
            let is_dhcp = frame.get(l3 + 9) == Some(&UDP)
                && ihl >= 20
                && be16(frame, l3 + ihl + 2) == Some(DHCP_SERVER_PORT);
            if is_dhcp {
                return Ok(());
            }
        }
        Err(DropReason::SpoofedIp)
    }

    fn check_arp(&self, frame: &[u8], l3: usize) -> Result<(), DropReason> {
        // htype(2) ptype(2) hlen(1) plen(1) op(2), then the sender's MAC and address.
        let sha = frame.get(l3 + 8..l3 + 14).ok_or(DropReason::BadArp)?;
        let spa = ipv4_at(frame, l3 + 14).ok_or(DropReason::BadArp)?;
        if sha != self.mac.0 || (spa != self.ip && !spa.is_unspecified()) {
            return Err(DropReason::SpoofedArp);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{ArpEthIpv4Packet, ArpOperation, PacketBuilder};

    const MAC: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 2]);
    const OTHER: MacAddr = MacAddr([0x02, 0x42, 10, 0, 0, 3]);
    const IP: [u8; 4] = [10, 0, 0, 2];
    const G: PortGuard = PortGuard {
        mac: MAC,
        ip: Ipv4Addr::new(10, 0, 0, 2),
    };

    fn udp(src: MacAddr, sip: [u8; 4], dport: u16) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2(src.0, [0xff; 6])
            .ipv4(sip, [10, 0, 0, 1], 64)
            .udp(68, dport)
            .write(&mut f, b"x")
            .unwrap();
        f
    }

    fn arp(src: MacAddr, sha: MacAddr, spa: [u8; 4], op: ArpOperation) -> Vec<u8> {
        let a = ArpEthIpv4Packet {
            operation: op,
            sender_mac: sha.0,
            sender_ipv4: spa,
            target_mac: [0; 6],
            target_ipv4: [10, 0, 0, 3],
        };
        let mut f = Vec::new();
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&0x0806u16.to_be_bytes());
        f.extend_from_slice(&a.to_bytes());
        f
    }

    #[test]
    fn its_own_mac_and_address_pass_and_others_are_spoofed() {
        assert_eq!(G.check(&udp(MAC, IP, 53)), Ok(()));
        assert_eq!(G.check(&udp(OTHER, IP, 53)), Err(DropReason::SpoofedMac));
        assert_eq!(
            G.check(&udp(MAC, [10, 0, 0, 3], 53)),
            Err(DropReason::SpoofedIp)
        );
        // DHCP from 0.0.0.0 passes; anything else from it does not.
        assert_eq!(G.check(&udp(MAC, [0; 4], 67)), Ok(()));
        assert_eq!(G.check(&udp(MAC, [0; 4], 53)), Err(DropReason::SpoofedIp));
        // IPv6 and other ethertypes: the MAC alone.
        let mut v6 = udp(MAC, IP, 53);
        v6[12..14].copy_from_slice(&0x86ddu16.to_be_bytes());
        v6[26..30].copy_from_slice(&[1, 2, 3, 4]);
        assert_eq!(G.check(&v6), Ok(()));
    }

    #[test]
    fn forged_arp_is_spoofed_and_probes_pass() {
        assert_eq!(G.check(&arp(MAC, MAC, IP, ArpOperation::REPLY)), Ok(()));
        assert_eq!(
            G.check(&arp(MAC, MAC, [10, 0, 0, 3], ArpOperation::REPLY)),
            Err(DropReason::SpoofedArp),
            "a reply claiming another address"
        );
        assert_eq!(
            G.check(&arp(MAC, MAC, [10, 0, 0, 3], ArpOperation::REQUEST)),
            Err(DropReason::SpoofedArp),
            "gratuitous ARP for another address"
        );
        assert_eq!(
            G.check(&arp(MAC, OTHER, IP, ArpOperation::REPLY)),
            Err(DropReason::SpoofedArp),
            "another sender MAC inside"
        );
        assert_eq!(
            G.check(&arp(MAC, MAC, [0; 4], ArpOperation::REQUEST)),
            Ok(()),
            "an address probe"
        );
    }

    #[test]
    fn vlan_tags_are_looked_through_and_short_frames_never_pass_or_panic() {
        let f = udp(MAC, [10, 0, 0, 9], 53);
        let mut tagged = f[..12].to_vec();
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x81, 0x00, 0x00, 0x06]);
        tagged.extend_from_slice(&f[12..]);
        assert_eq!(G.check(&tagged), Err(DropReason::SpoofedIp));
        let ok = udp(MAC, IP, 53);
        for n in 0..ok.len() {
            let r = G.check(&ok[..n]);
            // The source address ends at byte 30: anything shorter cannot be told.
            assert_eq!(r.is_err(), n < 30, "{n} bytes");
            if (14..30).contains(&n) {
                assert_eq!(
                    r,
                    Err(DropReason::BadIp),
                    "{n} bytes: malformed, not spoofed"
                );
            }
        }
        for n in 0..tagged.len() {
            assert!(G.check(&tagged[..n]).is_err());
        }
        let a = arp(MAC, MAC, IP, ArpOperation::REPLY);
        for n in 0..32 {
            assert!(G.check(&a[..n]).is_err(), "{n} bytes of ARP");
        }
    }
}
