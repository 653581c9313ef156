//! The kubelet HTTP API on HTTPS (a self-signed certificate kept in the state dir until the
//! control plane issues one): /healthz and /pods (a v1 PodList with full statuses).
use super::NodeShared;
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

fn tls_config(dir: &Path, names: Vec<String>) -> Result<rustls::ServerConfig, ApiError> {
    crate::util::tls::server_config(&dir.join("kubelet.crt"), &dir.join("kubelet.key"), names, true).map_err(|e| ApiError::Cert(e.to_string()))
}

async fn healthz() -> &'static str {
    "ok"
}

async fn pods(State(shared): State<Arc<NodeShared>>) -> Response {
    let items: Vec<_> = shared.statuses.read().await.values().cloned().collect();
    let list = serde_json::json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items});
    (StatusCode::OK, [("content-type", "application/json")], list.to_string()).into_response()
}

pub fn router(shared: Arc<NodeShared>) -> Router {
    Router::new().route("/healthz", get(healthz)).route("/pods", get(pods)).with_state(shared)
}

/// Bind the API; serving runs until the task is dropped.
pub async fn serve(shared: Arc<NodeShared>, addr: &str) -> Result<(std::net::SocketAddr, tokio::task::JoinHandle<()>), ApiError> {
    let names = vec!["localhost".to_string(), "127.0.0.1".to_string(), shared.cfg.node_name.clone()];
    let tls = Arc::new(tls_config(&shared.cfg.state_dir, names)?);
    let listener = TcpListener::bind(addr).await.map_err(|source| ApiError::Listen { addr: addr.into(), source })?;
    let local = listener.local_addr().map_err(|source| ApiError::Listen { addr: addr.into(), source })?;
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(shared);
    let task = tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            let app = app.clone();
            tokio::spawn(async move {
                let Ok(stream) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(move |req| {
                    let app = app.clone();
                    async move { tower::ServiceExt::oneshot(app, req).await }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), service).await;
            });
        }
    });
    Ok((local, task))
}
