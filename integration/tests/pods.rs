//! CRI RuntimeService end to end: real pods and containers run by the real daemon on this
//! machine's namespaces, overlayfs and cgroups, with images from the local registry.
use berth::cri::v1 as cri;
use berth::cri::v1::runtime_service_client::RuntimeServiceClient;
use berth_integration::*;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
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

/// A daemon with busybox pulled.
async fn daemon() -> (Daemon, Rt) {
    let d = Daemon::start("").await;
    let mut images = d.images().await;
    pull(&mut images, &busybox()).await.expect("pull busybox");
    let rt = d.runtime().await;
    (d, rt)
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

fn with_security(mut c: cri::ContainerConfig, sc: cri::LinuxContainerSecurityContext) -> cri::ContainerConfig {
    c.linux.get_or_insert_with(Default::default).security_context = Some(sc);
    c
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

async fn status(rt: &mut Rt, id: &str) -> (cri::ContainerStatus, serde_json::Value) {
    let r = rt.container_status(cri::ContainerStatusRequest { container_id: id.into(), verbose: true }).await.expect("container status").into_inner();
    let info = r.info.get("info").map(|s| serde_json::from_str(s).expect("info json")).unwrap_or_default();
    (r.status.expect("status"), info)
}

async fn wait_exited(rt: &mut Rt, id: &str, limit: Duration) -> cri::ContainerStatus {
    let start = Instant::now();
    loop {
        let (st, _) = status(rt, id).await;
        if st.state == cri::ContainerState::ContainerExited as i32 {
            return st;
        }
        assert!(start.elapsed() < limit, "container {id} did not exit within {limit:?}: {st:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn exec(rt: &mut Rt, id: &str, cmd: &[&str]) -> (i32, String, String) {
    let r = rt
        .exec_sync(cri::ExecSyncRequest { container_id: id.into(), cmd: cmd.iter().map(|s| s.to_string()).collect(), timeout: 30 })
        .await
        .expect("exec sync")
        .into_inner();
    (r.exit_code, String::from_utf8_lossy(&r.stdout).to_string(), String::from_utf8_lossy(&r.stderr).to_string())
}

/// Run a container to completion and return its log's content lines (stdout and stderr).
async fn run_to_end(rt: &mut Rt, pod: &str, pod_cfg: &cri::PodSandboxConfig, logs: &Path, c: cri::ContainerConfig) -> (cri::ContainerStatus, Vec<String>) {
    let name = c.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    let id = create_and_start(rt, pod, pod_cfg, c).await;
    let st = wait_exited(rt, &id, Duration::from_secs(30)).await;
    let lines = log_entries(&logs.join(format!("{name}.log"))).into_iter().map(|e| e.3).collect();
    (st, lines)
}

/// (timestamp, stream, tag, content) of every entry in a CRI log file.
fn log_entries(path: &Path) -> Vec<(String, String, String, String)> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap_or_default().to_string();
            let stream = parts.next().unwrap_or_default().to_string();
            let tag = parts.next().unwrap_or_default().to_string();
            (ts, stream, tag, parts.next().unwrap_or_default().to_string())
        })
        .collect()
}

async fn remove_pod(rt: &mut Rt, id: &str) {
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("stop pod");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: id.into() }).await.expect("remove pod");
}

/// The process's cgroup path in a v1 controller's hierarchy.
fn cgroup_of(pid: i32, controller: &str) -> String {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("proc cgroup");
    cg.lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let _ = f.next();
            let ctrls = f.next()?;
            let p = f.next()?;
            ctrls.split(',').any(|c| c == controller).then(|| p.to_string())
        })
        .unwrap_or_else(|| panic!("no {controller} cgroup in {cg}"))
}

fn cgroup_file(pid: i32, controller: &str, file: &str) -> String {
    let path = cgroup_of(pid, controller);
    std::fs::read_to_string(format!("/sys/fs/cgroup/{controller}{path}/{file}")).expect("cgroup file").trim().to_string()
}

#[tokio::test]
async fn pod_and_container_lifecycle() {
    let (d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let name = unique("life");
    let cfg = pod_config(&name, logs.path());
    let pod = run_pod(&mut rt, &cfg).await;

    let ps = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: true }).await.unwrap().into_inner();
    let st = ps.status.unwrap();
    assert_eq!(st.state, cri::PodSandboxState::SandboxReady as i32);
    assert!(st.created_at > 0);
    assert_eq!(st.metadata.unwrap().name, name);
    let info: serde_json::Value = serde_json::from_str(&ps.info["info"]).unwrap();
    let netns = PathBuf::from(info["netns"].as_str().expect("netns path"));
    assert!(netns.exists());

    // Filters: by ID prefix, by state, by label.
    let list = |f: cri::PodSandboxFilter| cri::ListPodSandboxRequest { filter: Some(f) };
    let by_id = rt.list_pod_sandbox(list(cri::PodSandboxFilter { id: pod[..12].into(), ..Default::default() })).await.unwrap().into_inner().items;
    assert_eq!(by_id.len(), 1);
    let by_label = rt
        .list_pod_sandbox(list(cri::PodSandboxFilter { label_selector: HashMap::from([("app".into(), name.clone())]), ..Default::default() }))
        .await
        .unwrap()
        .into_inner()
        .items;
    assert_eq!(by_label.len(), 1);
    let not_ready = cri::PodSandboxStateValue { state: cri::PodSandboxState::SandboxNotready as i32 };
    let none = rt.list_pod_sandbox(list(cri::PodSandboxFilter { state: Some(not_ready), ..Default::default() })).await.unwrap().into_inner().items;
    assert!(none.is_empty());

    let c = container_config("main", &["sh", "-c", "echo started; hostname; exec sleep 3600"]);
    let cid = create(&mut rt, &pod, &cfg, c).await.unwrap();
    let (st, _) = status(&mut rt, &cid).await;
    assert_eq!(st.state, cri::ContainerState::ContainerCreated as i32);
    rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }).await.unwrap();
    let (st, info) = status(&mut rt, &cid).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    assert!(st.started_at >= st.created_at && st.created_at > 0);
    assert!(info["pid"].as_i64().unwrap() > 0);
    assert_eq!(info["runtimeSpec"]["process"]["args"][0], "sh");

    let running = cri::ContainerStateValue { state: cri::ContainerState::ContainerRunning as i32 };
    let listed = rt
        .list_containers(cri::ListContainersRequest {
            filter: Some(cri::ContainerFilter { pod_sandbox_id: pod.clone(), state: Some(running), ..Default::default() }),
        })
        .await
        .unwrap()
        .into_inner()
        .containers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, cid);

    let (code, out, _) = exec(&mut rt, &cid, &["echo", "hi"]).await;
    assert_eq!((code, out.as_str()), (0, "hi\n"));
    let (code, _, err) = exec(&mut rt, &cid, &["sh", "-c", "echo oops >&2; exit 3"]).await;
    assert_eq!((code, err.as_str()), (3, "oops\n"));
    let (_, host, _) = exec(&mut rt, &cid, &["hostname"]).await;
    assert_eq!(host.trim(), "berthpod");
    let (_, lo, _) = exec(&mut rt, &cid, &["cat", "/sys/class/net/lo/operstate"]).await;
    assert_ne!(lo.trim(), "down", "loopback is up in the pod");

    // ExecSync honours its timeout and kills what it started.
    let started = Instant::now();
    let r = rt.exec_sync(cri::ExecSyncRequest { container_id: cid.clone(), cmd: vec!["sleep".into(), "60".into()], timeout: 1 }).await;
    assert!(started.elapsed() < Duration::from_secs(20));
    if let Ok(r) = r {
        assert_ne!(r.into_inner().exit_code, 0);
    }

    // Stats for the container and the pod.
    let cs = rt.container_stats(cri::ContainerStatsRequest { container_id: cid.clone() }).await.unwrap().into_inner().stats.unwrap();
    assert!(cs.memory.unwrap().working_set_bytes.unwrap().value > 0);
    assert!(cs.cpu.unwrap().usage_core_nano_seconds.unwrap().value > 0);
    let ps = rt.pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: pod.clone() }).await.unwrap().into_inner().stats.unwrap();
    let linux = ps.linux.unwrap();
    assert!(linux.process.unwrap().process_count.unwrap().value >= 1);
    assert!(linux.network.is_some(), "network counters from the pod's netns");
    assert_eq!(linux.containers.len(), 1);

    // A graceful stop: the shell traps TERM.
    let graceful = container_config("graceful", &["sh", "-c", "trap 'exit 0' TERM; echo trapped; while true; do sleep 0.1; done"]);
    let gid = create_and_start(&mut rt, &pod, &cfg, graceful).await;
    let graceful_log = logs.path().join("graceful.log");
    wait_until("the shell has set its TERM trap", Duration::from_secs(20), async || log_entries(&graceful_log).iter().any(|e| e.3 == "trapped")).await;
    rt.stop_container(cri::StopContainerRequest { container_id: gid.clone(), timeout: 10 }).await.unwrap();
    let (st, _) = status(&mut rt, &gid).await;
    assert_eq!((st.state, st.exit_code, st.reason.as_str()), (cri::ContainerState::ContainerExited as i32, 0, "Completed"));
    assert!(st.finished_at >= st.started_at);

    rt.stop_container(cri::StopContainerRequest { container_id: cid.clone(), timeout: 1 }).await.unwrap();
    let (st, _) = status(&mut rt, &cid).await;
    assert_eq!(st.state, cri::ContainerState::ContainerExited as i32);
    rt.remove_container(cri::RemoveContainerRequest { container_id: cid.clone() }).await.unwrap();
    let gone = rt.container_status(cri::ContainerStatusRequest { container_id: cid.clone(), verbose: false }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    let st = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false }).await.unwrap().into_inner();
    assert_eq!(st.status.unwrap().state, cri::PodSandboxState::SandboxNotready as i32);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
    let gone = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false }).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);
    assert!(!netns.exists(), "the netns file is gone");
    drop(d);
}

#[tokio::test]
async fn security_context_matrix() {
    let (_d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("sec"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    let id = |v: i64| Some(cri::Int64Value { value: v });

    // uid, gid, supplemental groups, env, working dir.
    let mut c = container_config("ids", &["sh", "-c", "echo $FOO; pwd; id -u; id -g; id -G"]);
    c.envs = vec![cri::KeyValue { key: "FOO".into(), value: "bar".into() }];
    c.working_dir = "/tmp/work".into();
    let c = with_security(
        c,
        cri::LinuxContainerSecurityContext { run_as_user: id(1234), run_as_group: id(5678), supplemental_groups: vec![4000], ..Default::default() },
    );
    let (st, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), c).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert_eq!(lines[..4], ["bar", "/tmp/work", "1234", "5678"]);
    assert!(lines[4].split(' ').any(|g| g == "4000"), "{lines:?}");

    // A user name from the image's /etc/passwd.
    let c =
        with_security(container_config("named", &["id", "-u"]), cri::LinuxContainerSecurityContext { run_as_username: "nobody".into(), ..Default::default() });
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), c).await;
    assert_eq!(lines, ["65534"]);

    let cap_eff = |lines: &[String]| u64::from_str_radix(lines.iter().find_map(|l| l.strip_prefix("CapEff:")).expect("CapEff").trim(), 16).unwrap();
    const SYS_ADMIN: u64 = 1 << 21;
    let grep_caps = ["grep", "Cap", "/proc/self/status"];
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), container_config("defcaps", &grep_caps)).await;
    let default = cap_eff(&lines);
    assert_eq!(default & SYS_ADMIN, 0);
    assert_ne!(default & (1 << 0), 0, "CAP_CHOWN is a default");
    let caps = |add: &[&str], drop: &[&str]| cri::LinuxContainerSecurityContext {
        capabilities: Some(cri::Capability {
            add_capabilities: add.iter().map(|s| s.to_string()).collect(),
            drop_capabilities: drop.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), with_security(container_config("addcap", &grep_caps), caps(&["SYS_ADMIN"], &[]))).await;
    assert_ne!(cap_eff(&lines) & SYS_ADMIN, 0);
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), with_security(container_config("dropall", &grep_caps), caps(&[], &["ALL"]))).await;
    assert_eq!(cap_eff(&lines), 0);
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), with_security(container_config("dropchown", &grep_caps), caps(&[], &["CHOWN"]))).await;
    assert_eq!(cap_eff(&lines), default & !1);

    // Read-only rootfs.
    let c = with_security(
        container_config("rofs", &["sh", "-c", "touch /x && echo wrote || echo refused"]),
        cri::LinuxContainerSecurityContext { readonly_rootfs: true, ..Default::default() },
    );
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), c).await;
    assert!(lines.contains(&"refused".to_string()), "{lines:?}");

    // Privileged: every capability the host gives, host devices, writable /sys.
    let c = with_security(
        container_config("priv", &["sh", "-c", "grep CapEff /proc/self/status; ls /dev | wc -l"]),
        cri::LinuxContainerSecurityContext { privileged: true, ..Default::default() },
    );
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), c).await;
    assert_ne!(cap_eff(&lines) & SYS_ADMIN, 0);
    let devs: usize = lines.last().unwrap().trim().parse().unwrap();
    assert!(devs > 20, "privileged containers see the host's devices: {devs}");

    // no_new_privs.
    let c = with_security(
        container_config("nnp", &["grep", "NoNewPrivs", "/proc/self/status"]),
        cri::LinuxContainerSecurityContext { no_new_privs: true, ..Default::default() },
    );
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), c).await;
    assert!(lines[0].ends_with('1'), "{lines:?}");

    // seccomp RuntimeDefault: the filter is in place (Seccomp: 2) and unshare is refused;
    // Unconfined with CAP_SYS_ADMIN has no filter and unshare works.
    let profile = |t: cri::security_profile::ProfileType| Some(cri::SecurityProfile { profile_type: t as i32, localhost_ref: String::new() });
    let script = "grep Seccomp: /proc/self/status; unshare -u true && echo unshare-allowed || echo unshare-blocked";
    let mut sc = caps(&[], &[]);
    sc.seccomp = profile(cri::security_profile::ProfileType::RuntimeDefault);
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), with_security(container_config("seccomp-default", &["sh", "-c", script]), sc)).await;
    assert!(lines[0].ends_with('2'), "{lines:?}");
    assert!(lines.contains(&"unshare-blocked".to_string()), "{lines:?}");
    let mut sc = caps(&["SYS_ADMIN"], &[]);
    sc.seccomp = profile(cri::security_profile::ProfileType::Unconfined);
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), with_security(container_config("seccomp-unconfined", &["sh", "-c", script]), sc)).await;
    assert!(lines[0].ends_with('0'), "{lines:?}");
    assert!(lines.contains(&"unshare-allowed".to_string()), "{lines:?}");

    // seccomp Localhost: a profile that refuses mkdir.
    let dir = TempDir::new("seccomp");
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir","mkdirat"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#)
        .unwrap();
    let sc = cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: profile.display().to_string(),
        }),
        ..Default::default()
    };
    let c = with_security(container_config("seccomp-local", &["sh", "-c", "mkdir /tmp/x 2>&1; touch /tmp/y && echo touched"]), sc);
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), c).await;
    assert!(lines.iter().any(|l| l.contains("Operation not permitted")), "{lines:?}");
    assert!(lines.contains(&"touched".to_string()), "{lines:?}");

    remove_pod(&mut rt, &pod).await;
}

#[tokio::test]
async fn resources_reach_the_cgroup_and_oom_is_reported() {
    let (_d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    // Namespaces as the kubelet asks for them: PID per container, so the pod's namespaces are
    // made from a thread and its cgroup appears with the first container.
    let mut cfg = pod_config(&unique("res"), logs.path());
    let per_container = cri::NamespaceOption { pid: cri::NamespaceMode::Container as i32, ..Default::default() };
    cfg.linux.as_mut().unwrap().security_context =
        Some(cri::LinuxSandboxSecurityContext { namespace_options: Some(per_container.clone()), ..Default::default() });
    let pod = run_pod(&mut rt, &cfg).await;
    let mut c = with_security(
        container_config("limited", &["sleep", "3600"]),
        cri::LinuxContainerSecurityContext { namespace_options: Some(per_container), ..Default::default() },
    );
    c.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources {
        memory_limit_in_bytes: 64 << 20,
        cpu_shares: 512,
        cpu_quota: 50_000,
        cpu_period: 100_000,
        cpuset_cpus: "0".into(),
        ..Default::default()
    });
    let cid = create_and_start(&mut rt, &pod, &cfg, c).await;
    let pid = status(&mut rt, &cid).await.1["pid"].as_i64().unwrap() as i32;
    assert_eq!(cgroup_file(pid, "memory", "memory.limit_in_bytes"), (64u64 << 20).to_string());
    assert_eq!(cgroup_file(pid, "cpu", "cpu.shares"), "512");
    assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(cgroup_file(pid, "cpu", "cpu.cfs_period_us"), "100000");
    assert_eq!(cgroup_file(pid, "cpuset", "cpuset.cpus"), "0");
    let (_, ps, _) = exec(&mut rt, &cid, &["ps", "-o", "pid,args"]).await;
    assert!(ps.lines().nth(1).unwrap_or_default().trim().starts_with("1 sleep"), "the container is PID 1 of its own namespace: {ps}");
    let (_, hostname, _) = exec(&mut rt, &cid, &["hostname"]).await;
    assert_eq!(hostname.trim(), "berthpod");

    rt.update_container_resources(cri::UpdateContainerResourcesRequest {
        container_id: cid.clone(),
        linux: Some(cri::LinuxContainerResources { memory_limit_in_bytes: 128 << 20, cpu_shares: 256, ..Default::default() }),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(cgroup_file(pid, "memory", "memory.limit_in_bytes"), (128u64 << 20).to_string());
    assert_eq!(cgroup_file(pid, "cpu", "cpu.shares"), "256");
    let (st, info) = status(&mut rt, &cid).await;
    assert_eq!(st.resources.unwrap().linux.unwrap().memory_limit_in_bytes, 128 << 20);
    assert_eq!(info["runtimeSpec"]["linux"]["resources"]["memory"]["limit"], 128 << 20);

    let mut hog = container_config("hog", &["sh", "-c", "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done"]);
    hog.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources { memory_limit_in_bytes: 32 << 20, ..Default::default() });
    let hid = create_and_start(&mut rt, &pod, &cfg, hog).await;
    let st = wait_exited(&mut rt, &hid, Duration::from_secs(60)).await;
    assert_eq!(st.reason, "OOMKilled", "{st:?}");
    assert_eq!(st.exit_code, 137);
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test]
async fn logs_use_the_cri_format_and_follow_reopen() {
    let (_d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("logs"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    let c = container_config("talk", &["sh", "-c", "echo out; echo err >&2; head -c 40000 /dev/zero | tr '\\0' a; echo; printf tail"]);
    let cid = create_and_start(&mut rt, &pod, &cfg, c).await;
    wait_exited(&mut rt, &cid, Duration::from_secs(30)).await;
    let entries = log_entries(&logs.path().join("talk.log"));
    for (ts, stream, tag, _) in &entries {
        assert!(ts.ends_with('Z') && ts.contains('T') && ts.len() >= 20, "RFC 3339 timestamp: {ts}");
        assert!(stream == "stdout" || stream == "stderr");
        assert!(tag == "F" || tag == "P");
    }
    assert!(entries.iter().any(|e| e.1 == "stdout" && e.3 == "out" && e.2 == "F"));
    assert!(entries.iter().any(|e| e.1 == "stderr" && e.3 == "err" && e.2 == "F"));
    let long: Vec<&(String, String, String, String)> = entries.iter().filter(|e| e.3.starts_with('a')).collect();
    assert!(long.len() >= 3, "a 40000-byte line is split: {}", long.len());
    assert!(long[..long.len() - 1].iter().all(|e| e.2 == "P"));
    assert_eq!(long.last().unwrap().2, "F");
    let joined: String = long.iter().map(|e| e.3.as_str()).collect();
    assert_eq!(joined, "a".repeat(40000));
    assert_eq!(entries.last().unwrap().3, "tail");

    // Rotation: move the file away, ask for a reopen, new lines land in a new file.
    let c = container_config("ticker", &["sh", "-c", "i=0; while true; do echo tick$i; i=$((i+1)); sleep 0.1; done"]);
    let tid = create_and_start(&mut rt, &pod, &cfg, c).await;
    let path = logs.path().join("ticker.log");
    wait_until("the ticker has logged", Duration::from_secs(20), async || log_entries(&path).len() >= 3).await;
    std::fs::rename(&path, logs.path().join("ticker.log.1")).unwrap();
    rt.reopen_container_log(cri::ReopenContainerLogRequest { container_id: tid.clone() }).await.unwrap();
    assert!(path.exists());
    wait_until("ticks land in the reopened file", Duration::from_secs(20), async || !log_entries(&path).is_empty()).await;
    let fresh = log_entries(&path);
    assert!(!fresh.is_empty() && fresh.iter().all(|e| e.3.starts_with("tick")));
    let old = log_entries(&logs.path().join("ticker.log.1"));
    let n = |e: &(String, String, String, String)| e.3.trim_start_matches("tick").parse::<u32>().unwrap();
    assert_eq!(n(&fresh[0]), n(old.last().unwrap()) + 1, "no line lost across the reopen");
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test]
async fn containers_survive_a_daemon_kill9() {
    let (mut d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("kill9"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    let long = create_and_start(&mut rt, &pod, &cfg, container_config("long", &["sleep", "3600"])).await;
    let short = create_and_start(&mut rt, &pod, &cfg, container_config("short", &["sh", "-c", "echo before; sleep 2; echo after; exit 7"])).await;
    let pid = status(&mut rt, &long).await.1["pid"].as_i64().unwrap();
    d.kill9();
    // The short container ends while the daemon is down; its monitor records the exit.
    let exit_file = d.run_dir().join("containers").join(&short).join("exit.json");
    wait_until("the monitor recorded the exit with no daemon", Duration::from_secs(20), async || exit_file.exists()).await;
    d.restart_after_kill9().await;
    let mut rt = d.runtime().await;
    let (st, info) = status(&mut rt, &long).await;
    assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32);
    assert_eq!(info["pid"].as_i64().unwrap(), pid);
    let (code, out, _) = exec(&mut rt, &long, &["echo", "alive"]).await;
    assert_eq!((code, out.as_str()), (0, "alive\n"));
    let (st, _) = status(&mut rt, &short).await;
    assert_eq!((st.state, st.exit_code, st.reason.as_str()), (cri::ContainerState::ContainerExited as i32, 7, "Error"));
    let lines: Vec<String> = log_entries(&logs.path().join("short.log")).into_iter().map(|e| e.3).collect();
    assert_eq!(lines, ["before", "after"], "the monitor kept logging while the daemon was down");
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test]
async fn bad_input_gets_typed_errors_and_leaves_nothing() {
    let (d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("bad"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    let code = |r: Result<String, tonic::Status>| r.expect_err("must fail").code();

    let nf = rt.container_status(cri::ContainerStatusRequest { container_id: "feedface".into(), verbose: false }).await.unwrap_err();
    assert_eq!(nf.code(), Code::NotFound);
    let nf = rt.start_container(cri::StartContainerRequest { container_id: "feedface".into() }).await.unwrap_err();
    assert_eq!(nf.code(), Code::NotFound);
    let nf = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: "feedface".into(), verbose: false }).await.unwrap_err();
    assert_eq!(nf.code(), Code::NotFound);
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: "feedface".into() }).await.expect("idempotent");
    rt.stop_container(cri::StopContainerRequest { container_id: "feedface".into(), timeout: 1 }).await.expect("idempotent");
    rt.remove_container(cri::RemoveContainerRequest { container_id: "feedface".into() }).await.expect("idempotent");
    assert_eq!(code(create(&mut rt, "feedface", &cfg, container_config("x", &["true"])).await), Code::NotFound);

    let first = create(&mut rt, &pod, &cfg, container_config("dup", &["true"])).await.unwrap();
    // The same name with another config is refused; an identical request is a retry whose
    // answer was lost, and gets the object made before.
    assert_eq!(code(create(&mut rt, &pod, &cfg, container_config("dup", &["false"])).await), Code::AlreadyExists);
    assert_eq!(create(&mut rt, &pod, &cfg, container_config("dup", &["true"])).await.unwrap(), first);
    let mut other = cfg.clone();
    other.hostname = "another-host".into();
    let dup_pod = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(other), runtime_handler: String::new() }).await.unwrap_err();
    assert_eq!(dup_pod.code(), Code::AlreadyExists);
    let again = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(cfg.clone()), runtime_handler: String::new() }).await.unwrap();
    assert_eq!(again.into_inner().pod_sandbox_id, pod);

    let mut rel = container_config("relmount", &["true"]);
    rel.mounts = vec![cri::Mount { container_path: "relative/path".into(), host_path: "/tmp".into(), ..Default::default() }];
    let e = create(&mut rt, &pod, &cfg, rel).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("container_path"), "{}", e.message());

    let sc = cri::LinuxContainerSecurityContext {
        seccomp: Some(cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: "/nonexistent/berth-profile.json".into(),
        }),
        ..Default::default()
    };
    let e = create(&mut rt, &pod, &cfg, with_security(container_config("badseccomp", &["true"]), sc)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("seccomp"), "{}", e.message());

    let group_only = cri::LinuxContainerSecurityContext { run_as_group: Some(cri::Int64Value { value: 1002 }), ..Default::default() };
    let e = create(&mut rt, &pod, &cfg, with_security(container_config("grouponly", &["true"]), group_only)).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("run_as_group"), "{}", e.message());

    let mut neg = container_config("negative", &["true"]);
    neg.linux.as_mut().unwrap().resources = Some(cri::LinuxContainerResources { memory_limit_in_bytes: -1, ..Default::default() });
    let e = create(&mut rt, &pod, &cfg, neg).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("memory_limit_in_bytes"), "{}", e.message());

    let mut noimg = container_config("noimage", &["true"]);
    noimg.image = spec("127.0.0.1:5000/berth/not-pulled:latest");
    assert_eq!(code(create(&mut rt, &pod, &cfg, noimg).await), Code::NotFound);

    let mut bad_sysctl = pod_config(&unique("sysctl"), logs.path());
    bad_sysctl.linux.as_mut().unwrap().sysctls = HashMap::from([("kernel.hostname".to_string(), "x".to_string())]);
    let e = rt.run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(bad_sysctl), runtime_handler: String::new() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    // Only the one good container exists; nothing half-made is on disk.
    let all = rt.list_containers(cri::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers;
    assert_eq!(all.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![first.clone()]);
    assert_eq!(entries_with_prefix(&d.data_dir().join("containers"), ""), vec![first.clone()]);
    assert_eq!(entries_with_prefix(&d.run_dir().join("containers"), ""), vec![first.clone()]);

    // Starting twice is a wrong state.
    rt.start_container(cri::StartContainerRequest { container_id: first.clone() }).await.unwrap();
    wait_exited(&mut rt, &first, Duration::from_secs(10)).await;
    let e = rt.start_container(cri::StartContainerRequest { container_id: first.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    remove_pod(&mut rt, &pod).await;
}

/// Processes that belong to this daemon's pods: monitors of its containers (their command
/// line names its run dir) and anything in one of the pods' cgroups.
fn pod_processes(run_dir: &Path, pods: &[String]) -> Vec<i32> {
    let mut out = vec![];
    let run_dir = run_dir.to_string_lossy().to_string();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).to_string();
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if (cmd.contains("__monitor") && cmd.contains(&run_dir)) || pods.iter().any(|p| cg.contains(p.as_str())) {
            out.push(pid);
        }
    }
    out
}

#[tokio::test]
async fn hundred_sandboxes_leave_nothing_behind() {
    let (d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let mut pods = vec![];
    let mut cgroups = vec![];
    for i in 0..100 {
        let cfg = pod_config(&unique("many"), logs.path());
        let pod = run_pod(&mut rt, &cfg).await;
        if i % 10 == 0 {
            create_and_start(&mut rt, &pod, &cfg, container_config("c", &["sleep", "3600"])).await;
        }
        cgroups.push(format!("/sys/fs/cgroup/memory/berth/{pod}"));
        pods.push(pod);
    }
    assert!(!mounts_under(&d.run_dir()).is_empty());
    for pod in &pods {
        remove_pod(&mut rt, pod).await;
    }
    assert!(mounts_under(d.dir.path()).is_empty(), "mounts left: {:?}", mounts_under(d.dir.path()));
    for cg in &cgroups {
        assert!(!Path::new(cg).exists(), "cgroup left: {cg}\n{}", d.log());
    }
    assert!(entries_with_prefix(&d.run_dir().join("sandboxes"), "").is_empty());
    assert!(entries_with_prefix(&d.data_dir().join("sandboxes"), "").is_empty());
    assert!(entries_with_prefix(&d.run_dir().join("containers"), "").is_empty());
    // Monitors end shortly after their container.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !pod_processes(&d.run_dir(), &pods).is_empty() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let left = pod_processes(&d.run_dir(), &pods);
    assert!(left.is_empty(), "processes left: {left:?}");
}

#[tokio::test]
async fn an_image_in_use_cannot_be_removed() {
    let (d, mut rt) = daemon().await;
    let mut images = d.images().await;
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("inuse"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    let cid = create(&mut rt, &pod, &cfg, container_config("user", &["true"])).await.unwrap();
    let e = images.remove_image(cri::RemoveImageRequest { image: spec(&busybox()) }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert!(e.message().contains(&cid[..12]), "the error names the container: {}", e.message());
    assert!(berth_integration::status(&mut images, &busybox()).await.is_some(), "the image is still there");
    rt.remove_container(cri::RemoveContainerRequest { container_id: cid }).await.unwrap();
    images.remove_image(cri::RemoveImageRequest { image: spec(&busybox()) }).await.expect("removable once unused");
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test]
async fn half_created_objects_are_cleaned_up_at_start() {
    let (mut d, _rt) = daemon().await;
    d.stop();
    // What a crash in the middle of CreateContainer / RunPodSandbox leaves: a record still in
    // the "creating" phase with its rootfs mounted, and directories without any record.
    let cid = "b".repeat(64);
    let sid = "c".repeat(64);
    let orphan = "d".repeat(64);
    let cdata = d.data_dir().join("containers").join(&cid);
    let crun = d.run_dir().join("containers").join(&cid);
    std::fs::create_dir_all(cdata.join("upper")).unwrap();
    std::fs::create_dir_all(crun.join("rootfs")).unwrap();
    let rec = serde_json::json!({
        "id": cid, "sandbox_id": sid, "name": "x", "phase": "creating", "config": "", "created_at": 1,
        "image_id": "sha256:00", "image_name": "x", "image_ref": "x", "log_path": null,
        "cgroup": {"path": format!("/berth/{sid}/{cid}"), "systemd": false}, "stop_signal": 15,
        "rootfs_mounted": true, "start_error": null
    });
    // the record of an object being made is an intent in its run dir; earlier versions kept
    // it in the data dir: both are cleaned up
    std::fs::write(crun.join("meta.json"), rec.to_string()).unwrap();
    let old = "e".repeat(64);
    let odata = d.data_dir().join("containers").join(&old);
    std::fs::create_dir_all(odata.join("upper")).unwrap();
    let old_rec = serde_json::json!({
        "id": old, "sandbox_id": sid, "name": "y", "phase": "creating", "config": "", "created_at": 1,
        "image_id": "sha256:00", "image_name": "y", "image_ref": "y", "log_path": null,
        "cgroup": {"path": format!("/berth/{sid}/{old}"), "systemd": false}, "stop_signal": 15,
        "rootfs_mounted": false, "start_error": null
    });
    std::fs::write(odata.join("meta.json"), old_rec.to_string()).unwrap();
    let target = std::ffi::CString::new(crun.join("rootfs").to_string_lossy().as_bytes()).unwrap();
    let rc = unsafe { libc::mount(c"tmpfs".as_ptr(), target.as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) };
    assert_eq!(rc, 0, "mount a stand-in rootfs");
    let sdir = d.run_dir().join("sandboxes").join(&orphan);
    std::fs::create_dir_all(sdir.join("shm")).unwrap();
    let shm = std::ffi::CString::new(sdir.join("shm").to_string_lossy().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::mount(c"shm".as_ptr(), shm.as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) }, 0);
    d.restart().await;
    assert!(mounts_under(d.dir.path()).is_empty(), "left: {:?}", mounts_under(d.dir.path()));
    assert!(!cdata.exists() && !crun.exists() && !sdir.exists() && !odata.exists());
    let mut rt = d.runtime().await;
    let all = rt.list_containers(cri::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers;
    assert!(all.is_empty());
}

#[tokio::test]
async fn configured_rlimits_apply_and_a_denied_raise_only_warns() {
    let d =
        Daemon::start("[containers]\nrlimits = [{ type = \"RLIMIT_NOFILE\", soft = 1000, hard = 1000 }, { type = \"RLIMIT_RTPRIO\", soft = 50, hard = 99 }]\n")
            .await;
    let mut images = d.images().await;
    pull(&mut images, &busybox()).await.unwrap();
    let mut rt = d.runtime().await;
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("rlimit"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    let (st, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), container_config("limits", &["sh", "-c", "ulimit -n; ulimit -Hn"])).await;
    assert_eq!(st.exit_code, 0);
    assert_eq!(lines, ["1000", "1000"]);
    // Raising RLIMIT_RTPRIO's hard limit needs CAP_SYS_RESOURCE: where the daemon lacks it the
    // container still ran, and the daemon said why the limit was capped.
    let has_sys_resource = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:").map(|v| u64::from_str_radix(v.trim(), 16).unwrap()))
        .map(|caps| caps & (1 << 24) != 0)
        .unwrap();
    if !has_sys_resource {
        assert!(d.log().contains("RlimitRtprio"), "a warning names the limit:\n{}", d.log());
    }
    remove_pod(&mut rt, &pod).await;
    let bad = TempDir::new("badcfg");
    std::fs::write(bad.path().join("c.toml"), "[containers]\nrlimits = [{ type = \"RLIMIT_BOGUS\", soft = 1, hard = 1 }]\n").unwrap();
    let out = std::process::Command::new(berth_bin())
        .args([
            "--config",
            &bad.path().join("c.toml").to_string_lossy(),
            "runtime",
            "--data-dir",
            &bad.path().join("d").to_string_lossy(),
            "--run-dir",
            &bad.path().join("r").to_string_lossy(),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("RLIMIT_BOGUS"));
}

#[tokio::test]
async fn pod_dns_sysctls_and_host_namespaces() {
    let (_d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let mut cfg = pod_config(&unique("dns"), logs.path());
    cfg.dns_config = Some(cri::DnsConfig {
        servers: vec!["10.96.0.10".into()],
        searches: vec!["default.svc.cluster.local".into(), "svc.cluster.local".into()],
        options: vec!["ndots:5".into()],
    });
    cfg.linux.as_mut().unwrap().sysctls = HashMap::from([("net.ipv4.ip_unprivileged_port_start".to_string(), "80".to_string())]);
    let pod = run_pod(&mut rt, &cfg).await;
    let c = container_config(
        "look",
        &["sh", "-c", "cat /etc/resolv.conf; cat /proc/sys/net/ipv4/ip_unprivileged_port_start; cat /etc/hostname; grep -c localhost /etc/hosts"],
    );
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), c).await;
    assert_eq!(lines[..6], ["search default.svc.cluster.local svc.cluster.local", "nameserver 10.96.0.10", "options ndots:5", "80", "berthpod", "2"]);
    let host_value = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start").unwrap();
    assert_ne!(host_value.trim(), "80", "the sysctl stayed in the pod's namespace");
    remove_pod(&mut rt, &pod).await;

    // hostNetwork + hostPID + hostIPC: the container shares the host's namespaces.
    let mut cfg = pod_config(&unique("host"), logs.path());
    let node = cri::NamespaceMode::Node as i32;
    let ns = cri::NamespaceOption { network: node, pid: node, ipc: node, ..Default::default() };
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext { namespace_options: Some(ns.clone()), ..Default::default() });
    let pod = run_pod(&mut rt, &cfg).await;
    let c = with_security(
        container_config("hostns", &["sh", "-c", "readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; ls /proc 2>/dev/null | grep -c '^[0-9]'"]),
        cri::LinuxContainerSecurityContext { namespace_options: Some(ns), ..Default::default() },
    );
    let (_, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), c).await;
    assert_eq!(lines[0], std::fs::read_link("/proc/self/ns/net").unwrap().to_string_lossy());
    assert_eq!(lines[1], std::fs::read_link("/proc/self/ns/ipc").unwrap().to_string_lossy());
    let procs: usize = lines[2].parse().unwrap();
    assert!(procs > 20, "the host's processes are visible: {procs}");
    remove_pod(&mut rt, &pod).await;
}

/// A host directory bind-mounted on itself with a propagation type, unmounted (with
/// everything below it) when dropped, before its TempDir goes.
struct PropagatedDir {
    dir: TempDir,
}

impl PropagatedDir {
    fn new(tag: &str, propagation: libc::c_ulong) -> PropagatedDir {
        let dir = TempDir::new(tag);
        std::fs::create_dir_all(dir.path().join("vol/from-host")).unwrap();
        std::fs::create_dir_all(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/flag"), "host").unwrap();
        let vol = std::ffi::CString::new(dir.path().join("vol").display().to_string()).unwrap();
        let none = std::ptr::null::<libc::c_char>();
        // SAFETY: plain mount(2) calls with valid NUL-terminated paths.
        unsafe {
            assert_eq!(libc::mount(vol.as_ptr(), vol.as_ptr(), none, libc::MS_BIND | libc::MS_REC, std::ptr::null()), 0, "bind the volume dir");
            assert_eq!(libc::mount(none, vol.as_ptr(), none, propagation | libc::MS_REC, std::ptr::null()), 0, "set its propagation");
        }
        PropagatedDir { dir }
    }
    fn vol(&self) -> PathBuf {
        self.dir.path().join("vol")
    }
    /// Mount the host's src dir on vol/from-host, as a host-side mount event.
    fn mount_from_host(&self) {
        let src = std::ffi::CString::new(self.dir.path().join("src").display().to_string()).unwrap();
        let dst = std::ffi::CString::new(self.vol().join("from-host").display().to_string()).unwrap();
        // SAFETY: as above.
        let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
        assert_eq!(rc, 0, "host bind");
    }
}

impl Drop for PropagatedDir {
    fn drop(&mut self) {
        for m in mounts_under(self.dir.path()) {
            let p = std::ffi::CString::new(m.display().to_string()).unwrap();
            // SAFETY: detaching a mount point this test made.
            unsafe { libc::umount2(p.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[tokio::test]
async fn mount_propagation_private_host_to_container_and_bidirectional() {
    let (d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("prop"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    let privileged = cri::LinuxContainerSecurityContext { privileged: true, ..Default::default() };
    for (name, mode, host_prop) in [
        ("private", cri::MountPropagation::PropagationPrivate, libc::MS_PRIVATE),
        ("slave", cri::MountPropagation::PropagationHostToContainer, libc::MS_SHARED),
        ("shared", cri::MountPropagation::PropagationBidirectional, libc::MS_SHARED),
    ] {
        let dir = PropagatedDir::new(&format!("prop-{name}"), host_prop);
        let vol = dir.vol().display().to_string();
        let mut c = with_security(container_config(name, &["sleep", "3600"]), privileged.clone());
        c.mounts = vec![cri::Mount { container_path: "/vol".into(), host_path: vol.clone(), propagation: mode as i32, ..Default::default() }];
        let id = create_and_start(&mut rt, &pod, &cfg, c).await;
        let (st, _) = status(&mut rt, &id).await;
        assert_eq!(st.mounts[0].propagation, mode as i32);
        // The container's own mounts (proc, dev, its volumes) stay out of the host's view of
        // its rootfs: there, only the overlay itself.
        let rootfs = d.run_dir().join("containers").join(&id).join("rootfs");
        assert_eq!(mounts_under(&rootfs), vec![rootfs.clone()], "{name}: container mounts leaked to the host");
        // Host → container.
        dir.mount_from_host();
        let (_, seen, _) = exec(&mut rt, &id, &["sh", "-c", "cat /vol/from-host/flag 2>/dev/null || echo none"]).await;
        let want = if mode == cri::MountPropagation::PropagationPrivate { "none" } else { "host" };
        assert_eq!(seen.trim(), want, "{name}: host mount seen in the container");
        // Container → host.
        let (rc, _, err) =
            exec(&mut rt, &id, &["sh", "-c", "mkdir -p /vol/from-ctr && mount -t tmpfs berth-prop /vol/from-ctr && echo ctr > /vol/from-ctr/flag"]).await;
        assert_eq!(rc, 0, "{err}");
        let on_host = std::fs::read_to_string(dir.vol().join("from-ctr/flag")).unwrap_or_else(|_| "none".into());
        let want = if mode == cri::MountPropagation::PropagationBidirectional { "ctr" } else { "none" };
        assert_eq!(on_host.trim(), want, "{name}: container mount seen on the host");
        rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await.unwrap();
        drop(dir);
    }

    // Bidirectional needs a shared source: a private one is refused, naming the field.
    let plain = TempDir::new("prop-plain");
    let mut c = with_security(container_config("refused", &["true"]), privileged);
    c.mounts = vec![cri::Mount {
        container_path: "/vol".into(),
        host_path: plain.path().display().to_string(),
        propagation: cri::MountPropagation::PropagationBidirectional as i32,
        ..Default::default()
    }];
    let e = create(&mut rt, &pod, &cfg, c).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("mounts[0].propagation") && e.message().contains("not a shared mount"), "{}", e.message());
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test]
async fn supplemental_groups_policy_and_recursive_read_only_mounts() {
    let (_d, mut rt) = daemon().await;
    let st = rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
    assert!(st.features.unwrap().supplemental_groups_policy);
    assert!(st.runtime_handlers[0].features.unwrap().recursive_read_only_mounts, "kernel ≥ 5.12 here");
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("groups"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;

    // uid 1000 is in group staff (50) in the image's /etc/group: Merge adds it, Strict does not.
    for (policy, want) in [(cri::SupplementalGroupsPolicy::Merge, vec![1000, 50, 4000]), (cri::SupplementalGroupsPolicy::Strict, vec![1000, 4000])] {
        let name = format!("groups-{}", policy.as_str_name().to_lowercase());
        let sc = cri::LinuxContainerSecurityContext {
            run_as_user: Some(cri::Int64Value { value: 1000 }),
            supplemental_groups: vec![4000],
            supplemental_groups_policy: policy as i32,
            ..Default::default()
        };
        let id = create_and_start(&mut rt, &pod, &cfg, with_security(container_config(&name, &["sleep", "3600"]), sc)).await;
        let (_, out, _) = exec(&mut rt, &id, &["id", "-G"]).await;
        let mut got: Vec<i64> = out.split_whitespace().map(|g| g.parse().unwrap()).collect();
        got.dedup();
        assert_eq!(got, want, "{name}: id -G {out:?}");
        let (st, _) = status(&mut rt, &id).await;
        let user = st.user.unwrap().linux.unwrap();
        assert_eq!((user.uid, user.gid, user.supplemental_groups), (1000, 1000, want), "{name}: ContainerStatus.user");
        rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await.unwrap();
    }

    // A read-only volume with a mount inside: plain ro leaves the inner mount writable,
    // recursive_read_only makes it read-only too.
    let vol = TempDir::new("rro");
    std::fs::create_dir_all(vol.path().join("inner")).unwrap();
    let inner = std::ffi::CString::new(vol.path().join("inner").display().to_string()).unwrap();
    // SAFETY: a tmpfs mount on a directory this test made; unmounted below.
    assert_eq!(unsafe { libc::mount(c"berth-rro".as_ptr(), inner.as_ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) }, 0);
    let ro_mount = |recursive: bool| cri::Mount {
        container_path: "/vol".into(),
        host_path: vol.path().display().to_string(),
        readonly: true,
        recursive_read_only: recursive,
        ..Default::default()
    };
    for (recursive, want) in [(false, "0"), (true, "1")] {
        let mut c = container_config(&format!("rro-{recursive}"), &["sleep", "3600"]);
        c.mounts = vec![ro_mount(recursive)];
        let id = create_and_start(&mut rt, &pod, &cfg, c).await;
        let (rc, _, _) = exec(&mut rt, &id, &["touch", "/vol/top"]).await;
        assert_ne!(rc, 0, "the volume itself is read-only");
        let (rc, _, _) = exec(&mut rt, &id, &["touch", "/vol/inner/file"]).await;
        assert_eq!(if rc != 0 { "1" } else { "0" }, want, "recursive_read_only={recursive}: inner mount read-only");
        rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await.unwrap();
    }
    for (bad, field) in [
        (cri::Mount { readonly: false, ..ro_mount(true) }, "needs readonly"),
        (cri::Mount { propagation: cri::MountPropagation::PropagationHostToContainer as i32, ..ro_mount(true) }, "needs private propagation"),
    ] {
        let mut c = container_config("rro-bad", &["true"]);
        c.mounts = vec![bad];
        let e = create(&mut rt, &pod, &cfg, c).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument);
        assert!(e.message().contains(field), "{}", e.message());
    }
    // SAFETY: unmounting the tmpfs made above.
    unsafe { libc::umount2(inner.as_ptr(), libc::MNT_DETACH) };
    remove_pod(&mut rt, &pod).await;
}

/// The cAdvisor-named metrics ListMetricDescriptors must offer.
const CADVISOR_METRICS: &[&str] = &[
    "container_blkio_device_usage_total",
    "container_cpu_cfs_periods_total",
    "container_cpu_cfs_throttled_periods_total",
    "container_cpu_cfs_throttled_seconds_total",
    "container_cpu_system_seconds_total",
    "container_cpu_usage_seconds_total",
    "container_cpu_user_seconds_total",
    "container_file_descriptors",
    "container_fs_inodes_free",
    "container_fs_inodes_total",
    "container_fs_limit_bytes",
    "container_fs_reads_bytes_total",
    "container_fs_reads_total",
    "container_fs_usage_bytes",
    "container_fs_writes_bytes_total",
    "container_fs_writes_total",
    "container_last_seen",
    "container_memory_cache",
    "container_memory_failcnt",
    "container_memory_failures_total",
    "container_memory_kernel_usage",
    "container_memory_mapped_file",
    "container_memory_max_usage_bytes",
    "container_memory_rss",
    "container_memory_swap",
    "container_memory_usage_bytes",
    "container_memory_working_set_bytes",
    "container_network_receive_bytes_total",
    "container_network_receive_errors_total",
    "container_network_receive_packets_dropped_total",
    "container_network_receive_packets_total",
    "container_network_transmit_bytes_total",
    "container_network_transmit_errors_total",
    "container_network_transmit_packets_dropped_total",
    "container_network_transmit_packets_total",
    "container_oom_events_total",
    "container_processes",
    "container_sockets",
    "container_spec_cpu_period",
    "container_spec_cpu_quota",
    "container_spec_cpu_shares",
    "container_spec_memory_limit_bytes",
    "container_spec_memory_reservation_limit_bytes",
    "container_spec_memory_swap_limit_bytes",
    "container_start_time_seconds",
    "container_threads",
    "container_threads_max",
    "container_ulimits_soft",
];

async fn pod_metrics(rt: &mut Rt, pod: &str) -> cri::PodSandboxMetrics {
    let all = rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}).await.expect("list pod sandbox metrics").into_inner().pod_metrics;
    all.into_iter().find(|p| p.pod_sandbox_id == pod).unwrap_or_else(|| panic!("no metrics for pod {pod}"))
}

/// The value of a container metric (the first series of that name).
fn metric_value(c: &cri::ContainerMetrics, name: &str) -> u64 {
    c.metrics.iter().find(|m| m.name == name).and_then(|m| m.value.as_ref()).map(|v| v.value).unwrap_or_else(|| panic!("no {name} series"))
}

#[tokio::test]
async fn cri_metrics_report_what_the_container_uses() {
    let (_d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let name = unique("metrics");
    let cfg = pod_config(&name, logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    // 20 MiB in the pod's shm tmpfs (charged to the container's memory cgroup), then a busy loop.
    let c = container_config("burn", &["sh", "-c", "dd if=/dev/zero of=/dev/shm/x bs=1M count=20; while true; do :; done"]);
    let cid = create_and_start(&mut rt, &pod, &cfg, c).await;

    let descriptors = rt.list_metric_descriptors(cri::ListMetricDescriptorsRequest {}).await.expect("list metric descriptors").into_inner().descriptors;
    let keys: HashMap<&str, usize> = descriptors.iter().map(|d| (d.name.as_str(), d.label_keys.len())).collect();
    for d in &descriptors {
        assert!(!d.help.is_empty() && !d.label_keys.is_empty() && d.label_keys.iter().all(|k| !k.is_empty()), "{d:?}");
    }
    for name in CADVISOR_METRICS {
        assert!(keys.contains_key(name), "no descriptor for {name}");
    }

    // CPU seconds are whole seconds: wait until the loop has burnt one and dd has finished.
    let start = Instant::now();
    let (first_cpu, ws) = loop {
        let p = pod_metrics(&mut rt, &pod).await;
        let c = p.container_metrics.iter().find(|c| c.container_id == cid).expect("the container's metrics");
        let (cpu, ws) = (metric_value(c, "container_cpu_usage_seconds_total"), metric_value(c, "container_memory_working_set_bytes"));
        if cpu > 0 && ws >= 20 << 20 {
            break (cpu, ws);
        }
        assert!(start.elapsed() < Duration::from_secs(30), "cpu {cpu} s, working set {ws} after 30 s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(ws < 200 << 20, "working set {ws}");
    // CPU time (whole seconds in CRI metrics) grows while the container spins.
    wait_until("CPU time grows", Duration::from_secs(30), async || {
        let p = pod_metrics(&mut rt, &pod).await;
        let cpu = p.container_metrics.iter().find(|c| c.container_id == cid).map(|c| metric_value(c, "container_cpu_usage_seconds_total")).unwrap_or(0);
        cpu > first_cpu
    })
    .await;
    let p = pod_metrics(&mut rt, &pod).await;
    let c = p.container_metrics.iter().find(|c| c.container_id == cid).expect("the container's metrics");
    assert!(metric_value(c, "container_processes") >= 1);
    assert!(metric_value(c, "container_threads") >= 1);
    assert!(metric_value(c, "container_start_time_seconds") > 0);

    // Every series pairs its values with its descriptor's keys, and every metric has one.
    let all: Vec<&cri::Metric> = p.metrics.iter().chain(p.container_metrics.iter().flat_map(|c| &c.metrics)).collect();
    for m in &all {
        let n = keys.get(m.name.as_str()).unwrap_or_else(|| panic!("{} has no descriptor", m.name));
        assert_eq!(m.label_values.len(), *n, "{m:?}");
        assert!(m.timestamp > 0, "{m:?}");
    }
    for name in CADVISOR_METRICS {
        assert!(all.iter().any(|m| m.name == *name), "no {name} series");
    }
    // The base labels as cAdvisor names them: container, id, image, name, namespace, pod.
    let cpu_series = c.metrics.iter().find(|m| m.name == "container_cpu_usage_seconds_total").unwrap();
    assert_eq!(cpu_series.label_values[0], "burn");
    assert_eq!(cpu_series.label_values[3], cid);
    assert_eq!((cpu_series.label_values[4].as_str(), cpu_series.label_values[5].as_str()), ("default", name.as_str()));
    assert_eq!(cpu_series.label_values[6], "total");
    // Pod-level network series, by interface.
    let desc = |n: &str| descriptors.iter().find(|d| d.name == n).unwrap();
    for n in ["container_network_receive_bytes_total", "container_network_transmit_bytes_total"] {
        let at = desc(n).label_keys.iter().position(|k| k == "interface").expect("an interface label");
        let series: Vec<_> = p.metrics.iter().filter(|m| m.name == n).collect();
        assert!(!series.is_empty() && series.iter().all(|m| !m.label_values[at].is_empty()), "{n}: {series:?}");
    }
    remove_pod(&mut rt, &pod).await;
    let after = rt.list_pod_sandbox_metrics(cri::ListPodSandboxMetricsRequest {}).await.unwrap().into_inner().pod_metrics;
    assert!(after.iter().all(|p| p.pod_sandbox_id != pod));
}

#[tokio::test]
async fn a_debug_container_joins_its_targets_pid_namespace() {
    let (_d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let mut cfg = pod_config(&unique("debug-target"), logs.path());
    // shareProcessNamespace: false, as a kubelet sends it: every container its own PID namespace.
    let own = cri::NamespaceOption { pid: cri::NamespaceMode::Container as i32, ..Default::default() };
    cfg.linux.as_mut().unwrap().security_context = Some(cri::LinuxSandboxSecurityContext { namespace_options: Some(own.clone()), ..Default::default() });
    let pod = run_pod(&mut rt, &cfg).await;
    let sec = |ns: cri::NamespaceOption| cri::LinuxContainerSecurityContext { namespace_options: Some(ns), ..Default::default() };
    let app = create_and_start(&mut rt, &pod, &cfg, with_security(container_config("app", &["sleep", "31337"]), sec(own.clone()))).await;
    let other = create_and_start(&mut rt, &pod, &cfg, with_security(container_config("other", &["sleep", "4242"]), sec(own.clone()))).await;
    // `kubectl debug --target=app`: an ephemeral container with PID namespace mode TARGET.
    let target = cri::NamespaceOption { pid: cri::NamespaceMode::Target as i32, target_id: app.clone(), ..Default::default() };
    let debug = create_and_start(&mut rt, &pod, &cfg, with_security(container_config("debugger", &["sleep", "3600"]), sec(target))).await;
    let (code, out, err) = exec(&mut rt, &debug, &["ps", "-o", "args"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("sleep 31337"), "the target's processes are visible: {out}");
    assert!(!out.contains("sleep 4242"), "only the target's: {out}");
    // A target that is not running, not in this pod, or unknown is refused.
    rt.stop_container(cri::StopContainerRequest { container_id: other.clone(), timeout: 0 }).await.unwrap();
    let not_running = cri::NamespaceOption { pid: cri::NamespaceMode::Target as i32, target_id: other.clone(), ..Default::default() };
    let e = create(&mut rt, &pod, &cfg, with_security(container_config("late", &["true"]), sec(not_running))).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    let unknown = cri::NamespaceOption { pid: cri::NamespaceMode::Target as i32, target_id: "nope".into(), ..Default::default() };
    let e = create(&mut rt, &pod, &cfg, with_security(container_config("lost", &["true"]), sec(unknown))).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    remove_pod(&mut rt, &pod).await;
}

#[tokio::test]
async fn configured_runtime_handlers_run_pods_with_their_options() {
    let parent = format!("/berth-it-handler-{}", std::process::id());
    let cfg = format!("[runtimes.test-handler]\ncgroup_parent = \"{parent}\"\nunset_seccomp_profile = \"runtime/default\"\n");
    let d = Daemon::start(&cfg).await;
    pull(&mut d.images().await, &busybox()).await.expect("pull busybox");
    let mut rt = d.runtime().await;
    let st = rt.status(cri::StatusRequest { verbose: false }).await.unwrap().into_inner();
    let names: Vec<String> = st.runtime_handlers.iter().map(|h| h.name.clone()).collect();
    assert_eq!(names, vec!["".to_string(), "test-handler".to_string()]);

    let logs = TempDir::new("logs");
    let seccomp_of = |pid: i32| -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status.lines().find_map(|l| l.strip_prefix("Seccomp:")).unwrap_or_default().trim().to_string()
    };
    let mut ids = vec![];
    for handler in ["test-handler", ""] {
        let pcfg = pod_config(&unique(if handler.is_empty() { "default-handler" } else { handler }), logs.path());
        let pod = rt
            .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pcfg.clone()), runtime_handler: handler.into() })
            .await
            .expect("run pod")
            .into_inner()
            .pod_sandbox_id;
        let ps = rt.pod_sandbox_status(cri::PodSandboxStatusRequest { pod_sandbox_id: pod.clone(), verbose: false }).await.unwrap().into_inner();
        assert_eq!(ps.status.unwrap().runtime_handler, handler);
        let c = create_and_start(&mut rt, &pod, &pcfg, container_config("main", &["sleep", "3600"])).await;
        let (_, info) = status(&mut rt, &c).await;
        let pid = info["pid"].as_i64().expect("pid") as i32;
        if handler == "test-handler" {
            // The handler's cgroup parent and its seccomp profile for containers asking none.
            assert!(cgroup_of(pid, "memory").starts_with(&format!("{parent}/{pod}")), "{}", cgroup_of(pid, "memory"));
            assert_eq!(seccomp_of(pid), "2", "runtime/default filter for a container that asked for no profile");
        } else {
            assert!(cgroup_of(pid, "memory").starts_with(&format!("/berth/{pod}")), "{}", cgroup_of(pid, "memory"));
            assert_eq!(seccomp_of(pid), "0", "unconfined by default");
        }
        ids.push(pod);
    }
    let e = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(pod_config(&unique("nohandler"), logs.path())), runtime_handler: "nope".into() })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("\"nope\"") && e.message().contains("test-handler"), "{}", e.message());
    for pod in ids {
        remove_pod(&mut rt, &pod).await;
    }
    assert!(!std::path::Path::new(&format!("/sys/fs/cgroup/memory{parent}")).exists(), "the handler's cgroup parent goes with its last pod");
}

#[tokio::test]
async fn a_caller_that_gives_up_mid_create_leaves_nothing_and_a_retry_succeeds() {
    let (d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("cancel"), logs.path());
    let name_of = |s: &cri::PodSandbox| s.metadata.as_ref().map(|m| m.name.clone()).unwrap_or_default();
    let want = cfg.metadata.as_ref().unwrap().name.clone();
    for ms in [1u64, 5, 20, 60] {
        // The client cancels after `ms` (its deadline reaches the server too).
        let mut req = tonic::Request::new(cri::RunPodSandboxRequest { config: Some(cfg.clone()), runtime_handler: String::new() });
        req.set_timeout(Duration::from_millis(ms));
        if let Ok(Ok(done)) = tokio::time::timeout(Duration::from_millis(ms), rt.run_pod_sandbox(req)).await {
            remove_pod(&mut rt, &done.into_inner().pod_sandbox_id).await;
        }
        // The same name again: it waits for the abandoned create to be undone, then works.
        let id = run_pod(&mut rt, &cfg).await;
        let listed: Vec<cri::PodSandbox> =
            rt.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await.unwrap().into_inner().items.into_iter().filter(|s| name_of(s) == want).collect();
        assert_eq!(listed.len(), 1, "after a {ms} ms deadline: {listed:?}");
        assert_eq!((listed[0].id.as_str(), listed[0].state), (id.as_str(), cri::PodSandboxState::SandboxReady as i32));

        // The same for a container.
        let c = container_config("app", &["sleep", "3600"]);
        let mut req =
            tonic::Request::new(cri::CreateContainerRequest { pod_sandbox_id: id.clone(), config: Some(c.clone()), sandbox_config: Some(cfg.clone()) });
        req.set_timeout(Duration::from_millis(ms));
        if let Ok(Ok(done)) = tokio::time::timeout(Duration::from_millis(ms), rt.create_container(req)).await {
            let cid = done.into_inner().container_id;
            rt.remove_container(cri::RemoveContainerRequest { container_id: cid }).await.unwrap();
        }
        let cid = create(&mut rt, &id, &cfg, c).await.unwrap_or_else(|e| panic!("the retry creates the container: {e:?}\n{}", d.log()));
        let containers = rt.list_containers(cri::ListContainersRequest::default()).await.unwrap().into_inner().containers;
        assert_eq!(containers.iter().map(|c| c.id.clone()).collect::<Vec<_>>(), vec![cid], "after a {ms} ms deadline");
        remove_pod(&mut rt, &id).await;
    }
    // Nothing of the abandoned attempts is left.
    assert!(rt.list_pod_sandbox(cri::ListPodSandboxRequest::default()).await.unwrap().into_inner().items.is_empty());
    for dir in [d.data_dir().join("sandboxes"), d.data_dir().join("containers"), d.run_dir().join("sandboxes"), d.run_dir().join("containers")] {
        assert!(entries_with_prefix(&dir, "").is_empty(), "{} has {:?}", dir.display(), entries_with_prefix(&dir, ""));
    }
    assert!(mounts_under(d.dir.path()).is_empty(), "{:?}", mounts_under(d.dir.path()));
}

/// Install `from` at `to` the way a package upgrade does: the old file is unlinked first,
/// so the running daemon's binary exists only as "(deleted)".
fn install_over(from: &Path, to: &Path) {
    std::fs::remove_file(to).unwrap();
    std::fs::copy(from, to).unwrap();
}

#[tokio::test]
async fn a_binary_replaced_under_the_daemon_keeps_working_and_a_restart_adopts_its_pods() {
    let bin = TempDir::new("bin");
    let exe = bin.path().join("berth");
    std::fs::copy(berth_bin(), &exe).unwrap();
    let mut d = Daemon::start("").await;
    d.stop();
    d.exe = exe.clone();
    d.restart().await;
    pull(&mut d.images().await, &busybox()).await.expect("pull busybox");
    let mut rt = d.runtime().await;
    let logs = TempDir::new("logs");
    let start_pod = |tag: &'static str| {
        let cfg = pod_config(&unique(tag), logs.path());
        async move { cfg }
    };
    let cfg_a = start_pod("before-upgrade").await;
    let a = run_pod(&mut rt, &cfg_a).await;
    let ca = create_and_start(&mut rt, &a, &cfg_a, container_config("app", &["sleep", "3600"])).await;

    // The upgrade: the file the daemon runs is replaced on disk while it runs.
    install_over(&berth_bin(), &exe);
    assert!(std::fs::read_link(format!("/proc/{}/exe", d.pid().unwrap())).unwrap().to_string_lossy().ends_with("(deleted)"));
    let cfg_b = start_pod("during-upgrade").await;
    let b = run_pod(&mut rt, &cfg_b).await;
    let cb = create_and_start(&mut rt, &b, &cfg_b, container_config("app", &["sleep", "3600"])).await;
    let (code, out, _) = exec(&mut rt, &cb, &["echo", "exec-works"]).await;
    assert_eq!((code, out.trim()), (0, "exec-works"));

    // systemd restarts it with the new binary: both pods are adopted, running, and new ones start.
    d.restart().await;
    let mut rt = d.runtime().await;
    for c in [&ca, &cb] {
        let (st, _) = status(&mut rt, c).await;
        assert_eq!(st.state, cri::ContainerState::ContainerRunning as i32, "{c} after the restart");
    }
    let cfg_c = start_pod("after-upgrade").await;
    let c = run_pod(&mut rt, &cfg_c).await;
    create_and_start(&mut rt, &c, &cfg_c, container_config("app", &["sleep", "3600"])).await;
    for p in [a, b, c] {
        remove_pod(&mut rt, &p).await;
    }
}

#[tokio::test]
async fn an_image_of_sixty_four_layers_runs() {
    use berth_integration::registry::{push_image, Layer, TarBuilder};
    // Layer 0: a shell; layers 1..63: one file each, the last one also replacing a file.
    let busybox_bin = std::fs::read("/bin/busybox").expect("busybox-static on the host");
    let mut layers = vec![Layer::gzip_tar(&TarBuilder::new().dir("bin/").executable("bin/busybox", &busybox_bin).symlink("bin/sh", "busybox").finish())];
    for i in 1..64 {
        let t = TarBuilder::new()
            .dir("layers/")
            .file(&format!("layers/{i:02}"), format!("{i}\n").as_bytes())
            .file("layers/top", format!("{i}\n").as_bytes())
            .finish();
        layers.push(Layer::gzip_tar(&t));
    }
    let repo = format!("berth/layers64-{}", std::process::id());
    push_image(&test_registry(), &repo, "v1", &layers).await;
    let image = format!("{}/{repo}:v1", test_registry());
    let d = Daemon::start("").await;
    pull(&mut d.images().await, &image).await.expect("pull the 64-layer image");
    let mut rt = d.runtime().await;
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("layers64"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    let mut c = container_config("deep", &["/bin/busybox", "sh", "-c", "/bin/busybox ls /layers | /bin/busybox wc -l; /bin/busybox cat /layers/top"]);
    c.image = Some(cri::ImageSpec { image: image.clone(), ..Default::default() });
    let (st, lines) = run_to_end(&mut rt, &pod, &cfg, logs.path(), c).await;
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert_eq!(lines, vec!["64".to_string(), "63".to_string()], "63 files + top, and the topmost layer's top");
    remove_pod(&mut rt, &pod).await;
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()).unwrap()
}

async fn cpu_samples_kept(rt: &mut Rt) -> u64 {
    let st = rt.status(cri::StatusRequest { verbose: true }).await.unwrap().into_inner();
    let info: serde_json::Value = serde_json::from_str(&st.info["config"]).unwrap();
    info["cpuSamplesKept"].as_u64().expect("cpuSamplesKept in the verbose status")
}

#[tokio::test]
async fn a_thousand_pods_come_and_go_without_the_daemon_growing() {
    let (d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let pid = d.pid().unwrap();
    let mut warm = 0;
    for i in 0..1000 {
        let cfg = pod_config(&unique("churn"), logs.path());
        let pod = run_pod(&mut rt, &cfg).await;
        // Stats keep a CPU sample per cgroup (for the usage rate): it must go with the pod.
        rt.pod_sandbox_stats(cri::PodSandboxStatsRequest { pod_sandbox_id: pod.clone() }).await.unwrap();
        remove_pod(&mut rt, &pod).await;
        if i == 99 {
            warm = rss_kib(pid);
        }
    }
    assert_eq!(cpu_samples_kept(&mut rt).await, 0, "CPU samples of removed pods are kept");
    let end = rss_kib(pid);
    assert!(end <= warm + 8 * 1024, "daemon RSS grew from {warm} KiB (after 100 pods) to {end} KiB (after 1000)");
}

fn image_mount(container_path: &str, image: &str, sub_path: &str) -> cri::Mount {
    cri::Mount { container_path: container_path.into(), image: spec(image), image_sub_path: sub_path.into(), ..Default::default() }
}

#[tokio::test]
async fn image_volumes_mount_an_images_content_read_only_whole_or_a_sub_path() {
    let (d, mut rt) = daemon().await;
    let mut images = d.images().await;
    let layered = format!("{}/berth/layered:latest", test_registry());
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("imgvol"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;

    // Not pulled yet: NotFound naming the mount, and nothing is left of the attempt.
    let mut c = container_config("early", &["true"]);
    c.mounts = vec![image_mount("/img", &layered, "")];
    let e = create(&mut rt, &pod, &cfg, c).await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e:?}");
    assert!(e.message().contains("mounts[0].image"), "{}", e.message());
    pull(&mut images, &layered).await.expect("pull the layered image");

    // A sub path that leaves the image, or is absolute: InvalidArgument.
    for bad in ["../../etc", "data/../../x", "/data"] {
        let mut c = container_config("bad", &["true"]);
        c.mounts = vec![image_mount("/sub", &layered, bad)];
        let e = create(&mut rt, &pod, &cfg, c).await.unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{bad}: {e:?}");
        assert!(e.message().contains("image_sub_path"), "{}", e.message());
    }
    // A sub path missing in the image: InvalidArgument too.
    let mut c = container_config("missing", &["true"]);
    c.mounts = vec![image_mount("/sub", &layered, "no/such/dir")];
    assert_eq!(create(&mut rt, &pod, &cfg, c).await.unwrap_err().code(), Code::InvalidArgument);

    // The whole image (all its layers, whiteouts applied) and one directory of it; both
    // read-only even though the mount does not ask for it.
    let script = "cat /img/data/b /img/data/link /sub/c; ls /img/opaque; \
                  test -e /img/data/a && echo whiteout-ignored; \
                  touch /img/x 2>/dev/null && echo img-writable || echo img-read-only; \
                  touch /sub/x 2>/dev/null && echo sub-writable || echo sub-read-only";
    let mut c = container_config("reader", &["sh", "-c", script]);
    c.mounts = vec![image_mount("/img", &layered, ""), image_mount("/sub", &layered, "data/sub")];
    let cid = create(&mut rt, &pod, &cfg, c).await.expect("create with image volumes");
    // The image is in use while the container exists.
    let e = images.remove_image(cri::RemoveImageRequest { image: spec(&layered) }).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }).await.expect("start");
    let st = wait_exited(&mut rt, &cid, Duration::from_secs(30)).await;
    let lines: Vec<String> = log_entries(&logs.path().join("reader.log")).into_iter().map(|e| e.3).collect();
    assert_eq!(st.exit_code, 0, "{lines:?}");
    assert_eq!(lines, ["b", "b", "c", "new", "img-read-only", "sub-read-only"], "{lines:?}");

    rt.remove_container(cri::RemoveContainerRequest { container_id: cid }).await.unwrap();
    assert!(mounts_under(d.dir.path()).iter().all(|m| !m.to_string_lossy().contains("image-volumes")), "{:?}", mounts_under(d.dir.path()));
    images.remove_image(cri::RemoveImageRequest { image: spec(&layered) }).await.expect("removable once unused");
    remove_pod(&mut rt, &pod).await;
    assert!(mounts_under(d.dir.path()).is_empty(), "{:?}", mounts_under(d.dir.path()));
}

#[tokio::test]
async fn missing_cgroup_controllers_are_named_once_not_per_operation() {
    let (d, mut rt) = daemon().await;
    let logs = TempDir::new("logs");
    let cfg = pod_config(&unique("ctrlwarn"), logs.path());
    let pod = run_pod(&mut rt, &cfg).await;
    for i in 0..3 {
        let id = create_and_start(&mut rt, &pod, &cfg, container_config(&format!("c{i}"), &["sleep", "3600"])).await;
        rt.stop_container(cri::StopContainerRequest { container_id: id.clone(), timeout: 0 }).await.unwrap();
        rt.remove_container(cri::RemoveContainerRequest { container_id: id }).await.unwrap();
    }
    remove_pod(&mut rt, &pod).await;
    let log = d.log();
    assert_eq!(log.matches("not supported on this system").count(), 0, "per-operation controller warnings:\n{log}");
    let missing = berth::runtime::cgroups::missing_controllers();
    let said = log.matches("cgroup controllers missing on this host").count();
    assert_eq!(said, usize::from(!missing.is_empty()), "missing here: {missing:?}\n{log}");
    if let Some(first) = missing.first() {
        assert!(log.contains(first), "the warning names {first}");
    }
}
