//! The pod worker's decisions on the fake runtime (`super::super::fake`): restart policies,
//! CrashLoopBackOff, init container order, probe outcomes and the pod cgroup. No root: the
//! worker's files go to a temporary directory, its clock is the test's.
use super::*;
use crate::node::fake::{harness, Harness, SECOND};

/// A pod with these containers (JSON), under a restart policy.
fn pod(policy: &str, init: serde_json::Value, containers: serde_json::Value) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "berth-web", "namespace": "default", "uid": "0000-berth-1"},
        "spec": {"restartPolicy": policy, "initContainers": init, "containers": containers},
    }))
    .expect("a pod")
}

fn app(name: &str) -> serde_json::Value {
    serde_json::json!({"name": name, "image": "registry.local/app:1"})
}

fn worker(h: &Harness, pod: Pod) -> Worker {
    Worker::new(pod, h.shared.clone())
}

async fn sync(w: &mut Worker) {
    w.sync().await.expect("a sync");
}

fn created(h: &Harness) -> Vec<String> {
    h.rt.calls("CreateContainer")
}

#[tokio::test]
async fn restart_policy_always_restarts_a_container_that_succeeded() {
    let h = harness();
    let mut w = worker(&h, pod("Always", serde_json::json!([]), serde_json::json!([app("main")])));
    sync(&mut w).await;
    h.rt.exit("main", 0);
    sync(&mut w).await;
    assert_eq!(created(&h), ["CreateContainer main 0", "CreateContainer main 1"]);
    assert_eq!(w.progress.containers["main"].restart_count, 1);
    assert_eq!(w.progress.phase, "Running");
}

#[tokio::test]
async fn restart_policy_on_failure_restarts_failures_only() {
    let h = harness();
    let mut w = worker(&h, pod("OnFailure", serde_json::json!([]), serde_json::json!([app("main")])));
    sync(&mut w).await;
    h.rt.exit("main", 3);
    sync(&mut w).await;
    assert_eq!(created(&h), ["CreateContainer main 0", "CreateContainer main 1"], "a failure restarts");
    h.clock.advance_secs(60);
    h.rt.exit("main", 0);
    sync(&mut w).await;
    assert_eq!(created(&h).len(), 2, "a success does not");
    assert_eq!(w.progress.phase, "Succeeded");
    assert_eq!(h.rt.calls("StopPodSandbox").len(), 1, "a finished pod's sandbox is stopped");
}

#[tokio::test]
async fn restart_policy_never_leaves_a_failed_container_and_fails_the_pod() {
    let h = harness();
    let mut w = worker(&h, pod("Never", serde_json::json!([]), serde_json::json!([app("main")])));
    sync(&mut w).await;
    h.rt.exit("main", 1);
    sync(&mut w).await;
    h.clock.advance_secs(600);
    sync(&mut w).await;
    assert_eq!(created(&h), ["CreateContainer main 0"]);
    assert_eq!(w.progress.phase, "Failed");
}

#[tokio::test]
async fn crash_loop_back_off_waits_10s_doubling_to_300s() {
    let h = harness();
    let mut w = worker(&h, pod("Always", serde_json::json!([]), serde_json::json!([app("crash")])));
    sync(&mut w).await;
    let mut waits = Vec::new();
    for restart in 1..=8u32 {
        h.clock.advance_secs(1);
        h.rt.exit("crash", 1);
        let finished = h.clock.now();
        sync(&mut w).await;
        let prog = w.progress.containers["crash"].clone();
        let wait = if prog.restart_count == restart {
            // Restarted at once: no wait.
            0
        } else {
            let wait = (prog.next_start_ns - finished) / SECOND;
            let (reason, message) = prog.waiting.clone().expect("waiting while backing off");
            assert_eq!(reason, "CrashLoopBackOff");
            assert!(message.contains(&format!("back-off {wait}s restarting failed container=crash")), "{message}");
            // Not a second early...
            h.clock.advance_secs(wait - 1);
            sync(&mut w).await;
            assert_eq!(w.progress.containers["crash"].restart_count, restart - 1, "restart {restart} waits {wait}s");
            // ...and then it restarts.
            h.clock.advance_secs(1);
            sync(&mut w).await;
            assert_eq!(w.progress.containers["crash"].restart_count, restart);
            wait
        };
        waits.push(wait);
    }
    assert_eq!(waits, [0, 10, 20, 40, 80, 160, 300, 300]);
    assert!(w.progress.events.iter().any(|e| e.reason == "BackOff" && e.kind == "Warning"));
    // Ten minutes of running start the back-off over.
    h.clock.advance_secs(600);
    h.rt.exit("crash", 1);
    sync(&mut w).await;
    assert_eq!(w.progress.containers["crash"].restart_count, 9, "restarted at once after a long run");
}

#[tokio::test]
async fn init_containers_run_one_at_a_time_in_order_before_the_app() {
    let h = harness();
    let mut w = worker(&h, pod("Always", serde_json::json!([app("init-1"), app("init-2")]), serde_json::json!([app("main")])));
    sync(&mut w).await;
    assert_eq!(created(&h), ["CreateContainer init-1 0"]);
    sync(&mut w).await;
    assert_eq!(created(&h).len(), 1, "init-2 waits while init-1 runs");
    assert!(!w.progress.init_done);
    h.rt.exit("init-1", 0);
    sync(&mut w).await;
    assert_eq!(created(&h), ["CreateContainer init-1 0", "CreateContainer init-2 0"]);
    h.rt.exit("init-2", 0);
    sync(&mut w).await;
    assert_eq!(created(&h), ["CreateContainer init-1 0", "CreateContainer init-2 0", "CreateContainer main 0"]);
    assert!(w.progress.init_done);
    assert_eq!(w.progress.conditions.get("Initialized").map(|c| c.0), Some(true));
    assert_eq!(w.progress.phase, "Running");
}

#[tokio::test]
async fn a_failing_init_container_fails_the_pod_under_never() {
    let h = harness();
    let mut w = worker(&h, pod("Never", serde_json::json!([app("init-1"), app("init-2")]), serde_json::json!([app("main")])));
    sync(&mut w).await;
    h.rt.exit("init-1", 2);
    sync(&mut w).await;
    assert_eq!(w.progress.phase, "Failed");
    assert_eq!(w.progress.message.as_deref(), Some("init container init-1 failed with exit code 2"));
    assert_eq!(created(&h), ["CreateContainer init-1 0"], "nothing after the failed init container runs");
    assert_eq!(h.rt.calls("StopPodSandbox").len(), 1);
    sync(&mut w).await;
    assert_eq!(created(&h).len(), 1, "a failed pod stays failed");
}

#[tokio::test]
async fn a_failing_init_container_is_retried_under_always_and_the_app_waits() {
    let h = harness();
    let mut w = worker(&h, pod("Always", serde_json::json!([app("init-1")]), serde_json::json!([app("main")])));
    sync(&mut w).await;
    h.rt.exit("init-1", 1);
    sync(&mut w).await;
    assert_eq!(created(&h), ["CreateContainer init-1 0", "CreateContainer init-1 1"]);
    assert!(!w.progress.init_done);
    assert_eq!(w.progress.containers["init-1"].restart_count, 1);
}

fn probed(name: &str, kind: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "image": "registry.local/app:1",
        kind: {"exec": {"command": ["check"]}, "periodSeconds": 5, "failureThreshold": 1},
    })
}

#[tokio::test]
async fn a_liveness_failure_restarts_the_container() {
    let h = harness();
    let mut w = worker(&h, pod("Always", serde_json::json!([]), serde_json::json!([probed("web", "livenessProbe")])));
    sync(&mut w).await;
    assert_eq!(h.rt.calls("ExecSync web").len(), 1, "probed once it runs");
    assert_eq!(h.rt.calls("StopContainer").len(), 0, "a passing probe leaves it be");
    h.rt.state().exec_exit.insert("web".into(), 1);
    h.clock.advance_secs(5);
    sync(&mut w).await;
    assert_eq!(h.rt.calls("StopContainer"), ["StopContainer web"], "the failing probe kills it");
    assert!(w.progress.events.iter().any(|e| e.reason == "Unhealthy" && e.message == "Liveness probe failed: web is unwell"));
    assert!(w.progress.events.iter().any(|e| e.reason == "Killing" && e.message == "Container web failed liveness probe, will be restarted"));
    sync(&mut w).await;
    assert_eq!(created(&h), ["CreateContainer web 0", "CreateContainer web 1"], "and it restarts");
    assert_eq!(w.progress.containers["web"].restart_count, 1);
}

#[tokio::test]
async fn readiness_follows_the_probe_and_flips_the_ready_condition() {
    let h = harness();
    let mut w = worker(&h, pod("Always", serde_json::json!([]), serde_json::json!([probed("web", "readinessProbe")])));
    sync(&mut w).await;
    w.publish().await;
    assert_eq!(w.progress.probe_view.get("web"), Some(&(true, true)));
    assert_eq!(w.progress.conditions.get("Ready").map(|c| c.0), Some(true));
    h.rt.state().exec_exit.insert("web".into(), 1);
    h.clock.advance_secs(5);
    sync(&mut w).await;
    w.publish().await;
    assert_eq!(w.progress.probe_view.get("web"), Some(&(true, false)));
    assert_eq!(w.progress.conditions.get("Ready").map(|c| c.0), Some(false));
    assert_eq!(h.rt.calls("StopContainer").len(), 0, "readiness never restarts");
    h.rt.state().exec_exit.insert("web".into(), 0);
    h.clock.advance_secs(5);
    sync(&mut w).await;
    w.publish().await;
    assert_eq!(w.progress.conditions.get("Ready").map(|c| c.0), Some(true));
    let published = h.shared.statuses.read().await.get("0000-berth-1").cloned().expect("a published status");
    let ready = published.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|c| c.type_ == "Ready").map(|c| c.status);
    assert_eq!(ready.as_deref(), Some("True"));
}

#[tokio::test]
async fn the_pod_cgroup_is_limited_before_the_sandbox_and_removed_with_the_pod() {
    let h = harness();
    let mut c = app("main");
    c["resources"] = serde_json::json!({"requests": {"cpu": "250m"}, "limits": {"cpu": "500m", "memory": "64Mi"}});
    let mut w = worker(&h, pod("Always", serde_json::json!([]), serde_json::json!([c])));
    sync(&mut w).await;
    let parent = "/kubepods/burstable/pod0000-berth-1";
    let calls = h.rt.state().calls.clone();
    let ensured = calls.iter().position(|c| *c == format!("EnsurePodCgroup {parent}")).expect("the pod cgroup is made");
    let sandbox = calls.iter().position(|c| c.starts_with("RunPodSandbox")).expect("a sandbox");
    assert!(ensured < sandbox, "{calls:?}");
    let limits = h.rt.state().cgroups[parent].clone();
    assert_eq!(limits.max_pids, Some(1024));
    assert_eq!(limits.resources.memory_limit_in_bytes, 64 << 20);
    let sandbox_parent = h.rt.state().sandboxes.values().next().and_then(|(c, _)| c.linux.clone()).map(|l| l.cgroup_parent);
    assert_eq!(sandbox_parent.as_deref(), Some(parent));
    w.terminate().await;
    assert_eq!(h.rt.state().removed_cgroups, [parent]);
    assert!(h.rt.state().sandboxes.is_empty());
}
