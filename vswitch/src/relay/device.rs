//! The relay's side of its port, as smoltcp sees it: an IP device (`Medium::Ip`) over the
//! socketpair, framing each packet as the dataplane's ports do (a virtio-net header, then
//! Ethernet).
//!
//! - Received: frames the pipeline sent to the relay (containers' packets to the gateway's
//!   address on the relay's ports). The Ethernet header is dropped; the sender's MAC is kept
//!   for the answers. A TSO super-frame from a container's TAP is taken whole (smoltcp takes
//!   a segment of any length its window allows) and its partial checksum is not checked:
//!   it comes from a TAP on this host, through memory.
//! - Sent: TCP leaves with its checksum pending (`F_NEEDS_CSUM`, the pseudo-header's sum in
//!   the field, as a TSO-capable NIC is given it), and smoltcp's segments longer than the
//!   path's MSS go as one TSO super-frame (`GSO_TCPV4`): a container's TAP takes it as is,
//!   other ports get it segmented by the dataplane. This is what makes the relay's upload
//!   direction one write per 64 KiB instead of one per 1448 bytes.
//!
//! Hand-written (a few header bytes each way) because it runs per packet.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::unix::net::UnixDatagram;

use smoltcp::phy::{self, Checksum, DeviceCapabilities, Medium, PacketMeta};
use smoltcp::time::Instant;

use crate::ports::tap::VNET_HDR_LEN;
use crate::wire::checksum::{fold, sum16};
use crate::wire::mac::MacAddr;
use crate::wire::offload::{F_NEEDS_CSUM, GSO_TCPV4};

const ETH: usize = 14;
const HEAD: usize = VNET_HDR_LEN + ETH;
/// The largest packet either way: a TSO super-frame.
pub const MAX_PACKET: usize = 65535;

pub struct Device {
    sock: UnixDatagram,
    rx: Vec<u8>,
    tx: Vec<u8>,
    gw_mac: MacAddr,
    /// The network's IP MTU (what a container's port has).
    mtu: usize,
    /// Containers' MACs by address: from what they sent, or told (`learn`).
    neigh: HashMap<Ipv4Addr, MacAddr>,
    /// Frames the relay could not send (the dataplane's end full), and received frames that
    /// were not IPv4.
    pub tx_dropped: u64,
    pub rx_dropped: u64,
}

impl Device {
    pub fn new(sock: UnixDatagram, gw_mac: MacAddr, mtu: usize) -> Device {
        Device {
            sock,
            rx: vec![0; HEAD + MAX_PACKET],
            tx: vec![0; HEAD + MAX_PACKET],
            gw_mac,
            mtu,
            neigh: HashMap::new(),
            tx_dropped: 0,
            rx_dropped: 0,
        }
    }

    pub fn sock(&self) -> &UnixDatagram {
        &self.sock
    }

    /// A container's MAC, known before it sends anything (a published port's target).
    pub fn learn(&mut self, ip: Ipv4Addr, mac: MacAddr) {
        self.neigh.insert(ip, mac);
    }
}

pub struct RxToken<'a> {
    packet: &'a [u8],
}

pub struct TxToken<'a> {
    sock: &'a UnixDatagram,
    buf: &'a mut [u8],
    gw_mac: MacAddr,
    neigh: &'a HashMap<Ipv4Addr, MacAddr>,
    meta: PacketMeta,
    dropped: &'a mut u64,
}

impl phy::Device for Device {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        loop {
            let n = match self.sock.recv(&mut self.rx) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
                Err(_) => return None,
            };
            let f = &self.rx[..n];
            if n < HEAD + 20 || f[VNET_HDR_LEN + 12..HEAD] != [0x08, 0x00] || f[HEAD] >> 4 != 4 {
                self.rx_dropped += 1;
                continue;
            }
            let src = Ipv4Addr::new(f[HEAD + 12], f[HEAD + 13], f[HEAD + 14], f[HEAD + 15]);
            let mut mac = [0; 6];
            mac.copy_from_slice(&f[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12]);
            if self.neigh.get(&src) != Some(&MacAddr(mac)) {
                self.neigh.insert(src, MacAddr(mac));
            }
            // The IP packet as its header sizes it (an Ethernet pad dropped).
            let total = usize::from(u16::from_be_bytes([f[HEAD + 2], f[HEAD + 3]]));
            let end = (HEAD + total).min(n);
            return Some((
                RxToken {
                    packet: &self.rx[HEAD..end],
                },
                TxToken {
                    sock: &self.sock,
                    buf: &mut self.tx,
                    gw_mac: self.gw_mac,
                    neigh: &self.neigh,
                    meta: PacketMeta::default(),
                    dropped: &mut self.tx_dropped,
                },
            ));
        }
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        Some(TxToken {
            sock: &self.sock,
            buf: &mut self.tx,
            gw_mac: self.gw_mac,
            neigh: &self.neigh,
            meta: PacketMeta::default(),
            dropped: &mut self.tx_dropped,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        caps.max_burst_size = None;
        // Checked by no one on the way in (see the module's note); TCP's is finished on the
        // way out by whoever takes the frame (`F_NEEDS_CSUM`), as segmentation needs.
        caps.checksum.ipv4 = Checksum::Tx;
        caps.checksum.udp = Checksum::Tx;
        caps.checksum.tcp = Checksum::None;
        caps.checksum.icmpv4 = Checksum::Tx;
        caps.segmentation.tcpv4 = std::num::NonZeroUsize::new(MAX_PACKET);
        caps
    }
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F>(self, f: F) -> R
    where
        F: FnOnce(&[u8]) -> R,
    {
        f(self.packet)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F>(self, len: usize, f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let len = len.min(MAX_PACKET);
        let r = f(&mut self.buf[HEAD..HEAD + len]);
        let mss = self.meta.segmentation_offload_size.map(|m| m.get());
        let n = frame(self.buf, len, self.gw_mac, self.neigh, mss);
        if self.sock.send(&self.buf[..n]).is_err() {
            *self.dropped += 1;
        }
        r
    }

    fn set_meta(&mut self, meta: PacketMeta) {
        self.meta = meta;
    }
}

/// Puts the virtio-net and Ethernet headers before the IP packet of `len` bytes at
/// `buf[HEAD..]` (and, for TCP, the pseudo-header's sum in its checksum field): the datagram's
/// length.
fn frame(
    buf: &mut [u8],
    len: usize,
    gw_mac: MacAddr,
    neigh: &HashMap<Ipv4Addr, MacAddr>,
    mss: Option<u16>,
) -> usize {
    let (hdr, rest) = buf.split_at_mut(HEAD);
    let ip = &mut rest[..len];
    hdr[..VNET_HDR_LEN].fill(0);
    let dst = match ip.get(16..20) {
        Some(d) => Ipv4Addr::new(d[0], d[1], d[2], d[3]),
        None => Ipv4Addr::BROADCAST,
    };
    let dst_mac = neigh.get(&dst).copied().unwrap_or(MacAddr::BROADCAST);
    hdr[VNET_HDR_LEN..VNET_HDR_LEN + 6].copy_from_slice(&dst_mac.0);
    hdr[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12].copy_from_slice(&gw_mac.0);
    hdr[VNET_HDR_LEN + 12..HEAD].copy_from_slice(&[0x08, 0x00]);
    if len >= 20 && ip[9] == 6 {
        let ihl = usize::from(ip[0] & 0x0f) * 4;
        if len >= ihl + 20 {
            let l4 = len - ihl;
            // The pseudo-header: addresses, protocol and the TCP length.
            let mut acc = sum16(&ip[12..20], 0);
            acc += 6 + l4 as u32;
            let sum = fold(acc);
            ip[ihl + 16..ihl + 18].copy_from_slice(&sum.to_be_bytes());
            let csum_start = (ETH + ihl) as u16;
            hdr[0] = F_NEEDS_CSUM;
            hdr[6..8].copy_from_slice(&csum_start.to_le_bytes());
            hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
            let thl = usize::from(ip[ihl + 12] >> 4) * 4;
            if let Some(mss) = mss.filter(|&m| l4 > thl + usize::from(m)) {
                hdr[1] = GSO_TCPV4;
                hdr[2..4].copy_from_slice(&((ETH + ihl + thl) as u16).to_le_bytes());
                hdr[4..6].copy_from_slice(&mss.to_le_bytes());
            }
        }
    }
    HEAD + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::checksum::checksum;
    use crate::wire::offload::VnetHdr;

    /// An IPv4/TCP packet from 10.0.0.1:40000 to 10.0.0.2:80 with `payload` bytes.
    fn tcp(payload: usize) -> Vec<u8> {
        let mut p = vec![0u8; 40 + payload];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&((40 + payload) as u16).to_be_bytes());
        p[8] = 64;
        p[9] = 6;
        p[12..16].copy_from_slice(&[10, 0, 0, 1]);
        p[16..20].copy_from_slice(&[10, 0, 0, 2]);
        p[20..22].copy_from_slice(&40000u16.to_be_bytes());
        p[22..24].copy_from_slice(&80u16.to_be_bytes());
        p[32] = 0x50;
        for (i, b) in p[40..].iter_mut().enumerate() {
            *b = i as u8;
        }
        p
    }

    #[test]
    fn tcp_goes_with_its_checksum_pending_and_long_segments_as_tso() {
        let gw = MacAddr([2, 0, 0, 0, 0, 1]);
        let c = MacAddr([2, 0, 0, 0, 0, 2]);
        let neigh = HashMap::from([(Ipv4Addr::new(10, 0, 0, 2), c)]);
        let pkt = tcp(4000);
        let mut buf = vec![0; HEAD + pkt.len()];
        buf[HEAD..].copy_from_slice(&pkt);
        let n = frame(&mut buf, pkt.len(), gw, &neigh, Some(1448));
        assert_eq!(n, HEAD + pkt.len());
        let h = VnetHdr::parse(&buf[..VNET_HDR_LEN]).unwrap();
        assert_eq!(h.flags, F_NEEDS_CSUM);
        assert_eq!(h.gso_type, GSO_TCPV4);
        assert_eq!((h.gso_size, h.hdr_len), (1448, 14 + 40));
        assert_eq!((h.csum_start, h.csum_offset), (34, 16));
        assert_eq!(&buf[VNET_HDR_LEN..VNET_HDR_LEN + 6], &c.0);
        assert_eq!(&buf[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12], &gw.0);
        // Finishing the checksum as a NIC does gives the packet's true checksum.
        let ip = &mut buf[HEAD..];
        let seeded = u16::from_be_bytes([ip[36], ip[37]]);
        ip[36..38].fill(0);
        let finished = checksum(&ip[20..], u32::from(seeded));
        let mut acc = sum16(&ip[12..20], 0) + 6 + (ip.len() - 20) as u32;
        acc = sum16(&ip[20..], acc);
        assert_eq!(finished, !fold(acc));
    }

    #[test]
    fn short_segments_and_unknown_neighbours() {
        let gw = MacAddr([2, 0, 0, 0, 0, 1]);
        let pkt = tcp(100);
        let mut buf = vec![0; HEAD + pkt.len()];
        buf[HEAD..].copy_from_slice(&pkt);
        frame(&mut buf, pkt.len(), gw, &HashMap::new(), Some(1448));
        let h = VnetHdr::parse(&buf[..VNET_HDR_LEN]).unwrap();
        assert_eq!(h.gso_type, 0, "one segment is no TSO frame");
        assert_eq!(h.flags, F_NEEDS_CSUM);
        assert_eq!(&buf[VNET_HDR_LEN..VNET_HDR_LEN + 6], &[0xff; 6]);
        // Not TCP: no offload asked.
        let mut udp = pkt.clone();
        udp[9] = 17;
        buf[HEAD..].copy_from_slice(&udp);
        frame(&mut buf, udp.len(), gw, &HashMap::new(), None);
        assert_eq!(&buf[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
    }
}
