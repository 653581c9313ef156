//! Importing images from a tar file, for nodes without a registry: an OCI image layout
//! (`oci-layout`, `index.json`, `blobs/`) or a `docker save` archive (`manifest.json`).
//! The outer archive is hostile input too: only plain relative paths are staged, links are
//! resolved inside the archive, and everything staged is removed afterwards.
use super::error::ImageError;
use super::meta::{ImageRecord, LayerRecord};
use super::oci::{self, Descriptor, Document, Manifest};
use super::pull::{diff_ids, now_secs};
use super::reference::Reference;
use super::snapshot::remove_tree;
use super::store::ImageStore;
use super::unpack::{unpack_layer, Compression};
use crate::util::digest::Digest;
use std::collections::HashMap;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// Most link hops followed when resolving a name inside the archive.
const MAX_LINK_HOPS: usize = 16;

/// The outer archive unpacked into a staging directory.
struct Staged {
    dir: PathBuf,
    /// Archive names that are links, to the archive name they point at.
    links: HashMap<String, String>,
}

impl Drop for Staged {
    fn drop(&mut self) {
        let _ = remove_tree(&self.dir);
    }
}

impl Staged {
    /// The staged file for archive name `name`, following links inside the archive.
    fn file(&self, name: &str) -> Result<PathBuf, ImageError> {
        let mut name = clean_name(name)?;
        for _ in 0..MAX_LINK_HOPS {
            match self.links.get(&name) {
                Some(target) => name = target.clone(),
                None => {
                    let p = self.dir.join(&name);
                    return if p.is_file() { Ok(p) } else { Err(ImageError::InvalidArgument(format!("archive has no file {name:?}"))) };
                }
            }
        }
        Err(ImageError::InvalidArgument(format!("too many links resolving {name:?} in the archive")))
    }

    fn read(&self, name: &str) -> Result<Vec<u8>, ImageError> {
        let p = self.file(name)?;
        let len = fs::metadata(&p).map_err(ImageError::io(&p))?.len();
        if len > oci::MAX_DOCUMENT {
            return Err(ImageError::InvalidArgument(format!("{name:?} is too large for a manifest or config")));
        }
        fs::read(&p).map_err(ImageError::io(&p))
    }

    fn blob_name(d: &Digest) -> String {
        format!("blobs/sha256/{}", d.hex())
    }
}

/// Normalise an archive name: relative, no `..`, no empty parts.
fn clean_name(name: &str) -> Result<String, ImageError> {
    let mut parts = vec![];
    for c in Path::new(name).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().to_string()),
            Component::CurDir => {}
            _ => return Err(ImageError::InvalidArgument(format!("unsafe path {name:?} in the archive"))),
        }
    }
    if parts.is_empty() {
        return Err(ImageError::InvalidArgument(format!("empty path {name:?} in the archive")));
    }
    Ok(parts.join("/"))
}

/// Resolve a symlink target relative to the link's directory, staying inside the archive.
fn link_target(link: &str, target: &str) -> Result<String, ImageError> {
    let base = Path::new(link).parent().unwrap_or(Path::new(""));
    let mut parts: Vec<String> =
        if target.starts_with('/') { vec![] } else { base.components().map(|c| c.as_os_str().to_string_lossy().to_string()).collect() };
    for c in Path::new(target).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().to_string()),
            Component::ParentDir if parts.pop().is_none() => {
                return Err(ImageError::InvalidArgument(format!("link {link:?} points outside the archive")));
            }
            _ => {}
        }
    }
    Ok(parts.join("/"))
}

fn stage(archive: &Path, dir: PathBuf) -> Result<Staged, ImageError> {
    fs::create_dir_all(&dir).map_err(ImageError::io(&dir))?;
    let mut staged = Staged { dir, links: HashMap::new() };
    let f = fs::File::open(archive).map_err(ImageError::io(archive))?;
    let bad = |e: io::Error| ImageError::InvalidArgument(format!("reading archive {}: {e}", archive.display()));
    let mut tar = tar::Archive::new(io::BufReader::new(f));
    for entry in tar.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let raw = entry.path().map_err(bad)?.to_string_lossy().to_string();
        if matches!(raw.as_str(), "" | "." | "./" | "/") {
            continue;
        }
        let name = clean_name(&raw)?;
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let out = staged.dir.join(&name);
                if let Some(parent) = out.parent() {
                    fs::create_dir_all(parent).map_err(ImageError::io(parent))?;
                }
                let mut w = fs::File::create(&out).map_err(ImageError::io(&out))?;
                io::copy(&mut entry, &mut w).map_err(bad)?;
            }
            tar::EntryType::Symlink => {
                let t = entry.link_name().map_err(bad)?.unwrap_or_default().to_string_lossy().to_string();
                staged.links.insert(name.clone(), link_target(&name, &t)?);
            }
            tar::EntryType::Link => {
                let t = entry.link_name().map_err(bad)?.unwrap_or_default().to_string_lossy().to_string();
                staged.links.insert(name, clean_name(&t)?);
            }
            _ => {} // directories are made on demand; nothing else belongs in an image archive
        }
    }
    Ok(staged)
}

impl ImageStore {
    /// Import every image in the archive at `archive`. `name` names the images of an OCI
    /// layout whose entries carry only a tag (`org.opencontainers.image.ref.name: latest`).
    pub async fn import(self: &Arc<Self>, archive: &Path, name: Option<String>) -> Result<Vec<ImageRecord>, ImageError> {
        let _gc = self.gc_lock.read().await;
        let me = self.clone();
        let archive = archive.to_path_buf();
        let out = tokio::task::spawn_blocking(move || me.import_blocking(&archive, name.as_deref())).await.map_err(|e| ImageError::Internal(e.to_string()))?;
        self.invalidate_usage();
        out
    }

    fn import_blocking(&self, archive: &Path, name: Option<&str>) -> Result<Vec<ImageRecord>, ImageError> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.root.join("content/ingest").join(format!("import-{}-{n}", std::process::id()));
        let staged = stage(archive, dir)?;
        if staged.file("index.json").is_ok() && staged.file("oci-layout").is_ok() {
            self.import_oci_layout(&staged, name)
        } else if staged.file("manifest.json").is_ok() {
            self.import_docker_archive(&staged)
        } else {
            Err(ImageError::InvalidArgument("not an image archive: neither an OCI layout (oci-layout, index.json) nor a docker archive (manifest.json)".into()))
        }
    }

    fn import_oci_layout(&self, staged: &Staged, name: Option<&str>) -> Result<Vec<ImageRecord>, ImageError> {
        let index = match oci::parse_document(&staged.read("index.json")?, oci::OCI_INDEX)? {
            Document::Index(i) => i,
            Document::Manifest(_) => return Err(ImageError::InvalidArgument("index.json is not an image index".into())),
        };
        let mut out = vec![];
        for desc in &index.manifests {
            let top = Digest::parse(&desc.digest).map_err(|e| ImageError::InvalidArgument(e.to_string()))?;
            let reference = layout_reference(desc, name)?;
            let bytes = self.ingest_document(staged, &top)?;
            let (manifest, manifest_digest) = match oci::parse_document(&bytes, &desc.media_type)? {
                Document::Manifest(m) => (m, top.clone()),
                Document::Index(idx) => {
                    let want = oci::host_platform();
                    let d = oci::select_platform(&idx, &want).ok_or_else(|| ImageError::NoMatchingPlatform(format!("{}/{}", want.os, want.architecture)))?;
                    let md = Digest::parse(&d.digest).map_err(|e| ImageError::InvalidArgument(e.to_string()))?;
                    match oci::parse_document(&self.ingest_document(staged, &md)?, &d.media_type)? {
                        Document::Manifest(m) => (m, md),
                        Document::Index(_) => return Err(ImageError::InvalidArgument("nested image indexes are not supported".into())),
                    }
                }
            };
            let repo_digests = reference.iter().map(|r| r.digested(top.as_str())).collect();
            let rec = self.import_manifest(staged, &manifest, manifest_digest, reference.as_ref(), repo_digests, Staged::blob_name)?;
            out.push(rec);
        }
        Ok(out)
    }

    fn import_docker_archive(&self, staged: &Staged) -> Result<Vec<ImageRecord>, ImageError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let entries: Vec<Entry> =
            serde_json::from_slice(&staged.read("manifest.json")?).map_err(|e| ImageError::InvalidArgument(format!("malformed manifest.json: {e}")))?;
        let mut out = vec![];
        for e in entries {
            let config = staged.read(&e.config)?;
            let config_digest = Digest::of(&config);
            let mut layers = vec![];
            let mut paths: HashMap<Digest, String> = HashMap::new();
            for l in &e.layers {
                let p = staged.file(l)?;
                let f = fs::File::open(&p).map_err(ImageError::io(&p))?;
                let mut head = [0u8; 4];
                let got = io::BufReader::new(f).read(&mut head).map_err(ImageError::io(&p))?;
                let (digest, size) = crate::util::digest::HashingReader::new(io::BufReader::new(fs::File::open(&p).map_err(ImageError::io(&p))?))
                    .finish()
                    .map_err(ImageError::io(&p))?;
                let media_type = if got >= 2 && head[..2] == [0x1f, 0x8b] {
                    "application/vnd.oci.image.layer.v1.tar+gzip"
                } else if got == 4 && head == [0x28, 0xb5, 0x2f, 0xfd] {
                    "application/vnd.oci.image.layer.v1.tar+zstd"
                } else {
                    oci::OCI_LAYER_TAR
                };
                paths.insert(digest.clone(), l.clone());
                layers.push(Descriptor { media_type: media_type.into(), digest: digest.to_string(), size: size as i64, platform: None, annotations: None });
            }
            let manifest = Manifest {
                schema_version: 2,
                media_type: Some(oci::OCI_MANIFEST.into()),
                config: Descriptor {
                    media_type: oci::OCI_CONFIG.into(),
                    digest: config_digest.to_string(),
                    size: config.len() as i64,
                    platform: None,
                    annotations: None,
                },
                layers,
            };
            let manifest_bytes = serde_json::to_vec(&manifest).map_err(|e| ImageError::Internal(e.to_string()))?;
            let manifest_digest = Digest::of(&manifest_bytes);
            self.content.write_verified(&manifest_digest, &manifest_bytes)?;
            self.content.write_verified(&config_digest, &config)?;
            let tags: Vec<Reference> = e.repo_tags.unwrap_or_default().iter().map(|t| t.parse::<Reference>()).collect::<Result<_, _>>()?;
            let config_name = e.config.clone();
            let mut rec = self.import_manifest(staged, &manifest, manifest_digest, tags.first(), vec![], |d| {
                if d == &config_digest {
                    config_name.clone()
                } else {
                    paths.get(d).cloned().unwrap_or_default()
                }
            })?;
            for t in tags.iter().skip(1) {
                let mut more = rec.clone();
                more.repo_tags = t.tagged().into_iter().collect();
                rec = self.meta().upsert(more).map_err(ImageError::io(self.root.join("images.json")))?;
            }
            out.push(rec);
        }
        Ok(out)
    }

    /// Store a manifest or index from the archive in the content store and return its bytes.
    fn ingest_document(&self, staged: &Staged, d: &Digest) -> Result<Vec<u8>, ImageError> {
        let bytes = staged.read(&Staged::blob_name(d))?;
        self.content.write_verified(d, &bytes)?;
        Ok(bytes)
    }

    /// Store config and layers of one manifest, unpack the layers and record the image.
    fn import_manifest(
        &self,
        staged: &Staged,
        manifest: &Manifest,
        manifest_digest: Digest,
        reference: Option<&Reference>,
        repo_digests: Vec<String>,
        name_of: impl Fn(&Digest) -> String,
    ) -> Result<ImageRecord, ImageError> {
        let parse = |what: &str, d: &str| Digest::parse(d).map_err(|e| ImageError::InvalidArgument(format!("{what}: {e}")));
        let config_digest = parse("config digest", &manifest.config.digest)?;
        if !self.content.has(&config_digest) {
            let data = staged.read(&name_of(&config_digest))?;
            self.content.write_verified(&config_digest, &data)?;
        }
        let config = self.content.read(&config_digest)?;
        let diff_ids = diff_ids(&config, manifest.layers.len())?;
        let mut layers = vec![];
        for (desc, diff_id) in manifest.layers.iter().zip(diff_ids) {
            let digest = parse("layer digest", &desc.digest)?;
            let compression = Compression::from_media_type(&desc.media_type)
                .ok_or_else(|| ImageError::InvalidArgument(format!("layer {digest}: unsupported media type {:?}", desc.media_type)))?;
            if !self.content.has(&digest) {
                let from = staged.file(&name_of(&digest))?;
                self.content.ingest_file(&digest, &from)?;
            }
            if !self.snapshots.exists(&diff_id) {
                self.unpack_blob_blocking(&digest, compression, &diff_id)?;
            }
            layers.push(LayerRecord { digest, media_type: desc.media_type.clone(), size: desc.size.max(0) as u64, diff_id });
        }
        let size = manifest.config.size.max(0) as u64 + layers.iter().map(|l| l.size).sum::<u64>();
        let rec = ImageRecord {
            id: config_digest,
            repo_tags: reference.and_then(|r| r.tagged()).into_iter().collect(),
            repo_digests,
            manifest_digest,
            layers,
            size,
            pinned: false,
            created_at: now_secs(),
        };
        self.meta().upsert(rec).map_err(ImageError::io(self.root.join("images.json")))
    }

    fn unpack_blob_blocking(&self, digest: &Digest, compression: Compression, diff_id: &Digest) -> Result<(), ImageError> {
        let path = self.content.blob_path(digest);
        let tmp = self.snapshots.prepare().map_err(ImageError::io(self.root.join("snapshots")))?;
        let f = fs::File::open(&path).map_err(ImageError::io(&path))?;
        let unpacked =
            unpack_layer(io::BufReader::new(f), compression, &tmp.fs()).map_err(|source| ImageError::Unpack { digest: digest.to_string(), source })?;
        if unpacked.diff_id != diff_id.as_str() {
            return Err(ImageError::DigestMismatch { what: format!("layer {digest} (uncompressed)"), expected: diff_id.to_string(), actual: unpacked.diff_id });
        }
        self.snapshots.commit(tmp, diff_id).map_err(ImageError::io(self.snapshots.path(diff_id)))
    }
}

/// The reference an OCI layout entry names, if any.
fn layout_reference(desc: &Descriptor, name: Option<&str>) -> Result<Option<Reference>, ImageError> {
    let ann = desc.annotations.clone().unwrap_or_default();
    if let Some(full) = ann.get("io.containerd.image.name") {
        return Ok(Some(full.parse()?));
    }
    match (ann.get("org.opencontainers.image.ref.name"), name) {
        (Some(r), _) if r.contains('/') || r.contains(':') => Ok(Some(r.parse()?)),
        (Some(tag), Some(base)) => {
            let base = base.split_once('@').map_or(base, |(b, _)| b);
            let base = match base.rsplit_once(':') {
                Some((b, t)) if !t.contains('/') => b,
                _ => base,
            };
            Ok(Some(format!("{base}:{tag}").parse()?))
        }
        (None, Some(base)) => Ok(Some(base.parse()?)),
        (Some(tag), None) => {
            Err(ImageError::InvalidArgument(format!("the layout names its image only by tag {tag:?}: give a name (berth images import --name REPO FILE)")))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_archive() {
        assert_eq!(clean_name("./blobs/sha256/ab").unwrap(), "blobs/sha256/ab");
        assert!(clean_name("../x").is_err());
        assert!(clean_name("/etc/passwd").is_err());
        assert_eq!(link_target("a/b/layer.tar", "../c/layer.tar").unwrap(), "a/c/layer.tar");
        assert!(link_target("a/layer.tar", "../../etc/passwd").is_err());
    }
}
