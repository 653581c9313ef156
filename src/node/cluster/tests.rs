//! The node against a real API core (in process, on an embedded store) with the fake runtime:
//! registration, heartbeat, a bound pod run and its status written back, a graceful deletion
//! finished by the node, and a restart that adopts the running pod.

use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_apiserver::{in_process, Api as ApiCore, ApiConfig, User};
use berth_store::{EmbeddedConfig, EmbeddedStore, Store};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node as NodeObject, Pod};
use kube::api::{DeleteParams, PostParams};
use kube::Api;
use tokio::sync::watch;

use super::{start, ClusterConfig};
use crate::node::fake::harness_with;
use crate::node::Node;

/// Polls `check` until it gives Some, for at most 20 s.
async fn until<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_pod_runs_reports_status_and_a_graceful_delete_is_finished_by_the_node() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> = Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir.path())).await.expect("store"));
    // the cluster CA (kube-root-ca.crt in every namespace) and a signing key for the pod's token
    let authn = berth_apiserver::authn::Config {
        signing_key: Some(Arc::new(berth_apiserver::authn::signing_key::ensure(dir.path()).expect("signing key"))),
        ..Default::default()
    };
    let config = ApiConfig { ca_pem: Some("berth test CA\n".into()), authn, ..Default::default() };
    let core = ApiCore::start(store.clone(), config).await.expect("api");
    // housekeeping measures the real machine: no eviction thresholds here
    let h = harness_with(crate::node::eviction::EvictionConfig { hard: Some(String::new()), ..Default::default() });
    let node_name = h.shared.cfg.node_name.clone();
    let user = User::new(format!("system:node:{node_name}"), &["system:nodes", "system:authenticated"]);
    let client = kube::Client::new(in_process(core.clone(), user), "default");
    // what users do (create and delete pods) is done as the admin: NodeRestriction keeps nodes from it
    let admin = kube::Client::new(in_process(core.clone(), User::new("admin", &["system:masters", "system:authenticated"])), "default");
    let cfg = ClusterConfig {
        client: client.clone(),
        node_name: node_name.clone(),
        node_ip: "127.0.0.1".into(),
        kubelet_port: 10250,
        labels: Default::default(),
        taints: vec![],
        pod_cidr: None,
        ready: watch::channel(false).0,
    };
    let (stop_tx, stop) = watch::channel(false);
    let pods_rx = start(cfg.clone(), h.shared.clone(), stop.clone());
    let node = Node { shared: h.shared.clone(), workers: Default::default(), rejected: Default::default(), cluster_node: None };
    let node_task = tokio::spawn(node.run(stop.clone(), Some(pods_rx)));

    // registered: Ready, with its labels, capacity and runtime; the Lease renewed
    let nodes: Api<NodeObject> = Api::all(client.clone());
    let registered =
        until("the Node", || async { nodes.get_opt(&node_name).await.ok().flatten().filter(|n| n.status.as_ref().is_some_and(|s| s.conditions.is_some())) })
            .await;
    let status = registered.status.clone().unwrap_or_default();
    let ready = status.conditions.unwrap_or_default().into_iter().find(|c| c.type_ == "Ready").expect("a Ready condition");
    assert_eq!((ready.status.as_str(), ready.reason.as_deref()), ("True", Some("KubeletReady")));
    assert!(status.capacity.unwrap_or_default().contains_key("cpu"));
    assert!(status.node_info.unwrap_or_default().container_runtime_version.starts_with("berth://"));
    assert_eq!(registered.metadata.labels.unwrap_or_default().get("kubernetes.io/hostname"), Some(&node_name));
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = until("the Lease", || async { leases.get_opt(&node_name).await.ok().flatten() }).await;
    assert_eq!(lease.spec.and_then(|s| s.holder_identity), Some(node_name.clone()));

    // a pod bound to the node runs, and its status reaches the API
    let pods: Api<Pod> = Api::namespaced(admin.clone(), "default");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "berth-bound"},
        "spec": {"nodeName": node_name, "terminationGracePeriodSeconds": 1, "containers": [{"name": "app", "image": "registry.local/app:1"}]}
    }))
    .expect("pod");
    // (admission wants the namespace's default ServiceAccount, which a controller makes)
    let created = until("the pod created", || async { pods.create(&PostParams::default(), &pod).await.ok() }).await;
    let uid = created.metadata.uid.clone().unwrap_or_default();
    let running = until("the pod Running", || async {
        pods.get_opt("berth-bound").await.ok().flatten().filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
    })
    .await;
    let status = running.status.unwrap_or_default();
    assert_eq!(status.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(status.container_statuses.unwrap_or_default().first().map(|c| c.name.clone()).as_deref(), Some("app"));
    assert!(h.rt.calls("RunPodSandbox").len() == 1, "{:?}", h.rt.calls("RunPodSandbox"));
    // the token volume admission added: a token for the pod's service account, bound to the pod
    let volume = running
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .and_then(|v| v.iter().find(|v| v.name.starts_with("kube-api-access-")))
        .expect("the token volume");
    let dir = h.shared.cfg.pods_dir.join(&uid).join("volumes/kubernetes.io~projected").join(&volume.name);
    let token = std::fs::read_to_string(dir.join("token")).expect("the token file");
    let claims = token.split('.').nth(1).expect("a JWT");
    let claims: serde_json::Value =
        serde_json::from_slice(&base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, claims).expect("base64")).expect("json");
    assert_eq!(claims["sub"], "system:serviceaccount:default:default");
    assert_eq!(claims["kubernetes.io"]["pod"]["uid"], uid.as_str());
    assert_eq!(std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt"), "berth test CA\n");
    assert_eq!(std::fs::read_to_string(dir.join("namespace")).expect("namespace"), "default");

    // the node restarts (its tasks end, pods keep running): the running pod is adopted, not restarted
    let _ = stop_tx.send(true);
    let _ = node_task.await;
    h.shared.statuses.write().await.clear(); // what a new process starts from
    let (stop_tx, stop) = watch::channel(false);
    let pods_rx = start(cfg.clone(), h.shared.clone(), stop.clone());
    let node = Node { shared: h.shared.clone(), workers: Default::default(), rejected: Default::default(), cluster_node: None };
    let node_task = tokio::spawn(node.run(stop.clone(), Some(pods_rx)));
    until("the pod adopted", || async { h.shared.statuses.read().await.contains_key(&uid).then_some(()) }).await;
    assert_eq!(h.rt.calls("RunPodSandbox").len(), 1, "adopted, not run again");
    assert!(h.rt.calls("StopPodSandbox").is_empty(), "{:?}", h.rt.calls("StopPodSandbox"));

    // a pod bound to another node is not this node's
    let other: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "berth-elsewhere"},
        "spec": {"nodeName": "berth-other-node", "automountServiceAccountToken": false, "containers": [{"name": "app", "image": "registry.local/app:1"}]}
    }))
    .expect("pod");
    pods.create(&PostParams::default(), &other).await.expect("create");

    // a graceful delete: the node stops the pod, then deletes the object for good
    pods.delete("berth-bound", &DeleteParams::default()).await.expect("delete");
    until("the pod gone", || async { pods.get_opt("berth-bound").await.ok().and_then(|p| p.is_none().then_some(())) }).await;
    assert!(h.rt.calls("StopPodSandbox").iter().any(|c| !c.is_empty()), "the sandbox was stopped");
    assert!(h.shared.statuses.read().await.get(&uid).is_none());
    assert_eq!(h.rt.calls("RunPodSandbox").len(), 1, "the other node's pod never ran here");

    let _ = stop_tx.send(true);
    let _ = node_task.await;
    store.close().await;
}
