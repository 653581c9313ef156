//! TCP connections made from inside a network namespace (a pod's), without leaving any of
//! the daemon's threads in it: a short-lived thread enters the namespace, connects, and
//! ends; the socket stays bound to the namespace it was made in.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Connect to `addr` from inside `netns` (the host's namespace when None).
pub async fn connect(netns: Option<PathBuf>, addrs: Vec<SocketAddr>, timeout: Duration) -> std::io::Result<tokio::net::TcpStream> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new().name("berth-netns".into()).spawn(move || {
        let _ = tx.send(connect_blocking(netns.as_deref(), &addrs, timeout));
    })?;
    let s = rx.await.map_err(|_| std::io::Error::other("connect thread vanished"))??;
    s.set_nonblocking(true)?;
    tokio::net::TcpStream::from_std(s)
}

fn connect_blocking(netns: Option<&Path>, addrs: &[SocketAddr], timeout: Duration) -> std::io::Result<std::net::TcpStream> {
    if let Some(ns) = netns {
        let f = std::fs::File::open(ns)?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
    }
    let mut last = std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to connect to");
    for a in addrs {
        match std::net::TcpStream::connect_timeout(a, timeout) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}
