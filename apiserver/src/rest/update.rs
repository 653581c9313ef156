//! update, patch and the status and scale subresources: one guaranteed-update loop (read the
//! current object, compute the new one, compare-and-swap on its mod revision, retry when a
//! concurrent writer won and the caller gave no resourceVersion, 409 when it did). Update keeps
//! what the server owns (uid, creationTimestamp, the status of kinds with a status subresource),
//! bumps generation only when the spec changed, and does not write when nothing changed.

use std::sync::Arc;

use berth_store::StoreError;
use serde_json::{json, Value};

use super::{admit_body, store_error, to_bytes, WriteOptions, Written};
use crate::admission::{Attributes, Operation};
use crate::api::Api;
use crate::cache::decode_kv;
use crate::meta;
use crate::patch::{self, PatchType};
use crate::resources::Resource;
use crate::status::{ApiError, FieldError};

/// One try of a guaranteed update: what it writes, and from where its object came.
struct UpdateTry<'a> {
    res: &'a Arc<Resource>,
    ns: Option<&'a str>,
    name: &'a str,
    key: &'a str,
    sub: Subresource,
    opts: &'a WriteOptions,
    attempt: u32,
    /// The object came from the watch cache (it may be behind the store).
    from_cache: bool,
}

/// How a try ended.
enum Attempt {
    Done(Written),
    /// Again, from the store's current object.
    Again,
}

/// The store's handle on `key` at `revision`, for questions about that revision alone.
fn stored_at(key: &str, revision: berth_store::Revision) -> berth_store::KeyValue {
    berth_store::KeyValue { key: key.to_string(), value: Default::default(), create_revision: 0, mod_revision: revision }
}

/// Which part of an object a write addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subresource {
    Main,
    Status,
    Scale,
    /// A CSR's approval: status.conditions only.
    Approval,
    /// A namespace's finalize (PUT only): spec.finalizers only.
    Finalize,
    /// A POST-only subresource (pods/binding).
    Action(&'static str),
}

impl Subresource {
    /// The subresource's name in a request path ("" for the main resource).
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Main => "",
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Approval => "approval",
            Subresource::Finalize => "finalize",
            Subresource::Action(a) => a,
        }
    }
}

const SERVER_OWNED: &[&str] = &["name", "namespace", "uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds"];

/// Everything but metadata and status: what generation counts.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        for k in ["metadata", "status", "apiVersion", "kind"] {
            m.remove(k);
        }
    }
    o
}

/// Whether an updated object is to be deleted rather than written: it is being deleted and no
/// finalizer is left (for a namespace, none in spec.finalizers either, as upstream's
/// ShouldDeleteNamespaceDuringUpdate).
pub(crate) fn finalized(res: &Resource, obj: &Value) -> bool {
    let empty = |pointer: &str| obj.pointer(pointer).and_then(Value::as_array).is_none_or(|f| f.is_empty());
    let namespace = res.group.is_empty() && res.plural == "namespaces";
    meta::get(obj, "deletionTimestamp").is_some() && empty("/metadata/finalizers") && (!namespace || empty("/spec/finalizers"))
}

fn without_rv(obj: &Value) -> Value {
    let mut o = obj.clone();
    meta::set(&mut o, "resourceVersion", Value::Null);
    o
}

impl Api {
    /// Replaces the object `name` with `obj` (PUT).
    pub async fn update(
        &self,
        res: &Arc<Resource>,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        if sub == Subresource::Scale {
            // written as the main resource, admitted as the scale subresource (upstream's attributes)
            return self.guaranteed_update(res, ns, name, Subresource::Scale, opts, |current| self.apply_scale(res, current, &obj)).await;
        }
        self.guaranteed_update(res, ns, name, sub, opts, |_| Ok(obj.clone())).await
    }

    /// Applies a patch of type `kind` to the object `name`.
    #[allow(clippy::too_many_arguments)]
    pub async fn patch(
        &self,
        res: &Arc<Resource>,
        ns: Option<&str>,
        name: &str,
        kind: PatchType,
        body: &Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<Written, ApiError> {
        self.guaranteed_update(res, ns, name, sub, opts, |current| {
            let view = if sub == Subresource::Scale { self.scale_of(res, current)? } else { res.served(without_rv(current)) };
            let patched = patch::apply(kind, &view, body).map_err(|e| ApiError { code: 422, reason: "Invalid", message: e, details: None })?;
            if sub == Subresource::Scale {
                self.apply_scale(res, current, &patched)
            } else {
                Ok(res.stored(patched))
            }
        })
        .await
    }

    /// The read-modify-write loop every update goes through. `sub` is what the write addresses
    /// (Scale writes the main resource, and is admitted as the scale subresource).
    pub(crate) async fn guaranteed_update(
        &self,
        res: &Arc<Resource>,
        ns: Option<&str>,
        name: &str,
        sub: Subresource,
        opts: &WriteOptions,
        compute: impl Fn(&Value) -> Result<Value, ApiError>,
    ) -> Result<Written, ApiError> {
        let key = res.key(&self.store_prefix, ns, name);
        let mut attempt = 0;
        // The first try starts from the watch cache's copy, as upstream's cacher suggests it: no
        // store read. The write is a compare-and-swap on its revision, so a copy behind the store
        // costs a try from the store, never a lost write; and what the first try concluded from
        // it (an error, a conflict, nothing to write) is asked again of the store's object.
        let mut use_cache = true;
        loop {
            attempt += 1;
            let cached = if std::mem::take(&mut use_cache) { self.cached_current(res, &key) } else { None };
            let from_cache = cached.is_some();
            let (current, mod_revision) = match cached {
                Some(c) => c,
                None => {
                    let kv = self.store.get(&key, None).await.map_err(|e| store_error(res, name, e))?.ok_or_else(|| ApiError::not_found(res, name))?;
                    (decode_kv(&kv).map_err(ApiError::internal)?, kv.mod_revision)
                }
            };
            let tried = UpdateTry { res, ns, name, key: &key, sub, opts, attempt, from_cache };
            match self.update_attempt(&tried, &compute, current, mod_revision).await {
                Ok(Attempt::Done(written)) => return Ok(written),
                Ok(Attempt::Again) => {}
                Err(_) if from_cache => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// The watch cache's copy of `key` and its revision (None: not there, or no cache).
    fn cached_current(&self, res: &Resource, key: &str) -> Option<(Value, berth_store::Revision)> {
        let object = self.cache(res).ok()?.get(key)?;
        let value = object.value().ok()?;
        let revision = meta::get(&value, "resourceVersion")?.parse().ok()?;
        Some((value, revision))
    }

    /// One try of [`Api::guaranteed_update`] from `current` at `mod_revision`.
    async fn update_attempt(
        &self,
        tried: &UpdateTry<'_>,
        compute: &impl Fn(&Value) -> Result<Value, ApiError>,
        current: Value,
        mod_revision: berth_store::Revision,
    ) -> Result<Attempt, ApiError> {
        let UpdateTry { res, ns, name, key, sub, opts, attempt, from_cache } = *tried;
        let input = compute(&current)?;
        let precondition = super::parse_rv(meta::get(&input, "resourceVersion"))?;
        if precondition.is_some_and(|rv| rv != mod_revision) {
            return Err(ApiError::conflict(res, name));
        }
        let (new, mut warnings) = self.prepare_update(res, ns, name, &current, input, sub, opts)?;
        let mut attrs = Attributes {
            operation: Operation::Update,
            resource: res.clone(),
            subresource: sub.name().to_string(),
            namespace: ns.filter(|_| res.namespaced).map(String::from),
            name: name.to_string(),
            object: Some(new),
            old_object: Some(current.clone()),
            user: opts.user.clone(),
            dry_run: opts.dry_run,
            warnings: vec![],
            charged: vec![],
            reinvocation: Default::default(),
        };
        self.admission.admit(self, &mut attrs).await?;
        let mut new = attrs.object.take().ok_or_else(|| ApiError::internal("admission removed the object"))?;
        res.strategy.default(&mut new).map_err(ApiError::internal)?;
        // what the new object holds and the old did not is taken now (given back if the
        // write does not happen); what only the old held goes once the write is stored
        let allocations = self.allocations(res).filter(|_| sub == Subresource::Main);
        let (held, release_after) = match allocations {
            Some(a) => a.on_update(self, &mut new, &current, opts.dry_run).await?,
            None => Default::default(),
        };
        let give_back = |held: crate::services::alloc::Held| async move {
            if let Some(a) = allocations.filter(|_| !held.is_empty()) {
                a.release(self, &held).await;
            }
        };
        let mut errs = meta::validate(res, &new);
        errs.extend(res.strategy.validate_update(&new, &current));
        if !errs.is_empty() {
            give_back(held).await;
            return Err(ApiError::invalid(res, name, &errs));
        }
        attrs.object = Some(new);
        if let Err(e) = self.admission.validate(self, &mut attrs).await {
            give_back(held).await;
            return Err(e);
        }
        let Some(mut new) = attrs.object.take() else {
            give_back(held).await;
            return Err(ApiError::internal("admission removed the object"));
        };
        warnings.append(&mut attrs.warnings);
        if without_rv(&new) == without_rv(&current) && !self.store.needs_rewrite(&stored_at(key, mod_revision)) {
            crate::admission::rollback(self, &mut attrs).await;
            give_back(held).await;
            // nothing to write: said only of the store's current object (the cache's may be behind)
            if from_cache {
                return Ok(Attempt::Again);
            }
            return Ok(Attempt::Done(Written { object: current, warnings, created: false }));
        }
        if opts.dry_run {
            return Ok(Attempt::Done(Written { object: new, warnings, created: false }));
        }
        let finalized = finalized(res, &new);
        let bytes = to_bytes(&new)?;
        let result = if finalized {
            self.store.delete(key, Some(mod_revision)).await.map(|d| d.revision)
        } else {
            self.store.update(key, bytes, mod_revision, res.ttl).await.map(|kv| kv.mod_revision)
        };
        match result {
            Ok(rev) => {
                if let Some(a) = self.allocations(res) {
                    if finalized {
                        // gone from the store: everything either version held goes back
                        give_back(held).await;
                        a.on_delete(self, &current).await;
                    } else {
                        give_back(release_after).await;
                    }
                }
                meta::set(&mut new, "resourceVersion", json!(rev.to_string()));
                Ok(Attempt::Done(Written { object: new, warnings, created: false }))
            }
            Err(e) => {
                // the write did not happen: what admission charged goes back
                crate::admission::rollback(self, &mut attrs).await;
                give_back(held).await;
                if matches!(e, StoreError::Conflict { .. }) && precondition.is_none() && attempt < 16 {
                    return Ok(Attempt::Again);
                }
                Err(store_error(res, name, e))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn prepare_update(
        &self,
        res: &Resource,
        ns: Option<&str>,
        name: &str,
        current: &Value,
        input: Value,
        sub: Subresource,
        opts: &WriteOptions,
    ) -> Result<(Value, Vec<String>), ApiError> {
        let (mut new, warnings) = admit_body(res, input, opts)?;
        let body_name = meta::name(&new);
        if !body_name.is_empty() && body_name != name {
            return Err(ApiError::bad_request(format!("the name of the object ({body_name}) does not match the name on the URL ({name})")));
        }
        if let (Some(n), Some(ns)) = (meta::get(&new, "namespace").filter(|n| !n.is_empty()), ns.filter(|_| res.namespaced)) {
            if n != ns {
                return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
            }
        }
        if let (Some(u), Some(cu)) = (meta::get(&new, "uid").filter(|u| !u.is_empty()), meta::get(current, "uid")) {
            if u != cu {
                return Err(ApiError::conflict_because(res, name, &format!("Precondition failed: UID in precondition: {u}, UID in object meta: {cu}")));
            }
        }
        for field in SERVER_OWNED {
            meta::set(&mut new, field, current.pointer(&format!("/metadata/{field}")).cloned().unwrap_or(Value::Null));
        }
        match sub {
            Subresource::Status => {
                let status = new.get("status").cloned();
                let rv = meta::get(&new, "resourceVersion").map(String::from);
                new = current.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        new.as_object_mut().map(|m| m.remove("status"));
                    }
                }
                meta::set(&mut new, "resourceVersion", rv.map(Value::from).unwrap_or(Value::Null));
                if res.approval {
                    // the status subresource may not decide approval (upstream's csr status strategy)
                    let approval = |o: &Value| -> Vec<Value> {
                        let conds = o.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
                        conds.into_iter().filter(|c| matches!(c.get("type").and_then(Value::as_str), Some("Approved" | "Denied"))).collect()
                    };
                    let kept = approval(current);
                    let mut conds: Vec<Value> = new.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
                    conds.retain(|c| !matches!(c.get("type").and_then(Value::as_str), Some("Approved" | "Denied")));
                    let mut all = kept;
                    all.extend(conds);
                    if !new.get("status").is_some_and(Value::is_object) {
                        new["status"] = json!({});
                    }
                    new["status"]["conditions"] = if all.is_empty() { Value::Null } else { Value::Array(all) };
                }
            }
            Subresource::Approval => {
                let conditions = new.pointer("/status/conditions").cloned();
                let rv = meta::get(&new, "resourceVersion").map(String::from);
                new = current.clone();
                if !new.get("status").is_some_and(Value::is_object) {
                    new["status"] = json!({});
                }
                new["status"]["conditions"] = conditions.unwrap_or(Value::Null);
                meta::set(&mut new, "resourceVersion", rv.map(Value::from).unwrap_or(Value::Null));
            }
            Subresource::Finalize => {
                let finalizers = new.pointer("/spec/finalizers").cloned();
                let rv = meta::get(&new, "resourceVersion").map(String::from);
                new = current.clone();
                if !new.get("spec").is_some_and(Value::is_object) {
                    new["spec"] = json!({});
                }
                new["spec"]["finalizers"] = finalizers.unwrap_or(Value::Null);
                meta::set(&mut new, "resourceVersion", rv.map(Value::from).unwrap_or(Value::Null));
            }
            Subresource::Main | Subresource::Scale if res.status => match current.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().map(|m| m.remove("status"));
                }
            },
            _ => {}
        }
        let internal = |e: String| ApiError::internal(e);
        // finalize writes spec.finalizers, which the namespace strategy otherwise keeps
        if sub != Subresource::Finalize {
            res.strategy.prepare_for_update(&mut new, current).map_err(internal)?;
        }
        res.strategy.default(&mut new).map_err(internal)?;
        if res.strategy.tracks_generation() && spec_part(&new) != spec_part(current) {
            let generation = current.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
            meta::set(&mut new, "generation", json!(generation));
        }
        if new.pointer("/metadata/managedFields").is_none() {
            // A write that does not mention managedFields keeps them (upstream's rule).
            meta::set(&mut new, "managedFields", current.pointer("/metadata/managedFields").cloned().unwrap_or(Value::Null));
        }
        if let Some(manager) = &opts.field_manager {
            let scope = if sub == Subresource::Status { crate::managed::Scope::Status } else { crate::managed::Scope::Main };
            crate::managed::record_update(&mut new, Some(current), manager, &res.api_version(), scope, res.strategy.list_rules());
        }
        Ok((new, warnings))
    }

    /// The autoscaling/v1 Scale of an object with a scale subresource.
    pub(crate) fn scale_of(&self, res: &Resource, obj: &Value) -> Result<Value, ApiError> {
        let spec = res.scale.ok_or_else(ApiError::path_not_found)?;
        let selector = match obj.pointer(spec.selector).filter(|_| !spec.selector.is_empty()) {
            // a custom resource's labelSelectorPath names a selector in string form
            Some(Value::String(s)) => s.clone(),
            // a replication controller's selector is a plain label map
            Some(Value::Object(m)) if !m.is_empty() && m.values().all(Value::is_string) => {
                m.iter().map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default())).collect::<Vec<_>>().join(",")
            }
            Some(s) => serde_json::from_value(s.clone()).map(|s| crate::selector::format_label_selector(&s)).unwrap_or_default(),
            None => String::new(),
        };
        let selector = if selector == "<none>" { String::new() } else { selector };
        let m = obj.get("metadata").cloned().unwrap_or(json!({}));
        let mut metadata = json!({});
        for k in ["name", "namespace", "uid", "resourceVersion", "creationTimestamp"] {
            if let Some(v) = m.get(k) {
                metadata[k] = v.clone();
            }
        }
        Ok(json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": metadata,
            "spec": {"replicas": obj.pointer(spec.spec_replicas).cloned().unwrap_or(json!(0))},
            "status": {"replicas": obj.pointer(spec.status_replicas).cloned().unwrap_or(json!(0)), "selector": selector},
        }))
    }

    /// The object `current` with the replicas of `scale` (a Scale body), keeping its precondition.
    fn apply_scale(&self, res: &Resource, current: &Value, scale: &Value) -> Result<Value, ApiError> {
        let spec = res.scale.ok_or_else(ApiError::path_not_found)?;
        let name = meta::name(current).to_string();
        let replicas = scale.pointer("/spec/replicas").cloned().unwrap_or(json!(0));
        match replicas.as_i64() {
            Some(r) if r >= 0 => {}
            _ => {
                return Err(ApiError::invalid_kind(
                    "Scale",
                    "autoscaling",
                    &name,
                    &[FieldError::invalid("spec.replicas", replicas, "must be greater than or equal to 0")],
                ))
            }
        }
        let mut new = without_rv(current);
        if let Some(slot) = new.pointer_mut(spec.spec_replicas) {
            *slot = replicas;
        } else if let Some(s) = new.get_mut("spec").and_then(Value::as_object_mut) {
            s.insert("replicas".into(), replicas);
        }
        if let Some(rv) = meta::get(scale, "resourceVersion").filter(|r| !r.is_empty()) {
            meta::set(&mut new, "resourceVersion", json!(rv));
        }
        Ok(new)
    }
}
