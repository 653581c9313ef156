//! The namespace controller, as kube-controller-manager's: a namespace with a deletionTimestamp
//! is emptied through the API (`deleter`), its status.conditions tell how that goes
//! (`conditions`), and once nothing is left its `kubernetes` finalizer is removed with the
//! `finalize` subresource, after which the apiserver deletes the namespace when no finalizer is
//! left. A pass that finds content still going is tried again after half the estimate plus a
//! second; a failing pass after its back-off. It never deletes the namespace object itself and
//! never touches the store.

pub mod conditions;
pub mod deleter;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, NamespaceStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::informer::{Change, Informer};
use crate::workqueue::WorkQueue;

/// The finalizer this controller owns in spec.finalizers.
pub const FINALIZER: &str = "kubernetes";
/// How long after a namespace is seen terminating its pass starts: HA apiservers see the
/// deletion and last-moment creates land (upstream's namespaceDeletionGracePeriod).
const DELETION_GRACE: Duration = Duration::from_secs(5);
/// Namespaces worked on at once (upstream's --concurrent-namespace-syncs is 10).
const WORKERS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("reading namespace {name}: {source}")]
    Read { name: String, source: kube::Error },
    #[error("finalizing namespace {name}: {source}")]
    Finalize { name: String, source: kube::Error },
    #[error("finalizing namespace {name}: conflicting writes, retrying")]
    Conflicts { name: String },
    #[error("deleting the content of namespace {name}: {errors}")]
    Content { name: String, errors: String },
}

pub struct Controller {
    client: kube::Client,
    namespaces: Arc<Informer<Namespace>>,
    queue: Arc<WorkQueue<String>>,
}

impl Controller {
    pub fn new(client: kube::Client, namespaces: Arc<Informer<Namespace>>) -> Arc<Self> {
        let queue: Arc<WorkQueue<String>> = WorkQueue::new();
        let q = queue.clone();
        namespaces.on_change(move |change| {
            if let Change::Added(ns) | Change::Updated { new: ns, .. } = change {
                if ns.metadata.deletion_timestamp.is_some() {
                    q.add_after(ns.metadata.name.clone().unwrap_or_default(), DELETION_GRACE);
                }
            }
        });
        Arc::new(Controller { client, namespaces, queue })
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.namespaces.synced().await;
        let me = self.clone();
        self.queue
            .clone()
            .run_workers(WORKERS, stop, move |name: String| {
                let me = me.clone();
                let span = tracing::info_span!("namespace", name = %name);
                async move {
                    match me.sync(&name).await {
                        Ok(None) => Ok(()),
                        Ok(Some(estimate)) => {
                            // content still going: look again in half the estimate and a second
                            let wait = Duration::from_secs(u64::try_from(estimate / 2 + 1).unwrap_or(1));
                            tracing::debug!(wait_s = wait.as_secs(), "content remaining in the namespace");
                            me.queue.add_after(name, wait);
                            Ok(())
                        }
                        Err(e) => Err(e.to_string()),
                    }
                }
                .instrument(span)
            })
            .await;
    }

    /// One pass over the namespace `name`: None when done (or nothing to do), the estimate in
    /// seconds when content remains.
    async fn sync(&self, name: &str) -> Result<Option<i64>, SyncError> {
        let api: kube::Api<Namespace> = kube::Api::all(self.client.clone());
        let Some(mut ns) = api.get_opt(name).await.map_err(|source| SyncError::Read { name: name.into(), source })? else {
            return Ok(None);
        };
        let Some(deleted_at) = ns.metadata.deletion_timestamp.clone() else { return Ok(None) };
        let finalizers = ns.spec.as_ref().and_then(|s| s.finalizers.clone()).unwrap_or_default();
        if finalizers.is_empty() {
            return Ok(None);
        }
        let (estimate, findings) = deleter::delete_all_content(&self.client, name, deleted_at.0).await;
        let status = ns.status.get_or_insert_with(NamespaceStatus::default);
        let previous = status.conditions.clone().unwrap_or_default();
        let updated = conditions::update(&previous, &findings, &Time(Timestamp::now()));
        if updated != previous || status.phase.as_deref() != Some("Terminating") {
            status.conditions = Some(updated);
            status.phase = Some("Terminating".into());
            if let Err(e) = api.replace_status(name, &PostParams::default(), &ns).await {
                tracing::debug!(error = %e, "updating the namespace's conditions");
            }
        }
        let mut errors = findings.content.clone();
        errors.extend(findings.discovery.clone());
        errors.extend(findings.gv_parsing.clone());
        if !errors.is_empty() {
            return Err(SyncError::Content { name: name.into(), errors: errors.join("; ") });
        }
        if estimate > 0 {
            return Ok(Some(estimate));
        }
        self.finalize(&api, name).await?;
        tracing::info!("namespace emptied and finalized");
        Ok(None)
    }

    /// Removes [`FINALIZER`] from spec.finalizers through the `finalize` subresource (a fresh
    /// read each try, so a concurrent writer does not lose its change).
    async fn finalize(&self, api: &kube::Api<Namespace>, name: &str) -> Result<(), SyncError> {
        let failed = |source| SyncError::Finalize { name: name.into(), source };
        for _ in 0..5 {
            let Some(mut ns) = api.get_opt(name).await.map_err(failed)? else { return Ok(()) };
            let spec = ns.spec.get_or_insert_with(Default::default);
            let before = spec.finalizers.clone().unwrap_or_default();
            if !before.iter().any(|f| f == FINALIZER) {
                return Ok(());
            }
            let mut kept: Vec<String> = before.into_iter().filter(|f| f != FINALIZER).collect();
            kept.sort();
            kept.dedup();
            spec.finalizers = Some(kept);
            match api.replace_subresource("finalize", name, &PostParams::default(), &ns).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(failed(e)),
            }
        }
        Err(SyncError::Conflicts { name: name.into() })
    }
}
