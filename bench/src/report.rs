//! Results: figures gathered round by round (each the median of its rounds), the machine they
//! were measured on, and the report — a table on stdout, `results.json`, `results.md` and the
//! `results.svg` plot.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sandbox::run;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Figure {
    scenario: String,
    metric: String,
    unit: String,
    higher_is_better: bool,
    /// peer -> value
    values: BTreeMap<String, f64>,
    /// peer -> the value of each round (`values` holds their median)
    #[serde(default)]
    samples: BTreeMap<String, Vec<f64>>,
    #[serde(default)]
    notes: Vec<String>,
}

/// Adds one round's `v` for `peer` to the figure `scenario`/`metric`, creating it if new.
#[allow(clippy::too_many_arguments)]
pub fn record(
    figures: &mut Vec<Figure>,
    scenario: &str,
    metric: &str,
    unit: &str,
    higher_is_better: bool,
    peer: &str,
    v: f64,
) {
    let i = match figures
        .iter()
        .position(|f| f.scenario == scenario && f.metric == metric)
    {
        Some(i) => i,
        None => {
            figures.push(Figure {
                scenario: scenario.into(),
                metric: metric.into(),
                unit: unit.into(),
                higher_is_better,
                values: BTreeMap::new(),
                samples: BTreeMap::new(),
                notes: vec![],
            });
            figures.len() - 1
        }
    };
    let f = &mut figures[i];
    let samples = f.samples.entry(peer.to_string()).or_default();
    samples.push(v);
    f.values.insert(peer.to_string(), median(samples));
}

fn median(v: &[f64]) -> f64 {
    let mut v: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

pub fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("0").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb / 1024 / 1024)
        .unwrap_or(0);
    // The checkout the harness (and the vswitchd beside it, built with it) came from:
    // target/release/vswitch-bench → the workspace root.
    let commit = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .and_then(|root| {
            run(
                "git",
                &[
                    "-C",
                    &root.to_string_lossy(),
                    "describe",
                    "--always",
                    "--dirty",
                    "--abbrev=7",
                ],
            )
            .ok()
        })
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty());
    serde_json::json!({
        "commit": commit,
        "kernel": run("uname", &["-r"]).unwrap_or_default().trim(),
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu_model": cpu,
        "memory_gib": mem,
    })
}

fn fmt_value(v: Option<&f64>) -> String {
    match v {
        Some(v) if v.is_finite() => {
            if v.abs() >= 100.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        }
        _ => "-".into(),
    }
}

/// Our peers, each compared with the bridge and OVS.
const OURS: [&str; 2] = ["vswitch-tap", "vswitch-afxdp"];

fn ratio(f: &Figure, ours: &str, peer: &str) -> Option<f64> {
    let ours = f.values.get(ours)?;
    let theirs = f.values.get(peer)?;
    (*theirs != 0.0).then(|| ours / theirs)
}

pub fn report(
    figures: &[Figure],
    peers: &[String],
    notes: &[String],
    machine: &Value,
    quick: bool,
    out: &Path,
    rounds: u32,
) -> Result<(), String> {
    let mut md = String::new();
    md.push_str(&format!(
        "# vswitch-bench results\n\nMachine: {} CPUs ({}), {} GiB, kernel {}. vswitch at commit {}. Mode: {}, {} round{} (each figure is the median of its rounds; the peers take turns within a round).\n\n",
        machine["cpus"],
        machine["cpu_model"].as_str().unwrap_or("?"),
        machine["memory_gib"],
        machine["kernel"].as_str().unwrap_or("?"),
        machine["commit"].as_str().unwrap_or("unknown"),
        if quick { "--quick" } else { "full" },
        rounds,
        if rounds == 1 { "" } else { "s" }
    ));
    md.push_str("Ratios are vswitch (tap or afxdp ports) / peer, from this one run (for latency, loss and time, lower is better).\n\n");
    let mut header = vec!["scenario".to_string(), "figure".into(), "unit".into()];
    header.extend(peers.iter().cloned());
    let pairs: Vec<(&str, &str)> = OURS
        .iter()
        .filter(|o| peers.iter().any(|p| p == *o))
        .flat_map(|o| {
            ["bridge", "ovs"]
                .into_iter()
                .filter(|p| peers.iter().any(|q| q == p))
                .map(move |p| (*o, p))
        })
        .chain(
            (peers.iter().any(|p| p == "vswitch-tap") && peers.iter().any(|p| p == "tap-copy"))
                .then_some(("vswitch-tap", "tap-copy")),
        )
        .collect();
    header.extend(
        pairs
            .iter()
            .map(|(o, p)| format!("{} vs {p}", o.trim_start_matches("vswitch-"))),
    );
    md.push_str(&format!(
        "| {} |\n|{}\n",
        header.join(" | "),
        "---|".repeat(header.len())
    ));
    let mut rows = Vec::new();
    for f in figures {
        let mut row = vec![f.scenario.clone(), f.metric.clone(), f.unit.clone()];
        for p in peers {
            row.push(fmt_value(f.values.get(p)));
        }
        for (o, p) in &pairs {
            row.push(
                ratio(f, o, p)
                    .map(|r| format!("{r:.2}x"))
                    .unwrap_or_else(|| "-".into()),
            );
        }
        md.push_str(&format!("| {} |\n", row.join(" | ")));
        rows.push(row);
    }
    if !notes.is_empty() {
        md.push_str("\nNotes:\n");
        for n in notes {
            md.push_str(&format!("- {n}\n"));
        }
    }
    // Plain table on stdout.
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].len())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    println!("{}", line(&header));
    for r in &rows {
        println!("{}", line(r));
    }
    for n in notes {
        println!("note: {n}");
    }
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let json = serde_json::json!({ "machine": machine, "quick": quick, "rounds": rounds, "peers": peers, "figures": figures, "notes": notes });
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .map_err(|e| e.to_string())?;
    std::fs::write(out.join("results.md"), md).map_err(|e| e.to_string())?;
    plot(figures, peers, &out.join("results.svg"))?;
    println!("results: {}", out.display());
    Ok(())
}

/// Grouped bars: every peer's value relative to the Linux bridge (1.0), per figure.
fn plot(figures: &[Figure], peers: &[String], path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let figs: Vec<&Figure> = figures
        .iter()
        .filter(|f| f.values.contains_key("bridge"))
        .collect();
    if figs.is_empty() {
        return Ok(());
    }
    let max = figs
        .iter()
        .flat_map(|f| {
            peers
                .iter()
                .filter_map(|p| Some(f.values.get(p)? / f.values.get("bridge")?))
        })
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "vswitch-bench: value relative to the Linux bridge (= 1.0)",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(110)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..figs.len() as f64, 0f64..max)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(figs.len())
        .x_label_formatter(&|x| {
            figs.get(*x as usize)
                .map(|f| f.metric.clone())
                .unwrap_or_default()
        })
        .x_label_style(
            ("sans-serif", 11)
                .into_font()
                .transform(FontTransform::Rotate90),
        )
        .y_desc("ratio to bridge")
        .draw()
        .map_err(|e| e.to_string())?;
    let colors = [
        RGBColor(120, 120, 120),
        RGBColor(70, 130, 180),
        RGBColor(220, 90, 40),
    ];
    let w = 0.8 / peers.len() as f64;
    for (pi, peer) in peers.iter().enumerate() {
        let color = colors[pi % colors.len()];
        let bars: Vec<_> = figs
            .iter()
            .enumerate()
            .filter_map(|(i, f)| {
                let r = f.values.get(peer)? / f.values.get("bridge")?;
                let x0 = i as f64 + 0.1 + pi as f64 * w;
                Some(Rectangle::new([(x0, 0.0), (x0 + w, r)], color.filled()))
            })
            .collect();
        chart
            .draw_series(bars)
            .map_err(|e| e.to_string())?
            .label(peer.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_rounds() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&[f64::NAN, 5.0]), 5.0);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn record_keeps_every_round_and_the_median() {
        let mut figures = Vec::new();
        for v in [10.0, 30.0, 20.0] {
            record(&mut figures, "pps", "forwarded", "kpps", true, "bridge", v);
        }
        record(&mut figures, "pps", "forwarded", "kpps", true, "ovs", 5.0);
        assert_eq!(figures.len(), 1);
        let f = &figures[0];
        assert_eq!(f.samples["bridge"], vec![10.0, 30.0, 20.0]);
        assert_eq!(f.values["bridge"], 20.0);
        assert_eq!(f.values["ovs"], 5.0);
        assert_eq!(ratio(f, "bridge", "ovs"), Some(4.0));
    }
}
