//! Where the DNS forwarder's upstream resolvers come from: the configured ones (`dns_upstreams`
//! or `--dns-upstream`) when there are any, else the `nameserver` lines of the host's
//! `/etc/resolv.conf` (or `--resolv-conf`), read at start and re-read every second so that a
//! change — written in place or replaced by a rename, as resolvconf and systemd-resolved do — is
//! picked up. A missing file, or one without a usable `nameserver`, means no upstreams: other
//! names get SERVFAIL at once.
//!
//! The file is read in vswitchd's own mount and network namespace, which is where the queries go
//! from: a loopback resolver such as systemd-resolved's 127.0.0.53 works. Under
//! `ip netns exec NS vswitchd`, `/etc/resolv.conf` is a bind mount of `/etc/netns/NS/resolv.conf`
//! made at start: a rewrite of that file in place is seen through the mount, a rename over it is
//! not (the mount keeps the old inode).

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use crate::switch::gateway::DNS_PORT;

/// The host's resolver configuration unless `--resolv-conf` says otherwise.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";
/// As glibc's resolver (MAXNS): the first three `nameserver` lines count.
pub const MAX_NAMESERVERS: usize = 3;
/// How often the resolv.conf is read again.
const POLL: Duration = Duration::from_secs(1);
/// A change is applied once two reads this far apart agree (an in-place writer truncates first).
const SETTLE: Duration = Duration::from_millis(100);
/// Larger files are read this far only (a resolv.conf is a few lines).
const MAX_FILE: u64 = 64 * 1024;

/// Counters of the forwarder.
#[derive(Debug, Default)]
pub struct ForwardCounters {
    pub forwarded: AtomicU64,
    pub answered: AtomicU64,
    pub servfail: AtomicU64,
    pub dropped: AtomicU64,
}

/// Where the upstreams come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `dns_upstreams` of the config file or `--dns-upstream`: fixed for the daemon's life.
    Config,
    /// The `nameserver` lines of this file, followed as it changes.
    ResolvConf(PathBuf),
}

/// The forwarder's current upstream resolvers, shared by its workers, the watcher and `show`.
#[derive(Debug)]
pub struct Upstreams {
    source: Source,
    set: Mutex<Arc<[SocketAddr]>>,
    pub counters: ForwardCounters,
}

impl Upstreams {
    /// Fixed upstreams from the configuration.
    pub fn configured(set: Vec<SocketAddr>) -> Arc<Upstreams> {
        Arc::new(Upstreams {
            source: Source::Config,
            set: Mutex::new(set.into()),
            counters: ForwardCounters::default(),
        })
    }

    /// Upstreams from `path`, read now (logged) and re-read every second by a thread of its own.
    pub fn from_resolv_conf(path: PathBuf) -> std::io::Result<Arc<Upstreams>> {
        let first = read_resolv_conf(&path);
        log_set(&path, &first);
        let up = Arc::new(Upstreams {
            source: Source::ResolvConf(path.clone()),
            set: Mutex::new(first.into()),
            counters: ForwardCounters::default(),
        });
        let watched = up.clone();
        std::thread::Builder::new()
            .name("dns-upstreams".into())
            .spawn(move || loop {
                std::thread::sleep(POLL);
                watched.refresh(&path);
            })?;
        Ok(up)
    }

    /// Reads the file again and applies what it says once two reads agree.
    fn refresh(&self, path: &Path) {
        let mut seen = read_resolv_conf(path);
        if *seen == *self.current() {
            return;
        }
        loop {
            std::thread::sleep(SETTLE);
            let again = read_resolv_conf(path);
            if again == seen {
                break;
            }
            seen = again;
        }
        if *seen == *self.current() {
            return;
        }
        log_set(path, &seen);
        *self.set.lock().unwrap_or_else(|p| p.into_inner()) = seen.into();
    }

    /// The resolvers to ask now, in order.
    pub fn current(&self) -> Arc<[SocketAddr]> {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn source(&self) -> &Source {
        &self.source
    }
}

fn log_set(path: &Path, set: &[SocketAddr]) {
    if set.is_empty() {
        info!(resolv_conf = %path.display(), "no DNS upstreams (no usable nameserver in the file, or no file): other names get SERVFAIL");
    } else {
        let list: Vec<String> = set.iter().map(ToString::to_string).collect();
        info!(resolv_conf = %path.display(), upstreams = %list.join(" "), "DNS upstreams for other names");
    }
}

/// The resolvers `path` names; none when it is missing or unreadable (the latter is logged).
fn read_resolv_conf(path: &Path) -> Vec<SocketAddr> {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(path)
        .and_then(|f| f.take(MAX_FILE).read_to_end(&mut bytes).map(|_| ()));
    match read {
        // Bytes that are not UTF-8 (a comment in Latin-1) spoil only their own line.
        Ok(()) => parse_resolv_conf(&String::from_utf8_lossy(&bytes), |name| {
            crate::sandbox::netlink::Netlink::open()
                .and_then(|mut nl| nl.link_index(name))
                .ok()
                .flatten()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => {
            warn!(resolv_conf = %path.display(), error = %e, "cannot read the resolver configuration; no DNS upstreams from it");
            Vec::new()
        }
    }
}

/// The `nameserver` lines of a resolv.conf as glibc reads them: the keyword at the start of a
/// line, then an IPv4 or IPv6 address (IPv6 with an optional `%scope`, an interface name that
/// `ifindex` looks up or a number), port 53; lines starting with `#` or `;` are comments, other
/// keywords (`search`, `options`, ...) and anything unreadable are ignored; the first three
/// distinct addresses count.
pub fn parse_resolv_conf(text: &str, ifindex: impl Fn(&str) -> Option<u32>) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if !line.starts_with("nameserver") || words.next() != Some("nameserver") {
            continue;
        }
        let Some(word) = words.next() else {
            continue;
        };
        let addr = match word.split_once('%') {
            None => match word.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, DNS_PORT),
                Err(_) => continue,
            },
            Some((ip, scope)) => {
                let Ok(ip) = ip.parse::<Ipv6Addr>() else {
                    continue;
                };
                let scope = match scope.parse::<u32>() {
                    Ok(n) => Some(n),
                    Err(_) if !scope.is_empty() => ifindex(scope),
                    Err(_) => None,
                };
                let Some(scope) = scope else {
                    continue;
                };
                SocketAddr::V6(SocketAddrV6::new(ip, DNS_PORT, 0, scope))
            }
        };
        if !out.contains(&addr) {
            out.push(addr);
        }
        if out.len() == MAX_NAMESERVERS {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Vec<String> {
        parse_resolv_conf(text, |name| (name == "eth0").then_some(7))
            .iter()
            .map(|a| match a {
                SocketAddr::V6(v6) if v6.scope_id() != 0 => {
                    format!("{}%{}", v6.ip(), v6.scope_id())
                }
                a => a.to_string(),
            })
            .collect()
    }

    #[test]
    fn nameservers_v4_and_v6_on_port_53() {
        let text = "nameserver 192.0.2.53\nnameserver 2001:db8::53\n";
        assert_eq!(parse(text), vec!["192.0.2.53:53", "[2001:db8::53]:53"]);
    }

    #[test]
    fn comments_options_and_other_keywords_are_ignored() {
        let text = "\
# Generated by resolvconf
; nameserver 192.0.2.1
#nameserver 192.0.2.2
search example.com corp.example
domain example.com
options edns0 trust-ad ndots:2 timeout:1
sortlist 130.155.160.0/255.255.240.0
nameserver 127.0.0.53
";
        assert_eq!(parse(text), vec!["127.0.0.53:53"]);
    }

    #[test]
    fn garbage_lines_are_skipped_not_fatal() {
        let text = "\
nameserver
nameserver not-an-address
nameserver 300.1.2.3
nameserver 192.0.2.1:5353
nameservers 192.0.2.2
xnameserver 192.0.2.3
 nameserver 192.0.2.4
\u{0}\u{ff}binary\u{7f}
nameserver 192.0.2.5 # trailing words are ignored
nameserver\t192.0.2.6
";
        assert_eq!(parse(text), vec!["192.0.2.5:53", "192.0.2.6:53"]);
    }

    #[test]
    fn ipv6_scope_ids_by_number_and_interface_name() {
        let text = "\
nameserver fe80::1%3
nameserver fe80::2%eth0
nameserver fe80::3%nosuchif
nameserver fe80::4%
nameserver 192.0.2.1%eth0
";
        assert_eq!(parse(text), vec!["fe80::1%3", "fe80::2%7"]);
    }

    #[test]
    fn the_first_three_distinct_addresses_count() {
        let text = "\
nameserver 192.0.2.1
nameserver 192.0.2.1
nameserver 192.0.2.2
nameserver ::1
nameserver 192.0.2.4
";
        assert_eq!(
            parse(text),
            vec!["192.0.2.1:53", "192.0.2.2:53", "[::1]:53"]
        );
    }

    #[test]
    fn empty_and_crlf_files() {
        assert!(parse("").is_empty());
        assert!(parse("\n\n# nothing here\n").is_empty());
        assert_eq!(
            parse("nameserver 192.0.2.9\r\noptions rotate\r\n"),
            vec!["192.0.2.9:53"]
        );
    }

    #[test]
    fn a_file_is_followed_through_rewrites_renames_and_removal() {
        let dir = std::env::temp_dir().join(format!("vsw-upstreams-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("resolv.conf");
        assert!(read_resolv_conf(&path).is_empty(), "missing: none");
        std::fs::write(&path, "nameserver 192.0.2.1\n").unwrap();
        let up = Upstreams {
            source: Source::ResolvConf(path.clone()),
            set: Mutex::new(read_resolv_conf(&path).into()),
            counters: ForwardCounters::default(),
        };
        assert_eq!(&*up.current(), &["192.0.2.1:53".parse().unwrap()]);
        // In place.
        std::fs::write(&path, "nameserver 192.0.2.2\n").unwrap();
        up.refresh(&path);
        assert_eq!(&*up.current(), &["192.0.2.2:53".parse().unwrap()]);
        // Replaced by a rename.
        let tmp = dir.join("resolv.conf.new");
        std::fs::write(&tmp, "nameserver 2001:db8::3\n").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        up.refresh(&path);
        assert_eq!(&*up.current(), &["[2001:db8::3]:53".parse().unwrap()]);
        // Removed.
        std::fs::remove_file(&path).unwrap();
        up.refresh(&path);
        assert!(up.current().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
