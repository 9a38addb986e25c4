//! The configuration model, the daemon's config file, and its persistence in the state dir.
//!
//! Every change is written atomically: a temp file is written and fsync'd, renamed over
//! `state.json`, and the directory is fsync'd. A lock file keeps a second daemon out.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use serde::{Deserialize, Serialize};

use crate::wire::MacAddr;

pub mod publish;
pub use publish::Publish;

pub const STATE_FORMAT: u32 = 1;
pub const DEFAULT_MAC_AGING_SECS: u32 = 300;
pub const DEFAULT_FDB_LIMIT: u32 = 8192;
/// MACs one port may have in its network's table.
pub const DEFAULT_PORT_MAC_LIMIT: u32 = 64;
/// Frames a second (and in a burst) one port may send to its gateway's services.
pub const DEFAULT_GATEWAY_RATE: u32 = 1000;
pub const DEFAULT_MTU: u32 = 1500;

fn default_driver() -> String {
    "bridge".into()
}
fn default_aging() -> u32 {
    DEFAULT_MAC_AGING_SECS
}
fn default_fdb_limit() -> u32 {
    DEFAULT_FDB_LIMIT
}
fn default_port_mac_limit() -> u32 {
    DEFAULT_PORT_MAC_LIMIT
}
fn default_gateway_rate() -> u32 {
    DEFAULT_GATEWAY_RATE
}
fn yes() -> bool {
    true
}
fn default_lease() -> u32 {
    DEFAULT_LEASE_SECS
}

pub const DEFAULT_LEASE_SECS: u32 = 3600;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    pub name: String,
    #[serde(default = "default_driver")]
    pub driver: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    #[serde(default = "default_aging")]
    pub mac_aging_secs: u32,
    #[serde(default = "default_fdb_limit")]
    pub fdb_limit: u32,
    /// Addresses handed out (IPAM and DHCP) come from here; defaults to the whole subnet.
    #[serde(default)]
    pub ip_range: Option<Ipv4Net>,
    /// DHCP server on the gateway.
    #[serde(default = "yes")]
    pub dhcp: bool,
    /// The embedded DNS serves container names (Docker's default `bridge` does not).
    #[serde(default = "yes")]
    pub dns: bool,
    /// The switch answers ARP for known container addresses.
    #[serde(default = "yes")]
    pub arp_suppress: bool,
    /// DNS search domain handed out by DHCP [default: NAME.vswitch].
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default = "default_lease")]
    pub lease_secs: u32,
    /// Docker's `--internal`: no way out through the uplink.
    #[serde(default)]
    pub internal: bool,
    /// Overlay networks (`driver = "overlay"`): the VXLAN network identifier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    /// Overlay networks: the remote VTEPs frames are replicated to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<Ipv4Addr>,
    /// The ports' default MTU [default: 1500, overlays the underlay's minus 50].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Overlay networks: a datagram from a VTEP that is not a peer makes it one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub learn_peers: bool,
    /// Overlay networks: VXLAN between VTEPs only inside WireGuard sessions (`--encrypted`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// Encrypted overlays: each peer's WireGuard public key (base64), by its tunnel address.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_keys: BTreeMap<Ipv4Addr, String>,
    /// Encrypted overlays: where a peer's WireGuard messages go when that is not its tunnel
    /// address on the WireGuard port (a kernel peer with an interface of its own).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub peer_endpoints: BTreeMap<Ipv4Addr, std::net::SocketAddrV4>,
    /// Overlay networks: static FDB entries (`fdb add`), MACs behind remote VTEPs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fdb: Vec<StaticFdb>,
    /// Overlay networks in the cluster store: the peers that are there because a node has
    /// endpoints on the network (kept in step with the store, kept here for a restart
    /// without it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cluster_peers: Vec<Ipv4Addr>,
    /// Port security on the network's ports (each may send only as itself).
    #[serde(default = "yes")]
    pub port_security: bool,
    /// Containers may reach each other (false: `--no-icc`).
    #[serde(default = "yes")]
    pub icc: bool,
    /// Host access: an interface of vswitchd's namespace (`vsw-NAME`) joins the network
    /// with an address of its own, as docker0 does for Docker's bridge.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_access: bool,
    /// MACs one port may have in the table (0: no limit); a new one past it is dropped.
    #[serde(default = "default_port_mac_limit")]
    pub port_mac_limit: u32,
    /// Frames a second one port may send to the gateway's services (ARP, ICMP, DHCP, DNS),
    /// as many in a burst (0: no limit); the excess is dropped as `rate_limited`.
    #[serde(default = "default_gateway_rate")]
    pub gateway_rate: u32,
    /// Who made the network, for a runtime to find it again (`docker:NETWORKID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Addresses IPAM and DHCP never hand out and ports may not take (`--aux-address`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aux_addresses: Vec<Ipv4Addr>,
    /// macvlan and ipvlan networks: the parent, `IFACE` or `IFACE.VLAN`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// macvlan networks: "bridge" or "private" (`icc` false); ipvlan: "l2" or "l3".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

/// A static FDB entry of an overlay network: `mac` is behind the remote VTEP `vtep`, and with
/// `ip` the gateway answers ARP for that address on its behalf.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StaticFdb {
    pub mac: crate::wire::MacAddr,
    pub vtep: Ipv4Addr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
    /// The names the embedded DNS answers with `ip` (a container on another host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    /// Installed from the cluster store (an endpoint of another node), not by `fdb add`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cluster: bool,
}

impl NetworkConfig {
    pub fn domain(&self) -> String {
        self.domain
            .clone()
            .unwrap_or_else(|| format!("{}.vswitch", self.name.to_ascii_lowercase()))
    }

    /// The range addresses are allocated from.
    pub fn pool(&self) -> Ipv4Net {
        self.ip_range.unwrap_or(self.subnet)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortConfig {
    pub name: String,
    pub network: String,
    /// As the user gave it: a name, a path or a pid.
    pub netns: String,
    pub ifname: String,
    pub mac: MacAddr,
    /// Address with prefix length, when the port has one.
    pub ip: Option<Ipv4Net>,
    pub mtu: u32,
    /// The container configures its address itself with DHCP (it is offered `ip`).
    #[serde(default)]
    pub dhcp: bool,
    /// Extra DNS names.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// TAP offloads (virtio-net header, checksum, TSO/USO).
    #[serde(default = "yes")]
    pub offload: bool,
    /// TAP, or a veth whose host end is served by an AF_XDP socket.
    #[serde(default)]
    pub kind: PortKind,
    /// AF_XDP ports: rings, frame size and attach mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<crate::ports::XdpConfig>,
    /// AF_XDP ports: the name of the veth's host end (in vswitchd's namespace).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    /// The container this port is one of the interfaces of (`container create`, `network
    /// connect`); `None` for ports added with `add-port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Host ports on the uplink that lead to this port (`--publish`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<Publish>,
    /// Port security: the port may send only with its MAC and address (when it has one and
    /// its network has port security on).
    #[serde(default = "yes")]
    pub port_security: bool,
    /// The network's host-access interface: a TAP in vswitchd's own namespace (`netns` is
    /// `/proc/self/ns/net`), made and removed with the network's host access.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host: bool,
    /// The TAP is made in vswitchd's own namespace under `ifname`, unconfigured, for a runtime
    /// to move into the namespace `netns` (Docker's Join); found there again by its MAC.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handoff: bool,
    /// Who made the port (a runtime's label, `PortAdd::owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// A container's network mode, as Docker names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContainerMode {
    /// Its own namespace with one interface per network (the default `bridge`, or user-defined
    /// networks by name).
    Networks,
    /// No namespace of its own: vswitchd's (the host's).
    Host,
    /// Its own namespace with only `lo`.
    None,
    /// The namespace of another container.
    Container(String),
}

/// A legacy link: another container's address under its name (and an alias) in this one's
/// `/etc/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerLink {
    pub container: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
}

/// A container: a network namespace the switch manages, in one of Docker's network modes. Its
/// interfaces are the ports whose `container` names it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerConfig {
    pub name: String,
    pub mode: ContainerMode,
    /// The `ip netns` name of the namespace the switch created for it (networks and none
    /// modes); removed with the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<String>,
    pub hostname: String,
    /// DNS names on user-defined networks (besides the container's name).
    #[serde(default)]
    pub aliases: Vec<String>,
    #[serde(default)]
    pub links: Vec<ContainerLink>,
    /// Nameservers for its resolv.conf instead of its networks' gateways.
    #[serde(default)]
    pub dns: Vec<Ipv4Addr>,
    /// The kind of port its interfaces get.
    #[serde(default)]
    pub kind: PortKind,
}

/// How a port's frames reach the switch.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PortKind {
    /// A TAP device inside the container namespace (one fd per port).
    #[default]
    Tap,
    /// A veth pair: one end in the container, the other bound to an AF_XDP socket.
    Afxdp,
}

impl PortKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PortKind::Tap => "tap",
            PortKind::Afxdp => "afxdp",
        }
    }
}

impl std::str::FromStr for PortKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tap" => Ok(PortKind::Tap),
            "afxdp" | "af_xdp" | "xdp" => Ok(PortKind::Afxdp),
            _ => Err(format!("unknown port type {s:?}: use tap or afxdp")),
        }
    }
}

/// A DHCP lease as persisted: wall-clock expiry, so it survives restarts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredLease {
    pub network: String,
    pub mac: MacAddr,
    pub ip: Ipv4Addr,
    #[serde(default)]
    pub hostname: Option<String>,
    /// Unix time (seconds) the lease ends.
    pub expires: u64,
}

/// Everything that must survive a restart.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub format: u32,
    pub networks: Vec<NetworkConfig>,
    pub ports: Vec<PortConfig>,
    /// The interface routed traffic leaves through, if one is set.
    #[serde(default)]
    pub uplink: Option<UplinkState>,
    #[serde(default)]
    pub containers: Vec<ContainerConfig>,
    /// The VXLAN tunnel endpoint overlay networks use.
    #[serde(default)]
    pub vtep: Option<VtepState>,
}

/// The VTEP as `vtep set` configured it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VtepState {
    pub local_ip: Ipv4Addr,
    #[serde(default = "default_vxlan_port")]
    pub port: u16,
    /// TTL of the outer IP header.
    #[serde(default = "default_vxlan_ttl")]
    pub ttl: u8,
    /// Encrypted overlays: the UDP port of the WireGuard messages.
    #[serde(default = "default_wg_port")]
    pub wg_port: u16,
    /// Encrypted overlays: the address VXLAN packets come from inside the sessions
    /// [default: `local_ip`]; a kernel peer's WireGuard interface routes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_ip: Option<Ipv4Net>,
}

fn default_wg_port() -> u16 {
    crate::ports::wg::DEFAULT_PORT
}

fn default_vxlan_port() -> u16 {
    crate::switch::overlay::DEFAULT_PORT
}
fn default_vxlan_ttl() -> u8 {
    64
}

/// One initiator's share of the conntrack table by default: a quarter of the default table.
pub const DEFAULT_CONNTRACK_PER_SOURCE: usize = 65_536;

fn default_per_source() -> usize {
    DEFAULT_CONNTRACK_PER_SOURCE
}

/// The uplink as `uplink set` configured it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UplinkState {
    pub iface: String,
    pub mode: crate::switch::nat::UplinkMode,
    /// The uplink's own address and prefix (dedicated mode); the host's address the switch
    /// masquerades behind (shared mode).
    pub ip: Ipv4Net,
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    pub nat_ports: (u16, u16),
    pub conntrack_max: usize,
    /// Most flows one initiator may have (0: no bound).
    #[serde(default = "default_per_source")]
    pub conntrack_per_source: usize,
    /// Shared mode: `ip` was not given but read off the interface (and is read again at
    /// every attach, so a new address after a restart is followed).
    #[serde(default)]
    pub auto_ip: bool,
    /// `gateway` came from the host's default route (read again at every attach).
    #[serde(default)]
    pub auto_gateway: bool,
    /// The XDP attach mode asked for; `None`: shared uplinks generic (skb), dedicated ones
    /// native first.
    #[serde(default)]
    pub xdp_mode: Option<crate::ports::XdpMode>,
    /// A packet socket instead of AF_XDP (`--type packet`, dedicated mode only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub packet_socket: bool,
}

/// One change to the state, as appended to the journal between snapshots. Applying a change twice
/// is harmless (a crash between a snapshot and the journal's truncation replays a few again).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    NetworkAdd(NetworkConfig),
    /// Removes the network and its ports.
    NetworkRemove(String),
    PortAdd(PortConfig),
    PortRemove(String),
    UplinkSet(UplinkState),
    UplinkRemove,
    /// A container with its interfaces, in one step.
    ContainerAdd {
        container: ContainerConfig,
        ports: Vec<PortConfig>,
    },
    /// Removes the container and its ports.
    ContainerRemove(String),
    VtepSet(VtepState),
}

impl State {
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::NetworkAdd(n) => {
                self.networks.retain(|x| x.name != n.name);
                self.networks.push(n.clone());
            }
            Change::NetworkRemove(name) => {
                self.ports.retain(|p| &p.network != name);
                self.networks.retain(|n| &n.name != name);
            }
            Change::PortAdd(p) => {
                self.ports.retain(|x| x.name != p.name);
                self.ports.push(p.clone());
            }
            Change::PortRemove(name) => self.ports.retain(|p| &p.name != name),
            Change::UplinkSet(u) => self.uplink = Some(u.clone()),
            Change::UplinkRemove => self.uplink = None,
            Change::ContainerAdd { container, ports } => {
                self.containers.retain(|c| c.name != container.name);
                self.containers.push(container.clone());
                for p in ports {
                    self.ports.retain(|x| x.name != p.name);
                    self.ports.push(p.clone());
                }
            }
            Change::VtepSet(v) => self.vtep = Some(v.clone()),
            Change::ContainerRemove(name) => {
                self.ports
                    .retain(|p| p.container.as_deref() != Some(name.as_str()));
                self.containers.retain(|c| &c.name != name);
            }
        }
    }
}

/// Journal entries after which the next change writes a fresh snapshot instead.
const COMPACT_AFTER: usize = 256;

impl Default for State {
    fn default() -> State {
        State {
            format: STATE_FORMAT,
            networks: Vec::new(),
            ports: Vec::new(),
            uplink: None,
            containers: Vec::new(),
            vtep: None,
        }
    }
}

/// The `[daemon]` table of the config file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    pub socket: Option<PathBuf>,
    pub state_dir: Option<PathBuf>,
    pub log_level: Option<String>,
    /// Resolvers the embedded DNS forwards other names to ("IP:PORT" or "IP"). None: those of
    /// `resolv_conf`, followed as it changes.
    #[serde(default)]
    pub dns_upstreams: Vec<String>,
    /// The resolver configuration whose `nameserver`s are the upstreams when `dns_upstreams`
    /// is empty [default: /etc/resolv.conf].
    #[serde(default)]
    pub resolv_conf: Option<PathBuf>,
    /// Batch TAP reads and writes through io_uring where the kernel allows it [default: true].
    #[serde(default)]
    pub io_uring: Option<bool>,
    /// Frames in each chunk of the AF_XDP frame pool (one shared UMEM each) [default: 4096].
    #[serde(default)]
    pub afxdp_frames: Option<u32>,
    /// Frames of all chunks together at most; an AF_XDP port that would need more is refused
    /// [default: 262144].
    #[serde(default)]
    pub afxdp_max_frames: Option<u32>,
    /// Members of this group (besides root) may change things over the control socket; the
    /// socket is created with this group and mode 0660.
    #[serde(default)]
    pub group: Option<String>,
    /// Members of this group may use the read-only commands (show, ls, inspect, stats).
    #[serde(default)]
    pub read_group: Option<String>,
    /// Serve Prometheus metrics on this address ("127.0.0.1:9500"): off unless given.
    #[serde(default)]
    pub metrics: Option<String>,
}

/// The config file (`configs/default.toml`): daemon settings and networks that always exist.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub daemon: DaemonConfig,
    #[serde(default, rename = "network")]
    pub networks: Vec<NetworkConfig>,
    /// The uplink to set at start when none is saved (`vswitchctl uplink set`'s options).
    #[serde(default)]
    pub uplink: Option<crate::api::UplinkSet>,
    /// The VTEP to set at start when none is saved.
    #[serde(default)]
    pub vtep: Option<VtepState>,
    /// Docker's remote network and IPAM driver.
    #[serde(default)]
    pub docker: DockerConfig,
    /// The cluster store (`--store`): none, a single host.
    #[serde(default)]
    pub store: Option<crate::control::cluster::StoreConfig>,
}

/// `[docker]`: the Docker plugin (`--docker-plugin`, `--docker-socket`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    #[serde(default)]
    pub enabled: bool,
    /// [default: /run/docker/plugins/vswitch.sock]
    #[serde(default)]
    pub socket: Option<PathBuf>,
}

impl ConfigFile {
    pub fn load(path: &Path) -> Result<ConfigFile, String> {
        let text = fs::read_to_string(path)
            .map_err(|e| format!("cannot read config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("config {} is invalid: {e}", path.display()))
    }
}

/// Why the state dir could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot use state dir {dir}: {source}")]
    Io { dir: String, source: io::Error },
    #[error("state dir {0} is in use by another vswitchd (its lock file is held); stop that one or use --state-dir")]
    Locked(String),
    #[error("state file {path} is corrupt ({reason}); move it away to start empty")]
    Corrupt { path: String, reason: String },
}

/// The state dir, locked for this process.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: File,
    /// `state.journal`, open for appending once the first change is recorded.
    journal: Option<File>,
    journal_len: usize,
}

impl Store {
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let io_err = |source| StoreError::Io {
            dir: dir.display().to_string(),
            source,
        };
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(dir.join("lock"))
            .map_err(io_err)?;
        // An exclusive flock held for the life of the process (released when it exits, even by
        // kill -9).
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StoreError::Locked(dir.display().to_string()))
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        Ok(Store {
            dir: dir.to_path_buf(),
            _lock: lock,
            journal: None,
            journal_len: 0,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The saved leases (empty on first start; a corrupt file is reported).
    pub fn load_leases(&self) -> Result<Vec<StoredLease>, StoreError> {
        let path = self.dir.join("leases.json");
        match fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| StoreError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(StoreError::Io {
                dir: self.dir.display().to_string(),
                source,
            }),
        }
    }

    pub fn save_leases(&self, leases: &[StoredLease]) -> io::Result<()> {
        let data = serde_json::to_vec_pretty(leases).map_err(io::Error::other)?;
        self.write_atomic("leases.json", &data)
    }

    /// The saved state (snapshot plus journal), or `None` on first start.
    pub fn load(&mut self) -> Result<Option<State>, StoreError> {
        let snapshot = self.load_snapshot()?;
        let path = self.dir.join("state.journal");
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(snapshot),
            Err(source) => {
                return Err(StoreError::Io {
                    dir: self.dir.display().to_string(),
                    source,
                })
            }
        };
        let mut state = snapshot.unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Change>(line) {
                Ok(c) => state.apply(&c),
                // A crash in the middle of an append leaves a torn last line: that change
                // was never acknowledged, so it is dropped.
                Err(_) if i + 1 == lines.len() && !text.ends_with('\n') => {}
                Err(e) => {
                    return Err(StoreError::Corrupt {
                        path: path.display().to_string(),
                        reason: format!("line {}: {e}", i + 1),
                    })
                }
            }
        }
        self.journal_len = lines.len();
        Ok(Some(state))
    }

    fn load_snapshot(&self) -> Result<Option<State>, StoreError> {
        let path = self.path();
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(StoreError::Io {
                    dir: self.dir.display().to_string(),
                    source,
                })
            }
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.display().to_string(),
                reason: e.to_string(),
            })
    }

    /// Writes `state` atomically: temp file, fsync, rename, fsync of the directory.
    /// Writes a full snapshot atomically and empties the journal.
    pub fn save(&mut self, state: &State) -> io::Result<()> {
        let data = serde_json::to_vec_pretty(state).map_err(io::Error::other)?;
        self.write_atomic("state.json", &data)?;
        let journal = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o600)
            .open(self.dir.join("state.journal"))?;
        journal.sync_all()?;
        self.journal = None;
        self.journal_len = 0;
        Ok(())
    }

    /// Records one change durably: a journal line and an fdatasync (constant cost however large
    /// the state is), or a fresh snapshot of `state_after` every `COMPACT_AFTER` changes.
    pub fn record(&mut self, state_after: &State, change: &Change) -> io::Result<()> {
        if self.journal_len >= COMPACT_AFTER {
            return self.save(state_after);
        }
        let mut line = serde_json::to_vec(change).map_err(io::Error::other)?;
        line.push(b'\n');
        if self.journal.is_none() {
            let created = !self.dir.join("state.journal").exists();
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(self.dir.join("state.journal"))?;
            if created {
                File::open(&self.dir)?.sync_all()?;
            }
            self.journal = Some(f);
        }
        let f = self.journal.as_mut().expect("journal open");
        f.write_all(&line)?;
        f.sync_data()?;
        self.journal_len += 1;
        Ok(())
    }

    fn write_atomic(&self, name: &str, data: &[u8]) -> io::Result<()> {
        let tmp = self.dir.join(format!("{name}.tmp"));
        {
            let mut f = OpenOptions::new()
                .create(true)
                .truncate(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(data)?;
            f.write_all(b"\n")?;
            f.sync_all()?;
        }
        fs::rename(&tmp, self.dir.join(name))?;
        File::open(&self.dir)?.sync_all()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("vswitch-state-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn web_network() -> NetworkConfig {
        NetworkConfig {
            name: "web".into(),
            driver: "bridge".into(),
            subnet: "10.1.0.0/24".parse().unwrap(),
            gateway: "10.1.0.1".parse().unwrap(),
            mac_aging_secs: 300,
            fdb_limit: 8192,
            ip_range: None,
            dhcp: true,
            dns: true,
            arp_suppress: true,
            domain: None,
            lease_secs: 3600,
            internal: false,
            vni: None,
            peers: vec![],
            mtu: None,
            learn_peers: false,
            encrypted: false,
            peer_keys: BTreeMap::new(),
            peer_endpoints: BTreeMap::new(),
            fdb: vec![],
            cluster_peers: vec![],
            port_security: true,
            icc: true,
            host_access: false,
            port_mac_limit: 64,
            gateway_rate: DEFAULT_GATEWAY_RATE,
            owner: None,
            aux_addresses: vec![],
            parent: None,
            mode: None,
        }
    }

    fn port(name: &str) -> PortConfig {
        PortConfig {
            name: name.into(),
            network: "web".into(),
            netns: name.into(),
            ifname: "eth0".into(),
            mac: "02:42:0a:01:00:02".parse().unwrap(),
            ip: None,
            mtu: 1500,
            dhcp: false,
            aliases: vec![],
            offload: true,
            kind: PortKind::Tap,
            xdp: None,
            host_ifname: None,
            container: None,
            publish: vec![],
            port_security: true,
            host: false,
            handoff: false,
            owner: None,
        }
    }

    #[test]
    fn save_load_roundtrip_and_lock() {
        let dir = tempdir("rt");
        let mut store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let mut s = State::default();
        s.networks.push(web_network());
        s.ports.push(PortConfig {
            ip: Some("10.1.0.2/24".parse().unwrap()),
            ..port("c1")
        });
        store.save(&s).unwrap();
        assert_eq!(store.load().unwrap(), Some(s));
        assert!(matches!(Store::open(&dir), Err(StoreError::Locked(_))));
        drop(store);
        fs::write(dir.join("state.json"), "{not json").unwrap();
        let mut store = Store::open(&dir).unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn journal_replays_and_survives_a_torn_line() {
        let dir = tempdir("journal");
        let mut store = Store::open(&dir).unwrap();
        let mut s = State::default();
        let net = web_network();
        store.save(&s).unwrap();
        for c in [
            Change::NetworkAdd(net.clone()),
            Change::PortAdd(port("a")),
            Change::PortAdd(port("b")),
            Change::PortRemove("a".into()),
        ] {
            s.apply(&c);
            store.record(&s, &c).unwrap();
        }
        drop(store);
        // A torn append (crash mid-write) at the end is ignored.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("state.journal"))
            .unwrap();
        f.write_all(b"{\"port_add\":{\"na").unwrap();
        drop(f);
        let mut store = Store::open(&dir).unwrap();
        let loaded = store.load().unwrap().unwrap();
        assert_eq!(loaded, s);
        assert_eq!(loaded.ports.len(), 1);
        // Compaction: many changes later, the journal is short again and nothing is lost.
        let mut s = loaded;
        for i in 0..(COMPACT_AFTER * 2) {
            let c = Change::PortAdd(port(&format!("p{i}")));
            s.apply(&c);
            store.record(&s, &c).unwrap();
        }
        drop(store);
        let journal = fs::read_to_string(dir.join("state.journal")).unwrap();
        assert!(journal.lines().count() < COMPACT_AFTER);
        let mut store = Store::open(&dir).unwrap();
        assert_eq!(store.load().unwrap().unwrap(), s);
        // A corrupt line in the middle is an error, not silently skipped.
        drop(store);
        fs::write(dir.join("state.journal"), "garbage\n{}\n").unwrap();
        let mut store = Store::open(&dir).unwrap();
        assert!(matches!(store.load(), Err(StoreError::Corrupt { .. })));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn default_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/default.toml");
        let cfg = ConfigFile::load(&path).unwrap();
        let bridge = &cfg.networks[0];
        assert_eq!(bridge.name, "bridge");
        assert_eq!(bridge.subnet, "172.17.0.0/16".parse::<Ipv4Net>().unwrap());
        assert_eq!(bridge.gateway, "172.17.0.1".parse::<Ipv4Addr>().unwrap());
        assert!(
            !bridge.dns,
            "Docker's default bridge does not resolve names"
        );
        assert!(cfg.daemon.dns_upstreams.is_empty() && cfg.daemon.resolv_conf.is_none());
    }

    #[test]
    fn vtep_and_overlay_networks_parse() {
        let cfg: ConfigFile = toml::from_str(
            "[vtep]\nlocal_ip = \"192.0.2.1\"\n\n[[network]]\nname = \"ov\"\ndriver = \"overlay\"\nsubnet = \"10.42.0.0/24\"\ngateway = \"10.42.0.1\"\nvni = 42\npeers = [\"192.0.2.2\"]\n",
        )
        .unwrap();
        let v = cfg.vtep.unwrap();
        assert_eq!(
            (v.local_ip.to_string().as_str(), v.port, v.ttl),
            ("192.0.2.1", 4789, 64)
        );
        assert_eq!(cfg.networks[0].vni, Some(42));
        assert_eq!(
            cfg.networks[0].peers,
            vec!["192.0.2.2".parse::<Ipv4Addr>().unwrap()]
        );
    }

    #[test]
    fn dns_settings_parse() {
        let cfg: ConfigFile = toml::from_str(
            "[daemon]\ndns_upstreams = [\"192.0.2.53\"]\nresolv_conf = \"/run/systemd/resolve/resolv.conf\"\n",
        )
        .unwrap();
        assert_eq!(cfg.daemon.dns_upstreams, vec!["192.0.2.53".to_string()]);
        assert_eq!(
            cfg.daemon.resolv_conf.as_deref(),
            Some(Path::new("/run/systemd/resolve/resolv.conf"))
        );
    }
}
