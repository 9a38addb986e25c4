//! Zero-copy view of an IPv4 header and the TCP/UDP/ICMP words NAT rewrites, in the smoltcp
//! style: offsets live in `mod field`, nothing else touches raw offsets. Hand-written because
//! routing and NAT read and rewrite these few fields on every packet, in place, and update the
//! checksums incrementally ([`super::checksum`]); the gateway's replies use etherparse.

use std::net::Ipv4Addr;

use super::checksum::{update16, update32, update32_partial};

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLAGS_FRAG: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// Fields of the transport headers (offsets from the start of the L4 header).
pub mod l4 {
    use std::ops::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const UDP_CHECKSUM: Range<usize> = 6..8;
    pub const TCP_FLAGS: usize = 13;
    pub const TCP_DATA_OFF: usize = 12;
    pub const TCP_CHECKSUM: Range<usize> = 16..18;
    pub const ICMP_TYPE: usize = 0;
    pub const ICMP_CHECKSUM: Range<usize> = 2..4;
    pub const ICMP_ECHO_ID: Range<usize> = 4..6;
}

pub const MIN_HEADER_LEN: usize = 20;
pub const DONT_FRAGMENT: u16 = 0x4000;
pub const MORE_FRAGMENTS: u16 = 0x2000;
pub const FRAG_OFFSET: u16 = 0x1fff;

pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_DEST_UNREACHABLE: u8 = 3;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMP_TIME_EXCEEDED: u8 = 11;
pub const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// Why bytes are not an IPv4 header we can work on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadHeader;

/// A view of an IPv4 packet (header and payload) over a buffer that may have trailing padding.
#[derive(Debug)]
pub struct Ipv4<T: AsRef<[u8]>> {
    buf: T,
}

#[inline]
fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}

impl<T: AsRef<[u8]>> Ipv4<T> {
    /// Checks version, header length and total length against the buffer.
    pub fn new_checked(buf: T) -> Result<Ipv4<T>, BadHeader> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN || b[field::VER_IHL] >> 4 != 4 {
            return Err(BadHeader);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        let total = usize::from(be16(&b[field::LENGTH]));
        // A TSO super-frame's total length may be 0 or not match: the caller passes `gso`
        // frames through `new_gso`.
        if ihl < MIN_HEADER_LEN || total < ihl || total > b.len() {
            return Err(BadHeader);
        }
        Ok(Ipv4 { buf })
    }

    /// Like `new_checked`, but for a TSO/GSO super-frame whose total length is not checked
    /// against the buffer (the offload sets it per segment).
    pub fn new_gso(buf: T) -> Result<Ipv4<T>, BadHeader> {
        let b = buf.as_ref();
        if b.len() < MIN_HEADER_LEN || b[field::VER_IHL] >> 4 != 4 {
            return Err(BadHeader);
        }
        let ihl = usize::from(b[field::VER_IHL] & 0x0f) * 4;
        if ihl < MIN_HEADER_LEN || ihl > b.len() {
            return Err(BadHeader);
        }
        Ok(Ipv4 { buf })
    }

    fn b(&self) -> &[u8] {
        self.buf.as_ref()
    }

    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }
    pub fn total_len(&self) -> usize {
        usize::from(be16(&self.b()[field::LENGTH]))
    }
    pub fn ident(&self) -> u16 {
        be16(&self.b()[field::IDENT])
    }
    fn flags_frag(&self) -> u16 {
        be16(&self.b()[field::FLAGS_FRAG])
    }
    pub fn dont_frag(&self) -> bool {
        self.flags_frag() & DONT_FRAGMENT != 0
    }
    pub fn more_frags(&self) -> bool {
        self.flags_frag() & MORE_FRAGMENTS != 0
    }
    /// Fragment offset in bytes.
    pub fn frag_offset(&self) -> usize {
        usize::from(self.flags_frag() & FRAG_OFFSET) * 8
    }
    /// Part of a fragmented datagram (first or later).
    pub fn is_fragment(&self) -> bool {
        self.more_frags() || self.frag_offset() != 0
    }
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }
    pub fn protocol(&self) -> u8 {
        self.b()[field::PROTOCOL]
    }
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(<[u8; 4]>::try_from(&self.b()[field::SRC]).unwrap_or_default())
    }
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(<[u8; 4]>::try_from(&self.b()[field::DST]).unwrap_or_default())
    }
    /// The bytes after the header, up to the total length (or the buffer for a GSO frame).
    pub fn payload(&self) -> &[u8] {
        let b = self.b();
        let end = self.total_len().clamp(self.header_len(), b.len());
        let end = if end == self.header_len() {
            b.len()
        } else {
            end
        };
        &b[self.header_len()..end]
    }
}

/// How a TCP/UDP checksum field is to be updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Sum {
    /// A complete checksum (update every changed word).
    Full,
    /// A pending pseudo-header sum (virtio NEEDS_CSUM): only address changes apply.
    Partial,
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }

    fn header_checksum(&self) -> u16 {
        be16(&self.b()[field::CHECKSUM])
    }

    fn set_header_checksum(&mut self, c: u16) {
        self.bm()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }

    /// Decrements the TTL, updating the header checksum.
    pub fn decrement_ttl(&mut self) {
        let ttl = self.ttl();
        let old = u16::from_be_bytes([ttl, self.protocol()]);
        let new = u16::from_be_bytes([ttl.wrapping_sub(1), self.protocol()]);
        self.bm()[field::TTL] = ttl.wrapping_sub(1);
        let c = update16(self.header_checksum(), old, new);
        self.set_header_checksum(c);
    }

    /// Sets the IP identification, updating the header checksum.
    pub fn set_ident(&mut self, id: u16) {
        let old = self.ident();
        self.bm()[field::IDENT].copy_from_slice(&id.to_be_bytes());
        let c = update16(self.header_checksum(), old, id);
        self.set_header_checksum(c);
    }

    /// Rewrites the source (or destination) address, updating the header checksum and, when
    /// this packet carries the start of a TCP/UDP header, the pseudo-header part of its checksum.
    pub fn set_addr(&mut self, dst: bool, addr: Ipv4Addr, sum: L4Sum) {
        let range = if dst { field::DST } else { field::SRC };
        let old =
            u32::from_be_bytes(<[u8; 4]>::try_from(&self.b()[range.clone()]).unwrap_or_default());
        let new = u32::from(addr);
        self.bm()[range].copy_from_slice(&addr.octets());
        let c = update32(self.header_checksum(), old, new);
        self.set_header_checksum(c);
        if self.frag_offset() != 0 {
            return; // no transport header in a later fragment
        }
        let at = match self.protocol() {
            PROTO_TCP => l4::TCP_CHECKSUM,
            PROTO_UDP => l4::UDP_CHECKSUM,
            _ => return, // ICMP's checksum has no pseudo header
        };
        let hl = self.header_len();
        let Some(f) = self.bm().get_mut(hl + at.start..hl + at.end) else {
            return;
        };
        let field = be16(f);
        let proto_udp = self.protocol() == PROTO_UDP;
        if proto_udp && field == 0 && sum == L4Sum::Full {
            return; // UDP without a checksum
        }
        let mut n = match sum {
            L4Sum::Full => update32(field, old, new),
            L4Sum::Partial => update32_partial(field, old, new),
        };
        if proto_udp && n == 0 && sum == L4Sum::Full {
            n = 0xffff;
        }
        let hl = self.header_len();
        self.bm()[hl + at.start..hl + at.end].copy_from_slice(&n.to_be_bytes());
    }

    /// Rewrites a 16-bit word of the transport header (a port, an ICMP identifier) at `off`,
    /// updating the transport checksum (which, for a pending checksum, needs no change).
    pub fn set_l4_word(&mut self, off: usize, value: u16, sum: L4Sum) -> Result<(), BadHeader> {
        let hl = self.header_len();
        let proto = self.protocol();
        let b = self.bm();
        let w = b.get_mut(hl + off..hl + off + 2).ok_or(BadHeader)?;
        let old = be16(w);
        w.copy_from_slice(&value.to_be_bytes());
        let at = match proto {
            PROTO_TCP => l4::TCP_CHECKSUM,
            PROTO_UDP => l4::UDP_CHECKSUM,
            PROTO_ICMP => l4::ICMP_CHECKSUM,
            _ => return Ok(()),
        };
        if sum == L4Sum::Partial && proto != PROTO_ICMP {
            return Ok(());
        }
        let Some(f) = b.get_mut(hl + at.start..hl + at.end) else {
            return Ok(()); // a truncated copy (inside an ICMP error): nothing to keep valid
        };
        let field = be16(f);
        if proto == PROTO_UDP && field == 0 {
            return Ok(());
        }
        let mut n = update16(field, old, value);
        if proto == PROTO_UDP && n == 0 {
            n = 0xffff;
        }
        f.copy_from_slice(&n.to_be_bytes());
        Ok(())
    }

    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        let total = self.total_len();
        let b = self.bm();
        let end = if total > hl && total <= b.len() {
            total
        } else {
            b.len()
        };
        &mut b[hl..end]
    }
}

/// The 16-bit word at `at` of `b`, if present.
#[inline]
pub fn word(b: &[u8], at: std::ops::Range<usize>) -> Option<u16> {
    b.get(at).map(be16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    fn udp_packet() -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 1, 0, 2], [192, 0, 2, 9], 64).udp(40000, 53);
        let mut v = Vec::new();
        b.write(&mut v, b"query").unwrap();
        v
    }

    fn tcp_packet() -> Vec<u8> {
        let b = PacketBuilder::ipv4([10, 1, 0, 2], [192, 0, 2, 9], 64)
            .tcp(40000, 80, 1, 65535)
            .syn();
        let mut v = Vec::new();
        b.write(&mut v, b"").unwrap();
        v
    }

    fn checksums_valid(p: &[u8]) -> bool {
        let s = SlicedPacket::from_ip(p).unwrap();
        let etherparse::NetSlice::Ipv4(ip) = s.net.unwrap() else {
            panic!()
        };
        let h = ip.header().to_header();
        if h.header_checksum != h.calc_header_checksum() {
            return false;
        }
        match s.transport.unwrap() {
            TransportSlice::Udp(u) => {
                let hdr = u.to_header();
                hdr.checksum == hdr.calc_checksum_ipv4(&h, u.payload()).unwrap()
            }
            TransportSlice::Tcp(t) => {
                let hdr = t.to_header();
                hdr.checksum == hdr.calc_checksum_ipv4(&h, t.payload()).unwrap()
            }
            _ => true,
        }
    }

    #[test]
    fn rewrites_keep_every_checksum_valid() {
        for mut p in [udp_packet(), tcp_packet()] {
            let mut ip = Ipv4::new_checked(&mut p[..]).unwrap();
            ip.set_addr(false, Ipv4Addr::new(198, 51, 100, 7), L4Sum::Full);
            ip.set_l4_word(l4::SRC_PORT.start, 61001, L4Sum::Full)
                .unwrap();
            ip.decrement_ttl();
            ip.set_ident(0xbeef);
            assert_eq!(ip.src(), Ipv4Addr::new(198, 51, 100, 7));
            assert_eq!(ip.ttl(), 63);
            assert!(checksums_valid(&p));
        }
    }

    #[test]
    fn rejects_what_is_not_ipv4() {
        assert!(Ipv4::new_checked(&[0x45u8; 10][..]).is_err());
        let mut p = udp_packet();
        p[0] = 0x65; // version 6
        assert!(Ipv4::new_checked(&p[..]).is_err());
        let mut p = udp_packet();
        p[3] = 0xff; // total length beyond the buffer
        assert!(Ipv4::new_checked(&p[..]).is_err());
    }
}
