//! A Deployment's status from its ReplicaSets: the replica counts, the Available condition
//! (at least replicas - maxUnavailable available), the Progressing condition of a rollout
//! (NewReplicaSetAvailable when complete, ReplicaSetUpdated while it moves, and
//! ProgressDeadlineExceeded when it did not move for progressDeadlineSeconds; Unknown with
//! DeploymentPaused/DeploymentResumed around a pause) and ReplicaFailure copied from a
//! ReplicaSet that cannot create pods.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentStatus, ReplicaSet};

use super::util::{self, condition, new_condition, remove_condition, set_condition};
use super::Controller;

fn nonzero(v: i32) -> Option<i32> {
    (v != 0).then_some(v)
}

/// The status the ReplicaSets give (conditions carried over, Available set).
pub fn calculate(d: &Deployment, all: &[Arc<ReplicaSet>], new_rs: Option<&Arc<ReplicaSet>>, now: Timestamp) -> DeploymentStatus {
    let available: i32 = all.iter().map(|rs| util::rs_status(rs).2).sum();
    let total: i32 = all.iter().map(|rs| util::rs_replicas(rs)).sum();
    let old = d.status.clone().unwrap_or_default();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: nonzero(all.iter().map(|rs| util::rs_status(rs).0).sum()),
        updated_replicas: nonzero(new_rs.map(|rs| util::rs_status(rs).0).unwrap_or(0)),
        ready_replicas: nonzero(all.iter().map(|rs| util::rs_status(rs).1).sum()),
        available_replicas: nonzero(available),
        unavailable_replicas: nonzero((total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        terminating_replicas: old.terminating_replicas,
    };
    if available >= util::replicas(d) - util::max_unavailable(d) {
        set_condition(&mut s, new_condition("Available", "True", util::MIN_AVAILABLE, "Deployment has minimum availability.".into(), now));
    } else {
        set_condition(&mut s, new_condition("Available", "False", util::MIN_UNAVAILABLE, "Deployment does not have minimum availability.".into(), now));
    }
    s
}

fn subject(new_rs: Option<&Arc<ReplicaSet>>, d: &Deployment) -> String {
    match new_rs {
        Some(rs) => format!("ReplicaSet \"{}\"", rs.metadata.name.as_deref().unwrap_or("")),
        None => format!("Deployment \"{}\"", d.metadata.name.as_deref().unwrap_or("")),
    }
}

impl Controller {
    /// Writes the status if it changed (scaling and paused Deployments).
    pub(super) async fn sync_status(&self, d: &Deployment, new_rs: Option<&Arc<ReplicaSet>>, old: &[Arc<ReplicaSet>]) -> Result<(), String> {
        let all: Vec<Arc<ReplicaSet>> = old.iter().cloned().chain(new_rs.cloned()).collect();
        let s = calculate(d, &all, new_rs, Timestamp::now());
        if d.status.as_ref() == Some(&s) {
            return Ok(());
        }
        self.write_status(&mut d.clone(), s).await
    }

    /// Writes the status with the Progressing condition of the rollout; a rollout that did not
    /// change is looked at again when its deadline passes.
    pub(super) async fn sync_rollout_status(&self, d: &mut Deployment, all: &[Arc<ReplicaSet>], new_rs: Option<&Arc<ReplicaSet>>) -> Result<(), String> {
        let now = Timestamp::now();
        let mut s = calculate(d, all, new_rs, now);
        if !util::has_progress_deadline(d) {
            remove_condition(&mut s, "Progressing");
        }
        let current = condition(&s, "Progressing").cloned();
        let complete_already = s.replicas == s.updated_replicas && current.as_ref().is_some_and(|c| c.reason.as_deref() == Some(util::NEW_RS_AVAILABLE));
        if util::has_progress_deadline(d) && !complete_already {
            let who = subject(new_rs, d);
            if util::complete(d, &s) {
                set_condition(&mut s, new_condition("Progressing", "True", util::NEW_RS_AVAILABLE, format!("{who} has successfully progressed."), now));
            } else if util::progressing(d, &s) {
                let mut c = new_condition("Progressing", "True", util::RS_UPDATED, format!("{who} is progressing."), now);
                if let Some(cur) = &current {
                    if cur.status == "True" {
                        c.last_transition_time = cur.last_transition_time.clone();
                    }
                    remove_condition(&mut s, "Progressing");
                }
                set_condition(&mut s, c);
            } else if util::timed_out(d, &s, now) {
                set_condition(&mut s, new_condition("Progressing", "False", util::TIMED_OUT, format!("{who} has timed out progressing."), now));
            }
        }
        // a ReplicaSet that cannot create pods
        let failure = all.iter().find_map(|rs| rs.status.as_ref()?.conditions.as_ref()?.iter().find(|c| c.type_ == "ReplicaFailure").cloned());
        match failure {
            Some(f) => {
                set_condition(&mut s, new_condition("ReplicaFailure", &f.status, f.reason.as_deref().unwrap_or(""), f.message.clone().unwrap_or_default(), now))
            }
            None => remove_condition(&mut s, "ReplicaFailure"),
        }
        if d.status.as_ref() == Some(&s) {
            self.requeue_stuck(d, &s, now);
            return Ok(());
        }
        self.write_status(d, s).await
    }

    /// A rollout still within its deadline is synced again when the deadline passes.
    fn requeue_stuck(&self, d: &Deployment, s: &DeploymentStatus, now: Timestamp) {
        let Some(c) = condition(s, "Progressing") else { return };
        if !util::has_progress_deadline(d) || util::complete(d, s) || c.reason.as_deref() == Some(util::TIMED_OUT) {
            return;
        }
        let Some(updated) = c.last_update_time.as_ref().map(|t| t.0) else { return };
        let deadline = i64::from(d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).unwrap_or(600));
        let Ok(end) = updated.saturating_add(jiff::SignedDuration::from_secs(deadline)) else { return };
        let key = crate::informer::key_of(d);
        let wait = end.duration_since(now);
        if wait.as_secs() < 1 {
            self.queue.add_rate_limited(key);
        } else {
            self.queue.add_after(key, wait.unsigned_abs() + Duration::from_secs(1));
        }
    }

    /// Progressing becomes Unknown (DeploymentPaused) while paused and Unknown
    /// (DeploymentResumed) when resumed; a timed-out rollout keeps its condition.
    pub(super) async fn check_paused_conditions(&self, d: &mut Deployment) -> Result<(), String> {
        if !util::has_progress_deadline(d) {
            return Ok(());
        }
        let mut s = d.status.clone().unwrap_or_default();
        let reason = condition(&s, "Progressing").and_then(|c| c.reason.clone());
        if reason.as_deref() == Some(util::TIMED_OUT) {
            return Ok(());
        }
        let now = Timestamp::now();
        let paused = util::paused(d);
        if paused && reason.as_deref() != Some(util::PAUSED) {
            set_condition(&mut s, new_condition("Progressing", "Unknown", util::PAUSED, "Deployment is paused".into(), now));
        } else if !paused && reason.as_deref() == Some(util::PAUSED) {
            set_condition(&mut s, new_condition("Progressing", "Unknown", util::RESUMED, "Deployment is resumed".into(), now));
        } else {
            return Ok(());
        }
        self.write_status(d, s).await
    }
}
