//! Helpers for `berth node` tests: the kubelet API's pods and manifests written atomically.
use crate::test_registry;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

pub fn busybox() -> String {
    format!("{}/berth/busybox:latest", test_registry())
}

pub async fn pods(url: &str) -> Vec<Value> {
    let out = tokio::process::Command::new("curl").args(["-sk", "--max-time", "5", &format!("{url}/pods")]).output().await.expect("curl");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["items"].as_array().cloned().unwrap_or_default()
}

pub async fn pod(url: &str, name: &str) -> Option<Value> {
    pods(url).await.into_iter().find(|p| p["metadata"]["name"].as_str() == Some(&format!("{name}-berth-it")))
}

/// Poll /pods until `check` holds for the pod (or fail with the last status seen).
pub async fn wait_for(url: &str, name: &str, what: &str, limit: Duration, check: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    let mut last = Value::Null;
    while start.elapsed() < limit {
        if let Some(p) = pod(url, name).await {
            if check(&p) {
                return p;
            }
            last = p;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("pod {name}: {what} not reached within {limit:?}; last status:\n{}", serde_json::to_string_pretty(&last["status"]).unwrap());
}

pub fn write(dir: &Path, file: &str, yaml: &str) {
    let tmp = dir.join(format!(".{file}.tmp"));
    std::fs::write(&tmp, yaml.replace("BUSYBOX", &busybox())).unwrap();
    std::fs::rename(tmp, dir.join(file)).unwrap();
}

pub fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

pub fn condition(p: &Value, kind: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == kind)
        .map(|c| c["status"].as_str().unwrap_or("").to_string())
        .unwrap_or_default()
}

pub async fn get(url: &str) -> String {
    let out = tokio::process::Command::new("curl").args(["-sk", "--max-time", "10", url]).output().await.expect("curl");
    String::from_utf8_lossy(&out.stdout).to_string()
}

pub fn container<'a>(p: &'a Value, name: &str) -> &'a Value {
    p["status"]["containerStatuses"].as_array().and_then(|a| a.iter().find(|c| c["name"] == name)).unwrap_or(&Value::Null)
}

/// Poll /containerLogs/{ns}/{pod}-berth-it/{container} until it contains `want`; returns the log.
pub async fn wait_for_log(url: &str, ns: &str, pod: &str, container: &str, want: &str) -> String {
    let logs_url = format!("{url}/containerLogs/{ns}/{pod}-berth-it/{container}");
    let start = Instant::now();
    loop {
        let log = get(&logs_url).await;
        if log.contains(want) {
            return log;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no {want:?} in the log of {pod}/{container}:\n{log}");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
}

/// Wait until the pod is gone from /pods.
pub async fn wait_gone(url: &str, name: &str) {
    let start = Instant::now();
    while pod(url, name).await.is_some() {
        assert!(start.elapsed() < Duration::from_secs(60), "pod {name} was not removed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
