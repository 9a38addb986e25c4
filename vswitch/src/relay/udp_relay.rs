//! The relay's UDP side: one session per host client of a published UDP port, a smoltcp
//! socket on the gateway's address each, ended after `UDP_IDLE` without a datagram.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant as StdInstant;

use mio::Token;
use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::storage::PacketMetadata;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};

use super::{Counters, Sock, Target, Thread, MAX_RELAYS, UDP_BUF, UDP_PACKETS};
use crate::switch::NetId;

/// One host client's UDP session with a container.
pub(super) struct Session {
    pub(super) net: NetId,
    handle: SocketHandle,
    port: u16,
    listener: Token,
    client: SocketAddr,
    to: IpEndpoint,
    pub(super) last: StdInstant,
    counters: Arc<Counters>,
}

impl Thread {
    /// A datagram from a host client, in `self.scratch[..len]`, to its session (a new one if
    /// it has none).
    pub(super) fn datagram(
        &mut self,
        listener: Token,
        client: SocketAddr,
        len: usize,
        target: Target,
        counters: Arc<Counters>,
    ) {
        let key = (listener, client);
        if !self.sessions.contains_key(&key) {
            if self.relays() >= MAX_RELAYS {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let Some(n) = self.nets.get_mut(&target.net) else {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let Some(port) = n.take_port() else {
                counters.refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let mut s = udp::Socket::new(
                udp::PacketBuffer::new(vec![PacketMetadata::EMPTY; UDP_PACKETS], vec![0; UDP_BUF]),
                udp::PacketBuffer::new(vec![PacketMetadata::EMPTY; UDP_PACKETS], vec![0; UDP_BUF]),
            );
            if s.bind(IpListenEndpoint {
                addr: Some(IpAddress::Ipv4(n.gw)),
                port,
            })
            .is_err()
            {
                n.used.remove(&port);
                counters.failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let handle = n.sockets.add(s);
            counters.accepted.fetch_add(1, Ordering::Relaxed);
            counters.active.fetch_add(1, Ordering::Relaxed);
            self.sessions.insert(
                key,
                Session {
                    net: target.net,
                    handle,
                    port,
                    listener,
                    client,
                    to: IpEndpoint::new(IpAddress::Ipv4(target.ip), target.port),
                    last: StdInstant::now(),
                    counters,
                },
            );
        }
        let Some(sess) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(n) = self.nets.get_mut(&sess.net) else {
            return;
        };
        sess.last = StdInstant::now();
        let s = n.sockets.get_mut::<udp::Socket>(sess.handle);
        if s.send_slice(&self.scratch[..len], sess.to).is_ok() {
            sess.counters
                .bytes_to_container
                .fetch_add(len as u64, Ordering::Relaxed);
        }
    }

    /// Containers' answers to UDP sessions, back to their host clients.
    pub(super) fn pump_udp(&mut self) {
        for sess in self.sessions.values_mut() {
            let (Some(n), Some(l)) = (
                self.nets.get_mut(&sess.net),
                self.listeners.get(&sess.listener),
            ) else {
                continue;
            };
            let Sock::Udp(out) = &l.sock else {
                continue;
            };
            let s = n.sockets.get_mut::<udp::Socket>(sess.handle);
            while let Ok((data, meta)) = s.recv() {
                if meta.endpoint != sess.to {
                    continue;
                }
                sess.last = StdInstant::now();
                if out.send_to(data, sess.client).is_ok() {
                    sess.counters
                        .bytes_to_host
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }

    pub(super) fn end_session(&mut self, key: (Token, SocketAddr)) {
        let Some(s) = self.sessions.remove(&key) else {
            return;
        };
        s.counters.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(n) = self.nets.get_mut(&s.net) {
            n.sockets.remove(s.handle);
            n.used.remove(&s.port);
        }
    }
}
