//! TAP offloads and software segmentation: a port with offloads sends 64 KiB TSO frames with
//! pending checksums; a port opened without them (`--no-offload`) must receive proper MTU-sized
//! segments with correct checksums, or TCP through it would stall or corrupt.

mod common;

use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn iperf(client: &Netns, server: &Netns, server_ip: &str, reverse: bool) -> Value {
    let _srv = Bg(Command::new("ip")
        .args([
            "netns",
            "exec",
            &server.name,
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5201",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    assert!(wait_until(10, || server
        .exec_ok(&["ss", "-Hltn", "sport", "=", ":5201"])
        .contains("5201")));
    // Bounded: a stalled transfer (bad segments) must fail the test, not hang it.
    let mut args = vec![
        "timeout", "-s", "KILL", "30", "iperf3", "-c", server_ip, "-p", "5201", "-t", "3", "--json",
    ];
    if reverse {
        args.push("-R");
    }
    serde_json::from_str(&client.exec_ok(&args)).expect("iperf3 JSON")
}

fn sha256(ns: &Netns, path: &str) -> String {
    ns.exec_ok(&["sha256sum", path])
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn tcp_between_offload_and_plain_ports_is_segmented_in_software() {
    require_root();
    let d = Daemon::start();
    d.ok(&["network", "create", "net", "--subnet", "10.89.1.0/24"]);
    let fast = Netns::new("fast");
    let plain = Netns::new("plain");
    d.ok(&["add-port", "net", "--netns", &fast.name, "--name", "fast"]);
    d.ok(&[
        "add-port",
        "net",
        "--netns",
        &plain.name,
        "--name",
        "plain",
        "--no-offload",
    ]);
    let show = d.json(&["show"]);
    let plain_port = show["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "plain")
        .unwrap();
    assert_eq!(plain_port["offload"], false);
    assert!(fast.ping("10.89.1.3", 1));

    // fast -> plain: TSO frames from `fast` are cut to MSS-sized segments for `plain`.
    let v = iperf(&fast, &plain, "10.89.1.3", false);
    let sent = v["end"]["sum_sent"]["bytes"].as_f64().unwrap();
    let got = v["end"]["sum_received"]["bytes"].as_f64().unwrap();
    assert!(got > 10e6, "TCP moved data: {got} bytes");
    assert!(
        (sent - got).abs() / sent < 0.05,
        "sender {sent} and receiver {got} agree"
    );
    let rx_fast = d.stats("fast")["rx_packets"].as_u64().unwrap();
    let tx_plain = d.stats("plain")["tx_packets"].as_u64().unwrap();
    assert!(
        tx_plain > rx_fast,
        "super-frames became more segments: {rx_fast} in, {tx_plain} out"
    );
    // plain -> fast (plain frames into an offload port) and the reverse test direction.
    let v = iperf(&fast, &plain, "10.89.1.3", true);
    assert!(v["end"]["sum_received"]["bytes"].as_f64().unwrap() > 10e6);
    assert_eq!(d.stats("plain")["drops"]["needs_offload"], 0);
    assert_eq!(d.stats("fast")["drops"]["needs_offload"], 0);

    // A 30 MB file over HTTP each way arrives intact.
    let tmp = TempDir::new("http");
    let file = tmp.path("blob");
    must(
        "dd",
        &[
            "if=/dev/urandom",
            &format!("of={}", file.display()),
            "bs=1M",
            "count=30",
            "status=none",
        ],
    );
    let want = sha256(&fast, file.to_str().unwrap());
    for (server, client, ip) in [(&fast, &plain, "10.89.1.2"), (&plain, &fast, "10.89.1.3")] {
        let _http = Bg(Command::new("ip")
            .args([
                "netns",
                "exec",
                &server.name,
                "python3",
                "-m",
                "http.server",
                "8080",
                "--bind",
                ip,
                "--directory",
            ])
            .arg(&tmp.0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap());
        let out = tmp.path(&format!("got-{}", client.name));
        assert!(wait_until(10, || client
            .exec(&[
                "curl",
                "-sf",
                "-m",
                "30",
                "-o",
                out.to_str().unwrap(),
                &format!("http://{ip}:8080/blob")
            ])
            .status
            .success()));
        assert_eq!(
            sha256(client, out.to_str().unwrap()),
            want,
            "{} -> {}",
            server.name,
            client.name
        );
    }
}
