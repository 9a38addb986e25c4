//! The Prometheus endpoint: a small HTTP/1.1 server on the address `[daemon] metrics` (or
//! `--metrics`) names, and nowhere else; off unless configured. `GET /metrics` answers the text
//! format (`Manager::metrics_text`); anything else is 404 or 405. One request per connection,
//! a connection at a time, with short timeouts: a slow scraper cannot hold it.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{debug, info};

use super::Manager;

/// Binds `addr` (an error names it) and serves it on a thread of its own.
pub fn serve(addr: SocketAddr, manager: Arc<Mutex<Manager>>) -> Result<(), String> {
    let listener =
        TcpListener::bind(addr).map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    info!(%addr, "metrics on http://{addr}/metrics");
    std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Err(e) = answer(stream, &manager) {
                    debug!(error = %e, "metrics request failed");
                }
            }
        })
        .map_err(|e| format!("cannot start the metrics thread: {e}"))?;
    Ok(())
}

fn answer(stream: TcpStream, manager: &Mutex<Manager>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    (&mut reader).take(8192).read_line(&mut line)?;
    // The headers up to the blank line (ignored).
    let mut h = String::new();
    for _ in 0..100 {
        h.clear();
        if (&mut reader).take(8192).read_line(&mut h)? == 0 || h.trim().is_empty() {
            break;
        }
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, body, ctype) = match (method, path) {
        ("GET", "/metrics") | ("HEAD", "/metrics") => {
            let text = manager
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .metrics_text();
            match text {
                Ok(t) => ("200 OK", t, "text/plain; version=0.0.4; charset=utf-8"),
                Err(e) => ("500 Internal Server Error", format!("{e}\n"), "text/plain"),
            }
        }
        (_, "/metrics") => (
            "405 Method Not Allowed",
            "GET /metrics\n".into(),
            "text/plain",
        ),
        _ => (
            "404 Not Found",
            "the metrics are at /metrics\n".into(),
            "text/plain",
        ),
    };
    let mut out = &stream;
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    if method != "HEAD" {
        out.write_all(body.as_bytes())?;
    }
    out.flush()
}
