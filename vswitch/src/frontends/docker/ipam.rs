//! The IPAM side of the Docker plugin: pools are vswitchd subnets, addresses come from the
//! switch's own view of what is used (its ports' addresses, the gateway) plus what dockerd
//! has asked for and not yet released. A pool's ID names its subnet (and sub-pool), so a
//! pool needs no state that could be lost across a restart of either daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// `vswitch/SUBNET` or `vswitch/SUBNET/SUBPOOL`.
pub fn pool_id(subnet: Ipv4Net, sub: Option<Ipv4Net>) -> String {
    match sub {
        Some(s) => format!("vswitch/{subnet}/{s}"),
        None => format!("vswitch/{subnet}"),
    }
}

pub fn parse_pool_id(id: &str) -> Option<(Ipv4Net, Option<Ipv4Net>)> {
    let rest = id.strip_prefix("vswitch/")?;
    let parts: Vec<&str> = rest.split('/').collect();
    let net = |a: &str, p: &str| format!("{a}/{p}").parse::<Ipv4Net>().ok();
    match parts.as_slice() {
        [a, p] => Some((net(a, p)?, None)),
        [a, p, b, q] => Some((net(a, p)?, Some(net(b, q)?))),
        _ => None,
    }
}

/// Pools dockerd may get when it names none, in Docker's own order: 172.18–31.0.0/16, then
/// 192.168.N.0/20. The first that overlaps nothing in `taken`.
pub fn pick_pool(taken: &[Ipv4Net]) -> Option<Ipv4Net> {
    let candidates = (18..=31)
        .map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16).unwrap())
        .chain((0..16).map(|n| Ipv4Net::new(Ipv4Addr::new(192, 168, n * 16, 0), 20).unwrap()));
    candidates
        .into_iter()
        .find(|c| !taken.iter().any(|t| overlaps(*c, *t)))
}

pub fn overlaps(a: Ipv4Net, b: Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// Addresses dockerd holds (asked for, not released), by subnet.
#[derive(Debug, Default)]
pub struct Reservations {
    held: BTreeMap<Ipv4Net, BTreeSet<Ipv4Addr>>,
}

impl Reservations {
    pub fn hold(&mut self, subnet: Ipv4Net, ip: Ipv4Addr) {
        self.held.entry(subnet).or_default().insert(ip);
    }

    pub fn release(&mut self, subnet: Ipv4Net, ip: Ipv4Addr) {
        if let Some(s) = self.held.get_mut(&subnet) {
            s.remove(&ip);
            if s.is_empty() {
                self.held.remove(&subnet);
            }
        }
    }

    pub fn release_pool(&mut self, subnet: Ipv4Net) {
        self.held.remove(&subnet);
    }

    pub fn held(&self, subnet: Ipv4Net) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.held.get(&subnet).into_iter().flatten().copied()
    }
}

/// Why an address cannot be had.
#[derive(Debug, PartialEq, Eq)]
pub enum AddrError {
    OutOfPool(Ipv4Addr, Ipv4Net),
    InUse(Ipv4Addr),
    Exhausted(Ipv4Net),
}

impl std::fmt::Display for AddrError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AddrError::OutOfPool(ip, net) => {
                write!(f, "address {ip} is not a host address of {net}")
            }
            AddrError::InUse(ip) => write!(f, "address {ip} is already in use"),
            AddrError::Exhausted(net) => write!(f, "no free address left in {net}"),
        }
    }
}

/// `want` if it is a free host address of `subnet`, else the first free host address of
/// `range` (the sub-pool, or the subnet).
pub fn pick_address(
    subnet: Ipv4Net,
    range: Ipv4Net,
    want: Option<Ipv4Addr>,
    used: &BTreeSet<Ipv4Addr>,
) -> Result<Ipv4Addr, AddrError> {
    let host = |ip: Ipv4Addr| {
        subnet.contains(&ip)
            && (subnet.prefix_len() >= 31 || (ip != subnet.network() && ip != subnet.broadcast()))
    };
    if let Some(ip) = want {
        if !host(ip) {
            return Err(AddrError::OutOfPool(ip, subnet));
        }
        if used.contains(&ip) {
            return Err(AddrError::InUse(ip));
        }
        return Ok(ip);
    }
    range
        .hosts()
        .find(|ip| host(*ip) && !used.contains(ip))
        .ok_or(AddrError::Exhausted(range))
}

// The IPAM driver calls.
impl super::Plugin {
    pub(super) fn request_pool(&self, r: super::types::RequestPool) -> super::Answer {
        if r.v6 {
            return Err("vswitch networks are IPv4 only: no IPv6 pool".into());
        }
        let nets = self.networks()?;
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken: Vec<Ipv4Net> = nets.iter().filter_map(|n| n.subnet.parse().ok()).collect();
        taken.extend(st.pools.keys().copied());
        let subnet = if r.pool.is_empty() {
            pick_pool(&taken).ok_or("no free pool left: give --subnet")?
        } else {
            let s: Ipv4Net = r
                .pool
                .parse()
                .map_err(|_| format!("pool {:?} is not an IPv4 CIDR", r.pool))?;
            if s.trunc() != s {
                return Err(format!(
                    "pool {s} is not a network address (did you mean {}?)",
                    s.trunc()
                ));
            }
            if let Some(n) = nets
                .iter()
                .find(|n| n.subnet.parse().is_ok_and(|t| overlaps(s, t)))
            {
                return Err(format!(
                    "pool {s} overlaps vswitchd network {:?} ({})",
                    n.name, n.subnet
                ));
            }
            if st.pools.keys().any(|p| overlaps(s, *p)) {
                return Err(format!("pool {s} overlaps a pool being set up"));
            }
            s
        };
        let sub = if r.sub_pool.is_empty() {
            None
        } else {
            let sub: Ipv4Net = r
                .sub_pool
                .parse()
                .map_err(|_| format!("--ip-range {:?} is not an IPv4 CIDR", r.sub_pool))?;
            if !subnet.contains(&sub) {
                return Err(format!("--ip-range {sub} is not inside {subnet}"));
            }
            Some(sub)
        };
        st.pools.insert(subnet, sub);
        Ok(serde_json::json!({
            "PoolID": pool_id(subnet, sub),
            "Pool": subnet.to_string(),
            "Data": {},
        }))
    }

    pub(super) fn release_pool(&self, r: super::types::PoolRef) -> super::Answer {
        if let Some((subnet, _)) = parse_pool_id(&r.pool_id) {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            st.pools.remove(&subnet);
            st.reservations.release_pool(subnet);
        }
        Ok(serde_json::json!({}))
    }

    pub(super) fn request_address(&self, r: super::types::RequestAddress) -> super::Answer {
        let (subnet, sub) =
            parse_pool_id(&r.pool_id).ok_or_else(|| format!("unknown pool {:?}", r.pool_id))?;
        let want = match r.address.split('/').next() {
            Some(a) if !a.is_empty() => Some(
                a.parse::<Ipv4Addr>()
                    .map_err(|_| format!("address {a:?} is not IPv4"))?,
            ),
            _ => None,
        };
        let gateway = r
            .options
            .get("RequestAddressType")
            .is_some_and(|t| t == super::types::GATEWAY_REQUEST);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let used = self.used(&st, subnet)?;
        let ip = if gateway {
            // The subnet's first address unless dockerd names one (--gateway).
            let gw = want.unwrap_or_else(|| subnet.hosts().next().unwrap_or(subnet.addr()));
            pick_address(subnet, subnet, Some(gw), &used).map_err(|e| e.to_string())?
        } else {
            pick_address(subnet, sub.unwrap_or(subnet), want, &used).map_err(|e| e.to_string())?
        };
        st.reservations.hold(subnet, ip);
        Ok(serde_json::json!({
            "Address": format!("{ip}/{}", subnet.prefix_len()),
            "Data": {},
        }))
    }

    pub(super) fn release_address(&self, r: super::types::ReleaseAddress) -> super::Answer {
        if let (Some((subnet, _)), Some(ip)) = (
            parse_pool_id(&r.pool_id),
            r.address.split('/').next().and_then(|a| a.parse().ok()),
        ) {
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .reservations
                .release(subnet, ip);
        }
        Ok(serde_json::json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn pool_ids_name_their_subnets() {
        let id = pool_id(n("10.1.0.0/24"), Some(n("10.1.0.128/25")));
        assert_eq!(
            parse_pool_id(&id),
            Some((n("10.1.0.0/24"), Some(n("10.1.0.128/25"))))
        );
        assert_eq!(
            parse_pool_id("vswitch/10.1.0.0/24"),
            Some((n("10.1.0.0/24"), None))
        );
        assert_eq!(parse_pool_id("10.1.0.0/24"), None);
        assert_eq!(parse_pool_id("vswitch/x/24"), None);
    }

    #[test]
    fn pools_skip_what_is_taken() {
        assert_eq!(pick_pool(&[]), Some(n("172.18.0.0/16")));
        assert_eq!(
            pick_pool(&[n("172.18.5.0/24"), n("172.19.0.0/16")]),
            Some(n("172.20.0.0/16"))
        );
    }

    #[test]
    fn addresses_are_free_host_addresses() {
        let net = n("10.1.0.0/29");
        let used: BTreeSet<Ipv4Addr> = ["10.1.0.1".parse().unwrap()].into();
        assert_eq!(
            pick_address(net, net, None, &used),
            Ok("10.1.0.2".parse().unwrap())
        );
        assert_eq!(
            pick_address(net, net, Some("10.1.0.1".parse().unwrap()), &used),
            Err(AddrError::InUse("10.1.0.1".parse().unwrap()))
        );
        assert!(matches!(
            pick_address(net, net, Some("10.1.0.7".parse().unwrap()), &used),
            Err(AddrError::OutOfPool(..))
        ));
        let all: BTreeSet<Ipv4Addr> = net.hosts().collect();
        assert_eq!(
            pick_address(net, net, None, &all),
            Err(AddrError::Exhausted(net))
        );
        let sub = n("10.1.0.4/30");
        assert_eq!(
            pick_address(net, sub, None, &used),
            Ok("10.1.0.5".parse().unwrap())
        );
    }
}
