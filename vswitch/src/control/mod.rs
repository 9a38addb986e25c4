//! The control socket: JSON lines over a Unix socket, one thread per client, every request
//! validated and answered with a result or a coded error. Slow, silent, oversized or malformed
//! clients get an error and are disconnected; other clients are unaffected.

pub mod auth;
pub mod dns_forward;
pub mod host_neigh;
pub mod manager;
pub mod netns_files;
pub mod resolv;
pub mod upstreams;

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, warn};

use crate::api::{ApiError, ErrorCode, Request, Response, MAX_REQUEST_BYTES, PROTOCOL_VERSION};
pub use manager::Manager;

/// Clients served at once; more are told to retry.
pub const MAX_CLIENTS: usize = 128;
/// A client that sends nothing for this long is disconnected.
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

/// Accepts clients forever (the daemon exits the process to stop).
pub fn serve(listener: UnixListener, manager: Arc<Mutex<Manager>>) {
    let active = Arc::new(AtomicUsize::new(0));
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "accept failed");
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if active.load(Ordering::SeqCst) >= MAX_CLIENTS {
            let _ = reply(
                &stream,
                &Response::Error(ApiError::new(
                    ErrorCode::Busy,
                    format!("vswitchd is serving {MAX_CLIENTS} clients already; retry shortly"),
                )),
            );
            continue;
        }
        active.fetch_add(1, Ordering::SeqCst);
        let manager = manager.clone();
        let active2 = active.clone();
        let spawned = std::thread::Builder::new()
            .name("client".into())
            .spawn(move || {
                if let Err(e) = client(stream, &manager) {
                    debug!(error = %e, "client connection ended");
                }
                active2.fetch_sub(1, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            active.fetch_sub(1, Ordering::SeqCst);
            warn!(error = %e, "cannot spawn client thread");
        }
    }
}

fn reply(mut stream: &UnixStream, resp: &Response) -> io::Result<()> {
    let mut line = serde_json::to_vec(resp).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)
}

fn client(stream: UnixStream, manager: &Mutex<Manager>) -> io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut reader = BufReader::new(stream.try_clone()?);
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
                let mut m = manager.lock().unwrap_or_else(|p| p.into_inner());
                match m.handle(req.op) {
                    Ok(r) => Response::Ok(r),
                    Err(e) => Response::Error(e),
                }
            }
        };
        reply(&stream, &resp)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Op;

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
