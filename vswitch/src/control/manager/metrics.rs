//! The Prometheus text exposition (`[daemon] metrics`, `--metrics ADDR`): built on a scrape
//! from the same views `vswitchctl` shows (so a scrape says what `port stats --json` says),
//! plus the dataplane loop's statistics, the add-port latency histogram and the process's
//! memory and file descriptors.

use std::fmt::Write;

use super::{ApiResult, Manager};
use crate::api::*;

/// add-port latency buckets, in seconds.
pub const ADD_PORT_BUCKETS: [f64; 12] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

/// A Prometheus histogram with fixed buckets.
#[derive(Debug, Default, Clone)]
pub struct Histogram {
    counts: [u64; ADD_PORT_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    pub fn observe(&mut self, secs: f64) {
        for (i, b) in ADD_PORT_BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.counts[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

/// A label value, escaped as the text format wants.
fn esc(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Writes the metric family headers once and its samples.
struct Out {
    text: String,
    seen: std::collections::HashSet<String>,
}

impl Out {
    fn sample(&mut self, name: &str, kind: &str, help: &str, labels: &[(&str, &str)], v: f64) {
        if self.seen.insert(name.to_string()) {
            let _ = writeln!(self.text, "# HELP {name} {help}");
            let _ = writeln!(self.text, "# TYPE {name} {kind}");
        }
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", esc(v)))
            .collect();
        let l = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let _ = writeln!(self.text, "{name}{l} {v}");
    }

    /// Every number field of a counters struct, as `{prefix}_{field}_total` counters.
    fn counters(
        &mut self,
        prefix: &str,
        what: &str,
        labels: &[(&str, &str)],
        c: &impl serde::Serialize,
    ) {
        if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(c) {
            for (k, v) in m {
                if let Some(n) = v.as_f64() {
                    let name = format!("{prefix}_{k}_total");
                    self.sample(&name, "counter", &format!("{what}: {k}."), labels, n);
                }
            }
        }
    }
}

fn proc_status_kib(field: &str) -> Option<u64> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

impl Manager {
    pub fn metrics_text(&self) -> ApiResult<String> {
        let mut o = Out {
            text: String::with_capacity(16 << 10),
            seen: Default::default(),
        };
        if let Reply::Stats(ports) = self.port_stats(None)? {
            for p in &ports {
                let l = [("port", p.port.as_str()), ("network", p.network.as_str())];
                for (name, help, v) in [
                    (
                        "vswitch_port_rx_packets_total",
                        "Frames received from the port.",
                        p.rx_packets,
                    ),
                    (
                        "vswitch_port_rx_bytes_total",
                        "Bytes received from the port.",
                        p.rx_bytes,
                    ),
                    (
                        "vswitch_port_tx_packets_total",
                        "Frames sent to the port.",
                        p.tx_packets,
                    ),
                    (
                        "vswitch_port_tx_bytes_total",
                        "Bytes sent to the port.",
                        p.tx_bytes,
                    ),
                ] {
                    o.sample(name, "counter", help, &l, v as f64);
                }
                o.sample(
                    "vswitch_port_up",
                    "gauge",
                    "1 while the port is in service.",
                    &l,
                    f64::from(u8::from(p.status == "up")),
                );
                for (reason, n) in &p.drops {
                    o.sample(
                        "vswitch_port_drops_total",
                        "counter",
                        "Frames dropped on the port, by reason (as `vswitchctl port stats`).",
                        &[l[0], l[1], ("reason", reason.as_str())],
                        *n as f64,
                    );
                }
            }
        }
        if let Reply::Fdb(tables) = self.fdb_show(None)? {
            for t in &tables {
                let l = [("network", t.network.as_str())];
                o.sample(
                    "vswitch_fdb_entries",
                    "gauge",
                    "MACs in the network's table.",
                    &l,
                    t.entries.len() as f64,
                );
                o.sample(
                    "vswitch_fdb_limit",
                    "gauge",
                    "Most MACs the network's table holds.",
                    &l,
                    f64::from(t.limit),
                );
                o.counters("vswitch_fdb", "MAC table", &l, &t.counters);
            }
        }
        if let Reply::Arp(tables) = self.arp_show(None)? {
            for t in &tables {
                let l = [("network", t.network.as_str())];
                o.sample(
                    "vswitch_arp_neighbors",
                    "gauge",
                    "Entries in the gateway's neighbour table.",
                    &l,
                    t.neighbors.len() as f64,
                );
                o.counters("vswitch_gateway", "Gateway services", &l, &t.counters);
            }
        }
        if let Reply::Leases(leases) = self.dhcp_leases(None)? {
            let mut per: std::collections::BTreeMap<&str, u64> = Default::default();
            for n in &self.state.networks {
                per.insert(n.name.as_str(), 0);
            }
            for l in &leases {
                *per.entry(l.network.as_str()).or_default() += 1;
            }
            for (net, n) in per {
                o.sample(
                    "vswitch_dhcp_leases",
                    "gauge",
                    "Active DHCP leases.",
                    &[("network", net)],
                    n as f64,
                );
            }
        }
        if let Ok(Reply::ConntrackStats(c)) = self.conntrack_stats() {
            o.sample(
                "vswitch_conntrack_entries",
                "gauge",
                "Flows tracked for NAT.",
                &[],
                c.entries as f64,
            );
            o.sample(
                "vswitch_conntrack_max",
                "gauge",
                "Most flows the table holds.",
                &[],
                c.max as f64,
            );
            o.counters("vswitch_conntrack", "Connection tracking", &[], &c.counters);
        }
        if let Some(d) = self.dns_info() {
            for (k, v) in [
                ("forwarded", d.forwarded),
                ("answered", d.answered),
                ("servfail", d.servfail),
                ("dropped", d.dropped),
            ] {
                o.sample(
                    &format!("vswitch_dns_upstream_{k}_total"),
                    "counter",
                    &format!("DNS queries for upstream resolvers: {k}."),
                    &[],
                    v as f64,
                );
            }
        }
        let snap = self.snapshot()?;
        let ls = snap.loop_stats;
        for (k, help, v) in [
            (
                "rounds",
                "Rounds of the dataplane loop (a poll each).",
                ls.rounds,
            ),
            (
                "busy_polls",
                "Rounds that polled without waiting (busy-polling or work queued).",
                ls.busy_polls,
            ),
            (
                "empty_polls",
                "Busy-polling rounds that found no work.",
                ls.empty_polls,
            ),
            (
                "sleeps",
                "Rounds that slept until a port was readable.",
                ls.sleeps,
            ),
            ("batches", "Batches of frames read from ports.", ls.batches),
            ("frames", "Frames read from ports.", ls.frames),
            (
                "damped",
                "Times a port was damped (read a batch a millisecond at most) for abusive floods.",
                ls.damped,
            ),
        ] {
            o.sample(
                &format!("vswitch_dataplane_{k}_total"),
                "counter",
                help,
                &[],
                v as f64,
            );
        }
        o.sample(
            "vswitch_dataplane_busy_poll_ratio",
            "gauge",
            "Share of the loop's rounds that busy-polled (since start).",
            &[],
            if ls.rounds > 0 {
                ls.busy_polls as f64 / ls.rounds as f64
            } else {
                0.0
            },
        );
        o.sample(
            "vswitch_ports_lost_total",
            "counter",
            "Ports taken down because their interface or namespace vanished.",
            &[],
            snap.ports_lost as f64,
        );
        let h = &self.add_port_hist;
        let name = "vswitch_add_port_duration_seconds";
        let _ = writeln!(
            o.text,
            "# HELP {name} How long add-port requests took (validate, attach, save)."
        );
        let _ = writeln!(o.text, "# TYPE {name} histogram");
        for (b, n) in ADD_PORT_BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(o.text, "{name}_bucket{{le=\"{b}\"}} {n}");
        }
        let _ = writeln!(o.text, "{name}_bucket{{le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(o.text, "{name}_sum {}", h.sum);
        let _ = writeln!(o.text, "{name}_count {}", h.count);
        if let Some(kib) = proc_status_kib("VmRSS:") {
            o.sample(
                "vswitch_process_resident_memory_bytes",
                "gauge",
                "vswitchd's resident memory.",
                &[],
                (kib * 1024) as f64,
            );
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            o.sample(
                "vswitch_process_open_fds",
                "gauge",
                "vswitchd's open file descriptors.",
                &[],
                fds.count() as f64,
            );
        }
        o.sample(
            "vswitch_uptime_seconds",
            "gauge",
            "Since vswitchd started.",
            &[],
            self.started.elapsed().as_secs_f64(),
        );
        o.sample(
            "vswitch_info",
            "gauge",
            "vswitchd's version and control protocol.",
            &[
                ("version", env!("CARGO_PKG_VERSION")),
                ("protocol", &PROTOCOL_VERSION.to_string()),
            ],
            1.0,
        );
        Ok(o.text)
    }
}
