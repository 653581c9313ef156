//! The housekeeping controllers inside `berth server`, driven by kubectl: the namespace
//! controller emptying a deleted namespace through the API (a running pod terminated gracefully
//! by its node, a ConfigMap held by a custom finalizer shown in the namespace's conditions, the
//! namespace gone once the finalizer is removed), the garbage collector deleting an object
//! whose owner never existed, and cascading deletion of a Deployment in all three modes.
use berth_integration::kubelet::busybox;
use berth_integration::Daemon;
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(180);

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).unwrap_or(&Value::Null)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn pod(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 3
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#,
        image = busybox()
    )
}

fn deployment(name: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: {image}
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#,
        image = busybox()
    )
}

async fn ready_server() -> Daemon {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    d
}

#[tokio::test]
async fn a_deleted_namespace_waits_for_its_pods_and_finalizers_and_then_goes() {
    let d = ready_server().await;
    d.kubectl_ok(&["create", "namespace", "doomed"]);
    d.kubectl_ok_in(&["-n", "doomed", "apply", "-f", "-"], Some(&pod("runner")));
    d.kubectl_until(&["-n", "doomed", "get", "pod", "runner"], LIMIT, "pod Running", |p| p["status"]["phase"] == "Running");
    d.kubectl_ok_in(&["-n", "doomed", "apply", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [example.com/x]\n"));
    d.kubectl_ok(&["delete", "namespace", "doomed", "--wait=false"]);

    // the pod goes through its node (graceful), the ConfigMap waits for its finalizer
    let ns = d.kubectl_until(&["get", "ns", "doomed"], LIMIT, "finalizers remaining", |ns| condition(ns, "NamespaceFinalizersRemaining")["status"] == "True");
    assert_eq!(ns["status"]["phase"], "Terminating", "{ns:#}");
    let fin = condition(&ns, "NamespaceFinalizersRemaining");
    assert_eq!(fin["reason"], "SomeFinalizersRemain", "{ns:#}");
    assert_eq!(fin["message"], "Some content in the namespace has finalizers remaining: example.com/x in 1 resource instances", "{ns:#}");
    let remaining = condition(&ns, "NamespaceContentRemaining");
    assert_eq!(remaining["reason"], "SomeResourcesRemain", "{ns:#}");
    assert!(remaining["message"].as_str().is_some_and(|m| m.contains("configmaps. has 1 resource instances")), "{ns:#}");
    assert_eq!(condition(&ns, "NamespaceDeletionDiscoveryFailure")["reason"], "ResourcesDiscovered", "{ns:#}");
    assert_eq!(ns["spec"]["finalizers"], serde_json::json!(["kubernetes"]), "{ns:#}");
    d.kubectl_until(&["-n", "doomed", "get", "pods"], LIMIT, "the pod terminated", |l| l["items"].as_array().is_some_and(|i| i.is_empty()));
    // new objects are refused while it terminates
    let out = d.kubectl(&["-n", "doomed", "create", "configmap", "late"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("because it is being terminated"), "{}", String::from_utf8_lossy(&out.stderr));

    // the finalizer goes: the ConfigMap, then the namespace
    d.kubectl_ok(&["-n", "doomed", "patch", "configmap", "held", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#]);
    d.kubectl_until(&["get", "ns"], LIMIT, "namespace gone", |l| items(l).iter().all(|n| n["metadata"]["name"] != "doomed"));
}

#[tokio::test]
async fn the_garbage_collector_deletes_objects_whose_owner_never_existed() {
    let d = ready_server().await;
    let orphan = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: orphan
  ownerReferences:
  - {apiVersion: v1, kind: ConfigMap, name: nobody, uid: 00000000-0000-0000-0000-00000000dead}
"#;
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(orphan));
    // one owner gone, one still there: only the dangling reference is removed
    d.kubectl_ok(&["create", "configmap", "parent"]);
    let parent = d.kubectl_json(&["get", "configmap", "parent"]);
    let uid = parent["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let half = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: half\n  ownerReferences:\n  - {{apiVersion: v1, kind: ConfigMap, name: parent, uid: {uid}}}\n  - {{apiVersion: v1, kind: ConfigMap, name: gone, uid: 00000000-0000-0000-0000-00000000beef}}\n"
    );
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&half));
    d.kubectl_until(&["get", "configmaps"], LIMIT, "the orphan collected", |l| items(l).iter().all(|c| c["metadata"]["name"] != "orphan"));
    let half = d.kubectl_until(&["get", "configmap", "half"], LIMIT, "the dangling reference removed", |c| {
        c["metadata"]["ownerReferences"].as_array().is_some_and(|r| r.len() == 1)
    });
    assert_eq!(half["metadata"]["ownerReferences"][0]["uid"], uid.as_str(), "{half:#}");
}

#[tokio::test]
async fn cascading_deletes_of_a_deployment_in_every_mode() {
    let d = ready_server().await;
    for (name, cascade) in [("fg", "foreground"), ("bg", "background"), ("orph", "orphan")] {
        d.kubectl_ok_in(&["apply", "-f", "-"], Some(&deployment(name)));
        let selector = format!("app={name}");
        d.kubectl_until(&["get", "pods", "-l", &selector], LIMIT, "two pods", |l| items(l).len() == 2);
        d.kubectl_ok(&["delete", "deployment", name, &format!("--cascade={cascade}"), "--wait=true"]);
        if cascade == "orphan" {
            // the ReplicaSet and its pods stay, no longer owned by the Deployment
            let rs = d.kubectl_json(&["get", "rs", "-l", &selector]);
            assert_eq!(items(&rs).len(), 1, "{rs:#}");
            assert!(items(&rs)[0]["metadata"]["ownerReferences"].as_array().is_none_or(|r| r.is_empty()), "{rs:#}");
            assert_eq!(items(&d.kubectl_json(&["get", "pods", "-l", &selector])).len(), 2);
            d.kubectl_ok(&["delete", "rs", "-l", &selector]);
        } else {
            d.kubectl_until(&["get", "rs", "-l", &selector], LIMIT, "ReplicaSet gone", |l| items(l).is_empty());
        }
        d.kubectl_until(&["get", "pods", "-l", &selector], LIMIT, "pods gone", |l| items(l).is_empty());
    }
}
