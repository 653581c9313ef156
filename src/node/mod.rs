//! The kubelet half: pod sources (a manifest directory now; the apiserver later, through the
//! same `Snapshot` of desired pods), one worker per pod that drives the runtime through the
//! CRI trait, and the kubelet HTTP API.
pub mod admission;
pub mod api;
pub mod api_auth;
mod api_streams;
pub mod atomic_writer;
pub mod backoff;
pub mod cluster;
pub mod convert;
pub mod dns;
pub mod eviction;
#[cfg(test)]
pub(crate) mod fake;
pub mod handler;
pub mod housekeeping;
pub mod image_gc;
pub mod machine;
pub mod manifest;
pub mod metrics;
pub mod pod_files;
pub mod probe;
pub mod pull_secrets;
pub mod resource_metrics;
pub mod service_env;
pub mod status;
pub mod subpath;
pub mod summary;
pub mod validation;
pub mod volumes;
pub mod worker;

use crate::cri::api::{ImageApi, NodeRuntimeApi, RuntimeApi};
use crate::cri::v1 as cri;
use crate::util::atomic;
use k8s_openapi::api::core::v1::Pod;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, RwLock};
use worker::{PodProgress, Worker};

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_name: String,
    pub node_ip: String,
    pub manifest_dir: PathBuf,
    /// Worker progress files.
    pub state_dir: PathBuf,
    /// Pod volumes.
    pub pods_dir: PathBuf,
    /// Container logs: <log_dir>/<namespace>_<name>_<uid>/<container>/<attempt>.log
    pub log_dir: PathBuf,
    pub seccomp_dir: PathBuf,
    /// Root of the kubelet-style cgroup tree (kubepods); the runtime's cgroup driver names
    /// the pod cgroups under it.
    pub cgroup_root: String,
    /// pids.max of every pod cgroup (--pod-max-pids); None: unlimited.
    pub pod_max_pids: Option<i64>,
    pub sync_period: Duration,
    /// The cluster's DNS domain (pod FQDNs: hostname.subdomain.namespace.svc.<domain>).
    pub cluster_domain: String,
    /// Cluster DNS servers for dnsPolicy ClusterFirst (none: pods use the host's resolver).
    pub cluster_dns: Vec<String>,
    /// The host's resolver configuration (`--resolv-conf`): what dnsPolicy Default gives pods.
    pub resolv_conf: PathBuf,
    pub eviction: eviction::EvictionSettings,
    pub image_gc: image_gc::ImageGcSettings,
}

/// A source of Unix time in nanoseconds.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

/// An API pod whose worker ended, with the events it had.
#[derive(Debug, Clone)]
pub struct DepartedPod {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub events: Vec<worker::PodEvent>,
}

/// Departed pods kept for the event sync at most (it drains them every round; without a
/// cluster connection nobody does).
const MAX_DEPARTED: usize = 1000;

/// What workers share: the runtime doors, the config and the published statuses.
pub struct NodeShared {
    pub runtime: Arc<dyn RuntimeApi>,
    pub images: Arc<dyn ImageApi>,
    /// Pod cgroups and pod netns: what the node needs of the runtime beyond CRI.
    pub host: Arc<dyn NodeRuntimeApi>,
    /// Wall-clock time in ns for the workers' decisions (back-off, probes, events); tests
    /// set their own.
    pub clock: Clock,
    pub cfg: NodeConfig,
    /// Pods with their current status, by UID.
    pub statuses: RwLock<BTreeMap<String, Pod>>,
    /// Told after `statuses` changed, so the cluster's status sync sends it at once.
    pub status_published: tokio::sync::Notify,
    /// Manifest problems by file, for the operator.
    pub errors: RwLock<BTreeMap<PathBuf, String>>,
    /// Each pod's worker progress (attempts, events) and its log directory, by UID.
    pub details: RwLock<BTreeMap<String, (PodProgress, PathBuf)>>,
    /// The events of API pods whose workers ended, for the event sync to send what it has not
    /// (a pod may come and go between two of its rounds).
    pub departed: std::sync::Mutex<Vec<DepartedPod>>,
    /// ConfigMaps and Secrets from the pod source, for the volumes that project them.
    pub objects: RwLock<volumes::Objects>,
    pub metrics: std::sync::Mutex<metrics::Metrics>,
    /// Node conditions in force now (MemoryPressure, DiskPressure, PIDPressure).
    pub pressure: RwLock<Vec<&'static str>>,
    /// Evictions ordered by housekeeping, by pod UID, for the pods' workers to carry out.
    pub evictions: tokio::sync::Mutex<BTreeMap<String, housekeeping::Eviction>>,
    /// The node's CPU time at the last /stats/summary, for its usage rate.
    pub cpu: machine::CpuSampler,
    /// Each pod's progress as last handed to disk, so unchanged progress is not rewritten.
    saved_progress: std::sync::Mutex<BTreeMap<String, Vec<u8>>>,
    /// Serialises a pod's progress writes (the newest content is what lands).
    progress_writes: crate::util::keyed_lock::KeyedLock,
}

impl NodeShared {
    /// Why the runtime's pod network is not ready, in the kubelet's words; None when it is.
    pub async fn network_not_ready(&self) -> Option<String> {
        let st = match self.runtime.status(cri::StatusRequest { verbose: false }).await {
            Ok(st) => st,
            Err(e) => return Some(format!("runtime status: {}", e.message)),
        };
        let conditions = st.status.map(|s| s.conditions).unwrap_or_default();
        let c = conditions.into_iter().find(|c| c.r#type == "NetworkReady")?;
        (!c.status).then(|| format!("NetworkReady=false reason:{} message:{}", c.reason, c.message))
    }

    fn progress_path(&self, uid: &str) -> PathBuf {
        self.cfg.state_dir.join(format!("{uid}.json"))
    }

    pub fn load_progress(&self, uid: &str) -> Option<PodProgress> {
        crate::util::atomic::read_json(&self.progress_path(uid)).ok()
    }

    /// Keep a pod's progress across node restarts: written (durably, on a blocking thread)
    /// only when it changed since the last write.
    pub async fn save_progress(&self, uid: &str, p: &PodProgress) {
        let Ok(bytes) = serde_json::to_vec(p) else { return };
        {
            let mut saved = self.saved_progress.lock().unwrap_or_else(|e| e.into_inner());
            if saved.get(uid) == Some(&bytes) {
                return;
            }
            saved.insert(uid.to_string(), bytes);
        }
        let _one_writer = self.progress_writes.lock(uid).await;
        // A later save may have come in meanwhile: write whatever is newest.
        let Some(latest) = self.saved_progress.lock().unwrap_or_else(|e| e.into_inner()).get(uid).cloned() else { return };
        let path = self.progress_path(uid);
        let written = tokio::task::spawn_blocking(move || atomic::write_file(&path, &latest)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(uid, "saving pod progress: {e}"),
            Err(e) => tracing::warn!(uid, "saving pod progress: {e}"),
        }
    }

    /// The cgroup parent of a pod (a slice under the systemd driver), as the runtime names it.
    pub fn pod_cgroup_parent(&self, qos: &str, uid: &str) -> Result<String, String> {
        self.host.pod_cgroup_parent(&self.cfg.cgroup_root, qos, uid).map_err(|e| e.message)
    }

    /// Remove a pod cgroup and whatever still runs in it; one that does not exist is fine.
    pub async fn remove_pod_cgroup(&self, qos: &str, uid: &str) {
        let Ok(parent) = self.pod_cgroup_parent(qos, uid) else { return };
        if let Err(e) = self.host.remove_pod_cgroup(&parent).await {
            tracing::warn!(pod_uid = uid, "removing the pod cgroup: {}", e.message);
        }
    }

    /// Keeps a departed API pod's events for the event sync.
    pub fn depart(&self, pod: DepartedPod) {
        let mut departed = self.departed.lock().unwrap_or_else(|e| e.into_inner());
        if departed.len() >= MAX_DEPARTED {
            departed.remove(0);
        }
        departed.push(pod);
    }

    pub async fn forget(&self, uid: &str) {
        self.saved_progress.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        let _ = std::fs::remove_file(self.progress_path(uid));
        self.statuses.write().await.remove(uid);
        self.status_published.notify_one();
        self.details.write().await.remove(uid);
    }
}

struct WorkerHandle {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

pub struct Node {
    shared: Arc<NodeShared>,
    workers: BTreeMap<String, WorkerHandle>,
    /// Cluster pods this node refused (`admission`), by UID: failed, never run.
    rejected: std::collections::BTreeSet<String>,
    /// This node's Node object from the cluster (labels and taints, for admission).
    cluster_node: Option<k8s_openapi::api::core::v1::Node>,
}

impl Node {
    pub fn new(cfg: NodeConfig, runtime: Arc<dyn RuntimeApi>, images: Arc<dyn ImageApi>, host: Arc<dyn NodeRuntimeApi>) -> std::io::Result<Node> {
        for d in [&cfg.state_dir, &cfg.pods_dir, &cfg.log_dir, &cfg.manifest_dir] {
            std::fs::create_dir_all(d)?;
        }
        let shared = Arc::new(NodeShared {
            runtime,
            images,
            host,
            clock: Arc::new(crate::util::time::now_ns),
            cfg,
            statuses: RwLock::new(BTreeMap::new()),
            status_published: tokio::sync::Notify::new(),
            errors: RwLock::new(BTreeMap::new()),
            details: RwLock::new(BTreeMap::new()),
            departed: Default::default(),
            objects: RwLock::new(Default::default()),
            metrics: Default::default(),
            pressure: RwLock::new(Vec::new()),
            evictions: Default::default(),
            cpu: Default::default(),
            saved_progress: Default::default(),
            progress_writes: crate::util::keyed_lock::KeyedLock::new(),
        });
        Ok(Node { shared, workers: BTreeMap::new(), rejected: Default::default(), cluster_node: None })
    }

    pub fn shared(&self) -> Arc<NodeShared> {
        self.shared.clone()
    }

    /// Follow the manifest directory, and the cluster's pods for this node when there is a
    /// cluster, until `stop` fires; then stop every worker (pods keep running: a restarted node
    /// re-adopts them).
    pub async fn run(mut self, mut stop: watch::Receiver<bool>, mut cluster: Option<watch::Receiver<cluster::ClusterPods>>) {
        // Nothing is judged gone before the cluster's first full list of this node's pods.
        let mut from_cluster: BTreeMap<String, Pod> = BTreeMap::new();
        if let Some(c) = cluster.as_mut() {
            loop {
                if c.borrow_and_update().synced {
                    from_cluster = c.borrow().pods.clone();
                    break;
                }
                tokio::select! {
                    _ = stop.changed() => return,
                    r = c.changed() => if r.is_err() { return },
                }
            }
        }
        self.remove_orphans(&from_cluster).await;
        let housekeeping = tokio::spawn(housekeeping::Housekeeping::new(self.shared.clone()).run(stop.clone()));
        let mut last_stamp = None;
        let mut last_report: Option<BTreeMap<String, String>> = None;
        let mut cluster_changed = cluster.is_some();
        loop {
            let stamp = manifest::stamp(&self.shared.cfg.manifest_dir);
            if last_stamp.as_ref() != Some(&stamp) || cluster_changed {
                cluster_changed = false;
                let mut snap = manifest::read_dir(&self.shared.cfg.manifest_dir, &self.shared.cfg.node_name);
                if let Some(c) = cluster.as_mut() {
                    let pods = c.borrow_and_update().clone();
                    self.cluster_node = pods.node.clone();
                    // a pod whose deletion was asked for leaves the source: its worker stops it
                    for (uid, pod) in pods.pods.into_iter().filter(|(_, p)| p.metadata.deletion_timestamp.is_none()) {
                        snap.pods.insert(uid, manifest::SourcePod { pod, file: PathBuf::from("apiserver") });
                    }
                    snap.objects.config_maps.extend(pods.objects.config_maps);
                    snap.objects.secrets.extend(pods.objects.secrets);
                    snap.objects.tokens.extend(pods.objects.tokens);
                    snap.objects.claims.extend(pods.objects.claims);
                    snap.objects.services = pods.objects.services;
                }
                for (file, e) in &snap.errors {
                    tracing::warn!(file = %file.display(), "bad manifest: {e}");
                }
                let report: BTreeMap<String, String> = snap.errors.iter().map(|(f, e)| (f.display().to_string(), e.clone())).collect();
                // written (durably) when it changed, not at every pod update from the cluster
                if last_report.as_ref() != Some(&report) {
                    let _ = atomic::write_json(&self.shared.cfg.state_dir.join("manifest-errors.json"), &report);
                    last_report = Some(report);
                }
                *self.shared.errors.write().await = snap.errors.clone();
                *self.shared.objects.write().await = snap.objects.clone();
                self.apply(snap).await;
                last_stamp = Some(stamp);
            }
            self.workers.retain(|_, w| !w.task.is_finished());
            let cluster_change = async {
                match cluster.as_mut() {
                    Some(c) => c.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                ok = cluster_change => cluster_changed = ok,
            }
        }
        // Leave pods running; only the workers stop.
        for (_, w) in std::mem::take(&mut self.workers) {
            w.task.abort();
        }
        housekeeping.abort();
    }

    async fn apply(&mut self, snap: manifest::Snapshot) {
        for (uid, w) in &self.workers {
            if !snap.pods.contains_key(uid) {
                let _ = w.stop.send(true);
            }
        }
        // refused pods that left the source (deleted): forget them, so their deletion finishes
        let gone: Vec<String> = self.rejected.iter().filter(|u| !snap.pods.contains_key(*u)).cloned().collect();
        for uid in gone {
            self.rejected.remove(&uid);
            self.shared.statuses.write().await.remove(&uid);
            self.shared.status_published.notify_one();
        }
        let mut running: Vec<Pod> =
            snap.pods.iter().filter(|(u, _)| self.workers.get(*u).is_some_and(|w| !w.task.is_finished())).map(|(_, sp)| sp.pod.clone()).collect();
        for (uid, sp) in snap.pods {
            if self.workers.get(&uid).map(|w| !w.task.is_finished()).unwrap_or(false) || self.rejected.contains(&uid) {
                continue;
            }
            // a pod from the cluster must fit what the node has left (static pods always run)
            let known = self.shared.statuses.read().await.contains_key(&uid);
            if sp.file == Path::new("apiserver") && !known {
                let allocatable = cluster::registration::node_status(&self.shared, "", 0).allocatable.unwrap_or_default();
                let others: Vec<&Pod> = running.iter().collect();
                let admitted = match &self.cluster_node {
                    Some(node) => admission::admit_on(&sp.pod, &others, &allocatable, node),
                    None => admission::admit(&sp.pod, &others, &allocatable),
                };
                if let Err(r) = admitted {
                    tracing::warn!(pod = %manifest::full_name(&sp.pod), reason = r.reason, "{}", r.message);
                    let mut pod = sp.pod.clone();
                    pod.status = Some(k8s_openapi::api::core::v1::PodStatus {
                        phase: Some("Failed".into()),
                        reason: Some(r.reason),
                        message: Some(r.message),
                        start_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now())),
                        ..Default::default()
                    });
                    self.shared.statuses.write().await.insert(uid.clone(), pod);
                    self.shared.status_published.notify_one();
                    self.rejected.insert(uid);
                    continue;
                }
            }
            running.push(sp.pod.clone());
            // The node's own door, whatever the source checked: nothing of an invalid pod is made.
            let errs = validation::pod_errors(&sp.pod);
            if !errs.is_empty() {
                tracing::warn!(pod = %manifest::full_name(&sp.pod), "refusing an invalid pod: {}", errs.join("; "));
                continue;
            }
            tracing::info!(pod = %manifest::full_name(&sp.pod), file = %sp.file.display(), "pod added");
            let (tx, rx) = watch::channel(false);
            let worker = Worker::new(sp.pod, self.shared.clone());
            let task = tokio::spawn(worker.run(rx));
            self.workers.insert(uid, WorkerHandle { stop: tx, task });
        }
    }

    /// Sandboxes of pods this node no longer has (a manifest removed, a pod deleted, while
    /// the node was down) are stopped and removed, as the kubelet does at start.
    async fn remove_orphans(&self, from_cluster: &BTreeMap<String, Pod>) {
        let mut desired = manifest::read_dir(&self.shared.cfg.manifest_dir, &self.shared.cfg.node_name);
        for (uid, pod) in from_cluster {
            desired.pods.insert(uid.clone(), manifest::SourcePod { pod: pod.clone(), file: PathBuf::from("apiserver") });
        }
        let Ok(list) = self.shared.runtime.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await else { return };
        for sb in list.items {
            let Some(uid) = sb.labels.get("io.kubernetes.pod.uid") else { continue };
            if desired.pods.contains_key(uid) {
                continue;
            }
            tracing::info!(pod_uid = %uid, "removing the sandbox of a pod that is gone");
            let _ = self.shared.runtime.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sb.id.clone() }).await;
            let _ = self.shared.runtime.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: sb.id }).await;
            let _ = std::fs::remove_file(self.shared.progress_path(uid));
            volumes::teardown(&self.shared.cfg.pods_dir, uid);
            for qos in [convert::QOS_GUARANTEED, convert::QOS_BURSTABLE, convert::QOS_BESTEFFORT] {
                self.shared.remove_pod_cgroup(qos, uid).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fake::harness;
    use super::*;

    #[tokio::test]
    async fn orphan_sandboxes_go_with_their_pod_cgroups_and_desired_ones_stay() {
        let h = harness();
        let sandbox = |uid: &str| cri::RunPodSandboxRequest {
            config: Some(cri::PodSandboxConfig { labels: [("io.kubernetes.pod.uid".to_string(), uid.to_string())].into(), ..Default::default() }),
            runtime_handler: String::new(),
        };
        let gone = h.shared.runtime.run_pod_sandbox(sandbox("berth-gone")).await.expect("a sandbox").pod_sandbox_id;
        let manifest = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "berth-kept", "namespace": "default", "uid": "berth-kept"},
            "spec": {"containers": [{"name": "main", "image": "registry.local/app:1"}]},
        });
        std::fs::create_dir_all(&h.shared.cfg.manifest_dir).expect("the manifest directory");
        std::fs::write(h.shared.cfg.manifest_dir.join("kept.json"), manifest.to_string()).expect("a manifest");
        let desired = manifest::read_dir(&h.shared.cfg.manifest_dir, &h.shared.cfg.node_name);
        let kept_uid = desired.pods.keys().next().cloned().expect("the manifest's pod");
        let kept = h.shared.runtime.run_pod_sandbox(sandbox(&kept_uid)).await.expect("a sandbox").pod_sandbox_id;
        let node = Node { shared: h.shared.clone(), workers: BTreeMap::new(), rejected: Default::default(), cluster_node: None };
        node.remove_orphans(&BTreeMap::new()).await;
        let st = h.rt.state();
        assert!(!st.sandboxes.contains_key(&gone), "the orphan's sandbox is removed");
        assert!(st.sandboxes.contains_key(&kept), "a desired pod's sandbox stays");
        assert_eq!(st.removed_cgroups, ["/kubepods/podberth-gone", "/kubepods/burstable/podberth-gone", "/kubepods/besteffort/podberth-gone"]);
    }
}
