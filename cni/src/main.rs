//! `vswitch-cni`: a CNI plugin (spec 0.3.1 to 1.1.0) that attaches a container to a vswitchd
//! network. The runtime execs it with `CNI_COMMAND` and the network configuration on stdin;
//! it asks vswitchd over the control socket for a port in the container's namespace (a TAP
//! named `CNI_IFNAME`, addressed by the switch's IPAM) and prints the spec's result.
//!
//! The configuration's own keys: `network` (the vswitchd network, default: the config's
//! `name`), `socket` (default /run/vswitch/vswitchd.sock), `portType` ("tap" or "afxdp"),
//! `mtu`. `CNI_ARGS` may carry `IP=` and `MAC=` (podman's `--ip`, `--mac-address`); the `ips`,
//! `mac` and `portMappings` capabilities are honoured when the configuration declares them.
//! Every port it makes carries the owner `cni:CONTAINERID:IFNAME`, which is how DEL, CHECK
//! and GC find it again.

mod spec;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use vswitch::api::{
    self, ApiError, Client, ClientError, ErrorCode, NetworkInfo, Op, PortAdd, PortInfo, Reply,
};

use spec::{code, Attached, CniError, NetConf};

/// What the runtime passes in the environment.
struct Env {
    command: String,
    container_id: Option<String>,
    netns: Option<String>,
    ifname: Option<String>,
    args: Vec<(String, String)>,
}

impl Env {
    fn read() -> Env {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Env {
            command: var("CNI_COMMAND").unwrap_or_default(),
            container_id: var("CNI_CONTAINERID"),
            netns: var("CNI_NETNS"),
            ifname: var("CNI_IFNAME"),
            args: var("CNI_ARGS")
                .map(|a| {
                    a.split(';')
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| match kv.split_once('=') {
                            Some((k, v)) => (k.to_string(), v.to_string()),
                            None => (kv.to_string(), String::new()),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn require(&self, v: &Option<String>, name: &str) -> Result<String, CniError> {
        v.clone().ok_or_else(|| {
            CniError::new(
                code::INVALID_ENV,
                format!("{name} is not set (CNI_COMMAND {})", self.command),
            )
        })
    }

    fn arg(&self, k: &str) -> Option<&str> {
        self.args
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

fn main() {
    let env = Env::read();
    let mut stdin = Vec::new();
    // Empty or unreadable, the commands that need a configuration say so.
    let _ = std::io::stdin().read_to_end(&mut stdin);
    let out = run(&env, &stdin);
    let mut stdout = std::io::stdout().lock();
    match out {
        Ok(Some(v)) => {
            let _ = writeln!(stdout, "{v}");
        }
        Ok(None) => {}
        Err(mut e) => {
            if let Ok(c) = NetConf::parse(&stdin) {
                e.cni_version = c.cni_version;
            }
            let _ = writeln!(stdout, "{}", serde_json::to_string(&e).unwrap_or_default());
            let _ = stdout.flush();
            std::process::exit(1);
        }
    }
}

fn run(env: &Env, stdin: &[u8]) -> Result<Option<Value>, CniError> {
    match env.command.as_str() {
        "VERSION" => {
            let asked = serde_json::from_slice::<Value>(stdin)
                .ok()
                .and_then(|v| {
                    v.get("cniVersion")
                        .and_then(Value::as_str)
                        .map(String::from)
                })
                .filter(|v| spec::SUPPORTED.contains(&v.as_str()))
                .unwrap_or_else(|| spec::SUPPORTED[spec::SUPPORTED.len() - 1].into());
            Ok(Some(
                json!({"cniVersion": asked, "supportedVersions": spec::SUPPORTED}),
            ))
        }
        "ADD" => add(env, &NetConf::parse(stdin)?).map(Some),
        "DEL" => del(env, &NetConf::parse(stdin)?).map(|()| None),
        "CHECK" => check(env, &NetConf::parse(stdin)?).map(|()| None),
        "STATUS" => status(&NetConf::parse(stdin)?).map(|()| None),
        "GC" => gc(&NetConf::parse(stdin)?).map(|()| None),
        "" => Err(CniError::new(
            code::INVALID_ENV,
            "CNI_COMMAND is not set: vswitch-cni is a CNI plugin, run by a container runtime",
        )),
        other => Err(CniError::new(
            code::INVALID_ENV,
            format!("unknown CNI_COMMAND {other:?}"),
        )),
    }
}

fn socket(conf: &NetConf) -> PathBuf {
    PathBuf::from(conf.socket.as_deref().unwrap_or(api::DEFAULT_SOCKET))
}

fn network(conf: &NetConf) -> &str {
    conf.network.as_deref().unwrap_or(&conf.name)
}

fn connect(conf: &NetConf, unavailable: u32) -> Result<Client, CniError> {
    Client::connect(&socket(conf)).map_err(|e| CniError::new(unavailable, e.to_string()))
}

/// vswitchd's answer as a CNI error.
fn refused(e: ClientError) -> CniError {
    match e {
        ClientError::Api(ApiError { code: c, message }) => {
            let cni = match c {
                ErrorCode::NetworkNotFound => code::INVALID_CONFIG,
                ErrorCode::NetnsNotFound => code::UNKNOWN_CONTAINER,
                ErrorCode::Busy => code::TRY_AGAIN_LATER,
                _ => code::REFUSED,
            };
            let name = serde_json::to_value(c)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default();
            CniError::new(cni, message).details(format!("vswitchd error code {name}"))
        }
        ClientError::Connect { .. } => CniError::new(code::TRY_AGAIN_LATER, e.to_string()),
        other => CniError::new(code::IO_FAILURE, other.to_string()),
    }
}

fn owner(container_id: &str, ifname: &str) -> String {
    format!("cni:{container_id}:{ifname}")
}

/// The port's name: `cni-`, up to 40 characters of the container ID and the interface name,
/// in the characters port names allow (the owner label, not the name, identifies it).
fn port_name(container_id: &str, ifname: &str) -> String {
    let clean = |s: &str, n: usize| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                    c
                } else {
                    '_'
                }
            })
            .take(n)
            .collect()
    };
    format!("cni-{}-{}", clean(container_id, 40), clean(ifname, 15))
}

fn ports(c: &mut Client) -> Result<Vec<PortInfo>, CniError> {
    match c.call(Op::Show).map_err(refused)? {
        Reply::Show(s) => Ok(s.ports),
        other => Err(unexpected(other)),
    }
}

fn network_info(c: &mut Client, name: &str) -> Result<NetworkInfo, CniError> {
    match c
        .call(Op::NetworkInspect { name: name.into() })
        .map_err(refused)?
    {
        Reply::Network(n) => Ok(n),
        other => Err(unexpected(other)),
    }
}

fn unexpected(r: Reply) -> CniError {
    CniError::new(
        code::IO_FAILURE,
        format!("vswitchd sent an unexpected reply: {r:?}"),
    )
}

fn find_port(c: &mut Client, owner: &str) -> Result<Option<PortInfo>, CniError> {
    Ok(ports(c)?
        .into_iter()
        .find(|p| p.owner.as_deref() == Some(owner)))
}

fn add(env: &Env, conf: &NetConf) -> Result<Value, CniError> {
    let id = env.require(&env.container_id, "CNI_CONTAINERID")?;
    let netns = env.require(&env.netns, "CNI_NETNS")?;
    let ifname = env.require(&env.ifname, "CNI_IFNAME")?;
    if !Path::new(&netns).exists() {
        return Err(CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("network namespace {netns} does not exist"),
        ));
    }
    let ignore_unknown = env
        .arg("IgnoreUnknown")
        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    for (k, _) in &env.args {
        let known = matches!(k.as_str(), "IP" | "MAC" | "IgnoreUnknown") || k.starts_with("K8S_");
        if !known && !ignore_unknown {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!("unknown CNI_ARGS key {k:?} (set IgnoreUnknown=1 to pass it)"),
            ));
        }
    }
    let rc = &conf.runtime_config;
    let ip = env
        .arg("IP")
        .map(String::from)
        .or_else(|| rc.ips.first().cloned());
    let mac = env.arg("MAC").map(String::from).or_else(|| rc.mac.clone());
    let mut publish = Vec::new();
    for m in &rc.port_mappings {
        let proto = m.protocol.as_deref().unwrap_or("tcp").to_ascii_lowercase();
        let host = match m.host_ip.as_deref() {
            Some(h) if !h.is_empty() && h != "0.0.0.0" => format!("{h}:"),
            _ => String::new(),
        };
        publish.push(format!(
            "{host}{}:{}/{proto}",
            m.host_port, m.container_port
        ));
    }
    // DNS names: the runtime's name for the container (podman passes K8S_POD_NAME) and the
    // aliases it gives for this network; names the switch's DNS cannot serve are left out.
    let mut aliases: Vec<String> = env
        .arg("K8S_POD_NAME")
        .map(String::from)
        .into_iter()
        .collect();
    aliases.extend(rc.aliases.get(&conf.name).into_iter().flatten().cloned());
    let mut aliases: Vec<String> = aliases
        .into_iter()
        .map(|a| a.to_ascii_lowercase())
        .filter(|a| spec::valid_dns_name(a))
        .collect();
    aliases.sort();
    aliases.dedup();
    let net = network(conf);
    let mut c = connect(conf, code::TRY_AGAIN_LATER)?;
    let info = network_info(&mut c, net)?;
    let owner = owner(&id, &ifname);
    let req = PortAdd {
        network: net.into(),
        netns: netns.clone(),
        ifname: Some(ifname.clone()),
        mac,
        ip,
        mtu: conf.mtu,
        name: Some(port_name(&id, &ifname)),
        kind: conf.port_type.clone(),
        aliases,
        publish,
        owner: Some(owner.clone()),
        ..PortAdd::default()
    };
    let port = match c.call(Op::PortAdd(req)) {
        Ok(Reply::Port(p)) => p,
        Ok(other) => return Err(unexpected(other)),
        // A repeated ADD of the same attachment (a runtime's retry) gets the same result.
        Err(ClientError::Api(e)) if e.code == ErrorCode::PortExists => {
            match find_port(&mut c, &owner)? {
                Some(p) if p.netns == netns && p.network == net => p,
                _ => return Err(refused(ClientError::Api(e))),
            }
        }
        Err(e) => return Err(refused(e)),
    };
    Ok(spec::result(
        &conf.cni_version,
        &Attached {
            ifname: &port.ifname,
            mac: &port.mac,
            sandbox: &netns,
            mtu: port.mtu,
            ip: port.ip.as_deref(),
            gateway: &info.gateway,
            dns: info
                .dns
                .then_some((info.gateway.as_str(), info.domain.as_str())),
        },
        conf.prev_result.as_ref(),
    ))
}

/// Removes the attachment's port. Idempotent: nothing to remove, a stopped or missing
/// namespace, or a network already gone are all success.
fn del(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    let id = env.require(&env.container_id, "CNI_CONTAINERID")?;
    let ifname = env.require(&env.ifname, "CNI_IFNAME")?;
    let mut c = connect(conf, code::TRY_AGAIN_LATER)?;
    let Some(port) = find_port(&mut c, &owner(&id, &ifname))? else {
        return Ok(());
    };
    match c.call(Op::PortDelete { name: port.name }) {
        Ok(_) => Ok(()),
        Err(ClientError::Api(e)) if e.code == ErrorCode::PortNotFound => Ok(()),
        Err(e) => Err(refused(e)),
    }
}

/// The attachment is as ADD left it: the port exists, is up, in that namespace, with the
/// address and MAC of the previous result.
fn check(env: &Env, conf: &NetConf) -> Result<(), CniError> {
    if !conf.at_least((0, 4, 0)) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CHECK needs CNI version 0.4.0 or later, not {}",
                conf.cni_version
            ),
        ));
    }
    let id = env.require(&env.container_id, "CNI_CONTAINERID")?;
    let netns = env.require(&env.netns, "CNI_NETNS")?;
    let ifname = env.require(&env.ifname, "CNI_IFNAME")?;
    let prev = conf
        .prev_result
        .as_ref()
        .ok_or_else(|| CniError::new(code::INVALID_CONFIG, "CHECK needs the prevResult of ADD"))?;
    let mut c = connect(conf, code::TRY_AGAIN_LATER)?;
    let port = find_port(&mut c, &owner(&id, &ifname))?.ok_or_else(|| {
        CniError::new(
            code::UNKNOWN_CONTAINER,
            format!("vswitchd has no port for container {id} interface {ifname}"),
        )
    })?;
    let fail = |msg: String| Err(CniError::new(code::REFUSED, msg));
    if port.netns != netns {
        return fail(format!(
            "port {} is in {}, not {netns}",
            port.name, port.netns
        ));
    }
    if port.network != network(conf) {
        return fail(format!("port {} is on network {}", port.name, port.network));
    }
    if port.status != "up" {
        return fail(format!(
            "port {} is {}{}",
            port.name,
            port.status,
            port.detail.map(|d| format!(": {d}")).unwrap_or_default()
        ));
    }
    let ifaces = prev["interfaces"].as_array().cloned().unwrap_or_default();
    let Some(index) = ifaces
        .iter()
        .position(|i| i["name"] == ifname.as_str() && i["sandbox"] == netns.as_str())
    else {
        return fail(format!("prevResult has no interface {ifname} in {netns}"));
    };
    if !ifaces[index]["mac"]
        .as_str()
        .is_some_and(|m| m.eq_ignore_ascii_case(&port.mac))
    {
        return fail(format!(
            "interface {ifname} has MAC {}, prevResult says {}",
            port.mac, ifaces[index]["mac"]
        ));
    }
    if let Some(ip) = &port.ip {
        let listed = prev["ips"].as_array().is_some_and(|ips| {
            ips.iter()
                .any(|e| e["address"] == ip.as_str() && e["interface"] == index)
        });
        if !listed {
            return fail(format!("address {ip} of {ifname} is not in prevResult"));
        }
    }
    Ok(())
}

/// Ready to serve ADD: vswitchd answers and has the network.
fn status(conf: &NetConf) -> Result<(), CniError> {
    if !conf.at_least((1, 1, 0)) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "STATUS needs CNI version 1.1.0",
        ));
    }
    let mut c = connect(conf, code::NOT_AVAILABLE)?;
    network_info(&mut c, network(conf))
        .map(|_| ())
        .map_err(|e| {
            CniError::new(code::NOT_AVAILABLE, e.msg).details(e.details.unwrap_or_default())
        })
}

/// Removes this network's CNI ports that are not among the runtime's valid attachments.
fn gc(conf: &NetConf) -> Result<(), CniError> {
    if !conf.at_least((1, 1, 0)) {
        return Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            "GC needs CNI version 1.1.0",
        ));
    }
    let valid: Vec<String> = conf
        .valid_attachments
        .iter()
        .flatten()
        .map(|a| owner(&a.container_id, &a.ifname))
        .collect();
    let mut c = connect(conf, code::TRY_AGAIN_LATER)?;
    let net = network(conf);
    for p in ports(&mut c)? {
        let Some(o) = &p.owner else { continue };
        if p.network != net || !o.starts_with("cni:") || valid.contains(o) {
            continue;
        }
        match c.call(Op::PortDelete { name: p.name }) {
            Ok(_) => {}
            Err(ClientError::Api(e)) if e.code == ErrorCode::PortNotFound => {}
            Err(e) => return Err(refused(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_names_are_valid_and_bounded() {
        let id = "a".repeat(64);
        let n = port_name(&id, "eth0");
        assert_eq!(n, format!("cni-{}-eth0", "a".repeat(40)));
        assert!(n.len() <= 64);
        assert_eq!(port_name("x/y", "e@1"), "cni-x_y-e_1");
    }
}
