//! The control socket: JSON lines over a Unix socket, one thread per client, every request
//! validated and answered with a result or a coded error. Each connection's peer is identified
//! by `SO_PEERCRED`: root and the `--group` may change things, the `--read-group` may read;
//! connections are bounded per user, with room kept for root, and a client that sends nothing
//! is dropped after `FIRST_BYTE_TIMEOUT`. Slow, silent, oversized or malformed
//! clients get an error and are disconnected; other clients are unaffected.

pub mod auth;
pub mod cluster;
pub mod dns_forward;
pub mod events;
pub mod host_neigh;
pub mod manager;
pub mod metrics;
pub mod netns_files;
pub mod notify;
pub mod resolv;
pub mod upstreams;

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info, warn};

use crate::api::{
    ApiError, CaptureEnd, CaptureFrame, ErrorCode, Op, Reply, Request, Response, MAX_REQUEST_BYTES,
    PROTOCOL_VERSION,
};
use auth::{access_of, Access, Grant, Peer, Policy};
pub use manager::Manager;

/// Clients served at once (every user together); more are told to retry.
pub const MAX_CLIENTS: usize = 128;
/// Connections kept for root beyond `MAX_CLIENTS`: however many other clients are connected,
/// root's `vswitchctl` is answered.
pub const ROOT_RESERVED: usize = 16;
/// Connections one non-root user may hold at once.
pub const MAX_PER_UID: usize = 32;
/// A client that has sent nothing this long after connecting is disconnected.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(2);
/// A client that sends nothing for this long (after its first request) is disconnected.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Decodes one request line; a bad line gets the error to send back.
pub fn decode_request(line: &[u8]) -> Result<Request, ApiError> {
    let bad = |m: String| ApiError::new(ErrorCode::BadRequest, m);
    let value: serde_json::Value =
        serde_json::from_slice(line).map_err(|e| bad(format!("request is not valid JSON: {e}")))?;
    match value.get("version").map(|v| v.as_u64()) {
        None => return Err(bad("request has no \"version\" field".into())),
        Some(Some(v)) if v == u64::from(PROTOCOL_VERSION) => {}
        Some(v) => {
            return Err(ApiError::new(
                ErrorCode::UnsupportedVersion,
                format!(
                    "protocol version {} is not supported; this vswitchd speaks version {PROTOCOL_VERSION} (upgrade vswitchctl or vswitchd so they match)",
                    v.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
                ),
            ))
        }
    }
    serde_json::from_value(value).map_err(|e| bad(format!("invalid request: {e}")))
}

/// Connections held, in total and per uid. A slot is released when its `Slot` drops.
#[derive(Default)]
struct Slots {
    inner: Mutex<SlotCounts>,
}

#[derive(Default)]
struct SlotCounts {
    total: usize,
    per_uid: HashMap<u32, usize>,
}

struct Slot {
    slots: Arc<Slots>,
    uid: u32,
}

impl Slots {
    /// Takes a slot for `uid`, or says why not.
    fn take(self: &Arc<Self>, uid: u32) -> Result<Slot, String> {
        let mut c = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.per_uid.get(&uid).copied().unwrap_or(0);
        if uid == 0 {
            if c.total >= MAX_CLIENTS + ROOT_RESERVED {
                return Err(format!(
                    "vswitchd is serving {} clients already; retry shortly",
                    c.total
                ));
            }
        } else if mine >= MAX_PER_UID {
            return Err(format!(
                "uid {uid} has {mine} connections to vswitchd already (at most {MAX_PER_UID} per user); close some and retry"
            ));
        } else if c.total - c.per_uid.get(&0).copied().unwrap_or(0) >= MAX_CLIENTS
            || c.total >= MAX_CLIENTS + ROOT_RESERVED
        {
            return Err(format!(
                "vswitchd is serving {MAX_CLIENTS} clients already; retry shortly"
            ));
        }
        c.total += 1;
        *c.per_uid.entry(uid).or_insert(0) += 1;
        Ok(Slot {
            slots: self.clone(),
            uid,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.slots.inner.lock().unwrap_or_else(|p| p.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_uid.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                c.per_uid.remove(&self.uid);
            }
        }
    }
}

/// Accepts clients forever (the daemon exits the process to stop). Each connection's peer is
/// identified by `SO_PEERCRED` and gets what `policy` grants it.
pub fn serve(listener: UnixListener, manager: Arc<Mutex<Manager>>, policy: Policy) {
    let slots = Arc::new(Slots::default());
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        // A client that does not read its refusal must not hold up the accept loop.
        let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
        let peer = match Peer::of(&stream) {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "cannot read the peer's credentials; connection refused");
                continue;
            }
        };
        let slot = match slots.take(peer.uid) {
            Ok(s) => s,
            Err(msg) => {
                debug!(uid = peer.uid, pid = peer.pid, "connection refused: {msg}");
                let _ = reply(
                    &stream,
                    &Response::Error(ApiError::new(ErrorCode::Busy, msg)),
                );
                continue;
            }
        };
        let grant = policy.grant(&peer);
        let manager = manager.clone();
        let spawned = std::thread::Builder::new()
            .name("client".into())
            .spawn(move || {
                let _slot = slot;
                if let Err(e) = client(stream, &manager, &peer, grant) {
                    debug!(error = %e, uid = peer.uid, pid = peer.pid, "client connection ended");
                }
            });
        if let Err(e) = spawned {
            warn!(error = %e, "cannot spawn client thread");
        }
    }
}

fn reply(mut stream: &UnixStream, resp: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(resp).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

/// The op's name on the wire (`network-create`), for logs and errors.
fn op_name(op: &Op) -> String {
    serde_json::to_value(op)
        .ok()
        .and_then(|v| v.get("op").and_then(|o| o.as_str()).map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn denied(op: &str, access: Access, peer: &Peer) -> ApiError {
    let what = match access {
        Access::Read => "read",
        Access::Change => "change",
    };
    ApiError::new(
        ErrorCode::PermissionDenied,
        format!(
            "permission denied: {op:?} is a {what} operation and uid {} (gid {}) may not {what} vswitchd's state; run it as root or as a member of the group configured with --group{}",
            peer.uid,
            peer.gid,
            if access == Access::Read { " or --read-group" } else { "" }
        ),
    )
}

fn client(
    stream: UnixStream,
    manager: &Mutex<Manager>,
    peer: &Peer,
    grant: Grant,
) -> io::Result<()> {
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    // A client that connects and sends nothing holds a slot only briefly.
    stream.set_read_timeout(Some(FIRST_BYTE_TIMEOUT))?;
    if reader.fill_buf()?.is_empty() {
        return Ok(());
    }
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = (&mut reader)
            .take(MAX_REQUEST_BYTES as u64 + 1)
            .read_until(b'\n', &mut line)?;
        if n == 0 {
            return Ok(());
        }
        if line.len() > MAX_REQUEST_BYTES {
            reply(
                &stream,
                &Response::Error(ApiError::new(
                    ErrorCode::RequestTooLarge,
                    format!("request is larger than {MAX_REQUEST_BYTES} bytes"),
                )),
            )?;
            return Ok(());
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let resp = match decode_request(&line) {
            Err(e) => Response::Error(e),
            Ok(req) => {
                let access = access_of(&req.op);
                let name = op_name(&req.op);
                if !grant.allows(access) {
                    warn!(uid = peer.uid, pid = peer.pid, op = %name, "request refused: permission denied");
                    Response::Error(denied(&name, access, peer))
                } else {
                    if access == Access::Change {
                        info!(uid = peer.uid, pid = peer.pid, op = %name, request = %String::from_utf8_lossy(line.trim_ascii()), "change requested");
                    }
                    if let Op::Events = &req.op {
                        let sub = manager
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .subscribe_events();
                        match sub {
                            Ok(sub) => return stream_events(&stream, sub),
                            Err(msg) => {
                                reply(
                                    &stream,
                                    &Response::Error(ApiError::new(ErrorCode::Busy, msg)),
                                )?;
                                continue;
                            }
                        }
                    }
                    if let Op::Capture(c) = &req.op {
                        let started = manager
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .capture_start(c);
                        match started {
                            Ok(session) => return stream_capture(&stream, session),
                            Err(e) => {
                                reply(&stream, &Response::Error(e))?;
                                continue;
                            }
                        }
                    }
                    let mut m = manager.lock().unwrap_or_else(|p| p.into_inner());
                    let result = m.handle(req.op);
                    drop(m);
                    if access == Access::Change {
                        match &result {
                            Ok(_) => {
                                info!(uid = peer.uid, pid = peer.pid, op = %name, "change done")
                            }
                            Err(e) => {
                                info!(uid = peer.uid, pid = peer.pid, op = %name, code = ?e.code, "change failed: {e}")
                            }
                        }
                    }
                    match result {
                        Ok(r) => Response::Ok(r),
                        Err(e) => Response::Error(e),
                    }
                }
            }
        };
        reply(&stream, &resp)?;
    }
}

/// Whether the client at the other end of `stream` has closed it (what it sent is ignored).
fn client_gone(stream: &UnixStream) -> io::Result<bool> {
    stream.set_nonblocking(true)?;
    let mut b = [0u8; 64];
    let gone = match (&*stream).read(&mut b) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() != io::ErrorKind::WouldBlock,
    };
    stream.set_nonblocking(false)?;
    Ok(gone)
}

/// Streams the switch's events to a client until it goes.
fn stream_events(stream: &UnixStream, sub: events::Subscription) -> io::Result<()> {
    use crossbeam_channel::RecvTimeoutError;
    use std::sync::atomic::Ordering;
    reply(stream, &Response::Ok(Reply::EventsStarted))?;
    let mut missed_told = 0;
    loop {
        match sub.events.recv_timeout(Duration::from_millis(500)) {
            Ok(mut ev) => {
                let missed = sub.missed.load(Ordering::Relaxed);
                ev.missed = missed - missed_told;
                missed_told = missed;
                reply(stream, &Response::Ok(Reply::Event(ev)))?;
            }
            Err(RecvTimeoutError::Timeout) => {
                if client_gone(stream)? {
                    return Ok(());
                }
            }
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
    }
}

/// Streams a capture to its client: `capture_started`, a `capture_frame` per frame, and
/// `capture_end` once `count` frames went (or the port did). A client that closes its end
/// stops it; one that reads too slowly makes the dataplane leave frames out (counted), never
/// wait.
fn stream_capture(stream: &UnixStream, session: manager::CaptureSession) -> io::Result<()> {
    use crossbeam_channel::RecvTimeoutError;
    reply(
        stream,
        &Response::Ok(Reply::CaptureStarted(session.info.clone())),
    )?;
    let mut sent = 0u64;
    let reason = loop {
        if session.count.is_some_and(|c| sent >= c) {
            break "count";
        }
        match session.frames.recv_timeout(Duration::from_millis(200)) {
            Ok(f) => {
                let frame = CaptureFrame {
                    ts_us: f.ts.as_micros() as u64,
                    dir: match f.dir {
                        crate::dataplane::capture::Direction::In => "in".into(),
                        crate::dataplane::capture::Direction::Out => "out".into(),
                    },
                    len: f.orig_len,
                    hex: f.data.iter().map(|b| format!("{b:02x}")).collect(),
                    dropped: session.dropped(),
                };
                reply(stream, &Response::Ok(Reply::CaptureFrame(frame)))?;
                sent += 1;
            }
            Err(RecvTimeoutError::Timeout) => {
                // Nothing to send: has the client gone?
                if client_gone(stream)? {
                    return Ok(());
                }
            }
            Err(RecvTimeoutError::Disconnected) => break "port gone",
        }
    };
    let end = CaptureEnd {
        captured: sent,
        dropped: session.dropped(),
        reason: reason.into(),
    };
    drop(session);
    reply(stream, &Response::Ok(Reply::CaptureEnd(end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(
            decode_request(br#"{"version":1,"op":"show"}"#).unwrap().op,
            Op::Show
        );
        let e = decode_request(b"{garbage").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = decode_request(br#"{"op":"show"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = decode_request(br#"{"version":99,"op":"show"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        let e = decode_request(br#"{"version":1,"op":"launch-missiles"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = decode_request(br#"{"version":1,"op":"network-create","name":5}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("invalid request"), "{}", e.message);
    }
}
