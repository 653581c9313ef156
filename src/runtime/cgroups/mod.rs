//! Container and pod cgroups through libcgroups (v1, v2 and the systemd driver), plus the
//! few things libcgroups does not answer: the OOM-kill counter and the host path of a cgroup.
use crate::runtime::state::CgroupSpec;
use libcgroups::common::{create_cgroup_manager, get_cgroup_setup, AnyCgroupManager, CgroupConfig, CgroupManager, CgroupSetup, ControllerOpt};
use oci_spec::runtime::LinuxResources;
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::OnceLock;

mod v1;

pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// How long `remove` waits for killed processes to leave the cgroup.
const EMPTY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
#[error("cgroup {path}: {message}")]
pub struct CgroupError {
    pub path: String,
    pub message: String,
}

/// Which cgroup hierarchy the host uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    V1,
    V2,
}

/// Which hierarchy the host mounts, as libcgroups sees it (a statfs of the cgroup root); read
/// once, as it does not change while Berth runs.
pub fn host_mode() -> CgroupMode {
    static MODE: OnceLock<CgroupMode> = OnceLock::new();
    *MODE.get_or_init(|| match get_cgroup_setup() {
        Ok(CgroupSetup::Unified) => CgroupMode::V2,
        _ => CgroupMode::V1,
    })
}

pub struct Cgroup {
    spec: CgroupSpec,
    manager: Manager,
}

/// The manager of one cgroup: on v1 (either driver: systemd has no say in v1 controllers'
/// files) Berth's own cgroupfs one ([`v1`]), elsewhere libcgroups'.
enum Manager {
    V1(v1::V1Cgroup),
    Any(AnyCgroupManager),
}

impl Manager {
    fn add_task(&self, pid: i32) -> Result<(), String> {
        let pid = nix029::unistd::Pid::from_raw(pid);
        match self {
            Manager::V1(m) => m.add_task(pid.as_raw()),
            Manager::Any(m) => m.add_task(pid).map_err(|e| e.to_string()),
        }
    }

    fn apply(&self, opt: &ControllerOpt) -> Result<(), String> {
        match self {
            Manager::V1(m) => m.apply(opt.resources),
            Manager::Any(m) => m.apply(opt).map_err(|e| e.to_string()),
        }
    }

    fn remove(&self) -> Result<(), String> {
        match self {
            Manager::V1(m) => m.remove(),
            Manager::Any(m) => m.remove().map_err(|e| e.to_string()),
        }
    }
}

impl Cgroup {
    /// A handle on the cgroup; creating it on disk happens with the first `add`.
    pub fn open(spec: &CgroupSpec) -> Result<Cgroup, CgroupError> {
        if host_mode() == CgroupMode::V1 {
            let path = if spec.systemd { systemd_path(&spec.path) } else { spec.path.clone() };
            return Ok(Cgroup { spec: spec.clone(), manager: Manager::V1(v1::V1Cgroup::new(&path).map_err(|e| err(spec, e))?) });
        }
        let config = CgroupConfig {
            cgroup_path: PathBuf::from(&spec.path),
            systemd_cgroup: spec.systemd,
            container_name: spec.path.rsplit(':').next().unwrap_or_default().to_string(),
        };
        let manager = create_cgroup_manager(config).map_err(|e| err(spec, e))?;
        Ok(Cgroup { spec: spec.clone(), manager: Manager::Any(manager) })
    }

    pub fn spec(&self) -> &CgroupSpec {
        &self.spec
    }

    /// Move a process into the cgroup, creating it in every controller first.
    pub fn add(&self, pid: i32) -> Result<(), CgroupError> {
        self.manager.add_task(pid).map_err(|e| err(&self.spec, e))
    }

    /// Create the cgroup (cgroupfs paths) without moving a process into it: its directory
    /// in every v1 hierarchy, or in the unified tree with the controllers enabled on the way.
    pub fn create(&self) -> Result<(), CgroupError> {
        if self.spec.systemd {
            return Err(err(&self.spec, "creating a systemd unit without a process is not supported"));
        }
        let rel = self.spec.path.trim_start_matches('/');
        match host_mode() {
            CgroupMode::V1 => {
                for h in v1_hierarchies() {
                    std::fs::create_dir_all(h.join(rel)).map_err(|e| err(&self.spec, e))?;
                }
            }
            CgroupMode::V2 => {
                let mut dir = PathBuf::from(CGROUP_ROOT);
                for part in rel.split('/').filter(|p| !p.is_empty()) {
                    if let Ok(available) = std::fs::read_to_string(dir.join("cgroup.controllers")) {
                        let enable: Vec<String> = available.split_whitespace().map(|c| format!("+{c}")).collect();
                        let _ = std::fs::write(dir.join("cgroup.subtree_control"), enable.join(" "));
                    }
                    dir = dir.join(part);
                    if !dir.is_dir() {
                        std::fs::create_dir(&dir).map_err(|e| err(&self.spec, e))?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Apply limits. Limits for a controller the host lacks are dropped when they only say
    /// "none" (the hugepage limits of 0 a kubelet sends for every page size), as containerd
    /// does; a real request for it fails.
    pub fn apply(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let resources = applicable(resources, &host_controllers()).map_err(|message| CgroupError { path: self.spec.path.clone(), message })?;
        let opt = ControllerOpt { resources: &resources, disable_oom_killer: false, oom_score_adj: None, freezer_state: None };
        self.manager.apply(&opt).map_err(|e| err(&self.spec, e))?;
        if !self.spec.systemd && host_mode() == CgroupMode::V2 {
            self.no_swap_when_swap_is_the_limit(&resources)?;
        }
        Ok(())
    }

    /// The runtime spec's memory.swap is memory and swap together (v1's memsw), so v2's
    /// memory.swap.max is swap − limit. libcgroups writes that only when it is not 0, which
    /// leaves "max" (unlimited swap) exactly when the caller asked for none: swap equal to the
    /// limit, as the kubelet sends on a node without swap. The systemd driver is right already
    /// (MemorySwapMax=0). A kernel without swap accounting has no such file: nothing to limit.
    fn no_swap_when_swap_is_the_limit(&self, resources: &LinuxResources) -> Result<(), CgroupError> {
        let Some(m) = resources.memory() else { return Ok(()) };
        match (m.limit(), m.swap()) {
            (Some(limit), Some(swap)) if limit > 0 && swap == limit => {
                let file = fs_path(&self.spec, "").join("memory.swap.max");
                match std::fs::write(&file, "0") {
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    r => r.map_err(|e| err(&self.spec, format!("writing {}: {e}", file.display()))),
                }
            }
            _ => Ok(()),
        }
    }

    /// Every process in the cgroup; empty when it does not exist.
    pub fn pids(&self) -> Vec<i32> {
        pids_in(&self.spec)
    }

    /// Kill what is left in it, wait until it is empty, and remove it; a cgroup that is
    /// already gone is fine. Blocks (a killed process leaves its cgroup only once it has
    /// exited, which takes longer than libcgroups' own short retries on a loaded host).
    pub fn remove(&self) -> Result<(), CgroupError> {
        let deadline = std::time::Instant::now() + EMPTY_WAIT;
        loop {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            if std::time::Instant::now() > deadline {
                return Err(err(&self.spec, format!("processes {pids:?} did not exit within {EMPTY_WAIT:?} of SIGKILL")));
            }
            for pid in pids {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.manager.remove().map_err(|e| err(&self.spec, e))
    }

    /// How many times the kernel's OOM killer has killed a process in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        oom_kills(&self.spec)
    }
}

/// The directories of the v1 hierarchies that hold a controller Berth manages: the ones
/// `Cgroup::create` makes a cgroup in and `remove` clears again; not name=systemd, not the
/// hybrid unified tree. Each once, also where controllers share one (cpu,cpuacct).
fn v1_hierarchies() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = v1::mount_points().values().cloned().collect();
    out.sort();
    out.dedup();
    out
}

/// Where each v1 controller's hierarchy is mounted (empty on v2), for a process this one
/// starts ([`adopt_v1_mounts`]).
pub fn v1_mounts() -> std::collections::BTreeMap<String, PathBuf> {
    match host_mode() {
        CgroupMode::V1 => v1::mount_points().iter().map(|(c, p)| (c.to_string(), p.clone())).collect(),
        CgroupMode::V2 => Default::default(),
    }
}

/// Take the v1 hierarchies from the process that started this one ([`v1_mounts`]) rather than
/// from the mount table; nothing when `mounts` is empty or they are known already.
pub fn adopt_v1_mounts(mounts: &std::collections::BTreeMap<String, PathBuf>) {
    if !mounts.is_empty() {
        v1::adopt_mount_points(mounts);
    }
}

/// A cgroup that a single-threaded process moves itself into: the `tasks` file of each v1
/// hierarchy, opened in advance.
///
/// Why: moving another process (a pid written to cgroup.procs) takes the kernel's global
/// threadgroup lock for writing, which waits for an RCU grace period: 10-20 ms per container
/// start and per exec on a v1 host, the largest part of StartContainer. A thread that writes
/// "0" to `tasks` moves only itself, and the kernel (6.1+) skips that lock for it; for a
/// process with one thread that is the whole process, and its later threads and children
/// inherit the cgroup. Only cgroup v1 with the cgroupfs driver has such a file; elsewhere
/// [`self_join`] answers None and the caller moves the process with [`Cgroup::add`].
pub struct SelfJoin {
    tasks: Vec<std::fs::File>,
}

impl SelfJoin {
    /// Move the calling thread into the cgroup in every hierarchy. Call it only from a
    /// process with one thread.
    pub fn join(&self) -> std::io::Result<()> {
        use std::io::Write;
        for mut f in &self.tasks {
            f.write_all(b"0")?;
        }
        Ok(())
    }
}

/// Prepare a [`SelfJoin`] into `spec` (v1 + cgroupfs only, else None). `create` makes the
/// cgroup first (a new container's); without it a cgroup that is gone is an error (an exec
/// into a container whose cgroup was removed must not make it again). Cpusets without CPUs
/// or memory nodes take no tasks, so empty ones on the way are filled from their parent, as
/// libcgroups does when it adds a process.
pub fn self_join(spec: &CgroupSpec, create: bool) -> Result<Option<SelfJoin>, CgroupError> {
    if spec.systemd || host_mode() != CgroupMode::V1 {
        return Ok(None);
    }
    let rel = spec.path.trim_start_matches('/');
    if create {
        make_joinable(spec)?;
    }
    let mut tasks = Vec::new();
    for h in v1_hierarchies() {
        let dir = h.join(rel);
        let file =
            std::fs::OpenOptions::new().write(true).open(dir.join("tasks")).map_err(|e| err(spec, format!("opening {}: {e}", dir.join("tasks").display())))?;
        tasks.push(file);
    }
    Ok(Some(SelfJoin { tasks }))
}

/// Make a v1 cgroupfs cgroup that a process can join by itself ([`self_join`]): its directory
/// in every hierarchy, and CPUs and memory nodes for empty cpusets on the way to it. Returns
/// false (nothing done) where [`self_join`] does not apply.
pub fn make_joinable(spec: &CgroupSpec) -> Result<bool, CgroupError> {
    if spec.systemd || host_mode() != CgroupMode::V1 {
        return Ok(false);
    }
    let rel = spec.path.trim_start_matches('/');
    for h in v1_hierarchies() {
        let dir = h.join(rel);
        std::fs::create_dir_all(&dir).map_err(|e| err(spec, e))?;
        if h.join("cpuset.cpus").exists() {
            v1::fill_empty_cpuset(&dir).map_err(|e| err(spec, e))?;
        }
    }
    Ok(true)
}

fn err(spec: &CgroupSpec, e: impl std::fmt::Display) -> CgroupError {
    CgroupError { path: spec.path.clone(), message: e.to_string() }
}

/// The directory of a cgroup for one controller (v1) or in the unified tree (v2).
pub fn fs_path(spec: &CgroupSpec, controller: &str) -> PathBuf {
    let rel = if spec.systemd { systemd_path(&spec.path) } else { spec.path.trim_start_matches('/').to_string() };
    match host_mode() {
        CgroupMode::V1 => PathBuf::from(CGROUP_ROOT).join(controller).join(rel),
        CgroupMode::V2 => PathBuf::from(CGROUP_ROOT).join(rel),
    }
}

/// The cgroup's directory in every mounted v1 hierarchy, or its one v2 directory.
pub fn all_fs_paths(spec: &CgroupSpec) -> Vec<PathBuf> {
    match host_mode() {
        CgroupMode::V2 => vec![fs_path(spec, "")],
        CgroupMode::V1 => {
            let rel = spec.path.trim_start_matches('/');
            std::fs::read_dir(CGROUP_ROOT).map(|rd| rd.flatten().map(|e| e.path().join(rel)).filter(|p| p.is_dir()).collect()).unwrap_or_default()
        }
    }
}

/// Every process in a cgroup and its descendants, from its cgroup.procs files (no systemd
/// call); empty when it does not exist.
pub fn pids_in(spec: &CgroupSpec) -> Vec<i32> {
    fn walk(dir: &std::path::Path, out: &mut Vec<i32>) {
        if let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
        if let Ok(rd) = std::fs::read_dir(dir) {
            for e in rd.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    walk(&e.path(), out);
                }
            }
        }
    }
    let mut out = Vec::new();
    // One v1 hierarchy knows every process: pids when mounted, else memory.
    let dir = match host_mode() {
        CgroupMode::V2 => fs_path(spec, ""),
        CgroupMode::V1 => ["pids", "memory", "cpu,cpuacct", "cpuacct"].iter().map(|c| fs_path(spec, c)).find(|d| d.is_dir()).unwrap_or_default(),
    };
    if !dir.as_os_str().is_empty() {
        walk(&dir, &mut out);
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Expand a systemd cgroup path "parent.slice:prefix:name" to its place in the tree:
/// "a-b-c.slice" lives under a.slice/a-b.slice/a-b-c.slice and the unit is prefix-name.scope.
pub fn systemd_path(path: &str) -> String {
    let mut parts = path.splitn(3, ':');
    let slice = parts.next().unwrap_or("");
    let prefix = parts.next().unwrap_or("");
    let name = parts.next().unwrap_or("");
    let mut out = Vec::new();
    if !slice.is_empty() && slice != "-.slice" {
        let stem = slice.trim_end_matches(".slice");
        let mut acc = String::new();
        for piece in stem.split('-') {
            if !acc.is_empty() {
                acc.push('-');
            }
            acc.push_str(piece);
            out.push(format!("{acc}.slice"));
        }
    }
    if !name.is_empty() {
        if name.ends_with(".slice") {
            out.push(name.to_string());
        } else if prefix.is_empty() {
            out.push(format!("{name}.scope"));
        } else {
            out.push(format!("{prefix}-{name}.scope"));
        }
    }
    out.join("/")
}

/// The controllers the host offers: v1, those with a mounted hierarchy (the mount points
/// [`v1`] read once); v2, those the root lists in cgroup.controllers. Read once.
pub fn host_controllers() -> BTreeSet<String> {
    static CONTROLLERS: OnceLock<BTreeSet<String>> = OnceLock::new();
    CONTROLLERS
        .get_or_init(|| match host_mode() {
            CgroupMode::V2 => std::fs::read_to_string(PathBuf::from(CGROUP_ROOT).join("cgroup.controllers"))
                .map(|t| t.split_whitespace().map(str::to_string).collect())
                .unwrap_or_default(),
            CgroupMode::V1 => v1::mount_points().keys().map(|c| c.to_string()).collect(),
        })
        .clone()
}

/// The controllers Berth sets limits in or reads from that the host lacks.
pub fn missing_controllers() -> Vec<&'static str> {
    let have = host_controllers();
    let wanted: &[&'static str] = match host_mode() {
        CgroupMode::V1 => &["cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "devices", "freezer", "hugetlb"],
        CgroupMode::V2 => &["cpu", "cpuset", "memory", "pids", "io", "hugetlb"],
    };
    wanted.iter().copied().filter(|c| !have.contains(*c)).collect()
}

/// `resources` without what the host's controllers cannot take, or why it cannot be honoured.
fn applicable<'a>(resources: &'a LinuxResources, controllers: &BTreeSet<String>) -> Result<Cow<'a, LinuxResources>, String> {
    let Some(limits) = resources.hugepage_limits().as_ref().filter(|l| !l.is_empty()) else { return Ok(Cow::Borrowed(resources)) };
    if controllers.contains("hugetlb") {
        return Ok(Cow::Borrowed(resources));
    }
    if let Some(asked) = limits.iter().find(|l| l.limit() > 0) {
        return Err(format!(
            "hugepages of size {} requested (limit {} bytes), but this host has no hugetlb cgroup controller",
            asked.page_size(),
            asked.limit()
        ));
    }
    let mut without = resources.clone();
    without.set_hugepage_limits(None);
    Ok(Cow::Owned(without))
}

pub fn oom_kills(spec: &CgroupSpec) -> u64 {
    let (file, dir) = match host_mode() {
        CgroupMode::V1 => ("memory.oom_control", fs_path(spec, "memory")),
        CgroupMode::V2 => ("memory.events", fs_path(spec, "memory")),
    };
    parse_oom_kills(&std::fs::read_to_string(dir.join(file)).unwrap_or_default())
}

/// The "oom_kill N" line of memory.events (v2) or memory.oom_control (v1).
pub fn parse_oom_kills(text: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix("oom_kill ").and_then(|v| v.trim().parse().ok())).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn systemd_paths_expand_like_systemd() {
        assert_eq!(
            systemd_path("kubepods-besteffort-pod12.slice:cri-berth:abc"),
            "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-berth-abc.scope"
        );
        assert_eq!(systemd_path("system.slice::x"), "system.slice/x.scope");
    }

    #[test]
    fn v1_controllers_come_from_mounted_hierarchies() {
        let mountinfo = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
34 25 0:30 / /proc rw - proc proc rw";
        let got: Vec<String> = v1::mount_points_in(mountinfo).into_keys().map(String::from).collect();
        assert_eq!(got, ["cpu", "cpuacct", "memory"]);
    }

    #[test]
    fn zero_hugepage_limits_are_dropped_without_hugetlb_and_a_request_fails() {
        use oci_spec::runtime::{LinuxHugepageLimitBuilder, LinuxResourcesBuilder};
        let limit = |size: &str, bytes: i64| LinuxHugepageLimitBuilder::default().page_size(size).limit(bytes).build().unwrap();
        let zeros = LinuxResourcesBuilder::default().hugepage_limits(vec![limit("2MB", 0), limit("1GB", 0)]).build().unwrap();
        let without: BTreeSet<String> = ["cpu", "memory"].iter().map(|s| s.to_string()).collect();
        let with: BTreeSet<String> = ["cpu", "memory", "hugetlb"].iter().map(|s| s.to_string()).collect();
        assert!(applicable(&zeros, &without).unwrap().hugepage_limits().is_none());
        assert_eq!(applicable(&zeros, &with).unwrap().hugepage_limits().as_ref().map(Vec::len), Some(2));
        let asked = LinuxResourcesBuilder::default().hugepage_limits(vec![limit("2MB", 4 << 20)]).build().unwrap();
        let e = applicable(&asked, &without).unwrap_err();
        assert!(e.contains("2MB") && e.contains("no hugetlb"), "{e}");
    }

    #[test]
    fn oom_kills_from_memory_events_and_oom_control() {
        assert_eq!(parse_oom_kills("low 0\nhigh 0\nmax 17\noom 2\noom_kill 1\noom_group_kill 0\n"), 1);
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n"), 3);
        assert_eq!(parse_oom_kills(""), 0);
    }
}
