//! The DaemonSet controller, as kube-controller-manager's: one pod per node that qualifies (see
//! [`pods::placement`]), made when a node appears or starts to qualify and removed when it goes
//! or stops to (a NoSchedule taint added later keeps a running pod, NoExecute does not); failed
//! daemon pods are replaced. Updates follow the strategy: RollingUpdate replaces old pods node by
//! node within maxUnavailable (default 1), or with maxSurge starts the new pod beside the old one
//! and removes the old one once the new one is available; OnDelete waits for the user to delete
//! them. Templates are kept as ControllerRevisions ([`history`]) and pods carry their revision's
//! hash, so `kubectl rollout status|history|undo daemonset` work. The status carries the
//! numbers `kubectl get daemonsets` shows.

pub mod pods;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use berth_apiserver::selector::LabelSelector;
use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;

use crate::controller::expectations::Expectations;
use crate::controller::history;
use crate::controller::{self, owner, pods::create_batches, pods::delete as delete_pod};
use crate::deployment::util::scaled;
use crate::informer::{key_of, Change, Informer, ObjectKey};
use crate::recorder::Recorder;
use crate::workqueue::WorkQueue;

const WORKERS: usize = 2;

/// A node's daemon pods: those of the current revision, and older ones.
type Revisions<'a> = (Vec<&'a Arc<Pod>>, Vec<&'a Arc<Pod>>);

pub struct Controller {
    client: kube::Client,
    daemonsets: Arc<Informer<DaemonSet>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    revisions: Arc<Informer<ControllerRevision>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    expectations: Expectations,
    recorder: Recorder,
}

fn hash_label(pod: &Pod) -> Option<&str> {
    pod.metadata.labels.as_ref()?.get(pods::REVISION_HASH).map(String::as_str)
}

fn oldest_first(list: &mut [Arc<Pod>]) {
    list.sort_by(|a, b| {
        let t = |p: &Pod| p.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

impl Controller {
    pub fn new(
        client: kube::Client,
        daemonsets: Arc<Informer<DaemonSet>>,
        pods: Arc<Informer<Pod>>,
        nodes: Arc<Informer<Node>>,
        revisions: Arc<Informer<ControllerRevision>>,
    ) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), "daemonset-controller");
        let c = Arc::new(Controller { client, daemonsets, pods, nodes, revisions, queue: WorkQueue::new(), expectations: Expectations::default(), recorder });
        let q = c.queue.clone();
        c.daemonsets.on_change(move |change| {
            let d = change.object();
            q.add(key_of(d.as_ref()));
        });
        let weak = Arc::downgrade(&c);
        c.pods.on_change(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let pod = change.object();
            if let Some(r) = owner::controller_of(&pod.metadata).filter(|r| r.kind == "DaemonSet") {
                c.queue.add((pod.metadata.namespace.clone().unwrap_or_default(), r.name.clone()));
            }
        });
        let weak = Arc::downgrade(&c);
        c.nodes.on_change(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let relevant = match change {
                Change::Updated { old, new } => {
                    old.metadata.labels != new.metadata.labels || old.spec.as_ref().map(|s| &s.taints) != new.spec.as_ref().map(|s| &s.taints)
                }
                _ => true,
            };
            if relevant {
                for d in c.daemonsets.list() {
                    c.queue.add(key_of(d.as_ref()));
                }
            }
        });
        c
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.daemonsets.synced().await;
        self.pods.synced().await;
        self.nodes.synced().await;
        self.revisions.synced().await;
        let this = self.clone();
        self.queue
            .clone()
            .run_workers(WORKERS, stop, move |k| {
                let this = this.clone();
                async move { this.sync(&k).await }
            })
            .await;
    }

    async fn sync(&self, k: &ObjectKey) -> Result<(), String> {
        let Some(ds) = self.daemonsets.get(&k.0, &k.1) else {
            self.expectations.forget(k);
            return Ok(());
        };
        let Some(selector) = ds.spec.as_ref().and_then(|s| LabelSelector::from_api(&s.selector).ok()) else { return Ok(()) };
        let uid = ds.metadata.uid.clone().unwrap_or_default();
        let deleting = ds.metadata.deletion_timestamp.is_some();
        let claim = owner::claim(&uid, deleting, &selector, self.pods.list_namespace(&k.0));
        let owned = owner::settle(&self.client, ds.as_ref(), claim).await?;
        if deleting {
            return Ok(());
        }
        let revisions: Vec<Arc<ControllerRevision>> =
            self.revisions.list_namespace(&k.0).into_iter().filter(|r| owner::controlled_by(&r.metadata, "DaemonSet", &uid)).collect();
        let name = ds.metadata.name.clone().unwrap_or_default();
        let template = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
        let history_owner = history::Owner {
            name: &name,
            namespace: &k.0,
            reference: owner::controller_ref(ds.as_ref()),
            template: &template,
            collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
            history_limit: ds.spec.as_ref().and_then(|s| s.revision_history_limit),
        };
        let (current, old_revisions) = history::sync(&self.client, &history_owner, revisions).await?;
        let hash = history::hash_of(&current, &name);
        let satisfied = self.expectations.satisfied(
            k,
            |n| self.pods.get(&k.0, n).is_some(),
            |u| !self.pods.list_namespace(&k.0).iter().any(|p| p.metadata.uid.as_deref() == Some(u) && p.metadata.deletion_timestamp.is_none()),
        );
        // the pods of each node (being deleted ones left out)
        let mut by_node: BTreeMap<String, Vec<Arc<Pod>>> = BTreeMap::new();
        for p in owned.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
            if let Some(n) = pods::node_of(p) {
                by_node.entry(n).or_default().push(p.clone());
            }
        }
        let nodes = self.nodes.list();
        let min_ready = ds.spec.as_ref().and_then(|s| s.min_ready_seconds).unwrap_or(0);
        let now = Timestamp::now();
        let mut create_on: Vec<String> = vec![];
        let mut doomed: Vec<Arc<Pod>> = vec![];
        let mut wanted: BTreeSet<String> = BTreeSet::new();
        for node in &nodes {
            let node_name = node.metadata.name.clone().unwrap_or_default();
            let placement = pods::placement(&ds, node);
            let mut here = by_node.remove(&node_name).unwrap_or_default();
            // failed daemon pods are replaced
            let (failed, mut running): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) = here.drain(..).partition(|p| controller::phase(p) == "Failed");
            doomed.extend(failed);
            if placement.schedule {
                wanted.insert(node_name.clone());
            }
            if !placement.keep {
                doomed.append(&mut running);
                continue;
            }
            if running.is_empty() {
                if placement.schedule {
                    create_on.push(node_name);
                }
                continue;
            }
            // one per node: the oldest stays (and, with surge, one of each revision)
            oldest_first(&mut running);
            let (current_pods, old_pods): (Vec<Arc<Pod>>, Vec<Arc<Pod>>) = running.into_iter().partition(|p| hash_label(p) == Some(hash.as_str()));
            doomed.extend(current_pods.iter().skip(1).cloned());
            doomed.extend(old_pods.iter().skip(1).cloned());
        }
        // pods of nodes that are gone
        doomed.extend(by_node.into_values().flatten());
        if satisfied {
            self.manage(&ds, k, &hash, create_on, doomed).await?;
            self.roll(&ds, k, &hash, &owned, &wanted, min_ready, now).await?;
        }
        let in_use: BTreeSet<String> = owned.iter().filter_map(|p| hash_label(p).map(String::from)).collect();
        history::cleanup(&self.client, &history_owner, &old_revisions, |r| in_use.contains(&history::hash_of(r, &name))).await?;
        self.write_status(&ds, &owned, &wanted, &hash, min_ready, now).await?;
        if min_ready > 0 {
            if let Some(at) = owned.iter().filter_map(|p| controller::available_at(p, min_ready, now)).min() {
                self.queue.add_after(k.clone(), at.duration_since(now).unsigned_abs() + std::time::Duration::from_millis(100));
            }
        }
        Ok(())
    }

    async fn manage(&self, ds: &DaemonSet, k: &ObjectKey, hash: &str, create_on: Vec<String>, doomed: Vec<Arc<Pod>>) -> Result<(), String> {
        for p in &doomed {
            self.expectations.deleted(k, p.metadata.uid.as_deref().unwrap_or(""));
            delete_pod(&self.client, &self.recorder, ds, p).await?;
        }
        self.create(ds, k, hash, create_on).await
    }

    async fn create(&self, ds: &DaemonSet, k: &ObjectKey, hash: &str, on: Vec<String>) -> Result<(), String> {
        if on.is_empty() {
            return Ok(());
        }
        let next = std::sync::Mutex::new(on.clone().into_iter());
        let (_, err) = create_batches(
            &self.client,
            &self.recorder,
            ds,
            on.len(),
            || pods::for_node(ds, hash, &next.lock().unwrap_or_else(|e| e.into_inner()).next().unwrap_or_default()),
            |n| self.expectations.created(k, n),
        )
        .await;
        err.map_or(Ok(()), Err)
    }

    /// Replaces old pods by the strategy.
    #[allow(clippy::too_many_arguments)]
    async fn roll(
        &self,
        ds: &DaemonSet,
        k: &ObjectKey,
        hash: &str,
        owned: &[Arc<Pod>],
        wanted: &BTreeSet<String>,
        min_ready: i32,
        now: Timestamp,
    ) -> Result<(), String> {
        let strategy = ds.spec.as_ref().and_then(|s| s.update_strategy.clone()).unwrap_or_default();
        if strategy.type_.as_deref() == Some("OnDelete") {
            return Ok(());
        }
        let desired = wanted.len() as i32;
        let ru = strategy.rolling_update.unwrap_or_default();
        let max_unavailable = scaled(ru.max_unavailable.as_ref().or(Some(&IntOrString::Int(1))), desired, true);
        let max_surge = scaled(ru.max_surge.as_ref().or(Some(&IntOrString::Int(0))), desired, true);
        let live: Vec<&Arc<Pod>> = owned.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && controller::phase(p) != "Failed").collect();
        let mut per_node: BTreeMap<String, Revisions<'_>> = BTreeMap::new();
        for p in &live {
            let Some(n) = pods::node_of(p).filter(|n| wanted.contains(n)) else { continue };
            let entry = per_node.entry(n).or_default();
            if hash_label(p) == Some(hash) {
                entry.0.push(p);
            } else {
                entry.1.push(p);
            }
        }
        let available = |p: &Pod| controller::is_available(p, min_ready, now);
        let mut unavailable =
            wanted.iter().filter(|n| per_node.get(*n).is_none_or(|(new, old)| !new.iter().chain(old.iter()).any(|p| available(p)))).count() as i32;
        let mut doomed: Vec<Arc<Pod>> = vec![];
        let mut surge_on: Vec<String> = vec![];
        let surging = per_node.values().filter(|(new, old)| !new.is_empty() && !old.is_empty()).count() as i32;
        let mut surge_left = max_surge - surging;
        for (node, (new, old)) in &per_node {
            if old.is_empty() {
                continue;
            }
            if max_surge > 0 {
                if new.iter().any(|p| available(p)) {
                    doomed.extend(old.iter().map(|p| (*p).clone()));
                } else if new.is_empty() && surge_left > 0 {
                    surge_on.push(node.clone());
                    surge_left -= 1;
                }
                continue;
            }
            let old_available = old.iter().any(|p| available(p));
            if !old_available {
                doomed.extend(old.iter().map(|p| (*p).clone()));
            } else if unavailable < max_unavailable {
                doomed.extend(old.iter().map(|p| (*p).clone()));
                unavailable += 1;
            }
        }
        self.manage(ds, k, hash, surge_on, doomed).await
    }

    async fn write_status(
        &self,
        ds: &DaemonSet,
        owned: &[Arc<Pod>],
        wanted: &BTreeSet<String>,
        hash: &str,
        min_ready: i32,
        now: Timestamp,
    ) -> Result<(), String> {
        let mut by_node: BTreeMap<String, Vec<&Arc<Pod>>> = BTreeMap::new();
        for p in owned.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && controller::phase(p) != "Failed") {
            if let Some(n) = pods::node_of(p) {
                by_node.entry(n).or_default().push(p);
            }
        }
        let count = |f: &dyn Fn(&[&Arc<Pod>]) -> bool| wanted.iter().filter(|n| by_node.get(*n).is_some_and(|ps| f(ps))).count() as i32;
        let scheduled = count(&|ps| !ps.is_empty());
        let ready = count(&|ps| ps.iter().any(|p| controller::is_ready(p)));
        let available = count(&|ps| ps.iter().any(|p| controller::is_available(p, min_ready, now)));
        let updated = count(&|ps| ps.iter().any(|p| hash_label(p) == Some(hash)));
        let misscheduled = by_node.keys().filter(|n| !wanted.contains(*n)).count() as i32;
        let desired = wanted.len() as i32;
        let before = ds.status.clone().unwrap_or_default();
        let status = DaemonSetStatus {
            current_number_scheduled: scheduled,
            desired_number_scheduled: desired,
            number_misscheduled: misscheduled,
            number_ready: ready,
            number_available: (available > 0).then_some(available),
            number_unavailable: (desired - available > 0).then_some(desired - available),
            updated_number_scheduled: (updated > 0).then_some(updated),
            observed_generation: ds.metadata.generation,
            collision_count: before.collision_count,
            conditions: before.conditions.clone(),
        };
        if ds.status.as_ref() == Some(&status) {
            return Ok(());
        }
        let mut next = ds.clone();
        next.status = Some(status);
        let api: kube::Api<DaemonSet> = kube::Api::namespaced(self.client.clone(), ds.metadata.namespace.as_deref().unwrap_or(""));
        match api.replace_status(ds.metadata.name.as_deref().unwrap_or(""), &PostParams::default(), &next).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("updating the daemonset status: {e}")),
        }
    }
}
