//! Open vSwitch's userspace datapath, with an ovsdb-server and ovs-vswitchd of its own.

use std::path::Path;
use std::process::{Command, Stdio};

use super::{veth_pair_topology, Topology, CLIENT_IP, SERVER_IP};
use crate::sandbox::{prefix, run, temp_dir, wait_for, Ns, Proc};

/// Open vSwitch with the userspace (`netdev`) datapath and userspace TSO, its db and daemon
/// started here with their own run dir, inside the switch namespace; stopped (by PID)
/// afterwards.
pub fn ovs() -> Result<Topology, String> {
    ovs_with(false)
}

/// The same datapath with its veths as `type=afxdp` ports (`ovs-afxdp`: OVS's own AF_XDP
/// sockets, polled by its PMD thread), the peer of vswitch's AF_XDP ports. Its afxdp ports take
/// no TSO, so the endpoints send plain frames, as vswitch's AF_XDP containers do.
pub fn ovs_afxdp() -> Result<Topology, String> {
    ovs_with(true)
}

fn ovs_with(afxdp: bool) -> Result<Topology, String> {
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
    // OVS at its best for TCP between veths: userspace TSO (read at ovs-vswitchd's start), the
    // endpoints' offloads left on. Measured here (OVS 3.1): 3.6 Gbit/s one stream, against
    // 0.44 with every offload off (what this peer used to run with).
    if !afxdp {
        vsctl(&[
            "--no-wait",
            "set",
            "Open_vSwitch",
            ".",
            "other_config:userspace-tso-enable=true",
        ])?;
    }
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
    if afxdp {
        for (ns, i) in [
            (&client, "eth0"),
            (&server, "eth0"),
            (&sw, "v1"),
            (&sw, "v2"),
        ] {
            let _ = ns.exec(&[
                "ethtool", "-K", i, "tx", "off", "tso", "off", "gso", "off", "gro", "off",
            ]);
        }
    }
    for v in ["v1", "v2"] {
        if afxdp {
            vsctl(&[
                "add-port",
                "br0",
                v,
                "--",
                "set",
                "interface",
                v,
                "type=afxdp",
            ])?;
        } else {
            vsctl(&["add-port", "br0", v])?;
        }
    }
    sw.exec(&["ip", "link", "set", "br0", "up"]).ok();
    Ok(Topology {
        client,
        server,
        server_ip: SERVER_IP,
        client_ip: CLIENT_IP,
        gateway_mac: None,
        _keep: vec![Box::new(vsp), Box::new(dbp), Box::new(sw), Box::new(dir)],
    })
}
