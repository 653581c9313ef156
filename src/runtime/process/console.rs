//! A container's terminal, made the way runc's console socket does it: the container's
//! init opens the pty from the container's own devpts instance (so inside the container
//! the terminal is a real /dev/pts/N), makes the slave its stdio and controlling
//! terminal, and passes the master back to the monitor over a socket with SCM_RIGHTS.
use super::sync::{Context, SetupError, SetupResult};
use nix::sys::socket::{recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType};
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

/// (monitor's end, container's end), both close-on-exec.
pub fn pair() -> SetupResult<(OwnedFd, OwnedFd)> {
    socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC).ctx(|| "console socketpair".into())
}

/// In the container's init, after its mounts: make the terminal and send the master.
pub fn setup_in_container(console: &OwnedFd) -> SetupResult<()> {
    let master = open_ptmx()?;
    let m = master.as_raw_fd();
    let slave = open_peer(&master).ctx(|| "open the pty slave".into())?;
    // SAFETY: dup2 and ioctl on descriptors this process owns; results are checked.
    unsafe {
        for target in 0..3 {
            if libc::dup2(slave.as_raw_fd(), target) < 0 {
                return Err(last("wire the terminal to stdio"));
            }
        }
        if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
            return Err(last("make the terminal the controlling terminal"));
        }
    }
    send_fd(console, m)?;
    Ok(())
}

/// Unlock a pty master and open its slave through it (TIOCGPTPEER): no path lookup in
/// anyone's /dev. The slave is close-on-exec and not a controlling terminal yet.
pub fn open_peer(master: &OwnedFd) -> std::io::Result<OwnedFd> {
    let m = master.as_raw_fd();
    // SAFETY: ioctls on a master the caller owns; results are checked.
    unsafe {
        let unlock: libc::c_int = 0;
        if libc::ioctl(m, libc::TIOCSPTLCK, &unlock) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = libc::ioctl(m, libc::TIOCGPTPEER, libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(s))
    }
}

fn last(what: &str) -> SetupError {
    SetupError::Io { what: what.into(), source: std::io::Error::last_os_error() }
}

/// /dev/pts/ptmx of the container's devpts instance; /dev/ptmx where it has none.
fn open_ptmx() -> SetupResult<OwnedFd> {
    let flags = libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC;
    for path in [c"/dev/pts/ptmx", c"/dev/ptmx"] {
        // SAFETY: open with a NUL-terminated path.
        let fd = unsafe { libc::open(path.as_ptr(), flags) };
        if fd >= 0 {
            // SAFETY: fd was just opened and is owned by nothing else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
        }
    }
    Err(last("open /dev/pts/ptmx"))
}

fn send_fd(sock: &OwnedFd, fd: RawFd) -> SetupResult<()> {
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(b"m")];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).ctx(|| "send the terminal to the monitor".into())?;
    Ok(())
}

/// In the monitor: the master the container sent; None if it never came.
pub fn recv_master(sock: &OwnedFd) -> SetupResult<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock.as_fd().as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
        .ctx(|| "receive the terminal from the container".into())?;
    for c in msg.cmsgs().ctx(|| "terminal message".into())? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(&fd) = fds.first() {
                // SAFETY: the kernel just installed this descriptor for us.
                return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Err(SetupError::Invalid("the container sent no terminal".into()))
}
