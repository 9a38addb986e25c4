//! Routing and masquerade through the pipeline, with frames built and checked by etherparse.

use std::net::Ipv4Addr;

use etherparse::{
    icmpv4, ArpEthIpv4Packet, ArpOperation, Icmpv4Type, NetSlice, PacketBuilder, SlicedPacket,
    TransportSlice,
};

use super::*;
use crate::switch::gateway::{Endpoint, GatewayConfig};
use crate::switch::{Actions, DropReason, NetId, NetworkParams, Pipeline, PortId};
use crate::wire::offload::{VnetHdr, F_NEEDS_CSUM, GSO_NONE};
use crate::wire::MacAddr;

const GW: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x01, 0x00, 0x01]);
const GW2: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x02, 0x00, 0x01]);
const C1: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x01, 0x00, 0x02]);
const C2: MacAddr = MacAddr([0x02, 0x42, 0x0a, 0x01, 0x00, 0x03]);
const UPLINK_MAC: MacAddr = MacAddr([0x02, 0xaa, 0, 0, 0, 2]);
const ROUTER_MAC: MacAddr = MacAddr([0x02, 0xbb, 0, 0, 0, 1]);
const UPLINK: PortId = PortId(9);
const UPLINK_IP: [u8; 4] = [192, 0, 2, 2];
const ROUTER_IP: [u8; 4] = [192, 0, 2, 1];
const REMOTE: [u8; 4] = [198, 51, 100, 10];
const C1_IP: [u8; 4] = [10, 1, 0, 2];
const C2_IP: [u8; 4] = [10, 1, 0, 3];

fn gateway(ip: [u8; 4], mac: MacAddr, subnet: &str) -> GatewayConfig {
    GatewayConfig {
        ip: Ipv4Addr::from(ip),
        mac,
        subnet: subnet.parse().unwrap(),
        arp_suppress: true,
        dhcp: None,
        dns_names: true,
        domain: "n.vswitch".into(),
        dns_forward: false,
    }
}

fn uplink_cfg(mtu: u16) -> UplinkConfig {
    UplinkConfig {
        mode: UplinkMode::Dedicated,
        ip: Ipv4Addr::from(UPLINK_IP),
        prefix_len: 24,
        mac: UPLINK_MAC,
        gateway: Some(Ipv4Addr::from(ROUTER_IP)),
        mtu,
        nat_ports: (61000, 65535),
        conntrack_max: 1024,
        conntrack_per_source: 0,
    }
}

/// Network 0 (10.1.0.0/24, ports 0 and 1 = C1 and C2), network 1 (10.2.0.0/24, internal, port
/// 2), the uplink on port 9 with its router's MAC known unless `resolved` is false.
fn setup(mtu: u16, resolved: bool) -> Pipeline {
    let mut p = Pipeline::new();
    p.add_network(
        NetId(0),
        NetworkParams {
            fdb_limit: 100,
            aging_ms: 300_000,
            gateway: Some(gateway([10, 1, 0, 1], GW, "10.1.0.0/24")),
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
    p.add_network(
        NetId(1),
        NetworkParams {
            fdb_limit: 100,
            aging_ms: 300_000,
            gateway: Some(gateway([10, 2, 0, 1], GW2, "10.2.0.0/24")),
            egress: false,
            vni: None,
            overlay_mtu: None,
            learn_peers: false,
            encrypted: false,
            icc: true,
            port_mac_limit: 0,
            gateway_rate: 0,
        },
    );
    for (port, mac, ip) in [(0, C1, C1_IP), (1, C2, C2_IP)] {
        let ep = Endpoint {
            mac,
            ip: Some(Ipv4Addr::from(ip)),
            names: vec![],
        };
        assert!(p.add_port(PortId(port), NetId(0), Some(ep)));
    }
    assert!(p.add_port(PortId(2), NetId(1), None));
    assert!(p.set_uplink(UPLINK, uplink_cfg(mtu)));
    if resolved {
        let mut emit = Vec::new();
        p.uplink_mut()
            .unwrap()
            .set_neighbor(0, Ipv4Addr::from(ROUTER_IP), ROUTER_MAC, &mut emit);
    }
    p
}

fn parse_arp(b: &[u8]) -> ArpEthIpv4Packet {
    etherparse::ArpPacketSlice::from_slice(b)
        .unwrap()
        .to_packet()
        .try_eth_ipv4()
        .unwrap()
}

fn udp(src: MacAddr, dst: MacAddr, sip: [u8; 4], dip: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip, dip, 64)
        .udp(sport, dport);
    let mut v = Vec::new();
    b.write(&mut v, b"hello, outside").unwrap();
    v
}

fn tcp_syn(
    src: MacAddr,
    dst: MacAddr,
    sip: [u8; 4],
    dip: [u8; 4],
    sport: u16,
    dport: u16,
    mss: u16,
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip, dip, 64)
        .tcp(sport, dport, 1000, 64240)
        .syn()
        .options(&[etherparse::TcpOptionElement::MaximumSegmentSize(mss)])
        .unwrap();
    let mut v = Vec::new();
    b.write(&mut v, b"").unwrap();
    v
}

fn ping(src: MacAddr, sip: [u8; 4], id: u16, seq: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, GW.0)
        .ipv4(sip, REMOTE, 64)
        .icmpv4_echo_request(id, seq);
    let mut v = Vec::new();
    b.write(&mut v, b"abcdefgh").unwrap();
    v
}

fn run(p: &mut Pipeline, port: PortId, frame: &mut [u8]) -> Actions {
    let mut a = Actions::with_capacity(8);
    p.process(1, port, frame, &mut a);
    a
}

/// Every checksum of an Ethernet/IPv4 frame is right (IP header, TCP/UDP/ICMP).
fn assert_valid(frame: &[u8]) {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &s.net else {
        panic!("not IPv4")
    };
    let h = ip.header().to_header();
    assert_eq!(
        h.header_checksum,
        h.calc_header_checksum(),
        "IP header checksum"
    );
    match &s.transport {
        Some(TransportSlice::Udp(u)) => {
            let hdr = u.to_header();
            assert_eq!(
                hdr.checksum,
                hdr.calc_checksum_ipv4(&h, u.payload()).unwrap(),
                "UDP"
            );
        }
        Some(TransportSlice::Tcp(t)) => {
            let hdr = t.to_header();
            assert_eq!(
                hdr.checksum,
                hdr.calc_checksum_ipv4(&h, t.payload()).unwrap(),
                "TCP"
            );
        }
        Some(TransportSlice::Icmpv4(i)) => {
            let hdr = i.header();
            assert_eq!(
                hdr.checksum,
                hdr.icmp_type.calc_checksum(i.payload()),
                "ICMP"
            );
        }
        _ => {}
    }
}

fn ip_of(frame: &[u8]) -> etherparse::Ipv4Header {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    let Some(NetSlice::Ipv4(ip)) = s.net else {
        panic!()
    };
    ip.header().to_header()
}

fn ports_of(frame: &[u8]) -> (u16, u16) {
    let s = SlicedPacket::from_ethernet(frame).unwrap();
    match s.transport.unwrap() {
        TransportSlice::Udp(u) => (u.source_port(), u.destination_port()),
        TransportSlice::Tcp(t) => (t.source_port(), t.destination_port()),
        TransportSlice::Icmpv4(i) => match i.icmp_type() {
            Icmpv4Type::EchoRequest(e) | Icmpv4Type::EchoReply(e) => (e.id, e.seq),
            _ => (0, 0),
        },
        _ => (0, 0),
    }
}

#[test]
fn udp_goes_out_masqueraded_and_its_reply_comes_back() {
    let mut p = setup(1500, true);
    let mut f = udp(C1, GW, C1_IP, REMOTE, 40000, 53);
    let a = run(&mut p, PortId(0), &mut f);
    assert_eq!(a.out, vec![UPLINK]);
    assert_eq!(&f[0..6], &ROUTER_MAC.0, "to the next hop");
    assert_eq!(&f[6..12], &UPLINK_MAC.0);
    let h = ip_of(&f);
    assert_eq!(h.source, UPLINK_IP);
    assert_eq!(h.destination, REMOTE);
    assert_eq!(h.time_to_live, 63);
    assert_valid(&f);
    // Dedicated mode keeps the container's port.
    assert_eq!(ports_of(&f), (40000, 53));

    let mut r = udp(ROUTER_MAC, UPLINK_MAC, REMOTE, UPLINK_IP, 53, 40000);
    let a = run(&mut p, UPLINK, &mut r);
    assert_eq!(
        a.out,
        vec![PortId(0)],
        "to C1's port (learnt from its frame)"
    );
    assert_eq!(&r[0..6], &C1.0);
    assert_eq!(&r[6..12], &GW.0, "from the gateway");
    let h = ip_of(&r);
    assert_eq!(h.destination, C1_IP);
    assert_eq!(h.time_to_live, 63);
    assert_valid(&r);
    let e = p.uplink().unwrap().ct.entries(1, None, 10);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].state, conntrack::State::Replied);
}

#[test]
fn clashing_ports_and_icmp_identifiers_are_translated_apart() {
    let mut p = setup(1500, true);
    // Two containers, same source port, same destination.
    let mut f1 = udp(C1, GW, C1_IP, REMOTE, 40000, 53);
    let mut f2 = udp(C2, GW, C2_IP, REMOTE, 40000, 53);
    run(&mut p, PortId(0), &mut f1);
    run(&mut p, PortId(1), &mut f2);
    let (p1, p2) = (ports_of(&f1).0, ports_of(&f2).0);
    assert_eq!(p1, 40000);
    assert!(
        (61000..=65535).contains(&p2),
        "second gets a NAT port: {p2}"
    );
    assert_valid(&f2);
    let mut r2 = udp(ROUTER_MAC, UPLINK_MAC, REMOTE, UPLINK_IP, 53, p2);
    let a = run(&mut p, UPLINK, &mut r2);
    assert_eq!(a.out, vec![PortId(1)]);
    assert_eq!(ip_of(&r2).destination, C2_IP);
    assert_eq!(ports_of(&r2).1, 40000);
    assert_valid(&r2);

    // Ping with one identifier from both: each gets its own replies.
    let mut e1 = ping(C1, C1_IP, 7, 1);
    let mut e2 = ping(C2, C2_IP, 7, 1);
    run(&mut p, PortId(0), &mut e1);
    run(&mut p, PortId(1), &mut e2);
    let (id1, id2) = (ports_of(&e1).0, ports_of(&e2).0);
    assert_ne!(id1, id2);
    assert_valid(&e1);
    assert_valid(&e2);
    for (id, port, ip) in [(id1, PortId(0), C1_IP), (id2, PortId(1), C2_IP)] {
        let b = PacketBuilder::ethernet2(ROUTER_MAC.0, UPLINK_MAC.0)
            .ipv4(REMOTE, UPLINK_IP, 60)
            .icmpv4_echo_reply(id, 1);
        let mut r = Vec::new();
        b.write(&mut r, b"abcdefgh").unwrap();
        let a = run(&mut p, UPLINK, &mut r);
        assert_eq!(a.out, vec![port]);
        assert_eq!(ip_of(&r).destination, ip);
        assert_eq!(ports_of(&r).0, 7, "the container's own identifier");
        assert_valid(&r);
    }
}

#[test]
fn the_first_packet_waits_for_the_next_hop_arp() {
    let mut p = setup(1500, false);
    let mut f = tcp_syn(C1, GW, C1_IP, REMOTE, 40000, 80, 1460);
    let a = run(&mut p, PortId(0), &mut f);
    assert!(a.out.is_empty());
    assert_eq!(a.drop, None, "queued, not dropped");
    assert_eq!(a.emit.len(), 1, "an ARP request");
    let (port, req) = &a.emit[0];
    assert_eq!(*port, UPLINK);
    assert_eq!(&req[0..6], &[0xff; 6]);
    let arp = parse_arp(&req[14..]);
    assert_eq!(arp.operation, ArpOperation::REQUEST);
    assert_eq!(arp.target_ipv4, ROUTER_IP);
    assert_eq!(arp.sender_ipv4, UPLINK_IP);

    // The router answers: the SYN goes out.
    let answer = ArpEthIpv4Packet {
        operation: ArpOperation::REPLY,
        sender_mac: ROUTER_MAC.0,
        sender_ipv4: ROUTER_IP,
        target_mac: UPLINK_MAC.0,
        target_ipv4: UPLINK_IP,
    };
    let mut r = Vec::new();
    r.extend_from_slice(&UPLINK_MAC.0);
    r.extend_from_slice(&ROUTER_MAC.0);
    r.extend_from_slice(&0x0806u16.to_be_bytes());
    r.extend_from_slice(&answer.to_bytes());
    let a = run(&mut p, UPLINK, &mut r);
    assert_eq!(a.emit.len(), 1);
    let (port, syn) = &a.emit[0];
    assert_eq!(*port, UPLINK);
    assert_eq!(&syn[0..6], &ROUTER_MAC.0);
    assert_eq!(ip_of(syn).source, UPLINK_IP);
    assert_valid(syn);
}

#[test]
fn shared_mode_asks_the_hosts_table_and_keeps_to_its_port_range() {
    let mut p = setup(1500, false);
    let mut cfg = uplink_cfg(1500);
    cfg.mode = UplinkMode::Shared;
    cfg.nat_ports = (62000, 62009);
    p.remove_port(UPLINK);
    assert!(p.set_uplink(UPLINK, cfg));
    let mut f = udp(C1, GW, C1_IP, REMOTE, 40000, 53);
    let a = run(&mut p, PortId(0), &mut f);
    assert!(a.out.is_empty() && a.drop.is_none(), "queued");
    assert!(
        a.emit.is_empty(),
        "no ARP of its own from the host's address"
    );
    let u = p.uplink_mut().unwrap();
    assert_eq!(
        u.wanted,
        vec![Ipv4Addr::from(ROUTER_IP)],
        "the host is asked"
    );
    u.wanted.clear();
    // Asked again only after a second.
    let mut f = udp(C1, GW, C1_IP, REMOTE, 40001, 53);
    run(&mut p, PortId(0), &mut f);
    assert!(p.uplink_mut().unwrap().wanted.is_empty());
    // The host's table answers: both datagrams go, from ports of the range only (the
    // container's own 40000 is the host's to use).
    let mut emit = Vec::new();
    p.uplink_mut()
        .unwrap()
        .set_neighbor(2, Ipv4Addr::from(ROUTER_IP), ROUTER_MAC, &mut emit);
    assert_eq!(emit.len(), 2);
    for (port, frame) in &emit {
        assert_eq!(*port, UPLINK);
        assert_eq!(&frame[0..6], &ROUTER_MAC.0);
        let (sport, _) = ports_of(frame);
        assert!((62000..=62009).contains(&sport), "port {sport}");
        assert_valid(frame);
    }
    // A neighbour the host forgot is asked for again.
    p.uplink_mut()
        .unwrap()
        .forget_neighbor(Ipv4Addr::from(ROUTER_IP));
    let mut f = udp(C1, GW, C1_IP, REMOTE, 40002, 53);
    let a = run(&mut p, PortId(0), &mut f);
    assert!(a.out.is_empty());
    assert_eq!(p.uplink().unwrap().wanted.len(), 1);
}

#[test]
fn a_dedicated_uplink_announces_its_address_and_a_shared_one_does_not() {
    let mut p = setup(1500, true);
    let mut emit = Vec::new();
    p.uplink_mut().unwrap().announce(&mut emit);
    assert_eq!(emit.len(), 1);
    let (port, f) = &emit[0];
    assert_eq!(*port, UPLINK);
    assert_eq!(&f[0..6], &[0xff; 6], "broadcast");
    assert_eq!(&f[6..12], &UPLINK_MAC.0);
    let arp = parse_arp(&f[14..]);
    assert_eq!(arp.operation, ArpOperation::REQUEST);
    assert_eq!(arp.sender_mac, UPLINK_MAC.0);
    assert_eq!(arp.sender_ipv4, UPLINK_IP);
    assert_eq!(arp.target_ipv4, UPLINK_IP, "for its own address");

    let mut cfg = uplink_cfg(1500);
    cfg.mode = UplinkMode::Shared;
    p.remove_port(UPLINK);
    assert!(p.set_uplink(UPLINK, cfg));
    let mut emit = Vec::new();
    p.uplink_mut().unwrap().announce(&mut emit);
    assert!(
        emit.is_empty(),
        "the host's address is the host's to announce"
    );
}

#[test]
fn arp_and_ping_for_the_uplink_address_are_answered() {
    let mut p = setup(1500, true);
    let ask = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: ROUTER_MAC.0,
        sender_ipv4: ROUTER_IP,
        target_mac: [0; 6],
        target_ipv4: UPLINK_IP,
    };
    let mut r = Vec::new();
    r.extend_from_slice(&[0xff; 6]);
    r.extend_from_slice(&ROUTER_MAC.0);
    r.extend_from_slice(&0x0806u16.to_be_bytes());
    r.extend_from_slice(&ask.to_bytes());
    let a = run(&mut p, UPLINK, &mut r);
    let arp = parse_arp(&a.reply[14..]);
    assert_eq!(arp.operation, ArpOperation::REPLY);
    assert_eq!(arp.sender_mac, UPLINK_MAC.0);
    assert_eq!(arp.sender_ipv4, UPLINK_IP);

    let b = PacketBuilder::ethernet2(ROUTER_MAC.0, UPLINK_MAC.0)
        .ipv4(ROUTER_IP, UPLINK_IP, 64)
        .icmpv4_echo_request(1, 1);
    let mut echo = Vec::new();
    b.write(&mut echo, b"x").unwrap();
    let a = run(&mut p, UPLINK, &mut echo);
    assert_eq!(ip_of(&a.reply).destination, ROUTER_IP);
    assert_valid(&a.reply);
}

#[test]
fn ttl_one_gets_time_exceeded_from_the_gateway() {
    let mut p = setup(1500, true);
    let b = PacketBuilder::ethernet2(C1.0, GW.0)
        .ipv4(C1_IP, REMOTE, 1)
        .udp(33434, 33434);
    let mut f = Vec::new();
    b.write(&mut f, b"trace").unwrap();
    let a = run(&mut p, PortId(0), &mut f);
    assert!(a.out.is_empty());
    let s = SlicedPacket::from_ethernet(&a.reply).unwrap();
    let Some(TransportSlice::Icmpv4(i)) = s.transport else {
        panic!()
    };
    assert_eq!(
        i.icmp_type(),
        Icmpv4Type::TimeExceeded(icmpv4::TimeExceededCode::TtlExceededInTransit)
    );
    let h = ip_of(&a.reply);
    assert_eq!(h.source, [10, 1, 0, 1], "from the gateway");
    assert_eq!(h.destination, C1_IP);
    assert_eq!(&a.reply[0..6], &C1.0);
    assert_valid(&a.reply);
}

#[test]
fn too_big_with_df_gets_fragmentation_needed_and_syn_mss_is_clamped() {
    let mut p = setup(1400, true);
    let b = PacketBuilder::ethernet2(C1.0, GW.0)
        .ipv4(C1_IP, REMOTE, 64)
        .udp(40000, 9);
    let mut f = Vec::new();
    b.write(&mut f, &[0u8; 1450]).unwrap();
    // etherparse sets DF by default.
    let a = run(&mut p, PortId(0), &mut f);
    assert!(a.out.is_empty());
    let s = SlicedPacket::from_ethernet(&a.reply).unwrap();
    let Some(TransportSlice::Icmpv4(i)) = s.transport else {
        panic!()
    };
    assert_eq!(
        i.icmp_type(),
        Icmpv4Type::DestinationUnreachable(icmpv4::DestUnreachableHeader::FragmentationNeeded {
            next_hop_mtu: 1400
        })
    );

    let mut syn = tcp_syn(C1, GW, C1_IP, REMOTE, 40001, 80, 1460);
    let a = run(&mut p, PortId(0), &mut syn);
    assert_eq!(a.out, vec![UPLINK]);
    assert_valid(&syn);
    let s = SlicedPacket::from_ethernet(&syn).unwrap();
    let Some(TransportSlice::Tcp(t)) = s.transport else {
        panic!()
    };
    let mss: Vec<_> = t
        .options_iterator()
        .filter_map(|o| match o {
            Ok(etherparse::TcpOptionElement::MaximumSegmentSize(m)) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(mss, vec![1360]);
    assert_eq!(p.uplink().unwrap().counters.mss_clamped, 1);
}

#[test]
fn icmp_errors_reach_the_container_with_their_quote_restored() {
    let mut p = setup(1500, true);
    let mut f = udp(C2, GW, C2_IP, REMOTE, 40000, 9999);
    let mut first = udp(C1, GW, C1_IP, REMOTE, 40000, 9999);
    run(&mut p, PortId(0), &mut first); // C1 keeps 40000; C2 gets a NAT port
    run(&mut p, PortId(1), &mut f);
    let nat_port = ports_of(&f).0;
    assert_ne!(nat_port, 40000);
    // The remote answers port unreachable, quoting what it got (the translated packet).
    let quote = &f[14..14 + 28];
    let b = PacketBuilder::ethernet2(ROUTER_MAC.0, UPLINK_MAC.0)
        .ipv4(REMOTE, UPLINK_IP, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::Port,
        ));
    let mut err = Vec::new();
    b.write(&mut err, quote).unwrap();
    let a = run(&mut p, UPLINK, &mut err);
    assert_eq!(a.out, vec![PortId(1)]);
    assert_valid(&err);
    assert_eq!(ip_of(&err).destination, C2_IP);
    // The quoted packet is what C2 sent: its address and port, a valid header checksum.
    let inner = etherparse::Ipv4HeaderSlice::from_slice(&err[14 + 20 + 8..]).unwrap();
    assert_eq!(inner.source(), C2_IP);
    assert_eq!(
        inner.to_header().calc_header_checksum(),
        inner.header_checksum()
    );
    let q = &err[14 + 20 + 8 + 20..];
    assert_eq!(u16::from_be_bytes([q[0], q[1]]), 40000);
    // The quoted UDP checksum is C2's original one.
    assert_eq!(
        &q[6..8],
        &udp(C2, GW, C2_IP, REMOTE, 40000, 9999)[14 + 26..14 + 28]
    );
    assert_eq!(p.uplink().unwrap().counters.icmp_errors_in, 1);
}

#[test]
fn internal_networks_and_other_networks_are_not_routed() {
    let mut p = setup(1500, true);
    // From the internal network 1.
    let mut f = udp(
        MacAddr([2, 0x42, 10, 2, 0, 5]),
        GW2,
        [10, 2, 0, 5],
        REMOTE,
        1,
        2,
    );
    let a = run(&mut p, PortId(2), &mut f);
    assert_eq!(a.drop, Some(DropReason::Internal));
    // From network 0 to network 1's subnet through the gateway.
    let mut f = udp(C1, GW, C1_IP, [10, 2, 0, 5], 1, 2);
    let a = run(&mut p, PortId(0), &mut f);
    assert_eq!(a.drop, Some(DropReason::Isolated));
    assert_eq!(
        p.port_counters(PortId(0)).unwrap().drops[DropReason::Isolated as usize],
        1
    );
    // Unknown flows from outside are counted on the uplink.
    let mut r = udp(ROUTER_MAC, UPLINK_MAC, REMOTE, UPLINK_IP, 53, 1234);
    let a = run(&mut p, UPLINK, &mut r);
    assert_eq!(a.drop, Some(DropReason::NoConntrack));
    assert_eq!(
        p.port_counters(UPLINK).unwrap().drops[DropReason::NoConntrack as usize],
        1
    );
}

#[test]
fn fragments_follow_their_first_fragment_both_ways() {
    let mut p = setup(1500, true);
    // A 2952-byte UDP datagram in two full fragments, built by hand from one etherparse packet.
    let b = PacketBuilder::ipv4(C1_IP, REMOTE, 64).udp(40000, 7);
    let mut whole = Vec::new();
    b.write(&mut whole, &[7u8; 2952]).unwrap();
    let frag = |ip: &[u8], l3: &[u8], off: usize, more: bool, src: MacAddr, dst: MacAddr| {
        let mut h = etherparse::Ipv4HeaderSlice::from_slice(ip)
            .unwrap()
            .to_header();
        h.identification = 4242;
        h.dont_fragment = false;
        h.more_fragments = more;
        h.fragment_offset = etherparse::IpFragOffset::try_new((off / 8) as u16).unwrap();
        h.set_payload_len(l3.len()).unwrap();
        h.header_checksum = h.calc_header_checksum();
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        h.write(&mut f).unwrap();
        f.extend_from_slice(l3);
        f
    };
    let l4 = &whole[20..];
    let mut f1 = frag(&whole, &l4[..1480], 0, true, C1, GW);
    let mut f2 = frag(&whole, &l4[1480..], 1480, false, C1, GW);
    let a = run(&mut p, PortId(0), &mut f1);
    assert_eq!((a.out, a.drop), (vec![UPLINK], None));
    assert_eq!(run(&mut p, PortId(0), &mut f2).out, vec![UPLINK]);
    assert_eq!(ip_of(&f2).source, UPLINK_IP);
    // A later fragment of a datagram never seen is dropped, not sent with the wrong address.
    let mut stray = frag(&whole, &l4[1480..], 1480, false, C2, GW);
    stray[14 + 4] = 0x99; // another IP id
    let stray_len = stray.len();
    let _ = stray_len;
    let a = run(&mut p, PortId(1), &mut stray);
    assert_eq!(a.drop, Some(DropReason::BadFragment));

    // The reply, fragmented the same way from the remote.
    let b = PacketBuilder::ipv4(REMOTE, UPLINK_IP, 64).udp(7, 40000);
    let mut back = Vec::new();
    b.write(&mut back, &[9u8; 2952]).unwrap();
    let l4 = &back[20..];
    let mut r1 = frag(&back, &l4[..1480], 0, true, ROUTER_MAC, UPLINK_MAC);
    let mut r2 = frag(&back, &l4[1480..], 1480, false, ROUTER_MAC, UPLINK_MAC);
    assert_eq!(run(&mut p, UPLINK, &mut r1).out, vec![PortId(0)]);
    assert_eq!(run(&mut p, UPLINK, &mut r2).out, vec![PortId(0)]);
    for r in [&r1, &r2] {
        let h = ip_of(r);
        assert_eq!(h.destination, C1_IP);
        assert_eq!(h.header_checksum, h.calc_header_checksum());
    }
    // Reassembled, the datagram's UDP checksum holds for the container's address.
    let mut data = r1[14 + 20..].to_vec();
    data.extend_from_slice(&r2[14 + 20..]);
    let udp_h = etherparse::UdpHeaderSlice::from_slice(&data)
        .unwrap()
        .to_header();
    let mut ph = ip_of(&r1);
    ph.more_fragments = false;
    ph.fragment_offset = etherparse::IpFragOffset::ZERO;
    assert_eq!(
        udp_h.calc_checksum_ipv4(&ph, &data[8..]).unwrap(),
        udp_h.checksum
    );
}

#[test]
fn a_pending_checksum_is_updated_as_a_pseudo_header_sum() {
    let mut p = setup(1500, true);
    let mut f = tcp_syn(C1, GW, C1_IP, REMOTE, 40000, 80, 1460);
    // What a TAP with checksum offload delivers: the pseudo-header sum in the checksum field.
    let pseudo = |src: [u8; 4], len: u16| {
        let mut b = Vec::new();
        b.extend_from_slice(&src);
        b.extend_from_slice(&REMOTE);
        b.extend_from_slice(&[0, 6]);
        b.extend_from_slice(&len.to_be_bytes());
        crate::wire::checksum::fold(crate::wire::checksum::sum16(&b, 0))
    };
    let tcp_len = (f.len() - 34) as u16;
    f[34 + 16..34 + 18].copy_from_slice(&pseudo(C1_IP, tcp_len).to_be_bytes());
    let vnet = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 34,
        csum_offset: 16,
    };
    let mut a = Actions::with_capacity(4);
    p.process_vnet(1, PortId(0), &mut f, Some(&vnet), &mut a);
    assert_eq!(a.out, vec![UPLINK]);
    assert_eq!(
        u16::from_be_bytes([f[50], f[51]]),
        pseudo(UPLINK_IP, tcp_len),
        "the field holds the new pseudo-header sum"
    );
    let h = ip_of(&f);
    assert_eq!(h.header_checksum, h.calc_header_checksum());
}

#[test]
fn no_uplink_means_no_route_and_a_full_table_refuses_new_flows() {
    let mut p = setup(1500, true);
    let mut cfg = uplink_cfg(1500);
    cfg.conntrack_max = 1;
    p.remove_port(UPLINK);
    let mut f = udp(C1, GW, C1_IP, REMOTE, 1, 2);
    assert_eq!(
        run(&mut p, PortId(0), &mut f).drop,
        Some(DropReason::NoRoute)
    );
    assert!(p.set_uplink(UPLINK, cfg));
    let mut emit = Vec::new();
    p.uplink_mut()
        .unwrap()
        .set_neighbor(0, Ipv4Addr::from(ROUTER_IP), ROUTER_MAC, &mut emit);
    let mut f = udp(C1, GW, C1_IP, REMOTE, 1, 2);
    assert_eq!(run(&mut p, PortId(0), &mut f).out, vec![UPLINK]);
    let mut g = udp(C1, GW, C1_IP, REMOTE, 3, 4);
    assert_eq!(
        run(&mut p, PortId(0), &mut g).drop,
        Some(DropReason::ConntrackFull)
    );
    // The existing flow keeps going.
    let mut f = udp(C1, GW, C1_IP, REMOTE, 1, 2);
    assert_eq!(run(&mut p, PortId(0), &mut f).out, vec![UPLINK]);
}

/// Mutated copies of real frames (bytes flipped, cut short, lengths and offsets overwritten)
/// from both sides: each is a counted drop or a translation, never a panic.
#[test]
fn mangled_frames_from_either_side_never_panic() {
    let mut p = setup(1500, true);
    // Live flows for the mutants to hit: UDP, TCP, ICMP echo, and their replies.
    let mut seeds = vec![
        (PortId(0), udp(C1, GW, C1_IP, REMOTE, 40000, 53)),
        (PortId(0), tcp_syn(C1, GW, C1_IP, REMOTE, 40001, 80, 1460)),
        (PortId(0), ping(C1, C1_IP, 7, 1)),
        (
            UPLINK,
            udp(ROUTER_MAC, UPLINK_MAC, REMOTE, UPLINK_IP, 53, 40000),
        ),
        (
            UPLINK,
            tcp_syn(ROUTER_MAC, UPLINK_MAC, REMOTE, UPLINK_IP, 80, 40001, 1460),
        ),
    ];
    for (port, f) in seeds.clone().iter_mut() {
        run(&mut p, *port, f);
    }
    // An ICMP error quoting the UDP flow, as the remote would send it.
    let mut out = udp(C1, GW, C1_IP, REMOTE, 40000, 53);
    run(&mut p, PortId(0), &mut out);
    let b = PacketBuilder::ethernet2(ROUTER_MAC.0, UPLINK_MAC.0)
        .ipv4(REMOTE, UPLINK_IP, 64)
        .icmpv4(Icmpv4Type::DestinationUnreachable(
            icmpv4::DestUnreachableHeader::Port,
        ));
    let mut err = Vec::new();
    b.write(&mut err, &out[14..14 + 28]).unwrap();
    seeds.push((UPLINK, err));

    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    // The same with the next hop unresolved: frames wait, their offload finished first.
    let mut q = setup(1500, false);
    let mut a = Actions::with_capacity(8);
    let (mut out_frames, mut drops) = (0, 0);
    for round in 0..200_000u64 {
        let (port, seed) = &seeds[(rnd() % seeds.len() as u64) as usize];
        let mut f = seed.clone();
        for _ in 0..1 + rnd() % 4 {
            let at = 14 + (rnd() as usize) % (f.len() - 14);
            match rnd() % 4 {
                0 => f[at] = rnd() as u8,
                1 => f[at] ^= 1 << (rnd() % 8),
                // Header length, total length, flags/offset, TCP data offset: the fields
                // a length check hangs on.
                2 => {
                    let fields = [14, 16, 17, 20, 21, 14 + 20 + 12, 14 + 20 + 4, 14 + 20 + 5];
                    let i = fields[(rnd() as usize) % fields.len()];
                    if i < f.len() {
                        f[i] = rnd() as u8;
                    }
                }
                _ => f.truncate(14 + (rnd() as usize) % (f.len() - 13)),
            }
            if f.len() <= 14 {
                break;
            }
        }
        let now = 1 + round / 1000;
        // Some come from a TAP with offloads: checksum pending, or a TSO super-frame.
        let vnet = (*port != UPLINK && rnd() % 3 == 0).then(|| VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: [GSO_NONE, crate::wire::offload::GSO_TCPV4][(rnd() % 2) as usize],
            hdr_len: (rnd() % 80) as u16,
            gso_size: (rnd() % 1500) as u16,
            csum_start: (rnd() % 60) as u16,
            csum_offset: [6, 16, (rnd() % 40) as u16][(rnd() % 3) as usize],
        });
        let pipe = if rnd() % 4 == 0 { &mut q } else { &mut p };
        pipe.process_vnet(now, *port, &mut f, vnet.as_ref(), &mut a);
        out_frames += a.out.len();
        drops += usize::from(a.drop.is_some());
        a.emit.clear();
        if round % 10_000 == 0 {
            q.expire(now);
        }
    }
    assert!(
        out_frames > 1000 && drops > 1000,
        "{out_frames} out, {drops} dropped"
    );
}

#[test]
fn tcp_with_a_bad_data_offset_is_a_bad_ip_drop_both_ways() {
    let mut p = setup(1500, true);
    let mut syn = tcp_syn(C1, GW, C1_IP, REMOTE, 40000, 80, 1460);
    assert_eq!(run(&mut p, PortId(0), &mut syn).out, vec![UPLINK]);
    // From outside, for the live flow: a data offset under the header (2 words) and one past
    // the end of the segment (15 words in a 24-byte segment) — an RST that would close it.
    for doff in [2u8, 15] {
        let b = PacketBuilder::ethernet2(ROUTER_MAC.0, UPLINK_MAC.0)
            .ipv4(REMOTE, UPLINK_IP, 64)
            .tcp(80, 40000, 1, 64240)
            .rst();
        let mut r = Vec::new();
        b.write(&mut r, b"").unwrap();
        r[14 + 20 + 12] = doff << 4;
        let a = run(&mut p, UPLINK, &mut r);
        assert_eq!(a.drop, Some(DropReason::BadIp), "doff {doff}");
        assert!(a.out.is_empty());
    }
    let e = p.uplink().unwrap().ct.entries(1, None, 10);
    assert_eq!(
        e[0].state,
        conntrack::State::SynSent,
        "the flow is untouched"
    );
    assert_eq!(e[0].packets[1], 0);
    assert_eq!(
        p.port_counters(UPLINK).unwrap().drops[DropReason::BadIp as usize],
        2
    );
    // From the container, in a first fragment (which the gateway's parser does not look into).
    let mut f = tcp_syn(C1, GW, C1_IP, REMOTE, 40002, 80, 1460);
    f[14 + 6] = 0x20; // MF
    f[14 + 20 + 12] = 1 << 4;
    let h = ip_of(&f);
    let c = h.calc_header_checksum();
    f[14 + 10..14 + 12].copy_from_slice(&c.to_be_bytes());
    let a = run(&mut p, PortId(0), &mut f);
    assert_eq!(a.drop, Some(DropReason::BadIp));
    assert_eq!(p.uplink().unwrap().ct.len(), 1, "no flow for it");
}

fn tcp_seg(
    src: MacAddr,
    dst: MacAddr,
    sip: [u8; 4],
    dip: [u8; 4],
    (sport, dport): (u16, u16),
    syn: bool,
    ack: bool,
) -> Vec<u8> {
    let mut b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip, dip, 64)
        .tcp(sport, dport, 1000, 64240);
    if syn {
        b = b.syn();
    }
    if ack {
        b = b.ack(1);
    }
    let mut v = Vec::new();
    b.write(&mut v, b"payload").unwrap();
    v
}

/// C1 (10.1.0.2) publishes TCP and UDP 8080 as its port 80.
fn publish_c1(p: &mut Pipeline) {
    let t = dnat::Target {
        net: NetId(0),
        ip: Ipv4Addr::from(C1_IP),
        mac: C1,
        port: 80,
        gateway: Ipv4Addr::new(10, 1, 0, 1),
    };
    let rules = [PROTO_TCP, PROTO_UDP].map(|proto| dnat::Rule {
        proto,
        host_port: 8080,
        target: t,
    });
    p.uplink_mut().unwrap().published.set(&rules);
}

#[test]
fn a_published_port_reaches_its_container_with_the_clients_address() {
    let mut p = setup(1500, true);
    publish_c1(&mut p);
    // C1 is known on its port (it has sent something).
    run(&mut p, PortId(0), &mut udp(C1, GW, C1_IP, REMOTE, 1, 53));
    // A SYN from outside to 8080 goes to C1:80 from the client's own address.
    let mut syn = tcp_seg(
        ROUTER_MAC,
        UPLINK_MAC,
        REMOTE,
        UPLINK_IP,
        (50000, 8080),
        true,
        false,
    );
    let a = run(&mut p, UPLINK, &mut syn);
    assert_eq!(a.out, vec![PortId(0)]);
    assert_eq!(&syn[0..6], &C1.0);
    assert_eq!(&syn[6..12], &GW.0);
    let h = ip_of(&syn);
    assert_eq!(h.source, REMOTE, "the real client address");
    assert_eq!(h.destination, C1_IP);
    assert_eq!(ports_of(&syn), (50000, 80));
    assert_valid(&syn);
    // C1's SYN-ACK goes out from the uplink's address and the published port.
    let mut sa = tcp_seg(C1, GW, C1_IP, REMOTE, (80, 50000), true, true);
    let a = run(&mut p, PortId(0), &mut sa);
    assert_eq!(a.out, vec![UPLINK]);
    assert_eq!(ip_of(&sa).source, UPLINK_IP);
    assert_eq!(ports_of(&sa), (8080, 50000));
    assert_valid(&sa);
    let mut ack = tcp_seg(
        ROUTER_MAC,
        UPLINK_MAC,
        REMOTE,
        UPLINK_IP,
        (50000, 8080),
        false,
        true,
    );
    assert_eq!(run(&mut p, UPLINK, &mut ack).out, vec![PortId(0)]);
    let e: Vec<_> = p
        .uplink()
        .unwrap()
        .ct
        .entries(1, None, 10)
        .into_iter()
        .filter(|e| e.kind == conntrack::Kind::Dnat)
        .collect();
    assert_eq!(e.len(), 1);
    assert_eq!(
        e[0].state,
        conntrack::State::Established,
        "opened from outside"
    );
    assert_eq!(p.uplink().unwrap().ct.counters.dnat_created, 1);

    // Only a SYN opens a TCP flow; an unpublished port is nobody's; UDP opens one.
    let mut stray = tcp_seg(
        ROUTER_MAC,
        UPLINK_MAC,
        REMOTE,
        UPLINK_IP,
        (50001, 8080),
        false,
        true,
    );
    assert_eq!(
        run(&mut p, UPLINK, &mut stray).drop,
        Some(DropReason::NoConntrack)
    );
    let mut other = tcp_seg(
        ROUTER_MAC,
        UPLINK_MAC,
        REMOTE,
        UPLINK_IP,
        (50001, 8081),
        true,
        false,
    );
    assert_eq!(
        run(&mut p, UPLINK, &mut other).drop,
        Some(DropReason::NoConntrack)
    );
    let mut u = udp(ROUTER_MAC, UPLINK_MAC, REMOTE, UPLINK_IP, 5353, 8080);
    assert_eq!(run(&mut p, UPLINK, &mut u).out, vec![PortId(0)]);
    assert_eq!(ports_of(&u), (5353, 80));
    assert_valid(&u);

    // Unpublished: new flows stop, the established one goes on.
    p.uplink_mut().unwrap().published.set(&[]);
    let mut again = tcp_seg(
        ROUTER_MAC,
        UPLINK_MAC,
        REMOTE,
        UPLINK_IP,
        (50002, 8080),
        true,
        false,
    );
    assert_eq!(
        run(&mut p, UPLINK, &mut again).drop,
        Some(DropReason::NoConntrack)
    );
    let mut ack = tcp_seg(
        ROUTER_MAC,
        UPLINK_MAC,
        REMOTE,
        UPLINK_IP,
        (50000, 8080),
        false,
        true,
    );
    assert_eq!(run(&mut p, UPLINK, &mut ack).out, vec![PortId(0)]);
}

#[test]
fn hairpin_flows_go_through_the_publishing_containers_gateway_and_back() {
    let mut p = setup(1500, true);
    publish_c1(&mut p);
    run(&mut p, PortId(0), &mut udp(C1, GW, C1_IP, REMOTE, 1, 53));
    // C2 connects to the uplink's address at 8080.
    let mut syn = tcp_seg(C2, GW, C2_IP, UPLINK_IP, (40000, 8080), true, false);
    let a = run(&mut p, PortId(1), &mut syn);
    assert_eq!(a.out, vec![PortId(0)], "to C1");
    assert_eq!(&syn[0..6], &C1.0);
    assert_eq!(&syn[6..12], &GW.0);
    let h = ip_of(&syn);
    assert_eq!(h.source, [10, 1, 0, 1], "from C1's gateway");
    assert_eq!(h.destination, C1_IP);
    let (gport, dport) = ports_of(&syn);
    assert_eq!(dport, 80);
    assert!((61000..=65535).contains(&gport));
    assert_valid(&syn);
    // C1 answers its gateway; C2 gets it from the published address.
    let mut sa = tcp_seg(C1, GW, C1_IP, [10, 1, 0, 1], (80, gport), true, true);
    let a = run(&mut p, PortId(0), &mut sa);
    assert_eq!(a.out, vec![PortId(1)], "to C2");
    assert_eq!(&sa[0..6], &C2.0);
    let h = ip_of(&sa);
    assert_eq!(h.source, UPLINK_IP);
    assert_eq!(h.destination, C2_IP);
    assert_eq!(ports_of(&sa), (8080, 40000));
    assert_valid(&sa);
    let mut ack = tcp_seg(C2, GW, C2_IP, UPLINK_IP, (40000, 8080), false, true);
    assert_eq!(run(&mut p, PortId(1), &mut ack).out, vec![PortId(0)]);
    let e = p.uplink().unwrap().ct.entries(1, None, 10);
    let hp: Vec<_> = e
        .iter()
        .filter(|e| e.kind == conntrack::Kind::Hairpin)
        .collect();
    assert_eq!(hp.len(), 1);
    assert_eq!(hp[0].state, conntrack::State::Established);

    // C1 reaching its own published port: back to itself, from its gateway.
    let mut own = tcp_seg(C1, GW, C1_IP, UPLINK_IP, (41000, 8080), true, false);
    let a = run(&mut p, PortId(0), &mut own);
    assert_eq!(a.out, vec![PortId(0)]);
    assert_eq!(ip_of(&own).source, [10, 1, 0, 1]);
    assert_eq!(ip_of(&own).destination, C1_IP);
    let (g2, _) = ports_of(&own);
    assert_ne!(g2, gport);
    let mut back = tcp_seg(C1, GW, C1_IP, [10, 1, 0, 1], (80, g2), true, true);
    let a = run(&mut p, PortId(0), &mut back);
    assert_eq!(a.out, vec![PortId(0)]);
    assert_eq!(ip_of(&back).source, UPLINK_IP);
    assert_eq!(ports_of(&back), (8080, 41000));

    // TCP to the gateway's address for no flow is still no route; a flush forgets hairpins.
    let mut stray = tcp_seg(C1, GW, C1_IP, [10, 1, 0, 1], (80, 1234), false, true);
    assert_eq!(
        run(&mut p, PortId(0), &mut stray).drop,
        Some(DropReason::NoRoute)
    );
    p.uplink_mut().unwrap().ct.flush(None);
    let mut late = tcp_seg(C1, GW, C1_IP, [10, 1, 0, 1], (80, gport), false, true);
    assert_eq!(
        run(&mut p, PortId(0), &mut late).drop,
        Some(DropReason::NoRoute)
    );
}

#[test]
fn a_pending_checksum_is_right_after_a_hairpin() {
    let mut p = setup(1500, true);
    publish_c1(&mut p);
    run(&mut p, PortId(0), &mut udp(C1, GW, C1_IP, REMOTE, 1, 53));
    let mut f = tcp_seg(C2, GW, C2_IP, UPLINK_IP, (40000, 8080), true, false);
    // Replace the TCP checksum with the pseudo-header sum a TAP leaves pending.
    let full = f.clone();
    let hdr = ip_of(&full);
    let tcp_at = 14 + 20;
    let tcp_len = (f.len() - tcp_at) as u32;
    let mut s: u32 = 0;
    for w in [hdr.source, hdr.destination] {
        s += u32::from(u16::from_be_bytes([w[0], w[1]]))
            + u32::from(u16::from_be_bytes([w[2], w[3]]));
    }
    s += 6 + tcp_len;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    f[tcp_at + 16..tcp_at + 18].copy_from_slice(&(s as u16).to_be_bytes());
    let vnet = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: tcp_at as u16,
        csum_offset: 16,
    };
    let mut a = Actions::with_capacity(8);
    p.process_vnet(1, PortId(1), &mut f, Some(&vnet), &mut a);
    assert_eq!(a.out, vec![PortId(0)]);
    // Finish the checksum as the kernel would: the result must be the full checksum.
    let mut sum: u32 = 0;
    for c in f[tcp_at..].chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    f[tcp_at + 16..tcp_at + 18].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    assert_valid(&f);
}
