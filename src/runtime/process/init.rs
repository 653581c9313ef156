//! The container's first process, between fork and execve: join the pod's namespaces, build
//! the filesystem, then become the configured user with the configured privileges and exec.
//! `finish_process` is shared with exec'd processes (same user, capabilities, seccomp).
use super::mounts;
use super::sync::{Context, Reporter, SetupError, SetupResult};
use caps::{CapSet, Capability, CapsHashSet};
use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, PosixRlimitType, Process, Spec};
use std::convert::Infallible;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub fn ns_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(0x80), // CLONE_NEWTIME
    }
}

/// Run the container's setup and exec its process. Returns only on failure.
/// Under a terminal, `console` is where the pty master goes once the container's devpts is up.
pub fn run(spec: &Spec, console: Option<&std::os::fd::OwnedFd>, rep: &mut Reporter) -> SetupResult<Infallible> {
    let linux = spec.linux().clone().unwrap_or_default();
    // Join the pod's namespaces (the PID namespace was arranged by the monitor before fork).
    let mut new_ns = CloneFlags::empty();
    for ns in linux.namespaces().iter().flatten() {
        if ns.typ() == LinuxNamespaceType::Pid {
            continue;
        }
        match ns.path() {
            Some(path) => {
                let f = std::fs::File::open(path).ctx(|| format!("open namespace {}", path.display()))?;
                setns(&f, ns_flag(ns.typ())).ctx(|| format!("join namespace {}", path.display()))?;
            }
            None => new_ns |= ns_flag(ns.typ()),
        }
    }
    unshare(new_ns | CloneFlags::CLONE_NEWNS).ctx(|| format!("unshare {new_ns:?}"))?;
    if new_ns.contains(CloneFlags::CLONE_NEWUTS) {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).ctx(|| "sethostname".into())?;
        }
    }
    let rootfs = spec.root().as_ref().map(|r| r.path().clone()).ok_or_else(|| SetupError::Invalid("the spec has no root".into()))?;
    mounts::prepare_rootfs(spec, &rootfs, rep)?;
    if let Some(c) = console {
        super::console::setup_in_container(c)?;
    }
    for (key, value) in linux.sysctl().iter().flatten() {
        let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).ctx(|| format!("sysctl {key}={value}"))?;
    }
    let process = spec.process().clone().ok_or_else(|| SetupError::Invalid("the spec has no process".into()))?;
    finish_process(&process, linux.seccomp().as_ref(), rep)
}

/// Limits, user, capabilities, no_new_privs, seccomp, working directory, then execve.
pub fn finish_process(process: &Process, seccomp: Option<&LinuxSeccomp>, rep: &mut Reporter) -> SetupResult<Infallible> {
    for rl in process.rlimits().iter().flatten() {
        set_rlimit(rl.typ(), rl.soft(), rl.hard(), rep)?;
    }
    if let Some(adj) = process.oom_score_adj() {
        if let Err(e) = std::fs::write("/proc/self/oom_score_adj", adj.to_string()) {
            rep.warn(&format!("setting oom_score_adj to {adj}: {e} (continuing without it)"));
        }
    }
    let cwd = process.cwd();
    nix::unistd::chdir(cwd.as_path()).ctx(|| format!("chdir to working dir {}", cwd.display()))?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while still root.
    if !nnp {
        if let Some(profile) = seccomp {
            super::seccomp::load(profile).map_err(|e| SetupError::Invalid(format!("seccomp: {e}")))?;
        }
    }
    switch_user(process)?;
    if nnp {
        nix::sys::prctl::set_no_new_privs().ctx(|| "set no_new_privs".into())?;
        if let Some(profile) = seccomp {
            super::seccomp::load(profile).map_err(|e| SetupError::Invalid(format!("seccomp: {e}")))?;
        }
    }
    exec(process)
}

fn set_rlimit(typ: PosixRlimitType, soft: u64, hard: u64, rep: &mut Reporter) -> SetupResult<()> {
    let resource = rlimit_resource(typ);
    let lim = libc::rlimit { rlim_cur: soft, rlim_max: hard };
    // SAFETY: setrlimit reads a valid rlimit struct.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EPERM) {
            // Raising a hard limit needs CAP_SYS_RESOURCE; keep the current hard limit.
            let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            // SAFETY: getrlimit fills a valid rlimit struct.
            unsafe { libc::getrlimit(resource, &mut cur) };
            let lowered = libc::rlimit { rlim_cur: soft.min(cur.rlim_max), rlim_max: hard.min(cur.rlim_max) };
            // SAFETY: as above.
            unsafe { libc::setrlimit(resource, &lowered) };
            rep.warn(&format!("rlimit {typ:?} {soft}/{hard}: {e}; capped at the current hard limit {}", cur.rlim_max));
            return Ok(());
        }
        return Err(SetupError::Io { what: format!("setrlimit {typ:?}"), source: e });
    }
    Ok(())
}

fn rlimit_resource(t: PosixRlimitType) -> libc::__rlimit_resource_t {
    use PosixRlimitType::*;
    (match t {
        RlimitCpu => libc::RLIMIT_CPU,
        RlimitFsize => libc::RLIMIT_FSIZE,
        RlimitData => libc::RLIMIT_DATA,
        RlimitStack => libc::RLIMIT_STACK,
        RlimitCore => libc::RLIMIT_CORE,
        RlimitRss => libc::RLIMIT_RSS,
        RlimitNproc => libc::RLIMIT_NPROC,
        RlimitNofile => libc::RLIMIT_NOFILE,
        RlimitMemlock => libc::RLIMIT_MEMLOCK,
        RlimitAs => libc::RLIMIT_AS,
        RlimitLocks => libc::RLIMIT_LOCKS,
        RlimitSigpending => libc::RLIMIT_SIGPENDING,
        RlimitMsgqueue => libc::RLIMIT_MSGQUEUE,
        RlimitNice => libc::RLIMIT_NICE,
        RlimitRtprio => libc::RLIMIT_RTPRIO,
        RlimitRttime => libc::RLIMIT_RTTIME,
    }) as libc::__rlimit_resource_t
}

fn cap_set(names: Option<&std::collections::HashSet<oci_spec::runtime::Capability>>) -> CapsHashSet {
    names
        .into_iter()
        .flatten()
        .filter_map(|c| serde_json::to_value(c).ok())
        .filter_map(|v| v.as_str().and_then(|name| Capability::from_str(name).ok()))
        .collect()
}

fn switch_user(process: &Process) -> SetupResult<()> {
    let user = process.user();
    let caps = process.capabilities().clone().unwrap_or_default();
    let bounding = cap_set(caps.bounding().as_ref());
    for cap in caps::all() {
        if !bounding.contains(&cap) {
            // Capabilities the kernel does not know fail with EINVAL: nothing to drop.
            let _ = caps::drop(None, CapSet::Bounding, cap);
        }
    }
    if let Some(mask) = user.umask() {
        nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(mask));
    }
    let groups: Vec<libc::gid_t> = user.additional_gids().clone().unwrap_or_default();
    // SAFETY: setgroups reads `groups.len()` gids from a valid slice.
    if unsafe { libc::setgroups(groups.len(), groups.as_ptr()) } != 0 {
        return Err(SetupError::Io { what: "setgroups".into(), source: std::io::Error::last_os_error() });
    }
    nix::sys::prctl::set_keepcaps(true).ctx(|| "keep capabilities across setuid".into())?;
    let gid = nix::unistd::Gid::from_raw(user.gid());
    let uid = nix::unistd::Uid::from_raw(user.uid());
    nix::unistd::setresgid(gid, gid, gid).ctx(|| format!("setgid {}", user.gid()))?;
    nix::unistd::setresuid(uid, uid, uid).ctx(|| format!("setuid {}", user.uid()))?;
    nix::sys::prctl::set_keepcaps(false).ctx(|| "clear keepcaps".into())?;
    let set = |set: CapSet, v: &CapsHashSet, name: &str| caps::set(None, set, v).map_err(|e| SetupError::Invalid(format!("set {name} capabilities: {e}")));
    // Only what this process holds can be kept (the host may withhold some, e.g.
    // CAP_SYS_RESOURCE); shrink effective before permitted so it always stays a subset.
    let held = caps::read(None, CapSet::Permitted).unwrap_or_default();
    let keep = |v: CapsHashSet| -> CapsHashSet { v.intersection(&held).copied().collect() };
    set(CapSet::Effective, &keep(cap_set(caps.effective().as_ref())), "effective")?;
    set(CapSet::Permitted, &keep(cap_set(caps.permitted().as_ref())), "permitted")?;
    set(CapSet::Inheritable, &keep(cap_set(caps.inheritable().as_ref())), "inheritable")?;
    for cap in cap_set(caps.ambient().as_ref()) {
        let _ = caps::raise(None, CapSet::Ambient, cap);
    }
    Ok(())
}

/// Find the program like execvp does, but with the container's PATH.
pub fn find_program(arg0: &str, env: &[String]) -> Option<PathBuf> {
    if arg0.contains('/') {
        return Some(PathBuf::from(arg0));
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH=")).unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':').map(|dir| Path::new(dir).join(arg0)).find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0).unwrap_or(false)
}

fn cstrings(v: &[String]) -> SetupResult<Vec<CString>> {
    v.iter().map(|s| CString::new(s.as_bytes()).map_err(|_| SetupError::Invalid(format!("NUL byte in {s:?}")))).collect()
}

fn exec(process: &Process) -> SetupResult<Infallible> {
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let arg0 = args.first().ok_or_else(|| SetupError::Invalid("no command to run".into()))?;
    let program = find_program(arg0, &env).ok_or_else(|| SetupError::Invalid(format!("exec: \"{arg0}\": executable file not found in $PATH")))?;
    let program_c = CString::new(program.as_os_str().as_encoded_bytes()).map_err(|_| SetupError::Invalid("NUL byte in program path".into()))?;
    let argv = cstrings(&args)?;
    let envp = cstrings(&env)?;
    match nix::unistd::execve(&program_c, &argv, &envp) {
        Err(e) => Err(SetupError::Sys { what: format!("exec {}", program.display()), source: e }),
        Ok(never) => match never {},
    }
}
