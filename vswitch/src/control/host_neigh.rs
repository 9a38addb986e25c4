//! A shared uplink's next hops come from the host's own neighbour table: the host answers ARP
//! on that interface and keeps the table (the switch sending ARP from the host's address would
//! only confuse it). This thread copies the uplink's entries into the dataplane — all of them
//! at start, then every change the kernel announces — and turns the dataplane's lookups of
//! missing or stale next hops into resolution requests (`NTF_USE`, as if the host were sending
//! there), whose answers arrive as changes.

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use tracing::{debug, warn};

use crate::dataplane::Injector;
use crate::sandbox::netlink::{NeighbourWatch, Netlink};

/// Lookups the dataplane may have outstanding.
const WANTS: usize = 256;
const TICK: Duration = Duration::from_millis(100);

/// The running thread; stopped when dropped.
pub struct HostNeighbors {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for HostNeighbors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HostNeighbors")
    }
}

impl HostNeighbors {
    /// Starts following link `index`'s neighbours (in the caller's namespace) into the
    /// dataplane; `gateway` is resolved at once if the host does not know it yet. Returns the
    /// sender the dataplane puts its lookups on.
    pub fn spawn(
        index: u32,
        gateway: Option<Ipv4Addr>,
        injector: Injector,
    ) -> std::io::Result<(HostNeighbors, Sender<Ipv4Addr>)> {
        let (tx, rx) = crossbeam_channel::bounded(WANTS);
        let watch = NeighbourWatch::open()?;
        let mut nl = Netlink::open()?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        // Read the table once before returning, so frames routed right after `uplink set`
        // find the next hops the host knows.
        let known = copy_table(&mut nl, index, &injector);
        if let Some(gw) = gateway.filter(|g| !known.contains(g)) {
            if let Err(e) = nl.resolve_neighbour(index, gw) {
                warn!(gateway = %gw, error = %e, "cannot ask the host to resolve the gateway");
            }
        }
        let thread = std::thread::Builder::new()
            .name("host-neigh".into())
            .spawn(move || follow(index, watch, nl, rx, injector, flag))?;
        Ok((
            HostNeighbors {
                stop,
                thread: Some(thread),
            },
            tx,
        ))
    }
}

impl Drop for HostNeighbors {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Tells the dataplane every usable entry of the link; returns their addresses.
fn copy_table(nl: &mut Netlink, index: u32, injector: &Injector) -> Vec<Ipv4Addr> {
    match nl.neighbours_v4(index) {
        Ok(entries) => entries
            .into_iter()
            .map(|(ip, mac)| {
                injector.neighbor(ip, Some(mac));
                ip
            })
            .collect(),
        Err(e) => {
            warn!(error = %e, "cannot read the host's neighbour table");
            Vec::new()
        }
    }
}

fn follow(
    index: u32,
    mut watch: NeighbourWatch,
    mut nl: Netlink,
    wants: Receiver<Ipv4Addr>,
    injector: Injector,
    stop: Arc<AtomicBool>,
) {
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            warn!(error = %e, "host neighbour thread: no poll");
            return;
        }
    };
    let fd = watch.fd();
    let watching = poll
        .registry()
        .register(&mut SourceFd(&fd), Token(0), Interest::READABLE)
        .is_ok();
    let mut events = Events::with_capacity(4);
    while !stop.load(Ordering::Relaxed) {
        if watching {
            let _ = poll.poll(&mut events, Some(TICK));
            match watch.changes() {
                Ok(changes) => {
                    for (i, ip, mac) in changes {
                        if i == index {
                            debug!(%ip, ?mac, "host neighbour changed");
                            injector.neighbor(ip, mac);
                        }
                    }
                }
                // Notifications were lost (ENOBUFS): read the whole table again.
                Err(_) => {
                    copy_table(&mut nl, index, &injector);
                }
            }
        } else {
            std::thread::sleep(TICK);
        }
        loop {
            match wants.try_recv() {
                Ok(ip) => {
                    // The host's entry as it is now (it may be fresh already), and a nudge
                    // to (re)confirm it; the kernel announces what the nudge changes.
                    if let Ok(entries) = nl.neighbours_v4(index) {
                        if let Some((_, mac)) = entries.iter().find(|(i, _)| *i == ip) {
                            injector.neighbor(ip, Some(*mac));
                        }
                    }
                    if let Err(e) = nl.resolve_neighbour(index, ip) {
                        debug!(%ip, error = %e, "resolution request refused");
                    }
                }
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return,
            }
        }
    }
}
