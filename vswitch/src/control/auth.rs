//! Who may do what on the control socket: every op is a read or a change, and the peer's
//! credentials (`SO_PEERCRED`) decide which the connection may use.

use crate::api::Op;

/// What an op does to the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Only looks.
    Read,
    /// Changes configuration, state or tables.
    Change,
}

/// The access `op` needs. Exhaustive on purpose: a new op must be classified here.
pub fn access_of(op: &Op) -> Access {
    use Access::{Change, Read};
    match op {
        Op::NetworkList
        | Op::NetworkInspect { .. }
        | Op::Show
        | Op::FdbShow { .. }
        | Op::PortStats { .. }
        | Op::ArpShow { .. }
        | Op::DhcpLeases { .. }
        | Op::UplinkShow
        | Op::ConntrackShow { .. }
        | Op::ConntrackStats
        | Op::VtepShow
        | Op::ContainerList
        | Op::ContainerInspect { .. } => Read,
        Op::NetworkCreate(_)
        | Op::NetworkRemove { .. }
        | Op::PortAdd(_)
        | Op::PortDelete { .. }
        | Op::UplinkSet(_)
        | Op::UplinkRemove
        | Op::ConntrackFlush { .. }
        | Op::VtepSet(_)
        | Op::NetworkPeer { .. }
        | Op::ContainerCreate(_)
        | Op::ContainerRemove { .. }
        | Op::NetworkConnect(_)
        | Op::NetworkDisconnect { .. } => Change,
    }
}
