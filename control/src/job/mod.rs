//! The Job controller, as kube-controller-manager's: a Job runs pods until `completions` of
//! them succeed (any one, with no completions: a work queue; each index once, Indexed), at
//! most `parallelism` at a time, replacing failed ones after an exponential back-off (10 s
//! doubling to 6 min) until `backoffLimit` failures (or `backoffLimitPerIndex` per index,
//! `maxFailedIndexes`), its `podFailurePolicy` says otherwise, or `activeDeadlineSeconds`
//! passes. Finished pods are counted through the tracking finalizer
//! (`batch.kubernetes.io/job-tracking`): recorded in `uncountedTerminatedPods` first, their
//! finalizer removed, then counted in succeeded/failed, so no pod is counted twice or lost
//! across restarts. A Job that met its success criteria (or its failure) gets
//! SuccessCriteriaMet (FailureTarget), its remaining pods are stopped, then Complete (Failed).
//! `suspend` stops the pods and sets Suspended; resuming starts the clock again.
//!
//! Files: `indexes` (completion index sets), `failure_policy` (a rule's verdict on a pod),
//! `pods` (the pods a Job creates), `ttl` (deleting finished Jobs after
//! ttlSecondsAfterFinished). This file has the controller and its sync.

pub mod failure_policy;
pub mod indexes;
mod pods;
pub mod ttl;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_apiserver::selector::LabelSelector;
use futures_util::future::join_all;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Patch, PatchParams, PostParams};
use tokio_util::sync::CancellationToken;

use crate::controller::expectations::Expectations;
use crate::controller::{self, owner, pods::create_batches, pods::delete as delete_pod, ranking};
use crate::informer::{key_of, Change, Informer, ObjectKey};
use crate::recorder::{Recorder, NORMAL, WARNING};
use crate::workqueue::WorkQueue;
use failure_policy::Verdict;

pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
const WORKERS: usize = 5;
const BACKOFF_BASE: Duration = Duration::from_secs(10);
const BACKOFF_MAX: Duration = Duration::from_secs(360);

/// Failures since the last success, for the back-off of new pods.
#[derive(Default, Clone)]
struct Backoff {
    failures: u32,
    last: Option<Timestamp>,
}

pub struct Controller {
    client: kube::Client,
    jobs: Arc<Informer<Job>>,
    pods: Arc<Informer<Pod>>,
    queue: Arc<WorkQueue<ObjectKey>>,
    /// Pods with the tracking finalizer whose Job is gone.
    orphans: Arc<WorkQueue<ObjectKey>>,
    expectations: Expectations,
    recorder: Recorder,
    backoff: Mutex<HashMap<ObjectKey, Backoff>>,
    /// Failures per completion index (backoffLimitPerIndex).
    index_failures: Mutex<HashMap<ObjectKey, BTreeMap<i32, i32>>>,
    /// Pods whose tracking finalizer this controller removed (they are counted), until the
    /// informer shows it gone: a stale copy still carrying it must not be counted again
    /// (upstream's finalizer expectations).
    released: Mutex<HashSet<String>>,
}

fn spec(job: &Job) -> k8s_openapi::api::batch::v1::JobSpec {
    job.spec.clone().unwrap_or_default()
}

fn indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

pub fn condition<'a>(status: &'a JobStatus, kind: &str) -> Option<&'a JobCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == kind && c.status == "True")
}

/// Complete or Failed.
pub fn finished(job: &Job) -> Option<&JobCondition> {
    let s = job.status.as_ref()?;
    condition(s, "Complete").or_else(|| condition(s, "Failed"))
}

fn set_condition(status: &mut JobStatus, kind: &str, state: &str, reason: &str, message: &str, now: Timestamp) {
    let list = status.conditions.get_or_insert_with(Vec::new);
    if let Some(c) = list.iter_mut().find(|c| c.type_ == kind) {
        if c.status != state || c.reason.as_deref() != Some(reason) {
            if c.status != state {
                c.last_transition_time = Some(Time(now));
            }
            c.status = state.into();
            c.reason = Some(reason.into());
            c.message = Some(message.into());
            c.last_probe_time = Some(Time(now));
        }
        return;
    }
    list.push(JobCondition {
        type_: kind.into(),
        status: state.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    });
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata.finalizers.as_ref().is_some_and(|f| f.iter().any(|x| x == TRACKING_FINALIZER))
}

/// Succeeded, failed, or still going; a pod being deleted whose grace period is over counts as
/// failed (it never had a chance to report a phase).
fn outcome(pod: &Pod, now: Timestamp) -> Option<bool> {
    match controller::phase(pod) {
        "Succeeded" => Some(true),
        "Failed" => Some(false),
        _ if pod.metadata.deletion_timestamp.as_ref().is_some_and(|t| t.0 <= now) => Some(false),
        _ => None,
    }
}

fn nonzero(v: usize) -> Option<i32> {
    (v > 0).then_some(v as i32)
}

impl Controller {
    pub fn new(client: kube::Client, jobs: Arc<Informer<Job>>, pods: Arc<Informer<Pod>>) -> Arc<Self> {
        let recorder = Recorder::new(client.clone(), "job-controller");
        let c = Arc::new(Controller {
            client,
            jobs,
            pods,
            queue: WorkQueue::new(),
            orphans: WorkQueue::new(),
            expectations: Expectations::default(),
            recorder,
            backoff: Mutex::new(HashMap::new()),
            index_failures: Mutex::new(HashMap::new()),
            released: Mutex::new(HashSet::new()),
        });
        let q = c.queue.clone();
        c.jobs.on_change(move |change| {
            let j = change.object();
            q.add(key_of(j.as_ref()));
        });
        let weak = Arc::downgrade(&c);
        c.pods.on_change(move |change| {
            let Some(c) = weak.upgrade() else { return };
            match change {
                Change::Added(p) | Change::Deleted(p) => c.enqueue_for(p),
                Change::Updated { old, new } => {
                    if old.metadata.labels != new.metadata.labels || old.metadata.owner_references != new.metadata.owner_references {
                        c.enqueue_for(old);
                    }
                    c.enqueue_for(new);
                }
            }
        });
        c
    }

    fn enqueue_for(&self, pod: &Pod) {
        let ns = pod.metadata.namespace.as_deref().unwrap_or("");
        match owner::controller_of(&pod.metadata) {
            Some(r) => {
                let ours = r.kind == "Job" && self.jobs.get(ns, &r.name).is_some_and(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str()));
                if ours {
                    self.queue.add((ns.to_string(), r.name.clone()));
                } else if has_finalizer(pod) {
                    self.orphans.add(key_of(pod));
                }
            }
            None => {
                if has_finalizer(pod) {
                    self.orphans.add(key_of(pod));
                }
                let empty = BTreeMap::new();
                let labels = pod.metadata.labels.as_ref().unwrap_or(&empty);
                for j in self.jobs.list_namespace(ns) {
                    let matches =
                        j.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| LabelSelector::from_api(s).ok()).is_some_and(|s| s.matches(labels));
                    if matches {
                        self.queue.add(key_of(j.as_ref()));
                    }
                }
            }
        }
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        self.jobs.synced().await;
        self.pods.synced().await;
        let this = self.clone();
        let jobs = self.queue.clone().run_workers(WORKERS, stop.clone(), move |k| {
            let this = this.clone();
            async move { this.sync(&k).await }
        });
        let this = self.clone();
        let orphans = self.orphans.clone().run_workers(1, stop, move |k| {
            let this = this.clone();
            async move { this.release_orphan(&k).await }
        });
        tokio::join!(jobs, orphans);
    }

    /// A pod with the tracking finalizer whose Job is gone (or that no Job controls) is let go.
    async fn release_orphan(&self, k: &ObjectKey) -> Result<(), String> {
        let Some(pod) = self.pods.get(&k.0, &k.1) else { return Ok(()) };
        let owned = owner::controller_of(&pod.metadata)
            .is_some_and(|r| r.kind == "Job" && self.jobs.get(&k.0, &r.name).is_some_and(|j| j.metadata.uid.as_deref() == Some(r.uid.as_str())));
        if owned || !has_finalizer(&pod) {
            return Ok(());
        }
        self.release_finalizer(&pod).await
    }

    fn pod_api(&self, ns: &str) -> kube::Api<Pod> {
        kube::Api::namespaced(self.client.clone(), ns)
    }

    /// Removes the tracking finalizer from a pod (gone already is fine), with the strategic
    /// merge patch upstream sends.
    async fn release_finalizer(&self, pod: &Pod) -> Result<(), String> {
        if !has_finalizer(pod) {
            return Ok(());
        }
        let patch = serde_json::json!({"metadata": {"$deleteFromPrimitiveList/finalizers": [TRACKING_FINALIZER]}});
        let api = self.pod_api(pod.metadata.namespace.as_deref().unwrap_or(""));
        match api.patch(pod.metadata.name.as_deref().unwrap_or(""), &PatchParams::default(), &Patch::Strategic(patch)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(format!("removing the tracking finalizer: {e}")),
        }
    }

    async fn write_status(&self, job: &Job, status: JobStatus) -> Result<Job, String> {
        let mut next = job.clone();
        next.status = Some(status);
        let api: kube::Api<Job> = kube::Api::namespaced(self.client.clone(), job.metadata.namespace.as_deref().unwrap_or(""));
        api.replace_status(job.metadata.name.as_deref().unwrap_or(""), &PostParams::default(), &next).await.map_err(|e| format!("updating the job status: {e}"))
    }

    async fn sync(&self, k: &ObjectKey) -> Result<(), String> {
        let Some(job) = self.jobs.get(&k.0, &k.1) else {
            self.expectations.forget(k);
            self.backoff.lock().unwrap_or_else(|e| e.into_inner()).remove(k);
            self.index_failures.lock().unwrap_or_else(|e| e.into_inner()).remove(k);
            return Ok(());
        };
        let mut job = (*job).clone();
        let Some(selector) = job.spec.as_ref().and_then(|s| s.selector.as_ref()).and_then(|s| LabelSelector::from_api(s).ok()) else { return Ok(()) };
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let mut c = owner::claim(&uid, job.metadata.deletion_timestamp.is_some(), &selector, self.pods.list_namespace(&k.0));
        if finished(&job).is_some() || job.metadata.deletion_timestamp.is_some() {
            // a finished Job (or one being deleted) only lets its pods go
            for p in c.owned.iter().filter(|p| has_finalizer(p)) {
                self.release_finalizer(p).await?;
            }
            return Ok(());
        }
        // finished orphans are not adopted
        c.adopt.retain(|p| outcome(p, Timestamp::now()).is_none());
        let owned = owner::settle(&self.client, &job, c).await?;
        let now = Timestamp::now();
        let mut status = job.status.clone().unwrap_or_default();
        let s = spec(&job);
        let completions = s.completions;

        // 1. finished pods: recorded as uncounted, finalizer removed, then counted
        let mut uncounted = status.uncounted_terminated_pods.clone().unwrap_or_default();
        let mut unc_ok: BTreeSet<String> = uncounted.succeeded.take().unwrap_or_default().into_iter().collect();
        let mut unc_failed: BTreeSet<String> = uncounted.failed.take().unwrap_or_default().into_iter().collect();
        let mut completed: BTreeSet<i32> = status.completed_indexes.as_deref().map(|c| indexes::parse(c, completions.unwrap_or(0))).unwrap_or_default();
        let mut failed_indexes: BTreeSet<i32> = status.failed_indexes.as_deref().map(|c| indexes::parse(c, completions.unwrap_or(0))).unwrap_or_default();
        let mut fail_job: Option<(String, String)> = None;
        let mut to_release: Vec<Arc<Pod>> = vec![];
        let mut recorded = false;
        let released_before: HashSet<String> = {
            let mut r = self.released.lock().unwrap_or_else(|e| e.into_inner());
            let all = self.pods.list_namespace(&k.0);
            r.retain(|u| all.iter().any(|p| p.metadata.uid.as_deref() == Some(u.as_str()) && has_finalizer(p)));
            r.clone()
        };
        for pod in &owned {
            let Some(ok) = outcome(pod, now) else { continue };
            let puid = pod.metadata.uid.clone().unwrap_or_default();
            if released_before.contains(&puid) {
                // counted already; the informer has not shown the finalizer gone yet
                continue;
            }
            if !has_finalizer(pod) || unc_ok.contains(&puid) || unc_failed.contains(&puid) {
                if has_finalizer(pod) {
                    to_release.push(pod.clone());
                }
                continue;
            }
            to_release.push(pod.clone());
            recorded = true;
            let index = indexes::of(pod).filter(|_| indexed(&job));
            if ok {
                unc_ok.insert(puid);
                if let Some(i) = index {
                    completed.insert(i);
                }
                continue;
            }
            let verdict = s.pod_failure_policy.as_ref().map(|p| failure_policy::judge(p, pod)).unwrap_or(Verdict::Count);
            match verdict {
                Verdict::Ignore => continue,
                Verdict::FailJob(msg) => {
                    fail_job.get_or_insert(("PodFailurePolicy".into(), msg));
                }
                Verdict::FailIndex => {
                    if let Some(i) = index {
                        failed_indexes.insert(i);
                    }
                }
                Verdict::Count => {
                    if let (Some(i), Some(limit)) = (index, s.backoff_limit_per_index) {
                        // the failures of the index so far: the failed pod's own count (its
                        // annotation, as upstream) plus this failure, so a pod seen twice
                        // (a retried sync) is not counted twice
                        let n = pods::index_failures(pod) + 1;
                        let mut all = self.index_failures.lock().unwrap_or_else(|e| e.into_inner());
                        let known = all.entry(k.clone()).or_default().entry(i).or_insert(0);
                        *known = (*known).max(n);
                        if n > limit {
                            failed_indexes.insert(i);
                        }
                    }
                }
            }
            unc_failed.insert(puid);
            let mut b = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
            let entry = b.entry(k.clone()).or_default();
            entry.failures += 1;
            entry.last = Some(now);
        }
        if !unc_ok.is_empty() {
            self.backoff.lock().unwrap_or_else(|e| e.into_inner()).remove(k);
        }
        if indexed(&job) {
            status.completed_indexes = Some(indexes::format(&completed));
            if s.backoff_limit_per_index.is_some() {
                status.failed_indexes = Some(indexes::format(&failed_indexes));
            }
        }
        // A pod that fails the Job through the pod failure policy is judged only while it still
        // holds its finalizer: the FailureTarget goes into the same write that records the pod,
        // before the finalizer is released (as upstream), or a failed later write would lose it
        // and the pod be counted as an ordinary failure.
        if let Some((reason, message)) = &fail_job {
            let decided = condition(&status, "FailureTarget").is_some() || condition(&status, "SuccessCriteriaMet").is_some();
            if !decided && !s.suspend.unwrap_or(false) {
                set_condition(&mut status, "FailureTarget", "True", reason, message, now);
                self.recorder.event(&job, WARNING, reason, message.clone());
            }
        }
        if recorded {
            status.uncounted_terminated_pods =
                Some(UncountedTerminatedPods { succeeded: Some(unc_ok.iter().cloned().collect()), failed: Some(unc_failed.iter().cloned().collect()) });
            job = self.write_status(&job, status.clone()).await?;
        }
        let released = join_all(to_release.iter().map(|p| self.release_finalizer(p))).await;
        if let Some(e) = released.into_iter().find_map(Result::err) {
            return Err(e);
        }
        let released_uids: BTreeSet<String> = to_release.iter().filter_map(|p| p.metadata.uid.clone()).collect();
        self.released.lock().unwrap_or_else(|e| e.into_inner()).extend(released_uids.iter().cloned());
        let still_held = |u: &String| owned.iter().any(|p| p.metadata.uid.as_ref() == Some(u) && has_finalizer(p) && !released_uids.contains(u));
        let (count_ok, keep_ok): (Vec<String>, Vec<String>) = unc_ok.into_iter().partition(|u| !still_held(u));
        let (count_failed, keep_failed): (Vec<String>, Vec<String>) = unc_failed.into_iter().partition(|u| !still_held(u));
        let succeeded = status.succeeded.unwrap_or(0) as usize + count_ok.len();
        let failed = status.failed.unwrap_or(0) as usize + count_failed.len();
        status.succeeded = nonzero(succeeded);
        status.failed = nonzero(failed);
        // what the Job has done includes the pods recorded but not yet counted (upstream counts
        // them too): otherwise a lagging pod copy makes it start a pod too many
        let (succeeded, failed) = (succeeded + keep_ok.len(), failed + keep_failed.len());
        let listed = |v: Vec<String>| (!v.is_empty()).then_some(v);
        status.uncounted_terminated_pods = Some(UncountedTerminatedPods { succeeded: listed(keep_ok), failed: listed(keep_failed) });

        // 2. what is running
        let active: Vec<Arc<Pod>> = owned.iter().filter(|p| controller::is_active(p)).cloned().collect();
        let terminating = owned.iter().filter(|p| p.metadata.deletion_timestamp.is_some() && outcome(p, now).is_none()).count();
        status.ready = Some(active.iter().filter(|p| controller::is_ready(p)).count() as i32);
        status.terminating = Some(terminating as i32);

        // 3. the Job's fate
        let suspended = s.suspend.unwrap_or(false);
        let target_failed = condition(&status, "FailureTarget").is_some();
        let target_met = condition(&status, "SuccessCriteriaMet").is_some();
        if !target_failed && !target_met && !suspended {
            if fail_job.is_none() && failed > s.backoff_limit.unwrap_or(6).max(0) as usize && s.backoff_limit_per_index.is_none() {
                fail_job = Some(("BackoffLimitExceeded".into(), "Job has reached the specified backoff limit".into()));
            }
            let on_failure = s.template.spec.as_ref().and_then(|p| p.restart_policy.as_deref()) == Some("OnFailure");
            let restarts: i32 = active.iter().map(|p| controller::max_restarts(p)).sum();
            if fail_job.is_none() && on_failure && s.backoff_limit.is_some_and(|l| restarts > 0 && restarts >= l) {
                fail_job = Some(("BackoffLimitExceeded".into(), "Job has reached the specified backoff limit".into()));
            }
            if let (None, Some(deadline), Some(start)) = (&fail_job, s.active_deadline_seconds, status.start_time.as_ref()) {
                if start.0.saturating_add(SignedDuration::from_secs(deadline)).is_ok_and(|end| end <= now) {
                    fail_job = Some(("DeadlineExceeded".into(), "Job was active longer than specified deadline".into()));
                }
            }
            if fail_job.is_none() && s.max_failed_indexes.is_some_and(|m| failed_indexes.len() as i32 > m) {
                fail_job = Some(("MaxFailedIndexesExceeded".into(), "Job has exceeded the specified maximal number of failed indexes".into()));
            }
            let success = self.success(&job, &s, &completed, &failed_indexes, succeeded, active.len());
            if fail_job.is_none() && success.is_none() && indexed(&job) && s.backoff_limit_per_index.is_some() {
                let all_done = completions.is_some_and(|c| (completed.len() + failed_indexes.len()) as i32 >= c);
                if all_done && !failed_indexes.is_empty() {
                    fail_job = Some(("FailedIndexes".into(), "Job has failed indexes".into()));
                }
            }
            if let Some((reason, message)) = &fail_job {
                set_condition(&mut status, "FailureTarget", "True", reason, message, now);
                self.recorder.event(&job, WARNING, reason, message.clone());
            } else if let Some((reason, message)) = success {
                set_condition(&mut status, "SuccessCriteriaMet", "True", &reason, &message, now);
            }
        }
        let target_failed = condition(&status, "FailureTarget").cloned();
        let target_met = condition(&status, "SuccessCriteriaMet").cloned();
        let mut requeue: Option<Duration> = None;
        if target_failed.is_some() || target_met.is_some() {
            // stop what still runs; finished once nothing does and every pod is counted
            for p in &active {
                delete_pod(&self.client, &self.recorder, &job, p).await?;
            }
            let uncounted_left =
                status.uncounted_terminated_pods.as_ref().is_some_and(|u| u.succeeded.iter().flatten().count() + u.failed.iter().flatten().count() > 0);
            if active.is_empty() && terminating == 0 && !uncounted_left {
                if let Some(t) = &target_failed {
                    set_condition(&mut status, "Failed", "True", t.reason.as_deref().unwrap_or(""), t.message.as_deref().unwrap_or(""), now);
                } else if let Some(t) = &target_met {
                    set_condition(&mut status, "Complete", "True", t.reason.as_deref().unwrap_or(""), t.message.as_deref().unwrap_or(""), now);
                    status.completion_time = Some(Time(now));
                    self.recorder.event(&job, NORMAL, "Completed", "Job completed".into());
                }
            }
        } else if suspended {
            if condition(&status, "Suspended").is_none() {
                set_condition(&mut status, "Suspended", "True", "JobSuspended", "Job suspended", now);
                self.recorder.event(&job, NORMAL, "Suspended", "Job suspended".into());
            }
            status.start_time = None;
            for p in &active {
                delete_pod(&self.client, &self.recorder, &job, p).await?;
            }
        } else {
            if job.status.as_ref().and_then(|st| st.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Suspended" && c.status == "True")) {
                set_condition(&mut status, "Suspended", "False", "JobResumed", "Job resumed", now);
                self.recorder.event(&job, NORMAL, "Resumed", "Job resumed".into());
            }
            if status.start_time.is_none() {
                status.start_time = Some(Time(now));
            }
            let satisfied = self.expectations.satisfied(
                k,
                |name| self.pods.get(&k.0, name).is_some(),
                |uid| !self.pods.list_namespace(&k.0).iter().any(|p| p.metadata.uid.as_deref() == Some(uid) && p.metadata.deletion_timestamp.is_none()),
            );
            if satisfied {
                requeue = self.manage(&job, &s, k, &active, terminating, succeeded, &completed, &failed_indexes, now).await?;
            }
            if let (Some(deadline), Some(start)) = (s.active_deadline_seconds, status.start_time.as_ref()) {
                if let Ok(end) = start.0.saturating_add(SignedDuration::from_secs(deadline)) {
                    let wait = end.duration_since(now).unsigned_abs();
                    requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
                }
            }
        }
        status.active = nonzero(active.len());
        if job.status.as_ref() != Some(&status) {
            self.write_status(&job, status).await?;
        }
        // pods whose grace period runs out count as failed then
        if let Some(at) = owned.iter().filter_map(|p| p.metadata.deletion_timestamp.as_ref().map(|t| t.0)).filter(|t| *t > now).min() {
            let wait = at.duration_since(now).unsigned_abs() + Duration::from_millis(200);
            requeue = Some(requeue.map_or(wait, |r| r.min(wait)));
        }
        if let Some(wait) = requeue {
            self.queue.add_after(k.clone(), wait);
        }
        Ok(())
    }

    /// The reason and message of a Job that met its success criteria.
    fn success(
        &self,
        job: &Job,
        s: &k8s_openapi::api::batch::v1::JobSpec,
        completed: &BTreeSet<i32>,
        failed_indexes: &BTreeSet<i32>,
        succeeded: usize,
        active: usize,
    ) -> Option<(String, String)> {
        let reached = || Some(("CompletionsReached".to_string(), "Reached expected number of succeeded pods".to_string()));
        if let (true, Some(policy)) = (indexed(job), s.success_policy.as_ref()) {
            for (i, rule) in policy.rules.iter().enumerate() {
                let wanted = rule.succeeded_indexes.as_deref().map(|w| indexes::parse(w, s.completions.unwrap_or(0)));
                let done = match &wanted {
                    Some(w) => w.iter().filter(|x| completed.contains(x)).count(),
                    None => completed.len(),
                };
                let all_wanted = wanted.as_ref().is_none_or(|w| w.is_subset(completed));
                let ok = match rule.succeeded_count {
                    Some(n) => done as i32 >= n,
                    None => all_wanted,
                };
                if ok {
                    return Some(("SuccessPolicy".into(), format!("Matched rules at index {i}")));
                }
            }
        }
        match s.completions {
            Some(c) if indexed(job) => (completed.len() as i32 >= c && failed_indexes.is_empty()).then(reached).flatten(),
            Some(c) => (succeeded as i32 >= c).then(reached).flatten(),
            None => (succeeded > 0 && active == 0).then(reached).flatten(),
        }
    }

    /// Creates or deletes pods toward the wanted number running; how long until a back-off
    /// lets it create again.
    #[allow(clippy::too_many_arguments)]
    async fn manage(
        &self,
        job: &Job,
        s: &k8s_openapi::api::batch::v1::JobSpec,
        k: &ObjectKey,
        active: &[Arc<Pod>],
        terminating: usize,
        succeeded: usize,
        completed: &BTreeSet<i32>,
        failed_indexes: &BTreeSet<i32>,
        now: Timestamp,
    ) -> Result<Option<Duration>, String> {
        let parallelism = s.parallelism.unwrap_or(1).max(0) as usize;
        let want = match (s.completions, indexed(job)) {
            (Some(c), true) => (c.max(0) as usize).saturating_sub(completed.len() + failed_indexes.len()).min(parallelism),
            (Some(c), false) => (c.max(0) as usize).saturating_sub(succeeded).min(parallelism),
            (None, _) if succeeded > 0 => active.len().min(parallelism),
            (None, _) => parallelism,
        };
        if active.len() > want {
            let doomed: Vec<Arc<Pod>> = ranking::deletion_order(active.to_vec(), active).into_iter().take(active.len() - want).collect();
            for p in &doomed {
                self.expectations.deleted(k, p.metadata.uid.as_deref().unwrap_or(""));
                delete_pod(&self.client, &self.recorder, job, p).await?;
            }
            return Ok(None);
        }
        let only_failed = s.pod_replacement_policy.as_deref() == Some("Failed");
        let busy = active.len() + if only_failed { terminating } else { 0 };
        if busy >= want {
            return Ok(None);
        }
        // back-off after failures
        let b = self.backoff.lock().unwrap_or_else(|e| e.into_inner()).get(k).cloned().unwrap_or_default();
        if let (true, Some(last)) = (b.failures > 0, b.last) {
            let delay = BACKOFF_BASE.saturating_mul(1u32 << (b.failures - 1).min(10)).min(BACKOFF_MAX);
            let ready_at = last.saturating_add(SignedDuration::try_from(delay).unwrap_or_default()).unwrap_or(last);
            if ready_at > now {
                return Ok(Some(ready_at.duration_since(now).unsigned_abs()));
            }
        }
        let n = want - busy;
        let name = job.metadata.name.clone().unwrap_or_default();
        let failures = self.index_failures.lock().unwrap_or_else(|e| e.into_inner()).get(k).cloned().unwrap_or_default();
        let created = |pod: &str| self.expectations.created(k, pod);
        if indexed(job) {
            let running: BTreeSet<i32> = active.iter().filter_map(|p| indexes::of(p)).collect();
            let pending: Vec<i32> =
                (0..s.completions.unwrap_or(0)).filter(|i| !completed.contains(i) && !failed_indexes.contains(i) && !running.contains(i)).take(n).collect();
            let next = std::sync::Mutex::new(pending.clone().into_iter());
            let (_, err) = create_batches(
                &self.client,
                &self.recorder,
                job,
                pending.len(),
                || {
                    let i = next.lock().unwrap_or_else(|e| e.into_inner()).next().unwrap_or(0);
                    pods::for_job(job, &name, Some((i, failures.get(&i).copied().unwrap_or(0))))
                },
                created,
            )
            .await;
            if let Some(e) = err {
                return Err(e);
            }
        } else {
            let (_, err) = create_batches(&self.client, &self.recorder, job, n, || pods::for_job(job, &name, None), created).await;
            if let Some(e) = err {
                return Err(e);
            }
        }
        Ok(None)
    }
}
