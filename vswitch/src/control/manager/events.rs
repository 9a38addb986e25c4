//! What the manager tells `vswitchctl events`: the changes requests made (from the request and
//! its answer, in one place), and what the dataplane and the namespace watcher report.

use super::Manager;
use crate::api::*;
use crate::control::events::now_us;

/// What a change request was about, kept before it is handled (the request is consumed).
pub(super) struct Pending {
    kind: &'static str,
    network: Option<String>,
    port: Option<String>,
    detail: String,
}

/// The event a successful change request makes, once its reply is known.
pub(super) fn pending(op: &Op) -> Option<Pending> {
    let p = |kind, network: Option<&str>, port: Option<&str>, detail: String| {
        Some(Pending {
            kind,
            network: network.map(str::to_owned),
            port: port.map(str::to_owned),
            detail,
        })
    };
    match op {
        Op::NetworkCreate(r) => p("network-created", Some(&r.name), None, r.subnet.clone()),
        Op::NetworkRemove { name, .. } => p("network-removed", Some(name), None, String::new()),
        Op::PortAdd(r) => p("port-added", Some(&r.network), None, String::new()),
        Op::PortDelete { name } => p("port-removed", None, Some(name), String::new()),
        Op::NetworkPeer {
            network,
            ip,
            remove,
            ..
        } => p(
            if *remove {
                "peer-removed"
            } else {
                "peer-added"
            },
            Some(network),
            None,
            format!("VTEP {ip}"),
        ),
        Op::UplinkSet(r) => p("uplink-set", None, Some(&r.iface), String::new()),
        Op::UplinkRemove => p("uplink-removed", None, None, String::new()),
        Op::ContainerCreate(r) => p("container-created", None, None, r.name.clone()),
        Op::ContainerRemove { name, .. } => p("container-removed", None, None, name.clone()),
        Op::NetworkConnect(r) => p(
            "container-connected",
            Some(&r.network),
            None,
            r.container.clone(),
        ),
        Op::NetworkDisconnect { network, container } => p(
            "container-disconnected",
            Some(network),
            None,
            container.clone(),
        ),
        _ => None,
    }
}

impl Manager {
    /// Sends an event to whoever follows them.
    pub(super) fn emit(
        &self,
        kind: &str,
        network: Option<String>,
        port: Option<String>,
        detail: impl Into<String>,
    ) {
        self.hub.emit(EventInfo {
            time_us: now_us(),
            kind: kind.into(),
            network,
            port,
            detail: detail.into(),
            missed: 0,
        });
    }

    /// The event of a change request that succeeded with `reply`.
    pub(super) fn emit_change(&self, p: Pending, reply: &Reply) {
        let (mut port, mut detail) = (p.port, p.detail);
        match reply {
            Reply::Port(info) => {
                port = Some(info.name.clone());
                detail = format!(
                    "{} {} in {} as {}",
                    info.kind,
                    info.ip.as_deref().unwrap_or("(no address)"),
                    info.netns,
                    info.mac
                );
            }
            Reply::Container(c) => {
                let nets: Vec<String> = c
                    .networks
                    .iter()
                    .map(|n| format!("{} {}", n.network, n.ip.as_deref().unwrap_or("-")))
                    .collect();
                detail = format!("{detail}: {} ({})", c.mode, nets.join(", "));
            }
            Reply::Uplink(Some(u)) => detail = format!("{} {}", u.mode, u.ip),
            _ => {}
        }
        self.emit(p.kind, p.network, port, detail);
    }
}
