//! The actions probes and lifecycle hooks run against a container: exec in it, an HTTP GET,
//! a TCP connect, a gRPC health check (to the pod's IP, made from inside the pod's network
//! namespace), or a sleep. Each returns Ok on success, else why it failed.
use crate::cri::api::RuntimeApi;
use crate::cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, ExecAction, GRPCAction, HTTPGetAction, TCPSocketAction};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Where a handler runs: the container, its pod's address and network namespace.
#[derive(Clone)]
pub struct Target {
    pub runtime: Arc<dyn RuntimeApi>,
    pub container_id: String,
    pub container: Container,
    pub pod_ip: String,
    /// The pod's network namespace; None for host-network pods.
    pub netns: Option<PathBuf>,
}

const USER_AGENT: &str = "kube-probe/1.33";
const MAX_REDIRECTS: usize = 10;

/// A port given by number or by the name of one of the container's ports.
fn resolve_port(p: &IntOrString, c: &Container) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).ok().filter(|n| *n > 0).ok_or_else(|| format!("invalid port {n}")),
        IntOrString::String(s) => {
            if let Ok(n) = s.parse::<u16>() {
                return Ok(n);
            }
            c.ports
                .iter()
                .flatten()
                .find(|cp| cp.name.as_deref() == Some(s.as_str()))
                .and_then(|cp| u16::try_from(cp.container_port).ok())
                .ok_or_else(|| format!("port {s:?} is not a named port of container {}", c.name))
        }
    }
}

fn host_addr(host: Option<&str>, t: &Target) -> Result<IpAddr, String> {
    let h = host.filter(|h| !h.is_empty()).unwrap_or(&t.pod_ip);
    if h.is_empty() {
        // A pod without an address of its own (no CNI network) is reached on its loopback.
        return Ok(IpAddr::V4(Ipv4Addr::LOCALHOST));
    }
    h.parse().map_err(|_| format!("host {h:?} is not an IP address"))
}

pub async fn exec(a: &ExecAction, t: &Target, timeout: Duration) -> Result<(), String> {
    let cmd = a.command.clone().unwrap_or_default();
    if cmd.is_empty() {
        return Err("exec: no command".into());
    }
    let secs = timeout.as_secs().max(1) as i64;
    let r = t.runtime.exec_sync(cri::ExecSyncRequest { container_id: t.container_id.clone(), cmd, timeout: secs }).await.map_err(|e| e.message)?;
    if r.exit_code == 0 {
        Ok(())
    } else {
        let mut out = String::from_utf8_lossy(&r.stdout).to_string();
        out.push_str(&String::from_utf8_lossy(&r.stderr));
        // The command's output is the message, as the kubelet reports it.
        let out = out.trim();
        Err(if out.is_empty() { format!("command exited with {}", r.exit_code) } else { out.to_string() })
    }
}

pub async fn tcp(a: &TCPSocketAction, t: &Target, timeout: Duration) -> Result<(), String> {
    let port = resolve_port(&a.port, &t.container)?;
    let ip = host_addr(a.host.as_deref(), t)?;
    crate::util::netns::connect(t.netns.clone(), vec![SocketAddr::new(ip, port)], timeout).await.map(|_| ()).map_err(|e| format!("dial tcp {ip}:{port}: {e}"))
}

pub async fn sleep(seconds: i64) -> Result<(), String> {
    tokio::time::sleep(Duration::from_secs(seconds.max(0) as u64)).await;
    Ok(())
}

/// One HTTP/1.1 GET over a connection made in the pod's namespace; returns (status, location).
/// Where an HTTP handler sends its requests.
struct HttpEndpoint {
    https: bool,
    ip: IpAddr,
    port: u16,
    host_header: String,
    headers: Vec<(String, String)>,
}

async fn http_once(t: &Target, e: &HttpEndpoint, path: &str, timeout: Duration) -> Result<(u16, Option<String>), String> {
    let HttpEndpoint { https, ip, port, host_header, headers } = e;
    let (https, ip, port) = (*https, *ip, *port);
    use http_body_util::{BodyExt, Empty};
    let tcp = crate::util::netns::connect(t.netns.clone(), vec![SocketAddr::new(ip, port)], timeout).await.map_err(|e| format!("dial tcp {ip}:{port}: {e}"))?;
    let mut req = hyper::Request::get(path).header("host", host_header).header("user-agent", USER_AGENT).header("accept", "*/*");
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Empty::<bytes::Bytes>::new()).map_err(|e| e.to_string())?;
    let send = async {
        let resp = if https {
            // Probes and hooks do not check certificates, like the kubelet's HTTPS probes.
            let tls = tokio_rustls::TlsConnector::from(Arc::new(crate::util::tls::insecure_client_config()));
            let name = rustls::pki_types::ServerName::IpAddress(ip.into());
            let stream = tls.connect(name, tcp).await.map_err(|e| format!("TLS: {e}"))?;
            let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            s.send_request(req).await.map_err(|e| e.to_string())?
        } else {
            let (mut s, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            s.send_request(req).await.map_err(|e| e.to_string())?
        };
        let status = resp.status().as_u16();
        let location = resp.headers().get("location").and_then(|v| v.to_str().ok()).map(String::from);
        // Read (and drop) up to 10 KiB of body, as the kubelet does.
        let mut body = resp.into_body();
        let mut read = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map(|d| d.len()).unwrap_or(0);
            if read > 10 * 1024 {
                break;
            }
        }
        Ok::<_, String>((status, location))
    };
    tokio::time::timeout(timeout, send).await.map_err(|_| format!("GET {path}: timeout after {timeout:?}"))?
}

/// HTTP GET: success is 200 ≤ status < 400. Redirects to the same host are followed; a
/// redirect elsewhere counts as success, as the kubelet does.
pub async fn http(a: &HTTPGetAction, t: &Target, timeout: Duration) -> Result<(), String> {
    let port = resolve_port(&a.port, &t.container)?;
    let ip = host_addr(a.host.as_deref(), t)?;
    let https = a.scheme.as_deref().map(|s| s.eq_ignore_ascii_case("HTTPS")).unwrap_or(false);
    let mut headers: Vec<(String, String)> = a.http_headers.iter().flatten().map(|h| (h.name.clone(), h.value.clone())).collect();
    let host_header = headers.iter().position(|(k, _)| k.eq_ignore_ascii_case("host")).map(|i| headers.remove(i).1).unwrap_or_else(|| {
        if ip.is_ipv6() {
            format!("[{ip}]:{port}")
        } else {
            format!("{ip}:{port}")
        }
    });
    let mut path = a.path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "/".into());
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    let endpoint = HttpEndpoint { https, ip, port, host_header, headers };
    let host_header = &endpoint.host_header;
    for _ in 0..=MAX_REDIRECTS {
        let (status, location) = http_once(t, &endpoint, &path, timeout).await?;
        if (300..400).contains(&status) {
            if let Some(loc) = location {
                match same_host_path(&loc, host_header) {
                    Some(p) => {
                        path = p;
                        continue;
                    }
                    None => {
                        tracing::info!("probe redirected to another host ({loc}): counted as success");
                        return Ok(());
                    }
                }
            }
        }
        return if (200..400).contains(&status) { Ok(()) } else { Err(format!("HTTP probe failed with statuscode: {status}")) };
    }
    Err(format!("stopped after {MAX_REDIRECTS} redirects"))
}

/// The path of a redirect target on the same host (relative, or absolute to the same host).
fn same_host_path(location: &str, host_header: &str) -> Option<String> {
    if location.starts_with('/') {
        return Some(location.to_string());
    }
    let rest = location.strip_prefix("http://").or_else(|| location.strip_prefix("https://"))?;
    let (host, path) = rest.split_once('/').map(|(h, p)| (h, format!("/{p}"))).unwrap_or((rest, "/".into()));
    (host == host_header || host_header.split(':').next() == Some(host)).then_some(path)
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// The gRPC health protocol: grpc.health.v1.Health/Check must answer SERVING.
pub async fn grpc(a: &GRPCAction, t: &Target, timeout: Duration) -> Result<(), String> {
    let port = u16::try_from(a.port).map_err(|_| format!("invalid port {}", a.port))?;
    let ip = host_addr(None, t)?;
    let netns = t.netns.clone();
    let check = async {
        let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}")).map_err(|e| e.to_string())?;
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
                let netns = netns.clone();
                async move { crate::util::netns::connect(netns, vec![SocketAddr::new(ip, port)], timeout).await.map(hyper_util::rt::TokioIo::new) }
            }))
            .await
            .map_err(|e| format!("connecting to {ip}:{port}: {e}"))?;
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.map_err(|e| e.to_string())?;
        let path = hyper::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let req = tonic::Request::new(HealthCheckRequest { service: a.service.clone().unwrap_or_default() });
        let resp: tonic::Response<HealthCheckResponse> =
            client.unary(req, path, tonic_prost::ProstCodec::default()).await.map_err(|e| format!("health check: {}", e.message()))?;
        let status = resp.into_inner().status;
        if status == 1 {
            Ok(())
        } else {
            Err(format!("service unhealthy (responded with {})", ["UNKNOWN", "SERVING", "NOT_SERVING", "SERVICE_UNKNOWN"].get(status as usize).unwrap_or(&"?")))
        }
    };
    tokio::time::timeout(timeout, check).await.map_err(|_| format!("timeout: health rpc did not complete within {timeout:?}"))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_stay_on_the_same_host() {
        assert_eq!(same_host_path("/healthz", "10.0.0.1:80").as_deref(), Some("/healthz"));
        assert_eq!(same_host_path("http://10.0.0.1:80/x", "10.0.0.1:80").as_deref(), Some("/x"));
        assert_eq!(same_host_path("http://example.com/x", "10.0.0.1:80"), None);
    }

    #[test]
    fn named_ports_resolve() {
        let c = Container {
            name: "c".into(),
            ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort { name: Some("http".into()), container_port: 8080, ..Default::default() }]),
            ..Default::default()
        };
        assert_eq!(resolve_port(&IntOrString::String("http".into()), &c), Ok(8080));
        assert_eq!(resolve_port(&IntOrString::Int(81), &c), Ok(81));
        assert!(resolve_port(&IntOrString::String("nope".into()), &c).is_err());
        assert!(resolve_port(&IntOrString::Int(0), &c).is_err());
    }
}
