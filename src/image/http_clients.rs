//! The HTTP clients registry traffic goes through, and the CA roots they trust: the host's
//! CA bundle (found the way OpenSSL finds it, SSL_CERT_FILE / SSL_CERT_DIR honoured), plus a
//! registry's own CA from `[registry.configs."host".tls] ca_file`, and a client certificate
//! from `cert_file` / `key_file`. A host without any CA bundle (a minimal install, an
//! air-gapped node pulling from a plain-HTTP mirror) is not an error: Berth starts with a
//! warning, and an HTTPS pull that then fails says why and how to fix it.
use super::registry::{HostConfig, RegistryError};
use std::collections::HashMap;
use std::time::Duration;

pub struct HttpClients {
    verified: reqwest::Client,
    unverified: reqwest::Client,
    /// Hosts with their own CA or client certificate.
    per_host: HashMap<String, reqwest::Client>,
    /// The host's CA bundle had no certificates.
    no_system_roots: bool,
}

fn builder() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .read_timeout(Duration::from_secs(60))
        .user_agent(concat!("berth/", env!("CARGO_PKG_VERSION")))
}

fn config_err(host: &str, what: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::InvalidConfig(format!("registry.configs.{host:?}.tls: {what}: {e}"))
}

/// The host's CA certificates; problems reading the bundle are logged, not fatal.
fn system_roots() -> Vec<reqwest::Certificate> {
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::debug!("reading the host's CA certificates: {e}");
    }
    found.certs.iter().filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok()).collect()
}

impl HttpClients {
    pub fn new(configs: &HashMap<String, HostConfig>) -> Result<HttpClients, RegistryError> {
        let roots = system_roots();
        let no_system_roots = roots.is_empty();
        if no_system_roots {
            tracing::warn!(
                "no CA certificates found on this host (install ca-certificates, or point SSL_CERT_FILE at a bundle): \
                 HTTPS registries will fail unless [registry.configs.\"host\".tls] ca_file names their CA; plain-HTTP mirrors work"
            );
        }
        let build = |b: reqwest::ClientBuilder| b.build().map_err(|e| RegistryError::InvalidConfig(format!("HTTP client: {e}")));
        let verified = build(builder().tls_certs_only(roots.clone()))?;
        let unverified = build(builder().tls_danger_accept_invalid_certs(true))?;
        let mut per_host = HashMap::new();
        for (host, cfg) in configs {
            let Some(tls) = &cfg.tls else { continue };
            if tls.ca_file.is_none() && tls.cert_file.is_none() {
                continue;
            }
            let mut certs = roots.clone();
            if let Some(ca) = &tls.ca_file {
                let pem = std::fs::read(ca).map_err(|e| config_err(host, &format!("ca_file {}", ca.display()), e))?;
                let more = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| config_err(host, &format!("ca_file {}", ca.display()), e))?;
                if more.is_empty() {
                    return Err(config_err(host, &format!("ca_file {}", ca.display()), "no PEM certificate in it"));
                }
                certs.extend(more);
            }
            let mut b = builder().tls_certs_only(certs);
            match (&tls.cert_file, &tls.key_file) {
                (Some(cert), Some(key)) => {
                    let mut pem = std::fs::read(cert).map_err(|e| config_err(host, &format!("cert_file {}", cert.display()), e))?;
                    pem.extend(std::fs::read(key).map_err(|e| config_err(host, &format!("key_file {}", key.display()), e))?);
                    let id = reqwest::Identity::from_pem(&pem).map_err(|e| config_err(host, "cert_file/key_file", e))?;
                    b = b.identity(id);
                }
                (None, None) => {}
                _ => return Err(config_err(host, "client certificate", "cert_file and key_file go together")),
            }
            per_host.insert(host.clone(), build(b)?);
        }
        Ok(HttpClients { verified, unverified, per_host, no_system_roots })
    }

    /// The client for requests to `host` (`host[:port]`).
    pub fn for_host(&self, host: &str, skip_verify: bool) -> &reqwest::Client {
        if skip_verify {
            return &self.unverified;
        }
        self.per_host.get(host).unwrap_or(&self.verified)
    }

    /// The client for a URL (a token service's realm, say).
    pub fn for_url(&self, url: &str, configs: &HashMap<String, HostConfig>) -> &reqwest::Client {
        let host = url.split_once("://").map_or(url, |(_, rest)| rest).split('/').next().unwrap_or_default();
        let skip = configs.get(host).is_some_and(|c| c.skip_verify());
        self.for_host(host, skip)
    }

    /// The advice to add to a failed HTTPS request to `host`, when the failure can come from
    /// there being nothing to verify the server against.
    pub fn missing_roots_hint(&self, host: &str) -> Option<String> {
        (self.no_system_roots && !self.per_host.contains_key(host)).then(|| {
            format!(
                " (no CA certificates were found on this host: install the ca-certificates package, \
                 or give this registry's CA in [registry.configs.{host:?}.tls] ca_file)"
            )
        })
    }
}
