//! In-memory doors for the node's unit tests: a runtime (the CRI RuntimeService and
//! `NodeRuntimeApi`) and an image service that keep sandboxes and containers in maps, record
//! the calls made, and let a test end containers and script exec results, on a clock the test
//! moves. Nothing here touches the host: no root, no processes, no cgroups.
use crate::cri::api::{CriError, CriResult, ImageApi, NodeRuntimeApi, PodCgroupLimits, RuntimeApi};
use crate::cri::v1 as cri;
use crate::node::{eviction, image_gc, NodeConfig, NodeShared};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

pub const SECOND: i64 = 1_000_000_000;

/// A clock a test moves by hand; the fake runtime and the node read the same one.
#[derive(Clone)]
pub struct FakeClock(Arc<AtomicI64>);

impl FakeClock {
    pub fn new() -> FakeClock {
        FakeClock(Arc::new(AtomicI64::new(1_700_000_000 * SECOND)))
    }
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn advance_secs(&self, secs: i64) {
        self.0.fetch_add(secs * SECOND, Ordering::SeqCst);
    }
    /// The clock as the node takes it.
    pub fn as_node_clock(&self) -> super::Clock {
        let c = self.0.clone();
        Arc::new(move || c.load(Ordering::SeqCst))
    }
}

#[derive(Debug, Clone)]
pub struct FakeContainer {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub state: cri::ContainerState,
    pub exit_code: i32,
    pub created_at: i64,
    pub started_at: i64,
    pub finished_at: i64,
}

#[derive(Debug, Default)]
pub struct FakeState {
    /// Every call, as "Verb name-or-id", in order.
    pub calls: Vec<String>,
    /// Sandboxes by ID: their config and whether they are ready.
    pub sandboxes: BTreeMap<String, (cri::PodSandboxConfig, bool)>,
    pub containers: BTreeMap<String, FakeContainer>,
    /// What an exec in a container of that name exits with (0 when not set).
    pub exec_exit: HashMap<String, i32>,
    /// Pod cgroups made, by parent, with their limits.
    pub cgroups: BTreeMap<String, PodCgroupLimits>,
    pub removed_cgroups: Vec<String>,
    next_id: u64,
}

pub struct FakeRuntime {
    state: Mutex<FakeState>,
    clock: FakeClock,
}

impl FakeRuntime {
    pub fn new(clock: FakeClock) -> FakeRuntime {
        FakeRuntime { state: Mutex::new(FakeState::default()), clock }
    }

    pub fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The calls made so far that start with `prefix`.
    pub fn calls(&self, prefix: &str) -> Vec<String> {
        self.state().calls.iter().filter(|c| c.starts_with(prefix)).cloned().collect()
    }

    /// The newest container of that name, which must be running, exits with `code` now.
    pub fn exit(&self, name: &str, code: i32) {
        let now = self.clock.now();
        let mut st = self.state();
        let c = st.containers.values_mut().filter(|c| c.name == name).max_by_key(|c| c.attempt).expect("a container of that name");
        assert_eq!(c.state, cri::ContainerState::ContainerRunning, "{name} is running");
        c.state = cri::ContainerState::ContainerExited;
        c.exit_code = code;
        c.finished_at = now;
    }

    fn record(&self, call: String) {
        self.state().calls.push(call);
    }

    fn status_of(c: &FakeContainer) -> cri::ContainerStatus {
        cri::ContainerStatus {
            id: c.id.clone(),
            metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt: c.attempt }),
            state: c.state as i32,
            created_at: c.created_at,
            started_at: c.started_at,
            finished_at: c.finished_at,
            exit_code: c.exit_code,
            reason: if c.state == cri::ContainerState::ContainerExited { if c.exit_code == 0 { "Completed" } else { "Error" }.into() } else { String::new() },
            ..Default::default()
        }
    }
}

fn not_faked<T>(what: &str) -> CriResult<T> {
    Err(CriError::new(tonic::Code::Unimplemented, format!("{what} is not faked")))
}

#[tonic::async_trait]
impl RuntimeApi for FakeRuntime {
    async fn version(&self, _req: cri::VersionRequest) -> CriResult<cri::VersionResponse> {
        Ok(cri::VersionResponse { runtime_name: "fake".into(), ..Default::default() })
    }
    async fn status(&self, _req: cri::StatusRequest) -> CriResult<cri::StatusResponse> {
        let ready = |t: &str| cri::RuntimeCondition { r#type: t.into(), status: true, ..Default::default() };
        Ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions: vec![ready("RuntimeReady"), ready("NetworkReady")] }),
            runtime_handlers: vec![cri::RuntimeHandler {
                name: String::new(),
                features: Some(cri::RuntimeHandlerFeatures { recursive_read_only_mounts: true, user_namespaces: false }),
            }],
            ..Default::default()
        })
    }
    async fn runtime_config(&self, _req: cri::RuntimeConfigRequest) -> CriResult<cri::RuntimeConfigResponse> {
        Ok(Default::default())
    }
    async fn run_pod_sandbox(&self, req: cri::RunPodSandboxRequest) -> CriResult<cri::RunPodSandboxResponse> {
        let mut st = self.state();
        st.next_id += 1;
        let id = format!("sb{}", st.next_id);
        st.sandboxes.insert(id.clone(), (req.config.unwrap_or_default(), true));
        st.calls.push(format!("RunPodSandbox {id}"));
        Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
    }
    async fn stop_pod_sandbox(&self, req: cri::StopPodSandboxRequest) -> CriResult<cri::StopPodSandboxResponse> {
        let now = self.clock.now();
        let mut st = self.state();
        if let Some(sb) = st.sandboxes.get_mut(&req.pod_sandbox_id) {
            sb.1 = false;
        }
        for c in st.containers.values_mut().filter(|c| c.sandbox_id == req.pod_sandbox_id && c.state == cri::ContainerState::ContainerRunning) {
            c.state = cri::ContainerState::ContainerExited;
            c.exit_code = 137;
            c.finished_at = now;
        }
        st.calls.push(format!("StopPodSandbox {}", req.pod_sandbox_id));
        Ok(cri::StopPodSandboxResponse {})
    }
    async fn remove_pod_sandbox(&self, req: cri::RemovePodSandboxRequest) -> CriResult<cri::RemovePodSandboxResponse> {
        let mut st = self.state();
        st.sandboxes.remove(&req.pod_sandbox_id);
        st.containers.retain(|_, c| c.sandbox_id != req.pod_sandbox_id);
        st.calls.push(format!("RemovePodSandbox {}", req.pod_sandbox_id));
        Ok(cri::RemovePodSandboxResponse {})
    }
    async fn pod_sandbox_status(&self, req: cri::PodSandboxStatusRequest) -> CriResult<cri::PodSandboxStatusResponse> {
        let st = self.state();
        let Some((_, ready)) = st.sandboxes.get(&req.pod_sandbox_id) else { return Err(CriError::not_found(format!("sandbox {}", req.pod_sandbox_id))) };
        let state = if *ready { cri::PodSandboxState::SandboxReady } else { cri::PodSandboxState::SandboxNotready };
        Ok(cri::PodSandboxStatusResponse {
            status: Some(cri::PodSandboxStatus {
                id: req.pod_sandbox_id.clone(),
                state: state as i32,
                network: Some(cri::PodSandboxNetworkStatus { ip: "10.88.0.7".into(), additional_ips: vec![] }),
                ..Default::default()
            }),
            ..Default::default()
        })
    }
    async fn list_pod_sandbox(&self, _req: cri::ListPodSandboxRequest) -> CriResult<cri::ListPodSandboxResponse> {
        let st = self.state();
        let items = st
            .sandboxes
            .iter()
            .map(|(id, (config, ready))| cri::PodSandbox {
                id: id.clone(),
                labels: config.labels.clone(),
                state: if *ready { cri::PodSandboxState::SandboxReady as i32 } else { cri::PodSandboxState::SandboxNotready as i32 },
                ..Default::default()
            })
            .collect();
        Ok(cri::ListPodSandboxResponse { items })
    }
    async fn create_container(&self, req: cri::CreateContainerRequest) -> CriResult<cri::CreateContainerResponse> {
        let now = self.clock.now();
        let md = req.config.and_then(|c| c.metadata).unwrap_or_default();
        let mut st = self.state();
        if !st.sandboxes.contains_key(&req.pod_sandbox_id) {
            return Err(CriError::not_found(format!("sandbox {}", req.pod_sandbox_id)));
        }
        st.next_id += 1;
        let id = format!("c{}-{}-{}", st.next_id, md.name, md.attempt);
        let c = FakeContainer {
            id: id.clone(),
            sandbox_id: req.pod_sandbox_id,
            name: md.name.clone(),
            attempt: md.attempt,
            state: cri::ContainerState::ContainerCreated,
            exit_code: 0,
            created_at: now,
            started_at: 0,
            finished_at: 0,
        };
        st.containers.insert(id.clone(), c);
        st.calls.push(format!("CreateContainer {} {}", md.name, md.attempt));
        Ok(cri::CreateContainerResponse { container_id: id })
    }
    async fn start_container(&self, req: cri::StartContainerRequest) -> CriResult<cri::StartContainerResponse> {
        let now = self.clock.now();
        let mut st = self.state();
        let Some(c) = st.containers.get_mut(&req.container_id) else { return Err(CriError::not_found(req.container_id)) };
        c.state = cri::ContainerState::ContainerRunning;
        c.started_at = now;
        let name = c.name.clone();
        st.calls.push(format!("StartContainer {name}"));
        Ok(cri::StartContainerResponse {})
    }
    async fn stop_container(&self, req: cri::StopContainerRequest) -> CriResult<cri::StopContainerResponse> {
        let now = self.clock.now();
        let mut st = self.state();
        let Some(c) = st.containers.get_mut(&req.container_id) else { return Ok(cri::StopContainerResponse {}) };
        if c.state == cri::ContainerState::ContainerRunning {
            c.state = cri::ContainerState::ContainerExited;
            c.exit_code = 137;
            c.finished_at = now;
        }
        let name = c.name.clone();
        st.calls.push(format!("StopContainer {name}"));
        Ok(cri::StopContainerResponse {})
    }
    async fn remove_container(&self, req: cri::RemoveContainerRequest) -> CriResult<cri::RemoveContainerResponse> {
        self.state().containers.remove(&req.container_id);
        self.record(format!("RemoveContainer {}", req.container_id));
        Ok(cri::RemoveContainerResponse {})
    }
    async fn list_containers(&self, req: cri::ListContainersRequest) -> CriResult<cri::ListContainersResponse> {
        let sandbox = req.filter.map(|f| f.pod_sandbox_id).unwrap_or_default();
        let st = self.state();
        let containers = st
            .containers
            .values()
            .filter(|c| sandbox.is_empty() || c.sandbox_id == sandbox)
            .map(|c| cri::Container {
                id: c.id.clone(),
                pod_sandbox_id: c.sandbox_id.clone(),
                metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt: c.attempt }),
                state: c.state as i32,
                created_at: c.created_at,
                ..Default::default()
            })
            .collect();
        Ok(cri::ListContainersResponse { containers })
    }
    async fn container_status(&self, req: cri::ContainerStatusRequest) -> CriResult<cri::ContainerStatusResponse> {
        let st = self.state();
        let c = st.containers.get(&req.container_id).ok_or_else(|| CriError::not_found(req.container_id.clone()))?;
        Ok(cri::ContainerStatusResponse { status: Some(Self::status_of(c)), ..Default::default() })
    }
    async fn update_container_resources(&self, _req: cri::UpdateContainerResourcesRequest) -> CriResult<cri::UpdateContainerResourcesResponse> {
        not_faked("UpdateContainerResources")
    }
    async fn reopen_container_log(&self, _req: cri::ReopenContainerLogRequest) -> CriResult<cri::ReopenContainerLogResponse> {
        not_faked("ReopenContainerLog")
    }
    async fn exec_sync(&self, req: cri::ExecSyncRequest) -> CriResult<cri::ExecSyncResponse> {
        let mut st = self.state();
        let name = st.containers.get(&req.container_id).map(|c| c.name.clone()).ok_or_else(|| CriError::not_found(req.container_id.clone()))?;
        let exit_code = st.exec_exit.get(&name).copied().unwrap_or(0);
        st.calls.push(format!("ExecSync {name}"));
        let stderr = if exit_code == 0 { vec![] } else { format!("{name} is unwell").into_bytes() };
        Ok(cri::ExecSyncResponse { stdout: vec![], stderr, exit_code })
    }
    async fn exec(&self, _req: cri::ExecRequest) -> CriResult<cri::ExecResponse> {
        not_faked("Exec")
    }
    async fn attach(&self, _req: cri::AttachRequest) -> CriResult<cri::AttachResponse> {
        not_faked("Attach")
    }
    async fn port_forward(&self, _req: cri::PortForwardRequest) -> CriResult<cri::PortForwardResponse> {
        not_faked("PortForward")
    }
    async fn container_stats(&self, _req: cri::ContainerStatsRequest) -> CriResult<cri::ContainerStatsResponse> {
        not_faked("ContainerStats")
    }
    async fn list_container_stats(&self, _req: cri::ListContainerStatsRequest) -> CriResult<cri::ListContainerStatsResponse> {
        Ok(Default::default())
    }
    async fn pod_sandbox_stats(&self, _req: cri::PodSandboxStatsRequest) -> CriResult<cri::PodSandboxStatsResponse> {
        not_faked("PodSandboxStats")
    }
    async fn list_pod_sandbox_stats(&self, _req: cri::ListPodSandboxStatsRequest) -> CriResult<cri::ListPodSandboxStatsResponse> {
        Ok(Default::default())
    }
    async fn update_runtime_config(&self, _req: cri::UpdateRuntimeConfigRequest) -> CriResult<cri::UpdateRuntimeConfigResponse> {
        Ok(Default::default())
    }
    async fn list_metric_descriptors(&self, _req: cri::ListMetricDescriptorsRequest) -> CriResult<cri::ListMetricDescriptorsResponse> {
        Ok(Default::default())
    }
    async fn list_pod_sandbox_metrics(&self, _req: cri::ListPodSandboxMetricsRequest) -> CriResult<cri::ListPodSandboxMetricsResponse> {
        Ok(Default::default())
    }
    async fn update_pod_sandbox_resources(&self, _req: cri::UpdatePodSandboxResourcesRequest) -> CriResult<cri::UpdatePodSandboxResourcesResponse> {
        not_faked("UpdatePodSandboxResources")
    }
}

/// Every image is present; pulls succeed and are recorded.
#[tonic::async_trait]
impl ImageApi for FakeRuntime {
    async fn list_images(&self, _req: cri::ListImagesRequest) -> CriResult<cri::ListImagesResponse> {
        Ok(Default::default())
    }
    async fn image_status(&self, req: cri::ImageStatusRequest) -> CriResult<cri::ImageStatusResponse> {
        let image = req.image.map(|i| i.image).unwrap_or_default();
        Ok(cri::ImageStatusResponse {
            image: Some(cri::Image { id: format!("sha256:{:064}", 0), repo_tags: vec![image], size: 1024, ..Default::default() }),
            ..Default::default()
        })
    }
    async fn pull_image(&self, req: cri::PullImageRequest) -> CriResult<cri::PullImageResponse> {
        let image = req.image.map(|i| i.image).unwrap_or_default();
        self.record(format!("PullImage {image}"));
        Ok(cri::PullImageResponse { image_ref: image })
    }
    async fn remove_image(&self, _req: cri::RemoveImageRequest) -> CriResult<cri::RemoveImageResponse> {
        Ok(Default::default())
    }
    async fn image_fs_info(&self, _req: cri::ImageFsInfoRequest) -> CriResult<cri::ImageFsInfoResponse> {
        Ok(Default::default())
    }
}

/// Pod cgroups as a map; no netns (as for a host-network pod).
#[tonic::async_trait]
impl NodeRuntimeApi for FakeRuntime {
    fn pod_cgroup_parent(&self, root: &str, qos: &str, uid: &str) -> CriResult<String> {
        Ok(match qos {
            crate::cri::api::QOS_GUARANTEED => format!("{root}/pod{uid}"),
            _ => format!("{root}/{}/pod{uid}", qos.to_lowercase()),
        })
    }
    async fn ensure_pod_cgroup(&self, parent: &str, limits: PodCgroupLimits) -> CriResult<()> {
        let mut st = self.state();
        st.cgroups.insert(parent.to_string(), limits);
        st.calls.push(format!("EnsurePodCgroup {parent}"));
        Ok(())
    }
    async fn remove_pod_cgroup(&self, parent: &str) -> CriResult<()> {
        let mut st = self.state();
        st.cgroups.remove(parent);
        st.removed_cgroups.push(parent.to_string());
        st.calls.push(format!("RemovePodCgroup {parent}"));
        Ok(())
    }
    async fn pod_netns(&self, _sandbox_id: &str) -> CriResult<Option<std::path::PathBuf>> {
        Ok(None)
    }
}

/// A node's shared state over a fake runtime, its directories in a temporary one.
pub struct Harness {
    pub rt: Arc<FakeRuntime>,
    pub clock: FakeClock,
    pub shared: Arc<NodeShared>,
    /// Removed (with everything the worker wrote) when the harness goes.
    _dir: tempfile::TempDir,
}

pub fn harness() -> Harness {
    harness_with(eviction::EvictionConfig::default())
}

/// A harness whose node evicts by `eviction` (tests that run housekeeping turn it off: it
/// measures the real machine).
pub fn harness_with(eviction: eviction::EvictionConfig) -> Harness {
    let dir = tempfile::Builder::new().prefix("berth-worker-test").tempdir().expect("a temporary directory");
    let clock = FakeClock::new();
    let rt = Arc::new(FakeRuntime::new(clock.clone()));
    let cfg = NodeConfig {
        node_name: "berth-test-node".into(),
        node_ip: "127.0.0.1".into(),
        manifest_dir: dir.path().join("manifests"),
        state_dir: dir.path().join("state"),
        pods_dir: dir.path().join("pods"),
        log_dir: dir.path().join("logs"),
        seccomp_dir: dir.path().join("seccomp"),
        cgroup_root: "/kubepods".into(),
        pod_max_pids: Some(1024),
        sync_period: Duration::from_secs(1),
        cluster_domain: "cluster.local".into(),
        cluster_dns: vec![],
        resolv_conf: crate::node::dns::SYSTEM_RESOLV_CONF.into(),
        eviction: eviction.settings().expect("eviction settings"),
        image_gc: image_gc::ImageGcConfig::default().settings().expect("default image GC settings"),
    };
    for d in [&cfg.state_dir, &cfg.pods_dir, &cfg.log_dir] {
        std::fs::create_dir_all(d).expect("a node directory");
    }
    let shared = Arc::new(NodeShared {
        runtime: rt.clone(),
        images: rt.clone(),
        host: rt.clone(),
        clock: clock.as_node_clock(),
        cfg,
        statuses: Default::default(),
        status_published: tokio::sync::Notify::new(),
        errors: Default::default(),
        details: Default::default(),
        departed: Default::default(),
        objects: Default::default(),
        metrics: Default::default(),
        pressure: Default::default(),
        evictions: Default::default(),
        cpu: Default::default(),
        saved_progress: Default::default(),
        progress_writes: crate::util::keyed_lock::KeyedLock::new(),
    });
    Harness { rt, clock, shared, _dir: dir }
}
