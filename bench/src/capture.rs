//! The `capture` scenario: does a live capture slow the switch? 64-byte UDP forwarded from the
//! client to the server (the pps scenario's flood, counted at the server's interface) on
//! vswitch's TAP ports with no capture (`vswitch-tap`), with a capture of the client's port
//! whose reader reads nothing (`capture-stalled`: its queue fills at once and every frame after
//! is left out, which is what a capture that cannot keep up costs) and with one whose reader
//! drains as fast as it can (`capture-reading`: on 2 CPUs it competes with the generator and
//! the switch for them).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use indicatif::ProgressBar;
use vswitch::api::{CaptureReq, Op, Reply};

use crate::peers::vswitch_topology;
use crate::report::{record, Goal, Target};
use crate::scenarios::{pps, Durations, Sink};
use crate::Gathered;

pub const PEERS: [&str; 3] = ["vswitch-tap", "capture-stalled", "capture-reading"];

pub fn steps(rounds: u32) -> u64 {
    rounds as u64 * PEERS.len() as u64
}

/// A capture that cannot keep up leaves the forwarding rate as it is (within noise).
pub fn targets() -> Vec<Target> {
    vec![Target {
        scenario: "capture",
        metric: "64B UDP forwarded",
        goal: Goal::RatioAtLeast {
            ours: "capture-stalled",
            peer: "vswitch-tap",
            min: 0.9,
        },
    }]
}

pub fn run_peer(peer: &str, stage: &str, d: &Durations, bar: &ProgressBar, g: &mut Gathered) {
    bar.set_message(format!("{stage}: capture: {peer}: setting up"));
    let t = match vswitch_topology("tap") {
        Ok(t) => t,
        Err(e) => {
            g.notes.push(format!("capture: {peer} skipped: {e}"));
            bar.inc(1);
            return;
        }
    };
    if !g.peers_run.iter().any(|p| p == peer) {
        g.peers_run.push(peer.to_string());
    }
    let port = format!("{}-eth0", t.client.0);
    let mut capture = None;
    if peer != "vswitch-tap" {
        let started = t.daemon().ok_or("no daemon".to_string()).and_then(|dm| {
            let mut c = dm.client()?;
            match c.call(Op::Capture(CaptureReq {
                port: port.clone(),
                direction: Some("in".into()),
                count: None,
                snaplen: None,
                rewritten: false,
            })) {
                Ok(Reply::CaptureStarted(_)) => Ok(c),
                Ok(_) => Err("capture answered with something else".into()),
                Err(e) => Err(e.to_string()),
            }
        });
        match started {
            Ok(c) => capture = Some(c),
            Err(e) => {
                g.notes.push(format!("capture: {peer}: {e}"));
                bar.inc(1);
                return;
            }
        }
    }
    // The draining reader: counts what it gets and the frames the switch left out.
    let stop = Arc::new(AtomicBool::new(false));
    let reader = match (peer, capture.take()) {
        ("capture-reading", Some(mut c)) => {
            let stop = stop.clone();
            Some(std::thread::spawn(move || {
                let (mut got, mut left_out) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    match c.next_reply(Some(Duration::from_millis(200))) {
                        Ok(Some(Reply::CaptureFrame(f))) => {
                            got += 1;
                            left_out = f.dropped;
                        }
                        Ok(Some(_)) | Ok(None) => break,
                        Err(_) => continue,
                    }
                }
                (got, left_out)
            }))
        }
        (_, c) => {
            capture = c; // stalled: held open, never read
            None
        }
    };
    bar.set_message(format!("{stage}: capture: {peer}: 64-byte UDP"));
    match pps(&t, d.pps, Sink::Interface) {
        Ok((kpps, _)) => record(
            &mut g.figures,
            "capture",
            "64B UDP forwarded",
            "kpps",
            true,
            peer,
            kpps,
        ),
        Err(e) => g.notes.push(format!("capture: {peer}: {e}")),
    }
    stop.store(true, Ordering::Relaxed);
    if let Some(r) = reader {
        if let Ok((got, left_out)) = r.join() {
            let total = (got + left_out).max(1) as f64;
            record(
                &mut g.figures,
                "capture",
                "frames in the capture",
                "%",
                true,
                peer,
                got as f64 / total * 100.0,
            );
        }
    }
    drop(capture);
    g.notes.push("capture: the pps scenario's flood (64-byte UDP, counted at the server's interface) on vswitch's TAP ports, with no capture (vswitch-tap), with `capture CLIENT-PORT --direction in` whose reader never reads (capture-stalled: its 4096-frame queue fills and the rest is left out and counted) and with one whose reader drains as fast as it can (capture-reading, competing for the 2 CPUs; \"frames in the capture\" is the share it got, the rest left out by the switch).".into());
    bar.inc(1);
}
