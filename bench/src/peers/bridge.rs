//! The Linux bridge: `br0` in a switch namespace, the veths' switch ends enslaved to it.

use super::{veth_pair_topology, Topology, CLIENT_IP, SERVER_IP};
use crate::sandbox::{prefix, Ns};

pub fn bridge() -> Result<Topology, String> {
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
        client_ip: CLIENT_IP,
        gateway_mac: None,
        _keep: vec![Box::new(sw)],
    })
}
