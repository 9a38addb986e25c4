//! The messages of libnetwork's remote network driver and remote IPAM driver protocols
//! (moby `libnetwork/drivers/remote/api`, `libnetwork/ipams/remote/api`), as dockerd 20.10
//! sends them: JSON bodies of HTTP POSTs to `/NetworkDriver.*` and `/IpamDriver.*`. Fields
//! the driver does not use are left out (serde ignores them); `null` where dockerd may send
//! it (`"Options": null`) reads as the default.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct IpamData {
    #[serde(default)]
    pub pool: String,
    #[serde(default)]
    pub gateway: String,
    /// `--aux-address NAME=IP`: NAME → IP/prefix.
    #[serde(default, deserialize_with = "null_default")]
    pub aux_addresses: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateNetwork {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "Options", default, deserialize_with = "null_default")]
    pub options: BTreeMap<String, Value>,
    #[serde(rename = "IPv4Data", default, deserialize_with = "null_default")]
    pub ipv4: Vec<IpamData>,
    #[serde(rename = "IPv6Data", default, deserialize_with = "null_default")]
    pub ipv6: Vec<IpamData>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NetworkRef {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct EndpointRef {
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Options", default, deserialize_with = "null_default")]
    pub options: BTreeMap<String, Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct EndpointInterface {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub address: String,
    #[serde(
        rename = "AddressIPv6",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub address_ipv6: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_address: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreateEndpoint {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "Interface", default, deserialize_with = "null_default")]
    pub interface: EndpointInterface,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Join {
    #[serde(rename = "NetworkID")]
    pub network_id: String,
    #[serde(rename = "EndpointID")]
    pub endpoint_id: String,
    #[serde(rename = "SandboxKey")]
    pub sandbox_key: String,
}

/// One entry of `com.docker.network.portmap` (libnetwork `types.PortBinding`).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PortBinding {
    /// IP protocol number: 6 TCP, 17 UDP.
    pub proto: u8,
    #[serde(rename = "IP", default)]
    pub ip: String,
    pub port: u16,
    #[serde(rename = "HostIP", default)]
    pub host_ip: String,
    pub host_port: u16,
    #[serde(default)]
    pub host_port_end: u16,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RequestPool {
    #[serde(default)]
    pub pool: String,
    #[serde(default)]
    pub sub_pool: String,
    #[serde(default, rename = "V6")]
    pub v6: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct PoolRef {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RequestAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Address", default)]
    pub address: String,
    #[serde(rename = "Options", default, deserialize_with = "null_default")]
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReleaseAddress {
    #[serde(rename = "PoolID")]
    pub pool_id: String,
    #[serde(rename = "Address", default)]
    pub address: String,
}

/// `RequestAddressType` of the gateway's address.
pub const GATEWAY_REQUEST: &str = "com.docker.network.gateway";
pub const PORTMAP: &str = "com.docker.network.portmap";
pub const GENERIC: &str = "com.docker.network.generic";
pub const INTERNAL: &str = "com.docker.network.internal";
pub const ENABLE_IPV6: &str = "com.docker.network.enable_ipv6";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerd_20_10_messages_decode() {
        // As dockerd 20.10 sent them to a stub plugin on this machine.
        let c: CreateNetwork = serde_json::from_str(r#"{"NetworkID":"a166","Options":{"com.docker.network.enable_ipv6":false,"com.docker.network.generic":{"foo":"bar"},"com.docker.network.internal":true},"IPv4Data":[{"AddressSpace":"l","Gateway":"10.99.0.1/24","Pool":"10.99.0.0/24"}],"IPv6Data":[]}"#).unwrap();
        assert_eq!(c.ipv4[0].gateway, "10.99.0.1/24");
        assert_eq!(c.options[INTERNAL], Value::Bool(true));
        let r: RequestAddress =
            serde_json::from_str(r#"{"PoolID":"p","Address":"10.99.0.5","Options":null}"#).unwrap();
        assert!(r.options.is_empty());
        let e: CreateEndpoint = serde_json::from_str(r#"{"NetworkID":"n","EndpointID":"e","Interface":{"Address":"10.99.0.5/24","AddressIPv6":"","MacAddress":""},"Options":{"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":80}],"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}}"#).unwrap();
        assert_eq!(e.interface.address, "10.99.0.5/24");
        let p: EndpointRef = serde_json::from_str(r#"{"NetworkID":"n","EndpointID":"e","Options":{"com.docker.network.endpoint.exposedports":[{"Proto":6,"Port":80}],"com.docker.network.portmap":[{"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}]}}"#).unwrap();
        let pm: Vec<PortBinding> = serde_json::from_value(p.options[PORTMAP].clone()).unwrap();
        assert_eq!(pm[0].host_port, 8080);
        let j: Join = serde_json::from_str(
            r#"{"NetworkID":"n","EndpointID":"e","SandboxKey":"/x/netns/f9","Options":{}}"#,
        )
        .unwrap();
        assert_eq!(j.sandbox_key, "/x/netns/f9");
    }
}
