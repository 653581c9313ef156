//! Code that runs in Berth's re-executed helper processes: the container monitor, the pod
//! namespace creator and exec. They start before any async runtime or thread exists, so
//! fork() is safe in them.
pub mod attach_hub;
pub mod console;
pub mod exec;
pub mod init;
pub mod logfile;
pub mod monitor;
pub mod mounts;
pub mod oom_watch;
pub mod sandbox_init;
pub mod seccomp;
pub mod sync;

pub const MONITOR_ARG: &str = "__monitor";
pub const SANDBOX_INIT_ARG: &str = "__sandbox-init";
pub const EXEC_ARG: &str = "__exec";

/// If this process was started as one of the helpers, run it and return its exit code.
pub fn dispatch() -> Option<i32> {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let role = args.get(1).and_then(|a| a.to_str())?;
    match role {
        MONITOR_ARG => Some(monitor::main(&args[2..])),
        SANDBOX_INIT_ARG => Some(sandbox_init::main()),
        EXEC_ARG => Some(exec::main(&args[2..])),
        _ => None,
    }
}
