//! The node lifecycle controller end to end: `berth server` (control plane only, grace period
//! shortened by its flag) with a Node the test registers and whose Lease it renews, then stops
//! renewing: the Node's conditions go Unknown with upstream's reason, it is tainted unreachable
//! (NoSchedule and NoExecute), a pod tolerating that for 2 s is evicted after it while one with
//! the default 300 s stays, and once the "kubelet" reports again the taints go.

use std::time::{Duration, Instant};

use berth_integration::apiserver::ApiServer;
use serde_json::{json, Value};

const NODE: &str = "berth-lc-n1";

fn now() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn get(s: &ApiServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&s.ok("1.33", &all)).expect("json")
}

fn wait(s: &ApiServer, args: &[&str], limit: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let v = get(s, args);
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {v:#}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The "kubelet": Ready with a fresh heartbeat, and a renewed Lease.
fn report(s: &ApiServer) {
    let t = now();
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
        "lastHeartbeatTime": t, "lastTransitionTime": t}]}});
    s.ok("1.33", &["patch", "node", NODE, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": NODE, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": NODE, "leaseDurationSeconds": 40, "renewTime": t}});
    s.ok_in("1.33", &["apply", "-f", "-"], Some(&lease.to_string()));
}

fn taints(node: &Value) -> Vec<(String, String)> {
    node["spec"]["taints"]
        .as_array()
        .map(|ts| ts.iter().map(|t| (t["key"].as_str().unwrap_or("").to_string(), t["effect"].as_str().unwrap_or("").to_string())).collect())
        .unwrap_or_default()
}

#[test]
fn a_silent_node_goes_unknown_is_tainted_and_its_pods_are_evicted_after_their_toleration() {
    let s = ApiServer::start_with("lifecycle", vec!["--node-monitor-grace-period".into(), "4s".into(), "--node-monitor-period".into(), "1s".into()]);
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE, "labels": {"kubernetes.io/hostname": NODE}}});
    s.ok_in("1.33", &["create", "-f", "-"], Some(&node.to_string()));
    report(&s);
    let pod = |name: &str, toleration: Option<i64>| {
        let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
            "spec": {"nodeName": NODE, "containers": [{"name": "c", "image": "busybox"}]}});
        if let Some(secs) = toleration {
            p["spec"]["tolerations"] =
                json!([{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": secs}]);
        }
        p.to_string()
    };
    s.ok_in("1.33", &["create", "-f", "-"], Some(&pod("short-toleration", Some(2))));
    s.ok_in("1.33", &["create", "-f", "-"], Some(&pod("default-toleration", None)));
    // while the kubelet reports, nothing happens
    for _ in 0..3 {
        report(&s);
        std::thread::sleep(Duration::from_secs(1));
    }
    let n = get(&s, &["get", "node", NODE]);
    assert!(taints(&n).is_empty(), "{n:#}");
    // silence: Unknown within the grace period and a monitor period or two
    let silent = Instant::now();
    let n = wait(&s, &["get", "node", NODE], Duration::from_secs(15), "Ready Unknown", |n| {
        n["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "Unknown"))
    });
    assert!(silent.elapsed() >= Duration::from_secs(3), "marked after {:?}", silent.elapsed());
    let ready = n["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Ready")).cloned().unwrap_or_default();
    assert_eq!((ready["reason"].as_str(), ready["message"].as_str()), (Some("NodeStatusUnknown"), Some("Kubelet stopped posting node status.")));
    let memory = n["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "MemoryPressure")).cloned().unwrap_or_default();
    assert_eq!((memory["status"].as_str(), memory["reason"].as_str()), (Some("Unknown"), Some("NodeStatusNeverUpdated")));
    let n = wait(&s, &["get", "node", NODE], Duration::from_secs(10), "unreachable taints", |n| taints(n).len() == 2);
    assert_eq!(
        taints(&n),
        vec![("node.kubernetes.io/unreachable".to_string(), "NoSchedule".to_string()), ("node.kubernetes.io/unreachable".to_string(), "NoExecute".to_string())]
    );
    // the short toleration runs out: evicted (Terminating: no kubelet finishes it)
    let p = wait(&s, &["get", "pod", "short-toleration"], Duration::from_secs(15), "evicted", |p| p["metadata"]["deletionTimestamp"].is_string());
    let target = p["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget")).cloned().unwrap_or_default();
    assert_eq!(target["reason"], "DeletionByTaintManager", "{p:#}");
    let other = get(&s, &["get", "pod", "default-toleration"]);
    assert!(other["metadata"]["deletionTimestamp"].is_null(), "the 300 s toleration still holds: {other:#}");
    // the kubelet is back: the taints go
    report(&s);
    wait(&s, &["get", "node", NODE], Duration::from_secs(10), "taints removed", |n| taints(n).is_empty());
    s.ok("1.33", &["delete", "pod", "default-toleration", "short-toleration", "--grace-period=0", "--force"]);
}
