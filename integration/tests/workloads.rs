//! The workload controllers inside `berth server`, driven by the real kubectl as in the
//! everyday tutorials: a Deployment rolled out, updated with `kubectl set image` replica set by
//! replica set (the ScalingReplicaSet events in upstream's order for maxSurge=1,
//! maxUnavailable=0), its history, undo to a revision, pause and resume, scale, a rollout stuck
//! on a missing image past its progress deadline and scaled while stuck (proportionally); a
//! Recreate rollout; a ReplicaSet adopting, releasing and replacing pods; a
//! ReplicationController scaled. CronJobs: every minute with Forbid and Replace, and after
//! their controller was down over several schedule times (the most recent one runs, within
//! startingDeadlineSeconds only).
use berth_integration::apiserver::ApiServer;
use berth_integration::kubelet::busybox;
use berth_integration::{test_registry, Daemon};
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(180);

fn deployment(name: &str, replicas: u32, strategy: &str, image: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  strategy: {strategy}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: {name}
        image: {image}
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#
    )
}

fn docker_busybox() -> String {
    format!("{}/berth/busybox:docker", test_registry())
}

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).unwrap_or(&Value::Null)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

/// The ReplicaSets of deployment `name` by revision: (name, revision, spec replicas, image).
fn replicasets(d: &Daemon, app: &str) -> Vec<(String, String, i64, String)> {
    let mut out: Vec<(String, String, i64, String)> = items(&d.kubectl_json(&["get", "rs", "-l", &format!("app={app}")]))
        .iter()
        .map(|rs| {
            (
                rs["metadata"]["name"].as_str().unwrap_or("").to_string(),
                rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"].as_str().unwrap_or("").to_string(),
                rs["spec"]["replicas"].as_i64().unwrap_or(-1),
                rs["spec"]["template"]["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    out.sort_by_key(|r| r.1.parse::<i64>().unwrap_or(0));
    out
}

/// The messages of the ScalingReplicaSet events about deployment `name`, in the order they
/// happened (event names carry the time they were recorded).
fn scaling_events(d: &Daemon, name: &str) -> Vec<String> {
    let mut events: Vec<(String, String)> = items(&d.kubectl_json(&["get", "events"]))
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == "Deployment" && e["involvedObject"]["name"] == name && e["reason"] == "ScalingReplicaSet")
        .map(|e| (e["metadata"]["name"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string()))
        .collect();
    events.sort();
    events.into_iter().map(|(_, m)| m).collect()
}

fn rollout_ok(d: &Daemon, what: &str) {
    let out = d.kubectl_ok(&["rollout", "status", what, "--timeout=180s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
}

fn ready_pods(d: &Daemon, app: &str) -> Vec<Value> {
    items(&d.kubectl_json(&["get", "pods", "-l", &format!("app={app}")]))
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && condition(p, "Ready")["status"] == "True")
        .collect()
}

#[tokio::test]
async fn deployment_rolls_out_updates_undoes_pauses_scales_and_times_out_as_upstream() {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    let strategy = "{type: RollingUpdate, rollingUpdate: {maxSurge: 1, maxUnavailable: 0}}";
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&deployment("web", 3, strategy, &busybox())));
    rollout_ok(&d, "deployment/web");

    // one ReplicaSet, revision 1, its pods owned by it
    let rss = replicasets(&d, "web");
    assert_eq!(rss.len(), 1, "{rss:?}");
    let (first, _, _, _) = rss[0].clone();
    let rs = d.kubectl_json(&["get", "rs", &first]);
    let hash = rs["metadata"]["labels"]["pod-template-hash"].as_str().unwrap_or("").to_string();
    assert_eq!(first, format!("web-{hash}"));
    assert_eq!(rs["spec"]["selector"]["matchLabels"]["pod-template-hash"], hash.as_str());
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/desired-replicas"], "3");
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/max-replicas"], "4");
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(
        (rs["status"]["replicas"].as_i64(), rs["status"]["readyReplicas"].as_i64(), rs["status"]["availableReplicas"].as_i64()),
        (Some(3), Some(3), Some(3))
    );
    let pods = ready_pods(&d, "web");
    assert_eq!(pods.len(), 3);
    for p in &pods {
        assert_eq!(p["metadata"]["ownerReferences"][0]["name"], first.as_str(), "{p:#}");
        assert!(p["metadata"]["name"].as_str().unwrap_or("").starts_with(&format!("{first}-")));
    }
    let dep = d.kubectl_json(&["get", "deploy", "web"]);
    assert_eq!(dep["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    let s = &dep["status"];
    assert_eq!(
        (s["replicas"].as_i64(), s["updatedReplicas"].as_i64(), s["readyReplicas"].as_i64(), s["availableReplicas"].as_i64()),
        (Some(3), Some(3), Some(3), Some(3))
    );
    assert_eq!(condition(&dep, "Available")["reason"], "MinimumReplicasAvailable");
    assert_eq!(condition(&dep, "Progressing")["reason"], "NewReplicaSetAvailable");
    assert_eq!(condition(&dep, "Progressing")["message"], format!("ReplicaSet \"{first}\" has successfully progressed."));
    let row = d.kubectl_ok(&["get", "deploy", "web", "--no-headers"]);
    assert!(row.split_whitespace().take(4).eq(["web", "3/3", "3", "3"]), "{row}");

    // set image: one new pod up, one old down, and so on (maxSurge 1, maxUnavailable 0)
    d.kubectl_ok(&["set", "image", "deployment/web", &format!("web={}", docker_busybox())]);
    // the change cause, as the tutorials record it: copied to the new ReplicaSet
    d.kubectl_ok(&["annotate", "deployment/web", "kubernetes.io/change-cause=to the docker image"]);
    rollout_ok(&d, "deployment/web");
    d.kubectl_until(&["get", "rs", "-l", "app=web"], LIMIT, "the change cause on revision 2", |v| {
        items(v).iter().any(|rs| {
            let a = &rs["metadata"]["annotations"];
            a["deployment.kubernetes.io/revision"] == "2" && a["kubernetes.io/change-cause"] == "to the docker image"
        })
    });
    let rss = replicasets(&d, "web");
    assert_eq!(rss.len(), 2, "{rss:?}");
    let second = rss[1].0.clone();
    assert_eq!((rss[0].1.as_str(), rss[0].2, rss[1].1.as_str(), rss[1].2), ("1", 0, "2", 3), "{rss:?}");
    let want: Vec<String> = [
        format!("Scaled up replica set {first} from 0 to 3"),
        format!("Scaled up replica set {second} from 0 to 1"),
        format!("Scaled down replica set {first} from 3 to 2"),
        format!("Scaled up replica set {second} from 1 to 2"),
        format!("Scaled down replica set {first} from 2 to 1"),
        format!("Scaled up replica set {second} from 2 to 3"),
        format!("Scaled down replica set {first} from 1 to 0"),
    ]
    .to_vec();
    assert_eq!(scaling_events(&d, "web"), want);
    assert!(ready_pods(&d, "web").iter().all(|p| p["spec"]["containers"][0]["image"] == docker_busybox().as_str()));

    // history and undo to revision 1: the first ReplicaSet comes back as revision 3
    let history = d.kubectl_ok(&["rollout", "history", "deployment/web"]);
    let rows: Vec<String> = history.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|l| !l.is_empty()).collect();
    assert_eq!(rows[1..], ["REVISION CHANGE-CAUSE", "1 <none>", "2 to the docker image"], "{history}");
    let detail = d.kubectl_ok(&["rollout", "history", "deployment/web", "--revision=1"]);
    assert!(detail.contains(&busybox()), "{detail}");
    assert_eq!(d.kubectl_ok(&["rollout", "undo", "deployment/web", "--to-revision=1"]).trim(), "deployment.apps/web rolled back");
    rollout_ok(&d, "deployment/web");
    let rss = replicasets(&d, "web");
    assert_eq!(rss.iter().map(|r| (r.0.as_str(), r.1.as_str(), r.2)).collect::<Vec<_>>(), [(second.as_str(), "2", 0), (first.as_str(), "3", 3)]);
    let rs = d.kubectl_json(&["get", "rs", &first]);
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision-history"], "1");

    // pause: a new template waits; resume: it rolls out
    assert_eq!(d.kubectl_ok(&["rollout", "pause", "deployment/web"]).trim(), "deployment.apps/web paused");
    d.kubectl_ok(&["set", "env", "deployment/web", "STAGE=paused"]);
    let dep = d.kubectl_until(&["get", "deploy", "web"], LIMIT, "Progressing Unknown DeploymentPaused", |dep| {
        condition(dep, "Progressing")["reason"] == "DeploymentPaused" && dep["status"]["observedGeneration"] == dep["metadata"]["generation"]
    });
    assert_eq!(condition(&dep, "Progressing")["status"], "Unknown");
    assert_eq!(replicasets(&d, "web").len(), 2, "no new ReplicaSet while paused");
    assert_eq!(d.kubectl_ok(&["rollout", "resume", "deployment/web"]).trim(), "deployment.apps/web resumed");
    rollout_ok(&d, "deployment/web");
    let rss = replicasets(&d, "web");
    assert_eq!(rss.len(), 3, "{rss:?}");
    assert_eq!((rss[2].1.as_str(), rss[2].2), ("4", 3));

    // scale
    d.kubectl_ok(&["scale", "deployment/web", "--replicas=5"]);
    rollout_ok(&d, "deployment/web");
    assert_eq!(ready_pods(&d, "web").len(), 5);

    // a missing image: stuck, then past the progress deadline
    d.kubectl_ok(&["patch", "deployment/web", "-p", r#"{"spec":{"progressDeadlineSeconds":10}}"#]);
    d.kubectl_ok(&["set", "image", "deployment/web", &format!("web={}/berth/missing:1", test_registry())]);
    let out = d.kubectl(&["rollout", "status", "deployment/web", "--timeout=120s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("error: deployment \"web\" exceeded its progress deadline"), "{stderr}");
    let dep = d.kubectl_json(&["get", "deploy", "web"]);
    let progressing = condition(&dep, "Progressing");
    assert_eq!((progressing["status"].as_str(), progressing["reason"].as_str()), (Some("False"), Some("ProgressDeadlineExceeded")), "{dep:#}");
    assert!(progressing["message"].as_str().unwrap_or("").ends_with("has timed out progressing."), "{dep:#}");
    assert_eq!(ready_pods(&d, "web").len(), 5, "maxUnavailable 0 keeps every old pod");

    // scaled while stuck: 5+1 (max 6) grows to 10+1 in proportion: 9 old, 2 new
    d.kubectl_ok(&["scale", "deployment/web", "--replicas=10"]);
    d.kubectl_until(&["get", "rs", "-l", "app=web"], LIMIT, "proportional scaling", |v| {
        let mut sizes: Vec<i64> = items(v).iter().map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0)).filter(|n| *n > 0).collect();
        sizes.sort();
        sizes == [2, 9]
    });

    // undo the bad rollout: back to the working template, 10 replicas
    d.kubectl_ok(&["rollout", "undo", "deployment/web"]);
    rollout_ok(&d, "deployment/web");
    assert_eq!(ready_pods(&d, "web").len(), 10);

    // delete: the ReplicaSets and pods go with it
    d.kubectl_ok(&["delete", "deployment", "web"]);
    d.kubectl_until(&["get", "pods", "-l", "app=web"], LIMIT, "pods gone", |v| v["items"].as_array().is_some_and(Vec::is_empty));
    assert!(replicasets(&d, "web").is_empty());
}

#[tokio::test]
async fn recreate_stops_every_old_pod_before_the_new_ones() {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&deployment("batch", 2, "{type: Recreate}", &busybox())));
    rollout_ok(&d, "deployment/batch");
    let old_pods: Vec<String> = ready_pods(&d, "batch").iter().map(|p| p["metadata"]["uid"].as_str().unwrap_or("").to_string()).collect();
    d.kubectl_ok(&["set", "image", "deployment/batch", &format!("batch={}", docker_busybox())]);
    rollout_ok(&d, "deployment/batch");
    let rss = replicasets(&d, "batch");
    let (first, second) = (rss[0].0.clone(), rss[1].0.clone());
    assert_eq!(
        scaling_events(&d, "batch"),
        [
            format!("Scaled up replica set {first} from 0 to 2"),
            format!("Scaled down replica set {first} from 2 to 0"),
            format!("Scaled up replica set {second} from 0 to 2"),
        ]
    );
    let now = ready_pods(&d, "batch");
    assert_eq!(now.len(), 2);
    assert!(now.iter().all(|p| !old_pods.iter().any(|u| p["metadata"]["uid"] == u.as_str())));
}

#[tokio::test]
async fn default_rolling_update_keeps_within_25_percent_and_rollout_restart_replaces_every_pod() {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    // no strategy given: RollingUpdate 25 %/25 %, for 4 replicas at most 5 pods wanted and at
    // least 3 available at any time
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&deployment("quarter", 4, "{}", &busybox())).map(|m| m.replace("  strategy: {}\n", "")).as_deref());
    rollout_ok(&d, "deployment/quarter");
    let dep = d.kubectl_json(&["get", "deploy", "quarter"]);
    assert_eq!(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%");
    assert_eq!(dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], "25%");

    // watched while it rolls: the sum of the ReplicaSets' replicas never above 5, their
    // available pods never below 3
    let watch = |d: &Daemon, change: &[&str]| {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let (mut most_wanted, mut least_available, mut samples) = (0i64, i64::MAX, 0);
        std::thread::scope(|s| {
            s.spawn(|| {
                d.kubectl_ok(change);
                rollout_ok(d, "deployment/quarter");
                stop.store(true, std::sync::atomic::Ordering::SeqCst);
            });
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                let rss = items(&d.kubectl_json(&["get", "rs", "-l", "app=quarter"]));
                let wanted: i64 = rss.iter().map(|r| r["spec"]["replicas"].as_i64().unwrap_or(0)).sum();
                let available: i64 = rss.iter().map(|r| r["status"]["availableReplicas"].as_i64().unwrap_or(0)).sum();
                most_wanted = most_wanted.max(wanted);
                least_available = least_available.min(available);
                samples += 1;
            }
        });
        (most_wanted, least_available, samples)
    };
    let (most_wanted, least_available, samples) = watch(&d, &["set", "image", "deployment/quarter", &format!("quarter={}", docker_busybox())]);
    assert!(samples > 1, "the rollout was not observed");
    assert!(most_wanted <= 5, "more than maxSurge: {most_wanted} pods wanted");
    assert!(least_available >= 3, "more than maxUnavailable: {least_available} available");
    let rss = replicasets(&d, "quarter");
    assert_eq!(rss.iter().map(|r| r.2).collect::<Vec<_>>(), vec![0, 4], "{rss:?}");
    let events = scaling_events(&d, "quarter");
    assert_eq!(events[1], format!("Scaled up replica set {} from 0 to 1", rss[1].0), "{events:?}");

    // rollout restart: a new template (restartedAt annotation), every pod replaced, same limits
    let before: Vec<String> = ready_pods(&d, "quarter").iter().map(|p| p["metadata"]["uid"].as_str().unwrap_or("").to_string()).collect();
    let (most_wanted, least_available, _) = watch(&d, &["rollout", "restart", "deployment/quarter"]);
    assert!(most_wanted <= 5 && least_available >= 3, "restart: {most_wanted} wanted, {least_available} available");
    let dep = d.kubectl_json(&["get", "deploy", "quarter"]);
    assert!(dep["spec"]["template"]["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"].is_string(), "{dep:#}");
    let after = ready_pods(&d, "quarter");
    assert_eq!(after.len(), 4);
    assert!(after.iter().all(|p| !before.iter().any(|u| p["metadata"]["uid"] == u.as_str())), "a pod survived the restart");
    assert_eq!(replicasets(&d, "quarter").len(), 3);
    let history = d.kubectl_ok(&["rollout", "history", "deployment/quarter"]);
    assert!(history.contains("\n3 "), "{history}");
}

#[tokio::test]
async fn replicasets_adopt_release_and_replace_pods_and_replication_controllers_scale() {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    let image = busybox();
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: orphan\n  labels: {{app: front}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: {image}\n    command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
    );
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod));
    d.kubectl_until(&["get", "pod", "orphan"], LIMIT, "orphan Ready", |p| condition(p, "Ready")["status"] == "True");
    let rs = format!(
        "apiVersion: apps/v1\nkind: ReplicaSet\nmetadata:\n  name: front\nspec:\n  replicas: 2\n  selector:\n    matchLabels: {{app: front}}\n  template:\n    metadata:\n      labels: {{app: front}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: {image}\n        command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
    );
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&rs));
    let rs = d.kubectl_until(&["get", "rs", "front"], LIMIT, "2 ready", |rs| rs["status"]["readyReplicas"] == 2);
    let uid = rs["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let orphan = d.kubectl_json(&["get", "pod", "orphan"]);
    assert_eq!(orphan["metadata"]["ownerReferences"][0]["uid"], uid.as_str(), "the orphan was adopted: {orphan:#}");
    assert_eq!(orphan["metadata"]["ownerReferences"][0]["controller"], true);
    assert_eq!(items(&d.kubectl_json(&["get", "pods", "-l", "app=front"])).len(), 2, "only one pod was created");
    let rs_row = d.kubectl_ok(&["get", "rs", "front", "--no-headers"]);
    assert!(rs_row.split_whitespace().take(4).eq(["front", "2", "2", "2"]), "{rs_row}");

    // relabelled: released (no controller reference) and replaced
    d.kubectl_ok(&["label", "pod", "orphan", "app=moved", "--overwrite"]);
    d.kubectl_until(&["get", "pod", "orphan"], LIMIT, "orphan released", |p| p["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty));
    d.kubectl_until(&["get", "rs", "front"], LIMIT, "replaced", |rs| rs["status"]["readyReplicas"] == 2 && rs["status"]["replicas"] == 2);

    // a deleted pod is replaced; scaled to 1, one goes
    let victim = items(&d.kubectl_json(&["get", "pods", "-l", "app=front"]))[0]["metadata"]["name"].as_str().unwrap_or("").to_string();
    d.kubectl_ok(&["delete", "pod", &victim]);
    d.kubectl_until(&["get", "pods", "-l", "app=front"], LIMIT, "a replacement", |v| {
        let live: Vec<Value> =
            items(v).into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null() && condition(p, "Ready")["status"] == "True").collect();
        live.len() == 2 && live.iter().all(|p| p["metadata"]["name"] != victim.as_str())
    });
    d.kubectl_ok(&["scale", "rs", "front", "--replicas=1"]);
    d.kubectl_until(&["get", "rs", "front"], LIMIT, "one replica", |rs| {
        rs["status"]["replicas"] == 1 && rs["status"]["observedGeneration"] == rs["metadata"]["generation"]
    });
    let described = d.kubectl_ok(&["describe", "rs", "front"]);
    assert!(described.contains("SuccessfulCreate") && described.contains("SuccessfulDelete") && described.contains("replicaset-controller"), "{described}");

    // a ReplicationController
    let rc = format!(
        "apiVersion: v1\nkind: ReplicationController\nmetadata:\n  name: legacy\nspec:\n  replicas: 2\n  selector: {{app: legacy}}\n  template:\n    metadata:\n      labels: {{app: legacy}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: {image}\n        command: [\"sh\", \"-c\", \"trap 'exit 0' TERM; while true; do sleep 1; done\"]\n"
    );
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&rc));
    d.kubectl_until(&["get", "rc", "legacy"], LIMIT, "2 ready", |rc| rc["status"]["readyReplicas"] == 2);
    d.kubectl_ok(&["scale", "rc", "legacy", "--replicas=0"]);
    d.kubectl_until(&["get", "pods", "-l", "app=legacy"], LIMIT, "no pods", |v| items(v).iter().all(|p| !p["metadata"]["deletionTimestamp"].is_null()));
}

fn job(name: &str, spec: &str, command: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: {name}\nspec:\n{spec}  template:\n    spec:\n      restartPolicy: Never\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: main\n        image: {image}\n        command: [\"sh\", \"-c\", {command:?}]\n",
        image = busybox()
    )
}

fn job_condition(d: &Daemon, name: &str, kind: &str) -> Value {
    let j = d.kubectl_until(&["get", "job", name], LIMIT, &format!("job {name} {kind}"), |j| condition(j, kind)["status"] == "True");
    j
}

#[tokio::test]
async fn jobs_complete_fail_index_suspend_and_expire_as_upstream() {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    let jobs = [
        job("ok", "  completions: 3\n  parallelism: 2\n", "echo done"),
        job("fails", "  backoffLimit: 1\n", "exit 3"),
        job("indexed", "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n", "echo index=$JOB_COMPLETION_INDEX host=$(hostname)"),
        job(
            "policy",
            "  backoffLimit: 6\n  podFailurePolicy:\n    rules:\n    - action: FailJob\n      onExitCodes: {containerName: main, operator: In, values: [42]}\n",
            "exit 42",
        ),
        job("deadline", "  activeDeadlineSeconds: 2\n", "sleep 60"),
        job("paused", "  suspend: true\n", "echo resumed"),
        job("queue", "  parallelism: 2\n", "echo work"),
        job("expires", "  ttlSecondsAfterFinished: 0\n", "echo bye"),
    ];
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&jobs.join("---\n")));

    // completions 3, 2 at a time
    let ok = job_condition(&d, "ok", "Complete");
    assert_eq!((ok["status"]["succeeded"].as_i64(), ok["status"]["active"].as_i64()), (Some(3), None), "{ok:#}");
    assert_eq!(condition(&ok, "Complete")["reason"], "CompletionsReached");
    assert_eq!(condition(&ok, "SuccessCriteriaMet")["message"], "Reached expected number of succeeded pods");
    assert!(ok["status"]["completionTime"].is_string() && ok["status"]["startTime"].is_string());
    assert_eq!(ok["status"]["uncountedTerminatedPods"], serde_json::json!({}), "{ok:#}");
    let row = d.kubectl_ok(&["get", "job", "ok", "--no-headers"]);
    assert!(row.split_whitespace().take(3).eq(["ok", "Complete", "3/3"]), "{row}");
    let pods = items(&d.kubectl_json(&["get", "pods", "-l", "batch.kubernetes.io/job-name=ok"]));
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| p["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty) && p["status"]["phase"] == "Succeeded"), "{pods:#?}");

    // back-off limit 1: two failed pods, then Failed
    let fails = job_condition(&d, "fails", "Failed");
    assert_eq!(condition(&fails, "Failed")["reason"], "BackoffLimitExceeded");
    assert_eq!(condition(&fails, "Failed")["message"], "Job has reached the specified backoff limit");
    assert_eq!(condition(&fails, "FailureTarget")["reason"], "BackoffLimitExceeded");
    assert_eq!(fails["status"]["failed"], 2, "{fails:#}");
    let row = d.kubectl_ok(&["get", "job", "fails", "--no-headers"]);
    assert!(row.split_whitespace().take(3).eq(["fails", "Failed", "0/1"]), "{row}");

    // Indexed: each index once, its number and hostname in the pod
    let indexed = job_condition(&d, "indexed", "Complete");
    assert_eq!(indexed["status"]["completedIndexes"], "0-2");
    for i in 0..3 {
        let pod = items(&d.kubectl_json(&["get", "pods", "-l", &format!("batch.kubernetes.io/job-name=indexed,batch.kubernetes.io/job-completion-index={i}")]));
        assert_eq!(pod.len(), 1);
        let name = pod[0]["metadata"]["name"].as_str().unwrap_or("");
        assert!(name.starts_with(&format!("indexed-{i}-")), "{name}");
        let log = d.kubectl_ok(&["logs", name]);
        assert_eq!(log.trim(), format!("index={i} host=indexed-{i}"));
    }

    // a FailJob rule ends the Job at the first matching failure
    let policy = job_condition(&d, "policy", "Failed");
    assert_eq!(condition(&policy, "Failed")["reason"], "PodFailurePolicy");
    let msg = condition(&policy, "Failed")["message"].as_str().unwrap_or("").to_string();
    assert!(msg.starts_with("Container main for pod default/policy-") && msg.ends_with("failed with exit code 42 matching FailJob rule at index 0"), "{msg}");
    assert_eq!(policy["status"]["failed"], 1);

    // active longer than its deadline: its pod stopped, Failed
    let deadline = job_condition(&d, "deadline", "Failed");
    assert_eq!(condition(&deadline, "Failed")["reason"], "DeadlineExceeded");
    assert_eq!(condition(&deadline, "Failed")["message"], "Job was active longer than specified deadline");

    // suspended: no pods until resumed
    let paused = job_condition(&d, "paused", "Suspended");
    assert_eq!(condition(&paused, "Suspended")["reason"], "JobSuspended");
    assert!(items(&d.kubectl_json(&["get", "pods", "-l", "batch.kubernetes.io/job-name=paused"])).is_empty());
    assert!(paused["status"]["startTime"].is_null());
    d.kubectl_ok(&["patch", "job", "paused", "--type=merge", "-p", r#"{"spec":{"suspend":false}}"#]);
    let resumed = job_condition(&d, "paused", "Complete");
    let suspended = resumed["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Suspended").cloned()).unwrap_or_default();
    assert_eq!((suspended["status"].as_str(), suspended["reason"].as_str()), (Some("False"), Some("JobResumed")));

    // a work queue (no completions): done when one pod succeeded and none runs
    let queue = job_condition(&d, "queue", "Complete");
    assert!(queue["status"]["succeeded"].as_i64().unwrap_or(0) >= 1, "{queue:#}");

    // deleted (with its pod) once finished, ttlSecondsAfterFinished 0
    d.kubectl_until(&["get", "jobs"], LIMIT, "job expires deleted", |v| {
        v["items"].as_array().is_some_and(|l| !l.is_empty() && l.iter().all(|j| j["metadata"]["name"] != "expires"))
    });
    d.kubectl_until(&["get", "pods", "-l", "batch.kubernetes.io/job-name=expires"], LIMIT, "its pod gone", |v| {
        v["items"].as_array().is_some_and(Vec::is_empty)
    });
}

#[tokio::test]
async fn jobs_limit_retries_per_index_succeed_by_policy_and_replace_only_failed_pods() {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    let jobs = [
        // index 1 always fails: one retry (after the 10 s back-off), then it is a failed index and
        // the others still run to completion
        job(
            "per-index",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n  backoffLimitPerIndex: 1\n",
            "[ $JOB_COMPLETION_INDEX = 1 ] && exit 1; echo ok",
        ),
        // done when index 0 succeeded; the others are stopped
        job(
            "policy-success",
            "  completions: 3\n  parallelism: 3\n  completionMode: Indexed\n  successPolicy:\n    rules:\n    - succeededIndexes: \"0\"\n",
            "[ $JOB_COMPLETION_INDEX = 0 ] && exit 0; sleep 60",
        ),
        // a deleted pod is replaced only once it has failed, not while it terminates
        job("replace-failed", "  backoffLimit: 3\n  podReplacementPolicy: Failed\n", "trap 'sleep 3; exit 1' TERM; sleep 60 & wait"),
    ];
    let jobs: Vec<String> = jobs.iter().map(|j| j.replace("terminationGracePeriodSeconds: 1", "terminationGracePeriodSeconds: 20")).collect();
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&jobs.join("---\n")));

    // podReplacementPolicy Failed: while the deleted pod terminates, it counts as terminating and
    // nothing replaces it
    let first = d.kubectl_until(&["get", "pods", "-l", "batch.kubernetes.io/job-name=replace-failed"], LIMIT, "replace-failed running", |v| {
        v["items"].as_array().is_some_and(|l| l.len() == 1 && l[0]["status"]["phase"] == "Running")
    });
    let first_name = first["items"][0]["metadata"]["name"].as_str().unwrap_or("").to_string();
    d.kubectl_ok(&["delete", "pod", &first_name, "--wait=false"]);
    let j = d.kubectl_until(&["get", "job", "replace-failed"], LIMIT, "terminating counted", |j| j["status"]["terminating"] == 1);
    assert!(j["status"]["active"].as_i64().unwrap_or(0) == 0, "{j:#}");
    let pods = items(&d.kubectl_json(&["get", "pods", "-l", "batch.kubernetes.io/job-name=replace-failed"]));
    let still = pods.iter().find(|p| p["metadata"]["name"] == first_name.as_str()).cloned().unwrap_or_default();
    if still["status"]["phase"] == "Running" {
        // (the deleted pod still runs its trap: no second pod yet)
        assert_eq!(pods.len(), 1, "replaced while terminating: {pods:#?}");
    }
    let replaced = d.kubectl_until(&["get", "pods", "-l", "batch.kubernetes.io/job-name=replace-failed"], LIMIT, "a replacement", |v| {
        v["items"].as_array().is_some_and(|l| l.iter().any(|p| p["metadata"]["name"] != first_name.as_str() && p["metadata"]["deletionTimestamp"].is_null()))
    });
    let gone_first = items(&replaced).iter().all(|p| p["metadata"]["name"] != first_name.as_str() || p["status"]["phase"] == "Failed");
    assert!(gone_first, "the replacement came before the deleted pod failed: {replaced:#}");
    let j = d.kubectl_json(&["get", "job", "replace-failed"]);
    assert_eq!(j["status"]["failed"], 1, "{j:#}");
    d.kubectl_ok(&["delete", "job", "replace-failed", "--wait=false"]);

    // successPolicy: SuccessCriteriaMet at index 0, the rest stopped, then Complete
    let done = job_condition(&d, "policy-success", "Complete");
    assert_eq!(condition(&done, "Complete")["reason"], "SuccessPolicy", "{done:#}");
    assert_eq!(condition(&done, "SuccessCriteriaMet")["reason"], "SuccessPolicy");
    assert_eq!(condition(&done, "SuccessCriteriaMet")["message"], "Matched rules at index 0");
    assert_eq!(done["status"]["completedIndexes"], "0");
    assert!(done["status"]["active"].as_i64().unwrap_or(0) == 0, "{done:#}");
    let left = items(&d.kubectl_json(&["get", "pods", "-l", "batch.kubernetes.io/job-name=policy-success"]));
    assert!(left.iter().all(|p| p["status"]["phase"] != "Running" || !p["metadata"]["deletionTimestamp"].is_null()), "{left:#?}");

    // backoffLimitPerIndex: index 1 failed twice, the Job failed with its failed index
    let failed = job_condition(&d, "per-index", "Failed");
    assert_eq!(condition(&failed, "Failed")["reason"], "FailedIndexes", "{failed:#}");
    assert_eq!(condition(&failed, "Failed")["message"], "Job has failed indexes");
    assert_eq!(failed["status"]["failedIndexes"], "1");
    assert_eq!(failed["status"]["completedIndexes"], "0,2");
    assert_eq!(failed["status"]["failed"], 2);
    assert_eq!(failed["status"]["succeeded"], 2);
    let index1 = items(&d.kubectl_json(&["get", "pods", "-l", "batch.kubernetes.io/job-name=per-index,batch.kubernetes.io/job-completion-index=1"]));
    assert_eq!(index1.len(), 2, "{index1:#?}");
}

fn cronjob(name: &str, policy: &str, command: &str) -> String {
    format!(
        "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: {name}\nspec:\n  schedule: \"* * * * *\"\n  concurrencyPolicy: {policy}\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: Never\n          terminationGracePeriodSeconds: 1\n          containers:\n          - name: main\n            image: {image}\n            command: [\"sh\", \"-c\", {command:?}]\n",
        image = busybox()
    )
}

fn events_of(d: &Daemon, kind: &str, name: &str) -> Vec<(String, String)> {
    items(&d.kubectl_json(&["get", "events"]))
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == kind && e["involvedObject"]["name"] == name)
        .map(|e| (e["reason"].as_str().unwrap_or("").to_string(), e["message"].as_str().unwrap_or("").to_string()))
        .collect()
}

/// The CronJobs' own Jobs, by name.
fn jobs_of(d: &Daemon, cronjob: &str) -> Vec<String> {
    let mut names: Vec<String> = items(&d.kubectl_json(&["get", "jobs"]))
        .iter()
        .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == cronjob && j["metadata"]["deletionTimestamp"].is_null())
        .map(|j| j["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn cronjobs_run_every_minute_with_forbid_and_replace() {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    // a CronJob in India's time zone (UTC+05:30, no daylight saving) due two minute boundaries
    // from now: read as UTC the schedule would be half an hour off
    let start = jiff::Timestamp::now().as_second();
    let due = (start / 60) * 60 + 120;
    let local = due + 5 * 3600 + 30 * 60;
    let zoned = cronjob("zoned", "Allow", "echo zoned")
        .replace("schedule: \"* * * * *\"", &format!("schedule: \"{} {} * * *\"\n  timeZone: Asia/Kolkata", (local / 60) % 60, (local / 3600) % 24));
    let all = [cronjob("hello", "Allow", "echo hello"), cronjob("forbid", "Forbid", "sleep 300"), cronjob("replace", "Replace", "sleep 300"), zoned];
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&all.join("---\n")));
    // an unknown zone, or a zone inside the schedule, is refused
    let bad = cronjob("bad-zone", "Allow", "true").replace("schedule: \"* * * * *\"", "schedule: \"* * * * *\"\n  timeZone: Mars/Phobos");
    let out = d.kubectl_version("1.33", &["apply", "-f", "-"], Some(&bad));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(r#"spec.timeZone: Invalid value: "Mars/Phobos": unknown time zone Mars/Phobos"#), "{err}");
    let bad = cronjob("bad-schedule", "Allow", "true").replace("schedule: \"* * * * *\"", "schedule: \"CRON_TZ=UTC 0 0 * * *\"");
    let out = d.kubectl_version("1.33", &["apply", "-f", "-"], Some(&bad));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot use TZ or CRON_TZ in schedule, use timeZone field instead"), "{err}");

    // the first minute: one Job each, named by the scheduled minute
    let cj = d.kubectl_until(&["get", "cronjob", "hello"], Duration::from_secs(90), "hello scheduled", |c| c["status"]["lastScheduleTime"].is_string());
    let at: jiff::Timestamp = cj["status"]["lastScheduleTime"].as_str().unwrap_or("").parse().expect("time");
    assert_eq!(at.as_second() % 60, 0);
    let first = format!("hello-{}", at.as_second() / 60);
    let job = job_condition(&d, &first, "Complete");
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert!(job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].as_str().is_some_and(|t| t.ends_with(":00Z")), "{job:#}");
    let cj = d.kubectl_until(&["get", "cronjob", "hello"], LIMIT, "hello succeeded", |c| {
        c["status"]["lastSuccessfulTime"].is_string() && c["status"]["active"].is_null()
    });
    assert!(cj["status"]["lastSuccessfulTime"].is_string());
    assert!(events_of(&d, "CronJob", "hello").contains(&("SuccessfulCreate".to_string(), format!("Created job {first}"))));
    d.kubectl_until(&["get", "cronjob", "forbid"], LIMIT, "forbid running", |c| c["status"]["active"].as_array().is_some_and(|a| a.len() == 1));
    d.kubectl_until(&["get", "cronjob", "replace"], LIMIT, "replace running", |c| c["status"]["active"].as_array().is_some_and(|a| a.len() == 1));
    let forbid_first = jobs_of(&d, "forbid");
    let replace_first = jobs_of(&d, "replace");
    assert_eq!((forbid_first.len(), replace_first.len()), (1, 1));

    // the next minute: Forbid skips it, Replace deletes the running Job and starts another
    d.kubectl_until(&["get", "events"], LIMIT, "JobAlreadyActive", |_| events_of(&d, "CronJob", "forbid").iter().any(|(r, _)| r == "JobAlreadyActive"));
    assert_eq!(jobs_of(&d, "forbid"), forbid_first, "no second job while the first runs");
    d.kubectl_until(&["get", "cronjob", "replace"], LIMIT, "replaced", |_| {
        let now = jobs_of(&d, "replace");
        now.len() == 1 && now != replace_first
    });
    assert!(events_of(&d, "CronJob", "replace").contains(&("SuccessfulDelete".to_string(), format!("Deleted job {}", replace_first[0]))));
    let row = d.kubectl_ok(&["get", "cronjob", "forbid", "--no-headers"]);
    assert!(row.split_whitespace().take(4).eq(["forbid", "*", "*", "*"]), "{row}");

    // the zoned CronJob ran at its local time, and says so in its zone
    let name = format!("zoned-{}", due / 60);
    let job = job_condition(&d, &name, "Complete");
    let stamp = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].as_str().unwrap_or("").to_string();
    assert!(stamp.ends_with("+05:30"), "{stamp}");
    assert_eq!(stamp.parse::<jiff::Timestamp>().map(|t| t.as_second()).ok(), Some(due), "{stamp}");
    let row = d.kubectl_ok(&["get", "cronjob", "zoned", "-o", "wide", "--no-headers"]);
    assert!(row.contains("Asia/Kolkata"), "{row}");
}

#[test]
fn daemonsets_follow_nodes_labels_and_taints_and_roll_back() {
    use berth_integration::apiserver::ApiServer;
    use berth_integration::fake_node::{FakeNode, FakeNodes};
    let api = ApiServer::start_with("daemonsets", vec!["--controllers=*".into()]);
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("ds-a", "4", "8Gi").label("role", "worker"));
    nodes.add(&FakeNode::new("ds-b", "4", "8Gi").label("role", "worker"));
    nodes.add(&FakeNode::new("ds-db", "4", "8Gi").label("role", "db"));
    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: agent\nspec:\n  selector:\n    matchLabels: {app: agent}\n  template:\n    metadata:\n      labels: {app: agent}\n    spec:\n      nodeSelector: {role: worker}\n      containers:\n      - name: agent\n        image: busybox:1\n";
    api.ok_in("1.33", &["apply", "-f", "-"], Some(ds));
    let placed = |want: &[&str]| {
        let deadline = std::time::Instant::now() + LIMIT;
        loop {
            let v: Value = serde_json::from_str(&api.ok("1.33", &["get", "pods", "-l", "app=agent", "-o", "json"])).unwrap_or_default();
            let mut on: Vec<String> = items(&v)
                .iter()
                .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                .map(|p| p["spec"]["nodeName"].as_str().unwrap_or("-").to_string())
                .collect();
            on.sort();
            if on == want {
                return items(&v);
            }
            assert!(std::time::Instant::now() < deadline, "daemon pods on {on:?}, want {want:?}\n{}", berth_integration::tail(&api.log(), 40));
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    // one pod per worker, bound by the scheduler through the node affinity the controller sets
    let pods = placed(&["ds-a", "ds-b"]);
    let p = &pods[0];
    assert!(p["metadata"]["labels"]["controller-revision-hash"].is_string(), "{p:#}");
    assert!(p["spec"]["tolerations"].as_array().is_some_and(|t| t.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")));
    // a new worker, a relabelled node, a NoExecute taint
    nodes.add(&FakeNode::new("ds-c", "4", "8Gi").label("role", "worker"));
    placed(&["ds-a", "ds-b", "ds-c"]);
    api.ok("1.33", &["label", "node", "ds-db", "role=worker", "--overwrite"]);
    placed(&["ds-a", "ds-b", "ds-c", "ds-db"]);
    api.ok("1.33", &["label", "node", "ds-a", "role=edge", "--overwrite"]);
    placed(&["ds-b", "ds-c", "ds-db"]);
    api.ok("1.33", &["taint", "node", "ds-b", "maintenance=yes:NoExecute"]);
    placed(&["ds-c", "ds-db"]);
    api.ok("1.33", &["delete", "node", "ds-c"]);
    placed(&["ds-db"]);
    let status: Value = serde_json::from_str(&api.ok("1.33", &["get", "ds", "agent", "-o", "json"])).unwrap_or_default();
    let s = &status["status"];
    assert_eq!(
        (s["desiredNumberScheduled"].as_i64(), s["currentNumberScheduled"].as_i64(), s["numberMisscheduled"].as_i64()),
        (Some(1), Some(1), Some(0)),
        "{status:#}"
    );

    // a new template replaces the pod; history and undo through ControllerRevisions
    api.ok("1.33", &["set", "image", "ds/agent", "agent=busybox:2"]);
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let pods = placed(&["ds-db"]);
        if pods[0]["spec"]["containers"][0]["image"] == "busybox:2" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not replaced: {pods:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let history = api.ok("1.33", &["rollout", "history", "ds/agent"]);
    let rows: Vec<String> = history.lines().map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ")).filter(|l| !l.is_empty()).collect();
    assert_eq!(rows[1..], ["REVISION CHANGE-CAUSE", "1 <none>", "2 <none>"], "{history}");
    api.ok("1.33", &["rollout", "undo", "ds/agent", "--to-revision=1"]);
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let pods = placed(&["ds-db"]);
        if pods[0]["spec"]["containers"][0]["image"] == "busybox:1" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not rolled back: {pods:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let revisions: Value = serde_json::from_str(&api.ok("1.33", &["get", "controllerrevisions", "-o", "json"])).unwrap_or_default();
    let mut numbers: Vec<i64> = items(&revisions).iter().map(|r| r["revision"].as_i64().unwrap_or(0)).collect();
    numbers.sort();
    assert_eq!(numbers, [2, 3], "the first template renumbered as revision 3");
    drop(nodes);
}

#[tokio::test]
async fn disruption_budgets_count_healthy_pods_and_block_evictions_with_429() {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    let strategy = "{type: RollingUpdate}";
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&deployment("guarded", 2, strategy, &busybox())));
    rollout_ok(&d, "deployment/guarded");
    d.kubectl_ok(&["create", "poddisruptionbudget", "guard", "--selector=app=guarded", "--min-available=2"]);
    let pdb =
        d.kubectl_until(&["get", "pdb", "guard"], LIMIT, "budget processed", |p| p["status"]["observedGeneration"] == 1 && p["status"]["currentHealthy"] == 2);
    let s = &pdb["status"];
    assert_eq!((s["desiredHealthy"].as_i64(), s["expectedPods"].as_i64(), s["disruptionsAllowed"].as_i64()), (Some(2), Some(2), Some(0)), "{pdb:#}");
    assert_eq!(condition(&pdb, "DisruptionAllowed")["reason"], "InsufficientPods");
    let row = d.kubectl_ok(&["get", "pdb", "guard", "--no-headers"]);
    assert!(row.split_whitespace().take(4).eq(["guard", "2", "N/A", "0"]), "{row}");

    // an eviction would leave too few: 429 with upstream's message and cause
    let victim = ready_pods(&d, "guarded")[0]["metadata"]["name"].as_str().unwrap_or("").to_string();
    let eviction = format!(r#"{{"apiVersion":"policy/v1","kind":"Eviction","metadata":{{"name":"{victim}","namespace":"default"}}}}"#);
    let path = format!("/api/v1/namespaces/default/pods/{victim}/eviction");
    let out = d.kubectl_version("1.33", &["create", "--raw", &path, "-f", "-"], Some(&eviction));
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("Cannot evict pod as it would violate the pod's disruption budget."), "{err}");
    // kubectl drain retries and gives up at its timeout
    let out = d.kubectl(&["drain", "berth-it", "--pod-selector=app=guarded", "--timeout=8s"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!out.status.success() && err.contains("Cannot evict pod as it would violate the pod's disruption budget."), "{err}");
    d.kubectl_ok(&["uncordon", "berth-it"]);
    assert_eq!(ready_pods(&d, "guarded").len(), 2, "nothing was evicted");

    // a third replica allows one disruption; the eviction spends it
    d.kubectl_ok(&["scale", "deployment/guarded", "--replicas=3"]);
    d.kubectl_until(&["get", "pdb", "guard"], LIMIT, "one disruption allowed", |p| p["status"]["disruptionsAllowed"] == 1 && p["status"]["expectedPods"] == 3);
    let out = d.kubectl_version("1.33", &["create", "--raw", &path, "-f", "-"], Some(&eviction));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let pdb = d.kubectl_json(&["get", "pdb", "guard"]);
    assert!(pdb["status"]["disruptedPods"][victim.as_str()].is_string() || pdb["status"]["disruptionsAllowed"] == 0, "{pdb:#}");
    d.kubectl_until(&["get", "pods", "-l", "app=guarded"], LIMIT, "the evicted pod replaced", |v| {
        let live: Vec<Value> =
            items(v).into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null() && condition(p, "Ready")["status"] == "True").collect();
        live.len() == 3 && live.iter().all(|p| p["metadata"]["name"] != victim.as_str())
    });
}

#[test]
fn pods_of_a_deleted_node_are_garbage_collected() {
    use berth_integration::apiserver::ApiServer;
    use berth_integration::fake_node::{FakeNode, FakeNodes};
    let api = ApiServer::start_with("podgc", vec!["--controllers=*".into(), "--terminated-pod-gc-threshold=1".into()]);
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("gc-node", "4", "8Gi"));
    nodes.add(&FakeNode::new("gc-keep", "4", "8Gi"));
    // two finished pods with a threshold of 1: the older (by creation, then name) goes
    for name in ["done-1", "done-2"] {
        let pod =
            format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: gc-keep\n  containers:\n  - name: c\n    image: busybox:1\n");
        api.ok_in("1.33", &["apply", "-f", "-"], Some(&pod));
        api.ok("1.33", &["patch", "pod", name, "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Succeeded"}}"#]);
    }
    let pod = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stranded\nspec:\n  nodeSelector: {kubernetes.io/hostname: gc-node}\n  containers:\n  - name: c\n    image: busybox:1\n";
    api.ok_in("1.33", &["apply", "-f", "-"], Some(pod));
    let deadline = std::time::Instant::now() + LIMIT;
    while api.ok("1.33", &["get", "pod", "stranded", "-o", "jsonpath={.spec.nodeName}"]) != "gc-node" {
        assert!(std::time::Instant::now() < deadline, "not bound");
        std::thread::sleep(Duration::from_millis(200));
    }
    api.ok("1.33", &["delete", "node", "gc-node"]);
    // gone within the collector's period and quarantine (20 s each)
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out = api.kubectl("1.33", &["get", "pod", "stranded"]);
        if String::from_utf8_lossy(&out.stderr).contains("not found") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the pod of the deleted node is still there\n{}", berth_integration::tail(&api.log(), 30));
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(api.log().contains("garbage collected the pod"));
    let left = api.ok("1.33", &["get", "pods", "-o", "name"]);
    assert_eq!(left.trim(), "pod/done-2", "the older finished pod is collected beyond the threshold");
    drop(nodes);
}

/// The daemon pods of `app` by node: (node, image, name, ready), pods being deleted left out.
fn daemon_pods(api: &berth_integration::apiserver::ApiServer, app: &str) -> Vec<(String, String, String, bool)> {
    let v: Value = serde_json::from_str(&api.ok("1.33", &["get", "pods", "-l", &format!("app={app}"), "-o", "json"])).unwrap_or_default();
    let mut out: Vec<(String, String, String, bool)> = items(&v)
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let ready = p["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
            (
                p["spec"]["nodeName"].as_str().unwrap_or("-").to_string(),
                p["spec"]["containers"][0]["image"].as_str().unwrap_or("").to_string(),
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                ready,
            )
        })
        .collect();
    out.sort();
    out
}

/// Waits until the daemon pods of `app` (all bound) satisfy `check`; gives them back.
fn daemon_pods_when(
    api: &berth_integration::apiserver::ApiServer,
    app: &str,
    what: &str,
    check: impl Fn(&[(String, String, String, bool)]) -> bool,
) -> Vec<(String, String, String, bool)> {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let pods = daemon_pods(api, app);
        if pods.iter().all(|p| p.0 != "-") && check(&pods) {
            return pods;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: daemon pods {pods:?}\n{}", berth_integration::tail(&api.log(), 30));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until the daemon pods of `app`, as sorted (node, image), are `want`.
fn daemon_pods_until(api: &berth_integration::apiserver::ApiServer, app: &str, want: &[(&str, &str)]) -> Vec<(String, String, String, bool)> {
    daemon_pods_when(api, app, &format!("{want:?}"), |pods| pods.iter().map(|p| (p.0.as_str(), p.1.as_str())).collect::<Vec<_>>() == want)
}

/// Marks a pod Running and Ready, as the kubelet of a fake node would.
fn mark_ready(api: &berth_integration::apiserver::ApiServer, pod: &str) {
    let now = api.ok("1.33", &["get", "pod", pod, "-o", "jsonpath={.metadata.creationTimestamp}"]);
    let status = serde_json::json!({"status": {"phase": "Running", "conditions": [
        {"type": "Ready", "status": "True", "lastTransitionTime": now},
        {"type": "ContainersReady", "status": "True", "lastTransitionTime": now}]}});
    api.ok("1.33", &["patch", "pod", pod, "--subresource=status", "--type=merge", "-p", &status.to_string()]);
}

#[test]
fn daemonset_updates_surge_beside_the_old_pod_and_on_delete_waits_for_deletions() {
    use berth_integration::apiserver::ApiServer;
    use berth_integration::fake_node::{FakeNode, FakeNodes};
    let api = ApiServer::start_with("daemonset-updates", vec!["--controllers=*".into()]);
    let nodes = FakeNodes::start(&api);
    nodes.add(&FakeNode::new("dsu-a", "4", "8Gi"));
    nodes.add(&FakeNode::new("dsu-b", "4", "8Gi"));
    let ds = "apiVersion: apps/v1\nkind: DaemonSet\nmetadata:\n  name: surge\nspec:\n  selector:\n    matchLabels: {app: surge}\n  updateStrategy:\n    type: RollingUpdate\n    rollingUpdate: {maxSurge: 1, maxUnavailable: 0}\n  template:\n    metadata:\n      labels: {app: surge}\n    spec:\n      containers:\n      - name: c\n        image: busybox:1\n";
    api.ok_in("1.33", &["apply", "-f", "-"], Some(ds));
    for p in daemon_pods_until(&api, "surge", &[("dsu-a", "busybox:1"), ("dsu-b", "busybox:1")]) {
        mark_ready(&api, &p.2);
    }
    // maxSurge 1, maxUnavailable 0: the new pod starts beside the old one on one node, the old
    // one goes only once the new one is available, then the next node
    api.ok("1.33", &["set", "image", "ds/surge", "c=busybox:2"]);
    let mut updated: Vec<String> = vec![];
    for round in 0..2 {
        // one node not yet updated runs old and new side by side; no other pod is new
        let pods = daemon_pods_when(&api, "surge", &format!("surge round {round}"), |pods| {
            let fresh: Vec<_> = pods.iter().filter(|p| p.1 == "busybox:2" && !updated.contains(&p.0)).collect();
            fresh.len() == 1 && pods.iter().filter(|p| p.0 == fresh[0].0).count() == 2
        });
        let new = pods.iter().find(|p| p.1 == "busybox:2" && !updated.contains(&p.0)).expect("the surge pod").clone();
        assert_eq!(pods.len(), 3, "one surge pod at a time, the old ones kept: {pods:?}");
        assert!(pods.iter().filter(|p| p.1 == "busybox:1").count() == 2 - round, "{pods:?}");
        mark_ready(&api, &new.2);
        updated.push(new.0.clone());
        // the old pod of that node goes once the new one is available
        daemon_pods_when(&api, "surge", "old pod removed", |pods| pods.iter().filter(|p| p.0 == new.0).count() == 1);
    }
    daemon_pods_until(&api, "surge", &[("dsu-a", "busybox:2"), ("dsu-b", "busybox:2")]);

    // OnDelete: a new template replaces nothing until a pod is deleted
    api.ok("1.33", &["patch", "ds", "surge", "--type=merge", "-p", r#"{"spec":{"updateStrategy":{"type":"OnDelete","rollingUpdate":null}}}"#]);
    api.ok("1.33", &["set", "image", "ds/surge", "c=busybox:3"]);
    let generation = api.ok("1.33", &["get", "ds", "surge", "-o", "jsonpath={.metadata.generation}"]);
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let s: Value = serde_json::from_str(&api.ok("1.33", &["get", "ds", "surge", "-o", "json"])).unwrap_or_default();
        let status = &s["status"];
        if status["observedGeneration"].as_i64().map(|g| g.to_string()) == Some(generation.clone()) {
            assert_eq!(status["updatedNumberScheduled"].as_i64().unwrap_or(0), 0, "{status:#}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "generation {generation} not observed: {status:#}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(daemon_pods(&api, "surge").iter().map(|p| p.1.as_str()).collect::<Vec<_>>(), ["busybox:2", "busybox:2"]);
    let victim = daemon_pods(&api, "surge").into_iter().find(|p| p.0 == "dsu-a").expect("pod on dsu-a");
    api.ok("1.33", &["delete", "pod", &victim.2, "--wait=false"]);
    daemon_pods_until(&api, "surge", &[("dsu-a", "busybox:3"), ("dsu-b", "busybox:2")]);
    drop(nodes);
}

/// `kubectl get -o json` on `s` until `check` holds, for at most `limit`.
fn api_until(s: &ApiServer, args: &[&str], limit: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + limit;
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    loop {
        let now: Value = serde_json::from_str(&s.ok("1.33", &all)).unwrap_or(Value::Null);
        if check(&now) {
            return now;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: {now:#}\n{}", s.log());
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The Jobs of `cronjob` on `s`, by name.
fn api_jobs_of(jobs: &Value, cronjob: &str) -> Vec<String> {
    let mut names: Vec<String> = items(jobs)
        .iter()
        .filter(|j| j["metadata"]["ownerReferences"][0]["name"] == cronjob)
        .map(|j| j["metadata"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn cronjobs_missed_while_their_controller_was_down_run_once_within_the_starting_deadline() {
    // the API alone first: nobody schedules CronJobs
    let mut s = ApiServer::start("cron-missed");
    let v = "1.33";
    // 15 to 40 s into a minute: the last boundary is then older than a 10 s deadline, and the
    // next one is far enough for the restart
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !(15..=40).contains(&jiff::Timestamp::now().as_second().rem_euclid(60)) {
        assert!(std::time::Instant::now() < deadline, "the clock did not move");
        std::thread::sleep(Duration::from_millis(200));
    }
    let minute = jiff::Timestamp::now().as_second().div_euclid(60);
    let at = |minute: i64| jiff::Timestamp::from_second(minute * 60).unwrap_or_default();
    // as a controller that last ran five minutes ago leaves them: five times missed since
    let last = at(minute - 5).strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    for (name, deadline) in [("in-time", 300), ("too-late", 10)] {
        let cj = format!(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: {name}\nspec:\n  schedule: \"*/1 * * * *\"\n  startingDeadlineSeconds: {deadline}\n  jobTemplate:\n    spec:\n      suspend: true\n      template:\n        spec:\n          restartPolicy: Never\n          containers:\n          - name: main\n            image: {image}\n",
            image = busybox()
        );
        s.ok_in(v, &["apply", "-f", "-"], Some(&cj));
        s.ok(v, &["patch", "cronjob", name, "--subresource=status", "--type=merge", "-p", &format!(r#"{{"status":{{"lastScheduleTime":"{last}"}}}}"#)]);
    }

    // the server again, now with the CronJob controller
    s.restart_with(vec!["--controllers=cronjob".into()]);
    // within the deadline: one Job, for the most recent missed time only
    let jobs = api_until(&s, &["get", "jobs"], Duration::from_secs(30), "a Job for the missed time", |l| !api_jobs_of(l, "in-time").is_empty());
    let first = format!("in-time-{minute}");
    assert_eq!(api_jobs_of(&jobs, "in-time").first(), Some(&first), "{jobs:#}");
    let job = items(&jobs).into_iter().find(|j| j["metadata"]["name"] == first.as_str()).unwrap_or_default();
    let scheduled = job["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
    assert_eq!(scheduled, Some(at(minute)), "{job:#}");
    let cj = api_until(&s, &["get", "cronjob", "in-time"], Duration::from_secs(30), "lastScheduleTime", |c| c["status"]["lastScheduleTime"] != last.as_str());
    assert_eq!(cj["status"]["lastScheduleTime"].as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok()), Some(at(minute)), "{cj:#}");
    // past its deadline: nothing for that time (upstream's controller looks no further back
    // than the deadline, so there is no event either), and the next time runs
    let jobs = api_until(&s, &["get", "jobs"], Duration::from_secs(75), "the next time of too-late", |l| !api_jobs_of(l, "too-late").is_empty());
    assert_eq!(api_jobs_of(&jobs, "too-late"), vec![format!("too-late-{}", minute + 1)], "{jobs:#}");
    let in_time = api_jobs_of(&jobs, "in-time");
    assert!(in_time.iter().all(|n| *n == first || *n == format!("in-time-{}", minute + 1)), "only the most recent missed time ran: {in_time:?}");
    let events: Vec<String> = items(&serde_json::from_str(&s.ok(v, &["get", "events", "-o", "json"])).unwrap_or(Value::Null))
        .iter()
        .filter(|e| e["involvedObject"]["name"] == "too-late")
        .map(|e| format!("{} {}", e["reason"].as_str().unwrap_or(""), e["message"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(events, vec![format!("SuccessfulCreate Created job too-late-{}", minute + 1)], "{events:?}");
}
