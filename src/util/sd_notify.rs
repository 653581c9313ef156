//! The systemd service notification protocol, written for Berth: state lines ("READY=1",
//! "STATUS=...", "WATCHDOG=1", "STOPPING=1") sent as one datagram to the unix socket named by
//! $NOTIFY_SOCKET (a path, or an abstract name written with a leading '@'), and the watchdog
//! interval from $WATCHDOG_USEC (for us only when $WATCHDOG_PID is unset or our PID).
//! Outside a Type=notify unit there is no socket and every call does nothing. It owns no
//! policy: when to say what is the daemon's business.
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Where systemd listens for this service's notifications, read once at start-up.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<String>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// From the environment of this process. The variables are then removed, so that the
    /// processes the daemon starts (monitors, plugins, containers) never speak for it: call it
    /// while the process has a single thread.
    pub fn from_env() -> Notifier {
        let n = Notifier::from_values(
            std::env::var("NOTIFY_SOCKET").ok().as_deref(),
            std::env::var("WATCHDOG_USEC").ok().as_deref(),
            std::env::var("WATCHDOG_PID").ok().as_deref(),
            std::process::id(),
        );
        for var in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(var);
        }
        n
    }

    /// The same from given values (the parsing, testable).
    pub fn from_values(socket: Option<&str>, watchdog_usec: Option<&str>, watchdog_pid: Option<&str>, pid: u32) -> Notifier {
        let socket = socket.filter(|s| s.starts_with('/') || s.starts_with('@')).map(str::to_string);
        let ours = watchdog_pid.map(|p| p.trim().parse::<u32>().ok() == Some(pid)).unwrap_or(true);
        let watchdog = watchdog_usec.and_then(|u| u.trim().parse::<u64>().ok()).filter(|u| *u > 0 && ours).map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// Whether a service manager listens.
    pub fn enabled(&self) -> bool {
        self.socket.is_some()
    }

    /// The watchdog interval systemd enforces (WatchdogSec=), if any.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog.filter(|_| self.socket.is_some())
    }

    /// How often to ping: half the interval, as sd_watchdog_enabled(3) advises.
    pub fn ping_interval(&self) -> Option<Duration> {
        self.watchdog().map(|w| w / 2)
    }

    /// Send newline-separated state assignments; without a socket, nothing happens.
    pub fn notify(&self, state: &str) -> std::io::Result<()> {
        let Some(name) = &self.socket else { return Ok(()) };
        let addr = socket_addr(name)?;
        let sock = UnixDatagram::unbound()?;
        // Never wait on a manager that does not read: callers run on async threads.
        sock.set_nonblocking(true)?;
        let sent = sock.send_to_addr(state.as_bytes(), &addr)?;
        if sent != state.len() {
            return Err(std::io::Error::other(format!("sent {sent} of {} bytes", state.len())));
        }
        Ok(())
    }

    /// `notify`, with a failure logged rather than returned (a notification is never worth
    /// stopping the daemon for; systemd notices what it misses by itself).
    pub fn say(&self, state: &str) {
        if let Err(e) = self.notify(state) {
            tracing::warn!("telling systemd {:?}: {e}", state.lines().next().unwrap_or_default());
        }
    }
}

fn socket_addr(name: &str) -> std::io::Result<SocketAddr> {
    match name.strip_prefix('@') {
        Some(abstract_name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abstract_name.as_bytes())
        }
        None => SocketAddr::from_pathname(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_ours_only_for_our_pid_and_a_socket() {
        let n = Notifier::from_values(Some("/run/systemd/notify"), Some("20000000"), None, 7);
        assert_eq!(n.watchdog(), Some(Duration::from_secs(20)));
        assert_eq!(n.ping_interval(), Some(Duration::from_secs(10)));
        assert_eq!(Notifier::from_values(Some("/run/systemd/notify"), Some("20000000"), Some("7"), 7).watchdog(), Some(Duration::from_secs(20)));
        assert_eq!(Notifier::from_values(Some("/run/systemd/notify"), Some("20000000"), Some("8"), 7).watchdog(), None);
        assert_eq!(Notifier::from_values(None, Some("20000000"), None, 7).watchdog(), None);
        assert_eq!(Notifier::from_values(Some("/run/x"), Some("0"), None, 7).watchdog(), None);
        assert!(!Notifier::from_values(Some("relative"), None, None, 7).enabled());
        assert!(Notifier::from_values(None, None, None, 7).notify("READY=1").is_ok());
    }

    #[test]
    fn notifications_arrive_as_one_datagram_on_paths_and_abstract_names() {
        let dir = std::env::temp_dir().join(format!("berth-sdnotify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::from_values(Some(path.to_str().unwrap()), None, None, 1);
        n.notify("READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");

        let name = format!("berth-sdnotify-{}", std::process::id());
        use std::os::linux::net::SocketAddrExt;
        let server = UnixDatagram::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes()).unwrap()).unwrap();
        Notifier::from_values(Some(&format!("@{name}")), None, None, 1).notify("WATCHDOG=1").unwrap();
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"WATCHDOG=1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
