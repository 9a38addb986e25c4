//! Packet trace: why the switch does what it does with a frame (`vswitchctl trace`, after Open
//! vSwitch's `ofproto/trace`).
//!
//! The frame runs through the real pipeline (`Pipeline::process`, the same code the dataplane
//! runs) on a copy of the live tables, with a recorder in `Actions::trace` that each stage writes
//! its decision into. The copy is what makes a trace free of side effects: what the frame would
//! learn, the conntrack entry it would create, the counters it would bump all land in the copy,
//! which is thrown away. The untraced path pays one `Option` test per stage and allocates
//! nothing (the recorder is `None`).

use std::net::Ipv4Addr;

use super::{Actions, DropReason, NetId, Pipeline, PortId};
use crate::wire::flow;

/// One stage's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `ingress`, `classify`, `port_security`, `learn`, `gateway`, `route`, `nat`,
    /// `conntrack`, `fdb`, `icc`, `flood`, `overlay`, `emit`.
    pub stage: &'static str,
    /// What the stage did, in a word: `pass`, `drop`, `hit`, `miss`, `new`, …
    pub verdict: &'static str,
    pub detail: String,
    /// The port the decision is about (an FDB hit's, a MAC's previous port), if any.
    pub port: Option<PortId>,
    /// The network the decision is about, if any.
    pub network: Option<NetId>,
}

impl Step {
    pub fn new(stage: &'static str, verdict: &'static str, detail: impl Into<String>) -> Step {
        Step {
            stage,
            verdict,
            detail: detail.into(),
            port: None,
            network: None,
        }
    }

    pub fn port(mut self, p: PortId) -> Step {
        self.port = Some(p);
        self
    }

    pub fn network(mut self, n: NetId) -> Step {
        self.network = Some(n);
        self
    }
}

/// Where a traced frame goes out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub port: PortId,
    /// A tunnel: the VNI and remote VTEP it is encapsulated for.
    pub vxlan: Option<(u32, Ipv4Addr)>,
}

/// Everything a trace found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The frame as it came in, in the flow syntax.
    pub flow: String,
    pub steps: Vec<Step>,
    /// The ports the frame (as `rewritten` says, if it was) goes out of.
    pub out: Vec<Output>,
    pub flooded: bool,
    pub drop: Option<DropReason>,
    /// The frame after the switch's rewrites (NAT, routing), if it changed.
    pub rewritten: Option<String>,
    /// The raw frame after the rewrites (the VXLAN socket's flow hash is computed on it).
    pub frame_out: Vec<u8>,
    /// What the gateway (or the uplink) answered, back out of the ingress port.
    pub reply: Option<String>,
    /// Frames the switch would send on its own (an ARP request for a next hop), by port.
    pub emitted: Vec<(PortId, String)>,
    /// What the control plane would be told (a lease, an upstream DNS query).
    pub events: Vec<String>,
}

/// Traces `frame` as if received on `in_port` at `now`. `pipeline` is not changed.
pub fn run(pipeline: &Pipeline, now: u64, in_port: PortId, frame: &[u8]) -> Report {
    let mut p = pipeline.clone();
    let mut actions = Actions::with_capacity(8);
    actions.trace = Some(Vec::new());
    let mut buf = frame.to_vec();
    let ct_before = p.uplink().map(|u| u.ct.len());
    p.process(now, in_port, &mut buf, &mut actions);
    let mut steps = actions.trace.take().unwrap_or_default();

    let rewritten = (buf != frame).then(|| flow::describe(&buf));
    if let (Some(before), Some(after)) = (ct_before, p.uplink().map(|u| u.ct.len())) {
        if after > before {
            steps.push(Step::new(
                "conntrack",
                "new",
                format!("a new entry ({} in the table)", after),
            ));
        }
    }
    if rewritten.is_some() {
        let detail = match (flow::tuple(frame), flow::tuple(&buf)) {
            (Some(a), Some(b)) if a != b => {
                // `tcp A -> B becomes A' -> B'`: the protocol once.
                let proto = a.split(' ').next().unwrap_or_default();
                let b = b.strip_prefix(proto).map_or(b.as_str(), str::trim_start);
                format!("{a} becomes {b}")
            }
            (Some(a), Some(_)) => format!("{a} kept (routed: new MACs, TTL - 1)"),
            _ => "rewritten (see the frame out)".to_string(),
        };
        steps.push(Step::new("nat", "rewrite", detail));
    }
    let out: Vec<Output> = actions
        .out
        .iter()
        .map(|&port| Output {
            port,
            vxlan: p.tunnels.tunnel_of(port),
        })
        .collect();
    for o in &out {
        if let Some((vni, vtep)) = o.vxlan {
            steps.push(
                Step::new(
                    "overlay",
                    "encap",
                    format!("VXLAN VNI {vni} to VTEP {vtep}"),
                )
                .port(o.port),
            );
        }
    }
    let reply = (!actions.reply.is_empty()).then(|| flow::describe(&actions.reply));
    let emitted = actions
        .emit
        .iter()
        .map(|(port, f)| (*port, flow::describe(f)))
        .collect();
    let events = actions.events.iter().map(describe_event).collect();
    Report {
        flow: flow::describe(frame),
        steps,
        out,
        flooded: actions.flooded,
        drop: actions.drop,
        rewritten,
        frame_out: buf,
        reply,
        emitted,
        events,
    }
}

fn describe_event(e: &super::gateway::Event) -> String {
    use super::gateway::Event;
    match e {
        Event::Lease { lease, .. } => format!("DHCP lease {} to {}", lease.ip, lease.mac),
        Event::Released { mac, .. } => format!("DHCP release by {mac}"),
        Event::PeerLearned { vtep, .. } => format!("new overlay peer {vtep}"),
        Event::MacMoved { mac, .. } => format!("{mac} moved to this port"),
        Event::PortDown { reason, .. } => format!("port down: {reason}"),
        Event::ConntrackFull { refused } => format!("{refused} flows refused: conntrack full"),
        Event::DnsForward(f) => format!(
            "DNS query forwarded to the upstream resolvers for {}:{}",
            f.client_ip, f.client_port
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::switch::gateway::{Endpoint, GatewayConfig};
    use crate::switch::security::PortGuard;
    use crate::switch::NetworkParams;
    use crate::wire::flow::{build, Defaults};
    use crate::wire::MacAddr;

    const GW_MAC: MacAddr = MacAddr([2, 0x42, 10, 9, 0, 1]);

    fn mac(n: u8) -> MacAddr {
        MacAddr([2, 0x42, 10, 9, 0, n])
    }

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 9, 0, n)
    }

    /// A network with a gateway and two secured ports (2 and 3), and a third network member 4
    /// without an address.
    fn pipeline() -> Pipeline {
        let mut p = Pipeline::new();
        p.add_network(
            NetId(0),
            NetworkParams {
                fdb_limit: 100,
                aging_ms: 300_000,
                gateway: Some(GatewayConfig {
                    ip: ip(1),
                    mac: GW_MAC,
                    subnet: "10.9.0.0/24".parse().unwrap(),
                    arp_suppress: true,
                    dhcp: None,
                    dns_names: true,
                    domain: String::new(),
                    dns_forward: false,
                }),
                egress: true,
                vni: None,
                overlay_mtu: None,
                learn_peers: false,
                encrypted: false,
                icc: true,
                port_mac_limit: 64,
                gateway_rate: 0,
            },
        );
        for n in [2u8, 3] {
            p.add_port(
                PortId(n as u32),
                NetId(0),
                Some(Endpoint {
                    mac: mac(n),
                    ip: Some(ip(n)),
                    names: vec![format!("c{n}")],
                }),
            );
            p.set_port_guard(
                PortId(n as u32),
                Some(PortGuard {
                    mac: mac(n),
                    ip: ip(n),
                }),
            );
        }
        p.add_port(PortId(4), NetId(0), None);
        p
    }

    fn frame(flow: &str) -> Vec<u8> {
        let d = Defaults {
            mac: mac(2),
            ip: Some(ip(2)),
            nw_dst: None,
        };
        let next = |a: Ipv4Addr| Some(if a == ip(3) { mac(3) } else { GW_MAC });
        build(flow, &d, &next).unwrap()
    }

    fn stage<'a>(r: &'a Report, s: &str) -> &'a Step {
        r.steps
            .iter()
            .find(|x| x.stage == s)
            .unwrap_or_else(|| panic!("no {s} step in {:#?}", r.steps))
    }

    #[test]
    fn arp_for_a_known_container_is_suppressed_and_nothing_changes() {
        let p = pipeline();
        let before = format!("{p:?}");
        let r = run(&p, 1000, PortId(2), &frame("arp,arp_tpa=10.9.0.3"));
        assert_eq!(stage(&r, "port_security").verdict, "pass");
        assert_eq!(stage(&r, "learn").verdict, "new");
        assert_eq!(stage(&r, "gateway").verdict, "consumed");
        let reply = r.reply.as_deref().unwrap();
        assert!(
            reply.contains("arp_op=2,arp_spa=10.9.0.3")
                && reply.contains("arp_sha=02:42:0a:09:00:03"),
            "{reply}"
        );
        assert!(r.out.is_empty() && r.drop.is_none());
        assert_eq!(format!("{p:?}"), before, "the trace changed the pipeline");
    }

    #[test]
    fn known_mac_unknown_mac_and_a_spoofed_source() {
        let mut p = pipeline();
        // 3 has spoken: its MAC is known.
        let mut a = Actions::with_capacity(4);
        let mut f3 = frame("icmp,nw_dst=10.9.0.2,dl_dst=02:42:0a:09:00:02");
        f3[6..12].copy_from_slice(&mac(3).0);
        f3[26..30].copy_from_slice(&ip(3).octets());
        p.process(0, PortId(3), &mut f3, &mut a);
        let r = run(&p, 1000, PortId(2), &frame("icmp,nw_dst=10.9.0.3"));
        let hit = stage(&r, "fdb");
        assert_eq!((hit.verdict, hit.port), ("hit", Some(PortId(3))));
        assert_eq!(
            r.out,
            vec![Output {
                port: PortId(3),
                vxlan: None
            }]
        );
        assert!(!r.flooded);

        let r = run(
            &p,
            1000,
            PortId(2),
            &frame("icmp,nw_dst=10.9.0.7,dl_dst=02:42:0a:09:00:07"),
        );
        assert_eq!(stage(&r, "fdb").verdict, "miss");
        assert!(r.flooded);
        let mut ports: Vec<u32> = r.out.iter().map(|o| o.port.0).collect();
        ports.sort();
        assert_eq!(ports, vec![3, 4]);

        let r = run(
            &p,
            1000,
            PortId(2),
            &frame("icmp,nw_dst=10.9.0.3,nw_src=10.9.0.3"),
        );
        assert_eq!(stage(&r, "port_security").verdict, "drop");
        assert_eq!(r.drop, Some(DropReason::SpoofedIp));
        assert!(r.out.is_empty());
    }

    #[test]
    fn routed_without_an_uplink_says_so() {
        let p = pipeline();
        let r = run(
            &p,
            1000,
            PortId(2),
            &frame("tcp,nw_dst=192.0.2.1,tp_dst=80"),
        );
        assert_eq!(stage(&r, "gateway").verdict, "route");
        assert_eq!(stage(&r, "route").verdict, "drop");
        assert_eq!(r.drop, Some(DropReason::NoRoute));
    }

    #[test]
    fn a_trace_on_an_unknown_port_is_a_drop() {
        let r = run(&pipeline(), 0, PortId(99), &frame("arp,arp_tpa=10.9.0.3"));
        assert_eq!(r.drop, Some(DropReason::UnknownPort));
    }
}
