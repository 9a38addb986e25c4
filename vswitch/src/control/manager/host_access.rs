//! Host access (`network create --host-access`, `host_access = true`): vswitchd's own
//! namespace — the host's — joins a network through a TAP named `vsw-NETWORK`, with an address
//! of its own from IPAM, as docker0 joins Docker's bridge. The host reaches containers by their
//! addresses (the kernel's connected route for the subnet points at the TAP) and containers
//! reach the host at that address, named `host.vswitch.internal` by the network's DNS.
//!
//! On a macvlan or ipvlan network (Docker's macvlan cannot reach its own host, moby/moby
//! 21735) the host's own address on the parent's segment may sit in the network's subnet, its
//! route out of the parent; so the TAP has a /32 and routes the network's address range only,
//! which the host then reaches through the switch rather than through the parent.
//!
//! The interface is a port like any other (`port ls` and `port stats` show it; it is persisted
//! and restored with the ports), marked `host`, with no default route (the host keeps its own)
//! and no port security (the host's stack is trusted to send from any of its addresses). It
//! goes with its network; a clean stop removes it and the next start makes it again.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tracing::{info, warn};

use super::{internal, invalid, ApiResult, Manager};
use crate::api::*;
use crate::state::{Change, NetworkConfig, PortConfig};

/// The DNS name of the host on a network with host access (Docker's `host.docker.internal`).
pub const HOST_NAME: &str = "host.vswitch.internal";

/// The namespace of a host-access port: vswitchd's own.
pub const OWN_NETNS: &str = "/proc/self/ns/net";

/// `vsw-NETWORK`, cut to the kernel's 15 characters.
pub fn host_ifname(network: &str) -> String {
    let mut name = format!("vsw-{network}");
    name.truncate(15);
    name
}

/// Routes of vswitchd's namespace (IPv4, main table; the default route left out) that overlap
/// `subnet`, read from /proc/net/route: as "DEST/LEN dev IFACE".
fn overlapping_routes(subnet: Ipv4Net) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    // The kernel prints each address as the native integer of its network-order bytes.
    let addr = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| Ipv4Addr::from(v.to_ne_bytes()))
    };
    let mut found = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let (Some(dst), Some(mask)) = (addr(f[1]), addr(f[7])) else {
            continue;
        };
        let mask = u32::from(mask);
        let len = mask.leading_ones() as u8;
        if len == 0 {
            continue;
        }
        let Ok(route) = Ipv4Net::new(dst, len) else {
            continue;
        };
        if route.contains(&subnet.network()) || subnet.contains(&route.network()) {
            found.push(format!("{route} dev {}", f[0]));
        }
    }
    found
}

impl Manager {
    /// The port that gives `net` host access, made (validated, not attached).
    fn host_port_config(&self, net: &NetworkConfig) -> ApiResult<PortConfig> {
        let ifname = host_ifname(&net.name);
        if let Some(p) = self
            .state
            .ports
            .iter()
            .find(|p| p.host && p.ifname == ifname)
        {
            return Err(ApiError::new(
                ErrorCode::IfnameTaken,
                format!(
                    "host interface {ifname} is network {:?}'s already; a network name that differs within its first 11 characters gets its own",
                    p.network
                ),
            ));
        }
        if crate::sandbox::link_exists(&ifname) {
            return Err(ApiError::new(
                ErrorCode::IfnameTaken,
                format!("the host already has an interface named {ifname}"),
            ));
        }
        if net.parent.is_some() {
            // macvlan and ipvlan: the host's route to the segment may hold the subnet; the
            // TAP routes the containers' range, which must be narrower than any such route.
            let range = net.pool();
            let routes: Vec<String> = overlapping_routes(range)
                .into_iter()
                .filter(|r| {
                    r.split_once(' ')
                        .and_then(|(p, _)| p.parse::<Ipv4Net>().ok())
                        .is_some_and(|p| p.prefix_len() >= range.prefix_len())
                })
                .collect();
            if !routes.is_empty() {
                return Err(invalid(format!(
                    "host access: the containers' range {range} is routed by the host already ({}); give the network an --ip-range inside that route",
                    routes.join(", ")
                )));
            }
        } else {
            let routes = overlapping_routes(net.subnet);
            if !routes.is_empty() {
                return Err(invalid(format!(
                    "host access: subnet {} overlaps the host's routes ({}); choose another subnet",
                    net.subnet,
                    routes.join(", ")
                )));
            }
        }
        let req = PortAdd {
            network: net.name.clone(),
            netns: OWN_NETNS.into(),
            ifname: Some(ifname.clone()),
            name: Some(ifname),
            aliases: vec![HOST_NAME.into()],
            kind: Some("tap".into()),
            port_security: Some(false),
            ..Default::default()
        };
        let mut cfg = self.validate_port(&req)?;
        cfg.host = true;
        Ok(cfg)
    }

    /// Gives `net` its host-access interface and records it; on failure nothing is left.
    pub(super) fn host_access_up(&mut self, net: &NetworkConfig) -> ApiResult<PortConfig> {
        let cfg = self.host_port_config(net)?;
        let rt = self.attach_port(&cfg, false)?;
        let id = rt
            .id
            .ok_or_else(|| internal("host port attached without an id"))?;
        self.ports.insert(cfg.name.clone(), rt);
        self.state.ports.push(cfg.clone());
        if let Err(e) = self.record(Change::PortAdd(cfg.clone())) {
            self.state.ports.pop();
            self.ports.remove(&cfg.name);
            let _ = self.dp_call(|done| crate::dataplane::Command::RemovePort { id, done });
            self.forget_port(&cfg);
            return Err(e);
        }
        let ip = cfg.ip.map(|i| i.to_string()).unwrap_or_default();
        info!(network = %net.name, ifname = %cfg.ifname, %ip, "host access up");
        self.refresh_container_files();
        Ok(cfg)
    }

    /// At start, a declared network's host access as the config has it: made when the state
    /// has no interface for it, taken away when the config no longer asks for it.
    pub(super) fn declared_host_access(&mut self, declared: &NetworkConfig) {
        let Some(net) = self
            .state
            .networks
            .iter()
            .find(|n| n.name == declared.name)
            .cloned()
        else {
            return;
        };
        let port = self
            .state
            .ports
            .iter()
            .find(|p| p.host && p.network == net.name)
            .map(|p| p.name.clone());
        let result = match (declared.host_access, port) {
            (true, None) => self.host_access_up(&net).map(|_| ()),
            (false, Some(port)) => self.delete_port(&port).map(|_| ()),
            _ => Ok(()),
        };
        if let Err(e) = result {
            warn!(network = %net.name, error = %e.message, "host access for the network not changed");
        }
    }

    /// What `network inspect` shows of a network's host access.
    pub(super) fn host_access_info(&self, net: &NetworkConfig) -> Option<HostAccessInfo> {
        let p = self
            .state
            .ports
            .iter()
            .find(|p| p.host && p.network == net.name)?;
        let status = match self.ports.get(&p.name) {
            Some(rt) if rt.id.is_some() => "up".to_string(),
            Some(rt) => format!(
                "detached: {}",
                rt.detail.clone().unwrap_or_else(|| "down".into())
            ),
            None => "detached".into(),
        };
        Some(HostAccessInfo {
            ifname: p.ifname.clone(),
            ip: p.ip.map(|i| i.to_string()).unwrap_or_default(),
            status,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_ifnames_fit_the_kernel() {
        assert_eq!(host_ifname("bridge"), "vsw-bridge");
        assert_eq!(host_ifname("a-very-long-network-name"), "vsw-a-very-long");
        assert!(host_ifname("a-very-long-network-name").len() <= 15);
    }
}
