//! The VXLAN underlay: one UDP socket bound to the VTEP's address (port 4789 by default) that
//! receives every overlay network's datagrams, and a tunnel port per (overlay network, remote
//! VTEP) that encapsulates what the pipeline sends it and writes it to that peer through the
//! shared socket. The outer IP header is the kernel's: DF set (IP_PMTUDISC_DO: a datagram over
//! the path MTU is refused, never fragmented), TTL as configured, UDP checksum computed.

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

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
}

impl Vtep {
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
    Ok(Arc::new(Vtep { rx, tx }))
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
    // Room for bursts: one datagram per frame of a TCP window is read at a time. FORCE (root)
    // goes past net.core.{r,w}mem_max; without the privilege the plain option is capped there.
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        let size: libc::c_int = SOCKET_BUFFER;
        for opt in [force, plain] {
            // SAFETY: as above, with `size`, a c_int that outlives the call.
            let rc = unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&size as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                )
            };
            if rc == 0 {
                break;
            }
        }
    }
    Ok(sock)
}

/// Receives one datagram (the VXLAN header and the inner frame) and its IPv4 source.
pub fn recv(sock: &UdpSocket, buf: &mut [u8]) -> io::Result<(usize, Option<Ipv4Addr>)> {
    let (n, from) = sock.recv_from(buf)?;
    let src = match from {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(_) => None,
    };
    Ok((n, src))
}

/// A tunnel to one remote VTEP for one overlay network: a transmit-only port.
pub struct Tunnel {
    vtep: Arc<Vtep>,
    dst: SocketAddrV4,
    /// The VXLAN header, then the frame being sent (one copy: cheaper than the syscall it
    /// feeds, and no unsafe iovec juggling).
    buf: Vec<u8>,
}

impl Tunnel {
    pub fn new(vtep: Arc<Vtep>, remote: Ipv4Addr, port: u16, vni: u32) -> Tunnel {
        let mut buf = Vec::with_capacity(overlay::HEADER_LEN + 65536);
        buf.extend_from_slice(&overlay::header(vni));
        Tunnel {
            vtep,
            dst: SocketAddrV4::new(remote, port),
            buf,
        }
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

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.buf.truncate(overlay::HEADER_LEN);
        self.buf.extend_from_slice(frame);
        let pick = overlay::flow_hash(frame) as usize % self.vtep.tx.len();
        self.vtep.tx[pick]
            .send_to(&self.buf, self.dst)
            .map(|_| frame.len())
    }

    fn kind(&self) -> &'static str {
        "vxlan"
    }
}
