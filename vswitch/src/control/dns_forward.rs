//! Forwarding of DNS queries the networks do not own to the upstream resolvers (the configured
//! ones, else the host's resolv.conf: see `upstreams`).
//!
//! The pipeline hands such a query over as an event; a small pool of worker threads asks the
//! upstreams over UDP (from the daemon's own namespace) and injects the answer — or SERVFAIL when
//! there are none or none answers — back into the dataplane, addressed from the gateway to the
//! asking container. The upstreams' answers (NXDOMAIN, REFUSED, ...) are passed on as they are.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use etherparse::PacketBuilder;
use hickory_proto::op::{Message, ResponseCode};
use tracing::{debug, warn};

use super::upstreams::Upstreams;
use crate::dataplane::Injector;
use crate::switch::gateway::{DnsForward, DNS_PORT};

/// Queries waiting for a worker; more are dropped (and counted).
const QUEUE: usize = 256;
const WORKERS: usize = 4;
/// How long one upstream gets to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Forwarder {
    tx: Sender<Box<DnsForward>>,
    upstreams: Arc<Upstreams>,
}

impl Forwarder {
    /// Starts the workers; each query goes to the upstreams `upstreams` holds when it is asked.
    pub fn spawn(upstreams: Arc<Upstreams>, injector: Injector) -> std::io::Result<Forwarder> {
        let (tx, rx) = crossbeam_channel::bounded::<Box<DnsForward>>(QUEUE);
        for i in 0..WORKERS {
            let rx = rx.clone();
            let upstreams = upstreams.clone();
            let injector = injector.clone();
            std::thread::Builder::new()
                .name(format!("dns-forward-{i}"))
                .spawn(move || {
                    let counters = &upstreams.counters;
                    for job in rx {
                        let answer = ask_upstreams(&upstreams.current(), &job.query);
                        let payload = match answer {
                            Some(a) => {
                                counters.answered.fetch_add(1, Ordering::Relaxed);
                                a
                            }
                            None => {
                                counters.servfail.fetch_add(1, Ordering::Relaxed);
                                match servfail(&job.query) {
                                    Some(s) => s,
                                    None => continue,
                                }
                            }
                        };
                        let ip = PacketBuilder::ethernet2(job.gateway_mac.0, job.client_mac.0)
                            .ipv4(job.gateway_ip.octets(), job.client_ip.octets(), 64);
                        let mut frame = Vec::with_capacity(payload.len() + 80);
                        let written = match job.tcp {
                            // DNS over TCP: the length-prefixed answer in one segment, with FIN.
                            Some(t) => {
                                let mut data = Vec::with_capacity(payload.len() + 2);
                                data.extend_from_slice(&(payload.len() as u16).to_be_bytes());
                                data.extend_from_slice(&payload);
                                ip.tcp(DNS_PORT, job.client_port, t.seq, 65535)
                                    .psh()
                                    .fin()
                                    .ack(t.ack)
                                    .write(&mut frame, &data)
                            }
                            None => ip
                                .udp(DNS_PORT, job.client_port)
                                .write(&mut frame, &payload),
                        };
                        if written.is_ok() {
                            injector.inject(job.port, frame);
                        }
                    }
                })?;
        }
        Ok(Forwarder { tx, upstreams })
    }

    /// Queues a query; drops it (counted) when the upstreams are too far behind.
    pub fn submit(&self, job: Box<DnsForward>) {
        let counters = &self.upstreams.counters;
        counters.forwarded.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                counters.dropped.fetch_add(1, Ordering::Relaxed);
                warn!("DNS forward queue full; query dropped");
            }
        }
    }
}

/// Asks each upstream in turn; the first response with the query's ID wins.
fn ask_upstreams(upstreams: &[SocketAddr], query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 2 {
        return None;
    }
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            "0.0.0.0:0".parse().ok()?
        } else {
            "[::]:0".parse().ok()?
        };
        let Ok(sock) = UdpSocket::bind(bind) else {
            continue;
        };
        if sock.connect(up).is_err() || sock.send(query).is_err() {
            debug!(upstream = %up, "cannot reach upstream");
            continue;
        }
        let deadline = Instant::now() + UPSTREAM_TIMEOUT;
        let mut buf = vec![0u8; 65535];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if left.is_zero() || sock.set_read_timeout(Some(left)).is_err() {
                break;
            }
            match sock.recv(&mut buf) {
                Ok(n) if n >= 12 && buf[..2] == query[..2] => return Some(buf[..n].to_vec()),
                Ok(_) => continue,
                Err(_) => break,
            }
        }
        debug!(upstream = %up, "upstream did not answer");
    }
    None
}

/// A SERVFAIL response to `query` (None when it cannot even be parsed).
fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let mut r = Message::error_msg(q.metadata.id, q.metadata.op_code, ResponseCode::ServFail);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.add_queries(q.queries);
    r.to_vec().ok()
}
