//! Published ports: `add-port --publish`, `publish add/rm/ls`. A published port is part of its
//! port's configuration (saved with it); the dataplane's uplink gets the whole table after
//! every change (`Command::SetPublished`), and a shared uplink's steering program the
//! (protocol, port) pairs it must take from the host. The host's own way in, the loopback
//! relay, follows the same table (`relay.rs`).

use std::collections::HashSet;

use tracing::warn;

use super::{invalid, ApiResult, Manager};
use crate::api::{ApiError, ErrorCode, PublishInfo, Reply};
use crate::dataplane::Command;
use crate::sandbox::hostports;
use crate::state::publish::Proto;
use crate::state::{Change, PortConfig, Publish};
use crate::switch::nat::dnat::{Rule, Target, MAX_PUBLISHED};
use crate::switch::nat::UplinkMode;

fn in_use(msg: String) -> ApiError {
    ApiError::new(ErrorCode::PortInUse, msg)
}

fn parse(spec: &str) -> ApiResult<Publish> {
    spec.trim().parse().map_err(invalid)
}

impl Manager {
    /// The publishes `specs` of port `port` (new, on `network`), checked against the rest.
    pub(super) fn validate_publish(
        &self,
        port: &str,
        network: &str,
        specs: &[String],
    ) -> ApiResult<Vec<Publish>> {
        let list = specs
            .iter()
            .map(|s| parse(s))
            .collect::<ApiResult<Vec<_>>>()?;
        self.check_publish(port, network, &list, &list)?;
        Ok(list)
    }

    /// Checks that port `port` on `network` may publish `list`, of which `fresh` are new
    /// (only new ones are checked against the host's sockets: a published port's own
    /// listeners, if any, are not a clash).
    fn check_publish(
        &self,
        port: &str,
        network: &str,
        list: &[Publish],
        fresh: &[Publish],
    ) -> ApiResult<()> {
        if list.is_empty() {
            return Ok(());
        }
        let net = self.net_config(network)?;
        if net.internal {
            return Err(invalid(format!(
                "network {network:?} is --internal: nothing from outside reaches it, so it \
                 cannot publish ports"
            )));
        }
        for (i, a) in list.iter().enumerate() {
            if let Some(b) = list[..i].iter().find(|b| b.overlaps(a)) {
                return Err(in_use(format!("publish {a} and {b} share host ports")));
            }
        }
        for other in self.state.ports.iter().filter(|p| p.name != port) {
            for b in &other.publish {
                if let Some(a) = list.iter().find(|a| a.overlaps(b)) {
                    return Err(in_use(format!(
                        "publish {a}: host port {} is published already, by port {:?} ({b})",
                        a.host_port.max(b.host_port),
                        other.name
                    )));
                }
            }
        }
        let total: usize = self
            .state
            .ports
            .iter()
            .filter(|p| p.name != port)
            .flat_map(|p| &p.publish)
            .chain(list)
            .map(|p| usize::from(p.count))
            .sum();
        if total > MAX_PUBLISHED {
            return Err(invalid(format!(
                "at most {MAX_PUBLISHED} host ports can be published ({total} asked)"
            )));
        }
        if let Some(u) = &self.state.uplink {
            let (lo, hi) = u.nat_ports;
            if let Some(a) = list
                .iter()
                .find(|a| a.host_port <= hi && lo <= a.host_port + (a.count - 1))
            {
                return Err(in_use(format!(
                    "publish {a}: host ports {lo}-{hi} are the uplink's NAT range (`uplink set \
                     --nat-ports` moves it)"
                )));
            }
        }
        for a in fresh {
            let end = a.host_port + (a.count - 1);
            let held = hostports::listening(a.proto == Proto::Tcp, a.host_port, end);
            if let Some(p) = held.first() {
                return Err(in_use(format!(
                    "publish {a}: {} port {p} is in use by a socket on the host",
                    a.proto.as_str()
                )));
            }
        }
        Ok(())
    }

    /// `uplink set`: the NAT range may not hold a published port.
    pub(super) fn check_nat_range_unpublished(&self, (lo, hi): (u16, u16)) -> ApiResult<()> {
        for p in &self.state.ports {
            if let Some(a) = p
                .publish
                .iter()
                .find(|a| a.host_port <= hi && lo <= a.host_port + (a.count - 1))
            {
                return Err(in_use(format!(
                    "NAT ports {lo}-{hi} hold host ports port {:?} publishes ({a}); choose \
                     another --nat-ports range",
                    p.name
                )));
            }
        }
        Ok(())
    }

    pub(super) fn publish_add(&mut self, port: &str, spec: &str) -> ApiResult<Reply> {
        let p = parse(spec)?;
        let cfg = self.port_config(port)?.clone();
        if cfg.publish.contains(&p) {
            return Err(in_use(format!("port {port:?} publishes {p} already")));
        }
        if cfg.ip.is_none() {
            return Err(invalid(format!(
                "port {port:?} has no address to publish to"
            )));
        }
        let mut list = cfg.publish.clone();
        list.push(p);
        self.check_publish(port, &cfg.network, &list, &[p])?;
        self.set_port_publish(cfg, list)?;
        Ok(self.publish_list_of(Some(port)))
    }

    pub(super) fn publish_remove(&mut self, port: &str, spec: &str) -> ApiResult<Reply> {
        let p = parse(spec)?;
        let cfg = self.port_config(port)?.clone();
        if !cfg.publish.contains(&p) {
            let have: Vec<String> = cfg.publish.iter().map(|p| p.to_string()).collect();
            return Err(invalid(format!(
                "port {port:?} does not publish {p} (it publishes: {})",
                if have.is_empty() {
                    "nothing".to_string()
                } else {
                    have.join(", ")
                }
            )));
        }
        let list = cfg.publish.iter().copied().filter(|x| *x != p).collect();
        self.set_port_publish(cfg, list)?;
        Ok(self.publish_list_of(Some(port)))
    }

    /// Saves the port with its new publishes (the state is unchanged when saving fails).
    fn set_port_publish(&mut self, cfg: PortConfig, list: Vec<Publish>) -> ApiResult<()> {
        let Some(i) = self.state.ports.iter().position(|x| x.name == cfg.name) else {
            return Err(super::internal("port vanished"));
        };
        let new = PortConfig {
            publish: list,
            ..cfg.clone()
        };
        self.state.ports[i] = new.clone();
        if let Err(e) = self.record(Change::PortAdd(new)) {
            if let Some(i) = self.state.ports.iter().position(|x| x.name == cfg.name) {
                self.state.ports[i] = cfg;
            }
            return Err(e);
        }
        Ok(())
    }

    pub(super) fn publish_list(&self) -> Reply {
        self.publish_list_of(None)
    }

    fn publish_list_of(&self, only: Option<&str>) -> Reply {
        let mut rows = Vec::new();
        for cfg in &self.state.ports {
            if only.is_some_and(|o| o != cfg.name) {
                continue;
            }
            for p in &cfg.publish {
                let (relay, [relay_connections, relay_active, relay_refused]) =
                    self.relay_info(cfg, p);
                rows.push(PublishInfo {
                    port: cfg.name.clone(),
                    network: cfg.network.clone(),
                    spec: p.to_string(),
                    proto: p.proto.as_str().into(),
                    host_ip: p.host_ip.map(|ip| ip.to_string()),
                    host_port: p.host_port,
                    host_port_end: p.host_port + (p.count - 1),
                    container_ip: cfg.ip.map(|ip| ip.addr().to_string()),
                    container_port: p.container_port,
                    status: match self.publish_target(cfg, p, p.container_port) {
                        Ok(_) => "active".into(),
                        Err(why) => why,
                    },
                    relay,
                    relay_connections,
                    relay_active,
                    relay_refused,
                });
            }
        }
        rows.sort_by(|a, b| (a.host_port, &a.proto).cmp(&(b.host_port, &b.proto)));
        Reply::Published(rows)
    }

    /// Where a published port of `cfg` leads now, or why nowhere.
    fn publish_target(&self, cfg: &PortConfig, p: &Publish, port: u16) -> Result<Target, String> {
        let uplink = match (&self.state.uplink, &self.uplink) {
            (Some(u), Some(Ok(_))) => u,
            (Some(_), _) => return Err("uplink down".into()),
            (None, _) => return Err("no uplink".into()),
        };
        if let Some(ip) = p.host_ip {
            if ip != uplink.ip.addr() {
                return Err(format!("{ip} is not the uplink's address"));
            }
        }
        let attached = self.ports.get(&cfg.name).is_some_and(|rt| rt.id.is_some());
        if !attached {
            return Err("port detached".into());
        }
        let (Some(&net), Ok(ncfg)) = (self.nets.get(&cfg.network), self.net_config(&cfg.network))
        else {
            return Err("network down".into());
        };
        let ip = cfg.ip.ok_or("no address")?.addr();
        Ok(Target {
            net,
            ip,
            mac: cfg.mac,
            port,
            gateway: ncfg.gateway,
        })
    }

    /// Hands the dataplane (and a shared uplink's steering program) the published ports.
    pub(super) fn sync_published(&mut self) {
        self.sync_relay();
        if !matches!(self.uplink, Some(Ok(_))) {
            return;
        }
        let mut rules = Vec::new();
        for cfg in &self.state.ports {
            for p in &cfg.publish {
                for (proto, host, container) in p.ports() {
                    if let Ok(target) = self.publish_target(cfg, p, container) {
                        rules.push(Rule {
                            proto: proto.number(),
                            host_port: host,
                            target,
                        });
                    }
                }
            }
        }
        let steered: HashSet<(u8, u16)> = rules.iter().map(|r| (r.proto, r.host_port)).collect();
        let shared = self
            .state
            .uplink
            .as_ref()
            .is_some_and(|u| u.mode == UplinkMode::Shared);
        // Steered only once the dataplane knows where they go.
        match self.dp_call(|done| Command::SetPublished { rules, done }) {
            Ok(true) => {}
            Ok(false) => warn!("published ports: the dataplane has no uplink"),
            Err(e) => warn!(error = %e.message, "published ports not set"),
        }
        if let Some(Ok(rt)) = &mut self.uplink {
            if let Some(map) = rt.published.as_mut() {
                let want = if shared { steered } else { HashSet::new() };
                if let Err(e) = map.sync(&want) {
                    warn!(error = %e, "published ports not steered to the switch");
                }
            }
        }
    }
}
