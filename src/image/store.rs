//! The image store: blobs, snapshots and records under one data directory, and the
//! operations the CRI ImageService needs on them (resolve, list, status, remove, usage).
//! Pulls live in `pull.rs`, imports in `import.rs`.
use super::content::ContentStore;
use super::error::ImageError;
use super::meta::{ImageRecord, MetaDb};
use super::reference::Reference;
use super::registry::{RegistryClient, RegistryConfig};
use super::snapshot::SnapshotStore;
use crate::util::digest::Digest;
use crate::util::keyed_lock::KeyedLock;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Tells the store which containers use an image, so it refuses to remove those.
/// The container runtime registers itself here.
pub trait ImageUsers: Send + Sync {
    /// IDs of containers whose rootfs is built from image `id`.
    fn containers_using(&self, id: &Digest) -> Vec<String>;
}

/// Bytes and inodes used by the image filesystem.
#[derive(Clone, Copy, Debug, Default)]
pub struct FsUsage {
    pub used_bytes: u64,
    pub inodes_used: u64,
}

pub struct ImageStore {
    pub(super) root: PathBuf,
    pub(super) content: ContentStore,
    pub(super) snapshots: SnapshotStore,
    pub(super) meta: Mutex<MetaDb>,
    pub(super) registry: RegistryClient,
    /// Serialises work on one layer (by blob digest) across concurrent pulls.
    pub(super) layer_locks: KeyedLock,
    /// Serialises record changes against removals and garbage collection.
    pub(super) gc_lock: tokio::sync::RwLock<()>,
    users: OnceLock<Arc<dyn ImageUsers>>,
    usage_cache: Mutex<Option<(Instant, FsUsage)>>,
}

/// How long a measured filesystem usage is reused.
const USAGE_TTL: Duration = Duration::from_secs(10);

impl ImageStore {
    /// Open (or create) the store under `root`, cleaning what a crash left half-done.
    pub fn open(root: &Path, registry: RegistryConfig) -> Result<Self, ImageError> {
        std::fs::create_dir_all(root).map_err(ImageError::io(root))?;
        let content = ContentStore::open(&root.join("content"))?;
        let snapshots = SnapshotStore::open(&root.join("snapshots")).map_err(ImageError::io(root.join("snapshots")))?;
        let meta = MetaDb::open(root).map_err(ImageError::io(root.join("images.json")))?;
        let registry = RegistryClient::new(registry).map_err(|e| ImageError::InvalidArgument(format!("registry config: {e}")))?;
        Ok(ImageStore {
            root: root.to_path_buf(),
            content,
            snapshots,
            meta: Mutex::new(meta),
            registry,
            layer_locks: KeyedLock::new(),
            gc_lock: tokio::sync::RwLock::new(()),
            users: OnceLock::new(),
            usage_cache: Mutex::new(None),
        })
    }

    /// Register who uses images (once, by the container runtime).
    pub fn set_users(&self, users: Arc<dyn ImageUsers>) {
        let _ = self.users.set(users);
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(super) fn meta(&self) -> std::sync::MutexGuard<'_, MetaDb> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn list(&self) -> Vec<ImageRecord> {
        self.meta().all().to_vec()
    }

    /// Find an image by ID (`sha256:<hex>` or bare hex, or a unique hex prefix of at least 12
    /// characters), by `name:tag`, or by `name@digest`; names are normalised
    /// (`busybox` = `docker.io/library/busybox:latest`).
    pub fn resolve(&self, image: &str) -> Result<Option<ImageRecord>, ImageError> {
        let image = image.trim();
        if image.is_empty() {
            return Err(ImageError::InvalidArgument("image name is empty".into()));
        }
        let meta = self.meta();
        let hex = image.strip_prefix("sha256:").unwrap_or(image);
        if hex.len() >= 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            let found: Vec<_> = meta.all().iter().filter(|i| i.id.hex().starts_with(hex)).collect();
            if found.len() == 1 {
                return Ok(Some(found[0].clone()));
            }
            if image.starts_with("sha256:") || found.len() > 1 {
                return if found.len() > 1 { Err(ImageError::InvalidArgument(format!("image ID prefix {image:?} is ambiguous"))) } else { Ok(None) };
            }
        }
        let r: Reference = image.parse()?;
        let found = match (&r.digest, r.tagged()) {
            (Some(d), _) => {
                let want = r.digested(d);
                meta.all().iter().find(|i| i.repo_digests.contains(&want)).cloned()
            }
            (None, Some(tagged)) => meta.all().iter().find(|i| i.repo_tags.contains(&tagged)).cloned(),
            (None, None) => None,
        };
        Ok(found)
    }

    /// The image's config JSON (the OCI image config), as stored.
    pub fn config_json(&self, rec: &ImageRecord) -> Result<Vec<u8>, ImageError> {
        Ok(self.content.read(&rec.id)?)
    }

    /// The image's config, parsed.
    pub fn config(&self, rec: &ImageRecord) -> Result<oci_spec::image::ImageConfiguration, ImageError> {
        let raw = self.config_json(rec)?;
        serde_json::from_slice(&raw).map_err(|e| ImageError::Internal(format!("image config {}: {e}", rec.id)))
    }

    /// Lower directories for an overlay rootfs of `rec`, topmost layer first.
    pub fn layer_dirs(&self, rec: &ImageRecord) -> Vec<PathBuf> {
        rec.layers.iter().rev().map(|l| self.snapshots.path(&l.diff_id)).collect()
    }

    /// Remove an image (all its tags and digests) unless a container uses it, then delete
    /// blobs and snapshots no other image needs. Removing a missing image is not an error.
    pub async fn remove(&self, image: &str) -> Result<Option<ImageRecord>, ImageError> {
        let _gc = self.gc_lock.write().await;
        let Some(rec) = self.resolve(image)? else {
            return Ok(None);
        };
        if let Some(users) = self.users.get() {
            let using = users.containers_using(&rec.id);
            if !using.is_empty() {
                return Err(ImageError::InUse { image: image.to_string(), containers: using.join(", ") });
            }
        }
        let removed = self.meta().remove(&rec.id).map_err(ImageError::io(self.root.join("images.json")))?;
        self.collect_garbage()?;
        self.invalidate_usage();
        Ok(removed)
    }

    /// Delete blobs and snapshots that no image record refers to. Callers hold `gc_lock`
    /// for writing, so no pull is between writing content and recording it.
    fn collect_garbage(&self) -> Result<(), ImageError> {
        let (blobs, diffs) = {
            let meta = self.meta();
            let mut blobs = HashSet::new();
            let mut diffs = HashSet::new();
            for i in meta.all() {
                blobs.insert(i.id.clone());
                blobs.insert(i.manifest_digest.clone());
                for d in &i.repo_digests {
                    if let Some((_, dg)) = d.rsplit_once('@') {
                        if let Ok(dg) = Digest::parse(dg) {
                            blobs.insert(dg);
                        }
                    }
                }
                for l in &i.layers {
                    blobs.insert(l.digest.clone());
                    diffs.insert(l.diff_id.clone());
                }
            }
            (blobs, diffs)
        };
        for d in self.content.list()? {
            if !blobs.contains(&d) {
                tracing::debug!(digest = %d, "removing unreferenced blob");
                self.content.remove(&d)?;
            }
        }
        let snaps = self.snapshots.list().map_err(ImageError::io(self.root.join("snapshots")))?;
        for d in snaps {
            if !diffs.contains(&d) {
                tracing::debug!(diff_id = %d, "removing unreferenced snapshot");
                self.snapshots.remove(&d).map_err(ImageError::io(self.snapshots.path(&d)))?;
            }
        }
        Ok(())
    }

    /// Real usage of the image filesystem (blocks and inodes under the store), measured by a
    /// walk that is cached for a few seconds.
    pub async fn usage(&self) -> Result<FsUsage, ImageError> {
        if let Some((at, u)) = *self.usage_cache.lock().unwrap_or_else(|e| e.into_inner()) {
            if at.elapsed() < USAGE_TTL {
                return Ok(u);
            }
        }
        let root = self.root.clone();
        let u = tokio::task::spawn_blocking(move || measure(&root))
            .await
            .map_err(|e| ImageError::Internal(e.to_string()))?
            .map_err(ImageError::io(self.root.clone()))?;
        *self.usage_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), u));
        Ok(u)
    }

    pub(super) fn invalidate_usage(&self) {
        *self.usage_cache.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

/// Sum allocated bytes and count inodes below `root`, counting hard-linked files once.
fn measure(root: &Path) -> std::io::Result<FsUsage> {
    use std::os::unix::fs::MetadataExt;
    let mut seen = HashSet::new();
    let mut usage = FsUsage::default();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for e in entries {
            let e = e?;
            let md = match e.path().symlink_metadata() {
                Ok(m) => m,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
                Err(err) => return Err(err),
            };
            if md.nlink() > 1 && !md.is_dir() && !seen.insert((md.dev(), md.ino())) {
                continue;
            }
            usage.inodes_used += 1;
            usage.used_bytes += md.blocks() * 512;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    Ok(usage)
}
