//! `berth server` driven by the real kubectl (1.33 and 1.27, and every version in between for
//! apply): create, get (table, wide, yaml, jsonpath), apply, label, annotate, scale, patch,
//! delete, watch, discovery, conflicts and bad input, on the embedded store and on etcd.

use berth_integration::apiserver::ApiServer;
use serde_json::Value;

const MANIFEST: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: NS
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  namespace: NS
data:
  greeting: hello
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: NS
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.27
        ports:
        - containerPort: 80
        env:
        - name: A
          value: "1"
        - name: B
          value: "2"
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: NS
spec:
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
"#;

fn manifest(ns: &str) -> String {
    MANIFEST.replace("NS", ns)
}

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The header line of a `kubectl get` table, words separated by single spaces.
fn header(out: &str) -> String {
    out.lines().next().unwrap_or("").split_whitespace().collect::<Vec<_>>().join(" ")
}

fn workflow(v: &str) {
    workflow_on(&ApiServer::start(&format!("flow-{}", v.replace('.', ""))), v);
}

fn workflow_on(s: &ApiServer, v: &str) {
    // One namespace per version: runs on one server do not wait for each other's deletion.
    let ns = &format!("berth-flow-{}", v.replace('.', ""));
    let created = s.ok_in(v, &["create", "-f", "-"], Some(&manifest(ns)));
    for line in [&format!("namespace/{ns} created")[..], "configmap/web-config created", "deployment.apps/web created", "service/web created"] {
        assert!(created.contains(line), "{created}");
    }

    let deploy = s.ok(v, &["-n", ns, "get", "deployments"]);
    assert_eq!(header(&deploy), "NAME READY UP-TO-DATE AVAILABLE AGE");
    assert!(deploy.lines().nth(1).is_some_and(|l| l.starts_with("web ") && l.contains("0/2")), "{deploy}");
    let wide = s.ok(v, &["-n", ns, "get", "deploy", "-o", "wide"]);
    assert_eq!(header(&wide), "NAME READY UP-TO-DATE AVAILABLE AGE CONTAINERS IMAGES SELECTOR");
    assert!(wide.contains("nginx:1.27") && wide.contains("app=web"), "{wide}");
    let svc = s.ok(v, &["-n", ns, "get", "svc", "-o", "wide"]);
    assert_eq!(header(&svc), "NAME TYPE CLUSTER-IP EXTERNAL-IP PORT(S) AGE SELECTOR");
    assert!(svc.contains("ClusterIP") && svc.contains("80/TCP") && svc.contains("<none>"), "{svc}");
    assert_eq!(header(&s.ok(v, &["-n", ns, "get", "cm"])), "NAME DATA AGE");
    assert_eq!(header(&s.ok(v, &["get", "ns"])), "NAME STATUS AGE");
    let all = s.ok(v, &["-n", ns, "get", "all"]);
    assert!(all.contains("service/web") && all.contains("deployment.apps/web"), "{all}");

    let yaml = s.ok(v, &["-n", ns, "get", "deploy", "web", "-o", "yaml"]);
    for want in
        ["generation: 1", "revisionHistoryLimit: 10", "maxSurge: 25%", "imagePullPolicy: IfNotPresent", "terminationMessagePath: /dev/termination-log", "uid: "]
    {
        assert!(yaml.contains(want), "{want} missing in\n{yaml}");
    }
    let image = s.ok(v, &["-n", ns, "get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]);
    assert_eq!(image, "nginx:1.27");

    // apply twice: the second drops env B and changes the image; a third apply changes nothing
    let applied = manifest("berth-apply");
    s.ok_in(v, &["apply", "-f", "-"], Some(&applied));
    let changed = applied.replace("nginx:1.27", "nginx:1.28").replace("        - name: B\n          value: \"2\"\n", "");
    let out = s.ok_in(v, &["apply", "-f", "-"], Some(&changed));
    assert!(out.contains("deployment.apps/web configured") && out.contains("configmap/web-config unchanged"), "{out}");
    let d = json(&s.ok(v, &["-n", "berth-apply", "get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["env"], serde_json::json!([{"name": "A", "value": "1"}]));
    assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["image"], "nginx:1.28");
    assert_eq!(d["metadata"]["generation"], 2);
    let rv = d["metadata"]["resourceVersion"].clone();
    let out = s.ok_in(v, &["apply", "-f", "-"], Some(&changed));
    assert!(out.contains("deployment.apps/web unchanged"), "{out}");
    let d = json(&s.ok(v, &["-n", "berth-apply", "get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["metadata"]["resourceVersion"], rv, "a no-op apply must not write");

    // label, annotate, scale, patches
    s.ok(v, &["-n", ns, "label", "deploy", "web", "tier=front"]);
    s.ok(v, &["-n", ns, "annotate", "deploy", "web", "note=hi"]);
    s.ok(v, &["-n", ns, "scale", "deploy", "web", "--replicas=5"]);
    let d = json(&s.ok(v, &["-n", ns, "get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["metadata"]["labels"]["tier"], "front");
    assert_eq!(d["metadata"]["annotations"]["note"], "hi");
    assert_eq!(d["spec"]["replicas"], 5);
    assert_eq!(d["metadata"]["generation"], 2, "scaling changes the spec: generation counts it");
    let selected = s.ok(v, &["-n", ns, "get", "deploy", "-l", "tier in (front,back),app", "-o", "name"]);
    assert_eq!(selected.trim(), "deployment.apps/web");
    let none = s.ok(v, &["-n", ns, "get", "deploy", "-l", "tier!=front", "-o", "name"]);
    assert_eq!(none.trim(), "");
    s.ok(v, &["-n", ns, "patch", "deploy", "web", "--type", "merge", "-p", r#"{"spec":{"replicas":3}}"#]);
    s.ok(v, &["-n", ns, "patch", "deploy", "web", "--type", "json", "-p", r#"[{"op":"replace","path":"/spec/replicas","value":4}]"#]);
    s.ok(v, &["-n", ns, "patch", "deploy", "web", "-p", r#"{"spec":{"template":{"spec":{"containers":[{"name":"web","image":"nginx:1.29"}]}}}}"#]);
    s.ok(v, &["-n", ns, "set", "env", "deploy/web", "C=3"]);
    let d = json(&s.ok(v, &["-n", ns, "get", "deploy", "web", "-o", "json"]));
    assert_eq!(d["spec"]["replicas"], 4);
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["image"], "nginx:1.29");
    assert_eq!(c["ports"][0]["containerPort"], 80, "a strategic merge keeps the other fields of the container");
    assert!(c["env"].as_array().is_some_and(|e| e.len() == 3), "{c}");

    // field selectors
    let by_name = s.ok(v, &["-n", ns, "get", "cm", "--field-selector", "metadata.name=web-config", "-o", "name"]);
    assert_eq!(by_name.trim(), "configmap/web-config");
    let err = s.fails(v, &["-n", ns, "get", "cm", "--field-selector", "data.x=y"], None);
    assert!(err.contains("field label not supported: data.x"), "{err}");

    // delete: objects, then the namespace with what is left in it
    let out = s.ok(v, &["-n", ns, "delete", "deploy", "web"]);
    assert!(out.contains("deployment.apps \"web\" deleted"), "{out}");
    let err = s.fails(v, &["-n", ns, "get", "deploy", "web"], None);
    assert!(err.contains("deployments.apps \"web\" not found"), "{err}");
    s.ok(v, &["delete", "ns", ns, "--wait=true"]);
    let err = s.fails(v, &["get", "ns", ns], None);
    assert!(err.contains(&format!("namespaces \"{ns}\" not found")), "{err}");
    let err = s.fails(v, &["-n", ns, "get", "cm", "web-config"], None);
    assert!(err.contains("not found"), "{err}");
    let err = s.fails(v, &["delete", "ns", "default"], None);
    assert!(err.contains("forbidden"), "{err}");
    // a manifest with its namespace first: the namespace's objects are still there to delete
    let out = s.ok_in(v, &["delete", "-f", "-"], Some(&changed));
    assert_eq!(out.matches(" deleted").count(), 4, "{out}");
}

#[test]
fn kubectl_1_33_creates_gets_applies_patches_and_deletes() {
    workflow("1.33");
}

#[test]
fn kubectl_1_27_creates_gets_applies_patches_and_deletes() {
    workflow("1.27");
}

#[test]
fn every_kubectl_version_applies_without_disabling_validation_and_unknown_fields_are_refused() {
    let s = ApiServer::start("apply-all");
    for v in ["1.27", "1.28", "1.29", "1.30", "1.31", "1.32", "1.33"] {
        let ns = format!("berth-v{}", v.replace('.', ""));
        let out = s.ok_in(v, &["apply", "-f", "-"], Some(&manifest(&ns)));
        assert!(out.contains("deployment.apps/web created"), "{v}: {out}");
        let bad = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: bad\n  namespace: {ns}\nbogus: 1\n");
        let err = s.fails(v, &["apply", "-f", "-"], Some(&bad));
        assert!(err.contains("unknown field \"bogus\""), "{v}: {err}");
    }
}

#[test]
fn get_watch_sees_changes_as_they_happen() {
    let s = ApiServer::start("watch");
    let mut watch = s
        .command("1.33")
        .args(["-n", "default", "get", "cm", "-w", "-o", "jsonpath={.metadata.name}{\"\\n\"}", "--output-watch-events=false"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let wait_for = |want: &str| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.trim() == want => return,
                Ok(_) => {}
                Err(_) => panic!("the watch did not show {want}"),
            }
        }
    };
    s.ok_in("1.33", &["create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: berth-w1\n  namespace: default\n"));
    wait_for("berth-w1");
    s.ok("1.33", &["-n", "default", "label", "cm", "berth-w1", "seen=yes"]);
    wait_for("berth-w1");
    let _ = watch.kill();
    let _ = watch.wait();
}

#[test]
fn discovery_has_the_shape_of_a_real_cluster() {
    let s = ApiServer::start("discovery");
    for v in ["1.27", "1.33"] {
        let out = s.ok(v, &["api-resources"]);
        assert_eq!(header(&out), "NAME SHORTNAMES APIVERSION NAMESPACED KIND");
        for line in [
            "configmaps cm v1 true ConfigMap",
            "namespaces ns v1 false Namespace",
            "pods po v1 true Pod",
            "secrets v1 true Secret",
            "services svc v1 true Service",
            "deployments deploy apps/v1 true Deployment",
        ] {
            assert!(out.lines().any(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") == line), "{v}: {line} missing in\n{out}");
        }
        let wide = s.ok(v, &["api-resources", "-o", "wide", "--api-group=apps"]);
        let verbs = ["[create delete deletecollection get list patch update watch]", "create,delete,deletecollection,get,list,patch,update,watch"];
        assert!(verbs.iter().any(|want| wide.contains(want)) && wide.contains("all"), "{wide}");
        let versions = s.ok(v, &["api-versions"]);
        assert_eq!(
            versions.split_whitespace().collect::<Vec<_>>(),
            [
                "admissionregistration.k8s.io/v1",
                "apiextensions.k8s.io/v1",
                "apps/v1",
                "authentication.k8s.io/v1",
                "authentication.k8s.io/v1beta1",
                "authorization.k8s.io/v1",
                "autoscaling/v1",
                "autoscaling/v2",
                "batch/v1",
                "certificates.k8s.io/v1",
                "coordination.k8s.io/v1",
                "discovery.k8s.io/v1",
                "events.k8s.io/v1",
                "metrics.k8s.io/v1beta1",
                "networking.k8s.io/v1",
                "policy/v1",
                "rbac.authorization.k8s.io/v1",
                "scheduling.k8s.io/v1",
                "storage.k8s.io/v1",
                "v1"
            ]
        );
    }
    let aggregated = s.ok("1.33", &["get", "--raw", "/apis"]);
    assert_eq!(json(&aggregated)["kind"], "APIGroupList");
    let version = json(&s.ok("1.33", &["get", "--raw", "/version"]));
    assert_eq!(version["major"], "1");
}

#[test]
fn a_stale_update_is_a_409_conflict_in_upstream_words() {
    let s = ApiServer::start("conflict");
    s.ok_in("1.33", &["create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: berth-c\n  namespace: default\ndata: {a: '1'}\n"));
    let old = s.ok("1.33", &["-n", "default", "get", "cm", "berth-c", "-o", "json"]);
    s.ok("1.33", &["-n", "default", "label", "cm", "berth-c", "changed=yes"]);
    let err = s.fails("1.33", &["replace", "-f", "-"], Some(&old));
    assert!(
        err.contains(r#"Operation cannot be fulfilled on configmaps "berth-c": the object has been modified; please apply your changes to the latest version and try again"#),
        "{err}"
    );
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&old));
    assert!(err.contains(r#"configmaps "berth-c" already exists"#), "{err}");
}

#[test]
fn bad_input_gets_400_422_and_404_as_upstream() {
    let s = ApiServer::start("bad");
    let dir = s.dir.path().to_path_buf();
    let bad = dir.join("bad.json");
    std::fs::write(&bad, r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"#).expect("write");
    let err = s.fails("1.33", &["create", "--raw", "/api/v1/namespaces/default/configmaps", "-f", bad.to_str().unwrap_or_default()], None);
    assert!(err.contains("BadRequest") || err.contains("json parse error"), "{err}");
    let err = s.fails("1.33", &["apply", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n  namespace: default\n"));
    assert!(err.contains(r#"The ConfigMap "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": a lowercase RFC 1123 subdomain"#), "{err}");
    let err = s.fails("1.27", &["create", "-f", "-"], Some("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  namespace: default\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: c}}\n    spec:\n      containers: [{name: c}]\n"));
    assert!(err.contains("spec.template.metadata.labels: Invalid value") && err.contains("spec.template.spec.containers[0].image: Required value"), "{err}");
    let err = s.fails("1.33", &["get", "--raw", "/api/v1/foos"], None);
    assert!(err.contains("NotFound"), "{err}");
    let err = s.fails("1.33", &["get", "foos"], None);
    assert!(err.contains(r#"the server doesn't have a resource type "foos""#), "{err}");
    let err = s.fails("1.33", &["-n", "berth-nowhere", "create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n"));
    assert!(err.contains(r#"namespaces "berth-nowhere" not found"#), "{err}");
}

#[test]
fn certificates_survive_a_restart_and_clients_without_one_are_unauthorized() {
    let mut s = ApiServer::start("restart");
    s.ok_in("1.33", &["create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: berth-keep\n  namespace: default\n"));
    let ca = std::fs::read(s.dir.path().join("server/ca.crt")).expect("ca.crt");
    s.restart();
    assert_eq!(std::fs::read(s.dir.path().join("server/ca.crt")).expect("ca.crt"), ca, "the CA is reused");
    s.ok("1.33", &["-n", "default", "get", "cm", "berth-keep"]);
    // a kubeconfig with the CA but no client certificate
    let kc = std::fs::read_to_string(&s.kubeconfig).expect("kubeconfig");
    let anon: String = kc.lines().filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data")).map(|l| format!("{l}\n")).collect();
    let anon = anon.replace("  user:\n", "  user: {token: berth-not-a-token}\n");
    let path = s.dir.path().join("anon.kubeconfig");
    std::fs::write(&path, anon).expect("write kubeconfig");
    let out = std::process::Command::new(berth_integration::apiserver::kubectl_bin("1.33"))
        .arg("--kubeconfig")
        .arg(&path)
        .arg("--cache-dir")
        .arg(s.dir.path().join("kube-cache"))
        .args(["get", "ns"])
        .output()
        .expect("kubectl");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unauthorized"), "{err}");
}

#[test]
fn runs_on_etcd() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let etcd = rt.block_on(berth_store::etcd_process::EtcdCluster::single(&["--experimental-watch-progress-notify-interval=500ms"])).expect("start etcd");
    let endpoint = etcd.members[0].client_url.clone();
    let s = ApiServer::start_with("etcd", vec!["--datastore-endpoint".into(), endpoint]);
    // The whole kubectl workflow the embedded store runs, oldest and newest kubectl.
    workflow_on(&s, "1.27");
    workflow_on(&s, "1.33");
    let out = s.ok_in("1.33", &["apply", "-f", "-"], Some(&manifest("berth-etcd")));
    assert!(out.contains("deployment.apps/web created"), "{out}");
    s.ok("1.33", &["-n", "berth-etcd", "scale", "deploy", "web", "--replicas=3"]);
    let replicas = s.ok("1.33", &["-n", "berth-etcd", "get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "3");
    s.ok("1.33", &["delete", "ns", "berth-etcd"]);
    drop(s);
    drop(etcd);
}

#[test]
fn typed_create_commands_work_also_when_kubectl_sends_protobuf() {
    let s = ApiServer::start("protobuf");
    // kubectl 1.32+ sends these bodies as application/vnd.kubernetes.protobuf; 1.27 as JSON.
    for v in ["1.27", "1.32", "1.33"] {
        let ns = format!("berth-pb{}", v.replace('.', ""));
        s.ok(v, &["create", "ns", &ns]);
        s.ok(v, &["-n", &ns, "create", "configmap", "c1", "--from-literal=a=b", "--from-literal=c=d"]);
        s.ok(v, &["-n", &ns, "create", "secret", "generic", "s1", "--from-literal=p=q"]);
        s.ok(v, &["-n", &ns, "create", "deployment", "d1", "--image=nginx:1.27", "--replicas=3", "--port=80"]);
        s.ok(v, &["-n", &ns, "create", "service", "clusterip", "s1", "--tcp=80:8080"]);
        s.ok(v, &["-n", &ns, "create", "serviceaccount", "sa1"]);
        s.ok(v, &["-n", &ns, "expose", "deployment", "d1", "--port=81", "--name=d1x"]);
        let cm = json(&s.ok(v, &["-n", &ns, "get", "cm", "c1", "-o", "json"]));
        assert_eq!(cm["data"], serde_json::json!({"a": "b", "c": "d"}));
        assert_eq!(json(&s.ok(v, &["-n", &ns, "get", "secret", "s1", "-o", "json"]))["data"]["p"], "cQ==");
        let d = json(&s.ok(v, &["-n", &ns, "get", "deploy", "d1", "-o", "json"]));
        assert_eq!(d["spec"]["replicas"], 3);
        assert_eq!(d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"], 80);
        assert_eq!(d["spec"]["selector"]["matchLabels"]["app"], "d1");
        let svc = json(&s.ok(v, &["-n", &ns, "get", "svc", "s1", "-o", "json"]));
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 8080);
        let svc = json(&s.ok(v, &["-n", &ns, "get", "svc", "d1x", "-o", "json"]));
        assert_eq!(svc["spec"]["selector"]["app"], "d1");
        s.ok(v, &["-n", &ns, "create", "deployment", "zero", "--image=nginx", "--replicas=0"]);
        assert_eq!(s.ok(v, &["-n", &ns, "get", "deploy", "zero", "-o", "jsonpath={.spec.replicas}"]), "0");
    }
}

/// Runs a raw watch request in the background; its output once the server ends it.
fn raw_watch(s: &ApiServer, path: &str) -> std::thread::JoinHandle<String> {
    let child = s
        .command("1.33")
        .args(["get", "--raw", path])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("kubectl get --raw");
    std::thread::spawn(move || String::from_utf8_lossy(&child.wait_with_output().map(|o| o.stdout).unwrap_or_default()).to_string())
}

fn events(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(json)
        .map(|e| (e["type"].as_str().unwrap_or("").to_string(), e["object"]["metadata"]["name"].as_str().unwrap_or("").to_string()))
        .collect()
}

#[test]
fn watches_send_bookmarks_follow_selectors_end_on_time_and_410_when_too_old() {
    let mut s = ApiServer::start("watchraw");
    s.ok_in("1.33", &["create", "-f", "-"], Some("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: berth-b1\n  namespace: default\n"));
    let started = std::time::Instant::now();
    let all = raw_watch(&s, "/api/v1/namespaces/default/configmaps?watch=1&allowWatchBookmarks=true&timeoutSeconds=4");
    let selected = raw_watch(&s, "/api/v1/namespaces/default/configmaps?watch=1&labelSelector=sel%3Dyes&timeoutSeconds=4");
    std::thread::sleep(std::time::Duration::from_millis(500));
    s.ok("1.33", &["-n", "default", "label", "cm", "berth-b1", "sel=yes"]);
    s.ok("1.33", &["-n", "default", "label", "cm", "berth-b1", "sel-"]);
    let all = events(&all.join().expect("watch"));
    assert!(started.elapsed() < std::time::Duration::from_secs(15), "timeoutSeconds ends the watch");
    assert_eq!(all[0], ("ADDED".to_string(), "berth-b1".to_string()), "{all:?}");
    assert_eq!(all.iter().filter(|(t, _)| t == "MODIFIED").count(), 2, "{all:?}");
    assert!(all.iter().any(|(t, _)| t == "BOOKMARK"), "{all:?}");
    let selected = events(&selected.join().expect("watch"));
    assert_eq!(selected, vec![("ADDED".to_string(), "berth-b1".to_string()), ("DELETED".to_string(), "berth-b1".to_string())]);

    // After a restart the cache's history starts at the restart: older versions are gone.
    s.restart();
    let out = s.ok("1.33", &["get", "--raw", "/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=1&timeoutSeconds=2"]);
    let first = json(out.lines().next().unwrap_or("{}"));
    assert_eq!(first["type"], "ERROR", "{out}");
    assert_eq!(first["object"]["code"], 410);
    assert_eq!(first["object"]["reason"], "Expired");
    assert!(first["object"]["message"].as_str().unwrap_or("").starts_with("too old resource version: 1 ("), "{out}");
}

#[test]
fn pods_events_nodes_and_scale_print_their_columns_and_status_is_a_subresource() {
    let s = ApiServer::start("tables");
    s.ok("1.33", &["-n", "default", "run", "berth-p1", "--image=nginx:1.27"]);
    assert_eq!(header(&s.ok("1.33", &["-n", "default", "get", "pods"])), "NAME READY STATUS RESTARTS AGE");
    let wide = s.ok("1.33", &["-n", "default", "get", "pods", "-o", "wide"]);
    assert_eq!(header(&wide), "NAME READY STATUS RESTARTS AGE IP NODE NOMINATED NODE READINESS GATES");
    assert!(wide.contains("0/1") && wide.contains("Pending"), "{wide}");
    s.ok(
        "1.33",
        &["-n", "default", "patch", "pod", "berth-p1", "--subresource=status", "--type=merge", "-p", r#"{"status":{"phase":"Running","podIP":"10.1.2.3"}}"#],
    );
    s.ok("1.33", &["-n", "default", "patch", "pod", "berth-p1", "--type=merge", "-p", r#"{"status":{"phase":"Failed"}}"#]);
    let wide = s.ok("1.33", &["-n", "default", "get", "pods", "-o", "wide"]);
    assert!(wide.contains("Running") && wide.contains("10.1.2.3"), "status changes only through the status subresource:\n{wide}");
    let err = s.fails("1.33", &["-n", "default", "set", "env", "pod/berth-p1", "X=1"], None);
    assert!(err.contains("pod updates may not change fields other than"), "{err}");

    let event = "apiVersion: v1\nkind: Event\nmetadata:\n  name: berth-p1.1\n  namespace: default\ninvolvedObject:\n  kind: Pod\n  name: berth-p1\n  namespace: default\nreason: Testing\nmessage: hello there\ntype: Normal\nsource:\n  component: berth-test\n";
    s.ok_in("1.33", &["create", "-f", "-"], Some(event));
    let ev = s.ok("1.33", &["-n", "default", "get", "events"]);
    assert_eq!(header(&ev), "LAST SEEN TYPE REASON OBJECT MESSAGE");
    assert!(ev.contains("pod/berth-p1") && ev.contains("hello there"), "{ev}");
    let by_field = s.ok("1.33", &["-n", "default", "get", "events", "--field-selector", "involvedObject.name=berth-p1,reason=Testing", "-o", "name"]);
    assert_eq!(by_field.trim(), "event/berth-p1.1");

    s.ok_in(
        "1.33",
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: berth-n1\n  labels: {node-role.kubernetes.io/control-plane: \"\"}\n"),
    );
    let nodes = s.ok("1.33", &["get", "nodes", "-o", "wide"]);
    assert_eq!(header(&nodes), "NAME STATUS ROLES AGE VERSION INTERNAL-IP EXTERNAL-IP OS-IMAGE KERNEL-VERSION CONTAINER-RUNTIME");
    assert!(nodes.contains("control-plane"), "{nodes}");

    s.ok("1.33", &["-n", "default", "create", "deployment", "berth-d", "--image=nginx", "--replicas=2"]);
    let scale = s.ok("1.33", &["-n", "default", "get", "deploy", "berth-d", "--subresource=scale"]);
    assert_eq!(header(&scale), "NAME DESIRED AVAILABLE");
    let raw = json(&s.ok("1.33", &["get", "--raw", "/apis/apps/v1/namespaces/default/deployments/berth-d/scale"]));
    assert_eq!(raw["kind"], "Scale");
    assert_eq!(raw["status"]["selector"], "app=berth-d");

    for i in 0..5 {
        s.ok("1.33", &["-n", "default", "create", "cm", &format!("berth-chunk{i}")]);
    }
    // the five and the namespace's kube-root-ca.crt (the root CA publisher's, as upstream)
    let names = s.ok("1.33", &["-n", "default", "get", "cm", "--chunk-size=2", "-o", "name"]);
    assert_eq!(names.lines().count(), 6, "{names}");
    assert!(names.contains("configmap/kube-root-ca.crt"), "{names}");
    let page = json(&s.ok("1.33", &["get", "--raw", "/api/v1/namespaces/default/configmaps?limit=2"]));
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(page["metadata"]["remainingItemCount"], 4);
    assert!(page["metadata"]["continue"].is_string());
    s.ok("1.33", &["-n", "default", "delete", "pod", "berth-p1"]);
}

#[test]
fn kubectl_explain_reads_the_openapi_v3_schemas() {
    let s = ApiServer::start("explain");
    for v in ["1.27", "1.33"] {
        let out = s.ok(v, &["explain", "pods.spec.containers.ports"]);
        assert!(out.contains("KIND:") && out.contains("Pod") && out.contains("containerPort"), "{v}: {out}");
        let out = s.ok(v, &["explain", "deployments.spec.strategy"]);
        assert!(out.contains("Deployment") && out.contains("rollingUpdate"), "{v}: {out}");
    }
}

#[test]
fn server_side_apply_merges_prunes_what_the_manager_dropped_and_records_managed_fields() {
    let s = ApiServer::start("ssa");
    for v in ["1.27", "1.33"] {
        let ns = format!("berth-ssa{}", v.replace('.', ""));
        let first = manifest(&ns);
        let out = s.ok_in(v, &["apply", "--server-side", "-f", "-"], Some(&first));
        assert!(out.contains("deployment.apps/web serverside-applied"), "{v}: {out}");
        let second = first.replace("nginx:1.27", "nginx:1.28").replace("        - name: B\n          value: \"2\"\n", "");
        s.ok_in(v, &["apply", "--server-side", "-f", "-"], Some(&second));
        let d = json(&s.ok(v, &["-n", &ns, "get", "deploy", "web", "-o", "json", "--show-managed-fields"]));
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["image"], "nginx:1.28");
        assert_eq!(c["env"], serde_json::json!([{"name": "A", "value": "1"}]), "env B was applied before and is not now: removed");
        let entry = &d["metadata"]["managedFields"][0];
        assert_eq!(entry["manager"], "kubectl");
        assert_eq!(entry["operation"], "Apply");
        assert!(entry["fieldsV1"]["f:spec"]["f:replicas"].is_object(), "{entry}");
        let rv = d["metadata"]["resourceVersion"].clone();
        s.ok_in(v, &["apply", "--server-side", "-f", "-"], Some(&second));
        let d = json(&s.ok(v, &["-n", &ns, "get", "deploy", "web", "-o", "json"]));
        assert_eq!(d["metadata"]["resourceVersion"], rv, "a no-op apply writes nothing");
    }
}

#[test]
fn a_cluster_ip_or_node_port_is_never_given_twice() {
    let s = ApiServer::start("alloc");
    let svc = |name: &str, extra: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\nspec:\n  {extra}ports:\n  - port: 80\n")
    };
    s.ok_in("1.33", &["create", "-f", "-"], Some(&svc("berth-a", "clusterIP: 10.43.7.7\n  type: NodePort\n  ")));
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&svc("berth-b", "clusterIP: 10.43.7.7\n  ")));
    assert!(
        err.contains(r#"spec.clusterIPs: Invalid value: []string{"10.43.7.7"}: failed to allocate IP 10.43.7.7: provided IP is already allocated"#),
        "{err}"
    );
    let port = s.ok("1.33", &["-n", "default", "get", "svc", "berth-a", "-o", "jsonpath={.spec.ports[0].nodePort}"]);
    let err = s.fails(
        "1.33",
        &["create", "-f", "-"],
        Some(&svc("berth-c", "type: NodePort\n  ").replace("- port: 80\n", &format!("- port: 80\n    nodePort: {port}\n"))),
    );
    assert!(err.contains(&format!("spec.ports[0].nodePort: Invalid value: {port}: provided port is already allocated")), "{err}");
    for i in 0..20 {
        s.ok_in("1.33", &["create", "-f", "-"], Some(&svc(&format!("berth-s{i}"), "")));
    }
    let ips = s.ok("1.33", &["-n", "default", "get", "svc", "-o", "jsonpath={.items[*].spec.clusterIP}"]);
    let mut ips: Vec<&str> = ips.split_whitespace().collect();
    let n = ips.len();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), n, "cluster IPs are unique");
}

#[test]
fn binding_places_a_pod_once_and_drain_evicts_it() {
    let s = ApiServer::start("binding");
    s.ok_in("1.33", &["apply", "-f", "-"], Some("apiVersion: v1\nkind: Node\nmetadata:\n  name: berth-n1\n"));
    s.ok("1.33", &["-n", "default", "run", "berth-bound", "--image=nginx"]);
    let binding = s.dir.path().join("binding.json");
    std::fs::write(&binding, r#"{"apiVersion":"v1","kind":"Binding","metadata":{"name":"berth-bound"},"target":{"kind":"Node","name":"berth-n1"}}"#)
        .expect("write");
    let path = "/api/v1/namespaces/default/pods/berth-bound/binding";
    let out = json(&s.ok("1.33", &["create", "--raw", path, "-f", binding.to_str().unwrap_or_default()]));
    assert_eq!(out["status"], "Success");
    let pod = json(&s.ok("1.33", &["-n", "default", "get", "pod", "berth-bound", "-o", "json"]));
    assert_eq!(pod["spec"]["nodeName"], "berth-n1");
    assert_eq!(pod["status"]["conditions"][0]["type"], "PodScheduled");
    let err = s.fails("1.33", &["create", "--raw", path, "-f", binding.to_str().unwrap_or_default()], None);
    assert!(
        err.contains(r#"pod berth-bound is already assigned to node \"berth-n1\""#)
            || err.contains(r#"pod berth-bound is already assigned to node "berth-n1""#),
        "{err}"
    );
    let resources = s.ok("1.33", &["api-resources", "--api-group=", "-o", "name"]);
    assert!(resources.lines().any(|l| l == "pods"), "{resources}");
    let raw = json(&s.ok("1.33", &["get", "--raw", "/api/v1"]));
    let names: Vec<&str> = raw["resources"].as_array().into_iter().flatten().filter_map(|r| r["name"].as_str()).collect();
    assert!(names.contains(&"pods/binding") && names.contains(&"pods/eviction") && names.contains(&"pods/status"), "{names:?}");

    let out = s.ok("1.33", &["drain", "berth-n1", "--force", "--grace-period=0", "--timeout=20s"]);
    assert!(out.contains("evicting pod default/berth-bound") || out.contains("pod/berth-bound evicted"), "{out}");
    let err = s.fails("1.33", &["-n", "default", "get", "pod", "berth-bound"], None);
    assert!(err.contains("not found"), "{err}");
    let nodes = s.ok("1.33", &["get", "nodes"]);
    assert!(nodes.contains("SchedulingDisabled"), "drain cordons the node: {nodes}");
}

#[test]
fn server_side_apply_conflicts_between_managers_unless_forced() {
    let s = ApiServer::start("ssaconflict");
    let cm = |value: &str| format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: berth-owned\n  namespace: default\ndata:\n  shared: \"{value}\"\n");
    s.ok_in("1.33", &["apply", "--server-side", "--field-manager=berth-m1", "-f", "-"], Some(&cm("1")));
    // the same value: shared ownership, no conflict
    s.ok_in("1.33", &["apply", "--server-side", "--field-manager=berth-m2", "-f", "-"], Some(&cm("1")));
    let err = s.fails("1.33", &["apply", "--server-side", "--field-manager=berth-m2", "-f", "-"], Some(&cm("2")));
    assert!(err.contains(r#"Apply failed with 1 conflict: conflict with "berth-m1" using v1: .data.shared"#), "{err}");
    s.ok_in("1.33", &["apply", "--server-side", "--field-manager=berth-m2", "--force-conflicts", "-f", "-"], Some(&cm("2")));
    assert_eq!(s.ok("1.33", &["-n", "default", "get", "cm", "berth-owned", "-o", "jsonpath={.data.shared}"]), "2");
    // berth-m1 lost the field: applying its old value now conflicts with berth-m2
    let err = s.fails("1.33", &["apply", "--server-side", "--field-manager=berth-m1", "-f", "-"], Some(&cm("1")));
    assert!(err.contains(r#"conflict with "berth-m2" using v1: .data.shared"#), "{err}");
}

#[test]
fn updates_own_what_they_change_so_an_apply_over_them_conflicts() {
    let s = ApiServer::start("owners");
    s.ok("1.33", &["-n", "default", "create", "deployment", "berth-mf", "--image=nginx", "--replicas=2"]);
    s.ok("1.33", &["-n", "default", "scale", "deployment", "berth-mf", "--replicas=4"]);
    let d = json(&s.ok("1.33", &["-n", "default", "get", "deploy", "berth-mf", "-o", "json", "--show-managed-fields"]));
    let entries = d["metadata"]["managedFields"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries[0]["manager"], "kubectl-create");
    assert_eq!(entries[0]["operation"], "Update");
    assert!(entries[0]["fieldsV1"]["f:spec"].get("f:replicas").is_none(), "scaling took replicas from the creator: {entries:?}");
    assert!(entries[1]["fieldsV1"]["f:spec"]["f:replicas"].is_object(), "{entries:?}");
    let manifest = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: berth-mf\n  namespace: default\nspec:\n  replicas: 3\n  selector: {matchLabels: {app: berth-mf}}\n  template:\n    metadata: {labels: {app: berth-mf}}\n    spec:\n      containers: [{name: nginx, image: nginx}]\n";
    let err = s.fails("1.33", &["apply", "--server-side", "-f", "-"], Some(manifest));
    assert!(err.contains("Apply failed with 1 conflict: conflict with") && err.contains(".spec.replicas"), "{err}");
    s.ok_in("1.33", &["apply", "--server-side", "--force-conflicts", "-f", "-"], Some(manifest));
    assert_eq!(s.ok("1.33", &["-n", "default", "get", "deploy", "berth-mf", "-o", "jsonpath={.spec.replicas}"]), "3");
    let d = json(&s.ok("1.33", &["-n", "default", "get", "deploy", "berth-mf", "-o", "json", "--show-managed-fields"]));
    let managers: Vec<String> = d["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| format!("{}/{}", e["manager"].as_str().unwrap_or(""), e["operation"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(managers, vec!["kubectl-create/Update", "kubectl/Apply"], "the scaler lost its only field to the forced apply");
}

/// One object of every kind of issue 15 beyond the first slice (namespace `NS`).
const KINDS: &str = include_str!("fixtures/kinds.yaml");

#[test]
fn every_workload_storage_policy_and_rbac_kind_prints_its_columns_scales_and_validates() {
    let s = ApiServer::start("kinds");
    let (v, ns) = ("1.33", "berth-kinds");
    s.ok_in(v, &["apply", "-f", "-"], Some(&KINDS.replace("NS", ns)));
    let wide = |r: &str| s.ok(v, &["-n", ns, "get", r, "-o", "wide"]);
    let headers = [
        ("endpoints", "NAME ENDPOINTS AGE", "10.0.0.1:80,10.0.0.2:80"),
        ("pvc", "NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS VOLUMEATTRIBUTESCLASS AGE VOLUMEMODE", "Pending"),
        ("pv", "NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS VOLUMEATTRIBUTESCLASS REASON AGE VOLUMEMODE", "RWO,ROX"),
        ("quota", "NAME AGE REQUEST LIMIT", "quota1"),
        ("limits", "NAME CREATED AT", "limits1"),
        ("podtemplates", "NAME CONTAINERS IMAGES POD LABELS", "app=pt"),
        ("rc", "NAME DESIRED CURRENT READY AGE CONTAINERS IMAGES SELECTOR", "app=rc1"),
        ("rs", "NAME DESIRED CURRENT READY AGE CONTAINERS IMAGES SELECTOR", "app=rs1"),
        ("sts", "NAME READY AGE CONTAINERS IMAGES", "0/2"),
        ("ds", "NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE CONTAINERS IMAGES SELECTOR", "kubernetes.io/os=linux"),
        ("controllerrevisions", "NAME CONTROLLER REVISION AGE", "statefulset.apps/sts1"),
        ("jobs", "NAME STATUS COMPLETIONS DURATION AGE CONTAINERS IMAGES SELECTOR", "batch.kubernetes.io/controller-uid="),
        ("cj", "NAME SCHEDULE TIMEZONE SUSPEND ACTIVE LAST SCHEDULE AGE CONTAINERS IMAGES SELECTOR", "*/5 * * * *"),
        ("hpa", "NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE", "cpu: <unknown>/50%"),
        ("leases", "NAME HOLDER AGE", "berth-node"),
        ("endpointslices", "NAME ADDRESSTYPE PORTS ENDPOINTS AGE", "10.0.0.1,10.0.0.2"),
        ("pc", "NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY", "system-node-critical"),
        ("pdb", "NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE", "N/A"),
        ("roles", "NAME CREATED AT", "reader"),
        ("rolebindings", "NAME ROLE AGE USERS GROUPS SERVICEACCOUNTS", "berth-kinds/default"),
        ("clusterroles", "NAME CREATED AT", "berth-kinds:reader"),
        ("clusterrolebindings", "NAME ROLE AGE USERS GROUPS SERVICEACCOUNTS", "ClusterRole/berth-kinds:reader"),
    ];
    for (r, want, cell) in headers {
        let out = wide(r);
        assert_eq!(header(&out), want, "{r}:\n{out}");
        assert!(out.contains(cell), "{r} lacks {cell}:\n{out}");
    }
    let job = s.ok(v, &["-n", ns, "get", "job", "job1"]);
    assert!(job.contains("Running") && job.contains("0/1"), "{job}");
    assert!(s.ok(v, &["get", "pc"]).contains("2000000000"), "the system priority classes exist from the start");

    // `get all` lists what the `all` category holds on a real cluster
    let all = s.ok(v, &["-n", ns, "get", "all", "-o", "name"]);
    for want in [
        "replicationcontroller/rc1",
        "daemonset.apps/ds1",
        "replicaset.apps/rs1",
        "statefulset.apps/sts1",
        "horizontalpodautoscaler.autoscaling/hpa1",
        "cronjob.batch/cj1",
        "job.batch/job1",
    ] {
        assert!(all.contains(want), "{want} missing in get all:\n{all}");
    }
    assert!(!all.contains("lease") && !all.contains("endpoints"), "{all}");

    // scale subresources (a replication controller's selector is a label map)
    for r in ["rc/rc1", "rs/rs1", "sts/sts1"] {
        s.ok(v, &["-n", ns, "scale", r, "--replicas=4"]);
    }
    let scale = json(&s.ok(v, &["get", "--raw", &format!("/api/v1/namespaces/{ns}/replicationcontrollers/rc1/scale")]));
    assert_eq!((scale["spec"]["replicas"].as_i64(), scale["status"]["selector"].as_str()), (Some(4), Some("app=rc1")));
    let sts = json(&s.ok(v, &["-n", ns, "get", "sts", "sts1", "-o", "json"]));
    assert_eq!((sts["spec"]["replicas"].as_i64(), sts["metadata"]["generation"].as_i64()), (Some(4), Some(2)));
    assert_eq!(sts["spec"]["podManagementPolicy"], "OrderedReady");
    assert_eq!(sts["spec"]["updateStrategy"]["rollingUpdate"]["partition"], 0);
    // status only through the status subresource
    s.ok(v, &["-n", ns, "patch", "rs", "rs1", "--subresource=status", "--type=merge", "-p", r#"{"status":{"replicas":4,"readyReplicas":3}}"#]);
    s.ok(v, &["-n", ns, "patch", "rs", "rs1", "--type=merge", "-p", r#"{"status":{"readyReplicas":1}}"#]);
    let rs = s.ok(v, &["-n", ns, "get", "rs", "rs1"]);
    assert!(rs.lines().nth(1).is_some_and(|l| l.split_whitespace().take(4).collect::<Vec<_>>() == ["rs1", "4", "4", "3"]), "{rs}");

    let by_field = s.ok(v, &["-n", ns, "get", "rs", "--field-selector", "status.replicas=4", "-o", "name"]);
    assert_eq!(by_field.trim(), "replicaset.apps/rs1");
    let by_field = s.ok(v, &["-n", ns, "get", "jobs", "--field-selector", "status.successful=0", "-o", "name"]);
    assert_eq!(by_field.trim(), "job.batch/job1");
    let out = s.kubectl(v, &["-n", ns, "get", "endpoints"]);
    let warned = String::from_utf8_lossy(&out.stderr);
    assert!(warned.contains("v1 Endpoints is deprecated in v1.33+; use discovery.k8s.io/v1 EndpointSlice"), "{warned}");

    // defaults
    let ds = json(&s.ok(v, &["-n", ns, "get", "ds", "ds1", "-o", "json"]));
    assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"], serde_json::json!({"maxSurge": 0, "maxUnavailable": 1}));
    let lr = json(&s.ok(v, &["-n", ns, "get", "limits", "limits1", "-o", "json"]));
    assert_eq!(lr["spec"]["limits"][0]["defaultRequest"], serde_json::json!({"cpu": "1", "memory": "10Mi"}));
    let cj = json(&s.ok(v, &["-n", ns, "get", "cj", "cj1", "-o", "json"]));
    assert_eq!((cj["spec"]["concurrencyPolicy"].as_str(), cj["spec"]["successfulJobsHistoryLimit"].as_i64()), (Some("Allow"), Some(3)));

    // typed create commands: JSON from 1.27, protobuf from 1.33
    for v in ["1.27", "1.33"] {
        let ns = format!("berth-typed{}", v.replace('.', ""));
        let n = ns.as_str();
        s.ok(v, &["create", "ns", n]);
        s.ok(v, &["-n", n, "create", "job", "j2", "--image=busybox", "--", "true"]);
        s.ok(v, &["-n", n, "create", "cronjob", "c2", "--image=busybox", "--schedule=@hourly"]);
        s.ok(v, &["-n", n, "create", "role", "r2", "--verb=get", "--resource=pods"]);
        s.ok(v, &["-n", n, "create", "rolebinding", "rb2", "--role=r2", "--user=bob", "--serviceaccount=default:x"]);
        s.ok(v, &["create", "clusterrole", &format!("{n}-cr"), "--verb=get", "--resource=nodes"]);
        s.ok(v, &["create", "clusterrolebinding", &format!("{n}-crb"), &format!("--clusterrole={n}-cr"), "--group=devs"]);
        s.ok(v, &["create", "priorityclass", &format!("{n}-pc"), "--value=10"]);
        s.ok(v, &["-n", n, "create", "pdb", "pdb2", "--selector=app=x", "--max-unavailable=1"]);
        s.ok(v, &["-n", n, "create", "quota", "q2", "--hard=pods=3"]);
        let job = json(&s.ok(v, &["-n", n, "get", "job", "j2", "-o", "json"]));
        assert_eq!(job["spec"]["backoffLimit"], 6);
        let rb = s.ok(v, &["-n", n, "get", "rolebinding", "rb2", "-o", "wide"]);
        assert!(rb.contains("Role/r2") && rb.contains("bob") && rb.contains("default/x"), "{rb}");
    }

    // bad input: the field and the reason, as upstream words them
    let bad_job =
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: berth-bad}\nspec:\n  template:\n    spec:\n      containers: [{name: c, image: busybox}]\n";
    let err = s.fails(v, &["-n", ns, "create", "-f", "-"], Some(bad_job));
    assert!(err.contains(r#"spec.template.spec.restartPolicy: Required value: valid values: "OnFailure", "Never""#), "{err}");
    let bad_sts = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: berth-bad}\nspec:\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: b}}\n    spec:\n      containers: [{name: c, image: busybox}]\n";
    let err = s.fails(v, &["-n", ns, "create", "-f", "-"], Some(bad_sts));
    assert!(
        err.contains("spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"b\"}: `selector` does not match template `labels`"),
        "{err}"
    );
    let err = s.fails(v, &["-n", ns, "patch", "cj", "cj1", "--type=merge", "-p", r#"{"spec":{"timeZone":"Mars/Olympus_Mons"}}"#], None);
    assert!(err.contains(r#"spec.timeZone: Invalid value: "Mars/Olympus_Mons": unknown time zone Mars/Olympus_Mons"#), "{err}");
    s.ok(v, &["-n", ns, "patch", "cj", "cj1", "--type=merge", "-p", r#"{"spec":{"timeZone":"Europe/Berlin"}}"#]);
    let err = s.fails(v, &["-n", ns, "set", "image", "job/job1", "*=busybox:2"], None);
    assert!(err.contains("spec.template: Invalid value: ") && err.contains("field is immutable"), "{err}");
    let err = s.fails(v, &["create", "priorityclass", "system-berth", "--value=1"], None);
    assert!(err.contains("priority class names with 'system-' prefix are reserved"), "{err}");
    let err = s.fails(v, &["-n", ns, "patch", "rolebinding", "reader", "--type=merge", "-p", r#"{"roleRef":{"name":"other"}}"#], None);
    assert!(err.contains("cannot change roleRef"), "{err}");
    let err = s.fails(v, &["patch", "pc", "berth-kinds-high", "--type=merge", "-p", r#"{"value":5}"#], None);
    assert!(err.contains("value: Forbidden: may not be changed in an update."), "{err}");
    let bad_pvc = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: berth-bad}\nspec:\n  accessModes: [ReadWriteSometimes]\n";
    let err = s.fails(v, &["-n", ns, "create", "-f", "-"], Some(bad_pvc));
    assert!(err.contains(r#"spec.accessModes: Unsupported value: "ReadWriteSometimes""#) && err.contains("spec.resources[storage]: Required value"), "{err}");

    // autoscaling/v1 over the v2 objects: kubectl 1.27 autoscales with v1
    s.ok("1.27", &["-n", ns, "autoscale", "rs", "rs1", "--max=4", "--cpu-percent=60", "--name=hpa-v1"]);
    let v1 = json(&s.ok(v, &["get", "--raw", &format!("/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers/hpa-v1")]));
    assert_eq!((v1["apiVersion"].as_str(), v1["spec"]["targetCPUUtilizationPercentage"].as_i64()), (Some("autoscaling/v1"), Some(60)));
    s.ok(
        v,
        &["-n", ns, "patch", "horizontalpodautoscalers.v1.autoscaling", "hpa-v1", "--type=merge", "-p", r#"{"spec":{"targetCPUUtilizationPercentage":70}}"#],
    );
    let v2 = json(&s.ok(v, &["-n", ns, "get", "hpa", "hpa-v1", "-o", "json"]));
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70, "{v2}");
    let listed = json(&s.ok(v, &["get", "--raw", &format!("/apis/autoscaling/v1/namespaces/{ns}/horizontalpodautoscalers")]));
    assert!(listed["items"].as_array().is_some_and(|i| i.iter().all(|h| h["spec"].get("metrics").is_none())), "{listed}");

    // events.k8s.io/v1 over the core events
    let ev = "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: berth-ev1}\neventTime: \"2026-12-02T17:00:00.000000Z\"\nreportingController: berth.io/test\nreportingInstance: berth-1\naction: Testing\nreason: Tested\ntype: Normal\nnote: hello from events.k8s.io\nregarding: {kind: Pod, name: p1}\n";
    s.ok_in(v, &["-n", ns, "create", "-f", "-"], Some(ev));
    let core = json(&s.ok(v, &["get", "--raw", &format!("/api/v1/namespaces/{ns}/events/berth-ev1")]));
    assert_eq!((core["message"].as_str(), core["involvedObject"]["name"].as_str()), (Some("hello from events.k8s.io"), Some("p1")));
    let new = json(&s.ok(v, &["get", "--raw", &format!("/apis/events.k8s.io/v1/namespaces/{ns}/events/berth-ev1")]));
    assert_eq!(
        (new["apiVersion"].as_str(), new["note"].as_str(), new["regarding"]["kind"].as_str()),
        (Some("events.k8s.io/v1"), Some("hello from events.k8s.io"), Some("Pod"))
    );
    let events = s.ok(v, &["-n", ns, "get", "events.v1.events.k8s.io"]);
    assert!(events.contains("pod/p1") && events.contains("Tested"), "{events}");

    // kubectl 1.27 applies the same manifest
    s.ok_in("1.27", &["apply", "-f", "-"], Some(&KINDS.replace("NS", "berth-kinds127")));
    s.ok("1.33", &["delete", "ns", "berth-kinds", "berth-kinds127", "berth-typed127", "berth-typed133", "--wait=false"]);
}
