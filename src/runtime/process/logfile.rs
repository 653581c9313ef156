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

    /// At end of stream: what is left is the final piece of its line.
    pub fn finish(&mut self, emit: &mut dyn FnMut(bool, &[u8])) {
        if !self.buf.is_empty() {
            emit(false, &self.buf);
            self.buf.clear();
        }
    }
}

/// The open log file; reopened on request (log rotation by the kubelet).
pub struct CriLog {
    path: Option<PathBuf>,
    file: Option<File>,
}

impl CriLog {
    pub fn open(path: Option<PathBuf>) -> std::io::Result<CriLog> {
        let mut log = CriLog { path, file: None };
        log.reopen()?;
        Ok(log)
    }

    pub fn reopen(&mut self) -> std::io::Result<()> {
        self.file = None;
        if let Some(p) = &self.path {
            if let Some(dir) = p.parent() {
                std::fs::create_dir_all(dir)?;
            }
            self.file = Some(OpenOptions::new().create(true).append(true).mode(0o640).open(p)?);
        }
        Ok(())
    }

    pub fn write_entry(&mut self, stream: &str, partial: bool, content: &[u8]) {
        let Some(f) = self.file.as_mut() else { return };
        let mut line = Vec::with_capacity(content.len() + 48);
        line.extend_from_slice(rfc3339_nano(crate::runtime::state::now_ns()).as_bytes());
        line.push(b' ');
        line.extend_from_slice(stream.as_bytes());
        line.extend_from_slice(if partial { b" P " } else { b" F " });
        line.extend_from_slice(content);
        line.push(b'\n');
        // A full disk must not stop the container: the entry is dropped.
        let _ = f.write_all(&line);
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
        assert_eq!(out[2].0, true);
        assert_eq!(out[3].0, true);
        assert_eq!(out[4], (false, vec![b'a'; 10]));
        assert_eq!(out[5], (false, b"end".to_vec()));
        assert_eq!(out.len(), 6);
    }
}
