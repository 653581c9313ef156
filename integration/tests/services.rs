//! The service proxy of the node agent inside `berth server`, against real pods, real nftables
//! and real kubectl: each test's server has a table of its own (`--proxy-table`), a service range
//! and a pod network of its own (a bridge whose gateway is the node's address), so tests running
//! at once never program the same addresses. Backends are busybox httpd pods that answer with
//! their host name (and, at /cgi-bin/ip, the client address they saw).
//!
//! - A NodePort Service over 3 pods: another pod reaches all 3 through the cluster IP, the host
//!   through the node port on the node's address; a pod failing readiness drops out; a backend
//!   reaches itself through its Service (hairpin); a new port is programmed; scaled to 0 the
//!   cluster IP and the node port refuse connections; deleting the Service removes its chains.
//! - Session affinity ClientIP; externalTrafficPolicy Local seen from a client in a network
//!   namespace of its own (only the local endpoint, the client's address kept); a LoadBalancer
//!   Service gets the node's address from servicelb and answers on it.
//! - A restarted server converges its table (a leftover chain goes) while a connection opened
//!   before the restart keeps working.
//! - A pod reaches the apiserver as in-cluster clients do: kubectl inside it, with no kubeconfig,
//!   finds it through `KUBERNETES_SERVICE_HOST`/`_PORT` (the `kubernetes` Service's cluster IP)
//!   and authenticates with its mounted ServiceAccount token: listing pods is forbidden until a
//!   RoleBinding grants it, and again after the binding goes.
//! - A node port answers on another node too: a `berth agent` in a network namespace of its own
//!   (a test host on a bridge of this test's) forwards to the pod on the server's node.
use berth_integration::kubelet::busybox;
use berth_integration::{tail, Daemon, LinkGuard};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Deletes the test's nftables tables (both families), also when the test fails.
struct TableGuard(String);

impl Drop for TableGuard {
    fn drop(&mut self) {
        for family in ["ip", "ip6"] {
            let _ = Command::new("nft").args(["delete", "table", family, &self.0]).output();
        }
    }
}

/// A `berth server` whose node agent runs the proxy on a table, service range and pod network
/// of this test's own.
struct Cluster {
    d: Daemon,
    table: String,
    /// The pod bridge's gateway: the node's InternalIP.
    node_ip: String,
    service_prefix: String,
    _bridge: LinkGuard,
    _table: TableGuard,
}

impl Cluster {
    /// The server, with more flags (`@NODE_IP@` in them is the node's address).
    async fn start(extra: &[&str]) -> Cluster {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // 10.3-17.x pods, 10.20-39.x services: no other test's ranges
        let third = (pid / 20 % 200 + n) % 250;
        let pods = format!("10.{}.{third}", 3 + pid % 15);
        let service_prefix = format!("10.{}.{third}", 20 + pid % 20);
        let table = format!("berth-proxy-it-{pid}-{n}");
        let bridge = format!("bpx{}x{n}", pid % 100_000);
        let node_ip = format!("{pods}.1");
        let own = berth_integration::berth_bin().parent().expect("bin dir").display().to_string();
        let config =
            format!("[network]\nconf_dir = \"@DIR@/net.d\"\nbin_dirs = [\"{own}\"]\nbridge = \"{bridge}\"\nmasquerade = false\npod_cidr = \"{pods}.0/24\"\n");
        let service_cidr = format!("{service_prefix}.0/24");
        // the bridge with its gateway address first: the kubelet API listens on the node's address
        for args in
            [vec!["link", "add", &bridge, "type", "bridge"], vec!["addr", "add", &format!("{node_ip}/24"), "dev", &bridge], vec!["link", "set", &bridge, "up"]]
        {
            let out = Command::new("ip").args(&args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        let guards = (LinkGuard(bridge), TableGuard(table.clone()));
        let mut flags = vec!["--proxy-table", &table, "--service-cidr", &service_cidr, "--node-ip", &node_ip, "--kubelet-address", &node_ip];
        // `@NODE_IP@` in a flag: the node's address (known only here)
        let extra: Vec<String> = extra.iter().map(|f| f.replace("@NODE_IP@", &node_ip)).collect();
        flags.extend(extra.iter().map(String::as_str));
        let d = Daemon::start_server(&config, &flags).await;
        d.kubectl_until(&["get", "node", "berth-it"], LIMIT, "node Ready", |n| condition(n, "Ready") == "True");
        Cluster { d, table, node_ip, service_prefix, _bridge: guards.0, _table: guards.1 }
    }

    fn apply(&self, yaml: &str) {
        self.d.kubectl_ok_in(&["apply", "-f", "-"], Some(&yaml.replace("BUSYBOX", &busybox())));
    }

    fn pod_cidr(&self) -> String {
        format!("{}.0/24", self.node_ip.trim_end_matches(".1"))
    }

    /// `nft list table ip <table>`.
    fn rules(&self) -> String {
        let out = Command::new("nft").args(["list", "table", "ip", &self.table]).output().expect("nft");
        String::from_utf8_lossy(&out.stdout).to_string()
    }

    /// Polls the table until `check` holds on its listing.
    fn wait_rules(&self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let r = self.rules();
            if check(&r) {
                return r;
            }
            assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}; table:\n{r}\nserver log:\n{}", tail(&self.d.log(), 60));
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs `script` in `pod` (sh -c): its output.
    fn exec(&self, pod: &str, script: &str) -> String {
        let out = self.d.kubectl(&["exec", pod, "--", "sh", "-c", script]);
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
    }

    /// `count` requests from `pod` to `url` (each given 5 s): the answers, one per line.
    fn requests(&self, pod: &str, url: &str, count: usize) -> Vec<String> {
        let script = format!("for i in $(seq {count}); do timeout 5 wget -q -O - {url} || echo FAILED; done");
        self.exec(pod, &script).lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect()
    }

    fn service(&self, name: &str) -> Value {
        self.d.kubectl_json(&["get", "service", name])
    }

    /// The Ready pods of `app`, by name, with their IPs.
    fn ready_pods(&self, app: &str, count: usize) -> Vec<(String, String)> {
        let pods = self.d.kubectl_until(&["get", "pods", "-l", &format!("app={app}")], LIMIT, &format!("{count} ready {app} pods"), |v| {
            let items = v["items"].as_array().cloned().unwrap_or_default();
            items.len() == count && items.iter().all(|p| condition(p, "Ready") == "True" && p["metadata"]["deletionTimestamp"].is_null())
        });
        let mut out: Vec<(String, String)> = pods["items"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| (p["metadata"]["name"].as_str().unwrap_or_default().to_string(), p["status"]["podIP"].as_str().unwrap_or_default().to_string()))
            .collect();
        out.sort();
        out
    }

    fn client(&self) {
        self.apply(CLIENT);
        self.d.kubectl_until(&["get", "pod", "client"], LIMIT, "the client pod ready", |p| condition(p, "Ready") == "True");
    }
}

fn condition(obj: &Value, kind: &str) -> String {
    obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).and_then(|c| c["status"].as_str()).unwrap_or("").to_string()
}

/// `replicas` busybox httpd pods labelled app=`name` serving their host name on 8080 (port
/// `http`), Ready while /tmp/ready exists.
fn backends(name: &str, replicas: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: BUSYBOX
        ports: [{{name: http, containerPort: 8080}}]
        command:
        - sh
        - -c
        - |
          mkdir -p /www/cgi-bin
          hostname > /www/index.html
          printf '#!/bin/sh\necho Content-Type: text/plain\necho\necho $REMOTE_ADDR\n' > /www/cgi-bin/ip
          chmod +x /www/cgi-bin/ip
          touch /tmp/ready
          exec httpd -f -p 8080 -h /www
        readinessProbe:
          exec: {{command: ["cat", "/tmp/ready"]}}
          periodSeconds: 1
          failureThreshold: 1
"#
    )
}

const CLIENT: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: BUSYBOX
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#;

/// An HTTP/1.0 GET from this host: the body.
fn http_get(host: &str, port: u16, path: &str) -> std::io::Result<String> {
    let addr: SocketAddr = format!("{host}:{port}").parse().map_err(std::io::Error::other)?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    // httpd ends its own headers with CRLF, a CGI's with LF
    let body = out.split_once("\r\n\r\n").or_else(|| out.split_once("\n\n")).map(|(_, b)| b.trim().to_string());
    Ok(body.unwrap_or_default())
}

/// A client address as httpd's CGI reports it (`[::ffff:10.0.0.2]` on its dual-stack socket).
fn plain_ip(s: &str) -> String {
    s.trim_start_matches('[').trim_end_matches(']').trim_start_matches("::ffff:").to_string()
}

fn cluster_ip(svc: &Value) -> String {
    svc["spec"]["clusterIP"].as_str().unwrap_or_default().to_string()
}

fn node_port(svc: &Value, i: usize) -> u16 {
    svc["spec"]["ports"][i]["nodePort"].as_u64().unwrap_or_default() as u16
}

#[tokio::test(flavor = "multi_thread")]
async fn cluster_ip_and_node_port_balance_over_ready_pods_and_reject_without_endpoints() {
    let c = Cluster::start(&[]).await;
    c.apply(&backends("web", 3));
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n");
    c.client();
    let pods = c.ready_pods("web", 3);
    let names: BTreeSet<String> = pods.iter().map(|p| p.0.clone()).collect();
    let svc = c.service("web");
    let (ip, np) = (cluster_ip(&svc), node_port(&svc, 0));
    assert!(ip.starts_with(&c.service_prefix), "{ip}");
    let svc_chain = "svc-default/web/tcp/http";
    c.wait_rules("3 endpoints programmed", |r| r.contains(&format!("{ip} . tcp . 80 : goto {svc_chain}")) && r.contains("numgen random mod 3"));

    // from another pod through the cluster IP: all three answer
    let answers = c.requests("client", &format!("http://{ip}/"), 30);
    let seen: BTreeSet<String> = answers.iter().cloned().collect();
    assert_eq!(seen, names, "30 requests through {ip}: {answers:?}");

    // from the host through the node port on the node's address
    let rules = c.rules();
    assert!(rules.contains(&format!("tcp . {np} : goto ext-default/web/tcp/http")), "{rules}");
    assert!(rules.contains(&format!("elements = {{ {} }}", c.node_ip)), "node ports on the node's address: {rules}");
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let body = http_get(&c.node_ip, np, "/").unwrap_or_else(|e| panic!("node port {}:{np}: {e}\n{rules}", c.node_ip));
        seen.insert(body);
    }
    assert_eq!(seen, names, "through the node port");

    // a pod failing its readiness probe drops out
    let (sick, sick_ip) = pods[0].clone();
    c.exec(&sick, "rm /tmp/ready");
    c.wait_rules("the unready endpoint gone", |r| !r.contains(&format!("{sick_ip} . 8080")) && r.contains("numgen random mod 2"));
    let answers = c.requests("client", &format!("http://{ip}/"), 20);
    assert!(!answers.contains(&sick) && !answers.iter().any(|a| a == "FAILED"), "{answers:?}");
    assert_eq!(answers.iter().collect::<BTreeSet<_>>().len(), 2, "{answers:?}");
    c.exec(&sick, "touch /tmp/ready");
    c.wait_rules("back with 3 endpoints", |r| r.contains("numgen random mod 3"));

    // hairpin: a backend reaching its own Service gets answers, its own among them
    let (me, _) = pods[1].clone();
    let answers = c.requests(&me, &format!("http://{ip}/"), 30);
    assert!(answers.contains(&me), "the backend never reached itself: {answers:?}");
    assert!(!answers.iter().any(|a| a == "FAILED"), "{answers:?}");

    // a new port is programmed
    c.d.kubectl_ok(&[
        "patch",
        "service",
        "web",
        "--type=json",
        "-p",
        r#"[{"op": "add", "path": "/spec/ports/-", "value": {"name": "alt", "port": 8081, "targetPort": "http"}}]"#,
    ]);
    c.wait_rules("the new port", |r| r.contains(&format!("{ip} . tcp . 8081 : goto svc-default/web/tcp/alt")));
    let answers = c.requests("client", &format!("http://{ip}:8081/"), 3);
    assert!(answers.iter().all(|a| names.contains(a)), "{answers:?}");

    // scaled to 0: connections are refused at once (REJECT), not left to time out
    c.d.kubectl_ok(&["scale", "deployment/web", "--replicas=0"]);
    c.wait_rules("no endpoints: reject", |r| r.contains(&format!("{ip} . tcp . 80 : goto reject-chain")) && !r.contains(svc_chain));
    let started = Instant::now();
    let out = c.exec("client", &format!("timeout 10 wget -q -O - http://{ip}/; echo rc=$?"));
    assert!(out.contains("Connection refused"), "{out}");
    eprintln!("refused through the cluster IP after {:?}", started.elapsed());
    match TcpStream::connect_timeout(&format!("{}:{np}", c.node_ip).parse().expect("addr"), Duration::from_secs(10)) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("the node port of a Service without endpoints accepted a connection"),
    }

    // deleting the Service removes its chains and elements
    c.d.kubectl_ok(&["delete", "service", "web"]);
    let r = c.wait_rules("the service's rules gone", |r| !r.contains("default/web/") && !r.contains(&format!("{ip} . tcp")));
    assert!(r.contains("chain services"), "the skeleton stays: {r}");
}

#[tokio::test(flavor = "multi_thread")]
async fn session_affinity_external_traffic_policy_local_and_load_balancer() {
    let c = Cluster::start(&[]).await;
    c.apply(&backends("web", 3));
    c.client();
    let pods = c.ready_pods("web", 3);
    let names: BTreeSet<String> = pods.iter().map(|p| p.0.clone()).collect();

    // session affinity: one client keeps its backend
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: sticky}\nspec:\n  selector: {app: web}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 600}}\n  ports: [{port: 80, targetPort: http}]\n");
    let ip = cluster_ip(&c.service("sticky"));
    c.wait_rules("affinity sets", |r| r.contains("set aff-default/sticky/tcp/80__") && r.contains("timeout 10m"));
    let answers = c.requests("client", &format!("http://{ip}/"), 20);
    let seen: BTreeSet<&String> = answers.iter().collect();
    assert_eq!(seen.len(), 1, "{answers:?}");
    assert!(names.contains(answers[0].as_str()), "{answers:?}");

    // externalTrafficPolicy Local: one endpoint on this node, one said to be elsewhere
    let (here, here_ip) = pods[0].clone();
    let (there, there_ip) = pods[1].clone();
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: local}\nspec:\n  type: NodePort\n  externalTrafficPolicy: Local\n  ports: [{name: http, port: 80}]\n",
    );
    let slice = json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "local-by-hand", "labels": {"kubernetes.io/service-name": "local", "endpointslice.kubernetes.io/managed-by": "berth-test"}},
        "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [here_ip], "nodeName": "berth-it", "conditions": {"ready": true}},
                      {"addresses": [there_ip], "nodeName": "elsewhere", "conditions": {"ready": true}}]});
    c.d.kubectl_ok_in(&["apply", "-f", "-"], Some(&slice.to_string()));
    let local = c.service("local");
    let (local_ip, local_np) = (cluster_ip(&local), node_port(&local, 0));
    c.wait_rules("the local chain", |r| r.contains("chain local-default/local/tcp/http"));
    let outside = OutsideClient::new();
    let mut seen = BTreeSet::new();
    for _ in 0..10 {
        seen.insert(outside.get(&format!("http://{}:{local_np}/", c.node_ip)));
    }
    assert_eq!(seen, BTreeSet::from([here.clone()]), "only the local endpoint");
    assert_eq!(plain_ip(&outside.get(&format!("http://{}:{local_np}/cgi-bin/ip", c.node_ip))), outside.ip, "the client's address is kept");
    // pods reach every endpoint through the cluster IP
    let answers = c.requests("client", &format!("http://{local_ip}/"), 30);
    assert_eq!(answers.iter().cloned().collect::<BTreeSet<_>>(), BTreeSet::from([here.clone(), there.clone()]), "{answers:?}");

    // externalTrafficPolicy Cluster: masqueraded to the node's address
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: open}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n");
    let open_np = node_port(&c.service("open"), 0);
    c.wait_rules("the open service", |r| r.contains(&format!("tcp . {open_np} : goto ext-default/open/tcp/http")));
    assert_eq!(plain_ip(&outside.get(&format!("http://{}:{open_np}/cgi-bin/ip", c.node_ip))), c.node_ip, "masqueraded");

    // LoadBalancer: servicelb gives it the node's address; it answers there
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec:\n  type: LoadBalancer\n  selector: {app: web}\n  ports: [{name: http, port: 8099, targetPort: http}]\n");
    let lb = c.d.kubectl_until(&["get", "service", "lb"], LIMIT, "a load-balancer address", |s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string());
    assert_eq!(lb["status"]["loadBalancer"]["ingress"], json!([{"ip": c.node_ip, "ipMode": "VIP"}]));
    let row = c.d.kubectl_ok(&["get", "service", "lb", "--no-headers"]);
    assert_eq!(row.split_whitespace().nth(3), Some(c.node_ip.as_str()), "EXTERNAL-IP: {row}");
    c.wait_rules("the load-balancer IP", |r| r.contains(&format!("{} . tcp . 8099 : goto ext-default/lb/tcp/http", c.node_ip)));
    let body = outside.get(&format!("http://{}:8099/", c.node_ip));
    assert!(names.contains(&body), "{body}");
    let body = http_get(&c.node_ip, 8099, "/").expect("the LB address from the host");
    assert!(names.contains(&body), "{body}");
    // no longer a LoadBalancer: the address goes
    c.d.kubectl_ok(&["patch", "service", "lb", "-p", r#"{"spec": {"type": "ClusterIP"}}"#]);
    c.d.kubectl_until(&["get", "service", "lb"], LIMIT, "the address cleared", |s| s["status"]["loadBalancer"]["ingress"].is_null());
    c.wait_rules("the LB IP's element gone", |r| !r.contains(&format!("{} . tcp . 8099", c.node_ip)));
}

/// A client outside the node: a network namespace of the test's own, linked to the host by a
/// veth pair, routed through it.
struct OutsideClient {
    netns: String,
    host_link: String,
    ip: String,
}

impl OutsideClient {
    fn new() -> OutsideClient {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let prefix = format!("10.{}.{}", 45 + pid % 10, (pid / 10 % 200 + n) % 250);
        let c = OutsideClient { netns: format!("berth-pxc-{pid}-{n}"), host_link: format!("vpx{}h{n}", pid % 100_000), ip: format!("{prefix}.2") };
        let peer = format!("vpx{}p{n}", pid % 100_000);
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["netns", "add", &c.netns]);
        run(&["link", "add", &c.host_link, "type", "veth", "peer", "name", &peer]);
        run(&["link", "set", &peer, "netns", &c.netns]);
        run(&["addr", "add", &format!("{prefix}.1/24"), "dev", &c.host_link]);
        run(&["link", "set", &c.host_link, "up"]);
        run(&["-n", &c.netns, "addr", "add", &format!("{prefix}.2/24"), "dev", &peer]);
        run(&["-n", &c.netns, "link", "set", &peer, "up"]);
        run(&["-n", &c.netns, "link", "set", "lo", "up"]);
        run(&["-n", &c.netns, "route", "add", "default", "via", &format!("{prefix}.1")]);
        c
    }

    /// GET `url` from the namespace, given `seconds`: curl's exit code and the body.
    fn try_get(&self, url: &str, seconds: u32) -> (i32, String) {
        let out = Command::new("ip").args(["netns", "exec", &self.netns, "curl", "-s", "-m", &seconds.to_string(), url]).output().expect("curl");
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// GET `url` from the namespace: the body.
    fn get(&self, url: &str) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.netns, "curl", "-s", "-m", "5", url]).output().expect("curl");
        assert!(out.status.success(), "curl {url} from {}: {}", self.ip, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for OutsideClient {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.host_link]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarted_server_converges_its_table_and_keeps_established_connections() {
    let mut c = Cluster::start(&[]).await;
    c.apply(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {name: echo}
spec:
  replicas: 1
  selector: {matchLabels: {app: echo}}
  template:
    metadata: {labels: {app: echo}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: echo
        image: BUSYBOX
        command: ["nc", "-ll", "-p", "9000", "-e", "cat"]
"#,
    );
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: echo}\nspec:\n  selector: {app: echo}\n  ports: [{port: 9000}]\n");
    c.d.kubectl_until(&["get", "pods", "-l", "app=echo"], LIMIT, "the echo pod running", |v| v["items"][0]["status"]["phase"] == "Running");
    let ip = cluster_ip(&c.service("echo"));
    c.wait_rules("the echo service", |r| r.contains(&format!("{ip} . tcp . 9000 : goto svc-default/echo/tcp/9000")));

    // a connection from the host through the cluster IP, opened before the restart
    let addr: SocketAddr = format!("{ip}:9000").parse().expect("addr");
    let deadline = Instant::now() + LIMIT;
    let stream = loop {
        // the pod may not listen yet
        if let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            s.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
            if s.write_all(b"before\n").is_ok() {
                let mut line = String::new();
                if BufReader::new(&s).read_line(&mut line).is_ok() && line == "before\n" {
                    break s;
                }
            }
        }
        assert!(Instant::now() < deadline, "no echo through {addr}");
        std::thread::sleep(Duration::from_millis(200));
    };

    c.d.stop();
    // while the server is down: its rules stay; a leftover (a deleted Service's chain and
    // element) is planted
    let r = c.rules();
    assert!(r.contains("svc-default/echo/tcp/9000"), "the table stays while the server is down:\n{r}");
    let ghost_ip = format!("{}.250", c.service_prefix);
    let plant = format!(
        "add chain ip {t} svc-default/ghost/tcp/80\nadd rule ip {t} svc-default/ghost/tcp/80 counter\nadd element ip {t} service-ips {{ {ghost_ip} . tcp . 80 : goto svc-default/ghost/tcp/80 }}\n",
        t = c.table
    );
    let mut nft = Command::new("nft").args(["-f", "-"]).stdin(std::process::Stdio::piped()).spawn().expect("nft");
    nft.stdin.take().expect("stdin").write_all(plant.as_bytes()).expect("write");
    assert!(nft.wait().expect("nft").success());

    c.d.restart().await;
    let r = c.wait_rules("converged: the leftover gone", |r| !r.contains("ghost"));
    assert!(r.contains(&format!("{ip} . tcp . 9000 : goto svc-default/echo/tcp/9000")), "{r}");
    let mut s = stream;
    s.write_all(b"after\n").expect("the connection survived the restart");
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).expect("echo after the restart");
    assert_eq!(line, "after\n");
    // and new connections work
    let mut fresh = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("a new connection");
    fresh.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    fresh.write_all(b"new\n").expect("write");
    let mut line = String::new();
    BufReader::new(&fresh).read_line(&mut line).expect("echo");
    assert_eq!(line, "new\n");
}

/// A test host: a network namespace on a bridge of the test's own (the host is .1, the test host
/// .2), removed at the end.
struct TestHost {
    bridge: String,
    netns: String,
    prefix: String,
}

impl TestHost {
    fn new() -> TestHost {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        // 10.56-59.x: no other test's range
        let prefix = format!("10.{}.{}", 56 + pid % 4, (pid / 4 % 200 + n) % 250);
        let h = TestHost { bridge: format!("bpj{}x{n}", pid % 100_000), netns: format!("berth-pxj-{pid}-{n}"), prefix };
        let (outer, inner) = (format!("vpj{}h{n}", pid % 100_000), format!("vpj{}p{n}", pid % 100_000));
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        };
        run(&["link", "add", &h.bridge, "type", "bridge"]);
        run(&["addr", "add", &format!("{}.1/24", h.prefix), "dev", &h.bridge]);
        run(&["link", "set", &h.bridge, "up"]);
        run(&["netns", "add", &h.netns]);
        run(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
        run(&["link", "set", &outer, "master", &h.bridge, "up"]);
        run(&["link", "set", &inner, "netns", &h.netns]);
        run(&["-n", &h.netns, "link", "set", &inner, "name", "eth0"]);
        run(&["-n", &h.netns, "addr", "add", &format!("{}.2/24", h.prefix), "dev", "eth0"]);
        run(&["-n", &h.netns, "link", "set", "eth0", "up"]);
        run(&["-n", &h.netns, "link", "set", "lo", "up"]);
        h
    }

    fn host_ip(&self) -> String {
        format!("{}.2", self.prefix)
    }

    fn server_ip(&self) -> String {
        format!("{}.1", self.prefix)
    }

    fn netns_path(&self) -> std::path::PathBuf {
        std::path::Path::new("/run/netns").join(&self.netns)
    }

    /// `nft list table ip berth-proxy` in the test host.
    fn rules(&self) -> String {
        let out = Command::new("ip").args(["netns", "exec", &self.netns, "nft", "list", "table", "ip", "berth-proxy"]).output().expect("nft");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // its nftables go with it
        let _ = Command::new("ip").args(["netns", "del", &self.netns]).output();
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_port_answers_on_another_node_for_a_pod_of_the_server_node() {
    let host = TestHost::new();
    let listen = format!("{}:6443", host.server_ip());
    let c = Cluster::start(&["--listen", &listen, "--tls-san", &host.server_ip()]).await;
    let kubeconfig = std::fs::read_to_string(c.d.kubeconfig()).expect("kubeconfig");
    let url = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).expect("server URL").to_string();
    let token_file = c.d.data_dir().join("server/node-token").display().to_string();
    let agent_ip = host.host_ip();
    let flags = [
        "--server",
        url.as_str(),
        "--token-file",
        token_file.as_str(),
        "--node-name",
        "berth-px-agent",
        "--node-ip",
        agent_ip.as_str(),
        "--kubelet-address",
        agent_ip.as_str(),
        "--proxy-table",
        "berth-proxy",
    ];
    let agent = Daemon::start_agent("", Some(&host.netns_path()), &flags).await;
    c.d.kubectl_until(&["get", "node", "berth-px-agent"], LIMIT, "the agent's node Ready", |n| condition(n, "Ready") == "True");

    // the pod runs on the server's node; the test host routes to that node's pods through it
    let web = backends("web", 1).replace(
        "    spec:\n      terminationGracePeriodSeconds",
        "    spec:\n      nodeSelector: {kubernetes.io/hostname: berth-it}\n      terminationGracePeriodSeconds",
    );
    assert!(web.contains("nodeSelector"), "{web}");
    c.apply(&web);
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n");
    let pods = c.ready_pods("web", 1);
    let np = node_port(&c.service("web"), 0);
    let out = Command::new("ip").args(["-n", &host.netns, "route", "add", &c.pod_cidr(), "via", &host.server_ip()]).output().expect("ip");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + LIMIT;
    while !host.rules().contains(&format!("tcp . {np} : goto ext-default/web/tcp/http")) {
        assert!(Instant::now() < deadline, "the agent did not program the node port:\n{}\nagent log:\n{}", host.rules(), tail(&agent.log(), 60));
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(host.rules().contains(&format!("elements = {{ {agent_ip} }}")), "the agent's own address: {}", host.rules());
    let body = http_get(&agent_ip, np, "/").unwrap_or_else(|e| panic!("{agent_ip}:{np}: {e}\n{}", host.rules()));
    assert_eq!(body, pods[0].0, "through the other node's node port");
    // the pod saw the agent node's address (externalTrafficPolicy Cluster masquerades)
    assert_eq!(plain_ip(&http_get(&agent_ip, np, "/cgi-bin/ip").expect("cgi")), agent_ip);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_lists_pods_through_the_kubernetes_service_with_its_token_only_when_bound() {
    // the apiserver on the node's address: pods reach it through the kubernetes Service
    let c = Cluster::start(&["--listen", "@NODE_IP@:0"]).await;
    let kubectl = berth_integration::apiserver::kubectl_bin("1.33");
    let kubernetes_ip = format!("{}.1", c.service_prefix);
    c.apply(&format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: reader}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: lister, namespace: reader}}
---
apiVersion: v1
kind: Pod
metadata: {{name: incluster, namespace: reader}}
spec:
  serviceAccountName: lister
  terminationGracePeriodSeconds: 0
  containers:
  - name: c
    image: BUSYBOX
    command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
    volumeMounts: [{{name: kubectl, mountPath: /kubectl, readOnly: true}}]
  volumes:
  - name: kubectl
    hostPath: {{path: {}, type: File}}
"#,
        kubectl.display()
    ));
    c.d.kubectl_until(&["get", "pod", "incluster", "-n", "reader"], LIMIT, "the in-cluster pod ready", |p| condition(p, "Ready") == "True");
    c.wait_rules("the kubernetes Service programmed", |r| r.contains(&format!("{kubernetes_ip} . tcp . 443 : goto svc-default/kubernetes/tcp/https")));
    let exec = |script: &str| c.d.kubectl_ok(&["exec", "-n", "reader", "incluster", "--", "sh", "-c", script]);
    let env = exec("echo $KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT $KUBERNETES_PORT_443_TCP");
    assert_eq!(env.trim(), format!("{kubernetes_ip}:443 tcp://{kubernetes_ip}:443"), "the kubelet's Service variables");
    // the pod's kubectl (mounted from this host) with no kubeconfig: in-cluster configuration
    let in_cluster = |args: &str| exec(&format!("/kubectl {args} 2>&1; echo rc=$?"));
    // RBAC changes reach the apiserver's authorizer through its watch: polled with a deadline
    let in_cluster_until = |args: &str, what: &str, check: &dyn Fn(&str) -> bool| {
        let deadline = Instant::now() + LIMIT;
        loop {
            let out = in_cluster(args);
            if check(&out) {
                return;
            }
            assert!(Instant::now() < deadline, "{what}: {out}");
            std::thread::sleep(Duration::from_millis(200));
        }
    };

    let who = in_cluster("auth whoami -o jsonpath={.status.userInfo.username}");
    assert!(who.starts_with("system:serviceaccount:reader:lister") && who.contains("rc=0"), "{who}");
    let denied = in_cluster("get pods -o name");
    assert!(
        denied
            .contains(r#"pods is forbidden: User "system:serviceaccount:reader:lister" cannot list resource "pods" in API group "" in the namespace "reader""#)
            && denied.contains("rc=1"),
        "{denied}"
    );

    c.apply(
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: pod-reader, namespace: reader}
rules: [{apiGroups: [""], resources: [pods], verbs: [get, list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: lister-reads-pods, namespace: reader}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: pod-reader}
subjects: [{kind: ServiceAccount, name: lister, namespace: reader}]
"#,
    );
    in_cluster_until("get pods -o name", "the bound ServiceAccount still cannot list pods", &|out| out.contains("pod/incluster") && out.contains("rc=0"));
    // still only what the Role grants
    let other = in_cluster("get pods -n default -o name");
    assert!(other.contains(r#"cannot list resource "pods" in API group "" in the namespace "default""#), "{other}");
    c.d.kubectl_ok(&["delete", "rolebinding", "-n", "reader", "lister-reads-pods"]);
    in_cluster_until("get pods -o name", "still allowed after the binding went", &|out| out.contains("forbidden") && out.contains("rc=1"));
}

/// An HTTP answer: the status, the headers (lowercase names) and the body.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> String {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_default()
    }
}

/// An HTTP/1.0 GET from this host.
fn http_status(host: &str, port: u16, path: &str) -> std::io::Result<Reply> {
    let addr: SocketAddr = format!("{host}:{port}").parse().map_err(std::io::Error::other)?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out.as_str(), ""));
    let mut lines = head.lines();
    let status = lines.next().and_then(|l| l.split_whitespace().nth(1)).and_then(|c| c.parse().ok()).unwrap_or(0);
    let headers = lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())).collect();
    Ok(Reply { status, headers, body: body.to_string() })
}

/// Polls `host:port` until nothing listens there.
fn wait_closed(host: &str, port: u16, what: &str) {
    let addr: SocketAddr = format!("{host}:{port}").parse().expect("addr");
    let deadline = Instant::now() + LIMIT;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return,
            _ => {}
        }
        assert!(Instant::now() < deadline, "{what}: {addr} still open after {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_load_balancer_serves_its_health_check_node_port_and_the_proxy_its_healthz() {
    let c = Cluster::start(&["--proxy-healthz-bind-address", "@NODE_IP@:10256"]).await;
    c.apply(&backends("web", 2));
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {app: web}\n  ports: [{name: http, port: 8098, targetPort: http}]\n");
    c.ready_pods("web", 2);
    let hc = c.service("lb")["spec"]["healthCheckNodePort"].as_u64().unwrap_or_default() as u16;
    assert!(hc >= 30000, "a health check node port allocated: {hc}");

    // any path: 200 with this node's 2 ready endpoints
    let node = c.node_ip.clone();
    let until = |what: &str, check: &dyn Fn(u16, &Value) -> bool| -> (Reply, Value) {
        let deadline = Instant::now() + LIMIT;
        loop {
            if let Ok(reply) = http_status(&node, hc, "/any/path") {
                let v: Value = serde_json::from_str(&reply.body).unwrap_or(Value::Null);
                if check(reply.status, &v) {
                    return (reply, v);
                }
            }
            assert!(Instant::now() < deadline, "{what}: not within {LIMIT:?}\nserver log:\n{}", tail(&c.d.log(), 40));
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let (reply, body) = until("200 with 2 local endpoints", &|s, v| s == 200 && v["localEndpoints"] == 2);
    assert_eq!(body, json!({"service": {"namespace": "default", "name": "lb"}, "localEndpoints": 2, "serviceProxyHealthy": true}));
    assert_eq!((reply.header("content-type").as_str(), reply.header("x-content-type-options").as_str()), ("application/json", "nosniff"));
    // on the node port addresses (the node's, by default) only
    match TcpStream::connect_timeout(&format!("127.0.0.1:{hc}").parse().expect("addr"), Duration::from_secs(5)) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}"),
        Ok(_) => panic!("the health check node port answers on 127.0.0.1"),
    }

    // no local endpoints: 503
    c.d.kubectl_ok(&["scale", "deployment/web", "--replicas=0"]);
    let (reply, body) = until("503 without endpoints", &|s, v| s == 503 && v["localEndpoints"] == 0);
    assert_eq!((reply.status, &body["serviceProxyHealthy"]), (503, &json!(true)));

    // the proxy's own health
    for path in ["/healthz", "/livez"] {
        let reply = http_status(&node, 10256, path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let body = &reply.body;
        assert_eq!(reply.status, 200, "{path}: {body}");
        assert_eq!(reply.header("content-type"), "application/json");
        let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
        assert!(v["lastUpdated"].as_str().is_some_and(|t| t.ends_with(" +0000 UTC")) && v["currentTime"].is_string(), "{body}");
        assert_eq!(v.get("nodeEligible").is_some(), path == "/healthz", "{body}");
    }
    let body = http_status(&node, 10256, "/healthz").expect("healthz").body;
    assert!(body.contains(r#""nodeEligible": true"#), "{body}");

    // the Service goes: so does its health check
    c.d.kubectl_ok(&["delete", "service", "lb"]);
    wait_closed(&node, hc, "the health check node port closed");
}

#[tokio::test(flavor = "multi_thread")]
async fn load_balancer_source_ranges_drop_other_sources_at_the_load_balancer_ip_only() {
    let c = Cluster::start(&[]).await;
    c.apply(&backends("web", 1));
    let outside = OutsideClient::new();
    let lb = |name: &str, port: u16, ranges: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  type: LoadBalancer\n  selector: {{app: web}}\n  loadBalancerSourceRanges: [{ranges}]\n  ports: [{{name: http, port: {port}, targetPort: http}}]\n")
    };
    c.apply(&lb("fenced", 8097, &format!("\"{}/32\"", outside.ip)));
    c.apply(&lb("open", 8096, ""));
    let pods = c.ready_pods("web", 1);
    for name in ["fenced", "open"] {
        c.d.kubectl_until(&["get", "service", name], LIMIT, "a load-balancer address", |s| s["status"]["loadBalancer"]["ingress"][0]["ip"].is_string());
    }
    let np = node_port(&c.service("fenced"), 0);
    let fw = format!("{} . tcp . 8097 : goto fw-default/fenced/tcp/http", c.node_ip);
    let r = c.wait_rules("the firewall element", |r| r.contains(&fw) && r.contains(&format!("{} . tcp . 8096 : goto ext-default/open/tcp/http", c.node_ip)));
    assert!(r.contains(&format!("ip saddr != {{ {}/32 }} drop", outside.ip)) || r.contains(&format!("ip saddr != {} drop", outside.ip)), "{r}");

    // inside the range: answered
    let fenced = format!("http://{}:8097/", c.node_ip);
    assert_eq!(outside.get(&fenced), pods[0].0);

    // the range no longer holds the client: its packets are dropped (no refusal, a timeout)
    c.d.kubectl_ok(&["patch", "service", "fenced", "-p", r#"{"spec": {"loadBalancerSourceRanges": ["192.0.2.0/24"]}}"#]);
    c.wait_rules("the new range", |r| r.contains("ip saddr != { 192.0.2.0/24 } drop") || r.contains("ip saddr != 192.0.2.0/24 drop"));
    let started = Instant::now();
    let (code, body) = outside.try_get(&fenced, 3);
    assert_eq!(code, 28, "curl timed out (dropped), got {code}: {body}");
    eprintln!("dropped: curl gave up after {:?}", started.elapsed());

    // the other Service, and the node port of this one, still answer the client
    assert_eq!(outside.get(&format!("http://{}:8096/", c.node_ip)), pods[0].0);
    assert_eq!(outside.get(&format!("http://{}:{np}/", c.node_ip)), pods[0].0, "node ports are not subject to the ranges");
}

/// A UDP responder inside a pod's network namespace (entered from this process, by the pid of
/// the pod's process): answers each datagram on port 9000 with `tag`.
struct NetnsEcho {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NetnsEcho {
    fn start(pid: u32, tag: &'static str) -> NetnsEcho {
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).expect("the pod's netns");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // this thread only: it ends with the responder
            let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let sock = std::net::UdpSocket::bind("0.0.0.0:9000").expect("bind 9000 in the pod");
            sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            ready_tx.send(()).expect("ready");
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::SeqCst) {
                if let Ok((_, peer)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(tag.as_bytes(), peer);
                }
            }
        });
        ready_rx.recv_timeout(Duration::from_secs(10)).expect("the responder bound");
        NetnsEcho { stop, thread: Some(thread) }
    }
}

impl Drop for NetnsEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The host pid of the process whose command line is `sleep <marker>`.
fn pid_of_sleep(marker: &str) -> u32 {
    let want = format!("sleep\0{marker}\0");
    let deadline = Instant::now() + LIMIT;
    loop {
        for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want.as_bytes()) {
                return pid;
            }
        }
        assert!(Instant::now() < deadline, "no process `sleep {marker}`");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A UDP client on this host sending to `addr` from one source port every 100 ms, keeping the
/// answers.
struct UdpClient {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    answers: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl UdpClient {
    fn start(addr: SocketAddr) -> UdpClient {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let answers = std::sync::Arc::new(std::sync::Mutex::new(vec![]));
        let (flag, seen) = (stop.clone(), answers.clone());
        let thread = std::thread::spawn(move || {
            let sock = std::net::UdpSocket::bind("0.0.0.0:0").expect("bind");
            sock.connect(addr).expect("connect");
            sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
            let mut buf = [0u8; 512];
            while !flag.load(Ordering::SeqCst) {
                let _ = sock.send(b"ping");
                let sent = Instant::now();
                // the answer, or 100 ms (an ICMP error surfaces as an error: ignored)
                while sent.elapsed() < Duration::from_millis(100) {
                    if let Ok(n) = sock.recv(&mut buf) {
                        seen.lock().expect("answers").push(String::from_utf8_lossy(&buf[..n]).to_string());
                    }
                }
            }
        });
        UdpClient { stop, answers, thread: Some(thread) }
    }

    /// Waits until `tag` answers: how many answers came before.
    fn wait_for(&self, tag: &str, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        loop {
            let a = self.answers.lock().expect("answers").clone();
            if let Some(i) = a.iter().position(|x| x == tag) {
                return i;
            }
            assert!(Instant::now() < deadline, "{tag} never answered within {within:?}; answers: {:?}", &a[a.len().saturating_sub(10)..]);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for UdpClient {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_udp_client_reaches_the_new_pod_once_its_endpoint_is_replaced() {
    let c = Cluster::start(&[]).await;
    let n = COUNTER.fetch_add(1, Ordering::SeqCst);
    // markers unique to this test: the pods' processes are found by them
    let marker = |i: u32| (100_000_000 + (std::process::id() % 1_000_000) * 100 + n * 2 + i).to_string();
    let (ma, mb) = (marker(0), marker(1));
    let pod = |name: &str, m: &str| {
        format!("apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, labels: {{app: udp}}}}\nspec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - {{name: c, image: BUSYBOX, command: [sleep, \"{m}\"]}}\n")
    };
    c.apply("apiVersion: v1\nkind: Service\nmetadata: {name: udp}\nspec:\n  selector: {app: udp}\n  ports: [{port: 9000, protocol: UDP}]\n");
    c.apply(&pod("udp-a", &ma));
    let a_ip = c.ready_pods("udp", 1)[0].1.clone();
    let _echo_a = NetnsEcho::start(pid_of_sleep(&ma), "A");
    let ip = cluster_ip(&c.service("udp"));
    c.wait_rules("the UDP service", |r| {
        r.contains(&format!("{ip} . udp . 9000 : goto svc-default/udp/udp/9000")) && r.contains(&format!("dnat to {a_ip}:9000"))
    });
    let client = UdpClient::start(format!("{ip}:9000").parse().expect("addr"));
    client.wait_for("A", Duration::from_secs(20));

    // a new pod, then the old one goes: the client's flow (one source port, datagrams every
    // 100 ms) is cleared and its next datagrams reach the new pod
    c.apply(&pod("udp-b", &mb));
    let b_ip = c.ready_pods("udp", 2).into_iter().find(|p| p.0 == "udp-b").expect("udp-b").1;
    let _echo_b = NetnsEcho::start(pid_of_sleep(&mb), "B");
    c.d.kubectl_ok(&["delete", "pod", "udp-a", "--wait=false"]);
    c.wait_rules("only the new endpoint", |r| !r.contains(&format!("{a_ip}:9000")) && r.contains(&format!("dnat to {b_ip}:9000")));
    let switched = Instant::now();
    client.wait_for("B", Duration::from_secs(20));
    eprintln!("the new pod answered {:?} after its rules were programmed", switched.elapsed());
}
