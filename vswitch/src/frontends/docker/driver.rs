//! The network driver calls: networks, endpoints, joins and published ports.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde_json::{json, Value};

use super::types::{
    CreateEndpoint, CreateNetwork, EndpointRef, Join, NetworkRef, PortBinding, ENABLE_IPV6,
    GENERIC, INTERNAL, PORTMAP,
};
use super::{ipam, short, Answer, Endpoint, Plugin};
use crate::api::{NetworkCreate, Op, PortAdd, Reply};
use crate::wire::MacAddr;

/// The `-o KEY=VALUE` options of `docker network create -d vswitch`.
const OPTIONS: &[&str] = &[
    "name",
    "driver",
    "vni",
    "peers",
    "encrypted",
    "peer-keys",
    "learn-peers",
    "mtu",
    "internal",
    "host-access",
    "icc",
    "com.docker.network.bridge.enable_icc",
    "port-security",
    "domain",
    "dns",
    "parent",
    "macvlan_mode",
    "ipvlan_mode",
];

fn flag(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(format!("option {key}={v:?}: expected true or false")),
    }
}

/// Docker's MAC for an address: 02:42 and the address's four bytes.
fn mac_of(ip: Ipv4Addr) -> MacAddr {
    let o = ip.octets();
    MacAddr([0x02, 0x42, o[0], o[1], o[2], o[3]])
}

/// `-p` as the switch's publish spec (`[HOSTIP:]HOSTPORT[-END]:PORT[-END]/PROTO`).
pub(super) fn publish_spec(b: &PortBinding) -> Result<String, String> {
    let proto = match b.proto {
        6 => "tcp",
        17 => "udp",
        p => return Err(format!("cannot publish IP protocol {p}: TCP and UDP only")),
    };
    if b.host_port == 0 {
        return Err(format!(
            "port {}/{proto} has no host port: vswitch publishes only -p HOSTPORT:PORT",
            b.port
        ));
    }
    let end = b.host_port_end.max(b.host_port);
    let host = match b.host_ip.as_str() {
        "" | "0.0.0.0" => String::new(),
        ip => format!("{ip}:"),
    };
    Ok(if end > b.host_port {
        let n = end - b.host_port;
        format!(
            "{host}{}-{end}:{}-{}/{proto}",
            b.host_port,
            b.port,
            b.port.saturating_add(n)
        )
    } else {
        format!("{host}{}:{}/{proto}", b.host_port, b.port)
    })
}

impl Plugin {
    pub(super) fn create_network(&self, r: CreateNetwork) -> Answer {
        if !r.ipv6.is_empty() || r.options.get(ENABLE_IPV6) == Some(&Value::Bool(true)) {
            return Err("vswitch networks are IPv4 only: create it without --ipv6".into());
        }
        let [v4] = r.ipv4.as_slice() else {
            return Err(format!(
                "a vswitch network has exactly one IPv4 subnet, not {}",
                r.ipv4.len()
            ));
        };
        let subnet: Ipv4Net = v4
            .pool
            .parse()
            .map_err(|_| format!("pool {:?} is not an IPv4 CIDR", v4.pool))?;
        let gateway = match v4.gateway.split('/').next() {
            Some(g) if !g.is_empty() => Some(g.to_string()),
            _ => None,
        };
        let generic: BTreeMap<String, String> = match r.options.get(GENERIC) {
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| {
                    let s = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    (k.clone(), s)
                })
                .collect(),
            _ => BTreeMap::new(),
        };
        let mut req = NetworkCreate {
            name: format!("dk-{}", short(&r.network_id)),
            subnet: subnet.to_string(),
            gateway,
            internal: r.options.get(INTERNAL) == Some(&Value::Bool(true)),
            owner: Some(format!("docker:{}", r.network_id)),
            aux_addresses: v4
                .aux_addresses
                .iter()
                .map(|(k, ip)| format!("{k}={}", ip.split('/').next().unwrap_or(ip)))
                .collect(),
            ..NetworkCreate::default()
        };
        for (k, v) in &generic {
            match k.as_str() {
                "name" => req.name = v.clone(),
                "driver" => req.driver = Some(v.clone()),
                "vni" => {
                    req.vni = Some(
                        v.parse()
                            .map_err(|_| format!("option vni={v:?}: a number"))?,
                    )
                }
                "peers" => {
                    req.peers = v
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(String::from)
                        .collect()
                }
                // `--opt encrypted` comes with an empty value, as Docker's own overlay takes it.
                "encrypted" => req.encrypted = v.is_empty() || flag(k, v)?,
                // The peers' WireGuard keys, in the order of `peers`.
                "peer-keys" => {
                    req.peer_keys = v
                        .split(',')
                        .map(str::trim)
                        .filter(|p| !p.is_empty())
                        .map(String::from)
                        .collect()
                }
                "learn-peers" => req.learn_peers = flag(k, v)?,
                "mtu" => {
                    req.mtu = Some(
                        v.parse()
                            .map_err(|_| format!("option mtu={v:?}: a number"))?,
                    )
                }
                "internal" => req.internal |= flag(k, v)?,
                "host-access" => req.host_access = flag(k, v)?,
                "icc" | "com.docker.network.bridge.enable_icc" => req.icc = Some(flag(k, v)?),
                "port-security" => req.port_security = Some(flag(k, v)?),
                "domain" => req.domain = Some(v.clone()),
                "dns" => req.dns = Some(flag(k, v)?),
                "parent" => req.parent = Some(v.clone()),
                "mode" | "macvlan_mode" | "ipvlan_mode" => req.mode = Some(v.clone()),
                other => {
                    return Err(format!(
                        "unknown option -o {other} of the vswitch driver (known: {})",
                        OPTIONS.join(", ")
                    ))
                }
            }
        }
        // The sub-pool (--ip-range) of a pool this plugin's IPAM handed out.
        {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(sub) = st.pools.remove(&subnet).flatten() {
                req.ip_range = Some(sub.to_string());
            }
        }
        self.call(Op::NetworkCreate(req))?;
        Ok(json!({}))
    }

    pub(super) fn delete_network(&self, r: NetworkRef) -> Answer {
        let owner = format!("docker:{}", r.network_id);
        let Some(net) = self
            .networks()?
            .into_iter()
            .find(|n| n.owner.as_deref() == Some(owner.as_str()))
        else {
            return Ok(json!({})); // gone already
        };
        self.call(Op::NetworkRemove {
            name: net.name,
            force: false,
        })?;
        Ok(json!({}))
    }

    pub(super) fn create_endpoint(&self, r: CreateEndpoint) -> Answer {
        let net = self.network_of(&r.network_id)?;
        let subnet: Ipv4Net = net.subnet.parse().map_err(|_| "bad subnet".to_string())?;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut chosen = serde_json::Map::new();
        let ip = if r.interface.address.is_empty() {
            // dockerd's IPAM gave none (a null IPAM driver): the switch picks one.
            let used = self.used(&st, subnet)?;
            let range: Ipv4Net = net.ip_range.parse().unwrap_or(subnet);
            let ip = ipam::pick_address(subnet, range, None, &used).map_err(|e| e.to_string())?;
            st.reservations.hold(subnet, ip);
            let ip = Ipv4Net::new(ip, subnet.prefix_len()).expect("prefix of a subnet");
            chosen.insert("Address".into(), json!(ip.to_string()));
            ip
        } else {
            let ip: Ipv4Net = r
                .interface
                .address
                .parse()
                .map_err(|_| format!("address {:?} is not a CIDR", r.interface.address))?;
            if !subnet.contains(&ip.addr()) {
                return Err(format!("address {ip} is not in {subnet}"));
            }
            ip
        };
        let mac = if r.interface.mac_address.is_empty() {
            let mac = mac_of(ip.addr());
            chosen.insert("MacAddress".into(), json!(mac.to_string()));
            mac
        } else {
            r.interface
                .mac_address
                .parse()
                .map_err(|_| format!("MAC {:?} is not a MAC address", r.interface.mac_address))?
        };
        st.endpoints.insert(
            r.endpoint_id.clone(),
            Endpoint {
                network: net.name,
                ip,
                mac,
            },
        );
        Ok(json!({ "Interface": Value::Object(chosen) }))
    }

    pub(super) fn delete_endpoint(&self, r: EndpointRef) -> Answer {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .endpoints
            .remove(&r.endpoint_id);
        if let Some(p) = self.port_of(&r.endpoint_id)? {
            self.call(Op::PortDelete { name: p.name })?;
        }
        Ok(json!({}))
    }

    pub(super) fn oper_info(&self, r: EndpointRef) -> Answer {
        let value = match self.port_of(&r.endpoint_id)? {
            Some(p) => json!({ "port": p.name, "status": p.status, "mac": p.mac, "ip": p.ip }),
            None => json!({}),
        };
        Ok(json!({ "Value": value }))
    }

    pub(super) fn join(&self, r: Join) -> Answer {
        let ep = self
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .endpoints
            .get(&r.endpoint_id)
            .cloned()
            .ok_or_else(|| format!("unknown endpoint {}", r.endpoint_id))?;
        let net = self.network_of(&r.network_id)?;
        let src = format!("vsd{}", short(&r.endpoint_id));
        let port = match self.call(Op::PortAdd(PortAdd {
            network: ep.network.clone(),
            netns: r.sandbox_key.clone(),
            ifname: Some(src.clone()),
            mac: Some(ep.mac.to_string()),
            ip: Some(ep.ip.to_string()),
            name: Some(format!("dk-{}", short(&r.endpoint_id))),
            owner: Some(format!("docker:{}", r.endpoint_id)),
            handoff: true,
            ..PortAdd::default()
        }))? {
            Reply::Port(p) => p,
            other => return Err(format!("unexpected reply {other:?}")),
        };
        // An internal network has no way out: no default route through its gateway.
        Ok(json!({
            "InterfaceName": { "SrcName": port.ifname, "DstPrefix": "eth" },
            "Gateway": if net.internal { String::new() } else { net.gateway },
            "StaticRoutes": [],
            "DisableGatewayService": false,
        }))
    }

    pub(super) fn leave(&self, r: EndpointRef) -> Answer {
        // dockerd moves the interface back out of the sandbox after Leave; deleting the
        // port closes the TAP, which removes it wherever it is.
        if let Some(p) = self.port_of(&r.endpoint_id)? {
            self.call(Op::PortDelete { name: p.name })?;
        }
        Ok(json!({}))
    }

    pub(super) fn program_external(&self, r: EndpointRef) -> Answer {
        let bindings: Vec<PortBinding> = match r.options.get(PORTMAP) {
            Some(v) if !v.is_null() => serde_json::from_value(v.clone())
                .map_err(|e| format!("cannot decode {PORTMAP}: {e}"))?,
            _ => Vec::new(),
        };
        if bindings.is_empty() {
            return Ok(json!({}));
        }
        let port = self
            .port_of(&r.endpoint_id)?
            .ok_or_else(|| format!("endpoint {} has not joined", r.endpoint_id))?;
        let mut added = Vec::new();
        for b in &bindings {
            let result = publish_spec(b).and_then(|spec| {
                self.call(Op::PublishAdd {
                    port: port.name.clone(),
                    spec: spec.clone(),
                })
                .map(|_| spec)
            });
            match result {
                Ok(spec) => added.push(spec),
                Err(e) => {
                    for spec in added {
                        let _ = self.call(Op::PublishRemove {
                            port: port.name.clone(),
                            spec,
                        });
                    }
                    return Err(e);
                }
            }
        }
        Ok(json!({}))
    }

    pub(super) fn revoke_external(&self, r: EndpointRef) -> Answer {
        let Some(port) = self.port_of(&r.endpoint_id)? else {
            return Ok(json!({}));
        };
        for spec in port.publish {
            self.call(Op::PublishRemove {
                port: port.name.clone(),
                spec,
            })?;
        }
        Ok(json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(proto: u8, port: u16, host_port: u16, end: u16, host_ip: &str) -> PortBinding {
        PortBinding {
            proto,
            ip: String::new(),
            port,
            host_ip: host_ip.into(),
            host_port,
            host_port_end: end,
        }
    }

    #[test]
    fn port_bindings_become_publish_specs() {
        assert_eq!(
            publish_spec(&b(6, 80, 8080, 8080, "")).unwrap(),
            "8080:80/tcp"
        );
        assert_eq!(
            publish_spec(&b(17, 53, 5353, 0, "0.0.0.0")).unwrap(),
            "5353:53/udp"
        );
        assert_eq!(
            publish_spec(&b(6, 7000, 9000, 9002, "10.0.0.1")).unwrap(),
            "10.0.0.1:9000-9002:7000-7002/tcp"
        );
        assert!(publish_spec(&b(6, 80, 0, 0, "")).is_err());
        assert!(publish_spec(&b(132, 80, 80, 80, "")).is_err());
        assert_eq!(
            mac_of("10.99.0.5".parse().unwrap()).to_string(),
            "02:42:0a:63:00:05"
        );
    }
}
