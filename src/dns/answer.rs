//! The answers of the cluster zone, as the Kubernetes DNS specification and CoreDNS's
//! kubernetes plugin give them: from a parsed name, the query type and the index, the records
//! of the answer and additional sections and the response code. NXDOMAIN and NODATA carry the
//! zone's SOA (in the authority section); an ExternalName's CNAME target is left to the caller
//! to chase. Pure: no sockets, no locks.

use std::net::IpAddr;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::rdata::{A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

use super::index::{Endpoint, Entry, Kind, Port, Records, Reverse};
use super::name::{self, ZoneName};

/// The cluster zone: its origin, the TTL of its records and its name server's addresses.
#[derive(Debug, Clone)]
pub struct Zone {
    /// `cluster.local.`
    pub origin: Name,
    /// The TTL of every record of the zone (CoreDNS's kubernetes plugin default: 5 s).
    pub ttl: u32,
    /// The cluster DNS addresses (`ns.dns.<zone>`).
    pub addresses: Vec<IpAddr>,
    nameserver: Name,
    hostmaster: Name,
}

impl Zone {
    pub fn new(domain: &str, ttl: u32, addresses: Vec<IpAddr>) -> Result<Zone, hickory_proto::ProtoError> {
        let origin = Name::from_ascii(format!("{}.", domain.trim_end_matches('.')))?;
        let nameserver = Name::from_ascii("ns.dns")?.append_domain(&origin)?;
        let hostmaster = Name::from_ascii("hostmaster")?.append_domain(&origin)?;
        Ok(Zone { origin, ttl, addresses, nameserver, hostmaster })
    }

    /// The zone's SOA record with `serial`.
    pub fn soa(&self, serial: u32) -> Record {
        let soa = SOA::new(self.nameserver.clone(), self.hostmaster.clone(), serial, 7200, 1800, 86400, self.ttl);
        Record::from_rdata(self.origin.clone(), self.ttl, RData::SOA(soa))
    }
}

/// What to answer.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    pub rcode: ResponseCode,
    pub answers: Vec<Record>,
    pub additionals: Vec<Record>,
    /// The zone's SOA goes in the authority section (NXDOMAIN, NODATA).
    pub soa: bool,
    /// An ExternalName's target, to resolve for the same type and append.
    pub chase: Option<Name>,
}

impl Answer {
    fn records(answers: Vec<Record>) -> Answer {
        if answers.is_empty() {
            return Answer::nodata();
        }
        Answer { answers, ..Default::default() }
    }

    fn nodata() -> Answer {
        Answer { soa: true, ..Default::default() }
    }

    fn nxdomain() -> Answer {
        Answer { rcode: ResponseCode::NXDomain, soa: true, ..Default::default() }
    }
}

/// An address record (A or AAAA by the address's family) when it is of type `qtype`.
fn address(owner: &Name, ttl: u32, ip: &IpAddr, qtype: RecordType) -> Option<Record> {
    match (ip, qtype) {
        (IpAddr::V4(v4), RecordType::A) => Some(Record::from_rdata(owner.clone(), ttl, RData::A(A(*v4)))),
        (IpAddr::V6(v6), RecordType::AAAA) => Some(Record::from_rdata(owner.clone(), ttl, RData::AAAA(AAAA(*v6)))),
        _ => None,
    }
}

/// Both address records of `ip` for the additional section.
fn glue(owner: &Name, ttl: u32, ip: &IpAddr) -> Option<Record> {
    address(owner, ttl, ip, RecordType::A).or_else(|| address(owner, ttl, ip, RecordType::AAAA))
}

/// SRV records with CoreDNS's weights (priority 0, each weight 100 / the number of records).
fn srv_records(owner: &Name, ttl: u32, targets: Vec<(u16, Name)>) -> Vec<Record> {
    let weight = u16::try_from(100 / targets.len().max(1)).unwrap_or(1);
    let mut out: Vec<Record> = vec![];
    for (port, target) in targets {
        let r = Record::from_rdata(owner.clone(), ttl, RData::SRV(SRV::new(0, weight, port, target)));
        if !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

fn port_matches(p: &Port, port: Option<&str>, protocol: Option<&str>) -> bool {
    port.is_none_or(|n| n == p.name) && protocol.is_none_or(|proto| proto == p.protocol)
}

/// The answer for `qname` (labels below the zone in `labels`, lower-cased) of type `qtype`.
/// `synced`: the index holds a complete list; until then a missing name is SERVFAIL, not
/// NXDOMAIN (as CoreDNS before its first sync). `serial`: the zone's SOA serial.
pub fn lookup(records: &Records, zone: &Zone, (synced, serial): (bool, u32), qname: &Name, labels: &[&str], qtype: RecordType) -> Answer {
    let ttl = zone.ttl;
    let answer = match name::parse(labels) {
        ZoneName::Apex => match qtype {
            RecordType::SOA => Answer::records(vec![zone.soa(serial)]),
            RecordType::NS => Answer {
                answers: vec![Record::from_rdata(qname.clone(), ttl, RData::NS(NS(zone.nameserver.clone())))],
                additionals: zone.addresses.iter().filter_map(|ip| glue(&zone.nameserver, ttl, ip)).collect(),
                ..Default::default()
            },
            _ => Answer::nodata(),
        },
        ZoneName::Branch => Answer::nodata(),
        ZoneName::Namespace { namespace } => {
            if records.has_namespace(namespace) {
                Answer::nodata()
            } else {
                Answer::nxdomain()
            }
        }
        ZoneName::NameServer => Answer::records(zone.addresses.iter().filter_map(|ip| address(qname, ttl, ip, qtype)).collect()),
        ZoneName::DnsVersion => match qtype {
            RecordType::TXT => Answer::records(vec![Record::from_rdata(qname.clone(), ttl, RData::TXT(TXT::new(vec![name::SCHEMA_VERSION.into()])))]),
            _ => Answer::nodata(),
        },
        ZoneName::Pod { ip, .. } => Answer::records(address(qname, ttl, &ip, qtype).into_iter().collect()),
        ZoneName::Service { namespace, service } => match records.service(namespace, service) {
            None => Answer::nxdomain(),
            Some(entry) => service_answer(entry, qname, ttl, qtype),
        },
        ZoneName::Endpoint { namespace, service, host } => {
            let endpoints: Vec<&Endpoint> = match records.service(namespace, service) {
                Some(e) if !matches!(e.kind, Kind::ExternalName(_)) => e.endpoints.iter().filter(|ep| ep.host == host).collect(),
                _ => vec![],
            };
            if endpoints.is_empty() {
                Answer::nxdomain()
            } else {
                Answer::records(endpoints.iter().filter_map(|ep| address(qname, ttl, &ep.ip, qtype)).collect())
            }
        }
        ZoneName::Port { namespace, service, port, protocol } => match records.service(namespace, service) {
            Some(entry) => {
                let (answers, additionals) = srv(entry, qname, ttl, Some(port), Some(protocol));
                if answers.is_empty() {
                    Answer::nxdomain()
                } else if qtype == RecordType::SRV {
                    Answer { answers, additionals, ..Default::default() }
                } else {
                    Answer::nodata()
                }
            }
            None => Answer::nxdomain(),
        },
        ZoneName::Invalid => Answer::nxdomain(),
    };
    if answer.rcode == ResponseCode::NXDomain && !synced {
        return Answer { rcode: ResponseCode::ServFail, ..Default::default() };
    }
    answer
}

fn service_answer(entry: &Entry, qname: &Name, ttl: u32, qtype: RecordType) -> Answer {
    match &entry.kind {
        Kind::ExternalName(target) => {
            let cname = Record::from_rdata(qname.clone(), ttl, RData::CNAME(CNAME(target.clone())));
            let chase = (qtype != RecordType::CNAME).then(|| target.clone());
            Answer { answers: vec![cname], chase, ..Default::default() }
        }
        Kind::ClusterIp(ips) => match qtype {
            RecordType::SRV => {
                let (answers, additionals) = srv(entry, qname, ttl, None, None);
                Answer { answers, additionals, soa: false, ..Default::default() }.or_nodata()
            }
            _ => Answer::records(ips.iter().filter_map(|ip| address(qname, ttl, ip, qtype)).collect()),
        },
        // A headless Service without ready endpoints does not exist (the specification).
        Kind::Headless if entry.endpoints.is_empty() => Answer::nxdomain(),
        Kind::Headless => match qtype {
            RecordType::SRV => {
                let (answers, additionals) = srv(entry, qname, ttl, None, None);
                Answer { answers, additionals, ..Default::default() }.or_nodata()
            }
            _ => {
                let mut answers: Vec<Record> = vec![];
                for ep in &entry.endpoints {
                    if let Some(r) = address(qname, ttl, &ep.ip, qtype) {
                        if !answers.contains(&r) {
                            answers.push(r);
                        }
                    }
                }
                Answer::records(answers)
            }
        },
    }
}

impl Answer {
    fn or_nodata(self) -> Answer {
        if self.answers.is_empty() {
            Answer::nodata()
        } else {
            self
        }
    }
}

/// The SRV records of a Service's ports (those matching `port` and `protocol` when given) and
/// the address records of their targets: the Service name for a cluster IP, each ready
/// endpoint (with its slice's port) for a headless Service.
fn srv(entry: &Entry, owner: &Name, ttl: u32, port: Option<&str>, protocol: Option<&str>) -> (Vec<Record>, Vec<Record>) {
    let mut targets = vec![];
    let mut additionals: Vec<Record> = vec![];
    match &entry.kind {
        Kind::ExternalName(_) => {}
        Kind::ClusterIp(ips) => {
            for p in entry.ports.iter().filter(|p| port_matches(p, port, protocol)) {
                targets.push((p.port, Name::clone(&entry.fqdn)));
            }
            if !targets.is_empty() {
                additionals.extend(ips.iter().filter_map(|ip| glue(&entry.fqdn, ttl, ip)));
            }
        }
        Kind::Headless => {
            for ep in &entry.endpoints {
                let before = targets.len();
                for p in ep.ports.iter().filter(|p| port_matches(p, port, protocol)) {
                    targets.push((p.port, Name::clone(&ep.fqdn)));
                }
                if targets.len() > before {
                    if let Some(g) = glue(&ep.fqdn, ttl, &ep.ip) {
                        if !additionals.contains(&g) {
                            additionals.push(g);
                        }
                    }
                }
            }
        }
    }
    (srv_records(owner, ttl, targets), additionals)
}

/// The PTR answer for an address the index knows: the Service whose cluster IP it is, else
/// every endpoint that has it (CoreDNS's order); None when it knows none (the query goes on
/// to the upstream resolvers).
pub fn reverse(reverse: Option<&Reverse>, qname: &Name, ttl: u32) -> Option<Answer> {
    let r = reverse?;
    let names: Vec<&Name> = match r.services.first() {
        Some(svc) => vec![svc.as_ref()],
        None => r.endpoints.iter().map(|n| n.as_ref()).collect(),
    };
    if names.is_empty() {
        return None;
    }
    Some(Answer::records(names.into_iter().map(|n| Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(n.clone())))).collect()))
}

#[cfg(test)]
mod tests {
    use super::super::index::tests::{slice, svc};
    use super::*;
    use serde_json::json;

    fn n(s: &str) -> Name {
        Name::from_ascii(s).unwrap()
    }

    fn zone() -> Zone {
        Zone::new("cluster.local", 5, vec!["10.43.0.10".parse().unwrap()]).unwrap()
    }

    /// The answer for a name of the zone, as the server would ask.
    fn ask(r: &Records, name: &str, qtype: RecordType) -> Answer {
        let qname = n(name);
        let labels: Vec<String> = qname.iter().map(|l| String::from_utf8_lossy(l).to_lowercase()).collect();
        let below: Vec<&str> = labels.iter().map(String::as_str).take(labels.len() - 2).collect();
        lookup(r, &zone(), (true, 1), &qname, &below, qtype)
    }

    fn rdata(a: &Answer) -> Vec<String> {
        a.answers.iter().map(|r| format!("{} {} {}", r.name, r.ttl, r.data)).collect()
    }

    fn records() -> Records {
        let mut r = Records::new("cluster.local");
        r.apply_service(&svc(
            json!({"metadata": {"namespace": "default", "name": "kubernetes"}, "spec": {"clusterIP": "10.43.0.1", "ports": [{"name": "https", "port": 443}]}}),
        ));
        r.apply_service(&svc(
            json!({"metadata": {"namespace": "shop", "name": "db"}, "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}, {"name": "metrics", "port": 9187}]}}),
        ));
        r.apply_service(&svc(json!({"metadata": {"namespace": "shop", "name": "empty"}, "spec": {"clusterIP": "None"}})));
        r.apply_service(&svc(json!({"metadata": {"namespace": "shop", "name": "ext"}, "spec": {"type": "ExternalName", "externalName": "www.example.com"}})));
        r.apply_slice(&slice(
            "shop",
            "db-1",
            "db",
            json!([{"addresses": ["10.42.0.5"], "hostname": "db-0"}, {"addresses": ["10.42.0.6"], "hostname": "db-1"}, {"addresses": ["10.42.0.9"], "conditions": {"ready": false}}]),
            json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
        ));
        r
    }

    #[test]
    fn cluster_ip_services_answer_a_srv_and_nodata() {
        let r = records();
        let a = ask(&r, "kubernetes.default.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&a), ["kubernetes.default.svc.cluster.local. 5 10.43.0.1"]);
        assert_eq!(a.rcode, ResponseCode::NoError);
        // case does not matter; the answer keeps the question's case
        let a = ask(&r, "Kubernetes.Default.SVC.cluster.local.", RecordType::A);
        assert_eq!(rdata(&a), ["Kubernetes.Default.SVC.cluster.local. 5 10.43.0.1"]);
        let aaaa = ask(&r, "kubernetes.default.svc.cluster.local.", RecordType::AAAA);
        assert!(aaaa.answers.is_empty() && aaaa.soa && aaaa.rcode == ResponseCode::NoError, "NODATA");
        let srv = ask(&r, "_https._tcp.kubernetes.default.svc.cluster.local.", RecordType::SRV);
        assert_eq!(rdata(&srv), ["_https._tcp.kubernetes.default.svc.cluster.local. 5 0 100 443 kubernetes.default.svc.cluster.local."]);
        assert_eq!(srv.additionals.len(), 1);
        assert_eq!(ask(&r, "_http._tcp.kubernetes.default.svc.cluster.local.", RecordType::SRV).rcode, ResponseCode::NXDomain);
        assert_eq!(ask(&r, "_https._udp.kubernetes.default.svc.cluster.local.", RecordType::SRV).rcode, ResponseCode::NXDomain);
        let missing = ask(&r, "nope.default.svc.cluster.local.", RecordType::A);
        assert!(missing.rcode == ResponseCode::NXDomain && missing.soa);
        assert_eq!(ask(&r, "default.svc.cluster.local.", RecordType::A).rcode, ResponseCode::NoError);
        assert_eq!(ask(&r, "nowhere.svc.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
        assert_eq!(ask(&r, "cluster.local.", RecordType::SOA).answers.len(), 1);
        assert_eq!(ask(&r, "foo.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
        assert_eq!(rdata(&ask(&r, "dns-version.cluster.local.", RecordType::TXT)), ["dns-version.cluster.local. 5 1.1.0"]);
        assert_eq!(rdata(&ask(&r, "ns.dns.cluster.local.", RecordType::A)), ["ns.dns.cluster.local. 5 10.43.0.10"]);
    }

    #[test]
    fn headless_services_answer_their_ready_endpoints() {
        let r = records();
        let a = ask(&r, "db.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&a), ["db.shop.svc.cluster.local. 5 10.42.0.5", "db.shop.svc.cluster.local. 5 10.42.0.6"]);
        assert_eq!(rdata(&ask(&r, "db-1.db.shop.svc.cluster.local.", RecordType::A)), ["db-1.db.shop.svc.cluster.local. 5 10.42.0.6"]);
        assert_eq!(ask(&r, "db-9.db.shop.svc.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
        let srv = ask(&r, "_pg._tcp.db.shop.svc.cluster.local.", RecordType::SRV);
        assert_eq!(
            rdata(&srv),
            [
                "_pg._tcp.db.shop.svc.cluster.local. 5 0 50 5432 db-0.db.shop.svc.cluster.local.",
                "_pg._tcp.db.shop.svc.cluster.local. 5 0 50 5432 db-1.db.shop.svc.cluster.local."
            ]
        );
        let glue: Vec<String> = srv.additionals.iter().map(|r| format!("{} {}", r.name, r.data)).collect();
        assert_eq!(glue, ["db-0.db.shop.svc.cluster.local. 10.42.0.5", "db-1.db.shop.svc.cluster.local. 10.42.0.6"]);
        // a port of the Service that no slice has
        assert_eq!(ask(&r, "_metrics._tcp.db.shop.svc.cluster.local.", RecordType::SRV).rcode, ResponseCode::NXDomain);
        // no ready endpoints: the name does not exist
        assert_eq!(ask(&r, "empty.shop.svc.cluster.local.", RecordType::A).rcode, ResponseCode::NXDomain);
    }

    #[test]
    fn external_names_pods_and_reverse_names() {
        let r = records();
        let a = ask(&r, "ext.shop.svc.cluster.local.", RecordType::A);
        assert_eq!(rdata(&a), ["ext.shop.svc.cluster.local. 5 www.example.com."]);
        assert_eq!(a.chase, Some(n("www.example.com.")));
        assert_eq!(ask(&r, "ext.shop.svc.cluster.local.", RecordType::CNAME).chase, None);
        assert_eq!(rdata(&ask(&r, "10-42-0-7.shop.pod.cluster.local.", RecordType::A)), ["10-42-0-7.shop.pod.cluster.local. 5 10.42.0.7"]);
        assert!(ask(&r, "10-42-0-7.shop.pod.cluster.local.", RecordType::AAAA).answers.is_empty());
        let ptr = reverse(r.reverse(&"10.43.0.1".parse().unwrap()), &n("1.0.43.10.in-addr.arpa."), 5).unwrap();
        assert_eq!(rdata(&ptr), ["1.0.43.10.in-addr.arpa. 5 kubernetes.default.svc.cluster.local."]);
        let ptr = reverse(r.reverse(&"10.42.0.6".parse().unwrap()), &n("6.0.42.10.in-addr.arpa."), 5).unwrap();
        assert_eq!(rdata(&ptr), ["6.0.42.10.in-addr.arpa. 5 db-1.db.shop.svc.cluster.local."]);
        assert!(reverse(r.reverse(&"10.42.0.9".parse().unwrap()), &n("9.0.42.10.in-addr.arpa."), 5).is_none());
    }

    #[test]
    fn before_the_first_list_missing_names_are_server_failures() {
        let r = Records::new("cluster.local");
        let qname = n("web.shop.svc.cluster.local.");
        let a = lookup(&r, &zone(), (false, 1), &qname, &["web", "shop", "svc"], RecordType::A);
        assert_eq!(a.rcode, ResponseCode::ServFail);
    }
}
