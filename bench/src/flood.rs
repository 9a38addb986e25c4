//! The `flood` scenario: does one container flooding the switch starve the others? A third
//! container on the bench network (an attacker, 10.250.0.3) sends as fast as it can random
//! source MACs to unknown destinations (`flood-macs`), DNS queries for ever new names to the
//! gateway (`flood-dns`) or ARP requests for the subnet (`flood-arp`), while the client runs
//! one iperf3 TCP stream to the server; `no-flood` is the same topology with the attacker
//! idle. The defences on the way: port security (the attacker may send only as its own MAC),
//! the per-port MAC limit and the gateway's per-port rate limit. The control socket's latency
//! under the flood is measured too.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use vswitch::api::{Op, PortAdd, Reply};

use crate::peers::vswitch_topology;
use crate::report::{record, Goal, Target};
use crate::sandbox::{prefix, Ns};
use crate::scenarios::{iperf, Durations};
use crate::Gathered;

pub const PEERS: [&str; 4] = ["no-flood", "flood-macs", "flood-dns", "flood-arp"];
const ATTACKER_IP: &str = "10.250.0.3";
const GATEWAY_IP: &str = "10.250.0.254";

pub fn steps(rounds: u32) -> u64 {
    rounds as u64 * PEERS.len() as u64
}

/// The neighbours keep at least 0.8 of their unflooded TCP throughput under each flood.
pub fn targets() -> Vec<Target> {
    ["flood-macs", "flood-dns", "flood-arp"]
        .into_iter()
        .map(|ours| Target {
            scenario: "flood",
            metric: "TCP 1 stream beside the flood",
            goal: Goal::RatioAtLeast {
                ours,
                peer: "no-flood",
                min: 0.8,
            },
        })
        .collect()
}

pub fn run_peer(peer: &str, stage: &str, d: &Durations, bar: &ProgressBar, g: &mut Gathered) {
    bar.set_message(format!("{stage}: flood: {peer}: setting up"));
    if let Err(e) = run(peer, stage, d, bar, g) {
        g.notes.push(format!("flood: {peer}: {e}"));
    }
    g.notes.push("flood: vswitch's TAP ports; a third container (the attacker, 10.250.0.3, port security and limits at their defaults) sends 64-byte frames with sendmmsg on AF_PACKET as fast as it can — from random source MACs to unknown unicast MACs (flood-macs, dropped as spoofed_mac), DNS queries for new names to the gateway (flood-dns) or ARP requests for the subnet (flood-arp), both held to --gateway-rate 1000/s and the rest dropped as rate_limited; a port dropped that much is damped, read one batch a millisecond, so \"attacker frames sent\" is what its full kernel queue let through — while the client runs one iperf3 TCP stream to the server; no-flood has the attacker idle. \"control request\" is the median time of a `show` over the control socket during the flood. On 2 CPUs the attacker's own sending takes CPU the neighbours' iperf3 would use: part of what the ratio shows is the attacker's cost, not the switch's.".into());
    bar.inc(1);
}

fn run(
    peer: &str,
    stage: &str,
    d: &Durations,
    bar: &ProgressBar,
    g: &mut Gathered,
) -> Result<(), String> {
    let t = vswitch_topology("tap")?;
    let dm = t.daemon().ok_or("no daemon")?;
    let attacker = Ns::new(format!("{}a", prefix()))?;
    let port = match dm.call(Op::PortAdd(PortAdd {
        network: "bench".into(),
        netns: attacker.0.clone(),
        ip: Some(ATTACKER_IP.into()),
        kind: Some("tap".into()),
        ..Default::default()
    }))? {
        Reply::Port(p) => p,
        other => return Err(format!("add-port answered {other:?}")),
    };
    let gw_mac = match dm.call(Op::NetworkInspect {
        name: "bench".into(),
    })? {
        Reply::Network(n) => n.gateway_mac,
        other => return Err(format!("network inspect answered {other:?}")),
    };
    if !g.peers_run.iter().any(|p| p == peer) {
        g.peers_run.push(peer.to_string());
    }
    let kind = peer.strip_prefix("flood-");
    let me = std::env::current_exe().unwrap().display().to_string();
    let secs = (d.iperf + 3).to_string();
    let flooder = match kind {
        Some(k) => Some(attacker.spawn(&[
            &me,
            "gw-flood",
            k,
            "eth0",
            &port.mac,
            ATTACKER_IP,
            &gw_mac,
            GATEWAY_IP,
            &secs,
        ])?),
        None => None,
    };
    std::thread::sleep(Duration::from_millis(700));
    bar.set_message(format!("{stage}: flood: {peer}: iperf3"));
    // The control socket meanwhile: a show every 100 ms.
    let socket = dm.socket.clone();
    let prober = std::thread::spawn(move || {
        let mut times = Vec::new();
        let end = Instant::now() + Duration::from_secs(3);
        while Instant::now() < end {
            let t0 = Instant::now();
            if let Ok(mut c) = vswitch::api::Client::connect(&socket) {
                if c.call(Op::Show).is_ok() {
                    times.push(t0.elapsed().as_secs_f64() * 1000.0);
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        times.sort_by(|a, b| a.total_cmp(b));
        times.get(times.len() / 2).copied()
    });
    let gbps = iperf(&t, 1, d.iperf);
    let show_ms = prober.join().ok().flatten();
    let sent = flooder.map(|f| f.wait_json());
    record(
        &mut g.figures,
        "flood",
        "TCP 1 stream beside the flood",
        "Gbit/s",
        true,
        peer,
        gbps?,
    );
    if let Some(ms) = show_ms {
        record(
            &mut g.figures,
            "flood",
            "control request (show)",
            "ms",
            false,
            peer,
            ms,
        );
    }
    if let Some(sent) = sent {
        let sent = sent?["sent"].as_f64().unwrap_or(0.0);
        record(
            &mut g.figures,
            "flood",
            "attacker frames sent",
            "kfps",
            true,
            peer,
            sent / (d.iperf as f64 + 3.0) / 1000.0,
        );
        if let Reply::Stats(s) = dm.call(Op::PortStats {
            port: Some(port.name.clone()),
        })? {
            if let Some(s) = s.first() {
                let dropped: u64 = s.drops.values().sum();
                record(
                    &mut g.figures,
                    "flood",
                    "attacker frames dropped by the switch",
                    "%",
                    true,
                    peer,
                    if sent > 0.0 {
                        dropped as f64 / sent * 100.0
                    } else {
                        0.0
                    },
                );
            }
        }
    }
    drop(attacker);
    Ok(())
}
