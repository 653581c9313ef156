//! A token service for the token-auth test registry (127.0.0.1:5002, see hack/registry.sh):
//! it checks Basic credentials and issues ES256-signed JWTs in the form the distribution
//! registry verifies (x5c chain to its root bundle, iss/aud/exp, access claims).
use base64::Engine;
use ring::signature::{EcdsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const TOKEN_ADDR: &str = "127.0.0.1:5003";
pub const ISSUER: &str = "berth-test-issuer";
pub const SERVICE: &str = "berth-registry";
/// "berth:berth-secret"
const GOOD_BASIC: &str = "Basic YmVydGg6YmVydGgtc2VjcmV0";
/// The identity (refresh) token the service accepts in an OAuth2 refresh_token grant.
pub const IDENTITY_TOKEN: &str = "berth-refresh-token";

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

pub struct Signer {
    key: EcdsaKeyPair,
    cert_der: Vec<u8>,
}

impl Signer {
    /// The key and certificate hack/registry.sh generated for the token registry.
    pub fn from_registry_dir() -> Signer {
        let dir = std::env::var("BERTH_REGISTRY_DIR").unwrap_or_else(|_| "/tmp/berth-registry".into());
        let pk8 = std::fs::read(format!("{dir}/token/key.pk8")).expect("token key (hack/registry.sh start)");
        let cert_der = std::fs::read(format!("{dir}/token/cert.der")).expect("token cert");
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &pk8, &ring::rand::SystemRandom::new()).expect("P-256 key");
        Signer { key, cert_der }
    }

    /// A JWT granting `scope` ("repository:NAME:ACTIONS").
    pub fn token(&self, scope: &str) -> String {
        let std_b64 = base64::engine::general_purpose::STANDARD.encode(&self.cert_der);
        let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [std_b64]});
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let access: Vec<serde_json::Value> = scope
            .split(' ')
            .filter_map(|s| {
                let mut p = s.splitn(3, ':');
                let (kind, name, actions) = (p.next()?, p.next()?, p.next()?);
                Some(serde_json::json!({"type": kind, "name": name, "actions": actions.split(',').collect::<Vec<_>>()}))
            })
            .collect();
        let claims = serde_json::json!({
            "iss": ISSUER, "sub": "berth", "aud": SERVICE,
            "exp": now + 300, "nbf": now - 10, "iat": now - 10,
            "jti": format!("berth-{now}-{}", std::process::id()),
            "access": access,
        });
        let signing_input = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
        let sig = self.key.sign(&ring::rand::SystemRandom::new(), signing_input.as_bytes()).expect("sign");
        format!("{signing_input}.{}", b64url(sig.as_ref()))
    }
}

/// The token service, serving until dropped; counts the tokens it issued.
pub struct TokenServer {
    pub issued: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
    /// Its port is fixed (the test registry's config names it): one at a time per process.
    _port: tokio::sync::MutexGuard<'static, ()>,
}

static PORT: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn query_param(target: &str, key: &str) -> Option<String> {
    let q = target.split_once('?')?.1;
    q.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| {
            let v = v.replace('+', " ");
            let mut out = Vec::new();
            let b = v.as_bytes();
            let mut i = 0;
            while i < b.len() {
                if b[i] == b'%' && i + 2 < b.len() {
                    if let Ok(x) = u8::from_str_radix(&v[i + 1..i + 3], 16) {
                        out.push(x);
                        i += 3;
                        continue;
                    }
                }
                out.push(b[i]);
                i += 1;
            }
            String::from_utf8_lossy(&out).to_string()
        })
    })
}

impl TokenServer {
    pub async fn start(signer: Arc<Signer>) -> TokenServer {
        let port = PORT.lock().await;
        // The previous server's listener closes when its (aborted) task is dropped.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(TOKEN_ADDR).await {
                Ok(l) => break l,
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await
                }
                Err(e) => panic!("bind the token service port 5003: {e}"),
            }
        };
        let issued = Arc::new(AtomicUsize::new(0));
        let count = issued.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                let signer = signer.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut n = 0;
                    while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                        match s.read(&mut buf[n..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(m) => n += m,
                        }
                    }
                    let head_end = buf[..n].windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(n) + 4;
                    let req = String::from_utf8_lossy(&buf[..head_end.min(n)]).to_string();
                    let length: usize =
                        req.lines().find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0);
                    let mut body = buf[head_end.min(n)..n].to_vec();
                    while body.len() < length {
                        let mut more = vec![0u8; length - body.len()];
                        match s.read(&mut more).await {
                            Ok(0) | Err(_) => break,
                            Ok(m) => body.extend_from_slice(&more[..m]),
                        }
                    }
                    let mut target = req.split_whitespace().nth(1).unwrap_or_default().to_string();
                    let mut authorized = req.lines().any(|l| l.to_ascii_lowercase().starts_with("authorization:") && l.contains(GOOD_BASIC));
                    if req.starts_with("POST ") {
                        // OAuth2 refresh grant: the form carries service, scope and the refresh token
                        let form = format!("?{}", String::from_utf8_lossy(&body));
                        authorized = query_param(&form, "grant_type").as_deref() == Some("refresh_token")
                            && query_param(&form, "refresh_token").as_deref() == Some(IDENTITY_TOKEN);
                        target = format!("{}{form}", target.split('?').next().unwrap_or_default());
                    }
                    let service_ok = query_param(&target, "service").as_deref() == Some(SERVICE);
                    let (status, body) = if !target.starts_with("/token") || !service_ok {
                        ("400 Bad Request", r#"{"errors":[{"code":"BAD_REQUEST","message":"bad token request"}]}"#.to_string())
                    } else if !authorized {
                        ("401 Unauthorized", r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad credentials"}]}"#.to_string())
                    } else {
                        count.fetch_add(1, Ordering::SeqCst);
                        let scope = query_param(&target, "scope").unwrap_or_default();
                        ("200 OK", serde_json::json!({"token": signer.token(&scope), "expires_in": 300}).to_string())
                    };
                    let resp =
                        format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                    let _ = s.write_all(resp.as_bytes()).await;
                });
            }
        });
        TokenServer { issued, task, _port: port }
    }
}
