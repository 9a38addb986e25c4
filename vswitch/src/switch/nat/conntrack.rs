//! Connection tracking for masquerade and published ports: one entry per flow through the
//! uplink, found from either side (the container's tuple, or the tuple seen on the uplink).
//! A masqueraded flow starts at a container; a published-port (DNAT) flow starts outside and
//! is keyed the same way, from the container's side; a hairpin flow (a container to a
//! published port through the uplink's address) never leaves the switch and is found from
//! both of its containers' sides.
//! Pure: time comes in as milliseconds. TCP follows its states with Linux's default timeouts
//! (`nf_conntrack_proto_tcp.c`), UDP is "unreplied" until the other side answers, ICMP echo is
//! keyed by its identifier. The table is bounded: when full, new flows are refused (counted)
//! while existing ones keep flowing; expired entries are swept a bounded number per call.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use crate::switch::NetId;
use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use crate::wire::MacAddr;

const SEC: u64 = 1000;

/// A flow as the container sent it: network, protocol, source, destination (for ICMP echo the
/// identifier is the source "port" and the destination port is 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OrigKey {
    pub net: NetId,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

/// A flow as its replies arrive on the uplink: from `remote:rport` to the uplink's address at
/// `nat_port` (the uplink address is the same for every entry, so it is not in the key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyKey {
    pub proto: u8,
    pub remote: Ipv4Addr,
    pub rport: u16,
    pub nat_port: u16,
}

/// Where a packet of a flow is going.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// From the container out.
    Orig,
    /// From the outside back in.
    Reply,
}

/// How a flow came to be tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A container's flow to the outside, masqueraded behind the uplink's address.
    Masquerade,
    /// A flow from the outside to a published port, translated to its container; `nat_port`
    /// is the published port.
    Dnat,
    /// A container's flow to a published port through the uplink's address, to the
    /// publishing container from the gateway of that container's network.
    Hairpin,
}

/// The second side of a hairpin flow: what the publishing container sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HairpinSide {
    /// The publishing container's packets: from it (`src`, `sport`) to its network's gateway
    /// (`dst`) at the port the flow was given (`dport`).
    pub key: OrigKey,
    /// The publishing container's MAC and its network's gateway MAC.
    pub mac: MacAddr,
}

/// The tracked state of a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    CloseWait,
    LastAck,
    TimeWait,
    Close,
    /// UDP or ICMP seen in one direction only.
    Unreplied,
    /// UDP or ICMP answered.
    Replied,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::SynSent => "SYN_SENT",
            State::SynRecv => "SYN_RECV",
            State::Established => "ESTABLISHED",
            State::FinWait => "FIN_WAIT",
            State::CloseWait => "CLOSE_WAIT",
            State::LastAck => "LAST_ACK",
            State::TimeWait => "TIME_WAIT",
            State::Close => "CLOSE",
            State::Unreplied => "UNREPLIED",
            State::Replied => "REPLIED",
        }
    }
}

/// How long a flow lives without a packet, by protocol and state (Linux's defaults).
pub fn timeout_ms(proto: u8, state: State) -> u64 {
    match (proto, state) {
        (PROTO_TCP, State::SynSent) => 120 * SEC,
        (PROTO_TCP, State::SynRecv) => 60 * SEC,
        (PROTO_TCP, State::Established) => 432_000 * SEC,
        (PROTO_TCP, State::FinWait) => 120 * SEC,
        (PROTO_TCP, State::CloseWait) => 60 * SEC,
        (PROTO_TCP, State::LastAck) => 30 * SEC,
        (PROTO_TCP, State::TimeWait) => 120 * SEC,
        (PROTO_TCP, _) => 10 * SEC,
        (PROTO_UDP, State::Replied) => 120 * SEC,
        (PROTO_UDP, _) => 30 * SEC,
        (PROTO_ICMP, _) => 30 * SEC,
        _ => 30 * SEC,
    }
}

/// One tracked flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The container side: what the container sends (masquerade, DNAT), or what the client
    /// container sends (hairpin).
    pub orig: OrigKey,
    pub kind: Kind,
    pub nat_port: u16,
    /// The container's MAC (where replies go).
    pub mac: MacAddr,
    pub state: State,
    /// TCP: a FIN was seen from the container / from the outside.
    fin_orig: bool,
    fin_reply: bool,
    pub expires: u64,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

impl Entry {
    pub fn reply_key(&self) -> ReplyKey {
        ReplyKey {
            proto: self.orig.proto,
            remote: self.orig.dst,
            rport: self.orig.dport,
            nat_port: self.nat_port,
        }
    }

    /// Moves the flow's state on for a packet in `dir` with TCP `flags` (0 for UDP/ICMP).
    fn advance(&mut self, dir: Dir, flags: u8) {
        // The state machine's "original" direction is the side that opened the flow: for a
        // published port that is the outside.
        let dir = match (self.kind, dir) {
            (Kind::Dnat, Dir::Orig) => Dir::Reply,
            (Kind::Dnat, Dir::Reply) => Dir::Orig,
            (_, d) => d,
        };
        if self.orig.proto != PROTO_TCP {
            if dir == Dir::Reply {
                self.state = State::Replied;
            }
            return;
        }
        let syn = flags & TCP_SYN != 0;
        let ack = flags & TCP_ACK != 0;
        if flags & TCP_RST != 0 {
            self.state = State::Close;
            return;
        }
        match dir {
            Dir::Orig if syn && !ack => {
                if matches!(self.state, State::Close | State::TimeWait) {
                    // The port is reused for a new connection.
                    self.fin_orig = false;
                    self.fin_reply = false;
                }
                if !matches!(self.state, State::SynRecv | State::Established) {
                    self.state = State::SynSent;
                }
                return;
            }
            Dir::Reply if syn && ack => {
                if self.state == State::SynSent {
                    self.state = State::SynRecv;
                }
                return;
            }
            _ => {}
        }
        if flags & TCP_FIN != 0 {
            match dir {
                Dir::Orig => self.fin_orig = true,
                Dir::Reply => self.fin_reply = true,
            }
        }
        self.state = match (self.state, self.fin_orig, self.fin_reply) {
            (State::SynSent, ..) if dir == Dir::Orig => State::SynSent,
            (State::SynRecv, false, false) if dir == Dir::Orig && ack => State::Established,
            (State::SynRecv, false, false) => State::SynRecv,
            (State::TimeWait, ..) => State::TimeWait,
            (State::LastAck, true, true) if ack && flags & TCP_FIN == 0 => State::TimeWait,
            (_, true, true) => State::LastAck,
            // The side that closed first waits; the other is in CLOSE_WAIT until it closes.
            (_, true, false) if dir == Dir::Orig => State::FinWait,
            (_, true, false) => State::CloseWait,
            (_, false, true) if dir == Dir::Reply => State::FinWait,
            (_, false, true) => State::CloseWait,
            (s @ (State::SynSent | State::Close), false, false) => s,
            (_, false, false) => State::Established,
        };
    }
}

/// Table counters, shown by `conntrack stats`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CtCounters {
    /// Flows created.
    pub created: u64,
    /// Flows that timed out.
    pub expired: u64,
    /// New flows refused because the table was full.
    pub refused_full: u64,
    /// New flows refused because no NAT port was free for their destination.
    pub ports_exhausted: u64,
    /// New flows refused because their initiator (a container, or an outside client of a
    /// published port) had its share of the table (`per_source_max`).
    #[serde(default)]
    pub refused_source_limit: u64,
    /// Entries removed by `conntrack flush`.
    pub flushed: u64,
    /// Flows created to published ports, from outside and hairpinned (also in `created`).
    pub dnat_created: u64,
    pub hairpin_created: u64,
}

/// Why a new flow could not be tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    TableFull,
    PortsExhausted,
    /// The flow's initiator has `per_source_max` flows already.
    SourceLimit,
}

/// How the NAT port of a new flow is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortPolicy {
    /// The range NAT ports (and ICMP identifiers) come from.
    pub lo: u16,
    pub hi: u16,
    /// The container's own port may be kept even outside the range (the uplink's address is
    /// the switch's alone: dedicated mode).
    pub keep_any: bool,
}

/// The connection tracking table.
#[derive(Debug, Clone)]
pub struct Conntrack {
    slots: Vec<Option<Entry>>,
    free: Vec<u32>,
    orig: HashMap<OrigKey, u32>,
    reply: HashMap<ReplyKey, u32>,
    /// The publishing container's side of hairpin flows, by slot (few: a side table keeps the
    /// entries of the common flows small).
    hairpins: HashMap<u32, HairpinSide>,
    max: usize,
    /// Most flows one initiator may have (0: no bound): one container — or one outside
    /// client — cannot take the whole table from the others.
    per_source_max: usize,
    /// Live flows by initiator (network, address).
    per_source: HashMap<(NetId, Ipv4Addr), u32>,
    cursor: usize,
    pub counters: CtCounters,
}

/// Who started a flow: the container for masquerade and hairpin, the outside client for a
/// published port (whose `orig` is the container's side).
fn initiator(e: &Entry) -> (NetId, Ipv4Addr) {
    match e.kind {
        Kind::Dnat => (e.orig.net, e.orig.dst),
        _ => (e.orig.net, e.orig.src),
    }
}

/// Entries looked at per `sweep` call: a million-entry table is walked in 16 calls.
pub const SWEEP_STEP: usize = 65_536;

impl Conntrack {
    pub fn new(max: usize) -> Conntrack {
        Conntrack::with_source_limit(max, 0)
    }

    /// A table of `max` flows, at most `per_source_max` of them (0: no bound) from one
    /// initiator.
    pub fn with_source_limit(max: usize, per_source_max: usize) -> Conntrack {
        Conntrack {
            slots: Vec::new(),
            free: Vec::new(),
            orig: HashMap::new(),
            reply: HashMap::new(),
            hairpins: HashMap::new(),
            max: max.max(1),
            per_source_max,
            per_source: HashMap::new(),
            cursor: 0,
            counters: CtCounters::default(),
        }
    }

    pub fn per_source_max(&self) -> usize {
        self.per_source_max
    }

    /// Refuses (and counts) a new flow of `who` when the table or its share is full.
    fn room_for(&mut self, who: (NetId, Ipv4Addr)) -> Result<(), Refused> {
        if self.orig.len() >= self.max {
            self.counters.refused_full += 1;
            return Err(Refused::TableFull);
        }
        if self.per_source_max > 0
            && self
                .per_source
                .get(&who)
                .is_some_and(|n| *n as usize >= self.per_source_max)
        {
            self.counters.refused_source_limit += 1;
            return Err(Refused::SourceLimit);
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.orig.len()
    }

    pub fn is_empty(&self) -> bool {
        self.orig.is_empty()
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// The live entry in `slot` (expired ones are removed on the way).
    fn live(&mut self, slot: u32, now: u64) -> Option<u32> {
        let e = self.slots.get(slot as usize)?.as_ref()?;
        if e.expires <= now {
            self.remove(slot);
            self.counters.expired += 1;
            return None;
        }
        Some(slot)
    }

    fn remove(&mut self, slot: u32) {
        if let Some(e) = self.slots.get_mut(slot as usize).and_then(Option::take) {
            self.orig.remove(&e.orig);
            let who = initiator(&e);
            if let Some(n) = self.per_source.get_mut(&who) {
                *n -= 1;
                if *n == 0 {
                    self.per_source.remove(&who);
                }
            }
            if e.kind == Kind::Hairpin {
                if let Some(h) = self.hairpins.remove(&slot) {
                    self.orig.remove(&h.key);
                }
            } else {
                self.reply.remove(&e.reply_key());
            }
            self.free.push(slot);
        }
    }

    /// Finds the flow of a packet from a container, creating it if it is new. Returns the slot.
    pub fn outbound(
        &mut self,
        now: u64,
        key: OrigKey,
        mac: MacAddr,
        policy: PortPolicy,
        create: bool,
    ) -> Result<Option<u32>, Refused> {
        if let Some(&slot) = self.orig.get(&key) {
            if let Some(s) = self.live(slot, now) {
                return Ok(Some(s));
            }
        }
        if !create {
            return Ok(None);
        }
        self.room_for((key.net, key.src))?;
        let Some(nat_port) = self.pick_port(now, &key, policy) else {
            self.counters.ports_exhausted += 1;
            return Err(Refused::PortsExhausted);
        };
        let entry = Self::new_entry(now, key, Kind::Masquerade, nat_port, mac);
        let slot = self.insert(entry);
        self.reply.insert(entry.reply_key(), slot);
        Ok(Some(slot))
    }

    /// Stores a new entry (its original key indexed) and returns its slot.
    fn insert(&mut self, entry: Entry) -> u32 {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(entry);
                s
            }
            None => {
                self.slots.push(Some(entry));
                (self.slots.len() - 1) as u32
            }
        };
        self.orig.insert(entry.orig, slot);
        *self.per_source.entry(initiator(&entry)).or_insert(0) += 1;
        self.counters.created += 1;
        slot
    }

    fn new_entry(now: u64, orig: OrigKey, kind: Kind, nat_port: u16, mac: MacAddr) -> Entry {
        Entry {
            orig,
            kind,
            nat_port,
            mac,
            state: if orig.proto == PROTO_TCP {
                State::SynSent
            } else {
                State::Unreplied
            },
            fin_orig: false,
            fin_reply: false,
            expires: now + timeout_ms(orig.proto, State::Unreplied),
            packets: [0; 2],
            bytes: [0; 2],
        }
    }

    /// Is `key` the original or hairpin key of a live flow?
    fn orig_taken(&mut self, now: u64, key: &OrigKey) -> bool {
        match self.orig.get(key) {
            Some(&slot) => self.live(slot, now).is_some(),
            None => false,
        }
    }

    /// The flow of a packet from a container, if it has one (no flow is created).
    pub fn lookup(&mut self, now: u64, key: &OrigKey) -> Option<u32> {
        let slot = *self.orig.get(key)?;
        self.live(slot, now)
    }

    /// A new flow from the outside to a published port: `orig` is its container side (the
    /// container's address and port to the client's), `nat_port` the published port and `mac`
    /// the container's. `None` when either side's tuple is already a live flow's.
    pub fn dnat(
        &mut self,
        now: u64,
        orig: OrigKey,
        nat_port: u16,
        mac: MacAddr,
    ) -> Result<Option<u32>, Refused> {
        self.room_for((orig.net, orig.dst))?;
        let entry = Self::new_entry(now, orig, Kind::Dnat, nat_port, mac);
        if self.orig_taken(now, &orig) || self.reply_taken(now, &entry.reply_key()) {
            return Ok(None);
        }
        let slot = self.insert(entry);
        self.reply.insert(entry.reply_key(), slot);
        self.counters.dnat_created += 1;
        Ok(Some(slot))
    }

    /// A new hairpin flow: `orig` is the client container's packet (to the uplink's address
    /// and the published port), `mac` its MAC; `side` is the publishing container's side with
    /// `side.key.dport` to be chosen here from `lo..=hi` (hashed start, first free).
    pub fn hairpin(
        &mut self,
        now: u64,
        orig: OrigKey,
        mac: MacAddr,
        mut side: HairpinSide,
        (lo, hi): (u16, u16),
    ) -> Result<u32, Refused> {
        self.room_for((orig.net, orig.src))?;
        let span = u32::from(hi.saturating_sub(lo)) + 1;
        let h = u32::from(orig.src).wrapping_mul(0x9e37_79b1)
            ^ u32::from(orig.sport).wrapping_mul(0x85eb_ca6b);
        let start = h % span;
        let mut found = false;
        for i in 0..span {
            side.key.dport = lo + ((start + i) % span) as u16;
            if !self.orig_taken(now, &side.key) {
                found = true;
                break;
            }
        }
        if !found {
            self.counters.ports_exhausted += 1;
            return Err(Refused::PortsExhausted);
        }
        let entry = Self::new_entry(now, orig, Kind::Hairpin, side.key.dport, mac);
        let slot = self.insert(entry);
        self.orig.insert(side.key, slot);
        self.hairpins.insert(slot, side);
        self.counters.hairpin_created += 1;
        Ok(slot)
    }

    /// The publishing container's side of a hairpin flow.
    pub fn hairpin_side(&self, slot: u32) -> Option<&HairpinSide> {
        self.hairpins.get(&slot)
    }

    /// Finds the flow a packet arriving on the uplink answers.
    pub fn inbound(&mut self, now: u64, key: &ReplyKey) -> Option<u32> {
        let slot = *self.reply.get(key)?;
        self.live(slot, now)
    }

    /// Is this reply tuple taken by a live flow?
    fn reply_taken(&mut self, now: u64, key: &ReplyKey) -> bool {
        self.inbound(now, key).is_some()
    }

    /// A NAT port for `key` whose reply tuple is free: the container's own port when the policy
    /// allows it (as Linux keeps it), otherwise the first free one from a point of the range
    /// chosen by hashing the flow. `None` when every port of the range is taken for this
    /// destination.
    fn pick_port(&mut self, now: u64, key: &OrigKey, p: PortPolicy) -> Option<u16> {
        let mut reply = ReplyKey {
            proto: key.proto,
            remote: key.dst,
            rport: key.dport,
            nat_port: key.sport,
        };
        let in_range = (p.lo..=p.hi).contains(&key.sport);
        if (in_range || p.keep_any) && key.sport != 0 && !self.reply_taken(now, &reply) {
            return Some(key.sport);
        }
        let span = u32::from(p.hi - p.lo) + 1;
        let h = u32::from(key.src).wrapping_mul(0x9e37_79b1)
            ^ u32::from(key.sport).wrapping_mul(0x85eb_ca6b)
            ^ u32::from(key.dst).rotate_left(7)
            ^ u32::from(key.dport);
        let start = h % span;
        for i in 0..span {
            let port = p.lo + ((start + i) % span) as u16;
            reply.nat_port = port;
            if !self.reply_taken(now, &reply) {
                return Some(port);
            }
        }
        None
    }

    pub fn get(&self, slot: u32) -> Option<&Entry> {
        self.slots.get(slot as usize).and_then(Option::as_ref)
    }

    /// Accounts a packet of `len` bytes in `dir` and moves the flow's state and expiry on.
    pub fn update(&mut self, slot: u32, now: u64, dir: Dir, flags: u8, len: usize) {
        if let Some(e) = self.slots.get_mut(slot as usize).and_then(Option::as_mut) {
            e.advance(dir, flags);
            let d = dir as usize;
            e.packets[d] += 1;
            e.bytes[d] += len as u64;
            e.expires = now + timeout_ms(e.orig.proto, e.state);
        }
    }

    /// Removes up to `SWEEP_STEP` slots' worth of expired entries, continuing where the last
    /// call stopped.
    pub fn sweep(&mut self, now: u64) {
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        for _ in 0..SWEEP_STEP.min(n) {
            self.cursor = (self.cursor + 1) % n;
            if self.slots[self.cursor].is_some_and(|e| e.expires <= now) {
                self.remove(self.cursor as u32);
                self.counters.expired += 1;
            }
        }
    }

    /// Removes every entry (or those of one network). Returns how many.
    pub fn flush(&mut self, net: Option<NetId>) -> usize {
        let doomed: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, e)| {
                e.filter(|e| net.is_none_or(|n| e.orig.net == n))
                    .map(|_| i as u32)
            })
            .collect();
        for s in &doomed {
            self.remove(*s);
        }
        if self.orig.is_empty() {
            // Give the memory back.
            self.slots = Vec::new();
            self.free = Vec::new();
            self.orig = HashMap::new();
            self.reply = HashMap::new();
            self.hairpins = HashMap::new();
            self.per_source = HashMap::new();
            self.cursor = 0;
        }
        self.counters.flushed += doomed.len() as u64;
        doomed.len()
    }

    /// The live entries (for `conntrack show`), at most `limit`.
    pub fn entries(&self, now: u64, net: Option<NetId>, limit: usize) -> Vec<Entry> {
        self.slots
            .iter()
            .flatten()
            .filter(|e| e.expires > now && net.is_none_or(|n| e.orig.net == n))
            .take(limit)
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: MacAddr = MacAddr([2, 0x42, 10, 1, 0, 2]);
    const POLICY: PortPolicy = PortPolicy {
        lo: 61000,
        hi: 61003,
        keep_any: false,
    };

    fn key(proto: u8, sport: u16) -> OrigKey {
        OrigKey {
            net: NetId(0),
            proto,
            src: Ipv4Addr::new(10, 1, 0, 2),
            sport,
            dst: Ipv4Addr::new(192, 0, 2, 9),
            dport: 80,
        }
    }

    fn tcp_flow(ct: &mut Conntrack) -> u32 {
        ct.outbound(0, key(PROTO_TCP, 40000), MAC, POLICY, true)
            .unwrap()
            .unwrap()
    }

    #[test]
    fn tcp_walks_through_its_states() {
        let mut ct = Conntrack::new(16);
        let s = tcp_flow(&mut ct);
        let state = |ct: &Conntrack| ct.get(s).unwrap().state;
        ct.update(s, 0, Dir::Orig, TCP_SYN, 60);
        assert_eq!(state(&ct), State::SynSent);
        ct.update(s, 1, Dir::Reply, TCP_SYN | TCP_ACK, 60);
        assert_eq!(state(&ct), State::SynRecv);
        ct.update(s, 2, Dir::Orig, TCP_ACK, 52);
        assert_eq!(state(&ct), State::Established);
        assert_eq!(ct.get(s).unwrap().expires, 2 + 432_000 * SEC);
        ct.update(s, 3, Dir::Orig, TCP_FIN | TCP_ACK, 52);
        assert_eq!(state(&ct), State::FinWait);
        ct.update(s, 4, Dir::Reply, TCP_FIN | TCP_ACK, 52);
        assert_eq!(state(&ct), State::LastAck);
        ct.update(s, 5, Dir::Orig, TCP_ACK, 52);
        assert_eq!(state(&ct), State::TimeWait);
        assert_eq!(ct.get(s).unwrap().expires, 5 + 120 * SEC);
        // The port is reused by a new connection.
        ct.update(s, 6, Dir::Orig, TCP_SYN, 60);
        assert_eq!(state(&ct), State::SynSent);
    }

    #[test]
    fn the_side_that_did_not_close_is_in_close_wait_and_rst_closes() {
        let mut ct = Conntrack::new(16);
        let s = tcp_flow(&mut ct);
        ct.update(s, 0, Dir::Orig, TCP_SYN, 60);
        ct.update(s, 0, Dir::Reply, TCP_SYN | TCP_ACK, 60);
        ct.update(s, 0, Dir::Orig, TCP_ACK, 52);
        ct.update(s, 0, Dir::Reply, TCP_FIN | TCP_ACK, 52);
        assert_eq!(ct.get(s).unwrap().state, State::FinWait);
        ct.update(s, 0, Dir::Orig, TCP_ACK, 52);
        assert_eq!(ct.get(s).unwrap().state, State::CloseWait);
        ct.update(s, 7, Dir::Reply, TCP_RST, 40);
        assert_eq!(ct.get(s).unwrap().state, State::Close);
        assert_eq!(ct.get(s).unwrap().expires, 7 + 10 * SEC);
    }

    #[test]
    fn udp_is_unreplied_until_answered_and_expires() {
        let mut ct = Conntrack::new(16);
        let s = ct
            .outbound(0, key(PROTO_UDP, 5353), MAC, POLICY, true)
            .unwrap()
            .unwrap();
        ct.update(s, 0, Dir::Orig, 0, 60);
        assert_eq!(ct.get(s).unwrap().state, State::Unreplied);
        assert_eq!(ct.get(s).unwrap().expires, 30 * SEC);
        let rk = ct.get(s).unwrap().reply_key();
        assert_eq!(ct.inbound(1, &rk), Some(s));
        ct.update(s, 1, Dir::Reply, 0, 60);
        assert_eq!(ct.get(s).unwrap().state, State::Replied);
        // Gone after its timeout, from both sides, and swept.
        let later = 1 + 120 * SEC;
        assert_eq!(ct.inbound(later, &rk), None);
        assert_eq!(ct.len(), 0);
        assert_eq!(ct.counters.expired, 1);
    }

    #[test]
    fn sweep_removes_expired_entries_in_bounded_steps() {
        let mut ct = Conntrack::new(1000);
        let wide = PortPolicy {
            lo: 1024,
            hi: 65535,
            keep_any: false,
        };
        for p in 0..500 {
            let s = ct
                .outbound(0, key(PROTO_UDP, 1000 + p), MAC, wide, true)
                .unwrap()
                .unwrap();
            ct.update(s, 0, Dir::Orig, 0, 60);
        }
        assert_eq!(ct.len(), 500);
        ct.sweep(10 * SEC);
        assert_eq!(ct.len(), 500, "nothing is due yet");
        ct.sweep(31 * SEC);
        assert_eq!(ct.len(), 0);
        assert_eq!(ct.counters.expired, 500);
    }

    #[test]
    fn ports_are_allocated_until_the_range_is_exhausted_then_refused() {
        let mut ct = Conntrack::new(100);
        let mut ports = Vec::new();
        for sport in 40000..40004 {
            let s = ct
                .outbound(0, key(PROTO_TCP, sport), MAC, POLICY, true)
                .unwrap()
                .unwrap();
            ports.push(ct.get(s).unwrap().nat_port);
        }
        ports.sort();
        assert_eq!(ports, vec![61000, 61001, 61002, 61003], "every port once");
        assert_eq!(
            ct.outbound(0, key(PROTO_TCP, 40004), MAC, POLICY, true),
            Err(Refused::PortsExhausted)
        );
        assert_eq!(ct.counters.ports_exhausted, 1);
        // Another destination has the whole range again.
        let mut other = key(PROTO_TCP, 40004);
        other.dport = 443;
        assert!(ct.outbound(0, other, MAC, POLICY, true).unwrap().is_some());
        // An expired flow frees its port.
        assert!(ct
            .outbound(200 * SEC, key(PROTO_TCP, 40004), MAC, POLICY, true)
            .unwrap()
            .is_some());
    }

    #[test]
    fn the_containers_port_is_kept_when_free() {
        let mut ct = Conntrack::new(10);
        let keep = PortPolicy {
            keep_any: true,
            ..POLICY
        };
        let s = ct
            .outbound(0, key(PROTO_TCP, 40000), MAC, keep, true)
            .unwrap()
            .unwrap();
        assert_eq!(ct.get(s).unwrap().nat_port, 40000);
        // A second container with the same port to the same destination gets another.
        let mut k = key(PROTO_TCP, 40000);
        k.src = Ipv4Addr::new(10, 1, 0, 3);
        let s2 = ct.outbound(0, k, MAC, keep, true).unwrap().unwrap();
        assert!((61000..=61003).contains(&ct.get(s2).unwrap().nat_port));
        // In range, kept even without keep_any.
        let s3 = ct
            .outbound(0, key(PROTO_UDP, 61002), MAC, POLICY, true)
            .unwrap()
            .unwrap();
        assert_eq!(ct.get(s3).unwrap().nat_port, 61002);
    }

    #[test]
    fn a_full_table_refuses_new_flows_but_keeps_old_ones() {
        let mut ct = Conntrack::new(2);
        let a = ct
            .outbound(0, key(PROTO_UDP, 1), MAC, POLICY, true)
            .unwrap()
            .unwrap();
        ct.outbound(0, key(PROTO_UDP, 2), MAC, POLICY, true)
            .unwrap()
            .unwrap();
        assert_eq!(
            ct.outbound(0, key(PROTO_UDP, 3), MAC, POLICY, true),
            Err(Refused::TableFull)
        );
        assert_eq!(ct.counters.refused_full, 1);
        assert_eq!(
            ct.outbound(0, key(PROTO_UDP, 1), MAC, POLICY, true),
            Ok(Some(a))
        );
        assert_eq!(ct.flush(None), 2);
        assert!(ct.is_empty());
    }

    #[test]
    fn one_source_gets_its_share_and_no_more() {
        let mut ct = Conntrack::with_source_limit(100, 3);
        let mut slots = Vec::new();
        for p in 1..=3 {
            slots.push(
                ct.outbound(0, key(PROTO_UDP, p), MAC, POLICY, true)
                    .unwrap()
                    .unwrap(),
            );
        }
        assert_eq!(
            ct.outbound(0, key(PROTO_UDP, 4), MAC, POLICY, true),
            Err(Refused::SourceLimit)
        );
        assert_eq!(ct.counters.refused_source_limit, 1);
        assert_eq!(ct.counters.refused_full, 0);
        // Another container of the network still gets flows; the same one in another network
        // is another source.
        let other = OrigKey {
            src: Ipv4Addr::new(10, 1, 0, 3),
            dport: 81,
            ..key(PROTO_UDP, 4)
        };
        assert!(ct.outbound(0, other, MAC, POLICY, true).unwrap().is_some());
        let elsewhere = OrigKey {
            net: NetId(1),
            dport: 82,
            ..key(PROTO_UDP, 4)
        };
        assert!(ct
            .outbound(0, elsewhere, MAC, POLICY, true)
            .unwrap()
            .is_some());
        // A flow that expires gives its share back.
        ct.remove(slots[0]);
        assert!(ct
            .outbound(0, key(PROTO_UDP, 4), MAC, POLICY, true)
            .unwrap()
            .is_some());
        // A published port's flows count against the outside client.
        let client = Ipv4Addr::new(198, 51, 100, 7);
        for p in 0..3u16 {
            let orig = OrigKey {
                src: Ipv4Addr::new(10, 1, 0, 9),
                sport: 80,
                dst: client,
                dport: 5000 + p,
                ..key(PROTO_TCP, 80)
            };
            assert!(ct.dnat(0, orig, 8080, MAC).unwrap().is_some());
        }
        let fourth = OrigKey {
            src: Ipv4Addr::new(10, 1, 0, 9),
            sport: 80,
            dst: client,
            dport: 5003,
            ..key(PROTO_TCP, 80)
        };
        assert_eq!(ct.dnat(0, fourth, 8080, MAC), Err(Refused::SourceLimit));
        // No bound with 0.
        let mut free = Conntrack::with_source_limit(100, 0);
        for p in 1..=50 {
            let k = OrigKey {
                dport: 1000 + p,
                ..key(PROTO_UDP, p)
            };
            assert!(free.outbound(0, k, MAC, POLICY, true).unwrap().is_some());
        }
    }
}
