//! Joining a cluster with nothing but its address and a join token (TLS bootstrap), as
//! `berth agent --server URL --token TOKEN` does:
//!
//! 1. Trust: read ConfigMap kube-public/cluster-info anonymously, without verifying the server
//!    yet, and check its `jws-kubeconfig-<token id>` signature with the token. Only the server
//!    that holds the token can have signed it, so the CA in its kubeconfig is the cluster's.
//! 2. Identity: with the CA verified and the token as bearer credential, post a
//!    CertificateSigningRequest (signer `kubernetes.io/kube-apiserver-client-kubelet`, subject
//!    `system:node:<name>` in `system:nodes`, a fresh ECDSA P-256 key) and wait until the server
//!    approves and signs it.
//! 3. Keep it: `ca.crt`, `kubelet-client.key` (0600) and `kubelet-client.crt` in the agent's
//!    directory, each written atomically, and `kubelet.kubeconfig` beside them for humans. On the
//!    next start a certificate with more than a fifth of its life left is used as it is; an older
//!    one is renewed with itself as the credential (the node's own `selfnodeclient` request).
//!    While the agent runs, `rotation` renews it before it expires.

use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestSpec};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use kube::config::AuthInfo;
use tracing::Instrument;

use berth_apiserver::certificates::cluster_info;

/// How long the agent waits for its certificate before it gives up.
const ISSUE_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("the join token is not a bootstrap token (<6 [a-z0-9]>.<16 [a-z0-9]>)")]
    Token,
    #[error("--server {0}: {1}")]
    Server(String, String),
    #[error("reading kube-public/cluster-info from {0}: {1}")]
    ClusterInfo(String, String),
    #[error("kube-public/cluster-info has no signature for token id {0}: the token is unknown to the server or may not be used for joining")]
    Unsigned(String),
    #[error("kube-public/cluster-info is not signed by this token: the server is not the one the token belongs to")]
    BadSignature,
    #[error("the kubeconfig of kube-public/cluster-info: {0}")]
    Kubeconfig(String),
    #[error("the node's key or request: {0}")]
    Key(String),
    #[error("requesting a certificate: {0}")]
    Request(String),
    #[error("certificate signing request {0} was {1}")]
    Refused(String, String),
    #[error("certificate signing request {0} was not signed within {1:?}")]
    Timeout(String, Duration),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

/// Where and as whom the node joins.
#[derive(Debug, Clone)]
pub struct Join {
    /// The apiserver (`https://host:6443`).
    pub server: String,
    /// The join token `<id>.<secret>`.
    pub token: String,
    pub node_name: String,
    /// Where the credentials are kept (`<data-dir>/agent`).
    pub dir: PathBuf,
}

/// The node's credentials: the cluster CA and its client certificate.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Credentials {
    /// A client of `server` authenticated by the client certificate.
    pub fn client_config(&self, server: &str) -> Result<kube::Config, JoinError> {
        let mut cfg = base_config(server, &self.ca_pem)?;
        cfg.auth_info = AuthInfo {
            client_certificate_data: Some(STANDARD.encode(&self.cert_pem)),
            client_key_data: Some(STANDARD.encode(&self.key_pem).into()),
            ..Default::default()
        };
        Ok(cfg)
    }

    /// The certificate's notBefore and notAfter (unix seconds).
    pub fn validity(&self) -> Option<(i64, i64)> {
        let (_, block) = x509_parser::pem::parse_x509_pem(self.cert_pem.as_bytes()).ok()?;
        let cert = block.parse_x509().ok()?;
        let v = cert.validity();
        Some((v.not_before.timestamp(), v.not_after.timestamp()))
    }

    /// Seconds of validity left, and the certificate's whole life.
    fn life(&self) -> Option<(i64, i64)> {
        let (_, block) = x509_parser::pem::parse_x509_pem(self.cert_pem.as_bytes()).ok()?;
        let cert = block.parse_x509().ok()?;
        let v = cert.validity();
        let now = jiff::Timestamp::now().as_second();
        Some((v.not_after.timestamp() - now, v.not_after.timestamp() - v.not_before.timestamp()))
    }

    fn read(dir: &Path) -> Option<Credentials> {
        let r = |n: &str| std::fs::read_to_string(dir.join(n)).ok();
        Some(Credentials { ca_pem: r("ca.crt")?, cert_pem: r("kubelet-client.crt")?, key_pem: r("kubelet-client.key")? })
    }

    fn write(&self, dir: &Path, server: &str) -> Result<(), JoinError> {
        let io = |path: PathBuf| move |e: std::io::Error| JoinError::Io { path, source: e };
        std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
        let write = |name: &str, data: &str, mode: u32| {
            berth_apiserver::pki::write_atomic(&dir.join(name), data.as_bytes(), mode)
                .map_err(|e| JoinError::Io { path: dir.join(name), source: std::io::Error::other(e.to_string()) })
        };
        write("ca.crt", &self.ca_pem, 0o644)?;
        write("kubelet-client.key", &self.key_pem, 0o600)?;
        write("kubelet-client.crt", &self.cert_pem, 0o644)?;
        let kubeconfig = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: default\n  cluster:\n    server: {server}\n    certificate-authority: {}\nusers:\n- name: default\n  user:\n    client-certificate: {}\n    client-key: {}\ncontexts:\n- name: default\n  context:\n    cluster: default\n    user: default\ncurrent-context: default\n",
            dir.join("ca.crt").display(),
            dir.join("kubelet-client.crt").display(),
            dir.join("kubelet-client.key").display()
        );
        write("kubelet.kubeconfig", &kubeconfig, 0o600)
    }
}

/// A client config for `server` that trusts `ca_pem` (no credential yet).
pub(crate) fn base_config(server: &str, ca_pem: &str) -> Result<kube::Config, JoinError> {
    use rustls::pki_types::pem::PemObject;
    let uri: http::Uri = server.parse().map_err(|e: http::uri::InvalidUri| JoinError::Server(server.into(), e.to_string()))?;
    let mut cfg = kube::Config::new(uri);
    let certs = rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| JoinError::Kubeconfig(format!("the CA: {e}")))?;
    if certs.is_empty() {
        return Err(JoinError::Kubeconfig("no CA certificate".into()));
    }
    cfg.root_cert = Some(certs);
    cfg.connect_timeout = Some(Duration::from_secs(10));
    cfg.read_timeout = Some(Duration::from_secs(60));
    Ok(cfg)
}

/// The node's credentials: those on disk while fresh, else new ones from the server.
pub async fn credentials(join: &Join) -> Result<Credentials, JoinError> {
    let (id, _) = berth_apiserver::authn::bootstrap::parse(&join.token).ok_or(JoinError::Token)?;
    let id = id.to_string();
    let dir = join.dir.clone();
    let existing = tokio::task::spawn_blocking(move || Credentials::read(&dir)).await.ok().flatten();
    if let Some(creds) = existing {
        match creds.life() {
            Some((left, life)) if left > life / 5 => {
                tracing::info!(dir = %join.dir.display(), days_left = left / 86400, "using the node's client certificate");
                return Ok(creds);
            }
            Some((left, _)) if left > 60 => {
                tracing::info!(seconds_left = left, "renewing the node's client certificate");
                let client = kube::Client::try_from(creds.client_config(&join.server)?).map_err(|e| JoinError::Server(join.server.clone(), e.to_string()))?;
                let fresh = request_certificate(client, &join.node_name, &creds.ca_pem).await?;
                store(&fresh, join).await?;
                return Ok(fresh);
            }
            _ => tracing::info!("the node's client certificate has expired: joining again with the token"),
        }
    }
    let ca_pem = discover_ca(&join.server, &join.token, &id).await?;
    let mut cfg = base_config(&join.server, &ca_pem)?;
    cfg.auth_info = AuthInfo { token: Some(join.token.clone().into()), ..Default::default() };
    let client = kube::Client::try_from(cfg).map_err(|e| JoinError::Server(join.server.clone(), e.to_string()))?;
    let creds = request_certificate(client, &join.node_name, &ca_pem).await?;
    store(&creds, join).await?;
    tracing::info!(dir = %join.dir.display(), "joined: the node's client certificate is signed");
    Ok(creds)
}

/// A new client certificate asked for through `client` (which presents the current one: the
/// node's own renewal), stored before it is returned.
pub async fn renew(join: &Join, current: &Credentials, client: kube::Client) -> Result<Credentials, JoinError> {
    let fresh = request_certificate(client, &join.node_name, &current.ca_pem).await?;
    store(&fresh, join).await?;
    Ok(fresh)
}

/// Writes `creds` to the agent's directory (off the async threads).
async fn store(creds: &Credentials, join: &Join) -> Result<(), JoinError> {
    let (creds, dir, server) = (creds.clone(), join.dir.clone(), join.server.clone());
    let task_dir = dir.clone();
    tokio::task::spawn_blocking(move || creds.write(&task_dir, &server))
        .await
        .map_err(|e| JoinError::Io { path: dir, source: std::io::Error::other(e.to_string()) })?
}

/// The cluster CA from kube-public/cluster-info, trusted because the token signed it.
async fn discover_ca(server: &str, token: &str, id: &str) -> Result<String, JoinError> {
    let uri: http::Uri = server.parse().map_err(|e: http::uri::InvalidUri| JoinError::Server(server.into(), e.to_string()))?;
    let mut cfg = kube::Config::new(uri);
    // Nothing is trusted yet: what is read is checked by its signature.
    cfg.accept_invalid_certs = true;
    cfg.connect_timeout = Some(Duration::from_secs(10));
    let client = kube::Client::try_from(cfg).map_err(|e| JoinError::Server(server.into(), e.to_string()))?;
    let cm = Api::<ConfigMap>::namespaced(client, cluster_info::NAMESPACE)
        .get(cluster_info::NAME)
        .await
        .map_err(|e| JoinError::ClusterInfo(server.into(), e.to_string()))?;
    let data = cm.data.unwrap_or_default();
    let kubeconfig = data.get(cluster_info::KUBECONFIG_KEY).ok_or_else(|| JoinError::Kubeconfig("missing".into()))?;
    let signature = data.get(&format!("{}{id}", cluster_info::SIGNATURE_PREFIX)).ok_or_else(|| JoinError::Unsigned(id.into()))?;
    if !cluster_info::verify(kubeconfig, signature, token) {
        return Err(JoinError::BadSignature);
    }
    let doc: serde_json::Value = serde_saphyr::from_str(kubeconfig).map_err(|e| JoinError::Kubeconfig(e.to_string()))?;
    let ca_b64 = doc
        .pointer("/clusters/0/cluster/certificate-authority-data")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| JoinError::Kubeconfig("no certificate-authority-data".into()))?;
    let ca = STANDARD.decode(ca_b64).map_err(|e| JoinError::Kubeconfig(e.to_string()))?;
    String::from_utf8(ca).map_err(|e| JoinError::Kubeconfig(e.to_string()))
}

/// A new key and a certificate for it from the server's kubelet client signer.
async fn request_certificate(client: kube::Client, node_name: &str, ca_pem: &str) -> Result<Credentials, JoinError> {
    let usages = ["digital signature", "client auth"];
    let (cert_pem, key_pem) = request_signed(client, node_name, berth_apiserver::certificates::KUBELET_CLIENT, &usages, vec![]).await?;
    Ok(Credentials { ca_pem: ca_pem.to_string(), cert_pem, key_pem })
}

/// The kubelet API's serving certificate from the cluster (signer kubernetes.io/kubelet-serving)
/// for the node's `addresses` (IPs or names, as its Node lists them): the one kept in `dir`
/// while a fifth of its life is left and it names them all, else a new one (the server
/// approves a node's request for its own addresses). Certificate and key, PEM.
pub async fn serving_certificate(client: kube::Client, node_name: &str, addresses: &[String], dir: &Path) -> Result<(String, String), JoinError> {
    let (crt, key) = (dir.join("kubelet-serving.crt"), dir.join("kubelet-serving.key"));
    let (c2, k2) = (crt.clone(), key.clone());
    let kept = tokio::task::spawn_blocking(move || Some((std::fs::read_to_string(c2).ok()?, std::fs::read_to_string(k2).ok()?))).await.ok().flatten();
    if let Some((cert, k)) = kept {
        let names_all = |pem: &str| -> Option<bool> {
            let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).ok()?;
            let c = block.parse_x509().ok()?;
            let v = c.validity();
            let (left, life) = (v.not_after.timestamp() - jiff::Timestamp::now().as_second(), v.not_after.timestamp() - v.not_before.timestamp());
            let san = c.subject_alternative_name().ok()??;
            let names: Vec<String> = san
                .value
                .general_names
                .iter()
                .filter_map(|n| match n {
                    x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                    x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 4 => {
                        Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*b).ok()?).to_string())
                    }
                    x509_parser::extensions::GeneralName::IPAddress(b) if b.len() == 16 => {
                        Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*b).ok()?).to_string())
                    }
                    _ => None,
                })
                .collect();
            Some(left > life / 5 && addresses.iter().all(|a| names.contains(a)))
        };
        if names_all(&cert) == Some(true) {
            return Ok((cert, k));
        }
    }
    let sans = addresses
        .iter()
        .map(|a| match a.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(rcgen::SanType::IpAddress(ip)),
            Err(_) => a.clone().try_into().map(rcgen::SanType::DnsName).map_err(|e: rcgen::Error| JoinError::Key(e.to_string())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let usages = ["digital signature", "server auth"];
    let (cert, k) = request_signed(client, node_name, berth_apiserver::certificates::KUBELET_SERVING, &usages, sans).await?;
    let (cert2, k2, d) = (cert.clone(), k.clone(), dir.to_path_buf());
    tokio::task::spawn_blocking(move || -> Result<(), JoinError> {
        let w = |name: &str, data: &str, mode: u32| {
            berth_apiserver::pki::write_atomic(&d.join(name), data.as_bytes(), mode)
                .map_err(|e| JoinError::Io { path: d.join(name), source: std::io::Error::other(e.to_string()) })
        };
        w("kubelet-serving.key", &k2, 0o600)?;
        w("kubelet-serving.crt", &cert2, 0o644)
    })
    .await
    .map_err(|e| JoinError::Io { path: crt.clone(), source: std::io::Error::other(e.to_string()) })??;
    Ok((cert, k))
}

/// A new key and a certificate for `system:node:<node_name>` in `system:nodes` from `signer`
/// with `usages` and `sans`, once the server signed it: certificate and key, PEM.
async fn request_signed(
    client: kube::Client,
    node_name: &str,
    signer: &str,
    usages: &[&str],
    sans: Vec<rcgen::SanType>,
) -> Result<(String, String), JoinError> {
    let key = rcgen::KeyPair::generate().map_err(|e| JoinError::Key(e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(rcgen::DnType::OrganizationName, "system:nodes");
    params.distinguished_name.push(rcgen::DnType::CommonName, format!("system:node:{node_name}"));
    params.subject_alt_names = sans;
    let request = params.serialize_request(&key).and_then(|r| r.pem()).map_err(|e| JoinError::Key(e.to_string()))?;
    let csrs: Api<CertificateSigningRequest> = Api::all(client);
    let csr = CertificateSigningRequest {
        metadata: kube::api::ObjectMeta { generate_name: Some("node-csr-".into()), ..Default::default() },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: signer.into(),
            usages: Some(usages.iter().map(|u| u.to_string()).collect()),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = csrs.create(&PostParams::default(), &csr).await.map_err(|e| JoinError::Request(e.to_string()))?;
    let name = created.metadata.name.clone().unwrap_or_default();
    tracing::info!(csr = name, signer, "waiting for the certificate");
    let wait = async {
        loop {
            let c = csrs.get(&name).await.map_err(|e| JoinError::Request(e.to_string()))?;
            let status = c.status.unwrap_or_default();
            if let Some(cert) = status.certificate.filter(|c| !c.0.is_empty()) {
                return String::from_utf8(cert.0).map_err(|e| JoinError::Request(e.to_string()));
            }
            if let Some(refusal) =
                status.conditions.unwrap_or_default().into_iter().find(|c| (c.type_ == "Denied" || c.type_ == "Failed") && c.status == "True")
            {
                let why = format!("{}: {}", refusal.type_.to_lowercase(), refusal.message.unwrap_or_default());
                return Err(JoinError::Refused(name.clone(), why));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    let cert_pem = tokio::time::timeout(ISSUE_TIMEOUT, wait.instrument(tracing::debug_span!("csr_wait")))
        .await
        .map_err(|_| JoinError::Timeout(name.clone(), ISSUE_TIMEOUT))??;
    Ok((cert_pem, key.serialize_pem()))
}
