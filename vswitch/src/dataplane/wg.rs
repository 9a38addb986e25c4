//! The encrypted overlays' receive side: WireGuard messages from the peers, decrypted, and the
//! VXLAN packets inside forwarded as received on their tunnel ports; and the sessions' timers.

use std::io;
use std::net::SocketAddr;

use super::{Dataplane, RX_BATCH};
use crate::ports::wg;
use crate::switch::{overlay, DropReason, PortId};

impl Dataplane {
    /// Reads up to a batch of messages from the WireGuard socket. Handshakes are answered
    /// (and what waited for them sent); each decrypted VXLAN packet of an encrypted network
    /// goes through the pipeline as received on the tunnel port of its peer's tunnel
    /// address, runs of one tunnel forwarded together.
    pub(super) fn service_wg(&mut self) {
        let Some(sock) = self.wg.clone() else {
            self.wg_ready = false;
            return;
        };
        let mut batch = self.wg_rx.take().unwrap_or_default();
        let mut out = std::mem::take(&mut self.wg_out);
        let mut tunnels = [PortId(0); RX_BATCH];
        let mut k = 0;
        // Messages up to a batch of frames: a GRO message holds several.
        'read: while k < RX_BATCH {
            match sock.recv_batch(&mut batch) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.wg_ready = false;
                    break;
                }
                Err(_) => {
                    // An ICMP error from a peer without a socket there: counted, read on.
                    self.vtep_counters.count_drop(DropReason::TxError);
                    continue;
                }
            }
            for m in 0..batch.len() {
                let src = batch.src_addr(m);
                for dg in batch.datagrams(m) {
                    self.vtep_counters.rx_packets += 1;
                    self.vtep_counters.rx_bytes += dg.len() as u64;
                    if k == RX_BATCH {
                        // The frames so far go first; the rest of this message after them.
                        self.forward_tunnel_runs(&tunnels, k);
                        k = 0;
                    }
                    let Some(from) = src else {
                        self.vtep_counters.count_drop(DropReason::UnknownVtep);
                        continue;
                    };
                    let Some(peer) = wg::peer_of(&self.wg_peers, SocketAddr::V4(from)) else {
                        self.vtep_counters.count_drop(DropReason::UnknownVtep);
                        continue;
                    };
                    let tunnels_of = &self.pipeline.tunnels;
                    let (rx_bufs, rx_lens) = (&mut self.rx_bufs, &mut self.rx_lens);
                    let port = self.wg_vxlan_port;
                    let mut got: Option<Result<PortId, DropReason>> = None;
                    let res = peer.receive(&sock, *from.ip(), dg, &mut out, |packet, inner| {
                        got = Some(match wg::vxlan_payload(packet, port) {
                            None => Err(DropReason::BadVxlan),
                            Some(v) => tunnels_of.demux_decrypted(inner, v).inspect(|_| {
                                let frame = &v[overlay::HEADER_LEN..];
                                rx_bufs[k][..frame.len()].copy_from_slice(frame);
                                rx_lens[k] = frame.len();
                            }),
                        });
                    });
                    if res.is_err() {
                        self.vtep_counters.count_drop(DropReason::BadWireguard);
                        continue;
                    }
                    match got {
                        Some(Ok(t)) => {
                            tunnels[k] = t;
                            k += 1;
                        }
                        Some(Err(reason)) => self.vtep_counters.count_drop(reason),
                        None => {}
                    }
                }
            }
            if batch.len() < crate::ports::udp_batch::RX_MESSAGES {
                self.wg_ready = false;
                break 'read;
            }
        }
        if k > 0 {
            self.forward_tunnel_runs(&tunnels, k);
        }
        self.wg_rx = Some(batch);
        self.wg_out = out;
    }

    /// The sessions' timers (the dataplane's one-second tick): handshake retries, keepalives
    /// and rekeying, off the per-packet path.
    pub(super) fn wg_timers(&mut self) {
        let Some(sock) = self.wg.clone() else {
            return;
        };
        for p in &self.wg_peers {
            p.tick(&sock, &mut self.wg_out);
        }
    }
}
