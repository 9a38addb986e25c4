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

/// A goal a figure is held to, reported as met or not.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub scenario: &'static str,
    pub metric: &'static str,
    pub goal: Goal,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub enum Goal {
    /// `ours` at least `min` times `peer`.
    RatioAtLeast {
        ours: &'static str,
        peer: &'static str,
        min: f64,
    },
    /// `peer`'s value at most `max`, in the figure's unit.
    AtMost { peer: &'static str, max: f64 },
}

impl Target {
    /// The goal in words.
    fn describe(&self, unit: &str) -> String {
        match self.goal {
            Goal::RatioAtLeast { ours, peer, min } => format!("{ours} ≥ {min:.2}x {peer}"),
            Goal::AtMost { peer, max } => format!("{peer} ≤ {max} {unit}"),
        }
    }

    /// What was measured for it and whether it is met (`None`: not measured).
    fn check(&self, figures: &[Figure]) -> Option<(String, bool)> {
        let f = figures
            .iter()
            .find(|f| f.scenario == self.scenario && f.metric == self.metric)?;
        match self.goal {
            Goal::RatioAtLeast { ours, peer, min } => {
                let r = ratio(f, ours, peer).filter(|r| r.is_finite())?;
                Some((format!("{r:.2}x"), r >= min))
            }
            Goal::AtMost { peer, max } => {
                let v = *f.values.get(peer).filter(|v| v.is_finite())?;
                Some((format!("{} {}", fmt_value(Some(&v)), f.unit), v <= max))
            }
        }
    }
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
    // (Or, with the build's target directory elsewhere, the checkout it was built from.)
    let commit = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
        .filter(|root| root.join("Cargo.toml").exists())
        .or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .map(Path::to_path_buf)
        })
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

#[allow(clippy::too_many_arguments)]
pub fn report(
    figures: &[Figure],
    peers: &[String],
    targets: &[Target],
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
    md.push_str("Ratios are vswitch (tap or afxdp ports; nat: vswitch's NAT) / peer, from this one run (for latency, loss, time and memory, lower is better).\n\n");
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
        .chain(
            (peers.iter().any(|p| p == "vswitch-afxdp") && peers.iter().any(|p| p == "ovs-afxdp"))
                .then_some(("vswitch-afxdp", "ovs-afxdp")),
        )
        .chain(
            (peers.iter().any(|p| p == "vswitch-nat") && peers.iter().any(|p| p == "kernel-nat"))
                .then_some(("vswitch-nat", "kernel-nat")),
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
    let mut checked = Vec::new();
    for t in targets
        .iter()
        .filter(|t| figures.iter().any(|f| f.scenario == t.scenario))
    {
        let unit = figures
            .iter()
            .find(|f| f.scenario == t.scenario && f.metric == t.metric)
            .map_or("", |f| f.unit.as_str());
        let (measured, met) = match t.check(figures) {
            Some((m, ok)) => (m, if ok { "met" } else { "not met" }),
            None => ("-".into(), "not measured"),
        };
        checked.push(serde_json::json!({
            "scenario": t.scenario, "figure": t.metric, "target": t.describe(unit),
            "measured": measured, "result": met,
        }));
    }
    if !checked.is_empty() {
        md.push_str("\nTargets:\n\n| scenario | figure | target | measured | result |\n|---|---|---|---|---|\n");
        for c in &checked {
            let cell = |k: &str| c[k].as_str().unwrap_or("").to_string();
            md.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                cell("scenario"),
                cell("figure"),
                cell("target"),
                cell("measured"),
                cell("result")
            ));
        }
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
    for c in &checked {
        println!(
            "target: {} {}: {} — measured {}: {}",
            c["scenario"].as_str().unwrap_or(""),
            c["figure"].as_str().unwrap_or(""),
            c["target"].as_str().unwrap_or(""),
            c["measured"].as_str().unwrap_or(""),
            c["result"].as_str().unwrap_or("")
        );
    }
    for n in notes {
        println!("note: {n}");
    }
    std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
    let json = serde_json::json!({ "machine": machine, "quick": quick, "rounds": rounds, "peers": peers, "figures": figures, "targets": checked, "notes": notes });
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

/// The peer a figure is plotted relative to: the Linux bridge, or for the nat scenario the
/// kernel's NAT.
fn baseline(f: &Figure) -> Option<f64> {
    ["bridge", "kernel-nat"]
        .iter()
        .find_map(|p| f.values.get(*p).copied())
        .filter(|v| *v != 0.0 && v.is_finite())
}

/// Grouped bars: every peer's value relative to the Linux bridge (1.0; for nat figures the
/// kernel's NAT), per figure.
fn plot(figures: &[Figure], peers: &[String], path: &Path) -> Result<(), String> {
    use plotters::prelude::*;
    let figs: Vec<&Figure> = figures.iter().filter(|f| baseline(f).is_some()).collect();
    if figs.is_empty() {
        return Ok(());
    }
    let max = figs
        .iter()
        .flat_map(|f| {
            peers
                .iter()
                .filter_map(|p| Some(f.values.get(p)? / baseline(f)?))
        })
        .filter(|v| v.is_finite())
        .fold(1.0f64, f64::max)
        * 1.15;
    let root = SVGBackend::new(path, (1100, 520)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "vswitch-bench: value relative to the Linux bridge (nat: the kernel's NAT) = 1.0",
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
        .y_desc("ratio to bridge (nat: kernel-nat)")
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
                let r = f.values.get(peer)? / baseline(f)?;
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

    #[test]
    fn targets_are_met_or_not() {
        let mut figures = Vec::new();
        record(
            &mut figures,
            "nat",
            "tcp",
            "Gbit/s",
            true,
            "kernel-nat",
            10.0,
        );
        record(
            &mut figures,
            "nat",
            "tcp",
            "Gbit/s",
            true,
            "vswitch-nat",
            7.0,
        );
        record(
            &mut figures,
            "nat",
            "rss",
            "MiB",
            false,
            "vswitch-nat",
            200.0,
        );
        let at_least = |min| Target {
            scenario: "nat",
            metric: "tcp",
            goal: Goal::RatioAtLeast {
                ours: "vswitch-nat",
                peer: "kernel-nat",
                min,
            },
        };
        assert_eq!(at_least(0.8).check(&figures), Some(("0.70x".into(), false)));
        assert_eq!(at_least(0.5).check(&figures), Some(("0.70x".into(), true)));
        let at_most = Target {
            scenario: "nat",
            metric: "rss",
            goal: Goal::AtMost {
                peer: "vswitch-nat",
                max: 256.0,
            },
        };
        assert_eq!(at_most.check(&figures), Some(("200 MiB".into(), true)));
        assert_eq!(at_most.describe("MiB"), "vswitch-nat ≤ 256 MiB");
    }
}
