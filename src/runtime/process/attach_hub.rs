//! The monitor's attach socket (`attach.sock` in the container's state directory): any
//! number of clients get the container's output as it is produced and may write to its
//! stdin and resize its terminal. Everything is non-blocking so a slow client never holds
//! up the log; a client that falls too far behind is dropped.
//!
//! Wire format, both directions: one byte of kind, four bytes big-endian length, payload.
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

pub const SOCKET: &str = "attach.sock";

/// Monitor → client: output of the container.
pub const KIND_STDOUT: u8 = 1;
pub const KIND_STDERR: u8 = 2;
/// Client → monitor: bytes for the container's stdin.
pub const KIND_STDIN: u8 = 0;
/// Client → monitor: this client's stdin ended (closes the container's stdin under stdin_once).
pub const KIND_STDIN_CLOSE: u8 = 4;
/// Client → monitor: terminal size, width then height as big-endian u16.
pub const KIND_RESIZE: u8 = 5;

/// Output queued for one client before it is dropped.
const MAX_CLIENT_BACKLOG: usize = 4 << 20;
/// Stdin bytes queued before clients stop being read.
const MAX_STDIN_BACKLOG: usize = 1 << 20;
const MAX_FRAME: usize = 1 << 20;

/// Encode one frame.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + payload.len());
    v.push(kind);
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// Take one complete frame off the front of `buf`: Ok(None) when more bytes are needed.
pub fn parse_frame(buf: &mut Vec<u8>) -> Result<Option<(u8, Vec<u8>)>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if len > MAX_FRAME {
        return Err(format!("attach frame of {len} bytes"));
    }
    if buf.len() < 5 + len {
        return Ok(None);
    }
    let kind = buf[0];
    let payload = buf[5..5 + len].to_vec();
    buf.drain(..5 + len);
    Ok(Some((kind, payload)))
}

struct Client {
    sock: UnixStream,
    inbuf: Vec<u8>,
    outbuf: Vec<u8>,
}

pub struct AttachHub {
    listener: Option<UnixListener>,
    clients: Vec<Client>,
    stdin: Option<File>,
    stdin_buf: Vec<u8>,
    stdin_once: bool,
    pty: Option<RawFd>,
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: fcntl on a descriptor this process owns.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

impl AttachHub {
    /// Listen in `dir`. `stdin` is where client input goes (the pipe's write end or the pty
    /// master); `pty` is the terminal to resize.
    pub fn new(dir: &Path, stdin: Option<File>, pty: Option<RawFd>, stdin_once: bool) -> AttachHub {
        if let Some(f) = &stdin {
            set_nonblocking(f.as_raw_fd());
        }
        let listener = bind(dir).map_err(|e| eprintln!("warning: attach socket in {}: {e}", dir.display())).ok();
        AttachHub { listener, clients: Vec::new(), stdin, stdin_buf: Vec::new(), stdin_once, pty }
    }

    /// Add this hub's descriptors to a poll set; returns how many were added.
    pub fn poll_fds(&self, fds: &mut Vec<libc::pollfd>) -> usize {
        let start = fds.len();
        let fd_of = |o: Option<RawFd>| o.unwrap_or(-1);
        fds.push(libc::pollfd { fd: fd_of(self.listener.as_ref().map(|l| l.as_raw_fd())), events: libc::POLLIN, revents: 0 });
        let want_stdin_out = !self.stdin_buf.is_empty();
        fds.push(libc::pollfd { fd: if want_stdin_out { fd_of(self.stdin.as_ref().map(|f| f.as_raw_fd())) } else { -1 }, events: libc::POLLOUT, revents: 0 });
        let read_clients = self.stdin_buf.len() < MAX_STDIN_BACKLOG;
        for c in &self.clients {
            let mut events = 0;
            if read_clients {
                events |= libc::POLLIN;
            }
            if !c.outbuf.is_empty() {
                events |= libc::POLLOUT;
            }
            fds.push(libc::pollfd { fd: c.sock.as_raw_fd(), events, revents: 0 });
        }
        fds.len() - start
    }

    /// Act on the poll results for the descriptors `poll_fds` added (same order).
    pub fn handle(&mut self, fds: &[libc::pollfd]) {
        if fds.len() < 2 {
            return;
        }
        if fds[0].revents & libc::POLLIN != 0 {
            self.accept();
        }
        if fds[1].revents != 0 {
            self.flush_stdin();
        }
        let mut dead = Vec::new();
        for (i, pfd) in fds[2..].iter().enumerate().take(self.clients.len()) {
            if pfd.revents == 0 {
                continue;
            }
            if pfd.revents & libc::POLLOUT != 0 && !flush_client(&mut self.clients[i]) {
                dead.push(i);
                continue;
            }
            if pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0 && !self.read_client(i) {
                dead.push(i);
            }
        }
        for i in dead.into_iter().rev() {
            self.clients.remove(i);
        }
    }

    /// Queue container output for every client.
    pub fn broadcast(&mut self, kind: u8, data: &[u8]) {
        if self.clients.is_empty() || data.is_empty() {
            return;
        }
        let f = frame(kind, data);
        self.clients.retain_mut(|c| {
            if c.outbuf.len() + f.len() > MAX_CLIENT_BACKLOG {
                return false;
            }
            c.outbuf.extend_from_slice(&f);
            flush_client(c)
        });
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        while let Ok((sock, _)) = l.accept() {
            if sock.set_nonblocking(true).is_ok() {
                self.clients.push(Client { sock, inbuf: Vec::new(), outbuf: Vec::new() });
            }
        }
    }

    /// Read what a client sent; false when it is gone.
    fn read_client(&mut self, i: usize) -> bool {
        let mut buf = [0u8; 16 * 1024];
        let alive = loop {
            match self.clients[i].sock.read(&mut buf) {
                Ok(0) => break false,
                Ok(n) => self.clients[i].inbuf.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break false,
            }
            if self.clients[i].inbuf.len() > MAX_FRAME + 5 {
                break true;
            }
        };
        loop {
            match parse_frame(&mut self.clients[i].inbuf) {
                Ok(Some((kind, payload))) => self.on_frame(kind, &payload),
                Ok(None) => break,
                Err(_) => return false,
            }
        }
        alive
    }

    fn on_frame(&mut self, kind: u8, payload: &[u8]) {
        match kind {
            KIND_STDIN if self.stdin.is_some() => {
                self.stdin_buf.extend_from_slice(payload);
                self.flush_stdin();
            }
            KIND_STDIN_CLOSE if self.stdin_once && self.pty.is_none() => {
                self.flush_stdin();
                self.stdin = None;
                self.stdin_buf.clear();
            }
            KIND_RESIZE if payload.len() == 4 => {
                if let Some(fd) = self.pty {
                    let ws = libc::winsize {
                        ws_col: u16::from_be_bytes([payload[0], payload[1]]),
                        ws_row: u16::from_be_bytes([payload[2], payload[3]]),
                        ws_xpixel: 0,
                        ws_ypixel: 0,
                    };
                    // SAFETY: TIOCSWINSZ on our pty master with a valid winsize.
                    unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) };
                }
            }
            _ => {}
        }
    }

    fn flush_stdin(&mut self) {
        let Some(f) = &mut self.stdin else {
            self.stdin_buf.clear();
            return;
        };
        while !self.stdin_buf.is_empty() {
            match f.write(&self.stdin_buf) {
                Ok(n) => {
                    self.stdin_buf.drain(..n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
                // The container closed its stdin: nothing more can go there.
                Err(_) => {
                    self.stdin_buf.clear();
                    self.stdin = None;
                    return;
                }
            }
        }
    }
}

/// Write what is queued for a client; false when it is gone.
fn flush_client(c: &mut Client) -> bool {
    while !c.outbuf.is_empty() {
        match c.sock.write(&c.outbuf) {
            Ok(n) => {
                c.outbuf.drain(..n);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return false,
        }
    }
    true
}

/// The socket path as seen through a descriptor of its directory: short enough for
/// sun_path however deep the directory is.
pub fn socket_path_via(dir: &File) -> String {
    format!("/proc/self/fd/{}/{SOCKET}", dir.as_raw_fd())
}

fn open_dir(dir: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC).open(dir)
}

fn bind(dir: &Path) -> std::io::Result<UnixListener> {
    let d = open_dir(dir)?;
    let path = socket_path_via(&d);
    let _ = std::fs::remove_file(&path);
    let l = UnixListener::bind(&path)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

/// Connect to a container's attach socket (from the daemon).
pub fn connect(dir: &Path) -> std::io::Result<UnixStream> {
    let d = open_dir(dir)?;
    UnixStream::connect(socket_path_via(&d))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_parse_back_whole_and_in_pieces() {
        let mut wire = frame(KIND_STDIN, b"hello");
        wire.extend(frame(KIND_RESIZE, &[0, 80, 0, 24]));
        let mut buf = Vec::new();
        let mut got = Vec::new();
        for b in wire {
            buf.push(b);
            while let Some(f) = parse_frame(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, vec![(KIND_STDIN, b"hello".to_vec()), (KIND_RESIZE, vec![0, 80, 0, 24])]);
        let mut huge = vec![KIND_STDIN, 0xff, 0xff, 0xff, 0xff];
        assert!(parse_frame(&mut huge).is_err());
    }
}
