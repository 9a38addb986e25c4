//! Named network namespaces the switch creates for its containers, made as `ip netns add` makes
//! them (so `ip netns exec NAME`, `ip netns list` and every other tool see them): a file under
//! `/run/netns` with the namespace bind-mounted on it. The bind mount keeps the namespace alive
//! without any process, so containers outlive vswitchd (a restart, even `kill -9`, keeps them).
//!
//! The mounts are made in vswitchd's mount namespace; run under `ip netns exec` (which gives its
//! command a private mount namespace), the names would be visible only there.

use std::fs::{self, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::netlink::Netlink;

const NETNS_RUN_DIR: &str = "/run/netns";

/// Where a named namespace lives.
pub fn path(name: &str) -> PathBuf {
    Path::new(NETNS_RUN_DIR).join(name)
}

/// Does a namespace of that name exist (a mounted namespace file)?
pub fn exists(name: &str) -> bool {
    is_netns(&path(name))
}

/// Is there anything (a namespace, or a stale file) under that name?
pub fn name_taken(name: &str) -> bool {
    path(name).symlink_metadata().is_ok()
}

/// Is `p` a network namespace (an nsfs file), not just a plain file left behind?
fn is_netns(p: &Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a NUL-terminated path; statfs writes only into `st`, a zeroed struct of
    // the right type that outlives the call.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC
    }
}

fn cstr(p: &Path) -> io::Result<std::ffi::CString> {
    std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))
}

/// `/run/netns` as iproute2 leaves it: a mount point with shared propagation, so namespaces
/// mounted there are seen by every mount namespace that shares it.
fn prepare_run_dir() -> io::Result<()> {
    fs::create_dir_all(NETNS_RUN_DIR)?;
    let dir = cstr(Path::new(NETNS_RUN_DIR))?;
    let none = c"none";
    let shared = || mount(none, &dir, None, libc::MS_SHARED | libc::MS_REC);
    if shared().is_ok() {
        return Ok(());
    }
    // Not a mount point yet: bind it onto itself, then make it shared.
    mount(&dir, &dir, Some(none), libc::MS_BIND | libc::MS_REC)?;
    shared()?;
    Ok(())
}

/// mount(2) without data.
fn mount(
    src: &std::ffi::CStr,
    dst: &std::ffi::CStr,
    fstype: Option<&std::ffi::CStr>,
    flags: libc::c_ulong,
) -> io::Result<()> {
    // SAFETY: NUL-terminated strings that outlive the call; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            fstype.map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            std::ptr::null(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Creates the named namespace `name` with `lo` up. Fails with `AlreadyExists` if the name is
/// taken; on any other failure nothing is left behind.
pub fn create(name: &str) -> io::Result<()> {
    prepare_run_dir()?;
    let target = path(name);
    // create_new: the name is ours or we fail (a second creator loses cleanly).
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o444)
        .open(&target)?;
    let made = std::thread::scope(|s| {
        s.spawn(|| -> io::Result<()> {
            // SAFETY: unshare changes only this short-lived thread's network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: gettid has no preconditions.
            let tid = unsafe { libc::gettid() };
            let src = cstr(Path::new(&format!("/proc/self/task/{tid}/ns/net")))?;
            let dst = cstr(&target)?;
            mount(&src, &dst, Some(c"none"), libc::MS_BIND)?;
            let mut nl = Netlink::open()?;
            if let Some(lo) = nl.link_index("lo")? {
                nl.set_up(lo)?;
            }
            Ok(())
        })
        .join()
        .unwrap_or_else(|_| Err(io::Error::other("namespace thread panicked")))
    });
    if let Err(e) = made {
        let _ = delete(name);
        return Err(e);
    }
    Ok(())
}

/// Removes the name (unmount and unlink), as `ip netns del` does; the namespace itself goes when
/// nothing else holds it. A name that is not there is not an error.
pub fn delete(name: &str) -> io::Result<()> {
    let target = path(name);
    let c = cstr(&target)?;
    // SAFETY: a NUL-terminated path that outlives the call; a lazy unmount of that file only.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    let umount_err = (rc != 0).then(io::Error::last_os_error);
    match fs::remove_file(&target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(umount_err.unwrap_or(e)),
    }
}
