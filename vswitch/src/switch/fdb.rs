//! The MAC learning table of one network: bounded, aged, with counted moves and evictions.

use std::collections::{HashMap, VecDeque};

use super::PortId;
use crate::wire::MacAddr;

/// How many queue entries one eviction may pass over before it takes the one in hand (the
/// CLOCK algorithm's second chances are bounded: constant work per learn under a MAC flood).
const EVICTION_PROBES: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    port: PortId,
    last_seen: u64,
    /// Seen again since it was last considered for eviction (CLOCK's reference bit).
    referenced: bool,
    /// A static entry (`fdb add`): never aged, evicted or moved by learning, and not in the
    /// eviction queue.
    pinned: bool,
}

/// What `learn` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Learned {
    /// The entry existed on the same port; its age was refreshed.
    Refreshed,
    /// A new entry.
    New,
    /// The MAC moved from the given port.
    Moved(PortId),
    /// A new entry that pushed out another one.
    NewEvicting,
    /// Not learned: the MAC has a static entry on another port, or the table is full of
    /// static entries.
    Refused,
    /// Not learned: the port has as many MACs as one port may (`with_port_limit`); the frame
    /// is to be dropped (a MAC flood from one port never pushes out the others' entries).
    PortFull,
}

/// Counters of one table.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FdbCounters {
    pub learned: u64,
    pub moved: u64,
    pub evicted: u64,
    pub expired: u64,
}

/// A learned entry as shown to users.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FdbEntry {
    pub mac: MacAddr,
    pub port: PortId,
    pub age_ms: u64,
    /// A static entry (`fdb add`).
    pub pinned: bool,
}

/// A per-network MAC table.
#[derive(Debug, Clone)]
pub struct Fdb {
    map: HashMap<MacAddr, Entry>,
    /// Eviction order (oldest first); may hold MACs already gone from `map` (skipped lazily).
    clock: VecDeque<MacAddr>,
    limit: usize,
    aging_ms: u64,
    /// Learned (not static) entries per port, and how many one port may have (0: no limit).
    per_port: HashMap<PortId, u32>,
    port_limit: u32,
    pub counters: FdbCounters,
}

fn uncount(per_port: &mut HashMap<PortId, u32>, port: PortId) {
    if let Some(n) = per_port.get_mut(&port) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            per_port.remove(&port);
        }
    }
}

impl Fdb {
    pub fn new(limit: usize, aging_ms: u64) -> Fdb {
        Fdb {
            // Reserve a modest start; the map grows to `limit` and then stays put (no allocation
            // in the steady state).
            map: HashMap::with_capacity(limit.min(1024)),
            clock: VecDeque::with_capacity(limit.min(1024)),
            limit: limit.max(1),
            aging_ms,
            per_port: HashMap::new(),
            port_limit: 0,
            counters: FdbCounters::default(),
        }
    }

    /// At most `n` learned MACs per port, for the ports `learn` is told are limited (0: none).
    pub fn with_port_limit(mut self, n: u32) -> Fdb {
        self.port_limit = n;
        self
    }

    /// The learned (not static) entries on `port`, aged ones not yet swept included.
    pub fn port_count(&self, port: PortId) -> u32 {
        self.per_port.get(&port).copied().unwrap_or(0)
    }

    fn port_full(&self, port: PortId) -> bool {
        self.port_limit != 0 && self.port_count(port) >= self.port_limit
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    pub fn aging_ms(&self) -> u64 {
        self.aging_ms
    }

    fn expired(&self, e: &Entry, now: u64) -> bool {
        !e.pinned && now.saturating_sub(e.last_seen) >= self.aging_ms
    }

    /// Records that `mac` was seen on `port` at `now`. A `limited` port (a container's, not a
    /// tunnel's) gets no more than the port limit's MACs: `PortFull` past it.
    pub fn learn(&mut self, mac: MacAddr, port: PortId, now: u64, limited: bool) -> Learned {
        let full = limited && self.port_full(port);
        if let Some(e) = self.map.get_mut(&mac) {
            if e.pinned {
                // A static entry stays where it was put: a frame claiming the MAC elsewhere
                // does not move it.
                return if e.port == port {
                    Learned::Refreshed
                } else {
                    Learned::Refused
                };
            }
            if e.port == port {
                e.last_seen = now;
                e.referenced = true;
                return Learned::Refreshed;
            }
            if full {
                return Learned::PortFull;
            }
            e.last_seen = now;
            e.referenced = true;
            let old = e.port;
            e.port = port;
            self.counters.moved += 1;
            uncount(&mut self.per_port, old);
            *self.per_port.entry(port).or_insert(0) += 1;
            return Learned::Moved(old);
        }
        if full {
            return Learned::PortFull;
        }
        let mut result = Learned::New;
        if self.map.len() >= self.limit {
            self.evict_one(now);
            if self.map.len() >= self.limit {
                // Only static entries left to take: they are not pushed out.
                return Learned::Refused;
            }
            result = Learned::NewEvicting;
        }
        self.map.insert(
            mac,
            Entry {
                port,
                last_seen: now,
                referenced: false,
                pinned: false,
            },
        );
        if self.clock.len() >= 2 * self.limit {
            // Churn left too many stale MACs in the queue: keep only live ones.
            let map = &self.map;
            self.clock.retain(|m| map.contains_key(m));
        }
        self.clock.push_back(mac);
        self.counters.learned += 1;
        *self.per_port.entry(port).or_insert(0) += 1;
        result
    }

    /// Evicts one entry, oldest first, giving recently seen ones a second chance (CLOCK).
    fn evict_one(&mut self, now: u64) {
        let mut probes = 0;
        while let Some(mac) = self.clock.pop_front() {
            let Some(e) = self.map.get_mut(&mac) else {
                continue; // already gone (aged out or flushed)
            };
            if e.pinned {
                continue; // made static since it was learned: not for eviction
            }
            let expired = now.saturating_sub(e.last_seen) >= self.aging_ms;
            if e.referenced && !expired && probes < EVICTION_PROBES {
                e.referenced = false;
                self.clock.push_back(mac);
                probes += 1;
                continue;
            }
            if let Some(gone) = self.map.remove(&mac) {
                uncount(&mut self.per_port, gone.port);
            }
            if expired {
                self.counters.expired += 1;
            } else {
                self.counters.evicted += 1;
            }
            return;
        }
    }

    /// A static entry: `mac` is on `port` until `unpin` (or the port goes), whatever is learned.
    /// Static entries are bounded by the control plane, not by the table's limit.
    pub fn pin(&mut self, mac: MacAddr, port: PortId) {
        let old = self.map.insert(
            mac,
            Entry {
                port,
                last_seen: 0,
                referenced: false,
                pinned: true,
            },
        );
        if let Some(old) = old.filter(|o| !o.pinned) {
            uncount(&mut self.per_port, old.port);
        }
    }

    /// Removes a static entry; returns whether there was one.
    pub fn unpin(&mut self, mac: &MacAddr) -> bool {
        if self.map.get(mac).is_some_and(|e| e.pinned) {
            self.map.remove(mac);
            true
        } else {
            false
        }
    }

    /// The port `mac` was last seen on, unless the entry has aged out.
    #[inline]
    pub fn lookup(&self, mac: &MacAddr, now: u64) -> Option<PortId> {
        match self.map.get(mac) {
            Some(e) if !self.expired(e, now) => Some(e.port),
            _ => None,
        }
    }

    /// Removes aged-out entries; returns how many.
    pub fn expire(&mut self, now: u64) -> usize {
        let before = self.map.len();
        let aging = self.aging_ms;
        let per_port = &mut self.per_port;
        self.map.retain(|_, e| {
            let keep = e.pinned || now.saturating_sub(e.last_seen) < aging;
            if !keep {
                uncount(per_port, e.port);
            }
            keep
        });
        let n = before - self.map.len();
        if n > 0 {
            let map = &self.map;
            self.clock.retain(|m| map.contains_key(m));
        }
        self.counters.expired += n as u64;
        n
    }

    /// Forgets every entry pointing at `port` (the port left the network).
    pub fn flush_port(&mut self, port: PortId) {
        self.map.retain(|_, e| e.port != port);
        self.per_port.remove(&port);
        let map = &self.map;
        self.clock.retain(|m| map.contains_key(m));
    }

    /// The live entries, oldest age last.
    pub fn entries(&self, now: u64) -> Vec<FdbEntry> {
        let mut v: Vec<FdbEntry> = self
            .map
            .iter()
            .filter(|(_, e)| !self.expired(e, now))
            .map(|(mac, e)| FdbEntry {
                mac: *mac,
                port: e.port,
                age_ms: if e.pinned {
                    0
                } else {
                    now.saturating_sub(e.last_seen)
                },
                pinned: e.pinned,
            })
            .collect();
        v.sort_by_key(|e| (e.port, e.mac));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u32) -> MacAddr {
        let b = n.to_be_bytes();
        MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
    }

    #[test]
    fn learn_lookup_refresh() {
        let mut f = Fdb::new(16, 300_000);
        assert_eq!(f.learn(mac(1), PortId(1), 0, true), Learned::New);
        assert_eq!(f.lookup(&mac(1), 10), Some(PortId(1)));
        assert_eq!(f.learn(mac(1), PortId(1), 10, true), Learned::Refreshed);
        assert_eq!(f.lookup(&mac(2), 10), None);
        assert_eq!(f.counters.learned, 1);
    }

    #[test]
    fn aging() {
        let mut f = Fdb::new(16, 1000);
        f.learn(mac(1), PortId(1), 0, true);
        f.learn(mac(2), PortId(2), 500, true);
        assert_eq!(f.lookup(&mac(1), 999), Some(PortId(1)));
        assert_eq!(
            f.lookup(&mac(1), 1000),
            None,
            "aged out at exactly the aging time"
        );
        assert_eq!(f.entries(1000).len(), 1);
        assert_eq!(f.expire(1000), 1);
        assert_eq!(f.len(), 1);
        assert_eq!(f.counters.expired, 1);
        // Seeing the MAC again refreshes it.
        f.learn(mac(2), PortId(2), 1400, true);
        assert_eq!(f.lookup(&mac(2), 2300), Some(PortId(2)));
    }

    #[test]
    fn moves() {
        let mut f = Fdb::new(16, 1000);
        f.learn(mac(1), PortId(1), 0, true);
        assert_eq!(
            f.learn(mac(1), PortId(2), 1, true),
            Learned::Moved(PortId(1))
        );
        assert_eq!(f.lookup(&mac(1), 2), Some(PortId(2)));
        assert_eq!(f.counters.moved, 1);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn limit_evicts_and_counts() {
        let mut f = Fdb::new(100, 1_000_000);
        for i in 0..100 {
            assert_eq!(f.learn(mac(i), PortId(1), u64::from(i), true), Learned::New);
        }
        for i in 100..1000 {
            assert_eq!(
                f.learn(mac(i), PortId(1), u64::from(i), true),
                Learned::NewEvicting
            );
            assert_eq!(f.len(), 100, "never grows past its limit");
        }
        assert_eq!(f.counters.evicted, 900);
        // The newest entry is always present.
        assert_eq!(f.lookup(&mac(999), 1000), Some(PortId(1)));
    }

    #[test]
    fn eviction_prefers_expired_and_counts_them_as_expired() {
        let mut f = Fdb::new(4, 100);
        for i in 0..4 {
            f.learn(mac(i), PortId(1), 0, true);
        }
        f.learn(mac(10), PortId(1), 500, true);
        assert_eq!(f.counters.expired, 1);
        assert_eq!(f.counters.evicted, 0);
    }

    #[test]
    fn eviction_spares_recently_seen_entries() {
        let mut f = Fdb::new(4, 1_000_000);
        for i in 0..4 {
            f.learn(mac(i), PortId(1), u64::from(i), true);
        }
        f.learn(mac(0), PortId(1), 10, true); // mac 0 is alive
        f.learn(mac(10), PortId(1), 11, true); // evicts the oldest unreferenced: mac 1
        assert_eq!(f.lookup(&mac(0), 12), Some(PortId(1)));
        assert_eq!(f.lookup(&mac(1), 12), None);
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn churn_keeps_the_queue_bounded() {
        let mut f = Fdb::new(8, 10);
        for round in 0..1000u64 {
            for i in 0..4 {
                f.learn(mac(i), PortId(1), round * 20, true);
            }
            f.expire(round * 20 + 15);
        }
        assert!(f.clock.len() <= 16, "{}", f.clock.len());
    }

    #[test]
    fn static_entries_stay_put() {
        let mut f = Fdb::new(2, 100);
        f.pin(mac(1), PortId(9));
        assert_eq!(
            f.learn(mac(1), PortId(2), 5, true),
            Learned::Refused,
            "not moved"
        );
        assert_eq!(f.learn(mac(1), PortId(9), 5, true), Learned::Refreshed);
        assert_eq!(f.lookup(&mac(1), 1_000_000), Some(PortId(9)), "not aged");
        f.expire(1_000_000);
        assert_eq!(f.lookup(&mac(1), 1_000_000), Some(PortId(9)));
        // The table full of a static and a learned entry: learning evicts the learned one only.
        f.learn(mac(2), PortId(2), 0, true);
        assert_eq!(f.learn(mac(3), PortId(2), 1, true), Learned::NewEvicting);
        assert_eq!(f.lookup(&mac(1), 2), Some(PortId(9)));
        assert_eq!(f.len(), 2);
        // Full of static entries: nothing is learned, nothing grows.
        f.pin(mac(3), PortId(9));
        assert_eq!(f.learn(mac(4), PortId(2), 3, true), Learned::Refused);
        assert_eq!(f.len(), 2);
        let e = f.entries(7);
        assert!(e.iter().all(|e| e.pinned && e.age_ms == 0), "{e:?}");
        assert!(f.unpin(&mac(1)));
        assert!(!f.unpin(&mac(1)));
        assert_eq!(f.lookup(&mac(1), 8), None);
    }

    #[test]
    fn flush_port() {
        let mut f = Fdb::new(16, 1000);
        f.learn(mac(1), PortId(1), 0, true);
        f.learn(mac(2), PortId(2), 0, true);
        f.flush_port(PortId(1));
        assert_eq!(f.lookup(&mac(1), 1), None);
        assert_eq!(f.lookup(&mac(2), 1), Some(PortId(2)));
    }

    #[test]
    fn a_port_at_its_limit_learns_no_more_and_the_others_keep_theirs() {
        let mut f = Fdb::new(100, 1000).with_port_limit(4);
        for i in 0..90 {
            f.learn(mac(1000 + i), PortId(2), 0, true);
        }
        assert_eq!(f.port_count(PortId(2)), 4);
        f.learn(mac(1), PortId(1), 0, true);
        for i in 0..1000 {
            let r = f.learn(mac(10_000 + i), PortId(3), 1, true);
            assert_eq!(
                r,
                if i < 4 {
                    Learned::New
                } else {
                    Learned::PortFull
                }
            );
        }
        assert_eq!(f.lookup(&mac(1), 2), Some(PortId(1)), "never pushed out");
        assert_eq!(f.len(), 9);
        // A known MAC moving onto a full port is refused too; off it, it moves.
        assert_eq!(f.learn(mac(1), PortId(3), 2, true), Learned::PortFull);
        assert_eq!(
            f.learn(mac(10_000), PortId(1), 2, true),
            Learned::Moved(PortId(3))
        );
        assert_eq!((f.port_count(PortId(1)), f.port_count(PortId(3))), (2, 3));
        assert_eq!(f.learn(mac(5), PortId(3), 2, true), Learned::New);
        // Tunnels are not limited; aging, static entries and flushing give the room back.
        for i in 0..50 {
            assert_eq!(f.learn(mac(20_000 + i), PortId(9), 3, false), Learned::New);
        }
        f.pin(mac(5), PortId(9));
        assert_eq!(f.port_count(PortId(3)), 3);
        f.expire(1001);
        assert_eq!(f.port_count(PortId(2)), 0);
        assert_eq!(f.port_count(PortId(3)), 0);
        assert_eq!(
            f.port_count(PortId(1)),
            1,
            "the one seen at 2 is still alive"
        );
        f.flush_port(PortId(9));
        assert_eq!(f.port_count(PortId(9)), 0);
        assert_eq!(f.learn(mac(30_000), PortId(2), 1002, true), Learned::New);
    }
}
