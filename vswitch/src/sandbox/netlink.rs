//! A small synchronous rtnetlink client over netlink-packet-route: exactly the link, address and
//! route operations the daemon needs, in whatever namespace the calling thread is in.

use std::io;
use std::net::{IpAddr, Ipv4Addr};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, LinkXdp,
};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::wire::MacAddr;

/// An rtnetlink socket bound in the current thread's network namespace.
pub struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

/// A link as `Netlink::link` reads it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct LinkState {
    pub index: u32,
    pub name: Option<String>,
    /// `IFLA_LINK`: for a veth, the peer's index (in the peer's namespace).
    pub peer: Option<u32>,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    /// The link type (`IFLA_INFO_KIND`): "tun" for a TAP, "veth", ...
    pub kind: Option<String>,
}

fn link_state(l: LinkMessage) -> LinkState {
    let mut st = LinkState {
        index: l.header.index,
        ..Default::default()
    };
    for a in l.attributes {
        match a {
            LinkAttribute::IfName(n) => st.name = Some(n),
            LinkAttribute::Link(i) => st.peer = Some(i),
            LinkAttribute::Mtu(m) => st.mtu = Some(m),
            LinkAttribute::LinkInfo(infos) => {
                st.kind = infos.into_iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                })
            }
            LinkAttribute::Address(a) => {
                st.mac = <[u8; 6]>::try_from(a.as_slice()).ok().map(MacAddr)
            }
            _ => {}
        }
    }
    st
}

/// What to change on a link; `None` leaves a field alone.
#[derive(Debug, Default, Clone)]
pub struct LinkChange {
    pub name: Option<String>,
    pub mac: Option<MacAddr>,
    pub mtu: Option<u32>,
    pub up: Option<bool>,
    /// Promiscuous mode on or off (a macvlan parent takes frames for its containers' MACs).
    pub promisc: Option<bool>,
    /// Move the link into the network namespace of this fd (renamed to `name` on the way).
    pub netns_fd: Option<std::os::fd::RawFd>,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Netlink {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Sends one request and collects the replies until the ACK (or the error).
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags | NLM_F_REQUEST | NLM_F_ACK;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(msg));
        packet.finalize();
        let mut out = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut replies = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = reply.header.length as usize;
                if len == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "netlink: zero-length message",
                    ));
                }
                offset += len;
                if reply.header.sequence_number != self.seq {
                    continue;
                }
                match reply.payload {
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(replies),
                            Some(_) => Err(e.to_io()),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }

    /// The index of the link called `name`, or `None` when there is none.
    pub fn link_index(&mut self, name: &str) -> io::Result<Option<u32>> {
        Ok(self.link(name)?.map(|l| l.index))
    }

    /// What the kernel says about the link called `name`, or `None` when there is none.
    pub fn link(&mut self, name: &str) -> io::Result<Option<LinkState>> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::GetLink(msg), 0) {
            Ok(replies) => Ok(replies.into_iter().find_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(link_state(l)),
                _ => None,
            })),
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> io::Result<Vec<LinkState>> {
        let replies = self.request(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            NLM_F_DUMP,
        )?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewLink(l) => Some(link_state(l)),
                _ => None,
            })
            .collect())
    }

    /// Renames, re-addresses, resizes and/or brings a link up or down.
    pub fn set_link(&mut self, index: u32, change: &LinkChange) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        if let Some(fd) = change.netns_fd {
            msg.attributes.push(LinkAttribute::NetNsFd(fd));
        }
        if let Some(name) = &change.name {
            msg.attributes.push(LinkAttribute::IfName(name.clone()));
        }
        if let Some(mac) = change.mac {
            msg.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
        }
        if let Some(mtu) = change.mtu {
            msg.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(up) = change.up {
            msg.header.change_mask |= LinkFlags::Up;
            if up {
                msg.header.flags |= LinkFlags::Up;
            }
        }
        if let Some(on) = change.promisc {
            msg.header.change_mask |= LinkFlags::Promisc;
            if on {
                msg.header.flags |= LinkFlags::Promisc;
            }
        }
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(|_| ())
    }

    /// Brings a link up.
    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        self.set_link(
            index,
            &LinkChange {
                up: Some(true),
                ..Default::default()
            },
        )
    }

    /// Adds `ip/prefix_len` to a link.
    pub fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix_len: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix_len;
        msg.header.index = index;
        msg.attributes.push(AddressAttribute::Local(IpAddr::V4(ip)));
        msg.attributes
            .push(AddressAttribute::Address(IpAddr::V4(ip)));
        if prefix_len < 31 {
            let host_mask = u32::MAX >> prefix_len;
            let bcast = Ipv4Addr::from(u32::from(ip) | host_mask);
            msg.attributes.push(AddressAttribute::Broadcast(bcast));
        }
        self.request(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(|_| ())
    }

    /// Adds a default route via `gateway` out of the link. Fails with EEXIST when the namespace
    /// already has one (its first network keeps it, as in Docker).
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        self.add_route(
            index,
            ipnet::Ipv4Net::new(Ipv4Addr::UNSPECIFIED, 0).expect("a /0"),
            Some(gateway),
        )
    }

    /// Adds a route for `dst` out of interface `index`, via `gateway` or on the link.
    pub fn add_route(
        &mut self,
        index: u32,
        dst: ipnet::Ipv4Net,
        gateway: Option<Ipv4Addr>,
    ) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.table = netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Boot;
        msg.header.kind = RouteType::Unicast;
        msg.header.destination_prefix_length = dst.prefix_len();
        if dst.prefix_len() > 0 {
            msg.attributes
                .push(RouteAttribute::Destination(RouteAddress::Inet(
                    dst.network(),
                )));
        }
        match gateway {
            Some(gw) => {
                msg.header.scope = RouteScope::Universe;
                msg.attributes
                    .push(RouteAttribute::Gateway(RouteAddress::Inet(gw)));
            }
            None => msg.header.scope = RouteScope::Link,
        }
        msg.attributes.push(RouteAttribute::Oif(index));
        self.request(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
        .map(|_| ())
    }

    /// Creates a veth pair: `host` here, `peer` born directly in the namespace of `peer_netns`
    /// (no move afterwards: a move costs the kernel an RCU barrier) with the given MAC.
    pub fn add_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: std::os::fd::RawFd,
        peer_mac: MacAddr,
        mtu: u32,
    ) -> io::Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg
            .attributes
            .push(LinkAttribute::IfName(peer.to_string()));
        peer_msg
            .attributes
            .push(LinkAttribute::Address(peer_mac.0.to_vec()));
        peer_msg.attributes.push(LinkAttribute::Mtu(mtu));
        peer_msg.attributes.push(LinkAttribute::NetNsFd(peer_netns));
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(host.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        msg.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
        ]));
        self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
            .map(|_| ())
    }

    /// Attaches the XDP program `prog_fd` to a link (`-1` detaches) with `XDP_FLAGS_*` `flags`;
    /// with `expected`, only if that program is the one attached now (`XDP_FLAGS_REPLACE`).
    pub fn set_xdp(
        &mut self,
        index: u32,
        prog_fd: std::os::fd::RawFd,
        flags: u32,
        expected: Option<std::os::fd::RawFd>,
    ) -> io::Result<()> {
        const XDP_FLAGS_REPLACE: u32 = 1 << 4;
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        let mut xdp = vec![LinkXdp::Fd(prog_fd)];
        match expected {
            Some(fd) => {
                xdp.push(LinkXdp::Flags(flags | XDP_FLAGS_REPLACE));
                xdp.push(LinkXdp::ExpectedFd(fd as u32));
            }
            None => xdp.push(LinkXdp::Flags(flags)),
        }
        msg.attributes.push(LinkAttribute::Xdp(xdp));
        self.request(RouteNetlinkMessage::SetLink(msg), 0)
            .map(|_| ())
    }

    /// The IPv4 addresses of a link, primary first: (address, prefix length).
    pub fn addresses_v4(&mut self, index: u32) -> io::Result<Vec<(Ipv4Addr, u8)>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.index = index;
        let replies = self.request(RouteNetlinkMessage::GetAddress(msg), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match r {
                RouteNetlinkMessage::NewAddress(a) if a.header.index == index => {
                    let prefix = a.header.prefix_len;
                    a.attributes.into_iter().find_map(|at| match at {
                        AddressAttribute::Local(IpAddr::V4(ip)) => Some((ip, prefix)),
                        _ => None,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// The gateway of the main table's IPv4 default route out of the link, if there is one.
    pub fn default_gateway(&mut self, index: u32) -> io::Result<Option<Ipv4Addr>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        let replies = self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_DUMP)?;
        Ok(replies.into_iter().find_map(|r| match r {
            RouteNetlinkMessage::NewRoute(rt)
                if rt.header.destination_prefix_length == 0
                    && rt.header.table
                        == netlink_packet_route::route::RouteHeader::RT_TABLE_MAIN
                    && rt.header.kind == RouteType::Unicast =>
            {
                let oif = rt.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Oif(i) => Some(*i),
                    _ => None,
                });
                let gw = rt.attributes.iter().find_map(|a| match a {
                    RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(*g),
                    _ => None,
                });
                gw.filter(|_| oif == Some(index))
            }
            _ => None,
        }))
    }

    /// The IPv4 neighbours of a link with a usable link-layer address.
    pub fn neighbours_v4(&mut self, index: u32) -> io::Result<Vec<(Ipv4Addr, MacAddr)>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        let replies = self.request(RouteNetlinkMessage::GetNeighbour(msg), NLM_F_DUMP)?;
        Ok(replies
            .into_iter()
            .filter_map(|r| match neighbour(r) {
                Some((i, ip, Some(mac))) if i == index => Some((ip, mac)),
                _ => None,
            })
            .collect())
    }

    /// Asks the kernel to resolve (or re-confirm) `ip` on the link, as if a packet were going
    /// there (`NTF_USE`): an ARP request goes out, and the answer lands in the host's table.
    pub fn resolve_neighbour(&mut self, index: u32, ip: Ipv4Addr) -> io::Result<()> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.ifindex = index;
        msg.header.state = NeighbourState::None;
        msg.header.flags = NeighbourFlags::Use;
        msg.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)));
        self.request(RouteNetlinkMessage::NewNeighbour(msg), NLM_F_CREATE)
            .map(|_| ())
    }

    /// Deletes a link.
    pub fn del_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.request(RouteNetlinkMessage::DelLink(msg), 0)
            .map(|_| ())
    }
}

/// (link, address, MAC) of an IPv4 neighbour message; the MAC is `None` when the entry is
/// deleted, failed or not resolved (yet).
fn neighbour(m: RouteNetlinkMessage) -> Option<(u32, Ipv4Addr, Option<MacAddr>)> {
    let (n, deleted) = match m {
        RouteNetlinkMessage::NewNeighbour(n) => (n, false),
        RouteNetlinkMessage::DelNeighbour(n) => (n, true),
        _ => return None,
    };
    if n.header.family != AddressFamily::Inet {
        return None;
    }
    let ip = n.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        _ => None,
    })?;
    let usable = matches!(
        n.header.state,
        NeighbourState::Reachable
            | NeighbourState::Stale
            | NeighbourState::Delay
            | NeighbourState::Probe
            | NeighbourState::Permanent
            | NeighbourState::Noarp
    );
    let mac = n
        .attributes
        .iter()
        .find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) => <[u8; 6]>::try_from(l.as_slice()).ok(),
            _ => None,
        })
        .map(MacAddr)
        .filter(|m| usable && !deleted && m.is_valid_source());
    Some((n.header.ifindex, ip, mac))
}

/// A socket that hears the kernel's neighbour-table changes (`RTNLGRP_NEIGH`).
pub struct NeighbourWatch {
    socket: Socket,
    buf: Vec<u8>,
}

impl NeighbourWatch {
    pub fn open() -> io::Result<NeighbourWatch> {
        const RTNLGRP_NEIGH: u32 = 3;
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.add_membership(RTNLGRP_NEIGH)?;
        socket.set_non_blocking(true)?;
        Ok(NeighbourWatch {
            socket,
            buf: vec![0; 64 * 1024],
        })
    }

    pub fn fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.socket.as_raw_fd()
    }

    /// The changes queued now: (link, address, MAC or `None` when no longer usable).
    pub fn changes(&mut self) -> io::Result<Vec<(u32, Ipv4Addr, Option<MacAddr>)>> {
        let mut out = Vec::new();
        loop {
            let n = match self.socket.recv(&mut &mut self.buf[..], 0) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                // The kernel dropped notifications (ENOBUFS): the caller re-reads the table.
                Err(e) => return Err(e),
            };
            let mut offset = 0;
            while offset < n {
                let Ok(msg) =
                    NetlinkMessage::<RouteNetlinkMessage>::deserialize(&self.buf[offset..n])
                else {
                    break;
                };
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += len;
                if let NetlinkPayload::InnerMessage(m) = msg.payload {
                    out.extend(neighbour(m));
                }
            }
        }
    }
}
