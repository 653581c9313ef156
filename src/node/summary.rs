//! The kubelet Summary API (/stats/summary, stats/v1alpha1): node CPU, memory, network,
//! filesystems and process IDs measured from the machine, and per pod and container CPU,
//! memory, network, root filesystem, logs and volumes from the runtime's stats.
use super::machine::{self, Fs};
use super::NodeShared;
use crate::cri::v1 as cri;
use crate::util::time::now_ns;
use serde_json::{json, Map, Value};
use std::path::Path;

fn time(ns: i64) -> Value {
    super::status::time(ns).map(|t| json!(t)).unwrap_or(Value::Null)
}

fn num(v: &Option<cri::UInt64Value>) -> Value {
    v.as_ref().map(|v| json!(v.value)).unwrap_or(Value::Null)
}

/// Drop the keys whose value is null, as the kubelet's `omitempty` does.
fn compact(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, compact(v))).collect::<Map<_, _>>()),
        Value::Array(a) => Value::Array(a.into_iter().map(compact).collect()),
        v => v,
    }
}

fn cpu(c: &cri::CpuUsage) -> Value {
    json!({"time": time(c.timestamp), "usageNanoCores": num(&c.usage_nano_cores), "usageCoreNanoSeconds": num(&c.usage_core_nano_seconds)})
}

fn memory(m: &cri::MemoryUsage) -> Value {
    json!({
        "time": time(m.timestamp),
        "availableBytes": num(&m.available_bytes),
        "usageBytes": num(&m.usage_bytes),
        "workingSetBytes": num(&m.working_set_bytes),
        "rssBytes": num(&m.rss_bytes),
        "pageFaults": num(&m.page_faults),
        "majorPageFaults": num(&m.major_page_faults),
    })
}

/// FsStats: the filesystem's capacity with `used` bytes and inodes of what is measured.
fn fs_stats(ts: i64, fs: Option<Fs>, used: Option<u64>, inodes_used: Option<u64>) -> Value {
    json!({
        "time": time(ts),
        "availableBytes": fs.map(|f| f.available),
        "capacityBytes": fs.map(|f| f.capacity),
        "usedBytes": used.or(fs.map(|f| f.used)),
        "inodesFree": fs.map(|f| f.inodes_free),
        "inodes": fs.map(|f| f.inodes),
        "inodesUsed": inodes_used.or(fs.map(|f| f.inodes.saturating_sub(f.inodes_free))),
    })
}

fn interface(i: &machine::Interface) -> Value {
    json!({"name": i.name, "rxBytes": i.rx_bytes, "rxErrors": i.rx_errors, "txBytes": i.tx_bytes, "txErrors": i.tx_errors})
}

fn cri_interface(i: &cri::NetworkInterfaceUsage) -> Value {
    json!({"name": i.name, "rxBytes": num(&i.rx_bytes), "rxErrors": num(&i.rx_errors), "txBytes": num(&i.tx_bytes), "txErrors": num(&i.tx_errors)})
}

/// NetworkStats: the default interface's counters inline, every interface in `interfaces`.
fn network(ts: i64, default: Option<Value>, all: Vec<Value>) -> Value {
    let mut v = json!({"time": time(ts), "interfaces": all});
    if let (Some(Value::Object(d)), Value::Object(m)) = (default, &mut v) {
        m.extend(d);
    }
    v
}

fn boot_time_ns() -> i64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("btime ")?.trim().parse::<i64>().ok()))
        .map(|s| s * 1_000_000_000)
        .unwrap_or(0)
}

async fn node_stats(shared: &NodeShared) -> Value {
    let now = now_ns();
    let cpu_now = shared.cpu.sample();
    let mem = machine::memory();
    let ifaces = machine::host_interfaces();
    let nodefs = machine::fs(&shared.cfg.state_dir);
    let image_fs = shared.images.image_fs_info(cri::ImageFsInfoRequest {}).await.ok().and_then(|r| r.image_filesystems.into_iter().next());
    let image_fs_json = image_fs.map(|u| {
        let mount = u.fs_id.map(|f| f.mountpoint).unwrap_or_default();
        fs_stats(u.timestamp, machine::fs(Path::new(&mount)), u.used_bytes.map(|b| b.value), u.inodes_used.map(|b| b.value))
    });
    let pids = machine::pids();
    json!({
        "nodeName": shared.cfg.node_name,
        "startTime": time(boot_time_ns()),
        "cpu": cpu_now.map(|(total, rate)| json!({"time": time(now), "usageNanoCores": rate, "usageCoreNanoSeconds": total})),
        "memory": mem.map(|m| json!({
            "time": time(now),
            "availableBytes": m.available,
            "usageBytes": m.usage,
            "workingSetBytes": m.working_set,
            "rssBytes": m.rss,
            "pageFaults": m.page_faults,
            "majorPageFaults": m.major_page_faults,
        })),
        "network": network(now, ifaces.first().map(interface), ifaces.iter().map(interface).collect()),
        "fs": fs_stats(now, nodefs, None, None),
        "runtime": {"imageFs": image_fs_json, "containerFs": image_fs_json},
        "rlimit": pids.map(|p| json!({"time": time(now), "maxpid": p.max, "curproc": p.current})),
    })
}

/// Bytes and inodes of the node-managed volumes of a pod, by volume name.
fn volume_stats(shared: &NodeShared, uid: &str, ts: i64) -> Vec<(String, Value, u64, u64)> {
    let root = super::volumes::pod_dir(&shared.cfg.pods_dir, uid).join("volumes");
    let mut out = Vec::new();
    let Ok(kinds) = std::fs::read_dir(&root) else { return out };
    for kind in kinds.flatten() {
        let Ok(vols) = std::fs::read_dir(kind.path()) else { continue };
        for v in vols.flatten() {
            let (bytes, inodes) = machine::dir_usage(&v.path());
            let mut stats = fs_stats(ts, machine::fs(&v.path()), Some(bytes), Some(inodes));
            if let Value::Object(m) = &mut stats {
                m.insert("name".into(), json!(v.file_name().to_string_lossy()));
            }
            out.push((v.file_name().to_string_lossy().to_string(), stats, bytes, inodes));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

async fn pod_stats(shared: &NodeShared) -> Vec<Value> {
    let Ok(list) = shared.runtime.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None }).await else { return vec![] };
    let pods = shared.statuses.read().await.clone();
    let details = shared.details.read().await;
    let nodefs = machine::fs(&shared.cfg.state_dir);
    let mut out = Vec::new();
    for s in list.stats {
        let Some(attrs) = s.attributes.as_ref() else { continue };
        let Some(uid) = attrs.labels.get("io.kubernetes.pod.uid") else { continue };
        let Some(pod) = pods.get(uid) else { continue };
        let linux = s.linux.clone().unwrap_or_default();
        let now = now_ns();
        let status = pod.status.clone().unwrap_or_default();
        let log_dir = details.get(uid).map(|d| d.1.clone());
        let mut ephemeral = (0u64, 0u64);
        let containers: Vec<Value> = linux
            .containers
            .iter()
            .map(|c| {
                let name = c.attributes.as_ref().and_then(|a| a.metadata.as_ref()).map(|m| m.name.clone()).unwrap_or_default();
                let rootfs = c.writable_layer.as_ref().map(|w| {
                    let used = w.used_bytes.as_ref().map(|v| v.value);
                    let inodes = w.inodes_used.as_ref().map(|v| v.value);
                    ephemeral.0 += used.unwrap_or(0);
                    ephemeral.1 += inodes.unwrap_or(0);
                    let mount = w.fs_id.as_ref().map(|f| f.mountpoint.clone()).unwrap_or_default();
                    fs_stats(w.timestamp, machine::fs(Path::new(&mount)), used, inodes)
                });
                let logs = log_dir.as_ref().map(|d| {
                    let (bytes, inodes) = machine::dir_usage(&d.join(&name));
                    ephemeral.0 += bytes;
                    ephemeral.1 += inodes;
                    fs_stats(now, nodefs, Some(bytes), Some(inodes))
                });
                json!({
                    "name": name,
                    "startTime": running_since(&status, &name),
                    "cpu": c.cpu.as_ref().map(cpu),
                    "memory": c.memory.as_ref().map(memory),
                    "rootfs": rootfs,
                    "logs": logs,
                })
            })
            .collect();
        let volumes = volume_stats(shared, uid, now);
        for (_, _, bytes, inodes) in &volumes {
            ephemeral.0 += bytes;
            ephemeral.1 += inodes;
        }
        let net = linux.network.as_ref().map(|n| {
            let all: Vec<Value> = n.default_interface.iter().chain(n.interfaces.iter()).map(cri_interface).collect();
            network(n.timestamp, n.default_interface.as_ref().map(cri_interface), all)
        });
        let md = &pod.metadata;
        out.push(json!({
            "podRef": {"name": md.name, "namespace": md.namespace.clone().unwrap_or_else(|| "default".into()), "uid": uid},
            "startTime": status.start_time,
            "containers": containers,
            "cpu": linux.cpu.as_ref().map(cpu),
            "memory": linux.memory.as_ref().map(memory),
            "network": net,
            "volume": volumes.into_iter().map(|v| v.1).collect::<Vec<_>>(),
            "ephemeral-storage": fs_stats(now, nodefs, Some(ephemeral.0), Some(ephemeral.1)),
            "process_stats": linux.process.as_ref().map(|p| json!({"process_count": num(&p.process_count)})),
        }));
    }
    out
}

/// The whole summary, as `GET /stats/summary` returns it.
pub async fn summary(shared: &NodeShared) -> Value {
    let node = node_stats(shared).await;
    let pods = pod_stats(shared).await;
    compact(json!({"node": node, "pods": pods}))
}

/// When container `name` of a pod (app or init) started running, if it runs.
pub fn running_since<'a>(status: &'a k8s_openapi::api::core::v1::PodStatus, name: &str) -> Option<&'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Time> {
    status
        .container_statuses
        .iter()
        .flatten()
        .chain(status.init_container_statuses.iter().flatten())
        .find(|c| c.name == name)
        .and_then(|c| c.state.as_ref()?.running.as_ref()?.started_at.as_ref())
}
