//! The host's own ports, as a shared uplink must respect them: which local ports its sockets
//! hold (`/proc/net/{tcp,udp}{,6}`), its ephemeral range, and `ip_local_reserved_ports`, where
//! the switch's NAT range is reserved while the switch holds it (all per network namespace:
//! the calling process's).

use std::collections::BTreeSet;
use std::fs;
use std::io;

const RESERVED: &str = "/proc/sys/net/ipv4/ip_local_reserved_ports";
const EPHEMERAL: &str = "/proc/sys/net/ipv4/ip_local_port_range";

/// Local ports in `lo..=hi` held by the host's sockets: TCP listening or connected, UDP bound.
/// (protocol, port) pairs, sorted.
pub fn in_use(lo: u16, hi: u16) -> Vec<(&'static str, u16)> {
    let mut found = BTreeSet::new();
    for (proto, file) in [
        ("tcp", "/proc/net/tcp"),
        ("tcp", "/proc/net/tcp6"),
        ("udp", "/proc/net/udp"),
        ("udp", "/proc/net/udp6"),
    ] {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for port in local_ports(&text) {
            if (lo..=hi).contains(&port) {
                found.insert((proto, port));
            }
        }
    }
    found.into_iter().collect()
}

/// Ports in `lo..=hi` a published port would take from the host's own services: TCP ones
/// with a listening socket (state 0A), UDP ones bound. `tcp` picks the protocol.
pub fn listening(tcp: bool, lo: u16, hi: u16) -> Vec<u16> {
    let files: [&str; 2] = if tcp {
        ["/proc/net/tcp", "/proc/net/tcp6"]
    } else {
        ["/proc/net/udp", "/proc/net/udp6"]
    };
    let mut found = BTreeSet::new();
    for file in files {
        let Ok(text) = fs::read_to_string(file) else {
            continue;
        };
        for port in listening_ports(&text, tcp) {
            if (lo..=hi).contains(&port) {
                found.insert(port);
            }
        }
    }
    found.into_iter().collect()
}

fn listening_ports(table: &str, tcp: bool) -> impl Iterator<Item = u16> + '_ {
    table.lines().skip(1).filter_map(move |l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1)?;
        let state = f.nth(1)?;
        if tcp && state != "0A" {
            return None;
        }
        let (_, port) = local.rsplit_once(':')?;
        u16::from_str_radix(port, 16).ok()
    })
}

/// The local ports of a `/proc/net/tcp`-style table (`sl local_address rem_address st ...`,
/// addresses as HEX:PORT). TCP sockets in TIME_WAIT (06) hold nothing a new flow would clash
/// with for long and are skipped.
fn local_ports(table: &str) -> impl Iterator<Item = u16> + '_ {
    table.lines().skip(1).filter_map(|l| {
        let mut f = l.split_whitespace();
        let local = f.nth(1)?;
        let state = f.nth(1)?;
        if state == "06" {
            return None;
        }
        let (_, port) = local.rsplit_once(':')?;
        u16::from_str_radix(port, 16).ok()
    })
}

/// The host's ephemeral port range (`ip_local_port_range`).
pub fn ephemeral() -> io::Result<(u16, u16)> {
    let text = fs::read_to_string(EPHEMERAL)?;
    let mut it = text.split_whitespace().map(|p| p.parse::<u16>());
    match (it.next(), it.next()) {
        (Some(Ok(lo)), Some(Ok(hi))) => Ok((lo, hi)),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{EPHEMERAL}: {text:?}"),
        )),
    }
}

/// Ranges of a reserved-ports list ("1,5-7"), sorted and merged.
fn parse_ranges(text: &str) -> Vec<(u16, u16)> {
    let mut v: Vec<(u16, u16)> = text
        .trim()
        .split(',')
        .filter_map(|r| {
            let r = r.trim();
            match r.split_once('-') {
                Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
                None => r.parse().ok().map(|p| (p, p)),
            }
        })
        .filter(|(a, b)| a <= b)
        .collect();
    v.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(v.len());
    for (a, b) in v {
        match out.last_mut() {
            Some(last) if u32::from(a) <= u32::from(last.1) + 1 => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
}

fn format_ranges(v: &[(u16, u16)]) -> String {
    v.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn without(v: &[(u16, u16)], lo: u16, hi: u16) -> Vec<(u16, u16)> {
    let mut out = Vec::new();
    for &(a, b) in v {
        if b < lo || a > hi {
            out.push((a, b));
            continue;
        }
        if a < lo {
            out.push((a, lo - 1));
        }
        if b > hi {
            out.push((hi + 1, b));
        }
    }
    out
}

/// The reserved-ports list now.
pub fn reserved() -> io::Result<Vec<(u16, u16)>> {
    Ok(parse_ranges(&fs::read_to_string(RESERVED)?))
}

/// `lo..=hi` reserved from the host's ephemeral ports until dropped (or `release`d). What was
/// reserved before stays reserved; a range reserved by a daemon that was killed is taken over.
#[derive(Debug)]
pub struct Reservation {
    lo: u16,
    hi: u16,
    /// Parts of the range that were reserved before us (kept on release).
    before: Vec<(u16, u16)>,
    held: bool,
}

impl Reservation {
    pub fn take(lo: u16, hi: u16) -> io::Result<Reservation> {
        let now = reserved()?;
        let before: Vec<(u16, u16)> = now
            .iter()
            .filter(|&&(a, b)| !(b < lo || a > hi))
            .map(|&(a, b)| (a.max(lo), b.min(hi)))
            .collect();
        let mut v = now;
        v.push((lo, hi));
        write_reserved(&v)?;
        Ok(Reservation {
            lo,
            hi,
            before,
            held: true,
        })
    }

    /// Gives the range back (what was reserved before stays).
    pub fn release(&mut self) -> io::Result<()> {
        if !std::mem::take(&mut self.held) {
            return Ok(());
        }
        let mut v = without(&reserved()?, self.lo, self.hi);
        // A range taken over from a killed daemon was the switch's too: only what the
        // operator reserved below or around it is kept.
        if self.before != [(self.lo, self.hi)] {
            v.extend_from_slice(&self.before);
        }
        write_reserved(&v)
    }
}

/// Writes the list (a newline-terminated one: an empty write would leave the old list).
fn write_reserved(v: &[(u16, u16)]) -> io::Result<()> {
    let text = format_ranges(&parse_ranges(&format_ranges(v)));
    fs::write(RESERVED, format!("{text}\n"))
}

impl Drop for Reservation {
    fn drop(&mut self) {
        let _ = self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_lists_parse_merge_and_subtract() {
        assert_eq!(parse_ranges(""), vec![]);
        assert_eq!(
            parse_ranges("8080, 61000-65535,61000-61010,7-9,10\n"),
            vec![(7, 10), (8080, 8080), (61000, 65535)]
        );
        assert_eq!(parse_ranges("x,9-3,5"), vec![(5, 5)]);
        let v = parse_ranges("100-200,300");
        assert_eq!(format_ranges(&without(&v, 150, 160)), "100-149,161-200,300");
        assert_eq!(format_ranges(&without(&v, 0, 65535)), "");
        assert_eq!(format_ranges(&without(&v, 300, 300)), "100-200");
    }

    #[test]
    fn proc_net_tables_give_local_ports() {
        let t = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   0: 0100007F:0035 00000000:0000 0A 00000000:00000000 00:00000000 00000000   101        0 1 1 0\n   1: 0200000A:EE48 0A00000A:0050 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0\n   2: 0200000A:EE49 0A00000A:0050 06 00000000:00000000 00:00000000 00000000     0        0 0 3 0\n";
        assert_eq!(local_ports(t).collect::<Vec<_>>(), vec![53, 61000]);
        assert_eq!(listening_ports(t, true).collect::<Vec<_>>(), vec![53]);
        assert_eq!(listening_ports(t, false).count(), 3);
    }
}
