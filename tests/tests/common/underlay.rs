//! Two "hosts" on one underlay: namespaces joined by a veth, each end addressed (a /24).

use super::*;

pub struct Underlay {
    pub h1: Netns,
    pub h2: Netns,
    /// The veth ends: `dev1` in `h1`, `dev2` in `h2`.
    pub dev1: String,
    pub dev2: String,
}

/// Hosts `h1` (`ip1`) and `h2` (`ip2`) on one veth, `tag` naming their namespaces.
pub fn underlay(tag: &str, ip1: &str, ip2: &str) -> Underlay {
    let h1 = Netns::new(&format!("{tag}1"));
    let h2 = Netns::new(&format!("{tag}2"));
    let (a, b) = (unique(&format!("{tag}a")), unique(&format!("{tag}b")));
    must(
        "ip",
        &[
            "link", "add", &a, "netns", &h1.name, "type", "veth", "peer", "name", &b, "netns",
            &h2.name,
        ],
    );
    for (ns, dev, ip) in [(&h1, &a, ip1), (&h2, &b, ip2)] {
        ns.exec_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", dev]);
        ns.exec_ok(&["ip", "link", "set", dev, "up"]);
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
    }
    Underlay {
        h1,
        h2,
        dev1: a,
        dev2: b,
    }
}

/// Hosts on one underlay segment: a hub namespace with a bridge (`hub_ip`, where a test puts
/// a store such as etcd), and a veth from it to each host (`ips`).
pub struct Star {
    pub hub: Netns,
    pub hosts: Vec<Netns>,
    /// Each host's end of its veth.
    pub devs: Vec<String>,
}

pub fn star(tag: &str, hub_ip: &str, ips: &[&str]) -> Star {
    let hub = Netns::new(&format!("{tag}h"));
    hub.exec_ok(&["ip", "link", "add", "br0", "type", "bridge"]);
    hub.exec_ok(&["ip", "addr", "add", &format!("{hub_ip}/24"), "dev", "br0"]);
    hub.exec_ok(&["ip", "link", "set", "br0", "up"]);
    hub.exec_ok(&["ip", "link", "set", "lo", "up"]);
    let mut hosts = Vec::new();
    let mut devs = Vec::new();
    for (i, ip) in ips.iter().enumerate() {
        let h = Netns::new(&format!("{tag}{i}"));
        let (a, b) = (unique(&format!("{tag}p")), unique(&format!("{tag}q")));
        must(
            "ip",
            &[
                "link", "add", &a, "netns", &hub.name, "type", "veth", "peer", "name", &b, "netns",
                &h.name,
            ],
        );
        hub.exec_ok(&["ip", "link", "set", &a, "master", "br0"]);
        hub.exec_ok(&["ip", "link", "set", &a, "up"]);
        h.exec_ok(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &b]);
        h.exec_ok(&["ip", "link", "set", &b, "up"]);
        h.exec_ok(&["ip", "link", "set", "lo", "up"]);
        hosts.push(h);
        devs.push(b);
    }
    Star { hub, hosts, devs }
}
