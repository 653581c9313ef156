//! DNS for the cluster DNS tests and benchmark: a tiny client (one query over UDP or TCP,
//! hickory-proto's wire format), a fake upstream resolver on a loopback address the test picks
//! (answers from a table, counts what it is asked, never reaches out), and unique addresses so
//! concurrent tests never bind the same cluster DNS address.
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use hickory_proto;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A cluster DNS address and the /24 service CIDR that holds it, unique to this test process
/// and call: 10.{220 + pid % 30}.{n}.10 in 10.{220 + pid % 30}.{n}.0/24, n from the call count
/// and the rest of the pid (clear of the harness's pod CIDRs, 10.160-219.x.0/24).
pub fn unique_cluster_dns() -> (IpAddr, String) {
    let pid = std::process::id();
    let n = (NEXT.fetch_add(1, Ordering::SeqCst) + pid / 30 * 16) % 250;
    let b = 220 + pid % 30;
    (IpAddr::V4(Ipv4Addr::new(10, b as u8, n as u8, 10)), format!("10.{b}.{n}.0/24"))
}

/// A loopback address for a fake upstream, unique to this test process and call.
pub fn unique_loopback() -> IpAddr {
    let pid = std::process::id();
    let n = (NEXT.fetch_add(1, Ordering::SeqCst) + pid / 200 * 16) % 250;
    IpAddr::V4(Ipv4Addr::new(127, (20 + pid % 200) as u8, n as u8, 53))
}

/// One query for (`name`, `qtype`) to `server`; over TCP when `tcp`, with an EDNS OPT when
/// `edns` (payload 1232). Fails after 3 s.
pub async fn query(server: SocketAddr, name: &str, qtype: RecordType, tcp: bool, edns: bool) -> std::io::Result<Message> {
    let mut msg = Message::new(fastrand::u16(..), MessageType::Query, OpCode::Query);
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).map_err(std::io::Error::other)?, qtype));
    if edns {
        let mut e = Edns::new();
        e.set_max_payload(1232);
        msg.set_edns(e);
    }
    exchange(server, &msg.to_vec().map_err(std::io::Error::other)?, tcp).await
}

/// Sends raw query bytes and reads the answer.
pub async fn exchange(server: SocketAddr, bytes: &[u8], tcp: bool) -> std::io::Result<Message> {
    let work = async {
        let answer = if tcp {
            let mut c = tokio::net::TcpStream::connect(server).await?;
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(bytes);
            c.write_all(&framed).await?;
            let len = c.read_u16().await?;
            let mut buf = vec![0u8; len as usize];
            c.read_exact(&mut buf).await?;
            buf
        } else {
            let s = tokio::net::UdpSocket::bind("0.0.0.0:0").await?;
            s.connect(server).await?;
            s.send(bytes).await?;
            let mut buf = vec![0u8; 65535];
            let n = s.recv(&mut buf).await?;
            buf.truncate(n);
            buf
        };
        Message::from_vec(&answer).map_err(std::io::Error::other)
    };
    tokio::time::timeout(Duration::from_secs(3), work).await.map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no DNS answer"))?
}

/// The answer's records of type `qtype` as text (addresses, names, SRV "prio weight port target").
pub fn rdata(m: &Message, qtype: RecordType) -> Vec<String> {
    let mut v: Vec<String> = m.answers.iter().filter(|r| r.record_type() == qtype).map(|r| r.data.to_string()).collect();
    v.sort();
    v
}

/// A fake upstream resolver on `addr`:53 (UDP): A records from its table, NXDOMAIN with an SOA
/// (negative TTL 30) for the rest; counts the questions it gets by name.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    asked: Arc<std::sync::Mutex<BTreeMap<String, u64>>>,
    total: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    /// Starts it on `ip`:53 with `table` (lower-case name with its trailing dot → addresses; TTL 60).
    pub async fn start(ip: IpAddr, table: BTreeMap<String, Vec<Ipv4Addr>>) -> FakeUpstream {
        let addr = SocketAddr::new(ip, 53);
        let sock = tokio::net::UdpSocket::bind(addr).await.expect("bind the fake upstream");
        let asked: Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Default::default();
        let total = Arc::new(AtomicU64::new(0));
        let (a, t) = (asked.clone(), total.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let Ok((n, from)) = sock.recv_from(&mut buf).await else { return };
                let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
                let Some(question) = q.queries.first().cloned() else { continue };
                let name = question.name().to_lowercase().to_ascii();
                *a.lock().unwrap().entry(name.clone()).or_default() += 1;
                t.fetch_add(1, Ordering::SeqCst);
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.metadata.recursion_desired = q.metadata.recursion_desired;
                r.metadata.recursion_available = true;
                r.add_query(question.clone());
                match table.get(&name) {
                    Some(ips) => {
                        if question.query_type() == RecordType::A {
                            for ip in ips {
                                r.add_answer(Record::from_rdata(question.name().clone(), 60, RData::A(A(*ip))));
                            }
                        }
                    }
                    None => {
                        r.metadata.response_code = ResponseCode::NXDomain;
                        let zone = Name::from_ascii("test.").unwrap();
                        r.add_authority(Record::from_rdata(zone.clone(), 30, RData::SOA(SOA::new(zone.clone(), zone, 1, 7200, 1800, 86400, 30))));
                    }
                }
                if let Ok(bytes) = r.to_vec() {
                    let _ = sock.send_to(&bytes, from).await;
                }
            }
        });
        FakeUpstream { addr, asked, total, task }
    }

    /// How often `name` (lower-case, trailing dot) was asked.
    pub fn asked(&self, name: &str) -> u64 {
        self.asked.lock().unwrap().get(name).copied().unwrap_or(0)
    }

    /// Questions asked in all.
    pub fn total(&self) -> u64 {
        self.total.load(Ordering::SeqCst)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
