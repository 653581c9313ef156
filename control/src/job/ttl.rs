//! The TTL-after-finished controller: a Job that finished (Complete or Failed) and has
//! `ttlSecondsAfterFinished` is deleted that many seconds after it finished, with its pods
//! (foreground propagation, as upstream).

use std::sync::Arc;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{DeleteParams, PropagationPolicy};
use tokio_util::sync::CancellationToken;

use crate::informer::{key_of, Change, Informer, ObjectKey};
use crate::workqueue::WorkQueue;

pub struct Controller {
    client: kube::Client,
    jobs: Arc<Informer<Job>>,
    queue: Arc<WorkQueue<ObjectKey>>,
}

/// When a finished Job with a TTL expires.
pub fn expires_at(job: &Job) -> Option<Timestamp> {
    let ttl = job.spec.as_ref()?.ttl_seconds_after_finished?;
    let finished = super::finished(job)?;
    let at = finished.last_transition_time.as_ref().map(|t| t.0).or_else(|| job.status.as_ref()?.completion_time.as_ref().map(|t| t.0))?;
    at.saturating_add(SignedDuration::from_secs(i64::from(ttl))).ok()
}

impl Controller {
    pub fn new(client: kube::Client, jobs: Arc<Informer<Job>>) -> Arc<Self> {
        let c = Arc::new(Controller { client, jobs, queue: WorkQueue::new() });
        let q = c.queue.clone();
        c.jobs.on_change(move |change| {
            if let Change::Added(j) | Change::Updated { new: j, .. } = change {
                if expires_at(j).is_some() {
                    q.add(key_of(j.as_ref()));
                }
            }
        });
        c
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.jobs.synced().await;
        let this = self.clone();
        self.queue
            .clone()
            .run_workers(2, stop, move |k| {
                let this = this.clone();
                async move { this.sync(&k).await }
            })
            .await;
    }

    async fn sync(&self, k: &ObjectKey) -> Result<(), String> {
        let Some(job) = self.jobs.get(&k.0, &k.1) else { return Ok(()) };
        let Some(at) = expires_at(&job) else { return Ok(()) };
        let now = Timestamp::now();
        if at > now {
            self.queue.add_after(k.clone(), at.duration_since(now).unsigned_abs());
            return Ok(());
        }
        let api: kube::Api<Job> = kube::Api::namespaced(self.client.clone(), &k.0);
        let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Foreground), ..Default::default() };
        match api.delete(&k.1, &params).await {
            Ok(_) => {
                tracing::info!(job = %format!("{}/{}", k.0, k.1), "deleted a finished job past its TTL");
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("deleting the job: {e}")),
        }
    }
}
