//! Addresses: IPAM (the first free address, or a requested one checked), the persisted DHCP
//! leases kept in step with the dataplane's events, and the resolv.conf upkeep of named
//! namespaces.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tracing::{info, warn};

use super::{invalid, unix_now, ApiResult, Manager};
use crate::api::*;
use crate::control::resolv;
use crate::sandbox::NetnsSpec;
use crate::state::{NetworkConfig, PortConfig, StoredLease};
use crate::switch::gateway::Event;
use crate::wire::MacAddr;

impl Manager {
    /// Addresses of an overlay network's remote endpoints: its static entries' and those the
    /// gateway has heard (ARP) from behind a remote VTEP, with that MAC and VTEP. Until a
    /// shared store exists, this is how one host knows what the others hand out.
    pub(super) fn remote_addresses(
        &self,
        net: &NetworkConfig,
    ) -> Vec<(Ipv4Addr, MacAddr, Ipv4Addr)> {
        if net.vni.is_none() {
            return Vec::new();
        }
        let mut v: Vec<(Ipv4Addr, MacAddr, Ipv4Addr)> = net
            .fdb
            .iter()
            .filter_map(|e| e.ip.map(|ip| (ip, e.mac, e.vtep)))
            .collect();
        let (Some(id), Ok(snap)) = (self.nets.get(&net.name), self.snapshot()) else {
            return v;
        };
        if let Some(ns) = snap.networks.iter().find(|n| n.id == *id) {
            for (ip, n) in &ns.neighbors {
                if let Some(vtep) = self.tunnel_vtep(n.port) {
                    if !v.iter().any(|(i, _, _)| i == ip) {
                        v.push((*ip, n.mac, vtep));
                    }
                }
            }
        }
        v
    }

    /// IPAM: the first free address of the network's range.
    pub(super) fn allocate_ip(
        &self,
        net: &NetworkConfig,
        peers: &[&PortConfig],
        mac: Option<&str>,
    ) -> ApiResult<Ipv4Net> {
        let now = unix_now();
        let mac: Option<MacAddr> = mac.and_then(|m| m.parse().ok());
        let pool = net.pool();
        let mut used: HashSet<Ipv4Addr> = peers
            .iter()
            .filter_map(|p| p.ip.map(|i| i.addr()))
            .collect();
        used.extend(
            self.leases
                .iter()
                .filter(|l| l.network == net.name && l.expires > now && Some(l.mac) != mac)
                .map(|l| l.ip),
        );
        used.extend([net.gateway, net.subnet.network(), net.subnet.broadcast()]);
        used.extend(net.aux_addresses.iter().copied());
        used.extend(self.remote_addresses(net).into_iter().map(|(ip, _, _)| ip));
        // Addresses other nodes claimed in the cluster store.
        used.extend(self.cluster_claimed(&net.name));
        let taken = |ip: Ipv4Addr| used.contains(&ip);
        let (start, end) = (u32::from(pool.network()), u32::from(pool.broadcast()));
        (start..=end)
            .map(Ipv4Addr::from)
            .find(|ip| !taken(*ip))
            .map(|ip| Ipv4Net::new(ip, net.subnet.prefix_len()).expect("valid prefix"))
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::AddressPoolExhausted,
                    format!(
                        "no free address left in {} of network {:?}; remove ports or widen --ip-range",
                        pool, net.name
                    ),
                )
            })
    }

    pub(super) fn validate_ip(
        &self,
        s: &str,
        net: &NetworkConfig,
        peers: &[&PortConfig],
    ) -> ApiResult<Ipv4Net> {
        let bad = || {
            invalid(format!(
                "invalid address {s:?}: expected an IPv4 address like {} or {}/{}",
                net.gateway,
                net.gateway,
                net.subnet.prefix_len()
            ))
        };
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (
                a.parse::<Ipv4Addr>().map_err(|_| bad())?,
                Some(p.parse::<u8>().map_err(|_| bad())?),
            ),
            None => (s.parse::<Ipv4Addr>().map_err(|_| bad())?, None),
        };
        if let Some(p) = prefix {
            if p != net.subnet.prefix_len() {
                return Err(invalid(format!(
                    "address {s} has prefix /{p} but network {:?} is {}; use /{} or no prefix",
                    net.name,
                    net.subnet,
                    net.subnet.prefix_len()
                )));
            }
        }
        if !net.subnet.contains(&addr) {
            return Err(invalid(format!(
                "address {addr} is outside network {:?} ({})",
                net.name, net.subnet
            )));
        }
        if addr == net.subnet.network() || addr == net.subnet.broadcast() {
            return Err(invalid(format!(
                "address {addr} is the network or broadcast address of {}",
                net.subnet
            )));
        }
        if addr == net.gateway {
            return Err(ApiError::new(
                ErrorCode::AddressInUse,
                format!("address {addr} is the gateway of network {:?}", net.name),
            ));
        }
        if net.aux_addresses.contains(&addr) {
            return Err(ApiError::new(
                ErrorCode::AddressInUse,
                format!(
                    "address {addr} is an auxiliary address of network {:?} (--aux-address), never handed out",
                    net.name
                ),
            ));
        }
        if let Some(p) = peers.iter().find(|p| p.ip.map(|i| i.addr()) == Some(addr)) {
            return Err(ApiError::new(
                ErrorCode::AddressInUse,
                format!("address {addr} is already used by port {:?}", p.name),
            ));
        }
        if let Some((_, mac, vtep)) = self
            .remote_addresses(net)
            .into_iter()
            .find(|(ip, _, _)| *ip == addr)
        {
            return Err(ApiError::new(
                ErrorCode::AddressInUse,
                format!(
                    "address {addr} is used on network {:?} by {mac} behind the remote VTEP {vtep}",
                    net.name
                ),
            ));
        }
        Ipv4Net::new(addr, net.subnet.prefix_len()).map_err(|_| bad())
    }

    /// A DHCP lease changed in the dataplane: keep the persisted copy in step.
    pub fn on_event(&mut self, ev: Event) {
        let net_name = |id| {
            self.nets
                .iter()
                .find(|(_, n)| **n == id)
                .map(|(name, _)| name.clone())
        };
        let mut ack_after_save = None;
        match ev {
            Event::Lease {
                network,
                lease,
                ack,
            } => {
                ack_after_save = ack;
                let Some(network) = net_name(network) else {
                    return;
                };
                self.leases.retain(|l| {
                    !(l.network == network && (l.mac == lease.mac || l.ip == lease.ip))
                });
                info!(%network, mac = %lease.mac, ip = %lease.ip, "DHCP lease");
                let host = lease
                    .hostname
                    .as_deref()
                    .map(|h| format!(" ({h})"))
                    .unwrap_or_default();
                self.emit(
                    "lease",
                    Some(network.clone()),
                    self.state
                        .ports
                        .iter()
                        .find(|p| p.network == network && p.mac == lease.mac)
                        .map(|p| p.name.clone()),
                    format!("{} to {}{host}", lease.ip, lease.mac),
                );
                self.leases.push(StoredLease {
                    network,
                    mac: lease.mac,
                    ip: lease.ip,
                    hostname: lease.hostname,
                    expires: unix_now() + u64::from(lease.remaining_secs),
                });
            }
            // Handled by the DNS forwarder, not the control plane.
            Event::DnsForward(_) => return,
            Event::PeerLearned { network, vtep } => {
                let Some(network) = net_name(network) else {
                    return;
                };
                self.emit(
                    "peer-learned",
                    Some(network.clone()),
                    None,
                    format!("VTEP {vtep} sent for the network: now a peer"),
                );
                self.learn_peer(&network, vtep);
                return;
            }
            Event::MacMoved {
                network,
                mac,
                from,
                to,
            } => {
                let from = self.port_name_of(Some(from)).unwrap_or_else(|| "?".into());
                self.emit(
                    "mac-moved",
                    net_name(network),
                    self.port_name_of(Some(to)),
                    format!("{mac} moved here from {from}"),
                );
                return;
            }
            Event::PortDown { port, reason } => {
                let name = self.port_name_of(Some(port));
                let network = name.as_ref().and_then(|n| {
                    self.state
                        .ports
                        .iter()
                        .find(|p| &p.name == n)
                        .map(|p| p.network.clone())
                });
                self.emit("port-down", network, name, reason);
                return;
            }
            Event::ConntrackFull { refused } => {
                self.emit(
                    "conntrack-full",
                    None,
                    self.uplink_port().map(|(_, n)| n),
                    format!("{refused} new flow(s) refused in the last second: the table is full (uplink set --conntrack-max)"),
                );
                return;
            }
            Event::Released { network, mac } => {
                let Some(network) = net_name(network) else {
                    return;
                };
                info!(%network, %mac, "DHCP lease released");
                self.emit(
                    "lease-released",
                    Some(network.clone()),
                    None,
                    format!("by {mac}"),
                );
                self.leases
                    .retain(|l| !(l.network == network && l.mac == mac));
            }
        }
        self.save_leases();
        // The lease is on disk: now the client may hear it is bound.
        if let Some((port, frame)) = ack_after_save {
            self.dp.injector().inject(port, frame);
        }
    }

    /// A dataplane port's name (a port, the uplink, a tunnel), if it still has one.
    fn port_name_of(&self, id: Option<crate::switch::PortId>) -> Option<String> {
        let id = id?;
        self.port_names_by_id().remove(&id)
    }

    pub(super) fn save_leases(&mut self) {
        let now = unix_now();
        self.leases.retain(|l| l.expires > now);
        if let Err(e) = self.store.save_leases(&self.leases) {
            warn!(error = %e, "cannot save DHCP leases");
        }
    }

    /// For a named namespace on a network that resolves names, points the namespace's resolver
    /// (`/etc/netns/NS/resolv.conf`, which `ip netns exec` mounts) at the gateway.
    pub(super) fn write_resolv(&self, cfg: &PortConfig) {
        if cfg.container.is_some() {
            return; // a container's files are its own (containers.rs)
        }
        let Ok(NetnsSpec::Name(ns)) = NetnsSpec::parse(&cfg.netns) else {
            return;
        };
        let Some(net) = self.state.networks.iter().find(|n| n.name == cfg.network) else {
            return;
        };
        if !net.dns {
            return;
        }
        if let Err(e) = resolv::add(&ns, net.gateway, &net.domain()) {
            warn!(netns = %ns, error = %e, "cannot write resolv.conf");
        }
    }

    /// Takes the port's network out of the resolver config written for its (named) namespace.
    pub(super) fn remove_resolv(&self, port: &PortConfig) {
        if let Some(net) = self.state.networks.iter().find(|n| n.name == port.network) {
            Self::remove_resolv_of(port, net);
        }
    }

    /// As `remove_resolv`, for a network that may be gone from the state already.
    pub(super) fn remove_resolv_of(port: &PortConfig, net: &NetworkConfig) {
        if port.container.is_some() {
            return;
        }
        if let Ok(NetnsSpec::Name(ns)) = NetnsSpec::parse(&port.netns) {
            if let Err(e) = resolv::remove(&ns, net.gateway, &net.domain()) {
                warn!(netns = %ns, error = %e, "cannot update resolv.conf");
            }
        }
    }
}
