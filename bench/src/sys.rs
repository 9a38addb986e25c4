//! The traffic generator's syscalls: sendmmsg on an AF_PACKET socket that bypasses the qdisc
//! moves a batch of whole frames per call, so the generator outruns the switch under test
//! (iperf3's sender tops out near 180 kpps here); recvmmsg counts datagrams in a batch.

use std::io;
use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

/// Sends each buffer as one datagram (or, on a packet socket, one frame) in one call.
pub fn send_many(fd: RawFd, bufs: &[&[u8]]) -> io::Result<usize> {
    let mut iov: Vec<libc::iovec> = bufs
        .iter()
        .map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        })
        .collect();
    let mut msgs = headers(&mut iov);
    // SAFETY: `msgs`, the iovecs they point to and the buffers (which the kernel only reads)
    // live until the call returns; the count matches the vector.
    result(unsafe { libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as libc::c_uint, 0) })
}

/// A raw packet socket bound to interface `ifname`, for sending whole Ethernet frames, with the
/// qdisc bypassed.
pub fn packet_socket(ifname: &str) -> io::Result<OwnedFd> {
    let name =
        std::ffi::CString::new(ifname).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscalls on values we own; the new fd is wrapped in an OwnedFd at once and
    // `addr` is a zero-initialised sockaddr_ll of the size passed.
    unsafe {
        let index = libc::if_nametoindex(name.as_ptr());
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_ll = std::mem::zeroed();
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        let rc = libc::bind(
            fd.as_raw_fd(),
            &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // Straight to the driver, past the qdisc: the generator's per-frame cost stays small.
        let one: libc::c_int = 1;
        let rc = libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_QDISC_BYPASS,
            &one as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as u32,
        );
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd)
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

/// Makes `fd` blocking (clears O_NONBLOCK).
pub fn set_blocking(fd: RawFd) -> io::Result<()> {
    // SAFETY: fcntl F_GETFL/F_SETFL on an fd the caller keeps open; no memory is passed.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Copies whole frames from `from` to `to` until a read fails: one blocking read and one write
/// per frame (the TAP-to-TAP copy loop, the ceiling of any userspace switch on TAPs).
pub fn pump(from: RawFd, to: RawFd) {
    let mut buf = vec![0u8; 65536 + 64];
    loop {
        // SAFETY: `buf` is a live, writable buffer of the length passed; the fds are the
        // caller's open TAPs.
        let n = unsafe { libc::read(from, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        }
        // SAFETY: the first `n` bytes of `buf` were just filled by read.
        unsafe { libc::write(to, buf.as_ptr() as *const libc::c_void, n as usize) };
    }
}
