//! `berth server`'s control-plane half as a library call: open the store (embedded SQLite in the
//! data dir, or etcd), make or reuse the certificates and the admin kubeconfig, start the API
//! core and serve it over HTTPS until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use berth_store::{EmbeddedConfig, EmbeddedStore, EtcdConfig, EtcdStore, Store};

use crate::api::{Api, ApiConfig};

/// Options of the apiserver.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The etcd cluster to keep objects in; None: the embedded store in `<data_dir>/store`.
    pub etcd: Option<EtcdConfig>,
    pub bookmark_interval: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening the store: {0}")]
    Store(#[from] berth_store::StoreError),
    #[error("certificates: {0}")]
    Pki(#[from] crate::pki::PkiError),
    #[error(transparent)]
    Tls(#[from] crate::serve::TlsError),
    #[error("starting the API: {0}")]
    Api(#[from] crate::status::ApiError),
    #[error("certificate task failed: {0}")]
    Join(String),
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Runs the apiserver until `shutdown` resolves.
pub async fn run(opts: ServerOptions, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    let store: Arc<dyn Store> = match &opts.etcd {
        None => Arc::new(EmbeddedStore::open(EmbeddedConfig::new(opts.data_dir.join("store"))).await?),
        Some(etcd) => Arc::new(EtcdStore::connect(etcd.clone()).await?),
    };
    let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|source| ServerError::Listen { addr: opts.listen, source })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Listen { addr: opts.listen, source })?;
    let host = if bound.ip().is_unspecified() { "127.0.0.1".to_string() } else { bound.ip().to_string() };
    let mut hosts = vec![host.clone()];
    if let Ok(h) = nix_hostname() {
        hosts.push(h);
    }
    let url_host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let (dir, url) = (opts.data_dir.clone(), format!("https://{url_host}:{}", bound.port()));
    // Key generation and fsyncs: off the async threads.
    let pki = tokio::task::spawn_blocking(move || crate::pki::ensure(&dir, &hosts, &url)).await.map_err(|e| ServerError::Join(e.to_string()))??;
    let tls = crate::serve::tls_config(&pki)?;
    let api =
        Api::start(store.clone(), ApiConfig { bookmark_interval: opts.bookmark_interval, advertise_address: format!("{url_host}:{}", bound.port()) }).await?;
    tracing::info!(address = %bound, kubeconfig = %pki.kubeconfig_path().display(), "serving the Kubernetes API");
    crate::serve::serve(listener, tls, crate::router(api), shutdown).await;
    store.close().await;
    Ok(())
}

fn nix_hostname() -> std::io::Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(h.trim().to_string())
}
