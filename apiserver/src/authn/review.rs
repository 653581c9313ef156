//! The authentication.k8s.io review kinds: TokenReview (is this token good, and whose is it)
//! and SelfSubjectReview (who am I: what `kubectl auth whoami` prints). Nothing is stored; the
//! answer is the posted object with its status filled.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::api::Api;
use crate::status::ApiError;
use crate::User;

/// upstream's UserInfo (empty uid and extra left out).
pub fn user_info(u: &User) -> Value {
    let mut m = Map::new();
    m.insert("username".into(), json!(u.name));
    if !u.uid.is_empty() {
        m.insert("uid".into(), json!(u.uid));
    }
    if !u.groups.is_empty() {
        m.insert("groups".into(), json!(u.groups));
    }
    if !u.extra.is_empty() {
        m.insert("extra".into(), json!(u.extra));
    }
    Value::Object(m)
}

/// The posted object as the answer's base: its kind and version, its spec, metadata as upstream
/// echoes it.
pub(crate) fn answer_base(kind: &str, api_version: &str, body: &Value) -> Value {
    let mut metadata = body.get("metadata").cloned().filter(Value::is_object).unwrap_or(json!({}));
    if metadata.get("creationTimestamp").is_none() {
        metadata["creationTimestamp"] = Value::Null;
    }
    let mut out = json!({"kind": kind, "apiVersion": api_version, "metadata": metadata});
    if let Some(spec) = body.get("spec") {
        out["spec"] = spec.clone();
    }
    out
}

/// Answers a TokenReview.
pub async fn token_review(api: &Arc<Api>, api_version: &str, body: &Value) -> Result<Value, ApiError> {
    let token = body.pointer("/spec/token").and_then(Value::as_str).unwrap_or("");
    if token.is_empty() {
        return Err(ApiError::bad_request(format!("token is required for TokenReview in {api_version}")));
    }
    let authn = &api.authn;
    let audiences: Vec<String> = match body.pointer("/spec/audiences").and_then(Value::as_array) {
        Some(a) if !a.is_empty() => a.iter().filter_map(|x| x.as_str().map(String::from)).collect(),
        _ => authn.api_audiences().to_vec(),
    };
    let mut out = answer_base("TokenReview", api_version, body);
    out["status"] = match authn.authenticate_token(api, token, &audiences).await {
        Ok((user, auds)) => json!({"authenticated": true, "user": user_info(&user), "audiences": auds}),
        Err(why) if why.is_empty() => json!({"user": {}}),
        Err(why) => json!({"user": {}, "error": why}),
    };
    Ok(out)
}

/// Answers a SelfSubjectReview by `user`.
pub fn self_subject_review(user: &User, api_version: &str, body: &Value) -> Value {
    let mut out = answer_base("SelfSubjectReview", api_version, body);
    out["status"] = json!({"userInfo": user_info(user)});
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_info_leaves_out_empty_uid_and_extra() {
        let u = User::new("admin", &["system:masters", "system:authenticated"]);
        assert_eq!(user_info(&u), json!({"username": "admin", "groups": ["system:masters", "system:authenticated"]}));
        let mut sa = User { uid: "u1".into(), ..User::new("system:serviceaccount:default:x", &[]) };
        sa.extra.insert("authentication.kubernetes.io/pod-name".into(), vec!["p".into()]);
        assert_eq!(
            user_info(&sa),
            json!({"username": "system:serviceaccount:default:x", "uid": "u1", "extra": {"authentication.kubernetes.io/pod-name": ["p"]}})
        );
    }

    #[test]
    fn self_subject_review_echoes_the_kind_and_fills_the_status() {
        let v = self_subject_review(&User::new("a", &["g"]), "authentication.k8s.io/v1beta1", &json!({"metadata": {}}));
        assert_eq!(
            v,
            json!({"kind": "SelfSubjectReview", "apiVersion": "authentication.k8s.io/v1beta1", "metadata": {"creationTimestamp": null}, "status": {"userInfo": {"username": "a", "groups": ["g"]}}})
        );
    }
}
