//! vswitchd: the vswitch daemon. Runs in the foreground; SIGTERM or SIGINT stops it cleanly.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing::{error, info, warn};

use vswitch::api::{DEFAULT_SOCKET, DEFAULT_STATE_DIR};
use vswitch::control::dns_forward::Forwarder;
use vswitch::control::upstreams::{Upstreams, DEFAULT_RESOLV_CONF};
use vswitch::control::{self, Manager};
use vswitch::state::{ConfigFile, Store};
use vswitch::switch::gateway::Event;

#[derive(Parser, Debug)]
#[command(
    name = "vswitchd",
    version,
    about = "vswitch daemon: a userspace virtual switch for containers"
)]
struct Args {
    /// Config file (TOML): daemon settings and the networks that always exist.
    #[arg(long, env = "VSWITCH_CONFIG")]
    config: Option<PathBuf>,
    /// Control socket path [default: /run/vswitch/vswitchd.sock].
    #[arg(long, env = "VSWITCH_SOCKET")]
    socket: Option<PathBuf>,
    /// State directory [default: /var/lib/vswitch].
    #[arg(long, env = "VSWITCH_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Log level or filter (error, warn, info, debug, trace) [default: info].
    #[arg(long, env = "VSWITCH_LOG")]
    log_level: Option<String>,
    /// Upstream DNS resolver (IP or IP:PORT) for names the networks do not own; repeatable.
    /// Overrides `dns_upstreams` of the config file. Without any, the `nameserver`s of
    /// --resolv-conf are the upstreams.
    #[arg(long = "dns-upstream")]
    dns_upstreams: Vec<String>,
    /// The resolver configuration followed for upstreams when none are configured: read at
    /// start and again whenever it changes [default: /etc/resolv.conf].
    #[arg(long, env = "VSWITCH_RESOLV_CONF")]
    resolv_conf: Option<PathBuf>,
    /// Move TAP frames with one read(2)/write(2) each instead of io_uring batches (for hosts
    /// whose seccomp or sysctl blocks io_uring; vswitchd falls back by itself when it fails).
    #[arg(long, env = "VSWITCH_NO_IO_URING")]
    no_io_uring: bool,
    /// Use IFACE (of vswitchd's namespace) as the uplink, in shared mode unless the config's
    /// `[uplink]` says otherwise; overrides that section's `iface`. Set once: a saved uplink
    /// (`vswitchctl uplink set`) is kept as it is.
    #[arg(long, env = "VSWITCH_UPLINK")]
    uplink: Option<String>,
    /// Members of GROUP (and root) may change things over the control socket, which is created
    /// with this group and mode 0660; overrides `[daemon] group`. Without it only root may.
    #[arg(long, env = "VSWITCH_GROUP", value_name = "GROUP")]
    group: Option<String>,
    /// Members of GROUP may use the read-only commands (show, ls, inspect, stats, fdb show);
    /// overrides `[daemon] read_group`. With it the socket is mode 0666 (a socket has one
    /// group) and SO_PEERCRED alone decides: anyone else is answered permission_denied.
    #[arg(long, env = "VSWITCH_READ_GROUP", value_name = "GROUP")]
    read_group: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics (e.g. 127.0.0.1:9500); overrides
    /// `[daemon] metrics`. Off unless given.
    #[arg(long, env = "VSWITCH_METRICS", value_name = "ADDR")]
    metrics: Option<String>,
    /// Serve Docker's remote network driver and IPAM driver (`docker network create -d
    /// vswitch --ipam-driver vswitch`); overrides `[docker] enabled`.
    #[arg(long, env = "VSWITCH_DOCKER_PLUGIN")]
    docker_plugin: bool,
    /// The plugin's socket [default: /run/docker/plugins/vswitch.sock, where dockerd finds
    /// the plugin "vswitch"]; elsewhere, dockerd needs a spec file
    /// (/etc/docker/plugins/NAME.spec holding unix://PATH). Overrides `[docker] socket`.
    #[arg(long, env = "VSWITCH_DOCKER_SOCKET", value_name = "PATH")]
    docker_socket: Option<PathBuf>,
    /// The cluster store, `etcd://HOST:PORT[,HOST:PORT…]`: overlay networks, their addresses
    /// and endpoints agree across the hosts using it. Overrides `[store] url`.
    #[arg(long, env = "VSWITCH_STORE", value_name = "URL")]
    store: Option<String>,
    /// The store's key prefix [default: /vswitch].
    #[arg(long, env = "VSWITCH_STORE_PREFIX", value_name = "PREFIX")]
    store_prefix: Option<String>,
    /// This node's name in the cluster [default: the host name].
    #[arg(long, env = "VSWITCH_NODE_NAME", value_name = "NAME")]
    node_name: Option<String>,
    /// The lease of this node's keys, in seconds [default: 10].
    #[arg(long, env = "VSWITCH_STORE_TTL", value_name = "SECS")]
    store_ttl: Option<u64>,
    /// TLS to the store: the CA's certificate, this client's certificate and key (PEM).
    #[arg(long, value_name = "PEM")]
    store_ca: Option<PathBuf>,
    #[arg(long, value_name = "PEM")]
    store_cert: Option<PathBuf>,
    #[arg(long, value_name = "PEM")]
    store_key: Option<PathBuf>,
    /// The store's user and password (the password best from the environment).
    #[arg(long, env = "VSWITCH_STORE_USER", value_name = "USER")]
    store_user: Option<String>,
    #[arg(
        long,
        env = "VSWITCH_STORE_PASSWORD",
        value_name = "PASSWORD",
        hide_env_values = true
    )]
    store_password: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match &args.config {
        Some(path) => match ConfigFile::load(path) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("vswitchd: {e}");
                return ExitCode::from(2);
            }
        },
        None => ConfigFile::default(),
    };
    let level = args
        .log_level
        .clone()
        .or(config.daemon.log_level.clone())
        .unwrap_or_else(|| "info".into());
    // The store's gRPC stack (h2, tower, hyper, tonic) is chatty at debug: quiet unless asked.
    let level = if ["h2", "tower", "hyper", "tonic"]
        .iter()
        .any(|c| level.contains(c))
    {
        level
    } else {
        format!("{level},h2=info,tower=info,hyper=info,hyper_util=info,tonic=info")
    };
    let filter = match tracing_subscriber::EnvFilter::try_new(&level) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("vswitchd: invalid --log-level {level:?}: {e}");
            return ExitCode::from(2);
        }
    };
    // Colours only on a terminal: logs in a file or the journal stay plain text.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();

    let socket = args
        .socket
        .or(config.daemon.socket.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let state_dir = args
        .state_dir
        .or(config.daemon.state_dir.clone())
        .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));

    let upstream_specs = if args.dns_upstreams.is_empty() {
        config.daemon.dns_upstreams.clone()
    } else {
        args.dns_upstreams.clone()
    };
    let mut upstreams = Vec::new();
    for u in &upstream_specs {
        let parsed = u
            .parse::<SocketAddr>()
            .or_else(|_| u.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)));
        match parsed {
            Ok(a) => upstreams.push(a),
            Err(_) => {
                eprintln!("vswitchd: invalid DNS upstream {u:?}: expected IP or IP:PORT");
                return ExitCode::from(2);
            }
        }
    }

    // Configured upstreams win; without any, the host's resolvers are followed.
    let upstreams = if upstreams.is_empty() {
        let path = args
            .resolv_conf
            .clone()
            .or(config.daemon.resolv_conf.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_RESOLV_CONF));
        match Upstreams::from_resolv_conf(path) {
            Ok(u) => u,
            Err(e) => {
                eprintln!("vswitchd: cannot start the resolv.conf watcher: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        info!(?upstreams, "DNS upstreams for other names (configured)");
        Upstreams::configured(upstreams)
    };

    let group = args.group.clone().or(config.daemon.group.clone());
    let read_group = args.read_group.clone().or(config.daemon.read_group.clone());
    let policy = match (
        group
            .as_deref()
            .map(|g| control::auth::group_id(g, "--group"))
            .transpose(),
        read_group
            .as_deref()
            .map(|g| control::auth::group_id(g, "--read-group"))
            .transpose(),
    ) {
        (Ok(change_gid), Ok(read_gid)) => control::auth::Policy {
            change_gid,
            read_gid,
        },
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("vswitchd: {e}");
            return ExitCode::from(2);
        }
    };

    let metrics = match args.metrics.as_ref().or(config.daemon.metrics.as_ref()) {
        None => None,
        Some(a) => match a.parse::<std::net::SocketAddr>() {
            Ok(addr) => Some(addr),
            Err(_) => {
                eprintln!("vswitchd: metrics address {a:?} is not IP:PORT (e.g. 127.0.0.1:9500)");
                return ExitCode::from(2);
            }
        },
    };
    let docker = (args.docker_plugin || config.docker.enabled).then(|| {
        args.docker_socket
            .clone()
            .or(config.docker.socket.clone())
            .unwrap_or_else(|| PathBuf::from(vswitch::frontends::docker::DEFAULT_SOCKET))
    });
    let io_uring = !args.no_io_uring && config.daemon.io_uring.unwrap_or(true);
    if let Err(e) =
        vswitch::ports::umem::configure(config.daemon.afxdp_frames, config.daemon.afxdp_max_frames)
    {
        eprintln!("vswitchd: [daemon] {e}");
        return ExitCode::from(2);
    }
    let mut config = config;
    if let Some(url) = &args.store {
        config.store.get_or_insert_with(Default::default).url = url.clone();
    }
    if let Some(s) = &mut config.store {
        let or = |a: &Option<String>, b: &mut Option<String>| {
            if a.is_some() {
                *b = a.clone();
            }
        };
        or(&args.store_prefix, &mut s.prefix);
        or(&args.node_name, &mut s.node);
        or(&args.store_user, &mut s.user);
        or(&args.store_password, &mut s.password);
        for (a, b) in [
            (&args.store_ca, &mut s.ca),
            (&args.store_cert, &mut s.cert),
            (&args.store_key, &mut s.key),
        ] {
            if a.is_some() {
                *b = a.clone();
            }
        }
        if args.store_ttl.is_some() {
            s.ttl_secs = args.store_ttl;
        }
        if let Err(e) = s.validate() {
            eprintln!("vswitchd: --store: {e}");
            return ExitCode::from(2);
        }
    }
    let mut uplink = config.uplink.clone();
    if let Some(iface) = &args.uplink {
        uplink.get_or_insert_with(Default::default).iface = iface.clone();
    }
    match run(
        config, &socket, &state_dir, upstreams, io_uring, uplink, policy, metrics, docker,
    ) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("vswitchd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Binds the control socket, refusing when a live daemon answers on it.
/// The socket gets group `policy.change_gid` and mode 0660, so only root and that group can
/// connect at all. A Unix socket has one group: with a read group too, the mode is 0666 and the
/// peer's credentials (SO_PEERCRED) are the only gate (others are answered permission_denied).
fn bind_socket(path: &Path, policy: &control::auth::Policy) -> Result<UnixListener, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create socket directory {}: {e}", dir.display()))?;
    }
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(format!(
                "another vswitchd is already listening on {}; stop it or use --socket",
                path.display()
            ));
        }
        std::fs::remove_file(path)
            .map_err(|e| format!("cannot remove stale socket {}: {e}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| format!("cannot bind control socket {}: {e}", path.display()))?;
    if let Some(gid) = policy.change_gid {
        std::os::unix::fs::chown(path, None, Some(gid))
            .map_err(|e| format!("cannot give {} group {gid}: {e}", path.display()))?;
    }
    let mode = if policy.read_gid.is_some() {
        0o666
    } else {
        0o660
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set mode of {}: {e}", path.display()))?;
    Ok(listener)
}

#[allow(clippy::too_many_arguments)] // the daemon's settings, each from args or config
fn run(
    config: ConfigFile,
    socket: &Path,
    state_dir: &Path,
    upstreams: Arc<Upstreams>,
    io_uring: bool,
    uplink: Option<vswitch::api::UplinkSet>,
    policy: control::auth::Policy,
    metrics: Option<std::net::SocketAddr>,
    docker: Option<PathBuf>,
) -> Result<(), String> {
    // Signals first, so a SIGTERM during start-up is handled as a clean stop.
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let store = Store::open(state_dir).map_err(|e| e.to_string())?;
    let cluster_cfg = config.store.clone();
    let listener = bind_socket(socket, &policy)?;
    // Bounded: a flood of DHCP/DNS from containers is shed (counted as `overloaded`), not queued
    // without limit.
    let (events_tx, events_rx) = crossbeam_channel::bounded(4096);
    let manager = match Manager::start(
        store,
        config.networks,
        socket.to_path_buf(),
        events_tx,
        Some(upstreams.clone()),
        io_uring,
        config.vtep,
    ) {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(socket);
            return Err(e);
        }
    };
    for (port, why) in manager.detached_ports() {
        warn!(%port, reason = %why, "port could not be restored");
    }
    let mut manager = manager;
    if let Some(req) = uplink {
        if let Err(e) = manager.declare_uplink(req) {
            // Not fatal: the interface may come later (`vswitchctl uplink set`).
            eprintln!("vswitchd: uplink: {e}");
            warn!(error = %e, "the configured uplink is not set");
        }
    }
    // Always running: the upstreams it asks can come and go with the resolv.conf.
    let forwarder = Forwarder::spawn(upstreams, manager.injector())
        .map_err(|e| format!("cannot start DNS forwarder: {e}"))?;
    let (cluster_tx, cluster_rx) = crossbeam_channel::unbounded();
    if let Some(sc) = &cluster_cfg {
        let c = control::cluster::Cluster::start(sc, cluster_tx)?;
        info!(store = %sc.url, node = %c.node, "cluster store configured");
        manager.attach_cluster(c);
    }
    let manager = Arc::new(Mutex::new(manager));
    if cluster_cfg.is_some() {
        // What the store's watch sees is applied in order, under the manager's lock.
        let manager = manager.clone();
        std::thread::Builder::new()
            .name("cluster".into())
            .spawn(move || {
                for ev in cluster_rx {
                    manager
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .on_cluster(ev);
                }
            })
            .map_err(|e| format!("cannot start the cluster thread: {e}"))?;
    }
    if let Some(addr) = metrics {
        if let Err(e) = control::metrics::serve(addr, manager.clone()) {
            let _ = std::fs::remove_file(socket);
            return Err(e);
        }
    }
    if let Some(path) = &docker {
        if let Err(e) = vswitch::frontends::docker::serve(path, manager.clone()) {
            let _ = std::fs::remove_file(socket);
            return Err(e);
        }
    }
    {
        let manager = manager.clone();
        std::thread::Builder::new()
            .name("control".into())
            .spawn(move || control::serve(listener, manager, policy))
            .map_err(|e| format!("cannot start control thread: {e}"))?;
    }
    {
        // Gateway events: DHCP leases are persisted by the control plane, DNS queries for
        // other names go to the forwarder.
        let manager = manager.clone();
        std::thread::Builder::new()
            .name("events".into())
            .spawn(move || {
                for ev in events_rx {
                    match ev {
                        Event::DnsForward(job) => forwarder.submit(job),
                        ev => manager
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .on_event(ev),
                    }
                }
            })
            .map_err(|e| format!("cannot start event thread: {e}"))?;
    }
    {
        // Ports whose namespace handle disappears are taken down (see Manager::watched).
        let manager = manager.clone();
        std::thread::Builder::new()
            .name("netns-watch".into())
            .spawn(move || loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
                let watched = {
                    let mut m = manager.lock().unwrap_or_else(|p| p.into_inner());
                    m.check_parents();
                    m.refresh_ipvlan_routes();
                    m.watched()
                };
                let gone: Vec<_> = watched
                    .into_iter()
                    .filter_map(|w| w.orphaned().map(|why| (w, why)))
                    .collect();
                if !gone.is_empty() {
                    manager
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .namespaces_gone(gone);
                }
            })
            .map_err(|e| format!("cannot start namespace watcher: {e}"))?;
    }
    info!(socket = %socket.display(), state_dir = %state_dir.display(), "vswitchd ready");
    // The listener is bound and served: a client connecting now is answered.
    let status = format!(
        "READY=1\nMAINPID={}\nSTATUS=serving on {}",
        std::process::id(),
        socket.display()
    );
    if let Err(e) = control::notify::notify(&status) {
        warn!(error = %e, "cannot tell systemd the daemon is ready ($NOTIFY_SOCKET)");
    }

    let sig = signals.forever().next();
    info!(signal = ?sig, "stopping");
    let _ = control::notify::notify("STOPPING=1\nSTATUS=stopping");
    let mut m = manager.lock().unwrap_or_else(|p| p.into_inner());
    m.shutdown();
    let _ = std::fs::remove_file(socket);
    if let Some(path) = &docker {
        vswitch::frontends::docker::unlink(path);
    }
    info!("stopped");
    Ok(())
}
