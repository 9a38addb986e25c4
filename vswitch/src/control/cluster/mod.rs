//! The cluster store (`vswitchd --store etcd://HOST:PORT[,…]`, `[store]` in the config): what
//! must agree across hosts — the nodes, overlay networks, address allocations and endpoints —
//! kept in etcd under one prefix, as flannel and Docker's classic overlay did. With no store the
//! switch is a single host, exactly as without this module.
//!
//! Keys under the prefix (default `/vswitch`), values JSON:
//! - `nodes/NAME`: a node (`NodeInfo`), under its lease (TTL 10 s, kept alive);
//! - `networks/NAME`: an overlay network (`NetworkCreate`), created on any host;
//! - `ipam/NETWORK/IP`: an address claimed by a node (an etcd transaction: created only when
//!   absent), under the claimer's lease;
//! - `endpoints/NETWORK/MAC`: a port on an overlay network (`EndpointInfo`), under its node's
//!   lease.
//!
//! The etcd client (etcd-client, on tokio) runs in a thread of its own (`etcd.rs`): the control
//! plane calls it synchronously with a deadline (`store_unavailable` when it cannot answer) and
//! gets what the watch sees as `ClusterEvent`s. The dataplane never waits for it.

mod etcd;

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use etcd::Cluster;

/// The lease of a node's keys (seconds).
pub const DEFAULT_TTL: u64 = 10;
pub const DEFAULT_PREFIX: &str = "/vswitch";
/// How long a control request waits for the store.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How to reach the store (`--store`, `[store]`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `etcd://HOST:PORT[,HOST:PORT…]`.
    pub url: String,
    #[serde(default)]
    pub prefix: Option<String>,
    /// This node's name in the cluster (default: the host name).
    #[serde(default)]
    pub node: Option<String>,
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// TLS: the CA that signed the servers' certificates, and this client's certificate and
    /// key (PEM files).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    #[serde(default)]
    pub cert: Option<PathBuf>,
    #[serde(default)]
    pub key: Option<PathBuf>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
}

impl StoreConfig {
    /// The etcd endpoints of the URL: `http://HOST:PORT` (or https with a CA).
    pub fn endpoints(&self) -> Result<Vec<String>, String> {
        let rest = self.url.strip_prefix("etcd://").ok_or_else(|| {
            format!(
                "store {:?}: expected etcd://HOST:PORT[,HOST:PORT…]",
                self.url
            )
        })?;
        let scheme = if self.ca.is_some() { "https" } else { "http" };
        let mut v = Vec::new();
        for hp in rest.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (host, port) = hp
                .rsplit_once(':')
                .ok_or_else(|| format!("store endpoint {hp:?}: expected HOST:PORT"))?;
            if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
                return Err(format!("store endpoint {hp:?}: expected HOST:PORT"));
            }
            v.push(format!("{scheme}://{host}:{port}"));
        }
        if v.is_empty() {
            return Err(format!("store {:?} names no endpoint", self.url));
        }
        Ok(v)
    }

    pub fn prefix(&self) -> String {
        let p = self.prefix.clone().unwrap_or_else(|| DEFAULT_PREFIX.into());
        format!("/{}", p.trim_matches('/'))
    }

    pub fn ttl(&self) -> u64 {
        self.ttl_secs.unwrap_or(DEFAULT_TTL).clamp(2, 3600)
    }

    pub fn node_name(&self) -> String {
        self.node.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "localhost".into())
        })
    }

    /// Checks what can be checked before connecting.
    pub fn validate(&self) -> Result<(), String> {
        self.endpoints()?;
        let node = self.node_name();
        if node.is_empty() || node.contains('/') || node.len() > 64 {
            return Err(format!("node name {node:?}: 1 to 64 characters, no '/'"));
        }
        if self.cert.is_some() != self.key.is_some() {
            return Err("store TLS: --store-cert and --store-key go together".into());
        }
        for p in [&self.ca, &self.cert, &self.key].into_iter().flatten() {
            if !p.exists() {
                return Err(format!("store TLS: {} does not exist", p.display()));
            }
        }
        if self.user.is_some() != self.password.is_some() {
            return Err("store: a user needs a password, and a password a user".into());
        }
        Ok(())
    }
}

/// A node as it registers itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub name: String,
    /// Its VTEP address (none until `vtep set`).
    #[serde(default)]
    pub vtep: Option<Ipv4Addr>,
    /// Its WireGuard public key and tunnel address, for encrypted overlays.
    #[serde(default)]
    pub public_key: Option<String>,
    #[serde(default)]
    pub tunnel_ip: Option<Ipv4Addr>,
    pub version: String,
}

/// A port on an overlay network, as the other nodes see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub node: String,
    pub network: String,
    /// The network's VNI (a node installs endpoints of its own network of that name and VNI).
    #[serde(default)]
    pub vni: Option<u32>,
    pub mac: String,
    pub ip: Option<Ipv4Addr>,
    /// The names the embedded DNS answers for it.
    #[serde(default)]
    pub names: Vec<String>,
    /// The VTEP it is behind.
    pub vtep: Ipv4Addr,
}

/// An address claim (`ipam/NETWORK/IP`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Claim {
    pub node: String,
    pub port: String,
}

/// What the watch saw, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum ClusterEvent {
    /// The store is reachable again (or for the first time): everything under the prefix, as
    /// of the revision the watch resumes from. What is not in it is gone.
    Snapshot(Vec<(String, Vec<u8>)>),
    Put(String, Vec<u8>),
    Delete(String),
    /// The store went away.
    Lost(String),
}

/// Key helpers: the store's layout in one place.
pub struct Keys {
    pub prefix: String,
}

impl Keys {
    pub fn node(&self, name: &str) -> String {
        format!("{}/nodes/{name}", self.prefix)
    }
    pub fn network(&self, name: &str) -> String {
        format!("{}/networks/{name}", self.prefix)
    }
    pub fn claim(&self, network: &str, ip: Ipv4Addr) -> String {
        format!("{}/ipam/{network}/{ip}", self.prefix)
    }
    pub fn endpoint(&self, network: &str, mac: &str) -> String {
        format!("{}/endpoints/{network}/{mac}", self.prefix)
    }

    /// What a key names: its kind and the rest of its path.
    pub fn parse<'a>(&self, key: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')?;
        rest.split_once('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_and_keys() {
        let c = StoreConfig {
            url: "etcd://10.0.0.1:2379,etcd2:2379".into(),
            node: Some("a".into()),
            ..Default::default()
        };
        assert_eq!(
            c.endpoints().unwrap(),
            vec!["http://10.0.0.1:2379", "http://etcd2:2379"]
        );
        assert!(c.validate().is_ok());
        for bad in [
            "http://x:1",
            "etcd://",
            "etcd://host",
            "etcd://host:0",
            "etcd://:1",
        ] {
            let c = StoreConfig {
                url: bad.into(),
                ..Default::default()
            };
            assert!(c.endpoints().is_err(), "{bad}");
        }
        let k = Keys { prefix: c.prefix() };
        assert_eq!(k.node("a"), "/vswitch/nodes/a");
        assert_eq!(
            k.parse("/vswitch/endpoints/ov/02:42:0a:00:00:02"),
            Some(("endpoints", "ov/02:42:0a:00:00:02"))
        );
        assert_eq!(k.parse("/other/nodes/a"), None);
        let c = StoreConfig {
            url: "etcd://h:1".into(),
            user: Some("u".into()),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().contains("password"));
    }
}
