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
//!
//! matchConditions (CEL over `object`, `oldObject`, `request`) are evaluated after the rules and
//! selectors: a false one skips the webhook; errors (when none is false) fail the request as
//! `<resource> "<name>" is forbidden: <errors>` under failurePolicy Fail and skip the webhook under
//! Ignore. A mutating webhook with `reinvocationPolicy: IfNeeded` whose object a later webhook
//! changed is called once more: the chain's mutating phase then runs a second time (the in-tree
//! plugins again, and only the webhooks marked), as upstream's reinvocation. The audit log gets
//! upstream's annotations: `mutation.webhook.admission.k8s.io/round_R_index_I` for each mutating
//! call, `patch.webhook.admission.k8s.io/round_R_index_I` (at Request level) for each patch, and a
//! webhook's own `auditAnnotations` as `<webhook name>/<key>`.
//!
//! The files: `matching` (which webhooks a request matches), `conditions` (matchConditions),
//! `call` (the HTTPS call and the AdmissionReview answer).

pub mod call;
pub mod conditions;
pub mod matching;

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use serde_json::{json, Value};

use super::{cached, cached_one, Attributes, Plugin};
use crate::api::Api;
use crate::audit::policy::Level as AuditLevel;
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

/// Reinvocation state of one request's mutating phase (upstream's reinvocation context).
#[derive(Debug, Clone, Default)]
pub struct Reinvocation {
    /// The second run of the mutating phase is on.
    pub(crate) second_round: bool,
    /// A webhook needs the second round.
    pub(crate) wanted: bool,
    /// IfNeeded webhooks called so far (by index), not yet marked.
    called: Vec<usize>,
    /// Webhooks to call in the second round.
    marked: Vec<usize>,
    /// The object as the last webhook left it (to see whether in-tree plugins changed it in the
    /// second round).
    last_output: Option<Value>,
}

/// The webhooks of every configuration of one kind, configurations in name order.
fn webhooks(api: &Api, mutating: bool) -> Vec<Webhook> {
    let plural = if mutating { "mutatingwebhookconfigurations" } else { "validatingwebhookconfigurations" };
    let mut configs: Vec<(String, Vec<Webhook>)> = cached(api, GROUP, plural, None)
        .into_iter()
        .filter_map(|v| {
            let name = crate::meta::name(&v).to_string();
            let hooks: Vec<Webhook> = if mutating {
                serde_json::from_value::<MutatingWebhookConfiguration>(v).ok()?.webhooks.unwrap_or_default().into_iter().map(Webhook::from).collect()
            } else {
                serde_json::from_value::<ValidatingWebhookConfiguration>(v).ok()?.webhooks.unwrap_or_default().into_iter().map(Webhook::from).collect()
            };
            let hooks = hooks.into_iter().map(|h| Webhook { configuration: name.clone(), ..h }).collect();
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
    let round = u8::from(mutating && a.reinvocation.second_round);
    if round == 1 && a.reinvocation.last_output.as_ref() != a.object.as_ref() {
        // the in-tree plugins changed the object in their second run: every IfNeeded webhook
        // called so far is due again
        let called = std::mem::take(&mut a.reinvocation.called);
        a.reinvocation.marked.extend(called);
    }
    let namespace_labels = namespace_labels(api, a);
    for (index, hook) in hooks.iter().enumerate() {
        if round == 1 && !a.reinvocation.marked.contains(&index) {
            continue;
        }
        // matched against the object as the webhooks before it left it
        if !hook.matches(a, namespace_labels.as_ref()) {
            continue;
        }
        match conditions::evaluate(api, hook, a) {
            conditions::Outcome::Match => {}
            conditions::Outcome::NoMatch => continue,
            conditions::Outcome::Failed(_) if hook.ignore_failures => continue,
            conditions::Outcome::Failed(why) => {
                tracing::warn!(webhook = %hook.name, %why, "matchConditions failed to evaluate; failing closed");
                return Err(a.forbidden(&why));
            }
        }
        let verdict = call::call(api, hook, a).await;
        if let Ok(call::Verdict::Allowed { audit_annotations, .. } | call::Verdict::Denied { audit_annotations, .. }) = &verdict {
            for (k, v) in audit_annotations {
                crate::audit::annotations::add(AuditLevel::Metadata, format!("{}/{k}", hook.name), v.clone());
            }
        }
        match verdict {
            Ok(call::Verdict::Allowed { patch, warnings, .. }) => {
                a.warnings.extend(warnings);
                if !mutating {
                    continue;
                }
                let mut mutated = false;
                if let Some(ops) = patch {
                    let obj = a.object.as_mut().ok_or_else(|| ApiError::internal(format!("webhook {:?} patched a request without an object", hook.name)))?;
                    let before = obj.clone();
                    json_patch::patch(obj, &ops).map_err(|e| {
                        ApiError::internal(format!("failed calling webhook {}: the JSONPatch does not apply: {e}", berth_names::go_quote(&hook.name)))
                    })?;
                    mutated = *obj != before;
                    if mutated {
                        let note = json!({"configuration": hook.configuration, "webhook": hook.name, "patch": ops, "patchType": "JSONPatch"});
                        crate::audit::annotations::add(
                            AuditLevel::Request,
                            format!("patch.webhook.admission.k8s.io/round_{round}_index_{index}"),
                            note.to_string(),
                        );
                    }
                }
                let note = json!({"configuration": hook.configuration, "webhook": hook.name, "mutated": mutated});
                crate::audit::annotations::add(
                    AuditLevel::Metadata,
                    format!("mutation.webhook.admission.k8s.io/round_{round}_index_{index}"),
                    note.to_string(),
                );
                let r = &mut a.reinvocation;
                if mutated && round == 0 {
                    // an object changed after IfNeeded webhooks saw it: they are called again
                    let called = std::mem::take(&mut r.called);
                    if !called.is_empty() {
                        r.marked.extend(called);
                        r.wanted = true;
                    }
                }
                if hook.reinvoke_if_needed && round == 0 {
                    r.called.push(index);
                }
                r.last_output = a.object.clone();
            }
            Ok(call::Verdict::Denied { error, .. }) => return Err(error),
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
