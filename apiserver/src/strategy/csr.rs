//! CertificateSigningRequests (certificates.k8s.io/v1, cluster-scoped, short name `csr`).
//!
//! - Create: the requestor (`spec.username`, `uid`, `groups`, `extra`) is the caller, whatever the
//!   body says; status starts empty. The request must be a PEM `CERTIFICATE REQUEST` whose
//!   signature verifies; `signerName` a domain-prefixed path; usages from upstream's list;
//!   `expirationSeconds` at least 600.
//! - Updates of the main resource change metadata only (spec and status are kept). The `approval`
//!   subresource sets `status.conditions` only, the `status` subresource everything in status but
//!   the Approved/Denied conditions (the generic update layer does that split, `Resource::approval`).
//! - Approved and Denied exclude each other; neither may be removed once present; a certificate
//!   once issued never changes.
//! - Columns as upstream: NAME, AGE, SIGNERNAME, REQUESTOR, REQUESTEDDURATION, CONDITION
//!   (`Approved,Issued`, `Denied`, `Pending`); field selector `spec.signerName`.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use serde_json::{json, Value};

use super::{col, Column, Kind, AGE_COLUMN, NAME_COLUMN};
use crate::status::FieldError;
use crate::table::{age, human_duration};
use crate::User;

/// The usages a request may name (upstream's KeyUsage values).
pub const USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

pub struct CertificateSigningRequests;

/// Whether `c` has a condition of type `kind` (any status: upstream counts the type).
fn has(c: &CertificateSigningRequest, kind: &str) -> bool {
    conditions(c).iter().any(|x| x.type_ == kind)
}

fn conditions(c: &CertificateSigningRequest) -> &[CertificateSigningRequestCondition] {
    c.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or(&[])
}

/// Whether `pem` is one or more PEM `CERTIFICATE` blocks (and nothing else but whitespace).
fn is_certificate_pem(pem: &[u8]) -> bool {
    let mut rest = pem;
    let mut found = false;
    while let Ok((next, block)) = x509_parser::pem::parse_x509_pem(rest) {
        if block.label != "CERTIFICATE" {
            return false;
        }
        found = true;
        if next.len() == rest.len() {
            break;
        }
        rest = next;
    }
    found
}

/// Why `pem` is not a certificate request with a valid signature, in upstream's words.
pub fn request_error(pem: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(pem) else {
        return Some("PEM block type must be CERTIFICATE REQUEST".into());
    };
    if block.label != "CERTIFICATE REQUEST" {
        return Some("PEM block type must be CERTIFICATE REQUEST".into());
    }
    match x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents) {
        Err(e) => Some(format!("x509: malformed certificate request: {e}")),
        Ok((_, csr)) => csr.verify_signature().err().map(|_| "x509: the certificate request's signature does not verify".into()),
    }
}

/// `example.com/signer-name`: a DNS subdomain, a slash, and a path of qualified-name segments.
fn signer_name_errors(name: &str) -> Vec<String> {
    let Some((domain, path)) = name.split_once('/') else {
        return vec!["must be a fully qualified domain and path of the form 'example.com/signer-name'".into()];
    };
    let mut errs: Vec<String> = berth_names::dns1123_subdomain(domain);
    if path.is_empty() || path.split('/').any(str::is_empty) {
        errs.push("validating path: must not be empty, must not contain empty segments".into());
    }
    if name.len() > 571 {
        errs.push("must be no more than 571 characters".into());
    }
    errs
}

impl Kind for CertificateSigningRequests {
    type Object = CertificateSigningRequest;

    fn prepare_for_create(&self, c: &mut CertificateSigningRequest) {
        c.status = None;
    }

    fn prepare_for_update(&self, new: &mut CertificateSigningRequest, old: &CertificateSigningRequest) {
        new.spec = old.spec.clone();
    }

    fn record_requestor(&self, c: &mut CertificateSigningRequest, user: &User) {
        c.spec.username = Some(user.name.clone());
        c.spec.uid = (!user.uid.is_empty()).then(|| user.uid.clone());
        c.spec.groups = (!user.groups.is_empty()).then(|| user.groups.clone());
        c.spec.extra = (!user.extra.is_empty()).then(|| user.extra.clone());
    }

    fn validate(&self, c: &CertificateSigningRequest) -> Vec<FieldError> {
        let mut errs = vec![];
        let spec = &c.spec;
        if spec.request.0.is_empty() {
            errs.push(FieldError::required("spec.request", ""));
        } else if let Some(why) = request_error(&spec.request.0) {
            errs.push(FieldError::invalid("spec.request", "<certificate request data>", why));
        }
        if spec.signer_name.is_empty() {
            errs.push(FieldError::required("spec.signerName", ""));
        } else if spec.signer_name == "kubernetes.io/legacy-unknown" {
            errs.push(FieldError::invalid("spec.signerName", spec.signer_name.as_str(), "the legacy signerName is not allowed via this API version"));
        } else {
            errs.extend(signer_name_errors(&spec.signer_name).into_iter().map(|e| FieldError::invalid("spec.signerName", spec.signer_name.as_str(), e)));
        }
        match &spec.usages {
            None => errs.push(FieldError::required("spec.usages", "")),
            Some(u) if u.is_empty() => errs.push(FieldError::required("spec.usages", "")),
            Some(u) => {
                for (i, usage) in u.iter().enumerate() {
                    if !USAGES.contains(&usage.as_str()) {
                        errs.push(FieldError::not_supported(format!("spec.usages[{i}]"), usage.as_str(), USAGES));
                    } else if u[..i].contains(usage) {
                        errs.push(FieldError::duplicate(format!("spec.usages[{i}]"), usage.as_str()));
                    }
                }
            }
        }
        if let Some(s) = spec.expiration_seconds.filter(|s| *s < 600) {
            errs.push(FieldError::invalid("spec.expirationSeconds", s, "may not specify a duration less than 600 seconds (10 minutes)"));
        }
        let conds = conditions(c);
        for (i, cond) in conds.iter().enumerate() {
            let p = format!("status.conditions[{i}]");
            if cond.type_.is_empty() {
                errs.push(FieldError::required(format!("{p}.type"), ""));
            } else if conds[..i].iter().any(|x| x.type_ == cond.type_) && ["Approved", "Denied", "Failed"].contains(&cond.type_.as_str()) {
                errs.push(FieldError::duplicate(format!("{p}.type"), cond.type_.as_str()));
            }
            match cond.status.as_str() {
                "" => errs.push(FieldError::required(format!("{p}.status"), "")),
                "True" | "False" | "Unknown" => {}
                s => errs.push(FieldError::not_supported(format!("{p}.status"), s, &["False", "True", "Unknown"])),
            }
            if ["Approved", "Denied"].contains(&cond.type_.as_str()) && cond.status != "True" && !cond.status.is_empty() {
                errs.push(FieldError::not_supported(format!("{p}.status"), cond.status.as_str(), &["True"]));
            }
        }
        if has(c, "Approved") && has(c, "Denied") {
            errs.push(FieldError::invalid("status.conditions", "Approved", "Approved and Denied conditions are mutually exclusive"));
        }
        if let Some(cert) = c.status.as_ref().and_then(|s| s.certificate.as_ref()).filter(|b| !b.0.is_empty()) {
            if !is_certificate_pem(&cert.0) {
                errs.push(FieldError::invalid("status.certificate", "<certificate data>", "must contain at least one CERTIFICATE PEM block"));
            }
        }
        errs
    }

    fn validate_update(&self, new: &CertificateSigningRequest, old: &CertificateSigningRequest) -> Vec<FieldError> {
        let mut errs = self.validate(new);
        for kind in ["Approved", "Denied"] {
            if has(old, kind) && !has(new, kind) {
                errs.push(FieldError::forbidden("status.conditions", format!("updates may not remove a condition of type \"{kind}\"")));
            }
        }
        let cert = |c: &CertificateSigningRequest| c.status.as_ref().and_then(|s| s.certificate.clone()).map(|b| b.0).unwrap_or_default();
        let (was, is) = (cert(old), cert(new));
        if !was.is_empty() && was != is {
            errs.push(FieldError::forbidden("status.certificate", "updates may not modify existing certificate content"));
        }
        errs
    }

    fn columns(&self) -> Vec<Column> {
        vec![
            NAME_COLUMN,
            AGE_COLUMN,
            col("SignerName", "string", "Name of the signer that is requested to sign the certificate"),
            col("Requestor", "string", "Name of the user that requested the certificate"),
            col("RequestedDuration", "string", "Requested duration of the certificate"),
            col("Condition", "string", "Condition of the certificate signing request"),
        ]
    }

    fn cells(&self, c: &CertificateSigningRequest, now: Timestamp) -> Vec<Value> {
        let duration = c.spec.expiration_seconds.map_or("<none>".to_string(), |s| human_duration(SignedDuration::from_secs(i64::from(s))));
        vec![
            json!(c.metadata.name.clone().unwrap_or_default()),
            json!(age(c.metadata.creation_timestamp.as_ref(), now)),
            json!(c.spec.signer_name),
            json!(c.spec.username.clone().unwrap_or_default()),
            json!(duration),
            json!(condition_text(c)),
        ]
    }

    fn fields(&self, c: &CertificateSigningRequest) -> Vec<(&'static str, String)> {
        vec![("spec.signerName", c.spec.signer_name.clone())]
    }
}

/// The CONDITION column: the types of the true conditions, then `Issued` when a certificate is
/// there; `Pending` when there is neither.
fn condition_text(c: &CertificateSigningRequest) -> String {
    let mut parts: Vec<String> = conditions(c).iter().filter(|x| x.status == "True").map(|x| x.type_.clone()).collect();
    if c.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|b| !b.0.is_empty()) {
        parts.push("Issued".into());
    }
    if parts.is_empty() {
        "Pending".into()
    } else {
        parts.join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::{CertificateSigningRequestSpec, CertificateSigningRequestStatus};
    use k8s_openapi::ByteString;

    fn csr_pem() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name.push(rcgen::DnType::CommonName, "system:node:n1");
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(request: &str) -> CertificateSigningRequest {
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(request.as_bytes().to_vec()),
                signer_name: "kubernetes.io/kube-apiserver-client-kubelet".into(),
                usages: Some(vec!["digital signature".into(), "client auth".into()]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn cond(kind: &str) -> CertificateSigningRequestCondition {
        CertificateSigningRequestCondition { type_: kind.into(), status: "True".into(), ..Default::default() }
    }

    #[test]
    fn validation_follows_upstream() {
        let k = CertificateSigningRequests;
        assert!(k.validate(&csr(&csr_pem())).is_empty());
        let bad = k.validate(&csr("not a pem"));
        assert!(bad.iter().any(|e| e.body().contains("PEM block type must be CERTIFICATE REQUEST")), "{bad:?}");
        let mut c = csr(&csr_pem());
        c.spec.signer_name = "nodomain".into();
        c.spec.usages = Some(vec!["client auth".into(), "flying".into()]);
        c.spec.expiration_seconds = Some(60);
        let errs: Vec<String> = k.validate(&c).iter().map(FieldError::body).collect();
        assert!(errs.iter().any(|e| e.contains("example.com/signer-name")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("Unsupported value: \"flying\"")), "{errs:?}");
        assert!(errs.iter().any(|e| e.contains("600 seconds")), "{errs:?}");
        let mut both = csr(&csr_pem());
        both.status = Some(CertificateSigningRequestStatus { conditions: Some(vec![cond("Approved"), cond("Denied")]), ..Default::default() });
        assert!(k.validate(&both).iter().any(|e| e.body().contains("mutually exclusive")));
    }

    #[test]
    fn approval_cannot_be_taken_back_and_certificates_never_change() {
        let k = CertificateSigningRequests;
        let mut old = csr(&csr_pem());
        old.status = Some(CertificateSigningRequestStatus { conditions: Some(vec![cond("Approved")]), ..Default::default() });
        let new = csr(&csr_pem());
        assert!(k.validate_update(&new, &old).iter().any(|e| e.body().contains("may not remove a condition of type \"Approved\"")));
        assert_eq!(condition_text(&old), "Approved");
        assert_eq!(condition_text(&new), "Pending");
    }

    #[test]
    fn the_requestor_is_the_caller() {
        let mut c = csr(&csr_pem());
        c.spec.username = Some("someone-else".into());
        CertificateSigningRequests.record_requestor(&mut c, &User::new("system:bootstrap:abcdef", &["system:bootstrappers"]));
        assert_eq!(c.spec.username.as_deref(), Some("system:bootstrap:abcdef"));
        assert_eq!(c.spec.groups, Some(vec!["system:bootstrappers".to_string()]));
        assert_eq!(c.spec.uid, None);
    }
}
