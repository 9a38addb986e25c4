//! Ports: the only code that moves frames in and out of the process.
//!
//! Every kind of port (TAP now; AF_XDP, VXLAN/UDP underlay and uplink later) offers the same
//! small surface to the dataplane: a pollable fd, `recv` into a caller buffer, `send` a frame.

pub mod tap;

use std::io;
use std::os::fd::RawFd;

pub use tap::Tap;

/// A port the dataplane can poll, read and write.
pub trait Port: Send {
    /// The fd to register for readability.
    fn raw_fd(&self) -> RawFd;
    /// Receives one frame into `buf`; `WouldBlock` when there is none.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Sends one frame.
    fn send(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// What kind of port this is, for `show`.
    fn kind(&self) -> &'static str;
}
