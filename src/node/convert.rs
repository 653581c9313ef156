//! A Kubernetes Pod as CRI configs: the sandbox config (namespaces, DNS, ports, cgroup parent
//! by QoS class) and each container's config (command, env with $(VAR) expansion and
//! fieldRefs, mounts, resources, security context), the way the kubelet builds them.
use super::volumes::VolumePaths;
use crate::cri::v1 as cri;
use crate::util::quantity::Quantity;
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use std::collections::HashMap;
use std::path::Path;

pub use crate::cri::api::{QOS_BESTEFFORT, QOS_BURSTABLE, QOS_GUARANTEED};

/// A container's limit or request of a resource. Unparsable quantities never get here: the
/// node refuses such pods at its door (`node::validation`).
fn resource(c: &Container, which: &str, name: &str) -> Option<Quantity> {
    let r = c.resources.as_ref()?;
    let map = if which == "limits" { r.limits.as_ref() } else { r.requests.as_ref() }?;
    map.get(name).and_then(|q| Quantity::parse(&q.0).ok())
}

/// Requests default to limits when only limits are given.
fn request(c: &Container, name: &str) -> Option<Quantity> {
    resource(c, "requests", name).or_else(|| resource(c, "limits", name))
}

/// A container's request of a resource in bytes (0 when it has none).
pub fn container_request_bytes(c: &Container, name: &str) -> u64 {
    request(c, name).map(|q| q.value().max(0) as u64).unwrap_or(0)
}

/// The pod's effective request of a resource in bytes: the sum over its app containers, or
/// the largest init container's when that is more.
pub fn pod_request_bytes(spec: &PodSpec, name: &str) -> u64 {
    let apps: u64 = spec.containers.iter().map(|c| container_request_bytes(c, name)).sum();
    let init = spec.init_containers.iter().flatten().map(|c| container_request_bytes(c, name)).max().unwrap_or(0);
    apps.max(init)
}

/// volumeMounts[].recursiveReadOnly: Enabled needs a read-only mount without propagation (and
/// a runtime that can do it: `supported`, from its handler's features); IfPossible asks for
/// it when those hold; Disabled (the default) leaves mounts below the volume writable.
fn recursive_read_only(m: &k8s_openapi::api::core::v1::VolumeMount, readonly: bool, propagation: i32, supported: bool) -> Result<bool, String> {
    let private = propagation == cri::MountPropagation::PropagationPrivate as i32;
    match m.recursive_read_only.as_deref() {
        None | Some("Disabled") => Ok(false),
        Some("IfPossible") => Ok(readonly && private && supported),
        Some("Enabled") if !readonly => Err(format!("volumeMount {:?}: recursiveReadOnly Enabled needs readOnly", m.name)),
        Some("Enabled") if !private => Err(format!("volumeMount {:?}: recursiveReadOnly Enabled needs mountPropagation None", m.name)),
        Some("Enabled") if !supported => {
            Err(format!("volumeMount {:?}: recursiveReadOnly Enabled: this kernel cannot make mounts recursively read-only", m.name))
        }
        Some("Enabled") => Ok(true),
        Some(other) => Err(format!("volumeMount {:?}: unknown recursiveReadOnly {other:?}", m.name)),
    }
}

/// As the kubelet: a container without runAsUser runs as its image's user, sent explicitly
/// (the image's numeric uid, else its user name, else root), so a runAsGroup always comes
/// with a user, as the CRI requires.
pub fn default_user_from_image(config: &mut cri::ContainerConfig, image: Option<&cri::Image>) {
    let Some(sc) = config.linux.as_mut().and_then(|l| l.security_context.as_mut()) else { return };
    if sc.run_as_user.is_some() || !sc.run_as_username.is_empty() {
        return;
    }
    match image {
        Some(i) if i.uid.is_some() => sc.run_as_user = i.uid,
        Some(i) if !i.username.is_empty() => sc.run_as_username = i.username.clone(),
        _ => sc.run_as_user = Some(cri::Int64Value { value: 0 }),
    }
}

/// runAsNonRoot against the user the container will run as: its runAsUser, else the
/// image's user (a numeric one; a user name cannot be verified), as the kubelet checks it.
pub fn verify_non_root(pod: &Pod, c: &Container, image: Option<&cri::Image>) -> Result<(), String> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    if !csc.run_as_non_root.or(psc.run_as_non_root).unwrap_or(false) {
        return Ok(());
    }
    let pod_name = pod.metadata.name.clone().unwrap_or_default();
    if let Some(uid) = csc.run_as_user.or(psc.run_as_user) {
        if uid == 0 {
            return Err(format!("container's runAsUser breaks non-root policy (pod: \"{pod_name}\", container: {})", c.name));
        }
        return Ok(());
    }
    let image = image.ok_or_else(|| "runAsNonRoot: the image's user is unknown".to_string())?;
    if let Some(uid) = &image.uid {
        if uid.value == 0 {
            return Err(format!("container has runAsNonRoot and image will run as root (pod: \"{pod_name}\", container: {})", c.name));
        }
        return Ok(());
    }
    if !image.username.is_empty() {
        return Err(format!(
            "container has runAsNonRoot and image has non-numeric user ({}), cannot verify user is non-root (pod: \"{pod_name}\", container: {})",
            image.username, c.name
        ));
    }
    // No user in the image: it runs as root.
    Err(format!("container has runAsNonRoot and image will run as root (pod: \"{pod_name}\", container: {})", c.name))
}

/// The pod cgroup's resources, as the kubelet sets them: CPU shares from the sum of CPU
/// requests (at least 2); a CPU quota and a memory limit only when every container has that
/// limit (the sum of the app containers', or the largest init container's when more).
pub fn pod_resources(spec: &PodSpec) -> cri::LinuxContainerResources {
    let apps = &spec.containers;
    let inits: Vec<&Container> = spec.init_containers.iter().flatten().collect();
    let effective = |f: &dyn Fn(&Container) -> Option<i64>| -> Option<i64> {
        let sum: Option<i64> = apps.iter().map(f).sum();
        let max_init: Option<i64> = inits.iter().map(|c| f(c)).try_fold(0i64, |m, v| v.map(|v| m.max(v)));
        Some(sum?.max(max_init?))
    };
    let cpu_req: i64 = {
        let sum: i64 = apps.iter().map(|c| request(c, "cpu").map(|q| q.milli_value()).unwrap_or(0)).sum();
        let init = inits.iter().map(|c| request(c, "cpu").map(|q| q.milli_value()).unwrap_or(0)).max().unwrap_or(0);
        sum.max(init)
    };
    let cpu_lim = effective(&|c: &Container| resource(c, "limits", "cpu").map(|q| q.milli_value()));
    let mem_lim = effective(&|c: &Container| resource(c, "limits", "memory").map(|q| q.value()));
    let period = 100_000;
    cri::LinuxContainerResources {
        cpu_shares: (cpu_req * 1024 / 1000).max(2),
        cpu_period: if cpu_lim.is_some() { period } else { 0 },
        cpu_quota: cpu_lim.map(|m| (m * period / 1000).max(1000)).unwrap_or(0),
        memory_limit_in_bytes: mem_lim.unwrap_or(0),
        ..Default::default()
    }
}

/// The pod's QoS class as Kubernetes defines it.
pub fn qos_class(spec: &PodSpec) -> &'static str {
    let all: Vec<&Container> = spec.init_containers.iter().flatten().chain(spec.containers.iter()).collect();
    // Zero quantities count as unset, as Kubernetes computes the class.
    let set = |q: Option<Quantity>| q.is_some_and(|q| !q.is_zero());
    let any = all.iter().any(|c| ["cpu", "memory"].iter().any(|r| set(resource(c, "requests", r)) || set(resource(c, "limits", r))));
    if !any {
        return QOS_BESTEFFORT;
    }
    let guaranteed = all.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| match (resource(c, "limits", r), request(c, r)) {
            (Some(l), Some(q)) => l == q && !l.is_zero(),
            _ => false,
        })
    });
    if guaranteed {
        QOS_GUARANTEED
    } else {
        QOS_BURSTABLE
    }
}

fn mode(node: bool, pod: bool) -> i32 {
    if node {
        cri::NamespaceMode::Node as i32
    } else if pod {
        cri::NamespaceMode::Pod as i32
    } else {
        cri::NamespaceMode::Container as i32
    }
}

fn namespace_options(spec: &PodSpec) -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: mode(spec.host_network.unwrap_or(false), true),
        pid: mode(spec.host_pid.unwrap_or(false), spec.share_process_namespace.unwrap_or(false)),
        ipc: mode(spec.host_ipc.unwrap_or(false), true),
        ..Default::default()
    }
}

pub fn pod_labels(pod: &Pod) -> HashMap<String, String> {
    let mut l: HashMap<String, String> = pod.metadata.labels.clone().unwrap_or_default().into_iter().collect();
    l.insert("io.kubernetes.pod.name".into(), pod.metadata.name.clone().unwrap_or_default());
    l.insert("io.kubernetes.pod.namespace".into(), pod.metadata.namespace.clone().unwrap_or_default());
    l.insert("io.kubernetes.pod.uid".into(), pod.metadata.uid.clone().unwrap_or_default());
    l
}

/// The node's DNS settings as the kubelet's flags give them: `--cluster-domain`,
/// `--cluster-dns` and `--resolv-conf` (the host's resolver configuration pods with dnsPolicy
/// Default get, and whose search domains follow the cluster's).
pub struct NodeDns<'a> {
    pub cluster_domain: &'a str,
    pub cluster_dns: &'a [String],
    pub resolv_conf: &'a Path,
}

pub fn sandbox_config(pod: &Pod, attempt: u32, log_dir: &Path, cgroup_parent: &str, node_dns: &NodeDns<'_>) -> cri::PodSandboxConfig {
    let spec = pod.spec.clone().unwrap_or_default();
    let name = pod.metadata.name.clone().unwrap_or_default();
    let cluster_domain = node_dns.cluster_domain;
    let hostname = super::pod_files::uts_hostname(pod, cluster_domain);
    let host_resolv = std::fs::read_to_string(node_dns.resolv_conf).unwrap_or_default();
    let mut dns = super::dns::dns_config(pod, node_dns.cluster_dns, cluster_domain, &host_resolv);
    // The runtime's default is the system's /etc/resolv.conf: another --resolv-conf is spelled out.
    if dns.is_none() && node_dns.resolv_conf != Path::new(super::dns::SYSTEM_RESOLV_CONF) {
        let (servers, searches, options) = super::dns::parse_resolv_conf(&host_resolv);
        dns = Some(cri::DnsConfig { servers, searches, options });
    }
    let port_mappings = spec
        .containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| cri::PortMapping {
            protocol: match p.protocol.as_deref() {
                Some("UDP") => cri::Protocol::Udp as i32,
                Some("SCTP") => cri::Protocol::Sctp as i32,
                _ => cri::Protocol::Tcp as i32,
            },
            container_port: p.container_port,
            host_port: p.host_port.unwrap_or(0),
            host_ip: p.host_ip.clone().unwrap_or_default(),
        })
        .collect();
    let psc = spec.security_context.clone().unwrap_or_default();
    let sysctls = psc.sysctls.iter().flatten().map(|s| (s.name.clone(), s.value.clone())).collect();
    cri::PodSandboxConfig {
        metadata: Some(cri::PodSandboxMetadata {
            name,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            attempt,
        }),
        hostname,
        log_directory: log_dir.display().to_string(),
        dns_config: dns,
        port_mappings,
        labels: pod_labels(pod),
        annotations: pod.metadata.annotations.clone().unwrap_or_default().into_iter().collect(),
        linux: Some(cri::LinuxPodSandboxConfig {
            cgroup_parent: cgroup_parent.to_string(),
            security_context: Some(cri::LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options(&spec)),
                run_as_user: psc.run_as_user.map(|v| cri::Int64Value { value: v }),
                run_as_group: psc.run_as_group.map(|v| cri::Int64Value { value: v }),
                supplemental_groups: psc.supplemental_groups.clone().unwrap_or_default(),
                ..Default::default()
            }),
            sysctls,
            ..Default::default()
        }),
        windows: None,
    }
}

/// Values a fieldRef may name.
pub struct FieldValues {
    pub pod_ip: String,
    pub host_ip: String,
    pub node_name: String,
}

pub fn field_ref(pod: &Pod, path: &str, f: &FieldValues) -> Result<String, String> {
    let md = &pod.metadata;
    Ok(match path {
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        "spec.nodeName" => f.node_name.clone(),
        "spec.serviceAccountName" => pod.spec.as_ref().and_then(|s| s.service_account_name.clone()).unwrap_or_default(),
        "status.podIP" | "status.podIPs" => f.pod_ip.clone(),
        "status.hostIP" | "status.hostIPs" => f.host_ip.clone(),
        p => {
            if let Some(key) = p.strip_prefix("metadata.labels['").and_then(|k| k.strip_suffix("']")) {
                md.labels.as_ref().and_then(|l| l.get(key).cloned()).unwrap_or_default()
            } else if let Some(key) = p.strip_prefix("metadata.annotations['").and_then(|k| k.strip_suffix("']")) {
                md.annotations.as_ref().and_then(|l| l.get(key).cloned()).unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef {p:?}"));
            }
        }
    })
}

/// Kubernetes' $(VAR) expansion: known names are replaced, $$ escapes, unknown stay as written.
pub fn expand(s: &str, env: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            if b[i + 1] == b'$' {
                out.push('$');
                i += 2;
                continue;
            }
            if b[i + 1] == b'(' {
                if let Some(end) = s[i + 2..].find(')') {
                    let name = &s[i + 2..i + 2 + end];
                    match env.get(name) {
                        Some(v) => out.push_str(v),
                        None => out.push_str(&s[i..i + 3 + end]),
                    }
                    i += 3 + end;
                    continue;
                }
            }
        }
        let ch = s[i..].chars().next().unwrap_or('\0');
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

pub fn resource_field(c: &Container, field: &str) -> Result<String, String> {
    let (which, name) = match field.split_once('.') {
        Some((w, n)) => (w, n),
        None => return Err(format!("unsupported resourceFieldRef {field:?}")),
    };
    let v = resource(c, which, name).unwrap_or_default();
    Ok(match name {
        "cpu" => ((v.milli_value() + 999) / 1000).to_string(),
        _ => v.value().to_string(),
    })
}

/// What a container's config is built from besides the pod and the container.
pub struct ContainerInputs<'a> {
    pub volumes: &'a VolumePaths,
    pub objects: &'a super::volumes::Objects,
    pub fields: &'a FieldValues,
    /// Where localhost seccomp profiles live.
    pub seccomp_dir: &'a Path,
    /// Where subPath bind mounts are made.
    pub subpath_root: &'a Path,
    /// The runtime handler can make mounts recursively read-only (CRI Status' handler features).
    pub recursive_read_only_mounts: bool,
}

pub fn container_config(pod: &Pod, c: &Container, attempt: u32, inputs: &ContainerInputs<'_>) -> Result<cri::ContainerConfig, String> {
    let ContainerInputs { volumes, objects, fields, seccomp_dir, subpath_root, recursive_read_only_mounts } = *inputs;
    let spec = pod.spec.clone().unwrap_or_default();
    // Env: in order, each entry may refer to the ones before it.
    let mut env: Vec<(String, String)> = Vec::new();
    let mut known: HashMap<String, String> = HashMap::new();
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let cm_data = |name: &str| objects.config_maps.get(&(ns.clone(), name.to_string())).map(super::volumes::config_map_data);
    let secret_data = |name: &str| objects.secrets.get(&(ns.clone(), name.to_string())).map(super::volumes::secret_data);
    let set = |env: &mut Vec<(String, String)>, known: &mut HashMap<String, String>, name: String, value: String| {
        env.retain(|(n, _)| *n != name);
        known.insert(name.clone(), value.clone());
        env.push((name, value));
    };
    // The Services' variables: $(VAR) sees them, the container's own variables override them.
    let service_vars = match &objects.services {
        Some(links) => super::service_env::variables(links, &ns, spec.enable_service_links.unwrap_or(true)),
        None => Vec::new(),
    };
    known.extend(service_vars.iter().cloned());
    // envFrom first: every key of each ConfigMap / Secret (with its prefix); env overrides.
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (what, data, optional) = if let Some(r) = &from.config_map_ref {
            (format!("configmap {:?}", r.name), cm_data(&r.name), r.optional.unwrap_or(false))
        } else if let Some(r) = &from.secret_ref {
            (format!("secret {:?}", r.name), secret_data(&r.name), r.optional.unwrap_or(false))
        } else {
            continue;
        };
        let Some(data) = data else {
            if optional {
                continue;
            }
            return Err(format!("envFrom: {what} not found"));
        };
        for (k, v) in data {
            let name = format!("{prefix}{k}");
            // Keys that are not valid variable names are skipped, as the kubelet does.
            if name.is_empty() || name.contains('=') || name.starts_with(|ch: char| ch.is_ascii_digit()) {
                continue;
            }
            set(&mut env, &mut known, name, String::from_utf8_lossy(&v).into_owned());
        }
    }
    for e in c.env.iter().flatten() {
        let value = if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_ref(pod, &f.field_path, fields)?
            } else if let Some(r) = &from.resource_field_ref {
                resource_field(c, &r.resource)?
            } else if let Some(r) = from
                .config_map_key_ref
                .as_ref()
                .map(|r| (format!("configmap {:?}", r.name), cm_data(&r.name), &r.key, r.optional))
                .or_else(|| from.secret_key_ref.as_ref().map(|r| (format!("secret {:?}", r.name), secret_data(&r.name), &r.key, r.optional)))
            {
                let (what, data, key, optional) = r;
                match data.as_ref().and_then(|d| d.get(key)) {
                    Some(v) => String::from_utf8_lossy(v).into_owned(),
                    None if optional.unwrap_or(false) => continue,
                    None if data.is_none() => return Err(format!("env {:?}: {what} not found", e.name)),
                    None => return Err(format!("env {:?}: {what} has no key {key:?}", e.name)),
                }
            } else {
                return Err(format!("env {:?}: valueFrom has no source", e.name));
            }
        } else {
            expand(e.value.as_deref().unwrap_or_default(), &known)
        };
        set(&mut env, &mut known, e.name.clone(), value);
    }
    for (name, value) in service_vars {
        if !env.iter().any(|(n, _)| *n == name) {
            env.push((name, value));
        }
    }
    let command = c.command.clone().unwrap_or_default().iter().map(|a| expand(a, &known)).collect();
    let args = c.args.clone().unwrap_or_default().iter().map(|a| expand(a, &known)).collect();
    let mut mounts = Vec::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let host = volumes.get(&m.name).ok_or_else(|| format!("volumeMount {:?}: no such volume", m.name))?;
        // subPathExpr expands the container's environment, as $(VAR) does in args.
        let sub = match (m.sub_path.as_deref().filter(|s| !s.is_empty()), m.sub_path_expr.as_deref().filter(|s| !s.is_empty())) {
            (Some(_), Some(_)) => return Err(format!("volumeMount {:?}: subPath and subPathExpr are mutually exclusive", m.name)),
            (Some(sub), None) => Some(sub.to_string()),
            (None, Some(expr)) => Some(expand(expr, &known)),
            (None, None) => None,
        };
        let host = match sub.filter(|s| !s.is_empty()) {
            Some(sub) => super::subpath::prepare(host, &sub, &subpath_root.join(&m.name).join(&c.name).join(i.to_string()))
                .map_err(|e| format!("volumeMount {:?}: {e}", m.name))?,
            None => host.clone(),
        };
        // Volumes the node writes (configMap, secret, downwardAPI, projected) are read-only.
        let readonly = m.read_only.unwrap_or(false) || super::volumes::is_node_written(pod, &m.name);
        let propagation = match m.mount_propagation.as_deref() {
            Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer as i32,
            Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional as i32,
            _ => cri::MountPropagation::PropagationPrivate as i32,
        };
        mounts.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host.display().to_string(),
            readonly,
            propagation,
            recursive_read_only: recursive_read_only(m, readonly, propagation, recursive_read_only_mounts)?,
            ..Default::default()
        });
    }
    let qos = qos_class(&spec);
    let cpu_req = request(c, "cpu").map(|q| q.milli_value());
    let cpu_lim = resource(c, "limits", "cpu").map(|q| q.milli_value());
    let mem_req = request(c, "memory").map(|q| q.value());
    let mem_lim = resource(c, "limits", "memory").map(|q| q.value());
    let shares = cpu_req.map(|m| (m * 1024 / 1000).max(2)).unwrap_or(2);
    let period = 100_000;
    let oom_score_adj = match qos {
        QOS_GUARANTEED => -997,
        QOS_BESTEFFORT => 1000,
        _ => {
            // 1000 - 1000 * request / node memory, kept in 2..999 as the kubelet does.
            let total = node_memory_bytes().max(1);
            let adj = 1000 - (1000 * mem_req.unwrap_or(0) as i128 / total as i128) as i64;
            adj.clamp(2, 999)
        }
    };
    let resources = cri::LinuxContainerResources {
        cpu_period: if cpu_lim.is_some() { period } else { 0 },
        cpu_quota: cpu_lim.map(|m| (m * period / 1000).max(1000)).unwrap_or(0),
        cpu_shares: shares,
        memory_limit_in_bytes: mem_lim.unwrap_or(0),
        oom_score_adj,
        ..Default::default()
    };
    let psc = spec.security_context.clone().unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let run_as_user = csc.run_as_user.or(psc.run_as_user);
    let run_as_group = csc.run_as_group.or(psc.run_as_group);
    let mut supplemental = psc.supplemental_groups.clone().unwrap_or_default();
    if let Some(g) = psc.fs_group {
        supplemental.push(g);
    }
    let seccomp = csc.seccomp_profile.clone().or(psc.seccomp_profile.clone()).map(|p| match p.type_.as_str() {
        "RuntimeDefault" => cri::SecurityProfile { profile_type: cri::security_profile::ProfileType::RuntimeDefault as i32, localhost_ref: String::new() },
        "Localhost" => cri::SecurityProfile {
            profile_type: cri::security_profile::ProfileType::Localhost as i32,
            localhost_ref: seccomp_dir.join(p.localhost_profile.unwrap_or_default()).display().to_string(),
        },
        _ => cri::SecurityProfile { profile_type: cri::security_profile::ProfileType::Unconfined as i32, localhost_ref: String::new() },
    });
    let caps = csc.capabilities.clone().map(|cp| cri::Capability {
        add_capabilities: cp.add.unwrap_or_default(),
        drop_capabilities: cp.drop.unwrap_or_default(),
        ..Default::default()
    });
    let mut ns = namespace_options(&spec);
    if !spec.host_pid.unwrap_or(false) && !spec.share_process_namespace.unwrap_or(false) {
        ns.pid = cri::NamespaceMode::Container as i32;
    }
    let supplemental_groups_policy = match psc.supplemental_groups_policy.as_deref() {
        Some("Strict") => cri::SupplementalGroupsPolicy::Strict as i32,
        _ => cri::SupplementalGroupsPolicy::Merge as i32,
    };
    let sc = cri::LinuxContainerSecurityContext {
        supplemental_groups_policy,
        capabilities: caps,
        privileged: csc.privileged.unwrap_or(false),
        namespace_options: Some(ns),
        run_as_user: run_as_user.map(|v| cri::Int64Value { value: v }),
        run_as_group: run_as_group.map(|v| cri::Int64Value { value: v }),
        readonly_rootfs: csc.read_only_root_filesystem.unwrap_or(false),
        supplemental_groups: supplemental,
        no_new_privs: csc.allow_privilege_escalation == Some(false),
        seccomp,
        ..Default::default()
    };
    let mut labels = pod_labels(pod);
    labels.insert("io.kubernetes.container.name".into(), c.name.clone());
    let mut annotations = HashMap::new();
    annotations.insert("io.kubernetes.container.restartCount".into(), attempt.to_string());
    Ok(cri::ContainerConfig {
        metadata: Some(cri::ContainerMetadata { name: c.name.clone(), attempt }),
        image: Some(cri::ImageSpec { image: c.image.clone().unwrap_or_default(), ..Default::default() }),
        command,
        args,
        working_dir: c.working_dir.clone().unwrap_or_default(),
        envs: env.into_iter().map(|(key, value)| cri::KeyValue { key, value: value.into_bytes() }).collect(),
        mounts,
        labels,
        annotations,
        log_path: format!("{}/{attempt}.log", c.name),
        stdin: c.stdin.unwrap_or(false),
        stdin_once: c.stdin_once.unwrap_or(false),
        tty: c.tty.unwrap_or(false),
        linux: Some(cri::LinuxContainerConfig { resources: Some(resources), security_context: Some(sc) }),
        ..Default::default()
    })
}

fn node_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find_map(|l| l.strip_prefix("MemTotal:").and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())))
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_variables_like_kubernetes() {
        let env = HashMap::from([("A".to_string(), "x".to_string())]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &env), "x-$(B)-$(A)-$");
    }

    #[test]
    fn recursive_read_only_follows_the_runtimes_feature() {
        let m = |rro: &str| k8s_openapi::api::core::v1::VolumeMount { name: "data".into(), recursive_read_only: Some(rro.into()), ..Default::default() };
        let private = cri::MountPropagation::PropagationPrivate as i32;
        assert_eq!(recursive_read_only(&m("IfPossible"), true, private, true), Ok(true));
        assert_eq!(recursive_read_only(&m("IfPossible"), true, private, false), Ok(false), "IfPossible: not when the runtime cannot");
        assert_eq!(recursive_read_only(&m("Enabled"), true, private, true), Ok(true));
        assert!(recursive_read_only(&m("Enabled"), true, private, false).unwrap_err().contains("cannot make mounts recursively read-only"));
        assert!(recursive_read_only(&m("Enabled"), false, private, true).is_err(), "Enabled needs readOnly");
        assert_eq!(recursive_read_only(&m("Disabled"), true, private, true), Ok(false));
    }

    #[test]
    fn pod_cgroup_resources_sum_the_containers() {
        let spec: PodSpec = serde_json::from_value(serde_json::json!({"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"cpu": "200m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "300m", "memory": "32Mi"}}}],
            "initContainers": [{"name": "i", "resources": {"limits": {"cpu": "1", "memory": "16Mi"}}}]}))
        .unwrap();
        let r = pod_resources(&spec);
        // Requests: a 100m + b 300m (its limit) = 400m; the init container's 1 CPU is more.
        assert_eq!(r.cpu_shares, 1024);
        assert_eq!((r.cpu_quota, r.cpu_period), (100_000, 100_000));
        assert_eq!(r.memory_limit_in_bytes, 96 << 20);
        let open: PodSpec = serde_json::from_value(serde_json::json!({"containers": [
            {"name": "a", "resources": {"limits": {"memory": "64Mi"}}}, {"name": "b"}]}))
        .unwrap();
        let r = pod_resources(&open);
        assert_eq!((r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes), (2, 0, 0), "a container without limits leaves the pod unlimited");
    }

    #[test]
    fn qos_classes() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "a", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}]}}))
        .unwrap();
        assert_eq!(qos_class(pod.spec.as_ref().unwrap()), QOS_GUARANTEED);
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "a", "image": "i", "resources": {"requests": {"cpu": "100m"}}}]}}))
        .unwrap();
        assert_eq!(qos_class(pod.spec.as_ref().unwrap()), QOS_BURSTABLE);
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "a", "image": "i"}]}})).unwrap();
        assert_eq!(qos_class(pod.spec.as_ref().unwrap()), QOS_BESTEFFORT);
    }
}
