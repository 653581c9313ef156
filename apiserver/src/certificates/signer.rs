//! The cluster CA signing CertificateSigningRequests of the built-in signers.
//!
//! What each signer allows (upstream's rules, with its messages):
//! - `kube-apiserver-client-kubelet`: organization exactly `system:nodes`, common name
//!   `system:node:<name>`, no subject alternative names, usages {digital signature, client auth}
//!   with key encipherment optional;
//! - `kubelet-serving`: the same subject, at least one DNS or IP name (no email or URI names),
//!   usages {digital signature, server auth} with key encipherment optional;
//! - `kube-apiserver-client`: any subject, usages among {digital signature, key encipherment,
//!   client auth} and client auth among them.
//!
//! A certificate lives `min(spec.expirationSeconds, max_duration)` (upstream's
//! `--cluster-signing-duration`, one year by default), never past the CA's own expiry, and starts
//! five minutes in the past to allow for clock skew between machines.

use std::net::IpAddr;
use std::time::Duration;

use rcgen::{CertificateSigningRequestParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use super::{KUBELET_CLIENT, KUBELET_SERVING, KUBE_APISERVER_CLIENT};

/// Upstream's default `--cluster-signing-duration`.
pub const DEFAULT_MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// How far back a certificate's validity starts.
const BACKDATE: Duration = Duration::from_secs(300);
pub const NODE_GROUP: &str = "system:nodes";
pub const NODE_USER_PREFIX: &str = "system:node:";

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The request is not what its signer signs (the CSR gets a Failed condition).
    #[error("{0}")]
    Refused(String),
    /// The signer does not sign anything (not one of the built-in signers).
    #[error("signer {0} is not handled here")]
    UnknownSigner(String),
    #[error("the cluster CA: {0}")]
    Ca(String),
}

/// What a request asks for, read from its PEM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subject {
    pub common_name: String,
    pub organizations: Vec<String>,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub emails: Vec<String>,
    pub uris: Vec<String>,
}

impl Subject {
    /// The subject and alternative names of a PEM certificate request.
    pub fn of_request(pem: &[u8]) -> Result<Subject, SignError> {
        use x509_parser::extensions::{GeneralName, ParsedExtension};
        use x509_parser::prelude::FromDer;
        let refused = |what: &str| SignError::Refused(what.to_string());
        let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| refused("PEM block type must be CERTIFICATE REQUEST"))?;
        if block.label != "CERTIFICATE REQUEST" {
            return Err(refused("PEM block type must be CERTIFICATE REQUEST"));
        }
        let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(&block.contents)
            .map_err(|e| SignError::Refused(format!("x509: malformed certificate request: {e}")))?;
        let info = &csr.certification_request_info;
        let mut s = Subject {
            common_name: info.subject.iter_common_name().filter_map(|a| a.as_str().ok()).next().unwrap_or("").to_string(),
            organizations: info.subject.iter_organization().filter_map(|a| a.as_str().ok().map(String::from)).collect(),
            ..Default::default()
        };
        for ext in csr.requested_extensions().into_iter().flatten() {
            if let ParsedExtension::SubjectAlternativeName(san) = ext {
                for name in &san.general_names {
                    match name {
                        GeneralName::DNSName(d) => s.dns_names.push(d.to_string()),
                        GeneralName::RFC822Name(e) => s.emails.push(e.to_string()),
                        GeneralName::URI(u) => s.uris.push(u.to_string()),
                        GeneralName::IPAddress(b) => match b.len() {
                            4 => s.ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).unwrap_or_default())),
                            16 => s.ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).unwrap_or_default())),
                            _ => return Err(refused("malformed IP subjectAltName")),
                        },
                        _ => {}
                    }
                }
            }
        }
        Ok(s)
    }

    /// The node a kubelet request is for (`system:node:<name>` → `<name>`).
    pub fn node_name(&self) -> Option<&str> {
        self.common_name.strip_prefix(NODE_USER_PREFIX)
    }
}

fn usage_set(usages: &[String]) -> Vec<&str> {
    let mut v: Vec<&str> = usages.iter().map(String::as_str).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Whether `usages` is exactly `required`, or `required` plus key encipherment.
fn usages_match(usages: &[String], required: &[&str]) -> bool {
    let have = usage_set(usages);
    let mut want: Vec<&str> = required.to_vec();
    want.sort_unstable();
    if have == want {
        return true;
    }
    want.push("key encipherment");
    want.sort_unstable();
    have == want
}

fn node_subject(s: &Subject) -> Result<(), SignError> {
    if s.organizations != [NODE_GROUP] {
        return Err(SignError::Refused("subject organization is not system:nodes".into()));
    }
    if !s.common_name.starts_with(NODE_USER_PREFIX) {
        return Err(SignError::Refused("subject common name does not begin with system:node:".into()));
    }
    if !s.emails.is_empty() {
        return Err(SignError::Refused("Email subjectAltNames are not allowed".into()));
    }
    if !s.uris.is_empty() {
        return Err(SignError::Refused("URI subjectAltNames are not allowed".into()));
    }
    Ok(())
}

/// Whether `signer` may sign a request for `subject` with `usages` (the reason when not).
pub fn check(signer: &str, subject: &Subject, usages: &[String]) -> Result<(), SignError> {
    match signer {
        KUBELET_CLIENT => {
            node_subject(subject)?;
            if !subject.dns_names.is_empty() {
                return Err(SignError::Refused("DNS subjectAltNames are not allowed".into()));
            }
            if !subject.ips.is_empty() {
                return Err(SignError::Refused("IP subjectAltNames are not allowed".into()));
            }
            if !usages_match(usages, &["digital signature", "client auth"]) {
                return Err(SignError::Refused(format!("usages did not match [digital signature key encipherment client auth]: {}", usages.join(", "))));
            }
            Ok(())
        }
        KUBELET_SERVING => {
            node_subject(subject)?;
            if subject.dns_names.is_empty() && subject.ips.is_empty() {
                return Err(SignError::Refused("DNS or IP subjectAltName is required".into()));
            }
            if !usages_match(usages, &["digital signature", "server auth"]) {
                return Err(SignError::Refused(format!("usages did not match [digital signature key encipherment server auth]: {}", usages.join(", "))));
            }
            Ok(())
        }
        KUBE_APISERVER_CLIENT => {
            let allowed = ["digital signature", "key encipherment", "client auth"];
            if let Some(u) = usages.iter().find(|u| !allowed.contains(&u.as_str())) {
                return Err(SignError::Refused(format!("invalid usage for client certificate: {u}")));
            }
            if !usages.iter().any(|u| u == "client auth") {
                return Err(SignError::Refused("missing required usages for client certificate: client auth".into()));
            }
            Ok(())
        }
        other => Err(SignError::UnknownSigner(other.to_string())),
    }
}

/// The cluster CA as a signer.
pub struct Signer {
    issuer: Issuer<'static, KeyPair>,
    /// The CA's own expiry: no certificate outlives it.
    ca_not_after: time::OffsetDateTime,
    max_duration: Duration,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer").field("ca_not_after", &self.ca_not_after).field("max_duration", &self.max_duration).finish()
    }
}

impl Signer {
    /// The signer of the CA in `ca_pem` with key `ca_key_pem`.
    pub fn new(ca_pem: &str, ca_key_pem: &str, max_duration: Duration) -> Result<Signer, SignError> {
        let key = KeyPair::from_pem(ca_key_pem).map_err(|e| SignError::Ca(e.to_string()))?;
        let issuer = Issuer::from_ca_cert_pem(ca_pem, key).map_err(|e| SignError::Ca(e.to_string()))?;
        let (_, block) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes()).map_err(|e| SignError::Ca(e.to_string()))?;
        let cert = block.parse_x509().map_err(|e| SignError::Ca(e.to_string()))?;
        let ca_not_after = cert.validity().not_after.to_datetime();
        Ok(Signer { issuer, ca_not_after, max_duration })
    }

    /// Signs `request` (PEM) for `signer` with `usages`, valid for `requested` (or the maximum):
    /// the certificate (PEM).
    pub fn sign(&self, signer: &str, request: &[u8], usages: &[String], requested: Option<Duration>) -> Result<String, SignError> {
        let subject = Subject::of_request(request)?;
        check(signer, &subject, usages)?;
        let pem = std::str::from_utf8(request).map_err(|_| SignError::Refused("PEM block type must be CERTIFICATE REQUEST".into()))?;
        let mut csr = CertificateSigningRequestParams::from_pem(pem).map_err(|e| SignError::Refused(format!("the certificate request: {e}")))?;
        let p = &mut csr.params;
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = usages
            .iter()
            .filter_map(|u| match u.as_str() {
                "digital signature" | "signing" => Some(KeyUsagePurpose::DigitalSignature),
                "key encipherment" => Some(KeyUsagePurpose::KeyEncipherment),
                "content commitment" => Some(KeyUsagePurpose::ContentCommitment),
                "key agreement" => Some(KeyUsagePurpose::KeyAgreement),
                "data encipherment" => Some(KeyUsagePurpose::DataEncipherment),
                _ => None,
            })
            .collect();
        p.extended_key_usages = usages
            .iter()
            .filter_map(|u| match u.as_str() {
                "client auth" => Some(ExtendedKeyUsagePurpose::ClientAuth),
                "server auth" => Some(ExtendedKeyUsagePurpose::ServerAuth),
                _ => None,
            })
            .collect();
        let life = requested.map_or(self.max_duration, |r| r.min(self.max_duration));
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - BACKDATE;
        p.not_after = (now + life).min(self.ca_not_after);
        let mut serial = [0u8; 16];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut serial).map_err(|e| SignError::Ca(format!("random serial: {e}")))?;
        serial[0] &= 0x7f;
        p.serial_number = Some(rcgen::SerialNumber::from_slice(&serial));
        let cert = csr.signed_by(&self.issuer).map_err(|e| SignError::Refused(format!("signing: {e}")))?;
        Ok(cert.pem())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, DnType, SanType};

    fn ca() -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, "test-ca");
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn request(cn: &str, org: &str, sans: Vec<SanType>) -> String {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.distinguished_name.push(DnType::OrganizationName, org);
        params.subject_alt_names = sans;
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn usages(u: &[&str]) -> Vec<String> {
        u.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn kubelet_client_certificates_are_signed_with_the_requested_life() {
        let (ca, key) = ca();
        let signer = Signer::new(&ca, &key, DEFAULT_MAX_DURATION).unwrap();
        let req = request("system:node:n1", "system:nodes", vec![]);
        let pem = signer.sign(KUBELET_CLIENT, req.as_bytes(), &usages(&["digital signature", "client auth"]), Some(Duration::from_secs(3600))).unwrap();
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let cert = block.parse_x509().unwrap();
        assert_eq!(cert.subject().iter_common_name().next().unwrap().as_str().unwrap(), "system:node:n1");
        assert_eq!(cert.issuer().iter_common_name().next().unwrap().as_str().unwrap(), "test-ca");
        let life = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
        assert_eq!(life, 3600 + 300);
        assert!(cert.extended_key_usage().unwrap().unwrap().value.client_auth);
    }

    #[test]
    fn each_signer_refuses_what_it_does_not_sign() {
        let client = Subject::of_request(request("system:node:n1", "system:nodes", vec![]).as_bytes()).unwrap();
        let wrong_org = Subject::of_request(request("system:node:n1", "admins", vec![]).as_bytes()).unwrap();
        let with_ip = Subject::of_request(request("system:node:n1", "system:nodes", vec![SanType::IpAddress("10.0.0.1".parse().unwrap())]).as_bytes()).unwrap();
        assert_eq!(with_ip.ips, vec!["10.0.0.1".parse::<IpAddr>().unwrap()]);
        let cu = usages(&["digital signature", "key encipherment", "client auth"]);
        assert!(check(KUBELET_CLIENT, &client, &cu).is_ok());
        assert_eq!(check(KUBELET_CLIENT, &wrong_org, &cu).unwrap_err().to_string(), "subject organization is not system:nodes");
        assert_eq!(check(KUBELET_CLIENT, &with_ip, &cu).unwrap_err().to_string(), "IP subjectAltNames are not allowed");
        assert!(check(KUBELET_CLIENT, &client, &usages(&["client auth"])).is_err());
        let su = usages(&["digital signature", "server auth"]);
        assert!(check(KUBELET_SERVING, &with_ip, &su).is_ok());
        assert_eq!(check(KUBELET_SERVING, &client, &su).unwrap_err().to_string(), "DNS or IP subjectAltName is required");
        assert!(check(KUBE_APISERVER_CLIENT, &wrong_org, &usages(&["client auth"])).is_ok());
        assert!(check(KUBE_APISERVER_CLIENT, &wrong_org, &usages(&["server auth", "client auth"])).is_err());
        assert!(matches!(check("example.com/other", &client, &cu), Err(SignError::UnknownSigner(_))));
    }
}
