//! A client of the streaming protocols for tests: the SPDY/3.1 upgrade with protocol
//! negotiation (using Berth's SPDY session in client role), the WebSocket channel protocol,
//! and helpers that drive remotecommand and port-forward sessions the way client-go does.
use berth::streaming::spdy::{Role, Session, Stream};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Host:port and path of an http:// or https:// URL.
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")).expect("an http(s):// streaming URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    (host.to_string(), format!("/{path}"))
}

/// A connection to the streaming server: plain TCP, or TLS for https:// URLs.
pub trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}
pub type Conn = Box<dyn Io>;

/// Connect to the server of `url`; https:// gets TLS without certificate checks (the
/// server's certificate is self-signed, as crictl accepts it without a CA).
pub async fn dial(url: &str) -> Conn {
    let (host, _) = split_url(url);
    let tcp = TcpStream::connect(&host).await.expect("connect to the streaming server");
    if !url.starts_with("https://") {
        return Box::new(tcp);
    }
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(berth::util::tls::insecure_client_config()));
    let ip: std::net::IpAddr = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(&host).parse().expect("an IP in the streaming URL");
    Box::new(tls.connect(rustls::pki_types::ServerName::IpAddress(ip.into()), tcp).await.expect("TLS handshake"))
}

/// The status code, headers and body of an HTTP response read off a socket up to the end
/// of its headers (and the body when not upgraded).
pub struct HttpAnswer {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

async fn read_head(tcp: &mut Conn) -> HttpAnswer {
    let mut buf = Vec::new();
    let mut b = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = tcp.read(&mut b).await.expect("read response");
        assert!(n == 1, "connection closed in the response head: {:?}", String::from_utf8_lossy(&buf));
        buf.push(b[0]);
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let mut lines = text.split("\r\n");
    let status = lines.next().and_then(|l| l.split(' ').nth(1)).and_then(|c| c.parse().ok()).expect("status line");
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    HttpAnswer { status, headers, body: String::new() }
}

/// Upgrade to SPDY/3.1 offering `protocols`: Ok(session, negotiated) on 101, else the answer.
pub async fn spdy_connect(url: &str, protocols: &[&str]) -> Result<(Session, mpsc::Receiver<Stream>, String), HttpAnswer> {
    let (host, path) = split_url(url);
    let mut tcp = dial(url).await;
    let mut req = format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\nContent-Length: 0\r\n");
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    tcp.write_all(req.as_bytes()).await.expect("send upgrade");
    let mut answer = read_head(&mut tcp).await;
    if answer.status != 101 {
        let mut body = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_string(&mut body)).await;
        answer.body = body;
        return Err(answer);
    }
    let negotiated = answer.header("X-Stream-Protocol-Version").unwrap_or("").to_string();
    let (session, incoming) = Session::start(tcp, Role::Client);
    Ok((session, incoming, negotiated))
}

/// Open one stream of a remotecommand session.
pub async fn open(session: &Session, kind: &str) -> Stream {
    session.open(vec![("streamtype".into(), kind.into())], false).await.expect("open stream")
}

/// Everything a stream carries until its end, with a time limit.
pub async fn read_all(s: &mut mpsc::Receiver<Bytes>, limit: Duration) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, async {
        while let Some(b) = s.recv().await {
            out.extend_from_slice(&b);
        }
    })
    .await;
    out
}

/// Read from a stream until `needle` has appeared in what was read; returns all of it.
pub async fn read_until(s: &mut mpsc::Receiver<Bytes>, seen: &mut Vec<u8>, needle: &str, limit: Duration) -> bool {
    let found = |v: &Vec<u8>| String::from_utf8_lossy(v).contains(needle);
    if found(seen) {
        return true;
    }
    tokio::time::timeout(limit, async {
        while let Some(b) = s.recv().await {
            seen.extend_from_slice(&b);
            if found(seen) {
                return true;
            }
        }
        false
    })
    .await
    .unwrap_or(false)
}

/// A WebSocket channel-protocol client.
pub struct WsClient {
    pub ws: WebSocketStream<Conn>,
    pub protocol: Option<String>,
}

/// Connect over WebSocket offering `protocols`: Err(status, body) when refused.
pub async fn ws_connect(url: &str, protocols: &[&str]) -> Result<WsClient, (u16, String)> {
    let tcp = dial(url).await;
    let mut req = url.replacen("https://", "wss://", 1).replacen("http://", "ws://", 1).into_client_request().expect("ws request");
    req.headers_mut().insert("Sec-WebSocket-Protocol", protocols.join(", ").parse().expect("header"));
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((ws, resp)) => {
            let protocol = resp.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(String::from);
            Ok(WsClient { ws, protocol })
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_ref().map(|b| String::from_utf8_lossy(b).to_string()).unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => Err((0, e.to_string())),
    }
}

/// What a WebSocket session delivered, per channel, until the server closed it.
#[derive(Default, Debug)]
pub struct WsTranscript {
    pub channels: std::collections::BTreeMap<u8, Vec<u8>>,
    pub closed_normally: bool,
}

impl WsTranscript {
    pub fn text(&self, ch: u8) -> String {
        String::from_utf8_lossy(self.channels.get(&ch).map(|v| v.as_slice()).unwrap_or(&[])).to_string()
    }
}

impl WsClient {
    pub async fn send(&mut self, channel: u8, data: &[u8]) {
        let mut v = vec![channel];
        v.extend_from_slice(data);
        self.ws.send(Message::Binary(v.into())).await.expect("ws send");
    }

    /// Send, or false when the connection is closed.
    pub async fn try_send(&mut self, channel: u8, data: &[u8]) -> bool {
        let mut v = vec![channel];
        v.extend_from_slice(data);
        self.ws.send(Message::Binary(v.into())).await.is_ok()
    }

    pub async fn send_base64(&mut self, channel: u8, data: &[u8]) {
        use base64::Engine;
        let s = format!("{}{}", (b'0' + channel) as char, base64::engine::general_purpose::STANDARD.encode(data));
        self.ws.send(Message::Text(s.into())).await.expect("ws send");
    }

    /// Read messages until the server closes (binary or base64 text frames).
    pub async fn read_to_close(&mut self, limit: Duration) -> WsTranscript {
        use base64::Engine;
        let mut t = WsTranscript::default();
        let _ = tokio::time::timeout(limit, async {
            while let Some(Ok(m)) = self.ws.next().await {
                match m {
                    Message::Binary(b) if !b.is_empty() => t.channels.entry(b[0]).or_default().extend_from_slice(&b[1..]),
                    Message::Text(s) if !s.is_empty() => {
                        let bytes = s.as_bytes();
                        let data = base64::engine::general_purpose::STANDARD.decode(&bytes[1..]).expect("base64 payload");
                        t.channels.entry(bytes[0] - b'0').or_default().extend_from_slice(&data);
                    }
                    Message::Close(f) => {
                        t.closed_normally = f.map(|f| u16::from(f.code) == 1000).unwrap_or(false);
                        break;
                    }
                    _ => {}
                }
            }
        })
        .await;
        t
    }

    /// Read until `needle` shows up on `channel`.
    pub async fn read_until(&mut self, channel: u8, seen: &mut Vec<u8>, needle: &str, limit: Duration) -> bool {
        tokio::time::timeout(limit, async {
            while let Some(Ok(m)) = self.ws.next().await {
                if let Message::Binary(b) = m {
                    if !b.is_empty() && b[0] == channel {
                        seen.extend_from_slice(&b[1..]);
                        if String::from_utf8_lossy(seen).contains(needle) {
                            return true;
                        }
                    }
                }
            }
            false
        })
        .await
        .unwrap_or(false)
    }
}

/// A WebSocket used as a byte stream (SPDY tunnelled over WebSocket), as client-go's
/// tunneling dialer does for port-forward.
pub async fn ws_tunnel(url: &str, protocol: &str) -> Result<tokio::io::DuplexStream, (u16, String)> {
    let c = ws_connect(url, &[protocol]).await?;
    Ok(berth::streaming::transport::ws_byte_stream(c.ws))
}

/// One port-forward connection over a SPDY session: request bytes in, all response bytes
/// out, plus whatever the error stream said.
pub async fn forward_once(session: &Session, port: u16, request_id: u32, request: &[u8]) -> (Vec<u8>, String) {
    let hdr = |kind: &str| {
        vec![("streamtype".to_string(), kind.to_string()), ("port".to_string(), port.to_string()), ("requestid".to_string(), request_id.to_string())]
    };
    let mut error = session.open(hdr("error"), false).await.expect("open error stream");
    error.writer.close().await;
    let mut data = session.open(hdr("data"), false).await.expect("open data stream");
    data.writer.write(request).await.expect("send request");
    let body = read_all(&mut data.data, Duration::from_secs(60)).await;
    data.writer.close().await;
    let err = read_all(&mut error.data, Duration::from_secs(5)).await;
    (body, String::from_utf8_lossy(&err).to_string())
}
