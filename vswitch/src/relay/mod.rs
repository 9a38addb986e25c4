//! The loopback relay: how the host's own stack reaches published ports (`curl
//! localhost:8080`, or the host's address from the host), which never crosses the uplink.
//!
//! The relay listens on each published host port itself (kernel sockets in the daemon's
//! namespace) and relays every connection into the network from the gateway's address, with
//! a userspace TCP/UDP stack (smoltcp) on the gateway's side. The dataplane sees that stack
//! as one port per network (`ports::relay`, a socketpair): the relay's frames go to the
//! container as the gateway's, and the containers' answers to the gateway's address on the
//! relay's ports come back to it. No process per published port, no host iptables.
//!
//! One thread polls the listeners, the host's connections, the socketpairs and smoltcp's
//! timers. Relays are bounded (`MAX_RELAYS` TCP connections and UDP sessions together) and
//! counted per listener (`Counters`).

pub mod device;
mod tcp_relay;
mod udp_relay;

use std::collections::{HashMap, HashSet};
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant as StdInstant};

use crossbeam_channel::{Receiver, Sender};
use mio::net::{TcpListener, UdpSocket};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::time::{Duration as SmolDuration, Instant};
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};
use tcp_relay::{pump, Conn};
use tracing::{debug, warn};
use udp_relay::Session;

use crate::state::publish::Proto;
use crate::switch::NetId;
use crate::wire::mac::MacAddr;
use device::Device;

/// TCP connections and UDP sessions relayed at once, all listeners together.
pub const MAX_RELAYS: usize = 256;
/// Each relayed TCP connection's buffers in smoltcp, each way: a window wide enough for a
/// local path at several Gbit/s (256 KiB held one stream to 2.4 Gbit/s host to container;
/// 512 KiB gives 8.4). Pages are touched, so resident, only as far as a connection's data
/// goes: short connections cost a few pages.
const TCP_BUF: usize = 512 << 10;
/// A UDP session (one host client) ends after this long without a datagram either way.
const UDP_IDLE: Duration = Duration::from_secs(60);
const UDP_BUF: usize = 128 << 10;
const UDP_PACKETS: usize = 64;
/// A container that answers nothing (no SYN-ACK, no ACK) for this long ends the relay.
const TCP_TIMEOUT: SmolDuration = SmolDuration::from_secs(20);

const WAKER: Token = Token(0);

/// Where a listener lives on the host: the address it is bound to (`0.0.0.0` for all).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub proto: Proto,
    pub ip: Ipv4Addr,
    pub port: u16,
}

/// Where a listener's connections go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub net: NetId,
    pub ip: Ipv4Addr,
    pub mac: MacAddr,
    pub port: u16,
}

/// One listener's relays, counted by the relay thread and read by the control plane.
#[derive(Debug, Default)]
pub struct Counters {
    /// Connections (TCP) or sessions (UDP) relayed.
    pub accepted: AtomicU64,
    pub active: AtomicU64,
    /// Refused because `MAX_RELAYS` were relaying.
    pub refused: AtomicU64,
    /// TCP connections the container refused or never answered.
    pub failed: AtomicU64,
    pub bytes_to_container: AtomicU64,
    pub bytes_to_host: AtomicU64,
}

/// A bound socket for `Cmd::Listen`.
pub enum Listening {
    Tcp(std::net::TcpListener),
    Udp(std::net::UdpSocket),
}

pub enum Cmd {
    /// A network's side: the relay's end of its port's socketpair, the gateway's address
    /// (and prefix) and MAC, the network's MTU, the gateway's ports to use.
    Attach {
        net: NetId,
        sock: UnixDatagram,
        gw: Ipv4Addr,
        prefix: u8,
        gw_mac: MacAddr,
        mtu: usize,
        ports: (u16, u16),
    },
    /// Forgets a network, and ends its relays.
    Detach { net: NetId },
    Listen {
        key: Key,
        sock: Listening,
        target: Target,
        counters: Arc<Counters>,
    },
    /// Closes a listener (new connections are refused by the host at once); relays already
    /// running go on.
    Unlisten { key: Key, done: Sender<()> },
}

/// The control plane's handle on the relay thread.
pub struct Relay {
    tx: Sender<Cmd>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Relay {
    pub fn start() -> io::Result<Relay> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let (tx, rx) = crossbeam_channel::unbounded();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || {
                let mut r = Thread::new(poll, rx, st);
                if let Err(e) = r.run() {
                    warn!(error = %e, "loopback relay stopped");
                }
            })?;
        Ok(Relay {
            tx,
            waker,
            stop,
            thread: Some(thread),
        })
    }

    pub fn send(&self, cmd: Cmd) {
        if self.tx.send(cmd).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Closes a listener and waits (a second at most) until it is closed.
    pub fn unlisten(&self, key: Key) {
        let (done, wait) = crossbeam_channel::bounded(1);
        self.send(Cmd::Unlisten { key, done });
        let _ = wait.recv_timeout(Duration::from_secs(1));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A network's side of the relay: smoltcp's interface on the gateway's address.
struct Net {
    iface: Interface,
    dev: Device,
    sockets: SocketSet<'static>,
    gw: Ipv4Addr,
    ports: (u16, u16),
    next: u16,
    used: HashSet<u16>,
    /// Sockets of ended TCP relays, freed once the poll after their end ran (their reset,
    /// if any, sent).
    dying: Vec<(SocketHandle, u16)>,
}

impl Net {
    /// A free local port of the relay's range.
    fn take_port(&mut self) -> Option<u16> {
        let (lo, hi) = self.ports;
        let n = u32::from(hi - lo) + 1;
        for _ in 0..n {
            let p = self.next;
            self.next = if self.next >= hi { lo } else { self.next + 1 };
            if self.used.insert(p) {
                return Some(p);
            }
        }
        None
    }
}

enum Sock {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

struct Listener {
    key: Key,
    sock: Sock,
    target: Target,
    counters: Arc<Counters>,
}

struct Thread {
    poll: Poll,
    rx: Receiver<Cmd>,
    stop: Arc<AtomicBool>,
    start: StdInstant,
    next_token: usize,
    nets: HashMap<NetId, Net>,
    net_tokens: HashMap<Token, NetId>,
    listeners: HashMap<Token, Listener>,
    keys: HashMap<Key, Token>,
    conns: HashMap<Token, Conn>,
    sessions: HashMap<(Token, SocketAddr), Session>,
    /// Listeners with pending connections or datagrams.
    ready: Vec<Token>,
    last_expiry: StdInstant,
    scratch: Vec<u8>,
}

impl Thread {
    fn new(poll: Poll, rx: Receiver<Cmd>, stop: Arc<AtomicBool>) -> Thread {
        Thread {
            poll,
            rx,
            stop,
            start: StdInstant::now(),
            next_token: 1,
            nets: HashMap::new(),
            net_tokens: HashMap::new(),
            listeners: HashMap::new(),
            keys: HashMap::new(),
            conns: HashMap::new(),
            sessions: HashMap::new(),
            ready: Vec::new(),
            last_expiry: StdInstant::now(),
            scratch: vec![0; 65536],
        }
    }

    fn now(&self) -> Instant {
        Instant::from_micros(self.start.elapsed().as_micros() as i64)
    }

    fn token(&mut self) -> Token {
        self.next_token += 1;
        Token(self.next_token)
    }

    fn relays(&self) -> usize {
        self.conns.len() + self.sessions.len()
    }

    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(256);
        while !self.stop.load(Ordering::Relaxed) {
            let timeout = self.timeout();
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in events.iter() {
                let t = ev.token();
                if t == WAKER {
                    continue;
                }
                if self.listeners.contains_key(&t) && !self.ready.contains(&t) {
                    self.ready.push(t);
                }
            }
            while let Ok(cmd) = self.rx.try_recv() {
                self.command(cmd);
            }
            self.service();
        }
        Ok(())
    }

    /// How long to sleep: until smoltcp's next timer, a second at most (UDP expiry).
    fn timeout(&mut self) -> Duration {
        let now = self.now();
        let mut t = Duration::from_secs(1);
        for net in self.nets.values_mut() {
            if let Some(d) = net.iface.poll_delay(now, &net.sockets) {
                t = t.min(Duration::from_micros(d.total_micros()));
            }
        }
        t
    }

    fn command(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Attach {
                net,
                sock,
                gw,
                prefix,
                gw_mac,
                mtu,
                ports,
            } => {
                self.detach(net);
                let tok = self.token();
                let fd = sock.as_raw_fd();
                if let Err(e) =
                    self.poll
                        .registry()
                        .register(&mut SourceFd(&fd), tok, Interest::READABLE)
                {
                    warn!(error = %e, "relay: network not attached");
                    return;
                }
                let mut dev = Device::new(sock, gw_mac, mtu);
                let mut cfg = Config::new(HardwareAddress::Ip);
                cfg.random_seed = self.start.elapsed().as_nanos() as u64 ^ u64::from(net.0);
                let now = self.now();
                let mut iface = Interface::new(cfg, &mut dev, now);
                iface.update_ip_addrs(|a| {
                    let _ = a.push(IpCidr::new(IpAddress::Ipv4(gw), prefix));
                });
                self.net_tokens.insert(tok, net);
                self.nets.insert(
                    net,
                    Net {
                        iface,
                        dev,
                        sockets: SocketSet::new(Vec::new()),
                        gw,
                        ports,
                        next: ports.0,
                        used: HashSet::new(),
                        dying: Vec::new(),
                    },
                );
                // Listeners of the network know their containers' MACs.
                for l in self.listeners.values() {
                    if l.target.net == net {
                        if let Some(n) = self.nets.get_mut(&net) {
                            n.dev.learn(l.target.ip, l.target.mac);
                        }
                    }
                }
            }
            Cmd::Detach { net } => self.detach(net),
            Cmd::Listen {
                key,
                sock,
                target,
                counters,
            } => {
                self.unlisten(key);
                let tok = self.token();
                let reg = self.poll.registry();
                let sock = match sock {
                    Listening::Tcp(l) => {
                        let mut l = TcpListener::from_std(l);
                        reg.register(&mut l, tok, Interest::READABLE)
                            .map(|()| Sock::Tcp(l))
                    }
                    Listening::Udp(u) => {
                        let mut u = UdpSocket::from_std(u);
                        reg.register(&mut u, tok, Interest::READABLE)
                            .map(|()| Sock::Udp(u))
                    }
                };
                match sock {
                    Ok(sock) => {
                        if let Some(n) = self.nets.get_mut(&target.net) {
                            n.dev.learn(target.ip, target.mac);
                        }
                        self.keys.insert(key, tok);
                        self.listeners.insert(
                            tok,
                            Listener {
                                key,
                                sock,
                                target,
                                counters,
                            },
                        );
                        // Connections may be waiting already.
                        self.ready.push(tok);
                    }
                    Err(e) => warn!(error = %e, "relay: listener not polled"),
                }
            }
            Cmd::Unlisten { key, done } => {
                self.unlisten(key);
                let _ = done.send(());
            }
        }
    }

    fn unlisten(&mut self, key: Key) {
        if let Some(tok) = self.keys.remove(&key) {
            if let Some(mut l) = self.listeners.remove(&tok) {
                let _ = match &mut l.sock {
                    Sock::Tcp(s) => self.poll.registry().deregister(s),
                    Sock::Udp(s) => self.poll.registry().deregister(s),
                };
                debug!(port = l.key.port, "relay: listener closed");
            }
            // A UDP listener's sessions answer through its socket: they end with it.
            let gone: Vec<_> = self
                .sessions
                .keys()
                .filter(|(t, _)| *t == tok)
                .copied()
                .collect();
            for k in gone {
                self.end_session(k);
            }
            self.ready.retain(|t| *t != tok);
        }
    }

    fn detach(&mut self, net: NetId) {
        let conns: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| c.net == net)
            .map(|(t, _)| *t)
            .collect();
        for t in conns {
            self.end_conn(t);
        }
        let sessions: Vec<_> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.net == net)
            .map(|(k, _)| *k)
            .collect();
        for k in sessions {
            self.end_session(k);
        }
        if let Some(n) = self.nets.remove(&net) {
            let fd = n.dev.sock().as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
        }
        self.net_tokens.retain(|_, n| *n != net);
    }

    /// One round: new connections and datagrams, smoltcp's ingress, the data both ways,
    /// smoltcp's egress, and the relays that ended.
    fn service(&mut self) {
        let ready = std::mem::take(&mut self.ready);
        for tok in ready {
            self.accept(tok);
        }
        // smoltcp's poll and the pumps take turns until neither has anything more to do: a
        // state smoltcp reaches in a poll (a connection opened) may let a pump move bytes
        // that wait already, with no new event to come for them.
        let mut ended = Vec::new();
        for round in 0.. {
            let now = self.now();
            let mut changed = false;
            for n in self.nets.values_mut() {
                changed |= n.iface.poll(now, &mut n.dev, &mut n.sockets)
                    == smoltcp::iface::PollResult::SocketStateChanged;
                for (h, port) in std::mem::take(&mut n.dying) {
                    n.sockets.remove(h);
                    n.used.remove(&port);
                }
            }
            if round > 0 && !changed || round == 8 {
                break;
            }
            let mut moved = false;
            for (tok, c) in &mut self.conns {
                let Some(n) = self.nets.get_mut(&c.net) else {
                    if !ended.contains(tok) {
                        ended.push(*tok);
                    }
                    continue;
                };
                let (alive, m) = pump(c, n.sockets.get_mut::<tcp::Socket>(c.handle));
                moved |= m;
                if !alive && !ended.contains(tok) {
                    ended.push(*tok);
                }
            }
            self.pump_udp();
            if !moved && !changed {
                break;
            }
        }
        for t in ended {
            self.end_conn(t);
        }
        if self.last_expiry.elapsed() >= Duration::from_secs(1) {
            self.last_expiry = StdInstant::now();
            let idle: Vec<_> = self
                .sessions
                .iter()
                .filter(|(_, s)| s.last.elapsed() >= UDP_IDLE)
                .map(|(k, _)| *k)
                .collect();
            for k in idle {
                self.end_session(k);
            }
        }
    }

    /// Takes what waits on listener `tok`: connections, or datagrams.
    fn accept(&mut self, tok: Token) {
        loop {
            let Some(l) = self.listeners.get_mut(&tok) else {
                return;
            };
            match &mut l.sock {
                Sock::Tcp(s) => match s.accept() {
                    Ok((stream, _)) => {
                        let (target, counters) = (l.target, l.counters.clone());
                        self.open_conn(stream, target, counters);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        debug!(error = %e, "relay: accept");
                        return;
                    }
                },
                Sock::Udp(s) => match s.recv_from(&mut self.scratch) {
                    Ok((n, client)) => {
                        let (target, counters) = (l.target, l.counters.clone());
                        self.datagram(tok, client, n, target, counters);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        debug!(error = %e, "relay: recv_from");
                        return;
                    }
                },
            }
        }
    }
}
