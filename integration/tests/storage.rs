//! Persistent volumes on `berth server`, as on k3s: the default `local-path` StorageClass
//! provisions a hostPath volume on the node a claim's first pod is scheduled to (claim Bound,
//! pod Running, what one pod writes a second pod reads); deleting the claim deletes the volume
//! and its directory. A static hostPath volume with reclaim policy Retain binds a claim of class
//! "" and is Released when the claim goes.
use berth_integration::kubelet::busybox;
use berth_integration::{Daemon, TempDir};
use serde_json::Value;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(120);

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).unwrap_or(&Value::Null)
}

fn claim(name: &str, class: Option<&str>) -> String {
    let class = class.map(|c| format!("  storageClassName: \"{c}\"\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: {name}\nspec:\n{class}  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 64Mi\n"
    )
}

fn pod(name: &str, claim: &str, command: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  restartPolicy: Never
  containers:
  - name: c
    image: {image}
    command: ["sh", "-c", {command:?}]
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: {claim}}}
"#,
        image = busybox()
    )
}

#[tokio::test]
async fn local_path_volumes_are_provisioned_on_the_node_keep_data_and_go_with_their_claim() {
    let storage = TempDir::new("storage");
    let root = storage.path().to_string_lossy().to_string();
    let d = Daemon::start_server("", &["--default-local-storage-path", &root]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    let sc = d.kubectl_until(&["get", "storageclass", "local-path"], LIMIT, "the local-path class", |c| c["provisioner"] == "rancher.io/local-path");
    assert_eq!(sc["metadata"]["annotations"]["storageclass.kubernetes.io/is-default-class"], "true");
    assert_eq!((sc["volumeBindingMode"].as_str(), sc["reclaimPolicy"].as_str()), (Some("WaitForFirstConsumer"), Some("Delete")));

    // the claim gets the default class and waits for its first consumer
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&claim("data", None)));
    let c = d.kubectl_json(&["get", "pvc", "data"]);
    assert_eq!(c["spec"]["storageClassName"], "local-path");
    d.kubectl_until(&["get", "events", "--field-selector", "involvedObject.name=data"], LIMIT, "WaitForFirstConsumer", |e| {
        e["items"].as_array().is_some_and(|i| i.iter().any(|e| e["reason"] == "WaitForFirstConsumer"))
    });
    assert_eq!(d.kubectl_json(&["get", "pvc", "data"])["status"]["phase"], "Pending");

    // a pod using it: provisioned on the node, bound, running; it writes a file
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod("writer", "data", "echo kept > /data/file")));
    let c = d.kubectl_until(&["get", "pvc", "data"], LIMIT, "claim Bound", |c| c["status"]["phase"] == "Bound");
    assert_eq!(c["metadata"]["annotations"]["volume.kubernetes.io/selected-node"], "berth-it");
    assert_eq!(c["metadata"]["annotations"]["pv.kubernetes.io/bind-completed"], "yes");
    assert_eq!(c["metadata"]["annotations"]["volume.kubernetes.io/storage-provisioner"], "rancher.io/local-path");
    let uid = c["metadata"]["uid"].as_str().unwrap_or("").to_string();
    let pv_name = format!("pvc-{uid}");
    assert_eq!(c["spec"]["volumeName"], pv_name.as_str());
    let pv = d.kubectl_json(&["get", "pv", &pv_name]);
    let dir = format!("{root}/{pv_name}_default_data");
    assert_eq!(pv["spec"]["hostPath"]["path"], dir.as_str());
    assert_eq!(pv["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0], "berth-it");
    assert_eq!(pv["metadata"]["annotations"]["pv.kubernetes.io/provisioned-by"], "rancher.io/local-path");
    assert_eq!(pv["status"]["phase"], "Bound");
    d.kubectl_until(&["get", "pod", "writer"], LIMIT, "writer Succeeded", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(std::fs::read_to_string(format!("{dir}/file")).expect("the file on the node").trim(), "kept");

    // a second pod reads what the first wrote
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod("reader", "data", "cat /data/file")));
    d.kubectl_until(&["get", "pod", "reader"], LIMIT, "reader Succeeded", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(d.kubectl_ok(&["logs", "reader"]).trim(), "kept");

    // pods and claim deleted: the volume and its directory go
    d.kubectl_ok(&["delete", "pod", "writer", "reader", "--wait=true"]);
    d.kubectl_ok(&["delete", "pvc", "data", "--wait=true"]);
    d.kubectl_until(&["get", "pv", "-o", "json"], LIMIT, "volume deleted", |l| {
        l["items"].as_array().is_some_and(|i| !i.iter().any(|v| v["metadata"]["name"] == pv_name.as_str()))
    });
    assert!(!std::path::Path::new(&dir).exists(), "{dir} removed");
}

#[tokio::test]
async fn a_static_retained_volume_binds_a_classless_claim_and_is_released_after_it() {
    let d = Daemon::start_server("", &[]).await;
    let host = TempDir::new("static-pv");
    let pv = format!(
        "apiVersion: v1\nkind: PersistentVolume\nmetadata:\n  name: manual\nspec:\n  capacity: {{storage: 1Gi}}\n  accessModes: [ReadWriteOnce]\n  persistentVolumeReclaimPolicy: Retain\n  storageClassName: \"\"\n  hostPath: {{path: {:?}, type: Directory}}\n",
        host.path().to_string_lossy()
    );
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pv));
    d.kubectl_until(&["get", "pv", "manual"], LIMIT, "volume Available", |v| v["status"]["phase"] == "Available");
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&claim("static", Some(""))));
    let c = d.kubectl_until(&["get", "pvc", "static"], LIMIT, "claim Bound", |c| c["status"]["phase"] == "Bound");
    assert_eq!(c["spec"]["volumeName"], "manual");
    assert_eq!(c["status"]["capacity"]["storage"], "1Gi");
    let v = d.kubectl_until(&["get", "pv", "manual"], LIMIT, "volume Bound", |v| v["status"]["phase"] == "Bound");
    assert_eq!(v["spec"]["claimRef"]["name"], "static");
    assert_eq!(v["spec"]["claimRef"]["uid"], c["metadata"]["uid"]);
    assert_eq!(v["metadata"]["annotations"]["pv.kubernetes.io/bound-by-controller"], "yes");

    d.kubectl_ok(&["delete", "pvc", "static", "--wait=true"]);
    d.kubectl_until(&["get", "pv", "manual"], LIMIT, "volume Released", |v| v["status"]["phase"] == "Released");
    assert!(host.path().is_dir(), "a retained volume's data stays");
    d.kubectl_ok(&["delete", "pv", "manual"]);
}
