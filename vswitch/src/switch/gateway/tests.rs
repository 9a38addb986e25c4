//! Gateway unit tests: crafted frames in, replies decoded with the same codecs.

use super::*;
use dhcproto::v4::{
    Decodable, Decoder, DhcpOption, DhcpOptions, Encodable, Encoder, Flags, Message, MessageType,
    Opcode, OptionCode,
};
use etherparse::{Icmpv4Type, PacketBuilder, SlicedPacket};

const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const GW_MAC: MacAddr = MacAddr([0x02, 0x42, 10, 1, 0, 1]);
const C1: MacAddr = MacAddr([0x02, 0x42, 10, 1, 0, 2]);
const C2: MacAddr = MacAddr([0x02, 0x42, 10, 1, 0, 3]);
const STRANGER: MacAddr = MacAddr([0x02, 0xaa, 0, 0, 0, 9]);
const P1: PortId = PortId(1);
const P2: PortId = PortId(2);
const NET: NetId = NetId(0);

fn gateway(arp_suppress: bool) -> Gateway {
    let mut g = Gateway::new(GatewayConfig {
        ip: GW,
        mac: GW_MAC,
        subnet: "10.1.0.0/24".parse().unwrap(),
        arp_suppress,
        dhcp: Some(DhcpConfig {
            range_start: Ipv4Addr::new(10, 1, 0, 0),
            range_end: Ipv4Addr::new(10, 1, 0, 255),
            lease_secs: 600,
            mtu: 1500,
            excluded: vec![Ipv4Addr::new(10, 1, 0, 4)],
        }),
        dns_names: true,
        domain: "net.vswitch".into(),
        dns_forward: false,
    });
    g.add_endpoint(
        P1,
        Endpoint {
            mac: C1,
            ip: Some(Ipv4Addr::new(10, 1, 0, 2)),
            names: vec!["c1".into()],
        },
    );
    g.add_endpoint(
        P2,
        Endpoint {
            mac: C2,
            ip: Some(Ipv4Addr::new(10, 1, 0, 3)),
            names: vec!["c2".into()],
        },
    );
    g
}

fn arp_request(from: MacAddr, from_ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: from.0,
        sender_ipv4: from_ip.octets(),
        target_mac: [0; 6],
        target_ipv4: target.octets(),
    };
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&from.0);
    f.extend_from_slice(&EtherType::ARP.to_be_bytes());
    f.extend_from_slice(&arp.to_bytes());
    f
}

fn run(g: &mut Gateway, now: u64, port: PortId, frame: &[u8]) -> (Verdict, Vec<u8>, Vec<Event>) {
    let mut reply = Vec::new();
    let mut events = Vec::new();
    let v = g.handle(now, NET, port, frame, &mut reply, &mut events);
    (v, reply, events)
}

fn arp_reply_of(reply: &[u8]) -> ArpEthIpv4Packet {
    ArpPacketSlice::from_slice(&reply[14..])
        .unwrap()
        .to_packet()
        .try_eth_ipv4()
        .unwrap()
}

#[test]
fn arp_for_the_gateway_is_answered() {
    let mut g = gateway(true);
    let (v, reply, _) = run(
        &mut g,
        0,
        P1,
        &arp_request(C1, Ipv4Addr::new(10, 1, 0, 2), GW),
    );
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(&reply[0..6], &C1.0);
    assert_eq!(&reply[6..12], &GW_MAC.0);
    let arp = arp_reply_of(&reply);
    assert_eq!(arp.operation, ArpOperation::REPLY);
    assert_eq!(arp.sender_mac, GW_MAC.0);
    assert_eq!(arp.sender_ipv4_addr(), GW);
    assert_eq!(arp.target_mac, C1.0);
    assert_eq!(g.counters.arp_replies, 1);
}

#[test]
fn arp_suppression_answers_for_known_peers_only() {
    let mut g = gateway(true);
    let (v, reply, _) = run(
        &mut g,
        0,
        P1,
        &arp_request(C1, Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3)),
    );
    assert_eq!(v, Verdict::Consumed);
    assert_eq!(arp_reply_of(&reply).sender_mac, C2.0);
    assert_eq!(g.counters.arp_suppressed, 1);
    // Unknown target: flooded as usual.
    let (v, reply, _) = run(
        &mut g,
        0,
        P1,
        &arp_request(C1, Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 77)),
    );
    assert_eq!(v, Verdict::Pass);
    assert!(reply.is_empty());
    // Duplicate address detection (sender 0.0.0.0) and gratuitous ARP pass through.
    assert_eq!(
        run(
            &mut g,
            0,
            P1,
            &arp_request(C1, Ipv4Addr::UNSPECIFIED, Ipv4Addr::new(10, 1, 0, 3))
        )
        .0,
        Verdict::Pass
    );
    assert_eq!(
        run(
            &mut g,
            0,
            P2,
            &arp_request(C2, Ipv4Addr::new(10, 1, 0, 3), Ipv4Addr::new(10, 1, 0, 3))
        )
        .0,
        Verdict::Pass
    );
    // Off: everything but the gateway's own address passes.
    let mut off = gateway(false);
    assert_eq!(
        run(
            &mut off,
            0,
            P1,
            &arp_request(C1, Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3))
        )
        .0,
        Verdict::Pass
    );
}

#[test]
fn arp_gleans_neighbors_but_not_over_static_ones() {
    let mut g = gateway(true);
    let stranger_ip = Ipv4Addr::new(10, 1, 0, 50);
    run(
        &mut g,
        0,
        P1,
        &arp_request(STRANGER, stranger_ip, Ipv4Addr::new(10, 1, 0, 99)),
    );
    let n = g.neighbors().find(|(ip, _)| **ip == stranger_ip).unwrap().1;
    assert_eq!(
        (n.mac, n.port, n.kind),
        (STRANGER, P1, NeighborKind::Learned)
    );
    // A spoofed claim on c2's address does not overwrite the static entry.
    run(
        &mut g,
        0,
        P1,
        &arp_request(
            STRANGER,
            Ipv4Addr::new(10, 1, 0, 3),
            Ipv4Addr::new(10, 1, 0, 99),
        ),
    );
    let n = g
        .neighbors()
        .find(|(ip, _)| **ip == Ipv4Addr::new(10, 1, 0, 3))
        .unwrap()
        .1;
    assert_eq!((n.mac, n.kind), (C2, NeighborKind::Static));
    // Learned entries age out.
    g.expire(NEIGHBOR_AGING_MS + 1);
    assert!(g.neighbors().all(|(ip, _)| *ip != stranger_ip));
    // Malformed ARP to the gateway is counted, elsewhere switched untouched.
    let mut bad = arp_request(C1, Ipv4Addr::new(10, 1, 0, 2), GW);
    bad.truncate(20);
    assert_eq!(run(&mut g, 0, P1, &bad).0, Verdict::Pass);
    bad[0..6].copy_from_slice(&GW_MAC.0);
    assert_eq!(
        run(&mut g, 0, P1, &bad).0,
        Verdict::Drop(DropReason::BadArp)
    );
}

#[test]
fn icmp_echo_to_the_gateway() {
    let mut g = gateway(true);
    let builder = PacketBuilder::ethernet2(C1.0, GW_MAC.0)
        .ipv4([10, 1, 0, 2], GW.octets(), 64)
        .icmpv4_echo_request(0x1234, 7);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"ping payload").unwrap();
    let (v, reply, _) = run(&mut g, 0, P1, &frame);
    assert_eq!(v, Verdict::Consumed);
    let p = SlicedPacket::from_ethernet(&reply).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    assert_eq!(ip.header().source_addr(), GW);
    assert_eq!(ip.header().destination_addr(), Ipv4Addr::new(10, 1, 0, 2));
    let Some(TransportSlice::Icmpv4(icmp)) = &p.transport else {
        panic!()
    };
    let Icmpv4Type::EchoReply(echo) = icmp.icmp_type() else {
        panic!()
    };
    assert_eq!((echo.id, echo.seq), (0x1234, 7));
    assert_eq!(icmp.payload(), b"ping payload");
    // Traffic through the gateway to an address outside the network is for routing (the
    // pipeline decides whether it may leave, see nat::tests).
    let builder = PacketBuilder::ethernet2(C1.0, GW_MAC.0)
        .ipv4([10, 1, 0, 2], [8, 8, 8, 8], 64)
        .udp(1000, 2000);
    let mut frame = Vec::new();
    builder.write(&mut frame, b"x").unwrap();
    assert_eq!(
        run(&mut g, 0, P1, &frame).0,
        Verdict::Route("8.8.8.8".parse().unwrap())
    );
}

// ---- DHCP ----

fn dhcp_frame(
    mac: MacAddr,
    kind: MessageType,
    ciaddr: Ipv4Addr,
    opts: Vec<DhcpOption>,
    broadcast: bool,
) -> Vec<u8> {
    let mut m = Message::new_with_id(
        0xabcd,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    m.set_opcode(Opcode::BootRequest);
    if broadcast {
        m.set_flags(Flags::default().set_broadcast());
    }
    let mut o = DhcpOptions::new();
    o.insert(DhcpOption::MessageType(kind));
    for x in opts {
        o.insert(x);
    }
    m.set_opts(o);
    let mut payload = Vec::new();
    m.encode(&mut Encoder::new(&mut payload)).unwrap();
    let (src_ip, dst_ip) = if ciaddr.is_unspecified() {
        ([0; 4], [255; 4])
    } else {
        (ciaddr.octets(), GW.octets())
    };
    let dst_mac = if ciaddr.is_unspecified() {
        [0xff; 6]
    } else {
        GW_MAC.0
    };
    let builder = PacketBuilder::ethernet2(mac.0, dst_mac)
        .ipv4(src_ip, dst_ip, 64)
        .udp(68, 67);
    let mut f = Vec::new();
    builder.write(&mut f, &payload).unwrap();
    f
}

/// (message type, yiaddr, destination IP, options) of a DHCP reply frame.
fn decode_reply(reply: &[u8]) -> (MessageType, Ipv4Addr, Ipv4Addr, DhcpOptions) {
    let p = SlicedPacket::from_ethernet(reply).unwrap();
    let Some(NetSlice::Ipv4(ip)) = &p.net else {
        panic!()
    };
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        panic!()
    };
    assert_eq!((udp.source_port(), udp.destination_port()), (67, 68));
    let m = Message::decode(&mut Decoder::new(udp.payload())).unwrap();
    assert_eq!(m.opcode(), Opcode::BootReply);
    assert_eq!(m.xid(), 0xabcd);
    (
        m.opts().msg_type().unwrap(),
        m.yiaddr(),
        ip.header().destination_addr(),
        m.opts().clone(),
    )
}

fn server_id() -> DhcpOption {
    DhcpOption::ServerIdentifier(GW)
}

fn requested(ip: [u8; 4]) -> DhcpOption {
    DhcpOption::RequestedIpAddress(ip.into())
}

#[test]
fn discover_offer_request_ack_for_a_reserved_port() {
    let mut g = gateway(true);
    let (v, reply, ev) = run(
        &mut g,
        0,
        P1,
        &dhcp_frame(
            C1,
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            vec![],
            true,
        ),
    );
    assert_eq!(v, Verdict::Consumed);
    assert!(ev.is_empty(), "an offer binds nothing");
    let (kind, yiaddr, dst, o) = decode_reply(&reply);
    assert_eq!(
        (kind, yiaddr, dst),
        (
            MessageType::Offer,
            Ipv4Addr::new(10, 1, 0, 2),
            Ipv4Addr::BROADCAST
        )
    );
    assert_eq!(
        o.get(OptionCode::Router),
        Some(&DhcpOption::Router(vec![GW]))
    );
    assert_eq!(
        o.get(OptionCode::DomainNameServer),
        Some(&DhcpOption::DomainNameServer(vec![GW]))
    );
    assert_eq!(
        o.get(OptionCode::SubnetMask),
        Some(&DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)))
    );
    assert_eq!(
        o.get(OptionCode::DomainName),
        Some(&DhcpOption::DomainName("net.vswitch".into()))
    );
    assert_eq!(
        o.get(OptionCode::AddressLeaseTime),
        Some(&DhcpOption::AddressLeaseTime(600))
    );
    assert_eq!(
        o.get(OptionCode::InterfaceMtu),
        Some(&DhcpOption::InterfaceMtu(1500))
    );
    assert_eq!(
        o.get(OptionCode::Hostname),
        Some(&DhcpOption::Hostname("c1".into()))
    );

    let (_, reply, ev) = run(
        &mut g,
        1,
        P1,
        &dhcp_frame(
            C1,
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            vec![server_id(), requested([10, 1, 0, 2])],
            false,
        ),
    );
    let (kind, yiaddr, dst, _) = decode_reply(&reply);
    assert_eq!(
        (kind, yiaddr),
        (MessageType::Ack, Ipv4Addr::new(10, 1, 0, 2))
    );
    assert_eq!(
        dst,
        Ipv4Addr::new(10, 1, 0, 2),
        "no broadcast flag: unicast to the new address"
    );
    assert!(
        matches!(&ev[..], [Event::Lease { lease, .. }] if lease.ip == Ipv4Addr::new(10, 1, 0, 2) && lease.remaining_secs == 600)
    );
    assert_eq!(g.leases(1000).len(), 1);
}

#[test]
fn strangers_get_range_addresses_and_keep_them_through_renew_and_rebind() {
    let mut g = gateway(true);
    let (_, reply, _) = run(
        &mut g,
        0,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            vec![],
            false,
        ),
    );
    let (_, offered, _, _) = decode_reply(&reply);
    assert_eq!(
        offered,
        Ipv4Addr::new(10, 1, 0, 5),
        "first address not reserved, not the gateway, not excluded (10.1.0.4)"
    );
    let (_, reply, _) = run(
        &mut g,
        1,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            vec![server_id(), requested([10, 1, 0, 5])],
            false,
        ),
    );
    assert_eq!(decode_reply(&reply).0, MessageType::Ack);
    // RENEWING: unicast with ciaddr, no server id, no requested address.
    let (_, reply, ev) = run(
        &mut g,
        300_000,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Request,
            Ipv4Addr::new(10, 1, 0, 5),
            vec![],
            false,
        ),
    );
    let (kind, yiaddr, dst, _) = decode_reply(&reply);
    assert_eq!(
        (kind, yiaddr, dst),
        (
            MessageType::Ack,
            Ipv4Addr::new(10, 1, 0, 5),
            Ipv4Addr::new(10, 1, 0, 5)
        )
    );
    assert_eq!(ev.len(), 1);
    // REBINDING: the same, broadcast.
    let (_, reply, _) = run(
        &mut g,
        500_000,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Request,
            Ipv4Addr::new(10, 1, 0, 5),
            vec![],
            true,
        ),
    );
    assert_eq!(decode_reply(&reply).0, MessageType::Ack);
    // A second stranger does not get the same address.
    let other = MacAddr([0x02, 0xaa, 0, 0, 0, 10]);
    let (_, reply, _) = run(
        &mut g,
        500_001,
        P1,
        &dhcp_frame(
            other,
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            vec![requested([10, 1, 0, 5])],
            false,
        ),
    );
    assert_eq!(decode_reply(&reply).1, Ipv4Addr::new(10, 1, 0, 6));
    // An excluded address asked for is not given either.
    let third = MacAddr([0x02, 0xaa, 0, 0, 0, 11]);
    let (_, reply, _) = run(
        &mut g,
        500_002,
        P1,
        &dhcp_frame(
            third,
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            vec![requested([10, 1, 0, 4])],
            false,
        ),
    );
    assert_ne!(decode_reply(&reply).1, Ipv4Addr::new(10, 1, 0, 4));
}

#[test]
fn init_reboot_and_naks() {
    let mut g = gateway(true);
    // INIT-REBOOT for a free address: granted.
    let (_, reply, _) = run(
        &mut g,
        0,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            vec![requested([10, 1, 0, 20])],
            false,
        ),
    );
    assert_eq!(decode_reply(&reply).0, MessageType::Ack);
    // Wrong subnet: NAK, broadcast.
    let (_, reply, _) = run(
        &mut g,
        1,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            vec![requested([192, 168, 9, 9])],
            false,
        ),
    );
    let (kind, _, dst, o) = decode_reply(&reply);
    assert_eq!((kind, dst), (MessageType::Nak, Ipv4Addr::BROADCAST));
    assert!(o.get(OptionCode::Message).is_some());
    // Someone else's address (a port's reservation, another client's lease): NAK.
    for taken in [[10, 1, 0, 2], [10, 1, 0, 20]] {
        let other = MacAddr([0x02, 0xaa, 0, 0, 0, 11]);
        let (_, reply, _) = run(
            &mut g,
            2,
            P1,
            &dhcp_frame(
                other,
                MessageType::Request,
                Ipv4Addr::UNSPECIFIED,
                vec![requested(taken)],
                false,
            ),
        );
        assert_eq!(decode_reply(&reply).0, MessageType::Nak, "{taken:?}");
    }
    // A port asking for anything but its own address: NAK.
    let (_, reply, _) = run(
        &mut g,
        3,
        P1,
        &dhcp_frame(
            C1,
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            vec![requested([10, 1, 0, 30])],
            false,
        ),
    );
    assert_eq!(decode_reply(&reply).0, MessageType::Nak);
    // Selecting another server: silently forget the offer.
    let (v, reply, _) = run(
        &mut g,
        4,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            vec![
                DhcpOption::ServerIdentifier([10, 1, 0, 254].into()),
                requested([10, 1, 0, 20]),
            ],
            false,
        ),
    );
    assert_eq!(v, Verdict::Consumed);
    assert!(reply.is_empty());
}

#[test]
fn release_decline_inform() {
    let mut g = gateway(true);
    run(
        &mut g,
        0,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            vec![requested([10, 1, 0, 20])],
            false,
        ),
    );
    assert_eq!(g.leases(1).len(), 1);
    let (v, reply, ev) = run(
        &mut g,
        1,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Release,
            Ipv4Addr::new(10, 1, 0, 20),
            vec![server_id()],
            false,
        ),
    );
    assert_eq!(v, Verdict::Consumed);
    assert!(reply.is_empty());
    assert!(matches!(&ev[..], [Event::Released { mac, .. }] if *mac == STRANGER));
    assert!(g.leases(2).is_empty());

    // DECLINE: the address leaves the pool for a while.
    run(
        &mut g,
        2,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            vec![requested([10, 1, 0, 21])],
            false,
        ),
    );
    let (_, _, ev) = run(
        &mut g,
        3,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Decline,
            Ipv4Addr::UNSPECIFIED,
            vec![server_id(), requested([10, 1, 0, 21])],
            false,
        ),
    );
    assert_eq!(ev.len(), 1);
    let other = MacAddr([0x02, 0xaa, 0, 0, 0, 12]);
    let (_, reply, _) = run(
        &mut g,
        4,
        P1,
        &dhcp_frame(
            other,
            MessageType::Request,
            Ipv4Addr::UNSPECIFIED,
            vec![requested([10, 1, 0, 21])],
            false,
        ),
    );
    assert_eq!(
        decode_reply(&reply).0,
        MessageType::Nak,
        "declined address is held back"
    );

    // INFORM: options without an address or lease, unicast to the client.
    let (_, reply, ev) = run(
        &mut g,
        5,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Inform,
            Ipv4Addr::new(10, 1, 0, 40),
            vec![],
            false,
        ),
    );
    let (kind, yiaddr, dst, o) = decode_reply(&reply);
    assert_eq!(
        (kind, yiaddr, dst),
        (
            MessageType::Ack,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 1, 0, 40)
        )
    );
    assert!(o.get(OptionCode::AddressLeaseTime).is_none());
    assert!(o.get(OptionCode::Router).is_some());
    assert!(ev.is_empty());
}

#[test]
fn malformed_and_rogue_dhcp() {
    let mut g = gateway(true);
    let good = dhcp_frame(
        STRANGER,
        MessageType::Discover,
        Ipv4Addr::UNSPECIFIED,
        vec![],
        true,
    );
    // Cut inside the options, inside the fixed header, or with a broken cookie.
    for cut in [good.len() - 2, 42 + 100, 42 + 239] {
        let mut f = good[..cut].to_vec();
        // Keep the IP/UDP lengths consistent so only DHCP is at fault.
        let udp_len = (f.len() - 34) as u16;
        f[38..40].copy_from_slice(&udp_len.to_be_bytes());
        let ip_len = (f.len() - 14) as u16;
        f[16..18].copy_from_slice(&ip_len.to_be_bytes());
        f[24..26].copy_from_slice(&[0, 0]);
        let csum = etherparse::Ipv4HeaderSlice::from_slice(&f[14..34])
            .unwrap()
            .to_header()
            .calc_header_checksum();
        f[24..26].copy_from_slice(&csum.to_be_bytes());
        f[40..42].copy_from_slice(&[0, 0]);
        assert_eq!(
            run(&mut g, 0, P1, &f).0,
            Verdict::Drop(DropReason::BadDhcp),
            "cut at {cut}"
        );
    }
    let mut bad_cookie = good.clone();
    bad_cookie[42 + 236] = 0;
    assert_eq!(
        run(&mut g, 0, P1, &bad_cookie).0,
        Verdict::Drop(DropReason::BadDhcp)
    );
    // A server message from a container: rogue, whether broadcast or unicast.
    let mut offer = good.clone();
    offer[34..36].copy_from_slice(&67u16.to_be_bytes());
    offer[36..38].copy_from_slice(&68u16.to_be_bytes());
    assert_eq!(
        run(&mut g, 0, P1, &offer).0,
        Verdict::Drop(DropReason::RogueDhcp)
    );
    offer[0..6].copy_from_slice(&C2.0);
    assert_eq!(
        run(&mut g, 0, P1, &offer).0,
        Verdict::Drop(DropReason::RogueDhcp)
    );
    assert!(g.leases(1).is_empty());
}

#[test]
fn dns_query_over_udp_to_the_gateway() {
    use hickory_proto::op::{Message as Dns, MessageType as DnsType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut g = gateway(true);
    let mut q = Dns::new(9, DnsType::Query, OpCode::Query);
    q.add_query(Query::query(
        Name::from_ascii("c2.").unwrap(),
        RecordType::A,
    ));
    let builder = PacketBuilder::ethernet2(C1.0, GW_MAC.0)
        .ipv4([10, 1, 0, 2], GW.octets(), 64)
        .udp(40000, 53);
    let mut f = Vec::new();
    builder.write(&mut f, &q.to_vec().unwrap()).unwrap();
    let (v, reply, _) = run(&mut g, 0, P1, &f);
    assert_eq!(v, Verdict::Consumed);
    let p = SlicedPacket::from_ethernet(&reply).unwrap();
    let Some(TransportSlice::Udp(udp)) = &p.transport else {
        panic!()
    };
    assert_eq!(udp.destination_port(), 40000);
    let a = Dns::from_vec(udp.payload()).unwrap();
    assert_eq!(a.answers.len(), 1);
    // Garbage is counted.
    let builder = PacketBuilder::ethernet2(C1.0, GW_MAC.0)
        .ipv4([10, 1, 0, 2], GW.octets(), 64)
        .udp(40000, 53);
    let mut f = Vec::new();
    builder.write(&mut f, &[1, 2, 3]).unwrap();
    assert_eq!(run(&mut g, 0, P1, &f).0, Verdict::Drop(DropReason::BadDns));
}

#[test]
fn a_discover_flood_cannot_hold_the_pool() {
    let mut g = gateway(true);
    let mut offered = 0;
    for i in 0..5000u32 {
        let b = i.to_be_bytes();
        let mac = MacAddr([0x02, 0xbb, b[0], b[1], b[2], b[3]]);
        let (v, reply, _) = run(
            &mut g,
            0,
            P1,
            &dhcp_frame(
                mac,
                MessageType::Discover,
                Ipv4Addr::UNSPECIFIED,
                vec![],
                true,
            ),
        );
        assert_eq!(v, Verdict::Consumed);
        if !reply.is_empty() {
            offered += 1;
        }
    }
    // The /24 has 251 free addresses; never more offers than that, and never more than the cap.
    assert!(offered <= 251, "{offered}");
    // A port still gets its own address.
    let (_, reply, _) = run(
        &mut g,
        1,
        P2,
        &dhcp_frame(
            C2,
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            vec![],
            true,
        ),
    );
    assert_eq!(decode_reply(&reply).1, Ipv4Addr::new(10, 1, 0, 3));
    // Offers expire: a minute later a real client is served again.
    let (_, reply, _) = run(
        &mut g,
        61_000,
        P1,
        &dhcp_frame(
            STRANGER,
            MessageType::Discover,
            Ipv4Addr::UNSPECIFIED,
            vec![],
            true,
        ),
    );
    assert_eq!(decode_reply(&reply).0, MessageType::Offer);
}

/// Found by fuzzing (fuzz/regressions/pipeline, fuzz/regressions/dhcp): a DHCP message whose
/// hardware address length is more than chaddr's 16 bytes panicked in dhcproto's `chaddr()`.
/// It is a counted bad_dhcp drop, as is one shorter than a MAC; a good one is still answered.
#[test]
fn dhcp_with_a_hardware_address_length_past_chaddr_is_a_drop_not_a_panic() {
    let mut g = gateway(true);
    let good = dhcp_frame(
        STRANGER,
        MessageType::Discover,
        Ipv4Addr::UNSPECIFIED,
        vec![],
        true,
    );
    // hlen is byte 2 of the BOOTP message (Ethernet 14 + IPv4 20 + UDP 8). The UDP checksum
    // etherparse wrote is cleared so the change does not make the frame bad for that reason.
    for hlen in [17u8, 32, 255, 5, 0] {
        let mut f = good.clone();
        f[42 + 2] = hlen;
        f[40..42].copy_from_slice(&[0, 0]);
        assert_eq!(
            run(&mut g, 0, P1, &f).0,
            Verdict::Drop(DropReason::BadDhcp),
            "hlen {hlen}"
        );
    }
    let (v, reply, _) = run(&mut g, 0, P1, &good);
    assert_eq!(v, Verdict::Consumed, "a good DISCOVER is still offered");
    assert!(!reply.is_empty());
}
