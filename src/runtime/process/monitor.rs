//! The per-container monitor: `berth __monitor <state dir>`. It detaches from the daemon,
//! starts the container as its child, reports once the container runs, then holds the
//! container's stdio, writes the CRI log, reaps the container and records how it ended.
//! Single-threaded, no async runtime: it sits in poll(2) and costs little memory.
use super::attach_hub::{AttachHub, KIND_STDERR, KIND_STDOUT};
use super::console;
use super::logfile::{CriLog, LineSplitter};
use super::oom_watch::OomWatch;
use super::sync::{self, Context, Reporter, SetupError, SetupResult};
use crate::runtime::cgroups::{self, Cgroup, SelfJoin};
use crate::runtime::state::{self, ExitRecord, MonitorConfig, MonitorReport, PidNamespace, RunState};
use crate::util::atomic;
use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::Spec;
use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// After the container's process exits, how long to keep draining output that its
/// leftover children may still hold open.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

pub fn main(args: &[OsString]) -> i32 {
    let Some(dir) = args.first().map(PathBuf::from) else {
        eprintln!("usage: berth __monitor <state dir>");
        return 2;
    };
    let cfg: MonitorConfig = match state::read_json(&dir.join(state::MONITOR_CONFIG)) {
        Ok(c) => c,
        Err(e) => {
            report(&MonitorReport::failed(format!("reading monitor config: {e}")));
            return 1;
        }
    };
    // Detach: a new session, and the daemon's child exits at once so the daemon reaps it;
    // the monitor lives on as an orphan that outlives daemon restarts.
    let _ = nix::unistd::setsid();
    // SAFETY: this process is single-threaded (no runtime has started in it).
    match unsafe { fork() } {
        Ok(ForkResult::Parent { .. }) => return 0,
        Ok(ForkResult::Child) => {}
        Err(e) => {
            report(&MonitorReport::failed(format!("fork monitor: {e}")));
            return 1;
        }
    }
    match run(&cfg) {
        Ok(()) => 0,
        Err(e) => {
            report(&MonitorReport::failed(e.to_string()));
            1
        }
    }
}

/// One JSON line on stdout for the daemon, then stdout goes to /dev/null.
fn report(r: &MonitorReport) {
    let mut out = std::io::stdout();
    let _ = serde_json::to_writer(&mut out, r);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

/// The container's ends and the monitor's ends of its stdio.
struct Stdio {
    /// stdin, stdout, stderr of the container; None under a terminal, which the container
    /// makes itself (see `console`).
    child_fds: Option<[OwnedFd; 3]>,
    /// Readable ends the monitor logs: (stream name, fd).
    outputs: Vec<(&'static str, File)>,
    /// Kept open so the container's stdin stays open for attach.
    stdin_keep: Option<File>,
    /// Under a terminal: the monitor's and the container's ends of the console socket.
    console: Option<(OwnedFd, OwnedFd)>,
}

fn make_stdio(cfg: &MonitorConfig) -> SetupResult<Stdio> {
    if cfg.tty {
        return Ok(Stdio { child_fds: None, outputs: vec![], stdin_keep: None, console: Some(console::pair()?) });
    }
    let (out_r, out_w) = sync::pipe()?;
    let (err_r, err_w) = sync::pipe()?;
    let (child_in, keep) = if cfg.stdin {
        let (r, w) = sync::pipe()?;
        (OwnedFd::from(r), Some(w))
    } else {
        (OwnedFd::from(File::open("/dev/null").ctx(|| "open /dev/null".into())?), None)
    };
    Ok(Stdio { child_fds: Some([child_in, out_w.into(), err_w.into()]), outputs: vec![("stdout", out_r), ("stderr", err_r)], stdin_keep: keep, console: None })
}

fn run(cfg: &MonitorConfig) -> SetupResult<()> {
    let spec_path = cfg.bundle.join(state::SPEC_FILE);
    let spec = Spec::load(&spec_path).map_err(|e| SetupError::Invalid(format!("loading {}: {e}", spec_path.display())))?;
    let stdio = make_stdio(cfg)?;
    let mut log = CriLog::open(cfg.log_path.clone(), cfg.log_rotation).ctx(|| "opening the container log".into())?;
    match &cfg.pid_ns {
        PidNamespace::Own => unshare(CloneFlags::CLONE_NEWPID).ctx(|| "new PID namespace".into())?,
        PidNamespace::Join(p) => {
            let f = File::open(p).ctx(|| format!("open {}", p.display()))?;
            setns(&f, CloneFlags::CLONE_NEWPID).ctx(|| "join the pod's PID namespace".into())?;
        }
        PidNamespace::Host => {}
    }
    let mut signals = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGUSR1, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        signals.add(s);
    }
    signals.thread_block().ctx(|| "block signals".into())?;
    let sfd = SignalFd::with_flags(&signals, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).ctx(|| "signalfd".into())?;

    // On a v1 cgroupfs host the container moves itself into its cgroup, which is made and
    // limited first (see SelfJoin: no global lock); elsewhere the monitor moves it below.
    // (Usually the daemon has done both already, with the cgroup handle it keeps.)
    let resources = spec.linux().as_ref().and_then(|l| l.resources().clone());
    cgroups::adopt_v1_mounts(&cfg.cgroup_mounts);
    let self_join = cgroups::self_join(&cfg.cgroup, !cfg.cgroup_prepared).map_err(|e| SetupError::Invalid(e.to_string()))?;
    if let (Some(_), Some(res), false) = (&self_join, &resources, cfg.cgroup_prepared) {
        Cgroup::open(&cfg.cgroup).and_then(|cgroup| cgroup.apply(res)).map_err(|e| SetupError::Invalid(e.to_string()))?;
    }
    let (mut go_r, mut go_w) = sync::pipe()?;
    let (mut err_r, err_w) = sync::pipe()?;
    // SAFETY: single-threaded process; the child only runs setup code and execs.
    let child = match unsafe { fork() }.ctx(|| "fork container".into())? {
        ForkResult::Child => {
            drop(go_w);
            drop(err_r);
            let code = container_child(&spec, &stdio, self_join.as_ref(), &mut go_r, err_w);
            // SAFETY: leave without running destructors or atexit handlers of the monitor.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => child,
    };
    drop(go_r);
    drop(err_w);
    let Stdio { child_fds, mut outputs, stdin_keep, console } = stdio;
    drop(child_fds);
    let console = console.map(|(ours, theirs)| {
        drop(theirs);
        ours
    });
    let moved = match self_join {
        Some(join) => {
            drop(join);
            Ok(())
        }
        None => {
            Cgroup::open(&cfg.cgroup).and_then(|cgroup| cgroup.add(child.as_raw()).and_then(|()| resources.as_ref().map_or(Ok(()), |res| cgroup.apply(res))))
        }
    };
    if let Err(e) = moved {
        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
        let _ = waitpid(child, None);
        return Err(SetupError::Invalid(e.to_string()));
    }
    let mut oom = OomWatch::new(&cfg.cgroup);
    sync::send_byte(&mut go_w).ctx(|| "start the container".into())?;
    let setup = sync::read_report(&mut err_r);
    for w in &setup.warnings {
        eprintln!("warning: {w}");
    }
    if let Some(e) = setup.error {
        let _ = waitpid(child, None);
        return Err(SetupError::Invalid(e));
    }
    // Under a terminal the container has sent its pty master by now.
    if let Some(sock) = &console {
        match console::recv_master(sock) {
            Ok(master) => outputs.push(("stdout", File::from(master))),
            Err(e) => {
                let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                let _ = waitpid(child, None);
                return Err(e);
            }
        }
    }
    drop(console);
    // Attach clients write to the pipe's write end, or to the pty master under a terminal.
    let (attach_stdin, pty) = if cfg.tty {
        let master = outputs.first().map(|(_, f)| f);
        let stdin = if cfg.stdin { master.and_then(|f| f.try_clone().ok()) } else { None };
        (stdin, master.map(|f| f.as_raw_fd()))
    } else {
        (stdin_keep, None)
    };
    let me = std::process::id() as i32;
    let run = RunState {
        pid: child.as_raw(),
        pid_start_time: state::process_start_time(child.as_raw()).unwrap_or(0),
        monitor_pid: me,
        monitor_start_time: state::process_start_time(me).unwrap_or(0),
        started_at: state::now_ns(),
    };
    atomic::write_json_volatile(&cfg.state_dir.join(state::STATE_FILE), &run).ctx(|| "writing state.json".into())?;
    // The attach socket exists before StartContainer returns: an attach right after it
    // (kubectl run -it, crictl attach) finds it.
    let hub = AttachHub::new(&cfg.state_dir, attach_stdin, pty, cfg.stdin_once);
    report(&MonitorReport { state: Some(run), error: None, warnings: setup.warnings });
    let status = pump(child, outputs, hub, &sfd, &mut log, &mut oom);
    let (exit_code, signal) = match status {
        WaitStatus::Exited(_, code) => (code, None),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, Some(sig as i32)),
        _ => (255, None),
    };
    oom.read();
    let oom_killed = oom.kills() > 0 && signal == Some(libc::SIGKILL);
    let exit = ExitRecord { exit_code, signal, oom_killed, finished_at: state::now_ns() };
    atomic::write_json_volatile(&cfg.state_dir.join(state::EXIT_FILE), &exit).ctx(|| "writing exit.json".into())?;
    Ok(())
}

/// In the forked child: wire stdio, join the cgroup where the child does that itself, wait
/// for the go-ahead (in its cgroup either way), set up and exec.
fn container_child(spec: &Spec, stdio: &Stdio, self_join: Option<&SelfJoin>, go: &mut File, err_w: File) -> i32 {
    let mut rep = Reporter::new(err_w);
    let _ = SigSet::all().thread_unblock();
    let _ = nix::unistd::setsid();
    if let Some([i, o, e]) = &stdio.child_fds {
        let wired = nix::unistd::dup2_stdin(i.as_fd()).and_then(|_| nix::unistd::dup2_stdout(o.as_fd())).and_then(|_| nix::unistd::dup2_stderr(e.as_fd()));
        if let Err(e) = wired {
            rep.fail(&format!("wiring stdio: {e}"));
            return 127;
        }
    }
    let joined = self_join.map_or(Ok(()), SelfJoin::join);
    if !sync::wait_byte(go) {
        return 127;
    }
    if let Err(e) = joined {
        rep.fail(&format!("joining the container's cgroup: {e}"));
        return 127;
    }
    let console = stdio.console.as_ref().map(|(_, theirs)| theirs);
    match super::init::run(spec, console, &mut rep) {
        Ok(never) => match never {},
        Err(e) => {
            rep.fail(&e.to_string());
            127
        }
    }
}

/// Copy output into the log until the container has exited and its output is drained.
fn pump(child: Pid, mut outputs: Vec<(&'static str, File)>, mut hub: AttachHub, sfd: &SignalFd, log: &mut CriLog, oom: &mut OomWatch) -> WaitStatus {
    let mut splitters: Vec<LineSplitter> = outputs.iter().map(|_| LineSplitter::default()).collect();
    let mut open: Vec<bool> = outputs.iter().map(|_| true).collect();
    let mut status: Option<WaitStatus> = None;
    let mut exited_at: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let all_closed = open.iter().all(|o| !o);
        if let Some(at) = exited_at {
            if all_closed || at.elapsed() >= DRAIN_AFTER_EXIT {
                break;
            }
        }
        let mut fds: Vec<libc::pollfd> =
            outputs.iter().zip(&open).map(|((_, f), o)| libc::pollfd { fd: if *o { f.as_raw_fd() } else { -1 }, events: libc::POLLIN, revents: 0 }).collect();
        fds.push(libc::pollfd { fd: sfd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        let oom_at = fds.len();
        fds.push(libc::pollfd { fd: oom.fd().unwrap_or(-1), events: libc::POLLIN, revents: 0 });
        let hub_at = fds.len();
        hub.poll_fds(&mut fds);
        let timeout = if exited_at.is_some() { 100 } else { -1 };
        // SAFETY: fds is a valid array of pollfd for its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
        if n < 0 {
            continue;
        }
        for (i, pfd) in fds.iter().take(outputs.len()).enumerate() {
            if pfd.revents == 0 || !open[i] {
                continue;
            }
            let (stream, file) = &mut outputs[i];
            match file.read(&mut buf) {
                Ok(0) => open[i] = false,
                Ok(n) => {
                    hub.broadcast(if *stream == "stderr" { KIND_STDERR } else { KIND_STDOUT }, &buf[..n]);
                    splitters[i].feed(&buf[..n], &mut |p, c| log.write_entry(stream, p, c))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted || e.kind() == std::io::ErrorKind::WouldBlock => {}
                // A pty master reads EIO once every slave end is closed.
                Err(_) => open[i] = false,
            }
            if !open[i] {
                splitters[i].finish(&mut |p, c| log.write_entry(stream, p, c));
            }
        }
        hub.handle(&fds[hub_at..]);
        // Before reaping: the counter is read while the cgroup is still there.
        if fds[oom_at].revents != 0 {
            oom.changed();
        }
        while let Ok(Some(sig)) = sfd.read_signal() {
            match Signal::try_from(sig.ssi_signo as i32) {
                Ok(Signal::SIGUSR1) => {
                    if let Err(e) = log.reopen() {
                        eprintln!("reopening the log: {e}");
                    }
                }
                Ok(Signal::SIGCHLD) => {
                    oom.read();
                    reap(child, &mut status, &mut exited_at)
                }
                _ => {}
            }
        }
    }
    for (i, (stream, _)) in outputs.iter().enumerate() {
        splitters[i].finish(&mut |p, c| log.write_entry(stream, p, c));
    }
    status.unwrap_or(WaitStatus::Exited(child, 255))
}

fn reap(child: Pid, status: &mut Option<WaitStatus>, exited_at: &mut Option<Instant>) {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(ws) => {
                if ws.pid() == Some(child) {
                    *status = Some(ws);
                    *exited_at = Some(Instant::now());
                }
            }
        }
    }
}
