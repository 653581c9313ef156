//! The resource metrics API and the HorizontalPodAutoscaler inside `berth server`, with real
//! pods from the test busybox image and the real kubectl (1.33 and 1.27):
//! - the kubelet's /metrics/resource (through nodes/proxy) carries upstream's series;
//! - `kubectl top node` and `kubectl top pod` (-A, --containers, -l) show the node and the pods
//!   once two scrapes have happened, a CPU-burning pod near its CPU limit; PodMetrics JSON and
//!   Tables read as metrics-server's; anonymous and unbound users are refused, `view` may read;
//!   `--disable metrics-server` takes the API away;
//! - an HPA scales a CPU-burning Deployment from 1 up to its maximum and back down when the load
//!   stops, with the status, conditions and events kubectl shows.
use berth_integration::kubelet::busybox;
use berth_integration::Daemon;
use serde_json::Value;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(120);

fn pod(name: &str, labels: &str, cpu_request: &str, cpu_limit: &str, script: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels: {{{labels}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: main
    image: {image}
    command: ["sh", "-c", "trap 'exit 0' TERM; {script}"]
    resources:
      requests: {{cpu: {cpu_request}, memory: 16Mi}}
      limits: {{cpu: {cpu_limit}, memory: 64Mi}}
"#,
        image = busybox()
    )
}

fn condition<'a>(obj: &'a Value, kind: &str) -> &'a Value {
    obj["status"]["conditions"].as_array().and_then(|cs| cs.iter().find(|c| c["type"] == kind)).unwrap_or(&Value::Null)
}

/// Runs `args` through kubectl 1.33 until `check` holds on its stdout; the last stdout.
fn kubectl_text_until(d: &Daemon, args: &[&str], what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + LIMIT;
    loop {
        let out = d.kubectl(args);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        if out.status.success() && check(&text) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {LIMIT:?}; last:\n{text}\n{}\nserver log:\n{}",
            String::from_utf8_lossy(&out.stderr),
            berth_integration::tail(&d.log(), 60)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The row of `name` in a kubectl table, split into columns.
fn row<'a>(table: &'a str, name: &str) -> Option<Vec<&'a str>> {
    table.lines().map(|l| l.split_whitespace().collect::<Vec<_>>()).find(|cols| cols.contains(&name))
}

/// Millicores of a `kubectl top` CPU cell ("153m", "1").
fn millicores(cell: &str) -> Option<u64> {
    match cell.strip_suffix('m') {
        Some(m) => m.parse().ok(),
        None => cell.parse::<u64>().ok().map(|c| c * 1000),
    }
}

/// Mebibytes of a `kubectl top` memory cell ("12Mi").
fn mebibytes(cell: &str) -> Option<u64> {
    cell.strip_suffix("Mi")?.parse().ok()
}

/// The API server's URL from the admin kubeconfig.
fn server_url(d: &Daemon) -> String {
    let text = std::fs::read_to_string(d.kubeconfig()).expect("kubeconfig");
    text.lines().find_map(|l| l.trim().strip_prefix("server:")).map(|s| s.trim().to_string()).expect("server in kubeconfig")
}

fn http_status(url: &str) -> String {
    let out = std::process::Command::new("curl").args(["-sk", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code}", url]).output().expect("curl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[tokio::test]
async fn kubectl_top_shows_the_node_and_pods_with_a_burner_near_its_limit() {
    let d = Daemon::start_server("", &["--metric-resolution", "1s"]).await;
    d.kubectl_until(&["get", "node", "berth-it"], LIMIT, "node Ready", |n| condition(n, "Ready")["status"] == "True");
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod("burner", "app: burn, tier: load", "100m", "200m", "while :; do :; done")));
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&pod("idle", "app: idle", "10m", "50m", "sleep 3600")));

    // the kubelet's resource metrics, through the API's node proxy
    let text = kubectl_text_until(&d, &["get", "--raw", "/api/v1/nodes/berth-it/proxy/metrics/resource"], "the burner in /metrics/resource", |t| {
        t.contains("container_cpu_usage_seconds_total{container=\"main\",namespace=\"default\",pod=\"burner\"}")
    });
    for family in [
        "# TYPE container_cpu_usage_seconds_total counter",
        "# TYPE container_memory_working_set_bytes gauge",
        "# TYPE container_start_time_seconds gauge",
        "# TYPE node_cpu_usage_seconds_total counter",
        "# TYPE node_memory_working_set_bytes gauge",
        "# TYPE pod_cpu_usage_seconds_total counter",
        "# TYPE pod_memory_working_set_bytes gauge",
        "resource_scrape_error 0",
    ] {
        assert!(text.contains(family), "{family} missing:\n{text}");
    }
    let sample = text.lines().find(|l| l.starts_with("node_cpu_usage_seconds_total ")).unwrap_or_default();
    let fields: Vec<&str> = sample.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "value and millisecond timestamp: {sample}");
    let ms: i64 = fields[2].parse().expect("timestamp");
    let now_ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as i64;
    assert!((now_ms - ms).abs() < 60_000, "a timestamp in milliseconds: {sample}");

    // kubectl top node: the node with plausible CPU and memory
    let nodes = kubectl_text_until(&d, &["top", "node"], "the node in kubectl top node", |t| row(t, "berth-it").is_some_and(|r| !r.contains(&"<unknown>")));
    let header: Vec<&str> = nodes.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CPU(cores)", "CPU(%)", "MEMORY(bytes)", "MEMORY(%)"], "{nodes}");
    let r = row(&nodes, "berth-it").unwrap_or_default();
    assert!(millicores(r[1]).is_some_and(|m| m > 0), "{nodes}");
    assert!(r[2].ends_with('%') && r[4].ends_with('%'), "{nodes}");
    assert!(mebibytes(r[3]).is_some_and(|m| m > 10), "{nodes}");

    // kubectl top pod: both pods, the burner near its 200m limit
    let pods = kubectl_text_until(&d, &["top", "pod"], "the burner near its limit", |t| {
        row(t, "idle").is_some() && row(t, "burner").and_then(|r| millicores(r[1])).is_some_and(|m| (150..=250).contains(&m))
    });
    let header: Vec<&str> = pods.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "CPU(cores)", "MEMORY(bytes)"], "{pods}");
    let idle = row(&pods, "idle").unwrap_or_default();
    assert!(millicores(idle[1]).is_some_and(|m| m < 50), "{pods}");
    assert!(idle[2].ends_with("Mi"), "{pods}");

    // --containers, -l, -A, --sort-by; and kubectl 1.27
    let by_container = d.kubectl_ok(&["top", "pod", "burner", "--containers"]);
    assert_eq!(by_container.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>(), ["POD", "NAME", "CPU(cores)", "MEMORY(bytes)"]);
    assert!(row(&by_container, "main").is_some_and(|r| r[0] == "burner"), "{by_container}");
    let labelled = d.kubectl_ok(&["top", "pod", "-l", "app=burn"]);
    assert!(row(&labelled, "burner").is_some() && row(&labelled, "idle").is_none(), "{labelled}");
    let all = d.kubectl_ok(&["top", "pod", "-A", "--sort-by", "cpu"]);
    assert_eq!(all.lines().next().unwrap_or_default().split_whitespace().next(), Some("NAMESPACE"), "{all}");
    assert_eq!(all.lines().nth(1).unwrap_or_default().split_whitespace().collect::<Vec<_>>()[..2], ["default", "burner"], "sorted by CPU: {all}");
    for args in [&["top", "node"][..], &["top", "pod", "-l", "app=burn", "--containers"][..]] {
        let old = d.kubectl_version("1.27", args, None);
        let text = String::from_utf8_lossy(&old.stdout).to_string();
        assert!(old.status.success(), "kubectl 1.27 {args:?}: {}", String::from_utf8_lossy(&old.stderr));
        assert!(row(&text, "berth-it").is_some() || row(&text, "burner").is_some(), "kubectl 1.27 {args:?}: {text}");
    }
    let missing = d.kubectl(&["top", "pod", "nosuchpod"]);
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("not found"), "{}", String::from_utf8_lossy(&missing.stderr));

    // the objects as metrics-server serves them
    let pm: Value = serde_json::from_str(&d.kubectl_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/burner"])).expect("json");
    assert_eq!((pm["kind"].as_str(), pm["apiVersion"].as_str()), (Some("PodMetrics"), Some("metrics.k8s.io/v1beta1")), "{pm:#}");
    assert_eq!(pm["metadata"]["labels"]["tier"], "load", "the pod's labels: {pm:#}");
    assert!(pm["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{pm:#}");
    assert!(pm["window"].as_str().is_some_and(|w| w.ends_with('s')), "{pm:#}");
    assert_eq!(pm["containers"][0]["name"], "main", "{pm:#}");
    assert!(pm["containers"][0]["usage"]["cpu"].as_str().is_some_and(|c| c.ends_with('n') || c.ends_with('m')), "{pm:#}");
    assert!(pm["containers"][0]["usage"]["memory"].as_str().is_some_and(|m| m.ends_with("Ki") || m.ends_with("Mi")), "{pm:#}");
    let list: Value = serde_json::from_str(&d.kubectl_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/pods?labelSelector=app%3Didle"])).expect("json");
    assert_eq!(list["kind"], "PodMetricsList");
    assert_eq!(list["items"].as_array().map(|i| i.len()), Some(1), "{list:#}");
    let nm: Value = serde_json::from_str(&d.kubectl_ok(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/nodes/berth-it"])).expect("json");
    assert_eq!(nm["kind"], "NodeMetrics");
    assert!(nm["usage"]["cpu"].is_string() && nm["usage"]["memory"].is_string(), "{nm:#}");
    let gone = d.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/nosuchpod"]);
    assert!(!gone.status.success(), "a pod that does not exist");
    let table = d.kubectl_ok(&["get", "podmetrics", "burner"]);
    assert_eq!(table.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>(), ["NAME", "CPU", "MEMORY", "WINDOW"], "{table}");
    let resources = d.kubectl_ok(&["api-resources", "--api-group", "metrics.k8s.io", "--no-headers"]);
    assert!(resources.lines().any(|l| l.starts_with("nodes ") && l.contains("NodeMetrics")), "{resources}");
    assert!(resources.lines().any(|l| l.starts_with("pods ") && l.contains("PodMetrics") && l.contains("true")), "{resources}");

    // who may read: not anonymous users, not users without a role; `view` may (the metrics
    // reader role is aggregated into it)
    assert_eq!(http_status(&format!("{}/apis/metrics.k8s.io/v1beta1/nodes", server_url(&d))), "401");
    let denied = d.kubectl(&["top", "pod", "--as", "nobody"]);
    assert!(!denied.status.success(), "a user without a role");
    assert!(String::from_utf8_lossy(&denied.stderr).contains("forbidden"), "{}", String::from_utf8_lossy(&denied.stderr));
    d.kubectl_ok(&["create", "rolebinding", "viewer", "--clusterrole", "view", "--user", "viewer", "-n", "default"]);
    kubectl_text_until(&d, &["top", "pod", "--as", "viewer", "-n", "default"], "view reads pod metrics", |t| row(t, "burner").is_some());
    let nodes_denied = d.kubectl(&["top", "node", "--as", "viewer"]);
    assert!(!nodes_denied.status.success(), "view is namespaced: no node metrics");
}

#[tokio::test]
async fn disabling_metrics_server_takes_the_api_away() {
    let d = Daemon::start_server("", &["--disable-agent", "--disable", "metrics-server"]).await;
    let groups = d.kubectl_ok(&["api-versions"]);
    assert!(!groups.contains("metrics.k8s.io"), "{groups}");
    let top = d.kubectl(&["top", "node"]);
    assert!(!top.status.success());
    assert!(String::from_utf8_lossy(&top.stderr).contains("Metrics API not available"), "{}", String::from_utf8_lossy(&top.stderr));
    let roles = d.kubectl(&["get", "clusterrole", "system:aggregated-metrics-reader"]);
    assert!(!roles.status.success(), "no metrics reader role without the API");
}

fn deployment(name: &str, script: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: 1
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
        command: ["sh", "-c", "trap 'exit 0' TERM; {script}"]
        resources:
          requests: {{cpu: 50m, memory: 16Mi}}
          limits: {{cpu: 100m, memory: 64Mi}}
"#,
        image = busybox()
    )
}

/// Burns CPU while /tmp/burn exists (made at start), idles once it is removed.
const BURN: &str = "touch /tmp/burn; while :; do if [ -f /tmp/burn ]; then :; else sleep 1; fi; done";

fn events_of(d: &Daemon, name: &str) -> Vec<(String, String, String)> {
    let list = d.kubectl_json(&["get", "events", "--field-selector", &format!("involvedObject.kind=HorizontalPodAutoscaler,involvedObject.name={name}")]);
    list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("reason"), s("message"))
        })
        .collect()
}

fn condition_of(hpa: &Value, kind: &str) -> (String, String, String) {
    let c = condition(hpa, kind);
    let s = |k: &str| c[k].as_str().unwrap_or_default().to_string();
    (s("status"), s("reason"), s("message"))
}

#[tokio::test]
async fn an_hpa_scales_a_cpu_burning_deployment_up_to_its_maximum_and_back_down() {
    let d = Daemon::start_server("", &["--metric-resolution", "1s", "--horizontal-pod-autoscaler-sync-period", "1s"]).await;
    d.kubectl_until(&["get", "node", "berth-it"], LIMIT, "node Ready", |n| condition(n, "Ready")["status"] == "True");
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&deployment("burn", BURN)));
    d.kubectl_until(&["get", "deployment", "burn"], LIMIT, "the burner available", |v| v["status"]["availableReplicas"] == 1);

    // kubectl autoscale, then a short scale-down window through autoscaling/v2
    d.kubectl_ok(&["autoscale", "deployment", "burn", "--cpu-percent=50", "--min=1", "--max=3"]);
    d.kubectl_ok(&["patch", "hpa", "burn", "--type=merge", "-p", r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":5}}}}"#]);
    let hpa = d.kubectl_json(&["get", "hpa", "burn"]);
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(hpa["spec"]["metrics"][0]["resource"]["target"], serde_json::json!({"type": "Utilization", "averageUtilization": 50}), "{hpa:#}");
    let up = &hpa["spec"]["behavior"]["scaleUp"];
    assert_eq!(
        (up["stabilizationWindowSeconds"].as_i64(), up["selectPolicy"].as_str(), up["policies"].as_array().map(Vec::len)),
        (Some(0), Some("Max"), Some(2)),
        "defaults: {hpa:#}"
    );

    // the burner at its 100m limit is 200 % of its 50m request: 1 → 3 (the maximum)
    let hpa = d.kubectl_until(&["get", "hpa", "burn"], LIMIT, "scaled up to 3", |h| h["status"]["desiredReplicas"] == 3);
    assert_eq!(condition_of(&hpa, "ScalingActive").1, "ValidMetricFound", "{hpa:#}");
    assert_eq!(
        condition_of(&hpa, "ScalingActive").2,
        "the HPA was able to successfully calculate a replica count from cpu resource utilization (percentage of request)"
    );
    assert_eq!(
        condition_of(&hpa, "ScalingLimited"),
        ("True".into(), "TooManyReplicas".into(), "the desired replica count is more than the maximum replica count".into()),
        "{hpa:#}"
    );
    assert!(hpa["status"]["lastScaleTime"].is_string(), "{hpa:#}");
    let util = hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"].as_i64().unwrap_or_default();
    assert!(util > 100, "{hpa:#}");
    let events = events_of(&d, "burn");
    assert!(
        events.contains(&(
            "Normal".into(),
            "SuccessfulRescale".into(),
            "New size: 3; reason: cpu resource utilization (percentage of request) above target".into()
        )),
        "{events:?}"
    );
    d.kubectl_until(&["get", "deployment", "burn"], LIMIT, "3 replicas", |v| v["spec"]["replicas"] == 3);
    let table = d.kubectl_ok(&["get", "hpa", "burn"]);
    let cols: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(
        table.lines().next().unwrap_or_default().split_whitespace().collect::<Vec<_>>(),
        ["NAME", "REFERENCE", "TARGETS", "MINPODS", "MAXPODS", "REPLICAS", "AGE"]
    );
    assert_eq!((cols[1], cols[2]), ("Deployment/burn", "cpu:"), "{table}");
    assert!(cols[3].ends_with("%/50%"), "{table}");
    assert_eq!(cols[4..6], ["1", "3"], "{table}");
    let old = d.kubectl_version("1.27", &["get", "hpa", "burn"], None);
    assert!(old.status.success() && String::from_utf8_lossy(&old.stdout).contains("Deployment/burn"), "kubectl 1.27: {}", String::from_utf8_lossy(&old.stderr));
    let described = d.kubectl_ok(&["describe", "hpa", "burn"]);
    for want in [
        "Reference:",
        "Deployment/burn",
        "resource cpu on pods  (as a percentage of request):",
        "Min replicas:",
        "Max replicas:",
        "Scale Down:",
        "Stabilization Window: 5 seconds",
        "Deployment pods:",
        "ValidMetricFound",
        "SuccessfulRescale",
        "New size: 3; reason: cpu resource utilization (percentage of request) above target",
    ] {
        assert!(described.contains(want), "{want:?} missing:\n{described}");
    }
    // autoscaling/v1 sees the same object
    let v1: Value =
        serde_json::from_str(&d.kubectl_ok(&["get", "--raw", "/apis/autoscaling/v1/namespaces/default/horizontalpodautoscalers/burn"])).expect("json");
    assert_eq!((v1["apiVersion"].as_str(), v1["spec"]["targetCPUUtilizationPercentage"].as_i64()), (Some("autoscaling/v1"), Some(50)), "{v1:#}");
    assert!(v1["status"]["currentCPUUtilizationPercentage"].as_i64().is_some(), "{v1:#}");
    assert!(v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/conditions"].is_string(), "{v1:#}");
    assert!(v1["metadata"]["annotations"]["autoscaling.alpha.kubernetes.io/behavior"].is_string(), "{v1:#}");

    // the load stops: back to 1 after the 5 s scale-down window
    let pods = d.kubectl_until(&["get", "pods", "-l", "app=burn"], LIMIT, "3 running burners", |v| {
        v["items"].as_array().is_some_and(|i| i.len() == 3 && i.iter().all(|p| condition(p, "Ready")["status"] == "True"))
    });
    for p in pods["items"].as_array().into_iter().flatten() {
        d.kubectl_ok(&["exec", p["metadata"]["name"].as_str().unwrap_or_default(), "--", "rm", "-f", "/tmp/burn"]);
    }
    let hpa =
        d.kubectl_until(&["get", "hpa", "burn"], LIMIT, "scaled down to 1", |h| h["status"]["desiredReplicas"] == 1 && h["status"]["currentReplicas"] == 1);
    assert_eq!(
        condition_of(&hpa, "ScalingLimited"),
        ("False".into(), "DesiredWithinRange".into(), "the desired count is within the acceptable range".into()),
        "{hpa:#}"
    );
    assert_eq!(condition_of(&hpa, "AbleToScale").0, "True", "{hpa:#}");
    let events = events_of(&d, "burn");
    assert!(events.contains(&("Normal".into(), "SuccessfulRescale".into(), "New size: 1; reason: All metrics below target".into())), "{events:?}");
    d.kubectl_until(&["get", "deployment", "burn"], LIMIT, "1 replica", |v| v["spec"]["replicas"] == 1);

    // what cannot work says why: a target that does not exist, a metric of an API not served
    let missing = r#"{"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "nothere"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "nothere"}, "maxReplicas": 2, "targetCPUUtilizationPercentage": 50}}"#;
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(missing));
    let hpa = d.kubectl_until(&["get", "hpa", "nothere"], LIMIT, "FailedGetScale", |h| condition(h, "AbleToScale")["reason"] == "FailedGetScale");
    assert_eq!(condition_of(&hpa, "AbleToScale").2, "the HPA controller was unable to get the target's current scale: deployments.apps \"nothere\" not found");
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(&deployment("quiet", "sleep 3600")));
    let custom = r#"{"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "quiet"},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "quiet"}, "maxReplicas": 2,
        "metrics": [{"type": "Pods", "pods": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "10"}}}]}}"#;
    d.kubectl_ok_in(&["apply", "-f", "-"], Some(custom));
    let hpa = d.kubectl_until(&["get", "hpa", "quiet"], LIMIT, "FailedGetPodsMetric", |h| condition(h, "ScalingActive")["reason"] == "FailedGetPodsMetric");
    assert_eq!(
        condition_of(&hpa, "ScalingActive").2,
        "the HPA was unable to compute the replica count: unable to get metric rps: unable to fetch metrics from custom metrics API: no custom metrics API (custom.metrics.k8s.io) registered"
    );
    let events = events_of(&d, "quiet");
    assert!(
        events.iter().any(|e| e.1 == "FailedComputeMetricsReplicas"
            && e.2.starts_with("invalid metrics (1 invalid out of 1), first error is: failed to get pods metric value: ")),
        "{events:?}"
    );
}
