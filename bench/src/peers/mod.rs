//! The peers under test, each built as a [`Topology`]: client and server namespaces joined by
//! one switch. One file per peer: `bridge.rs` (the Linux bridge), `ovs.rs` (Open vSwitch's
//! userspace datapath), `tap_copy.rs` (the TAP-to-TAP copy loop, no switch at all),
//! `vswitchd.rs` (vswitch with TAP or AF_XDP ports) and `nat.rs` (the `nat` scenario's worlds:
//! the kernel's NAT and vswitch's, between a container and an external namespace).

mod bridge;
mod nat;
mod ovs;
mod tap_copy;
mod vswitchd;

pub use bridge::bridge;
pub use nat::{
    kernel_dnat, kernel_nat, socat_relay, vswitch_dnat, vswitch_nat, vswitch_nat_packet,
    vswitch_relay,
};
pub use ovs::{ovs, ovs_afxdp};
pub use tap_copy::tap_copy_topology;
pub use vswitchd::{vswitch_topology, Vswitchd};

use crate::sandbox::{prefix, Ns};

/// Client and server namespaces joined by one switch, with whatever keeps it running.
pub struct Topology {
    pub client: Ns,
    pub server: Ns,
    pub server_ip: &'static str,
    /// The client's own address (the source of generated frames).
    pub client_ip: &'static str,
    /// Where the client's frames to the server go when that is not the server's `eth0`: the
    /// MAC of the NAT's gateway.
    pub gateway_mac: Option<String>,
    _keep: Vec<Box<dyn std::any::Any>>,
}

impl Topology {
    /// A topology kept running by `keep` (dropped in order).
    pub fn new(
        client: Ns,
        server: Ns,
        server_ip: &'static str,
        client_ip: &'static str,
        keep: Vec<Box<dyn std::any::Any>>,
    ) -> Topology {
        Topology {
            client,
            server,
            server_ip,
            client_ip,
            gateway_mac: None,
            _keep: keep,
        }
    }

    /// The first thing of type `T` that keeps this topology running (its vswitchd, the
    /// kernel NAT's router namespace).
    pub fn kept<T: 'static>(&self) -> Option<&T> {
        self._keep.iter().find_map(|k| k.downcast_ref::<T>())
    }

    /// The vswitchd serving this topology, if it is one of ours.
    pub fn daemon(&self) -> Option<&Vswitchd> {
        self.kept::<Vswitchd>()
    }
}

pub const CLIENT_IP: &str = "10.250.0.1";
pub const SERVER_IP: &str = "10.250.0.2";

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
