//! Review kinds: create-only resources nothing is stored for (authentication.k8s.io TokenReview
//! and SelfSubjectReview, authorization.k8s.io's access and rules reviews). The resource table
//! marks them (`Resource::review`); the HTTP adapter hands their POSTs here, and this module sends
//! each to the part that answers it. The answer is the posted object with its status filled.

use std::sync::Arc;

use serde_json::Value;

use crate::api::Api;
use crate::resources::Resource;
use crate::status::ApiError;
use crate::User;

/// The answer to a POST of a review kind by `user`.
pub async fn answer(api: &Arc<Api>, user: &User, res: &Resource, namespace: Option<&str>, body: Value) -> Result<Value, ApiError> {
    let v = res.api_version();
    match (res.group, res.kind) {
        ("authorization.k8s.io", "SubjectAccessReview") => crate::authz::review::subject_access_review(api, res.kind, &v, None, &body).await,
        ("authorization.k8s.io", "LocalSubjectAccessReview") => {
            crate::authz::review::subject_access_review(api, res.kind, &v, Some(namespace.unwrap_or("")), &body).await
        }
        ("authorization.k8s.io", "SelfSubjectAccessReview") => crate::authz::review::self_subject_access_review(api, user, &v, &body).await,
        ("authorization.k8s.io", "SelfSubjectRulesReview") => crate::authz::review::self_subject_rules_review(api, user, &v, &body),
        ("authentication.k8s.io", "TokenReview") => crate::authn::review::token_review(api, &res.api_version(), &body).await,
        ("authentication.k8s.io", "SelfSubjectReview") => Ok(crate::authn::review::self_subject_review(user, &res.api_version(), &body)),
        _ => Err(ApiError::internal(format!("no handler for the review kind {}", res.qualified()))),
    }
}
