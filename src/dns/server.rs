//! The DNS server: hickory-server's UDP and TCP listeners (it truncates UDP answers to the
//! client's payload size and sets TC, so the client comes back over TCP) with Berth's request
//! handler: names of the cluster zone from the index (`super::answer`), reverse names of
//! cluster IPs and endpoints likewise, everything else through the forwarder. Malformed
//! queries get FORMERR, other opcodes NOTIMP, zone transfers REFUSED.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hickory_proto::op::{Edns, Header, HeaderCounts, LowerQuery, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::{DNSClass, LowerName, Name, Record, RecordType};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;
use hickory_server::Server;

use super::answer::{self, Answer, Zone};
use super::forward::Forwarder;
use super::index::Index;
use super::name;

/// How long a TCP connection may stay idle.
const TCP_TIMEOUT: Duration = Duration::from_secs(10);
/// Responses queued per TCP connection.
const TCP_RESPONSE_BUFFER: usize = 32;
/// How many CNAMEs an answer follows.
const MAX_CHASE: usize = 8;

/// A response: code, whether it is authoritative, and its sections.
#[derive(Debug, Default)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub authoritative: bool,
    pub answers: Vec<Record>,
    pub authorities: Vec<Record>,
    pub additionals: Vec<Record>,
}

/// Answers queries: the cluster zone from the index, the rest upstream.
#[derive(Clone)]
pub struct Handler {
    index: Arc<Index>,
    zone: Arc<Zone>,
    forwarder: Arc<Forwarder>,
    origin: LowerName,
    in_addr: LowerName,
    ip6: LowerName,
}

impl Handler {
    pub fn new(index: Arc<Index>, zone: Zone, forwarder: Arc<Forwarder>) -> Result<Handler, hickory_proto::ProtoError> {
        Ok(Handler {
            origin: LowerName::new(&zone.origin),
            in_addr: LowerName::new(&Name::from_ascii("in-addr.arpa.")?),
            ip6: LowerName::new(&Name::from_ascii("ip6.arpa.")?),
            index,
            zone: Arc::new(zone),
            forwarder,
        })
    }

    /// The reply to one query.
    pub async fn reply(&self, query: &LowerQuery) -> Reply {
        let (name, qtype, class) = (query.name(), query.query_type(), query.query_class());
        if class == DNSClass::IN && self.origin.zone_of(name) {
            return self.local(query.original().name(), name, qtype).await;
        }
        if class == DNSClass::IN && qtype == RecordType::PTR && (self.in_addr.zone_of(name) || self.ip6.zone_of(name)) {
            let owned = labels(name, 0);
            let labels: Vec<&str> = owned.iter().map(|l| l.as_ref()).collect();
            if let Some(ip) = name::reverse_ip(&labels) {
                let found = answer::reverse(self.index.read().reverse(&ip), query.original().name(), self.zone.ttl);
                if let Some(a) = found {
                    return self.reply_of(a);
                }
            }
        }
        self.forward(name, qtype, class).await
    }

    /// A name of the cluster zone, its CNAME (an ExternalName) followed.
    async fn local(&self, original: &Name, lower: &LowerName, qtype: RecordType) -> Reply {
        let mut answer = self.lookup(original, lower, qtype);
        let mut chased = 0;
        while let Some(target) = answer.chase.take() {
            chased += 1;
            if chased > MAX_CHASE {
                break;
            }
            let lower_target = LowerName::new(&target);
            if self.origin.zone_of(&lower_target) {
                let next = self.lookup(&target, &lower_target, qtype);
                answer.answers.extend(next.answers);
                answer.additionals.extend(next.additionals);
                answer.rcode = next.rcode;
                answer.soa = next.soa;
                answer.chase = next.chase;
            } else {
                // the target's answer from upstream; without one the CNAME stands alone
                if let Ok(up) = self.forwarder.resolve(&lower_target, qtype, DNSClass::IN).await {
                    answer.answers.extend(up.answers);
                    if up.rcode == ResponseCode::NXDomain {
                        answer.rcode = up.rcode;
                    }
                }
            }
        }
        self.reply_of(answer)
    }

    fn lookup(&self, original: &Name, lower: &LowerName, qtype: RecordType) -> Answer {
        let below = usize::from(lower.num_labels()).saturating_sub(usize::from(self.origin.num_labels()));
        let owned = labels(lower, below);
        let labels: Vec<&str> = owned.iter().map(|l| l.as_ref()).collect();
        let records = self.index.read();
        answer::lookup(&records, &self.zone, (self.index.synced(), self.index.serial()), original, &labels, qtype)
    }

    fn reply_of(&self, a: Answer) -> Reply {
        let authorities = if a.soa { vec![self.zone.soa(self.index.serial())] } else { vec![] };
        Reply { rcode: a.rcode, authoritative: a.rcode != ResponseCode::ServFail, answers: a.answers, authorities, additionals: a.additionals }
    }

    async fn forward(&self, name: &LowerName, qtype: RecordType, class: DNSClass) -> Reply {
        match self.forwarder.resolve(name, qtype, class).await {
            Ok(up) => Reply { rcode: up.rcode, authoritative: false, answers: up.answers, authorities: up.authorities, additionals: up.additionals },
            Err(e) => {
                tracing::debug!(name = %name, error = %e, "forwarding failed");
                Reply { rcode: ResponseCode::ServFail, ..Default::default() }
            }
        }
    }
}

/// The first `count` labels of `name` as text (those below a zone; all with `count` 0). A
/// label that is not UTF-8 (no name of the zone has one) comes out with replacement characters.
fn labels(name: &LowerName, count: usize) -> Vec<std::borrow::Cow<'_, str>> {
    let count = if count == 0 { usize::MAX } else { count };
    name.iter().take(count).map(String::from_utf8_lossy).collect()
}

#[async_trait::async_trait]
impl RequestHandler for Handler {
    async fn handle_request<R: ResponseHandler, T: Time>(&self, request: &Request, mut response: R) -> ResponseInfo {
        let response_edns = request.edns.as_ref().map(|req| {
            let mut e = Edns::new();
            e.set_max_payload(req.max_payload().max(512));
            e
        });
        let builder = MessageResponseBuilder::new(&request.queries, response_edns.as_ref());
        let mut meta = Metadata::response_from_request(&request.metadata);
        meta.recursion_available = true;
        let reply = if request.metadata.op_code != OpCode::Query {
            Reply { rcode: ResponseCode::NotImp, ..Default::default() }
        } else if request.edns.as_ref().is_some_and(|e| e.version() > 0) {
            Reply { rcode: ResponseCode::BADVERS, ..Default::default() }
        } else if request.queries.len() != 1 {
            Reply { rcode: ResponseCode::FormErr, ..Default::default() }
        } else {
            let query = &request.queries.queries()[0];
            match query.query_type() {
                RecordType::AXFR | RecordType::IXFR => Reply { rcode: ResponseCode::Refused, ..Default::default() },
                RecordType::OPT => Reply { rcode: ResponseCode::FormErr, ..Default::default() },
                _ => self.reply(query).await,
            }
        };
        meta.response_code = reply.rcode;
        meta.authoritative = reply.authoritative;
        let msg = builder.build(meta, reply.answers.iter(), reply.authorities.iter(), std::iter::empty::<&Record>(), reply.additionals.iter());
        match response.send_response(msg).await {
            Ok(info) => info,
            Err(e) => {
                tracing::debug!(error = %e, "sending a DNS response");
                let mut meta = Metadata::response_from_request(&request.metadata);
                meta.response_code = ResponseCode::ServFail;
                ResponseInfo::from(Header { metadata: meta, counts: HeaderCounts::default() })
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("binding {addr}: {source}")]
pub struct BindError {
    addr: SocketAddr,
    #[source]
    source: std::io::Error,
}

/// A server answering with `handler` on UDP and TCP port `port` of each of `addresses`.
pub async fn serve(addresses: &[IpAddr], port: u16, handler: Handler) -> Result<Server<Handler>, BindError> {
    let mut server = Server::new(handler);
    for ip in addresses {
        let addr = SocketAddr::new(*ip, port);
        let udp = tokio::net::UdpSocket::bind(addr).await.map_err(|source| BindError { addr, source })?;
        let tcp = tokio::net::TcpListener::bind(addr).await.map_err(|source| BindError { addr, source })?;
        server.register_socket(udp);
        server.register_listener(tcp, TCP_TIMEOUT, TCP_RESPONSE_BUFFER);
    }
    Ok(server)
}
