//! Test harness: start the real `berth` binary on private directories and talk to it over
//! its CRI socket with the generated CRI client. Everything a daemon creates is removed when
//! the `Daemon` is dropped, also when the test fails.
use berth::cri::v1 as cri;
use berth::cri::v1::image_service_client::ImageServiceClient;
use berth::cri::v1::runtime_service_client::RuntimeServiceClient;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::{Channel, Endpoint, Uri};

pub mod apiserver;
pub mod containerd;
pub mod cri_json;
pub mod dns;
pub mod dns_bench;
pub mod fake_node;
pub mod kubelet;
pub mod registry;
pub mod streaming;
pub mod token;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The berth binary under test.
pub fn berth_bin() -> PathBuf {
    std::env::var_os("BERTH_BIN").map(PathBuf::from).unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/berth"))
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A unique directory under /tmp named berth-it-*, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = PathBuf::from(format!("/tmp/berth-it-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running `berth runtime` on its own data dir, run dir and config.
pub struct Daemon {
    pub dir: TempDir,
    child: Option<Child>,
    /// `runtime`, or `node` with its flags.
    mode: Vec<String>,
    /// Cgroup trees the daemon's pods live under that are removed after the test.
    cgroup_roots: Vec<String>,
    /// Environment variables set for the daemon.
    env: Vec<(String, String)>,
    /// The binary the daemon is started from (default: the one under test).
    pub exe: PathBuf,
    /// The bridge of the private pod network the harness gave it, removed at the end.
    bridge: Option<String>,
    /// The network namespace (a /run/netns file) the daemon runs in (None: the test's own).
    netns: Option<PathBuf>,
}

impl Daemon {
    /// Start a daemon with `config` (TOML) as its config file.
    pub async fn start(config: &str) -> Daemon {
        Daemon::start_with_env(config, &[]).await
    }

    /// `start` with more environment variables for the daemon (PATH, say).
    pub async fn start_with_env(config: &str, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_runtime(config, env, |_| {}).await
    }

    /// `start`, with `prepare` run on the daemon's directory first (to mount a filesystem of
    /// some kind for its data, say; what is mounted under it is unmounted at the end).
    pub async fn start_prepared(config: &str, prepare: impl FnOnce(&Path)) -> Daemon {
        Daemon::start_runtime(config, &[], prepare).await
    }

    async fn start_runtime(config: &str, env: &[(&str, &str)], prepare: impl FnOnce(&Path)) -> Daemon {
        let dir = TempDir::new("daemon");
        prepare(dir.path());
        std::fs::write(dir.path().join("config.toml"), config).expect("write config");
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut d = Daemon { dir, child: None, mode: vec!["runtime".into()], cgroup_roots: vec![], env, exe: berth_bin(), bridge: None, netns: None };
        d.spawn().await;
        d
    }

    /// `berth node` on a manifest directory of its own (`manifests()`), with the kubelet API on
    /// a free port of 127.0.0.1 (`kubelet_url()`) and pod cgroups under a private root.
    pub async fn start_node(config: &str) -> Daemon {
        Daemon::start_node_with(config, |_| {}).await
    }

    /// `start_node`, with `prepare` run on the daemon's directory before it starts (to mount
    /// a small filesystem for its data, say).
    pub async fn start_node_with(config: &str, prepare: impl FnOnce(&Path)) -> Daemon {
        Daemon::start_node_full(config, prepare, &[]).await
    }

    /// `start_node` with more `berth node` flags.
    pub async fn start_node_args(config: &str, extra: &[&str]) -> Daemon {
        Daemon::start_node_full(config, |_| {}, extra).await
    }

    /// `berth server`: a single-node cluster (the API on a free port of 127.0.0.1, the
    /// scheduler, and the node agent set up as `start_node` sets up a node), with more flags.
    /// Returns once the API answers; `kubectl` talks to it as the cluster admin.
    /// (`--listen` in `extra` replaces the default 127.0.0.1:0; with `--disable-agent` there is no
    /// node and no CRI socket.)
    pub async fn start_server(config: &str, extra: &[&str]) -> Daemon {
        Daemon::start_server_env(config, extra, &[]).await
    }

    /// [`Daemon::start_server`] with more environment variables (`NOTIFY_SOCKET`).
    pub async fn start_server_env(config: &str, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        let mut flags = vec!["--watch-bookmark-interval", "1s"];
        if !extra.contains(&"--listen") {
            flags.extend(["--listen", "127.0.0.1:0"]);
        }
        flags.extend_from_slice(extra);
        Daemon::start_kind("server", config, |_| {}, &flags, None, env).await
    }

    /// `berth agent` (give it `--server` and the token) set up as `start_node` sets up a node,
    /// running in network namespace `netns` (a /run/netns file) when given: a host of its own.
    pub async fn start_agent(config: &str, netns: Option<&Path>, extra: &[&str]) -> Daemon {
        Daemon::start_kind("agent", config, |_| {}, extra, netns.map(Path::to_path_buf), &[]).await
    }

    async fn start_node_full(config: &str, prepare: impl FnOnce(&Path), extra: &[&str]) -> Daemon {
        Daemon::start_kind("node", config, prepare, extra, None, &[]).await
    }

    async fn start_kind(kind: &str, config: &str, prepare: impl FnOnce(&Path), extra: &[&str], netns: Option<PathBuf>, env: &[(&str, &str)]) -> Daemon {
        let dir = TempDir::new(kind);
        prepare(dir.path());
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        // A node runs pods only with a working pod network (as a kubelet): unless the test
        // brings its own, a private one: berth-cni's default config on a bridge of its own.
        // `@DIR@` in the config is the daemon's own directory
        let mut config = config.replace("@DIR@", &dir.path().display().to_string());
        let mut bridge = None;
        if !config.contains("[network]") {
            let name = format!("bn{}x{n}", std::process::id() % 100_000);
            let own = berth_bin().parent().expect("bin dir").display().to_string();
            config.push_str(&format!(
                "\n[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{own}\"]\nbridge = \"{name}\"\nmasquerade = false\npod_cidr = \"10.{}.{}.0/24\"\n",
                dir.path().join("net.d").display(),
                160 + std::process::id() % 60,
                n % 250
            ));
            bridge = Some(name);
        }
        std::fs::write(dir.path().join("config.toml"), &config).expect("write config");
        std::fs::create_dir_all(dir.path().join("manifests")).expect("manifests dir");
        let cgroup_root = format!("/berth-it-kubepods-{}-{n}", std::process::id());
        let mut mode = vec![kind.to_string(), "--pod-manifest-path".into(), dir.path().join("manifests").display().to_string()];
        // defaults the test's own flags replace
        for (flag, value) in [("--kubelet-port", "0"), ("--kubelet-address", "127.0.0.1"), ("--node-name", "berth-it")] {
            if !extra.contains(&flag) {
                mode.extend([flag.to_string(), value.to_string()]);
            }
        }
        mode.extend(["--cgroup-root".to_string(), cgroup_root.clone()]);
        // The service proxy programs the host's nftables (10.43.0.1 and every node port of the
        // cluster): off unless a test names a table of its own for it (--proxy-table), so
        // servers started in parallel do not all program the same addresses.
        let opted_in = extra.iter().any(|a| a.starts_with("--proxy-table") || a.starts_with("--disable-kube-proxy"));
        if (kind == "server" || kind == "agent") && !opted_in {
            mode.push("--disable-kube-proxy".to_string());
        }
        // its health server's default (0.0.0.0:10256) would collide between servers too: off
        // unless the test gives an address of its own
        if (kind == "server" || kind == "agent") && opted_in && !extra.contains(&"--proxy-healthz-bind-address") {
            mode.extend(["--proxy-healthz-bind-address".to_string(), String::new()]);
        }
        // Node-local cluster DNS binds its address (default 10.43.0.10) in the test host's
        // network namespace, where concurrent servers would collide: off unless the test gives
        // an address of its own (`dns::unique_cluster_dns`).
        if !extra.contains(&"--cluster-dns") {
            match kind {
                "server" => mode.extend(["--disable".to_string(), "coredns".to_string()]),
                "agent" => mode.push("--disable-cluster-dns".to_string()),
                _ => {}
            }
        }
        // The kubelet's default disk thresholds would evict test pods on a build machine
        // whose disk is mostly full of build output; tests not about eviction keep memory only.
        if !config.contains("[eviction]") {
            mode.extend(["--eviction-hard".to_string(), "memory.available<100Mi".to_string()]);
        }
        mode.extend(extra.iter().map(|a| a.to_string()));
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut d = Daemon { dir, child: None, mode, cgroup_roots: vec![cgroup_root], env, exe: berth_bin(), bridge, netns };
        d.spawn().await;
        d
    }

    pub fn manifests(&self) -> PathBuf {
        self.dir.path().join("manifests")
    }

    pub fn cgroup_root(&self) -> &str {
        self.cgroup_roots.first().map(String::as_str).unwrap_or("")
    }

    /// The kubelet API's base URL, from the daemon's log (the port is chosen by the kernel).
    pub async fn kubelet_url(&self) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let log = self.log();
            if let Some(line) = log.lines().rfind(|l| l.contains("serving the kubelet API")) {
                if let Some(addr) = line.split("address=").nth(1) {
                    return format!("https://{}", addr.split_whitespace().next().unwrap_or_default());
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no kubelet API address in the log:\n{}", self.log());
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }
    pub fn run_dir(&self) -> PathBuf {
        self.dir.path().join("run")
    }
    pub fn socket(&self) -> PathBuf {
        self.run_dir().join("berth.sock")
    }
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berth.log")).unwrap_or_default()
    }

    /// Arguments that point a berth command at this daemon's config and directories.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--config".into(),
            self.dir.path().join("config.toml").display().to_string(),
            "--data-dir".into(),
            self.data_dir().display().to_string(),
            "--run-dir".into(),
            self.run_dir().display().to_string(),
        ]
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.path().join("berth.log")).expect("open log");
        // Tests log at debug level; benchmarks (BERTH_QUIET=1) at the default level.
        let verbosity: &[&str] = if std::env::var_os("BERTH_QUIET").is_some() { &[] } else { &["-v"] };
        let mut cmd = Command::new(&self.exe);
        if let Some(ns) = &self.netns {
            let file = std::fs::File::open(ns).expect("open the test host's netns");
            use std::os::unix::process::CommandExt;
            // SAFETY: only setns(2) on an open descriptor runs between fork and exec.
            unsafe {
                cmd.pre_exec(move || {
                    use std::os::fd::AsRawFd;
                    if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd
            .args(verbosity)
            .args(&self.mode)
            .args(self.args())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start berth (build it first: cargo build)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("berth exited early with {status}:\n{}", self.log());
            }
            let has_node = !self.mode.iter().any(|m| m == "--disable-agent");
            if (!has_node || tokio::net::UnixStream::connect(self.socket()).await.is_ok()) && (!self.is_server() || self.api_ready()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("berth did not serve {} within 30 s:\n{}", self.socket().display(), self.log());
    }

    fn is_server(&self) -> bool {
        self.mode.first().map(|m| m == "server").unwrap_or(false)
    }

    fn api_ready(&self) -> bool {
        self.kubeconfig().exists() && self.kubectl(&["get", "--raw", "/readyz"]).status.success()
    }

    /// `berth server`'s admin kubeconfig.
    pub fn kubeconfig(&self) -> PathBuf {
        self.data_dir().join("server/admin.kubeconfig")
    }

    /// kubectl 1.33 against `berth server` (its caches in the test's directory).
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        self.kubectl_version("1.33", args, None)
    }

    /// kubectl of `version` ("1.27") against `berth server`, with `stdin` fed to it.
    pub fn kubectl_version(&self, version: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(apiserver::kubectl_bin(version))
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        if let Some(input) = stdin {
            child.stdin.take().expect("stdin").write_all(input.as_bytes()).expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("kubectl output")
    }

    /// kubectl 1.33 `args -o json` that must succeed: the object or list.
    pub fn kubectl_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl_ok(&all)).expect("kubectl json")
    }

    /// Polls `args -o json` through kubectl until `check` holds (a condition, never a fixed
    /// sleep); fails after `limit` with the last answer and the server's log.
    pub fn kubectl_until(&self, args: &[&str], limit: Duration, what: &str, check: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        loop {
            let out = self.kubectl(&all);
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
            if check(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "{what}: not within {limit:?}; last:\n{v:#}\nserver log:\n{}", tail(&self.log(), 80));
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// kubectl 1.33 that must succeed: its stdout.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        self.kubectl_ok_in(args, None)
    }

    /// kubectl 1.33 with `stdin` that must succeed: its stdout.
    pub fn kubectl_ok_in(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.kubectl_version("1.33", args, stdin);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string());
        assert!(out.status.success(), "kubectl {args:?} failed: {stderr}\n{stdout}\nserver log (tail):\n{}", tail(&self.log(), 60));
        stdout
    }

    /// The daemon's process ID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL the daemon (as a crash would) and wait for it.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM the daemon and wait for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if c.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start the daemon again on the same directories.
    pub async fn restart(&mut self) {
        self.stop();
        self.spawn().await;
    }

    pub async fn restart_after_kill9(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    pub async fn channel(&self) -> Channel {
        connect_unix(&self.socket()).await.expect("connect to berth")
    }

    pub async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel().await)
    }

    pub async fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel().await)
    }

    /// Run `berth <args>` against this daemon; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let mut cmd = Command::new(berth_bin());
        let (head, tail) = args.split_at(1.min(args.len()));
        cmd.args(head).args(self.args()).args(tail);
        let out = cmd.output().expect("run berth");
        (out.status.success(), String::from_utf8_lossy(&out.stdout).to_string(), String::from_utf8_lossy(&out.stderr).to_string())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.remove_pods_through_the_daemon();
        self.stop();
        self.remove_leftovers();
        if let Some(b) = &self.bridge {
            let _ = Command::new("ip").args(["link", "del", b]).output();
        }
    }
}

impl Daemon {
    /// While the daemon still runs: stop and remove every pod through the CRI, so that what
    /// only the daemon knows how to undo (CNI DEL: veths, addresses, port mappings) is undone
    /// even when a test failed half way.
    fn remove_pods_through_the_daemon(&self) {
        if self.child.is_none() {
            return;
        }
        let socket = self.socket();
        // A node recreates what its manifests declare, and what the cluster binds to it: take
        // them away first.
        let node = self.mode.first().map(|m| m == "node" || m == "server" || m == "agent").unwrap_or(false);
        if self.is_server() {
            // the controllers' objects first, or they make new pods
            let _ = self.kubectl(&[
                "delete",
                "cronjobs,jobs,daemonsets,statefulsets,deployments,replicasets,replicationcontrollers",
                "--all",
                "--all-namespaces",
                "--wait=false",
            ]);
            let _ = self.kubectl(&["delete", "pods", "--all", "--all-namespaces", "--force", "--grace-period=0", "--wait=false"]);
        }
        if node {
            if let Ok(rd) = std::fs::read_dir(self.manifests()) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let work = std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let endpoint = Endpoint::try_from("http://berth.sock").expect("endpoint");
                let connect = endpoint.connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = socket.clone();
                    async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
                }));
                let Ok(Ok(channel)) = tokio::time::timeout(Duration::from_secs(5), connect).await else { return };
                let mut rt = RuntimeServiceClient::new(channel);
                if node {
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while Instant::now() < deadline {
                        match rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await {
                            Ok(l) if !l.get_ref().items.is_empty() => tokio::time::sleep(Duration::from_millis(200)).await,
                            _ => break,
                        }
                    }
                }
                let Ok(list) = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await else { return };
                for pod in list.into_inner().items {
                    let _ =
                        tokio::time::timeout(Duration::from_secs(30), rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() })).await;
                    let _ = tokio::time::timeout(Duration::from_secs(30), rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.id })).await;
                }
            });
        });
        let _ = work.join();
    }
}

impl Daemon {
    /// After a test (passed or failed): kill what the daemon's pods still run, remove their
    /// cgroups and unmount everything under the daemon's directories.
    pub fn remove_leftovers(&self) {
        for meta in meta_files(&self.data_dir().join("sandboxes")).into_iter().chain(meta_files(&self.data_dir().join("containers"))) {
            if let Some(path) = meta["cgroup"]["path"].as_str() {
                remove_cgroup_tree(path);
            }
            if let Some(pid) = meta["init_pid"].as_i64().filter(|p| *p > 0) {
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        }
        for m in mounts_under(self.dir.path()) {
            let c = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()).expect("path");
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        for root in &self.cgroup_roots {
            remove_cgroup_tree(root);
        }
    }
}

fn meta_files(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(rd) = std::fs::read_dir(dir) else { return vec![] };
    rd.flatten().filter_map(|e| std::fs::read(e.path().join("meta.json")).ok()).filter_map(|b| serde_json::from_slice(&b).ok()).collect()
}

/// Kill every process in a cgroupfs cgroup (all v1 controllers, or v2) and remove it, children first.
pub fn remove_cgroup_tree(path: &str) {
    let rel = path.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let roots: Vec<PathBuf> = match std::fs::read_dir("/sys/fs/cgroup") {
        Ok(rd) if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() => {
            drop(rd);
            vec![PathBuf::from("/sys/fs/cgroup")]
        }
        Ok(rd) => rd.flatten().map(|e| e.path()).collect(),
        Err(_) => vec![],
    };
    for root in roots {
        let dir = root.join(rel);
        if dir.is_dir() {
            remove_cgroup_dir(&dir);
        }
    }
}

fn remove_cgroup_dir(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                remove_cgroup_dir(&e.path());
            }
        }
    }
    for _ in 0..50 {
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A gRPC channel to a CRI socket.
pub async fn connect_unix(socket: &Path) -> Result<Channel, tonic::transport::Error> {
    let path = socket.to_path_buf();
    Endpoint::try_from("http://berth.sock")
        .expect("endpoint")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
        }))
        .await
}

/// Mount points at or below `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> =
        info.lines().filter_map(|l| l.split(' ').nth(4)).map(|m| PathBuf::from(m.replace("\\040", " "))).filter(|m| m.starts_with(dir)).collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    out.dedup();
    out
}

/// An ImageSpec for `image`.
pub fn spec(image: &str) -> Option<cri::ImageSpec> {
    Some(cri::ImageSpec { image: image.to_string(), ..Default::default() })
}

/// Pull through the CRI; returns the image ref or the gRPC status.
pub async fn pull(c: &mut ImageServiceClient<Channel>, image: &str) -> Result<String, tonic::Status> {
    pull_with(c, image, None).await
}

pub async fn pull_with(c: &mut ImageServiceClient<Channel>, image: &str, auth: Option<cri::AuthConfig>) -> Result<String, tonic::Status> {
    c.pull_image(cri::PullImageRequest { image: spec(image), auth, sandbox_config: None }).await.map(|r| r.into_inner().image_ref)
}

pub async fn status(c: &mut ImageServiceClient<Channel>, image: &str) -> Option<cri::Image> {
    c.image_status(cri::ImageStatusRequest { image: spec(image), verbose: false }).await.expect("image status").into_inner().image
}

pub async fn verbose_info(c: &mut ImageServiceClient<Channel>, image: &str) -> serde_json::Value {
    let resp = c.image_status(cri::ImageStatusRequest { image: spec(image), verbose: true }).await.expect("image status").into_inner();
    serde_json::from_str(resp.info.get("info").expect("verbose info")).expect("info is JSON")
}

pub async fn list(c: &mut ImageServiceClient<Channel>) -> Vec<cri::Image> {
    c.list_images(cri::ListImagesRequest::default()).await.expect("list images").into_inner().images
}

/// The digests `hack/images.sh` recorded for the pushed test images.
pub fn image_digest(key: &str) -> String {
    let path = std::env::var("BERTH_TEST_IMAGES_ENV").unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../hack/build/images.env").to_string());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e} (run hack/images.sh)"));
    text.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).unwrap_or_else(|| panic!("{key} missing in {path}")).trim().to_string()
}

/// The plain test registry (127.0.0.1:5000 unless BERTH_TEST_REGISTRY says otherwise).
pub fn test_registry() -> String {
    std::env::var("BERTH_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

/// The htpasswd-protected test registry.
pub fn auth_registry() -> String {
    std::env::var("BERTH_TEST_AUTH_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5001".into())
}

/// Entries below `dir` whose names start with `prefix` (to spot leftovers).
pub fn entries_with_prefix(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().to_string()).filter(|n| n.starts_with(prefix)).collect())
        .unwrap_or_default()
}

/// A network link the test owns (a bridge a CNI plugin creates on demand): deleted on drop,
/// also when the test fails.
pub struct LinkGuard(pub String);

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).output();
    }
}

/// The berth-cni nftables objects of network `network` (`nft -j list table ip berth-cni`):
/// (the set's elements, the chain's rule count); None when the table or set is missing.
pub fn masq_state(network: &str) -> Option<(Vec<String>, usize)> {
    let h = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(network.as_bytes()));
    let (set, chain) = (format!("pods-{}", &h[..12]), format!("masq-{}", &h[..12]));
    let out = Command::new("nft").args(["-j", "list", "table", "ip", "berth-cni"]).output().unwrap();
    if !out.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    let s = items.iter().find(|i| i["set"]["name"] == set.as_str())?;
    let elems = s["set"]["elem"].as_array().cloned().unwrap_or_default().iter().filter_map(|e| e.as_str().map(String::from)).collect();
    let rules = items.iter().filter(|i| i["rule"]["chain"] == chain.as_str()).count();
    Some((elems, rules))
}

/// Removes one network's chain and set from the shared berth-cni table (and the table when
/// nothing else is left in it).
pub struct MasqGuard(pub String);

impl Drop for MasqGuard {
    fn drop(&mut self) {
        let h = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(self.0.as_bytes()));
        let _ = Command::new("nft").args(["delete", "chain", "ip", "berth-cni", &format!("masq-{}", &h[..12])]).output();
        let _ = Command::new("nft").args(["delete", "set", "ip", "berth-cni", &format!("pods-{}", &h[..12])]).output();
        let left = Command::new("nft").args(["-j", "list", "table", "ip", "berth-cni"]).output();
        if let Ok(out) = left {
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            let others = v["nftables"].as_array().map(|a| a.iter().filter(|i| i.get("set").is_some() || i.get("chain").is_some()).count()).unwrap_or(0);
            if others == 0 {
                let _ = Command::new("nft").args(["delete", "table", "ip", "berth-cni"]).output();
            }
        }
    }
}

/// Wait until `check` holds, polling it; panics naming `what` after `limit`.
pub async fn wait_until(what: &str, limit: std::time::Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + limit;
    while !check().await {
        assert!(std::time::Instant::now() < deadline, "timed out after {limit:?} waiting until {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
