//! The control plane's state machine: validates requests, drives the sandbox and the dataplane,
//! and persists every change. A request either fully happens (and is saved) or changes nothing.
//!
//! This file is the spine: the `Manager` struct, start and shutdown, the `handle` dispatch, the
//! save/record/dataplane-call plumbing and the small helpers the others share. Each concern has
//! its own file beside it: `networks.rs` (create, remove, inspect), `ports.rs` (add, delete,
//! attach, namespace watching), `containers.rs` (containers and Docker's network modes, their
//! namespaces and /etc/netns files), `addresses.rs` (IPAM, DHCP leases, resolv.conf upkeep) and
//! `views.rs` (show, fdb, stats, arp and lease tables), `uplink.rs` (the uplink and conntrack),
//! `publish.rs` (published ports), `relay.rs` (the loopback relay's listeners and ports), `overlay.rs` (the VTEP and overlay networks),
//! `host_access.rs` (the host's own interface on a network), `trace.rs` (`vswitchctl trace`),
//! `capture.rs` (`vswitchctl capture`), `encrypted.rs` (WireGuard keys and sessions),
//! `cluster.rs` (what this node puts in the cluster store: itself, its endpoints, address
//! claims, networks; `cluster show`) and `cluster_watch.rs` (what the store's watch says,
//! applied here).

mod addresses;
mod capture;
mod cluster;
mod cluster_watch;
mod containers;
mod encrypted;
mod events;
mod host_access;
mod macvlan;
mod metrics;
mod networks;
mod overlay;
mod ports;
mod publish;
mod relay;
mod trace;
mod uplink;
mod views;

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use tracing::{info, warn};

use super::upstreams::Upstreams;
use crate::api::*;
use crate::dataplane::{self, Command, Snapshot};
use crate::sandbox::{self, NetnsId, NetnsSpec};
use crate::state::{Change, NetworkConfig, PortConfig, State, Store, StoredLease};
use crate::switch::gateway::Event;
use crate::switch::{NetId, PortId};
use crate::wire::MacAddr;

pub use capture::CaptureSession;
pub use ports::WatchedPort;

pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 65521;
pub const MAX_FDB_LIMIT: u32 = 1 << 20;
pub const MAX_GATEWAY_RATE: u32 = 10_000_000;
pub const MAX_AGING_SECS: u32 = 1_000_000;
const MAX_NAME: usize = 64;

type ApiResult<T> = Result<T, ApiError>;

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::InvalidArgument, msg)
}

fn internal(msg: impl Into<String>) -> ApiError {
    ApiError::new(ErrorCode::Internal, msg)
}

/// Names of networks and ports: what Docker accepts for names.
fn check_name(kind: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "invalid {kind} name {name:?}: use 1 to {MAX_NAME} letters, digits, '_', '.' or '-', starting with a letter or digit"
        )))
    }
}

struct PortRt {
    /// Present while the port is attached to the dataplane.
    id: Option<PortId>,
    /// The namespace the port's interface lives in, while it is watched.
    netns: Option<NetnsId>,
    /// Why the port is not attached (restore failed).
    detail: Option<String>,
}

/// The control plane's view of the switch.
pub struct Manager {
    state: State,
    store: Store,
    dp: dataplane::Handle,
    /// Networks declared in the config file: always present, never removed by request.
    declared: HashSet<String>,
    nets: HashMap<String, NetId>,
    ports: HashMap<String, PortRt>,
    started: Instant,
    socket: PathBuf,
    /// DHCP leases, persisted in the state dir.
    leases: Vec<StoredLease>,
    /// DNS queries for other names are forwarded, to these upstreams (shown by `show`).
    dns_forward: bool,
    dns_upstreams: Option<Arc<Upstreams>>,
    /// The uplink's port in the dataplane while it is attached, and why not otherwise.
    uplink: Option<Result<uplink::UplinkRt, String>>,
    /// The VTEP's socket and the overlay networks' tunnel ports.
    overlay: overlay::OverlayRt,
    /// Where `vswitchctl events` subscribers get the switch's changes.
    hub: Arc<super::events::EventHub>,
    /// How long add-port requests took (the metrics' histogram).
    add_port_hist: metrics::Histogram,
    /// macvlan parents the switch serves, by interface, and why a network's is not served.
    parents: std::collections::BTreeMap<String, macvlan::ParentRt>,
    parent_errors: macvlan::ParentErrors,
    /// The loopback relay: the host's own way to published ports.
    relay: relay::RelayRt,
    /// The cluster store, when one is configured (`--store`).
    cluster: Option<cluster::ClusterRt>,
    /// Applying what the store says (a network it has): not put back into it.
    cluster_applying: bool,
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The gateway's own MAC: Docker-style from its address (no port can have that address).
pub fn gateway_mac(gw: Ipv4Addr) -> MacAddr {
    MacAddr::docker_style(gw.octets())
}

/// A DNS name a port may be known by: dot-separated labels of letters, digits and '-'.
fn valid_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Manager {
    /// Starts from the saved state plus the networks the config declares, re-creating every port
    /// whose namespace still exists. Ports that cannot be restored stay in the state as detached.
    /// With `dns_upstreams`, queries for names the networks do not own are handed to the DNS
    /// forwarder (as events), which asks the upstreams it holds at that moment.
    pub fn start(
        mut store: Store,
        declared: Vec<NetworkConfig>,
        socket: PathBuf,
        events: crossbeam_channel::Sender<Event>,
        dns_upstreams: Option<Arc<Upstreams>>,
        io_uring: bool,
        declared_vtep: Option<crate::state::VtepState>,
    ) -> Result<Manager, String> {
        let saved = store.load().map_err(|e| e.to_string())?;
        let now = unix_now();
        let mut leases = store.load_leases().map_err(|e| e.to_string())?;
        leases.retain(|l| l.expires > now);
        let dp = dataplane::Handle::spawn(events, io_uring)
            .map_err(|e| format!("cannot start dataplane: {e}"))?;
        let mut m = Manager {
            state: State::default(),
            store,
            dp,
            declared: declared.iter().map(|n| n.name.clone()).collect(),
            nets: HashMap::new(),
            ports: HashMap::new(),
            started: Instant::now(),
            socket,
            leases,
            dns_forward: dns_upstreams.is_some(),
            dns_upstreams,
            uplink: None,
            overlay: overlay::OverlayRt::default(),
            hub: Arc::default(),
            add_port_hist: Default::default(),
            parents: Default::default(),
            parent_errors: Default::default(),
            relay: Default::default(),
            cluster: None,
            cluster_applying: false,
        };
        let saved = saved.unwrap_or_default();
        // The VTEP before the overlay networks whose tunnels use its socket.
        // (a saved one wins over `[vtep]` in the config, as for the uplink).
        if let Some(v) = saved.vtep.or(declared_vtep) {
            m.restore_vtep(v);
        }
        for net in saved.networks {
            let id = m.attach_network(&net).map_err(|e| e.to_string())?;
            m.restore_parent(&net, id);
            m.state.networks.push(net);
        }
        let declared_cfgs = declared.clone();
        for net in declared {
            if m.nets.contains_key(&net.name) {
                continue;
            }
            let req = NetworkCreate {
                name: net.name.clone(),
                subnet: net.subnet.to_string(),
                gateway: Some(net.gateway.to_string()),
                driver: Some(net.driver.clone()),
                mac_aging_secs: Some(net.mac_aging_secs),
                fdb_limit: Some(net.fdb_limit),
                ip_range: net.ip_range.map(|r| r.to_string()),
                dhcp: Some(net.dhcp),
                dns: Some(net.dns),
                arp_suppress: Some(net.arp_suppress),
                domain: net.domain.clone(),
                lease_secs: Some(net.lease_secs),
                internal: net.internal,
                vni: net.vni,
                peers: net.peers.iter().map(|p| p.to_string()).collect(),
                learn_peers: net.learn_peers,
                encrypted: net.encrypted,
                // In the peers' order (a keyless peer ends the list, as on the command line).
                peer_keys: net
                    .peers
                    .iter()
                    .map_while(|p| net.peer_keys.get(p).cloned())
                    .collect(),
                mtu: net.mtu,
                port_security: Some(net.port_security),
                icc: Some(net.icc),
                host_access: net.host_access,
                port_mac_limit: Some(net.port_mac_limit),
                gateway_rate: Some(net.gateway_rate),
                owner: net.owner.clone(),
                aux_addresses: net.aux_addresses.iter().map(|a| a.to_string()).collect(),
                parent: net.parent.clone(),
                mode: net.mode.clone(),
            };
            let cfg = m
                .validate_network(&req)
                .map_err(|e| format!("config network {:?}: {}", net.name, e.message))?;
            let id = m.attach_network(&cfg).map_err(|e| e.to_string())?;
            m.restore_parent(&cfg, id);
            m.state.networks.push(cfg);
        }
        // Containers' namespaces before the ports that go into them.
        for c in saved.containers {
            m.restore_container(c);
        }
        for port in saved.ports {
            let rt = match m.attach_port(&port, true) {
                Ok(rt) => {
                    info!(port = %port.name, netns = %port.netns, "port restored");
                    m.write_resolv(&port);
                    rt
                }
                Err(e) if port.handoff => {
                    // Its sandbox is gone with the container: the runtime makes a new
                    // endpoint when it starts the container again.
                    warn!(port = %port.name, netns = %port.netns, error = %e.message, "handed-off port not restored; removed");
                    continue;
                }
                Err(e) => {
                    warn!(port = %port.name, netns = %port.netns, error = %e.message, "port not restored; kept as detached");
                    if matches!(NetnsSpec::parse(&port.netns), Ok(spec @ NetnsSpec::Name(_)) if !spec.path().exists())
                    {
                        // The namespace went while the daemon was stopped: as when it goes while
                        // the daemon runs, nothing is left for /etc/netns/NAME to configure (a
                        // restore into a namespace of that name writes it again).
                        m.remove_resolv(&port);
                    }
                    PortRt {
                        id: None,
                        netns: None,
                        detail: Some(e.message),
                    }
                }
            };
            m.ports.insert(port.name.clone(), rt);
            m.state.ports.push(port);
        }
        // The config says whether a declared network has host access (saved or not).
        for net in &declared_cfgs {
            m.declared_host_access(net);
        }
        if let Some(u) = saved.uplink {
            m.restore_uplink(u);
        }
        m.sync_published();
        m.sync_parents();
        m.sync_wg_peers();
        m.refresh_container_files();
        m.save().map_err(|e| e.message)?;
        Ok(m)
    }

    /// Names of ports that could not be restored, with the reason.
    pub fn detached_ports(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self
            .ports
            .iter()
            .filter_map(|(n, p)| p.detail.clone().map(|d| (n.clone(), d)))
            .collect();
        v.sort();
        v
    }

    /// A handle to send frames into the dataplane.
    pub fn injector(&self) -> dataplane::Injector {
        self.dp.injector()
    }

    /// Stops the dataplane, which closes every port (their interfaces leave the namespaces).
    /// The saved state keeps them, so the next start re-creates them.
    pub fn shutdown(&mut self) {
        // The relay's listeners close first: the host's clients are refused, not left hanging.
        self.relay = Default::default();
        if let Some(Ok(rt)) = &mut self.uplink {
            rt.stop_neighbors();
        }
        // Handed-off TAPs stay in their sandboxes: their containers run on (see hand_off).
        crate::ports::tap::keep_handed_off();
        self.dp.shutdown();
        // A shared uplink's reserved ports go back to the host, its neighbour thread stops.
        self.uplink = None;
        // AF_XDP ports' veths outlive the socket: take them away too, as a TAP goes with its fd.
        for p in &self.state.ports {
            if let Some(host) = &p.host_ifname {
                let _ = sandbox::delete_veth(host);
            }
        }
    }

    pub fn handle(&mut self, op: Op) -> ApiResult<Reply> {
        let change = super::auth::access_of(&op) == super::auth::Access::Change;
        let event = events::pending(&op);
        let reply = self.dispatch(op);
        if change && reply.is_ok() {
            // Whatever changed (a port, a network, the uplink), the published ports follow,
            // and what the macvlan parents steer to the switch.
            self.sync_published();
            self.sync_parents();
            self.sync_wg_peers();
        }
        if let (Some(ev), Ok(r)) = (event, &reply) {
            self.emit_change(ev, r);
        }
        reply
    }

    /// Follows the switch's events (`vswitchctl events`).
    pub fn subscribe_events(&self) -> Result<super::events::Subscription, String> {
        self.hub.subscribe()
    }

    fn dispatch(&mut self, op: Op) -> ApiResult<Reply> {
        match op {
            Op::NetworkCreate(req) => self.network_create(req),
            Op::NetworkList => Ok(Reply::Networks(self.network_infos())),
            Op::NetworkInspect { name } => {
                self.net_config(&name)?;
                let info = self.network_infos().into_iter().find(|n| n.name == name);
                info.map(Reply::Network)
                    .ok_or_else(|| internal("network vanished"))
            }
            Op::NetworkRemove { name, force } => self.network_remove(&name, force),
            Op::PortAdd(req) => self.port_add(req),
            Op::PortDelete { name } => self.port_delete(&name),
            Op::Show => self.show(),
            Op::FdbShow { network } => self.fdb_show(network.as_deref()),
            Op::FdbAdd {
                network,
                mac,
                vtep,
                ip,
            } => self.fdb_add(&network, &mac, &vtep, ip.as_deref()),
            Op::FdbDel { network, mac } => self.fdb_del(&network, &mac),
            Op::PortStats { port } => self.port_stats(port.as_deref()),
            Op::ArpShow { network } => self.arp_show(network.as_deref()),
            Op::DhcpLeases { network } => self.dhcp_leases(network.as_deref()),
            Op::UplinkSet(req) => self.uplink_set(req),
            Op::UplinkShow => self.uplink_show(),
            Op::UplinkRemove => self.uplink_remove(),
            Op::ConntrackShow { network } => self.conntrack_show(network.as_deref()),
            Op::ConntrackStats => self.conntrack_stats(),
            Op::ConntrackFlush { network } => self.conntrack_flush(network.as_deref()),
            Op::VtepSet(req) => self.vtep_set(req),
            Op::VtepShow => self.vtep_show(),
            Op::ClusterShow => self.cluster_show(),
            Op::NetworkPeer {
                network,
                ip,
                remove,
                key,
                endpoint,
            } => self.network_peer(&network, &ip, remove, key.as_deref(), endpoint.as_deref()),
            Op::ContainerCreate(req) => self.container_create(req),
            Op::ContainerList => Ok(self.container_list()),
            Op::ContainerInspect { name } => self.container_inspect(&name),
            Op::ContainerRemove { name, force } => self.container_remove(&name, force),
            Op::NetworkConnect(req) => self.network_connect(req),
            Op::NetworkDisconnect { network, container } => {
                self.network_disconnect(&network, &container)
            }
            Op::PublishAdd { port, spec } => self.publish_add(&port, &spec),
            Op::PublishRemove { port, spec } => self.publish_remove(&port, &spec),
            Op::PublishList => Ok(self.publish_list()),
            Op::Trace { port, flow, hex } => self.trace(&port, flow.as_deref(), hex.as_deref()),
            // Streamed by the client's thread (`control::stream_capture`, `stream_events`),
            // not answered here.
            Op::Capture(_) | Op::Events => Err(invalid(
                "capture and events stream their answers: the client thread serves them",
            )),
        }
    }

    /// Writes a full snapshot (at start).
    fn save(&mut self) -> ApiResult<()> {
        self.store.save(&self.state).map_err(|e| {
            internal(format!(
                "cannot save state to {}: {e}; the change was rolled back",
                self.store.dir().display()
            ))
        })
    }

    /// Makes a change to `self.state` (already applied) durable.
    fn record(&mut self, change: Change) -> ApiResult<()> {
        self.store.record(&self.state, &change).map_err(|e| {
            internal(format!(
                "cannot save state to {}: {e}; the change was rolled back",
                self.store.dir().display()
            ))
        })
    }

    fn dp_call<R>(
        &self,
        make: impl FnOnce(crossbeam_channel::Sender<R>) -> Command,
    ) -> ApiResult<R> {
        self.dp
            .call(make)
            .map_err(|e| internal(format!("dataplane: {e}")))
    }

    fn snapshot(&self) -> ApiResult<Snapshot> {
        self.dp_call(|reply| Command::Snapshot { reply })
    }

    fn net_config(&self, name: &str) -> ApiResult<&NetworkConfig> {
        self.state
            .networks
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NetworkNotFound,
                    format!("network {name:?} not found; `vswitchctl network ls` lists them"),
                )
            })
    }

    fn port_config(&self, name: &str) -> ApiResult<&PortConfig> {
        self.state
            .ports
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::PortNotFound,
                    format!("port {name:?} not found; `vswitchctl show` lists them"),
                )
            })
    }
}
