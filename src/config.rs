//! Daemon configuration: a TOML file (default /etc/berth/config.toml when present) with
//! command-line flags taking precedence. Unknown keys are errors, not silently ignored.
use crate::image::registry::RegistryConfig;
use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const DEFAULT_CONFIG: &str = "/etc/berth/config.toml";
pub const DEFAULT_DATA_DIR: &str = "/var/lib/berth";
pub const DEFAULT_RUN_DIR: &str = "/run/berth";
pub const DEFAULT_SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.10";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub run_dir: Option<PathBuf>,
    pub images: ImagesConfig,
    pub registry: RegistryConfig,
    pub cgroup_driver: Option<CgroupDriver>,
    pub containers: ContainersConfig,
    pub network: crate::network::NetworkConfig,
    pub streaming: crate::streaming::StreamingConfig,
    /// Node-pressure eviction (`berth node`).
    pub eviction: crate::node::eviction::EvictionConfig,
    /// Image garbage collection (`berth node`).
    pub image_gc: crate::node::image_gc::ImageGcConfig,
    /// Runtime handlers by name (`[runtimes.NAME]`).
    pub runtimes: std::collections::BTreeMap<String, crate::runtime::handlers::HandlerOptions>,
}

/// Defaults every container gets.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ContainersConfig {
    /// Resource limits set in every container, e.g. `{ type = "RLIMIT_NOFILE", soft = 65536, hard = 65536 }`.
    /// Raising a hard limit needs CAP_SYS_RESOURCE; without it the limit is capped and a warning logged.
    pub rlimits: Vec<crate::runtime::rlimit::Rlimit>,
    /// Rotate a container's log when it reaches this size (a quantity like "10Mi"), as the
    /// kubelet's containerLogMaxSize. Unset: `berth runtime` leaves rotation to its kubelet
    /// (ReopenContainerLog), `berth node` rotates at 10Mi.
    pub log_max_size: Option<String>,
    /// Log files kept per container, the current one included (containerLogMaxFiles; default 5).
    pub log_max_files: Option<u32>,
}

impl ContainersConfig {
    /// The rotation the monitors apply; `node` says whether Berth is its own kubelet.
    pub fn log_rotation(&self, node: bool) -> Result<crate::runtime::process::logfile::Rotation, String> {
        let size = match &self.log_max_size {
            Some(q) => match crate::util::quantity::Quantity::parse(q) {
                Ok(v) if !v.is_negative() => v.value() as u64,
                Ok(_) => return Err(format!("containers.log_max_size: {q:?} is negative")),
                Err(e) => return Err(format!("containers.log_max_size: {q:?}: {e}")),
            },
            None if node => 10 << 20,
            None => 0,
        };
        let files = self.log_max_files.unwrap_or(5);
        if size > 0 && files < 1 {
            return Err("containers.log_max_files must be at least 1".into());
        }
        Ok(crate::runtime::process::logfile::Rotation { max_size: size, max_files: files })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// The image that pod sandboxes are built from; always pinned.
    pub sandbox_image: String,
    /// More images the image garbage collector must keep.
    pub pinned: Vec<String>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        ImagesConfig { sandbox_image: DEFAULT_SANDBOX_IMAGE.into(), pinned: vec![] }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
}

/// The resolved configuration of one daemon.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub images: ImagesConfig,
    pub registry: RegistryConfig,
    pub cgroup_driver: CgroupDriver,
    pub containers: ContainersConfig,
    pub network: crate::network::NetworkConfig,
    pub streaming: crate::streaming::StreamingConfig,
    pub eviction: crate::node::eviction::EvictionConfig,
    pub image_gc: crate::node::image_gc::ImageGcConfig,
    pub runtimes: std::collections::BTreeMap<String, crate::runtime::handlers::HandlerOptions>,
}

impl Config {
    /// The CRI socket.
    pub fn socket(&self) -> PathBuf {
        self.run_dir.join("berth.sock")
    }
    /// Where the image store lives.
    pub fn image_dir(&self) -> PathBuf {
        self.data_dir.join("images")
    }
    /// Images reported as pinned: the sandbox image and the configured ones.
    pub fn pinned_images(&self) -> Vec<String> {
        let mut v = vec![self.images.sandbox_image.clone()];
        v.extend(self.images.pinned.iter().cloned());
        v
    }
}

/// Read the config file: `path` if given (it must exist), else the default file if present.
pub fn load_file(path: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let (path, required) = match path {
        Some(p) => (p.to_path_buf(), true),
        None => (PathBuf::from(DEFAULT_CONFIG), false),
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => return Ok(FileConfig::default()),
        Err(source) => return Err(ConfigError::Read { path, source }),
    };
    toml::from_str(&text).map_err(|source| ConfigError::Parse { path, source })
}

impl FileConfig {
    /// Resolve with flags taking precedence over the file.
    pub fn resolve(self, data_dir: Option<PathBuf>, run_dir: Option<PathBuf>) -> Config {
        Config {
            data_dir: data_dir.or(self.data_dir).unwrap_or_else(|| DEFAULT_DATA_DIR.into()),
            run_dir: run_dir.or(self.run_dir).unwrap_or_else(|| DEFAULT_RUN_DIR.into()),
            images: self.images,
            registry: self.registry,
            cgroup_driver: self.cgroup_driver.unwrap_or(CgroupDriver::Cgroupfs),
            containers: self.containers,
            network: self.network,
            streaming: self.streaming,
            eviction: self.eviction,
            image_gc: self.image_gc,
            runtimes: self.runtimes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_full_file_and_rejects_unknown_keys() {
        let c: FileConfig = toml::from_str(
            r#"
            data_dir = "/tmp/d"
            [images]
            sandbox_image = "127.0.0.1:5000/berth/pause:latest"
            [registry.mirrors."docker.io"]
            endpoints = ["http://127.0.0.1:5000"]
            "#,
        )
        .unwrap();
        let c = c.resolve(None, Some("/tmp/r".into()));
        assert_eq!(c.data_dir, PathBuf::from("/tmp/d"));
        assert_eq!(c.socket(), PathBuf::from("/tmp/r/berth.sock"));
        assert!(toml::from_str::<FileConfig>("datadir = 1").is_err());
    }
}
