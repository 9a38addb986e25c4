//! `vswitch-bench --soak MINUTES`: vswitchd under mixed traffic and port churn for a while,
//! its RSS and open fds sampled; both must stay flat. Traffic: iperf3 TCP client→server in
//! back-to-back 10-second runs (at 2 Gbit/s, leaving CPU for the rest), a DNS query to the
//! gateway every 100 ms, and a ping every 100 ms; churn: a port added to one of four
//! namespaces and the previous one deleted, as fast as the control socket answers. The
//! report (`soak.md`, `soak.json`, `soak.svg` in `--out`) gives each series' first and last
//! values and its least-squares slope over the whole run and over its second half (after
//! warm-up: allocators and tables settle first).

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use vswitch::api::{Op, PortAdd};

use crate::peers::vswitch_topology;
use crate::sandbox::{prefix, Ns};

/// RSS may grow at most this much a minute over the second half to count as flat.
const RSS_FLAT_KIB_PER_MIN: f64 = 64.0;
/// Open fds may drift at most this much a minute over the second half.
const FDS_FLAT_PER_MIN: f64 = 0.5;

struct Sample {
    secs: f64,
    rss_kib: u64,
    fds: u64,
}

/// Runs a command in the namespace `ns` (owned elsewhere): its stdout when it succeeds.
fn exec_in(ns: &str, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Least-squares slope of `y` against `x` (per unit of x).
fn slope(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if n < 2.0 {
        return 0.0;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let num: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let den: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

pub fn run(minutes: f64, out: &Path) -> Result<(), String> {
    let t = vswitch_topology("tap")?;
    let dm = t.daemon().ok_or("no daemon")?;
    let pid = dm.pid();
    let churn: Vec<Ns> = (0..4)
        .map(|i| Ns::new(format!("{}k{i}", prefix())))
        .collect::<Result<_, _>>()?;
    let total = Duration::from_secs_f64(minutes * 60.0);
    let start = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    let gbits = Arc::new(AtomicU64::new(0));
    {
        // iperf3 in back-to-back runs, each with a server of its own (`-1`) and a deadline:
        // back to back against one long-lived server, an iperf3 3.12 client was seen to hang
        // for good on its control connection, with the path between them fine.
        let (client, server, ip, stop, gbits) = (
            t.client.0.clone(),
            t.server.0.clone(),
            t.server_ip,
            stop.clone(),
            gbits.clone(),
        );
        workers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let srv = std::process::Command::new("ip")
                    .args(["netns", "exec", &server, "iperf3", "-s", "-1", "-p", "5201"])
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn();
                std::thread::sleep(Duration::from_millis(200));
                let run = exec_in(
                    &client,
                    &[
                        "timeout", "30", "iperf3", "-c", ip, "-p", "5201", "-t", "10", "-b", "2G",
                        "--json",
                    ],
                );
                if let Ok(mut s) = srv {
                    let _ = s.kill();
                    let _ = s.wait();
                }
                if let Some(out) = run {
                    if let Ok(v) = serde_json::from_str::<serde_json::Value>(&out) {
                        let bytes = v["end"]["sum_received"]["bytes"].as_f64().unwrap_or(0.0);
                        gbits.fetch_add((bytes * 8.0 / 1e9) as u64, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    {
        // A DNS query and a ping every 100 ms.
        let (client, ip, stop) = (t.client.0.clone(), t.server_ip, stop.clone());
        workers.push(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = exec_in(
                    &client,
                    &[
                        "dig",
                        "+short",
                        "+time=1",
                        "+tries=1",
                        "@10.250.0.254",
                        "server.bench.vswitch",
                    ],
                );
                let _ = exec_in(&client, &["ping", "-c", "1", "-W", "1", ip]);
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    // Port churn on this thread's side: add one, delete the one before.
    let churned = Arc::new(AtomicU64::new(0));
    {
        let (socket, stop, churned) = (dm.socket.clone(), stop.clone(), churned.clone());
        let names: Vec<String> = churn.iter().map(|n| n.0.clone()).collect();
        workers.push(std::thread::spawn(move || {
            let call = |op: Op| {
                vswitch::api::Client::connect(&socket)
                    .map_err(|e| e.to_string())
                    .and_then(|mut c| c.call(op).map_err(|e| e.to_string()))
            };
            let mut prev: Option<String> = None;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("soak{i}");
                let added = call(Op::PortAdd(PortAdd {
                    network: "bench".into(),
                    netns: names[(i % names.len() as u64) as usize].clone(),
                    ifname: Some(format!("s{}", i % 1000)),
                    name: Some(name.clone()),
                    ..Default::default()
                }));
                if let Some(p) = prev.take() {
                    let _ = call(Op::PortDelete { name: p });
                }
                if added.is_ok() {
                    prev = Some(name);
                    churned.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
            if let Some(p) = prev {
                let _ = call(Op::PortDelete { name: p });
            }
        }));
    }
    let every = Duration::from_secs_f64((minutes * 60.0 / 120.0).max(2.0));
    let mut samples = Vec::new();
    while start.elapsed() < total {
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        samples.push(Sample {
            secs: start.elapsed().as_secs_f64(),
            rss_kib: dm.rss_kib(),
            fds,
        });
        eprint!(
            "\rsoak: {:>5.1}/{minutes} min, RSS {} KiB, {} fds, {} ports churned   ",
            start.elapsed().as_secs_f64() / 60.0,
            samples.last().unwrap().rss_kib,
            fds,
            churned.load(Ordering::Relaxed)
        );
        std::thread::sleep(every);
    }
    eprintln!();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let _ = w.join();
    }
    report(
        &samples,
        minutes,
        churned.load(Ordering::Relaxed),
        gbits.load(Ordering::Relaxed),
        out,
    )
}

fn report(s: &[Sample], minutes: f64, churned: u64, gbits: u64, out: &Path) -> Result<(), String> {
    let rss: Vec<(f64, f64)> = s
        .iter()
        .map(|x| (x.secs / 60.0, x.rss_kib as f64))
        .collect();
    let fds: Vec<(f64, f64)> = s.iter().map(|x| (x.secs / 60.0, x.fds as f64)).collect();
    let half = s.len() / 2;
    let (rss_all, rss_late) = (slope(&rss), slope(&rss[half..]));
    let (fds_all, fds_late) = (slope(&fds), slope(&fds[half..]));
    let flat_rss = rss_late <= RSS_FLAT_KIB_PER_MIN;
    let flat_fds = fds_late.abs() <= FDS_FLAT_PER_MIN;
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let first = s.first().ok_or("no samples")?;
    let last = s.last().ok_or("no samples")?;
    let md = format!(
        "# vswitch-bench soak\n\n{minutes} minutes of mixed traffic (iperf3 TCP at 2 Gbit/s in 10-second runs: {gbits} Gbit in all; a DNS query and a ping every 100 ms) and port churn ({churned} ports added and deleted), {} samples.\n\n\
| series | first | last | slope, whole run | slope, second half | flat (second half) |\n|---|---|---|---|---|---|\n\
| RSS | {} KiB | {} KiB | {rss_all:.1} KiB/min | {rss_late:.1} KiB/min | {} (≤ {RSS_FLAT_KIB_PER_MIN} KiB/min) |\n\
| open fds | {} | {} | {fds_all:.2}/min | {fds_late:.2}/min | {} (≤ {FDS_FLAT_PER_MIN}/min either way) |\n",
        s.len(),
        first.rss_kib,
        last.rss_kib,
        if flat_rss { "yes" } else { "no" },
        first.fds,
        last.fds,
        if flat_fds { "yes" } else { "no" },
    );
    std::fs::write(out.join("soak.md"), &md).map_err(|e| e.to_string())?;
    let j = json!({
        "minutes": minutes, "ports_churned": churned, "iperf_gbit": gbits,
        "samples": s.iter().map(|x| json!({"secs": x.secs, "rss_kib": x.rss_kib, "fds": x.fds})).collect::<Vec<_>>(),
        "rss_slope_kib_per_min": {"all": rss_all, "second_half": rss_late},
        "fds_slope_per_min": {"all": fds_all, "second_half": fds_late},
        "flat": {"rss": flat_rss, "fds": flat_fds},
    });
    std::fs::write(out.join("soak.json"), j.to_string()).map_err(|e| e.to_string())?;
    plot(s, &out.join("soak.svg"))?;
    print!("{md}");
    Ok(())
}

fn plot(s: &[Sample], path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let (left, right) = root.split_horizontally(450);
    let xmax = s.last().map_or(1.0, |x| x.secs / 60.0).max(0.1);
    for (area, name, values, color) in [
        (
            &left,
            "vswitchd RSS (MiB)",
            s.iter()
                .map(|x| (x.secs / 60.0, x.rss_kib as f64 / 1024.0))
                .collect::<Vec<_>>(),
            RGBColor(70, 130, 180),
        ),
        (
            &right,
            "vswitchd open fds",
            s.iter()
                .map(|x| (x.secs / 60.0, x.fds as f64))
                .collect::<Vec<_>>(),
            RGBColor(220, 90, 40),
        ),
    ] {
        let ymax = values.iter().map(|v| v.1).fold(1.0f64, f64::max) * 1.2;
        let mut chart = ChartBuilder::on(area)
            .caption(name, ("sans-serif", 16))
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("minutes")
            .draw()
            .map_err(|e| e.to_string())?;
        chart
            .draw_series(LineSeries::new(values, &color))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn slopes() {
        assert_eq!(super::slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 5.0)]), 2.0);
        assert_eq!(super::slope(&[(0.0, 7.0), (1.0, 7.0)]), 0.0);
        assert_eq!(super::slope(&[(0.0, 7.0)]), 0.0);
    }
}
