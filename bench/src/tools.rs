//! The helper subcommands the harness starts as processes of their own, most of them inside a
//! namespace: the UDP echo server and ping-pong client (latency), the datagram counter and the
//! AF_PACKET frame generators (pps, macs; one frame per flow for the nat scenario's conntrack
//! fill), the short-connection server and client (nat: new connections per second), and the
//! TAP-to-TAP copy loop (the `tap-copy` peer).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use crate::sys;

pub fn udp_echo(bind: &str, port: u16, secs: u64) {
    let s = UdpSocket::bind((bind, port)).expect("bind");
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        if let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    }
}

pub fn udp_ping(target: &str, count: usize) {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect(target).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut rtts = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    let mut lost = 0;
    for i in 0..count + 100 {
        let payload = (i as u64).to_be_bytes();
        let t = Instant::now();
        s.send(&payload).unwrap();
        loop {
            match s.recv(&mut buf) {
                Ok(8) if buf[..8] == payload => {
                    if i >= 100 {
                        rtts.push(t.elapsed().as_nanos() as f64 / 1000.0);
                    }
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
        if i == 99 && lost == 100 {
            break; // nothing comes back: no point waiting out every ping
        }
    }
    rtts.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        rtts.get(((rtts.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!(
        "{}",
        serde_json::json!({"p50": pct(0.5), "p99": pct(0.99), "p999": pct(0.999), "lost": lost})
    );
}

pub fn pps_recv(port: u16, secs: f64) {
    let s = UdpSocket::bind(("0.0.0.0", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let mut bufs = vec![[0u8; 64]; 256];
    let mut received = 0u64;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        if let Ok(n) = sys::recv_batch(&s, &mut bufs) {
            received += n as u64;
        }
    }
    println!("{}", serde_json::json!({ "received": received }));
}

#[allow(clippy::too_many_arguments)]
pub fn mac_flood(
    src_mac: Option<&str>,
    ifname: &str,
    dst_mac: &str,
    src_ip: &str,
    dst_ip: &str,
    port: u16,
    macs: u32,
    secs: f64,
) {
    let dst: vswitch::wire::MacAddr = dst_mac.parse().expect("destination MAC");
    let src_ip: std::net::Ipv4Addr = src_ip.parse().expect("source IP");
    let dst_ip: std::net::Ipv4Addr = dst_ip.parse().expect("destination IP");
    let src: Option<vswitch::wire::MacAddr> = src_mac.map(|m| m.parse().expect("source MAC"));
    let frames: Vec<Vec<u8>> = (0..if src.is_some() { 1 } else { macs })
        .map(|i| {
            let b = i.to_be_bytes();
            let mac = src.map_or([0x02, 0x77, b[0], b[1], b[2], b[3]], |m| m.0);
            let mut f = Vec::with_capacity(60);
            etherparse::PacketBuilder::ethernet2(mac, dst.0)
                .ipv4(src_ip.octets(), dst_ip.octets(), 64)
                .udp(4000, port)
                .write(&mut f, &[0x5a; 18])
                .expect("frame");
            f
        })
        .collect();
    send_for(ifname, &frames, secs);
}

pub fn tap_copy(client: &str, server: &str) {
    use vswitch::ports::Port;
    let open = |ns: &str| {
        let spec = vswitch::sandbox::NetnsSpec::parse(ns).expect("namespace");
        let file = spec.open().expect("namespace");
        let tap = vswitch::sandbox::in_netns(&file, &spec, || {
            Ok(vswitch::ports::tap::Tap::create("eth0", true)?)
        })
        .expect("TAP");
        sys::set_blocking(tap.raw_fd()).expect("blocking");
        tap
    };
    let (a, b) = (open(client), open(server));
    let (fa, fb) = (a.raw_fd(), b.raw_fd());
    println!("ready");
    let _ = std::io::stdout().flush();
    std::thread::spawn(move || sys::pump(fa, fb));
    sys::pump(fb, fa);
    drop((a, b));
}

/// The short-connection server: accepts, reads one byte, writes it back and closes (first, so
/// the TIME_WAIT is the server's and the client's ports are free again at once), for `secs`
/// seconds, on `threads` threads sharing the listener.
pub fn conn_server(port: u16, secs: f64, threads: usize) {
    let listener = TcpListener::bind(("0.0.0.0", port)).expect("bind");
    for _ in 0..threads.max(1) {
        let l = listener.try_clone().expect("listener");
        std::thread::spawn(move || loop {
            let Ok((mut s, _)) = l.accept() else { continue };
            let _ = s.set_nodelay(true);
            let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
            }
        });
    }
    std::thread::sleep(Duration::from_secs_f64(secs));
}

/// The short-connection client: `parallel` threads, each connecting to `target`, sending one
/// byte, reading it back and the server's close, then closing, over and over for `secs`
/// seconds. Prints the completed connections, the failed ones and the time taken as JSON.
pub fn conn_client(target: &str, parallel: usize, secs: f64) {
    let addr: SocketAddr = target.parse().expect("target IP:PORT");
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(secs);
    let one = move || -> std::io::Result<()> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
        s.set_nodelay(true)?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(&[1])?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b)?;
        // Wait for the server's FIN: the server closes first and keeps the TIME_WAIT.
        match s.read(&mut b)? {
            0 => Ok(()),
            _ => Err(std::io::ErrorKind::InvalidData.into()),
        }
    };
    let threads: Vec<_> = (0..parallel.max(1))
        .map(|_| {
            std::thread::spawn(move || {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < end {
                    match one() {
                        Ok(()) => ok += 1,
                        Err(_) => failed += 1,
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    let (mut ok, mut failed) = (0, 0);
    for t in threads {
        let (o, f) = t.join().unwrap_or((0, 0));
        ok += o;
        failed += f;
    }
    println!(
        "{}",
        serde_json::json!({
            "connections": ok,
            "failed": failed,
            "secs": start.elapsed().as_secs_f64(),
        })
    );
}

/// Parses "LO-HI" (or a single port).
pub fn port_range(s: &str) -> (u16, u16) {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let (lo, hi): (u16, u16) = (
        lo.parse().expect("port range LO-HI"),
        hi.parse().expect("port range LO-HI"),
    );
    assert!(lo <= hi, "port range {s} is not ascending");
    (lo, hi)
}

/// Sends one 64-byte UDP frame for every (source port, destination port) pair of the ranges —
/// each a new flow for a NAT — through AF_PACKET, as fast as the interface takes them (a full
/// queue's ENOBUFS is waited out, not lost). Prints how many frames went as JSON.
#[allow(clippy::too_many_arguments)]
pub fn flow_flood(
    ifname: &str,
    src_mac: &str,
    dst_mac: &str,
    src_ip: &str,
    dst_ip: &str,
    sports: (u16, u16),
    dports: (u16, u16),
) {
    let src: vswitch::wire::MacAddr = src_mac.parse().expect("source MAC");
    let dst: vswitch::wire::MacAddr = dst_mac.parse().expect("destination MAC");
    let src_ip: std::net::Ipv4Addr = src_ip.parse().expect("source IP");
    let dst_ip: std::net::Ipv4Addr = dst_ip.parse().expect("destination IP");
    let sock = sys::packet_socket(ifname).expect("packet socket");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
    let mut flows = (dports.0..=dports.1).flat_map(|d| (sports.0..=sports.1).map(move |s| (s, d)));
    let mut batch: Vec<Vec<u8>> = Vec::with_capacity(64);
    let mut sent = 0u64;
    // Gives up if the interface refuses everything for this long.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        batch.clear();
        for (sport, dport) in flows.by_ref().take(64) {
            let mut f = Vec::with_capacity(64);
            etherparse::PacketBuilder::ethernet2(src.0, dst.0)
                .ipv4(src_ip.octets(), dst_ip.octets(), 64)
                .udp(sport, dport)
                .write(&mut f, &[0x5a; 18])
                .expect("frame");
            batch.push(f);
        }
        if batch.is_empty() {
            break;
        }
        let mut done = 0;
        while done < batch.len() && Instant::now() < deadline {
            let rest: Vec<&[u8]> = batch[done..].iter().map(Vec::as_slice).collect();
            match sys::send_many(fd, &rest) {
                Ok(n) => done += n,
                Err(_) => std::thread::yield_now(),
            }
        }
        sent += done as u64;
    }
    println!("{}", serde_json::json!({ "sent": sent }));
}

/// What `gw_flood` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloodKind {
    /// Frames from random source MACs to random unknown unicast MACs (what would fill a
    /// learning table and be flooded to every port).
    Macs,
    /// DNS queries for ever new names to the gateway, from the port's own MAC and address.
    Dns,
    /// ARP requests for random addresses of the subnet, from the port's own MAC and address.
    Arp,
}

/// The flood scenario's attacker: `kind` frames out of `ifname` through AF_PACKET, as fast as
/// it can, for `secs` seconds. Frames are built by hand (a fixed-size DNS query and ARP
/// request): this is a load generator, and every frame differs from the last.
pub fn gw_flood(
    kind: FloodKind,
    ifname: &str,
    src_mac: &str,
    src_ip: &str,
    gw_mac: &str,
    gw_ip: &str,
    secs: f64,
) {
    let src: vswitch::wire::MacAddr = src_mac.parse().expect("source MAC");
    let gw: vswitch::wire::MacAddr = gw_mac.parse().expect("gateway MAC");
    let src_ip: std::net::Ipv4Addr = src_ip.parse().expect("source IP");
    let gw_ip: std::net::Ipv4Addr = gw_ip.parse().expect("gateway IP");
    const N: u32 = 4096;
    let frames: Vec<Vec<u8>> = (0..N)
        .map(|i| {
            let b = i.to_be_bytes();
            let mut f = Vec::with_capacity(96);
            match kind {
                FloodKind::Macs => {
                    etherparse::PacketBuilder::ethernet2(
                        [0x02, 0x66, b[0], b[1], b[2], b[3]],
                        [0x02, 0x55, b[3], b[2], b[1], b[0]],
                    )
                    .ipv4(src_ip.octets(), gw_ip.octets(), 64)
                    .udp(4000, 9)
                    .write(&mut f, &[0x5a; 18])
                    .expect("frame");
                }
                FloodKind::Dns => {
                    // A query for "fNNNNNNNN.flood.test" A IN, id i.
                    let mut q = vec![b[2], b[3], 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
                    let label = format!("f{i:08x}");
                    q.push(label.len() as u8);
                    q.extend_from_slice(label.as_bytes());
                    for l in ["flood", "test"] {
                        q.push(l.len() as u8);
                        q.extend_from_slice(l.as_bytes());
                    }
                    q.extend_from_slice(&[0, 0, 1, 0, 1]);
                    etherparse::PacketBuilder::ethernet2(src.0, gw.0)
                        .ipv4(src_ip.octets(), gw_ip.octets(), 64)
                        .udp(20000 + (i % 20000) as u16, 53)
                        .write(&mut f, &q)
                        .expect("frame");
                }
                FloodKind::Arp => {
                    let o = gw_ip.octets();
                    let target = [o[0], o[1], o[2], (i % 250) as u8 + 1];
                    f.extend_from_slice(&[0xff; 6]);
                    f.extend_from_slice(&src.0);
                    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
                    f.extend_from_slice(&src.0);
                    f.extend_from_slice(&src_ip.octets());
                    f.extend_from_slice(&[0; 6]);
                    f.extend_from_slice(&target);
                    f.resize(60, 0);
                }
            }
            f
        })
        .collect();
    send_for(ifname, &frames, secs);
}

/// Sends `frames` round and round out of `ifname` (AF_PACKET, sendmmsg batches of 64) for
/// `secs` seconds, then prints how many went as `{"sent": N}`.
fn send_for(ifname: &str, frames: &[Vec<u8>], secs: f64) {
    let sock = sys::packet_socket(ifname).expect("packet socket");
    let mut sent = 0u64;
    let mut next = 0usize;
    let end = Instant::now() + Duration::from_secs_f64(secs);
    while Instant::now() < end {
        let batch: Vec<&[u8]> = (0..64)
            .map(|k| frames[(next + k) % frames.len()].as_slice())
            .collect();
        match sys::send_many(std::os::fd::AsRawFd::as_raw_fd(&sock), &batch) {
            Ok(n) => {
                sent += n as u64;
                next = (next + n) % frames.len();
            }
            Err(_) => std::thread::yield_now(),
        }
    }
    println!("{}", serde_json::json!({ "sent": sent }));
}
