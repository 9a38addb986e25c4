//! What the CNI specification fixes: the versions this plugin speaks, the network
//! configuration it reads, the error object and the result it prints (SPEC.md, sections 1, 2
//! and 5, versions 0.3.1 to 1.1.0).

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// The spec versions this plugin accepts and answers in (podman 4.3 takes up to 1.0.0).
pub const SUPPORTED: [&str; 4] = ["0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// Well-known error codes (SPEC.md, "Error"), and one of the plugin's own.
pub mod code {
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    pub const UNSUPPORTED_FIELD: u32 = 2;
    pub const UNKNOWN_CONTAINER: u32 = 3;
    pub const INVALID_ENV: u32 = 4;
    pub const IO_FAILURE: u32 = 5;
    pub const DECODE: u32 = 6;
    pub const INVALID_CONFIG: u32 = 7;
    pub const TRY_AGAIN_LATER: u32 = 11;
    pub const NOT_AVAILABLE: u32 = 50;
    /// vswitchd refused the request; `details` carries its error code.
    pub const REFUSED: u32 = 100;
}

/// An error as the spec prints it on stdout, with a non-zero exit.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CniError {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub code: u32,
    pub msg: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<String>,
}

impl CniError {
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            cni_version: SUPPORTED[SUPPORTED.len() - 1].into(),
            code,
            msg: msg.into(),
            details: None,
        }
    }

    pub fn details(mut self, d: impl Into<String>) -> CniError {
        self.details = Some(d.into());
        self
    }
}

/// `major.minor.patch` compared as numbers; `None` when it is not three numbers.
pub fn version_tuple(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let t = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(t)
}

/// The `cniVersion` of a configuration, checked against what this plugin speaks.
pub fn check_version(v: &str) -> Result<(), CniError> {
    if SUPPORTED.contains(&v) {
        Ok(())
    } else {
        Err(CniError::new(
            code::INCOMPATIBLE_VERSION,
            format!(
                "CNI version {v:?} is not supported by vswitch-cni (supported: {})",
                SUPPORTED.join(", ")
            ),
        ))
    }
}

/// A port mapping as runtimes pass it in `runtimeConfig.portMappings` (CONVENTIONS.md).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PortMapping {
    pub host_port: u32,
    pub container_port: u32,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default, rename = "hostIP")]
    pub host_ip: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeConfig {
    #[serde(default)]
    pub port_mappings: Vec<PortMapping>,
    /// The `mac` capability.
    #[serde(default)]
    pub mac: Option<String>,
    /// The `ips` capability: CIDRs or plain addresses.
    #[serde(default)]
    pub ips: Vec<String>,
    /// The `aliases` capability (podman): DNS names by network name.
    #[serde(default)]
    pub aliases: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

/// The network configuration on stdin (one plugin's, as a runtime passes it from a list).
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    pub name: String,
    /// The vswitchd network [default: `name`].
    #[serde(default)]
    pub network: Option<String>,
    /// vswitchd's control socket [default: /run/vswitch/vswitchd.sock].
    #[serde(default)]
    pub socket: Option<String>,
    /// "tap" (default) or "afxdp".
    #[serde(default, rename = "portType")]
    pub port_type: Option<String>,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub ipam: Option<Value>,
    #[serde(default, rename = "runtimeConfig")]
    pub runtime_config: RuntimeConfig,
    #[serde(default, rename = "prevResult")]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

impl NetConf {
    /// Parses and checks a configuration: its version, a name of the spec's shape, and no
    /// IPAM section (the switch's own IPAM assigns addresses).
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(code::DECODE, "the network configuration is not JSON")
                .details(e.to_string())
        })?;
        if let Some(ver) = v.get("cniVersion").and_then(Value::as_str) {
            check_version(ver)?;
        }
        let conf: NetConf = serde_json::from_value(v).map_err(|e| {
            CniError::new(code::INVALID_CONFIG, "invalid network configuration")
                .details(e.to_string())
        })?;
        if !valid_network_name(&conf.name) {
            return Err(CniError::new(
                code::INVALID_CONFIG,
                format!("invalid network name {:?}", conf.name),
            ));
        }
        if conf.ipam.as_ref().is_some_and(|i| !i.is_null()) {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                "vswitch-cni takes addresses from the vswitchd network's own IPAM: remove the \"ipam\" section",
            ));
        }
        if let Some(t) = &conf.port_type {
            if t != "tap" && t != "afxdp" {
                return Err(CniError::new(
                    code::INVALID_CONFIG,
                    format!("portType {t:?} is not \"tap\" or \"afxdp\""),
                ));
            }
        }
        Ok(conf)
    }

    pub fn at_least(&self, v: (u32, u32, u32)) -> bool {
        version_tuple(&self.cni_version).is_some_and(|t| t >= v)
    }
}

/// The spec's network name: an alphanumeric, then alphanumerics, '_', '.' or '-'.
pub fn valid_network_name(n: &str) -> bool {
    n.as_bytes().first().is_some_and(u8::is_ascii_alphanumeric)
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// A DNS name of the shape the switch's DNS serves: dot-separated labels of letters, digits
/// and inner hyphens, at most 63 bytes each and 253 in all.
pub fn valid_dns_name(n: &str) -> bool {
    n.len() <= 253
        && n.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// What ADD made, in the shape of one `version` of the spec.
pub struct Attached<'a> {
    pub ifname: &'a str,
    pub mac: &'a str,
    pub sandbox: &'a str,
    pub mtu: u32,
    /// CIDR.
    pub ip: Option<&'a str>,
    pub gateway: &'a str,
    pub dns: Option<(&'a str, &'a str)>,
}

/// The ADD result for `version`, appended to `prev` (a previous plugin's result) when given.
pub fn result(version: &str, a: &Attached, prev: Option<&Value>) -> Value {
    let mut out = match prev {
        Some(Value::Object(m)) => Value::Object(m.clone()),
        _ => json!({}),
    };
    out["cniVersion"] = json!(version);
    let old_03 = version.starts_with("0.");
    let mut iface = json!({"name": a.ifname, "mac": a.mac, "sandbox": a.sandbox});
    if version == "1.1.0" {
        iface["mtu"] = json!(a.mtu);
    }
    let ifaces = out["interfaces"].as_array().cloned().unwrap_or_default();
    let index = ifaces.len();
    let mut ifaces = ifaces;
    ifaces.push(iface);
    out["interfaces"] = Value::Array(ifaces);
    let mut ips = out["ips"].as_array().cloned().unwrap_or_default();
    let mut routes = out["routes"].as_array().cloned().unwrap_or_default();
    if let Some(ip) = a.ip {
        let mut e = json!({"address": ip, "gateway": a.gateway, "interface": index});
        if old_03 {
            e["version"] = json!("4");
        }
        ips.push(e);
        routes.push(json!({"dst": "0.0.0.0/0", "gw": a.gateway}));
    }
    out["ips"] = Value::Array(ips);
    out["routes"] = Value::Array(routes);
    if let Some((server, domain)) = a.dns {
        let mut dns = json!({"nameservers": [server]});
        if !domain.is_empty() {
            dns["domain"] = json!(domain);
            dns["search"] = json!([domain]);
        }
        out["dns"] = dns;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attached() -> Attached<'static> {
        Attached {
            ifname: "eth0",
            mac: "02:42:0a:01:00:02",
            sandbox: "/run/netns/c1",
            mtu: 1500,
            ip: Some("10.1.0.2/24"),
            gateway: "10.1.0.1",
            dns: Some(("10.1.0.1", "vswitch")),
        }
    }

    #[test]
    fn results_follow_the_version() {
        let r = result("0.4.0", &attached(), None);
        assert_eq!(r["ips"][0]["version"], "4");
        assert_eq!(r["interfaces"][0]["sandbox"], "/run/netns/c1");
        assert!(r["interfaces"][0].get("mtu").is_none());
        let r = result("1.0.0", &attached(), None);
        assert!(r["ips"][0].get("version").is_none());
        assert_eq!(r["routes"][0]["gw"], "10.1.0.1");
        assert_eq!(r["dns"]["nameservers"][0], "10.1.0.1");
        let r = result("1.1.0", &attached(), None);
        assert_eq!(r["interfaces"][0]["mtu"], 1500);
    }

    #[test]
    fn a_previous_result_is_extended() {
        let prev = json!({"cniVersion": "1.0.0", "interfaces": [{"name": "lo0"}], "ips": []});
        let r = result("1.0.0", &attached(), Some(&prev));
        assert_eq!(r["interfaces"].as_array().unwrap().len(), 2);
        assert_eq!(r["ips"][0]["interface"], 1);
    }

    #[test]
    fn configurations_are_checked() {
        let ok = br#"{"cniVersion":"1.0.0","name":"web","type":"vswitch"}"#;
        assert!(NetConf::parse(ok).is_ok());
        let e = NetConf::parse(br#"{"cniVersion":"9.9.9","name":"web"}"#).unwrap_err();
        assert_eq!(e.code, code::INCOMPATIBLE_VERSION);
        let e = NetConf::parse(b"{nope").unwrap_err();
        assert_eq!(e.code, code::DECODE);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"-x"}"#).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG);
        let e =
            NetConf::parse(br#"{"cniVersion":"1.0.0","name":"web","ipam":{"type":"host-local"}}"#)
                .unwrap_err();
        assert_eq!(e.code, code::UNSUPPORTED_FIELD);
        assert_eq!(version_tuple("1.1.0"), Some((1, 1, 0)));
        assert_eq!(version_tuple("1.1"), None);
    }
}
