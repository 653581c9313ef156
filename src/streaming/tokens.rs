//! Single-use tokens for the URLs the CRI hands out: each maps to the request it was made
//! for, expires after a short time, and is gone once redeemed.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a token stays valid (the kubelet's streaming cache uses one minute too).
pub const TOKEN_TTL: Duration = Duration::from_secs(60);
/// Most tokens outstanding at once.
pub const MAX_IN_FLIGHT: usize = 1000;

/// What a streaming URL was issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamRequest {
    Exec { container_id: String, cmd: Vec<String>, tty: bool, stdin: bool, stdout: bool, stderr: bool },
    Attach { container_id: String, tty: bool, stdin: bool, stdout: bool, stderr: bool },
    PortForward { sandbox_id: String, ports: Vec<i32> },
}

impl StreamRequest {
    /// The URL path prefix of this kind of request.
    pub fn kind(&self) -> &'static str {
        match self {
            StreamRequest::Exec { .. } => "exec",
            StreamRequest::Attach { .. } => "attach",
            StreamRequest::PortForward { .. } => "portforward",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("maximum number of in-flight streaming requests ({MAX_IN_FLIGHT}) exceeded")]
    Exhausted,
    #[error("no randomness for a token: {0}")]
    Random(std::io::Error),
}

pub struct TokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<String, (StreamRequest, Instant)>>,
}

impl Default for TokenCache {
    fn default() -> Self {
        Self::new(TOKEN_TTL)
    }
}

impl TokenCache {
    pub fn new(ttl: Duration) -> Self {
        TokenCache { ttl, entries: Mutex::new(HashMap::new()) }
    }

    /// Store a request; the token is 16 random bytes, URL-safe base64.
    pub fn insert(&self, req: StreamRequest) -> Result<String, TokenError> {
        let token = random_token().map_err(TokenError::Random)?;
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        entries.retain(|_, (_, at)| now.duration_since(*at) < self.ttl);
        if entries.len() >= MAX_IN_FLIGHT {
            return Err(TokenError::Exhausted);
        }
        entries.insert(token.clone(), (req, now));
        Ok(token)
    }

    /// Redeem a token: its request if it exists and has not expired; never twice.
    pub fn take(&self, token: &str) -> Option<StreamRequest> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let (req, at) = entries.remove(token)?;
        (at.elapsed() < self.ttl).then_some(req)
    }
}

fn random_token() -> std::io::Result<String> {
    use base64::Engine;
    let mut buf = [0u8; 16];
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += n as usize;
    }
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> StreamRequest {
        StreamRequest::PortForward { sandbox_id: "p".into(), ports: vec![80] }
    }

    #[test]
    fn tokens_are_single_use_and_expire() {
        let c = TokenCache::new(Duration::from_millis(50));
        let a = c.insert(req()).unwrap();
        let b = c.insert(req()).unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 22);
        assert_eq!(c.take(&a), Some(req()));
        assert_eq!(c.take(&a), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.take(&b), None);
        assert_eq!(c.take("nope"), None);
    }

    #[test]
    fn in_flight_requests_are_bounded() {
        let c = TokenCache::new(Duration::from_secs(60));
        for _ in 0..MAX_IN_FLIGHT {
            c.insert(req()).unwrap();
        }
        assert!(matches!(c.insert(req()), Err(TokenError::Exhausted)));
    }
}
