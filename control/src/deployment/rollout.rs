//! The strategies of a Deployment and what they do to its ReplicaSets: the new ReplicaSet found
//! or created (with the next revision), RollingUpdate (grow the new one within maxSurge, shrink
//! the old ones within maxUnavailable, unhealthy old replicas first), Recreate (old ones to
//! zero, wait for their pods to go, then the new one), scaling (one active ReplicaSet takes the
//! new size; several share it in proportion), and the cleanup of history beyond
//! revisionHistoryLimit.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, PostParams};

use super::util::{self, condition, new_condition, set_condition};
use super::Controller;
use crate::controller::{owner, pods::error_message};
use crate::recorder::{NORMAL, WARNING};

type RsList = Vec<Arc<ReplicaSet>>;

fn name(rs: &ReplicaSet) -> &str {
    rs.metadata.name.as_deref().unwrap_or("")
}

fn active(rss: &[Arc<ReplicaSet>]) -> RsList {
    rss.iter().filter(|rs| util::rs_replicas(rs) > 0).cloned().collect()
}

impl Controller {
    fn rs_api(&self, d: &Deployment) -> kube::Api<ReplicaSet> {
        kube::Api::namespaced(self.client.clone(), d.metadata.namespace.as_deref().unwrap_or(""))
    }

    /// Sets the Deployment's revision annotation to the new ReplicaSet's.
    async fn set_revision(&self, d: &mut Deployment, revision: &str) -> Result<(), String> {
        if d.metadata.annotations.as_ref().and_then(|a| a.get(util::REVISION)).map(String::as_str) == Some(revision) {
            return Ok(());
        }
        let api: kube::Api<Deployment> = kube::Api::namespaced(self.client.clone(), d.metadata.namespace.as_deref().unwrap_or(""));
        let mut next = d.clone();
        next.metadata.annotations.get_or_insert_with(Default::default).insert(util::REVISION.into(), revision.into());
        *d = api.replace(d.metadata.name.as_deref().unwrap_or(""), &PostParams::default(), &next).await.map_err(|e| format!("setting the revision: {e}"))?;
        Ok(())
    }

    /// The new ReplicaSet (its annotations brought up to date, or created when `create` and
    /// there is none) and the old ones.
    pub(super) async fn new_and_old(&self, d: &mut Deployment, rss: RsList, create: bool) -> Result<(Option<Arc<ReplicaSet>>, RsList), String> {
        let (found, old) = util::split(d, rss);
        let revision = util::max_revision(&old) + 1;
        if let Some(existing) = found {
            let mut rs = (*existing).clone();
            let min_ready = d.spec.as_ref().and_then(|s| s.min_ready_seconds);
            let annotations_changed = util::set_new_rs_annotations(d, &mut rs, revision, false);
            let spec = rs.spec.get_or_insert_with(Default::default);
            let min_ready_changed = spec.min_ready_seconds != min_ready;
            let rs = if annotations_changed || min_ready_changed {
                spec.min_ready_seconds = min_ready;
                Arc::new(self.rs_api(d).replace(name(&rs), &PostParams::default(), &rs).await.map_err(|e| format!("updating replica set {}: {e}", name(&rs)))?)
            } else {
                existing
            };
            self.set_revision(d, &util::revision(&rs).to_string()).await?;
            let mut s = d.status.clone().unwrap_or_default();
            if util::has_progress_deadline(d) && condition(&s, "Progressing").is_none() {
                set_condition(
                    &mut s,
                    new_condition("Progressing", "True", util::FOUND_NEW_RS, format!("Found new replica set \"{}\"", name(&rs)), jiff::Timestamp::now()),
                );
                self.write_status(d, s).await?;
            }
            return Ok((Some(rs), old));
        }
        if !create {
            return Ok((None, old));
        }
        let rs = self.create_new(d, &old, revision).await?;
        Ok((Some(rs), old))
    }

    async fn create_new(&self, d: &mut Deployment, old: &[Arc<ReplicaSet>], revision: i64) -> Result<Arc<ReplicaSet>, String> {
        let collisions = d.status.as_ref().and_then(|s| s.collision_count);
        let mut template = util::template(d);
        let hash = util::template_hash(&template, collisions);
        template.metadata.get_or_insert_with(Default::default).labels.get_or_insert_with(Default::default).insert(util::POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector = d.spec.as_ref().map(|s| s.selector.clone()).unwrap_or_default();
        selector.match_labels.get_or_insert_with(Default::default).insert(util::POD_TEMPLATE_HASH.into(), hash.clone());
        let rs_name = format!("{}-{hash}", d.metadata.name.as_deref().unwrap_or(""));
        let mut rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(rs_name.clone()),
                namespace: d.metadata.namespace.clone(),
                labels: template.metadata.as_ref().and_then(|m| m.labels.clone()),
                owner_references: Some(vec![owner::controller_ref(d)]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(0),
                min_ready_seconds: d.spec.as_ref().and_then(|s| s.min_ready_seconds),
                selector,
                template: Some(template),
            }),
            status: None,
        };
        util::set_new_rs_annotations(d, &mut rs, revision, true);
        let all: RsList = old.iter().cloned().chain([Arc::new(rs.clone())]).collect();
        let replicas = util::new_rs_replicas(d, &all, &rs);
        if let Some(spec) = rs.spec.as_mut() {
            spec.replicas = Some(replicas);
        }
        let now = jiff::Timestamp::now();
        let created = match self.rs_api(d).create(&PostParams::default(), &rs).await {
            Ok(c) => c,
            Err(kube::Error::Api(s)) if s.code == 409 => {
                // ours already (an earlier sync's create) or a hash collision
                let existing = self.rs_api(d).get_opt(&rs_name).await.map_err(|e| e.to_string())?;
                let ours = existing.as_ref().is_some_and(|e| {
                    owner::controlled_by(&e.metadata, "Deployment", d.metadata.uid.as_deref().unwrap_or(""))
                        && e.spec.as_ref().and_then(|s| s.template.as_ref()).is_some_and(|t| util::equal_ignoring_hash(t, &util::template(d)))
                });
                if let (true, Some(e)) = (ours, existing) {
                    return Ok(Arc::new(e));
                }
                let mut s = d.status.clone().unwrap_or_default();
                s.collision_count = Some(collisions.unwrap_or(0) + 1);
                self.write_status(d, s).await?;
                return Err(format!("replica set {rs_name} exists with another template: collision count raised"));
            }
            Err(e) => {
                let msg = format!("Failed to create new replica set \"{rs_name}\": {}", error_message(&e));
                self.recorder.event(d, WARNING, "ReplicaSetCreateError", msg.clone());
                if util::has_progress_deadline(d) {
                    let mut s = d.status.clone().unwrap_or_default();
                    set_condition(&mut s, new_condition("Progressing", "False", "ReplicaSetCreateError", msg.clone(), now));
                    self.write_status(d, s).await?;
                }
                return Err(msg);
            }
        };
        if replicas > 0 {
            self.recorder.event(d, NORMAL, "ScalingReplicaSet", format!("Scaled up replica set {rs_name} from 0 to {replicas}"));
        }
        self.set_revision(d, &revision.to_string()).await?;
        if util::has_progress_deadline(d) {
            let mut s = d.status.clone().unwrap_or_default();
            set_condition(&mut s, new_condition("Progressing", "True", util::NEW_RS_CREATED, format!("Created new replica set \"{rs_name}\""), now));
            self.write_status(d, s).await?;
        }
        Ok(Arc::new(created))
    }

    /// Sets the ReplicaSet's replicas to `size` (and its replica annotations to the
    /// Deployment's), with a ScalingReplicaSet event when the size changes. The ReplicaSet as
    /// written (the same when nothing changed).
    async fn scale_rs(&self, d: &Deployment, rs: &Arc<ReplicaSet>, size: i32) -> Result<Arc<ReplicaSet>, String> {
        let from = util::rs_replicas(rs);
        let (desired, max) = (util::replicas(d), util::replicas(d) + util::max_surge(d));
        if from == size && !util::replica_annotations_differ(rs, desired, max) {
            return Ok(rs.clone());
        }
        let mut next = (**rs).clone();
        next.spec.get_or_insert_with(Default::default).replicas = Some(size);
        util::set_replica_annotations(&mut next, desired, max);
        let written = self.rs_api(d).replace(name(rs), &PostParams::default(), &next).await.map_err(|e| format!("scaling replica set {}: {e}", name(rs)))?;
        if from != size {
            let op = if size > from { "up" } else { "down" };
            self.recorder.event(d, NORMAL, "ScalingReplicaSet", format!("Scaled {op} replica set {} from {from} to {size}", name(rs)));
        }
        Ok(Arc::new(written))
    }

    pub(super) async fn rolling(&self, d: &mut Deployment, rss: RsList) -> Result<(), String> {
        let (new_rs, old) = self.new_and_old(d, rss, true).await?;
        let Some(mut new_rs) = new_rs else { return Ok(()) };
        let all: RsList = old.iter().cloned().chain([new_rs.clone()]).collect();
        // grow (or trim) the new ReplicaSet
        let want = util::replicas(d);
        let now_size = util::rs_replicas(&new_rs);
        if now_size != want {
            let size = if now_size > want { want } else { util::new_rs_replicas(d, &all, &new_rs) };
            if size != now_size {
                new_rs = self.scale_rs(d, &new_rs, size).await?;
                let all: RsList = old.iter().cloned().chain([new_rs.clone()]).collect();
                return self.sync_rollout_status(d, &all, Some(&new_rs)).await;
            }
        }
        // shrink the old ones
        let (old, scaled_down) = self.reconcile_old(d, &all, active(&old), &new_rs).await?;
        let all: RsList = old.iter().cloned().chain([new_rs.clone()]).collect();
        if scaled_down {
            return self.sync_rollout_status(d, &all, Some(&new_rs)).await;
        }
        if d.status.as_ref().is_some_and(|s| util::complete(d, s)) {
            self.cleanup(d, &old).await?;
        }
        self.sync_rollout_status(d, &all, Some(&new_rs)).await
    }

    /// Scales old ReplicaSets down as far as maxUnavailable allows: unhealthy replicas first,
    /// then available ones down to replicas - maxUnavailable available. The old ReplicaSets as
    /// they are now, and whether any was scaled.
    async fn reconcile_old(&self, d: &Deployment, all: &[Arc<ReplicaSet>], old_active: RsList, new_rs: &Arc<ReplicaSet>) -> Result<(RsList, bool), String> {
        let old_pods: i32 = old_active.iter().map(|r| util::rs_replicas(r)).sum();
        if old_pods == 0 {
            return Ok((old_active, false));
        }
        let all_pods: i32 = all.iter().map(|r| util::rs_replicas(r)).sum();
        let min_available = util::replicas(d) - util::max_unavailable(d);
        let new_unavailable = util::rs_replicas(new_rs) - util::rs_status(new_rs).2;
        let max_scaled_down = all_pods - min_available - new_unavailable;
        if max_scaled_down <= 0 {
            return Ok((old_active, false));
        }
        // an old ReplicaSet's status may still count pods it is about to delete: it will have
        // at most its spec's replicas available (upstream trusts the status alone)
        let available_of = |rs: &ReplicaSet| util::rs_status(rs).2.min(util::rs_replicas(rs));
        // unhealthy replicas of old ReplicaSets first (oldest first)
        let mut old = old_active;
        util::oldest_first(&mut old);
        let mut cleaned = 0;
        for rs in old.iter_mut() {
            if cleaned >= max_scaled_down {
                break;
            }
            let size = util::rs_replicas(rs);
            let unhealthy = size - available_of(rs);
            if size == 0 || unhealthy <= 0 {
                continue;
            }
            let n = (max_scaled_down - cleaned).min(unhealthy);
            *rs = self.scale_rs(d, rs, size - n).await?;
            cleaned += n;
        }
        // then available ones, keeping minAvailable
        let available: i32 = old.iter().map(|r| available_of(r)).sum::<i32>() + util::rs_status(new_rs).2;
        let mut scaled = 0;
        if available > min_available {
            let total = available - min_available;
            for rs in old.iter_mut() {
                if scaled >= total {
                    break;
                }
                let size = util::rs_replicas(rs);
                if size == 0 {
                    continue;
                }
                let n = size.min(total - scaled);
                *rs = self.scale_rs(d, rs, size - n).await?;
                scaled += n;
            }
        }
        Ok((old, cleaned + scaled > 0))
    }

    pub(super) async fn recreate(&self, d: &mut Deployment, rss: RsList) -> Result<(), String> {
        let (new_rs, old) = self.new_and_old(d, rss, false).await?;
        let mut old_now = vec![];
        let mut scaled = false;
        for rs in &old {
            if util::rs_replicas(rs) > 0 {
                old_now.push(self.scale_rs(d, rs, 0).await?);
                scaled = true;
            } else {
                old_now.push(rs.clone());
            }
        }
        let all: RsList = old_now.iter().cloned().chain(new_rs.clone()).collect();
        if scaled || self.old_pods_running(&old_now) {
            return self.sync_rollout_status(d, &all, new_rs.as_ref()).await;
        }
        let (new_rs, old) = match new_rs {
            Some(n) => (n, old_now),
            None => {
                let rss: RsList = old_now.to_vec();
                let (n, o) = self.new_and_old(d, rss, true).await?;
                let Some(n) = n else { return Ok(()) };
                (n, o)
            }
        };
        let new_rs = self.scale_rs(d, &new_rs, util::replicas(d)).await?;
        if d.status.as_ref().is_some_and(|s| util::complete(d, s)) {
            self.cleanup(d, &old).await?;
        }
        let all: RsList = old.iter().cloned().chain([new_rs.clone()]).collect();
        self.sync_rollout_status(d, &all, Some(&new_rs)).await
    }

    /// Pods of old ReplicaSets that have not finished (Recreate waits for them to be gone).
    fn old_pods_running(&self, old: &[Arc<ReplicaSet>]) -> bool {
        if old.iter().any(|rs| util::rs_status(rs).0 > 0) {
            return true;
        }
        old.iter().any(|rs| {
            let ns = rs.metadata.namespace.as_deref().unwrap_or("");
            let uid = rs.metadata.uid.as_deref().unwrap_or("");
            self.pods
                .list_namespace(ns)
                .iter()
                .any(|p| owner::controlled_by(&p.metadata, "ReplicaSet", uid) && !matches!(crate::controller::phase(p), "Succeeded" | "Failed"))
        })
    }

    /// Paused Deployments and replica changes: sizes spread over the ReplicaSets, status written.
    pub(super) async fn sync_scale(&self, d: &mut Deployment, rss: RsList) -> Result<(), String> {
        let (new_rs, old) = self.new_and_old(d, rss, false).await?;
        let (new_rs, old) = self.scale(d, new_rs, old).await?;
        if util::paused(d) {
            self.cleanup(d, &old).await?;
        }
        self.sync_status(d, new_rs.as_ref(), &old).await
    }

    async fn scale(&self, d: &Deployment, new_rs: Option<Arc<ReplicaSet>>, old: RsList) -> Result<(Option<Arc<ReplicaSet>>, RsList), String> {
        let want = util::replicas(d);
        let replace = |list: &mut RsList, new: &mut Option<Arc<ReplicaSet>>, rs: Arc<ReplicaSet>| {
            if new.as_ref().is_some_and(|n| n.metadata.uid == rs.metadata.uid) {
                *new = Some(rs);
            } else if let Some(slot) = list.iter_mut().find(|o| o.metadata.uid == rs.metadata.uid) {
                *slot = rs;
            }
        };
        let (mut new_rs, mut old) = (new_rs, old);
        if let Some(only) = util::active_or_latest(new_rs.as_ref(), &old) {
            if util::rs_replicas(&only) != want {
                let scaled = self.scale_rs(d, &only, want).await?;
                replace(&mut old, &mut new_rs, scaled);
            }
            return Ok((new_rs, old));
        }
        if util::saturated(d, new_rs.as_ref()) {
            for rs in active(&old) {
                let scaled = self.scale_rs(d, &rs, 0).await?;
                replace(&mut old, &mut new_rs, scaled);
            }
            return Ok((new_rs, old));
        }
        if !util::is_rolling(d) {
            return Ok((new_rs, old));
        }
        let mut all = active(&old.iter().cloned().chain(new_rs.clone()).collect::<Vec<_>>());
        let current: i32 = all.iter().map(|r| util::rs_replicas(r)).sum();
        let allowed = if want > 0 { want + util::max_surge(d) } else { 0 };
        let to_add = allowed - current;
        // larger first; newer first when growing, older first when shrinking
        all.sort_by(|a, b| {
            let t = |r: &ReplicaSet| r.metadata.creation_timestamp.as_ref().map(|t| t.0);
            let by_age = if to_add > 0 { t(b).cmp(&t(a)) } else { t(a).cmp(&t(b)) };
            util::rs_replicas(b).cmp(&util::rs_replicas(a)).then(by_age)
        });
        let mut sizes: HashMap<String, i32> = HashMap::new();
        let mut added = 0;
        for rs in &all {
            let p = if to_add != 0 { util::proportion(d, rs, to_add, added) } else { 0 };
            sizes.insert(name(rs).to_string(), util::rs_replicas(rs) + p);
            added += p;
        }
        if let (Some(first), true) = (all.first(), to_add != 0) {
            let s = sizes.entry(name(first).to_string()).or_default();
            *s = (*s + to_add - added).max(0);
        }
        for rs in &all {
            let size = sizes.get(name(rs)).copied().unwrap_or_else(|| util::rs_replicas(rs));
            let scaled = self.scale_rs(d, rs, size).await?;
            replace(&mut old, &mut new_rs, scaled);
        }
        Ok((new_rs, old))
    }

    /// Deletes the oldest ReplicaSets beyond revisionHistoryLimit that have no pods.
    async fn cleanup(&self, d: &Deployment, old: &[Arc<ReplicaSet>]) -> Result<(), String> {
        let Some(limit) = d.spec.as_ref().and_then(|s| s.revision_history_limit) else { return Ok(()) };
        let mut cleanable: RsList = old.iter().filter(|rs| rs.metadata.deletion_timestamp.is_none()).cloned().collect();
        let extra = cleanable.len() as i64 - i64::from(limit);
        if extra <= 0 {
            return Ok(());
        }
        cleanable.sort_by_key(|rs| util::revision(rs));
        for rs in cleanable.iter().take(extra as usize) {
            let observed = rs.status.as_ref().and_then(|s| s.observed_generation).unwrap_or(0);
            if util::rs_status(rs).0 != 0 || util::rs_replicas(rs) != 0 || rs.metadata.generation.unwrap_or(0) > observed {
                continue;
            }
            match self.rs_api(d).delete(name(rs), &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(format!("deleting old replica set {}: {e}", name(rs))),
            }
        }
        Ok(())
    }
}
