//! Live capture (`vswitchctl capture`): copies of the frames a port receives and sends, handed
//! to the control side through a bounded queue. The dataplane never waits for a capture: when
//! the queue is full the frame is left out of the capture and counted, and forwarding goes on.
//! With no capture running, the dataplane's only cost is an `is_empty` test per batch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crossbeam_channel::{Sender, TrySendError};

use crate::switch::PortId;

/// Captures at once, daemon-wide.
pub const MAX_CAPTURES: usize = 4;
/// Frames a capture may have waiting for its reader.
pub const QUEUE: usize = 4096;
/// The largest snap length (and the default): a whole 64 KiB TSO frame.
pub const MAX_SNAPLEN: u32 = 262_144;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Received by the switch from the port.
    In,
    /// Sent by the switch out of the port.
    Out,
}

/// One captured frame.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Since the Unix epoch.
    pub ts: Duration,
    pub dir: Direction,
    /// The frame's length on the wire (`data` may be cut to the snap length).
    pub orig_len: u32,
    pub data: Vec<u8>,
}

/// What a capture takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub port: PortId,
    pub rx: bool,
    pub tx: bool,
    pub snaplen: u32,
    /// Received frames as the pipeline left them (after NAT and routing rewrites) rather than
    /// as they were read.
    pub rewritten: bool,
}

/// A capture's counters, shared with its reader.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames put in the queue.
    pub captured: AtomicU64,
    /// Frames left out because the queue was full (the reader did not keep up).
    pub dropped: AtomicU64,
}

struct Tap {
    id: u64,
    spec: Spec,
    tx: Sender<Captured>,
    stats: Arc<Stats>,
}

/// The captures running.
#[derive(Default)]
pub struct Captures {
    taps: Vec<Tap>,
}

impl Captures {
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.taps.is_empty()
    }

    /// Starts capture `id`; refused (with why) when `MAX_CAPTURES` run already.
    pub fn add(
        &mut self,
        id: u64,
        spec: Spec,
        tx: Sender<Captured>,
        stats: Arc<Stats>,
    ) -> Result<(), String> {
        if self.taps.len() >= MAX_CAPTURES {
            return Err(format!(
                "{MAX_CAPTURES} captures are running already; stop one first"
            ));
        }
        self.taps.push(Tap {
            id,
            spec,
            tx,
            stats,
        });
        Ok(())
    }

    pub fn remove(&mut self, id: u64) {
        self.taps.retain(|t| t.id != id);
    }

    /// The port is gone: its captures end (their readers see the queue disconnect).
    pub fn remove_port(&mut self, port: PortId) {
        self.taps.retain(|t| t.spec.port != port);
    }

    /// Whether a capture wants `port`'s received frames before (`rewritten` false) or after
    /// the pipeline.
    #[inline]
    pub fn wants_rx(&self, port: PortId, rewritten: bool) -> bool {
        self.taps
            .iter()
            .any(|t| t.spec.port == port && t.spec.rx && t.spec.rewritten == rewritten)
    }

    /// Copies a received frame into the captures of `port` that take it at this stage.
    pub fn rx(&self, port: PortId, rewritten: bool, frame: &[u8]) {
        for t in &self.taps {
            if t.spec.port == port && t.spec.rx && t.spec.rewritten == rewritten {
                t.put(Direction::In, frame);
            }
        }
    }

    /// Copies a frame sent out of `port` into its captures.
    #[inline]
    pub fn tx(&self, port: PortId, frame: &[u8]) {
        for t in &self.taps {
            if t.spec.port == port && t.spec.tx {
                t.put(Direction::Out, frame);
            }
        }
    }
}

impl Tap {
    fn put(&self, dir: Direction, frame: &[u8]) {
        if self.tx.is_full() {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let cut = frame.len().min(self.spec.snaplen as usize);
        let c = Captured {
            ts: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default(),
            dir,
            orig_len: frame.len() as u32,
            data: frame[..cut].to_vec(),
        };
        match self.tx.try_send(c) {
            Ok(()) => {
                self.stats.captured.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_by_direction() {
        let mut c = Captures::default();
        let (tx, rx) = crossbeam_channel::bounded(2);
        let stats = Arc::new(Stats::default());
        let spec = Spec {
            port: PortId(1),
            rx: true,
            tx: false,
            snaplen: 4,
            rewritten: false,
        };
        c.add(7, spec, tx, stats.clone()).unwrap();
        assert!(c.wants_rx(PortId(1), false) && !c.wants_rx(PortId(1), true));
        c.tx(PortId(1), b"not this one");
        c.rx(PortId(2), false, b"nor this");
        for _ in 0..5 {
            c.rx(PortId(1), false, b"abcdefgh");
        }
        assert_eq!(stats.captured.load(Ordering::Relaxed), 2);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 3);
        let f = rx.recv().unwrap();
        assert_eq!(
            (f.data.as_slice(), f.orig_len, f.dir),
            (&b"abcd"[..], 8, Direction::In)
        );
        for id in 0..MAX_CAPTURES as u64 - 1 {
            let (tx, _) = crossbeam_channel::bounded(1);
            c.add(id, spec, tx, Arc::default()).unwrap();
        }
        let (tx, _) = crossbeam_channel::bounded(1);
        assert!(c.add(99, spec, tx, Arc::default()).is_err());
        c.remove_port(PortId(1));
        assert!(c.is_empty());
    }
}
