//! The arithmetic and bookkeeping of Deployments, as upstream's deployment util: revision and
//! replica annotations on ReplicaSets, the pod-template-hash, which ReplicaSet is the new one,
//! maxSurge/maxUnavailable resolved against the replicas, how far the new ReplicaSet may grow,
//! proportional scaling, and the conditions.

use std::sync::Arc;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// Deployment annotations not copied to its ReplicaSets.
const NOT_COPIED: &[&str] =
    &["kubectl.kubernetes.io/last-applied-configuration", REVISION, REVISION_HISTORY, DESIRED_REPLICAS, MAX_REPLICAS, "deprecated.deployment.rollback.to"];

// Condition reasons, upstream's.
pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const RS_UPDATED: &str = "ReplicaSetUpdated";
pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const PAUSED: &str = "DeploymentPaused";
pub const RESUMED: &str = "DeploymentResumed";
pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

pub fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.clone().unwrap_or_default();
    (s.replicas, s.ready_replicas.unwrap_or(0), s.available_replicas.unwrap_or(0))
}

fn annotation<'a>(rs: &'a ReplicaSet, key: &str) -> Option<&'a str> {
    rs.metadata.annotations.as_ref()?.get(key).map(String::as_str)
}

pub fn revision(rs: &ReplicaSet) -> i64 {
    annotation(rs, REVISION).and_then(|v| v.parse().ok()).unwrap_or(0)
}

pub fn max_revision(all: &[Arc<ReplicaSet>]) -> i64 {
    all.iter().map(|rs| revision(rs)).max().unwrap_or(0)
}

pub fn is_rolling(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.type_.as_deref()) != Some("Recreate")
}

pub fn paused(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.paused).unwrap_or(false)
}

pub fn template(d: &Deployment) -> PodTemplateSpec {
    d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default()
}

/// A value of an int-or-percent field scaled to `total` (percent rounded up or down).
pub fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        None => 0,
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let pct: f64 = s.trim_end_matches('%').parse().unwrap_or(0.0);
            let x = pct * f64::from(total) / 100.0;
            (if round_up { x.ceil() } else { x.floor() }) as i32
        }
    }
}

/// maxSurge and maxUnavailable for `desired` replicas (both 0 makes maxUnavailable 1).
pub fn fenceposts(d: &Deployment, desired: i32) -> (i32, i32) {
    let ru = d.spec.as_ref().and_then(|s| s.strategy.as_ref()).and_then(|s| s.rolling_update.as_ref());
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()).or(Some(&IntOrString::String("25%".into()))), desired, true);
    let unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()).or(Some(&IntOrString::String("25%".into()))), desired, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

pub fn max_unavailable(d: &Deployment) -> i32 {
    let r = replicas(d);
    if !is_rolling(d) || r == 0 {
        return 0;
    }
    fenceposts(d, r).1.min(r)
}

pub fn max_surge(d: &Deployment) -> i32 {
    if !is_rolling(d) {
        return 0;
    }
    fenceposts(d, replicas(d)).0
}

/// The template without the pod-template-hash label, for comparing.
fn without_hash(t: &PodTemplateSpec) -> serde_json::Value {
    let mut t = t.clone();
    if let Some(labels) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(POD_TEMPLATE_HASH);
        if labels.is_empty() {
            if let Some(m) = t.metadata.as_mut() {
                m.labels = None;
            }
        }
    }
    serde_json::to_value(t).unwrap_or_default()
}

/// Whether two templates are equal but for the pod-template-hash label.
pub fn equal_ignoring_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    without_hash(a) == without_hash(b)
}

/// The pod-template-hash: FNV-32a of the template (and the collision count), written in the
/// safe alphabet upstream uses for generated names.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let mut h: u32 = 0x811c9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x01000193);
        }
    };
    feed(serde_json::to_string(t).unwrap_or_default().as_bytes());
    if let Some(c) = collision_count {
        feed(&c.to_le_bytes());
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    h.to_string().bytes().map(|b| ALPHABET[usize::from(b) % ALPHABET.len()] as char).collect()
}

/// The ReplicaSets sorted oldest first (then by name).
pub fn oldest_first(rss: &mut [Arc<ReplicaSet>]) {
    rss.sort_by(|a, b| {
        let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
        t(a).cmp(&t(b)).then_with(|| a.metadata.name.cmp(&b.metadata.name))
    });
}

/// The new ReplicaSet (the oldest whose template is the Deployment's) and the others.
pub fn split(d: &Deployment, mut rss: Vec<Arc<ReplicaSet>>) -> (Option<Arc<ReplicaSet>>, Vec<Arc<ReplicaSet>>) {
    oldest_first(&mut rss);
    let t = template(d);
    let pos = rss.iter().position(|rs| rs.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|rt| equal_ignoring_hash(rt, &t)));
    match pos {
        Some(i) => {
            let new = rss.remove(i);
            (Some(new), rss)
        }
        None => (None, rss),
    }
}

/// The replicas the new ReplicaSet may have now.
pub fn new_rs_replicas(d: &Deployment, all: &[Arc<ReplicaSet>], new_rs: &ReplicaSet) -> i32 {
    let want = replicas(d);
    if !is_rolling(d) {
        return want;
    }
    let current: i32 = all.iter().map(|r| rs_replicas(r)).sum();
    let max_total = want + max_surge(d);
    let new_now = rs_replicas(new_rs);
    if current >= max_total {
        return new_now;
    }
    new_now + (max_total - current).min(want - new_now).max(0)
}

/// Whether the ReplicaSet's desired/max annotations differ from these.
pub fn replica_annotations_differ(rs: &ReplicaSet, desired: i32, max: i32) -> bool {
    annotation(rs, DESIRED_REPLICAS) != Some(desired.to_string().as_str()) || annotation(rs, MAX_REPLICAS) != Some(max.to_string().as_str())
}

pub fn set_replica_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) {
    let a = rs.metadata.annotations.get_or_insert_with(Default::default);
    a.insert(DESIRED_REPLICAS.into(), desired.to_string());
    a.insert(MAX_REPLICAS.into(), max.to_string());
}

/// The desired-replicas annotation.
pub fn desired_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation(rs, DESIRED_REPLICAS)?.parse().ok()
}

/// Copies the Deployment's annotations to the ReplicaSet and raises its revision to
/// `new_revision` (remembering the old one in revision-history); sets the replica annotations
/// of a ReplicaSet being created. Whether anything changed.
pub fn set_new_rs_annotations(d: &Deployment, rs: &mut ReplicaSet, new_revision: i64, creating: bool) -> bool {
    let mut changed = false;
    let a = rs.metadata.annotations.get_or_insert_with(Default::default);
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || a.get(k) == Some(v) {
            continue;
        }
        a.insert(k.clone(), v.clone());
        changed = true;
    }
    let old: i64 = a.get(REVISION).and_then(|v| v.parse().ok()).unwrap_or(0);
    if old < new_revision {
        if old > 0 {
            let history = a.get(REVISION_HISTORY).cloned().unwrap_or_default();
            let history = if history.is_empty() { old.to_string() } else { format!("{history},{old}") };
            a.insert(REVISION_HISTORY.into(), history);
        }
        a.insert(REVISION.into(), new_revision.to_string());
        changed = true;
    }
    if creating {
        set_replica_annotations(rs, replicas(d), replicas(d) + max_surge(d));
        changed = true;
    }
    changed
}

/// The one ReplicaSet with pods (or the newest when none has any); None when several have.
pub fn active_or_latest(new_rs: Option<&Arc<ReplicaSet>>, old: &[Arc<ReplicaSet>]) -> Option<Arc<ReplicaSet>> {
    let mut old = old.to_vec();
    oldest_first(&mut old);
    old.reverse();
    let active: Vec<&Arc<ReplicaSet>> = old.iter().chain(new_rs).filter(|r| rs_replicas(r) > 0).collect();
    match active.len() {
        0 => new_rs.cloned().or_else(|| old.first().cloned()),
        1 => Some(active[0].clone()),
        _ => None,
    }
}

/// The new ReplicaSet has all the Deployment's replicas, all available.
pub fn saturated(d: &Deployment, rs: Option<&Arc<ReplicaSet>>) -> bool {
    let Some(rs) = rs else { return false };
    let want = replicas(d);
    desired_annotation(rs) == Some(want) && rs_replicas(rs) == want && rs_status(rs).2 == want
}

/// How many replicas the ReplicaSet gets of `to_add` in proportional scaling.
pub fn proportion(d: &Deployment, rs: &ReplicaSet, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = {
        let want = replicas(d);
        if want == 0 {
            -rs_replicas(rs)
        } else {
            let allowed_total = want + max_surge(d);
            let annotated = annotation(rs, MAX_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or_else(|| d.status.as_ref().map(|s| s.replicas.unwrap_or(0)).unwrap_or(0));
            if annotated == 0 {
                0
            } else {
                let size = f64::from(rs_replicas(rs)) * f64::from(allowed_total) / f64::from(annotated);
                size.round() as i32 - rs_replicas(rs)
            }
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

pub fn condition<'a>(status: &'a DeploymentStatus, kind: &str) -> Option<&'a DeploymentCondition> {
    status.conditions.as_ref()?.iter().find(|c| c.type_ == kind)
}

pub fn new_condition(kind: &str, status: &str, reason: &str, message: String, now: Timestamp) -> DeploymentCondition {
    DeploymentCondition {
        type_: kind.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Sets a condition; the same status and reason leaves it as it is, the same status keeps its
/// transition time.
pub fn set_condition(status: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(current) = condition(status, &c.type_) {
        if current.status == c.status && current.reason == c.reason {
            return;
        }
        if current.status == c.status {
            c.last_transition_time = current.last_transition_time.clone();
        }
    }
    let list = status.conditions.get_or_insert_with(Vec::new);
    list.retain(|x| x.type_ != c.type_);
    list.push(c);
}

pub fn remove_condition(status: &mut DeploymentStatus, kind: &str) {
    if let Some(list) = status.conditions.as_mut() {
        list.retain(|x| x.type_ != kind);
    }
}

pub fn has_progress_deadline(d: &Deployment) -> bool {
    d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).is_some_and(|s| s != i32::MAX)
}

/// Every replica updated and available, and the latest spec observed.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let want = replicas(d);
    s.updated_replicas.unwrap_or(0) == want
        && s.replicas.unwrap_or(0) == want
        && s.available_replicas.unwrap_or(0) == want
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// The rollout moved since the status last written.
pub fn progressing(d: &Deployment, s: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = s.replicas.unwrap_or(0) - s.updated_replicas.unwrap_or(0);
    s.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || s.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || s.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// The rollout made no progress for progressDeadlineSeconds.
pub fn timed_out(d: &Deployment, s: &DeploymentStatus, now: Timestamp) -> bool {
    if !has_progress_deadline(d) {
        return false;
    }
    let Some(c) = condition(s, "Progressing") else { return false };
    match c.reason.as_deref() {
        Some(NEW_RS_AVAILABLE) => false,
        Some(TIMED_OUT) => true,
        _ => {
            let deadline = i64::from(d.spec.as_ref().and_then(|s| s.progress_deadline_seconds).unwrap_or(600));
            c.last_update_time.as_ref().is_some_and(|t| t.0.saturating_add(jiff::SignedDuration::from_secs(deadline)).is_ok_and(|end| end < now))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deployment(replicas: i32, surge: serde_json::Value, unavailable: serde_json::Value) -> Deployment {
        serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {"replicas": replicas, "selector": {}, "template": {},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}}}}))
        .expect("deployment")
    }

    fn rs(name: &str, replicas: i32, max: Option<i32>) -> Arc<ReplicaSet> {
        let annotations = max.map(|m| json!({MAX_REPLICAS: m.to_string()}));
        Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "annotations": annotations}, "spec": {"replicas": replicas, "selector": {}}}))
                .expect("rs"),
        )
    }

    #[test]
    fn surge_rounds_up_unavailable_down_and_both_zero_is_one_unavailable() {
        assert_eq!(fenceposts(&deployment(10, json!("25%"), json!("25%")), 10), (3, 2));
        assert_eq!(fenceposts(&deployment(3, json!(1), json!(0)), 3), (1, 0));
        assert_eq!(fenceposts(&deployment(3, json!(0), json!("0%")), 3), (0, 1));
        assert_eq!(max_unavailable(&deployment(2, json!(0), json!(5))), 2, "capped at replicas");
    }

    #[test]
    fn the_new_replicaset_grows_within_max_surge() {
        let d = deployment(3, json!(1), json!(0));
        let new = rs("new", 0, None);
        let all = vec![rs("old", 3, None), new.clone()];
        assert_eq!(new_rs_replicas(&d, &all, &new), 1);
        let all = vec![rs("old", 3, None), rs("new", 1, None)];
        assert_eq!(new_rs_replicas(&d, &all, &all[1]), 1, "at max surge");
        let all = vec![rs("old", 2, None), rs("new", 1, None)];
        assert_eq!(new_rs_replicas(&d, &all, &all[1]), 2);
    }

    #[test]
    fn proportional_scaling_follows_the_max_replicas_annotation() {
        // 10 replicas, maxSurge 3 (13 allowed) scaled to 15 (maxSurge 4: 19 allowed)
        let d = deployment(15, json!("25%"), json!("25%"));
        assert_eq!(proportion(&d, &rs("a", 8, Some(13)), 6, 0), 4);
        assert_eq!(proportion(&d, &rs("b", 5, Some(13)), 6, 4), 2);
    }

    #[test]
    fn hashes_differ_by_template_and_collision_count_and_use_the_safe_alphabet() {
        let t: PodTemplateSpec = serde_json::from_value(json!({"metadata": {"labels": {"app": "web"}}})).expect("t");
        let h = template_hash(&t, None);
        assert!(h.chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)) && !h.is_empty());
        assert_ne!(h, template_hash(&t, Some(1)));
        let mut labeled = t.clone();
        labeled.metadata.as_mut().and_then(|m| m.labels.as_mut()).map(|l| l.insert(POD_TEMPLATE_HASH.into(), h.clone()));
        assert!(equal_ignoring_hash(&t, &labeled));
    }
}
