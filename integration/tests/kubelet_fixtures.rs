//! What an upstream kubelet sends, replayed: each fixture in `integration/fixtures/kubelet/`
//! is the ordered CRI calls of a pod's life as a real kubelet made them against Berth (see the
//! README there), sent again through the project's CRI client to the real `berth runtime`,
//! each answer checked against what the kubelet needs from it.
use berth_integration::cri_json::{self, cri, CriReply};
use berth_integration::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static SEQ: AtomicU32 = AtomicU32::new(0);

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/kubelet")
}

/// A private CNI network (Berth's default config on its own bridge and pod CIDR) and a
/// private cgroup root standing in for the kubelet's `--cgroup-root`; all removed on drop.
struct Node {
    daemon: Daemon,
    _bridge: LinkGuard,
    cgroup_root: String,
    pod_cidr: (u32, u32),
    scratch: TempDir,
}

impl Drop for Node {
    fn drop(&mut self) {
        // The daemon's own Drop stops and removes its pods; the cgroups the kubelet would
        // have made above them are ours.
        self.daemon.remove_leftovers();
        remove_cgroup_tree(&self.cgroup_root);
    }
}

async fn node() -> Node {
    let n = SEQ.fetch_add(1, Ordering::SeqCst);
    let pid = std::process::id();
    let bridge = format!("bkl{}", (pid * 3 + n) % 1_000_000);
    let octet = 60 + (pid + n * 7) % 40;
    let cidr = format!("10.{octet}.{}.0/24", 200 + n % 50);
    let scratch = TempDir::new("kubelet-fixture");
    let conf_dir = scratch.path().join("cni");
    let own = berth_bin().parent().expect("berth's directory").display().to_string();
    let config = format!(
        "[images]\nsandbox_image = \"{reg}/berth/pause:latest\"\n\n[network]\nconf_dir = \"{conf}\"\nbin_dirs = [\"{own}\", \"/usr/lib/cni\"]\n\
         pod_cidr = \"{cidr}\"\nbridge = \"{bridge}\"\nmasquerade = false\n\n\
         [registry.mirrors.\"docker.io\"]\nendpoints = [\"http://{reg}\"]\nupstream = false\n",
        reg = test_registry(),
        conf = conf_dir.display(),
    );
    let daemon = Daemon::start(&config).await;
    let base = u32::from_be_bytes([10, octet as u8, (200 + n % 50) as u8, 0]);
    Node { daemon, _bridge: LinkGuard(bridge), cgroup_root: format!("/berth-kl-{pid}-{n}"), pod_cidr: (base, 24), scratch }
}

/// One fixture's values that differ per run, and the IDs its calls returned.
struct Vars {
    values: HashMap<String, String>,
}

impl Vars {
    fn new(node: &Node, fixture: &Value) -> Vars {
        let mut values = HashMap::new();
        values.insert("registry".to_string(), test_registry());
        values.insert("cgroup_root".to_string(), node.cgroup_root.clone());
        for (key, dir) in [("logs", "pod-logs"), ("kubelet", "kubelet"), ("host", "host")] {
            let p = node.scratch.path().join(dir);
            std::fs::create_dir_all(&p).expect("scratch dir");
            values.insert(key.to_string(), p.display().to_string());
        }
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        for (i, name) in fixture["uids"].as_array().into_iter().flatten().filter_map(Value::as_str).enumerate() {
            // A UID of a static pod's form (32 hex digits), unique per run.
            let uid = format!("{:08x}{:08x}{:016x}", std::process::id(), n, i);
            values.insert(format!("uid.{name}"), uid);
        }
        Vars { values }
    }

    fn expand_str(&self, s: &str) -> String {
        let mut out = String::new();
        let mut rest = s;
        while let Some(start) = rest.find("{{") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find("}}").unwrap_or_else(|| panic!("unclosed placeholder in {s:?}"));
            let key = &after[..end];
            let v = self.values.get(key).unwrap_or_else(|| panic!("placeholder {{{{{key}}}}} in {s:?} has no value (known: {:?})", self.values.keys()));
            out.push_str(v);
            rest = &after[end + 2..];
        }
        out.push_str(rest);
        out
    }

    fn expand(&self, v: &Value) -> Value {
        match v {
            Value::String(s) => Value::String(self.expand_str(s)),
            Value::Array(a) => Value::Array(a.iter().map(|x| self.expand(x)).collect()),
            Value::Object(m) => Value::Object(m.iter().map(|(k, x)| (self.expand_str(k), self.expand(x))).collect()),
            other => other.clone(),
        }
    }
}

/// Replay the fixture `name`; panics naming the failing call, its error and the daemon's log.
/// `pending` names fixes not yet in Berth whose checks (`expect_pending.<fix>` of a call) are
/// added to the call's `expect`: the test named after a fix passes them, the others do not.
async fn replay(name: &str, pending: &[&str]) {
    let path = fixture_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let fixture: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let node = node().await;
    let mut vars = Vars::new(&node, &fixture);
    // What the kubelet prepares outside the CRI before it calls: files it bind-mounts
    // (etc-hosts, termination-log) and directories (pod and container log dirs, volumes).
    for d in fixture["dirs"].as_array().into_iter().flatten() {
        std::fs::create_dir_all(vars.expand_str(d.as_str().expect("dirs are strings"))).expect("create fixture dir");
    }
    for (file, content) in fixture["files"].as_object().into_iter().flatten() {
        let p = PathBuf::from(vars.expand_str(file));
        std::fs::create_dir_all(p.parent().expect("file has a parent")).expect("create fixture file's dir");
        std::fs::write(&p, vars.expand_str(content.as_str().expect("file contents are strings"))).expect("write fixture file");
    }
    let mut rt = node.daemon.runtime().await;
    let mut img = node.daemon.images().await;
    let calls = fixture["calls"].as_array().unwrap_or_else(|| panic!("{name}: no calls"));
    for (i, step) in calls.iter().enumerate() {
        let rpc = step["rpc"].as_str().unwrap_or_else(|| panic!("{name} call #{i}: no rpc"));
        let request = vars.expand(&step["request"]);
        let mut expect = vars.expand(&step["expect"]);
        for fix in pending {
            if let Some(extra) = step["expect_pending"][*fix].as_object() {
                let obj = expect.as_object_mut().map(std::mem::take).unwrap_or_default();
                let mut merged = obj;
                merged.extend(extra.iter().map(|(k, v)| (k.clone(), vars.expand(v))));
                expect = Value::Object(merged);
            }
        }
        let wait = Duration::from_secs_f64(expect["wait_s"].as_f64().unwrap_or(0.0));
        let started = Instant::now();
        let reply = loop {
            let call = cri_json::call(rpc, &request).unwrap_or_else(|e| panic!("{name} call #{i} {rpc}: fixture does not fit the CRI message: {e}"));
            let outcome = cri_json::send(&mut rt, &mut img, call).await;
            match check(&node, &expect, outcome) {
                Ok(reply) => break reply,
                Err(why) if started.elapsed() < wait => {
                    let _ = why;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(why) => {
                    let log = node.daemon.log();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect();
                    panic!(
                        "\n=== kubelet fixture {name}: call #{i} {rpc} did not give what the kubelet expects ===\n{why}\nrequest: {}\n--- berth log (last lines) ---\n{}\n",
                        serde_json::to_string(&request).unwrap_or_default(),
                        tail.join("\n")
                    );
                }
            }
        };
        if let Some(var) = step["save"].as_str() {
            let id = match &reply {
                Some(CriReply::RunPodSandbox(r)) => r.pod_sandbox_id.clone(),
                Some(CriReply::CreateContainer(r)) => r.container_id.clone(),
                Some(CriReply::PullImage(r)) => r.image_ref.clone(),
                other => panic!("{name} call #{i} {rpc}: `save` needs RunPodSandbox, CreateContainer or PullImage, got {other:?}"),
            };
            vars.values.insert(var.to_string(), id);
        }
    }
}

/// Whether a call's outcome is what the kubelet expects: `Ok(reply)` or why not.
fn check(node: &Node, expect: &Value, outcome: Result<CriReply, tonic::Status>) -> Result<Option<CriReply>, String> {
    let reply = match (outcome, expect["code"].as_str()) {
        (Ok(r), None) => r,
        (Ok(r), Some(code)) => return Err(format!("expected the error code {code}, got success: {r:?}")),
        (Err(s), Some(code)) if format!("{:?}", s.code()) == code => return Ok(None),
        (Err(s), _) => return Err(format!("error {:?}: {}", s.code(), s.message())),
    };
    let want = |k: &str| expect.get(k).filter(|v| !v.is_null());
    match &reply {
        CriReply::Version(v) => {
            if let Some(w) = want("runtime_api_version") {
                eq("runtime_api_version", &v.runtime_api_version, w)?;
            }
        }
        CriReply::Status(s) => {
            let st = s.status.clone().unwrap_or_default();
            for cond in want("conditions_true").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
                let ok = st.conditions.iter().any(|c| c.r#type == cond && c.status);
                if !ok {
                    return Err(format!("condition {cond} not true: {:?}", st.conditions));
                }
            }
        }
        CriReply::RuntimeConfig(r) => {
            if let Some(w) = want("cgroup_driver") {
                let got = r.linux.as_ref().map(|l| l.cgroup_driver).unwrap_or_default();
                let name = if got == cri::CgroupDriver::Cgroupfs as i32 { "CGROUPFS" } else { "SYSTEMD" };
                eq("linux.cgroup_driver", name, w)?;
            }
        }
        CriReply::PodSandboxStatus(r) => {
            let st = r.status.clone().ok_or("no status in the answer")?;
            if let Some(w) = want("state") {
                eq("state", enum_name(cri_json::SANDBOX_STATE, st.state), w)?;
            }
            let ip = st.network.as_ref().map(|n| n.ip.clone()).unwrap_or_default();
            match want("ip").and_then(Value::as_str) {
                Some("pod_cidr") => {
                    let addr: std::net::Ipv4Addr = ip.parse().map_err(|_| format!("network.ip {ip:?} is not an IPv4 address"))?;
                    let (base, len) = node.pod_cidr;
                    if u32::from(addr) >> (32 - len) != base >> (32 - len) {
                        return Err(format!("network.ip {ip} is not in the pod CIDR"));
                    }
                }
                Some("none") if !ip.is_empty() => return Err(format!("network.ip {ip:?}, expected none (host network)")),
                _ => {}
            }
        }
        CriReply::ListPodSandbox(r) => {
            if let Some(w) = want("ids") {
                ids_eq(r.items.iter().map(|p| p.id.clone()), w)?;
            }
        }
        CriReply::ListContainers(r) => {
            if let Some(w) = want("ids") {
                ids_eq(r.containers.iter().map(|c| c.id.clone()), w)?;
            }
        }
        CriReply::ContainerStatus(r) => {
            let st = r.status.clone().ok_or("no status in the answer")?;
            if let Some(w) = want("state") {
                eq("state", enum_name(cri_json::CONTAINER_STATE, st.state), w)?;
            }
            if let Some(w) = want("exit_code") {
                eq("exit_code", &st.exit_code.to_string(), &Value::String(w.to_string()))?;
            }
            if let Some(w) = want("reason") {
                eq("reason", &st.reason, w)?;
            }
            if let Some(w) = want("log_path") {
                eq("log_path", &st.log_path, w)?;
            }
            if let Some(w) = want("oom_score_adj") {
                let meta =
                    std::fs::read(node.daemon.data_dir().join("containers").join(&st.id).join("meta.json")).map_err(|e| format!("container record: {e}"))?;
                let meta: Value = serde_json::from_slice(&meta).map_err(|e| format!("container record: {e}"))?;
                // The container's processes are those of its cgroup (v1: any controller's copy).
                let cg = meta["cgroup"]["path"].as_str().unwrap_or_default().trim_start_matches('/').to_string();
                let procs = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
                    .iter()
                    .find_map(|root| std::fs::read_to_string(Path::new(root).join(&cg).join("cgroup.procs")).ok())
                    .ok_or_else(|| format!("no cgroup.procs for the container's cgroup {cg:?}"))?;
                let pid = procs.lines().next().ok_or_else(|| format!("no process in the container's cgroup {cg:?}"))?.trim().to_string();
                let got = std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj")).map_err(|e| format!("/proc/{pid}/oom_score_adj: {e}"))?;
                let lowering = w.as_str().and_then(|v| v.parse::<i64>().ok()).is_some_and(|v| v < 0);
                if lowering && !has_cap_sys_resource() {
                    // Lowering it needs CAP_SYS_RESOURCE, which some hosts (this CI's) lack:
                    // then the runtime warns and starts the container anyway.
                    let log = node.daemon.log();
                    let want_warning = format!("setting oom_score_adj to {}", w.as_str().unwrap_or_default());
                    if !log.contains(&want_warning) {
                        return Err(format!("no CAP_SYS_RESOURCE here and no {want_warning:?} warning in the daemon's log"));
                    }
                } else {
                    eq("oom_score_adj of the container's process", got.trim(), w)?;
                }
            }
            if let Some(lines) = want("log_contains") {
                let log = std::fs::read_to_string(&st.log_path).map_err(|e| format!("reading the log {:?}: {e}", st.log_path))?;
                for l in lines.as_array().into_iter().flatten().filter_map(Value::as_str) {
                    if !log.contains(l) {
                        return Err(format!("log {} lacks {l:?}:\n{log}", st.log_path));
                    }
                }
            }
        }
        CriReply::ExecSync(r) => {
            if let Some(w) = want("exit_code") {
                eq("exit_code", &r.exit_code.to_string(), &Value::String(w.to_string()))?;
            }
            if let Some(w) = want("stdout_contains").and_then(Value::as_str) {
                let out = String::from_utf8_lossy(&r.stdout);
                if !out.contains(w) {
                    return Err(format!("stdout {out:?} lacks {w:?} (stderr {:?})", String::from_utf8_lossy(&r.stderr)));
                }
            }
        }
        CriReply::ListContainerStats(r) => {
            if let Some(w) = want("ids") {
                ids_eq(r.stats.iter().filter_map(|s| s.attributes.as_ref().map(|a| a.id.clone())), w)?;
            }
        }
        CriReply::ListPodSandboxStats(r) => {
            if let Some(w) = want("ids") {
                ids_eq(r.stats.iter().filter_map(|s| s.attributes.as_ref().map(|a| a.id.clone())), w)?;
            }
        }
        CriReply::ImageStatus(r) => {
            if let Some(w) = want("present").and_then(Value::as_bool) {
                if r.image.is_some() != w {
                    return Err(format!("image present: {}, expected {w}", r.image.is_some()));
                }
            }
        }
        CriReply::PullImage(r) if r.image_ref.is_empty() => return Err("empty image_ref".into()),
        CriReply::ImageFsInfo(r) if want("nonempty").is_some() && r.image_filesystems.is_empty() => return Err("no image filesystems".into()),
        _ => {}
    }
    Ok(Some(reply))
}

fn enum_name(names: &[(&'static str, i32)], v: i32) -> &'static str {
    names.iter().find(|(_, n)| *n == v).map(|(s, _)| *s).unwrap_or("?")
}

fn eq(what: &str, got: &str, want: &Value) -> Result<(), String> {
    let w = want.as_str().map(String::from).unwrap_or_else(|| want.to_string());
    if got == w {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, expected {w:?}"))
    }
}

fn ids_eq(got: impl Iterator<Item = String>, want: &Value) -> Result<(), String> {
    let mut got: Vec<String> = got.collect();
    let mut want: Vec<String> = want.as_array().into_iter().flatten().filter_map(|v| v.as_str().map(String::from)).collect();
    got.sort();
    want.sort();
    if got == want {
        Ok(())
    } else {
        Err(format!("ids: got {got:?}, expected {want:?}"))
    }
}

#[tokio::test]
async fn kubelet_node_startup() {
    replay("node-startup", &[]).await;
}

#[tokio::test]
async fn kubelet_oneshot_host_network_pod_exits_3() {
    replay("oneshot-host-network", &[]).await;
}

/// Also: the kubelet sends a hugepage limit of 0 for every page size in every container; a
/// host without a mounted hugetlb controller (this one) still starts them, as containerd does.
#[tokio::test]
async fn kubelet_guaranteed_pod_with_exclusive_cpu_and_probes() {
    replay("guaranteed", &[]).await;
}

#[tokio::test]
async fn kubelet_secure_pod_runs_as_user_1000_read_only() {
    replay("secure", &[]).await;
}

#[tokio::test]
async fn kubelet_burstable_pod_with_init_volumes_host_port_recreated_then_deleted() {
    replay("burstable-recreate", &[]).await;
}

/// The kubelet gives a Guaranteed container oom_score_adj -997 (Burstable ones 2..999,
/// BestEffort 1000). Lowering it needs CAP_SYS_RESOURCE: where the host has it the container
/// gets -997, where not (this machine) the runtime says so in its log and starts it anyway.
#[tokio::test]
async fn oom_score_adj_of_a_guaranteed_container_is_applied() {
    replay("guaranteed", &["oom-score-adj"]).await;
}

/// Whether this process may hold CAP_SYS_RESOURCE (bit 24 of its bounding set).
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("CapBnd:")).and_then(|v| u64::from_str_radix(v.trim(), 16).ok()).is_some_and(|caps| caps & (1 << 24) != 0)
}
