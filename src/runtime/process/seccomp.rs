//! Seccomp: Berth's RuntimeDefault profile (the policy Docker and containerd apply by
//! default), Localhost profiles in OCI or Docker form, and loading a profile with libseccomp.
use libseccomp::{ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
use oci_spec::runtime::LinuxSeccomp;
use serde_json::{json, Value};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("invalid profile JSON: {0}")]
    Json(String),
    #[error("unsupported action {0:?}")]
    Action(String),
    #[error("unsupported operator {0:?}")]
    Operator(String),
    #[error("libseccomp: {what}: {message}")]
    Library { what: String, message: String },
}

/// Syscalls every container may make.
const ALLOWED: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "io_uring_enter",
    "io_uring_register",
    "io_uring_setup",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listxattr",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_getfd",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
    "arch_prctl",
    "modify_ldt",
    "chroot",
    "socket",
];

/// Namespace-creating clone flags an unprivileged container may not use.
const CLONE_NS_FLAGS: u64 =
    (libc::CLONE_NEWNS | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC | libc::CLONE_NEWUSER | libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWCGROUP)
        as u64;

/// Syscalls allowed when the process holds a capability.
const BY_CAPABILITY: &[(&str, &[&str])] = &[
    (
        "CAP_SYS_ADMIN",
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
            "name_to_handle_at",
            "pivot_root",
        ],
    ),
    ("CAP_SYS_BOOT", &["reboot"]),
    ("CAP_SYS_CHROOT", &["chroot"]),
    ("CAP_SYS_MODULE", &["delete_module", "init_module", "finit_module"]),
    ("CAP_SYS_PACCT", &["acct"]),
    ("CAP_SYS_PTRACE", &["kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev", "ptrace"]),
    ("CAP_SYS_RAWIO", &["iopl", "ioperm"]),
    ("CAP_SYS_TIME", &["settimeofday", "stime", "clock_settime", "clock_settime64", "adjtimex", "clock_adjtime", "clock_adjtime64"]),
    ("CAP_SYS_TTY_CONFIG", &["vhangup"]),
    ("CAP_SYS_NICE", &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node", "move_pages"]),
    ("CAP_SYSLOG", &["syslog"]),
    ("CAP_BPF", &["bpf"]),
    ("CAP_PERFMON", &["perf_event_open"]),
];

fn native_arches() -> Vec<&'static str> {
    if cfg!(target_arch = "aarch64") {
        vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    } else {
        vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    }
}

/// RuntimeDefault for a process holding `caps` (names like "CAP_SYS_ADMIN").
pub fn runtime_default_for_caps(caps: &[&str]) -> LinuxSeccomp {
    let has = |c: &str| caps.contains(&c);
    let mut allowed: Vec<&str> = ALLOWED.to_vec();
    let mut syscalls = vec![];
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            allowed.extend(names.iter().copied());
        }
    }
    allowed.sort_unstable();
    allowed.dedup();
    syscalls.push(json!({"names": allowed, "action": "SCMP_ACT_ALLOW"}));
    for p in [0x0u64, 0x8, 0x20000, 0x20008, 0xffff_ffff] {
        syscalls.push(json!({"names": ["personality"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, "value": p, "op": "SCMP_CMP_EQ"}]}));
    }
    if !has("CAP_SYS_ADMIN") {
        // clone may not create namespaces; clone3 hides its flags in memory, so it reports
        // ENOSYS and libc falls back to clone.
        syscalls.push(json!({"names": ["clone"], "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}));
        syscalls.push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::ENOSYS}));
    }
    let v = json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": libc::EPERM, "architectures": native_arches(), "syscalls": syscalls});
    serde_json::from_value(v).unwrap_or_default()
}

pub fn runtime_default() -> LinuxSeccomp {
    runtime_default_for_caps(&[])
}

/// A Localhost profile: OCI form, or Docker form (archMap, includes/excludes by caps and arch).
pub fn parse_profile(json: &[u8], caps: &[&str]) -> Result<LinuxSeccomp, SeccompError> {
    let mut v: Value = serde_json::from_slice(json).map_err(|e| SeccompError::Json(e.to_string()))?;
    let obj = v.as_object_mut().ok_or_else(|| SeccompError::Json("the profile is not a JSON object".into()))?;
    let native = native_arches();
    if let Some(map) = obj.remove("archMap") {
        if !obj.contains_key("architectures") {
            let mut arches = vec![];
            for entry in map.as_array().into_iter().flatten() {
                let arch = entry["architecture"].as_str().unwrap_or_default();
                if native.first() == Some(&arch) {
                    arches.push(json!(arch));
                    arches.extend(entry["subArchitectures"].as_array().cloned().unwrap_or_default());
                }
            }
            obj.insert("architectures".into(), Value::Array(arches));
        }
    }
    if let Some(Value::Array(list)) = obj.get_mut("syscalls") {
        let arch = native[0];
        let short_arch = if arch == "SCMP_ARCH_AARCH64" { "arm64" } else { "amd64" };
        let applies = |rules: &Value| -> (bool, bool) {
            let caps_req: Vec<&str> = rules["caps"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
            let arches: Vec<&str> = rules["arches"].as_array().into_iter().flatten().filter_map(|c| c.as_str()).collect();
            let caps_any = caps_req.iter().any(|c| caps.contains(c));
            let caps_all = caps_req.iter().all(|c| caps.contains(c));
            let arch_ok = arches.iter().any(|a| *a == short_arch || *a == arch);
            (caps_all && (arches.is_empty() || arch_ok), (!caps_req.is_empty() && caps_any) || (!arches.is_empty() && arch_ok))
        };
        list.retain(|s| {
            let inc = s.get("includes").map(|r| applies(r).0).unwrap_or(true);
            let exc = s.get("excludes").map(|r| applies(r).1).unwrap_or(false);
            inc && !exc
        });
        for s in list.iter_mut() {
            if let Some(o) = s.as_object_mut() {
                o.remove("includes");
                o.remove("excludes");
                o.remove("comment");
            }
        }
    }
    for s in obj.get("syscalls").and_then(|s| s.as_array()).into_iter().flatten() {
        let action = s["action"].as_str().unwrap_or_default();
        ScmpAction::from_str(action, Some(1)).map_err(|_| SeccompError::Action(action.to_string()))?;
        for a in s["args"].as_array().into_iter().flatten() {
            let op = a["op"].as_str().unwrap_or_default();
            ScmpCompareOp::from_str(op).map_err(|_| SeccompError::Operator(op.to_string()))?;
        }
    }
    serde_json::from_value(v).map_err(|e| SeccompError::Json(e.to_string()))
}

fn lib(what: &str) -> impl Fn(libseccomp::error::SeccompError) -> SeccompError + '_ {
    move |e| SeccompError::Library { what: what.to_string(), message: e.to_string() }
}

fn action(name: &str, errno: Option<i64>, default_errno: i32) -> Result<ScmpAction, SeccompError> {
    if name == "SCMP_ACT_NOTIFY" {
        return Err(SeccompError::Action(name.into()));
    }
    let errno = errno.map(|e| e as i32).unwrap_or(default_errno);
    ScmpAction::from_str(name, Some(errno)).map_err(|_| SeccompError::Action(name.into()))
}

/// Build and load the filter. Called in a single-threaded process just before execve.
pub fn load(profile: &LinuxSeccomp) -> Result<(), SeccompError> {
    let v = serde_json::to_value(profile).map_err(|e| SeccompError::Json(e.to_string()))?;
    let default_errno = v["defaultErrnoRet"].as_i64().map(|e| e as i32).unwrap_or(libc::EPERM);
    let default_name = v["defaultAction"].as_str().unwrap_or("SCMP_ACT_ALLOW");
    let default = action(default_name, None, default_errno)?;
    let mut ctx = ScmpFilterContext::new(default).map_err(lib("creating the filter"))?;
    ctx.set_ctl_nnp(false).map_err(lib("no_new_privs attribute"))?;
    for a in v["architectures"].as_array().into_iter().flatten() {
        let name = a.as_str().unwrap_or_default();
        let arch = ScmpArch::from_str(name).map_err(lib(name))?;
        // "already exists" for the native arch is fine.
        let _ = ctx.add_arch(arch);
    }
    for s in v["syscalls"].as_array().into_iter().flatten() {
        let act_name = s["action"].as_str().unwrap_or_default();
        let act = action(act_name, s["errnoRet"].as_i64(), default_errno)?;
        if act_name == default_name && s["errnoRet"].as_i64().map(|e| e as i32).unwrap_or(default_errno) == default_errno {
            continue;
        }
        let mut conds = vec![];
        let mut indexes = vec![];
        for a in s["args"].as_array().into_iter().flatten() {
            let op_name = a["op"].as_str().unwrap_or_default();
            let value = a["value"].as_u64().unwrap_or(0);
            let value_two = a["valueTwo"].as_u64().unwrap_or(0);
            let index = a["index"].as_u64().unwrap_or(0) as u32;
            let (op, datum) = match ScmpCompareOp::from_str(op_name).map_err(|_| SeccompError::Operator(op_name.into()))? {
                ScmpCompareOp::MaskedEqual(_) => (ScmpCompareOp::MaskedEqual(value), value_two),
                other => (other, value),
            };
            conds.push(ScmpArgCompare::new(index, op, datum));
            indexes.push(index);
        }
        let same_index_twice = {
            let mut seen = std::collections::HashSet::new();
            indexes.iter().any(|i| !seen.insert(*i))
        };
        for name in s["names"].as_array().into_iter().flatten().filter_map(|n| n.as_str()) {
            let Ok(sys) = ScmpSyscall::from_name(name) else { continue };
            let r = if conds.is_empty() {
                ctx.add_rule(act, sys)
            } else if same_index_twice {
                // libseccomp cannot AND two conditions on one argument: one rule each (OR).
                conds.iter().try_for_each(|c| ctx.add_rule_conditional(act, sys, &[*c]).map(|_| ())).map(|_| &mut ctx)
            } else {
                ctx.add_rule_conditional(act, sys, &conds)
            };
            r.map_err(lib(name))?;
        }
    }
    ctx.load().map_err(lib("loading the filter"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(p: &LinuxSeccomp, action: &str) -> Vec<String> {
        let v = serde_json::to_value(p).unwrap();
        v["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["action"] == action)
            .flat_map(|s| s["names"].as_array().unwrap().iter().map(|n| n.as_str().unwrap().to_string()))
            .collect()
    }

    #[test]
    fn default_profile_allows_ordinary_and_refuses_privileged_calls() {
        let p = runtime_default();
        let allowed = names(&p, "SCMP_ACT_ALLOW");
        assert!(allowed.contains(&"read".to_string()));
        assert!(!allowed.contains(&"mount".to_string()));
        let admin = names(&runtime_default_for_caps(&["CAP_SYS_ADMIN"]), "SCMP_ACT_ALLOW");
        assert!(admin.contains(&"mount".to_string()));
    }

    #[test]
    fn parses_docker_form_with_caps() {
        let j = br#"{"defaultAction":"SCMP_ACT_ERRNO","archMap":[{"architecture":"SCMP_ARCH_X86_64","subArchitectures":["SCMP_ARCH_X86"]},{"architecture":"SCMP_ARCH_AARCH64","subArchitectures":[]}],
            "syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"},{"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#;
        let p = parse_profile(j, &[]).unwrap();
        assert_eq!(names(&p, "SCMP_ACT_ALLOW"), vec!["read"]);
        let p = parse_profile(j, &["CAP_SYS_ADMIN"]).unwrap();
        assert_eq!(names(&p, "SCMP_ACT_ALLOW"), vec!["read", "mount"]);
        assert!(parse_profile(br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["read"],"action":"SCMP_ACT_BOGUS"}]}"#, &[]).is_err());
    }

    fn in_child(f: fn() -> bool) -> bool {
        // SAFETY: the test child only makes syscalls and exits.
        match unsafe { libc::fork() } {
            0 => unsafe { libc::_exit(if f() { 0 } else { 1 }) },
            pid => {
                let mut status = 0;
                unsafe { libc::waitpid(pid, &mut status, 0) };
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
            }
        }
    }

    #[test]
    fn loaded_profiles_block_syscalls() {
        assert!(in_child(|| {
            let p =
                parse_profile(br#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#, &[])
                    .unwrap();
            if load(&p).is_err() {
                return false;
            }
            let path = std::ffi::CString::new(format!("/tmp/berth-seccomp-test-{}", std::process::id())).unwrap();
            let rc = unsafe { libc::mkdir(path.as_ptr(), 0o700) };
            let errno = std::io::Error::last_os_error().raw_os_error();
            if rc == 0 {
                unsafe { libc::rmdir(path.as_ptr()) };
            }
            rc != 0 && errno == Some(libc::EPERM)
        }));
        assert!(in_child(|| {
            if load(&runtime_default()).is_err() {
                return false;
            }
            let pid_ok = unsafe { libc::getpid() } > 0;
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNS) };
            pid_ok && rc != 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }));
    }
}
