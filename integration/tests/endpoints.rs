//! The EndpointSlice and Endpoints controllers inside `berth server`, driven by the real kubectl:
//! a Deployment's pods behind a Service with a named targetPort show up as ready endpoints (IPs,
//! node, pod references, the resolved port) in one EndpointSlice and in the Endpoints' subsets;
//! a pod failing its readiness probe turns not ready (notReadyAddresses); a pod being deleted
//! shows terminating; a relabelled pod leaves; scaling to 0 keeps one empty slice and an
//! Endpoints without subsets; deleting the Service takes both along. A selector-less Service
//! and a slice managed by someone else are left alone. On an API-only server with nodes that
//! are only objects: 1001 pods pack into slices of 100 and the Endpoints is truncated at 1000.
use berth_integration::apiserver::ApiServer;
use berth_integration::kubelet::busybox;
use berth_integration::Daemon;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(180);
const SLICES_OF_WEB: &str = "kubernetes.io/service-name=web";

fn deployment(replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: web}}
  template:
    metadata:
      labels: {{app: web}}
    spec:
      terminationGracePeriodSeconds: 120
      containers:
      - name: web
        image: {image}
        ports: [{{name: http, containerPort: 8080}}]
        command: ["sh", "-c", "trap 'until [ -f /tmp/stop ]; do sleep 0.2; done; exit 0' TERM; touch /tmp/ready; while true; do sleep 1; done"]
        readinessProbe:
          exec: {{command: ["cat", "/tmp/ready"]}}
          periodSeconds: 1
          failureThreshold: 1
"#,
        image = busybox()
    )
}

const SERVICE: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {tier: front}
spec:
  selector: {app: web}
  ports: [{name: web, port: 80, targetPort: http, appProtocol: http}]
"#;

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn endpoints_of(slices: &Value) -> Vec<Value> {
    items(slices).iter().flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default()).collect()
}

fn endpoint_of<'a>(eps: &'a [Value], pod: &str) -> Option<&'a Value> {
    eps.iter().find(|e| e["targetRef"]["name"] == pod)
}

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).unwrap_or(&Value::Null)
}

/// The live (not terminating) pods of the deployment, Ready, by name: (name, uid, IP).
fn ready_pods(d: &Daemon) -> Vec<(String, String, String)> {
    items(&d.kubectl_json(&["get", "pods", "-l", "app=web"]))
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && condition(p, "Ready")["status"] == "True")
        .map(|p| {
            let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
            (s(&p["metadata"]["name"]), s(&p["metadata"]["uid"]), s(&p["status"]["podIP"]))
        })
        .collect()
}

/// The (ready, serving, terminating) conditions of an endpoint.
fn conditions(e: &Value) -> (Option<bool>, Option<bool>, Option<bool>) {
    let c = &e["conditions"];
    (c["ready"].as_bool(), c["serving"].as_bool(), c["terminating"].as_bool())
}

fn ips(list: &Value) -> BTreeSet<String> {
    list.as_array().into_iter().flatten().filter_map(|a| a["ip"].as_str().map(String::from)).collect()
}

/// The Endpoints' (ready, not ready) IPs over all subsets.
fn subset_ips(ep: &Value) -> (BTreeSet<String>, BTreeSet<String>) {
    let subsets = ep["subsets"].as_array().cloned().unwrap_or_default();
    (subsets.iter().flat_map(|s| ips(&s["addresses"])).collect(), subsets.iter().flat_map(|s| ips(&s["notReadyAddresses"])).collect())
}

fn not_found(d: &Daemon, args: &[&str]) -> bool {
    let out = d.kubectl(args);
    !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("NotFound")
}

#[tokio::test]
async fn endpoint_slices_and_endpoints_follow_a_deployments_pods_through_readiness_relabel_scale_and_deletion() {
    let d = Daemon::start_server("", &[]).await;
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    // left alone: a service without a selector, a slice someone else manages
    d.kubectl_ok_in(&["apply", "-f", "-"], Some("apiVersion: v1\nkind: Service\nmetadata: {name: manual}\nspec: {ports: [{port: 80}]}\n"));
    let foreign = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "web-by-hand",
        "labels": {"kubernetes.io/service-name": "web", "endpointslice.kubernetes.io/managed-by": "someone-else"}},
        "addressType": "IPv4", "endpoints": [{"addresses": ["192.0.2.1"]}], "ports": [{"name": "web", "port": 1}]});
    d.kubectl_ok_in(&["create", "-f", "-"], Some(&foreign.to_string()));

    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&deployment(3)));
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(SERVICE));
    let managed = &["get", "endpointslices", "-l", &format!("{SLICES_OF_WEB},endpointslice.kubernetes.io/managed-by=endpointslice-controller.k8s.io")];
    let slices = d.kubectl_until(managed, LIMIT, "3 ready endpoints of the 3 ready pods", |v| {
        let eps = endpoints_of(v);
        let pods = ready_pods(&d);
        pods.len() == 3 && eps.len() == 3 && eps.iter().all(|e| conditions(e) == (Some(true), Some(true), Some(false)))
    });
    let pods = ready_pods(&d);
    let svc = d.kubectl_json(&["get", "service", "web"]);
    let all = items(&slices);
    assert_eq!(all.len(), 1, "{slices:#}");
    let slice = &all[0];
    assert_eq!(slice["addressType"], "IPv4");
    assert!(slice["metadata"]["name"].as_str().is_some_and(|n| n.starts_with("web-") && n.len() > 4), "{slice:#}");
    assert_eq!(slice["metadata"]["generateName"], "web-");
    assert_eq!(slice["metadata"]["labels"]["tier"], "front", "the service's labels are copied");
    let owner = &slice["metadata"]["ownerReferences"][0];
    assert_eq!((owner["kind"].as_str(), owner["name"].as_str(), owner["uid"].as_str()), (Some("Service"), Some("web"), svc["metadata"]["uid"].as_str()));
    assert_eq!((owner["apiVersion"].as_str(), owner["controller"].as_bool(), owner["blockOwnerDeletion"].as_bool()), (Some("v1"), Some(true), Some(true)));
    assert!(slice["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"].is_string(), "{slice:#}");
    assert_eq!(slice["ports"], json!([{"name": "web", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]), "the named targetPort resolved");
    let eps = endpoints_of(&slices);
    for (name, uid, ip) in &pods {
        let e = endpoint_of(&eps, name).unwrap_or_else(|| panic!("no endpoint of {name}: {slices:#}"));
        assert_eq!(e["addresses"], json!([ip]));
        assert_eq!(e["nodeName"], "berth-it");
        assert_eq!(e["targetRef"], json!({"kind": "Pod", "namespace": "default", "name": name, "uid": uid}));
    }
    let row = d.kubectl_ok(&["get", "endpointslices", slice["metadata"]["name"].as_str().unwrap_or_default(), "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[1..3], ["IPv4", "8080"], "{row}");
    for (_, _, ip) in &pods {
        assert!(cols[3].contains(ip.as_str()), "{row}");
    }

    // the Endpoints: the same pods, labelled as the service
    let ep = d.kubectl_until(&["get", "endpoints", "web"], LIMIT, "3 ready addresses", |v| subset_ips(v).0.len() == 3);
    let want: BTreeSet<String> = pods.iter().map(|p| p.2.clone()).collect();
    assert_eq!(subset_ips(&ep), (want.clone(), BTreeSet::new()));
    assert_eq!(ep["subsets"][0]["ports"], json!([{"name": "web", "port": 8080, "protocol": "TCP", "appProtocol": "http"}]));
    let a = ep["subsets"][0]["addresses"].as_array().cloned().unwrap_or_default();
    let first = a.first().cloned().unwrap_or_default();
    assert_eq!(first["nodeName"], "berth-it");
    assert_eq!(first["targetRef"]["kind"], "Pod");
    assert_eq!(ep["metadata"]["labels"], json!({"tier": "front"}));
    assert!(ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"].is_string(), "{ep:#}");
    let row = d.kubectl_ok(&["get", "endpoints", "web", "--no-headers"]);
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(cols[0], "web", "{row}");
    let listed: BTreeSet<String> = cols[1].split(',').map(String::from).collect();
    assert_eq!(listed, want.iter().map(|ip| format!("{ip}:8080")).collect::<BTreeSet<_>>(), "{row}");

    // one pod fails its readiness probe: not ready (and not serving), in notReadyAddresses
    let (sick, _, sick_ip) = pods[0].clone();
    d.kubectl_ok(&["exec", &sick, "--", "rm", "/tmp/ready"]);
    d.kubectl_until(managed, LIMIT, "the sick pod's endpoint not ready", |v| {
        endpoint_of(&endpoints_of(v), &sick).is_some_and(|e| conditions(e) == (Some(false), Some(false), Some(false)))
    });
    let ep = d.kubectl_until(&["get", "endpoints", "web"], LIMIT, "the sick pod in notReadyAddresses", |v| subset_ips(v).1.contains(&sick_ip));
    assert_eq!(subset_ips(&ep).0.len(), 2, "{ep:#}");
    d.kubectl_ok(&["exec", &sick, "--", "touch", "/tmp/ready"]);
    d.kubectl_until(&["get", "endpoints", "web"], LIMIT, "ready again", |v| subset_ips(v).0.len() == 3 && subset_ips(v).1.is_empty());

    // a pod being deleted (its TERM trap holds it) shows terminating, not ready; it leaves the
    // Endpoints at once (no publishNotReadyAddresses)
    let (going, _, going_ip) = pods[1].clone();
    d.kubectl_ok(&["delete", "pod", &going, "--wait=false"]);
    let slices = d.kubectl_until(managed, LIMIT, "the deleted pod's endpoint terminating", |v| {
        endpoint_of(&endpoints_of(v), &going).is_some_and(|e| conditions(e).2 == Some(true))
    });
    let e = endpoint_of(&endpoints_of(&slices), &going).cloned().unwrap_or_default();
    assert_eq!(conditions(&e).0, Some(false), "ready is never true while terminating: {e:#}");
    let pod = d.kubectl_json(&["get", "pod", &going]);
    eprintln!("terminating endpoint: {e}; pod Ready {}", condition(&pod, "Ready")["status"]);
    d.kubectl_until(&["get", "endpoints", "web"], LIMIT, "the terminating pod out of the Endpoints", |v| {
        let (r, n) = subset_ips(v);
        !r.contains(&going_ip) && !n.contains(&going_ip)
    });
    d.kubectl_ok(&["exec", &going, "--", "touch", "/tmp/stop"]);
    d.kubectl_until(managed, LIMIT, "the deleted pod gone and its replacement ready", |v| {
        let eps = endpoints_of(v);
        endpoint_of(&eps, &going).is_none() && eps.len() == 3 && eps.iter().all(|e| conditions(e).0 == Some(true))
    });

    // a relabelled pod leaves the service (its ReplicaSet replaces it)
    let pods = ready_pods(&d);
    let (moved, _, _) = pods[0].clone();
    d.kubectl_ok(&["label", "pod", &moved, "app=elsewhere", "--overwrite"]);
    d.kubectl_until(managed, LIMIT, "the relabelled pod out, its replacement in", |v| {
        let eps = endpoints_of(v);
        endpoint_of(&eps, &moved).is_none() && eps.len() == 3 && eps.iter().all(|e| conditions(e).0 == Some(true))
    });
    d.kubectl_until(&["get", "endpoints", "web"], LIMIT, "3 ready addresses without the relabelled pod", |v| {
        let a = v["subsets"].as_array().into_iter().flatten().flat_map(|s| s["addresses"].as_array().cloned().unwrap_or_default()).collect::<Vec<_>>();
        a.len() == 3 && !a.iter().any(|x| x["targetRef"]["name"] == moved.as_str())
    });
    d.kubectl_ok(&["exec", &moved, "--", "touch", "/tmp/stop"]);
    d.kubectl_ok(&["delete", "pod", &moved, "--timeout=60s"]);

    // scaled to 0: one empty slice stays; the Endpoints has no subsets
    for (name, _, _) in ready_pods(&d) {
        d.kubectl_ok(&["exec", &name, "--", "touch", "/tmp/stop"]);
    }
    d.kubectl_ok(&["scale", "deployment/web", "--replicas=0"]);
    let slices = d.kubectl_until(managed, LIMIT, "one empty slice", |v| items(v).len() == 1 && endpoints_of(v).is_empty());
    assert!(items(&slices)[0]["ports"].as_array().is_none_or(|p| p.is_empty()), "{slices:#}");
    d.kubectl_until(&["get", "endpoints", "web"], LIMIT, "no subsets", |v| v["metadata"]["name"] == "web" && v["subsets"].is_null());
    let row = d.kubectl_ok(&["get", "endpoints", "web", "--no-headers"]);
    assert_eq!(row.split_whitespace().nth(1), Some("<none>"), "{row}");

    // what is not ours stays as it was
    assert!(not_found(&d, &["get", "endpoints", "manual"]), "no Endpoints for a service without a selector");
    let theirs = d.kubectl_json(&["get", "endpointslices", "-l", "kubernetes.io/service-name=manual"]);
    assert!(items(&theirs).is_empty(), "{theirs:#}");
    let by_hand = d.kubectl_json(&["get", "endpointslice", "web-by-hand"]);
    assert_eq!(by_hand["endpoints"], foreign["endpoints"]);
    assert_eq!(by_hand["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "someone-else");

    // the Service goes: its slices (garbage collector) and Endpoints (the controller) too
    d.kubectl_ok(&["delete", "service", "web"]);
    d.kubectl_until(managed, LIMIT, "the slices gone", |v| v["items"].as_array().is_some_and(|i| i.is_empty()));
    let deadline = Instant::now() + LIMIT;
    while !not_found(&d, &["get", "endpoints", "web"]) {
        assert!(Instant::now() < deadline, "the Endpoints of the deleted service stayed");
        std::thread::sleep(Duration::from_millis(200));
    }
    d.kubectl_ok(&["delete", "deployment", "web", "--wait=true", "--timeout=60s"]);
    d.kubectl_ok(&["delete", "endpointslice/web-by-hand", "service/manual"]);
}

fn node(name: &str, zone: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone}}})
}

fn pack_ip(i: usize) -> String {
    format!("10.77.{}.{}", i / 250, i % 250 + 1)
}

/// Pod `i` of the packing test (bound to one of two nodes), with the status a kubelet would
/// write once it runs: Running, Ready, an IP.
fn pack_pod(i: usize, with_status: bool) -> Value {
    let mut p = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": format!("pack-{i:04}"), "namespace": "default", "labels": {"app": "pack"}},
        "spec": {"nodeName": if i.is_multiple_of(2) { "node-a" } else { "node-b" },
            "containers": [{"name": "c", "image": "registry.invalid/none", "ports": [{"name": "http", "containerPort": 8080}]}]}});
    if with_status {
        p["status"] = json!({"phase": "Running", "podIP": pack_ip(i), "podIPs": [{"ip": pack_ip(i)}],
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2025-01-01T00:00:00Z"}]});
    }
    p
}

fn list(items: Vec<Value>) -> String {
    json!({"apiVersion": "v1", "kind": "List", "items": items}).to_string()
}

fn api_json(api: &ApiServer, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    serde_json::from_str(&api.ok("1.33", &all)).unwrap_or(Value::Null)
}

fn api_until(api: &ApiServer, args: &[&str], what: &str, check: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + LIMIT;
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    loop {
        let out = api.kubectl("1.33", &all);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if check(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}; last:\n{v:#}\nserver log:\n{}", berth_integration::tail(&api.log(), 60));
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn sizes(slices: &Value) -> Vec<usize> {
    let mut v: Vec<usize> = items(slices).iter().map(|s| s["endpoints"].as_array().map_or(0, Vec::len)).collect();
    v.sort();
    v
}

fn address_count(ep: &Value) -> usize {
    let (r, n) = subset_ips(ep);
    r.len() + n.len()
}

#[test]
fn a_thousand_and_one_pods_pack_into_slices_of_100_and_the_endpoints_truncate_at_1000() {
    let api = ApiServer::start_with("eps-pack", vec!["--controllers=endpointslice,endpoint,garbagecollector,namespace".into()]);
    api.ok_in("1.33", &["create", "-f", "-"], Some(&list(vec![node("node-a", "zone-a"), node("node-b", "zone-b")])));
    const N: usize = 1001;
    api.ok_in("1.33", &["create", "-f", "-"], Some(&list((0..N).map(|i| pack_pod(i, false)).collect())));
    api.ok_in("1.33", &["replace", "--subresource=status", "-f", "-"], Some(&list((0..N).map(|i| pack_pod(i, true)).collect())));
    let pods = api_json(&api, &["get", "pods", "-l", "app=pack"]);
    assert_eq!(items(&pods).iter().filter(|p| p["status"]["podIP"].is_string()).count(), N);

    // a service over pods that are all there: 10 full slices and one with the last endpoint
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "pack"},
        "spec": {"selector": {"app": "pack"}, "ports": [{"port": 80, "targetPort": "http"}]}});
    api.ok_in("1.33", &["create", "-f", "-"], Some(&svc.to_string()));
    let of_pack = &["get", "endpointslices", "-l", "kubernetes.io/service-name=pack"];
    let slices = api_until(&api, of_pack, "1001 endpoints", |v| sizes(v).iter().sum::<usize>() == N);
    let mut want = vec![100; 10];
    want.insert(0, 1);
    assert_eq!(sizes(&slices), want);
    let eps = endpoints_of(&slices);
    let zero = endpoint_of(&eps, "pack-0000").cloned().unwrap_or_default();
    assert_eq!((zero["nodeName"].as_str(), zero["zone"].as_str()), (Some("node-a"), Some("zone-a")), "{zero:#}");
    let one = endpoint_of(&eps, "pack-0001").cloned().unwrap_or_default();
    assert_eq!((one["nodeName"].as_str(), one["zone"].as_str()), (Some("node-b"), Some("zone-b")), "{one:#}");
    assert_eq!(items(&slices)[0]["ports"], json!([{"name": "", "port": 8080, "protocol": "TCP"}]));

    // the Endpoints holds 1000 of them and says so
    let ep = api_until(&api, &["get", "endpoints", "pack"], "a truncated Endpoints", |v| address_count(v) == 1000);
    assert_eq!(ep["metadata"]["annotations"]["endpoints.kubernetes.io/over-capacity"], "truncated");

    // the lone endpoint's pod goes: its slice is deleted, the full ones stay as they were
    let lone = items(&slices).iter().find(|s| s["endpoints"].as_array().map_or(0, Vec::len) == 1).cloned().unwrap_or_default();
    let lone_pod = lone["endpoints"][0]["targetRef"]["name"].as_str().unwrap_or_default().to_string();
    let full: BTreeSet<String> = items(&slices)
        .iter()
        .filter(|s| s["metadata"]["name"] != lone["metadata"]["name"])
        .filter_map(|s| s["metadata"]["name"].as_str().map(String::from))
        .collect();
    api.ok("1.33", &["delete", "pod", &lone_pod, "--grace-period=0", "--force"]);
    let slices = api_until(&api, of_pack, "10 full slices", |v| sizes(v) == vec![100; 10]);
    let names: BTreeSet<String> = items(&slices).iter().filter_map(|s| s["metadata"]["name"].as_str().map(String::from)).collect();
    assert_eq!(names, full, "the full slices were kept, not rewritten");
    let ep = api_until(&api, &["get", "endpoints", "pack"], "1000 addresses, not truncated", |v| {
        address_count(v) == 1000 && v["metadata"]["annotations"]["endpoints.kubernetes.io/over-capacity"].is_null()
    });
    // a deletion changes no pod's readiness and the service is old: no trigger time, as upstream
    assert!(ep["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"].is_null(), "{ep:#}");

    // one pod turns unready: updated in place in its slice
    let mut sick = pack_pod(7, true);
    sick["status"]["conditions"][0]["status"] = json!("False");
    api.ok_in("1.33", &["replace", "--subresource=status", "-f", "-"], Some(&sick.to_string()));
    let slices =
        api_until(&api, of_pack, "pack-0007 not ready", |v| endpoint_of(&endpoints_of(v), "pack-0007").is_some_and(|e| e["conditions"]["ready"] == false));
    assert_eq!(sizes(&slices), vec![100; 10]);
    api_until(&api, &["get", "endpoints", "pack"], "pack-0007 in notReadyAddresses", |v| subset_ips(v).1.contains(&pack_ip(7)));

    // every pod goes: one empty slice remains
    api.ok("1.33", &["delete", "pods", "-l", "app=pack", "--grace-period=0", "--force"]);
    api_until(&api, of_pack, "one empty slice", |v| sizes(v) == vec![0]);
    api_until(&api, &["get", "endpoints", "pack"], "no subsets", |v| v["metadata"]["name"] == "pack" && v["subsets"].is_null());

    // the service goes, and with it its slice and Endpoints
    api.ok("1.33", &["delete", "service", "pack"]);
    api_until(&api, of_pack, "the slice gone", |v| v["items"].as_array().is_some_and(|i| i.is_empty()));
    api_until(&api, &["get", "endpoints", "--field-selector", "metadata.name=pack"], "the Endpoints gone", |v| {
        v["items"].as_array().is_some_and(|i| i.is_empty())
    });
}
