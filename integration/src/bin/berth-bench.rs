//! berth-bench: Berth and containerd (Debian's, with runc) side by side in one run, driven by
//! the same CRI client on the same images from the local registry, with CNI on (berth-cni on
//! a private bridge for each). Prints a table with medians, p99s and ratios and writes every
//! figure to a JSON file. Run it through hack/bench.sh. `berth-bench dns` is the cluster DNS
//! benchmark instead (`berth_integration::dns_bench`, run through hack/bench-dns.sh).
use berth::cri::v1 as cri;
use berth::cri::v1::image_service_client::ImageServiceClient;
use berth::cri::v1::runtime_service_client::RuntimeServiceClient;
use berth_integration::containerd::Containerd;
use berth_integration::registry::{push_image, Layer};
use berth_integration::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tonic::transport::Channel;

type Rt = RuntimeServiceClient<Channel>;

struct Opts {
    quick: bool,
    out: PathBuf,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args.iter().position(|a| a == "--out").and_then(|i| args.get(i + 1)).map(PathBuf::from).unwrap_or_else(|| "bench-results.json".into());
    Opts { quick, out }
}

fn busybox() -> String {
    format!("{}/berth/busybox:latest", test_registry())
}

fn big_image() -> String {
    format!("{}/berth/bench-big:latest", test_registry())
}

/// Milliseconds of a duration.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(v: &[f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let idx = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    s[idx.min(s.len() - 1)]
}

fn summary(v: &[f64]) -> Value {
    json!({"median": percentile(v, 50.0), "p99": percentile(v, 99.0), "n": v.len(), "samples": v})
}

/// A ~200 MB image of four layers: two of random bytes, two of compressible text.
async fn push_big_image() -> u64 {
    let mut layers = vec![];
    let mut total = 0u64;
    for i in 0..4 {
        let size = 50 << 20;
        let data: Vec<u8> = if i % 2 == 0 {
            let mut b = vec![0u8; size];
            std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom").unwrap(), &mut b).unwrap();
            b
        } else {
            (0..size).map(|j| b"berth benchmark text "[j % 21]).collect()
        };
        total += data.len() as u64;
        let tar = registry::TarBuilder::new().file(&format!("data/layer{i}.bin"), &data).finish();
        layers.push(Layer::gzip_tar(&tar));
    }
    push_image(&test_registry(), "berth/bench-big", "latest", &layers).await;
    total
}

/// A private CNI setup (berth-cni, CNI 1.0.0 so containerd 1.6 accepts it) for one runtime.
fn cni_dir(tag: &str, octet: u32) -> (TempDir, String) {
    let dir = TempDir::new(&format!("bench-cni-{tag}"));
    let bridge = format!("berthb{tag}");
    std::fs::create_dir_all(dir.path().join("conf")).unwrap();
    std::fs::create_dir_all(dir.path().join("bin")).unwrap();
    let list = json!({"cniVersion": "1.0.0", "name": format!("berth-bench-{tag}"), "plugins": [
        {"type": "berth-cni", "bridge": bridge, "isGateway": true, "ipMasq": false,
         "ipam": {"dataDir": dir.path().join("ipam"), "ranges": [[{"subnet": format!("10.{octet}.0.0/24")}]]}}]});
    std::fs::write(dir.path().join("conf/10-bench.conflist"), list.to_string()).unwrap();
    std::os::unix::fs::symlink(berth_bin().with_file_name("berth-cni"), dir.path().join("bin/berth-cni")).unwrap();
    std::os::unix::fs::symlink("/usr/lib/cni/loopback", dir.path().join("bin/loopback")).unwrap();
    (dir, bridge)
}

fn pss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

fn rss_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok()))
        .unwrap_or(0)
}

fn all_pids() -> Vec<(i32, String, PathBuf, i32)> {
    let mut out = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let cmd = String::from_utf8_lossy(&std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()).replace('\0', " ");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
        let ppid = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok().and_then(|s| s[s.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()).unwrap_or(0);
        out.push((pid, cmd, exe, ppid));
    }
    out
}

/// The runtime's own processes: (pid, kind).
trait Target {
    fn name(&self) -> &'static str;
    fn runtime_processes(&self) -> Vec<(i32, &'static str)>;
    fn daemon_pid(&self) -> i32;
}

struct BerthTarget {
    d: Daemon,
    exe: PathBuf,
}

impl Target for BerthTarget {
    fn name(&self) -> &'static str {
        "berth"
    }
    fn runtime_processes(&self) -> Vec<(i32, &'static str)> {
        let run = self.d.run_dir().display().to_string();
        let daemon = self.daemon_pid();
        let mut out = vec![(daemon, "daemon")];
        let procs = all_pids();
        let monitors: Vec<i32> = procs.iter().filter(|p| p.2 == self.exe && p.1.contains("__monitor") && p.1.contains(&run)).map(|p| p.0).collect();
        out.extend(monitors.iter().map(|p| (*p, "monitor")));
        // Pod inits are the berth processes in the pods' cgroups.
        for p in procs.iter().filter(|p| p.2 == self.exe && p.1.contains("__sandbox-init")) {
            out.push((p.0, "pod-init"));
        }
        out
    }
    fn daemon_pid(&self) -> i32 {
        self.d.pid().unwrap_or(0) as i32
    }
}

struct ContainerdTarget {
    c: Containerd,
}

impl Target for ContainerdTarget {
    fn name(&self) -> &'static str {
        "containerd"
    }
    fn runtime_processes(&self) -> Vec<(i32, &'static str)> {
        let shims = self.c.shim_pids();
        let mut out = vec![(self.daemon_pid(), "daemon")];
        out.extend(shims.iter().map(|p| (*p, "shim")));
        for p in all_pids() {
            if shims.contains(&p.3) && p.1.trim() == "/pause" {
                out.push((p.0, "pause"));
            }
        }
        out
    }
    fn daemon_pid(&self) -> i32 {
        self.c.pid().unwrap_or(0) as i32
    }
}

fn memory(t: &dyn Target) -> Value {
    let procs = t.runtime_processes();
    let mut by_kind: BTreeMap<&str, (u64, u64)> = BTreeMap::new();
    for (pid, kind) in &procs {
        let e = by_kind.entry(kind).or_default();
        e.0 += pss_kb(*pid);
        e.1 += 1;
    }
    let total: u64 = by_kind.values().map(|v| v.0).sum();
    json!({"pss_kb": total, "by_kind": by_kind.iter().map(|(k, v)| (k.to_string(), json!({"pss_kb": v.0, "processes": v.1}))).collect::<serde_json::Map<_, _>>(),
           "daemon_rss_kb": rss_kb(t.daemon_pid())})
}

fn pod_config(name: &str, logs: &Path) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata { name: name.into(), uid: format!("uid-{name}"), namespace: "bench".into(), attempt: 0 }),
        hostname: "bench".into(),
        log_directory: logs.display().to_string(),
        linux: Some(cri::LinuxPodSandboxConfig {
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(cri::NamespaceOption { pid: cri::NamespaceMode::Container as i32, ..Default::default() }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// RunPodSandbox + CreateContainer + StartContainer; returns (pod id, container id, time).
async fn start_pod(rt: &mut Rt, name: &str, logs: &Path) -> (String, String, Duration) {
    let (pod, cid, phases) = start_pod_phases(rt, name, logs).await;
    (pod, cid, phases.iter().sum())
}

/// The same with the time of each of the three calls.
async fn start_pod_phases(rt: &mut Rt, name: &str, logs: &Path) -> (String, String, [Duration; 3]) {
    let cfg = pod_config(name, logs);
    let t = Instant::now();
    let pod = rt
        .run_pod_sandbox(cri::RunPodSandboxRequest { config: Some(cfg.clone()), runtime_handler: String::new() })
        .await
        .expect("runp")
        .into_inner()
        .pod_sandbox_id;
    let c = cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: "sleep".into(), attempt: 0 }),
        image: spec(&busybox()),
        command: vec!["sleep".into(), "3600".into()],
        log_path: format!("{name}.log"),
        linux: Some(cri::LinuxContainerConfig::default()),
        ..Default::default()
    };
    let runp = t.elapsed();
    let t = Instant::now();
    let cid = rt
        .create_container(cri::CreateContainerRequest { pod_sandbox_id: pod.clone(), config: Some(c), sandbox_config: Some(cfg) })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    let create = t.elapsed();
    let t = Instant::now();
    rt.start_container(cri::StartContainerRequest { container_id: cid.clone() }).await.expect("start");
    (pod, cid, [runp, create, t.elapsed()])
}

async fn remove_pod(rt: &mut Rt, pod: &str) -> Duration {
    let t = Instant::now();
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: pod.into() }).await.expect("stopp");
    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: pod.into() }).await.expect("rmp");
    t.elapsed()
}

async fn wait_ready(rt: &mut Rt) {
    loop {
        if let Ok(s) = rt.status(cri::StatusRequest { verbose: false }).await {
            if let Some(st) = s.into_inner().status {
                if st.conditions.iter().filter(|c| c.r#type == "RuntimeReady" || c.r#type == "NetworkReady").all(|c| c.status) {
                    return;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

struct Clients {
    rt: Rt,
    images: ImageServiceClient<Channel>,
}

async fn measure(t: &mut dyn Target, c: &mut Clients, o: &Opts, start_time: Duration, big_bytes: u64) -> Value {
    let (seq, par, execs) = if o.quick { (5, 3, 10) } else { (50, 10, 100) };
    let logs = TempDir::new("bench-logs");
    let mut r = serde_json::Map::new();
    r.insert("cold_start_ms".into(), json!(ms(start_time)));
    wait_ready(&mut c.rt).await;
    pull(&mut c.images, &busybox()).await.expect("pull busybox");
    tokio::time::sleep(Duration::from_millis(500)).await;
    r.insert("memory_0_pods".into(), memory(t));
    // Sequential pod starts, pods left running.
    let mut pods = vec![];
    let mut starts = vec![];
    let mut phases: [Vec<f64>; 3] = Default::default();
    for i in 0..seq {
        let (pod, cid, ph) = start_pod_phases(&mut c.rt, &format!("bench-{}-{i}", t.name()), logs.path()).await;
        starts.push(ms(ph.iter().sum()));
        for (k, d) in ph.iter().enumerate() {
            phases[k].push(ms(*d));
        }
        pods.push((pod, cid));
        if i + 1 == 10.min(seq) {
            tokio::time::sleep(Duration::from_millis(300)).await;
            r.insert("memory_10_pods".into(), memory(t));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    r.insert(format!("memory_{seq}_pods"), memory(t));
    r.insert("pod_start_sequential_ms".into(), summary(&starts));
    r.insert("run_pod_sandbox_ms".into(), summary(&phases[0]));
    r.insert("create_container_ms".into(), summary(&phases[1]));
    r.insert("start_container_ms".into(), summary(&phases[2]));
    // ExecSync round trips.
    let mut ex = vec![];
    for _ in 0..execs {
        let t0 = Instant::now();
        let resp =
            c.rt.exec_sync(cri::ExecSyncRequest { container_id: pods[0].1.clone(), cmd: vec!["true".into()], timeout: 10 }).await.expect("exec").into_inner();
        assert_eq!(resp.exit_code, 0);
        ex.push(ms(t0.elapsed()));
    }
    r.insert("exec_sync_ms".into(), summary(&ex));
    // Stop + remove.
    let mut rm = vec![];
    for (pod, _) in pods.drain(..) {
        rm.push(ms(remove_pod(&mut c.rt, &pod).await));
    }
    r.insert("pod_stop_remove_ms".into(), summary(&rm));
    // Parallel pod starts.
    let mut tasks = vec![];
    for i in 0..par {
        let mut rt = c.rt.clone();
        let name = format!("bench-par-{}-{i}", t.name());
        let logs = logs.path().to_path_buf();
        tasks.push(tokio::spawn(async move { start_pod(&mut rt, &name, &logs).await }));
    }
    let mut par_ms = vec![];
    for task in tasks {
        let (pod, _, d) = task.await.expect("task");
        par_ms.push(ms(d));
        pods.push((pod, String::new()));
    }
    r.insert("pod_start_parallel_ms".into(), summary(&par_ms));
    for (pod, _) in pods.drain(..) {
        remove_pod(&mut c.rt, &pod).await;
    }
    // Cold pull + unpack of the big image.
    let _ = c.images.remove_image(cri::RemoveImageRequest { image: spec(&big_image()) }).await;
    let t0 = Instant::now();
    pull(&mut c.images, &big_image()).await.expect("pull big image");
    let pull_s = t0.elapsed().as_secs_f64();
    r.insert("pull_big_image_s".into(), json!(pull_s));
    r.insert("unpack_mb_per_s".into(), json!(big_bytes as f64 / 1e6 / pull_s));
    let _ = c.images.remove_image(cri::RemoveImageRequest { image: spec(&big_image()) }).await;
    Value::Object(r)
}

fn per_pod_kb(r: &Value, pods: usize) -> f64 {
    let at = r[format!("memory_{pods}_pods")]["pss_kb"].as_f64().unwrap_or(0.0);
    let zero = r["memory_0_pods"]["pss_kb"].as_f64().unwrap_or(0.0);
    (at - zero) / pods as f64
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("dns") {
        return berth_integration::dns_bench::run(berth_integration::dns_bench::Opts::parse(&args)).await;
    }
    let o = opts();
    let seq = if o.quick { 5 } else { 50 };
    eprintln!("berth-bench: pushing the ~200 MB image");
    let big_bytes = push_big_image().await;

    // Berth.
    let (bcni, bbridge) = cni_dir("b", 230);
    let _bguard = LinkGuard(bbridge);
    let bcfg = format!("[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{}\"]\n", bcni.path().join("conf").display(), bcni.path().join("bin").display());
    eprintln!("berth-bench: berth");
    let t0 = Instant::now();
    let d = Daemon::start(&bcfg).await;
    let mut clients = Clients { rt: d.runtime().await, images: d.images().await };
    wait_ready(&mut clients.rt).await;
    let b_start = t0.elapsed();
    let mut bt = BerthTarget { exe: std::fs::canonicalize(berth_bin()).unwrap(), d };
    let mut berth = measure(&mut bt, &mut clients, &o, b_start, big_bytes).await;
    // Re-adoption: restart with pods running.
    let logs = TempDir::new("bench-readopt");
    let mut pods = vec![];
    for i in 0..seq {
        pods.push(start_pod(&mut clients.rt, &format!("bench-readopt-{i}"), logs.path()).await.0);
    }
    bt.d.stop();
    let t0 = Instant::now();
    bt.d.restart().await;
    let mut rt = bt.d.runtime().await;
    wait_ready(&mut rt).await;
    let n = rt.list_containers(cri::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers.len();
    berth["restart_with_pods_ms"] = json!(ms(t0.elapsed()));
    berth["restart_with_pods_count"] = json!(n);
    for p in &pods {
        remove_pod(&mut rt, p).await;
    }
    drop(bt);

    // containerd.
    let (ccni, cbridge) = cni_dir("c", 231);
    let _cguard = LinkGuard(cbridge);
    eprintln!("berth-bench: containerd");
    let t0 = Instant::now();
    let ctrd = Containerd::start(&ccni.path().join("conf"), &ccni.path().join("bin"), &test_registry()).await;
    let mut clients = Clients { rt: ctrd.runtime().await, images: ctrd.images().await };
    wait_ready(&mut clients.rt).await;
    let c_start = t0.elapsed();
    let mut ct = ContainerdTarget { c: ctrd };
    let mut containerd = measure(&mut ct, &mut clients, &o, c_start, big_bytes).await;
    let logs = TempDir::new("bench-readopt-c");
    let mut pods = vec![];
    for i in 0..seq {
        pods.push(start_pod(&mut clients.rt, &format!("bench-readopt-c-{i}"), logs.path()).await.0);
    }
    let t0 = Instant::now();
    ct.c.restart().await;
    let mut rt = ct.c.runtime().await;
    wait_ready(&mut rt).await;
    let n = rt.list_containers(cri::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers.len();
    containerd["restart_with_pods_ms"] = json!(ms(t0.elapsed()));
    containerd["restart_with_pods_count"] = json!(n);
    for p in &pods {
        remove_pod(&mut rt, p).await;
    }
    drop(ct);

    report(&o, &berth, &containerd, seq);
}

fn version(cmd: &str, arg: &str) -> String {
    std::process::Command::new(cmd).arg(arg).output().map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string()).unwrap_or_default()
}

fn report(o: &Opts, b: &Value, c: &Value, seq: usize) {
    let rows: Vec<(&str, f64, f64, &str)> = vec![
        (
            "pod start, sequential (median ms)",
            b["pod_start_sequential_ms"]["median"].as_f64().unwrap(),
            c["pod_start_sequential_ms"]["median"].as_f64().unwrap(),
            "≤ 0.3",
        ),
        ("  RunPodSandbox (median ms)", b["run_pod_sandbox_ms"]["median"].as_f64().unwrap(), c["run_pod_sandbox_ms"]["median"].as_f64().unwrap(), ""),
        ("  CreateContainer (median ms)", b["create_container_ms"]["median"].as_f64().unwrap(), c["create_container_ms"]["median"].as_f64().unwrap(), ""),
        ("  StartContainer (median ms)", b["start_container_ms"]["median"].as_f64().unwrap(), c["start_container_ms"]["median"].as_f64().unwrap(), ""),
        ("pod start, sequential (p99 ms)", b["pod_start_sequential_ms"]["p99"].as_f64().unwrap(), c["pod_start_sequential_ms"]["p99"].as_f64().unwrap(), ""),
        (
            "pod start, 10 parallel (median ms)",
            b["pod_start_parallel_ms"]["median"].as_f64().unwrap(),
            c["pod_start_parallel_ms"]["median"].as_f64().unwrap(),
            "",
        ),
        ("pod start, 10 parallel (p99 ms)", b["pod_start_parallel_ms"]["p99"].as_f64().unwrap(), c["pod_start_parallel_ms"]["p99"].as_f64().unwrap(), ""),
        ("pod stop+remove (median ms)", b["pod_stop_remove_ms"]["median"].as_f64().unwrap(), c["pod_stop_remove_ms"]["median"].as_f64().unwrap(), ""),
        ("pod stop+remove (p99 ms)", b["pod_stop_remove_ms"]["p99"].as_f64().unwrap(), c["pod_stop_remove_ms"]["p99"].as_f64().unwrap(), ""),
        (
            "daemon RSS idle (MB)",
            b["memory_0_pods"]["daemon_rss_kb"].as_f64().unwrap() / 1024.0,
            c["memory_0_pods"]["daemon_rss_kb"].as_f64().unwrap() / 1024.0,
            "≤ 0.5",
        ),
        ("runtime PSS, 0 pods (MB)", b["memory_0_pods"]["pss_kb"].as_f64().unwrap() / 1024.0, c["memory_0_pods"]["pss_kb"].as_f64().unwrap() / 1024.0, ""),
        (
            "runtime PSS, 10 pods (MB)",
            b["memory_10_pods"]["pss_kb"].as_f64().unwrap_or(0.0) / 1024.0,
            c["memory_10_pods"]["pss_kb"].as_f64().unwrap_or(0.0) / 1024.0,
            "",
        ),
        (
            "runtime PSS, 50 pods (MB)",
            b[format!("memory_{seq}_pods")]["pss_kb"].as_f64().unwrap() / 1024.0,
            c[format!("memory_{seq}_pods")]["pss_kb"].as_f64().unwrap() / 1024.0,
            "",
        ),
        ("per-pod overhead (MB PSS)", per_pod_kb(b, seq) / 1024.0, per_pod_kb(c, seq) / 1024.0, "≤ 0.2"),
        ("pull+unpack 200 MB image (s)", b["pull_big_image_s"].as_f64().unwrap(), c["pull_big_image_s"].as_f64().unwrap(), "≤ 0.67"),
        ("unpack throughput (MB/s)", b["unpack_mb_per_s"].as_f64().unwrap(), c["unpack_mb_per_s"].as_f64().unwrap(), "≥ 1.5"),
        ("ExecSync round trip (median ms)", b["exec_sync_ms"]["median"].as_f64().unwrap(), c["exec_sync_ms"]["median"].as_f64().unwrap(), "≤ 0.5"),
        ("ExecSync round trip (p99 ms)", b["exec_sync_ms"]["p99"].as_f64().unwrap(), c["exec_sync_ms"]["p99"].as_f64().unwrap(), ""),
        ("cold start to ready (ms)", b["cold_start_ms"].as_f64().unwrap(), c["cold_start_ms"].as_f64().unwrap(), ""),
        ("restart with pods to ready (ms)", b["restart_with_pods_ms"].as_f64().unwrap(), c["restart_with_pods_ms"].as_f64().unwrap(), ""),
    ];
    println!("{:<38} {:>12} {:>12} {:>8} {:>8}", "", "berth", "containerd", "ratio", "target");
    for (name, bv, cv, target) in &rows {
        println!("{name:<38} {bv:>12.1} {cv:>12.1} {:>8.2} {target:>8}", bv / cv);
    }
    let machine = json!({
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "cgroup": if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() { "v2" } else { "v1" },
        "berth": version(&berth_bin().display().to_string(), "--version"),
        "containerd": version("containerd", "--version"),
        "runc": version("runc", "--version"),
        "quick": o.quick,
        "pods": seq,
    });
    let all = json!({"machine": machine, "berth": b, "containerd": c,
        "table": rows.iter().map(|(n, bv, cv, t)| json!({"metric": n, "berth": bv, "containerd": cv, "ratio": bv / cv, "target": t})).collect::<Vec<_>>()});
    std::fs::write(&o.out, serde_json::to_vec_pretty(&all).unwrap()).expect("write results");
    eprintln!("berth-bench: figures written to {}", o.out.display());
}
