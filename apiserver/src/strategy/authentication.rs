//! The authentication.k8s.io review kinds (TokenReview, SelfSubjectReview): create-only, nothing
//! stored, answered by `crate::authn::review`. Their strategies only give the schema.

use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenReview};

use super::Kind;

pub struct TokenReviews;

impl Kind for TokenReviews {
    type Object = TokenReview;
}

/// v1 and v1beta1 (same shape; k8s-openapi has only v1's type).
pub struct SelfSubjectReviews;

impl Kind for SelfSubjectReviews {
    type Object = SelfSubjectReview;
}
