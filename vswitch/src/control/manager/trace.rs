//! `vswitchctl trace PORT FLOW`: builds the frame (from the flow syntax, filling in what the
//! port would send), has the dataplane run it through a copy of its pipeline, and names the
//! ports, networks and VXLAN encapsulations in what comes back.

use std::net::Ipv4Addr;

use super::{gateway_mac, invalid, ApiResult, Manager};
use crate::api::*;
use crate::dataplane::Command;
use crate::switch::{NetId, PortId};
use crate::wire::flow::{self, Defaults};
use crate::wire::MacAddr;

/// The MAC a traced frame on the uplink comes from unless the flow says (an outside host).
const OUTSIDE_MAC: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);

impl Manager {
    pub(super) fn trace(
        &self,
        port: &str,
        flow_text: Option<&str>,
        hex: Option<&str>,
    ) -> ApiResult<Reply> {
        let (id, defaults, next_hop) = self.trace_ingress(port)?;
        let frame = match (flow_text, hex) {
            (Some(f), None) => flow::build(f, &defaults, &*next_hop),
            (None, Some(h)) => flow::from_hex(h),
            _ => return Err(invalid("trace takes a FLOW or --hex BYTES (one of them)")),
        }
        .map_err(|e| invalid(format!("flow: {e}")))?;
        if frame.len() < 14 {
            return Err(invalid(format!(
                "a {}-byte frame: an Ethernet frame has at least 14",
                frame.len()
            )));
        }
        if frame.len() > 65535 {
            return Err(invalid("a frame of more than 64 KiB"));
        }
        let hex_in = frame.iter().map(|b| format!("{b:02x}")).collect();
        let report = self.dp_call(|reply| Command::Trace {
            port: id,
            frame,
            reply,
        })?;

        let names = self.port_names_by_id();
        let net_names: std::collections::HashMap<NetId, String> =
            self.nets.iter().map(|(n, id)| (*id, n.clone())).collect();
        let pname = |p: PortId| {
            names
                .get(&p)
                .cloned()
                .unwrap_or_else(|| format!("#{}", p.0))
        };
        let vtep = self.state.vtep.as_ref();
        let sock = self.overlay.sock.as_ref();
        let outputs = report
            .out
            .iter()
            .map(|o| TraceOutput {
                port: pname(o.port),
                vxlan: o.vxlan.map(|(vni, remote)| {
                    let local = sock
                        .and_then(|s| s.source_for(&report.frame_out))
                        .map(|a| a.to_string())
                        .unwrap_or_else(|| "?".into());
                    let port = vtep.map_or(crate::switch::overlay::DEFAULT_PORT, |v| v.port);
                    let ttl = vtep.map_or(64, |v| v.ttl);
                    format!("vni {vni}, {local} -> {remote}:{port}, ttl {ttl}, df")
                }),
            })
            .collect();
        let network = report
            .steps
            .iter()
            .find(|s| s.stage == "ingress")
            .and_then(|s| s.network)
            .and_then(|n| net_names.get(&n).cloned());
        Ok(Reply::Trace(TraceInfo {
            port: port.to_string(),
            network,
            flow: report.flow,
            hex: hex_in,
            steps: report
                .steps
                .iter()
                .map(|s| TraceStep {
                    stage: s.stage.to_string(),
                    verdict: s.verdict.to_string(),
                    detail: s.detail.clone(),
                    port: s.port.map(pname),
                    network: s.network.and_then(|n| net_names.get(&n).cloned()),
                })
                .collect(),
            outputs,
            flooded: report.flooded,
            drop: report.drop.map(|d| d.name().to_string()),
            rewritten: report.rewritten,
            reply: report.reply,
            emitted: report
                .emitted
                .into_iter()
                .map(|(p, f)| TraceOutputFrame {
                    port: pname(p),
                    frame: f,
                })
                .collect(),
            events: report.events,
        }))
    }

    /// The port a trace enters on, what its frames look like, and where an IPv4 packet's
    /// `dl_dst` goes when the flow does not say.
    #[allow(clippy::type_complexity)]
    fn trace_ingress(
        &self,
        port: &str,
    ) -> ApiResult<(PortId, Defaults, Box<dyn Fn(Ipv4Addr) -> Option<MacAddr>>)> {
        let uplink = self.uplink_port();
        if let Some((id, name)) = uplink.filter(|(_, n)| port == "uplink" || port == n) {
            let _ = name;
            let st = self.state.uplink.as_ref();
            let mac = self
                .uplink
                .as_ref()
                .and_then(|u| u.as_ref().ok())
                .map(|u| u.mac)
                .unwrap_or(MacAddr::ZERO);
            let defaults = Defaults {
                mac: OUTSIDE_MAC,
                ip: None,
                nw_dst: st.map(|u| u.ip.addr()),
            };
            return Ok((id, defaults, Box::new(move |_| Some(mac))));
        }
        if port == "uplink" || port.starts_with("uplink:") {
            return Err(invalid(
                "the switch has no uplink attached (`vswitchctl uplink show`)",
            ));
        }
        if port.starts_with("vxlan:") {
            return Err(invalid(
                "trace enters on a container's port or the uplink; a frame from a remote VTEP \
                 cannot be traced yet",
            ));
        }
        let cfg = self.port_config(port)?;
        let Some(id) = self.ports.get(port).and_then(|p| p.id) else {
            return Err(invalid(format!(
                "port {port:?} is not attached to the dataplane (`vswitchctl show` says why)"
            )));
        };
        let net = self.net_config(&cfg.network)?;
        let (subnet, gw) = (net.subnet, net.gateway);
        let neighbours: Vec<(Ipv4Addr, MacAddr)> = self
            .state
            .ports
            .iter()
            .filter(|p| p.network == cfg.network)
            .filter_map(|p| p.ip.map(|ip| (ip.addr(), p.mac)))
            .collect();
        let defaults = Defaults {
            mac: cfg.mac,
            ip: cfg.ip.map(|i| i.addr()),
            nw_dst: None,
        };
        let next_hop = move |dst: Ipv4Addr| {
            if dst == gw || !subnet.contains(&dst) {
                Some(gateway_mac(gw))
            } else if dst == subnet.broadcast() {
                Some(MacAddr::BROADCAST)
            } else {
                neighbours
                    .iter()
                    .find(|(ip, _)| *ip == dst)
                    .map(|(_, m)| *m)
            }
        };
        Ok((id, defaults, Box::new(next_hop)))
    }
}
