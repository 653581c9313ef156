//! CRI requests from JSON: the one place that turns a recorded request (the proto3 JSON
//! mapping with the proto's own field names, as `integration/fixtures/kubelet/` stores them)
//! into the CRI message types, and sends it with the project's CRI client.
//!
//! Every message is built field by field, with `..Default::default()` for fields a JSON
//! object does not mention, so the CRI types can be swapped by changing the `cri` import
//! below. A key this module does not know is an error, never dropped: a fixture field that
//! did not reach the runtime would make its test prove nothing.
// `..Default::default()` stays on messages whose every field is set today: a newer CRI
// definition adds fields, and these builders must keep compiling against it.
#![allow(clippy::needless_update)]

pub use berth::cri::v1 as cri;

use cri::image_service_client::ImageServiceClient;
use cri::runtime_service_client::RuntimeServiceClient;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};
use tonic::transport::Channel;

/// A fixture request that does not fit its message: the JSON path and what is wrong.
#[derive(Debug)]
pub struct JsonError(pub String);

impl std::fmt::Display for JsonError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JsonError {}

type Result<T> = std::result::Result<T, JsonError>;

/// One JSON object being read into a message: remembers which keys were taken, so that
/// `done` can refuse the rest.
struct Obj<'a> {
    path: String,
    map: &'a Map<String, Value>,
    used: HashSet<&'a str>,
}

impl<'a> Obj<'a> {
    fn new(path: &str, v: &'a Value) -> Result<Obj<'a>> {
        match v {
            Value::Object(map) => Ok(Obj { path: path.to_string(), map, used: HashSet::new() }),
            other => Err(JsonError(format!("{path}: expected an object, found {other}"))),
        }
    }

    fn at(&self, key: &str) -> String {
        format!("{}.{key}", self.path)
    }

    fn take(&mut self, key: &str) -> Option<&'a Value> {
        let (k, v) = self.map.get_key_value(key)?;
        self.used.insert(k.as_str());
        Some(v).filter(|v| !v.is_null())
    }

    fn string(&mut self, key: &str) -> Result<String> {
        match self.take(key) {
            None => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(other) => Err(JsonError(format!("{}: expected a string, found {other}", self.at(key)))),
        }
    }

    fn boolean(&mut self, key: &str) -> Result<bool> {
        match self.take(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => Err(JsonError(format!("{}: expected true or false, found {other}", self.at(key)))),
        }
    }

    /// An integer, as a JSON number or (proto3 JSON for 64-bit fields) a decimal string.
    fn int<T: TryFrom<i128>>(&mut self, key: &str) -> Result<T> {
        let path = self.at(key);
        let n: i128 = match self.take(key) {
            None => 0,
            Some(v) => int_of(&path, v)?,
        };
        T::try_from(n).map_err(|_| JsonError(format!("{path}: {n} is out of range")))
    }

    fn strings(&mut self, key: &str) -> Result<Vec<String>> {
        let path = self.at(key);
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| v.as_str().map(String::from).ok_or_else(|| JsonError(format!("{path}[{i}]: expected a string"))))
            .collect()
    }

    fn ints<T: TryFrom<i128>>(&mut self, key: &str) -> Result<Vec<T>> {
        let path = self.at(key);
        self.array(key)?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let p = format!("{path}[{i}]");
                let n = int_of(&p, v)?;
                T::try_from(n).map_err(|_| JsonError(format!("{p}: {n} is out of range")))
            })
            .collect()
    }

    fn array(&mut self, key: &str) -> Result<&'a [Value]> {
        match self.take(key) {
            None => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(other) => Err(JsonError(format!("{}: expected an array, found {other}", self.at(key)))),
        }
    }

    fn string_map(&mut self, key: &str) -> Result<HashMap<String, String>> {
        let path = self.at(key);
        match self.take(key) {
            None => Ok(HashMap::new()),
            Some(Value::Object(m)) => m
                .iter()
                .map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())).ok_or_else(|| JsonError(format!("{path}.{k}: expected a string"))))
                .collect(),
            Some(other) => Err(JsonError(format!("{path}: expected an object of strings, found {other}"))),
        }
    }

    /// A nested message, or None when the key is absent.
    fn message<T>(&mut self, key: &str, build: impl FnOnce(Obj<'a>) -> Result<T>) -> Result<Option<T>> {
        let path = self.at(key);
        match self.take(key) {
            None => Ok(None),
            Some(v) => build(Obj::new(&path, v)?).map(Some),
        }
    }

    fn messages<T>(&mut self, key: &str, build: impl Fn(Obj<'a>) -> Result<T>) -> Result<Vec<T>> {
        let path = self.at(key);
        self.array(key)?.iter().enumerate().map(|(i, v)| build(Obj::new(&format!("{path}[{i}]"), v)?)).collect()
    }

    /// An enum, by its proto name or its number.
    fn enumeration(&mut self, key: &str, names: &[(&str, i32)]) -> Result<i32> {
        let path = self.at(key);
        match self.take(key) {
            None => Ok(0),
            Some(Value::String(s)) => names
                .iter()
                .find(|(n, _)| n == s)
                .map(|(_, v)| *v)
                .ok_or_else(|| JsonError(format!("{path}: unknown value {s:?} (known: {})", names.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")))),
            Some(v) => int_of(&path, v).and_then(|n| i32::try_from(n).map_err(|_| JsonError(format!("{path}: {n} is out of range")))),
        }
    }

    /// Every key of the object was read.
    fn done(self) -> Result<()> {
        let mut unknown: Vec<&str> = self.map.keys().map(String::as_str).filter(|k| !self.used.contains(k)).collect();
        if unknown.is_empty() {
            return Ok(());
        }
        unknown.sort_unstable();
        Err(JsonError(format!("{}: field(s) this CRI message has not: {}", self.path, unknown.join(", "))))
    }
}

fn int_of(path: &str, v: &Value) -> Result<i128> {
    match v {
        Value::Number(n) => n.as_i64().map(i128::from).or_else(|| n.as_u64().map(i128::from)),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| JsonError(format!("{path}: expected an integer, found {v}")))
}

const PROTOCOL: &[(&str, i32)] = &[("TCP", 0), ("UDP", 1), ("SCTP", 2)];
const PROPAGATION: &[(&str, i32)] = &[("PROPAGATION_PRIVATE", 0), ("PROPAGATION_HOST_TO_CONTAINER", 1), ("PROPAGATION_BIDIRECTIONAL", 2)];
const NAMESPACE_MODE: &[(&str, i32)] = &[("POD", 0), ("CONTAINER", 1), ("NODE", 2), ("TARGET", 3)];
const PROFILE_TYPE: &[(&str, i32)] = &[("RuntimeDefault", 0), ("Unconfined", 1), ("Localhost", 2)];
const SUPPLEMENTAL_GROUPS_POLICY: &[(&str, i32)] = &[("Merge", 0), ("Strict", 1)];
pub const CONTAINER_STATE: &[(&str, i32)] = &[("CONTAINER_CREATED", 0), ("CONTAINER_RUNNING", 1), ("CONTAINER_EXITED", 2), ("CONTAINER_UNKNOWN", 3)];
pub const SANDBOX_STATE: &[(&str, i32)] = &[("SANDBOX_READY", 0), ("SANDBOX_NOTREADY", 1)];

fn pod_sandbox_config(mut o: Obj) -> Result<cri::PodSandboxConfig> {
    let c = cri::PodSandboxConfig {
        metadata: o.message("metadata", |mut o| {
            let m = cri::PodSandboxMetadata { name: o.string("name")?, uid: o.string("uid")?, namespace: o.string("namespace")?, attempt: o.int("attempt")? };
            o.done().map(|_| m)
        })?,
        hostname: o.string("hostname")?,
        log_directory: o.string("log_directory")?,
        dns_config: o.message("dns_config", |mut o| {
            let d = cri::DnsConfig { servers: o.strings("servers")?, searches: o.strings("searches")?, options: o.strings("options")? };
            o.done().map(|_| d)
        })?,
        port_mappings: o.messages("port_mappings", |mut o| {
            let p = cri::PortMapping {
                protocol: o.enumeration("protocol", PROTOCOL)?,
                container_port: o.int("container_port")?,
                host_port: o.int("host_port")?,
                host_ip: o.string("host_ip")?,
            };
            o.done().map(|_| p)
        })?,
        labels: o.string_map("labels")?,
        annotations: o.string_map("annotations")?,
        linux: o.message("linux", |mut o| {
            let l = cri::LinuxPodSandboxConfig {
                cgroup_parent: o.string("cgroup_parent")?,
                security_context: o.message("security_context", sandbox_security_context)?,
                sysctls: o.string_map("sysctls")?,
                overhead: o.message("overhead", linux_resources)?,
                resources: o.message("resources", linux_resources)?,
            };
            o.done().map(|_| l)
        })?,
        ..Default::default()
    };
    o.done().map(|_| c)
}

fn sandbox_security_context(mut o: Obj) -> Result<cri::LinuxSandboxSecurityContext> {
    #[allow(deprecated)]
    let s = cri::LinuxSandboxSecurityContext {
        namespace_options: o.message("namespace_options", namespace_option)?,
        selinux_options: o.message("selinux_options", selinux_option)?,
        run_as_user: o.message("run_as_user", int64_value)?,
        run_as_group: o.message("run_as_group", int64_value)?,
        readonly_rootfs: o.boolean("readonly_rootfs")?,
        supplemental_groups: o.ints("supplemental_groups")?,
        supplemental_groups_policy: o.enumeration("supplemental_groups_policy", SUPPLEMENTAL_GROUPS_POLICY)?,
        privileged: o.boolean("privileged")?,
        seccomp: o.message("seccomp", security_profile)?,
        apparmor: o.message("apparmor", security_profile)?,
        seccomp_profile_path: o.string("seccomp_profile_path")?,
    };
    o.done().map(|_| s)
}

fn namespace_option(mut o: Obj) -> Result<cri::NamespaceOption> {
    let n = cri::NamespaceOption {
        network: o.enumeration("network", NAMESPACE_MODE)?,
        pid: o.enumeration("pid", NAMESPACE_MODE)?,
        ipc: o.enumeration("ipc", NAMESPACE_MODE)?,
        target_id: o.string("target_id")?,
        userns_options: o.message("userns_options", |mut o| {
            let u = cri::UserNamespace {
                mode: o.enumeration("mode", NAMESPACE_MODE)?,
                uids: o.messages("uids", id_mapping)?,
                gids: o.messages("gids", id_mapping)?,
            };
            o.done().map(|_| u)
        })?,
    };
    o.done().map(|_| n)
}

fn id_mapping(mut o: Obj) -> Result<cri::IdMapping> {
    let m = cri::IdMapping { host_id: o.int("host_id")?, container_id: o.int("container_id")?, length: o.int("length")? };
    o.done().map(|_| m)
}

fn selinux_option(mut o: Obj) -> Result<cri::SeLinuxOption> {
    let s = cri::SeLinuxOption { user: o.string("user")?, role: o.string("role")?, r#type: o.string("type")?, level: o.string("level")? };
    o.done().map(|_| s)
}

fn int64_value(mut o: Obj) -> Result<cri::Int64Value> {
    let v = cri::Int64Value { value: o.int("value")? };
    o.done().map(|_| v)
}

fn security_profile(mut o: Obj) -> Result<cri::SecurityProfile> {
    let p = cri::SecurityProfile { profile_type: o.enumeration("profile_type", PROFILE_TYPE)?, localhost_ref: o.string("localhost_ref")? };
    o.done().map(|_| p)
}

fn linux_resources(mut o: Obj) -> Result<cri::LinuxContainerResources> {
    let r = cri::LinuxContainerResources {
        cpu_period: o.int("cpu_period")?,
        cpu_quota: o.int("cpu_quota")?,
        cpu_shares: o.int("cpu_shares")?,
        memory_limit_in_bytes: o.int("memory_limit_in_bytes")?,
        oom_score_adj: o.int("oom_score_adj")?,
        cpuset_cpus: o.string("cpuset_cpus")?,
        cpuset_mems: o.string("cpuset_mems")?,
        hugepage_limits: o.messages("hugepage_limits", |mut o| {
            let h = cri::HugepageLimit { page_size: o.string("page_size")?, limit: o.int("limit")? };
            o.done().map(|_| h)
        })?,
        unified: o.string_map("unified")?,
        memory_swap_limit_in_bytes: o.int("memory_swap_limit_in_bytes")?,
        ..Default::default()
    };
    o.done().map(|_| r)
}

fn image_spec(mut o: Obj) -> Result<cri::ImageSpec> {
    let i = cri::ImageSpec {
        image: o.string("image")?,
        annotations: o.string_map("annotations")?,
        user_specified_image: o.string("user_specified_image")?,
        runtime_handler: o.string("runtime_handler")?,
        ..Default::default()
    };
    o.done().map(|_| i)
}

fn mount(mut o: Obj) -> Result<cri::Mount> {
    let m = cri::Mount {
        container_path: o.string("container_path")?,
        host_path: o.string("host_path")?,
        readonly: o.boolean("readonly")?,
        selinux_relabel: o.boolean("selinux_relabel")?,
        propagation: o.enumeration("propagation", PROPAGATION)?,
        uid_mappings: o.messages("uidMappings", id_mapping)?,
        gid_mappings: o.messages("gidMappings", id_mapping)?,
        recursive_read_only: o.boolean("recursive_read_only")?,
        image: o.message("image", image_spec)?,
        ..Default::default()
    };
    o.done().map(|_| m)
}

fn container_config(mut o: Obj) -> Result<cri::ContainerConfig> {
    let c = cri::ContainerConfig {
        metadata: o.message("metadata", |mut o| {
            let m = cri::ContainerMetadata { name: o.string("name")?, attempt: o.int("attempt")? };
            o.done().map(|_| m)
        })?,
        image: o.message("image", image_spec)?,
        command: o.strings("command")?,
        args: o.strings("args")?,
        working_dir: o.string("working_dir")?,
        envs: o.messages("envs", |mut o| {
            let kv = cri::KeyValue { key: o.string("key")?, value: o.string("value")?.into_bytes() };
            o.done().map(|_| kv)
        })?,
        mounts: o.messages("mounts", mount)?,
        devices: o.messages("devices", |mut o| {
            let d = cri::Device { container_path: o.string("container_path")?, host_path: o.string("host_path")?, permissions: o.string("permissions")? };
            o.done().map(|_| d)
        })?,
        labels: o.string_map("labels")?,
        annotations: o.string_map("annotations")?,
        log_path: o.string("log_path")?,
        stdin: o.boolean("stdin")?,
        stdin_once: o.boolean("stdin_once")?,
        tty: o.boolean("tty")?,
        linux: o.message("linux", |mut o| {
            let l = cri::LinuxContainerConfig {
                resources: o.message("resources", linux_resources)?,
                security_context: o.message("security_context", container_security_context)?,
            };
            o.done().map(|_| l)
        })?,
        cdi_devices: o.messages("CDI_devices", |mut o| {
            let d = cri::CdiDevice { name: o.string("name")? };
            o.done().map(|_| d)
        })?,
        ..Default::default()
    };
    o.done().map(|_| c)
}

fn container_security_context(mut o: Obj) -> Result<cri::LinuxContainerSecurityContext> {
    #[allow(deprecated)]
    let s = cri::LinuxContainerSecurityContext {
        capabilities: o.message("capabilities", |mut o| {
            let c = cri::Capability {
                add_capabilities: o.strings("add_capabilities")?,
                drop_capabilities: o.strings("drop_capabilities")?,
                add_ambient_capabilities: o.strings("add_ambient_capabilities")?,
            };
            o.done().map(|_| c)
        })?,
        privileged: o.boolean("privileged")?,
        namespace_options: o.message("namespace_options", namespace_option)?,
        selinux_options: o.message("selinux_options", selinux_option)?,
        run_as_user: o.message("run_as_user", int64_value)?,
        run_as_group: o.message("run_as_group", int64_value)?,
        run_as_username: o.string("run_as_username")?,
        readonly_rootfs: o.boolean("readonly_rootfs")?,
        supplemental_groups: o.ints("supplemental_groups")?,
        supplemental_groups_policy: o.enumeration("supplemental_groups_policy", SUPPLEMENTAL_GROUPS_POLICY)?,
        no_new_privs: o.boolean("no_new_privs")?,
        masked_paths: o.strings("masked_paths")?,
        readonly_paths: o.strings("readonly_paths")?,
        seccomp: o.message("seccomp", security_profile)?,
        apparmor: o.message("apparmor", security_profile)?,
        apparmor_profile: o.string("apparmor_profile")?,
        seccomp_profile_path: o.string("seccomp_profile_path")?,
    };
    o.done().map(|_| s)
}

fn container_filter(mut o: Obj) -> Result<cri::ContainerFilter> {
    let f = cri::ContainerFilter {
        id: o.string("id")?,
        state: o.message("state", |mut o| {
            let s = cri::ContainerStateValue { state: o.enumeration("state", CONTAINER_STATE)? };
            o.done().map(|_| s)
        })?,
        pod_sandbox_id: o.string("pod_sandbox_id")?,
        label_selector: o.string_map("label_selector")?,
    };
    o.done().map(|_| f)
}

fn sandbox_filter(mut o: Obj) -> Result<cri::PodSandboxFilter> {
    let f = cri::PodSandboxFilter {
        id: o.string("id")?,
        state: o.message("state", |mut o| {
            let s = cri::PodSandboxStateValue { state: o.enumeration("state", SANDBOX_STATE)? };
            o.done().map(|_| s)
        })?,
        label_selector: o.string_map("label_selector")?,
    };
    o.done().map(|_| f)
}

/// A CRI call of the kubelet, its request built (one at a time, so the variants' sizes do not
/// matter).
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum CriCall {
    Version(cri::VersionRequest),
    Status(cri::StatusRequest),
    RuntimeConfig(cri::RuntimeConfigRequest),
    UpdateRuntimeConfig(cri::UpdateRuntimeConfigRequest),
    RunPodSandbox(cri::RunPodSandboxRequest),
    StopPodSandbox(cri::StopPodSandboxRequest),
    RemovePodSandbox(cri::RemovePodSandboxRequest),
    PodSandboxStatus(cri::PodSandboxStatusRequest),
    ListPodSandbox(cri::ListPodSandboxRequest),
    CreateContainer(cri::CreateContainerRequest),
    StartContainer(cri::StartContainerRequest),
    StopContainer(cri::StopContainerRequest),
    RemoveContainer(cri::RemoveContainerRequest),
    ListContainers(cri::ListContainersRequest),
    ContainerStatus(cri::ContainerStatusRequest),
    UpdateContainerResources(cri::UpdateContainerResourcesRequest),
    ExecSync(cri::ExecSyncRequest),
    ContainerStats(cri::ContainerStatsRequest),
    ListContainerStats(cri::ListContainerStatsRequest),
    PodSandboxStats(cri::PodSandboxStatsRequest),
    ListPodSandboxStats(cri::ListPodSandboxStatsRequest),
    ListImages(cri::ListImagesRequest),
    ImageStatus(cri::ImageStatusRequest),
    PullImage(cri::PullImageRequest),
    RemoveImage(cri::RemoveImageRequest),
    ImageFsInfo(cri::ImageFsInfoRequest),
}

/// What the runtime answered to a `CriCall`.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum CriReply {
    Version(cri::VersionResponse),
    Status(cri::StatusResponse),
    RuntimeConfig(cri::RuntimeConfigResponse),
    UpdateRuntimeConfig(cri::UpdateRuntimeConfigResponse),
    RunPodSandbox(cri::RunPodSandboxResponse),
    StopPodSandbox(cri::StopPodSandboxResponse),
    RemovePodSandbox(cri::RemovePodSandboxResponse),
    PodSandboxStatus(cri::PodSandboxStatusResponse),
    ListPodSandbox(cri::ListPodSandboxResponse),
    CreateContainer(cri::CreateContainerResponse),
    StartContainer(cri::StartContainerResponse),
    StopContainer(cri::StopContainerResponse),
    RemoveContainer(cri::RemoveContainerResponse),
    ListContainers(cri::ListContainersResponse),
    ContainerStatus(cri::ContainerStatusResponse),
    UpdateContainerResources(cri::UpdateContainerResourcesResponse),
    ExecSync(cri::ExecSyncResponse),
    ContainerStats(cri::ContainerStatsResponse),
    ListContainerStats(cri::ListContainerStatsResponse),
    PodSandboxStats(cri::PodSandboxStatsResponse),
    ListPodSandboxStats(cri::ListPodSandboxStatsResponse),
    ListImages(cri::ListImagesResponse),
    ImageStatus(cri::ImageStatusResponse),
    PullImage(cri::PullImageResponse),
    RemoveImage(cri::RemoveImageResponse),
    ImageFsInfo(cri::ImageFsInfoResponse),
}

/// Build the request of `rpc` (its name in the CRI service, e.g. `RunPodSandbox`) from `v`.
pub fn call(rpc: &str, v: &Value) -> Result<CriCall> {
    let mut o = Obj::new(rpc, v)?;
    let c = match rpc {
        "Version" => CriCall::Version(cri::VersionRequest { version: o.string("version")? }),
        "Status" => CriCall::Status(cri::StatusRequest { verbose: o.boolean("verbose")? }),
        "RuntimeConfig" => CriCall::RuntimeConfig(cri::RuntimeConfigRequest::default()),
        "UpdateRuntimeConfig" => CriCall::UpdateRuntimeConfig(cri::UpdateRuntimeConfigRequest {
            runtime_config: o.message("runtime_config", |mut o| {
                let r = cri::RuntimeConfig {
                    network_config: o.message("network_config", |mut o| {
                        let n = cri::NetworkConfig { pod_cidr: o.string("pod_cidr")? };
                        o.done().map(|_| n)
                    })?,
                };
                o.done().map(|_| r)
            })?,
        }),
        "RunPodSandbox" => CriCall::RunPodSandbox(cri::RunPodSandboxRequest {
            config: o.message("config", pod_sandbox_config)?,
            runtime_handler: o.string("runtime_handler")?,
        }),
        "StopPodSandbox" => CriCall::StopPodSandbox(cri::StopPodSandboxRequest { pod_sandbox_id: o.string("pod_sandbox_id")? }),
        "RemovePodSandbox" => CriCall::RemovePodSandbox(cri::RemovePodSandboxRequest { pod_sandbox_id: o.string("pod_sandbox_id")? }),
        "PodSandboxStatus" => {
            CriCall::PodSandboxStatus(cri::PodSandboxStatusRequest { pod_sandbox_id: o.string("pod_sandbox_id")?, verbose: o.boolean("verbose")? })
        }
        "ListPodSandbox" => CriCall::ListPodSandbox(cri::ListPodSandboxRequest { filter: o.message("filter", sandbox_filter)? }),
        "CreateContainer" => CriCall::CreateContainer(cri::CreateContainerRequest {
            pod_sandbox_id: o.string("pod_sandbox_id")?,
            config: o.message("config", container_config)?,
            sandbox_config: o.message("sandbox_config", pod_sandbox_config)?,
        }),
        "StartContainer" => CriCall::StartContainer(cri::StartContainerRequest { container_id: o.string("container_id")? }),
        "StopContainer" => CriCall::StopContainer(cri::StopContainerRequest { container_id: o.string("container_id")?, timeout: o.int("timeout")? }),
        "RemoveContainer" => CriCall::RemoveContainer(cri::RemoveContainerRequest { container_id: o.string("container_id")? }),
        "ListContainers" => CriCall::ListContainers(cri::ListContainersRequest { filter: o.message("filter", container_filter)? }),
        "ContainerStatus" => CriCall::ContainerStatus(cri::ContainerStatusRequest { container_id: o.string("container_id")?, verbose: o.boolean("verbose")? }),
        "UpdateContainerResources" => CriCall::UpdateContainerResources(cri::UpdateContainerResourcesRequest {
            container_id: o.string("container_id")?,
            linux: o.message("linux", linux_resources)?,
            annotations: o.string_map("annotations")?,
            ..Default::default()
        }),
        "ExecSync" => CriCall::ExecSync(cri::ExecSyncRequest { container_id: o.string("container_id")?, cmd: o.strings("cmd")?, timeout: o.int("timeout")? }),
        "ContainerStats" => CriCall::ContainerStats(cri::ContainerStatsRequest { container_id: o.string("container_id")? }),
        "ListContainerStats" => CriCall::ListContainerStats(cri::ListContainerStatsRequest {
            filter: o.message("filter", |mut o| {
                let f = cri::ContainerStatsFilter {
                    id: o.string("id")?,
                    pod_sandbox_id: o.string("pod_sandbox_id")?,
                    label_selector: o.string_map("label_selector")?,
                };
                o.done().map(|_| f)
            })?,
        }),
        "PodSandboxStats" => CriCall::PodSandboxStats(cri::PodSandboxStatsRequest { pod_sandbox_id: o.string("pod_sandbox_id")? }),
        "ListPodSandboxStats" => CriCall::ListPodSandboxStats(cri::ListPodSandboxStatsRequest {
            filter: o.message("filter", |mut o| {
                let f = cri::PodSandboxStatsFilter { id: o.string("id")?, label_selector: o.string_map("label_selector")? };
                o.done().map(|_| f)
            })?,
        }),
        "ListImages" => CriCall::ListImages(cri::ListImagesRequest {
            filter: o.message("filter", |mut o| {
                let f = cri::ImageFilter { image: o.message("image", image_spec)? };
                o.done().map(|_| f)
            })?,
        }),
        "ImageStatus" => CriCall::ImageStatus(cri::ImageStatusRequest { image: o.message("image", image_spec)?, verbose: o.boolean("verbose")? }),
        "PullImage" => CriCall::PullImage(cri::PullImageRequest {
            image: o.message("image", image_spec)?,
            auth: o.message("auth", |mut o| {
                let a = cri::AuthConfig {
                    username: o.string("username")?,
                    password: o.string("password")?,
                    auth: o.string("auth")?,
                    server_address: o.string("server_address")?,
                    identity_token: o.string("identity_token")?,
                    registry_token: o.string("registry_token")?,
                };
                o.done().map(|_| a)
            })?,
            sandbox_config: o.message("sandbox_config", pod_sandbox_config)?,
        }),
        "RemoveImage" => CriCall::RemoveImage(cri::RemoveImageRequest { image: o.message("image", image_spec)? }),
        "ImageFsInfo" => CriCall::ImageFsInfo(cri::ImageFsInfoRequest::default()),
        other => return Err(JsonError(format!("{other}: no such CRI call (or not one the kubelet fixtures use)"))),
    };
    o.done().map(|_| c)
}

/// Send a call with the project's CRI clients.
pub async fn send(
    rt: &mut RuntimeServiceClient<Channel>,
    img: &mut ImageServiceClient<Channel>,
    call: CriCall,
) -> std::result::Result<CriReply, tonic::Status> {
    Ok(match call {
        CriCall::Version(r) => CriReply::Version(rt.version(r).await?.into_inner()),
        CriCall::Status(r) => CriReply::Status(rt.status(r).await?.into_inner()),
        CriCall::RuntimeConfig(r) => CriReply::RuntimeConfig(rt.runtime_config(r).await?.into_inner()),
        CriCall::UpdateRuntimeConfig(r) => CriReply::UpdateRuntimeConfig(rt.update_runtime_config(r).await?.into_inner()),
        CriCall::RunPodSandbox(r) => CriReply::RunPodSandbox(rt.run_pod_sandbox(r).await?.into_inner()),
        CriCall::StopPodSandbox(r) => CriReply::StopPodSandbox(rt.stop_pod_sandbox(r).await?.into_inner()),
        CriCall::RemovePodSandbox(r) => CriReply::RemovePodSandbox(rt.remove_pod_sandbox(r).await?.into_inner()),
        CriCall::PodSandboxStatus(r) => CriReply::PodSandboxStatus(rt.pod_sandbox_status(r).await?.into_inner()),
        CriCall::ListPodSandbox(r) => CriReply::ListPodSandbox(rt.list_pod_sandbox(r).await?.into_inner()),
        CriCall::CreateContainer(r) => CriReply::CreateContainer(rt.create_container(r).await?.into_inner()),
        CriCall::StartContainer(r) => CriReply::StartContainer(rt.start_container(r).await?.into_inner()),
        CriCall::StopContainer(r) => CriReply::StopContainer(rt.stop_container(r).await?.into_inner()),
        CriCall::RemoveContainer(r) => CriReply::RemoveContainer(rt.remove_container(r).await?.into_inner()),
        CriCall::ListContainers(r) => CriReply::ListContainers(rt.list_containers(r).await?.into_inner()),
        CriCall::ContainerStatus(r) => CriReply::ContainerStatus(rt.container_status(r).await?.into_inner()),
        CriCall::UpdateContainerResources(r) => CriReply::UpdateContainerResources(rt.update_container_resources(r).await?.into_inner()),
        CriCall::ExecSync(r) => CriReply::ExecSync(rt.exec_sync(r).await?.into_inner()),
        CriCall::ContainerStats(r) => CriReply::ContainerStats(rt.container_stats(r).await?.into_inner()),
        CriCall::ListContainerStats(r) => CriReply::ListContainerStats(rt.list_container_stats(r).await?.into_inner()),
        CriCall::PodSandboxStats(r) => CriReply::PodSandboxStats(rt.pod_sandbox_stats(r).await?.into_inner()),
        CriCall::ListPodSandboxStats(r) => CriReply::ListPodSandboxStats(rt.list_pod_sandbox_stats(r).await?.into_inner()),
        CriCall::ListImages(r) => CriReply::ListImages(img.list_images(r).await?.into_inner()),
        CriCall::ImageStatus(r) => CriReply::ImageStatus(img.image_status(r).await?.into_inner()),
        CriCall::PullImage(r) => CriReply::PullImage(img.pull_image(r).await?.into_inner()),
        CriCall::RemoveImage(r) => CriReply::RemoveImage(img.remove_image(r).await?.into_inner()),
        CriCall::ImageFsInfo(r) => CriReply::ImageFsInfo(img.image_fs_info(r).await?.into_inner()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn builds_a_container_config_field_by_field() {
        let c = call(
            "CreateContainer",
            &json!({"pod_sandbox_id": "p", "config": {
                "metadata": {"name": "main"},
                "linux": {"resources": {"cpu_shares": "1024", "oom_score_adj": -997,
                    "hugepage_limits": [{"page_size": "2MB", "limit": "0"}], "unified": {"memory.oom.group": "1"}}},
                "mounts": [{"container_path": "/c", "host_path": "/h", "propagation": "PROPAGATION_HOST_TO_CONTAINER", "selinux_relabel": true}]}}),
        )
        .unwrap();
        let CriCall::CreateContainer(r) = c else { panic!("{c:?}") };
        let cfg = r.config.unwrap();
        let res = cfg.linux.unwrap().resources.unwrap();
        assert_eq!((res.cpu_shares, res.oom_score_adj, res.hugepage_limits[0].page_size.as_str()), (1024, -997, "2MB"));
        assert_eq!(res.unified["memory.oom.group"], "1");
        assert_eq!(cfg.mounts[0].propagation, 1);
        assert!(cfg.mounts[0].selinux_relabel);
    }

    #[test]
    fn refuses_a_field_the_message_has_not() {
        let e = call("StopContainer", &json!({"container_id": "c", "timeout": 5, "grace": 1})).unwrap_err();
        assert!(e.0.contains("StopContainer: field(s) this CRI message has not: grace"), "{e}");
        let e = call("RunPodSandbox", &json!({"config": {"linux": {"security_context": {"namespace_options": {"pid": "SIDEWAYS"}}}}})).unwrap_err();
        assert!(e.0.contains("RunPodSandbox.config.linux.security_context.namespace_options.pid: unknown value \"SIDEWAYS\""), "{e}");
    }
}
