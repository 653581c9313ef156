//! The CSR controller: approves (`approver`) and signs (`signer`) CertificateSigningRequests as
//! they change. Level-triggered: every change of the CSR watch cache looks at all CSRs and takes
//! the next step of those that need one (a pending request that is ours to approve, an approved
//! one without a certificate), so a missed or failed step is retried on the next change or after
//! a minute. Writes go through the API's `approval` and `status` subresources like any client's.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::certificates::v1::{CertificateSigningRequest, CertificateSigningRequestCondition};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::ByteString;
use serde_json::Value;
use tracing::Instrument;

use super::approver::{self, Decision};
use super::signer::{SignError, Signer, Subject};
use crate::api::Api;
use crate::rest::{Subresource, WriteOptions};

/// How often the CSRs are looked at without a change.
const RESYNC: Duration = Duration::from_secs(60);

/// Starts the controller.
pub fn spawn(api: &Arc<Api>, signer: Arc<Signer>) {
    let Ok(res) = api.resource("certificates.k8s.io", "certificatesigningrequests") else { return };
    let Ok(cache) = api.cache(&res) else { return };
    let prefix = res.prefix(api.store_prefix());
    let weak = Arc::downgrade(api);
    tokio::spawn(
        async move {
            let mut changes = cache.changes();
            loop {
                let (items, _) = cache.snapshot(&prefix);
                for item in items {
                    let Some(api) = weak.upgrade() else { return };
                    let Ok(v) = item.value() else { continue };
                    let Ok(csr) = serde_json::from_value::<CertificateSigningRequest>(v) else { continue };
                    step(&api, &signer, csr).await;
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(RESYNC) => {}
                }
            }
        }
        .instrument(tracing::info_span!("csr_controller")),
    );
}

fn condition(kind: &str, reason: &str, message: &str) -> CertificateSigningRequestCondition {
    let now = Time(Timestamp::now());
    CertificateSigningRequestCondition {
        type_: kind.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_update_time: Some(now.clone()),
        last_transition_time: Some(now),
    }
}

fn has_condition(csr: &CertificateSigningRequest, kind: &str) -> bool {
    csr.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == kind && c.status == "True"))
}

/// The addresses of Node `name` (None when it does not exist).
async fn node_addresses(api: &Arc<Api>, name: &str) -> Option<Vec<String>> {
    let node = crate::authn::lookup(api, "nodes", None, name).await.ok()??;
    let addrs = node.pointer("/status/addresses").and_then(Value::as_array)?;
    Some(addrs.iter().filter_map(|a| a.get("address").and_then(Value::as_str).map(String::from)).collect())
}

/// Takes the next step of one CSR, if it needs one.
async fn step(api: &Arc<Api>, signer: &Arc<Signer>, mut csr: CertificateSigningRequest) {
    let name = csr.metadata.name.clone().unwrap_or_default();
    if csr.metadata.deletion_timestamp.is_some() {
        return;
    }
    if approver::pending(&csr) {
        let groups = csr.spec.groups.clone().unwrap_or_default();
        let addresses = match Subject::of_request(&csr.spec.request.0).ok().as_ref().and_then(Subject::node_name) {
            Some(node) if csr.spec.signer_name == super::KUBELET_SERVING => node_addresses(api, node).await,
            _ => None,
        };
        // upstream's SubjectAccessReview: may the requestor create the subresource
        let requestor = crate::User {
            name: csr.spec.username.clone().unwrap_or_default(),
            uid: csr.spec.uid.clone().unwrap_or_default(),
            groups,
            extra: csr.spec.extra.clone().unwrap_or_default().into_iter().collect(),
        };
        let may = |sub: &str| {
            let target = crate::authz::attributes::ResourceTarget {
                group: "certificates.k8s.io".into(),
                resource: "certificatesigningrequests".into(),
                subresource: sub.into(),
                ..Default::default()
            };
            crate::authz::decide(api, &crate::authz::attributes::Attributes::resource(&requestor, "create", target)).allowed()
        };
        if let Decision::Approve(message) = approver::decide(&csr, &may, addresses.as_deref()) {
            csr.status.get_or_insert_with(Default::default).conditions.get_or_insert_with(Vec::new).push(condition("Approved", approver::REASON, message));
            if write(api, &name, &csr, Subresource::Approval).await {
                tracing::info!(csr = name, requestor = csr.spec.username.as_deref().unwrap_or(""), "approved");
            }
        }
        return;
    }
    let issued = csr.status.as_ref().and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty());
    if !has_condition(&csr, "Approved") || has_condition(&csr, "Failed") || issued {
        return;
    }
    let usages = csr.spec.usages.clone().unwrap_or_default();
    let requested = csr.spec.expiration_seconds.map(|s| Duration::from_secs(s.max(0) as u64));
    let (signer_name, request, task_signer) = (csr.spec.signer_name.clone(), csr.spec.request.0.clone(), signer.clone());
    // key handling and signing: off the async threads
    let signed = tokio::task::spawn_blocking(move || task_signer.sign(&signer_name, &request, &usages, requested)).await;
    let status = csr.status.get_or_insert_with(Default::default);
    match signed {
        Ok(Ok(pem)) => {
            status.certificate = Some(ByteString(pem.into_bytes()));
            if write(api, &name, &csr, Subresource::Status).await {
                tracing::info!(csr = name, signer = csr.spec.signer_name, "signed");
            }
        }
        Ok(Err(SignError::Refused(why))) => {
            status.conditions.get_or_insert_with(Vec::new).push(condition("Failed", "SignerValidationFailure", &why));
            if write(api, &name, &csr, Subresource::Status).await {
                tracing::info!(csr = name, reason = why, "refused to sign");
            }
        }
        Ok(Err(SignError::UnknownSigner(_))) => {}
        Ok(Err(e)) => tracing::warn!(csr = name, error = %e, "signing"),
        Err(e) => tracing::warn!(csr = name, error = %e, "signing task failed"),
    }
}

/// Writes `csr` through `sub`; whether it was written (a conflict means a newer version is on its
/// way through the cache, and the step is taken again on it).
async fn write(api: &Arc<Api>, name: &str, csr: &CertificateSigningRequest, sub: Subresource) -> bool {
    let Ok(res) = api.resource("certificates.k8s.io", "certificatesigningrequests") else { return false };
    let Ok(body) = serde_json::to_value(csr) else { return false };
    match api.update(&res, None, name, body, sub, &WriteOptions::default()).await {
        Ok(_) => true,
        Err(e) if e.code == 409 || e.code == 404 => false,
        Err(e) => {
            tracing::warn!(csr = name, error = %e, "writing a certificate signing request");
            false
        }
    }
}
