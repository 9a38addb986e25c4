//! UDP batching, as userspace tunnels must batch to reach multi-Gbit/s, shared by the VXLAN
//! and WireGuard sockets: a `TxQueue` keeps one dataplane batch's datagrams to one destination
//! and sends them at flush as one UDP GSO super-datagram (`UDP_SEGMENT`: the kernel cuts it, or
//! a veth carries it whole) when they are of one size, or with one `sendmmsg` otherwise; a
//! receive socket with `UDP_GRO` on is read with `recvmmsg` into an `RxBatch`, each coalesced
//! datagram split back by its segment size. Hand-written on libc: no crate offers the GSO/GRO
//! control messages.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, Ordering};

const UDP_SEGMENT: libc::c_int = 103;
pub const UDP_GRO: libc::c_int = 104;
/// Segments the kernel takes in one GSO send (UDP_MAX_SEGMENTS), and the bytes.
pub const GSO_MAX_SEGMENTS: usize = 64;
pub const GSO_MAX_BYTES: usize = 60 * 1024;
/// Messages one `recvmmsg` reads.
pub const RX_MESSAGES: usize = 8;
const RX_BUF: usize = 65536;

/// What one `recvmmsg` read: each message's bytes, its source and its GRO segment size.
pub struct RxBatch {
    bufs: Vec<Box<[u8]>>,
    lens: [usize; RX_MESSAGES],
    srcs: [Option<SocketAddrV4>; RX_MESSAGES],
    segs: [usize; RX_MESSAGES],
    count: usize,
}

impl Default for RxBatch {
    fn default() -> Self {
        RxBatch {
            bufs: (0..RX_MESSAGES)
                .map(|_| vec![0u8; RX_BUF].into_boxed_slice())
                .collect(),
            lens: [0; RX_MESSAGES],
            srcs: [None; RX_MESSAGES],
            segs: [0; RX_MESSAGES],
            count: 0,
        }
    }
}

impl RxBatch {
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Message `i`'s source address (IPv4).
    pub fn src(&self, i: usize) -> Option<Ipv4Addr> {
        self.srcs[i].map(|a| *a.ip())
    }

    /// Message `i`'s source address and port.
    pub fn src_addr(&self, i: usize) -> Option<SocketAddrV4> {
        self.srcs[i]
    }

    /// Message `i`'s datagrams: one, or a GRO batch cut back at its segment size.
    pub fn datagrams(&self, i: usize) -> impl Iterator<Item = &[u8]> {
        let data = &self.bufs[i][..self.lens[i]];
        let seg = match self.segs[i] {
            0 => data.len().max(1),
            s => s,
        };
        data.chunks(seg)
    }
}

/// Reads up to `RX_MESSAGES` messages (each maybe a GRO batch) from the UDP socket `fd` into
/// `batch`; returns how many, `WouldBlock` when there are none.
pub fn recv_batch(fd: RawFd, batch: &mut RxBatch) -> io::Result<usize> {
    batch.count = 0;
    // SAFETY: all-zero sockaddr_in, iovec, mmsghdr and control buffers are valid values;
    // the pointers set below point into `batch` and these arrays, alive for the call.
    let mut names: [libc::sockaddr_in; RX_MESSAGES] = unsafe { std::mem::zeroed() };
    let mut iovs: [libc::iovec; RX_MESSAGES] = unsafe { std::mem::zeroed() };
    let mut controls = [[0u64; 8]; RX_MESSAGES];
    let mut msgs: [libc::mmsghdr; RX_MESSAGES] = unsafe { std::mem::zeroed() };
    for i in 0..RX_MESSAGES {
        iovs[i].iov_base = batch.bufs[i].as_mut_ptr().cast();
        iovs[i].iov_len = batch.bufs[i].len();
        let h = &mut msgs[i].msg_hdr;
        h.msg_name = (&mut names[i] as *mut libc::sockaddr_in).cast();
        h.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        h.msg_iov = &mut iovs[i];
        h.msg_iovlen = 1;
        h.msg_control = controls[i].as_mut_ptr().cast();
        h.msg_controllen = std::mem::size_of_val(&controls[i]);
    }
    // SAFETY: `msgs` describes RX_MESSAGES valid buffers (above).
    let n = unsafe {
        libc::recvmmsg(
            fd,
            msgs.as_mut_ptr(),
            RX_MESSAGES as u32,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let n = n as usize;
    for i in 0..n {
        let h = &msgs[i].msg_hdr;
        batch.lens[i] = (msgs[i].msg_len as usize).min(batch.bufs[i].len());
        batch.srcs[i] = (names[i].sin_family == libc::AF_INET as u16).then(|| {
            SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(names[i].sin_addr.s_addr)),
                u16::from_be(names[i].sin_port),
            )
        });
        batch.segs[i] = 0;
        // SAFETY: CMSG_* walk the control buffer the kernel filled, within its length.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(h);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_UDP && (*c).cmsg_type == UDP_GRO {
                    let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                    batch.segs[i] = usize::try_from(v).unwrap_or(0);
                }
                c = libc::CMSG_NXTHDR(h, c);
            }
        }
    }
    batch.count = n;
    Ok(n)
}

/// Turns `UDP_GRO` on for a receive socket, where the kernel has it (5.0+); without, one
/// datagram each.
pub fn enable_gro(fd: RawFd) {
    let one: libc::c_int = 1;
    // SAFETY: the fd is the caller's open socket; `one` is a c_int that outlives the call.
    let _ = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_UDP,
            UDP_GRO,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Asks for `size` bytes of socket buffer each way on `fd`: room for bursts (one datagram per
/// frame of a TCP window is read at a time). FORCE (root) goes past net.core.{r,w}mem_max;
/// without the privilege the plain option is capped there.
pub fn set_buffers(fd: RawFd, size: libc::c_int) {
    for (force, plain) in [
        (libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
        (libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
    ] {
        for opt in [force, plain] {
            // SAFETY: the fd is the caller's open socket; `size` is a c_int that outlives the
            // call and its size is passed.
            let rc = unsafe {
                libc::setsockopt(
                    fd,
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
}

/// The datagrams of one batch to one destination, back to back, waiting for `flush`.
pub struct TxQueue {
    pending: Vec<u8>,
    /// `ends[i]` is where datagram `i` ends in `pending`.
    ends: Vec<usize>,
}

impl Default for TxQueue {
    fn default() -> Self {
        TxQueue {
            pending: Vec::with_capacity(GSO_MAX_BYTES + 2048),
            ends: Vec::with_capacity(GSO_MAX_SEGMENTS),
        }
    }
}

impl TxQueue {
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Whether a datagram of `len` bytes may join what is queued and still go in one GSO send
    /// (every datagram of the first's size but the last, which may be shorter).
    pub fn fits(&self, len: usize) -> bool {
        let Some(&first) = self.ends.first() else {
            return true;
        };
        let n = self.ends.len();
        let last = self.ends[n - 1] - if n >= 2 { self.ends[n - 2] } else { 0 };
        n < GSO_MAX_SEGMENTS
            && self.pending.len() + len <= GSO_MAX_BYTES
            && len <= first
            && (n == 1 || last == first)
    }

    /// Queues a datagram made of `parts`.
    pub fn push(&mut self, parts: &[&[u8]]) {
        for p in parts {
            self.pending.extend_from_slice(p);
        }
        self.ends.push(self.pending.len());
    }

    /// Queues a datagram that `write` puts into the room it is given (at most `room` bytes)
    /// and whose length it returns (0: nothing queued).
    pub fn push_with(&mut self, room: usize, write: impl FnOnce(&mut [u8]) -> usize) {
        let at = self.pending.len();
        self.pending.resize(at + room, 0);
        let n = write(&mut self.pending[at..]).min(room);
        self.pending.truncate(at + n);
        if n > 0 {
            self.ends.push(self.pending.len());
        }
    }

    /// Whether the pending datagrams can go as one GSO send, and their segment size.
    fn uniform(&self) -> Option<usize> {
        let first = *self.ends.first()?;
        let mut prev = 0;
        for (i, &end) in self.ends.iter().enumerate() {
            let len = end - prev;
            let last = i + 1 == self.ends.len();
            if len > first || (!last && len != first) {
                return None;
            }
            prev = end;
        }
        Some(first)
    }

    /// Sends what is queued to `dst` from the socket `fd`: one GSO send while `gso` holds (it
    /// is cleared for good when the kernel has no UDP GSO), else one sendmmsg.
    pub fn flush(&mut self, fd: RawFd, dst: &SocketAddrV4, gso: &AtomicBool) -> io::Result<()> {
        if self.ends.is_empty() {
            return Ok(());
        }
        let result = match self.uniform() {
            Some(seg) if self.ends.len() > 1 && gso.load(Ordering::Relaxed) => {
                match send_gso(fd, dst, &self.pending, seg) {
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::EIO)
                        ) =>
                    {
                        // No UDP GSO here (or not on this route): datagram by datagram from now.
                        gso.store(false, Ordering::Relaxed);
                        send_each(fd, dst, &self.pending, &self.ends)
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        send_each(fd, dst, &self.pending, &self.ends)
                    }
                    other => other,
                }
            }
            // One datagram (an ACK, a lone frame): one sendto.
            _ if self.ends.len() == 1 => send_one(fd, dst, &self.pending),
            _ => send_each(fd, dst, &self.pending, &self.ends),
        };
        self.pending.clear();
        self.ends.clear();
        result
    }
}

fn sockaddr(dst: &SocketAddrV4) -> libc::sockaddr_in {
    // SAFETY: an all-zero sockaddr_in is valid; its fields are set below.
    let mut sa: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_port = dst.port().to_be();
    sa.sin_addr.s_addr = u32::from(*dst.ip()).to_be();
    sa
}

/// One datagram.
fn send_one(sock: RawFd, dst: &SocketAddrV4, data: &[u8]) -> io::Result<()> {
    let sa = sockaddr(dst);
    // SAFETY: `data` and `sa` are live for the call, and their lengths are passed.
    let n = unsafe {
        libc::sendto(
            sock,
            data.as_ptr().cast(),
            data.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `data` as datagrams of `seg` bytes (the last maybe shorter) in one sendmsg.
fn send_gso(sock: RawFd, dst: &SocketAddrV4, data: &[u8], seg: usize) -> io::Result<()> {
    let mut sa = sockaddr(dst);
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut control = [0u64; 4];
    // SAFETY: an all-zero msghdr is valid; its pointers are set to live values below.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut sa as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE of a u16 fits `control` (32 bytes); CMSG_FIRSTHDR of a msghdr whose
    // control buffer is that large is non-null, and the u16 is written inside it.
    unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<u16>() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_UDP;
        (*c).cmsg_type = UDP_SEGMENT;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<u16>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<u16>(), seg as u16);
    }
    // SAFETY: `msg` points at `sa`, `iov` (into `data`) and `control`, alive for the call.
    let n = unsafe { libc::sendmsg(sock, &msg, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The datagrams of `data` (ending at `ends`) with one sendmmsg (more if it stops short).
fn send_each(sock: RawFd, dst: &SocketAddrV4, data: &[u8], ends: &[usize]) -> io::Result<()> {
    let mut sa = sockaddr(dst);
    let mut iovs = Vec::with_capacity(ends.len());
    let mut start = 0;
    for &end in ends {
        iovs.push(libc::iovec {
            iov_base: data[start..end].as_ptr() as *mut libc::c_void,
            iov_len: end - start,
        });
        start = end;
    }
    // SAFETY: all-zero mmsghdrs are valid; each is pointed at `sa` and one iovec below.
    let mut msgs: Vec<libc::mmsghdr> = (0..ends.len())
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_name = (&mut sa as *mut libc::sockaddr_in).cast();
        m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut done = 0;
    let mut first_err = None;
    while done < msgs.len() {
        // SAFETY: `msgs[done..]` are valid headers pointing at live buffers (above).
        let n = unsafe {
            libc::sendmmsg(
                sock,
                msgs[done..].as_mut_ptr(),
                (msgs.len() - done) as u32,
                0,
            )
        };
        if n <= 0 {
            // This datagram is refused (too big for the path, buffer full): skip it.
            first_err.get_or_insert_with(io::Error::last_os_error);
            done += 1;
        } else {
            done += n as usize;
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
