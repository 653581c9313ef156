//! The plugin's configuration and the CNI error and result shapes.
use serde::Deserialize;
use serde_json::{json, Value};
use std::net::IpAddr;

pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// A CNI error: code, message and details, printed as JSON on stdout.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{msg}: {details}")]
pub struct CniError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

impl CniError {
    pub fn new(code: u32, msg: &str, details: impl Into<String>) -> Self {
        CniError { code, msg: msg.into(), details: details.into() }
    }
    pub fn incompatible(details: impl Into<String>) -> Self {
        Self::new(1, "incompatible CNI version", details)
    }
    pub fn env(details: impl Into<String>) -> Self {
        Self::new(4, "invalid environment variables", details)
    }
    pub fn io(details: impl Into<String>) -> Self {
        Self::new(5, "I/O failure", details)
    }
    pub fn decode(details: impl Into<String>) -> Self {
        Self::new(6, "failed to decode content", details)
    }
    pub fn config(details: impl Into<String>) -> Self {
        Self::new(7, "invalid network config", details)
    }
    pub fn no_addresses(details: impl Into<String>) -> Self {
        Self::new(11, "no addresses", details)
    }
    pub fn to_json(&self, version: &str) -> Value {
        json!({"cniVersion": version, "code": self.code, "msg": self.msg, "details": self.details})
    }
}

fn default_bridge() -> String {
    "berth0".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(default = "default_bridge")]
    pub bridge: String,
    #[serde(default)]
    pub is_gateway: bool,
    #[serde(default)]
    pub is_default_gateway: bool,
    #[serde(default)]
    pub ip_masq: bool,
    #[serde(default)]
    pub mtu: Option<u32>,
    #[serde(default)]
    pub hairpin_mode: bool,
    #[serde(default)]
    pub promisc_mode: bool,
    pub ipam: IpamConf,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IpamConf {
    #[serde(default)]
    pub ranges: Vec<Vec<RangeConf>>,
    /// Shorthand for one range: `"subnet": "10.0.0.0/24"`.
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub reserved: Vec<IpAddr>,
    #[serde(default)]
    pub data_dir: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeConf {
    pub subnet: String,
    #[serde(default)]
    pub range_start: Option<IpAddr>,
    #[serde(default)]
    pub range_end: Option<IpAddr>,
    #[serde(default)]
    pub gateway: Option<IpAddr>,
}

/// What the runtime passes in the environment.
#[derive(Debug, Clone, Default)]
pub struct Env {
    pub command: String,
    pub container_id: String,
    pub netns: String,
    pub ifname: String,
}

impl Env {
    pub fn from_env() -> Env {
        let get = |k: &str| std::env::var(k).unwrap_or_default();
        Env { command: get("CNI_COMMAND"), container_id: get("CNI_CONTAINERID"), netns: get("CNI_NETNS"), ifname: get("CNI_IFNAME") }
    }

    pub fn require(&self, netns: bool) -> Result<(), CniError> {
        if self.container_id.is_empty() {
            return Err(CniError::env("CNI_CONTAINERID is required"));
        }
        if self.ifname.is_empty() {
            return Err(CniError::env("CNI_IFNAME is required"));
        }
        if netns && self.netns.is_empty() {
            return Err(CniError::env("CNI_NETNS is required"));
        }
        if self.ifname.len() > 15 || self.ifname.contains('/') || self.ifname == "." || self.ifname == ".." {
            return Err(CniError::env(format!("invalid interface name {:?}", self.ifname)));
        }
        Ok(())
    }
}

pub fn parse_conf(stdin: &[u8]) -> Result<NetConf, CniError> {
    let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| CniError::decode(e.to_string()))?;
    if !SUPPORTED_VERSIONS.contains(&conf.cni_version.as_str()) {
        return Err(CniError::incompatible(format!("cniVersion {} is not supported (supported: {})", conf.cni_version, SUPPORTED_VERSIONS.join(", "))));
    }
    if conf.name.is_empty() {
        return Err(CniError::config("\"name\" is required"));
    }
    if conf.bridge.is_empty() || conf.bridge.len() > 15 || conf.bridge.contains('/') {
        return Err(CniError::config(format!("invalid bridge name {:?}", conf.bridge)));
    }
    if let Some(m) = conf.mtu {
        if !(68..=65535).contains(&m) {
            return Err(CniError::config(format!("mtu {m} is out of range")));
        }
    }
    Ok(conf)
}
