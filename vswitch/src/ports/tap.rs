//! TAP devices: open `/dev/net/tun`, attach a named TAP, read and write frames.
//!
//! A port's TAP is persistent (`TUNSETPERSIST`) so that it outlives a killed vswitchd and can be
//! taken over on restart; dropping the `Tap` clears the flag before closing the fd, so del-port
//! and a clean exit still remove the interface from whatever namespace it is in.

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

use super::Port;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const IFF_VNET_HDR: libc::c_short = 0x4000;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;
const TUN_F_TSO_ECN: libc::c_uint = 0x08;
const TUN_F_USO4: libc::c_uint = 0x20;
const TUN_F_USO6: libc::c_uint = 0x40;

/// Size of the virtio-net header ahead of each frame (`struct virtio_net_hdr_mrg_rxbuf`).
pub const VNET_HDR_LEN: usize = 12;
/// The header of a frame with no offload work pending.
const PLAIN_HDR: [u8; VNET_HDR_LEN] = [0; VNET_HDR_LEN];

/// `struct ifreq` as TUNSETIFF reads it: a name and the flags member of the union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

/// Why a TAP could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("cannot open /dev/net/tun ({0}): is the tun module loaded and are you root?")]
    OpenTun(io::Error),
    #[error("interface name {0:?} is not valid (1 to 15 characters, no '/' or whitespace)")]
    BadName(String),
    #[error("cannot create TAP {name:?} ({source}): the name may be taken by another device")]
    Create { name: String, source: io::Error },
}

/// An open TAP device in the namespace of the thread that created it.
#[derive(Debug)]
pub struct Tap {
    file: File,
    name: String,
    /// The kernel and we exchange a virtio-net header with every frame (offloads on).
    vnet_hdr: bool,
    /// The device outlives this fd if the process dies (TUNSETPERSIST); dropping the `Tap`
    /// clears the flag first, so a closed port's device still goes with its fd.
    persist: bool,
    /// A runtime moved the device into its sandbox (`PortAdd::handoff`): a clean stop of the
    /// daemon leaves it there, for the next start to take over (see `keep_handed_off`).
    handed_off: bool,
}

/// Set when vswitchd stops cleanly: handed-off TAPs closed from then on stay (persistent) in
/// their sandboxes, as after a kill, since their runtime — not vswitchd — owns their lifetime.
static KEEP_HANDED_OFF: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Keeps handed-off TAPs when they are closed from now on (called on a clean stop).
pub fn keep_handed_off() {
    KEEP_HANDED_OFF.store(true, std::sync::atomic::Ordering::SeqCst);
}

impl Tap {
    /// Creates (or attaches to) the TAP called `name` in the calling thread's network namespace,
    /// non-blocking, without packet information headers. With `offloads`, frames carry a
    /// virtio-net header and the kernel may hand over checksum-pending and TSO/USO frames.
    pub fn create(name: &str, offloads: bool) -> Result<Tap, TapError> {
        if !crate::sandbox::valid_ifname(name) {
            return Err(TapError::BadName(name.to_string()));
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(TapError::OpenTun)?;
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            flags: IFF_TAP | IFF_NO_PI | if offloads { IFF_VNET_HDR } else { 0 },
            _pad: [0; 22],
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        // SAFETY: `file` is an open /dev/net/tun fd and `req` is a properly sized, initialised
        // `struct ifreq` that lives across the call; TUNSETIFF reads and writes only within it.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
        if rc < 0 {
            return Err(TapError::Create {
                name: name.to_string(),
                source: io::Error::last_os_error(),
            });
        }
        let tap = Tap {
            file,
            name: name.to_string(),
            vnet_hdr: offloads,
            persist: false,
            handed_off: false,
        };
        if offloads {
            tap.enable_offloads().map_err(|source| TapError::Create {
                name: name.to_string(),
                source,
            })?;
        }
        Ok(tap)
    }

    fn ioctl_int(&self, request: libc::c_ulong, value: libc::c_int) -> io::Result<()> {
        let mut v = value;
        // SAFETY: TUNSETVNETHDRSZ (reads an int through the pointer), TUNSETOFFLOAD and
        // TUNSETPERSIST (take the value itself) are given a valid fd and arguments that outlive
        // the call.
        let rc = unsafe {
            if request == TUNSETOFFLOAD || request == TUNSETPERSIST {
                libc::ioctl(self.file.as_raw_fd(), request, value as libc::c_ulong)
            } else {
                libc::ioctl(self.file.as_raw_fd(), request, &mut v as *mut libc::c_int)
            }
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Sets the header size and tells the kernel which offloads we accept; USO only where the
    /// kernel has it.
    fn enable_offloads(&self) -> io::Result<()> {
        self.ioctl_int(TUNSETVNETHDRSZ, VNET_HDR_LEN as libc::c_int)?;
        let base = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN;
        self.ioctl_int(
            TUNSETOFFLOAD,
            (base | TUN_F_USO4 | TUN_F_USO6) as libc::c_int,
        )
        .or_else(|_| self.ioctl_int(TUNSETOFFLOAD, base as libc::c_int))
    }

    /// Records that the device now has another name (renamed over netlink).
    pub fn renamed(&mut self, name: &str) {
        self.name = name.to_string();
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Makes the device outlive this fd if the process is killed, so the container keeps its
    /// interface (with its addresses and routes) until a restarted vswitchd attaches to it
    /// again. Dropping the `Tap` still removes the device.
    pub fn persist(&mut self) -> io::Result<()> {
        self.ioctl_int(TUNSETPERSIST, 1)?;
        self.persist = true;
        Ok(())
    }

    /// Marks the TAP as handed off to a runtime (see `keep_handed_off`).
    pub fn hand_off(&mut self) {
        self.handed_off = true;
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        if self.handed_off && KEEP_HANDED_OFF.load(std::sync::atomic::Ordering::SeqCst) {
            return;
        }
        if self.persist {
            // Without the flag, closing the fd (right after this) removes the device.
            let _ = self.ioctl_int(TUNSETPERSIST, 0);
        }
    }
}

impl Port for Tap {
    fn raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    fn headroom(&self) -> usize {
        if self.vnet_hdr {
            VNET_HDR_LEN
        } else {
            0
        }
    }

    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        if !self.vnet_hdr {
            return self.file.write(frame);
        }
        // One writev: a TAP takes each write as exactly one frame.
        let n = self
            .file
            .write_vectored(&[IoSlice::new(&PLAIN_HDR), IoSlice::new(frame)])?;
        Ok(n.saturating_sub(VNET_HDR_LEN))
    }

    fn plain_fd(&self) -> Option<RawFd> {
        Some(self.file.as_raw_fd())
    }

    fn kind(&self) -> &'static str {
        "tap"
    }
}
