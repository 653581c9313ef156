//! Files the kubelet keeps for a pod's containers: the managed /etc/hosts (the pod's IP
//! under its hostname or FQDN, and the hostAliases), and one termination message file per
//! container start, read back when the container ends (with FallbackToLogsOnError, the end
//! of the log stands in for an empty message).
use crate::cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The most of a termination message file that is read (as the kubelet: 4096 bytes).
const MAX_MESSAGE_BYTES: u64 = 4096;
/// Log fallback: at most 80 lines and 2048 bytes from the log's end.
const FALLBACK_LINES: usize = 80;
const FALLBACK_BYTES: usize = 2048;

pub const DEFAULT_TERMINATION_PATH: &str = "/dev/termination-log";

/// The pod's hostname: spec.hostname, else its name cut to 63 characters.
pub fn hostname(pod: &Pod) -> String {
    let spec = pod.spec.clone().unwrap_or_default();
    spec.hostname.unwrap_or_else(|| {
        let name = pod.metadata.name.clone().unwrap_or_default();
        name.chars().take(63).collect::<String>().trim_end_matches(['-', '.']).to_string()
    })
}

/// hostname.subdomain.namespace.svc.<cluster domain>, when the pod has a subdomain.
pub fn fqdn(pod: &Pod, cluster_domain: &str) -> Option<String> {
    let sub = pod.spec.as_ref()?.subdomain.clone().filter(|s| !s.is_empty())?;
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    Some(format!("{}.{sub}.{ns}.svc.{cluster_domain}", hostname(pod)))
}

/// The hostname the pod's UTS namespace gets: the FQDN with setHostnameAsFQDN.
pub fn uts_hostname(pod: &Pod, cluster_domain: &str) -> String {
    let as_fqdn = pod.spec.as_ref().and_then(|s| s.set_hostname_as_fqdn).unwrap_or(false);
    match fqdn(pod, cluster_domain) {
        Some(f) if as_fqdn => f,
        _ => hostname(pod),
    }
}

fn host_aliases(pod: &Pod) -> String {
    let aliases = pod.spec.as_ref().and_then(|s| s.host_aliases.clone()).unwrap_or_default();
    if aliases.is_empty() {
        return String::new();
    }
    let mut out = String::from("\n# Entries added by HostAliases.\n");
    for a in aliases {
        let names = a.hostnames.unwrap_or_default();
        if names.is_empty() {
            continue;
        }
        out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
    }
    out
}

/// The managed hosts file: for host-network pods the host's own plus the aliases; for
/// the others localhost, the pod's IP (or 127.0.1.1 without one) under its names, then
/// the aliases.
pub fn hosts_file(pod: &Pod, pod_ip: Option<&str>, cluster_domain: &str, host_hosts: &str) -> String {
    let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
    if host_network {
        let mut out = host_hosts.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        return out + &host_aliases(pod);
    }
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    let ip = pod_ip.filter(|i| !i.is_empty()).unwrap_or("127.0.1.1");
    let name = hostname(pod);
    match fqdn(pod, cluster_domain) {
        Some(f) => out.push_str(&format!("{ip}\t{f}\t{name}\n")),
        None => out.push_str(&format!("{ip}\t{name}\n")),
    }
    out + &host_aliases(pod)
}

pub fn hosts_path(pod_dir: &Path) -> PathBuf {
    pod_dir.join("etc-hosts")
}

/// Write the pod's hosts file (atomically) and return its path.
pub fn write_hosts(pod_dir: &Path, pod: &Pod, pod_ip: Option<&str>, cluster_domain: &str) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(pod_dir)?;
    let host = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let path = hosts_path(pod_dir);
    // As the kubelet: replaced atomically, not forced to disk (a reboot ends the pod's
    // sandbox, and each new sandbox writes it again).
    crate::util::atomic::write_file_volatile(&path, hosts_file(pod, pod_ip, cluster_domain, &host).as_bytes())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
    Ok(path)
}

/// The termination message file of one container start.
pub fn termination_path(pod_dir: &Path, container: &str, attempt: u32) -> PathBuf {
    pod_dir.join("containers").join(container).join(format!("termination-{attempt}"))
}

/// An empty, world-writable file for the container to leave its message in.
pub fn prepare_termination_file(pod_dir: &Path, container: &str, attempt: u32) -> std::io::Result<PathBuf> {
    let path = termination_path(pod_dir, container, attempt);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, b"")?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))?;
    Ok(path)
}

/// The mounts the kubelet adds to a container: /etc/hosts and its termination message
/// file, unless the container mounts something there itself.
pub fn extra_mounts(c: &Container, hosts: Option<&Path>, termination: &Path) -> Vec<cri::Mount> {
    let taken = |p: &str| c.volume_mounts.iter().flatten().any(|m| m.mount_path.trim_end_matches('/') == p);
    let mut out = Vec::new();
    if let Some(h) = hosts.filter(|_| !taken("/etc/hosts")) {
        out.push(cri::Mount { container_path: "/etc/hosts".into(), host_path: h.display().to_string(), ..Default::default() });
    }
    let path = c.termination_message_path.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_TERMINATION_PATH.into());
    if !taken(&path) {
        out.push(cri::Mount { container_path: path, host_path: termination.display().to_string(), ..Default::default() });
    }
    out
}

/// What the container wrote to its termination message file (at most 4096 bytes).
pub fn read_message(path: &Path) -> String {
    let Ok(f) = std::fs::File::open(path) else { return String::new() };
    let mut buf = Vec::new();
    let _ = f.take(MAX_MESSAGE_BYTES).read_to_end(&mut buf);
    String::from_utf8_lossy(&buf).to_string()
}

/// The end of a container's log: the last 80 lines, at most 2048 bytes.
pub async fn log_tail(log: &Path) -> String {
    let opts = crate::logs::LogOptions { follow: false, tail: Some(FALLBACK_LINES), since_ns: None, timestamps: false, limit_bytes: None };
    let mut out: Vec<u8> = Vec::new();
    let _ = crate::logs::read_logs(
        log,
        &opts,
        |l| {
            out.extend_from_slice(&l.content);
            true
        },
        || async { false },
    )
    .await;
    let start = out.len().saturating_sub(FALLBACK_BYTES);
    String::from_utf8_lossy(&out[start..]).to_string()
}

/// The terminated state's message of a container that ended, as the kubelet builds it:
/// the runtime's message, then the termination message (or, with FallbackToLogsOnError and
/// a failure, the log's end).
pub async fn termination_message(c: &Container, st: &cri::ContainerStatus, pod_dir: &Path) -> String {
    let attempt = st.metadata.as_ref().map(|m| m.attempt).unwrap_or(0);
    let mut own = read_message(&termination_path(pod_dir, &c.name, attempt));
    let fallback = c.termination_message_policy.as_deref() == Some("FallbackToLogsOnError");
    if own.is_empty() && fallback && st.exit_code != 0 && !st.log_path.is_empty() {
        own = log_tail(Path::new(&st.log_path)).await;
    }
    match (st.message.is_empty(), own.is_empty()) {
        (_, true) => st.message.clone(),
        (true, false) => own,
        (false, false) => format!("{}: {own}", st.message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "web-0", "namespace": "shop"}, "spec": spec})).unwrap()
    }

    #[test]
    fn hosts_file_has_the_fqdn_and_aliases() {
        let p = pod(serde_json::json!({"containers": [], "subdomain": "web", "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]}));
        let h = hosts_file(&p, Some("10.88.0.5"), "cluster.local", "");
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"), "{h}");
        assert!(h.contains("10.88.0.5\tweb-0.web.shop.svc.cluster.local\tweb-0\n"), "{h}");
        assert!(h.ends_with("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"), "{h}");
        assert_eq!(uts_hostname(&p, "cluster.local"), "web-0");
        let fq = pod(serde_json::json!({"containers": [], "subdomain": "web", "setHostnameAsFQDN": true}));
        assert_eq!(uts_hostname(&fq, "cluster.local"), "web-0.web.shop.svc.cluster.local");
        let host = pod(serde_json::json!({"containers": [], "hostNetwork": true, "hostAliases": [{"ip": "1.2.3.4", "hostnames": ["x"]}]}));
        assert_eq!(hosts_file(&host, None, "cluster.local", "127.0.0.1 localhost"), "127.0.0.1 localhost\n\n# Entries added by HostAliases.\n1.2.3.4\tx\n");
    }

    #[test]
    fn messages_combine_like_the_kubelet() {
        let dir = std::env::temp_dir().join(format!("berth-unit-term-{}", std::process::id()));
        let c: Container = serde_json::from_value(serde_json::json!({"name": "main"})).unwrap();
        let path = prepare_termination_file(&dir, "main", 0).unwrap();
        let st = cri::ContainerStatus { exit_code: 1, metadata: Some(cri::ContainerMetadata { name: "main".into(), attempt: 0 }), ..Default::default() };
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        assert_eq!(rt.block_on(termination_message(&c, &st, &dir)), "");
        std::fs::write(&path, "x".repeat(5000)).unwrap();
        assert_eq!(rt.block_on(termination_message(&c, &st, &dir)).len(), 4096);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
