//! The EndpointSlice controller, as kube-controller-manager's `endpointslice`: for every Service
//! with a selector (not ExternalName) the discovery.k8s.io/v1 EndpointSlices of the pods it
//! selects, labelled `kubernetes.io/service-name` and managed-by
//! `endpointslice-controller.k8s.io`, owned by the service (the garbage collector deletes them
//! with it). Services without a selector and slices managed by someone else are left alone.
//!
//! Service, pod and node changes (through the shared informers) queue the services they
//! concern; a worker syncs one service at a time: [`reconciler`] plans the writes from the
//! caches, this module makes them, remembering them in the [`tracker`] so a lagging slice cache
//! is retried instead of acted on. Each slice write carries the
//! `endpoints.kubernetes.io/last-change-trigger-time` annotation. A failed sync records a
//! FailedToUpdateEndpointSlices warning on the service and is retried with back-off.
//!
//! - [`endpoint`]: one pod as an endpoint (addresses, conditions, ports).
//! - [`labels`]: the slices' labels, owner and name.
//! - [`reconciler`]: the plan (packing, placeholder, hints).
//! - [`tracker`]: our own writes, against a stale cache.

pub mod endpoint;
pub mod labels;
pub mod reconciler;
pub mod tracker;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::controller::service_pods::{self, selects};
use crate::controller::trigger_time::{self, TriggerTimes};
use crate::informer::{key_of, Change, Informer, ObjectKey};
use crate::recorder::{Recorder, WARNING};
use crate::workqueue::WorkQueue;
use reconciler::Plan;
use tracker::Tracker;

/// Workers syncing services at once (--concurrent-service-endpoint-syncs).
const WORKERS: usize = 5;
/// How long a slice change waits before its service syncs (upstream's
/// endpointSliceChangeMinSyncDelay).
const SLICE_CHANGE_DELAY: Duration = Duration::from_secs(1);
/// --max-endpoints-per-slice's default.
pub const DEFAULT_MAX_ENDPOINTS_PER_SLICE: usize = 100;
const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("EndpointSlice informer cache is out of date")]
    Stale,
    #[error("failed to create EndpointSlice for Service {service}: {source}")]
    Create { service: String, source: kube::Error },
    #[error("failed to update {slice} EndpointSlice for Service {service}: {source}")]
    Update { slice: String, service: String, source: kube::Error },
    #[error("failed to delete {slice} EndpointSlice for Service {service}: {source}")]
    Delete { slice: String, service: String, source: kube::Error },
    #[error("{}", .0.join(", "))]
    Skipped(Vec<String>),
}

pub struct Controller {
    client: kube::Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    nodes: Arc<Informer<Node>>,
    slices: Arc<Informer<EndpointSlice>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    tracker: Tracker,
    triggers: TriggerTimes,
    recorder: Recorder,
    max_per_slice: usize,
}

fn ns_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> String {
    meta.namespace.clone().unwrap_or_default()
}

impl Controller {
    /// The controller, its handlers registered on the shared informers. `client` writes as the
    /// endpointslice-controller service account.
    pub fn new(
        client: kube::Client,
        services: Arc<Informer<Service>>,
        pods: Arc<Informer<Pod>>,
        nodes: Arc<Informer<Node>>,
        slices: Arc<Informer<EndpointSlice>>,
        max_per_slice: usize,
    ) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), "endpoint-slice-controller");
        let c = Arc::new(Controller {
            client,
            services,
            pods,
            nodes,
            slices,
            queue: WorkQueue::new(),
            tracker: Tracker::default(),
            triggers: TriggerTimes::default(),
            recorder,
            max_per_slice: max_per_slice.max(1),
        });
        let q = c.queue.clone();
        c.services.on_change(move |change| q.add(key_of(change.object().as_ref())));
        let weak = Arc::downgrade(&c);
        c.pods.on_change(move |change| {
            if let Some(c) = weak.upgrade() {
                c.pod_changed(change);
            }
        });
        let weak = Arc::downgrade(&c);
        c.nodes.on_change(move |change| {
            if let Some(c) = weak.upgrade() {
                c.node_changed(change);
            }
        });
        let weak = Arc::downgrade(&c);
        c.slices.on_change(move |change| {
            if let Some(c) = weak.upgrade() {
                c.slice_changed(change);
            }
        });
        c
    }

    fn queue_services(&self, ns: &str, names: BTreeSet<String>) {
        for name in names {
            self.queue.add((ns.to_string(), name));
        }
    }

    fn pod_changed(&self, change: &Change<'_, Pod>) {
        let pod = change.object();
        let ns = ns_of(&pod.metadata);
        let services = self.services.list_namespace(&ns);
        let names = match change {
            Change::Added(p) | Change::Deleted(p) => service_pods::services_for(&services, p.metadata.labels.as_ref()),
            Change::Updated { old, new } => service_pods::services_to_update(&services, old, new),
        };
        self.queue_services(&ns, names);
    }

    /// A new node, or a node's zone changed: the services of the pods on it (their endpoints
    /// show the zone; a pod whose node was unknown can now be published).
    fn node_changed(&self, change: &Change<'_, Node>) {
        let zone = |n: &Node| n.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL)).cloned();
        let concerned = match change {
            Change::Added(_) => true,
            Change::Updated { old, new } => zone(old) != zone(new),
            Change::Deleted(_) => false,
        };
        if !concerned {
            return;
        }
        let node = change.object().metadata.name.clone().unwrap_or_default();
        for pod in self.pods.list() {
            if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()) != Some(node.as_str()) {
                continue;
            }
            let ns = ns_of(&pod.metadata);
            let names = service_pods::services_for(&self.services.list_namespace(&ns), pod.metadata.labels.as_ref());
            self.queue_services(&ns, names);
        }
    }

    fn queue_for_slice(&self, slice: &EndpointSlice) {
        if let Some(svc) = labels::service_of(slice) {
            self.queue.add_after((ns_of(&slice.metadata), svc.to_string()), SLICE_CHANGE_DELAY);
        }
    }

    /// Slice changes that are not our own writes bring the service back to its state.
    fn slice_changed(&self, change: &Change<'_, EndpointSlice>) {
        let service_key = |s: &EndpointSlice| labels::service_of(s).map(|n| (ns_of(&s.metadata), n.to_string()));
        match change {
            Change::Added(s) => {
                if labels::managed(s) && service_key(s).is_some_and(|k| self.tracker.should_sync(&k, s)) {
                    self.queue_for_slice(s);
                }
            }
            Change::Updated { old, new } => {
                if labels::service_of(old) != labels::service_of(new) {
                    self.queue_for_slice(old);
                    self.queue_for_slice(new);
                    return;
                }
                let ours = labels::managed(new) && service_key(new).is_some_and(|k| self.tracker.should_sync(&k, new));
                if labels::managed(old) != labels::managed(new) || ours {
                    self.queue_for_slice(new);
                }
            }
            Change::Deleted(s) => {
                if labels::managed(s) && service_key(s).is_some_and(|k| !self.tracker.handle_deletion(&k, s)) {
                    self.queue_for_slice(s);
                }
            }
        }
    }

    /// Runs the workers until `stop` (the informers run elsewhere).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.services.synced().await;
        self.pods.synced().await;
        self.nodes.synced().await;
        self.slices.synced().await;
        let this = self.clone();
        self.queue
            .clone()
            .run_workers(WORKERS, stop, move |k| {
                let this = this.clone();
                let span = tracing::debug_span!("endpointslice-sync", service = %format!("{}/{}", k.0, k.1));
                async move { this.sync(&k).await.map_err(|e| e.to_string()) }.instrument(span)
            })
            .await;
    }

    async fn sync(&self, key: &ObjectKey) -> Result<(), SyncError> {
        let (ns, name) = key;
        let Some(svc) = self.services.get(ns, name) else {
            self.triggers.delete(key);
            self.tracker.delete_service(key);
            return Ok(());
        };
        let Some(selector) = service_pods::selector(&svc) else { return Ok(()) };
        let pods: Vec<Arc<Pod>> = self.pods.list_namespace(ns).into_iter().filter(|p| selects(selector, p.metadata.labels.as_ref())).collect();
        let slices: Vec<Arc<EndpointSlice>> = self
            .slices
            .list_namespace(ns)
            .into_iter()
            .filter(|s| labels::managed(s) && labels::service_of(s) == Some(name.as_str()) && s.metadata.deletion_timestamp.is_none())
            .collect();
        if self.tracker.stale(key, &slices) {
            return Err(SyncError::Stale);
        }
        let trigger = self.triggers.compute(key, &svc, &pods);
        let zone = |node: &str| self.nodes.get("", node).map(|n| n.metadata.labels.as_ref().and_then(|l| l.get(ZONE_LABEL)).cloned());
        let plan = reconciler::plan(&svc, &pods, &slices, self.max_per_slice, &zone);
        let result = self.write(&svc, key, plan, trigger).await;
        if let Err(e) = &result {
            self.recorder.event(svc.as_ref(), WARNING, "FailedToUpdateEndpointSlices", format!("Error updating Endpoint Slices for Service {ns}/{name}: {e}"));
        }
        result
    }

    /// Makes the plan's writes: creates (not for a service being deleted), updates, deletes.
    async fn write(&self, svc: &Service, key: &ObjectKey, plan: Plan, trigger: Option<jiff::Timestamp>) -> Result<(), SyncError> {
        let service = format!("{}/{}", key.0, key.1);
        let api: kube::Api<EndpointSlice> = kube::Api::namespaced(self.client.clone(), &key.0);
        if svc.metadata.deletion_timestamp.is_none() {
            for mut slice in plan.create {
                annotate(&mut slice, trigger);
                match api.create(&PostParams::default(), &slice).await {
                    Ok(created) => self.tracker.written(key, &created),
                    // the namespace is going: creates will keep failing, drop the work
                    Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("because it is being terminated") => return Ok(()),
                    Err(source) => return Err(SyncError::Create { service, source }),
                }
            }
        }
        for mut slice in plan.update {
            annotate(&mut slice, trigger);
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.replace(&name, &PostParams::default(), &slice).await {
                Ok(updated) => self.tracker.written(key, &updated),
                Err(source) => return Err(SyncError::Update { slice: name, service, source }),
            }
        }
        for slice in plan.delete {
            let name = slice.metadata.name.clone().unwrap_or_default();
            match api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => self.tracker.expect_deletion(key, &slice),
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(SyncError::Delete { slice: name, service, source }),
            }
        }
        if !plan.skipped.is_empty() {
            return Err(SyncError::Skipped(plan.skipped));
        }
        Ok(())
    }
}

/// Sets (or, with no new trigger time, removes) the last-change-trigger-time annotation.
fn annotate(slice: &mut EndpointSlice, trigger: Option<jiff::Timestamp>) {
    let mut annotations = slice.metadata.annotations.take().unwrap_or_default();
    match trigger {
        Some(t) => annotations.insert(trigger_time::ANNOTATION.into(), trigger_time::format(t)),
        None => annotations.remove(trigger_time::ANNOTATION),
    };
    slice.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
}
