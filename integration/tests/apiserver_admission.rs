//! The admission chain of `berth server` as real kubectl 1.33 (and 1.27 for a few cases) sees it:
//! ResourceQuota's 403 and its compare-and-swap charging under 20 parallel creates, LimitRange
//! defaults and bounds, PodSecurity's enforce refusal and warn `Warning:` lines, the default
//! service account with its projected token volume and the objects its controller keeps,
//! NamespaceLifecycle's rules and Priority's resolution, each in upstream's words.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use berth_integration::apiserver::ApiServer;
use serde_json::{json, Value};

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Waits until `f` holds (every 50 ms, at most 20 s).
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn pod(name: &str, extra: Value) -> String {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}]}});
    if let (Some(spec), Some(more)) = (p["spec"].as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            spec.insert(k.clone(), v.clone());
        }
    }
    p.to_string()
}

fn used(s: &ApiServer, ns: &str, quota: &str, resource: &str) -> String {
    let q = json(&s.ok("1.33", &["-n", ns, "get", "resourcequota", quota, "-o", "json"]));
    q["status"]["used"][resource].as_str().unwrap_or("").to_string()
}

#[test]
fn quota_exceeded_is_403_and_parallel_creates_stop_exactly_at_hard() {
    let s = Arc::new(ApiServer::start("quota"));
    s.ok("1.33", &["create", "namespace", "q"]);
    s.ok("1.33", &["-n", "q", "create", "quota", "q", "--hard=pods=5"]);
    wait_until("the quota's usage", || used(&s, "q", "q", "pods") == "0");

    let handles: Vec<_> = (0..20)
        .map(|i| {
            let s = s.clone();
            std::thread::spawn(move || s.kubectl_in("1.33", &["-n", "q", "create", "-f", "-"], Some(&pod(&format!("p{i}"), json!({})))))
        })
        .collect();
    let mut created = 0;
    for (i, h) in handles.into_iter().enumerate() {
        let out = h.join().expect("kubectl thread");
        if out.status.success() {
            created += 1;
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(err.contains(&format!("pods \"p{i}\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=5, limited: pods=5")), "{err}");
        }
    }
    assert_eq!(created, 5, "exactly hard pods are admitted");
    assert_eq!(used(&s, "q", "q", "pods"), "5");
    assert_eq!(s.ok("1.33", &["-n", "q", "get", "pods", "-o", "name"]).lines().count(), 5);

    // kubectl 1.27 sees the same refusal
    let err = s.fails("1.27", &["-n", "q", "create", "-f", "-"], Some(&pod("late", json!({}))));
    assert!(
        err.contains("Error from server (Forbidden)")
            && err.contains("pods \"late\" is forbidden: exceeded quota: q, requested: pods=1, used: pods=5, limited: pods=5"),
        "{err}"
    );

    // a delete gives the quota back
    let first = s.ok("1.33", &["-n", "q", "get", "pods", "-o", "jsonpath={.items[0].metadata.name}"]);
    s.ok("1.33", &["-n", "q", "delete", "pod", &first]);
    wait_until("used to go down", || used(&s, "q", "q", "pods") == "4");
    s.ok_in("1.33", &["-n", "q", "create", "-f", "-"], Some(&pod("again", json!({}))));
    assert_eq!(used(&s, "q", "q", "pods"), "5");
}

#[test]
fn compute_quota_needs_requests_and_counts_them() {
    let s = ApiServer::start("quota-cpu");
    s.ok("1.33", &["create", "namespace", "c"]);
    s.ok("1.33", &["-n", "c", "create", "quota", "compute", "--hard=requests.cpu=1,limits.memory=1Gi"]);
    wait_until("the quota's usage", || used(&s, "c", "compute", "requests.cpu") == "0");
    let err = s.fails("1.33", &["-n", "c", "create", "-f", "-"], Some(&pod("bare", json!({}))));
    assert!(err.contains("pods \"bare\" is forbidden: failed quota: compute: must specify limits.memory for: c; requests.cpu for: c"), "{err}");
    let sized = |name: &str, cpu: &str| {
        pod(name, json!({"containers": [{"name": "c", "image": "nginx:1.27", "resources": {"requests": {"cpu": cpu}, "limits": {"memory": "256Mi"}}}]}))
    };
    s.ok_in("1.33", &["-n", "c", "create", "-f", "-"], Some(&sized("a", "600m")));
    assert_eq!(used(&s, "c", "compute", "requests.cpu"), "600m");
    let err = s.fails("1.33", &["-n", "c", "create", "-f", "-"], Some(&sized("b", "500m")));
    assert!(
        err.contains("pods \"b\" is forbidden: exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1"),
        "{err}"
    );
}

#[test]
fn limit_range_defaults_show_in_the_created_pod_and_bounds_refuse() {
    let s = ApiServer::start("limits");
    s.ok("1.33", &["create", "namespace", "lr"]);
    let lr = json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l"}, "spec": {"limits": [
        {"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"}, "defaultRequest": {"cpu": "100m", "memory": "64Mi"}, "max": {"cpu": "500m"}},
    ]}});
    s.ok_in("1.33", &["-n", "lr", "create", "-f", "-"], Some(&lr.to_string()));
    s.ok_in("1.33", &["-n", "lr", "create", "-f", "-"], Some(&pod("p", json!({}))));
    let p = json(&s.ok("1.33", &["-n", "lr", "get", "pod", "p", "-o", "json"]));
    assert_eq!(p["spec"]["containers"][0]["resources"], json!({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "64Mi"}}));
    assert_eq!(
        p["metadata"]["annotations"]["kubernetes.io/limit-ranger"],
        "LimitRanger plugin set: cpu, memory request for container c; cpu, memory limit for container c"
    );

    let big = pod("big", json!({"containers": [{"name": "c", "image": "nginx:1.27", "resources": {"limits": {"cpu": "1"}}}]}));
    for v in ["1.33", "1.27"] {
        let err = s.fails(v, &["-n", "lr", "create", "-f", "-"], Some(&big));
        assert!(err.contains("pods \"big\" is forbidden: maximum cpu usage per Container is 500m, but limit is 1"), "{v}: {err}");
    }
}

#[test]
fn pod_security_restricted_refuses_a_privileged_pod_and_warn_prints_a_warning() {
    let s = ApiServer::start("pss");
    s.ok("1.33", &["create", "namespace", "locked"]);
    s.ok("1.33", &["label", "namespace", "locked", "pod-security.kubernetes.io/enforce=restricted"]);
    let privileged = pod("priv", json!({"containers": [{"name": "c", "image": "nginx:1.27", "securityContext": {"privileged": true}}]}));
    let want = "pods \"priv\" is forbidden: violates PodSecurity \"restricted:latest\": privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")";
    for v in ["1.33", "1.27"] {
        let err = s.fails(v, &["-n", "locked", "create", "-f", "-"], Some(&privileged));
        assert!(err.contains(want), "{v}: {err}");
    }
    // a workload template is only warned about
    let out = s.kubectl("1.33", &["-n", "locked", "create", "deployment", "web", "--image=nginx:1.27"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Warning: would violate PodSecurity \"restricted:latest\": allowPrivilegeEscalation != false (container \"nginx\""), "{err}");
    // the scale subresource is not judged (upstream ignores subresources)
    let out = s.kubectl("1.33", &["-n", "locked", "scale", "deployment", "web", "--replicas=2"]);
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));

    s.ok("1.33", &["create", "namespace", "watched"]);
    s.ok("1.33", &["label", "namespace", "watched", "pod-security.kubernetes.io/warn=baseline"]);
    let out = s.kubectl_in("1.33", &["-n", "watched", "create", "-f", "-"], Some(&privileged));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Warning: would violate PodSecurity \"baseline:latest\": privileged (container \"c\" must not set securityContext.privileged=true)"),
        "{err}"
    );

    // tightening the namespace warns about the pod already there
    let out = s.kubectl("1.33", &["label", "namespace", "watched", "pod-security.kubernetes.io/enforce=baseline"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "Warning: existing pods in namespace \"watched\" violate the new PodSecurity enforce level \"baseline:latest\"\nWarning: priv: privileged"
        ),
        "{err}"
    );
}

#[test]
fn pods_get_the_default_service_account_and_its_projected_token() {
    let s = ApiServer::start("sa");
    s.ok("1.33", &["create", "namespace", "apps"]);
    s.ok_in("1.33", &["-n", "apps", "create", "-f", "-"], Some(&pod("p", json!({}))));
    let p = json(&s.ok("1.33", &["-n", "apps", "get", "pod", "p", "-o", "json"]));
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    let volume = &p["spec"]["volumes"][0];
    let name = volume["name"].as_str().unwrap_or("");
    assert!(name.starts_with("kube-api-access-") && name.len() == 21, "{volume}");
    assert_eq!(
        volume["projected"],
        json!({"defaultMode": 420, "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ]})
    );
    assert_eq!(
        p["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": name, "readOnly": true, "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}])
    );
    let tolerations: Vec<String> =
        p["spec"]["tolerations"].as_array().into_iter().flatten().map(|t| format!("{}:{}", t["key"], t["tolerationSeconds"])).collect();
    assert_eq!(tolerations, ["\"node.kubernetes.io/not-ready\":300", "\"node.kubernetes.io/unreachable\":300"]);

    // the root CA config map holds the cluster CA of the kubeconfig
    let kc = std::fs::read_to_string(&s.kubeconfig).expect("kubeconfig");
    let ca_b64 = kc.lines().find_map(|l| l.trim().strip_prefix("certificate-authority-data: ")).expect("CA in kubeconfig");
    let ca = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(ca_b64.trim()).expect("base64")).expect("PEM");
    assert_eq!(s.ok("1.33", &["-n", "apps", "get", "cm", "kube-root-ca.crt", "-o", "jsonpath={.data.ca\\.crt}"]), ca);

    // both come back when deleted
    s.ok("1.33", &["-n", "apps", "delete", "sa", "default"]);
    s.ok("1.33", &["-n", "apps", "delete", "cm", "kube-root-ca.crt"]);
    wait_until("the default service account again", || s.kubectl("1.33", &["-n", "apps", "get", "sa", "default"]).status.success());
    wait_until("kube-root-ca.crt again", || s.kubectl("1.33", &["-n", "apps", "get", "cm", "kube-root-ca.crt"]).status.success());

    let err = s.fails("1.33", &["-n", "apps", "create", "-f", "-"], Some(&pod("robot", json!({"serviceAccountName": "robot"}))));
    assert!(err.contains("pods \"robot\" is forbidden: error looking up service account apps/robot: serviceaccount \"robot\" not found"), "{err}");
    s.ok_in("1.33", &["-n", "apps", "create", "-f", "-"], Some(&pod("quiet", json!({"automountServiceAccountToken": false}))));
    assert_eq!(s.ok("1.33", &["-n", "apps", "get", "pod", "quiet", "-o", "jsonpath={.spec.volumes}"]), "");
}

#[test]
fn namespaces_the_cluster_needs_stay_and_missing_ones_hold_nothing() {
    let s = ApiServer::start("nslife");
    for v in ["1.33", "1.27"] {
        for ns in ["default", "kube-system", "kube-public"] {
            let err = s.fails(v, &["delete", "namespace", ns], None);
            assert!(err.contains(&format!("namespaces \"{ns}\" is forbidden: this namespace may not be deleted")), "{v}: {err}");
        }
        let err = s.fails(v, &["-n", "nowhere", "create", "configmap", "c"], None);
        assert!(err.contains("namespaces \"nowhere\" not found"), "{v}: {err}");
    }
    assert!(s.ok("1.33", &["get", "namespace", "kube-system", "-o", "name"]).contains("namespace/kube-system"));
}

#[test]
fn priority_comes_from_the_named_or_default_class() {
    let s = ApiServer::start("priority");
    let class = |name: &str, value: i64, default: bool| {
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name}, "value": value, "globalDefault": default, "preemptionPolicy": "Never"}).to_string()
    };
    s.ok_in("1.33", &["create", "-f", "-"], Some(&class("high", 1000, false)));
    s.ok_in("1.33", &["create", "-f", "-"], Some(&pod("named", json!({"priorityClassName": "high"}))));
    let p = json(&s.ok("1.33", &["get", "pod", "named", "-o", "json"]));
    assert_eq!((p["spec"]["priority"].clone(), p["spec"]["preemptionPolicy"].clone()), (json!(1000), json!("Never")));

    s.ok_in("1.33", &["create", "-f", "-"], Some(&pod("plain", json!({}))));
    assert_eq!(s.ok("1.33", &["get", "pod", "plain", "-o", "jsonpath={.spec.priority}"]), "0");
    s.ok_in("1.33", &["create", "-f", "-"], Some(&class("everyone", 7, true)));
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&class("second", 8, true)));
    assert!(
        err.contains(
            "priorityclasses.scheduling.k8s.io \"second\" is forbidden: PriorityClass everyone is already marked as default. Only one default can exist"
        ),
        "{err}"
    );
    s.ok_in("1.33", &["create", "-f", "-"], Some(&pod("defaulted", json!({}))));
    assert_eq!(s.ok("1.33", &["get", "pod", "defaulted", "-o", "jsonpath={.spec.priorityClassName} {.spec.priority}"]), "everyone 7");

    for v in ["1.33", "1.27"] {
        let err = s.fails(v, &["create", "-f", "-"], Some(&pod("lost", json!({"priorityClassName": "nope"}))));
        assert!(err.contains("pods \"lost\" is forbidden: no PriorityClass with name nope was found"), "{v}: {err}");
    }
    // the system classes serve any namespace (upstream 1.17+ without a limitedResources config)
    s.ok_in("1.33", &["create", "-f", "-"], Some(&pod("vip", json!({"priorityClassName": "system-node-critical"}))));
    assert_eq!(s.ok("1.33", &["get", "pod", "vip", "-o", "jsonpath={.spec.priority}"]), "2000001000");
}

#[test]
fn object_count_quota_covers_custom_resources() {
    let s = ApiServer::start("quota-cr");
    let crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]},
    });
    s.ok_in("1.33", &["create", "-f", "-"], Some(&crd.to_string()));
    s.ok("1.33", &["wait", "--for", "condition=established", "--timeout=60s", "crd/widgets.example.com"]);
    s.ok("1.33", &["create", "quota", "w", "--hard=count/widgets.example.com=1"]);
    wait_until("the quota's usage", || used(&s, "default", "w", "count/widgets.example.com") == "0");
    let widget = |name: &str| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}}).to_string();
    // the first kubectl create of a kind just served may need discovery refreshed: retry on NotFound
    wait_until("the first widget", || s.kubectl_in("1.33", &["create", "-f", "-"], Some(&widget("one"))).status.success());
    let err = s.fails("1.33", &["create", "-f", "-"], Some(&widget("two")));
    assert!(
        err.contains("widgets.example.com \"two\" is forbidden: exceeded quota: w, requested: count/widgets.example.com=1, used: count/widgets.example.com=1, limited: count/widgets.example.com=1"),
        "{err}"
    );
    s.ok("1.33", &["delete", "widget", "one"]);
    wait_until("used to go down", || used(&s, "default", "w", "count/widgets.example.com") == "0");
    s.ok_in("1.33", &["create", "-f", "-"], Some(&widget("two")));
}
