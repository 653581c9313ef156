//! Files shared between the daemon and a container's monitor: what the monitor is told to
//! run (monitor.json), what it reports once the container runs (state.json) and how the
//! container ended (exit.json). All are written atomically.
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub const MONITOR_CONFIG: &str = "monitor.json";
pub const STATE_FILE: &str = "state.json";
pub const EXIT_FILE: &str = "exit.json";
pub const SPEC_FILE: &str = "config.json";

/// How the container's PID namespace is arranged.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PidNamespace {
    /// A new namespace: the container's process is PID 1.
    Own,
    /// The pod's shared namespace, pinned at this path.
    Join(PathBuf),
    /// The host's namespace.
    Host,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupSpec {
    pub path: String,
    pub systemd: bool,
}

/// What the daemon hands a monitor: everything it needs to run one container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorConfig {
    pub container_id: String,
    /// Directory holding the OCI runtime spec (config.json).
    pub bundle: PathBuf,
    /// Where state.json and exit.json go.
    pub state_dir: PathBuf,
    /// The CRI log file; None when the container has no log path.
    pub log_path: Option<PathBuf>,
    pub tty: bool,
    pub stdin: bool,
    pub stdin_once: bool,
    pub pid_ns: PidNamespace,
    pub cgroup: CgroupSpec,
    /// Size-based log rotation done by the monitor (off when max_size is 0).
    #[serde(default)]
    pub log_rotation: crate::runtime::process::logfile::Rotation,
    /// The daemon made the cgroup joinable and applied the spec's limits to it (v1 cgroupfs,
    /// where the container joins it by itself): the monitor has nothing to set up.
    #[serde(default)]
    pub cgroup_prepared: bool,
    /// Where the daemon found each v1 controller's hierarchy mounted: the monitor, a new
    /// process, takes them from here instead of reading the mount table again (hundreds of
    /// lines on a busy node). Empty on v2 and from older daemons (then it reads it).
    #[serde(default)]
    pub cgroup_mounts: std::collections::BTreeMap<String, PathBuf>,
}

/// Written by the monitor once the container's process has exec'd.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    pub pid: i32,
    /// Start time of `pid` in clock ticks since boot (/proc/PID/stat field 22): tells a
    /// live container from a recycled PID after a daemon restart.
    pub pid_start_time: u64,
    pub monitor_pid: i32,
    pub monitor_start_time: u64,
    /// Unix nanoseconds.
    pub started_at: i64,
}

/// Written by the monitor when the container's process has ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub oom_killed: bool,
    /// Unix nanoseconds.
    pub finished_at: i64,
}

/// The one line a monitor prints for the daemon: the running state, or why it failed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MonitorReport {
    pub state: Option<RunState>,
    pub error: Option<String>,
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl MonitorReport {
    pub fn failed(error: String) -> Self {
        MonitorReport { state: None, error: Some(error), warnings: vec![] }
    }
}

pub use crate::util::atomic::read_json;
pub use crate::util::time::now_ns;

/// Start time of a process in clock ticks since boot, None if it does not exist.
pub fn process_start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: fields resume after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether `pid` is still the process that had `start_time` (and not a zombie).
pub fn process_alive(pid: i32, start_time: u64) -> bool {
    if pid <= 0 {
        return false;
    }
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return false };
    let Some(close) = stat.rfind(')') else { return false };
    let mut fields = stat[close + 2..].split(' ');
    let state = fields.next().unwrap_or("");
    if state == "Z" || state == "X" {
        return false;
    }
    process_start_time(pid) == Some(start_time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_alive_and_start_time_checked() {
        let pid = std::process::id() as i32;
        let st = process_start_time(pid).expect("start time");
        assert!(process_alive(pid, st));
        assert!(!process_alive(pid, st + 1));
        assert!(!process_alive(-1, st));
    }
}
