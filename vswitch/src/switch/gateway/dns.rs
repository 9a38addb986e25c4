//! The embedded DNS server on the gateway address, on hickory-proto: A and PTR records for the
//! network's ports (name, container name, aliases), scoped to the network. Names under the
//! network's domain that do not exist get NXDOMAIN; other names go to the shell's forwarder when
//! it runs (over UDP and TCP alike; it asks the upstream resolvers, or answers SERVFAIL when it
//! has none), else get SERVFAIL at once, so clients fall through quickly instead of timing out.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::Malformed;

/// Largest UDP response without EDNS (RFC 1035); larger answers are truncated (TC set).
pub const MAX_UDP_RESPONSE: usize = 512;
/// TTL of the records served (Docker uses 600 s).
const TTL: u32 = 600;

/// What the resolver makes of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The response to send.
    Reply(Vec<u8>),
    /// Not a name of this network: ask the upstream resolvers.
    Forward,
}

#[derive(Debug, Default, Clone)]
pub struct Resolver {
    domain: String,
    names_enabled: bool,
    /// A forwarder runs: names that are not ours are handed to it.
    upstream: bool,
    forward: HashMap<String, Vec<Ipv4Addr>>,
    /// The names of each address, in the order they were added; the first is its PTR.
    reverse: HashMap<Ipv4Addr, Vec<String>>,
}

fn in_addr_arpa(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let parts: Vec<u8> = rest
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    (parts.len() == 4).then(|| Ipv4Addr::new(parts[3], parts[2], parts[1], parts[0]))
}

impl Resolver {
    pub fn new(domain: String, names_enabled: bool, forward: bool) -> Resolver {
        Resolver {
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            names_enabled,
            upstream: forward,
            ..Default::default()
        }
    }

    /// Answers a query, or says it is for the upstream resolvers (when there are any).
    pub fn resolve(&self, query: &[u8], max_len: usize) -> Result<Answer, Malformed> {
        self.answer_inner(query, max_len, self.upstream)
    }

    /// Replaces the records: (name, address) pairs; the first name of an address is its PTR.
    pub fn set_records(&mut self, records: Vec<(String, Ipv4Addr)>) {
        self.forward.clear();
        self.reverse.clear();
        for (name, ip) in records {
            self.add_records(std::slice::from_ref(&name), ip);
        }
    }

    /// Adds A records for `names` → `ip` (and PTR records, the address's first name winning).
    /// Costs what the names cost, not what the network holds: a port added to a network of a
    /// thousand must not rebuild the table.
    pub fn add_records(&mut self, names: &[String], ip: Ipv4Addr) {
        for name in names {
            let name = name.to_ascii_lowercase();
            let names = self.reverse.entry(ip).or_default();
            if !names.contains(&name) {
                names.push(name.clone());
            }
            let ips = self.forward.entry(name).or_default();
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
    }

    /// Removes what `add_records(names, ip)` added; other addresses of the same names stay.
    pub fn remove_records(&mut self, names: &[String], ip: Ipv4Addr) {
        for name in names {
            let name = name.to_ascii_lowercase();
            if let Some(ips) = self.forward.get_mut(&name) {
                ips.retain(|a| *a != ip);
                if ips.is_empty() {
                    self.forward.remove(&name);
                }
            }
            if let Some(names) = self.reverse.get_mut(&ip) {
                names.retain(|n| *n != name);
                if names.is_empty() {
                    self.reverse.remove(&ip);
                }
            }
        }
    }

    fn fqdn(&self, name: &str) -> String {
        if self.domain.is_empty() {
            format!("{name}.")
        } else {
            format!("{name}.{}.", self.domain)
        }
    }

    /// Answers one DNS message. `Err` for input that is not a DNS query at all (dropped and
    /// counted); a query this server cannot answer gets a response with an error code.
    pub fn answer(&self, query: &[u8], max_len: usize) -> Result<Vec<u8>, Malformed> {
        match self.answer_inner(query, max_len, false)? {
            Answer::Reply(r) => Ok(r),
            Answer::Forward => Err(Malformed),
        }
    }

    fn answer_inner(
        &self,
        query: &[u8],
        max_len: usize,
        forward: bool,
    ) -> Result<Answer, Malformed> {
        let req = Message::from_vec(query).map_err(|_| Malformed)?;
        if req.metadata.message_type != MessageType::Query {
            return Err(Malformed);
        }
        let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
        resp.metadata.recursion_desired = req.metadata.recursion_desired;
        resp.metadata.recursion_available = false;
        if req.metadata.op_code != OpCode::Query {
            resp.metadata.response_code = ResponseCode::NotImp;
            return resp.to_vec().map(Answer::Reply).map_err(|_| Malformed);
        }
        if req.queries.len() != 1 {
            resp.metadata.response_code = ResponseCode::FormErr;
            return resp.to_vec().map(Answer::Reply).map_err(|_| Malformed);
        }
        let q = req.queries[0].clone();
        resp.add_query(q.clone());
        let qname = q.name().to_lowercase().to_ascii();
        let qname = qname.trim_end_matches('.');
        let local = if self.domain.is_empty() {
            None
        } else if qname == self.domain {
            Some("")
        } else {
            qname.strip_suffix(&format!(".{}", self.domain))
        };
        let base = local.unwrap_or(qname);

        let mut code = ResponseCode::ServFail;
        if self.names_enabled {
            if let Some(ips) = self.forward.get(base) {
                code = ResponseCode::NoError;
                if q.query_type() == RecordType::A || q.query_type() == RecordType::ANY {
                    for ip in ips {
                        resp.add_answer(Record::from_rdata(
                            q.name().clone(),
                            TTL,
                            RData::A(A(*ip)),
                        ));
                    }
                }
            } else if let Some(ip) = in_addr_arpa(qname) {
                if let Some(name) = self.reverse.get(&ip).and_then(|n| n.first()) {
                    code = ResponseCode::NoError;
                    if q.query_type() == RecordType::PTR || q.query_type() == RecordType::ANY {
                        let target = Name::from_ascii(self.fqdn(name)).map_err(|_| Malformed)?;
                        resp.add_answer(Record::from_rdata(
                            q.name().clone(),
                            TTL,
                            RData::PTR(PTR(target)),
                        ));
                    }
                }
            } else if local.is_some() {
                code = ResponseCode::NXDomain;
            }
        }
        if code == ResponseCode::ServFail && forward {
            return Ok(Answer::Forward);
        }
        resp.metadata.authoritative = code != ResponseCode::ServFail;
        resp.metadata.response_code = code;
        let bytes = resp.to_vec().map_err(|_| Malformed)?;
        if bytes.len() <= max_len {
            return Ok(Answer::Reply(bytes));
        }
        let mut truncated = resp.truncate();
        truncated.metadata.message_type = MessageType::Response;
        truncated.to_vec().map(Answer::Reply).map_err(|_| Malformed)
    }
}

/// DNS over TCP without connection state: the initial sequence number is a cookie of the
/// client's address and port, so every segment can be answered from what it carries. A query
/// must arrive whole in one segment (as resolvers send it); the answer goes back with FIN.
pub mod tcp {
    use std::net::Ipv4Addr;

    use etherparse::{PacketBuilder, TcpSlice};

    use super::super::{GatewayConfig, DNS_PORT};
    use super::{Answer, Resolver};
    use crate::wire::MacAddr;

    pub enum Outcome {
        Replied {
            query: bool,
        },
        /// The query is for the upstream resolvers: `reply` holds a bare ACK; the answer goes
        /// out later as one segment with sequence number `seq`, acknowledging `ack`.
        Forward {
            query: Vec<u8>,
            seq: u32,
            ack: u32,
        },
        Ignored,
        Malformed,
    }

    fn cookie(cfg: &GatewayConfig, ip: Ipv4Addr, port: u16) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for b in ip
            .octets()
            .iter()
            .chain(&port.to_be_bytes())
            .chain(&cfg.mac.0)
            .chain(&cfg.ip.octets())
        {
            h = (h ^ u32::from(*b)).wrapping_mul(0x0100_0193);
        }
        h
    }

    pub fn segment(
        resolver: &Resolver,
        cfg: &GatewayConfig,
        src_mac: MacAddr,
        src_ip: Ipv4Addr,
        tcp: &TcpSlice<'_>,
        reply: &mut Vec<u8>,
    ) -> Outcome {
        if tcp.rst() {
            return Outcome::Ignored;
        }
        let isn = cookie(cfg, src_ip, tcp.source_port());
        let base = || {
            PacketBuilder::ethernet2(cfg.mac.0, src_mac.0).ipv4(
                cfg.ip.octets(),
                src_ip.octets(),
                64,
            )
        };
        reply.clear();
        if tcp.syn() && !tcp.ack() {
            let b = base()
                .tcp(DNS_PORT, tcp.source_port(), isn, 65535)
                .syn()
                .ack(tcp.sequence_number().wrapping_add(1));
            return match b.write(reply, &[]) {
                Ok(()) => Outcome::Replied { query: false },
                Err(_) => Outcome::Malformed,
            };
        }
        let data = tcp.payload();
        if !data.is_empty() {
            if tcp.acknowledgment_number() != isn.wrapping_add(1) {
                return Outcome::Ignored; // not a connection we accepted (or a second query)
            }
            if data.len() < 2 {
                return Outcome::Ignored;
            }
            let len = usize::from(u16::from_be_bytes([data[0], data[1]]));
            if data.len() < 2 + len {
                return Outcome::Ignored; // partial query: the client will retransmit
            }
            let mut ack = tcp.sequence_number().wrapping_add(data.len() as u32);
            if tcp.fin() {
                ack = ack.wrapping_add(1);
            }
            let answer = match resolver.resolve(&data[2..2 + len], usize::from(u16::MAX)) {
                Ok(Answer::Reply(a)) => a,
                Ok(Answer::Forward) => {
                    let b = base()
                        .tcp(DNS_PORT, tcp.source_port(), isn.wrapping_add(1), 65535)
                        .ack(ack);
                    return match b.write(reply, &[]) {
                        Ok(()) => Outcome::Forward {
                            query: data[2..2 + len].to_vec(),
                            seq: isn.wrapping_add(1),
                            ack,
                        },
                        Err(_) => Outcome::Malformed,
                    };
                }
                Err(_) => return Outcome::Malformed,
            };
            let mut out = Vec::with_capacity(2 + answer.len());
            out.extend_from_slice(&(answer.len() as u16).to_be_bytes());
            out.extend_from_slice(&answer);
            let b = base()
                .tcp(DNS_PORT, tcp.source_port(), isn.wrapping_add(1), 65535)
                .psh()
                .fin()
                .ack(ack);
            return match b.write(reply, &out) {
                Ok(()) => Outcome::Replied { query: true },
                Err(_) => Outcome::Malformed,
            };
        }
        if tcp.fin() {
            // The client's FIN after ours: acknowledge it. Its ACK field is our next sequence.
            let b = base()
                .tcp(
                    DNS_PORT,
                    tcp.source_port(),
                    tcp.acknowledgment_number(),
                    65535,
                )
                .ack(tcp.sequence_number().wrapping_add(1));
            return match b.write(reply, &[]) {
                Ok(()) => Outcome::Replied { query: false },
                Err(_) => Outcome::Malformed,
            };
        }
        Outcome::Ignored
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;

    fn query(name: &str, ty: RecordType) -> Vec<u8> {
        let mut m = Message::new(7, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        m.to_vec().unwrap()
    }

    fn resolver() -> Resolver {
        let mut r = Resolver::new("web.vswitch".into(), true, false);
        r.set_records(vec![
            ("c1".into(), Ipv4Addr::new(10, 1, 0, 2)),
            ("db".into(), Ipv4Addr::new(10, 1, 0, 2)),
            ("c2".into(), Ipv4Addr::new(10, 1, 0, 3)),
        ]);
        r
    }

    fn ask(r: &Resolver, name: &str, ty: RecordType) -> Message {
        Message::from_vec(&r.answer(&query(name, ty), MAX_UDP_RESPONSE).unwrap()).unwrap()
    }

    #[test]
    fn a_records_by_name_alias_and_domain() {
        let r = resolver();
        for name in ["c1.", "DB.", "c1.web.vswitch."] {
            let m = ask(&r, name, RecordType::A);
            assert_eq!(m.metadata.response_code, ResponseCode::NoError, "{name}");
            assert_eq!(m.metadata.id, 7);
            assert_eq!(m.answers.len(), 1, "{name}");
            assert_eq!(m.answers[0].data, RData::A(A(Ipv4Addr::new(10, 1, 0, 2))));
        }
        // Known name, other type: NODATA.
        let m = ask(&r, "c1.", RecordType::AAAA);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
    }

    #[test]
    fn records_added_and_removed_one_endpoint_at_a_time() {
        let (ip2, ip3) = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 3));
        let mut r = Resolver::new("web.vswitch".into(), true, false);
        r.add_records(&["c1".into(), "Web".into()], ip2);
        r.add_records(&["c2".into(), "web".into()], ip3);
        let a = |r: &Resolver, name: &str| -> Vec<RData> {
            ask(r, name, RecordType::A)
                .answers
                .iter()
                .map(|a| a.data.clone())
                .collect()
        };
        // A shared alias answers with both addresses; each address's PTR is its first name.
        assert_eq!(a(&r, "web."), vec![RData::A(A(ip2)), RData::A(A(ip3))]);
        let ptr = ask(&r, "2.0.1.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(
            ptr.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("c1.web.vswitch.").unwrap()))
        );
        // Removing one endpoint keeps the other's share of the alias, and nothing of its own.
        r.remove_records(&["c1".into(), "WEB".into()], ip2);
        assert_eq!(a(&r, "web."), vec![RData::A(A(ip3))]);
        assert_eq!(
            ask(&r, "c1.web.vswitch.", RecordType::A)
                .metadata
                .response_code,
            ResponseCode::NXDomain
        );
        assert!(ask(&r, "2.0.1.10.in-addr.arpa.", RecordType::PTR)
            .answers
            .is_empty());
        assert_eq!(a(&r, "c2."), vec![RData::A(A(ip3))]);
    }

    #[test]
    fn ptr_nxdomain_and_servfail() {
        let r = resolver();
        let m = ask(&r, "3.0.1.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(
            m.answers[0].data,
            RData::PTR(PTR(Name::from_ascii("c2.web.vswitch.").unwrap()))
        );
        assert_eq!(
            ask(&r, "nope.web.vswitch.", RecordType::A)
                .metadata
                .response_code,
            ResponseCode::NXDomain
        );
        assert_eq!(
            ask(&r, "example.com.", RecordType::A)
                .metadata
                .response_code,
            ResponseCode::ServFail
        );
        // Names disabled (Docker's default bridge): nothing resolves.
        let mut off = Resolver::new("bridge.vswitch".into(), false, false);
        off.set_records(vec![("c1".into(), Ipv4Addr::new(172, 17, 0, 2))]);
        assert_eq!(
            ask(&off, "c1.", RecordType::A).metadata.response_code,
            ResponseCode::ServFail
        );
    }

    #[test]
    fn foreign_names_are_forwarded_when_upstreams_exist() {
        let mut r = Resolver::new("web.vswitch".into(), true, true);
        r.set_records(vec![("c1".into(), Ipv4Addr::new(10, 1, 0, 2))]);
        assert_eq!(
            r.resolve(&query("example.com.", RecordType::A), 512)
                .unwrap(),
            Answer::Forward
        );
        assert!(matches!(
            r.resolve(&query("c1.", RecordType::A), 512).unwrap(),
            Answer::Reply(_)
        ));
        assert!(matches!(
            r.resolve(&query("x.web.vswitch.", RecordType::A), 512)
                .unwrap(),
            Answer::Reply(_)
        ));
        // Names off (default bridge): everything goes upstream, as with Docker's host resolver.
        let off = Resolver::new("bridge.vswitch".into(), false, true);
        assert_eq!(
            off.resolve(&query("c1.", RecordType::A), 512).unwrap(),
            Answer::Forward
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let r = resolver();
        assert!(r.answer(&[], 512).is_err());
        assert!(r.answer(&[1, 2, 3], 512).is_err());
        let mut q = query("c1.", RecordType::A);
        q.truncate(q.len() - 3);
        assert!(r.answer(&q, 512).is_err());
    }
}
