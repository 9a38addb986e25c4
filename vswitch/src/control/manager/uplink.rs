//! The uplink: `uplink set/show/rm` and `conntrack show/stats/flush`. The uplink is an existing
//! interface of vswitchd's namespace served by an AF_XDP socket; in dedicated mode it and its
//! address belong to the switch, which answers ARP and ping for that address and masquerades
//! every network that is not `--internal` behind it.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use tracing::{info, warn};

use super::{internal, invalid, ApiResult, Manager};
use crate::api::{
    ApiError, ConntrackRow, ConntrackStats, ErrorCode, Reply, UplinkInfo, UplinkSet,
    CONNTRACK_SHOW_MAX,
};
use crate::control::host_neigh::HostNeighbors;
use crate::dataplane::{Command, UplinkView};
use crate::ports::packet::PacketPort;
use crate::ports::steer::{PublishedMap, Steer};
use crate::ports::{AfXdp, Port, XdpConfig, XdpMode};
use crate::sandbox::hostports;
use crate::sandbox::netlink::Netlink;
use crate::state::{Change, UplinkState};
use crate::switch::nat::conntrack::Kind;
use crate::switch::nat::{UplinkConfig, UplinkMode};
use crate::switch::{NetId, PortId};
use crate::wire::ipv4::{PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use crate::wire::MacAddr;

pub const DEFAULT_NAT_PORTS: (u16, u16) = (61000, 65535);
pub const DEFAULT_CONNTRACK_MAX: usize = 262_144;
use crate::state::DEFAULT_CONNTRACK_PER_SOURCE;
const MAX_CONNTRACK_MAX: usize = 16 << 20;

/// The attached uplink (and, shared, what it holds of the host's until it goes).
#[derive(Debug)]
pub struct UplinkRt {
    pub id: PortId,
    pub mac: MacAddr,
    pub mtu: u16,
    pub xdp_mode: &'static str,
    neigh: Option<HostNeighbors>,
    _reservation: Option<hostports::Reservation>,
    /// Shared mode: the steering program's published ports (kept as the control plane's).
    pub published: Option<PublishedMap>,
}

impl UplinkRt {
    /// Stops following the host's neighbours (its thread holds a way into the dataplane,
    /// which must go before the dataplane can stop).
    pub fn stop_neighbors(&mut self) {
        self.neigh = None;
    }
}

fn parse_ports(s: &str) -> ApiResult<(u16, u16)> {
    let bad = || {
        invalid(format!(
            "NAT port range {s:?} is not LO-HI (e.g. 61000-65535)"
        ))
    };
    let (lo, hi) = s.split_once('-').ok_or_else(bad)?;
    let (lo, hi): (u16, u16) = (
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    );
    if lo < 1024 || lo > hi {
        return Err(invalid(format!(
            "NAT port range {lo}-{hi} must be ascending and above 1023"
        )));
    }
    Ok((lo, hi))
}

fn parse_gateway(g: Option<&str>, ip: Ipv4Net) -> ApiResult<Option<Ipv4Addr>> {
    let Some(g) = g else { return Ok(None) };
    let g: Ipv4Addr = g
        .parse()
        .map_err(|_| invalid(format!("gateway {g:?} is not an IPv4 address")))?;
    if !ip.contains(&g) || g == ip.addr() {
        return Err(invalid(format!(
            "gateway {g} is not another address on the uplink's link {}",
            ip.trunc()
        )));
    }
    Ok(Some(g))
}

fn link_index(iface: &str) -> ApiResult<(Netlink, u32)> {
    let mut nl = Netlink::open().map_err(|e| internal(format!("netlink: {e}")))?;
    let index = nl
        .link_index(iface)
        .map_err(|e| internal(format!("netlink: {e}")))?
        .ok_or_else(|| invalid(format!("no interface {iface:?} in vswitchd's namespace")))?;
    Ok((nl, index))
}

/// Shared mode: the host's address on `iface` the switch masquerades behind — `wanted` when
/// it is one of them, else the interface's primary one. Returns it and whether it was chosen
/// automatically.
fn host_address(iface: &str, wanted: Option<&str>) -> ApiResult<(Ipv4Net, bool)> {
    let (mut nl, index) = link_index(iface)?;
    let addrs = nl
        .addresses_v4(index)
        .map_err(|e| internal(format!("netlink: {e}")))?;
    let nets: Vec<Ipv4Net> = addrs
        .iter()
        .filter_map(|&(a, p)| Ipv4Net::new(a, p).ok())
        .collect();
    match wanted {
        None => nets.first().map(|n| (*n, true)).ok_or_else(|| {
            invalid(format!(
                "{iface} has no IPv4 address: a shared uplink masquerades behind the host's own \
                 address (give {iface} one, or use --mode dedicated --ip CIDR)"
            ))
        }),
        Some(w) => {
            let want: Ipv4Addr = w
                .split('/')
                .next()
                .unwrap_or("")
                .parse()
                .map_err(|_| invalid(format!("{w:?} is not an IPv4 address")))?;
            nets.iter()
                .find(|n| n.addr() == want)
                .map(|n| (*n, false))
                .ok_or_else(|| {
                    let have: Vec<String> = nets.iter().map(|n| n.to_string()).collect();
                    invalid(format!(
                        "{want} is not an address of {iface} (it has: {}); a shared uplink \
                         uses one of the host's own",
                        if have.is_empty() {
                            "none".to_string()
                        } else {
                            have.join(", ")
                        }
                    ))
                })
        }
    }
}

/// The host's default gateway out of `iface`, if it has one.
fn host_gateway(iface: &str) -> ApiResult<Option<Ipv4Addr>> {
    let (mut nl, index) = link_index(iface)?;
    nl.default_gateway(index)
        .map_err(|e| internal(format!("netlink: {e}")))
}

/// A shared uplink's NAT range must be free of the host's own ports: no socket of the host
/// may hold one (replies to it would go to the switch), and the host must keep ephemeral
/// ports of its own.
fn check_host_ports((lo, hi): (u16, u16)) -> ApiResult<()> {
    let used = hostports::in_use(lo, hi);
    if !used.is_empty() {
        let list: Vec<String> = used
            .iter()
            .take(5)
            .map(|(proto, port)| format!("{proto} {port}"))
            .collect();
        return Err(ApiError::new(
            ErrorCode::InvalidArgument,
            format!(
                "NAT ports {lo}-{hi} overlap the host's own: {}{} in use by its sockets; \
                 choose another range with --nat-ports",
                list.join(", "),
                if used.len() > 5 { ", ..." } else { "" }
            ),
        ));
    }
    if let Ok((elo, ehi)) = hostports::ephemeral() {
        if lo <= elo && ehi <= hi {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "NAT ports {lo}-{hi} cover the host's whole ephemeral range {elo}-{ehi}: \
                     the host would have no ports left for its own connections"
                ),
            ));
        }
    }
    Ok(())
}

impl Manager {
    /// A dataplane port id no port (nor the uplink) holds.
    pub(super) fn free_port_id(&self) -> PortId {
        let uplink = self
            .uplink
            .as_ref()
            .and_then(|u| u.as_ref().ok())
            .map(|u| u.id.0);
        let used: Vec<u32> = self
            .ports
            .values()
            .filter_map(|p| p.id.map(|p| p.0))
            .chain(uplink)
            .chain(self.tunnel_ids())
            .chain(self.parent_ids())
            .chain(self.relay_ids())
            .collect();
        PortId(Self::free_id(used.iter()))
    }

    fn validate_uplink(&self, req: &UplinkSet) -> ApiResult<UplinkState> {
        if let Some(u) = &self.state.uplink {
            return Err(ApiError::new(
                ErrorCode::InvalidArgument,
                format!(
                    "an uplink is set already ({}); `vswitchctl uplink rm` first",
                    u.iface
                ),
            ));
        }
        if !crate::sandbox::valid_ifname(&req.iface) {
            return Err(invalid(format!("{:?} is not an interface name", req.iface)));
        }
        if self
            .state
            .ports
            .iter()
            .any(|p| p.host_ifname.as_deref() == Some(req.iface.as_str()))
        {
            return Err(invalid(format!(
                "{} is a port's own veth, not an uplink",
                req.iface
            )));
        }
        let mode = match req.mode.as_deref().unwrap_or("shared") {
            "dedicated" => UplinkMode::Dedicated,
            "shared" => UplinkMode::Shared,
            other => {
                return Err(invalid(format!(
                    "uplink mode {other:?} is not shared or dedicated"
                )))
            }
        };
        let xdp_mode = match req.xdp_mode.as_deref() {
            None => None,
            Some(m) => Some(m.parse::<XdpMode>().map_err(invalid)?),
        };
        let packet_socket = match req.socket.as_deref() {
            None | Some("afxdp" | "af_xdp") => false,
            Some("packet" | "af_packet") if mode == UplinkMode::Dedicated => true,
            Some("packet" | "af_packet") => {
                return Err(invalid(
                    "--type packet serves dedicated uplinks only: a shared uplink needs its \
                     XDP program to steer the switch's ports away from the host's stack",
                ))
            }
            Some(other) => {
                return Err(invalid(format!(
                    "uplink socket {other:?} is not afxdp or packet"
                )))
            }
        };
        if packet_socket && xdp_mode.is_some() {
            return Err(invalid(
                "--xdp-mode is for AF_XDP uplinks, not --type packet",
            ));
        }
        let nat_ports = match &req.nat_ports {
            Some(s) => parse_ports(s)?,
            None => DEFAULT_NAT_PORTS,
        };
        let (ip, gateway, auto_ip, auto_gateway) = match mode {
            UplinkMode::Dedicated => {
                let ip: Ipv4Net = req
                    .ip
                    .as_deref()
                    .ok_or_else(|| invalid("a dedicated uplink needs its own address: --ip CIDR"))?
                    .parse()
                    .map_err(|_| invalid(format!("{:?} is not an IPv4 CIDR", req.ip)))?;
                if ip.addr() == ip.network() && ip.prefix_len() < 31 || ip.addr().is_unspecified() {
                    return Err(invalid(format!("{ip} is not a host address")));
                }
                (ip, parse_gateway(req.gateway.as_deref(), ip)?, false, false)
            }
            UplinkMode::Shared => {
                let (ip, auto_ip) = host_address(&req.iface, req.ip.as_deref())?;
                let (gateway, auto_gateway) = match req.gateway.as_deref() {
                    Some(g) => (parse_gateway(Some(g), ip)?, false),
                    None => (host_gateway(&req.iface)?, true),
                };
                check_host_ports(nat_ports)?;
                (ip, gateway, auto_ip, auto_gateway)
            }
        };
        if let Some(n) = self
            .state
            .networks
            .iter()
            .find(|n| n.subnet.contains(&ip.addr()) || ip.contains(&n.subnet.network()))
        {
            return Err(ApiError::new(
                ErrorCode::SubnetOverlap,
                format!(
                    "uplink address {ip} overlaps network {:?} ({})",
                    n.name, n.subnet
                ),
            ));
        }
        self.check_nat_range_unpublished(nat_ports)?;
        let conntrack_max = req.conntrack_max.unwrap_or(DEFAULT_CONNTRACK_MAX);
        if !(1..=MAX_CONNTRACK_MAX).contains(&conntrack_max) {
            return Err(invalid(format!(
                "conntrack table size {conntrack_max} is out of range (1 to {MAX_CONNTRACK_MAX})"
            )));
        }
        let conntrack_per_source = req
            .conntrack_per_source
            .unwrap_or(DEFAULT_CONNTRACK_PER_SOURCE);
        if conntrack_per_source > MAX_CONNTRACK_MAX {
            return Err(invalid(format!(
                "conntrack per-source limit {conntrack_per_source} is out of range (0 for none, or up to {MAX_CONNTRACK_MAX})"
            )));
        }
        Ok(UplinkState {
            iface: req.iface.clone(),
            mode,
            ip,
            gateway,
            nat_ports,
            conntrack_max,
            conntrack_per_source,
            auto_ip,
            auto_gateway,
            xdp_mode,
            packet_socket,
        })
    }

    /// Binds the uplink's AF_XDP socket and hands it to the dataplane. A shared uplink
    /// re-reads what was automatic (the host's address, its gateway), steers only the NAT
    /// range to the switch, reserves that range from the host's ephemeral ports and follows
    /// the host's neighbour table.
    fn attach_uplink(&mut self, u: &mut UplinkState) -> ApiResult<UplinkRt> {
        let link = Netlink::open()
            .and_then(|mut nl| nl.link(&u.iface))
            .map_err(|e| internal(format!("netlink: {e}")))?
            .ok_or_else(|| {
                invalid(format!(
                    "no interface {:?} in vswitchd's namespace",
                    u.iface
                ))
            })?;
        let mac = link
            .mac
            .ok_or_else(|| invalid(format!("{} has no MAC address", u.iface)))?;
        let mtu = link.mtu.unwrap_or(1500).min(u32::from(u16::MAX)) as u16;
        let shared = u.mode == UplinkMode::Shared;
        if shared {
            let want = (!u.auto_ip).then(|| u.ip.addr().to_string());
            u.ip = host_address(&u.iface, want.as_deref())?.0;
            if u.auto_gateway {
                u.gateway = host_gateway(&u.iface)?;
            }
        }
        let xdp = XdpConfig {
            mode: u.xdp_mode.unwrap_or(if shared {
                // Some drivers reset their queues when a native program comes: the host
                // would be cut off for a moment.
                XdpMode::Skb
            } else {
                XdpMode::Auto
            }),
            ring_size: crate::ports::afxdp::WIDE_RING_SIZE,
            ..XdpConfig::default()
        };
        let steer = shared.then_some(Steer {
            ip: u.ip.addr(),
            ports: u.nat_ports,
        });
        let reservation = match shared {
            true => Some(
                hostports::Reservation::take(u.nat_ports.0, u.nat_ports.1).map_err(|e| {
                    internal(format!(
                        "cannot reserve ports {}-{} from the host (ip_local_reserved_ports): {e}",
                        u.nat_ports.0, u.nat_ports.1
                    ))
                })?,
            ),
            false => None,
        };
        let packet = |why: Option<String>| -> ApiResult<Box<dyn Port>> {
            if let Some(why) = why {
                warn!(iface = %u.iface, error = %why, "no AF_XDP on the uplink: serving it with a packet socket");
            }
            PacketPort::open(link.index)
                .map(|p| Box::new(p) as Box<dyn Port>)
                .map_err(|e| {
                    internal(format!(
                        "cannot serve {} with a packet socket: {e}",
                        u.iface
                    ))
                })
        };
        let (port, xdp_mode, published): (Box<dyn Port>, &'static str, _) = if u.packet_socket {
            (packet(None)?, "none", None)
        } else {
            match AfXdp::open_steered(&u.iface, xdp, steer) {
                Ok(xsk) => {
                    let xdp_mode = xsk.mode();
                    let published = xsk.published_map().transpose().map_err(|e| {
                        internal(format!("the steering program's published-ports map: {e}"))
                    })?;
                    (Box::new(xsk), xdp_mode, published)
                }
                // Dedicated: the interface is the switch's alone, a packet socket serves it
                // as well (the fallback the issue asks for where XDP cannot attach).
                Err(e) if !shared => (packet(Some(e.to_string()))?, "none", None),
                Err(e) => {
                    return Err(internal(format!(
                        "cannot serve {} with AF_XDP: {e}",
                        u.iface
                    )))
                }
            }
        };
        let (neigh, wants) = match shared {
            true => {
                let (n, tx) = HostNeighbors::spawn(link.index, u.gateway, self.dp.injector())
                    .map_err(|e| internal(format!("cannot follow the host's neighbours: {e}")))?;
                (Some(n), Some(tx))
            }
            false => (None, None),
        };
        let id = self.free_port_id();
        let cfg = UplinkConfig {
            mode: u.mode,
            ip: u.ip.addr(),
            prefix_len: u.ip.prefix_len(),
            mac,
            gateway: u.gateway,
            mtu,
            nat_ports: u.nat_ports,
            conntrack_max: u.conntrack_max,
            conntrack_per_source: u.conntrack_per_source,
        };
        self.dp_call(|done| Command::SetUplink {
            id,
            port,
            cfg,
            wants,
            done,
        })?
        .map_err(|e| internal(format!("dataplane: {e}")))?;
        info!(iface = %u.iface, ip = %u.ip, mode = ?u.mode, xdp = xdp_mode, "uplink attached");
        Ok(UplinkRt {
            id,
            mac,
            mtu,
            xdp_mode,
            neigh,
            _reservation: reservation,
            published,
        })
    }

    /// At start: attaches the saved uplink, or keeps it with the reason it could not be.
    pub(super) fn restore_uplink(&mut self, mut u: UplinkState) {
        // After a kill -9 the dead daemon's program is still attached (holding its socket's
        // map): the state says the interface is ours, so it goes. `uplink set` never does this
        // (another program on the interface is an error there). The dead socket itself is
        // released by the kernel a moment after its process, so the attach is retried briefly.
        let mut attached = Err(internal("not tried"));
        for attempt in 0..20 {
            if attempt > 0 {
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if let Ok(mut nl) = Netlink::open() {
                if let Ok(Some(index)) = nl.link_index(&u.iface) {
                    for mode in [
                        crate::ports::afxdp::XDP_FLAGS_DRV_MODE,
                        crate::ports::afxdp::XDP_FLAGS_SKB_MODE,
                    ] {
                        if let Err(e) = nl.set_xdp(index, -1, mode, None) {
                            warn!(iface = %u.iface, error = %e, "detaching a stale XDP program");
                        }
                    }
                }
            }
            attached = self.attach_uplink(&mut u);
            if attached.is_ok() {
                break;
            }
        }
        match attached {
            Ok(rt) => self.uplink = Some(Ok(rt)),
            Err(e) => {
                warn!(iface = %u.iface, error = %e.message, "uplink not restored");
                self.uplink = Some(Err(e.message));
            }
        }
        self.state.uplink = Some(u);
    }

    pub(super) fn uplink_set(&mut self, req: UplinkSet) -> ApiResult<Reply> {
        let mut u = self.validate_uplink(&req)?;
        let rt = self.attach_uplink(&mut u)?;
        self.uplink = Some(Ok(rt));
        self.state.uplink = Some(u.clone());
        self.record(Change::UplinkSet(u))?;
        self.uplink_show()
    }

    /// The uplink of the config file or `vswitchd --uplink`: set when no uplink is saved; a
    /// saved one is kept (the operator's `uplink set` wins), with a warning if it differs.
    pub fn declare_uplink(&mut self, req: UplinkSet) -> Result<(), String> {
        if req.iface.is_empty() {
            return Err("[uplink] needs iface = \"IFACE\"".into());
        }
        if let Some(u) = &self.state.uplink {
            if u.iface != req.iface {
                warn!(saved = %u.iface, configured = %req.iface, "keeping the saved uplink; `vswitchctl uplink rm` to change it");
            }
            return Ok(());
        }
        self.uplink_set(req).map_err(|e| e.message)?;
        self.sync_published();
        Ok(())
    }

    pub(super) fn uplink_remove(&mut self) -> ApiResult<Reply> {
        if self.state.uplink.is_none() {
            return Err(invalid("no uplink is set"));
        }
        self.dp_call(|done| Command::RemoveUplink { done })?;
        self.uplink = None;
        self.state.uplink = None;
        self.record(Change::UplinkRemove)?;
        Ok(Reply::Done)
    }

    fn uplink_view(
        &self,
        network: Option<&str>,
        entries: usize,
        flush: bool,
    ) -> ApiResult<Option<UplinkView>> {
        let network = match network {
            Some(n) => Some(*self.nets.get(n).ok_or_else(|| {
                ApiError::new(ErrorCode::NetworkNotFound, format!("no network {n:?}"))
            })?),
            None => None,
        };
        self.dp_call(|reply| Command::UplinkQuery {
            network,
            entries,
            flush,
            reply,
        })
    }

    pub(super) fn uplink_show(&self) -> ApiResult<Reply> {
        let Some(u) = &self.state.uplink else {
            return Ok(Reply::Uplink(None));
        };
        let view = self.uplink_view(None, 0, false)?;
        let (status, mac, mtu) = match &self.uplink {
            Some(Ok(rt)) => ("up".to_string(), rt.mac.to_string(), rt.mtu),
            Some(Err(e)) => (format!("detached: {e}"), String::new(), 0),
            None => ("detached".to_string(), String::new(), 0),
        };
        let (xdp_mode, socket) = match &self.uplink {
            Some(Ok(rt)) if rt.xdp_mode == "none" => ("none".to_string(), "af_packet".to_string()),
            Some(Ok(rt)) => (rt.xdp_mode.to_string(), "af_xdp".to_string()),
            _ => (String::new(), String::new()),
        };
        Ok(Reply::Uplink(Some(UplinkInfo {
            iface: u.iface.clone(),
            mode: match u.mode {
                UplinkMode::Shared => "shared",
                UplinkMode::Dedicated => "dedicated",
            }
            .into(),
            ip: u.ip.to_string(),
            gateway: u.gateway.map(|g| g.to_string()),
            mac,
            mtu,
            nat_ports: format!("{}-{}", u.nat_ports.0, u.nat_ports.1),
            xdp_mode,
            socket,
            status,
            counters: view.as_ref().map(|v| v.counters).unwrap_or_default(),
            conntrack: stats(view.as_ref()),
            neighbors: view
                .map(|v| {
                    v.neighbors
                        .iter()
                        .map(|(ip, mac, age)| (ip.to_string(), mac.to_string(), age / 1000))
                        .collect()
                })
                .unwrap_or_default(),
        })))
    }

    fn network_name(&self, id: NetId) -> String {
        self.nets
            .iter()
            .find(|(_, n)| **n == id)
            .map(|(name, _)| name.clone())
            .unwrap_or_default()
    }

    pub(super) fn conntrack_show(&self, network: Option<&str>) -> ApiResult<Reply> {
        let Some(v) = self.uplink_view(network, CONNTRACK_SHOW_MAX, false)? else {
            return Ok(Reply::Conntrack(Vec::new()));
        };
        let rows = v
            .entries
            .iter()
            .map(|e| ConntrackRow {
                network: self.network_name(e.orig.net),
                proto: match e.orig.proto {
                    PROTO_TCP => "tcp",
                    PROTO_UDP => "udp",
                    PROTO_ICMP => "icmp",
                    _ => "other",
                }
                .into(),
                src: e.orig.src.to_string(),
                sport: e.orig.sport,
                dst: e.orig.dst.to_string(),
                dport: e.orig.dport,
                nat_port: e.nat_port,
                kind: match e.kind {
                    Kind::Masquerade => "masquerade",
                    Kind::Dnat => "dnat",
                    Kind::Hairpin => "hairpin",
                }
                .into(),
                state: e.state.name().into(),
                expires_in_secs: e.expires.saturating_sub(v.now) / 1000,
                packets_out: e.packets[0],
                packets_in: e.packets[1],
                bytes_out: e.bytes[0],
                bytes_in: e.bytes[1],
            })
            .collect();
        Ok(Reply::Conntrack(rows))
    }

    pub(super) fn conntrack_stats(&self) -> ApiResult<Reply> {
        let v = self.uplink_view(None, 0, false)?;
        Ok(Reply::ConntrackStats(stats(v.as_ref())))
    }

    pub(super) fn conntrack_flush(&self, network: Option<&str>) -> ApiResult<Reply> {
        let v = self.uplink_view(network, 0, true)?;
        Ok(Reply::Flushed(v.map_or(0, |v| v.flushed)))
    }

    /// The uplink's dataplane port and its label for `port stats`.
    pub(super) fn uplink_port(&self) -> Option<(PortId, String)> {
        let rt = self.uplink.as_ref()?.as_ref().ok()?;
        let iface = &self.state.uplink.as_ref()?.iface;
        Some((rt.id, format!("uplink:{iface}")))
    }
}

fn stats(v: Option<&UplinkView>) -> ConntrackStats {
    v.map(|v| ConntrackStats {
        entries: v.len,
        max: v.max,
        per_source_max: v.per_source_max,
        counters: v.ct,
    })
    .unwrap_or_default()
}
