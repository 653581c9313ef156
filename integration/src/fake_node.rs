//! Fake nodes for the scheduler tests: Node objects with the capacity, labels and taints a test
//! gives, registered through kubectl like a kubelet would register them, whose Lease in
//! kube-node-lease and Ready condition a background thread keeps fresh (every 10 s, the
//! kubelet's lease renew interval). Nothing runs their pods; as a kubelet would, the thread
//! confirms the graceful deletion of pods on its nodes (force-deletes pods with a
//! deletionTimestamp), checking every second. The thread stops on drop.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};

use crate::apiserver::{kubectl_bin, ApiServer};

/// What a fake node offers.
#[derive(Debug, Clone)]
pub struct FakeNode {
    pub name: String,
    pub cpu: String,
    pub memory: String,
    pub pods: u32,
    pub labels: Vec<(String, String)>,
    /// (key, value, effect)
    pub taints: Vec<(String, String, String)>,
    pub extra_allocatable: Vec<(String, String)>,
}

impl FakeNode {
    pub fn new(name: &str, cpu: &str, memory: &str) -> FakeNode {
        FakeNode { name: name.into(), cpu: cpu.into(), memory: memory.into(), pods: 110, labels: vec![], taints: vec![], extra_allocatable: vec![] }
    }

    pub fn label(mut self, k: &str, v: &str) -> FakeNode {
        self.labels.push((k.into(), v.into()));
        self
    }

    pub fn taint(mut self, k: &str, v: &str, effect: &str) -> FakeNode {
        self.taints.push((k.into(), v.into(), effect.into()));
        self
    }

    fn allocatable(&self) -> Value {
        let mut m = serde_json::Map::new();
        m.insert("cpu".into(), json!(self.cpu));
        m.insert("memory".into(), json!(self.memory));
        m.insert("pods".into(), json!(self.pods.to_string()));
        for (k, v) in &self.extra_allocatable {
            m.insert(k.clone(), json!(v));
        }
        Value::Object(m)
    }
}

#[derive(Clone)]
struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
        let mut child = Command::new(kubectl_bin("1.33"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| e.to_string())?;
        if let (Some(input), Some(mut w)) = (stdin, child.stdin.take()) {
            use std::io::Write;
            w.write_all(input.as_bytes()).map_err(|e| e.to_string())?;
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).to_string())
        } else {
            Err(format!("kubectl {args:?}: {}", String::from_utf8_lossy(&out.stderr)))
        }
    }
}

fn now() -> String {
    let out = Command::new("date").args(["-u", "+%Y-%m-%dT%H:%M:%S.%6NZ"]).output().expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn heartbeat(k: &Kubectl, name: &str) -> Result<(), String> {
    let t = now();
    let secs = &t[..19];
    let status = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
        "lastHeartbeatTime": format!("{secs}Z"), "lastTransitionTime": format!("{secs}Z")}]}});
    k.run(&["patch", "node", name, "--subresource=status", "--type=strategic", "-p", &status.to_string()], None)?;
    let lease = json!({"spec": {"renewTime": t}});
    k.run(&["-n", "kube-node-lease", "patch", "lease", name, "--type=merge", "-p", &lease.to_string()], None)?;
    Ok(())
}

/// What the kubelet does when a pod on its node is deleted gracefully and its containers have
/// stopped: here there are none, so the deletion is confirmed at once.
fn finish_terminating(k: &Kubectl, nodes: &[String]) -> Result<(), String> {
    let list: Value = serde_json::from_str(&k.run(&["get", "pods", "-A", "-o", "json"], None)?).map_err(|e| e.to_string())?;
    for p in list["items"].as_array().into_iter().flatten() {
        let on_mine = p["spec"]["nodeName"].as_str().is_some_and(|n| nodes.iter().any(|m| m == n));
        if on_mine && p["metadata"]["deletionTimestamp"].is_string() {
            let (ns, name) = (p["metadata"]["namespace"].as_str().unwrap_or_default(), p["metadata"]["name"].as_str().unwrap_or_default());
            k.run(&["delete", "pod", "-n", ns, name, "--grace-period=0", "--force", "--ignore-not-found"], None)?;
        }
    }
    Ok(())
}

/// Registered fake nodes and their heartbeat thread.
pub struct FakeNodes {
    kubectl: Kubectl,
    names: Arc<Mutex<Vec<String>>>,
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl FakeNodes {
    pub fn start(api: &ApiServer) -> FakeNodes {
        let kubectl = Kubectl { kubeconfig: api.kubeconfig.clone(), cache: api.dir.path().join("kube-cache-fake-nodes") };
        let names: Arc<Mutex<Vec<String>>> = Arc::default();
        let (tx, rx) = mpsc::channel::<()>();
        let (k, n) = (kubectl.clone(), names.clone());
        let thread = std::thread::spawn(move || {
            // recv_timeout doubles as the stop signal: a message or a dropped sender ends the loop.
            let mut ticks = 0u32;
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(Duration::from_secs(1)) {
                ticks += 1;
                let list = n.lock().map(|l| l.clone()).unwrap_or_default();
                if list.is_empty() {
                    continue;
                }
                if let Err(e) = finish_terminating(&k, &list) {
                    eprintln!("fake nodes: {e}");
                }
                if !ticks.is_multiple_of(10) {
                    continue;
                }
                for name in list {
                    if let Err(e) = heartbeat(&k, &name) {
                        eprintln!("fake node {name}: {e}");
                    }
                }
            }
        });
        FakeNodes { kubectl, names, stop: Some(tx), thread: Some(thread) }
    }

    /// Registers a node (Node, its status, its Lease) and keeps it alive.
    pub fn add(&self, node: &FakeNode) {
        let labels: serde_json::Map<String, Value> =
            node.labels.iter().map(|(k, v)| (k.clone(), json!(v))).chain([("kubernetes.io/hostname".to_string(), json!(node.name))]).collect();
        let taints: Vec<Value> = node.taints.iter().map(|(k, v, e)| json!({"key": k, "value": v, "effect": e})).collect();
        let obj = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": node.name, "labels": labels}, "spec": {"taints": taints}});
        self.kubectl.run(&["create", "-f", "-"], Some(&obj.to_string())).expect("create node");
        let t = now();
        let status = json!({"status": {"capacity": node.allocatable(), "allocatable": node.allocatable(),
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "kubelet is posting ready status",
                "lastHeartbeatTime": format!("{}Z", &t[..19]), "lastTransitionTime": format!("{}Z", &t[..19])}]}});
        self.kubectl.run(&["patch", "node", &node.name, "--subresource=status", "--type=merge", "-p", &status.to_string()], None).expect("node status");
        let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": node.name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": node.name, "leaseDurationSeconds": 40, "renewTime": t}});
        self.kubectl.run(&["create", "-f", "-"], Some(&lease.to_string())).expect("create node lease");
        if let Ok(mut l) = self.names.lock() {
            l.push(node.name.clone());
        }
    }
}

impl Drop for FakeNodes {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
