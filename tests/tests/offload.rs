//! TAP offloads and software segmentation: a port with offloads sends 64 KiB TSO frames with
//! pending checksums; a port opened without them (`--no-offload`) must receive proper MTU-sized
//! segments with correct checksums, or TCP through it would stall or corrupt.

mod common;

use common::*;

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
    http_both_ways(&fast, "10.89.1.2", &plain, "10.89.1.3", 30);
}

/// TAP frames move through io_uring batches by default and with one read/write each under
/// `--no-io-uring`; both must carry TCP (64 KiB GSO frames) and bursts intact, and `show` must
/// say which path is in use.
#[test]
fn tap_frames_cross_intact_with_and_without_io_uring() {
    require_root();
    for (extra, batched) in [
        (&[][..], io_uring_allowed()),
        (&["--no-io-uring"][..], false),
    ] {
        let d = Daemon::start_with(None, extra);
        let show = d.json(&["show"]);
        assert_eq!(show["daemon"]["io_uring"], batched, "{extra:?}");
        d.ok(&["network", "create", "net", "--subnet", "10.89.2.0/24"]);
        let a = Netns::new("ura");
        let b = Netns::new("urb");
        d.ok(&["add-port", "net", "--netns", &a.name, "--name", "a"]);
        d.ok(&["add-port", "net", "--netns", &b.name, "--name", "b"]);
        assert!(a.ping("10.89.2.3", 1), "{extra:?}");
        // A burst: 64 echo requests in flight at once queue up in the TAP.
        let out = a.exec_ok(&[
            "ping",
            "-c",
            "256",
            "-l",
            "64",
            "-i",
            "0",
            "-q",
            "10.89.2.3",
        ]);
        assert!(
            out.contains("256 packets transmitted, 256 received"),
            "{extra:?}: {out}"
        );
        http_both_ways(&a, "10.89.2.2", &b, "10.89.2.3", 30);
        let batches = d.json(&["show"])["daemon"]["io_uring_read_batches"]
            .as_u64()
            .unwrap();
        if batched {
            assert!(batches > 0, "bursts were read through io_uring");
        } else {
            assert_eq!(batches, 0, "{extra:?}");
        }
    }
}
