//! A copy of a parent's broadcasts and multicasts (AF_PACKET): XDP can only take a frame from
//! the host's stack or leave it there, never both, so the segment's broadcasts — which the
//! host needs too — reach the switch's containers through a packet socket that sees what the
//! parent's XDP program passed to the host. A classic BPF filter keeps only frames to a group
//! address (and not ARP: the program takes the ARP for containers, the rest is for others).
//! The kernel's 802.1Q tag, put aside as metadata, is put back in the frame, so the trunk
//! demultiplexes these frames as the AF_XDP socket's.
//!
//! And `PacketPort`: an uplink on a packet socket, where AF_XDP is not wanted or cannot be.
//!
//! Hand-written on libc: sockets of a few calls, with no crate made for it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::wire::EtherType;

const ETH_P_ALL: u16 = 0x0003;
const PACKET_AUXDATA: libc::c_int = 8;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// `struct tpacket_auxdata` (linux/if_packet.h).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AuxData {
    status: u32,
    len: u32,
    snaplen: u32,
    mac: u16,
    net: u16,
    vlan_tci: u16,
    vlan_tpid: u16,
}

/// The filter: `ldb [0]; jset #1, 0, drop; ldh [12]; jeq #0x806, drop, 0; ret #0xffff;
/// drop: ret #0` (the kernel's tag, if any, is not in the data it looks at).
fn group_frames_filter() -> [libc::sock_filter; 6] {
    let op = |code: u16, jt: u8, jf: u8, k: u32| libc::sock_filter { code, jt, jf, k };
    [
        op(0x30, 0, 0, 0),      // ldb [0]
        op(0x45, 0, 3, 1),      // jset #1: to a group, else drop
        op(0x28, 0, 0, 12),     // ldh [12]
        op(0x15, 1, 0, 0x0806), // jeq ARP: drop
        op(0x06, 0, 0, 0xffff), // ret: take it
        op(0x06, 0, 0, 0),      // drop
    ]
}

/// A receive-only packet socket on one interface, for its broadcasts and multicasts.
pub struct GroupCopy {
    fd: OwnedFd,
}

impl GroupCopy {
    pub fn open(ifindex: u32) -> io::Result<GroupCopy> {
        let mut filter = group_frames_filter();
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_mut_ptr(),
        };
        let fd = bound_socket(
            ifindex,
            &[PACKET_AUXDATA, PACKET_IGNORE_OUTGOING],
            Some(&prog),
        )?;
        Ok(GroupCopy { fd })
    }

    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// One frame into `buf`, its 802.1Q tag back in place; `WouldBlock` when there is none.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        // Room for a tag put back: read 4 bytes in.
        if buf.len() < 4 + 14 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let mut iov = libc::iovec {
            iov_base: buf[4..].as_mut_ptr().cast(),
            iov_len: buf.len() - 4,
        };
        let mut control = [0u64; 8];
        // SAFETY: an all-zero msghdr is valid; its pointers are set to live buffers below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `msg` points at `iov` (into `buf`) and `control`, all alive for the call.
        let n = unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, libc::MSG_TRUNC) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n > buf.len() - 4 || n < 14 {
            // Longer than the buffer (cut), or not even an Ethernet header: dropped.
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        let mut aux = AuxData::default();
        // SAFETY: CMSG_* walk the control buffer the kernel filled, within msg_controllen.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == PACKET_AUXDATA {
                    aux = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<AuxData>());
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        if aux.status & TP_STATUS_VLAN_VALID == 0 || aux.vlan_tci & 0x0fff == 0 {
            buf.copy_within(4..4 + n, 0);
            return Ok(n);
        }
        let tpid = match aux.status & TP_STATUS_VLAN_TPID_VALID {
            0 => EtherType::VLAN,
            _ => aux.vlan_tpid,
        };
        if tpid != EtherType::VLAN {
            // 802.1ad outer tags: no network is on one.
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        // The MACs move back four bytes; the tag goes between them and the EtherType.
        buf.copy_within(4..16, 0);
        buf[12..14].copy_from_slice(&EtherType::VLAN.to_be_bytes());
        buf[14..16].copy_from_slice(&(aux.vlan_tci & 0x0fff).to_be_bytes());
        Ok(n + 4)
    }
}

/// A non-blocking packet socket bound to `ifindex` for every protocol, with the `SOL_PACKET`
/// options `opts` on and `filter` attached before the bind (nothing else is let in meanwhile).
fn bound_socket(
    ifindex: u32,
    opts: &[libc::c_int],
    filter: Option<&libc::sock_fprog>,
) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked before use.
    let raw = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a socket just made and owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let one: libc::c_int = 1;
    for &opt in opts {
        setsockopt(&fd, libc::SOL_PACKET, opt, &one)?;
    }
    if let Some(prog) = filter {
        setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, prog)?;
    }
    // SAFETY: an all-zero sockaddr_ll is valid; the fields set below make it a bind to
    // `ifindex` for every protocol.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = libc::AF_PACKET as u16;
    sll.sll_protocol = ETH_P_ALL.to_be();
    sll.sll_ifindex = ifindex as i32;
    // SAFETY: `sll` is a sockaddr_ll of the size given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// An uplink served by a packet socket instead of AF_XDP (`uplink set --type packet`, and
/// the fallback of a dedicated uplink where no XDP program attaches). The interface is the
/// switch's alone (dedicated mode): the host's stack sees the same frames but has no address
/// there to take them for. With `PACKET_VNET_HDR` each frame comes and goes with a virtio-net
/// header, as a TAP's do: 64 KiB GSO frames cross in one call each way, and TSO frames from
/// containers' TAPs leave as they are (the kernel segments them, where the device cannot).
///
/// The socket's header is the 10-byte `virtio_net_hdr`; the dataplane's TAP ports use 12
/// (with `num_buffers`): this port shows 12 (`headroom`), so frames pass between TAPs and the
/// uplink untouched, and drops or adds the two bytes itself (a move of 10 bytes on receive,
/// a two-part `writev` on send).
pub struct PacketPort {
    fd: OwnedFd,
}

/// `struct virtio_net_hdr`, as `PACKET_VNET_HDR` reads and writes it.
const PACKET_VNET_HDR_LEN: usize = 10;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_QDISC_BYPASS: libc::c_int = 20;
/// The two bytes of `num_buffers` TAPs have after it.
const PAD: usize = super::tap::VNET_HDR_LEN - PACKET_VNET_HDR_LEN;
/// A socket buffer each way for a burst of GSO frames.
const PACKET_SOCK_BUF: libc::c_int = 4 << 20;

impl PacketPort {
    pub fn open(ifindex: u32) -> io::Result<PacketPort> {
        // Past the qdisc, as AF_XDP's transmits are: the interface is the switch's alone.
        let fd = bound_socket(
            ifindex,
            &[PACKET_VNET_HDR, PACKET_IGNORE_OUTGOING, PACKET_QDISC_BYPASS],
            None,
        )?;
        for opt in [libc::SO_RCVBUFFORCE, libc::SO_SNDBUFFORCE] {
            // Best effort: as root the default caps may be passed.
            let _ = setsockopt(&fd, libc::SOL_SOCKET, opt, &PACKET_SOCK_BUF);
        }
        Ok(PacketPort { fd })
    }

    /// One frame in two parts (header, frame), without joining them.
    fn writev(&self, head: &[u8], frame: &[u8]) -> io::Result<usize> {
        let iov = [
            libc::iovec {
                iov_base: head.as_ptr() as *mut libc::c_void,
                iov_len: head.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr() as *mut libc::c_void,
                iov_len: frame.len(),
            },
        ];
        // SAFETY: both iovecs point into slices alive for the call, only read by writev.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), 2) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl super::Port for PacketPort {
    fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn headroom(&self) -> usize {
        super::tap::VNET_HDR_LEN
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.len() < super::tap::VNET_HDR_LEN + 14 {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        let room = buf.len() - PAD;
        // SAFETY: recv(2) into the live slice `buf[PAD..]`, of the length given.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf[PAD..].as_mut_ptr().cast(),
                room,
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        if n > room || n < PACKET_VNET_HDR_LEN + 14 {
            // Cut (longer than the buffer), or no Ethernet header.
            return Err(io::Error::from(io::ErrorKind::InvalidData));
        }
        // The header to the front, `num_buffers` (1) after it, the frame where it is.
        buf.copy_within(PAD..PAD + PACKET_VNET_HDR_LEN, 0);
        buf[PACKET_VNET_HDR_LEN..super::tap::VNET_HDR_LEN].copy_from_slice(&1u16.to_le_bytes());
        Ok(n + PAD)
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.len() < super::tap::VNET_HDR_LEN {
            return Err(io::Error::from(io::ErrorKind::InvalidInput));
        }
        self.writev(
            &buf[..PACKET_VNET_HDR_LEN],
            &buf[super::tap::VNET_HDR_LEN..],
        )
    }

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.writev(&[0; PACKET_VNET_HDR_LEN], frame)
            .map(|n| n.saturating_sub(PACKET_VNET_HDR_LEN))
    }

    fn kind(&self) -> &'static str {
        "af_packet"
    }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, opt: libc::c_int, v: &T) -> io::Result<()> {
    // SAFETY: `v` is a live value of the size given, as the option expects.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            opt,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as u32,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
