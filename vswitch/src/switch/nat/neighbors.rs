//! The uplink's neighbour cache (next hops' MACs), aged and bounded. Entries are confirmed by
//! ARP; one used after `STALE_MS` is refreshed with a new request while it keeps being used
//! (Linux's STALE → PROBE), one not confirmed for `DEAD_MS` is forgotten. Requests for one
//! address go at most once a second.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::wire::MacAddr;

const STALE_MS: u64 = 30_000;
const DEAD_MS: u64 = 300_000;
const ASK_EVERY_MS: u64 = 1000;
const MAX_NEIGHBORS: usize = 1024;

#[derive(Debug, Clone, Copy)]
struct Entry {
    mac: Option<MacAddr>,
    confirmed: u64,
    asked: Option<u64>,
}

#[derive(Debug, Default, Clone)]
pub struct Neighbors {
    map: HashMap<Ipv4Addr, Entry>,
}

impl Neighbors {
    pub fn new() -> Neighbors {
        Neighbors::default()
    }

    /// The MAC of `ip` if known, and whether a request should go out now.
    pub fn lookup(&mut self, ip: Ipv4Addr, now: u64) -> (Option<MacAddr>, bool) {
        if !self.map.contains_key(&ip) && self.map.len() >= MAX_NEIGHBORS {
            self.expire(now);
            if self.map.len() >= MAX_NEIGHBORS {
                return (None, false);
            }
        }
        let e = self.map.entry(ip).or_insert(Entry {
            mac: None,
            confirmed: 0,
            asked: None,
        });
        let stale = e.mac.is_none() || now.saturating_sub(e.confirmed) >= STALE_MS;
        let may_ask = e
            .asked
            .is_none_or(|t| now.saturating_sub(t) >= ASK_EVERY_MS);
        let ask = stale && may_ask;
        if ask {
            e.asked = Some(now);
        }
        (e.mac, ask)
    }

    /// Was `ip` looked up (asked for, or in use)?
    pub fn wanted(&self, ip: Ipv4Addr) -> bool {
        self.map.contains_key(&ip)
    }

    pub fn confirm(&mut self, ip: Ipv4Addr, mac: MacAddr, now: u64) {
        if !self.map.contains_key(&ip) && self.map.len() >= MAX_NEIGHBORS {
            return;
        }
        self.map.insert(
            ip,
            Entry {
                mac: Some(mac),
                confirmed: now,
                asked: None,
            },
        );
    }

    pub fn forget(&mut self, ip: Ipv4Addr) {
        self.map.remove(&ip);
    }

    pub fn expire(&mut self, now: u64) {
        self.map.retain(|_, e| match e.mac {
            Some(_) => now.saturating_sub(e.confirmed) < DEAD_MS,
            None => e.asked.is_some_and(|t| now.saturating_sub(t) < DEAD_MS),
        });
    }

    /// (address, MAC, milliseconds since confirmed) of the resolved entries.
    pub fn entries(&self, now: u64) -> Vec<(Ipv4Addr, MacAddr, u64)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .filter_map(|(ip, e)| e.mac.map(|m| (*ip, m, now.saturating_sub(e.confirmed))))
            .collect();
        v.sort();
        v
    }
}
