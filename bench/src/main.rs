//! vswitch-bench: builds each topology in fresh network namespaces and measures every peer side
//! by side in one invocation — the Linux bridge, Open vSwitch's userspace datapath (when
//! installed) and vswitch with TAP ports — then prints a table of every figure with its ratio to
//! the bridge and to OVS, and writes JSON, Markdown and an SVG plot.
//!
//! Timings are only ever compared within one run: this machine is noisy.

mod sys;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    /// Scenarios to run: throughput, latency, pps, macs, scale.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "throughput,latency,pps,macs,scale"
    )]
    scenarios: Vec<String>,
    /// Peers to measure: bridge, ovs, tap-copy (the TAP-to-TAP copy loop: the ceiling for TAP
    /// ports), vswitch-tap, vswitch-afxdp.
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
}

#[derive(Subcommand)]
enum Cmd {
    /// (helper) UDP echo server.
    #[command(hide = true)]
    UdpEcho { port: u16, secs: u64 },
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
}

// ---------- helpers run inside the namespaces ----------

fn udp_echo(port: u16, secs: u64) {
    let s = UdpSocket::bind(("0.0.0.0", port)).expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

fn udp_ping(target: &str, count: usize) {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect(target).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut rtts = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    let mut lost = 0;
    for i in 0..count + 100 {
        let payload = (i as u64).to_be_bytes();
        let t = Instant::now();
        s.send(&payload).unwrap();
        loop {
            match s.recv(&mut buf) {
                Ok(8) if buf[..8] == payload => {
                    if i >= 100 {
                        rtts.push(t.elapsed().as_nanos() as f64 / 1000.0);
                    }
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    rtts.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{}",
        serde_json::json!({"p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "lost": lost})
    );
}

fn pps_recv(port: u16, secs: f64) {
    let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut bufs = vec![[0u8; 64]; 256];
    let mut received = 0u64;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        if let Ok(n) = sys::recv_batch(&s, &mut bufs) {
            received += n as u64;
        }
    }
    println!("{}", serde_json::json!({ "received": received }));
}

#[allow(clippy::too_many_arguments)]
fn mac_flood(
    src_mac: Option<&str>,
    ifname: &str,
    dst_mac: &str,
    src_ip: &str,
    dst_ip: &str,
    port: u16,
    macs: u32,
    secs: f64,
) {
    let dst: vswitch::wire::MacAddr = dst_mac.parse().expect("destination MAC");
    let src_ip: std::net::Ipv4Addr = src_ip.parse().expect("source IP");
    let dst_ip: std::net::Ipv4Addr = dst_ip.parse().expect("destination IP");
    let src: Option<vswitch::wire::MacAddr> = src_mac.map(|m| m.parse().expect("source MAC"));
    let frames: Vec<Vec<u8>> = (0..if src.is_some() { 1 } else { macs })
        .map(|i| {
            let b = i.to_be_bytes();
            let mac = src.map_or([0x02, 0x77, b[0], b[1], b[2], b[3]], |m| m.0);
            let mut f = Vec::with_capacity(60);
            etherparse::PacketBuilder::ethernet2(mac, dst.0)
                .ipv4(src_ip.octets(), dst_ip.octets(), 64)
                .udp(4000, port)
                .write(&mut f, &[0x5a; 18])
                .expect("frame");
            f
        })
        .collect();
    let sock = sys::packet_socket(ifname).expect("packet socket");
    let mut sent = 0u64;
    let mut next = 0usize;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let batch: Vec<&[u8]> = (0..64)
            .map(|k| frames[(next + k) % frames.len()].as_slice())
            .collect();
        match sys::send_many(std::os::fd::AsRawFd::as_raw_fd(&sock), &batch) {
            Ok(n) => {
                sent += n as u64;
                next = (next + n) % frames.len();
            }
            Err(_) => std::thread::yield_now(),
        }
    }
    println!("{}", serde_json::json!({ "sent": sent }));
}

fn tap_copy(client: &str, server: &str) {
    use vswitch::ports::Port;
    let open = |ns: &str| {
        let spec = vswitch::sandbox::NetnsSpec::parse(ns).expect("namespace");
        let file = spec.open().expect("namespace");
        let tap = vswitch::sandbox::in_netns(&file, &spec, || {
            Ok(vswitch::ports::tap::Tap::create("eth0", true)?)
        })
        .expect("TAP");
        sys::set_blocking(tap.raw_fd()).expect("blocking");
        tap
    };
    let (a, b) = (open(client), open(server));
    let (fa, fb) = (a.raw_fd(), b.raw_fd());
    println!("ready");
    let _ = std::io::stdout().flush();
    std::thread::spawn(move || sys::pump(fa, fb));
    sys::pump(fb, fa);
    drop((a, b));
}

// ---------- scaffolding ----------

fn prefix() -> String {
    format!("vb{}", std::process::id() % 100_000)
}

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A namespace removed on drop.
struct Ns(String);

impl Ns {
    fn new(name: String) -> Result<Ns, String> {
        run("ip", &["netns", "add", &name])?;
        let ns = Ns(name);
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    fn exec(&self, args: &[&str]) -> Result<String, String> {
        let mut a = vec!["netns", "exec", &self.0];
        a.extend_from_slice(args);
        run("ip", &a)
    }

    fn spawn(&self, args: &[&str]) -> Result<Proc, String> {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map(Proc)
            .map_err(|e| e.to_string())
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
        let _ = std::fs::remove_dir_all(Path::new("/etc/netns").join(&self.0));
    }
}

/// A child process killed (by PID) on drop.
struct Proc(Child);

impl Proc {
    fn wait_json(mut self) -> Result<Value, String> {
        let out = self.0.stdout.take().ok_or("no stdout")?;
        let status = self.0.wait().map_err(|e| e.to_string())?;
        let text = std::io::read_to_string(out).map_err(|e| e.to_string())?;
        serde_json::from_str(text.trim())
            .map_err(|e| format!("helper exited {status}: {e}: {text:?}"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn temp_dir(tag: &str) -> TempDir {
    let p = std::env::temp_dir().join(format!("{}-{tag}", prefix()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    TempDir(p)
}

fn sibling(bin: &str) -> PathBuf {
    std::env::current_exe().unwrap().with_file_name(bin)
}

fn wait_for(secs: u64, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Client and server namespaces joined by one switch, with whatever keeps it running.
struct Topology {
    client: Ns,
    server: Ns,
    server_ip: &'static str,
    _keep: Vec<Box<dyn std::any::Any>>,
}

const CLIENT_IP: &str = "10.250.0.1";
const SERVER_IP: &str = "10.250.0.2";

/// Two namespaces, each with `eth0` whose peer `v1`/`v2` is in `switch`.
fn veth_pair_topology(switch: &Ns) -> Result<(Ns, Ns), String> {
    let p = prefix();
    let client = Ns::new(format!("{p}c"))?;
    let server = Ns::new(format!("{p}s"))?;
    for (ns, v, ip) in [(&client, "v1", CLIENT_IP), (&server, "v2", SERVER_IP)] {
        switch.exec(&[
            "ip", "link", "add", v, "type", "veth", "peer", "name", "eth0", "netns", &ns.0,
        ])?;
        switch.exec(&["ip", "link", "set", v, "up"])?;
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
    }
    Ok((client, server))
}

fn bridge() -> Result<Topology, String> {
    let sw = Ns::new(format!("{}w", prefix()))?;
    sw.exec(&["ip", "link", "add", "br0", "type", "bridge"])?;
    sw.exec(&["ip", "link", "set", "br0", "up"])?;
    let (client, server) = veth_pair_topology(&sw)?;
    for v in ["v1", "v2"] {
        sw.exec(&["ip", "link", "set", v, "master", "br0"])?;
    }
    Ok(Topology {
        client,
        server,
        server_ip: SERVER_IP,
        _keep: vec![Box::new(sw)],
    })
}

/// The TAP-to-TAP copy loop (`tap-copy` helper): what a userspace forwarder on TAPs can reach
/// at best here, with no switching at all.
fn tap_copy_topology() -> Result<Topology, String> {
    let p = prefix();
    let client = Ns::new(format!("{p}c"))?;
    let server = Ns::new(format!("{p}s"))?;
    let me = std::env::current_exe().unwrap().display().to_string();
    let mut helper = Proc(
        Command::new(&me)
            .args(["tap-copy", &client.0, &server.0])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    let mut line = String::new();
    let out = helper.0.stdout.take().ok_or("no stdout")?;
    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line)
        .map_err(|e| e.to_string())?;
    if line.trim() != "ready" {
        return Err("tap-copy helper did not start".into());
    }
    for (ns, ip) in [(&client, CLIENT_IP), (&server, SERVER_IP)] {
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])?;
        ns.exec(&["ip", "link", "set", "eth0", "up"])?;
    }
    Ok(Topology {
        client,
        server,
        server_ip: SERVER_IP,
        _keep: vec![Box::new(helper)],
    })
}

/// Open vSwitch with the userspace (`netdev`) datapath, its db and daemon started here with
/// their own run dir, inside the switch namespace; stopped (by PID) afterwards.
fn ovs() -> Result<Topology, String> {
    let schema = ["/usr/share/openvswitch/vswitch.ovsschema"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .ok_or("Open vSwitch is not installed (apt-get install openvswitch-switch)")?;
    let dir = temp_dir("ovs");
    let d = dir.0.display().to_string();
    let db = format!("{d}/conf.db");
    let sock = format!("unix:{d}/db.sock");
    run("ovsdb-tool", &["create", &db, schema])?;
    let sw = Ns::new(format!("{}w", prefix()))?;
    let env = |c: &mut Command| {
        c.env("OVS_RUNDIR", &d)
            .env("OVS_LOGDIR", &d)
            .env("OVS_DBDIR", &d)
            .env("OVS_SYSCONFDIR", &d);
    };
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &sw.0,
        "ovsdb-server",
        &db,
        &format!("--remote=p{sock}"),
        &format!("--pidfile={d}/ovsdb.pid"),
        &format!("--unixctl={d}/ovsdb.ctl"),
        &format!("--log-file={d}/ovsdb.log"),
    ]);
    env(&mut c);
    let dbp = Proc(
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    if !wait_for(10, || Path::new(&format!("{d}/db.sock")).exists()) {
        return Err("ovsdb-server did not start".into());
    }
    let vsctl = |args: &[&str]| -> Result<String, String> {
        let mut a = vec![format!("--db={sock}"), "--timeout=20".to_string()];
        a.extend(args.iter().map(|s| s.to_string()));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        run("ovs-vsctl", &a)
    };
    vsctl(&["--no-wait", "init"])?;
    let mut c = Command::new("ip");
    c.args([
        "netns",
        "exec",
        &sw.0,
        "ovs-vswitchd",
        &sock,
        &format!("--pidfile={d}/vswitchd.pid"),
        &format!("--unixctl={d}/vswitchd.ctl"),
        &format!("--log-file={d}/vswitchd.log"),
    ]);
    env(&mut c);
    let vsp = Proc(
        c.stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| e.to_string())?,
    );
    vsctl(&[
        "add-br",
        "br0",
        "--",
        "set",
        "bridge",
        "br0",
        "datapath_type=netdev",
        "other_config:mac-table-size=131072",
    ])?;
    let (client, server) = veth_pair_topology(&sw)?;
    for v in ["v1", "v2"] {
        vsctl(&["add-port", "br0", v])?;
    }
    sw.exec(&["ip", "link", "set", "br0", "up"]).ok();
    // The netdev datapath reads the veths with AF_PACKET and cannot take TSO/GSO or
    // checksum-pending frames: make the endpoints send plain ones so TCP runs fairly.
    for (ns, ifs) in [
        (&client, vec!["eth0"]),
        (&server, vec!["eth0"]),
        (&sw, vec!["v1", "v2"]),
    ] {
        for i in ifs {
            let _ = ns.exec(&[
                "ethtool", "-K", i, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
            ]);
        }
    }
    Ok(Topology {
        client,
        server,
        server_ip: SERVER_IP,
        _keep: vec![Box::new(vsp), Box::new(dbp), Box::new(sw), Box::new(dir)],
    })
}

/// A vswitchd of our own (the release binary beside this one), in `host` when given.
struct Vswitchd {
    proc: Proc,
    socket: PathBuf,
    _dir: TempDir,
}

impl Vswitchd {
    fn start(host: Option<&Ns>) -> Result<Vswitchd, String> {
        let dir = temp_dir("vswitchd");
        let socket = dir.0.join("sock");
        let bin = sibling("vswitchd");
        if !bin.exists() {
            return Err(format!(
                "{} not found: build the workspace first",
                bin.display()
            ));
        }
        let mut cmd = match host {
            // `ip netns exec` execs in place: the pid is the daemon's (for RSS).
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.0]).arg(bin);
                c
            }
            None => Command::new(bin),
        };
        let proc = Proc(
            cmd.arg("--socket")
                .arg(&socket)
                .arg("--state-dir")
                .arg(dir.0.join("state"))
                .args(["--log-level", "warn"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| e.to_string())?,
        );
        let v = Vswitchd {
            proc,
            socket,
            _dir: dir,
        };
        if !wait_for(20, || v.client().is_ok()) {
            return Err("vswitchd did not start".into());
        }
        Ok(v)
    }

    fn client(&self) -> Result<vswitch::api::Client, String> {
        vswitch::api::Client::connect(&self.socket).map_err(|e| e.to_string())
    }

    fn call(&self, op: vswitch::api::Op) -> Result<vswitch::api::Reply, String> {
        self.client()?.call(op).map_err(|e| e.to_string())
    }

    fn rss_kib(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.proc.0.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
            })
            .unwrap_or(0)
    }
}

/// vswitch with two ports of `port_type` ("tap" or "afxdp"). For AF_XDP the daemon runs in a
/// bench "host" namespace, so the veths' host ends stay out of the real root namespace.
fn vswitch_topology(port_type: &str) -> Result<Topology, String> {
    use vswitch::api::{NetworkCreate, Op, PortAdd};
    let p = prefix();
    let host = match port_type {
        "tap" => None,
        _ => Some(Ns::new(format!("{p}h"))?),
    };
    let d = Vswitchd::start(host.as_ref())?;
    d.call(Op::NetworkCreate(NetworkCreate {
        name: "bench".into(),
        subnet: "10.250.0.0/24".into(),
        gateway: Some("10.250.0.254".into()),
        fdb_limit: Some(131_072),
        ..Default::default()
    }))?;
    let client = Ns::new(format!("{p}c"))?;
    let server = Ns::new(format!("{p}s"))?;
    for (ns, ip) in [(&client, CLIENT_IP), (&server, SERVER_IP)] {
        d.call(Op::PortAdd(PortAdd {
            network: "bench".into(),
            netns: ns.0.clone(),
            ip: Some(ip.into()),
            kind: Some(port_type.into()),
            ..Default::default()
        }))?;
    }
    // The daemon goes first, then its host namespace (and the veths' host ends with it).
    let mut keep: Vec<Box<dyn std::any::Any>> = vec![Box::new(d)];
    if let Some(h) = host {
        keep.push(Box::new(h));
    }
    Ok(Topology {
        client,
        server,
        server_ip: SERVER_IP,
        _keep: keep,
    })
}

// ---------- scenarios ----------

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Figure {
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
fn record(
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

struct Durations {
    iperf: u64,
    pps: f64,
    pings: usize,
}

fn iperf(t: &Topology, streams: u32, secs: u64) -> Result<f64, String> {
    let server = t.server.spawn(&["iperf3", "-s", "-1", "-p", "5201"])?;
    std::thread::sleep(Duration::from_millis(300));
    let out = t.client.exec(&[
        "iperf3",
        "-c",
        t.server_ip,
        "-p",
        "5201",
        "-t",
        &secs.to_string(),
        "-P",
        &streams.to_string(),
        "--json",
    ])?;
    drop(server);
    let v: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
    v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .map(|b| b / 1e9)
        .ok_or_else(|| "iperf3 gave no result".into())
}

fn latency(t: &Topology, count: usize) -> Result<Value, String> {
    let me = std::env::current_exe().unwrap().display().to_string();
    let echo = t.server.spawn(&[&me, "udp-echo", "7000", "120"])?;
    std::thread::sleep(Duration::from_millis(300));
    let out = t.client.exec(&[
        &me,
        "udp-ping",
        &format!("{}:7000", t.server_ip),
        &count.to_string(),
    ])?;
    drop(echo);
    serde_json::from_str(out.trim()).map_err(|e| e.to_string())
}

/// Where a blast's frames are counted.
#[derive(Clone, Copy, PartialEq)]
enum Sink {
    /// At the server's `eth0`: an nftables netdev-ingress rule counts the UDP frames and drops
    /// them there, so the switch is measured and not the receiving stack or a receiver process
    /// competing for the CPUs (RFC 2544 counts at the tester's port the same way).
    Interface,
    /// In a UDP socket read by a receiver process (recvmmsg): what an application gets.
    Socket,
}

const SINK_TABLE: &str = "vswitch_bench";

/// Installs the counting drop rule on the server's `eth0` (removed with the namespace, and by
/// [`sink_remove`]).
fn sink_install(server: &Ns) -> Result<(), String> {
    let t = SINK_TABLE;
    server
        .exec(&["nft", "add", "table", "netdev", t])
        .map_err(|e| format!("nft (install the nftables package): {e}"))?;
    server.exec(&["nft", "add", "counter", "netdev", t, "frames"])?;
    server.exec(&[
        "nft", "add", "chain", "netdev", t, "in", "{", "type", "filter", "hook", "ingress",
        "device", "eth0", "priority", "0", ";", "}",
    ])?;
    server.exec(&[
        "nft", "add", "rule", "netdev", t, "in", "udp", "dport", "7001", "counter", "name",
        "frames", "drop",
    ])?;
    Ok(())
}

fn sink_count(server: &Ns) -> Result<u64, String> {
    let out = server.exec(&[
        "nft", "-j", "list", "counter", "netdev", SINK_TABLE, "frames",
    ])?;
    let v: Value = serde_json::from_str(out.trim()).map_err(|e| e.to_string())?;
    v["nftables"]
        .as_array()
        .and_then(|a| a.iter().find_map(|o| o["counter"]["packets"].as_u64()))
        .ok_or_else(|| format!("no counter in {out:?}"))
}

fn sink_remove(server: &Ns) {
    let _ = server.exec(&["nft", "delete", "table", "netdev", SINK_TABLE]);
}

/// Runs a generator (this binary with `sender` arguments) in the client for `secs` and counts
/// what reaches the server at `sink`; returns the forwarded rate (kpps) and the loss (%).
fn blast(t: &Topology, secs: f64, sink: Sink, sender: &[&str]) -> Result<(f64, f64), String> {
    let me = std::env::current_exe().unwrap().display().to_string();
    // Warm the path (ARP, MAC learning) first.
    let _ = t.client.exec(&["ping", "-c", "1", "-W", "1", t.server_ip]);
    let recv = match sink {
        Sink::Socket => {
            Some(
                t.server
                    .spawn(&[&me, "pps-recv", "7001", &(secs + 1.0).to_string()])?,
            )
        }
        Sink::Interface => {
            if let Err(e) = sink_install(&t.server) {
                sink_remove(&t.server);
                return Err(e);
            }
            None
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let mut args = vec![me.as_str()];
    args.extend_from_slice(sender);
    let sent = t.client.exec(&args);
    let received = match recv {
        Some(recv) => recv
            .wait_json()
            .map(|got| got["received"].as_f64().unwrap_or(0.0)),
        None => {
            // Frames still queued in the switch land within a moment.
            std::thread::sleep(Duration::from_millis(200));
            let n = sink_count(&t.server).map(|n| n as f64);
            sink_remove(&t.server);
            n
        }
    }?;
    let sent: Value = serde_json::from_str(sent?.trim()).map_err(|e| e.to_string())?;
    let sent = sent["sent"].as_f64().unwrap_or(0.0);
    let loss = if sent > 0.0 {
        (1.0 - received / sent).max(0.0) * 100.0
    } else {
        100.0
    };
    Ok((received / secs / 1000.0, loss))
}

/// 64-byte UDP frames of one flow (the client's own MAC and address) as fast as the generator
/// goes.
fn pps(t: &Topology, secs: f64, sink: Sink) -> Result<(f64, f64), String> {
    let src_mac = t.client.exec(&["cat", "/sys/class/net/eth0/address"])?;
    flood(t, secs, sink, Some(src_mac.trim()), 1)
}

/// The same from 100 000 source MACs: forwarding while the table learns and holds them.
fn mac_scale(t: &Topology, secs: f64, macs: u32) -> Result<(f64, f64), String> {
    flood(t, secs, Sink::Interface, None, macs)
}

fn flood(
    t: &Topology,
    secs: f64,
    sink: Sink,
    src_mac: Option<&str>,
    macs: u32,
) -> Result<(f64, f64), String> {
    let dst_mac = t.server.exec(&["cat", "/sys/class/net/eth0/address"])?;
    let (macs, secs_s) = (macs.to_string(), secs.to_string());
    let mut args = vec!["mac-flood"];
    if let Some(m) = src_mac {
        args.extend(["--src-mac", m]);
    }
    args.extend([
        "eth0",
        dst_mac.trim(),
        CLIENT_IP,
        t.server_ip,
        "7001",
        &macs,
        &secs_s,
    ]);
    blast(t, secs, sink, &args)
}

/// Port counts the scale scenario runs for a port type. AF_XDP ports pin their UMEM (4 MiB each
/// by default), so they stop at 100.
fn scale_counts(quick: bool, port_type: &str) -> &'static [usize] {
    match (quick, port_type) {
        (true, _) | (false, "afxdp") => &[1, 10, 100],
        _ => &[1, 10, 100, 1000],
    }
}

fn scale(
    quick: bool,
    port_type: &str,
    figures: &mut Vec<Figure>,
    bar: &ProgressBar,
) -> Result<(), String> {
    use vswitch::api::{NetworkCreate, Op, PortAdd};
    let peer = format!("vswitch-{port_type}");
    for &n in scale_counts(quick, port_type) {
        bar.set_message(format!("scale: {n} {port_type} ports"));
        let host = match port_type {
            "tap" => None,
            _ => Some(Ns::new(format!("{}h", prefix()))?),
        };
        let d = Vswitchd::start(host.as_ref())?;
        d.call(Op::NetworkCreate(NetworkCreate {
            name: "scale".into(),
            subnet: "10.240.0.0/16".into(),
            ..Default::default()
        }))?;
        // One namespace per port, as one container per port (created before the clock starts).
        let nss = (0..n)
            .map(|i| Ns::new(format!("{}x{i}", prefix())))
            .collect::<Result<Vec<_>, _>>()?;
        let mut client = d.client()?;
        let mut times = Vec::with_capacity(n);
        for (i, ns) in nss.iter().enumerate() {
            let t = Instant::now();
            client
                .call(Op::PortAdd(PortAdd {
                    network: "scale".into(),
                    netns: ns.0.clone(),
                    name: Some(format!("p{i}")),
                    kind: Some(port_type.into()),
                    ..Default::default()
                }))
                .map_err(|e| e.to_string())?;
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| times[((times.len() as f64 - 1.0) * p) as usize];
        let mut fig = |metric: &str, unit: &str, v: f64| {
            let metric = format!("{metric} @{n} ports");
            record(figures, "scale", &metric, unit, false, &peer, v);
        };
        fig("add-port p50", "ms", pct(0.5));
        fig("add-port p99", "ms", pct(0.99));
        fig("daemon RSS", "MiB", d.rss_kib() as f64 / 1024.0);
        drop(client);
        drop(d); // kills the daemon: its TAPs go with it
        drop(host); // and its veths' host ends
        drop(nss);
        bar.inc(1);
    }
    Ok(())
}

fn machine() -> Value {
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

fn report(
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

fn main() {
    let cli = Cli::parse();
    match cli.cmd {
        Some(Cmd::UdpEcho { port, secs }) => return udp_echo(port, secs),
        Some(Cmd::UdpPing { target, count }) => return udp_ping(&target, count),
        Some(Cmd::PpsRecv { port, secs }) => return pps_recv(port, secs),
        Some(Cmd::TapCopy { client, server }) => return tap_copy(&client, &server),
        Some(Cmd::MacFlood {
            src_mac,
            ifname,
            dst_mac,
            src_ip,
            dst_ip,
            port,
            macs,
            secs,
        }) => {
            return mac_flood(
                src_mac.as_deref(),
                &ifname,
                &dst_mac,
                &src_ip,
                &dst_ip,
                port,
                macs,
                secs,
            )
        }
        None => {}
    }
    let d = if cli.quick {
        Durations {
            iperf: 4,
            pps: 3.0,
            pings: 3000,
        }
    } else {
        Durations {
            iperf: 8,
            pps: 5.0,
            pings: 10000,
        }
    };
    let want = |s: &str| cli.scenarios.iter().any(|x| x == s);
    let traffic = ["throughput", "latency", "pps", "macs"]
        .iter()
        .filter(|s| want(s))
        .count() as u64;
    let rounds = cli.rounds.unwrap_or(if cli.quick { 1 } else { 3 }).max(1);
    let steps = rounds as u64 * cli.peers.len() as u64 * traffic
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
    let mut figures: Vec<Figure> = Vec::new();
    let mut notes: Vec<String> = Vec::new();
    let mut peers_run: Vec<String> = Vec::new();
    for round in 1..=rounds {
        for peer in &cli.peers {
            bar.set_message(format!("round {round}/{rounds}: {peer}: setting up"));
            let topo = match peer.as_str() {
                "bridge" => bridge(),
                "ovs" => ovs(),
                "tap-copy" => tap_copy_topology(),
                "vswitch-tap" => vswitch_topology("tap"),
                "vswitch-afxdp" => vswitch_topology("afxdp"),
                other => Err(format!("unknown peer {other}")),
            };
            let topo = match topo {
                Ok(t) => t,
                Err(e) => {
                    notes.push(format!("{peer} skipped: {e}"));
                    bar.inc(traffic);
                    continue;
                }
            };
            if !peers_run.contains(peer) {
                peers_run.push(peer.clone());
            }
            if !wait_for(10, || {
                topo.client
                    .exec(&["ping", "-c", "1", "-W", "1", topo.server_ip])
                    .is_ok()
            }) {
                notes.push(format!("{peer}: client cannot reach server; skipped"));
                bar.inc(traffic);
                continue;
            }
            if want("throughput") {
                for streams in [1, 4] {
                    bar.set_message(format!("round {round}/{rounds}: {peer}: TCP x{streams}"));
                    match iperf(&topo, streams, d.iperf) {
                        Ok(g) => record(
                            &mut figures,
                            "throughput",
                            &format!("TCP {streams} stream{}", if streams > 1 { "s" } else { "" }),
                            "Gbit/s",
                            true,
                            peer,
                            g,
                        ),
                        Err(e) => notes.push(format!("{peer} TCP x{streams}: {e}")),
                    }
                }
                bar.inc(1);
            }
            if want("latency") {
                bar.set_message(format!("round {round}/{rounds}: {peer}: UDP ping-pong"));
                match latency(&topo, d.pings) {
                    Ok(v) => {
                        for (k, name) in [
                            ("p50", "RTT p50"),
                            ("p99", "RTT p99"),
                            ("p999", "RTT p99.9"),
                        ] {
                            record(
                                &mut figures,
                                "latency",
                                name,
                                "µs",
                                false,
                                peer,
                                v[k].as_f64().unwrap_or(f64::NAN),
                            );
                        }
                    }
                    Err(e) => notes.push(format!("{peer} latency: {e}")),
                }
                bar.inc(1);
            }
            if want("pps") {
                bar.set_message(format!("round {round}/{rounds}: {peer}: 64-byte UDP"));
                match pps(&topo, d.pps, Sink::Interface) {
                    Ok((kpps, loss)) => {
                        record(
                            &mut figures,
                            "pps",
                            "64B UDP forwarded",
                            "kpps",
                            true,
                            peer,
                            kpps,
                        );
                        record(&mut figures, "pps", "64B UDP loss", "%", false, peer, loss);
                    }
                    Err(e) => notes.push(format!("{peer} pps: {e}")),
                }
                bar.set_message(format!(
                    "round {round}/{rounds}: {peer}: 64-byte UDP into a socket"
                ));
                match pps(&topo, d.pps, Sink::Socket) {
                    Ok((kpps, _)) => record(
                        &mut figures,
                        "pps",
                        "64B UDP into a socket",
                        "kpps",
                        true,
                        peer,
                        kpps,
                    ),
                    Err(e) => notes.push(format!("{peer} pps (socket): {e}")),
                }
                bar.inc(1);
            }
            if want("macs") {
                bar.set_message(format!(
                    "round {round}/{rounds}: {peer}: 100 000 source MACs"
                ));
                match mac_scale(&topo, d.pps, 100_000) {
                    Ok((kpps, loss)) => {
                        record(
                            &mut figures,
                            "macs",
                            "64B UDP from 100k MACs",
                            "kpps",
                            true,
                            peer,
                            kpps,
                        );
                        record(
                            &mut figures,
                            "macs",
                            "64B UDP from 100k MACs loss",
                            "%",
                            false,
                            peer,
                            loss,
                        );
                    }
                    Err(e) => notes.push(format!("{peer} macs: {e}")),
                }
                bar.inc(1);
            }
            drop(topo);
        }
    }
    if want("pps") || want("macs") {
        notes.push("pps, macs: the generator sends 64-byte frames with sendmmsg on an AF_PACKET socket that bypasses the qdisc; \"forwarded\" counts them at the server's interface (an nftables ingress rule counts and drops them), so it measures the switch (with AF_XDP ports, the veth's XDP receive into the switch runs on the generator's CPU, inside its sendmmsg: on 2 CPUs that figure is bounded by both CPUs together); \"into a socket\" counts what a receiver process reads with recvmmsg, which on 2 CPUs competes with the generator and a userspace switch for the CPUs; \"loss\" is frames the generator handed over that never arrived (a full TAP or veth XDP queue refuses frames with ENOBUFS instead, which slows the generator and is not loss)".into());
    }
    if want("scale") {
        for port_type in ["tap", "afxdp"] {
            if !cli
                .peers
                .iter()
                .any(|p| *p == format!("vswitch-{port_type}"))
            {
                continue;
            }
            if let Err(e) = scale(cli.quick, port_type, &mut figures, &bar) {
                notes.push(format!("scale ({port_type}): {e}"));
            }
        }
        notes.push("scale: vswitch only, one namespace per port (add-port through the API, timed per call; the peers have no comparable call); AF_XDP ports up to 100 (each pins a 4 MiB UMEM, counted in RSS)".into());
    }
    bar.finish_and_clear();
    let mut seen = std::collections::HashSet::new();
    notes.retain(|n| seen.insert(n.clone()));
    let _ = std::io::stdout().flush();
    if let Err(e) = report(
        &figures,
        &peers_run,
        &notes,
        &machine(),
        cli.quick,
        &cli.out,
        rounds,
    ) {
        eprintln!("vswitch-bench: {e}");
        std::process::exit(1);
    }
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
