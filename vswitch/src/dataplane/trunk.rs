//! A macvlan or ipvlan parent's socket (the trunk): frames demultiplexed by VLAN to each
//! network's segment port.

use super::{read_each, Dataplane, PortSlot, FRAME_BUF, RX_BATCH};
use crate::switch::{DropReason, PortCounters, PortId};

/// A macvlan parent's socket: the networks on it by VLAN (0: untagged), and what arrived for
/// none of them (counted as its drops).
#[derive(Default)]
pub(super) struct Trunk {
    pub(super) vlans: Vec<(u16, PortId)>,
    pub(super) counters: PortCounters,
}

impl Dataplane {
    /// Reads one batch from a parent's socket: each frame goes to the network of its VLAN,
    /// untagged, through that network's segment port; runs of one VLAN go through the
    /// pipeline together.
    pub(super) fn service_trunk(&mut self, id: PortId) {
        let Some(Some(PortSlot {
            port: Some(port), ..
        })) = self.ports.get_mut(id.idx())
        else {
            return;
        };
        let (n, more, failure) = read_each(port.as_mut(), &mut self.rx_bufs, &mut self.rx_lens);
        if n > 0 {
            self.loop_stats.batches += 1;
            self.loop_stats.frames += n as u64;
        }
        // Demultiplex the whole batch first (one table lookup), then forward runs of one VLAN.
        let mut segs = [None; RX_BATCH];
        if let Some(t) = self.trunks.get_mut(&id) {
            for (i, seg) in segs.iter_mut().enumerate().take(n) {
                let len = self.rx_lens[i];
                t.counters.rx_packets += 1;
                t.counters.rx_bytes += len as u64;
                let frame = &self.rx_bufs[i][..len.min(FRAME_BUF)];
                *seg = crate::switch::vlan::vlan_of(frame)
                    .and_then(|v| t.vlans.iter().find(|(tag, _)| *tag == v).map(|(_, p)| *p));
                if seg.is_some() {
                    self.rx_lens[i] = crate::switch::vlan::strip(&mut self.rx_bufs[i], len);
                } else {
                    // Steered here, yet no network's (one just went): dropped, counted.
                    t.counters.count_drop(DropReason::NoDestination);
                    self.rx_lens[i] = usize::MAX;
                }
            }
        }
        let mut from = 0;
        while from < n {
            let Some(seg) = segs[from] else {
                from += 1;
                continue;
            };
            let mut to = from + 1;
            while to < n && (segs[to] == Some(seg) || segs[to].is_none()) {
                to += 1;
            }
            self.forward_range(seg, 0, from, to);
            from = to;
        }
        if let Some(e) = failure {
            self.mark_down(id, format!("receive failed: {e} (interface gone?)"));
        } else if more {
            self.enqueue(id);
        }
    }
}
