//! The Node object and the heartbeat. At start the node registers (creates its Node, or takes
//! over the one a previous run left), then keeps two things current, as the kubelet does: its
//! Lease in kube-node-lease, renewed every 10 s (what the node lifecycle controller watches),
//! and the Node's status (conditions, capacity, addresses, nodeInfo), written when it changes
//! and at least every 5 minutes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use tokio::sync::watch;

use super::ClusterConfig;
use crate::node::NodeShared;

/// How often the Lease is renewed, and how long it lasts (the kubelet's 10 s and 40 s).
const LEASE_RENEW: Duration = Duration::from_secs(10);
const LEASE_DURATION_SECONDS: i32 = 40;
/// The Node's status is written at least this often even when nothing changed.
const STATUS_REPORT: Duration = Duration::from_secs(300);
/// How often the status is worked out again to see whether it changed.
const STATUS_CHECK: Duration = Duration::from_secs(10);

/// The kubelet version the Node reports (the API version Berth implements).
pub const KUBELET_VERSION: &str = "v1.33.0-berth";

fn now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

/// What the node's status says now, conditions' transition times aside.
pub fn node_status(shared: &NodeShared, node_ip: &str, kubelet_port: u16) -> NodeStatus {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let memory = crate::node::machine::memory().map(|m| m.capacity).unwrap_or(0);
    let storage = crate::node::machine::fs(&shared.cfg.pods_dir).map(|f| f.capacity).unwrap_or(0);
    let max_pods = 110;
    let capacity: BTreeMap<String, Quantity> = [
        ("cpu", cpus.to_string()),
        ("memory", format!("{}Ki", memory / 1024)),
        ("ephemeral-storage", format!("{}Ki", storage / 1024)),
        ("pods", max_pods.to_string()),
        ("hugepages-2Mi", "0".to_string()),
        ("hugepages-1Gi", "0".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), Quantity(v)))
    .collect();
    // allocatable: capacity less the kubelet's default hard eviction thresholds
    let mut allocatable = capacity.clone();
    allocatable.insert("memory".into(), Quantity(format!("{}Ki", memory.saturating_sub(100 << 20) / 1024)));
    allocatable.insert("ephemeral-storage".into(), Quantity(format!("{}", storage / 10 * 9)));
    let pressure = shared.pressure.try_read().map(|p| p.clone()).unwrap_or_default();
    let condition = |kind: &str, on: bool, reason_on: &str, reason_off: &str, msg_on: &str, msg_off: &str| NodeCondition {
        type_: kind.to_string(),
        status: if on { "True" } else { "False" }.into(),
        reason: Some(if on { reason_on } else { reason_off }.into()),
        message: Some(if on { msg_on } else { msg_off }.into()),
        ..Default::default()
    };
    let has = |c: &str| pressure.contains(&c);
    let conditions = vec![
        condition(
            "MemoryPressure",
            has("MemoryPressure"),
            "KubeletHasInsufficientMemory",
            "KubeletHasSufficientMemory",
            "kubelet has insufficient memory available",
            "kubelet has sufficient memory available",
        ),
        condition(
            "DiskPressure",
            has("DiskPressure"),
            "KubeletHasDiskPressure",
            "KubeletHasNoDiskPressure",
            "kubelet has disk pressure",
            "kubelet has no disk pressure",
        ),
        condition(
            "PIDPressure",
            has("PIDPressure"),
            "KubeletHasInsufficientPID",
            "KubeletHasSufficientPID",
            "kubelet has insufficient PID available",
            "kubelet has sufficient PID available",
        ),
        condition("Ready", true, "KubeletReady", "KubeletNotReady", "kubelet is posting ready status", ""),
    ];
    let read = |p: &str| std::fs::read_to_string(p).map(|s| s.trim().to_string()).unwrap_or_default();
    let os_image =
        read("/etc/os-release").lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())).unwrap_or_else(|| "Linux".into());
    NodeStatus {
        capacity: Some(capacity),
        allocatable: Some(allocatable),
        conditions: Some(conditions),
        addresses: Some(vec![
            NodeAddress { type_: "InternalIP".into(), address: node_ip.to_string() },
            NodeAddress { type_: "Hostname".into(), address: shared.cfg.node_name.clone() },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: go_arch().into(),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
            container_runtime_version: format!("berth://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: read("/proc/sys/kernel/osrelease"),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: read("/etc/machine-id"),
            operating_system: "linux".into(),
            os_image,
            system_uuid: read("/sys/class/dmi/id/product_uuid"),
            ..Default::default()
        }),
        daemon_endpoints: Some(NodeDaemonEndpoints { kubelet_endpoint: Some(DaemonEndpoint { port: i32::from(kubelet_port) }) }),
        ..Default::default()
    }
}

/// GOARCH's name of this machine's architecture, as node labels and nodeInfo carry it.
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The Node object this node registers.
pub fn node_object(cfg: &ClusterConfig, shared: &NodeShared) -> Node {
    let mut labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", cfg.node_name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", go_arch()),
        ("beta.kubernetes.io/os", "linux"),
        ("beta.kubernetes.io/arch", go_arch()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    labels.extend(cfg.labels.clone());
    Node {
        metadata: ObjectMeta {
            name: Some(cfg.node_name.clone()),
            labels: Some(labels),
            annotations: Some([("volumes.kubernetes.io/controller-managed-attach-detach".to_string(), "true".to_string())].into()),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            taints: (!cfg.taints.is_empty()).then(|| cfg.taints.clone()),
            pod_cidr: cfg.pod_cidr.clone(),
            pod_cidrs: cfg.pod_cidr.clone().map(|c| vec![c]),
            ..Default::default()
        }),
        status: Some(node_status(shared, &cfg.node_ip, cfg.kubelet_port)),
    }
}

/// Conditions with their times: the heartbeat time now, the transition time kept while the
/// status stays the same.
fn stamp_conditions(status: &mut NodeStatus, previous: Option<&NodeStatus>) {
    let now = Time(now());
    for c in status.conditions.iter_mut().flatten() {
        let before = previous.and_then(|p| p.conditions.as_ref()).and_then(|cs| cs.iter().find(|o| o.type_ == c.type_));
        c.last_heartbeat_time = Some(now.clone());
        c.last_transition_time = match before {
            Some(b) if b.status == c.status => b.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
    }
}

/// Conditions without times, to tell whether anything changed.
fn comparable(status: &NodeStatus) -> serde_json::Value {
    let mut s = status.clone();
    for c in s.conditions.iter_mut().flatten() {
        c.last_heartbeat_time = None;
        c.last_transition_time = None;
    }
    serde_json::to_value(s).unwrap_or_default()
}

/// Registers the Node (retrying until the apiserver takes it), then keeps the Lease and the
/// status current until `stop` fires.
pub async fn run(cfg: ClusterConfig, shared: Arc<NodeShared>, mut stop: watch::Receiver<bool>) {
    let nodes: Api<Node> = Api::all(cfg.client.clone());
    let mut reported = loop {
        match register(&nodes, &cfg, &shared).await {
            Ok(status) => break status,
            Err(e) => tracing::warn!(error = %e, "registering the node (retrying)"),
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    };
    tracing::info!("node registered");
    report_ready(&cfg, &reported);
    let mut cidr_applied = apply_pod_cidr(&nodes, &cfg.node_name, &shared).await;
    let leases: Api<Lease> = Api::namespaced(cfg.client.clone(), "kube-node-lease");
    let mut last_report = tokio::time::Instant::now();
    let mut renew = tokio::time::interval(LEASE_RENEW);
    let mut check = tokio::time::interval(STATUS_CHECK);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = renew.tick() => {
                if let Err(e) = renew_lease(&leases, &nodes, &cfg.node_name).await {
                    tracing::warn!(error = %e, "renewing the node lease");
                }
            }
            _ = check.tick() => {
                if !cidr_applied {
                    cidr_applied = apply_pod_cidr(&nodes, &cfg.node_name, &shared).await;
                }
                let mut status = current_status(&shared, &cfg).await;
                if comparable(&status) == comparable(&reported) && last_report.elapsed() < STATUS_REPORT {
                    continue;
                }
                stamp_conditions(&mut status, Some(&reported));
                match patch_status(&nodes, &cfg.node_name, &status).await {
                    Ok(()) => {
                        report_ready(&cfg, &status);
                        reported = status;
                        last_report = tokio::time::Instant::now();
                    }
                    Err(e) => tracing::warn!(error = %e, "updating the node status"),
                }
            }
        }
    }
}

/// Tells whoever waits for the node (the systemd notification) whether `status` says Ready.
fn report_ready(cfg: &ClusterConfig, status: &NodeStatus) {
    let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
    cfg.ready.send_if_modified(|r| std::mem::replace(r, ready) != ready);
}

/// The node's status now: [`node_status`], not Ready while the runtime's pod network is not
/// (the kubelet's `container runtime network not ready: ...`), for pods could not start.
async fn current_status(shared: &NodeShared, cfg: &ClusterConfig) -> NodeStatus {
    let mut status = node_status(shared, &cfg.node_ip, cfg.kubelet_port);
    if let Some(why) = shared.network_not_ready().await {
        if let Some(ready) = status.conditions.iter_mut().flatten().find(|c| c.type_ == "Ready") {
            ready.status = "False".into();
            ready.reason = Some("KubeletNotReady".into());
            ready.message = Some(format!("container runtime network not ready: {why}"));
        }
    }
    status
}

/// Hands the Node's spec.podCIDR to the runtime (CRI UpdateRuntimeConfig, as the kubelet
/// does): with no CNI config of its own it writes the default one for that range. Whether the
/// node had one.
async fn apply_pod_cidr(nodes: &Api<Node>, name: &str, shared: &NodeShared) -> bool {
    let cidr = match nodes.get(name).await {
        Ok(n) => n.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()),
        Err(e) => {
            tracing::warn!(error = %e, "reading the node's pod CIDR");
            return false;
        }
    };
    let Some(cidr) = cidr else { return false };
    let req = crate::cri::v1::UpdateRuntimeConfigRequest {
        runtime_config: Some(crate::cri::v1::RuntimeConfig { network_config: Some(crate::cri::v1::NetworkConfig { pod_cidr: cidr.clone() }) }),
    };
    match shared.runtime.update_runtime_config(req).await {
        Ok(_) => {
            tracing::info!(pod_cidr = cidr, "pod CIDR of the node");
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "handing the pod CIDR to the runtime");
            false
        }
    }
}

/// Creates the Node, or (registered before) brings its labels and status up to date.
async fn register(nodes: &Api<Node>, cfg: &ClusterConfig, shared: &NodeShared) -> Result<NodeStatus, kube::Error> {
    let mut node = node_object(cfg, shared);
    let mut status = current_status(shared, cfg).await;
    match nodes.get_opt(&cfg.node_name).await? {
        None => {
            stamp_conditions(&mut status, None);
            node.status = Some(status.clone());
            nodes.create(&PostParams::default(), &node).await?;
            // the status of a create is dropped (a subresource): write it too
            patch_status(nodes, &cfg.node_name, &status).await?;
        }
        Some(existing) => {
            stamp_conditions(&mut status, existing.status.as_ref());
            let labels = serde_json::json!({"metadata": {"labels": node.metadata.labels}});
            nodes.patch(&cfg.node_name, &PatchParams::default(), &Patch::Merge(labels)).await?;
            patch_status(nodes, &cfg.node_name, &status).await?;
        }
    }
    Ok(status)
}

async fn patch_status(nodes: &Api<Node>, name: &str, status: &NodeStatus) -> Result<(), kube::Error> {
    let body = serde_json::json!({ "status": status });
    nodes.patch_status(name, &PatchParams::default(), &Patch::Strategic(body)).await.map(|_| ())
}

/// Renews (or makes) the node's Lease, owned by its Node as the kubelet sets it.
async fn renew_lease(leases: &Api<Lease>, nodes: &Api<Node>, node: &str) -> Result<(), kube::Error> {
    let renew = MicroTime(now());
    match leases.get_opt(node).await? {
        Some(mut lease) => {
            let spec = lease.spec.get_or_insert_with(Default::default);
            spec.renew_time = Some(renew);
            spec.holder_identity = Some(node.to_string());
            spec.lease_duration_seconds = Some(LEASE_DURATION_SECONDS);
            leases.replace(node, &PostParams::default(), &lease).await.map(|_| ())
        }
        None => {
            let node_uid = nodes.get_opt(node).await?.and_then(|n| n.metadata.uid);
            let owner = node_uid.map(|uid| {
                vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "v1".into(),
                    kind: "Node".into(),
                    name: node.to_string(),
                    uid,
                    ..Default::default()
                }]
            });
            let lease = Lease {
                metadata: ObjectMeta { name: Some(node.to_string()), namespace: Some("kube-node-lease".into()), owner_references: owner, ..Default::default() },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.to_string()),
                    lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
                    renew_time: Some(renew),
                    ..Default::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await.map(|_| ())
        }
    }
}
