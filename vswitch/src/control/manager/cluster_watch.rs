//! What the cluster store's watch sees, applied here: the caches of nodes, networks, claims and
//! endpoints; networks that appear in the store made on this node (and gone when they leave
//! it, where no port holds them); the other nodes' endpoints installed as static FDB entries
//! with their addresses and names, and the overlays' peers kept in step with them.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use tracing::{info, warn};

use super::{ApiResult, Manager};
use crate::api::NetworkCreate;
use crate::control::cluster::{Claim, ClusterEvent, EndpointInfo, NodeInfo};
use crate::state::{NetworkConfig, StaticFdb};
use crate::wire::MacAddr;

impl Manager {
    /// What the store's watch saw.
    pub fn on_cluster(&mut self, ev: ClusterEvent) {
        if self.cluster.is_none() {
            return;
        }
        match ev {
            ClusterEvent::Snapshot(kvs) => {
                if let Some(c) = &mut self.cluster {
                    c.nodes.clear();
                    c.endpoints.clear();
                    c.claims.clear();
                    c.networks.clear();
                }
                for (k, v) in kvs {
                    self.cluster_cache(&k, Some(&v));
                }
                let nets: Vec<NetworkCreate> = self
                    .cluster
                    .as_ref()
                    .map(|c| c.networks.values().cloned().collect())
                    .unwrap_or_default();
                for n in nets {
                    self.cluster_network_appeared(n);
                }
                self.cluster_reconcile();
            }
            ClusterEvent::Put(k, v) => {
                let kind = self.cluster_cache(&k, Some(&v));
                match kind {
                    Some(Kind::Network(name)) => {
                        if let Some(n) = self
                            .cluster
                            .as_ref()
                            .and_then(|c| c.networks.get(&name).cloned())
                        {
                            self.cluster_network_appeared(n);
                            self.cluster_reconcile();
                        }
                    }
                    Some(Kind::Endpoint | Kind::Node) => self.cluster_reconcile(),
                    _ => {}
                }
            }
            ClusterEvent::Delete(k) => match self.cluster_cache(&k, None) {
                Some(Kind::Network(name)) => self.cluster_network_gone(&name),
                Some(Kind::Endpoint | Kind::Node) => self.cluster_reconcile(),
                _ => {}
            },
            ClusterEvent::Lost(_) => {}
        }
    }

    /// Updates the caches with a key's new value (or its removal); what kind of key it was.
    fn cluster_cache(&mut self, key: &str, value: Option<&[u8]>) -> Option<Kind> {
        let c = self.cluster.as_mut()?;
        let (kind, rest) = c.handle.keys.parse(key)?;
        match kind {
            "nodes" => {
                match value.and_then(|v| serde_json::from_slice::<NodeInfo>(v).ok()) {
                    Some(n) => c.nodes.insert(rest.to_string(), n),
                    None => c.nodes.remove(rest),
                };
                Some(Kind::Node)
            }
            "networks" => {
                match value.and_then(|v| serde_json::from_slice::<NetworkCreate>(v).ok()) {
                    Some(n) => c.networks.insert(rest.to_string(), n),
                    None => c.networks.remove(rest),
                };
                Some(Kind::Network(rest.to_string()))
            }
            "ipam" => {
                let (net, ip) = rest.split_once('/')?;
                let ip: Ipv4Addr = ip.parse().ok()?;
                match value.and_then(|v| serde_json::from_slice::<Claim>(v).ok()) {
                    Some(cl) => c.claims.insert((net.to_string(), ip), cl),
                    None => c.claims.remove(&(net.to_string(), ip)),
                };
                Some(Kind::Claim)
            }
            "endpoints" => {
                let (net, mac) = rest.split_once('/')?;
                let k = (net.to_string(), mac.to_string());
                match value.and_then(|v| serde_json::from_slice::<EndpointInfo>(v).ok()) {
                    Some(e) => c.endpoints.insert(k, e),
                    None => c.endpoints.remove(&k),
                };
                Some(Kind::Endpoint)
            }
            _ => None,
        }
    }

    /// A network the store has: made here when this node has none of that name.
    fn cluster_network_appeared(&mut self, req: NetworkCreate) {
        if self.state.networks.iter().any(|n| n.name == req.name) {
            return;
        }
        self.cluster_applying = true;
        let name = req.name.clone();
        match self.handle(crate::api::Op::NetworkCreate(req)) {
            Ok(_) => info!(network = %name, "network created from the cluster store"),
            Err(e) => {
                warn!(network = %name, error = %e.message, "the cluster store's network cannot be made here")
            }
        }
        self.cluster_applying = false;
    }

    /// A network gone from the store: gone here too unless this node has ports on it.
    fn cluster_network_gone(&mut self, name: &str) {
        if !self.is_overlay(name) {
            return;
        }
        self.cluster_applying = true;
        match self.handle(crate::api::Op::NetworkRemove {
            name: name.to_string(),
            force: false,
        }) {
            Ok(_) => info!(network = %name, "network removed: it left the cluster store"),
            Err(e) => {
                warn!(network = %name, error = %e.message, "network left the cluster store but is kept here")
            }
        }
        self.cluster_applying = false;
    }

    /// Brings every overlay network's store-installed entries and peers in step with the other
    /// nodes' endpoints.
    fn cluster_reconcile(&mut self) {
        let Some(c) = &self.cluster else { return };
        let me = c.handle.node.clone();
        let own_vtep = self.state.vtep.as_ref().map(|v| v.local_ip);
        let keys: BTreeMap<Ipv4Addr, String> = c
            .nodes
            .values()
            .filter_map(|n| Some((n.vtep?, n.public_key.clone()?)))
            .collect();
        // Per network: the entries and peers the store wants here.
        let mut want: BTreeMap<String, Vec<StaticFdb>> = BTreeMap::new();
        for e in c.endpoints.values() {
            if e.node == me || Some(e.vtep) == own_vtep {
                continue;
            }
            let Some(net) = self.state.networks.iter().find(|n| n.name == e.network) else {
                continue;
            };
            if net.vni.is_none() || (e.vni.is_some() && e.vni != net.vni) {
                continue;
            }
            let Ok(mac) = e.mac.parse::<MacAddr>() else {
                continue;
            };
            if self
                .state
                .ports
                .iter()
                .any(|p| p.network == net.name && p.mac == mac)
            {
                continue;
            }
            want.entry(e.network.clone()).or_default().push(StaticFdb {
                mac,
                vtep: e.vtep,
                ip: e.ip.filter(|ip| net.subnet.contains(ip)),
                names: e.names.clone(),
                cluster: true,
            });
        }
        for net in self.overlay_networks() {
            let wanted = want.remove(&net.name).unwrap_or_default();
            if let Err(e) = self.cluster_apply(&net, wanted, &keys) {
                warn!(network = %net.name, error = %e.message, "cluster endpoints not installed");
            }
        }
    }

    /// Makes network `net`'s store-installed entries `wanted` (and its store-added peers their
    /// VTEPs).
    fn cluster_apply(
        &mut self,
        net: &NetworkConfig,
        wanted: Vec<StaticFdb>,
        keys: &BTreeMap<Ipv4Addr, String>,
    ) -> ApiResult<()> {
        let have: Vec<StaticFdb> = net.fdb.iter().filter(|e| e.cluster).cloned().collect();
        let mut peers: Vec<Ipv4Addr> = wanted.iter().map(|e| e.vtep).collect();
        peers.sort();
        peers.dedup();
        if have == wanted && net.cluster_peers == peers {
            return Ok(());
        }
        let mut updated = net.clone();
        // Entries: by hand-made ones' side, never over them.
        updated.fdb.retain(|e| !e.cluster);
        let manual: Vec<MacAddr> = updated.fdb.iter().map(|e| e.mac).collect();
        for e in &wanted {
            if !manual.contains(&e.mac)
                && !updated.fdb.iter().any(|x| x.ip.is_some() && x.ip == e.ip)
            {
                updated.fdb.push(e.clone());
            }
        }
        // Peers: the store's come and go; configured ones stay.
        let old_cluster: Vec<Ipv4Addr> = net.cluster_peers.clone();
        updated
            .peers
            .retain(|p| !old_cluster.contains(p) || peers.contains(p));
        for p in &peers {
            if !updated.peers.contains(p) {
                updated.peers.push(*p);
                updated.cluster_peers.push(*p);
            }
        }
        updated.cluster_peers.retain(|p| peers.contains(p));
        if updated.encrypted {
            for p in &peers {
                if let Some(k) = keys.get(p) {
                    updated.peer_keys.entry(*p).or_insert_with(|| k.clone());
                }
            }
        }
        self.record_network(&updated)?;
        // The dataplane: old entries out, tunnels to every VTEP involved in step, new ones in.
        for e in &have {
            self.install_static(&updated, e, true)?;
        }
        let mut vteps: Vec<Ipv4Addr> = have
            .iter()
            .map(|e| e.vtep)
            .chain(peers.iter().copied())
            .chain(old_cluster.iter().copied())
            .collect();
        vteps.sort();
        vteps.dedup();
        if updated.encrypted {
            self.sync_wg_peers();
        }
        for v in vteps {
            self.sync_tunnel(&updated, v)?;
        }
        for e in updated.fdb.iter().filter(|e| e.cluster) {
            self.install_static(&updated, e, false)?;
        }
        info!(network = %net.name, entries = wanted.len(), peers = peers.len(), "cluster endpoints installed");
        Ok(())
    }
}

enum Kind {
    Node,
    Network(String),
    Claim,
    Endpoint,
}
