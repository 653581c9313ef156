//! Cluster DNS, node-local in `berth server`'s agent, driven by the real kubectl: the
//! `kube-dns` Service holds the address; queries from the test process to the bound address
//! and from busybox pods get A/SRV/PTR answers for ClusterIP Services, headless Services' ready
//! endpoints (a pod failing readiness drops out), StatefulSet pods' hostnames, ExternalName
//! CNAMEs, NXDOMAIN with the zone's SOA for what is missing, truncation and TCP for big answers;
//! names outside the cluster go to a fake upstream resolver the test runs on a loopback address
//! (through `--resolv-conf`), once: the second answer comes from the cache. The address's link
//! goes with a clean stop and is taken over after a crash. The documentation's
//! myapp-pod waits in Init:0/2 until its two Services exist. Each server gets a cluster DNS
//! address and service CIDR of its own, so tests never bind the same address.
use berth_integration::dns::hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use berth_integration::dns::hickory_proto::rr::{Name, RecordType};
use berth_integration::dns::{self, rdata, FakeUpstream};
use berth_integration::kubelet::busybox;
use berth_integration::{Daemon, TempDir};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

/// A server with node-local DNS on a unique address, forwarding to a fake upstream.
struct Cluster {
    d: Daemon,
    dns: SocketAddr,
    cidr: String,
    upstream: FakeUpstream,
    _dir: TempDir,
}

async fn cluster() -> Cluster {
    let dir = TempDir::new("dns");
    let table = BTreeMap::from([("www.example.com.".to_string(), vec!["192.0.2.80".parse().unwrap()])]);
    let upstream = FakeUpstream::start(dns::unique_loopback(), table).await;
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(&resolv, format!("nameserver {}\nsearch example.internal\n", upstream.addr.ip())).unwrap();
    let (ip, cidr) = dns::unique_cluster_dns();
    let (ip_s, resolv_s) = (ip.to_string(), resolv.display().to_string());
    let d = Daemon::start_server("", &["--cluster-dns", &ip_s, "--service-cidr", &cidr, "--resolv-conf", &resolv_s]).await;
    Cluster { d, dns: SocketAddr::new(ip, 53), cidr, upstream, _dir: dir }
}

/// Polls a query until `check` holds on the answer.
async fn until(server: SocketAddr, name: &str, qtype: RecordType, what: &str, check: impl Fn(&Message) -> bool) -> Message {
    let deadline = Instant::now() + LIMIT;
    loop {
        let last = match dns::query(server, name, qtype, false, true).await {
            Ok(m) if check(&m) => return m,
            Ok(m) => format!("{m:?}"),
            Err(e) => e.to_string(),
        };
        assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}; last answer: {last}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Message {
    dns::query(server, name, qtype, false, true).await.unwrap_or_else(|e| panic!("{name} {qtype}: {e}"))
}

fn link_exists(ip: &IpAddr) -> bool {
    let name = berth::dns::link::link_name(ip);
    std::process::Command::new("ip").args(["link", "show", &name]).output().map(|o| o.status.success()).unwrap_or(false)
}

fn authority_soa(m: &Message) -> bool {
    m.authorities.iter().any(|r| r.record_type() == RecordType::SOA && r.name.to_ascii() == "cluster.local.")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_dns_answers_services_endpoints_srv_ptr_and_forwards_the_rest_through_a_cache() {
    let mut c = cluster().await;
    let (d, dns) = (&c.d, c.dns);
    let kubernetes_ip = c.cidr.replace(".0/24", ".1");
    let a = until(dns, "kubernetes.default.svc.cluster.local.", RecordType::A, "the kubernetes Service", |m| !m.answers.is_empty()).await;
    assert_eq!(rdata(&a, RecordType::A), [kubernetes_ip.as_str()]);
    assert!(a.metadata.authoritative && a.answers[0].ttl == 5, "authoritative, TTL 5: {a:?}");
    assert!(link_exists(&dns.ip()), "the address is on a link of its own");
    // kube-dns holds the address, as on k3s
    let svc = d.kubectl_json(&["get", "service", "kube-dns", "-n", "kube-system"]);
    assert_eq!(svc["spec"]["clusterIP"], dns.ip().to_string());
    assert_eq!(svc["metadata"]["labels"]["k8s-app"], "kube-dns");
    let table = d.kubectl_ok(&["get", "svc", "-n", "kube-system"]);
    assert!(table.contains("kube-dns") && table.contains("53/UDP,53/TCP"), "{table}");

    // Services with endpoints of their own (no selector), an ExternalName
    let objects = json!({"apiVersion": "v1", "kind": "List", "items": [
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
         "spec": {"ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53, "protocol": "UDP"}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"}, "spec": {"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "big"}, "spec": {"clusterIP": "None", "ports": [{"port": 80}]}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "www.example.com"}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "db-1", "labels": {"kubernetes.io/service-name": "db"}},
         "addressType": "IPv4", "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}],
         "endpoints": [{"addresses": ["10.99.0.1"], "hostname": "db-0", "conditions": {"ready": true}},
                       {"addresses": ["10.99.0.2"], "conditions": {"ready": true}},
                       {"addresses": ["10.99.0.3"], "conditions": {"ready": false}}]},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "big-1", "labels": {"kubernetes.io/service-name": "big"}},
         "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}],
         "endpoints": (1..=100).map(|i| json!({"addresses": [format!("10.98.0.{i}")]})).collect::<Vec<_>>()}
    ]});
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&objects.to_string()));
    let web_ip = d.kubectl_json(&["get", "service", "web"])["spec"]["clusterIP"].as_str().unwrap().to_string();

    // ClusterIP: A, NODATA for AAAA, SRV per named port with the address as additional
    let a = until(dns, "web.default.svc.cluster.local.", RecordType::A, "web", |m| !m.answers.is_empty()).await;
    assert_eq!(rdata(&a, RecordType::A), [web_ip.as_str()]);
    let aaaa = ask(dns, "web.default.svc.cluster.local.", RecordType::AAAA).await;
    assert!(aaaa.metadata.response_code == ResponseCode::NoError && aaaa.answers.is_empty() && authority_soa(&aaaa), "NODATA: {aaaa:?}");
    let srv = ask(dns, "_http._tcp.web.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(rdata(&srv, RecordType::SRV), ["0 100 80 web.default.svc.cluster.local."]);
    assert_eq!(srv.additionals.iter().map(|r| r.data.to_string()).collect::<Vec<_>>(), [web_ip.as_str()]);
    let srv = ask(dns, "_dns._udp.web.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(rdata(&srv, RecordType::SRV), ["0 100 53 web.default.svc.cluster.local."]);
    assert_eq!(ask(dns, "_dns._tcp.web.default.svc.cluster.local.", RecordType::SRV).await.metadata.response_code, ResponseCode::NXDomain);

    // headless: the ready endpoints, hostnames, SRV to each endpoint
    let a = until(dns, "db.default.svc.cluster.local.", RecordType::A, "db", |m| m.answers.len() == 2).await;
    assert_eq!(rdata(&a, RecordType::A), ["10.99.0.1", "10.99.0.2"], "not-ready endpoints are left out");
    assert_eq!(rdata(&ask(dns, "db-0.db.default.svc.cluster.local.", RecordType::A).await, RecordType::A), ["10.99.0.1"]);
    assert_eq!(rdata(&ask(dns, "10-99-0-2.db.default.svc.cluster.local.", RecordType::A).await, RecordType::A), ["10.99.0.2"]);
    let srv = ask(dns, "_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV).await;
    assert_eq!(rdata(&srv, RecordType::SRV), ["0 50 5432 10-99-0-2.db.default.svc.cluster.local.", "0 50 5432 db-0.db.default.svc.cluster.local."]);
    assert_eq!(srv.additionals.len(), 2);

    // PTR for the cluster IP and for an endpoint
    let octets: Vec<&str> = web_ip.split('.').collect();
    let reverse = format!("{}.{}.{}.{}.in-addr.arpa.", octets[3], octets[2], octets[1], octets[0]);
    assert_eq!(rdata(&ask(dns, &reverse, RecordType::PTR).await, RecordType::PTR), ["web.default.svc.cluster.local."]);
    assert_eq!(rdata(&ask(dns, "1.0.99.10.in-addr.arpa.", RecordType::PTR).await, RecordType::PTR), ["db-0.db.default.svc.cluster.local."]);

    // a missing name: NXDOMAIN with the zone's SOA; pods' names as CoreDNS's `pods insecure`
    let nx = ask(dns, "missing.default.svc.cluster.local.", RecordType::A).await;
    assert!(nx.metadata.response_code == ResponseCode::NXDomain && authority_soa(&nx), "{nx:?}");
    assert_eq!(rdata(&ask(dns, "10-42-0-7.default.pod.cluster.local.", RecordType::A).await, RecordType::A), ["10.42.0.7"]);

    // an endpoint turning not ready leaves the answer at once
    let slice = d.kubectl_json(&["get", "endpointslice", "db-1"]);
    let mut changed = slice.clone();
    changed["endpoints"][1]["conditions"]["ready"] = json!(false);
    let t0 = Instant::now();
    d.kubectl_ok_in(&["replace", "-f", "-"], Some(&changed.to_string()));
    until(dns, "db.default.svc.cluster.local.", RecordType::A, "db without 10.99.0.2", |m| m.answers.len() == 1).await;
    println!("an endpoint change reached the answers {:?} after kubectl replace began", t0.elapsed());

    // names outside the cluster go upstream once, then come from the cache (negative too)
    let up = &c.upstream;
    let fwd = ask(dns, "www.example.com.", RecordType::A).await;
    assert_eq!(rdata(&fwd, RecordType::A), ["192.0.2.80"]);
    assert!(!fwd.metadata.authoritative && fwd.metadata.recursion_available);
    let again = ask(dns, "WWW.example.com.", RecordType::A).await;
    assert_eq!(rdata(&again, RecordType::A), ["192.0.2.80"]);
    assert_eq!(up.asked("www.example.com."), 1, "the second answer came from the cache");
    assert_eq!(ask(dns, "nothing.example.test.", RecordType::A).await.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(ask(dns, "nothing.example.test.", RecordType::A).await.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(up.asked("nothing.example.test."), 1, "NXDOMAIN is cached for its SOA's TTL");
    // an ExternalName is a CNAME, its target resolved upstream
    let ext = ask(dns, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(rdata(&ext, RecordType::CNAME), ["www.example.com."]);
    assert_eq!(rdata(&ext, RecordType::A), ["192.0.2.80"]);
    // reverse names the cluster does not know go upstream too
    ask(dns, "9.9.99.10.in-addr.arpa.", RecordType::PTR).await;
    assert_eq!(up.asked("9.9.99.10.in-addr.arpa."), 1);
    assert_eq!(up.asked("missing.default.svc.cluster.local."), 0, "the cluster zone never goes upstream");

    // a big answer: truncated over UDP without EDNS, whole over TCP
    let udp = dns::query(dns, "big.default.svc.cluster.local.", RecordType::A, false, false).await.unwrap();
    assert!(udp.metadata.truncation && udp.answers.len() < 100, "TC over UDP: {} answers", udp.answers.len());
    let tcp = dns::query(dns, "big.default.svc.cluster.local.", RecordType::A, true, false).await.unwrap();
    assert!(!tcp.metadata.truncation && tcp.answers.len() == 100, "{} answers over TCP", tcp.answers.len());

    // bad queries get error codes, not silence
    let mut two = Message::new(7, MessageType::Query, OpCode::Query);
    two.add_query(Query::query(Name::from_ascii("a.default.svc.cluster.local.").unwrap(), RecordType::A));
    two.add_query(Query::query(Name::from_ascii("b.default.svc.cluster.local.").unwrap(), RecordType::A));
    assert_eq!(dns::exchange(dns, &two.to_vec().unwrap(), false).await.unwrap().metadata.response_code, ResponseCode::FormErr);
    let mut status = Message::new(8, MessageType::Query, OpCode::Status);
    status.add_query(Query::query(Name::from_ascii("cluster.local.").unwrap(), RecordType::SOA));
    assert_eq!(dns::exchange(dns, &status.to_vec().unwrap(), false).await.unwrap().metadata.response_code, ResponseCode::NotImp);
    let axfr = ask(dns, "cluster.local.", RecordType::AXFR).await;
    assert_eq!(axfr.metadata.response_code, ResponseCode::Refused);
    assert_eq!(rdata(&ask(dns, "dns-version.cluster.local.", RecordType::TXT).await, RecordType::TXT), ["1.1.0"]);

    // a deleted Service is gone from the answers
    d.kubectl_ok(&["delete", "service", "web"]);
    until(dns, "web.default.svc.cluster.local.", RecordType::A, "web gone", |m| m.metadata.response_code == ResponseCode::NXDomain).await;

    // a crash leaves the link behind; the next start takes it over and serves again
    c.d.restart_after_kill9().await;
    let a = until(dns, "kubernetes.default.svc.cluster.local.", RecordType::A, "answers after a crash", |m| !m.answers.is_empty()).await;
    assert_eq!(rdata(&a, RecordType::A), [kubernetes_ip]);
    let links = std::process::Command::new("ip").args(["-br", "addr", "show", &berth::dns::link::link_name(&dns.ip())]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&links.stdout).matches(&dns.ip().to_string()).count(), 1, "one link, one address: {links:?}");

    // a clean stop takes the link and its address away
    c.d.stop();
    assert!(!link_exists(&dns.ip()), "the link is removed on stop");
}

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).unwrap_or(&Value::Null)
}

fn items(v: &Value) -> Vec<Value> {
    v["items"].as_array().cloned().unwrap_or_default()
}

fn workloads() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: web
        image: {image}
        command: ["sh", "-c", "touch /tmp/ready; exec sleep 3600"]
        readinessProbe:
          exec: {{command: ["cat", "/tmp/ready"]}}
          periodSeconds: 1
          failureThreshold: 1
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{name: http, port: 80}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db}}
spec:
  clusterIP: None
  selector: {{app: db}}
  ports: [{{name: pg, port: 5432}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: db}}
spec:
  serviceName: db
  replicas: 1
  selector: {{matchLabels: {{app: db}}}}
  template:
    metadata: {{labels: {{app: db}}}}
    spec:
      terminationGracePeriodSeconds: 0
      containers:
      - name: db
        image: {image}
        command: ["sleep", "3600"]
---
apiVersion: v1
kind: Pod
metadata: {{name: client}}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: client
    image: {image}
    command: ["sleep", "3600"]
"#,
        image = busybox()
    )
}

/// The documentation's myapp-pod (Init Containers), on the test image.
fn myapp_pod() -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: myapp-pod
  labels:
    app.kubernetes.io/name: MyApp
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: myapp-container
    image: {image}
    command: ['sh', '-c', 'echo The app is running! && sleep 3600']
  initContainers:
  - name: init-myservice
    image: {image}
    command: ['sh', '-c', "until nslookup myservice.$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace).svc.cluster.local; do echo waiting for myservice; sleep 2; done"]
  - name: init-mydb
    image: {image}
    command: ['sh', '-c', "until nslookup mydb.$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace).svc.cluster.local; do echo waiting for mydb; sleep 2; done"]
"#,
        image = busybox()
    )
}

const MYAPP_SERVICES: &str = r#"apiVersion: v1
kind: Service
metadata:
  name: myservice
spec:
  ports:
  - protocol: TCP
    port: 80
    targetPort: 9376
---
apiVersion: v1
kind: Service
metadata:
  name: mydb
spec:
  ports:
  - protocol: TCP
    port: 80
    targetPort: 9377
"#;

/// The Ready pods of `app` by IP.
fn ready_ips(d: &Daemon, app: &str) -> BTreeSet<String> {
    items(&d.kubectl_json(&["get", "pods", "-l", &format!("app={app}")]))
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && condition(p, "Ready")["status"] == "True")
        .filter_map(|p| p["status"]["podIP"].as_str().map(String::from))
        .collect()
}

fn pod_status_column(d: &Daemon, pod: &str) -> String {
    let out = d.kubectl_ok(&["get", "pod", pod, "--no-headers"]);
    out.split_whitespace().nth(2).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_resolve_headless_services_statefulset_pods_and_wait_in_init_for_services_to_resolve() {
    let c = cluster().await;
    let (d, dns) = (&c.d, c.dns);
    d.kubectl_until(&["get", "node", "berth-it"], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready")["status"] == "True");
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&workloads()));
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&myapp_pod()));

    // a headless Service answers its ready pods
    let deadline = Instant::now() + LIMIT;
    while ready_ips(d, "web").len() < 3 {
        assert!(Instant::now() < deadline, "3 ready web pods:\n{}", d.kubectl_ok(&["get", "pods", "-o", "wide"]));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ips = ready_ips(d, "web");
    let m = until(dns, "web.default.svc.cluster.local.", RecordType::A, "3 web pods", |m| rdata(m, RecordType::A).len() == 3).await;
    assert_eq!(rdata(&m, RecordType::A).into_iter().collect::<BTreeSet<_>>(), ips);

    // one fails its readiness probe: it leaves the answer
    let pods = items(&d.kubectl_json(&["get", "pods", "-l", "app=web"]));
    let victim = pods.iter().find(|p| p["status"]["podIP"] == json!(ips.iter().next().unwrap())).unwrap();
    let victim_name = victim["metadata"]["name"].as_str().unwrap();
    let t0 = Instant::now();
    d.kubectl_ok(&["exec", victim_name, "--", "rm", "/tmp/ready"]);
    let m = until(dns, "web.default.svc.cluster.local.", RecordType::A, "2 web pods", |m| rdata(m, RecordType::A).len() == 2).await;
    println!("a pod failing readiness left the DNS answer {:?} after its ready file was removed", t0.elapsed());
    assert!(!rdata(&m, RecordType::A).contains(ips.iter().next().unwrap()));

    // the StatefulSet's pod by its hostname under the governing Service
    let db = d.kubectl_until(&["get", "pod", "db-0"], LIMIT, "db-0 Ready", |p| condition(p, "Ready")["status"] == "True");
    let db_ip = db["status"]["podIP"].as_str().unwrap().to_string();
    let m = until(dns, "db-0.db.default.svc.cluster.local.", RecordType::A, "db-0", |m| !m.answers.is_empty()).await;
    assert_eq!(rdata(&m, RecordType::A), [db_ip.as_str()]);

    // from a pod: its resolv.conf as the kubelet writes it, and busybox's nslookup
    d.kubectl_until(&["get", "pod", "client"], LIMIT, "client Running", |p| p["status"]["phase"] == "Running");
    let resolv = d.kubectl_ok(&["exec", "client", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains(&format!("nameserver {}", dns.ip())), "{resolv}");
    assert!(resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local example.internal"), "{resolv}");
    assert!(resolv.contains("options ndots:5"), "{resolv}");
    let out = d.kubectl_ok(&["exec", "client", "--", "nslookup", "db-0.db.default.svc.cluster.local"]);
    assert!(out.contains(&db_ip), "{out}");
    let out = d.kubectl_ok(&["exec", "client", "--", "nslookup", "-type=srv", "_pg._tcp.db.default.svc.cluster.local"]);
    assert!(out.contains("5432") && out.contains("db-0.db.default.svc.cluster.local"), "{out}");
    let out = d.kubectl_ok(&["exec", "client", "--", "nslookup", "www.example.com"]);
    assert!(out.contains("192.0.2.80"), "{out}");
    let missing = d.kubectl(&["exec", "client", "--", "nslookup", "nope.default.svc.cluster.local"]);
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stdout).contains("NXDOMAIN"), "{missing:?}");

    // myapp-pod waits in Init:0/2 (its first init container retrying) until the Services exist
    d.kubectl_until(&["get", "pod", "myapp-pod"], LIMIT, "the first init container running", |p| {
        p["status"]["initContainerStatuses"][0]["state"]["running"].is_object()
    });
    let deadline = Instant::now() + LIMIT;
    loop {
        let log = d.kubectl(&["logs", "myapp-pod", "-c", "init-myservice"]);
        if String::from_utf8_lossy(&log.stdout).matches("waiting for myservice").count() >= 2 {
            break;
        }
        assert!(Instant::now() < deadline, "init-myservice did not retry: {log:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(pod_status_column(d, "myapp-pod"), "Init:0/2", "{:#}", d.kubectl_json(&["get", "pod", "myapp-pod"])["status"]);
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(MYAPP_SERVICES));
    d.kubectl_until(&["get", "pod", "myapp-pod"], LIMIT, "myapp-pod Running", |p| p["status"]["phase"] == "Running");
    assert_eq!(pod_status_column(d, "myapp-pod"), "Running");
    let log = d.kubectl_ok(&["logs", "myapp-pod", "-c", "myapp-container"]);
    assert!(log.contains("The app is running!"), "{log}");
}
