//! The agent's client certificate, rotated while the agent runs (the kubelet's certificate
//! manager): the cluster client presents whatever identity [`Identity`] holds at each TLS
//! handshake, and [`rotate`] replaces it with a newly signed certificate at a random point
//! between 70 % and 90 % of the current one's life, asking with the current certificate (a
//! node's `selfnodeclient` request, which the server approves), storing the new pair first.
//! Connections already open keep the old certificate until they close; new ones use the new.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;
use tower::ServiceBuilder;

use super::join::{Credentials, Join, JoinError};

/// The client certificate presented now.
#[derive(Debug)]
pub struct Identity {
    current: RwLock<Arc<CertifiedKey>>,
}

fn certified(cert_pem: &str, key_pem: &str) -> Result<Arc<CertifiedKey>, JoinError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| JoinError::Kubeconfig(format!("the client certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).map_err(|e| JoinError::Kubeconfig(format!("the client key: {e}")))?;
    let provider = rustls::crypto::ring::default_provider();
    let signing = provider.key_provider.load_private_key(key).map_err(|e| JoinError::Kubeconfig(format!("the client key: {e}")))?;
    Ok(Arc::new(CertifiedKey::new(certs, signing)))
}

impl Identity {
    pub fn new(creds: &Credentials) -> Result<Arc<Identity>, JoinError> {
        Ok(Arc::new(Identity { current: RwLock::new(certified(&creds.cert_pem, &creds.key_pem)?) }))
    }

    /// Presents `creds` from the next handshake on.
    pub fn replace(&self, creds: &Credentials) -> Result<(), JoinError> {
        let next = certified(&creds.cert_pem, &creds.key_pem)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        Ok(())
    }
}

impl ResolvesClientCert for Identity {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client of `server` (trusting `ca_pem`) that presents `identity`'s certificate.
pub fn client(server: &str, ca_pem: &str, identity: Arc<Identity>) -> Result<kube::Client, JoinError> {
    use kube::client::ConfigExt;
    let config = super::join::base_config(server, ca_pem)?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| JoinError::Kubeconfig(format!("the CA: {e}")))?;
        roots.add(cert).map_err(|e| JoinError::Kubeconfig(format!("the CA: {e}")))?;
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| JoinError::Kubeconfig(e.to_string()))?
        .with_root_certificates(roots)
        .with_client_cert_resolver(identity);
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnector::from((http, Arc::new(tls)));
    let hyper_client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(https);
    let service = ServiceBuilder::new().layer(config.base_uri_layer()).service(hyper_client);
    Ok(kube::Client::new(service, "default"))
}

/// When to renew a certificate valid from `not_before` to `not_after` (unix seconds): a random
/// point between 70 % and 90 % of its life, as the kubelet's certificate manager.
pub fn renewal_at(not_before: i64, not_after: i64, jitter: f64) -> i64 {
    let life = (not_after - not_before).max(0) as f64;
    not_before + (life * (0.7 + 0.2 * jitter.clamp(0.0, 1.0))).round() as i64
}

/// Renews the client certificate whenever its time comes, until `stop`.
pub async fn rotate(join: Join, mut creds: Credentials, identity: Arc<Identity>, client: kube::Client, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        let Some((not_before, not_after)) = creds.validity() else {
            tracing::warn!("the client certificate cannot be read: not rotated");
            return;
        };
        let at = renewal_at(not_before, not_after, fastrand::f64());
        let wait = (at - jiff::Timestamp::now().as_second()).max(0) as u64;
        tracing::info!(in_seconds = wait, "the client certificate will be renewed");
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(wait)) => {}
        }
        match super::join::renew(&join, &creds, client.clone()).await {
            Ok(fresh) => match identity.replace(&fresh) {
                Ok(()) => {
                    tracing::info!("renewed the client certificate; new connections present it");
                    creds = fresh;
                }
                Err(e) => tracing::warn!(error = %e, "the renewed client certificate"),
            },
            Err(e) => {
                tracing::warn!(error = %e, "renewing the client certificate (retrying in 30 s)");
                tokio::select! {
                    _ = stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(cn: &str, issuer: &rcgen::Issuer<'_, &rcgen::KeyPair>, sans: Vec<String>) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("key");
        let mut params = rcgen::CertificateParams::new(sans).expect("params");
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let cert = params.signed_by(&key, issuer).expect("sign");
        (cert.pem(), key.serialize_pem())
    }

    /// A real TLS server that asks for client certificates and reports each handshake's CN.
    #[tokio::test]
    async fn a_replaced_identity_is_presented_at_the_next_handshake() {
        let ca_key = rcgen::KeyPair::generate().expect("ca key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(rcgen::DnType::CommonName, "berth-rotation-test-ca");
        let ca = ca_params.self_signed(&ca_key).expect("ca");
        let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
        let (server_cert, server_key) = pem_pair("server", &issuer, vec!["127.0.0.1".into()]);
        let (a_cert, a_key) = pem_pair("system:node:a", &issuer, vec![]);
        let (b_cert, b_key) = pem_pair("system:node:b", &issuer, vec![]);
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.der().clone()).expect("root");
        let roots = Arc::new(roots);
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone()).build().expect("verifier");
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                CertificateDer::pem_slice_iter(server_cert.as_bytes()).collect::<Result<_, _>>().expect("cert"),
                PrivateKeyDer::from_pem_slice(server_key.as_bytes()).expect("key"),
            )
            .expect("server config");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(tls) = acceptor.accept(tcp).await else { continue };
                let cn = tls.get_ref().1.peer_certificates().and_then(|c| c.first().cloned()).and_then(|der| {
                    x509_parser::parse_x509_certificate(&der)
                        .ok()
                        .map(|(_, c)| c.subject().iter_common_name().next().and_then(|n| n.as_str().ok()).unwrap_or("").to_string())
                });
                let _ = tx.send(cn.unwrap_or_default()).await;
            }
        });
        let creds = |cert: &str, key: &str| Credentials { ca_pem: ca.pem(), cert_pem: cert.to_string(), key_pem: key.to_string() };
        let identity = Identity::new(&creds(&a_cert, &a_key)).expect("identity");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_client_cert_resolver(identity.clone());
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let connect = || async {
            let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
            connector.connect(name, tcp).await.expect("handshake")
        };
        let _first = connect().await;
        assert_eq!(rx.recv().await.as_deref(), Some("system:node:a"));
        identity.replace(&creds(&b_cert, &b_key)).expect("replace");
        let _second = connect().await;
        assert_eq!(rx.recv().await.as_deref(), Some("system:node:b"));
    }

    #[test]
    fn renewal_falls_between_seventy_and_ninety_percent_of_the_life() {
        assert_eq!(renewal_at(1000, 2000, 0.0), 1700);
        assert_eq!(renewal_at(1000, 2000, 1.0), 1900);
        assert_eq!(renewal_at(1000, 2000, 0.5), 1800);
        assert_eq!(renewal_at(1000, 2000, 7.0), 1900, "jitter is clamped");
    }
}
