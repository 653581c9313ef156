//! The node half of the binary, assembled from the config: the image store, the runtime and
//! its network, the CRI services on the socket, and the kubelet (pod workers and the kubelet
//! API). `berth runtime`, `berth node` and `berth server` (its in-process agent) share it.
use anyhow::{bail, Context, Result};
use berth::config;
use berth::cri::{images::CriImages, runtime::CriRuntime, server, transfer::TransferService};
use berth::image::store::ImageStore;
use berth::network::Network;
use berth::node::{Node, NodeConfig};
use berth::runtime::{Runtime, RuntimeConfig};
use berth::util::sd_notify::Notifier;
use std::future::Future;
use std::sync::Arc;

use crate::{NodeArgs, RuntimeFlags};

/// The runtime's parts, opened.
pub struct Parts {
    pub store: Arc<ImageStore>,
    pub images: Arc<CriImages>,
    pub runtime: Arc<CriRuntime>,
}

/// Opens the image store and the runtime state (and checks the cgroup setup): for a node,
/// `cgroup_root` is its pod cgroup root.
pub async fn open(cfg: &mut config::Config, flags: RuntimeFlags, cgroup_root: Option<&str>) -> Result<Parts> {
    let pod_cidr = flags.pod_cidr;
    if let Some(a) = flags.streaming_address {
        cfg.streaming.address = a;
    }
    if let Some(d) = flags.cgroup_driver {
        cfg.cgroup_driver = d;
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
    if let Some(root) = cgroup_root {
        berth::runtime::cgroup_paths::check_node_root(systemd_cgroup, root).map_err(|e| anyhow::anyhow!("--cgroup-root: {e}"))?;
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
        log_rotation: cfg.containers.log_rotation(cgroup_root.is_some()).map_err(|e| anyhow::anyhow!("config: {e}"))?,
        handlers: berth::runtime::handlers::Handlers::new(cfg.runtimes.clone()).map_err(|e| anyhow::anyhow!("config: {e}"))?,
    };
    let mut net_cfg = cfg.network.clone();
    if let Some(cidr) = pod_cidr {
        net_cfg.pod_cidr = Some(cidr);
    }
    let network = Arc::new(Network::new(net_cfg, cfg.data_dir.join("network"), cfg.run_dir.join("network")));
    let rt = Runtime::open(rt_cfg, store.clone(), network).map_err(|e| anyhow::anyhow!("opening the runtime state: {e}"))?;
    rt.reconcile_network().await;
    let streaming = berth::streaming::StreamingServer::start(&cfg.streaming, &cfg.data_dir, rt.clone()).await?;
    let runtime = Arc::new(CriRuntime::new(rt, streaming));
    Ok(Parts { store, images, runtime })
}

/// The kubelet half, ready to run: the pod workers (for the manifest directory, and the
/// cluster's pods when a cluster source is given to `run`) and the kubelet API, already
/// serving. Returns the node and the API's port.
/// The node, the port of its kubelet API and that API's serving certificate (replaceable).
pub async fn node(
    cfg: &config::Config,
    args: NodeArgs,
    parts: &Parts,
    auth: Arc<berth::node::api_auth::Auth>,
) -> Result<(Node, u16, Arc<berth::util::tls::ServingCert>)> {
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
        node_name: node_name(args.node_name.as_deref()),
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
        resolv_conf: args.resolv_conf,
        eviction: eviction.settings().context("eviction settings")?,
        image_gc: image_gc.settings().context("image garbage collection settings")?,
    };
    let runtime = parts.runtime.clone();
    let node = Node::new(node_cfg, runtime.clone(), parts.images.clone(), runtime).context("preparing the node's directories")?;
    let addr = format!("{}:{}", args.kubelet_address, args.kubelet_port);
    let (bound, _api, serving) = berth::node::api::serve(node.shared(), &addr, auth).await?;
    tracing::info!(address = %bound, "serving the kubelet API");
    Ok((node, bound.port(), serving))
}

/// The node's name: the flag, else the host name (lower-cased, as the kubelet registers it).
pub fn node_name(flag: Option<&str>) -> String {
    match flag {
        Some(n) => n.to_string(),
        None => nix::unistd::gethostname().map(|h| h.to_string_lossy().to_lowercase()).unwrap_or_else(|_| "berth".into()),
    }
}

/// Serves the CRI on the socket until `stop` resolves; then gives requests in flight a moment
/// (clients like the kubelet keep their connections open for good) and closes what is left.
/// `notifier`: told READY=1 once the socket takes connections (a Type=notify unit).
pub async fn serve_cri(cfg: &config::Config, parts: &Parts, notifier: Option<&Notifier>, stop: impl Future<Output = ()>) -> Result<()> {
    let socket = cfg.socket();
    let listener = server::bind(&socket).await?;
    tracing::info!(socket = %socket.display(), data_dir = %cfg.data_dir.display(), "serving CRI");
    if let Some(n) = notifier {
        n.say(&format!("READY=1\nSTATUS=serving CRI on {}", socket.display()));
    }
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let serve = server::serve(listener, &socket, parts.images.clone(), parts.runtime.clone(), TransferService::new(parts.store.clone()), async move {
        let _ = stop_rx.changed().await;
    });
    tokio::pin!(serve);
    tokio::select! {
        r = &mut serve => r?,
        _ = stop => {
            if let Some(n) = notifier {
                n.say("STOPPING=1\nSTATUS=shutting down");
            }
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
    Ok(())
}
