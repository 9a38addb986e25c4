//! The pure pipeline: bytes and time in, forwarding decisions out. No syscalls, no clock reads,
//! no allocation per packet (the action buffers are reused and only grow to the widest flood).
//!
//! Stages (classify → L2 → later gateway, L3/NAT, overlay) read the frame through `wire` views.

pub mod fdb;
pub mod gateway;

use crate::wire::ethernet::FrameError;
use crate::wire::Frame;
use fdb::{Fdb, Learned};
use gateway::{Endpoint, Event, Gateway, GatewayConfig, Verdict};

/// A port's index in the dataplane's tables (stable while the port exists).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct PortId(pub u32);

/// A network's index in the dataplane's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NetId(pub u32);

impl PortId {
    #[inline]
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}

impl NetId {
    #[inline]
    pub fn idx(self) -> usize {
        self.0 as usize
    }
}

macro_rules! drop_reasons {
    ($($variant:ident => $name:literal: $doc:literal,)*) => {
        /// Why a frame was dropped. Every drop is counted on a port under one of these.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[repr(usize)]
        pub enum DropReason {
            $(#[doc = $doc] $variant,)*
        }

        impl DropReason {
            pub const ALL: &'static [DropReason] = &[$(DropReason::$variant,)*];
            pub const COUNT: usize = Self::ALL.len();

            /// The stable name shown by `vswitchctl port stats`.
            pub fn name(self) -> &'static str {
                match self {
                    $(DropReason::$variant => $name,)*
                }
            }
        }
    };
}

drop_reasons! {
    Runt => "runt": "Shorter than an Ethernet header.",
    BadLength => "bad_length": "An 802.3 length field that is invalid or longer than the frame.",
    InvalidSource => "invalid_source": "A multicast, broadcast or all-zero source MAC.",
    Hairpin => "hairpin": "The destination was learned on the port the frame came in on.",
    NoDestination => "no_destination": "Flooded on a network with no other port.",
    UnknownPort => "unknown_port": "Arrived on a port the pipeline does not know (a race with del-port).",
    Truncated => "truncated": "Larger than the receive buffer.",
    TxError => "tx_error": "The egress port refused the frame (interface down or gone).",
    RogueDhcp => "rogue_dhcp": "A DHCP server message (UDP 67 to 68) sent by a container.",
    NoRoute => "no_route": "Addressed to the gateway but not something it serves (no routing yet).",
    BadArp => "bad_arp": "A malformed ARP packet addressed to the gateway.",
    BadIp => "bad_ip": "A malformed IPv4 packet addressed to the gateway.",
    BadDhcp => "bad_dhcp": "A malformed or invalid DHCP message.",
        BadDns => "bad_dns": "A malformed DNS query to the gateway.",
            Overloaded => "overloaded": "A DHCP lease or DNS query the control plane had no room for (event queue full).",
    NeedsOffload => "needs_offload": "A TSO/GSO or checksum-pending frame that software offload could not finish (malformed, or UFO).",
}

/// Per-port counters, owned by the dataplane thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PortCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub drops: [u64; DropReason::COUNT],
}

impl PortCounters {
    #[inline]
    pub fn count_drop(&mut self, reason: DropReason) {
        self.drops[reason as usize] += 1;
    }

    pub fn total_drops(&self) -> u64 {
        self.drops.iter().sum()
    }
}

/// What the pipeline decided for one frame. Reused across frames: `clear` keeps the capacity.
#[derive(Debug, Default)]
pub struct Actions {
    /// Ports the frame goes out of, unmodified.
    pub out: Vec<PortId>,
    /// Set when the frame went nowhere, with the reason it was counted under.
    pub drop: Option<DropReason>,
    /// The frame was flooded (broadcast, multicast or unknown unicast).
    pub flooded: bool,
    /// A frame the gateway wrote in answer, to go back out of the ingress port (empty if none).
    pub reply: Vec<u8>,
    /// Changes the control plane must hear about (DHCP leases).
    pub events: Vec<Event>,
}

impl Actions {
    pub fn with_capacity(ports: usize) -> Actions {
        Actions {
            out: Vec::with_capacity(ports),
            drop: None,
            flooded: false,
            reply: Vec::with_capacity(2048),
            events: Vec::new(),
        }
    }

    #[inline]
    pub fn clear(&mut self) {
        self.out.clear();
        self.drop = None;
        self.flooded = false;
        self.reply.clear();
    }
}

#[derive(Debug)]
struct PortEntry {
    network: NetId,
    counters: PortCounters,
}

/// One broadcast domain: its ports and its MAC table.
#[derive(Debug)]
pub struct Network {
    pub members: Vec<PortId>,
    pub fdb: Fdb,
    pub gateway: Option<Gateway>,
}

/// The switch's forwarding state and logic.
#[derive(Debug, Default)]
pub struct Pipeline {
    ports: Vec<Option<PortEntry>>,
    networks: Vec<Option<Network>>,
}

/// Settings of a network the pipeline needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkParams {
    pub fdb_limit: usize,
    pub aging_ms: u64,
    /// The switch's router on this network, if it has one.
    pub gateway: Option<GatewayConfig>,
}

fn slot<T>(v: &mut Vec<Option<T>>, idx: usize) -> &mut Option<T> {
    if v.len() <= idx {
        v.resize_with(idx + 1, || None);
    }
    &mut v[idx]
}

impl Pipeline {
    pub fn new() -> Pipeline {
        Pipeline::default()
    }

    pub fn add_network(&mut self, id: NetId, params: NetworkParams) {
        *slot(&mut self.networks, id.idx()) = Some(Network {
            members: Vec::new(),
            fdb: Fdb::new(params.fdb_limit, params.aging_ms),
            gateway: params.gateway.map(Gateway::new),
        });
    }

    /// Removes a network and every port still on it.
    pub fn remove_network(&mut self, id: NetId) {
        if let Some(net) = self.networks.get_mut(id.idx()).and_then(Option::take) {
            for p in net.members {
                self.ports[p.idx()] = None;
            }
        }
    }

    pub fn network(&self, id: NetId) -> Option<&Network> {
        self.networks.get(id.idx()).and_then(Option::as_ref)
    }

    pub fn network_mut(&mut self, id: NetId) -> Option<&mut Network> {
        self.networks.get_mut(id.idx()).and_then(Option::as_mut)
    }

    pub fn networks(&self) -> impl Iterator<Item = (NetId, &Network)> {
        self.networks
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (NetId(i as u32), n)))
    }

    /// Attaches a port to a network; the gateway learns its address and names. Returns false
    /// when the network does not exist.
    pub fn add_port(&mut self, id: PortId, network: NetId, endpoint: Option<Endpoint>) -> bool {
        let Some(net) = self.network_mut(network) else {
            return false;
        };
        net.members.push(id);
        if let (Some(gw), Some(ep)) = (&mut net.gateway, endpoint) {
            gw.add_endpoint(id, ep);
        }
        *slot(&mut self.ports, id.idx()) = Some(PortEntry {
            network,
            counters: PortCounters::default(),
        });
        true
    }

    /// Detaches a port, forgetting the MACs learned on it. Returns its final counters.
    pub fn remove_port(&mut self, id: PortId) -> Option<PortCounters> {
        let entry = self.ports.get_mut(id.idx()).and_then(Option::take)?;
        if let Some(net) = self
            .networks
            .get_mut(entry.network.idx())
            .and_then(Option::as_mut)
        {
            net.members.retain(|p| *p != id);
            net.fdb.flush_port(id);
            if let Some(gw) = &mut net.gateway {
                gw.remove_endpoint(id);
            }
        }
        Some(entry.counters)
    }

    pub fn port_counters(&self, id: PortId) -> Option<&PortCounters> {
        self.ports
            .get(id.idx())
            .and_then(Option::as_ref)
            .map(|p| &p.counters)
    }

    pub fn port_counters_mut(&mut self, id: PortId) -> Option<&mut PortCounters> {
        self.ports
            .get_mut(id.idx())
            .and_then(Option::as_mut)
            .map(|p| &mut p.counters)
    }

    /// Ages out MAC entries on every network.
    pub fn expire(&mut self, now: u64) {
        for net in self.networks.iter_mut().flatten() {
            net.fdb.expire(now);
            if let Some(gw) = &mut net.gateway {
                gw.expire(now);
            }
        }
    }

    /// Decides where one frame received on `in_port` at `now` (milliseconds, any monotonic origin)
    /// goes. Counts rx and drops on the ingress port; tx is counted by the shell when it sends.
    pub fn process(&mut self, now: u64, in_port: PortId, frame: &[u8], actions: &mut Actions) {
        actions.clear();
        let Some(port) = self.ports.get_mut(in_port.idx()).and_then(Option::as_mut) else {
            actions.drop = Some(DropReason::UnknownPort);
            return;
        };
        let counters = &mut port.counters;
        counters.rx_packets += 1;
        counters.rx_bytes += frame.len() as u64;

        let eth = match Frame::new_checked(frame) {
            Ok(f) => f,
            Err(e) => {
                let reason = match e {
                    FrameError::Runt => DropReason::Runt,
                    FrameError::BadLength => DropReason::BadLength,
                };
                counters.count_drop(reason);
                actions.drop = Some(reason);
                return;
            }
        };
        let src = eth.src();
        if !src.is_valid_source() {
            counters.count_drop(DropReason::InvalidSource);
            actions.drop = Some(DropReason::InvalidSource);
            return;
        }
        let net_id = port.network;
        let Some(net) = self.networks.get_mut(net_id.idx()).and_then(Option::as_mut) else {
            counters.count_drop(DropReason::UnknownPort);
            actions.drop = Some(DropReason::UnknownPort);
            return;
        };
        if net.gateway.as_ref().is_some_and(|g| g.config().mac == src) {
            // Only the switch speaks with the gateway's MAC.
            counters.count_drop(DropReason::InvalidSource);
            actions.drop = Some(DropReason::InvalidSource);
            return;
        }

        // L2: learn, then let the gateway take what is addressed to it.
        let _: Learned = net.fdb.learn(src, in_port, now);
        if let Some(gw) = &mut net.gateway {
            match gw.handle(
                now,
                net_id,
                in_port,
                frame,
                &mut actions.reply,
                &mut actions.events,
            ) {
                Verdict::Pass => {}
                Verdict::Consumed => return,
                Verdict::Drop(reason) => {
                    actions.reply.clear();
                    counters.count_drop(reason);
                    actions.drop = Some(reason);
                    return;
                }
            }
        }

        // Forward to the known port or flood within the network.
        let dst = eth.dst();
        if !dst.is_multicast() {
            if let Some(out) = net.fdb.lookup(&dst, now) {
                if out == in_port {
                    counters.count_drop(DropReason::Hairpin);
                    actions.drop = Some(DropReason::Hairpin);
                } else {
                    actions.out.push(out);
                }
                return;
            }
        }
        actions.flooded = true;
        actions
            .out
            .extend(net.members.iter().copied().filter(|p| *p != in_port));
        if actions.out.is_empty() {
            counters.count_drop(DropReason::NoDestination);
            actions.drop = Some(DropReason::NoDestination);
        }
    }
}

#[cfg(test)]
mod tests;
