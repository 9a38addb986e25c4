//! vswitch-bench: builds each topology in fresh network namespaces and measures every peer side
//! by side in one invocation — the Linux bridge, Open vSwitch's userspace datapath (when
//! installed) and vswitch with TAP ports — then prints a table of every figure with its ratio to
//! the bridge and to OVS, and writes JSON, Markdown and an SVG plot.
//!
//! Timings are only ever compared within one run: this machine is noisy.
//!
//! This file holds the command line and the order of a run (rounds, peers taking turns — the
//! nat scenario's own two peers after them — then the scale scenario and the nat scenario's
//! conntrack fill, then the report). The rest, by concern: `peers/` builds each peer's topology
//! (one file per peer), `scenarios.rs` measures, `nat.rs` is the nat scenario (vswitch's NAT
//! against the kernel's), `publish.rs` the publish scenario (DNAT), `report.rs` gathers the figures and writes the results, `sandbox.rs`
//! has the namespaces, processes and temporary directories, `tools.rs` the helper subcommands
//! run inside the namespaces, and `sys.rs` the generator's syscalls.

mod capture;
mod cluster;
mod flood;
mod macvlan;
mod nat;
mod peers;
mod publish;
mod report;
mod sandbox;
mod scenarios;
mod soak;
mod sys;
mod tools;
mod vxlan;

use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use peers::{bridge, ovs, ovs_afxdp, tap_copy_topology, vswitch_topology};
use report::{machine, record, report, Figure};
use sandbox::wait_for;
use scenarios::{iperf, latency, mac_scale, pps, scale, scale_counts, Durations, Sink};
use tools::{
    conn_client, conn_server, flow_flood, mac_flood, port_range, pps_recv, tap_copy, udp_echo,
    udp_ping,
};

#[derive(Parser)]
#[command(
    name = "vswitch-bench",
    about = "Measure vswitch against the Linux bridge and OVS"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    /// Short runs (the whole suite in under 3 minutes).
    #[arg(long, global = true)]
    quick: bool,
    /// Scenarios to run: throughput, latency, pps, macs, scale, nat (a container to an external
    /// server through NAT: vswitch's against the kernel's, with peers of its own, kernel-nat and
    /// vswitch-nat, whatever --peers says), publish (an external client to a container's
    /// published port: kernel-dnat against vswitch-dnat; the host itself to 127.0.0.1:
    /// socat-relay against vswitch-relay), capture (64-byte forwarding with a live capture
    /// running, stalled or read, against none), flood (one container floods
    /// random MACs, DNS or ARP while its neighbours run iperf3, against no flood), macvlan (a
    /// container on a parent's segment: kernel-macvlan against vswitch-macvlan and
    /// vswitch-ipvlan), vxlan (a container on each of two hosts on one overlay: the kernel's
    /// vxlan and bridge against vswitch's overlay, and encrypted: wireguard-go with the kernel's
    /// vxlan against vswitch's --encrypted), cluster (add-port with an etcd store, and how soon
    /// the other host has the entry, against no store).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,latency,pps,macs,scale,nat,publish,capture,flood,macvlan,vxlan,cluster"
    )]
    scenarios: Vec<String>,
    /// Peers of the traffic scenarios: bridge, ovs, tap-copy (the TAP-to-TAP copy loop: the
    /// ceiling for TAP ports), vswitch-tap, vswitch-afxdp.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bridge,ovs,tap-copy,vswitch-tap,vswitch-afxdp"
    )]
    peers: Vec<String>,
    /// Rounds: each builds every peer afresh and runs its traffic scenarios, peers taking turns,
    /// so a slow spell of the machine hits them all; a figure is the median of its rounds.
    /// [default: 3, or 1 with --quick]
    #[arg(long)]
    rounds: Option<u32>,
    /// Where results.json, results.md and results.svg go.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Instead of the scenarios: MINUTES of mixed traffic and port churn, vswitchd's RSS and
    /// open fds sampled; soak.md, soak.json and soak.svg (both series and their slopes) go in
    /// --out.
    #[arg(long, value_name = "MINUTES")]
    soak: Option<f64>,
}

#[derive(Subcommand)]
enum Cmd {
    /// (helper) UDP echo server on `bind` (an address of the server's: replies leave from the
    /// address the requests came to, which a NAT matches them by).
    #[command(hide = true)]
    UdpEcho { bind: String, port: u16, secs: u64 },
    /// (helper) UDP ping-pong client: prints RTT percentiles in µs as JSON.
    #[command(hide = true)]
    UdpPing { target: String, count: usize },
    /// (helper) counts datagrams for `secs` seconds.
    #[command(hide = true)]
    PpsRecv { port: u16, secs: f64 },
    /// (helper) the TAP-to-TAP copy loop: a TAP `eth0` with offloads in each namespace, one
    /// thread per direction copying frames with blocking read/write. Prints "ready".
    #[command(hide = true)]
    TapCopy { client: String, server: String },
    /// (helper) sends 64-byte UDP frames from `macs` different source MACs (or all from
    /// `--src-mac`) out of `ifname` through AF_PACKET, as fast as it can.
    #[command(hide = true)]
    MacFlood {
        #[arg(long)]
        src_mac: Option<String>,
        ifname: String,
        dst_mac: String,
        src_ip: String,
        dst_ip: String,
        port: u16,
        macs: u32,
        secs: f64,
    },
    /// (helper) the flood scenario's attacker: random MACs, DNS queries or ARP requests out
    /// of `ifname` as fast as it can.
    #[command(hide = true)]
    GwFlood {
        kind: tools::FloodKind,
        ifname: String,
        src_mac: String,
        src_ip: String,
        gw_mac: String,
        gw_ip: String,
        secs: f64,
    },
    /// (helper) sends one 64-byte UDP frame per (source port, destination port) of the ranges
    /// (LO-HI) out of `ifname` through AF_PACKET: a new flow each, for a NAT's conntrack.
    #[command(hide = true)]
    FlowFlood {
        ifname: String,
        src_mac: String,
        dst_mac: String,
        src_ip: String,
        dst_ip: String,
        sports: String,
        dports: String,
    },
    /// (helper) short-connection server: accept, read 1 byte, write it back, close.
    #[command(hide = true)]
    ConnServer {
        port: u16,
        secs: f64,
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// (helper) short-connection client: `parallel` threads connecting to `target`, 1 byte
    /// each way, then closing, for `secs`; prints the connections made as JSON.
    #[command(hide = true)]
    ConnClient {
        target: String,
        parallel: usize,
        secs: f64,
    },
}

/// Runs one of the hidden helper subcommands the harness starts (most inside a namespace).
fn helper(cmd: Cmd) {
    match cmd {
        Cmd::UdpEcho { bind, port, secs } => udp_echo(&bind, port, secs),
        Cmd::UdpPing { target, count } => udp_ping(&target, count),
        Cmd::PpsRecv { port, secs } => pps_recv(port, secs),
        Cmd::TapCopy { client, server } => tap_copy(&client, &server),
        Cmd::MacFlood {
            src_mac,
            ifname,
            dst_mac,
            src_ip,
            dst_ip,
            port,
            macs,
            secs,
        } => mac_flood(
            src_mac.as_deref(),
            &ifname,
            &dst_mac,
            &src_ip,
            &dst_ip,
            port,
            macs,
            secs,
        ),
        Cmd::GwFlood {
            kind,
            ifname,
            src_mac,
            src_ip,
            gw_mac,
            gw_ip,
            secs,
        } => tools::gw_flood(kind, &ifname, &src_mac, &src_ip, &gw_mac, &gw_ip, secs),
        Cmd::FlowFlood {
            ifname,
            src_mac,
            dst_mac,
            src_ip,
            dst_ip,
            sports,
            dports,
        } => flow_flood(
            &ifname,
            &src_mac,
            &dst_mac,
            &src_ip,
            &dst_ip,
            port_range(&sports),
            port_range(&dports),
        ),
        Cmd::ConnServer {
            port,
            secs,
            threads,
        } => conn_server(port, secs, threads),
        Cmd::ConnClient {
            target,
            parallel,
            secs,
        } => conn_client(&target, parallel, secs),
    }
}

/// What the rounds gather: the figures, the notes, and the peers that came up.
#[derive(Default)]
struct Gathered {
    figures: Vec<Figure>,
    notes: Vec<String>,
    peers_run: Vec<String>,
}

fn main() {
    let cli = Cli::parse();
    if let Some(cmd) = cli.cmd {
        return helper(cmd);
    }
    sandbox::clean_up_on_signal();
    if let Some(minutes) = cli.soak {
        if let Err(e) = soak::run(minutes, &cli.out) {
            eprintln!("vswitch-bench: soak: {e}");
            std::process::exit(1);
        }
        return;
    }
    let d = if cli.quick {
        Durations {
            iperf: 4,
            pps: 3.0,
            pings: 3000,
            conns: 3.0,
        }
    } else {
        Durations {
            iperf: 8,
            pps: 5.0,
            pings: 10000,
            conns: 5.0,
        }
    };
    let want = |s: &str| cli.scenarios.iter().any(|x| x == s);
    let traffic = ["throughput", "latency", "pps", "macs"]
        .iter()
        .filter(|s| want(s))
        .count() as u64;
    let rounds = cli.rounds.unwrap_or(if cli.quick { 1 } else { 3 }).max(1);
    let steps = rounds as u64 * cli.peers.len() as u64 * traffic
        + if want("nat") { nat::steps(rounds) } else { 0 }
        + if want("publish") {
            publish::steps(rounds)
        } else {
            0
        }
        + if want("capture") {
            capture::steps(rounds)
        } else {
            0
        }
        + if want("flood") {
            flood::steps(rounds)
        } else {
            0
        }
        + if want("macvlan") {
            macvlan::steps(rounds)
        } else {
            0
        }
        + if want("vxlan") {
            vxlan::steps(rounds)
        } else {
            0
        }
        + if want("cluster") {
            cluster::steps(rounds)
        } else {
            0
        }
        + if want("scale") {
            ["tap", "afxdp"]
                .iter()
                .filter(|t| cli.peers.iter().any(|p| *p == format!("vswitch-{t}")))
                .map(|t| scale_counts(cli.quick, t).len() as u64)
                .sum()
        } else {
            0
        };
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}").unwrap(),
    );
    let mut gathered = Gathered::default();
    for round in 1..=rounds {
        let stage = format!("round {round}/{rounds}");
        if traffic > 0 {
            for peer in &cli.peers {
                run_peer(peer, &stage, &d, &want, traffic, &bar, &mut gathered);
            }
        }
        if want("nat") {
            for peer in nat::PEERS {
                nat::run_peer(peer, &stage, &d, &bar, &mut gathered);
            }
        }
        if want("publish") {
            for peer in publish::PEERS {
                publish::run_peer(peer, &stage, &d, &bar, &mut gathered);
            }
        }
        if want("capture") {
            for peer in capture::PEERS {
                capture::run_peer(peer, &stage, &d, &bar, &mut gathered);
            }
        }
        if want("flood") {
            for peer in flood::PEERS {
                flood::run_peer(peer, &stage, &d, &bar, &mut gathered);
            }
        }
        if want("macvlan") {
            for peer in macvlan::PEERS {
                macvlan::run_peer(peer, &stage, &d, &bar, &mut gathered);
            }
        }
        if want("vxlan") {
            for peer in vxlan::PEERS {
                vxlan::run_peer(peer, &stage, &d, &bar, &mut gathered);
            }
        }
        if want("cluster") {
            for peer in cluster::PEERS {
                cluster::run_peer(peer, &stage, &bar, &mut gathered);
            }
        }
    }
    if want("pps") || want("macs") {
        gathered.notes.push("pps, macs: the generator sends 64-byte frames with sendmmsg on an AF_PACKET socket that bypasses the qdisc; \"forwarded\" counts them at the server's interface (an nftables ingress rule counts and drops them), so it measures the switch (with AF_XDP ports, the veth's XDP receive into the switch runs on the generator's CPU, inside its sendmmsg: on 2 CPUs that figure is bounded by both CPUs together); \"into a socket\" counts what a receiver process reads with recvmmsg, which on 2 CPUs competes with the generator and a userspace switch for the CPUs; \"loss\" is frames the generator handed over that never arrived (a full TAP or veth XDP queue refuses frames with ENOBUFS instead, which slows the generator and is not loss)".into());
    }
    if want("scale") {
        run_scale(cli.quick, &cli.peers, &bar, &mut gathered);
    }
    if want("nat") {
        nat::run_fill(&bar, &mut gathered);
    }
    bar.finish_and_clear();
    let mut seen = std::collections::HashSet::new();
    gathered.notes.retain(|n| seen.insert(n.clone()));
    let _ = std::io::stdout().flush();
    if let Err(e) = report(
        &gathered.figures,
        &gathered.peers_run,
        &[
            nat::targets(),
            publish::targets(),
            capture::targets(),
            flood::targets(),
            vxlan::targets(),
            cluster::targets(),
        ]
        .concat(),
        &gathered.notes,
        &machine(),
        cli.quick,
        &cli.out,
        rounds,
    ) {
        eprintln!("vswitch-bench: {e}");
        std::process::exit(1);
    }
}

/// One peer's turn in a round: builds its topology afresh, runs the wanted traffic scenarios on
/// it and tears it down. `stage` ("round 1/3") starts every progress message.
fn run_peer(
    peer: &str,
    stage: &str,
    d: &Durations,
    want: &impl Fn(&str) -> bool,
    traffic: u64,
    bar: &ProgressBar,
    gathered: &mut Gathered,
) {
    bar.set_message(format!("{stage}: {peer}: setting up"));
    let topo = match peer {
        "bridge" => bridge(),
        "ovs" => ovs(),
        "ovs-afxdp" => ovs_afxdp(),
        "tap-copy" => tap_copy_topology(),
        "vswitch-tap" => vswitch_topology("tap"),
        "vswitch-afxdp" => vswitch_topology("afxdp"),
        other => Err(format!("unknown peer {other}")),
    };
    let topo = match topo {
        Ok(t) => t,
        Err(e) => {
            gathered.notes.push(format!("{peer} skipped: {e}"));
            bar.inc(traffic);
            return;
        }
    };
    if !gathered.peers_run.iter().any(|p| p == peer) {
        gathered.peers_run.push(peer.to_string());
    }
    if !wait_for(10, || {
        topo.client
            .exec(&["ping", "-c", "1", "-W", "1", topo.server_ip])
            .is_ok()
    }) {
        gathered
            .notes
            .push(format!("{peer}: client cannot reach server; skipped"));
        bar.inc(traffic);
        return;
    }
    if want("throughput") {
        for streams in [1, 4] {
            bar.set_message(format!("{stage}: {peer}: TCP x{streams}"));
            match iperf(&topo, streams, d.iperf) {
                Ok(g) => record(
                    &mut gathered.figures,
                    "throughput",
                    &format!("TCP {streams} stream{}", if streams > 1 { "s" } else { "" }),
                    "Gbit/s",
                    true,
                    peer,
                    g,
                ),
                Err(e) => gathered.notes.push(format!("{peer} TCP x{streams}: {e}")),
            }
        }
        bar.inc(1);
    }
    if want("latency") {
        bar.set_message(format!("{stage}: {peer}: UDP ping-pong"));
        match latency(&topo, d.pings) {
            Ok(v) => {
                for (k, name) in [
                    ("p50", "RTT p50"),
                    ("p99", "RTT p99"),
                    ("p999", "RTT p99.9"),
                ] {
                    record(
                        &mut gathered.figures,
                        "latency",
                        name,
                        "µs",
                        false,
                        peer,
                        v[k].as_f64().unwrap_or(f64::NAN),
                    );
                }
            }
            Err(e) => gathered.notes.push(format!("{peer} latency: {e}")),
        }
        bar.inc(1);
    }
    if want("pps") {
        bar.set_message(format!("{stage}: {peer}: 64-byte UDP"));
        match pps(&topo, d.pps, Sink::Interface) {
            Ok((kpps, loss)) => {
                record(
                    &mut gathered.figures,
                    "pps",
                    "64B UDP forwarded",
                    "kpps",
                    true,
                    peer,
                    kpps,
                );
                record(
                    &mut gathered.figures,
                    "pps",
                    "64B UDP loss",
                    "%",
                    false,
                    peer,
                    loss,
                );
            }
            Err(e) => gathered.notes.push(format!("{peer} pps: {e}")),
        }
        bar.set_message(format!("{stage}: {peer}: 64-byte UDP into a socket"));
        match pps(&topo, d.pps, Sink::Socket) {
            Ok((kpps, _)) => record(
                &mut gathered.figures,
                "pps",
                "64B UDP into a socket",
                "kpps",
                true,
                peer,
                kpps,
            ),
            Err(e) => gathered.notes.push(format!("{peer} pps (socket): {e}")),
        }
        bar.inc(1);
    }
    if want("macs") {
        bar.set_message(format!("{stage}: {peer}: 100 000 source MACs"));
        match mac_scale(&topo, d.pps, 100_000) {
            Ok((kpps, loss)) => {
                record(
                    &mut gathered.figures,
                    "macs",
                    "64B UDP from 100k MACs",
                    "kpps",
                    true,
                    peer,
                    kpps,
                );
                record(
                    &mut gathered.figures,
                    "macs",
                    "64B UDP from 100k MACs loss",
                    "%",
                    false,
                    peer,
                    loss,
                );
            }
            Err(e) => gathered.notes.push(format!("{peer} macs: {e}")),
        }
        bar.inc(1);
    }
    drop(topo);
}

/// The scale scenario, for each vswitch port type among the peers.
fn run_scale(quick: bool, peers: &[String], bar: &ProgressBar, gathered: &mut Gathered) {
    for port_type in ["tap", "afxdp"] {
        let peer = format!("vswitch-{port_type}");
        if !peers.contains(&peer) {
            continue;
        }
        if !gathered.peers_run.contains(&peer) {
            gathered.peers_run.push(peer);
        }
        if let Err(e) = scale(quick, port_type, &mut gathered.figures, bar) {
            gathered.notes.push(format!("scale ({port_type}): {e}"));
        }
    }
    gathered.notes.push("scale: vswitch only, one namespace per port (add-port through the API, timed per call; the peers have no comparable call); AF_XDP ports' frames from the daemon's shared pool (its chunks counted in RSS)".into());
}
