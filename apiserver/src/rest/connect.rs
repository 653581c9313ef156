//! The connect subresources: pods/log, pods/exec, pods/attach, pods/portforward and
//! nodes/proxy. The apiserver checks what upstream checks (the pod is bound, the container is
//! one of the pod's, a completed pod takes no exec), finds the node's kubelet API
//! (status.addresses InternalIP and status.daemonEndpoints) and proxies the request there over
//! HTTPS: a log as it streams, an upgraded (SPDY or WebSocket) connection byte for byte.
//! Like kube-apiserver without --kubelet-certificate-authority, the kubelet's serving
//! certificate is not verified.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Query, Request};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tracing::Instrument;

use crate::api::Api;
use crate::status::ApiError;

/// A request for a connect subresource.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Pod {
        ns: String,
        name: String,
        what: PodStream,
    },
    /// nodes/{name}/proxy/{path}: the kubelet API's `path`.
    NodeProxy {
        name: String,
        path: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PodStream {
    Log,
    Exec,
    Attach,
    PortForward,
}

/// Recognises a connect subresource in a core/v1 path (after the namespace).
pub fn parse(group: &str, version: &str, ns: Option<&str>, rest: &[&str]) -> Option<Target> {
    if !group.is_empty() || version != "v1" {
        return None;
    }
    match (ns, rest) {
        (Some(ns), ["pods", name, sub]) => {
            let what = match *sub {
                "log" => PodStream::Log,
                "exec" => PodStream::Exec,
                "attach" => PodStream::Attach,
                "portforward" => PodStream::PortForward,
                _ => return None,
            };
            Some(Target::Pod { ns: ns.to_string(), name: name.to_string(), what })
        }
        (None, ["nodes", name, "proxy", tail @ ..]) => Some(Target::NodeProxy { name: name.to_string(), path: format!("/{}", tail.join("/")) }),
        _ => None,
    }
}

type Pairs = Vec<(String, String)>;

fn param<'a>(q: &'a Pairs, key: &str) -> Option<&'a str> {
    q.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

fn flag(q: &Pairs, key: &str) -> bool {
    param(q, key).is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
}

/// Answers a connect request.
pub async fn serve(api: &Arc<Api>, target: Target, req: Request) -> Result<Response, ApiError> {
    let q: Pairs = Query::<Pairs>::try_from_uri(req.uri()).map(|q| q.0).unwrap_or_default();
    let (node, path) = match target {
        Target::NodeProxy { name, path } => {
            let query = req.uri().query().map(|s| format!("?{s}")).unwrap_or_default();
            (name, format!("{path}{query}"))
        }
        Target::Pod { ns, name, what } => pod_location(api, &ns, &name, what, &q, req.method()).await?,
    };
    let (host, port) = kubelet_address(api, &node).await?;
    proxy(api, &host, port, &path, req).instrument(tracing::debug_span!("kubelet", node = %node)).await
}

/// The node and the kubelet API path a pod's stream is at.
async fn pod_location(api: &Arc<Api>, ns: &str, name: &str, what: PodStream, q: &Pairs, method: &Method) -> Result<(String, String), ApiError> {
    let reg = api.registry();
    let pods = reg.lookup("", "v1", "pods").cloned().ok_or_else(ApiError::path_not_found)?;
    let pod = api.get(&pods, Some(ns), name, None).await?;
    if what != PodStream::Log && *method != Method::GET && *method != Method::POST {
        return Err(ApiError::method_not_allowed(method.as_str()));
    }
    let node = pod.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("").to_string();
    let path = match what {
        PodStream::PortForward => format!("/portForward/{ns}/{name}"),
        _ => {
            let container = container_of(&pod, name, param(q, "container"))?;
            let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
            match what {
                PodStream::Log => {
                    let mut out = vec![];
                    for key in ["follow", "previous", "timestamps", "insecureSkipTLSVerifyBackend"] {
                        if flag(q, key) {
                            out.push(format!("{key}=true"));
                        }
                    }
                    for key in ["sinceSeconds", "sinceTime", "tailLines", "limitBytes"] {
                        if let Some(v) = param(q, key).filter(|v| !v.is_empty()) {
                            out.push(format!("{key}={}", encode(v)));
                        }
                    }
                    format!("/containerLogs/{ns}/{name}/{container}{}", query(&out))
                }
                _ => {
                    let verb = if what == PodStream::Exec { "exec" } else { "attach" };
                    if phase == "Succeeded" || phase == "Failed" {
                        return Err(ApiError::bad_request(format!("cannot {verb} into a container in a completed pod; current phase is {phase}")));
                    }
                    let mut out = vec![];
                    if what == PodStream::Exec {
                        out.extend(q.iter().filter(|(k, _)| k == "command").map(|(_, v)| format!("command={}", encode(v))));
                    }
                    for (theirs, kubelets) in [("stdin", "input"), ("stdout", "output"), ("stderr", "error"), ("tty", "tty")] {
                        if flag(q, theirs) {
                            out.push(format!("{kubelets}=1"));
                        }
                    }
                    format!("/{verb}/{ns}/{name}/{container}{}", query(&out))
                }
            }
        }
    };
    if node.is_empty() {
        return Err(ApiError::bad_request(format!("pod {name} does not have a host assigned")));
    }
    Ok((node, path))
}

fn query(pairs: &[String]) -> String {
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The container a request means: the one named, or the pod's only container; upstream's
/// messages otherwise.
fn container_of(pod: &Value, pod_name: &str, asked: Option<&str>) -> Result<String, ApiError> {
    let names = |key: &str| -> Vec<String> {
        pod.pointer(&format!("/spec/{key}")).and_then(Value::as_array).into_iter().flatten().filter_map(|c| c["name"].as_str().map(String::from)).collect()
    };
    let (containers, init, ephemeral) = (names("containers"), names("initContainers"), names("ephemeralContainers"));
    match asked.filter(|c| !c.is_empty()) {
        Some(c) if containers.iter().chain(&init).chain(&ephemeral).any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {pod_name}"))),
        None if containers.len() == 1 => Ok(containers[0].clone()),
        None => {
            let mut msg = format!("a container name must be specified for pod {pod_name}, choose one of: [{}]", containers.join(" "));
            if !init.is_empty() {
                msg.push_str(&format!(" or one of the init containers: [{}]", init.join(" ")));
            }
            if !ephemeral.is_empty() {
                msg.push_str(&format!(" or one of the ephemeral containers: [{}]", ephemeral.join(" ")));
            }
            Err(ApiError::bad_request(msg))
        }
    }
}

/// Where a node's kubelet API listens: its InternalIP (else any address) and the port of
/// status.daemonEndpoints (10250 when the node does not say).
async fn kubelet_address(api: &Arc<Api>, node: &str) -> Result<(String, u16), ApiError> {
    let reg = api.registry();
    let nodes = reg.lookup("", "v1", "nodes").cloned().ok_or_else(ApiError::path_not_found)?;
    let obj = api.get(&nodes, None, node, None).await?;
    kubelet_endpoint(node, &obj)
}

/// [`kubelet_address`] of the Node object `obj`.
pub(crate) fn kubelet_endpoint(node: &str, obj: &Value) -> Result<(String, u16), ApiError> {
    let addresses: Vec<(&str, &str)> = obj
        .pointer("/status/addresses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|a| Some((a["type"].as_str()?, a["address"].as_str()?)))
        .collect();
    let host = ["InternalIP", "ExternalIP", "InternalDNS", "ExternalDNS", "Hostname"]
        .iter()
        .find_map(|t| addresses.iter().find(|(kind, _)| kind == t).map(|(_, a)| a.to_string()))
        .ok_or_else(|| ApiError::bad_request(format!("node {node} has no address to reach its kubelet at")))?;
    let port = obj.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_u64).filter(|p| *p > 0 && *p <= 65535).unwrap_or(10250);
    Ok((host, port as u16))
}

/// A GET of `path` from the kubelet at `host:port` (as the apiserver): its status and body.
pub(crate) async fn kubelet_get(api: &Api, host: &str, port: u16, path: &str) -> Result<(StatusCode, bytes::Bytes), String> {
    use http_body_util::BodyExt;
    let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let tcp = tokio::net::TcpStream::connect(&target).await.map_err(|e| format!("dial tcp {target}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(kubelet_tls(api)).connect(name, tcp).await.map_err(|e| e.to_string())?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| e.to_string())?;
    let connection = tokio::spawn(async move {
        let _ = conn.await;
    });
    let request = hyper::Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, target.as_str())
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let answer = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = answer.status();
    let body = answer.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    connection.abort();
    Ok((status, body))
}

/// The request, sent on to the kubelet at `host:port` as `path`; its answer (or, for an
/// upgrade, the two connections joined).
async fn proxy(api: &Api, host: &str, port: u16, path: &str, mut req: Request) -> Result<Response, ApiError> {
    let target = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    let backend_error = |e: &dyn std::fmt::Display| ApiError::internal(format!("error dialing backend: {e}"));
    let tcp = tokio::net::TcpStream::connect(&target).await.map_err(|e| backend_error(&format!("dial tcp {target}: {e}")))?;
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| backend_error(&e))?;
    let tls = tokio_rustls::TlsConnector::from(kubelet_tls(api)).connect(name, tcp).await.map_err(|e| backend_error(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| backend_error(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!("kubelet connection: {e}");
        }
    });
    let mut out = hyper::Request::builder().method(req.method().clone()).uri(path);
    for (k, v) in req.headers() {
        if k != header::HOST && k != header::AUTHORIZATION && k != header::CONTENT_LENGTH && k != header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    out = out.header(header::HOST, target.as_str());
    let out = out.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| ApiError::internal(format!("building the kubelet request: {e}")))?;
    let mut answer = sender.send_request(out).await.map_err(|e| backend_error(&e))?;
    if answer.status() != StatusCode::SWITCHING_PROTOCOLS {
        return Ok(answer.map(Body::new));
    }
    let client_side = hyper::upgrade::on(&mut req);
    let kubelet_side = hyper::upgrade::on(&mut answer);
    tokio::spawn(
        async move {
            match (client_side.await, kubelet_side.await) {
                (Ok(c), Ok(k)) => {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(c), &mut TokioIo::new(k)).await;
                }
                (c, k) => tracing::debug!(client = ?c.err(), kubelet = ?k.err(), "stream upgrade failed"),
            }
        }
        .in_current_span(),
    );
    let mut r = Response::new(Body::empty());
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    for (k, v) in answer.headers() {
        r.headers_mut().append(k, v.clone());
    }
    if !r.headers().contains_key(header::CONNECTION) {
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    }
    Ok(r)
}

/// The TLS client of kubelet connections: the API's own (with the apiserver's kubelet client
/// certificate) when it has one, else one without a client certificate (one per process).
fn kubelet_tls(api: &Api) -> Arc<rustls::ClientConfig> {
    if let Some(c) = &api.config.kubelet_tls {
        return c.clone();
    }
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| Arc::new(kubelet_client_config(None).unwrap_or_else(|_| unverified_builder().with_no_client_auth()))).clone()
}

fn unverified_builder() -> rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert> {
    rustls::ClientConfig::builder()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(UnverifiedKubelet(Arc::new(rustls::crypto::ring::default_provider()))))
}

/// A TLS client for kubelets presenting `identity` (certificate and key PEM) as its client
/// certificate. Kubelet serving certificates are not verified (upstream's default without
/// `--kubelet-certificate-authority`); the handshake's signatures are.
pub fn kubelet_client_config(identity: Option<(&str, &str)>) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let builder = unverified_builder();
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some((cert, key)) => {
            let certs = rustls::pki_types::CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|e| e.to_string())?;
            let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| e.to_string())?;
            builder.with_client_auth_cert(certs, key).map_err(|e| e.to_string())
        }
    }
}

/// Accepts any kubelet serving certificate (the handshake's signatures are still checked).
#[derive(Debug)]
struct UnverifiedKubelet(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for UnverifiedKubelet {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn connect_paths() {
        assert_eq!(
            parse("", "v1", Some("default"), &["pods", "web", "exec"]),
            Some(Target::Pod { ns: "default".into(), name: "web".into(), what: PodStream::Exec })
        );
        assert_eq!(
            parse("", "v1", None, &["nodes", "n1", "proxy", "stats", "summary"]),
            Some(Target::NodeProxy { name: "n1".into(), path: "/stats/summary".into() })
        );
        assert_eq!(parse("", "v1", None, &["nodes", "n1", "proxy"]), Some(Target::NodeProxy { name: "n1".into(), path: "/".into() }));
        assert_eq!(parse("", "v1", Some("default"), &["pods", "web", "status"]), None);
        assert_eq!(parse("apps", "v1", Some("default"), &["pods", "web", "log"]), None);
    }

    #[test]
    fn the_container_is_named_or_the_only_one() {
        let one = json!({"spec": {"containers": [{"name": "a"}]}});
        assert_eq!(container_of(&one, "p", None).ok().as_deref(), Some("a"));
        let two = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}], "initContainers": [{"name": "i"}]}});
        assert_eq!(
            container_of(&two, "p", None).err().map(|e| e.message),
            Some("a container name must be specified for pod p, choose one of: [a b] or one of the init containers: [i]".to_string())
        );
        assert_eq!(container_of(&two, "p", Some("i")).ok().as_deref(), Some("i"));
        assert_eq!(container_of(&two, "p", Some("x")).err().map(|e| e.message), Some("container x is not valid for pod p".to_string()));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("sh -c 'echo a&b'"), "sh%20-c%20%27echo%20a%26b%27");
        assert_eq!(encode("2026-12-03T10:00:00Z"), "2026-12-03T10%3A00%3A00Z");
    }
}
