//! Flows in a small readable syntax, as `vswitchctl trace` takes them (Open vSwitch's field
//! names): `arp,arp_tpa=10.1.0.3`, `icmp,nw_dst=10.1.0.3`, `tcp,nw_dst=192.0.2.1,tp_dst=80`,
//! `dl_dst=02:42:0a:01:00:03,dl_type=0x88b5`. [`build`] makes the frame a flow describes, with
//! what it leaves out taken from the sending port ([`Defaults`]); [`describe`] says what a frame
//! is in the same syntax (and what a DHCP or DNS message inside it carries).
//!
//! Frames are built and read with etherparse (the slow path: a trace request, not per packet).

use std::net::Ipv4Addr;

use etherparse::{
    ArpHardwareId, ArpOperation, ArpPacket, EtherType, Ethernet2Header, Icmpv4Type, IpNumber,
    NetSlice, PacketBuilder, SlicedPacket, TransportSlice,
};

use super::MacAddr;

/// What a flow leaves out, from the port it is traced on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// `dl_src` (and `arp_sha`): the port's MAC.
    pub mac: MacAddr,
    /// `nw_src` (and `arp_spa`): the port's address (`None`: the flow must say).
    pub ip: Option<Ipv4Addr>,
    /// `nw_dst` when the flow has none: the uplink's own address for a trace on the uplink.
    pub nw_dst: Option<Ipv4Addr>,
}

/// Where an IPv4 packet's `dl_dst` is to go when the flow does not say: the caller knows the
/// network (a neighbour's MAC, the gateway's for anything off the subnet).
pub type NextHop<'a> = &'a dyn Fn(Ipv4Addr) -> Option<MacAddr>;

/// A flow that cannot be built, with what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FlowError(pub String);

fn err<T>(msg: impl Into<String>) -> Result<T, FlowError> {
    Err(FlowError(msg.into()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Eth,
    Arp,
    Ip,
    Icmp,
    Tcp,
    Udp,
}

/// The fields a flow may set.
#[derive(Debug, Default)]
struct Fields {
    dl_src: Option<MacAddr>,
    dl_dst: Option<MacAddr>,
    dl_type: Option<u16>,
    dl_vlan: Option<u16>,
    arp_op: Option<u16>,
    arp_sha: Option<MacAddr>,
    arp_tha: Option<MacAddr>,
    arp_spa: Option<Ipv4Addr>,
    arp_tpa: Option<Ipv4Addr>,
    nw_src: Option<Ipv4Addr>,
    nw_dst: Option<Ipv4Addr>,
    nw_ttl: Option<u8>,
    nw_proto: Option<u8>,
    tp_src: Option<u16>,
    tp_dst: Option<u16>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    tcp_flags: Option<String>,
    payload_len: Option<usize>,
}

/// Largest `payload_len`: a frame the switch's buffers hold.
pub const MAX_PAYLOAD: usize = 9000;

fn num<T: TryFrom<u64>>(key: &str, v: &str) -> Result<T, FlowError> {
    let n = if let Some(hex) = v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        u64::from_str_radix(hex, 16).ok()
    } else {
        v.parse::<u64>().ok()
    };
    n.and_then(|n| T::try_from(n).ok())
        .map_or_else(|| err(format!("{key}={v:?}: not a number in range")), Ok)
}

fn mac(key: &str, v: &str) -> Result<MacAddr, FlowError> {
    v.parse().map_err(|_| {
        FlowError(format!(
            "{key}={v:?}: not a MAC address (aa:bb:cc:dd:ee:ff)"
        ))
    })
}

fn ip(key: &str, v: &str) -> Result<Ipv4Addr, FlowError> {
    v.parse()
        .map_err(|_| FlowError(format!("{key}={v:?}: not an IPv4 address")))
}

fn parse(flow: &str) -> Result<(Kind, Fields), FlowError> {
    let mut kind = Kind::Eth;
    let mut f = Fields::default();
    let mut set_kind = |k: Kind, word: &str| -> Result<(), FlowError> {
        let compatible = kind == Kind::Eth || kind == k || (kind == Kind::Ip && k != Kind::Arp);
        if !compatible {
            return err(format!("{word:?} contradicts an earlier protocol keyword"));
        }
        if k != Kind::Ip || kind == Kind::Eth {
            kind = k;
        }
        Ok(())
    };
    for tok in flow.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let Some((key, v)) = tok.split_once('=') else {
            match tok {
                "arp" => set_kind(Kind::Arp, tok)?,
                "ip" => set_kind(Kind::Ip, tok)?,
                "icmp" => set_kind(Kind::Icmp, tok)?,
                "tcp" => set_kind(Kind::Tcp, tok)?,
                "udp" => set_kind(Kind::Udp, tok)?,
                _ => {
                    return err(format!(
                        "unknown keyword {tok:?}: use arp, ip, icmp, tcp, udp or FIELD=VALUE"
                    ))
                }
            }
            continue;
        };
        let (key, v) = (key.trim(), v.trim());
        match key {
            "dl_src" => f.dl_src = Some(mac(key, v)?),
            "dl_dst" => f.dl_dst = Some(mac(key, v)?),
            "dl_type" => f.dl_type = Some(num(key, v)?),
            "dl_vlan" => {
                let id: u16 = num(key, v)?;
                if id == 0 || id > 4094 {
                    return err(format!("dl_vlan={v}: a VLAN is 1 to 4094"));
                }
                f.dl_vlan = Some(id)
            }
            "arp_op" => f.arp_op = Some(num(key, v)?),
            "arp_sha" => f.arp_sha = Some(mac(key, v)?),
            "arp_tha" => f.arp_tha = Some(mac(key, v)?),
            "arp_spa" => f.arp_spa = Some(ip(key, v)?),
            "arp_tpa" => f.arp_tpa = Some(ip(key, v)?),
            "nw_src" => f.nw_src = Some(ip(key, v)?),
            "nw_dst" => f.nw_dst = Some(ip(key, v)?),
            "nw_ttl" => f.nw_ttl = Some(num(key, v)?),
            "nw_proto" => f.nw_proto = Some(num(key, v)?),
            "tp_src" => f.tp_src = Some(num(key, v)?),
            "tp_dst" => f.tp_dst = Some(num(key, v)?),
            "icmp_type" => f.icmp_type = Some(num(key, v)?),
            "icmp_code" => f.icmp_code = Some(num(key, v)?),
            "tcp_flags" => f.tcp_flags = Some(v.to_ascii_lowercase()),
            "payload_len" => {
                let n: usize = num(key, v)?;
                if n > MAX_PAYLOAD {
                    return err(format!("payload_len={n}: at most {MAX_PAYLOAD}"));
                }
                f.payload_len = Some(n)
            }
            "in_port" => {
                return err("the port is trace's first argument, not in_port= in the flow")
            }
            _ => return err(format!("unknown field {key:?}")),
        }
    }
    // Fields that only make sense for one kind.
    let arp_fields = f.arp_op.is_some()
        || f.arp_sha.is_some()
        || f.arp_tha.is_some()
        || f.arp_spa.is_some()
        || f.arp_tpa.is_some();
    let ip_fields = f.nw_src.is_some() || f.nw_dst.is_some() || f.nw_ttl.is_some();
    let tp_fields = f.tp_src.is_some() || f.tp_dst.is_some();
    if arp_fields && kind == Kind::Eth {
        kind = Kind::Arp;
    }
    if (ip_fields || f.nw_proto.is_some()) && kind == Kind::Eth {
        kind = Kind::Ip;
    }
    if arp_fields && kind != Kind::Arp {
        return err("arp_* fields need an arp flow");
    }
    if kind == Kind::Arp && (ip_fields || tp_fields) {
        return err("an arp flow has no nw_*/tp_* fields (use arp_spa, arp_tpa)");
    }
    if tp_fields && !matches!(kind, Kind::Tcp | Kind::Udp) {
        return err("tp_src/tp_dst need tcp or udp");
    }
    if (f.icmp_type.is_some() || f.icmp_code.is_some()) && kind != Kind::Icmp {
        return err("icmp_type/icmp_code need icmp");
    }
    if f.tcp_flags.is_some() && kind != Kind::Tcp {
        return err("tcp_flags needs tcp");
    }
    if f.nw_proto.is_some() && kind != Kind::Ip {
        return err("nw_proto is for a plain ip flow (tcp, udp and icmp set it)");
    }
    if f.dl_type.is_some() && kind != Kind::Eth {
        return err("dl_type is for a flow with no protocol keyword");
    }
    Ok((kind, f))
}

fn tcp_flags(s: &str) -> Result<[bool; 6], FlowError> {
    // fin syn rst psh ack urg
    let mut fl = [false; 6];
    for w in s.split(['+', '|']).filter(|w| !w.is_empty()) {
        let i = match w {
            "fin" => 0,
            "syn" => 1,
            "rst" => 2,
            "psh" => 3,
            "ack" => 4,
            "urg" => 5,
            _ => {
                return err(format!(
                    "tcp_flags: unknown flag {w:?} (fin, syn, rst, psh, ack, urg joined by +)"
                ))
            }
        };
        fl[i] = true;
    }
    Ok(fl)
}

/// Builds the frame `flow` describes, sent by the port `d` describes; an IPv4 packet with no
/// `dl_dst` goes to `next_hop(nw_dst)` (or is an error when that is unknown).
pub fn build(flow: &str, d: &Defaults, next_hop: NextHop) -> Result<Vec<u8>, FlowError> {
    let (kind, f) = parse(flow)?;
    let src = f.dl_src.unwrap_or(d.mac);
    if !src.is_valid_source() && f.dl_src.is_none() {
        return err("this port has no MAC to send from: give dl_src=");
    }
    let mut out = Vec::with_capacity(128);
    let payload = vec![0u8; f.payload_len.unwrap_or(0)];
    match kind {
        Kind::Eth => {
            let Some(dst) = f.dl_dst else {
                return err("say what the frame is (arp, ip, icmp, tcp, udp) or give its dl_dst=");
            };
            let ty = f.dl_type.unwrap_or(0x88b5);
            let mut body = payload;
            if body.len() < 46 {
                body.resize(46, 0);
            }
            push_eth(&mut out, dst, src, f.dl_vlan, ty);
            out.extend_from_slice(&body);
        }
        Kind::Arp => {
            let op = f.arp_op.unwrap_or(1);
            let Some(tpa) = f.arp_tpa else {
                return err("an arp flow needs arp_tpa= (the address asked for)");
            };
            let dst = f.dl_dst.unwrap_or(if op == 1 {
                MacAddr::BROADCAST
            } else {
                f.arp_tha.unwrap_or(MacAddr::BROADCAST)
            });
            let arp = ArpPacket::new(
                ArpHardwareId::ETHERNET,
                EtherType::IPV4,
                ArpOperation(op),
                &f.arp_sha.unwrap_or(src).0,
                &f.arp_spa
                    .or(d.ip)
                    .ok_or_else(|| FlowError("this port has no address: give arp_spa=".into()))?
                    .octets(),
                &f.arp_tha.unwrap_or(MacAddr::ZERO).0,
                &tpa.octets(),
            )
            .map_err(|e| FlowError(format!("arp: {e}")))?;
            push_eth(&mut out, dst, src, f.dl_vlan, EtherType::ARP.0);
            out.extend_from_slice(&arp.to_bytes());
            while out.len() < 60 {
                out.push(0);
            }
        }
        Kind::Ip | Kind::Icmp | Kind::Tcp | Kind::Udp => {
            let Some(nw_dst) = f.nw_dst.or(d.nw_dst) else {
                return err("an ip flow needs nw_dst=");
            };
            let nw_src = f
                .nw_src
                .or(d.ip)
                .ok_or_else(|| FlowError("this port has no address: give nw_src=".into()))?;
            let dst = match f.dl_dst {
                Some(m) => m,
                None if nw_dst.is_broadcast() => MacAddr::BROADCAST,
                None => next_hop(nw_dst).ok_or_else(|| {
                    FlowError(format!(
                        "no MAC known for {nw_dst} on this network: give dl_dst="
                    ))
                })?,
            };
            let ttl = f.nw_ttl.unwrap_or(64);
            let eth = PacketBuilder::ethernet2(src.0, dst.0);
            let mut body = Vec::with_capacity(64 + payload.len());
            let ipb = match f.dl_vlan {
                Some(v) => eth
                    .single_vlan(
                        etherparse::VlanId::try_new(v).map_err(|e| FlowError(e.to_string()))?,
                    )
                    .ipv4(nw_src.octets(), nw_dst.octets(), ttl),
                None => eth.ipv4(nw_src.octets(), nw_dst.octets(), ttl),
            };
            let r = match kind {
                Kind::Icmp => {
                    let ty = f.icmp_type.unwrap_or(8);
                    let code = f.icmp_code.unwrap_or(0);
                    let body_len = f.payload_len.unwrap_or(32);
                    let data = vec![0u8; body_len];
                    let b = match (ty, code) {
                        (8, 0) => ipb.icmpv4_echo_request(0x7472, 1),
                        (0, 0) => ipb.icmpv4(Icmpv4Type::EchoReply(etherparse::IcmpEchoHeader {
                            id: 0x7472,
                            seq: 1,
                        })),
                        _ => ipb.icmpv4_raw(ty, code, [0; 4]),
                    };
                    b.write(&mut body, &data)
                }
                Kind::Tcp => {
                    let Some(tp_dst) = f.tp_dst else {
                        return err("a tcp flow needs tp_dst=");
                    };
                    let fl = tcp_flags(f.tcp_flags.as_deref().unwrap_or("syn"))?;
                    let mut b = ipb.tcp(f.tp_src.unwrap_or(40000), tp_dst, 1, 64240);
                    if fl[0] {
                        b = b.fin();
                    }
                    if fl[1] {
                        b = b.syn();
                    }
                    if fl[2] {
                        b = b.rst();
                    }
                    if fl[3] {
                        b = b.psh();
                    }
                    if fl[4] {
                        b = b.ack(1);
                    }
                    if fl[5] {
                        b = b.urg(0);
                    }
                    b.write(&mut body, &payload)
                }
                Kind::Udp => {
                    let Some(tp_dst) = f.tp_dst else {
                        return err("a udp flow needs tp_dst=");
                    };
                    ipb.udp(f.tp_src.unwrap_or(40000), tp_dst)
                        .write(&mut body, &payload)
                }
                _ => ipb.write(&mut body, IpNumber(f.nw_proto.unwrap_or(253)), &payload),
            };
            r.map_err(|e| FlowError(format!("cannot build the packet: {e}")))?;
            out = body;
            while out.len() < 60 {
                out.push(0);
            }
        }
    }
    Ok(out)
}

fn push_eth(out: &mut Vec<u8>, dst: MacAddr, src: MacAddr, vlan: Option<u16>, ty: u16) {
    out.extend_from_slice(&dst.0);
    out.extend_from_slice(&src.0);
    if let Some(v) = vlan {
        out.extend_from_slice(&0x8100u16.to_be_bytes());
        out.extend_from_slice(&v.to_be_bytes());
    }
    out.extend_from_slice(&ty.to_be_bytes());
}

/// What a frame is, in the flow syntax (`tcp,dl_src=…,dl_dst=…,nw_src=…,nw_dst=…,tp_src=…,
/// tp_dst=…,tcp_flags=syn`), followed by what a DHCP or DNS message in it says. Never fails: a
/// frame etherparse cannot read is described as far as it goes.
pub fn describe(frame: &[u8]) -> String {
    let Ok((eth, _)) = Ethernet2Header::from_slice(frame) else {
        return format!("runt ({} bytes)", frame.len());
    };
    let (dst, src) = (MacAddr(eth.destination), MacAddr(eth.source));
    let sliced = match SlicedPacket::from_ethernet(frame) {
        Ok(s) => s,
        Err(e) => {
            return format!(
                "dl_src={src},dl_dst={dst},dl_type=0x{:04x} (malformed: {e})",
                eth.ether_type.0
            )
        }
    };
    let vlan = sliced
        .link_exts
        .iter()
        .find_map(|x| match x {
            etherparse::LinkExtSlice::Vlan(v) => Some(v.vlan_identifier().value()),
            _ => None,
        })
        .map(|v| format!(",dl_vlan={v}"))
        .unwrap_or_default();
    let l2 = format!("dl_src={src},dl_dst={dst}{vlan}");
    match &sliced.net {
        Some(NetSlice::Arp(a)) => {
            let ipv4 = |b: &[u8]| {
                <[u8; 4]>::try_from(b)
                    .map(|o| Ipv4Addr::from(o).to_string())
                    .unwrap_or_else(|_| "?".into())
            };
            format!(
                "arp,{l2},arp_op={},arp_spa={},arp_tpa={},arp_sha={},arp_tha={}",
                a.operation().0,
                ipv4(a.sender_protocol_addr()),
                ipv4(a.target_protocol_addr()),
                hw(a.sender_hw_addr()),
                hw(a.target_hw_addr()),
            )
        }
        Some(NetSlice::Ipv4(ip)) => {
            let h = ip.header();
            let nw = format!(
                "nw_src={},nw_dst={},nw_ttl={}",
                h.source_addr(),
                h.destination_addr(),
                h.ttl()
            );
            let frag = if h.is_fragmenting_payload() {
                ",nw_frag=yes"
            } else {
                ""
            };
            match &sliced.transport {
                Some(TransportSlice::Tcp(t)) => {
                    let flags: Vec<&str> = [
                        (t.fin(), "fin"),
                        (t.syn(), "syn"),
                        (t.rst(), "rst"),
                        (t.psh(), "psh"),
                        (t.ack(), "ack"),
                        (t.urg(), "urg"),
                    ]
                    .iter()
                    .filter(|(on, _)| *on)
                    .map(|(_, n)| *n)
                    .collect();
                    format!(
                        "tcp,{l2},{nw}{frag},tp_src={},tp_dst={},tcp_flags={}{}",
                        t.source_port(),
                        t.destination_port(),
                        if flags.is_empty() {
                            "none".to_string()
                        } else {
                            flags.join("+")
                        },
                        payload_len(t.payload().len())
                    )
                }
                Some(TransportSlice::Udp(u)) => {
                    let mut s = format!(
                        "udp,{l2},{nw}{frag},tp_src={},tp_dst={}{}",
                        u.source_port(),
                        u.destination_port(),
                        payload_len(u.payload().len())
                    );
                    let ports = (u.source_port(), u.destination_port());
                    if ports.0 == 53 || ports.1 == 53 {
                        s.push_str(&describe_dns(u.payload()));
                    } else if matches!(ports, (67, 68) | (68, 67)) {
                        s.push_str(&describe_dhcp(u.payload()));
                    }
                    s
                }
                Some(TransportSlice::Icmpv4(i)) => format!(
                    "icmp,{l2},{nw}{frag},icmp_type={},icmp_code={}",
                    i.type_u8(),
                    i.code_u8()
                ),
                _ => format!("ip,{l2},{nw}{frag},nw_proto={}", h.protocol().0),
            }
        }
        Some(NetSlice::Ipv6(_)) => format!("ipv6,{l2}"),
        None => format!("{l2},dl_type=0x{:04x}", eth.ether_type.0),
    }
}

/// A packet's IPv4 5-tuple, `tcp 10.1.0.2:40000 -> 192.0.2.1:80` (ICMP: its echo id), for
/// saying what NAT made of it; `None` for anything else.
pub fn tuple(frame: &[u8]) -> Option<String> {
    let sliced = SlicedPacket::from_ethernet(frame).ok()?;
    let Some(NetSlice::Ipv4(ip)) = &sliced.net else {
        return None;
    };
    let (src, dst) = (ip.header().source_addr(), ip.header().destination_addr());
    Some(match &sliced.transport {
        Some(TransportSlice::Tcp(t)) => format!(
            "tcp {src}:{} -> {dst}:{}",
            t.source_port(),
            t.destination_port()
        ),
        Some(TransportSlice::Udp(u)) => format!(
            "udp {src}:{} -> {dst}:{}",
            u.source_port(),
            u.destination_port()
        ),
        Some(TransportSlice::Icmpv4(i)) => {
            let id = match i.icmp_type() {
                Icmpv4Type::EchoRequest(e) | Icmpv4Type::EchoReply(e) => format!(" id {}", e.id),
                _ => String::new(),
            };
            format!("icmp {src} -> {dst}{id}")
        }
        _ => format!("proto {} {src} -> {dst}", ip.header().protocol().0),
    })
}

/// A hardware address of any length (ARP says how long its are), colon-separated.
fn hw(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn payload_len(n: usize) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(",payload_len={n}")
    }
}

fn describe_dns(payload: &[u8]) -> String {
    use hickory_proto::op::Message;
    let Ok(m) = Message::from_vec(payload) else {
        return " (not a DNS message)".into();
    };
    let q = m
        .queries
        .first()
        .map(|q| format!("{} {}", q.name(), q.query_type()))
        .unwrap_or_default();
    if m.metadata.message_type == hickory_proto::op::MessageType::Query {
        return format!(" (DNS query {q})");
    }
    let answers: Vec<String> = m.answers.iter().map(|r| r.data.to_string()).collect();
    format!(
        " (DNS answer {q}: {} {})",
        m.metadata.response_code,
        answers.join(" ")
    )
    .replace("  ", " ")
}

fn describe_dhcp(payload: &[u8]) -> String {
    use dhcproto::{v4, Decodable, Decoder};
    let Ok(m) = v4::Message::decode(&mut Decoder::new(payload)) else {
        return " (not a DHCP message)".into();
    };
    let ty = m
        .opts()
        .msg_type()
        .map(|t| format!("{t:?}").to_uppercase())
        .unwrap_or_else(|| "BOOTP".into());
    let yi = m.yiaddr();
    if yi.is_unspecified() {
        format!(" (DHCP {ty})")
    } else {
        format!(" (DHCP {ty} {yi})")
    }
}

/// A frame from hex digits (spaces, colons and a leading `0x` allowed), as `trace --hex` takes
/// it.
pub fn from_hex(s: &str) -> Result<Vec<u8>, FlowError> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':' && *b != b'-')
        .collect();
    if !digits.len().is_multiple_of(2) {
        return err("an odd number of hex digits");
    }
    digits
        .chunks(2)
        .map(|p| {
            std::str::from_utf8(p)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    FlowError(format!(
                        "{:?} is not a hex byte",
                        String::from_utf8_lossy(p)
                    ))
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: MacAddr = MacAddr([0x02, 0x42, 10, 1, 0, 2]);
    const GW: MacAddr = MacAddr([0x02, 0x42, 10, 1, 0, 1]);

    fn d() -> Defaults {
        Defaults {
            mac: PORT,
            ip: Some(Ipv4Addr::new(10, 1, 0, 2)),
            nw_dst: None,
        }
    }

    fn gw(_: Ipv4Addr) -> Option<MacAddr> {
        Some(GW)
    }

    #[test]
    fn arp_request_with_defaults() {
        let f = build("arp,arp_tpa=10.1.0.3", &d(), &gw).unwrap();
        assert_eq!(f.len(), 60);
        assert_eq!(
            describe(&f),
            "arp,dl_src=02:42:0a:01:00:02,dl_dst=ff:ff:ff:ff:ff:ff,arp_op=1,arp_spa=10.1.0.2,\
             arp_tpa=10.1.0.3,arp_sha=02:42:0a:01:00:02,arp_tha=00:00:00:00:00:00"
        );
    }

    #[test]
    fn tcp_roundtrips_through_describe() {
        let f = build(
            "tcp,nw_dst=192.0.2.1,tp_dst=80,tcp_flags=syn+ack,payload_len=10",
            &d(),
            &gw,
        )
        .unwrap();
        let s = describe(&f);
        assert_eq!(
            s,
            "tcp,dl_src=02:42:0a:01:00:02,dl_dst=02:42:0a:01:00:01,nw_src=10.1.0.2,\
             nw_dst=192.0.2.1,nw_ttl=64,tp_src=40000,tp_dst=80,tcp_flags=syn+ack,payload_len=10"
        );
        // What describe prints builds the same frame back.
        assert_eq!(build(&s, &d(), &gw).unwrap(), f);
    }

    #[test]
    fn udp_icmp_vlan_and_eth() {
        let f = build("udp,nw_dst=10.1.0.1,tp_dst=53,dl_vlan=7", &d(), &gw).unwrap();
        assert!(describe(&f)
            .starts_with("udp,dl_src=02:42:0a:01:00:02,dl_dst=02:42:0a:01:00:01,dl_vlan=7,"));
        let f = build("icmp,nw_dst=10.1.0.3", &d(), &gw).unwrap();
        assert!(
            describe(&f).ends_with("icmp_type=8,icmp_code=0"),
            "{}",
            describe(&f)
        );
        let f = build("dl_dst=02:00:00:00:00:09", &d(), &gw).unwrap();
        assert_eq!(f.len(), 60);
        assert!(describe(&f).ends_with("dl_type=0x88b5"));
    }

    #[test]
    fn errors_say_what_to_fix() {
        let cases = [
            ("arp", "arp_tpa"),
            ("tcp,nw_dst=10.0.0.1", "tp_dst"),
            ("bogus", "unknown keyword"),
            ("arp,tcp", "contradicts"),
            ("nw_dst=1.2.3.4,arp_tpa=1.2.3.4", "no nw_*"),
            ("icmp,arp_tpa=1.2.3.4", "arp_* fields"),
            ("tcp,nw_dst=1.2.3.4,tp_dst=99999", "range"),
            ("dl_src=zz", "not a MAC"),
            ("udp,tp_dst=1", "nw_dst"),
            ("in_port=1", "first argument"),
            ("ip,nw_dst=1.2.3.4,payload_len=100000", "at most"),
            (
                "tcp,nw_dst=1.2.3.4,tp_dst=1,tcp_flags=syn+boo",
                "unknown flag",
            ),
            ("", "dl_dst"),
        ];
        for (flow, want) in cases {
            let e = build(flow, &d(), &gw).unwrap_err().0;
            assert!(e.contains(want), "{flow:?}: {e}");
        }
        let none = |_: Ipv4Addr| None;
        let e = build("icmp,nw_dst=10.1.0.9", &d(), &none).unwrap_err().0;
        assert!(e.contains("no MAC known"), "{e}");
        let anon = Defaults { ip: None, ..d() };
        let e = build("udp,nw_dst=10.1.0.1,tp_dst=67", &anon, &gw)
            .unwrap_err()
            .0;
        assert!(e.contains("nw_src"), "{e}");
        assert!(build(
            "udp,nw_src=0.0.0.0,nw_dst=255.255.255.255,tp_src=68,tp_dst=67",
            &anon,
            &none
        )
        .is_ok());
    }

    #[test]
    fn hex_and_describe_never_fail() {
        assert_eq!(from_hex("0x0a:0B 0c").unwrap(), vec![10, 11, 12]);
        assert!(from_hex("abc").is_err());
        assert!(from_hex("zz").is_err());
        for n in 0..80 {
            let _ = describe(&vec![0x45; n]);
        }
        let mut f = build("udp,nw_dst=10.1.0.1,tp_dst=53", &d(), &gw).unwrap();
        f.truncate(40);
        let _ = describe(&f);
        // Found by the trace fuzz target: an ARP packet whose hardware addresses are 1 byte
        // long (MacAddr::from_slice wanted 6).
        let mut arp = build("arp,arp_tpa=10.1.0.3", &d(), &gw).unwrap();
        arp[18] = 1;
        assert!(describe(&arp).starts_with("arp,"), "{}", describe(&arp));
    }
}
