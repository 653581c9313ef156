//! What the daemon keeps on disk about each sandbox and container (meta.json, written
//! atomically). The CRI configs are kept as their protobuf encoding so nothing is lost.
//!
//! Where a record lives follows its phase: while its resources are being made it is an intent
//! in the object's run directory (a tmpfs on real hosts; written without forcing it to disk,
//! as only a daemon restart must find it: a reboot takes what it names, and start-up removes a
//! data directory that holds no record); once Ready it is written to the data directory,
//! durably, and the intent goes. So making a pod adds one record file to the data disk per
//! object instead of replacing one.
use crate::runtime::state::CgroupSpec;
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const META_FILE: &str = "meta.json";

/// Write `rec` where its phase keeps it (see the module's doc): `data` and `run` are the
/// object's data and run directories, both made already.
pub fn save<T: Serialize>(data: &Path, run: &Path, phase: Phase, rec: &T) -> std::io::Result<()> {
    match phase {
        Phase::Creating => crate::util::atomic::write_json_volatile(&run.join(META_FILE), rec),
        Phase::Ready => {
            crate::util::atomic::write_json(&data.join(META_FILE), rec)?;
            match std::fs::remove_file(run.join(META_FILE)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            }
        }
    }
}

/// The intents left in the run directories under `dir` (see [`save`]), by object ID.
pub fn load_intents<T: serde::de::DeserializeOwned>(dir: &Path) -> std::collections::HashMap<String, T> {
    let Ok(rd) = std::fs::read_dir(dir) else { return Default::default() };
    rd.flatten()
        .filter_map(|e| {
            let rec = crate::util::atomic::read_json::<T>(&e.path().join(META_FILE)).ok()?;
            Some((e.file_name().to_string_lossy().to_string(), rec))
        })
        .collect()
}

/// Creating: resources may be half made; a record found in this phase at start-up is
/// torn down. Ready: complete.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Creating,
    Ready,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub id: String,
    /// The reserved name: name_namespace_uid_attempt.
    pub name: String,
    pub phase: Phase,
    /// base64 of the protobuf PodSandboxConfig.
    pub config: String,
    pub created_at: i64,
    pub stopped: bool,
    pub host_network: bool,
    pub host_ipc: bool,
    pub host_pid: bool,
    pub shared_pid: bool,
    /// The pod's namespace files; None where the pod uses the host's.
    pub net_ns: Option<PathBuf>,
    pub ipc_ns: Option<PathBuf>,
    pub uts_ns: Option<PathBuf>,
    pub pid_ns: Option<PathBuf>,
    pub init_pid: i32,
    pub init_start_time: u64,
    pub cgroup: CgroupSpec,
    /// Whether Berth created the pod cgroup (and so removes it).
    pub owns_cgroup: bool,
    pub ip: String,
    #[serde(default)]
    pub additional_ips: Vec<String>,
    pub runtime_handler: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub phase: Phase,
    /// base64 of the protobuf ContainerConfig.
    pub config: String,
    pub created_at: i64,
    /// The image ID (config digest) the rootfs is built from.
    pub image_id: String,
    /// The image as the user named it.
    pub image_name: String,
    /// A reference with the repo digest when known, else the ID.
    pub image_ref: String,
    pub log_path: Option<PathBuf>,
    pub cgroup: CgroupSpec,
    pub stop_signal: i32,
    pub rootfs_mounted: bool,
    /// Why the last StartContainer failed, if it did.
    pub start_error: Option<String>,
    /// Images mounted as image volumes (kept from removal while the container exists).
    #[serde(default)]
    pub volume_images: Vec<String>,
}

pub fn encode(msg: &impl prost::Message) -> String {
    base64::engine::general_purpose::STANDARD.encode(msg.encode_to_vec())
}

pub fn decode<M: prost::Message + Default>(s: &str) -> M {
    base64::engine::general_purpose::STANDARD.decode(s).ok().and_then(|b| M::decode(&b[..]).ok()).unwrap_or_default()
}

/// A new random 64-hex-digit ID.
pub fn new_id() -> String {
    let mut buf = [0u8; 32];
    // SAFETY: getrandom fills the buffer we own.
    let n = unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n != buf.len() as isize {
        let t = crate::runtime::state::now_ns() as u128 ^ (std::process::id() as u128) << 64;
        buf[..16].copy_from_slice(&t.to_le_bytes());
    }
    hex::encode(buf)
}
