//! `vswitchctl capture PORT`: starts a live capture in the dataplane and hands the client
//! thread what it streams from (the manager is not held while the capture runs).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::{invalid, ApiResult, Manager};
use crate::api::*;
use crate::dataplane::capture::{self, Captured, Spec, Stats};
use crate::dataplane::{Command, Injector};

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A running capture: its frames, its counters; dropping it stops it in the dataplane.
pub struct CaptureSession {
    pub info: CaptureInfo,
    pub frames: Receiver<Captured>,
    pub stats: Arc<Stats>,
    pub count: Option<u64>,
    id: u64,
    stop: Injector,
}

impl Drop for CaptureSession {
    fn drop(&mut self) {
        self.stop.stop_capture(self.id);
    }
}

impl CaptureSession {
    pub fn dropped(&self) -> u64 {
        self.stats.dropped.load(Ordering::Relaxed)
    }
}

impl Manager {
    pub fn capture_start(&self, req: &CaptureReq) -> ApiResult<CaptureSession> {
        let (rx, tx) = match req.direction.as_deref().unwrap_or("both") {
            "in" => (true, false),
            "out" => (false, true),
            "both" => (true, true),
            d => return Err(invalid(format!("--direction {d:?}: use in, out or both"))),
        };
        let snaplen = req.snaplen.unwrap_or(capture::MAX_SNAPLEN);
        if snaplen == 0 || snaplen > capture::MAX_SNAPLEN {
            return Err(invalid(format!(
                "--snaplen {snaplen}: 1 to {}",
                capture::MAX_SNAPLEN
            )));
        }
        if req.count == Some(0) {
            return Err(invalid("--count 0: capture at least one frame"));
        }
        let names = self.port_names_by_id();
        let port = match names
            .iter()
            .find(|(_, n)| **n == req.port || (req.port == "uplink" && n.starts_with("uplink:")))
        {
            Some((id, _)) => *id,
            None => {
                self.port_config(&req.port)?;
                return Err(invalid(format!(
                    "port {:?} is not attached to the dataplane (`vswitchctl show` says why)",
                    req.port
                )));
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let (ftx, frx) = crossbeam_channel::bounded(capture::QUEUE);
        let stats = Arc::new(Stats::default());
        let spec = Spec {
            port,
            rx,
            tx,
            snaplen,
            rewritten: req.rewritten,
        };
        let st = stats.clone();
        self.dp_call(|done| Command::CaptureStart {
            id,
            spec,
            tx: ftx,
            stats: st,
            done,
        })?
        .map_err(|e| ApiError::new(ErrorCode::Busy, format!("cannot capture {}: {e}", req.port)))?;
        Ok(CaptureSession {
            info: CaptureInfo {
                port: req.port.clone(),
                direction: req.direction.clone().unwrap_or_else(|| "both".into()),
                snaplen,
                rewritten: req.rewritten,
            },
            frames: frx,
            stats,
            count: req.count,
            id,
            stop: self.injector(),
        })
    }
}
