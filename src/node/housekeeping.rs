//! The node's housekeeping loop: measures the eviction signals every monitoring interval,
//! keeps the node's pressure conditions, reclaims disk by removing unused images, evicts
//! pods one at a time in the kubelet's order, and runs image garbage collection on its own
//! period.
use super::eviction::{self, EvictionSettings, Monitor, Observation, PodFacts, Signal, Threshold};
use super::image_gc::{ImageGc, ImageGcSettings};
use super::{machine, NodeShared};
use crate::cri::v1 as cri;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tracing::Instrument;

/// How long the evictor waits for an evicted pod to stop before it looks again, as the
/// kubelet's pod cleanup timeout.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// An order to a pod worker: stop the pod and mark it evicted.
#[derive(Debug, Clone, PartialEq)]
pub struct Eviction {
    pub grace_seconds: i64,
    pub message: String,
}

pub struct Housekeeping {
    shared: Arc<NodeShared>,
    eviction: EvictionSettings,
    gc_settings: ImageGcSettings,
    gc: ImageGc,
    monitor: Monitor,
    started: Instant,
    last_gc: Option<Instant>,
}

/// What a pod uses of each resource, from the runtime's stats.
#[derive(Debug, Default, Clone)]
struct PodUsage {
    memory: u64,
    /// Working set by container name.
    container_memory: BTreeMap<String, u64>,
    disk: u64,
    container_disk: BTreeMap<String, u64>,
    processes: u64,
}

impl Housekeeping {
    pub fn new(shared: Arc<NodeShared>) -> Housekeeping {
        let eviction = shared.cfg.eviction.clone();
        let gc_settings = shared.cfg.image_gc.clone();
        Housekeeping { shared, eviction, gc_settings, gc: ImageGc::default(), monitor: Monitor::default(), started: Instant::now(), last_gc: None }
    }

    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        loop {
            self.round().await;
            tokio::select! {
                _ = stop.changed() => break,
                _ = tokio::time::sleep(self.eviction.monitoring_interval) => {}
            }
        }
    }

    async fn round(&mut self) {
        self.round_inner().instrument(tracing::info_span!("housekeeping")).await
    }

    async fn round_inner(&mut self) {
        if self.last_gc.map(|t| t.elapsed() >= self.gc_settings.period).unwrap_or(true) {
            self.last_gc = Some(Instant::now());
            if let Err(e) = self.gc.collect(self.shared.runtime.as_ref(), self.shared.images.as_ref(), &self.gc_settings).await {
                tracing::warn!("image garbage collection: {e}");
            }
        }
        if self.eviction.thresholds.is_empty() {
            return;
        }
        let observed = self.observe().await;
        let decision = self.monitor.step(&self.eviction, &observed, self.started.elapsed());
        self.publish_conditions(&decision.conditions).await;
        let Some((threshold, observation)) = decision.reclaim else { return };
        tracing::warn!(
            signal = threshold.signal.name(),
            available = %eviction::show(threshold.signal, observation.available),
            threshold = %eviction::show(threshold.signal, threshold.quantity(observation.capacity)),
            "eviction threshold met"
        );
        if threshold.signal.is_disk() && self.reclaim_disk(&threshold).await {
            return;
        }
        self.evict_one(&threshold, &observation).await;
    }

    async fn observe(&self) -> BTreeMap<Signal, Observation> {
        let mut out = BTreeMap::new();
        if let Some(m) = machine::memory() {
            out.insert(Signal::MemoryAvailable, Observation { available: m.available, capacity: m.capacity });
        }
        if let Some(fs) = machine::fs(&self.shared.cfg.state_dir) {
            out.insert(Signal::NodeFsAvailable, Observation { available: fs.available, capacity: fs.capacity });
            out.insert(Signal::NodeFsInodesFree, Observation { available: fs.inodes_free, capacity: fs.inodes });
        }
        if let Some(fs) = self.image_fs().await {
            out.insert(Signal::ImageFsAvailable, Observation { available: fs.available, capacity: fs.capacity });
            out.insert(Signal::ImageFsInodesFree, Observation { available: fs.inodes_free, capacity: fs.inodes });
        }
        if let Some(p) = machine::pids() {
            out.insert(Signal::PidAvailable, Observation { available: p.max.saturating_sub(p.current), capacity: p.max });
        }
        out
    }

    async fn image_fs(&self) -> Option<machine::Fs> {
        let info = self.shared.images.image_fs_info(cri::ImageFsInfoRequest {}).await.ok()?;
        let mount = info.image_filesystems.first()?.fs_id.as_ref()?.mountpoint.clone();
        machine::fs(std::path::Path::new(&mount))
    }

    async fn publish_conditions(&self, now: &[&'static str]) {
        let mut current = self.shared.pressure.write().await;
        for c in now.iter().filter(|c| !current.contains(c)) {
            tracing::warn!(condition = c, "node condition is now True");
        }
        for c in current.iter().filter(|c| !now.contains(c)) {
            tracing::info!(condition = c, "node condition is now False");
        }
        *current = now.to_vec();
    }

    /// Disk pressure: remove every unused image first; true when that was enough.
    async fn reclaim_disk(&mut self, t: &Threshold) -> bool {
        match self.gc.free(self.shared.runtime.as_ref(), self.shared.images.as_ref(), None, Duration::ZERO).await {
            Ok((freed, removed)) if !removed.is_empty() => tracing::info!(freed, images = removed.len(), "reclaimed disk from unused images"),
            Ok(_) => {}
            Err(e) => tracing::warn!("reclaiming images: {e}"),
        }
        let observed = self.observe().await;
        observed.get(&t.signal).map(|o| o.available >= t.quantity(o.capacity)).unwrap_or(false)
    }

    async fn usage(&self) -> BTreeMap<String, PodUsage> {
        let mut out: BTreeMap<String, PodUsage> = BTreeMap::new();
        let Ok(list) = self.shared.runtime.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest { filter: None }).await else { return out };
        let details = self.shared.details.read().await.clone();
        for s in list.stats {
            let Some(uid) = s.attributes.as_ref().and_then(|a| a.labels.get("io.kubernetes.pod.uid")).cloned() else { continue };
            let linux = s.linux.unwrap_or_default();
            let u = out.entry(uid.clone()).or_default();
            let ws = |m: &Option<cri::MemoryUsage>| m.as_ref().and_then(|m| m.working_set_bytes.as_ref()).map(|v| v.value).unwrap_or(0);
            u.memory = ws(&linux.memory);
            u.processes = linux.process.as_ref().and_then(|p| p.process_count.as_ref()).map(|v| v.value).unwrap_or(0);
            let log_dir = details.get(&uid).map(|d| d.1.clone());
            for c in &linux.containers {
                let name = c.attributes.as_ref().and_then(|a| a.metadata.as_ref()).map(|m| m.name.clone()).unwrap_or_default();
                u.container_memory.insert(name.clone(), ws(&c.memory));
                let rootfs = c.writable_layer.as_ref().and_then(|w| w.used_bytes.as_ref()).map(|v| v.value).unwrap_or(0);
                let logs = log_dir.as_ref().map(|d| machine::dir_usage(&d.join(&name)).0).unwrap_or(0);
                u.container_disk.insert(name, rootfs + logs);
                u.disk += rootfs + logs;
            }
            let volumes = super::volumes::pod_dir(&self.shared.cfg.pods_dir, &uid).join("volumes");
            u.disk += machine::dir_usage(&volumes).0;
        }
        out
    }

    /// Rank the node's live pods for the threshold's resource and evict the first one.
    async fn evict_one(&mut self, t: &Threshold, o: &Observation) {
        let usage = self.usage().await;
        let pods: Vec<k8s_openapi::api::core::v1::Pod> = self
            .shared
            .statuses
            .read()
            .await
            .values()
            .filter(|p| matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Pending") | Some("Running")))
            .cloned()
            .collect();
        let resource = match t.signal {
            Signal::MemoryAvailable => "memory",
            _ => "ephemeral-storage",
        };
        let mut facts: Vec<PodFacts> = pods
            .iter()
            .filter_map(|p| {
                let uid = p.metadata.uid.clone()?;
                let spec = p.spec.clone().unwrap_or_default();
                let priority = spec.priority.unwrap_or(0);
                if priority >= eviction::CRITICAL_PRIORITY {
                    return None;
                }
                let u = usage.get(&uid).cloned().unwrap_or_default();
                let used = match t.signal {
                    Signal::MemoryAvailable => u.memory,
                    Signal::PidAvailable => u.processes,
                    _ => u.disk,
                };
                let request = if t.signal == Signal::PidAvailable { 0 } else { super::convert::pod_request_bytes(&spec, resource) };
                Some(PodFacts { uid, priority, usage: used, request })
            })
            .collect();
        eviction::rank(t.signal, &mut facts);
        let Some(victim) = facts.first().cloned() else {
            tracing::warn!(signal = t.signal.name(), "under pressure but no pod can be evicted");
            return;
        };
        let Some(pod) = pods.iter().find(|p| p.metadata.uid.as_deref() == Some(victim.uid.as_str())) else { return };
        let spec = pod.spec.clone().unwrap_or_default();
        let mut message = format!(
            "The node was low on resource: {}. Threshold quantity: {}, available: {}. ",
            t.signal.resource(),
            eviction::show(t.signal, t.quantity(o.capacity)),
            eviction::show(t.signal, o.available)
        );
        let u = usage.get(&victim.uid).cloned().unwrap_or_default();
        if t.signal != Signal::PidAvailable {
            let per_container = if t.signal == Signal::MemoryAvailable { &u.container_memory } else { &u.container_disk };
            for c in &spec.containers {
                let used = per_container.get(&c.name).copied().unwrap_or(0);
                let request = super::convert::container_request_bytes(c, resource);
                if used > request {
                    message += &format!(
                        "Container {} was using {}, request is {}, has larger consumption of {}. ",
                        c.name,
                        eviction::show(Signal::MemoryAvailable, used),
                        eviction::show(Signal::MemoryAvailable, request),
                        resource
                    );
                }
            }
        }
        let own_grace = spec.termination_grace_period_seconds.unwrap_or(30);
        let grace_seconds = if t.is_hard() {
            // The kubelet's immediate eviction grace period.
            1
        } else if self.eviction.max_pod_grace_period > 0 {
            own_grace.min(self.eviction.max_pod_grace_period)
        } else {
            own_grace
        };
        tracing::warn!(pod = %super::manifest::full_name(pod), usage = victim.usage, request = victim.request, hard = t.is_hard(), grace_seconds, "evicting: {message}");
        self.shared.evictions.lock().await.insert(victim.uid.clone(), Eviction { grace_seconds, message });
        // Wait for the pod to be gone before judging the pressure again.
        let deadline = Instant::now() + CLEANUP_TIMEOUT;
        while Instant::now() < deadline {
            let phase = self.shared.statuses.read().await.get(&victim.uid).and_then(|p| p.status.as_ref()?.phase.clone());
            if phase.as_deref() != Some("Pending") && phase.as_deref() != Some("Running") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Admission under pressure, as the kubelet's eviction manager admits pods: nothing is
/// refused without pressure; under memory pressure only BestEffort pods are; under disk or
/// PID pressure every pod below critical priority is. Returns the rejection message.
pub fn admit(pressure: &[&'static str], qos: &str, priority: i32) -> Result<(), String> {
    if pressure.is_empty() || priority >= eviction::CRITICAL_PRIORITY {
        return Ok(());
    }
    let only_memory = pressure.iter().all(|c| *c == "MemoryPressure");
    if only_memory && qos != super::convert::QOS_BESTEFFORT {
        return Ok(());
    }
    Err(format!("The node had condition: [{}]. ", pressure.join(", ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_follows_the_pressure_kind() {
        assert!(admit(&[], "BestEffort", 0).is_ok());
        assert!(admit(&["MemoryPressure"], "Burstable", 0).is_ok());
        assert_eq!(admit(&["MemoryPressure"], "BestEffort", 0), Err("The node had condition: [MemoryPressure]. ".into()));
        assert!(admit(&["DiskPressure"], "Guaranteed", 0).is_err());
        assert!(admit(&["DiskPressure"], "Guaranteed", eviction::CRITICAL_PRIORITY).is_ok());
    }
}
