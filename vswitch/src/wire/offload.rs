//! Software offloads: what a port without a virtio-net header cannot take — TSO/USO super-frames
//! and checksum-pending frames — is finished here: segmented at the MSS with every header fixed
//! up, and checksummed. Hand-written because it runs per segment on the forwarding path and must
//! not allocate (segments are written into a caller buffer and handed to a callback).

/// The virtio-net header a TAP with `IFF_VNET_HDR` puts before each frame (first 10 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

pub const F_NEEDS_CSUM: u8 = 1;
pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
pub const GSO_ECN: u8 = 0x80;

impl VnetHdr {
    /// Reads the header (little-endian, as the kernel writes it on x86 and arm64).
    pub fn parse(b: &[u8]) -> Option<VnetHdr> {
        if b.len() < 10 {
            return None;
        }
        let u16le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Some(VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u16le(2),
            gso_size: u16le(4),
            csum_start: u16le(6),
            csum_offset: u16le(8),
        })
    }

    /// Does the frame need work a plain port cannot do?
    pub fn needs_work(&self) -> bool {
        self.flags & F_NEEDS_CSUM != 0 || self.gso_type & !GSO_ECN != GSO_NONE
    }
}

/// Why a frame could not be finished in software.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffloadError {
    /// Not Ethernet + IPv4/IPv6 + TCP/UDP as the header says, or lengths that do not add up.
    Malformed,
    /// A GSO kind this switch does not segment (UFO fragmentation).
    Unsupported,
    /// A segment would not fit the output buffer.
    TooBig,
}

use super::checksum::{checksum, sum16};

/// Layout of the headers of a frame.
struct Layout {
    l3: usize,
    l4: usize,
    payload: usize,
    v6: bool,
    tcp: bool,
}

fn layout(frame: &[u8]) -> Result<Layout, OffloadError> {
    use OffloadError::Malformed;
    if frame.len() < 14 {
        return Err(Malformed);
    }
    let l3 = 14;
    let ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    let (v6, proto, l4) = match ethertype {
        0x0800 => {
            let ihl = usize::from(frame.get(l3).ok_or(Malformed)? & 0x0f) * 4;
            if ihl < 20 || frame.len() < l3 + ihl {
                return Err(Malformed);
            }
            (false, frame[l3 + 9], l3 + ihl)
        }
        // IPv6 without extension headers (what TSO/USO produce).
        0x86dd if frame.len() >= l3 + 40 => (true, frame[l3 + 6], l3 + 40),
        _ => return Err(Malformed),
    };
    let (tcp, hlen) = match proto {
        6 => {
            let doff = usize::from(*frame.get(l4 + 12).ok_or(Malformed)? >> 4) * 4;
            // A TCP header is at least 20 bytes: a smaller data offset left the flags and the
            // checksum past the frame's end (found by fuzzing).
            if doff < 20 {
                return Err(Malformed);
            }
            (true, doff)
        }
        17 => (false, 8),
        _ => return Err(Malformed),
    };
    if hlen < 8 || frame.len() < l4 + hlen {
        return Err(Malformed);
    }
    Ok(Layout {
        l3,
        l4,
        payload: l4 + hlen,
        v6,
        tcp,
    })
}

/// Sum of the pseudo header for an L4 segment of `l4_len` bytes.
fn pseudo(frame: &[u8], lay: &Layout, l4_len: usize) -> u32 {
    let proto: u32 = if lay.tcp { 6 } else { 17 };
    let addrs = if lay.v6 {
        &frame[lay.l3 + 8..lay.l3 + 40]
    } else {
        &frame[lay.l3 + 12..lay.l3 + 20]
    };
    sum16(addrs, proto + l4_len as u32)
}

/// Fixes lengths and checksums of one finished segment in place.
fn finish(seg: &mut [u8], lay: &Layout, ip_id: Option<u16>) {
    let l4_len = seg.len() - lay.l4;
    if lay.v6 {
        seg[lay.l3 + 4..lay.l3 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    } else {
        let total = (seg.len() - lay.l3) as u16;
        seg[lay.l3 + 2..lay.l3 + 4].copy_from_slice(&total.to_be_bytes());
        if let Some(id) = ip_id {
            seg[lay.l3 + 4..lay.l3 + 6].copy_from_slice(&id.to_be_bytes());
        }
        seg[lay.l3 + 10..lay.l3 + 12].copy_from_slice(&[0, 0]);
        let c = checksum(&seg[lay.l3..lay.l4], 0);
        seg[lay.l3 + 10..lay.l3 + 12].copy_from_slice(&c.to_be_bytes());
    }
    if !lay.tcp {
        seg[lay.l4 + 4..lay.l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    }
    let at = lay.l4 + if lay.tcp { 16 } else { 6 };
    seg[at..at + 2].copy_from_slice(&[0, 0]);
    let mut c = checksum(&seg[lay.l4..], pseudo(seg, lay, l4_len));
    if !lay.tcp && c == 0 {
        c = 0xffff; // UDP: zero means "no checksum"
    }
    seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
}

/// Turns `frame` (as received after `hdr`) into plain frames a port without offloads can send:
/// each is written into `buf` and passed to `emit`. Returns how many frames were emitted.
pub fn finish_frame(
    hdr: &VnetHdr,
    frame: &[u8],
    buf: &mut [u8],
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    let gso = hdr.gso_type & !GSO_ECN;
    if gso == GSO_NONE {
        if hdr.flags & F_NEEDS_CSUM == 0 {
            emit(frame);
            return Ok(1);
        }
        let seg = buf.get_mut(..frame.len()).ok_or(OffloadError::TooBig)?;
        seg.copy_from_slice(frame);
        match layout(seg) {
            Ok(lay) => finish(seg, &lay, None),
            Err(_) => {
                // Something else: the generic rule (sum from csum_start, store at the offset).
                let start = usize::from(hdr.csum_start);
                let at = start + usize::from(hdr.csum_offset);
                if at + 2 > seg.len() {
                    return Err(OffloadError::Malformed);
                }
                let c = checksum(&seg[start..], 0);
                seg[at..at + 2].copy_from_slice(&c.to_be_bytes());
            }
        }
        emit(seg);
        return Ok(1);
    }
    let lay = layout(frame)?;
    match (gso, lay.tcp, lay.v6) {
        (GSO_TCPV4, true, false) | (GSO_TCPV6, true, true) | (GSO_UDP_L4, false, _) => {}
        (GSO_UDP, ..) => return Err(OffloadError::Unsupported),
        _ => return Err(OffloadError::Malformed),
    }
    let mss = usize::from(hdr.gso_size);
    if mss == 0 {
        return Err(OffloadError::Malformed);
    }
    let headers = &frame[..lay.payload];
    let payload = &frame[lay.payload..];
    let ip_id = (!lay.v6).then(|| u16::from_be_bytes([frame[lay.l3 + 4], frame[lay.l3 + 5]]));
    let seq0 = lay
        .tcp
        .then(|| u32::from_be_bytes(frame[lay.l4 + 4..lay.l4 + 8].try_into().unwrap_or([0; 4])));
    let flags0 = if lay.tcp { frame[lay.l4 + 13] } else { 0 };
    let count = payload.len().div_ceil(mss).max(1);
    for (i, chunk) in payload.chunks(mss).enumerate() {
        let len = headers.len() + chunk.len();
        let seg = buf.get_mut(..len).ok_or(OffloadError::TooBig)?;
        seg[..headers.len()].copy_from_slice(headers);
        seg[headers.len()..].copy_from_slice(chunk);
        if let Some(seq0) = seq0 {
            let seq = seq0.wrapping_add((i * mss) as u32);
            seg[lay.l4 + 4..lay.l4 + 8].copy_from_slice(&seq.to_be_bytes());
            let mut flags = flags0;
            if i + 1 < count {
                flags &= !(0x01 | 0x08); // FIN and PSH only on the last segment
            }
            if i > 0 {
                flags &= !0x80; // CWR only on the first
            }
            seg[lay.l4 + 13] = flags;
        }
        finish(seg, &lay, ip_id.map(|id| id.wrapping_add(i as u16)));
        emit(seg);
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

    fn tcp_frame(payload_len: usize, v6: bool) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 % 251) as u8).collect();
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let mut out = Vec::new();
        if v6 {
            b.ipv6([0xfd; 16], [0xfe; 16], 64)
                .tcp(1000, 2000, 5000, 64000)
                .ack(77)
                .psh()
                .fin()
                .write(&mut out, &payload)
                .unwrap();
        } else {
            b.ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                .tcp(1000, 2000, 5000, 64000)
                .ack(77)
                .psh()
                .fin()
                .write(&mut out, &payload)
                .unwrap();
        }
        out
    }

    /// Checks every emitted segment's checksums with etherparse and returns (seq, flags, payload).
    fn verify(segs: &[Vec<u8>]) -> Vec<(u32, bool, bool, Vec<u8>)> {
        segs.iter()
            .map(|s| {
                let p = SlicedPacket::from_ethernet(s).unwrap();
                let Some(TransportSlice::Tcp(tcp)) = &p.transport else {
                    panic!("not tcp")
                };
                match &p.net {
                    Some(NetSlice::Ipv4(ip)) => {
                        let h = ip.header().to_header();
                        assert_eq!(
                            h.header_checksum,
                            h.calc_header_checksum(),
                            "IPv4 header checksum"
                        );
                        let want = tcp
                            .to_header()
                            .calc_checksum_ipv4(&h, tcp.payload())
                            .unwrap();
                        assert_eq!(tcp.checksum(), want, "TCP checksum");
                    }
                    Some(NetSlice::Ipv6(ip)) => {
                        let h = ip.header().to_header();
                        let want = tcp
                            .to_header()
                            .calc_checksum_ipv6(&h, tcp.payload())
                            .unwrap();
                        assert_eq!(tcp.checksum(), want, "TCP checksum");
                    }
                    _ => panic!(),
                }
                (
                    tcp.sequence_number(),
                    tcp.fin(),
                    tcp.psh(),
                    tcp.payload().to_vec(),
                )
            })
            .collect()
    }

    fn segment(frame: &[u8], gso_type: u8, mss: u16) -> Vec<Vec<u8>> {
        let hdr = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type,
            hdr_len: 54,
            gso_size: mss,
            csum_start: 34,
            csum_offset: 16,
        };
        let mut buf = vec![0u8; 9000];
        let mut out = Vec::new();
        finish_frame(&hdr, frame, &mut buf, |s| out.push(s.to_vec())).unwrap();
        out
    }

    #[test]
    fn tso_v4_segments_with_correct_headers() {
        let mut f = tcp_frame(10_000, false);
        f[50..52].copy_from_slice(&[0x12, 0x34]); // a partial checksum, as the kernel leaves it
        let segs = segment(&f, GSO_TCPV4, 1448);
        assert_eq!(segs.len(), 7);
        let parsed = verify(&segs);
        let mut joined = Vec::new();
        for (i, (seq, fin, psh, data)) in parsed.iter().enumerate() {
            assert_eq!(*seq, 5000 + (i * 1448) as u32);
            assert_eq!((*fin, *psh), (i == 6, i == 6), "FIN/PSH only on the last");
            joined.extend_from_slice(data);
        }
        assert_eq!(joined, f[54..], "payload intact and in order");
        // IP ids count up.
        let ids: Vec<u16> = segs
            .iter()
            .map(|s| u16::from_be_bytes([s[18], s[19]]))
            .collect();
        assert_eq!(ids[1], ids[0].wrapping_add(1));
    }

    #[test]
    fn tso_v6() {
        let f = tcp_frame(4000, true);
        let segs = segment(&f, GSO_TCPV6, 1000);
        assert_eq!(segs.len(), 4);
        let joined: Vec<u8> = verify(&segs).into_iter().flat_map(|p| p.3).collect();
        assert_eq!(joined, f[74..]);
    }

    #[test]
    fn checksum_only() {
        let mut f = tcp_frame(300, false);
        let good = verify(&[f.clone()]);
        f[50..52].copy_from_slice(&[0xab, 0xcd]);
        let segs = segment(&f, GSO_NONE, 0);
        assert_eq!(segs.len(), 1);
        assert_eq!(verify(&segs), good);
        // Nothing to do: passed through as is.
        let hdr = VnetHdr {
            flags: 0,
            gso_type: 0,
            hdr_len: 0,
            gso_size: 0,
            csum_start: 0,
            csum_offset: 0,
        };
        let mut n = 0;
        finish_frame(&hdr, &f, &mut [], |s| {
            assert_eq!(s, &f[..]);
            n += 1
        })
        .unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn uso_v4() {
        let payload: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .udp(1000, 2000)
            .write(&mut f, &payload)
            .unwrap();
        let segs = segment(&f, GSO_UDP_L4, 1200);
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for s in &segs {
            let p = SlicedPacket::from_ethernet(s).unwrap();
            let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) = (&p.net, &p.transport)
            else {
                panic!()
            };
            let want = udp
                .to_header()
                .calc_checksum_ipv4(&ip.header().to_header(), udp.payload())
                .unwrap();
            assert_eq!(udp.checksum(), want);
            assert_eq!(usize::from(udp.length()), 8 + udp.payload().len());
            joined.extend_from_slice(udp.payload());
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let f = tcp_frame(100, false);
        let hdr = |gso, mss| VnetHdr {
            flags: 1,
            gso_type: gso,
            hdr_len: 0,
            gso_size: mss,
            csum_start: 999,
            csum_offset: 999,
        };
        let mut buf = vec![0u8; 9000];
        assert_eq!(
            finish_frame(&hdr(GSO_TCPV4, 0), &f, &mut buf, |_| {}),
            Err(OffloadError::Malformed)
        );
        assert_eq!(
            finish_frame(&hdr(GSO_TCPV6, 10), &f, &mut buf, |_| {}),
            Err(OffloadError::Malformed)
        );
        assert_eq!(
            finish_frame(&hdr(GSO_UDP, 10), &f, &mut buf, |_| {}),
            Err(OffloadError::Unsupported)
        );
        assert_eq!(
            finish_frame(&hdr(GSO_TCPV4, 10), &f[..30], &mut buf, |_| {}),
            Err(OffloadError::Malformed)
        );
        assert_eq!(
            finish_frame(&hdr(GSO_NONE, 0), &[0u8; 20], &mut buf, |_| {}),
            Err(OffloadError::Malformed)
        );
        assert_eq!(
            finish_frame(&hdr(GSO_TCPV4, 10), &f, &mut buf[..20], |_| {}),
            Err(OffloadError::TooBig)
        );
        for cut in 0..f.len() {
            let _ = finish_frame(&hdr(GSO_TCPV4, 8), &f[..cut], &mut buf, |_| {});
        }
    }

    /// Found by fuzzing (fuzz/regressions/pipeline/tso-tcp-data-offset-below-20): a TSO frame
    /// whose TCP data offset said fewer than 20 bytes passed the layout check and indexed the
    /// flags and checksum past the end of the frame. Now malformed (counted as needs_offload).
    #[test]
    fn tcp_data_offset_below_twenty_is_malformed_not_a_panic() {
        let f = tcp_frame(100, false);
        let mut buf = vec![0u8; 9000];
        for doff in 0u8..5 {
            // Cut the frame right after the short header it claims.
            let cut = 34 + usize::from(doff) * 4;
            for len in [cut.max(34 + 13), 34 + 20, f.len()] {
                let mut g = f[..len.min(f.len())].to_vec();
                g[34 + 12] = doff << 4;
                for gso in [GSO_TCPV4, GSO_NONE] {
                    let hdr = VnetHdr {
                        flags: F_NEEDS_CSUM,
                        gso_type: gso,
                        hdr_len: 54,
                        gso_size: 8,
                        csum_start: 34,
                        csum_offset: 16,
                    };
                    let r = finish_frame(&hdr, &g, &mut buf, |_| {});
                    if gso == GSO_TCPV4 {
                        assert_eq!(r, Err(OffloadError::Malformed), "doff {doff} len {len}");
                    }
                }
            }
        }
    }
}
