//! The cluster store's control side (`--store etcd://…`): this node registered with its VTEP,
//! overlay networks created in the store and appearing on every node, addresses claimed by
//! transaction, this node's endpoints published, and the other nodes' endpoints installed as
//! static FDB entries with their addresses and names (so ARP suppression, IPAM and the embedded
//! DNS know them before any traffic) while the peers of each overlay follow the nodes with
//! endpoints on it. Without a store none of this runs.
//!
//! What the store's watch says is applied in `cluster_watch.rs`. What the store installs is marked (`StaticFdb::cluster`, `NetworkConfig::cluster_peers`) and
//! persisted like the rest, so a host restarted without the store still reaches what it knew.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use tracing::warn;

use super::{ApiResult, Manager, PortConfig};
use crate::api::{ApiError, ClusterInfo, ClusterNode, ErrorCode, NetworkCreate, PortAdd, Reply};
use crate::control::cluster::{Claim, Cluster, EndpointInfo, NodeInfo};
use crate::state::NetworkConfig;

/// What the manager knows of the store.
pub struct ClusterRt {
    pub handle: Cluster,
    pub nodes: BTreeMap<String, NodeInfo>,
    /// Every node's endpoints, by network and MAC.
    pub endpoints: BTreeMap<(String, String), EndpointInfo>,
    /// Address claims, by network and address.
    pub claims: BTreeMap<(String, Ipv4Addr), Claim>,
    pub networks: BTreeMap<String, NetworkCreate>,
}

fn unavailable(e: String) -> ApiError {
    ApiError::new(ErrorCode::StoreUnavailable, e)
}

/// The request that makes `n` again (what the store keeps of an overlay network: its settings,
/// not this host's peers or entries).
pub fn request_of(n: &NetworkConfig) -> NetworkCreate {
    NetworkCreate {
        name: n.name.clone(),
        subnet: n.subnet.to_string(),
        gateway: Some(n.gateway.to_string()),
        driver: Some(n.driver.clone()),
        vni: n.vni,
        encrypted: n.encrypted,
        mtu: n.mtu,
        dhcp: Some(n.dhcp),
        dns: Some(n.dns),
        domain: n.domain.clone(),
        internal: n.internal,
        icc: Some(n.icc),
        port_security: Some(n.port_security),
        aux_addresses: n.aux_addresses.iter().map(|a| a.to_string()).collect(),
        ..NetworkCreate::default()
    }
}

impl Manager {
    /// Joins the cluster: registers this node and publishes its overlay endpoints (now, or
    /// when the store comes).
    pub fn attach_cluster(&mut self, handle: Cluster) {
        self.cluster = Some(ClusterRt {
            handle,
            nodes: BTreeMap::new(),
            endpoints: BTreeMap::new(),
            claims: BTreeMap::new(),
            networks: BTreeMap::new(),
        });
        self.cluster_publish_node();
        let ports: Vec<PortConfig> = self.state.ports.clone();
        for p in &ports {
            self.cluster_publish_port(p);
            if let (Some(c), Some(ip)) = (&self.cluster, p.ip) {
                if self.is_overlay(&p.network) {
                    let key = c.handle.keys.claim(&p.network, ip.addr());
                    let claim = Claim {
                        node: c.handle.node.clone(),
                        port: p.name.clone(),
                    };
                    // Kept from before the restart: renewed under the new lease.
                    let _ = c.handle.claim_owned(key, json(&claim));
                }
            }
        }
    }

    pub(super) fn is_overlay(&self, network: &str) -> bool {
        self.state
            .networks
            .iter()
            .any(|n| n.name == network && n.vni.is_some())
    }

    /// This node's entry: its name, VTEP and WireGuard key.
    pub(super) fn cluster_publish_node(&self) {
        let Some(c) = &self.cluster else { return };
        let vtep = self.state.vtep.as_ref();
        let (public, _) = self.wg_info();
        let info = NodeInfo {
            name: c.handle.node.clone(),
            vtep: vtep.map(|v| v.local_ip),
            public_key: (!public.is_empty()).then_some(public),
            tunnel_ip: vtep.map(super::encrypted::tunnel_ip),
            version: env!("CARGO_PKG_VERSION").into(),
        };
        let _ = c
            .handle
            .publish(c.handle.keys.node(&info.name), json(&info));
    }

    fn endpoint_of(&self, p: &PortConfig) -> Option<EndpointInfo> {
        let c = self.cluster.as_ref()?;
        let net = self.state.networks.iter().find(|n| n.name == p.network)?;
        net.vni?;
        let vtep = self.state.vtep.as_ref()?;
        let ep = Self::endpoint(p);
        Some(EndpointInfo {
            node: c.handle.node.clone(),
            network: p.network.clone(),
            vni: net.vni,
            mac: p.mac.to_string(),
            ip: ep.ip,
            names: ep.names,
            vtep: vtep.local_ip,
        })
    }

    /// Publishes a port of an overlay network as this node's endpoint.
    pub(super) fn cluster_publish_port(&self, p: &PortConfig) {
        let (Some(c), Some(ep)) = (&self.cluster, self.endpoint_of(p)) else {
            return;
        };
        let key = c.handle.keys.endpoint(&ep.network, &ep.mac);
        if let Err(e) = c.handle.publish(key, json(&ep)) {
            warn!(port = %p.name, error = %e, "endpoint not published yet (it will be when the store is back)");
        }
    }

    /// Takes a deleted port's endpoint and address claim out of the store.
    pub(super) fn cluster_forget_port(&self, p: &PortConfig) {
        if self.is_overlay(&p.network) {
            self.cluster_forget_port_of(p);
        }
    }

    /// As `cluster_forget_port`, for a port of an overlay network already gone from the state.
    pub(super) fn cluster_forget_port_of(&self, p: &PortConfig) {
        let Some(c) = &self.cluster else { return };
        let _ = c
            .handle
            .unpublish(c.handle.keys.endpoint(&p.network, &p.mac.to_string()));
        if let Some(ip) = p.ip {
            let _ = c
                .handle
                .unpublish(c.handle.keys.claim(&p.network, ip.addr()));
        }
    }

    /// Addresses of `network` other nodes hold (IPAM skips them).
    pub(super) fn cluster_claimed(&self, network: &str) -> Vec<Ipv4Addr> {
        let Some(c) = &self.cluster else {
            return Vec::new();
        };
        c.claims
            .iter()
            .filter(|((n, _), cl)| n == network && cl.node != c.handle.node)
            .map(|((_, ip), _)| *ip)
            .collect()
    }

    /// Claims a new port's address in the store (an overlay network with a store): Ok(true)
    /// when it is this port's now, Ok(false) when another node holds it (the claim is known
    /// from then on, so IPAM moves past it).
    pub(super) fn cluster_claim(&mut self, p: &PortConfig) -> ApiResult<bool> {
        let (Some(c), Some(ip)) = (&mut self.cluster, p.ip) else {
            return Ok(true);
        };
        if !self
            .state
            .networks
            .iter()
            .any(|n| n.name == p.network && n.vni.is_some())
        {
            return Ok(true);
        }
        let claim = Claim {
            node: c.handle.node.clone(),
            port: p.name.clone(),
        };
        let key = c.handle.keys.claim(&p.network, ip.addr());
        let ours = c
            .handle
            .claim_owned(key, json(&claim))
            .map_err(unavailable)?;
        if !ours {
            c.claims.insert(
                (p.network.clone(), ip.addr()),
                Claim {
                    node: "another node".into(),
                    port: String::new(),
                },
            );
        }
        Ok(ours)
    }

    /// `validate_port`, and on a cluster overlay the address claimed in the store (another
    /// node may hold it: IPAM moves on, a requested `--ip` is refused).
    pub(super) fn validate_claimed(&mut self, req: &PortAdd) -> ApiResult<PortConfig> {
        self.cluster_required(&req.network)?;
        let mut cfg = self.validate_port(req)?;
        let mut tries = 0;
        while !self.cluster_claim(&cfg)? {
            tries += 1;
            if req.ip.is_some() || tries >= 32 {
                return Err(ApiError::new(
                    ErrorCode::AddressInUse,
                    format!(
                        "{} is held by another node of the cluster",
                        cfg.ip.map(|i| i.addr().to_string()).unwrap_or_default()
                    ),
                ));
            }
            cfg = self.validate_port(req)?;
        }
        Ok(cfg)
    }

    /// A new overlay network goes into the store (before it is made here); one the store has
    /// already with the same settings is this one.
    pub(super) fn cluster_create_network(&mut self, cfg: &NetworkConfig) -> ApiResult<()> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        if self.cluster_applying || cfg.vni.is_none() {
            return Ok(());
        }
        let mine = request_of(cfg);
        let key = c.handle.keys.network(&cfg.name);
        match c.handle.create(key, json(&mine)).map_err(unavailable)? {
            None => Ok(()),
            Some(there) => match serde_json::from_slice::<NetworkCreate>(&there) {
                Ok(t) if t == mine => Ok(()),
                _ => Err(ApiError::new(
                    ErrorCode::NetworkExists,
                    format!(
                        "network {:?} exists in the cluster store with other settings",
                        cfg.name
                    ),
                )),
            },
        }
    }

    /// A removed overlay network leaves the store (so it goes from every node that has no
    /// ports on it).
    pub(super) fn cluster_remove_network(&mut self, name: &str) -> ApiResult<()> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        if self.cluster_applying || !self.is_overlay(name) || !c.networks.contains_key(name) {
            return Ok(());
        }
        c.handle
            .delete(c.handle.keys.network(name))
            .map_err(unavailable)
    }

    /// `cluster show`.
    pub(super) fn cluster_show(&self) -> ApiResult<Reply> {
        let Some(c) = &self.cluster else {
            return Ok(Reply::Cluster(ClusterInfo::default()));
        };
        let st = c.handle.status();
        let nodes = c
            .nodes
            .values()
            .map(|n| ClusterNode {
                name: n.name.clone(),
                vtep: n.vtep.map(|v| v.to_string()),
                version: n.version.clone(),
                health: "up".into(),
                endpoints: c.endpoints.values().filter(|e| e.node == n.name).count(),
                local: n.name == c.handle.node,
            })
            .collect();
        Ok(Reply::Cluster(ClusterInfo {
            configured: true,
            store: st.endpoint_list.join(","),
            prefix: c.handle.keys.prefix.clone(),
            node: c.handle.node.clone(),
            status: if st.connected {
                "connected".into()
            } else {
                format!(
                    "unavailable: {}",
                    st.error.unwrap_or_else(|| "not connected yet".into())
                )
            },
            status_secs: st.since.map_or(0, |s| s.elapsed().as_secs()),
            ttl_secs: c.handle.ttl,
            nodes,
        }))
    }

    /// Whether a request must be refused because the network is in the cluster and the store
    /// is not there (a new port's address cannot be claimed).
    pub(super) fn cluster_required(&self, network: &str) -> ApiResult<()> {
        let Some(c) = &self.cluster else {
            return Ok(());
        };
        if !self.is_overlay(network) {
            return Ok(());
        }
        let st = c.handle.status();
        if st.connected {
            return Ok(());
        }
        Err(unavailable(format!(
            "network {network:?} is an overlay of the cluster and the store is unavailable ({}): \
             its addresses cannot be claimed now",
            st.error.unwrap_or_default()
        )))
    }
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
