//! The forwarding path allocates nothing per packet in the steady state: a counting global
//! allocator watches `Pipeline::process` over a mix of known unicast, flooded broadcast, unknown
//! unicast and malformed frames after a warm-up, and over the NAT path (flows through the
//! uplink both ways, once they are tracked).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use std::net::Ipv4Addr;

use etherparse::PacketBuilder;
use vswitch::switch::gateway::{Endpoint, GatewayConfig};
use vswitch::switch::nat::{UplinkConfig, UplinkMode};
use vswitch::switch::{Actions, NetId, NetworkParams, Pipeline, PortId};
use vswitch::wire::offload::{VnetHdr, F_NEEDS_CSUM, GSO_TCPV4};
use vswitch::wire::MacAddr;

struct Counting;

thread_local! {
    // Per thread: the tests run in parallel, and only the thread under test is counted.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<usize> = const { Cell::new(0) };
}

fn count_one() {
    // `try_with`: a thread being torn down has no locals left, and is not under test.
    let _ = COUNTING.try_with(|c| {
        if c.get() {
            ALLOCS.with(|a| a.set(a.get() + 1));
        }
    });
}

/// Starts counting this thread's allocations.
fn start_counting() {
    ALLOCS.with(|a| a.set(0));
    COUNTING.with(|c| c.set(true));
}

/// Stops counting; returns how many there were.
fn stop_counting() -> usize {
    COUNTING.with(|c| c.set(false));
    ALLOCS.with(Cell::get)
}

// SAFETY: delegates to the system allocator unchanged; only counts calls.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count_one();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn frame(dst: [u8; 6], src: [u8; 6], len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst);
    f[6..12].copy_from_slice(&src);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

#[test]
fn forwarding_allocates_nothing_per_packet() {
    let mut p = Pipeline::new();
    p.add_network(
        NetId(0),
        NetworkParams {
            fdb_limit: 8192,
            aging_ms: 300_000,
            // A gateway sees every frame first (it takes only its own).
            gateway: Some(GatewayConfig {
                ip: "10.0.0.1".parse().unwrap(),
                mac: MacAddr([0x02, 0x42, 10, 0, 0, 1]),
                subnet: "10.0.0.0/24".parse().unwrap(),
                arp_suppress: true,
                dhcp: None,
                dns_names: true,
                domain: "n.vswitch".into(),
                dns_forward: false,
            }),
            egress: true,
            vni: None,
            overlay_mtu: None,
            learn_peers: false,
            encrypted: false,
            icc: true,
            port_mac_limit: 0,
            gateway_rate: 0,
        },
    );
    for i in 0..8 {
        assert!(p.add_port(PortId(i), NetId(0), None));
    }
    let mac = |i: u8| [0x02, 0x42, 0, 0, 0, i];
    let mut frames = Vec::new();
    for i in 0..8u8 {
        frames.push((i, frame(mac((i + 1) % 8), mac(i), 1514))); // known unicast after warm-up
        frames.push((i, frame([0xff; 6], mac(i), 60))); // broadcast flood
        frames.push((i, frame(mac(100 + i), mac(i), 60))); // unknown unicast flood
        frames.push((i, vec![0u8; 10])); // runt
    }
    let mut actions = Actions::with_capacity(16);
    // Warm-up: learn every MAC, size the buffers.
    for (now, (port, f)) in frames.iter_mut().enumerate() {
        p.process(now as u64, PortId(u32::from(*port)), f, &mut actions);
    }
    start_counting();
    let mut forwarded = 0usize;
    for round in 0..10_000u64 {
        for (port, f) in frames.iter_mut() {
            p.process(1000 + round, PortId(u32::from(*port)), f, &mut actions);
            forwarded += actions.out.len();
        }
    }
    let allocs = stop_counting();
    assert!(forwarded > 10_000 * 8, "frames were forwarded: {forwarded}");
    assert_eq!(allocs, 0, "allocations on the forwarding path");
}

const GW: [u8; 6] = [0x02, 0x42, 10, 1, 0, 1];
const C1: [u8; 6] = [0x02, 0x42, 10, 1, 0, 2];
const UPLINK_MAC: [u8; 6] = [0x02, 0xaa, 0, 0, 0, 2];
const ROUTER_MAC: [u8; 6] = [0x02, 0xbb, 0, 0, 0, 1];
const C1_IP: [u8; 4] = [10, 1, 0, 2];
const UPLINK_IP: [u8; 4] = [192, 0, 2, 2];
const REMOTE: [u8; 4] = [198, 51, 100, 10];
const UPLINK: PortId = PortId(9);

fn build(b: etherparse::PacketBuilderStep<etherparse::UdpHeader>, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

fn tcp(out: bool, flags: &str, payload: &[u8]) -> Vec<u8> {
    let b = if out {
        PacketBuilder::ethernet2(C1, GW)
            .ipv4(C1_IP, REMOTE, 64)
            .tcp(40001, 80, 1000, 64240)
    } else {
        PacketBuilder::ethernet2(ROUTER_MAC, UPLINK_MAC)
            .ipv4(REMOTE, UPLINK_IP, 64)
            .tcp(80, 40001, 5000, 64240)
    };
    let b = match flags {
        "syn" => b.syn(),
        "synack" => b.syn().ack(1001),
        _ => b.ack(if out { 5001 } else { 1001 }),
    };
    let mut v = Vec::new();
    b.write(&mut v, payload).unwrap();
    v
}

/// `whole` (an Ethernet/IPv4 frame) cut into two IPv4 fragments at `at` payload bytes.
fn fragments(whole: &[u8], at: usize, ident: u16) -> [Vec<u8>; 2] {
    let (eth, ip) = whole.split_at(14);
    let payload = &ip[20..];
    let frag = |data: &[u8], off: usize, more: bool| {
        let mut h = etherparse::Ipv4HeaderSlice::from_slice(ip)
            .unwrap()
            .to_header();
        h.identification = ident;
        h.dont_fragment = false;
        h.more_fragments = more;
        h.fragment_offset = etherparse::IpFragOffset::try_new((off / 8) as u16).unwrap();
        h.set_payload_len(data.len()).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut f = eth.to_vec();
        h.write(&mut f).unwrap();
        f.extend_from_slice(data);
        f
    };
    [
        frag(&payload[..at], 0, true),
        frag(&payload[at..], at, false),
    ]
}

#[test]
fn nat_allocates_nothing_per_packet() {
    let mut p = Pipeline::new();
    p.add_network(
        NetId(0),
        NetworkParams {
            fdb_limit: 8192,
            aging_ms: 300_000,
            gateway: Some(GatewayConfig {
                ip: "10.1.0.1".parse().unwrap(),
                mac: MacAddr(GW),
                subnet: "10.1.0.0/24".parse().unwrap(),
                arp_suppress: true,
                dhcp: None,
                dns_names: true,
                domain: "n.vswitch".into(),
                dns_forward: false,
            }),
            egress: true,
            vni: None,
            overlay_mtu: None,
            learn_peers: false,
            encrypted: false,
            icc: true,
            port_mac_limit: 0,
            gateway_rate: 0,
        },
    );
    let ep = Endpoint {
        mac: MacAddr(C1),
        ip: Some(Ipv4Addr::from(C1_IP)),
        names: vec!["c1".into()],
    };
    assert!(p.add_port(PortId(0), NetId(0), Some(ep)));
    assert!(p.set_uplink(
        UPLINK,
        UplinkConfig {
            mode: UplinkMode::Dedicated,
            ip: Ipv4Addr::from(UPLINK_IP),
            prefix_len: 24,
            mac: MacAddr(UPLINK_MAC),
            gateway: Some(Ipv4Addr::from([192, 0, 2, 1])),
            mtu: 1500,
            nat_ports: (61000, 65535),
            conntrack_max: 1024,
            conntrack_per_source: 65_536,
        }
    ));
    let mut emit = Vec::new();
    p.uplink_mut().unwrap().set_neighbor(
        0,
        Ipv4Addr::from([192, 0, 2, 1]),
        MacAddr(ROUTER_MAC),
        &mut emit,
    );

    let udp_out = build(
        PacketBuilder::ethernet2(C1, GW)
            .ipv4(C1_IP, REMOTE, 64)
            .udp(40000, 53),
        &[1u8; 512],
    );
    let udp_in = build(
        PacketBuilder::ethernet2(ROUTER_MAC, UPLINK_MAC)
            .ipv4(REMOTE, UPLINK_IP, 64)
            .udp(53, 40000),
        &[2u8; 512],
    );
    let mut ping = Vec::new();
    PacketBuilder::ethernet2(C1, GW)
        .ipv4(C1_IP, REMOTE, 64)
        .icmpv4_echo_request(7, 1)
        .write(&mut ping, &[3u8; 56])
        .unwrap();
    let mut pong = Vec::new();
    PacketBuilder::ethernet2(ROUTER_MAC, UPLINK_MAC)
        .ipv4(REMOTE, UPLINK_IP, 64)
        .icmpv4_echo_reply(7, 1)
        .write(&mut pong, &[3u8; 56])
        .unwrap();
    let big_out = build(
        PacketBuilder::ethernet2(C1, GW)
            .ipv4(C1_IP, REMOTE, 64)
            .udp(40002, 7),
        &[4u8; 2000],
    );
    let big_in = build(
        PacketBuilder::ethernet2(ROUTER_MAC, UPLINK_MAC)
            .ipv4(REMOTE, UPLINK_IP, 64)
            .udp(7, 40002),
        &[5u8; 2000],
    );
    let [frag_out1, frag_out2] = fragments(&big_out, 1480, 77);
    let [frag_in1, frag_in2] = fragments(&big_in, 1480, 88);
    // A TAP's TSO super-frame of the TCP flow (translated whole, pending checksum updated).
    let tso = tcp(true, "ack", &[6u8; 8000]);
    let tso_hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
    };

    // (port, frame, TAP header, where it must go)
    let steady: Vec<(PortId, Vec<u8>, Option<VnetHdr>, PortId)> = vec![
        (PortId(0), udp_out, None, UPLINK),
        (UPLINK, udp_in, None, PortId(0)),
        (PortId(0), ping, None, UPLINK),
        (UPLINK, pong, None, PortId(0)),
        (PortId(0), tcp(true, "ack", &[7u8; 1400]), None, UPLINK),
        (UPLINK, tcp(false, "ack", &[8u8; 1400]), None, PortId(0)),
        (PortId(0), tso, Some(tso_hdr), UPLINK),
        (PortId(0), frag_out1, None, UPLINK),
        (PortId(0), frag_out2, None, UPLINK),
        (UPLINK, frag_in1, None, PortId(0)),
        (UPLINK, frag_in2, None, PortId(0)),
    ];
    let mut actions = Actions::with_capacity(16);
    let mut buf = vec![0u8; 65536];
    // Warm-up: the TCP handshake, then every frame once (flows created, tables sized).
    for (port, f) in [
        (PortId(0), tcp(true, "syn", b"")),
        (UPLINK, tcp(false, "synack", b"")),
    ] {
        let b = &mut buf[..f.len()];
        b.copy_from_slice(&f);
        p.process(1, port, b, &mut actions);
        assert_eq!(actions.drop, None);
    }
    let run = |p: &mut Pipeline, actions: &mut Actions, buf: &mut [u8], now: u64| {
        let mut sent = 0;
        for (port, f, vnet, to) in &steady {
            let b = &mut buf[..f.len()];
            b.copy_from_slice(f);
            p.process_vnet(now, *port, b, vnet.as_ref(), actions);
            assert_eq!(actions.out, [*to], "{port:?} -> {to:?}: {:?}", actions.drop);
            sent += 1;
        }
        sent
    };
    for now in 2..10 {
        run(&mut p, &mut actions, &mut buf, now);
    }
    let before = p.uplink().unwrap().counters;
    start_counting();
    let mut sent = 0;
    for round in 0..10_000u64 {
        let now = 1000 + round;
        sent += run(&mut p, &mut actions, &mut buf, now);
        if round % 1000 == 0 {
            // The dataplane ages the tables every second.
            p.expire(now);
        }
    }
    let allocs = stop_counting();
    let after = p.uplink().unwrap().counters;
    assert_eq!(sent, 10_000 * steady.len());
    assert!(after.out_packets - before.out_packets >= 10_000 * 6);
    assert!(after.in_packets - before.in_packets >= 10_000 * 5);
    assert_eq!(
        p.uplink().unwrap().ct.len(),
        4,
        "UDP, ICMP, TCP, fragmented UDP"
    );
    assert_eq!(allocs, 0, "allocations on the NAT path");
}
