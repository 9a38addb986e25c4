//! Plain TCP segments of one flow for a TAP with offloads (a remote stream from a tunnel, an
//! AF_XDP port or a packet-socket uplink), joined back into one TSO super-frame and written once (`wire::gro`).

use super::{Dataplane, PortSlot};
use crate::switch::DropReason;
use crate::wire::gro;
use crate::wire::offload::VnetHdr;

impl Dataplane {
    /// Sends the run of `txq[at..]` that joins into one super-frame, when its egress port is a
    /// TAP with a virtio-net header and the run has two segments or more: the index after the
    /// run, and the send's error if it was the port's vanishing (EBADFD). `None`: nothing
    /// sent, the frame at `at` goes the usual way.
    pub(super) fn send_joined(
        &mut self,
        at: usize,
        headroom: usize,
    ) -> Option<(usize, Option<std::io::Error>)> {
        let (out, slot) = self.txq[at];
        let Some(Some(PortSlot {
            port: Some(port), ..
        })) = self.ports.get_mut(out.idx())
        else {
            return None;
        };
        if port.headroom() == 0 || port.plain_fd().is_none() {
            return None;
        }
        let bufs = &self.rx_bufs;
        let lens = &self.rx_lens;
        let loans = &self.rx_loans;
        // Frames from a port with metadata (a packet-socket uplink) join only when they carry
        // no offload work of their own.
        let plain = |s: u16| {
            headroom == 0
                || VnetHdr::parse(&bufs[usize::from(s)][..headroom])
                    .is_some_and(|h| !h.needs_work())
        };
        // A lent frame (from an AF_XDP port: no metadata) is read in place.
        let frame_of = |s: u16| match &loans[usize::from(s)] {
            Some(loan) => loan.bytes(),
            None => &bufs[usize::from(s)][headroom..lens[usize::from(s)]],
        };
        if !plain(slot) {
            return None;
        }
        let first = frame_of(slot);
        let fs = gro::segment(first)?;
        let (mut end, mut last, mut ls, mut bytes) = (at + 1, slot, fs, fs.payload);
        while end < self.txq.len() && self.txq[end].0 == out {
            let s2 = self.txq[end].1;
            let f2 = frame_of(s2);
            let Some(ns) = gro::segment(f2).filter(|ns| {
                plain(s2)
                    && gro::joins(
                        (first, &fs),
                        (frame_of(last), &ls),
                        (f2, ns),
                        end - at,
                        bytes,
                    )
            }) else {
                break;
            };
            (last, ls) = (s2, ns);
            bytes += ns.payload;
            end += 1;
        }
        if end == at + 1 {
            return None;
        }
        let frames = self.txq[at..end].iter().map(|&(_, s)| frame_of(s));
        if !self.captures.is_empty() {
            for f in frames.clone() {
                self.captures.tx(out, f);
            }
        }
        let wire: usize = frames.clone().map(<[u8]>::len).sum();
        gro::write(frames, port.headroom(), &mut self.gro_buf);
        let sent = port.send(&self.gro_buf);
        let mut vanished = None;
        if let Some(c) = self.pipeline.port_counters_mut(out) {
            match sent {
                Ok(_) => {
                    c.tx_packets += (end - at) as u64;
                    c.tx_bytes += wire as u64;
                }
                Err(e) => {
                    c.count_drop(DropReason::TxError);
                    if e.raw_os_error() == Some(libc::EBADFD) {
                        vanished = Some(e);
                    }
                }
            }
        }
        Some((end, vanished))
    }
}
