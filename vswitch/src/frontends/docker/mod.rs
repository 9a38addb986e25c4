//! The Docker front end: libnetwork's remote network driver and remote IPAM driver, served
//! by vswitchd over HTTP on a Unix socket (`[docker] enabled`, `--docker-plugin`), so that
//! `docker network create -d vswitch --ipam-driver vswitch …` makes vswitchd networks and
//! `docker run --network …` puts containers on them.
//!
//! Every request becomes control requests (`Manager::handle`), so it is validated, persisted
//! and announced as `vswitchctl` requests are. dockerd replays nothing after a restart of
//! either daemon: what it made is found again by owner labels — `docker:NETWORKID` on
//! networks, `docker:ENDPOINTID` on ports — and IPAM pools by IDs that name their subnets.
//!
//! Join makes the endpoint's TAP in vswitchd's namespace (`PortAdd::handoff`); dockerd moves
//! it into the container's sandbox, names it `ethN` and gives it the endpoint's MAC and
//! address. vswitchd must therefore run in dockerd's network (and mount) namespace.

mod driver;
mod ipam;
mod types;

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ipnet::Ipv4Net;
use serde_json::{json, Value};
use tracing::{debug, info, warn};

use crate::api::{NetworkInfo, Op, PortInfo, Reply};
use crate::control::Manager;
use crate::wire::MacAddr;

/// Where dockerd looks for plugin sockets (whatever its `--exec-root`).
pub const DEFAULT_SOCKET: &str = "/run/docker/plugins/vswitch.sock";
/// Largest request body read.
const MAX_BODY: u64 = 1 << 20;
const CONTENT_TYPE: &str = "application/vnd.docker.plugins.v1+json";

/// An endpoint dockerd created, until it is deleted.
#[derive(Debug, Clone)]
struct Endpoint {
    network: String,
    ip: Ipv4Net,
    mac: MacAddr,
}

#[derive(Debug, Default)]
struct State {
    reservations: ipam::Reservations,
    /// Pools handed out by RequestPool whose network is not made yet: subnet → sub-pool.
    pools: HashMap<Ipv4Net, Option<Ipv4Net>>,
    endpoints: HashMap<String, Endpoint>,
}

pub struct Plugin {
    manager: Arc<Mutex<Manager>>,
    state: Mutex<State>,
}

/// A handler's answer: the JSON body, or the message of an `{"Err": …}`.
type Answer = Result<Value, String>;

/// Serves the plugin on `socket` (made with mode 0660; a stale file is replaced, a socket
/// someone answers on is an error) on a thread of its own.
pub fn serve(socket: &Path, manager: Arc<Mutex<Manager>>) -> Result<(), String> {
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot make {} for the Docker plugin: {e}", dir.display()))?;
    }
    if socket.exists() {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(format!(
                "{} is served by another process: is another vswitchd running its Docker plugin?",
                socket.display()
            ));
        }
        let _ = std::fs::remove_file(socket);
    }
    let server = tiny_http::Server::http_unix(socket).map_err(|e| {
        format!(
            "cannot serve the Docker plugin on {}: {e}",
            socket.display()
        )
    })?;
    let _ = std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660));
    info!(socket = %socket.display(), "Docker network and IPAM plugin served");
    let plugin = Plugin {
        manager,
        state: Mutex::new(State::default()),
    };
    std::thread::Builder::new()
        .name("docker-plugin".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                plugin.answer(req);
            }
        })
        .map_err(|e| format!("cannot start the Docker plugin thread: {e}"))?;
    Ok(())
}

/// Removes the plugin's socket (on a clean stop).
pub fn unlink(socket: &Path) {
    let _ = std::fs::remove_file(socket);
}

/// What the driver answers to GetCapabilities. With a cluster store its networks reach across
/// hosts: `ConnectivityScope` global. The data scope stays local: dockerd keeps a
/// global-scope driver's networks in its swarm store and refuses them outside swarm mode
/// ("This node is not a swarm manager", seen with dockerd 20.10), while the switch's own store
/// already makes them agree across hosts.
pub fn capabilities(clustered: bool) -> Value {
    json!({
        "Scope": "local",
        "ConnectivityScope": if clustered { "global" } else { "local" },
    })
}

impl Plugin {
    fn answer(&self, mut req: tiny_http::Request) {
        let path = req.url().split('?').next().unwrap_or("").to_string();
        let mut body = Vec::new();
        let read = req
            .as_reader()
            .take(MAX_BODY + 1)
            .read_to_end(&mut body)
            .map_err(|e| format!("cannot read the request: {e}"));
        let (status, value) = match read {
            Err(e) => (400, json!({ "Err": e })),
            Ok(_) if body.len() as u64 > MAX_BODY => (
                413,
                json!({ "Err": format!("request larger than {MAX_BODY} bytes") }),
            ),
            Ok(_) if *req.method() != tiny_http::Method::Post => {
                (405, json!({ "Err": "plugin calls are POSTs" }))
            }
            Ok(_) => match self.dispatch(&path, &body) {
                Some(Ok(v)) => (200, v),
                Some(Err(e)) => {
                    warn!(call = %path, error = %e, "Docker plugin call refused");
                    // The driver protocol reads `Err`, the IPAM protocol `Error`.
                    (200, json!({ "Err": e, "Error": e }))
                }
                None => (
                    404,
                    json!({ "Err": format!("{path} is not a call of this plugin") }),
                ),
            },
        };
        debug!(call = %path, body = %String::from_utf8_lossy(&body), status, "Docker plugin call");
        let header =
            tiny_http::Header::from_bytes("Content-Type", CONTENT_TYPE).expect("a valid header");
        let resp = tiny_http::Response::from_string(value.to_string())
            .with_status_code(status)
            .with_header(header);
        if let Err(e) = req.respond(resp) {
            debug!(error = %e, "cannot answer dockerd");
        }
    }

    fn dispatch(&self, path: &str, body: &[u8]) -> Option<Answer> {
        let call = path.trim_start_matches('/');
        if call.starts_with("NetworkDriver.")
            || call.starts_with("IpamDriver.")
            || call == "Plugin.Activate"
        {
            info!(call, "Docker plugin call");
        }
        Some(match call {
            "Plugin.Activate" => Ok(json!({ "Implements": ["NetworkDriver", "IpamDriver"] })),
            "NetworkDriver.GetCapabilities" => {
                let clustered = matches!(
                    self.call(Op::ClusterShow),
                    Ok(Reply::Cluster(c)) if c.configured
                );
                let caps = capabilities(clustered);
                info!(scope = %caps["Scope"], connectivity_scope = %caps["ConnectivityScope"], "Docker plugin capabilities");
                Ok(caps)
            }
            "NetworkDriver.CreateNetwork" => decode(body).and_then(|r| self.create_network(r)),
            "NetworkDriver.DeleteNetwork" => decode(body).and_then(|r| self.delete_network(r)),
            "NetworkDriver.CreateEndpoint" => decode(body).and_then(|r| self.create_endpoint(r)),
            "NetworkDriver.DeleteEndpoint" => decode(body).and_then(|r| self.delete_endpoint(r)),
            "NetworkDriver.EndpointOperInfo" => decode(body).and_then(|r| self.oper_info(r)),
            "NetworkDriver.Join" => decode(body).and_then(|r| self.join(r)),
            "NetworkDriver.Leave" => decode(body).and_then(|r| self.leave(r)),
            "NetworkDriver.ProgramExternalConnectivity" => {
                decode(body).and_then(|r| self.program_external(r))
            }
            "NetworkDriver.RevokeExternalConnectivity" => {
                decode(body).and_then(|r| self.revoke_external(r))
            }
            // Node discovery and swarm allocation: nothing to do on one host.
            "NetworkDriver.DiscoverNew"
            | "NetworkDriver.DiscoverDelete"
            | "NetworkDriver.AllocateNetwork"
            | "NetworkDriver.FreeNetwork" => Ok(json!({})),
            "IpamDriver.GetCapabilities" => Ok(json!({
                "RequiresMACAddress": false,
                "RequiresRequestReplay": false,
            })),
            "IpamDriver.GetDefaultAddressSpaces" => Ok(json!({
                "LocalDefaultAddressSpace": "vswitch",
                "GlobalDefaultAddressSpace": "vswitch-global",
            })),
            "IpamDriver.RequestPool" => decode(body).and_then(|r| self.request_pool(r)),
            "IpamDriver.ReleasePool" => decode(body).and_then(|r| self.release_pool(r)),
            "IpamDriver.RequestAddress" => decode(body).and_then(|r| self.request_address(r)),
            "IpamDriver.ReleaseAddress" => decode(body).and_then(|r| self.release_address(r)),
            _ => return None,
        })
    }

    /// One control request, as `vswitchctl` would send it.
    fn call(&self, op: Op) -> Result<Reply, String> {
        self.manager
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .handle(op)
            .map_err(|e| e.message)
    }

    fn networks(&self) -> Result<Vec<NetworkInfo>, String> {
        match self.call(Op::NetworkList)? {
            Reply::Networks(n) => Ok(n),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    fn ports(&self) -> Result<Vec<PortInfo>, String> {
        match self.call(Op::Show)? {
            Reply::Show(s) => Ok(s.ports),
            other => Err(format!("unexpected reply {other:?}")),
        }
    }

    /// The vswitchd network dockerd knows as `network_id`.
    fn network_of(&self, network_id: &str) -> Result<NetworkInfo, String> {
        let owner = format!("docker:{network_id}");
        self.networks()?
            .into_iter()
            .find(|n| n.owner.as_deref() == Some(owner.as_str()))
            .ok_or_else(|| format!("vswitchd has no network for Docker network {network_id}"))
    }

    fn port_of(&self, endpoint_id: &str) -> Result<Option<PortInfo>, String> {
        let owner = format!("docker:{endpoint_id}");
        Ok(self
            .ports()?
            .into_iter()
            .find(|p| p.owner.as_deref() == Some(owner.as_str())))
    }

    /// Addresses of `subnet` that are taken: its networks' gateways and ports, and what
    /// dockerd holds.
    fn used(&self, st: &State, subnet: Ipv4Net) -> Result<BTreeSet<Ipv4Addr>, String> {
        let mut used: BTreeSet<Ipv4Addr> = st.reservations.held(subnet).collect();
        let nets: Vec<String> = self
            .networks()?
            .into_iter()
            .filter(|n| n.subnet == subnet.to_string())
            .map(|n| {
                if let Ok(gw) = n.gateway.parse() {
                    used.insert(gw);
                }
                n.name
            })
            .collect();
        for p in self.ports()? {
            if nets.contains(&p.network) {
                if let Some(ip) = p.ip.as_deref().and_then(|i| i.parse::<Ipv4Net>().ok()) {
                    used.insert(ip.addr());
                }
            }
        }
        Ok(used)
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    serde_json::from_slice(body).map_err(|e| format!("cannot decode the request: {e}"))
}

/// The first 12 characters of a Docker ID (as `docker ps` shows it).
fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

#[cfg(test)]
mod capability_tests {
    use super::capabilities;

    #[test]
    fn a_cluster_store_makes_the_connectivity_global_and_the_data_local() {
        assert_eq!(capabilities(false)["ConnectivityScope"], "local");
        assert_eq!(capabilities(true)["ConnectivityScope"], "global");
        assert_eq!(capabilities(true)["Scope"], "local");
    }
}
