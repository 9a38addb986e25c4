//! A macvlan network's parent interface: one AF_XDP socket on it, shared by every network
//! (one per VLAN, and one untagged) that uses the interface, and an XDP program that takes
//! only what belongs to the switch's containers — everything else passes to the host's stack
//! unchanged, so the parent keeps carrying the host's own traffic.
//!
//! The program takes a frame (on VLAN `v`: 0 untagged, else the 802.1Q tag's id) when
//! - its destination MAC is a container's on `v` (the `macs` map: MAC, VLAN), or
//! - it is ARP whose target address is a container's on `v` (the `ips` map: address, VLAN) —
//!   the segment's "who has" broadcasts for them, which the host ignores anyway, or
//! - it is IPv4 to such an address and the entry says so (bit 2 of its value: a container that
//!   has the parent's MAC on the wire, ipvlan).
//!
//! Other broadcasts and multicasts stay with the host (XDP cannot copy a frame to both); a
//! container on the parent hears the segment's ARP for itself, not the rest.
//!
//! The dataplane reads the socket through `Parent` (the trunk: frames arrive tagged or not)
//! and sends through a `ParentVlan` per network, which adds its tag.

use std::collections::HashMap;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use super::bpf::{self, Asm, Cond, Size, Take};
use super::packet::GroupCopy;
use super::{AfXdp, Port, XdpStatus};
use crate::switch::vlan;
use crate::wire::MacAddr;

/// Entries each map holds at most: container MACs (and addresses) over all the networks on one
/// parent.
pub const MAX_ENTRIES: u32 = 4096;

/// Value bits of an `ips` entry.
pub const IP_ARP: u32 = 1;
pub const IP_ROUTED: u32 = 2;

/// A loaded parent program and its maps.
pub struct ParentProg {
    pub prog: OwnedFd,
    macs: OwnedFd,
    ips: OwnedFd,
}

impl ParentProg {
    /// A handle on the maps for the control plane (second descriptors).
    pub fn maps(&self) -> io::Result<ParentMaps> {
        Ok(ParentMaps {
            macs: self.macs.try_clone()?,
            ips: self.ips.try_clone()?,
            held_macs: HashMap::new(),
            held_ips: HashMap::new(),
        })
    }
}

/// What the program steers to the switch, as the control plane keeps it.
pub struct ParentMaps {
    macs: OwnedFd,
    ips: OwnedFd,
    held_macs: HashMap<[u8; 8], u32>,
    held_ips: HashMap<[u8; 8], u32>,
}

impl std::fmt::Debug for ParentMaps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParentMaps")
            .field("macs", &self.held_macs.len())
            .field("ips", &self.held_ips.len())
            .finish()
    }
}

pub fn mac_key(vlan: u16, mac: MacAddr) -> [u8; 8] {
    let v = vlan.to_be_bytes();
    let m = mac.0;
    [m[0], m[1], m[2], m[3], m[4], m[5], v[0], v[1]]
}

pub fn ip_key(vlan: u16, ip: Ipv4Addr) -> [u8; 8] {
    let v = vlan.to_be_bytes();
    let a = ip.octets();
    [a[0], a[1], a[2], a[3], v[0], v[1], 0, 0]
}

fn sync_map(
    fd: &OwnedFd,
    held: &mut HashMap<[u8; 8], u32>,
    want: &HashMap<[u8; 8], u32>,
) -> io::Result<()> {
    let gone: Vec<[u8; 8]> = held
        .keys()
        .filter(|k| !want.contains_key(*k))
        .copied()
        .collect();
    for k in gone {
        bpf::map_delete(fd, &k);
        held.remove(&k);
    }
    for (k, v) in want {
        if held.get(k) != Some(v) {
            bpf::map_update(fd, k, &v.to_ne_bytes())?;
            held.insert(*k, *v);
        }
    }
    Ok(())
}

impl ParentMaps {
    /// Makes the maps hold exactly `macs` and `ips` (keys from `mac_key` / `ip_key`, values
    /// `IP_*` bits for addresses).
    pub fn sync(
        &mut self,
        macs: &HashMap<[u8; 8], u32>,
        ips: &HashMap<[u8; 8], u32>,
    ) -> io::Result<()> {
        if macs.len() > MAX_ENTRIES as usize || ips.len() > MAX_ENTRIES as usize {
            return Err(io::Error::other(format!(
                "more than {MAX_ENTRIES} containers on one parent"
            )));
        }
        sync_map(&self.macs, &mut self.held_macs, macs)?;
        sync_map(&self.ips, &mut self.held_ips, ips)
    }
}

pub(super) fn load(xsks: &OwnedFd, slot: u32) -> io::Result<ParentProg> {
    build(Take::Redirect { xsks, slot })
}

fn build(take: Take) -> io::Result<ParentProg> {
    let macs = bpf::map_create(bpf::BPF_MAP_TYPE_HASH, 8, 4, MAX_ENTRIES, "vswitch_pmacs")?;
    let ips = bpf::map_create(bpf::BPF_MAP_TYPE_HASH, 8, 4, MAX_ENTRIES, "vswitch_pips")?;
    let insns = program(&macs, &ips, &take).map_err(io::Error::other)?;
    let prog = bpf::prog_load_xdp(&insns, "vswitch_parent")?;
    Ok(ParentProg { prog, macs, ips })
}

/// The ARP / IPv4 part, with the EtherType at `base` and r9 holding the VLAN (frame order).
fn by_address(a: &mut Asm, ips: &OwnedFd, base: i16, ipv4: &'static str, lookup: &'static str) {
    let arp = i32::from(u16::from_ne_bytes([0x08, 0x06]));
    let ip4 = i32::from(u16::from_ne_bytes([0x08, 0x00]));
    // r6: 1 for ARP (any entry takes it), 2 for IPv4 (an IP_ROUTED entry only).
    a.ldx(Size::H, 2, 7, base)
        .jmp(Cond::Ne, 2, arp, ipv4)
        .mov_reg(2, 7)
        .add(2, i32::from(base + 2 + 28))
        .jmp_reg(Cond::Gt, 2, 8, "pass")
        .ldx(Size::W, 2, 7, base + 2 + 24)
        .mov(6, 1)
        .goto(lookup);
    a.label(ipv4)
        .jmp(Cond::Ne, 2, ip4, "pass")
        .mov_reg(2, 7)
        .add(2, i32::from(base + 2 + 20))
        .jmp_reg(Cond::Gt, 2, 8, "pass")
        .ldx(Size::W, 2, 7, base + 2 + 16)
        .mov(6, 2);
    a.label(lookup)
        .stx(Size::W, 10, 2, -16)
        .stx(Size::H, 10, 9, -12)
        .st(Size::H, 10, -10, 0)
        .ld_map(1, ips)
        .mov_reg(2, 10)
        .add(2, -16)
        .call(bpf::HELPER_MAP_LOOKUP)
        .jmp(Cond::Eq, 0, 0, "pass")
        .jmp(Cond::Eq, 6, 1, "take")
        .ldx(Size::W, 2, 0, 0)
        .jmp(Cond::Set, 2, IP_ROUTED as i32, "take")
        .goto("pass");
}

fn program(macs: &OwnedFd, ips: &OwnedFd, take: &Take) -> Result<Vec<[u8; 8]>, String> {
    let tpid = i32::from(u16::from_ne_bytes(vlan::TPID));
    let vid = i32::from(u16::from_ne_bytes([0x0f, 0xff]));
    // r7 = data, r8 = data_end, r9 = the VLAN id in frame order (0: untagged); the MAC key
    // (destination, VLAN) at r10 - 8, the address key (address, VLAN, 0) at r10 - 16.
    let mut a = Asm::new();
    a.ldx(Size::W, 7, 1, 0)
        .ldx(Size::W, 8, 1, 4)
        .mov_reg(2, 7)
        .add(2, 14)
        .jmp_reg(Cond::Gt, 2, 8, "pass")
        .ldx(Size::W, 2, 7, 0)
        .stx(Size::W, 10, 2, -8)
        .ldx(Size::H, 2, 7, 4)
        .stx(Size::H, 10, 2, -4)
        .ldx(Size::H, 2, 7, 12)
        .jmp(Cond::Eq, 2, tpid, "tagged")
        .mov(9, 0)
        .goto("mac");
    a.label("tagged")
        .mov_reg(2, 7)
        .add(2, 18)
        .jmp_reg(Cond::Gt, 2, 8, "pass")
        .ldx(Size::H, 9, 7, 14)
        .and(9, vid);
    a.label("mac")
        .stx(Size::H, 10, 9, -2)
        .ld_map(1, macs)
        .mov_reg(2, 10)
        .add(2, -8)
        .call(bpf::HELPER_MAP_LOOKUP)
        .jmp(Cond::Ne, 0, 0, "take")
        .jmp(Cond::Ne, 9, 0, "addr_tagged");
    by_address(&mut a, ips, 12, "ipv4_untagged", "lookup_untagged");
    a.label("addr_tagged");
    by_address(&mut a, ips, 16, "ipv4_tagged", "lookup_tagged");
    a.label("take");
    take.emit(&mut a);
    a.label("pass").mov(0, bpf::XDP_PASS).exit();
    a.finish()
}

/// The parent's socket as the dataplane reads it (the trunk: every network's frames, tagged
/// or not). Sending through it sends untagged. Clones share the socket.
#[derive(Clone)]
pub struct Parent {
    xsk: Arc<Mutex<AfXdp>>,
    fd: RawFd,
    /// The segment's broadcasts and multicasts, copied (the host keeps them too).
    groups: Option<Arc<GroupCopy>>,
}

/// One network's side of a parent: what the dataplane sends there leaves with the network's
/// tag (none for VLAN 0).
pub struct ParentVlan {
    xsk: Arc<Mutex<AfXdp>>,
    fd: RawFd,
    vlan: u16,
    buf: Vec<u8>,
}

impl Parent {
    /// The trunk; with `groups`, the segment's broadcasts come in through it as well.
    pub fn new(xsk: AfXdp, groups: Option<GroupCopy>) -> Parent {
        let fd = xsk.raw_fd();
        Parent {
            xsk: Arc::new(Mutex::new(xsk)),
            fd,
            groups: groups.map(Arc::new),
        }
    }

    /// The sending side for VLAN `vlan` (0: untagged).
    pub fn vlan(&self, vlan: u16) -> ParentVlan {
        ParentVlan {
            xsk: self.xsk.clone(),
            fd: self.fd,
            vlan,
            buf: Vec::with_capacity(2048),
        }
    }
}

fn lock(x: &Mutex<AfXdp>) -> std::sync::MutexGuard<'_, AfXdp> {
    x.lock().unwrap_or_else(|e| e.into_inner())
}

impl Port for Parent {
    fn raw_fd(&self) -> RawFd {
        self.fd
    }

    fn second_fd(&self) -> Option<RawFd> {
        self.groups.as_ref().map(|g| g.raw_fd())
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match lock(&self.xsk).recv(buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => return other,
        }
        let Some(g) = &self.groups else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        loop {
            match g.recv(buf) {
                // Cut, runt or double-tagged: skipped (the host has it anyway).
                Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        lock(&self.xsk).send_frame(buf)
    }

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        lock(&self.xsk).send_frame(frame)
    }

    fn flush(&mut self) -> io::Result<()> {
        lock(&self.xsk).flush()
    }

    fn kind(&self) -> &'static str {
        "parent"
    }

    fn xdp_status(&mut self) -> Option<XdpStatus> {
        lock(&self.xsk).xdp_status()
    }
}

impl Port for ParentVlan {
    fn raw_fd(&self) -> RawFd {
        self.fd
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

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        if self.vlan == 0 {
            return lock(&self.xsk).send_frame(frame);
        }
        vlan::push(frame, self.vlan, &mut self.buf);
        lock(&self.xsk).send_frame(&self.buf).map(|_| frame.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        lock(&self.xsk).flush()
    }

    fn kind(&self) -> &'static str {
        "macvlan"
    }
}

impl AsRawFd for Parent {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const C1: [u8; 6] = [0x02, 0x42, 0, 0, 0, 1];
    const HOST: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 1];

    fn prog() -> Option<ParentProg> {
        match build(Take::Tx) {
            Ok(p) => Some(p),
            // SAFETY: geteuid has no preconditions.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && unsafe { libc::geteuid() } != 0 => {
                None
            }
            Err(e) => panic!("the parent program does not load: {e}"),
        }
    }

    fn udp(dst_mac: [u8; 6], dst: [u8; 4]) -> Vec<u8> {
        let mut f = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 9], dst_mac)
            .ipv4([192, 0, 2, 9], dst, 64)
            .udp(53, 4000)
            .write(&mut f, b"x")
            .unwrap();
        f
    }

    fn arp_request(tpa: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 0x08, 0x06]);
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&[2, 0, 0, 0, 0, 9, 192, 0, 2, 9]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&tpa);
        f
    }

    fn tagged(f: &[u8], id: u16) -> Vec<u8> {
        let mut out = Vec::new();
        vlan::push(f, id, &mut out);
        out
    }

    const TAKE: u32 = bpf::XDP_TX as u32;
    const PASS: u32 = bpf::XDP_PASS as u32;

    #[test]
    fn takes_what_is_for_the_containers_and_passes_the_rest() {
        let Some(p) = prog() else { return };
        let v = |f: &[u8]| bpf::test_run(&p.prog, f).unwrap();
        let c1 = MacAddr(C1);
        let ip1 = Ipv4Addr::new(192, 0, 2, 50);
        let ip3 = Ipv4Addr::new(192, 0, 2, 60);
        assert_eq!(v(&udp(C1, ip1.octets())), PASS, "nothing is ours yet");
        let mut maps = p.maps().unwrap();
        let macs = HashMap::from([(mac_key(0, c1), 1), (mac_key(20, c1), 1)]);
        let ips = HashMap::from([
            (ip_key(0, ip1), IP_ARP),
            (ip_key(20, ip3), IP_ARP | IP_ROUTED),
        ]);
        maps.sync(&macs, &ips).unwrap();
        assert_eq!(v(&udp(C1, ip1.octets())), TAKE, "to a container's MAC");
        assert_eq!(v(&udp(HOST, [192, 0, 2, 2])), PASS, "the host's own");
        assert_eq!(v(&udp(HOST, ip1.octets())), PASS, "macvlan: by MAC only");
        assert_eq!(v(&arp_request(ip1.octets())), TAKE, "who has a container");
        assert_eq!(v(&arp_request([192, 0, 2, 2])), PASS, "who has the host");
        let mut bcast = udp([0xff; 6], [255; 4]);
        assert_eq!(v(&bcast), PASS, "other broadcasts stay with the host");
        // VLAN 20: the tagged twin, and nothing of VLAN 0 leaks across.
        assert_eq!(v(&tagged(&udp(C1, ip1.octets()), 20)), TAKE);
        assert_eq!(
            v(&tagged(&udp(C1, ip1.octets()), 30)),
            PASS,
            "unclaimed tag"
        );
        assert_eq!(v(&tagged(&arp_request(ip1.octets()), 20)), PASS);
        assert_eq!(v(&tagged(&arp_request(ip3.octets()), 20)), TAKE);
        assert_eq!(v(&arp_request(ip3.octets())), PASS, "ip3 is on VLAN 20");
        assert_eq!(
            v(&tagged(&udp(HOST, ip3.octets()), 20)),
            TAKE,
            "ipvlan: by address"
        );
        assert_eq!(v(&udp(HOST, ip3.octets())), PASS);
        // Cut tags and headers pass (the kernel runs nothing under 14 bytes).
        assert_eq!(v(&tagged(&udp(HOST, ip3.octets()), 20)[..14]), PASS);
        assert_eq!(v(&tagged(&udp(C1, ip1.octets()), 20)[..16]), PASS);
        bcast.truncate(20);
        assert_eq!(v(&bcast), PASS);
        // Taken away again.
        maps.sync(&HashMap::new(), &HashMap::new()).unwrap();
        assert_eq!(v(&udp(C1, ip1.octets())), PASS);
        assert_eq!(v(&arp_request(ip1.octets())), PASS);
    }
}
