//! Scaffolding: network namespaces, child processes and temporary directories that clean up
//! after themselves on drop, running commands, and waiting for a condition.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

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
    }
}

pub fn temp_dir(tag: &str) -> TempDir {
    let p = std::env::temp_dir().join(format!("{}-{tag}", prefix()));
    let _ = std::fs::remove_dir_all(&p);
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
