//! The traffic generator's syscalls: sendmmsg/recvmmsg move a batch of datagrams per call, so
//! the generator outruns the switch under test (iperf3's sender tops out near 180 kpps here).

use std::io;
use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// Sends `count` copies of `payload` on a connected socket in one call; returns how many left.
pub fn send_batch(sock: &UdpSocket, payload: &[u8], count: usize) -> io::Result<usize> {
    let mut iov: Vec<libc::iovec> = (0..count)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        })
        .collect();
    // SAFETY: mmsghdr is plain old data; all-zero is a valid value (null name, no control).
    let mut msgs: Vec<libc::mmsghdr> = (0..count).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v as *mut libc::iovec;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: `msgs` and the iovecs they point to (and `payload`, which the kernel only reads)
    // live until the call returns; the lengths match the vectors.
    let n = unsafe {
        libc::sendmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            count as libc::c_uint,
            0,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
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
    // SAFETY: as above, zeroed mmsghdr is valid.
    let mut msgs: Vec<libc::mmsghdr> = (0..bufs.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v as *mut libc::iovec;
        m.msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: every iovec points into `bufs`, which outlives the call; MSG_WAITFORONE returns
    // after the first datagram once at least one is there.
    let n = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_uint,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}
