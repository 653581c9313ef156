//! The HTTPS door: a TLS listener (rustls, HTTP/2 or HTTP/1.1 by ALPN, client certificates verified against the cluster CA
//! and optional, so that requests without one reach the authenticator chain (a bearer token, or
//! anonymous) rather than fail the handshake)
//! that turns each connection's verified certificate into a [`User`], put on each request as
//! [`crate::authn::ClientCertificate`] for the authenticator chain, and hands requests to the
//! router. It owns no API logic.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tracing::Instrument;

use crate::pki::Pki;
use crate::User;

#[derive(Debug, thiserror::Error)]
#[error("TLS setup: {0}")]
pub struct TlsError(String);

/// The server's TLS config: the serving certificate, client certificates optional but verified.
pub fn tls_config(pki: &Pki) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let e = |x: &dyn std::fmt::Display| TlsError(x.to_string());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        roots.add(c.map_err(|x| e(&x))?).map_err(|x| e(&x))?;
    }
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone()).allow_unauthenticated().build().map_err(|x| e(&x))?;
    let certs = CertificateDer::pem_slice_iter(pki.serving_cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>().map_err(|x| e(&x))?;
    let key = PrivateKeyDer::from_pem_slice(pki.serving_key_pem.as_bytes()).map_err(|x| e(&x))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|x| e(&x))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|x| e(&x))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The user a verified client certificate names: CN is the user, each O a group (the
/// authenticator chain adds system:authenticated).
pub fn user_of(cert: &CertificateDer<'_>) -> Option<User> {
    let (_, x509) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = x509.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups: Vec<String> = subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect();
    Some(User { name, groups, ..Default::default() })
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, tls: Arc<rustls::ServerConfig>, router: Router, shutdown: impl Future<Output = ()>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        let span = tracing::debug_span!("conn", %peer);
        tokio::spawn(
            async move {
                let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => return tracing::debug!("TLS handshake timed out"),
                };
                let user = tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(user_of);
                let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    if let Some(u) = &user {
                        req.extensions_mut().insert(crate::authn::ClientCertificate(u.clone()));
                    }
                    req.extensions_mut().insert(Peer(peer));
                    router.clone().oneshot(req.map(Body::new))
                });
                let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                builder.http1().timer(TokioTimer::new()).header_read_timeout(Duration::from_secs(30));
                builder.http2().timer(TokioTimer::new()).keep_alive_interval(Duration::from_secs(30));
                if let Err(e) = builder.serve_connection_with_upgrades(TokioIo::new(tls), service).await {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
            }
            .instrument(span),
        );
    }
}

/// The address a request came from (for the audit log's sourceIPs).
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub std::net::SocketAddr);
