//! create: decode and check the body, fill what the server owns (name from generateName, uid,
//! creationTimestamp, generation), the strategy's create preparation, defaults and validation,
//! the namespace's lifecycle (it must exist and not be terminating), then create-if-absent.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{admit_body, store_error, to_bytes, WriteOptions, Written};
use crate::api::Api;
use crate::meta;
use crate::resources::Resource;
use crate::status::ApiError;

impl Api {
    /// Creates `obj` as a `res` in namespace `ns` (None for cluster-scoped kinds).
    pub async fn create(&self, res: &Arc<Resource>, ns: Option<&str>, obj: Value, opts: &WriteOptions) -> Result<Written, ApiError> {
        let (mut obj, warnings) = admit_body(res, obj, opts)?;
        if res.namespaced {
            let ns = ns.ok_or_else(|| ApiError::bad_request("the namespace of the object is required"))?;
            match meta::get(&obj, "namespace") {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request("the namespace of the provided object does not match the namespace sent on the request"));
                }
                _ => meta::set(&mut obj, "namespace", json!(ns)),
            }
        }
        if meta::name(&obj).is_empty() {
            if let Some(base) = meta::get(&obj, "generateName").filter(|g| !g.is_empty()).map(String::from) {
                meta::set(&mut obj, "name", json!(meta::generate_name(&base)));
            }
        }
        for field in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"] {
            meta::set(&mut obj, field, Value::Null);
        }
        meta::set(&mut obj, "uid", json!(meta::new_uid()));
        meta::set(&mut obj, "creationTimestamp", json!(meta::now()));
        if res.strategy.tracks_generation() {
            meta::set(&mut obj, "generation", json!(1));
        } else {
            meta::set(&mut obj, "generation", Value::Null);
        }
        let internal = |e: String| ApiError::internal(e);
        let requested = res.strategy.unique_values(&obj);
        let input = obj.clone();
        for attempt in 0.. {
            obj = input.clone();
            res.strategy.prepare_for_create(&mut obj).map_err(internal)?;
            res.strategy.default(&mut obj).map_err(internal)?;
            let taken = self.taken_values(res, &obj)?;
            let Some((field, value)) = taken else { break };
            if requested.iter().any(|(_, v)| *v == value) || attempt >= 16 {
                let name = meta::name(&obj).to_string();
                let shown = value.split('/').next().unwrap_or(&value).to_string();
                let err = if field.ends_with("nodePort") {
                    crate::status::FieldError::invalid(
                        field,
                        shown.parse::<i64>().map(Value::from).unwrap_or(Value::from(shown.clone())),
                        "provided port is already allocated",
                    )
                } else {
                    let list = crate::status::go_raw(format!("[]string{{{}}}", berth_names::go_quote(&shown)));
                    crate::status::FieldError::invalid(field, list, format!("failed to allocate IP {shown}: provided IP is already allocated"))
                };
                return Err(ApiError::invalid(res, &name, &[err]));
            }
        }
        if let Some(manager) = &opts.field_manager {
            crate::managed::record_update(&mut obj, None, manager, &res.api_version(), crate::managed::Scope::Main);
        }
        let name = meta::name(&obj).to_string();
        let mut errs = meta::validate(res, &obj);
        errs.extend(res.strategy.validate(&obj));
        if !errs.is_empty() {
            return Err(ApiError::invalid(res, &name, &errs));
        }
        if let Some(ns) = ns.filter(|_| res.namespaced) {
            self.check_namespace_open(res, ns, &name).await?;
        }
        if opts.dry_run {
            return Ok(Written { object: obj, warnings, created: true });
        }
        let key = res.key(&self.store_prefix, ns, &name);
        let kv = self.store.create(&key, to_bytes(&obj)?, res.ttl).await.map_err(|e| store_error(res, &name, e))?;
        meta::set(&mut obj, "resourceVersion", json!(kv.mod_revision.to_string()));
        Ok(Written { object: obj, warnings, created: true })
    }

    /// The first of `obj`'s unique values another object of the kind already has.
    fn taken_values(&self, res: &Resource, obj: &Value) -> Result<Option<(String, String)>, ApiError> {
        let mine = res.strategy.unique_values(obj);
        if mine.is_empty() {
            return Ok(None);
        }
        let (all, _) = self.cache(res)?.snapshot(&res.prefix(&self.store_prefix));
        let same = |o: &Value| meta::name(o) == meta::name(obj) && meta::get(o, "namespace") == meta::get(obj, "namespace");
        for other in all.iter().filter(|o| !same(o)) {
            let theirs = res.strategy.unique_values(other);
            if let Some(hit) = mine.iter().find(|(_, v)| theirs.iter().any(|(_, t)| t == v)) {
                return Ok(Some(hit.clone()));
            }
        }
        Ok(None)
    }

    /// Upstream's NamespaceLifecycle admission: no new objects in a missing or terminating namespace.
    async fn check_namespace_open(&self, res: &Resource, ns: &str, name: &str) -> Result<(), ApiError> {
        let namespaces = self.resource("", "namespaces")?;
        let key = namespaces.key(&self.store_prefix, None, ns);
        let kv = self.store.get(&key, None).await.map_err(|e| store_error(&namespaces, ns, e))?;
        let Some(kv) = kv else { return Err(ApiError::not_found(&namespaces, ns)) };
        let obj: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
        if obj.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
            return Err(ApiError::forbidden(res, name, &format!("unable to create new content in namespace {ns} because it is being terminated")));
        }
        Ok(())
    }
}
