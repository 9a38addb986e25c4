//! The loopback relay's control side: which published ports the host's own stack reaches
//! through it (`crate::relay`), on which networks it needs a port, and its counters for
//! `publish ls`. It follows the published ports after every change (`sync_relay`), as the
//! uplink's DNAT table does, whether an uplink is set or not: the host reaching its own
//! containers needs none.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{info, warn};

use super::{gateway_mac, Manager};
use crate::dataplane::Command;
use crate::relay::{Cmd, Counters, Key, Listening, Relay, Target};
use crate::state::publish::Proto;
use crate::state::{PortConfig, Publish, DEFAULT_MTU};
use crate::switch::{NetId, PortId};

/// The gateway's ports the relay's connections may use: the first of these windows that is
/// clear of the uplink's NAT range (hairpin flows come from the gateway's address too, from
/// NAT ports).
const WINDOWS: [(u16, u16); 3] = [(49152, 60999), (32768, 49151), (16384, 32767)];

fn relay_ports(nat: Option<(u16, u16)>) -> (u16, u16) {
    let clear = |(lo, hi): (u16, u16)| nat.is_none_or(|(nlo, nhi)| hi < nlo || nhi < lo);
    WINDOWS
        .into_iter()
        .find(|w| clear(*w))
        .unwrap_or(WINDOWS[0])
}

struct Listener {
    target: Target,
    counters: Arc<Counters>,
}

/// What the manager keeps of the relay.
#[derive(Default)]
pub(super) struct RelayRt {
    /// Started when a published port first needs it.
    relay: Option<Relay>,
    /// Networks the relay has a port on: the port and the gateway's ports it uses.
    nets: HashMap<NetId, (PortId, (u16, u16))>,
    listeners: HashMap<Key, Listener>,
    /// Listeners that could not be bound, and why (tried again at every change).
    errors: HashMap<Key, String>,
}

/// A CNI runtime (podman) binds the host ports of its port mappings itself, to reserve them,
/// after the plugin has published them: the relay leaves those ports to it.
fn runtime_holds_ports(cfg: &PortConfig) -> bool {
    cfg.owner.as_deref().is_some_and(|o| o.starts_with("cni:"))
}

/// The listeners a publish needs: its host ports on its host address (all of the host's,
/// `0.0.0.0`, when it names none).
fn keys(p: &Publish) -> impl Iterator<Item = (Key, u16)> + '_ {
    p.ports().map(|(proto, host, container)| {
        (
            Key {
                proto,
                ip: p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
                port: host,
            },
            container,
        )
    })
}

impl Manager {
    pub(super) fn relay_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.relay.nets.values().map(|(p, _)| p.0)
    }

    /// Names of the relay's ports, for tables keyed by port id.
    pub(super) fn relay_port_names(&self) -> Vec<(PortId, String)> {
        let mut v = Vec::new();
        for (net, (port, _)) in &self.relay.nets {
            if let Some((name, _)) = self.nets.iter().find(|(_, id)| *id == net) {
                v.push((*port, format!("relay:{name}")));
            }
        }
        v
    }

    /// Where a published port of `cfg` leads for the relay, if anywhere now.
    fn relay_target(&self, cfg: &PortConfig, container: u16) -> Option<(Target, Ipv4Addr, u8)> {
        self.ports.get(&cfg.name)?.id?;
        let net = *self.nets.get(&cfg.network)?;
        let ncfg = self.net_config(&cfg.network).ok()?;
        let ip = cfg.ip?.addr();
        Some((
            Target {
                net,
                ip,
                mac: cfg.mac,
                port: container,
            },
            ncfg.gateway,
            ncfg.subnet.prefix_len(),
        ))
    }

    /// Makes the relay listen on every published port that leads somewhere, with a port on
    /// each network they lead into; closes what is no longer published.
    pub(super) fn sync_relay(&mut self) {
        let mut want: HashMap<Key, Target> = HashMap::new();
        // Each network's gateway, prefix and MTU.
        let mut nets: HashMap<NetId, (Ipv4Addr, u8, u32)> = HashMap::new();
        for cfg in self.state.ports.iter().filter(|c| !runtime_holds_ports(c)) {
            for p in &cfg.publish {
                for (key, container) in keys(p) {
                    if let Some((t, gw, prefix)) = self.relay_target(cfg, container) {
                        nets.entry(t.net).or_insert((gw, prefix, cfg.mtu));
                        want.insert(key, t);
                    }
                }
            }
        }
        if want.is_empty() && self.relay.relay.is_none() {
            return;
        }
        if self.relay.relay.is_none() {
            match Relay::start() {
                Ok(r) => self.relay.relay = Some(r),
                Err(e) => {
                    warn!(error = %e, "loopback relay not started");
                    return;
                }
            }
        }
        let ports = relay_ports(self.state.uplink.as_ref().map(|u| u.nat_ports));
        // Listeners that go, or lead elsewhere now: closed before anything else.
        let gone: Vec<Key> = self
            .relay
            .listeners
            .iter()
            .filter(|(k, l)| want.get(k) != Some(&l.target))
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            if let Some(r) = &self.relay.relay {
                r.unlisten(k);
            }
            self.relay.listeners.remove(&k);
            info!(proto = k.proto.as_str(), ip = %k.ip, port = k.port, "relay: no longer listening");
        }
        self.relay.errors.retain(|k, _| want.contains_key(k));
        // Networks: a port where one is needed (again, when the gateway's ports moved).
        let stale: Vec<NetId> = self
            .relay
            .nets
            .iter()
            .filter(|(n, (_, p))| !nets.contains_key(n) || *p != ports)
            .map(|(n, _)| *n)
            .collect();
        for n in stale {
            if let Some((id, _)) = self.relay.nets.remove(&n) {
                if let Some(r) = &self.relay.relay {
                    r.send(Cmd::Detach { net: n });
                }
                let _ = self.dp_call(|done| Command::RemovePort { id, done });
            }
        }
        for (&net, &(gw, prefix, mtu)) in &nets {
            if self.relay.nets.contains_key(&net) {
                continue;
            }
            if let Err(e) = self.relay_attach(net, gw, prefix, mtu, ports) {
                warn!(error = %e, "relay: no port on the network");
            }
        }
        for (key, target) in want {
            if self.relay.listeners.contains_key(&key) || !self.relay.nets.contains_key(&target.net)
            {
                continue;
            }
            let bound = match key.proto {
                Proto::Tcp => std::net::TcpListener::bind((key.ip, key.port))
                    .and_then(|l| l.set_nonblocking(true).map(|()| Listening::Tcp(l))),
                Proto::Udp => std::net::UdpSocket::bind((key.ip, key.port))
                    .and_then(|u| u.set_nonblocking(true).map(|()| Listening::Udp(u))),
            };
            match bound {
                Ok(sock) => {
                    let counters = Arc::new(Counters::default());
                    if let Some(r) = &self.relay.relay {
                        r.send(Cmd::Listen {
                            key,
                            sock,
                            target,
                            counters: counters.clone(),
                        });
                    }
                    self.relay.errors.remove(&key);
                    self.relay
                        .listeners
                        .insert(key, Listener { target, counters });
                    info!(proto = key.proto.as_str(), ip = %key.ip, port = key.port, "relay: listening");
                }
                Err(e) => {
                    let msg = format!("cannot listen on {}:{}: {e}", key.ip, key.port);
                    if self.relay.errors.get(&key) != Some(&msg) {
                        warn!("relay: {msg}");
                    }
                    self.relay.errors.insert(key, msg);
                }
            }
        }
    }

    fn relay_attach(
        &mut self,
        net: NetId,
        gw: Ipv4Addr,
        prefix: u8,
        mtu: u32,
        ports: (u16, u16),
    ) -> Result<(), String> {
        let (port, sock) = crate::ports::relay::pair().map_err(|e| e.to_string())?;
        let id = self.free_port_id();
        let res = self.dp_call(|done| Command::AddRelay {
            id,
            network: net,
            port: Box::new(port),
            ports,
            done,
        });
        match res {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e.to_string()),
            Err(e) => return Err(e.message),
        }
        self.relay.nets.insert(net, (id, ports));
        if let Some(r) = &self.relay.relay {
            r.send(Cmd::Attach {
                net,
                sock,
                gw,
                prefix,
                gw_mac: gateway_mac(gw),
                mtu: if mtu == 0 { DEFAULT_MTU } else { mtu } as usize,
                ports,
            });
        }
        Ok(())
    }

    /// The relay's state of one publish, for `publish ls`: "listening", or why not; and its
    /// counters (relays so far, running now, refused for the bound).
    pub(super) fn relay_info(&self, cfg: &PortConfig, p: &Publish) -> (String, [u64; 3]) {
        if runtime_holds_ports(cfg) {
            return ("off: the CNI runtime holds the host port".into(), [0; 3]);
        }
        let (mut accepted, mut active, mut refused) = (0, 0, 0);
        let mut listening = 0;
        let mut why = None;
        for (key, _) in keys(p) {
            if let Some(l) = self.relay.listeners.get(&key) {
                listening += 1;
                accepted += l.counters.accepted.load(Ordering::Relaxed);
                active += l.counters.active.load(Ordering::Relaxed);
                refused += l.counters.refused.load(Ordering::Relaxed);
            } else if let Some(e) = self.relay.errors.get(&key) {
                why.get_or_insert_with(|| e.clone());
            }
        }
        let state = match (listening, why) {
            (n, None) if n == p.count => "listening".to_string(),
            (_, Some(e)) => e,
            (0, None) => "not listening (port detached)".to_string(),
            (n, None) => format!("listening on {n} of {} ports", p.count),
        };
        (state, [accepted, active, refused])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_relays_ports_keep_clear_of_the_nat_range() {
        assert_eq!(relay_ports(None), (49152, 60999));
        assert_eq!(relay_ports(Some((61000, 65535))), (49152, 60999));
        assert_eq!(relay_ports(Some((50000, 50100))), (32768, 49151));
        assert_eq!(relay_ports(Some((8000, 9000))), (49152, 60999));
        assert_eq!(relay_ports(Some((33000, 65535))), (16384, 32767));
    }
}
