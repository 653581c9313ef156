//! DefaultTolerationSeconds: a pod that does not tolerate the `node.kubernetes.io/not-ready` or
//! `node.kubernetes.io/unreachable` NoExecute taints gets a toleration of each for 300 seconds, so
//! a node that goes away takes its pods with it after five minutes.

use futures_util::future::BoxFuture;
use serde_json::{json, Value};

use super::{Attributes, Operation, Plugin};
use crate::api::Api;
use crate::status::ApiError;

/// How long pods tolerate a not-ready or unreachable node (upstream's flag defaults).
pub const DEFAULT_TOLERATION_SECONDS: i64 = 300;
const TAINTS: &[&str] = &["node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"];

pub struct DefaultTolerationSeconds;

impl Plugin for DefaultTolerationSeconds {
    fn name(&self) -> &'static str {
        "DefaultTolerationSeconds"
    }

    fn admit<'a>(&'a self, _api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            if a.is("", "pods") && matches!(a.operation, Operation::Create | Operation::Update) {
                if let Some(spec) = a.object.as_mut().and_then(|o| o.get_mut("spec")).filter(|s| s.is_object()) {
                    add_tolerations(spec);
                }
            }
            Ok(())
        })
    }
}

/// Adds the default tolerations `spec` lacks. A toleration of the key with no effect or NoExecute
/// counts as present.
pub fn add_tolerations(spec: &mut Value) {
    if !spec.get("tolerations").is_some_and(Value::is_array) {
        spec["tolerations"] = json!([]);
    }
    let Some(list) = spec["tolerations"].as_array_mut() else { return };
    for key in TAINTS {
        let present = list.iter().any(|t| {
            t.get("key").and_then(Value::as_str) == Some(key) && matches!(t.get("effect").and_then(Value::as_str), None | Some("") | Some("NoExecute"))
        });
        if !present {
            list.push(json!({"key": key, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": DEFAULT_TOLERATION_SECONDS}));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_what_is_missing_and_keeps_what_is_there() {
        let mut spec = json!({"containers": []});
        add_tolerations(&mut spec);
        assert_eq!(
            spec["tolerations"],
            json!([
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            ])
        );
        let mut spec = json!({"tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 10}]});
        add_tolerations(&mut spec);
        let list = spec["tolerations"].as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0]["tolerationSeconds"], 10);
        assert_eq!(list[1]["key"], "node.kubernetes.io/not-ready");
    }
}
