//! Image records: what the node knows about each image (its tags, digests, layers), kept in
//! one JSON file that is replaced atomically on every change.
use crate::util::atomic;
use crate::util::digest::Digest;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    /// Digest of the blob as distributed (compressed).
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    /// Digest of the uncompressed tar: the snapshot key.
    pub diff_id: Digest,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    /// The image ID: the digest of its config.
    pub id: Digest,
    /// Normalised `name:tag` references pointing at this image.
    pub repo_tags: Vec<String>,
    /// `name@digest` references (the digest of the manifest or index that was pulled).
    pub repo_digests: Vec<String>,
    /// The platform manifest the layers come from.
    pub manifest_digest: Digest,
    pub layers: Vec<LayerRecord>,
    /// Bytes of content as distributed: config + layers.
    pub size: u64,
    #[serde(default)]
    pub pinned: bool,
    /// Unix seconds of the (last) pull or import.
    pub created_at: i64,
}

#[derive(Default, Serialize, Deserialize)]
struct MetaFile {
    images: Vec<ImageRecord>,
}

/// All image records, in memory, mirrored to `<root>/images.json`.
pub struct MetaDb {
    path: PathBuf,
    images: Vec<ImageRecord>,
}

impl MetaDb {
    pub fn open(root: &Path) -> io::Result<Self> {
        let path = root.join("images.json");
        let images = match std::fs::read(&path) {
            Ok(data) => {
                serde_json::from_slice::<MetaFile>(&data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display())))?.images
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => vec![],
            Err(e) => return Err(e),
        };
        Ok(MetaDb { path, images })
    }

    pub fn all(&self) -> &[ImageRecord] {
        &self.images
    }

    pub fn get(&self, id: &Digest) -> Option<&ImageRecord> {
        self.images.iter().find(|i| &i.id == id)
    }

    /// Add or merge `rec`, moving its tags away from any other image, then persist.
    pub fn upsert(&mut self, rec: ImageRecord) -> io::Result<ImageRecord> {
        let mut next = self.images.clone();
        for other in next.iter_mut().filter(|i| i.id != rec.id) {
            other.repo_tags.retain(|t| !rec.repo_tags.contains(t));
        }
        let merged = match next.iter_mut().find(|i| i.id == rec.id) {
            Some(existing) => {
                for t in &rec.repo_tags {
                    if !existing.repo_tags.contains(t) {
                        existing.repo_tags.push(t.clone());
                    }
                }
                for d in &rec.repo_digests {
                    if !existing.repo_digests.contains(d) {
                        existing.repo_digests.push(d.clone());
                    }
                }
                existing.pinned |= rec.pinned;
                existing.created_at = rec.created_at;
                existing.clone()
            }
            None => {
                next.push(rec.clone());
                rec
            }
        };
        self.replace(next)?;
        Ok(merged)
    }

    /// Forget image `id`, then persist. Returns the removed record.
    pub fn remove(&mut self, id: &Digest) -> io::Result<Option<ImageRecord>> {
        let mut next = self.images.clone();
        let pos = next.iter().position(|i| &i.id == id);
        let removed = pos.map(|p| next.remove(p));
        if removed.is_some() {
            self.replace(next)?;
        }
        Ok(removed)
    }

    /// Persist first, then switch the in-memory view: a failed write changes nothing.
    fn replace(&mut self, next: Vec<ImageRecord>) -> io::Result<()> {
        let file = MetaFile { images: next };
        atomic::write_json(&self.path, &file)?;
        self.images = file.images;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &[u8], tag: &str) -> ImageRecord {
        ImageRecord {
            id: Digest::of(id),
            repo_tags: vec![tag.to_string()],
            repo_digests: vec![],
            manifest_digest: Digest::of(b"m"),
            layers: vec![],
            size: 1,
            pinned: false,
            created_at: 0,
        }
    }

    #[test]
    fn tags_move_and_state_survives_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut db = MetaDb::open(d.path()).unwrap();
        db.upsert(rec(b"a", "x:latest")).unwrap();
        db.upsert(rec(b"b", "x:latest")).unwrap();
        let db = MetaDb::open(d.path()).unwrap();
        assert!(db.get(&Digest::of(b"a")).unwrap().repo_tags.is_empty());
        assert_eq!(db.get(&Digest::of(b"b")).unwrap().repo_tags, vec!["x:latest"]);
        let mut db = db;
        assert!(db.remove(&Digest::of(b"a")).unwrap().is_some());
        assert_eq!(MetaDb::open(d.path()).unwrap().all().len(), 1);
    }
}
