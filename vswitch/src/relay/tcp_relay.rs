//! The relay's TCP side: a host connection accepted, its smoltcp socket connecting to the
//! container from the gateway's address, and the bytes pumped between the two.

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use mio::net::TcpStream;
use mio::{Interest, Token};
use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use smoltcp::wire::{IpAddress, IpEndpoint, IpListenEndpoint};
use tracing::debug;

use super::{Counters, Target, Thread, MAX_RELAYS, TCP_BUF, TCP_TIMEOUT};
use crate::switch::NetId;

/// One relayed TCP connection: the host's socket and smoltcp's.
pub(super) struct Conn {
    pub(super) net: NetId,
    pub(super) handle: SocketHandle,
    port: u16,
    stream: TcpStream,
    counters: Arc<Counters>,
    /// The container answered (the connection opened).
    opened: bool,
    /// The host's side sent its FIN (smoltcp's was asked to close).
    host_eof: bool,
    /// The container's FIN was passed on to the host.
    host_shut: bool,
}

impl Thread {
    pub(super) fn open_conn(
        &mut self,
        mut stream: TcpStream,
        target: Target,
        counters: Arc<Counters>,
    ) {
        if self.relays() >= MAX_RELAYS {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            debug!("relay: refused, {MAX_RELAYS} relays running");
            return;
        }
        let tok = self.token();
        let Some(n) = self.nets.get_mut(&target.net) else {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Some(port) = n.take_port() else {
            counters.refused.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let _ = stream.set_nodelay(true);
        let mut s = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; TCP_BUF]),
            tcp::SocketBuffer::new(vec![0; TCP_BUF]),
        );
        s.set_nagle_enabled(false);
        s.set_timeout(Some(TCP_TIMEOUT));
        s.set_tsval_generator(Some(tsval));
        let remote = IpEndpoint::new(IpAddress::Ipv4(target.ip), target.port);
        let local = IpListenEndpoint {
            addr: Some(IpAddress::Ipv4(n.gw)),
            port,
        };
        if let Err(e) = s.connect(n.iface.context(), remote, local) {
            debug!(error = ?e, "relay: connect");
            n.used.remove(&port);
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut stream, tok, Interest::READABLE | Interest::WRITABLE)
        {
            debug!(error = %e, "relay: stream not polled");
            n.used.remove(&port);
            return;
        }
        let handle = n.sockets.add(s);
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        counters.active.fetch_add(1, Ordering::Relaxed);
        self.conns.insert(
            tok,
            Conn {
                net: target.net,
                handle,
                port,
                stream,
                counters,
                opened: false,
                host_eof: false,
                host_shut: false,
            },
        );
    }

    pub(super) fn end_conn(&mut self, tok: Token) {
        let Some(mut c) = self.conns.remove(&tok) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut c.stream);
        c.counters.active.fetch_sub(1, Ordering::Relaxed);
        if !c.opened {
            c.counters.failed.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(n) = self.nets.get_mut(&c.net) {
            // Reset if still open; freed after the next poll sent the reset.
            let s = n.sockets.get_mut::<tcp::Socket>(c.handle);
            if s.is_active() {
                s.abort();
            }
            n.dying.push((c.handle, c.port));
        }
    }
}

/// TCP timestamps (RFC 7323) from the wall clock, in milliseconds. The relay's connections
/// come from one address and reuse its ports long before a container's TIME_WAIT (60 s) is
/// over; Linux takes a SYN for a port in TIME_WAIT as a new connection when its timestamp is
/// newer (or its sequence number higher: smoltcp's are random, so half would be refused and
/// wait a second for the SYN's retransmission). The wall clock keeps them newer across a
/// restart of the daemon too.
fn tsval() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u32)
        .unwrap_or(0)
}

/// Moves what it can between the host's socket and smoltcp's, both ways, and passes each
/// side's end on: whether the relay goes on, and whether anything moved.
pub(super) fn pump(c: &mut Conn, s: &mut tcp::Socket) -> (bool, bool) {
    use tcp::State;
    let mut moved = false;
    if !c.opened && !matches!(s.state(), State::SynSent | State::Closed) {
        c.opened = true;
        moved = true;
    }
    if !c.opened {
        // Not open yet, so nothing is read from the host: a client that gives up meanwhile is
        // seen by a peek (its end, or an error), and the attempt ends with it.
        match c.stream.peek(&mut [0u8; 1]) {
            Ok(0) => {
                s.abort();
                return (false, true);
            }
            Err(e) if e.kind() != io::ErrorKind::WouldBlock => {
                s.abort();
                return (false, true);
            }
            _ => {}
        }
    }
    // The host's bytes to the container.
    while !c.host_eof && s.can_send() {
        let r = s.send(|buf| {
            if buf.is_empty() {
                return (0, Err(io::ErrorKind::WouldBlock.into()));
            }
            match c.stream.read(buf) {
                Ok(n) => (n, Ok(n)),
                Err(e) => (0, Err(e)),
            }
        });
        match r {
            Ok(Ok(0)) => {
                c.host_eof = true;
                moved = true;
                s.close();
            }
            Ok(Ok(n)) => {
                moved = true;
                c.counters
                    .bytes_to_container
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => {
                // Reset by the host's client: so is the container's side.
                s.abort();
                return (false, true);
            }
            Err(_) => break,
        }
    }
    // The container's bytes to the host.
    while s.can_recv() {
        let r = s.recv(|buf| match c.stream.write(buf) {
            Ok(n) => (n, Ok(n)),
            Err(e) => (0, Err(e)),
        });
        match r {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => {
                moved = true;
                c.counters
                    .bytes_to_host
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => break,
            Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => {}
            Ok(Err(_)) => {
                s.abort();
                return (false, true);
            }
            Err(_) => break,
        }
    }
    // The container is done sending and all it sent is the host's: pass its FIN on.
    if c.opened && !c.host_shut && !s.may_recv() {
        let _ = c.stream.shutdown(Shutdown::Write);
        c.host_shut = true;
        moved = true;
    }
    let alive = match s.state() {
        // Refused, reset, timed out, or closed both ways.
        State::Closed | State::TimeWait => s.can_recv(),
        _ => true,
    };
    (alive, moved)
}
