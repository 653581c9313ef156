//! The Endpoints controller, as kube-controller-manager's `endpoint`: for every Service with a
//! selector (not ExternalName) a core/v1 Endpoints of the same name whose [`subsets`] list the
//! pods it selects (ready ones in addresses, the others in notReadyAddresses; terminating pods
//! only with publishNotReadyAddresses), labelled as the service (plus
//! `service.kubernetes.io/headless` for a headless one), annotated with
//! `endpoints.kubernetes.io/last-change-trigger-time` and, past 1000 addresses,
//! `endpoints.kubernetes.io/over-capacity: truncated`. The Endpoints is deleted with its
//! service (by this controller: it has no owner reference); services without a selector and
//! their Endpoints are left alone. At start every Endpoints is checked once, so one whose
//! service went while the controller was down is deleted.
//!
//! A write that fails records FailedToCreateEndpoint / FailedToUpdateEndpoint on the Endpoints
//! and is retried with back-off. An Endpoints read from the cache at the version this
//! controller last replaced is stale: retried, not acted on.

pub mod subsets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Endpoints, Pod, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::controller::service_pods::{self, selects};
use crate::controller::trigger_time::{self, TriggerTimes};
use crate::informer::{key_of, Change, Informer, ObjectKey};
use crate::recorder::{Recorder, WARNING};
use crate::workqueue::WorkQueue;

/// Workers syncing services at once (--concurrent-endpoint-syncs).
const WORKERS: usize = 5;
pub const OVER_CAPACITY: &str = "endpoints.kubernetes.io/over-capacity";
const HEADLESS: &str = "service.kubernetes.io/headless";
/// Endpoints used as leader-election locks, never deleted as leftovers.
const LEADER_ANNOTATION: &str = "control-plane.alpha.kubernetes.io/leader";

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("endpoints informer cache is out of date, resource version {version} already processed for endpoints {key}")]
    Stale { version: String, key: String },
    #[error("deleting the endpoints of deleted service {key}: {source}")]
    Delete { key: String, source: kube::Error },
    #[error("{0}")]
    Write(kube::Error),
}

pub struct Controller {
    client: kube::Client,
    services: Arc<Informer<Service>>,
    pods: Arc<Informer<Pod>>,
    endpoints: Arc<Informer<Endpoints>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    triggers: TriggerTimes,
    /// The resourceVersion each Endpoints had when we last replaced it (upstream's
    /// staleEndpointsTracker).
    replaced: Mutex<HashMap<ObjectKey, String>>,
    recorder: Recorder,
}

impl Controller {
    /// The controller, its handlers registered on the shared informers. `client` writes as the
    /// endpoint-controller service account.
    pub fn new(client: kube::Client, services: Arc<Informer<Service>>, pods: Arc<Informer<Pod>>, endpoints: Arc<Informer<Endpoints>>) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), "endpoint-controller");
        let c = Arc::new(Controller {
            client,
            services,
            pods,
            endpoints,
            queue: WorkQueue::new(),
            triggers: TriggerTimes::default(),
            replaced: Mutex::new(HashMap::new()),
            recorder,
        });
        let q = c.queue.clone();
        c.services.on_change(move |change| q.add(key_of(change.object().as_ref())));
        let q = c.queue.clone();
        c.endpoints.on_change(move |change| {
            if let Change::Deleted(e) = change {
                q.add(key_of(e.as_ref()));
            }
        });
        let weak = Arc::downgrade(&c);
        c.pods.on_change(move |change| {
            let Some(c) = weak.upgrade() else { return };
            let pod = change.object();
            let ns = pod.metadata.namespace.clone().unwrap_or_default();
            let services = c.services.list_namespace(&ns);
            let names = match change {
                Change::Added(p) | Change::Deleted(p) => service_pods::services_for(&services, p.metadata.labels.as_ref()),
                Change::Updated { old, new } => service_pods::services_to_update(&services, old, new),
            };
            for name in names {
                c.queue.add((ns.clone(), name));
            }
        });
        c
    }

    /// Runs the workers until `stop` (the informers run elsewhere).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.services.synced().await;
        self.pods.synced().await;
        self.endpoints.synced().await;
        // leftovers: Endpoints whose service went while no controller ran
        for e in self.endpoints.list() {
            if !e.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(LEADER_ANNOTATION)) {
                self.queue.add(key_of(e.as_ref()));
            }
        }
        let this = self.clone();
        self.queue
            .clone()
            .run_workers(WORKERS, stop, move |k| {
                let this = this.clone();
                let span = tracing::debug_span!("endpoints-sync", service = %format!("{}/{}", k.0, k.1));
                async move { this.sync(&k).await.map_err(|e| e.to_string()) }.instrument(span)
            })
            .await;
    }

    fn replaced(&self) -> std::sync::MutexGuard<'_, HashMap<ObjectKey, String>> {
        self.replaced.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn sync(&self, key: &ObjectKey) -> Result<(), SyncError> {
        let (ns, name) = key;
        let api: kube::Api<Endpoints> = kube::Api::namespaced(self.client.clone(), ns);
        let Some(svc) = self.services.get(ns, name) else {
            match api.delete(name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(source) => return Err(SyncError::Delete { key: format!("{ns}/{name}"), source }),
            }
            self.triggers.delete(key);
            self.replaced().remove(key);
            return Ok(());
        };
        let Some(selector) = service_pods::selector(&svc) else { return Ok(()) };
        let pods: Vec<Arc<Pod>> = self.pods.list_namespace(ns).into_iter().filter(|p| selects(selector, p.metadata.labels.as_ref())).collect();
        // computed on every sync, so the tracker sees each change even when nothing is written
        let trigger = self.triggers.compute(key, &svc, &pods);
        let subsets = subsets::desired(&svc, &pods);
        let cached = self.endpoints.get(ns, name);
        if let Some(current) = &cached {
            let version = current.metadata.resource_version.clone().unwrap_or_default();
            if self.replaced().get(key) == Some(&version) {
                return Err(SyncError::Stale { version, key: format!("{ns}/{name}") });
            }
        }
        let service_labels = svc.metadata.labels.clone().unwrap_or_default();
        if let Some(current) = &cached {
            let mut labels = current.metadata.labels.clone().unwrap_or_default();
            labels.remove(HEADLESS);
            let same = subsets::normalized(current.subsets.as_deref()) == subsets::normalized(Some(&subsets))
                && labels == service_labels
                && subsets::capacity_annotation_ok(current.metadata.annotations.as_ref(), current.subsets.as_deref().unwrap_or_default());
            if same {
                return Ok(());
            }
        }
        let mut next = match &cached {
            Some(c) => (**c).clone(),
            None => Endpoints { metadata: ObjectMeta { name: Some(name.clone()), namespace: Some(ns.clone()), ..Default::default() }, subsets: None },
        };
        let mut subsets = subsets;
        let mut annotations = next.metadata.annotations.take().unwrap_or_default();
        match trigger {
            Some(t) => annotations.insert(trigger_time::ANNOTATION.into(), trigger_time::format(t)),
            None => annotations.remove(trigger_time::ANNOTATION),
        };
        if subsets::truncate(&mut subsets) {
            annotations.insert(OVER_CAPACITY.into(), "truncated".into());
        } else {
            annotations.remove(OVER_CAPACITY);
        }
        next.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
        next.subsets = (!subsets.is_empty()).then_some(subsets);
        let mut labels = service_labels;
        if !service_pods::is_service_ip_set(&svc) {
            labels.insert(HEADLESS.into(), String::new());
        }
        next.metadata.labels = (!labels.is_empty()).then_some(labels);
        let result = match &cached {
            None => api.create(&PostParams::default(), &next).await.map(|_| ()),
            Some(current) => api.replace(name, &PostParams::default(), &next).await.map(|updated| {
                if updated.metadata.resource_version != current.metadata.resource_version {
                    self.replaced().insert(key.clone(), current.metadata.resource_version.clone().unwrap_or_default());
                }
            }),
        };
        match result {
            Ok(()) => Ok(()),
            // the namespace is going: creates will keep failing, drop the work
            Err(kube::Error::Api(s)) if cached.is_none() && s.code == 403 && s.message.contains("because it is being terminated") => Ok(()),
            Err(e) => {
                let (reason, message) = match cached {
                    None => ("FailedToCreateEndpoint", format!("Failed to create endpoint for service {ns}/{name}: {e}")),
                    Some(_) => ("FailedToUpdateEndpoint", format!("Failed to update endpoint {ns}/{name}: {e}")),
                };
                self.recorder.event(&next, WARNING, reason, message);
                Err(SyncError::Write(e))
            }
        }
    }
}
