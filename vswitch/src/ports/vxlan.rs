//! The VXLAN underlay: one UDP socket bound to the VTEP's address (port 4789 by default) that
//! receives every overlay network's datagrams, and a tunnel port per (overlay network, remote
//! VTEP) that encapsulates what the pipeline sends it and writes it to that peer through the
//! shared socket. The outer IP header is the kernel's: DF set (IP_PMTUDISC_DO: a datagram over
//! the path MTU is refused, never fragmented), TTL as configured, UDP checksum computed.
//!
//! Batched both ways, as userspace tunnels must be to reach multi-Gbit/s: a tunnel keeps the
//! datagrams of one dataplane batch and sends them at `flush` as one UDP GSO super-datagram
//! (`UDP_SEGMENT`: the kernel cuts it, or a veth carries it whole) when they are of one size, or
//! with one `sendmmsg` otherwise; the receive socket has `UDP_GRO` on and is read with
//! `recvmmsg`, each coalesced datagram split back by its segment size (`RxBatch`). Both are
//! hand-written on libc: no crate offers the GSO/GRO control messages.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
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
    // Coalesced receives where the kernel has them (5.0+); without, one datagram each.
    let one: libc::c_int = 1;
    // SAFETY: the fd is the socket's; `one` is a c_int that outlives the call.
    let _ = unsafe {
        libc::setsockopt(
            rx.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
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

const UDP_SEGMENT: libc::c_int = 103;
const UDP_GRO: libc::c_int = 104;
/// Segments the kernel takes in one GSO send (UDP_MAX_SEGMENTS), and the bytes.
const GSO_MAX_SEGMENTS: usize = 64;
const GSO_MAX_BYTES: usize = 60 * 1024;
/// Messages one `recvmmsg` reads.
pub const RX_MESSAGES: usize = 8;
const RX_BUF: usize = 65536;

/// What one `recvmmsg` read: each message's bytes, its source and its GRO segment size.
pub struct RxBatch {
    bufs: Vec<Box<[u8]>>,
    lens: [usize; RX_MESSAGES],
    srcs: [Option<Ipv4Addr>; RX_MESSAGES],
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

    /// Message `i`'s source VTEP (IPv4).
    pub fn src(&self, i: usize) -> Option<Ipv4Addr> {
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

impl Vtep {
    /// Reads up to `RX_MESSAGES` messages (each maybe a GRO batch) into `batch`; returns how
    /// many, `WouldBlock` when there are none.
    pub fn recv_batch(&self, batch: &mut RxBatch) -> io::Result<usize> {
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
                self.rx.as_raw_fd(),
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
            batch.srcs[i] = (names[i].sin_family == libc::AF_INET as u16)
                .then(|| Ipv4Addr::from(u32::from_be(names[i].sin_addr.s_addr)));
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
}

/// A tunnel to one remote VTEP for one overlay network: a transmit-only port.
pub struct Tunnel {
    vtep: Arc<Vtep>,
    dst: SocketAddrV4,
    header: [u8; overlay::HEADER_LEN],
    /// The datagrams (VXLAN header and frame, back to back) waiting for `flush`, from one
    /// transmit socket (`pick`); `ends[i]` is where datagram `i` ends.
    pending: Vec<u8>,
    ends: Vec<usize>,
    pick: usize,
}

impl Tunnel {
    pub fn new(vtep: Arc<Vtep>, remote: Ipv4Addr, port: u16, vni: u32) -> Tunnel {
        Tunnel {
            vtep,
            dst: SocketAddrV4::new(remote, port),
            header: overlay::header(vni),
            pending: Vec::with_capacity(GSO_MAX_BYTES + 2048),
            ends: Vec::with_capacity(GSO_MAX_SEGMENTS),
            pick: 0,
        }
    }

    /// Whether the pending datagrams can go as one GSO send: every one of the first's size but
    /// the last, which may be shorter.
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

    fn send_pending(&mut self) -> io::Result<()> {
        if self.ends.is_empty() {
            return Ok(());
        }
        let sock = self.vtep.tx[self.pick].as_raw_fd();
        let result = match self.uniform() {
            Some(seg) if self.ends.len() > 1 && self.vtep.gso.load(Ordering::Relaxed) => {
                match send_gso(sock, &self.dst, &self.pending, seg) {
                    Err(e)
                        if matches!(
                            e.raw_os_error(),
                            Some(libc::ENOPROTOOPT | libc::EOPNOTSUPP | libc::EIO)
                        ) =>
                    {
                        // No UDP GSO here (or not on this route): datagram by datagram from now.
                        self.vtep.gso.store(false, Ordering::Relaxed);
                        send_each(sock, &self.dst, &self.pending, &self.ends)
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                        send_each(sock, &self.dst, &self.pending, &self.ends)
                    }
                    other => other,
                }
            }
            // One datagram (an ACK, a lone frame): one send_to, no headers to build.
            _ if self.ends.len() == 1 => self.vtep.tx[self.pick]
                .send_to(&self.pending, self.dst)
                .map(|_| ()),
            _ => send_each(sock, &self.dst, &self.pending, &self.ends),
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
        if !self.ends.is_empty() {
            let first = self.ends[0];
            let last = self.ends[self.ends.len() - 1]
                - self
                    .ends
                    .get(self.ends.len().wrapping_sub(2))
                    .copied()
                    .unwrap_or(0);
            let fits = pick == self.pick
                && self.ends.len() < GSO_MAX_SEGMENTS
                && self.pending.len() + len <= GSO_MAX_BYTES
                && len <= first
                && (self.ends.len() == 1 || last == first);
            if !fits {
                sent = self.send_pending();
            }
        }
        if self.ends.is_empty() {
            self.pick = pick;
        }
        self.pending.extend_from_slice(&self.header);
        self.pending.extend_from_slice(frame);
        self.ends.push(self.pending.len());
        sent.map(|()| frame.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send_pending()
    }

    fn kind(&self) -> &'static str {
        "vxlan"
    }
}
