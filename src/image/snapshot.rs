//! Unpacked layers, one directory per layer keyed by its diff ID (`<root>/<hex>/fs`), used as
//! overlayfs lower dirs. A layer is unpacked into a temporary directory and renamed into
//! place only once it is complete and verified, so a crash never leaves a partial snapshot.
use crate::util::digest::Digest;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub struct SnapshotStore {
    root: PathBuf,
    counter: AtomicU64,
}

/// A snapshot being unpacked; removed on drop unless committed.
pub struct TempSnapshot {
    dir: PathBuf,
    committed: bool,
}

const TEMP_PREFIX: &str = "tmp-";

impl TempSnapshot {
    /// The directory to unpack into.
    pub fn fs(&self) -> PathBuf {
        self.dir.join("fs")
    }
}

impl Drop for TempSnapshot {
    fn drop(&mut self) {
        if !self.committed {
            if let Err(e) = remove_tree(&self.dir) {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove temporary snapshot");
            }
        }
    }
}

impl SnapshotStore {
    /// Open the store, removing temporary snapshots a crash left behind.
    pub fn open(root: &Path) -> io::Result<Self> {
        fs::create_dir_all(root)?;
        for e in fs::read_dir(root)? {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
                tracing::info!(dir = %e.path().display(), "removing incomplete snapshot");
                remove_tree(&e.path())?;
            }
        }
        Ok(SnapshotStore { root: root.to_path_buf(), counter: AtomicU64::new(0) })
    }

    /// The unpacked tree of layer `diff_id`.
    pub fn path(&self, diff_id: &Digest) -> PathBuf {
        self.root.join(diff_id.hex()).join("fs")
    }

    pub fn exists(&self, diff_id: &Digest) -> bool {
        self.path(diff_id).is_dir()
    }

    pub fn prepare(&self) -> io::Result<TempSnapshot> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let dir = self.root.join(format!("{TEMP_PREFIX}{}-{n}", std::process::id()));
        if dir.exists() {
            remove_tree(&dir)?;
        }
        fs::create_dir_all(dir.join("fs"))?;
        Ok(TempSnapshot { dir, committed: false })
    }

    /// Put a finished snapshot in place under `diff_id`.
    pub fn commit(&self, mut tmp: TempSnapshot, diff_id: &Digest) -> io::Result<()> {
        let target = self.root.join(diff_id.hex());
        if target.exists() {
            return Ok(()); // someone else unpacked the same layer; `tmp` is dropped
        }
        fs::rename(&tmp.dir, &target)?;
        tmp.committed = true;
        crate::util::atomic::sync_dir(&self.root)
    }

    pub fn remove(&self, diff_id: &Digest) -> io::Result<()> {
        let dir = self.root.join(diff_id.hex());
        if dir.exists() {
            // Rename first so that a crash midway leaves a temp dir (cleaned at start-up),
            // never a half-deleted snapshot under a valid name.
            let n = self.counter.fetch_add(1, Ordering::Relaxed);
            let doomed = self.root.join(format!("{TEMP_PREFIX}rm-{}-{n}", std::process::id()));
            fs::rename(&dir, &doomed)?;
            remove_tree(&doomed)?;
        }
        Ok(())
    }

    /// Diff IDs of all committed snapshots.
    pub fn list(&self) -> io::Result<Vec<Digest>> {
        let mut out = vec![];
        for e in fs::read_dir(&self.root)? {
            let name = e?.file_name().to_string_lossy().to_string();
            if let Ok(d) = Digest::parse(&format!("sha256:{name}")) {
                out.push(d);
            }
        }
        Ok(out)
    }
}

/// Remove a directory tree without following symlinks (std's remove_dir_all does not follow
/// them either); a missing tree is fine.
pub fn remove_tree(p: &Path) -> io::Result<()> {
    match fs::remove_dir_all(p) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_snapshots_vanish_unless_committed() {
        let d = tempfile::tempdir().unwrap();
        let s = SnapshotStore::open(d.path()).unwrap();
        let id = Digest::of(b"layer");
        {
            let t = s.prepare().unwrap();
            fs::write(t.fs().join("f"), b"x").unwrap();
        }
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 0);
        let t = s.prepare().unwrap();
        fs::write(t.fs().join("f"), b"x").unwrap();
        s.commit(t, &id).unwrap();
        assert!(s.exists(&id));
        assert_eq!(fs::read(s.path(&id).join("f")).unwrap(), b"x");
        // a crash leaves a temp dir: reopening removes it
        fs::create_dir_all(d.path().join("tmp-999-0/fs")).unwrap();
        let s = SnapshotStore::open(d.path()).unwrap();
        assert_eq!(s.list().unwrap(), vec![id.clone()]);
        s.remove(&id).unwrap();
        assert!(!s.exists(&id));
    }
}
