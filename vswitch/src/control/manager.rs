//! The control plane's state machine: validates requests, drives the sandbox and the dataplane,
//! and persists every change. A request either fully happens (and is saved) or changes nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Instant;

use ipnet::Ipv4Net;
use tracing::{info, warn};

use crate::api::*;
use crate::control::resolv;
use crate::dataplane::{self, Command, Snapshot};
use crate::ports::{Port, XdpConfig};
use crate::sandbox::{self, InterfaceSetup, NetnsId, NetnsSpec, SandboxError};
use crate::state::{
    Change, NetworkConfig, PortConfig, PortKind, State, Store, StoredLease, DEFAULT_FDB_LIMIT,
    DEFAULT_LEASE_SECS, DEFAULT_MAC_AGING_SECS, DEFAULT_MTU,
};
use crate::switch::gateway::{DhcpConfig, Endpoint, Event, GatewayConfig, LeaseRecord};
use crate::switch::{DropReason, NetId, NetworkParams, PortId};
use crate::wire::MacAddr;

pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 65521;
pub const MAX_FDB_LIMIT: u32 = 1 << 20;
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
    /// Upstream resolvers are configured (DNS queries for other names are forwarded).
    dns_forward: bool,
    /// The uplink's port in the dataplane while it is attached, and why not otherwise.
    uplink: Option<Result<uplink::UplinkRt, String>>,
}

mod uplink;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A port whose namespace handle is being watched.
#[derive(Debug, Clone)]
pub struct WatchedPort {
    pub name: String,
    pub id: PortId,
    pub netns: NetnsId,
    pub spec: NetnsSpec,
    /// AF_XDP ports: the veth's host end, which must still exist.
    pub host_ifname: Option<String>,
}

impl WatchedPort {
    /// Why the port can no longer work: its namespace handle is gone, or (AF_XDP) its veth
    /// was deleted. (A stat and an ioctl; call without holding the manager.)
    pub fn orphaned(&self) -> Option<String> {
        if !self.netns.still_named_by(&self.spec) {
            return Some(format!("namespace {} is gone", self.spec));
        }
        match &self.host_ifname {
            Some(h) if !sandbox::link_exists(h) => Some(format!("veth {h} is gone")),
            _ => None,
        }
    }
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
    pub fn start(
        mut store: Store,
        declared: Vec<NetworkConfig>,
        socket: PathBuf,
        events: crossbeam_channel::Sender<Event>,
        dns_forward: bool,
        io_uring: bool,
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
            dns_forward,
            uplink: None,
        };
        let saved = saved.unwrap_or_default();
        for net in saved.networks {
            m.attach_network(&net).map_err(|e| e.to_string())?;
            m.state.networks.push(net);
        }
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
            };
            let cfg = m
                .validate_network(&req)
                .map_err(|e| format!("config network {:?}: {}", net.name, e.message))?;
            m.attach_network(&cfg).map_err(|e| e.to_string())?;
            m.state.networks.push(cfg);
        }
        for port in saved.ports {
            let rt = match m.attach_port(&port, true) {
                Ok(rt) => {
                    info!(port = %port.name, netns = %port.netns, "port restored");
                    m.write_resolv(&port);
                    rt
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
        if let Some(u) = saved.uplink {
            m.restore_uplink(u);
        }
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
        self.dp.shutdown();
        // AF_XDP ports' veths outlive the socket: take them away too, as a TAP goes with its fd.
        for p in &self.state.ports {
            if let Some(host) = &p.host_ifname {
                let _ = sandbox::delete_veth(host);
            }
        }
    }

    pub fn handle(&mut self, op: Op) -> ApiResult<Reply> {
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
            Op::PortStats { port } => self.port_stats(port.as_deref()),
            Op::ArpShow { network } => self.arp_show(network.as_deref()),
            Op::DhcpLeases { network } => self.dhcp_leases(network.as_deref()),
            Op::UplinkSet(req) => self.uplink_set(req),
            Op::UplinkShow => self.uplink_show(),
            Op::UplinkRemove => self.uplink_remove(),
            Op::ConntrackShow { network } => self.conntrack_show(network.as_deref()),
            Op::ConntrackStats => self.conntrack_stats(),
            Op::ConntrackFlush { network } => self.conntrack_flush(network.as_deref()),
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

    // ---- networks ----

    fn validate_network(&self, req: &NetworkCreate) -> ApiResult<NetworkConfig> {
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
        if driver != "bridge" {
            return Err(invalid(format!(
                "driver {driver:?} is not supported; use --driver bridge"
            )));
        }
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
        if let Some(other) =
            self.state.networks.iter().find(|n| {
                n.subnet.contains(&subnet.network()) || subnet.contains(&n.subnet.network())
            })
        {
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
            dhcp: req.dhcp.unwrap_or(true),
            dns: req.dns.unwrap_or(true),
            arp_suppress: req.arp_suppress.unwrap_or(true),
            domain: req.domain.as_ref().map(|d| d.to_ascii_lowercase()),
            lease_secs,
            internal: req.internal,
        })
    }

    fn free_id<'a>(used: impl Iterator<Item = &'a u32>) -> u32 {
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

    fn attach_network(&mut self, net: &NetworkConfig) -> ApiResult<NetId> {
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
                mtu: 1500,
            }),
            dns_names: net.dns,
            domain: net.domain(),
            dns_forward: self.dns_forward,
        };
        let params = NetworkParams {
            fdb_limit: net.fdb_limit as usize,
            aging_ms: u64::from(net.mac_aging_secs) * 1000,
            gateway: Some(gateway),
            egress: !net.internal,
        };
        self.dp_call(|done| Command::AddNetwork { id, params, done })?;
        self.nets.insert(net.name.clone(), id);
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

    fn network_create(&mut self, req: NetworkCreate) -> ApiResult<Reply> {
        let cfg = self.validate_network(&req)?;
        let id = self.attach_network(&cfg)?;
        self.state.networks.push(cfg.clone());
        if let Err(e) = self.record(Change::NetworkAdd(cfg.clone())) {
            self.state.networks.pop();
            self.nets.remove(&cfg.name);
            let _ = self.dp_call(|done| Command::RemoveNetwork { id, done });
            return Err(e);
        }
        info!(network = %cfg.name, subnet = %cfg.subnet, "network created");
        Ok(Reply::Network(self.network_info(&cfg)))
    }

    fn network_remove(&mut self, name: &str, force: bool) -> ApiResult<Reply> {
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
        if !ports.is_empty() && !force {
            return Err(ApiError::new(
                ErrorCode::NetworkInUse,
                format!(
                    "network {name:?} has {} port(s) attached ({}); delete them first or use --force",
                    ports.len(),
                    ports.join(", ")
                ),
            ));
        }
        let saved = self.state.clone();
        let change = Change::NetworkRemove(name.to_string());
        self.state.apply(&change);
        if let Err(e) = self.record(change) {
            self.state = saved;
            return Err(e);
        }
        for p in saved.ports.iter().filter(|p| p.network == name) {
            self.forget_port(p);
        }
        self.leases.retain(|l| l.network != name);
        self.save_leases();
        for p in &ports {
            if let Some(PortRt { id: Some(id), .. }) = self.ports.remove(p) {
                self.dp_call(|done| Command::RemovePort { id, done })?;
            }
        }
        if let Some(id) = self.nets.remove(name) {
            self.dp_call(|done| Command::RemoveNetwork { id, done })?;
        }
        info!(network = %name, ports = ports.len(), "network removed");
        Ok(Reply::Done)
    }

    fn network_info(&self, n: &NetworkConfig) -> NetworkInfo {
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
        }
    }

    fn network_infos(&self) -> Vec<NetworkInfo> {
        let mut v: Vec<NetworkInfo> = self
            .state
            .networks
            .iter()
            .map(|n| self.network_info(n))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }

    // ---- ports ----

    fn validate_port(&self, req: &PortAdd) -> ApiResult<PortConfig> {
        let net = self.net_config(&req.network)?.clone();
        let spec = NetnsSpec::parse(&req.netns).map_err(|e| invalid(e.to_string()))?;
        let ifname = req.ifname.clone().unwrap_or_else(|| "eth0".into());
        if !sandbox::valid_ifname(&ifname) {
            return Err(invalid(format!(
                "invalid interface name {ifname:?}: use 1 to 15 printable characters without '/', ':' or spaces"
            )));
        }
        let name = match &req.name {
            Some(n) => n.clone(),
            None => {
                let ns = match &spec {
                    NetnsSpec::Name(n) => n.clone(),
                    NetnsSpec::Pid(pid) => format!("pid{pid}"),
                    NetnsSpec::Path(p) => p
                        .to_string_lossy()
                        .trim_start_matches('/')
                        .replace('/', "_"),
                };
                format!("{ns}-{ifname}")
            }
        };
        check_name("port", &name)?;
        if self.ports.contains_key(&name) {
            return Err(ApiError::new(
                ErrorCode::PortExists,
                format!("port {name:?} already exists; choose another --name"),
            ));
        }
        let mtu = req.mtu.unwrap_or(DEFAULT_MTU);
        if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
            return Err(invalid(format!(
                "MTU {mtu} is out of range ({MIN_MTU} to {MAX_MTU})"
            )));
        }
        let peers: Vec<&PortConfig> = self
            .state
            .ports
            .iter()
            .filter(|p| p.network == net.name)
            .collect();
        let mut aliases = Vec::new();
        for a in &req.aliases {
            let a = a.trim().to_ascii_lowercase();
            if !valid_dns_name(&a) {
                return Err(invalid(format!(
                    "invalid alias {a:?}: use letters, digits and '-' in dot-separated labels"
                )));
            }
            if !aliases.contains(&a) {
                aliases.push(a);
            }
        }
        let ip = match &req.ip {
            None => Some(self.allocate_ip(&net, &peers, req.mac.as_deref())?),
            Some(s) => Some(self.validate_ip(s, &net, &peers)?),
        };
        let mac = match &req.mac {
            Some(s) => {
                let mac: MacAddr = s
                    .parse()
                    .map_err(|e: crate::wire::mac::ParseMacError| invalid(e.to_string()))?;
                if !mac.is_valid_source() {
                    return Err(invalid(format!(
                        "MAC {mac} is a multicast or zero address; a port needs a unicast MAC"
                    )));
                }
                if let Some(p) = peers.iter().find(|p| p.mac == mac) {
                    return Err(ApiError::new(
                        ErrorCode::MacInUse,
                        format!(
                            "MAC {mac} is already used by port {:?} on network {:?}",
                            p.name, net.name
                        ),
                    ));
                }
                mac
            }
            None => Self::default_mac(&name, ip.map(|n| n.addr()), &peers),
        };
        let kind: PortKind = match &req.kind {
            None => PortKind::Tap,
            Some(k) => k.parse().map_err(invalid)?,
        };
        let (xdp, host_ifname) = match kind {
            PortKind::Tap => {
                if req.xdp_mode.is_some() || req.ring_size.is_some() || req.frame_size.is_some() {
                    return Err(invalid(
                        "--xdp-mode, --ring-size and --frame-size apply to --type afxdp ports only",
                    ));
                }
                (None, None)
            }
            PortKind::Afxdp => {
                let mut x = XdpConfig::default();
                if let Some(m) = &req.xdp_mode {
                    x.mode = m.parse().map_err(invalid)?;
                }
                x.ring_size = req.ring_size.unwrap_or(x.ring_size);
                x.frame_size = req.frame_size.unwrap_or(x.frame_size);
                x.validate().map_err(invalid)?;
                // The largest frame the container sends: MTU plus Ethernet and VLAN headers.
                if mtu + 18 > x.max_frame() {
                    return Err(invalid(format!(
                        "MTU {mtu} does not fit a {}-byte UMEM frame ({} bytes of frame after the kernel's headroom); use --frame-size 4096 or a smaller --mtu",
                        x.frame_size,
                        x.max_frame()
                    )));
                }
                (Some(x), Some(self.host_ifname(&name)))
            }
        };
        if let Some(ip) = ip {
            if let Some(l) = self.leases.iter().find(|l| {
                l.network == net.name && l.ip == ip.addr() && l.mac != mac && l.expires > unix_now()
            }) {
                return Err(ApiError::new(
                    ErrorCode::AddressInUse,
                    format!("address {} is leased by DHCP to {}", ip.addr(), l.mac),
                ));
            }
        }
        Ok(PortConfig {
            name,
            network: net.name.clone(),
            netns: req.netns.clone(),
            ifname,
            mac,
            ip,
            mtu,
            dhcp: req.dhcp,
            aliases,
            offload: kind == PortKind::Tap && req.offload.unwrap_or(true),
            kind,
            xdp,
            host_ifname,
        })
    }

    /// A name for an AF_XDP port's veth host end: "vsx" and 8 hex digits hashed from the port
    /// name, unique among the configured ports (the prefix marks the device as vswitchd's).
    fn host_ifname(&self, port: &str) -> String {
        let used: HashSet<&str> = self
            .state
            .ports
            .iter()
            .filter_map(|p| p.host_ifname.as_deref())
            .collect();
        // Salted with the state dir, so two daemons in one namespace never pick the same name
        // for ports of the same name; a name some device already has is never used (only a
        // configured port's own stale veth is ever deleted, when the port is restored).
        let instance = self.store.dir().to_string_lossy().into_owned();
        let mut salt = 0u32;
        loop {
            // FNV-1a: stable across versions, unlike std's hasher.
            let mut h: u32 = 0x811c_9dc5;
            for b in instance
                .bytes()
                .chain([0])
                .chain(port.bytes())
                .chain(salt.to_le_bytes())
            {
                h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
            }
            let name = format!("vsx{h:08x}");
            if !used.contains(name.as_str()) && !sandbox::link_exists(&name) {
                return name;
            }
            salt += 1;
        }
    }

    /// IPAM: the first free address of the network's range.
    fn allocate_ip(
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

    /// What the gateway should know about a port: its MAC, address and DNS names (port name,
    /// the namespace's name when it has one, aliases).
    fn endpoint(cfg: &PortConfig) -> Endpoint {
        let mut names = vec![cfg.name.to_ascii_lowercase()];
        if let Ok(NetnsSpec::Name(ns)) = NetnsSpec::parse(&cfg.netns) {
            names.push(ns.to_ascii_lowercase());
        }
        names.extend(cfg.aliases.iter().cloned());
        names.retain(|n| valid_dns_name(n));
        names.dedup();
        Endpoint {
            mac: cfg.mac,
            ip: cfg.ip.map(|n| n.addr()),
            names,
        }
    }

    /// A DHCP lease changed in the dataplane: keep the persisted copy in step.
    pub fn on_event(&mut self, ev: Event) {
        let net_name = |id| {
            self.nets
                .iter()
                .find(|(_, n)| **n == id)
                .map(|(name, _)| name.clone())
        };
        match ev {
            Event::Lease { network, lease } => {
                let Some(network) = net_name(network) else {
                    return;
                };
                self.leases.retain(|l| {
                    !(l.network == network && (l.mac == lease.mac || l.ip == lease.ip))
                });
                info!(%network, mac = %lease.mac, ip = %lease.ip, "DHCP lease");
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
            Event::Released { network, mac } => {
                let Some(network) = net_name(network) else {
                    return;
                };
                info!(%network, %mac, "DHCP lease released");
                self.leases
                    .retain(|l| !(l.network == network && l.mac == mac));
            }
        }
        self.save_leases();
    }

    fn save_leases(&mut self) {
        let now = unix_now();
        self.leases.retain(|l| l.expires > now);
        if let Err(e) = self.store.save_leases(&self.leases) {
            warn!(error = %e, "cannot save DHCP leases");
        }
    }

    fn validate_ip(
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
        if let Some(p) = peers.iter().find(|p| p.ip.map(|i| i.addr()) == Some(addr)) {
            return Err(ApiError::new(
                ErrorCode::AddressInUse,
                format!("address {addr} is already used by port {:?}", p.name),
            ));
        }
        Ipv4Net::new(addr, net.subnet.prefix_len()).map_err(|_| bad())
    }

    /// Docker's scheme: 02:42 followed by the IPv4 address; without an address, a hash of the
    /// port name. Bumped until unique on the network.
    fn default_mac(name: &str, ip: Option<Ipv4Addr>, peers: &[&PortConfig]) -> MacAddr {
        let mut tail: u32 = match ip {
            Some(ip) => u32::from(ip),
            None => name.bytes().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            }),
        };
        loop {
            let mac = MacAddr::docker_style(tail.to_be_bytes());
            if !peers.iter().any(|p| p.mac == mac) {
                return mac;
            }
            tail = tail.wrapping_add(1);
        }
    }

    /// Creates the port's interface in its namespace and hands the port to the dataplane. When
    /// `restoring`, an AF_XDP port's veth pair that outlived a killed daemon is taken over as it
    /// is rather than re-created.
    fn attach_port(&mut self, cfg: &PortConfig, restoring: bool) -> ApiResult<PortRt> {
        let net = self.net_config(&cfg.network)?.clone();
        let net_id = *self
            .nets
            .get(&cfg.network)
            .ok_or_else(|| internal("network has no dataplane id"))?;
        let spec = NetnsSpec::parse(&cfg.netns).map_err(|e| invalid(e.to_string()))?;
        let ns = spec.open().map_err(|e| sandbox_error(&e))?;
        let netns_id =
            NetnsId::of(&ns).map_err(|e| internal(format!("cannot stat namespace: {e}")))?;
        if NetnsId::own().is_ok_and(|own| own == netns_id) {
            return Err(invalid(format!(
                "namespace {spec} is vswitchd's own network namespace (the host's): ports go into container namespaces"
            )));
        }
        let setup = InterfaceSetup {
            ifname: cfg.ifname.clone(),
            mac: cfg.mac,
            mtu: cfg.mtu,
            // With --dhcp the container's own client configures the address.
            ip: if cfg.dhcp {
                None
            } else {
                cfg.ip.map(|n| (n.addr(), n.prefix_len()))
            },
            gateway: Some(net.gateway),
            offload: cfg.offload,
        };
        let (port, report): (Box<dyn Port>, _) = match cfg.kind {
            PortKind::Tap => {
                let reused = take_over(restoring, &cfg.name, || {
                    sandbox::reuse_tap_interface(&ns, &spec, &setup)
                });
                match reused {
                    Some(tap) => {
                        info!(port = %cfg.name, tap = %cfg.ifname, "TAP taken over: interface kept");
                        (Box::new(tap), sandbox::InterfaceReport::default())
                    }
                    None => {
                        let (tap, report) = sandbox::create_tap_interface(&ns, &spec, &setup)
                            .map_err(|e| sandbox_error(&e))?;
                        (Box::new(tap), report)
                    }
                }
            }
            PortKind::Afxdp => {
                let host = cfg
                    .host_ifname
                    .as_deref()
                    .ok_or_else(|| internal("AF_XDP port without a host interface name"))?;
                let xdp = cfg.xdp.unwrap_or_default();
                let reused = take_over(restoring, &cfg.name, || {
                    sandbox::reuse_veth_interface(&ns, &spec, &setup, host, xdp)
                });
                let (xsk, report) = match reused {
                    Some(xsk) => {
                        info!(port = %cfg.name, veth = %host, mode = xsk.mode(), "AF_XDP port taken over: veth pair kept, socket bound again");
                        (xsk, sandbox::InterfaceReport::default())
                    }
                    None => {
                        let (xsk, report) =
                            sandbox::create_veth_interface(&ns, &spec, &setup, host, xdp)
                                .map_err(|e| sandbox_error(&e))?;
                        info!(port = %cfg.name, veth = %host, mode = xsk.mode(), "AF_XDP socket bound");
                        (xsk, report)
                    }
                };
                (Box::new(xsk), report)
            }
        };
        if report.kept_existing_default_route {
            info!(port = %cfg.name, "namespace already has a default route; kept it");
        }
        let id = self.free_port_id();
        let endpoint = Some(Self::endpoint(cfg));
        let added = self
            .dp_call(|done| Command::AddPort {
                id,
                network: net_id,
                port,
                endpoint,
                done,
            })
            .and_then(|r| r.map_err(|e| internal(format!("dataplane refused the port: {e}"))));
        if let Err(e) = added {
            if let Some(host) = &cfg.host_ifname {
                let _ = sandbox::delete_veth(host);
            }
            return Err(e);
        }
        Ok(PortRt {
            id: Some(id),
            netns: Some(netns_id),
            detail: None,
        })
    }

    /// Ports whose namespace handle (`ip netns` name, path, pid) is watched: when it disappears
    /// (`ip netns del`, the process exited) the port's TAP is what would keep that namespace
    /// alive, so the port is taken down. It stays configured (shown as down) until deleted; a
    /// restart retries it. The checks (a stat per port) run without the manager's lock:
    /// `watched` lists what to check, `namespaces_gone` takes down what failed.
    pub fn watched(&self) -> Vec<WatchedPort> {
        self.state
            .ports
            .iter()
            .filter_map(|cfg| {
                let rt = self.ports.get(&cfg.name)?;
                Some(WatchedPort {
                    name: cfg.name.clone(),
                    id: rt.id?,
                    netns: rt.netns?,
                    spec: NetnsSpec::parse(&cfg.netns).ok()?,
                    host_ifname: cfg.host_ifname.clone(),
                })
            })
            .collect()
    }

    /// Takes down the watched ports found orphaned (if they are still the same ports).
    pub fn namespaces_gone(&mut self, gone: Vec<(WatchedPort, String)>) {
        for (w, reason) in gone {
            match self.ports.get(&w.name) {
                Some(rt) if rt.id == Some(w.id) && rt.netns == Some(w.netns) => {}
                _ => continue, // deleted or re-added meanwhile
            }
            warn!(port = %w.name, %reason, "port down");
            if !w.netns.still_named_by(&w.spec) {
                // Nothing is left for /etc/netns/NAME to configure; a restore (of a namespace
                // by that name) writes it again.
                if let Some(cfg) = self.state.ports.iter().find(|p| p.name == w.name) {
                    self.remove_resolv(cfg);
                }
            }
            let id = w.id;
            if self
                .dp_call(|done| Command::PortDown { id, reason, done })
                .is_ok()
            {
                if let Some(rt) = self.ports.get_mut(&w.name) {
                    rt.netns = None;
                }
            }
        }
    }

    fn port_add(&mut self, req: PortAdd) -> ApiResult<Reply> {
        let t0 = Instant::now();
        let cfg = self.validate_port(&req)?;
        let t_valid = t0.elapsed();
        let rt = self.attach_port(&cfg, false)?;
        let t_attach = t0.elapsed();
        let id = rt
            .id
            .ok_or_else(|| internal("port attached without an id"))?;
        self.ports.insert(cfg.name.clone(), rt);
        self.state.ports.push(cfg.clone());
        if let Err(e) = self.record(Change::PortAdd(cfg.clone())) {
            self.state.ports.pop();
            self.ports.remove(&cfg.name);
            let _ = self.dp_call(|done| Command::RemovePort { id, done });
            return Err(e);
        }
        let t_saved = t0.elapsed();
        self.write_resolv(&cfg);
        info!(port = %cfg.name, network = %cfg.network, netns = %cfg.netns, ifname = %cfg.ifname,
            validate_us = t_valid.as_micros() as u64,
            attach_us = (t_attach - t_valid).as_micros() as u64,
            save_us = (t_saved - t_attach).as_micros() as u64,
            total_us = t0.elapsed().as_micros() as u64,
            "port added");
        // Just attached: up, with zero counters (no need to ask the dataplane).
        let snap = Snapshot {
            ports: vec![dataplane::PortSnapshot {
                id,
                kind: cfg.kind.as_str(),
                down: None,
                counters: Default::default(),
                xdp: None,
            }],
            networks: vec![],
            ..Default::default()
        };
        Ok(Reply::Port(self.port_info(&cfg, &snap)))
    }

    /// For a named namespace on a network that resolves names, points the namespace's resolver
    /// (`/etc/netns/NS/resolv.conf`, which `ip netns exec` mounts) at the gateway.
    fn write_resolv(&self, cfg: &PortConfig) {
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

    fn port_delete(&mut self, name: &str) -> ApiResult<Reply> {
        self.port_config(name)?;
        let saved = self.state.clone();
        let change = Change::PortRemove(name.to_string());
        self.state.apply(&change);
        if let Err(e) = self.record(change) {
            self.state = saved;
            return Err(e);
        }
        if let Some(PortRt { id: Some(id), .. }) = self.ports.remove(name) {
            self.dp_call(|done| Command::RemovePort { id, done })?;
        }
        if let Some(port) = saved.ports.iter().find(|p| p.name == name) {
            self.forget_port(port);
        }
        info!(port = %name, "port deleted");
        Ok(Reply::Done)
    }

    /// Cleans up what a port leaves outside the state: its veth, leases and resolv.conf entry.
    fn forget_port(&mut self, port: &PortConfig) {
        if let Some(host) = &port.host_ifname {
            if let Err(e) = sandbox::delete_veth(host) {
                warn!(port = %port.name, veth = %host, error = %e, "cannot delete veth");
            }
        }
        if port.kind == PortKind::Tap {
            // A detached port's TAP may have outlived a killed daemon (TAPs are persistent).
            if let Ok(spec) = NetnsSpec::parse(&port.netns) {
                if let Ok(ns) = spec.open() {
                    sandbox::remove_stale_tap(&ns, &spec, &port.ifname, port.offload);
                }
            }
        }
        let before = self.leases.len();
        self.leases
            .retain(|l| !(l.network == port.network && l.mac == port.mac));
        if self.leases.len() != before {
            self.save_leases();
        }
        let still_used = self
            .state
            .ports
            .iter()
            .any(|p| p.netns == port.netns && p.network == port.network);
        if !still_used {
            self.remove_resolv(port);
        }
    }

    /// Takes the port's network out of the resolver config written for its (named) namespace.
    fn remove_resolv(&self, port: &PortConfig) {
        if let (Ok(NetnsSpec::Name(ns)), Some(net)) = (
            NetnsSpec::parse(&port.netns),
            self.state.networks.iter().find(|n| n.name == port.network),
        ) {
            if let Err(e) = resolv::remove(&ns, net.gateway, &net.domain()) {
                warn!(netns = %ns, error = %e, "cannot update resolv.conf");
            }
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

    fn arp_show(&self, network: Option<&str>) -> ApiResult<Reply> {
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

    fn dhcp_leases(&self, network: Option<&str>) -> ApiResult<Reply> {
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

    fn port_info(&self, p: &PortConfig, snap: &Snapshot) -> PortInfo {
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
        }
    }

    fn show(&self) -> ApiResult<Reply> {
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
            },
            networks: self.network_infos(),
            ports,
        }))
    }

    fn port_names_by_id(&self) -> HashMap<PortId, String> {
        self.ports
            .iter()
            .filter_map(|(n, p)| p.id.map(|id| (id, n.clone())))
            .chain(self.uplink_port())
            .collect()
    }

    fn fdb_show(&self, network: Option<&str>) -> ApiResult<Reply> {
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
                    age_secs: e.age_ms as f64 / 1000.0,
                })
                .collect(),
        })?;
        Ok(Reply::Fdb(tables))
    }

    fn port_stats(&self, port: Option<&str>) -> ApiResult<Reply> {
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
            out.push(PortStatsInfo {
                port: p.name.clone(),
                network: p.network.clone(),
                status: info.status,
                rx_packets: counters.rx_packets,
                rx_bytes: counters.rx_bytes,
                tx_packets: counters.tx_packets,
                tx_bytes: counters.tx_bytes,
                drops: DropReason::ALL
                    .iter()
                    .map(|r| (r.name().to_string(), counters.drops[*r as usize]))
                    .collect::<BTreeMap<_, _>>(),
            });
        }
        if let Some((id, name)) = uplink.filter(|(_, n)| port.is_none_or(|p| p == n)) {
            // The uplink's own counters, under "uplink:IFACE".
            let counters = snap
                .ports
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.counters)
                .unwrap_or_default();
            out.push(PortStatsInfo {
                port: name,
                network: "-".into(),
                status: "up".into(),
                rx_packets: counters.rx_packets,
                rx_bytes: counters.rx_bytes,
                tx_packets: counters.tx_packets,
                tx_bytes: counters.tx_bytes,
                drops: DropReason::ALL
                    .iter()
                    .map(|r| (r.name().to_string(), counters.drops[*r as usize]))
                    .collect::<BTreeMap<_, _>>(),
            });
        }
        out.sort_by(|a, b| a.port.cmp(&b.port));
        Ok(Reply::Stats(out))
    }
}

/// A port's name for tables, or its dataplane number when it has none (a race with del-port).
fn port_label(names: &HashMap<PortId, String>, id: PortId) -> String {
    names
        .get(&id)
        .cloned()
        .unwrap_or_else(|| format!("#{}", id.0))
}

fn sandbox_error(e: &SandboxError) -> ApiError {
    let code = match e {
        SandboxError::BadSpec(_) => ErrorCode::InvalidArgument,
        SandboxError::NotFound { .. } | SandboxError::NotANetns(..) => ErrorCode::NetnsNotFound,
        SandboxError::IfnameTaken { .. } => ErrorCode::IfnameTaken,
        _ => ErrorCode::Internal,
    };
    ApiError::new(code, e.to_string())
}

/// When `restoring`, the port's interface as a killed daemon left it (`take`), if it is still
/// there as the port made it; `None` means create it afresh (a failure to take it over is logged,
/// not fatal).
fn take_over<T>(
    restoring: bool,
    port: &str,
    take: impl FnOnce() -> Result<Option<T>, sandbox::SandboxError>,
) -> Option<T> {
    if !restoring {
        return None;
    }
    take().unwrap_or_else(|e| {
        warn!(port = %port, error = %e, "cannot take over the interface left by the last run; re-creating it");
        None
    })
}
