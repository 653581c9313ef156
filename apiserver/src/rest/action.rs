//! Actions: POST-only subresources that change or delete their object (pods/binding, which the
//! scheduler uses to place a pod; pods/eviction, which `kubectl drain` uses). The strategy says
//! what the action does; this file reads, admits (a CREATE of the subresource), checks and writes, with the same compare-and-swap
//! retry as updates, and answers with a Success Status (201) as upstream does. The one action
//! that writes nothing, serviceaccounts/token, goes to `crate::authn`.

use std::sync::Arc;

use berth_store::StoreError;
use serde_json::{json, Value};

use super::delete::DeleteOptions;
use super::{store_error, to_bytes};
use crate::admission::{Attributes, Operation};
use crate::api::Api;
use crate::cache::decode_kv;
use crate::meta;
use crate::resources::Resource;
use crate::status::ApiError;
use crate::strategy::{Outcome, Refusal};

impl Api {
    /// Carries out `action` on the object `name` with the request `body`.
    pub async fn act(
        self: &Arc<Self>,
        res: &Arc<Resource>,
        ns: Option<&str>,
        name: &str,
        action: &str,
        body: &Value,
        user: Option<&crate::User>,
    ) -> Result<Value, ApiError> {
        // serviceaccounts/token issues a token (authn) and changes nothing: its answer is the
        // TokenRequest with its status
        if res.group.is_empty() && res.plural == "serviceaccounts" && action == "token" {
            return self.authn.service_accounts.request(self, ns.unwrap_or("default"), name, body).await;
        }
        let key = res.key(&self.store_prefix, ns, name);
        let what = format!("{}/{action}", res.qualified());
        for _ in 0..16 {
            let kv = self.store.get(&key, None).await.map_err(|e| store_error(res, name, e))?.ok_or_else(|| ApiError::not_found(res, name))?;
            let current = decode_kv(&kv).map_err(ApiError::internal)?;
            // upstream admits an action as a CREATE of its subresource, the request body the object
            let mut attrs = Attributes {
                operation: Operation::Create,
                resource: res.clone(),
                subresource: action.to_string(),
                namespace: ns.filter(|_| res.namespaced).map(String::from),
                name: name.to_string(),
                object: Some(body.clone()),
                old_object: Some(current.clone()),
                user: user.cloned(),
                dry_run: false,
                warnings: vec![],
                charged: vec![],
                reinvocation: Default::default(),
            };
            self.admission.admit(self, &mut attrs).await?;
            self.admission.validate(self, &mut attrs).await?;
            let body = attrs.object.as_ref().unwrap_or(body);
            let mut obj = current.clone();
            match res.strategy.act(action, &mut obj, body) {
                Err(Refusal::Conflict(why)) => {
                    return Err(ApiError {
                        code: 409,
                        reason: "Conflict",
                        message: format!("Operation cannot be fulfilled on {what} \"{name}\": {why}"),
                        details: Some(json!({"name": name, "kind": what})),
                    })
                }
                Err(Refusal::Invalid(errs)) => return Err(ApiError::invalid(res, name, &errs)),
                Ok(Outcome::Delete) => {
                    if action == "eviction" && res.group.is_empty() && res.plural == "pods" {
                        self.admit_eviction(ns.unwrap_or("default"), &current).await?;
                    }
                    // An eviction carries the DeleteOptions to delete with.
                    let opts: DeleteOptions = body.get("deleteOptions").and_then(|d| serde_json::from_value(d.clone()).ok()).unwrap_or_default();
                    self.delete(res, ns, name, &opts).await?;
                }
                Ok(Outcome::Replace) => {
                    let mut errs = meta::validate(res, &obj);
                    errs.extend(res.strategy.validate(&obj));
                    if !errs.is_empty() {
                        return Err(ApiError::invalid(res, name, &errs));
                    }
                    match self.store.update(&key, to_bytes(&obj)?, kv.mod_revision, res.ttl).await {
                        Ok(_) => {}
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => return Err(store_error(res, name, e)),
                    }
                }
            }
            return Ok(json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}));
        }
        Err(ApiError::conflict(res, name))
    }
}
