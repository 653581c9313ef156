//! Names outside the cluster zone go to the node's upstream resolvers, as CoreDNS's `forward .
//! /etc/resolv.conf` in k3s: the nameservers of the kubelet-style `--resolv-conf` (read again
//! when the file changes; the cluster DNS addresses themselves left out, so a node whose
//! resolv.conf names them does not loop), tried in order. A query goes out over UDP from a
//! socket of its own (random source port, random ID, the answer checked against both and the
//! question), again over TCP when the answer comes back truncated. Answers go through the
//! cache (`super::cache`).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query};
use hickory_proto::rr::{DNSClass, LowerName, Name, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::cache::{Cache, Upstream, DEFAULT_CAPACITY};

/// How long one upstream gets to answer before the next is tried.
const TRY_TIMEOUT: Duration = Duration::from_secs(2);
/// How often the resolv.conf is checked for changes.
const RELOAD_EVERY: Duration = Duration::from_secs(5);
/// The EDNS payload size announced upstream (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;

#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("no upstream resolvers in {0}")]
    NoUpstreams(String),
    #[error("no upstream resolver answered ({0})")]
    Failed(String),
}

/// The upstream resolvers of a resolv.conf text: its nameservers on port 53, without `own`.
pub fn upstreams(text: &str, own: &[IpAddr]) -> Vec<SocketAddr> {
    let (servers, _, _) = crate::node::dns::parse_resolv_conf(text);
    let mut out: Vec<SocketAddr> = vec![];
    for s in servers {
        // a link-local IPv6 server with a zone (fe80::1%eth0) cannot be named by address alone
        let Ok(ip) = s.parse::<IpAddr>() else { continue };
        let addr = SocketAddr::new(ip, 53);
        if !own.contains(&ip) && !out.contains(&addr) {
            out.push(addr);
        }
    }
    out
}

struct Servers {
    list: Vec<SocketAddr>,
    modified: Option<SystemTime>,
}

/// Forwards queries to the upstream resolvers, through the cache.
pub struct Forwarder {
    resolv_conf: PathBuf,
    own: Vec<IpAddr>,
    servers: RwLock<Servers>,
    cache: Cache,
    /// Queries sent upstream (cache misses), for the logs and the benchmark.
    sent: std::sync::atomic::AtomicU64,
}

impl Forwarder {
    /// A forwarder to the resolvers of `resolv_conf`, never to `own` (the cluster DNS addresses).
    pub async fn new(resolv_conf: PathBuf, own: Vec<IpAddr>) -> Arc<Forwarder> {
        let f = Arc::new(Forwarder {
            resolv_conf,
            own,
            servers: RwLock::new(Servers { list: vec![], modified: None }),
            cache: Cache::new(DEFAULT_CAPACITY),
            sent: Default::default(),
        });
        f.reload().await;
        f
    }

    /// Reads the resolv.conf again when it changed since the last read.
    async fn reload(&self) {
        let path = &self.resolv_conf;
        let modified = match tokio::fs::metadata(path).await {
            Ok(m) => m.modified().ok(),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the upstream resolvers");
                return;
            }
        };
        if modified.is_some() && self.servers.read().unwrap_or_else(|e| e.into_inner()).modified == modified {
            return;
        }
        match tokio::fs::read_to_string(path).await {
            Ok(text) => {
                let list = upstreams(&text, &self.own);
                if list.is_empty() {
                    tracing::warn!(path = %path.display(), "no upstream resolvers: names outside the cluster get SERVFAIL");
                } else {
                    tracing::info!(path = %path.display(), servers = ?list, "upstream resolvers");
                }
                *self.servers.write().unwrap_or_else(|e| e.into_inner()) = Servers { list, modified };
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot read the upstream resolvers"),
        }
    }

    /// Follows changes of the resolv.conf until `stop`.
    pub async fn follow(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = super::stopped(&mut stop) => return,
                _ = tokio::time::sleep(RELOAD_EVERY) => self.reload().await,
            }
        }
    }

    /// Queries sent upstream so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Entries in the cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// The answer for (`name`, `qtype`, `class`): from the cache, else from the first upstream
    /// resolver that answers.
    pub async fn resolve(&self, name: &LowerName, qtype: RecordType, class: DNSClass) -> Result<Upstream, ForwardError> {
        let key = (name.clone(), qtype, class);
        if let Some(hit) = self.cache.get(&key, Instant::now()) {
            return Ok(hit);
        }
        let servers = self.servers.read().unwrap_or_else(|e| e.into_inner()).list.clone();
        if servers.is_empty() {
            return Err(ForwardError::NoUpstreams(self.resolv_conf.display().to_string()));
        }
        let mut failures = vec![];
        for server in servers {
            let id = fastrand::u16(..);
            let question = Query::query(Name::from(name.clone()), qtype);
            self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            match exchange(server, id, question.clone(), class).await {
                Ok(msg) => {
                    let answer =
                        Upstream { rcode: msg.metadata.response_code, answers: msg.answers, authorities: msg.authorities, additionals: msg.additionals };
                    self.cache.put(key, &answer, Instant::now());
                    return Ok(answer);
                }
                Err(e) => {
                    tracing::debug!(%server, name = %name, error = %e, "upstream resolver failed");
                    failures.push(format!("{server}: {e}"));
                }
            }
        }
        Err(ForwardError::Failed(failures.join("; ")))
    }
}

/// The query message for `question` with `id`.
fn query_bytes(id: u16, mut question: Query, class: DNSClass) -> std::io::Result<Vec<u8>> {
    question.query_class = class;
    let mut msg = Message::new(id, MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(question);
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    msg.set_edns(edns);
    msg.to_vec().map_err(std::io::Error::other)
}

/// Whether `msg` answers query `id` for `question`.
fn answers(msg: &Message, id: u16, question: &Query) -> bool {
    msg.metadata.id == id && msg.metadata.message_type == MessageType::Response && msg.queries.len() == 1 && {
        let q = &msg.queries[0];
        q.name() == question.name() && q.query_type() == question.query_type()
    }
}

/// One query to `server`: over UDP, then TCP when the answer is truncated.
async fn exchange(server: SocketAddr, id: u16, question: Query, class: DNSClass) -> std::io::Result<Message> {
    let bytes = query_bytes(id, question.clone(), class)?;
    let deadline = tokio::time::Instant::now() + TRY_TIMEOUT;
    let timed_out = || std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer");
    let local: SocketAddr = if server.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { (std::net::Ipv6Addr::UNSPECIFIED, 0).into() };
    let sock = tokio::net::UdpSocket::bind(local).await?;
    sock.connect(server).await?;
    sock.send(&bytes).await?;
    let mut buf = vec![0u8; 4096];
    let msg = loop {
        let n = tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await.map_err(|_| timed_out())??;
        match Message::from_vec(&buf[..n]) {
            Ok(m) if answers(&m, id, &question) => break m,
            // not ours (a late answer to someone else, garbage): keep waiting
            _ => continue,
        }
    };
    if !msg.metadata.truncation {
        return Ok(msg);
    }
    tokio::time::timeout_at(deadline, exchange_tcp(server, &bytes, id, &question)).await.map_err(|_| timed_out())?
}

async fn exchange_tcp(server: SocketAddr, bytes: &[u8], id: u16, question: &Query) -> std::io::Result<Message> {
    let mut conn = tokio::net::TcpStream::connect(server).await?;
    let len = u16::try_from(bytes.len()).map_err(std::io::Error::other)?;
    let mut framed = Vec::with_capacity(bytes.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(bytes);
    conn.write_all(&framed).await?;
    let len = conn.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    conn.read_exact(&mut buf).await?;
    let msg = Message::from_vec(&buf).map_err(std::io::Error::other)?;
    if !answers(&msg, id, question) {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "the answer is not for the query"));
    }
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_come_from_resolv_conf_without_the_cluster_dns() {
        let text = "# managed\nnameserver 127.0.0.53\nnameserver 10.43.0.10\nnameserver fe80::1%eth0\nnameserver ::1\nnameserver 127.0.0.53\nsearch lan\n";
        let own = ["10.43.0.10".parse().unwrap()];
        let got: Vec<String> = upstreams(text, &own).iter().map(|a| a.to_string()).collect();
        assert_eq!(got, ["127.0.0.53:53", "[::1]:53"]);
    }

    #[test]
    fn answers_are_matched_to_their_query() {
        let q = Query::query(Name::from_ascii("www.example.com.").unwrap(), RecordType::A);
        let bytes = query_bytes(7, q.clone(), DNSClass::IN).unwrap();
        let mut msg = Message::from_vec(&bytes).unwrap();
        assert!(!answers(&msg, 7, &q), "a query is not an answer");
        msg.metadata.message_type = MessageType::Response;
        assert!(answers(&msg, 7, &q));
        assert!(!answers(&msg, 8, &q));
        let other = Query::query(Name::from_ascii("www.example.org.").unwrap(), RecordType::A);
        assert!(!answers(&msg, 7, &other));
        assert_eq!(msg.edns.as_ref().map(|e| e.max_payload()), Some(EDNS_PAYLOAD));
    }
}
