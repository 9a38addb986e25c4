//! A published port as Docker spells it: `[HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/tcp|/udp]`
//! (ranges of equal length). Stored and sent in that form.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::wire::ipv4::{PROTO_TCP, PROTO_UDP};

/// Published ports a single spec may map at most (Docker has no bound; a typo such as
/// `1-65535` should not reserve the whole host).
pub const MAX_RANGE: u16 = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// `count` consecutive host ports from `host_port` that lead to as many container ports from
/// `container_port`, on `host_ip` (any of the switch's uplink addresses when `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Publish {
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub container_port: u16,
    pub count: u16,
    pub proto: Proto,
}

impl Publish {
    /// The (protocol, host port, container port) triples it maps.
    pub fn ports(&self) -> impl Iterator<Item = (Proto, u16, u16)> + '_ {
        (0..self.count).map(move |i| (self.proto, self.host_port + i, self.container_port + i))
    }

    /// Whether both map some host port of the same protocol.
    pub fn overlaps(&self, other: &Publish) -> bool {
        self.proto == other.proto
            && self.host_port <= other.host_port + (other.count - 1)
            && other.host_port <= self.host_port + (self.count - 1)
    }
}

fn range(s: &str, what: &str) -> Result<(u16, u16), String> {
    let port = |p: &str| -> Result<u16, String> {
        match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{what} {p:?} is not a port (1-65535)")),
            Ok(n) => Ok(n),
        }
    };
    match s.split_once('-') {
        None => {
            let p = port(s)?;
            Ok((p, p))
        }
        Some((lo, hi)) => {
            let (lo, hi) = (port(lo)?, port(hi)?);
            if lo > hi {
                return Err(format!("{what} range {lo}-{hi} is not ascending"));
            }
            Ok((lo, hi))
        }
    }
}

impl FromStr for Publish {
    type Err = String;

    fn from_str(s: &str) -> Result<Publish, String> {
        let help = "use [HOSTIP:]HOSTPORT[-END]:CONTAINERPORT[-END][/tcp|/udp], e.g. 8080:80/tcp";
        let (body, proto) = match s.rsplit_once('/') {
            Some((b, "tcp")) => (b, Proto::Tcp),
            Some((b, "udp")) => (b, Proto::Udp),
            Some((_, p)) => {
                return Err(format!(
                    "publish {s:?}: protocol {p:?} is not tcp or udp ({help})"
                ))
            }
            None => (s, Proto::Tcp),
        };
        let parts: Vec<&str> = body.split(':').collect();
        let (host_ip, host, container) = match parts.as_slice() {
            [h, c] => (None, *h, *c),
            [ip, h, c] => {
                let ip: Ipv4Addr = ip
                    .parse()
                    .map_err(|_| format!("publish {s:?}: {ip:?} is not an IPv4 address"))?;
                ((!ip.is_unspecified()).then_some(ip), *h, *c)
            }
            _ => return Err(format!("publish {s:?}: {help}")),
        };
        let (hlo, hhi) = range(host, "host port").map_err(|e| format!("publish {s:?}: {e}"))?;
        let (clo, chi) =
            range(container, "container port").map_err(|e| format!("publish {s:?}: {e}"))?;
        if hhi - hlo != chi - clo {
            return Err(format!(
                "publish {s:?}: host ports {hlo}-{hhi} and container ports {clo}-{chi} are \
                 ranges of unequal length"
            ));
        }
        let count = hhi - hlo + 1;
        if count > MAX_RANGE {
            return Err(format!(
                "publish {s:?}: {count} ports in one range, at most {MAX_RANGE}"
            ));
        }
        Ok(Publish {
            host_ip,
            host_port: hlo,
            container_port: clo,
            count,
            proto,
        })
    }
}

impl fmt::Display for Publish {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ip) = self.host_ip {
            write!(f, "{ip}:")?;
        }
        let end = self.count - 1;
        match end {
            0 => write!(f, "{}:{}", self.host_port, self.container_port)?,
            _ => write!(
                f,
                "{}-{}:{}-{}",
                self.host_port,
                self.host_port + end,
                self.container_port,
                self.container_port + end
            )?,
        }
        write!(f, "/{}", self.proto.as_str())
    }
}

impl TryFrom<String> for Publish {
    type Error = String;
    fn try_from(s: String) -> Result<Publish, String> {
        s.parse()
    }
}

impl From<Publish> for String {
    fn from(p: Publish) -> String {
        p.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let p: Publish = "8080:80".parse().unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port, p.count),
            (None, 8080, 80, 1)
        );
        assert_eq!(p.proto, Proto::Tcp);
        assert_eq!(p.to_string(), "8080:80/tcp");
        let p: Publish = "10.0.0.1:9000-9002:7000-7002/udp".parse().unwrap();
        assert_eq!(p.host_ip, Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            p.ports().collect::<Vec<_>>(),
            vec![
                (Proto::Udp, 9000, 7000),
                (Proto::Udp, 9001, 7001),
                (Proto::Udp, 9002, 7002)
            ]
        );
        assert_eq!(p.to_string(), "10.0.0.1:9000-9002:7000-7002/udp");
        assert_eq!(p.to_string().parse::<Publish>().unwrap(), p);
        let p: Publish = "0.0.0.0:53:53/udp".parse().unwrap();
        assert_eq!(p.host_ip, None);
    }

    #[test]
    fn refuses_bad_specs() {
        for bad in [
            "",
            "80",
            "8080:",
            ":80",
            "0:80",
            "65536:80",
            "x:80",
            "8080:80/sctp",
            "9000-9002:80",
            "9000-9002:80-81",
            "9002-9000:82-80",
            "1.2.3:80:80",
            "1-2000:1-2000",
            "a:b:c:d",
        ] {
            assert!(bad.parse::<Publish>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn overlap() {
        let a: Publish = "9000-9002:9000-9002".parse().unwrap();
        let b: Publish = "9002:80".parse().unwrap();
        let c: Publish = "9002:80/udp".parse().unwrap();
        let d: Publish = "9003:80".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c) && !a.overlaps(&d));
    }
}
