//! Views: the read-only requests (show, fdb, port stats, arp, DHCP leases) built from the state
//! and one fresh dataplane snapshot each.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;

use super::{gateway_mac, ApiResult, Manager};
use crate::api::*;
use crate::control::upstreams::Source;
use crate::dataplane::{self, Snapshot};
use crate::state::{NetworkConfig, PortConfig};
use crate::switch::{DropReason, PortId};

impl Manager {
    pub(super) fn show(&self) -> ApiResult<Reply> {
        let snap = self.snapshot()?;
        let mut ports: Vec<PortInfo> = self
            .state
            .ports
            .iter()
            .map(|p| self.port_info(p, &snap))
            .collect();
        ports.sort_by(|a, b| (&a.network, &a.name).cmp(&(&b.network, &b.name)));
        Ok(Reply::Show(ShowInfo {
            daemon: DaemonInfo {
                version: env!("CARGO_PKG_VERSION").to_string(),
                protocol: PROTOCOL_VERSION,
                pid: std::process::id(),
                socket: self.socket.display().to_string(),
                state_dir: self.store.dir().display().to_string(),
                uptime_secs: self.started.elapsed().as_secs(),
                ports_lost: snap.ports_lost,
                io_uring: snap.io_uring,
                io_uring_read_batches: snap.io_uring_read_batches,
                afxdp_pool: crate::ports::umem::status(),
                dns: self.dns_info(),
            },
            networks: self.network_infos(),
            ports,
        }))
    }

    pub(super) fn dns_info(&self) -> Option<DnsInfo> {
        let up = self.dns_upstreams.as_ref()?;
        let (source, resolv_conf) = match up.source() {
            Source::Config => ("config", None),
            Source::ResolvConf(p) => ("resolv.conf", Some(p.display().to_string())),
        };
        let c = &up.counters;
        Some(DnsInfo {
            source: source.into(),
            resolv_conf,
            upstreams: up.current().iter().map(ToString::to_string).collect(),
            forwarded: c.forwarded.load(Ordering::Relaxed),
            answered: c.answered.load(Ordering::Relaxed),
            servfail: c.servfail.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
        })
    }

    pub(super) fn fdb_show(&self, network: Option<&str>) -> ApiResult<Reply> {
        let tables = self.per_network(network, |net, ns, names| FdbTable {
            network: net.name.clone(),
            limit: net.fdb_limit,
            mac_aging_secs: net.mac_aging_secs,
            counters: ns.counters,
            entries: ns
                .entries
                .iter()
                .map(|e| FdbRow {
                    mac: e.mac.to_string(),
                    port: port_label(names, e.port),
                    vtep: self.tunnel_vtep(e.port).map(|ip| ip.to_string()),
                    age_secs: e.age_ms as f64 / 1000.0,
                    is_static: e.pinned,
                    ip: net
                        .fdb
                        .iter()
                        .find(|s| e.pinned && s.mac == e.mac)
                        .and_then(|s| s.ip)
                        .map(|ip| ip.to_string()),
                })
                .collect(),
        })?;
        Ok(Reply::Fdb(tables))
    }

    pub(super) fn port_stats(&self, port: Option<&str>) -> ApiResult<Reply> {
        let uplink = self.uplink_port();
        if let Some(p) = port {
            if uplink.as_ref().is_none_or(|(_, name)| name != p) {
                self.port_config(p)?;
            }
        }
        let snap = self.snapshot()?;
        let mut out = Vec::new();
        for p in &self.state.ports {
            if port.is_some_and(|n| n != p.name) {
                continue;
            }
            let info = self.port_info(p, &snap);
            let counters = self
                .ports
                .get(&p.name)
                .and_then(|r| r.id)
                .and_then(|id| snap.ports.iter().find(|s| s.id == id))
                .map(|s| s.counters)
                .unwrap_or_default();
            out.push(stats_info(
                p.name.clone(),
                p.network.clone(),
                info.status,
                &counters,
            ));
        }
        if let Some((id, name)) = uplink.filter(|(_, n)| port.is_none_or(|p| p == n)) {
            // The uplink's own counters, under "uplink:IFACE".
            let counters = snap
                .ports
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.counters)
                .unwrap_or_default();
            out.push(stats_info(name, "-".into(), "up".into(), &counters));
        }
        out.sort_by(|a, b| a.port.cmp(&b.port));
        Ok(Reply::Stats(out))
    }

    pub(super) fn arp_show(&self, network: Option<&str>) -> ApiResult<Reply> {
        let tables = self.per_network(network, |net, ns, names| {
            let mut neighbors: Vec<NeighborRow> = ns
                .neighbors
                .iter()
                .map(|(ip, n)| NeighborRow {
                    ip: ip.to_string(),
                    mac: n.mac.to_string(),
                    port: port_label(names, n.port),
                    kind: serde_json::to_value(n.kind)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_string))
                        .unwrap_or_default(),
                })
                .collect();
            neighbors.sort_by_key(|r| r.ip.parse::<Ipv4Addr>().ok());
            ArpTable {
                network: net.name.clone(),
                gateway: net.gateway.to_string(),
                gateway_mac: gateway_mac(net.gateway).to_string(),
                arp_suppress: net.arp_suppress,
                counters: ns.gateway.unwrap_or_default(),
                neighbors,
            }
        })?;
        Ok(Reply::Arp(tables))
    }

    pub(super) fn dhcp_leases(&self, network: Option<&str>) -> ApiResult<Reply> {
        let per_net = self.per_network(network, |net, ns, _| {
            ns.leases
                .iter()
                .map(|l| LeaseInfo {
                    network: net.name.clone(),
                    mac: l.mac.to_string(),
                    ip: l.ip.to_string(),
                    hostname: l.hostname.clone(),
                    expires_in_secs: l.remaining_secs,
                    port: self
                        .state
                        .ports
                        .iter()
                        .find(|p| p.network == net.name && p.mac == l.mac)
                        .map(|p| p.name.clone()),
                })
                .collect::<Vec<_>>()
        })?;
        // Leases come sorted by address from each network.
        Ok(Reply::Leases(per_net.into_iter().flatten().collect()))
    }

    pub(super) fn port_info(&self, p: &PortConfig, snap: &Snapshot) -> PortInfo {
        let rt = self.ports.get(&p.name);
        let dp = rt
            .and_then(|r| r.id)
            .and_then(|id| snap.ports.iter().find(|s| s.id == id));
        let (status, detail) = match (rt, dp) {
            (_, Some(s)) if s.down.is_some() => ("down", s.down.clone()),
            (_, Some(_)) => ("up", None),
            (Some(r), None) => ("detached", r.detail.clone()),
            (None, None) => ("detached", None),
        };
        PortInfo {
            name: p.name.clone(),
            network: p.network.clone(),
            kind: p.kind.as_str().to_string(),
            netns: p.netns.clone(),
            ifname: p.ifname.clone(),
            mac: p.mac.to_string(),
            ip: p.ip.map(|n| n.to_string()),
            mtu: p.mtu,
            dhcp: p.dhcp,
            aliases: p.aliases.clone(),
            offload: p.offload,
            status: status.to_string(),
            detail,
            host_ifname: p.host_ifname.clone(),
            xdp: dp.and_then(|s| s.xdp.clone()),
            publish: p.publish.iter().map(|x| x.to_string()).collect(),
            port_security: p.port_security && p.ip.is_some(),
            owner: p.owner.clone(),
            handoff: p.handoff,
        }
    }

    /// The networks `filter` selects (all when `None`), by name, each with its part of one
    /// fresh dataplane snapshot, mapped through `f`.
    fn per_network<T>(
        &self,
        filter: Option<&str>,
        f: impl Fn(&NetworkConfig, &dataplane::NetworkSnapshot, &HashMap<PortId, String>) -> T,
    ) -> ApiResult<Vec<T>> {
        if let Some(n) = filter {
            self.net_config(n)?;
        }
        let snap = self.snapshot()?;
        let names = self.port_names_by_id();
        let mut nets: Vec<&NetworkConfig> = self
            .state
            .networks
            .iter()
            .filter(|n| filter.is_none_or(|f| f == n.name))
            .collect();
        nets.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(nets
            .into_iter()
            .filter_map(|net| {
                let id = self.nets.get(&net.name)?;
                let ns = snap.networks.iter().find(|n| n.id == *id)?;
                Some(f(net, ns, &names))
            })
            .collect())
    }

    pub(super) fn port_names_by_id(&self) -> HashMap<PortId, String> {
        self.ports
            .iter()
            .filter_map(|(n, p)| p.id.map(|id| (id, n.clone())))
            .chain(self.uplink_port())
            .chain(self.tunnel_names())
            .chain(self.parent_port_names())
            .chain(self.relay_port_names())
            .collect()
    }
}

/// A port's name for tables, or its dataplane number when it has none (a race with del-port).
fn port_label(names: &HashMap<PortId, String>, id: PortId) -> String {
    names
        .get(&id)
        .cloned()
        .unwrap_or_else(|| format!("#{}", id.0))
}

/// One port's line of `port stats`.
fn stats_info(
    port: String,
    network: String,
    status: String,
    counters: &crate::switch::PortCounters,
) -> PortStatsInfo {
    PortStatsInfo {
        port,
        network,
        status,
        rx_packets: counters.rx_packets,
        rx_bytes: counters.rx_bytes,
        tx_packets: counters.tx_packets,
        tx_bytes: counters.tx_bytes,
        drops: DropReason::ALL
            .iter()
            .map(|r| (r.name().to_string(), counters.drops[*r as usize]))
            .collect::<BTreeMap<_, _>>(),
    }
}
