//! `berth __sandbox-init`: creates a pod's namespaces. It unshares the requested ones, sets
//! the hostname, brings loopback up and writes the sysctls, then reports its PID so the daemon
//! can bind-mount the namespace files. When the pod shares one PID namespace it forks the
//! namespace's PID 1, a reaper that lives as long as the pod.
use super::sync::{Context, SetupError, SetupResult};
use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fork, ForkResult};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxInitConfig {
    pub new_net: bool,
    pub new_ipc: bool,
    pub new_uts: bool,
    pub new_pid: bool,
    pub hostname: Option<String>,
    pub sysctls: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SandboxInitReport {
    pub pid: i32,
    /// PID 1 of the pod's PID namespace (host view), 0 without one.
    pub init_pid: i32,
    pub error: Option<String>,
}

fn say(r: &SandboxInitReport) {
    let mut out = std::io::stdout();
    let _ = serde_json::to_writer(&mut out, r);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

pub fn main() -> i32 {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
        say(&SandboxInitReport { error: Some(format!("reading config: {e}")), ..Default::default() });
        return 1;
    }
    let cfg: SandboxInitConfig = match serde_json::from_str(&line) {
        Ok(c) => c,
        Err(e) => {
            say(&SandboxInitReport { error: Some(format!("bad config: {e}")), ..Default::default() });
            return 1;
        }
    };
    match setup(&cfg) {
        Ok(init_pid) => {
            say(&SandboxInitReport { pid: std::process::id() as i32, init_pid, error: None });
            // Stay until the daemon has pinned the namespaces (a byte or EOF on stdin).
            let mut b = [0u8; 1];
            let _ = std::io::stdin().read(&mut b);
            0
        }
        Err(e) => {
            say(&SandboxInitReport { error: Some(e.to_string()), ..Default::default() });
            1
        }
    }
}

fn setup(cfg: &SandboxInitConfig) -> SetupResult<i32> {
    enter_new_namespaces(cfg)?;
    if !cfg.new_pid {
        return Ok(0);
    }
    unshare(CloneFlags::CLONE_NEWPID).ctx(|| "new PID namespace".into())?;
    // SAFETY: single-threaded process.
    match unsafe { fork() }.ctx(|| "fork the pod's init".into())? {
        ForkResult::Parent { child } => Ok(child.as_raw()),
        ForkResult::Child => {
            pod_init();
            // SAFETY: leave without the parent's destructors.
            unsafe { libc::_exit(0) }
        }
    }
}

/// Without a shared PID namespace no process is needed: a short-lived thread of the daemon
/// makes the namespaces, pins them on the files under `ns_dir` and ends. Namespaces are
/// per thread for net, ipc and uts, so the rest of the daemon is untouched.
pub fn pin_from_thread(cfg: &SandboxInitConfig, ns_dir: &std::path::Path) -> SetupResult<()> {
    enter_new_namespaces(cfg)?;
    for (name, wanted) in [("net", cfg.new_net), ("ipc", cfg.new_ipc), ("uts", cfg.new_uts)] {
        if !wanted {
            continue;
        }
        let target = ns_dir.join(name);
        std::fs::File::create(&target).ctx(|| format!("creating {}", target.display()))?;
        let src = format!("/proc/thread-self/ns/{name}");
        nix::mount::mount(Some(src.as_str()), &target, None::<&str>, nix::mount::MsFlags::MS_BIND, None::<&str>)
            .ctx(|| format!("pinning the {name} namespace"))?;
    }
    Ok(())
}

/// Unshare net/ipc/uts as asked, then hostname, loopback and sysctls inside them.
fn enter_new_namespaces(cfg: &SandboxInitConfig) -> SetupResult<()> {
    let mut flags = CloneFlags::empty();
    if cfg.new_net {
        flags |= CloneFlags::CLONE_NEWNET;
    }
    if cfg.new_ipc {
        flags |= CloneFlags::CLONE_NEWIPC;
    }
    if cfg.new_uts {
        flags |= CloneFlags::CLONE_NEWUTS;
    }
    unshare(flags).ctx(|| format!("unshare {flags:?}"))?;
    if cfg.new_uts {
        if let Some(h) = &cfg.hostname {
            nix::unistd::sethostname(h).ctx(|| format!("sethostname {h}"))?;
        }
    }
    if cfg.new_net {
        loopback_up()?;
    }
    for (key, value) in &cfg.sysctls {
        // /proc/sys/net and the IPC sysctls resolve to the namespaces of the writing task.
        let path = std::path::PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).ctx(|| format!("sysctl {key}={value}"))?;
    }
    Ok(())
}

/// Bring `lo` up with SIOCSIFFLAGS on a socket of the current network namespace.
fn loopback_up() -> SetupResult<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq with a NUL-terminated name.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return Err(SetupError::Io { what: "socket".into(), source: std::io::Error::last_os_error() });
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let mut rc = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut ifr);
        if rc == 0 {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            rc = libc::ioctl(sock, libc::SIOCSIFFLAGS, &ifr);
        }
        let err = std::io::Error::last_os_error();
        libc::close(sock);
        if rc != 0 {
            return Err(SetupError::Io { what: "bring lo up".into(), source: err });
        }
    }
    Ok(())
}

extern "C" fn ignore(_: libc::c_int) {}

/// PID 1 of a shared pod PID namespace: reap every orphan until told to stop.
fn pod_init() {
    let _ = nix::unistd::setsid();
    if let Ok(null) = std::fs::File::options().read(true).write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
        let _ = nix::unistd::dup2_stderr(&null);
    }
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT] {
        set.add(s);
        // PID 1 only receives signals it has a handler for.
        let act = SigAction::new(SigHandler::Handler(ignore), SaFlags::empty(), SigSet::empty());
        // SAFETY: installing a handler that does nothing.
        let _ = unsafe { sigaction(s, &act) };
    }
    let _ = set.thread_block();
    loop {
        match set.wait() {
            Ok(Signal::SIGCHLD) => {
                while let Ok(ws) = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(-1), Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
                    if ws == nix::sys::wait::WaitStatus::StillAlive {
                        break;
                    }
                }
            }
            Ok(_) => return,
            Err(_) => {}
        }
    }
}
