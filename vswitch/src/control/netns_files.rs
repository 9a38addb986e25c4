//! A container's `/etc/netns/NAME/{resolv.conf,hosts,hostname}`: the files `ip netns exec NAME`
//! (and so `vswitchctl container exec`) bind-mounts over `/etc`. The switch owns this directory
//! for the namespaces it created, writes each file whole (atomically, only when it changes), and
//! removes them with the container.

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// What a container's files say.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Files {
    pub nameservers: Vec<Ipv4Addr>,
    pub search: Vec<String>,
    /// Address and the names it answers to, in order (the container's own, then its links').
    pub hosts: Vec<(Ipv4Addr, Vec<String>)>,
    pub hostname: String,
}

const NAMES: [&str; 3] = ["resolv.conf", "hosts", "hostname"];

fn dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

impl Files {
    fn render(&self, container: &str) -> [String; 3] {
        let header = format!("# Written by vswitchd for container {container}.\n");
        let mut resolv = header.clone();
        for n in &self.nameservers {
            resolv.push_str(&format!("nameserver {n}\n"));
        }
        if !self.search.is_empty() {
            resolv.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        resolv.push_str("options ndots:0\n");
        let mut hosts = header;
        hosts.push_str("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
        for (ip, names) in &self.hosts {
            if !names.is_empty() {
                hosts.push_str(&format!("{ip}\t{}\n", names.join(" ")));
            }
        }
        [resolv, hosts, format!("{}\n", self.hostname)]
    }
}

/// Writes the namespace's files (those whose content changed).
pub fn write(ns: &str, container: &str, files: &Files) -> io::Result<()> {
    let d = dir(ns);
    fs::create_dir_all(&d)?;
    for (name, text) in NAMES.iter().zip(files.render(container)) {
        let p = d.join(name);
        if fs::read_to_string(&p).is_ok_and(|old| old == text) {
            continue;
        }
        // In place when the file exists: a process under `ip netns exec` has it bind-mounted
        // (a rename would leave that process on the old inode). New files appear whole.
        if p.exists() {
            fs::write(&p, text.as_bytes())?;
            continue;
        }
        let tmp = d.join(format!(".{name}.vswitchd-tmp"));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, &p)?;
    }
    Ok(())
}

/// Removes the files, and the directory when nothing else is in it.
pub fn remove(ns: &str) -> io::Result<()> {
    let d = dir(ns);
    for name in NAMES {
        match fs::remove_file(d.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    let _ = fs::remove_dir(&d); // only if empty
    Ok(())
}

/// Are any of the files there (for tests of the clean-up paths)?
pub fn any_left(ns: &str) -> bool {
    NAMES.iter().any(|n| dir(ns).join(n).exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_docker_like_files() {
        let f = Files {
            nameservers: vec!["10.1.0.1".parse().unwrap()],
            search: vec!["web.vswitch".into()],
            hosts: vec![
                ("10.1.0.2".parse().unwrap(), vec!["c1".into(), "api".into()]),
                (
                    "172.17.0.3".parse().unwrap(),
                    vec!["db".into(), "c2".into()],
                ),
            ],
            hostname: "c1".into(),
        };
        let [resolv, hosts, hostname] = f.render("c1");
        assert!(resolv.contains("nameserver 10.1.0.1\nsearch web.vswitch\n"));
        assert!(hosts.contains("127.0.0.1\tlocalhost\n"));
        assert!(hosts.contains("10.1.0.2\tc1 api\n172.17.0.3\tdb c2\n"));
        assert_eq!(hostname, "c1\n");
    }
}
