//! The MutatingAdmissionWebhook and ValidatingAdmissionWebhook plugins: every write a
//! MutatingWebhookConfiguration or ValidatingWebhookConfiguration matches is sent, as an
//! AdmissionReview, to the webhook's HTTPS endpoint, which allows it (a mutating webhook
//! possibly with a JSONPatch) or denies it. As upstream:
//! - configurations in name order, their webhooks in list order; mutating webhooks run one
//!   after the other at the end of the mutating phase, each seeing the previous one's patch;
//!   validating webhooks at the end of the validating phase;
//! - a webhook matches by its rules (operations, groups, versions, resources incl. `res/sub` and
//!   `*` forms, scope), its namespaceSelector (the namespace's labels; cluster-scoped objects
//!   always match) and objectSelector (the object's or old object's labels);
//! - a denial is `admission webhook "name" denied the request: <message>` with the webhook's
//!   status code (400 at least); a webhook that cannot be called or answers nonsense fails the
//!   request (`failed calling webhook "name": ...`, 500) under failurePolicy Fail and is
//!   skipped under Ignore; timeoutSeconds bounds the whole call.
//!
//! Webhooks are reached by `clientConfig.url`, or for `clientConfig.service` through the
//! service's endpoints; TLS is verified against `caBundle` (the cluster CA when empty). The
//! API's own writes (no user) and writes of the webhook configurations themselves are not sent.
//! `reinvocationPolicy: IfNeeded` is accepted but webhooks are not called a second time, and
//! matchConditions (CEL) are not evaluated.
//!
//! The files: `matching` (which webhooks a request matches), `call` (the HTTPS call and the
//! AdmissionReview answer).

pub mod call;
pub mod matching;

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};

use super::{cached, cached_one, Attributes, Plugin};
use crate::api::Api;
use crate::status::ApiError;
use matching::Webhook;

const GROUP: &str = "admissionregistration.k8s.io";

/// Calls the mutating (`mutating: true`) or validating webhooks.
pub struct Webhooks {
    pub mutating: bool,
}

impl Plugin for Webhooks {
    fn name(&self) -> &'static str {
        if self.mutating {
            "MutatingAdmissionWebhook"
        } else {
            "ValidatingAdmissionWebhook"
        }
    }

    fn admit<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if !self.mutating {
                return Ok(());
            }
            run(api, a, true).await
        })
    }

    fn validate<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if self.mutating {
                return Ok(());
            }
            run(api, a, false).await
        })
    }
}

/// The webhooks of every configuration of one kind, configurations in name order.
fn webhooks(api: &Api, mutating: bool) -> Vec<Webhook> {
    let plural = if mutating { "mutatingwebhookconfigurations" } else { "validatingwebhookconfigurations" };
    let mut configs: Vec<(String, Vec<Webhook>)> = cached(api, GROUP, plural, None)
        .into_iter()
        .filter_map(|v| {
            let name = crate::meta::name(&v).to_string();
            let hooks = if mutating {
                serde_json::from_value::<MutatingWebhookConfiguration>(v).ok()?.webhooks.unwrap_or_default().into_iter().map(Webhook::from).collect()
            } else {
                serde_json::from_value::<ValidatingWebhookConfiguration>(v).ok()?.webhooks.unwrap_or_default().into_iter().map(Webhook::from).collect()
            };
            Some((name, hooks))
        })
        .collect();
    configs.sort_by(|a, b| a.0.cmp(&b.0));
    configs.into_iter().flat_map(|(_, h)| h).collect()
}

async fn run(api: &Api, a: &mut Attributes, mutating: bool) -> Result<(), ApiError> {
    if a.user.is_none() || a.resource.group == GROUP {
        return Ok(());
    }
    let hooks = webhooks(api, mutating);
    if hooks.is_empty() {
        return Ok(());
    }
    let namespace_labels = namespace_labels(api, a);
    for hook in &hooks {
        // matched against the object as the webhooks before it left it
        if !hook.matches(a, namespace_labels.as_ref()) {
            continue;
        }
        match call::call(api, hook, a).await {
            Ok(call::Verdict::Allowed { patch, warnings }) => {
                a.warnings.extend(warnings);
                if let Some(ops) = patch {
                    if !mutating {
                        continue;
                    }
                    let obj = a.object.as_mut().ok_or_else(|| ApiError::internal(format!("webhook {:?} patched a request without an object", hook.name)))?;
                    json_patch::patch(obj, &ops).map_err(|e| {
                        ApiError::internal(format!("failed calling webhook {}: the JSONPatch does not apply: {e}", berth_names::go_quote(&hook.name)))
                    })?;
                }
            }
            Ok(call::Verdict::Denied(e)) => return Err(e),
            Err(why) if hook.ignore_failures => {
                tracing::warn!(webhook = %hook.name, %why, "webhook failed; ignored (failurePolicy Ignore)");
            }
            Err(why) => return Err(ApiError::internal(format!("failed calling webhook {}: {why}", berth_names::go_quote(&hook.name)))),
        }
    }
    Ok(())
}

/// The labels of the request's namespace (of the Namespace itself when one is written); None
/// for a cluster-scoped object.
fn namespace_labels(api: &Api, a: &Attributes) -> Option<BTreeMap<String, String>> {
    if a.resource.group.is_empty() && a.resource.plural == "namespaces" {
        return a.object.as_ref().or(a.old_object.as_ref()).map(|o| matching::labels_of(Some(o)));
    }
    if !a.resource.namespaced {
        return None;
    }
    Some(matching::labels_of(cached_one(api, "", "namespaces", None, a.namespace()).as_ref()))
}
