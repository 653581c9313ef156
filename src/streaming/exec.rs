//! Exec sessions: a process started in a running container by `berth __exec`, with its
//! stdio on pipes or on a real pseudo-terminal whose master end stays in the daemon.
use super::remotecommand::{CommandIo, Outcome, TermSize};
use crate::runtime::container::ExecStdio;
use crate::runtime::Runtime;
use bytes::Bytes;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// After the process exits, how long output still held by its leftovers is forwarded.
const DRAIN: Duration = Duration::from_secs(1);
/// End-of-transmission: what a terminal's line discipline turns into end of file.
const EOT: u8 = 0x04;

/// Run `cmd` in the container; returns once it has exited and its output is forwarded.
pub async fn run(rt: &Runtime, container_id: &str, cmd: Vec<String>, tty: bool, io: CommandIo) -> Outcome {
    let rec = match rt.container(container_id) {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    if tty {
        let pid = rt.observe(&rec).run.map(|r| r.pid);
        let (master, slave) = match open_pty(pid) {
            Ok(p) => p,
            Err(e) => return Outcome::Failed(format!("allocating a terminal: {e}")),
        };
        let child = match rt.spawn_exec(&rec, cmd, ExecStdio::Terminal(slave), 0) {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        run_tty(child, master, io).await
    } else {
        let child = match rt.spawn_exec(&rec, cmd, ExecStdio::Piped { stdin: io.stdin.is_some() }, 0) {
            Ok(c) => c,
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        run_piped(child, io).await
    }
}

/// Wait for the helper; if the client leaves first, tell the helper to end the process.
async fn wait_child(child: &mut tokio::process::Child, gone: &tokio_util::sync::CancellationToken) -> i32 {
    let status = tokio::select! {
        s = child.wait() => s,
        _ = gone.cancelled() => {
            if let Some(pid) = child.id() {
                let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
            }
            child.wait().await
        }
    };
    status.ok().and_then(|s| s.code()).unwrap_or(255)
}

async fn run_piped(mut child: tokio::process::Child, io: CommandIo) -> Outcome {
    let CommandIo { stdin, stdout, stderr, resize: _, gone } = io;
    let stdin_task = match (child.stdin.take(), stdin) {
        (Some(mut pipe), Some(mut rx)) => Some(tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if pipe.write_all(&b).await.is_err() {
                    break;
                }
            }
            // Dropping the pipe is the process's end of input.
        })),
        _ => None,
    };
    let out = child.stdout.take().map(|p| tokio::spawn(copy_out(p, stdout)));
    let err = child.stderr.take().map(|p| tokio::spawn(copy_out(p, stderr)));
    let code = wait_child(&mut child, &gone).await;
    for t in [out, err].into_iter().flatten() {
        let abort = t.abort_handle();
        if tokio::time::timeout(DRAIN, t).await.is_err() {
            abort.abort();
        }
    }
    if let Some(t) = stdin_task {
        t.abort();
    }
    Outcome::Exited(code)
}

/// Forward a pipe to the client; keep reading after the client is gone so the process
/// never blocks on a full pipe.
async fn copy_out<R: AsyncRead + Unpin>(mut pipe: R, mut to: Option<mpsc::Sender<Bytes>>) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Some(tx) = &to {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        to = None;
                    }
                }
            }
        }
    }
}

async fn run_tty(mut child: tokio::process::Child, master: OwnedFd, io: CommandIo) -> Outcome {
    let CommandIo { stdin, stdout, stderr: _, resize, gone } = io;
    // SAFETY: an OwnedFd always returns the descriptor it owns, which stays open until dropped.
    let master = match unsafe { AsyncFd::register(master) } {
        Ok(m) => std::sync::Arc::new(m),
        Err(e) => {
            let e = e.to_string();
            let _ = child.start_kill();
            return Outcome::Failed(format!("terminal: {e}"));
        }
    };
    let resize_task = resize.map(|mut rx| {
        let m = master.clone();
        tokio::spawn(async move {
            while let Some(sz) = rx.recv().await {
                set_size(m.get_ref().as_raw_fd(), sz);
            }
        })
    });
    let stdin_task = stdin.map(|mut rx| {
        let m = master.clone();
        tokio::spawn(async move {
            while let Some(b) = rx.recv().await {
                if write_all(&m, &b).await.is_err() {
                    return;
                }
            }
            // The client's input ended: the terminal's end-of-file character.
            let _ = write_all(&m, &[EOT]).await;
        })
    });
    let out = {
        let m = master.clone();
        tokio::spawn(async move {
            let mut to = stdout;
            let mut buf = vec![0u8; 32 * 1024];
            // A pty master reads EIO once every slave end is closed.
            while let Ok(n) = read(&m, &mut buf).await {
                if n == 0 {
                    break;
                }
                if let Some(tx) = &to {
                    if tx.send(Bytes::copy_from_slice(&buf[..n])).await.is_err() {
                        to = None;
                    }
                }
            }
        })
    };
    let code = wait_child(&mut child, &gone).await;
    let abort = out.abort_handle();
    if tokio::time::timeout(DRAIN, out).await.is_err() {
        abort.abort();
    }
    for t in [stdin_task, resize_task].into_iter().flatten() {
        t.abort();
    }
    Outcome::Exited(code)
}

/// A pseudo-terminal for a process in the container whose init is `pid`: (master, slave).
/// The pair comes from the container's own devpts instance, so inside the container the
/// process's terminal is a real /dev/pts/N (`tty` and `ttyname` work); the master stays
/// with the daemon. Containers without their own devpts get one from the host's.
fn open_pty(pid: Option<i32>) -> io::Result<(OwnedFd, OwnedFd)> {
    let master = match pid.map(open_container_ptmx) {
        Some(Ok(m)) => m,
        _ => {
            // SAFETY: posix_openpt returns a new descriptor or -1.
            let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
            if m < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: m was just opened and is owned by nothing else.
            unsafe { OwnedFd::from_raw_fd(m) }
        }
    };
    let slave = crate::runtime::process::console::open_peer(&master)?;
    let m = master.as_raw_fd();
    // SAFETY: fcntl on the master we own.
    unsafe {
        let fl = libc::fcntl(m, libc::F_GETFL);
        libc::fcntl(m, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    Ok((master, slave))
}

/// Open /dev/pts/ptmx inside the container's root without following anything the
/// container could have planted out of it, and make sure it is the ptmx device.
fn open_container_ptmx(pid: i32) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let root = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC).open(format!("/proc/{pid}/root"))?;
    let f = crate::util::openat2::open(&root, "dev/pts/ptmx", libc::O_RDWR | libc::O_NOCTTY, libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS)?;
    let st = nix::sys::stat::fstat(&f).map_err(io::Error::from)?;
    let is_ptmx = (st.st_mode & libc::S_IFMT) == libc::S_IFCHR && libc::major(st.st_rdev) == 5 && libc::minor(st.st_rdev) == 2;
    if !is_ptmx {
        return Err(io::Error::other("the container's /dev/pts/ptmx is not the ptmx device"));
    }
    Ok(f)
}

fn set_size(fd: i32, sz: TermSize) {
    let ws = libc::winsize { ws_row: sz.height, ws_col: sz.width, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ on a pty master we hold, with a valid winsize.
    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
}

async fn read(fd: &AsyncFd<OwnedFd>, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| nix::unistd::read(inner.get_ref(), buf).map_err(io::Error::from)) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

async fn write_all(fd: &AsyncFd<OwnedFd>, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        let mut guard = fd.writable().await?;
        match guard.try_io(|inner| nix::unistd::write(inner.get_ref(), data).map_err(io::Error::from)) {
            Ok(Ok(n)) => data = &data[n..],
            Ok(Err(e)) => return Err(e),
            Err(_would_block) => continue,
        }
    }
    Ok(())
}
