//! The CRI calls and fields newer than Kubernetes 1.32, end to end against `berth runtime`:
//! UpdatePodSandboxResources on real pod cgroups, every Stream* call against its List call,
//! the stop signal of ContainerConfig, Mount.mount_options, and the checkpoint calls Berth
//! declines.
use berth::cri::v1 as cri;
use berth::cri::v1::image_service_client::ImageServiceClient;
use berth::cri::v1::runtime_service_client::RuntimeServiceClient;
use berth_integration::*;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tonic::Code;

type Rt = RuntimeServiceClient<Channel>;

fn busybox() -> String {
    format!("{}/berth/busybox:latest", test_registry())
}

static SEQ: AtomicU32 = AtomicU32::new(0);

fn unique(tag: &str) -> String {
    format!("berth-{tag}-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst))
}

async fn daemon() -> (Daemon, Rt, ImageServiceClient<Channel>) {
    let d = Daemon::start("").await;
    let mut images = d.images().await;
    pull(&mut images, &busybox()).await.expect("pull busybox");
    let rt = d.runtime().await;
    (d, rt, images)
}

fn pod_config(name: &str, logs: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "default".into(), attempt: 0 }),
        hostname: "berthpod".into(),
        log_directory: logs.display().to_string(),
        labels: HashMap::from([("app".to_string(), name.to_string())]),
        linux: Some(cri::LinuxPodSandboxConfig::default()),
        ..Default::default()
    }
}

fn container_config(name: &str, command: &[&str]) -> cri::ContainerConfig {
    cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: name.into(), attempt: 0 }),
        image: spec(&busybox()),
        command: command.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        labels: HashMap::from([("c".to_string(), name.to_string())]),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    }
}

async fn run_pod(rt: &mut Rt, config: &cri::PodSandboxConfig) -> String {
    rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(config.clone()), runtime_handler: String::new() })
        .await
        .expect("run pod sandbox")
        .into_inner()
        .pod_sandbox_id
}

async fn create(rt: &mut Rt, pod: &str, pod_cfg: &cri::PodSandboxConfig, c: cri::ContainerConfig) -> Result<String, tonic::Status> {
    rt.create_container(cri::CreateContainerRequest { pod_sandbox_id: pod.into(), config: Some(c), sandbox_config: Some(pod_cfg.clone()) })
        .await
        .map(|r| r.into_inner().container_id)
}

async fn create_and_start(rt: &mut Rt, pod: &str, pod_cfg: &cri::PodSandboxConfig, c: cri::ContainerConfig) -> String {
    let id = create(rt, pod, pod_cfg, c).await.expect("create container");
    rt.start_container(cri::StartContainerRequest { container_id: id.clone() }).await.expect("start container");
    id
}

async fn container_status(rt: &mut Rt, id: &str) -> cri::ContainerStatus {
    rt.container_status(cri::ContainerStatusRequest { container_id: id.into(), verbose: false })
        .await
        .expect("container status")
        .into_inner()
        .status
        .expect("status")
}

async fn exec(rt: &mut Rt, id: &str, cmd: &[&str]) -> (i32, String) {
    let r = rt
        .exec_sync(cri::ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 30 })
        .await
        .expect("exec sync")
        .into_inner();
    (r.exit_code, format!("{}{}", String::from_utf8_lossy(&r.stdout), String::from_utf8_lossy(&r.stderr)))
}

async fn remove_pod(rt: &mut Rt, id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("stop pod");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("remove pod");
}

/// The pod cgroup's path (cgroupfs), from PodSandboxStatus's verbose info.
async fn pod_cgroup(rt: &mut Rt, pod: &str) -> String {
    let r = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.into(), verbose: true }).await.expect("pod status").into_inner();
    let info: serde_json::Value = serde_json::from_str(&r.info["info"]).expect("info json");
    info["cgroupParent"].as_str().expect("cgroupParent").to_string()
}

fn cgroup_value(controller: &str, cgroup: &str, file: &str) -> String {
    let path = format!("/sys/fs/cgroup/{controller}/{}/{file}", cgroup.trim_start_matches('/'));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}")).trim().to_string()
}

/// A cgroup the test names as a pod's cgroup parent: removed when the test ends, also on failure.
struct CgroupGuard(String);

impl Drop for CgroupGuard {
    fn drop(&mut self) {
        remove_cgroup_tree(&self.0);
    }
}

#[tokio::test]
async fn update_pod_sandbox_resources_sizes_the_pod_cgroup() {
    let (_d, mut rt, _) = daemon().await;
    let logs = TempDir::new("podres");
    // A pod in Berth's own cgroup; one under a parent the caller names (as the kubelet does);
    // one with a PID namespace per container, whose pod cgroup waits for the first container.
    let parent = CgroupGuard(format!("/berth-it-podres-{}-{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst)));
    for (cgroup_parent, per_container_pid) in [(String::new(), false), (parent.0.clone(), false), (String::new(), true)] {
        let mut cfg = pod_config(&unique("podres"), logs.path());
        cfg.linux.as_mut().unwrap().cgroup_parent = cgroup_parent.clone();
        let per_container = cri::NamespaceOption { pid: cri::NamespaceMode::Container as i32, ..Default::default() };
        if per_container_pid {
            let sc = cri::LinuxSandboxSecurityContext { namespace_options: Some(per_container.clone()), ..Default::default() };
            cfg.linux.as_mut().unwrap().security_context = Some(sc);
        }
        let pod = run_pod(&mut rt, &cfg).await;
        let cg = pod_cgroup(&mut rt, &pod).await;
        if !cgroup_parent.is_empty() {
            assert_eq!(cg, cgroup_parent);
        }

        let res = |shares, quota, memory| cri::LinuxContainerResources {
            cpu_period: 100_000,
            cpu_shares: shares,
            cpu_quota: quota,
            memory_limit_in_bytes: memory,
            ..Default::default()
        };
        rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.clone(),
            overhead: Some(res(102, 10_000, 32 << 20)),
            resources: Some(res(512, 50_000, 128 << 20)),
        })
        .await
        .expect("update pod sandbox resources");
        assert_eq!(cgroup_value("cpu", &cg, "cpu.shares"), "614", "{cg}: containers' 512 + overhead 102");
        assert_eq!(cgroup_value("cpu", &cg, "cpu.cfs_quota_us"), "60000");
        assert_eq!(cgroup_value("cpu", &cg, "cpu.cfs_period_us"), "100000");
        assert_eq!(cgroup_value("memory", &cg, "memory.limit_in_bytes"), (160u64 << 20).to_string());
        let mut c = container_config("sleeper", &["sleep", "3600"]);
        if per_container_pid {
            let sc = cri::LinuxContainerSecurityContext { namespace_options: Some(per_container), ..Default::default() };
            c.linux.as_mut().unwrap().security_context = Some(sc);
        }
        let cid = create_and_start(&mut rt, &pod, &cfg, c).await;
        assert_eq!(cgroup_value("memory", &cg, "memory.limit_in_bytes"), (160u64 << 20).to_string(), "a container start keeps the pod limit");

        // A resize down, and the containers keep their devices (the pod's device rules untouched).
        rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest {
            pod_sandbox_id: pod.clone(),
            overhead: None,
            resources: Some(res(256, 20_000, 96 << 20)),
        })
        .await
        .expect("resize down");
        assert_eq!(cgroup_value("cpu", &cg, "cpu.shares"), "256");
        assert_eq!(cgroup_value("cpu", &cg, "cpu.cfs_quota_us"), "20000");
        assert_eq!(cgroup_value("memory", &cg, "memory.limit_in_bytes"), (96u64 << 20).to_string());
        let (code, out) = exec(&mut rt, &cid, &["sh", "-c", "echo x > /dev/null && head -c 4 /dev/zero | wc -c"]).await;
        assert_eq!((code, out.trim()), (0, "4"), "devices after the update: {out}");
        let devices = std::fs::read_to_string(format!("/sys/fs/cgroup/devices/{}/devices.list", cg.trim_start_matches('/'))).unwrap();
        assert!(devices.lines().any(|l| l == "a *:* rwm"), "the pod cgroup still allows all devices: {devices}");
        remove_pod(&mut rt, &pod).await;
        if cgroup_parent.is_empty() {
            // Berth's own pod cgroup is gone from every hierarchy (name=systemd included).
            let left: Vec<_> =
                std::fs::read_dir("/sys/fs/cgroup").unwrap().flatten().map(|h| h.path().join(cg.trim_start_matches('/'))).filter(|p| p.exists()).collect();
            assert!(left.is_empty(), "pod cgroup left in {left:?}");
        }
    }

    let err =
        rt.update_pod_sandbox_resources(cri::UpdatePodSandboxResourcesRequest { pod_sandbox_id: "nosuchpod".into(), ..Default::default() }).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");
    assert!(err.message().contains("\"nosuchpod\" not found"), "{}", err.message());
}

/// Every message of a Stream* call, checked to hold at least one item.
async fn collect<T, I>(stream: Result<tonic::Response<tonic::Streaming<T>>, tonic::Status>, items: impl Fn(T) -> Vec<I>) -> Vec<I> {
    let mut stream = stream.expect("stream call").into_inner();
    let mut all = Vec::new();
    while let Some(msg) = stream.message().await.expect("stream message") {
        let got = items(msg);
        assert!(!got.is_empty(), "a stream message without items");
        all.extend(got);
    }
    all
}

fn sorted_by<T: Clone, K: Ord>(items: &[T], key: impl Fn(&T) -> K) -> Vec<T> {
    let mut v = items.to_vec();
    v.sort_by_key(|i| key(i));
    v
}

fn unique_ids(ids: impl IntoIterator<Item = String>) -> HashSet<String> {
    let mut seen = HashSet::new();
    for id in ids {
        assert!(seen.insert(id.clone()), "{id} streamed twice");
    }
    seen
}

#[tokio::test]
async fn stream_calls_return_what_the_list_calls_return() {
    let (_d, mut rt, mut images) = daemon().await;
    let logs = TempDir::new("streams");
    let mut pods = vec![];
    for i in 0..3 {
        let cfg = pod_config(&unique(&format!("stream{i}")), logs.path());
        let pod = run_pod(&mut rt, &cfg).await;
        create_and_start(&mut rt, &pod, &cfg, container_config(&format!("c{i}"), &["sleep", "3600"])).await;
        pods.push((pod, cfg));
    }
    let second = &pods[1];
    let label = HashMap::from([("app".to_string(), second.1.metadata.as_ref().unwrap().name.clone())]);

    // Pod sandboxes: all, by label, by a filter nothing matches (no message at all).
    for filter in [
        None,
        Some(cri::PodSandboxFilter { label_selector: label.clone(), ..Default::default() }),
        Some(cri::PodSandboxFilter { id: "nomatch".into(), ..Default::default() }),
    ] {
        let listed = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: filter.clone() }).await.unwrap().into_inner().items;
        let streamed = collect(rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest { filter: filter.clone() }).await, |m| m.pod_sandboxes).await;
        unique_ids(streamed.iter().map(|p| p.id.clone()));
        assert_eq!(sorted_by(&streamed, |p| p.id.clone()), sorted_by(&listed, |p| p.id.clone()), "filter {filter:?}");
    }
    let all_pods = collect(rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest { filter: None }).await, |m| m.pod_sandboxes).await;
    assert_eq!(all_pods.len(), 3);

    // Containers: all, and those of one pod.
    for filter in [None, Some(cri::ContainerFilter { pod_sandbox_id: second.0.clone(), ..Default::default() })] {
        let listed = rt.list_containers(cri::ListContainersRequest { filter: filter.clone() }).await.unwrap().into_inner().containers;
        let streamed = collect(rt.stream_containers(cri::StreamContainersRequest { filter: filter.clone() }).await, |m| m.containers).await;
        unique_ids(streamed.iter().map(|c| c.id.clone()));
        assert_eq!(sorted_by(&streamed, |c| c.id.clone()), sorted_by(&listed, |c| c.id.clone()), "filter {filter:?}");
    }

    // Stats move between two calls: the same objects, with their attributes.
    for filter in [None, Some(cri::ContainerStatsFilter { pod_sandbox_id: second.0.clone(), ..Default::default() })] {
        let listed = rt.list_container_stats(cri::ListContainerStatsRequest { filter: filter.clone() }).await.unwrap().into_inner().stats;
        let streamed = collect(rt.stream_container_stats(cri::StreamContainerStatsRequest { filter: filter.clone() }).await, |m| m.container_stats).await;
        let attrs = |s: &[cri::ContainerStats]| sorted_by(&s.iter().map(|s| s.attributes.clone().unwrap()).collect::<Vec<_>>(), |a| a.id.clone());
        unique_ids(streamed.iter().map(|s| s.attributes.as_ref().unwrap().id.clone()));
        assert_eq!(attrs(&streamed), attrs(&listed), "filter {filter:?}");
        assert!(streamed.iter().all(|s| s.cpu.is_some() && s.memory.is_some()));
    }
    assert_eq!(collect(rt.stream_container_stats(cri::StreamContainerStatsRequest::default()).await, |m| m.container_stats).await.len(), 3);

    for filter in [None, Some(cri::PodSandboxStatsFilter { label_selector: label.clone(), ..Default::default() })] {
        let listed = rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: filter.clone() }).await.unwrap().into_inner().stats;
        let streamed = collect(rt.stream_pod_sandbox_stats(cri::StreamPodSandboxStatsRequest { filter: filter.clone() }).await, |m| m.pod_sandbox_stats).await;
        let attrs = |s: &[cri::PodSandboxStats]| sorted_by(&s.iter().map(|s| s.attributes.clone().unwrap()).collect::<Vec<_>>(), |a| a.id.clone());
        unique_ids(streamed.iter().map(|s| s.attributes.as_ref().unwrap().id.clone()));
        assert_eq!(attrs(&streamed), attrs(&listed), "filter {filter:?}");
        let containers = |s: &[cri::PodSandboxStats]| {
            let mut ids: Vec<String> = s.iter().flat_map(|p| p.linux.clone().unwrap().containers).map(|c| c.attributes.unwrap().id).collect();
            ids.sort();
            ids
        };
        assert_eq!(containers(&streamed), containers(&listed));
    }

    let listed = rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}).await.unwrap().into_inner().pod_metrics;
    let streamed = collect(rt.stream_pod_sandbox_metrics(cri::StreamPodSandboxMetricsRequest {}).await, |m| m.pod_sandbox_metrics).await;
    let shape = |m: &[cri::PodSandboxMetrics]| {
        let mut v: Vec<(String, Vec<String>, usize)> = m
            .iter()
            .map(|p| {
                let mut names: Vec<String> = p.metrics.iter().map(|m| m.name.clone()).collect();
                names.sort();
                (p.pod_sandbox_id.clone(), names, p.container_metrics.len())
            })
            .collect();
        v.sort();
        v
    };
    unique_ids(streamed.iter().map(|p| p.pod_sandbox_id.clone()));
    assert_eq!(shape(&streamed), shape(&listed));
    assert_eq!(streamed.len(), 3);

    // Images do not move: equal as they are.
    for filter in [None, Some(cri::ImageFilter { image: spec(&busybox()) }), Some(cri::ImageFilter { image: spec("berth/none:never") })] {
        let listed = images.list_images(cri::ListImagesRequest { filter: filter.clone() }).await.unwrap().into_inner().images;
        let streamed = collect(images.stream_images(cri::StreamImagesRequest { filter: filter.clone() }).await, |m| m.images).await;
        assert_eq!(sorted_by(&streamed, |i| i.id.clone()), sorted_by(&listed, |i| i.id.clone()), "filter {filter:?}");
    }
    assert!(!collect(images.stream_images(cri::StreamImagesRequest::default()).await, |m| m.images).await.is_empty());

    for (pod, _) in &pods {
        remove_pod(&mut rt, pod).await;
    }
    assert!(collect(rt.stream_pod_sandboxes(cri::StreamPodSandboxesRequest::default()).await, |m| m.pod_sandboxes).await.is_empty());
}

#[tokio::test]
async fn the_configured_stop_signal_stops_the_container_and_is_reported() {
    let (_d, mut rt, _) = daemon().await;
    let logs = TempDir::new("stopsig");
    let cfg = pod_config(&unique("stopsig"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    // The shell ignores SIGTERM: only the configured SIGUSR1 ends it within the grace period.
    let script = "trap '' TERM; trap 'echo got-usr1; exit 0' USR1; echo ready; while true; do sleep 0.1; done";
    let mut c = container_config("usr1", &["sh", "-c", script]);
    c.stop_signal = cri::Signal::Sigusr1 as i32;
    let id = create_and_start(&mut rt, &pod, &cfg, c).await;
    let default = create_and_start(&mut rt, &pod, &cfg, container_config("plain", &["sleep", "3600"])).await;
    assert_eq!(container_status(&mut rt, &id).await.stop_signal, cri::Signal::Sigusr1 as i32);
    assert_eq!(container_status(&mut rt, &default).await.stop_signal, cri::Signal::Sigterm as i32, "busybox has no STOPSIGNAL");
    let log = logs.path().join("usr1.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("ready") {
        assert!(Instant::now() < deadline, "the container never got ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let start = Instant::now();
    rt.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 30 }).await.expect("stop");
    assert!(start.elapsed() < Duration::from_secs(20), "stopped by SIGUSR1, not by the kill after the grace period");
    let st = container_status(&mut rt, &id).await;
    assert_eq!((st.state, st.exit_code), (cri::ContainerState::ContainerExited as i32, 0), "{st:?}");
    assert!(std::fs::read_to_string(&log).unwrap().contains("got-usr1"));
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test]
async fn mount_options_reach_the_bind_mount() {
    let (_d, mut rt, _) = daemon().await;
    let st = rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
    let features = st.features.unwrap();
    assert!(features.mount_options && !features.user_namespaces_host_network, "{features:?}");
    let logs = TempDir::new("mntopts");
    let vol = TempDir::new("mntopts-vol");
    let cfg = pod_config(&unique("mntopts"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    let mount = |options: &[&str]| cri::Mount {
        container_path: "/vol".into(),
        host_path: vol.path().display().to_string(),
        mount_options: options.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let mut c = container_config("opts", &["sleep", "3600"]);
    c.mounts = vec![mount(&["noexec", "nodev", "nosuid"])];
    let id = create_and_start(&mut rt, &pod, &cfg, c).await;
    let (_, mountinfo) = exec(&mut rt, &id, &["cat", "/proc/self/mountinfo"]).await;
    let line = mountinfo.lines().find(|l| l.split(' ').nth(4) == Some("/vol")).unwrap_or_else(|| panic!("no /vol in {mountinfo}"));
    let opts: HashSet<&str> = line.split(' ').nth(5).unwrap().split(',').collect();
    for want in ["rw", "noexec", "nodev", "nosuid"] {
        assert!(opts.contains(want), "{want} missing: {line}");
    }
    std::fs::write(vol.path().join("run.sh"), "#!/bin/sh\necho ran\n").unwrap();
    std::fs::set_permissions(vol.path().join("run.sh"), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (code, out) = exec(&mut rt, &id, &["/vol/run.sh"]).await;
    assert_ne!(code, 0, "noexec lets nothing run: {out}");

    let mut bad = container_config("bad", &["true"]);
    bad.mounts = vec![mount(&["ro"])];
    let err = create(&mut rt, &pod, &cfg, bad).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("mounts[0].mount_options[0]"), "{}", err.message());
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test]
async fn checkpoint_and_restore_are_declined_with_the_reason() {
    let (_d, mut rt, _) = daemon().await;
    let errs = [
        rt.checkpoint_container(cri::CheckpointContainerRequest::default()).await.unwrap_err(),
        rt.checkpoint_pod(cri::CheckpointPodRequest::default()).await.unwrap_err(),
        rt.restore_pod(cri::RestorePodRequest::default()).await.unwrap_err(),
    ];
    for e in errs {
        assert_eq!((e.code(), e.message()), (Code::Unimplemented, "checkpointing is not supported by berth"));
    }
    let cfg = rt.runtime_config(cri::RuntimeConfigRequest {}).await.unwrap().into_inner();
    assert_eq!(cfg.linux.unwrap().cgroup_driver, cri::CgroupDriver::Cgroupfs as i32);
}
