//! The traffic generator's syscalls: sendmmsg/recvmmsg move a batch of datagrams per call, so
//! the generator outruns the switch under test (iperf3's sender tops out near 180 kpps here).

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// One message header per iovec, each pointing at its own iovec.
fn headers(iov: &mut [libc::iovec]) -> Vec<libc::mmsghdr> {
    iov.iter_mut()
        .map(|v| {
            // SAFETY: mmsghdr is plain old data; all-zero is a valid value (null name, no
            // control data), then we point it at one iovec.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_iov = v as *mut libc::iovec;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect()
}

fn result(n: libc::c_int) -> io::Result<usize> {
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Sends `count` copies of `payload` on a connected socket in one call; returns how many left.
pub fn send_batch(sock: &UdpSocket, payload: &[u8], count: usize) -> io::Result<usize> {
    let mut iov: Vec<libc::iovec> = (0..count)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        })
        .collect();
    let mut msgs = headers(&mut iov);
    // SAFETY: `msgs`, the iovecs they point to and `payload` (which the kernel only reads) live
    // until the call returns; the count matches the vector.
    result(unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            0,
        )
    })
}

/// Receives up to `bufs.len()` datagrams in one call (blocking per the socket's timeout).
pub fn recv_batch(sock: &UdpSocket, bufs: &mut [[u8; 64]]) -> io::Result<usize> {
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut msgs = headers(&mut iov);
    // SAFETY: every iovec points into `bufs`, which outlives the call; MSG_WAITFORONE returns
    // once at least one datagram is there.
    result(unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    })
}
