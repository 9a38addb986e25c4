//! Scaffolding: network namespaces, child processes and temporary directories that clean up
//! after themselves on drop (and, through a registry of what is alive, when the harness is
//! interrupted: [`clean_up_on_signal`]), running commands, and waiting for a condition.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

/// What is alive right now: namespaces, child pids, temporary directories.
#[derive(Default)]
struct Live {
    netns: Vec<String>,
    pids: Vec<u32>,
    dirs: Vec<PathBuf>,
}

static LIVE: Mutex<Live> = Mutex::new(Live {
    netns: Vec::new(),
    pids: Vec::new(),
    dirs: Vec::new(),
});

fn live(f: impl FnOnce(&mut Live)) {
    if let Ok(mut l) = LIVE.lock() {
        f(&mut l);
    }
}

/// On SIGINT, SIGTERM or SIGHUP: kills the children still running, deletes the namespaces and
/// temporary directories still there, and exits (128 + the signal). Call before any thread is
/// started (the signals are blocked in every thread but the one waiting for them; children get
/// an empty mask from `Command`).
pub fn clean_up_on_signal() {
    // SAFETY: sigset_t is plain data initialised by sigemptyset; the calls only read and write
    // the set we own and the calling thread's mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::spawn(move || {
        let mut sig: libc::c_int = 0;
        // SAFETY: `set` and `sig` are live locals; sigwait only reads the one, writes the other.
        unsafe { libc::sigwait(&set, &mut sig) };
        eprintln!("vswitch-bench: signal {sig}: cleaning up");
        let l = std::mem::take(&mut *LIVE.lock().unwrap_or_else(|e| e.into_inner()));
        for pid in l.pids {
            // SAFETY: kill(2) on a child we spawned and have not reaped (a reaped one is
            // unregistered first).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(200));
        for ns in l.netns.iter().rev() {
            let _ = run("ip", &["netns", "del", ns]);
            let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(ns));
        }
        for d in l.dirs {
            let _ = std::fs::remove_dir_all(d);
        }
        std::process::exit(128 + sig);
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
        run("ip", &["netns", "add", &name])?;
        live(|l| l.netns.push(name.clone()));
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
            .map(Proc::new)
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
    /// Wraps a child just spawned (registered so that an interrupted run kills it).
    pub fn new(child: Child) -> Proc {
        live(|l| l.pids.push(child.id()));
        Proc(child)
    }

    pub fn wait_json(mut self) -> Result<Value, String> {
        let out = self.0.stdout.take().ok_or("no stdout")?;
        let status = self.0.wait();
        let id = self.0.id();
        live(|l| l.pids.retain(|p| *p != id));
        let status = status.map_err(|e| e.to_string())?;
        let text = std::io::read_to_string(out).map_err(|e| e.to_string())?;
        serde_json::from_str(text.trim())
            .map_err(|e| format!("helper exited {status}: {e}: {text:?}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let id = self.0.id();
        live(|l| l.pids.retain(|p| *p != id));
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

pub fn temp_dir(tag: &str) -> TempDir {
    let p = std::env::temp_dir().join(format!("{}-{tag}", prefix()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    live(|l| l.dirs.push(p.clone()));
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
