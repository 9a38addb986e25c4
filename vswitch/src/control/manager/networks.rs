//! Networks: validating a create request, attaching a network (and its restored leases) to the
//! dataplane, create, remove, and the `NetworkInfo` views of them.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tracing::info;

use super::{
    check_name, gateway_mac, invalid, unix_now, valid_dns_name, ApiResult, Manager, PortRt,
    MAX_AGING_SECS, MAX_FDB_LIMIT, MAX_GATEWAY_RATE,
};
use crate::api::*;
use crate::dataplane::Command;
use crate::state::{
    Change, NetworkConfig, DEFAULT_FDB_LIMIT, DEFAULT_LEASE_SECS, DEFAULT_MAC_AGING_SECS,
};
use crate::switch::gateway::{DhcpConfig, GatewayConfig, LeaseRecord};
use crate::switch::{NetId, NetworkParams};

impl Manager {
    pub(super) fn validate_network(&self, req: &NetworkCreate) -> ApiResult<NetworkConfig> {
        check_name("network", &req.name)?;
        if let Some(existing) = self.state.networks.iter().find(|n| n.name == req.name) {
            return Err(ApiError::new(
                ErrorCode::NetworkExists,
                format!(
                    "network {:?} already exists (subnet {})",
                    req.name, existing.subnet
                ),
            ));
        }
        let driver = req.driver.clone().unwrap_or_else(|| "bridge".into());
        if !["bridge", "overlay", "macvlan", "ipvlan"].contains(&driver.as_str()) {
            return Err(invalid(format!(
                "driver {driver:?} is not supported; use --driver bridge, overlay, macvlan or ipvlan"
            )));
        }
        let (vni, peers) = self.validate_overlay(&driver, req)?;
        if (req.encrypted || !req.peer_keys.is_empty()) && driver != "overlay" {
            return Err(invalid(
                "--encrypted and --peer-key apply to --driver overlay networks only",
            ));
        }
        if !req.peer_keys.is_empty() && !req.encrypted {
            return Err(invalid("--peer-key goes with --encrypted"));
        }
        if req.encrypted && req.learn_peers {
            return Err(invalid(
                "--learn-peers and --encrypted do not go together: a peer needs its key",
            ));
        }
        let peer_keys = super::encrypted::parse_peer_keys(&peers, &req.peer_keys)?;
        for (ip, k) in &peer_keys {
            let bytes = crate::ports::wg::parse_key(k).map_err(invalid)?;
            self.check_peer_key(&req.name, *ip, &bytes)?;
        }
        let (parent, mode) = self.validate_macvlan(&driver, req)?;
        let macvlan = parent.is_some();
        if macvlan && req.host_access && mode.as_deref() == Some("private") {
            return Err(invalid(
                "--host-access and --mode private do not go together: a private network's containers reach the parent's segment only",
            ));
        }
        let mtu = match req.mtu {
            Some(m) if !(super::MIN_MTU..=super::MAX_MTU).contains(&m) => {
                return Err(invalid(format!(
                    "MTU {m} is out of range ({} to {})",
                    super::MIN_MTU,
                    super::MAX_MTU
                )))
            }
            Some(m) => Some(m),
            // WireGuard's overhead comes on top of VXLAN's in an encrypted overlay.
            None if vni.is_some() && req.encrypted => Some(
                crate::state::DEFAULT_MTU
                    - crate::switch::overlay::OVERHEAD
                    - crate::ports::wg::OVERHEAD,
            ),
            None if vni.is_some() => {
                Some(crate::state::DEFAULT_MTU - crate::switch::overlay::OVERHEAD)
            }
            None => None,
        };
        let subnet: Ipv4Net = req.subnet.parse().map_err(|_| {
            invalid(format!(
                "invalid subnet {:?}: expected an IPv4 CIDR like 10.1.0.0/24",
                req.subnet
            ))
        })?;
        if subnet.trunc() != subnet {
            return Err(invalid(format!(
                "invalid subnet {subnet}: it has host bits set; did you mean {}?",
                subnet.trunc()
            )));
        }
        if subnet.prefix_len() > 30 || subnet.prefix_len() < 8 {
            return Err(invalid(format!(
                "subnet {subnet} must have a prefix length between /8 and /30"
            )));
        }
        // macvlan networks are segments of their own (each on its own parent or VLAN, routed
        // by the segment's router, not the switch's): their subnets may overlap each other's.
        if let Some(other) = self.state.networks.iter().find(|n| {
            !(macvlan && n.parent.is_some())
                && (n.subnet.contains(&subnet.network()) || subnet.contains(&n.subnet.network()))
        }) {
            return Err(ApiError::new(
                ErrorCode::SubnetOverlap,
                format!(
                    "subnet {subnet} overlaps network {:?} ({}); choose a disjoint subnet",
                    other.name, other.subnet
                ),
            ));
        }
        let gateway = match &req.gateway {
            None => subnet
                .hosts()
                .next()
                .ok_or_else(|| invalid("subnet has no hosts"))?,
            Some(g) => {
                let g: Ipv4Addr = g.parse().map_err(|_| {
                    invalid(format!("invalid gateway {g:?}: expected an IPv4 address"))
                })?;
                if !subnet.contains(&g) || g == subnet.network() || g == subnet.broadcast() {
                    return Err(invalid(format!(
                        "gateway {g} must be a host address inside subnet {subnet}"
                    )));
                }
                g
            }
        };
        let mac_aging_secs = req.mac_aging_secs.unwrap_or(DEFAULT_MAC_AGING_SECS);
        if !(1..=MAX_AGING_SECS).contains(&mac_aging_secs) {
            return Err(invalid(format!(
                "MAC aging {mac_aging_secs}s is out of range (1 to {MAX_AGING_SECS} seconds)"
            )));
        }
        let port_mac_limit = req
            .port_mac_limit
            .unwrap_or(crate::state::DEFAULT_PORT_MAC_LIMIT);
        if port_mac_limit > MAX_FDB_LIMIT {
            return Err(invalid(format!(
                "port MAC limit {port_mac_limit} is out of range (0 for none, or up to {MAX_FDB_LIMIT})"
            )));
        }
        let gateway_rate = req
            .gateway_rate
            .unwrap_or(crate::state::DEFAULT_GATEWAY_RATE);
        if gateway_rate > MAX_GATEWAY_RATE {
            return Err(invalid(format!(
                "gateway rate {gateway_rate} is out of range (0 for none, or up to {MAX_GATEWAY_RATE} a second)"
            )));
        }
        let fdb_limit = req.fdb_limit.unwrap_or(DEFAULT_FDB_LIMIT);
        if !(1..=MAX_FDB_LIMIT).contains(&fdb_limit) {
            return Err(invalid(format!(
                "FDB limit {fdb_limit} is out of range (1 to {MAX_FDB_LIMIT})"
            )));
        }
        let ip_range = match &req.ip_range {
            None => None,
            Some(r) => {
                let r: Ipv4Net = r.parse().map_err(|_| {
                    invalid(format!(
                        "invalid --ip-range {r:?}: expected a CIDR inside {subnet}"
                    ))
                })?;
                if r.trunc() != r || !subnet.contains(&r) {
                    return Err(invalid(format!(
                        "--ip-range {r} must be a CIDR (no host bits) inside subnet {subnet}"
                    )));
                }
                Some(r)
            }
        };
        let mut aux_addresses = Vec::new();
        for a in &req.aux_addresses {
            let ip_s = a.rsplit('=').next().unwrap_or(a);
            let ip: Ipv4Addr = ip_s.parse().map_err(|_| {
                invalid(format!(
                    "invalid --aux-address {a:?}: expected IP or NAME=IP inside {subnet}"
                ))
            })?;
            if !subnet.contains(&ip) || ip == subnet.network() || ip == subnet.broadcast() {
                return Err(invalid(format!(
                    "--aux-address {ip} is not a host address of subnet {subnet}"
                )));
            }
            if !aux_addresses.contains(&ip) {
                aux_addresses.push(ip);
            }
        }
        let lease_secs = req.lease_secs.unwrap_or(DEFAULT_LEASE_SECS);
        if !(60..=MAX_AGING_SECS).contains(&lease_secs) {
            return Err(invalid(format!(
                "lease time {lease_secs}s is out of range (60 to {MAX_AGING_SECS} seconds)"
            )));
        }
        if let Some(d) = &req.domain {
            if !valid_dns_name(d) {
                return Err(invalid(format!(
                    "invalid domain {d:?}: expected a DNS name like web.example"
                )));
            }
        }
        Ok(NetworkConfig {
            name: req.name.clone(),
            driver,
            subnet,
            gateway,
            mac_aging_secs,
            fdb_limit,
            ip_range,
            // A macvlan network has no router of the switch's: the gateway is the segment's,
            // so no DHCP or DNS from it either.
            dhcp: !macvlan && req.dhcp.unwrap_or(true),
            dns: !macvlan && req.dns.unwrap_or(true),
            arp_suppress: req.arp_suppress.unwrap_or(true),
            domain: req.domain.as_ref().map(|d| d.to_ascii_lowercase()),
            lease_secs,
            internal: req.internal,
            vni,
            peers,
            mtu,
            learn_peers: req.learn_peers,
            encrypted: req.encrypted,
            peer_keys,
            peer_endpoints: Default::default(),
            fdb: Vec::new(),
            cluster_peers: Vec::new(),
            port_security: req.port_security.unwrap_or(true),
            icc: req.icc.unwrap_or(true) && mode.as_deref() != Some("private"),
            host_access: req.host_access,
            port_mac_limit,
            gateway_rate,
            owner: req.owner.clone(),
            aux_addresses,
            parent,
            mode,
        })
    }

    pub(super) fn free_id<'a>(used: impl Iterator<Item = &'a u32>) -> u32 {
        let mut used: Vec<u32> = used.copied().collect();
        used.sort_unstable();
        let mut next = 0;
        for u in used {
            if u == next {
                next += 1;
            } else if u > next {
                break;
            }
        }
        next
    }

    pub(super) fn attach_network(&mut self, net: &NetworkConfig) -> ApiResult<NetId> {
        let id = NetId(Self::free_id(self.nets.values().map(|n| &n.0)));
        let pool = net.pool();
        let gateway = GatewayConfig {
            ip: net.gateway,
            mac: gateway_mac(net.gateway),
            subnet: net.subnet,
            arp_suppress: net.arp_suppress,
            dhcp: net.dhcp.then(|| DhcpConfig {
                range_start: pool.network(),
                range_end: pool.broadcast(),
                lease_secs: net.lease_secs,
                mtu: net.mtu.unwrap_or(crate::state::DEFAULT_MTU) as u16,
                excluded: net.aux_addresses.clone(),
            }),
            dns_names: net.dns,
            domain: net.domain(),
            dns_forward: self.dns_forward,
        };
        let params = NetworkParams {
            vni: net.vni,
            learn_peers: net.learn_peers,
            encrypted: net.encrypted,
            icc: net.icc,
            port_mac_limit: net.port_mac_limit,
            gateway_rate: net.gateway_rate,
            overlay_mtu: net.mtu.or(Some(
                crate::state::DEFAULT_MTU - crate::switch::overlay::OVERHEAD,
            )),
            fdb_limit: net.fdb_limit as usize,
            aging_ms: u64::from(net.mac_aging_secs) * 1000,
            gateway: net.parent.is_none().then_some(gateway),
            egress: !net.internal && net.parent.is_none(),
        };
        self.dp_call(|done| Command::AddNetwork { id, params, done })?;
        self.nets.insert(net.name.clone(), id);
        self.attach_tunnels(net);
        let now = unix_now();
        let leases: Vec<LeaseRecord> = self
            .leases
            .iter()
            .filter(|l| l.network == net.name && l.expires > now)
            .map(|l| LeaseRecord {
                mac: l.mac,
                ip: l.ip,
                hostname: l.hostname.clone(),
                remaining_secs: (l.expires - now).min(u64::from(u32::MAX)) as u32,
            })
            .collect();
        if !leases.is_empty() {
            self.dp_call(|done| Command::RestoreLeases {
                network: id,
                leases,
                done,
            })?;
        }
        Ok(id)
    }

    pub(super) fn network_create(&mut self, req: NetworkCreate) -> ApiResult<Reply> {
        let cfg = self.validate_network(&req)?;
        // With a cluster store an overlay is the cluster's: in the store first.
        self.cluster_create_network(&cfg)?;
        let id = self.attach_network(&cfg)?;
        if let Err(e) = self.attach_parent(&cfg, id, false) {
            self.nets.remove(&cfg.name);
            let _ = self.dp_call(|done| Command::RemoveNetwork { id, done });
            return Err(e);
        }
        self.state.networks.push(cfg.clone());
        if let Err(e) = self.record(Change::NetworkAdd(cfg.clone())) {
            self.state.networks.pop();
            self.detach_parent(&cfg.name);
            self.nets.remove(&cfg.name);
            let _ = self.dp_call(|done| Command::RemoveNetwork { id, done });
            return Err(e);
        }
        if cfg.host_access {
            if let Err(e) = self.host_access_up(&cfg) {
                // Nothing of the network is left: it is created with its host access or not.
                let _ = self.network_remove(&cfg.name, true);
                return Err(e);
            }
        }
        info!(network = %cfg.name, subnet = %cfg.subnet, "network created");
        Ok(Reply::Network(self.network_info(&cfg)))
    }

    pub(super) fn network_remove(&mut self, name: &str, force: bool) -> ApiResult<Reply> {
        self.net_config(name)?;
        if self.declared.contains(name) {
            return Err(invalid(format!(
                "network {name:?} is declared in the config file and cannot be removed; remove it there"
            )));
        }
        let ports: Vec<String> = self
            .state
            .ports
            .iter()
            .filter(|p| p.network == name)
            .map(|p| p.name.clone())
            .collect();
        // The host-access interface goes with its network.
        let users: Vec<&String> = ports
            .iter()
            .filter(|p| !self.state.ports.iter().any(|c| c.host && &c.name == *p))
            .collect();
        if !users.is_empty() && !force {
            return Err(ApiError::new(
                ErrorCode::NetworkInUse,
                format!(
                    "network {name:?} has {} port(s) attached ({}); delete them first or use --force",
                    users.len(),
                    users.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        // A cluster overlay leaves the store first (and so every node without ports on it).
        self.cluster_remove_network(name)?;
        let saved = self.state.clone();
        let change = Change::NetworkRemove(name.to_string());
        self.state.apply(&change);
        if let Err(e) = self.record(change) {
            self.state = saved;
            return Err(e);
        }
        let net = saved.networks.iter().find(|n| n.name == name).cloned();
        for p in saved.ports.iter().filter(|p| p.network == name) {
            // The network is gone from the state already: its resolver entry goes here (it
            // used to stay behind, naming the vanished gateway).
            if let Some(net) = &net {
                Self::remove_resolv_of(p, net);
            }
            self.forget_port(p);
        }
        if let Some(net) = &net {
            if net.vni.is_some() {
                for p in saved.ports.iter().filter(|p| p.network == name) {
                    self.cluster_forget_port_of(p);
                }
            }
        }
        self.leases.retain(|l| l.network != name);
        self.save_leases();
        for p in &ports {
            if let Some(PortRt { id: Some(id), .. }) = self.ports.remove(p) {
                self.dp_call(|done| Command::RemovePort { id, done })?;
            }
        }
        self.detach_tunnels(name);
        self.detach_parent(name);
        if let Some(id) = self.nets.remove(name) {
            self.dp_call(|done| Command::RemoveNetwork { id, done })?;
        }
        self.refresh_container_files();
        info!(network = %name, ports = ports.len(), "network removed");
        Ok(Reply::Done)
    }

    pub(super) fn network_info(&self, n: &NetworkConfig) -> NetworkInfo {
        let mut ports: Vec<String> = self
            .state
            .ports
            .iter()
            .filter(|p| p.network == n.name)
            .map(|p| p.name.clone())
            .collect();
        ports.sort();
        NetworkInfo {
            name: n.name.clone(),
            driver: n.driver.clone(),
            subnet: n.subnet.to_string(),
            gateway: n.gateway.to_string(),
            mac_aging_secs: n.mac_aging_secs,
            fdb_limit: n.fdb_limit,
            ip_range: n.pool().to_string(),
            gateway_mac: gateway_mac(n.gateway).to_string(),
            dhcp: n.dhcp,
            dns: n.dns,
            arp_suppress: n.arp_suppress,
            domain: n.domain(),
            lease_secs: n.lease_secs,
            ports,
            vni: n.vni,
            peers: n.peers.iter().map(|p| p.to_string()).collect(),
            encrypted: n.encrypted,
            port_security: n.port_security,
            icc: n.icc,
            host_access: self.host_access_info(n),
            port_mac_limit: n.port_mac_limit,
            gateway_rate: n.gateway_rate,
            internal: n.internal,
            aux_addresses: n.aux_addresses.iter().map(|a| a.to_string()).collect(),
            owner: n.owner.clone(),
            parent: n.parent.clone(),
            mode: n.mode.clone(),
            parent_error: self.macvlan_info(n),
        }
    }

    pub(super) fn network_infos(&self) -> Vec<NetworkInfo> {
        let mut v: Vec<NetworkInfo> = self
            .state
            .networks
            .iter()
            .map(|n| self.network_info(n))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}
