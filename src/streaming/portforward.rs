//! Port forwarding into a pod: the client opens a pair of SPDY streams (error and data,
//! sharing a request ID and naming the port) per connection; each pair becomes a TCP
//! connection to localhost:port inside the pod's network namespace.
use super::spdy::{header, Session, Stream, StreamWriter};
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// How long the second stream of a pair may take to arrive.
const PAIR_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Pair {
    data: Option<Stream>,
    error: Option<Stream>,
    since: Option<Instant>,
}

/// Serve one port-forward session until the client closes it.
pub async fn serve(session: Session, mut incoming: mpsc::Receiver<Stream>, netns: Option<PathBuf>, pod: String) {
    let mut pairs: HashMap<String, Pair> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    while let Some(stream) = incoming.recv().await {
        // Drop pairs whose other half never came.
        let now = Instant::now();
        let stale: Vec<String> = pairs.iter().filter(|(_, p)| p.since.is_some_and(|t| now.duration_since(t) > PAIR_TIMEOUT)).map(|(k, _)| k.clone()).collect();
        for k in stale {
            if let Some(p) = pairs.remove(&k) {
                for s in [p.data, p.error].into_iter().flatten() {
                    s.writer.reset(super::spdy::frame::rst::REFUSED_STREAM).await;
                }
            }
        }
        let kind = header(&stream.headers, "streamtype").unwrap_or("").to_string();
        // Old clients send no request ID: a pair is then an error stream and the data stream after it.
        let request_id = match header(&stream.headers, "requestid") {
            Some(r) => r.to_string(),
            None if kind == "data" => stream.id.saturating_sub(2).to_string(),
            None => stream.id.to_string(),
        };
        let entry = pairs.entry(request_id.clone()).or_default();
        entry.since.get_or_insert(now);
        match kind.as_str() {
            "data" if entry.data.is_none() => entry.data = Some(stream),
            "error" if entry.error.is_none() => entry.error = Some(stream),
            _ => {
                tracing::debug!(stream = stream.id, kind, "unexpected port-forward stream");
                stream.writer.reset(super::spdy::frame::rst::PROTOCOL_ERROR).await;
                continue;
            }
        }
        if entry.data.is_some() && entry.error.is_some() {
            if let Some(Pair { data: Some(data), error: Some(error), .. }) = pairs.remove(&request_id) {
                tasks.spawn(forward(data, error.writer, netns.clone(), pod.clone()));
            }
        }
    }
    // The client closed the session: its streams are done too.
    tasks.shutdown().await;
    session.shutdown().await;
}

async fn forward(mut data: Stream, error: StreamWriter, netns: Option<PathBuf>, pod: String) {
    let port = header(&data.headers, "port").and_then(|p| p.parse::<u16>().ok()).filter(|p| *p > 0);
    let result = match port {
        None => Err(format!("invalid port {:?}", header(&data.headers, "port").unwrap_or(""))),
        Some(port) => match connect(netns.clone(), port).await {
            Err(e) => Err(format!("error forwarding port {port} to pod {pod}: {e}")),
            Ok(tcp) => {
                let (mut rd, mut wr) = tcp.into_split();
                let to_pod = async {
                    while let Some(b) = data.data.recv().await {
                        if wr.write_all(&b).await.is_err() {
                            break;
                        }
                    }
                    let _ = wr.shutdown().await;
                };
                let writer = data.writer.clone();
                let from_pod = async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if writer.write(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    writer.close().await;
                };
                tokio::join!(to_pod, from_pod);
                Ok(())
            }
        },
    };
    if let Err(msg) = result {
        tracing::info!("{msg}");
        let _ = error.write(msg.as_bytes()).await;
    }
    data.writer.close().await;
    error.close().await;
}

/// Connect to localhost:port inside the pod's network namespace (IPv4, then IPv6).
pub async fn connect(netns: Option<PathBuf>, port: u16) -> std::io::Result<tokio::net::TcpStream> {
    let addrs = vec![SocketAddr::from((Ipv4Addr::LOCALHOST, port)), SocketAddr::from((Ipv6Addr::LOCALHOST, port))];
    crate::util::netns::connect(netns, addrs, CONNECT_TIMEOUT).await
}
