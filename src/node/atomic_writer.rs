//! Writes the files of a configMap, secret, downwardAPI or projected volume so that running
//! containers see a change all at once, in the layout the kubelet uses: the files live in
//! a hidden timestamped directory, `..data` points at the current one, and every top-level
//! entry is a symlink through `..data`. Swapping `..data` (a rename) is the atomic step.
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const DATA_LINK: &str = "..data";

/// One file of the volume: its path relative to the volume, content and mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Payload {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

/// Relative path → (content, mode, group).
type FileSet = BTreeMap<String, (Vec<u8>, u32, u32)>;

/// The files under the current `..data`, with modes and group, by relative path.
fn current(dir: &Path) -> Option<FileSet> {
    let target = std::fs::read_link(dir.join(DATA_LINK)).ok()?;
    let root = dir.join(target);
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            let md = std::fs::symlink_metadata(&p).ok()?;
            if md.is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(&root).ok()?.to_string_lossy().to_string();
                out.insert(rel, (std::fs::read(&p).ok()?, md.mode() & 0o7777, md.gid()));
            }
        }
    }
    Some(out)
}

fn top_level(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Point `link` at `target` atomically (a new symlink renamed over the old one).
fn swap_symlink(link: &Path, target: &Path) -> io::Result<()> {
    let tmp = link.with_file_name(format!("..tmp_{}", link.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default()));
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp)?;
    std::fs::rename(&tmp, link)
}

/// Make the volume hold exactly `files` (owned by group `gid` when given). Returns whether
/// anything changed; an unchanged volume is left alone.
pub fn write(dir: &Path, files: &[Payload], gid: Option<u32>) -> io::Result<bool> {
    std::fs::create_dir_all(dir)?;
    let wanted: BTreeMap<String, (Vec<u8>, u32)> = files.iter().map(|f| (f.path.clone(), (f.data.clone(), f.mode & 0o7777))).collect();
    if let Some(cur) = current(dir) {
        let same = cur.len() == wanted.len()
            && cur
                .iter()
                .all(|(p, (data, mode, g))| wanted.get(p).map(|(d, m)| d == data && m == mode && gid.map(|x| x == *g).unwrap_or(true)).unwrap_or(false));
        if same {
            return Ok(false);
        }
    }
    let old = std::fs::read_link(dir.join(DATA_LINK)).ok();
    let stamp = format!("..{}", crate::util::time::now_ns());
    let new_dir = dir.join(&stamp);
    std::fs::create_dir(&new_dir)?;
    std::fs::set_permissions(&new_dir, std::fs::Permissions::from_mode(0o755))?;
    for f in files {
        let p = new_dir.join(&f.path);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&p, &f.data)?;
        if let Some(g) = gid {
            nix::unistd::chown(&p, None, Some(nix::unistd::Gid::from_raw(g))).map_err(io::Error::from)?;
        }
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(f.mode & 0o7777))?;
    }
    swap_symlink(&dir.join(DATA_LINK), Path::new(&stamp))?;
    // Top-level entries: symlinks through ..data, stale ones removed.
    let tops: BTreeSet<&str> = files.iter().map(|f| top_level(&f.path)).collect();
    for t in &tops {
        let link = dir.join(t);
        let target = PathBuf::from(DATA_LINK).join(t);
        if std::fs::read_link(&link).ok().as_ref() != Some(&target) {
            if link.is_dir() && std::fs::symlink_metadata(&link).map(|m| !m.file_type().is_symlink()).unwrap_or(false) {
                std::fs::remove_dir_all(&link)?;
            }
            swap_symlink(&link, &target)?;
        }
    }
    for e in std::fs::read_dir(dir)?.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if name.starts_with("..") || tops.contains(name.as_str()) {
            continue;
        }
        let p = e.path();
        let _ = if std::fs::symlink_metadata(&p).map(|m| m.is_dir()).unwrap_or(false) { std::fs::remove_dir_all(&p) } else { std::fs::remove_file(&p) };
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swaps_content_atomically_and_leaves_unchanged_volumes_alone() {
        let dir = std::env::temp_dir().join(format!("berth-unit-atomic-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let f = |p: &str, d: &str| Payload { path: p.into(), data: d.as_bytes().to_vec(), mode: 0o644 };
        assert!(write(&dir, &[f("a", "1"), f("conf/b", "2")], None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("conf/b")).unwrap(), "2");
        assert_eq!(std::fs::read_link(dir.join("a")).unwrap(), PathBuf::from("..data/a"));
        assert!(!write(&dir, &[f("a", "1"), f("conf/b", "2")], None).unwrap(), "unchanged");
        assert!(write(&dir, &[f("a", "3")], None).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "3");
        assert!(!dir.join("conf").exists(), "a key that went is gone");
        let hidden: Vec<String> =
            std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.starts_with("..")).collect();
        assert_eq!(hidden.len(), 2, "..data and one timestamped dir: {hidden:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
