//! `berth __exec <state dir> <process.json> <timeout secs>`: run one more process in a
//! running container: join its cgroup and namespaces, fork into its PID namespace, take on
//! the process's user and privileges and exec. Exits with the process's exit code (128+N
//! for signal N); on timeout the process group is killed and the exit code is 137.
use super::sync::{self, Context, Reporter, SetupError, SetupResult};
use crate::runtime::cgroups::{self, Cgroup};
use crate::runtime::state::{self, MonitorConfig, RunState};
use nix::sched::{setns, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{Process, Spec};
use std::ffi::OsString;
use std::fs::File;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Exit code when the process could not be started at all.
pub const EXIT_SETUP_FAILED: i32 = 126;
pub const EXIT_TIMEOUT: i32 = 137;

pub fn main(args: &[OsString]) -> i32 {
    if args.len() < 3 {
        eprintln!("usage: berth __exec <state dir> <process.json> <timeout secs>");
        return 2;
    }
    let dir = PathBuf::from(&args[0]);
    let process_file = PathBuf::from(&args[1]);
    let timeout: u64 = args[2].to_str().and_then(|s| s.parse().ok()).unwrap_or(0);
    match run(&dir, &process_file, timeout) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("berth exec: {e}");
            EXIT_SETUP_FAILED
        }
    }
}

fn run(dir: &std::path::Path, process_file: &std::path::Path, timeout: u64) -> SetupResult<i32> {
    let process: Process = state::read_json(process_file).ctx(|| format!("reading {}", process_file.display()))?;
    let _ = std::fs::remove_file(process_file);
    let cfg: MonitorConfig = state::read_json(&dir.join(state::MONITOR_CONFIG)).ctx(|| "reading monitor.json".into())?;
    let run: RunState = state::read_json(&dir.join(state::STATE_FILE)).ctx(|| "reading state.json".into())?;
    if !state::process_alive(run.pid, run.pid_start_time) {
        return Err(SetupError::Invalid("the container is not running".into()));
    }
    let spec = Spec::load(cfg.bundle.join(state::SPEC_FILE)).map_err(|e| SetupError::Invalid(format!("spec: {e}")))?;
    let seccomp = spec.linux().as_ref().and_then(|l| l.seccomp().clone());
    // This helper has one thread: it moves itself, which is cheap where the host allows it.
    match cgroups::self_join(&cfg.cgroup, false).map_err(|e| SetupError::Invalid(e.to_string()))? {
        Some(join) => join.join().map_err(|e| SetupError::Invalid(format!("joining the container's cgroup: {e}")))?,
        None => Cgroup::open(&cfg.cgroup).and_then(|cg| cg.add(std::process::id() as i32)).map_err(|e| SetupError::Invalid(e.to_string()))?,
    }
    // Open every namespace first: once in the container's mount namespace, /proc is its own.
    let mut namespaces = Vec::new();
    for (name, flag) in [
        ("ipc", CloneFlags::CLONE_NEWIPC),
        ("uts", CloneFlags::CLONE_NEWUTS),
        ("net", CloneFlags::CLONE_NEWNET),
        ("pid", CloneFlags::CLONE_NEWPID),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let path = format!("/proc/{}/ns/{name}", run.pid);
        namespaces.push((File::open(&path).ctx(|| format!("open {path}"))?, flag, name));
    }
    for (f, flag, name) in &namespaces {
        setns(f, *flag).ctx(|| format!("join the container's {name} namespace"))?;
    }
    drop(namespaces);
    let mut signals = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().ctx(|| "block signals".into())?;
    let (mut err_r, err_w) = sync::pipe()?;
    // SAFETY: single-threaded process.
    let child = match unsafe { fork() }.ctx(|| "fork".into())? {
        ForkResult::Child => {
            drop(err_r);
            let _ = SigSet::all().thread_unblock();
            // Its own process group, so a timeout can end everything it started; with a
            // terminal, its own session too, with the pty (our stdin) as controlling
            // terminal so Ctrl-C reaches it.
            let mut rep = Reporter::new(err_w);
            if process.terminal().unwrap_or(false) {
                let _ = nix::unistd::setsid();
                // SAFETY: TIOCSCTTY on our stdin, which is the pty slave when a terminal is asked for.
                unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
            } else {
                let _ = nix::unistd::setpgid(Pid::from_raw(0), Pid::from_raw(0));
            }
            let e = match super::init::finish_process(&process, seccomp.as_ref(), &mut rep) {
                Ok(never) => match never {},
                Err(e) => e,
            };
            rep.fail(&e.to_string());
            // SAFETY: leave the forked child without running the parent's destructors.
            unsafe { libc::_exit(EXIT_SETUP_FAILED) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(err_w);
    let report = sync::read_report(&mut err_r);
    for w in &report.warnings {
        eprintln!("berth exec: warning: {w}");
    }
    if let Some(e) = report.error {
        let _ = waitpid(child, None);
        return Err(SetupError::Invalid(e));
    }
    Ok(wait(child, &signals, timeout))
}

/// Wait for the child; kill its process group on timeout or when told to stop.
fn wait(child: Pid, signals: &SigSet, timeout: u64) -> i32 {
    let deadline = (timeout > 0).then(|| Instant::now() + Duration::from_secs(timeout));
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return code,
            Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
            Ok(_) => {}
            Err(_) => return 255,
        }
        let left = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left,
                None => return kill_group(child, EXIT_TIMEOUT),
            },
            None => Duration::from_secs(3600),
        };
        let ts = libc::timespec { tv_sec: left.as_secs() as libc::time_t, tv_nsec: left.subsec_nanos() as libc::c_long };
        // SAFETY: sigtimedwait with a valid set, no info wanted, and a valid timespec.
        let sig = unsafe { libc::sigtimedwait(signals.as_ref(), std::ptr::null_mut(), &ts) };
        if sig == libc::SIGTERM || sig == libc::SIGINT || sig == libc::SIGHUP {
            return kill_group(child, EXIT_TIMEOUT);
        }
    }
}

fn kill_group(child: Pid, code: i32) -> i32 {
    let _ = nix::sys::signal::killpg(child, Signal::SIGKILL);
    let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
    let _ = waitpid(child, None);
    code
}
