//! create: decode, check and default the body, fill what the server owns (name from generateName,
//! uid, creationTimestamp, generation), mutating admission, the strategy's create preparation
//! and defaults, allocations (a Service's cluster IPs and node ports, given back if the create
//! fails), validation, validating admission (`admission`), then create-if-absent.

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
            reinvocation: Default::default(),
        };
        self.admission.admit(self, &mut attrs).await?;
        let mut obj = attrs.object.take().ok_or_else(|| ApiError::internal("admission removed the object"))?;
        res.strategy.prepare_for_create(&mut obj).map_err(internal)?;
        if let Some(user) = &opts.user {
            res.strategy.record_requestor(&mut obj, user).map_err(internal)?;
        }
        res.strategy.default(&mut obj).map_err(internal)?;
        // what the object holds elsewhere (a Service's cluster IPs and node ports) is taken
        // now and given back when the object is not stored
        let allocations = self.allocations(res);
        let held = match allocations {
            Some(a) => a.on_create(self, &mut obj, opts.dry_run).await?,
            None => Default::default(),
        };
        let give_back = |held: crate::services::alloc::Held| async move {
            if let Some(a) = allocations.filter(|_| !held.is_empty()) {
                a.release(self, &held).await;
            }
        };
        if let Some(manager) = &opts.field_manager {
            crate::managed::record_update(&mut obj, None, manager, &res.api_version(), crate::managed::Scope::Main, res.strategy.list_rules());
        }
        let name = meta::name(&obj).to_string();
        let mut errs = meta::validate(res, &obj);
        errs.extend(res.strategy.validate(&obj));
        if !errs.is_empty() {
            give_back(held).await;
            return Err(ApiError::invalid(res, &name, &errs));
        }
        attrs.object = Some(obj);
        if let Err(e) = self.admission.validate(self, &mut attrs).await {
            give_back(held).await;
            return Err(e);
        }
        let Some(mut obj) = attrs.object.take() else {
            give_back(held).await;
            return Err(ApiError::internal("admission removed the object"));
        };
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
                give_back(held).await;
                return Err(store_error(res, &name, e));
            }
        };
        meta::set(&mut obj, "resourceVersion", json!(kv.mod_revision.to_string()));
        Ok(Written { object: obj, warnings, created: true })
    }
}
