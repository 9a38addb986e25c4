//! The VTEP's receive side: datagrams read in batches from the overlay's socket, each inner
//! frame forwarded as received on its tunnel port.

use std::io;
use std::net::Ipv4Addr;

use tracing::debug;

use super::{Dataplane, LEARN_PENDING_MAX, RX_BATCH};
use crate::switch::gateway::Event;
use crate::switch::{DropReason, PortId};

impl Dataplane {
    /// Reads a batch of datagrams from the VTEP's socket (`recvmmsg`, GRO batches split back);
    /// each inner frame goes through the pipeline as received on its tunnel port, runs of one
    /// tunnel forwarded together.
    pub(super) fn service_vtep(&mut self) {
        let Some(sock) = self.vtep.clone() else {
            self.vtep_ready = false;
            return;
        };
        // Taken out for the loop (the buffers stay allocated: no Default in its place).
        let mut batch = self.vtep_rx.take().unwrap_or_default();
        let hdr = crate::switch::overlay::HEADER_LEN;
        let mut tunnels = [PortId(0); RX_BATCH];
        let mut k = 0;
        while k < RX_BATCH {
            match sock.recv_batch(&mut batch) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.vtep_ready = false;
                    break;
                }
                Err(e) => {
                    // ICMP errors surface here (ECONNREFUSED from a peer without a VTEP): count,
                    // keep reading.
                    debug!(error = %e, "VTEP receive error");
                    self.vtep_counters.count_drop(DropReason::TxError);
                    continue;
                }
            }
            for m in 0..batch.len() {
                let src = batch.src(m);
                for dg in batch.datagrams(m) {
                    self.vtep_counters.rx_packets += 1;
                    self.vtep_counters.rx_bytes += dg.len() as u64;
                    let demuxed = match src {
                        Some(src) => self.pipeline.tunnels.demux(src, dg),
                        None => Err(DropReason::UnknownVtep),
                    };
                    match demuxed {
                        Ok(tunnel) => {
                            let inner = &dg[hdr..];
                            self.rx_bufs[k][..inner.len()].copy_from_slice(inner);
                            self.rx_lens[k] = inner.len();
                            tunnels[k] = tunnel;
                            k += 1;
                            if k == RX_BATCH {
                                self.forward_tunnel_runs(&tunnels, k);
                                k = 0;
                            }
                        }
                        Err(reason) => {
                            self.vtep_counters.count_drop(reason);
                            if let (DropReason::UnknownVtep, Some(src)) = (reason, src) {
                                self.learn_peer(src, dg);
                            }
                        }
                    }
                }
            }
            if batch.len() < crate::ports::udp_batch::RX_MESSAGES {
                // Drained for now (the next readiness or round reads on).
                self.vtep_ready = false;
                break;
            }
        }
        if k > 0 {
            self.forward_tunnel_runs(&tunnels, k);
        }
        self.vtep_rx = Some(batch);
    }

    /// Forwards `rx_bufs[..n]`, each received on `tunnels[i]`, by runs of one tunnel.
    pub(super) fn forward_tunnel_runs(&mut self, tunnels: &[PortId; RX_BATCH], n: usize) {
        let mut from = 0;
        while from < n {
            let mut to = from + 1;
            while to < n && tunnels[to] == tunnels[from] {
                to += 1;
            }
            self.forward_range(tunnels[from], 0, from, to);
            from = to;
        }
    }

    /// A datagram from `src`, not a peer: for a network that learns its
    /// peers, the control plane is told, once per VTEP and aging tick (the datagrams until it
    /// is a peer are dropped; a flood of them costs one event a second per source, bounded).
    fn learn_peer(&mut self, src: Ipv4Addr, datagram: &[u8]) {
        let Some((vni, network)) = self.pipeline.tunnels.learner(datagram) else {
            return;
        };
        if self.learn_pending.len() >= LEARN_PENDING_MAX || !self.learn_pending.insert((vni, src)) {
            return;
        }
        let _ = self
            .events
            .try_send(Event::PeerLearned { network, vtep: src });
    }
}
