//! Which CertificateSigningRequests are approved without a human, and with what words.
//!
//! - `kube-apiserver-client-kubelet` (upstream's csrapproving): a request for a valid kubelet
//!   client certificate is approved when its requestor may create `certificatesigningrequests/
//!   selfnodeclient` (renewing its own: the requestor is the node the certificate names) or
//!   `certificatesigningrequests/nodeclient` (a bootstrap token's first certificate). Whether the
//!   requestor may is asked of the caller (`may`), the authorizer's question.
//! - `kubelet-serving` (what k3s does for its agents; upstream leaves these to an operator): a
//!   node's request for its own serving certificate is approved when every DNS name and IP
//!   address in it is one of the addresses of its Node object.
//! - Anything else is left alone (`kubectl certificate approve|deny`).

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;

use super::signer::{check, Subject, NODE_GROUP};
use super::{KUBELET_CLIENT, KUBELET_SERVING};

/// The condition reason of every automatic approval (upstream's).
pub const REASON: &str = "AutoApproved";

/// What to do with a pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Approve, with this message.
    Approve(&'static str),
    /// Not ours to approve.
    Leave,
}

/// Whether `csr` is still waiting for a decision.
pub fn pending(csr: &CertificateSigningRequest) -> bool {
    let conds = csr.status.as_ref().and_then(|s| s.conditions.as_deref()).unwrap_or(&[]);
    !conds.iter().any(|c| c.type_ == "Approved" || c.type_ == "Denied")
}

/// The decision on pending `csr`. `may(subresource)` says whether the requestor may create
/// `certificatesigningrequests/<subresource>`; `node_addresses` are the addresses of the Node the
/// request names (None when there is no such Node).
pub fn decide(csr: &CertificateSigningRequest, may: &dyn Fn(&str) -> bool, node_addresses: Option<&[String]>) -> Decision {
    let spec = &csr.spec;
    let Ok(subject) = Subject::of_request(&spec.request.0) else { return Decision::Leave };
    let usages = spec.usages.clone().unwrap_or_default();
    if check(&spec.signer_name, &subject, &usages).is_err() {
        return Decision::Leave;
    }
    let requestor = spec.username.as_deref().unwrap_or("");
    let is_node_itself = requestor == subject.common_name && spec.groups.as_ref().is_some_and(|g| g.iter().any(|g| g == NODE_GROUP));
    match spec.signer_name.as_str() {
        KUBELET_CLIENT if is_node_itself && may("selfnodeclient") => {
            Decision::Approve("Auto approving self kubelet client certificate after SubjectAccessReview.")
        }
        KUBELET_CLIENT if may("nodeclient") => Decision::Approve("Auto approving kubelet client certificate after SubjectAccessReview."),
        KUBELET_SERVING if is_node_itself => {
            let Some(addresses) = node_addresses else { return Decision::Leave };
            let known = |name: &str| addresses.iter().any(|a| a == name);
            if subject.dns_names.iter().all(|d| known(d)) && subject.ips.iter().all(|ip| known(&ip.to_string())) {
                Decision::Approve("Auto approving kubelet serving certificate: its names and addresses are its Node's.")
            } else {
                Decision::Leave
            }
        }
        _ => Decision::Leave,
    }
}

/// The grants of the two subresources the join bindings give (for tests without an authorizer):
/// bootstrap tokens (`system:bootstrappers`) may get a first client certificate, nodes
/// (`system:nodes`) renew their own.
#[cfg(test)]
pub fn default_may(groups: &[String], subresource: &str) -> bool {
    let has = |g: &str| groups.iter().any(|x| x == g || x.starts_with(&format!("{g}:")));
    match subresource {
        "nodeclient" => has("system:bootstrappers"),
        "selfnodeclient" => has(NODE_GROUP),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::certificates::v1::CertificateSigningRequestSpec;
    use k8s_openapi::ByteString;
    use rcgen::{CertificateParams, DnType, KeyPair, SanType};

    fn csr(signer: &str, cn: &str, sans: Vec<SanType>, usages: &[&str], user: &str, groups: &[&str]) -> CertificateSigningRequest {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, "system:nodes");
        params.subject_alt_names = sans;
        let pem = params.serialize_request(&key).unwrap().pem().unwrap();
        CertificateSigningRequest {
            spec: CertificateSigningRequestSpec {
                request: ByteString(pem.into_bytes()),
                signer_name: signer.into(),
                usages: Some(usages.iter().map(|s| s.to_string()).collect()),
                username: Some(user.into()),
                groups: Some(groups.iter().map(|s| s.to_string()).collect()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn bootstrap_tokens_get_client_certificates_and_nodes_renew_their_own() {
        let client = ["digital signature", "client auth"];
        let groups = |g: &[&str]| g.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let boot = csr(KUBELET_CLIENT, "system:node:n1", vec![], &client, "system:bootstrap:abcdef", &["system:bootstrappers", "system:authenticated"]);
        let g = groups(&["system:bootstrappers", "system:authenticated"]);
        assert!(matches!(decide(&boot, &|s| default_may(&g, s), None), Decision::Approve(m) if m.starts_with("Auto approving kubelet client")));
        let renew = csr(KUBELET_CLIENT, "system:node:n1", vec![], &client, "system:node:n1", &["system:nodes"]);
        let g = groups(&["system:nodes"]);
        assert!(matches!(decide(&renew, &|s| default_may(&g, s), None), Decision::Approve(m) if m.contains("self")));
        // a node may not get another node's certificate
        let other = csr(KUBELET_CLIENT, "system:node:n2", vec![], &client, "system:node:n1", &["system:nodes"]);
        assert_eq!(decide(&other, &|s| default_may(&g, s), None), Decision::Leave);
        // an ordinary user gets nothing
        let user = csr(KUBELET_CLIENT, "system:node:n1", vec![], &client, "alice", &["devs"]);
        let g = groups(&["devs"]);
        assert_eq!(decide(&user, &|s| default_may(&g, s), None), Decision::Leave);
    }

    #[test]
    fn serving_certificates_only_for_the_nodes_own_addresses() {
        let serving = ["digital signature", "key encipherment", "server auth"];
        let ip = |s: &str| SanType::IpAddress(s.parse().unwrap());
        let c = csr(KUBELET_SERVING, "system:node:n1", vec![ip("10.0.0.1")], &serving, "system:node:n1", &["system:nodes"]);
        let addrs = vec!["10.0.0.1".to_string(), "n1".to_string()];
        assert!(matches!(decide(&c, &|_| false, Some(&addrs)), Decision::Approve(_)));
        let foreign = csr(KUBELET_SERVING, "system:node:n1", vec![ip("10.0.0.9")], &serving, "system:node:n1", &["system:nodes"]);
        assert_eq!(decide(&foreign, &|_| false, Some(&addrs)), Decision::Leave);
        assert_eq!(decide(&c, &|_| false, None), Decision::Leave);
    }
}
