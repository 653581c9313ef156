//! `berth node` and the machine's resources: the Summary API (/stats/summary) against what
//! the pods really use, node-pressure eviction under a memory.available threshold, and image
//! garbage collection on a small image filesystem.
use berth::cri::v1 as cri;
use berth_integration::kubelet::*;
use berth_integration::registry::{push_image, Layer, TarBuilder};
use berth_integration::*;
use serde_json::Value;
use std::time::{Duration, Instant};

async fn summary(url: &str) -> Value {
    serde_json::from_str(&get(&format!("{url}/stats/summary")).await).expect("summary is JSON")
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a number: {v}"))
}

const STATS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: stats
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: scratch
    emptyDir: {}
  - name: ram
    emptyDir: {medium: Memory}
  containers:
  - name: main
    image: BUSYBOX
    command: ['sh', '-c', 'dd if=/dev/zero of=/scratch/f bs=1M count=8; dd if=/dev/zero of=/ram/f bs=1M count=24; echo filled; i=0; while [ $i -lt 200000 ]; do i=$((i+1)); done; echo spun; httpd -p 8080 -h /scratch; exec sleep 3600']
    volumeMounts: [{name: scratch, mountPath: /scratch}, {name: ram, mountPath: /ram}]
"#;

#[tokio::test]
async fn stats_summary_reports_the_node_and_what_pods_use() {
    // A private pod network (own bridge, subnet, IPAM dir) so the pod has an eth0 to count.
    let net = TempDir::new("statsnet");
    let bridge = format!("berths{}", std::process::id() % 10000);
    let _guard = LinkGuard(bridge.clone());
    let octet = 100 + std::process::id() % 150;
    let conflist = serde_json::json!({"cniVersion": "1.0.0", "name": "berth-stats", "plugins": [{
        "type": "berth-cni", "bridge": bridge, "isGateway": true, "ipMasq": false,
        "ipam": {"ranges": [[{"subnet": format!("10.{octet}.98.0/24")}]], "dataDir": net.path().join("ipam")},
    }]});
    std::fs::create_dir_all(net.path().join("conf")).unwrap();
    std::fs::write(net.path().join("conf/10-stats.conflist"), conflist.to_string()).unwrap();
    let own = berth_bin().parent().unwrap().display().to_string();
    let config = format!("[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{own}\"]\n", net.path().join("conf").display());
    let d = Daemon::start_node(&config).await;
    let url = d.kubelet_url().await;
    write(&d.manifests(), "stats.yaml", STATS);
    let p = wait_for(&url, "stats", "Running", Duration::from_secs(60), |p| phase(p) == "Running").await;
    let pod_ip = p["status"]["podIP"].as_str().expect("the pod has an IP on the private bridge").to_string();
    assert!(pod_ip.starts_with(&format!("10.{octet}.98.")), "{pod_ip}");
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    // Wait until the container has filled its volumes and burnt some CPU.
    let log = d.data_dir().join("pod-logs").join(format!("default_stats-berth-it_{uid}/main/0.log"));
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("spun") {
        assert!(start.elapsed() < Duration::from_secs(60), "the container did not finish its work");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Traffic to the pod's own address (its httpd), to show up in its eth0 counters.
    for _ in 0..5 {
        let _ =
            tokio::process::Command::new("curl").args(["-s", "--max-time", "3", &format!("http://{pod_ip}:8080/f")]).arg("-o").arg("/dev/null").status().await;
    }
    let _first = summary(&url).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let s = summary(&url).await;

    let node = &s["node"];
    assert_eq!(node["nodeName"], "berth-it");
    assert!(node["startTime"].is_string());
    assert!(u(&node["cpu"]["usageCoreNanoSeconds"]) > 0);
    assert!(node["cpu"]["usageNanoCores"].is_u64(), "a rate after two samples: {}", node["cpu"]);
    // Node memory agrees with /proc/meminfo: capacity exactly, availability roughly.
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib = |k: &str| meminfo.lines().find(|l| l.starts_with(&format!("{k}:"))).unwrap().split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024;
    let total = kib("MemTotal");
    let avail = u(&node["memory"]["availableBytes"]);
    assert_eq!(u(&node["memory"]["workingSetBytes"]) + avail, total);
    let expect = kib("MemFree") + kib("Inactive(file)");
    assert!(avail.abs_diff(expect) < 256 << 20, "available {avail} vs /proc/meminfo {expect}");
    let fs = &node["fs"];
    assert!(u(&fs["capacityBytes"]) > u(&fs["availableBytes"]) && u(&fs["usedBytes"]) > 0 && u(&fs["inodes"]) > u(&fs["inodesFree"]), "{fs}");
    assert!(u(&node["runtime"]["imageFs"]["usedBytes"]) > 0, "{}", node["runtime"]);
    assert!(u(&node["rlimit"]["maxpid"]) > u(&node["rlimit"]["curproc"]) && u(&node["rlimit"]["curproc"]) > 10);

    let pods = s["pods"].as_array().unwrap();
    let ps = pods.iter().find(|p| p["podRef"]["name"] == "stats-berth-it").unwrap_or_else(|| panic!("no stats pod in {s}"));
    assert_eq!(ps["podRef"]["namespace"], "default");
    assert_eq!(ps["podRef"]["uid"], uid.as_str());
    let c = &ps["containers"].as_array().unwrap()[0];
    assert_eq!(c["name"], "main");
    assert!(c["startTime"].is_string());
    // The 24 MiB written to the memory-backed emptyDir is the container's working set.
    let ws = u(&c["memory"]["workingSetBytes"]);
    assert!(ws >= 24 << 20, "container working set {ws}");
    assert!(u(&ps["memory"]["workingSetBytes"]) >= ws);
    assert!(u(&c["cpu"]["usageCoreNanoSeconds"]) > 10_000_000, "{}", c["cpu"]);
    assert!(u(&c["logs"]["usedBytes"]) > 0);
    assert!(c["rootfs"]["usedBytes"].is_u64());
    let vol = |name: &str| ps["volume"].as_array().unwrap().iter().find(|v| v["name"] == name).cloned().unwrap_or_else(|| panic!("no volume {name}: {ps}"));
    assert!(u(&vol("scratch")["usedBytes"]) >= 8 << 20, "{}", vol("scratch"));
    assert!(u(&vol("ram")["usedBytes"]) >= 24 << 20, "{}", vol("ram"));
    // A tmpfs volume reports its own filesystem's capacity.
    assert!(u(&vol("ram")["capacityBytes"]) != u(&fs["capacityBytes"]));
    assert!(u(&ps["ephemeral-storage"]["usedBytes"]) >= 32 << 20);
    assert!(u(&ps["process_stats"]["process_count"]) >= 1);
    // The pod's default interface: the 8 MiB file went out through it five times.
    assert_eq!(ps["network"]["name"], "eth0", "{}", ps["network"]);
    assert!(u(&ps["network"]["txBytes"]) > 5 * (8 << 20), "{}", ps["network"]);
    assert!(u(&ps["network"]["rxBytes"]) > 0);
    assert!(ps["network"]["interfaces"].as_array().unwrap().iter().any(|i| i["name"] == "eth0"));
    // The node's interfaces (the default-route one first), without loopback.
    let ifaces = node["network"]["interfaces"].as_array().unwrap();
    assert!(!ifaces.is_empty() && ifaces.iter().all(|i| i["name"] != "lo" && i["rxBytes"].is_u64()), "{}", node["network"]);
}

/// memory.available as the node computes it (capacity minus the working set).
fn memory_available() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib = |k: &str| meminfo.lines().find(|l| l.starts_with(&format!("{k}:"))).unwrap().split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024;
    kib("MemFree") + kib("Inactive(file)")
}

fn evicted(p: &Value) -> bool {
    phase(p) == "Failed" && p["status"]["reason"] == "Evicted"
}

#[tokio::test]
async fn memory_pressure_evicts_the_best_effort_pod_first() {
    // Once under a hard threshold, once under a soft one with its grace period (one after
    // the other: both fill memory).
    eviction_scenario(false).await;
    eviction_scenario(true).await;
}

async fn eviction_scenario(soft: bool) {
    // A threshold 512 MiB below what is available now: a pod filling 2 GiB crosses it, with
    // 1.5 GiB to spare for the page cache the kernel moves to the inactive list meanwhile
    // (which counts as available: on a build machine that alone has been several hundred MiB).
    let threshold_kib = (memory_available() - (512 << 20)) / 1024;
    let thresholds = if soft {
        format!("hard = \"\"\nsoft = \"memory.available<{threshold_kib}Ki\"\nsoft_grace_period = \"memory.available=3s\"\nmax_pod_grace_period = 2\n")
    } else {
        format!("hard = \"memory.available<{threshold_kib}Ki\"\n")
    };
    let config = format!("[eviction]\n{thresholds}monitoring_interval = \"1s\"\npressure_transition_period = \"60s\"\n");
    let d = Daemon::start_node(&config).await;
    let url = d.kubelet_url().await;
    write(
        &d.manifests(),
        "besteffort.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: besteffort\nspec:\n  terminationGracePeriodSeconds: 30\n  containers:\n  - name: main\n    image: BUSYBOX\n    command: ['sh', '-c', 'trap \"exit 0\" TERM; while true; do sleep 1; done']\n",
    );
    // Burstable, using 2 GiB of memory within its 2560Mi request once told to.
    write(
        &d.manifests(),
        "burstable.yaml",
        r#"apiVersion: v1
kind: Pod
metadata:
  name: burstable
spec:
  terminationGracePeriodSeconds: 30
  volumes:
  - name: fill
    emptyDir: {medium: Memory}
  containers:
  - name: hog
    image: BUSYBOX
    resources: {requests: {memory: 2560Mi, cpu: 10m}}
    command: ['sh', '-c', 'until [ -f /fill/go ]; do sleep 0.2; done; dd if=/dev/zero of=/fill/data bs=1M count=2048; echo filled; exec sleep 3600']
    volumeMounts: [{name: fill, mountPath: /fill}]
"#,
    );
    let be = wait_for(&url, "besteffort", "Running", Duration::from_secs(60), |p| phase(p) == "Running").await;
    let bu = wait_for(&url, "burstable", "Running", Duration::from_secs(60), |p| phase(p) == "Running").await;
    assert_eq!(be["status"]["qosClass"], "BestEffort");
    assert_eq!(bu["status"]["qosClass"], "Burstable");
    // Tell the burstable pod to fill its memory-backed volume.
    let bu_uid = bu["metadata"]["uid"].as_str().unwrap();
    std::fs::write(d.data_dir().join("pods").join(bu_uid).join("volumes/kubernetes.io~empty-dir/fill/go"), b"").unwrap();

    // The BestEffort pod uses more than its (zero) request: it goes first, although the
    // burstable pod uses far more memory.
    let be = wait_for(&url, "besteffort", "evicted", Duration::from_secs(60), evicted).await;
    let msg = be["status"]["message"].as_str().unwrap();
    assert!(msg.starts_with("The node was low on resource: memory. Threshold quantity: "), "{msg}");
    assert!(msg.contains("Container main was using"), "{msg}");
    assert!(msg.contains("request is 0, has larger consumption of memory."), "{msg}");
    assert_eq!(condition(&be, "Ready"), "False");
    assert_eq!(condition(&be, "DisruptionTarget"), "True");
    // Its container was stopped by its TERM trap (exit 0) within the 1 s hard-eviction grace.
    let state = &container(&be, "main")["state"];
    assert!(state["terminated"].is_object(), "{state}");
    // The pressure stays (the 2 GiB are still held), so the burstable pod follows; being
    // within its request, its message names no container.
    let bu = wait_for(&url, "burstable", "evicted", Duration::from_secs(60), evicted).await;
    let msg = bu["status"]["message"].as_str().unwrap();
    assert!(msg.starts_with("The node was low on resource: memory."), "{msg}");
    assert!(!msg.contains("was using"), "{msg}");
    // Eviction order, from the node's log.
    let log = d.log();
    let order: Vec<&str> = log.lines().filter(|l| l.contains("evicting:")).collect();
    assert!(order.len() >= 2 && order[0].contains("besteffort-berth-it") && order[1].contains("burstable-berth-it"), "{order:#?}");
    // Hard: 1 s to stop; soft: the pod's 30 s capped by max_pod_grace_period.
    let (hard, grace) = if soft { ("hard=false", "grace_seconds=2") } else { ("hard=true", "grace_seconds=1") };
    assert!(order[0].contains(hard) && order[0].contains(grace), "{}", order[0]);
    // The evicted pod's memory-backed volume is gone, and with it the pressure's cause.
    assert!(!d.data_dir().join("pods").join(bu_uid).join("volumes/kubernetes.io~empty-dir/fill/data").exists());
    // Under MemoryPressure (kept for the transition period) a new BestEffort pod is refused.
    write(
        &d.manifests(),
        "late.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: late\nspec:\n  containers:\n  - name: main\n    image: BUSYBOX\n    command: ['sleep', '3600']\n",
    );
    let late = wait_for(&url, "late", "refused", Duration::from_secs(30), evicted).await;
    assert_eq!(late["status"]["message"], "The node had condition: [MemoryPressure]. ");
    let events = get(&format!("{url}/events")).await;
    assert!(events.contains("\"reason\":\"Evicted\""), "{events}");
}

/// xorshift bytes: incompressible, so a layer's size on disk is what it says.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An image with a static busybox (so it can run) and `mib` MiB of noise.
async fn push_big_image(repo: &str, mib: usize, seed: u64) -> String {
    let busybox = std::fs::read("/bin/busybox").expect("busybox-static at /bin/busybox");
    let tar = TarBuilder::new()
        .dir("bin/")
        .executable("bin/busybox", &busybox)
        .symlink("bin/sh", "busybox")
        .symlink("bin/sleep", "busybox")
        .file("noise", &noise(mib << 20, seed))
        .finish();
    let registry = test_registry();
    let tag = format!("t{}", std::process::id());
    push_image(&registry, repo, &tag, &[Layer::gzip_tar(&tar)]).await;
    format!("{registry}/{repo}:{tag}")
}

#[tokio::test]
async fn image_garbage_collection_frees_space_and_keeps_images_in_use() {
    let big = [push_big_image("berth/gc-one", 12, 1).await, push_big_image("berth/gc-two", 12, 2).await, push_big_image("berth/gc-three", 12, 3).await];
    // The image store on a 128 MiB tmpfs; collection above 50 %, down to 20 %; the second
    // image is pinned.
    let config = format!("[images]\npinned = [\"{}\"]\n[eviction]\nhard = \"\"\n[image_gc]\nhigh_threshold_percent = 50\nlow_threshold_percent = 20\nminimum_age = \"0s\"\nperiod = \"1s\"\n", big[1]);
    let d = Daemon::start_node_with(&config, |dir| {
        let images = dir.join("data/images");
        std::fs::create_dir_all(&images).unwrap();
        let st = std::process::Command::new("mount").args(["-t", "tmpfs", "-o", "size=128m", "berth-it-imagefs"]).arg(&images).status().unwrap();
        assert!(st.success(), "mount tmpfs");
    })
    .await;
    let url = d.kubelet_url().await;
    // The first image runs in a pod: in use, so it must stay.
    write(
        &d.manifests(),
        "user.yaml",
        &format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: user\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: {}\n    command: ['/bin/sleep', '3600']\n", big[0]),
    );
    wait_for(&url, "user", "running", Duration::from_secs(60), |p| container(p, "main")["state"]["running"].is_object()).await;
    let mut images = d.images().await;
    let imagefs = d.data_dir().join("images");
    let used_percent = || {
        let out = std::process::Command::new("df").args(["--output=pcent"]).arg(&imagefs).output().unwrap();
        String::from_utf8_lossy(&out.stdout).lines().nth(1).unwrap().trim().trim_end_matches('%').parse::<u32>().unwrap()
    };
    let before = used_percent();
    assert!(before < 50, "one image in use already fills {before}%");
    // Two more images take the filesystem over the high threshold.
    for img in &big[1..] {
        pull(&mut images, img).await.expect("pull");
    }
    let start = Instant::now();
    loop {
        let present: Vec<bool> = {
            let mut v = vec![];
            for img in &big {
                v.push(status(&mut images, img).await.is_some());
            }
            v
        };
        if present == [true, true, false] {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "images present {present:?}, usage {}%\n{}", used_percent(), d.log());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after = used_percent();
    assert!(after < before * 2 + 5, "usage after collection {after}% (one image {before}%)");
    assert!(d.log().contains("image garbage collected"));
    // Only the unused image went: nothing else could, so the shortfall is reported.
    assert!(d.log().contains("image garbage collection could not free enough space"));
    let all = list(&mut images).await;
    assert!(all.iter().any(|i| i.pinned && i.repo_tags.contains(&big[1])), "the pinned image is kept: {all:?}");
    let p = pod(&url, "user").await.unwrap();
    assert_eq!(phase(&p), "Running");
    let mut rt = d.runtime().await;
    let running = rt.list_containers(cri::ListContainersRequest { filter: None }).await.unwrap().into_inner().containers;
    assert!(running.iter().any(|c| c.state == cri::ContainerState::ContainerRunning as i32), "{running:?}\n{p}\n{}", d.log());
}

#[tokio::test]
async fn metrics_cadvisor_serves_the_runtime_metrics_as_prometheus_text() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    write(
        &d.manifests(),
        "cadvisor.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: cadvisor\n  namespace: metrics-ns\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: BUSYBOX\n    command: ['sh', '-c', 'while true; do :; done']\n",
    );
    wait_for(&url, "cadvisor", "running", Duration::from_secs(60), |p| container(p, "main")["state"]["running"].is_object()).await;
    let series_of = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("container_cpu_usage_seconds_total{") && l.contains("container=\"main\"") && l.contains("pod=\"cadvisor-berth-it\""))
            .map(str::to_string)
    };
    let start = Instant::now();
    let (text, series) = loop {
        let text = get(&format!("{url}/metrics/cadvisor")).await;
        if let Some(s) = series_of(&text) {
            break (text, s);
        }
        assert!(start.elapsed() < Duration::from_secs(20), "no CPU series for the pod's container:\n{text}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert!(text.contains("# TYPE container_cpu_usage_seconds_total counter\n"), "{text}");
    assert!(text.contains("# HELP container_memory_working_set_bytes "), "{text}");
    assert!(series.contains("namespace=\"metrics-ns\"") && series.contains("cpu=\"total\""), "{series}");
    // name{labels} value timestamp_ms
    let fields: Vec<&str> = series.rsplitn(3, ' ').collect();
    assert!(fields.len() == 3 && fields[0].parse::<u64>().is_ok() && fields[1].parse::<u64>().is_ok(), "{series}");
    assert!(text.lines().any(|l| l.starts_with("container_memory_working_set_bytes{") && l.contains("pod=\"cadvisor-berth-it\"")), "{text}");
}
