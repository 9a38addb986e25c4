//! AF_XDP ports: an XDP socket bound to the host end of a veth pair.
//!
//! Every socket's frames come from the daemon's one pool (`ports::umem`: shared UMEM chunks,
//! each socket with its own fill and completion rings); the sockets and rings are ours
//! (`ports::xsk`, on the raw syscalls). A port holds frames in four places: the fill ring and
//! the kernel (`fill_target` of them, adapted to the traffic: a few while idle, up to the ring
//! size while busy), the rx ring until the dataplane copies them out, its stash of free frames,
//! and the tx ring until completion. `XdpStatus` shows where each is, checked against the pool's
//! owner table, so a leak is visible (and tested).
//!
//! Binding is copy mode (veth has no zero-copy): native (driver) XDP first, generic (SKB) mode
//! when the driver refuses. The XDP program that steers frames into the socket is our own
//! (`SharedXdp`, sixteen instructions loaded once per process with `bpf(2)` and attached to every
//! port's veth over rtnetlink), not libxdp's: libxdp 1.6 keeps one BPF map fd open per socket it
//! ever created, which a daemon adding and deleting ports for months cannot afford, and its
//! dispatcher wants bpffs and pins objects there. Frames are bigger than a UMEM frame only if
//! the container end of the veth sends TSO/GSO frames, so its offloads are turned off when the
//! port is created (`sandbox::disable_offloads`); frames from TAP ports with GSO are segmented in
//! software by the dataplane before they reach `send_frame` (`headroom() == 0`).

use std::io;
use std::os::fd::RawFd;

use serde::{Deserialize, Serialize};

use super::parent;
use super::steer::{self, Steer};
use super::umem::{JoinError, Loan, Share};
use super::xdp_prog::{Own, Steering, XdpProg};
pub use super::xdp_prog::{XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE};
use super::xsk::{Desc, UmemSource, XskSocket};
use super::Port;
use crate::sandbox::netlink::Netlink;

/// Which XDP attach mode to ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic (SKB) mode.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (SKB) mode only.
    Skb,
}

impl std::str::FromStr for XdpMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(XdpMode::Auto),
            "native" | "drv" => Ok(XdpMode::Native),
            "skb" | "generic" => Ok(XdpMode::Skb),
            _ => Err(format!("unknown XDP mode {s:?}: use auto, native or skb")),
        }
    }
}

/// Per-port AF_XDP settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpConfig {
    #[serde(default)]
    pub mode: XdpMode,
    /// Entries of each ring (rx, tx, fill, completion); a power of two.
    pub ring_size: u32,
    /// Bytes per UMEM frame: 2048 or 4096.
    pub frame_size: u32,
}

impl Default for XdpConfig {
    fn default() -> Self {
        XdpConfig {
            mode: XdpMode::Auto,
            ring_size: DEFAULT_RING_SIZE,
            frame_size: DEFAULT_FRAME_SIZE,
        }
    }
}

/// Ring entries of a container's port: 256 keeps a thousand ports' rings at 24 MiB (the rings
/// are the kernel's pages, mapped into the daemon) and is more than a TCP stream through copy
/// mode fills.
pub const DEFAULT_RING_SIZE: u32 = 256;
/// Ring entries of a socket that carries many containers' traffic (an uplink, a parent).
pub const WIDE_RING_SIZE: u32 = 1024;
pub const DEFAULT_FRAME_SIZE: u32 = 2048;
/// Room the kernel keeps ahead of the packet in every frame (`XDP_PACKET_HEADROOM`).
pub const XDP_HEADROOM: u32 = 256;

impl XdpConfig {
    /// Checks the settings; the message says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if !(64..=16384).contains(&self.ring_size) || !self.ring_size.is_power_of_two() {
            return Err(format!(
                "ring size {} is not valid: use a power of two from 64 to 16384",
                self.ring_size
            ));
        }
        if self.frame_size != 2048 && self.frame_size != 4096 {
            return Err(format!(
                "frame size {} is not valid: use 2048 or 4096",
                self.frame_size
            ));
        }
        Ok(())
    }

    /// The largest Ethernet frame (without FCS) a UMEM frame holds.
    pub fn max_frame(&self) -> u32 {
        self.frame_size - XDP_HEADROOM
    }
}

/// Where a port's UMEM frames are, and the kernel's counters for the socket.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XdpStatus {
    /// "native" or "skb".
    pub mode: String,
    pub ring_size: u32,
    pub frame_size: u32,
    /// The pool chunk (shared UMEM) the port's frames come from.
    pub chunk: u32,
    /// Frames the port holds (the pool's owner table says so).
    pub frames: u32,
    /// Frames it keeps with the kernel for receiving now (grows while busy, up to the ring
    /// size; shrinks back while idle).
    pub fill_target: u32,
    /// Receive frames the kernel holds (fill ring, or filled and not yet consumed).
    pub rx_frames_in_kernel: u32,
    /// Free frames the port keeps for its next sends and refills.
    pub frames_free: u32,
    /// Transmit frames handed to the kernel and not completed yet.
    pub tx_frames_in_flight: u32,
    /// Frames in none of those places (must be 0).
    pub frames_lost: u32,
    /// Times the port wanted more frames than its chunk could spare.
    pub pool_short: u64,
    /// Received frames lent to the dataplane in place (not copied out).
    pub rx_lent: u64,
    /// Received frames copied out (a trunk's, a parent's).
    pub rx_copied: u64,
    /// Frames sent by descriptor: received by another AF_XDP port of the same chunk and put
    /// on this port's tx ring as they were, without a copy.
    pub tx_by_descriptor: u64,
    /// Frames copied into a frame of this port's to be sent.
    pub tx_copied: u64,
    pub rx_dropped: u64,
    pub rx_ring_full: u64,
    pub rx_fill_ring_empty: u64,
    pub tx_invalid: u64,
}

/// Why an AF_XDP port could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    #[error("invalid AF_XDP settings: {0}")]
    Config(String),
    #[error("{0}")]
    Pool(String),
    #[error(
        "cannot bind an AF_XDP socket to {ifname:?} in {mode} mode ({reason}){}",
        bind_hint(reason)
    )]
    Bind {
        ifname: String,
        mode: &'static str,
        reason: String,
    },
    #[error("cannot use AF_XDP in any mode: {0}")]
    AllModes(String),
    #[error("cannot attach XDP to {ifname:?} in {mode} mode ({source}){}", bind_hint(&format!("({source})")))]
    Attach {
        ifname: String,
        mode: &'static str,
        source: io::Error,
    },
    #[error("cannot load the XDP program ({what}: {source}){}", bind_hint(&format!("({source})")))]
    Program {
        what: &'static str,
        source: io::Error,
    },
    #[error("interface {0:?} is gone")]
    Vanished(String),
}

/// Receive descriptors taken off the rx ring in one go.
const RX_BATCH: usize = 64;
/// Transmit frames written before they are put on the tx ring.
const TX_BATCH: usize = 64;
/// Wake-ups per flush at most: copy mode sends 32 frames per `sendto`.
const MAX_KICKS: usize = 64;
/// Frames an idle port keeps with the kernel (with `BORROW_MIN`, its reserve in the pool): enough for ARP and
/// pings; a busy port's fill level doubles at each refill that finds the kernel short.
pub const FILL_MIN: u32 = 8;
/// Free frames a port keeps at most; past that, all but `TX_BATCH` go back to the pool.
const STASH_KEEP: usize = 2 * TX_BATCH;
/// Frames borrowed from the pool at least at a time.
const BORROW_MIN: usize = 2;
/// Refills in a window; a window that received fewer than half the fill level halves it.
/// (Counted per refill, not per empty poll alone: a busy-polled TCP stream refills between
/// every two bursts and must not look idle.)
const DECAY_WINDOW: u32 = 1024;

/// An AF_XDP socket on queue 0 of `ifname`, its frames from the daemon's pool.
pub struct AfXdp {
    ifname: String,
    mode: &'static str,
    cfg: XdpConfig,
    /// `Some` until the port is dropped (then released before its frames are taken back).
    sock: Option<XskSocket>,
    share: Option<Share>,
    /// Received descriptors not yet handed out by `recv`.
    rx_descs: Vec<Desc>,
    rx_pos: usize,
    rx_n: usize,
    rx_in_kernel: u32,
    fill_target: u32,
    /// The lowest fill level (the idle port's): `FILL_MIN` for a container's port, a quarter of
    /// the ring for a wide one (an uplink, a parent: bursts from many peers arrive at once).
    fill_min: u32,
    /// Refills and frames received in the current decay window.
    window_refills: u32,
    window_frames: u32,
    /// Free frames of this port (copied-out receives, completed sends, borrowed ones).
    stash: Vec<u64>,
    /// Written, not on the tx ring yet.
    tx_pending: Vec<Desc>,
    tx_in_flight: u32,
    comp_buf: Vec<u64>,
    give_buf: Vec<u64>,
    /// Received frames lent to the dataplane and not yet handed back or sent on.
    lent: u32,
    pool_short: u64,
    rx_lent: u64,
    rx_copied: u64,
    tx_by_descriptor: u64,
    tx_copied: u64,
    /// Last: detached and closed after the socket is gone.
    prog: XdpProg,
}

impl AfXdp {
    /// Binds a socket to queue 0 of `ifname` (in the calling thread's namespace), its frames
    /// from the daemon's pool, and fills its fill ring.
    pub fn open(ifname: &str, cfg: XdpConfig) -> Result<AfXdp, AfXdpError> {
        Self::open_with(ifname, cfg, None)
    }

    /// As `open`, but with `steer` only what it describes goes to the socket (a shared
    /// uplink: `ports::steer`); the rest passes to the host's stack.
    pub fn open_steered(
        ifname: &str,
        cfg: XdpConfig,
        steer: Option<Steer>,
    ) -> Result<AfXdp, AfXdpError> {
        Self::open_with(ifname, cfg, steer.map(Steering::Uplink))
    }

    /// As `open`, for a macvlan parent: only frames for the containers go to the socket
    /// (`ports::parent`), the rest passes to the host's stack.
    pub fn open_parent(ifname: &str, cfg: XdpConfig) -> Result<AfXdp, AfXdpError> {
        Self::open_with(ifname, cfg, Some(Steering::Parent))
    }

    fn open_with(
        ifname: &str,
        cfg: XdpConfig,
        steering: Option<Steering>,
    ) -> Result<AfXdp, AfXdpError> {
        cfg.validate().map_err(AfXdpError::Config)?;
        let index = Netlink::open()
            .and_then(|mut nl| nl.link_index(ifname))
            .map_err(|source| AfXdpError::Attach {
                ifname: ifname.to_string(),
                mode: "any",
                source,
            })?
            .ok_or_else(|| AfXdpError::Vanished(ifname.to_string()))?;
        let mut prog = XdpProg::claim()?;
        let err = |source| AfXdpError::Program {
            what: "steering program load",
            source,
        };
        match steering {
            Some(Steering::Uplink(steer)) => {
                prog.own = Some(Own::Uplink(
                    steer::load(steer, &prog.shared.xsks, prog.slot).map_err(err)?,
                ));
            }
            Some(Steering::Parent) => {
                prog.own = Some(Own::Parent(
                    parent::load(&prog.shared.xsks, prog.slot).map_err(err)?,
                ));
            }
            None => {}
        }
        let modes: &[(&'static str, u32)] = match cfg.mode {
            XdpMode::Auto => &[("native", XDP_FLAGS_DRV_MODE), ("skb", XDP_FLAGS_SKB_MODE)],
            XdpMode::Native => &[("native", XDP_FLAGS_DRV_MODE)],
            XdpMode::Skb => &[("skb", XDP_FLAGS_SKB_MODE)],
        };
        let mut errors = Vec::new();
        for &(mode, flags) in modes {
            match prog.attach(index, flags) {
                Ok(()) => {
                    // The socket, then its entry in the program's map: frames flow from here.
                    let mut port = Self::bind(ifname, index, cfg, mode, prog)?;
                    let fd = port.raw_fd();
                    port.prog.insert(fd).map_err(|source| AfXdpError::Program {
                        what: "map update",
                        source,
                    })?;
                    return Ok(port);
                }
                Err(source) => errors.push(AfXdpError::Attach {
                    ifname: ifname.to_string(),
                    mode,
                    source,
                }),
            }
        }
        match errors.len() {
            0 => Err(AfXdpError::Config("no XDP mode to try".into())),
            1 => Err(errors.remove(0)),
            _ => Err(AfXdpError::AllModes(
                errors
                    .iter()
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join("; "),
            )),
        }
    }

    fn bind(
        ifname: &str,
        index: u32,
        cfg: XdpConfig,
        mode: &'static str,
        prog: XdpProg,
    ) -> Result<AfXdp, AfXdpError> {
        let bind_err = |e: io::Error| AfXdpError::Bind {
            ifname: ifname.to_string(),
            mode,
            reason: e.to_string(),
        };
        let fill_min = if cfg.ring_size >= WIDE_RING_SIZE {
            cfg.ring_size / 4
        } else {
            FILL_MIN.min(cfg.ring_size)
        };
        let reserve = fill_min + BORROW_MIN as u32;
        let (share, sock) = Share::join(cfg.frame_size, reserve, |umem: UmemSource| {
            XskSocket::bind(index, cfg.ring_size, umem)
        })
        .map_err(|e| match e {
            JoinError::Bind(e) => bind_err(e),
            other => AfXdpError::Pool(other.to_string()),
        })?;
        let mut port = AfXdp {
            ifname: ifname.to_string(),
            mode,
            cfg,
            sock: Some(sock),
            share: Some(share),
            rx_descs: vec![
                Desc {
                    addr: 0,
                    len: 0,
                    options: 0
                };
                RX_BATCH.min(cfg.ring_size as usize)
            ],
            rx_pos: 0,
            rx_n: 0,
            rx_in_kernel: 0,
            fill_target: fill_min,
            fill_min,
            window_refills: 0,
            window_frames: 0,
            // Grown as the traffic needs: a thousand idle ports keep their buffers small.
            stash: Vec::new(),
            tx_pending: Vec::new(),
            tx_in_flight: 0,
            comp_buf: vec![0; TX_BATCH],
            give_buf: Vec::new(),
            lent: 0,
            pool_short: 0,
            rx_lent: 0,
            rx_copied: 0,
            tx_by_descriptor: 0,
            tx_copied: 0,
            prog,
        };
        port.refill();
        if port.rx_in_kernel == 0 {
            return Err(AfXdpError::Pool(
                "the AF_XDP frame pool gave this port no frame to receive into".into(),
            ));
        }
        Ok(port)
    }

    pub fn ifname(&self) -> &str {
        &self.ifname
    }

    /// "native" or "skb".
    pub fn mode(&self) -> &'static str {
        self.mode
    }

    /// A steered socket's published-ports map (`None` for a plain socket).
    pub fn published_map(&self) -> Option<std::io::Result<steer::PublishedMap>> {
        match &self.prog.own {
            Some(Own::Uplink(p)) => Some(p.published_map()),
            _ => None,
        }
    }

    /// A parent's maps of what is the containers' (`None` for other sockets).
    pub fn parent_maps(&self) -> Option<std::io::Result<parent::ParentMaps>> {
        match &self.prog.own {
            Some(Own::Parent(p)) => Some(p.maps()),
            _ => None,
        }
    }

    /// Frames the port holds beyond its fill ring, ring and stash bounds (fill and tx rings
    /// both full): it borrows no more.
    fn max_frames(&self) -> usize {
        2 * self.cfg.ring_size as usize + STASH_KEEP
    }

    fn held(&self) -> usize {
        self.rx_in_kernel as usize
            + (self.rx_n - self.rx_pos)
            + self.lent as usize
            + self.stash.len()
            + self.tx_pending.len()
            + self.tx_in_flight as usize
    }

    /// Borrows up to `n` frames into the stash (at least a batch, to lock the pool seldom).
    fn borrow(&mut self, n: usize) {
        let (Some(share), room) = (&self.share, self.max_frames().saturating_sub(self.held()))
        else {
            return;
        };
        let want = n.max(BORROW_MIN).min(room);
        if want == 0 {
            return;
        }
        if share.take(want, &mut self.stash) < n.min(want) {
            self.pool_short += 1;
        }
    }

    /// Brings the fill ring up to `fill_target` frames, adapting the target: doubled when the
    /// kernel was down to a quarter of it, halved after a window of refills that received less
    /// than half of it.
    fn refill(&mut self) {
        let Some(sock) = self.sock.as_mut() else {
            return;
        };
        let unused = sock.fill_outstanding();
        let received = self.rx_lent + self.rx_copied > 0;
        if received && unused < self.fill_target / 4 && self.fill_target < self.cfg.ring_size {
            self.fill_target = (self.fill_target * 2).min(self.cfg.ring_size);
            self.window_refills = 0;
            self.window_frames = 0;
        }
        self.window_refills += 1;
        if self.window_refills >= DECAY_WINDOW {
            if self.window_frames < self.fill_target / 2 && self.fill_target > self.fill_min {
                // Idle: the frames the kernel no longer gets, and the spare ones, go back.
                self.fill_target = (self.fill_target / 2).max(self.fill_min);
                if self.stash.len() > BORROW_MIN {
                    if let Some(share) = &self.share {
                        self.give_buf.extend(self.stash.drain(BORROW_MIN..));
                        share.give(&mut self.give_buf);
                    }
                }
            }
            self.window_refills = 0;
            self.window_frames = 0;
        }
        let want = self.fill_target.saturating_sub(self.rx_in_kernel) as usize;
        if want > 0 {
            if self.stash.len() < want {
                self.borrow(want - self.stash.len());
            }
            let k = want.min(self.stash.len());
            let from = self.stash.len() - k;
            let Some(sock) = self.sock.as_mut() else {
                return;
            };
            let n = sock.fill(&self.stash[from..]);
            self.stash.drain(from..from + n);
            self.rx_in_kernel += n as u32;
        }
        self.trim();
    }

    /// Gives frames back to the pool when the stash holds more than `STASH_KEEP`.
    fn trim(&mut self) {
        if self.stash.len() <= STASH_KEEP {
            return;
        }
        if let Some(share) = &self.share {
            self.give_buf.extend(self.stash.drain(TX_BATCH..));
            share.give(&mut self.give_buf);
        }
    }

    /// Takes completed transmit frames back into the stash.
    fn reclaim(&mut self) {
        let Some(sock) = self.sock.as_mut() else {
            return;
        };
        loop {
            let n = sock.completed(&mut self.comp_buf);
            self.stash.extend_from_slice(&self.comp_buf[..n]);
            self.tx_in_flight = self.tx_in_flight.saturating_sub(n as u32);
            if n < self.comp_buf.len() {
                break;
            }
        }
    }

    /// Puts written frames on the tx ring and wakes the kernel until it has taken them all
    /// (copy mode transmits a bounded batch per `sendto`).
    fn flush_tx(&mut self) -> io::Result<()> {
        let Some(sock) = self.sock.as_mut() else {
            return Ok(());
        };
        if !self.tx_pending.is_empty() {
            let n = sock.transmit(&self.tx_pending);
            self.tx_in_flight += n as u32;
            self.tx_pending.drain(..n);
        }
        let mut kicks = 0;
        while sock.tx_waiting() && kicks < MAX_KICKS {
            sock.kick()?;
            kicks += 1;
        }
        self.reclaim();
        self.trim();
        Ok(())
    }

    /// The next received descriptor, refilling and reading the rx ring when the last batch is
    /// used up.
    fn next_desc(&mut self) -> io::Result<Desc> {
        if self.rx_pos == self.rx_n {
            self.refill();
            let Some(sock) = self.sock.as_mut() else {
                return Err(io::ErrorKind::WouldBlock.into());
            };
            let n = sock.recv(&mut self.rx_descs);
            self.rx_in_kernel = self.rx_in_kernel.saturating_sub(n as u32);
            self.window_frames = self.window_frames.saturating_add(n as u32);
            self.rx_pos = 0;
            self.rx_n = n;
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        let desc = self.rx_descs[self.rx_pos];
        self.rx_pos += 1;
        Ok(desc)
    }

    /// Where the frames are and what the kernel counted, for `show`/`port stats`.
    pub fn status(&mut self) -> XdpStatus {
        self.reclaim();
        let stats = self
            .sock
            .as_ref()
            .map(XskSocket::statistics)
            .unwrap_or_default();
        let (chunk, frames) = self
            .share
            .as_ref()
            .map_or((0, 0), |s| (s.chunk_number(), s.owned()));
        XdpStatus {
            mode: self.mode.to_string(),
            ring_size: self.cfg.ring_size,
            frame_size: self.cfg.frame_size,
            chunk,
            frames,
            fill_target: self.fill_target,
            rx_frames_in_kernel: self.rx_in_kernel,
            frames_free: (self.stash.len() + self.tx_pending.len()) as u32,
            tx_frames_in_flight: self.tx_in_flight,
            frames_lost: frames.abs_diff(self.held() as u32),
            pool_short: self.pool_short,
            rx_lent: self.rx_lent,
            rx_copied: self.rx_copied,
            tx_by_descriptor: self.tx_by_descriptor,
            tx_copied: self.tx_copied,
            rx_dropped: stats.rx_dropped,
            rx_ring_full: stats.rx_ring_full,
            rx_fill_ring_empty: stats.rx_fill_ring_empty,
            tx_invalid: stats.tx_invalid,
        }
    }
}

impl Drop for AfXdp {
    fn drop(&mut self) {
        // The socket is released before its frames go back to the pool (and before `prog`,
        // a field, detaches the program).
        if let (Some(sock), Some(share)) = (self.sock.take(), self.share.take()) {
            share.leave(sock);
        }
    }
}

/// What to check, from the errno at the end of a bind failure.
fn bind_hint(reason: &str) -> &'static str {
    match errno_in(reason) {
        Some(libc::ERANGE) => {
            ": the MTU is too large for native XDP on a veth (about 3500 bytes at most); use --xdp-mode auto or skb, or a smaller --mtu"
        }
        Some(libc::EPERM | libc::EACCES) => {
            ": loading XDP programs needs root (CAP_NET_ADMIN and CAP_BPF or CAP_SYS_ADMIN)"
        }
        Some(libc::EAFNOSUPPORT | libc::EPROTONOSUPPORT) => {
            ": this kernel has no AF_XDP sockets (CONFIG_XDP_SOCKETS)"
        }
        Some(libc::EOPNOTSUPP) => ": the driver does not support this XDP mode; try --xdp-mode skb",
        Some(libc::EBUSY) => ": another XDP program or socket holds the interface",
        Some(libc::ENODEV | libc::ENXIO) => ": the interface vanished",
        _ => "",
    }
}

/// The errno in an error message ending "(os error N)" (xsk-rs reports errors as text).
fn errno_in(msg: &str) -> Option<i32> {
    let start = msg.rfind("(os error ")? + "(os error ".len();
    let end = start + msg[start..].find(')')?;
    msg[start..end].parse().ok()
}

impl Port for AfXdp {
    fn raw_fd(&self) -> RawFd {
        self.sock.as_ref().map_or(-1, XskSocket::fd)
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let desc = self.next_desc()?;
        let fs = u64::from(self.cfg.frame_size);
        // The frame is free again once copied out (aligned mode: its base is the address
        // rounded down to the frame size).
        self.stash.push(desc.addr / fs * fs);
        self.rx_copied += 1;
        let Some(frame) = self
            .share
            .as_ref()
            .and_then(|s| s.data(desc.addr, desc.len as usize))
        else {
            // A descriptor outside its frame: the kernel never gives one; counted as a runt.
            return Ok(0);
        };
        let n = frame.len().min(buf.len());
        buf[..n].copy_from_slice(&frame[..n]);
        Ok(frame.len())
    }

    fn lends(&self) -> bool {
        true
    }

    fn recv_loan(&mut self) -> io::Result<Loan> {
        let desc = self.next_desc()?;
        let loan = self
            .share
            .as_ref()
            .and_then(|s| s.lend(desc.addr, desc.len as usize));
        match loan {
            Some(loan) => {
                self.lent += 1;
                self.rx_lent += 1;
                Ok(loan)
            }
            None => {
                // Outside its frame (the kernel never gives one): the frame is free again.
                let fs = u64::from(self.cfg.frame_size);
                self.stash.push(desc.addr / fs * fs);
                Err(io::Error::from(io::ErrorKind::InvalidData))
            }
        }
    }

    fn end_loans(&mut self, returned: &mut Vec<Loan>) {
        let fs = u64::from(self.cfg.frame_size);
        self.stash
            .extend(returned.drain(..).map(|l| l.addr() / fs * fs));
        // The rest went out by descriptor from other ports: theirs now.
        self.lent = 0;
    }

    fn send_loan(&mut self, loan: Loan) -> Result<usize, Loan> {
        let ring = self.cfg.ring_size as usize;
        if self.tx_pending.len() + self.tx_in_flight as usize >= ring
            && (self.flush_tx().is_err()
                || self.tx_pending.len() + self.tx_in_flight as usize >= ring)
        {
            return Err(loan);
        }
        match &self.share {
            Some(share) if share.adopt(&loan) => {}
            _ => return Err(loan),
        }
        let len = loan.len();
        self.tx_pending.push(Desc {
            addr: loan.addr(),
            len: len as u32,
            options: 0,
        });
        self.tx_by_descriptor += 1;
        if self.tx_pending.len() >= TX_BATCH {
            // A failure here is the port's vanishing: `flush` reports it.
            let _ = self.flush_tx();
        }
        Ok(len)
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_frame(buf)
    }

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        if frame.len() > self.cfg.max_frame() as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame larger than a UMEM frame",
            ));
        }
        let ring = self.cfg.ring_size as usize;
        if self.tx_pending.len() + self.tx_in_flight as usize >= ring {
            self.flush_tx()?;
            if self.tx_pending.len() + self.tx_in_flight as usize >= ring {
                return Err(io::ErrorKind::WouldBlock.into());
            }
        }
        if self.stash.is_empty() {
            self.reclaim();
        }
        if self.stash.is_empty() {
            self.borrow(BORROW_MIN);
        }
        let Some(addr) = self.stash.pop() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let Some(data) = self
            .share
            .as_mut()
            .and_then(|s| s.data_mut(addr, frame.len()))
        else {
            self.stash.push(addr);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "frame larger than a UMEM frame",
            ));
        };
        data.copy_from_slice(frame);
        self.tx_copied += 1;
        self.tx_pending.push(Desc {
            addr,
            len: frame.len() as u32,
            options: 0,
        });
        if self.tx_pending.len() >= TX_BATCH {
            self.flush_tx()?;
        }
        Ok(frame.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_tx()
    }

    fn kind(&self) -> &'static str {
        "afxdp"
    }

    fn xdp_status(&mut self) -> Option<XdpStatus> {
        Some(self.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_validated() {
        assert!(XdpConfig::default().validate().is_ok());
        for ring in [0, 32, 100, 32768] {
            let c = XdpConfig {
                ring_size: ring,
                ..Default::default()
            };
            assert!(c.validate().is_err(), "ring {ring}");
        }
        for frame in [1024, 3000, 8192] {
            let c = XdpConfig {
                frame_size: frame,
                ..Default::default()
            };
            assert!(c.validate().is_err(), "frame {frame}");
        }
        assert_eq!(XdpConfig::default().max_frame(), 1792);
        assert_eq!("skb".parse::<XdpMode>(), Ok(XdpMode::Skb));
        assert!("turbo".parse::<XdpMode>().is_err());
    }

    #[test]
    fn errors_carry_their_hint() {
        assert_eq!(
            errno_in("x: Device or resource busy (os error 16)"),
            Some(16)
        );
        assert_eq!(errno_in("no errno here"), None);
        assert!(bind_hint("(Numerical result out of range (os error 34))").contains("MTU"));
        assert_eq!(bind_hint("(os error 99999)"), "");
    }
}
