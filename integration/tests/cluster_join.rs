//! Nodes joining a `berth server` with its join token, as on several machines: each
//! `berth agent` runs in a network namespace of its own (its own address on a bridge this test
//! makes, its own data and run dirs and pod network), the server listens on the bridge.
//! TLS bootstrap (the CA from the signed kube-public/cluster-info, a client certificate from a
//! CSR the server approves and signs), pods bound to each node run there, kubectl logs/exec
//! reach them through the apiserver, a restarted agent keeps its certificate, a stopped agent's
//! Lease stops being renewed and its Node goes Unknown after the grace period (its Deployment
//! pod evicted after its toleration and replaced on the other node), and wrong or expired
//! tokens do not join. A released local-path volume on an agent is removed there by the
//! server's helper pod, as k3s's provisioner does.
use berth_integration::kubelet::busybox;
use berth_integration::{tail, Daemon};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A bridge with this test's subnet and one network namespace per test host on it, removed
/// at the end.
struct TestNet {
    bridge: String,
    subnet: String,
    hosts: Vec<String>,
    /// socat forwarding <server ip>:<registry port> to the test registry on 127.0.0.1, so the
    /// test hosts pull the test images (their own 127.0.0.1 is their own).
    forward: Option<std::process::Child>,
}

/// How many test networks this process made (each test of this file has its own).
static NETS: AtomicU32 = AtomicU32::new(0);

impl TestNet {
    fn new(hosts: usize) -> TestNet {
        let pid = std::process::id();
        let k = NETS.fetch_add(1, Ordering::SeqCst);
        assert!(k < 2, "two test networks per process at most (10.251.x, 10.250.x)");
        // 10.251.x, 10.250.x: no other test or pod network of the harness uses them
        let subnet = format!("10.{}.{}", 251 - k, pid % 250);
        let tag = format!("{}n{k}", pid % 100_000);
        let net = TestNet { bridge: format!("bj{tag}"), subnet, hosts: vec![], forward: None };
        ip(&["link", "add", &net.bridge, "type", "bridge"]);
        let mut net = net;
        ip(&["addr", "add", &format!("{}.1/24", net.subnet), "dev", &net.bridge]);
        ip(&["link", "set", &net.bridge, "up"]);
        for i in 0..hosts {
            let name = format!("berth-j{pid}-{k}-{i}");
            let (outer, inner) = (format!("vj{tag}h{i}"), format!("vj{tag}p{i}"));
            ip(&["netns", "add", &name]);
            net.hosts.push(name.clone());
            ip(&["link", "add", &outer, "type", "veth", "peer", "name", &inner]);
            ip(&["link", "set", &outer, "master", &net.bridge, "up"]);
            ip(&["link", "set", &inner, "netns", &name]);
            ip(&["-n", &name, "link", "set", &inner, "name", "eth0"]);
            ip(&["-n", &name, "addr", "add", &format!("{}.{}/24", net.subnet, i + 2), "dev", "eth0"]);
            ip(&["-n", &name, "link", "set", "eth0", "up"]);
            ip(&["-n", &name, "link", "set", "lo", "up"]);
        }
        let registry = berth_integration::test_registry();
        let port = registry.rsplit(':').next().unwrap().to_string();
        use std::os::unix::process::CommandExt;
        net.forward = Some(
            Command::new("socat")
                .arg(format!("TCP-LISTEN:{port},bind={}.1,fork,reuseaddr", net.subnet))
                .arg(format!("TCP:{registry}"))
                .process_group(0)
                .spawn()
                .expect("socat (hack/deps.sh installs it)"),
        );
        net
    }

    /// The agent config that pulls the test registry's images through the forward.
    fn agent_config(&self) -> String {
        let registry = berth_integration::test_registry();
        let port = registry.rsplit(':').next().unwrap();
        format!("[registry.mirrors.\"{registry}\"]\nendpoints = [\"http://{}.1:{port}\"]\nupstream = false\n", self.subnet)
    }

    fn server_ip(&self) -> String {
        format!("{}.1", self.subnet)
    }

    fn host_ip(&self, i: usize) -> String {
        format!("{}.{}", self.subnet, i + 2)
    }

    fn netns(&self, i: usize) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.hosts[i])
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        if let Some(mut f) = self.forward.take() {
            // socat and the children it forked for connections: its own process group
            unsafe { libc::kill(-(f.id() as i32), libc::SIGTERM) };
            let _ = f.wait();
        }
        for h in &self.hosts {
            let _ = Command::new("ip").args(["netns", "del", h]).output();
        }
        let _ = Command::new("ip").args(["link", "del", &self.bridge]).output();
    }
}

fn json(d: &Daemon, args: &[&str]) -> Value {
    d.kubectl_json(args)
}

/// Polls `args` through kubectl until `check` holds (a condition, never a fixed sleep).
fn wait_until(d: &Daemon, args: &[&str], limit: Duration, what: &str, check: impl Fn(&Value) -> bool) -> Value {
    d.kubectl_until(args, limit, what, check)
}

/// A kubeconfig file as JSON (as kubectl reads it).
fn kubeconfig_json(path: &std::path::Path) -> Value {
    let out = Command::new(berth_integration::apiserver::kubectl_bin("1.33"))
        .args(["config", "view", "--raw", "-o", "json", "--kubeconfig"])
        .arg(path)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn condition(obj: &Value, kind: &str) -> String {
    obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).and_then(|c| c["status"].as_str()).unwrap_or("").to_string()
}

fn pod(name: &str, node: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: {node}}}\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: main\n    image: {}\n    command: ['sh', '-c', 'echo hello from {name}; while true; do sleep 1; done']\n",
        busybox()
    )
}

/// Runs `berth agent` in `netns` with `token` until it exits (it must, within 60 s): its status
/// and output.
/// Two replicas that prefer different nodes and tolerate an unreachable or not-ready node for 5 s.
fn spread_deployment() -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: spread
spec:
  replicas: 2
  selector:
    matchLabels: {{app: spread}}
  template:
    metadata:
      labels: {{app: spread}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 5}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 5}}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              topologyKey: kubernetes.io/hostname
              labelSelector: {{matchLabels: {{app: spread}}}}
      containers:
      - name: main
        image: {}
        command: ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"]
"#,
        busybox()
    )
}

fn failed_join(net: &TestNet, server: &str, token: &str) -> (std::process::ExitStatus, String) {
    let dir = berth_integration::TempDir::new("joinbad");
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", &net.hosts[1], berth_integration::berth_bin().to_str().unwrap(), "agent", "--server", server, "--token", token]);
    cmd.arg("--data-dir").arg(dir.path().join("data")).arg("--run-dir").arg(dir.path().join("run"));
    cmd.args(["--node-name", "berth-join-bad", "--cgroup-root", &format!("/berth-it-join-bad-{}", std::process::id()), "--kubelet-port", "0"]);
    let mut child = cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth agent with a bad token did not give up");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (out.status, String::from_utf8_lossy(&out.stderr).to_string())
}

#[tokio::test(flavor = "multi_thread")]
async fn agents_join_with_the_token_and_run_the_pods_bound_to_them() {
    let net = TestNet::new(2);
    // a fixed port on the test bridge's address (the test's own): the server comes back there
    // after it is stopped below
    let listen = format!("{}:6443", net.server_ip());
    let mut server =
        Daemon::start_server("", &["--disable-agent", "--listen", &listen, "--tls-san", &net.server_ip(), "--node-monitor-grace-period", "20s"]).await;
    let kubeconfig = std::fs::read_to_string(server.kubeconfig()).unwrap();
    let url = kubeconfig.lines().find_map(|l| l.trim().strip_prefix("server: ")).expect("server URL").to_string();
    assert!(url.starts_with(&format!("https://{}:", net.server_ip())), "{url}");
    let token_file = server.data_dir().join("server/node-token");
    let token = std::fs::read_to_string(&token_file).unwrap().trim().to_string();

    // Wrong tokens: an id the server does not know, a known id with a wrong secret.
    let (status, err) = failed_join(&net, &url, "zzzzzz.0123456789abcdef");
    assert!(!status.success());
    assert!(err.contains("has no signature for token id zzzzzz"), "{err}");
    let wrong_secret = format!("{}.0000000000000000", &token[..6]);
    let (status, err) = failed_join(&net, &url, &wrong_secret);
    assert!(!status.success());
    assert!(err.contains("not signed by this token"), "{err}");
    // An expired token: the server no longer signs cluster-info with it.
    server.kubectl_ok_in(
        &["apply", "-f", "-"],
        Some("apiVersion: v1\nkind: Secret\nmetadata: {name: bootstrap-token-oldtok, namespace: kube-system}\ntype: bootstrap.kubernetes.io/token\nstringData:\n  token-id: oldtok\n  token-secret: 0123456789abcdef\n  expiration: \"2020-01-01T00:00:00Z\"\n  usage-bootstrap-authentication: \"true\"\n  usage-bootstrap-signing: \"true\"\n"),
    );
    let (status, err) = failed_join(&net, &url, "oldtok.0123456789abcdef");
    assert!(!status.success());
    assert!(err.contains("has no signature for token id oldtok"), "{err}");

    let token_arg = token_file.display().to_string();
    let mut agents = vec![];
    for i in 0..2 {
        let (name, host) = (format!("berth-join-{i}"), net.host_ip(i));
        let netns = net.netns(i);
        let flags = [
            "--server",
            url.as_str(),
            "--token-file",
            token_arg.as_str(),
            "--node-name",
            name.as_str(),
            "--node-ip",
            host.as_str(),
            "--kubelet-address",
            host.as_str(),
        ];
        // agent 1 brings no pod CIDR of its own: it gets one from the server's node IPAM
        let mut config = net.agent_config();
        if i == 1 {
            let own = berth_integration::berth_bin().parent().unwrap().display().to_string();
            config.push_str(&format!(
                "[network]\nconf_dir = \"@DIR@/net.d\"\nbin_dirs = [\"{own}\"]\nbridge = \"bjp{}\"\nmasquerade = false\n",
                std::process::id() % 100_000
            ));
        }
        agents.push(Daemon::start_agent(&config, Some(&netns), &flags).await);
    }
    for (i, agent) in agents.iter().enumerate() {
        let name = format!("berth-join-{i}");
        let node = wait_until(&server, &["get", "node", &name], Duration::from_secs(60), &format!("node {name} Ready"), |n| condition(n, "Ready") == "True");
        let addrs = node["status"]["addresses"].to_string();
        let cidr = node["spec"]["podCIDR"].as_str().unwrap_or("").to_string();
        if i == 1 {
            assert_eq!(cidr, "10.42.0.0/24", "node IPAM's first block");
        } else {
            assert!(!cidr.is_empty() && !cidr.starts_with("10.42."), "the node's own --pod-cidr: {cidr}");
        }
        assert_eq!(node["spec"]["podCIDRs"][0], cidr);
        assert!(addrs.contains(&net.host_ip(i)), "{addrs}");
        // the credentials of the join, kept for the next start
        let dir = agent.data_dir().join("agent");
        for f in ["ca.crt", "kubelet-client.crt", "kubelet-client.key", "kubelet.kubeconfig"] {
            assert!(dir.join(f).exists(), "{f} missing in {}", dir.display());
        }
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(dir.join("kubelet-client.key")).unwrap().permissions().mode() & 0o777, 0o600);
    }
    // Each node's client certificate came from a CSR of its bootstrap token, approved and signed.
    let csrs = json(&server, &["get", "csr"]);
    let items: Vec<&Value> =
        csrs["items"].as_array().unwrap().iter().filter(|c| c["spec"]["signerName"] == "kubernetes.io/kube-apiserver-client-kubelet").collect();
    assert_eq!(items.len(), 2, "{csrs:#}");
    for c in items {
        assert_eq!(c["spec"]["signerName"], "kubernetes.io/kube-apiserver-client-kubelet");
        assert_eq!(c["spec"]["username"], format!("system:bootstrap:{}", &token[..6]));
        assert_eq!(condition(c, "Approved"), "True");
        assert!(c["status"]["certificate"].as_str().is_some_and(|s| !s.is_empty()));
    }
    let table = server.kubectl_ok(&["get", "csr"]);
    assert!(table.contains("Approved,Issued"), "{table}");
    // The nodes act as themselves: the API sees each as system:node:<name>.
    let whoami = Command::new(berth_integration::apiserver::kubectl_bin("1.33"))
        .arg("--kubeconfig")
        .arg(agents[0].data_dir().join("agent/kubelet.kubeconfig"))
        .args(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username} {.status.userInfo.groups}"])
        .output()
        .unwrap();
    let who = String::from_utf8_lossy(&whoami.stdout);
    assert!(who.starts_with("system:node:berth-join-0 ") && who.contains("system:nodes"), "{who} {}", String::from_utf8_lossy(&whoami.stderr));

    // Pods bound to each node run there; logs and exec reach them through the apiserver.
    for i in 0..2 {
        server.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod(&format!("p{i}"), &format!("berth-join-{i}"))));
    }
    for i in 0..2 {
        let p = wait_until(&server, &["get", "pod", &format!("p{i}")], Duration::from_secs(120), "pod Ready", |p| condition(p, "Ready") == "True");
        assert_eq!(p["spec"]["nodeName"], format!("berth-join-{i}"));
        assert_eq!(p["status"]["hostIP"], net.host_ip(i));
        if i == 1 {
            assert!(p["status"]["podIP"].as_str().unwrap().starts_with("10.42.0."), "{}", p["status"]);
        }
        let logs = server.kubectl_ok(&["logs", &format!("p{i}")]);
        assert!(logs.contains(&format!("hello from p{i}")), "{logs}");
        let host = server.kubectl_ok(&["exec", &format!("p{i}"), "--", "hostname"]);
        assert_eq!(host.trim(), format!("p{i}"));
    }

    // The kubelet API lets in only whom the cluster vouches for: nobody without credentials
    // (401), the apiserver's and the admin's certificates (system:masters), not another node's
    // certificate nor a service account's token (403: the apiserver does not authorize them).
    let node0 = json(&server, &["get", "node", "berth-join-0"]);
    let port = node0["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().unwrap();
    let kubelet = format!("https://{}:{port}/pods", net.host_ip(0));
    let curl = |extra: &[&str]| -> (String, String) {
        let out = Command::new("curl").args(["-sk", "-o", "-", "-w", "\n%{http_code}", "--max-time", "10"]).args(extra).arg(&kubelet).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
        (code.to_string(), body.to_string())
    };
    assert_eq!(curl(&[]), ("401".to_string(), "Unauthorized".to_string()));
    let admin: Value = kubeconfig_json(&server.kubeconfig());
    let pem = |key: &str, file: &str| {
        use base64::Engine;
        let data = base64::engine::general_purpose::STANDARD.decode(admin["users"][0]["user"][key].as_str().unwrap()).unwrap();
        let path = server.dir.path().join(file);
        std::fs::write(&path, data).unwrap();
        path.display().to_string()
    };
    let (cert, key) = (pem("client-certificate-data", "admin.crt"), pem("client-key-data", "admin.key"));
    let (code, body) = curl(&["--cert", &cert, "--key", &key]);
    assert_eq!(code, "200", "{body}");
    // the kubelet API's serving certificate comes from the cluster: a kubelet-serving CSR the
    // server approved for the node's own addresses, verified against the cluster CA
    wait_until(&server, &["get", "csr"], Duration::from_secs(90), "serving certificates issued", |l| {
        l["items"].as_array().is_some_and(|a| {
            a.iter()
                .filter(|c| {
                    c["spec"]["signerName"] == "kubernetes.io/kubelet-serving" && c["status"]["certificate"].is_string() && condition(c, "Approved") == "True"
                })
                .count()
                == 2
        })
    });
    let ca = agents[0].data_dir().join("agent/ca.crt");
    let verified = || {
        Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10", "--cacert", ca.to_str().unwrap(), "--cert", &cert, "--key", &key])
            .arg(&kubelet)
            .output()
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while String::from_utf8_lossy(&verified().stdout) != "200" {
        assert!(Instant::now() < deadline, "the kubelet API does not present a certificate of the cluster CA");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(agents[0].data_dir().join("agent/kubelet-serving.crt").exists());
    assert!(body.contains("\"PodList\""), "{body}");
    let other = agents[1].data_dir().join("agent");
    let (code, body) = curl(&["--cert", other.join("kubelet-client.crt").to_str().unwrap(), "--key", other.join("kubelet-client.key").to_str().unwrap()]);
    assert_eq!((code.as_str(), body.as_str()), ("403", "Forbidden (user=system:node:berth-join-1, verb=get, resource=nodes, subresource=proxy)"));
    let token = server.kubectl_ok(&["create", "token", "default"]);
    let (code, body) = curl(&["-H", &format!("Authorization: Bearer {}", token.trim())]);
    assert_eq!((code.as_str(), body.as_str()), ("403", "Forbidden (user=system:serviceaccount:default:default, verb=get, resource=nodes, subresource=proxy)"));
    let (code, _) = curl(&["-H", "Authorization: Bearer not-a-token"]);
    assert_eq!(code, "401");

    // One node's credentials cannot touch another node or its pods (NodeRestriction).
    let as_node = |i: usize, args: &[&str], stdin: Option<&str>| -> std::process::Output {
        use std::io::Write;
        let mut child = Command::new(berth_integration::apiserver::kubectl_bin("1.33"))
            .arg("--kubeconfig")
            .arg(agents[i].data_dir().join("agent/kubelet.kubeconfig"))
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.unwrap_or("").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    let out = as_node(
        1,
        // (not --subresource=status: the system:node role has no get on nodes/status, so kubectl's
        // read before the patch would be refused by RBAC, as on any cluster)
        &["patch", "node", "berth-join-0", "--type=merge", "-p", r#"{"metadata":{"annotations":{"berth-test":"other-node"}}}"#],
        None,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(r#"nodes "berth-join-0" is forbidden: node "berth-join-1" is not allowed to modify node "berth-join-0""#),
        "{err}"
    );
    let out = as_node(1, &["label", "node", "berth-join-1", "node-restriction.kubernetes.io/trusted=yes"], None);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("is not allowed to modify labels: node-restriction.kubernetes.io/trusted"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_node(1, &["delete", "pod", "p0", "--wait=false"], None);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(r#"node "berth-join-1" can only delete pods with spec.nodeName set to itself"#),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = as_node(1, &["apply", "-f", "-"], Some(&pod("sneaky", "berth-join-1")));
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("node \"berth-join-1\" can only create mirror pods"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(condition(&json(&server, &["get", "node", "berth-join-0"]), "Ready"), "True");

    // A restarted agent keeps its certificate (no new CSR) and its running pod.
    let before = json(&server, &["get", "pod", "p0"]);
    agents[0].restart().await;
    wait_until(&server, &["get", "node", "berth-join-0"], Duration::from_secs(60), "node Ready again", |n| condition(n, "Ready") == "True");
    let csrs = json(&server, &["get", "csr"]);
    assert_eq!(csrs["items"].as_array().unwrap().len(), 4, "no new CSR after the restart: {csrs:#}");
    let after = wait_until(&server, &["get", "pod", "p0"], Duration::from_secs(60), "p0 Ready after the restart", |p| condition(p, "Ready") == "True");
    assert_eq!(after["status"]["containerStatuses"][0]["containerID"], before["status"]["containerStatuses"][0]["containerID"]);
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);

    // A Deployment spread over both nodes whose pods tolerate an unreachable node for 5 s: the
    // pod of the node that stops is evicted then, and its replacement runs on the other node.
    server.kubectl_ok(&["delete", "pod", "p1", "--wait=true"]);
    server.kubectl_ok_in(&["apply", "-f", "-"], Some(&spread_deployment()));
    let placed = wait_until(&server, &["get", "pods", "-l", "app=spread"], Duration::from_secs(120), "one spread pod Ready on each node", |l| {
        let ps = l["items"].as_array().cloned().unwrap_or_default();
        let mut nodes: Vec<String> =
            ps.iter().filter(|p| condition(p, "Ready") == "True").filter_map(|p| p["spec"]["nodeName"].as_str().map(String::from)).collect();
        nodes.sort();
        nodes == ["berth-join-0", "berth-join-1"]
    });
    let doomed = placed["items"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["spec"]["nodeName"] == "berth-join-1"))
        .and_then(|p| p["metadata"]["name"].as_str())
        .unwrap_or("")
        .to_string();

    // A stopped agent's Lease is no longer renewed while the other's is.
    let renew = |name: &str| json(&server, &["get", "lease", "-n", "kube-node-lease", name])["spec"]["renewTime"].as_str().unwrap_or("").to_string();
    agents[1].stop();
    let stopped_at = renew("berth-join-1");
    let first = renew("berth-join-0");
    wait_until(&server, &["get", "lease", "-n", "kube-node-lease", "berth-join-0"], Duration::from_secs(40), "berth-join-0 renews twice", |l| {
        l["spec"]["renewTime"].as_str().is_some_and(|t| t > first.as_str())
    });
    let second = renew("berth-join-0");
    wait_until(&server, &["get", "lease", "-n", "kube-node-lease", "berth-join-0"], Duration::from_secs(40), "berth-join-0 renews again", |l| {
        l["spec"]["renewTime"].as_str().is_some_and(|t| t > second.as_str())
    });
    assert_eq!(renew("berth-join-1"), stopped_at, "the stopped agent's Lease was renewed");
    // ... and after the grace period (here 20 s) its Node is Unknown and tainted unreachable,
    // while the running agent's stays Ready
    wait_until(&server, &["get", "node", "berth-join-1"], Duration::from_secs(60), "berth-join-1 Unknown", |n| {
        n["status"]["conditions"].as_array().is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "Unknown"))
    });
    wait_until(&server, &["get", "node", "berth-join-1"], Duration::from_secs(20), "berth-join-1 tainted", |n| {
        n["spec"]["taints"].as_array().is_some_and(|ts| ts.iter().any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute"))
    });
    // the stopped node's spread pod: evicted by the taint manager after its 5 s, replaced on
    // the node that runs
    let evicted = wait_until(&server, &["get", "pod", &doomed], Duration::from_secs(60), "the stopped node's pod evicted", |p| {
        !p["metadata"]["deletionTimestamp"].is_null()
    });
    let target = evicted["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "DisruptionTarget")).cloned().unwrap_or_default();
    assert_eq!(target["reason"], "DeletionByTaintManager", "{evicted:#}");
    wait_until(&server, &["get", "pods", "-l", "app=spread"], Duration::from_secs(120), "both spread pods Ready on berth-join-0", |l| {
        let live: Vec<Value> =
            l["items"].as_array().cloned().unwrap_or_default().into_iter().filter(|p| p["metadata"]["deletionTimestamp"].is_null()).collect();
        live.len() == 2 && live.iter().all(|p| p["spec"]["nodeName"] == "berth-join-0" && condition(p, "Ready") == "True")
    });
    server.kubectl_ok(&["delete", "deployment", "spread", "--wait=false"]);
    // the evicted pod stays Terminating while its node is away, as upstream: force it
    server.kubectl_ok(&["delete", "pod", &doomed, "--force", "--grace-period=0"]);
    let other = json(&server, &["get", "node", "berth-join-0"]);
    let ready = other["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == "Ready")).map(|c| c["status"].clone());
    assert_eq!(ready, Some(serde_json::json!("True")), "{other:#}");

    // The apiserver goes away: the agent's pods keep running, one finishes meanwhile, and when
    // the apiserver is back the status catches up (the running pod untouched).
    let pod = |name: &str, cmd: &str, restart: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: berth-join-0\n  restartPolicy: {restart}\n  containers:\n  - name: c\n    image: {}\n    command: ['sh', '-c', '{cmd}']\n",
            busybox()
        )
    };
    server.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod("keeper", "sleep 3600", "Always")));
    server.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod("finisher", "sleep 6; exit 0", "Never")));
    let running = |p: &Value| p["status"]["containerStatuses"][0]["state"]["running"].is_object();
    let keeper = wait_until(&server, &["get", "pod", "keeper"], Duration::from_secs(90), "keeper running", running);
    wait_until(&server, &["get", "pod", "finisher"], Duration::from_secs(90), "finisher running", running);
    let keeper_id = keeper["status"]["containerStatuses"][0]["containerID"].as_str().unwrap_or("").to_string();
    server.stop();
    // the node goes on without it: the finisher's container exits, the keeper's runs
    let mut cri = agents[0].runtime().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = cri.list_containers(berth::cri::v1::ListContainersRequest::default()).await.expect("list containers").into_inner().containers;
        let state = |pod: &str| list.iter().find(|c| c.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some(pod)).map(|c| c.state);
        let exited = state("finisher") == Some(berth::cri::v1::ContainerState::ContainerExited as i32);
        if exited {
            assert_eq!(state("keeper"), Some(berth::cri::v1::ContainerState::ContainerRunning as i32), "the keeper kept running");
            break;
        }
        assert!(Instant::now() < deadline, "the finisher did not finish while the apiserver was away: {list:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server.restart().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let done = loop {
        let out = server.kubectl(&["get", "pod", "finisher", "-o", "json"]);
        let p: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        if p["status"]["phase"] == "Succeeded" {
            break p;
        }
        assert!(Instant::now() < deadline, "the finisher's status did not catch up: {p:#}\nagent log:\n{}", tail(&agents[0].log(), 60));
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(done["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 0);
    let keeper = json(&server, &["get", "pod", "keeper"]);
    assert_eq!(keeper["status"]["containerStatuses"][0]["containerID"].as_str(), Some(keeper_id.as_str()), "{keeper:#}");
    assert_eq!(keeper["status"]["containerStatuses"][0]["restartCount"], 0);

    server.kubectl_ok(&["delete", "pods", "--all", "--wait=true"]);
    drop(agents);
    drop(server);
    drop(net);
}

/// A claim of the default (local-path) class and a pod on `node` that writes into it and exits.
fn claim_and_writer(node: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: data
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 64Mi
---
apiVersion: v1
kind: Pod
metadata:
  name: writer
spec:
  nodeSelector: {{kubernetes.io/hostname: {node}}}
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {}
    command: ["sh", "-c", "echo kept > /data/file"]
    volumeMounts:
    - {{name: data, mountPath: /data}}
  volumes:
  - name: data
    persistentVolumeClaim: {{claimName: data}}
"#,
        busybox()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_released_local_path_volume_on_an_agent_is_removed_by_a_helper_pod_on_that_node() {
    // the storage root (the agent shares this machine's filesystem, so the test sees its disk),
    // dropped last; what the helper pod must leave alone: a file and another volume's directory
    let storage = berth_integration::TempDir::new("lp-storage");
    let root = storage.path().display().to_string();
    std::fs::write(storage.path().join("keep"), "k").unwrap();
    let neighbour = storage.path().join("pvc-neighbour_default_other");
    std::fs::create_dir(&neighbour).unwrap();
    std::fs::write(neighbour.join("file"), "k").unwrap();

    let net = TestNet::new(1);
    let listen = format!("{}:6443", net.server_ip());
    let image = busybox();
    let server_ip = net.server_ip();
    let server = Daemon::start_server(
        "",
        &["--disable-agent", "--listen", &listen, "--tls-san", &server_ip, "--default-local-storage-path", &root, "--local-path-helper-image", &image],
    )
    .await;
    let url = format!("https://{listen}");
    let token_file = server.data_dir().join("server/node-token").display().to_string();
    let host = net.host_ip(0);
    let node = "berth-lp-0";
    let flags = ["--server", &url, "--token-file", &token_file, "--node-name", node, "--node-ip", &host, "--kubelet-address", &host];
    let _agent = Daemon::start_agent(&net.agent_config(), Some(&net.netns(0)), &flags).await;
    wait_until(&server, &["get", "node", node], Duration::from_secs(60), "node Ready", |n| condition(n, "Ready") == "True");

    // a volume provisioned on the agent, written there
    server.kubectl_ok_in(&["apply", "-f", "-"], Some(&claim_and_writer(node)));
    let claim = wait_until(&server, &["get", "pvc", "data"], Duration::from_secs(120), "claim Bound", |c| c["status"]["phase"] == "Bound");
    let pv = claim["spec"]["volumeName"].as_str().unwrap_or("").to_string();
    let v = json(&server, &["get", "pv", &pv]);
    assert_eq!(v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0], node);
    let dir = storage.path().join(format!("{pv}_default_data"));
    assert_eq!(v["spec"]["hostPath"]["path"], dir.display().to_string());
    wait_until(&server, &["get", "pod", "writer"], Duration::from_secs(120), "writer Succeeded", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(std::fs::read_to_string(dir.join("file")).expect("the file on the agent's disk").trim(), "kept");

    // pod and claim deleted: a helper pod on the agent removes the directory, then the volume goes
    server.kubectl_ok(&["delete", "pod", "writer", "--wait=true"]);
    server.kubectl_ok(&["delete", "pvc", "data", "--wait=true"]);
    wait_until(&server, &["get", "pv"], Duration::from_secs(120), "volume deleted", |l| {
        l["items"].as_array().is_some_and(|i| !i.iter().any(|v| v["metadata"]["name"] == pv.as_str()))
    });
    assert!(!dir.exists(), "{} removed on the agent", dir.display());
    assert_eq!(std::fs::read_to_string(storage.path().join("keep")).unwrap(), "k");
    assert_eq!(std::fs::read_to_string(neighbour.join("file")).unwrap(), "k");
    let helper = format!("helper-pod-delete-{pv}");
    wait_until(&server, &["get", "pods", "-n", "kube-system"], Duration::from_secs(30), "helper pod deleted", |l| {
        l["items"].as_array().is_some_and(|i| !i.iter().any(|p| p["metadata"]["name"] == helper.as_str()))
    });
    // it ran on the agent (the agent's events about it), and the volume's deletion did not fail
    let by_helper = format!("involvedObject.name={helper}");
    let events = wait_until(&server, &["get", "events", "-n", "kube-system", "--field-selector", &by_helper], Duration::from_secs(30), "Started event", |l| {
        l["items"].as_array().is_some_and(|i| i.iter().any(|e| e["reason"] == "Started"))
    });
    let started = events["items"].as_array().and_then(|i| i.iter().find(|e| e["reason"] == "Started")).cloned().unwrap_or_default();
    assert_eq!(started["source"]["host"], node, "{events:#}");
    let pv_events = json(&server, &["get", "events", "--field-selector", &format!("involvedObject.name={pv}")]);
    assert!(pv_events["items"].as_array().is_some_and(|i| !i.iter().any(|e| e["reason"] == "VolumeFailedDelete")), "{pv_events:#}");
}
