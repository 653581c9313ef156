//! `berth server` as a single-node cluster: the API, the scheduler and this machine as its
//! node in one process, driven by the real kubectl. A Pod applied with kubectl is bound by
//! the scheduler, run by the node agent (init container, readiness probe) and reported back
//! through pods/status; a graceful delete is finished by the node; a server killed with
//! SIGKILL comes back and adopts its running pods without restarting them.
use berth_integration::kubelet::busybox;
use berth_integration::{tail, Daemon};
use serde_json::Value;
use std::time::{Duration, Instant};

fn json(d: &Daemon, args: &[&str]) -> Value {
    d.kubectl_json(args)
}

/// Polls `args` through kubectl until `check` holds (a condition, never a fixed sleep).
fn wait_until(d: &Daemon, args: &[&str], limit: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    d.kubectl_until(args, limit, what, check)
}

fn condition(obj: &Value, kind: &str) -> String {
    obj["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == kind))
        .map(|c| c["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

fn node_ready(d: &Daemon) -> Value {
    wait_until(d, &["get", "node", "berth-it"], Duration::from_secs(60), "node berth-it Ready", |n| condition(n, "Ready") == "True")
}

fn pod_ready(d: &Daemon, name: &str) -> Value {
    wait_until(d, &["get", "pod", name], Duration::from_secs(120), &format!("pod {name} Ready"), |p| condition(p, "Ready") == "True")
}

fn web_pod(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{app: web}}
spec:
  terminationGracePeriodSeconds: 20
  initContainers:
  - name: setup
    image: {image}
    command: ["sh", "-c", "echo prepared > /work/state"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: web
    image: {image}
    command: ["sh", "-c", "trap 'echo bye; exit 0' TERM; cat /work/state; touch /tmp/ready; while true; do sleep 1; done"]
    readinessProbe:
      exec: {{command: ["cat", "/tmp/ready"]}}
      periodSeconds: 1
    volumeMounts: [{{name: work, mountPath: /work}}]
  volumes:
  - name: work
    emptyDir: {{}}
"#,
        image = busybox()
    )
}

#[tokio::test]
async fn server_runs_a_pod_applied_with_kubectl_and_finishes_its_graceful_deletion() {
    let d = Daemon::start_server("", &[]).await;
    let node = node_ready(&d);
    assert_eq!(node["metadata"]["labels"]["kubernetes.io/hostname"], "berth-it");
    assert!(node["status"]["nodeInfo"]["containerRuntimeVersion"].as_str().unwrap_or("").starts_with("berth://"), "{node:#}");
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_i64().unwrap_or(0);
    assert!(d.kubelet_url().await.ends_with(&format!(":{port}")), "daemonEndpoints carries the kubelet API's port {port}");

    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&web_pod("web")));
    let pod = pod_ready(&d, "web");
    assert_eq!(pod["spec"]["nodeName"], "berth-it", "bound by the scheduler");
    assert_eq!(pod["status"]["phase"], "Running");
    assert_eq!(pod["status"]["hostIP"], "127.0.0.1");
    assert!(pod["status"]["podIP"].as_str().is_some_and(|ip| ip.starts_with("10.")), "a pod address from the node's CIDR: {pod:#}");
    let init = &pod["status"]["initContainerStatuses"][0];
    assert_eq!((init["name"].as_str(), init["state"]["terminated"]["reason"].as_str()), (Some("setup"), Some("Completed")), "{pod:#}");
    let web = &pod["status"]["containerStatuses"][0];
    assert_eq!((web["ready"].as_bool(), web["restartCount"].as_i64()), (Some(true), Some(0)), "{pod:#}");
    assert!(web["containerID"].as_str().is_some_and(|id| id.starts_with("berth://")), "{pod:#}");
    assert!(d.kubectl_ok(&["get", "pods", "-o", "wide"]).contains("berth-it"));

    // the node's events, as a kubelet records them: kubectl describe shows them
    let events = wait_until(&d, &["get", "events", "--field-selector", "involvedObject.name=web"], Duration::from_secs(30), "Started event", |l| {
        l["items"].as_array().is_some_and(|items| items.iter().any(|e| e["reason"] == "Started" && e["involvedObject"]["fieldPath"] == "spec.containers{web}"))
    });
    let reasons: Vec<&str> = events["items"].as_array().into_iter().flatten().filter_map(|e| e["reason"].as_str()).collect();
    for want in ["Pulled", "Created", "Started"] {
        assert!(reasons.contains(&want), "{want} in {reasons:?}");
    }
    let started = events["items"].as_array().into_iter().flatten().find(|e| e["reason"] == "Started").cloned().unwrap_or_default();
    assert_eq!((started["source"]["component"].as_str(), started["source"]["host"].as_str()), (Some("kubelet"), Some("berth-it")), "{started:#}");
    assert_eq!(started["involvedObject"]["uid"], pod["metadata"]["uid"]);
    let described = d.kubectl_ok(&["describe", "pod", "web"]);
    assert!(described.contains("Started container web") && described.contains("kubelet"), "{described}");

    // Graceful deletion: kubectl waits until the node has stopped the containers (the trap
    // answers SIGTERM) and deleted the object for good.
    let started = Instant::now();
    d.kubectl_ok(&["delete", "pod", "web", "--timeout=60s"]);
    assert!(started.elapsed() < Duration::from_secs(20), "the container exits on SIGTERM, long before the 20 s grace period");
    let gone = d.kubectl(&["get", "pod", "web"]);
    assert!(String::from_utf8_lossy(&gone.stderr).contains("NotFound"), "{}", String::from_utf8_lossy(&gone.stderr));
    let mut rt = d.runtime().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let sandboxes = rt.list_pod_sandbox(berth::cri::v1::ListPodSandboxRequest { filter: None }).await.expect("list sandboxes").into_inner().items;
        let ready = sandboxes.iter().filter(|s| s.state == berth::cri::v1::PodSandboxState::SandboxReady as i32).count();
        if ready == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the pod's sandbox still runs after its deletion: {sandboxes:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn server_killed_with_sigkill_adopts_its_running_pods() {
    let mut d = Daemon::start_server("", &[]).await;
    node_ready(&d);
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&web_pod("kept")));
    let before = pod_ready(&d, "kept");
    let id = before["status"]["containerStatuses"][0]["containerID"].as_str().expect("container ID").to_string();

    d.restart_after_kill9().await;
    node_ready(&d);
    let after = pod_ready(&d, "kept");
    let web = &after["status"]["containerStatuses"][0];
    assert_eq!(web["containerID"].as_str(), Some(id.as_str()), "the same container, not a new one: {after:#}");
    assert_eq!(web["restartCount"].as_i64(), Some(0), "{after:#}");
    assert_eq!(after["status"]["podIP"], before["status"]["podIP"]);
    let pods = json(&d, &["get", "pods"]);
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(1), "{pods:#}");
}

#[tokio::test]
async fn static_pods_show_as_mirror_pods_that_come_back_when_deleted() {
    let d = Daemon::start_server("", &[]).await;
    let node = node_ready(&d);
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n  labels: {{tier: static}}\nspec:\n  containers:\n  - name: web\n    image: {}\n    command: ['sh', '-c', 'while true; do sleep 1; done']\n",
        busybox()
    );
    std::fs::write(d.manifests().join("static-web.yaml"), manifest).unwrap();
    // the mirror pod: <name>-<node>, bound to the node and owned by it, with the static pod's status
    let mirror = pod_ready(&d, "static-web-berth-it");
    assert_eq!(mirror["spec"]["nodeName"], "berth-it");
    let annotations = &mirror["metadata"]["annotations"];
    assert_eq!(annotations["kubernetes.io/config.source"], "file");
    assert_eq!(annotations["kubernetes.io/config.mirror"], annotations["kubernetes.io/config.hash"]);
    let owner = &mirror["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["name"].as_str()), (Some("Node"), Some("berth-it")));
    assert_eq!(owner["uid"], node["metadata"]["uid"]);
    assert_eq!(mirror["metadata"]["labels"]["tier"], "static");
    let container = mirror["status"]["containerStatuses"][0]["containerID"].as_str().unwrap().to_string();
    // deleting it stops nothing: the node makes it again, the container runs on
    d.kubectl_ok(&["delete", "pod", "static-web-berth-it"]);
    let again = wait_until(&d, &["get", "pod", "static-web-berth-it"], Duration::from_secs(60), "mirror pod made again", |p| {
        p["metadata"]["uid"].is_string() && p["metadata"]["uid"] != mirror["metadata"]["uid"] && condition(p, "Ready") == "True"
    });
    assert_eq!(again["status"]["containerStatuses"][0]["containerID"].as_str(), Some(container.as_str()));
    assert_eq!(again["status"]["containerStatuses"][0]["restartCount"], 0);
    // only one pod runs for it (the mirror itself is never run)
    let pods = json(&d, &["get", "pods"]);
    assert_eq!(pods["items"].as_array().map(Vec::len), Some(1), "{pods:#}");
    // its manifest removed: the mirror goes
    std::fs::remove_file(d.manifests().join("static-web.yaml")).unwrap();
    wait_until(&d, &["get", "pods"], Duration::from_secs(60), "mirror pod gone", |l| l["items"].as_array().is_some_and(Vec::is_empty));
}

#[tokio::test]
async fn a_pod_bound_by_name_that_does_not_fit_is_rejected_by_the_node() {
    let d = Daemon::start_server("", &[]).await;
    node_ready(&d);
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: too-big\nspec:\n  nodeName: berth-it\n  containers:\n  - name: c\n    image: {}\n    command: ['sleep', '3600']\n    resources: {{requests: {{cpu: '1000'}}}}\n",
        busybox()
    );
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&manifest));
    let p = wait_until(&d, &["get", "pod", "too-big"], Duration::from_secs(60), "pod rejected", |p| p["status"]["phase"] == "Failed");
    assert_eq!(p["status"]["reason"], "OutOfcpu");
    let msg = p["status"]["message"].as_str().unwrap();
    assert!(msg.starts_with("Pod was rejected: Node didn't have enough resource: cpu, requested: 1000000, used: "), "{msg}");
    assert!(p["status"]["containerStatuses"].is_null(), "nothing ran: {p:#}");
    // a refused pod is deleted like any other
    d.kubectl_ok(&["delete", "pod", "too-big", "--timeout=60s"]);
    // the node's labels and NoExecute taints are judged too (the scheduler was bypassed)
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: wrong-disk\nspec:\n  nodeName: berth-it\n  nodeSelector: {{disktype: ssd}}\n  containers:\n  - name: c\n    image: {}\n    command: ['sleep', '3600']\n",
        busybox()
    );
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&manifest));
    let p = wait_until(&d, &["get", "pod", "wrong-disk"], Duration::from_secs(60), "pod rejected", |p| p["status"]["phase"] == "Failed");
    assert_eq!(p["status"]["reason"], "NodeAffinity");
    assert_eq!(p["status"]["message"], "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector");
    d.kubectl_ok(&["delete", "pod", "wrong-disk", "--timeout=60s"]);
    d.kubectl_ok(&["taint", "node", "berth-it", "berth-test=only:NoExecute"]);
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: untolerated\nspec:\n  nodeName: berth-it\n  containers:\n  - name: c\n    image: {}\n    command: ['sleep', '3600']\n",
        busybox()
    );
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&manifest));
    let p = wait_until(&d, &["get", "pod", "untolerated"], Duration::from_secs(60), "pod rejected", |p| p["status"]["phase"] == "Failed");
    assert_eq!(p["status"]["reason"], "TaintToleration");
    assert_eq!(p["status"]["message"], "Pod was rejected: Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate");
    d.kubectl_ok(&["taint", "node", "berth-it", "berth-test=only:NoExecute-"]);
    d.kubectl_ok(&["delete", "pod", "untolerated", "--timeout=60s"]);
}

/// A kubectl command started in the background (killed by pid on drop).
struct Background(std::process::Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kubectl_background(d: &Daemon, version: &str, args: &[&str]) -> Background {
    let child = std::process::Command::new(berth_integration::apiserver::kubectl_bin(version))
        .arg("--kubeconfig")
        .arg(d.kubeconfig())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kubectl");
    Background(child)
}

/// Reads `child`'s stdout until a line satisfies `want` (within `limit`); returns that line.
fn read_until(child: &mut Background, limit: Duration, want: impl Fn(&str) -> bool) -> String {
    use std::io::BufRead;
    let out = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + limit;
    let mut seen = vec![];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if want(&line) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no such line within {limit:?}; seen: {seen:?}"),
        }
    }
}

#[tokio::test]
async fn kubectl_logs_exec_attach_port_forward_and_node_proxy_reach_the_pod_through_the_api() {
    let d = Daemon::start_server("", &[]).await;
    node_ready(&d);
    let manifest = format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: shell
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {image}
    command: ["sh", "-c", "mkdir -p /www && echo hello-through-port-forward > /www/index.html && echo web started && exec httpd -f -p 8080 -h /www"]
  - name: counter
    image: {image}
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo line $i; sleep 1; done"]
  - name: talk
    image: {image}
    command: ["sh", "-c", "while read l; do echo got $l; done"]
    stdin: true
    stdinOnce: true
"#,
        image = busybox()
    );
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&manifest));
    pod_ready(&d, "shell");

    // logs: a container's output, -c required with several containers (upstream's message)
    assert_eq!(d.kubectl_ok(&["logs", "shell", "-c", "web"]), "web started\n");
    let out = d.kubectl_version("1.33", &["logs", "shell", "--all-containers=false", "--prefix=false", "-c", "nope"], None);
    assert!(String::from_utf8_lossy(&out.stderr).contains("container nope is not valid for pod shell"), "{}", String::from_utf8_lossy(&out.stderr));
    let mut follow = kubectl_background(&d, "1.33", &["logs", "-f", "shell", "-c", "counter"]);
    read_until(&mut follow, Duration::from_secs(30), |l| l == "line 3");
    drop(follow);
    let tail = d.kubectl_ok(&["logs", "shell", "-c", "counter", "--tail=1"]);
    assert!(tail.starts_with("line ") && tail.lines().count() == 1, "{tail:?}");

    // exec: WebSocket (1.33) and SPDY (1.27), exit codes, stdin
    for v in ["1.33", "1.27"] {
        let out = d.kubectl_version(v, &["exec", "shell", "-c", "web", "--", "cat", "/www/index.html"], None);
        assert!(out.status.success(), "kubectl {v} exec: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "hello-through-port-forward\n", "kubectl {v}");
        let out = d.kubectl_version(v, &["exec", "shell", "-c", "web", "--", "sh", "-c", "exit 7"], None);
        assert_eq!(out.status.code(), Some(7), "kubectl {v}: {}", String::from_utf8_lossy(&out.stderr));
        let out = d.kubectl_version(v, &["exec", "-i", "shell", "-c", "web", "--", "tr", "a-z", "A-Z"], Some("piped through\n"));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "PIPED THROUGH\n", "kubectl {v}: {}", String::from_utf8_lossy(&out.stderr));
    }
    let out = d.kubectl_version("1.33", &["exec", "shell", "-c", "missing", "--", "true"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("container missing is not valid for pod shell"), "{}", String::from_utf8_lossy(&out.stderr));

    // cp: tar through exec, both ways
    let tmp = d.dir.path().join("cp");
    std::fs::create_dir_all(&tmp).expect("cp dir");
    std::fs::write(tmp.join("up.txt"), "uploaded\n").expect("file");
    let up = format!("{}", tmp.join("up.txt").display());
    d.kubectl_ok(&["cp", &up, "shell:/tmp/up.txt", "-c", "web"]);
    assert_eq!(d.kubectl_ok(&["exec", "shell", "-c", "web", "--", "cat", "/tmp/up.txt"]), "uploaded\n");
    let down = format!("{}", tmp.join("down.html").display());
    d.kubectl_ok(&["cp", "shell:/www/index.html", &down, "-c", "web"]);
    assert_eq!(std::fs::read_to_string(tmp.join("down.html")).expect("copied down"), "hello-through-port-forward\n");

    // attach: what is typed reaches the container's stdin, its answer comes back (stdinOnce:
    // the end of kubectl's input closes the container's, so it ends and so does attach)
    let out = d.kubectl_version("1.33", &["attach", "-i", "shell", "-c", "talk"], Some("ping\n"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("got ping"),
        "attach: {} / {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // port-forward: a local port of kubectl's choosing to the pod's 8080
    for v in ["1.33", "1.27"] {
        let mut pf = kubectl_background(&d, v, &["port-forward", "pod/shell", ":8080", "--address", "127.0.0.1"]);
        let line = read_until(&mut pf, Duration::from_secs(30), |l| l.starts_with("Forwarding from 127.0.0.1:"));
        let port = line.trim_start_matches("Forwarding from 127.0.0.1:").split_whitespace().next().expect("port").to_string();
        let got = std::process::Command::new("curl").args(["-s", "--max-time", "10", &format!("http://127.0.0.1:{port}/index.html")]).output().expect("curl");
        assert_eq!(String::from_utf8_lossy(&got.stdout), "hello-through-port-forward\n", "kubectl {v} port-forward");
    }

    // nodes/proxy: the kubelet API's stats summary through the apiserver
    let summary: Value = serde_json::from_str(&d.kubectl_ok(&["get", "--raw", "/api/v1/nodes/berth-it/proxy/stats/summary"])).expect("summary json");
    assert_eq!(summary["node"]["nodeName"], "berth-it", "{summary:#}");
    assert!(summary["pods"].as_array().is_some_and(|p| p.iter().any(|p| p["podRef"]["name"] == "shell")), "{summary:#}");
}

/// Under systemd (Type=notify) `berth server` says READY=1 only once its node reports Ready, so
/// units ordered after it find a node that runs pods.
#[tokio::test(flavor = "multi_thread")]
async fn server_tells_systemd_ready_once_its_node_is_ready() {
    let dir = berth_integration::TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("bind the notify socket");
    socket.set_read_timeout(Some(Duration::from_secs(1))).expect("timeout");
    let d = Daemon::start_server_env("", &[], &[("NOTIFY_SOCKET", &path.display().to_string())]).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut buf = [0u8; 4096];
    let ready = loop {
        assert!(Instant::now() < deadline, "no READY=1 within 60 s:\n{}", tail(&d.log(), 40));
        let Ok(n) = socket.recv(&mut buf) else { continue };
        let msg = String::from_utf8_lossy(&buf[..n]).to_string();
        if msg.lines().any(|l| l == "READY=1") {
            break msg;
        }
    };
    // the node had reported Ready before the server said so: one read shows it (no waiting)
    let out = d.kubectl(&["get", "node", "berth-it", "-o", "json"]);
    let node: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(condition(&node, "Ready"), "True", "{node:#}");
    assert!(ready.contains("STATUS=serving the Kubernetes API; this node runs pods"), "{ready}");
    assert!(d.log().contains("the node is Ready"), "{}", tail(&d.log(), 40));
}

/// A pod's imagePullSecrets (a `kubectl create secret docker-registry`) are used to pull from a
/// registry that wants credentials; without them the pull is refused and backs off.
#[tokio::test(flavor = "multi_thread")]
async fn image_pull_secrets_authenticate_pulls() {
    let d = Daemon::start_server("", &[]).await;
    node_ready(&d);
    let image = format!("{}/berth/busybox:latest", berth_integration::auth_registry());
    let pod = |name: &str, secret: Option<&str>| {
        let secrets = secret.map(|s| format!("  imagePullSecrets:\n  - name: {s}\n")).unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{secrets}  containers:\n  - name: c\n    image: {image}\n    imagePullPolicy: Always\n    command: ['sleep', '3600']\n"
        )
    };
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod("no-creds", None)));
    let p = wait_until(&d, &["get", "pod", "no-creds"], Duration::from_secs(60), "pull refused", |p| {
        p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"].as_str().is_some_and(|r| r == "ErrImagePull" || r == "ImagePullBackOff")
    });
    assert!(p["status"]["containerStatuses"][0]["state"]["waiting"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{p:#}");
    d.kubectl_ok(&[
        "create",
        "secret",
        "docker-registry",
        "berth-regcred",
        &format!("--docker-server={}", berth_integration::auth_registry()),
        "--docker-username=berth",
        "--docker-password=berth-secret",
    ]);
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod("with-creds", Some("berth-regcred"))));
    pod_ready(&d, "with-creds");
    d.kubectl_ok(&["delete", "pod", "no-creds", "with-creds", "--timeout=60s"]);
}

/// A PersistentVolumeClaim bound to a hostPath PersistentVolume is mounted into the pod: what
/// the container writes lands in the volume's directory on this machine.
#[tokio::test(flavor = "multi_thread")]
async fn a_claim_bound_to_a_host_path_volume_is_mounted() {
    let d = Daemon::start_server("", &[]).await;
    node_ready(&d);
    let host = d.dir.path().join("berth-pv-data");
    let pv = serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "berth-pv-1"},
        "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                 "claimRef": {"namespace": "default", "name": "berth-claim"},
                 "hostPath": {"path": host.display().to_string(), "type": "DirectoryOrCreate"}}});
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pv.to_string()));
    let pvc = serde_json::json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "berth-claim", "namespace": "default"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": "berth-pv-1", "resources": {"requests": {"storage": "1Gi"}}}});
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pvc.to_string()));
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: claimer\nspec:\n  nodeName: berth-it\n  containers:\n  - name: c\n    image: {}\n    command: ['sh', '-c', 'echo written-through-the-claim > /data/hello && sleep 3600']\n    volumeMounts:\n    - {{name: data, mountPath: /data}}\n  volumes:\n  - name: data\n    persistentVolumeClaim: {{claimName: berth-claim}}\n",
        busybox()
    );
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod));
    pod_ready(&d, "claimer");
    let file = host.join("hello");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !file.exists() {
        assert!(Instant::now() < deadline, "nothing written to {}", file.display());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&file).expect("read").trim(), "written-through-the-claim");
    d.kubectl_ok(&["delete", "pod", "claimer", "--timeout=60s"]);
}

/// A node whose pod network cannot work (its CNI config names a plugin that is not there)
/// reports Ready=False with the kubelet's reason and message, and the node lifecycle controller
/// taints it not-ready, so nothing is scheduled there.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_without_a_working_pod_network_is_not_ready() {
    let net = berth_integration::TempDir::new("broken-net");
    std::fs::write(net.path().join("10-broken.conflist"), r#"{"cniVersion": "1.0.0", "name": "broken", "plugins": [{"type": "berth-no-such-plugin"}]}"#)
        .expect("conflist");
    let bin = berth_integration::berth_bin();
    let bin_dir = bin.parent().expect("bin dir").display().to_string();
    let config = format!("[network]\nconf_dir = \"{}\"\nbin_dirs = [\"{bin_dir}\"]\nmasquerade = false\n", net.path().display());
    let d = Daemon::start_server(&config, &[]).await;
    let node = wait_until(&d, &["get", "node", "berth-it"], Duration::from_secs(60), "node reports Ready=False", |n| condition(n, "Ready") == "False");
    let ready = node["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Ready")).cloned().unwrap_or_default();
    assert_eq!(ready["reason"], "KubeletNotReady", "{ready:#}");
    assert!(ready["message"].as_str().is_some_and(|m| m.starts_with("container runtime network not ready: ")), "{ready:#}");
    wait_until(&d, &["get", "node", "berth-it"], Duration::from_secs(30), "not-ready taint", |n| {
        n["spec"]["taints"].as_array().is_some_and(|ts| ts.iter().any(|t| t["key"] == "node.kubernetes.io/not-ready" && t["effect"] == "NoSchedule"))
    });
}
