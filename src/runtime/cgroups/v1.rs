//! One cgroup on a v1 host through cgroupfs: its directory in each mounted hierarchy, the
//! runtime spec's limits written to its files, processes moved in, and removal.
//!
//! Berth's own rather than libcgroups' v1 manager: making one of those resolves the mount
//! point of each of the twelve controllers it knows by reading the mount table again, all of
//! it for each controller the host does not mount, and a node has five mounts per pod. With a
//! hundred pods starting that was over a quarter of the node's CPU. The hierarchies here are
//! read from the mount table once: where they are mounted does not change while Berth runs.
//! What is written, and in which order, is what runc and libcgroups write.
use oci_spec::runtime::{LinuxBlockIo, LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources};
use std::collections::BTreeMap;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

/// The controllers a cgroup is made in (those the host mounts), as libcgroups' v1 manager.
pub const CONTROLLERS: &[&str] = &["cpu", "cpuacct", "cpuset", "devices", "hugetlb", "memory", "pids", "perf_event", "blkio", "net_prio", "net_cls", "freezer"];

/// The device rules every container gets after its own (runc's defaults): mknod of any
/// device, and read/write of the console, ptys, the pty multiplexer and tun, plus the
/// devices every container has (/dev/null, zero, full, tty, urandom, random).
const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 5:1 rwm",
    "c 136:* rwm",
    "c 5:2 rwm",
    "c 10:200 rwm",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 5:0 rwm",
    "c 1:9 rwm",
    "c 1:8 rwm",
];

/// How often and how long apart removing a cgroup directory is tried (the kernel refuses
/// while a killed process has not left it yet).
const RMDIR_TRIES: u32 = 5;
const RMDIR_PAUSE: Duration = Duration::from_millis(20);

static MOUNTS: OnceLock<BTreeMap<&'static str, PathBuf>> = OnceLock::new();

/// Where each controller's hierarchy is mounted, from the mount table, read once.
pub fn mount_points() -> &'static BTreeMap<&'static str, PathBuf> {
    MOUNTS.get_or_init(|| mount_points_in(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()))
}

/// Take the mount points another process read (names it does not know are left out); a no-op
/// once they are known.
pub fn adopt_mount_points(mounts: &BTreeMap<String, PathBuf>) {
    let known = mounts.iter().filter_map(|(c, p)| CONTROLLERS.iter().find(|k| **k == c.as_str()).map(|k| (*k, p.clone()))).collect();
    let _ = MOUNTS.set(known);
}

/// The first mount of each known controller's hierarchy in a mountinfo text (fstype
/// "cgroup", the controllers among its super options).
pub(super) fn mount_points_in(mountinfo: &str) -> BTreeMap<&'static str, PathBuf> {
    let mut out = BTreeMap::new();
    for m in crate::util::mountinfo::parse(mountinfo).into_iter().filter(|m| m.fstype == "cgroup") {
        for c in m.super_options.split(',').filter_map(|o| CONTROLLERS.iter().find(|c| **c == o)) {
            out.entry(*c).or_insert_with(|| m.mount_point.clone());
        }
    }
    out
}

/// A cgroup's directory in each hierarchy the host mounts.
pub struct V1Cgroup {
    dirs: BTreeMap<&'static str, PathBuf>,
}

impl V1Cgroup {
    /// The cgroup at `path` (relative to each hierarchy's root; a leading `/` is fine).
    pub fn new(path: &str) -> Result<V1Cgroup, String> {
        Self::under(mount_points(), path)
    }

    fn under(mounts: &BTreeMap<&'static str, PathBuf>, path: &str) -> Result<V1Cgroup, String> {
        let rel = Path::new(path.trim_start_matches('/'));
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(format!("cgroup path {path:?} must not contain \"..\" or \".\""));
        }
        Ok(V1Cgroup { dirs: mounts.iter().map(|(c, m)| (*c, m.join(rel))).collect() })
    }

    /// The directory in the controller's hierarchy, or why a limit for it cannot be set.
    fn dir(&self, controller: &str) -> Result<&Path, String> {
        self.dirs
            .get(controller)
            .map(PathBuf::as_path)
            .ok_or_else(|| format!("cgroup {controller} is required to fulfill the request, but is not supported by this system"))
    }

    /// Move a process into the cgroup in every hierarchy, making its directories first (an
    /// empty cpuset on the way gets its parent's CPUs and memory nodes: it would take no task).
    pub fn add_task(&self, pid: i32) -> Result<(), String> {
        for (controller, dir) in &self.dirs {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
            if *controller == "cpuset" {
                fill_empty_cpuset(dir)?;
            }
            write(&dir.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    /// Write the limits. The device rules are always written (the container's, then the
    /// defaults every container gets); a limit for a controller the host lacks is an error.
    pub fn apply(&self, r: &LinuxResources) -> Result<(), String> {
        if let Some(cpu) = r.cpu() {
            self.cpu(cpu)?;
        }
        if let Some(memory) = r.memory() {
            apply_memory(self.dir("memory")?, memory)?;
        }
        if let Some(pids) = r.pids() {
            let limit = if pids.limit() > 0 { pids.limit().to_string() } else { "max".to_string() };
            write(&self.dir("pids")?.join("pids.max"), &limit)?;
        }
        if let Some(limits) = r.hugepage_limits().as_ref().filter(|l| !l.is_empty()) {
            let dir = self.dir("hugetlb")?;
            for l in limits {
                write(&dir.join(format!("hugetlb.{}.limit_in_bytes", l.page_size())), &l.limit().to_string())?;
            }
        }
        if let Some(blkio) = r.block_io() {
            apply_blkio(self.dir("blkio")?, blkio)?;
        }
        if let Some(network) = r.network() {
            if let Some(id) = network.class_id() {
                write(&self.dir("net_cls")?.join("net_cls.classid"), &id.to_string())?;
            }
            for p in network.priorities().iter().flatten() {
                write(&self.dir("net_prio")?.join("net_prio.ifpriomap"), &format!("{} {}", p.name(), p.priority()))?;
            }
        }
        let devices = self.dir("devices")?;
        for rule in r.devices().iter().flatten() {
            write_device_rule(devices, rule)?;
        }
        for rule in DEFAULT_DEVICE_RULES {
            write(&devices.join("devices.allow"), rule)?;
        }
        Ok(())
    }

    /// cpu.* (shares, CFS period and quota, burst, realtime, idle) and cpuset.*; zero shares,
    /// period or quota mean "leave as is", as in runc.
    fn cpu(&self, cpu: &LinuxCpu) -> Result<(), String> {
        let wants_cpu = cpu.shares().is_some()
            || cpu.period().is_some()
            || cpu.quota().is_some()
            || cpu.burst().is_some()
            || cpu.realtime_period().is_some()
            || cpu.realtime_runtime().is_some()
            || cpu.idle().is_some();
        if wants_cpu {
            let dir = self.dir("cpu")?;
            if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
                write(&dir.join("cpu.shares"), &shares.to_string())?;
            }
            if let Some(period) = cpu.period().filter(|p| *p != 0) {
                write(&dir.join("cpu.cfs_period_us"), &period.to_string())?;
            }
            if let Some(quota) = cpu.quota().filter(|q| *q != 0) {
                write(&dir.join("cpu.cfs_quota_us"), &quota.to_string())?;
            }
            if let Some(burst) = cpu.burst() {
                write(&dir.join("cpu.cfs_burst_us"), &burst.to_string())?;
            }
            // The period first: a runtime is checked against the period in place.
            if let Some(period) = cpu.realtime_period().filter(|p| *p != 0) {
                write(&dir.join("cpu.rt_period_us"), &period.to_string())?;
            }
            if let Some(runtime) = cpu.realtime_runtime().filter(|r| *r != 0) {
                write(&dir.join("cpu.rt_runtime_us"), &runtime.to_string())?;
            }
            if let Some(idle) = cpu.idle() {
                write(&dir.join("cpu.idle"), &idle.to_string())?;
            }
        }
        if cpu.cpus().is_some() || cpu.mems().is_some() {
            let dir = self.dir("cpuset")?;
            if let Some(cpus) = cpu.cpus() {
                write(&dir.join("cpuset.cpus"), cpus)?;
            }
            if let Some(mems) = cpu.mems() {
                write(&dir.join("cpuset.mems"), mems)?;
            }
        }
        Ok(())
    }

    /// Remove the cgroup's directory in every hierarchy (its processes already gone); one
    /// that does not exist is fine.
    pub fn remove(&self) -> Result<(), String> {
        for dir in self.dirs.values() {
            let mut tries = 0;
            loop {
                match std::fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == ErrorKind::NotFound => break,
                    Err(e) if tries + 1 >= RMDIR_TRIES => return Err(format!("removing {}: {e}", dir.display())),
                    Err(_) => {
                        tries += 1;
                        std::thread::sleep(RMDIR_PAUSE * tries);
                    }
                }
            }
        }
        Ok(())
    }
}

/// memory.limit_in_bytes and memory.memsw.limit_in_bytes (memory and swap together) in the
/// order the kernel accepts (memsw must not fall below the limit: when it grows or goes
/// unlimited it is written first), then the soft limit, swappiness, kernel limits and the
/// OOM killer switch. A limit or swap of 0 leaves the value in place.
fn apply_memory(dir: &Path, m: &LinuxMemory) -> Result<(), String> {
    let limit = m.limit().unwrap_or(0);
    let swap = match (m.limit(), m.swap()) {
        (_, Some(swap)) => swap,
        (Some(-1), None) => -1,
        _ => 0,
    };
    let current: i64 = read_number(&dir.join("memory.limit_in_bytes")).unwrap_or(0);
    let swap_first = swap == -1 || (swap > 0 && current < swap);
    if swap_first {
        write_swap(dir, swap, limit)?;
        write_limit(dir, limit)?;
    } else {
        write_limit(dir, limit)?;
        write_swap(dir, swap, limit)?;
    }
    if let Some(reservation) = m.reservation().filter(|r| *r != 0) {
        write(&dir.join("memory.soft_limit_in_bytes"), &reservation.to_string())?;
    }
    if let Some(swappiness) = m.swappiness() {
        if swappiness > 100 {
            return Err(format!("invalid memory swappiness {swappiness}: it must be between 0 and 100"));
        }
        write(&dir.join("memory.swappiness"), &swappiness.to_string())?;
    }
    if let Some(kernel) = m.kernel() {
        write(&dir.join("memory.kmem.limit_in_bytes"), &kernel.to_string())?;
    }
    if let Some(tcp) = m.kernel_tcp() {
        write(&dir.join("memory.kmem.tcp.limit_in_bytes"), &tcp.to_string())?;
    }
    if let Some(disable) = m.disable_oom_killer() {
        write(&dir.join("memory.oom_control"), if disable { "1" } else { "0" })?;
    }
    Ok(())
}

fn write_limit(dir: &Path, limit: i64) -> Result<(), String> {
    if limit == 0 {
        return Ok(());
    }
    let file = dir.join("memory.limit_in_bytes");
    match write_existing(&file, &limit.to_string()) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
            let usage = read_number(&dir.join("memory.usage_in_bytes")).unwrap_or(0);
            let peak = read_number(&dir.join("memory.max_usage_in_bytes")).unwrap_or(0);
            Err(format!("unable to set memory limit to {limit} (current usage: {usage}, peak usage: {peak})"))
        }
        Err(e) => Err(format!("writing {limit} to {}: {e}", file.display())),
    }
}

/// memsw; a kernel without swap accounting has no such file, which is fine when the swap
/// asked for is none beyond the memory limit (or unlimited), an error otherwise.
fn write_swap(dir: &Path, swap: i64, limit: i64) -> Result<(), String> {
    if swap == 0 {
        return Ok(());
    }
    let file = dir.join("memory.memsw.limit_in_bytes");
    match write_existing(&file, &swap.to_string()) {
        Err(e) if e.kind() == ErrorKind::NotFound && (swap == -1 || swap == limit) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(format!("a swap limit of {swap} was asked for, but this kernel has no swap accounting ({}: {e})", file.display()))
        }
        r => r.map_err(|e| format!("writing {swap} to {}: {e}", file.display())),
    }
}

/// blkio weights (blkio.weight, or BFQ's file where CFQ's is missing) and throttles.
fn apply_blkio(dir: &Path, b: &LinuxBlockIo) -> Result<(), String> {
    if let Some(weight) = b.weight().filter(|w| *w != 0) {
        let file = if dir.join("blkio.weight").exists() { "blkio.weight" } else { "blkio.bfq.weight" };
        write(&dir.join(file), &weight.to_string())?;
    }
    if let Some(weight) = b.leaf_weight().filter(|w| *w != 0) {
        write(&dir.join("blkio.leaf_weight"), &weight.to_string())?;
    }
    for d in b.weight_device().iter().flatten() {
        if let Some(w) = d.weight() {
            write(&dir.join("blkio.weight_device"), &format!("{}:{} {w}", d.major(), d.minor()))?;
        }
        if let Some(w) = d.leaf_weight() {
            write(&dir.join("blkio.leaf_weight_device"), &format!("{}:{} {w}", d.major(), d.minor()))?;
        }
    }
    for (file, devices) in [
        ("blkio.throttle.read_bps_device", b.throttle_read_bps_device()),
        ("blkio.throttle.write_bps_device", b.throttle_write_bps_device()),
        ("blkio.throttle.read_iops_device", b.throttle_read_iops_device()),
        ("blkio.throttle.write_iops_device", b.throttle_write_iops_device()),
    ] {
        for d in devices.iter().flatten() {
            write(&dir.join(file), &format!("{}:{} {}", d.major(), d.minor(), d.rate()))?;
        }
    }
    Ok(())
}

/// A device rule to devices.allow or devices.deny: `type major:minor access`, `*` for any.
fn write_device_rule(dir: &Path, rule: &LinuxDeviceCgroup) -> Result<(), String> {
    let typ = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::B => "b",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::P => return Err("device rules cannot name FIFOs (type p)".to_string()),
    };
    let num = |n: Option<i64>| n.map_or_else(|| "*".to_string(), |n| n.to_string());
    let line = format!("{typ} {}:{} {}", num(rule.major()), num(rule.minor()), rule.access().as_deref().unwrap_or("rwm"));
    write(&dir.join(if rule.allow() { "devices.allow" } else { "devices.deny" }), &line)
}

/// A cpuset with no CPUs or memory nodes takes no task: give it its parent's.
pub fn fill_empty_cpuset(dir: &Path) -> Result<(), String> {
    let Some(parent) = dir.parent() else { return Ok(()) };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = std::fs::read_to_string(dir.join(file)).map_err(|e| format!("reading {}: {e}", dir.join(file).display()))?;
        if own.trim().is_empty() {
            if parent.join(file).exists() {
                fill_empty_cpuset(parent)?;
            }
            let from_parent = std::fs::read_to_string(parent.join(file)).map_err(|e| format!("reading {}: {e}", parent.join(file).display()))?;
            write(&dir.join(file), from_parent.trim())?;
        }
    }
    Ok(())
}

/// Write a cgroup file that exists (the kernel makes them; one missing is the host lacking a
/// feature, not something to create).
fn write(file: &Path, value: &str) -> Result<(), String> {
    write_existing(file, value).map_err(|e| format!("writing {value:?} to {}: {e}", file.display()))
}

fn write_existing(file: &Path, value: &str) -> std::io::Result<()> {
    use std::io::Write;
    std::fs::OpenOptions::new().write(true).truncate(true).open(file)?.write_all(value.as_bytes())
}

fn read_number(file: &Path) -> Option<i64> {
    std::fs::read_to_string(file).ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxDeviceCgroupBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder};

    const MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
32 25 0:28 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
33 25 0:29 / /sys/fs/cgroup/systemd rw,nosuid - cgroup cgroup rw,xattr,name=systemd
34 25 0:30 / /proc rw - proc proc rw
35 25 0:31 / /sys/fs/cgroup/devices rw,nosuid - cgroup cgroup rw,devices";

    /// A fake hierarchy root per controller under a temp dir, with the files a cgroup has.
    fn fake(controllers: &[&'static str]) -> (tempfile::TempDir, BTreeMap<&'static str, PathBuf>) {
        let root = tempfile::tempdir().unwrap();
        let mounts: BTreeMap<_, _> = controllers.iter().map(|c| (*c, root.path().join(c))).collect();
        (root, mounts)
    }

    /// The kernel makes a cgroup's files; the fake gets them made, empty.
    fn files(dir: &Path, names: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        for n in names {
            std::fs::write(dir.join(n), "").unwrap();
        }
    }

    fn read(dir: &Path, file: &str) -> String {
        std::fs::read_to_string(dir.join(file)).unwrap_or_default()
    }

    #[test]
    fn mount_points_come_from_cgroup_mounts_of_known_controllers() {
        let got = mount_points_in(MOUNTINFO);
        let want: BTreeMap<&str, PathBuf> = [
            ("cpu", "/sys/fs/cgroup/cpu,cpuacct"),
            ("cpuacct", "/sys/fs/cgroup/cpu,cpuacct"),
            ("devices", "/sys/fs/cgroup/devices"),
            ("memory", "/sys/fs/cgroup/memory"),
        ]
        .into_iter()
        .map(|(c, p)| (c, PathBuf::from(p)))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn paths_that_climb_out_are_refused() {
        let (_root, mounts) = fake(&["memory"]);
        assert!(V1Cgroup::under(&mounts, "/berth/../../etc").is_err());
        assert!(V1Cgroup::under(&mounts, "../x").is_err());
        let cg = V1Cgroup::under(&mounts, "/berth/pod1/c1").unwrap();
        assert_eq!(cg.dirs["memory"], mounts["memory"].join("berth/pod1/c1"));
    }

    #[test]
    fn limits_go_to_their_files_and_every_container_gets_the_default_devices() {
        let (_root, mounts) = fake(&["cpu", "cpuset", "memory", "pids", "devices"]);
        let cg = V1Cgroup::under(&mounts, "/berth/c1").unwrap();
        files(&cg.dirs["cpu"], &["cpu.shares", "cpu.cfs_period_us", "cpu.cfs_quota_us"]);
        files(&cg.dirs["cpuset"], &["cpuset.cpus"]);
        files(&cg.dirs["memory"], &[]);
        files(&cg.dirs["pids"], &["pids.max"]);
        files(&cg.dirs["devices"], &["devices.allow", "devices.deny"]);
        std::fs::write(cg.dirs["memory"].join("memory.limit_in_bytes"), "9223372036854771712").unwrap();
        std::fs::write(cg.dirs["memory"].join("memory.memsw.limit_in_bytes"), "9223372036854771712").unwrap();
        let res = LinuxResourcesBuilder::default()
            .cpu(LinuxCpuBuilder::default().shares(512u64).quota(50_000i64).period(100_000u64).cpus("0").build().unwrap())
            .memory(LinuxMemoryBuilder::default().limit(64i64 << 20).swap(64i64 << 20).build().unwrap())
            .pids(LinuxPidsBuilder::default().limit(0).build().unwrap())
            .devices(vec![LinuxDeviceCgroupBuilder::default().allow(false).access("rwm").build().unwrap()])
            .build()
            .unwrap();
        cg.apply(&res).unwrap();
        let cpu = &cg.dirs["cpu"];
        assert_eq!((read(cpu, "cpu.shares"), read(cpu, "cpu.cfs_period_us"), read(cpu, "cpu.cfs_quota_us")), ("512".into(), "100000".into(), "50000".into()));
        assert_eq!(read(&cg.dirs["cpuset"], "cpuset.cpus"), "0");
        let mem = &cg.dirs["memory"];
        assert_eq!((read(mem, "memory.limit_in_bytes"), read(mem, "memory.memsw.limit_in_bytes")), ("67108864".into(), "67108864".into()));
        assert_eq!(read(&cg.dirs["pids"], "pids.max"), "max");
        // Plain files keep only the last write: the deny-all went first, the defaults after.
        assert_eq!(read(&cg.dirs["devices"], "devices.deny"), "a *:* rwm");
        assert_eq!(read(&cg.dirs["devices"], "devices.allow"), "c 1:8 rwm");
    }

    #[test]
    fn a_limit_for_a_controller_the_host_lacks_is_an_error_and_a_missing_memsw_is_fine_without_extra_swap() {
        let (_root, mounts) = fake(&["memory", "devices"]);
        let cg = V1Cgroup::under(&mounts, "c").unwrap();
        files(&cg.dirs["memory"], &["memory.limit_in_bytes"]);
        files(&cg.dirs["devices"], &["devices.allow", "devices.deny"]);
        let pids = LinuxResourcesBuilder::default().pids(LinuxPidsBuilder::default().limit(10).build().unwrap()).build().unwrap();
        let e = cg.apply(&pids).unwrap_err();
        assert!(e.contains("cgroup pids is required"), "{e}");
        // No memsw file (no swap accounting): swap equal to the limit is no extra swap.
        let same = LinuxResourcesBuilder::default().memory(LinuxMemoryBuilder::default().limit(1i64 << 20).swap(1i64 << 20).build().unwrap()).build().unwrap();
        cg.apply(&same).unwrap();
        assert_eq!(read(&cg.dirs["memory"], "memory.limit_in_bytes"), "1048576");
        let more = LinuxResourcesBuilder::default().memory(LinuxMemoryBuilder::default().limit(1i64 << 20).swap(2i64 << 20).build().unwrap()).build().unwrap();
        assert!(cg.apply(&more).unwrap_err().contains("no swap accounting"));
    }

    #[test]
    fn adding_a_task_makes_the_directories_and_fills_empty_cpusets() {
        let (_root, mounts) = fake(&["cpuset", "memory"]);
        std::fs::create_dir_all(&mounts["cpuset"]).unwrap();
        std::fs::write(mounts["cpuset"].join("cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(mounts["cpuset"].join("cpuset.mems"), "0\n").unwrap();
        let cg = V1Cgroup::under(&mounts, "/berth/pod").unwrap();
        // A real cpuset directory comes with empty files; the fake one gets them made.
        for d in [mounts["cpuset"].join("berth"), cg.dirs["cpuset"].clone()] {
            files(&d, &["cpuset.cpus", "cpuset.mems", "cgroup.procs"]);
        }
        files(&cg.dirs["memory"], &["cgroup.procs"]);
        cg.add_task(42).unwrap();
        assert_eq!(read(&cg.dirs["cpuset"], "cpuset.cpus"), "0-1");
        assert_eq!(read(&mounts["cpuset"].join("berth"), "cpuset.mems"), "0");
        assert_eq!(read(&cg.dirs["memory"], "cgroup.procs"), "42");
        // Removal of a directory that is gone (or never was) is fine.
        std::fs::remove_dir_all(&mounts["memory"]).unwrap();
        std::fs::remove_file(cg.dirs["cpuset"].join("cpuset.cpus")).unwrap();
        std::fs::remove_file(cg.dirs["cpuset"].join("cpuset.mems")).unwrap();
        std::fs::remove_file(cg.dirs["cpuset"].join("cgroup.procs")).unwrap();
        cg.remove().unwrap();
        assert!(!cg.dirs["cpuset"].exists());
    }
}
