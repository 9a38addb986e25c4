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
        | Op::ClusterShow
        | Op::ContainerList
        | Op::ContainerInspect { .. }
        | Op::PublishList
        | Op::Trace { .. }
        | Op::Events => Read,
        Op::NetworkCreate(_)
        | Op::NetworkRemove { .. }
        | Op::PortAdd(_)
        | Op::PortDelete { .. }
        | Op::UplinkSet(_)
        | Op::UplinkRemove
        | Op::ConntrackFlush { .. }
        | Op::VtepSet(_)
        | Op::NetworkPeer { .. }
        | Op::FdbAdd { .. }
        | Op::FdbDel { .. }
        | Op::ContainerCreate(_)
        | Op::ContainerRemove { .. }
        | Op::NetworkConnect(_)
        | Op::NetworkDisconnect { .. }
        | Op::PublishAdd { .. }
        | Op::PublishRemove { .. }
        // It shows the containers' traffic: as much trust as changing the switch.
        | Op::Capture(_) => Change,
    }
}

/// What a connection's peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    /// Nothing: every request is refused with `permission_denied`.
    None,
    /// Read-only ops.
    Read,
    /// Everything.
    Change,
}

impl Grant {
    pub fn allows(self, access: Access) -> bool {
        match access {
            Access::Read => self >= Grant::Read,
            Access::Change => self == Grant::Change,
        }
    }
}

/// Who may use the control socket: root always; members of `change_gid` for every op; members
/// of `read_gid` for the read-only ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    pub change_gid: Option<u32>,
    pub read_gid: Option<u32>,
}

/// A connection's peer as the kernel saw it at connect(2) (`SO_PEERCRED`), with the
/// supplementary groups of its process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
    pub groups: Vec<u32>,
}

impl Peer {
    /// The credentials of the other end of `stream`.
    pub fn of(stream: &std::os::unix::net::UnixStream) -> std::io::Result<Peer> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let cred = getsockopt(stream, PeerCredentials).map_err(std::io::Error::from)?;
        let (uid, gid, pid) = (cred.uid(), cred.gid(), cred.pid());
        let groups = proc_groups(pid, uid).unwrap_or_default();
        Ok(Peer {
            uid,
            gid,
            pid,
            groups,
        })
    }

    pub fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }
}

/// The supplementary groups of process `pid`, from /proc/PID/status — only while that process
/// still has real and effective uid `uid` (so a reused pid is not taken for the peer).
fn proc_groups(pid: i32, uid: u32) -> Option<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_groups(&status, uid)
}

fn parse_status_groups(status: &str, uid: u32) -> Option<Vec<u32>> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .filter_map(|v| v.parse::<u32>().ok())
                    .collect::<Vec<_>>()
            })
    };
    let uids = field("Uid:")?;
    if uids.len() < 2 || uids[0] != uid || uids[1] != uid {
        return None;
    }
    field("Groups:")
}

impl Policy {
    /// What `peer` may do.
    pub fn grant(&self, peer: &Peer) -> Grant {
        if peer.uid == 0 || self.change_gid.is_some_and(|g| peer.in_group(g)) {
            Grant::Change
        } else if self.read_gid.is_some_and(|g| peer.in_group(g)) {
            Grant::Read
        } else {
            Grant::None
        }
    }
}

/// The gid of group `name`, or what to do about it.
pub fn group_id(name: &str, what: &str) -> Result<u32, String> {
    match nix::unistd::Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid.as_raw()),
        Ok(None) => Err(format!(
            "{what} {name:?} does not exist: create it (groupadd {name}) or name another"
        )),
        Err(e) => Err(format!("cannot look up {what} {name:?}: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(uid: u32, gid: u32, groups: &[u32]) -> Peer {
        Peer {
            uid,
            gid,
            pid: 1,
            groups: groups.to_vec(),
        }
    }

    #[test]
    fn grants() {
        let p = Policy {
            change_gid: Some(100),
            read_gid: Some(200),
        };
        assert_eq!(p.grant(&peer(0, 0, &[])), Grant::Change, "root");
        assert_eq!(p.grant(&peer(1000, 100, &[])), Grant::Change, "primary");
        assert_eq!(p.grant(&peer(1000, 1000, &[5, 100])), Grant::Change);
        assert_eq!(p.grant(&peer(1000, 1000, &[200])), Grant::Read);
        assert_eq!(p.grant(&peer(65534, 65534, &[])), Grant::None);
        let none = Policy::default();
        assert_eq!(none.grant(&peer(0, 0, &[])), Grant::Change);
        assert_eq!(none.grant(&peer(1000, 100, &[100])), Grant::None);
        assert!(Grant::Read.allows(Access::Read));
        assert!(!Grant::Read.allows(Access::Change));
        assert!(!Grant::None.allows(Access::Read));
        assert!(Grant::Change.allows(Access::Change));
    }

    #[test]
    fn status_groups() {
        let s =
            "Name:\tx\nUid:\t65534\t65534\t65534\t65534\nGid:\t1\t1\t1\t1\nGroups:\t4 27 100 \n";
        assert_eq!(parse_status_groups(s, 65534), Some(vec![4, 27, 100]));
        assert_eq!(parse_status_groups(s, 1000), None, "another user's process");
        let s = "Uid:\t0\t0\t0\t0\nGroups:\t\n";
        assert_eq!(parse_status_groups(s, 0), Some(vec![]));
    }

    #[test]
    fn classification() {
        assert_eq!(access_of(&Op::Show), Access::Read);
        assert_eq!(access_of(&Op::NetworkList), Access::Read);
        assert_eq!(access_of(&Op::UplinkRemove), Access::Change);
        assert_eq!(
            access_of(&Op::NetworkRemove {
                name: "x".into(),
                force: false
            }),
            Access::Change
        );
    }
}
