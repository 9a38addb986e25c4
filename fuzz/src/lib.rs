//! The fuzz targets' bodies, shared by the libFuzzer entry points (`cargo +nightly fuzz run
//! TARGET`), the stable replay binaries (`cargo run -p vswitch-fuzz --bin TARGET -- FILES`) and
//! the corpus/regression replay test (`cargo test -p vswitch-fuzz`).
//!
//! Each target must never panic, whatever the bytes: a bad input is a counted drop or an error.

use std::net::Ipv4Addr;
use std::path::Path;

use vswitch::switch::gateway::dhcp::Server;
use vswitch::switch::gateway::dns::Resolver;
use vswitch::switch::gateway::{DhcpConfig, Endpoint, GatewayConfig};
use vswitch::switch::nat::{UplinkConfig, UplinkMode};
use vswitch::switch::{overlay, Actions, NetId, NetworkParams, Pipeline, PortId};
use vswitch::wire::offload::{self, VnetHdr};
use vswitch::wire::MacAddr;

pub const GW: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x01, 0x00, 0x01]);
pub const GW_IP: [u8; 4] = [10, 1, 0, 1];
pub const C1: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x01, 0x00, 0x02]);
pub const C1_IP: [u8; 4] = [10, 1, 0, 2];
pub const C2: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x01, 0x00, 0x03]);
pub const C2_IP: [u8; 4] = [10, 1, 0, 3];
pub const OV_GW: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x05, 0x00, 0x01]);
pub const OV_GW_IP: [u8; 4] = [10, 5, 0, 1];
pub const OV1: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x05, 0x00, 0x02]);
pub const OV1_IP: [u8; 4] = [10, 5, 0, 2];
pub const REMOTE_MAC: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x05, 0x00, 0x09]);
pub const UPLINK_MAC: MacAddr = MacAddr([0x02, 0xaa, 0, 0, 0, 2]);
pub const UPLINK_IP: [u8; 4] = [192, 0, 2, 2];
pub const ROUTER_MAC: MacAddr = MacAddr([0x02, 0xbb, 0, 0, 0, 1]);
pub const ROUTER_IP: [u8; 4] = [192, 0, 2, 1];
pub const OUTSIDE_IP: [u8; 4] = [198, 51, 100, 10];
pub const VNI: u32 = 42;
pub const REMOTE_VTEP: [u8; 4] = [192, 168, 50, 2];

/// Ports of the fuzzed switch, indexed by an input's port byte.
pub const PORTS: [PortId; 5] = [PortId(0), PortId(1), PortId(9), PortId(3), PortId(10)];
pub const UPLINK: PortId = PortId(9);
pub const TUNNEL: PortId = PortId(10);

fn gateway(ip: [u8; 4], mac: MacAddr, subnet: &str, dhcp: bool) -> GatewayConfig {
    GatewayConfig {
        ip: Ipv4Addr::from(ip),
        mac,
        subnet: subnet.parse().expect("subnet"),
        arp_suppress: true,
        dhcp: dhcp.then(|| DhcpConfig {
            range_start: Ipv4Addr::new(10, 1, 0, 100),
            range_end: Ipv4Addr::new(10, 1, 0, 200),
            lease_secs: 3600,
            mtu: 1500,
            excluded: vec![],
        }),
        dns_names: true,
        domain: "n.vswitch".into(),
        dns_forward: true,
    }
}

/// A switch as `vswitchd` builds it: network 0 (bridge, gateway 10.1.0.1 with DHCP and DNS,
/// ports 0 and 1), network 1 (overlay VNI 42, gateway 10.5.0.1, local port 3 and tunnel port 10
/// to a remote VTEP), and the uplink on port 9 (NAT, its router's MAC known).
pub fn switch(mode: UplinkMode) -> Pipeline {
    let mut p = Pipeline::new();
    p.add_network(
        NetId(0),
        NetworkParams {
            fdb_limit: 64,
            aging_ms: 300_000,
            gateway: Some(gateway(GW_IP, GW, "10.1.0.0/24", true)),
            egress: true,
            vni: None,
            overlay_mtu: None,
            learn_peers: false,
            encrypted: false,
            icc: true,
            port_mac_limit: 8, // random source MACs from c1 reach the limit
            gateway_rate: 0,
        },
    );
    p.add_network(
        NetId(1),
        NetworkParams {
            fdb_limit: 64,
            aging_ms: 300_000,
            gateway: Some(gateway(OV_GW_IP, OV_GW, "10.5.0.0/24", false)),
            egress: true,
            vni: Some(VNI),
            overlay_mtu: Some(1450),
            learn_peers: true,
            encrypted: false,
            icc: true,
            port_mac_limit: 0,
            gateway_rate: 0,
        },
    );
    for (port, mac, ip, name) in [(0, C1, C1_IP, "c1"), (1, C2, C2_IP, "c2")] {
        let ep = Endpoint {
            mac,
            ip: Some(Ipv4Addr::from(ip)),
            names: vec![name.into()],
        };
        p.add_port(PortId(port), NetId(0), Some(ep));
    }
    // c2 has port security: frames the fuzzer sends on it go through the guard.
    p.set_port_guard(
        PortId(1),
        Some(vswitch::switch::security::PortGuard {
            mac: C2,
            ip: Ipv4Addr::from(C2_IP),
        }),
    );
    let ep = Endpoint {
        mac: OV1,
        ip: Some(Ipv4Addr::from(OV1_IP)),
        names: vec!["ov1".into()],
    };
    p.add_port(PortId(3), NetId(1), Some(ep));
    p.add_tunnel(TUNNEL, NetId(1), VNI, Ipv4Addr::from(REMOTE_VTEP), true);
    // A static entry behind the tunnel, answered for by ARP suppression.
    p.fdb_pin(
        NetId(1),
        vswitch::wire::MacAddr([0x02, 0x42, 0x0a, 0x05, 0x00, 0x63]),
        TUNNEL,
        Some(Ipv4Addr::new(10, 5, 0, 99)),
        &["remote".to_string()],
    );
    p.set_uplink(
        UPLINK,
        UplinkConfig {
            mode,
            ip: Ipv4Addr::from(UPLINK_IP),
            prefix_len: 24,
            mac: UPLINK_MAC,
            gateway: Some(Ipv4Addr::from(ROUTER_IP)),
            mtu: 1500,
            nat_ports: (61000, 61063),
            conntrack_max: 256,
            conntrack_per_source: 64,
        },
    );
    let mut emit = Vec::new();
    if let Some(u) = p.uplink_mut() {
        u.set_neighbor(0, Ipv4Addr::from(ROUTER_IP), ROUTER_MAC, &mut emit);
    }
    p
}

pub const PARENT_MAC: MacAddr = MacAddr([0x02, 0xaa, 0, 0, 0, 7]);
pub const SEG_PEER: MacAddr = MacAddr([0x02, 0xbb, 0, 0, 0, 7]);
pub const IV_L2_IP: [u8; 4] = [10, 77, 0, 10];
pub const IV_L3_IP: [u8; 4] = [10, 78, 0, 10];
pub const IV_L3B_IP: [u8; 4] = [10, 79, 0, 10];
pub const SEG_PEER_IP: [u8; 4] = [10, 77, 0, 1];
/// Ports of the ipvlan switch, indexed by an input's port byte: the l2 network's containers
/// (0, 1) and segment (9), the l3 networks' containers (3, 4) and shared segment (10).
pub const IV_PORTS: [PortId; 6] = [
    PortId(0),
    PortId(1),
    PortId(9),
    PortId(3),
    PortId(4),
    PortId(10),
];

/// An ipvlan switch as `vswitchd` builds it: network 0 (l2, 10.77.0.0/24, containers on ports
/// 0 and 1, its parent on 9) and networks 1 and 2 (l3, 10.78.0.0/24 and 10.79.0.0/24, one
/// container each on ports 3 and 4, sharing the parent segment on port 10 and routing by the
/// host's 10.77.0.0/24 route).
pub fn ipvlan_switch() -> Pipeline {
    use vswitch::switch::ipvlan::{Mode, Params};
    let mut p = Pipeline::new();
    let params = || NetworkParams {
        fdb_limit: 64,
        aging_ms: 300_000,
        gateway: None,
        egress: false,
        vni: None,
        overlay_mtu: None,
        learn_peers: false,
        encrypted: false,
        icc: true,
        port_mac_limit: 0,
        gateway_rate: 0,
    };
    let nets = [
        (0, Mode::L2, "10.77.0.0/24", PortId(9)),
        (1, Mode::L3, "10.78.0.0/24", PortId(10)),
        (2, Mode::L3, "10.79.0.0/24", PortId(10)),
    ];
    for (id, mode, subnet, seg) in nets {
        p.add_network(NetId(id), params());
        p.set_ipvlan(
            NetId(id),
            Params {
                mode,
                parent_mac: PARENT_MAC,
                subnet: subnet.parse().expect("subnet"),
                router: Ipv4Addr::new(10, 78, 0, 1),
                routes: vec![("10.77.0.0/24".parse().expect("route"), None)],
            },
        );
        p.add_segment_port(seg, NetId(id));
    }
    let hosts = [
        (0, 0, C1, IV_L2_IP),
        (1, 0, C2, [10, 77, 0, 11]),
        (3, 1, OV1, IV_L3_IP),
        (4, 2, REMOTE_MAC, IV_L3B_IP),
    ];
    for (port, net, mac, ip) in hosts {
        let ep = Endpoint {
            mac,
            ip: Some(Ipv4Addr::from(ip)),
            names: vec![],
        };
        p.add_port(PortId(port), NetId(net), Some(ep));
    }
    p
}

/// `ipvlan`: frames in on the containers and parents of l2 and l3 ipvlan networks, with or
/// without a virtio-net header (the same records as `pipeline`).
pub fn ipvlan(data: &[u8]) {
    let mut run = Run::new(UplinkMode::Dedicated);
    run.p = ipvlan_switch();
    for (ctl, rec) in Records(data).take(64) {
        run.tick((ctl >> 4) & 7, ctl & 0x80 != 0);
        let port = IV_PORTS[usize::from(ctl & 7) % IV_PORTS.len()];
        if ctl & 8 != 0 {
            let Some(hdr) = VnetHdr::parse(rec) else {
                continue;
            };
            run.frame(port, Some(hdr), &rec[10..]);
        } else {
            run.frame(port, None, rec);
        }
    }
}

/// Splits an input into records: a control byte, a big-endian u16 length, that many bytes
/// (fewer at the end of the input).
pub struct Records<'a>(&'a [u8]);

impl<'a> Iterator for Records<'a> {
    type Item = (u8, &'a [u8]);
    fn next(&mut self) -> Option<(u8, &'a [u8])> {
        let (&ctl, rest) = self.0.split_first()?;
        if rest.len() < 2 {
            self.0 = &[];
            return Some((ctl, &[]));
        }
        let len = usize::from(u16::from_be_bytes([rest[0], rest[1]]));
        let rest = &rest[2..];
        let len = len.min(rest.len());
        let (rec, tail) = rest.split_at(len);
        self.0 = tail;
        Some((ctl, rec))
    }
}

/// Encodes records as `Records` reads them (used by the corpus generator).
pub fn encode_records(records: &[(u8, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (ctl, rec) in records {
        out.push(*ctl);
        out.extend_from_slice(&(rec.len() as u16).to_be_bytes());
        out.extend_from_slice(rec);
    }
    out
}

/// Control byte of a `pipeline` record: bits 0-2 the port (index into `PORTS`, mod 5), bit 3
/// a virtio-net header in the record's first 10 bytes, bits 4-6 seconds to advance the clock
/// by, bit 7 run the expiry of every table first.
pub fn pipeline_ctl(port: usize, vnet: bool, secs: u8) -> u8 {
    (port as u8 & 7) | if vnet { 8 } else { 0 } | ((secs & 7) << 4)
}

struct Run {
    p: Pipeline,
    a: Actions,
    buf: Vec<u8>,
    seg: Vec<u8>,
    now: u64,
}

impl Run {
    fn new(mode: UplinkMode) -> Run {
        Run {
            p: switch(mode),
            a: Actions::with_capacity(8),
            buf: Vec::with_capacity(offload_buf_len()),
            seg: vec![0; offload_buf_len()],
            now: 1_000,
        }
    }

    /// One frame in on `port`, handled as the dataplane does: process, then finish offloads
    /// for the ports that cannot take them.
    fn frame(&mut self, port: PortId, vnet: Option<VnetHdr>, frame: &[u8]) {
        self.buf.clear();
        self.buf.extend_from_slice(frame);
        self.p
            .process_vnet(self.now, port, &mut self.buf, vnet.as_ref(), &mut self.a);
        if let Some(hdr) = vnet {
            if !self.a.out.is_empty() && hdr.needs_work() {
                let _ = offload::finish_frame(&hdr, &self.buf, &mut self.seg, |s| {
                    std::hint::black_box(s);
                });
            }
        }
        std::hint::black_box((&self.a.out, &self.a.reply));
        self.a.events.clear();
        self.a.emit.clear();
    }

    fn tick(&mut self, secs: u8, expire: bool) {
        self.now += u64::from(secs) * 1000;
        if expire {
            self.p.expire(self.now);
        }
    }
}

/// The dataplane's frame buffer size.
pub fn offload_buf_len() -> usize {
    vswitch::dataplane::FRAME_BUF
}

/// `pipeline`: frames in on any port (two bridge containers, the uplink, an overlay container,
/// a VXLAN tunnel), with or without a virtio-net header, the clock moving between them.
pub fn pipeline(data: &[u8]) {
    let mut run = Run::new(UplinkMode::Dedicated);
    for (ctl, rec) in Records(data).take(64) {
        run.tick((ctl >> 4) & 7, ctl & 0x80 != 0);
        let port = PORTS[usize::from(ctl & 7) % PORTS.len()];
        if ctl & 8 != 0 {
            let Some(hdr) = VnetHdr::parse(rec) else {
                continue;
            };
            run.frame(port, Some(hdr), &rec[10..]);
        } else {
            run.frame(port, None, rec);
        }
    }
}

/// Control byte of a `nat` record: bit 0 from the uplink (else from container 1 through its
/// gateway), bit 1 shared mode (first record only), bits 4-6 seconds to advance.
pub fn nat_ctl(from_uplink: bool, secs: u8) -> u8 {
    u8::from(from_uplink) | ((secs & 7) << 4)
}

/// `nat`: IPv4 packets routed out through the masquerade and back in on the uplink; the
/// Ethernet header is made here so every input reaches routing and conntrack.
pub fn nat(data: &[u8]) {
    let mode = match data.first() {
        Some(c) if c & 2 != 0 => UplinkMode::Shared,
        _ => UplinkMode::Dedicated,
    };
    let mut run = Run::new(mode);
    let mut frame = Vec::with_capacity(2048);
    for (ctl, rec) in Records(data).take(64) {
        run.tick((ctl >> 4) & 7, ctl & 0x80 != 0);
        let (port, dst, src) = if ctl & 1 != 0 {
            (UPLINK, UPLINK_MAC, ROUTER_MAC)
        } else {
            (PortId(0), GW, C1)
        };
        frame.clear();
        frame.extend_from_slice(&dst.0);
        frame.extend_from_slice(&src.0);
        frame.extend_from_slice(&[0x08, 0x00]);
        frame.extend_from_slice(rec);
        run.frame(port, None, &frame);
    }
}

/// `control_request`: one request line as the control socket reads it; a request that decodes
/// is classified (read or change) and encoded back.
pub fn control_request(data: &[u8]) {
    if let Ok(req) = vswitch::control::decode_request(data) {
        std::hint::black_box(vswitch::control::auth::access_of(&req.op));
        let line = serde_json::to_vec(&req).expect("a decoded request encodes");
        let again = vswitch::control::decode_request(&line).expect("an encoded request decodes");
        assert_eq!(again.op, req.op, "request round trip");
        // Published-port specs are parsed by the control plane: a parsed one prints as a spec
        // that parses to itself, and its ports stay in range.
        use vswitch::api::Op;
        let specs: Vec<&String> = match &req.op {
            Op::PublishAdd { spec, .. } | Op::PublishRemove { spec, .. } => vec![spec],
            Op::PortAdd(p) => p.publish.iter().collect(),
            Op::ContainerCreate(c) => c.publish.iter().collect(),
            _ => vec![],
        };
        for s in specs {
            if let Ok(p) = s.parse::<vswitch::state::Publish>() {
                let again: vswitch::state::Publish = p.to_string().parse().expect("a spec");
                assert_eq!(again, p, "publish spec round trip");
                assert_eq!(p.ports().count(), usize::from(p.count));
            }
        }
    }
}

/// `dhcp`: DHCP messages (UDP payloads) to one network's server, one after another.
pub fn dhcp(data: &[u8]) {
    let cfg = gateway(GW_IP, GW, "10.1.0.0/24", true);
    let mut server = Server::new(
        cfg.dhcp.clone().expect("dhcp"),
        cfg.ip,
        cfg.mac,
        cfg.subnet,
        cfg.domain.clone(),
    );
    server.reserve(C1, Ipv4Addr::from(C1_IP), Some("c1".into()));
    let mut reply = Vec::new();
    let mut events = Vec::new();
    let mut now = 1_000;
    for (ctl, rec) in Records(data).take(32) {
        now += u64::from(ctl) * 1000;
        if ctl & 0x80 != 0 {
            server.expire(now);
        }
        reply.clear();
        let _ = server.handle(now, NetId(0), rec, &mut reply, &mut events);
        std::hint::black_box(server.leases(now));
    }
}

/// `dns`: one query to the gateway's resolver (names on, forwarding on), answered to the
/// maximum size the first byte picks.
pub fn dns(data: &[u8]) {
    let Some((&sel, query)) = data.split_first() else {
        return;
    };
    let mut r = Resolver::new("n.vswitch".into(), true, sel & 1 != 0);
    r.set_records(vec![
        ("c1".into(), Ipv4Addr::from(C1_IP)),
        ("c1.n.vswitch".into(), Ipv4Addr::from(C1_IP)),
        ("web".into(), Ipv4Addr::from(C2_IP)),
    ]);
    let max_len = [512usize, 1232, 4096, 65535, 12, 0][usize::from(sel >> 1) % 6];
    let _ = std::hint::black_box(r.resolve(query, max_len));
    let _ = std::hint::black_box(r.answer(query, max_len));
}

/// `offload`: a virtio-net header (first 10 bytes) and the frame after it, finished in software
/// (TSO/USO segmentation, checksums) into the dataplane's buffer.
pub fn offload(data: &[u8]) {
    let Some(hdr) = VnetHdr::parse(data) else {
        return;
    };
    let frame = &data[10..];
    let mut buf = vec![0u8; offload_buf_len()];
    let mut n = 0usize;
    let _ = offload::finish_frame(&hdr, frame, &mut buf, |seg| {
        n += 1;
        assert!(seg.len() <= offload_buf_len());
    });
}

/// `vxlan`: a datagram at the VTEP (first 4 bytes its source address), demultiplexed to a
/// tunnel port as the dataplane does, and the inner frame through the pipeline.
pub fn vxlan(data: &[u8]) {
    if data.len() < 4 {
        return;
    }
    let src = Ipv4Addr::new(data[0], data[1], data[2], data[3]);
    let datagram = &data[4..];
    let mut run = Run::new(UplinkMode::Dedicated);
    std::hint::black_box(overlay::flow_hash(datagram));
    if let Ok(port) = run.p.tunnels.demux(src, datagram) {
        run.frame(port, None, &datagram[overlay::HEADER_LEN..]);
    }
}

/// `trace`: a flow (the text before the first newline, as `vswitchctl trace` takes it) built
/// into a frame for the port the first byte picks and traced through the fuzzed switch; the
/// bytes after the newline are traced as a raw frame (`--hex`) and described. Neither may
/// panic, and the traced switch must not change.
pub fn trace(data: &[u8]) {
    use vswitch::switch::trace;
    use vswitch::wire::flow;
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let (text, raw) = match rest.iter().position(|b| *b == b'\n') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let p = switch(UplinkMode::Dedicated);
    let port = PORTS[usize::from(sel) % PORTS.len()];
    let defaults = flow::Defaults {
        mac: C1,
        ip: (sel & 0x80 == 0).then_some(Ipv4Addr::from(C1_IP)),
        nw_dst: (sel & 0x40 != 0).then_some(Ipv4Addr::from(UPLINK_IP)),
    };
    let next_hop = |ip: Ipv4Addr| (ip != Ipv4Addr::from(C2_IP)).then_some(GW);
    if let Ok(text) = std::str::from_utf8(text) {
        if let Ok(frame) = flow::build(text, &defaults, &next_hop) {
            let r = trace::run(&p, 1000, port, &frame);
            std::hint::black_box(&r);
        }
        let _ = std::hint::black_box(flow::from_hex(text));
    }
    let _ = std::hint::black_box(flow::describe(raw));
    let _ = std::hint::black_box(flow::tuple(raw));
    std::hint::black_box(trace::run(&p, 1000, port, raw));
}

/// A target's body.
pub type Target = fn(&[u8]);

/// All targets by name.
pub const TARGETS: &[(&str, Target)] = &[
    ("pipeline", pipeline),
    ("nat", nat),
    ("control_request", control_request),
    ("dhcp", dhcp),
    ("dns", dns),
    ("offload", offload),
    ("vxlan", vxlan),
    ("trace", trace),
    ("ipvlan", ipvlan),
    ("wireguard", wireguard),
];

/// `wireguard`: the first byte picks what the rest is — a message from a peer, taken by a
/// WireGuard session (`ports::wg::Peer::receive`: handshakes, cookies, transport data under
/// keys it does not have), or a decrypted packet, read for its VXLAN payload and handed to an
/// encrypted network's demux and the pipeline. None may panic.
pub fn wireguard(data: &[u8]) {
    use std::sync::OnceLock;
    use vswitch::ports::wg;
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    if sel & 1 == 0 {
        static PEER: OnceLock<(wg::Peer, wg::WgSocket)> = OnceLock::new();
        let (peer, sock) = PEER.get_or_init(|| {
            let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("a loopback socket");
            let _ = sock.set_nonblocking(true);
            let peer = wg::Peer::new(
                &[1; 32],
                wg::public_of(&[2; 32]),
                1,
                Ipv4Addr::new(10, 0, 0, 2),
                std::net::SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9),
            );
            (peer, wg::WgSocket::new(sock))
        });
        let mut out = vec![0u8; 65536 + 64];
        let _ = peer.receive(sock, Ipv4Addr::LOCALHOST, rest, &mut out, |p, src| {
            std::hint::black_box((p.len(), src));
        });
        return;
    }
    let mut run = Run::new(UplinkMode::Dedicated);
    run.p.tunnels.set_encrypted(VNI, true);
    if let Some(dg) = wg::vxlan_payload(rest, overlay::DEFAULT_PORT) {
        let src = Ipv4Addr::new(rest[12], rest[13], rest[14], rest[15]);
        if let Ok(port) = run.p.tunnels.demux_decrypted(src, dg) {
            run.frame(port, None, &dg[overlay::HEADER_LEN..]);
        }
    }
}

/// Runs `target` on every file named on the command line (directories: every file in them).
pub fn replay_main(target: Target) {
    let mut n = 0;
    for arg in std::env::args_os().skip(1) {
        n += replay(target, Path::new(&arg));
    }
    eprintln!("replayed {n} inputs without a crash");
}

/// Runs `target` on the file `path`, or every file under the directory `path`; returns how many.
pub fn replay(target: Target, path: &Path) -> usize {
    if path.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(path)
            .expect("read dir")
            .map(|e| e.expect("dir entry").path())
            .collect();
        entries.sort();
        entries.iter().map(|p| replay(target, p)).sum()
    } else {
        let data = std::fs::read(path).expect("read input");
        target(&data);
        1
    }
}
