//! AF_XDP sockets and their four rings, on the raw syscalls (`linux/if_xdp.h`).
//!
//! Written here rather than taken from xsk-rs/libxdp because of how libxdp shares a UMEM
//! (`xsk_socket__create_shared`): its first socket is the UMEM's own registration fd, which stays
//! bound to the first device until the UMEM is deleted. Once that device goes (the first
//! container's veth, deleted with its port) the kernel refuses every later share of the UMEM
//! (`EBADF`: the socket shared from must be bound), and once all sockets went libxdp binds the
//! already-used fd again (`EBUSY`). A daemon whose ports come and go needs to share from *any*
//! live socket of the UMEM and to register it afresh when none is left: `umem::Chunk` does that,
//! on the sockets below.
//!
//! The rings are the kernel's single-producer/single-consumer queues: free-running `u32`
//! producer and consumer indexes in shared memory, published with release stores and read with
//! acquire loads, as libxdp's inline helpers do.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};

/// One entry of the rx and tx rings.
pub use libc::xdp_desc as Desc;

/// What a new socket's UMEM is.
#[derive(Debug, Clone, Copy)]
pub enum UmemSource {
    /// Register this memory on the new socket (the UMEM's first socket).
    Register {
        addr: *mut u8,
        len: usize,
        frame_size: u32,
    },
    /// Share the UMEM of this bound socket.
    Share(RawFd),
}

/// A memory-mapped ring of `T` (`Desc` for rx/tx, `u64` addresses for fill/completion).
struct Ring<T> {
    map: *mut libc::c_void,
    map_len: usize,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    mask: u32,
    size: u32,
    /// Our copy of the index we own (the producer's for a ring we fill, else the consumer's).
    local: u32,
    /// The other side's index as last read.
    cached: u32,
}

// SAFETY: the ring is plain shared memory owned by this struct; the kernel is the only other
// party and synchronises through the atomics.
unsafe impl<T> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Maps the ring of `size` entries at page offset `pgoff` of `fd`.
    fn map(
        fd: RawFd,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: u64,
        producer_side: bool,
    ) -> io::Result<Ring<T>> {
        let map_len = off.desc as usize + size as usize * std::mem::size_of::<T>();
        // SAFETY: a shared mapping of the socket's ring at the offset the kernel reserved for
        // it; the length is what XDP_MMAP_OFFSETS says the ring spans.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd,
                pgoff as libc::off_t,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = map.cast::<u8>();
        // SAFETY: the offsets are inside the mapping (the kernel's layout of the ring).
        let (producer, consumer, flags, entries) = unsafe {
            (
                base.add(off.producer as usize).cast::<AtomicU32>(),
                base.add(off.consumer as usize).cast::<AtomicU32>(),
                base.add(off.flags as usize).cast::<AtomicU32>(),
                base.add(off.desc as usize).cast::<T>(),
            )
        };
        let mut ring = Ring {
            map,
            map_len,
            producer,
            consumer,
            flags,
            entries,
            mask: size - 1,
            size,
            local: 0,
            cached: 0,
        };
        // SAFETY: the index pointers are inside the live mapping.
        unsafe {
            if producer_side {
                ring.local = (*ring.producer).load(Ordering::Relaxed);
                ring.cached = (*ring.consumer).load(Ordering::Acquire);
            } else {
                ring.local = (*ring.consumer).load(Ordering::Relaxed);
                ring.cached = (*ring.producer).load(Ordering::Acquire);
            }
        }
        Ok(ring)
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: `flags` points into the live mapping.
        unsafe { (*self.flags).load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0 }
    }

    /// Producer side: entries free, read afresh from the kernel when fewer than `want`.
    fn free(&mut self, want: u32) -> u32 {
        let free = self.size - self.local.wrapping_sub(self.cached);
        if free >= want {
            return free;
        }
        self.size - self.local.wrapping_sub(self.refresh_consumer())
    }

    fn refresh_consumer(&mut self) -> u32 {
        // SAFETY: `consumer` points into the live mapping.
        self.cached = unsafe { (*self.consumer).load(Ordering::Acquire) };
        self.cached
    }

    /// Producer side: puts as many of `items` as fit; returns how many.
    fn produce(&mut self, items: &[T]) -> usize {
        let n = (self.free(items.len() as u32) as usize).min(items.len());
        for (i, item) in items[..n].iter().enumerate() {
            let idx = self.local.wrapping_add(i as u32) & self.mask;
            // SAFETY: `idx` is below the ring size, and the entry is ours until the producer
            // index passes it.
            unsafe { self.entries.add(idx as usize).write(*item) };
        }
        self.local = self.local.wrapping_add(n as u32);
        // SAFETY: `producer` points into the live mapping; the release orders the writes above.
        unsafe { (*self.producer).store(self.local, Ordering::Release) };
        n
    }

    /// Consumer side: takes up to `out.len()` entries; returns how many.
    fn consume(&mut self, out: &mut [T]) -> usize {
        let mut avail = self.cached.wrapping_sub(self.local);
        if avail == 0 {
            // SAFETY: `producer` points into the live mapping.
            self.cached = unsafe { (*self.producer).load(Ordering::Acquire) };
            avail = self.cached.wrapping_sub(self.local);
        }
        let n = (avail as usize).min(out.len());
        for (i, slot) in out[..n].iter_mut().enumerate() {
            let idx = self.local.wrapping_add(i as u32) & self.mask;
            // SAFETY: `idx` is below the ring size and the kernel published the entry (the
            // acquire load of its producer index).
            *slot = unsafe { self.entries.add(idx as usize).read() };
        }
        self.local = self.local.wrapping_add(n as u32);
        if n > 0 {
            // SAFETY: as above; the release hands the entries back to the kernel.
            unsafe { (*self.consumer).store(self.local, Ordering::Release) };
        }
        n
    }

    /// Producer side: entries the kernel has not consumed yet.
    fn outstanding(&mut self) -> u32 {
        self.local.wrapping_sub(self.refresh_consumer())
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `map` with this length and nothing refers to it
        // after the ring goes.
        unsafe { libc::munmap(self.map, self.map_len) };
    }
}

/// The kernel's counters for a socket (`XDP_STATISTICS`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Statistics {
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub tx_invalid: u64,
}

/// A bound AF_XDP socket with its rx, tx, fill and completion rings.
pub struct XskSocket {
    // Rings before the fd: they are unmapped first, so that closing the fd releases the socket.
    rx: Ring<Desc>,
    tx: Ring<Desc>,
    fill: Ring<u64>,
    comp: Ring<u64>,
    fd: OwnedFd,
}

fn setsockopt<T>(fd: RawFd, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a live value of the size passed.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_XDP,
            opt,
            (val as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl XskSocket {
    /// A socket on queue 0 of interface `ifindex` (in the calling thread's namespace), its
    /// rings of `ring_size` entries each, in copy mode with need-wakeup (a shared socket
    /// inherits both from the UMEM's).
    pub fn bind(ifindex: u32, ring_size: u32, umem: UmemSource) -> io::Result<XskSocket> {
        // SAFETY: plain socket(2); the fd is owned below.
        let raw = unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let fdr = fd.as_raw_fd();
        if let UmemSource::Register {
            addr,
            len,
            frame_size,
        } = umem
        {
            let reg = libc::xdp_umem_reg {
                addr: addr as u64,
                len: len as u64,
                chunk_size: frame_size,
                headroom: 0,
                flags: 0,
                tx_metadata_len: 0,
            };
            setsockopt(fdr, libc::XDP_UMEM_REG, &reg)?;
        }
        let entries = ring_size as libc::c_int;
        setsockopt(fdr, libc::XDP_UMEM_FILL_RING, &entries)?;
        setsockopt(fdr, libc::XDP_UMEM_COMPLETION_RING, &entries)?;
        setsockopt(fdr, libc::XDP_RX_RING, &entries)?;
        setsockopt(fdr, libc::XDP_TX_RING, &entries)?;
        // SAFETY: all-zero is a valid xdp_mmap_offsets.
        let mut off: libc::xdp_mmap_offsets = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_mmap_offsets>() as libc::socklen_t;
        // SAFETY: `off` is writable for `optlen` bytes.
        let rc = unsafe {
            libc::getsockopt(
                fdr,
                libc::SOL_XDP,
                libc::XDP_MMAP_OFFSETS,
                (&mut off as *mut libc::xdp_mmap_offsets).cast(),
                &mut optlen,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        if optlen as usize != std::mem::size_of::<libc::xdp_mmap_offsets>() {
            return Err(io::Error::other(
                "this kernel's AF_XDP rings have no flags word (need-wakeup): too old",
            ));
        }
        let fill = Ring::map(
            fdr,
            &off.fr,
            ring_size,
            libc::XDP_UMEM_PGOFF_FILL_RING,
            true,
        )?;
        let comp = Ring::map(
            fdr,
            &off.cr,
            ring_size,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING,
            false,
        )?;
        let rx = Ring::map(
            fdr,
            &off.rx,
            ring_size,
            libc::XDP_PGOFF_RX_RING as u64,
            false,
        )?;
        let tx = Ring::map(
            fdr,
            &off.tx,
            ring_size,
            libc::XDP_PGOFF_TX_RING as u64,
            true,
        )?;
        let (flags, shared) = match umem {
            UmemSource::Register { .. } => (libc::XDP_COPY | libc::XDP_USE_NEED_WAKEUP, 0),
            UmemSource::Share(other) => (libc::XDP_SHARED_UMEM, other as u32),
        };
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: 0,
            sxdp_shared_umem_fd: shared,
        };
        // SAFETY: `sa` is a live sockaddr_xdp of the length passed.
        let rc = unsafe {
            libc::bind(
                fdr,
                (&sa as *const libc::sockaddr_xdp).cast(),
                std::mem::size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(XskSocket {
            rx,
            tx,
            fill,
            comp,
            fd,
        })
    }

    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Gives frames (their UMEM addresses) to the kernel to receive into; returns how many fit.
    pub fn fill(&mut self, addrs: &[u64]) -> usize {
        let n = self.fill.produce(addrs);
        if n > 0 && self.fill.needs_wakeup() {
            // SAFETY: a zero-length non-blocking recvfrom on our socket: the kernel's cue to
            // look at the fill ring; it reads and writes nothing of ours.
            unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    0,
                    libc::MSG_DONTWAIT,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                )
            };
        }
        n
    }

    /// Frames on the fill ring the kernel has not taken yet.
    pub fn fill_outstanding(&mut self) -> u32 {
        self.fill.outstanding()
    }

    /// Received frames.
    pub fn recv(&mut self, out: &mut [Desc]) -> usize {
        self.rx.consume(out)
    }

    /// Queues frames to transmit; returns how many fit. `kick` sends them.
    pub fn transmit(&mut self, descs: &[Desc]) -> usize {
        self.tx.produce(descs)
    }

    /// Frames whose transmission completed.
    pub fn completed(&mut self, out: &mut [u64]) -> usize {
        self.comp.consume(out)
    }

    /// Whether the tx ring holds frames the kernel has not taken and waits for a kick.
    pub fn tx_waiting(&mut self) -> bool {
        self.tx.needs_wakeup() && self.tx.outstanding() > 0
    }

    /// `sendto(fd, NULL, 0, MSG_DONTWAIT)`: tells the kernel to transmit from the tx ring.
    /// EAGAIN and EBUSY mean "call again", ENOBUFS a full socket buffer: not errors here.
    /// ENXIO (the socket is no longer bound: the veth vanished) comes back as EBADFD.
    pub fn kick(&self) -> io::Result<()> {
        // SAFETY: a zero-length sendto with null buffers on a socket fd we own; the kernel
        // reads nothing from userspace.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                std::ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                std::ptr::null(),
                0,
            )
        };
        if rc >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::EINTR) => Ok(()),
            Some(libc::ENXIO) => Err(io::Error::from_raw_os_error(libc::EBADFD)),
            _ => Err(e),
        }
    }

    pub fn statistics(&self) -> Statistics {
        // SAFETY: all-zero is a valid xdp_statistics.
        let mut s: libc::xdp_statistics = unsafe { std::mem::zeroed() };
        let mut optlen = std::mem::size_of::<libc::xdp_statistics>() as libc::socklen_t;
        // SAFETY: `s` is writable for `optlen` bytes.
        let rc = unsafe {
            libc::getsockopt(
                self.fd.as_raw_fd(),
                libc::SOL_XDP,
                libc::XDP_STATISTICS,
                (&mut s as *mut libc::xdp_statistics).cast(),
                &mut optlen,
            )
        };
        if rc < 0 {
            return Statistics::default();
        }
        Statistics {
            rx_dropped: s.rx_dropped,
            rx_ring_full: s.rx_ring_full,
            rx_fill_ring_empty: s.rx_fill_ring_empty_descs,
            tx_invalid: s.tx_invalid_descs,
        }
    }
}
