//! Containers: an overlayfs rootfs over the image's snapshots, an OCI spec, and a monitor
//! process that runs it. State is read from the monitor's files, so it survives restarts.
use super::cgroups::Cgroup;
use super::process::exec::{EXIT_SETUP_FAILED, EXIT_TIMEOUT};
use super::records::{self, ContainerRecord, Phase, SandboxRecord};
use super::spec::{self, PodView, SpecInput};
use super::state::{self, CgroupSpec, ExitRecord, MonitorConfig, MonitorReport, PidNamespace, RunState};
use super::{internal, unmount, Made, RtResult, Runtime, RuntimeError};
use crate::cri::v1 as cri;
use crate::util::atomic;
use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// How an exec'd process gets its stdio.
pub enum ExecStdio {
    /// Pipes for stdout and stderr, and for stdin when asked.
    Piped { stdin: bool },
    /// The slave end of a terminal for all three.
    Terminal(std::os::fd::OwnedFd),
}

/// Longest output ExecSync keeps per stream.
const EXEC_OUTPUT_LIMIT: usize = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited,
}

/// A container as observed now: its record plus what the monitor's files say.
#[derive(Debug, Clone)]
pub struct Observed {
    pub rec: ContainerRecord,
    pub state: ContainerState,
    pub run: Option<RunState>,
    pub exit: Option<ExitRecord>,
}

impl Observed {
    pub fn pid(&self) -> i32 {
        match (self.state, &self.run) {
            (ContainerState::Running, Some(r)) => r.pid,
            _ => 0,
        }
    }
}

/// A signal by number or name: "15", "TERM", "SIGTERM", real-time ones as "SIGRTMIN+3" (image
/// configs) or "SIGRTMINPLUS3" (CRI names), and the aliases SIGIOT, SIGCLD, SIGPOLL.
fn signal_number(name: &str) -> Option<i32> {
    let n = name.trim().to_ascii_uppercase();
    if let Ok(num) = n.parse::<i32>() {
        return Some(num);
    }
    let n = if n.starts_with("SIG") { n } else { format!("SIG{n}") };
    let offset = |rest: &str, sign: char, word: &str| -> Option<i32> {
        if rest.is_empty() {
            return Some(0);
        }
        rest.strip_prefix(sign).or_else(|| rest.strip_prefix(word))?.parse().ok()
    };
    let (min, max) = (libc::SIGRTMIN(), libc::SIGRTMAX());
    let rt = if let Some(rest) = n.strip_prefix("SIGRTMIN") {
        Some(offset(rest, '+', "PLUS").map(|k| min + k))
    } else {
        n.strip_prefix("SIGRTMAX").map(|rest| offset(rest, '-', "MINUS").map(|k| max - k))
    };
    if let Some(rt) = rt {
        return rt.filter(|s| (min..=max).contains(s));
    }
    let n = match n.as_str() {
        "SIGIOT" => "SIGABRT",
        "SIGCLD" => "SIGCHLD",
        "SIGPOLL" => "SIGIO",
        other => other,
    };
    n.parse::<Signal>().ok().map(|s| s as i32)
}

/// The signal a CRI stop signal names; None for SIGNAL_RUNTIME_DEFAULT (and unknown values).
pub fn cri_signal_number(signal: i32) -> Option<i32> {
    let name = cri::Signal::try_from(signal).ok()?.as_str_name().strip_prefix("SIGNAL_")?;
    (name != "RUNTIME_DEFAULT").then(|| signal_number(name)).flatten()
}

/// The CRI name of a signal number, as ContainerStatus reports the stop signal.
pub fn cri_signal(number: i32) -> cri::Signal {
    (1..).map_while(|i| cri::Signal::try_from(i).ok()).find(|s| cri_signal_number(*s as i32) == Some(number)).unwrap_or(cri::Signal::RuntimeDefault)
}

impl Runtime {
    /// A container whose creation finished; one still being made is not found.
    pub fn container(&self, id_or_prefix: &str) -> RtResult<ContainerRecord> {
        let idx = self.index();
        let ready = idx.containers.iter().filter(|(_, c)| c.phase == Phase::Ready).map(|(k, _)| k);
        let id = Self::find_id(ready, id_or_prefix, "container")?;
        Ok(idx.containers[&id].clone())
    }

    /// The created, never started container holding `name` when it was made from exactly
    /// this config.
    fn same_container(&self, name: &str, config: &cri::ContainerConfig) -> Option<String> {
        let rec = {
            let idx = self.index();
            idx.names.get(name).and_then(|id| idx.containers.get(id)).filter(|c| c.phase == Phase::Ready).cloned()?
        };
        let same = records::decode::<cri::ContainerConfig>(&rec.config) == *config && self.observe(&rec).state == ContainerState::Created;
        same.then_some(rec.id)
    }

    /// The containers whose creation finished.
    pub fn containers(&self) -> Vec<ContainerRecord> {
        self.index().containers.values().filter(|c| c.phase == Phase::Ready).cloned().collect()
    }

    fn save_container(&self, rec: &ContainerRecord) -> RtResult<()> {
        records::save(&self.container_data_dir(&rec.id), &self.container_run_dir(&rec.id), rec.phase, rec)
            .map_err(|e| internal("writing the container record", e))?;
        self.index().containers.insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    pub fn container_rootfs(&self, id: &str) -> PathBuf {
        self.container_run_dir(id).join("rootfs")
    }

    pub fn container_spec(&self, id: &str) -> Option<Spec> {
        Spec::load(self.container_spec_path(id)).ok()
    }

    /// The container's runtime spec: in its bundle, the run directory (as containerd keeps
    /// bundles under /run: a container is never started again after a reboot); containers
    /// made by earlier versions have it in their data directory.
    fn container_spec_path(&self, id: &str) -> PathBuf {
        let in_run = self.container_run_dir(id).join(state::SPEC_FILE);
        if in_run.exists() {
            return in_run;
        }
        let in_data = self.container_data_dir(id).join(state::SPEC_FILE);
        if in_data.exists() {
            in_data
        } else {
            in_run
        }
    }

    pub fn container_state_dir(&self, id: &str) -> PathBuf {
        self.container_run_dir(id)
    }

    /// What the container is doing now, from the monitor's files.
    pub fn observe(&self, rec: &ContainerRecord) -> Observed {
        let dir = self.container_run_dir(&rec.id);
        let exit: Option<ExitRecord> = state::read_json(&dir.join(state::EXIT_FILE)).ok();
        let run: Option<RunState> = state::read_json(&dir.join(state::STATE_FILE)).ok();
        let state = if exit.is_some() || rec.start_error.is_some() {
            ContainerState::Exited
        } else if let Some(r) = &run {
            if state::process_alive(r.pid, r.pid_start_time) || state::process_alive(r.monitor_pid, r.monitor_start_time) {
                ContainerState::Running
            } else {
                ContainerState::Exited
            }
        } else {
            ContainerState::Created
        };
        let exit = match (state, exit, &run) {
            (ContainerState::Exited, None, Some(_)) => {
                // Both gone: the monitor may have written its record and exited between the
                // first read and the liveness checks, so read it again; only without one
                // (e.g. the node rebooted) is the exit unknown.
                match state::read_json::<ExitRecord>(&dir.join(state::EXIT_FILE)) {
                    Ok(recorded) => Some(recorded),
                    Err(_) => {
                        let e = ExitRecord { exit_code: 255, signal: None, oom_killed: false, finished_at: state::now_ns() };
                        let _ = atomic::write_json_volatile(&dir.join(state::EXIT_FILE), &e);
                        Some(e)
                    }
                }
            }
            (_, e, _) => e,
        };
        Observed { rec: rec.clone(), state, run, exit }
    }

    /// PID namespace mode TARGET (what `kubectl debug --target` sends): the PID namespace of
    /// the target container, which must be a running container of the same pod.
    fn target_pid_ns(&self, sb: &SandboxRecord, config: &cri::ContainerConfig) -> RtResult<Option<PathBuf>> {
        let field = "linux.security_context.namespace_options.target_id";
        let ns = config.linux.as_ref().and_then(|l| l.security_context.as_ref()).and_then(|s| s.namespace_options.as_ref());
        let Some(ns) = ns.filter(|n| n.pid == cri::NamespaceMode::Target as i32) else { return Ok(None) };
        if ns.target_id.is_empty() {
            return Err(RuntimeError::Invalid(format!("{field} is required with PID namespace mode TARGET")));
        }
        let target = self.container(&ns.target_id).map_err(|_| RuntimeError::NotFound(format!("target container {:?} not found", ns.target_id)))?;
        if target.sandbox_id != sb.id {
            return Err(RuntimeError::Invalid(format!("{field}: container {} is not in pod sandbox {}", target.id, sb.id)));
        }
        let seen = self.observe(&target);
        match (&seen.state, seen.run.as_ref()) {
            (ContainerState::Running, Some(run)) if run.pid > 0 => Ok(Some(PathBuf::from(format!("/proc/{}/ns/pid", run.pid)))),
            _ => Err(RuntimeError::FailedPrecondition(format!("target container {} is not running", target.id))),
        }
    }

    fn pod_view(&self, sb: &SandboxRecord) -> PodView {
        let paths = self.sandbox_paths(&sb.id);
        let config: cri::PodSandboxConfig = records::decode(&sb.config);
        PodView {
            hostname: if sb.host_network {
                nix::unistd::gethostname().map(|h| h.to_string_lossy().to_string()).unwrap_or_default()
            } else {
                config.hostname.clone()
            },
            net_ns: sb.net_ns.clone(),
            ipc_ns: sb.ipc_ns.clone(),
            uts_ns: sb.uts_ns.clone(),
            pid_ns: sb.pid_ns.clone(),
            host_pid: sb.host_pid,
            shm: if sb.host_ipc { PathBuf::from("/dev/shm") } else { paths.shm() },
            hosts: paths.hosts(),
            resolv_conf: paths.resolv_conf(),
            hostname_file: paths.hostname(),
        }
    }

    fn container_cgroup(&self, sb: &SandboxRecord, id: &str) -> CgroupSpec {
        super::cgroup_paths::member(&sb.cgroup, id)
    }

    /// CreateContainer.
    pub async fn create_container(&self, sandbox_id: &str, config: cri::ContainerConfig, _sandbox_config: Option<cri::PodSandboxConfig>) -> RtResult<Made> {
        let sb = self.sandbox(sandbox_id)?;
        if sb.stopped {
            return Err(RuntimeError::FailedPrecondition(format!("sandbox {} is not ready", sb.id)));
        }
        let md = config.metadata.clone().ok_or_else(|| RuntimeError::Invalid("metadata is required".into()))?;
        if md.name.is_empty() {
            return Err(RuntimeError::Invalid("metadata.name is required".into()));
        }
        let image_name = config.image.as_ref().map(|i| i.image.clone()).unwrap_or_default();
        let image = self
            .images
            .resolve(&image_name)
            .map_err(|e| RuntimeError::Invalid(format!("image: {e}")))?
            .ok_or_else(|| RuntimeError::NotFound(format!("image {image_name:?} not found: pull it first")))?;
        let image_config = self.images.config(&image).map_err(|e| internal("reading the image config", e))?;
        let id = records::new_id();
        let name = format!("{}_{}_{}_{}", sb.id, md.name, md.attempt, "c");
        if let Some(existing) = self.same_container(&name, &config) {
            // A retry of a create whose answer the caller never got: the same container.
            tracing::info!(container = %existing, "CreateContainer repeated with an identical config: answering with the container made before");
            return Ok(Made { id: existing, fresh: false });
        }
        self.reserve_name(&name, &id)?;
        let _guard = self.locks.lock(&id).await;
        let sandbox_config: cri::PodSandboxConfig = records::decode(&sb.config);
        let log_path = (!config.log_path.is_empty()).then(|| {
            let p = PathBuf::from(&config.log_path);
            if p.is_absolute() || sandbox_config.log_directory.is_empty() {
                p
            } else {
                PathBuf::from(&sandbox_config.log_directory).join(p)
            }
        });
        // The pod's stop signal (lifecycle.stopSignal), else the image's, else SIGTERM.
        let stop_signal = cri_signal_number(config.stop_signal)
            .or_else(|| image_config.config().as_ref().and_then(|c| c.stop_signal().clone()).and_then(|s| signal_number(&s)))
            .unwrap_or(libc::SIGTERM);
        let mut rec = ContainerRecord {
            id: id.clone(),
            sandbox_id: sb.id.clone(),
            name: name.clone(),
            phase: Phase::Creating,
            config: records::encode(&config),
            created_at: state::now_ns(),
            image_id: image.id.to_string(),
            image_name: image_name.clone(),
            image_ref: image.repo_digests.first().cloned().unwrap_or_else(|| image.id.to_string()),
            log_path,
            cgroup: self.container_cgroup(&sb, &id),
            stop_signal,
            rootfs_mounted: false,
            start_error: None,
            volume_images: vec![],
        };
        let created = async {
            let data = self.container_data_dir(&id);
            let run = self.container_run_dir(&id);
            for d in [data.join("upper"), data.join("work"), run.join("rootfs")] {
                std::fs::create_dir_all(&d).map_err(|e| internal(&format!("creating {}", d.display()), e))?;
            }
            self.save_container(&rec)?;
            let lowers = self.images.layer_dirs(&image);
            self.mount_rootfs(&id, &lowers)?;
            rec.rootfs_mounted = true;
            let pod = self.pod_view(&sb);
            let target_pid_ns = self.target_pid_ns(&sb, &config)?;
            let image_volumes = self.prepare_image_volumes(&run, &config)?;
            if !image_volumes.image_ids.is_empty() {
                rec.volume_images = image_volumes.image_ids.clone();
                self.save_container(&rec)?;
            }
            let handler = self.cfg.handlers.get(&sb.runtime_handler).cloned().unwrap_or_else(|| {
                tracing::warn!(sandbox = %sb.id, handler = %sb.runtime_handler, "the pod's runtime handler is no longer configured: using the default's options");
                Default::default()
            });
            let rootfs = self.container_rootfs(&id);
            let spec = spec::build(&SpecInput {
                config: &config,
                pod: &pod,
                image: &image_config,
                rootfs: &rootfs,
                cgroup_path: &rec.cgroup.path,
                rlimits: &self.cfg.rlimits,
                target_pid_ns: target_pid_ns.as_deref(),
                handler: &handler,
                image_volumes: &image_volumes.sources,
            })?;
            if let Some(p) = spec.process() {
                let cwd = super::process::mounts::secure_join(&rootfs, p.cwd()).map_err(|e| internal("working dir", e))?;
                std::fs::create_dir_all(&cwd).map_err(|e| internal("creating the working dir", e))?;
            }
            spec.save(run.join(state::SPEC_FILE)).map_err(|e| internal("writing the runtime spec", e))?;
            let cgroup_prepared = prepare_cgroup(&rec.cgroup, &spec)?;
            let pid_ns = match spec
                .linux()
                .as_ref()
                .and_then(|l| l.namespaces().as_ref())
                .and_then(|ns| ns.iter().find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Pid))
            {
                Some(n) => match n.path() {
                    Some(p) => PidNamespace::Join(p.clone()),
                    None => PidNamespace::Own,
                },
                None => PidNamespace::Host,
            };
            let monitor = MonitorConfig {
                container_id: id.clone(),
                bundle: run.clone(),
                state_dir: run.clone(),
                log_path: rec.log_path.clone(),
                tty: config.tty,
                stdin: config.stdin,
                stdin_once: config.stdin_once,
                pid_ns,
                cgroup: rec.cgroup.clone(),
                log_rotation: self.config().log_rotation,
                cgroup_prepared,
                cgroup_mounts: super::cgroups::v1_mounts(),
            };
            atomic::write_json_volatile(&run.join(state::MONITOR_CONFIG), &monitor).map_err(|e| internal("writing monitor.json", e))?;
            rec.phase = Phase::Ready;
            self.save_container(&rec)
        }
        .await;
        if let Err(e) = created {
            self.teardown_container(&rec);
            self.index().containers.remove(&id);
            self.release_name(&name, &id);
            return Err(e);
        }
        Ok(Made { id, fresh: true })
    }

    /// The container's rootfs: an overlay of the image's layers under its own writable layer.
    fn mount_rootfs(&self, id: &str, lowers: &[PathBuf]) -> RtResult<()> {
        let data = self.container_data_dir(id);
        let (upper, work) = (data.join("upper"), data.join("work"));
        super::overlay::mount_layers(&self.container_rootfs(id), lowers, Some((&upper, &work))).map_err(|e| match e {
            e @ (super::overlay::OverlayError::NoLayers | super::overlay::OverlayError::TooManyLayers(_)) => RuntimeError::FailedPrecondition(e.to_string()),
            e => internal("mounting the container's rootfs", e),
        })
    }

    /// StartContainer: run the monitor and wait until the container's process has exec'd.
    pub async fn start_container(&self, id: &str) -> RtResult<()> {
        let rec = self.container(id)?;
        let _guard = self.locks.lock(&rec.id).await;
        let mut rec = self.container(&rec.id)?;
        let obs = self.observe(&rec);
        if obs.state != ContainerState::Created {
            return Err(RuntimeError::FailedPrecondition(format!("container {} is not in the created state", rec.id)));
        }
        let sb = self.sandbox(&rec.sandbox_id)?;
        if sb.stopped {
            return Err(RuntimeError::FailedPrecondition(format!("sandbox {} is not ready", sb.id)));
        }
        if let Some(log) = &rec.log_path {
            if let Some(dir) = log.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
        }
        let dir = self.container_run_dir(&rec.id);
        let monitor_log = std::fs::File::create(dir.join("monitor.log")).map_err(|e| internal("monitor log", e))?;
        let mut child = crate::util::self_exe::command()
            .arg(super::process::MONITOR_ARG)
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(monitor_log))
            .spawn()
            .map_err(|e| internal("starting the monitor", e))?;
        let stdout = child.stdout.take().ok_or_else(|| internal("monitor", "no stdout"))?;
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line).await;
        let _ = child.wait().await;
        let report: MonitorReport = match read {
            Ok(_) => serde_json::from_str(&line).unwrap_or_else(|e| MonitorReport::failed(format!("the monitor gave no report ({e})"))),
            Err(e) => MonitorReport::failed(format!("reading the monitor's report: {e}")),
        };
        for w in &report.warnings {
            tracing::warn!(container = %rec.id, "{w}");
        }
        match (report.state, report.error) {
            (Some(_), _) => Ok(()),
            (None, e) => {
                let msg = e.unwrap_or_else(|| "the container did not start".into());
                rec.start_error = Some(msg.clone());
                let exit = ExitRecord { exit_code: 128, signal: None, oom_killed: false, finished_at: state::now_ns() };
                let _ = atomic::write_json_volatile(&dir.join(state::EXIT_FILE), &exit);
                self.save_container(&rec)?;
                Err(internal("starting the container", msg))
            }
        }
    }

    /// StopContainer: the image's stop signal, `timeout` seconds, then SIGKILL. Idempotent, as
    /// the CRI asks: a container that is already stopped, or unknown, is no error.
    pub async fn stop_container(&self, id: &str, timeout: i64) -> RtResult<()> {
        let rec = match self.container(id) {
            Ok(r) => r,
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let _guard = self.locks.lock(&rec.id).await;
        let obs = self.observe(&rec);
        let Some(run) = obs.run.clone().filter(|_| obs.state == ContainerState::Running) else { return Ok(()) };
        if timeout > 0 && state::process_alive(run.pid, run.pid_start_time) {
            // libc's kill: nix's Signal has no real-time signals (SIGRTMIN+3 stops systemd).
            // SAFETY: kill(2) on a pid checked alive just now; no memory is involved.
            let _ = unsafe { libc::kill(run.pid, rec.stop_signal) };
            if self.wait_exit(&rec, Duration::from_secs(timeout as u64)).await {
                return Ok(());
            }
        }
        self.kill_all(&rec, &run);
        if self.wait_exit(&rec, Duration::from_secs(10)).await {
            Ok(())
        } else {
            Err(internal("stopping the container", "it did not exit after SIGKILL within 10 s"))
        }
    }

    fn kill_all(&self, rec: &ContainerRecord, run: &RunState) {
        if state::process_alive(run.pid, run.pid_start_time) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.pid), Signal::SIGKILL);
        }
        if let Ok(cg) = Cgroup::open(&rec.cgroup) {
            for p in cg.pids() {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), Signal::SIGKILL);
            }
        }
    }

    /// Wait until the monitor has recorded the exit (or is gone).
    async fn wait_exit(&self, rec: &ContainerRecord, limit: Duration) -> bool {
        let start = Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            if self.observe(rec).state == ContainerState::Exited {
                return true;
            }
            if start.elapsed() >= limit {
                return false;
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// RemoveContainer: kill it if it still runs and remove everything it had.
    pub async fn remove_container(&self, id: &str) -> RtResult<()> {
        let rec = match self.container(id) {
            Ok(r) => r,
            Err(RuntimeError::NotFound(_)) => return Ok(()),
            Err(e) => return Err(e),
        };
        let obs = self.observe(&rec);
        if obs.state == ContainerState::Running {
            self.stop_container(&rec.id, 0).await?;
        }
        let _guard = self.locks.lock(&rec.id).await;
        // Removing the cgroup waits for its processes: off the async threads.
        tokio::task::block_in_place(|| self.teardown_container(&rec));
        self.index().containers.remove(&rec.id);
        self.release_name(&rec.name, &rec.id);
        Ok(())
    }

    pub(super) fn teardown_container(&self, rec: &ContainerRecord) {
        self.forget_cpu_sample(&rec.cgroup);
        if let Ok(run) = state::read_json::<RunState>(&self.container_run_dir(&rec.id).join(state::STATE_FILE)) {
            self.kill_all(rec, &run);
        }
        if let Ok(cg) = Cgroup::open(&rec.cgroup) {
            if let Err(e) = cg.remove() {
                tracing::warn!(container = %rec.id, "removing the cgroup: {e}");
            }
        }
        self.teardown_container_dirs(&rec.id);
    }

    pub(super) fn teardown_container_dirs(&self, id: &str) {
        unmount(&self.container_rootfs(id));
        super::image_volumes::teardown(&self.container_run_dir(id));
        super::sandbox::remove_dir_logged(&self.container_run_dir(id));
        super::sandbox::remove_dir_logged(&self.container_data_dir(id));
    }

    /// ExecSync: (exit code, stdout, stderr).
    pub async fn exec_sync(&self, id: &str, cmd: Vec<String>, timeout: i64) -> RtResult<(i32, Vec<u8>, Vec<u8>)> {
        if cmd.is_empty() {
            return Err(RuntimeError::Invalid("cmd must not be empty".into()));
        }
        let rec = self.container(id)?;
        let mut child = self.spawn_exec(&rec, cmd, ExecStdio::Piped { stdin: false }, timeout)?;
        let mut out = child.stdout.take().ok_or_else(|| internal("exec", "no stdout"))?;
        let mut err = child.stderr.take().ok_or_else(|| internal("exec", "no stderr"))?;
        let read_out = async {
            let mut b = Vec::new();
            let _ = (&mut out).take(EXEC_OUTPUT_LIMIT as u64).read_to_end(&mut b).await;
            b
        };
        let read_err = async {
            let mut b = Vec::new();
            let _ = (&mut err).take(EXEC_OUTPUT_LIMIT as u64).read_to_end(&mut b).await;
            b
        };
        // Output is read until the helper exits plus a short drain: processes left running
        // in the background must not keep the call open.
        let wait = async {
            let status = child.wait().await;
            status.ok().and_then(|s| s.code()).unwrap_or(255)
        };
        let (stdout, mut stderr, code) = tokio::join!(
            async { tokio::time::timeout(Duration::from_secs(timeout.max(0) as u64 + 3600), read_out).await.unwrap_or_default() },
            async { tokio::time::timeout(Duration::from_secs(timeout.max(0) as u64 + 3600), read_err).await.unwrap_or_default() },
            wait
        );
        if code == EXIT_SETUP_FAILED && stderr.starts_with(b"berth exec:") {
            let msg = String::from_utf8_lossy(&stderr).trim().to_string();
            if msg.contains("not running") {
                return Err(RuntimeError::FailedPrecondition(msg));
            }
        }
        if code == EXIT_TIMEOUT && timeout > 0 {
            stderr.extend_from_slice(format!("command timed out after {timeout} s\n").as_bytes());
        }
        Ok((code, stdout, stderr))
    }

    /// Start `berth __exec` for a command in the container, with pipes or a terminal.
    pub fn spawn_exec(&self, rec: &ContainerRecord, cmd: Vec<String>, stdio: ExecStdio, timeout: i64) -> RtResult<tokio::process::Child> {
        if cmd.is_empty() {
            return Err(RuntimeError::Invalid("cmd must not be empty".into()));
        }
        let tty = matches!(stdio, ExecStdio::Terminal(_));
        let obs = self.observe(rec);
        if obs.state != ContainerState::Running {
            return Err(RuntimeError::FailedPrecondition(format!("container {} is not running", rec.id)));
        }
        let spec = self.container_spec(&rec.id).ok_or_else(|| internal("exec", "the container's spec is missing"))?;
        let mut process = spec.process().clone().ok_or_else(|| internal("exec", "the spec has no process"))?;
        process.set_args(Some(cmd));
        process.set_terminal(Some(tty));
        process.set_oom_score_adj(None);
        process.set_rlimits(None);
        let dir = self.container_run_dir(&rec.id);
        let file = dir.join(format!("exec-{}.json", &records::new_id()[..16]));
        atomic::write_json_volatile(&file, &process).map_err(|e| internal("exec", e))?;
        let mut command = crate::util::self_exe::command();
        command.arg(super::process::EXEC_ARG).arg(&dir).arg(&file).arg(timeout.max(0).to_string()).kill_on_drop(true);
        match stdio {
            ExecStdio::Piped { stdin } => {
                command.stdin(if stdin { Stdio::piped() } else { Stdio::null() }).stdout(Stdio::piped()).stderr(Stdio::piped());
            }
            ExecStdio::Terminal(slave) => {
                let dup = |f: &std::os::fd::OwnedFd| f.try_clone().map_err(|e| internal("exec terminal", e));
                command.stdin(Stdio::from(dup(&slave)?)).stdout(Stdio::from(dup(&slave)?)).stderr(Stdio::from(slave));
            }
        }
        command.spawn().map_err(|e| {
            let _ = std::fs::remove_file(&file);
            internal("starting exec", e)
        })
    }

    /// The state directory of a running container whose monitor serves attach clients.
    pub fn attach_dir(&self, id: &str) -> RtResult<PathBuf> {
        let rec = self.container(id)?;
        let obs = self.observe(&rec);
        if obs.state != ContainerState::Running {
            return Err(RuntimeError::FailedPrecondition(format!("container {} is not running", rec.id)));
        }
        Ok(self.container_run_dir(&rec.id))
    }

    /// UpdateContainerResources: apply to the cgroup and keep the spec in step.
    pub async fn update_resources(&self, id: &str, resources: cri::LinuxContainerResources) -> RtResult<()> {
        let rec = self.container(id)?;
        let _guard = self.locks.lock(&rec.id).await;
        let spec_path = self.container_spec_path(&rec.id);
        let mut spec = Spec::load(&spec_path).map_err(|e| internal("reading the spec", e))?;
        let privileged = spec.linux().as_ref().and_then(|l| l.devices().as_ref()).is_some();
        let res = spec::linux_resources(&resources, privileged)?;
        if self.observe(&rec).state == ContainerState::Running {
            Cgroup::open(&rec.cgroup).and_then(|cg| cg.apply(&res)).map_err(|e| RuntimeError::Invalid(format!("applying resources: {e}")))?;
        }
        if let Some(linux) = spec.linux_mut() {
            linux.set_resources(Some(res));
        }
        let tmp = spec_path.with_extension("json.tmp");
        spec.save(&tmp).map_err(|e| internal("writing the spec", e))?;
        std::fs::rename(&tmp, &spec_path).map_err(|e| internal("writing the spec", e))?;
        Ok(())
    }

    /// ReopenContainerLog: the monitor reopens the log file (after rotation).
    pub async fn reopen_log(&self, id: &str) -> RtResult<()> {
        let rec = self.container(id)?;
        let obs = self.observe(&rec);
        let Some(run) = obs.run.filter(|_| obs.state == ContainerState::Running) else {
            return Err(RuntimeError::FailedPrecondition(format!("container {} is not running", rec.id)));
        };
        if !state::process_alive(run.monitor_pid, run.monitor_start_time) {
            return Err(RuntimeError::FailedPrecondition("the container's monitor is gone".into()));
        }
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(run.monitor_pid), Signal::SIGUSR1).map_err(|e| internal("signalling the monitor", e))?;
        if let Some(path) = &rec.log_path {
            let start = Instant::now();
            while !path.exists() && start.elapsed() < Duration::from_secs(2) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if !path.exists() {
                return Err(internal("reopening the log", format!("{} did not appear", path.display())));
            }
        }
        Ok(())
    }

    /// Bytes and inodes the container's writable layer uses.
    pub fn writable_layer_usage(&self, id: &str) -> (u64, u64) {
        du(&self.container_data_dir(id).join("upper"))
    }
}

fn du(p: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut bytes = 0;
    let mut inodes = 0;
    let mut stack = vec![p.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            inodes += 1;
            bytes += md.blocks() * 512;
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    (bytes, inodes)
}

/// Where the container joins its cgroup by itself (v1 cgroupfs), make the cgroup and apply the
/// spec's limits now, with this process's cached handle, so that its monitor need not: true
/// when done. Elsewhere the monitor moves the container and applies them (false).
fn prepare_cgroup(cgroup: &CgroupSpec, spec: &oci_spec::runtime::Spec) -> RtResult<bool> {
    if !super::cgroups::make_joinable(cgroup).map_err(|e| internal("making the container's cgroup", e))? {
        return Ok(false);
    }
    if let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
        Cgroup::open(cgroup).and_then(|cg| cg.apply(res)).map_err(|e| internal("applying the container's resources", e))?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_signals_by_name_number_and_cri_enum() {
        assert_eq!(signal_number("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("quit"), Some(libc::SIGQUIT));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("SIGRTMIN+3"), Some(libc::SIGRTMIN() + 3));
        assert_eq!(signal_number("SIGRTMAX-1"), Some(libc::SIGRTMAX() - 1));
        assert_eq!(signal_number("SIGRTMIN+99"), None);
        assert_eq!(signal_number("SIGCLD"), Some(libc::SIGCHLD));
        assert_eq!(signal_number("SIGNOPE"), None);
        assert_eq!(cri_signal_number(cri::Signal::RuntimeDefault as i32), None);
        assert_eq!(cri_signal_number(cri::Signal::Sigusr1 as i32), Some(libc::SIGUSR1));
        assert_eq!(cri_signal_number(cri::Signal::Sigrtminplus3 as i32), Some(libc::SIGRTMIN() + 3));
        assert_eq!(cri_signal_number(cri::Signal::Sigrtmax as i32), Some(libc::SIGRTMAX()));
        assert_eq!(cri_signal_number(999), None);
        // Every CRI signal maps to a number and back (aliases to their first name).
        for i in 1..=65 {
            let s = cri::Signal::try_from(i).unwrap();
            let n = cri_signal_number(i).unwrap_or_else(|| panic!("{s:?}"));
            assert_eq!(cri_signal_number(cri_signal(n) as i32), Some(n), "{s:?}");
        }
        assert_eq!(cri_signal(libc::SIGTERM), cri::Signal::Sigterm);
        assert_eq!(cri_signal(libc::SIGABRT), cri::Signal::Sigabrt);
        assert_eq!(cri_signal(0), cri::Signal::RuntimeDefault);
    }
}
