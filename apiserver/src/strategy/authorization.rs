//! The authorization.k8s.io review kinds (SubjectAccessReview, SelfSubjectAccessReview,
//! LocalSubjectAccessReview, SelfSubjectRulesReview): create-only, nothing stored, answered by
//! `crate::authz::review`. Their strategies only give the schema.

use k8s_openapi::api::authorization::v1::{LocalSubjectAccessReview, SelfSubjectAccessReview, SelfSubjectRulesReview, SubjectAccessReview};

use super::Kind;

pub struct SubjectAccessReviews;

impl Kind for SubjectAccessReviews {
    type Object = SubjectAccessReview;
}

pub struct SelfSubjectAccessReviews;

impl Kind for SelfSubjectAccessReviews {
    type Object = SelfSubjectAccessReview;
}

pub struct LocalSubjectAccessReviews;

impl Kind for LocalSubjectAccessReviews {
    type Object = LocalSubjectAccessReview;
}

pub struct SelfSubjectRulesReviews;

impl Kind for SelfSubjectRulesReviews {
    type Object = SelfSubjectRulesReview;
}
