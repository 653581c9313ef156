//! The CRI RuntimeService over Berth's runtime: CRI messages in, runtime operations, CRI
//! messages out. No mechanism lives here; that is `crate::runtime`.
use super::api::{CriError, CriResult, RuntimeApi};
use crate::cri::v1 as cri;
use crate::runtime::container::{ContainerState, Observed};
use crate::runtime::records::{self, ContainerRecord, SandboxRecord};
use crate::runtime::{metrics, stats, Runtime};
use crate::streaming::{StreamRequest, StreamingServer, TokenError};
use std::collections::HashMap;
use std::sync::Arc;

/// The CRI API version Berth speaks.
pub const CRI_API_VERSION: &str = "v1";
pub const RUNTIME_NAME: &str = "berth";

pub struct CriRuntime {
    rt: Arc<Runtime>,
    cgroup_driver: cri::CgroupDriver,
    streaming: Arc<StreamingServer>,
}

impl CriRuntime {
    /// The streaming server the Exec, Attach and PortForward URLs point at.
    pub fn streaming_server(&self) -> Arc<StreamingServer> {
        self.streaming.clone()
    }

    pub fn new(rt: Arc<Runtime>, streaming: Arc<StreamingServer>) -> Self {
        let cgroup_driver = if rt.config().systemd_cgroup { cri::CgroupDriver::Systemd } else { cri::CgroupDriver::Cgroupfs };
        CriRuntime { rt, cgroup_driver, streaming }
    }

    /// The runtime underneath (for the node agent's door, `node_runtime`).
    pub(super) fn runtime(&self) -> &Runtime {
        &self.rt
    }

    fn stream_url(&self, req: StreamRequest) -> CriResult<String> {
        self.streaming.url_for(req).map_err(|e| match e {
            TokenError::Exhausted => CriError::new(tonic::Code::ResourceExhausted, e.to_string()),
            TokenError::Random(_) => CriError::new(tonic::Code::Internal, e.to_string()),
        })
    }

    /// The checks Exec and Attach share: a running container and a sensible stdio set.
    fn check_stream_target(&self, container_id: &str, tty: bool, stdin: bool, stdout: bool, stderr: bool) -> CriResult<String> {
        if container_id.is_empty() {
            return Err(CriError::invalid("container_id is required"));
        }
        if !stdin && !stdout && !stderr {
            return Err(CriError::invalid("one of stdin, stdout, or stderr must be set"));
        }
        if tty && stderr {
            return Err(CriError::invalid("tty and stderr cannot both be true"));
        }
        let rec = self.rt.container(container_id)?;
        if self.rt.observe(&rec).state != ContainerState::Running {
            return Err(CriError::new(tonic::Code::FailedPrecondition, format!("container {} is not running", rec.id)));
        }
        Ok(rec.id)
    }
}

fn condition(kind: &str, status: bool, reason: &str, message: &str) -> cri::RuntimeCondition {
    cri::RuntimeCondition { r#type: kind.into(), status, reason: reason.into(), message: message.into() }
}

fn labels_match(selector: &HashMap<String, String>, labels: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn sandbox_state(rec: &SandboxRecord) -> cri::PodSandboxState {
    if rec.stopped {
        cri::PodSandboxState::SandboxNotready
    } else {
        cri::PodSandboxState::SandboxReady
    }
}

fn container_state(s: ContainerState) -> cri::ContainerState {
    match s {
        ContainerState::Created => cri::ContainerState::ContainerCreated,
        ContainerState::Running => cri::ContainerState::ContainerRunning,
        ContainerState::Exited => cri::ContainerState::ContainerExited,
    }
}

fn image_spec(rec: &ContainerRecord, config: &cri::ContainerConfig) -> cri::ImageSpec {
    let mut spec = config.image.clone().unwrap_or_default();
    spec.image = rec.image_id.clone();
    if spec.user_specified_image.is_empty() {
        spec.user_specified_image = rec.image_name.clone();
    }
    spec
}

impl CriRuntime {
    fn container_status_of(&self, obs: &Observed) -> cri::ContainerStatus {
        let rec = &obs.rec;
        let config: cri::ContainerConfig = records::decode(&rec.config);
        let (exit_code, finished_at, reason, message) = match (&obs.exit, obs.state) {
            (Some(e), ContainerState::Exited) => {
                let reason = if rec.start_error.is_some() {
                    "StartError"
                } else if e.oom_killed {
                    "OOMKilled"
                } else if e.exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                };
                (e.exit_code, e.finished_at, reason.to_string(), rec.start_error.clone().unwrap_or_default())
            }
            _ => (0, 0, String::new(), String::new()),
        };
        let spec = self.rt.container_spec(&rec.id);
        let resources = spec.as_ref().and_then(|s| s.linux().as_ref().and_then(|l| l.resources().clone())).map(|r| {
            let cpu = r.cpu().clone().unwrap_or_default();
            cri::ContainerResources {
                linux: Some(cri::LinuxContainerResources {
                    cpu_period: cpu.period().unwrap_or(0) as i64,
                    cpu_quota: cpu.quota().unwrap_or(0),
                    cpu_shares: cpu.shares().unwrap_or(0) as i64,
                    memory_limit_in_bytes: r.memory().as_ref().and_then(|m| m.limit()).unwrap_or(0),
                    cpuset_cpus: cpu.cpus().clone().unwrap_or_default(),
                    cpuset_mems: cpu.mems().clone().unwrap_or_default(),
                    oom_score_adj: spec.as_ref().and_then(|s| s.process().as_ref().and_then(|p| p.oom_score_adj())).unwrap_or(0) as i64,
                    ..Default::default()
                }),
                windows: None,
            }
        });
        let user = spec.as_ref().and_then(|s| s.process().clone()).map(|p| cri::ContainerUser {
            linux: Some(cri::LinuxContainerUser {
                uid: p.user().uid() as i64,
                gid: p.user().gid() as i64,
                supplemental_groups: p.user().additional_gids().clone().unwrap_or_default().into_iter().map(i64::from).collect(),
            }),
        });
        cri::ContainerStatus {
            id: rec.id.clone(),
            metadata: config.metadata.clone(),
            state: container_state(obs.state) as i32,
            created_at: rec.created_at,
            started_at: obs.run.as_ref().map(|r| r.started_at).unwrap_or(0),
            finished_at,
            exit_code,
            image: Some(image_spec(rec, &config)),
            image_ref: rec.image_ref.clone(),
            reason,
            message,
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            mounts: config.mounts.clone(),
            log_path: rec.log_path.as_ref().map(|p| p.to_string_lossy().to_string()).unwrap_or_default(),
            resources,
            image_id: rec.image_id.clone(),
            user,
            stop_signal: crate::runtime::container::cri_signal(rec.stop_signal) as i32,
        }
    }

    fn sandbox_status_of(&self, rec: &SandboxRecord) -> cri::PodSandboxStatus {
        let config: cri::PodSandboxConfig = records::decode(&rec.config);
        let ns = config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.clone());
        cri::PodSandboxStatus {
            id: rec.id.clone(),
            metadata: config.metadata.clone(),
            state: sandbox_state(rec) as i32,
            created_at: rec.created_at,
            network: Some(cri::PodSandboxNetworkStatus {
                ip: rec.ip.clone(),
                additional_ips: rec.additional_ips.iter().map(|ip| cri::PodIp { ip: ip.clone() }).collect(),
            }),
            linux: Some(cri::LinuxPodSandboxStatus { namespaces: Some(cri::Namespace { options: ns }) }),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
            runtime_handler: rec.runtime_handler.clone(),
        }
    }
}

impl CriRuntime {
    /// Run filesystem work (cgroup files, directory walks, netns reads) on a blocking thread,
    /// in the caller's span.
    async fn blocking<T: Send + 'static>(&self, f: impl FnOnce(&Runtime) -> T + Send + 'static) -> CriResult<T> {
        let rt = self.rt.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || span.in_scope(|| f(&rt))).await.map_err(|e| CriError::new(tonic::Code::Internal, format!("stats task: {e}")))
    }
}

/// A container's CRI stats: cgroup reads and a walk of its writable layer (blocking work:
/// callers run it on a blocking thread).
fn container_stats_of(rt: &Runtime, rec: &ContainerRecord) -> cri::ContainerStats {
    let config: cri::ContainerConfig = records::decode(&rec.config);
    let usage = rt.cgroup_usage(&rec.cgroup);
    let (bytes, inodes) = rt.writable_layer_usage(&rec.id);
    let now = crate::runtime::state::now_ns();
    cri::ContainerStats {
        attributes: Some(cri::ContainerAttributes {
            id: rec.id.clone(),
            metadata: config.metadata.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        }),
        cpu: usage.as_ref().map(|u| u.cpu),
        memory: usage.as_ref().map(|u| u.memory),
        writable_layer: Some(cri::FilesystemUsage {
            timestamp: now,
            fs_id: Some(cri::FilesystemIdentifier { mountpoint: rt.config().data_dir.join("containers").to_string_lossy().to_string() }),
            used_bytes: Some(cri::UInt64Value { value: bytes }),
            inodes_used: Some(cri::UInt64Value { value: inodes }),
        }),
        swap: None,
        io: None,
    }
}

/// A pod's CRI stats, its containers' included (blocking work, as above).
fn sandbox_stats_of(rt: &Runtime, rec: &SandboxRecord) -> cri::PodSandboxStats {
    let config: cri::PodSandboxConfig = records::decode(&rec.config);
    let usage = rt.cgroup_usage(&rec.cgroup);
    let containers = rt.containers().into_iter().filter(|c| c.sandbox_id == rec.id).collect::<Vec<_>>();
    let container_stats = containers.iter().map(|c| container_stats_of(rt, c)).collect();
    let network = if rec.stopped { None } else { rec.net_ns.as_deref().and_then(stats::network_usage) };
    cri::PodSandboxStats {
        attributes: Some(cri::PodSandboxAttributes {
            id: rec.id.clone(),
            metadata: config.metadata.clone(),
            labels: config.labels.clone(),
            annotations: config.annotations.clone(),
        }),
        linux: Some(cri::LinuxPodSandboxStats {
            cpu: usage.as_ref().map(|u| u.cpu),
            memory: usage.as_ref().map(|u| u.memory),
            network,
            process: usage.as_ref().map(|u| cri::ProcessUsage { timestamp: u.cpu.timestamp, process_count: Some(cri::UInt64Value { value: u.processes }) }),
            containers: container_stats,
            io: None,
        }),
        windows: None,
    }
}

#[tonic::async_trait]
impl RuntimeApi for CriRuntime {
    async fn version(&self, _req: cri::VersionRequest) -> CriResult<cri::VersionResponse> {
        Ok(cri::VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: env!("CARGO_PKG_VERSION").into(),
            runtime_api_version: CRI_API_VERSION.into(),
        })
    }

    async fn status(&self, req: cri::StatusRequest) -> CriResult<cri::StatusResponse> {
        let network = match self.rt.network().status().await {
            Ok(()) => condition("NetworkReady", true, "", ""),
            Err(e @ crate::network::NetworkError::NotConfigured(_)) => {
                condition("NetworkReady", false, "NetworkPluginNotReady", &format!("{e} (pods get loopback only)"))
            }
            Err(e) => condition("NetworkReady", false, "NetworkPluginNotReady", &e.to_string()),
        };
        let conditions = vec![condition("RuntimeReady", true, "", ""), network];
        let mut info = HashMap::new();
        if req.verbose {
            let v = serde_json::json!({
                "cgroupMode": format!("{:?}", crate::runtime::cgroups::host_mode()),
                "cpuSamplesKept": self.rt.cpu_samples_kept(),
                "dataDir": self.rt.config().data_dir,
                "runDir": self.rt.config().run_dir,
            });
            info.insert("config".to_string(), v.to_string());
        }
        let handler_features =
            cri::RuntimeHandlerFeatures { recursive_read_only_mounts: crate::runtime::process::mounts::recursive_readonly_supported(), user_namespaces: false };
        Ok(cri::StatusResponse {
            status: Some(cri::RuntimeStatus { conditions }),
            info,
            runtime_handlers: self
                .rt
                .config()
                .handlers
                .names()
                .into_iter()
                .map(|name| cri::RuntimeHandler { name, features: Some(handler_features) })
                .collect(),
            features: Some(cri::RuntimeFeatures { supplemental_groups_policy: true, user_namespaces_host_network: false, mount_options: true }),
        })
    }

    async fn runtime_config(&self, _req: cri::RuntimeConfigRequest) -> CriResult<cri::RuntimeConfigResponse> {
        Ok(cri::RuntimeConfigResponse { linux: Some(cri::LinuxRuntimeConfiguration { cgroup_driver: self.cgroup_driver as i32 }) })
    }

    async fn run_pod_sandbox(&self, req: cri::RunPodSandboxRequest) -> CriResult<cri::RunPodSandboxResponse> {
        let config = req.config.ok_or_else(|| CriError::invalid("config is required"))?;
        let id = self.rt.run_sandbox_detached(config, req.runtime_handler).await?;
        Ok(cri::RunPodSandboxResponse { pod_sandbox_id: id })
    }

    async fn stop_pod_sandbox(&self, req: cri::StopPodSandboxRequest) -> CriResult<cri::StopPodSandboxResponse> {
        self.rt.stop_sandbox(&req.pod_sandbox_id).await?;
        Ok(cri::StopPodSandboxResponse {})
    }

    async fn remove_pod_sandbox(&self, req: cri::RemovePodSandboxRequest) -> CriResult<cri::RemovePodSandboxResponse> {
        self.rt.remove_sandbox(&req.pod_sandbox_id).await?;
        Ok(cri::RemovePodSandboxResponse {})
    }

    async fn pod_sandbox_status(&self, req: cri::PodSandboxStatusRequest) -> CriResult<cri::PodSandboxStatusResponse> {
        let rec = self.rt.sandbox(&req.pod_sandbox_id)?;
        let mut info = HashMap::new();
        if req.verbose {
            let config: cri::PodSandboxConfig = records::decode(&rec.config);
            let v = serde_json::json!({
                "pid": if rec.init_pid > 0 && crate::runtime::state::process_alive(rec.init_pid, rec.init_start_time) { rec.init_pid } else { 0 },
                "netns": rec.net_ns,
                "namespaces": {"net": rec.net_ns, "ipc": rec.ipc_ns, "uts": rec.uts_ns, "pid": rec.pid_ns},
                "cgroupParent": rec.cgroup.path,
                "runtimeHandler": rec.runtime_handler,
                "hostNetwork": rec.host_network,
                "config": {"hostname": config.hostname, "logDirectory": config.log_directory},
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(cri::PodSandboxStatusResponse {
            status: Some(self.sandbox_status_of(&rec)),
            info,
            containers_statuses: vec![],
            timestamp: crate::runtime::state::now_ns(),
        })
    }

    async fn list_pod_sandbox(&self, req: cri::ListPodSandboxRequest) -> CriResult<cri::ListPodSandboxResponse> {
        let filter = req.filter.unwrap_or_default();
        let items = self
            .rt
            .sandboxes()
            .into_iter()
            .filter(|s| filter.id.is_empty() || s.id.starts_with(&filter.id))
            .filter(|s| filter.state.as_ref().map(|st| st.state == sandbox_state(s) as i32).unwrap_or(true))
            .map(|s| {
                let st = self.sandbox_status_of(&s);
                cri::PodSandbox {
                    id: st.id,
                    metadata: st.metadata,
                    state: st.state,
                    created_at: st.created_at,
                    labels: st.labels,
                    annotations: st.annotations,
                    runtime_handler: st.runtime_handler,
                }
            })
            .filter(|s| labels_match(&filter.label_selector, &s.labels))
            .collect();
        Ok(cri::ListPodSandboxResponse { items })
    }

    async fn create_container(&self, req: cri::CreateContainerRequest) -> CriResult<cri::CreateContainerResponse> {
        let config = req.config.ok_or_else(|| CriError::invalid("config is required"))?;
        let id = self.rt.create_container_detached(req.pod_sandbox_id, config, req.sandbox_config).await?;
        Ok(cri::CreateContainerResponse { container_id: id })
    }

    async fn start_container(&self, req: cri::StartContainerRequest) -> CriResult<cri::StartContainerResponse> {
        self.rt.start_container(&req.container_id).await?;
        Ok(cri::StartContainerResponse {})
    }

    async fn stop_container(&self, req: cri::StopContainerRequest) -> CriResult<cri::StopContainerResponse> {
        self.rt.stop_container(&req.container_id, req.timeout).await?;
        Ok(cri::StopContainerResponse {})
    }

    async fn remove_container(&self, req: cri::RemoveContainerRequest) -> CriResult<cri::RemoveContainerResponse> {
        self.rt.remove_container(&req.container_id).await?;
        Ok(cri::RemoveContainerResponse {})
    }

    async fn list_containers(&self, req: cri::ListContainersRequest) -> CriResult<cri::ListContainersResponse> {
        let filter = req.filter.unwrap_or_default();
        let containers = self
            .rt
            .containers()
            .into_iter()
            .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
            .filter(|c| filter.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&filter.pod_sandbox_id))
            .map(|c| self.rt.observe(&c))
            .filter(|o| filter.state.as_ref().map(|s| s.state == container_state(o.state) as i32).unwrap_or(true))
            .map(|o| {
                let st = self.container_status_of(&o);
                cri::Container {
                    id: st.id,
                    pod_sandbox_id: o.rec.sandbox_id.clone(),
                    metadata: st.metadata,
                    image: st.image,
                    image_ref: st.image_ref,
                    state: st.state,
                    created_at: st.created_at,
                    labels: st.labels,
                    annotations: st.annotations,
                    image_id: st.image_id,
                }
            })
            .filter(|c| labels_match(&filter.label_selector, &c.labels))
            .collect();
        Ok(cri::ListContainersResponse { containers })
    }

    async fn container_status(&self, req: cri::ContainerStatusRequest) -> CriResult<cri::ContainerStatusResponse> {
        let rec = self.rt.container(&req.container_id)?;
        let obs = self.rt.observe(&rec);
        let mut info = HashMap::new();
        if req.verbose {
            let v = serde_json::json!({
                "sandboxID": rec.sandbox_id,
                "pid": obs.pid(),
                "monitorPid": obs.run.as_ref().map(|r| r.monitor_pid).unwrap_or(0),
                "rootfs": self.rt.container_rootfs(&rec.id),
                "cgroupsPath": rec.cgroup.path,
                "runtimeSpec": self.rt.container_spec(&rec.id),
            });
            info.insert("info".to_string(), v.to_string());
        }
        Ok(cri::ContainerStatusResponse { status: Some(self.container_status_of(&obs)), info })
    }

    async fn update_container_resources(&self, req: cri::UpdateContainerResourcesRequest) -> CriResult<cri::UpdateContainerResourcesResponse> {
        let res = req.linux.ok_or_else(|| CriError::invalid("linux resources are required"))?;
        self.rt.update_resources(&req.container_id, res).await?;
        Ok(cri::UpdateContainerResourcesResponse {})
    }

    async fn reopen_container_log(&self, req: cri::ReopenContainerLogRequest) -> CriResult<cri::ReopenContainerLogResponse> {
        self.rt.reopen_log(&req.container_id).await?;
        Ok(cri::ReopenContainerLogResponse {})
    }

    async fn exec_sync(&self, req: cri::ExecSyncRequest) -> CriResult<cri::ExecSyncResponse> {
        let (exit_code, stdout, stderr) = self.rt.exec_sync(&req.container_id, req.cmd, req.timeout).await?;
        Ok(cri::ExecSyncResponse { stdout, stderr, exit_code })
    }

    async fn exec(&self, req: cri::ExecRequest) -> CriResult<cri::ExecResponse> {
        if req.cmd.is_empty() {
            return Err(CriError::invalid("cmd must not be empty"));
        }
        let container_id = self.check_stream_target(&req.container_id, req.tty, req.stdin, req.stdout, req.stderr)?;
        let url =
            self.stream_url(StreamRequest::Exec { container_id, cmd: req.cmd, tty: req.tty, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr })?;
        Ok(cri::ExecResponse { url })
    }

    async fn attach(&self, req: cri::AttachRequest) -> CriResult<cri::AttachResponse> {
        let container_id = self.check_stream_target(&req.container_id, req.tty, req.stdin, req.stdout, req.stderr)?;
        let url = self.stream_url(StreamRequest::Attach { container_id, tty: req.tty, stdin: req.stdin, stdout: req.stdout, stderr: req.stderr })?;
        Ok(cri::AttachResponse { url })
    }

    async fn port_forward(&self, req: cri::PortForwardRequest) -> CriResult<cri::PortForwardResponse> {
        if req.pod_sandbox_id.is_empty() {
            return Err(CriError::invalid("pod_sandbox_id is required"));
        }
        if let Some(p) = req.port.iter().find(|p| !(1..=65535).contains(*p)) {
            return Err(CriError::invalid(format!("port {p} is out of range 1-65535")));
        }
        let rec = self.rt.sandbox(&req.pod_sandbox_id)?;
        if rec.stopped {
            return Err(CriError::new(tonic::Code::FailedPrecondition, format!("pod sandbox {} is not ready", rec.id)));
        }
        let url = self.stream_url(StreamRequest::PortForward { sandbox_id: rec.id, ports: req.port })?;
        Ok(cri::PortForwardResponse { url })
    }

    async fn container_stats(&self, req: cri::ContainerStatsRequest) -> CriResult<cri::ContainerStatsResponse> {
        let rec = self.rt.container(&req.container_id)?;
        let stats = self.blocking(move |rt| container_stats_of(rt, &rec)).await?;
        Ok(cri::ContainerStatsResponse { stats: Some(stats) })
    }

    async fn list_container_stats(&self, req: cri::ListContainerStatsRequest) -> CriResult<cri::ListContainerStatsResponse> {
        let filter = req.filter.unwrap_or_default();
        let stats = self
            .blocking(move |rt| {
                rt.containers()
                    .into_iter()
                    .filter(|c| filter.id.is_empty() || c.id.starts_with(&filter.id))
                    .filter(|c| filter.pod_sandbox_id.is_empty() || c.sandbox_id.starts_with(&filter.pod_sandbox_id))
                    .filter(|c| labels_match(&filter.label_selector, &records::decode::<cri::ContainerConfig>(&c.config).labels))
                    .filter(|c| rt.observe(c).state == ContainerState::Running)
                    .map(|c| container_stats_of(rt, &c))
                    .collect()
            })
            .await?;
        Ok(cri::ListContainerStatsResponse { stats })
    }

    async fn pod_sandbox_stats(&self, req: cri::PodSandboxStatsRequest) -> CriResult<cri::PodSandboxStatsResponse> {
        let rec = self.rt.sandbox(&req.pod_sandbox_id)?;
        let stats = self.blocking(move |rt| sandbox_stats_of(rt, &rec)).await?;
        Ok(cri::PodSandboxStatsResponse { stats: Some(stats) })
    }

    async fn list_pod_sandbox_stats(&self, req: cri::ListPodSandboxStatsRequest) -> CriResult<cri::ListPodSandboxStatsResponse> {
        let filter = req.filter.unwrap_or_default();
        let stats = self
            .blocking(move |rt| {
                rt.sandboxes()
                    .into_iter()
                    .filter(|s| filter.id.is_empty() || s.id.starts_with(&filter.id))
                    .filter(|s| labels_match(&filter.label_selector, &records::decode::<cri::PodSandboxConfig>(&s.config).labels))
                    .filter(|s| !s.stopped)
                    .map(|s| sandbox_stats_of(rt, &s))
                    .collect()
            })
            .await?;
        Ok(cri::ListPodSandboxStatsResponse { stats })
    }

    async fn update_runtime_config(&self, req: cri::UpdateRuntimeConfigRequest) -> CriResult<cri::UpdateRuntimeConfigResponse> {
        if let Some(cidr) = req.runtime_config.and_then(|c| c.network_config).map(|n| n.pod_cidr).filter(|c| !c.is_empty()) {
            tracing::info!(pod_cidr = %cidr, "pod CIDR updated");
            self.rt.network().set_pod_cidr(&cidr).await;
        }
        Ok(cri::UpdateRuntimeConfigResponse {})
    }

    async fn update_pod_sandbox_resources(&self, req: cri::UpdatePodSandboxResourcesRequest) -> CriResult<cri::UpdatePodSandboxResourcesResponse> {
        self.rt.update_sandbox_resources(&req.pod_sandbox_id, req.overhead, req.resources).await?;
        Ok(cri::UpdatePodSandboxResourcesResponse {})
    }

    async fn list_metric_descriptors(&self, _req: cri::ListMetricDescriptorsRequest) -> CriResult<cri::ListMetricDescriptorsResponse> {
        let span = tracing::info_span!("metrics", rpc = "list_metric_descriptors");
        Ok(span.in_scope(|| cri::ListMetricDescriptorsResponse { descriptors: metrics::descriptors() }))
    }

    async fn list_pod_sandbox_metrics(&self, _req: cri::ListPodSandboxMetricsRequest) -> CriResult<cri::ListPodSandboxMetricsResponse> {
        let span = tracing::info_span!("metrics", rpc = "list_pod_sandbox_metrics", pods = tracing::field::Empty);
        let rt = self.rt.clone();
        // The walk reads /proc, cgroup files and whole writable layers: off the async threads.
        let worker = span.clone();
        let pod_metrics = tokio::task::spawn_blocking(move || worker.in_scope(|| rt.pod_sandbox_metrics()))
            .await
            .map_err(|e| CriError::new(tonic::Code::Internal, format!("collecting pod metrics: {e}")))?;
        span.record("pods", pod_metrics.len());
        Ok(cri::ListPodSandboxMetricsResponse { pod_metrics })
    }
}
