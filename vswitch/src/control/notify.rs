//! systemd's readiness protocol (`Type=notify`): `READY=1` to the datagram socket named by
//! `$NOTIFY_SOCKET` once the control socket serves, `STOPPING=1` when a stop begins. A path, or
//! an abstract name written `@name`. Without `$NOTIFY_SOCKET` (not run by systemd) nothing is
//! sent. Written by hand: it is one datagram (sd_notify(3)).

use std::io;
use std::os::unix::net::UnixDatagram;

/// Sends `state` (newline-separated `KEY=VALUE`s) to systemd, if it is listening. `Ok(false)`
/// when there is no `$NOTIFY_SOCKET`.
pub fn notify(state: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let target = target.to_string_lossy().into_owned();
    let sock = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        sock.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        sock.send_to(state.as_bytes(), &target)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn no_socket_no_message() {
        // The test runner is not systemd: unless it set NOTIFY_SOCKET, nothing is sent.
        if std::env::var_os("NOTIFY_SOCKET").is_none() {
            assert!(!super::notify("READY=1").unwrap());
        }
    }
}
