//! The VXLAN underlay: one UDP socket bound to the VTEP's address (port 4789 by default) that
//! receives every overlay network's datagrams, and a tunnel port per (overlay network, remote
//! VTEP) that encapsulates what the pipeline sends it and writes it to that peer through the
//! shared socket. The outer IP header is the kernel's: DF set (IP_PMTUDISC_DO: a datagram over
//! the path MTU is refused, never fragmented), TTL as configured, UDP checksum computed.
//!
//! Batched both ways (`udp_batch`): a tunnel keeps the datagrams of one dataplane batch and
//! sends them at `flush` as one UDP GSO super-datagram when they are of one size, or with one
//! `sendmmsg` otherwise; the receive socket has `UDP_GRO` on and is read with `recvmmsg`.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::udp_batch::{self, RxBatch, TxQueue};
use super::Port;
use crate::switch::overlay;

/// Socket buffer asked for each way.
const SOCKET_BUFFER: libc::c_int = 4 << 20;

/// Sockets datagrams leave from, each on its own source port: a tunnel picks one by a hash of
/// the inner flow, so the underlay's ECMP and RSS spread flows (RFC 7348 §5) as the kernel's
/// per-flow source ports do.
pub const TX_SOCKETS: usize = 8;

/// The VTEP's sockets: `rx` bound to the VXLAN port (every peer sends there), and the transmit
/// pool bound to the same address on ephemeral ports.
pub struct Vtep {
    pub rx: UdpSocket,
    tx: Vec<UdpSocket>,
    /// The kernel takes `UDP_SEGMENT` (cleared when it refuses it).
    gso: AtomicBool,
}

impl Vtep {
    /// Whether datagrams still leave as UDP GSO super-datagrams.
    pub fn gso_active(&self) -> bool {
        self.gso.load(Ordering::Relaxed)
    }

    /// The local address a frame leaves from when sent to a remote VTEP: the transmit socket
    /// its flow hash picks (so the outer UDP source port follows the inner flow).
    pub fn source_for(&self, frame: &[u8]) -> Option<std::net::SocketAddr> {
        let pick = overlay::flow_hash(frame) as usize % self.tx.len().max(1);
        self.tx.get(pick)?.local_addr().ok()
    }
}

/// Binds the VTEP: the receive socket on `port` and the transmit pool.
pub fn bind(local: Ipv4Addr, port: u16, ttl: u8) -> io::Result<Arc<Vtep>> {
    let rx = socket(local, port, ttl)?;
    let tx = (0..TX_SOCKETS)
        .map(|_| socket(local, 0, ttl))
        .collect::<io::Result<Vec<_>>>()?;
    udp_batch::enable_gro(rx.as_raw_fd());
    Ok(Arc::new(Vtep {
        rx,
        tx,
        gso: AtomicBool::new(true),
    }))
}

/// One socket: non-blocking, DF on every datagram, `ttl` on the outer header, big buffers.
fn socket(local: Ipv4Addr, port: u16, ttl: u8) -> io::Result<UdpSocket> {
    let sock = UdpSocket::bind(SocketAddrV4::new(local, port))?;
    sock.set_nonblocking(true)?;
    sock.set_ttl(u32::from(ttl))?;
    let val: libc::c_int = libc::IP_PMTUDISC_DO;
    // SAFETY: the fd is the socket's, open for the call; `val` is a c_int that outlives it and
    // its size is passed.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_MTU_DISCOVER,
            (&val as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    udp_batch::set_buffers(sock.as_raw_fd(), SOCKET_BUFFER);
    Ok(sock)
}

impl Vtep {
    /// Reads up to a batch of messages (each maybe a GRO batch) into `batch`.
    pub fn recv_batch(&self, batch: &mut RxBatch) -> io::Result<usize> {
        udp_batch::recv_batch(self.rx.as_raw_fd(), batch)
    }
}

/// A tunnel to one remote VTEP for one overlay network: a transmit-only port.
pub struct Tunnel {
    vtep: Arc<Vtep>,
    dst: SocketAddrV4,
    header: [u8; overlay::HEADER_LEN],
    /// The datagrams (VXLAN header and frame) waiting for `flush`, from one transmit socket
    /// (`pick`).
    queue: TxQueue,
    pick: usize,
}

impl Tunnel {
    pub fn new(vtep: Arc<Vtep>, remote: Ipv4Addr, port: u16, vni: u32) -> Tunnel {
        Tunnel {
            vtep,
            dst: SocketAddrV4::new(remote, port),
            header: overlay::header(vni),
            queue: TxQueue::default(),
            pick: 0,
        }
    }

    fn send_pending(&mut self) -> io::Result<()> {
        let sock = self.vtep.tx[self.pick].as_raw_fd();
        self.queue.flush(sock, &self.dst, &self.vtep.gso)
    }
}

impl Port for Tunnel {
    fn raw_fd(&self) -> RawFd {
        self.vtep.rx.as_raw_fd()
    }

    fn pollable(&self) -> bool {
        false
    }

    fn recv(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_frame(buf)
    }

    /// Queues the frame's datagram; `flush` sends what a batch queued. A datagram that cannot
    /// join the queue (another transmit socket, a size a GSO send cannot take, a full queue)
    /// sends what is queued first.
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        let pick = overlay::flow_hash(frame) as usize % self.vtep.tx.len();
        let len = overlay::HEADER_LEN + frame.len();
        let mut sent = Ok(());
        if !self.queue.is_empty() && (pick != self.pick || !self.queue.fits(len)) {
            sent = self.send_pending();
        }
        if self.queue.is_empty() {
            self.pick = pick;
        }
        self.queue.push(&[&self.header, frame]);
        sent.map(|()| frame.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }

    fn kind(&self) -> &'static str {
        "vxlan"
    }
}
