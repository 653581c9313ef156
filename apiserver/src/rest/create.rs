//! create: decode, check and default the body, fill what the server owns (name from generateName,
//! uid, creationTimestamp, generation), mutating admission, the strategy's create preparation,
//! defaults and validation, validating admission (`admission`), then create-if-absent.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{admit_body, store_error, to_bytes, WriteOptions, Written};
use crate::admission::{Attributes, Operation};
use crate::api::Api;
use crate::meta;
use crate::resources::Resource;
use crate::status::ApiError;

impl Api {
    /// Creates `obj` as a `res` in namespace `ns` (None for cluster-scoped kinds).
    pub async fn create(&self, res: &Arc<Resource>, ns: Option<&str>, obj: Value, opts: &WriteOptions) -> Result<Written, ApiError> {
        if res.terminating {
            return Err(ApiError {
                code: 405,
                reason: "MethodNotAllowed",
                message: "create not allowed while custom resource definition is terminating".into(),
                details: Some(json!({"group": res.group, "kind": res.plural})),
            });
        }
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
        // admission names an object by its generateName until it has a name (upstream's order)
        let admission_name = match meta::name(&obj) {
            "" => meta::get(&obj, "generateName").unwrap_or("").to_string(),
            n => n.to_string(),
        };
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
        res.strategy.default(&mut obj).map_err(internal)?;
        let mut attrs = Attributes {
            operation: Operation::Create,
            resource: res.clone(),
            subresource: String::new(),
            namespace: ns.filter(|_| res.namespaced).map(String::from),
            name: admission_name,
            object: Some(obj),
            old_object: None,
            user: opts.user.clone(),
            dry_run: opts.dry_run,
            warnings: vec![],
            charged: vec![],
        };
        self.admission.admit(self, &mut attrs).await?;
        let mut obj = attrs.object.take().ok_or_else(|| ApiError::internal("admission removed the object"))?;
        let requested = res.strategy.unique_values(&obj);
        let input = obj.clone();
        for attempt in 0.. {
            obj = input.clone();
            res.strategy.prepare_for_create(&mut obj).map_err(internal)?;
            if let Some(user) = &opts.user {
                res.strategy.record_requestor(&mut obj, user).map_err(internal)?;
            }
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
            crate::managed::record_update(&mut obj, None, manager, &res.api_version(), crate::managed::Scope::Main, res.strategy.list_rules());
        }
        let name = meta::name(&obj).to_string();
        let mut errs = meta::validate(res, &obj);
        errs.extend(res.strategy.validate(&obj));
        if !errs.is_empty() {
            return Err(ApiError::invalid(res, &name, &errs));
        }
        attrs.object = Some(obj);
        self.admission.validate(self, &mut attrs).await?;
        let mut obj = attrs.object.take().ok_or_else(|| ApiError::internal("admission removed the object"))?;
        let mut warnings = warnings;
        warnings.append(&mut attrs.warnings);
        if opts.dry_run {
            return Ok(Written { object: obj, warnings, created: true });
        }
        let key = res.key(&self.store_prefix, ns, &name);
        let kv = match self.store.create(&key, to_bytes(&obj)?, res.ttl).await {
            Ok(kv) => kv,
            Err(e) => {
                crate::admission::rollback(self, &mut attrs).await;
                return Err(store_error(res, &name, e));
            }
        };
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
        for other in &all {
            let other = other.value()?;
            if same(&other) {
                continue;
            }
            let theirs = res.strategy.unique_values(&other);
            if let Some(hit) = mine.iter().find(|(_, v)| theirs.iter().any(|(_, t)| t == v)) {
                return Ok(Some(hit.clone()));
            }
        }
        Ok(None)
    }
}
