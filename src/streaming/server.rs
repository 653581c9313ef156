//! The streaming HTTP server: redeems a token, negotiates the protocol (SPDY/3.1 upgrade
//! with X-Stream-Protocol-Version, or WebSocket with a channel subprotocol), answers 101 and
//! hands the upgraded connection to the session.
use super::remotecommand::{self, CommandIo, PORT_FORWARD_PROTOCOL, SPDY_PROTOCOLS};
use super::spdy::{Role, Session};
use super::tokens::{StreamRequest, TokenCache, TokenError};
use super::transport::{self, Wanted, WS_PROTOCOLS};
use super::StreamingConfig;
use crate::runtime::Runtime;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role as WsRole;
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

/// The WebSocket subprotocol of port-forward tunnelled as SPDY over WebSocket.
pub const WS_SPDY_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("streaming server: listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
    #[error("streaming server: {0}")]
    Tls(#[from] crate::util::tls::TlsError),
}

pub struct StreamingServer {
    tokens: TokenCache,
    base_url: String,
    runtime: Arc<Runtime>,
}

type Body = Full<Bytes>;

fn plain(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from(msg.into() + "\n")));
    *r.status_mut() = status;
    r.headers_mut().insert("content-type", HeaderValue::from_static("text/plain; charset=utf-8"));
    r
}

/// Every value of a header, split at commas and trimmed.
fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(',')).map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

fn has_token(headers: &HeaderMap, name: hyper::header::HeaderName, token: &str) -> bool {
    header_values(headers, name.as_str()).iter().any(|v| v.eq_ignore_ascii_case(token))
}

impl StreamingServer {
    /// Bind the listener and start serving; the URLs handed out point at the bound address.
    pub async fn start(cfg: &StreamingConfig, data_dir: &std::path::Path, runtime: Arc<Runtime>) -> Result<Arc<StreamingServer>, StreamingError> {
        let listener = tokio::net::TcpListener::bind(&cfg.address).await.map_err(|source| StreamingError::Listen { addr: cfg.address.clone(), source })?;
        let local = listener.local_addr().map_err(|source| StreamingError::Listen { addr: cfg.address.clone(), source })?;
        let tls = if cfg.tls {
            let cert = cfg.tls_cert_file.clone().unwrap_or_else(|| data_dir.join("streaming.crt"));
            let key = cfg.tls_key_file.clone().unwrap_or_else(|| data_dir.join("streaming.key"));
            let generate = cfg.tls_cert_file.is_none() && cfg.tls_key_file.is_none();
            let names = vec!["localhost".to_string(), local.ip().to_string()];
            Some(tokio_rustls::TlsAcceptor::from(Arc::new(crate::util::tls::server_config(&cert, &key, names, generate)?)))
        } else {
            None
        };
        let host = if local.ip().is_unspecified() { SocketAddr::from(([127, 0, 0, 1], local.port())) } else { local };
        let base_url = format!("{}://{host}", if tls.is_some() { "https" } else { "http" });
        let server = Arc::new(StreamingServer { tokens: TokenCache::default(), base_url, runtime });
        tracing::info!(url = %server.base_url, "streaming server listening");
        let s = server.clone();
        tokio::spawn(async move {
            loop {
                let (tcp, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!("streaming accept: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let s = s.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(stream) => s.serve_connection(TokioIo::new(stream), peer).await,
                            Err(e) => tracing::debug!(%peer, "streaming TLS handshake: {e}"),
                        },
                        None => s.serve_connection(TokioIo::new(tcp), peer).await,
                    }
                });
            }
        });
        Ok(server)
    }

    /// Register a request; the URL the CRI returns for it.
    pub fn url_for(&self, req: StreamRequest) -> Result<String, TokenError> {
        let kind = req.kind();
        let token = self.tokens.insert(req)?;
        Ok(format!("{}/{kind}/{token}", self.base_url))
    }

    async fn serve_connection<IO>(self: Arc<Self>, io: TokioIo<IO>, peer: SocketAddr)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let this = self.clone();
        let service = hyper::service::service_fn(move |req| {
            let this = this.clone();
            async move { Ok::<_, std::convert::Infallible>(this.handle(req)) }
        });
        if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).with_upgrades().await {
            tracing::debug!(%peer, "streaming connection: {e}");
        }
    }

    /// Serves a request for a token URL handed out by [`Self::url_for`] that reached Berth
    /// some other way than this server's listener (the kubelet API hands its exec, attach and
    /// port-forward requests over in-process): the same answer, and the upgraded connection
    /// served the same.
    pub fn serve_request<B>(self: &Arc<Self>, req: Request<B>) -> Response<Body> {
        self.handle(req)
    }

    fn handle<B>(self: &Arc<Self>, mut req: Request<B>) -> Response<Body> {
        if req.method() != Method::GET && req.method() != Method::POST {
            return plain(StatusCode::METHOD_NOT_ALLOWED, "only GET and POST are served");
        }
        let path = req.uri().path().trim_matches('/').to_string();
        let Some((kind, token)) = path.split_once('/') else {
            return plain(StatusCode::NOT_FOUND, "not found");
        };
        let request = match self.tokens.take(token) {
            Some(r) if r.kind() == kind => r,
            _ => return plain(StatusCode::NOT_FOUND, "unknown or expired streaming token"),
        };
        let span = tracing::info_span!("stream", kind, request = ?request);
        let _entered = span.enter();
        let headers = req.headers().clone();
        if has_token(&headers, UPGRADE, "websocket") {
            return self.upgrade_websocket(&mut req, &headers, request, span.clone());
        }
        if !has_token(&headers, CONNECTION, "upgrade") || !has_token(&headers, UPGRADE, "SPDY/3.1") {
            return plain(StatusCode::BAD_REQUEST, "unable to upgrade: missing upgrade headers in request");
        }
        let offered = header_values(&headers, "x-stream-protocol-version");
        let supported: &[&str] = match request {
            StreamRequest::PortForward { .. } => &[PORT_FORWARD_PROTOCOL],
            _ => SPDY_PROTOCOLS,
        };
        let Some(protocol) = offered.iter().find(|p| supported.contains(&p.as_str())).cloned() else {
            let mut r = plain(
                StatusCode::FORBIDDEN,
                format!("unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {supported:?}"),
            );
            if let Ok(v) = HeaderValue::from_str(&supported.join(", ")) {
                r.headers_mut().insert("x-accepted-stream-protocol-versions", v);
            }
            return r;
        };
        let this = self.clone();
        let proto = protocol.clone();
        spawn_upgraded(&mut req, span.clone(), "SPDY", move |io| async move {
            let (session, incoming) = Session::start(io, Role::Server);
            match request {
                StreamRequest::PortForward { sandbox_id, .. } => this.port_forward(session, incoming, &sandbox_id).await,
                other => {
                    let (wanted, what) = wanted_of(&other);
                    let rt = this.runtime.clone();
                    transport::serve_spdy(session, incoming, &proto, wanted, what, move |io| run_command(rt, other, io)).await
                }
            }
        });
        switching_protocols("SPDY/3.1", &[("x-stream-protocol-version", &protocol)])
    }

    fn upgrade_websocket<B>(self: &Arc<Self>, req: &mut Request<B>, headers: &HeaderMap, request: StreamRequest, span: tracing::Span) -> Response<Body> {
        let Some(key) = headers.get("sec-websocket-key").cloned() else {
            return plain(StatusCode::BAD_REQUEST, "websocket: missing Sec-WebSocket-Key");
        };
        if headers.get("sec-websocket-version").and_then(|v| v.to_str().ok()) != Some("13") {
            let mut r = plain(StatusCode::BAD_REQUEST, "websocket: only version 13 is supported");
            r.headers_mut().insert("sec-websocket-version", HeaderValue::from_static("13"));
            return r;
        }
        let offered = header_values(headers, "sec-websocket-protocol");
        let chosen: Option<String> = match &request {
            StreamRequest::PortForward { .. } => offered.iter().find(|p| p.as_str() == WS_SPDY_PORT_FORWARD).cloned(),
            _ => offered.iter().find(|p| WS_PROTOCOLS.iter().any(|(n, _)| n == p)).cloned(),
        };
        let Some(protocol) = chosen else {
            return plain(StatusCode::BAD_REQUEST, format!("websocket: none of the requested subprotocols {offered:?} is supported"));
        };
        let this = self.clone();
        let proto = protocol.clone();
        spawn_upgraded(req, span, "websocket", move |io| async move {
            let ws = WebSocketStream::from_raw_socket(io, WsRole::Server, None).await;
            match request {
                StreamRequest::PortForward { sandbox_id, .. } => {
                    let (session, incoming) = Session::start(transport::ws_byte_stream(ws), Role::Server);
                    this.port_forward(session, incoming, &sandbox_id).await
                }
                other => {
                    let Some((_, flavour)) = WS_PROTOCOLS.iter().find(|(n, _)| *n == proto) else { return };
                    let (wanted, what) = wanted_of(&other);
                    let rt = this.runtime.clone();
                    transport::serve_ws(ws, *flavour, wanted, what, move |io| run_command(rt, other, io)).await
                }
            }
        });
        let accept = derive_accept_key(key.as_bytes());
        switching_protocols("websocket", &[("sec-websocket-accept", &accept), ("sec-websocket-protocol", &protocol)])
    }

    async fn port_forward(&self, session: Session, incoming: tokio::sync::mpsc::Receiver<super::spdy::Stream>, sandbox_id: &str) {
        let netns = match self.runtime.sandbox(sandbox_id) {
            Ok(sb) if !sb.stopped => sb.net_ns.clone(),
            Ok(_) | Err(_) => {
                tracing::info!(sandbox = sandbox_id, "port-forward to a pod that is gone or not ready");
                session.shutdown().await;
                return;
            }
        };
        super::portforward::serve(session, incoming, netns, sandbox_id.to_string()).await
    }
}

/// Once the 101 answer is out, run `session` on the upgraded connection.
fn spawn_upgraded<B, F, Fut>(req: &mut Request<B>, span: tracing::Span, what: &'static str, session: F)
where
    F: FnOnce(TokioIo<hyper::upgrade::Upgraded>) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(
        async move {
            match on_upgrade.await {
                Ok(u) => session(TokioIo::new(u)).await,
                Err(e) => tracing::info!("{what} upgrade: {e}"),
            }
        }
        .instrument(span),
    );
}

/// The 101 answer switching to `upgrade`, with the negotiated headers.
fn switching_protocols(upgrade: &'static str, headers: &[(&'static str, &str)]) -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::new()));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    r.headers_mut().insert(CONNECTION, HeaderValue::from_static("Upgrade"));
    r.headers_mut().insert(UPGRADE, HeaderValue::from_static(upgrade));
    for (name, value) in headers {
        if let Ok(v) = HeaderValue::from_str(value) {
            r.headers_mut().insert(*name, v);
        }
    }
    r
}

fn wanted_of(req: &StreamRequest) -> (Wanted, String) {
    match req {
        StreamRequest::Exec { cmd, tty, stdin, stdout, stderr, .. } => {
            (Wanted { stdin: *stdin, stdout: *stdout, stderr: *stderr, tty: *tty }, format!("[{}]", cmd.join(" ")))
        }
        StreamRequest::Attach { tty, stdin, stdout, stderr, .. } => (Wanted { stdin: *stdin, stdout: *stdout, stderr: *stderr, tty: *tty }, "attach".into()),
        StreamRequest::PortForward { .. } => (Wanted { stdin: false, stdout: false, stderr: false, tty: false }, String::new()),
    }
}

async fn run_command(rt: Arc<Runtime>, req: StreamRequest, io: CommandIo) -> remotecommand::Outcome {
    match req {
        StreamRequest::Exec { container_id, cmd, tty, .. } => super::exec::run(&rt, &container_id, cmd, tty, io).await,
        StreamRequest::Attach { container_id, tty, .. } => super::attach::run(&rt, &container_id, tty, io).await,
        StreamRequest::PortForward { .. } => remotecommand::Outcome::Failed("port-forward is not a command".into()),
    }
}
