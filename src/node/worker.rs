//! One pod worker per pod: drives the runtime (through the same CRI trait the gRPC server
//! exposes) towards the pod's spec — sandbox, init containers one at a time, app containers,
//! restarts by policy with back-off — and keeps the pod's status. Its progress is persisted
//! so a restarted node carries on where it left off.
use super::backoff::Backoff;
use super::convert::{self, FieldValues};
use super::handler::{self, Target};
use super::probe;
use super::status;
use super::volumes;
use super::NodeShared;
use crate::cri::api::{ImageApi, PodCgroupLimits, RuntimeApi};
use crate::cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;
use tracing::Instrument;

/// Per-container progress.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ContainerProgress {
    pub restart_count: u32,
    pub backoff: Backoff,
    /// Not before this time (ns) may the container start again.
    pub next_start_ns: i64,
    /// The reason and message to show while the container waits.
    pub waiting: Option<(String, String)>,
    /// The attempt the last created container had.
    pub attempt: u32,
    pub ever_started: bool,
    /// The previous attempt, kept (as the kubelet keeps it) for lastState and previous logs.
    #[serde(default)]
    pub previous_id: Option<String>,
    /// Image pull back-off: the current delay (0 = none) and when the next pull may start.
    #[serde(default)]
    pub pull_delay_secs: i64,
    #[serde(default)]
    pub next_pull_ns: i64,
    /// The last pull error, repeated while backing off.
    #[serde(default)]
    pub pull_error: String,
}

/// What the worker knows about its pod beyond what the runtime reports.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PodProgress {
    pub sandbox_id: String,
    pub sandbox_attempt: u32,
    pub start_time_ns: i64,
    pub containers: BTreeMap<String, ContainerProgress>,
    /// Condition type → (status, last transition ns).
    pub conditions: BTreeMap<String, (bool, i64)>,
    pub phase: String,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub pod_ips: Vec<String>,
    pub init_done: bool,
    /// What probes say now, per container: (started, ready). Not kept across restarts: a
    /// restarted node probes afresh, as the kubelet does.
    #[serde(skip)]
    pub probe_view: BTreeMap<String, (bool, bool)>,
    /// Recent events about the pod (probe failures, kills, hook failures), newest last.
    #[serde(default)]
    pub events: Vec<PodEvent>,
    /// The pod's start latency has been counted in the metrics.
    #[serde(default)]
    pub start_recorded: bool,
    /// The node admitted the pod (pressure admission passed once).
    #[serde(default)]
    pub admitted: bool,
}

/// Something that happened to a pod, as a v1.Event shows it.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct PodEvent {
    /// "Normal" or "Warning".
    pub kind: String,
    pub reason: String,
    pub message: String,
    /// The container it is about (`spec.containers{name}`), if any.
    pub field_path: Option<String>,
    pub count: u32,
    pub first_ns: i64,
    pub last_ns: i64,
}

/// Events kept per pod.
const MAX_EVENTS: usize = 100;

/// The runtime's view of one container name: its newest attempt.
#[derive(Debug, Clone)]
pub struct Observed {
    pub status: cri::ContainerStatus,
    /// The attempt before it, when the container has restarted.
    pub previous: Option<cri::ContainerStatus>,
}

pub struct Worker {
    pub pod: Pod,
    shared: Arc<NodeShared>,
    progress: PodProgress,
    /// Probe state per (container name, kind): the container ID it belongs to and its track.
    probes: std::collections::HashMap<(String, probe::Kind), (String, probe::Track)>,
    /// (sandbox ID, its network namespace) for probes and hooks.
    netns: Option<(String, Option<std::path::PathBuf>)>,
    /// Terminated containers' messages (termination message or log tail), by container ID.
    messages: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The ConfigMaps and Secrets the pod's volumes were last brought up to date with.
    applied_objects: Option<volumes::Objects>,
    /// The runtime's recursive read-only mount feature, once asked.
    rro_mounts: Option<bool>,
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

impl Worker {
    /// Pulls `image` with each credential the pod's imagePullSecrets give for its registry in
    /// turn (the first that works), or without credentials when none applies, as the kubelet.
    async fn pull(&self, image: &str) -> crate::cri::api::CriResult<cri::PullImageResponse> {
        let spec = Some(cri::ImageSpec { image: image.to_string(), ..Default::default() });
        let creds = {
            let objects = self.shared.objects.read().await;
            super::pull_secrets::credentials(&self.pod, &objects, image)
        };
        if creds.is_empty() {
            return self.images().pull_image(cri::PullImageRequest { image: spec, ..Default::default() }).await;
        }
        let mut last = None;
        for auth in creds {
            match self.images().pull_image(cri::PullImageRequest { image: spec.clone(), auth: Some(auth), ..Default::default() }).await {
                Ok(r) => return Ok(r),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| crate::cri::api::CriError::new(tonic::Code::Internal, "no credential was tried")))
    }
}

impl Worker {
    pub fn new(pod: Pod, shared: Arc<NodeShared>) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let progress = shared.load_progress(&uid).unwrap_or_default();
        Worker { pod, shared, progress, probes: Default::default(), netns: None, messages: Default::default(), applied_objects: None, rro_mounts: None }
    }

    /// Wall-clock time (ns) as the node's clock tells it.
    fn now(&self) -> i64 {
        (self.shared.clock)()
    }

    fn uid(&self) -> String {
        self.pod.metadata.uid.clone().unwrap_or_default()
    }

    fn rt(&self) -> &Arc<dyn RuntimeApi> {
        &self.shared.runtime
    }

    fn images(&self) -> &Arc<dyn ImageApi> {
        &self.shared.images
    }

    /// Run until told to stop, then tear the pod down.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        let span = tracing::info_span!("pod", pod = %super::manifest::full_name(&self.pod));
        self.run_inner(stop).instrument(span).await
    }

    async fn run_inner(mut self, mut stop: watch::Receiver<bool>) {
        if self.progress.start_time_ns == 0 {
            self.progress.start_time_ns = self.now();
            self.progress.phase = "Pending".into();
        }
        self.admit().await;
        loop {
            if *stop.borrow() {
                break;
            }
            let eviction = self.shared.evictions.lock().await.remove(&self.uid());
            if let Some(e) = eviction {
                self.evict(e).await;
            }
            if let Err(e) = self.sync().await {
                tracing::warn!("sync: {e}");
            }
            self.publish().await;
            tokio::select! {
                _ = stop.changed() => {}
                _ = tokio::time::sleep(self.shared.cfg.sync_period) => {}
            }
        }
        self.terminate().await;
    }

    fn restart_policy(&self) -> String {
        self.pod.spec.as_ref().and_then(|s| s.restart_policy.clone()).unwrap_or_else(|| "Always".into())
    }

    fn set_condition(&mut self, kind: &str, value: bool) {
        let now = self.now();
        let e = self.progress.conditions.entry(kind.to_string()).or_insert((value, now));
        if e.0 != value {
            *e = (value, now);
        }
    }

    async fn publish(&mut self) {
        let observed = self.observe().await.unwrap_or_default();
        let mut status = status::pod_status(&self.pod, &self.progress, &observed, &self.shared.cfg.node_ip);
        // Ready and ContainersReady follow the containers: record when they flip.
        let mut flipped = false;
        for c in status.conditions.clone().unwrap_or_default() {
            if c.type_ == "Ready" || c.type_ == "ContainersReady" {
                let value = c.status == "True";
                if self.progress.conditions.get(&c.type_).map(|x| x.0) != Some(value) {
                    self.set_condition(&c.type_, value);
                    flipped = true;
                }
            }
        }
        if flipped {
            status = status::pod_status(&self.pod, &self.progress, &observed, &self.shared.cfg.node_ip);
        }
        let mut pod = self.pod.clone();
        pod.status = Some(status);
        self.shared.statuses.write().await.insert(self.uid(), pod);
        self.shared.status_published.notify_one();
        self.shared.details.write().await.insert(self.uid(), (self.progress.clone(), self.log_dir()));
        self.shared.save_progress(&self.uid(), &self.progress).await;
    }

    /// Newest container of each name in the current sandbox.
    async fn observe(&self) -> Result<BTreeMap<String, Observed>, String> {
        let mut out: BTreeMap<String, Observed> = BTreeMap::new();
        if self.progress.sandbox_id.is_empty() {
            return Ok(out);
        }
        let list = self
            .rt()
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter { pod_sandbox_id: self.progress.sandbox_id.clone(), ..Default::default() }),
            })
            .await
            .map_err(err)?
            .containers;
        for c in list {
            let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
            let attempt = c.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
            let newer = out.get(&name).map(|o| o.status.metadata.as_ref().map(|m| m.attempt).unwrap_or(0) < attempt).unwrap_or(true);
            if newer {
                if let Ok(st) = self.rt().container_status(cri::ContainerStatusRequest { container_id: c.id.clone(), verbose: false }).await {
                    if let Some(status) = st.status {
                        out.insert(name, Observed { status, previous: None });
                    }
                }
            }
        }
        for (name, o) in out.iter_mut() {
            let Some(prev) = self.progress.containers.get(name).and_then(|p| p.previous_id.clone()) else { continue };
            if prev != o.status.id {
                o.previous = self.rt().container_status(cri::ContainerStatusRequest { container_id: prev, verbose: false }).await.ok().and_then(|r| r.status);
            }
        }
        for o in out.values_mut() {
            self.fill_message(&mut o.status).await;
            if let Some(p) = o.previous.as_mut() {
                self.fill_message(p).await;
            }
        }
        Ok(out)
    }

    /// An ended container's message as the kubelet shows it (termination message file, or
    /// the log's end under FallbackToLogsOnError), worked out once per container.
    async fn fill_message(&self, st: &mut cri::ContainerStatus) {
        if st.state != cri::ContainerState::ContainerExited as i32 {
            return;
        }
        let known = self.messages.lock().ok().and_then(|m| m.get(&st.id).cloned());
        if let Some(m) = known {
            st.message = m;
            return;
        }
        let spec = self.pod.spec.clone().unwrap_or_default();
        let name = st.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
        let Some(c) = spec.containers.iter().chain(spec.init_containers.iter().flatten()).find(|c| c.name == name) else { return };
        st.message = super::pod_files::termination_message(c, st, &self.pod_dir()).await;
        if let Ok(mut m) = self.messages.lock() {
            m.insert(st.id.clone(), st.message.clone());
        }
    }

    /// ConfigMaps or Secrets changed: bring the pod's volumes up to date (atomically, so
    /// running containers see the new content at once).
    async fn refresh_volumes(&mut self) {
        let current = {
            let objects = self.shared.objects.read().await;
            if self.applied_objects.as_ref() == Some(&*objects) {
                return;
            }
            objects.clone()
        };
        if self.applied_objects.is_some() {
            let changed = volumes::refresh(&self.shared.cfg.pods_dir, &self.pod, &current, &self.field_values());
            if !changed.is_empty() {
                tracing::info!(volumes = ?changed, "volumes updated from changed ConfigMaps/Secrets");
            }
        }
        self.applied_objects = Some(current);
    }

    fn field_values(&self) -> FieldValues {
        FieldValues {
            pod_ip: self.progress.pod_ips.first().cloned().unwrap_or_default(),
            host_ip: self.shared.cfg.node_ip.clone(),
            node_name: self.shared.cfg.node_name.clone(),
        }
    }

    /// The pod cgroup and its own limits (the sum of its containers'), as the kubelet's pod
    /// container manager sets them.
    async fn limit_pod_cgroup(&self) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let limits = PodCgroupLimits { resources: convert::pod_resources(&spec), max_pids: self.shared.cfg.pod_max_pids };
        let applied = match self.shared.pod_cgroup_parent(convert::qos_class(&spec), &self.uid()) {
            Ok(parent) => self.shared.host.ensure_pod_cgroup(&parent, limits).await.map_err(|e| e.message),
            Err(e) => Err(e),
        };
        if let Err(e) = applied {
            tracing::warn!("pod cgroup limits: {e}");
        }
    }

    /// The kubelet-managed /etc/hosts of the pod's containers.
    fn write_hosts(&self) -> Result<std::path::PathBuf, String> {
        let ip = self.progress.pod_ips.first().map(String::as_str);
        super::pod_files::write_hosts(&self.pod_dir(), &self.pod, ip, &self.shared.cfg.cluster_domain).map_err(|e| format!("writing the pod's hosts file: {e}"))
    }

    fn pod_dir(&self) -> std::path::PathBuf {
        volumes::pod_dir(&self.shared.cfg.pods_dir, &self.uid())
    }

    fn is_terminal(&self) -> bool {
        self.progress.phase == "Succeeded" || self.progress.phase == "Failed"
    }

    async fn sync(&mut self) -> Result<(), String> {
        if self.is_terminal() {
            return Ok(());
        }
        self.set_condition("PodScheduled", true);
        self.ensure_sandbox().await?;
        self.refresh_volumes().await;
        let observed = self.observe().await?;
        let spec = self.pod.spec.clone().unwrap_or_default();
        // Init containers: one at a time, each to success; sidecars (restartPolicy Always) keep running.
        if !self.progress.init_done {
            for c in spec.init_containers.iter().flatten() {
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                match observed.get(&c.name).map(|o| cri::ContainerState::try_from(o.status.state).unwrap_or(cri::ContainerState::ContainerUnknown)) {
                    Some(cri::ContainerState::ContainerExited) => {
                        let st = &observed[&c.name].status;
                        if st.exit_code == 0 && !sidecar {
                            continue;
                        }
                        if !sidecar && self.restart_policy() == "Never" {
                            self.progress.phase = "Failed".into();
                            self.progress.reason = None;
                            self.progress.message = Some(format!("init container {} failed with exit code {}", c.name, st.exit_code));
                            self.stop_sandbox().await;
                            return Ok(());
                        }
                        self.restart_with_backoff(c, st).await?;
                        return Ok(());
                    }
                    Some(cri::ContainerState::ContainerRunning) => {
                        if sidecar {
                            continue;
                        }
                        return Ok(());
                    }
                    Some(cri::ContainerState::ContainerCreated) => return Ok(()),
                    _ => {
                        self.start(c).await?;
                        if !sidecar {
                            return Ok(());
                        }
                    }
                }
            }
            self.progress.init_done = true;
        }
        self.set_condition("Initialized", true);
        // App containers.
        let policy = self.restart_policy();
        for c in &spec.containers {
            match observed.get(&c.name) {
                None => self.start(c).await?,
                Some(o) if o.status.state == cri::ContainerState::ContainerExited as i32 => {
                    let restart = match policy.as_str() {
                        "Always" => true,
                        "OnFailure" => o.status.exit_code != 0,
                        _ => false,
                    };
                    if restart {
                        self.restart_with_backoff(c, &o.status.clone()).await?;
                    }
                }
                Some(o) if o.status.state == cri::ContainerState::ContainerCreated as i32 => {
                    self.rt().start_container(cri::StartContainerRequest { container_id: o.status.id.clone() }).await.map_err(err)?;
                }
                Some(_) => {}
            }
        }
        // Sidecars restart by their own policy after init.
        for c in spec.init_containers.iter().flatten().filter(|c| c.restart_policy.as_deref() == Some("Always")) {
            if let Some(o) = observed.get(&c.name) {
                if o.status.state == cri::ContainerState::ContainerExited as i32 {
                    self.restart_with_backoff(c, &o.status.clone()).await?;
                }
            }
        }
        let observed = self.observe().await?;
        self.run_probes(&observed).await;
        self.progress.phase = status::phase(&self.pod, &self.progress, &observed);
        let all_running =
            spec.containers.iter().all(|c| observed.get(&c.name).map(|o| o.status.state == cri::ContainerState::ContainerRunning as i32).unwrap_or(false));
        if all_running && !self.progress.start_recorded {
            self.progress.start_recorded = true;
            let secs = (self.now() - self.progress.start_time_ns) as f64 / 1e9;
            if let Ok(mut m) = self.shared.metrics.lock() {
                m.observe_pod_start(secs);
            }
        }
        if self.is_terminal() {
            self.stop_sandbox().await;
        }
        Ok(())
    }

    async fn restart_with_backoff(&mut self, c: &Container, st: &cri::ContainerStatus) -> Result<(), String> {
        let now = self.now();
        let prog = self.progress.containers.entry(c.name.clone()).or_default();
        if prog.next_start_ns == 0 || prog.next_start_ns < st.finished_at {
            prog.next_start_ns = prog.backoff.next_restart(st.started_at, st.finished_at);
        }
        if now < prog.next_start_ns {
            // The wait this exit got (at the cap the delay no longer doubles: half of it is not the wait).
            let secs = (prog.next_start_ns - st.finished_at) / 1_000_000_000;
            let secs = if secs <= 0 { super::backoff::INITIAL_SECS } else { secs };
            prog.waiting = Some((
                "CrashLoopBackOff".into(),
                format!("back-off {secs}s restarting failed container={} pod={}", c.name, self.pod.metadata.name.clone().unwrap_or_default()),
            ));
            let md = &self.pod.metadata;
            let pod = format!("{}_{}({})", md.name.as_deref().unwrap_or(""), md.namespace.as_deref().unwrap_or("default"), md.uid.as_deref().unwrap_or(""));
            self.event("Warning", "BackOff", &format!("Back-off restarting failed container {} in pod {pod}", c.name), Some(&c.name));
            return Ok(());
        }
        prog.restart_count += 1;
        prog.next_start_ns = 0;
        // Keep only the newest exited attempt besides the new one, as the kubelet's GC does.
        let older = prog.previous_id.replace(st.id.clone());
        self.start(c).await?;
        if let Some(old) = older.filter(|o| *o != st.id) {
            let _ = self.rt().remove_container(cri::RemoveContainerRequest { container_id: old }).await;
        }
        Ok(())
    }

    /// Pull (by policy), create and start one container.
    async fn start(&mut self, c: &Container) -> Result<(), String> {
        let image = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let tag_latest = !image.contains('@') && image.rsplit('/').next().map(|last| !last.contains(':') || last.ends_with(":latest")).unwrap_or(true);
            if tag_latest {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let present = self
            .images()
            .image_status(cri::ImageStatusRequest { image: Some(cri::ImageSpec { image: image.clone(), ..Default::default() }), verbose: false })
            .await
            .map(|r| r.image.is_some())
            .unwrap_or(false);
        let name = c.name.clone();
        let attempt = self.progress.containers.get(&name).map(|p| p.restart_count).unwrap_or(0);
        let need_pull = match policy.as_str() {
            "Always" => true,
            "Never" => {
                if !present {
                    self.waiting(&name, "ErrImageNeverPull", &format!("Container image {image:?} is not present with pull policy of Never"));
                    return Ok(());
                }
                false
            }
            _ => !present,
        };
        if need_pull {
            // After a failed pull, the next waits 10 s, doubling to 300 s, as on a kubelet.
            let now = self.now();
            let prog = self.progress.containers.entry(name.clone()).or_default();
            if now < prog.next_pull_ns {
                let msg = format!("Back-off pulling image {image:?}: ErrImagePull: {}", prog.pull_error);
                prog.waiting = Some(("ImagePullBackOff".into(), msg));
                self.event("Normal", "BackOff", &format!("Back-off pulling image {image:?}"), Some(&name));
                self.event("Warning", "Failed", "Error: ImagePullBackOff", Some(&name));
                return Ok(());
            }
            self.event("Normal", "Pulling", &format!("Pulling image {image:?}"), Some(&name));
            let pull_start = std::time::Instant::now();
            let pulled = self.pull(&image).await;
            let took = pull_start.elapsed().as_secs_f64();
            let pulled_at = self.now();
            let prog = self.progress.containers.entry(name.clone()).or_default();
            match pulled {
                Err(e) => {
                    prog.pull_delay_secs =
                        if prog.pull_delay_secs == 0 { super::backoff::INITIAL_SECS } else { (prog.pull_delay_secs * 2).min(super::backoff::MAX_SECS) };
                    prog.next_pull_ns = pulled_at + prog.pull_delay_secs * 1_000_000_000;
                    prog.pull_error = e.message.clone();
                    self.event("Warning", "Failed", &format!("Failed to pull image {image:?}: {}", e.message), Some(&name));
                    self.waiting(&name, "ErrImagePull", &e.message);
                    return Ok(());
                }
                Ok(_) => {
                    prog.pull_delay_secs = 0;
                    prog.next_pull_ns = 0;
                    prog.pull_error.clear();
                    let size = self.image_size(&image).await;
                    self.event(
                        "Normal",
                        "Pulled",
                        &format!("Successfully pulled image {image:?} in {took:.3}s ({took:.3}s including waiting). Image size: {size} bytes."),
                        Some(&name),
                    );
                }
            }
        } else if present {
            self.event("Normal", "Pulled", &format!("Container image {image:?} already present on machine"), Some(&name));
        }
        let fields = self.field_values();
        let objects = self.shared.objects.read().await.clone();
        let volumes = match volumes::setup(&self.shared.cfg.pods_dir, &self.pod, &objects, &fields) {
            Ok(v) => v,
            Err(e) => {
                self.waiting(&name, "CreateContainerConfigError", &e);
                return Ok(());
            }
        };
        let subpath_root = self.pod_dir().join("volume-subpaths");
        let recursive_read_only_mounts = self.recursive_read_only_mounts().await;
        let inputs = convert::ContainerInputs {
            volumes: &volumes,
            objects: &objects,
            fields: &fields,
            seccomp_dir: &self.shared.cfg.seccomp_dir,
            subpath_root: &subpath_root,
            recursive_read_only_mounts,
        };
        let mut config = match convert::container_config(&self.pod, c, attempt, &inputs) {
            Ok(cfg) => cfg,
            Err(e) => {
                self.waiting(&name, "CreateContainerConfigError", &e);
                return Ok(());
            }
        };
        let image_info = self
            .images()
            .image_status(cri::ImageStatusRequest { image: Some(cri::ImageSpec { image: image.clone(), ..Default::default() }), verbose: false })
            .await
            .ok()
            .and_then(|r| r.image);
        if let Err(e) = convert::verify_non_root(&self.pod, c, image_info.as_ref()) {
            self.waiting(&name, "CreateContainerConfigError", &e);
            return Ok(());
        }
        convert::default_user_from_image(&mut config, image_info.as_ref());
        let hosts = match super::pod_files::hosts_path(&self.pod_dir()) {
            p if p.exists() => p,
            _ => self.write_hosts()?,
        };
        let termination = super::pod_files::prepare_termination_file(&self.pod_dir(), &name, attempt).map_err(|e| format!("termination message file: {e}"))?;
        config.mounts.extend(super::pod_files::extra_mounts(c, Some(&hosts), &termination));
        let sandbox_config = self.sandbox_config();
        let created = self
            .rt()
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: self.progress.sandbox_id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await;
        let id = match created {
            Ok(r) => r.container_id,
            Err(e) => {
                self.waiting(&name, "CreateContainerError", &e.message);
                return Ok(());
            }
        };
        self.event("Normal", "Created", &format!("Created container: {name}"), Some(&name));
        if let Err(e) = self.rt().start_container(cri::StartContainerRequest { container_id: id.clone() }).await {
            self.waiting(&name, "RunContainerError", &e.message);
            return Ok(());
        }
        self.event("Normal", "Started", &format!("Started container {name}"), Some(&name));
        if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) {
            let target = self.target(c, &id).await;
            if let Err(msg) = run_hook(hook, &target, self.grace_seconds()).await {
                self.event("Warning", "FailedPostStartHook", &format!("PostStartHook failed: {msg}"), Some(&name));
                let _ = self.rt().stop_container(cri::StopContainerRequest { container_id: id, timeout: self.grace_seconds() }).await;
            }
        }
        let prog = self.progress.containers.entry(name).or_default();
        prog.waiting = None;
        prog.attempt = attempt;
        prog.ever_started = true;
        Ok(())
    }

    /// The container cannot start now: it waits with `reason`, and a Failed event says why (as
    /// the kubelet words it: the reason for image errors, the message for the others).
    fn waiting(&mut self, name: &str, reason: &str, message: &str) {
        self.progress.containers.entry(name.to_string()).or_default().waiting = Some((reason.to_string(), message.to_string()));
        let said = if reason.starts_with("ErrImage") { format!("Error: {reason}") } else { format!("Error: {message}") };
        self.event("Warning", "Failed", &said, Some(name));
    }

    async fn image_size(&self, image: &str) -> u64 {
        let req = cri::ImageStatusRequest { image: Some(cri::ImageSpec { image: image.to_string(), ..Default::default() }), verbose: false };
        self.images().image_status(req).await.ok().and_then(|r| r.image).map(|i| i.size).unwrap_or(0)
    }

    fn cgroup_parent(&self) -> String {
        let spec = self.pod.spec.clone().unwrap_or_default();
        // The root was checked for the driver at start-up.
        self.shared.pod_cgroup_parent(convert::qos_class(&spec), &self.uid()).unwrap_or_default()
    }

    fn log_dir(&self) -> std::path::PathBuf {
        let md = &self.pod.metadata;
        self.shared.cfg.log_dir.join(format!("{}_{}_{}", md.namespace.clone().unwrap_or_default(), md.name.clone().unwrap_or_default(), self.uid()))
    }

    fn sandbox_config(&self) -> cri::PodSandboxConfig {
        convert::sandbox_config(
            &self.pod,
            self.progress.sandbox_attempt,
            &self.log_dir(),
            &self.cgroup_parent(),
            &convert::NodeDns {
                cluster_domain: &self.shared.cfg.cluster_domain,
                cluster_dns: &self.shared.cfg.cluster_dns,
                resolv_conf: &self.shared.cfg.resolv_conf,
            },
        )
    }

    /// A ready sandbox, created (again) when missing; a new sandbox re-runs init containers.
    async fn ensure_sandbox(&mut self) -> Result<(), String> {
        if !self.progress.sandbox_id.is_empty() {
            let st = self.rt().pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: self.progress.sandbox_id.clone(), verbose: false }).await;
            match st {
                Ok(r) if r.status.as_ref().map(|s| s.state == cri::PodSandboxState::SandboxReady as i32).unwrap_or(false) => {
                    self.set_condition("PodReadyToStartContainers", true);
                    return Ok(());
                }
                Ok(_) => {
                    let _ = self.rt().remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: self.progress.sandbox_id.clone() }).await;
                    self.progress.sandbox_attempt += 1;
                }
                Err(_) => self.progress.sandbox_attempt += 1,
            }
        }
        self.set_condition("PodReadyToStartContainers", false);
        // As the kubelet: a pod that needs the pod network waits for it.
        let host_network = self.pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        if !host_network {
            if let Some(why) = self.network_not_ready().await {
                let message = format!("network is not ready: container runtime network not ready: {why}");
                self.event("Warning", "NetworkNotReady", &message, None);
                return Err(message);
            }
        }
        std::fs::create_dir_all(self.log_dir()).map_err(err)?;
        if super::dns::resolver(&self.pod, !self.shared.cfg.cluster_dns.is_empty()).1 {
            self.event(
                "Warning",
                "MissingClusterDNS",
                "pod: \"{pod}\". kubelet does not have ClusterDNS IP configured and cannot create Pod using \"ClusterFirst\" policy. Falling back to \"Default\" policy."
                    .replace("{pod}", &super::manifest::full_name(&self.pod))
                    .as_str(),
                None,
            );
        }
        // As the kubelet's pod container manager: the pod cgroup and its limits come first.
        self.limit_pod_cgroup().await;
        let id = self
            .rt()
            .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(self.sandbox_config()), runtime_handler: String::new() })
            .await
            .map_err(|e| format!("RunPodSandbox: {}", e.message))?
            .pod_sandbox_id;
        self.progress.sandbox_id = id.clone();
        self.progress.init_done = false;
        let st = self.rt().pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: id, verbose: false }).await.map_err(err)?;
        let net = st.status.and_then(|s| s.network).unwrap_or_default();
        self.progress.pod_ips = std::iter::once(net.ip).chain(net.additional_ips.into_iter().map(|i| i.ip)).filter(|i| !i.is_empty()).collect();
        self.write_hosts()?;
        self.set_condition("PodReadyToStartContainers", true);
        self.shared.save_progress(&self.uid(), &self.progress).await;
        Ok(())
    }

    /// Why the runtime's pod network is not ready, in the kubelet's words; None when it is.
    async fn network_not_ready(&self) -> Option<String> {
        self.shared.network_not_ready().await
    }

    async fn stop_sandbox(&mut self) {
        if !self.progress.sandbox_id.is_empty() {
            let _ = self.rt().stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: self.progress.sandbox_id.clone() }).await;
        }
        self.set_condition("PodReadyToStartContainers", false);
    }

    /// A new pod is admitted unless the node's pressure refuses it (then it fails as evicted).
    async fn admit(&mut self) {
        if self.progress.admitted || !self.progress.sandbox_id.is_empty() || self.is_terminal() {
            self.progress.admitted = true;
            return;
        }
        let spec = self.pod.spec.clone().unwrap_or_default();
        let pressure = self.shared.pressure.read().await.clone();
        if let Err(message) = super::housekeeping::admit(&pressure, convert::qos_class(&spec), spec.priority.unwrap_or(0)) {
            self.event("Warning", "Evicted", &message, None);
            self.progress.phase = "Failed".into();
            self.progress.reason = Some("Evicted".into());
            self.progress.message = Some(message);
        }
        self.progress.admitted = true;
    }

    /// Node pressure: stop the pod within the eviction's grace period and fail it as evicted.
    async fn evict(&mut self, e: super::housekeeping::Eviction) {
        if self.is_terminal() {
            return;
        }
        self.event("Warning", "Evicted", &e.message, None);
        self.stop_containers(e.grace_seconds).await;
        self.stop_sandbox().await;
        // A terminated pod's volumes go (a memory-backed emptyDir gives its memory back).
        volumes::teardown(&self.shared.cfg.pods_dir, &self.uid());
        self.progress.phase = "Failed".into();
        self.progress.reason = Some("Evicted".into());
        self.progress.message = Some(e.message);
        self.set_condition("DisruptionTarget", true);
        self.publish().await;
    }

    /// Stop every running container, each with its preStop hook, within `grace` seconds.
    async fn stop_containers(&mut self, grace: i64) {
        if let Ok(observed) = self.observe().await {
            let spec = self.pod.spec.clone().unwrap_or_default();
            let all: Vec<Container> = spec.containers.iter().chain(spec.init_containers.iter().flatten()).cloned().collect();
            let mut stops = Vec::new();
            for o in observed.values().filter(|o| o.status.state == cri::ContainerState::ContainerRunning as i32) {
                let name = o.status.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
                let Some(c) = all.iter().find(|c| c.name == name).cloned() else { continue };
                let target = self.target(&c, &o.status.id).await;
                self.event("Normal", "Killing", &format!("Stopping container {name}"), Some(&name));
                stops.push(stop_with_pre_stop(target, c, grace));
            }
            futures_util::future::join_all(stops).await;
        }
    }

    /// The pod left its source: stop its containers with the grace period, then remove it all.
    async fn terminate(&mut self) {
        self.stop_containers(self.grace_seconds()).await;
        if !self.progress.sandbox_id.is_empty() {
            let id = self.progress.sandbox_id.clone();
            let _ = self.rt().stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.clone() }).await;
            if let Err(e) = self.rt().remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id }).await {
                tracing::warn!("removing the sandbox: {}", e.message);
            }
        }
        let spec = self.pod.spec.clone().unwrap_or_default();
        self.shared.remove_pod_cgroup(convert::qos_class(&spec), &self.uid()).await;
        volumes::teardown(&self.shared.cfg.pods_dir, &self.uid());
        let _ = std::fs::remove_dir_all(self.log_dir());
        if !super::manifest::is_static(&self.pod) {
            let meta = &self.pod.metadata;
            self.shared.depart(super::DepartedPod {
                uid: self.uid(),
                namespace: meta.namespace.clone().unwrap_or_default(),
                name: meta.name.clone().unwrap_or_default(),
                events: self.progress.events.clone(),
            });
        }
        self.shared.forget(&self.uid()).await;
        tracing::info!("pod removed");
    }

    fn grace_seconds(&self) -> i64 {
        self.pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30)
    }

    /// Record an event (repeats of the same one are counted, as the kubelet's recorder does).
    fn event(&mut self, kind: &str, reason: &str, message: &str, container: Option<&str>) {
        let now = self.now();
        let is_init = |c: &str| self.pod.spec.as_ref().and_then(|s| s.init_containers.as_ref()).is_some_and(|v| v.iter().any(|i| i.name == c));
        let field_path = container.map(|c| if is_init(c) { format!("spec.initContainers{{{c}}}") } else { format!("spec.containers{{{c}}}") });
        match kind {
            "Warning" => tracing::warn!(reason, container, "{message}"),
            _ => tracing::info!(reason, container, "{message}"),
        }
        let events = &mut self.progress.events;
        if let Some(e) = events.iter_mut().find(|e| e.reason == reason && e.message == message && e.field_path == field_path) {
            e.count += 1;
            e.last_ns = now;
            return;
        }
        events.push(PodEvent { kind: kind.into(), reason: reason.into(), message: message.into(), field_path, count: 1, first_ns: now, last_ns: now });
        if events.len() > MAX_EVENTS {
            events.remove(0);
        }
    }

    /// The pod's network namespace, as the runtime pinned it.
    async fn pod_netns(&mut self) -> Option<std::path::PathBuf> {
        if let Some((id, ns)) = &self.netns {
            if *id == self.progress.sandbox_id {
                return ns.clone();
            }
        }
        let ns = self.shared.host.pod_netns(&self.progress.sandbox_id).await.ok()?;
        self.netns = Some((self.progress.sandbox_id.clone(), ns.clone()));
        ns
    }

    /// Whether the runtime's default handler makes mounts recursively read-only, as its CRI
    /// Status says (asked once).
    async fn recursive_read_only_mounts(&mut self) -> bool {
        if let Some(known) = self.rro_mounts {
            return known;
        }
        let Ok(st) = self.rt().status(cri::StatusRequest { verbose: false }).await else { return false };
        let known = st.runtime_handlers.iter().find(|h| h.name.is_empty()).and_then(|h| h.features).is_some_and(|f| f.recursive_read_only_mounts);
        self.rro_mounts = Some(known);
        known
    }

    async fn target(&mut self, c: &Container, container_id: &str) -> Target {
        Target {
            runtime: self.rt().clone(),
            container_id: container_id.to_string(),
            container: c.clone(),
            pod_ip: self.progress.pod_ips.first().cloned().unwrap_or_default(),
            netns: self.pod_netns().await,
        }
    }

    /// One round of probes for the running app containers; acts on what they decide.
    async fn run_probes(&mut self, observed: &BTreeMap<String, Observed>) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let now = self.now();
        let mut jobs = Vec::new();
        let mut running = Vec::new();
        for c in &spec.containers {
            let Some(o) = observed.get(&c.name).filter(|o| o.status.state == cri::ContainerState::ContainerRunning as i32) else {
                self.probes.retain(|(n, _), _| *n != c.name);
                continue;
            };
            let id = o.status.id.clone();
            running.push((c.clone(), id.clone()));
            for kind in [probe::Kind::Startup, probe::Kind::Liveness, probe::Kind::Readiness] {
                let entry = self.probes.entry((c.name.clone(), kind)).or_insert_with(|| (id.clone(), probe::Track::default()));
                if entry.0 != id {
                    *entry = (id.clone(), probe::Track::default());
                }
            }
            let started =
                c.startup_probe.is_none() || self.probes.get(&(c.name.clone(), probe::Kind::Startup)).map(|(_, t)| t.result == Some(true)).unwrap_or(false);
            let kinds: &[probe::Kind] = if started { &[probe::Kind::Liveness, probe::Kind::Readiness] } else { &[probe::Kind::Startup] };
            for &kind in kinds {
                let Some(p) = probe::probe_of(c, kind) else { continue };
                let t = probe::timing(p);
                let due = self.probes.get(&(c.name.clone(), kind)).map(|(_, tr)| tr.due(&t, o.status.started_at, now)).unwrap_or(false);
                if due {
                    let target = self.target(c, &id).await;
                    let p = p.clone();
                    let name = c.name.clone();
                    jobs.push(async move { (name, kind, probe::run(&p, &target).await) });
                }
            }
        }
        let results = futures_util::future::join_all(jobs).await;
        let mut kills = Vec::new();
        for (name, kind, outcome) in results {
            let Some(c) = spec.containers.iter().find(|c| c.name == name) else { continue };
            let Some(p) = probe::probe_of(c, kind) else { continue };
            let t = probe::timing(p);
            let Some((_, track)) = self.probes.get_mut(&(name.clone(), kind)) else { continue };
            track.record(&t, now, &outcome);
            if let Ok(mut m) = self.shared.metrics.lock() {
                let md = &self.pod.metadata;
                m.count_probe(kind.name(), md.namespace.as_deref().unwrap_or("default"), md.name.as_deref().unwrap_or(""), &name, outcome.is_ok());
            }
            let failed_for_good = track.result == Some(false);
            if let Err(msg) = &outcome {
                self.event("Warning", "Unhealthy", &format!("{} probe failed: {msg}", kind.name()), Some(&name));
            }
            if failed_for_good && kind != probe::Kind::Readiness {
                let what = if kind == probe::Kind::Startup { "startup" } else { "liveness" };
                self.event("Normal", "Killing", &format!("Container {name} failed {what} probe, will be restarted"), Some(&name));
                let grace = p.termination_grace_period_seconds.unwrap_or_else(|| self.grace_seconds());
                kills.push((name.clone(), grace));
            }
        }
        for (name, grace) in kills {
            let Some((c, id)) = running.iter().find(|(c, _)| c.name == name).cloned() else { continue };
            let target = self.target(&c, &id).await;
            stop_with_pre_stop(target, c, grace).await;
            self.probes.retain(|(n, _), _| *n != name);
        }
        let mut view = BTreeMap::new();
        for (c, _) in &running {
            let result = |k| self.probes.get(&(c.name.clone(), k)).and_then(|(_, t)| t.result);
            let started = c.startup_probe.is_none() || result(probe::Kind::Startup) == Some(true);
            let ready = started && (c.readiness_probe.is_none() || result(probe::Kind::Readiness) == Some(true));
            view.insert(c.name.clone(), (started, ready));
        }
        self.progress.probe_view = view;
    }
}

/// A lifecycle hook's handler: exec, httpGet, tcpSocket or sleep, bounded by `deadline` seconds.
async fn run_hook(h: &k8s_openapi::api::core::v1::LifecycleHandler, t: &Target, deadline: i64) -> Result<(), String> {
    let limit = std::time::Duration::from_secs(deadline.max(1) as u64);
    let run = async {
        if let Some(a) = &h.exec {
            handler::exec(a, t, limit).await
        } else if let Some(a) = &h.http_get {
            handler::http(a, t, limit).await
        } else if let Some(a) = &h.tcp_socket {
            handler::tcp(a, t, limit).await
        } else if let Some(a) = &h.sleep {
            handler::sleep(a.seconds).await
        } else {
            Err("the hook has no handler".into())
        }
    };
    tokio::time::timeout(limit, run).await.unwrap_or_else(|_| Err(format!("did not finish within {deadline} s")))
}

/// Stop a container the way the kubelet kills one: its preStop hook first, then the stop
/// signal with what is left of the grace period, then SIGKILL.
async fn stop_with_pre_stop(t: Target, c: Container, grace: i64) {
    let start = std::time::Instant::now();
    if let Some(hook) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) {
        if let Err(msg) = run_hook(hook, &t, grace).await {
            tracing::warn!(container = %c.name, "PreStopHook failed: {msg}");
        }
    }
    let left = (grace - start.elapsed().as_secs() as i64).max(0);
    let _ = t.runtime.stop_container(cri::StopContainerRequest { container_id: t.container_id.clone(), timeout: left }).await;
}

#[cfg(test)]
#[path = "worker_tests.rs"]
mod tests;
