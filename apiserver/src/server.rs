//! `berth server`'s control-plane half as a library call: open the store (embedded SQLite in the
//! data dir, or etcd), make or reuse the certificates, the admin kubeconfig, the service account
//! signing key and the node join token, start the API core and serve it over HTTPS until shutdown
//! (then this server leaves the `kubernetes` Service's endpoints).

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
    /// How often the store compacts its history (None: never).
    pub compaction_interval: Option<Duration>,
    /// upstream's `--encryption-provider-config`: resources encrypted at rest.
    pub encryption_config: Option<PathBuf>,
    /// upstream's `--token-auth-file`: static bearer tokens (CSV `token,user,uid,"groups"`).
    pub token_auth_file: Option<PathBuf>,
    /// upstream's `--service-account-issuer`: the first issues tokens, all are accepted (empty:
    /// https://kubernetes.default.svc.cluster.local).
    pub service_account_issuers: Vec<String>,
    /// upstream's `--api-audiences` (empty: the first issuer).
    pub api_audiences: Vec<String>,
    /// k3s's `--tls-san`: more names and addresses in the serving certificate (made on first
    /// start) besides the listen address, the host name and the cluster's service names.
    pub tls_sans: Vec<String>,
    /// upstream's `--audit-policy-file` and `--audit-log-*`: the audit log (None: none).
    pub audit: Option<crate::audit::AuditConfig>,
    /// `--service-cidr` and `--service-node-port-range`.
    pub service_network: crate::services::ServiceNetwork,
    /// upstream's `--advertise-address`: this server's address in the `kubernetes` Service's
    /// endpoints (None: the listen address, or when that is unspecified the address of the
    /// default route's interface).
    pub advertise_address: Option<std::net::IpAddr>,
    /// Serve the resource metrics API, scraping the kubelets this often (None: not served).
    pub resource_metrics: Option<Duration>,
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
    #[error("reading the token file {path}: {source}")]
    TokenFile { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    StaticTokens(#[from] crate::authn::token_file::TokenFileError),
    #[error("service account signing key: {0}")]
    SigningKey(#[from] crate::authn::signing_key::SigningKeyError),
    #[error("node token: {0}")]
    NodeToken(#[from] crate::authn::node_token::NodeTokenError),
    #[error("{path}: {source}")]
    EncryptionConfig { path: PathBuf, source: crate::encryption::EncryptionError },
    #[error("reading {path}: {source}")]
    EncryptionConfigRead { path: PathBuf, source: std::io::Error },
    #[error("the kubelet client certificate: {0}")]
    KubeletClient(String),
    #[error("the CSR signer: {0}")]
    Signer(#[from] crate::certificates::signer::SignError),
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    #[error("listening on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
}

/// Called once with the API core when it is up (before the listener serves): where the binary
/// starts its in-process components (the scheduler) without this crate knowing them.
pub type OnStarted = Box<dyn FnOnce(Arc<Api>) + Send>;

/// Runs the apiserver until `shutdown` resolves.
pub async fn run(opts: ServerOptions, shutdown: impl Future<Output = ()>) -> Result<(), ServerError> {
    run_with(opts, shutdown, Box::new(|_| {})).await
}

/// [`run`], handing the API core to `on_started` once it is up.
pub async fn run_with(opts: ServerOptions, shutdown: impl Future<Output = ()>, on_started: OnStarted) -> Result<(), ServerError> {
    let store: Arc<dyn Store> = match &opts.etcd {
        None => {
            let mut config = EmbeddedConfig::new(opts.data_dir.join("store"));
            config.compaction_interval = opts.compaction_interval;
            Arc::new(EmbeddedStore::open(config).await?)
        }
        Some(etcd) => {
            let mut config = etcd.clone();
            config.compaction_interval = opts.compaction_interval;
            Arc::new(EtcdStore::connect(config).await?)
        }
    };
    // encryption at rest: read before anything is served, refused when wrong
    let store: Arc<dyn Store> = match &opts.encryption_config {
        None => store,
        Some(path) => {
            let text = tokio::fs::read_to_string(path).await.map_err(|source| ServerError::EncryptionConfigRead { path: path.clone(), source })?;
            let config = crate::encryption::config::parse(&text).map_err(|source| ServerError::EncryptionConfig { path: path.clone(), source })?;
            Arc::new(crate::encryption::EncryptedStore::new(store, config))
        }
    };
    let listener = tokio::net::TcpListener::bind(opts.listen).await.map_err(|source| ServerError::Listen { addr: opts.listen, source })?;
    let bound = listener.local_addr().map_err(|source| ServerError::Listen { addr: opts.listen, source })?;
    let host = if bound.ip().is_unspecified() { "127.0.0.1".to_string() } else { bound.ip().to_string() };
    let advertise = opts.advertise_address.unwrap_or_else(|| default_address(bound.ip()));
    let mut hosts = vec![host.clone(), advertise.to_string()];
    hosts.extend(opts.service_network.kubernetes_ip().map(|ip| ip.to_string()));
    hosts.extend(opts.tls_sans.iter().cloned());
    if let Ok(h) = nix_hostname() {
        hosts.push(h);
    }
    let url_host = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let server_url = format!("https://{url_host}:{}", bound.port());
    let (dir, url) = (opts.data_dir.clone(), server_url.clone());
    // Key generation and fsyncs: off the async threads.
    let (pki, signing_key) = tokio::task::spawn_blocking(move || -> Result<_, ServerError> {
        let pki = crate::pki::ensure(&dir, &hosts, &url)?;
        Ok((pki, crate::authn::signing_key::ensure(&dir)?))
    })
    .await
    .map_err(|e| ServerError::Join(e.to_string()))??;
    let static_tokens = match &opts.token_auth_file {
        None => Default::default(),
        Some(path) => {
            let text = tokio::fs::read_to_string(path).await.map_err(|source| ServerError::TokenFile { path: path.clone(), source })?;
            crate::authn::token_file::StaticTokens::parse(&path.display().to_string(), &text)?
        }
    };
    let tls = crate::serve::tls_config(&pki)?;
    let audit = match &opts.audit {
        Some(c) => Some(Arc::new(crate::audit::Auditor::open(c).await?)),
        None => None,
    };
    let authn = crate::authn::Config {
        static_tokens,
        issuers: opts.service_account_issuers.clone(),
        audiences: opts.api_audiences.clone(),
        signing_key: Some(Arc::new(signing_key)),
        root_ca: pki.ca_pem.clone(),
    };
    let api = Api::start(
        store.clone(),
        ApiConfig {
            bookmark_interval: opts.bookmark_interval,
            advertise_address: format!("{url_host}:{}", bound.port()),
            ca_pem: Some(pki.ca_pem.clone()),
            authn,
            kubelet_tls: Some(Arc::new(
                crate::rest::connect::kubelet_client_config(Some((&pki.kubelet_client_cert_pem, &pki.kubelet_client_key_pem)))
                    .map_err(ServerError::KubeletClient)?,
            )),
            signer: Some(Arc::new(crate::certificates::signer::Signer::new(&pki.ca_pem, &pki.ca_key_pem, crate::certificates::signer::DEFAULT_MAX_DURATION)?)),
            audit,
            service_network: opts.service_network.clone(),
            endpoint: Some((advertise, bound.port())),
            resource_metrics: opts.resource_metrics,
        },
    )
    .await?;
    crate::authn::node_token::ensure(&api, &opts.data_dir).await?;
    tracing::info!("to join a node: berth agent --server {server_url} --token $(cat {})", opts.data_dir.join("node-token").display());
    tracing::info!(address = %bound, kubeconfig = %pki.kubeconfig_path().display(), "serving the Kubernetes API");
    on_started(api.clone());
    crate::serve::serve(listener, tls, crate::router(api.clone()), shutdown).await;
    crate::services::kubernetes::remove_endpoint(&api).await;
    store.close().await;
    Ok(())
}

/// upstream's default advertise address: the listen address, or when that is unspecified the
/// source address of the default route (found by connecting a UDP socket, which sends nothing),
/// or else loopback.
fn default_address(listen: std::net::IpAddr) -> std::net::IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    let probe = || -> std::io::Result<std::net::IpAddr> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.connect("192.0.2.1:9")?;
        Ok(socket.local_addr()?.ip())
    };
    probe().ok().filter(|ip| !ip.is_unspecified()).unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

fn nix_hostname() -> std::io::Result<String> {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname")?;
    Ok(h.trim().to_string())
}
