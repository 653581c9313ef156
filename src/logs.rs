//! Reading CRI container logs (`<RFC3339Nano> <stream> <P|F> <content>` per line): partial
//! entries joined into whole lines, tail, since, timestamps, a byte limit, and follow that
//! carries on across rotation (the file renamed away and a new one started, by the monitor
//! or after ReopenContainerLog). `berth logs` and the kubelet API read logs through this.
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Default)]
pub struct LogOptions {
    pub follow: bool,
    /// Only the last N lines of the current file.
    pub tail: Option<usize>,
    /// Only lines logged at or after this time (Unix ns).
    pub since_ns: Option<i64>,
    /// Prefix each line with its RFC 3339 timestamp.
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<u64>,
}

/// One whole line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub timestamp: String,
    pub stream: LogStream,
    /// The line's bytes, with its newline unless the container never finished it.
    pub content: Vec<u8>,
}

impl LogLine {
    /// How the line is shown: with or without its timestamp.
    pub fn render(&self, timestamps: bool) -> Vec<u8> {
        if !timestamps {
            return self.content.clone();
        }
        let mut v = Vec::with_capacity(self.timestamp.len() + 1 + self.content.len());
        v.extend_from_slice(self.timestamp.as_bytes());
        v.push(b' ');
        v.extend_from_slice(&self.content);
        v
    }
}

/// Unix nanoseconds of an RFC 3339 UTC timestamp (`Z` or a numeric offset, any fraction).
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d, h, mi, se) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    let mut rest = &s[19..];
    let mut nanos = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(|c| c.is_ascii_digit()).collect();
        if digits.is_empty() {
            return None;
        }
        let mut padded = digits.clone();
        padded.truncate(9);
        while padded.len() < 9 {
            padded.push('0');
        }
        nanos = padded.parse().ok()?;
        rest = &frac[digits.len()..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (o[1..3].parse::<i64>().ok()? * 3600 + o[4..6].parse::<i64>().ok()? * 60)
        }
        _ => return None,
    };
    // Days from civil (proleptic Gregorian).
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = (mo + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + h * 3600 + mi * 60 + se) - offset) * 1_000_000_000 + nanos)
}

/// Turns raw log bytes into whole lines, joining partial entries per stream.
#[derive(Default)]
pub struct LogDecoder {
    pending: Vec<u8>,
    partial: [Vec<u8>; 2],
    /// Timestamp of the last partial entry per stream.
    partial_ts: [String; 2],
}

impl LogDecoder {
    /// Feed bytes; every complete line is handed to `out`.
    pub fn feed(&mut self, data: &[u8], out: &mut dyn FnMut(LogLine)) {
        self.pending.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = self.pending[start..].iter().position(|&c| c == b'\n') {
            let line = self.pending[start..start + nl].to_vec();
            start += nl + 1;
            self.entry(&line, out);
        }
        self.pending.drain(..start);
    }

    fn entry(&mut self, line: &[u8], out: &mut dyn FnMut(LogLine)) {
        let mut parts = line.splitn(4, |&c| c == b' ');
        let (Some(ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else { return };
        let content = parts.next().unwrap_or(&[]);
        let (stream, idx) = match stream {
            b"stdout" => (LogStream::Stdout, 0),
            b"stderr" => (LogStream::Stderr, 1),
            _ => return,
        };
        let Ok(ts) = std::str::from_utf8(ts) else { return };
        // The tag is "P" or "F", possibly followed by more ':'-separated fields.
        let partial = tag.split(|&c| c == b':').next() == Some(b"P");
        self.partial[idx].extend_from_slice(content);
        if !partial {
            let mut content = std::mem::take(&mut self.partial[idx]);
            content.push(b'\n');
            out(LogLine { timestamp: ts.to_string(), stream, content });
        } else {
            self.partial_ts[idx] = ts.to_string();
        }
    }

    /// At the end of the log: partial entries never completed are handed out as they are,
    /// without a newline (the container wrote none).
    pub fn finish(&mut self, out: &mut dyn FnMut(LogLine)) {
        for (idx, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            let content = std::mem::take(&mut self.partial[idx]);
            if !content.is_empty() {
                out(LogLine { timestamp: std::mem::take(&mut self.partial_ts[idx]), stream, content });
            }
        }
    }
}

fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.dev() == b.dev() && a.ino() == b.ino()
}

/// Read a container log. `write` gets each line (return false to stop); with `follow`,
/// `running` is asked between polls and following ends once it says no and the file is done.
pub async fn read_logs<R, Fut>(path: &Path, opts: &LogOptions, mut write: impl FnMut(&LogLine) -> bool, running: R) -> std::io::Result<()>
where
    R: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut file = File::open(path)?;
    let mut written: u64 = 0;
    let mut stopped = false;
    let mut emit = |l: LogLine, stopped: &mut bool| {
        if *stopped || opts.since_ns.is_some_and(|s| parse_rfc3339(&l.timestamp).is_some_and(|t| t < s)) {
            return;
        }
        let shown = l.render(opts.timestamps).len() as u64;
        if let Some(limit) = opts.limit_bytes {
            if written + shown > limit {
                *stopped = true;
                return;
            }
        }
        written += shown;
        if !write(&l) {
            *stopped = true;
        }
    };
    let mut dec = LogDecoder::default();
    let mut buf = vec![0u8; 64 * 1024];
    // What is there now: all of it, or its tail.
    let mut initial = Vec::new();
    file.read_to_end(&mut initial)?;
    let mut lines = Vec::new();
    dec.feed(&initial, &mut |l| lines.push(l));
    if !opts.follow {
        dec.finish(&mut |l| lines.push(l));
    }
    // A tail longer than the current file reaches back into the rotated ones, newest first.
    if let Some(n) = opts.tail {
        for older in crate::runtime::process::logfile::rotated_files(path).iter().rev() {
            if lines.len() >= n {
                break;
            }
            let Ok(bytes) = std::fs::read(older) else { continue };
            let mut earlier = Vec::new();
            LogDecoder::default().feed(&bytes, &mut |l| earlier.push(l));
            earlier.append(&mut lines);
            lines = earlier;
        }
    }
    let skip = opts.tail.map(|n| lines.len().saturating_sub(n)).unwrap_or(0);
    for l in lines.into_iter().skip(skip) {
        emit(l, &mut stopped);
    }
    if !opts.follow {
        return Ok(());
    }
    let mut idle_checks_done = false;
    while !stopped {
        let n = file.read(&mut buf)?;
        if n > 0 {
            idle_checks_done = false;
            dec.feed(&buf[..n], &mut |l| emit(l, &mut stopped));
            continue;
        }
        // At the end of the file: rotated away? Then go on with the new file.
        let current = file.metadata()?;
        if let Ok(on_disk) = std::fs::metadata(path) {
            if !same_file(&current, &on_disk) {
                // Anything written to the old file between our last read and the rename.
                let n = file.read(&mut buf)?;
                if n > 0 {
                    dec.feed(&buf[..n], &mut |l| emit(l, &mut stopped));
                    continue;
                }
                if let Ok(f) = File::open(path) {
                    file = f;
                    continue;
                }
            }
        }
        if idle_checks_done {
            dec.finish(&mut |l| emit(l, &mut stopped));
            return Ok(());
        }
        if !running().await {
            // One more pass for what the container wrote last.
            idle_checks_done = true;
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Truncated in place (copytruncate-style rotation): start over at the beginning.
        if file.stream_position()? > file.metadata()?.len() {
            file.seek(SeekFrom::Start(0))?;
        }
    }
    Ok(())
}

/// Parse `--since`: a duration in Go's grammar (10s, 1m30s, 2h; before now) or an RFC 3339 time.
pub fn parse_since(s: &str, now_ns: i64) -> Option<i64> {
    if let Some(t) = parse_rfc3339(s) {
        return Some(t);
    }
    let d = crate::util::duration::parse(s).ok()?;
    Some(now_ns - i64::try_from(d.as_nanos()).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rfc3339_like_the_log_writer_formats_it() {
        let ns = 1_475_713_029_669_794_202;
        assert_eq!(parse_rfc3339(&crate::runtime::process::logfile::rfc3339_nano(ns)), Some(ns));
        assert_eq!(parse_rfc3339("2016-10-06T00:17:09Z"), Some(1_475_713_029_000_000_000));
        assert_eq!(parse_rfc3339("2016-10-06T02:17:09.5+02:00"), Some(1_475_713_029_500_000_000));
        assert_eq!(parse_rfc3339("not a time"), None);
    }

    #[test]
    fn joins_partials_per_stream() {
        let mut d = LogDecoder::default();
        let mut out = Vec::new();
        d.feed(b"2016-10-06T00:17:09.1Z stdout P hel", &mut |l| out.push(l));
        d.feed(b"lo\n2016-10-06T00:17:09.2Z stderr F err\n2016-10-06T00:17:09.3Z stdout F  world\n", &mut |l| out.push(l));
        d.feed(b"garbage\n", &mut |l| out.push(l));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].stream, LogStream::Stderr);
        assert_eq!(out[0].content, b"err\n");
        assert_eq!(out[1].content, b"hello world\n");
        assert_eq!(out[1].timestamp, "2016-10-06T00:17:09.3Z");
        assert_eq!(out[1].render(true), b"2016-10-06T00:17:09.3Z hello world\n");
        d.feed(b"2016-10-06T00:17:09.4Z stdout P DO\n2016-10-06T00:17:09.5Z stdout P NE\n", &mut |l| out.push(l));
        assert_eq!(out.len(), 2, "partials wait for the rest of their line");
        d.finish(&mut |l| out.push(l));
        assert_eq!((out[2].content.as_slice(), out[2].timestamp.as_str()), (&b"DONE"[..], "2016-10-06T00:17:09.5Z"), "no newline added");
    }

    #[test]
    fn since_accepts_durations_and_times() {
        assert_eq!(parse_since("10s", 100_000_000_000), Some(90_000_000_000));
        assert_eq!(parse_since("2m", 200_000_000_000), Some(80_000_000_000));
        assert_eq!(parse_since("1m30s", 200_000_000_000), Some(110_000_000_000));
        assert_eq!(parse_since("1970-01-01T00:00:05Z", 0), Some(5_000_000_000));
        assert_eq!(parse_since("soon", 0), None);
    }

    #[tokio::test]
    async fn tail_limit_and_follow_across_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let line = |i: u32| format!("2016-10-06T00:17:09.{i:09}Z stdout F n{i}\n");
        std::fs::write(&path, (0..10).map(line).collect::<String>()).unwrap();
        let mut got = Vec::new();
        read_logs(
            &path,
            &LogOptions { tail: Some(3), ..Default::default() },
            |l| {
                got.push(String::from_utf8_lossy(&l.content).to_string());
                true
            },
            || async { false },
        )
        .await
        .unwrap();
        assert_eq!(got, vec!["n7\n", "n8\n", "n9\n"]);
        let mut n = 0;
        read_logs(
            &path,
            &LogOptions { limit_bytes: Some(7), ..Default::default() },
            |_| {
                n += 1;
                true
            },
            || async { false },
        )
        .await
        .unwrap();
        assert_eq!(n, 2);
        // Follow while a writer rotates the file twice.
        let p2 = path.clone();
        let writer = tokio::spawn(async move {
            use std::io::Write;
            for round in 1..=3u32 {
                let mut f = std::fs::OpenOptions::new().append(true).create(true).open(&p2).unwrap();
                for i in 0..10 {
                    f.write_all(line(round * 10 + i).as_bytes()).unwrap();
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                if round < 3 {
                    std::fs::rename(&p2, p2.with_extension(format!("log.{round}"))).unwrap();
                }
            }
        });
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let d2 = done.clone();
        let mut seen = Vec::new();
        let follow_opts = LogOptions { follow: true, ..Default::default() };
        let follow = read_logs(
            &path,
            &follow_opts,
            |l| {
                seen.push(String::from_utf8_lossy(&l.content).trim().to_string());
                true
            },
            move || {
                let d = d2.clone();
                async move { !d.load(std::sync::atomic::Ordering::SeqCst) }
            },
        );
        let stopper = async {
            writer.await.unwrap();
            tokio::time::sleep(Duration::from_millis(300)).await;
            done.store(true, std::sync::atomic::Ordering::SeqCst);
        };
        let (r, _) = tokio::join!(follow, stopper);
        r.unwrap();
        let want: Vec<String> = (0..40).map(|i| format!("n{i}")).collect();
        assert_eq!(seen, want);
    }
}
