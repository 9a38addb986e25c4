//! Receive coalescing (GRO) in userspace: consecutive TCP/IPv4 segments of one flow, on their
//! way to a TAP with a virtio-net header, are joined back into one TSO super-frame, as the
//! kernel's GRO would join them for a NIC. A VXLAN tunnel delivers a remote TCP stream as
//! MSS-sized frames; written one by one, each costs the container's stack a whole receive,
//! where one super-frame costs one. Hand-written: it runs on the forwarding path and must not
//! allocate.
//!
//! Segments join only as the kernel's GRO would join them: IPv4 without options or fragments,
//! the same addresses, ports, TTL, TOS, DF, ACK number, window and TCP options (so the same
//! timestamps), ACK (and PSH on the last) as their only flags, sequence numbers back to back,
//! every payload of the first's size but the last, which may be shorter — and every segment's
//! TCP checksum right (the super-frame goes up with its checksum marked as still to be done,
//! which the receiving stack trusts).

use super::checksum::{checksum, fold, sum16};
use super::offload::{F_NEEDS_CSUM, GSO_TCPV4};

/// Bytes of the super-frame's payload at most (its IPv4 total length must fit 16 bits).
const MAX_PAYLOAD: usize = 62 * 1024;
/// Segments joined into one at most.
pub const MAX_SEGMENTS: usize = 44;

const ETH: usize = 14;
const TCP_ACK: u8 = 0x10;
const TCP_PSH: u8 = 0x08;

/// A segment as the coalescer sees it.
#[derive(Debug, Clone, Copy)]
pub struct Segment {
    /// TCP header length.
    thl: usize,
    seq: u32,
    /// Bytes of TCP payload.
    pub payload: usize,
    flags: u8,
}

/// Reads a frame as a segment that may join others: `None` for anything else.
pub fn segment(frame: &[u8]) -> Option<Segment> {
    if frame.len() < ETH + 20 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH..];
    if ip[0] != 0x45 || ip[9] != 6 {
        return None; // IPv4 without options, TCP
    }
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    let frag = u16::from_be_bytes([ip[6], ip[7]]);
    if frag & 0x3fff != 0 || total != frame.len() - ETH {
        return None; // a fragment, or padding / a short frame
    }
    let tcp = &ip[20..];
    let thl = usize::from(tcp[12] >> 4) * 4;
    if thl < 20 || thl > tcp.len() {
        return None;
    }
    let flags = tcp[13];
    if flags & !(TCP_ACK | TCP_PSH) != 0 || flags & TCP_ACK == 0 {
        return None;
    }
    let payload = total - 20 - thl;
    if payload == 0 {
        return None; // pure ACKs go as they are
    }
    // The checksum over the pseudo-header and the segment must come out right.
    let len = (total - 20) as u32;
    let pseudo = sum16(&ip[12..20], 6 + len);
    if checksum(&tcp[..total - 20], pseudo) != 0 {
        return None;
    }
    Some(Segment {
        thl,
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
        payload,
        flags,
    })
}

/// Whether `next` continues the run `first` .. `last` (with `count` segments so far).
pub fn joins(
    first: (&[u8], &Segment),
    last: (&[u8], &Segment),
    next: (&[u8], &Segment),
    count: usize,
    bytes: usize,
) -> bool {
    let (f, fs) = first;
    let (_, ls) = last;
    let (n, ns) = next;
    let (fi, ni) = (&f[ETH..], &n[ETH..]);
    count < MAX_SEGMENTS
        && bytes + ns.payload <= MAX_PAYLOAD
        && ls.payload == fs.payload
        && ls.flags & TCP_PSH == 0
        && ns.payload <= fs.payload
        && ns.thl == fs.thl
        && ns.seq == ls.seq.wrapping_add(ls.payload as u32)
        // TOS, DF, TTL, protocol, addresses.
        && fi[1] == ni[1]
        && fi[6] == ni[6]
        && fi[8..10] == ni[8..10]
        && fi[12..20] == ni[12..20]
        // The Ethernet header, ports, ACK number, window and options.
        && f[..ETH] == n[..ETH]
        && fi[20..24] == ni[20..24]
        && fi[28..32] == ni[28..32]
        && fi[34..36] == ni[34..36]
        && fi[40..20 + fs.thl] == ni[40..20 + ns.thl]
}

/// Writes the run of `frames` (each a `Segment` that `joins` the one before) as one TSO
/// super-frame after a virtio-net header of `vnet_len` bytes into `out`.
pub fn write<'a>(frames: impl IntoIterator<Item = &'a [u8]>, vnet_len: usize, out: &mut Vec<u8>) {
    let mut frames = frames.into_iter();
    let Some(first) = frames.next() else {
        return;
    };
    let Some(fs) = segment(first) else {
        return;
    };
    let headers = ETH + 20 + fs.thl;
    out.clear();
    out.resize(vnet_len, 0);
    out[0] = F_NEEDS_CSUM;
    out[1] = GSO_TCPV4;
    out[2..4].copy_from_slice(&(headers as u16).to_le_bytes());
    out[4..6].copy_from_slice(&(fs.payload as u16).to_le_bytes());
    out[6..8].copy_from_slice(&((ETH + 20) as u16).to_le_bytes());
    out[8..10].copy_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(first);
    let mut psh = first[ETH + 20 + 13] & TCP_PSH;
    for f in frames {
        psh |= f[ETH + 20 + 13] & TCP_PSH;
        out.extend_from_slice(&f[headers..]);
    }
    let h = vnet_len;
    let total = out.len() - h - ETH;
    let ip = h + ETH;
    out[ip + 2..ip + 4].copy_from_slice(&(total as u16).to_be_bytes());
    out[ip + 10..ip + 12].copy_from_slice(&[0, 0]);
    let c = checksum(&out[ip..ip + 20], 0);
    out[ip + 10..ip + 12].copy_from_slice(&c.to_be_bytes());
    let tcp = ip + 20;
    out[tcp + 13] |= psh;
    // Checksum pending: the pseudo-header's sum, not inverted, where the checksum goes.
    let pseudo = fold(sum16(&out[ip + 12..ip + 20], 6 + (total - 20) as u32));
    out[tcp + 16..tcp + 18].copy_from_slice(&pseudo.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::offload::{finish_frame, VnetHdr};
    use etherparse::PacketBuilder;

    fn seg(seq: u32, payload: &[u8], psh: bool) -> Vec<u8> {
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(4000, 5201, seq, 502)
            .ack(77);
        let b = if psh { b.psh() } else { b };
        let mut f = Vec::new();
        b.write(&mut f, payload).unwrap();
        f
    }

    #[test]
    fn a_run_joins_into_one_super_frame_that_segments_back_to_the_same_frames() {
        let pay: Vec<Vec<u8>> = (0..5u8)
            .map(|i| {
                (0..if i == 4 { 300 } else { 1000 })
                    .map(|j| (j as u8) ^ i)
                    .collect()
            })
            .collect();
        let mut frames = Vec::new();
        let mut seq = 1000u32;
        for (i, p) in pay.iter().enumerate() {
            frames.push(seg(seq, p, i == 4));
            seq += p.len() as u32;
        }
        let segs: Vec<Segment> = frames.iter().map(|f| segment(f).unwrap()).collect();
        for i in 1..frames.len() {
            assert!(joins(
                (&frames[0], &segs[0]),
                (&frames[i - 1], &segs[i - 1]),
                (&frames[i], &segs[i]),
                i,
                i * 1000
            ));
        }
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        let mut out = Vec::new();
        write(refs.iter().copied(), 12, &mut out);
        let hdr = VnetHdr::parse(&out).unwrap();
        assert_eq!((hdr.gso_type, hdr.gso_size), (GSO_TCPV4, 1000));
        // Cut back in software: the very frames that went in (PSH on the last only: the
        // segmenter keeps PSH on the last segment).
        let mut buf = vec![0; 70_000];
        let mut back = Vec::new();
        finish_frame(&hdr, &out[12..], &mut buf, |s| back.push(s.to_vec())).unwrap();
        assert_eq!(back.len(), 5);
        for (b, f) in back.iter().zip(&frames) {
            assert_eq!(&b[54..], &f[54..], "payload");
            assert_eq!(&b[38..42], &f[38..42], "sequence number");
            assert!(segment(b).is_some(), "a valid segment again");
        }
    }

    #[test]
    fn what_gro_would_not_join_is_left_alone() {
        let a = seg(1000, &[1; 1000], false);
        let sa = segment(&a).unwrap();
        // A gap in the sequence numbers.
        let gap = seg(2500, &[2; 1000], false);
        assert!(!joins(
            (&a, &sa),
            (&a, &sa),
            (&gap, &segment(&gap).unwrap()),
            1,
            1000
        ));
        // After a shorter one, or after PSH.
        let short = seg(2000, &[3; 10], false);
        let ss = segment(&short).unwrap();
        let next = seg(2010, &[4; 10], false);
        assert!(!joins(
            (&a, &sa),
            (&short, &ss),
            (&next, &segment(&next).unwrap()),
            2,
            1010
        ));
        let pushed = seg(2000, &[5; 1000], true);
        let sp = segment(&pushed).unwrap();
        let after = seg(3000, &[6; 1000], false);
        assert!(!joins(
            (&a, &sa),
            (&pushed, &sp),
            (&after, &segment(&after).unwrap()),
            2,
            2000
        ));
        // A bad checksum, SYN, a pure ACK, a fragment: not segments that may join.
        let mut bad = seg(2000, &[7; 1000], false);
        bad[100] ^= 1;
        assert!(segment(&bad).is_none());
        let b = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(4000, 5201, 1, 502)
            .syn();
        let mut syn = Vec::new();
        b.write(&mut syn, &[]).unwrap();
        assert!(segment(&syn).is_none());
        assert!(segment(&seg(1, &[], false)).is_none());
        let mut frag = seg(2000, &[8; 100], false);
        frag[20] = 0x20; // MF
        assert!(segment(&frag).is_none());
        assert!(segment(&frag[..30]).is_none());
    }
}
