//! `berth node`: Pod manifests in a directory run as on a kubelet, seen through the kubelet
//! API (/pods) and the CRI.
use berth::cri::v1 as cri;
use berth_integration::kubelet::*;
use berth_integration::*;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const MYAPP: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: myapp-pod
  labels: {app.kubernetes.io/name: MyApp}
spec:
  terminationGracePeriodSeconds: 2
  volumes:
  - name: shared
    emptyDir: {}
  initContainers:
  - name: init-myservice
    image: BUSYBOX
    command: ['sh', '-c', 'sleep 1; cut -d" " -f1 /proc/uptime > /shared/myservice']
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: init-mydb
    image: BUSYBOX
    command: ['sh', '-c', 'until [ -f /shared/myservice ]; do sleep 0.1; done; sleep 0.2; cut -d" " -f1 /proc/uptime > /shared/mydb']
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: myapp-container
    image: BUSYBOX
    command: ['sh', '-c', 'echo "The app is running! $(POD_NAME)"; cat /shared/myservice /shared/mydb; exec sleep 3600']
    env:
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    volumeMounts: [{name: shared, mountPath: /shared}]
"#;

#[tokio::test]
async fn myapp_pod_runs_after_its_init_containers_and_goes_away_with_its_manifest() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    let health = tokio::process::Command::new("curl").args(["-sk", &format!("{url}/healthz")]).output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&health.stdout), "ok");
    write(&d.manifests(), "myapp.yaml", MYAPP);
    let p = wait_for(&url, "myapp-pod", "Running", Duration::from_secs(60), |p| phase(p) == "Running").await;
    assert_eq!(condition(&p, "Initialized"), "True");
    assert_eq!(condition(&p, "Ready"), "True");
    assert_eq!(condition(&p, "PodScheduled"), "True");
    assert_eq!(p["status"]["qosClass"], "BestEffort");
    let inits = p["status"]["initContainerStatuses"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    for s in inits {
        assert_eq!(s["state"]["terminated"]["reason"], "Completed", "{s}");
        assert_eq!(s["state"]["terminated"]["exitCode"], 0);
        // as the kubelet reports a completed init container: ready, no longer started
        assert_eq!((s["ready"].as_bool(), s["started"].as_bool()), (Some(true), Some(false)), "{s}");
    }
    let app = &p["status"]["containerStatuses"][0];
    assert!(app["state"]["running"]["startedAt"].is_string());
    assert_eq!(app["ready"], true);
    assert!(app["containerID"].as_str().unwrap().starts_with("berth://"));
    // The app saw both init containers' files, in order, and its env expanded.
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let log = d.data_dir().join("pod-logs").join(format!("default_myapp-pod-berth-it_{uid}/myapp-container/0.log"));
    let start = Instant::now();
    let mut lines: Vec<String> = vec![];
    while lines.len() < 3 && start.elapsed() < Duration::from_secs(10) {
        lines = std::fs::read_to_string(&log).unwrap_or_default().lines().map(|l| l.splitn(4, ' ').nth(3).unwrap_or("").to_string()).collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(lines[0], "The app is running! myapp-pod-berth-it");
    let t1: f64 = lines[1].parse().unwrap();
    let t2: f64 = lines[2].parse().unwrap();
    assert!(t1 < t2, "init-myservice finished before init-mydb: {t1} {t2}");
    // The pod cgroup sits in the kubelet-style tree.
    let cg = format!("/sys/fs/cgroup/memory{}/besteffort/pod{uid}", d.cgroup_root());
    assert!(Path::new(&cg).is_dir(), "{cg}");

    std::fs::remove_file(d.manifests().join("myapp.yaml")).unwrap();
    wait_gone(&url, "myapp-pod").await;
    let mut rt = d.runtime().await;
    let left = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
    assert!(left.is_empty(), "sandboxes left: {left:?}");
    assert!(!Path::new(&cg).exists(), "the pod cgroup is removed");
}

#[tokio::test]
async fn restart_policies_and_crash_loop_back_off() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    let pod = |name: &str, policy: &str, script: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  restartPolicy: {policy}\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: BUSYBOX\n    command: ['sh', '-c', '{script}']\n")
    };
    write(&d.manifests(), "never-fails.yaml", &pod("never-fails", "Never", "exit 3"));
    write(&d.manifests(), "onfailure-ok.yaml", &pod("onfailure-ok", "OnFailure", "exit 0"));
    write(&d.manifests(), "always-crash.yaml", &pod("always-crash", "Always", "exit 1"));
    write(&d.manifests(), "bad.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: Not_Valid\nspec:\n  containers: []\n");
    let p = wait_for(&url, "never-fails", "Failed", Duration::from_secs(60), |p| phase(p) == "Failed").await;
    assert_eq!(p["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3);
    assert_eq!(p["status"]["containerStatuses"][0]["state"]["terminated"]["reason"], "Error");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    let p = wait_for(&url, "onfailure-ok", "Succeeded", Duration::from_secs(60), |p| phase(p) == "Succeeded").await;
    assert_eq!(p["status"]["containerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
    // Always: restarted at once, then held back 10 s, 20 s, ... in CrashLoopBackOff.
    let p = wait_for(&url, "always-crash", "CrashLoopBackOff", Duration::from_secs(60), |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    })
    .await;
    assert_eq!(phase(&p), "Running");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 1);
    assert!(p["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().unwrap().contains("back-off 10s"));
    assert_eq!(p["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1);
    let p = wait_for(&url, "always-crash", "a second restart after the back-off", Duration::from_secs(30), |p| {
        p["status"]["containerStatuses"][0]["restartCount"].as_i64().unwrap_or(0) >= 2
    })
    .await;
    let _ = p;
    let p = wait_for(&url, "always-crash", "back-off 20s", Duration::from_secs(30), |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().map(|m| m.contains("back-off 20s")).unwrap_or(false)
    })
    .await;
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 2);
    // The bad manifest is reported and did not stop the others.
    let errors: Value = serde_json::from_slice(&std::fs::read(d.data_dir().join("node/manifest-errors.json")).unwrap()).unwrap();
    let (file, msg) = errors.as_object().unwrap().iter().next().unwrap();
    assert!(file.ends_with("bad.yaml") && msg.as_str().unwrap().contains("metadata.name"), "{errors}");
}

#[tokio::test]
async fn a_failing_init_container_fails_the_pod_under_never() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    write(
        &d.manifests(),
        "initfail.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: initfail\nspec:\n  restartPolicy: Never\n  terminationGracePeriodSeconds: 1\n  initContainers:\n  - name: setup\n    image: BUSYBOX\n    command: ['sh', '-c', 'exit 2']\n  containers:\n  - name: main\n    image: BUSYBOX\n    command: ['sleep', '3600']\n",
    );
    let p = wait_for(&url, "initfail", "Failed", Duration::from_secs(60), |p| phase(p) == "Failed").await;
    assert_eq!(p["status"]["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 2);
    assert_eq!(p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing");
    assert_eq!(condition(&p, "Initialized"), "False");
}

#[tokio::test]
async fn pods_keep_running_across_a_node_restart() {
    let mut d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    write(&d.manifests(), "steady.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: steady\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: BUSYBOX\n    command: ['sleep', '3600']\n    resources:\n      limits: {cpu: 200m, memory: 64Mi}\n");
    let p = wait_for(&url, "steady", "Running", Duration::from_secs(60), |p| phase(p) == "Running").await;
    assert_eq!(p["status"]["qosClass"], "Guaranteed");
    let id = p["status"]["containerStatuses"][0]["containerID"].as_str().unwrap().to_string();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    // Guaranteed pods sit right under the root, the pod cgroup limited to its containers' sum.
    let limit = std::fs::read_to_string(format!("/sys/fs/cgroup/memory{}/pod{uid}/memory.limit_in_bytes", d.cgroup_root())).unwrap();
    assert_eq!(limit.trim(), "67108864");
    let quota = std::fs::read_to_string(format!("/sys/fs/cgroup/cpu{}/pod{uid}/cpu.cfs_quota_us", d.cgroup_root())).unwrap();
    assert_eq!(quota.trim(), "20000");
    // A crash-looping pod, restarted twice and now held back 20 s.
    write(&d.manifests(), "crashing.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: crashing\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: BUSYBOX\n    command: ['sh', '-c', 'exit 1']\n");
    let back_off_20 = |p: &Value| {
        container(p, "main")["restartCount"] == 2 && container(p, "main")["state"]["waiting"]["message"].as_str().is_some_and(|m| m.contains("back-off 20s"))
    };
    wait_for(&url, "crashing", "second back-off", Duration::from_secs(60), back_off_20).await;
    d.kill9();
    d.restart_after_kill9().await;
    let url = d.kubelet_url().await;
    let p = wait_for(&url, "steady", "Running again", Duration::from_secs(60), |p| phase(p) == "Running").await;
    assert_eq!(p["status"]["containerStatuses"][0]["containerID"].as_str().unwrap(), id, "the same container, not a new one");
    assert_eq!(p["status"]["containerStatuses"][0]["restartCount"], 0);
    // The restart count and the back-off survived: still 2 restarts, still held back 20 s.
    let p = pod(&url, "crashing").await.unwrap();
    assert!(back_off_20(&p), "{}", p["status"]);
    assert_eq!(container(&p, "main")["state"]["waiting"]["reason"], "CrashLoopBackOff");
    assert_eq!(container(&p, "main")["lastState"]["terminated"]["exitCode"], 1);
}

const PROBES: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: probes
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: web
    image: BUSYBOX
    command: ['sh', '-c', 'mkdir -p /www; echo up > /www/index.html; httpd -p 8080 -h /www; echo web-started; sleep 3; touch /www/ready; sleep 5; rm /www/ready; exec sleep 3600']
    ports: [{name: http, containerPort: 8080}]
    readinessProbe:
      httpGet: {path: /ready, port: http, httpHeaders: [{name: X-Probe, value: berth}]}
      periodSeconds: 1
      failureThreshold: 1
  - name: live
    image: BUSYBOX
    command: ['sh', '-c', 'echo attempt-$(cat /proc/uptime | cut -d" " -f1); touch /tmp/healthy; sleep 4; httpd -p 9090 -h /tmp; sleep 4; rm /tmp/healthy; exec sleep 3600']
    startupProbe:
      tcpSocket: {port: 9090}
      periodSeconds: 1
      failureThreshold: 30
    livenessProbe:
      exec: {command: ['test', '-f', '/tmp/healthy']}
      periodSeconds: 1
      failureThreshold: 2
      terminationGracePeriodSeconds: 1
"#;

#[tokio::test]
async fn probes_gate_readiness_and_restart_unhealthy_containers() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    write(&d.manifests(), "probes.yaml", PROBES);
    // Running but not ready: the readiness file does not exist yet, the startup probe's port is closed.
    let p =
        wait_for(&url, "probes", "running", Duration::from_secs(60), |p| phase(p) == "Running" && container(p, "web")["state"]["running"].is_object()).await;
    assert_eq!(container(&p, "web")["ready"], false, "{}", p["status"]);
    assert_eq!(container(&p, "live")["started"], false, "{}", p["status"]);
    assert_eq!(condition(&p, "Ready"), "False");
    // Readiness turns true once /ready serves 200, then false again when it is gone.
    wait_for(&url, "probes", "web ready", Duration::from_secs(20), |p| container(p, "web")["ready"] == true).await;
    wait_for(&url, "probes", "live started", Duration::from_secs(20), |p| container(p, "live")["started"] == true).await;
    wait_for(&url, "probes", "pod Ready", Duration::from_secs(20), |p| condition(p, "Ready") == "True").await;
    wait_for(&url, "probes", "web unready", Duration::from_secs(20), |p| container(p, "web")["ready"] == false && condition(p, "Ready") == "False").await;
    assert_eq!(container(&wait_for(&url, "probes", "-", Duration::from_secs(1), |_| true).await, "web")["restartCount"], 0);
    // Liveness fails twice after /tmp/healthy is removed: the container is killed and restarted.
    let p = wait_for(&url, "probes", "live restarted", Duration::from_secs(40), |p| container(p, "live")["restartCount"].as_i64() >= Some(1)).await;
    assert!(container(&p, "live")["lastState"]["terminated"].is_object(), "{}", p["status"]);
    // Events say why.
    let events: Value = serde_json::from_str(&get(&format!("{url}/events")).await).expect("event list");
    let msgs: Vec<String> =
        events["items"].as_array().unwrap().iter().map(|e| format!("{} {}", e["reason"].as_str().unwrap(), e["message"].as_str().unwrap())).collect();
    assert!(msgs.iter().any(|m| m.starts_with("Unhealthy Readiness probe failed: HTTP probe failed with statuscode: 404")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m.starts_with("Unhealthy Liveness probe failed")), "{msgs:?}");
    assert!(msgs.iter().any(|m| m == "Killing Container live failed liveness probe, will be restarted"), "{msgs:?}");
    // containerLogs: the current attempt, the previous one, tail and timestamps.
    let current = get(&format!("{url}/containerLogs/default/probes-berth-it/live")).await;
    let previous = get(&format!("{url}/containerLogs/default/probes-berth-it/live?previous=true")).await;
    assert!(current.starts_with("attempt-") && previous.starts_with("attempt-") && current != previous, "{current:?} {previous:?}");
    let web = get(&format!("{url}/containerLogs/default/probes-berth-it/web?tailLines=1&timestamps=true")).await;
    assert!(web.ends_with(" web-started\n") && web.contains('T'), "{web:?}");
    let missing = get(&format!("{url}/containerLogs/default/probes-berth-it/nope")).await;
    assert!(missing.contains("not valid"), "{missing:?}");
    // Metrics: the pod's start latency, what runs, and the probes' results.
    let metrics = get(&format!("{url}/metrics")).await;
    assert!(metrics.contains("kubelet_pod_start_duration_seconds_count 1\n"), "{metrics}");
    assert!(metrics.contains("kubelet_running_pods 1\n"), "{metrics}");
    assert!(metrics.contains("kubelet_running_containers{container_state=\"running\"} "), "{metrics}");
    assert!(metrics.contains("pod=\"probes-berth-it\",probe_type=\"Readiness\",result=\"failed\"}"), "{metrics}");
    assert!(metrics.contains("probe_type=\"Liveness\",result=\"successful\"}"), "{metrics}");
}

const HOOKS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: hooks
spec:
  terminationGracePeriodSeconds: 3
  volumes:
  - name: host
    hostPath: {path: HOSTDIR, type: Directory}
  containers:
  - name: polite
    image: BUSYBOX
    command: ['sh', '-c', 'trap "echo term >> /host/log; exit 0" TERM; until [ -f /tmp/post ]; do sleep 0.1; done; echo saw-post-start >> /host/log; while true; do sleep 0.1; done']
    volumeMounts: [{name: host, mountPath: /host}]
    lifecycle:
      postStart:
        exec: {command: ['sh', '-c', 'touch /tmp/post']}
      preStop:
        exec: {command: ['sh', '-c', 'echo pre-stop >> /host/log']}
  - name: stubborn
    image: BUSYBOX
    command: ['sh', '-c', 'trap "" TERM; while true; do sleep 0.1; done']
    lifecycle:
      preStop:
        sleep: {seconds: 1}
"#;

#[tokio::test]
async fn lifecycle_hooks_run_and_the_grace_period_is_enforced() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    let host = TempDir::new("hooks");
    write(&d.manifests(), "hooks.yaml", &HOOKS.replace("HOSTDIR", &host.path().display().to_string()));
    wait_for(&url, "hooks", "running", Duration::from_secs(60), |p| phase(p) == "Running" && container(p, "stubborn")["state"]["running"].is_object()).await;
    let log = host.path().join("log");
    let start = Instant::now();
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("saw-post-start") {
        assert!(start.elapsed() < Duration::from_secs(20), "postStart hook did not run");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Deleting the manifest: preStop, then SIGTERM; the stubborn one is killed when the 3 s are up.
    let removed = Instant::now();
    std::fs::remove_file(d.manifests().join("hooks.yaml")).unwrap();
    let start = Instant::now();
    while pod(&url, "hooks").await.is_some() {
        assert!(start.elapsed() < Duration::from_secs(30), "pod not removed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = removed.elapsed();
    assert!(took >= Duration::from_secs(2), "the stubborn container was not given its grace period ({took:?})");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "saw-post-start\npre-stop\nterm\n");
}

const VOLUMES: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: app-config}
data:
  game.properties: "lives=3"
  ui.properties: "color=blue"
---
apiVersion: v1
kind: Secret
metadata: {name: app-secret}
data:
  password: czNjcjN0
stringData:
  user: admin
---
apiVersion: v1
kind: Pod
metadata:
  name: vols
  labels: {tier: backend}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: cm
    configMap:
      name: app-config
      items: [{key: game.properties, path: conf/game, mode: 0600}]
  - name: sec
    secret: {secretName: app-secret, defaultMode: 0400}
  - name: info
    downwardAPI:
      items:
      - {path: labels, fieldRef: {fieldPath: metadata.labels}}
      - {path: name, fieldRef: {fieldPath: metadata.name}}
      - {path: mem, resourceFieldRef: {containerName: main, resource: limits.memory}}
  - name: all
    projected:
      sources:
      - configMap: {name: app-config, items: [{key: ui.properties, path: ui}]}
      - secret: {name: app-secret, items: [{key: user, path: user}]}
      - downwardAPI: {items: [{path: ns, fieldRef: {fieldPath: metadata.namespace}}]}
  containers:
  - name: main
    image: BUSYBOX
    resources: {limits: {memory: 64Mi}}
    command: ['sh', '-c', 'cat /cm/conf/game; echo; stat -L -c %a /cm/conf/game; cat /sec/password /sec/user; echo; stat -L -c %a /sec/password; cat /info/labels /info/name /info/mem; echo; cat /all/ui /all/user /all/ns; echo; touch /cm/x 2>/dev/null || echo read-only; grep -cE " /(sec|info|all) tmpfs" /proc/mounts; grep -c " /cm tmpfs" /proc/mounts; tr "\\0" "\\n" < /proc/1/environ | grep -E "^(CFG_|PASSWORD|MAYBE)" | sort; exec sleep 3600']
    envFrom:
    - prefix: CFG_
      configMapRef: {name: app-config}
    env:
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: app-secret, key: password}}
    - name: MAYBE
      valueFrom: {configMapKeyRef: {name: nope, key: x, optional: true}}
    volumeMounts:
    - {name: cm, mountPath: /cm}
    - {name: sec, mountPath: /sec}
    - {name: info, mountPath: /info}
    - {name: all, mountPath: /all}
---
apiVersion: v1
kind: Pod
metadata: {name: missing-cm}
spec:
  containers:
  - name: main
    image: BUSYBOX
    command: ['sleep', '3600']
    volumeMounts: [{name: cm, mountPath: /cm}]
  volumes:
  - name: cm
    configMap: {name: does-not-exist}
"#;

#[tokio::test]
async fn config_map_secret_downward_api_and_projected_volumes() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    write(&d.manifests(), "vols.yaml", VOLUMES);
    wait_for(&url, "vols", "running", Duration::from_secs(60), |p| container(p, "main")["state"]["running"].is_object()).await;
    let logs = wait_for_log(&url, "default", "vols", "main", "PASSWORD").await;
    let want = "lives=3\n600\ns3cr3tadmin\n400\ntier=\"backend\"vols-berth-it67108864\ncolor=blueadmindefault\nread-only\n3\n0\nCFG_game.properties=lives=3\nCFG_ui.properties=color=blue\nPASSWORD=s3cr3t\n";
    assert_eq!(logs, want);
    let p = wait_for(&url, "missing-cm", "config error", Duration::from_secs(30), |p| {
        container(p, "main")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    })
    .await;
    let msg = container(&p, "main")["state"]["waiting"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("does-not-exist") && msg.contains("not found"), "{msg}");
}

const NAMES: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: names
  namespace: shop
spec:
  terminationGracePeriodSeconds: 1
  hostname: web-0
  subdomain: web
  hostAliases:
  - ip: 127.0.0.1
    hostnames: [foo.local, bar.local]
  - ip: 10.1.2.3
    hostnames: [db.internal]
  containers:
  - name: main
    image: BUSYBOX
    command: ['sh', '-c', 'cat /etc/hosts; echo hostname=$(hostname); cat /etc/resolv.conf; exec sleep 3600']
  - name: counter
    image: BUSYBOX
    command: ['sh', '-c', 'sleep 2; i=1; while [ $i -le 5 ]; do echo n-$i; i=$((i+1)); sleep 0.3; done']
"#;

const ENDINGS: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: endings
spec:
  restartPolicy: Never
  containers:
  - name: msg
    image: BUSYBOX
    command: ['sh', '-c', 'echo -n "all done" > /dev/termination-log']
  - name: custom
    image: BUSYBOX
    terminationMessagePath: /tmp/why
    command: ['sh', '-c', 'echo custom-reason > /tmp/why; exit 2']
  - name: fallback
    image: BUSYBOX
    terminationMessagePolicy: FallbackToLogsOnError
    command: ['sh', '-c', 'i=1; while [ $i -le 100 ]; do echo line-$i; i=$((i+1)); done; exit 3']
  - name: fallback-ok
    image: BUSYBOX
    terminationMessagePolicy: FallbackToLogsOnError
    command: ['sh', '-c', 'echo fine']
  - name: both
    image: BUSYBOX
    terminationMessagePolicy: FallbackToLogsOnError
    command: ['sh', '-c', 'echo from-log; echo -n from-file > /dev/termination-log; exit 1']
  - name: no-newline
    image: BUSYBOX
    terminationMessagePolicy: FallbackToLogsOnError
    command: ['sh', '-c', 'printf DONE; exit 1']
"#;

const NON_ROOT: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: nonroot
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsNonRoot: true}
  containers:
  - name: image-user
    image: BUSYBOX
    command: ['sleep', '3600']
  - name: explicit
    image: BUSYBOX
    securityContext: {runAsUser: 1000}
    command: ['sh', '-c', 'id -u; exec sleep 3600']
"#;

#[tokio::test]
async fn hosts_file_resolv_conf_log_follow_termination_messages_and_run_as_non_root() {
    let d = Daemon::start_node_args("", &["--cluster-dns", "10.96.0.10"]).await;
    let url = d.kubelet_url().await;
    write(&d.manifests(), "names.yaml", NAMES);
    write(&d.manifests(), "endings.yaml", ENDINGS);
    write(&d.manifests(), "nonroot.yaml", NON_ROOT);

    // The kubelet-managed hosts file: the FQDN from hostname + subdomain, then hostAliases.
    let p = wait_for(&url, "names", "Running", Duration::from_secs(60), |p| phase(p) == "Running").await;
    // Follow the counter's log while it writes: the stream ends when the container does.
    let follow_url = format!("{url}/containerLogs/shop/names-berth-it/counter?follow=true");
    let follow = tokio::spawn(async move { get(&follow_url).await });
    let log = wait_for_log(&url, "shop", "names", "main", "options").await;
    let ip = p["status"]["podIP"].as_str().unwrap_or("127.0.1.1");
    assert!(log.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"), "{log}");
    assert!(log.contains(&format!("{ip}\tweb-0.web.shop.svc.cluster.local\tweb-0\n")), "{log}");
    assert!(log.contains("\n# Entries added by HostAliases.\n127.0.0.1\tfoo.local\tbar.local\n10.1.2.3\tdb.internal\n"), "{log}");
    assert!(log.contains("hostname=web-0\n"), "{log}");
    // ClusterFirst with the node's cluster DNS.
    assert!(log.contains("nameserver 10.96.0.10\n"), "{log}");
    assert!(log.contains("search shop.svc.cluster.local svc.cluster.local cluster.local"), "{log}");
    assert!(log.contains("options ndots:5"), "{log}");
    let followed = tokio::time::timeout(Duration::from_secs(20), follow).await.expect("the follow stream ends with the container").unwrap();
    assert_eq!(followed, "n-1\nn-2\nn-3\nn-4\nn-5\n");

    // Termination messages: the file, a custom path, the log's end on failure only.
    let p = wait_for(&url, "endings", "Failed", Duration::from_secs(60), |p| phase(p) == "Failed").await;
    let term = |name: &str| container(&p, name)["state"]["terminated"].clone();
    assert_eq!(term("msg")["message"], "all done");
    assert_eq!(term("msg")["exitCode"], 0);
    assert_eq!(term("custom")["message"], "custom-reason\n");
    let fallback = term("fallback")["message"].as_str().unwrap_or_default().to_string();
    let expected: String = (21..=100).map(|i| format!("line-{i}\n")).collect();
    assert_eq!(fallback, expected, "the last 80 lines of the log");
    assert!(term("fallback-ok")["message"].is_null(), "{}", term("fallback-ok"));
    assert_eq!(term("both")["message"], "from-file", "the file wins over the log");
    // Output without a final newline stays without one: a partial entry in the log.
    assert_eq!(term("no-newline")["message"], "DONE");
    let pod_logs = std::fs::read_dir(d.data_dir().join("pod-logs")).unwrap().flatten().map(|e| e.path());
    let log_path = pod_logs.filter(|p| p.to_string_lossy().contains("_endings-")).map(|p| p.join("no-newline/0.log")).next().unwrap();
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(log.ends_with(" stdout P DONE\n") && log.lines().count() == 1, "{log_path:?}: {log:?}");

    // runAsNonRoot: the image runs as root (no USER) and is refused; runAsUser 1000 runs.
    let p = wait_for(&url, "nonroot", "explicit running", Duration::from_secs(60), |p| {
        container(p, "explicit")["state"]["running"].is_object() && container(p, "image-user")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    })
    .await;
    let msg = container(&p, "image-user")["state"]["waiting"]["message"].as_str().unwrap().to_string();
    assert!(msg.contains("container has runAsNonRoot and image will run as root"), "{msg}");
    assert_eq!(phase(&p), "Pending");
    assert_eq!(wait_for_log(&url, "default", "nonroot", "explicit", "1000").await, "1000\n");
}

/// A tiny HTTP(S) server on 127.0.0.1 that records each request's first line and X-Probe
/// header, and answers 200 (or 500 while `failing`).
struct Recorder {
    port: u16,
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start(tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Recorder {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (s, f) = (seen.clone(), failing.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let (s, f, tls) = (s.clone(), f.clone(), tls.clone());
                tokio::spawn(async move {
                    async fn serve<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
                        mut io: S,
                        s: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
                        fail: bool,
                    ) {
                        let mut buf = Vec::new();
                        let mut chunk = [0u8; 1024];
                        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                            match io.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        let text = String::from_utf8_lossy(&buf).to_string();
                        let first = text.lines().next().unwrap_or_default().to_string();
                        let probe = text.lines().find_map(|l| l.strip_prefix("X-Probe: ").or_else(|| l.strip_prefix("x-probe: "))).unwrap_or("-").to_string();
                        s.lock().unwrap().push(format!("{first} {probe}"));
                        let status = if fail { "500 Internal Server Error" } else { "200 OK" };
                        let _ = io.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").as_bytes()).await;
                        let _ = io.shutdown().await;
                    }
                    let fail = f.load(std::sync::atomic::Ordering::SeqCst);
                    match tls {
                        Some(cfg) => {
                            if let Ok(io) = tokio_rustls::TlsAcceptor::from(cfg).accept(tcp).await {
                                serve(io, s, fail).await;
                            }
                        }
                        None => serve(tcp, s, fail).await,
                    }
                });
            }
        });
        Recorder { port, seen, failing, task }
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

#[tokio::test]
async fn https_and_grpc_probes_and_http_hooks_on_the_host_network() {
    let certs = TempDir::new("tls");
    let tls = berth::util::tls::server_config(&certs.path().join("c.crt"), &certs.path().join("c.key"), vec!["127.0.0.1".into()], true).unwrap();
    let https = Recorder::start(Some(std::sync::Arc::new(tls))).await;
    let hooks = Recorder::start(None).await;
    // A gRPC health server.
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_service_status("berth.test", tonic_health::ServingStatus::Serving).await;
    let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_port = grpc_listener.local_addr().unwrap().port();
    let grpc = tokio::spawn(
        tonic::transport::Server::builder().add_service(health).serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(grpc_listener)),
    );

    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: hostprobes
spec:
  hostNetwork: true
  terminationGracePeriodSeconds: 5
  containers:
  - name: main
    image: BUSYBOX
    command: ['sleep', '3600']
    lifecycle:
      postStart: {{httpGet: {{host: 127.0.0.1, port: {hook}, path: /poststart}}}}
      preStop: {{httpGet: {{host: 127.0.0.1, port: {hook}, path: /prestop, httpHeaders: [{{name: X-Probe, value: bye}}]}}}}
    readinessProbe:
      httpGet: {{scheme: HTTPS, host: 127.0.0.1, port: {tls}, path: /healthz, httpHeaders: [{{name: X-Probe, value: tls}}]}}
      periodSeconds: 1
      failureThreshold: 1
    livenessProbe:
      grpc: {{port: {grpc_port}, service: berth.test}}
      periodSeconds: 1
      failureThreshold: 2
"#,
        hook = hooks.port,
        tls = https.port
    );
    write(&d.manifests(), "hostprobes.yaml", &manifest);
    // Ready through the HTTPS probe (a self-signed certificate is not verified).
    wait_for(&url, "hostprobes", "ready", Duration::from_secs(60), |p| container(p, "main")["ready"] == true).await;
    assert!(https.seen().iter().any(|l| l == "GET /healthz HTTP/1.1 tls"), "{:?}", https.seen());
    assert!(hooks.seen().iter().any(|l| l.starts_with("GET /poststart HTTP/1.1")), "{:?}", hooks.seen());
    // A 500 makes it unready; the gRPC liveness probe kept it alive all along.
    https.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let p = wait_for(&url, "hostprobes", "unready", Duration::from_secs(20), |p| container(p, "main")["ready"] == false).await;
    assert_eq!(container(&p, "main")["restartCount"], 0);
    https.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    // NOT_SERVING fails the gRPC liveness probe twice: the container is restarted.
    reporter.set_service_status("berth.test", tonic_health::ServingStatus::NotServing).await;
    let p = wait_for(&url, "hostprobes", "restarted", Duration::from_secs(30), |p| container(p, "main")["restartCount"].as_i64().unwrap_or(0) >= 1).await;
    assert!(container(&p, "main")["lastState"]["terminated"].is_object());
    reporter.set_service_status("berth.test", tonic_health::ServingStatus::Serving).await;
    let events = get(&format!("{url}/events")).await;
    assert!(events.contains("Liveness probe failed: service unhealthy (responded with NOT_SERVING)"), "{events}");
    // preStop's httpGet runs when the pod goes.
    wait_for(&url, "hostprobes", "running again", Duration::from_secs(30), |p| container(p, "main")["state"]["running"].is_object()).await;
    let before = hooks.seen().iter().filter(|l| l.starts_with("GET /prestop")).count();
    std::fs::remove_file(d.manifests().join("hostprobes.yaml")).unwrap();
    wait_gone(&url, "hostprobes").await;
    let prestops: Vec<String> = hooks.seen().into_iter().filter(|l| l.starts_with("GET /prestop")).collect();
    assert_eq!(prestops.len(), before + 1, "{prestops:?}");
    assert!(prestops.last().unwrap().ends_with(" bye"), "{prestops:?}");
    grpc.abort();
}

const WATCHER: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: live}
data: {color: COLOR}
---
apiVersion: v1
kind: Pod
metadata:
  name: watcher
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000, fsGroup: 2000}
  volumes:
  - name: cfg
    configMap: {name: live}
  - name: scratch
    emptyDir: {}
  containers:
  - name: main
    image: BUSYBOX
    command: ['sh', '-c', 'echo groups=$(id -G); stat -c "scratch=%g %a" /scratch; touch /scratch/f && stat -c "file=%g" /scratch/f; stat -L -c "cfg=%g %a" /cfg/color; last=; while true; do c=$(cat /cfg/color); if [ "$c" != "$last" ]; then echo color=$c; last=$c; fi; sleep 0.2; done']
    volumeMounts: [{name: cfg, mountPath: /cfg}, {name: scratch, mountPath: /scratch}]
"#;

#[tokio::test]
async fn config_map_changes_reach_running_pods_and_fs_group_owns_volumes() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    write(&d.manifests(), "watcher.yaml", &WATCHER.replace("COLOR", "blue"));
    wait_for(&url, "watcher", "running", Duration::from_secs(60), |p| container(p, "main")["state"]["running"].is_object()).await;
    let log = wait_for_log(&url, "default", "watcher", "main", "color=blue").await;
    // fsGroup: a supplementary group, the emptyDir belongs to it (setgid, so new files
    // do too), and the configMap's files are in it.
    // (50: the image's /etc/group puts uid 1000 in staff.)
    assert!(log.contains("groups=1000 50 2000\n"), "{log}");
    assert!(log.contains("scratch=2000 2777"), "{log}");
    assert!(log.contains("file=2000"), "{log}");
    assert!(log.contains("cfg=2000 644"), "{log}");
    // The ConfigMap changes: the running container sees the new value, without a restart.
    write(&d.manifests(), "watcher.yaml", &WATCHER.replace("COLOR", "green"));
    let log = wait_for_log(&url, "default", "watcher", "main", "color=green").await;
    assert!(log.find("color=blue").unwrap() < log.find("color=green").unwrap());
    let p = pod(&url, "watcher").await.unwrap();
    assert_eq!(container(&p, "main")["restartCount"], 0);
}

#[tokio::test]
async fn image_pull_failures_back_off() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    write(
        &d.manifests(),
        "nopull.yaml",
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: nopull\nspec:\n  containers:\n  - name: main\n    image: {}/berth/does-not-exist:v1\n",
            test_registry()
        ),
    );
    let p = wait_for(&url, "nopull", "ErrImagePull", Duration::from_secs(30), |p| container(p, "main")["state"]["waiting"]["reason"] == "ErrImagePull").await;
    assert_eq!(phase(&p), "Pending");
    let first = Instant::now();
    let p = wait_for(&url, "nopull", "ImagePullBackOff", Duration::from_secs(10), |p| container(p, "main")["state"]["waiting"]["reason"] == "ImagePullBackOff")
        .await;
    let msg = container(&p, "main")["state"]["waiting"]["message"].as_str().unwrap().to_string();
    assert!(msg.starts_with(&format!("Back-off pulling image \"{}/berth/does-not-exist:v1\"", test_registry())), "{msg}");
    // One pull so far; the second comes only after the 10 s back-off.
    let pulls = |events: &str| -> i64 {
        let v: Value = serde_json::from_str(events).unwrap();
        v["items"].as_array().unwrap().iter().filter(|e| e["reason"] == "Pulling").map(|e| e["count"].as_i64().unwrap()).sum()
    };
    assert_eq!(pulls(&get(&format!("{url}/events")).await), 1);
    let start = Instant::now();
    while pulls(&get(&format!("{url}/events")).await) < 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "no second pull");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(first.elapsed() >= Duration::from_secs(8), "the second pull waited for the back-off: {:?}", first.elapsed());
}

const SPEC: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: spec}
spec:
  terminationGracePeriodSeconds: 1
  shareProcessNamespace: true
  securityContext:
    supplementalGroups: [3000]
    sysctls: [{name: kernel.shm_rmid_forced, value: "1"}]
  volumes:
  - name: shared
    emptyDir: {}
  - name: small
    emptyDir: {medium: Memory, sizeLimit: 8Mi}
  - name: made
    hostPath: {path: HOSTDIR/made, type: DirectoryOrCreate}
  initContainers:
  - name: sidecar
    image: BUSYBOX
    restartPolicy: Always
    command: ['sh', '-c', 'echo sidecar-up > /shared/sidecar; exec sleep 3600']
    volumeMounts: [{name: shared, mountPath: /shared}]
  containers:
  - name: main
    image: BUSYBOX
    command: ['sh', '-c']
    args: ['echo cwd=$(pwd); cat /shared/sidecar; grep -E "^(CapEff|NoNewPrivs|Seccomp):" /proc/self/status; echo groups=$(id -G); echo shm=$(cat /proc/sys/kernel/shm_rmid_forced); touch /rootfs-test 2>/dev/null || echo rootfs-ro; df -k /small | tail -1; test -d /made && echo made-ok; i=0; until ps -o comm | grep -q sleep || [ $i -ge 50 ]; do i=$((i+1)); sleep 0.1; done; ps -o comm | grep -q sleep && echo sees-sidecar; echo end; exec sleep 3600']
    workingDir: /tmp
    resources: {requests: {cpu: 100m, memory: 32Mi}, limits: {cpu: 500m, memory: 64Mi}}
    securityContext:
      readOnlyRootFilesystem: true
      allowPrivilegeEscalation: false
      capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
      seccompProfile: {type: RuntimeDefault}
    volumeMounts: [{name: shared, mountPath: /shared}, {name: small, mountPath: /small}, {name: made, mountPath: /made}]
---
apiVersion: v1
kind: Pod
metadata: {name: never}
spec:
  containers:
  - name: main
    image: REGISTRY/berth/absent:v1
    imagePullPolicy: Never
---
apiVersion: v1
kind: Pod
metadata: {name: timing}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: BUSYBOX
    command: ['sh', '-c', 'echo ids=$(id -u):$(id -g); touch /tmp/ok; exec sleep 3600']
    securityContext: {runAsGroup: 2000}
    readinessProbe:
      exec: {command: ['cat', '/tmp/ok']}
      initialDelaySeconds: 3
      periodSeconds: 1
      successThreshold: 3
---
apiVersion: v1
kind: Pod
metadata: {name: strict}
spec:
  terminationGracePeriodSeconds: 1
  securityContext: {runAsUser: 1000, supplementalGroups: [4000], supplementalGroupsPolicy: Strict}
  containers:
  - name: main
    image: BUSYBOX
    command: ['sh', '-c', 'echo groups=$(id -G); exec sleep 3600']
---
apiVersion: v1
kind: Pod
metadata: {name: slowprobe}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: slow
    image: BUSYBOX
    command: ['sleep', '3600']
    livenessProbe:
      exec: {command: ['sleep', '5']}
      timeoutSeconds: 1
      periodSeconds: 2
      failureThreshold: 1
"#;

#[tokio::test]
async fn pod_spec_fields_reach_the_runtime() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    let host = TempDir::new("hostpath");
    write(&d.manifests(), "spec.yaml", &SPEC.replace("HOSTDIR", &host.path().display().to_string()).replace("REGISTRY", &test_registry()));
    let p = wait_for(&url, "spec", "Running", Duration::from_secs(60), |p| phase(p) == "Running" && container(p, "main")["state"]["running"].is_object()).await;
    assert_eq!(p["status"]["qosClass"], "Burstable");
    // The sidecar init container keeps running beside the app.
    let sidecar = &p["status"]["initContainerStatuses"][0];
    assert_eq!(sidecar["name"], "sidecar");
    assert!(sidecar["state"]["running"].is_object(), "{sidecar}");
    let log = wait_for_log(&url, "default", "spec", "main", "end\n").await;
    assert!(log.contains("cwd=/tmp\n"), "{log}");
    assert!(log.contains("sidecar-up\n"), "{log}");
    assert!(log.contains("CapEff:\t0000000000000400\n"), "only NET_BIND_SERVICE: {log}");
    assert!(log.contains("NoNewPrivs:\t1\n"), "{log}");
    assert!(log.contains("Seccomp:\t2\n"), "{log}");
    assert!(log.contains("groups=0 3000\n"), "{log}");
    assert!(log.contains("shm=1\n"), "{log}");
    assert!(log.contains("rootfs-ro\n"), "{log}");
    assert!(log.lines().any(|l| l.starts_with("tmpfs") && l.split_whitespace().nth(1) == Some("8192")), "8Mi tmpfs: {log}");
    assert!(log.contains("made-ok\n") && host.path().join("made").is_dir(), "{log}");
    assert!(log.contains("sees-sidecar\n"), "shared PID namespace: {log}");
    // Resources in the Burstable branch of the cgroup tree: 64Mi, 500m of CPU, 100m of shares.
    let uid = p["metadata"]["uid"].as_str().unwrap();
    let pod_cg = format!("{}/burstable/pod{uid}", d.cgroup_root());
    let id = container(&p, "main")["containerID"].as_str().unwrap().trim_start_matches("berth://").to_string();
    let read = |ctrl: &str, file: &str| -> String {
        let dir = Path::new("/sys/fs/cgroup").join(ctrl).join(pod_cg.trim_start_matches('/'));
        let found = std::fs::read_dir(&dir).unwrap().flatten().find(|e| e.file_name().to_string_lossy().contains(&id[..12]));
        let path = found.unwrap_or_else(|| panic!("no cgroup for {id} under {}", dir.display())).path().join(file);
        std::fs::read_to_string(path).unwrap().trim().to_string()
    };
    assert_eq!(read("memory", "memory.limit_in_bytes"), "67108864");
    assert_eq!(read("cpu", "cpu.cfs_quota_us"), "50000");
    assert_eq!(read("cpu", "cpu.shares"), "102");

    // imagePullPolicy Never with the image absent.
    let p =
        wait_for(&url, "never", "ErrImageNeverPull", Duration::from_secs(30), |p| container(p, "main")["state"]["waiting"]["reason"] == "ErrImageNeverPull")
            .await;
    assert_eq!(phase(&p), "Pending");

    // initialDelaySeconds 3 and successThreshold 3 (period 1 s): ready no sooner than 5 s
    // after the start; a 1 s timeoutSeconds fails a 5 s exec liveness probe.
    let p = wait_for(&url, "timing", "ready", Duration::from_secs(30), |p| container(p, "main")["ready"] == true).await;
    let started = container(&p, "main")["state"]["running"]["startedAt"].as_str().unwrap().to_string();
    let ready_at =
        p["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == "Ready").unwrap()["lastTransitionTime"].as_str().unwrap().to_string();
    let secs = |t: &str| berth::logs::parse_rfc3339(t).unwrap() / 1_000_000_000;
    assert!(secs(&ready_at) - secs(&started) >= 4, "ready at {ready_at}, started {started}: {}", serde_json::to_string_pretty(&p["status"]).unwrap());
    assert_eq!(condition(&p, "Ready"), "True");
    // runAsGroup without runAsUser: the image's user (root here), as the kubelet sends it.
    let log = wait_for_log(&url, "default", "timing", "main", "ids=").await;
    assert!(log.contains("ids=0:2000\n"), "{log}");
    // supplementalGroupsPolicy Strict: not the image's group memberships (staff, 50); the
    // identity shows in the container status.
    let log = wait_for_log(&url, "default", "strict", "main", "groups=").await;
    assert_eq!(log, "groups=1000 4000\n");
    let p = pod(&url, "strict").await.unwrap();
    assert_eq!(container(&p, "main")["user"], serde_json::json!({"linux": {"uid": 1000, "gid": 1000, "supplementalGroups": [1000, 4000]}}));
    wait_for(&url, "slowprobe", "slow restarted", Duration::from_secs(30), |p| container(p, "slow")["restartCount"].as_i64().unwrap_or(0) >= 1).await;
    let events = get(&format!("{url}/events")).await;
    assert!(events.contains("spec.containers{slow}") && events.contains("Liveness probe failed"), "{events}");
}

#[tokio::test]
async fn a_lost_sandbox_is_recreated_and_init_containers_run_again() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    let host = TempDir::new("initrerun");
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: rerun\nspec:\n  terminationGracePeriodSeconds: 1\n  volumes:\n  - name: h\n    hostPath: {{path: {}, type: Directory}}\n  initContainers:\n  - name: init\n    image: BUSYBOX\n    command: ['sh', '-c', 'echo ran >> /h/init-runs']\n    volumeMounts: [{{name: h, mountPath: /h}}]\n  containers:\n  - name: main\n    image: BUSYBOX\n    command: ['sleep', '3600']\n",
        host.path().display()
    );
    write(&d.manifests(), "rerun.yaml", &manifest);
    let p = wait_for(&url, "rerun", "Running", Duration::from_secs(60), |p| container(p, "main")["state"]["running"].is_object()).await;
    let first_id = container(&p, "main")["containerID"].as_str().unwrap().to_string();
    assert_eq!(std::fs::read_to_string(host.path().join("init-runs")).unwrap(), "ran\n");
    // The sandbox goes away behind the node's back (as after a runtime crash).
    let mut rt = d.runtime().await;
    let sandboxes = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
    let sb = sandboxes.iter().find(|s| s.metadata.as_ref().map(|m| m.name == "rerun-berth-it").unwrap_or(false)).unwrap();
    rt.stop_pod_sandbox(cri::StopPodSandboxRequest { pod_sandbox_id: sb.id.clone() }).await.unwrap();
    // A new sandbox, the init container again, then a new app container.
    let p = wait_for(&url, "rerun", "running in a new sandbox", Duration::from_secs(60), |p| {
        container(p, "main")["state"]["running"].is_object() && container(p, "main")["containerID"].as_str() != Some(first_id.as_str())
    })
    .await;
    assert_eq!(std::fs::read_to_string(host.path().join("init-runs")).unwrap(), "ran\nran\n");
    assert_eq!(condition(&p, "Initialized"), "True");
    let sandboxes = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
    let ready: Vec<_> = sandboxes.iter().filter(|s| s.state == cri::PodSandboxState::SandboxReady as i32).collect();
    assert_eq!(ready.len(), 1, "{sandboxes:?}");
    assert_eq!(ready[0].metadata.as_ref().unwrap().attempt, 1);
}

#[tokio::test]
async fn a_changed_manifest_recreates_the_pod() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    let manifest = |v: u32| {
        format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: versioned\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: main\n    image: BUSYBOX\n    command: ['sh', '-c', 'echo version-$V; exec sleep 3600']\n    env: [{{name: V, value: \"{v}\"}}]\n")
    };
    write(&d.manifests(), "versioned.yaml", &manifest(1));
    let p1 = wait_for(&url, "versioned", "Running", Duration::from_secs(60), |p| container(p, "main")["state"]["running"].is_object()).await;
    wait_for_log(&url, "default", "versioned", "main", "version-1").await;
    let uid1 = p1["metadata"]["uid"].as_str().unwrap().to_string();
    // The same file with another spec: a new pod (new UID from the new content), the old one gone.
    write(&d.manifests(), "versioned.yaml", &manifest(2));
    let p2 = wait_for(&url, "versioned", "recreated", Duration::from_secs(60), |p| {
        p["metadata"]["uid"].as_str() != Some(uid1.as_str()) && container(p, "main")["state"]["running"].is_object()
    })
    .await;
    assert_eq!(wait_for_log(&url, "default", "versioned", "main", "version-2").await, "version-2\n");
    // The old pod stays listed only while it terminates.
    let start = Instant::now();
    while pods(&url).await.len() != 1 {
        assert!(start.elapsed() < Duration::from_secs(30), "the old pod is still listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut rt = d.runtime().await;
    let start = Instant::now();
    loop {
        let sbs = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
        if sbs.len() == 1 {
            assert_eq!(sbs[0].labels.get("io.kubernetes.pod.uid").map(String::as_str), p2["metadata"]["uid"].as_str());
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "old sandbox left: {sbs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

const SUBPATHS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata: {name: sub-config}
data: {game: lives=3}
---
apiVersion: v1
kind: Pod
metadata: {name: subpaths}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: host
    hostPath: {path: HOSTDIR, type: Directory}
  - name: scratch
    emptyDir: {}
  - name: cm
    configMap: {name: sub-config}
  initContainers:
  - name: plant
    image: BUSYBOX
    command: ['sh', '-c', 'ln -s / /scratch/root; mkdir -p /scratch/ok; echo inside > /scratch/ok/f']
    volumeMounts: [{name: scratch, mountPath: /scratch}]
  containers:
  - name: main
    image: BUSYBOX
    env: [{name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}]
    command: ['sh', '-c', 'cat /data/file.txt /ok/f /game.conf; echo; touch /per-pod/w && echo wrote; exec sleep 3600']
    volumeMounts:
    - {name: host, mountPath: /data, subPath: data}
    - {name: scratch, mountPath: /ok, subPath: ok}
    - {name: cm, mountPath: /game.conf, subPath: game}
    - {name: scratch, mountPath: /per-pod, subPathExpr: "logs/$(POD_NAME)"}
  - name: escape
    image: BUSYBOX
    command: ['sleep', '3600']
    volumeMounts:
    - {name: scratch, mountPath: /evil, subPath: root/etc}
"#;

#[tokio::test]
async fn sub_paths_stay_inside_their_volumes() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    let host = TempDir::new("subpath-host");
    std::fs::create_dir_all(host.path().join("data")).unwrap();
    std::fs::write(host.path().join("data/file.txt"), "from-host\n").unwrap();
    write(&d.manifests(), "subpaths.yaml", &SUBPATHS.replace("HOSTDIR", &host.path().display().to_string()));
    let log = wait_for_log(&url, "default", "subpaths", "main", "wrote").await;
    assert_eq!(log, "from-host\ninside\nlives=3\nwrote\n");
    // The subPathExpr directory was made inside the emptyDir, named after the pod.
    let p = pod(&url, "subpaths").await.unwrap();
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let scratch = d.data_dir().join(format!("pods/{uid}/volumes/kubernetes.io~empty-dir/scratch"));
    assert!(scratch.join("logs/subpaths-berth-it/w").is_file());
    // A symlink a container planted in the volume does not lead the subPath out of it.
    let p = wait_for(&url, "subpaths", "escape refused", Duration::from_secs(30), |p| {
        container(p, "escape")["state"]["waiting"]["reason"] == "CreateContainerConfigError"
    })
    .await;
    let msg = container(&p, "escape")["state"]["waiting"]["message"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains("root/etc"), "{msg}");
    // Removing the pod unmounts the subPath binds before its directory goes: the hostPath
    // content is still there.
    std::fs::remove_file(d.manifests().join("subpaths.yaml")).unwrap();
    wait_gone(&url, "subpaths").await;
    assert_eq!(std::fs::read_to_string(host.path().join("data/file.txt")).unwrap(), "from-host\n");
    let pod_dir = d.data_dir().join(format!("pods/{uid}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while pod_dir.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!pod_dir.exists(), "the pod directory is removed");
    assert!(mounts_under(&d.data_dir()).is_empty(), "mounts left: {:?}", mounts_under(&d.data_dir()));
}

/// The Kubernetes documentation's liveness-exec example (timings shortened: 5 s instead of
/// 30 s of health, a 2 s grace period), with the events `kubectl describe` shows for it.
const LIVENESS_EXEC: &str = r#"apiVersion: v1
kind: Pod
metadata:
  labels:
    test: liveness
  name: liveness-exec
spec:
  terminationGracePeriodSeconds: 2
  containers:
  - name: liveness
    image: BUSYBOX
    args:
    - /bin/sh
    - -c
    - touch /tmp/healthy; sleep 5; rm -f /tmp/healthy; sleep 600
    livenessProbe:
      exec:
        command:
        - cat
        - /tmp/healthy
      initialDelaySeconds: 2
      periodSeconds: 1
"#;

fn event_lines(events: &str) -> Vec<String> {
    let v: Value = serde_json::from_str(events).expect("event list");
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{} {} {}: {}",
                e["type"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
                e["involvedObject"]["fieldPath"].as_str().unwrap_or("-"),
                e["message"].as_str().unwrap()
            )
        })
        .collect()
}

#[tokio::test]
async fn the_documented_liveness_exec_example_restarts_with_its_events() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    write(&d.manifests(), "liveness.yaml", LIVENESS_EXEC);
    let p = wait_for(&url, "liveness-exec", "restarted", Duration::from_secs(60), |p| container(p, "liveness")["restartCount"].as_i64() >= Some(1)).await;
    let last = &container(&p, "liveness")["lastState"]["terminated"];
    // sh as PID 1 ignores SIGTERM: killed after the grace period.
    assert_eq!((last["exitCode"].as_i64(), last["reason"].as_str()), (Some(137), Some("Error")), "{last}");
    let lines = event_lines(&get(&format!("{url}/events")).await);
    let at = |want: &str| lines.iter().position(|l| l.starts_with(want)).unwrap_or_else(|| panic!("no event {want:?} in {lines:#?}"));
    let f = "spec.containers{liveness}";
    let pulled = at(&format!("Normal Pulled {f}: "));
    let created = at(&format!("Normal Created {f}: Created container: liveness"));
    let started = at(&format!("Normal Started {f}: Started container liveness"));
    let unhealthy = at(&format!("Warning Unhealthy {f}: Liveness probe failed: cat: can't open '/tmp/healthy': No such file or directory"));
    let killing = at(&format!("Normal Killing {f}: Container liveness failed liveness probe, will be restarted"));
    assert!(pulled < created && created < started && started < unhealthy && unhealthy < killing, "{lines:#?}");
}

/// The documentation's myapp-pod, its init containers waiting on files the test creates
/// (instead of services, which need the control plane): the status while they wait, as
/// `kubectl describe` shows it on a kubelet.
const MYAPP_GATED: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: myapp-gated
  labels: {app.kubernetes.io/name: MyApp}
spec:
  terminationGracePeriodSeconds: 1
  volumes: [{name: gate, hostPath: {path: GATE}}]
  containers:
  - name: myapp-container
    image: BUSYBOX
    command: ['sh', '-c', 'echo The app is running! && sleep 3600']
  initContainers:
  - name: init-myservice
    image: BUSYBOX
    command: ['sh', '-c', "until [ -f /gate/myservice ]; do echo waiting for myservice; sleep 0.3; done"]
    volumeMounts: [{name: gate, mountPath: /gate}]
  - name: init-mydb
    image: BUSYBOX
    command: ['sh', '-c', "until [ -f /gate/mydb ]; do echo waiting for mydb; sleep 0.3; done"]
    volumeMounts: [{name: gate, mountPath: /gate}]
"#;

fn state_of(s: &Value) -> String {
    let st = s["state"].as_object().unwrap();
    let (k, v) = st.iter().next().unwrap();
    format!("{k}:{}", v["reason"].as_str().unwrap_or(""))
}

fn conditions(p: &Value) -> Vec<String> {
    p["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "{}={} {} {}",
                c["type"].as_str().unwrap(),
                c["status"].as_str().unwrap(),
                c["reason"].as_str().unwrap_or("-"),
                c["message"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[tokio::test]
async fn the_documented_init_container_example_reports_its_progress() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    let gate = TempDir::new("gate");
    write(&d.manifests(), "myapp.yaml", &MYAPP_GATED.replace("GATE", &gate.path().display().to_string()));
    let inits = |p: &Value| p["status"]["initContainerStatuses"].as_array().unwrap().iter().map(state_of).collect::<Vec<_>>();
    let p = wait_for(&url, "myapp-gated", "first init running", Duration::from_secs(60), |p| inits(p).first().map(String::as_str) == Some("running:")).await;
    assert_eq!(phase(&p), "Pending");
    assert_eq!(inits(&p), ["running:", "waiting:PodInitializing"]);
    assert_eq!(state_of(container(&p, "myapp-container")), "waiting:PodInitializing");
    assert_eq!(
        conditions(&p),
        [
            "PodReadyToStartContainers=True - -",
            "Initialized=False ContainersNotInitialized containers with incomplete status: [init-myservice init-mydb]",
            "Ready=False ContainersNotReady containers with unready status: [myapp-container]",
            "ContainersReady=False ContainersNotReady containers with unready status: [myapp-container]",
            "PodScheduled=True - -",
        ]
    );
    let log = wait_for_log(&url, "default", "myapp-gated", "init-myservice", "waiting for myservice\n").await;
    assert!(log.starts_with("waiting for myservice\n"), "{log}");
    std::fs::write(gate.path().join("myservice"), "").unwrap();
    let p = wait_for(&url, "myapp-gated", "second init running", Duration::from_secs(30), |p| inits(p) == ["terminated:Completed", "running:"]).await;
    assert!(conditions(&p)[1].ends_with("containers with incomplete status: [init-mydb]"), "{:?}", conditions(&p));
    std::fs::write(gate.path().join("mydb"), "").unwrap();
    let p = wait_for(&url, "myapp-gated", "Running", Duration::from_secs(30), |p| phase(p) == "Running" && condition(p, "Ready") == "True").await;
    assert_eq!(
        conditions(&p).iter().map(|c| c.split(' ').next().unwrap().to_string()).collect::<Vec<_>>(),
        ["PodReadyToStartContainers=True", "Initialized=True", "Ready=True", "ContainersReady=True", "PodScheduled=True"]
    );
    wait_for_log(&url, "default", "myapp-gated", "myapp-container", "The app is running!\n").await;
}

const HOSTILE: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: escape-container}
spec:
  containers: [{name: "../../../tmp/berth-escape", image: BUSYBOX}]
---
apiVersion: v1
kind: Pod
metadata: {name: escape-namespace, namespace: "../../etc"}
spec:
  containers: [{name: app, image: BUSYBOX}]
---
apiVersion: v1
kind: Pod
metadata: {name: escape-volume}
spec:
  containers: [{name: app, image: BUSYBOX}]
  volumes: [{name: "nul\0name", emptyDir: {}}]
---
apiVersion: v1
kind: Pod
metadata: {name: escape-item}
spec:
  containers: [{name: app, image: BUSYBOX}]
  volumes: [{name: cfg, configMap: {name: cm, items: [{key: k, path: "../../../../root/.ssh/authorized_keys"}]}}]
"#;

const BAD_QUANTITY: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: megabytes}
spec:
  containers:
  - name: app
    image: BUSYBOX
    command: ['sleep', '3600']
    resources: {limits: {memory: 512MB, cpu: "1"}, requests: {memory: 512MB, cpu: "1"}}
"#;

const SPELLED_DIFFERENTLY: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: guaranteed}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: BUSYBOX
    command: ['sleep', '3600']
    resources: {limits: {memory: 64Mi, cpu: "1"}, requests: {memory: "67108864", cpu: 1000m}}
"#;

#[tokio::test]
async fn names_that_would_be_paths_and_bad_quantities_are_refused_before_anything_is_made() {
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    write(&d.manifests(), "hostile.yaml", HOSTILE);
    write(&d.manifests(), "quantity.yaml", BAD_QUANTITY);
    write(&d.manifests(), "good.yaml", SPELLED_DIFFERENTLY);
    // Equal quantities spelled differently are equal: the pod is Guaranteed (by parsed value).
    let p = wait_for(&url, "guaranteed", "Running", Duration::from_secs(60), |p| phase(p) == "Running").await;
    assert_eq!(p["status"]["qosClass"], "Guaranteed");
    let errors_path = d.data_dir().join("node/manifest-errors.json");
    let errors: Value = serde_json::from_slice(&std::fs::read(&errors_path).unwrap()).unwrap();
    let of = |file: &str| errors.as_object().unwrap().iter().find(|(f, _)| f.ends_with(file)).map(|(_, m)| m.as_str().unwrap().to_string()).unwrap_or_default();
    assert!(of("hostile.yaml").contains("spec.containers[0].name: Invalid value: \"../../../tmp/berth-escape\": a lowercase RFC 1123 label"), "{errors}");
    assert!(
        of("quantity.yaml").contains("spec.containers[0].resources.limits[memory]: Invalid value: \"512MB\": quantities must match the regular expression"),
        "{errors}"
    );
    // Each hostile document alone is refused with its field.
    for (doc, field) in [
        (1, "metadata.namespace: Invalid value: \"../../etc\""),
        (2, "spec.volumes[0].name: Invalid value: \"nul\\x00name\""),
        (3, "spec.volumes[0].configMap.items[0].path"),
    ] {
        let one = HOSTILE.split("---\n").nth(doc).unwrap();
        write(&d.manifests(), "hostile.yaml", one);
        let start = Instant::now();
        loop {
            let e: Value = serde_json::from_slice(&std::fs::read(&errors_path).unwrap_or_default()).unwrap_or_default();
            let msg = e
                .as_object()
                .and_then(|m| m.iter().find(|(f, _)| f.ends_with("hostile.yaml")))
                .map(|(_, m)| m.as_str().unwrap_or_default().to_string())
                .unwrap_or_default();
            if msg.contains(field) {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(20), "document {doc}: {field} not reported: {e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // Nothing of the refused pods exists: only the good pod has a sandbox, pod dir and logs.
    let mut rt = d.runtime().await;
    let sandboxes = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
    let names: Vec<String> = sandboxes.iter().map(|s| s.metadata.as_ref().unwrap().name.clone()).collect();
    assert_eq!(names, vec!["guaranteed-berth-it".to_string()]);
    assert_eq!(entries_with_prefix(&d.data_dir().join("pods"), "").len(), 1);
    let logs = entries_with_prefix(&d.data_dir().join("pod-logs"), "");
    assert!(logs.len() == 1 && logs[0].starts_with("default_guaranteed-berth-it_"), "{logs:?}");
    assert!(!Path::new("/tmp/berth-escape").exists());
}

#[tokio::test]
async fn a_pods_progress_is_written_when_it_changes_not_every_sync() {
    use std::os::unix::fs::MetadataExt;
    let d = Daemon::start_node("").await;
    let url = d.kubelet_url().await;
    write(
        &d.manifests(),
        "quiet.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: quiet\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: BUSYBOX\n    command: ['sleep', '3600']\n",
    );
    let p = wait_for(&url, "quiet", "Running and Ready", Duration::from_secs(60), |p| condition(p, "Ready") == "True").await;
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let file = d.data_dir().join(format!("node/{uid}.json"));
    let stamp = || std::fs::metadata(&file).map(|m| (m.ino(), m.mtime_nsec(), m.mtime())).unwrap();
    let before = stamp();
    // Several syncs (one a second) of a pod that does not change: nothing is rewritten.
    // (Waiting here is the behaviour under test: the absence of writes over time.)
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(stamp(), before, "the progress file was rewritten without a change");
    // A change (the container killed and restarted) is written.
    let mut rt = d.runtime().await;
    let c = container(&p, "app")["containerID"].as_str().unwrap().trim_start_matches("berth://").to_string();
    rt.stop_container(cri::StopContainerRequest { container_id: c, timeout: 0 }).await.unwrap();
    wait_for(&url, "quiet", "restarted", Duration::from_secs(60), |p| container(p, "app")["restartCount"].as_i64() == Some(1)).await;
    let start = Instant::now();
    while stamp() == before {
        assert!(start.elapsed() < Duration::from_secs(10), "the restart was not written");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(saved["containers"]["app"].is_object(), "{saved}");
}

#[tokio::test]
async fn pods_wait_for_the_pod_network_and_host_network_pods_do_not() {
    let net = TempDir::new("node-net");
    let conf = net.path().join("net.d");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::write(conf.join("10-broken.conflist"), "{\"cniVersion\": ").unwrap();
    let own = berth_bin().parent().unwrap().display().to_string();
    let bridge = format!("bnw{}", std::process::id() % 100_000);
    let _bridge = LinkGuard(bridge.clone());
    let config = format!("[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{own}\"]\nbridge = \"{bridge}\"\nmasquerade = false\n", conf.display());
    let d = Daemon::start_node(&config).await;
    let url = d.kubelet_url().await;
    write(
        &d.manifests(),
        "pods.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: needs-net\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: BUSYBOX\n    command: ['sleep', '3600']\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: host-net\nspec:\n  hostNetwork: true\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: app\n    image: BUSYBOX\n    command: ['sleep', '3600']\n",
    );
    wait_for(&url, "host-net", "Running", Duration::from_secs(60), |p| phase(p) == "Running").await;
    let events = wait_for_event(&url, "NetworkNotReady").await;
    assert!(events.contains("network is not ready: container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady"), "{events}");
    assert!(events.contains("10-broken.conflist"), "{events}");
    let p = berth_integration::kubelet::pod(&url, "needs-net").await.expect("listed");
    assert_eq!(phase(&p), "Pending");
    let mut rt = d.runtime().await;
    let sandboxes = rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }).await.unwrap().into_inner().items;
    assert!(sandboxes.iter().all(|s| s.metadata.as_ref().unwrap().name != "needs-net-berth-it"), "no sandbox while the network is not ready");
    // The network comes right: the pod starts, with an address on it.
    std::fs::remove_file(conf.join("10-broken.conflist")).unwrap();
    let list = serde_json::json!({"cniVersion": "1.0.0", "name": "berth-nodenet", "plugins": [{"type": "berth-cni", "bridge": bridge, "isGateway": true,
        "ipam": {"ranges": [[{"subnet": format!("10.{}.200.0/24", 160 + std::process::id() % 60)}]], "dataDir": net.path().join("ipam")}}]});
    std::fs::write(conf.join("10-good.conflist"), list.to_string()).unwrap();
    let p = wait_for(&url, "needs-net", "Running", Duration::from_secs(60), |p| phase(p) == "Running").await;
    let prefix = format!("10.{}.200.", 160 + std::process::id() % 60);
    assert!(p["status"]["podIP"].as_str().unwrap_or_default().starts_with(&prefix), "{}", p["status"]);
}

/// The node's events (`/events`) once one with `reason` is there, as text.
async fn wait_for_event(url: &str, reason: &str) -> String {
    let start = Instant::now();
    loop {
        let events = get(&format!("{url}/events")).await;
        if events.contains(&format!("\"reason\":\"{reason}\"")) {
            return events;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no {reason} event in {events}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
