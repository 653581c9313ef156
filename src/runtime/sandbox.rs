//! Pod sandboxes: the pod's namespaces pinned by bind-mounted files (no pause process; a
//! tiny init only when the pod shares one PID namespace), its hostname, hosts and
//! resolv.conf files, its /dev/shm and its cgroup.
use super::cgroups::Cgroup;
use super::handlers::HandlerOptions;
use super::process::sandbox_init::{SandboxInitConfig, SandboxInitReport};
use super::records::{self, Phase, SandboxRecord};
use super::state::{self, CgroupSpec};
use super::{internal, unmount, Made, RtResult, Runtime, RuntimeError};
use crate::cri::v1 as cri;
use crate::network::{NetworkError, PodNetworkRequest};
use crate::util::atomic;
use nix::mount::{mount, MsFlags};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

const NONE: Option<&str> = None;

/// Sysctls that live in a pod's own namespaces and so may be set per pod.
pub fn sysctl_is_namespaced(key: &str) -> bool {
    key.starts_with("net.")
        || key.starts_with("fs.mqueue.")
        || matches!(
            key,
            "kernel.shmmax" | "kernel.shmall" | "kernel.shmmni" | "kernel.shm_rmid_forced" | "kernel.msgmax" | "kernel.msgmnb" | "kernel.msgmni" | "kernel.sem"
        )
}

fn resolv_conf(dns: Option<&cri::DnsConfig>) -> std::io::Result<String> {
    match dns {
        Some(d) if !d.servers.is_empty() || !d.searches.is_empty() || !d.options.is_empty() => {
            let mut out = String::new();
            if !d.searches.is_empty() {
                out.push_str(&format!("search {}\n", d.searches.join(" ")));
            }
            for s in &d.servers {
                out.push_str(&format!("nameserver {s}\n"));
            }
            if !d.options.is_empty() {
                out.push_str(&format!("options {}\n", d.options.join(" ")));
            }
            Ok(out)
        }
        _ => std::fs::read_to_string("/etc/resolv.conf").or_else(|_| Ok(String::new())),
    }
}

fn hosts_file(hostname: &str, host_network: bool) -> String {
    if host_network {
        if let Ok(h) = std::fs::read_to_string("/etc/hosts") {
            return h;
        }
    }
    let mut out = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    if !hostname.is_empty() {
        out.push_str(&format!("127.0.1.1\t{hostname}\n"));
    }
    out
}

/// The CNI "bandwidth" capability from the kubernetes.io/{ingress,egress}-bandwidth
/// annotations (quantities like "10M", in bits per second).
pub fn bandwidth_from_annotations(annotations: &std::collections::HashMap<String, String>) -> Option<serde_json::Value> {
    let rate = |key: &str| annotations.get(key).and_then(|v| parse_quantity(v));
    let ingress = rate("kubernetes.io/ingress-bandwidth");
    let egress = rate("kubernetes.io/egress-bandwidth");
    if ingress.is_none() && egress.is_none() {
        return None;
    }
    let mut v = serde_json::Map::new();
    if let Some(r) = ingress {
        v.insert("ingressRate".into(), r.into());
        v.insert("ingressBurst".into(), (u32::MAX as u64).into());
    }
    if let Some(r) = egress {
        v.insert("egressRate".into(), r.into());
        v.insert("egressBurst".into(), (u32::MAX as u64).into());
    }
    Some(serde_json::Value::Object(v))
}

/// A Kubernetes quantity ("100M", "1Gi", "500k") as a non-negative integer.
fn parse_quantity(q: &str) -> Option<u64> {
    crate::util::quantity::Quantity::parse(q.trim()).ok().filter(|v| !v.is_negative()).map(|v| v.value() as u64)
}

/// The pod's files and namespace paths, as containers see them.
pub struct SandboxPaths {
    pub run_dir: PathBuf,
}

impl SandboxPaths {
    pub fn ns(&self, name: &str) -> PathBuf {
        self.run_dir.join("ns").join(name)
    }
    pub fn shm(&self) -> PathBuf {
        self.run_dir.join("shm")
    }
    pub fn hosts(&self) -> PathBuf {
        self.run_dir.join("hosts")
    }
    pub fn resolv_conf(&self) -> PathBuf {
        self.run_dir.join("resolv.conf")
    }
    pub fn hostname(&self) -> PathBuf {
        self.run_dir.join("hostname")
    }
}

impl Runtime {
    pub fn sandbox_paths(&self, id: &str) -> SandboxPaths {
        SandboxPaths { run_dir: self.sandbox_run_dir(id) }
    }

    /// A sandbox whose creation finished; one still being made is not found.
    pub fn sandbox(&self, id_or_prefix: &str) -> RtResult<SandboxRecord> {
        let idx = self.index();
        let ready = idx.sandboxes.iter().filter(|(_, s)| s.phase == Phase::Ready).map(|(k, _)| k);
        let id = Self::find_id(ready, id_or_prefix, "sandbox")?;
        Ok(idx.sandboxes[&id].clone())
    }

    /// The ready sandbox holding `name` when it was made from exactly this request.
    fn same_sandbox(&self, name: &str, config: &cri::PodSandboxConfig, handler: &str) -> Option<String> {
        let idx = self.index();
        let rec = idx.names.get(name).and_then(|id| idx.sandboxes.get(id))?;
        let same =
            rec.phase == Phase::Ready && !rec.stopped && rec.runtime_handler == handler && records::decode::<cri::PodSandboxConfig>(&rec.config) == *config;
        same.then(|| rec.id.clone())
    }

    /// The sandboxes whose creation finished.
    pub fn sandboxes(&self) -> Vec<SandboxRecord> {
        self.index().sandboxes.values().filter(|s| s.phase == Phase::Ready).cloned().collect()
    }

    fn save_sandbox(&self, rec: &SandboxRecord) -> RtResult<()> {
        records::save(&self.sandbox_data_dir(&rec.id), &self.sandbox_run_dir(&rec.id), rec.phase, rec)
            .map_err(|e| internal("writing the sandbox record", e))?;
        self.index().sandboxes.insert(rec.id.clone(), rec.clone());
        Ok(())
    }

    fn pod_cgroup(&self, config: &cri::PodSandboxConfig, id: &str, handler: &HandlerOptions) -> RtResult<(CgroupSpec, bool)> {
        let parent = config.linux.as_ref().map(|l| l.cgroup_parent.as_str()).unwrap_or_default();
        super::cgroup_paths::pod_cgroup(self.cfg.systemd_cgroup, parent, handler.cgroup_parent.as_deref(), id).map_err(|e| RuntimeError::Invalid(e.to_string()))
    }

    /// RunPodSandbox.
    pub async fn run_sandbox(&self, config: cri::PodSandboxConfig, runtime_handler: String) -> RtResult<Made> {
        let md = config.metadata.clone().ok_or_else(|| RuntimeError::Invalid("metadata is required".into()))?;
        if md.name.is_empty() {
            return Err(RuntimeError::Invalid("metadata.name is required".into()));
        }
        let Some(handler) = self.cfg.handlers.get(&runtime_handler).cloned() else {
            let known = self.cfg.handlers.names().iter().map(|n| format!("{n:?}")).collect::<Vec<_>>().join(", ");
            return Err(RuntimeError::Invalid(format!(
                "no runtime handler {runtime_handler:?} is configured (known: {known}; add [runtimes.{runtime_handler}])"
            )));
        };
        let linux = config.linux.clone().unwrap_or_default();
        for key in linux.sysctls.keys() {
            if !sysctl_is_namespaced(key) {
                return Err(RuntimeError::Invalid(format!("sysctls: {key:?} is not namespaced and cannot be set per pod")));
            }
        }
        let ns = linux.security_context.as_ref().and_then(|s| s.namespace_options.clone()).unwrap_or_default();
        let node = cri::NamespaceMode::Node as i32;
        let id = records::new_id();
        let name = sandbox_name(&config);
        if let Some(existing) = self.same_sandbox(&name, &config, &runtime_handler) {
            // A retry of a create whose answer the caller never got (it gave up just as the
            // create finished): the same request gets the same pod.
            tracing::info!(sandbox = %existing, "RunPodSandbox repeated with an identical config: answering with the pod made before");
            return Ok(Made { id: existing, fresh: false });
        }
        let (cgroup, owns_cgroup) = self.pod_cgroup(&config, &id, &handler)?;
        self.reserve_name(&name, &id)?;
        let _guard = self.locks.lock(&id).await;
        let mut rec = SandboxRecord {
            id: id.clone(),
            name: name.clone(),
            phase: Phase::Creating,
            config: records::encode(&config),
            created_at: state::now_ns(),
            stopped: false,
            host_network: ns.network == node,
            host_ipc: ns.ipc == node,
            host_pid: ns.pid == node,
            shared_pid: ns.pid == cri::NamespaceMode::Pod as i32,
            net_ns: None,
            ipc_ns: None,
            uts_ns: None,
            pid_ns: None,
            init_pid: 0,
            init_start_time: 0,
            cgroup,
            owns_cgroup,
            ip: String::new(),
            additional_ips: vec![],
            runtime_handler,
        };
        let created = async {
            std::fs::create_dir_all(self.sandbox_data_dir(&id)).map_err(|e| internal("creating the sandbox dir", e))?;
            std::fs::create_dir_all(self.sandbox_run_dir(&id).join("ns")).map_err(|e| internal("creating the sandbox dir", e))?;
            self.save_sandbox(&rec)?;
            self.build_sandbox(&mut rec, &config).await?;
            rec.phase = Phase::Ready;
            self.save_sandbox(&rec)
        }
        .await;
        if let Err(e) = created {
            if let Err(ne) = self.network.teardown(&id).await {
                tracing::warn!(sandbox = %id, "removing the half-made pod network: {ne}");
            }
            self.teardown_sandbox(&rec);
            self.index().sandboxes.remove(&id);
            self.release_name(&name, &id);
            return Err(e);
        }
        Ok(Made { id, fresh: true })
    }

    async fn build_sandbox(&self, rec: &mut SandboxRecord, config: &cri::PodSandboxConfig) -> RtResult<()> {
        let paths = self.sandbox_paths(&rec.id);
        let hostname = if config.hostname.is_empty() {
            nix::unistd::gethostname().map(|h| h.to_string_lossy().to_string()).unwrap_or_default()
        } else {
            config.hostname.clone()
        };
        let write = |p: PathBuf, text: String| atomic::write_file_volatile(&p, text.as_bytes()).map_err(|e| internal(&format!("writing {}", p.display()), e));
        write(paths.hostname(), format!("{hostname}\n"))?;
        write(paths.hosts(), hosts_file(&hostname, rec.host_network))?;
        write(paths.resolv_conf(), resolv_conf(config.dns_config.as_ref()).map_err(|e| internal("resolv.conf", e))?)?;
        let shm = paths.shm();
        std::fs::create_dir_all(&shm).map_err(|e| internal("creating shm", e))?;
        // With the host's IPC namespace, containers bind the host's /dev/shm directly.
        if !rec.host_ipc {
            let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
            mount(Some("shm"), &shm, Some("tmpfs"), flags, Some("mode=1777,size=65536k")).map_err(|e| internal("mounting the pod's shm", e))?;
        }
        let linux = config.linux.clone().unwrap_or_default();
        let init_cfg = SandboxInitConfig {
            new_net: !rec.host_network,
            new_ipc: !rec.host_ipc,
            new_uts: !rec.host_network,
            new_pid: rec.shared_pid,
            hostname: (!rec.host_network).then(|| hostname.clone()),
            sysctls: linux.sysctls.clone().into_iter().collect(),
        };
        self.start_sandbox_init(rec, &init_cfg, &paths).await?;
        if let Some(netns) = rec.net_ns.clone() {
            self.attach_network(rec, config, netns).await?;
        }
        Ok(())
    }

    /// Run the CNI chain for the pod and record its addresses.
    async fn attach_network(&self, rec: &mut SandboxRecord, config: &cri::PodSandboxConfig, netns: PathBuf) -> RtResult<()> {
        let md = config.metadata.clone().unwrap_or_default();
        let port_mappings = config
            .port_mappings
            .iter()
            .filter(|p| p.host_port > 0)
            .map(|p| {
                let protocol = match cri::Protocol::try_from(p.protocol) {
                    Ok(cri::Protocol::Udp) => "udp",
                    Ok(cri::Protocol::Sctp) => "sctp",
                    _ => "tcp",
                };
                serde_json::json!({"hostPort": p.host_port, "containerPort": p.container_port, "protocol": protocol, "hostIP": p.host_ip})
            })
            .collect();
        let dns = config.dns_config.as_ref().map(|d| serde_json::json!({"servers": d.servers, "searches": d.searches, "options": d.options}));
        let bandwidth = bandwidth_from_annotations(&config.annotations);
        let req = PodNetworkRequest {
            sandbox_id: rec.id.clone(),
            netns,
            pod_name: md.name,
            pod_namespace: md.namespace,
            pod_uid: md.uid,
            port_mappings,
            dns,
            bandwidth,
        };
        let addrs = match self.network.setup(&req).await {
            Ok(a) => a,
            // No CNI config at all: the pod gets loopback only (Status says NetworkReady=false).
            Err(NetworkError::NotConfigured(m)) => {
                tracing::info!(sandbox = %rec.id, "no pod network, loopback only: {m}");
                return Ok(());
            }
            Err(e) => return Err(RuntimeError::Internal(format!("setting up the pod network: {e}"))),
        };
        let mut ips = addrs.ips.into_iter();
        rec.ip = ips.next().unwrap_or_default();
        rec.additional_ips = ips.collect();
        if !rec.ip.is_empty() {
            let paths = self.sandbox_paths(&rec.id);
            let hostname = config.hostname.clone();
            let mut hosts = hosts_file(&hostname, false);
            if !hostname.is_empty() {
                hosts = hosts.replace(&format!("127.0.1.1\t{hostname}\n"), &format!("{}\t{hostname}\n", rec.ip));
            }
            atomic::write_file_volatile(&paths.hosts(), hosts.as_bytes()).map_err(|e| internal("writing hosts", e))?;
        }
        Ok(())
    }

    /// Make and pin the pod's namespaces: from a short-lived thread, or through the helper
    /// process when the pod shares a PID namespace (which needs a PID 1 that stays).
    async fn start_sandbox_init(&self, rec: &mut SandboxRecord, cfg: &SandboxInitConfig, paths: &SandboxPaths) -> RtResult<()> {
        if cfg.new_pid {
            return self.start_sandbox_init_process(rec, cfg, paths).await;
        }
        let (cfg2, ns_dir) = (cfg.clone(), paths.run_dir.join("ns"));
        let worker = std::thread::spawn(move || super::process::sandbox_init::pin_from_thread(&cfg2, &ns_dir).map_err(|e| e.to_string()));
        let joined = tokio::task::spawn_blocking(move || worker.join()).await.map_err(|e| internal("namespace thread", e))?;
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(if e.starts_with("sysctl") { RuntimeError::Invalid(e) } else { internal("creating the pod's namespaces", e) }),
            Err(_) => return Err(internal("creating the pod's namespaces", "the worker thread panicked")),
        }
        rec.net_ns = cfg.new_net.then(|| paths.ns("net"));
        rec.ipc_ns = cfg.new_ipc.then(|| paths.ns("ipc"));
        rec.uts_ns = cfg.new_uts.then(|| paths.ns("uts"));
        Ok(())
    }

    /// Run the namespace helper, pin its namespaces, put its init in the pod cgroup.
    async fn start_sandbox_init_process(&self, rec: &mut SandboxRecord, cfg: &SandboxInitConfig, paths: &SandboxPaths) -> RtResult<()> {
        let mut child = crate::util::self_exe::command()
            .arg(super::process::SANDBOX_INIT_ARG)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| internal("starting the sandbox helper", e))?;
        let mut stdin = child.stdin.take().ok_or_else(|| internal("sandbox helper", "no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| internal("sandbox helper", "no stdout"))?;
        let mut line = serde_json::to_vec(cfg).map_err(|e| internal("sandbox helper config", e))?;
        line.push(b'\n');
        stdin.write_all(&line).await.map_err(|e| internal("sandbox helper", e))?;
        let mut reply = String::new();
        BufReader::new(stdout).read_line(&mut reply).await.map_err(|e| internal("sandbox helper", e))?;
        let report: SandboxInitReport = serde_json::from_str(&reply).map_err(|e| internal("sandbox helper", format!("no report ({e}); see the daemon log")))?;
        if let Some(e) = report.error {
            let _ = child.wait().await;
            return Err(if e.starts_with("sysctl") { RuntimeError::Invalid(e) } else { internal("creating the pod's namespaces", e) });
        }
        let pin = |name: &str, pid: i32| -> RtResult<PathBuf> {
            let target = paths.ns(name);
            std::fs::File::create(&target).map_err(|e| internal(&format!("creating {}", target.display()), e))?;
            let src = PathBuf::from(format!("/proc/{pid}/ns/{name}"));
            mount(Some(&src), &target, NONE, MsFlags::MS_BIND, NONE).map_err(|e| internal(&format!("pinning the {name} namespace"), e))?;
            Ok(target)
        };
        if cfg.new_net {
            rec.net_ns = Some(pin("net", report.pid)?);
        }
        if cfg.new_ipc {
            rec.ipc_ns = Some(pin("ipc", report.pid)?);
        }
        if cfg.new_uts {
            rec.uts_ns = Some(pin("uts", report.pid)?);
        }
        if cfg.new_pid {
            rec.pid_ns = Some(pin("pid", report.init_pid)?);
            rec.init_pid = report.init_pid;
            rec.init_start_time = state::process_start_time(report.init_pid).unwrap_or(0);
        }
        // A leaf of its own in the pod cgroup, as a pause container has: under cgroup v2 the
        // pod cgroup delegates its controllers to the containers' cgroups, so it can hold no
        // process itself.
        // On a blocking thread: under the systemd driver this starts a scope over D-Bus and
        // waits for the processes to show up in it.
        let leaf = super::cgroup_paths::member(&rec.cgroup, &rec.id);
        let pids = [report.pid, report.init_pid];
        let joined = tokio::task::spawn_blocking(move || {
            let cg = Cgroup::open(&leaf)?;
            for pid in pids.into_iter().filter(|p| *p > 0) {
                cg.add(pid)?;
            }
            Ok::<(), super::cgroups::CgroupError>(())
        })
        .await
        .map_err(|e| internal("the sandbox helper's cgroup", e))?;
        joined.map_err(|e| internal("the sandbox helper's cgroup", e))?;
        let _ = stdin.write_all(b"G").await;
        drop(stdin);
        let _ = child.wait().await;
        Ok(())
    }

    /// UpdatePodSandboxResources: size the pod cgroup to the containers' sum plus the overhead
    /// and keep the sandbox config in step. Device rules stay the containers' business.
    pub async fn update_sandbox_resources(
        &self,
        id: &str,
        overhead: Option<cri::LinuxContainerResources>,
        resources: Option<cri::LinuxContainerResources>,
    ) -> RtResult<()> {
        let rec = self.sandbox(id)?;
        let _guard = self.locks.lock(&rec.id).await;
        let mut rec = self.sandbox(&rec.id)?;
        let mut res = super::spec::linux_resources(&pod_resources(overhead.as_ref(), resources.as_ref()), true)?;
        res.set_devices(None);
        if !rec.stopped {
            // A pod whose namespaces wait for its first container has no cgroup yet. On a
            // blocking thread: cgroup files, or systemd over D-Bus.
            let (spec, res) = (rec.cgroup.clone(), res.clone());
            let applied = tokio::task::spawn_blocking(move || {
                Cgroup::open(&spec).and_then(|cg| if spec.systemd { Ok(cg) } else { cg.create().map(|()| cg) }).and_then(|cg| cg.apply(&res))
            })
            .await
            .map_err(|e| internal("applying pod resources", e))?;
            applied.map_err(|e| RuntimeError::Invalid(format!("applying pod resources: {e}")))?;
        }
        let mut config: cri::PodSandboxConfig = records::decode(&rec.config);
        let linux = config.linux.get_or_insert_with(Default::default);
        linux.overhead = overhead;
        linux.resources = resources;
        rec.config = records::encode(&config);
        self.save_sandbox(&rec)
    }

    /// The sandbox, or None when it does not exist (stop and remove are idempotent).
    fn existing_sandbox(&self, id: &str) -> RtResult<Option<SandboxRecord>> {
        match self.sandbox(id) {
            Ok(r) => Ok(Some(r)),
            Err(RuntimeError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn container_ids_of(&self, sandbox_id: &str) -> Vec<String> {
        self.index().containers.values().filter(|c| c.sandbox_id == sandbox_id).map(|c| c.id.clone()).collect()
    }

    /// StopPodSandbox: stop every container, end the pod's init, release its network.
    pub async fn stop_sandbox(&self, id: &str) -> RtResult<()> {
        let Some(rec) = self.existing_sandbox(id)? else { return Ok(()) };
        for cid in self.container_ids_of(&rec.id) {
            self.stop_container(&cid, 2).await?;
        }
        let _guard = self.locks.lock(&rec.id).await;
        let mut rec = self.sandbox(&rec.id)?;
        if rec.stopped {
            return Ok(());
        }
        if !rec.host_network {
            self.network.teardown(&rec.id).await.map_err(|e| internal("tearing down the pod network", e))?;
        }
        self.kill_sandbox_init(&rec);
        if let Some(net) = &rec.net_ns {
            unmount(net);
        }
        rec.stopped = true;
        self.save_sandbox(&rec)
    }

    fn kill_sandbox_init(&self, rec: &SandboxRecord) {
        if rec.init_pid > 0 && state::process_alive(rec.init_pid, rec.init_start_time) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.init_pid), nix::sys::signal::Signal::SIGKILL);
        }
    }

    /// RemovePodSandbox: remove its containers and everything the sandbox made.
    pub async fn remove_sandbox(&self, id: &str) -> RtResult<()> {
        let Some(rec) = self.existing_sandbox(id)? else { return Ok(()) };
        for cid in self.container_ids_of(&rec.id) {
            self.remove_container(&cid).await?;
        }
        let _guard = self.locks.lock(&rec.id).await;
        self.network.teardown(&rec.id).await.map_err(|e| internal("tearing down the pod network", e))?;
        // Killing what is left and removing cgroups waits for processes: off the async threads.
        tokio::task::block_in_place(|| self.teardown_sandbox(&rec));
        self.index().sandboxes.remove(&rec.id);
        self.release_name(&rec.name, &rec.id);
        Ok(())
    }

    /// Undo whatever of a sandbox exists; safe on half-made sandboxes and repeated calls.
    pub(super) fn teardown_sandbox(&self, rec: &SandboxRecord) {
        self.kill_sandbox_init(rec);
        self.forget_cpu_sample(&rec.cgroup);
        if let Ok(cg) = Cgroup::open(&super::cgroup_paths::member(&rec.cgroup, &rec.id)) {
            if let Err(e) = cg.remove() {
                tracing::warn!(sandbox = %rec.id, "removing the sandbox helper's cgroup: {e}");
            }
        }
        if rec.owns_cgroup {
            if let Ok(cg) = Cgroup::open(&rec.cgroup) {
                if let Err(e) = cg.remove() {
                    tracing::warn!(sandbox = %rec.id, "removing the pod cgroup: {e}");
                }
            }
            if !rec.cgroup.systemd {
                // The shared parent (/berth, or a handler's) goes with its last pod (rmdir
                // fails while others use it).
                if let Some((parent, _)) = rec.cgroup.path.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
                    for dir in super::cgroups::all_fs_paths(&CgroupSpec { path: parent.into(), systemd: false }) {
                        let _ = std::fs::remove_dir(dir);
                    }
                }
            }
        }
        self.teardown_sandbox_dirs(&rec.id);
    }

    pub(super) fn teardown_sandbox_dirs(&self, id: &str) {
        let paths = self.sandbox_paths(id);
        for name in ["net", "ipc", "uts", "pid"] {
            unmount(&paths.ns(name));
        }
        unmount(&paths.shm());
        remove_dir(&paths.run_dir);
        remove_dir(&self.sandbox_data_dir(id));
    }
}

/// The name a sandbox reserves: name_namespace_uid_attempt of its metadata.
pub fn sandbox_name(config: &cri::PodSandboxConfig) -> String {
    let md = config.metadata.clone().unwrap_or_default();
    format!("{}_{}_{}_{}", md.name, md.namespace, md.uid, md.attempt)
}

/// A pod cgroup's resources: the containers' sum plus the sandbox overhead. A limit the
/// containers leave unset stays unset: overhead never makes an unlimited pod limited.
fn pod_resources(overhead: Option<&cri::LinuxContainerResources>, resources: Option<&cri::LinuxContainerResources>) -> cri::LinuxContainerResources {
    let mut pod = resources.cloned().unwrap_or_default();
    // Older kubelets subtract the overhead from an unlimited quota too (-1 - overhead).
    if pod.cpu_quota < 0 {
        pod.cpu_quota = -1;
    }
    let Some(o) = overhead else { return pod };
    pod.cpu_shares = pod.cpu_shares.saturating_add(o.cpu_shares);
    if pod.cpu_period == 0 {
        pod.cpu_period = o.cpu_period;
    }
    if pod.cpu_quota > 0 && o.cpu_quota > 0 {
        pod.cpu_quota = pod.cpu_quota.saturating_add(o.cpu_quota);
    }
    if pod.memory_limit_in_bytes > 0 && o.memory_limit_in_bytes > 0 {
        pod.memory_limit_in_bytes = pod.memory_limit_in_bytes.saturating_add(o.memory_limit_in_bytes);
    }
    if pod.memory_swap_limit_in_bytes > 0 && o.memory_swap_limit_in_bytes > 0 {
        pod.memory_swap_limit_in_bytes = pod.memory_swap_limit_in_bytes.saturating_add(o.memory_swap_limit_in_bytes);
    }
    for h in &mut pod.hugepage_limits {
        if let Some(extra) = o.hugepage_limits.iter().find(|x| x.page_size == h.page_size) {
            h.limit = h.limit.saturating_add(extra.limit);
        }
    }
    pod
}

fn remove_dir(p: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(root) = std::fs::symlink_metadata(p) else { return };
    if let Err(e) = remove_same_fs(p, root.dev()) {
        tracing::warn!(path = %p.display(), "removing: {e}");
    }
}

fn remove_same_fs(p: &Path, dev: u64) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let md = std::fs::symlink_metadata(p)?;
    if md.dev() != dev {
        return Err(std::io::Error::other(format!("{} is still a mount point", p.display())));
    }
    if md.is_dir() {
        for e in std::fs::read_dir(p)? {
            remove_same_fs(&e?.path(), dev)?;
        }
        std::fs::remove_dir(p)
    } else {
        std::fs::remove_file(p)
    }
}

pub(super) fn remove_dir_logged(p: &Path) {
    remove_dir(p)
}

/// Remove a directory tree without ever descending into another filesystem: should an
/// unmount have failed, what is mounted below stays untouched.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bandwidth_annotations_become_the_cni_capability() {
        let a = std::collections::HashMap::from([("kubernetes.io/ingress-bandwidth".to_string(), "10M".to_string())]);
        let v = bandwidth_from_annotations(&a).unwrap();
        assert_eq!(v["ingressRate"], 10_000_000u64);
        assert!(v.get("egressRate").is_none());
        assert_eq!(parse_quantity("1Gi"), Some(1 << 30));
        assert_eq!(parse_quantity("fast"), None);
        assert!(bandwidth_from_annotations(&Default::default()).is_none());
    }

    #[test]
    fn pod_resources_add_the_overhead_to_set_limits_only() {
        let r = |shares, quota, memory| cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_shares: shares,
            cpu_quota: quota,
            memory_limit_in_bytes: memory,
            ..Default::default()
        };
        let overhead = r(102, 25_000, 64 << 20);
        let pod = pod_resources(Some(&overhead), Some(&r(512, 50_000, 256 << 20)));
        assert_eq!((pod.cpu_shares, pod.cpu_quota, pod.memory_limit_in_bytes), (614, 75_000, 320 << 20));
        assert_eq!(pod.cpu_period, 100_000);
        // An unlimited pod stays unlimited; shares still grow.
        let pod = pod_resources(Some(&overhead), Some(&r(2, -1, 0)));
        assert_eq!((pod.cpu_shares, pod.cpu_quota, pod.memory_limit_in_bytes), (104, -1, 0));
        assert_eq!(pod_resources(Some(&overhead), Some(&r(2, -1 - 25_000, 0))).cpu_quota, -1);
        assert_eq!(pod_resources(None, Some(&r(512, 50_000, 1 << 30))), r(512, 50_000, 1 << 30));
    }
}
