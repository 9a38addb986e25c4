//! Encrypted overlays: VXLAN inside WireGuard, in userspace (boringtun's `noise` module for
//! the protocol: Noise IK handshakes, ChaCha20-Poly1305 transport, rekeying, cookies).
//!
//! WireGuard carries IP packets, so an encrypted network's frame travels as what a kernel
//! vxlan device over a WireGuard interface sends: an IPv4/UDP packet from this host's tunnel
//! address to the peer's, port 4789, a VXLAN header, the frame — encrypted into a transport
//! message on the WireGuard port (51820) of the VTEP's address. That is what makes a kernel
//! peer with `wireguard-go` or the `wireguard` module interoperate.
//!
//! - `WgSocket`: the UDP socket every encrypted overlay's messages use, read by the dataplane.
//! - `Peer`: one remote host's session (its public key, where its messages go, its tunnel
//!   address), shared by the tunnel ports towards it and the receive side.
//! - `Tunnel`: a tunnel port of an encrypted network: what the pipeline sends it is wrapped
//!   and encrypted for its peer. A frame never leaves in the clear: with no session yet it
//!   waits in the session's queue (boringtun's, bounded) while the handshake runs; a peer with
//!   no key gets nothing (`no_key`).
//!
//! Timers (handshake retries, keepalives, rekeying after 2 minutes or 2^60 messages) run from
//! the dataplane's one-second tick, off the per-packet path.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use boringtun::noise::{Tunn, TunnResult};
use boringtun::x25519::{PublicKey, StaticSecret};

use super::udp_batch::{self, RxBatch, TxQueue};
use super::Port;
use crate::switch::overlay;
use crate::wire::checksum::checksum;

/// WireGuard's own port.
pub const DEFAULT_PORT: u16 = 51820;
/// What WireGuard adds to a packet on an IPv4 underlay: the outer IPv4 (20) and UDP (8)
/// headers, the transport message's header (16) and its tag (16). An encrypted overlay's
/// ports default to the underlay MTU minus VXLAN's 50 and this.
pub const OVERHEAD: u32 = 60;
/// Room for a message: the largest inner packet plus WireGuard's header and tag.
#[cfg(test)]
const BUF: usize = 65536 + 64;
/// A transport (data) message's type.
const MSG_TRANSPORT: u8 = 4;
/// Room for a handshake message (initiation 148 bytes, response 92, cookie 64).
const HANDSHAKE_ROOM: usize = 148;
/// The VXLAN packets' TTL inside the sessions.
const INNER_TTL: u8 = 64;

/// An error a tunnel port's send returns when its peer has no key (the dataplane counts it
/// as `no_key`).
pub fn no_key() -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, "the peer has no key")
}

/// Reads a base64 WireGuard key (32 bytes), as `wg` prints them.
pub fn parse_key(s: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(s.trim())
        .map_err(|e| format!("{s:?} is not a base64 WireGuard key: {e}"))?;
    bytes
        .try_into()
        .map_err(|_| format!("{s:?} is not a WireGuard key: it must be 32 bytes"))
}

pub fn encode_key(k: &[u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(k)
}

/// The public key of a private one.
pub fn public_of(private: &[u8; 32]) -> [u8; 32] {
    PublicKey::from(&StaticSecret::from(*private)).to_bytes()
}

/// The encrypted overlays' socket on the VTEP's address: read in batches (`recvmmsg`, with
/// `UDP_GRO`), each tunnel's messages of a dataplane batch sent together (UDP GSO or
/// `sendmmsg`, as the VXLAN socket's).
pub struct WgSocket {
    pub sock: UdpSocket,
    /// The kernel takes `UDP_SEGMENT` (cleared when it refuses it).
    pub gso: AtomicBool,
}

impl WgSocket {
    pub fn new(sock: UdpSocket) -> WgSocket {
        WgSocket {
            sock,
            gso: AtomicBool::new(true),
        }
    }

    /// Reads up to a batch of messages (each maybe a GRO batch) into `batch`.
    pub fn recv_batch(&self, batch: &mut RxBatch) -> io::Result<usize> {
        udp_batch::recv_batch(self.sock.as_raw_fd(), batch)
    }
}

pub fn bind(local: Ipv4Addr, port: u16) -> io::Result<Arc<WgSocket>> {
    let sock = UdpSocket::bind(SocketAddrV4::new(local, port))?;
    sock.set_nonblocking(true)?;
    udp_batch::set_buffers(sock.as_raw_fd(), 4 << 20);
    udp_batch::enable_gro(sock.as_raw_fd());
    Ok(Arc::new(WgSocket::new(sock)))
}

/// A peer's counters, read by `vtep show`.
#[derive(Debug, Default)]
pub struct PeerCounters {
    pub tx_packets: AtomicU64,
    /// Packets that waited for a handshake (boringtun keeps up to 256 of them per session;
    /// past that, a packet waiting is dropped).
    pub queued: AtomicU64,
    pub rx_packets: AtomicU64,
    /// Messages that did not authenticate or made no sense.
    pub rx_bad: AtomicU64,
}

/// One remote host of the encrypted overlays.
pub struct Peer {
    /// Its address inside the sessions (the inner VXLAN packets' destination), which also
    /// names it as a VTEP in `fdb show`.
    pub tunnel_ip: Ipv4Addr,
    /// Where its messages go.
    pub endpoint: SocketAddrV4,
    pub public: [u8; 32],
    tunn: Mutex<Tunn>,
    pub counters: PeerCounters,
}

impl Peer {
    pub fn new(
        private: &[u8; 32],
        public: [u8; 32],
        index: u32,
        tunnel_ip: Ipv4Addr,
        endpoint: SocketAddrV4,
    ) -> Peer {
        let tunn = Tunn::new(
            StaticSecret::from(*private),
            PublicKey::from(public),
            None,
            None,
            index,
            None,
        );
        Peer {
            tunnel_ip,
            endpoint,
            public,
            tunn: Mutex::new(tunn),
            counters: PeerCounters::default(),
        }
    }

    fn tunn(&self) -> std::sync::MutexGuard<'_, Tunn> {
        // A panic while holding it would have been a bug elsewhere; the session state is
        // still usable.
        self.tunn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Encrypts one IP packet and sends it (or queues it and sends a handshake initiation).
    pub fn send(&self, sock: &WgSocket, packet: &[u8], out: &mut [u8]) -> io::Result<()> {
        let r = self.tunn().encapsulate(packet, out);
        match r {
            TunnResult::WriteToNetwork(msg) => {
                sock.sock.send_to(msg, self.endpoint)?;
                self.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            TunnResult::Err(e) => Err(io::Error::other(format!("{e:?}"))),
            _ => Ok(()),
        }
    }

    /// Encrypts one IP packet into `queue` (or, with no session yet, keeps it and queues a
    /// handshake initiation instead).
    pub fn encrypt_into(&self, packet: &[u8], queue: &mut TxQueue) -> io::Result<()> {
        // A transport message: its 16-byte header, the packet padded to 16, the 16-byte tag.
        let room = Self::message_len(packet.len());
        let mut failed = None;
        let mut kind = None;
        let mut t = self.tunn();
        queue.push_with(room.max(HANDSHAKE_ROOM), |dst| {
            match t.encapsulate(packet, dst) {
                TunnResult::WriteToNetwork(msg) => {
                    kind = msg.first().copied();
                    msg.len()
                }
                TunnResult::Err(e) => {
                    failed = Some(e);
                    0
                }
                _ => 0,
            }
        });
        match failed {
            Some(e) => Err(io::Error::other(format!("{e:?}"))),
            None => {
                let counter = match kind {
                    Some(MSG_TRANSPORT) => &self.counters.tx_packets,
                    // A handshake went instead (or none was due yet): the packet waits.
                    _ => &self.counters.queued,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    /// The length of the transport message that carries a packet of `len` bytes.
    pub fn message_len(len: usize) -> usize {
        len.div_ceil(16) * 16 + 32
    }

    /// Runs the session's timers: handshake retries, keepalives, rekeying.
    pub fn tick(&self, sock: &WgSocket, out: &mut [u8]) {
        let mut t = self.tunn();
        if let TunnResult::WriteToNetwork(msg) = t.update_timers(out) {
            let _ = sock.sock.send_to(msg, self.endpoint);
        }
    }

    /// Takes a message from the peer: handshake answers go back, packets queued for the
    /// session leave once it is up, and each decrypted IPv4 packet goes to `deliver` (with
    /// the inner source address). Err when the message did not authenticate.
    #[allow(clippy::result_unit_err)]
    pub fn receive(
        &self,
        sock: &WgSocket,
        src: Ipv4Addr,
        datagram: &[u8],
        out: &mut [u8],
        mut deliver: impl FnMut(&[u8], Ipv4Addr),
    ) -> Result<(), ()> {
        let mut t = self.tunn();
        match t.decapsulate(Some(IpAddr::V4(src)), datagram, out) {
            TunnResult::WriteToNetwork(msg) => {
                let _ = sock.sock.send_to(msg, self.endpoint);
                // Then whatever waited for the session.
                while let TunnResult::WriteToNetwork(msg) = t.decapsulate(None, &[], out) {
                    let _ = sock.sock.send_to(msg, self.endpoint);
                    self.counters.tx_packets.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            TunnResult::WriteToTunnelV4(packet, inner_src) => {
                self.counters.rx_packets.fetch_add(1, Ordering::Relaxed);
                deliver(packet, inner_src);
                Ok(())
            }
            TunnResult::Done => Ok(()),
            TunnResult::WriteToTunnelV6(..) | TunnResult::Err(_) => {
                self.counters.rx_bad.fetch_add(1, Ordering::Relaxed);
                Err(())
            }
        }
    }

    /// Seconds since the last completed handshake, if one completed.
    pub fn handshake_age(&self) -> Option<u64> {
        self.tunn().stats().0.map(|d| d.as_secs())
    }
}

/// The VXLAN payload (header and frame) of a decrypted packet from `src`, if it is one: IPv4,
/// UDP to `vxlan_port`, no fragment.
pub fn vxlan_payload(packet: &[u8], vxlan_port: u16) -> Option<&[u8]> {
    if packet.len() < 28 || packet[0] >> 4 != 4 || packet[9] != 17 {
        return None;
    }
    let ihl = usize::from(packet[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]]));
    let frag = u16::from_be_bytes([packet[6], packet[7]]);
    if ihl < 20 || total > packet.len() || total < ihl + 8 || frag & 0x3fff != 0 {
        return None;
    }
    let udp = &packet[ihl..total];
    if u16::from_be_bytes([udp[2], udp[3]]) != vxlan_port {
        return None;
    }
    Some(&udp[8..])
}

/// A tunnel port of an encrypted overlay network, to one peer.
pub struct Tunnel {
    sock: Arc<WgSocket>,
    peer: Option<Arc<Peer>>,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    port: u16,
    vni: u32,
    packet: Vec<u8>,
    /// The messages of one dataplane batch, sent at `flush`.
    queue: TxQueue,
}

impl Tunnel {
    /// `peer` is `None` when the remote has no key: everything sent is refused (`no_key`).
    pub fn new(
        sock: Arc<WgSocket>,
        peer: Option<Arc<Peer>>,
        local: Ipv4Addr,
        remote: Ipv4Addr,
        port: u16,
        vni: u32,
    ) -> Tunnel {
        Tunnel {
            sock,
            peer,
            local,
            remote,
            port,
            vni,
            packet: Vec::with_capacity(2048),
            queue: TxQueue::default(),
        }
    }
}

/// Writes the IPv4/UDP/VXLAN packet that carries `frame` from `local` to `remote` into
/// `out`: what a kernel vxlan device sends (UDP checksum zero, as IPv4 allows and Linux's
/// vxlan does by default; the source port a hash of the inner flow).
pub fn encapsulate(
    out: &mut Vec<u8>,
    local: Ipv4Addr,
    remote: Ipv4Addr,
    port: u16,
    vni: u32,
    frame: &[u8],
) {
    let total = 20 + 8 + overlay::HEADER_LEN + frame.len();
    out.clear();
    out.extend_from_slice(&[0x45, 0]);
    out.extend_from_slice(&(total as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0x40, 0, INNER_TTL, 17, 0, 0]);
    out.extend_from_slice(&local.octets());
    out.extend_from_slice(&remote.octets());
    let sum = checksum(&out[..20], 0);
    out[10..12].copy_from_slice(&sum.to_be_bytes());
    let sport = 49152 + (overlay::flow_hash(frame) % 16384) as u16;
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&port.to_be_bytes());
    out.extend_from_slice(&((total - 20) as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&overlay::header(vni));
    out.extend_from_slice(frame);
}

impl Port for Tunnel {
    fn raw_fd(&self) -> RawFd {
        self.sock.sock.as_raw_fd()
    }

    /// The dataplane reads the WireGuard socket for every tunnel.
    fn pollable(&self) -> bool {
        false
    }

    fn recv(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn send(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send_frame(buf)
    }

    fn send_frame(&mut self, frame: &[u8]) -> io::Result<usize> {
        let Some(peer) = &self.peer else {
            return Err(no_key());
        };
        encapsulate(
            &mut self.packet,
            self.local,
            self.remote,
            self.port,
            self.vni,
            frame,
        );
        let mut sent = Ok(());
        if !self.queue.fits(Peer::message_len(self.packet.len())) {
            sent = self
                .queue
                .flush(self.sock.sock.as_raw_fd(), &peer.endpoint, &self.sock.gso);
        }
        peer.encrypt_into(&self.packet, &mut self.queue)?;
        sent.map(|()| frame.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.peer {
            Some(peer) => {
                self.queue
                    .flush(self.sock.sock.as_raw_fd(), &peer.endpoint, &self.sock.gso)
            }
            None => Ok(()),
        }
    }

    fn kind(&self) -> &'static str {
        "wireguard"
    }
}

/// The peer a message from `src` belongs to.
pub fn peer_of(peers: &[Arc<Peer>], src: SocketAddr) -> Option<&Arc<Peer>> {
    let SocketAddr::V4(src) = src else {
        return None;
    };
    peers
        .iter()
        .find(|p| p.endpoint == src)
        .or_else(|| peers.iter().find(|p| p.endpoint.ip() == src.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_parse_and_print_as_wg_does() {
        let private = [7u8; 32];
        let public = public_of(&private);
        let s = encode_key(&public);
        assert_eq!(s.len(), 44);
        assert_eq!(parse_key(&s), Ok(public));
        assert!(parse_key("not a key").is_err());
        assert!(parse_key("AAAA").unwrap_err().contains("32 bytes"));
    }

    #[test]
    fn the_inner_packet_is_what_a_kernel_vxlan_sends() {
        let frame = [0xabu8; 60];
        let mut out = Vec::new();
        let (a, b) = (Ipv4Addr::new(10, 99, 0, 1), Ipv4Addr::new(10, 99, 0, 2));
        encapsulate(&mut out, a, b, 4789, 42, &frame);
        assert_eq!(out.len(), 20 + 8 + 8 + 60);
        assert_eq!(checksum(&out[..20], 0), 0, "a valid IPv4 header checksum");
        assert_eq!(&out[12..16], &a.octets());
        assert_eq!(&out[16..20], &b.octets());
        assert_eq!(out[9], 17);
        let payload = vxlan_payload(&out, 4789).unwrap();
        assert_eq!(overlay::parse(payload), Ok(42));
        assert_eq!(&payload[8..], &frame);
        assert!(vxlan_payload(&out, 4790).is_none(), "another port");
        assert!(vxlan_payload(&out[..20], 4789).is_none(), "cut short");
    }

    /// Two sessions, as two hosts have: the first packet waits for the handshake, then goes.
    #[test]
    fn two_peers_handshake_and_carry_a_packet() {
        let (ka, kb) = ([1u8; 32], [2u8; 32]);
        let sa = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sb = UdpSocket::bind("127.0.0.1:0").unwrap();
        let (aa, ab) = match (sa.local_addr().unwrap(), sb.local_addr().unwrap()) {
            (SocketAddr::V4(a), SocketAddr::V4(b)) => (a, b),
            _ => unreachable!(),
        };
        let (wa, wb) = (WgSocket::new(sa), WgSocket::new(sb));
        let pa = Peer::new(&ka, public_of(&kb), 1, Ipv4Addr::new(10, 0, 0, 2), ab);
        let pb = Peer::new(&kb, public_of(&ka), 2, Ipv4Addr::new(10, 0, 0, 1), aa);
        let mut packet = Vec::new();
        encapsulate(
            &mut packet,
            Ipv4Addr::new(10, 0, 0, 1),
            Ipv4Addr::new(10, 0, 0, 2),
            4789,
            7,
            &[0x55; 64],
        );
        let mut out = vec![0; BUF];
        let mut buf = vec![0; BUF];
        // A's first packet: a handshake initiation goes instead (the packet waits).
        pa.send(&wa, &packet, &mut out).unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            for (me, sock, peer) in [(&pb, &wb, &aa), (&pa, &wa, &ab)] {
                sock.sock.set_nonblocking(true).unwrap();
                while let Ok((n, _)) = sock.sock.recv_from(&mut buf) {
                    let _ = me.receive(sock, *peer.ip(), &buf[..n], &mut out, |p, src| {
                        got.push((p.to_vec(), src))
                    });
                }
            }
        }
        assert_eq!(
            got.len(),
            1,
            "the waiting packet arrives once the session is up"
        );
        assert_eq!(got[0].0, packet);
        assert_eq!(got[0].1, Ipv4Addr::new(10, 0, 0, 1));
        assert!(pa.handshake_age().is_some() && pb.handshake_age().is_some());
        // A stranger's key gets nothing through.
        let pc = Peer::new(
            &[3u8; 32],
            public_of(&kb),
            3,
            Ipv4Addr::new(10, 0, 0, 2),
            ab,
        );
        let sc = UdpSocket::bind("127.0.0.1:0").unwrap();
        let wc = WgSocket::new(sc);
        pc.send(&wc, &packet, &mut out).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let mut delivered = 0;
        while let Ok((n, _)) = wb.sock.recv_from(&mut buf) {
            let r = pb.receive(&wb, *aa.ip(), &buf[..n], &mut out, |_, _| delivered += 1);
            assert!(
                r.is_err(),
                "a handshake under another key does not authenticate"
            );
        }
        assert_eq!(delivered, 0);
    }
}
