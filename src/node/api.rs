//! The kubelet HTTP API on HTTPS (a self-signed certificate kept in the state dir until the
//! control plane issues one): /healthz and /pods (a v1 PodList with full statuses),
//! /metrics, /metrics/cadvisor and /metrics/resource (Prometheus text), /stats/summary, /events,
//! /containerLogs, and the streams /exec, /attach and /portForward (`api_streams`).
use super::api_auth::Auth;
use super::NodeShared;
use crate::cri::v1 as cri;
use crate::util::tls::ServingCert;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("kubelet API certificate: {0}")]
    Cert(String),
    #[error("kubelet API listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

/// The kubelet API's TLS: the certificate in the state dir (self-signed, made on first start)
/// until [`ServingCert::replace`] gives it the cluster's; clients asked for certificates by `auth`.
fn tls_config(dir: &Path, names: Vec<String>, auth: &Auth) -> Result<(rustls::ServerConfig, Arc<ServingCert>), ApiError> {
    let (crt, key) = (dir.join("kubelet.crt"), dir.join("kubelet.key"));
    // made (when missing) and checked the usual way first
    crate::util::tls::server_config(&crt, &key, names, true).map_err(|e| ApiError::Cert(e.to_string()))?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| ApiError::Cert(format!("{}: {e}", p.display())));
    let serving = ServingCert::new(&read(&crt)?, &read(&key)?, &crt.display().to_string()).map_err(|e| ApiError::Cert(e.to_string()))?;
    let mut cfg = rustls::ServerConfig::builder().with_client_cert_verifier(auth.client_certs()).with_cert_resolver(serving.clone());
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((cfg, serving))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn pods(State(shared): State<Arc<NodeShared>>) -> Response {
    let items: Vec<_> = shared.statuses.read().await.values().cloned().collect();
    let list = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    (StatusCode::OK, [("content-type", "application/json")], list.to_string()).into_response()
}

/// The node's pod events as a v1.EventList (what `kubectl describe pod` shows under Events).
async fn events(State(shared): State<Arc<NodeShared>>) -> Response {
    let statuses = shared.statuses.read().await;
    let details = shared.details.read().await;
    let mut items = Vec::new();
    for (uid, (progress, _)) in details.iter() {
        let Some(pod) = statuses.get(uid) else { continue };
        let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        for (i, e) in progress.events.iter().enumerate() {
            items.push(serde_json::json!({
                "metadata": {"name": format!("{name}.{:x}", e.first_ns as u64 ^ i as u64), "namespace": ns},
                "involvedObject": {"kind": "Pod", "namespace": ns, "name": name, "uid": uid, "apiVersion": "v1", "fieldPath": e.field_path},
                "reason": e.reason,
                "message": e.message,
                "type": e.kind,
                "count": e.count,
                "firstTimestamp": super::status::time(e.first_ns),
                "lastTimestamp": super::status::time(e.last_ns),
                "source": {"component": "kubelet", "host": shared.cfg.node_name},
            }));
        }
    }
    let list = serde_json::json!({"kind": "EventList", "apiVersion": "v1", "metadata": {}, "items": items});
    (StatusCode::OK, [("content-type", "application/json")], list.to_string()).into_response()
}

#[derive(serde::Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct LogQuery {
    follow: Option<bool>,
    tail_lines: Option<i64>,
    since_seconds: Option<i64>,
    since_time: Option<String>,
    timestamps: Option<bool>,
    previous: Option<bool>,
    limit_bytes: Option<i64>,
}

fn text(status: StatusCode, msg: String) -> Response {
    (status, [("content-type", "text/plain; charset=utf-8")], msg + "\n").into_response()
}

/// /containerLogs/{namespace}/{pod}/{container}: what `kubectl logs` shows, with follow,
/// tailLines, sinceSeconds / sinceTime, timestamps, previous and limitBytes.
async fn container_logs(
    State(shared): State<Arc<NodeShared>>,
    axum::extract::Path((ns, pod_name, container)): axum::extract::Path<(String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<LogQuery>,
) -> Response {
    let found = {
        let statuses = shared.statuses.read().await;
        let details = shared.details.read().await;
        statuses
            .iter()
            .find(|(_, p)| p.metadata.name.as_deref() == Some(pod_name.as_str()) && p.metadata.namespace.as_deref().unwrap_or("default") == ns)
            .and_then(|(uid, p)| details.get(uid).map(|d| (uid.clone(), p.clone(), d.clone())))
    };
    let Some((uid, pod, (progress, log_dir))) = found else {
        return text(StatusCode::NOT_FOUND, format!("pod {ns}/{pod_name} not found"));
    };
    let spec = pod.spec.clone().unwrap_or_default();
    if !spec.containers.iter().chain(spec.init_containers.iter().flatten()).any(|c| c.name == container) {
        return text(StatusCode::BAD_REQUEST, format!("container {container} is not valid for pod {pod_name}"));
    }
    let prog = progress.containers.get(&container).cloned().unwrap_or_default();
    let attempt = if q.previous.unwrap_or(false) {
        if prog.restart_count == 0 {
            return text(StatusCode::BAD_REQUEST, format!("previous terminated container \"{container}\" in pod \"{pod_name}\" not found"));
        }
        prog.restart_count - 1
    } else {
        prog.restart_count
    };
    let path = log_dir.join(&container).join(format!("{attempt}.log"));
    if !path.exists() {
        return text(StatusCode::BAD_REQUEST, format!("container \"{container}\" in pod \"{pod_name}\" is waiting to start"));
    }
    let now = crate::util::time::now_ns();
    let since_ns = match (q.since_seconds, &q.since_time) {
        (Some(s), _) => Some(now - s.max(0) * 1_000_000_000),
        (None, Some(t)) => match crate::logs::parse_rfc3339(t) {
            Some(v) => Some(v),
            None => return text(StatusCode::BAD_REQUEST, format!("sinceTime {t:?} is not an RFC 3339 time")),
        },
        _ => None,
    };
    let opts = crate::logs::LogOptions {
        follow: q.follow.unwrap_or(false) && !q.previous.unwrap_or(false),
        tail: q.tail_lines.filter(|n| *n >= 0).map(|n| n as usize),
        since_ns,
        timestamps: q.timestamps.unwrap_or(false),
        limit_bytes: q.limit_bytes.filter(|n| *n > 0).map(|n| n as u64),
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<bytes::Bytes, std::io::Error>>();
    let sh = shared.clone();
    tokio::spawn(async move {
        let running = || {
            let sh = sh.clone();
            let uid = uid.clone();
            let container = container.clone();
            async move {
                let statuses = sh.statuses.read().await;
                statuses
                    .get(&uid)
                    .and_then(|p| p.status.as_ref())
                    .and_then(|s| s.container_statuses.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.name == container))
                    .map(|c| c.state.as_ref().map(|s| s.running.is_some()).unwrap_or(false))
                    .unwrap_or(false)
            }
        };
        let write = |l: &crate::logs::LogLine| tx.send(Ok(bytes::Bytes::from(l.render(opts.timestamps)))).is_ok();
        if let Err(e) = crate::logs::read_logs(&path, &opts, write, running).await {
            tracing::info!("reading {}: {e}", path.display());
        }
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
    (StatusCode::OK, [("content-type", "text/plain")], body).into_response()
}

/// Prometheus text: pod start latency, running pods and containers, probe results.
async fn metrics(State(shared): State<Arc<NodeShared>>) -> Response {
    let (pods, containers) = {
        let statuses = shared.statuses.read().await;
        let running = |p: &k8s_openapi::api::core::v1::Pod| {
            p.status.as_ref().and_then(|s| s.conditions.as_ref()).into_iter().flatten().any(|c| c.type_ == "PodReadyToStartContainers" && c.status == "True")
        };
        let pods = statuses.values().filter(|p| running(p)).count();
        let containers = statuses
            .values()
            .flat_map(|p| p.status.iter().flat_map(|s| s.container_statuses.iter().flatten().chain(s.init_container_statuses.iter().flatten())))
            .filter(|c| c.state.as_ref().map(|s| s.running.is_some()).unwrap_or(false))
            .count();
        (pods, containers)
    };
    let text = shared.metrics.lock().map(|m| m.render(pods, containers)).unwrap_or_default();
    (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], text).into_response()
}

/// /metrics/cadvisor: the runtime's container and pod metrics, fetched through the CRI
/// (ListMetricDescriptors, ListPodSandboxMetrics) as a kubelet does with
/// PodAndContainerStatsFromCRI, in the Prometheus text format.
async fn metrics_cadvisor(State(shared): State<Arc<NodeShared>>) -> Response {
    let descriptors = match shared.runtime.list_metric_descriptors(cri::ListMetricDescriptorsRequest {}).await {
        Ok(r) => r.descriptors,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("listing metric descriptors: {e}")),
    };
    let pods = match shared.runtime.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}).await {
        Ok(r) => r.pod_metrics,
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, format!("listing pod metrics: {e}")),
    };
    (StatusCode::OK, [("content-type", "text/plain; version=0.0.4")], super::metrics::cri_metrics_text(&descriptors, &pods)).into_response()
}

/// /metrics/resource: the node's, pods' and containers' CPU and memory for the resource metrics
/// pipeline (`resource_metrics`).
async fn metrics_resource(State(shared): State<Arc<NodeShared>>) -> Response {
    let samples = super::resource_metrics::gather(&shared).await;
    (StatusCode::OK, [("content-type", "text/plain; version=0.0.4; charset=utf-8")], super::resource_metrics::render(&samples)).into_response()
}

/// The Summary API: node and pod CPU, memory, network and filesystems.
async fn stats_summary(State(shared): State<Arc<NodeShared>>) -> Response {
    let body = super::summary::summary(&shared).await;
    (StatusCode::OK, [("content-type", "application/json")], body.to_string()).into_response()
}

pub fn router(shared: Arc<NodeShared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/pods", get(pods))
        .route("/events", get(events))
        .route("/metrics", get(metrics))
        .route("/metrics/cadvisor", get(metrics_cadvisor))
        .route("/metrics/resource", get(metrics_resource))
        .route("/stats/summary", get(stats_summary))
        .route("/containerLogs/{namespace}/{pod}/{container}", get(container_logs))
        .route("/exec/{namespace}/{pod}/{container}", get(super::api_streams::exec).post(super::api_streams::exec))
        .route("/attach/{namespace}/{pod}/{container}", get(super::api_streams::attach).post(super::api_streams::attach))
        .route("/portForward/{namespace}/{pod}", get(super::api_streams::port_forward).post(super::api_streams::port_forward))
        .with_state(shared)
}

/// Bind the API; serving runs until the task is dropped. `auth` decides who may use it
/// (`api_auth`).
pub async fn serve(
    shared: Arc<NodeShared>,
    addr: &str,
    auth: Arc<Auth>,
) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>, Arc<ServingCert>), ApiError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), shared.cfg.node_name.clone()];
    let (tls, serving) = tls_config(&shared.cfg.state_dir, names, &auth)?;
    let tls = Arc::new(tls);
    let listener = TcpListener::bind(addr).await.map_err(|source| ApiError::Listen { addr: addr.into(), source })?;
    let local = listener.local_addr().map_err(|source| ApiError::Listen { addr: addr.into(), source })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(shared);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let app = app.clone();
            let auth = auth.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let cert_user = stream.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(super::api_auth::caller_of);
                let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let (app, auth, cert_user) = (app.clone(), auth.clone(), cert_user.clone());
                    async move {
                        let authorization = req.headers().get(http::header::AUTHORIZATION).and_then(|v| v.to_str().ok()).map(String::from);
                        if let Err(refusal) = auth.admit(req.method(), req.uri().path(), cert_user, authorization.as_deref()).await {
                            let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::FORBIDDEN);
                            return Ok((status, [("content-type", "text/plain; charset=utf-8")], refusal.body()).into_response());
                        }
                        tower::ServiceExt::oneshot(app, req).await
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).with_upgrades().await;
            });
        }
    });
    Ok((local, task, serving))
}
