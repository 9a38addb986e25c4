//! Microbenchmarks of the pure pipeline: L2 forwarding, flooding, MAC table at scale, gateway
//! replies. Run with `cargo bench -p vswitch`; compare runs, not absolute numbers (noisy VM).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use etherparse::{ArpEthIpv4Packet, ArpOperation};
use vswitch::switch::fdb::Fdb;
use vswitch::switch::gateway::{Endpoint, GatewayConfig};
use vswitch::switch::{Actions, NetId, NetworkParams, Pipeline, PortId};
use vswitch::wire::MacAddr;

fn mac(i: u32) -> MacAddr {
    let b = i.to_be_bytes();
    MacAddr([0x02, 0x42, b[0], b[1], b[2], b[3]])
}

fn frame(dst: MacAddr, src: MacAddr, len: usize) -> Vec<u8> {
    let mut f = vec![0u8; len];
    f[0..6].copy_from_slice(&dst.0);
    f[6..12].copy_from_slice(&src.0);
    f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    f
}

fn pipeline(ports: u32, gateway: bool, fdb_limit: usize) -> Pipeline {
    let mut p = Pipeline::new();
    let gw = gateway.then(|| GatewayConfig {
        ip: "10.0.0.1".parse().unwrap(),
        mac: MacAddr([0x02, 0x42, 10, 0, 0, 1]),
        subnet: "10.0.0.0/16".parse().unwrap(),
        arp_suppress: true,
        dhcp: None,
        dns_names: true,
        domain: "n.vswitch".into(),
        dns_forward: false,
    });
    p.add_network(
        NetId(0),
        NetworkParams {
            fdb_limit,
            aging_ms: 300_000,
            gateway: gw,
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
    for i in 0..ports {
        let ep = Endpoint {
            mac: mac(i),
            ip: Some(std::net::Ipv4Addr::new(
                10,
                0,
                (i >> 8) as u8,
                (i & 0xff) as u8 + 2,
            )),
            names: vec![format!("c{i}")],
        };
        p.add_port(PortId(i), NetId(0), gateway.then_some(ep));
    }
    p
}

fn l2(c: &mut Criterion) {
    let mut g = c.benchmark_group("l2");
    g.throughput(Throughput::Elements(1));
    for gateway in [false, true] {
        let mut p = pipeline(8, gateway, 8192);
        let mut a = Actions::with_capacity(16);
        let mut f01 = frame(mac(1), mac(0), 1514);
        let mut f10 = frame(mac(0), mac(1), 1514);
        p.process(0, PortId(0), &mut f01, &mut a);
        p.process(0, PortId(1), &mut f10, &mut a);
        let name = if gateway {
            "known_unicast_with_gateway"
        } else {
            "known_unicast"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                p.process(1, PortId(0), black_box(&mut f01), &mut a);
                black_box(a.out.len())
            })
        });
        let mut bcast = frame(MacAddr::BROADCAST, mac(0), 60);
        let name = if gateway {
            "flood_8_ports_with_gateway"
        } else {
            "flood_8_ports"
        };
        g.bench_function(name, |b| {
            b.iter(|| {
                p.process(1, PortId(0), black_box(&mut bcast), &mut a);
                black_box(a.out.len())
            })
        });
    }
    g.finish();
}

fn fdb(c: &mut Criterion) {
    let mut g = c.benchmark_group("fdb");
    g.throughput(Throughput::Elements(1));
    let mut t = Fdb::new(100_000, 300_000);
    for i in 0..100_000 {
        t.learn(mac(i), PortId(i % 64), 0, true);
    }
    let mut i = 0u32;
    g.bench_function("lookup_100k", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            black_box(t.lookup(&mac(i), 1))
        })
    });
    g.bench_function("refresh_100k", |b| {
        b.iter(|| {
            i = (i + 7919) % 100_000;
            black_box(t.learn(mac(i), PortId(i % 64), 2, true))
        })
    });
    let mut n = 100_000u32;
    g.bench_function("learn_evicting_100k", |b| {
        b.iter(|| {
            n = n.wrapping_add(1);
            black_box(t.learn(mac(n), PortId(1), 3, true))
        })
    });
    // Forwarding through a network whose table holds 100 000 MACs.
    let mut p = pipeline(2, false, 100_000);
    let mut a = Actions::with_capacity(4);
    for i in 0..100_000 {
        p.process(
            0,
            PortId(i % 2),
            &mut frame(MacAddr::BROADCAST, mac(1000 + i), 60),
            &mut a,
        );
    }
    let mut f = frame(mac(1001), mac(1000), 1514);
    g.bench_function("forward_with_100k_learned", |b| {
        b.iter(|| {
            p.process(1, PortId(0), black_box(&mut f), &mut a);
            black_box(a.out.len())
        })
    });
    g.finish();
}

fn gateway(c: &mut Criterion) {
    let mut g = c.benchmark_group("gateway");
    g.throughput(Throughput::Elements(1));
    let mut p = pipeline(8, true, 8192);
    let mut a = Actions::with_capacity(16);
    let arp = ArpEthIpv4Packet {
        operation: ArpOperation::REQUEST,
        sender_mac: mac(0).0,
        sender_ipv4: [10, 0, 0, 2],
        target_mac: [0; 6],
        target_ipv4: [10, 0, 0, 3],
    };
    let mut f = Vec::new();
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&mac(0).0);
    f.extend_from_slice(&0x0806u16.to_be_bytes());
    f.extend_from_slice(&arp.to_bytes());
    g.bench_function("arp_suppressed_reply", |b| {
        b.iter(|| {
            p.process(1, PortId(0), black_box(&mut f), &mut a);
            black_box(a.reply.len())
        })
    });
    let mut dns = vec![0u8; 0];
    dns.extend_from_slice(&[
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 2, b'c', b'3', 0, 0, 1, 0, 1,
    ]);
    let builder = etherparse::PacketBuilder::ethernet2(mac(0).0, [0x02, 0x42, 10, 0, 0, 1])
        .ipv4([10, 0, 0, 2], [10, 0, 0, 1], 64)
        .udp(40000, 53);
    let mut q = Vec::new();
    builder.write(&mut q, &dns).unwrap();
    g.bench_function("dns_a_answer", |b| {
        b.iter(|| {
            p.process(1, PortId(0), black_box(&mut q), &mut a);
            black_box(a.reply.len())
        })
    });
    g.finish();
}

criterion_group!(benches, l2, fdb, gateway);
criterion_main!(benches);
