//! vswitchctl: the command-line client of vswitchd. A thin front end over `vswitch::api`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};
use vswitch::api::*;

#[derive(Parser, Debug)]
#[command(
    name = "vswitchctl",
    version,
    disable_version_flag = true,
    about = "Control vswitchd, the userspace virtual switch"
)]
struct Cli {
    /// Print vswitchctl's version and, when it answers, vswitchd's version and protocol.
    #[arg(short = 'V', long)]
    version: bool,
    /// vswitchd's control socket.
    #[arg(long, global = true, env = "VSWITCH_SOCKET", default_value = DEFAULT_SOCKET)]
    socket: PathBuf,
    /// Print machine-readable JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Create, list, inspect and remove networks.
    #[command(subcommand)]
    Network(NetworkCmd),
    /// Attach a container (a network namespace) to a network through a new interface.
    AddPort(AddPortArgs),
    /// Remove a port and its interface.
    DelPort { port: String },
    /// The whole picture: networks, ports, namespaces, MACs, addresses.
    Show,
    /// MAC learning tables.
    #[command(subcommand)]
    Fdb(FdbCmd),
    /// Port counters.
    #[command(subcommand)]
    Port(PortCmd),
    /// The gateways' neighbour tables (container addresses and MACs) and counters.
    #[command(subcommand)]
    Arp(ArpCmd),
    /// DHCP leases.
    #[command(subcommand)]
    Dhcp(DhcpCmd),
    /// The interface routed traffic leaves through, masqueraded behind its address.
    #[command(subcommand)]
    Uplink(UplinkCmd),
    /// Flows tracked for NAT through the uplink.
    #[command(subcommand)]
    Conntrack(ConntrackCmd),
    /// Containers: network namespaces the switch manages, in Docker's network modes.
    #[command(subcommand)]
    Container(ContainerCmd),
    /// The VXLAN tunnel endpoint of overlay networks.
    #[command(subcommand)]
    Vtep(VtepCmd),
    /// The cluster store (`vswitchd --store etcd://…`) and its nodes.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Host ports of the uplink that lead to a port (`docker run -p`).
    #[command(subcommand)]
    Publish(PublishCmd),
    /// Explain what the switch does with a frame from PORT: each stage's decision, and where
    /// the frame goes or why it is dropped (against the live tables, changing nothing).
    Trace(TraceArgs),
    /// Stream copies of the frames PORT receives and sends, as the switch sees them: a line per
    /// frame, or a pcap with -w (`-w -` writes it to stdout: `| tcpdump -r - -n`).
    Capture(CaptureArgs),
    /// Print a shell completion script (bash, zsh or fish) to standard output.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) to standard output, or with --dir write one page per
    /// command there (vswitchctl.1, vswitchctl-network.1, …).
    Man {
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
    },
    /// Follow the switch's changes as they happen (ports added, removed and down, MAC moves,
    /// DHCP leases, a full conntrack table, overlay peers, networks, the uplink), until Ctrl-C.
    Events,
}

#[derive(Args, Debug)]
struct CaptureArgs {
    /// A port's name, or `uplink`.
    port: String,
    /// Frames the port receives (in), is sent (out), or both.
    #[arg(long, default_value = "both", value_parser = ["in", "out", "both"])]
    direction: String,
    /// Stop after this many frames (else at Ctrl-C).
    #[arg(short = 'c', long)]
    count: Option<u64>,
    /// Bytes kept of each frame [default: 262144, a whole 64 KiB TSO frame].
    #[arg(short = 's', long)]
    snaplen: Option<u32>,
    /// Received frames as the switch's pipeline left them (after NAT and routing rewrites),
    /// not as it read them. Sent frames are always as sent.
    #[arg(long)]
    rewritten: bool,
    /// Write a pcap file (`-`: standard output) instead of a line per frame.
    #[arg(short = 'w', long = "write", value_name = "FILE")]
    write: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct TraceArgs {
    /// The port the frame comes in on: a port's name, or `uplink`.
    port: String,
    /// The frame, in Open vSwitch's field names: `arp,arp_tpa=IP`, `icmp,nw_dst=IP`,
    /// `tcp,nw_dst=IP,tp_dst=N`, `udp,…`, `dl_dst=MAC`. Fields: dl_src dl_dst dl_vlan dl_type
    /// arp_op arp_spa arp_tpa arp_sha arp_tha nw_src nw_dst nw_ttl nw_proto tp_src tp_dst
    /// icmp_type icmp_code tcp_flags (syn+ack…) payload_len. What it leaves out is what PORT
    /// sends: its MAC and address, and the MAC of the destination (or of the gateway, off the
    /// subnet).
    #[arg(
        required_unless_present_any = ["hex", "from_pcap"],
        conflicts_with_all = ["hex", "from_pcap"]
    )]
    flow: Option<String>,
    /// The frame as hex bytes (from the Ethernet header on).
    #[arg(long, conflicts_with = "from_pcap")]
    hex: Option<String>,
    /// The frame from a pcap file (Ethernet), as `tcpdump -w` writes it.
    #[arg(long, value_name = "FILE")]
    from_pcap: Option<PathBuf>,
    /// Which frame of the pcap file, counting from 1 as tcpdump and Wireshark do.
    #[arg(long, default_value_t = 1, requires = "from_pcap")]
    index: usize,
}

#[derive(Subcommand, Debug)]
enum PublishCmd {
    /// Publish host ports to PORT: [HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/tcp|/udp].
    Add { port: String, spec: String },
    /// Stop publishing SPEC to PORT (established flows finish).
    #[command(alias = "remove", alias = "del")]
    Rm { port: String, spec: String },
    /// Every published port, with where it leads and whether it is active.
    #[command(alias = "list")]
    Ls,
}

#[derive(Subcommand, Debug)]
enum PeerCmd {
    Add {
        network: String,
        ip: String,
        /// Encrypted overlays: the peer's WireGuard public key (base64, as `wg pubkey`
        /// prints it).
        #[arg(long)]
        key: Option<String>,
        /// Encrypted overlays: where its WireGuard messages go, IPv4:PORT [default: IP on
        /// the VTEP's WireGuard port].
        #[arg(long)]
        endpoint: Option<String>,
    },
    #[command(alias = "remove")]
    Rm { network: String, ip: String },
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// The store, this node's session and the nodes registered (with their VTEPs).
    Show,
}

#[derive(Subcommand, Debug)]
enum VtepCmd {
    /// Bind the VXLAN tunnel endpoint to an address of vswitchd's namespace.
    Set {
        #[arg(long)]
        local_ip: String,
        /// UDP port [default: 4789].
        #[arg(long)]
        port: Option<u16>,
        /// TTL of the outer IP header [default: 64].
        #[arg(long)]
        ttl: Option<u8>,
        /// Encrypted overlays: the WireGuard messages' UDP port [default: 51820].
        #[arg(long)]
        wg_port: Option<u16>,
        /// Encrypted overlays: this host's address inside the sessions, CIDR [default: the
        /// VTEP's address]; a kernel peer's WireGuard interface routes it.
        #[arg(long)]
        tunnel_ip: Option<String>,
    },
    /// The VTEP, its counters and overlay networks.
    Show,
}

#[derive(Subcommand, Debug)]
enum ContainerCmd {
    /// Create a container (a network namespace named NAME) in a network mode.
    Create {
        name: String,
        /// A network by name (repeat for several: eth0, eth1, … in order), or host, none,
        /// container:OTHER [default: bridge].
        #[arg(long = "network", alias = "net")]
        networks: Vec<String>,
        /// Address on the first network.
        #[arg(long)]
        ip: Option<String>,
        /// MAC of the first interface.
        #[arg(long)]
        mac: Option<String>,
        /// A DNS name on user-defined networks (repeatable, or comma-separated).
        #[arg(long = "alias", value_delimiter = ',')]
        aliases: Vec<String>,
        /// [default: the container's name]
        #[arg(long)]
        hostname: Option<String>,
        /// Legacy link OTHER[:ALIAS]: OTHER's address in this container's /etc/hosts (repeatable).
        #[arg(long = "link")]
        links: Vec<String>,
        /// A nameserver for its resolv.conf instead of its networks' gateways (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Interface type: tap or afxdp [default: tap].
        #[arg(long = "type")]
        kind: Option<String>,
        /// Publish host ports to the first interface (repeatable), as `docker run -p`.
        #[arg(long, short = 'p')]
        publish: Vec<String>,
    },
    /// List containers.
    #[command(alias = "list")]
    Ls,
    /// Mode, networks (IP, MAC, gateway, aliases), DNS servers, namespace, links.
    Inspect { name: String },
    /// Remove a container, its interfaces and its namespace.
    #[command(alias = "remove")]
    Rm {
        name: String,
        /// Also remove the containers joined to its namespace.
        #[arg(long)]
        force: bool,
    },
    /// Run a command in the container's namespace (with its resolv.conf, hosts, hostname).
    Exec {
        name: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum UplinkCmd {
    /// Serve IFACE (in vswitchd's namespace) with an AF_XDP socket as the uplink.
    Set {
        iface: String,
        /// shared (the host keeps IFACE and its address; the switch masquerades behind that
        /// address with its NAT ports only) or dedicated (IFACE and --ip belong to the switch).
        #[arg(long, default_value = "shared")]
        mode: String,
        /// The uplink's own address, CIDR (dedicated mode); shared: which of IFACE's addresses
        /// to masquerade behind [default: its primary one].
        #[arg(long)]
        ip: Option<String>,
        /// The next hop for destinations off the uplink's link [shared: the host's default
        /// gateway on IFACE].
        #[arg(long)]
        gateway: Option<String>,
        /// XDP attach mode: auto, native or skb [default: skb for shared (some drivers reset
        /// their queues on a native attach), auto for dedicated].
        #[arg(long)]
        xdp_mode: Option<String>,
        /// What serves IFACE: afxdp [default; a dedicated uplink falls back to a packet socket
        /// where no XDP program attaches] or packet (a packet socket with virtio-net headers:
        /// GSO frames both ways; dedicated mode only).
        #[arg(long = "type")]
        uplink_type: Option<String>,
        /// NAT ports and ICMP identifiers, LO-HI [default: 61000-65535].
        #[arg(long)]
        nat_ports: Option<String>,
        /// Most tracked flows [default: 262144].
        #[arg(long)]
        conntrack_max: Option<usize>,
        /// Most tracked flows one container (or outside client of a published port) may have
        /// [default: 65536; 0: no bound]; more are refused (ct_source_limit).
        #[arg(long)]
        conntrack_per_source: Option<usize>,
    },
    /// The uplink, its counters and neighbours.
    Show,
    /// Stop using the uplink (its flows are forgotten).
    #[command(alias = "remove")]
    Rm,
}

#[derive(Subcommand, Debug)]
enum ConntrackCmd {
    /// Tracked flows.
    Show {
        #[arg(long)]
        network: Option<String>,
    },
    /// Table size and counters.
    Stats,
    /// Forget every flow (or a network's).
    Flush {
        #[arg(long)]
        network: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum ArpCmd {
    /// Neighbours known to each network's gateway.
    Show { network: Option<String> },
}

#[derive(Subcommand, Debug)]
enum DhcpCmd {
    /// Active leases.
    Leases { network: Option<String> },
}

// Parsed once per run: the size of the biggest variant costs nothing worth boxing for.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum NetworkCmd {
    /// Create a network.
    Create {
        name: String,
        /// IPv4 subnet, e.g. 10.1.0.0/24.
        #[arg(long)]
        subnet: String,
        /// Gateway address [default: the subnet's first address].
        #[arg(long)]
        gateway: Option<String>,
        /// Network driver.
        #[arg(long, default_value = "bridge")]
        driver: String,
        /// Seconds a learned MAC stays without traffic [default: 300].
        #[arg(long)]
        mac_aging: Option<u32>,
        /// Most MACs the network's table holds [default: 8192].
        #[arg(long)]
        fdb_limit: Option<u32>,
        /// Most MACs one port may have in the table [default: 64; 0: no limit]; frames from a
        /// new MAC past it are dropped (mac_limit).
        #[arg(long)]
        port_mac_limit: Option<u32>,
        /// Frames a second (and in a burst) one port may send to the gateway's services — ARP,
        /// ICMP, DHCP, DNS to the gateway [default: 1000; 0: no limit]; the excess is dropped
        /// (rate_limited).
        #[arg(long)]
        gateway_rate: Option<u32>,
        /// Allocate addresses (IPAM and DHCP) from this CIDR inside the subnet.
        #[arg(long)]
        ip_range: Option<String>,
        /// An address IPAM and DHCP never hand out, `IP` or `NAME=IP` (repeatable; Docker's
        /// --aux-address).
        #[arg(long = "aux-address", value_name = "[NAME=]IP")]
        aux_address: Vec<String>,
        /// macvlan and ipvlan networks: the interface they are on, IFACE or IFACE.VLAN (the
        /// switch adds and strips the 802.1Q tag itself).
        #[arg(long, value_name = "IFACE[.VLAN]")]
        parent: Option<String>,
        /// macvlan networks: bridge (containers reach each other, the default) or private
        /// (each reaches the parent's segment only); ipvlan networks: l2 (the default: one L2
        /// domain with the segment, behind the parent's MAC) or l3 (the switch routes).
        #[arg(long, value_name = "bridge|private|l2|l3")]
        mode: Option<String>,
        /// Turn the network's DHCP server off.
        #[arg(long)]
        no_dhcp: bool,
        /// Do not resolve container names (like Docker's default bridge).
        #[arg(long)]
        no_dns: bool,
        /// Do not answer ARP on behalf of known containers.
        #[arg(long)]
        no_arp_suppress: bool,
        /// DNS search domain handed out by DHCP [default: NAME.vswitch].
        #[arg(long)]
        domain: Option<String>,
        /// DHCP lease time in seconds [default: 3600].
        #[arg(long)]
        lease_time: Option<u32>,
        /// No way out through the uplink (Docker's --internal).
        #[arg(long)]
        internal: bool,
        /// Overlay networks: the VXLAN network identifier (1 to 16777215).
        #[arg(long)]
        vni: Option<u32>,
        /// Overlay networks: a remote VTEP (repeatable).
        #[arg(long = "peer")]
        peers: Vec<String>,
        /// Overlay networks: a VTEP that sends for this VNI becomes a peer (default: dropped
        /// as unknown_vtep).
        #[arg(long)]
        learn_peers: bool,
        /// Overlay networks: VXLAN between hosts only inside WireGuard sessions (keys from
        /// `vtep show` on each host; ports' MTU 1390 by default).
        #[arg(long)]
        encrypted: bool,
        /// Encrypted overlays: the WireGuard public key of the --peer before it (repeatable,
        /// in the peers' order).
        #[arg(long = "peer-key")]
        peer_keys: Vec<String>,
        /// The ports' default MTU [default: 1500; overlays 1450].
        #[arg(long)]
        mtu: Option<u32>,
        /// Port security on the network's ports: each may send only with its own MAC and
        /// address (`--port-security=false` turns it off for the whole network).
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
        port_security: bool,
        /// No inter-container communication (Docker's enable_icc=false): containers reach the
        /// gateway and, through it, the outside, but not each other.
        #[arg(long)]
        no_icc: bool,
        /// Host access: an interface of vswitchd's namespace (vsw-NAME) joins the network with
        /// an address of its own; containers reach the host as host.vswitch.internal.
        #[arg(long)]
        host_access: bool,
    },
    /// Add or remove a remote VTEP of an overlay network.
    #[command(subcommand)]
    Peer(PeerCmd),
    /// List networks.
    #[command(alias = "list")]
    Ls,
    /// Show one network.
    Inspect { name: String },
    /// Remove a network (refused while ports are attached, unless --force).
    #[command(alias = "remove")]
    Rm {
        name: String,
        /// Delete its ports too.
        #[arg(long)]
        force: bool,
    },
    /// Give a container an interface on NETWORK.
    Connect {
        network: String,
        container: String,
        #[arg(long)]
        ip: Option<String>,
        #[arg(long = "alias", value_delimiter = ',')]
        aliases: Vec<String>,
    },
    /// Take a container's interface on NETWORK away.
    Disconnect { network: String, container: String },
}

#[derive(Args, Debug)]
struct AddPortArgs {
    /// Network to attach to.
    network: String,
    /// Namespace: an `ip netns` name, a path such as /proc/PID/ns/net, or a pid.
    #[arg(long)]
    netns: String,
    /// Interface name inside the namespace [default: eth0].
    #[arg(long)]
    ifname: Option<String>,
    /// MAC address [default: 02:42 followed by the IPv4 address, Docker-style].
    #[arg(long)]
    mac: Option<String>,
    /// Address, e.g. 172.17.0.2 or 172.17.0.2/16; a default route via the gateway is added.
    #[arg(long)]
    ip: Option<String>,
    /// Interface MTU [default: 1500].
    #[arg(long)]
    mtu: Option<u32>,
    /// Port name [default: NETNS-IFNAME].
    #[arg(long)]
    name: Option<String>,
    /// Leave the interface unconfigured; the container gets its address with its own DHCP client.
    #[arg(long)]
    dhcp: bool,
    /// Extra DNS names of the port, comma-separated.
    #[arg(long, value_delimiter = ',')]
    alias: Vec<String>,
    /// A TAP without offloads (no virtio-net header): the switch segments TSO frames and
    /// finishes checksums in software for this port.
    #[arg(long)]
    no_offload: bool,
    /// Port type: `tap`, or `afxdp` (a veth pair whose host end an AF_XDP socket serves).
    #[arg(long = "type", default_value = "tap")]
    kind: String,
    /// AF_XDP attach mode: auto (native, else skb), native or skb.
    #[arg(long)]
    xdp_mode: Option<String>,
    /// AF_XDP: entries per ring, a power of two [default: 1024].
    #[arg(long)]
    ring_size: Option<u32>,
    /// AF_XDP: bytes per UMEM frame, 2048 or 4096 [default: 2048].
    #[arg(long)]
    frame_size: Option<u32>,
    /// Publish host ports of the uplink to this port (repeatable):
    /// [HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/tcp|/udp], e.g. 8080:80.
    #[arg(long, short = 'p')]
    publish: Vec<String>,
    /// No port security: the container may send with any MAC and address (by default a port
    /// with an address may send only as itself; see spoofed_* in port stats).
    #[arg(long)]
    no_port_security: bool,
}

#[derive(Subcommand, Debug)]
enum FdbCmd {
    /// Learned and static MACs with their port, age and (overlays) VTEP.
    Show { network: Option<String> },
    /// A static entry on an overlay network: MAC is behind the remote VTEP (known before any
    /// traffic, never aged); with --ip the gateway answers ARP for that address.
    Add {
        network: String,
        mac: String,
        #[arg(long)]
        vtep: String,
        #[arg(long)]
        ip: Option<String>,
    },
    /// Removes a static entry.
    Del { network: String, mac: String },
}

#[derive(Subcommand, Debug)]
enum PortCmd {
    /// rx/tx packets and bytes, and drops by reason.
    Stats { port: Option<String> },
}

fn op_of(cmd: Cmd) -> Op {
    match cmd {
        Cmd::Completion { .. } | Cmd::Man { .. } => unreachable!("answered without vswitchd"),
        Cmd::Network(NetworkCmd::Create {
            name,
            subnet,
            gateway,
            driver,
            mac_aging,
            fdb_limit,
            ip_range,
            aux_address,
            parent,
            mode,
            no_dhcp,
            no_dns,
            no_arp_suppress,
            domain,
            lease_time,
            internal,
            vni,
            peers,
            learn_peers,
            encrypted,
            peer_keys,
            mtu,
            port_security,
            no_icc,
            host_access,
            port_mac_limit,
            gateway_rate,
        }) => Op::NetworkCreate(NetworkCreate {
            name,
            subnet,
            gateway,
            driver: Some(driver),
            mac_aging_secs: mac_aging,
            fdb_limit,
            ip_range,
            dhcp: Some(!no_dhcp),
            dns: Some(!no_dns),
            arp_suppress: Some(!no_arp_suppress),
            domain,
            lease_secs: lease_time,
            internal,
            vni,
            peers,
            learn_peers,
            encrypted,
            peer_keys,
            mtu,
            port_security: Some(port_security),
            icc: Some(!no_icc),
            host_access,
            port_mac_limit,
            gateway_rate,
            owner: None,
            aux_addresses: aux_address,
            parent,
            mode,
        }),
        Cmd::Network(NetworkCmd::Peer(PeerCmd::Add {
            network,
            ip,
            key,
            endpoint,
        })) => Op::NetworkPeer {
            network,
            ip,
            remove: false,
            key,
            endpoint,
        },
        Cmd::Network(NetworkCmd::Peer(PeerCmd::Rm { network, ip })) => Op::NetworkPeer {
            network,
            ip,
            remove: true,
            key: None,
            endpoint: None,
        },
        Cmd::Vtep(VtepCmd::Set {
            local_ip,
            port,
            ttl,
            wg_port,
            tunnel_ip,
        }) => Op::VtepSet(VtepSet {
            local_ip,
            port,
            ttl,
            wg_port,
            tunnel_ip,
        }),
        Cmd::Vtep(VtepCmd::Show) => Op::VtepShow,
        Cmd::Cluster(ClusterCmd::Show) => Op::ClusterShow,
        Cmd::Network(NetworkCmd::Ls) => Op::NetworkList,
        Cmd::Network(NetworkCmd::Inspect { name }) => Op::NetworkInspect { name },
        Cmd::Network(NetworkCmd::Rm { name, force }) => Op::NetworkRemove { name, force },
        Cmd::AddPort(a) => Op::PortAdd(PortAdd {
            network: a.network,
            netns: a.netns,
            ifname: a.ifname,
            mac: a.mac,
            ip: a.ip,
            mtu: a.mtu,
            name: a.name,
            dhcp: a.dhcp,
            aliases: a.alias,
            offload: Some(!a.no_offload),
            kind: Some(a.kind),
            xdp_mode: a.xdp_mode,
            ring_size: a.ring_size,
            frame_size: a.frame_size,
            publish: a.publish,
            port_security: a.no_port_security.then_some(false),
            owner: None,
            handoff: false,
        }),
        Cmd::Publish(PublishCmd::Add { port, spec }) => Op::PublishAdd { port, spec },
        Cmd::Publish(PublishCmd::Rm { port, spec }) => Op::PublishRemove { port, spec },
        Cmd::Publish(PublishCmd::Ls) => Op::PublishList,
        Cmd::Events => Op::Events,
        Cmd::Capture(c) => Op::Capture(CaptureReq {
            port: c.port,
            direction: Some(c.direction),
            count: c.count,
            snaplen: c.snaplen,
            rewritten: c.rewritten,
        }),
        Cmd::Trace(t) => Op::Trace {
            port: t.port,
            flow: t.flow,
            hex: t.hex,
        },
        Cmd::DelPort { port } => Op::PortDelete { name: port },
        Cmd::Show => Op::Show,
        Cmd::Fdb(FdbCmd::Show { network }) => Op::FdbShow { network },
        Cmd::Fdb(FdbCmd::Add {
            network,
            mac,
            vtep,
            ip,
        }) => Op::FdbAdd {
            network,
            mac,
            vtep,
            ip,
        },
        Cmd::Fdb(FdbCmd::Del { network, mac }) => Op::FdbDel { network, mac },
        Cmd::Port(PortCmd::Stats { port }) => Op::PortStats { port },
        Cmd::Arp(ArpCmd::Show { network }) => Op::ArpShow { network },
        Cmd::Dhcp(DhcpCmd::Leases { network }) => Op::DhcpLeases { network },
        Cmd::Uplink(UplinkCmd::Set {
            iface,
            mode,
            ip,
            gateway,
            nat_ports,
            conntrack_max,
            conntrack_per_source,
            xdp_mode,
            uplink_type,
        }) => Op::UplinkSet(UplinkSet {
            iface,
            mode: Some(mode),
            ip,
            gateway,
            nat_ports,
            conntrack_max,
            conntrack_per_source,
            xdp_mode,
            socket: uplink_type,
        }),
        Cmd::Uplink(UplinkCmd::Show) => Op::UplinkShow,
        Cmd::Uplink(UplinkCmd::Rm) => Op::UplinkRemove,
        Cmd::Conntrack(ConntrackCmd::Show { network }) => Op::ConntrackShow { network },
        Cmd::Conntrack(ConntrackCmd::Stats) => Op::ConntrackStats,
        Cmd::Conntrack(ConntrackCmd::Flush { network }) => Op::ConntrackFlush { network },
        Cmd::Network(NetworkCmd::Connect {
            network,
            container,
            ip,
            aliases,
        }) => Op::NetworkConnect(NetworkConnect {
            network,
            container,
            ip,
            aliases,
        }),
        Cmd::Network(NetworkCmd::Disconnect { network, container }) => {
            Op::NetworkDisconnect { network, container }
        }
        Cmd::Container(ContainerCmd::Create {
            name,
            networks,
            ip,
            mac,
            aliases,
            hostname,
            links,
            dns,
            kind,
            publish,
        }) => Op::ContainerCreate(ContainerCreate {
            name,
            networks,
            ip,
            mac,
            aliases,
            hostname,
            links,
            dns,
            kind,
            publish,
        }),
        Cmd::Container(ContainerCmd::Ls) => Op::ContainerList,
        Cmd::Container(ContainerCmd::Inspect { name }) => Op::ContainerInspect { name },
        Cmd::Container(ContainerCmd::Rm { name, force }) => Op::ContainerRemove { name, force },
        // Handled in main: it runs here, not in the daemon.
        Cmd::Container(ContainerCmd::Exec { name, .. }) => Op::ContainerInspect { name },
    }
}

/// Left-aligned columns.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(&format!("{c:<w$}  "));
            }
        }
        s.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn print_network(n: &NetworkInfo) {
    println!("network {}", n.name);
    println!("  driver:     {}", n.driver);
    println!("  subnet:     {}", n.subnet);
    println!("  gateway:    {}", n.gateway);
    println!("  mac aging:  {}s", n.mac_aging_secs);
    println!("  fdb limit:  {}", n.fdb_limit);
    println!("  port macs:  {}", n.port_mac_limit);
    println!(
        "  gw rate:    {}",
        match n.gateway_rate {
            0 => "no limit".to_string(),
            r => format!("{r}/s a port"),
        }
    );
    if let Some(vni) = n.vni {
        println!("  vni:        {vni}");
        println!("  peers:      {}", n.peers.join(" "));
        if n.encrypted {
            println!("  encrypted:  WireGuard");
        }
    }
    println!(
        "  ports:      {}",
        if n.ports.is_empty() {
            "-".into()
        } else {
            n.ports.join(", ")
        }
    );
}

fn print_port(p: &PortInfo, indent: &str) {
    let status = match &p.detail {
        Some(d) => format!("{} ({d})", p.status),
        None => p.status.clone(),
    };
    println!("{indent}port {}: {}", p.name, status);
    println!(
        "{indent}    type: {}{}  netns: {}  interface: {}",
        p.kind,
        if p.offload || p.kind != "tap" {
            ""
        } else {
            " (no offload)"
        },
        p.netns,
        p.ifname
    );
    println!(
        "{indent}    mac: {}  ip: {}  mtu: {}",
        p.mac,
        p.ip.as_deref().unwrap_or("-"),
        p.mtu
    );
    if !p.publish.is_empty() {
        println!("{indent}    publish: {}", p.publish.join(" "));
    }
    if let Some(h) = &p.host_ifname {
        match &p.xdp {
            Some(x) => println!(
                "{indent}    afxdp: veth {h}  mode: {}  rings: {}  frame: {}  chunk: {}  frames: {} ({} rx-in-kernel of fill target {}, {} free, {} tx-in-flight, {} lost)",
                x.mode, x.ring_size, x.frame_size, x.chunk, x.frames, x.rx_frames_in_kernel, x.fill_target, x.frames_free, x.tx_frames_in_flight, x.frames_lost
            ),
            None => println!("{indent}    afxdp: veth {h}"),
        }
    }
}

fn print_container(c: &ContainerInfo) {
    println!("container {}", c.name);
    println!("  mode:      {}", c.mode);
    println!(
        "  netns:     {} ({})",
        c.netns.as_deref().unwrap_or("(the host's)"),
        c.netns_path
    );
    println!("  hostname:  {}", c.hostname);
    for n in &c.networks {
        println!(
            "  network {}: {} ip {} mac {} gateway {} port {} ({}){}",
            n.network,
            n.ifname,
            n.ip.as_deref().unwrap_or("-"),
            n.mac,
            n.gateway,
            n.port,
            n.status,
            if n.aliases.is_empty() {
                String::new()
            } else {
                format!(" aliases {}", n.aliases.join(","))
            }
        );
    }
    let list = |v: &[String]| {
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(" ")
        }
    };
    println!("  dns:       {}", list(&c.dns_servers));
    println!("  links:     {}", list(&c.links));
    if !c.joined_by.is_empty() {
        println!("  joined by: {}", list(&c.joined_by));
    }
    println!("  ports:     {}", list(&c.ports));
}

fn print_trace(t: &TraceInfo) {
    println!("Flow: {}", t.flow);
    let at = match &t.network {
        Some(n) => format!(" on network {n}"),
        None => String::new(),
    };
    println!("Port: {}{at}", t.port);
    println!();
    for s in &t.steps {
        let mut line = format!("  {:<14} {:<9} {}", s.stage, s.verdict, s.detail);
        if let Some(p) = &s.port {
            line.push_str(&format!(" [{p}]"));
        }
        if let Some(n) = s.network.as_ref().filter(|_| s.stage != "ingress") {
            line.push_str(&format!(" (network {n})"));
        }
        println!("{}", line.trim_end());
    }
    println!();
    if let Some(r) = &t.rewritten {
        println!("Rewritten: {r}");
    }
    if let Some(r) = &t.reply {
        println!("Reply to {}: {r}", t.port);
    }
    for e in &t.emitted {
        println!("Sent by the switch on {}: {}", e.port, e.frame);
    }
    for e in &t.events {
        println!("Control plane: {e}");
    }
    match (&t.drop, t.outputs.is_empty()) {
        (Some(d), _) => println!("Final: dropped ({d})"),
        (None, true) if t.reply.is_some() => println!("Final: answered by the switch"),
        (None, true) => println!("Final: consumed by the switch"),
        (None, false) => {
            let outs: Vec<String> = t
                .outputs
                .iter()
                .map(|o| match &o.vxlan {
                    Some(v) => format!("{} ({v})", o.port),
                    None => o.port.clone(),
                })
                .collect();
            let how = if t.flooded { "flooded to" } else { "output to" };
            println!("Final: {how} {}", outs.join(", "));
        }
    }
}

/// Is `cmd` something exec can run (a path to an executable file, or a name found in PATH)?
fn runnable(cmd: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let ok = |p: &std::path::Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if cmd.contains('/') {
        return ok(std::path::Path::new(cmd));
    }
    std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).any(|d| ok(&d.join(cmd))))
        .unwrap_or(false)
}

/// `container exec`: enters the container's namespace as `ip netns exec` does (which also
/// bind-mounts its /etc/netns files over /etc), or, in host mode, vswitchd's namespace.
fn container_exec(c: &ContainerInfo, cmd: &[String]) -> ExitCode {
    use std::os::unix::process::CommandExt;
    if !runnable(&cmd[0]) {
        eprintln!(
            "vswitchctl: cannot run {:?} in container {}: no such command (not an executable file, nor found in PATH)",
            cmd[0], c.name
        );
        return ExitCode::from(127);
    }
    let mut command = match &c.netns {
        Some(ns) => {
            let mut x = std::process::Command::new("ip");
            x.args(["netns", "exec", ns]).args(cmd);
            x
        }
        None => {
            let own = std::fs::metadata("/proc/self/ns/net").map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            });
            let theirs = std::fs::metadata(&c.netns_path).map(|m| {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            });
            match (own, theirs) {
                (Ok(a), Ok(b)) if a == b => {
                    let mut x = std::process::Command::new(&cmd[0]);
                    x.args(&cmd[1..]);
                    x
                }
                _ => {
                    let mut x = std::process::Command::new("nsenter");
                    x.arg(format!("--net={}", c.netns_path)).arg("--").args(cmd);
                    x
                }
            }
        }
    };
    let err = command.exec();
    eprintln!("vswitchctl: cannot run {:?}: {err}", cmd[0]);
    ExitCode::from(126)
}

fn print_human(reply: &Reply) {
    match reply {
        Reply::Done => {}
        Reply::Network(n) => print_network(n),
        Reply::Port(p) => print_port(p, ""),
        Reply::Networks(ns) => {
            let rows: Vec<Vec<String>> = ns
                .iter()
                .map(|n| {
                    vec![
                        n.name.clone(),
                        n.driver.clone(),
                        n.subnet.clone(),
                        n.gateway.clone(),
                        n.ports.len().to_string(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["NAME", "DRIVER", "SUBNET", "GATEWAY", "PORTS"], &rows)
            );
        }
        Reply::Show(s) => {
            let d = &s.daemon;
            println!(
                "vswitchd {} (protocol {}) pid {}, up {}s, socket {}, state {}",
                d.version, d.protocol, d.pid, d.uptime_secs, d.socket, d.state_dir
            );
            println!(
                "  dataplane: TAP frames {}",
                if d.io_uring {
                    format!(
                        "batched through io_uring ({} read batches)",
                        d.io_uring_read_batches
                    )
                } else {
                    "moved with read/write, one per frame (io_uring off or unavailable)".into()
                }
            );
            let pool = &d.afxdp_pool;
            if !pool.chunks.is_empty() {
                println!(
                    "  afxdp frames: {} in {} chunk(s) ({} MiB), {} free; chunks of {}, at most {}",
                    pool.frames,
                    pool.chunks.len(),
                    pool.bytes >> 20,
                    pool.free,
                    pool.chunk_frames,
                    pool.max_frames
                );
                for c in &pool.chunks {
                    println!(
                        "    chunk {}: {} frames of {} bytes, {} free, {} held by {} port(s) (reserve {})",
                        c.chunk, c.frames, c.frame_size, c.free, c.held, c.ports, c.reserved
                    );
                }
            }
            if let Some(dns) = &d.dns {
                let from = match &dns.resolv_conf {
                    Some(p) => format!("from {p}"),
                    None => "configured".into(),
                };
                let to = if dns.upstreams.is_empty() {
                    "none (other names get SERVFAIL)".to_string()
                } else {
                    dns.upstreams.join(" ")
                };
                println!(
                    "  dns upstreams ({from}): {to}; forwarded {} answered {} servfail {} dropped {}",
                    dns.forwarded, dns.answered, dns.servfail, dns.dropped
                );
            }
            if d.ports_lost > 0 {
                println!(
                    "  {} port(s) lost their interface or namespace since start",
                    d.ports_lost
                );
            }
            for n in &s.networks {
                println!(
                    "  network {} ({}): subnet {} gateway {}",
                    n.name, n.driver, n.subnet, n.gateway
                );
                for p in s.ports.iter().filter(|p| p.network == n.name) {
                    print_port(p, "      ");
                }
            }
        }
        Reply::Fdb(tables) => {
            for t in tables {
                println!(
                    "network {}: {} of {} entries, aging {}s (learned {}, moved {}, evicted {}, expired {})",
                    t.network,
                    t.entries.len(),
                    t.limit,
                    t.mac_aging_secs,
                    t.counters.learned,
                    t.counters.moved,
                    t.counters.evicted,
                    t.counters.expired
                );
                let rows: Vec<Vec<String>> = t
                    .entries
                    .iter()
                    .map(|e| {
                        vec![
                            e.port.clone(),
                            e.mac.clone(),
                            if e.is_static {
                                "static".into()
                            } else {
                                format!("{:.0}", e.age_secs)
                            },
                            e.vtep.clone().unwrap_or_else(|| "-".into()),
                            e.ip.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print!(
                    "{}",
                    table(
                        &["  PORT", "MAC", "AGE", "VTEP", "IP"],
                        &rows
                            .iter()
                            .map(|r| {
                                let mut r = r.clone();
                                r[0] = format!("  {}", r[0]);
                                r
                            })
                            .collect::<Vec<_>>()
                    )
                );
            }
        }
        Reply::Arp(tables) => {
            for t in tables {
                let c = &t.counters;
                println!(
                    "network {}: gateway {} at {}, ARP suppression {} (replies {}, suppressed {}, ICMP {}, DHCP {}/{}, DNS {}/{})",
                    t.network,
                    t.gateway,
                    t.gateway_mac,
                    if t.arp_suppress { "on" } else { "off" },
                    c.arp_replies,
                    c.arp_suppressed,
                    c.icmp_replies,
                    c.dhcp_replies,
                    c.dhcp_requests,
                    c.dns_replies,
                    c.dns_queries
                );
                let rows: Vec<Vec<String>> = t
                    .neighbors
                    .iter()
                    .map(|n| {
                        vec![
                            format!("  {}", n.ip),
                            n.mac.clone(),
                            n.port.clone(),
                            n.kind.clone(),
                        ]
                    })
                    .collect();
                print!("{}", table(&["  ADDRESS", "MAC", "PORT", "KIND"], &rows));
            }
        }
        Reply::Uplink(None) => println!("no uplink"),
        Reply::Uplink(Some(u)) => {
            println!(
                "uplink {} ({}, {}): {} mac {} mtu {}{}",
                u.iface,
                u.mode,
                u.status,
                u.ip,
                u.mac,
                u.mtu,
                if u.xdp_mode.is_empty() {
                    String::new()
                } else {
                    format!(", xdp {}", u.xdp_mode)
                }
            );
            println!(
                "  gateway {}, NAT ports {}",
                u.gateway.as_deref().unwrap_or("-"),
                u.nat_ports
            );
            println!(
                "  conntrack: {} of {} entries; {}",
                u.conntrack.entries,
                u.conntrack.max,
                serde_json::to_string(&u.conntrack.counters).unwrap_or_default()
            );
            println!(
                "  counters: {}",
                serde_json::to_string(&u.counters).unwrap_or_default()
            );
            for (ip, mac, age) in &u.neighbors {
                println!("  neighbour {ip} at {mac} ({age}s)");
            }
        }
        Reply::Conntrack(rows) => {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    vec![
                        r.network.clone(),
                        r.proto.clone(),
                        format!("{}:{}", r.src, r.sport),
                        format!("{}:{}", r.dst, r.dport),
                        r.nat_port.to_string(),
                        r.kind.clone(),
                        r.state.clone(),
                        format!("{}s", r.expires_in_secs),
                        format!("{}/{}", r.packets_out, r.packets_in),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "NETWORK",
                        "PROTO",
                        "SOURCE",
                        "DESTINATION",
                        "NAT PORT",
                        "KIND",
                        "STATE",
                        "EXPIRES",
                        "PACKETS OUT/IN"
                    ],
                    &rows
                )
            );
        }
        Reply::ConntrackStats(s) => {
            println!("entries {} of {}", s.entries, s.max);
            println!("{}", serde_json::to_string(&s.counters).unwrap_or_default());
        }
        Reply::Flushed(n) => println!("{n} flows removed"),
        Reply::Trace(t) => print_trace(t),
        Reply::CaptureStarted(_)
        | Reply::CaptureFrame(_)
        | Reply::CaptureEnd(_)
        | Reply::EventsStarted
        | Reply::Event(_) => {}
        Reply::Published(rows) => {
            let rows: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    let host = match r.host_port_end {
                        e if e == r.host_port => r.host_port.to_string(),
                        e => format!("{}-{e}", r.host_port),
                    };
                    let end = r.container_port + (r.host_port_end - r.host_port);
                    let cont = match end {
                        e if e == r.container_port => r.container_port.to_string(),
                        e => format!("{}-{e}", r.container_port),
                    };
                    vec![
                        r.port.clone(),
                        r.network.clone(),
                        r.proto.clone(),
                        format!("{}:{host}", r.host_ip.as_deref().unwrap_or("*")),
                        format!("{}:{cont}", r.container_ip.as_deref().unwrap_or("-")),
                        r.status.clone(),
                        if r.relay == "listening" {
                            format!("{} ({} active)", r.relay, r.relay_active)
                        } else {
                            r.relay.clone()
                        },
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &[
                        "PORT",
                        "NETWORK",
                        "PROTO",
                        "HOST",
                        "CONTAINER",
                        "STATUS",
                        "LOOPBACK RELAY"
                    ],
                    &rows
                )
            );
        }
        Reply::Container(c) => print_container(c),
        Reply::Cluster(c) if !c.configured => {
            println!("no cluster store: a single host (vswitchd --store etcd://HOST:PORT)")
        }
        Reply::Cluster(c) => {
            println!(
                "store {} prefix {}: node {}, {} for {}s, lease ttl {}s",
                c.store, c.prefix, c.node, c.status, c.status_secs, c.ttl_secs
            );
            let rows: Vec<Vec<String>> = c
                .nodes
                .iter()
                .map(|n| {
                    vec![
                        format!("{}{}", n.name, if n.local { " *" } else { "" }),
                        n.vtep.clone().unwrap_or_else(|| "-".into()),
                        n.health.clone(),
                        n.endpoints.to_string(),
                        n.version.clone(),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(&["NODE", "VTEP", "HEALTH", "ENDPOINTS", "VERSION"], &rows)
            );
        }
        Reply::Vtep(None) => println!("no VTEP"),
        Reply::Vtep(Some(v)) => {
            println!(
                "vtep {}:{} ttl {} ({}): rx {} datagrams, {} bytes; tx batching {}",
                v.local_ip, v.port, v.ttl, v.status, v.rx_packets, v.rx_bytes, v.tx_batching
            );
            let drops: Vec<String> = v.drops.iter().map(|(r, n)| format!("{r}={n}")).collect();
            println!("  drops: {}", drops.join(" "));
            for (n, vni, peers) in &v.networks {
                println!("  network {n} vni {vni}: peers {}", peers.join(" "));
            }
            if !v.public_key.is_empty() {
                println!(
                    "  wireguard port {}, tunnel address {}, public key {}",
                    v.wg_port, v.tunnel_ip, v.public_key
                );
            }
            for p in &v.wg_peers {
                println!(
                    "  wireguard peer {} at {} key {}: handshake {}, tx {} queued {} rx {} bad {}",
                    p.tunnel_ip,
                    p.endpoint,
                    p.public_key,
                    p.handshake_age_secs
                        .map_or("none yet".to_string(), |s| format!("{s}s ago")),
                    p.tx_messages,
                    p.queued,
                    p.rx_packets,
                    p.rx_bad
                );
            }
        }
        Reply::Containers(cs) => {
            let rows: Vec<Vec<String>> = cs
                .iter()
                .map(|c| {
                    let addrs: Vec<String> = c
                        .networks
                        .iter()
                        .map(|n| format!("{}={}", n.network, n.ip.as_deref().unwrap_or("-")))
                        .collect();
                    vec![
                        c.name.clone(),
                        c.mode.clone(),
                        c.netns.clone().unwrap_or_else(|| "(host)".into()),
                        if addrs.is_empty() {
                            "-".into()
                        } else {
                            addrs.join(" ")
                        },
                    ]
                })
                .collect();
            print!("{}", table(&["NAME", "MODE", "NETNS", "ADDRESSES"], &rows));
        }
        Reply::Leases(leases) => {
            let rows: Vec<Vec<String>> = leases
                .iter()
                .map(|l| {
                    vec![
                        l.network.clone(),
                        l.ip.clone(),
                        l.mac.clone(),
                        l.hostname.clone().unwrap_or_else(|| "-".into()),
                        l.port.clone().unwrap_or_else(|| "-".into()),
                        format!("{}s", l.expires_in_secs),
                    ]
                })
                .collect();
            print!(
                "{}",
                table(
                    &["NETWORK", "ADDRESS", "MAC", "HOSTNAME", "PORT", "EXPIRES"],
                    &rows
                )
            );
        }
        Reply::Stats(stats) => {
            for s in stats {
                println!("port {} (network {}, {}):", s.port, s.network, s.status);
                println!("  rx: {} packets, {} bytes", s.rx_packets, s.rx_bytes);
                println!("  tx: {} packets, {} bytes", s.tx_packets, s.tx_bytes);
                let drops: Vec<String> = s
                    .drops
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(r, n)| format!("{r}={n}"))
                    .collect();
                println!(
                    "  drops: {}",
                    if drops.is_empty() {
                        "none".into()
                    } else {
                        drops.join(" ")
                    }
                );
            }
        }
    }
}

/// Frame `index` (from 1) of a pcap file with Ethernet frames, as hex.
fn pcap_frame_hex(path: &std::path::Path, index: usize) -> Result<String, String> {
    let data = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let bad = |why: &str| Err(format!("{}: {why}", path.display()));
    if data.len() < 24 {
        return bad("too short for a pcap file");
    }
    let magic = [data[0], data[1], data[2], data[3]];
    let le = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        [0x0a, 0x0d, 0x0d, 0x0a] => {
            return bad("a pcapng file: `tcpdump -r FILE -w OUT.pcap` makes a pcap of it")
        }
        _ => return bad("not a pcap file"),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    if u32_at(20) != Some(1) {
        return bad("its link type is not Ethernet");
    }
    if index == 0 {
        return bad("frames count from 1");
    }
    let mut at = 24;
    for n in 1.. {
        let Some(len) = u32_at(at + 8) else {
            return bad(&format!("it has {} frames, not {index}", n - 1));
        };
        let frame = data
            .get(at + 16..at + 16 + len as usize)
            .ok_or_else(|| format!("{}: frame {n} is cut short", path.display()))?;
        if n == index {
            return Ok(frame.iter().map(|b| format!("{b:02x}")).collect());
        }
        at += 16 + len as usize;
    }
    unreachable!()
}

/// `capture`: streams the frames vswitchd sends, as lines, JSON lines or a pcap; a summary of
/// what was captured and left out goes to stderr at the end (or at Ctrl-C).
fn capture(socket: &std::path::Path, args: CaptureArgs, json: bool) -> ExitCode {
    use std::io::Write;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("vswitchctl: {e}");
        ExitCode::FAILURE
    };
    let write = args.write.clone();
    let mut client = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let info = match client.call(op_of(Cmd::Capture(args))) {
        Ok(Reply::CaptureStarted(i)) => i,
        Ok(_) => return fail(&"vswitchd answered capture with something else"),
        Err(e) => {
            if let (true, ClientError::Api(api)) = (json, &e) {
                if let Ok(s) = serde_json::to_string_pretty(&Response::Error(api.clone())) {
                    println!("{s}");
                }
            }
            return fail(&e);
        }
    };
    let mut out: Box<dyn Write> = match write.as_deref() {
        None => Box::new(std::io::stdout().lock()),
        Some(p) if p.as_os_str() == "-" => Box::new(std::io::stdout().lock()),
        Some(p) => match std::fs::File::create(p) {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => return fail(&format!("{}: {e}", p.display())),
        },
    };
    let pcap = write.is_some();
    if pcap {
        let mut h = Vec::with_capacity(24);
        h.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        h.extend_from_slice(&2u16.to_le_bytes());
        h.extend_from_slice(&4u16.to_le_bytes());
        h.extend_from_slice(&[0; 8]);
        h.extend_from_slice(&info.snaplen.to_le_bytes());
        h.extend_from_slice(&1u32.to_le_bytes()); // LINKTYPE_ETHERNET
        if let Err(e) = out.write_all(&h).and_then(|()| out.flush()) {
            return fail(&e);
        }
    } else if !json {
        eprintln!(
            "vswitchctl: capturing on {} ({}{}), Ctrl-C to stop",
            info.port,
            info.direction,
            if info.rewritten {
                ", received frames as rewritten"
            } else {
                ""
            }
        );
    }
    let (mut frames, mut dropped) = (0u64, 0u64);
    let summary = |frames: u64, dropped: u64, why: &str| {
        eprintln!(
            "vswitchctl: {frames} frame(s) captured, {dropped} left out by the switch (the capture did not keep up){why}"
        );
    };
    loop {
        if stop.load(Ordering::Relaxed) {
            summary(frames, dropped, ", stopped");
            return ExitCode::SUCCESS;
        }
        let reply = match client.next_reply(Some(std::time::Duration::from_millis(250))) {
            Ok(r) => r,
            Err(ClientError::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return fail(&e),
        };
        let written = match reply {
            None => return fail(&"vswitchd closed the connection"),
            Some(Reply::CaptureFrame(f)) => {
                frames += 1;
                dropped = f.dropped;
                let data = vswitch::wire::flow::from_hex(&f.hex).unwrap_or_default();
                if pcap {
                    let mut r = Vec::with_capacity(16 + data.len());
                    r.extend_from_slice(&((f.ts_us / 1_000_000) as u32).to_le_bytes());
                    r.extend_from_slice(&((f.ts_us % 1_000_000) as u32).to_le_bytes());
                    r.extend_from_slice(&(data.len() as u32).to_le_bytes());
                    r.extend_from_slice(&f.len.to_le_bytes());
                    r.extend_from_slice(&data);
                    out.write_all(&r).and_then(|()| out.flush())
                } else if json {
                    let line = serde_json::to_string(&f).unwrap_or_default();
                    writeln!(out, "{line}").and_then(|()| out.flush())
                } else {
                    let secs = f.ts_us / 1_000_000;
                    writeln!(
                        out,
                        "{:02}:{:02}:{:02}.{:06} {:<3} {} bytes {}",
                        secs / 3600 % 24,
                        secs / 60 % 60,
                        secs % 60,
                        f.ts_us % 1_000_000,
                        f.dir,
                        f.len,
                        vswitch::wire::flow::describe(&data)
                    )
                    .and_then(|()| out.flush())
                }
            }
            Some(Reply::CaptureEnd(end)) => {
                if json && !pcap {
                    let line = serde_json::to_string(&end).unwrap_or_default();
                    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
                }
                let why = match end.reason.as_str() {
                    "count" => String::new(),
                    r => format!(", ended: {r}"),
                };
                summary(end.captured, end.dropped, &why);
                return ExitCode::SUCCESS;
            }
            Some(_) => return fail(&"vswitchd sent something else during a capture"),
        };
        if let Err(e) = written {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                // The reader (tcpdump, head) is done.
                return ExitCode::SUCCESS;
            }
            return fail(&e);
        }
    }
}

/// `2026-12-06T19:40:01.123456Z` from microseconds since the Unix epoch.
fn utc(ts_us: u64) -> String {
    let secs = ts_us / 1_000_000;
    let days = (secs / 86_400) as i64;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60,
        ts_us % 1_000_000
    )
}

/// `events`: prints the switch's events as they come, a line (or a JSON line) each.
fn events(socket: &std::path::Path, json: bool) -> ExitCode {
    use std::io::Write;
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("vswitchctl: {e}");
        ExitCode::FAILURE
    };
    let mut client = match Client::connect(socket) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    match client.call(Op::Events) {
        Ok(Reply::EventsStarted) => {}
        Ok(_) => return fail(&"vswitchd answered events with something else"),
        Err(e) => return fail(&e),
    }
    let mut out = std::io::stdout().lock();
    loop {
        let ev = match client.next_reply(None) {
            Ok(Some(Reply::Event(ev))) => ev,
            Ok(Some(_)) => return fail(&"vswitchd sent something else than an event"),
            Ok(None) => return fail(&"vswitchd closed the connection"),
            Err(e) => return fail(&e),
        };
        let line = if json {
            serde_json::to_string(&ev).unwrap_or_default()
        } else {
            let mut l = format!("{} {}", utc(ev.time_us), ev.kind);
            if let Some(p) = &ev.port {
                l.push_str(&format!(" port={p}"));
            }
            if let Some(n) = &ev.network {
                l.push_str(&format!(" network={n}"));
            }
            if !ev.detail.is_empty() {
                l.push_str(&format!(": {}", ev.detail));
            }
            if ev.missed > 0 {
                l.push_str(&format!(" ({} events missed before this one)", ev.missed));
            }
            l
        };
        if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
            return ExitCode::SUCCESS; // the reader went (`| head`)
        }
    }
}

/// `--version`: this vswitchctl's, and the daemon's when it answers.
fn version(socket: &std::path::Path, json: bool) -> ExitCode {
    let daemon = Client::connect(socket).and_then(|mut c| c.call(Op::Show));
    let daemon = match daemon {
        Ok(Reply::Show(s)) => Ok(s.daemon),
        Ok(_) => Err("vswitchd answered show with something else".to_string()),
        Err(e) => Err(e.to_string()),
    };
    let me = env!("CARGO_PKG_VERSION");
    if json {
        let d = match &daemon {
            Ok(d) => {
                serde_json::json!({"version": d.version, "protocol": d.protocol, "pid": d.pid, "socket": d.socket})
            }
            Err(e) => serde_json::json!({"error": e}),
        };
        let v = serde_json::json!({
            "vswitchctl": {"version": me, "protocol": PROTOCOL_VERSION},
            "vswitchd": d,
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        println!("vswitchctl {me} (control protocol {PROTOCOL_VERSION})");
        match daemon {
            Ok(d) => println!(
                "vswitchd {} (control protocol {}), pid {}, at {}",
                d.version, d.protocol, d.pid, d.socket
            ),
            Err(e) => println!("vswitchd: not reachable at {} ({e})", socket.display()),
        }
    }
    ExitCode::SUCCESS
}

/// The manual pages: vswitchctl.1 and one per command (`vswitchctl-network-create.1`).
fn man(dir: Option<PathBuf>) -> ExitCode {
    let cmd = Cli::command();
    let result = match dir {
        None => {
            let mut out = std::io::stdout().lock();
            render_man(&cmd, &mut out)
        }
        Some(d) => std::fs::create_dir_all(&d).and_then(|()| clap_mangen::generate_to(cmd, &d)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vswitchctl: man: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The root page, with every command (nested ones too) and what it does under COMMANDS.
fn render_man(cmd: &clap::Command, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    let page = clap_mangen::Man::new(cmd.clone());
    page.render_title(out)?;
    page.render_name_section(out)?;
    page.render_synopsis_section(out)?;
    page.render_description_section(out)?;
    page.render_options_section(out)?;
    writeln!(out, ".SH COMMANDS")?;
    fn walk(c: &clap::Command, path: &str, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        for sub in c.get_subcommands().filter(|s| !s.is_hide_set()) {
            let full = format!("{path} {}", sub.get_name());
            let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
            writeln!(
                out,
                ".TP
\\fB{}\\fR
{}",
                full.trim(),
                about.replace('\n', " ")
            )?;
            walk(sub, &full, out)?;
        }
        Ok(())
    }
    walk(cmd, "", out)?;
    page.render_version_section(out)?;
    page.render_authors_section(out)
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    let json = cli.json;
    if cli.version {
        return version(&cli.socket, json);
    }
    let Some(cmd) = cli.cmd.take() else {
        let _ = Cli::command().print_help();
        return ExitCode::from(2);
    };
    let mut cmd = match cmd {
        Cmd::Completion { shell } => {
            // Into a buffer first: clap_complete panics on a write error (`| head`).
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "vswitchctl", &mut buf);
            use std::io::Write;
            return match std::io::stdout().lock().write_all(&buf) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                    eprintln!("vswitchctl: {e}");
                    ExitCode::FAILURE
                }
                _ => ExitCode::SUCCESS,
            };
        }
        Cmd::Man { dir } => return man(dir),
        cmd => cmd,
    };
    let socket = cli.socket;
    if let Cmd::Events = &cmd {
        return events(&socket, json);
    }
    if let Cmd::Capture(_) = &cmd {
        let Cmd::Capture(args) = cmd else {
            unreachable!()
        };
        return capture(&socket, args, json);
    }
    if let Cmd::Trace(t) = &mut cmd {
        if let Some(file) = t.from_pcap.take() {
            match pcap_frame_hex(&file, t.index) {
                Ok(hex) => t.hex = Some(hex),
                Err(e) => {
                    eprintln!("vswitchctl: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if let Cmd::Container(ContainerCmd::Exec { name, cmd }) = &cmd {
        let info = Client::connect(&socket)
            .and_then(|mut c| c.call(Op::ContainerInspect { name: name.clone() }));
        return match info {
            Ok(Reply::Container(info)) => container_exec(&info, cmd),
            Ok(_) => {
                eprintln!("vswitchctl: vswitchd answered inspect with something else");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("vswitchctl: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let result = Client::connect(&socket).and_then(|mut c| c.call(op_of(cmd)));
    match result {
        Ok(reply) => {
            if json {
                // The reply's payload alone: `{"networks": [...]}` prints as `[...]`.
                let value = match serde_json::to_value(&reply) {
                    Ok(serde_json::Value::Object(mut m)) if m.len() == 1 => {
                        m.values_mut().next().map(|v| v.take()).unwrap_or_default()
                    }
                    Ok(_) => serde_json::json!({ "ok": true }),
                    Err(e) => {
                        eprintln!("vswitchctl: {e}");
                        return ExitCode::FAILURE;
                    }
                };
                match serde_json::to_string_pretty(&value) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("vswitchctl: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                print_human(&reply);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            if json {
                if let ClientError::Api(api) = &e {
                    if let Ok(s) = serde_json::to_string_pretty(&Response::Error(api.clone())) {
                        println!("{s}");
                    }
                }
            }
            eprintln!("vswitchctl: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            super::utc(1_796_585_441_123_456),
            "2026-12-06T19:30:41.123456Z"
        );
        assert_eq!(
            super::utc(951_782_400_000_001),
            "2000-02-29T00:00:00.000001Z"
        );
    }
}
