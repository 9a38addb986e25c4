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
