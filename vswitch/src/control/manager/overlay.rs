//! Overlay networks: the VTEP (`vtep set/show`, its UDP socket), validating `--driver overlay`
//! networks, their tunnel ports (one per remote VTEP, in the dataplane's port id space) and
//! `network peer add/rm`.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

use tracing::{info, warn};

use super::{internal, invalid, ApiResult, Manager};
use crate::api::*;
use crate::dataplane::Command;
use crate::ports::vxlan;
use crate::state::{Change, NetworkConfig, StaticFdb, VtepState};
use crate::wire::MacAddr;

/// Peers an overlay network with `--learn-peers` learns, at most (a hostile underlay cannot
/// make it replicate every flood to thousands of addresses).
const MAX_LEARNED_PEERS: usize = 256;
/// Static FDB entries per overlay network, at most.
const MAX_STATIC_FDB: usize = 65536;
use crate::switch::overlay::{self, MAX_VNI};
use crate::switch::{DropReason, PortId};

/// The overlay side of the manager: the VTEP's socket and the tunnel ports.
#[derive(Default)]
pub struct OverlayRt {
    pub sock: Option<Arc<crate::ports::vxlan::Vtep>>,
    /// Why the VTEP's socket is not bound (restore failed).
    pub error: Option<String>,
    /// Tunnel ports: network name and remote VTEP.
    pub tunnels: BTreeMap<PortId, (String, Ipv4Addr)>,
    /// Encrypted overlays: the WireGuard socket, this host's private key, one session per
    /// remote host (by its tunnel address), and the last session index handed out.
    pub wg: Option<Arc<crate::ports::wg::WgSocket>>,
    pub wg_key: Option<[u8; 32]>,
    pub wg_peers: BTreeMap<Ipv4Addr, Arc<crate::ports::wg::Peer>>,
    pub wg_index: u32,
}

impl Manager {
    /// `--vni` and `--peer` of a network create request.
    pub(super) fn validate_overlay(
        &self,
        driver: &str,
        req: &NetworkCreate,
    ) -> ApiResult<(Option<u32>, Vec<Ipv4Addr>)> {
        if driver != "overlay" {
            if req.vni.is_some() || !req.peers.is_empty() || req.learn_peers {
                return Err(invalid(
                    "--vni, --peer and --learn-peers apply to --driver overlay networks only",
                ));
            }
            return Ok((None, Vec::new()));
        }
        let Some(vtep) = &self.state.vtep else {
            return Err(invalid(
                "an overlay network needs a VTEP: `vswitchctl vtep set --local-ip IP` first",
            ));
        };
        let vni = req
            .vni
            .ok_or_else(|| invalid("an overlay network needs --vni N (1 to 16777215)"))?;
        if vni == 0 || vni > MAX_VNI {
            return Err(invalid(format!(
                "VNI {vni} is out of range (1 to {MAX_VNI})"
            )));
        }
        if let Some(n) = self.state.networks.iter().find(|n| n.vni == Some(vni)) {
            return Err(invalid(format!(
                "VNI {vni} is already used by network {:?}",
                n.name
            )));
        }
        let mut peers = Vec::new();
        for p in &req.peers {
            let ip = self.validate_peer(vtep, p)?;
            if !peers.contains(&ip) {
                peers.push(ip);
            }
        }
        Ok((Some(vni), peers))
    }

    /// A peer has one key wherever it is a peer (one session per remote host).
    pub(super) fn check_peer_key(
        &self,
        network: &str,
        ip: Ipv4Addr,
        key: &[u8; 32],
    ) -> ApiResult<()> {
        let k = crate::ports::wg::encode_key(key);
        if let Some(n) =
            self.state.networks.iter().find(|n| {
                n.name != network && n.peer_keys.get(&ip).is_some_and(|other| *other != k)
            })
        {
            return Err(invalid(format!(
                "peer {ip} has another key in network {:?}: one host, one key",
                n.name
            )));
        }
        Ok(())
    }

    fn validate_peer(&self, vtep: &VtepState, p: &str) -> ApiResult<Ipv4Addr> {
        let ip: Ipv4Addr = p
            .trim()
            .parse()
            .map_err(|_| invalid(format!("invalid peer {p:?}: give an IPv4 address")))?;
        if ip == vtep.local_ip {
            return Err(invalid(format!("peer {ip} is this VTEP's own address")));
        }
        if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() || ip.is_loopback() {
            return Err(invalid(format!(
                "peer {ip} is not a unicast address of a remote VTEP"
            )));
        }
        Ok(ip)
    }

    /// Ids in use by tunnel ports (so ports and tunnels never share one).
    pub(super) fn tunnel_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.overlay.tunnels.keys().map(|p| p.0)
    }

    /// Names of tunnel ports, for tables keyed by port id.
    pub(super) fn tunnel_names(&self) -> impl Iterator<Item = (PortId, String)> + '_ {
        self.overlay
            .tunnels
            .iter()
            .map(|(id, (_, ip))| (*id, format!("vxlan:{ip}")))
    }

    /// The remote VTEP behind a port id, if it is a tunnel.
    pub(super) fn tunnel_vtep(&self, id: PortId) -> Option<Ipv4Addr> {
        self.overlay.tunnels.get(&id).map(|(_, ip)| *ip)
    }

    /// The tunnel port to `remote` on `network`, if there is one.
    fn tunnel_to(&self, network: &str, remote: Ipv4Addr) -> Option<PortId> {
        self.overlay
            .tunnels
            .iter()
            .find(|(_, (n, ip))| n == network && *ip == remote)
            .map(|(id, _)| *id)
    }

    /// Makes the tunnel to `remote` on `net` what the configuration wants: a peer that floods
    /// reach, a tunnel only static entries point at, or none; and puts the static entries
    /// behind it in place when it is new.
    pub(super) fn sync_tunnel(&mut self, net: &NetworkConfig, remote: Ipv4Addr) -> ApiResult<()> {
        let flood = net.peers.contains(&remote);
        let wanted = flood || net.fdb.iter().any(|e| e.vtep == remote);
        match (self.tunnel_to(&net.name, remote), wanted) {
            (Some(_), false) => self.remove_tunnel(&net.name, Some(remote)),
            (Some(id), true) => {
                self.dp_call(|done| Command::TunnelFlood { id, flood, done })?;
            }
            (None, true) => {
                self.add_tunnel(net, remote, flood)?;
                for e in net.fdb.iter().filter(|e| e.vtep == remote) {
                    self.install_static(net, e, false)?;
                }
            }
            (None, false) => {}
        }
        Ok(())
    }

    /// Puts a static FDB entry in the dataplane (or takes it out).
    pub(super) fn install_static(
        &mut self,
        net: &NetworkConfig,
        e: &StaticFdb,
        remove: bool,
    ) -> ApiResult<()> {
        let (Some(&network), Some(port)) =
            (self.nets.get(&net.name), self.tunnel_to(&net.name, e.vtep))
        else {
            return Ok(()); // no VTEP socket yet: installed when the tunnels come
        };
        let (mac, ip, names) = (e.mac, e.ip, e.names.clone());
        let ok = self.dp_call(|done| Command::FdbStatic {
            network,
            mac,
            port: (!remove).then_some(port),
            ip,
            names,
            done,
        })?;
        if !ok {
            return Err(internal("the dataplane refused the static entry"));
        }
        Ok(())
    }

    fn add_tunnel(&mut self, net: &NetworkConfig, remote: Ipv4Addr, flood: bool) -> ApiResult<()> {
        let (Some(sock), Some(vtep), Some(vni)) =
            (self.overlay.sock.clone(), self.state.vtep.clone(), net.vni)
        else {
            return Ok(()); // no VTEP socket: the tunnels come when it is bound
        };
        let Some(&network) = self.nets.get(&net.name) else {
            return Err(internal("network has no dataplane id"));
        };
        let id = self.free_port_id();
        let port: Box<dyn crate::ports::Port> = if net.encrypted {
            match self.wg_tunnel(&vtep, remote, vni) {
                Some(p) => p,
                // No WireGuard socket: nothing may go in the clear.
                None => return Ok(()),
            }
        } else {
            Box::new(vxlan::Tunnel::new(sock, remote, vtep.port, vni))
        };
        let ok = self.dp_call(|done| Command::AddTunnel {
            id,
            network,
            vni,
            remote,
            flood,
            port,
            done,
        })?;
        if !ok {
            return Err(internal("the dataplane refused the tunnel"));
        }
        self.overlay.tunnels.insert(id, (net.name.clone(), remote));
        Ok(())
    }

    fn remove_tunnel(&mut self, network: &str, remote: Option<Ipv4Addr>) {
        let ids: Vec<PortId> = self
            .overlay
            .tunnels
            .iter()
            .filter(|(_, (n, ip))| n == network && remote.is_none_or(|r| r == *ip))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            self.overlay.tunnels.remove(&id);
            let _ = self.dp_call(|done| Command::RemovePort { id, done });
        }
    }

    /// A network was attached to the dataplane: its tunnels too (overlays), to its peers and
    /// to the VTEPs of its static entries, and the static entries behind them.
    pub(super) fn attach_tunnels(&mut self, net: &NetworkConfig) {
        let mut remotes = net.peers.clone();
        for e in &net.fdb {
            if !remotes.contains(&e.vtep) {
                remotes.push(e.vtep);
            }
        }
        for p in remotes {
            if let Err(e) = self.sync_tunnel(net, p) {
                warn!(network = %net.name, peer = %p, error = %e.message, "cannot add tunnel");
            }
        }
    }

    /// A network is going: its tunnels first.
    pub(super) fn detach_tunnels(&mut self, network: &str) {
        self.remove_tunnel(network, None);
    }

    fn validate_vtep(&self, req: &VtepSet) -> ApiResult<VtepState> {
        let local_ip: Ipv4Addr = req.local_ip.trim().parse().map_err(|_| {
            invalid(format!(
                "invalid --local-ip {:?}: give an IPv4 address of vswitchd's namespace",
                req.local_ip
            ))
        })?;
        let port = req.port.unwrap_or(overlay::DEFAULT_PORT);
        if port == 0 {
            return Err(invalid("--port must be 1 to 65535"));
        }
        let ttl = req.ttl.unwrap_or(64);
        if ttl == 0 {
            return Err(invalid("--ttl must be 1 to 255"));
        }
        if let Some(n) = self
            .state
            .networks
            .iter()
            .find(|n| n.peers.contains(&local_ip))
        {
            return Err(invalid(format!(
                "{local_ip} is a peer of network {:?}: a VTEP cannot be its own peer",
                n.name
            )));
        }
        let wg_port = req.wg_port.unwrap_or(crate::ports::wg::DEFAULT_PORT);
        if wg_port == 0 || wg_port == port {
            return Err(invalid(format!(
                "--wg-port {wg_port} must be a port (1 to 65535) other than the VXLAN port"
            )));
        }
        let tunnel_ip = match req.tunnel_ip.as_deref() {
            None => None,
            Some(t) => Some(t.trim().parse::<ipnet::Ipv4Net>().map_err(|_| {
                invalid(format!(
                    "invalid --tunnel-ip {t:?}: give this host's address inside the sessions, as a CIDR"
                ))
            })?),
        };
        Ok(VtepState {
            local_ip,
            port,
            ttl,
            wg_port,
            tunnel_ip,
        })
    }

    fn bind_vtep(v: &VtepState) -> ApiResult<Arc<crate::ports::vxlan::Vtep>> {
        vxlan::bind(v.local_ip, v.port, v.ttl).map_err(|e| {
            let hint = match e.raw_os_error() {
                Some(libc::EADDRNOTAVAIL) => ": it is not an address of vswitchd's namespace",
                Some(libc::EADDRINUSE) => {
                    ": the port is in use (a kernel vxlan device, another vswitchd?)"
                }
                _ => "",
            };
            invalid(format!(
                "cannot bind the VTEP to {}:{} ({e}){hint}",
                v.local_ip, v.port
            ))
        })
    }

    /// Binds the VTEP and (re)builds every overlay network's tunnels on its socket.
    fn install_vtep(&mut self, sock: Arc<crate::ports::vxlan::Vtep>) -> ApiResult<()> {
        let networks: Vec<String> = self
            .overlay
            .tunnels
            .values()
            .map(|(n, _)| n.clone())
            .collect();
        for n in networks {
            self.remove_tunnel(&n, None);
        }
        let s = sock.clone();
        self.dp_call(|done| Command::SetVtep {
            sock: Some(s),
            done,
        })?
        .map_err(|e| internal(format!("dataplane: cannot poll the VTEP socket: {e}")))?;
        self.overlay.sock = Some(sock);
        self.overlay.error = None;
        for n in &self.overlay_networks() {
            self.attach_tunnels(n);
        }
        Ok(())
    }

    /// The overlay networks' configs (a copy: the caller may change the state meanwhile).
    pub(super) fn overlay_networks(&self) -> Vec<NetworkConfig> {
        self.state
            .networks
            .iter()
            .filter(|n| n.vni.is_some())
            .cloned()
            .collect()
    }

    pub(super) fn vtep_set(&mut self, req: VtepSet) -> ApiResult<Reply> {
        let v = self.validate_vtep(&req)?;
        // The key first: a key file that cannot serve (others may read it, it is not a key)
        // refuses the change before anything is torn down.
        super::encrypted::load_or_create_key(self.store.dir()).map_err(invalid)?;
        // Re-binding the same address and port needs the old socket closed first (the
        // WireGuard one too: the tunnels hold it).
        let same = self.state.vtep.as_ref().is_some_and(|o| {
            o.local_ip == v.local_ip && (o.port == v.port || o.wg_port == v.wg_port)
        });
        if same {
            let _ = self.dp_call(|done| Command::SetWg {
                sock: None,
                vxlan_port: v.port,
                done,
            });
            self.overlay.wg = None;
            let _ = self.dp_call(|done| Command::SetVtep { sock: None, done });
            let nets: Vec<String> = self
                .overlay
                .tunnels
                .values()
                .map(|(n, _)| n.clone())
                .collect();
            for n in nets {
                self.remove_tunnel(&n, None);
            }
            self.overlay.sock = None;
        }
        let sock = Self::bind_vtep(&v)?;
        let saved = self.state.clone();
        self.state.vtep = Some(v.clone());
        if let Err(e) = self.record(Change::VtepSet(v.clone())) {
            self.state = saved;
            return Err(e);
        }
        self.bind_wg(&v)?;
        self.install_vtep(sock)?;
        self.sync_wg_peers();
        self.cluster_publish_node();
        let ports = self.state.ports.clone();
        for p in &ports {
            self.cluster_publish_port(p);
        }
        info!(local_ip = %v.local_ip, port = v.port, wg_port = v.wg_port, "VTEP set");
        self.vtep_show()
    }

    /// At start: the saved VTEP's socket (or the config's `[vtep]`), before the networks
    /// whose tunnels use it.
    pub(super) fn restore_vtep(&mut self, v: VtepState) {
        self.state.vtep = Some(v.clone());
        if let Err(e) = self.bind_wg(&v) {
            warn!(error = %e.message, "encrypted overlays' WireGuard port not restored");
        }
        match Self::bind_vtep(&v) {
            Ok(sock) => {
                if let Err(e) = self.install_vtep(sock) {
                    self.overlay.error = Some(e.message);
                }
            }
            Err(e) => {
                warn!(error = %e.message, "VTEP not restored");
                self.overlay.error = Some(e.message);
            }
        }
    }

    pub(super) fn vtep_show(&self) -> ApiResult<Reply> {
        let Some(v) = &self.state.vtep else {
            return Ok(Reply::Vtep(None));
        };
        let snap = self.snapshot()?;
        let c = snap.vtep.unwrap_or_default();
        let drops = DropReason::ALL
            .iter()
            .filter(|r| {
                matches!(
                    r,
                    DropReason::BadVxlan
                        | DropReason::UnknownVni
                        | DropReason::UnknownVtep
                        | DropReason::Unencrypted
                        | DropReason::BadWireguard
                        | DropReason::TxError
                )
            })
            .map(|r| (r.name().to_string(), c.drops[*r as usize]))
            .collect();
        let mut networks: Vec<(String, u32, Vec<String>)> = self
            .state
            .networks
            .iter()
            .filter_map(|n| {
                n.vni.map(|vni| {
                    (
                        n.name.clone(),
                        vni,
                        n.peers.iter().map(|p| p.to_string()).collect(),
                    )
                })
            })
            .collect();
        networks.sort();
        let (public_key, wg_peers) = self.wg_info();
        Ok(Reply::Vtep(Some(VtepInfo {
            local_ip: v.local_ip.to_string(),
            port: v.port,
            ttl: v.ttl,
            status: match (&self.overlay.sock, &self.overlay.error) {
                (Some(_), _) => "up".into(),
                (None, Some(e)) => e.clone(),
                (None, None) => "not bound".into(),
            },
            tx_batching: match &self.overlay.sock {
                Some(s) if s.gso_active() => "udp-gso".into(),
                Some(_) => "sendmmsg".into(),
                None => String::new(),
            },
            rx_packets: c.rx_packets,
            rx_bytes: c.rx_bytes,
            drops,
            networks,
            public_key,
            wg_port: v.wg_port,
            tunnel_ip: super::encrypted::tunnel_ip(v).to_string(),
            wg_peers,
        })))
    }

    pub(super) fn network_peer(
        &mut self,
        network: &str,
        ip: &str,
        remove: bool,
        key: Option<&str>,
        endpoint: Option<&str>,
    ) -> ApiResult<Reply> {
        let net = self.net_config(network)?.clone();
        if net.vni.is_none() {
            return Err(invalid(format!(
                "network {network:?} is not an overlay network (driver {})",
                net.driver
            )));
        }
        let vtep = self
            .state
            .vtep
            .clone()
            .ok_or_else(|| invalid("no VTEP is set"))?;
        let ip = self.validate_peer(&vtep, ip)?;
        let mut updated = net.clone();
        if remove {
            if !updated.peers.contains(&ip) {
                return Err(invalid(format!(
                    "{ip} is not a peer of network {network:?}"
                )));
            }
            updated.peers.retain(|p| *p != ip);
            updated.peer_keys.remove(&ip);
            updated.peer_endpoints.remove(&ip);
        } else {
            if updated.peers.contains(&ip) {
                return Err(invalid(format!(
                    "{ip} is already a peer of network {network:?}"
                )));
            }
            if (key.is_some() || endpoint.is_some()) && !net.encrypted {
                return Err(invalid(format!(
                    "--key and --endpoint are for encrypted overlays; network {network:?} is not one"
                )));
            }
            if let Some(k) = key {
                let k = crate::ports::wg::parse_key(k).map_err(invalid)?;
                self.check_peer_key(network, ip, &k)?;
                updated
                    .peer_keys
                    .insert(ip, crate::ports::wg::encode_key(&k));
            }
            if let Some(e) = endpoint {
                let e: std::net::SocketAddrV4 = e
                    .trim()
                    .parse()
                    .map_err(|_| invalid(format!("invalid --endpoint {e:?}: give IPv4:PORT")))?;
                updated.peer_endpoints.insert(ip, e);
            }
            updated.peers.push(ip);
        }
        // NetworkAdd replaces the network in place (keeping its ports).
        self.record_network(&updated)?;
        self.sync_tunnel(&updated, ip)?;
        info!(%network, peer = %ip, remove, "overlay peer changed");
        Ok(Reply::Network(self.network_info(&updated)))
    }

    /// `--learn-peers`: a VTEP sent for the network's VNI; it becomes a peer (persisted, as
    /// `network peer add` would make it), up to `MAX_LEARNED_PEERS` peers.
    pub(super) fn learn_peer(&mut self, network: &str, vtep: Ipv4Addr) {
        let Ok(net) = self.net_config(network) else {
            return;
        };
        if !net.learn_peers || net.peers.contains(&vtep) {
            return;
        }
        if net.peers.len() >= MAX_LEARNED_PEERS {
            warn!(%network, %vtep, "not learning another peer: the network has {MAX_LEARNED_PEERS}");
            return;
        }
        match self.network_peer(network, &vtep.to_string(), false, None, None) {
            Ok(_) => info!(%network, %vtep, "peer learned"),
            Err(e) => warn!(%network, %vtep, error = %e.message, "peer not learned"),
        }
    }

    /// The overlay network `network`, for `fdb add/del`.
    fn overlay_config(&self, network: &str) -> ApiResult<NetworkConfig> {
        let net = self.net_config(network)?.clone();
        if net.vni.is_none() {
            return Err(invalid(format!(
                "network {network:?} is not an overlay network (driver {}): static FDB entries \
                 name MACs behind remote VTEPs",
                net.driver
            )));
        }
        Ok(net)
    }

    /// Replaces an overlay network's configuration (its static entries or peers), recorded.
    pub(super) fn record_network(&mut self, updated: &NetworkConfig) -> ApiResult<()> {
        let saved = self.state.clone();
        if let Some(n) = self
            .state
            .networks
            .iter_mut()
            .find(|n| n.name == updated.name)
        {
            *n = updated.clone();
        }
        if let Err(e) = self.record(Change::NetworkAdd(updated.clone())) {
            self.state = saved;
            return Err(e);
        }
        Ok(())
    }

    /// `fdb add NETWORK MAC --vtep IP [--ip ADDR]`: MAC is behind the remote VTEP; known before
    /// any traffic, never aged or moved by learning, and with `--ip` answered for by ARP
    /// suppression. The VTEP need not be a peer: frames to the MAC are unicast to it, floods
    /// are not replicated to it.
    pub(super) fn fdb_add(
        &mut self,
        network: &str,
        mac: &str,
        vtep: &str,
        ip: Option<&str>,
    ) -> ApiResult<Reply> {
        let net = self.overlay_config(network)?;
        let local = self
            .state
            .vtep
            .clone()
            .ok_or_else(|| invalid("no VTEP is set"))?;
        let mac: MacAddr = mac.trim().parse().map_err(|_| {
            invalid(format!(
                "invalid MAC {mac:?}: expected six hex bytes like 02:42:0a:2a:00:05"
            ))
        })?;
        if !mac.is_valid_source() {
            return Err(invalid(format!(
                "{mac} is not a unicast MAC (multicast, broadcast or zero)"
            )));
        }
        let vtep = self.validate_peer(&local, vtep)?;
        if net.fdb.iter().any(|e| e.mac == mac) {
            return Err(invalid(format!(
                "{mac} already has a static entry on network {network:?}: `fdb del` it first"
            )));
        }
        if net.fdb.len() >= MAX_STATIC_FDB {
            return Err(invalid(format!(
                "network {network:?} has {MAX_STATIC_FDB} static entries, the most it takes"
            )));
        }
        if let Some(p) = self
            .state
            .ports
            .iter()
            .find(|p| p.network == network && p.mac == mac)
        {
            return Err(invalid(format!(
                "{mac} is the MAC of local port {:?}",
                p.name
            )));
        }
        let ip = match ip {
            None => None,
            Some(s) => {
                let ip: Ipv4Addr = s.trim().parse().map_err(|_| {
                    invalid(format!("invalid --ip {s:?}: expected an IPv4 address"))
                })?;
                if !net.subnet.contains(&ip)
                    || ip == net.subnet.network()
                    || ip == net.subnet.broadcast()
                {
                    return Err(invalid(format!(
                        "{ip} is not a host address of network {network:?} ({})",
                        net.subnet
                    )));
                }
                if ip == net.gateway {
                    return Err(invalid(format!(
                        "{ip} is the gateway of network {network:?}"
                    )));
                }
                if let Some(p) = self
                    .state
                    .ports
                    .iter()
                    .find(|p| p.network == network && p.ip.is_some_and(|n| n.addr() == ip))
                {
                    return Err(invalid(format!(
                        "{ip} is the address of local port {:?}",
                        p.name
                    )));
                }
                if let Some(e) = net.fdb.iter().find(|e| e.ip == Some(ip)) {
                    return Err(invalid(format!(
                        "{ip} is the address of static entry {} already",
                        e.mac
                    )));
                }
                Some(ip)
            }
        };
        let entry = StaticFdb {
            mac,
            vtep,
            ip,
            names: Vec::new(),
            cluster: false,
        };
        let mut updated = net.clone();
        updated.fdb.push(entry.clone());
        self.record_network(&updated)?;
        if self.tunnel_to(network, vtep).is_some() {
            self.install_static(&updated, &entry, false)?;
        } else {
            self.sync_tunnel(&updated, vtep)?;
        }
        info!(%network, %mac, %vtep, "static FDB entry added");
        self.fdb_show(Some(network))
    }

    /// `fdb del NETWORK MAC`: removes a static entry (and the tunnel it alone needed).
    pub(super) fn fdb_del(&mut self, network: &str, mac: &str) -> ApiResult<Reply> {
        let net = self.overlay_config(network)?;
        let mac: MacAddr = mac
            .trim()
            .parse()
            .map_err(|_| invalid(format!("invalid MAC {mac:?}")))?;
        let Some(entry) = net.fdb.iter().find(|e| e.mac == mac).cloned() else {
            return Err(invalid(format!(
                "{mac} has no static entry on network {network:?} (learned entries age out by \
                 themselves)"
            )));
        };
        let mut updated = net.clone();
        updated.fdb.retain(|e| e.mac != mac);
        self.record_network(&updated)?;
        self.install_static(&updated, &entry, true)?;
        self.sync_tunnel(&updated, entry.vtep)?;
        info!(%network, %mac, "static FDB entry removed");
        self.fdb_show(Some(network))
    }
}
