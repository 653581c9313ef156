//! The StatefulSet controller inside `berth server`, driven by the real kubectl as in the
//! StatefulSet basics tutorial: a set scaled 0 → 3 in order (each pod Running and Ready before
//! the next is made) with stable names, hostnames and subdomain, scaled down 3 → 1 from the
//! highest ordinal; a partitioned rolling update (only ordinals ≥ partition updated, the
//! revisions in status), finished by lowering the partition; `rollout history|undo`; the
//! Parallel policy against OrderedReady with pods that never become ready; deletion.
use berth_integration::kubelet::busybox;
use berth_integration::Daemon;
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(180);

fn set(name: &str, replicas: u32, policy: &str, ready_probe: bool) -> String {
    let probe = if ready_probe { "" } else { "\n        readinessProbe: {exec: {command: [\"false\"]}, periodSeconds: 1}" };
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  serviceName: {name}-svc
  replicas: {replicas}
  podManagementPolicy: {policy}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        env: [{{name: STAGE, value: one}}]
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]{probe}
"#,
        image = busybox()
    )
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).unwrap_or(&Value::Null)
}

/// The set's pods not being deleted: (name, revision label, ready).
fn pods(d: &Daemon, app: &str) -> Vec<(String, String, bool)> {
    let mut out: Vec<(String, String, bool)> = items(&d.kubectl_json(&["get", "pods", "-l", &format!("app={app}")]))
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            (
                p["metadata"]["name"].as_str().unwrap_or("").to_string(),
                p["metadata"]["labels"]["controller-revision-hash"].as_str().unwrap_or("").to_string(),
                condition(p, "Ready")["status"] == "True",
            )
        })
        .collect();
    out.sort();
    out
}

/// The messages of the set's events of `reason`, in the order they happened.
fn events(d: &Daemon, name: &str, reason: &str) -> Vec<String> {
    let mut evs: Vec<(String, String, String)> = items(&d.kubectl_json(&["get", "events"]))
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == "StatefulSet" && e["involvedObject"]["name"] == name && e["reason"] == reason)
        .map(|e| {
            (
                e["firstTimestamp"].as_str().unwrap_or("").to_string(),
                e["metadata"]["name"].as_str().unwrap_or("").to_string(),
                e["message"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    evs.sort();
    evs.into_iter().map(|(_, _, m)| m).collect()
}

/// The set's SuccessfulDelete events by when they last happened: (message, count).
fn delete_counts(d: &Daemon, name: &str) -> Vec<(String, i64)> {
    // ordered by each event's last write: lastTimestamp has whole seconds, too coarse for
    // deletes a second apart, so the resourceVersion of the write (our store's revision)
    let mut evs: Vec<(u64, String, i64)> = items(&d.kubectl_json(&["get", "events"]))
        .iter()
        .filter(|e| e["involvedObject"]["kind"] == "StatefulSet" && e["involvedObject"]["name"] == name && e["reason"] == "SuccessfulDelete")
        .map(|e| {
            let written = e["metadata"]["resourceVersion"].as_str().and_then(|rv| rv.parse().ok()).unwrap_or(0);
            (written, e["message"].as_str().unwrap_or("").to_string(), e["count"].as_i64().unwrap_or(0))
        })
        .collect();
    evs.sort();
    evs.into_iter().map(|(_, m, c)| (m, c)).collect()
}

fn all_ready(d: &Daemon, app: &str, n: usize) {
    d.kubectl_until(&["get", "pods", "-l", &format!("app={app}")], LIMIT, &format!("{n} ready pods of {app}"), |v| {
        let live: Vec<&Value> = v["items"].as_array().map(|a| a.iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect()).unwrap_or_default();
        live.len() == n && live.iter().all(|p| condition(p, "Ready")["status"] == "True")
    });
}

#[tokio::test]
async fn statefulset_scales_in_order_keeps_identities_and_rolls_out_by_partition() {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&set("web", 0, "OrderedReady", true)));
    d.kubectl_ok(&["scale", "statefulset", "web", "--replicas=3"]);
    all_ready(&d, "web", 3);

    // made in order: each pod only once the one before was Ready
    let created: Vec<String> = events(&d, "web", "SuccessfulCreate");
    assert_eq!(
        created,
        vec![
            "create Pod web-0 in StatefulSet web successful",
            "create Pod web-1 in StatefulSet web successful",
            "create Pod web-2 in StatefulSet web successful"
        ]
    );
    let ready_at = |name: &str| condition(&d.kubectl_json(&["get", "pod", name]), "Ready")["lastTransitionTime"].as_str().unwrap_or("").to_string();
    let created_at = |name: &str| d.kubectl_json(&["get", "pod", name])["metadata"]["creationTimestamp"].as_str().unwrap_or("").to_string();
    assert!(created_at("web-1") >= ready_at("web-0"), "web-1 made before web-0 was ready");
    assert!(created_at("web-2") >= ready_at("web-1"), "web-2 made before web-1 was ready");

    // stable identity: name, hostname, subdomain, labels, owner
    for i in 0..3 {
        let name = format!("web-{i}");
        let p = d.kubectl_json(&["get", "pod", &name]);
        assert_eq!(p["spec"]["hostname"], name.as_str());
        assert_eq!(p["spec"]["subdomain"], "web-svc");
        assert_eq!(p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], name.as_str());
        assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], i.to_string().as_str());
        assert_eq!(p["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        assert_eq!(d.kubectl_ok(&["exec", &name, "--", "hostname"]).trim(), name);
    }
    let sts = d.kubectl_json(&["get", "sts", "web"]);
    let first_revision = sts["status"]["currentRevision"].as_str().unwrap_or("").to_string();
    assert!(first_revision.starts_with("web-"), "{sts:#}");
    assert_eq!(sts["status"]["updateRevision"], first_revision.as_str());
    assert_eq!(
        (sts["status"]["replicas"].as_i64(), sts["status"]["readyReplicas"].as_i64(), sts["status"]["availableReplicas"].as_i64()),
        (Some(3), Some(3), Some(3))
    );
    assert_eq!(sts["status"]["currentReplicas"].as_i64(), Some(3));
    assert!(pods(&d, "web").iter().all(|(_, rev, _)| *rev == first_revision));
    let table = d.kubectl_ok(&["get", "sts", "web"]);
    assert!(table.lines().nth(1).unwrap_or("").split_whitespace().nth(1) == Some("3/3"), "{table}");
    let out = d.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(out.contains("partitioned roll out complete: 3 new pods have been updated"), "{out}");

    // scaled down from the highest ordinal
    d.kubectl_ok(&["scale", "statefulset", "web", "--replicas=1"]);
    all_ready(&d, "web", 1);
    assert_eq!(pods(&d, "web").iter().map(|p| p.0.clone()).collect::<Vec<_>>(), vec!["web-0"]);
    assert_eq!(events(&d, "web", "SuccessfulDelete"), vec!["delete Pod web-2 in StatefulSet web successful", "delete Pod web-1 in StatefulSet web successful"]);
    d.kubectl_ok(&["scale", "statefulset", "web", "--replicas=3"]);
    all_ready(&d, "web", 3);

    // a partitioned rolling update: only web-2 moves to the new revision
    d.kubectl_ok(&["patch", "sts", "web", "-p", r#"{"spec":{"updateStrategy":{"type":"RollingUpdate","rollingUpdate":{"partition":2}}}}"#]);
    d.kubectl_ok(&["set", "env", "sts/web", "STAGE=two"]);
    let sts = d.kubectl_until(&["get", "sts", "web"], LIMIT, "web-2 updated", |s| {
        s["status"]["updatedReplicas"].as_i64() == Some(1)
            && s["status"]["readyReplicas"].as_i64() == Some(3)
            && s["status"]["updateRevision"] != s["status"]["currentRevision"]
    });
    let update_revision = sts["status"]["updateRevision"].as_str().unwrap_or("").to_string();
    assert_eq!(sts["status"]["currentRevision"], first_revision.as_str());
    let revs: Vec<(String, String)> = pods(&d, "web").into_iter().map(|(n, r, _)| (n, r)).collect();
    assert_eq!(revs, vec![("web-0".into(), first_revision.clone()), ("web-1".into(), first_revision.clone()), ("web-2".into(), update_revision.clone())]);
    assert_eq!(d.kubectl_ok(&["exec", "web-2", "--", "sh", "-c", "echo $STAGE"]).trim(), "two");
    assert_eq!(d.kubectl_ok(&["exec", "web-0", "--", "sh", "-c", "echo $STAGE"]).trim(), "one");
    let out = d.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=60s"]);
    assert!(out.contains("partitioned roll out complete: 1 new pods have been updated"), "{out}");

    // the partition lowered: the rest follow, highest first, and the update becomes current
    d.kubectl_ok(&["patch", "sts", "web", "-p", r#"{"spec":{"updateStrategy":{"rollingUpdate":{"partition":0}}}}"#]);
    let out = d.kubectl_ok(&["rollout", "status", "sts/web", "--timeout=180s"]);
    assert!(out.contains("partitioned roll out complete: 3 new pods have been updated"), "{out}");
    let sts = d.kubectl_until(&["get", "sts", "web"], LIMIT, "update revision current", |s| s["status"]["currentRevision"] == update_revision.as_str());
    assert_eq!((sts["status"]["currentReplicas"].as_i64(), sts["status"]["updatedReplicas"].as_i64()), (Some(3), Some(3)));
    assert!(pods(&d, "web").iter().all(|(_, rev, ready)| *rev == update_revision && *ready));
    // the same messages as the scale-down (web-2 and web-1 counted twice), web-0 last
    let deletes = delete_counts(&d, "web");
    assert_eq!(
        deletes,
        vec![
            ("delete Pod web-2 in StatefulSet web successful".to_string(), 2),
            ("delete Pod web-1 in StatefulSet web successful".to_string(), 2),
            ("delete Pod web-0 in StatefulSet web successful".to_string(), 1)
        ]
    );

    // history and undo
    let history = d.kubectl_ok(&["rollout", "history", "sts/web"]);
    assert!(history.contains("1 ") && history.contains("2 "), "{history}");
    let revisions = items(&d.kubectl_json(&["get", "controllerrevisions"]));
    assert_eq!(revisions.len(), 2);
    assert!(revisions.iter().all(|r| r["metadata"]["ownerReferences"][0]["name"] == "web"));
    d.kubectl_ok(&["rollout", "undo", "sts/web"]);
    d.kubectl_until(&["get", "sts", "web"], LIMIT, "undone", |s| {
        s["status"]["currentRevision"] == first_revision.as_str()
            && s["status"]["updatedReplicas"].as_i64() == Some(3)
            && s["status"]["readyReplicas"].as_i64() == Some(3)
    });
    assert_eq!(d.kubectl_ok(&["exec", "web-1", "--", "sh", "-c", "echo $STAGE"]).trim(), "one");

    // deleted: its pods go
    d.kubectl_ok(&["delete", "sts", "web"]);
    d.kubectl_until(&["get", "pods", "-l", "app=web"], LIMIT, "pods gone", |v| items(v).is_empty());
}

#[tokio::test]
async fn ordered_ready_waits_for_readiness_and_parallel_does_not() {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&set("ordered", 3, "OrderedReady", false)));
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&set("parallel", 3, "Parallel", false)));
    // Parallel makes all three although none becomes ready
    d.kubectl_until(&["get", "pods", "-l", "app=parallel"], LIMIT, "3 running parallel pods", |v| {
        let ps = items(v);
        ps.len() == 3 && ps.iter().all(|p| p["status"]["phase"] == "Running")
    });
    // OrderedReady stays at its first pod, running but never ready
    d.kubectl_until(&["get", "pod", "ordered-0"], LIMIT, "ordered-0 running", |p| p["status"]["phase"] == "Running");
    let sts = d.kubectl_until(&["get", "sts", "ordered"], LIMIT, "status observed", |s| s["status"]["replicas"].as_i64() == Some(1));
    assert_eq!(sts["status"]["readyReplicas"], Value::Null);
    assert_eq!(pods(&d, "ordered").iter().map(|p| p.0.clone()).collect::<Vec<_>>(), vec!["ordered-0"]);
    assert_eq!(pods(&d, "parallel").iter().filter(|p| !p.2).count(), 3);
    // scaling Parallel down removes both at once, without waiting for readiness
    d.kubectl_ok(&["scale", "statefulset", "parallel", "--replicas=1"]);
    d.kubectl_until(&["get", "pods", "-l", "app=parallel"], LIMIT, "one parallel pod", |v| {
        items(v).iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).count() == 1
    });
    assert_eq!(pods(&d, "parallel").iter().map(|p| p.0.clone()).collect::<Vec<_>>(), vec!["parallel-0"]);
    // a deleted pod is made again under the same name
    let uid = d.kubectl_json(&["get", "pod", "parallel-0"])["metadata"]["uid"].as_str().unwrap_or("").to_string();
    d.kubectl_ok(&["delete", "pod", "parallel-0", "--wait=false"]);
    d.kubectl_until(&["get", "pods", "-l", "app=parallel"], LIMIT, "parallel-0 made again", |v| {
        items(v).iter().any(|p| p["metadata"]["name"] == "parallel-0" && p["metadata"]["uid"] != uid.as_str() && p["status"]["phase"] == "Running")
    });
}

fn set_with_claims(name: &str, replicas: u32, when_scaled: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {name}
spec:
  serviceName: {name}
  replicas: {replicas}
  persistentVolumeClaimRetentionPolicy: {{whenScaled: {when_scaled}, whenDeleted: Retain}}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: {image}
        command: ["sh", "-c", "[ -f /data/id ] || hostname > /data/id; trap 'exit 0' TERM; while true; do sleep 1; done"]
        volumeMounts: [{{name: www, mountPath: /data}}]
  volumeClaimTemplates:
  - metadata: {{name: www, labels: {{tier: data}}}}
    spec:
      accessModes: [ReadWriteOnce]
      resources: {{requests: {{storage: 64Mi}}}}
"#,
        image = busybox()
    )
}

fn claims(d: &Daemon, app: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = items(&d.kubectl_json(&["get", "pvc", "-l", &format!("app={app}")]))
        .iter()
        .filter(|c| c["metadata"]["deletionTimestamp"].is_null())
        .map(|c| (c["metadata"]["name"].as_str().unwrap_or("").to_string(), c["status"]["phase"].as_str().unwrap_or("").to_string()))
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn claims_from_templates_bind_survive_scale_down_and_follow_the_retention_policy() {
    let storage = berth_integration::TempDir::new("sts-storage");
    let root = storage.path().display().to_string();
    let d = Daemon::start_server("", &["--default-local-storage-path", &root]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&set_with_claims("kept", 0, "Retain")));
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&set_with_claims("dropped", 2, "Delete")));
    d.kubectl_ok(&["scale", "statefulset", "kept", "--replicas=2"]);
    all_ready(&d, "kept", 2);
    all_ready(&d, "dropped", 2);
    // a claim per ordinal, bound to a local-path volume, labelled with the template's and the
    // selector's labels; each pod wrote its own name on its volume
    assert_eq!(claims(&d, "kept"), vec![("www-kept-0".to_string(), "Bound".to_string()), ("www-kept-1".to_string(), "Bound".to_string())]);
    let c = d.kubectl_json(&["get", "pvc", "www-kept-1"]);
    assert_eq!((c["metadata"]["labels"]["tier"].as_str(), c["spec"]["storageClassName"].as_str()), (Some("data"), Some("local-path")));
    assert!(c["metadata"]["ownerReferences"].is_null(), "Retain: no owner {c:#}");
    let created = events(&d, "kept", "SuccessfulCreate");
    assert_eq!(created[0], "create Claim www-kept-0 Pod kept-0 in StatefulSet kept success");
    for i in 0..2 {
        assert_eq!(d.kubectl_ok(&["exec", &format!("kept-{i}"), "--", "cat", "/data/id"]).trim(), format!("kept-{i}"));
    }

    // scaled down: kept-1's claim stays (Retain), dropped-1's goes with its pod (whenScaled: Delete)
    d.kubectl_ok(&["scale", "statefulset", "kept", "--replicas=1"]);
    d.kubectl_ok(&["scale", "statefulset", "dropped", "--replicas=1"]);
    all_ready(&d, "kept", 1);
    all_ready(&d, "dropped", 1);
    d.kubectl_until(&["get", "pvc", "-l", "app=dropped"], LIMIT, "dropped-1's claim deleted", |l| {
        items(l).iter().all(|c| c["metadata"]["name"] != "www-dropped-1")
    });
    assert_eq!(claims(&d, "dropped"), vec![("www-dropped-0".to_string(), "Bound".to_string())]);
    assert_eq!(claims(&d, "kept"), vec![("www-kept-0".to_string(), "Bound".to_string()), ("www-kept-1".to_string(), "Bound".to_string())]);

    // scaled up again: kept-1 is back on its old claim and finds what it wrote
    d.kubectl_ok(&["scale", "statefulset", "kept", "--replicas=2"]);
    all_ready(&d, "kept", 2);
    let pod = d.kubectl_json(&["get", "pod", "kept-1"]);
    let volume = pod["spec"]["volumes"].as_array().and_then(|vs| vs.iter().find(|v| v["name"] == "www")).cloned().unwrap_or_default();
    assert_eq!(volume["persistentVolumeClaim"]["claimName"], "www-kept-1");
    assert_eq!(d.kubectl_ok(&["exec", "kept-1", "--", "cat", "/data/id"]).trim(), "kept-1");
    d.kubectl_ok(&["delete", "sts", "kept", "dropped"]);
    d.kubectl_until(&["get", "pods", "-l", "app in (kept,dropped)"], LIMIT, "pods gone", |v| items(v).is_empty());
    // whenDeleted: Retain: the claims outlive the set
    assert_eq!(claims(&d, "kept").len(), 2);
    d.kubectl_ok(&["delete", "pvc", "--all", "--wait=true"]);
}
