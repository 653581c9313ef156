//! The runtime: pod sandboxes and containers on namespaces, overlayfs and cgroups, with one
//! monitor process per container. `Runtime` owns the in-memory index of records kept on
//! disk; `sandbox` and `container` hold the operations, `process` the code that runs in the
//! re-executed helper processes.
pub mod cgroup_paths;
pub mod cgroups;
pub mod container;
pub mod detached;
pub mod handlers;
pub mod image_volumes;
pub mod metrics;
/// The mount table parser lives in `util` (the node reads it too).
pub use crate::util::mountinfo;
pub mod overlay;
pub mod pod_cgroups;
pub mod process;
pub mod records;
pub mod rlimit;
pub mod sandbox;
pub mod spec;
pub mod state;
pub mod stats;
pub mod user;

use crate::image::store::{ImageStore, ImageUsers};
use crate::util::digest::Digest;
use crate::util::keyed_lock::KeyedLock;
use records::{ContainerRecord, SandboxRecord};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Internal(String),
    #[error("{0}")]
    Unsupported(String),
    #[error("{0}")]
    Cancelled(String),
}

impl RuntimeError {
    pub fn code(&self) -> tonic::Code {
        match self {
            RuntimeError::NotFound(_) => tonic::Code::NotFound,
            RuntimeError::AlreadyExists(_) => tonic::Code::AlreadyExists,
            RuntimeError::Invalid(_) => tonic::Code::InvalidArgument,
            RuntimeError::FailedPrecondition(_) => tonic::Code::FailedPrecondition,
            RuntimeError::Internal(_) => tonic::Code::Internal,
            RuntimeError::Unsupported(_) => tonic::Code::Unimplemented,
            RuntimeError::Cancelled(_) => tonic::Code::Cancelled,
        }
    }
}

impl From<spec::SpecError> for RuntimeError {
    fn from(e: spec::SpecError) -> Self {
        match e {
            spec::SpecError::Unsupported { .. } => RuntimeError::Unsupported(e.to_string()),
            spec::SpecError::Invalid { .. } => RuntimeError::Invalid(e.to_string()),
        }
    }
}

pub type RtResult<T> = Result<T, RuntimeError>;

/// What a create answered with: the object's ID, and whether this call made it (false when an
/// identical earlier create's object was handed out again).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Made {
    pub id: String,
    pub fresh: bool,
}

pub fn internal(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Internal(format!("{what}: {e}"))
}

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub data_dir: PathBuf,
    pub run_dir: PathBuf,
    pub systemd_cgroup: bool,
    /// Resource limits every container gets (config `[containers] rlimits`).
    pub rlimits: Vec<crate::runtime::rlimit::Rlimit>,
    /// Size-based rotation of container logs by their monitors.
    pub log_rotation: process::logfile::Rotation,
    /// The runtime handlers pods may ask for.
    pub handlers: handlers::Handlers,
}

#[derive(Default)]
struct Index {
    sandboxes: HashMap<String, SandboxRecord>,
    containers: HashMap<String, ContainerRecord>,
    /// Reserved names → the ID holding them.
    names: HashMap<String, String>,
}

pub struct Runtime {
    cfg: RuntimeConfig,
    network: Arc<crate::network::Network>,
    images: Arc<ImageStore>,
    index: Mutex<Index>,
    /// Serialises operations on one sandbox or container ID.
    locks: KeyedLock,
    /// Last CPU sample per cgroup path, for usage_nano_cores: (time ns, usage ns).
    cpu_samples: Mutex<HashMap<String, (i64, u64)>>,
}

impl Runtime {
    /// Open the runtime state: load every record, tear down what a crash left half made.
    pub fn open(cfg: RuntimeConfig, images: Arc<ImageStore>, network: Arc<crate::network::Network>) -> RtResult<Arc<Runtime>> {
        for d in [cfg.data_dir.join("sandboxes"), cfg.data_dir.join("containers"), cfg.run_dir.join("sandboxes"), cfg.run_dir.join("containers")] {
            std::fs::create_dir_all(&d).map_err(|e| internal(&format!("creating {}", d.display()), e))?;
        }
        let rt = Arc::new(Runtime {
            cfg,
            network,
            images: images.clone(),
            index: Mutex::new(Index::default()),
            locks: KeyedLock::new(),
            cpu_samples: Mutex::new(HashMap::new()),
        });
        rt.recover();
        images.set_users(rt.clone());
        Ok(rt)
    }

    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    pub fn network(&self) -> &crate::network::Network {
        &self.network
    }

    fn sandbox_data_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("sandboxes").join(id)
    }
    fn sandbox_run_dir(&self, id: &str) -> PathBuf {
        self.cfg.run_dir.join("sandboxes").join(id)
    }
    fn container_data_dir(&self, id: &str) -> PathBuf {
        self.cfg.data_dir.join("containers").join(id)
    }
    fn container_run_dir(&self, id: &str) -> PathBuf {
        self.cfg.run_dir.join("containers").join(id)
    }

    fn index(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserve a name for an ID; AlreadyExists if another ID holds it.
    fn reserve_name(&self, name: &str, id: &str) -> RtResult<()> {
        let mut idx = self.index();
        if let Some(holder) = idx.names.get(name) {
            if holder != id {
                return Err(RuntimeError::AlreadyExists(format!("name {name:?} is reserved for {holder}")));
            }
        }
        idx.names.insert(name.to_string(), id.to_string());
        Ok(())
    }

    fn release_name(&self, name: &str, id: &str) {
        let mut idx = self.index();
        if idx.names.get(name).map(|h| h == id).unwrap_or(false) {
            idx.names.remove(name);
        }
    }

    /// Resolve a full ID or a unique prefix.
    fn find_id<'a>(ids: impl Iterator<Item = &'a String>, wanted: &str, kind: &str) -> RtResult<String> {
        if wanted.is_empty() {
            return Err(RuntimeError::Invalid(format!("{kind} ID must not be empty")));
        }
        let matches: Vec<&String> = ids.filter(|id| id.starts_with(wanted)).collect();
        match matches.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(RuntimeError::NotFound(format!("{kind} {wanted:?} not found"))),
            many => match many.iter().find(|id| id.as_str() == wanted) {
                Some(id) => Ok((*id).clone()),
                None => Err(RuntimeError::NotFound(format!("{kind} ID prefix {wanted:?} is ambiguous"))),
            },
        }
    }

    fn recover(&self) {
        let sandboxes = load_records::<SandboxRecord>(&self.cfg.data_dir.join("sandboxes"));
        let containers = load_records::<ContainerRecord>(&self.cfg.data_dir.join("containers"));
        // records of objects whose making a stop interrupted (see records::save)
        let mut sandbox_intents = records::load_intents::<SandboxRecord>(&self.cfg.run_dir.join("sandboxes"));
        let mut container_intents = records::load_intents::<ContainerRecord>(&self.cfg.run_dir.join("containers"));
        for (dir, rec) in containers {
            match rec {
                Some(rec) if rec.phase == records::Phase::Ready => {
                    let mut idx = self.index();
                    idx.names.insert(rec.name.clone(), rec.id.clone());
                    idx.containers.insert(rec.id.clone(), rec);
                }
                Some(rec) => {
                    tracing::warn!(id = %rec.id, "removing a container left half-created");
                    self.teardown_container(&rec);
                }
                None => {
                    let id = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                    if let Some(rec) = container_intents.remove(&id) {
                        tracing::warn!(id = %rec.id, "removing a container left half-created");
                        self.teardown_container(&rec);
                    } else {
                        tracing::warn!(dir = %dir.display(), "removing a container directory without a record");
                        self.teardown_container_dirs(&id);
                    }
                }
            }
        }
        for (id, rec) in container_intents {
            if self.index().containers.contains_key(&id) {
                // made Ready just before the stop, its intent not yet removed
                let _ = std::fs::remove_file(self.container_run_dir(&id).join(records::META_FILE));
            } else {
                tracing::warn!(id = %rec.id, "removing a container left half-created");
                self.teardown_container(&rec);
            }
        }
        for (dir, rec) in sandboxes {
            match rec {
                Some(rec) if rec.phase == records::Phase::Ready => {
                    let mut idx = self.index();
                    idx.names.insert(rec.name.clone(), rec.id.clone());
                    idx.sandboxes.insert(rec.id.clone(), rec);
                }
                Some(rec) => {
                    tracing::warn!(id = %rec.id, "removing a sandbox left half-created");
                    self.teardown_sandbox(&rec);
                }
                None => {
                    let id = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                    if let Some(rec) = sandbox_intents.remove(&id) {
                        tracing::warn!(id = %rec.id, "removing a sandbox left half-created");
                        self.teardown_sandbox(&rec);
                    } else {
                        tracing::warn!(dir = %dir.display(), "removing a sandbox directory without a record");
                        self.teardown_sandbox_dirs(&id);
                    }
                }
            }
        }
        for (id, rec) in sandbox_intents {
            if self.index().sandboxes.contains_key(&id) {
                let _ = std::fs::remove_file(self.sandbox_run_dir(&id).join(records::META_FILE));
            } else {
                tracing::warn!(id = %rec.id, "removing a sandbox left half-created");
                self.teardown_sandbox(&rec);
            }
        }
        // Run directories whose record is gone (crash during removal).
        for kind in ["sandboxes", "containers"] {
            let Ok(rd) = std::fs::read_dir(self.cfg.run_dir.join(kind)) else { continue };
            for e in rd.flatten() {
                let id = e.file_name().to_string_lossy().to_string();
                let known = {
                    let idx = self.index();
                    idx.sandboxes.contains_key(&id) || idx.containers.contains_key(&id)
                };
                if !known {
                    if kind == "sandboxes" {
                        self.teardown_sandbox_dirs(&id);
                    } else {
                        self.teardown_container_dirs(&id);
                    }
                }
            }
        }
        let idx = self.index();
        tracing::info!(sandboxes = idx.sandboxes.len(), containers = idx.containers.len(), "runtime state loaded");
        let missing = cgroups::missing_controllers();
        if !missing.is_empty() {
            // Said once here; libcgroups' own per-operation notes about them are filtered out.
            tracing::warn!(mode = ?cgroups::host_mode(), "cgroup controllers missing on this host: {}; their limits are not applied (hugepage limits of 0, which kubelets send for every page size, are dropped; a container that requests hugepages fails)", missing.join(", "));
        }
    }
}

impl Runtime {
    /// After start-up: DEL network attachments whose pod is gone or was never finished
    /// (a crash between ADD and the record), then let CNI ≥ 1.1.0 plugins GC the rest.
    pub async fn reconcile_network(&self) {
        let live: Vec<String> = self.index().sandboxes.values().filter(|s| !s.stopped).map(|s| s.id.clone()).collect();
        for id in self.network.attached() {
            if !live.contains(&id) {
                if let Err(e) = self.network.teardown(&id).await {
                    tracing::warn!(sandbox = %id, "removing a stale pod network: {e}");
                }
            }
        }
        if let Err(e) = self.network.gc(&live).await {
            tracing::debug!("CNI GC: {e}");
        }
    }
}

fn load_records<T: serde::de::DeserializeOwned>(dir: &std::path::Path) -> Vec<(PathBuf, Option<T>)> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    rd.flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| {
            let rec = state::read_json::<T>(&e.path().join(records::META_FILE)).ok();
            (e.path(), rec)
        })
        .collect()
}

impl ImageUsers for Runtime {
    fn containers_using(&self, id: &Digest) -> Vec<String> {
        let uses = |c: &&ContainerRecord| c.image_id == id.as_str() || c.volume_images.iter().any(|v| v == id.as_str());
        self.index().containers.values().filter(uses).map(|c| c.id.clone()).collect()
    }
}

/// Unmount `path` (lazily) if something is mounted there; missing paths are fine.
pub fn unmount(path: &std::path::Path) {
    while nix::mount::umount2(path, nix::mount::MntFlags::MNT_DETACH).is_ok() {}
}
