//! The XDP program every AF_XDP socket of the daemon shares (or a socket's own: a shared
//! uplink's steering, a macvlan parent's), attached to the socket's interface over rtnetlink.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex, Weak};

use super::afxdp::AfXdpError;
use super::bpf::{self, insn};
use super::parent;
use super::steer::{Steer, SteerProg};
use crate::sandbox::netlink::Netlink;

pub(super) const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1;
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
pub const XDP_FLAGS_DRV_MODE: u32 = 4;

/// AF_XDP ports a daemon can have at once: slots in the shared program's maps.
const MAX_XDP_PORTS: u32 = 4096;

/// The XDP program every AF_XDP port of this process shares, with its two maps: a hash from the
/// receiving interface's index to a slot, and the XSKMAP holding each slot's socket. Every frame
/// goes to the socket of its interface (`XDP_PASS` when there is none):
///
/// ```text
/// r2 = *(u32 *)(r1 + 12)        ; ctx->ingress_ifindex
/// *(u32 *)(r10 - 4) = r2        ; the key, on the stack
/// r2 = r10; r2 += -4
/// r1 = slots map fd ll          ; (two instructions)
/// call bpf_map_lookup_elem      ; helper 1
/// if r0 == 0 goto pass
/// r2 = *(u32 *)(r0 + 0)         ; the slot
/// r1 = xsks map fd ll
/// r3 = 2                        ; XDP_PASS when the slot is empty
/// call bpf_redirect_map         ; helper 51
/// exit
/// pass: r0 = 2; exit
/// ```
///
/// One program for all ports, not one each: the kernel's XDP dispatcher regenerates its code,
/// with a `synchronize_rcu`, whenever an attach brings a program it does not hold yet (up to 48
/// of them), which made each AF_XDP add-port take about 20 ms here; attaching a program it
/// already holds only counts a user.
pub(super) struct SharedXdp {
    slots: OwnedFd,
    pub(super) xsks: OwnedFd,
    prog: OwnedFd,
    /// Slots not in use.
    free: Mutex<Vec<u32>>,
}

/// The program while some port holds it; loaded again after the last one went.
static SHARED_XDP: Mutex<Weak<SharedXdp>> = Mutex::new(Weak::new());

fn map_update(map: &OwnedFd, key: u32, value: u32) -> io::Result<()> {
    bpf::map_update(map, &key.to_ne_bytes(), &value.to_ne_bytes())
}

fn map_delete(map: &OwnedFd, key: u32) {
    bpf::map_delete(map, &key.to_ne_bytes())
}

impl SharedXdp {
    /// This process's program: the one in use, or a newly loaded one.
    fn get() -> Result<Arc<SharedXdp>, AfXdpError> {
        let mut cur = SHARED_XDP.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = cur.upgrade() {
            return Ok(shared);
        }
        let shared = Arc::new(Self::load()?);
        *cur = Arc::downgrade(&shared);
        Ok(shared)
    }

    fn load() -> Result<SharedXdp, AfXdpError> {
        let err = |what| move |source| AfXdpError::Program { what, source };
        let map = |kind, name| bpf::map_create(kind, 4, 4, MAX_XDP_PORTS, name);
        let slots = map(bpf::BPF_MAP_TYPE_HASH, "vswitch_slots").map_err(err("map create"))?;
        let xsks = map(bpf::BPF_MAP_TYPE_XSKMAP, "vswitch_xsks").map_err(err("map create"))?;
        let insns: [[u8; 8]; 16] = [
            insn(0x61, 2, 1, 12, 0),                // ldxw r2, [r1 + 12]
            insn(0x63, 10, 2, -4, 0),               // stxw [r10 - 4], r2
            insn(0xbf, 2, 10, 0, 0),                // mov r2, r10
            insn(0x07, 2, 0, 0, -4),                // add r2, -4
            insn(0x18, 1, 1, 0, slots.as_raw_fd()), // lddw r1, slots map fd (BPF_PSEUDO_MAP_FD)
            insn(0, 0, 0, 0, 0),                    // (second half of lddw)
            insn(0x85, 0, 0, 0, 1),                 // call bpf_map_lookup_elem
            insn(0x15, 0, 0, 6, 0),                 // jeq r0, 0, +6 (pass)
            insn(0x61, 2, 0, 0, 0),                 // ldxw r2, [r0 + 0]
            insn(0x18, 1, 1, 0, xsks.as_raw_fd()),  // lddw r1, xsks map fd
            insn(0, 0, 0, 0, 0),                    // (second half of lddw)
            insn(0xb7, 3, 0, 0, 2),                 // mov r3, XDP_PASS
            insn(0x85, 0, 0, 0, 51),                // call bpf_redirect_map
            insn(0x95, 0, 0, 0, 0),                 // exit
            insn(0xb7, 0, 0, 0, 2),                 // pass: mov r0, XDP_PASS
            insn(0x95, 0, 0, 0, 0),                 // exit
        ];
        let prog = bpf::prog_load_xdp(&insns, "vswitch_xsk").map_err(err("program load"))?;
        Ok(SharedXdp {
            slots,
            xsks,
            prog,
            free: Mutex::new((0..MAX_XDP_PORTS).rev().collect()),
        })
    }
}

/// A port's hold on the shared program: its slot, and the interface it is attached to.
pub(super) struct XdpProg {
    pub(super) shared: Arc<SharedXdp>,
    pub(super) slot: u32,
    /// (ifindex, flags) while attached.
    attached: Option<(u32, u32)>,
    /// The ifindex whose frames go to this port's slot.
    steered: Option<u32>,
    /// A program of this port's own attached instead of the shared one (a shared uplink's, a
    /// macvlan parent's).
    pub(super) own: Option<Own>,
}

/// What a socket's own program steers to it.
pub(super) enum Steering {
    Uplink(Steer),
    Parent,
}

pub(super) enum Own {
    Uplink(SteerProg),
    Parent(parent::ParentProg),
}

impl XdpProg {
    /// A slot of this process's program (loaded now if no port holds it).
    pub(super) fn claim() -> Result<XdpProg, AfXdpError> {
        let shared = SharedXdp::get()?;
        let slot = shared
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .ok_or_else(|| {
                AfXdpError::Config(format!(
                    "this daemon already has {MAX_XDP_PORTS} AF_XDP ports, its most"
                ))
            })?;
        Ok(XdpProg {
            shared,
            slot,
            attached: None,
            steered: None,
            own: None,
        })
    }

    pub(super) fn prog_fd(&self) -> RawFd {
        match &self.own {
            Some(Own::Uplink(own)) => own.prog.as_raw_fd(),
            Some(Own::Parent(own)) => own.prog.as_raw_fd(),
            None => self.shared.prog.as_raw_fd(),
        }
    }

    /// Attaches the program to `index` in the mode `flags` says, unless one is there already.
    pub(super) fn attach(&mut self, index: u32, flags: u32) -> io::Result<()> {
        let flags = flags | XDP_FLAGS_UPDATE_IF_NOEXIST;
        Netlink::open()?.set_xdp(index, self.prog_fd(), flags, None)?;
        self.attached = Some((index, flags));
        Ok(())
    }

    /// Puts the socket `fd` in this port's slot, and steers the attached interface's frames
    /// to that slot.
    pub(super) fn insert(&mut self, fd: RawFd) -> io::Result<()> {
        let Some((index, _)) = self.attached else {
            return Err(io::Error::other("the XDP program is not attached"));
        };
        map_update(&self.shared.xsks, self.slot, fd as u32)?;
        map_update(&self.shared.slots, index, self.slot)?;
        self.steered = Some(index);
        Ok(())
    }
}

impl Drop for XdpProg {
    fn drop(&mut self) {
        // Detach, only if the program on that ifindex is still ours (the interface may be gone;
        // the kernel hands out interface indexes cyclically, so another of our ports does not
        // get the same one).
        if let Some((index, flags)) = self.attached.take() {
            let flags = flags & !XDP_FLAGS_UPDATE_IF_NOEXIST;
            if let Ok(mut nl) = Netlink::open() {
                let _ = nl.set_xdp(index, -1, flags, Some(self.prog_fd()));
            }
        }
        if let Some(index) = self.steered.take() {
            map_delete(&self.shared.slots, index);
        }
        // Closing the socket took it out of the XSKMAP already; this covers a port that never
        // got that far.
        map_delete(&self.shared.xsks, self.slot);
        self.shared
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(self.slot);
    }
}
