//! The berth binary: `berth runtime` (the CRI runtime daemon), `berth node` (runtime plus
//! kubelet), `berth server` (the Kubernetes API over HTTPS) and `berth images`/`berth logs`
//! (clients of the daemon).
use anyhow::{bail, Context, Result};
use berth::config;
use berth::cri::{images::CriImages, runtime::CriRuntime, server, transfer::TransferService};
use berth::image::store::ImageStore;
use berth::network::Network;
use berth::node::{Node, NodeConfig};
use berth::runtime::{Runtime, RuntimeConfig};
use berth::util::sd_notify::Notifier;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

mod client;

#[derive(Parser)]
#[command(name = "berth", version, about = "A Kubernetes node in one binary: kubelet and container runtime")]
struct Cli {
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Config file (TOML); default /etc/berth/config.toml when it exists.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone)]
struct Dirs {
    /// State that survives reboots: images, containers (default /var/lib/berth).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Runtime state and the CRI socket <run-dir>/berth.sock (default /run/berth).
    #[arg(long)]
    run_dir: Option<PathBuf>,
}

#[derive(clap::Args, Clone)]
struct RuntimeFlags {
    /// The pod CIDR: with no CNI config present, a default berth-cni config for it is written.
    #[arg(long)]
    pod_cidr: Option<String>,
    /// Address of the streaming server (exec, attach, port-forward URLs); port 0 picks one.
    #[arg(long)]
    streaming_address: Option<String>,
}

#[derive(clap::Args, Clone)]
struct NodeArgs {
    /// Directory of Pod manifests (YAML or JSON), followed for changes.
    #[arg(long, default_value = "/etc/berth/manifests")]
    pod_manifest_path: PathBuf,
    /// Port of the kubelet API (HTTPS).
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
    /// Address the kubelet API listens on.
    #[arg(long, default_value = "0.0.0.0")]
    kubelet_address: String,
    /// The node's name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's IP as pods see it in status.hostIP.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: String,
    /// Root of the kubelet-style pod cgroup tree.
    #[arg(long, default_value = "/kubepods")]
    cgroup_root: String,
    /// Most processes (tasks) a pod may run: pids.max of its pod cgroup, as the kubelet's
    /// --pod-max-pids; -1 leaves it unlimited.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pod_max_pids: i64,
    /// Cluster DNS server IPs (comma-separated) for pods with dnsPolicy ClusterFirst.
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<String>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// Hard eviction thresholds, e.g. memory.available<100Mi,nodefs.available<10% (overrides [eviction] hard).
    #[arg(long)]
    eviction_hard: Option<String>,
    /// Soft eviction thresholds (each needs a grace period).
    #[arg(long)]
    eviction_soft: Option<String>,
    /// Grace periods of soft thresholds, e.g. memory.available=1m30s.
    #[arg(long)]
    eviction_soft_grace_period: Option<String>,
    /// Most seconds a pod gets to stop on a soft eviction.
    #[arg(long)]
    eviction_max_pod_grace_period: Option<i64>,
    /// How long a pressure condition lasts after its threshold stops being met.
    #[arg(long)]
    eviction_pressure_transition_period: Option<String>,
    /// Image filesystem usage (percent) that starts image garbage collection.
    #[arg(long)]
    image_gc_high_threshold: Option<u8>,
    /// Image filesystem usage (percent) image garbage collection frees down to.
    #[arg(long)]
    image_gc_low_threshold: Option<u8>,
    /// Minimum age of an unused image before it is garbage collected.
    #[arg(long)]
    minimum_image_ttl_duration: Option<String>,
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// Where the store, the certificates and admin.kubeconfig live.
    #[arg(long, default_value = "/var/lib/berth/server")]
    data_dir: PathBuf,
    /// Address of the HTTPS listener.
    #[arg(long, default_value = "0.0.0.0:6443")]
    listen: std::net::SocketAddr,
    /// etcd members (http(s)://host:port, comma-separated), as k3s takes them; default: the
    /// embedded store in the data dir.
    #[arg(long, value_delimiter = ',')]
    datastore_endpoint: Vec<String>,
    /// The CA of etcd's serving certificate (https endpoints).
    #[arg(long)]
    datastore_cafile: Option<PathBuf>,
    /// Client certificate for etcd (when it runs with --client-cert-auth).
    #[arg(long)]
    datastore_certfile: Option<PathBuf>,
    /// The client certificate's key.
    #[arg(long)]
    datastore_keyfile: Option<PathBuf>,
    /// Key prefix in etcd.
    #[arg(long, default_value = "/registry/")]
    datastore_prefix: String,
    /// How often watches that allow bookmarks get one (a Go duration: 60s, 1m30s).
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    watch_bookmark_interval: std::time::Duration,
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    berth::util::duration::parse(s).map_err(|e| e.to_string())
}

// Parsed once at start-up: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the CRI runtime daemon (what an upstream kubelet or crictl talks to).
    Runtime {
        #[command(flatten)]
        dirs: Dirs,
        #[command(flatten)]
        flags: RuntimeFlags,
    },
    /// The runtime plus the kubelet half: runs the Pod manifests of a directory (static pods)
    /// and serves the kubelet API.
    Node {
        #[command(flatten)]
        dirs: Dirs,
        #[command(flatten)]
        flags: RuntimeFlags,
        #[command(flatten)]
        node: NodeArgs,
    },
    /// Print a container's log, as `crictl logs` does: whole lines, tail, since, follow
    /// (across rotation, until the container stops).
    Logs {
        /// The daemon's CRI socket (default <run-dir>/berth.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        #[command(flatten)]
        dirs: Dirs,
        #[command(flatten)]
        opts: client::LogsArgs,
    },
    /// Serve the Kubernetes API over HTTPS from the cluster store; writes a CA, a serving
    /// certificate and admin.kubeconfig into the data dir on first start.
    Server {
        #[command(flatten)]
        args: ServerArgs,
    },
    /// Manage images through a running daemon.
    Images {
        /// The daemon's CRI socket (default <run-dir>/berth.sock).
        #[arg(long)]
        socket: Option<PathBuf>,
        #[command(flatten)]
        dirs: Dirs,
        #[command(subcommand)]
        command: client::ImagesCommand,
    },
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    // libcgroups' own warnings are advisory (controllers it does not know, like rdma and misc;
    // a slice systemd has not made yet); what fails comes back to Berth as an error.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{default},h2=info,hyper=info,tower=info,rustls=info,libcgroups=error")));
    use std::io::IsTerminal;
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(std::io::stderr().is_terminal()).with_writer(std::io::stderr).init();
}

fn main() -> Result<()> {
    // Helper roles (container monitor, pod namespaces, exec) run before anything else:
    // they must stay single-threaded.
    if let Some(code) = berth::runtime::process::dispatch() {
        std::process::exit(code);
    }
    // Read (and taken out of the environment the daemon's children inherit) while this
    // process still has one thread.
    let notifier = berth::util::sd_notify::Notifier::from_env();
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if rustls::crypto::ring::default_provider().install_default().is_err() {
        bail!("could not install the TLS crypto provider");
    }
    let file = config::load_file(cli.config.as_deref())?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Runtime { dirs, flags } => rt.block_on(run_runtime(file.resolve(dirs.data_dir, dirs.run_dir), flags, None, notifier)),
        Command::Node { dirs, flags, node } => rt.block_on(run_runtime(file.resolve(dirs.data_dir, dirs.run_dir), flags, Some(node), notifier)),
        Command::Server { args } => rt.block_on(run_server(args)),
        Command::Logs { socket, dirs, opts } => {
            let cfg = file.resolve(dirs.data_dir, dirs.run_dir);
            let socket = socket.unwrap_or_else(|| cfg.socket());
            rt.block_on(client::logs(&socket, opts))
        }
        Command::Images { socket, dirs, command } => {
            let cfg = file.resolve(dirs.data_dir, dirs.run_dir);
            let socket = socket.unwrap_or_else(|| cfg.socket());
            rt.block_on(client::run(&socket, command))
        }
    }
}

async fn run_runtime(mut cfg: config::Config, flags: RuntimeFlags, node: Option<NodeArgs>, notifier: Notifier) -> Result<()> {
    watchdog(&notifier);
    let pod_cidr = flags.pod_cidr;
    if let Some(a) = flags.streaming_address {
        cfg.streaming.address = a;
    }
    let store =
        ImageStore::open(&cfg.image_dir(), cfg.registry.clone()).with_context(|| format!("opening the image store in {}", cfg.image_dir().display()))?;
    let store = Arc::new(store);
    let images = Arc::new(CriImages::new(store.clone(), &cfg.pinned_images())?);
    let systemd_cgroup = cfg.cgroup_driver == config::CgroupDriver::Systemd;
    if systemd_cgroup && !std::path::Path::new("/run/systemd/system").exists() {
        bail!("cgroup_driver = \"systemd\" is configured but systemd is not running on this host: use cgroupfs");
    }
    if systemd_cgroup && berth::runtime::cgroups::host_mode() != berth::runtime::cgroups::CgroupMode::V2 {
        bail!("cgroup_driver = \"systemd\" needs the unified cgroup v2 hierarchy, and this host mounts cgroup v1: use cgroupfs (or boot with systemd.unified_cgroup_hierarchy=1)");
    }
    if let Some(n) = &node {
        berth::runtime::cgroup_paths::check_node_root(systemd_cgroup, &n.cgroup_root).map_err(|e| anyhow::anyhow!("--cgroup-root: {e}"))?;
    }
    for rl in &cfg.containers.rlimits {
        serde_json::from_value::<oci_spec::runtime::PosixRlimitType>(serde_json::Value::String(rl.kind.clone()))
            .map_err(|_| anyhow::anyhow!("config: unknown rlimit type {:?} (expected e.g. RLIMIT_NOFILE)", rl.kind))?;
    }
    let rt_cfg = RuntimeConfig {
        data_dir: cfg.data_dir.clone(),
        run_dir: cfg.run_dir.clone(),
        systemd_cgroup,
        rlimits: cfg.containers.rlimits.clone(),
        log_rotation: cfg.containers.log_rotation(node.is_some()).map_err(|e| anyhow::anyhow!("config: {e}"))?,
        handlers: berth::runtime::handlers::Handlers::new(cfg.runtimes.clone()).map_err(|e| anyhow::anyhow!("config: {e}"))?,
    };
    let mut net_cfg = cfg.network.clone();
    if let Some(cidr) = pod_cidr {
        net_cfg.pod_cidr = Some(cidr);
    }
    let network = Arc::new(Network::new(net_cfg, cfg.data_dir.join("network")));
    let rt = Runtime::open(rt_cfg, store.clone(), network).map_err(|e| anyhow::anyhow!("opening the runtime state: {e}"))?;
    rt.reconcile_network().await;
    let streaming = berth::streaming::StreamingServer::start(&cfg.streaming, &cfg.data_dir, rt.clone()).await?;
    let runtime = Arc::new(CriRuntime::new(rt, streaming));
    let (node_stop, node_stop_rx) = tokio::sync::watch::channel(false);
    let node_task = match node {
        Some(args) => Some(start_node(&cfg, args, runtime.clone(), images.clone(), node_stop_rx).await?),
        None => None,
    };
    let socket = cfg.socket();
    let listener = server::bind(&socket).await?;
    tracing::info!(socket = %socket.display(), data_dir = %cfg.data_dir.display(), "serving CRI");
    // Under a Type=notify unit: start-up is over once the socket takes connections.
    notifier.say(&format!("READY=1\nSTATUS=serving CRI on {}", socket.display()));
    // Clients like the kubelet keep their connections open for good: after the signal, give
    // requests in flight a moment, then close whatever is left.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let serve = server::serve(listener, &socket, images, runtime, TransferService::new(store), async move {
        let _ = stop_rx.changed().await;
    });
    tokio::pin!(serve);
    tokio::select! {
        r = &mut serve => r?,
        _ = shutdown_signal() => {
            notifier.say("STOPPING=1\nSTATUS=shutting down");
            let _ = stop_tx.send(true);
            match tokio::time::timeout(std::time::Duration::from_secs(2), &mut serve).await {
                Ok(r) => r?,
                Err(_) => {
                    tracing::info!("connections still open after 2 s: closing them");
                    let _ = std::fs::remove_file(&socket);
                }
            }
        }
    }
    let _ = node_stop.send(true);
    if let Some(t) = node_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The control plane: the Kubernetes API over the cluster store.
async fn run_server(args: ServerArgs) -> Result<()> {
    let opts = berth_apiserver::ServerOptions {
        data_dir: args.data_dir,
        listen: args.listen,
        etcd: (!args.datastore_endpoint.is_empty()).then(|| {
            let mut etcd = berth_store::EtcdConfig::new(args.datastore_endpoint);
            etcd.prefix = args.datastore_prefix;
            if args.datastore_cafile.is_some() || args.datastore_certfile.is_some() {
                etcd.tls = Some(berth_store::EtcdTls { ca_file: args.datastore_cafile, cert_file: args.datastore_certfile, key_file: args.datastore_keyfile });
            }
            etcd
        }),
        bookmark_interval: args.watch_bookmark_interval,
    };
    berth_apiserver::run(opts, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The kubelet half: pod workers for the manifest directory and the kubelet API.
async fn start_node(
    cfg: &config::Config,
    args: NodeArgs,
    runtime: Arc<CriRuntime>,
    images: Arc<CriImages>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>> {
    let node_name = args.node_name.unwrap_or_else(|| nix::unistd::gethostname().map(|h| h.to_string_lossy().to_string()).unwrap_or_else(|_| "berth".into()));
    let mut eviction = cfg.eviction.clone();
    eviction.hard = args.eviction_hard.or(eviction.hard);
    eviction.soft = args.eviction_soft.or(eviction.soft);
    eviction.soft_grace_period = args.eviction_soft_grace_period.or(eviction.soft_grace_period);
    eviction.max_pod_grace_period = args.eviction_max_pod_grace_period.or(eviction.max_pod_grace_period);
    eviction.pressure_transition_period = args.eviction_pressure_transition_period.or(eviction.pressure_transition_period);
    let mut image_gc = cfg.image_gc.clone();
    image_gc.high_threshold_percent = args.image_gc_high_threshold.or(image_gc.high_threshold_percent);
    image_gc.low_threshold_percent = args.image_gc_low_threshold.or(image_gc.low_threshold_percent);
    image_gc.minimum_age = args.minimum_image_ttl_duration.or(image_gc.minimum_age);
    let node_cfg = NodeConfig {
        node_name,
        node_ip: args.node_ip,
        manifest_dir: args.pod_manifest_path,
        state_dir: cfg.data_dir.join("node"),
        pods_dir: cfg.data_dir.join("pods"),
        log_dir: cfg.data_dir.join("pod-logs"),
        seccomp_dir: cfg.data_dir.join("seccomp"),
        cgroup_root: args.cgroup_root,
        pod_max_pids: (args.pod_max_pids > 0).then_some(args.pod_max_pids),
        sync_period: std::time::Duration::from_secs(1),
        cluster_domain: args.cluster_domain,
        cluster_dns: args.cluster_dns,
        eviction: eviction.settings().context("eviction settings")?,
        image_gc: image_gc.settings().context("image garbage collection settings")?,
    };
    let node = Node::new(node_cfg, runtime.clone(), images, runtime).context("preparing the node's directories")?;
    let addr = format!("{}:{}", args.kubelet_address, args.kubelet_port);
    let (bound, _api) = berth::node::api::serve(node.shared(), &addr).await?;
    tracing::info!(address = %bound, "serving the kubelet API");
    Ok(tokio::spawn(node.run(stop)))
}

/// Under a unit with WatchdogSec=: "still alive" at half the interval, from a task of the
/// daemon's runtime, so a daemon whose async threads are all stuck stops pinging and systemd
/// restarts it.
fn watchdog(notifier: &Notifier) {
    let Some(every) = notifier.ping_interval() else { return };
    tracing::info!(every_ms = every.as_millis() as u64, "pinging the systemd watchdog");
    let n = notifier.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            n.say("WATCHDOG=1");
        }
    });
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stop with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
