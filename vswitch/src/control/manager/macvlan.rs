//! macvlan and ipvlan networks: containers straight on a parent interface's segment, with no
//! NAT. macvlan containers have their own MACs there and the segment's router as their
//! gateway; ipvlan containers share the parent's MAC (`switch::ipvlan` tells them apart by
//! address), in l2 as stations of the segment, in l3 behind the switch as their router.
//!
//! One AF_XDP socket serves a parent (`ports::parent`), whatever the networks on it: one
//! untagged and any number on VLANs (`IFACE.VLAN`, tagged by the switch). Its XDP program
//! takes only the containers' frames; the host keeps the rest, so the parent may go on
//! carrying the host's own traffic. Each network has a segment port in the pipeline (the
//! parent as seen from that VLAN).

use std::collections::{BTreeMap, HashMap};

use tracing::{info, warn};

use super::{invalid, ApiResult, Manager};
use crate::api::*;
use crate::dataplane::Command;
use crate::ports::parent::{self, Parent, ParentMaps};
use crate::ports::{AfXdp, XdpConfig, XdpMode};
use crate::sandbox::netlink::{LinkChange, Netlink};
use crate::state::NetworkConfig;
use crate::switch::{ipvlan, vlan};
use crate::switch::{NetId, PortId};

/// A parent interface the switch serves.
pub struct ParentRt {
    /// The socket's port in the dataplane (the trunk).
    pub trunk: PortId,
    /// Makes each network's sending side.
    handle: Parent,
    maps: ParentMaps,
    /// Networks on it by VLAN (0: untagged).
    pub segments: BTreeMap<u16, Segment>,
    /// The interface's MAC (ipvlan containers' on the wire).
    mac: crate::wire::MacAddr,
    /// What the pipeline was last told of each ipvlan network on it.
    ipvlan_sent: HashMap<String, ipvlan::Params>,
    /// The interface was not promiscuous before the switch made it so.
    promisc_set: Option<u32>,
}

impl Drop for ParentRt {
    fn drop(&mut self) {
        if let Some(index) = self.promisc_set {
            if let Ok(mut nl) = Netlink::open() {
                let _ = nl.set_link(
                    index,
                    &LinkChange {
                        promisc: Some(false),
                        ..Default::default()
                    },
                );
            }
        }
    }
}

/// One VLAN of a parent (or its untagged side): a segment port in the pipeline and the
/// networks behind it (one, or several ipvlan l3 networks sharing it).
pub struct Segment {
    pub port: PortId,
    pub networks: Vec<String>,
}

/// A parent program's map contents: key, value.
type Steered = HashMap<[u8; 8], u32>;

/// Why a network's parent is not served, by network name.
pub type ParentErrors = BTreeMap<String, String>;

impl Manager {
    /// `--parent` and `--mode` of a create request: (parent, mode) for a macvlan network.
    pub(super) fn validate_macvlan(
        &self,
        driver: &str,
        req: &NetworkCreate,
    ) -> ApiResult<(Option<String>, Option<String>)> {
        if driver != "macvlan" && driver != "ipvlan" {
            if req.parent.is_some() || req.mode.is_some() {
                return Err(invalid(
                    "--parent and --mode apply to --driver macvlan and ipvlan networks only",
                ));
            }
            return Ok((None, None));
        }
        let Some(spec) = req.parent.as_deref() else {
            return Err(invalid(format!(
                "a {driver} network needs --parent IFACE[.VLAN]: the interface its containers go on"
            )));
        };
        let (iface, vlan) = vlan::parse_parent(spec).map_err(invalid)?;
        let mode = match (driver, req.mode.as_deref()) {
            ("macvlan", None) => "bridge".to_string(),
            (_, None) => "l2".to_string(),
            ("macvlan", Some(m @ ("bridge" | "private"))) => m.to_string(),
            ("ipvlan", Some(m @ ("l2" | "l3"))) => m.to_string(),
            ("macvlan", Some(m)) => {
                return Err(invalid(format!(
                    "macvlan mode {m:?} does not exist; use --mode bridge or private"
                )))
            }
            (_, Some(m)) => {
                return Err(invalid(format!(
                    "ipvlan mode {m:?} does not exist; use --mode l2 or l3"
                )))
            }
        };
        if req.vni.is_some() || !req.peers.is_empty() {
            return Err(invalid("--vni and --peer apply to overlay networks only"));
        }
        if req.icc == Some(false) {
            return Err(invalid(format!(
                "a {driver} network cannot take --no-icc{}",
                if driver == "macvlan" {
                    "; isolate its containers with --mode private"
                } else {
                    ""
                }
            )));
        }
        let link = Netlink::open()
            .and_then(|mut nl| nl.link(&iface))
            .map_err(|e| super::internal(format!("netlink: {e}")))?;
        if link.is_none() {
            return Err(invalid(format!(
                "parent {iface:?} does not exist in vswitchd's namespace"
            )));
        }
        if self.state.uplink.as_ref().is_some_and(|u| u.iface == iface) {
            return Err(invalid(format!(
                "{iface} is the switch's uplink; a {driver} parent needs an interface of its own"
            )));
        }
        let tag = vlan.unwrap_or(0);
        let l3 = mode == "l3";
        let subnet: Option<ipnet::Ipv4Net> = req.subnet.parse().ok();
        for other in self.state.networks.iter().filter(|n| {
            n.parent
                .as_deref()
                .and_then(|p| vlan::parse_parent(p).ok())
                .is_some_and(|(i, v)| i == iface && v.unwrap_or(0) == tag)
        }) {
            let on = match vlan {
                Some(v) => format!("VLAN {v} of {iface}"),
                None => format!("{iface} untagged"),
            };
            // ipvlan l3 networks route between each other: one segment, disjoint subnets.
            if l3 && other.driver == "ipvlan" && other.mode.as_deref() == Some("l3") {
                if let Some(sub) = subnet.filter(|s| {
                    s.contains(&other.subnet.network()) || other.subnet.contains(&s.network())
                }) {
                    return Err(ApiError::new(
                        ErrorCode::SubnetOverlap,
                        format!(
                            "subnet {sub} overlaps ipvlan l3 network {:?} ({}) on {on}; l3 networks on one parent are one routing domain",
                            other.name, other.subnet
                        ),
                    ));
                }
                continue;
            }
            return Err(invalid(format!(
                "network {:?} is on {on} already; macvlan and ipvlan networks share a parent only on different VLANs ({iface}.10, {iface}.20, ...), ipvlan l3 networks excepted",
                other.name
            )));
        }
        Ok((Some(spec.to_string()), Some(mode)))
    }

    /// Port ids of parents' sockets and their segment ports.
    pub(super) fn parent_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.parents
            .values()
            .flat_map(|p| std::iter::once(p.trunk.0).chain(p.segments.values().map(|s| s.port.0)))
    }

    /// Names of parents' ports, for tables keyed by port id.
    pub(super) fn parent_port_names(&self) -> Vec<(PortId, String)> {
        let mut v = Vec::new();
        for (iface, p) in &self.parents {
            v.push((p.trunk, iface.clone()));
            for (tag, seg) in &p.segments {
                v.push((
                    seg.port,
                    match tag {
                        0 => format!("{iface}:untagged"),
                        t => format!("{iface}.{t}"),
                    },
                ));
            }
        }
        v
    }

    /// Serves `net`'s parent (opening it if no other network has) and puts the network's
    /// segment port on it. `stale`: a saved network at start, whose parent may still hold a
    /// dead daemon's program (detached first).
    pub(super) fn attach_parent(
        &mut self,
        net: &NetworkConfig,
        id: NetId,
        stale: bool,
    ) -> ApiResult<()> {
        let Some(spec) = net.parent.as_deref() else {
            return Ok(());
        };
        let (iface, vlan) = vlan::parse_parent(spec).map_err(invalid)?;
        let tag = vlan.unwrap_or(0);
        if !self.parents.contains_key(&iface) {
            let rt = self.open_parent(&iface, stale)?;
            self.parents.insert(iface.clone(), rt);
        }
        let (trunk, port, shared, mac) = match self.parents.get(&iface) {
            Some(p) => (
                p.trunk,
                p.handle.vlan(tag),
                p.segments.get(&tag).map(|s| s.port),
                p.mac,
            ),
            None => return Err(super::internal("parent vanished")),
        };
        if let Some(params) = ipvlan_params(net, &iface, mac) {
            let to_send = params.clone();
            self.dp_call(|done| Command::SetIpvlan {
                network: id,
                params: to_send,
                done,
            })?;
            if let Some(p) = self.parents.get_mut(&iface) {
                p.ipvlan_sent.insert(net.name.clone(), params);
            }
        }
        // A segment there already is shared (ipvlan l3 networks; validated).
        let seg = shared.unwrap_or_else(|| self.free_port_id());
        let ok = self.dp_call(|done| Command::AddSegment {
            id: seg,
            network: id,
            trunk,
            vlan: tag,
            port: match shared {
                Some(_) => None,
                None => Some(Box::new(port)),
            },
            done,
        })?;
        if !ok {
            self.close_parent_if_unused(&iface);
            return Err(super::internal(
                "the dataplane refused the network's parent port",
            ));
        }
        if let Some(p) = self.parents.get_mut(&iface) {
            p.segments
                .entry(tag)
                .or_insert_with(|| Segment {
                    port: seg,
                    networks: Vec::new(),
                })
                .networks
                .push(net.name.clone());
        }
        self.parent_errors.remove(&net.name);
        info!(network = %net.name, parent = %spec, driver = %net.driver, "network on its parent");
        Ok(())
    }

    /// At start: serves a saved network's parent, or keeps why it could not be.
    pub(super) fn restore_parent(&mut self, net: &NetworkConfig, id: NetId) {
        if net.parent.is_none() {
            return;
        }
        if let Err(e) = self.attach_parent(net, id, true) {
            warn!(network = %net.name, error = %e.message, "macvlan parent not served");
            self.parent_errors.insert(net.name.clone(), e.message);
        }
    }

    fn open_parent(&mut self, iface: &str, stale: bool) -> ApiResult<ParentRt> {
        let mut nl = Netlink::open().map_err(|e| super::internal(format!("netlink: {e}")))?;
        let index = nl
            .link_index(iface)
            .map_err(|e| super::internal(format!("netlink: {e}")))?
            .ok_or_else(|| {
                invalid(format!(
                    "parent {iface:?} does not exist in vswitchd's namespace"
                ))
            })?;
        // A host interface: generic mode, as for a shared uplink (some drivers reset their
        // queues when a native program comes, cutting the host off for a moment).
        let cfg = XdpConfig {
            mode: XdpMode::Skb,
            ring_size: crate::ports::afxdp::WIDE_RING_SIZE,
            ..XdpConfig::default()
        };
        let mut opened = Err(invalid("not tried"));
        for attempt in 0..if stale { 20 } else { 1 } {
            if stale {
                if attempt > 0 {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                // A dead daemon's program (its socket released a moment after it).
                for mode in [
                    crate::ports::afxdp::XDP_FLAGS_DRV_MODE,
                    crate::ports::afxdp::XDP_FLAGS_SKB_MODE,
                ] {
                    let _ = nl.set_xdp(index, -1, mode, None);
                }
            }
            opened = AfXdp::open_parent(iface, cfg).map_err(|e| {
                invalid(format!(
                    "cannot serve parent {iface} with AF_XDP: {e} (is another XDP program attached?)"
                ))
            });
            if opened.is_ok() {
                break;
            }
        }
        let xsk = opened?;
        let maps = xsk
            .parent_maps()
            .ok_or_else(|| super::internal("the parent's socket has no maps"))?
            .map_err(|e| super::internal(format!("the parent program's maps: {e}")))?;
        let xdp_mode = xsk.mode();
        // ipvlan containers go on the wire with it: a parent without one is not served.
        let mac = crate::sandbox::link_mac(iface)
            .filter(|m| m.is_valid_source())
            .ok_or_else(|| invalid(format!("cannot read the MAC address of parent {iface}")))?;
        // The segment's broadcasts and multicasts, which the host keeps: a copy for the
        // containers (without it they hear only the ARP for their addresses).
        let groups = crate::ports::packet::GroupCopy::open(index)
            .inspect_err(|e| {
                warn!(iface, error = %e, "no copy of the segment's broadcasts for the containers")
            })
            .ok();
        let handle = Parent::new(xsk, groups);
        // Frames for the containers' MACs get past a real NIC's filter only in promiscuous
        // mode (a veth takes everything anyway).
        let promisc_set = match promiscuous(iface) {
            true => None,
            false => nl
                .set_link(
                    index,
                    &LinkChange {
                        promisc: Some(true),
                        ..Default::default()
                    },
                )
                .inspect_err(|e| warn!(iface, error = %e, "cannot make the parent promiscuous"))
                .ok()
                .map(|()| index),
        };
        let trunk = self.free_port_id();
        let port = handle.clone();
        self.dp_call(|done| Command::AddTrunk {
            id: trunk,
            port: Box::new(port),
            done,
        })?
        .map_err(|e| super::internal(format!("dataplane: {e}")))?;
        info!(iface, xdp = xdp_mode, "macvlan parent served");
        Ok(ParentRt {
            trunk,
            handle,
            maps,
            segments: BTreeMap::new(),
            mac,
            ipvlan_sent: HashMap::new(),
            promisc_set,
        })
    }

    /// Takes a removed network off its parent; the parent is let go when no network is left.
    pub(super) fn detach_parent(&mut self, net: &str) {
        self.parent_errors.remove(net);
        let Some(iface) = self
            .parents
            .iter()
            .find(|(_, p)| {
                p.segments
                    .values()
                    .any(|s| s.networks.iter().any(|n| n == net))
            })
            .map(|(i, _)| i.clone())
        else {
            return;
        };
        if let Some(p) = self.parents.get_mut(&iface) {
            p.ipvlan_sent.remove(net);
            let mut gone = Vec::new();
            for (tag, seg) in p.segments.iter_mut() {
                seg.networks.retain(|n| n != net);
                if seg.networks.is_empty() {
                    gone.push((*tag, seg.port));
                }
            }
            // A segment other networks still share stays; the pipeline hands it on.
            for (tag, id) in gone {
                p.segments.remove(&tag);
                let _ = self.dp.call(|done| Command::RemovePort { id, done });
            }
        }
        self.close_parent_if_unused(&iface);
    }

    fn close_parent_if_unused(&mut self, iface: &str) {
        if self
            .parents
            .get(iface)
            .is_some_and(|p| p.segments.is_empty())
        {
            if let Some(p) = self.parents.remove(iface) {
                let id = p.trunk;
                let _ = self.dp_call(|done| Command::RemovePort { id, done });
                drop(p);
                info!(iface, "macvlan parent let go");
            }
        }
    }

    /// Parents whose interface vanished: the socket goes, and with it each network's ports
    /// (down, with the reason); the networks say why their parent is not served. A restart
    /// serves the parent again once it is back.
    pub fn check_parents(&mut self) {
        let gone: Vec<String> = self
            .parents
            .keys()
            .filter(|i| !crate::sandbox::link_exists(i))
            .cloned()
            .collect();
        for iface in gone {
            let Some(p) = self.parents.remove(&iface) else {
                continue;
            };
            let why = format!("parent {iface} is gone");
            warn!(
                iface,
                "macvlan parent vanished: its networks' ports go down"
            );
            let id = p.trunk;
            let reason = why.clone();
            let _ = self.dp_call(|done| Command::PortDown { id, reason, done });
            for net in p.segments.values().flat_map(|s| s.networks.iter()) {
                self.parent_errors.insert(net.clone(), why.clone());
                let ports: Vec<String> = self
                    .state
                    .ports
                    .iter()
                    .filter(|c| &c.network == net)
                    .map(|c| c.name.clone())
                    .collect();
                for port in ports {
                    self.emit(
                        "port-down",
                        Some(net.clone()),
                        Some(port),
                        format!("parent down: {why}"),
                    );
                }
            }
        }
    }

    /// ipvlan l3 networks route by the host's routes via their parent: tells the pipeline
    /// when those changed (called every second with `check_parents`).
    pub fn refresh_ipvlan_routes(&mut self) {
        let mut updates = Vec::new();
        for (iface, p) in &self.parents {
            for net in p.segments.values().flat_map(|s| s.networks.iter()) {
                let Some(cfg) = self.state.networks.iter().find(|n| &n.name == net) else {
                    continue;
                };
                let Some(params) = ipvlan_params(cfg, iface, p.mac) else {
                    continue;
                };
                if p.ipvlan_sent.get(net) != Some(&params) {
                    if let Some(id) = self.nets.get(net) {
                        updates.push((iface.clone(), net.clone(), *id, params));
                    }
                }
            }
        }
        for (iface, net, id, params) in updates {
            let to_send = params.clone();
            let sent = self.dp_call(|done| Command::SetIpvlan {
                network: id,
                params: to_send,
                done,
            });
            if sent.is_ok() {
                info!(network = %net, "ipvlan: the host's routes via the parent changed");
                if let Some(p) = self.parents.get_mut(&iface) {
                    p.ipvlan_sent.insert(net, params);
                }
            }
        }
    }

    /// Makes every parent's program take exactly its containers' frames: their MACs and the
    /// ARP for their addresses, per VLAN.
    pub(super) fn sync_parents(&mut self) {
        if self.parents.is_empty() {
            return;
        }
        let mut want: HashMap<String, (Steered, Steered)> = HashMap::new();
        for net in &self.state.networks {
            let Some((iface, vlan)) = net
                .parent
                .as_deref()
                .and_then(|p| vlan::parse_parent(p).ok())
            else {
                continue;
            };
            let tag = vlan.unwrap_or(0);
            let ipvlan = net.driver == "ipvlan";
            let (macs, ips) = want.entry(iface).or_default();
            for p in self.state.ports.iter().filter(|p| p.network == net.name) {
                // ipvlan containers are on the wire with the parent's MAC: taken by address.
                if !ipvlan {
                    macs.insert(parent::mac_key(tag, p.mac), 1);
                }
                if let Some(ip) = p.ip {
                    let bits = match ipvlan {
                        true => parent::IP_ARP | parent::IP_ROUTED,
                        false => parent::IP_ARP,
                    };
                    ips.insert(parent::ip_key(tag, ip.addr()), bits);
                }
            }
        }
        for (iface, p) in &mut self.parents {
            let (macs, ips) = want.remove(iface).unwrap_or_default();
            if let Err(e) = p.maps.sync(&macs, &ips) {
                warn!(iface, error = %e, "macvlan parent: the containers' map not set");
            }
        }
    }

    /// The macvlan parts of a network's view.
    pub(super) fn macvlan_info(&self, n: &NetworkConfig) -> Option<String> {
        n.parent.as_ref()?;
        if let Some(e) = self.parent_errors.get(&n.name) {
            return Some(e.clone());
        }
        let served = self
            .parents
            .values()
            .any(|p| p.segments.values().any(|s| s.networks.contains(&n.name)));
        (!served).then(|| "the parent is not served".to_string())
    }
}

/// Whether the interface is promiscuous already (someone else's choice, kept on release).
fn promiscuous(iface: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/flags"))
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim().trim_start_matches("0x"), 16).ok())
        .is_some_and(|f| f & libc::IFF_PROMISC as u32 != 0)
}

/// What the pipeline is to know of an ipvlan network on `iface` (`None` for other networks).
fn ipvlan_params(
    net: &NetworkConfig,
    iface: &str,
    parent_mac: crate::wire::MacAddr,
) -> Option<ipvlan::Params> {
    if net.driver != "ipvlan" {
        return None;
    }
    // The host's routes out of the interface are its untagged segment's; a VLAN has no link
    // of the host's here (the switch tags it), so its next hops are on the network's subnet.
    let tagged = net
        .parent
        .as_deref()
        .and_then(|p| vlan::parse_parent(p).ok())
        .is_some_and(|(_, v)| v.is_some());
    let mode = ipvlan::Mode::parse(net.mode.as_deref().unwrap_or("l2"))?;
    Some(ipvlan::Params {
        mode,
        parent_mac,
        subnet: net.subnet,
        router: net.gateway,
        routes: match mode {
            ipvlan::Mode::L3 if !tagged => routes_via(iface),
            _ => Vec::new(),
        },
    })
}

/// The routes of vswitchd's namespace (IPv4, main table, from /proc/net/route) out of
/// `iface`: (prefix, gateway), longest prefix first — where the kernel's ipvlan l3 would send
/// a container's packet.
pub fn routes_via(iface: &str) -> Vec<(ipnet::Ipv4Net, Option<std::net::Ipv4Addr>)> {
    let Ok(text) = std::fs::read_to_string("/proc/net/route") else {
        return Vec::new();
    };
    // The kernel prints each address as the native integer of its network-order bytes.
    let addr = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|v| std::net::Ipv4Addr::from(v.to_ne_bytes()))
    };
    let mut routes = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 || f[0] != iface {
            continue;
        }
        let (Some(dst), Some(gw), Some(mask)) = (addr(f[1]), addr(f[2]), addr(f[7])) else {
            continue;
        };
        let len = u32::from(mask).leading_ones() as u8;
        if let Ok(prefix) = ipnet::Ipv4Net::new(dst, len) {
            routes.push((prefix, (!gw.is_unspecified()).then_some(gw)));
        }
    }
    routes.sort_by_key(|(p, _)| std::cmp::Reverse(p.prefix_len()));
    routes
}
