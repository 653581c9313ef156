//! The scheduler inside `berth server`, driven by the real kubectl 1.33 against fake nodes
//! (Node objects the test registers, kept Ready by the fake-node helper; nothing runs their
//! pods): the classic placement cases, upstream's message and events when nothing fits,
//! re-scheduling on a node event, a second scheduler's pods left alone, scheduling gates,
//! pod anti-affinity spreading replicas, priority preemption, --disable-scheduler, and leader
//! election between two servers on one etcd.

use std::time::{Duration, Instant};

use berth_integration::apiserver::ApiServer;
use berth_integration::fake_node::{FakeNode, FakeNodes};
use serde_json::{json, Value};

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

fn create(api: &ApiServer, obj: Value) {
    api.ok_in("1.33", &["create", "-f", "-"], Some(&obj.to_string()));
}

fn pod(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["containers"] = json!([{"name": "c", "image": "registry.k8s.io/pause:3.10", "resources": spec.get("resources").cloned().unwrap_or(json!({}))}]);
    if let Some(o) = spec.as_object_mut() {
        o.remove("resources");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"}, "spec": spec})
}

fn get_pod(api: &ApiServer, name: &str) -> Value {
    json(&api.ok("1.33", &["get", "pod", name, "-o", "json"]))
}

/// Polls `check` on the pod until it holds (or fails the test after `limit`).
fn wait_pod(api: &ApiServer, name: &str, what: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let p = get_pod(api, name);
        if check(&p) {
            return p;
        }
        if Instant::now() > deadline {
            let all = api.kubectl("1.33", &["get", "pods", "-o", "wide"]);
            panic!("pod {name}: {what} not within {limit:?}: {p:#}\npods:\n{}\nserver log:\n{}", String::from_utf8_lossy(&all.stdout), api.log());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn node_of(p: &Value) -> &str {
    p["spec"]["nodeName"].as_str().unwrap_or_default()
}

fn wait_bound(api: &ApiServer, name: &str) -> String {
    node_of(&wait_pod(api, name, "bound", Duration::from_secs(30), |p| !node_of(p).is_empty())).to_string()
}

fn pod_scheduled_condition(p: &Value) -> Option<&Value> {
    p["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "PodScheduled"))
}

fn events_for(api: &ApiServer, pod: &str) -> Vec<Value> {
    let list = json(&api.ok("1.33", &["get", "events", "-n", "default", "--field-selector", &format!("involvedObject.name={pod}"), "-o", "json"]));
    list["items"].as_array().cloned().unwrap_or_default()
}

fn wait_event(api: &ApiServer, pod: &str, reason: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(e) = events_for(api, pod).into_iter().find(|e| e["reason"] == reason) {
            return e;
        }
        assert!(Instant::now() < deadline, "no {reason} event for {pod}: {:#?}", events_for(api, pod));
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn node_selector_and_node_affinity_place_pods_on_matching_nodes() {
    let api = ApiServer::start("sched-affinity");
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("ssd-node", "4", "8Gi").label("disktype", "ssd"));
    nodes.add(&FakeNode::new("hdd-node", "4", "8Gi").label("disktype", "hdd"));
    nodes.add(&FakeNode::new("gpu-node", "4", "8Gi").label("disktype", "hdd").label("accelerator", "gpu"));

    create(&api, pod("on-ssd", json!({"nodeSelector": {"disktype": "ssd"}})));
    create(
        &api,
        pod(
            "required-hdd",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "disktype", "operator": "In", "values": ["hdd"]}, {"key": "accelerator", "operator": "DoesNotExist"}]}]}}}}),
        ),
    );
    create(
        &api,
        pod(
            "prefers-gpu",
            json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": [{"key": "accelerator", "operator": "In", "values": ["gpu"]}]}}]}}}),
        ),
    );
    create(
        &api,
        pod(
            "by-field",
            json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["hdd-node"]}]}]}}}}),
        ),
    );
    assert_eq!(wait_bound(&api, "on-ssd"), "ssd-node");
    assert_eq!(wait_bound(&api, "required-hdd"), "hdd-node");
    assert_eq!(wait_bound(&api, "prefers-gpu"), "gpu-node");
    assert_eq!(wait_bound(&api, "by-field"), "hdd-node");

    let ev = wait_event(&api, "on-ssd", "Scheduled");
    assert_eq!(ev["message"], "Successfully assigned default/on-ssd to ssd-node");
    assert_eq!(ev["type"], "Normal");
    let p = get_pod(&api, "on-ssd");
    assert_eq!(pod_scheduled_condition(&p).map(|c| c["status"].clone()), Some(json!("True")), "{p:#}");
    // kubectl shows where it went.
    let wide = api.ok("1.33", &["get", "pod", "on-ssd", "-o", "wide"]);
    assert!(wide.contains("ssd-node"), "{wide}");
}

#[test]
fn a_pod_that_fits_nowhere_gets_upstreams_message_and_lands_when_a_node_fits() {
    let api = ApiServer::start("sched-fitnowhere");
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("small", "1", "4Gi"));
    nodes.add(&FakeNode::new("tainted-a", "8", "4Gi").taint("key", "value", "NoSchedule"));
    nodes.add(&FakeNode::new("tainted-b", "8", "4Gi").taint("key", "value", "NoExecute"));

    create(&api, pod("big", json!({"resources": {"requests": {"cpu": "2"}}})));
    let want = "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {key: value}. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling.";
    let p = wait_pod(&api, "big", "PodScheduled=False", Duration::from_secs(30), |p| pod_scheduled_condition(p).is_some_and(|c| c["status"] == "False"));
    let cond = pod_scheduled_condition(&p).cloned().unwrap_or_default();
    assert_eq!(cond["reason"], "Unschedulable");
    assert_eq!(cond["message"], want);
    assert_eq!(p["status"]["phase"], "Pending");
    let ev = wait_event(&api, "big", "FailedScheduling");
    assert_eq!(ev["message"], want);
    assert_eq!(ev["type"], "Warning");

    // A tolerating pod may use the tainted nodes.
    create(&api, pod("tolerant", json!({"tolerations": [{"key": "key", "operator": "Equal", "value": "value"}], "resources": {"requests": {"cpu": "2"}}})));
    let n = wait_bound(&api, "tolerant");
    assert!(n == "tainted-a" || n == "tainted-b", "{n}");

    // A node that fits: the node event re-queues the pod; no five-minute timer is waited for.
    let added = Instant::now();
    nodes.add(&FakeNode::new("roomy", "4", "4Gi"));
    assert_eq!(node_of(&wait_pod(&api, "big", "bound", Duration::from_secs(15), |p| !node_of(p).is_empty())), "roomy");
    assert!(added.elapsed() < Duration::from_secs(15));
    let ev = wait_event(&api, "big", "Scheduled");
    assert_eq!(ev["message"], "Successfully assigned default/big to roomy");
}

#[test]
fn other_schedulers_pods_and_gated_pods_are_left_alone() {
    let api = ApiServer::start("sched-names");
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("n1", "4", "4Gi"));

    create(&api, pod("theirs", json!({"schedulerName": "my-scheduler"})));
    create(&api, pod("gated", json!({"schedulingGates": [{"name": "example.com/wait"}]})));
    create(&api, pod("ours", json!({})));
    assert_eq!(wait_bound(&api, "ours"), "n1");
    // The watch delivered "theirs" and "gated" before "ours": had they been taken, they would be bound.
    for name in ["theirs", "gated"] {
        let p = get_pod(&api, name);
        assert_eq!(node_of(&p), "", "{name} must stay pending: {p:#}");
        assert!(events_for(&api, name).iter().all(|e| e["source"]["component"] != "default-scheduler"), "{name}: no scheduler events");
    }
    // a gate cannot be added, only removed; once the last one goes the pod is scheduled
    let added = api.fails(
        "1.33",
        &["patch", "pod", "gated", "--type=json", "-p", r#"[{"op":"add","path":"/spec/schedulingGates/-","value":{"name":"example.com/more"}}]"#],
        None,
    );
    assert!(added.contains("only deletion is allowed, but found new scheduling gate 'example.com/more'"), "{added}");
    api.ok("1.33", &["patch", "pod", "gated", "--type=json", "-p", r#"[{"op":"remove","path":"/spec/schedulingGates"}]"#]);
    assert_eq!(wait_bound(&api, "gated"), "n1", "bound once its gates are lifted");
}

#[test]
fn taints_with_no_schedule_and_no_execute_keep_pods_without_tolerations_off() {
    let api = ApiServer::start("sched-taints");
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("db", "4", "4Gi").taint("dedicated", "db", "NoSchedule"));
    nodes.add(&FakeNode::new("draining", "4", "4Gi").taint("maintenance", "", "NoExecute"));
    nodes.add(&FakeNode::new("general", "4", "4Gi").taint("spot", "true", "PreferNoSchedule"));

    for i in 0..3 {
        create(&api, pod(&format!("plain-{i}"), json!({})));
    }
    create(
        &api,
        pod(
            "db-client",
            json!({"nodeSelector": {"kubernetes.io/hostname": "db"}, "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoSchedule"}]}),
        ),
    );
    create(&api, pod("maint", json!({"nodeSelector": {"kubernetes.io/hostname": "draining"}, "tolerations": [{"key": "maintenance", "operator": "Exists"}]})));
    for i in 0..3 {
        assert_eq!(wait_bound(&api, &format!("plain-{i}")), "general", "only the PreferNoSchedule node takes untolerating pods");
    }
    assert_eq!(wait_bound(&api, "db-client"), "db");
    assert_eq!(wait_bound(&api, "maint"), "draining");
}

#[test]
fn resources_that_fit_one_node_only_land_there() {
    let api = ApiServer::start("sched-fit");
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("a", "2", "2Gi"));
    nodes.add(&FakeNode::new("b", "2", "16Gi"));
    nodes.add(&FakeNode::new("c", "16", "2Gi"));
    create(&api, pod("needs-both", json!({"resources": {"requests": {"cpu": "3", "memory": "8Gi"}}})));
    // cpu 3 fits only c, memory 8Gi only b: nothing fits, and more than a node has is beyond preemption.
    let p = wait_pod(&api, "needs-both", "unschedulable", Duration::from_secs(30), |p| pod_scheduled_condition(p).is_some_and(|c| c["status"] == "False"));
    assert_eq!(
        pod_scheduled_condition(&p).map(|c| c["message"].clone()).unwrap_or_default(),
        "0/3 nodes are available: 2 Insufficient cpu, 2 Insufficient memory. preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."
    );
    create(&api, pod("mem-heavy", json!({"resources": {"requests": {"cpu": "1", "memory": "8Gi"}}})));
    assert_eq!(wait_bound(&api, "mem-heavy"), "b");
    create(&api, pod("cpu-heavy", json!({"resources": {"requests": {"cpu": "8", "memory": "1Gi"}}})));
    assert_eq!(wait_bound(&api, "cpu-heavy"), "c");
}

#[test]
fn a_higher_priority_pod_preempts_a_lower_priority_one() {
    let api = ApiServer::start("sched-preempt");
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("only", "2", "4Gi"));
    create(&api, json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000}));
    // (Priority admission takes a pod's priority and preemption policy from its class)
    create(
        &api,
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high-never"}, "value": 1000, "preemptionPolicy": "Never"}),
    );
    create(&api, pod("low", json!({"priority": 0, "resources": {"requests": {"cpu": "1500m"}}})));
    assert_eq!(wait_bound(&api, "low"), "only");
    let low_uid = get_pod(&api, "low")["metadata"]["uid"].clone();

    create(&api, pod("never", json!({"priorityClassName": "high-never", "resources": {"requests": {"cpu": "1500m"}}})));
    let p = wait_pod(&api, "never", "unschedulable", Duration::from_secs(30), |p| pod_scheduled_condition(p).is_some_and(|c| c["status"] == "False"));
    assert_eq!(
        pod_scheduled_condition(&p).map(|c| c["message"].clone()).unwrap_or_default(),
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    );
    api.ok("1.33", &["delete", "pod", "never"]);

    create(&api, pod("high", json!({"priorityClassName": "high", "resources": {"requests": {"cpu": "1500m"}}})));
    let p = wait_pod(&api, "high", "bound", Duration::from_secs(30), |p| !node_of(p).is_empty());
    assert_eq!(node_of(&p), "only");
    assert_eq!(p["status"]["nominatedNodeName"], "only", "{p:#}");
    // The victim is gone (or, if something recreated it, is another pod).
    let left = api.kubectl("1.33", &["get", "pod", "low", "-o", "json"]);
    if left.status.success() {
        assert_ne!(json(&String::from_utf8_lossy(&left.stdout))["metadata"]["uid"], low_uid, "the low-priority pod was preempted");
    }
    let ev = wait_event(&api, "low", "Preempted");
    assert!(ev["message"].as_str().unwrap_or_default().starts_with("Preempted by pod "), "{ev:#}");
}

#[test]
fn disable_scheduler_leaves_pods_pending_and_the_lease_names_the_leader() {
    let api = ApiServer::start_with("sched-off", vec!["--disable-scheduler".into()]);
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("n1", "4", "4Gi"));
    create(&api, pod("waits", json!({})));
    let leases = api.kubectl("1.33", &["get", "lease", "-n", "kube-system", "kube-scheduler"]);
    assert!(!leases.status.success(), "no scheduler, no lease");
    assert_eq!(node_of(&get_pod(&api, "waits")), "");

    let on = ApiServer::start("sched-lease");
    let deadline = Instant::now() + Duration::from_secs(30);
    let lease = loop {
        let out = on.kubectl("1.33", &["get", "lease", "-n", "kube-system", "kube-scheduler", "-o", "json"]);
        if out.status.success() {
            break json(&String::from_utf8_lossy(&out.stdout));
        }
        assert!(Instant::now() < deadline, "no kube-scheduler lease: {}", on.log());
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(lease["spec"]["leaseTransitions"], 0);
    assert!(lease["spec"]["holderIdentity"].as_str().is_some_and(|h| !h.is_empty()));
    assert!(lease["spec"]["renewTime"].is_string() && lease["spec"]["acquireTime"].is_string());
}

fn anti_affine(name: &str) -> Value {
    let mut p = pod(
        name,
        json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "kubernetes.io/hostname"}]}}}),
    );
    p["metadata"]["labels"] = json!({"app": "web"});
    p
}

#[test]
fn pod_anti_affinity_spreads_replicas_one_per_node() {
    let api = ApiServer::start("sched-anti");
    let nodes = FakeNodes::start(&api);
    for n in ["n1", "n2", "n3"] {
        nodes.add(&FakeNode::new(n, "4", "4Gi").label("zone", "z1"));
    }
    for i in 0..3 {
        create(&api, anti_affine(&format!("web-{i}")));
    }
    let mut placed: Vec<String> = (0..3).map(|i| wait_bound(&api, &format!("web-{i}"))).collect();
    placed.sort();
    assert_eq!(placed, vec!["n1", "n2", "n3"], "one replica per node");
    create(&api, anti_affine("web-3"));
    let p = wait_pod(&api, "web-3", "unschedulable", Duration::from_secs(30), |p| pod_scheduled_condition(p).is_some_and(|c| c["status"] == "False"));
    assert_eq!(
        pod_scheduled_condition(&p).map(|c| c["message"].clone()).unwrap_or_default(),
        "0/3 nodes are available: 3 node(s) didn't satisfy existing pods anti-affinity rules. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
    );
    // A pod that wants to be near web (same zone) may go anywhere in z1.
    let mut near = pod(
        "near-web",
        json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "zone"}]}}}),
    );
    near["metadata"]["labels"] = json!({"app": "other"});
    create(&api, near);
    assert!(!wait_bound(&api, "near-web").is_empty());
    // Deleting a replica frees its node for the waiting one: the delete event re-queues it.
    let freed = node_of(&get_pod(&api, "web-0")).to_string();
    api.ok("1.33", &["delete", "pod", "web-0"]);
    assert_eq!(wait_bound(&api, "web-3"), freed);
}

#[test]
fn leader_election_on_etcd_fails_over_and_binds_nothing_twice() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let etcd = rt.block_on(berth_store::etcd_process::EtcdCluster::single(&[])).expect("start etcd");
    let endpoint = etcd.members[0].client_url.clone();
    let mut a = ApiServer::start_with("sched-etcd-a", vec!["--datastore-endpoint".into(), endpoint.clone()]);
    let mut b = ApiServer::start_with("sched-etcd-b", vec!["--datastore-endpoint".into(), endpoint]);
    let leader_is = |s: &ApiServer| s.log().contains("acquired the lease");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !leader_is(&a) && !leader_is(&b) {
        assert!(Instant::now() < deadline, "nobody leads:\n{}\n{}", a.log(), b.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!(leader_is(&a) && leader_is(&b)), "exactly one leader");
    let (leader, follower) = if leader_is(&a) { (&mut a, &mut b) } else { (&mut b, &mut a) };
    let nodes = FakeNodes::start(follower);
    nodes.add(&FakeNode::new("n1", "8", "8Gi"));
    for i in 0..5 {
        create(follower, pod(&format!("before-{i}"), json!({})));
    }
    for i in 0..5 {
        assert_eq!(wait_bound(follower, &format!("before-{i}")), "n1");
    }
    let lease = json(&follower.ok("1.33", &["get", "lease", "-n", "kube-system", "kube-scheduler", "-o", "json"]));
    let first_holder = lease["spec"]["holderIdentity"].clone();

    leader.kill();
    let killed = Instant::now();
    for i in 0..5 {
        create(follower, pod(&format!("after-{i}"), json!({})));
    }
    for i in 0..5 {
        assert_eq!(node_of(&wait_pod(follower, &format!("after-{i}"), "bound", Duration::from_secs(40), |p| !node_of(p).is_empty())), "n1");
    }
    // The lease lapses after 15 s without renewal; the follower retries every 2 s (with jitter).
    assert!(killed.elapsed() < Duration::from_secs(15 + 6 + 5), "took over after {:?}", killed.elapsed());
    assert!(leader_is(follower), "{}", follower.log());
    let lease = json(&follower.ok("1.33", &["get", "lease", "-n", "kube-system", "kube-scheduler", "-o", "json"]));
    assert_ne!(lease["spec"]["holderIdentity"], first_holder);
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    // Every pod was bound once: one Scheduled event each.
    for name in (0..5).map(|i| format!("before-{i}")).chain((0..5).map(|i| format!("after-{i}"))) {
        let scheduled = events_for(follower, &name).into_iter().filter(|e| e["reason"] == "Scheduled").count();
        assert_eq!(scheduled, 1, "{name}");
    }
    drop(nodes);
    drop(a);
    drop(b);
    drop(etcd);
}

#[test]
fn topology_spread_keeps_zones_within_max_skew() {
    let api = ApiServer::start("sched-spread");
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("a1", "8", "8Gi").label("topology.kubernetes.io/zone", "a"));
    nodes.add(&FakeNode::new("a2", "8", "8Gi").label("topology.kubernetes.io/zone", "a"));
    nodes.add(&FakeNode::new("b1", "8", "8Gi").label("topology.kubernetes.io/zone", "b"));
    let spread = |name: &str| {
        let mut p = pod(
            name,
            json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "spread"}}}]}),
        );
        p["metadata"]["labels"] = json!({"app": "spread"});
        p
    };
    let mut zones = std::collections::BTreeMap::new();
    for i in 0..4 {
        let name = format!("s-{i}");
        create(&api, spread(&name));
        let node = wait_bound(&api, &name);
        *zones.entry(if node.starts_with('a') { "a" } else { "b" }).or_insert(0) += 1;
    }
    assert_eq!(zones.into_iter().collect::<Vec<_>>(), vec![("a", 2), ("b", 2)], "two zones, two pods each");
}

#[test]
fn preemption_spares_pods_a_disruption_budget_protects() {
    let api = ApiServer::start("sched-pdb");
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("a", "2", "4Gi"));
    nodes.add(&FakeNode::new("b", "2", "4Gi"));
    // No disruption controller yet: the budget's status allows no disruption.
    create(
        &api,
        json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {"name": "db", "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "db"}}}}),
    );
    let mut db = pod("db-0", json!({"nodeSelector": {"kubernetes.io/hostname": "a"}, "priority": 0, "resources": {"requests": {"cpu": "1500m"}}}));
    db["metadata"]["labels"] = json!({"app": "db"});
    create(&api, db);
    create(&api, pod("batch", json!({"nodeSelector": {"kubernetes.io/hostname": "b"}, "priority": 0, "resources": {"requests": {"cpu": "1500m"}}})));
    assert_eq!(wait_bound(&api, "db-0"), "a");
    assert_eq!(wait_bound(&api, "batch"), "b");
    create(&api, json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "urgent"}, "value": 1000}));
    create(&api, pod("urgent", json!({"priorityClassName": "urgent", "resources": {"requests": {"cpu": "1500m"}}})));
    assert_eq!(wait_bound(&api, "urgent"), "b", "the unprotected pod is the victim");
    assert_eq!(node_of(&get_pod(&api, "db-0")), "a", "the budget-protected pod stays");
    wait_event(&api, "batch", "Preempted");
}

#[test]
fn scheduler_config_profiles_pick_their_scoring_strategy() {
    let dir = berth_integration::TempDir::new("sched-config");
    let cfg = dir.path().join("scheduler.yaml");
    std::fs::write(
        &cfg,
        r#"apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles:
- schedulerName: default-scheduler
- schedulerName: packer
  plugins:
    score:
      disabled:
      - name: "*"
      enabled:
      - name: NodeResourcesFit
        weight: 1
  pluginConfig:
  - name: NodeResourcesFit
    args:
      scoringStrategy:
        type: MostAllocated
"#,
    )
    .expect("write config");
    let api = ApiServer::start_with("sched-config", vec!["--scheduler-config".into(), cfg.display().to_string()]);
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("busy", "4", "8Gi"));
    nodes.add(&FakeNode::new("idle", "4", "8Gi"));
    create(&api, pod("filler", json!({"nodeSelector": {"kubernetes.io/hostname": "busy"}, "resources": {"requests": {"cpu": "3", "memory": "4Gi"}}})));
    assert_eq!(wait_bound(&api, "filler"), "busy");
    create(&api, pod("packed", json!({"schedulerName": "packer", "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}})));
    create(&api, pod("spread", json!({"resources": {"requests": {"cpu": "500m", "memory": "512Mi"}}})));
    assert_eq!(wait_bound(&api, "packed"), "busy", "MostAllocated packs");
    assert_eq!(wait_bound(&api, "spread"), "idle", "LeastAllocated spreads");
    let ev = wait_event(&api, "packed", "Scheduled");
    assert_eq!(ev["message"], "Successfully assigned default/packed to busy");
    assert_eq!(ev["source"]["component"], "packer", "events come from the profile's scheduler name");
}

/// A `berth scheduler` process this test started, ended (SIGTERM) when dropped.
struct SchedulerProcess(std::process::Child, std::path::PathBuf);

impl SchedulerProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }

    /// SIGTERM; the exit status once it ended (within 10 s).
    fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on the pid of a child this test started and has not reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.0.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "berth scheduler did not stop on SIGTERM: {}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SchedulerProcess {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

#[test]
fn berth_scheduler_runs_a_second_scheduler_on_its_own_lease() {
    let api = ApiServer::start("sched-second");
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("n1", "4", "4Gi"));
    let cfg = api.dir.path().join("second.yaml");
    std::fs::write(
        &cfg,
        format!(
            "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\nclientConnection:\n  kubeconfig: {}\nleaderElection:\n  leaderElect: true\n  resourceName: berth-second\n  resourceNamespace: default\nprofiles:\n- schedulerName: berth-second\n",
            api.kubeconfig.display()
        ),
    )
    .expect("write config");
    // a pod for it, made before it runs: the in-process default scheduler leaves it alone
    create(&api, pod("theirs", json!({"schedulerName": "berth-second"})));
    create(&api, pod("ours", json!({})));
    assert_eq!(wait_bound(&api, "ours"), "n1");
    assert_eq!(node_of(&get_pod(&api, "theirs")), "");

    let log = api.dir.path().join("second.log");
    let child = std::process::Command::new(berth_integration::berth_bin())
        .args(["scheduler", "--scheduler-config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start berth scheduler");
    let mut second = SchedulerProcess(child, log);
    let p = wait_pod(&api, "theirs", "bound by berth scheduler", Duration::from_secs(30), |p| !node_of(p).is_empty());
    assert_eq!(node_of(&p), "n1", "{}", second.log());
    let ev = wait_event(&api, "theirs", "Scheduled");
    assert_eq!(ev["message"], "Successfully assigned default/theirs to n1");
    assert_eq!(ev["source"]["component"], "berth-second");
    // its own Lease, as the configuration names it; the in-process scheduler keeps upstream's
    let lease = json(&api.ok("1.33", &["get", "lease", "-n", "default", "berth-second", "-o", "json"]));
    assert!(lease["spec"]["holderIdentity"].as_str().is_some_and(|h| !h.is_empty()), "{lease:#}");
    let default_lease = json(&api.ok("1.33", &["get", "lease", "-n", "kube-system", "kube-scheduler", "-o", "json"]));
    assert_ne!(default_lease["spec"]["holderIdentity"], lease["spec"]["holderIdentity"]);
    // a pod for neither stays pending; one for the default scheduler is not taken by it
    create(&api, pod("nobodys", json!({"schedulerName": "elsewhere"})));
    create(&api, pod("ours-too", json!({})));
    assert_eq!(wait_bound(&api, "ours-too"), "n1");
    assert!(events_for(&api, "ours-too").iter().all(|e| e["source"]["component"] != "berth-second"));
    assert_eq!(node_of(&get_pod(&api, "nobodys")), "");
    assert!(second.stop().success(), "exits cleanly on SIGTERM: {}", second.log());

    // bad invocations say why
    let out = std::process::Command::new(berth_integration::berth_bin()).args(["scheduler", "--leader-elect=false"]).output().expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no kubeconfig: give --kubeconfig"), "{}", String::from_utf8_lossy(&out.stderr));
}
