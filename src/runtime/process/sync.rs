//! Pipes between a helper process and the children it forks: a go-ahead byte, and an
//! error channel that closes on a successful exec (close-on-exec) or carries a message.
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{what}: {source}")]
    Sys { what: String, source: nix::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("{0}")]
    Invalid(String),
}

pub type SetupResult<T> = Result<T, SetupError>;

/// Attach a description to a syscall error.
pub trait Context<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> SetupResult<T>;
}

impl<T> Context<T> for nix::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> SetupResult<T> {
        self.map_err(|source| SetupError::Sys { what: what(), source })
    }
}

impl<T> Context<T> for std::io::Result<T> {
    fn ctx(self, what: impl FnOnce() -> String) -> SetupResult<T> {
        self.map_err(|source| SetupError::Io { what: what(), source })
    }
}

/// A close-on-exec pipe: (read end, write end).
pub fn pipe() -> SetupResult<(File, File)> {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-element array for pipe2 to fill.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    if rc != 0 {
        return Err(SetupError::Io { what: "pipe2".into(), source: std::io::Error::last_os_error() });
    }
    // SAFETY: pipe2 succeeded, both fds are open and owned by nobody else.
    unsafe { Ok((File::from(OwnedFd::from_raw_fd(fds[0])), File::from(OwnedFd::from_raw_fd(fds[1])))) }
}

/// Block until the other side writes a byte (true) or closes the pipe (false).
pub fn wait_byte(r: &mut File) -> bool {
    let mut b = [0u8; 1];
    loop {
        match r.read(&mut b) {
            Ok(1) => return true,
            Ok(_) => return false,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

pub fn send_byte(w: &mut File) -> std::io::Result<()> {
    w.write_all(b"G")
}

/// Messages a container's setup sends up its error pipe: warnings (non-fatal) and a final error.
pub struct Reporter {
    pipe: File,
}

impl Reporter {
    pub fn new(pipe: File) -> Self {
        Reporter { pipe }
    }
    pub fn warn(&mut self, msg: &str) {
        let _ = self.pipe.write_all(format!("W {}\n", msg.replace('\n', " ")).as_bytes());
    }
    pub fn fail(&mut self, msg: &str) {
        let _ = self.pipe.write_all(format!("E {}\n", msg.replace('\n', " ")).as_bytes());
    }
}

/// What came up an error pipe once it closed: warnings, and the error if setup failed.
#[derive(Debug, Default)]
pub struct SetupReport {
    pub warnings: Vec<String>,
    pub error: Option<String>,
}

pub fn read_report(r: &mut File) -> SetupReport {
    let mut text = String::new();
    let _ = r.read_to_string(&mut text);
    let mut report = SetupReport::default();
    for line in text.lines() {
        if let Some(w) = line.strip_prefix("W ") {
            report.warnings.push(w.to_string());
        } else if let Some(e) = line.strip_prefix("E ") {
            report.error = Some(e.to_string());
        }
    }
    report
}
