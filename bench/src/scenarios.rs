//! The scenarios: what each one sends through a [`Topology`] and how it counts what arrives —
//! throughput (iperf3), latency (UDP ping-pong), pps and macs (the frame generator, counted at
//! an interface sink or in a socket), and scale (add-port times and daemon RSS, vswitch only).

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde_json::Value;

use crate::peers::{Topology, Vswitchd};
use crate::report::{record, Figure};
use crate::sandbox::{prefix, Ns};

pub struct Durations {
    pub iperf: u64,
    pub pps: f64,
    pub pings: usize,
    /// Seconds of short TCP connections (nat).
    pub conns: f64,
}

pub fn iperf(t: &Topology, streams: u32, secs: u64) -> Result<f64, String> {
    let server = t.server.spawn(&["iperf3", "-s", "-1", "-p", "5201"])?;
    std::thread::sleep(Duration::from_millis(300));
    let out = t.client.exec(&[
        "iperf3",
        "-c",
        t.server_ip,
        "-p",
        "5201",
        "-t",
        &secs.to_string(),
        "-P",
        &streams.to_string(),
        "--json",
    ])?;
    drop(server);
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| "iperf3 gave no result".into())
}

pub fn latency(t: &Topology, count: usize) -> Result<Value, String> {
    let me = std::env::current_exe().unwrap().display().to_string();
    let echo = t
        .server
        .spawn(&[&me, "udp-echo", t.server_ip, "7000", "120"])?;
    std::thread::sleep(Duration::from_millis(300));
    let out = t.client.exec(&[
        &me,
        "udp-ping",
        &format!("{}:7000", t.server_ip),
        &count.to_string(),
    ])?;
    drop(echo);
    let v: Value = serde_json::from_str(out.trim()).map_err(|e| e.to_string())?;
    if v["p50"].as_f64().is_none() {
        return Err(format!("no replies ({} lost)", v["lost"]));
    }
    Ok(v)
}

/// Where a blast's frames are counted.
#[derive(Clone, Copy, PartialEq)]
pub enum Sink {
    /// At the server's `eth0`: an nftables netdev-ingress rule counts the UDP frames and drops
    /// them there, so the switch is measured and not the receiving stack or a receiver process
    /// competing for the CPUs (RFC 2544 counts at the tester's port the same way).
    Interface,
    /// In a UDP socket read by a receiver process (recvmmsg): what an application gets.
    Socket,
}

const SINK_TABLE: &str = "vswitch_bench";

/// Installs the counting drop rule on the server's `eth0` for UDP to `dports` ("7001", or a
/// range "7002-7017") (removed with the namespace, and by [`sink_remove`]).
pub fn sink_install(server: &Ns, dports: &str) -> Result<(), String> {
    let t = SINK_TABLE;
    server
        .exec(&["nft", "add", "table", "netdev", t])
        .map_err(|e| format!("nft (install the nftables package): {e}"))?;
    server.exec(&["nft", "add", "counter", "netdev", t, "frames"])?;
    server.exec(&[
        "nft", "add", "chain", "netdev", t, "in", "{", "type", "filter", "hook", "ingress",
        "device", "eth0", "priority", "0", ";", "}",
    ])?;
    server.exec(&[
        "nft", "add", "rule", "netdev", t, "in", "udp", "dport", dports, "counter", "name",
        "frames", "drop",
    ])?;
    Ok(())
}

pub fn sink_count(server: &Ns) -> Result<u64, String> {
    let out = server.exec(&[
        "nft", "-j", "list", "counter", "netdev", SINK_TABLE, "frames",
    ])?;
    let v: Value = serde_json::from_str(out.trim()).map_err(|e| e.to_string())?;
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|o| o["counter"]["packets"].as_u64()))
        .ok_or_else(|| format!("no counter in {out:?}"))
}

pub fn sink_remove(server: &Ns) {
    let _ = server.exec(&["nft", "delete", "table", "netdev", SINK_TABLE]);
}

/// Runs a generator (this binary with `sender` arguments) in the client for `secs` and counts
/// what reaches the server at `sink`; returns the forwarded rate (kpps) and the loss (%).
fn blast(t: &Topology, secs: f64, sink: Sink, sender: &[&str]) -> Result<(f64, f64), String> {
    let me = std::env::current_exe().unwrap().display().to_string();
    // Warm the path (ARP, MAC learning) first.
    let _ = t.client.exec(&["ping", "-c", "1", "-W", "1", t.server_ip]);
    let recv = match sink {
        Sink::Socket => {
            Some(
                t.server
                    .spawn(&[&me, "pps-recv", "7001", &(secs + 1.0).to_string()])?,
            )
        }
        Sink::Interface => {
            if let Err(e) = sink_install(&t.server, "7001") {
                sink_remove(&t.server);
                return Err(e);
            }
            None
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut args = vec![me.as_str()];
    args.extend_from_slice(sender);
    let sent = t.client.exec(&args);
    let received = match recv {
        Some(recv) => recv
            .wait_json()
            .map(|got| got["received"].as_f64().unwrap_or(0.0)),
        None => {
            // Frames still queued in the switch land within a moment.
            std::thread::sleep(Duration::from_millis(200));
            let n = sink_count(&t.server).map(|n| n as f64);
            sink_remove(&t.server);
            n
        }
    }?;
    let sent: Value = serde_json::from_str(sent?.trim()).map_err(|e| e.to_string())?;
    let sent = sent["sent"].as_f64().unwrap_or(0.0);
    let loss = if sent > 0.0 {
        (1.0 - received / sent).max(0.0) * 100.0
    } else {
        100.0
    };
    Ok((received / secs / 1000.0, loss))
}

/// 64-byte UDP frames of one flow (the client's own MAC and address) as fast as the generator
/// goes.
pub fn pps(t: &Topology, secs: f64, sink: Sink) -> Result<(f64, f64), String> {
    let src_mac = t.client.exec(&["cat", "/sys/class/net/eth0/address"])?;
    flood(t, secs, sink, Some(src_mac.trim()), 1)
}

/// The same from 100 000 source MACs: forwarding while the table learns and holds them.
pub fn mac_scale(t: &Topology, secs: f64, macs: u32) -> Result<(f64, f64), String> {
    flood(t, secs, Sink::Interface, None, macs)
}

fn flood(
    t: &Topology,
    secs: f64,
    sink: Sink,
    src_mac: Option<&str>,
    macs: u32,
) -> Result<(f64, f64), String> {
    let dst_mac = match &t.gateway_mac {
        Some(m) => m.clone(),
        None => t.server.exec(&["cat", "/sys/class/net/eth0/address"])?,
    };
    let (macs, secs_s) = (macs.to_string(), secs.to_string());
    let mut args = vec!["mac-flood"];
    if let Some(m) = src_mac {
        args.extend(["--src-mac", m]);
    }
    args.extend([
        "eth0",
        dst_mac.trim(),
        t.client_ip,
        t.server_ip,
        "7001",
        &macs,
        &secs_s,
    ]);
    blast(t, secs, sink, &args)
}

/// Port counts the scale scenario runs for a port type.
pub fn scale_counts(quick: bool, _port_type: &str) -> &'static [usize] {
    if quick {
        &[1, 10, 100]
    } else {
        &[1, 10, 100, 1000]
    }
}

pub fn scale(
    quick: bool,
    port_type: &str,
    figures: &mut Vec<Figure>,
    bar: &ProgressBar,
) -> Result<(), String> {
    use vswitch::api::{NetworkCreate, Op, PortAdd};
    let peer = format!("vswitch-{port_type}");
    for &n in scale_counts(quick, port_type) {
        bar.set_message(format!("scale: {n} {port_type} ports"));
        let host = match port_type {
            "tap" => None,
            _ => Some(Ns::new(format!("{}h", prefix()))?),
        };
        let d = Vswitchd::start(host.as_ref())?;
        d.call(Op::NetworkCreate(NetworkCreate {
            name: "scale".into(),
            subnet: "10.240.0.0/16".into(),
            ..Default::default()
        }))?;
        // One namespace per port, as one container per port (created before the clock starts).
        let nss = (0..n)
            .map(|i| Ns::new(format!("{}x{i}", prefix())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut client = d.client()?;
        let mut times = Vec::with_capacity(n);
        for (i, ns) in nss.iter().enumerate() {
            let t = Instant::now();
            client
                .call(Op::PortAdd(PortAdd {
                    network: "scale".into(),
                    netns: ns.0.clone(),
                    name: Some(format!("p{i}")),
                    kind: Some(port_type.into()),
                    ..Default::default()
                }))
                .map_err(|e| e.to_string())?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize];
        let mut fig = |metric: &str, unit: &str, v: f64| {
            let metric = format!("{metric} @{n} ports");
            record(figures, "scale", &metric, unit, false, &peer, v);
        };
        fig("add-port p50", "ms", pct(0.5));
        fig("add-port p99", "ms", pct(0.99));
        fig("daemon RSS", "MiB", d.rss_kib() as f64 / 1024.0);
        drop(client);
        drop(d); // kills the daemon: its TAPs go with it
        drop(host); // and its veths' host ends
        drop(nss);
        bar.inc(1);
    }
    Ok(())
}

/// Builds `peer` of a side-by-side scenario: its topology, or `None` after a note and a tick
/// of the bar when it cannot be built; a peer built is listed as run.
pub fn set_up(
    scenario: &str,
    peer: &str,
    stage: &str,
    bar: &ProgressBar,
    g: &mut crate::Gathered,
    build: impl FnOnce(&str) -> Result<Topology, String>,
) -> Option<Topology> {
    bar.set_message(format!("{stage}: {peer}: setting up"));
    match build(peer) {
        Ok(t) => {
            if !g.peers_run.iter().any(|p| p == peer) {
                g.peers_run.push(peer.to_string());
            }
            Some(t)
        }
        Err(e) => {
            g.notes.push(format!("{scenario}: {peer} skipped: {e}"));
            bar.inc(1);
            None
        }
    }
}

/// iperf3 TCP with 1 and 4 streams, recorded as "TCP 1 stream" and "TCP 4 streams".
pub fn tcp_streams(
    scenario: &str,
    peer: &str,
    stage: &str,
    t: &Topology,
    d: &Durations,
    bar: &ProgressBar,
    g: &mut crate::Gathered,
) {
    for streams in [1, 4] {
        bar.set_message(format!("{stage}: {peer}: TCP x{streams}"));
        match iperf(t, streams, d.iperf) {
            Ok(v) => record(
                &mut g.figures,
                scenario,
                &format!("TCP {streams} stream{}", if streams > 1 { "s" } else { "" }),
                "Gbit/s",
                true,
                peer,
                v,
            ),
            Err(e) => g
                .notes
                .push(format!("{scenario}: {peer} TCP x{streams}: {e}")),
        }
    }
}

/// UDP round trips, recorded as "UDP RTT p50" and "UDP RTT p99".
pub fn udp_rtt(
    scenario: &str,
    peer: &str,
    stage: &str,
    t: &Topology,
    d: &Durations,
    bar: &ProgressBar,
    g: &mut crate::Gathered,
) {
    bar.set_message(format!("{stage}: {peer}: UDP round trips"));
    match latency(t, d.pings) {
        Ok(v) => {
            for (q, name) in [("p50", "UDP RTT p50"), ("p99", "UDP RTT p99")] {
                if let Some(x) = v[q].as_f64() {
                    record(&mut g.figures, scenario, name, "µs", false, peer, x);
                }
            }
        }
        Err(e) => g.notes.push(format!("{scenario}: {peer} latency: {e}")),
    }
}
