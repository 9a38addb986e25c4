//! ipvlan stage tests: frames built by etherparse through the whole pipeline.

use super::*;
use crate::switch::gateway::Endpoint;
use crate::switch::NetworkParams;
use etherparse::{ArpEthIpv4Packet, PacketBuilder};

const PARENT: MacAddr = MacAddr([0x02, 0xaa, 0, 0, 0, 1]);
const PEER: MacAddr = MacAddr([0x02, 0xbb, 0, 0, 0, 1]);
const C1: MacAddr = MacAddr([0x02, 0x42, 0, 0, 0, 0x10]);
const C2: MacAddr = MacAddr([0x02, 0x42, 0, 0, 0, 0x11]);
const C3: MacAddr = MacAddr([0x02, 0x42, 0, 0, 0, 0x12]);
const SEG: PortId = PortId(9);

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn params() -> NetworkParams {
    NetworkParams {
        fdb_limit: 8192,
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
    }
}

fn ipvlan(mode: Mode, subnet: &str) -> Params {
    Params {
        mode,
        parent_mac: PARENT,
        subnet: subnet.parse().unwrap(),
        router: ip("10.78.0.1"),
        routes: vec![("10.77.0.0/24".parse().unwrap(), None)],
    }
}

/// Network 0 (10.77.0.0/24): containers on ports 1 (.10) and 2 (.11), the segment on 9.
/// In l3, network 1 (10.78.0.0/24) shares the segment: a container on port 3 (.10).
fn pipeline(mode: Mode) -> Pipeline {
    let mut p = Pipeline::new();
    p.add_network(NetId(0), params());
    assert!(p.set_ipvlan(NetId(0), ipvlan(mode, "10.77.0.0/24")));
    assert!(p.add_segment_port(SEG, NetId(0)));
    for (port, mac, addr) in [(1, C1, "10.77.0.10"), (2, C2, "10.77.0.11")] {
        let ep = Endpoint {
            mac,
            ip: Some(ip(addr)),
            names: vec![],
        };
        assert!(p.add_port(PortId(port), NetId(0), Some(ep)));
    }
    if mode == Mode::L3 {
        p.add_network(NetId(1), params());
        assert!(p.set_ipvlan(NetId(1), ipvlan(mode, "10.78.0.0/24")));
        assert!(
            p.add_segment_port(SEG, NetId(1)),
            "l3 networks share a segment"
        );
        let ep = Endpoint {
            mac: C3,
            ip: Some(ip("10.78.0.10")),
            names: vec![],
        };
        assert!(p.add_port(PortId(3), NetId(1), Some(ep)));
    }
    p
}

fn arp(
    op: ArpOperation,
    dst: MacAddr,
    sha: MacAddr,
    spa: &str,
    tha: MacAddr,
    tpa: &str,
) -> Vec<u8> {
    let a = ArpEthIpv4Packet {
        operation: op,
        sender_mac: sha.0,
        sender_ipv4: ip(spa).octets(),
        target_mac: tha.0,
        target_ipv4: ip(tpa).octets(),
    };
    let mut f = Vec::new();
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&sha.0);
    f.extend_from_slice(&EtherType::ARP.to_be_bytes());
    f.extend_from_slice(&a.to_bytes());
    f
}

fn udp(src: MacAddr, dst: MacAddr, from: &str, to: &str, ttl: u8) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(ip(from).octets(), ip(to).octets(), ttl)
        .udp(4000, 5000);
    let mut out = Vec::new();
    b.write(&mut out, b"hello").unwrap();
    out
}

fn run(p: &mut Pipeline, port: PortId, frame: &[u8]) -> (Actions, Vec<u8>) {
    let mut a = Actions::with_capacity(8);
    let mut f = frame.to_vec();
    p.process(1000, port, &mut f, &mut a);
    (a, f)
}

fn arp_of_frame(f: &[u8]) -> ArpEthIpv4Packet {
    ArpPacketSlice::from_slice(&f[14..])
        .unwrap()
        .to_packet()
        .try_eth_ipv4()
        .unwrap()
}

#[test]
fn l2_the_segment_sees_only_the_parents_mac() {
    let mut p = pipeline(Mode::L2);
    // A container asks for the peer: out to the segment (and its neighbour) as the parent.
    let (a, f) = run(
        &mut p,
        PortId(1),
        &arp(
            ArpOperation::REQUEST,
            MacAddr::BROADCAST,
            C1,
            "10.77.0.10",
            MacAddr::ZERO,
            "10.77.0.1",
        ),
    );
    assert!(
        a.out.contains(&SEG) && a.out.contains(&PortId(2)),
        "{:?}",
        a.out
    );
    assert_eq!(MacAddr::from_slice(&f[6..12]), PARENT);
    assert_eq!(MacAddr(arp_of_frame(&f).sender_mac), PARENT);
    // The peer's answer to the parent's MAC goes to the container, with its own MAC.
    let (a, f) = run(
        &mut p,
        SEG,
        &arp(
            ArpOperation::REPLY,
            PARENT,
            PEER,
            "10.77.0.1",
            PARENT,
            "10.77.0.10",
        ),
    );
    assert_eq!(a.out, vec![PortId(1)]);
    assert_eq!(MacAddr::from_slice(&f[0..6]), C1);
    assert_eq!(MacAddr(arp_of_frame(&f).target_mac), C1);
    // The segment asks for a container: the switch answers with the parent's MAC.
    let (a, _) = run(
        &mut p,
        SEG,
        &arp(
            ArpOperation::REQUEST,
            MacAddr::BROADCAST,
            PEER,
            "10.77.0.1",
            MacAddr::ZERO,
            "10.77.0.11",
        ),
    );
    assert!(a.out.is_empty());
    let r = arp_of_frame(&a.reply);
    assert_eq!(
        (MacAddr(r.sender_mac), r.sender_ipv4),
        (PARENT, [10, 77, 0, 11])
    );
    assert_eq!(MacAddr::from_slice(&a.reply[0..6]), PEER);
    // IPv4 both ways, by address.
    let (a, f) = run(
        &mut p,
        SEG,
        &udp(PEER, PARENT, "10.77.0.1", "10.77.0.11", 64),
    );
    assert_eq!(a.out, vec![PortId(2)]);
    assert_eq!(MacAddr::from_slice(&f[0..6]), C2);
    assert_eq!(f[22], 64, "l2 does not route");
    let (a, f) = run(
        &mut p,
        PortId(2),
        &udp(C2, PEER, "10.77.0.11", "10.77.0.1", 64),
    );
    assert_eq!(a.out, vec![SEG]);
    assert_eq!(MacAddr::from_slice(&f[6..12]), PARENT);
    // Container to container: to the parent's MAC, delivered by address.
    let (a, f) = run(
        &mut p,
        PortId(1),
        &udp(C1, PARENT, "10.77.0.10", "10.77.0.11", 64),
    );
    assert_eq!(a.out, vec![PortId(2)]);
    assert_eq!(MacAddr::from_slice(&f[0..6]), C2);
    // For no container: counted, not flooded.
    let (a, _) = run(
        &mut p,
        SEG,
        &udp(PEER, PARENT, "10.77.0.1", "10.77.0.99", 64),
    );
    assert_eq!(a.drop, Some(DropReason::NoDestination));
    let (a, _) = run(
        &mut p,
        PortId(1),
        &udp(C1, PARENT, "10.77.0.10", "10.77.0.2", 64),
    );
    assert_eq!(a.drop, Some(DropReason::NoRoute));
    // The segment's broadcasts reach the containers.
    let (a, _) = run(
        &mut p,
        SEG,
        &udp(PEER, MacAddr::BROADCAST, "10.77.0.1", "10.77.0.255", 64),
    );
    assert_eq!(a.out, vec![PortId(1), PortId(2)]);
}

#[test]
fn l3_routes_and_keeps_broadcasts_off_the_segment() {
    let mut p = pipeline(Mode::L3);
    // Any ARP of a container is answered by the switch with the parent's MAC.
    let (a, _) = run(
        &mut p,
        PortId(1),
        &arp(
            ArpOperation::REQUEST,
            MacAddr::BROADCAST,
            C1,
            "10.77.0.10",
            MacAddr::ZERO,
            "10.77.0.1",
        ),
    );
    assert!(a.out.is_empty() && a.emit.is_empty());
    assert_eq!(MacAddr(arp_of_frame(&a.reply).sender_mac), PARENT);
    // Gratuitous ARP goes nowhere.
    let (a, _) = run(
        &mut p,
        PortId(1),
        &arp(
            ArpOperation::REQUEST,
            MacAddr::BROADCAST,
            C1,
            "10.77.0.10",
            MacAddr::ZERO,
            "10.77.0.10",
        ),
    );
    assert!(a.out.is_empty() && a.reply.is_empty());
    // Broadcast and multicast stay, counted.
    for f in [
        udp(C1, MacAddr::BROADCAST, "10.77.0.10", "255.255.255.255", 64),
        udp(C1, PARENT, "10.77.0.10", "10.77.0.255", 64),
        udp(
            C1,
            MacAddr([1, 0, 0x5e, 0, 0, 1]),
            "10.77.0.10",
            "224.0.0.1",
            64,
        ),
    ] {
        let (a, _) = run(&mut p, PortId(1), &f);
        assert_eq!(a.drop, Some(DropReason::NoBroadcast));
        assert!(a.out.is_empty() && a.emit.is_empty());
    }
    // To the peer: the first packet waits for its MAC, asked on the segment as the parent.
    let (a, _) = run(
        &mut p,
        PortId(1),
        &udp(C1, PARENT, "10.77.0.10", "10.77.0.1", 64),
    );
    assert!(a.out.is_empty() && a.drop.is_none());
    assert_eq!(a.emit.len(), 1);
    assert_eq!(a.emit[0].0, SEG);
    let req = arp_of_frame(&a.emit[0].1);
    assert_eq!(
        (MacAddr(req.sender_mac), req.target_ipv4),
        (PARENT, [10, 77, 0, 1])
    );
    // The answer releases it, routed.
    let (a, _) = run(
        &mut p,
        SEG,
        &arp(
            ArpOperation::REPLY,
            PARENT,
            PEER,
            "10.77.0.1",
            PARENT,
            "10.77.0.10",
        ),
    );
    assert!(a.out.is_empty());
    assert_eq!(a.emit.len(), 1);
    let f = &a.emit[0].1;
    assert_eq!(
        (
            MacAddr::from_slice(&f[0..6]),
            MacAddr::from_slice(&f[6..12]),
            f[22]
        ),
        (PEER, PARENT, 63)
    );
    // Then straight through.
    let (a, f) = run(
        &mut p,
        PortId(2),
        &udp(C2, PARENT, "10.77.0.11", "10.77.0.1", 64),
    );
    assert_eq!(a.out, vec![SEG]);
    assert_eq!((MacAddr::from_slice(&f[0..6]), f[22]), (PEER, 63));
    // From the segment to the second subnet's container, and across the two subnets.
    let (a, f) = run(
        &mut p,
        SEG,
        &udp(PEER, PARENT, "10.77.0.1", "10.78.0.10", 64),
    );
    assert_eq!(a.out, vec![PortId(3)]);
    assert_eq!((MacAddr::from_slice(&f[0..6]), f[22]), (C3, 63));
    let (a, f) = run(
        &mut p,
        PortId(3),
        &udp(C3, PARENT, "10.78.0.10", "10.77.0.10", 64),
    );
    assert_eq!(a.out, vec![PortId(1)]);
    assert_eq!((MacAddr::from_slice(&f[0..6]), f[22]), (C1, 63));
    // TTL 1 is not routed: the container hears ICMP time exceeded from its gateway.
    let (a, _) = run(
        &mut p,
        PortId(3),
        &udp(C3, PARENT, "10.78.0.10", "10.77.0.10", 1),
    );
    assert_eq!(a.drop, Some(DropReason::TtlExceeded));
    let icmp = etherparse::SlicedPacket::from_ethernet(&a.reply).expect("an ICMP error");
    assert_eq!(MacAddr::from_slice(&a.reply[0..6]), C3);
    match icmp.net {
        Some(etherparse::NetSlice::Ipv4(ip)) => {
            assert_eq!(ip.header().source(), [10, 78, 0, 1]);
            assert_eq!(ip.header().destination(), [10, 78, 0, 10]);
        }
        other => panic!("not IPv4: {other:?}"),
    }
    match icmp.transport {
        Some(etherparse::TransportSlice::Icmpv4(i)) => assert!(matches!(
            i.icmp_type(),
            etherparse::Icmpv4Type::TimeExceeded(_)
        )),
        other => panic!("not ICMP: {other:?}"),
    }
    // No route via the parent.
    let (a, _) = run(
        &mut p,
        PortId(1),
        &udp(C1, PARENT, "10.77.0.10", "192.0.2.1", 64),
    );
    assert_eq!(a.drop, Some(DropReason::NoRoute));
}

#[test]
fn l3_segment_sharing_survives_its_first_network() {
    let mut p = pipeline(Mode::L3);
    p.remove_network(NetId(0));
    let (a, _) = run(
        &mut p,
        SEG,
        &udp(PEER, PARENT, "10.77.0.1", "10.78.0.10", 64),
    );
    assert_eq!(a.out, vec![PortId(3)]);
    let (a, _) = run(
        &mut p,
        SEG,
        &udp(PEER, PARENT, "10.77.0.1", "10.77.0.10", 64),
    );
    assert_eq!(a.drop, Some(DropReason::NoDestination));
    // An l2 network does not share.
    let mut p = pipeline(Mode::L2);
    p.add_network(NetId(5), params());
    assert!(p.set_ipvlan(NetId(5), ipvlan(Mode::L2, "10.79.0.0/24")));
    assert!(!p.add_segment_port(SEG, NetId(5)));
}

#[test]
fn malformed_arp_is_counted() {
    let mut p = pipeline(Mode::L2);
    let mut f = arp(
        ArpOperation::REQUEST,
        MacAddr::BROADCAST,
        PEER,
        "10.77.0.1",
        MacAddr::ZERO,
        "10.77.0.10",
    );
    f.truncate(30);
    let (a, _) = run(&mut p, SEG, &f);
    assert_eq!(a.drop, Some(DropReason::BadArp));
    let (a, _) = run(&mut p, PortId(1), &f);
    assert_eq!(a.drop, Some(DropReason::BadArp));
}

#[test]
fn l3_a_waiting_frame_leaves_with_its_checksum_finished() {
    use crate::wire::offload::{VnetHdr, F_NEEDS_CSUM, GSO_NONE};
    let mut p = pipeline(Mode::L3);
    // A TAP with offloads: the UDP checksum left to "the NIC" (only the pseudo-header sum).
    let mut f = udp(C1, PARENT, "10.77.0.10", "10.77.0.1", 64);
    let good = u16::from_be_bytes([f[40], f[41]]);
    let pseudo = crate::wire::checksum::sum16(&f[26..34], 17 + (f.len() as u32 - 34));
    let folded = crate::wire::checksum::fold(pseudo);
    f[40..42].copy_from_slice(&folded.to_be_bytes());
    let hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        gso_type: GSO_NONE,
        hdr_len: 0,
        gso_size: 0,
        csum_start: 34,
        csum_offset: 6,
    };
    let mut a = Actions::with_capacity(8);
    p.process_vnet(1000, PortId(1), &mut f, Some(&hdr), &mut a);
    assert!(a.out.is_empty() && a.drop.is_none(), "{:?}", a.drop);
    let (a, _) = run(
        &mut p,
        SEG,
        &arp(
            ArpOperation::REPLY,
            PARENT,
            PEER,
            "10.77.0.1",
            PARENT,
            "10.77.0.10",
        ),
    );
    assert_eq!(a.emit.len(), 1);
    let out = &a.emit[0].1;
    assert_eq!(
        u16::from_be_bytes([out[40], out[41]]),
        good,
        "the checksum is whole"
    );
}

#[test]
fn segment_frames_for_other_macs_are_not_delivered() {
    let mut p = pipeline(Mode::L2);
    let other = MacAddr([0x02, 0xcc, 0, 0, 0, 9]);
    let (a, _) = run(
        &mut p,
        SEG,
        &udp(PEER, other, "10.77.0.1", "10.77.0.10", 64),
    );
    assert_eq!(a.drop, Some(DropReason::NoDestination));
}
