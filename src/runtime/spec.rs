//! The OCI runtime spec of a container, built from the CRI ContainerConfig, the image config
//! and the pod it joins. The spec is Berth's internal description of a container: the
//! monitor runs exactly what it says, and `crictl inspect` shows it.
use super::process::seccomp;
use super::user::{self, ResolvedUser};
use crate::cri::v1 as cri;
use oci_spec::image::ImageConfiguration;
use oci_spec::runtime::Spec;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What containerd gives a container that asks for nothing special.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

pub const DEFAULT_MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

pub const DEFAULT_READONLY_PATHS: &[&str] = &["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"];

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("invalid {field}: {message}")]
    Invalid { field: String, message: String },
    #[error("{field}: {message}")]
    Unsupported { field: String, message: String },
}

fn invalid(field: &str, message: impl Into<String>) -> SpecError {
    SpecError::Invalid { field: field.into(), message: message.into() }
}

/// The pod-level facts a container's spec needs.
#[derive(Debug, Clone)]
pub struct PodView {
    pub hostname: String,
    /// Namespace files to join; None means the host's namespace.
    pub net_ns: Option<PathBuf>,
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    pub pid_ns: Option<PathBuf>,
    pub host_pid: bool,
    pub shm: PathBuf,
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname_file: PathBuf,
}

pub struct SpecInput<'a> {
    pub config: &'a cri::ContainerConfig,
    pub pod: &'a PodView,
    pub image: &'a ImageConfiguration,
    pub rootfs: &'a Path,
    pub cgroup_path: &'a str,
    pub rlimits: &'a [crate::runtime::rlimit::Rlimit],
    /// For PID namespace mode TARGET: the target container's PID namespace.
    pub target_pid_ns: Option<&'a Path>,
    /// The options of the pod's runtime handler.
    pub handler: &'a super::handlers::HandlerOptions,
    /// Where each image mount's content is (by mount index), mounted by the runtime.
    pub image_volumes: &'a std::collections::HashMap<usize, std::path::PathBuf>,
}

/// Kubernetes' rule: command replaces ENTRYPOINT (and drops CMD); args replace CMD.
pub fn command_line(config: &cri::ContainerConfig, image: &ImageConfiguration) -> Result<Vec<String>, SpecError> {
    let ic = image.config().clone().unwrap_or_default();
    let mut argv: Vec<String> = if !config.command.is_empty() { config.command.clone() } else { ic.entrypoint().clone().unwrap_or_default() };
    if !config.args.is_empty() {
        argv.extend(config.args.iter().cloned());
    } else if config.command.is_empty() {
        argv.extend(ic.cmd().clone().unwrap_or_default());
    }
    if argv.is_empty() {
        return Err(invalid("command", "no command specified: neither the container config nor the image has one"));
    }
    Ok(argv)
}

/// Image env, then the CRI envs (later keys replace earlier ones), PATH defaulted.
pub fn environment(config: &cri::ContainerConfig, image: &ImageConfiguration, home: Option<&str>) -> Vec<String> {
    let mut env: Vec<String> = image.config().as_ref().and_then(|c| c.env().clone()).unwrap_or_default();
    for kv in &config.envs {
        let prefix = format!("{}=", kv.key);
        env.retain(|e| !e.starts_with(&prefix));
        // The OCI spec holds UTF-8 strings; bytes that are not UTF-8 become U+FFFD.
        env.push(format!("{}={}", kv.key, String::from_utf8_lossy(&kv.value)));
    }
    if !env.iter().any(|e| e.starts_with("PATH=")) {
        env.insert(0, DEFAULT_PATH.to_string());
    }
    if let Some(h) = home {
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={h}"));
        }
    }
    env
}

fn normalize_cap(name: &str) -> String {
    let up = name.to_ascii_uppercase();
    if up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// The capability set: defaults, then drops, then adds; "ALL" works on both sides.
pub fn capabilities(sc: &cri::LinuxContainerSecurityContext) -> Result<Vec<String>, SpecError> {
    let all: Vec<String> = caps::all().iter().map(|c| c.to_string()).collect();
    if sc.privileged {
        return Ok(all);
    }
    let mut set: BTreeSet<String> = DEFAULT_CAPS.iter().map(|s| s.to_string()).collect();
    let caps = sc.capabilities.clone().unwrap_or_default();
    for c in &caps.drop_capabilities {
        if c.eq_ignore_ascii_case("ALL") {
            set.clear();
        } else {
            set.remove(&normalize_cap(c));
        }
    }
    for c in &caps.add_capabilities {
        if c.eq_ignore_ascii_case("ALL") {
            set.extend(all.iter().cloned());
            continue;
        }
        let n = normalize_cap(c);
        if !all.contains(&n) {
            return Err(invalid("security_context.capabilities.add_capabilities", format!("unknown capability {c:?}")));
        }
        set.insert(n);
    }
    Ok(set.into_iter().collect())
}

fn user_of(input: &SpecInput, sc: &cri::LinuxContainerSecurityContext) -> Result<ResolvedUser, SpecError> {
    let image_user = input.image.config().as_ref().and_then(|c| c.user().clone()).unwrap_or_default();
    let user_spec = if let Some(uid) = &sc.run_as_user {
        if uid.value < 0 {
            return Err(invalid("security_context.run_as_user", "must not be negative"));
        }
        uid.value.to_string()
    } else if !sc.run_as_username.is_empty() {
        sc.run_as_username.clone()
    } else {
        image_user
    };
    let group = match &sc.run_as_group {
        // CRI: the runtime must refuse a group without a user (the kubelet always sends one).
        Some(_) if sc.run_as_user.is_none() && sc.run_as_username.is_empty() => {
            return Err(invalid("security_context.run_as_group", "set without run_as_user or run_as_username"))
        }
        Some(g) if g.value < 0 => return Err(invalid("security_context.run_as_group", "must not be negative")),
        Some(g) => Some(g.value as u32),
        None => None,
    };
    let mut supplemental = Vec::new();
    for g in &sc.supplemental_groups {
        if *g < 0 {
            return Err(invalid("security_context.supplemental_groups", "must not be negative"));
        }
        supplemental.push(*g as u32);
    }
    let groups_from_image = sc.supplemental_groups_policy != cri::SupplementalGroupsPolicy::Strict as i32;
    user::resolve(input.rootfs, &user_spec, group, &supplemental, groups_from_image).map_err(|e| invalid("user", e.to_string()))
}

#[allow(deprecated)] // seccomp_profile_path: older kubelets still send it
fn seccomp_profile(sc: &cri::LinuxContainerSecurityContext, caps: &[String], unset: Option<&str>) -> Result<Option<Value>, SpecError> {
    if sc.privileged {
        return Ok(None);
    }
    let caps_ref: Vec<&str> = caps.iter().map(String::as_str).collect();
    let (kind, path) = match &sc.seccomp {
        Some(p) => match cri::security_profile::ProfileType::try_from(p.profile_type) {
            Ok(cri::security_profile::ProfileType::RuntimeDefault) => ("runtime/default", String::new()),
            Ok(cri::security_profile::ProfileType::Unconfined) => ("unconfined", String::new()),
            Ok(cri::security_profile::ProfileType::Localhost) => ("localhost", p.localhost_ref.clone()),
            Err(_) => return Err(invalid("security_context.seccomp.profile_type", format!("unknown type {}", p.profile_type))),
        },
        None => match sc.seccomp_profile_path.as_str() {
            // Nothing asked: the runtime handler's unset_seccomp_profile, else unconfined.
            "" => match unset {
                Some("runtime/default") => ("runtime/default", String::new()),
                Some(path) if path.starts_with('/') => ("localhost", path.to_string()),
                _ => ("unconfined", String::new()),
            },
            "unconfined" => ("unconfined", String::new()),
            "runtime/default" | "docker/default" => ("runtime/default", String::new()),
            other => match other.strip_prefix("localhost/") {
                Some(p) => ("localhost", p.to_string()),
                None => return Err(invalid("security_context.seccomp_profile_path", format!("unknown profile {other:?}"))),
            },
        },
    };
    let profile = match kind {
        "unconfined" => return Ok(None),
        "runtime/default" => seccomp::runtime_default_for_caps(&caps_ref),
        _ => {
            let data = std::fs::read(&path).map_err(|e| invalid("security_context.seccomp.localhost_ref", format!("{path}: {e}")))?;
            seccomp::parse_profile(&data, &caps_ref).map_err(|e| invalid("security_context.seccomp.localhost_ref", format!("{path}: {e}")))?
        }
    };
    serde_json::to_value(profile).map(Some).map_err(|e| invalid("seccomp", e.to_string()))
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Value {
    json!({"destination": dest, "type": typ, "source": source, "options": options})
}

fn propagation(p: i32) -> &'static str {
    match cri::MountPropagation::try_from(p) {
        Ok(cri::MountPropagation::PropagationHostToContainer) => "rslave",
        Ok(cri::MountPropagation::PropagationBidirectional) => "rshared",
        _ => "rprivate",
    }
}

/// Propagation needs the host side to take part: a Bidirectional mount's source must sit on
/// a shared mount, a HostToContainer one's on a shared or slave mount (else nothing would
/// propagate and the container would silently see a private copy).
fn check_propagation_source(i: usize, m: &cri::Mount) -> Result<(), SpecError> {
    let mode = cri::MountPropagation::try_from(m.propagation).unwrap_or(cri::MountPropagation::PropagationPrivate);
    if mode == cri::MountPropagation::PropagationPrivate {
        return Ok(());
    }
    let field = format!("mounts[{i}].propagation");
    let entry = super::mountinfo::current_mount_of(Path::new(&m.host_path))
        .map_err(|e| invalid(&field, format!("reading the mount table: {e}")))?
        .ok_or_else(|| invalid(&field, format!("no mount holds {}", m.host_path)))?;
    let ok = match mode {
        cri::MountPropagation::PropagationBidirectional => entry.shared,
        _ => entry.shared || entry.slave,
    };
    if ok {
        return Ok(());
    }
    let want = if mode == cri::MountPropagation::PropagationBidirectional { "a shared mount" } else { "a shared or slave mount" };
    Err(invalid(&field, format!("{} is on mount {}, which is not {want}", m.host_path, entry.mount_point.display())))
}

/// What Mount.mount_options may add to a bind mount: per-mount flags a bind remount sets.
const BIND_MOUNT_OPTIONS: &[&str] = &[
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "noexec",
    "exec",
    "noatime",
    "atime",
    "nodiratime",
    "diratime",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
];

fn mounts(input: &SpecInput, privileged: bool, readonly_root: bool) -> Result<Vec<Value>, SpecError> {
    let mut user_dests = BTreeSet::new();
    let mut user_mounts = Vec::new();
    for (i, m) in input.config.mounts.iter().enumerate() {
        if !m.container_path.starts_with('/') {
            return Err(invalid(&format!("mounts[{i}].container_path"), format!("{:?} is not absolute", m.container_path)));
        }
        if m.image.as_ref().is_some_and(|img| !img.image.is_empty()) {
            // An image volume: its content, read-only, whatever the request says.
            let source = input.image_volumes.get(&i).ok_or_else(|| invalid(&format!("mounts[{i}].image"), "the image volume was not prepared"))?;
            user_dests.insert(m.container_path.trim_end_matches('/').to_string());
            user_mounts.push(mount(&m.container_path, "bind", &source.to_string_lossy(), &["rbind", "rprivate", "ro", "nosuid", "nodev"]));
            continue;
        }
        if !m.host_path.starts_with('/') {
            return Err(invalid(&format!("mounts[{i}].host_path"), format!("{:?} is not absolute", m.host_path)));
        }
        if std::fs::symlink_metadata(&m.host_path).is_err() {
            // As the kubelet expects: a missing host directory is created.
            std::fs::create_dir_all(&m.host_path).map_err(|e| invalid(&format!("mounts[{i}].host_path"), format!("{}: {e}", m.host_path)))?;
        }
        let mut opts = vec!["rbind", propagation(m.propagation)];
        opts.push(if m.readonly { "ro" } else { "rw" });
        if m.recursive_read_only {
            let field = format!("mounts[{i}].recursive_read_only");
            if !m.readonly {
                return Err(invalid(&field, "needs readonly"));
            }
            if m.propagation != cri::MountPropagation::PropagationPrivate as i32 {
                return Err(invalid(&field, "needs private propagation"));
            }
            if !super::process::mounts::recursive_readonly_supported() {
                return Err(invalid(&field, "this kernel has no mount_setattr (Linux 5.12+)"));
            }
            opts.push("rro");
        }
        for (j, o) in m.mount_options.iter().enumerate() {
            if !BIND_MOUNT_OPTIONS.contains(&o.as_str()) {
                let field = format!("mounts[{i}].mount_options[{j}]");
                return Err(invalid(&field, format!("{o:?} is not one of {}", BIND_MOUNT_OPTIONS.join(", "))));
            }
            opts.push(o);
        }
        check_propagation_source(i, m)?;
        user_dests.insert(m.container_path.trim_end_matches('/').to_string());
        user_mounts.push(mount(&m.container_path, "bind", &m.host_path, &opts));
    }
    let sys_opts: &[&str] = if privileged { &["nosuid", "noexec", "nodev"] } else { &["nosuid", "noexec", "nodev", "ro"] };
    let file_opts: &[&str] = if readonly_root { &["rbind", "rprivate", "ro"] } else { &["rbind", "rprivate", "rw"] };
    let pod = input.pod;
    let defaults = vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount("/dev", "tmpfs", "tmpfs", &["nosuid", "strictatime", "mode=755", "size=65536k"]),
        mount("/dev/pts", "devpts", "devpts", &["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]),
        mount("/dev/mqueue", "mqueue", "mqueue", &["nosuid", "noexec", "nodev"]),
        mount("/sys", "sysfs", "sysfs", sys_opts),
        mount("/sys/fs/cgroup", "cgroup", "cgroup", &["nosuid", "noexec", "nodev", "relatime", "ro"]),
        mount("/dev/shm", "bind", &pod.shm.to_string_lossy(), &["rbind", "rprivate", "rw"]),
        mount("/etc/hostname", "bind", &pod.hostname_file.to_string_lossy(), file_opts),
        mount("/etc/hosts", "bind", &pod.hosts.to_string_lossy(), file_opts),
        mount("/etc/resolv.conf", "bind", &pod.resolv_conf.to_string_lossy(), file_opts),
    ];
    let mut all: Vec<Value> = defaults.into_iter().filter(|m| !user_dests.contains(m["destination"].as_str().unwrap_or_default())).collect();
    all.extend(user_mounts);
    Ok(all)
}

/// Every device node under the host's /dev, for privileged containers.
fn host_devices() -> Vec<Value> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::from("/dev")];
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(md) = std::fs::symlink_metadata(&p) else { continue };
            let ft = md.file_type();
            if ft.is_dir() {
                let name = e.file_name();
                if !["pts", "shm", "mqueue", "fd"].iter().any(|n| name == *n) {
                    stack.push(p);
                }
                continue;
            }
            let typ = if ft.is_char_device() {
                "c"
            } else if ft.is_block_device() {
                "b"
            } else {
                continue;
            };
            if p == Path::new("/dev/console") || p == Path::new("/dev/ptmx") {
                continue;
            }
            let rdev = md.rdev();
            out.push(json!({
                "path": p, "type": typ,
                "major": libc::major(rdev) as i64, "minor": libc::minor(rdev) as i64,
                "fileMode": md.mode() & 0o7777, "uid": md.uid(), "gid": md.gid(),
            }));
        }
    }
    out
}

/// CRI resources as OCI LinuxResources JSON; negative values are refused.
pub fn resources(r: Option<&cri::LinuxContainerResources>, privileged: bool) -> Result<Value, SpecError> {
    let devices = if privileged { json!([{"allow": true, "access": "rwm"}]) } else { json!([{"allow": false, "access": "rwm"}]) };
    let mut out = json!({ "devices": devices });
    let Some(r) = r else { return Ok(out) };
    for (name, v) in [
        ("cpu_period", r.cpu_period),
        ("cpu_quota", r.cpu_quota),
        ("cpu_shares", r.cpu_shares),
        ("memory_limit_in_bytes", r.memory_limit_in_bytes),
        ("memory_swap_limit_in_bytes", r.memory_swap_limit_in_bytes),
    ] {
        if v < 0 && !(name == "cpu_quota" && v == -1) {
            return Err(invalid(&format!("resources.{name}"), format!("{v} is negative")));
        }
    }
    let mut cpu = serde_json::Map::new();
    if r.cpu_shares > 0 {
        cpu.insert("shares".into(), json!(r.cpu_shares));
    }
    if r.cpu_quota != 0 {
        cpu.insert("quota".into(), json!(r.cpu_quota));
    }
    if r.cpu_period > 0 {
        cpu.insert("period".into(), json!(r.cpu_period));
    }
    if !r.cpuset_cpus.is_empty() {
        cpu.insert("cpus".into(), json!(r.cpuset_cpus));
    }
    if !r.cpuset_mems.is_empty() {
        cpu.insert("mems".into(), json!(r.cpuset_mems));
    }
    if !cpu.is_empty() {
        out["cpu"] = Value::Object(cpu);
    }
    if r.memory_limit_in_bytes > 0 {
        let mut mem = json!({"limit": r.memory_limit_in_bytes});
        if r.memory_swap_limit_in_bytes > 0 {
            mem["swap"] = json!(r.memory_swap_limit_in_bytes);
        }
        out["memory"] = mem;
    }
    if !r.hugepage_limits.is_empty() {
        out["hugepageLimits"] = r.hugepage_limits.iter().map(|h| json!({"pageSize": h.page_size, "limit": h.limit})).collect();
    }
    if !r.unified.is_empty() {
        out["unified"] = json!(r.unified);
    }
    Ok(out)
}

/// CRI resources as the OCI LinuxResources a cgroup is given (UpdateContainerResources,
/// UpdatePodSandboxResources).
pub fn linux_resources(r: &cri::LinuxContainerResources, privileged: bool) -> Result<oci_spec::runtime::LinuxResources, SpecError> {
    serde_json::from_value(resources(Some(r), privileged)?).map_err(|e| invalid("resources", e.to_string()))
}

/// Build the container's runtime spec.
pub fn build(input: &SpecInput) -> Result<Spec, SpecError> {
    let config = input.config;
    let linux = config.linux.clone().unwrap_or_default();
    let sc = linux.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged;
    let argv = command_line(config, input.image)?;
    let user = user_of(input, &sc)?;
    let env = environment(config, input.image, user.home.as_deref());
    let image_cfg = input.image.config().clone().unwrap_or_default();
    let cwd = if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else {
        image_cfg.working_dir().clone().filter(|w| !w.is_empty()).unwrap_or_else(|| "/".into())
    };
    if !cwd.starts_with('/') {
        return Err(invalid("working_dir", format!("{cwd:?} is not absolute")));
    }
    let caps = capabilities(&sc)?;
    let seccomp = seccomp_profile(&sc, &caps, input.handler.unset_seccomp_profile.as_deref())?;
    let res = linux.resources.as_ref();
    let oom_score_adj = res.map(|r| r.oom_score_adj).filter(|v| *v != 0);
    if let Some(v) = oom_score_adj {
        if !(-1000..=1000).contains(&v) {
            return Err(invalid("resources.oom_score_adj", format!("{v} is outside -1000..1000")));
        }
    }
    let pod = input.pod;
    let mut namespaces = vec![json!({"type": "mount"})];
    for (typ, path) in [("network", &pod.net_ns), ("ipc", &pod.ipc_ns), ("uts", &pod.uts_ns)] {
        if let Some(p) = path {
            namespaces.push(json!({"type": typ, "path": p}));
        }
    }
    // The protocol's zero value is POD: a container without namespace options shares the pod's.
    let pid_mode = sc.namespace_options.as_ref().map(|n| n.pid).unwrap_or(cri::NamespaceMode::Pod as i32);
    if pid_mode == cri::NamespaceMode::Pod as i32 {
        if let Some(p) = &pod.pid_ns {
            namespaces.push(json!({"type": "pid", "path": p}));
        }
    } else if pid_mode == cri::NamespaceMode::Target as i32 {
        // `kubectl debug --target`: the ephemeral container sees the target's processes.
        let p = input.target_pid_ns.ok_or_else(|| invalid("linux.security_context.namespace_options.target_id", "the target's PID namespace is unknown"))?;
        namespaces.push(json!({"type": "pid", "path": p}));
    } else if pid_mode != cri::NamespaceMode::Node as i32 {
        namespaces.push(json!({"type": "pid"}));
    }
    let masked: Vec<String> = if privileged {
        vec![]
    } else if sc.masked_paths.is_empty() {
        DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect()
    } else {
        sc.masked_paths.clone()
    };
    let readonly: Vec<String> = if privileged {
        vec![]
    } else if sc.readonly_paths.is_empty() {
        DEFAULT_READONLY_PATHS.iter().map(|s| s.to_string()).collect()
    } else {
        sc.readonly_paths.clone()
    };
    let mut annotations = serde_json::Map::new();
    for (k, v) in &config.annotations {
        annotations.insert(k.clone(), json!(v));
    }
    annotations.insert("io.kubernetes.cri.container-type".into(), json!("container"));
    let mut linux_json = json!({
        "cgroupsPath": input.cgroup_path,
        "namespaces": namespaces,
        "resources": resources(res, privileged)?,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    });
    if privileged && !input.handler.privileged_without_host_devices {
        linux_json["devices"] = Value::Array(host_devices());
    }
    // A Bidirectional mount needs the container's mount namespace to stay a peer of the
    // host's (as runc does with rootfsPropagation rshared); otherwise it starts as a slave.
    if input.config.mounts.iter().any(|m| m.propagation == cri::MountPropagation::PropagationBidirectional as i32) {
        linux_json["rootfsPropagation"] = json!("rshared");
    }
    if let Some(s) = seccomp {
        linux_json["seccomp"] = s;
    }
    let mut process = json!({
        "terminal": config.tty,
        "user": {"uid": user.uid, "gid": user.gid, "additionalGids": user.additional_gids},
        "args": argv,
        "env": env,
        "cwd": cwd,
        "capabilities": {"bounding": caps, "effective": caps, "permitted": caps, "inheritable": [], "ambient": []},
        "noNewPrivileges": sc.no_new_privs,
    });
    if let Some(name) = &user.username {
        process["user"]["username"] = json!(name);
    }
    if let Some(v) = oom_score_adj {
        process["oomScoreAdj"] = json!(v);
    }
    if !input.rlimits.is_empty() {
        process["rlimits"] = serde_json::to_value(input.rlimits).map_err(|e| invalid("rlimits", e.to_string()))?;
    }
    let spec = json!({
        "ociVersion": "1.2.0",
        "process": process,
        "root": {"path": input.rootfs, "readonly": sc.readonly_rootfs},
        "hostname": pod.hostname,
        "mounts": mounts(input, privileged, sc.readonly_rootfs)?,
        "annotations": annotations,
        "linux": linux_json,
    });
    serde_json::from_value(spec).map_err(|e| invalid("spec", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(entrypoint: &[&str], cmd: &[&str]) -> ImageConfiguration {
        let v = json!({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
            "config": {"Entrypoint": entrypoint, "Cmd": cmd, "Env": ["PATH=/bin", "A=1"]}});
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn command_and_args_merge_like_kubernetes() {
        let img = image(&["/ep"], &["c1"]);
        let mut c = cri::ContainerConfig::default();
        assert_eq!(command_line(&c, &img).unwrap(), vec!["/ep", "c1"]);
        c.args = vec!["a".into()];
        assert_eq!(command_line(&c, &img).unwrap(), vec!["/ep", "a"]);
        c.command = vec!["/cmd".into()];
        assert_eq!(command_line(&c, &img).unwrap(), vec!["/cmd", "a"]);
        c.args.clear();
        assert_eq!(command_line(&c, &img).unwrap(), vec!["/cmd"]);
        assert!(command_line(&cri::ContainerConfig::default(), &image(&[], &[])).is_err());
    }

    #[test]
    fn env_overrides_and_caps() {
        let img = image(&["/ep"], &[]);
        let c = cri::ContainerConfig { envs: vec![cri::KeyValue { key: "A".into(), value: "2".into() }], ..Default::default() };
        assert_eq!(environment(&c, &img, None), vec!["PATH=/bin", "A=2"]);
        let sc = cri::LinuxContainerSecurityContext {
            capabilities: Some(cri::Capability { add_capabilities: vec!["SYS_ADMIN".into()], drop_capabilities: vec!["ALL".into()], ..Default::default() }),
            ..Default::default()
        };
        assert_eq!(capabilities(&sc).unwrap(), vec!["CAP_SYS_ADMIN"]);
    }

    #[test]
    fn negative_resources_are_refused() {
        let r = cri::LinuxContainerResources { memory_limit_in_bytes: -5, ..Default::default() };
        let e = resources(Some(&r), false).unwrap_err().to_string();
        assert!(e.contains("memory_limit_in_bytes"), "{e}");
    }
}
