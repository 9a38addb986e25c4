//! The loopback relay's port: one end of an `AF_UNIX` datagram socketpair, the relay's
//! userspace TCP/UDP stack (`crate::relay`) on the other. Each datagram is a virtio-net header
//! and an Ethernet frame, as a TAP with offloads reads and writes them, so TSO super-frames
//! cross between a container's TAP and the relay untouched (one datagram each way).
//!
//! A connected pair is bounded by its send buffers only (not `max_dgram_qlen`), which are set
//! large enough for a burst of super-frames.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

use nix::sys::socket::{setsockopt, sockopt};

use super::tap::VNET_HDR_LEN;
use super::Port;

/// Send (and receive) buffer of each end: 64 super-frames queued each way.
const SOCK_BUF: usize = 4 << 20;

/// The dataplane's end.
pub struct RelayPort {
    sock: UnixDatagram,
    /// A plain frame with a header put in front (`send_frame`).
    scratch: Vec<u8>,
}

/// A socketpair: the dataplane's end and the relay's, both non-blocking.
pub fn pair() -> io::Result<(RelayPort, UnixDatagram)> {
    let (a, b) = UnixDatagram::pair()?;
    for s in [&a, &b] {
        s.set_nonblocking(true)?;
        // As root the buffers may pass `wmem_max`; otherwise the kernel's own cap holds.
        if setsockopt(s, sockopt::SndBufForce, &SOCK_BUF).is_err() {
            setsockopt(s, sockopt::SndBuf, &SOCK_BUF).map_err(io::Error::from)?;
        }
        if setsockopt(s, sockopt::RcvBufForce, &SOCK_BUF).is_err() {
            setsockopt(s, sockopt::RcvBuf, &SOCK_BUF).map_err(io::Error::from)?;
        }
    }
    Ok((
        RelayPort {
            sock: a,
            scratch: Vec::with_capacity(2048),
        },
        b,
    ))
}

impl Port for RelayPort {
    fn raw_fd(&self) -> RawFd {
        self.sock.as_raw_fd()
    }

    fn headroom(&self) -> usize {
        VNET_HDR_LEN
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.sock.recv(buf)
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.sock.send(buf)
    }

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.scratch.clear();
        self.scratch.extend_from_slice(&[0; VNET_HDR_LEN]);
        self.scratch.extend_from_slice(frame);
        self.sock.send(&self.scratch).map(|n| n - VNET_HDR_LEN)
    }

    fn plain_fd(&self) -> Option<RawFd> {
        Some(self.sock.as_raw_fd())
    }

    fn kind(&self) -> &'static str {
        "relay"
    }
}
