//! The etcd session: a thread with a single-threaded tokio runtime that connects (retrying
//! with backoff, serving "unavailable" meanwhile), grants this node's lease and keeps it alive,
//! puts the keys this node owns under it (again after every new lease: after an outage the
//! store learns this host's endpoints anew), lists the prefix and watches it from the next
//! revision, and answers the control plane's calls. The control plane talks to it through
//! `Cluster`, synchronously, with a deadline.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::Sender;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, WatchOptions,
};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::{ClusterEvent, Keys, StoreConfig, CALL_TIMEOUT};

type Done<T> = std::sync::mpsc::SyncSender<Result<T, String>>;

enum Req {
    /// A key of this node's, under its lease, kept across leases.
    PutOwned(String, Vec<u8>, Done<()>),
    /// Creates a key of this node's only if it is absent (or already this value): whether it
    /// was.
    ClaimOwned(String, Vec<u8>, Done<bool>),
    DeleteOwned(String, Done<()>),
    /// Creates a shared key (no lease) if absent; the value already there otherwise.
    Create(String, Vec<u8>, Done<Option<Vec<u8>>>),
    Delete(String, Done<()>),
}

/// What `cluster show` says of the session.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub connected: bool,
    pub since: Option<Instant>,
    pub error: Option<String>,
    pub lease: i64,
    pub endpoint_list: Vec<String>,
}

/// The control plane's handle on the store.
pub struct Cluster {
    pub keys: Keys,
    pub node: String,
    pub ttl: u64,
    tx: mpsc::UnboundedSender<Req>,
    status: Arc<Mutex<Status>>,
    owned: Owned,
}

/// This node's keys and values, put under every new lease.
type Owned = Arc<Mutex<BTreeMap<String, Vec<u8>>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Cluster {
    /// Starts the session thread; what the watch sees goes to `events`.
    pub fn start(cfg: &StoreConfig, events: Sender<ClusterEvent>) -> Result<Cluster, String> {
        cfg.validate()?;
        let endpoints = cfg.endpoints()?;
        let (tx, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(Status {
            endpoint_list: endpoints.clone(),
            ..Default::default()
        }));
        let keys = Keys {
            prefix: cfg.prefix(),
        };
        let owned = Owned::default();
        let session = Session {
            cfg: cfg.clone(),
            endpoints,
            prefix: keys.prefix.clone(),
            ttl: cfg.ttl(),
            owned: owned.clone(),
            retry: Default::default(),
            events,
            status: status.clone(),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the store's runtime: {e}"))?;
        std::thread::Builder::new()
            .name("store".into())
            .spawn(move || rt.block_on(session.run(rx)))
            .map_err(|e| format!("cannot start the store thread: {e}"))?;
        Ok(Cluster {
            keys,
            node: cfg.node_name(),
            ttl: cfg.ttl(),
            tx,
            status,
            owned,
        })
    }

    pub fn status(&self) -> Status {
        lock(&self.status).clone()
    }

    fn call<T>(&self, make: impl FnOnce(Done<T>) -> Req) -> Result<T, String> {
        let st = self.status();
        if !st.connected {
            return Err(format!(
                "the cluster store is unavailable ({})",
                st.error.unwrap_or_else(|| "not connected yet".into())
            ));
        }
        let (done, wait) = std::sync::mpsc::sync_channel(1);
        self.tx
            .send(make(done))
            .map_err(|_| "the store thread has stopped".to_string())?;
        wait.recv_timeout(CALL_TIMEOUT + Duration::from_millis(500))
            .map_err(|_| "the cluster store did not answer in time".to_string())?
    }

    /// Puts a key of this node's (under its lease): now when the store is there, else when it
    /// comes back (the error says it is not there now).
    pub fn publish(&self, key: String, value: Vec<u8>) -> Result<(), String> {
        lock(&self.owned).insert(key.clone(), value.clone());
        self.send_owned(|d| Req::PutOwned(key, value, d))
    }

    /// Takes a key of this node's away (now, or from what is put when the store comes back).
    pub fn unpublish(&self, key: String) -> Result<(), String> {
        lock(&self.owned).remove(&key);
        self.send_owned(|d| Req::DeleteOwned(key, d))
    }

    /// A change to this node's keys: always handed to the session, in order (one that starts
    /// meanwhile puts what the map holds, then serves this), waited for only while connected.
    fn send_owned(&self, make: impl FnOnce(Done<()>) -> Req) -> Result<(), String> {
        if self.status().connected {
            return self.call(make);
        }
        let (done, _wait) = std::sync::mpsc::sync_channel(1);
        let _ = self.tx.send(make(done));
        Err("the cluster store is unavailable: it gets this when it is back".into())
    }

    pub fn claim_owned(&self, key: String, value: Vec<u8>) -> Result<bool, String> {
        self.call(|d| Req::ClaimOwned(key, value, d))
    }

    pub fn create(&self, key: String, value: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
        self.call(|d| Req::Create(key, value, d))
    }

    pub fn delete(&self, key: String) -> Result<(), String> {
        self.call(|d| Req::Delete(key, d))
    }
}

struct Session {
    cfg: StoreConfig,
    endpoints: Vec<String>,
    prefix: String,
    ttl: u64,
    owned: Owned,
    /// Keys of this node's whose put or delete failed in a session (a leader election, a
    /// member going): tried again at every keep-alive tick until the store takes them.
    retry: std::collections::BTreeSet<String>,
    events: Sender<ClusterEvent>,
    status: Arc<Mutex<Status>>,
}

/// Why a session ended.
type Ended = String;

impl Session {
    fn set_status(&self, f: impl FnOnce(&mut Status)) {
        f(&mut lock(&self.status));
    }

    fn options(&self) -> Result<ConnectOptions, String> {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(CALL_TIMEOUT)
            .with_keep_alive(Duration::from_secs(2), Duration::from_secs(2));
        if let (Some(u), Some(p)) = (&self.cfg.user, &self.cfg.password) {
            o = o.with_user(u.clone(), p.clone());
        }
        if let Some(ca) = &self.cfg.ca {
            let read = |p: &std::path::Path| {
                std::fs::read(p).map_err(|e| format!("store TLS: {}: {e}", p.display()))
            };
            let mut tls = TlsOptions::new().ca_certificate(Certificate::from_pem(read(ca)?));
            if let (Some(c), Some(k)) = (&self.cfg.cert, &self.cfg.key) {
                tls = tls.identity(Identity::from_pem(read(c)?, read(k)?));
            }
            o = o.with_tls(tls);
        }
        Ok(o)
    }

    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Req>) {
        let mut backoff = Duration::from_millis(250);
        let mut logged = false;
        // One member at a time: a session stays on the member it reached (any member forwards
        // to the leader) and moves to the next when that one fails. (A client balanced over
        // every member keeps sending some calls to a stopped one, each failing.)
        let mut next = 0usize;
        loop {
            let ep = self.endpoints[next % self.endpoints.len()].clone();
            let ended = match self.options() {
                Err(e) => Err(e),
                Ok(o) => match Client::connect([ep.as_str()], Some(o)).await {
                    Err(e) => Err(format!("cannot reach {ep}: {e}")),
                    Ok(client) => {
                        let since = Instant::now();
                        let why = self.session(client, &mut rx).await;
                        if since.elapsed() > Duration::from_secs(self.ttl) {
                            backoff = Duration::from_millis(250);
                            logged = false;
                        }
                        Ok(why)
                    }
                },
            };
            next += 1;
            // The other members are tried at once; the backoff is for a round of them all.
            let round_done = next.is_multiple_of(self.endpoints.len());
            let why = match ended {
                Ok(why) => {
                    warn!(reason = %why, "cluster store lost: local traffic goes on, cluster changes fail until it is back");
                    let _ = self.events.send(ClusterEvent::Lost(why.clone()));
                    why
                }
                Err(e) => {
                    if !logged {
                        warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cluster store unavailable: retrying with backoff; local networks are served meanwhile");
                        logged = true;
                    }
                    e
                }
            };
            self.set_status(|s| {
                s.connected = false;
                s.since = Some(Instant::now());
                s.error = Some(why);
                s.lease = 0;
            });
            if !round_done {
                continue;
            }
            // Requests meanwhile are refused at once (the handle checks `connected`); any that
            // raced in are answered here.
            let until = tokio::time::Instant::now() + backoff;
            loop {
                tokio::select! {
                    r = rx.recv() => match r {
                        Some(r) => refuse(r),
                        None => return,
                    },
                    _ = tokio::time::sleep_until(until) => break,
                }
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connected session, until it ends.
    async fn session(
        &mut self,
        mut client: Client,
        rx: &mut mpsc::UnboundedReceiver<Req>,
    ) -> Ended {
        let lease = match client.lease_grant(self.ttl as i64, None).await {
            Ok(l) => l.id(),
            Err(e) => return format!("lease grant: {e}"),
        };
        let (mut keeper, mut kas) = match client.lease_keep_alive(lease).await {
            Ok(k) => k,
            Err(e) => return format!("lease keep-alive: {e}"),
        };
        // This node's keys again, under the new lease; one another node took meanwhile (an
        // address, after our lease expired) stays theirs.
        let mut lost = Vec::new();
        let owned: Vec<(String, Vec<u8>)> = lock(&self.owned)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (k, val) in &owned {
            match claim(&mut client, k, val, lease).await {
                Ok(true) => {}
                Ok(false) => lost.push(k.clone()),
                Err(e) => return format!("re-putting {k}: {e}"),
            }
        }
        for k in lost {
            warn!(key = %k, "taken by another node while the store was away: no longer this node's");
            lock(&self.owned).remove(&k);
        }
        // What failed before is in the map (or not) and was just put: nothing to retry.
        self.retry.clear();
        let snap = match client
            .get(
                self.prefix.clone() + "/",
                Some(GetOptions::new().with_prefix()),
            )
            .await
        {
            Ok(r) => r,
            Err(e) => return format!("list: {e}"),
        };
        let revision = snap.header().map_or(0, |h| h.revision());
        let kvs: Vec<(String, Vec<u8>)> = snap
            .kvs()
            .iter()
            .filter_map(|kv| Some((kv.key_str().ok()?.to_string(), kv.value().to_vec())))
            .collect();
        let mut watch = match client
            .watch(
                self.prefix.clone() + "/",
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision + 1),
                ),
            )
            .await
        {
            Ok(w) => w,
            Err(e) => return format!("watch: {e}"),
        };
        let _ = self.events.send(ClusterEvent::Snapshot(kvs));
        info!(
            lease = format!("{lease:x}"),
            revision, "cluster store connected"
        );
        self.set_status(|s| {
            s.connected = true;
            s.since = Some(Instant::now());
            s.error = None;
            s.lease = lease;
        });
        let every = Duration::from_millis(self.ttl * 1000 / 3);
        let mut tick = tokio::time::interval(every);
        let mut last_ack = Instant::now();
        loop {
            tokio::select! {
                r = rx.recv() => match r {
                    Some(r) => self.serve(&mut client, lease, r).await,
                    None => return "stopping".into(),
                },
                _ = tick.tick() => {
                    if last_ack.elapsed() > Duration::from_secs(self.ttl) {
                        return "the lease was not renewed in time".into();
                    }
                    if let Err(e) = keeper.keep_alive().await {
                        return format!("keep-alive: {e}");
                    }
                    self.retry_owned(&mut client, lease).await;
                }
                m = kas.message() => match m {
                    Ok(Some(r)) if r.ttl() > 0 => last_ack = Instant::now(),
                    Ok(Some(_)) => return "the lease expired".into(),
                    Ok(None) => return "the keep-alive stream ended".into(),
                    Err(e) => return format!("keep-alive: {e}"),
                },
                m = watch.message() => match m {
                    Ok(Some(r)) => {
                        if r.canceled() {
                            return format!("the watch was cancelled: {}", r.cancel_reason());
                        }
                        for ev in r.events() {
                            let Some(kv) = ev.kv() else { continue };
                            let Ok(key) = kv.key_str() else { continue };
                            let e = match ev.event_type() {
                                EventType::Put => ClusterEvent::Put(key.into(), kv.value().to_vec()),
                                EventType::Delete => ClusterEvent::Delete(key.into()),
                            };
                            let _ = self.events.send(e);
                        }
                    }
                    Ok(None) => return "the watch ended".into(),
                    Err(e) => return format!("watch: {e}"),
                },
            }
        }
    }

    /// Puts (or deletes) again what failed: the owned map says which.
    async fn retry_owned(&mut self, client: &mut Client, lease: i64) {
        let keys: Vec<String> = self.retry.iter().cloned().collect();
        for k in keys {
            let value = lock(&self.owned).get(&k).cloned();
            let res = match value {
                Some(v) => client
                    .put(k.clone(), v, Some(PutOptions::new().with_lease(lease)))
                    .await
                    .map(|_| ()),
                None => client.delete(k.clone(), None).await.map(|_| ()),
            };
            match res {
                Ok(()) => {
                    self.retry.remove(&k);
                }
                Err(e) => {
                    warn!(key = %k, error = %e, "the store did not take a change yet; trying again")
                }
            }
        }
    }

    async fn serve(&mut self, client: &mut Client, lease: i64, r: Req) {
        let with_lease = || Some(PutOptions::new().with_lease(lease));
        match r {
            Req::PutOwned(k, v, done) => {
                let res = client.put(k.clone(), v, with_lease()).await;
                if res.is_err() {
                    self.retry.insert(k);
                }
                let _ = done.send(res.map(|_| ()).map_err(|e| e.to_string()));
            }
            Req::ClaimOwned(k, v, done) => {
                let res = claim(client, &k, &v, lease).await;
                if res == Ok(true) {
                    lock(&self.owned).insert(k, v);
                }
                let _ = done.send(res);
            }
            Req::DeleteOwned(k, done) => {
                let res = client.delete(k.clone(), None).await;
                if res.is_err() {
                    self.retry.insert(k);
                }
                let _ = done.send(res.map(|_| ()).map_err(|e| e.to_string()));
            }
            Req::Create(k, v, done) => {
                let txn = Txn::new()
                    .when(vec![Compare::create_revision(
                        k.clone(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then(vec![TxnOp::put(k.clone(), v, None)])
                    .or_else(vec![TxnOp::get(k, None)]);
                let res = match client.txn(txn).await {
                    Err(e) => Err(e.to_string()),
                    Ok(t) if t.succeeded() => Ok(None),
                    Ok(t) => Ok(t.op_responses().iter().find_map(|o| match o {
                        etcd_client::TxnOpResponse::Get(g) => {
                            g.kvs().first().map(|kv| kv.value().to_vec())
                        }
                        _ => None,
                    })),
                };
                let _ = done.send(res);
            }
            Req::Delete(k, done) => {
                let res = client.delete(k, None).await;
                let _ = done.send(res.map(|_| ()).map_err(|e| e.to_string()));
            }
        }
    }
}

/// Creates `k` = `v` under `lease` if absent, or renews it if it already holds `v`; whether it
/// is ours now.
async fn claim(client: &mut Client, k: &str, v: &[u8], lease: i64) -> Result<bool, String> {
    let put = || Some(PutOptions::new().with_lease(lease));
    let txn = Txn::new()
        .when(vec![Compare::create_revision(k, CompareOp::Equal, 0)])
        .and_then(vec![TxnOp::put(k, v, put())])
        .or_else(vec![TxnOp::get(k, None)]);
    let t = client.txn(txn).await.map_err(|e| e.to_string())?;
    if t.succeeded() {
        return Ok(true);
    }
    let same = t.op_responses().iter().any(|o| match o {
        etcd_client::TxnOpResponse::Get(g) => g.kvs().first().is_some_and(|kv| kv.value() == v),
        _ => false,
    });
    if same {
        client.put(k, v, put()).await.map_err(|e| e.to_string())?;
    }
    Ok(same)
}

fn refuse(r: Req) {
    const E: &str = "the cluster store is unavailable";
    match r {
        Req::PutOwned(_, _, d) | Req::DeleteOwned(_, d) | Req::Delete(_, d) => {
            let _ = d.send(Err(E.into()));
        }
        Req::ClaimOwned(_, _, d) => {
            let _ = d.send(Err(E.into()));
        }
        Req::Create(_, _, d) => {
            let _ = d.send(Err(E.into()));
        }
    }
}
