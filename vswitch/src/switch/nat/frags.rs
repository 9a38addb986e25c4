//! IPv4 fragments of masqueraded flows: only the first fragment carries the ports, so the flow
//! it matched is remembered by (direction, source, destination, IP id, protocol) for the later
//! fragments, as Linux's conntrack does after defragmenting. Bounded and aged like Linux's
//! reassembly queue (30 s); a later fragment whose first was not seen is dropped and counted,
//! never sent with the wrong address.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use super::conntrack::Dir;

const FRAG_MS: u64 = 30_000;
const MAX_FRAGS: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key {
    reply: bool,
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    proto: u8,
}

impl Key {
    fn new(dir: Dir, src: Ipv4Addr, dst: Ipv4Addr, id: u16, proto: u8) -> Key {
        Key {
            reply: dir == Dir::Reply,
            src,
            dst,
            id,
            proto,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Frags {
    map: HashMap<Key, (u32, u64)>,
}

impl Frags {
    pub fn new() -> Frags {
        Frags::default()
    }

    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &mut self,
        now: u64,
        dir: Dir,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
        proto: u8,
        slot: u32,
    ) {
        if self.map.len() >= MAX_FRAGS {
            self.expire(now);
            if self.map.len() >= MAX_FRAGS {
                return;
            }
        }
        self.map
            .insert(Key::new(dir, src, dst, id, proto), (slot, now + FRAG_MS));
    }

    pub fn get(
        &self,
        now: u64,
        dir: Dir,
        src: Ipv4Addr,
        dst: Ipv4Addr,
        id: u16,
        proto: u8,
    ) -> Option<u32> {
        self.map
            .get(&Key::new(dir, src, dst, id, proto))
            .filter(|(_, expires)| *expires > now)
            .map(|(slot, _)| *slot)
    }

    pub fn expire(&mut self, now: u64) {
        self.map.retain(|_, (_, expires)| *expires > now);
    }
}
