//! PodSecurity: the Pod Security Standards (privileged, baseline, restricted; the latest version
//! of each) chosen per namespace by the `pod-security.kubernetes.io/enforce|audit|warn` labels
//! (and their `-version` labels). A pod that violates the enforce level is refused:
//! `pods "x" is forbidden: violates PodSecurity "restricted:latest": <reason> (<detail>), ...`;
//! the warn level (defaulting to the enforce level) adds a `Warning` header
//! `would violate PodSecurity "...": ...` to pods and to the pod templates of workload objects
//! (those are never refused, as upstream); a namespace whose enforce level is tightened warns about
//! the pods already in it that the new level would refuse. Each check is one function in upstream's order: the
//! baseline checks, then (restricted) the restricted ones, with three baseline checks that the
//! restricted level replaces by stricter ones. The audit log gets upstream's annotations: the
//! pod's `pod-security.kubernetes.io/enforce-policy` and, for pods and templates that violate
//! the audit level, `pod-security.kubernetes.io/audit-violations`.

use std::collections::BTreeSet;

use futures_util::future::BoxFuture;
use serde_json::Value;

use super::{Attributes, Operation, Plugin};
use crate::api::Api;
use crate::audit::policy::Level as AuditLevel;
use crate::status::ApiError;

const LABEL_PREFIX: &str = "pod-security.kubernetes.io/";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

/// A level and the version label it was asked with ("latest" when none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelVersion {
    pub level: Level,
    pub version: String,
}

impl std::fmt::Display for LevelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let level = match self.level {
            Level::Privileged => "privileged",
            Level::Baseline => "baseline",
            Level::Restricted => "restricted",
        };
        write!(f, "{level}:{}", self.version)
    }
}

/// The enforce and warn policies of a namespace's labels (warn defaults to enforce, as upstream).
pub fn policies(labels: &serde_json::Map<String, Value>) -> (LevelVersion, LevelVersion) {
    let get = |k: &str| labels.get(&format!("{LABEL_PREFIX}{k}")).and_then(Value::as_str);
    let level = |s: Option<&str>| match s {
        None | Some("privileged") => Level::Privileged,
        Some("baseline") => Level::Baseline,
        // an unknown level is judged as the strictest
        Some(_) => Level::Restricted,
    };
    let version = |s: Option<&str>| match s {
        None | Some("") => "latest".to_string(),
        Some(v) => v.to_string(),
    };
    let enforce = LevelVersion { level: level(get("enforce")), version: version(get("enforce-version")) };
    let warn = LevelVersion {
        level: if get("warn").is_some() { level(get("warn")) } else { enforce.level },
        version: if get("warn-version").is_some() { version(get("warn-version")) } else { enforce.version.clone() },
    };
    (enforce, warn)
}

/// The audit policy of a namespace's labels (privileged, so nothing, when unset: the audit mode
/// does not follow the enforce level, as upstream's defaults).
pub fn audit_policy(labels: &serde_json::Map<String, Value>) -> LevelVersion {
    let get = |k: &str| labels.get(&format!("{LABEL_PREFIX}{k}")).and_then(Value::as_str);
    let level = match get("audit") {
        None | Some("privileged") => Level::Privileged,
        Some("baseline") => Level::Baseline,
        Some(_) => Level::Restricted,
    };
    let version = get("audit-version").filter(|v| !v.is_empty()).unwrap_or("latest").to_string();
    LevelVersion { level, version }
}

pub struct PodSecurity;

impl Plugin for PodSecurity {
    fn name(&self) -> &'static str {
        "PodSecurity"
    }

    fn validate<'a>(&'a self, api: &'a Api, a: &'a mut Attributes) -> BoxFuture<'a, Result<(), ApiError>> {
        Box::pin(async move {
            let Some(obj) = a.object.as_ref() else { return Ok(()) };
            if a.is("", "namespaces") && a.operation == Operation::Update {
                let warnings = existing_pods_warnings(api, a);
                a.warnings.extend(warnings);
                return Ok(());
            }
            let is_pod = a.is("", "pods") && a.operation == Operation::Create;
            let template = match (a.resource.group, a.resource.plural) {
                _ if !a.subresource.is_empty() || !matches!(a.operation, Operation::Create | Operation::Update) => None,
                ("", "podtemplates") => Some("/template"),
                ("", "replicationcontrollers") | ("apps", "deployments" | "replicasets" | "statefulsets" | "daemonsets") | ("batch", "jobs") => {
                    Some("/spec/template")
                }
                ("batch", "cronjobs") => Some("/spec/jobTemplate/spec/template"),
                _ => None,
            };
            if !is_pod && template.is_none() {
                return Ok(());
            }
            let Some(labels) = namespace_labels(api, a.namespace()).await? else { return Ok(()) };
            let (enforce, warn) = policies(&labels);
            let pod = match template {
                Some(path) => match obj.pointer(path) {
                    Some(t) => t.clone(),
                    None => return Ok(()),
                },
                None => obj.clone(),
            };
            // the audit log's annotations (upstream's keys), before a refusal so it has them
            let audit = audit_policy(&labels);
            let audit_failures = evaluate(audit.level, &pod);
            if !audit_failures.is_empty() {
                let note = format!("would violate PodSecurity \"{audit}\": {}", aggregate(&audit_failures));
                crate::audit::annotations::add(AuditLevel::Metadata, "pod-security.kubernetes.io/audit-violations", note);
            }
            if is_pod {
                crate::audit::annotations::add(AuditLevel::Metadata, "pod-security.kubernetes.io/enforce-policy", enforce.to_string());
                let failures = evaluate(enforce.level, &pod);
                if !failures.is_empty() {
                    return Err(a.forbidden(&format!("violates PodSecurity \"{enforce}\": {}", aggregate(&failures))));
                }
            }
            let failures = evaluate(warn.level, &pod);
            if !failures.is_empty() {
                a.warnings.push(format!("would violate PodSecurity \"{warn}\": {}", aggregate(&failures)));
            }
            Ok(())
        })
    }
}

/// A namespace update that tightens its enforce level warns about the pods already in it that the
/// new level would refuse: one line for the namespace, then one per distinct set of reasons,
/// naming the first pod (and how many others share it).
fn existing_pods_warnings(api: &Api, a: &Attributes) -> Vec<String> {
    let labels = |o: Option<&Value>| o.and_then(|o| o.pointer("/metadata/labels")).and_then(Value::as_object).cloned().unwrap_or_default();
    let (new, _) = policies(&labels(a.object.as_ref()));
    let (old, _) = policies(&labels(a.old_object.as_ref()));
    if new == old || new.level == Level::Privileged {
        return vec![];
    }
    let mut order: Vec<String> = vec![];
    let mut seen: std::collections::HashMap<String, (String, usize)> = std::collections::HashMap::new();
    for pod in super::cached(api, "", "pods", Some(&a.name)) {
        let failures = evaluate(new.level, &pod);
        if failures.is_empty() {
            continue;
        }
        let reasons = failures.iter().map(|(r, _)| r.as_str()).collect::<Vec<_>>().join(", ");
        match seen.get_mut(&reasons) {
            Some((_, n)) => *n += 1,
            None => {
                order.push(reasons.clone());
                seen.insert(reasons, (crate::meta::name(&pod).to_string(), 1));
            }
        }
    }
    if order.is_empty() {
        return vec![];
    }
    let mut lines: Vec<String> = order
        .iter()
        .map(|reasons| {
            let (pod, n) = &seen[reasons];
            match n {
                1 => format!("{pod}: {reasons}"),
                2 => format!("{pod} (and 1 other pod): {reasons}"),
                n => format!("{pod} (and {} other pods): {reasons}", n - 1),
            }
        })
        .collect();
    lines.sort();
    let mut out = vec![format!("existing pods in namespace \"{}\" violate the new PodSecurity enforce level \"{new}\"", a.name)];
    out.extend(lines);
    out
}

/// The labels of namespace `ns` as stored now (None: no such namespace).
async fn namespace_labels(api: &Api, ns: &str) -> Result<Option<serde_json::Map<String, Value>>, ApiError> {
    let namespaces = api.resource("", "namespaces")?;
    let key = namespaces.key(api.store_prefix(), None, ns);
    let Some(kv) = api.store.get(&key, None).await.map_err(|e| crate::rest::store_error(&namespaces, ns, e))? else { return Ok(None) };
    let obj: Value = serde_json::from_slice(&kv.value).map_err(ApiError::internal)?;
    Ok(Some(obj.pointer("/metadata/labels").and_then(Value::as_object).cloned().unwrap_or_default()))
}

/// One failed check: its reason and detail.
pub type Failure = (String, String);

/// Upstream's aggregate: `reason (detail), reason (detail)`.
pub fn aggregate(failures: &[Failure]) -> String {
    failures.iter().map(|(r, d)| if d.is_empty() { r.clone() } else { format!("{r} ({d})") }).collect::<Vec<_>>().join(", ")
}

type Check = fn(&Value, &Value) -> Option<Failure>;

/// The baseline checks every non-privileged level runs, in upstream's order.
const BASELINE: &[Check] = &[app_armor, host_namespaces, host_ports, privileged, proc_mount, se_linux, sysctls, host_process];
/// The baseline checks the restricted level replaces.
const BASELINE_ONLY: &[Check] = &[capabilities_baseline, host_path_volumes, seccomp_baseline];
const RESTRICTED: &[Check] = &[allow_privilege_escalation, capabilities_restricted, restricted_volumes, run_as_non_root, run_as_user, seccomp_restricted];

/// The failed checks of a pod (an object with metadata and spec) at `level`.
pub fn evaluate(level: Level, pod: &Value) -> Vec<Failure> {
    let checks: Vec<Check> = match level {
        Level::Privileged => return vec![],
        Level::Baseline => BASELINE.iter().chain(BASELINE_ONLY).copied().collect(),
        Level::Restricted => BASELINE.iter().chain(RESTRICTED).copied().collect(),
    };
    let meta = pod.get("metadata").cloned().unwrap_or(Value::Null);
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    checks.iter().filter_map(|c| c(&meta, &spec)).collect()
}

fn join_quote(items: &[String]) -> String {
    items.iter().map(|i| format!("\"{i}\"")).collect::<Vec<_>>().join(", ")
}

fn plural<'a>(one: &'a str, many: &'a str, n: usize) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// `container "a"` / `containers "a", "b"`.
fn containers_phrase(names: &[String]) -> String {
    format!("{} {}", plural("container", "containers", names.len()), join_quote(names))
}

/// Init containers, containers, ephemeral containers, in that order.
fn containers(spec: &Value) -> Vec<&Value> {
    ["initContainers", "containers", "ephemeralContainers"].iter().flat_map(|l| spec.get(*l).and_then(Value::as_array).into_iter().flatten()).collect()
}

fn name(c: &Value) -> String {
    c.get("name").and_then(Value::as_str).unwrap_or("").to_string()
}

fn sc<'a>(c: &'a Value, path: &str) -> Option<&'a Value> {
    c.pointer(&format!("/securityContext{path}"))
}

fn pod_sc<'a>(spec: &'a Value, path: &str) -> Option<&'a Value> {
    spec.pointer(&format!("/securityContext{path}"))
}

fn fail(reason: &str, detail: String) -> Option<Failure> {
    Some((reason.to_string(), detail))
}

fn app_armor(meta: &Value, spec: &Value) -> Option<Failure> {
    let mut bad: Vec<String> = meta
        .get("annotations")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with("container.apparmor.security.beta.kubernetes.io/"))
        .filter_map(|(k, v)| {
            let v = v.as_str().unwrap_or("");
            let allowed = v.is_empty() || v == "runtime/default" || v.starts_with("localhost/");
            (!allowed).then(|| format!("{k}={v:?}"))
        })
        .collect();
    let unconfined = |v: Option<&Value>| v.and_then(|p| p.get("type")).and_then(Value::as_str) == Some("Unconfined");
    let mut setters = vec![];
    if unconfined(pod_sc(spec, "/appArmorProfile")) {
        setters.push("pod".to_string());
    }
    let cs: Vec<String> = containers(spec).into_iter().filter(|c| unconfined(sc(c, "/appArmorProfile"))).map(name).collect();
    if !cs.is_empty() {
        setters.push(containers_phrase(&cs));
    }
    if !setters.is_empty() {
        bad.push(format!("{} must not set securityContext.appArmorProfile.type to \"Unconfined\"", setters.join(" and ")));
    }
    if bad.is_empty() {
        return None;
    }
    bad.sort();
    fail(plural("forbidden AppArmor profile", "forbidden AppArmor profiles", bad.len()), bad.join(", "))
}

fn host_namespaces(_: &Value, spec: &Value) -> Option<Failure> {
    let set: Vec<String> =
        ["hostNetwork", "hostPID", "hostIPC"].iter().filter(|f| spec.get(**f).and_then(Value::as_bool) == Some(true)).map(|f| format!("{f}=true")).collect();
    (!set.is_empty()).then(|| ("host namespaces".to_string(), set.join(", ")))
}

fn host_ports(_: &Value, spec: &Value) -> Option<Failure> {
    let mut bad = vec![];
    let mut ports = BTreeSet::new();
    for c in containers(spec) {
        let mut uses = false;
        for p in c.get("ports").and_then(Value::as_array).into_iter().flatten() {
            if let Some(h) = p.get("hostPort").and_then(Value::as_i64).filter(|h| *h != 0) {
                ports.insert(h.to_string());
                uses = true;
            }
        }
        if uses {
            bad.push(name(c));
        }
    }
    if bad.is_empty() {
        return None;
    }
    let ports: Vec<String> = ports.into_iter().collect();
    fail(
        "hostPort",
        format!("{} {} {} {}", containers_phrase(&bad), plural("uses", "use", bad.len()), plural("hostPort", "hostPorts", ports.len()), ports.join(", ")),
    )
}

fn privileged(_: &Value, spec: &Value) -> Option<Failure> {
    let bad: Vec<String> = containers(spec).into_iter().filter(|c| sc(c, "/privileged").and_then(Value::as_bool) == Some(true)).map(name).collect();
    (!bad.is_empty()).then(|| ("privileged".to_string(), format!("{} must not set securityContext.privileged=true", containers_phrase(&bad))))
}

fn proc_mount(_: &Value, spec: &Value) -> Option<Failure> {
    let mut bad = vec![];
    let mut kinds = BTreeSet::new();
    for c in containers(spec) {
        if let Some(p) = sc(c, "/procMount").and_then(Value::as_str).filter(|p| *p != "Default") {
            bad.push(name(c));
            kinds.insert(p.to_string());
        }
    }
    if bad.is_empty() {
        return None;
    }
    let kinds: Vec<String> = kinds.into_iter().collect();
    fail("procMount", format!("{} must not set securityContext.procMount to {}", containers_phrase(&bad), join_quote(&kinds)))
}

fn se_linux(_: &Value, spec: &Value) -> Option<Failure> {
    const TYPES: &[&str] = &["", "container_t", "container_init_t", "container_kvm_t"];
    let mut bad_types = BTreeSet::new();
    let (mut user, mut role) = (false, false);
    let mut valid = |o: &Value| {
        let mut ok = true;
        let t = o.get("type").and_then(Value::as_str).unwrap_or("");
        if !TYPES.contains(&t) {
            ok = false;
            bad_types.insert(t.to_string());
        }
        if o.get("user").and_then(Value::as_str).is_some_and(|u| !u.is_empty()) {
            ok = false;
            user = true;
        }
        if o.get("role").and_then(Value::as_str).is_some_and(|r| !r.is_empty()) {
            ok = false;
            role = true;
        }
        ok
    };
    let mut setters = vec![];
    if pod_sc(spec, "/seLinuxOptions").is_some_and(|o| !valid(o)) {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = containers(spec).into_iter().filter(|c| sc(c, "/seLinuxOptions").is_some_and(|o| !valid(o))).map(name).collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    if setters.is_empty() {
        return None;
    }
    let mut data = vec![];
    if !bad_types.is_empty() {
        let types: Vec<String> = bad_types.into_iter().collect();
        data.push(format!("{} {}", plural("type", "types", types.len()), join_quote(&types)));
    }
    if user {
        data.push("user may not be set".to_string());
    }
    if role {
        data.push("role may not be set".to_string());
    }
    fail("seLinuxOptions", format!("{} set forbidden securityContext.seLinuxOptions: {}", setters.join(" and "), data.join("; ")))
}

fn sysctls(_: &Value, spec: &Value) -> Option<Failure> {
    const SAFE: &[&str] = &[
        "kernel.shm_rmid_forced",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_local_reserved_ports",
        "net.ipv4.tcp_syncookies",
        "net.ipv4.ping_group_range",
        "net.ipv4.ip_unprivileged_port_start",
        "net.ipv4.tcp_keepalive_time",
        "net.ipv4.tcp_fin_timeout",
        "net.ipv4.tcp_keepalive_intvl",
        "net.ipv4.tcp_keepalive_probes",
        "net.ipv4.tcp_rmem",
        "net.ipv4.tcp_wmem",
    ];
    let bad: Vec<String> = pod_sc(spec, "/sysctls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|s| s.get("name").and_then(Value::as_str))
        .filter(|n| !SAFE.contains(n))
        .map(String::from)
        .collect();
    (!bad.is_empty()).then(|| ("forbidden sysctls".to_string(), bad.join(", ")))
}

fn host_process(_: &Value, spec: &Value) -> Option<Failure> {
    let on = |v: Option<&Value>| v.and_then(Value::as_bool) == Some(true);
    let mut setters = vec![];
    if on(pod_sc(spec, "/windowsOptions/hostProcess")) {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = containers(spec).into_iter().filter(|c| on(sc(c, "/windowsOptions/hostProcess"))).map(name).collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    (!setters.is_empty())
        .then(|| ("hostProcess".to_string(), format!("{} must not set securityContext.windowsOptions.hostProcess=true", setters.join(" and "))))
}

fn capabilities_baseline(_: &Value, spec: &Value) -> Option<Failure> {
    const DEFAULT: &[&str] = &[
        "AUDIT_WRITE",
        "CHOWN",
        "DAC_OVERRIDE",
        "FOWNER",
        "FSETID",
        "KILL",
        "MKNOD",
        "NET_BIND_SERVICE",
        "SETFCAP",
        "SETGID",
        "SETPCAP",
        "SETUID",
        "SYS_CHROOT",
    ];
    let mut bad = vec![];
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let mut adds = false;
        for cap in sc(c, "/capabilities/add").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if !DEFAULT.contains(&cap) {
                adds = true;
                caps.insert(cap.to_string());
            }
        }
        if adds {
            bad.push(name(c));
        }
    }
    if bad.is_empty() {
        return None;
    }
    let caps: Vec<String> = caps.into_iter().collect();
    fail("non-default capabilities", format!("{} must not include {} in securityContext.capabilities.add", containers_phrase(&bad), join_quote(&caps)))
}

fn host_path_volumes(_: &Value, spec: &Value) -> Option<Failure> {
    let bad: Vec<String> =
        spec.get("volumes").and_then(Value::as_array).into_iter().flatten().filter(|v| v.get("hostPath").is_some_and(|h| !h.is_null())).map(name).collect();
    (!bad.is_empty()).then(|| ("hostPath volumes".to_string(), format!("{} {}", plural("volume", "volumes", bad.len()), join_quote(&bad))))
}

fn seccomp_type(v: Option<&Value>) -> Option<&str> {
    v.and_then(|p| p.get("type")).and_then(Value::as_str)
}

fn seccomp_baseline(_: &Value, spec: &Value) -> Option<Failure> {
    let mut setters = vec![];
    if seccomp_type(pod_sc(spec, "/seccompProfile")) == Some("Unconfined") {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = containers(spec).into_iter().filter(|c| seccomp_type(sc(c, "/seccompProfile")) == Some("Unconfined")).map(name).collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    (!setters.is_empty())
        .then(|| ("seccompProfile".to_string(), format!("{} must not set securityContext.seccompProfile.type to \"Unconfined\"", setters.join(" and "))))
}

fn allow_privilege_escalation(_: &Value, spec: &Value) -> Option<Failure> {
    let bad: Vec<String> =
        containers(spec).into_iter().filter(|c| sc(c, "/allowPrivilegeEscalation").and_then(Value::as_bool) != Some(false)).map(name).collect();
    (!bad.is_empty()).then(|| {
        ("allowPrivilegeEscalation != false".to_string(), format!("{} must set securityContext.allowPrivilegeEscalation=false", containers_phrase(&bad)))
    })
}

fn capabilities_restricted(_: &Value, spec: &Value) -> Option<Failure> {
    let mut missing_drop = vec![];
    let mut adding = vec![];
    let mut caps = BTreeSet::new();
    for c in containers(spec) {
        let drops_all = sc(c, "/capabilities/drop").and_then(Value::as_array).is_some_and(|d| d.iter().any(|x| x.as_str() == Some("ALL")));
        if !drops_all {
            missing_drop.push(name(c));
        }
        let mut adds = false;
        for cap in sc(c, "/capabilities/add").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
            if cap != "NET_BIND_SERVICE" {
                adds = true;
                caps.insert(cap.to_string());
            }
        }
        if adds {
            adding.push(name(c));
        }
    }
    let mut details = vec![];
    if !missing_drop.is_empty() {
        details.push(format!("{} must set securityContext.capabilities.drop=[\"ALL\"]", containers_phrase(&missing_drop)));
    }
    if !adding.is_empty() {
        let caps: Vec<String> = caps.into_iter().collect();
        details.push(format!("{} must not include {} in securityContext.capabilities.add", containers_phrase(&adding), join_quote(&caps)));
    }
    (!details.is_empty()).then(|| ("unrestricted capabilities".to_string(), details.join("; ")))
}

fn restricted_volumes(_: &Value, spec: &Value) -> Option<Failure> {
    const ALLOWED: &[&str] = &["configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret"];
    let mut bad = vec![];
    let mut kinds = BTreeSet::new();
    for v in spec.get("volumes").and_then(Value::as_array).into_iter().flatten() {
        let Some(fields) = v.as_object() else { continue };
        let kind = fields.iter().find(|(k, val)| k.as_str() != "name" && !val.is_null()).map(|(k, _)| k.as_str());
        match kind {
            Some(k) if !ALLOWED.contains(&k) => {
                bad.push(name(v));
                kinds.insert(k.to_string());
            }
            _ => {}
        }
    }
    if bad.is_empty() {
        return None;
    }
    let kinds: Vec<String> = kinds.into_iter().collect();
    fail(
        "restricted volume types",
        format!(
            "{} {} {} {} {}",
            plural("volume", "volumes", bad.len()),
            join_quote(&bad),
            plural("uses", "use", bad.len()),
            plural("restricted volume type", "restricted volume types", kinds.len()),
            join_quote(&kinds)
        ),
    )
}

fn run_as_non_root(_: &Value, spec: &Value) -> Option<Failure> {
    let mut setters = vec![];
    let pod_value = pod_sc(spec, "/runAsNonRoot").and_then(Value::as_bool);
    if pod_value == Some(false) {
        setters.push("pod".to_string());
    }
    let (mut explicit, mut implicit) = (vec![], vec![]);
    for c in containers(spec) {
        match sc(c, "/runAsNonRoot").and_then(Value::as_bool) {
            Some(false) => explicit.push(name(c)),
            Some(true) => {}
            None if pod_value != Some(true) => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        return fail("runAsNonRoot != true", format!("{} must not set securityContext.runAsNonRoot=false", setters.join(" and ")));
    }
    (!implicit.is_empty())
        .then(|| ("runAsNonRoot != true".to_string(), format!("pod or {} must set securityContext.runAsNonRoot=true", containers_phrase(&implicit))))
}

fn run_as_user(_: &Value, spec: &Value) -> Option<Failure> {
    let mut setters = vec![];
    if pod_sc(spec, "/runAsUser").and_then(Value::as_i64) == Some(0) {
        setters.push("pod".to_string());
    }
    let bad: Vec<String> = containers(spec).into_iter().filter(|c| sc(c, "/runAsUser").and_then(Value::as_i64) == Some(0)).map(name).collect();
    if !bad.is_empty() {
        setters.push(containers_phrase(&bad));
    }
    (!setters.is_empty()).then(|| ("runAsUser=0".to_string(), format!("{} must not set runAsUser=0", setters.join(" and "))))
}

fn seccomp_restricted(_: &Value, spec: &Value) -> Option<Failure> {
    let valid = |t: &str| t == "RuntimeDefault" || t == "Localhost";
    let mut setters = vec![];
    let mut bad_values = BTreeSet::new();
    let mut pod_set = false;
    if let Some(t) = pod_sc(spec, "/seccompProfile").map(|p| p.get("type").and_then(Value::as_str).unwrap_or("")) {
        if valid(t) {
            pod_set = true;
        } else {
            setters.push("pod".to_string());
            bad_values.insert(t.to_string());
        }
    }
    let (mut explicit, mut implicit) = (vec![], vec![]);
    for c in containers(spec) {
        match sc(c, "/seccompProfile").map(|p| p.get("type").and_then(Value::as_str).unwrap_or("")) {
            Some(t) if !valid(t) => {
                explicit.push(name(c));
                bad_values.insert(t.to_string());
            }
            Some(_) => {}
            None if !pod_set => implicit.push(name(c)),
            None => {}
        }
    }
    if !explicit.is_empty() {
        setters.push(containers_phrase(&explicit));
    }
    if !setters.is_empty() {
        let values: Vec<String> = bad_values.into_iter().collect();
        return fail("seccompProfile", format!("{} must not set securityContext.seccompProfile.type to {}", setters.join(" and "), join_quote(&values)));
    }
    (!implicit.is_empty()).then(|| {
        (
            "seccompProfile".to_string(),
            format!("pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"", containers_phrase(&implicit)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(spec: Value) -> Value {
        json!({"metadata": {"name": "p"}, "spec": spec})
    }

    #[test]
    fn a_privileged_pod_fails_restricted_in_upstream_words() {
        let p = pod(json!({"containers": [{"name": "c", "image": "i", "securityContext": {"privileged": true}}]}));
        assert_eq!(
            aggregate(&evaluate(Level::Restricted, &p)),
            "privileged (container \"c\" must not set securityContext.privileged=true), allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false), unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"]), runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true), seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")"
        );
        assert_eq!(aggregate(&evaluate(Level::Baseline, &p)), "privileged (container \"c\" must not set securityContext.privileged=true)");
        assert!(evaluate(Level::Privileged, &p).is_empty());
    }

    #[test]
    fn a_compliant_pod_passes_restricted() {
        let p = pod(json!({
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "volumes": [{"name": "t", "projected": {"sources": []}}, {"name": "e", "emptyDir": {}}],
            "containers": [{"name": "c", "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
        }));
        assert!(evaluate(Level::Restricted, &p).is_empty(), "{:?}", evaluate(Level::Restricted, &p));
    }

    #[test]
    fn every_baseline_check_speaks() {
        let p = json!({
            "metadata": {"name": "p", "annotations": {"container.apparmor.security.beta.kubernetes.io/c": "unconfined"}},
            "spec": {
                "hostNetwork": true, "hostPID": true,
                "securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}], "seccompProfile": {"type": "Unconfined"}, "seLinuxOptions": {"type": "spc_t", "user": "u"}},
                "volumes": [{"name": "h", "hostPath": {"path": "/"}}],
                "initContainers": [{"name": "i", "securityContext": {"procMount": "Unmasked"}}],
                "containers": [
                    {"name": "a", "ports": [{"containerPort": 80, "hostPort": 8080}], "securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}, "windowsOptions": {"hostProcess": true}}},
                    {"name": "b", "ports": [{"containerPort": 81, "hostPort": 8081}]},
                ],
            },
        });
        let got = evaluate(Level::Baseline, &p);
        let reasons: Vec<&str> = got.iter().map(|(r, _)| r.as_str()).collect();
        assert_eq!(
            reasons,
            vec![
                "forbidden AppArmor profile",
                "host namespaces",
                "hostPort",
                "procMount",
                "seLinuxOptions",
                "forbidden sysctls",
                "hostProcess",
                "non-default capabilities",
                "hostPath volumes",
                "seccompProfile"
            ]
        );
        let detail = |r: &str| got.iter().find(|(x, _)| x == r).map(|(_, d)| d.clone()).unwrap_or_default();
        assert_eq!(detail("forbidden AppArmor profile"), "container.apparmor.security.beta.kubernetes.io/c=\"unconfined\"");
        assert_eq!(detail("host namespaces"), "hostNetwork=true, hostPID=true");
        assert_eq!(detail("hostPort"), "containers \"a\", \"b\" use hostPorts 8080, 8081");
        assert_eq!(detail("procMount"), "container \"i\" must not set securityContext.procMount to \"Unmasked\"");
        assert_eq!(detail("seLinuxOptions"), "pod set forbidden securityContext.seLinuxOptions: type \"spc_t\"; user may not be set");
        assert_eq!(detail("forbidden sysctls"), "kernel.msgmax");
        assert_eq!(detail("hostProcess"), "container \"a\" must not set securityContext.windowsOptions.hostProcess=true");
        assert_eq!(detail("non-default capabilities"), "container \"a\" must not include \"NET_ADMIN\" in securityContext.capabilities.add");
        assert_eq!(detail("hostPath volumes"), "volume \"h\"");
        assert_eq!(detail("seccompProfile"), "pod must not set securityContext.seccompProfile.type to \"Unconfined\"");

        let r = evaluate(Level::Restricted, &p);
        let detail = |x: &str| r.iter().find(|(y, _)| y == x).map(|(_, d)| d.clone()).unwrap_or_default();
        assert_eq!(detail("restricted volume types"), "volume \"h\" uses restricted volume type \"hostPath\"");
        assert_eq!(detail("seccompProfile"), "pod must not set securityContext.seccompProfile.type to \"Unconfined\"");
    }

    #[test]
    fn run_as_user_and_run_as_non_root_name_their_setters() {
        let p = pod(json!({"securityContext": {"runAsUser": 0, "runAsNonRoot": false}, "containers": [{"name": "c", "securityContext": {"runAsUser": 0}}]}));
        let r = evaluate(Level::Restricted, &p);
        let detail = |x: &str| r.iter().find(|(y, _)| y == x).map(|(_, d)| d.clone()).unwrap_or_default();
        assert_eq!(detail("runAsUser=0"), "pod and container \"c\" must not set runAsUser=0");
        assert_eq!(detail("runAsNonRoot != true"), "pod must not set securityContext.runAsNonRoot=false");
    }

    #[tokio::test]
    async fn tightening_a_namespace_warns_about_its_pods() {
        let api = crate::admission::testing::api().await;
        crate::admission::testing::create(&api, "", "namespaces", None, json!({"metadata": {"name": "t"}})).await;
        for name in ["a", "b", "c"] {
            let c = if name == "c" { json!({"name": "c", "image": "i", "securityContext": {"privileged": true}}) } else { json!({"name": "c", "image": "i"}) };
            crate::admission::testing::create(&api, "", "pods", Some("t"), json!({"metadata": {"name": name}, "spec": {"containers": [c]}})).await;
        }
        let pods = api.cache(&api.resource("", "pods").unwrap()).unwrap();
        let rev = api.store.current_revision().await.unwrap();
        assert!(pods.wait_for(rev, std::time::Duration::from_secs(5)).await);
        let namespaces = api.resource("", "namespaces").unwrap();
        let written = api
            .patch(
                &namespaces,
                None,
                "t",
                crate::patch::PatchType::Merge,
                &json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "baseline"}}}),
                crate::rest::Subresource::Main,
                &Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(written.warnings, vec!["existing pods in namespace \"t\" violate the new PodSecurity enforce level \"baseline:latest\"", "c: privileged"]);
        let written = api
            .patch(
                &namespaces,
                None,
                "t",
                crate::patch::PatchType::Merge,
                &json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}),
                crate::rest::Subresource::Main,
                &Default::default(),
            )
            .await
            .unwrap();
        assert_eq!(
            written.warnings,
            vec![
                "existing pods in namespace \"t\" violate the new PodSecurity enforce level \"restricted:latest\"",
                "a (and 1 other pod): allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile",
                "c: privileged, allowPrivilegeEscalation != false, unrestricted capabilities, runAsNonRoot != true, seccompProfile",
            ]
        );
    }

    #[test]
    fn warn_defaults_to_enforce() {
        let labels = json!({"pod-security.kubernetes.io/enforce": "baseline", "pod-security.kubernetes.io/enforce-version": "v1.33"});
        let (enforce, warn) = policies(labels.as_object().unwrap());
        assert_eq!((enforce.to_string(), warn.to_string()), ("baseline:v1.33".to_string(), "baseline:v1.33".to_string()));
        let labels = json!({"pod-security.kubernetes.io/warn": "restricted"});
        let (enforce, warn) = policies(labels.as_object().unwrap());
        assert_eq!((enforce.to_string(), warn.to_string()), ("privileged:latest".to_string(), "restricted:latest".to_string()));
    }
}
