//! Scaffolding: network namespaces, child processes and temporary directories that clean up
//! after themselves on drop (and, through a registry of what is alive, when the harness is
//! interrupted: [`clean_up_on_signal`]), running commands, and waiting for a condition.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// What is alive right now: namespaces and temporary directories.
struct Live {
    netns: Vec<String>,
    dirs: Vec<PathBuf>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    netns: Vec::new(),
    dirs: Vec::new(),
});

/// Changes the registry. Blocks for good once an interrupted run is cleaning up (the cleaner
/// holds the lock until it exits), so nothing new is made meanwhile.
fn live(f: impl FnOnce(&mut Live)) {
    let mut l = LIVE.lock().unwrap_or_else(|e| e.into_inner());
    f(&mut l);
}

/// The write end of the pipe the signal handler reports on.
static SIGNAL_PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn on_signal(sig: libc::c_int) {
    let b = sig as u8;
    // SAFETY: write(2) is async-signal-safe; the fd is the pipe's write end (or -1: EBADF).
    unsafe { libc::write(SIGNAL_PIPE.load(Ordering::Relaxed), &b as *const u8 as _, 1) };
}

/// Our own children (by parent pid), whatever started them.
fn children() -> Vec<libc::pid_t> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: libc::pid_t = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            // "pid (comm) state ppid ...": comm may hold spaces, so read after its last ')'.
            let ppid = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .to_string();
            (ppid == me).then_some(pid)
        })
        .collect()
}

/// On SIGINT, SIGTERM or SIGHUP: kills our children still running (the daemons, servers and
/// clients in the namespaces), deletes the namespaces and temporary directories still there,
/// and exits (128 + the signal). The handler only writes to a pipe; a thread does the rest.
/// Children start with default handling (an exec resets caught signals).
pub fn clean_up_on_signal() {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills the two-element array we pass; sigaction gets a zeroed struct with
    // our handler (which only calls write) and an empty mask.
    unsafe {
        if libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return;
        }
        SIGNAL_PIPE.store(fds[1], Ordering::Relaxed);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
    let read_fd = fds[0];
    std::thread::spawn(move || {
        let mut b = 0u8;
        // SAFETY: reads one byte into a live local from the pipe's read end, which we own.
        while unsafe { libc::read(read_fd, &mut b as *mut u8 as _, 1) } != 1 {}
        eprintln!("vswitch-bench: signal {b}: cleaning up");
        let l = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        for pid in children() {
            // SAFETY: kill(2) of a process whose parent we are.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(300));
        for ns in l.netns.iter().rev() {
            let _ = run("ip", &["netns", "del", ns]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        for d in &l.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        std::process::exit(128 + i32::from(b));
    });
}

pub fn prefix() -> String {
    format!("vb{}", std::process::id() % 100_000)
}

pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A namespace removed on drop.
pub struct Ns(pub String);

impl Ns {
    pub fn new(name: String) -> Result<Ns, String> {
        // Registered first: an interrupted run deletes it even if it stops just after this.
        live(|l| l.netns.push(name.clone()));
        if let Err(e) = run("ip", &["netns", "add", &name]) {
            live(|l| l.netns.retain(|n| *n != name));
            return Err(e);
        }
        let ns = Ns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["netns", "exec", &self.0];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    pub fn spawn(&self, args: &[&str]) -> Result<Proc, String> {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map(Proc)
            .map_err(|e| e.to_string())
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.0));
        live(|l| l.netns.retain(|n| *n != self.0));
    }
}

/// A child process killed (by PID) on drop.
pub struct Proc(pub Child);

impl Proc {
    pub fn wait_json(mut self) -> Result<Value, String> {
        let out = self.0.stdout.take().ok_or("no stdout")?;
        let status = self.0.wait().map_err(|e| e.to_string())?;
        let text = std::io::read_to_string(out).map_err(|e| e.to_string())?;
        serde_json::from_str(text.trim())
            .map_err(|e| format!("helper exited {status}: {e}: {text:?}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
        live(|l| l.dirs.retain(|d| *d != self.0));
    }
}

/// A fresh directory of this run's own (one per call: two daemons of one topology never
/// share one).
pub fn temp_dir(tag: &str) -> TempDir {
    static COUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let p = std::env::temp_dir().join(format!("{}-{tag}{n}", prefix()));
    let _ = std::fs::remove_dir_all(&p);
    live(|l| l.dirs.push(p.clone()));
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

pub fn sibling(bin: &str) -> PathBuf {
    std::env::current_exe().unwrap().with_file_name(bin)
}

pub fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
