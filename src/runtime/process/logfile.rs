//! The CRI container log format: `<RFC3339Nano> <stream> <F|P> <content>\n`, one entry per
//! line; content longer than the buffer is split into partial (P) entries ending with a full (F) one.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

/// Longest content in one log entry before it is split (what containerd uses).
pub const MAX_ENTRY: usize = 16 * 1024;

/// Format Unix nanoseconds as RFC 3339 UTC with nanoseconds.
pub fn rfc3339_nano(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{nanos:09}Z", sod / 3600, (sod % 3600) / 60, sod % 60)
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

/// Splits one stream's bytes into log entries.
#[derive(Default)]
pub struct LineSplitter {
    buf: Vec<u8>,
}

impl LineSplitter {
    /// Feed bytes; `emit(partial, content)` gets every complete entry.
    pub fn feed(&mut self, mut data: &[u8], emit: &mut dyn FnMut(bool, &[u8])) {
        while !data.is_empty() {
            let room = MAX_ENTRY - self.buf.len();
            let take = data.len().min(room);
            if let Some(nl) = data[..take].iter().position(|&b| b == b'\n') {
                self.buf.extend_from_slice(&data[..nl]);
                emit(false, &self.buf);
                self.buf.clear();
                data = &data[nl + 1..];
            } else {
                self.buf.extend_from_slice(&data[..take]);
                data = &data[take..];
                if self.buf.len() == MAX_ENTRY {
                    emit(true, &self.buf);
                    self.buf.clear();
                }
            }
        }
    }

    /// At end of stream: what is left never got its newline, so it is written as a partial
    /// entry (a reader adds no newline the container did not write).
    pub fn finish(&mut self, emit: &mut dyn FnMut(bool, &[u8])) {
        if !self.buf.is_empty() {
            emit(true, &self.buf);
            self.buf.clear();
        }
    }
}

/// Size-based rotation of a container log: when the next entry would take the file over
/// `max_size`, it is renamed to `<log>.<UTC yyyymmdd-hhmmss>` and a new file started; only
/// `max_files` files (the current one included) are kept. Entries are never split across files.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Rotation {
    pub max_size: u64,
    pub max_files: u32,
}

/// The open log file; reopened on request (rotation by the kubelet) or rotated by size.
pub struct CriLog {
    path: Option<PathBuf>,
    file: Option<File>,
    written: u64,
    rotation: Rotation,
}

impl CriLog {
    pub fn open(path: Option<PathBuf>, rotation: Rotation) -> std::io::Result<CriLog> {
        let mut log = CriLog { path, file: None, written: 0, rotation };
        log.reopen()?;
        Ok(log)
    }

    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.file = None;
        self.written = 0;
        if let Some(p) = &self.path {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let f = OpenOptions::new().create(true).append(true).mode(0o640).open(p)?;
            self.written = f.metadata().map(|m| m.len()).unwrap_or(0);
            self.file = Some(f);
        }
        Ok(())
    }

    pub fn write_entry(&mut self, stream: &str, partial: bool, content: &[u8]) {
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(rfc3339_nano(crate::runtime::state::now_ns()).as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(content);
        line.push(b'\n');
        let r = self.rotation;
        if r.max_size > 0 && self.written > 0 && self.written + line.len() as u64 > r.max_size {
            if let Err(e) = self.rotate() {
                eprintln!("rotating the container log: {e}");
            }
        }
        let Some(f) = self.file.as_mut() else { return };
        // A full disk must not stop the container: the entry is dropped.
        if f.write_all(&line).is_ok() {
            self.written += line.len() as u64;
        }
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let Some(path) = self.path.clone() else { return Ok(()) };
        let stamp = rotation_stamp(crate::runtime::state::now_ns());
        let mut target = PathBuf::from(format!("{}.{stamp}", path.display()));
        let mut n = 1;
        while target.exists() {
            target = PathBuf::from(format!("{}.{stamp}.{n}", path.display()));
            n += 1;
        }
        if self.rotation.max_files > 1 {
            std::fs::rename(&path, &target)?;
        } else {
            std::fs::remove_file(&path)?;
        }
        self.reopen()?;
        prune_rotated(&path, self.rotation.max_files.saturating_sub(1) as usize);
        Ok(())
    }
}

/// `yyyymmdd-hhmmss` in UTC, the suffix the kubelet gives rotated logs.
fn rotation_stamp(ns: i64) -> String {
    let t = rfc3339_nano(ns);
    format!("{}{}{}-{}{}{}", &t[0..4], &t[5..7], &t[8..10], &t[11..13], &t[14..16], &t[17..19])
}

/// Rotated files of `path`, oldest first.
pub fn rotated_files(path: &std::path::Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return vec![] };
    let prefix = format!("{name}.");
    let mut v: Vec<(std::time::SystemTime, String, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_str()?.to_string();
            let rest = n.strip_prefix(&prefix)?;
            rest.starts_with(|c: char| c.is_ascii_digit()).then(|| {
                let mtime = e.metadata().and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
                (mtime, n.clone(), e.path())
            })
        })
        .collect();
    v.sort();
    v.into_iter().map(|(_, _, p)| p).collect()
}

fn prune_rotated(path: &std::path::Path, keep: usize) {
    let files = rotated_files(path);
    if files.len() > keep {
        for p in &files[..files.len() - keep] {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_nano() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(rfc3339_nano(1_475_713_029_669_794_202), "2016-10-06T00:17:09.669794202Z");
        assert_eq!(rfc3339_nano(951_782_400_000_000_001), "2000-02-29T00:00:00.000000001Z");
    }

    #[test]
    fn splits_lines_and_marks_partials() {
        let mut s = LineSplitter::default();
        let mut out: Vec<(bool, Vec<u8>)> = vec![];
        let mut emit = |p: bool, c: &[u8]| out.push((p, c.to_vec()));
        s.feed(b"one\ntw", &mut emit);
        s.feed(b"o\n", &mut emit);
        let long = vec![b'a'; MAX_ENTRY * 2 + 10];
        s.feed(&long, &mut emit);
        s.feed(b"\nend", &mut emit);
        s.finish(&mut emit);
        assert_eq!(out[0], (false, b"one".to_vec()));
        assert_eq!(out[1], (false, b"two".to_vec()));
        assert!(out[2].0);
        assert!(out[3].0);
        assert_eq!(out[4], (false, vec![b'a'; 10]));
        assert_eq!(out[5], (true, b"end".to_vec()), "no newline was written after it");
        assert_eq!(out.len(), 6);
    }

    #[test]
    fn rotates_by_size_keeping_max_files_and_whole_entries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut log = CriLog::open(Some(path.clone()), Rotation { max_size: 300, max_files: 3 }).unwrap();
        for i in 0..100 {
            log.write_entry("stdout", false, format!("line {i:03}").as_bytes());
        }
        let rotated = rotated_files(&path);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let mut all = String::new();
        for p in rotated.iter().chain(std::iter::once(&path)) {
            let t = std::fs::read_to_string(p).unwrap();
            assert!(t.len() <= 300, "{p:?} has {} bytes", t.len());
            assert!(t.ends_with('\n'));
            all.push_str(&t);
        }
        // The newest entries are all there, in order, without gaps.
        let nums: Vec<u32> = all.lines().map(|l| l.rsplit(' ').next().unwrap().parse().unwrap()).collect();
        assert_eq!(*nums.last().unwrap(), 99);
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        assert_eq!(rotation_stamp(1_475_713_029_669_794_202), "20161006-001709");
    }
}
