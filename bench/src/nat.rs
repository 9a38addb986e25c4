//! The `nat` scenario: a container reaching a server in an external namespace through NAT,
//! vswitch's (`vswitch-nat`: TAP container port, AF_XDP uplink in dedicated mode) against the
//! kernel's (`kernel-nat`: a router namespace with an nftables masquerade rule), side by side
//! in each round — TCP (iperf3, 1 and 4 streams), UDP ping-pong RTT, 64-byte UDP forwarded (the
//! frame generator, counted at the server's `eth0`) and new TCP connections per second (this
//! binary's own short-connection client and server, the same on both paths) — then, once, the
//! conntrack fill: vswitchd's RSS holding 1 000 000 tracked flows, with the kernel's memory per
//! tracked flow for reference. The figures are held to the targets of [`targets`].

use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use serde_json::Value;

use crate::peers::{kernel_nat, vswitch_nat, vswitch_nat_packet, Topology};
use crate::report::{record, Goal, Target};
use crate::sandbox::{wait_for, Ns};
use crate::scenarios::{iperf, latency, pps, sink_count, sink_install, sink_remove};
use crate::scenarios::{Durations, Sink};
use crate::Gathered;

/// The scenario's peers, in the order they take turns.
pub const PEERS: [&str; 3] = ["kernel-nat", "vswitch-nat", "vswitch-nat-packet"];
/// Short connections in flight at once (one at a time: bound by the round trips; several:
/// by the CPUs), and the server's threads.
const CONN_PARALLEL: [usize; 2] = [1, 8];
const CONN_SERVER_THREADS: usize = 4;
const CONN_PORT: u16 = 7100;
/// The conntrack fill: one UDP flow for each (source port, destination port) pair — 64 512 ×
/// 16 = 1 032 192 flows from one container to one server address. Dedicated mode keeps the
/// container's own port as the NAT port (every reply tuple is distinct), so each is an entry.
const FILL_SPORTS: &str = "1024-65535";
const FILL_DPORTS: &str = "7002-7017";
const FILL_FLOWS: u64 = 64_512 * 16;
const FILL_WANTED: u64 = 1_000_000;
/// vswitch's table for the fill (the default, 262 144, would refuse most of it).
const FILL_CONNTRACK_MAX: usize = 1 << 20;

/// Steps of the progress bar the scenario takes.
pub fn steps(rounds: u32) -> u64 {
    rounds as u64 * PEERS.len() as u64 + 1
}

/// What the scenario's figures are held to.
pub fn targets() -> Vec<Target> {
    let ratio = |metric, min| Target {
        scenario: "nat",
        metric,
        goal: Goal::RatioAtLeast {
            ours: "vswitch-nat",
            peer: "kernel-nat",
            min,
        },
    };
    vec![
        ratio("TCP 1 stream", 0.8),
        ratio("TCP 4 streams", 0.8),
        ratio("new TCP connections, 1 in flight", 1.0),
        ratio("new TCP connections, 8 in flight", 1.0),
        Target {
            scenario: "nat",
            metric: "daemon RSS @1M conntrack entries",
            goal: Goal::AtMost {
                peer: "vswitch-nat",
                max: 256.0,
            },
        },
    ]
}

fn build(peer: &str, conntrack_max: Option<usize>) -> Result<Topology, String> {
    match peer {
        "kernel-nat" => kernel_nat(),
        "vswitch-nat" => vswitch_nat(conntrack_max),
        "vswitch-nat-packet" => vswitch_nat_packet(),
        other => Err(format!("unknown nat peer {other}")),
    }
}

fn reachable(t: &Topology) -> bool {
    wait_for(10, || {
        t.client
            .exec(&["ping", "-c", "1", "-W", "1", t.server_ip])
            .is_ok()
    })
}

/// One peer's turn in a round: builds its world afresh, runs the traffic and tears it down.
pub fn run_peer(peer: &str, stage: &str, d: &Durations, bar: &ProgressBar, g: &mut Gathered) {
    bar.set_message(format!("{stage}: {peer}: setting up"));
    let t = match build(peer, None) {
        Ok(t) => t,
        Err(e) => {
            g.notes.push(format!("nat: {peer} skipped: {e}"));
            bar.inc(1);
            return;
        }
    };
    if !g.peers_run.iter().any(|p| p == peer) {
        g.peers_run.push(peer.to_string());
    }
    if !reachable(&t) {
        g.notes
            .push(format!("nat: {peer}: client cannot reach server; skipped"));
        bar.inc(1);
        return;
    }
    let figures = &mut g.figures;
    for streams in [1, 4] {
        bar.set_message(format!("{stage}: {peer}: TCP x{streams}"));
        match iperf(&t, streams, d.iperf) {
            Ok(v) => record(
                figures,
                "nat",
                &format!("TCP {streams} stream{}", if streams > 1 { "s" } else { "" }),
                "Gbit/s",
                true,
                peer,
                v,
            ),
            Err(e) => g.notes.push(format!("nat: {peer} TCP x{streams}: {e}")),
        }
    }
    bar.set_message(format!("{stage}: {peer}: UDP ping-pong"));
    match latency(&t, d.pings) {
        Ok(v) => {
            for (k, name) in [("p50", "RTT p50"), ("p99", "RTT p99")] {
                let v = v[k].as_f64().unwrap_or(f64::NAN);
                record(figures, "nat", name, "µs", false, peer, v);
            }
        }
        Err(e) => g.notes.push(format!("nat: {peer} latency: {e}")),
    }
    bar.set_message(format!("{stage}: {peer}: 64-byte UDP"));
    match pps(&t, d.pps, Sink::Interface) {
        Ok((kpps, loss)) => {
            record(
                figures,
                "nat",
                "64B UDP forwarded",
                "kpps",
                true,
                peer,
                kpps,
            );
            record(figures, "nat", "64B UDP loss", "%", false, peer, loss);
        }
        Err(e) => g.notes.push(format!("nat: {peer} pps: {e}")),
    }
    for parallel in CONN_PARALLEL {
        bar.set_message(format!(
            "{stage}: {peer}: short TCP connections, {parallel} in flight"
        ));
        match conn_rate(&t, parallel, d.conns) {
            Ok((rate, failed)) => {
                let metric = format!("new TCP connections, {parallel} in flight");
                record(figures, "nat", &metric, "conn/s", true, peer, rate);
                let metric = format!("failed TCP connections, {parallel} in flight");
                record(figures, "nat", &metric, "count", false, peer, failed);
            }
            Err(e) => g.notes.push(format!("nat: {peer} connections: {e}")),
        }
    }
    bar.inc(1);
}

/// New TCP connections per second: `parallel` client threads each connecting, sending one
/// byte, reading it back and the close, for `secs`. Returns the rate and the failures.
pub fn conn_rate(t: &Topology, parallel: usize, secs: f64) -> Result<(f64, f64), String> {
    let me = std::env::current_exe().unwrap().display().to_string();
    let server = t.server.spawn(&[
        &me,
        "conn-server",
        &CONN_PORT.to_string(),
        &(secs + 5.0).to_string(),
        "--threads",
        &CONN_SERVER_THREADS.to_string(),
    ])?;
    std::thread::sleep(Duration::from_millis(300));
    let out = t.client.exec(&[
        &me,
        "conn-client",
        &format!("{}:{CONN_PORT}", t.server_ip),
        &parallel.to_string(),
        &secs.to_string(),
    ])?;
    drop(server);
    let v: Value = serde_json::from_str(out.trim()).map_err(|e| e.to_string())?;
    let (n, s) = (
        v["connections"].as_f64().unwrap_or(0.0),
        v["secs"].as_f64().unwrap_or(secs),
    );
    Ok((n / s, v["failed"].as_f64().unwrap_or(0.0)))
}

/// Sends the fill's flows from the client (one 64-byte UDP frame each, dropped at the server's
/// `eth0`) and waits until `count` says they are tracked (or 10 s). Returns the frames sent,
/// the frames that reached the server and how long the sending took.
fn fill(t: &Topology, count: impl Fn() -> u64) -> Result<(u64, u64, f64), String> {
    let me = std::env::current_exe().unwrap().display().to_string();
    let src_mac = t.client.exec(&["cat", "/sys/class/net/eth0/address"])?;
    let dst_mac = t.gateway_mac.clone().ok_or("no gateway MAC")?;
    sink_install(&t.server, FILL_DPORTS)?;
    let start = Instant::now();
    let out = t.client.exec(&[
        &me,
        "flow-flood",
        "eth0",
        src_mac.trim(),
        &dst_mac,
        t.client_ip,
        t.server_ip,
        FILL_SPORTS,
        FILL_DPORTS,
    ]);
    let took = start.elapsed().as_secs_f64();
    wait_for(10, || count() >= FILL_WANTED.min(FILL_FLOWS));
    std::thread::sleep(Duration::from_millis(200));
    let arrived = sink_count(&t.server);
    sink_remove(&t.server);
    let sent: Value = serde_json::from_str(out?.trim()).map_err(|e| e.to_string())?;
    Ok((sent["sent"].as_u64().unwrap_or(0), arrived?, took))
}

fn vswitch_entries(t: &Topology) -> u64 {
    use vswitch::api::{Op, Reply};
    match t.daemon().map(|d| d.call(Op::ConntrackStats)) {
        Some(Ok(Reply::ConntrackStats(s))) => s.entries as u64,
        _ => 0,
    }
}

/// `SUnreclaim` of /proc/meminfo, KiB: where the kernel's conntrack entries live.
fn sunreclaim_kib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("SUnreclaim:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The size of one `nf_conntrack` slab object, bytes.
fn conntrack_objsize() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let l = s.lines().find(|l| l.starts_with("nf_conntrack "))?;
    l.split_whitespace().nth(3)?.parse().ok()
}

/// The conntrack fill, once per run: vswitchd's RSS before and after tracking 1 000 000 flows
/// (its table raised to 2^20 entries), and the same flows through the kernel's NAT for its
/// memory per entry (the kernel's table stops at `nf_conntrack_max`, a host-wide setting the
/// bench leaves alone).
pub fn run_fill(bar: &ProgressBar, g: &mut Gathered) {
    bar.set_message("nat: conntrack fill (vswitch-nat)");
    if let Err(e) = fill_vswitch(g) {
        g.notes
            .push(format!("nat: vswitch-nat conntrack fill: {e}"));
    }
    bar.set_message("nat: conntrack fill (kernel-nat, for reference)");
    if let Err(e) = fill_kernel(g) {
        g.notes.push(format!("nat: kernel-nat conntrack fill: {e}"));
    }
    g.notes.push(format!(
        "nat: two worlds with the same container (10.251.0.2/24, default via .1) and external namespace (router 192.0.2.1 on eth0, the server 203.0.113.10 on lo, eth0 with tx checksum/TSO/GSO off as a NIC would hand over complete frames): kernel-nat is a router namespace (ip_forward=1, nftables masquerade on its external veth), vswitch-nat is vswitchd with the container on a TAP port and the uplink on an AF_XDP veth in dedicated mode (192.0.2.2, gateway 192.0.2.1). New TCP connections: this binary's client, 1 or 8 threads each connecting, sending 1 byte, reading it back and the server's close, against an accept/read/write/close server on {CONN_SERVER_THREADS} threads. Conntrack fill: one 64-byte UDP frame per flow, {FILL_FLOWS} flows (source ports {FILL_SPORTS} x destination ports {FILL_DPORTS}), dropped at the server's eth0; vswitch's table raised to {FILL_CONNTRACK_MAX} entries (--conntrack-max); RSS is the daemon's VmRSS (it includes the AF_XDP UMEMs of the uplink and every AF_XDP port, 4 MiB each)."
    ));
    bar.inc(1);
}

fn fill_vswitch(g: &mut Gathered) -> Result<(), String> {
    let t = vswitch_nat(Some(FILL_CONNTRACK_MAX))?;
    if !reachable(&t) {
        return Err("client cannot reach server".into());
    }
    let d = t.daemon().ok_or("no daemon")?;
    let (rss0, n0) = (d.rss_kib(), vswitch_entries(&t));
    let (sent, arrived, took) = fill(&t, || vswitch_entries(&t))?;
    let (rss1, n1) = (d.rss_kib(), vswitch_entries(&t));
    let peer = "vswitch-nat";
    let f = &mut g.figures;
    let mib = |kib: u64| kib as f64 / 1024.0;
    record(
        f,
        "nat",
        "daemon RSS before the fill",
        "MiB",
        false,
        peer,
        mib(rss0),
    );
    if n1 >= FILL_WANTED {
        record(
            f,
            "nat",
            "daemon RSS @1M conntrack entries",
            "MiB",
            false,
            peer,
            mib(rss1),
        );
    } else {
        g.notes.push(format!(
            "nat: vswitch-nat tracked only {n1} flows of {sent} sent ({arrived} reached the server): no RSS @1M figure (RSS then {:.0} MiB)",
            mib(rss1)
        ));
    }
    record(
        f,
        "nat",
        "conntrack entries after the fill",
        "entries",
        true,
        peer,
        n1 as f64,
    );
    if n1 > n0 {
        let per = (rss1.saturating_sub(rss0) * 1024) as f64 / (n1 - n0) as f64;
        record(
            f,
            "nat",
            "memory per conntrack entry",
            "bytes",
            false,
            peer,
            per,
        );
    }
    g.notes.push(format!(
        "nat: vswitch-nat fill: {sent} frames sent in {took:.1} s, {arrived} reached the server, {n1} flows tracked"
    ));
    Ok(())
}

fn fill_kernel(g: &mut Gathered) -> Result<(), String> {
    let t = kernel_nat()?;
    if !reachable(&t) {
        return Err("client cannot reach server".into());
    }
    let router = t.kept::<Ns>().ok_or("no router namespace")?;
    let sysctl = |name: &str| -> u64 {
        router
            .exec(&["cat", &format!("/proc/sys/net/netfilter/{name}")])
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let max = sysctl("nf_conntrack_max");
    let (slab0, n0) = (sunreclaim_kib(), sysctl("nf_conntrack_count"));
    let (sent, arrived, took) = fill(&t, || {
        let n = sysctl("nf_conntrack_count");
        // The kernel's table stops at its maximum (it evicts unreplied flows to take new ones).
        if n >= max {
            FILL_WANTED
        } else {
            n
        }
    })?;
    let (slab1, n1) = (sunreclaim_kib(), sysctl("nf_conntrack_count"));
    let peer = "kernel-nat";
    let f = &mut g.figures;
    if n1 > n0 {
        let per = (slab1.saturating_sub(slab0) * 1024) as f64 / (n1 - n0) as f64;
        record(
            f,
            "nat",
            "memory per conntrack entry",
            "bytes",
            false,
            peer,
            per,
        );
    }
    g.notes.push(format!(
        "nat: kernel-nat fill: {sent} frames sent in {took:.1} s, {arrived} reached the server, {n1} flows tracked (nf_conntrack_max is {max}, host-wide, left alone); its memory per entry is the rise of the host's unreclaimable slab (SUnreclaim) over the fill, so other activity on the machine adds noise; one nf_conntrack object is {} bytes before extensions and its hash bucket",
        conntrack_objsize().map_or("?".into(), |b| b.to_string())
    ));
    Ok(())
}
