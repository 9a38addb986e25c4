//! What the tests of real container runtimes (dockerd, podman) share: an image made from
//! busybox-static, and taking away what a runtime leaves behind (mounts under its dirs,
//! cgroup dirs under a parent of the test's own).

use std::path::{Path, PathBuf};

use super::*;

/// A rootfs tarball in `dir`: busybox-static and its applets, `/www/index.html` holding
/// `page`. Import it with `docker import` / `podman import`.
pub fn busybox_rootfs_tar(dir: &TempDir, page: &str) -> PathBuf {
    let installed = sh("dpkg-query", &["-W", "-f=${Status}", "busybox-static"]);
    assert!(
        String::from_utf8_lossy(&installed.stdout).contains("install ok installed"),
        "busybox-static is not installed (scripts/deps.sh installs it)"
    );
    let rootfs = dir.path("rootfs");
    for d in ["bin", "etc", "tmp", "www", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "sleep", "ip", "ping", "cat", "nslookup", "httpd", "wget", "hostname",
    ] {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    std::fs::write(rootfs.join("www/index.html"), page).unwrap();
    let tar = dir.path("rootfs.tar");
    must(
        "tar",
        &[
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ],
    );
    tar
}

/// Unmounts whatever is mounted under `root`, deepest first.
pub fn unmount_under(root: &Path) {
    let root = root.display().to_string();
    let mounts = sh("findmnt", &["-rn", "-o", "TARGET"]);
    let mut under: Vec<String> = String::from_utf8_lossy(&mounts.stdout)
        .lines()
        .filter(|m| m.starts_with(&root))
        .map(String::from)
        .collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in under {
        let _ = sh("umount", &["-l", &m]);
    }
}

/// Removes the cgroup dir `parent` (a path like "/vt123cg") and everything under it, in
/// every hierarchy (cgroup v1 and v2).
pub fn remove_cgroup_parent(parent: &str) {
    let rel = parent.trim_start_matches('/');
    remove_tree(&Path::new("/sys/fs/cgroup").join(rel));
    if let Ok(hier) = std::fs::read_dir("/sys/fs/cgroup") {
        for h in hier.flatten() {
            remove_tree(&h.path().join(rel));
        }
    }
}

/// Empty directories only: what is left of a cgroup tree once its processes are gone.
fn remove_tree(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
        let _ = std::fs::remove_dir(dir);
    }
}
