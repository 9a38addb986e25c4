//! Ports: the only code that moves frames in and out of the process.
//!
//! Every kind of port (TAP and AF_XDP now; VXLAN/UDP underlay and uplink later) offers the same
//! small surface to the dataplane: a pollable fd, `recv` into a caller buffer, `send` a buffer.
//!
//! A port may carry per-frame metadata ahead of each Ethernet frame (`headroom`): a TAP with
//! offloads reads and writes a virtio-net header, so 64 KiB TSO/GSO frames with partial
//! checksums cross the switch in one read and one write. Between ports with the same metadata the
//! buffer is passed through untouched; frames the switch builds itself go out with `send_frame`.

pub mod afxdp;
pub mod bpf;
pub mod packet;
pub mod parent;
pub mod relay;
pub mod steer;
pub mod tap;
pub mod udp_batch;
pub mod umem;
pub mod uring;
pub mod vxlan;
pub mod wg;
pub mod xdp_prog;
pub mod xsk;

use std::io;
use std::os::fd::RawFd;

pub use afxdp::{AfXdp, XdpConfig, XdpMode, XdpStatus};
pub use tap::Tap;

/// A port the dataplane can poll, read and write.
pub trait Port: Send {
    /// The fd to register for readability.
    fn raw_fd(&self) -> RawFd;
    /// Whether the dataplane polls `raw_fd` for this port (a VXLAN tunnel shares the VTEP's
    /// socket, which the dataplane reads for all of them).
    fn pollable(&self) -> bool {
        true
    }
    /// A second fd to poll for this port (a parent's copy of the segment's broadcasts): its
    /// readiness services the port as the first's does.
    fn second_fd(&self) -> Option<RawFd> {
        None
    }
    /// Bytes of metadata ahead of the Ethernet frame in what `recv` fills and `send` takes.
    fn headroom(&self) -> usize {
        0
    }
    /// Receives one buffer (metadata + frame) into `buf`; `WouldBlock` when there is none.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends a buffer as received from a port with the same `headroom`.
    fn send(&mut self, buf: &[u8]) -> io::Result<usize>;
    /// Sends a plain Ethernet frame (built by the switch, or from a port of another kind).
    fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// A port whose `send` is one write(2) of the buffer on this fd and whose `recv` is one
    /// non-blocking read(2) (a TAP): the dataplane may batch them through io_uring instead.
    fn plain_fd(&self) -> Option<RawFd> {
        None
    }
    /// Pushes out frames `send`/`send_frame` queued (ports that batch transmits: AF_XDP).
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
    /// What kind of port this is, for `show`.
    fn kind(&self) -> &'static str;
    /// Whether `recv_loan` lends received frames in place (AF_XDP).
    fn lends(&self) -> bool {
        false
    }
    /// Receives one frame without copying it: a loan of it, in place in the UMEM.
    fn recv_loan(&mut self) -> io::Result<umem::Loan> {
        Err(io::ErrorKind::Unsupported.into())
    }
    /// Takes back the loans of the last `recv_loan`s that were not sent on (and forgets the
    /// ones that were: another port holds those now).
    fn end_loans(&mut self, returned: &mut Vec<umem::Loan>) {
        returned.clear();
    }
    /// Sends a frame lent by another port by its descriptor, without a copy; `Err` gives the
    /// loan back when this port cannot (another chunk, not an AF_XDP port, a full ring).
    fn send_loan(&mut self, loan: umem::Loan) -> Result<usize, umem::Loan> {
        Err(loan)
    }
    /// AF_XDP ports: the mode, the rings and where every UMEM frame is.
    fn xdp_status(&mut self) -> Option<XdpStatus> {
        None
    }
}
