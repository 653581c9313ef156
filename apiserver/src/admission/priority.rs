//! Priority: a new pod's `priority` and `preemptionPolicy` come from its PriorityClass (the
//! cluster's globalDefault class, the one with the lowest value if several claim it, when it names
//! none; 0 and PreemptLowerPriority when there is none); a class that does not exist, or a pod
//! that sets a priority or policy other than its class's, is refused. The system classes serve
//! every namespace: upstream dropped the kube-system-only rule (1.17) for a ResourceQuota
//! `limitedResources` setting that is off by default. A PriorityClass may be the global default
//! only when no other one is.

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::{cached, cached_one, Attributes, Operation, Plugin};
use crate::api::Api;
use crate::status::ApiError;

const GROUP: &str = "scheduling.k8s.io";

pub struct Priority;

impl Plugin for Priority {
    fn name(&self) -> &'static str {
        "Priority"
    }

    fn admit<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if !a.is("", "pods") {
                return Ok(());
            }
            match a.operation {
                Operation::Create => admit_pod(api, a),
                Operation::Update => {
                    // an update that drops the priority keeps the stored one
                    let old = a.old_object.as_ref().and_then(|o| o.pointer("/spec/priority")).cloned();
                    if let (Some(old), Some(spec)) = (old, a.object.as_mut().and_then(|o| o.get_mut("spec"))) {
                        if spec.get("priority").is_none_or(Value::is_null) {
                            spec["priority"] = old;
                        }
                    }
                    Ok(())
                }
                _ => Ok(()),
            }
        })
    }

    fn validate<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if !a.is(GROUP, "priorityclasses") || !matches!(a.operation, Operation::Create | Operation::Update) {
                return Ok(());
            }
            let Some(pc) = a.object.as_ref() else { return Ok(()) };
            if pc.get("globalDefault").and_then(Value::as_bool) != Some(true) {
                return Ok(());
            }
            if let Some(default) = default_class(api) {
                let other = crate::meta::name(&default);
                if a.operation == Operation::Create || other != a.name {
                    return Err(a.forbidden(&format!("PriorityClass {other} is already marked as default. Only one default can exist")));
                }
            }
            Ok(())
        })
    }
}

/// The global default class (the lowest value wins when a race made several).
fn default_class(api: &Api) -> Option<Value> {
    cached(api, GROUP, "priorityclasses", None)
        .into_iter()
        .filter(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true))
        .min_by_key(|c| c.get("value").and_then(Value::as_i64).unwrap_or(0))
}

fn admit_pod(api: &Api, a: &mut Attributes) -> Result<(), ApiError> {
    let Some(spec) = a.object.as_ref().and_then(|o| o.get("spec")).cloned() else { return Ok(()) };
    let named = spec.get("priorityClassName").and_then(Value::as_str).filter(|n| !n.is_empty()).map(String::from);
    let (class_name, priority, policy) = match &named {
        None => match default_class(api) {
            Some(c) => (crate::meta::name(&c).to_string(), c["value"].as_i64().unwrap_or(0), policy_of(&c)),
            None => (String::new(), 0, "PreemptLowerPriority".to_string()),
        },
        Some(name) => {
            let Some(c) = cached_one(api, GROUP, "priorityclasses", None, name) else {
                return Err(a.forbidden(&format!("no PriorityClass with name {name} was found")));
            };
            (name.clone(), c["value"].as_i64().unwrap_or(0), policy_of(&c))
        }
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64).filter(|p| *p != priority) {
        return Err(a.forbidden(&format!(
            "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {priority} from the given PriorityClass name"
        )));
    }
    if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str).filter(|p| *p != policy) {
        return Err(a.forbidden(&format!(
            "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
        )));
    }
    let Some(spec) = a.object.as_mut().and_then(|o| o.get_mut("spec")).and_then(Value::as_object_mut) else { return Ok(()) };
    if !class_name.is_empty() {
        spec.insert("priorityClassName".into(), json!(class_name));
    }
    spec.insert("priority".into(), json!(priority));
    spec.insert("preemptionPolicy".into(), json!(policy));
    Ok(())
}

fn policy_of(class: &Value) -> String {
    class.get("preemptionPolicy").and_then(Value::as_str).unwrap_or("PreemptLowerPriority").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admission::testing::{api, attrs, create};

    fn pod(class: Option<&str>) -> Value {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "i"}]}});
        if let Some(c) = class {
            p["spec"]["priorityClassName"] = json!(c);
        }
        p
    }

    async fn admit(api: &Api, ns: &str, obj: Value) -> Result<Value, ApiError> {
        let mut a = attrs(api, Operation::Create, "", "pods", Some(ns), obj);
        Priority.admit(api, &mut a).await?;
        Ok(a.object.unwrap_or_default())
    }

    #[tokio::test]
    async fn resolves_named_default_and_missing_classes() {
        let api = api().await;
        let p = admit(&api, "default", pod(None)).await.unwrap();
        assert_eq!((p["spec"]["priority"].clone(), p["spec"]["preemptionPolicy"].clone()), (json!(0), json!("PreemptLowerPriority")));
        assert!(p["spec"].get("priorityClassName").is_none());

        let c =
            json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
        create(&api, GROUP, "priorityclasses", None, c).await;
        let d = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "low"}, "value": 7, "globalDefault": true});
        create(&api, GROUP, "priorityclasses", None, d).await;
        let cache = api.cache(&api.resource(GROUP, "priorityclasses").unwrap()).unwrap();
        let rev = api.store.current_revision().await.unwrap();
        assert!(cache.wait_for(rev, std::time::Duration::from_secs(5)).await);

        let p = admit(&api, "default", pod(Some("high"))).await.unwrap();
        assert_eq!((p["spec"]["priority"].clone(), p["spec"]["preemptionPolicy"].clone()), (json!(1000), json!("Never")));
        let p = admit(&api, "default", pod(None)).await.unwrap();
        assert_eq!((p["spec"]["priority"].clone(), p["spec"]["priorityClassName"].clone()), (json!(7), json!("low")));

        let err = admit(&api, "default", pod(Some("nope"))).await.unwrap_err();
        assert_eq!((err.code, err.message.as_str()), (403, "pods \"p\" is forbidden: no PriorityClass with name nope was found"));
        let mut wrong = pod(Some("high"));
        wrong["spec"]["priority"] = json!(5);
        let err = admit(&api, "default", wrong).await.unwrap_err();
        assert_eq!(
            err.message,
            "pods \"p\" is forbidden: the integer value of priority (5) must not be provided in pod spec; priority admission controller computed 1000 from the given PriorityClass name"
        );

        let p = admit(&api, "default", pod(Some("system-node-critical"))).await.unwrap();
        assert_eq!(p["spec"]["priority"], json!(2_000_001_000));

        let second = json!({"metadata": {"name": "other"}, "value": 9, "globalDefault": true});
        let mut a = attrs(&api, Operation::Create, GROUP, "priorityclasses", None, second);
        let err = Priority.validate(&api, &mut a).await.unwrap_err();
        assert_eq!(
            err.message,
            "priorityclasses.scheduling.k8s.io \"other\" is forbidden: PriorityClass low is already marked as default. Only one default can exist"
        );
    }
}
