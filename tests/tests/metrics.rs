//! Prometheus metrics (`--metrics ADDR`, `[daemon] metrics`): after traffic, a scrape says
//! what `port stats --json` says, with the tables, the dataplane loop, the add-port histogram
//! and the process; the endpoint is off unless configured and listens only where told. Every
//! daemon runs in a namespace of its own, so its loopback is the test's.

mod common;

use std::collections::HashMap;

use common::*;

/// `name{labels}` → value, from the text format.
fn parse(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

fn scrape(ns: &Netns, url: &str) -> String {
    ns.exec_ok(&["curl", "-sSf", "--max-time", "5", url])
}

/// The TCP sockets listening in `ns` (local addresses).
fn listeners(ns: &Netns) -> Vec<String> {
    ns.exec_ok(&["ss", "-Hltn"])
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(str::to_owned))
        .collect()
}

fn scrape_matches_port_stats() {
    require_root();
    let host = Netns::new("mh");
    host.exec_ok(&["ip", "link", "set", "lo", "up"]);
    let d = Daemon::start_with(Some(&host), &["--metrics", "127.0.0.1:9500"]);
    d.ok(&["network", "create", "mn", "--subnet", "10.88.99.0/24"]);
    let (a, b) = (Netns::new("ma"), Netns::new("mb"));
    d.ok(&["add-port", "mn", "--netns", &a.name, "--name", "a"]);
    d.ok(&["add-port", "mn", "--netns", &b.name, "--name", "b"]);
    d.wait_up(&["a", "b"]);
    assert!(a.ping("10.88.99.3", 3));
    let text = scrape(&host, "http://127.0.0.1:9500/metrics");
    let stats = d.json(&["port", "stats"]);
    let m = parse(&text);
    for p in stats.as_array().unwrap() {
        let (port, net) = (p["port"].as_str().unwrap(), p["network"].as_str().unwrap());
        let labels = format!("{{port=\"{port}\",network=\"{net}\"}}");
        for f in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes"] {
            let key = format!("vswitch_port_{f}_total{labels}");
            assert_eq!(
                m.get(&key).copied(),
                Some(p[f].as_f64().unwrap()),
                "{key} against port stats: {text}"
            );
        }
        for (reason, n) in p["drops"].as_object().unwrap() {
            let key = format!(
                "vswitch_port_drops_total{{port=\"{port}\",network=\"{net}\",reason=\"{reason}\"}}"
            );
            assert_eq!(m.get(&key).copied(), n.as_f64(), "{key}");
        }
    }
    assert!(m[r#"vswitch_port_rx_packets_total{port="a",network="mn"}"#] >= 3.0);
    assert_eq!(m[r#"vswitch_fdb_entries{network="mn"}"#], 2.0, "{text}");
    assert!(m.contains_key(r#"vswitch_fdb_learned_total{network="mn"}"#));
    assert!(m[r#"vswitch_gateway_arp_replies_total{network="mn"}"#] >= 0.0);
    assert!(m.contains_key(r#"vswitch_dhcp_leases{network="mn"}"#));
    assert_eq!(m["vswitch_conntrack_entries"], 0.0);
    assert!(m["vswitch_dataplane_rounds_total"] > 0.0);
    assert!(m["vswitch_dataplane_frames_total"] >= 6.0);
    let ratio = m["vswitch_dataplane_busy_poll_ratio"];
    assert!((0.0..=1.0).contains(&ratio), "{ratio}");
    assert_eq!(m["vswitch_add_port_duration_seconds_count"], 2.0);
    assert_eq!(
        m[r#"vswitch_add_port_duration_seconds_bucket{le="+Inf"}"#],
        2.0
    );
    assert!(m["vswitch_process_resident_memory_bytes"] > 1e6);
    assert!(m["vswitch_process_open_fds"] >= 5.0);
    assert!(text.contains("# TYPE vswitch_port_rx_packets_total counter"));
    assert!(text.contains("# TYPE vswitch_add_port_duration_seconds histogram"));

    // Only there: one listener, on the address given; other paths are 404.
    assert_eq!(listeners(&host), vec!["127.0.0.1:9500".to_string()]);
    let code = host.exec_ok(&[
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://127.0.0.1:9500/",
    ]);
    assert_eq!(code, "404");
}

fn off_unless_configured_and_the_config_file_turns_it_on() {
    require_root();
    let quiet = Netns::new("mq");
    quiet.exec_ok(&["ip", "link", "set", "lo", "up"]);
    let d = Daemon::start_with(Some(&quiet), &[]);
    d.ok(&["show"]);
    assert_eq!(
        listeners(&quiet),
        Vec::<String>::new(),
        "no metrics unless asked"
    );

    let on = Netns::new("mc");
    on.exec_ok(&["ip", "link", "set", "lo", "up"]);
    let _d = Daemon::start_with_config(Some(&on), "\n[daemon]\nmetrics = \"127.0.0.1:9501\"\n");
    let m = parse(&scrape(&on, "http://127.0.0.1:9501/metrics"));
    assert_eq!(m["vswitch_add_port_duration_seconds_count"], 0.0);
    assert_eq!(listeners(&on), vec!["127.0.0.1:9501".to_string()]);

    // A bad address is a clear error at start.
    let dir = TempDir::new("mbad");
    let out = std::process::Command::new(bin("vswitchd"))
        .args(["--metrics", "localhost"])
        .arg("--socket")
        .arg(dir.path("s"))
        .arg("--state-dir")
        .arg(dir.path("st"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is not IP:PORT"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn metrics_scrape_matches_port_stats() {
    with_port_type("tap", scrape_matches_port_stats)
}

#[test]
fn metrics_off_unless_configured_and_the_config_file_turns_it_on() {
    with_port_type("tap", off_unless_configured_and_the_config_file_turns_it_on)
}
