//! Runs real etcd servers for the tests and the benchmark: Debian's `etcd-server` (or the binary
//! named by `BERTH_ETCD_BIN`), a single member or a cluster, on free loopback ports with a
//! private data dir. Each member is killed by its pid and its dir removed when dropped, also when
//! a test fails. Not used by Berth itself.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long members get to elect a leader and answer.
const READY_WITHIN: Duration = Duration::from_secs(30);

/// The etcd binary: `BERTH_ETCD_BIN`, else `etcd` from the PATH.
pub fn etcd_binary() -> std::io::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("BERTH_ETCD_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("etcd"))
        .find(|p| p.is_file())
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "etcd not found: install Debian's etcd-server (hack/deps.sh) or set BERTH_ETCD_BIN"))
}

/// One running etcd member.
pub struct EtcdMember {
    pub name: String,
    /// `http://127.0.0.1:PORT`
    pub client_url: String,
    pub peer_url: String,
    dir: PathBuf,
    child: Option<Child>,
}

impl EtcdMember {
    /// The member's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The member's data dir (`member/snap/db` is its database file).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Resident memory of the member, from /proc.
    pub fn rss_bytes(&self) -> Option<u64> {
        rss_bytes(self.pid()?)
    }

    /// Kills the member (SIGKILL by pid) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The end of the member's log, for error messages.
    pub fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.join("etcd.log")) {
            let _ = f.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for EtcdMember {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Certificates for a member serving its clients over TLS and requiring client certificates.
#[derive(Debug, Clone)]
pub struct EtcdServerTls {
    /// The CA that signed both the server and the client certificates (PEM file).
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate the readiness check uses.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// A running etcd cluster (one member or more).
pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
}

impl EtcdCluster {
    /// Starts a single member with etcd's defaults plus `extra_args`, and waits until it answers.
    pub async fn single(extra_args: &[&str]) -> std::io::Result<Self> {
        Self::start(1, extra_args).await
    }

    /// Starts `n` members forming one cluster and waits until each answers.
    pub async fn start(n: usize, extra_args: &[&str]) -> std::io::Result<Self> {
        Self::start_with(n, extra_args, None).await
    }

    /// Starts a single member serving https:// with client certificate authentication.
    pub async fn single_tls(extra_args: &[&str], tls: &EtcdServerTls) -> std::io::Result<Self> {
        Self::start_with(1, extra_args, Some(tls)).await
    }

    async fn start_with(n: usize, extra_args: &[&str], tls: Option<&EtcdServerTls>) -> std::io::Result<Self> {
        let mut last_err = None;
        // A port picked as free can be taken before etcd binds it: try again with new ones.
        for _ in 0..3 {
            match Self::start_once(n, extra_args, tls).await {
                Ok(c) => return Ok(c),
                Err(e) => last_err = Some(e),
            }
        }
        Err(last_err.unwrap_or_else(|| std::io::Error::other("etcd did not start")))
    }

    async fn start_once(n: usize, extra_args: &[&str], tls: Option<&EtcdServerTls>) -> std::io::Result<Self> {
        let scheme = if tls.is_some() { "https" } else { "http" };
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let bin = etcd_binary()?;
        let token = format!("berth-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        let mut members = Vec::new();
        for i in 0..n {
            let dir = std::env::temp_dir().join(format!("{token}-etcd{i}"));
            std::fs::create_dir_all(&dir)?;
            members.push(EtcdMember {
                name: format!("{token}-m{i}"),
                client_url: format!("{scheme}://127.0.0.1:{}", free_port()?),
                peer_url: format!("http://127.0.0.1:{}", free_port()?),
                dir,
                child: None,
            });
        }
        let initial: Vec<String> = members.iter().map(|m| format!("{}={}", m.name, m.peer_url)).collect();
        let initial = initial.join(",");
        for m in &mut members {
            let log = std::fs::File::create(m.dir.join("etcd.log"))?;
            let mut cmd = Command::new(&bin);
            if let Some(t) = tls {
                cmd.arg("--cert-file").arg(&t.server_cert).arg("--key-file").arg(&t.server_key).arg("--trusted-ca-file").arg(&t.ca).arg("--client-cert-auth");
            }
            let child = cmd
                .arg("--name")
                .arg(&m.name)
                .arg("--data-dir")
                .arg(m.data_dir())
                .args(["--listen-client-urls", &m.client_url])
                .args(["--advertise-client-urls", &m.client_url])
                .args(["--listen-peer-urls", &m.peer_url])
                .args(["--initial-advertise-peer-urls", &m.peer_url])
                .args(["--initial-cluster", &initial])
                .args(["--initial-cluster-state", "new"])
                .args(["--initial-cluster-token", &token])
                .args(extra_args)
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()?;
            m.child = Some(child);
        }
        let cluster = EtcdCluster { members };
        for m in &cluster.members {
            wait_ready(m, tls).await?;
        }
        Ok(cluster)
    }

    /// The client URLs of the members still running.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().filter(|m| m.child.is_some()).map(|m| m.client_url.clone()).collect()
    }

    /// The first member (the only one of a single-member cluster).
    pub fn first(&self) -> &EtcdMember {
        &self.members[0]
    }
}

/// Waits until the member answers a read.
async fn wait_ready(m: &EtcdMember, tls: Option<&EtcdServerTls>) -> std::io::Result<()> {
    let options = match tls {
        None => None,
        Some(t) => Some(
            etcd_client::ConnectOptions::new().with_tls(
                etcd_client::TlsOptions::new()
                    .ca_certificate(etcd_client::Certificate::from_pem(std::fs::read(&t.ca)?))
                    .identity(etcd_client::Identity::from_pem(std::fs::read(&t.client_cert)?, std::fs::read(&t.client_key)?)),
            ),
        ),
    };
    let deadline = Instant::now() + READY_WITHIN;
    let mut last = String::from("no answer yet");
    while Instant::now() < deadline {
        let attempt = async {
            let mut client = etcd_client::Client::connect([m.client_url.as_str()], options.clone()).await?;
            client.get("berth-ready-probe", None).await
        };
        match tokio::time::timeout(Duration::from_secs(2), attempt).await {
            Ok(Ok(_)) => return Ok(()),
            Ok(Err(e)) => last = e.to_string(),
            Err(_) => last = "timed out".into(),
        }
        if exited(m) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(std::io::Error::other(format!("etcd member {} at {} is not ready ({last}); its log ends with:\n{}", m.name, m.client_url, m.log_tail())))
}

fn exited(m: &EtcdMember) -> bool {
    // try_wait needs &mut; a dead child leaves its /proc entry as a zombie with state Z.
    m.pid()
        .and_then(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| stat.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
        .unwrap_or(true)
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Resident memory of a process, from /proc/PID/status.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok()).map(|kib| kib * 1024)
}

/// The total size of the files under `dir`.
pub fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}
