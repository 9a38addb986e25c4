//! Ports: validating an add request, naming and addressing the port (veth host name, default
//! MAC, gateway endpoint), creating its interface and attaching it to the dataplane (or taking
//! over the one a killed daemon left), add and delete, and watching the ports' namespaces.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::time::Instant;

use tracing::{info, warn};

use super::{
    check_name, internal, invalid, unix_now, valid_dns_name, ApiResult, Manager, PortRt, MAX_MTU,
    MIN_MTU,
};
use crate::api::*;
use crate::dataplane::{self, Command, Snapshot};
use crate::ports::{Port, XdpConfig};
use crate::sandbox::{self, InterfaceSetup, NetnsId, NetnsSpec, SandboxError};
use crate::state::{Change, PortConfig, PortKind, DEFAULT_MTU};
use crate::switch::gateway::Endpoint;
use crate::switch::security::PortGuard;
use crate::switch::PortId;
use crate::wire::MacAddr;

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

impl Manager {
    pub(super) fn validate_port(&self, req: &PortAdd) -> ApiResult<PortConfig> {
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
        let mtu = req.mtu.or(net.mtu).unwrap_or(DEFAULT_MTU);
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
        let publish = self.validate_publish(&name, &net.name, &req.publish)?;
        if req.dhcp && net.driver == "ipvlan" {
            return Err(invalid(
                "an ipvlan network's containers are told apart by the addresses the switch gives them: no --dhcp",
            ));
        }
        if req.handoff && (kind != PortKind::Tap || req.dhcp) {
            return Err(invalid(
                "a handed-off port is a TAP with an address from the switch (no --type afxdp, no --dhcp)",
            ));
        }
        let owner = req.owner.clone();
        if let Some(o) = &owner {
            if o.is_empty() || o.len() > 300 || o.chars().any(|c| c.is_control()) {
                return Err(invalid(format!(
                    "invalid port owner {o:?}: use 1 to 300 printable characters"
                )));
            }
        }
        if !publish.is_empty() && ip.is_none() {
            return Err(invalid(format!(
                "port {name:?} has no address to publish to"
            )));
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
            container: None,
            publish,
            port_security: req.port_security.unwrap_or(net.port_security),
            host: false,
            handoff: req.handoff,
            owner,
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

    /// What the gateway should know about a port: its MAC, address and DNS names (port name,
    /// the namespace's name when it has one, aliases).
    pub(super) fn endpoint(cfg: &PortConfig) -> Endpoint {
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

    /// What the port may send as, when port security applies to it: on for the port (and its
    /// network, the default) and an address the switch gave it.
    fn guard(cfg: &PortConfig) -> Option<PortGuard> {
        let ip = cfg.ip?.addr();
        cfg.port_security.then_some(PortGuard { mac: cfg.mac, ip })
    }

    /// Creates the port's interface in its namespace and hands the port to the dataplane. When
    /// `restoring`, an AF_XDP port's veth pair that outlived a killed daemon is taken over as it
    /// is rather than re-created.
    pub(super) fn attach_port(&mut self, cfg: &PortConfig, restoring: bool) -> ApiResult<PortRt> {
        let net = self.net_config(&cfg.network)?.clone();
        let net_id = *self
            .nets
            .get(&cfg.network)
            .ok_or_else(|| internal("network has no dataplane id"))?;
        let spec = NetnsSpec::parse(&cfg.netns).map_err(|e| invalid(e.to_string()))?;
        // A handed-off port's sandbox may not exist yet (dockerd's Join comes before the
        // container's namespace is made); it is watched from when it appears.
        let ns = if cfg.handoff && !restoring {
            NetnsSpec::parse("/proc/self/ns/net")
                .and_then(|own| own.open())
                .map_err(|e| sandbox_error(&e))?
        } else {
            spec.open().map_err(|e| sandbox_error(&e))?
        };
        let netns_id =
            NetnsId::of(&ns).map_err(|e| internal(format!("cannot stat namespace: {e}")))?;
        let watch_id = (!cfg.handoff || restoring).then_some(netns_id);
        if !cfg.host && !cfg.handoff && NetnsId::own().is_ok_and(|own| own == netns_id) {
            return Err(invalid(format!(
                "namespace {spec} is vswitchd's own network namespace (the host's): ports go into container namespaces"
            )));
        }
        // Host access to a macvlan or ipvlan network: the host's own address on the parent's
        // segment may well be in the network's subnet (its route wider, out of the parent), so
        // the TAP has a /32 and a route for the containers' range only.
        let parent_host = cfg.host && net.parent.is_some();
        let setup = InterfaceSetup {
            ifname: cfg.ifname.clone(),
            mac: cfg.mac,
            mtu: cfg.mtu,
            // With --dhcp the container's own client configures the address.
            ip: if cfg.dhcp {
                None
            } else if parent_host {
                cfg.ip.map(|n| (n.addr(), 32))
            } else {
                cfg.ip.map(|n| (n.addr(), n.prefix_len()))
            },
            // The host keeps its own default route.
            gateway: (!cfg.host).then_some(net.gateway),
            routes: match parent_host {
                true => vec![net.pool()],
                false => Vec::new(),
            },
            offload: cfg.offload,
        };
        let (port, report): (Box<dyn Port>, _) = match cfg.kind {
            PortKind::Tap if cfg.handoff => {
                // Made in vswitchd's namespace, unconfigured: the runtime moves it into the
                // sandbox and names and addresses it there. After a restart it is found in the
                // sandbox by its MAC.
                let reused = take_over(restoring, &cfg.name, || {
                    sandbox::reuse_handed_off_tap(&ns, &spec, cfg.mac, cfg.offload)
                });
                match reused {
                    Some(mut tap) => {
                        tap.hand_off();
                        info!(port = %cfg.name, "handed-off TAP taken over in its sandbox");
                        (Box::new(tap) as Box<dyn Port>, sandbox::InterfaceReport::default())
                    }
                    None if restoring => {
                        return Err(invalid(format!(
                            "the interface of port {} is no longer in {spec}: its runtime must attach it again",
                            cfg.name
                        )))
                    }
                    None => {
                        let own = NetnsSpec::parse("/proc/self/ns/net")
                            .map_err(|e| internal(e.to_string()))?;
                        let handoff = InterfaceSetup {
                            ip: None,
                            gateway: None,
                            routes: Vec::new(),
                            ..setup.clone()
                        };
                        let (mut tap, report) =
                            sandbox::create_tap_interface(&ns, &own, &handoff)
                                .map_err(|e| sandbox_error(&e))?;
                        tap.hand_off();
                        (Box::new(tap) as Box<dyn Port>, report)
                    }
                }
            }
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
        let guard = Self::guard(cfg);
        let added = self
            .dp_call(|done| Command::AddPort {
                id,
                network: net_id,
                port,
                endpoint,
                guard,
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
            netns: watch_id,
            detail: None,
        })
    }

    /// Ports whose namespace handle (`ip netns` name, path, pid) is watched: when it disappears
    /// (`ip netns del`, the process exited) the port's TAP is what would keep that namespace
    /// alive, so the port is taken down. It stays configured (shown as down) until deleted; a
    /// restart retries it. The checks (a stat per port) run without the manager's lock:
    /// `watched` lists what to check, `namespaces_gone` takes down what failed.
    pub fn watched(&mut self) -> Vec<WatchedPort> {
        // A handed-off port is watched from when its sandbox appears (see `attach_port`).
        for cfg in self.state.ports.iter().filter(|c| c.handoff) {
            if let Some(rt) = self.ports.get_mut(&cfg.name) {
                if rt.id.is_some() && rt.netns.is_none() {
                    rt.netns = NetnsSpec::parse(&cfg.netns)
                        .ok()
                        .and_then(|s| s.open().ok())
                        .and_then(|ns| NetnsId::of(&ns).ok());
                }
            }
        }
        self.state
            .ports
            .iter()
            .filter(|cfg| !cfg.host) // vswitchd's own namespace does not go away
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
            let network = self
                .state
                .ports
                .iter()
                .find(|p| p.name == w.name)
                .map(|p| p.network.clone());
            self.emit("port-down", network, Some(w.name.clone()), reason.clone());
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

    pub(super) fn port_add(&mut self, req: PortAdd) -> ApiResult<Reply> {
        let t0 = Instant::now();
        let cfg = self.validate_claimed(&req)?;
        let t_valid = t0.elapsed();
        let rt = match self.attach_port(&cfg, false) {
            Ok(rt) => rt,
            Err(e) => {
                self.cluster_forget_port(&cfg);
                return Err(e);
            }
        };
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
        self.cluster_publish_port(&cfg);
        info!(port = %cfg.name, network = %cfg.network, netns = %cfg.netns, ifname = %cfg.ifname,
            validate_us = t_valid.as_micros() as u64,
            attach_us = (t_attach - t_valid).as_micros() as u64,
            save_us = (t_saved - t_attach).as_micros() as u64,
            total_us = t0.elapsed().as_micros() as u64,
            "port added");
        self.add_port_hist.observe(t0.elapsed().as_secs_f64());
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

    pub(super) fn port_delete(&mut self, name: &str) -> ApiResult<Reply> {
        let cfg = self.port_config(name)?;
        if cfg.host {
            return Err(invalid(format!(
                "port {name:?} is network {:?}'s host access; it goes with the network",
                cfg.network
            )));
        }
        self.delete_port(name)
    }

    /// Deletes a port (of any kind) and what it leaves.
    pub(super) fn delete_port(&mut self, name: &str) -> ApiResult<Reply> {
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
        self.refresh_container_files();
        info!(port = %name, "port deleted");
        Ok(Reply::Done)
    }

    /// Cleans up what a port leaves outside the state: its veth, leases and resolv.conf entry.
    pub(super) fn forget_port(&mut self, port: &PortConfig) {
        self.cluster_forget_port(port);
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
