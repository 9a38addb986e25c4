//! Pipeline tests with frames built by etherparse.

use super::*;
use crate::wire::MacAddr;
use etherparse::PacketBuilder;

const A: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0, 2];
const B: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0, 3];
const C: [u8; 6] = [0x02, 0x42, 0xac, 0x11, 0, 4];
const D: [u8; 6] = [0x02, 0x42, 0x0a, 0x00, 0, 2];

fn udp(src: [u8; 6], dst: [u8; 6]) -> Vec<u8> {
    let builder = PacketBuilder::ethernet2(src, dst)
        .ipv4([172, 17, 0, 2], [172, 17, 0, 3], 64)
        .udp(4000, 5000);
    let payload = b"hello";
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder.write(&mut out, payload).unwrap();
    out
}

fn params() -> NetworkParams {
    NetworkParams {
        fdb_limit: 8192,
        aging_ms: 300_000,
        gateway: None,
        egress: true,
        vni: None,
        overlay_mtu: None,
        learn_peers: false,
        encrypted: false,
        icc: true,
        port_mac_limit: 0,
        gateway_rate: 0,
    }
}

/// Network 0 with ports 0, 1, 2; network 1 with ports 3, 4.
fn two_networks() -> Pipeline {
    let mut p = Pipeline::new();
    p.add_network(NetId(0), params());
    p.add_network(NetId(1), params());
    for i in 0..3 {
        assert!(p.add_port(PortId(i), NetId(0), None));
    }
    for i in 3..5 {
        assert!(p.add_port(PortId(i), NetId(1), None));
    }
    p
}

fn run(p: &mut Pipeline, now: u64, port: u32, frame: &[u8]) -> Actions {
    let mut a = Actions::with_capacity(8);
    p.process(now, PortId(port), &mut frame.to_vec(), &mut a);
    a
}

#[test]
fn unknown_unicast_floods_within_network_only() {
    let mut p = two_networks();
    let a = run(&mut p, 0, 0, &udp(A, B));
    assert!(a.flooded);
    assert_eq!(
        a.out,
        vec![PortId(1), PortId(2)],
        "never back out of ingress, never to net 1"
    );
    assert_eq!(a.drop, None);
}

#[test]
fn broadcast_and_multicast_flood() {
    let mut p = two_networks();
    for dst in [[0xff; 6], [0x01, 0x00, 0x5e, 0, 0, 1]] {
        let a = run(&mut p, 0, 1, &udp(A, dst));
        assert!(a.flooded);
        assert_eq!(a.out, vec![PortId(0), PortId(2)]);
    }
    // Even a learned "multicast" address (impossible as a source) never becomes unicast.
    let a = run(&mut p, 0, 4, &udp(D, [0xff; 6]));
    assert_eq!(a.out, vec![PortId(3)]);
}

#[test]
fn known_unicast_goes_to_one_port() {
    let mut p = two_networks();
    run(&mut p, 0, 1, &udp(B, A)); // learns B on port 1
    let a = run(&mut p, 1, 0, &udp(A, B));
    assert!(!a.flooded);
    assert_eq!(a.out, vec![PortId(1)]);
    // And the reply back to A, learned from the first frame.
    let a = run(&mut p, 2, 1, &udp(B, A));
    assert_eq!(a.out, vec![PortId(0)]);
}

#[test]
fn networks_do_not_share_learned_macs() {
    let mut p = two_networks();
    run(&mut p, 0, 3, &udp(B, D)); // B learned on net 1, port 3
    let a = run(&mut p, 1, 0, &udp(A, B));
    assert!(a.flooded, "B is unknown on net 0");
    assert_eq!(a.out, vec![PortId(1), PortId(2)]);
}

#[test]
fn mac_move_updates_entry() {
    let mut p = two_networks();
    run(&mut p, 0, 1, &udp(B, A));
    run(&mut p, 1, 2, &udp(B, A)); // B moved to port 2
    let a = run(&mut p, 2, 0, &udp(A, B));
    assert_eq!(a.out, vec![PortId(2)]);
    assert_eq!(p.network(NetId(0)).unwrap().fdb.counters.moved, 1);
}

#[test]
fn aged_entry_floods_again() {
    let mut p = Pipeline::new();
    p.add_network(
        NetId(0),
        NetworkParams {
            fdb_limit: 16,
            aging_ms: 1000,
            gateway: None,
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
    for i in 0..3 {
        p.add_port(PortId(i), NetId(0), None);
    }
    run(&mut p, 0, 1, &udp(B, A));
    assert_eq!(run(&mut p, 999, 0, &udp(A, B)).out, vec![PortId(1)]);
    let a = run(&mut p, 1000, 0, &udp(A, B));
    assert!(a.flooded);
    p.expire(5000);
    assert_eq!(p.network(NetId(0)).unwrap().fdb.len(), 0);
}

#[test]
fn hairpin_is_dropped_and_counted() {
    let mut p = two_networks();
    run(&mut p, 0, 0, &udp(B, C));
    let a = run(&mut p, 1, 0, &udp(A, B));
    assert_eq!(a.drop, Some(DropReason::Hairpin));
    assert!(a.out.is_empty());
    assert_eq!(
        p.port_counters(PortId(0)).unwrap().drops[DropReason::Hairpin as usize],
        1
    );
}

#[test]
fn malformed_frames_are_counted_by_reason() {
    let mut p = two_networks();
    assert_eq!(run(&mut p, 0, 0, &[0u8; 10]).drop, Some(DropReason::Runt));
    assert_eq!(run(&mut p, 0, 0, &[]).drop, Some(DropReason::Runt));
    let mut bad = udp(A, B);
    bad[12..14].copy_from_slice(&1400u16.to_be_bytes());
    assert_eq!(run(&mut p, 0, 0, &bad).drop, Some(DropReason::BadLength));
    assert_eq!(
        run(&mut p, 0, 0, &udp([0xff; 6], B)).drop,
        Some(DropReason::InvalidSource)
    );
    assert_eq!(
        run(&mut p, 0, 0, &udp([0; 6], B)).drop,
        Some(DropReason::InvalidSource)
    );
    assert_eq!(
        run(&mut p, 0, 0, &udp([0x01, 0, 0, 0, 0, 1], B)).drop,
        Some(DropReason::InvalidSource)
    );
    let c = p.port_counters(PortId(0)).unwrap();
    assert_eq!(c.drops[DropReason::Runt as usize], 2);
    assert_eq!(c.drops[DropReason::BadLength as usize], 1);
    assert_eq!(c.drops[DropReason::InvalidSource as usize], 3);
    assert_eq!(c.rx_packets, 6);
    // Nothing was learned from any of them.
    assert_eq!(p.network(NetId(0)).unwrap().fdb.len(), 0);
}

#[test]
fn lone_port_flood_is_no_destination() {
    let mut p = Pipeline::new();
    p.add_network(NetId(7), params());
    p.add_port(PortId(9), NetId(7), None);
    let a = run(&mut p, 0, 9, &udp(A, B));
    assert_eq!(a.drop, Some(DropReason::NoDestination));
}

#[test]
fn unknown_and_removed_ports() {
    let mut p = two_networks();
    assert_eq!(
        run(&mut p, 0, 42, &udp(A, B)).drop,
        Some(DropReason::UnknownPort)
    );
    run(&mut p, 0, 1, &udp(B, A));
    let counters = p.remove_port(PortId(1)).unwrap();
    assert_eq!(counters.rx_packets, 1);
    assert_eq!(
        run(&mut p, 1, 1, &udp(B, A)).drop,
        Some(DropReason::UnknownPort)
    );
    // B's entry went with the port: traffic to B floods to the remaining port.
    let a = run(&mut p, 2, 0, &udp(A, B));
    assert_eq!(a.out, vec![PortId(2)]);
    p.remove_network(NetId(0));
    assert_eq!(
        run(&mut p, 3, 0, &udp(A, B)).drop,
        Some(DropReason::UnknownPort)
    );
}

#[test]
fn full_table_keeps_forwarding() {
    let mut p = Pipeline::new();
    p.add_network(
        NetId(0),
        NetworkParams {
            fdb_limit: 64,
            aging_ms: 300_000,
            gateway: None,
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
    p.add_port(PortId(0), NetId(0), None);
    p.add_port(PortId(1), NetId(0), None);
    for i in 0..1000u32 {
        let b = i.to_be_bytes();
        run(
            &mut p,
            u64::from(i),
            0,
            &udp([0x02, 0, b[0], b[1], b[2], b[3]], B),
        );
    }
    let fdb = &p.network(NetId(0)).unwrap().fdb;
    assert_eq!(fdb.len(), 64);
    assert_eq!(fdb.counters.evicted, 1000 - 64);
    let _ = MacAddr::ZERO;
}

#[test]
fn drop_reason_names_are_unique() {
    let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.name()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), DropReason::COUNT);
}

/// An overlay network: local ports 0 and 1, tunnels 10 and 11 to two remote VTEPs. A local
/// flood reaches every port and every VTEP; one from a VTEP reaches only local ports (split
/// horizon: each VTEP replicates to all peers itself); a MAC learned on a tunnel is unicast
/// to it; removing a tunnel forgets its demultiplexing entry.
#[test]
fn overlay_floods_with_split_horizon_and_learns_remote_macs() {
    let mut p = Pipeline::new();
    p.add_network(
        NetId(0),
        NetworkParams {
            vni: Some(42),
            overlay_mtu: None,
            learn_peers: false,
            encrypted: false,
            icc: true,
            port_mac_limit: 0,
            gateway_rate: 0,
            ..params()
        },
    );
    assert!(p.add_port(PortId(0), NetId(0), None));
    assert!(p.add_port(PortId(1), NetId(0), None));
    let (r1, r2) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    assert!(p.add_tunnel(PortId(10), NetId(0), 42, r1, true));
    assert!(p.add_tunnel(PortId(11), NetId(0), 42, r2, true));
    assert!(
        !p.add_tunnel(PortId(12), NetId(0), 43, r2, true),
        "wrong VNI"
    );
    let a = run(&mut p, 0, 0, &udp(A, [0xff; 6]));
    assert_eq!(a.out, vec![PortId(1), PortId(10), PortId(11)]);
    let a = run(&mut p, 0, 10, &udp(C, [0xff; 6]));
    assert_eq!(
        a.out,
        vec![PortId(0), PortId(1)],
        "not back to another VTEP"
    );
    let a = run(&mut p, 1, 1, &udp(B, C));
    assert_eq!(a.out, vec![PortId(10)], "C was learned behind VTEP 1");
    let mut dgram = overlay::header(42).to_vec();
    dgram.extend_from_slice(&udp(C, A));
    assert_eq!(p.tunnels.demux(r1, &dgram), Ok(PortId(10)));
    p.remove_port(PortId(10));
    assert_eq!(p.tunnels.demux(r1, &dgram), Err(DropReason::UnknownVtep));
    let a = run(&mut p, 2, 1, &udp(B, C));
    assert_eq!(
        a.out,
        vec![PortId(0), PortId(11)],
        "C forgotten with its tunnel"
    );
}

/// An overlay network with a gateway (172.17.0.1) and local port 0; tunnel 10 is a peer,
/// tunnel 11 only has a static entry (MAC C at 172.17.0.4). C is unicast to 11 before any
/// traffic, learning does not move it, ARP for its address is answered by the gateway, floods
/// never reach 11; a frame over the overlay MTU with DF gets fragmentation needed from the
/// gateway and is not sent to a VTEP (locally it is).
#[test]
fn overlay_static_entries_and_too_big_frames() {
    use etherparse::{Icmpv4Type, SlicedPacket, TransportSlice};
    let gw_mac = MacAddr([0x02, 0x42, 0xac, 0x11, 0, 1]);
    let mut p = Pipeline::new();
    p.add_network(
        NetId(0),
        NetworkParams {
            vni: Some(42),
            overlay_mtu: Some(1450),
            gateway: Some(gateway::GatewayConfig {
                ip: "172.17.0.1".parse().unwrap(),
                mac: gw_mac,
                subnet: "172.17.0.0/24".parse().unwrap(),
                arp_suppress: true,
                dhcp: None,
                dns_names: true,
                domain: "ov.vswitch".into(),
                dns_forward: false,
            }),
            ..params()
        },
    );
    assert!(p.add_port(PortId(0), NetId(0), None));
    assert!(p.add_port(PortId(1), NetId(0), None));
    let (r1, r2) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
    assert!(p.add_tunnel(PortId(10), NetId(0), 42, r1, true));
    assert!(p.add_tunnel(PortId(11), NetId(0), 42, r2, false));
    let ip_c: std::net::Ipv4Addr = "172.17.0.4".parse().unwrap();
    assert!(p.fdb_pin(NetId(0), MacAddr(C), PortId(11), Some(ip_c), &[]));
    assert!(
        !p.fdb_pin(NetId(0), MacAddr(D), PortId(5), None, &[]),
        "no such port"
    );

    assert_eq!(run(&mut p, 0, 0, &udp(A, C)).out, vec![PortId(11)]);
    let a = run(&mut p, 0, 0, &udp(A, [0xff; 6]));
    assert_eq!(a.out, vec![PortId(1), PortId(10)], "floods skip 11");
    // A frame claiming C from the peer does not move the static entry.
    run(&mut p, 1, 10, &udp(C, A));
    assert_eq!(run(&mut p, 2, 0, &udp(A, C)).out, vec![PortId(11)]);
    // From 11 (a VTEP that is not a peer) a flood reaches local ports only.
    assert_eq!(
        run(&mut p, 2, 11, &udp(D, [0xff; 6])).out,
        vec![PortId(0), PortId(1)]
    );

    // ARP for C's address is answered at once.
    let arp = {
        let b = PacketBuilder::ethernet2(A, [0xff; 6]).arp(
            etherparse::ArpPacket::new(
                etherparse::ArpHardwareId::ETHERNET,
                etherparse::EtherType::IPV4,
                etherparse::ArpOperation::REQUEST,
                &A,
                &[172, 17, 0, 2],
                &[0; 6],
                &ip_c.octets(),
            )
            .unwrap(),
        );
        let mut v = Vec::new();
        b.write(&mut v).unwrap();
        v
    };
    let a = run(&mut p, 3, 0, &arp);
    assert!(a.out.is_empty(), "{:?}", a.out);
    let reply = etherparse::ArpPacketSlice::from_slice(&a.reply[14..]).unwrap();
    assert_eq!(reply.sender_hw_addr(), &C);
    assert_eq!(reply.sender_protocol_addr(), &ip_c.octets());

    // Too big for a tunnel: 1451 bytes of IPv4 with DF.
    let big = |df: bool, dst: [u8; 6]| {
        let mut ip = etherparse::Ipv4Header::new(
            1451 - 20 - 8,
            64,
            etherparse::IpNumber::UDP,
            [172, 17, 0, 2],
            ip_c.octets(),
        )
        .unwrap();
        ip.dont_fragment = df;
        let b = PacketBuilder::ethernet2(A, dst)
            .ip(etherparse::IpHeaders::Ipv4(ip, Default::default()));
        let mut v = Vec::new();
        b.udp(4000, 5000).write(&mut v, &[0u8; 1451 - 28]).unwrap();
        v
    };
    let a = run(&mut p, 4, 0, &big(true, C));
    assert_eq!(a.drop, Some(DropReason::TooBig));
    assert!(a.out.is_empty());
    let icmp = SlicedPacket::from_ethernet(&a.reply).unwrap();
    let Some(TransportSlice::Icmpv4(i)) = icmp.transport else {
        panic!("no ICMP reply");
    };
    assert_eq!(
        i.icmp_type(),
        Icmpv4Type::DestinationUnreachable(
            etherparse::icmpv4::DestUnreachableHeader::FragmentationNeeded { next_hop_mtu: 1450 }
        )
    );
    assert_eq!(&a.reply[6..12], &gw_mac.0, "from the gateway");
    assert_eq!(&a.reply[0..6], &A, "to the sender");
    // Without DF: dropped, no ICMP.
    let a = run(&mut p, 4, 0, &big(false, C));
    assert_eq!(a.drop, Some(DropReason::TooBig));
    assert!(a.reply.is_empty());
    // A big broadcast still reaches local ports, not the peer.
    let a = run(&mut p, 4, 0, &big(true, [0xff; 6]));
    assert_eq!(a.out, vec![PortId(1)]);
    // 1450 bytes fit.
    let mut ok = big(true, C);
    ok.truncate(14 + 1450);
    ok[16..18].copy_from_slice(&1450u16.to_be_bytes());
    assert_eq!(run(&mut p, 5, 0, &ok).out, vec![PortId(11)]);

    p.fdb_unpin(NetId(0), MacAddr(C), Some(ip_c), &[]);
    let a = run(&mut p, 6, 0, &udp(A, C));
    assert!(a.flooded, "C unknown once its entry is gone");
    assert!(
        run(&mut p, 6, 0, &arp).reply.is_empty(),
        "no longer answered"
    );
}

/// `--gateway-rate`: a port's frames to the gateway's services past its share a second are
/// dropped and counted; routed traffic and L2 traffic are not limited; the share refills.
#[test]
fn gateway_services_are_rate_limited_per_port() {
    use gateway::GatewayConfig;
    let gw_mac = MacAddr([0x02, 0x42, 0xac, 0x11, 0, 1]);
    let mut p = Pipeline::new();
    p.add_network(
        NetId(0),
        NetworkParams {
            gateway: Some(GatewayConfig {
                ip: [172, 17, 0, 1].into(),
                mac: gw_mac,
                subnet: "172.17.0.0/16".parse().unwrap(),
                arp_suppress: true,
                dhcp: None,
                dns_names: true,
                domain: String::new(),
                dns_forward: false,
            }),
            gateway_rate: 10,
            ..params()
        },
    );
    for i in 0..3 {
        assert!(p.add_port(PortId(i), NetId(0), None));
    }
    let ping_gw = {
        let b = PacketBuilder::ethernet2(A, gw_mac.0)
            .ipv4([172, 17, 0, 2], [172, 17, 0, 1], 64)
            .icmpv4_echo_request(1, 1);
        let mut v = Vec::new();
        b.write(&mut v, b"x").unwrap();
        v
    };
    let routed = {
        let b = PacketBuilder::ethernet2(A, gw_mac.0)
            .ipv4([172, 17, 0, 2], [192, 0, 2, 1], 64)
            .udp(1, 2);
        let mut v = Vec::new();
        b.write(&mut v, b"x").unwrap();
        v
    };
    let limited = |p: &Pipeline, port: u32| {
        p.port_counters(PortId(port)).unwrap().drops[DropReason::RateLimited as usize]
    };
    for _ in 0..25 {
        run(&mut p, 0, 0, &ping_gw);
    }
    assert_eq!(
        limited(&p, 0),
        15,
        "a burst of 10, then nothing in the same millisecond"
    );
    // Other kinds of traffic from the same port are not held back.
    for _ in 0..50 {
        let a = run(&mut p, 0, 0, &routed);
        assert_ne!(a.drop, Some(DropReason::RateLimited));
        let a = run(&mut p, 0, 0, &udp(A, B));
        assert_ne!(a.drop, Some(DropReason::RateLimited));
    }
    // Another port has its own share.
    let mut other = ping_gw.clone();
    other[6..12].copy_from_slice(&B);
    other[26..30].copy_from_slice(&[172, 17, 0, 3]);
    let a = run(&mut p, 0, 1, &other);
    assert!(!a.reply.is_empty(), "B's ping is answered");
    // 10 a second: after 300 ms three more are answered.
    let answered = (0..10)
        .filter(|_| !run(&mut p, 300, 0, &ping_gw).reply.is_empty())
        .count();
    assert_eq!(answered, 3);
    assert!(!for_the_gateway(
        &routed,
        p.network(NetId(0))
            .unwrap()
            .gateway
            .as_ref()
            .unwrap()
            .config()
    ));
    assert!(!for_the_gateway(
        &[0u8; 10],
        p.network(NetId(0))
            .unwrap()
            .gateway
            .as_ref()
            .unwrap()
            .config()
    ));
}

/// The loopback relay's port speaks as the gateway: its frames reach the container (past
/// `--no-icc`, not learned), the container's answers to the gateway's address on the relay's
/// ports go back to it (and are not the gateway services' to rate-limit), other ports of the
/// gateway's address do not, and floods never reach it.
#[test]
fn the_loopback_relay_speaks_as_the_gateway() {
    use gateway::GatewayConfig;
    let gw_mac = MacAddr([0x02, 0x42, 0xac, 0x11, 0, 1]);
    let mut p = Pipeline::new();
    p.add_network(
        NetId(0),
        NetworkParams {
            gateway: Some(GatewayConfig {
                ip: [172, 17, 0, 1].into(),
                mac: gw_mac,
                subnet: "172.17.0.0/16".parse().unwrap(),
                arp_suppress: true,
                dhcp: None,
                dns_names: true,
                domain: String::new(),
                dns_forward: false,
            }),
            icc: false,
            gateway_rate: 5,
            ..params()
        },
    );
    for i in 0..2 {
        assert!(p.add_port(PortId(i), NetId(0), None));
    }
    assert!(p.add_relay_port(PortId(9), NetId(0), (49152, 60999)));
    assert!(
        !p.add_relay_port(PortId(8), NetId(0), (1, 2)),
        "one relay a network"
    );
    let tcp = |src: [u8; 6], dst: [u8; 6], sip: [u8; 4], dip: [u8; 4], sp: u16, dp: u16| {
        let b = PacketBuilder::ethernet2(src, dst)
            .ipv4(sip, dip, 64)
            .tcp(sp, dp, 1, 65535);
        let mut v = Vec::new();
        b.write(&mut v, b"data").unwrap();
        v
    };
    // The container is heard from first.
    run(&mut p, 0, 0, &udp(A, B));
    // The relay's SYN to it.
    let a = run(
        &mut p,
        0,
        9,
        &tcp(gw_mac.0, A, [172, 17, 0, 1], [172, 17, 0, 2], 49152, 80),
    );
    assert_eq!(a.out, vec![PortId(0)], "{:?}", a.drop);
    assert_eq!(
        p.network(NetId(0)).unwrap().fdb.lookup(&gw_mac, 0),
        None,
        "the gateway's MAC is not learned on the relay's port"
    );
    // The container's answers, many more than the gateway's services allow a second.
    for _ in 0..20 {
        let a = run(
            &mut p,
            0,
            0,
            &tcp(A, gw_mac.0, [172, 17, 0, 2], [172, 17, 0, 1], 80, 49152),
        );
        assert_eq!(a.out, vec![PortId(9)], "{:?}", a.drop);
    }
    // Another port of the gateway's address is not the relay's (nor a hairpin flow's here).
    let a = run(
        &mut p,
        0,
        0,
        &tcp(A, gw_mac.0, [172, 17, 0, 2], [172, 17, 0, 1], 80, 61000),
    );
    assert!(a.out.is_empty());
    assert_eq!(a.drop, Some(DropReason::NoRoute));
    // Floods stay among the containers.
    let a = run(&mut p, 0, 1, &udp(B, [0xff; 6]));
    assert!(!a.out.contains(&PortId(9)), "{:?}", a.out);
    // Gone with its port.
    p.remove_port(PortId(9));
    assert_eq!(p.network(NetId(0)).unwrap().relay, None);
    let a = run(
        &mut p,
        0,
        0,
        &tcp(A, gw_mac.0, [172, 17, 0, 2], [172, 17, 0, 1], 80, 49152),
    );
    assert!(a.out.is_empty());
}
