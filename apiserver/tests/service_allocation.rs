//! Service addresses through the in-process door: cluster IPs from the service CIDR as
//! IPAddress objects (explicit ones honoured or refused in upstream's words, released on delete
//! and on a change to ExternalName), node ports from the port range (conflicts refused, TCP and
//! UDP of one port sharing one, released on a change to ClusterIP), the health check node port,
//! the `kubernetes` Service and its endpoints, concurrent creates on two servers over one store
//! never sharing an address, a restarted server keeping the allocations, a small range filling up.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, StatusCode};
use berth_apiserver::services::ServiceNetwork;
use berth_apiserver::{in_process, Api, ApiConfig, User};
use berth_store::{EmbeddedConfig, EmbeddedStore, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

async fn call(router: &axum::Router, method: &str, uri: &str, body: Value) -> (StatusCode, Value) {
    let body = if body.is_null() { Body::empty() } else { Body::from(body.to_string()) };
    let content_type = if method == "PATCH" { "application/merge-patch+json" } else { "application/json" };
    let req = Request::builder().method(method).uri(uri).header("content-type", content_type).body(body).expect("request");
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 22).await.expect("body");
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

async fn until(router: &axum::Router, uri: &str, done: impl Fn(StatusCode, &Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call(router, "GET", uri, Value::Null).await;
        if done(status, &body) {
            return body;
        }
        assert!(Instant::now() < deadline, "{uri} never got there: {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const SVCS: &str = "/api/v1/namespaces/default/services";
const IPS: &str = "/apis/networking.k8s.io/v1/ipaddresses";

fn svc(name: &str, spec: Value) -> Value {
    let mut spec = spec;
    if spec.get("ports").is_none() {
        spec["ports"] = json!([{"port": 80}]);
    }
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec})
}

fn config(cidr: &str, endpoint: &str) -> ApiConfig {
    ApiConfig {
        service_network: ServiceNetwork::parse(cidr, "30000-32767").expect("network"),
        endpoint: Some((endpoint.parse().expect("ip"), 6443)),
        ..Default::default()
    }
}

async fn start(dir: &std::path::Path) -> Arc<dyn Store> {
    Arc::new(EmbeddedStore::open(EmbeddedConfig::new(dir)).await.expect("store"))
}

fn admin(api: &Arc<Api>) -> axum::Router {
    in_process(api.clone(), User::new("admin", &["system:masters"]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_ips_come_from_the_service_cidr_and_are_given_back() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = start(dir.path()).await;
    let api = Api::start(store.clone(), config("10.43.0.0/16", "127.0.0.1")).await.expect("api");
    let r = admin(&api);

    // the kubernetes Service, its IPAddress, the default ServiceCIDR, the endpoints
    let (status, k) = call(&r, "GET", &format!("{SVCS}/kubernetes"), Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(k["spec"]["clusterIP"], "10.43.0.1");
    assert_eq!(k["spec"]["ports"], json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]));
    assert_eq!(k["metadata"]["labels"], json!({"component": "apiserver", "provider": "kubernetes"}));
    let (_, ip) = call(&r, "GET", &format!("{IPS}/10.43.0.1"), Value::Null).await;
    assert_eq!(ip["spec"]["parentRef"], json!({"group": "", "resource": "services", "namespace": "default", "name": "kubernetes"}), "{ip}");
    assert_eq!(ip["metadata"]["labels"]["ipaddress.kubernetes.io/managed-by"], "ipallocator.k8s.io");
    let cidr = until(&r, "/apis/networking.k8s.io/v1/servicecidrs/kubernetes", |s, c| {
        s == StatusCode::OK && c["status"]["conditions"].as_array().is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    })
    .await;
    assert_eq!(cidr["spec"]["cidrs"], json!(["10.43.0.0/16"]));
    let ep = until(&r, "/api/v1/namespaces/default/endpoints/kubernetes", |s, _| s == StatusCode::OK).await;
    assert_eq!(ep["subsets"], json!([{"addresses": [{"ip": "127.0.0.1"}], "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}]}]));
    let slice = until(&r, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes", |s, _| s == StatusCode::OK).await;
    assert_eq!(slice["endpoints"][0]["addresses"], json!(["127.0.0.1"]));
    assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], "kubernetes");

    // automatic: inside the range, single-stack IPv4, an IPAddress naming the Service
    let (status, a) = call(&r, "POST", SVCS, svc("auto", json!({}))).await;
    assert_eq!(status, StatusCode::CREATED, "{a}");
    let ip: IpAddr = a["spec"]["clusterIP"].as_str().expect("ip").parse().expect("ip");
    assert!(ip.to_string().starts_with("10.43."), "{ip}");
    assert_eq!(a["spec"]["clusterIPs"], json!([ip.to_string()]));
    assert_eq!((a["spec"]["ipFamilyPolicy"].as_str(), a["spec"]["ipFamilies"].clone()), (Some("SingleStack"), json!(["IPv4"])));
    let (_, obj) = call(&r, "GET", &format!("{IPS}/{ip}"), Value::Null).await;
    assert_eq!(obj["spec"]["parentRef"]["name"], "auto");

    // explicit: honoured once, then refused; out of range refused
    let (status, b) = call(&r, "POST", SVCS, svc("b", json!({"clusterIP": "10.43.0.5"}))).await;
    assert_eq!((status, b["spec"]["clusterIP"].as_str()), (StatusCode::CREATED, Some("10.43.0.5")), "{b}");
    let (status, err) = call(&r, "POST", SVCS, svc("c", json!({"clusterIP": "10.43.0.5"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        err["message"],
        r#"Service "c" is invalid: spec.clusterIPs: Invalid value: []string{"10.43.0.5"}: failed to allocate IP 10.43.0.5: provided IP is already allocated"#
    );
    let (status, err) = call(&r, "POST", SVCS, svc("c", json!({"clusterIP": "10.96.0.5"}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        err["message"],
        r#"Service "c" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.0.5"}: failed to allocate IP 10.96.0.5: the provided network does not match the current range"#
    );
    // deleted: the address can be taken again
    let (status, _) = call(&r, "DELETE", &format!("{SVCS}/b"), Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&r, "GET", &format!("{IPS}/10.43.0.5"), Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, c) = call(&r, "POST", SVCS, svc("c", json!({"clusterIP": "10.43.0.5"}))).await;
    assert_eq!(status, StatusCode::CREATED, "{c}");

    // a change to ExternalName gives the address back
    let (status, _) = call(&r, "PATCH", &format!("{SVCS}/c"), json!({"spec": {"type": "ExternalName", "externalName": "example.com"}})).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&r, "GET", &format!("{IPS}/10.43.0.5"), Value::Null).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // headless Services take no address
    let (status, h) = call(&r, "POST", SVCS, svc("headless", json!({"clusterIP": "None", "selector": {"app": "x"}}))).await;
    assert_eq!((status, h["spec"]["clusterIPs"].clone()), (StatusCode::CREATED, json!(["None"])), "{h}");

    // a restarted server keeps the allocations: the same explicit address is still refused
    drop(r);
    drop(api);
    let api = Api::start(store.clone(), config("10.43.0.0/16", "127.0.0.1")).await.expect("api again");
    let r = admin(&api);
    let (status, err) = call(&r, "POST", SVCS, svc("d", json!({"clusterIP": ip.to_string()}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{err}");
    assert!(err["message"].as_str().unwrap_or("").ends_with("provided IP is already allocated"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_ports_are_allocated_shared_and_released() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = start(dir.path()).await;
    let api = Api::start(store.clone(), config("10.43.0.0/16", "127.0.0.1")).await.expect("api");
    let r = admin(&api);

    let (status, a) = call(&r, "POST", SVCS, svc("a", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))).await;
    assert_eq!((status, a["spec"]["ports"][0]["nodePort"].as_i64()), (StatusCode::CREATED, Some(30080)), "{a}");
    let (status, err) = call(&r, "POST", SVCS, svc("b", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(err["message"], r#"Service "b" is invalid: spec.ports[0].nodePort: Invalid value: 30080: provided port is already allocated"#);
    let (_, err) = call(&r, "POST", SVCS, svc("b", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 8080}]}))).await;
    assert_eq!(
        err["message"],
        r#"Service "b" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"#
    );

    // TCP and UDP of one port number share one node port
    let dns = json!({"type": "NodePort", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]});
    let (status, d) = call(&r, "POST", SVCS, svc("dns", dns)).await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    let (p0, p1) = (d["spec"]["ports"][0]["nodePort"].as_i64(), d["spec"]["ports"][1]["nodePort"].as_i64());
    assert!(p0.is_some() && p0 == p1, "{d}");

    // LoadBalancer: a health check port with externalTrafficPolicy Local; none without node ports
    let lb = json!({"type": "LoadBalancer", "externalTrafficPolicy": "Local"});
    let (_, l) = call(&r, "POST", SVCS, svc("lb", lb)).await;
    assert!(l["spec"]["healthCheckNodePort"].as_i64().is_some_and(|p| (30000..=32767).contains(&p)), "{l}");
    assert!(l["spec"]["ports"][0]["nodePort"].as_i64().is_some(), "{l}");
    let (_, l2) = call(&r, "POST", SVCS, svc("lb2", json!({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": false}))).await;
    assert!(l2["spec"]["ports"][0].get("nodePort").is_none(), "{l2}");

    // a change to ClusterIP and a delete give ports back
    let (status, c) = call(&r, "PATCH", &format!("{SVCS}/a"), json!({"spec": {"type": "ClusterIP"}})).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert!(c["spec"]["ports"][0].get("nodePort").is_none(), "{c}");
    let (status, b) = call(&r, "POST", SVCS, svc("b", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{b}");
    call(&r, "DELETE", &format!("{SVCS}/b"), Value::Null).await;
    let (status, e) = call(&r, "POST", SVCS, svc("e", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))).await;
    assert_eq!(status, StatusCode::CREATED, "{e}");

    // a restarted server keeps the port record
    drop(r);
    drop(api);
    let api = Api::start(store.clone(), config("10.43.0.0/16", "127.0.0.1")).await.expect("api again");
    let r = admin(&api);
    let (status, _) = call(&r, "POST", SVCS, svc("f", json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]}))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_servers_on_one_store_never_share_an_address_and_both_are_endpoints() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = start(dir.path()).await;
    let one = Api::start(store.clone(), config("10.43.0.0/16", "127.0.0.1")).await.expect("api one");
    let two = Api::start(store.clone(), config("10.43.0.0/16", "127.0.0.2")).await.expect("api two");
    let (r1, r2) = (admin(&one), admin(&two));
    let mut tasks = vec![];
    for i in 0..50 {
        let r = if i % 2 == 0 { r1.clone() } else { r2.clone() };
        let spec = json!({"type": "NodePort"});
        tasks.push(tokio::spawn(async move { call(&r, "POST", SVCS, svc(&format!("s{i}"), spec)).await }));
    }
    let (mut ips, mut ports) = (BTreeSet::new(), BTreeSet::new());
    for t in tasks {
        let (status, s) = t.await.expect("task");
        assert_eq!(status, StatusCode::CREATED, "{s}");
        ips.insert(s["spec"]["clusterIP"].as_str().expect("ip").to_string());
        ports.insert(s["spec"]["ports"][0]["nodePort"].as_i64().expect("port"));
    }
    assert_eq!((ips.len(), ports.len()), (50, 50));
    let (_, list) = call(&r1, "GET", IPS, Value::Null).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(51), "the 50 and the kubernetes Service's");
    until(&r1, "/api/v1/namespaces/default/endpoints/kubernetes", |_, ep| ep["subsets"][0]["addresses"] == json!([{"ip": "127.0.0.1"}, {"ip": "127.0.0.2"}]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_range_fills_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = start(dir.path()).await;
    let api = Api::start(store.clone(), config("10.44.0.0/29", "127.0.0.1")).await.expect("api");
    let r = admin(&api);
    // six addresses: the kubernetes Service's and five more
    for i in 0..5 {
        let (status, s) = call(&r, "POST", SVCS, svc(&format!("s{i}"), json!({}))).await;
        assert_eq!(status, StatusCode::CREATED, "{s}");
    }
    let (status, err) = call(&r, "POST", SVCS, svc("full", json!({}))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(err["message"], "Internal error occurred: failed to allocate a serviceIP: range is full");
}
