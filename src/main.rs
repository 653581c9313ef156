//! The berth binary: `berth runtime` (the CRI runtime daemon), `berth node` (runtime plus
//! kubelet on static pods), `berth server` (a single-node cluster: the Kubernetes API, the
//! scheduler and this machine as its node) and `berth images`/`berth logs` (clients of the
//! daemon).
use anyhow::{bail, Context, Result};
use berth::config;
use berth::node::Node;
use berth::util::sd_notify::Notifier;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

mod client;
mod daemon;
mod scheduler;

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
    /// How pod and container cgroups are made, as the kubelet's flag: `cgroupfs` (directly in
    /// the cgroup filesystem) or `systemd` (transient units, for hosts booted with systemd on
    /// cgroup v2). Overrides `cgroup_driver` of the config file (default cgroupfs).
    #[arg(long, value_enum)]
    cgroup_driver: Option<berth::config::CgroupDriver>,
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
    /// Cluster DNS server IPs (comma-separated) for pods with dnsPolicy ClusterFirst. `berth
    /// server` and `berth agent` serve them on this node (default: the 10th address of the
    /// service CIDR, 10.43.0.10 for an agent, as k3s); `berth node` only writes them into pods.
    #[arg(long, value_delimiter = ',')]
    cluster_dns: Vec<String>,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    cluster_domain: String,
    /// The host's resolver configuration, as the kubelet's flag: pods with dnsPolicy Default
    /// get it, and the cluster DNS forwards names outside the cluster to its nameservers.
    #[arg(long, default_value = berth::node::dns::SYSTEM_RESOLV_CONF)]
    resolv_conf: PathBuf,
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

/// How a node agent registers its Node.
#[derive(clap::Args, Clone)]
struct AgentArgs {
    /// Labels of the Node at registration (key=value, comma-separated), as the kubelet's flag.
    #[arg(long, value_delimiter = ',')]
    node_labels: Vec<String>,
    /// Taints of the Node at registration (key=value:Effect, comma-separated), as the kubelet's flag.
    #[arg(long, value_delimiter = ',')]
    register_with_taints: Vec<String>,
}

/// The cluster DNS of a joined agent.
#[derive(clap::Args, Clone)]
struct AgentDnsArgs {
    /// Do not serve cluster DNS on this node (the server runs with `--disable coredns`, or the
    /// cluster has DNS pods of its own behind the --cluster-dns address).
    #[arg(long)]
    disable_cluster_dns: bool,
}

/// Where a joining agent finds its cluster.
#[derive(clap::Args, Clone)]
struct JoinArgs {
    /// The apiserver to join (https://HOST:6443).
    #[arg(long)]
    server: String,
    /// The join token (`<id>.<secret>`: `<data-dir>/server/node-token` on the server).
    #[arg(long, env = "BERTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A file holding the join token (instead of --token).
    #[arg(long)]
    token_file: Option<PathBuf>,
}

/// The service proxy of the node agent (what kube-proxy does).
#[derive(clap::Args, Clone)]
struct ProxyArgs {
    /// Do not run the service proxy in this node agent, as k3s's flag: Services are then not
    /// reachable from this node unless something else programs them.
    #[arg(long)]
    disable_kube_proxy: bool,
    /// The nftables table the proxy owns (families ip and ip6).
    #[arg(long, default_value = berth::proxy::DEFAULT_TABLE, hide = true)]
    proxy_table: String,
    /// Where node ports are served, as kube-proxy's flag: `primary` (the Node's InternalIP and
    /// ExternalIP addresses; never loopback) or CIDRs of local addresses (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "primary")]
    nodeport_addresses: Vec<String>,
    /// The least time between the starts of two syncs of the proxy's rules (a Go duration).
    #[arg(long, default_value = "20ms", value_parser = parse_duration)]
    proxy_min_sync_period: std::time::Duration,
    /// How often the proxy writes its whole table again, repairing drift (a Go duration).
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    proxy_sync_period: std::time::Duration,
    /// Where the proxy serves /healthz and /livez (IP:port), as kube-proxy's
    /// --healthz-bind-address; empty: not served.
    #[arg(long, default_value = berth::proxy::DEFAULT_HEALTHZ_BIND_ADDRESS)]
    proxy_healthz_bind_address: String,
}

impl ProxyArgs {
    /// The proxy of node `node_name` (None: turned off); `cluster_cidrs` are where pods live
    /// beyond the Nodes' pod CIDRs.
    fn config(&self, node_name: &str, cluster_cidrs: Vec<String>, dns: Option<&berth::dns::DnsConfig>) -> Result<Option<berth::proxy::ProxyConfig>> {
        if self.disable_kube_proxy {
            return Ok(None);
        }
        let mut cfg = berth::proxy::ProxyConfig::new(node_name);
        cfg.table = self.proxy_table.clone();
        cfg.cluster_cidrs = cluster_cidrs;
        cfg.nodeport_addresses = berth::proxy::NodePortAddresses::parse(&self.nodeport_addresses)?;
        cfg.min_sync_period = self.proxy_min_sync_period;
        cfg.sync_period = self.proxy_sync_period;
        let healthz = self.proxy_healthz_bind_address.trim();
        cfg.healthz_bind_address =
            if healthz.is_empty() { None } else { Some(healthz.parse().map_err(|e| anyhow::anyhow!("--proxy-healthz-bind-address {healthz:?}: {e}"))?) };
        // the node-local DNS answers on the cluster DNS addresses itself: no rules for them
        cfg.skip_cluster_ips = dns.map(|d| d.addresses.clone()).unwrap_or_default();
        Ok(Some(cfg))
    }
}

#[derive(clap::Args, Clone)]
struct ServerArgs {
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
    /// How often the store drops history older than the previous round (a Go duration; 0: never),
    /// as kube-apiserver's flag of the same name.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    etcd_compaction_interval: std::time::Duration,
    /// Resources encrypted at rest (an apiserver.config.k8s.io/v1 EncryptionConfiguration file:
    /// aescbc, aesgcm, identity), as kube-apiserver's flag.
    #[arg(long)]
    encryption_provider_config: Option<PathBuf>,
    /// Static bearer tokens, as kube-apiserver's flag: a CSV file of `token,user,uid,"group1,group2"`.
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// The issuer (`iss`) of service account tokens, as kube-apiserver's flag: given more than
    /// once, the first issues tokens and all are accepted (default
    /// https://kubernetes.default.svc.cluster.local).
    #[arg(long)]
    service_account_issuer: Vec<String>,
    /// What tokens must be meant for (comma-separated), as kube-apiserver's flag (default: the
    /// first service account issuer).
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// More names or addresses for the serving certificate (comma-separated), as k3s's flag:
    /// those agents reach the server at. Applies when the certificate is made (first start).
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// The audit policy (an audit.k8s.io/v1 Policy file), as kube-apiserver's flag; with
    /// --audit-log-path, requests are audited at the levels it gives.
    #[arg(long, requires = "audit_log_path")]
    audit_policy_file: Option<PathBuf>,
    /// Where audit events go as JSON lines (`-`: standard output), as kube-apiserver's flag.
    #[arg(long, requires = "audit_policy_file")]
    audit_log_path: Option<PathBuf>,
    /// Rotate the audit log when it reaches this many megabytes (0: never).
    #[arg(long, default_value_t = 100)]
    audit_log_maxsize: u64,
    /// Rotated audit log files kept (0: all).
    #[arg(long, default_value_t = 10)]
    audit_log_maxbackup: usize,
    /// The range pod CIDRs of nodes are allocated from (IPv4), as kube-controller-manager's
    /// flag with --allocate-node-cidrs; a node registered with its own --pod-cidr keeps it.
    #[arg(long, default_value = "10.42.0.0/16")]
    cluster_cidr: String,
    /// The range cluster IPs of Services come from, as kube-apiserver's --service-cluster-ip-range
    /// (k3s's name and default): one CIDR, or "v4cidr,v6cidr" for dual-stack. Its first address
    /// is the `kubernetes` Service's.
    #[arg(long, default_value = berth_apiserver::services::DEFAULT_SERVICE_CIDR)]
    service_cidr: String,
    /// The ports NodePort and LoadBalancer Services get node ports from, as kube-apiserver's flag.
    #[arg(long, default_value = berth_apiserver::services::DEFAULT_NODE_PORT_RANGE)]
    service_node_port_range: String,
    /// This server's address in the `kubernetes` Service's endpoints, as kube-apiserver's flag
    /// (default: the --listen address, or the default route's interface address).
    #[arg(long)]
    advertise_address: Option<std::net::IpAddr>,
    /// The prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// How long a node's kubelet may be silent (no Lease renewal, no status) before its Node is
    /// marked Unknown and tainted unreachable, as kube-controller-manager's flag.
    #[arg(long, default_value = "40s", value_parser = parse_duration)]
    node_monitor_grace_period: std::time::Duration,
    /// How often the node lifecycle controller checks the nodes.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    node_monitor_period: std::time::Duration,
    /// Run the control plane only: no node agent in this server (no pods run on this machine).
    #[arg(long)]
    disable_agent: bool,
    /// Do not run the scheduler in this server (another scheduler binds pods).
    #[arg(long)]
    disable_scheduler: bool,
    /// The controllers to run, as kube-controller-manager's flag: `*` for all, a name to turn
    /// one on, `-name` to turn it off (cronjob, daemonset, deployment, disruption, endpoint,
    /// endpointslice, garbagecollector, horizontalpodautoscaling, job, namespace, nodeipam,
    /// nodelifecycle, persistentvolume-binder, podgc, replicaset, replicationcontroller,
    /// service-lb, statefulset, ttl-after-finished). Without the namespace
    /// controller deleted namespaces stay Terminating, as upstream.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    controllers: Vec<String>,
    /// Finished (Succeeded or Failed) pods kept before the pod garbage collector deletes the
    /// oldest; 0 keeps them all.
    #[arg(long, default_value_t = 12500)]
    terminated_pod_gc_threshold: usize,
    /// The most endpoints the EndpointSlice controller puts in one EndpointSlice, as
    /// kube-controller-manager's flag (1 to 1000).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..=1000))]
    max_endpoints_per_slice: u16,
    /// Packaged components not to deploy, as k3s's flag (comma-separated): `local-storage` (the
    /// default `local-path` StorageClass and its provisioner), `servicelb` (load-balancer
    /// addresses for LoadBalancer Services: the service-lb controller), `metrics-server` (the
    /// resource metrics API, metrics.k8s.io, behind `kubectl top` and the HorizontalPodAutoscaler),
    /// `coredns` (the cluster DNS: the `kube-dns` Service and this server's node-local DNS; pods
    /// still get --cluster-dns).
    #[arg(long, value_delimiter = ',', value_parser = ["local-storage", "servicelb", "metrics-server", "coredns"])]
    disable: Vec<String>,
    /// How often the HorizontalPodAutoscaler controller reconciles each autoscaler, as
    /// kube-controller-manager's flag.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_sync_period: std::time::Duration,
    /// How far the usage ratio may be from 1.0 before the autoscaler scales, as
    /// kube-controller-manager's flag.
    #[arg(long, default_value_t = 0.1)]
    horizontal_pod_autoscaler_tolerance: f64,
    /// How long the autoscaler looks back for a higher recommendation before it scales down
    /// (autoscalers without their own scale-down window), as kube-controller-manager's flag.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    horizontal_pod_autoscaler_downscale_stabilization: std::time::Duration,
    /// How long after a pod starts its CPU samples may be from before it was ready, as
    /// kube-controller-manager's flag.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    horizontal_pod_autoscaler_cpu_initialization_period: std::time::Duration,
    /// How long after a pod starts it may turn unready without having been ready, as
    /// kube-controller-manager's flag.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    horizontal_pod_autoscaler_initial_readiness_delay: std::time::Duration,
    /// How many autoscalers are reconciled at once, as kube-controller-manager's flag.
    #[arg(long, default_value_t = 5)]
    concurrent_horizontal_pod_autoscaler_syncs: usize,
    /// How often the resource metrics API scrapes every kubelet's /metrics/resource, as
    /// metrics-server's flag (a Go duration); usage is measured over this window.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    metric_resolution: std::time::Duration,
    /// Where the local-path provisioner keeps volumes on each node, as k3s's flag (k3s:
    /// /var/lib/rancher/k3s/storage).
    #[arg(long, default_value = berth_control::volume::local_path::DEFAULT_STORAGE_ROOT)]
    default_local_storage_path: PathBuf,
    /// The image of the local-path provisioner's helper pods, which remove a released volume's
    /// directory on another node than the server's own (k3s ships this busybox).
    #[arg(long, default_value = berth_control::volume::helper_pod::DEFAULT_IMAGE)]
    local_path_helper_image: String,
    /// The scheduler's KubeSchedulerConfiguration (kubescheduler.config.k8s.io/v1: profiles,
    /// plugin weights, NodeResourcesFit's scoring strategy, percentageOfNodesToScore).
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
}

/// A joined agent's cluster DNS address unless given: the default service CIDR's (k3s's).
const DEFAULT_AGENT_CLUSTER_DNS: &str = "10.43.0.10";

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
    /// A single-node cluster: the Kubernetes API over HTTPS from the cluster store, the
    /// scheduler, and a node agent (runtime and kubelet) that runs the pods bound to this
    /// machine. Control-plane state lives in <data-dir>/server: a CA, a serving certificate
    /// and admin.kubeconfig are written there on first start.
    Server {
        #[command(flatten)]
        dirs: Dirs,
        #[command(flatten)]
        flags: RuntimeFlags,
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        agent: AgentArgs,
        #[command(flatten)]
        proxy: ProxyArgs,
        #[command(flatten)]
        args: ServerArgs,
    },
    /// Join a cluster as a node: TLS bootstrap with the join token (the CA from the server's
    /// signed cluster-info, a client certificate from its signer, kept in <data-dir>/agent),
    /// then the runtime and kubelet run the pods bound to this node.
    Agent {
        #[command(flatten)]
        dirs: Dirs,
        #[command(flatten)]
        flags: RuntimeFlags,
        #[command(flatten)]
        node: NodeArgs,
        #[command(flatten)]
        agent: AgentArgs,
        #[command(flatten)]
        proxy: ProxyArgs,
        #[command(flatten)]
        join: JoinArgs,
        #[command(flatten)]
        dns: AgentDnsArgs,
    },
    /// The scheduler on its own, as kube-scheduler: binds the pods of its profiles'
    /// schedulerNames through any apiserver it reaches with a kubeconfig, under leader election
    /// (`berth server` runs the same scheduler in process).
    Scheduler {
        #[command(flatten)]
        args: scheduler::SchedulerArgs,
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
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // hickory-server logs every DNS request at info
        tracing_subscriber::EnvFilter::new(format!(
            "{default},h2=info,hyper=info,tower=info,rustls=info,libcgroups=error,hickory_server=warn,hickory_proto=warn"
        ))
    });
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
    if matches!(cli.command, Command::Server { .. } | Command::Scheduler { .. }) {
        tune_malloc_for_server();
    }
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Runtime { dirs, flags } => rt.block_on(run_runtime(file.resolve(dirs.data_dir, dirs.run_dir), flags, None, notifier)),
        Command::Node { dirs, flags, node } => rt.block_on(run_runtime(file.resolve(dirs.data_dir, dirs.run_dir), flags, Some(node), notifier)),
        Command::Server { dirs, flags, node, agent, proxy, args } => {
            rt.block_on(run_server(file.resolve(dirs.data_dir, dirs.run_dir), flags, node, agent, proxy, args, notifier))
        }
        Command::Agent { dirs, flags, node, agent, proxy, join, dns } => {
            rt.block_on(run_agent(file.resolve(dirs.data_dir, dirs.run_dir), flags, node, agent, proxy, join, dns, notifier))
        }
        Command::Scheduler { args } => rt.block_on(scheduler::run(args, shutdown_signal())),
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

/// glibc malloc settings for the apiserver, set while the process has one thread. Its large
/// short-lived buffers (list answers, a list's store rows) otherwise land in up to 8 arenas per
/// core, which keep the freed memory: with 10,000 pods a few lists took the RSS from 60 to over
/// 200 MiB. Two arenas, and buffers from 256 KiB up mapped on their own (given back to the
/// kernel when freed), keep it near the live data.
fn tune_malloc_for_server() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    for (param, value) in [(libc::M_ARENA_MAX, 2), (libc::M_MMAP_THRESHOLD, 256 << 10), (libc::M_TRIM_THRESHOLD, 1 << 20)] {
        // SAFETY: mallopt only changes allocator parameters; no other thread exists yet.
        if unsafe { libc::mallopt(param, value) } != 1 {
            tracing::debug!(param, value, "mallopt refused a setting");
        }
    }
}

async fn run_runtime(mut cfg: config::Config, flags: RuntimeFlags, node: Option<NodeArgs>, notifier: Notifier) -> Result<()> {
    watchdog(&notifier);
    let parts = daemon::open(&mut cfg, flags, node.as_ref().map(|n| n.cgroup_root.as_str())).await?;
    let (node_stop, node_stop_rx) = tokio::sync::watch::channel(false);
    let node_task = match node {
        Some(args) => {
            // a standalone node: its API is open, as an upstream kubelet's with default flags
            let (node, _port, _serving) = daemon::node(&cfg, args, &parts, berth::node::api_auth::Auth::open()).await?;
            Some(tokio::spawn(node.run(node_stop_rx, None)))
        }
        None => None,
    };
    daemon::serve_cri(&cfg, &parts, Some(&notifier), shutdown_signal()).await?;
    let _ = node_stop.send(true);
    if let Some(t) = node_task {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// The node agent inside `berth server`, prepared before the API starts.
struct LocalAgent {
    node: Node,
    node_name: String,
    node_ip: String,
    kubelet_port: u16,
    labels: std::collections::BTreeMap<String, String>,
    taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// The kubelet API's gate, opened to the cluster's callers once the node has a client.
    auth: Arc<berth::node::api_auth::Auth>,
    /// The node's own pod CIDR (flag or config), registered as its spec.podCIDR.
    pod_cidr: Option<String>,
    /// The service proxy (None: --disable-kube-proxy).
    proxy: Option<berth::proxy::ProxyConfig>,
    /// The cluster DNS this node serves, if it does.
    dns: Option<berth::dns::DnsConfig>,
}

/// The cluster: the Kubernetes API over the cluster store, the scheduler, and (unless
/// --disable-agent) this machine as its node.
async fn run_server(
    mut cfg: config::Config,
    flags: RuntimeFlags,
    mut node_args: NodeArgs,
    agent: AgentArgs,
    proxy: ProxyArgs,
    args: ServerArgs,
    notifier: Notifier,
) -> Result<()> {
    watchdog(&notifier);
    let service_network = berth_apiserver::services::ServiceNetwork::parse(&args.service_cidr, &args.service_node_port_range)?;
    if node_args.cluster_dns.is_empty() {
        node_args.cluster_dns.extend(service_network.cluster_dns_ip().map(|ip| ip.to_string()));
    }
    let coredns = !args.disable.iter().any(|d| d == "coredns");
    let dns = cluster_dns(&node_args, coredns)?;
    let opts = berth_apiserver::ServerOptions {
        data_dir: cfg.data_dir.join("server"),
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
        compaction_interval: Some(args.etcd_compaction_interval).filter(|d| !d.is_zero()),
        encryption_config: args.encryption_provider_config,
        token_auth_file: args.token_auth_file,
        service_account_issuers: args.service_account_issuer,
        api_audiences: args.api_audiences,
        tls_sans: args.tls_san,
        audit: match (args.audit_policy_file, args.audit_log_path) {
            (Some(policy_file), Some(log_path)) => {
                Some(berth_apiserver::audit::AuditConfig { policy_file, log_path, max_size_mb: args.audit_log_maxsize, max_backups: args.audit_log_maxbackup })
            }
            _ => None,
        },
        service_network,
        advertise_address: args.advertise_address,
        resource_metrics: (!args.disable.iter().any(|d| d == "metrics-server")).then_some(args.metric_resolution).filter(|r| !r.is_zero()),
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let ipam = berth_control::nodeipam::Allocator::new(&args.cluster_cidr, args.node_cidr_mask_size)?;
    let lifecycle = berth_control::nodelifecycle::Config { grace: args.node_monitor_grace_period, monitor_period: args.node_monitor_period };
    let mut controller_names = args.controllers.clone();
    if args.disable.iter().any(|d| d == "servicelb") {
        controller_names.push("-service-lb".into());
    }
    let controllers = berth_control::selection::Selection::parse(&controller_names).context("--controllers")?;
    let mut controller_options = berth_control::manager::Options {
        terminated_pod_gc_threshold: args.terminated_pod_gc_threshold,
        local_path: None,
        max_endpoints_per_slice: usize::from(args.max_endpoints_per_slice),
        autoscaler: berth_control::podautoscaler::Options {
            sync_period: args.horizontal_pod_autoscaler_sync_period.max(std::time::Duration::from_millis(100)),
            tolerance: args.horizontal_pod_autoscaler_tolerance,
            downscale_stabilization: args.horizontal_pod_autoscaler_downscale_stabilization,
            cpu_initialization_period: args.horizontal_pod_autoscaler_cpu_initialization_period,
            initial_readiness_delay: args.horizontal_pod_autoscaler_initial_readiness_delay,
            workers: args.concurrent_horizontal_pod_autoscaler_syncs.max(1),
        },
    };
    let local_storage = !args.disable.iter().any(|d| d == "local-storage");
    let profiles = if args.disable_scheduler {
        None
    } else {
        let cfg = match &args.scheduler_config {
            Some(path) => berth_control::scheduler::config::read(path).with_context(|| format!("--scheduler-config {}", path.display()))?,
            None => Default::default(),
        };
        Some(scheduler::profiles(&cfg)?)
    };
    // The agent's runtime is open, and its CRI socket and kubelet API serve, before the API
    // starts; it joins the cluster once the API is up.
    let mut cri_task = None;
    let local = if args.disable_agent {
        None
    } else {
        if !nix::unistd::Uid::effective().is_root() {
            bail!("berth server runs this machine as a node, which needs root (namespaces, mounts, cgroups); --disable-agent runs the control plane alone");
        }
        let labels = berth::node::cluster::flags::parse_labels(&agent.node_labels)?;
        let taints = berth::node::cluster::flags::parse_taints(&agent.register_with_taints)?;
        let pod_cidr = flags.pod_cidr.clone().or_else(|| cfg.network.pod_cidr.clone());
        cfg.eviction.hard.get_or_insert_with(|| berth::node::eviction::CLUSTER_NODE_HARD.to_string());
        let parts = daemon::open(&mut cfg, flags, Some(&node_args.cgroup_root)).await?;
        let node_ip = node_args.node_ip.clone();
        let auth = berth::node::api_auth::Auth::closed();
        let (node, kubelet_port, _serving) = daemon::node(&cfg, node_args, &parts, auth.clone()).await?;
        let node_name = node.shared().cfg.node_name.clone();
        let proxy = proxy.config(&node_name, vec![args.cluster_cidr.clone()], dns.as_ref())?;
        let cfg = cfg.clone();
        let stop = stop.clone();
        cri_task = Some(tokio::spawn(async move { daemon::serve_cri(&cfg, &parts, None, stop.cancelled()).await }));
        Some(LocalAgent { node, node_name, node_ip, kubelet_port, labels, taints, auth, pod_cidr, proxy, dns: dns.clone() })
    };
    if local_storage {
        // the provisioner removes directories itself on this server's own node, with a helper pod
        // on another node
        let own_node = local.as_ref().map(|a| a.node_name.clone());
        controller_options.local_path = Some(
            berth_control::volume::local_path::LocalPath::new(&args.default_local_storage_path, own_node)
                .with_helper_image(args.local_path_helper_image.clone()),
        );
    }
    let (node_stop, node_stop_rx) = tokio::sync::watch::channel(false);
    let (node_task_tx, node_task_rx) = tokio::sync::oneshot::channel();
    let on_started: berth_apiserver::OnStarted = {
        let stop = stop.clone();
        let notifier = notifier.clone();
        Box::new(move |api| {
            if local_storage {
                create_local_storage_class(api.clone());
            }
            if let Some(ip) = dns.as_ref().and_then(|d| d.addresses.first()) {
                create_kube_dns_service(api.clone(), *ip);
            }
            start_controllers(api.clone(), ipam, lifecycle, controllers, controller_options, stop.clone());
            if let Some(profiles) = profiles {
                scheduler::start_in_server(api.clone(), profiles, stop);
            }
            match local {
                Some(agent) => {
                    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
                    let _ = node_task_tx.send(start_agent(api, agent, ready_tx, node_stop_rx));
                    notify_when_ready(notifier, ready_rx, "READY=1\nSTATUS=serving the Kubernetes API; this node runs pods");
                }
                None => notifier.say("READY=1\nSTATUS=serving the Kubernetes API"),
            }
        })
    };
    let signal = {
        let stop = stop.clone();
        async move {
            shutdown_signal().await;
            notifier.say("STOPPING=1\nSTATUS=shutting down");
            stop.cancel();
        }
    };
    let served = berth_apiserver::run_with(opts, signal, on_started).await;
    stop.cancel();
    let _ = node_stop.send(true);
    if let Ok(task) = node_task_rx.await {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    }
    if let Some(task) = cri_task {
        task.await??;
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// This machine as a node of the cluster, through the in-process API as system:node:<name>:
/// registration, heartbeat, the pods bound to it.
fn start_agent(
    api: Arc<berth_apiserver::Api>,
    agent: LocalAgent,
    ready: tokio::sync::watch::Sender<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let user = berth_apiserver::User::new(format!("system:node:{}", agent.node_name), &["system:nodes", "system:authenticated"]);
    let ca = api.ca_pem().map(String::from);
    let client = kube::Client::new(berth_apiserver::in_process(api, user), "default");
    match ca {
        Some(ca) => {
            if let Err(e) = agent.auth.require(&ca, client.clone(), &agent.node_name) {
                tracing::error!(error = %e, "the kubelet API cannot check its callers: it stays closed");
            }
        }
        None => tracing::error!("the API has no CA: the kubelet API stays closed"),
    }
    run_node_in_cluster(client, agent, ready, stop)
}

/// Tells systemd `message` (READY=1 ...) once the node reports itself Ready: a unit ordered
/// after this one starts when pods can run here.
fn notify_when_ready(notifier: Notifier, mut ready: tokio::sync::watch::Receiver<bool>, message: &'static str) {
    tokio::spawn(async move {
        if ready.wait_for(|r| *r).await.is_ok() {
            tracing::info!("the node is Ready");
            notifier.say(message);
        }
    });
}

/// The node following its cluster through `client`.
fn run_node_in_cluster(
    client: kube::Client,
    agent: LocalAgent,
    ready: tokio::sync::watch::Sender<bool>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let cluster = berth::node::cluster::ClusterConfig {
        client,
        node_name: agent.node_name,
        node_ip: agent.node_ip,
        kubelet_port: agent.kubelet_port,
        labels: agent.labels,
        taints: agent.taints,
        pod_cidr: agent.pod_cidr,
        ready,
    };
    if let Some(proxy) = agent.proxy {
        tokio::spawn(berth::proxy::run(cluster.client.clone(), proxy, stop.clone()));
    }
    let dns = agent.dns.map(|cfg| berth::dns::spawn(cluster.client.clone(), cfg, stop.clone()));
    let pods = berth::node::cluster::start(cluster, agent.node.shared(), stop.clone());
    tokio::spawn(async move {
        agent.node.run(stop, Some(pods)).await;
        if let Some(dns) = dns {
            let _ = dns.await;
        }
    })
}

/// A node of a remote cluster: joins it with the token (or the credentials of an earlier
/// join), then runs like the server's own agent, over HTTPS.
#[allow(clippy::too_many_arguments)] // the agent's flag groups, as clap parsed them
async fn run_agent(
    mut cfg: config::Config,
    flags: RuntimeFlags,
    mut node_args: NodeArgs,
    agent: AgentArgs,
    proxy: ProxyArgs,
    join: JoinArgs,
    dns_args: AgentDnsArgs,
    notifier: Notifier,
) -> Result<()> {
    watchdog(&notifier);
    // the server's service CIDR is not known here: k3s's default address
    if node_args.cluster_dns.is_empty() {
        node_args.cluster_dns.push(DEFAULT_AGENT_CLUSTER_DNS.to_string());
    }
    let dns = cluster_dns(&node_args, !dns_args.disable_cluster_dns)?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("berth agent runs pods (namespaces, mounts, cgroups): run it as root");
    }
    let token = match (join.token, &join.token_file) {
        (Some(t), None) => t,
        (None, Some(path)) => tokio::fs::read_to_string(path).await.with_context(|| format!("--token-file {}", path.display()))?.trim().to_string(),
        (Some(_), Some(_)) => bail!("give --token or --token-file, not both"),
        (None, None) => bail!("berth agent needs the join token: --token (or BERTH_TOKEN) or --token-file"),
    };
    let labels = berth::node::cluster::flags::parse_labels(&agent.node_labels)?;
    let taints = berth::node::cluster::flags::parse_taints(&agent.register_with_taints)?;
    // Joined first: a node the cluster does not take runs nothing.
    let node_name = daemon::node_name(node_args.node_name.as_deref());
    let proxy = proxy.config(&node_name, vec![], dns.as_ref())?;
    let join = berth::node::cluster::join::Join { server: join.server, token, node_name: node_name.clone(), dir: cfg.data_dir.join("agent") };
    let creds = berth::node::cluster::join::credentials(&join).await?;
    // the client certificate is renewed in place while the agent runs
    let identity = berth::node::cluster::rotation::Identity::new(&creds)?;
    let client = berth::node::cluster::rotation::client(&join.server, &creds.ca_pem, identity.clone()).context("the cluster client")?;
    let pod_cidr = flags.pod_cidr.clone().or_else(|| cfg.network.pod_cidr.clone());
    cfg.eviction.hard.get_or_insert_with(|| berth::node::eviction::CLUSTER_NODE_HARD.to_string());
    let parts = daemon::open(&mut cfg, flags, Some(&node_args.cgroup_root)).await?;
    let node_ip = node_args.node_ip.clone();
    let auth = berth::node::api_auth::Auth::closed();
    auth.require(&creds.ca_pem, client.clone(), &node_name).map_err(|e| anyhow::anyhow!("the kubelet API's client certificate check: {e}"))?;
    let (node, kubelet_port, serving) = daemon::node(&cfg, node_args, &parts, auth.clone()).await?;
    let stop = tokio_util::sync::CancellationToken::new();
    let cri_task = {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        tokio::spawn(async move { daemon::serve_cri(&cfg, &parts, None, stop.cancelled()).await })
    };
    let (node_stop, node_stop_rx) = tokio::sync::watch::channel(false);
    // The kubelet API's serving certificate from the cluster, once the Node (with the addresses
    // the certificate names) is registered.
    {
        let (client, name, ip, dir) = (client.clone(), node_name.clone(), node_ip.clone(), join.dir.clone());
        tokio::spawn(async move {
            let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(client.clone());
            let registered =
                |n: &k8s_openapi::api::core::v1::Node| n.status.as_ref().and_then(|s| s.addresses.as_ref()).is_some_and(|a| a.iter().any(|a| a.address == ip));
            while !matches!(nodes.get_opt(&name).await, Ok(Some(n)) if registered(&n)) {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            }
            match berth::node::cluster::join::serving_certificate(client, &name, &[ip, name.clone()], &dir).await {
                Ok((cert, key)) => match serving.replace(cert.as_bytes(), key.as_bytes(), "the cluster's kubelet serving certificate") {
                    Ok(()) => tracing::info!("the kubelet API serves the certificate the cluster signed"),
                    Err(e) => tracing::warn!(error = %e, "the kubelet serving certificate"),
                },
                Err(e) => tracing::warn!(error = %e, "the kubelet serving certificate (the API keeps its self-signed one)"),
            }
        });
    }
    let (ready_tx, ready_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(berth::node::cluster::rotation::rotate(join.clone(), creds.clone(), identity, client.clone(), node_stop_rx.clone()));
    let task =
        run_node_in_cluster(client, LocalAgent { node, node_name, node_ip, kubelet_port, labels, taints, auth, pod_cidr, proxy, dns }, ready_tx, node_stop_rx);
    notify_when_ready(notifier.clone(), ready_rx, "READY=1\nSTATUS=running the pods of this node");
    shutdown_signal().await;
    notifier.say("STOPPING=1\nSTATUS=shutting down");
    stop.cancel();
    let _ = node_stop.send(true);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
    cri_task.await??;
    tracing::info!("stopped");
    Ok(())
}

/// The controllers inside `berth server` (node IPAM, node lifecycle, the workload controllers), as user system:kube-controller-manager
/// under leader election on the Lease kube-system/kube-controller-manager (upstream's lock).
fn start_controllers(
    api: Arc<berth_apiserver::Api>,
    ipam: berth_control::nodeipam::Allocator,
    lifecycle: berth_control::nodelifecycle::Config,
    selection: berth_control::selection::Selection,
    options: berth_control::manager::Options,
    stop: tokio_util::sync::CancellationToken,
) {
    let user = berth_apiserver::User::new("system:kube-controller-manager", &["system:authenticated"]);
    let client = kube::Client::new(berth_apiserver::in_process(api.clone(), user), "default");
    let host = nix::unistd::gethostname().map(|h| h.to_string_lossy().to_string()).unwrap_or_else(|_| "berth".into());
    let identity = format!("{host}_{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
    let cfg = berth_control::leader::ElectionConfig::new("kube-system", "kube-controller-manager", identity);
    let elector = berth_control::leader::Elector::new(client.clone(), cfg);
    // each controller as its own kube-system service account (upstream's
    // --use-service-account-credentials), with the rights of its bootstrap role
    let node_client = kube::Client::new(berth_apiserver::in_process(api.clone(), controller_user("node-controller")), "default");
    tokio::spawn(elector.run(stop, move |token| {
        let (client, node_client, ipam, lifecycle, api, selection, options) =
            (client.clone(), node_client.clone(), ipam.clone(), lifecycle.clone(), api.clone(), selection.clone(), options.clone());
        async move {
            let ipam = async {
                if selection.enabled("nodeipam") {
                    berth_control::nodeipam::run(node_client.clone(), ipam, token.clone()).await
                }
            };
            let lifecycle = async {
                if selection.enabled("nodelifecycle") {
                    berth_control::nodelifecycle::run(client.clone(), node_client.clone(), lifecycle, token.clone()).await
                }
            };
            let client_for = move |name: &str| kube::Client::new(berth_apiserver::in_process(api.clone(), controller_user(name)), "default");
            let workloads = berth_control::manager::run_workloads(client.clone(), client_for, &selection, &options, token.clone());
            tokio::join!(ipam, lifecycle, workloads);
        }
    }));
}

/// The cluster DNS a node serves: its --cluster-dns addresses, unless turned off or none.
fn cluster_dns(node_args: &NodeArgs, enabled: bool) -> Result<Option<berth::dns::DnsConfig>> {
    if !enabled || node_args.cluster_dns.is_empty() {
        return Ok(None);
    }
    let cfg = berth::dns::DnsConfig::parse(&node_args.cluster_dns, &node_args.cluster_domain, node_args.resolv_conf.clone())
        .with_context(|| format!("--cluster-dns {}", node_args.cluster_dns.join(",")))?;
    Ok(Some(cfg))
}

/// The `kube-dns` Service for the cluster DNS address (k3s's coredns component), made at server
/// start unless one exists; as the server itself (system:masters).
fn create_kube_dns_service(api: Arc<berth_apiserver::Api>, ip: std::net::IpAddr) {
    let user = berth_apiserver::User::new("system:apiserver", &["system:masters", "system:authenticated"]);
    let client = kube::Client::new(berth_apiserver::in_process(api, user), "default");
    tokio::spawn(berth::dns::service::ensure(client, ip));
}

/// The `local-path` StorageClass (k3s's local-storage component), made at server start unless a
/// class of that name exists; as the server itself (system:masters), retried until it is there.
fn create_local_storage_class(api: Arc<berth_apiserver::Api>) {
    let user = berth_apiserver::User::new("system:apiserver", &["system:masters", "system:authenticated"]);
    let client = kube::Client::new(berth_apiserver::in_process(api, user), "default");
    tokio::spawn(async move {
        let mut delay = std::time::Duration::from_millis(200);
        while let Err(e) = berth_control::volume::local_path::ensure_class(client.clone()).await {
            tracing::warn!(error = %e, "creating the local-path StorageClass; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(30));
        }
    });
}

/// The user a controller of `berth server` acts as: the kube-system service account `name`.
fn controller_user(name: &str) -> berth_apiserver::User {
    berth_apiserver::User::new(
        format!("system:serviceaccount:kube-system:{name}"),
        &["system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"],
    )
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
