//! The cluster's certificates, written into the data dir on first start and reused after: a CA
//! (`ca.crt`/`ca.key`), the apiserver's serving certificate (`serving.crt`/`serving.key`), the
//! admin's client certificate (CN=admin, O=system:masters) and `admin.kubeconfig` that embeds them.
//! Every file is written atomically (temp file, fsync, rename, directory fsync); keys are 0600.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("making certificate {what}: {why}")]
    Cert { what: &'static str, why: String },
}

/// The cluster admin's user name and group in its client certificate.
pub const ADMIN_USER: &str = "admin";
pub const ADMIN_GROUP: &str = "system:masters";
/// The apiserver's user towards kubelets.
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// The PEM files of the apiserver.
#[derive(Debug, Clone)]
pub struct Pki {
    pub dir: PathBuf,
    pub ca_pem: String,
    /// The CA's key: signs the certificates of joining nodes (`crate::certificates`).
    pub ca_key_pem: String,
    pub serving_cert_pem: String,
    pub serving_key_pem: String,
    /// The apiserver's client certificate for kubelets (CN kube-apiserver-kubelet-client, in
    /// system:masters, as kubeadm makes it).
    pub kubelet_client_cert_pem: String,
    pub kubelet_client_key_pem: String,
}

impl Pki {
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_path_buf(), source }
}

/// Writes `data` to `path` atomically with `mode`.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(".{}.tmp", path.file_name().and_then(|n| n.to_str()).unwrap_or("file")));
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp).map_err(io(&tmp))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(io(&tmp))?;
    f.write_all(data).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PkiError::Io { path: path.to_path_buf(), source: e }),
    }
}

fn cert_err(what: &'static str) -> impl FnOnce(rcgen::Error) -> PkiError {
    move |e| PkiError::Cert { what, why: e.to_string() }
}

fn dn(cn: &str, org: Option<&str>) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    if let Some(o) = org {
        d.push(DnType::OrganizationName, o);
    }
    d.push(DnType::CommonName, cn);
    d
}

fn validity(params: &mut CertificateParams, days: u64) {
    params.not_before = time::OffsetDateTime::now_utc() - std::time::Duration::from_secs(3600);
    params.not_after = params.not_before + std::time::Duration::from_secs(days * 86400);
}

/// Makes sure the CA, the serving certificate (for `hosts`, names or IPs) and the admin
/// credentials exist in `dir`, and (re)writes `admin.kubeconfig` for `server_url`.
pub fn ensure(dir: &Path, hosts: &[String], server_url: &str) -> Result<Pki, PkiError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let p = |n: &str| dir.join(n);
    let (ca_pem, ca_key_pem) = match (read(&p("ca.crt"))?, read(&p("ca.key"))?) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let key = KeyPair::generate().map_err(cert_err("CA key"))?;
            let mut params = CertificateParams::default();
            params.distinguished_name = dn("berth-ca", None);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
            validity(&mut params, 3650);
            let cert = params.self_signed(&key).map_err(cert_err("CA"))?;
            for leaf in ["serving.crt", "serving.key", "admin.crt", "admin.key", "apiserver-kubelet-client.crt", "apiserver-kubelet-client.key"] {
                let _ = std::fs::remove_file(p(leaf));
            }
            write_atomic(&p("ca.key"), key.serialize_pem().as_bytes(), 0o600)?;
            write_atomic(&p("ca.crt"), cert.pem().as_bytes(), 0o644)?;
            (cert.pem(), key.serialize_pem())
        }
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(cert_err("CA key"))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(cert_err("CA"))?;
    let leaf = |name: &str, params: CertificateParams, what: &'static str| -> Result<(String, String), PkiError> {
        let (crt, key) = (p(&format!("{name}.crt")), p(&format!("{name}.key")));
        if let (Some(c), Some(k)) = (read(&crt)?, read(&key)?) {
            return Ok((c, k));
        }
        let kp = KeyPair::generate().map_err(cert_err(what))?;
        let cert = params.signed_by(&kp, &issuer).map_err(cert_err(what))?;
        write_atomic(&key, kp.serialize_pem().as_bytes(), 0o600)?;
        write_atomic(&crt, cert.pem().as_bytes(), 0o644)?;
        Ok((cert.pem(), kp.serialize_pem()))
    };
    let mut serving = CertificateParams::default();
    serving.distinguished_name = dn("kube-apiserver", None);
    let mut names: Vec<String> =
        ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "127.0.0.1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
    names.extend(hosts.iter().cloned());
    names.sort();
    names.dedup();
    for n in names {
        serving.subject_alt_names.push(match n.parse::<std::net::IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(n.try_into().map_err(cert_err("serving SAN"))?),
        });
    }
    serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    serving.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    validity(&mut serving, 365);
    let (serving_cert_pem, serving_key_pem) = leaf("serving", serving, "serving")?;
    let mut admin = CertificateParams::default();
    admin.distinguished_name = dn(ADMIN_USER, Some(ADMIN_GROUP));
    admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    admin.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    validity(&mut admin, 365);
    let (admin_cert, admin_key) = leaf("admin", admin, "admin client")?;
    let mut kubelet_client = CertificateParams::default();
    kubelet_client.distinguished_name = dn(KUBELET_CLIENT_USER, Some(ADMIN_GROUP));
    kubelet_client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    kubelet_client.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    validity(&mut kubelet_client, 365);
    let (kubelet_client_cert_pem, kubelet_client_key_pem) = leaf("apiserver-kubelet-client", kubelet_client, "kubelet client")?;
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: berth\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {}\nusers:\n- name: admin\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: berth\n  context:\n    cluster: berth\n    user: admin\ncurrent-context: berth\npreferences: {{}}\n",
        STANDARD.encode(&ca_pem),
        STANDARD.encode(&admin_cert),
        STANDARD.encode(&admin_key)
    );
    write_atomic(&p("admin.kubeconfig"), kubeconfig.as_bytes(), 0o600)?;
    Ok(Pki { dir: dir.to_path_buf(), ca_pem, ca_key_pem, serving_cert_pem, serving_key_pem, kubelet_client_cert_pem, kubelet_client_key_pem })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_are_written_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure(dir.path(), &["127.0.0.1".into()], "https://127.0.0.1:1").unwrap();
        let b = ensure(dir.path(), &["127.0.0.1".into()], "https://127.0.0.1:2").unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.serving_cert_pem, b.serving_cert_pem);
        let kc = std::fs::read_to_string(b.kubeconfig_path()).unwrap();
        assert!(kc.contains("server: https://127.0.0.1:2"));
        let mode = std::fs::metadata(dir.path().join("ca.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
