//! The daemon's AF_XDP frames: one pool of UMEM chunks shared by every AF_XDP socket
//! (`XDP_SHARED_UMEM`, each socket with its own fill and completion rings).
//!
//! A chunk is one registered UMEM of `afxdp_frames` frames (4096 by default: 8 MiB of 2 KiB
//! frames, room for about 64 busy ports or a few hundred idle ones). A port joins a chunk that
//! has room for its *reserve* (the frames an idle port keeps in its fill ring) and borrows more
//! while it is busy, up to its ring size, from the chunk's free frames, never from the reserve
//! of the chunk's other ports. When every chunk is spoken for, a new one is made, up to
//! `afxdp_max_frames` in all; past that, adding an AF_XDP port fails with a clear error.
//!
//! Every frame is in exactly one place: the chunk's free list, or owned by one member (in its
//! fill ring, in the kernel, in the dataplane's hands, on its tx ring, or in its stash). The
//! owner table says which member holds which frame, so a port that goes gives back every frame
//! it held, wherever the kernel had it (in copy mode the kernel stops touching a socket's frames
//! once the socket is released; `Share::leave` releases it first).
//!
//! A new socket shares the UMEM from any bound member (the kernel requires a bound one), trying
//! the next when one's device has vanished; a chunk with no members left registers its memory
//! afresh on its next socket.

use std::io;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use serde::{Deserialize, Serialize};

use super::xsk::{UmemSource, XskSocket};

/// Frames per chunk unless `[daemon] afxdp_frames` says otherwise.
pub const DEFAULT_CHUNK_FRAMES: u32 = 4096;
/// Frames in all chunks together unless `[daemon] afxdp_max_frames` says otherwise (512 MiB of
/// 2 KiB frames).
pub const DEFAULT_MAX_FRAMES: u32 = 262_144;
/// A chunk takes new ports while their reserves add up to at most this share of its frames; the
/// rest is what busy ports borrow.
const ADMIT_NUM: u32 = 7;
const ADMIT_DEN: u32 = 8;
/// Owner-table value of a free frame.
const FREE: u32 = 0;

struct Settings {
    chunk_frames: u32,
    max_frames: u32,
}

static SETTINGS: Mutex<Settings> = Mutex::new(Settings {
    chunk_frames: DEFAULT_CHUNK_FRAMES,
    max_frames: DEFAULT_MAX_FRAMES,
});

/// The live chunks (a chunk lives while a port holds it).
static CHUNKS: Mutex<Vec<Weak<Chunk>>> = Mutex::new(Vec::new());
static NEXT_CHUNK: Mutex<u32> = Mutex::new(0);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sets the pool's sizes (from the config, before any AF_XDP port exists).
pub fn configure(chunk_frames: Option<u32>, max_frames: Option<u32>) -> Result<(), String> {
    let chunk = chunk_frames.unwrap_or(DEFAULT_CHUNK_FRAMES);
    let max = max_frames.unwrap_or(DEFAULT_MAX_FRAMES.max(chunk));
    if !(256..=1 << 20).contains(&chunk) || !chunk.is_power_of_two() {
        return Err(format!(
            "afxdp_frames {chunk} is not valid: use a power of two from 256 to 1048576"
        ));
    }
    if max < chunk {
        return Err(format!(
            "afxdp_max_frames {max} is smaller than afxdp_frames {chunk}"
        ));
    }
    *lock(&SETTINGS) = Settings {
        chunk_frames: chunk,
        max_frames: max,
    };
    Ok(())
}

/// Why a port could not join the pool.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "the AF_XDP frame pool is full: {used} of {max} frames are in chunks of {chunk} and \
         another chunk would pass afxdp_max_frames (raise it in [daemon], or remove AF_XDP ports)"
    )]
    Full { used: u64, max: u32, chunk: u32 },
    #[error("cannot allocate {0} bytes for a UMEM chunk: {1}")]
    Memory(usize, io::Error),
    /// Binding the socket failed (the caller says where).
    #[error("{0}")]
    Bind(io::Error),
}

struct Member {
    /// Index in the chunk's counts; `slot + 1` marks its frames in the owner table.
    slot: u32,
    fd: i32,
    reserve: u32,
}

struct Inner {
    free: Vec<u32>,
    members: Vec<Member>,
    /// Member slots not in use.
    free_slots: Vec<u32>,
    reserved: u32,
}

/// One registered UMEM: `frames` frames of `frame_size` bytes.
pub struct Chunk {
    number: u32,
    mem: *mut u8,
    len: usize,
    frame_size: u32,
    frames: u32,
    inner: Mutex<Inner>,
    /// Frame index to `slot + 1` of the member holding it (`FREE` when in the free list).
    /// Atomic, not under the lock: a frame forwarded by descriptor changes hands in the
    /// dataplane's hot path (`Loan`).
    owner: Box<[AtomicU32]>,
    /// Frames each member slot holds.
    counts: Box<[AtomicU32]>,
}

// SAFETY: the memory is owned by the chunk and only reached through `Share`'s bounds-checked
// accessors; the bookkeeping is behind the mutex.
unsafe impl Send for Chunk {}
// SAFETY: as above.
unsafe impl Sync for Chunk {}

impl Chunk {
    fn new(frame_size: u32, frames: u32) -> Result<Chunk, JoinError> {
        let len = frame_size as usize * frames as usize;
        // SAFETY: a fresh private anonymous mapping; the kernel pins it when it is registered.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if mem == libc::MAP_FAILED {
            return Err(JoinError::Memory(len, io::Error::last_os_error()));
        }
        let number = {
            let mut n = lock(&NEXT_CHUNK);
            *n += 1;
            *n
        };
        Ok(Chunk {
            number,
            mem: mem.cast(),
            len,
            frame_size,
            frames,
            inner: Mutex::new(Inner {
                free: (0..frames).rev().collect(),
                members: Vec::new(),
                // Every member reserves a frame at least: never more members than frames.
                free_slots: (0..frames).rev().collect(),
                reserved: 0,
            }),
            owner: (0..frames).map(|_| AtomicU32::new(FREE)).collect(),
            counts: (0..frames).map(|_| AtomicU32::new(0)).collect(),
        })
    }

    /// Frames the members below their reserve may still claim.
    fn unmet_reserve(&self, inner: &Inner, except: u32) -> u32 {
        inner
            .members
            .iter()
            .filter(|m| m.slot != except)
            .map(|m| {
                m.reserve
                    .saturating_sub(self.counts[m.slot as usize].load(Relaxed))
            })
            .sum()
    }

    /// Whether a port with `reserve` fits: the reserves stay within their share of the chunk,
    /// and the free frames cover every member's unmet reserve and the newcomer's (busy ports may
    /// have borrowed the rest).
    fn admits(&self, inner: &Inner, reserve: u32) -> bool {
        inner.reserved + reserve <= self.frames / ADMIT_DEN * ADMIT_NUM
            && inner.free.len() as u32 >= self.unmet_reserve(inner, u32::MAX) + reserve
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`; every socket using it is gone (each held the chunk).
        unsafe { libc::munmap(self.mem.cast(), self.len) };
    }
}

/// A port's membership of a chunk.
pub struct Share {
    chunk: Arc<Chunk>,
    slot: u32,
}

impl Share {
    /// Binds a socket (`bind` gets the UMEM to use) in a chunk of `frame_size` frames with
    /// room for `reserve` more, making a chunk when none has room.
    pub fn join(
        frame_size: u32,
        reserve: u32,
        mut bind: impl FnMut(UmemSource) -> io::Result<XskSocket>,
    ) -> Result<(Share, XskSocket), JoinError> {
        let mut chunks = lock(&CHUNKS);
        chunks.retain(|w| w.strong_count() > 0);
        let live: Vec<Arc<Chunk>> = chunks.iter().filter_map(Weak::upgrade).collect();
        let mut last_err = None;
        for chunk in live.iter().filter(|c| c.frame_size == frame_size) {
            let mut inner = lock(&chunk.inner);
            if !chunk.admits(&inner, reserve) {
                continue;
            }
            match Self::bind_in(chunk, &mut inner, &mut bind) {
                Ok(sock) => {
                    let slot = Self::enrol(&mut inner, &sock, reserve);
                    drop(inner);
                    let chunk = chunk.clone();
                    return Ok((Share { chunk, slot }, sock));
                }
                // Every member's device gone: the chunk takes no one until they leave.
                Err(None) => continue,
                Err(Some(e)) => last_err = Some(e),
            }
        }
        if let Some(e) = last_err {
            // A bind that failed for the port's own reasons fails the same in a new chunk.
            return Err(JoinError::Bind(e));
        }
        let settings = lock(&SETTINGS);
        let used: u64 = live.iter().map(|c| u64::from(c.frames)).sum();
        if used + u64::from(settings.chunk_frames) > u64::from(settings.max_frames) {
            return Err(JoinError::Full {
                used,
                max: settings.max_frames,
                chunk: settings.chunk_frames,
            });
        }
        let chunk = Arc::new(Chunk::new(frame_size, settings.chunk_frames)?);
        drop(settings);
        let mut inner = lock(&chunk.inner);
        let sock = match Self::bind_in(&chunk, &mut inner, &mut bind) {
            Ok(sock) => sock,
            Err(e) => {
                return Err(JoinError::Bind(
                    e.unwrap_or_else(|| io::Error::other("no socket to share from")),
                ))
            }
        };
        let slot = Self::enrol(&mut inner, &sock, reserve);
        drop(inner);
        chunks.push(Arc::downgrade(&chunk));
        Ok((Share { chunk, slot }, sock))
    }

    fn enrol(inner: &mut Inner, sock: &XskSocket, reserve: u32) -> u32 {
        // `admits` keeps the members fewer than the frames, so a slot is always free.
        let slot = inner.free_slots.pop().unwrap_or(0);
        inner.members.push(Member {
            slot,
            fd: sock.fd(),
            reserve,
        });
        inner.reserved += reserve;
        slot
    }

    /// Binds in `chunk`: registers its memory when it has no member, else shares from the first
    /// member that is still bound. `Err(None)`: no member is (every one's device vanished).
    fn bind_in(
        chunk: &Chunk,
        inner: &mut Inner,
        bind: &mut impl FnMut(UmemSource) -> io::Result<XskSocket>,
    ) -> Result<XskSocket, Option<io::Error>> {
        if inner.members.is_empty() {
            return bind(UmemSource::Register {
                addr: chunk.mem,
                len: chunk.len,
                frame_size: chunk.frame_size,
            })
            .map_err(Some);
        }
        for m in &inner.members {
            match bind(UmemSource::Share(m.fd)) {
                Ok(sock) => return Ok(sock),
                Err(e) if e.raw_os_error() == Some(libc::EBADF) => continue,
                Err(e) => return Err(Some(e)),
            }
        }
        Err(None)
    }

    /// The chunk's number, for `show`.
    pub fn chunk_number(&self) -> u32 {
        self.chunk.number
    }

    /// Takes up to `n` free frames into `out` (their addresses): always while this port is
    /// below its reserve, beyond it only from what the other ports' reserves leave.
    pub fn take(&self, n: usize, out: &mut Vec<u64>) -> usize {
        let c = &*self.chunk;
        let mut inner = lock(&c.inner);
        let Some(m) = inner.members.iter().find(|m| m.slot == self.slot) else {
            return 0;
        };
        let owned = c.counts[self.slot as usize].load(Relaxed);
        let below = m.reserve.saturating_sub(owned) as usize;
        let spare = inner
            .free
            .len()
            .saturating_sub(c.unmet_reserve(&inner, self.slot) as usize);
        let n = n.min(below.max(spare)).min(inner.free.len());
        for _ in 0..n {
            let Some(f) = inner.free.pop() else { break };
            c.owner[f as usize].store(self.slot + 1, Relaxed);
            out.push(u64::from(f) * u64::from(c.frame_size));
        }
        c.counts[self.slot as usize].fetch_add(n as u32, Relaxed);
        n
    }

    /// Gives the frames in `addrs` back to the chunk (and empties `addrs`).
    pub fn give(&self, addrs: &mut Vec<u64>) {
        let c = &*self.chunk;
        let mut inner = lock(&c.inner);
        let mut n = 0;
        for a in addrs.drain(..) {
            let f = (a / u64::from(c.frame_size)) as usize;
            if c.owner.get(f).map(|o| o.load(Relaxed)) == Some(self.slot + 1) {
                c.owner[f].store(FREE, Relaxed);
                inner.free.push(f as u32);
                n += 1;
            }
        }
        c.counts[self.slot as usize].fetch_sub(n, Relaxed);
    }

    /// Frames this port holds, as the owner table says.
    pub fn owned(&self) -> u32 {
        self.chunk.counts[self.slot as usize].load(Relaxed)
    }

    /// Lends the received frame at `addr` (`len` bytes from there) to the dataplane; `None`
    /// when the descriptor is not inside one frame of this chunk.
    pub fn lend(&self, addr: u64, len: usize) -> Option<Loan> {
        let (start, len) = self.bounds(addr, len)?;
        Some(Loan {
            // SAFETY: `bounds` keeps the range inside the chunk's mapping.
            data: unsafe { self.chunk.mem.add(start) },
            addr,
            len: len as u32,
            chunk: self.chunk.number,
            from: self.slot,
        })
    }

    /// Takes a frame lent by another port of this chunk as this port's (it is going on this
    /// port's tx ring); `false` when the loan is of another chunk.
    pub fn adopt(&self, loan: &Loan) -> bool {
        let c = &*self.chunk;
        if loan.chunk != c.number {
            return false;
        }
        let f = (loan.addr / u64::from(c.frame_size)) as usize;
        c.owner[f].store(self.slot + 1, Relaxed);
        c.counts[loan.from as usize].fetch_sub(1, Relaxed);
        c.counts[self.slot as usize].fetch_add(1, Relaxed);
        true
    }

    /// The bytes of the frame at `addr` (a descriptor's address and length), if they are
    /// inside one frame of this chunk.
    pub fn data(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let (start, len) = self.bounds(addr, len)?;
        // SAFETY: `bounds` keeps the range inside the chunk's mapping, which lives as long as
        // `self`; the frame is this port's (on its rx ring or written by it) while it is read.
        Some(unsafe { std::slice::from_raw_parts(self.chunk.mem.add(start), len) })
    }

    /// The frame at `addr`, writable, `len` bytes, if inside one frame of this chunk.
    pub fn data_mut(&mut self, addr: u64, len: usize) -> Option<&mut [u8]> {
        let (start, len) = self.bounds(addr, len)?;
        // SAFETY: as `data`; the frame is free and this port's (from its stash), so neither the
        // kernel nor another port touches it while it is written.
        Some(unsafe { std::slice::from_raw_parts_mut(self.chunk.mem.add(start), len) })
    }

    fn bounds(&self, addr: u64, len: usize) -> Option<(usize, usize)> {
        let fs = u64::from(self.chunk.frame_size);
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len)?;
        let frame_end = ((addr / fs + 1) * fs) as usize;
        (end <= frame_end && end <= self.chunk.len).then_some((start, len))
    }

    /// Leaves the chunk: releases the socket (no frame of it is touched by the kernel after
    /// that) and takes back every frame this port held, wherever it was.
    pub fn leave(self, sock: XskSocket) {
        let c = &*self.chunk;
        let mut inner = lock(&c.inner);
        drop(sock);
        if let Some(pos) = inner.members.iter().position(|m| m.slot == self.slot) {
            let m = inner.members.swap_remove(pos);
            inner.reserved -= m.reserve;
        }
        let mine = self.slot + 1;
        for (f, o) in c.owner.iter().enumerate() {
            if o.load(Relaxed) == mine {
                o.store(FREE, Relaxed);
                inner.free.push(f as u32);
            }
        }
        c.counts[self.slot as usize].store(0, Relaxed);
        inner.free_slots.push(self.slot);
    }
}

/// A received frame lent by its port to the dataplane, read and changed in place in the UMEM,
/// then either sent by descriptor from another AF_XDP port of the same chunk (`Port::send_loan`)
/// or handed back to its port (`Port::end_loans`). One loan per frame: the frame is off the rx
/// ring and not yet on any other, so nothing else reads or writes it meanwhile.
pub struct Loan {
    data: *mut u8,
    addr: u64,
    len: u32,
    chunk: u32,
    from: u32,
}

// SAFETY: a loan is the one handle to its frame (see above); the chunk's memory outlives it (the
// lending port holds the chunk, and loans end within the batch that made them).
unsafe impl Send for Loan {}

impl Loan {
    pub fn addr(&self) -> u64 {
        self.addr
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `lend` checked the range; the loan is the frame's one handle.
        unsafe { std::slice::from_raw_parts(self.data, self.len as usize) }
    }

    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `bytes`, and `&mut self` makes the borrow unique.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len as usize) }
    }
}

/// One chunk, for `show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkStatus {
    pub chunk: u32,
    pub frame_size: u32,
    pub frames: u32,
    pub free: u32,
    /// Frames the ports hold (free + held = frames, always).
    pub held: u32,
    pub ports: u32,
    /// Frames the ports' reserves add up to.
    pub reserved: u32,
}

/// The daemon's AF_XDP frames, for `show`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub chunk_frames: u32,
    pub max_frames: u32,
    pub frames: u32,
    pub free: u32,
    pub bytes: u64,
    pub chunks: Vec<ChunkStatus>,
}

/// Where the daemon's AF_XDP frames are.
pub fn status() -> PoolStatus {
    let (chunk_frames, max_frames) = {
        let s = lock(&SETTINGS);
        (s.chunk_frames, s.max_frames)
    };
    let live: Vec<Arc<Chunk>> = lock(&CHUNKS).iter().filter_map(Weak::upgrade).collect();
    let mut st = PoolStatus {
        chunk_frames,
        max_frames,
        ..Default::default()
    };
    for c in &live {
        let inner = lock(&c.inner);
        let held = c.owner.iter().filter(|o| o.load(Relaxed) != FREE).count() as u32;
        st.frames += c.frames;
        st.free += inner.free.len() as u32;
        st.bytes += c.len as u64;
        st.chunks.push(ChunkStatus {
            chunk: c.number,
            frame_size: c.frame_size,
            frames: c.frames,
            free: inner.free.len() as u32,
            held,
            ports: inner.members.len() as u32,
            reserved: inner.reserved,
        });
    }
    st.chunks.sort_by_key(|c| c.chunk);
    st
}
