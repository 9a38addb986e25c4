//! The `tap-copy` peer: no switch at all, the ceiling for TAP ports.

use std::process::{Command, Stdio};

use super::{Topology, CLIENT_IP, SERVER_IP};
use crate::sandbox::{prefix, Ns, Proc};

/// The TAP-to-TAP copy loop (`tap-copy` helper): what a userspace forwarder on TAPs can reach
/// at best here, with no switching at all.
pub fn tap_copy_topology() -> Result<Topology, String> {
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
        client_ip: CLIENT_IP,
        gateway_mac: None,
        _keep: vec![Box::new(helper)],
    })
}
