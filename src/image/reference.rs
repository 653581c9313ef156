//! Image references (`[domain/]path[:tag][@digest]`), normalised as Docker and containerd
//! do: no domain means docker.io, and docker.io's one-part names live under `library/`.
use std::fmt;
use std::str::FromStr;

pub const DEFAULT_DOMAIN: &str = "docker.io";
const LEGACY_DOMAIN: &str = "index.docker.io";
const MAX_NAME: usize = 255;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference {
    pub domain: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReferenceError {
    #[error("empty image reference")]
    Empty,
    #[error("{0:?}: repository name must be lowercase letters, digits and separators (. _ __ -), components separated by /")]
    BadRepository(String),
    #[error("{0:?}: invalid tag (letters, digits, _ . -; at most 128, not starting with . or -)")]
    BadTag(String),
    #[error("{0:?}: invalid digest (want sha256:<64 hex> or sha512:<128 hex>)")]
    BadDigest(String),
    #[error("{0:?}: invalid registry host")]
    BadDomain(String),
    #[error("{0:?}: name longer than 255 characters")]
    TooLong(String),
}

fn valid_component(c: &str) -> bool {
    // lowercase alnum runs joined by one separator: ".", "_", "__" or one or more "-"
    let b = c.as_bytes();
    if b.is_empty() || !b[0].is_ascii_lowercase() && !b[0].is_ascii_digit() {
        return false;
    }
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if !alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|x| x.is_ascii_alphanumeric() || matches!(x, b'_' | b'.' | b'-'))
}

fn valid_digest(d: &str) -> bool {
    let hex_ok = |h: &str, n: usize| h.len() == n && h.bytes().all(|x| x.is_ascii_digit() || (b'a'..=b'f').contains(&x));
    match d.split_once(':') {
        Some(("sha256", h)) => hex_ok(h, 64),
        Some(("sha512", h)) => hex_ok(h, 128),
        _ => false,
    }
}

fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || d.starts_with('[') => (h, Some(p)),
        _ => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|x| x.is_ascii_digit()) {
            return false;
        }
    }
    if host.starts_with('[') && host.ends_with(']') {
        return host[1..host.len() - 1].parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|l| !l.is_empty() && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|x| x.is_ascii_alphanumeric() || x == b'-'))
}

impl Reference {
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::Empty);
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if !valid_digest(d) {
                    return Err(ReferenceError::BadDigest(s.to_string()));
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/'.
        let last_slash = rest.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if !valid_tag(t) {
                    return Err(ReferenceError::BadTag(s.to_string()));
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(ReferenceError::BadRepository(s.to_string()));
        }
        let (domain, path) = match name.split_once('/') {
            Some((first, path)) if first.contains('.') || first.contains(':') || first == "localhost" || first.bytes().any(|b| b.is_ascii_uppercase()) => {
                (first.to_string(), path.to_string())
            }
            _ => (DEFAULT_DOMAIN.to_string(), name.to_string()),
        };
        if !valid_domain(&domain) {
            return Err(ReferenceError::BadDomain(s.to_string()));
        }
        let domain =
            if domain.eq_ignore_ascii_case(LEGACY_DOMAIN) || domain.eq_ignore_ascii_case(DEFAULT_DOMAIN) { DEFAULT_DOMAIN.to_string() } else { domain };
        if path.is_empty() || !path.split('/').all(valid_component) {
            return Err(ReferenceError::BadRepository(s.to_string()));
        }
        let repository = if domain == DEFAULT_DOMAIN && !path.contains('/') { format!("library/{path}") } else { path };
        if domain.len() + 1 + repository.len() > MAX_NAME {
            return Err(ReferenceError::TooLong(s.to_string()));
        }
        let tag = if tag.is_none() && digest.is_none() { Some("latest".to_string()) } else { tag };
        Ok(Reference { domain, repository, tag, digest })
    }

    /// `domain/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.domain, self.repository)
    }

    /// `domain/repository:tag`, when there is a tag.
    pub fn tagged(&self) -> Option<String> {
        self.tag.as_ref().map(|t| format!("{}:{t}", self.name()))
    }

    /// `domain/repository@digest`.
    pub fn digested(&self, digest: &str) -> String {
        format!("{}@{digest}", self.name())
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.name())?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Reference {
        Reference::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn normalises_like_docker() {
        assert_eq!(p("busybox").to_string(), "docker.io/library/busybox:latest");
        assert_eq!(p("index.docker.io/foo/bar:1").to_string(), "docker.io/foo/bar:1");
        assert_eq!(p("Docker.io/x").to_string(), "docker.io/library/x:latest");
        assert_eq!(p("127.0.0.1:5000/berth/busybox:latest").name(), "127.0.0.1:5000/berth/busybox");
        assert_eq!(p("localhost/foo").to_string(), "localhost/foo:latest");
        let h = "a".repeat(64);
        let r = p(&format!("localhost:5000/a/b@sha256:{h}"));
        assert_eq!((r.tag.clone(), r.digest.clone()), (None, Some(format!("sha256:{h}"))));
        let r = p(&format!("gcr.io/x/y:tag@sha256:{h}"));
        assert_eq!(r.tagged().unwrap(), "gcr.io/x/y:tag");
        assert_eq!(r.digested("sha256:1"), "gcr.io/x/y@sha256:1");
        assert_eq!(p("a/b__c/d-e--f.g_h:v1.2-rc_3").repository, "a/b__c/d-e--f.g_h");
    }

    #[test]
    fn rejects_bad_references() {
        for bad in ["", "a/B", "UPPER", "busybox@sha256:123", "a b", "a//b", "a:", ":tag", "a:-x", "-a", "a/.b", "a@md5:00"] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert!(Reference::parse(&"a".repeat(300).to_string()).is_err());
    }
}
