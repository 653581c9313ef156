//! The mount table of the calling process's mount namespace (/proc/self/mountinfo): which
//! mount holds a path and how it propagates (shared peer group, slave of one, or private).
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// The filesystem's device number (major:minor).
    pub device: (u64, u64),
    pub mount_point: PathBuf,
    /// The filesystem type (ext4, overlay, cgroup, ...).
    pub fstype: String,
    /// The mount source (a device path, or the filesystem's name for virtual ones).
    pub source: String,
    /// The superblock's options (for a cgroup v1 hierarchy: its controllers among them).
    pub super_options: String,
    /// Member of a peer group (`shared:N`): mounts below it propagate to the peers.
    pub shared: bool,
    /// Receives propagation from a peer group (`master:N`).
    pub slave: bool,
}

/// Undo mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() && bytes[i + 1..i + 4].iter().all(|b| (b'0'..=b'7').contains(b)) {
            let v = (bytes[i + 1] - b'0') as u32 * 64 + (bytes[i + 2] - b'0') as u32 * 8 + (bytes[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One mountinfo line: `id parent major:minor root mount-point options optional... - type source super`.
fn parse_line(line: &str) -> Option<MountEntry> {
    let mut fields = line.split(' ');
    let (major, minor) = fields.nth(2)?.split_once(':')?;
    let device = (major.parse().ok()?, minor.parse().ok()?);
    let mount_point = unescape(fields.nth(1)?);
    let _options = fields.next()?;
    let (mut shared, mut slave) = (false, false);
    while let Some(f) = fields.next() {
        if f == "-" {
            let fstype = fields.next()?.to_string();
            let source = unescape(fields.next()?);
            let super_options = fields.next().unwrap_or_default().to_string();
            return Some(MountEntry { device, mount_point: PathBuf::from(mount_point), fstype, source, super_options, shared, slave });
        }
        shared |= f.starts_with("shared:");
        slave |= f.starts_with("master:");
    }
    None
}

pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines().filter_map(parse_line).collect()
}

/// The mount that holds `path` (its symlinks resolved): the last-mounted entry whose mount
/// point is the longest prefix of it.
pub fn mount_of(entries: &[MountEntry], path: &Path) -> Option<MountEntry> {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let mut best: Option<&MountEntry> = None;
    for e in entries {
        if path.starts_with(&e.mount_point) && best.is_none_or(|b| e.mount_point.components().count() >= b.mount_point.components().count()) {
            best = Some(e);
        }
    }
    best.cloned()
}

/// `mount_of` in the calling process's mount namespace.
pub fn current_mount_of(path: &Path) -> std::io::Result<Option<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(mount_of(&parse(&text), path))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /run rw,nosuid shared:5 - tmpfs tmpfs rw
41 30 0:40 / /run/my\\040dir rw master:5 - tmpfs tmpfs rw
42 22 0:41 / /srv rw - tmpfs tmpfs rw
43 42 0:42 / /srv rw shared:9 master:3 - tmpfs tmpfs rw
";

    #[test]
    fn propagation_and_longest_prefix() {
        let t = parse(TABLE);
        assert_eq!(t.len(), 5);
        assert_eq!(t[2].mount_point, PathBuf::from("/run/my dir"));
        assert_eq!((t[0].device, t[0].source.as_str()), ((8, 1), "/dev/sda1"));
        let run = mount_of(&t, Path::new("/run/berth-none/x")).unwrap();
        assert_eq!((run.mount_point.as_path(), run.shared, run.slave), (Path::new("/run"), true, false));
        let mine = mount_of(&t, Path::new("/run/my dir/a")).unwrap();
        assert!(!mine.shared && mine.slave);
        // Two mounts on one point: the one mounted last (listed last) is the one seen.
        let srv = mount_of(&t, Path::new("/srv/data")).unwrap();
        assert!(srv.shared && srv.slave);
        assert_eq!(mount_of(&t, Path::new("/etc")).unwrap().mount_point, PathBuf::from("/"));
    }
}
