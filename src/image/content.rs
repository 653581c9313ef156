//! Content-addressed blob store: `blobs/sha256/<hex>` holds verified blobs only; downloads in
//! progress live in `ingest/<hex>` (kept after an interruption, so a later pull resumes from
//! the bytes already there and re-verifies the whole blob).
use crate::util::atomic;
use crate::util::digest::Digest;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

pub struct ContentStore {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: Digest, actual: Digest },
    #[error("content store {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ContentError + '_ {
    move |source| ContentError::Io { path: path.to_path_buf(), source }
}

impl ContentStore {
    pub fn open(root: &Path) -> Result<Self, ContentError> {
        for dir in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        // Partial downloads stay for resuming; staging dirs of imports a crash cut off do not.
        let ingest = root.join("ingest");
        for e in fs::read_dir(&ingest).map_err(io_err(&ingest))?.flatten() {
            if e.file_name().to_string_lossy().starts_with("import-") {
                let _ = fs::remove_dir_all(e.path());
            }
        }
        Ok(ContentStore { root: root.to_path_buf() })
    }

    pub fn blob_path(&self, d: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(d.hex())
    }

    pub fn ingest_path(&self, d: &Digest) -> PathBuf {
        self.root.join("ingest").join(d.hex())
    }

    pub fn has(&self, d: &Digest) -> bool {
        self.blob_path(d).is_file()
    }

    /// Read a whole blob (only for small documents: manifests, configs).
    pub fn read(&self, d: &Digest) -> Result<Vec<u8>, ContentError> {
        let p = self.blob_path(d);
        fs::read(&p).map_err(io_err(&p))
    }

    /// Store `data` under `expected` after checking that it hashes to it.
    pub fn write_verified(&self, expected: &Digest, data: &[u8]) -> Result<(), ContentError> {
        let actual = Digest::of(data);
        if &actual != expected {
            return Err(ContentError::DigestMismatch { expected: expected.clone(), actual });
        }
        if self.has(expected) {
            return Ok(());
        }
        let p = self.blob_path(expected);
        atomic::write_file(&p, data).map_err(io_err(&p))
    }

    /// Move a fully written and verified ingest file into place.
    pub fn commit_ingest(&self, d: &Digest) -> Result<(), ContentError> {
        let from = self.ingest_path(d);
        let to = self.blob_path(d);
        fs::File::open(&from).and_then(|f| f.sync_all()).map_err(io_err(&from))?;
        fs::rename(&from, &to).map_err(io_err(&to))?;
        atomic::sync_dir(&self.root.join("blobs/sha256")).map_err(io_err(&to))
    }

    /// Drop a partial download (after it failed verification).
    pub fn discard_ingest(&self, d: &Digest) {
        let _ = fs::remove_file(self.ingest_path(d));
    }

    pub fn remove(&self, d: &Digest) -> Result<(), ContentError> {
        let p = self.blob_path(d);
        match fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err(&p)(e)),
            _ => Ok(()),
        }
    }

    /// Every stored blob.
    pub fn list(&self) -> Result<Vec<Digest>, ContentError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = vec![];
        for e in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let e = e.map_err(io_err(&dir))?;
            if let Ok(d) = Digest::parse(&format!("sha256:{}", e.file_name().to_string_lossy())) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

impl ContentStore {
    /// Move the file at `from` (on the same filesystem) into the store after checking that it
    /// hashes to `expected`; returns its size.
    pub fn ingest_file(&self, expected: &Digest, from: &Path) -> Result<u64, ContentError> {
        let f = fs::File::open(from).map_err(io_err(from))?;
        let (actual, size) = crate::util::digest::HashingReader::new(io::BufReader::new(f)).finish().map_err(io_err(from))?;
        if &actual != expected {
            return Err(ContentError::DigestMismatch { expected: expected.clone(), actual });
        }
        if !self.has(expected) {
            let to = self.blob_path(expected);
            fs::rename(from, &to).map_err(io_err(&to))?;
            atomic::sync_dir(&self.root.join("blobs/sha256")).map_err(io_err(&to))?;
        }
        Ok(size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_writes_only() {
        let d = tempfile::tempdir().unwrap();
        let s = ContentStore::open(d.path()).unwrap();
        let good = Digest::of(b"abc");
        s.write_verified(&good, b"abc").unwrap();
        assert!(s.has(&good));
        assert_eq!(s.read(&good).unwrap(), b"abc");
        let wrong = Digest::of(b"xyz");
        assert!(matches!(s.write_verified(&wrong, b"abc"), Err(ContentError::DigestMismatch { .. })));
        assert!(!s.has(&wrong));
        assert_eq!(s.list().unwrap(), vec![good]);
    }
}
