//! `/etc/netns/NS/resolv.conf`: the resolver configuration `ip netns exec NS` bind-mounts over
//! `/etc/resolv.conf`. vswitchd writes one for named namespaces on networks that resolve names,
//! and only ever edits files it wrote (marked by its header); the host's own resolv.conf is never
//! touched.

use std::fs;
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;

const HEADER: &str = "# Written by vswitchd: the embedded DNS of this namespace's networks.";

fn path(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns).join("resolv.conf")
}

struct Conf {
    nameservers: Vec<Ipv4Addr>,
    search: Vec<String>,
}

fn read(ns: &str) -> io::Result<Option<Conf>> {
    let text = match fs::read_to_string(path(ns)) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Some(Conf {
                nameservers: vec![],
                search: vec![],
            }))
        }
        Err(e) => return Err(e),
    };
    if !text.starts_with(HEADER) {
        return Ok(None); // someone else's file: leave it alone
    }
    let mut conf = Conf {
        nameservers: vec![],
        search: vec![],
    };
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => conf
                .nameservers
                .extend(words.next().and_then(|w| w.parse::<Ipv4Addr>().ok())),
            Some("search") => conf.search.extend(words.map(str::to_string)),
            _ => {}
        }
    }
    Ok(Some(conf))
}

fn write(ns: &str, conf: &Conf) -> io::Result<()> {
    let p = path(ns);
    if conf.nameservers.is_empty() {
        match fs::remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = p.parent() {
            let _ = fs::remove_dir(dir); // only if empty
        }
        return Ok(());
    }
    let dir = p.parent().expect("has a parent");
    fs::create_dir_all(dir)?;
    let mut text = format!("{HEADER}\n");
    for n in &conf.nameservers {
        text.push_str(&format!("nameserver {n}\n"));
    }
    if !conf.search.is_empty() {
        text.push_str(&format!("search {}\n", conf.search.join(" ")));
    }
    text.push_str("options ndots:0\n");
    let tmp = dir.join("resolv.conf.vswitchd-tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    fs::rename(&tmp, &p)
}

/// Adds `gateway` as a nameserver and `domain` to the search list of namespace `ns`.
pub fn add(ns: &str, gateway: Ipv4Addr, domain: &str) -> io::Result<()> {
    let Some(mut conf) = read(ns)? else {
        return Ok(());
    };
    if !conf.nameservers.contains(&gateway) {
        conf.nameservers.push(gateway);
    }
    if !domain.is_empty() && !conf.search.iter().any(|d| d == domain) {
        conf.search.push(domain.to_string());
    }
    write(ns, &conf)
}

/// Undoes `add`; removes the file (and the namespace's /etc/netns dir if empty) when nothing is left.
pub fn remove(ns: &str, gateway: Ipv4Addr, domain: &str) -> io::Result<()> {
    let Some(mut conf) = read(ns)? else {
        return Ok(());
    };
    conf.nameservers.retain(|n| *n != gateway);
    conf.search.retain(|d| d != domain);
    write(ns, &conf)
}
