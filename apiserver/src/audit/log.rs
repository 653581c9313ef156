//! The audit log file: lines handed to a thread of its own, which appends them (flushing after
//! each batch) and rotates the file when it outgrows its size limit: the full file is renamed to
//! `<name>-<UTC time>.<ext>` and the oldest such files beyond the backup limit are removed, as
//! upstream's log rotation names them. `-` writes to standard output.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

/// The sending end; the writer thread ends when it is dropped.
pub struct LogWriter {
    tx: mpsc::Sender<String>,
}

enum Sink {
    Stdout,
    File { path: PathBuf, file: File, size: u64, max_bytes: u64, max_backups: usize },
}

impl LogWriter {
    pub fn open(path: &Path, max_size_mb: u64, max_backups: usize) -> std::io::Result<LogWriter> {
        let sink = if path == Path::new("-") {
            Sink::Stdout
        } else {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            let file = OpenOptions::new().create(true).append(true).open(path)?;
            let size = file.metadata()?.len();
            Sink::File { path: path.to_path_buf(), file, size, max_bytes: max_size_mb * 1024 * 1024, max_backups }
        };
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::Builder::new().name("audit-log".into()).spawn(move || run(sink, rx))?;
        Ok(LogWriter { tx })
    }

    /// Queues one line.
    pub fn line(&self, line: String) {
        let _ = self.tx.send(line);
    }
}

fn run(mut sink: Sink, rx: mpsc::Receiver<String>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        if let Err(e) = sink.write(&batch) {
            tracing::error!(error = %e, "writing the audit log");
        }
    }
}

impl Sink {
    fn write(&mut self, lines: &[String]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                for l in lines {
                    writeln!(out, "{l}")?;
                }
                out.flush()
            }
            Sink::File { path, file, size, max_bytes, max_backups } => {
                for l in lines {
                    if *max_bytes > 0 && *size > 0 && *size + l.len() as u64 + 1 > *max_bytes {
                        rotate(path, *max_backups)?;
                        *file = OpenOptions::new().create(true).append(true).open(&*path)?;
                        *size = 0;
                    }
                    writeln!(file, "{l}")?;
                    *size += l.len() as u64 + 1;
                }
                file.flush()
            }
        }
    }
}

/// Renames the full log aside and removes the oldest backups beyond `keep` (0: keep all).
fn rotate(path: &Path, keep: usize) -> std::io::Result<()> {
    let stem = path.file_stem().map(|s| s.to_string_lossy().to_string()).unwrap_or_default();
    let ext = path.extension().map(|e| format!(".{}", e.to_string_lossy())).unwrap_or_default();
    let stamp = jiff::Timestamp::now().strftime("%Y-%m-%dT%H-%M-%S%.3f").to_string();
    let backup = path.with_file_name(format!("{stem}-{stamp}{ext}"));
    std::fs::rename(path, &backup)?;
    if keep == 0 {
        return Ok(());
    }
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let prefix = format!("{stem}-");
    let mut backups: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with(&prefix) && n.to_string_lossy().ends_with(&ext)))
        .collect();
    backups.sort();
    while backups.len() > keep {
        let old = backups.remove(0);
        std::fs::remove_file(old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_appended_and_the_file_rotates_at_its_limit() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("audit.log");
        let mut sink = Sink::File {
            path: path.clone(),
            file: OpenOptions::new().create(true).append(true).open(&path).expect("open"),
            size: 0,
            max_bytes: 100,
            max_backups: 1,
        };
        let line = "x".repeat(60);
        sink.write(std::slice::from_ref(&line)).expect("write");
        sink.write(std::slice::from_ref(&line)).expect("write");
        sink.write(std::slice::from_ref(&line)).expect("write");
        let names: Vec<String> = std::fs::read_dir(dir.path()).expect("dir").map(|e| e.expect("entry").file_name().to_string_lossy().to_string()).collect();
        assert_eq!(names.len(), 2, "the log and one backup: {names:?}");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), format!("{line}\n"));
    }
}
