//! Who may use the kubelet API, decided as a cluster's kubelet decides it (webhook
//! authentication and authorization, anonymous access off):
//!
//! - Authentication: a client certificate signed by the cluster CA (user = CN, groups = O), else
//!   a bearer token the apiserver vouches for (a TokenReview); neither → 401 `Unauthorized`.
//! - Authorization: the request as the kubelet names it — verb from the method (get, create,
//!   update, patch, delete), resource `nodes`, name the node, subresource from the path (`stats`,
//!   `metrics`, `log` for /logs, `spec`, `checkpoint`, and `proxy` for everything else: pods,
//!   containerLogs, exec, attach, portForward) — asked of the apiserver as a
//!   SubjectAccessReview; refused → 403 `Forbidden (user=U, verb=V, resource=nodes,
//!   subresource=S)`. An apiserver that does not serve SubjectAccessReviews allows
//!   `system:masters` only.
//! - Answers are cached as the kubelet caches them: tokens 2 minutes, allowed decisions
//!   5 minutes, denied ones 30 seconds.
//!
//! A standalone node (`berth node`) is [`Gate::Open`], as an upstream kubelet with its default
//! flags; `berth server` and `berth agent` start [`Gate::Closed`] (503 until the node knows its
//! cluster) and switch to checking once they have the CA and a client of the API.
//!
//! The TLS side: the listener asks every client for a certificate but does not require one
//! ([`ClientCerts`]); certificates are verified against the CA once it is known.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::api::PostParams;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};

const TOKEN_TTL: Duration = Duration::from_secs(120);
const ALLOWED_TTL: Duration = Duration::from_secs(300);
const DENIED_TTL: Duration = Duration::from_secs(30);
const MASTERS: &str = "system:masters";

/// The identity a request is made under.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

/// What the kubelet asks the apiserver to authorize for one request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Attributes {
    pub verb: &'static str,
    pub subresource: &'static str,
}

impl Attributes {
    /// The attributes of `method` on `path`, by upstream's mapping.
    pub fn of(method: &http::Method, path: &str) -> Attributes {
        let verb = match *method {
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE => "delete",
            _ => "get",
        };
        let under = |prefix: &str| path == prefix || path.starts_with(&format!("{prefix}/"));
        let subresource = if under("/stats") {
            "stats"
        } else if under("/metrics") {
            "metrics"
        } else if under("/logs") {
            "log"
        } else if under("/spec") {
            "spec"
        } else if under("/checkpoint") {
            "checkpoint"
        } else {
            "proxy"
        };
        Attributes { verb, subresource }
    }
}

/// Why a request is turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 503: the node does not know its cluster yet.
    NotReady,
    /// 401.
    Unauthorized,
    /// 403, with upstream's text.
    Forbidden(String),
}

impl Refusal {
    pub fn status(&self) -> u16 {
        match self {
            Refusal::NotReady => 503,
            Refusal::Unauthorized => 401,
            Refusal::Forbidden(_) => 403,
        }
    }

    pub fn body(&self) -> String {
        match self {
            Refusal::NotReady => "the kubelet API is not ready: the node has not joined its cluster yet".into(),
            Refusal::Unauthorized => "Unauthorized".into(),
            Refusal::Forbidden(m) => m.clone(),
        }
    }
}

/// What the gate does now.
pub enum Gate {
    /// Everyone may do everything (a standalone node).
    Open,
    /// Nothing until the node is part of a cluster.
    Closed,
    /// Callers are authenticated and authorized through the cluster.
    Checked(Box<Checker>),
}

/// The cluster side of the checks.
pub struct Checker {
    client: kube::Client,
    node_name: String,
    tokens: std::sync::Mutex<HashMap<String, (Option<Caller>, Instant)>>,
    decisions: std::sync::Mutex<HashMap<(Caller, Attributes), (bool, Instant)>>,
}

/// The kubelet API's gate, shared by the TLS listener and the HTTP layer.
pub struct Auth {
    gate: RwLock<Gate>,
    certs: Arc<ClientCerts>,
}

impl Auth {
    pub fn open() -> Arc<Auth> {
        Arc::new(Auth { gate: RwLock::new(Gate::Open), certs: ClientCerts::new() })
    }

    pub fn closed() -> Arc<Auth> {
        Arc::new(Auth { gate: RwLock::new(Gate::Closed), certs: ClientCerts::new() })
    }

    /// The TLS client-certificate verifier of the listener.
    pub fn client_certs(&self) -> Arc<ClientCerts> {
        self.certs.clone()
    }

    /// From now on: certificates of `ca_pem`, tokens and decisions from the API behind `client`.
    pub fn require(&self, ca_pem: &str, client: kube::Client, node_name: &str) -> Result<(), String> {
        self.certs.trust(ca_pem)?;
        let checker = Checker { client, node_name: node_name.to_string(), tokens: Default::default(), decisions: Default::default() };
        *self.gate.write().unwrap_or_else(|e| e.into_inner()) = Gate::Checked(Box::new(checker));
        Ok(())
    }

    /// The caller of a request with client certificate user `cert` and `Authorization` header
    /// `authorization`, if it may make it.
    pub async fn admit(&self, method: &http::Method, path: &str, cert: Option<Caller>, authorization: Option<&str>) -> Result<(), Refusal> {
        let (client, node_name) = {
            let gate = self.gate.read().unwrap_or_else(|e| e.into_inner());
            match &*gate {
                Gate::Open => return Ok(()),
                Gate::Closed => return Err(Refusal::NotReady),
                Gate::Checked(c) => (c.client.clone(), c.node_name.clone()),
            }
        };
        let caller = match cert {
            Some(c) => c,
            None => {
                let token = authorization.and_then(bearer).ok_or(Refusal::Unauthorized)?;
                self.token_user(&client, token).await.ok_or(Refusal::Unauthorized)?
            }
        };
        let attrs = Attributes::of(method, path);
        if self.allowed(&client, &node_name, &caller, &attrs).await {
            Ok(())
        } else {
            Err(Refusal::Forbidden(format!("Forbidden (user={}, verb={}, resource=nodes, subresource={})", caller.name, attrs.verb, attrs.subresource)))
        }
    }

    fn with_checker<T>(&self, f: impl FnOnce(&Checker) -> T) -> Option<T> {
        match &*self.gate.read().unwrap_or_else(|e| e.into_inner()) {
            Gate::Checked(c) => Some(f(c)),
            _ => None,
        }
    }

    async fn token_user(&self, client: &kube::Client, token: &str) -> Option<Caller> {
        let cached = self
            .with_checker(|c| c.tokens.lock().unwrap_or_else(|e| e.into_inner()).get(token).filter(|(_, at)| at.elapsed() < TOKEN_TTL).map(|(u, _)| u.clone()));
        if let Some(Some(hit)) = cached {
            return hit;
        }
        let review = TokenReview { spec: TokenReviewSpec { token: Some(token.to_string()), ..Default::default() }, ..Default::default() };
        let answer = match kube::Api::<TokenReview>::all(client.clone()).create(&PostParams::default(), &review).await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "TokenReview for a kubelet API request");
                return None;
            }
        };
        let status = answer.status.unwrap_or_default();
        let caller = status.user.filter(|_| status.authenticated == Some(true)).map(|u| Caller {
            name: u.username.unwrap_or_default(),
            uid: u.uid.unwrap_or_default(),
            groups: u.groups.unwrap_or_default(),
        });
        self.with_checker(|c| c.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(token.to_string(), (caller.clone(), Instant::now())));
        caller
    }

    async fn allowed(&self, client: &kube::Client, node_name: &str, caller: &Caller, attrs: &Attributes) -> bool {
        let key = (caller.clone(), attrs.clone());
        let cached = self.with_checker(|c| {
            c.decisions
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&key)
                .filter(|(ok, at)| at.elapsed() < if *ok { ALLOWED_TTL } else { DENIED_TTL })
                .map(|(ok, _)| *ok)
        });
        if let Some(Some(ok)) = cached {
            return ok;
        }
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(caller.name.clone()),
                uid: (!caller.uid.is_empty()).then(|| caller.uid.clone()),
                groups: Some(caller.groups.clone()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(attrs.verb.into()),
                    resource: Some("nodes".into()),
                    subresource: Some(attrs.subresource.into()),
                    name: Some(node_name.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let ok = match kube::Api::<SubjectAccessReview>::all(client.clone()).create(&PostParams::default(), &review).await {
            Ok(a) => a.status.is_some_and(|s| s.allowed),
            // an apiserver without authorization reviews: only the cluster's administrators
            Err(kube::Error::Api(e)) if e.code == 404 => caller.groups.iter().any(|g| g == MASTERS),
            Err(e) => {
                tracing::warn!(error = %e, "SubjectAccessReview for a kubelet API request");
                return false;
            }
        };
        self.with_checker(|c| c.decisions.lock().unwrap_or_else(|e| e.into_inner()).insert(key, (ok, Instant::now())));
        ok
    }
}

fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token.trim()).filter(|t| !t.is_empty())
}

/// The user of a verified client certificate (CN, each O a group).
pub fn caller_of(cert: &CertificateDer<'_>) -> Option<Caller> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let subject = parsed.subject();
    let name = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let mut groups: Vec<String> = subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect();
    groups.push("system:authenticated".into());
    Some(Caller { name, uid: String::new(), groups })
}

/// The listener's client-certificate verifier: asks for a certificate, never requires one,
/// and verifies the ones it gets against the cluster CA once [`ClientCerts::trust`] gave it
/// (before that, a presented certificate fails the handshake).
#[derive(Debug)]
pub struct ClientCerts {
    provider: Arc<rustls::crypto::CryptoProvider>,
    inner: RwLock<Option<Arc<dyn ClientCertVerifier>>>,
}

impl ClientCerts {
    fn new() -> Arc<ClientCerts> {
        Arc::new(ClientCerts { provider: Arc::new(rustls::crypto::ring::default_provider()), inner: RwLock::new(None) })
    }

    fn trust(&self, ca_pem: &str) -> Result<(), String> {
        use rustls::pki_types::pem::PemObject;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .allow_unauthenticated()
            .build()
            .map_err(|e| e.to_string())?;
        *self.inner.write().unwrap_or_else(|e| e.into_inner()) = Some(verifier);
        Ok(())
    }
}

impl ClientCertVerifier for ClientCerts {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner()).clone();
        match inner {
            Some(v) => v.verify_client_cert(end_entity, intermediates, now),
            None => Err(rustls::Error::General("no cluster CA to verify client certificates with yet".into())),
        }
    }

    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_map_to_upstreams_subresources() {
        let get = http::Method::GET;
        assert_eq!(Attributes::of(&get, "/stats/summary"), Attributes { verb: "get", subresource: "stats" });
        assert_eq!(Attributes::of(&get, "/metrics/cadvisor"), Attributes { verb: "get", subresource: "metrics" });
        assert_eq!(Attributes::of(&get, "/metrics/resource"), Attributes { verb: "get", subresource: "metrics" });
        assert_eq!(Attributes::of(&get, "/logs/"), Attributes { verb: "get", subresource: "log" });
        assert_eq!(Attributes::of(&get, "/pods"), Attributes { verb: "get", subresource: "proxy" });
        assert_eq!(Attributes::of(&http::Method::POST, "/exec/ns/p/c"), Attributes { verb: "create", subresource: "proxy" });
        assert_eq!(Attributes::of(&get, "/statsx"), Attributes { verb: "get", subresource: "proxy" });
    }

    #[tokio::test]
    async fn an_open_gate_admits_everyone_and_a_closed_one_nobody() {
        let open = Auth::open();
        assert_eq!(open.admit(&http::Method::GET, "/pods", None, None).await, Ok(()));
        let closed = Auth::closed();
        let r = closed.admit(&http::Method::GET, "/pods", None, None).await.unwrap_err();
        assert_eq!(r.status(), 503);
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
