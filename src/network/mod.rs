//! Pod networking through CNI: the runtime's side of the CNI spec. Loads the network config
//! (hot-reloaded when the conf dir changes), runs the plugin chain for ADD / CHECK / DEL /
//! STATUS / GC, and caches each pod's ADD (config and result) on disk so DEL works after a
//! daemon restart and after the netns is gone.
pub mod conf;
pub mod plugin;
pub mod versions;

use crate::util::atomic;
use conf::NetConfList;
use plugin::{Invocation, PluginError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

pub const DEFAULT_CONF_DIR: &str = "/etc/cni/net.d";
pub const DEFAULT_BIN_DIRS: &[&str] = &["/opt/cni/bin", "/usr/lib/cni"];
pub const DEFAULT_CONFLIST: &str = "10-berth.conflist";
pub const POD_IFNAME: &str = "eth0";

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Where CNI network configs are read from.
    pub conf_dir: PathBuf,
    /// Where CNI plugin binaries are looked for, in order.
    pub bin_dirs: Vec<PathBuf>,
    /// The bridge of the default berth-cni config.
    pub bridge: String,
    /// The pod CIDR for the default berth-cni config (also `--pod-cidr` or UpdateRuntimeConfig).
    pub pod_cidr: Option<String>,
    /// Whether the default config masquerades pod traffic leaving the node.
    pub masquerade: bool,
    /// Longest a plugin may run, in seconds.
    pub plugin_timeout: u64,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            conf_dir: DEFAULT_CONF_DIR.into(),
            bin_dirs: DEFAULT_BIN_DIRS.iter().map(PathBuf::from).collect(),
            bridge: "berth0".into(),
            pod_cidr: None,
            masquerade: true,
            plugin_timeout: 30,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum NetworkError {
    /// No network config at all: pods get loopback only.
    #[error("no pod network: {0}")]
    NotConfigured(String),
    /// A config exists but cannot be used.
    #[error("pod network not ready: {0}")]
    NotReady(String),
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("network cache {path}: {message}")]
    Cache { path: PathBuf, message: String },
}

/// Who the pod is, for CNI_ARGS and the runtime config.
#[derive(Debug, Clone, Default)]
pub struct PodNetworkRequest {
    pub sandbox_id: String,
    pub netns: PathBuf,
    pub pod_name: String,
    pub pod_namespace: String,
    pub pod_uid: String,
    /// CNI "portMappings" capability: [{hostPort, containerPort, protocol, hostIP}].
    pub port_mappings: Vec<Value>,
    /// CNI "dns" capability.
    pub dns: Option<Value>,
    /// CNI "bandwidth" capability.
    pub bandwidth: Option<Value>,
}

/// A pod's addresses as the chain reported them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodAddresses {
    pub ips: Vec<String>,
}

/// One ADD, as remembered for DEL and CHECK.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedAttachment {
    container_id: String,
    netns: String,
    ifname: String,
    args: String,
    runtime_config: Value,
    list: Value,
    result: Value,
}

#[derive(Default)]
struct Loaded {
    stamp: Vec<(PathBuf, Option<SystemTime>)>,
    result: Option<Result<NetConfList, NetworkError>>,
    /// The last version check's failure, logged once when it changes.
    version_error: Option<String>,
}

pub struct Network {
    cfg: NetworkConfig,
    /// Attachments made: what DEL and CHECK need, on the data disk.
    cache_dir: PathBuf,
    /// Attachments being made (written before ADD runs, so that a restart mid-ADD undoes it
    /// with DEL): in the run dir, as only a daemon restart has to find them.
    pending_dir: PathBuf,
    pod_cidr: Mutex<Option<String>>,
    loaded: Mutex<Loaded>,
    versions: versions::VersionCache,
}

impl Network {
    pub fn new(cfg: NetworkConfig, cache_dir: PathBuf, pending_dir: PathBuf) -> Network {
        let cidr = cfg.pod_cidr.clone();
        Network { cfg, cache_dir, pending_dir, pod_cidr: Mutex::new(cidr), loaded: Mutex::new(Loaded::default()), versions: versions::VersionCache::default() }
    }

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pod CIDR from UpdateRuntimeConfig: used for the default config if there is none.
    pub async fn set_pod_cidr(&self, cidr: &str) {
        *Self::lock(&self.pod_cidr) = Some(cidr.to_string());
        if let Err(e) = self.current_list().await {
            tracing::warn!("pod network: {e}");
        }
    }

    /// The network config in force, reloaded when the conf dir changed. No config at all is
    /// `NotConfigured`; a config that cannot be used (unparsable, a plugin missing or not
    /// speaking the config's version) is `NotReady` with the reason.
    pub async fn current_list(&self) -> Result<NetConfList, NetworkError> {
        let mut stamp = conf::candidates(&self.cfg.conf_dir);
        if stamp.is_empty() {
            let cidr = Self::lock(&self.pod_cidr).clone();
            if let Some(cidr) = cidr {
                match self.write_default(&cidr).await {
                    Ok(()) => stamp = conf::candidates(&self.cfg.conf_dir),
                    Err(e) => tracing::warn!("writing the default CNI config: {e}"),
                }
            }
        }
        let reload = {
            let loaded = Self::lock(&self.loaded);
            loaded.stamp != stamp || loaded.result.is_none()
        };
        if reload {
            let result = match conf::load(&self.cfg.conf_dir) {
                Ok(list) => {
                    tracing::info!(path = %list.path.display(), network = %list.name, version = %list.cni_version, "CNI config loaded");
                    Ok(list)
                }
                Err(e @ conf::ConfError::Missing(_)) => Err(NetworkError::NotConfigured(e.to_string())),
                Err(e) => {
                    tracing::warn!("pod network: {e}");
                    Err(NetworkError::NotReady(e.to_string()))
                }
            };
            let mut loaded = Self::lock(&self.loaded);
            loaded.stamp = stamp;
            loaded.result = Some(result);
            loaded.version_error = None;
        }
        let list = {
            let loaded = Self::lock(&self.loaded);
            match &loaded.result {
                Some(Ok(list)) => list.clone(),
                Some(Err(e)) => return Err(e.clone()),
                None => return Err(NetworkError::NotConfigured("no network config".into())),
            }
        };
        // Checked on every call (the plugins' answers are cached): a plugin can be replaced
        // without the config changing.
        let checked = self.check_versions(&list).await;
        let mut loaded = Self::lock(&self.loaded);
        if checked.as_ref().err() != loaded.version_error.as_ref() {
            if let Err(e) = &checked {
                tracing::warn!("pod network: {e}");
            }
            loaded.version_error = checked.clone().err();
        }
        checked.map(|()| list).map_err(NetworkError::NotReady)
    }

    /// Every plugin of the chain is installed and speaks the chain's cniVersion.
    async fn check_versions(&self, list: &NetConfList) -> Result<(), String> {
        for p in &list.plugins {
            let kind = p["type"].as_str().unwrap_or_default();
            let inv = self.invocation("VERSION", "", "", "");
            let supported = match self.versions.supported(kind, &inv).await {
                Ok(v) => v,
                Err(PluginError::NotFound { path, .. }) => {
                    return Err(format!("CNI plugin {kind:?} of network {:?} ({}) is not installed in {path}", list.name, list.path.display()))
                }
                Err(e) => return Err(format!("network {:?} ({}): {e}", list.name, list.path.display())),
            };
            if !supported.iter().any(|v| v == &list.cni_version) {
                return Err(format!(
                    "CNI plugin {kind:?} does not support cniVersion {:?} of network {:?} ({}): it supports {}",
                    list.cni_version,
                    list.name,
                    list.path.display(),
                    supported.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Write the default config (berth-cni, then portmap when installed) at the newest CNI
    /// version every installed plugin of the chain speaks; a plugin sharing no version with
    /// berth-cni is left out with a warning.
    async fn write_default(&self, cidr: &str) -> std::io::Result<()> {
        let mut plugins = vec![json!({
            "type": "berth-cni",
            "bridge": self.cfg.bridge,
            "isGateway": true,
            "ipMasq": self.cfg.masquerade,
            "hairpinMode": true,
            "ipam": {"ranges": [[{"subnet": cidr}]], "dataDir": self.cache_dir.join("ipam")},
        })];
        let inv = self.invocation("VERSION", "", "", "");
        let mut chain_versions = vec![];
        match self.versions.supported("berth-cni", &inv).await {
            Ok(v) => chain_versions.push(v),
            Err(e) => tracing::warn!("default CNI config: {e}"),
        }
        if plugin::find_plugin("portmap", &self.cfg.bin_dirs).is_some() {
            match self.versions.supported("portmap", &inv).await {
                Ok(v) => {
                    let mut with_portmap = chain_versions.clone();
                    with_portmap.push(v.clone());
                    if versions::newest_common(&with_portmap).is_some() {
                        chain_versions = with_portmap;
                        plugins.push(json!({"type": "portmap", "capabilities": {"portMappings": true}}));
                    } else {
                        tracing::warn!(supported = %v.join(", "), "default CNI config: leaving out portmap, which shares no CNI version with berth-cni: pods get no host ports");
                    }
                }
                Err(e) => tracing::warn!("default CNI config: leaving out portmap: {e}"),
            }
        }
        let version = versions::newest_common(&chain_versions).unwrap_or("1.0.0");
        let list = json!({"cniVersion": version, "name": "berth", "plugins": plugins});
        std::fs::create_dir_all(&self.cfg.conf_dir)?;
        let data = serde_json::to_vec_pretty(&list).map_err(std::io::Error::other)?;
        atomic::write_file(&self.cfg.conf_dir.join(DEFAULT_CONFLIST), &data)?;
        tracing::info!(pod_cidr = cidr, cni_version = version, "wrote the default CNI config");
        Ok(())
    }

    fn invocation<'a>(&'a self, command: &'a str, id: &'a str, netns: &'a str, args: &'a str) -> Invocation<'a> {
        Invocation {
            command,
            container_id: id,
            netns,
            ifname: POD_IFNAME,
            args,
            bin_dirs: &self.cfg.bin_dirs,
            timeout: Duration::from_secs(self.cfg.plugin_timeout.max(1)),
        }
    }

    /// NetworkReady: a usable config exists (its plugins installed and speaking its version)
    /// and, from CNI 1.1.0, every plugin's STATUS passes.
    pub async fn status(&self) -> Result<(), NetworkError> {
        let list = self.current_list().await?;
        if plugin::version_at_least(&list.cni_version, "1.1.0") {
            for p in &list.plugins {
                let input = plugin::plugin_input(p, &list.name, &list.cni_version, None, &Value::Null);
                plugin::run(&input, &self.invocation("STATUS", "", "", "")).await?;
            }
        }
        Ok(())
    }

    fn cache_path(&self, sandbox_id: &str) -> PathBuf {
        self.cache_dir.join(format!("{sandbox_id}.json"))
    }

    fn pending_path(&self, sandbox_id: &str) -> PathBuf {
        self.pending_dir.join(format!("{sandbox_id}.json"))
    }

    /// `done`: the attachment is made; its record goes to the data disk (forced there) and the
    /// pending one goes. Before ADD runs, the record only has to outlive a daemon restart.
    fn save_cache(&self, sandbox_id: &str, c: &CachedAttachment, done: bool) -> Result<(), NetworkError> {
        let (dir, path) = if done { (&self.cache_dir, self.cache_path(sandbox_id)) } else { (&self.pending_dir, self.pending_path(sandbox_id)) };
        std::fs::create_dir_all(dir)
            .and_then(|_| if done { atomic::write_json(&path, c) } else { atomic::write_json_volatile(&path, c) })
            .map_err(|e| NetworkError::Cache { path, message: e.to_string() })?;
        if done {
            remove_if_there(&self.pending_path(sandbox_id))?;
        }
        Ok(())
    }

    /// ADD the pod to the network; on any failure what was added is deleted again.
    pub async fn setup(&self, req: &PodNetworkRequest) -> Result<PodAddresses, NetworkError> {
        let list = self.current_list().await?;
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={};K8S_POD_UID={}",
            req.pod_namespace, req.pod_name, req.sandbox_id, req.pod_uid
        );
        let mut rc = serde_json::Map::new();
        if !req.port_mappings.is_empty() {
            rc.insert("portMappings".into(), Value::Array(req.port_mappings.clone()));
        }
        if let Some(d) = &req.dns {
            rc.insert("dns".into(), d.clone());
        }
        if let Some(b) = &req.bandwidth {
            rc.insert("bandwidth".into(), b.clone());
        }
        let netns = req.netns.to_string_lossy().to_string();
        let mut cached = CachedAttachment {
            container_id: req.sandbox_id.clone(),
            netns: netns.clone(),
            ifname: POD_IFNAME.into(),
            args: args.clone(),
            runtime_config: Value::Object(rc),
            list: list.raw.clone(),
            result: Value::Null,
        };
        // Remember the attempt before running anything: a crash mid-ADD is undone by DEL.
        self.save_cache(&req.sandbox_id, &cached, false)?;
        let mut prev = Value::Null;
        for p in &list.plugins {
            let input = plugin::plugin_input(p, &list.name, &list.cni_version, Some(&prev), &cached.runtime_config);
            match plugin::run(&input, &self.invocation("ADD", &req.sandbox_id, &netns, &args)).await {
                Ok(result) => prev = result,
                Err(e) => {
                    cached.result = prev;
                    if let Err(del) = self.delete_with(&cached).await {
                        tracing::warn!(sandbox = %req.sandbox_id, "rolling back the network: {del}");
                    } else {
                        let _ = std::fs::remove_file(self.pending_path(&req.sandbox_id));
                    }
                    return Err(e.into());
                }
            }
        }
        cached.result = prev.clone();
        self.save_cache(&req.sandbox_id, &cached, true)?;
        Ok(addresses(&prev))
    }

    async fn delete_with(&self, cached: &CachedAttachment) -> Result<(), PluginError> {
        let list = NetConfList::from_value(Path::new("cache"), cached.list.clone()).map_err(|e| PluginError::Exec {
            plugin: "-".into(),
            command: "DEL".into(),
            message: e.to_string(),
        })?;
        let mut first_err = None;
        for p in list.plugins.iter().rev() {
            let input = plugin::plugin_input(p, &list.name, &list.cni_version, Some(&cached.result), &cached.runtime_config);
            let inv = self.invocation("DEL", &cached.container_id, &cached.netns, &cached.args);
            if let Err(e) = plugin::run(&input, &inv).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// DEL the pod from the network with the config its ADD used. Idempotent: a pod never
    /// added (or already deleted) is fine.
    pub async fn teardown(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        let (done, pending) = (self.cache_path(sandbox_id), self.pending_path(sandbox_id));
        let path = if done.exists() { done.clone() } else { pending.clone() };
        let cached: CachedAttachment = match std::fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| NetworkError::Cache { path: path.clone(), message: e.to_string() })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(NetworkError::Cache { path, message: e.to_string() }),
        };
        self.delete_with(&cached).await?;
        remove_if_there(&done)?;
        remove_if_there(&pending)
    }

    /// CHECK the pod's attachment against what ADD returned.
    pub async fn check(&self, sandbox_id: &str) -> Result<(), NetworkError> {
        let path = self.cache_path(sandbox_id);
        let cached: CachedAttachment = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
            .map_err(|message| NetworkError::Cache { path, message })?;
        let list = NetConfList::from_value(Path::new("cache"), cached.list.clone()).map_err(|e| NetworkError::NotReady(e.to_string()))?;
        if list.disable_check || !plugin::version_at_least(&list.cni_version, "0.4.0") {
            return Ok(());
        }
        for p in &list.plugins {
            let input = plugin::plugin_input(p, &list.name, &list.cni_version, Some(&cached.result), &cached.runtime_config);
            plugin::run(&input, &self.invocation("CHECK", &cached.container_id, &cached.netns, &cached.args)).await?;
        }
        Ok(())
    }

    /// Pods with a cached attachment.
    pub fn attached(&self) -> Vec<String> {
        let mut ids: Vec<String> = [&self.cache_dir, &self.pending_dir]
            .into_iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flat_map(|rd| rd.flatten())
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".json")).map(String::from))
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// CNI ≥ 1.1.0 GC: plugins release whatever belongs to attachments not in `valid`.
    pub async fn gc(&self, valid: &[String]) -> Result<(), NetworkError> {
        let list = self.current_list().await?;
        if !plugin::version_at_least(&list.cni_version, "1.1.0") {
            return Ok(());
        }
        let attachments: Vec<Value> = valid.iter().map(|id| json!({"containerID": id, "ifname": POD_IFNAME})).collect();
        for p in &list.plugins {
            let mut input = plugin::plugin_input(p, &list.name, &list.cni_version, None, &Value::Null);
            input["cni.dev/valid-attachments"] = Value::Array(attachments.clone());
            plugin::run(&input, &self.invocation("GC", "", "", "")).await?;
        }
        Ok(())
    }
}

/// IP addresses (without prefix length) from a CNI result, IPv4 first.
/// Remove a record file; one that is not there is fine.
fn remove_if_there(path: &Path) -> Result<(), NetworkError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetworkError::Cache { path: path.to_path_buf(), message: e.to_string() }),
        _ => Ok(()),
    }
}

pub fn addresses(result: &Value) -> PodAddresses {
    let mut ips: Vec<String> =
        result["ips"].as_array().into_iter().flatten().filter_map(|ip| ip["address"].as_str()).map(|a| a.split('/').next().unwrap_or(a).to_string()).collect();
    ips.sort_by_key(|ip| ip.contains(':'));
    PodAddresses { ips }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_drop_prefixes_and_put_ipv4_first() {
        let r = json!({"ips": [{"address": "fd00::5/64"}, {"address": "10.1.0.5/24", "gateway": "10.1.0.1"}]});
        assert_eq!(addresses(&r).ips, vec!["10.1.0.5", "fd00::5"]);
    }
}
