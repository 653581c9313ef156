//! Re-executing ourselves (container monitors, the sandbox helper, exec helpers) through
//! /proc/self/exe: it names the binary this process was started from even after a package
//! upgrade replaced or removed the file on disk, so a running daemon keeps starting helpers of
//! its own version until it is restarted.

/// The running binary, whatever happened to its path since.
pub const SELF_EXE: &str = "/proc/self/exe";

/// A command running this binary again; argv[0] is "berth", as `ps` should show it.
pub fn command() -> tokio::process::Command {
    let mut c = tokio::process::Command::new(SELF_EXE);
    c.arg0("berth");
    c
}
