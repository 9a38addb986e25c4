//! Containers: a network namespace the switch creates and manages, in one of Docker's network
//! modes (`networks` — the default `bridge` or user-defined networks by name, one interface per
//! network —, `host`, `none`, `container:OTHER`), with the files `ip netns exec` mounts over
//! `/etc` (resolv.conf, hosts with legacy links, hostname). Create, remove, inspect, connect and
//! disconnect; the namespaces' restore at start; keeping every container's files true whenever
//! a port, network or container changes.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use tracing::{info, warn};

use super::{check_name, internal, invalid, valid_dns_name, ApiResult, Manager, PortRt};
use crate::api::*;
use crate::control::netns_files::{self, Files};
use crate::dataplane::Command;
use crate::sandbox::named_netns;
use crate::state::{Change, ContainerConfig, ContainerLink, ContainerMode, PortConfig, PortKind};

/// The network a container joins when no `--network` is given.
pub const DEFAULT_NETWORK: &str = "bridge";

fn not_found(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::ContainerNotFound,
        format!("container {name:?} not found; `vswitchctl container ls` lists them"),
    )
}

fn mode_name(c: &ContainerConfig, first_network: Option<&str>) -> String {
    match &c.mode {
        ContainerMode::Networks => first_network.unwrap_or(DEFAULT_NETWORK).to_string(),
        ContainerMode::Host => "host".into(),
        ContainerMode::None => "none".into(),
        ContainerMode::Container(o) => format!("container:{o}"),
    }
}

impl Manager {
    fn container(&self, name: &str) -> ApiResult<&ContainerConfig> {
        self.state
            .containers
            .iter()
            .find(|c| c.name == name)
            .ok_or_else(|| not_found(name))
    }

    /// The container's interfaces, in interface order (eth0, eth1, …).
    fn container_ports(&self, name: &str) -> Vec<&PortConfig> {
        let mut v: Vec<&PortConfig> = self
            .state
            .ports
            .iter()
            .filter(|p| p.container.as_deref() == Some(name))
            .collect();
        v.sort_by_key(|p| ifindex_of(&p.ifname));
        v
    }

    /// The container whose namespace `c` uses (itself, or the end of its `container:` chain),
    /// and that namespace's `ip netns` name (`None`: the host's).
    fn namespace_owner<'a>(&'a self, c: &'a ContainerConfig) -> &'a ContainerConfig {
        let mut cur = c;
        let mut seen = HashSet::new();
        while let ContainerMode::Container(o) = &cur.mode {
            if !seen.insert(cur.name.clone()) {
                break;
            }
            match self.state.containers.iter().find(|x| &x.name == o) {
                Some(x) => cur = x,
                None => break,
            }
        }
        cur
    }

    /// Containers joined directly to `name`'s namespace.
    fn joined_to(&self, name: &str) -> Vec<String> {
        self.state
            .containers
            .iter()
            .filter(|c| matches!(&c.mode, ContainerMode::Container(o) if o == name))
            .map(|c| c.name.clone())
            .collect()
    }

    fn parse_links(&self, name: &str, links: &[String]) -> ApiResult<Vec<ContainerLink>> {
        let mut out: Vec<ContainerLink> = Vec::new();
        for l in links {
            let (other, alias) = match l.split_once(':') {
                Some((o, a)) => (o.trim(), Some(a.trim().to_ascii_lowercase())),
                None => (l.trim(), None),
            };
            if other == name {
                return Err(invalid(format!(
                    "--link {l:?}: a container cannot link to itself"
                )));
            }
            self.container(other)?;
            if let Some(a) = &alias {
                if !valid_dns_name(a) {
                    return Err(invalid(format!(
                        "--link {l:?}: invalid alias {a:?}: use letters, digits and '-' in dot-separated labels"
                    )));
                }
            }
            if !out.iter().any(|x| x.container == other) {
                out.push(ContainerLink {
                    container: other.to_string(),
                    alias,
                });
            }
        }
        Ok(out)
    }

    pub(super) fn container_create(&mut self, req: ContainerCreate) -> ApiResult<Reply> {
        let name = req.name.trim().to_string();
        check_name("container", &name)?;
        if let Ok(c) = self.container(&name) {
            return Err(ApiError::new(
                ErrorCode::ContainerExists,
                format!(
                    "container {name:?} already exists (mode {}); choose another name or remove it first",
                    mode_name(c, self.container_ports(&name).first().map(|p| p.network.as_str()))
                ),
            ));
        }
        let modes: Vec<String> = if req.networks.is_empty() {
            vec![DEFAULT_NETWORK.to_string()]
        } else {
            req.networks.iter().map(|s| s.trim().to_string()).collect()
        };
        let special = |m: &str| m == "host" || m == "none" || m.starts_with("container:");
        let mode = if modes.iter().any(|m| special(m)) {
            if modes.len() > 1 {
                return Err(invalid(format!(
                    "--network {} cannot be combined with other networks",
                    modes.iter().find(|m| special(m)).unwrap()
                )));
            }
            match modes[0].as_str() {
                "host" => ContainerMode::Host,
                "none" => ContainerMode::None,
                m => {
                    let other = m.trim_start_matches("container:");
                    if other.is_empty() {
                        return Err(invalid(
                            "--network container:OTHER needs the name of another container",
                        ));
                    }
                    if other == name {
                        return Err(invalid(format!(
                            "--network container:{other}: a container cannot join its own namespace"
                        )));
                    }
                    self.container(other)?;
                    ContainerMode::Container(other.to_string())
                }
            }
        } else {
            let mut seen = HashSet::new();
            for m in &modes {
                if !seen.insert(m.as_str()) {
                    return Err(invalid(format!("--network {m:?} is given twice")));
                }
                self.net_config(m)?;
            }
            ContainerMode::Networks
        };
        let has_own_ns = matches!(mode, ContainerMode::Networks | ContainerMode::None);
        let has_ports = mode == ContainerMode::Networks;
        let what = mode_name(
            &ContainerConfig {
                name: name.clone(),
                mode: mode.clone(),
                netns: None,
                hostname: String::new(),
                aliases: vec![],
                links: vec![],
                dns: vec![],
                kind: PortKind::Tap,
            },
            modes.first().map(String::as_str),
        );
        if !has_ports {
            for (flag, given) in [
                ("--ip", req.ip.is_some()),
                ("--mac", req.mac.is_some()),
                ("--alias", !req.aliases.is_empty()),
                ("--link", !req.links.is_empty()),
                ("--type", req.kind.is_some()),
            ] {
                if given {
                    return Err(invalid(format!(
                        "{flag} needs a network: network mode {what} gives the container no interface of its own"
                    )));
                }
            }
        }
        if !has_own_ns {
            if !req.dns.is_empty() {
                return Err(invalid(format!(
                    "--dns conflicts with network mode {what}: the container uses the resolver configuration of {}",
                    if mode == ContainerMode::Host { "the host" } else { "the container it joins" }
                )));
            }
            if req.hostname.is_some() {
                return Err(invalid(format!(
                    "--hostname conflicts with network mode {what}: the container shares {}'s",
                    if mode == ContainerMode::Host {
                        "the host"
                    } else {
                        "the container it joins"
                    }
                )));
            }
        }
        let hostname = req
            .hostname
            .clone()
            .unwrap_or_else(|| name.to_ascii_lowercase());
        if !valid_dns_name(&hostname) || hostname.len() > 63 {
            return Err(invalid(format!(
                "invalid hostname {hostname:?}: use letters, digits, '-' and '.' (at most 63 characters)"
            )));
        }
        let mut dns = Vec::new();
        for d in &req.dns {
            let ip: Ipv4Addr = d
                .trim()
                .parse()
                .map_err(|_| invalid(format!("invalid --dns {d:?}: give an IPv4 address")))?;
            dns.push(ip);
        }
        let links = self.parse_links(&name, &req.links)?;
        let kind: PortKind = match &req.kind {
            None => PortKind::Tap,
            Some(k) => k.parse().map_err(invalid)?,
        };
        if has_own_ns && named_netns::name_taken(&name) {
            return Err(invalid(format!(
                "a network namespace named {name:?} already exists ({}); the container's namespace takes its name: choose another name, or `ip netns del {name}` if it is stale",
                named_netns::path(&name).display()
            )));
        }
        let container = ContainerConfig {
            name: name.clone(),
            mode: mode.clone(),
            netns: has_own_ns.then(|| name.clone()),
            hostname,
            aliases: Vec::new(),
            links,
            dns,
            kind,
        };
        // Every interface is validated before anything is made.
        if !has_ports && !req.publish.is_empty() {
            return Err(invalid(
                "--publish needs an interface on a network (not host, none or container:OTHER)",
            ));
        }
        let mut ports: Vec<PortConfig> = Vec::new();
        if has_ports {
            for (i, net) in modes.iter().enumerate() {
                let add = PortAdd {
                    network: net.clone(),
                    netns: name.clone(),
                    ifname: Some(format!("eth{i}")),
                    ip: if i == 0 { req.ip.clone() } else { None },
                    mac: if i == 0 { req.mac.clone() } else { None },
                    aliases: req.aliases.clone(),
                    kind: Some(kind.as_str().to_string()),
                    publish: if i == 0 { req.publish.clone() } else { vec![] },
                    ..Default::default()
                };
                let mut cfg = match self.validate_claimed(&add) {
                    Ok(c) => c,
                    Err(e) => {
                        for p in &ports {
                            self.cluster_forget_port(p);
                        }
                        return Err(e);
                    }
                };
                cfg.container = Some(name.clone());
                ports.push(cfg);
            }
        }
        let mut container = container;
        container.aliases = ports.first().map(|p| p.aliases.clone()).unwrap_or_default();
        if has_own_ns {
            if let Err(e) = named_netns::create(&name) {
                for p in &ports {
                    self.cluster_forget_port(p);
                }
                return Err(internal(format!(
                    "cannot create network namespace {name:?} ({}): {e}",
                    named_netns::path(&name).display()
                )));
            }
        }
        // Attach the interfaces (each in `self.ports` at once: the next one's dataplane id is
        // chosen among those); on a failure, take back what was made.
        let mut attached: Vec<String> = Vec::new();
        let undo = |m: &mut Manager, attached: Vec<String>, ports: &[PortConfig]| {
            for pname in attached {
                if let Some(PortRt { id: Some(id), .. }) = m.ports.remove(&pname) {
                    let _ = m.dp_call(|done| Command::RemovePort { id, done });
                }
                if let Some(p) = ports.iter().find(|p| p.name == pname) {
                    if let Some(h) = &p.host_ifname {
                        let _ = crate::sandbox::delete_veth(h);
                    }
                }
            }
            for p in ports {
                m.cluster_forget_port(p);
            }
            if has_own_ns {
                let _ = named_netns::delete(&name);
            }
        };
        for p in &ports {
            match self.attach_port(p, false) {
                Ok(rt) => {
                    self.ports.insert(p.name.clone(), rt);
                    attached.push(p.name.clone());
                }
                Err(e) => {
                    undo(self, attached, &ports);
                    return Err(e);
                }
            }
        }
        let saved = self.state.clone();
        let change = Change::ContainerAdd {
            container: container.clone(),
            ports: ports.clone(),
        };
        self.state.apply(&change);
        if let Err(e) = self.record(change) {
            self.state = saved;
            undo(self, attached, &ports);
            return Err(e);
        }
        self.refresh_container_files();
        for p in &ports {
            self.cluster_publish_port(p);
        }
        info!(container = %name, mode = %what, interfaces = ports.len(), "container created");
        self.container_inspect(&name)
    }

    pub(super) fn container_remove(&mut self, name: &str, force: bool) -> ApiResult<Reply> {
        self.container(name)?;
        let joined = self.joined_to(name);
        if !joined.is_empty() && !force {
            return Err(ApiError::new(
                ErrorCode::ContainerInUse,
                format!(
                    "container {name:?} is the network namespace of {} (--network container:{name}); remove them first or use --force",
                    joined.join(", ")
                ),
            ));
        }
        // Those joined (and those joined to them) go first: they have no namespace or ports
        // of their own.
        let mut order = Vec::new();
        let mut stack = vec![name.to_string()];
        while let Some(n) = stack.pop() {
            stack.extend(self.joined_to(&n));
            order.push(n);
        }
        order.reverse();
        for n in order {
            self.remove_one_container(&n)?;
        }
        Ok(Reply::Done)
    }

    fn remove_one_container(&mut self, name: &str) -> ApiResult<()> {
        let c = self.container(name)?.clone();
        let saved = self.state.clone();
        let change = Change::ContainerRemove(name.to_string());
        self.state.apply(&change);
        if let Err(e) = self.record(change) {
            self.state = saved;
            return Err(e);
        }
        for p in saved
            .ports
            .iter()
            .filter(|p| p.container.as_deref() == Some(name))
        {
            if let Some(PortRt { id: Some(id), .. }) = self.ports.remove(&p.name) {
                self.dp_call(|done| Command::RemovePort { id, done })?;
            }
            self.ports.remove(&p.name);
            self.forget_port(p);
        }
        if let Some(ns) = &c.netns {
            if let Err(e) = named_netns::delete(ns) {
                warn!(container = %name, netns = %ns, error = %e, "cannot remove the container's namespace");
            }
            if let Err(e) = netns_files::remove(ns) {
                warn!(container = %name, netns = %ns, error = %e, "cannot remove /etc/netns files");
            }
        }
        self.refresh_container_files();
        info!(container = %name, "container removed");
        Ok(())
    }

    pub(super) fn network_connect(&mut self, req: NetworkConnect) -> ApiResult<Reply> {
        let c = self.container(&req.container)?.clone();
        self.net_config(&req.network)?;
        let mode = mode_name(&c, None);
        if c.mode != ContainerMode::Networks {
            return Err(invalid(format!(
                "container {:?} is in network mode {mode}, which cannot be connected to networks",
                c.name
            )));
        }
        let ports = self.container_ports(&c.name);
        if let Some(p) = ports.iter().find(|p| p.network == req.network) {
            return Err(invalid(format!(
                "container {:?} is already on network {:?} (interface {}, port {})",
                c.name, req.network, p.ifname, p.name
            )));
        }
        let used: HashSet<u32> = ports.iter().filter_map(|p| ifindex_of(&p.ifname)).collect();
        let idx = (0..).find(|i| !used.contains(i)).unwrap_or(0);
        let mut aliases = c.aliases.clone();
        aliases.extend(req.aliases.iter().cloned());
        let add = PortAdd {
            network: req.network.clone(),
            netns: c.netns.clone().unwrap_or_default(),
            ifname: Some(format!("eth{idx}")),
            ip: req.ip.clone(),
            aliases,
            kind: Some(c.kind.as_str().to_string()),
            ..Default::default()
        };
        let mut cfg = self.validate_port(&add)?;
        cfg.container = Some(c.name.clone());
        let rt = self.attach_port(&cfg, false)?;
        let id = rt.id;
        self.ports.insert(cfg.name.clone(), rt);
        self.state.ports.push(cfg.clone());
        if let Err(e) = self.record(Change::PortAdd(cfg.clone())) {
            self.state.ports.pop();
            self.ports.remove(&cfg.name);
            if let Some(id) = id {
                let _ = self.dp_call(|done| Command::RemovePort { id, done });
            }
            if let Some(h) = &cfg.host_ifname {
                let _ = crate::sandbox::delete_veth(h);
            }
            return Err(e);
        }
        self.refresh_container_files();
        info!(container = %c.name, network = %req.network, ifname = %cfg.ifname, "container connected");
        self.container_inspect(&c.name)
    }

    pub(super) fn network_disconnect(
        &mut self,
        network: &str,
        container: &str,
    ) -> ApiResult<Reply> {
        let c = self.container(container)?.clone();
        self.net_config(network)?;
        if c.mode != ContainerMode::Networks {
            return Err(invalid(format!(
                "container {container:?} is in network mode {}: it has no interface of its own to disconnect",
                mode_name(&c, None)
            )));
        }
        let port = self
            .container_ports(container)
            .into_iter()
            .find(|p| p.network == network)
            .map(|p| p.name.clone())
            .ok_or_else(|| {
                invalid(format!(
                    "container {container:?} is not on network {network:?}"
                ))
            })?;
        self.port_delete(&port)?;
        info!(%container, %network, "container disconnected");
        self.container_inspect(container)
    }

    pub(super) fn container_inspect(&self, name: &str) -> ApiResult<Reply> {
        let c = self.container(name)?;
        Ok(Reply::Container(self.container_info(c)))
    }

    pub(super) fn container_list(&self) -> Reply {
        let mut v: Vec<ContainerInfo> = self
            .state
            .containers
            .iter()
            .map(|c| self.container_info(c))
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        Reply::Containers(v)
    }

    fn container_info(&self, c: &ContainerConfig) -> ContainerInfo {
        let owner = self.namespace_owner(c);
        let ports = self.container_ports(&owner.name);
        let networks = ports
            .iter()
            .map(|p| {
                let rt = self.ports.get(&p.name);
                let up = rt.is_some_and(|r| r.id.is_some() && r.netns.is_some());
                ContainerNetworkInfo {
                    network: p.network.clone(),
                    port: p.name.clone(),
                    ifname: p.ifname.clone(),
                    ip: p.ip.map(|n| n.to_string()),
                    mac: p.mac.to_string(),
                    gateway: self
                        .state
                        .networks
                        .iter()
                        .find(|n| n.name == p.network)
                        .map(|n| n.gateway.to_string())
                        .unwrap_or_default(),
                    aliases: p.aliases.clone(),
                    status: if up { "up" } else { "detached" }.into(),
                }
            })
            .collect();
        let (netns, netns_path) = match (&owner.mode, &owner.netns) {
            (ContainerMode::Host, _) | (_, None) => {
                (None, format!("/proc/{}/ns/net", std::process::id()))
            }
            (_, Some(ns)) => (
                Some(ns.clone()),
                named_netns::path(ns).display().to_string(),
            ),
        };
        let hostname = match owner.mode {
            ContainerMode::Host => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            _ => owner.hostname.clone(),
        };
        ContainerInfo {
            name: c.name.clone(),
            mode: mode_name(
                c,
                self.container_ports(&c.name)
                    .first()
                    .map(|p| p.network.as_str()),
            ),
            netns,
            netns_path,
            hostname,
            networks,
            dns_servers: self
                .container_files(owner)
                .nameservers
                .iter()
                .map(|n| n.to_string())
                .collect(),
            aliases: c.aliases.clone(),
            links: c
                .links
                .iter()
                .map(|l| match &l.alias {
                    Some(a) => format!("{}:{a}", l.container),
                    None => l.container.clone(),
                })
                .collect(),
            joined_by: self.joined_to(&c.name),
            ports: Vec::new(),
        }
    }

    /// What a container's resolv.conf, hosts and hostname say now.
    fn container_files(&self, c: &ContainerConfig) -> Files {
        let ports = self.container_ports(&c.name);
        let net = |name: &str| self.state.networks.iter().find(|n| n.name == name);
        let mut files = Files {
            hostname: c.hostname.clone(),
            ..Default::default()
        };
        if c.dns.is_empty() {
            for p in &ports {
                if let Some(n) = net(&p.network) {
                    if !files.nameservers.contains(&n.gateway) {
                        files.nameservers.push(n.gateway);
                    }
                }
            }
        } else {
            files.nameservers = c.dns.clone();
        }
        for p in &ports {
            if let Some(n) = net(&p.network).filter(|n| n.dns) {
                let d = n.domain();
                if !files.search.contains(&d) {
                    files.search.push(d);
                }
            }
        }
        for p in &ports {
            if let Some(ip) = p.ip {
                let mut names = vec![c.hostname.clone()];
                if c.name.to_ascii_lowercase() != c.hostname {
                    names.push(c.name.to_ascii_lowercase());
                }
                for a in &p.aliases {
                    if !names.contains(a) {
                        names.push(a.clone());
                    }
                }
                files.hosts.push((ip.addr(), names));
            }
        }
        // Legacy links: on a network without name resolution (the default bridge) the linked
        // container's address under its alias and name; on user-defined networks its name
        // resolves through DNS, and only an alias is written.
        for l in &c.links {
            let Some(other) = self.state.containers.iter().find(|x| x.name == l.container) else {
                continue; // removed meanwhile: the link comes back when it does
            };
            let other = self.namespace_owner(other);
            for op in self.container_ports(&other.name) {
                let Some(ip) = op.ip else { continue };
                if !ports.iter().any(|p| p.network == op.network) {
                    continue;
                }
                let resolves = net(&op.network).is_some_and(|n| n.dns);
                let mut names: Vec<String> = l.alias.iter().cloned().collect();
                if !resolves {
                    names.push(l.container.to_ascii_lowercase());
                }
                names.dedup();
                if !names.is_empty() {
                    files.hosts.push((ip.addr(), names));
                }
            }
        }
        files
    }

    /// Rewrites the files of every container with a namespace of its own (only those whose
    /// content changed are written): after any change to ports, networks or containers, so
    /// links follow their containers' addresses.
    pub(super) fn refresh_container_files(&self) {
        for c in &self.state.containers {
            let Some(ns) = &c.netns else { continue };
            if !named_netns::exists(ns) {
                continue;
            }
            if let Err(e) = netns_files::write(ns, &c.name, &self.container_files(c)) {
                warn!(container = %c.name, netns = %ns, error = %e, "cannot write /etc/netns files");
            }
        }
    }

    /// At start: a container's namespace is there again (it outlives vswitchd, but not a
    /// reboot: then it is re-created, empty, and its ports are restored into it).
    pub(super) fn restore_container(&mut self, c: ContainerConfig) {
        if let Some(ns) = &c.netns {
            if !named_netns::exists(ns) {
                let _ = named_netns::delete(ns); // a stale, unmounted file
                match named_netns::create(ns) {
                    Ok(()) => {
                        info!(container = %c.name, netns = %ns, "container namespace re-created")
                    }
                    Err(e) => {
                        warn!(container = %c.name, netns = %ns, error = %e, "cannot re-create the container's namespace")
                    }
                }
            }
        }
        self.state.containers.push(c);
    }
}

/// The N of "ethN".
fn ifindex_of(ifname: &str) -> Option<u32> {
    ifname.strip_prefix("eth").and_then(|n| n.parse().ok())
}
