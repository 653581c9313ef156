//! The streaming server: the URLs that the CRI's Exec, Attach and PortForward return, and
//! the Kubernetes streaming protocols spoken on them (remotecommand and port-forward over
//! SPDY/3.1 and over WebSocket).
pub mod attach;
pub mod exec;
pub mod portforward;
pub mod remotecommand;
pub mod server;
pub mod spdy;
pub mod tokens;
pub mod transport;

use serde::Deserialize;
use std::path::PathBuf;

pub use server::StreamingServer;
pub use tokens::{StreamRequest, TokenCache, TokenError};

/// `[streaming]` in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamingConfig {
    /// Address to listen on; port 0 picks a free port.
    pub address: String,
    /// Serve HTTPS.
    pub tls: bool,
    /// Certificate and key for HTTPS; a self-signed pair is generated in the data dir when unset.
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
}

impl Default for StreamingConfig {
    fn default() -> Self {
        StreamingConfig { address: "127.0.0.1:0".into(), tls: false, tls_cert_file: None, tls_key_file: None }
    }
}
