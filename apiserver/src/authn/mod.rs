//! Authentication: who a request is from. Owns the authenticator chain the HTTP adapter runs
//! for every request from the network, the token authenticators, the service account signing
//! key's public documents (OIDC discovery, JWKS) and the authentication.k8s.io review kinds. It
//! decides nothing about what a user may do (that is authorization's job).
//!
//! The chain, in upstream's order and with its union semantics:
//! 1. a verified client certificate (the TLS listener puts its user on the request as
//!    [`ClientCertificate`]: CN the name, each O a group); when there is one, it decides;
//! 2. a bearer token (`Authorization: Bearer T`), tried against the static token file, then as a
//!    service account JWT (bound or legacy Secret token), then as a bootstrap token. A token no
//!    authenticator accepts fails the request with 401, on every path;
//! 3. no credential at all: the anonymous user, which may read only the health checks,
//!    `/version`, discovery, OpenAPI and the OIDC documents; anything else is 401.
//!
//! Every authenticated user gets `system:authenticated`. An in-process request (controllers,
//! scheduler, the local agent) already carries its [`User`] and skips the chain.
//!
//! The files: `token_file` (static tokens), `bootstrap` (bootstrap tokens), `jwt` (ES256 JWS,
//! claims, JWK), `signing_key` (the key on disk), `serviceaccount` (verifying service account
//! tokens), `token_request` (issuing them), `legacy` (the token controller of legacy token
//! Secrets), `review` (TokenReview, SelfSubjectReview), `node_token` (`berth server`'s join token).
//! Objects a token names are read through the watch cache, with a consistent read when the cache
//! does not have them.

pub mod bootstrap;
pub mod jwt;
pub mod legacy;
pub mod node_token;
pub mod review;
pub mod serviceaccount;
pub mod signing_key;
pub mod token_file;
pub mod token_request;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::api::Api;
use crate::User;
use jwt::SigningKey;
use serviceaccount::Issuer;
use token_file::StaticTokens;

/// The group every authenticated user is in.
pub const AUTHENTICATED: &str = "system:authenticated";

/// The user of a verified client certificate, put on the request by the TLS listener.
#[derive(Debug, Clone)]
pub struct ClientCertificate(pub User);

/// How authentication is set up.
#[derive(Clone, Default)]
pub struct Config {
    /// The users of `--token-auth-file`.
    pub static_tokens: StaticTokens,
    /// `--service-account-issuer`: the first issues tokens, all are accepted (empty: upstream's
    /// default).
    pub issuers: Vec<String>,
    /// `--api-audiences`: what tokens must be meant for (empty: the first issuer).
    pub audiences: Vec<String>,
    /// The service account signing key (None: a key of this process only, for tests).
    pub signing_key: Option<Arc<SigningKey>>,
    /// The cluster CA (PEM) that legacy token Secrets carry as `ca.crt`.
    pub root_ca: String,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("static_tokens", &self.static_tokens.len())
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("signing_key", &self.signing_key)
            .field("root_ca", &self.root_ca.len())
            .finish()
    }
}

/// The authenticators of a running API.
#[derive(Debug)]
pub struct Authn {
    static_tokens: StaticTokens,
    pub(crate) service_accounts: Issuer,
    pub(crate) root_ca: String,
}

impl Authn {
    pub fn new(config: Config) -> Result<Self, jwt::JwtError> {
        let key = match config.signing_key {
            Some(k) => k,
            None => Arc::new(SigningKey::generate()?.1),
        };
        let accepted = if config.issuers.is_empty() { vec![serviceaccount::DEFAULT_ISSUER.to_string()] } else { config.issuers };
        let issuer = accepted[0].clone();
        let audiences = if config.audiences.is_empty() { vec![issuer.clone()] } else { config.audiences };
        Ok(Authn { static_tokens: config.static_tokens, service_accounts: Issuer { issuer, accepted, audiences, key }, root_ca: config.root_ca })
    }

    /// The audiences the API accepts.
    pub fn api_audiences(&self) -> &[String] {
        &self.service_accounts.audiences
    }

    /// The user of bearer token `token` meant for `audiences` (and the audiences it is good for);
    /// else what the authenticators that knew the token said (upstream's aggregate: one error as
    /// is, several in brackets; empty when no authenticator recognised it).
    pub async fn authenticate_token(&self, api: &Arc<Api>, token: &str, audiences: &[String]) -> Result<(User, Vec<String>), String> {
        let mut errors = vec![];
        // static and bootstrap tokens are good for the API's audiences
        let api_auds = intersect(self.api_audiences(), audiences);
        if let Some(u) = self.static_tokens.user(token) {
            if !api_auds.is_empty() {
                return Ok((authenticated(u.clone()), api_auds));
            }
        }
        match self.service_accounts.authenticate(api, token, audiences).await {
            Ok(Some((u, auds))) => return Ok((authenticated(u), auds)),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
        match bootstrap::authenticate(api, token).await {
            Ok(Some(u)) if !api_auds.is_empty() => return Ok((authenticated(u), api_auds)),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
        Err(match errors.len() {
            0 => String::new(),
            1 => errors.remove(0),
            _ => format!("[{}]", errors.join(", ")),
        })
    }

    /// Runs the chain for a request from the network with client certificate user `cert` and
    /// `Authorization` header `authorization`.
    pub async fn authenticate(&self, api: &Arc<Api>, cert: Option<User>, authorization: Option<String>) -> Outcome {
        if let Some(u) = cert {
            return Outcome::User(authenticated(u));
        }
        let Some(token) = authorization.as_deref().and_then(bearer) else {
            return Outcome::Anonymous;
        };
        let audiences = self.api_audiences().to_vec();
        match self.authenticate_token(api, token, &audiences).await {
            Ok((u, _)) => Outcome::User(u),
            Err(why) if why.is_empty() => Outcome::Failed("invalid bearer token".into()),
            Err(why) => Outcome::Failed(why),
        }
    }

    /// `/.well-known/openid-configuration`, with the JWKS at `https://<advertise>/openid/v1/jwks`.
    pub fn openid_configuration(&self, advertise_address: &str) -> Value {
        json!({
            "issuer": self.service_accounts.issuer,
            "jwks_uri": format!("https://{advertise_address}/openid/v1/jwks"),
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["ES256"],
        })
    }

    /// `/openid/v1/jwks`: the public keys that verify service account tokens.
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.service_accounts.key.jwk()]})
    }
}

/// What the chain found.
#[derive(Debug)]
pub enum Outcome {
    User(User),
    /// No credential was presented.
    Anonymous,
    /// A credential was presented and no authenticator accepted it.
    Failed(String),
}

/// The anonymous user.
pub fn anonymous() -> User {
    User::new("system:anonymous", &["system:unauthenticated"])
}

/// Whether an anonymous request may go to `path` (no trailing slash): the health checks,
/// `/version`, discovery, OpenAPI and the service account issuer's documents.
pub fn anonymous_may_read(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    matches!(
        segs.as_slice(),
        ["healthz" | "livez" | "readyz", ..]
            | ["version"]
            | ["api"]
            | ["api", _]
            | ["apis"]
            | ["apis", _]
            | ["apis", _, _]
            | ["openapi", "v2"]
            | ["openapi", "v3", ..]
            | [".well-known", "openid-configuration"]
            | ["openid", "v1", "jwks"]
    )
}

/// Whether an anonymous request may `GET` `path`: kube-public/cluster-info, which a joining
/// node reads before it trusts the server (its signatures prove the CA; `crate::certificates`).
pub fn anonymous_may_get(path: &str) -> bool {
    path == "/api/v1/namespaces/kube-public/configmaps/cluster-info"
}

/// The token of an `Authorization: Bearer T` header (other schemes are not a credential here).
fn bearer(header: &str) -> Option<&str> {
    let mut parts = header.split_whitespace();
    let scheme = parts.next()?;
    let token = parts.next()?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// `u` with `system:authenticated` (added once).
fn authenticated(mut u: User) -> User {
    if !u.groups.iter().any(|g| g == AUTHENTICATED) {
        u.groups.push(AUTHENTICATED.into());
    }
    u
}

/// The members of `a` that are also in `b`.
pub(crate) fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    a.iter().filter(|x| b.contains(x)).cloned().collect()
}

/// Equality of two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A core-group object through the watch cache, falling back to a consistent read when the cache
/// does not have it (yet); None when it does not exist.
pub(crate) async fn lookup(api: &Arc<Api>, plural: &str, namespace: Option<&str>, name: &str) -> Result<Option<Value>, String> {
    let res = api.resource("", plural).map_err(|e| e.message)?;
    match api.get(&res, namespace, name, Some("0")).await {
        Ok(v) => return Ok(Some(v)),
        Err(e) if e.code == 404 => {}
        Err(e) => return Err(e.message),
    }
    match api.get(&res, namespace, name, None).await {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.code == 404 => Ok(None),
        Err(e) => Err(e.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_reads_only_public_documents() {
        for p in [
            "/healthz",
            "/readyz/etcd",
            "/livez",
            "/version",
            "/api",
            "/api/v1",
            "/apis",
            "/apis/apps",
            "/apis/apps/v1",
            "/openapi/v2",
            "/openapi/v3",
            "/openapi/v3/api/v1",
            "/.well-known/openid-configuration",
            "/openid/v1/jwks",
        ] {
            assert!(anonymous_may_read(p), "{p}");
        }
        for p in ["/api/v1/pods", "/api/v1/namespaces/default/pods", "/apis/apps/v1/deployments", "/openapi", "/metrics", "/", "/openid/v1"] {
            assert!(!anonymous_may_read(p), "{p}");
        }
    }

    #[test]
    fn bearer_header_grammar() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer   abc "), Some("abc"));
        assert_eq!(bearer("Basic YWJj"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn constant_time_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn authenticated_is_added_once() {
        let u = authenticated(authenticated(User::new("a", &["x"])));
        assert_eq!(u.groups, vec!["x", AUTHENTICATED]);
    }
}
