//! The CronJob controller, as kube-controller-manager's (v2): at each time the schedule names
//! (in `timeZone`, UTC without one) it creates a Job from the template, named
//! `<cronjob>-<minutes since the epoch>` so a time is never run twice, as the CronJob's
//! controller. `concurrencyPolicy` Forbid skips a time while a Job still runs, Replace deletes
//! the running ones first. After a restart only the most recent missed time runs (more than
//! 100 missed: a TooManyMissedTimes warning); `startingDeadlineSeconds` drops times too late to
//! start. Finished Jobs leave `status.active` (SawCompletedJob, lastSuccessfulTime), and the
//! oldest beyond successfulJobsHistoryLimit / failedJobsHistoryLimit are deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use berth_apiserver::cron::{self, Schedule};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{DeleteParams, PostParams, PropagationPolicy};
use tokio_util::sync::CancellationToken;

use crate::controller::owner;
use crate::informer::{key_of, Informer, ObjectKey};
use crate::job::finished;
use crate::recorder::{reference, Recorder, NORMAL, WARNING};
use crate::workqueue::WorkQueue;

const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed times beyond which the controller warns (upstream's 100).
const TOO_MANY_MISSED: u32 = 100;

pub struct Controller {
    client: kube::Client,
    cronjobs: Arc<Informer<CronJob>>,
    jobs: Arc<Informer<Job>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    recorder: Recorder,
}

/// The name of the Job for the time `at`.
pub fn job_name(cronjob: &str, at: Timestamp) -> String {
    format!("{cronjob}-{}", at.as_second().div_euclid(60))
}

fn job_succeeded(job: &Job) -> bool {
    finished(job).is_some_and(|c| c.type_ == "Complete")
}

impl Controller {
    pub fn new(client: kube::Client, cronjobs: Arc<Informer<CronJob>>, jobs: Arc<Informer<Job>>) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), "cronjob-controller");
        let c = Arc::new(Controller { client, cronjobs, jobs, queue: WorkQueue::new(), recorder });
        let q = c.queue.clone();
        c.cronjobs.on_change(move |change| {
            let cj = change.object();
            q.add(key_of(cj.as_ref()));
        });
        let q = c.queue.clone();
        c.jobs.on_change(move |change| {
            let j = change.object();
            if let Some(r) = owner::controller_of(&j.metadata).filter(|r| r.kind == "CronJob") {
                q.add((j.metadata.namespace.clone().unwrap_or_default(), r.name.clone()));
            }
        });
        c
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.cronjobs.synced().await;
        self.jobs.synced().await;
        let this = self.clone();
        self.queue
            .clone()
            .run_workers(5, stop, move |k| {
                let this = this.clone();
                async move { this.sync(&k).await }
            })
            .await;
    }

    fn job_api(&self, ns: &str) -> kube::Api<Job> {
        kube::Api::namespaced(self.client.clone(), ns)
    }

    async fn delete_job(&self, cj: &CronJob, job: &Job) -> Result<(), String> {
        let name = job.metadata.name.clone().unwrap_or_default();
        let params = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        match self.job_api(job.metadata.namespace.as_deref().unwrap_or("")).delete(&name, &params).await {
            Ok(_) => {
                self.recorder.event(cj, NORMAL, "SuccessfulDelete", format!("Deleted job {name}"));
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("deleting job {name}: {e}")),
        }
    }

    async fn sync(&self, k: &ObjectKey) -> Result<(), String> {
        let Some(cj) = self.cronjobs.get(&k.0, &k.1) else { return Ok(()) };
        let mut cj = (*cj).clone();
        let uid = cj.metadata.uid.clone().unwrap_or_default();
        let children: Vec<Arc<Job>> = self.jobs.list_namespace(&k.0).into_iter().filter(|j| owner::controlled_by(&j.metadata, "CronJob", &uid)).collect();
        let before = cj.status.clone();
        let mut status = cj.status.clone().unwrap_or_default();
        let now = Timestamp::now();

        // active Jobs that finished or are gone leave the list
        let mut active = status.active.take().unwrap_or_default();
        active.retain(|r| {
            let Some(j) = children.iter().find(|j| j.metadata.uid == r.uid) else { return false };
            match finished(j) {
                Some(c) => {
                    self.recorder.event(
                        &cj,
                        NORMAL,
                        "SawCompletedJob",
                        format!("Saw completed job: {}, condition: {}", j.metadata.name.as_deref().unwrap_or(""), c.type_),
                    );
                    false
                }
                None => true,
            }
        });
        for j in children.iter().filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none()) {
            if !active.iter().any(|r| r.uid == j.metadata.uid) {
                active.push(reference(j.as_ref()));
            }
        }
        if let Some(done) = children.iter().filter(|j| job_succeeded(j)).filter_map(|j| j.status.as_ref()?.completion_time.clone()).max_by_key(|t| t.0) {
            if status.last_successful_time.as_ref().is_none_or(|t| t.0 < done.0) {
                status.last_successful_time = Some(done);
            }
        }
        status.active = (!active.is_empty()).then_some(active);
        self.cleanup_history(&cj, &children).await?;

        let spec = cj.spec.clone().unwrap_or_default();
        let requeue = if cj.metadata.deletion_timestamp.is_some() || spec.suspend.unwrap_or(false) {
            None
        } else {
            self.schedule(&mut cj, &mut status, &spec, &children, now).await?
        };
        if before.as_ref() != Some(&status) {
            let mut next = cj.clone();
            next.status = Some(status);
            let api: kube::Api<CronJob> = kube::Api::namespaced(self.client.clone(), &k.0);
            api.replace_status(&k.1, &PostParams::default(), &next).await.map_err(|e| format!("updating the cronjob status: {e}"))?;
        }
        if let Some(wait) = requeue {
            self.queue.add_after(k.clone(), wait);
        }
        Ok(())
    }

    /// Starts the Job of the most recent unmet time, as the concurrency policy allows. How long
    /// until the next time.
    async fn schedule(
        &self,
        cj: &mut CronJob,
        status: &mut k8s_openapi::api::batch::v1::CronJobStatus,
        spec: &k8s_openapi::api::batch::v1::CronJobSpec,
        children: &[Arc<Job>],
        now: Timestamp,
    ) -> Result<Option<Duration>, String> {
        let tz = match cron::time_zone(spec.time_zone.as_deref()) {
            Ok(tz) => tz,
            Err(e) => {
                self.recorder.event(cj, WARNING, "UnknownTimeZone", format!("invalid timeZone: {:?}: {e}", spec.time_zone.as_deref().unwrap_or("")));
                return Ok(None);
            }
        };
        let schedule = match Schedule::parse(&spec.schedule) {
            Ok(s) => s,
            Err(e) => {
                self.recorder.event(cj, WARNING, "UnparseableSchedule", format!("unparseable schedule: {:?} : {e}", spec.schedule));
                return Ok(None);
            }
        };
        let next_wait =
            |from: Timestamp| schedule.next_after(from, &tz).map(|t| t.duration_since(Timestamp::now()).unsigned_abs() + Duration::from_millis(100));
        let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
        let mut earliest = status.last_schedule_time.as_ref().map(|t| t.0).unwrap_or(created);
        if let Some(deadline) = spec.starting_deadline_seconds {
            if let Ok(limit) = now.checked_sub(SignedDuration::from_secs(deadline)) {
                earliest = earliest.max(limit);
            }
        }
        let (most_recent, missed) = cron::most_recent(&schedule, &tz, earliest, now);
        let Some(at) = most_recent else { return Ok(next_wait(now)) };
        if missed > TOO_MANY_MISSED {
            self.recorder.event(
                cj,
                WARNING,
                "TooManyMissedTimes",
                format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"),
            );
        }
        if spec.starting_deadline_seconds.is_some_and(|d| at.saturating_add(SignedDuration::from_secs(d)).is_ok_and(|end| end < now)) {
            self.recorder.event(
                cj,
                WARNING,
                "MissSchedule",
                format!("Missed scheduled time to start a job: {}", at.to_zoned(tz.clone()).strftime("%a, %d %b %Y %H:%M:%S %z")),
            );
            return Ok(next_wait(now));
        }
        let name = job_name(cj.metadata.name.as_deref().unwrap_or(""), at);
        if children.iter().any(|j| j.metadata.name.as_deref() == Some(name.as_str())) {
            return Ok(next_wait(now));
        }
        let running: Vec<&Arc<Job>> = children.iter().filter(|j| finished(j).is_none() && j.metadata.deletion_timestamp.is_none()).collect();
        match spec.concurrency_policy.as_deref() {
            Some("Forbid") if !running.is_empty() => {
                self.recorder.event(
                    cj,
                    NORMAL,
                    "JobAlreadyActive",
                    "Not starting job because prior execution is running and concurrency policy is Forbid".into(),
                );
                return Ok(next_wait(now));
            }
            Some("Replace") => {
                for j in &running {
                    self.delete_job(cj, j).await?;
                }
                if let Some(list) = status.active.as_mut() {
                    list.retain(|r| !running.iter().any(|j| j.metadata.uid == r.uid));
                }
            }
            _ => {}
        }
        let template = &spec.job_template;
        let meta = template.metadata.clone().unwrap_or_default();
        let mut annotations = meta.annotations.unwrap_or_default();
        // RFC 3339 as Go writes it: `Z` for a zero offset
        let local = at.to_zoned(tz.clone());
        let offset = if local.offset().seconds() == 0 { "Z".to_string() } else { local.strftime("%:z").to_string() };
        annotations.insert(SCHEDULED_TIMESTAMP.into(), format!("{}{offset}", local.strftime("%Y-%m-%dT%H:%M:%S")));
        let job = Job {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: cj.metadata.namespace.clone(),
                labels: meta.labels,
                annotations: Some(annotations).filter(|a: &BTreeMap<String, String>| !a.is_empty()),
                owner_references: Some(vec![owner::controller_ref(cj)]),
                ..Default::default()
            },
            spec: template.spec.clone(),
            status: None,
        };
        let ns = cj.metadata.namespace.clone().unwrap_or_default();
        let created = match self.job_api(&ns).create(&PostParams::default(), &job).await {
            Ok(j) => j,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // made by an earlier sync whose write the informer has not shown yet
                status.last_schedule_time = Some(Time(at));
                return Ok(next_wait(now));
            }
            Err(e) => {
                let msg = crate::controller::pods::error_message(&e);
                self.recorder.event(cj, WARNING, "FailedCreate", format!("Error creating job: {msg}"));
                return Err(msg);
            }
        };
        self.recorder.event(cj, NORMAL, "SuccessfulCreate", format!("Created job {name}"));
        status.active.get_or_insert_with(Vec::new).push(reference(&created));
        status.last_schedule_time = Some(Time(at));
        Ok(next_wait(now))
    }

    /// Deletes the oldest finished Jobs beyond the history limits.
    async fn cleanup_history(&self, cj: &CronJob, children: &[Arc<Job>]) -> Result<(), String> {
        let spec = cj.spec.clone().unwrap_or_default();
        for (succeeded, limit) in [(true, spec.successful_jobs_history_limit.unwrap_or(3)), (false, spec.failed_jobs_history_limit.unwrap_or(1))] {
            let mut done: Vec<&Arc<Job>> =
                children.iter().filter(|j| j.metadata.deletion_timestamp.is_none() && finished(j).is_some() && job_succeeded(j) == succeeded).collect();
            let extra = done.len().saturating_sub(limit.max(0) as usize);
            done.sort_by_key(|j| j.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).or(j.metadata.creation_timestamp.as_ref().map(|t| t.0)));
            for j in done.into_iter().take(extra) {
                self.delete_job(cj, j).await?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_count_minutes_since_the_epoch() {
        let at: Timestamp = "2026-12-04T09:00:00Z".parse().expect("time");
        assert_eq!(job_name("hello", at), format!("hello-{}", at.as_second() / 60));
    }
}
