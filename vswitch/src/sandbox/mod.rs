//! Network namespaces and the interfaces the switch puts in them, all through netlink.
//!
//! Work inside a namespace runs on a short-lived thread that has `setns`'d into it, so the rest of
//! the daemon never changes namespace; a TAP created on that thread is born inside the namespace
//! and its fd works from any thread afterwards.

pub mod hostports;
pub mod named_netns;
pub mod netlink;

use std::fmt;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::ports::afxdp::{AfXdp, AfXdpError};
use crate::ports::tap::{Tap, TapError};
use crate::wire::MacAddr;
use netlink::{LinkChange, Netlink};

/// How a user names a network namespace: by `ip netns` name, by path, or by a process's pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetnsSpec {
    Name(String),
    Path(PathBuf),
    Pid(u32),
}

/// Why something inside a namespace failed.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "invalid namespace {0:?}: give an `ip netns` name, a path like /proc/PID/ns/net, or a pid"
    )]
    BadSpec(String),
    #[error("network namespace {spec} does not exist ({path}: {source}); create it first, e.g. `ip netns add NAME`")]
    NotFound {
        spec: String,
        path: String,
        source: io::Error,
    },
    #[error("{0} is not a network namespace ({1})")]
    NotANetns(String, io::Error),
    #[error("interface {ifname:?} already exists in namespace {spec}; choose another --ifname")]
    IfnameTaken { ifname: String, spec: String },
    #[error("{0}")]
    Tap(#[from] TapError),
    #[error("netlink {op} failed in namespace {spec}: {source}")]
    Netlink {
        op: &'static str,
        spec: String,
        source: io::Error,
    },
    #[error("{0}")]
    AfXdp(#[from] AfXdpError),
    #[error("cannot turn off TX offloads on {ifname:?} ({source})")]
    Offloads { ifname: String, source: io::Error },
    #[error("worker thread for namespace {0} panicked")]
    Thread(String),
}

impl fmt::Display for NetnsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetnsSpec::Name(n) => write!(f, "{n:?}"),
            NetnsSpec::Path(p) => write!(f, "{}", p.display()),
            NetnsSpec::Pid(pid) => write!(f, "of pid {pid}"),
        }
    }
}

impl NetnsSpec {
    pub fn parse(s: &str) -> Result<NetnsSpec, SandboxError> {
        let bad = || SandboxError::BadSpec(s.to_string());
        if s.is_empty() || s.len() > 4096 || s.contains('\0') {
            return Err(bad());
        }
        if s.starts_with('/') {
            return Ok(NetnsSpec::Path(PathBuf::from(s)));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(NetnsSpec::Pid).map_err(|_| bad());
        }
        if s == "." || s == ".." || s.contains('/') || s.len() > 255 {
            return Err(bad());
        }
        Ok(NetnsSpec::Name(s.to_string()))
    }

    pub fn path(&self) -> PathBuf {
        match self {
            NetnsSpec::Name(n) => PathBuf::from("/run/netns").join(n),
            NetnsSpec::Path(p) => p.clone(),
            NetnsSpec::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    /// Opens the namespace file (a handle that keeps it alive while held).
    pub fn open(&self) -> Result<File, SandboxError> {
        let path = self.path();
        File::open(&path).map_err(|source| SandboxError::NotFound {
            spec: self.to_string(),
            path: path.display().to_string(),
            source,
        })
    }
}

/// Is `name` acceptable to the kernel as an interface name?
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < libc::IFNAMSIZ
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':')
}

/// Runs `f` on a thread that has joined the network namespace `ns`.
pub fn in_netns<R: Send>(
    ns: &File,
    spec: &NetnsSpec,
    f: impl FnOnce() -> Result<R, SandboxError> + Send,
) -> Result<R, SandboxError> {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: `ns` is an open file; setns only reads the fd and changes the namespace of
            // this (scoped, short-lived) thread, never the rest of the process.
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            if rc < 0 {
                return Err(SandboxError::NotANetns(
                    spec.to_string(),
                    io::Error::last_os_error(),
                ));
            }
            f()
        })
        .join()
        .unwrap_or_else(|_| Err(SandboxError::Thread(spec.to_string())))
    })
}

/// What a container interface should look like.
#[derive(Debug, Clone)]
pub struct InterfaceSetup {
    pub ifname: String,
    pub mac: MacAddr,
    pub mtu: u32,
    /// Address and prefix length to configure, if any.
    pub ip: Option<(Ipv4Addr, u8)>,
    /// Default route to add when `ip` is set (skipped if the namespace has one already).
    pub gateway: Option<Ipv4Addr>,
    /// Prefixes routed on the interface's link when `ip` is set (host access to a macvlan or
    /// ipvlan network: its address range, the host's own route to the segment being wider).
    pub routes: Vec<ipnet::Ipv4Net>,
    /// Open the TAP with a virtio-net header and checksum/TSO/USO offloads.
    pub offload: bool,
}

/// What `create_tap_interface` did besides creating the TAP.
#[derive(Debug, Clone, Default)]
pub struct InterfaceReport {
    /// The namespace already had a default route, so none was added.
    pub kept_existing_default_route: bool,
}

/// Creates a TAP called `setup.ifname` inside the namespace and configures it. On any error the
/// TAP is closed again, which removes it: nothing is left behind.
///
/// The TAP is opened on a thread inside the namespace, so the device is born there (moving a
/// device between namespaces costs the kernel an RCU barrier: ~40 ms here, against ~3 ms for
/// creating it in place). A tun fd holds a reference to the namespace it was opened in, so the
/// daemon watches the namespace handle (`NetnsId`) and closes the port when it disappears —
/// otherwise a dead container's namespace would live on.
pub fn create_tap_interface(
    ns: &File,
    spec: &NetnsSpec,
    setup: &InterfaceSetup,
) -> Result<(Tap, InterfaceReport), SandboxError> {
    in_netns(ns, spec, || {
        let mut nl = Netlink::open().map_err(nl_err(spec, "open"))?;
        if nl
            .link_index(&setup.ifname)
            .map_err(nl_err(spec, "get link"))?
            .is_some()
        {
            return Err(ifname_taken(spec, setup));
        }
        // Born under a temporary name (see `configure_interface`), and persistent only once it
        // has its real one: a daemon killed in between leaves nothing behind.
        let born_as = birth_name();
        let mut tap = Tap::create(&born_as, setup.offload).map_err(|e| match e {
            TapError::Create { source, .. } => TapError::Create {
                name: setup.ifname.clone(),
                source,
            },
            e => e,
        })?;
        let report = configure_interface(&mut nl, spec, setup, &born_as)?;
        tap.renamed(&setup.ifname);
        tap.persist().map_err(|source| TapError::Create {
            name: setup.ifname.clone(),
            source,
        })?;
        Ok((tap, report))
    })
}

/// Attaches again to a port's TAP that outlived vswitchd (killed, or crashed: TAPs are
/// persistent while their port exists, and a clean stop removes them), so the container keeps
/// its interface as it was — same ifindex, addresses, routes and sockets. Taken only if the
/// device in the namespace under the port's name is a TAP nobody is attached to; if its MAC or
/// MTU is no longer the port's, it is removed and `None` returned, as when there is no such
/// device: the caller then creates the TAP afresh.
pub fn reuse_tap_interface(
    ns: &File,
    spec: &NetnsSpec,
    setup: &InterfaceSetup,
) -> Result<Option<Tap>, SandboxError> {
    in_netns(ns, spec, || {
        let Some((tap, link)) = attach_stale_tap(spec, &setup.ifname, setup.offload)? else {
            return Ok(None);
        };
        if link.mac != Some(setup.mac) || link.mtu != Some(setup.mtu) {
            drop(tap); // removes the device
            return Ok(None);
        }
        Ok(Some(tap))
    })
}

/// Attaches again to a handed-off port's TAP (see `PortAdd::handoff`) that outlived vswitchd:
/// in the sandbox `ns`, under whatever name the runtime gave it, found by its MAC. `None` when
/// there is no such TAP nobody holds.
pub fn reuse_handed_off_tap(
    ns: &File,
    spec: &NetnsSpec,
    mac: MacAddr,
    offload: bool,
) -> Result<Option<Tap>, SandboxError> {
    in_netns(ns, spec, || {
        let mut nl = Netlink::open().map_err(nl_err(spec, "open"))?;
        let links = nl.links().map_err(nl_err(spec, "list links"))?;
        let Some(name) = links
            .into_iter()
            .find(|l| l.kind.as_deref() == Some("tun") && l.mac == Some(mac))
            .and_then(|l| l.name)
        else {
            return Ok(None);
        };
        Ok(attach_stale_tap(spec, &name, offload)?.map(|(tap, _)| tap))
    })
}

/// Removes a TAP called `ifname` that a killed vswitchd left in the namespace (for a port that
/// is being deleted without ever having been restored). Nothing happens if there is none, or a
/// process holds it.
pub fn remove_stale_tap(ns: &File, spec: &NetnsSpec, ifname: &str, offload: bool) {
    let _ = in_netns(ns, spec, || {
        attach_stale_tap(spec, ifname, offload).map(drop)
    });
}

/// In the calling thread's namespace: attaches to the TAP `ifname` if there is one that nobody
/// holds (with the port's flags), marked persistent so dropping it removes the device.
fn attach_stale_tap(
    spec: &NetnsSpec,
    ifname: &str,
    offload: bool,
) -> Result<Option<(Tap, netlink::LinkState)>, SandboxError> {
    let mut nl = Netlink::open().map_err(nl_err(spec, "open"))?;
    let Some(link) = nl.link(ifname).map_err(nl_err(spec, "get link"))? else {
        return Ok(None);
    };
    if link.kind.as_deref() != Some("tun") {
        return Ok(None);
    }
    // Fails if another process holds the TAP, or it was made with other flags.
    let Ok(mut tap) = Tap::create(ifname, offload) else {
        return Ok(None);
    };
    tap.persist().map_err(|source| TapError::Create {
        name: ifname.to_string(),
        source,
    })?;
    Ok(Some((tap, link)))
}

/// A name for an interface being born, unique on the host (this process, a counter), under
/// which it is set up before it takes its real name.
fn birth_name() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) & 0xf_ffff;
    format!("vs{:x}n{n:x}", std::process::id())
}

fn ifname_taken(spec: &NetnsSpec, setup: &InterfaceSetup) -> SandboxError {
    SandboxError::IfnameTaken {
        ifname: setup.ifname.clone(),
        spec: spec.to_string(),
    }
}

/// The index of the link `name` just created; an error if it is already gone.
fn created_index(nl: &mut Netlink, spec: &NetnsSpec, name: &str) -> Result<u32, SandboxError> {
    nl.link_index(name)
        .map_err(nl_err(spec, "get link"))?
        .ok_or_else(|| {
            nl_err(spec, "get link")(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{name} vanished right after creation"),
            ))
        })
}

fn nl_err(spec: &NetnsSpec, op: &'static str) -> impl FnOnce(io::Error) -> SandboxError {
    let spec = spec.to_string();
    move |source| SandboxError::Netlink { op, spec, source }
}

/// Configures the container's interface `setup.ifname` from a thread inside its namespace: no
/// IPv6, MAC, MTU, its name (from `born_as`), up (and `lo` up), address and default route.
fn configure_interface(
    nl: &mut Netlink,
    spec: &NetnsSpec,
    setup: &InterfaceSetup,
    born_as: &str,
) -> Result<InterfaceReport, SandboxError> {
    // As Docker does for networks without IPv6: no link-local address, DAD, MLD or router
    // solicitations flooding the network whenever a container comes up. (/proc/sys/net
    // shows the namespace of the thread that opens it: this one.) Written under the birth
    // name, unique on the host: the dentries of every namespace's `eth0` share one hash chain
    // in /proc/sys, so looking that name up costs as much as there are containers (measured:
    // it was a quarter of add-port at 1000 ports).
    let _ = std::fs::write(
        format!("/proc/sys/net/ipv6/conf/{born_as}/disable_ipv6"),
        "1",
    );
    let index = created_index(nl, spec, born_as)?;
    match nl.set_link(
        index,
        &LinkChange {
            name: (born_as != setup.ifname).then(|| setup.ifname.clone()),
            mac: Some(setup.mac),
            mtu: Some(setup.mtu),
            up: Some(true),
            ..Default::default()
        },
    ) {
        Ok(()) => {}
        // Taken since the check before the interface was made.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => return Err(ifname_taken(spec, setup)),
        Err(e) => return Err(nl_err(spec, "set link")(e)),
    }
    if let Some(lo) = nl.link_index("lo").map_err(nl_err(spec, "get link lo"))? {
        nl.set_up(lo).map_err(nl_err(spec, "set lo up"))?;
    }
    let mut report = InterfaceReport::default();
    if let Some((ip, prefix)) = setup.ip {
        nl.add_address(index, ip, prefix)
            .map_err(nl_err(spec, "add address"))?;
        for r in &setup.routes {
            nl.add_route(index, *r, None)
                .map_err(nl_err(spec, "add route"))?;
        }
        if let Some(gw) = setup.gateway {
            match nl.add_default_route(index, gw) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    report.kept_existing_default_route = true;
                }
                Err(e) => return Err(nl_err(spec, "add default route")(e)),
            }
        }
    }
    Ok(report)
}

/// Creates a veth pair for an AF_XDP port: `host_ifname` in vswitchd's namespace (bound to an
/// AF_XDP socket), `setup.ifname` born inside the container's namespace and configured there
/// with its TX checksum and segmentation offloads off, so that it only ever sends frames that
/// fit a UMEM frame and carry complete checksums. A stale `host_ifname` (left by a crash) is
/// deleted first. On any error the pair is deleted again: nothing is left behind.
pub fn create_veth_interface(
    ns: &File,
    spec: &NetnsSpec,
    setup: &InterfaceSetup,
    host_ifname: &str,
    xdp: crate::ports::XdpConfig,
) -> Result<(AfXdp, InterfaceReport), SandboxError> {
    check_netns(ns, spec)?;
    let mut nl = Netlink::open().map_err(nl_err(spec, "open"))?;
    if let Some(stale) = nl
        .link_index(host_ifname)
        .map_err(nl_err(spec, "get link"))?
    {
        nl.del_link(stale)
            .map_err(nl_err(spec, "delete stale veth"))?;
    }
    let born_as = birth_name();
    if in_netns(ns, spec, || {
        Netlink::open()
            .and_then(|mut inner| inner.link_index(&setup.ifname))
            .map_err(nl_err(spec, "get link"))
    })?
    .is_some()
    {
        return Err(ifname_taken(spec, setup));
    }
    nl.add_veth(host_ifname, &born_as, ns.as_raw_fd(), setup.mac, setup.mtu)
        .map_err(nl_err(spec, "create veth"))?;
    let built = (|| {
        let host = created_index(&mut nl, spec, host_ifname)?;
        // The host end only carries the container's frames to the socket: no IPv6 chatter.
        let _ = std::fs::write(
            format!("/proc/sys/net/ipv6/conf/{host_ifname}/disable_ipv6"),
            "1",
        );
        nl.set_up(host).map_err(nl_err(spec, "set veth up"))?;
        let report = in_netns(ns, spec, || {
            let mut inner = Netlink::open().map_err(nl_err(spec, "open"))?;
            disable_tx_offloads(&born_as).map_err(|source| SandboxError::Offloads {
                ifname: setup.ifname.clone(),
                source,
            })?;
            configure_interface(&mut inner, spec, setup, &born_as)
        })?;
        let port = AfXdp::open(host_ifname, xdp)?;
        Ok((port, report))
    })();
    if built.is_err() {
        if let Ok(Some(i)) = nl.link_index(host_ifname) {
            let _ = nl.del_link(i);
        }
    }
    built
}

/// Takes over an AF_XDP port's veth pair that outlived vswitchd (killed, or crashed: a clean
/// stop deletes it), instead of re-creating it: the container keeps its interface as it was —
/// same ifindex, addresses, routes and sockets — and only sees the frames of the downtime lost.
/// The pair is taken only if both ends are there and are each other's peer, with the port's MAC
/// and MTU; the stale XDP program is detached and a new socket bound. `None` when the pair is not
/// there as this port made it (the caller then creates it afresh).
pub fn reuse_veth_interface(
    ns: &File,
    spec: &NetnsSpec,
    setup: &InterfaceSetup,
    host_ifname: &str,
    xdp: crate::ports::XdpConfig,
) -> Result<Option<AfXdp>, SandboxError> {
    check_netns(ns, spec)?;
    let mut nl = Netlink::open().map_err(nl_err(spec, "open"))?;
    let Some(host) = nl.link(host_ifname).map_err(nl_err(spec, "get link"))? else {
        return Ok(None);
    };
    let inner = in_netns(ns, spec, || {
        Netlink::open()
            .and_then(|mut inner| inner.link(&setup.ifname))
            .map_err(nl_err(spec, "get link"))
    })?;
    let Some(inner) = inner else {
        return Ok(None);
    };
    if host.peer != Some(inner.index)
        || inner.peer != Some(host.index)
        || inner.mac != Some(setup.mac)
        || inner.mtu != Some(setup.mtu)
    {
        return Ok(None);
    }
    // The program the dead daemon attached (native or generic) holds the old socket's map.
    for mode in [
        crate::ports::afxdp::XDP_FLAGS_DRV_MODE,
        crate::ports::afxdp::XDP_FLAGS_SKB_MODE,
    ] {
        let _ = nl.set_xdp(host.index, -1, mode, None);
    }
    nl.set_up(host.index).map_err(nl_err(spec, "set veth up"))?;
    in_netns(ns, spec, || {
        disable_tx_offloads(&setup.ifname).map_err(|source| SandboxError::Offloads {
            ifname: setup.ifname.clone(),
            source,
        })
    })?;
    // The dead daemon's socket is released by the kernel a moment after its process (EBUSY
    // until then, longer on a loaded host): retried briefly, as the uplink's restore does.
    let mut tries = 0;
    loop {
        match AfXdp::open(host_ifname, xdp) {
            Ok(port) => return Ok(Some(port)),
            Err(e) if tries < 20 && e.to_string().contains("os error 16") => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Fails unless `ns` is a network namespace (what `setns(fd, CLONE_NEWNET)` would check).
fn check_netns(ns: &File, spec: &NetnsSpec) -> Result<(), SandboxError> {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
    // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the open fd.
    let rc = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_NSTYPE) };
    if rc == libc::CLONE_NEWNET {
        return Ok(());
    }
    let why = if rc < 0 {
        io::Error::last_os_error()
    } else {
        io::Error::new(io::ErrorKind::InvalidInput, "a namespace of another type")
    };
    Err(SandboxError::NotANetns(spec.to_string(), why))
}

/// Deletes an AF_XDP port's veth pair (both ends go) by its host end, if it still exists.
pub fn delete_veth(host_ifname: &str) -> io::Result<()> {
    let mut nl = Netlink::open()?;
    match nl.link_index(host_ifname)? {
        Some(i) => match nl.del_link(i) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            r => r,
        },
        None => Ok(()),
    }
}

/// Does an interface called `name` exist in vswitchd's own namespace?
pub fn link_exists(name: &str) -> bool {
    let Ok(c) = std::ffi::CString::new(name) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated string that outlives the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
}

/// An interface's MAC address, read from sysfs.
pub fn link_mac(name: &str) -> Option<crate::wire::MacAddr> {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).ok()?;
    let b: Vec<u8> = text
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .ok()?;
    (b.len() == 6).then(|| crate::wire::MacAddr::from_slice(&b))
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_STSO: u32 = 0x1f;

/// `struct ethtool_value`.
#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

/// `struct ifreq` with the `ifr_data` member of the union.
#[repr(C)]
struct IfReqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut EthtoolValue,
    _pad: [u8; 16],
}

/// Turns TX checksum offload and TSO off on `ifname` (in the calling thread's namespace), as
/// `ethtool -K IF tx off tso off` does: the kernel then checksums every frame and segments
/// GSO frames before they reach the device. (With checksum offload gone, the kernel also drops
/// the features that depend on it: SG, GSO for UDP, ...)
fn disable_tx_offloads(ifname: &str) -> io::Result<()> {
    let sock =
        std::net::UdpSocket::bind("0.0.0.0:0").or_else(|_| std::net::UdpSocket::bind("[::]:0"))?;
    for cmd in [ETHTOOL_STSO, ETHTOOL_STXCSUM] {
        let mut val = EthtoolValue { cmd, data: 0 };
        let mut req = IfReqData {
            name: [0; libc::IFNAMSIZ],
            data: &mut val,
            _pad: [0; 16],
        };
        let n = ifname.len().min(libc::IFNAMSIZ - 1);
        req.name[..n].copy_from_slice(&ifname.as_bytes()[..n]);
        // SAFETY: `req` is a properly laid out `struct ifreq` whose data pointer refers to
        // `val`; both live across the call and the kernel reads/writes only within them.
        let rc = unsafe { libc::ioctl(sock.as_raw_fd(), SIOCETHTOOL, &mut req as *mut IfReqData) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Identity of a namespace handle: the device and inode of the nsfs file it resolves to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetnsId {
    dev: u64,
    ino: u64,
}

impl NetnsId {
    /// The identity of an open namespace file.
    pub fn of(ns: &File) -> io::Result<NetnsId> {
        let m = ns.metadata()?;
        Ok(NetnsId {
            dev: m.dev(),
            ino: m.ino(),
        })
    }

    /// The namespace this process runs in.
    pub fn own() -> io::Result<NetnsId> {
        NetnsId::of(&File::open("/proc/self/ns/net")?)
    }

    /// Does the user's handle (name, path or pid) still lead to this namespace?
    pub fn still_named_by(&self, spec: &NetnsSpec) -> bool {
        std::fs::metadata(spec.path())
            .map(|m| m.dev() == self.dev && m.ino() == self.ino)
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(
            NetnsSpec::parse("c1").unwrap(),
            NetnsSpec::Name("c1".into())
        );
        assert_eq!(NetnsSpec::parse("1234").unwrap(), NetnsSpec::Pid(1234));
        assert_eq!(
            NetnsSpec::parse("1234").unwrap().path(),
            PathBuf::from("/proc/1234/ns/net")
        );
        assert_eq!(
            NetnsSpec::parse("/proc/1/ns/net").unwrap().path(),
            PathBuf::from("/proc/1/ns/net")
        );
        for bad in ["", "..", "a/b", "99999999999999999999"] {
            assert!(NetnsSpec::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ifnames() {
        assert!(valid_ifname("eth0"));
        assert!(valid_ifname("a234567890abcde"));
        assert!(!valid_ifname("a234567890abcdef"));
        for bad in ["", ".", "..", "a b", "a/b", "a:b"] {
            assert!(!valid_ifname(bad), "{bad}");
        }
    }
}
