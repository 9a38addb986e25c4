//! The switch's event stream (`vswitchctl events`, its `docker events`): what changed, as it
//! happens — ports added, removed and down (with why), MAC moves, DHCP leases, a full conntrack
//! table, overlay peers, networks, the uplink. Each subscriber has a bounded queue; one that
//! does not keep up misses events (counted, and told in the next event it gets), and never
//! holds up the switch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::api::EventInfo;

/// Events one subscriber may have waiting.
pub const QUEUE: usize = 1024;
/// Subscribers at once.
pub const MAX_SUBSCRIBERS: usize = 32;

struct Sub {
    tx: Sender<EventInfo>,
    missed: Arc<AtomicU64>,
}

/// Where events go: every subscriber's queue.
#[derive(Default)]
pub struct EventHub {
    subs: Mutex<Vec<Sub>>,
}

/// A subscription: its events, and how many it missed.
pub struct Subscription {
    pub events: Receiver<EventInfo>,
    pub missed: Arc<AtomicU64>,
}

impl EventHub {
    pub fn subscribe(&self) -> Result<Subscription, String> {
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        // A subscription dropped since holds no copy of its counter any more.
        subs.retain(|s| Arc::strong_count(&s.missed) > 1);
        if subs.len() >= MAX_SUBSCRIBERS {
            return Err(format!(
                "{MAX_SUBSCRIBERS} clients follow the events already; retry when one goes"
            ));
        }
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let missed = Arc::new(AtomicU64::new(0));
        subs.push(Sub {
            tx,
            missed: missed.clone(),
        });
        Ok(Subscription { events: rx, missed })
    }

    /// Sends an event to every subscriber, now.
    pub fn emit(&self, ev: EventInfo) {
        let mut subs = self.subs.lock().unwrap_or_else(|p| p.into_inner());
        if subs.is_empty() {
            return;
        }
        subs.retain(|s| match s.tx.try_send(ev.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                s.missed.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Disconnected(_)) => false,
        });
    }
}

/// Microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: u64) -> EventInfo {
        EventInfo {
            time_us: n,
            kind: "port-added".into(),
            network: None,
            port: None,
            detail: String::new(),
            missed: 0,
        }
    }

    #[test]
    fn every_subscriber_gets_each_event_and_a_slow_one_misses_some() {
        let hub = EventHub::default();
        let a = hub.subscribe().unwrap();
        let b = hub.subscribe().unwrap();
        for n in 0..QUEUE as u64 + 5 {
            hub.emit(ev(n));
            let _ = a.events.try_recv();
        }
        assert_eq!(b.events.len(), QUEUE);
        assert_eq!(b.missed.load(Ordering::Relaxed), 5);
        assert_eq!(a.missed.load(Ordering::Relaxed), 0);
        drop(a);
        hub.emit(ev(0));
        assert_eq!(
            hub.subs.lock().unwrap().len(),
            1,
            "a gone subscriber is forgotten"
        );
    }
}
