//! The control protocol: what vswitchctl, the benchmark and later the Docker and CNI front ends
//! speak to vswitchd. JSON, one request per line and one response per line, over a Unix socket.
//!
//! A request is `{"version": 1, "op": "network-create", ...fields}`; a response is either
//! `{"ok": REPLY}` or `{"error": {"code": "network_exists", "message": "..."}}`. User-typed
//! values (CIDRs, MACs) travel as strings so the daemon can say precisely what is wrong with them.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::switch::fdb::FdbCounters;

/// Bumped on incompatible changes; the daemon refuses other versions with `unsupported_version`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Largest request line the daemon reads.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Where vswitchd listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vswitch/vswitchd.sock";
/// Where vswitchd keeps its state unless told otherwise.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vswitch";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Request {
    pub version: u32,
    #[serde(flatten)]
    pub op: Op,
}

impl Request {
    pub fn new(op: Op) -> Request {
        Request {
            version: PROTOCOL_VERSION,
            op,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Op {
    NetworkCreate(NetworkCreate),
    NetworkList,
    NetworkInspect {
        name: String,
    },
    NetworkRemove {
        name: String,
        #[serde(default)]
        force: bool,
    },
    PortAdd(PortAdd),
    PortDelete {
        name: String,
    },
    Show,
    FdbShow {
        #[serde(default)]
        network: Option<String>,
    },
    /// A static FDB entry on an overlay network: MAC behind a remote VTEP (and its address
    /// for ARP suppression).
    FdbAdd {
        network: String,
        mac: String,
        vtep: String,
        #[serde(default)]
        ip: Option<String>,
    },
    FdbDel {
        network: String,
        mac: String,
    },
    PortStats {
        #[serde(default)]
        port: Option<String>,
    },
    /// The gateways' neighbour tables and counters.
    ArpShow {
        #[serde(default)]
        network: Option<String>,
    },
    DhcpLeases {
        #[serde(default)]
        network: Option<String>,
    },
    /// Sets the interface routed traffic leaves through (masqueraded).
    UplinkSet(UplinkSet),
    UplinkShow,
    UplinkRemove,
    /// Tracked flows through the uplink (at most `CONNTRACK_SHOW_MAX`).
    ConntrackShow {
        #[serde(default)]
        network: Option<String>,
    },
    ConntrackStats,
    ConntrackFlush {
        #[serde(default)]
        network: Option<String>,
    },
    /// The VXLAN tunnel endpoint of overlay networks.
    VtepSet(VtepSet),
    VtepShow,
    /// The cluster store and the nodes it lists.
    ClusterShow,
    /// Adds or removes a remote VTEP of an overlay network.
    NetworkPeer {
        network: String,
        ip: String,
        #[serde(default)]
        remove: bool,
        /// Encrypted overlays: the peer's WireGuard public key (base64).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        key: Option<String>,
        /// Encrypted overlays: where its WireGuard messages go [default: IP on the VTEP's
        /// WireGuard port].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        endpoint: Option<String>,
    },
    /// A container: a namespace the switch manages, in one of Docker's network modes.
    ContainerCreate(ContainerCreate),
    ContainerList,
    ContainerInspect {
        name: String,
    },
    ContainerRemove {
        name: String,
        /// Also remove the containers joined to this one's namespace (`container:NAME`).
        #[serde(default)]
        force: bool,
    },
    /// Publishes host ports of the uplink to a port (`SPEC` as in `PortAdd::publish`).
    PublishAdd {
        port: String,
        spec: String,
    },
    PublishRemove {
        port: String,
        spec: String,
    },
    PublishList,
    /// Runs a frame through the pipeline against the live tables, changing nothing, and says
    /// what each stage did. The frame is `flow` (`arp,arp_tpa=10.1.0.3`, …) or `hex`.
    Trace {
        port: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        flow: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        hex: Option<String>,
    },
    /// Streams copies of a port's frames: the answer is `capture_started`, then a
    /// `capture_frame` per frame, then `capture_end` (after `count` frames, or when the port
    /// goes); closing the connection stops it.
    Capture(CaptureReq),
    /// Streams the switch's events as they happen: `events_started`, then an `event` per
    /// change, until the client closes the connection.
    Events,
    /// Gives a container one more interface, on NETWORK.
    NetworkConnect(NetworkConnect),
    NetworkDisconnect {
        network: String,
        container: String,
    },
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerCreate {
    pub name: String,
    /// Modes, as `docker run --network`: network names (one interface each, eth0, eth1, … in
    /// order), or one of "host", "none", "container:OTHER". Empty: the default "bridge".
    #[serde(default)]
    pub networks: Vec<String>,
    /// Address on the first network.
    #[serde(default)]
    pub ip: Option<String>,
    /// MAC of the first interface.
    #[serde(default)]
    pub mac: Option<String>,
    /// DNS names on user-defined networks.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// [default: the container's name]
    #[serde(default)]
    pub hostname: Option<String>,
    /// Legacy links, "OTHER" or "OTHER:ALIAS".
    #[serde(default)]
    pub links: Vec<String>,
    /// Nameservers for the container's resolv.conf [default: its networks' gateways].
    #[serde(default)]
    pub dns: Vec<String>,
    /// "tap" (default) or "afxdp".
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// Host ports published to the first interface (as `PortAdd::publish`).
    #[serde(default)]
    pub publish: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NetworkConnect {
    pub network: String,
    pub container: String,
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerNetworkInfo {
    pub network: String,
    pub port: String,
    pub ifname: String,
    pub ip: Option<String>,
    pub mac: String,
    pub gateway: String,
    pub aliases: Vec<String>,
    /// The port's status ("up", "detached").
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ContainerInfo {
    pub name: String,
    /// Docker's NetworkMode: the first network's name, "host", "none" or "container:OTHER".
    pub mode: String,
    /// The `ip netns` name to enter (`ip netns exec`); none in host mode.
    pub netns: Option<String>,
    /// The namespace file.
    pub netns_path: String,
    pub hostname: String,
    pub networks: Vec<ContainerNetworkInfo>,
    /// The nameservers of its resolv.conf.
    pub dns_servers: Vec<String>,
    pub aliases: Vec<String>,
    /// "OTHER" or "OTHER:ALIAS".
    pub links: Vec<String>,
    /// Containers sharing this one's namespace (`container:NAME`).
    pub joined_by: Vec<String>,
    /// Published ports (none until publishing exists).
    pub ports: Vec<String>,
}

/// Most flows `conntrack-show` lists.
pub const CONNTRACK_SHOW_MAX: usize = 100_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct UplinkSet {
    pub iface: String,
    /// "shared" (the default) or "dedicated".
    #[serde(default)]
    pub mode: Option<String>,
    /// The uplink's own address, CIDR (dedicated mode).
    #[serde(default)]
    pub ip: Option<String>,
    /// The next hop for off-link destinations.
    #[serde(default)]
    pub gateway: Option<String>,
    /// "LO-HI", default 61000-65535.
    #[serde(default)]
    pub nat_ports: Option<String>,
    #[serde(default)]
    pub conntrack_max: Option<usize>,
    /// Most flows one initiator (a container, an outside client) may have [default: 65536;
    /// 0: no bound].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conntrack_per_source: Option<usize>,
    /// "auto", "native" or "skb" (default: skb for shared, auto for dedicated).
    #[serde(default)]
    pub xdp_mode: Option<String>,
    /// "afxdp" (the default; a dedicated uplink falls back to a packet socket where no XDP
    /// program attaches) or "packet" (a packet socket with virtio-net headers; dedicated only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UplinkInfo {
    pub iface: String,
    pub mode: String,
    pub ip: String,
    pub gateway: Option<String>,
    pub mac: String,
    pub mtu: u16,
    pub nat_ports: String,
    /// The XDP mode the uplink's program is attached in ("native" or "skb"), when attached;
    /// "none" on a packet socket.
    #[serde(default)]
    pub xdp_mode: String,
    /// What serves it: "af_xdp" or "af_packet".
    #[serde(default)]
    pub socket: String,
    /// "up", or why the uplink is not attached.
    pub status: String,
    pub counters: crate::switch::nat::NatCounters,
    pub conntrack: ConntrackStats,
    /// The next hops the uplink resolved: address, MAC, seconds since confirmed.
    pub neighbors: Vec<(String, String, u64)>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ConntrackStats {
    pub entries: usize,
    pub max: usize,
    /// One initiator's share (0: no bound).
    #[serde(default)]
    pub per_source_max: usize,
    pub counters: crate::switch::nat::conntrack::CtCounters,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConntrackRow {
    pub network: String,
    /// "tcp", "udp" or "icmp".
    pub proto: String,
    pub src: String,
    pub sport: u16,
    pub dst: String,
    pub dport: u16,
    pub nat_port: u16,
    /// "masquerade" (out from a container), "dnat" (in to a published port) or "hairpin".
    #[serde(default)]
    pub kind: String,
    pub state: String,
    pub expires_in_secs: u64,
    pub packets_out: u64,
    pub packets_in: u64,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct NetworkCreate {
    pub name: String,
    /// IPv4 CIDR, e.g. "10.1.0.0/24".
    pub subnet: String,
    /// Defaults to the first address of the subnet.
    #[serde(default)]
    pub gateway: Option<String>,
    /// Only "bridge" for now.
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub mac_aging_secs: Option<u32>,
    #[serde(default)]
    pub fdb_limit: Option<u32>,
    /// Allocate addresses from this sub-range of the subnet (CIDR).
    #[serde(default)]
    pub ip_range: Option<String>,
    /// DHCP server on the gateway [default: on].
    #[serde(default)]
    pub dhcp: Option<bool>,
    /// Resolve container names [default: on].
    #[serde(default)]
    pub dns: Option<bool>,
    /// Answer ARP for known containers [default: on].
    #[serde(default)]
    pub arp_suppress: Option<bool>,
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub lease_secs: Option<u32>,
    /// No way out through the uplink (Docker's `--internal`).
    #[serde(default)]
    pub internal: bool,
    /// Overlay networks (`driver = "overlay"`): the VXLAN network identifier (1 to 2^24-1).
    #[serde(default)]
    pub vni: Option<u32>,
    /// Overlay networks: remote VTEPs (IPv4 addresses).
    #[serde(default)]
    pub peers: Vec<String>,
    /// Overlay networks: a VTEP that sends for this VNI becomes a peer (the default drops it).
    #[serde(default)]
    pub learn_peers: bool,
    /// Overlay networks: VXLAN between VTEPs only inside WireGuard sessions.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub encrypted: bool,
    /// Encrypted overlays: the WireGuard public keys of `peers`, in their order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peer_keys: Vec<String>,
    /// The ports' default MTU [default: 1500; overlays 1450].
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Port security for the network's ports [default: on]: each may send only with its own
    /// MAC and address. Off, no port of the network is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security: Option<bool>,
    /// Containers may reach each other [default: on]; off (`--no-icc`, Docker's
    /// `enable_icc=false`) they reach the gateway and, through it, the outside only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub icc: Option<bool>,
    /// Host access: vswitchd's namespace gets an interface on the network (`vsw-NAME`) with
    /// an address of its own, and `host.vswitch.internal` names it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_access: bool,
    /// MACs one port may have in the network's table [default: 64; 0: no limit].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_mac_limit: Option<u32>,
    /// Frames a second one port may send to the gateway's services [default: 1000; 0: no
    /// limit].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_rate: Option<u32>,
    /// Who makes the network, for a runtime to find it again (`docker:NETWORKID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Addresses IPAM never hands out (Docker's `--aux-address`): `IP` or `NAME=IP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aux_addresses: Vec<String>,
    /// macvlan and ipvlan networks: the interface of vswitchd's namespace they are on, `IFACE`
    /// or `IFACE.VLAN` (the switch tags VLAN frames itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// macvlan networks: `bridge` (containers reach each other through the switch, the
    /// default) or `private` (each reaches the parent's segment only). ipvlan networks: `l2`
    /// (the default) or `l3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct VtepSet {
    /// An address of vswitchd's namespace.
    pub local_ip: String,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub ttl: Option<u8>,
    /// Encrypted overlays' UDP port [default: 51820].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wg_port: Option<u16>,
    /// Encrypted overlays: this host's address inside the sessions, CIDR [default: the
    /// VTEP's address].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tunnel_ip: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VtepInfo {
    pub local_ip: String,
    pub port: u16,
    pub ttl: u8,
    /// "up", or why the socket is not bound.
    pub status: String,
    /// How datagrams are batched: "udp-gso" (one GSO super-datagram per run of one size, the
    /// rest by sendmmsg), or "sendmmsg" where the kernel refused UDP_SEGMENT; receives are
    /// recvmmsg with UDP_GRO either way.
    #[serde(default)]
    pub tx_batching: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Datagrams dropped before reaching a tunnel port, by reason.
    pub drops: BTreeMap<String, u64>,
    /// Overlay networks: name, VNI, peers.
    pub networks: Vec<(String, u32, Vec<String>)>,
    /// Encrypted overlays: this host's WireGuard public key (base64), its port and its
    /// address inside the sessions.
    #[serde(default)]
    pub public_key: String,
    #[serde(default)]
    pub wg_port: u16,
    #[serde(default)]
    pub tunnel_ip: String,
    /// Encrypted overlays' peers (one session each).
    #[serde(default)]
    pub wg_peers: Vec<WgPeerInfo>,
}

/// `cluster show`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ClusterInfo {
    /// Whether a store is configured (`--store`); without one the switch is a single host.
    pub configured: bool,
    #[serde(default)]
    pub store: String,
    #[serde(default)]
    pub prefix: String,
    /// This node's name.
    #[serde(default)]
    pub node: String,
    /// "connected", or "unavailable: why".
    #[serde(default)]
    pub status: String,
    /// Seconds in that status.
    #[serde(default)]
    pub status_secs: u64,
    #[serde(default)]
    pub ttl_secs: u64,
    #[serde(default)]
    pub nodes: Vec<ClusterNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClusterNode {
    pub name: String,
    #[serde(default)]
    pub vtep: Option<String>,
    #[serde(default)]
    pub version: String,
    /// Registered under a live lease ("up"): a node whose lease expired is not listed.
    pub health: String,
    /// Its endpoints on overlay networks, as the store has them.
    pub endpoints: usize,
    /// This node.
    pub local: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WgPeerInfo {
    /// Its address inside the sessions (its VTEP in `fdb show`).
    pub tunnel_ip: String,
    pub endpoint: String,
    pub public_key: String,
    /// Seconds since the last handshake completed (none yet: `None`).
    pub handshake_age_secs: Option<u64>,
    pub tx_messages: u64,
    /// Packets that waited for a handshake before they could leave.
    #[serde(default)]
    pub queued: u64,
    pub rx_packets: u64,
    /// Messages that did not authenticate.
    pub rx_bad: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PortAdd {
    pub network: String,
    /// `ip netns` name, namespace path, or pid.
    pub netns: String,
    #[serde(default)]
    pub ifname: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    /// "172.17.0.2/16" or "172.17.0.2" (prefix from the subnet).
    #[serde(default)]
    pub ip: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub name: Option<String>,
    /// Leave the interface unconfigured: the container runs its own DHCP client.
    #[serde(default)]
    pub dhcp: bool,
    /// Extra DNS names of the port on its network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// TAP offloads (checksum, TSO/USO with a virtio-net header) [default: on]. Off, the switch
    /// segments and checksums in software what goes out of this port.
    #[serde(default)]
    pub offload: Option<bool>,
    /// "tap" (default) or "afxdp".
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    /// AF_XDP: "auto" (native, falling back to skb), "native" or "skb".
    #[serde(default)]
    pub xdp_mode: Option<String>,
    /// AF_XDP: entries per ring (power of two).
    #[serde(default)]
    pub ring_size: Option<u32>,
    /// AF_XDP: bytes per UMEM frame (2048 or 4096).
    #[serde(default)]
    pub frame_size: Option<u32>,
    /// Host ports on the uplink that lead to this port:
    /// `[HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/tcp|/udp]`.
    #[serde(default)]
    pub publish: Vec<String>,
    /// Port security [default: on when the network has it]: the port may send only with its
    /// MAC and address; off (`--no-port-security`) it may use any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port_security: Option<bool>,
    /// Who made the port, for a runtime to find its ports again: `cni:CONTAINERID:IFNAME`
    /// (the CNI plugin), `docker:ENDPOINTID` (the Docker driver). Printable, at most 300 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Make the TAP in vswitchd's own namespace under `ifname`, unconfigured (no address, no
    /// route), for the caller to move into `netns` itself — Docker's Join, where dockerd
    /// moves and configures the interface. `netns` (the sandbox) must exist already.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handoff: bool,
}

// One response per request on the control path: its size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum Response {
    Ok(Reply),
    Error(ApiError),
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    Done,
    Network(NetworkInfo),
    Networks(Vec<NetworkInfo>),
    Port(PortInfo),
    Show(ShowInfo),
    Fdb(Vec<FdbTable>),
    Stats(Vec<PortStatsInfo>),
    Arp(Vec<ArpTable>),
    Leases(Vec<LeaseInfo>),
    Uplink(Option<UplinkInfo>),
    Conntrack(Vec<ConntrackRow>),
    ConntrackStats(ConntrackStats),
    /// How many flows a flush removed.
    Flushed(usize),
    Container(ContainerInfo),
    Containers(Vec<ContainerInfo>),
    Vtep(Option<VtepInfo>),
    Cluster(ClusterInfo),
    Published(Vec<PublishInfo>),
    Trace(TraceInfo),
    CaptureStarted(CaptureInfo),
    CaptureFrame(CaptureFrame),
    CaptureEnd(CaptureEnd),
    EventsStarted,
    Event(EventInfo),
}

/// One change in the switch (`vswitchctl events`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventInfo {
    /// Microseconds since the Unix epoch.
    pub time_us: u64,
    /// `port-added`, `port-removed`, `port-down`, `mac-moved`, `lease`, `lease-released`,
    /// `conntrack-full`, `peer-added`, `peer-removed`, `peer-learned`, `network-created`,
    /// `network-removed`, `uplink-set`, `uplink-removed`.
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    pub detail: String,
    /// Events this client missed before this one (it did not keep up).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub missed: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaptureReq {
    pub port: String,
    /// "in", "out" or "both" [default: both].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<String>,
    /// Frames to capture before the capture ends [default: until the client goes].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Bytes kept of each frame [default and most: 262144].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snaplen: Option<u32>,
    /// Received frames as the switch's pipeline left them (after NAT and routing rewrites),
    /// not as they were read.
    #[serde(default)]
    pub rewritten: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaptureInfo {
    pub port: String,
    pub direction: String,
    pub snaplen: u32,
    pub rewritten: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaptureFrame {
    /// Microseconds since the Unix epoch.
    pub ts_us: u64,
    /// "in" (received from the port) or "out" (sent to it).
    pub dir: String,
    /// The frame's length; `hex` may be cut to the snap length.
    pub len: u32,
    pub hex: String,
    /// Frames left out of the capture so far (the reader did not keep up).
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CaptureEnd {
    /// Frames sent to the client.
    pub captured: u64,
    /// Frames left out because the client did not keep up.
    pub dropped: u64,
    /// Why it ended: "count", "port gone".
    pub reason: String,
}

/// What `trace` found: the stages a frame went through and where it ends up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceInfo {
    pub port: String,
    pub network: Option<String>,
    /// The frame as it came in, in the flow syntax.
    pub flow: String,
    /// The frame in hex, as `trace --hex` takes it.
    pub hex: String,
    pub steps: Vec<TraceStep>,
    /// Where the frame goes (empty when it was dropped or only answered).
    pub outputs: Vec<TraceOutput>,
    pub flooded: bool,
    /// The drop reason (as `port stats` counts it), when it went nowhere.
    pub drop: Option<String>,
    /// The frame after the switch's rewrites (NAT, routing), when they changed it.
    pub rewritten: Option<String>,
    /// What the switch answered, back out of the ingress port.
    pub reply: Option<String>,
    /// Frames the switch would send on its own (an ARP request for a next hop).
    pub emitted: Vec<TraceOutputFrame>,
    /// What the control plane would be told (a DHCP lease, a DNS query for upstream).
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceStep {
    pub stage: String,
    pub verdict: String,
    pub detail: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceOutput {
    pub port: String,
    /// A remote VTEP: the VXLAN encapsulation, `vni N, LOCAL:SPORT -> REMOTE:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vxlan: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TraceOutputFrame {
    pub port: String,
    pub frame: String,
}

/// One published spec of a port.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PublishInfo {
    pub port: String,
    pub network: String,
    /// As given, normalised: `[HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END]/PROTO`.
    pub spec: String,
    pub proto: String,
    pub host_ip: Option<String>,
    pub host_port: u16,
    pub host_port_end: u16,
    pub container_ip: Option<String>,
    pub container_port: u16,
    /// "active" (new flows go to the port), or why not ("no uplink", "port detached", …).
    pub status: String,
    /// The loopback relay (the host's own stack to the port: `localhost:PORT`): "listening",
    /// or why not.
    #[serde(default)]
    pub relay: String,
    /// Connections (TCP) or sessions (UDP) the relay took for this publish, and how many run.
    #[serde(default)]
    pub relay_connections: u64,
    #[serde(default)]
    pub relay_active: u64,
    /// Connections refused because the relay had as many as it may run (`MAX_RELAYS`).
    #[serde(default)]
    pub relay_refused: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NeighborRow {
    pub ip: String,
    pub mac: String,
    pub port: String,
    /// "static", "dhcp" or "learned".
    pub kind: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ArpTable {
    pub network: String,
    pub gateway: String,
    pub gateway_mac: String,
    pub arp_suppress: bool,
    pub counters: crate::switch::gateway::GatewayCounters,
    pub neighbors: Vec<NeighborRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LeaseInfo {
    pub network: String,
    pub mac: String,
    pub ip: String,
    pub hostname: Option<String>,
    pub expires_in_secs: u32,
    /// The port the MAC belongs to, if it is one of the switch's ports.
    pub port: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NetworkInfo {
    pub name: String,
    pub driver: String,
    pub subnet: String,
    pub gateway: String,
    pub mac_aging_secs: u32,
    pub fdb_limit: u32,
    pub ip_range: String,
    pub gateway_mac: String,
    pub dhcp: bool,
    pub dns: bool,
    pub arp_suppress: bool,
    pub domain: String,
    pub lease_secs: u32,
    pub ports: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vni: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// An overlay whose frames travel inside WireGuard (`--encrypted`).
    #[serde(default)]
    pub encrypted: bool,
    /// Port security on the network's ports (unless a port opts out).
    #[serde(default)]
    pub port_security: bool,
    /// Containers may reach each other (false: `--no-icc`).
    #[serde(default)]
    pub icc: bool,
    /// Host access: the interface in vswitchd's namespace and its address, when it is up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_access: Option<HostAccessInfo>,
    /// MACs one port may have in the table (0: no limit).
    #[serde(default)]
    pub port_mac_limit: u32,
    /// Frames a second one port may send to the gateway's services (0: no limit).
    #[serde(default)]
    pub gateway_rate: u32,
    /// No way out through the uplink (`--internal`).
    #[serde(default)]
    pub internal: bool,
    /// Addresses IPAM never hands out (`--aux-address`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aux_addresses: Vec<String>,
    /// Who made the network (`NetworkCreate::owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// macvlan networks: the parent (`IFACE` or `IFACE.VLAN`), the mode, and why the parent
    /// is not served when it is not (gone, or it could not be bound).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HostAccessInfo {
    /// The interface in vswitchd's namespace (also the port's name).
    pub ifname: String,
    pub ip: String,
    /// "up", or "detached" with the reason.
    pub status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortInfo {
    pub name: String,
    pub network: String,
    pub kind: String,
    pub netns: String,
    pub ifname: String,
    pub mac: String,
    pub ip: Option<String>,
    pub mtu: u32,
    pub dhcp: bool,
    pub aliases: Vec<String>,
    pub offload: bool,
    /// "up", or "detached" when its namespace or interface is gone.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// AF_XDP ports: the veth's host end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ifname: Option<String>,
    /// AF_XDP ports while up: mode in use, rings, and where every UMEM frame is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdp: Option<crate::ports::XdpStatus>,
    /// Published host ports (`publish ls` tells whether each is active).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// The port may send only with its MAC and address (spoofed frames are dropped).
    #[serde(default)]
    pub port_security: bool,
    /// Who made the port (`PortAdd::owner`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Made for a runtime to move into its sandbox (`PortAdd::handoff`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub handoff: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DaemonInfo {
    pub version: String,
    pub protocol: u32,
    pub pid: u32,
    pub socket: String,
    pub state_dir: String,
    pub uptime_secs: u64,
    /// Ports taken down since start because their interface or namespace vanished.
    #[serde(default)]
    pub ports_lost: u64,
    /// The dataplane batches TAP reads and writes through io_uring (false: one read(2) or
    /// write(2) per frame, because io_uring is off or unavailable).
    #[serde(default)]
    pub io_uring: bool,
    /// Batches of TAP reads that went through io_uring since start (a TAP that had several
    /// frames waiting last time is read this way).
    #[serde(default)]
    pub io_uring_read_batches: u64,
    /// The AF_XDP ports' frames: the pool's chunks (shared UMEMs) and where their frames are.
    #[serde(default)]
    pub afxdp_pool: crate::ports::umem::PoolStatus,
    /// The DNS forwarder: where its upstream resolvers come from and what it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsInfo>,
}

/// The embedded DNS's forwarding of names the networks do not own.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DnsInfo {
    /// "config" (`dns_upstreams` / `--dns-upstream`) or "resolv.conf" (the host's).
    pub source: String,
    /// The resolv.conf followed, when that is the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolv_conf: Option<String>,
    /// The resolvers asked now, in order ("IP:PORT"); none: other names get SERVFAIL.
    pub upstreams: Vec<String>,
    /// Queries handed to the forwarder, answered by an upstream, answered SERVFAIL (no upstream
    /// or none answered), dropped (queue full).
    pub forwarded: u64,
    pub answered: u64,
    pub servfail: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShowInfo {
    pub daemon: DaemonInfo,
    pub networks: Vec<NetworkInfo>,
    pub ports: Vec<PortInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FdbRow {
    pub mac: String,
    /// The port, or `vxlan:IP` for a MAC behind a remote VTEP.
    pub port: String,
    /// The remote VTEP a MAC was learned from (overlay networks).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vtep: Option<String>,
    pub age_secs: f64,
    /// A static entry (`fdb add`): never aged or moved.
    #[serde(default, rename = "static")]
    pub is_static: bool,
    /// A static entry's address (answered for by ARP suppression).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FdbTable {
    pub network: String,
    pub limit: u32,
    pub mac_aging_secs: u32,
    pub counters: FdbCounters,
    pub entries: Vec<FdbRow>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PortStatsInfo {
    pub port: String,
    pub network: String,
    pub status: String,
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Drops by reason (all reasons listed, zeros included, so scripts can rely on the keys).
    pub drops: BTreeMap<String, u64>,
}

/// Stable error codes: scripts match on these, people read the message.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    RequestTooLarge,
    UnsupportedVersion,
    InvalidArgument,
    NetworkExists,
    NetworkNotFound,
    NetworkInUse,
    SubnetOverlap,
    PortExists,
    PortNotFound,
    AddressInUse,
    AddressPoolExhausted,
    MacInUse,
    NetnsNotFound,
    IfnameTaken,
    /// A host port published already, or held by a socket of the host.
    PortInUse,
    ContainerExists,
    ContainerNotFound,
    ContainerInUse,
    Busy,
    PermissionDenied,
    /// The cluster store cannot be reached: a change to cluster objects cannot be made now.
    StoreUnavailable,
    Internal,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
}

/// Why a client call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach vswitchd at {path} ({source}); is it running? (see --socket / VSWITCH_SOCKET)")]
    Connect { path: String, source: io::Error },
    #[error("lost the connection to vswitchd: {0}")]
    Io(#[from] io::Error),
    #[error("vswitchd sent a response this client does not understand: {0}")]
    Decode(String),
    #[error("{0}")]
    Api(#[from] ApiError),
}

/// A connection to vswitchd.
pub struct Client {
    writer: UnixStream,
    reader: BufReader<UnixStream>,
    /// A streamed response line read in part before a timeout.
    partial: Vec<u8>,
}

impl Client {
    pub fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).map_err(|source| ClientError::Connect {
            path: path.display().to_string(),
            source,
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Client {
            writer: stream,
            reader,
            partial: Vec::new(),
        })
    }

    /// Sends one request and waits for its response.
    pub fn call(&mut self, op: Op) -> Result<Reply, ClientError> {
        let mut line = serde_json::to_vec(&Request::new(op))
            .map_err(|e| ClientError::Decode(e.to_string()))?;
        line.push(b'\n');
        self.writer.write_all(&line)?;
        let mut resp = String::new();
        let n = (&mut self.reader).take(64 << 20).read_line(&mut resp)?;
        if n == 0 {
            return Err(ClientError::Io(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "vswitchd closed the connection",
            )));
        }
        match serde_json::from_str::<Response>(&resp) {
            Ok(Response::Ok(reply)) => Ok(reply),
            Ok(Response::Error(e)) => Err(ClientError::Api(e)),
            Err(e) => Err(ClientError::Decode(e.to_string())),
        }
    }

    /// The next response of a streaming request (`capture`); `None` when vswitchd closed the
    /// connection. Waits up to `timeout` (for ever: `None`), then fails with `TimedOut` or
    /// `WouldBlock`, after which it may be called again.
    pub fn next_reply(&mut self, timeout: Option<Duration>) -> Result<Option<Reply>, ClientError> {
        self.writer.set_read_timeout(timeout)?;
        // Bytes read before a timeout stay in `partial` for the next call.
        let n = (&mut self.reader)
            .take(64 << 20)
            .read_until(b'\n', &mut self.partial)?;
        if n == 0 && self.partial.is_empty() {
            return Ok(None);
        }
        let line = std::mem::take(&mut self.partial);
        match serde_json::from_slice::<Response>(&line) {
            Ok(Response::Ok(reply)) => Ok(Some(reply)),
            Ok(Response::Error(e)) => Err(ClientError::Api(e)),
            Err(e) => Err(ClientError::Decode(e.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_format() {
        let r = Request::new(Op::NetworkRemove {
            name: "web".into(),
            force: true,
        });
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"version":1,"op":"network-remove","name":"web","force":true}"#
        );
        let back: Request =
            serde_json::from_str(r#"{"op":"network-remove","name":"web","version":1}"#).unwrap();
        assert_eq!(
            back.op,
            Op::NetworkRemove {
                name: "web".into(),
                force: false
            }
        );
        let e = Response::Error(ApiError::new(ErrorCode::NetworkExists, "x"));
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":{"code":"network_exists","message":"x"}}"#
        );
        assert_eq!(
            serde_json::to_string(&Response::Ok(Reply::Done)).unwrap(),
            r#"{"ok":"done"}"#
        );
    }
}
