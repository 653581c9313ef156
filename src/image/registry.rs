//! The pull side of the OCI distribution protocol: manifests and blobs over HTTP(S), with
//! registry mirrors and repository rewrites, plain HTTP only where allowed, and the auth flows
//! registries use (Basic, Bearer tokens from a token service, identity and registry tokens).
use super::reference::Reference;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use regex::Regex;
use serde::Deserialize;
use sha2::{Digest as _, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `[registry]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistryConfig {
    /// Registries on localhost / loopback addresses may use plain HTTP.
    pub plain_http_localhost: bool,
    /// More hosts (`host[:port]`) that may use plain HTTP when HTTPS fails.
    pub insecure: Vec<String>,
    /// Per registry host (or "*"): mirrors tried before the registry itself.
    pub mirrors: HashMap<String, MirrorConfig>,
    /// Per endpoint host: credentials and TLS settings.
    pub configs: HashMap<String, HostConfig>,
}

impl Default for RegistryConfig {
    fn default() -> Self {
        RegistryConfig { plain_http_localhost: true, insecure: vec![], mirrors: HashMap::new(), configs: HashMap::new() }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MirrorConfig {
    /// `scheme://host[:port][/path]`; without a scheme, https.
    pub endpoints: Vec<String>,
    /// Regex → replacement applied to the repository path on the mirrors.
    pub rewrite: BTreeMap<String, String>,
    /// false: only the mirrors are asked, never the registry itself (an air-gapped node, or
    /// containerd's hosts.toml `server` pointing at the mirror).
    pub upstream: bool,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        MirrorConfig { endpoints: vec![], rewrite: BTreeMap::new(), upstream: true }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostConfig {
    pub auth: Option<AuthEntry>,
    /// Same as `tls.insecure_skip_verify`.
    pub insecure_skip_verify: bool,
    pub tls: Option<HostTls>,
}

impl HostConfig {
    pub fn skip_verify(&self) -> bool {
        self.insecure_skip_verify || self.tls.as_ref().is_some_and(|t| t.insecure_skip_verify)
    }
}

/// `[registry.configs."host".tls]`, as containerd's CRI config spells it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostTls {
    /// PEM CA certificate(s) the registry's certificate is verified against (with the host's).
    pub ca_file: Option<std::path::PathBuf>,
    /// A PEM client certificate and its key, for registries that ask for one.
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthEntry {
    pub username: String,
    pub password: String,
    pub auth: String,
    pub identity_token: String,
}

/// Credentials as the CRI AuthConfig carries them; empty strings are unset.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub username: String,
    pub password: String,
    /// base64 of `username:password`
    pub auth: String,
    pub identity_token: String,
    pub registry_token: String,
}

impl Credentials {
    fn is_empty(&self) -> bool {
        self.username.is_empty() && self.password.is_empty() && self.auth.is_empty() && self.identity_token.is_empty() && self.registry_token.is_empty()
    }

    /// A digest of every field: equal for the same credentials, revealing nothing of them.
    fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        for part in [&self.username, &self.password, &self.auth, &self.identity_token, &self.registry_token] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        hex::encode(h.finalize())
    }

    fn user_pass(&self) -> Option<(String, String)> {
        if !self.username.is_empty() {
            return Some((self.username.clone(), self.password.clone()));
        }
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD.decode(self.auth.trim()).ok()?;
        let s = String::from_utf8(raw).ok()?;
        s.split_once(':').map(|(u, p)| (u.to_string(), p.to_string()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("invalid registry response: {0}")]
    InvalidResponse(String),
    #[error("too large: {0}")]
    TooLarge(String),
    #[error("invalid registry configuration: {0}")]
    InvalidConfig(String),
}

impl RegistryError {
    /// The same kind of error with another message (to summarise several endpoints).
    fn with_message(self, m: String) -> RegistryError {
        match self {
            RegistryError::NotFound(_) => RegistryError::NotFound(m),
            RegistryError::Unauthorized(_) => RegistryError::Unauthorized(m),
            RegistryError::Unavailable(_) => RegistryError::Unavailable(m),
            other => other,
        }
    }
    fn tries_next(&self) -> bool {
        matches!(self, RegistryError::NotFound(_) | RegistryError::Unauthorized(_) | RegistryError::Unavailable(_))
    }
}

const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.docker.distribution.manifest.v2+json";
const MAX_MANIFEST: usize = 4 << 20;
const DOCKER_HUB_HOST: &str = "registry-1.docker.io";

/// One place a repository can be fetched from.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// `scheme://host[:port][/prefix]`, no trailing slash.
    base: String,
    /// `host[:port]`, for looking up configured credentials.
    host: String,
    /// On HTTPS failure, retry over plain HTTP (hosts listed in `insecure`).
    fallback_http: bool,
    skip_verify: bool,
    rewrites: Vec<(Regex, String)>,
}

impl Endpoint {
    fn repository(&self, repo: &str) -> String {
        for (re, to) in &self.rewrites {
            if re.is_match(repo) {
                return re.replace(repo, to.as_str()).into_owned();
            }
        }
        repo.to_string()
    }
    pub fn base(&self) -> &str {
        &self.base
    }
}

/// Where a manifest was found: blobs of the image come from the same place.
#[derive(Clone, Debug)]
pub struct Source {
    endpoint: Endpoint,
    repository: String,
    creds: Credentials,
}

pub struct FetchedManifest {
    pub bytes: Bytes,
    pub media_type: String,
    /// `sha256:<hex>` computed from `bytes`.
    pub digest: String,
}

pub type BlobStream = Pin<Box<dyn Stream<Item = Result<Bytes, RegistryError>> + Send>>;

/// Which Authorization value may be reused: the endpoint, the repository, and a fingerprint
/// of the credentials that earned it, so a pull never rides on a token it did not earn.
type TokenKey = (String, String, String);

pub struct RegistryClient {
    config: RegistryConfig,
    http: super::http_clients::HttpClients,
    /// Authorization header values, with their expiry.
    tokens: Mutex<HashMap<TokenKey, (String, Instant)>>,
}

fn host_is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, p)| if p.bytes().all(|b| b.is_ascii_digit()) { h } else { host })
    };
    h == "localhost" || h.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

impl RegistryClient {
    pub fn new(config: RegistryConfig) -> Result<Self, RegistryError> {
        let http = super::http_clients::HttpClients::new(&config.configs)?;
        let c = RegistryClient { http, config, tokens: Mutex::new(HashMap::new()) };
        // Check mirror URLs and rewrites now, not at the first pull.
        for host in c.config.mirrors.keys() {
            c.endpoints_for(host)?;
        }
        Ok(c)
    }

    /// The endpoints to try for registry `domain`, in order: mirrors, then the registry.
    pub fn endpoints_for(&self, domain: &str) -> Result<Vec<Endpoint>, RegistryError> {
        let mut out = vec![];
        let mirror = self.config.mirrors.get(domain).or_else(|| self.config.mirrors.get("*"));
        if let Some(m) = mirror {
            let rewrites = m
                .rewrite
                .iter()
                .map(|(from, to)| Regex::new(from).map(|re| (re, to.clone())).map_err(|e| RegistryError::InvalidConfig(format!("rewrite {from:?}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            for url in &m.endpoints {
                let (scheme, rest) = match url.split_once("://") {
                    Some((s @ ("http" | "https"), r)) => (s, r),
                    Some((s, _)) => return Err(RegistryError::InvalidConfig(format!("mirror {url:?}: unknown scheme {s:?}"))),
                    None => ("https", url.as_str()),
                };
                let rest = rest.trim_end_matches('/');
                let rest = rest.strip_suffix("/v2").unwrap_or(rest);
                let host = rest.split('/').next().unwrap_or_default().to_string();
                if host.is_empty() {
                    return Err(RegistryError::InvalidConfig(format!("mirror {url:?} has no host")));
                }
                out.push(Endpoint {
                    base: format!("{scheme}://{rest}"),
                    skip_verify: self.config.configs.get(&host).is_some_and(|h| h.skip_verify()),
                    host,
                    fallback_http: false,
                    rewrites: rewrites.clone(),
                });
            }
            if !m.upstream {
                if out.is_empty() {
                    return Err(RegistryError::InvalidConfig(format!("mirror for {domain:?}: upstream = false needs endpoints")));
                }
                return Ok(out);
            }
        }
        let host = if domain == "docker.io" { DOCKER_HUB_HOST.to_string() } else { domain.to_string() };
        let plain = self.config.plain_http_localhost && host_is_loopback(&host);
        let insecure = self.config.insecure.iter().any(|h| h == domain || h == &host);
        out.push(Endpoint {
            base: format!("{}://{host}", if plain { "http" } else { "https" }),
            skip_verify: self.config.configs.get(domain).is_some_and(|h| h.skip_verify()),
            host: domain.to_string(),
            fallback_http: insecure && !plain,
            rewrites: vec![],
        });
        Ok(out)
    }

    fn creds_for(&self, ep: &Endpoint, given: &Credentials) -> Credentials {
        if !given.is_empty() {
            return given.clone();
        }
        match self.config.configs.get(&ep.host).and_then(|h| h.auth.clone()) {
            Some(a) => {
                Credentials { username: a.username, password: a.password, auth: a.auth, identity_token: a.identity_token, registry_token: String::new() }
            }
            None => Credentials::default(),
        }
    }

    /// Fetch the manifest or index `r` names, trying mirrors first.
    pub async fn fetch_manifest(&self, r: &Reference, creds: &Credentials) -> Result<(Source, FetchedManifest), RegistryError> {
        let wanted = r.digest.clone().or_else(|| r.tag.clone()).unwrap_or_else(|| "latest".into());
        let mut tried: Vec<String> = vec![];
        let mut last = None;
        for ep in self.endpoints_for(&r.domain)? {
            let src = Source { repository: ep.repository(&r.repository), creds: self.creds_for(&ep, creds), endpoint: ep };
            match self.manifest_at(&src, &wanted, r.digest.as_deref()).await {
                Ok(m) => return Ok((src, m)),
                Err(e) if e.tries_next() => {
                    tracing::debug!(endpoint = %src.endpoint.base, error = %e, "manifest not fetched here");
                    tried.push(format!("{}: {e}", src.endpoint.base));
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let summary = tried.join("; ");
        Err(match last {
            Some(e) if tried.len() > 1 => e.with_message(summary),
            Some(e) => e,
            None => RegistryError::InvalidConfig("no endpoint".into()),
        })
    }

    /// Fetch a manifest by digest from where the first one came from.
    pub async fn fetch_manifest_by_digest(&self, src: &Source, digest: &str) -> Result<FetchedManifest, RegistryError> {
        self.manifest_at(src, digest, Some(digest)).await
    }

    async fn manifest_at(&self, src: &Source, reference: &str, want_digest: Option<&str>) -> Result<FetchedManifest, RegistryError> {
        let resp = self.get(src, &format!("manifests/{reference}"), Some(MANIFEST_ACCEPT), None).await?;
        if resp.content_length().is_some_and(|n| n as usize > MAX_MANIFEST) {
            return Err(RegistryError::TooLarge(format!("manifest {reference} is over {MAX_MANIFEST} bytes")));
        }
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().trim().to_string())
            .unwrap_or_default();
        let header_digest = resp.headers().get("docker-content-digest").and_then(|v| v.to_str().ok()).map(str::to_string);
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = stream.next().await {
            body.extend_from_slice(&chunk.map_err(|e| RegistryError::Unavailable(e.to_string()))?);
            if body.len() > MAX_MANIFEST {
                return Err(RegistryError::TooLarge(format!("manifest {reference} is over {MAX_MANIFEST} bytes")));
            }
        }
        if media_type == "application/vnd.docker.distribution.manifest.v1+prettyjws" || media_type == "application/vnd.docker.distribution.manifest.v1+json" {
            return Err(RegistryError::InvalidResponse("unsupported manifest (Docker schema 1)".into()));
        }
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
        for expected in [want_digest.map(str::to_string), header_digest.filter(|h| h.starts_with("sha256:"))].into_iter().flatten() {
            if expected != digest {
                return Err(RegistryError::DigestMismatch { expected, actual: digest });
            }
        }
        Ok(FetchedManifest { bytes: Bytes::from(body), media_type, digest })
    }

    /// Stream blob `digest` from `src`, starting at byte `offset`. Returns the length of what
    /// follows, when known. The caller verifies the digest.
    pub async fn fetch_blob(&self, src: &Source, digest: &str, offset: u64) -> Result<(Option<u64>, BlobStream), RegistryError> {
        let resp = self.get(src, &format!("blobs/{digest}"), None, Some(offset).filter(|o| *o > 0)).await?;
        let partial = resp.status() == reqwest::StatusCode::PARTIAL_CONTENT;
        let len = resp.content_length();
        let mut skip = if offset > 0 && !partial { offset } else { 0 };
        let stream = resp.bytes_stream().filter_map(move |chunk| {
            let out = match chunk {
                Err(e) => Some(Err(RegistryError::Unavailable(format!("reading blob: {e}")))),
                Ok(mut b) => {
                    if skip > 0 {
                        let n = skip.min(b.len() as u64) as usize;
                        skip -= n as u64;
                        let _ = b.split_to(n);
                    }
                    if b.is_empty() {
                        None
                    } else {
                        Some(Ok(b))
                    }
                }
            };
            std::future::ready(out)
        });
        let len = if partial || offset == 0 { len } else { len.map(|l| l.saturating_sub(offset)) };
        Ok((len, Box::pin(stream)))
    }

    /// GET `<base>/v2/<repo>/<suffix>`, authenticating when challenged; maps HTTP status codes.
    async fn get(&self, src: &Source, suffix: &str, accept: Option<&str>, range: Option<u64>) -> Result<reqwest::Response, RegistryError> {
        let ep = &src.endpoint;
        match self.get_from(src, &ep.base, suffix, accept, range).await {
            Err(RegistryError::Unavailable(m)) if ep.fallback_http && ep.base.starts_with("https://") => {
                let http = format!("http://{}", &ep.base["https://".len()..]);
                tracing::debug!(endpoint = %ep.base, error = %m, "HTTPS failed; insecure registry, trying plain HTTP");
                self.get_from(src, &http, suffix, accept, range).await
            }
            other => other,
        }
    }

    async fn get_from(&self, src: &Source, base: &str, suffix: &str, accept: Option<&str>, range: Option<u64>) -> Result<reqwest::Response, RegistryError> {
        let url = format!("{base}/v2/{}/{suffix}", src.repository);
        let key = (base.to_string(), src.repository.clone(), src.creds.fingerprint());
        let mut auth = self.cached_token(&key);
        for attempt in 0..2 {
            let resp = self.send(src, base, &url, accept, range, auth.as_deref()).await?;
            let status = resp.status();
            if status == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp.headers().get(reqwest::header::WWW_AUTHENTICATE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
                let (header, ttl) = self.authorize(src, &challenge).await?;
                self.tokens.lock().unwrap_or_else(|e| e.into_inner()).insert(key.clone(), (header.clone(), Instant::now() + ttl));
                auth = Some(header);
                continue;
            }
            return check_status(resp, &url).await;
        }
        Err(RegistryError::Unauthorized(format!("{url}: credentials rejected")))
    }

    fn cached_token(&self, key: &TokenKey) -> Option<String> {
        let tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        tokens.get(key).filter(|(_, exp)| *exp > Instant::now()).map(|(h, _)| h.clone())
    }

    async fn send(
        &self,
        src: &Source,
        base: &str,
        url: &str,
        accept: Option<&str>,
        range: Option<u64>,
        auth: Option<&str>,
    ) -> Result<reqwest::Response, RegistryError> {
        let client = self.http.for_host(&src.endpoint.host, src.endpoint.skip_verify);
        let mut req = client.get(url);
        if let Some(a) = accept {
            req = req.header(reqwest::header::ACCEPT, a);
        }
        if let Some(o) = range {
            req = req.header(reqwest::header::RANGE, format!("bytes={o}-"));
        }
        if let Some(a) = auth {
            req = req.header(reqwest::header::AUTHORIZATION, a);
        }
        req.send().await.map_err(|e| {
            let hint = if base.starts_with("https://") { self.http.missing_roots_hint(&src.endpoint.host) } else { None };
            match transport_error(e, base) {
                RegistryError::Unavailable(m) if hint.is_some() => RegistryError::Unavailable(m + &hint.unwrap_or_default()),
                other => other,
            }
        })
    }

    /// Answer a WWW-Authenticate challenge: returns the Authorization header value to use.
    async fn authorize(&self, src: &Source, challenge: &str) -> Result<(String, Duration), RegistryError> {
        let (scheme, params) = parse_challenge(challenge);
        let creds = &src.creds;
        match scheme.to_ascii_lowercase().as_str() {
            "basic" => {
                let (u, p) = creds.user_pass().ok_or_else(|| RegistryError::Unauthorized(format!("{} requires credentials", src.endpoint.host)))?;
                use base64::Engine;
                let v = base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"));
                Ok((format!("Basic {v}"), Duration::from_secs(3600)))
            }
            "bearer" => {
                if !creds.registry_token.is_empty() {
                    return Ok((format!("Bearer {}", creds.registry_token), Duration::from_secs(3600)));
                }
                let realm = params.get("realm").ok_or_else(|| RegistryError::InvalidResponse("bearer challenge without realm".into()))?;
                let service = params.get("service").cloned().unwrap_or_default();
                let scope = params.get("scope").cloned().unwrap_or_else(|| format!("repository:{}:pull", src.repository));
                self.fetch_token(realm, &service, &scope, creds).await
            }
            _ => Err(RegistryError::Unauthorized(format!("unsupported auth challenge {challenge:?}"))),
        }
    }

    async fn fetch_token(&self, realm: &str, service: &str, scope: &str, creds: &Credentials) -> Result<(String, Duration), RegistryError> {
        #[derive(Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: String,
            #[serde(default)]
            access_token: String,
            #[serde(default)]
            expires_in: Option<u64>,
        }
        let client = self.http.for_url(realm, &self.config.configs);
        let req = if !creds.identity_token.is_empty() {
            client.post(realm).form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", creds.identity_token.as_str()),
                ("service", service),
                ("scope", scope),
                ("client_id", "berth"),
            ])
        } else {
            let mut r = client.get(realm).query(&[("service", service), ("scope", scope)]);
            if let Some((u, p)) = creds.user_pass() {
                r = r.basic_auth(u, Some(p));
            }
            r
        };
        let resp = req.send().await.map_err(|e| RegistryError::Unavailable(format!("token service {realm}: {e}")))?;
        let status = resp.status();
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            return Err(RegistryError::Unauthorized(format!("token service {realm} refused: {}", error_message(resp).await)));
        }
        if !status.is_success() {
            return Err(RegistryError::Unavailable(format!("token service {realm}: HTTP {status}")));
        }
        let t: TokenResponse = resp.json().await.map_err(|e| RegistryError::InvalidResponse(format!("token service {realm}: {e}")))?;
        let token = if t.token.is_empty() { t.access_token } else { t.token };
        if token.is_empty() {
            return Err(RegistryError::InvalidResponse(format!("token service {realm} gave no token")));
        }
        let ttl = Duration::from_secs(t.expires_in.unwrap_or(60).clamp(10, 3600)).saturating_sub(Duration::from_secs(5));
        Ok((format!("Bearer {token}"), ttl))
    }
}

fn transport_error(e: reqwest::Error, base: &str) -> RegistryError {
    let mut msg = format!("{base}: {e}");
    let mut src: Option<&dyn std::error::Error> = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    if base.starts_with("https://")
        && (msg.contains("InvalidContentType") || msg.contains("corrupt message") || msg.contains("record overflow") || msg.contains("tls"))
    {
        msg.push_str(
            " (the server may speak plain HTTP: it gave an HTTP response to an HTTPS client; allow plain HTTP for this registry with registry.insecure)",
        );
    }
    RegistryError::Unavailable(msg)
}

async fn error_message(resp: reqwest::Response) -> String {
    #[derive(Deserialize)]
    struct Errors {
        errors: Vec<ErrorEntry>,
    }
    #[derive(Deserialize)]
    struct ErrorEntry {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    match serde_json::from_str::<Errors>(&text) {
        Ok(e) if !e.errors.is_empty() => format!("{} {}", e.errors[0].code, e.errors[0].message).trim().to_string(),
        _ => format!("HTTP {status}"),
    }
}

async fn check_status(resp: reqwest::Response, url: &str) -> Result<reqwest::Response, RegistryError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let msg = format!("{url}: {}", error_message(resp).await);
    Err(match status.as_u16() {
        401 | 403 => RegistryError::Unauthorized(msg),
        404 => RegistryError::NotFound(msg),
        408 | 429 | 500..=599 => RegistryError::Unavailable(msg),
        _ => RegistryError::InvalidResponse(msg),
    })
}

/// Split `Bearer realm="x",service="y"` into the scheme and its parameters (quoted values
/// may contain commas).
fn parse_challenge(h: &str) -> (String, HashMap<String, String>) {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect::<String>().trim().to_ascii_lowercase();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            value = chars.by_ref().take_while(|c| *c != ',').collect::<String>().trim().to_string();
        }
        params.insert(key, value);
    }
    (scheme.to_string(), params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn client(cfg: RegistryConfig) -> RegistryClient {
        let _ = rustls::crypto::ring::default_provider().install_default();
        RegistryClient::new(cfg).unwrap()
    }

    #[test]
    fn challenge_parsing() {
        let (s, p) = parse_challenge(r#"Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull,push""#);
        assert_eq!(s, "Bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="x""#);
        assert_eq!((s.as_str(), p["realm"].as_str()), ("Basic", "x"));
    }

    #[test]
    fn endpoint_policy() {
        let c = client(RegistryConfig::default());
        assert_eq!(c.endpoints_for("127.0.0.1:5000").unwrap()[0].base, "http://127.0.0.1:5000");
        assert_eq!(c.endpoints_for("localhost:5000").unwrap()[0].base, "http://localhost:5000");
        assert_eq!(c.endpoints_for("[::1]:5000").unwrap()[0].base, "http://[::1]:5000");
        assert_eq!(c.endpoints_for("example.com").unwrap()[0].base, "https://example.com");
        assert_eq!(c.endpoints_for("docker.io").unwrap()[0].base, "https://registry-1.docker.io");
        let c = client(RegistryConfig { plain_http_localhost: false, insecure: vec!["10.1.2.3:5000".into()], ..Default::default() });
        assert_eq!(c.endpoints_for("127.0.0.1:5000").unwrap()[0].base, "https://127.0.0.1:5000");
        let ep = &c.endpoints_for("10.1.2.3:5000").unwrap()[0];
        assert!(ep.fallback_http && ep.base.starts_with("https://"));
        let mut mirrors = HashMap::new();
        mirrors.insert(
            "docker.io".to_string(),
            MirrorConfig {
                endpoints: vec!["http://127.0.0.1:5000/".into(), "mirror.example/v2".into()],
                rewrite: [("^library/(.*)".to_string(), "lib/$1".to_string())].into(),
                ..Default::default()
            },
        );
        let c = client(RegistryConfig { mirrors, ..Default::default() });
        let eps = c.endpoints_for("docker.io").unwrap();
        assert_eq!(
            eps.iter().map(|e| e.base.as_str()).collect::<Vec<_>>(),
            ["http://127.0.0.1:5000", "https://mirror.example", "https://registry-1.docker.io"]
        );
        assert_eq!(eps[0].repository("library/busybox"), "lib/busybox");
        assert_eq!(eps[2].repository("library/busybox"), "library/busybox");
        // upstream = false: the mirrors only, never the registry itself.
        let only = [("gcr.io".to_string(), MirrorConfig { endpoints: vec!["http://127.0.0.1:5000".into()], upstream: false, ..Default::default() })].into();
        let c = client(RegistryConfig { mirrors: only, ..Default::default() });
        assert_eq!(c.endpoints_for("gcr.io").unwrap().iter().map(|e| e.base.as_str()).collect::<Vec<_>>(), ["http://127.0.0.1:5000"]);
        let empty = [("gcr.io".to_string(), MirrorConfig { upstream: false, ..Default::default() })].into();
        let _ = rustls::crypto::ring::default_provider().install_default();
        assert!(RegistryClient::new(RegistryConfig { mirrors: empty, ..Default::default() }).is_err());
        let bad = [("docker.io".to_string(), MirrorConfig { endpoints: vec!["ftp://x".into()], ..Default::default() })].into();
        let _ = rustls::crypto::ring::default_provider().install_default();
        assert!(RegistryClient::new(RegistryConfig { mirrors: bad, ..Default::default() }).is_err());
    }

    /// A one-shot-per-connection HTTP server on loopback answering from `handler`.
    async fn serve(handler: fn(&str) -> String) -> (String, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let h = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 16384];
                    let mut n = 0;
                    loop {
                        let Ok(m) = s.read(&mut buf[n..]).await else { return };
                        if m == 0 {
                            return;
                        }
                        n += m;
                        if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                            break;
                        }
                    }
                    let req = String::from_utf8_lossy(&buf[..n]).to_string();
                    let resp = handler(&req);
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        (addr, h)
    }

    fn reply(status: &str, headers: &[(&str, String)], body: &str) -> String {
        let mut r = format!("HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n", body.len());
        for (k, v) in headers {
            r.push_str(&format!("{k}: {v}\r\n"));
        }
        r.push_str("\r\n");
        r.push_str(body);
        r
    }

    const MANIFEST: &str = r#"{"schemaVersion":2}"#;

    fn manifest_digest() -> String {
        format!("sha256:{}", hex::encode(Sha256::digest(MANIFEST.as_bytes())))
    }

    #[tokio::test]
    async fn bearer_flow_with_basic_credentials() {
        fn handler(req: &str) -> String {
            let first = req.lines().next().unwrap_or_default().to_string();
            if first.starts_with("GET /token?") {
                assert!(first.contains("scope=repository%3Ateam%2Fapp%3Apull"), "{first}");
                assert!(first.contains("service=berth-test"), "{first}");
                assert!(req.contains("authorization: Basic dTpw") || req.contains("Authorization: Basic dTpw"), "{req}");
                return reply("200 OK", &[("Content-Type", "application/json".into())], r#"{"token":"tok123","expires_in":300}"#);
            }
            if first.starts_with("GET /v2/team/app/manifests/v1") {
                assert!(req.to_ascii_lowercase().contains("accept: application/vnd.oci.image.index.v1+json"), "{req}");
                if req.to_ascii_lowercase().contains("authorization: bearer tok123") {
                    return reply("200 OK", &[("Content-Type", "application/vnd.oci.image.manifest.v1+json".into())], MANIFEST);
                }
                let host = req.lines().find(|l| l.to_ascii_lowercase().starts_with("host:")).unwrap_or_default()[5..].trim().to_string();
                return reply("401 Unauthorized", &[("WWW-Authenticate", format!(r#"Bearer realm="http://{host}/token",service="berth-test""#))], "");
            }
            reply("404 Not Found", &[], "")
        }
        let (addr, _h) = serve(handler).await;
        let c = client(RegistryConfig::default());
        let r: Reference = format!("{addr}/team/app:v1").parse().unwrap();
        let creds = Credentials { username: "u".into(), password: "p".into(), ..Default::default() };
        let (_, m) = c.fetch_manifest(&r, &creds).await.unwrap();
        assert_eq!(m.digest, manifest_digest());
        assert_eq!(m.media_type, "application/vnd.oci.image.manifest.v1+json");
    }

    #[tokio::test]
    async fn identity_token_posts_refresh_grant_and_registry_token_is_used_directly() {
        fn handler(req: &str) -> String {
            let first = req.lines().next().unwrap_or_default().to_string();
            let lower = req.to_ascii_lowercase();
            if first.starts_with("POST /token") {
                return reply("200 OK", &[("Content-Type", "application/json".into())], r#"{"access_token":"fromrefresh"}"#);
            }
            if lower.contains("authorization: bearer fromrefresh") || lower.contains("authorization: bearer direct") {
                return reply("200 OK", &[], MANIFEST);
            }
            let host = req.lines().find(|l| l.to_ascii_lowercase().starts_with("host:")).unwrap_or_default()[5..].trim().to_string();
            reply("401 Unauthorized", &[("WWW-Authenticate", format!(r#"Bearer realm="http://{host}/token",service="s""#))], "")
        }
        let (addr, _h) = serve(handler).await;
        let r: Reference = format!("{addr}/a/b:1").parse().unwrap();
        let c = client(RegistryConfig::default());
        let creds = Credentials { identity_token: "refresh-me".into(), ..Default::default() };
        c.fetch_manifest(&r, &creds).await.unwrap();
        let c = client(RegistryConfig::default());
        let creds = Credentials { registry_token: "direct".into(), ..Default::default() };
        c.fetch_manifest(&r, &creds).await.unwrap();
        let c = client(RegistryConfig::default());
        let err = c.fetch_manifest(&r, &Credentials::default()).await.err().unwrap();
        assert!(matches!(err, RegistryError::Unauthorized(_) | RegistryError::InvalidResponse(_)), "{err}");
    }

    #[tokio::test]
    async fn digest_header_mismatch_and_not_found() {
        fn handler(req: &str) -> String {
            if req.starts_with("GET /v2/x/y/manifests/bad") {
                return reply("200 OK", &[("Docker-Content-Digest", format!("sha256:{}", "0".repeat(64)))], MANIFEST);
            }
            reply("404 Not Found", &[("Content-Type", "application/json".into())], r#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#)
        }
        let (addr, _h) = serve(handler).await;
        let c = client(RegistryConfig::default());
        let err = c.fetch_manifest(&format!("{addr}/x/y:bad").parse().unwrap(), &Credentials::default()).await.err().unwrap();
        assert!(matches!(err, RegistryError::DigestMismatch { .. }), "{err}");
        let err = c.fetch_manifest(&format!("{addr}/x/y:none").parse().unwrap(), &Credentials::default()).await.err().unwrap();
        assert!(matches!(&err, RegistryError::NotFound(m) if m.contains("MANIFEST_UNKNOWN")), "{err}");
    }

    #[tokio::test]
    async fn mirrors_in_order_and_blob_ranges() {
        fn handler(req: &str) -> String {
            let first = req.lines().next().unwrap_or_default();
            if first.starts_with("GET /v2/mirrored/app/manifests/1") {
                return reply("200 OK", &[], MANIFEST);
            }
            if first.starts_with("GET /v2/mirrored/app/blobs/") {
                // ignores Range: the client must skip the offset itself
                assert!(req.to_ascii_lowercase().contains("range: bytes=3-"), "{req}");
                return reply("200 OK", &[], "0123456789");
            }
            reply("404 Not Found", &[], "")
        }
        let (addr, _h) = serve(handler).await;
        // a closed port first: refused, then the working mirror
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let mirrors = [(
            "registry.berth.invalid".to_string(),
            MirrorConfig {
                endpoints: vec![format!("http://{closed}"), format!("http://{addr}")],
                rewrite: [("^apps/(.*)".into(), "mirrored/$1".into())].into(),
                ..Default::default()
            },
        )]
        .into();
        let c = client(RegistryConfig { mirrors, ..Default::default() });
        let r: Reference = "registry.berth.invalid/apps/app:1".parse().unwrap();
        let (src, m) = c.fetch_manifest(&r, &Credentials::default()).await.unwrap();
        assert_eq!(m.digest, manifest_digest());
        assert!(src.endpoint.base.contains(&addr));
        let (_, mut s) = c.fetch_blob(&src, &format!("sha256:{}", "1".repeat(64)), 3).await.unwrap();
        let mut got = vec![];
        while let Some(b) = s.next().await {
            got.extend_from_slice(&b.unwrap());
        }
        assert_eq!(got, b"3456789");
    }
}
