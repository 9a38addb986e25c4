//! Writes the seed corpora of the fuzz targets from real frames (built with the same codecs the
//! switch uses): `cargo run -p vswitch-fuzz --bin gen-corpus [DIR]` (default: fuzz/corpus).
//! Deterministic: the same files every run, so the committed corpus can be regenerated.

#![allow(clippy::too_many_arguments)] // frame builders take every header field

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use dhcproto::v4::{DhcpOption, DhcpOptions, Encodable, Encoder, Flags, Message, MessageType};
use dhcproto::v4::{Opcode, OptionCode};
use etherparse::PacketBuilder;
use hickory_proto::op::{Message as Dns, MessageType as DnsType, OpCode, Query};
use hickory_proto::rr::{Name, RecordType};
use vswitch::wire::MacAddr;
use vswitch_fuzz::*;

fn eth_udp(
    src: MacAddr,
    dst: MacAddr,
    sip: [u8; 4],
    dip: [u8; 4],
    sp: u16,
    dp: u16,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip, dip, 64)
        .udp(sp, dp);
    let mut f = Vec::new();
    b.write(&mut f, payload).expect("udp");
    f
}

fn eth_tcp(
    src: MacAddr,
    dst: MacAddr,
    sip: [u8; 4],
    dip: [u8; 4],
    sp: u16,
    dp: u16,
    syn: bool,
    payload: &[u8],
) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip, dip, 64)
        .tcp(sp, dp, 1000, 64240);
    let b = if syn { b.syn() } else { b.ack(1).psh() };
    let mut f = Vec::new();
    b.write(&mut f, payload).expect("tcp");
    f
}

fn eth_ping(src: MacAddr, dst: MacAddr, sip: [u8; 4], dip: [u8; 4], id: u16) -> Vec<u8> {
    let b = PacketBuilder::ethernet2(src.0, dst.0)
        .ipv4(sip, dip, 64)
        .icmpv4_echo_request(id, 1);
    let mut f = Vec::new();
    b.write(&mut f, b"pingpingpingping").expect("icmp");
    f
}

fn arp(src: MacAddr, sip: [u8; 4], tip: [u8; 4], reply_to: Option<MacAddr>) -> Vec<u8> {
    let (dst, op, tha) = match reply_to {
        None => ([0xff; 6], 1u16, [0u8; 6]),
        Some(m) => (m.0, 2, m.0),
    };
    let mut f = Vec::new();
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4]);
    f.extend_from_slice(&op.to_be_bytes());
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&sip);
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tip);
    f
}

fn dhcp_msg(mac: MacAddr, kind: MessageType, ciaddr: Ipv4Addr, opts: Vec<DhcpOption>) -> Vec<u8> {
    let mut m = Message::new_with_id(
        0xabcd,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac.0,
    );
    m.set_opcode(Opcode::BootRequest);
    m.set_flags(Flags::default().set_broadcast());
    let mut o = DhcpOptions::new();
    o.insert(DhcpOption::MessageType(kind));
    for x in opts {
        o.insert(x);
    }
    m.set_opts(o);
    let mut payload = Vec::new();
    m.encode(&mut Encoder::new(&mut payload)).expect("dhcp");
    payload
}

fn dhcp_frame(mac: MacAddr, payload: &[u8]) -> Vec<u8> {
    eth_udp(mac, MacAddr([0xff; 6]), [0; 4], [255; 4], 68, 67, payload)
}

fn dns_query(name: &str, rt: RecordType, id: u16) -> Vec<u8> {
    let mut q = Dns::new(id, DnsType::Query, OpCode::Query);
    q.add_query(Query::query(Name::from_ascii(name).expect("name"), rt));
    q.to_vec().expect("dns")
}

fn vnet(
    flags: u8,
    gso_type: u8,
    hdr_len: u16,
    gso_size: u16,
    csum_start: u16,
    csum_offset: u16,
) -> [u8; 10] {
    let mut h = [0u8; 10];
    h[0] = flags;
    h[1] = gso_type;
    h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&csum_start.to_le_bytes());
    h[8..10].copy_from_slice(&csum_offset.to_le_bytes());
    h
}

fn with_vnet(h: [u8; 10], frame: &[u8]) -> Vec<u8> {
    let mut v = h.to_vec();
    v.extend_from_slice(frame);
    v
}

/// TSO, USO and checksum-pending frames, each with its virtio-net header.
fn offload_inputs() -> Vec<Vec<u8>> {
    let big = vec![0x5a; 4000];
    let tso = eth_tcp(C1, C2, C1_IP, C2_IP, 40000, 80, false, &big);
    let uso = eth_udp(C1, C2, C1_IP, C2_IP, 40000, 9000, &big);
    let small = eth_tcp(C1, C2, C1_IP, C2_IP, 40000, 80, false, b"hello");
    let small_udp = eth_udp(C1, C2, C1_IP, C2_IP, 40000, 53, b"hello");
    vec![
        with_vnet(vnet(1, 1, 54, 1448, 34, 16), &tso),
        with_vnet(vnet(1, 0x81, 54, 536, 34, 16), &tso),
        with_vnet(vnet(1, 5, 42, 1472, 34, 6), &uso),
        with_vnet(vnet(1, 5, 42, 100, 34, 6), &uso),
        with_vnet(vnet(1, 0, 0, 0, 34, 16), &small),
        with_vnet(vnet(1, 0, 0, 0, 34, 6), &small_udp),
        with_vnet(vnet(0, 0, 0, 0, 0, 0), &small),
        with_vnet(vnet(1, 3, 42, 1472, 34, 6), &uso),
    ]
}

fn vxlan(src: [u8; 4], vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = src.to_vec();
    v.extend_from_slice(&vswitch::switch::overlay::header(vni));
    v.extend_from_slice(inner);
    v
}

fn write(dir: &Path, target: &str, inputs: &[Vec<u8>]) {
    let d = dir.join(target);
    std::fs::create_dir_all(&d).expect("mkdir");
    for (i, input) in inputs.iter().enumerate() {
        std::fs::write(d.join(format!("seed-{i:03}")), input).expect("write");
    }
    println!("{target}: {} seeds in {}", inputs.len(), d.display());
}

fn main() {
    let dir = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    let bcast = MacAddr([0xff; 6]);

    // DHCP payloads.
    let discover = dhcp_msg(
        C2,
        MessageType::Discover,
        Ipv4Addr::UNSPECIFIED,
        vec![
            DhcpOption::Hostname("c2".into()),
            DhcpOption::ParameterRequestList(vec![
                OptionCode::SubnetMask,
                OptionCode::Router,
                OptionCode::DomainNameServer,
            ]),
        ],
    );
    let request = dhcp_msg(
        C2,
        MessageType::Request,
        Ipv4Addr::UNSPECIFIED,
        vec![
            DhcpOption::ServerIdentifier(Ipv4Addr::from(GW_IP)),
            DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 1, 0, 100)),
        ],
    );
    let reboot = dhcp_msg(
        C1,
        MessageType::Request,
        Ipv4Addr::UNSPECIFIED,
        vec![DhcpOption::RequestedIpAddress(Ipv4Addr::from(C1_IP))],
    );
    let renew = dhcp_msg(C1, MessageType::Request, Ipv4Addr::from(C1_IP), vec![]);
    let release = dhcp_msg(
        C1,
        MessageType::Release,
        Ipv4Addr::from(C1_IP),
        vec![DhcpOption::ServerIdentifier(Ipv4Addr::from(GW_IP))],
    );
    let decline = dhcp_msg(
        C2,
        MessageType::Decline,
        Ipv4Addr::UNSPECIFIED,
        vec![
            DhcpOption::ServerIdentifier(Ipv4Addr::from(GW_IP)),
            DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 1, 0, 100)),
        ],
    );
    let inform = dhcp_msg(C1, MessageType::Inform, Ipv4Addr::from(C1_IP), vec![]);
    let dhcps = [
        &discover, &request, &reboot, &renew, &release, &decline, &inform,
    ];

    // DNS queries.
    let q_c2 = dns_query("c1.", RecordType::A, 1);
    let q_fqdn = dns_query("c1.n.vswitch.", RecordType::A, 2);
    let q_out = dns_query("example.com.", RecordType::A, 3);
    let q_aaaa = dns_query("web.", RecordType::AAAA, 4);
    let q_ptr = dns_query("2.0.1.10.in-addr.arpa.", RecordType::PTR, 5);
    let q_any = dns_query("web.", RecordType::ANY, 6);
    let q_mx = dns_query("missing.n.vswitch.", RecordType::MX, 7);
    let dnss = [&q_c2, &q_fqdn, &q_out, &q_aaaa, &q_ptr, &q_any, &q_mx];

    // Pipeline frames.
    let gw = GW;
    let f_arp_gw = arp(C1, C1_IP, GW_IP, None);
    let f_arp_c2 = arp(C1, C1_IP, C2_IP, None);
    let f_arp_reply = arp(C2, C2_IP, C1_IP, Some(C1));
    let f_garp = arp(C2, C2_IP, C2_IP, None);
    let f_ping_gw = eth_ping(C1, gw, C1_IP, GW_IP, 7);
    let f_ping_out = eth_ping(C1, gw, C1_IP, OUTSIDE_IP, 8);
    let f_ping_back = {
        let b = PacketBuilder::ethernet2(ROUTER_MAC.0, UPLINK_MAC.0)
            .ipv4(OUTSIDE_IP, UPLINK_IP, 60)
            .icmpv4_echo_reply(8, 1);
        let mut f = Vec::new();
        b.write(&mut f, b"pingpingpingping").expect("icmp");
        f
    };
    let f_udp_c2 = eth_udp(C1, C2, C1_IP, C2_IP, 4000, 5000, b"hello");
    let f_udp_back = eth_udp(C2, C1, C2_IP, C1_IP, 5000, 4000, b"hello");
    let f_udp_out = eth_udp(C1, gw, C1_IP, OUTSIDE_IP, 40000, 53, &q_out);
    let f_udp_in = eth_udp(
        ROUTER_MAC, UPLINK_MAC, OUTSIDE_IP, UPLINK_IP, 53, 40000, &q_out,
    );
    let f_syn_out = eth_tcp(C1, gw, C1_IP, OUTSIDE_IP, 41000, 80, true, b"");
    let f_synack_in = eth_tcp(
        ROUTER_MAC, UPLINK_MAC, OUTSIDE_IP, UPLINK_IP, 80, 41000, true, b"",
    );
    let f_data_out = eth_tcp(
        C1,
        gw,
        C1_IP,
        OUTSIDE_IP,
        41000,
        80,
        false,
        b"GET / HTTP/1.0\r\n\r\n",
    );
    let f_dns_gw = eth_udp(C1, gw, C1_IP, GW_IP, 40001, 53, &q_c2);
    let f_dns_fwd = eth_udp(C1, gw, C1_IP, GW_IP, 40002, 53, &q_out);
    let f_dns_tcp_syn = eth_tcp(C1, gw, C1_IP, GW_IP, 40003, 53, true, b"");
    let f_dns_tcp = {
        let mut p = (q_c2.len() as u16).to_be_bytes().to_vec();
        p.extend_from_slice(&q_c2);
        eth_tcp(C1, gw, C1_IP, GW_IP, 40003, 53, false, &p)
    };
    let f_discover = dhcp_frame(C2, &discover);
    let f_request = dhcp_frame(C2, &request);
    let f_ov_arp = arp(OV1, OV1_IP, [10, 5, 0, 9], None);
    let f_ov_out = eth_udp(
        OV1,
        REMOTE_MAC,
        OV1_IP,
        [10, 5, 0, 9],
        4000,
        5000,
        b"overlay",
    );
    let f_ov_in = eth_udp(
        REMOTE_MAC,
        OV1,
        [10, 5, 0, 9],
        OV1_IP,
        5000,
        4000,
        b"overlay",
    );
    let f_ov_bcast = eth_udp(
        REMOTE_MAC,
        bcast,
        [10, 5, 0, 9],
        [10, 5, 0, 255],
        5000,
        4000,
        b"b",
    );
    let f_ov_gw = eth_ping(OV1, OV_GW, OV1_IP, OV_GW_IP, 9);
    let f_ov_nat = eth_ping(OV1, OV_GW, OV1_IP, OUTSIDE_IP, 10);
    let f_rogue = eth_udp(C1, bcast, C1_IP, [255; 4], 67, 68, &discover);
    let f_uplink_arp = arp(ROUTER_MAC, ROUTER_IP, UPLINK_IP, None);
    let offl = offload_inputs();

    let rec = |port: usize, secs: u8, f: &[u8]| (pipeline_ctl(port, false, secs), f.to_vec());
    let vrec = |port: usize, f: &[u8]| (pipeline_ctl(port, true, 0), f.to_vec());
    let seqs: Vec<Vec<(u8, Vec<u8>)>> = vec![
        vec![rec(0, 0, &f_arp_gw), rec(0, 0, &f_ping_gw)],
        vec![
            rec(0, 0, &f_arp_c2),
            rec(1, 1, &f_arp_reply),
            rec(1, 0, &f_garp),
        ],
        vec![
            rec(0, 0, &f_udp_c2),
            rec(1, 0, &f_udp_back),
            rec(0, 0, &f_udp_c2),
        ],
        vec![rec(0, 0, &f_ping_out), rec(2, 0, &f_ping_back)],
        vec![rec(0, 0, &f_udp_out), rec(2, 1, &f_udp_in)],
        vec![
            rec(0, 0, &f_syn_out),
            rec(2, 0, &f_synack_in),
            rec(0, 0, &f_data_out),
        ],
        vec![rec(0, 0, &f_dns_gw), rec(0, 0, &f_dns_fwd)],
        vec![rec(0, 0, &f_dns_tcp_syn), rec(0, 0, &f_dns_tcp)],
        vec![rec(1, 0, &f_discover), rec(1, 1, &f_request)],
        vec![
            rec(3, 0, &f_ov_arp),
            rec(3, 0, &f_ov_out),
            rec(4, 0, &f_ov_in),
        ],
        vec![
            rec(4, 0, &f_ov_bcast),
            rec(3, 0, &f_ov_gw),
            rec(3, 0, &f_ov_nat),
        ],
        vec![rec(0, 0, &f_rogue), rec(2, 0, &f_uplink_arp)],
        vec![vrec(0, &offl[0]), vrec(0, &offl[2]), vrec(0, &offl[4])],
        vec![rec(0, 0, &f_udp_back), vrec(0, &offl[1]), vrec(3, &offl[3])],
        vec![
            rec(0, 0, &f_syn_out),
            (pipeline_ctl(0, false, 7) | 0x80, f_data_out.clone()),
        ],
    ];
    let pipeline: Vec<Vec<u8>> = seqs
        .iter()
        .map(|s| {
            let r: Vec<(u8, &[u8])> = s.iter().map(|(c, f)| (*c, f.as_slice())).collect();
            encode_records(&r)
        })
        .collect();
    write(&dir, "pipeline", &pipeline);

    // ipvlan: ARP and IPv4 both ways on l2 and l3 networks (ports: see IV_PORTS).
    let iv_arp =
        |op: etherparse::ArpOperation, dst: MacAddr, sha: MacAddr, spa: [u8; 4], tpa: [u8; 4]| {
            let a = etherparse::ArpEthIpv4Packet {
                operation: op,
                sender_mac: sha.0,
                sender_ipv4: spa,
                target_mac: [0; 6],
                target_ipv4: tpa,
            };
            let mut f = Vec::new();
            f.extend_from_slice(&dst.0);
            f.extend_from_slice(&sha.0);
            f.extend_from_slice(&[0x08, 0x06]);
            f.extend_from_slice(&a.to_bytes());
            f
        };
    use etherparse::ArpOperation as Op;
    let seg_who_has = iv_arp(Op::REQUEST, bcast, SEG_PEER, SEG_PEER_IP, IV_L2_IP);
    let seg_is_at = iv_arp(Op::REPLY, PARENT_MAC, SEG_PEER, SEG_PEER_IP, IV_L3_IP);
    let c_who_has = iv_arp(Op::REQUEST, bcast, C1, IV_L2_IP, SEG_PEER_IP);
    let l3_who_has = iv_arp(Op::REQUEST, bcast, OV1, IV_L3_IP, [10, 78, 0, 1]);
    let seg_in = eth_udp(
        SEG_PEER,
        PARENT_MAC,
        SEG_PEER_IP,
        IV_L2_IP,
        5000,
        5001,
        b"in",
    );
    let seg_in3 = eth_tcp(
        SEG_PEER,
        PARENT_MAC,
        SEG_PEER_IP,
        IV_L3_IP,
        5000,
        80,
        true,
        b"",
    );
    let c_out = eth_udp(C1, SEG_PEER, IV_L2_IP, SEG_PEER_IP, 5001, 5000, b"out");
    let c_to_c = eth_ping(C1, PARENT_MAC, IV_L2_IP, [10, 77, 0, 11], 7);
    let l3_out = eth_tcp(OV1, PARENT_MAC, IV_L3_IP, SEG_PEER_IP, 40000, 80, true, b"");
    let l3_across = eth_ping(OV1, PARENT_MAC, IV_L3_IP, IV_L3B_IP, 8);
    let l3_bcast = eth_udp(OV1, bcast, IV_L3_IP, [255; 4], 68, 67, b"x");
    let seg_bcast = eth_udp(SEG_PEER, bcast, SEG_PEER_IP, [10, 77, 0, 255], 9, 9, b"b");
    let iv = |port: usize, f: &[u8]| (pipeline_ctl(port, false, 0), f.to_vec());
    let seqs: Vec<Vec<(u8, Vec<u8>)>> = vec![
        vec![iv(2, &seg_who_has), iv(2, &seg_in), iv(0, &c_out)],
        vec![iv(0, &c_who_has), iv(0, &c_to_c), iv(2, &seg_bcast)],
        vec![
            iv(3, &l3_who_has),
            iv(3, &l3_out),
            iv(5, &seg_is_at),
            iv(5, &seg_in3),
        ],
        vec![iv(3, &l3_across), iv(3, &l3_bcast), iv(4, &l3_across)],
    ];
    let ipvlan: Vec<Vec<u8>> = seqs
        .iter()
        .map(|s| {
            let r: Vec<(u8, &[u8])> = s.iter().map(|(c, f)| (*c, f.as_slice())).collect();
            encode_records(&r)
        })
        .collect();
    write(&dir, "ipvlan", &ipvlan);

    // NAT: IPv4 packets (the Ethernet header is the target's).
    let ip = |f: &[u8]| f[14..].to_vec();
    let out = |f: &[u8]| (nat_ctl(false, 0), ip(f));
    let inn = |f: &[u8]| (nat_ctl(true, 0), ip(f));
    let frag = {
        let mut f = eth_udp(C1, gw, C1_IP, OUTSIDE_IP, 40010, 9999, &[7u8; 64]);
        f[14 + 6] = 0x20; // more fragments
        f
    };
    let nat_seqs: Vec<Vec<(u8, Vec<u8>)>> = vec![
        vec![out(&f_udp_out), inn(&f_udp_in)],
        vec![out(&f_ping_out), inn(&f_ping_back)],
        vec![out(&f_syn_out), inn(&f_synack_in), out(&f_data_out)],
        vec![(2, ip(&f_udp_out)), inn(&f_udp_in)],
        vec![out(&frag), inn(&f_udp_in)],
        vec![
            inn(&f_synack_in),
            (nat_ctl(false, 7) | 0x80, ip(&f_syn_out)),
        ],
    ];
    let nat: Vec<Vec<u8>> = nat_seqs
        .iter()
        .map(|s| {
            let r: Vec<(u8, &[u8])> = s.iter().map(|(c, f)| (*c, f.as_slice())).collect();
            encode_records(&r)
        })
        .collect();
    write(&dir, "nat", &nat);

    // DHCP: sequences of payloads.
    let mut dhcp: Vec<Vec<u8>> = dhcps.iter().map(|m| encode_records(&[(0, m)])).collect();
    dhcp.push(encode_records(&[
        (0, &discover),
        (1, &request),
        (2, &renew),
        (3, &release),
    ]));
    dhcp.push(encode_records(&[
        (0, &reboot),
        (0x81, &inform),
        (0, &decline),
    ]));
    write(&dir, "dhcp", &dhcp);

    // DNS: a selector byte, then the query.
    let dns: Vec<Vec<u8>> = dnss
        .iter()
        .enumerate()
        .map(|(i, q)| {
            let mut v = vec![i as u8];
            v.extend_from_slice(q);
            v
        })
        .collect();
    write(&dir, "dns", &dns);

    write(&dir, "offload", &offl);

    let vx = vec![
        vxlan(REMOTE_VTEP, VNI, &f_ov_in),
        vxlan(REMOTE_VTEP, VNI, &f_ov_bcast),
        vxlan(
            REMOTE_VTEP,
            VNI,
            &arp(REMOTE_MAC, [10, 5, 0, 9], OV1_IP, None),
        ),
        vxlan(
            REMOTE_VTEP,
            VNI,
            &eth_ping(REMOTE_MAC, OV_GW, [10, 5, 0, 9], OV_GW_IP, 3),
        ),
        vxlan(REMOTE_VTEP, 43, &f_ov_in),
        vxlan([192, 168, 50, 3], VNI, &f_ov_in),
    ];
    write(&dir, "vxlan", &vx);

    let reqs = [
        r#"{"version":1,"op":"show"}"#,
        r#"{"version":1,"op":"network-list"}"#,
        r#"{"version":1,"op":"network-inspect","name":"web"}"#,
        r#"{"version":1,"op":"network-create","name":"web","subnet":"10.9.0.0/24"}"#,
        r#"{"version":1,"op":"network-remove","name":"web","force":true}"#,
        r#"{"version":1,"op":"port-add","name":"p1","network":"web"}"#,
        r#"{"version":1,"op":"port-delete","name":"p1"}"#,
        r#"{"version":1,"op":"fdb-show","network":"bridge"}"#,
        r#"{"version":1,"op":"port-stats"}"#,
        r#"{"version":1,"op":"dhcp-leases"}"#,
        r#"{"version":1,"op":"uplink-set","interface":"eth0","mode":"shared"}"#,
        r#"{"version":1,"op":"conntrack-flush"}"#,
        r#"{"version":1,"op":"vtep-set","ip":"192.168.50.1"}"#,
        r#"{"version":1,"op":"network-peer","network":"ov","ip":"192.168.50.2"}"#,
        r#"{"version":1,"op":"container-create","name":"c1","network":"bridge"}"#,
        r#"{"version":1,"op":"network-connect","network":"web","container":"c1"}"#,
        r#"{"version":1,"op":"publish-add","port":"p1","spec":"10.0.0.1:9000-9002:7000-7002/udp"}"#,
        r#"{"version":1,"op":"publish-remove","port":"p1","spec":"8080:80"}"#,
        r#"{"version":1,"op":"port-add","network":"web","netns":"c1","publish":["8080:80/tcp","53:53/udp"]}"#,
        r#"{"version":1,"op":"publish-list"}"#,
        r#"{"version":1,"op":"trace","port":"c1","flow":"arp,arp_tpa=10.1.0.3"}"#,
        r#"{"version":1,"op":"trace","port":"uplink","hex":"ffffffffffff"}"#,
        r#"{"version":99,"op":"show"}"#,
        r#"{"op":"show"}"#,
    ];
    let reqs: Vec<Vec<u8>> = reqs.iter().map(|r| r.as_bytes().to_vec()).collect();
    write(&dir, "control_request", &reqs);

    // Flows as `vswitchctl trace` takes them (first byte: the port and defaults), each
    // followed by a raw frame.
    let flows = [
        (0u8, "arp,arp_tpa=10.1.0.3"),
        (0, "arp,arp_op=2,arp_tpa=10.1.0.3,arp_spa=10.1.0.9"),
        (1, "icmp,nw_dst=10.1.0.3"),
        (
            0,
            "tcp,nw_dst=198.51.100.10,tp_dst=80,tcp_flags=syn+ack,payload_len=100",
        ),
        (0x42, "tcp,nw_src=198.51.100.10,tp_src=5000,tp_dst=8080"),
        (0, "udp,nw_dst=10.1.0.1,tp_dst=53,dl_vlan=12"),
        (
            0x80,
            "udp,nw_src=0.0.0.0,nw_dst=255.255.255.255,tp_src=68,tp_dst=67",
        ),
        (3, "dl_dst=ff:ff:ff:ff:ff:ff,dl_type=0x88cc"),
        (0, "ip,nw_dst=10.1.0.3,nw_proto=47,nw_ttl=1"),
        (0, "0x02420a010003 02420a010002 0800"),
    ];
    let raw = eth_ping(C2, C1, C2_IP, C1_IP, 7);
    let traces: Vec<Vec<u8>> = flows
        .iter()
        .map(|(sel, f)| {
            let mut v = vec![*sel];
            v.extend_from_slice(f.as_bytes());
            v.push(b'\n');
            v.extend_from_slice(&raw);
            v
        })
        .collect();
    write(&dir, "trace", &traces);
}
