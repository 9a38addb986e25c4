//! Encrypted overlays' control side (`network create --driver overlay --encrypted`): the
//! host's WireGuard key pair (`wireguard.key` in the state dir, mode 0600, made on first use),
//! the WireGuard socket beside the VTEP's, one session per remote host (`Peer`, from every
//! encrypted network's peers and their keys), and what `vtep show` says of them.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::{info, warn};

use super::{internal, invalid, ApiResult, Manager};
use crate::api::WgPeerInfo;
use crate::dataplane::Command;
use crate::ports::wg::{self, Peer, WgSocket};
use crate::state::{NetworkConfig, VtepState};

pub const KEY_FILE: &str = "wireguard.key";

/// The host's private key: read from `dir/wireguard.key`, or made there (0600) when there is
/// none. A key file others may read is refused: it would not be a secret.
pub fn load_or_create_key(dir: &Path) -> Result<[u8; 32], String> {
    let path = dir.join(KEY_FILE);
    match std::fs::metadata(&path) {
        Ok(m) => {
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(format!(
                    "{} has mode {mode:o}: others may read the private key (chmod 600 it)",
                    path.display()
                ));
            }
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            wg::parse_key(&text).map_err(|e| format!("{}: {e}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = [0u8; 32];
            std::fs::File::open("/dev/urandom")
                .and_then(|mut f| f.read_exact(&mut key))
                .map_err(|e| format!("no randomness for a key: {e}"))?;
            // Clamped as Curve25519 keys are (and as `wg genkey` writes them).
            key[0] &= 248;
            key[31] &= 127;
            key[31] |= 64;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            f.write_all(format!("{}\n", wg::encode_key(&key)).as_bytes())
                .and_then(|()| f.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            info!(path = %path.display(), "WireGuard key pair made");
            Ok(key)
        }
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

/// This host's address inside the sessions.
pub fn tunnel_ip(v: &VtepState) -> Ipv4Addr {
    v.tunnel_ip.map_or(v.local_ip, |n| n.addr())
}

/// The keys of a create request's peers (in their order), checked.
pub fn parse_peer_keys(
    peers: &[Ipv4Addr],
    keys: &[String],
) -> ApiResult<BTreeMap<Ipv4Addr, String>> {
    if keys.len() > peers.len() {
        return Err(invalid(format!(
            "{} --peer-key for {} --peer: each key goes with the --peer before it",
            keys.len(),
            peers.len()
        )));
    }
    let mut out = BTreeMap::new();
    for (ip, k) in peers.iter().zip(keys) {
        let bytes = wg::parse_key(k).map_err(invalid)?;
        out.insert(*ip, wg::encode_key(&bytes));
    }
    Ok(out)
}

impl Manager {
    /// The WireGuard socket and key for the VTEP `v` (at `vtep set` and start).
    pub(super) fn bind_wg(&mut self, v: &VtepState) -> ApiResult<()> {
        let _ = self.dp_call(|done| Command::SetWg {
            sock: None,
            vxlan_port: v.port,
            done,
        });
        self.overlay.wg = None;
        let key = load_or_create_key(self.store.dir()).map_err(invalid)?;
        let sock = wg::bind(v.local_ip, v.wg_port).map_err(|e| {
            invalid(format!(
                "cannot bind the WireGuard port {}:{} ({e})",
                v.local_ip, v.wg_port
            ))
        })?;
        let s = sock.clone();
        self.dp_call(|done| Command::SetWg {
            sock: Some(s),
            vxlan_port: v.port,
            done,
        })?
        .map_err(|e| internal(format!("dataplane: cannot poll the WireGuard socket: {e}")))?;
        if self.overlay.wg_key != Some(key) {
            self.overlay.wg_peers.clear();
        }
        self.overlay.wg_key = Some(key);
        self.overlay.wg = Some(sock);
        Ok(())
    }

    /// One session per remote host of the encrypted networks (the same key wherever it is a
    /// peer); the dataplane gets the list. Returns whether any session was made anew, in
    /// which case the encrypted networks' tunnels were rebuilt on the new ones.
    pub(super) fn sync_wg_peers(&mut self) {
        let (Some(key), Some(sock), Some(vtep)) = (
            self.overlay.wg_key,
            self.overlay.wg.clone(),
            self.state.vtep.clone(),
        ) else {
            return;
        };
        let mut want: BTreeMap<Ipv4Addr, ([u8; 32], SocketAddrV4)> = BTreeMap::new();
        for n in self.state.networks.iter().filter(|n| n.encrypted) {
            for (ip, k) in &n.peer_keys {
                let Ok(public) = wg::parse_key(k) else {
                    continue;
                };
                let endpoint = n
                    .peer_endpoints
                    .get(ip)
                    .copied()
                    .unwrap_or(SocketAddrV4::new(*ip, vtep.wg_port));
                want.insert(*ip, (public, endpoint));
            }
        }
        let mut changed = false;
        self.overlay.wg_peers.retain(|ip, p| {
            let keep = want
                .get(ip)
                .is_some_and(|(k, e)| *k == p.public && *e == p.endpoint);
            changed |= !keep;
            keep
        });
        for (ip, (public, endpoint)) in want {
            if self.overlay.wg_peers.contains_key(&ip) {
                continue;
            }
            self.overlay.wg_index = self.overlay.wg_index.wrapping_add(1);
            let peer = Arc::new(Peer::new(&key, public, self.overlay.wg_index, ip, endpoint));
            self.overlay.wg_peers.insert(ip, peer);
            changed = true;
        }
        if !changed {
            return;
        }
        let peers: Vec<Arc<Peer>> = self.overlay.wg_peers.values().cloned().collect();
        if let Err(e) = self.dp_call(|done| Command::WgPeers { peers, done }) {
            warn!(error = %e.message, "WireGuard peers not set");
        }
        let _ = sock;
        // The tunnels hold their sessions: rebuilt on the new ones.
        let nets: Vec<NetworkConfig> = self
            .state
            .networks
            .iter()
            .filter(|n| n.encrypted)
            .cloned()
            .collect();
        for n in &nets {
            self.detach_tunnels(&n.name);
            self.attach_tunnels(n);
        }
    }

    /// The tunnel port to `remote` of encrypted network `net` (its session, or none: no key).
    pub(super) fn wg_tunnel(
        &self,
        vtep: &VtepState,
        remote: Ipv4Addr,
        vni: u32,
    ) -> Option<Box<dyn crate::ports::Port>> {
        let sock: Arc<WgSocket> = self.overlay.wg.clone()?;
        let peer = self.overlay.wg_peers.get(&remote).cloned();
        if peer.is_none() {
            warn!(peer = %remote, "an encrypted network's peer has no key: nothing goes to it");
        }
        Some(Box::new(wg::Tunnel::new(
            sock,
            peer,
            tunnel_ip(vtep),
            remote,
            vtep.port,
            vni,
        )))
    }

    /// `vtep show`'s WireGuard part: the public key and the sessions.
    pub(super) fn wg_info(&self) -> (String, Vec<WgPeerInfo>) {
        let public = self
            .overlay
            .wg_key
            .map(|k| wg::encode_key(&wg::public_of(&k)))
            .unwrap_or_default();
        let peers = self
            .overlay
            .wg_peers
            .values()
            .map(|p| WgPeerInfo {
                tunnel_ip: p.tunnel_ip.to_string(),
                endpoint: p.endpoint.to_string(),
                public_key: wg::encode_key(&p.public),
                handshake_age_secs: p.handshake_age(),
                tx_messages: p.counters.tx_packets.load(Ordering::Relaxed),
                queued: p.counters.queued.load(Ordering::Relaxed),
                rx_packets: p.counters.rx_packets.load(Ordering::Relaxed),
                rx_bad: p.counters.rx_bad.load(Ordering::Relaxed),
            })
            .collect();
        (public, peers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_is_made_once_private_and_refused_when_others_may_read_it() {
        let dir = std::env::temp_dir().join(format!("vswitch-wgkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::fs::remove_file(dir.join(KEY_FILE));
        let k1 = load_or_create_key(&dir).unwrap();
        let mode = std::fs::metadata(dir.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(load_or_create_key(&dir).unwrap(), k1, "kept across starts");
        std::fs::set_permissions(dir.join(KEY_FILE), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let e = load_or_create_key(&dir).unwrap_err();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn peer_keys_go_with_their_peers() {
        let peers = [Ipv4Addr::new(192, 0, 2, 2), Ipv4Addr::new(192, 0, 2, 3)];
        let k = wg::encode_key(&wg::public_of(&[9; 32]));
        let m = parse_peer_keys(&peers, std::slice::from_ref(&k)).unwrap();
        assert_eq!(m.get(&peers[0]), Some(&k));
        assert_eq!(m.get(&peers[1]), None, "a peer without a key");
        assert!(parse_peer_keys(&peers[..1], &[k.clone(), k.clone()]).is_err());
        assert!(parse_peer_keys(&peers, &["garbage".into()]).is_err());
    }
}
