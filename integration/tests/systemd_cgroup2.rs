//! Berth on cgroup v2 with systemd as PID 1: `berth runtime` and `berth node` run as systemd
//! services from the project's unit files (hack/systemd/), under the systemd cgroup driver
//! and under cgroupfs. Pod and container limits as v2 files, OOM kills, stats, restarts of
//! the service with pods running, static pods of the node.
//!
//! These tests install units and /etc/berth/config.toml and start and stop system services:
//! they run only in the throw-away guest of the VM suite (`sudo hack/vm/test.sh`, which runs
//! them with --include-ignored, one at a time), never on a machine of one's own.
use berth::cri::v1 as cri;
use berth::cri::v1::image_service_client::ImageServiceClient;
use berth::cri::v1::runtime_service_client::RuntimeServiceClient;
use berth_integration::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

const SOCKET: &str = "/run/berth/berth.sock";
const CGROUP: &str = "/sys/fs/cgroup";
const VM_ONLY: &str = "VM suite only (hack/vm/test.sh): installs and starts systemd services";

static SEQ: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy, Debug, PartialEq)]
enum Driver {
    Systemd,
    Cgroupfs,
}

impl Driver {
    fn name(self) -> &'static str {
        match self {
            Driver::Systemd => "systemd",
            Driver::Cgroupfs => "cgroupfs",
        }
    }
}

/// Refuse to run anywhere but in the VM guest with systemd and cgroup v2.
fn in_guest() {
    assert!(std::env::var_os("BERTH_VM_GUEST").is_some(), "{VM_ONLY}");
    assert!(Path::new("/run/systemd/system").is_dir(), "systemd is not PID 1");
    assert!(Path::new("/sys/fs/cgroup/cgroup.controllers").exists(), "not a cgroup v2 host");
}

fn unique(tag: &str) -> String {
    format!("berth-{tag}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))
}

fn busybox() -> String {
    format!("{}/berth/busybox:latest", test_registry())
}

/// Run a command; its stdout, or a panic with everything it said.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}\n{}{}", out.status, String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn systemctl(args: &[&str]) -> bool {
    Command::new("systemctl").args(args).stderr(std::process::Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// One property of a unit (`systemctl show -P`).
fn show(unit: &str, property: &str) -> String {
    run("systemctl", &["show", "-P", property, unit]).trim().to_string()
}

fn read(path: impl AsRef<Path>) -> String {
    let p = path.as_ref();
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).trim().to_string()
}

fn journal(unit: &str) -> String {
    let out = Command::new("journalctl").args(["--no-pager", "-o", "cat", "-n", "60", "-u", unit]).output().map(|o| o.stdout).unwrap_or_default();
    String::from_utf8_lossy(&out).to_string()
}

/// Poll `check` every 100 ms until it holds; panic with `what` after `limit`.
async fn wait_until(what: &str, limit: Duration, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn alive(pid: i32) -> bool {
    // Zombies do not count: a process that ended but was not reaped yet is gone.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map(|s| !s.rsplit(')').next().unwrap_or_default().trim_start().starts_with('Z')).unwrap_or(false)
}

/// The v2 cgroup of a process (its one "0::" line).
fn cgroup_of(pid: i32) -> String {
    read(format!("/proc/{pid}/cgroup")).lines().find_map(|l| l.strip_prefix("0::")).unwrap_or_default().to_string()
}

/// The cpu.weight runc and libcgroups write for v1 shares: ⌈10^((L² + 125L)/612 − 7/34)⌉, L = log2(shares).
fn weight_of(shares: u64) -> u64 {
    let l = (shares as f64).log2();
    10f64.powf((l * l + 125.0 * l) / 612.0 - 7.0 / 34.0).ceil() as u64
}

/// A Berth unit of hack/systemd/ started with a config of the test's own (a fresh data
/// directory, the driver) and a drop-in of the test's own; everything it made goes on drop:
/// pods through the daemon, the unit, the drop-in, the config, leftover cgroups and mounts.
struct Service {
    unit: &'static str,
    data_dir: PathBuf,
    dropin: PathBuf,
    manifests: Option<PathBuf>,
}

impl Service {
    async fn start(unit: &'static str, driver: Driver, extra_config: &str, service_lines: &[&str]) -> Service {
        in_guest();
        let data_dir = PathBuf::from(format!("/var/lib/{}", unique("vm")));
        let manifests = (unit == "berth-node.service").then(|| data_dir.join("manifests"));
        std::fs::create_dir_all(&data_dir).expect("data dir");
        if let Some(m) = &manifests {
            std::fs::create_dir_all(m).expect("manifests dir");
        }
        std::fs::create_dir_all("/etc/berth").expect("/etc/berth");
        let config = format!("data_dir = \"{}\"\ncgroup_driver = \"{}\"\n{extra_config}\n", data_dir.display(), driver.name());
        std::fs::write("/etc/berth/config.toml", config).expect("config");
        let dropin_dir = PathBuf::from(format!("/etc/systemd/system/{unit}.d"));
        std::fs::create_dir_all(&dropin_dir).expect("drop-in dir");
        let dropin = dropin_dir.join("50-berth-vm-test.conf");
        let mut lines = vec!["[Service]".to_string()];
        if let Some(m) = &manifests {
            // The node's own flags: its manifests, a pod network, a pod pids limit.
            lines.push("ExecStart=".into());
            lines.push(format!("ExecStart=/usr/local/bin/berth node --pod-manifest-path {} --pod-cidr 10.88.0.0/24 --pod-max-pids 100", m.display()));
        }
        lines.extend(service_lines.iter().map(|l| l.to_string()));
        std::fs::write(&dropin, lines.join("\n") + "\n").expect("drop-in");
        assert!(systemctl(&["daemon-reload"]));
        let _ = systemctl(&["reset-failed", unit]);
        let s = Service { unit, data_dir, dropin, manifests };
        // Type=notify: this returns once berth said READY=1.
        assert!(systemctl(&["start", unit]), "systemctl start {unit} failed:\n{}", journal(unit));
        s
    }

    async fn rt(&self) -> Rt {
        RuntimeServiceClient::new(connect_unix(Path::new(SOCKET)).await.expect("connect to the CRI socket"))
    }

    async fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(connect_unix(Path::new(SOCKET)).await.expect("connect to the CRI socket"))
    }

    fn main_pid(&self) -> i32 {
        show(self.unit, "MainPID").parse().expect("MainPID")
    }

    fn restarts(&self) -> u32 {
        show(self.unit, "NRestarts").parse().expect("NRestarts")
    }

    fn active(&self) -> bool {
        show(self.unit, "ActiveState") == "active"
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(m) = &self.manifests {
            if let Ok(rd) = std::fs::read_dir(m) {
                for e in rd.flatten() {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        if self.active() {
            remove_all_pods(self.manifests.is_some());
        }
        let _ = systemctl(&["stop", self.unit]);
        let _ = std::fs::remove_file(&self.dropin);
        let _ = systemctl(&["daemon-reload"]);
        let _ = systemctl(&["reset-failed", self.unit]);
        // Whatever a failed test left: scopes and slices, cgroupfs trees, mounts, files.
        let _ = Command::new("systemctl").args(["stop", "kubepods.slice", "berth.slice"]).status();
        for root in ["/kubepods", "/berth"] {
            remove_cgroup_tree(root);
        }
        for m in mounts_under(&self.data_dir).into_iter().chain(mounts_under(Path::new("/run/berth"))) {
            let _ = Command::new("umount").args(["-l", &m.display().to_string()]).status();
        }
        let _ = std::fs::remove_dir_all(&self.data_dir);
        let _ = std::fs::remove_file("/etc/berth/config.toml");
    }
}

/// Stop and remove every pod through the daemon (so CNI DEL and unmounts happen); a node
/// first gets the time to take down the pods of its removed manifests itself.
fn remove_all_pods(node: bool) {
    let work = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            let Ok(channel) = connect_unix(Path::new(SOCKET)).await else { return };
            let mut rt = RuntimeServiceClient::new(channel);
            if node {
                let deadline = Instant::now() + Duration::from_secs(60);
                while Instant::now() < deadline {
                    match rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await {
                        Ok(l) if !l.get_ref().items.is_empty() => tokio::time::sleep(Duration::from_millis(250)).await,
                        _ => break,
                    }
                }
            }
            let Ok(list) = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await else { return };
            for pod in list.into_inner().items {
                let _ = rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.id.clone() }).await;
                let _ = rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.id }).await;
            }
        });
    });
    let _ = work.join();
}

/// A pod as the kubelet asks for it: Burstable, its cgroup parent named for the driver.
fn pod_config(driver: Driver, name: &str, uid: &str, logs: &Path, shared_pid: bool) -> cri::PodSandboxConfig {
    let cgroup_parent = match driver {
        Driver::Systemd => format!("kubepods-burstable-pod{}.slice", uid.replace('-', "_")),
        Driver::Cgroupfs => format!("/kubepods/burstable/pod{uid}"),
    };
    let pid = if shared_pid { cri::NamespaceMode::Pod } else { cri::NamespaceMode::Container } as i32;
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.into(), uid: uid.into(), namespace: "default".into(), attempt: 0 }),
        hostname: "vmpod".into(),
        log_directory: logs.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent,
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption { network: cri::NamespaceMode::Node as i32, pid, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The pod cgroup's directory as the kubelet lays it out for the driver.
fn pod_dir(driver: Driver, uid: &str) -> PathBuf {
    match driver {
        Driver::Systemd => PathBuf::from(format!("{CGROUP}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice", uid.replace('-', "_"))),
        Driver::Cgroupfs => PathBuf::from(format!("{CGROUP}/kubepods/burstable/pod{uid}")),
    }
}

/// A member's (container's or sandbox helper's) cgroup in the pod's.
fn member_dir(driver: Driver, uid: &str, id: &str) -> PathBuf {
    match driver {
        Driver::Systemd => pod_dir(driver, uid).join(format!("berth-{id}.scope")),
        Driver::Cgroupfs => pod_dir(driver, uid).join(id),
    }
}

fn resources(quota: i64, shares: i64, memory: i64, pids: Option<u32>) -> cri::LinuxContainerResources {
    cri::LinuxContainerResources {
        cpu_period: 100_000,
        cpu_quota: quota,
        cpu_shares: shares,
        memory_limit_in_bytes: memory,
        // As the kubelet on a node without swap: memory and swap together no more than memory.
        memory_swap_limit_in_bytes: memory,
        unified: pids.map(|p| HashMap::from([("pids.max".to_string(), p.to_string())])).unwrap_or_default(),
        ..Default::default()
    }
}

fn container_config(name: &str, command: &str, res: cri::LinuxContainerResources) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: spec(&busybox()),
        command: vec!["sh".into(), "-c".into(), command.into()],
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig { resources: Some(res), ..Default::default() }),
        ..Default::default()
    }
}

async fn run_pod(rt: &mut Rt, config: &cri::PodSandboxConfig) -> String {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .unwrap_or_else(|e| panic!("RunPodSandbox: {}", e.message()))
        .into_inner()
        .pod_sandbox_id
}

async fn start_container(rt: &mut Rt, pod: &str, pod_cfg: &cri::PodSandboxConfig, c: cri::ContainerConfig) -> String {
    let id = rt
        .create_container(cri::CreateContainerRequest { pod_sandbox_id: pod.into(), config: Some(c), sandbox_config: Some(pod_cfg.clone()) })
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {}", e.message()))
        .into_inner()
        .container_id;
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.unwrap_or_else(|e| panic!("StartContainer: {}", e.message()));
    id
}

/// The container's status and its verbose info (pid, runtime spec).
async fn status(rt: &mut Rt, id: &str) -> (cri::ContainerStatus, Value) {
    let r = rt.container_status(cri::ContainerStatusRequest { container_id: id.into(), verbose: true }).await.expect("ContainerStatus").into_inner();
    let info = r.info.get("info").map(|s| serde_json::from_str(s).expect("info json")).unwrap_or_default();
    (r.status.expect("status"), info)
}

async fn pid_of(rt: &mut Rt, id: &str) -> i32 {
    let (st, info) = status(rt, id).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32, "{st:?}");
    info["pid"].as_i64().expect("pid in the verbose info") as i32
}

async fn wait_exited(rt: &mut Rt, id: &str, limit: Duration) -> cri::ContainerStatus {
    let start = Instant::now();
    loop {
        let (st, _) = status(rt, id).await;
        if st.state == cri::ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(start.elapsed() < limit, "container {id} did not exit within {limit:?}: {st:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn exec(rt: &mut Rt, id: &str, cmd: &[&str]) -> (i32, String) {
    let r = rt
        .exec_sync(cri::ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 60 })
        .await
        .unwrap_or_else(|e| panic!("ExecSync {cmd:?}: {}", e.message()))
        .into_inner();
    (r.exit_code, String::from_utf8_lossy(&r.stdout).to_string())
}

async fn remove_pod(rt: &mut Rt, id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("StopPodSandbox");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("RemovePodSandbox");
}

fn uid(tag: &str) -> String {
    format!("{:08x}-{tag}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))
}

/// What is checked for each driver: a pod that shares its PID namespace (its sandbox helper
/// in a leaf of its own) with one limited container; the v2 files of the container and of
/// the pod (after UpdatePodSandboxResources) carry the limits, where the kubelet expects them.
async fn limits_land_in_v2_files(driver: Driver) {
    let svc = Service::start("berth-runtime.service", driver, "", &[]).await;
    pull(&mut svc.images().await, &busybox()).await.expect("pull busybox");
    let mut rt = svc.rt().await;
    let logs = TempDir::new("vmlimits");
    let uid = uid("limits");
    let cfg = pod_config(driver, &unique("limits"), &uid, logs.path(), true);
    let pod = run_pod(&mut rt, &cfg).await;
    let cid = start_container(&mut rt, &pod, &cfg, container_config("main", "exec sleep 3600", resources(50_000, 512, 64 << 20, Some(42)))).await;
    let pid = pid_of(&mut rt, &cid).await;

    let dir = member_dir(driver, &uid, &cid);
    assert_eq!(format!("{CGROUP}{}", cgroup_of(pid)), dir.display().to_string(), "the container's process is in its cgroup");
    assert_eq!(read(dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(dir.join("cpu.weight")), weight_of(512).to_string());
    assert_eq!(read(dir.join("memory.max")), (64u64 << 20).to_string());
    assert_eq!(read(dir.join("memory.swap.max")), "0", "memory+swap = memory means no swap");
    assert_eq!(read(dir.join("pids.max")), "42");

    // Issue 23 item 0: the sandbox helper (the pod's PID 1) sits in a leaf of its own, the
    // pod cgroup holds no process and delegates its controllers to the containers.
    let pod_dir = pod_dir(driver, &uid);
    assert_eq!(read(pod_dir.join("cgroup.procs")), "", "no process in the pod cgroup itself");
    let helper = member_dir(driver, &uid, &pod);
    assert!(!read(helper.join("cgroup.procs")).is_empty(), "the sandbox helper runs in {}", helper.display());
    for c in ["cpu", "memory", "pids"] {
        assert!(read(pod_dir.join("cgroup.subtree_control")).split_whitespace().any(|x| x == c), "{c} delegated below the pod cgroup");
    }
    let (code, out) = exec(&mut rt, &cid, &["true"]).await;
    assert_eq!(code, 0, "exec joins the container's cgroup: {out}");

    // UpdatePodSandboxResources: the pod's own limits, on its slice or directory.
    let pod_res =
        cri::LinuxContainerResources { cpu_period: 100_000, cpu_quota: 150_000, cpu_shares: 1024, memory_limit_in_bytes: 256 << 20, ..Default::default() };
    rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest { pod_sandbox_id: pod.clone(), overhead: None, resources: Some(pod_res) })
        .await
        .unwrap_or_else(|e| panic!("UpdatePodSandboxResources: {}", e.message()));
    assert_eq!(read(pod_dir.join("cpu.max")), "150000 100000");
    assert_eq!(read(pod_dir.join("memory.max")), (256u64 << 20).to_string());
    assert_eq!(read(pod_dir.join("cpu.weight")), weight_of(1024).to_string());

    // UpdateContainerResources on a running container.
    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: cid.clone(),
        linux: Some(resources(20_000, 256, 32 << 20, None)),
        ..Default::default()
    })
    .await
    .unwrap_or_else(|e| panic!("UpdateContainerResources: {}", e.message()));
    assert_eq!(read(dir.join("cpu.max")), "20000 100000");
    assert_eq!(read(dir.join("memory.max")), (32u64 << 20).to_string());

    remove_pod(&mut rt, &pod).await;
    assert!(!dir.exists() && !helper.exists(), "the container's and the helper's cgroups are gone");
    // Under cgroupfs the kubelet made the pod cgroup, and removes it.
    if driver == Driver::Cgroupfs {
        remove_cgroup_tree("/kubepods");
    }
}

#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn systemd_driver_limits_land_in_slices_and_scopes() {
    limits_land_in_v2_files(Driver::Systemd).await;
}

#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn cgroupfs_driver_limits_land_in_the_kubelet_layout() {
    limits_land_in_v2_files(Driver::Cgroupfs).await;
}

/// A container that outgrows its memory.max is OOM-killed: exit 137, reason OOMKilled (read
/// from memory.events while the cgroup exists: a scope is gone once its last process is).
async fn oom_kill_is_reported(driver: Driver) {
    let svc = Service::start("berth-runtime.service", driver, "", &[]).await;
    pull(&mut svc.images().await, &busybox()).await.expect("pull busybox");
    let mut rt = svc.rt().await;
    let logs = TempDir::new("vmoom");
    let uid = uid("oom");
    let cfg = pod_config(driver, &unique("oom"), &uid, logs.path(), false);
    let pod = run_pod(&mut rt, &cfg).await;
    // Doubling a shell variable: 32 MiB are reached in a few steps.
    let hog = container_config("hog", "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done", resources(0, 2, 32 << 20, None));
    let cid = start_container(&mut rt, &pod, &cfg, hog).await;
    let st = wait_exited(&mut rt, &cid, Duration::from_secs(120)).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (137, "OOMKilled"), "{st:?}");
    // A container that exits by itself is no OOM kill.
    let ok = start_container(&mut rt, &pod, &cfg, container_config("ok", "exit 3", resources(0, 2, 32 << 20, None))).await;
    let st = wait_exited(&mut rt, &ok, Duration::from_secs(60)).await;
    assert_eq!((st.exit_code, st.reason.as_str()), (3, "Error"), "{st:?}");
    remove_pod(&mut rt, &pod).await;
    if driver == Driver::Cgroupfs {
        remove_cgroup_tree("/kubepods");
    }
}

#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn systemd_driver_oom_kill_is_reported() {
    oom_kill_is_reported(Driver::Systemd).await;
}

#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn cgroupfs_driver_oom_kill_is_reported() {
    oom_kill_is_reported(Driver::Cgroupfs).await;
}

/// memory.stat's value for `key`.
fn memory_stat(dir: &Path, key: &str) -> u64 {
    read(dir.join("memory.stat")).lines().find_map(|l| l.strip_prefix(&format!("{key} ")).and_then(|v| v.parse().ok())).unwrap_or(0)
}

fn cpu_usage_ns(dir: &Path) -> u64 {
    read(dir.join("cpu.stat")).lines().find_map(|l| l.strip_prefix("usage_usec ").and_then(|v| v.parse::<u64>().ok())).unwrap_or(0) * 1000
}

/// CRI stats agree with the v2 files read around them: CPU time in nanoseconds, memory
/// working set (usage less inactive file pages), a CPU rate under the container's quota.
async fn cri_stats_match_the_v2_files(driver: Driver) {
    let svc = Service::start("berth-runtime.service", driver, "", &[]).await;
    pull(&mut svc.images().await, &busybox()).await.expect("pull busybox");
    let mut rt = svc.rt().await;
    let logs = TempDir::new("vmstats");
    let uid = uid("stats");
    let cfg = pod_config(driver, &unique("stats"), &uid, logs.path(), false);
    let pod = run_pod(&mut rt, &cfg).await;
    // 24 MiB of anonymous memory held by a process, then a busy loop under a 0.5 CPU quota.
    let cmd = "x=$(head -c 24m /dev/zero | tr '\\0' a); echo held; while :; do :; done";
    let cid = start_container(&mut rt, &pod, &cfg, container_config("busy", cmd, resources(50_000, 512, 256 << 20, None))).await;
    let dir = member_dir(driver, &uid, &cid);
    wait_until("the container holds its memory", Duration::from_secs(60), || memory_stat(&dir, "anon") > 20 << 20).await;

    let stats = |rt: &mut Rt| {
        let id = cid.clone();
        let mut rt = rt.clone();
        async move { rt.container_stats(cri::ContainerStatsRequest { container_id: id }).await.expect("ContainerStats").into_inner().stats.expect("stats") }
    };
    let before = cpu_usage_ns(&dir);
    let first = stats(&mut rt).await;
    let after = cpu_usage_ns(&dir);
    let cpu = first.cpu.as_ref().and_then(|c| c.usage_core_nano_seconds.as_ref()).expect("cpu usage").value;
    assert!(before <= cpu && cpu <= after + 1000, "CPU time in ns from cpu.stat: {before} <= {cpu} <= {after}");
    let mem = first.memory.as_ref().expect("memory");
    let ws = mem.working_set_bytes.as_ref().expect("working set").value;
    let current: u64 = read(dir.join("memory.current")).parse().unwrap();
    let expected = current.saturating_sub(memory_stat(&dir, "inactive_file"));
    let slack = 4 << 20;
    assert!(ws + slack >= expected && ws <= expected + slack, "working set {ws} vs memory.current - inactive_file {expected}");
    assert!(ws >= 20 << 20, "the 24 MiB held are in the working set: {ws}");
    assert_eq!(mem.available_bytes.as_ref().map(|v| v.value), Some((256u64 << 20) - ws), "available = memory.max - working set");
    // A rate needs two samples; the loop may use at most half a CPU.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let second = stats(&mut rt).await;
    let rate = second.cpu.as_ref().and_then(|c| c.usage_nano_cores.as_ref()).expect("a CPU rate from two samples").value;
    assert!(rate > 20_000_000 && rate <= 600_000_000, "nano cores {rate}: busy, but within its 0.5 CPU quota");

    // The pod's figures come from the pod cgroup (the slice).
    let ps = rt.pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: pod.clone() }).await.expect("PodSandboxStats").into_inner();
    let pod_ws = ps.stats.and_then(|s| s.linux).and_then(|l| l.memory).and_then(|m| m.working_set_bytes).expect("pod working set").value;
    assert!(pod_ws >= 20 << 20, "pod working set {pod_ws}");
    remove_pod(&mut rt, &pod).await;
    if driver == Driver::Cgroupfs {
        remove_cgroup_tree("/kubepods");
    }
}

#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn systemd_driver_cri_stats_match_the_v2_files() {
    cri_stats_match_the_v2_files(Driver::Systemd).await;
}

#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn cgroupfs_driver_cri_stats_match_the_v2_files() {
    cri_stats_match_the_v2_files(Driver::Cgroupfs).await;
}

/// Type=notify: `systemctl start` returns once the socket serves; the watchdog is pinged at
/// half of WatchdogSec, and a daemon that stops answering is killed and started again.
#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn runtime_unit_is_ready_when_serving_and_kept_alive_by_the_watchdog() {
    let svc = Service::start("berth-runtime.service", Driver::Systemd, "", &["WatchdogSec=6s"]).await;
    // Ready means serving: the first call right after `systemctl start` is answered.
    let mut rt = svc.rt().await;
    let v = rt.version(cri::VersionRequest { version: String::new() }).await.expect("Version right after start").into_inner();
    assert_eq!(v.runtime_name, "berth");
    // The kubelet (1.28+) takes its cgroup driver from the runtime.
    let rc = rt.runtime_config(cri::RuntimeConfigRequest {}).await.expect("RuntimeConfig").into_inner();
    assert_eq!(rc.linux.map(|l| l.cgroup_driver), Some(cri::CgroupDriver::Systemd as i32));
    assert_eq!(show(svc.unit, "Type"), "notify");
    assert!(show(svc.unit, "StatusText").starts_with("serving CRI on /run/berth/berth.sock"), "{}", show(svc.unit, "StatusText"));
    assert_eq!(show(svc.unit, "WatchdogUSec"), "6s");
    let pid = svc.main_pid();
    let pinged = show(svc.unit, "WatchdogTimestampMonotonic");
    wait_until("a watchdog ping", Duration::from_secs(10), || show(svc.unit, "WatchdogTimestampMonotonic") != pinged).await;
    // Two whole intervals later it is the same process, never restarted.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert!(svc.active() && svc.main_pid() == pid && svc.restarts() == 0, "alive on its pings:\n{}", journal(svc.unit));

    // Frozen, it stops pinging: systemd aborts it and starts a new one.
    run("kill", &["-STOP", &pid.to_string()]);
    wait_until("a restart after the watchdog fired", Duration::from_secs(60), || svc.restarts() >= 1 && svc.active() && svc.main_pid() != pid).await;
    assert!(!alive(pid), "the frozen daemon is gone");
    assert!(journal(svc.unit).contains("Watchdog timeout"), "{}", journal(svc.unit));
    let mut rt = svc.rt().await;
    rt.version(cri::VersionRequest { version: String::new() }).await.expect("the new daemon serves");
}

/// With pods running: `systemctl restart`, `systemctl stop` then start, and a crash (SIGKILL
/// of the main process, restarted by systemd) all leave the container running; the new
/// daemon adopts it (status, exec, stop).
async fn pods_survive_restart_stop_and_crash(driver: Driver) {
    let svc = Service::start("berth-runtime.service", driver, "", &[]).await;
    pull(&mut svc.images().await, &busybox()).await.expect("pull busybox");
    let mut rt = svc.rt().await;
    let logs = TempDir::new("vmrestart");
    let uid = uid("restart");
    let cfg = pod_config(driver, &unique("restart"), &uid, logs.path(), true);
    let pod = run_pod(&mut rt, &cfg).await;
    let cid = start_container(&mut rt, &pod, &cfg, container_config("app", "echo started; exec sleep 3600", resources(0, 2, 0, None))).await;
    let pid = pid_of(&mut rt, &cid).await;
    // The container's monitor stays in the service's cgroup (KillMode=process spares it).
    let service_cgroup = show(svc.unit, "ControlGroup");
    let monitors = read(format!("{CGROUP}{service_cgroup}/cgroup.procs"));
    assert!(monitors.lines().count() >= 2, "daemon and monitor in {service_cgroup}: {monitors}");

    let adopted = |what: &'static str| {
        let cid = cid.clone();
        async move {
            assert!(alive(pid), "{what}: the container's process lives on");
            let mut rt = RuntimeServiceClient::new(connect_unix(Path::new(SOCKET)).await.expect("connect"));
            assert_eq!(pid_of(&mut rt, &cid).await, pid, "{what}: the same process, running");
            let (code, out) = exec(&mut rt, &cid, &["echo", "adopted"]).await;
            assert_eq!((code, out.trim()), (0, "adopted"), "{what}");
        }
    };

    let first = svc.main_pid();
    assert!(systemctl(&["restart", svc.unit]));
    assert_ne!(svc.main_pid(), first);
    adopted("systemctl restart").await;

    assert!(systemctl(&["stop", svc.unit]));
    assert!(!svc.active());
    assert!(alive(pid), "systemctl stop leaves containers running (KillMode=process)");
    assert!(systemctl(&["start", svc.unit]));
    adopted("systemctl stop + start").await;

    let restarts = svc.restarts();
    let crashed = svc.main_pid();
    run("kill", &["-KILL", &crashed.to_string()]);
    wait_until("systemd restarts the crashed daemon", Duration::from_secs(60), || svc.restarts() > restarts && svc.active() && svc.main_pid() != crashed).await;
    adopted("a crash (SIGKILL)").await;

    let mut rt = svc.rt().await;
    rt.stop_container(cri::StopContainerRequest { container_id: cid.clone(), timeout: 5 }).await.expect("StopContainer");
    let st = wait_exited(&mut rt, &cid, Duration::from_secs(30)).await;
    assert!(matches!(st.exit_code, 137 | 143), "{st:?}");
    remove_pod(&mut rt, &pod).await;
    assert!(!member_dir(driver, &uid, &cid).exists());
    if driver == Driver::Cgroupfs {
        remove_cgroup_tree("/kubepods");
    }
}

#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn systemd_driver_pods_survive_restart_stop_and_crash_and_are_adopted() {
    pods_survive_restart_stop_and_crash(Driver::Systemd).await;
}

#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn cgroupfs_driver_pods_survive_restart_stop_and_crash_and_are_adopted() {
    pods_survive_restart_stop_and_crash(Driver::Cgroupfs).await;
}

const STATIC_POD: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: vmpod
  namespace: default
spec:
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 2
  containers:
  - name: app
    image: BUSYBOX
    command: ['sh', '-c', 'x=$(head -c 16m /dev/zero | tr "\\0" a); echo held; while :; do sleep 1; done']
    resources:
      requests: {cpu: 100m, memory: 32Mi}
      limits: {cpu: 500m, memory: 96Mi}
"#;

/// `berth node` as a service: a static Burstable pod under the node's cgroup tree for the
/// driver (kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice with
/// scopes, or /kubepods/burstable/pod<uid>), its pod-level limits, /stats/summary and
/// /metrics/cadvisor from the v2 files; removing the manifest removes the pod cgroup.
async fn node_static_pod(driver: Driver) {
    let svc = Service::start("berth-node.service", driver, "", &[]).await;
    let manifests = svc.manifests.clone().expect("a node");
    std::fs::write(manifests.join("vmpod.yaml"), STATIC_POD.replace("BUSYBOX", &busybox())).expect("manifest");
    let url = "https://127.0.0.1:10250";
    let get = |path: &str| run("curl", &["-sk", "--max-time", "10", &format!("{url}{path}")]);
    let start = Instant::now();
    let pod = loop {
        let pods: Value = serde_json::from_str(&get("/pods")).unwrap_or_default();
        let found = pods["items"].as_array().into_iter().flatten().find(|p| p["status"]["phase"] == "Running").cloned();
        if let Some(p) = found {
            break p;
        }
        assert!(start.elapsed() < Duration::from_secs(180), "the static pod did not run: {pods}\n{}", journal(svc.unit));
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let uid = pod["metadata"]["uid"].as_str().expect("uid").to_string();
    let cid = pod["status"]["containerStatuses"][0]["containerID"].as_str().expect("container ID").trim_start_matches("berth://").to_string();
    let pod_dir = match driver {
        Driver::Systemd => PathBuf::from(format!("{CGROUP}/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice", uid.replace('-', "_"))),
        Driver::Cgroupfs => PathBuf::from(format!("{CGROUP}/kubepods/burstable/pod{uid}")),
    };
    let dir = match driver {
        Driver::Systemd => pod_dir.join(format!("berth-{cid}.scope")),
        Driver::Cgroupfs => pod_dir.join(&cid),
    };
    assert!(dir.is_dir(), "{} ({:?})", dir.display(), std::fs::read_dir(&pod_dir).map(|r| r.flatten().map(|e| e.file_name()).collect::<Vec<_>>()));
    // The pod: the sum of its containers' limits, shares from requests, the node's pids limit.
    assert_eq!(read(pod_dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(pod_dir.join("memory.max")), (96u64 << 20).to_string());
    assert_eq!(read(pod_dir.join("cpu.weight")), weight_of(102).to_string());
    assert_eq!(read(pod_dir.join("pids.max")), "100");
    assert_eq!(read(pod_dir.join("cgroup.procs")), "");
    // The container.
    assert_eq!(read(dir.join("cpu.max")), "50000 100000");
    assert_eq!(read(dir.join("memory.max")), (96u64 << 20).to_string());
    wait_until("the container holds its memory", Duration::from_secs(60), || memory_stat(&dir, "anon") > 12 << 20).await;

    // /stats/summary and /metrics/cadvisor read the same v2 files.
    let current: u64 = read(dir.join("memory.current")).parse().unwrap();
    let expected = current.saturating_sub(memory_stat(&dir, "inactive_file"));
    let summary: Value = serde_json::from_str(&get("/stats/summary")).expect("summary JSON");
    let ps = summary["pods"].as_array().into_iter().flatten().find(|p| p["podRef"]["uid"] == uid.as_str()).expect("the pod in the summary");
    let ws = ps["containers"][0]["memory"]["workingSetBytes"].as_u64().expect("container working set");
    assert!(ws + (4 << 20) >= expected && ws <= expected + (4 << 20), "summary working set {ws} vs the cgroup's {expected}");
    // Read a moment apart (and the shell forks a sleep every second): within a few MiB.
    let pod_ws = ps["memory"]["workingSetBytes"].as_u64().unwrap_or(0);
    assert!(pod_ws + (4 << 20) >= ws, "the pod's working set {pod_ws} covers its container's {ws}");
    assert!(summary["node"]["memory"]["availableBytes"].as_u64().unwrap_or(0) > 0);
    let metrics = get("/metrics/cadvisor");
    let id = match driver {
        Driver::Systemd => format!("id=\"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/berth-{cid}.scope\"", uid.replace('-', "_")),
        Driver::Cgroupfs => format!("id=\"/kubepods/burstable/pod{uid}/{cid}\""),
    };
    let line = metrics
        .lines()
        .find(|l| l.starts_with("container_memory_working_set_bytes{") && l.contains(&id))
        .unwrap_or_else(|| panic!("no working set series with {id}"));
    let value: f64 = line.rsplit('}').next().and_then(|rest| rest.split_whitespace().next()).and_then(|v| v.parse().ok()).expect("a value");
    assert!(value >= (12u64 << 20) as f64, "{line}");
    assert!(
        metrics.lines().any(|l| l.starts_with("container_spec_memory_limit_bytes{") && l.contains(&id) && l.contains(&(96u64 << 20).to_string())),
        "memory limit series"
    );

    // The manifest goes: the pod, its containers' cgroups and the pod cgroup go.
    std::fs::remove_file(manifests.join("vmpod.yaml")).expect("remove manifest");
    wait_until("the pod cgroup goes with the pod", Duration::from_secs(90), || !pod_dir.exists()).await;
}

#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn node_static_pod_under_the_systemd_driver() {
    node_static_pod(Driver::Systemd).await;
}

#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn node_static_pod_under_the_cgroupfs_driver() {
    node_static_pod(Driver::Cgroupfs).await;
}

/// Combinations that cannot work are refused at start-up, with the reason: a node whose
/// cgroup root is no path under the systemd driver; pods whose cgroup parent is of the other
/// driver's form.
#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn mismatched_cgroup_names_are_refused_with_the_reason() {
    in_guest();
    let cfg = "/var/tmp/berth-vm-refused.toml";
    std::fs::write(cfg, "cgroup_driver = \"systemd\"\n").expect("config");
    let out = Command::new(berth_bin())
        .args(["--config", cfg, "node", "--cgroup-root", "/", "--data-dir", "/var/tmp/berth-vm-refused", "--run-dir", "/var/tmp/berth-vm-refused/run"])
        .output()
        .expect("run berth");
    let _ = std::fs::remove_dir_all("/var/tmp/berth-vm-refused");
    let _ = std::fs::remove_file(cfg);
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("--cgroup-root") && said.contains("cannot be /"), "{said}");

    let svc = Service::start("berth-runtime.service", Driver::Systemd, "", &[]).await;
    let mut rt = svc.rt().await;
    let logs = TempDir::new("vmrefused");
    let cfg = pod_config(Driver::Cgroupfs, &unique("refused"), &uid("refused"), logs.path(), false);
    let err = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(cfg), runtime_handler: String::new() }).await.expect_err("a cgroupfs parent");
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("not a systemd slice") && err.message().contains("cgroupDriver: systemd"), "{}", err.message());
}

fn mem_available() -> u64 {
    read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("MemAvailable")
        * 1024
}

/// Node-pressure eviction under the systemd driver: a memory.available threshold 160 MiB
/// below what is free now; a Burstable pod growing to 240 MiB (far over its 16Mi request)
/// crosses it and is evicted, the figure in the eviction message being its container's
/// working set as read from its scope's v2 files.
#[tokio::test]
#[ignore = "VM suite only (hack/vm/test.sh): installs and starts systemd services"]
async fn memory_pressure_evicts_by_the_v2_working_set() {
    in_guest();
    let threshold_kib = (mem_available() - (160 << 20)) / 1024;
    let config = format!("[eviction]\nhard = \"memory.available<{threshold_kib}Ki\"\nmonitoring_interval = \"1s\"\npressure_transition_period = \"30s\"\n");
    let svc = Service::start("berth-node.service", Driver::Systemd, &config, &[]).await;
    let manifests = svc.manifests.clone().expect("a node");
    let hog = r#"apiVersion: v1
kind: Pod
metadata:
  name: hog
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: hog
    image: BUSYBOX
    resources: {requests: {memory: 16Mi, cpu: 10m}}
    command: ['sh', '-c', 'sleep 2; x=$(head -c 240m /dev/zero | tr "\\0" a); echo held; while :; do sleep 1; done']
"#;
    std::fs::write(manifests.join("hog.yaml"), hog.replace("BUSYBOX", &busybox())).expect("manifest");
    let start = Instant::now();
    let pod = loop {
        let pods: Value = serde_json::from_str(&run("curl", &["-sk", "--max-time", "10", "https://127.0.0.1:10250/pods"])).unwrap_or_default();
        let found = pods["items"].as_array().into_iter().flatten().find(|p| p["status"]["reason"] == "Evicted").cloned();
        if let Some(p) = found {
            break p;
        }
        assert!(start.elapsed() < Duration::from_secs(240), "no eviction: {pods}\n{}", journal(svc.unit));
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let msg = pod["status"]["message"].as_str().expect("message");
    assert!(msg.starts_with("The node was low on resource: memory."), "{msg}");
    let used_kib: u64 = msg
        .split("Container hog was using ")
        .nth(1)
        .and_then(|rest| rest.split("Ki").next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no usage of the container in {msg:?}"));
    // Eviction comes while the string grows: somewhere past the 160 MiB that crossed the
    // threshold, in KiB (not µs, not pages, not bytes).
    assert!((140 << 10..=600 << 10).contains(&used_kib), "the container's working set as evicted: {used_kib}Ki ({msg})");
    assert!(msg.contains("request is 16384Ki"), "{msg}");
}
