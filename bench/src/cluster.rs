//! The `cluster` scenario: two "hosts" (namespaces on one underlay veth, as in `vxlan`), a
//! vswitchd in each, one overlay network. `vswitch-cluster` keeps it in a real etcd (Debian's
//! etcd-server, in host A's namespace) with `--store`; `vswitch-overlay` is the same overlay with
//! static peers and no store, the reference for what the store adds to an add-port.
//!
//! Host B gets `PORTS` ports first; then `PORTS` add-ports on host A are timed one by one, and
//! (with the store) the time from each add-port request until host B's FDB has its entry.
//! The target: add-port p99 ≤ 20 ms with the store at 100 ports per host.

use std::time::{Duration, Instant};

use indicatif::ProgressBar;

use crate::peers::Vswitchd;
use crate::report::{record, Goal, Target};
use crate::sandbox::{prefix, temp_dir, wait_for, Ns, Proc};
use crate::Gathered;

pub const PEERS: [&str; 2] = ["vswitch-overlay", "vswitch-cluster"];
const PORTS: usize = 100;
const HOST_A: &str = "10.203.0.1";
const HOST_B: &str = "10.203.0.2";

pub fn steps(rounds: u32) -> u64 {
    rounds as u64 * PEERS.len() as u64
}

pub fn targets() -> Vec<Target> {
    vec![Target {
        scenario: "cluster",
        metric: "add-port p99",
        goal: Goal::AtMost {
            peer: "vswitch-cluster",
            max: 20.0,
        },
    }]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return 0.0;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

struct Hosts {
    a: Vswitchd,
    b: Vswitchd,
    _etcd: Option<Proc>,
    _dir: Option<crate::sandbox::TempDir>,
    ns_a: Ns,
    ns_b: Ns,
    _ha: Ns,
    _hb: Ns,
}

fn build(peer: &str) -> Result<Hosts, String> {
    use vswitch::api::{NetworkCreate, Op, VtepSet};
    let p = prefix();
    let ha = Ns::new(format!("{p}ka"))?;
    let hb = Ns::new(format!("{p}kb"))?;
    ha.exec(&[
        "ip", "link", "add", "ul", "type", "veth", "peer", "name", "ul", "netns", &hb.0,
    ])?;
    for (ns, ip) in [(&ha, HOST_A), (&hb, HOST_B)] {
        ns.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "ul"])?;
        ns.exec(&["ip", "link", "set", "ul", "up"])?;
    }
    let store = peer == "vswitch-cluster";
    let (etcd, dir) = if store {
        let dir = temp_dir("etcd");
        let client = format!("http://{HOST_A}:2379");
        let peer_url = format!("http://{HOST_A}:2380");
        let data = dir.0.join("data").display().to_string();
        let proc = Proc(
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &ha.0,
                    "etcd",
                    "--name",
                    "m1",
                    "--data-dir",
                    &data,
                ])
                .args([
                    "--listen-client-urls",
                    &client,
                    "--advertise-client-urls",
                    &client,
                ])
                .args([
                    "--listen-peer-urls",
                    &peer_url,
                    "--initial-advertise-peer-urls",
                    &peer_url,
                ])
                .args(["--initial-cluster", &format!("m1={peer_url}")])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .map_err(|e| format!("etcd: {e} (install etcd-server)"))?,
        );
        let up = wait_for(20, || {
            ha.exec(&["etcdctl", "--endpoints", &client, "endpoint", "health"])
                .is_ok()
        });
        if !up {
            return Err("etcd did not come up".into());
        }
        (Some(proc), Some(dir))
    } else {
        (None, None)
    };
    let url = format!("etcd://{HOST_A}:2379");
    let start = |ns: &Ns, name: &str| -> Result<Vswitchd, String> {
        if store {
            Vswitchd::start_with(Some(ns), &["--store", &url, "--node-name", name])
        } else {
            Vswitchd::start(Some(ns))
        }
    };
    let a = start(&ha, "a")?;
    let b = start(&hb, "b")?;
    for (d, me, other) in [(&a, HOST_A, HOST_B), (&b, HOST_B, HOST_A)] {
        d.call(Op::VtepSet(VtepSet {
            local_ip: me.into(),
            ..Default::default()
        }))?;
        if !store {
            d.call(Op::NetworkCreate(NetworkCreate {
                name: "ov".into(),
                driver: Some("overlay".into()),
                vni: Some(44),
                subnet: "10.204.0.0/16".into(),
                ip_range: Some(if me == HOST_A {
                    "10.204.0.0/17".into()
                } else {
                    "10.204.128.0/17".into()
                }),
                peers: vec![other.into()],
                ..Default::default()
            }))?;
        }
    }
    if store {
        if !wait_for(
            15,
            || matches!(a.call(Op::ClusterShow), Ok(vswitch::api::Reply::Cluster(c)) if c.status == "connected"),
        ) {
            return Err("vswitchd did not reach etcd".into());
        }
        a.call(Op::NetworkCreate(NetworkCreate {
            name: "ov".into(),
            driver: Some("overlay".into()),
            vni: Some(44),
            subnet: "10.204.0.0/16".into(),
            ..Default::default()
        }))?;
        let seen = wait_for(
            10,
            || matches!(b.call(Op::NetworkList), Ok(vswitch::api::Reply::Networks(n)) if n.iter().any(|n| n.name == "ov")),
        );
        if !seen {
            return Err("the store's network did not reach host B".into());
        }
    }
    let ns_a = Ns::new(format!("{p}pa"))?;
    let ns_b = Ns::new(format!("{p}pb"))?;
    Ok(Hosts {
        a,
        b,
        _etcd: etcd,
        _dir: dir,
        ns_a,
        ns_b,
        _ha: ha,
        _hb: hb,
    })
}

fn add(d: &Vswitchd, ns: &Ns, i: usize) -> Result<String, String> {
    use vswitch::api::{Op, PortAdd, Reply};
    match d.call(Op::PortAdd(PortAdd {
        network: "ov".into(),
        netns: ns.0.clone(),
        ifname: Some(format!("e{i}")),
        kind: Some("tap".into()),
        ..Default::default()
    }))? {
        Reply::Port(p) => Ok(p.mac),
        other => Err(format!("add-port: {other:?}")),
    }
}

fn in_fdb(d: &Vswitchd, mac: &str) -> bool {
    use vswitch::api::{Op, Reply};
    matches!(
        d.call(Op::FdbShow { network: Some("ov".into()) }),
        Ok(Reply::Fdb(t)) if t.iter().any(|t| t.entries.iter().any(|e| e.mac == mac))
    )
}

pub fn run_peer(peer: &str, stage: &str, bar: &ProgressBar, g: &mut Gathered) {
    bar.set_message(format!("{stage}: {peer}: setting up"));
    let h = match build(peer) {
        Ok(h) => h,
        Err(e) => {
            g.notes.push(format!("cluster: {peer} skipped: {e}"));
            bar.inc(1);
            return;
        }
    };
    if !g.peers_run.iter().any(|p| p == peer) {
        g.peers_run.push(peer.to_string());
    }
    bar.set_message(format!("{stage}: {peer}: {PORTS} ports on each host"));
    for i in 0..PORTS {
        if let Err(e) = add(&h.b, &h.ns_b, i) {
            g.notes
                .push(format!("cluster: {peer}: host B add-port: {e}"));
            bar.inc(1);
            return;
        }
    }
    let store = peer == "vswitch-cluster";
    let mut lat = Vec::new();
    let mut spread = Vec::new();
    for i in 0..PORTS {
        let t0 = Instant::now();
        let mac = match add(&h.a, &h.ns_a, i) {
            Ok(m) => m,
            Err(e) => {
                g.notes
                    .push(format!("cluster: {peer}: host A add-port: {e}"));
                break;
            }
        };
        lat.push(t0.elapsed().as_secs_f64() * 1e3);
        if store {
            let end = t0 + Duration::from_secs(5);
            while !in_fdb(&h.b, &mac) && Instant::now() < end {
                std::thread::sleep(Duration::from_micros(200));
            }
            if Instant::now() < end {
                spread.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
    }
    record(
        &mut g.figures,
        "cluster",
        "add-port p50",
        "ms",
        false,
        peer,
        percentile(&mut lat, 0.5),
    );
    record(
        &mut g.figures,
        "cluster",
        "add-port p99",
        "ms",
        false,
        peer,
        percentile(&mut lat, 0.99),
    );
    if store {
        if spread.len() < PORTS {
            g.notes.push(format!(
                "cluster: {} of {PORTS} entries did not reach host B within 5 s",
                PORTS - spread.len()
            ));
        }
        record(
            &mut g.figures,
            "cluster",
            "host B has the entry p50",
            "ms",
            false,
            peer,
            percentile(&mut spread, 0.5),
        );
        record(
            &mut g.figures,
            "cluster",
            "host B has the entry p99",
            "ms",
            false,
            peer,
            percentile(&mut spread, 0.99),
        );
    }
    g.notes.push(format!("cluster: two hosts (namespaces on one underlay veth) with vswitchd each on one overlay network; host B gets {PORTS} TAP ports, then {PORTS} add-ports on host A are timed one by one. vswitch-cluster keeps the network, address claims (an etcd transaction per add-port) and endpoints in one etcd member (Debian's etcd-server 3.4, in host A's namespace, data on this machine's disk); \"host B has the entry\" is the time from the add-port request on A until B's FDB lists the new MAC (polled every 0.2 ms). vswitch-overlay is the same without a store (static peers, per-host --ip-range)."));
    bar.inc(1);
}
