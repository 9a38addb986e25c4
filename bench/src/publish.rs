//! The `publish` scenario: a client in the external namespace reaching a server in a container
//! through a published port — vswitch's DNAT (`vswitch-dnat`: the container's TAP port
//! published on the AF_XDP uplink in dedicated mode) against the kernel's (`kernel-dnat`: the
//! nat scenario's router namespace with an nftables `dnat` rule) — TCP (iperf3, 1 and 4
//! streams) and new TCP connections per second, side by side in each round. And the loopback
//! path, the host's own client to `127.0.0.1:PORT`: vswitch's relay (`vswitch-relay`, smoltcp
//! on the gateway's side) against a plain userspace relay of the same connection
//! (`socat-relay`, socat in the kernel world's router namespace).

use indicatif::ProgressBar;

use crate::nat::conn_rate;
use crate::peers::{kernel_dnat, socat_relay, vswitch_dnat, vswitch_relay, Topology};
use crate::report::{record, Goal, Target};
use crate::scenarios::{set_up, tcp_streams, Durations};
use crate::Gathered;

pub const PEERS: [&str; 4] = [
    "kernel-dnat",
    "vswitch-dnat",
    "socat-relay",
    "vswitch-relay",
];
const CONN_PARALLEL: [usize; 2] = [1, 8];

pub fn steps(rounds: u32) -> u64 {
    rounds as u64 * PEERS.len() as u64
}

/// The targets: DNAT TCP at 0.8 of the kernel's at least, the loopback relay at
/// socat's at least.
pub fn targets() -> Vec<Target> {
    vec![
        Target {
            scenario: "publish",
            metric: "TCP 1 stream",
            goal: Goal::RatioAtLeast {
                ours: "vswitch-dnat",
                peer: "kernel-dnat",
                min: 0.8,
            },
        },
        Target {
            scenario: "publish",
            metric: "TCP 1 stream",
            goal: Goal::RatioAtLeast {
                ours: "vswitch-relay",
                peer: "socat-relay",
                min: 1.0,
            },
        },
    ]
}

fn build(peer: &str) -> Result<Topology, String> {
    match peer {
        "kernel-dnat" => kernel_dnat(),
        "vswitch-dnat" => vswitch_dnat(),
        "socat-relay" => socat_relay(),
        "vswitch-relay" => vswitch_relay(),
        other => Err(format!("unknown publish peer {other}")),
    }
}

pub fn run_peer(peer: &str, stage: &str, d: &Durations, bar: &ProgressBar, g: &mut Gathered) {
    let Some(t) = set_up("publish", peer, stage, bar, g, build) else {
        return;
    };
    tcp_streams("publish", peer, stage, &t, d, bar, g);
    for parallel in CONN_PARALLEL {
        bar.set_message(format!(
            "{stage}: {peer}: short TCP connections, {parallel} in flight"
        ));
        match conn_rate(&t, parallel, d.conns) {
            Ok((rate, failed)) => {
                let metric = format!("new TCP connections, {parallel} in flight");
                record(
                    &mut g.figures,
                    "publish",
                    &metric,
                    "conn/s",
                    true,
                    peer,
                    rate,
                );
                let metric = format!("failed TCP connections, {parallel} in flight");
                record(
                    &mut g.figures,
                    "publish",
                    &metric,
                    "count",
                    false,
                    peer,
                    failed,
                );
            }
            Err(e) => g.notes.push(format!("publish: {peer} connections: {e}")),
        }
    }
    g.notes.push("publish: the nat scenario's two worlds turned around: the external namespace (192.0.2.1) is the client, connecting to the NAT's outside address 192.0.2.2, ports 5201 (iperf3) and 7100 (short connections) of which lead to the container 10.251.0.2; kernel-dnat is the router namespace with an nftables prerouting dnat rule, vswitch-dnat is vswitchd with those ports published (--publish P:P) on its dedicated AF_XDP uplink. The loopback peers: the client is the host itself (the router namespace, or vswitchd's) connecting to 127.0.0.1 on those ports; socat-relay runs one socat per port there (defaults: 8 KiB buffers, a process per connection), vswitch-relay is vswitchd's loopback relay.".into());
    bar.inc(1);
}
