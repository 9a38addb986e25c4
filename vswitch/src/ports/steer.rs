//! The XDP program of a shared uplink: the host keeps its interface and its address, and only
//! what belongs to the switch's NAT goes to the switch's socket. Everything else is `XDP_PASS`,
//! unchanged, to the host's own stack.
//!
//! Frames to the host's address (`ip`) that are the switch's:
//! - TCP and UDP whose destination port is in the NAT range, or published (a hash map of
//!   (protocol, port) the control plane keeps: `PublishedMap`);
//! - ICMP echo replies whose identifier is in the range;
//! - ICMP errors (destination unreachable, time exceeded, parameter problem) quoting a datagram
//!   the switch sent: the quoted source is `ip`, and its source port (or echo identifier) is in
//!   the range (or a published port);
//! - later fragments of a datagram whose first fragment was the switch's: a first fragment
//!   taken records (source, IP id, protocol) in a small LRU map, and fragments with a non-zero
//!   offset go where that map says (a later fragment arriving before its first goes to the
//!   host, which drops it when reassembly times out).
//!
//! ARP stays with the host: in shared mode the switch takes next hops from the host's neighbour
//! table. IPv4 headers with options (IHL > 5) are left to the host as well — nothing the switch
//! sends carries options, and replies to it do not either.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;

use super::bpf::{self, Asm, Cond, Size, Take};

/// What the switch takes from a shared interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Steer {
    pub ip: Ipv4Addr,
    pub ports: (u16, u16),
}

/// Fragmented datagrams followed at once.
const FRAGS: u32 = 1024;

/// (protocol, port) pairs the published map holds at most (the control plane's bound too).
pub const MAX_PUBLISHED: u32 = crate::switch::nat::dnat::MAX_PUBLISHED as u32;

/// A loaded steering program and its maps.
pub struct SteerProg {
    pub prog: OwnedFd,
    _frags: OwnedFd,
    published: OwnedFd,
}

impl SteerProg {
    /// A handle on the published-ports map for the control plane (a second descriptor).
    pub fn published_map(&self) -> io::Result<PublishedMap> {
        Ok(PublishedMap {
            fd: self.published.try_clone()?,
            held: std::collections::HashSet::new(),
        })
    }
}

/// The published (protocol, port) pairs the program steers to the switch.
pub struct PublishedMap {
    fd: OwnedFd,
    held: std::collections::HashSet<(u8, u16)>,
}

impl std::fmt::Debug for PublishedMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishedMap")
            .field("held", &self.held.len())
            .finish()
    }
}

impl PublishedMap {
    /// Makes the map hold exactly `want` (at most `MAX_PUBLISHED`).
    pub fn sync(&mut self, want: &std::collections::HashSet<(u8, u16)>) -> io::Result<()> {
        let gone: Vec<_> = self.held.difference(want).copied().collect();
        for k in gone {
            bpf::map_delete(&self.fd, &key(k));
            self.held.remove(&k);
        }
        for &k in want {
            if !self.held.contains(&k) {
                bpf::map_update(&self.fd, &key(k), &1u32.to_ne_bytes())?;
                self.held.insert(k);
            }
        }
        Ok(())
    }
}

/// The map's key: protocol, a zero byte, the port in network order.
fn key((proto, port): (u8, u16)) -> [u8; 4] {
    let p = port.to_be_bytes();
    [proto, 0, p[0], p[1]]
}

pub fn load(steer: Steer, xsks: &OwnedFd, slot: u32) -> io::Result<SteerProg> {
    build(steer, Take::Redirect { xsks, slot })
}

fn build(steer: Steer, take: Take) -> io::Result<SteerProg> {
    let frags = bpf::map_create(bpf::BPF_MAP_TYPE_LRU_HASH, 8, 4, FRAGS, "vswitch_frags")?;
    let published = bpf::map_create(bpf::BPF_MAP_TYPE_HASH, 4, 4, MAX_PUBLISHED, "vswitch_pub")?;
    let insns = program(steer, &frags, &published, &take).map_err(io::Error::other)?;
    let prog = bpf::prog_load_xdp(&insns, "vswitch_uplink")?;
    Ok(SteerProg {
        prog,
        _frags: frags,
        published,
    })
}

/// The ingress IPv4 header's fields, as offsets from the start of the frame.
const ETH: i16 = 14;
const IP_VIHL: i16 = ETH;
const IP_ID: i16 = ETH + 4;
const IP_FRAG: i16 = ETH + 6;
const IP_PROTO: i16 = ETH + 9;
const IP_SRC: i16 = ETH + 12;
const IP_DST: i16 = ETH + 16;
const L4: i16 = ETH + 20;
/// The datagram an ICMP error quotes.
const INNER: i16 = L4 + 8;

fn program(
    steer: Steer,
    frags: &OwnedFd,
    published: &OwnedFd,
    take: &Take,
) -> Result<Vec<[u8; 8]>, String> {
    // A u32 loaded from the packet holds the address's bytes in memory order.
    let ip = i32::from_ne_bytes(steer.ip.octets());
    let (lo, hi) = (i32::from(steer.ports.0), i32::from(steer.ports.1));
    // Frame-order masks of the fragment field read as a u16 in host order.
    let frag_off = i32::from(u16::from_ne_bytes([0x1f, 0xff]));
    let more_frags = i32::from(u16::from_ne_bytes([0x20, 0x00]));
    let ethertype_ipv4 = i32::from(u16::from_ne_bytes([0x08, 0x00]));
    const MORE: &str = "more";

    // r7 = data, r8 = data_end, r9 = IP protocol, r6 = where a port out of the range is
    // looked up in the published map (0: nowhere, 1: the destination port, 2: the quoted
    // source port): callee-saved across helper calls.
    let mut a = Asm::new();
    a.mov(6, 0)
        .ldx(Size::W, 7, 1, 0)
        .ldx(Size::W, 8, 1, 4)
        .mov_reg(2, 7)
        .add(2, i32::from(L4))
        .jmp_reg(Cond::Gt, 2, 8, "pass")
        .ldx(Size::H, 2, 7, 12)
        .jmp(Cond::Ne, 2, ethertype_ipv4, "pass")
        .ldx(Size::B, 2, 7, IP_VIHL)
        .jmp(Cond::Ne, 2, 0x45, "pass")
        .ldx(Size::W, 2, 7, IP_DST)
        .jmp32(Cond::Ne, 2, ip, "pass")
        .ldx(Size::B, 9, 7, IP_PROTO)
        .ldx(Size::H, 2, 7, IP_FRAG)
        .jmp(Cond::Set, 2, frag_off, "later_fragment")
        .jmp(Cond::Eq, 9, 1, "icmp")
        .jmp(Cond::Eq, 9, 6, "l4")
        .jmp(Cond::Ne, 9, 17, "pass");
    // TCP/UDP: the destination port.
    a.label("l4")
        .mov(6, 1)
        .mov_reg(2, 7)
        .add(2, i32::from(L4 + 4))
        .jmp_reg(Cond::Gt, 2, 8, "pass")
        .ldx(Size::H, 2, 7, L4 + 2)
        .goto("in_range");
    // ICMP: echo replies by identifier, errors by what they quote.
    a.label("icmp")
        .mov_reg(2, 7)
        .add(2, i32::from(L4 + 8))
        .jmp_reg(Cond::Gt, 2, 8, "pass")
        .ldx(Size::B, 2, 7, L4)
        .jmp(Cond::Eq, 2, 0, "echo_reply")
        .jmp(Cond::Eq, 2, 3, "error")
        .jmp(Cond::Eq, 2, 11, "error")
        .jmp(Cond::Eq, 2, 12, "error")
        .goto("pass");
    a.label("echo_reply")
        .ldx(Size::H, 2, 7, L4 + 4)
        .goto("in_range");
    a.label("error")
        .mov_reg(2, 7)
        .add(2, i32::from(INNER + 28))
        .jmp_reg(Cond::Gt, 2, 8, "pass")
        .ldx(Size::B, 2, 7, INNER)
        .jmp(Cond::Ne, 2, 0x45, "pass")
        .ldx(Size::W, 2, 7, INNER + 12)
        .jmp32(Cond::Ne, 2, ip, "pass")
        .ldx(Size::B, 2, 7, INNER + 9)
        .jmp(Cond::Eq, 2, 1, "inner_icmp")
        .jmp(Cond::Eq, 2, 6, "inner_l4")
        .jmp(Cond::Ne, 2, 17, "pass");
    a.label("inner_l4")
        .mov(6, 2)
        .ldx(Size::H, 2, 7, INNER + 20)
        .goto("in_range");
    a.label("inner_icmp")
        .ldx(Size::B, 2, 7, INNER + 20)
        .jmp(Cond::Ne, 2, 8, "pass")
        .ldx(Size::H, 2, 7, INNER + 24);
    // r2 is a port or identifier in frame order.
    a.label("in_range")
        .be16(2)
        .jmp(Cond::Lt, 2, lo, "out_of_range")
        .jmp(Cond::Gt, 2, hi, "out_of_range");
    a.label("taken")
        .ldx(Size::H, 2, 7, IP_FRAG)
        .jmp(Cond::Set, 2, more_frags, MORE)
        .goto("take");
    // A first fragment: remember (source, id, protocol) for the rest of the datagram.
    a.label(MORE);
    fragment_key(&mut a);
    a.st(Size::W, 10, -12, 1)
        .ld_map(1, frags)
        .mov_reg(2, 10)
        .add(2, -8)
        .mov_reg(3, 10)
        .add(3, -12)
        .mov(4, 0)
        .call(bpf::HELPER_MAP_UPDATE)
        .goto("take");
    a.label("later_fragment");
    fragment_key(&mut a);
    a.ld_map(1, frags)
        .mov_reg(2, 10)
        .add(2, -8)
        .call(bpf::HELPER_MAP_LOOKUP)
        .jmp(Cond::Eq, 0, 0, "pass")
        .goto("take");
    // Ports out of the range may be published.
    a.label("out_of_range")
        .jmp(Cond::Eq, 6, 1, "published_dst")
        .jmp(Cond::Eq, 6, 2, "published_quoted")
        .goto("pass");
    a.label("published_dst");
    published_lookup(&mut a, published, None, L4 + 2);
    a.label("published_quoted");
    published_lookup(&mut a, published, Some(INNER + 9), INNER + 20);
    a.label("take");
    take.emit(&mut a);
    a.label("pass").mov(0, bpf::XDP_PASS).exit();
    a.finish()
}

/// Looks up (protocol, port) in the published map: the protocol is r9's (`None`) or the
/// byte at `proto_at`, the port the frame-order u16 at `port_at` (both already bounds-checked).
/// On to `taken` when it is there, to `pass` when not.
fn published_lookup(a: &mut Asm, map: &OwnedFd, proto_at: Option<i16>, port_at: i16) {
    a.st(Size::W, 10, -16, 0);
    match proto_at {
        None => a.stx(Size::B, 10, 9, -16),
        Some(at) => a.ldx(Size::B, 2, 7, at).stx(Size::B, 10, 2, -16),
    };
    a.ldx(Size::H, 2, 7, port_at)
        .stx(Size::H, 10, 2, -14)
        .ld_map(1, map)
        .mov_reg(2, 10)
        .add(2, -16)
        .call(bpf::HELPER_MAP_LOOKUP)
        .jmp(Cond::Eq, 0, 0, "pass")
        .goto("taken");
}

/// The 8-byte fragment key at r10 - 8: source address, IP id, protocol, a zero byte.
fn fragment_key(a: &mut Asm) {
    a.ldx(Size::W, 2, 7, IP_SRC)
        .stx(Size::W, 10, 2, -8)
        .ldx(Size::H, 2, 7, IP_ID)
        .stx(Size::H, 10, 2, -4)
        .stx(Size::B, 10, 9, -2)
        .st(Size::B, 10, -1, 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    const HOST: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
    const PEER: [u8; 4] = [203, 0, 113, 10];

    fn prog() -> Option<SteerProg> {
        match build(
            Steer {
                ip: HOST,
                ports: (61000, 65535),
            },
            Take::Tx,
        ) {
            Ok(p) => Some(p),
            // Without CAP_BPF (an unprivileged `cargo test`) there is nothing to run; as root
            // (the suite, CI) the program must load.
            // SAFETY: geteuid has no preconditions.
            Err(e) if e.raw_os_error() == Some(libc::EPERM) && unsafe { libc::geteuid() } != 0 => {
                None
            }
            Err(e) => panic!("the steering program does not load: {e}"),
        }
    }

    fn eth() -> etherparse::PacketBuilderStep<etherparse::Ethernet2Header> {
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
    }

    fn udp(dst: Ipv4Addr, dport: u16) -> Vec<u8> {
        let mut f = Vec::new();
        eth()
            .ipv4(PEER, dst.octets(), 64)
            .udp(53, dport)
            .write(&mut f, b"hello")
            .unwrap();
        f
    }

    fn tcp(dport: u16) -> Vec<u8> {
        let mut f = Vec::new();
        eth()
            .ipv4(PEER, HOST.octets(), 64)
            .tcp(80, dport, 1, 1000)
            .syn()
            .ack(1)
            .write(&mut f, &[])
            .unwrap();
        f
    }

    fn icmp(t: u8, code: u8, rest: [u8; 4], quote: &[u8]) -> Vec<u8> {
        let mut f = Vec::new();
        eth()
            .ipv4(PEER, HOST.octets(), 64)
            .icmpv4_raw(t, code, rest)
            .write(&mut f, quote)
            .unwrap();
        f
    }

    /// The IP header and first 8 bytes of a datagram the host (or the switch) sent.
    fn quoted(proto: u8, sport_or_type: [u8; 4], id: [u8; 4]) -> Vec<u8> {
        let mut q = Vec::new();
        let h =
            etherparse::Ipv4Header::new(8, 64, etherparse::IpNumber(proto), HOST.octets(), PEER)
                .unwrap();
        h.write(&mut q).unwrap();
        q.extend_from_slice(&sport_or_type);
        q.extend_from_slice(&id);
        q
    }

    fn verdict(p: &SteerProg, f: &[u8]) -> u32 {
        bpf::test_run(&p.prog, f).unwrap()
    }

    const TAKE: u32 = bpf::XDP_TX as u32;
    const PASS: u32 = bpf::XDP_PASS as u32;

    #[test]
    fn takes_only_the_nat_range_and_passes_the_rest() {
        let Some(p) = prog() else { return };
        assert_eq!(verdict(&p, &udp(HOST, 61000)), TAKE, "UDP, first port");
        assert_eq!(verdict(&p, &udp(HOST, 65535)), TAKE, "UDP, last port");
        assert_eq!(verdict(&p, &udp(HOST, 60999)), PASS, "the host's port");
        assert_eq!(verdict(&p, &udp(HOST, 53)), PASS);
        assert_eq!(
            verdict(&p, &udp(Ipv4Addr::new(192, 0, 2, 3), 62000)),
            PASS,
            "another address"
        );
        assert_eq!(verdict(&p, &tcp(62000)), TAKE, "TCP SYN-ACK to a NAT port");
        assert_eq!(verdict(&p, &tcp(22)), PASS, "the host's ssh");
        // Echo replies by identifier; echo requests are the host's.
        assert_eq!(verdict(&p, &icmp(0, 0, [0xf0, 0x00, 0, 1], b"x")), TAKE);
        assert_eq!(verdict(&p, &icmp(0, 0, [0x00, 0x10, 0, 1], b"x")), PASS);
        assert_eq!(verdict(&p, &icmp(8, 0, [0xf0, 0x00, 0, 1], b"x")), PASS);
        // ARP, IPv6 and runts go to the host.
        let mut arp = udp(HOST, 62000);
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(verdict(&p, &arp), PASS);
        assert_eq!(verdict(&p, &udp(HOST, 62000)[..30]), PASS, "truncated");
        let mut opts = udp(HOST, 62000);
        opts[14] = 0x46;
        assert_eq!(verdict(&p, &opts), PASS, "options");
    }

    #[test]
    fn takes_icmp_errors_quoting_the_switchs_flows() {
        let Some(p) = prog() else { return };
        let port = |p: u16| {
            let b = p.to_be_bytes();
            [b[0], b[1], 0, 53]
        };
        let ours = quoted(17, port(62000), [0, 8, 0, 0]);
        let hosts = quoted(17, port(40000), [0, 8, 0, 0]);
        assert_eq!(verdict(&p, &icmp(3, 3, [0; 4], &ours)), TAKE, "unreachable");
        assert_eq!(
            verdict(&p, &icmp(11, 0, [0; 4], &ours)),
            TAKE,
            "time exceeded"
        );
        assert_eq!(
            verdict(&p, &icmp(3, 4, [0, 0, 5, 0xdc], &ours)),
            TAKE,
            "frag needed"
        );
        assert_eq!(verdict(&p, &icmp(3, 3, [0; 4], &hosts)), PASS);
        let tcp = quoted(6, port(61001), [0, 0, 0, 1]);
        assert_eq!(verdict(&p, &icmp(3, 1, [0; 4], &tcp)), TAKE);
        let echo = quoted(1, [8, 0, 0, 0], [0xfd, 0xe8, 0, 1]);
        assert_eq!(
            verdict(&p, &icmp(11, 0, [0; 4], &echo)),
            TAKE,
            "echo id 65000"
        );
        let host_echo = quoted(1, [8, 0, 0, 0], [0x00, 0x07, 0, 1]);
        assert_eq!(verdict(&p, &icmp(11, 0, [0; 4], &host_echo)), PASS);
        assert_eq!(
            verdict(&p, &icmp(3, 3, [0; 4], &ours[..20])),
            PASS,
            "a quote too short"
        );
    }

    #[test]
    fn takes_published_ports_the_control_plane_sets() {
        let Some(p) = prog() else { return };
        assert_eq!(verdict(&p, &tcp(8080)), PASS, "not published yet");
        let mut map = p.published_map().unwrap();
        let want: std::collections::HashSet<_> = [(6, 8080), (17, 5353)].into_iter().collect();
        map.sync(&want).unwrap();
        assert_eq!(verdict(&p, &tcp(8080)), TAKE, "TCP 8080");
        assert_eq!(
            verdict(&p, &udp(HOST, 8080)),
            PASS,
            "UDP 8080 is not published"
        );
        assert_eq!(verdict(&p, &udp(HOST, 5353)), TAKE, "UDP 5353");
        assert_eq!(verdict(&p, &tcp(22)), PASS);
        assert_eq!(
            verdict(&p, &udp(Ipv4Addr::new(192, 0, 2, 3), 5353)),
            PASS,
            "another address"
        );
        // An ICMP error quoting a published flow's reply (from the host's address and 8080).
        let port = |p: u16| {
            let b = p.to_be_bytes();
            [b[0], b[1], 0xc3, 0x50]
        };
        let quote = quoted(6, port(8080), [0, 0, 0, 1]);
        assert_eq!(verdict(&p, &icmp(3, 1, [0; 4], &quote)), TAKE);
        let quote = quoted(17, port(8080), [0, 8, 0, 0]);
        assert_eq!(verdict(&p, &icmp(3, 3, [0; 4], &quote)), PASS);
        // The range still works; unpublished again, 8080 goes to the host.
        assert_eq!(verdict(&p, &udp(HOST, 61000)), TAKE);
        map.sync(&[(17, 5353)].into_iter().collect()).unwrap();
        assert_eq!(verdict(&p, &tcp(8080)), PASS);
        assert_eq!(verdict(&p, &udp(HOST, 5353)), TAKE);
    }

    #[test]
    fn later_fragments_follow_their_first() {
        let Some(p) = prog() else { return };
        let frag = |id: u16, mf: bool, offset8: u16, dport: u16| {
            let mut f = udp(HOST, dport);
            f[IP_ID as usize..IP_ID as usize + 2].copy_from_slice(&id.to_be_bytes());
            let field = (u16::from(mf) << 13) | offset8;
            f[IP_FRAG as usize..IP_FRAG as usize + 2].copy_from_slice(&field.to_be_bytes());
            f
        };
        assert_eq!(verdict(&p, &frag(7, false, 185, 0)), PASS, "unknown yet");
        assert_eq!(verdict(&p, &frag(7, true, 0, 62000)), TAKE, "first");
        assert_eq!(verdict(&p, &frag(7, true, 185, 0)), TAKE, "middle");
        assert_eq!(verdict(&p, &frag(7, false, 370, 0)), TAKE, "last");
        assert_eq!(
            verdict(&p, &frag(8, false, 185, 0)),
            PASS,
            "another datagram"
        );
        assert_eq!(verdict(&p, &frag(9, true, 0, 40000)), PASS, "the host's");
        assert_eq!(
            verdict(&p, &frag(9, false, 185, 0)),
            PASS,
            "the host's rest"
        );
    }
}
