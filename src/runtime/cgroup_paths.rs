//! What the cgroups of a pod, of its sandbox helper and of its containers are called, under
//! each cgroup driver. Pure naming: nothing here touches the filesystem or systemd.
//!
//! cgroupfs: plain paths, the kubelet's layout: `/kubepods/burstable/pod<uid>` for the pod,
//! `<pod>/<id>` for each container and for the sandbox helper (the pod cgroup itself holds
//! no process: cgroup v2 allows processes only in leaves once controllers are delegated).
//!
//! systemd: slices and scopes, written "parent.slice:prefix:name" as runc and libcgroups read
//! them. The pod is a slice (`kubepods-burstable-pod<uid>.slice`, its parents implied by the
//! dashes), each container and the sandbox helper a scope `berth-<id>.scope` in it.
use super::state::CgroupSpec;

/// The prefix of the scopes Berth starts (`berth-<id>.scope`).
pub const SCOPE_PREFIX: &str = "berth";

/// The QoS classes as the kubelet names their cgroups.
pub const QOS_GUARANTEED: &str = "Guaranteed";
pub const QOS_BURSTABLE: &str = "Burstable";
pub const QOS_BESTEFFORT: &str = "BestEffort";

/// A cgroup parent that does not fit the driver (the kubelet and the runtime disagree).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error(
        "cgroup parent {0:?} is a systemd slice but the runtime uses the cgroupfs driver: set cgroup_driver = \"systemd\" in the runtime's config, or run the kubelet with cgroupDriver: cgroupfs"
    )]
    SliceUnderCgroupfs(String),
    #[error(
        "cgroup parent {0:?} is not a systemd slice (name.slice) but the runtime uses the systemd driver: run the kubelet with cgroupDriver: systemd, or set cgroup_driver = \"cgroupfs\" in the runtime's config"
    )]
    NotASlice(String),
    #[error("cgroup parent {0:?}: {1}")]
    Invalid(String, &'static str),
}

/// The pod cgroup for a sandbox and whether Berth made it (and so removes it): the kubelet's
/// `parent` when it gave one, else one of Berth's own under `default_parent` (a handler's
/// cgroup_parent, or `/berth` / `berth.slice`).
pub fn pod_cgroup(systemd: bool, parent: &str, default_parent: Option<&str>, sandbox_id: &str) -> Result<(CgroupSpec, bool), PathError> {
    if systemd {
        if !parent.is_empty() {
            return Ok((slice(check_slice(parent)?)?, false));
        }
        let base = check_slice(default_parent.unwrap_or("berth.slice"))?;
        let stem = base.trim_end_matches(".slice");
        let name = if stem == "-" { format!("berth-pod{sandbox_id}.slice") } else { format!("{stem}-pod{sandbox_id}.slice") };
        Ok((slice(&name)?, true))
    } else {
        if !parent.is_empty() {
            return Ok((CgroupSpec { path: check_path(parent)?.to_string(), systemd: false }, false));
        }
        let base = check_path(default_parent.unwrap_or("/berth"))?;
        Ok((CgroupSpec { path: format!("{}/{sandbox_id}", base.trim_end_matches('/')), systemd: false }, true))
    }
}

/// The cgroup of a process of the pod (a container, or the sandbox helper) named `id`.
pub fn member(pod: &CgroupSpec, id: &str) -> CgroupSpec {
    if pod.systemd {
        CgroupSpec { path: format!("{}:{SCOPE_PREFIX}:{id}", slice_name(pod)), systemd: true }
    } else {
        CgroupSpec { path: format!("{}/{id}", pod.path.trim_end_matches('/')), systemd: false }
    }
}

/// The slice unit a systemd pod cgroup is (the name part of "parent:prefix:name.slice", or a
/// bare slice name as older records have it).
pub fn slice_name(pod: &CgroupSpec) -> &str {
    let last = pod.path.rsplit(':').next().unwrap_or_default();
    if last.ends_with(".slice") {
        last
    } else {
        // A scope-shaped record: its parent slice.
        pod.path.split(':').next().unwrap_or("berth.slice")
    }
}

/// A systemd slice as a cgroup spec: "parent.slice:berth:name.slice", its parent being the
/// name without the last dash-separated part (`-.slice`, the root, for a name without one).
pub fn slice(name: &str) -> Result<CgroupSpec, PathError> {
    let name = check_slice(name)?;
    let stem = name.trim_end_matches(".slice");
    let parent = match stem.rsplit_once('-') {
        Some((p, _)) => format!("{p}.slice"),
        None => "-.slice".to_string(),
    };
    Ok(CgroupSpec { path: format!("{parent}:{SCOPE_PREFIX}:{name}"), systemd: true })
}

fn check_slice(name: &str) -> Result<&str, PathError> {
    let invalid = |why| PathError::Invalid(name.to_string(), why);
    if name.starts_with('/') || name.contains('/') {
        return Err(PathError::NotASlice(name.to_string()));
    }
    let Some(stem) = name.strip_suffix(".slice") else { return Err(PathError::NotASlice(name.to_string())) };
    if stem == "-" {
        return Ok(name);
    }
    if stem.is_empty() || stem.split('-').any(str::is_empty) {
        return Err(invalid("a slice name has no empty parts between dashes"));
    }
    if !stem.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '\\')) {
        return Err(invalid("a slice name is made of letters, digits, '_', '.', '\\' and '-'"));
    }
    Ok(name)
}

fn check_path(path: &str) -> Result<&str, PathError> {
    if path.ends_with(".slice") && !path.contains('/') {
        return Err(PathError::SliceUnderCgroupfs(path.to_string()));
    }
    if !path.starts_with('/') {
        return Err(PathError::Invalid(path.to_string(), "a cgroupfs path is absolute"));
    }
    if path.split('/').any(|p| p == ".." || p == ".") {
        return Err(PathError::Invalid(path.to_string(), "no '.' or '..' parts"));
    }
    Ok(path)
}

/// The kubelet's escaping of one cgroup name part as a systemd unit name part: dashes would
/// mean nesting, so they become underscores.
pub fn escape_part(part: &str) -> String {
    part.replace('-', "_")
}

/// The pod cgroup parent `berth node` gives its sandboxes, as the kubelet names it: under the
/// node's cgroup root (`/kubepods` by default), per QoS class.
///   cgroupfs: /kubepods/pod<uid>, /kubepods/burstable/pod<uid>, /kubepods/besteffort/pod<uid>
///   systemd:  kubepods-pod<uid>.slice, kubepods-burstable-pod<uid>.slice, ... (dashes in the
///             UID and the root written as underscores)
pub fn node_pod_parent(systemd: bool, root: &str, qos: &str, uid: &str) -> Result<String, PathError> {
    let class = match qos {
        QOS_GUARANTEED => None,
        QOS_BURSTABLE => Some("burstable"),
        _ => Some("besteffort"),
    };
    let pod = format!("pod{uid}");
    if systemd {
        let mut parts = root_parts(root)?;
        parts.extend(class.map(str::to_string));
        parts.push(escape_part(&pod));
        let name = format!("{}.slice", parts.join("-"));
        check_slice(&name)?;
        Ok(name)
    } else {
        let root = check_path(root)?.trim_end_matches('/');
        Ok(match class {
            None => format!("{root}/{pod}"),
            Some(c) => format!("{root}/{c}/{pod}"),
        })
    }
}

/// The node's cgroup root as the escaped parts of a slice name: "/kubepods" → ["kubepods"].
fn root_parts(root: &str) -> Result<Vec<String>, PathError> {
    if !root.starts_with('/') {
        return Err(PathError::Invalid(root.to_string(), "the node's cgroup root is a path like /kubepods"));
    }
    let parts: Vec<String> = root.split('/').filter(|p| !p.is_empty()).map(escape_part).collect();
    if parts.is_empty() {
        return Err(PathError::Invalid(root.to_string(), "under the systemd driver the node's cgroup root cannot be / (use /kubepods)"));
    }
    if parts.iter().any(|p| p == "." || p == "..") {
        return Err(PathError::Invalid(root.to_string(), "no '.' or '..' parts"));
    }
    Ok(parts)
}

/// The pod cgroup of a pod of `berth node` as a spec (what its limits are applied to).
pub fn node_pod_cgroup(systemd: bool, root: &str, qos: &str, uid: &str) -> Result<CgroupSpec, PathError> {
    let parent = node_pod_parent(systemd, root, qos, uid)?;
    if systemd {
        slice(&parent)
    } else {
        Ok(CgroupSpec { path: parent, systemd: false })
    }
}

/// Check the node's cgroup root for the driver at start-up.
pub fn check_node_root(systemd: bool, root: &str) -> Result<(), PathError> {
    node_pod_parent(systemd, root, QOS_BURSTABLE, "0").map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(path: &str, systemd: bool) -> CgroupSpec {
        CgroupSpec { path: path.into(), systemd }
    }

    #[test]
    fn cgroupfs_pods_are_directories_and_members_leaves_in_them() {
        let (pod, owned) = pod_cgroup(false, "/kubepods/burstable/pod12", None, "sb1").unwrap();
        assert_eq!((pod.path.as_str(), owned), ("/kubepods/burstable/pod12", false));
        assert_eq!(member(&pod, "sb1").path, "/kubepods/burstable/pod12/sb1");
        assert_eq!(member(&pod, "c1").path, "/kubepods/burstable/pod12/c1");
        let (pod, owned) = pod_cgroup(false, "", None, "sb1").unwrap();
        assert_eq!((pod.path.as_str(), owned), ("/berth/sb1", true));
        assert_eq!(member(&pod, "c2").path, "/berth/sb1/c2");
        assert_eq!(pod_cgroup(false, "", Some("/sandboxed/"), "sb1").unwrap().0.path, "/sandboxed/sb1");
        assert!(matches!(pod_cgroup(false, "kubepods-burstable-pod12.slice", None, "x"), Err(PathError::SliceUnderCgroupfs(_))));
        assert!(pod_cgroup(false, "/a/../b", None, "x").is_err());
        assert!(pod_cgroup(false, "relative", None, "x").is_err());
    }

    #[test]
    fn systemd_pods_are_slices_and_members_scopes_in_them() {
        let (pod, owned) = pod_cgroup(true, "kubepods-burstable-pod12_34.slice", None, "sb1").unwrap();
        assert_eq!((pod.path.as_str(), owned), ("kubepods-burstable.slice:berth:kubepods-burstable-pod12_34.slice", false));
        assert_eq!(slice_name(&pod), "kubepods-burstable-pod12_34.slice");
        let c = member(&pod, "c1");
        assert_eq!(c, spec("kubepods-burstable-pod12_34.slice:berth:c1", true));
        assert_eq!(crate::runtime::cgroups::systemd_path(&c.path), "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice/berth-c1.scope");
        assert_eq!(crate::runtime::cgroups::systemd_path(&pod.path), "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod12_34.slice");
        let (pod, owned) = pod_cgroup(true, "", None, "ab12").unwrap();
        assert_eq!((pod.path.as_str(), owned), ("berth.slice:berth:berth-podab12.slice", true));
        assert_eq!(member(&pod, "c9").path, "berth-podab12.slice:berth:c9");
        assert_eq!(pod_cgroup(true, "", Some("sandboxed.slice"), "ab").unwrap().0.path, "sandboxed.slice:berth:sandboxed-podab.slice");
        assert_eq!(slice("kubepods.slice").unwrap().path, "-.slice:berth:kubepods.slice");
        assert!(matches!(pod_cgroup(true, "/kubepods/burstable/pod12", None, "x"), Err(PathError::NotASlice(_))));
        assert!(matches!(pod_cgroup(true, "a--b.slice", None, "x"), Err(PathError::Invalid(..))));
        // A record of an older shape (a bare slice, or a scope) still names its slice.
        assert_eq!(slice_name(&spec("kubepods-pod1.slice", true)), "kubepods-pod1.slice");
        assert_eq!(slice_name(&spec("berth.slice:berth-pod:x", true)), "berth.slice");
    }

    #[test]
    fn node_pod_parents_follow_the_kubelet_for_both_drivers() {
        let uid = "4f6e-11aa";
        assert_eq!(node_pod_parent(false, "/kubepods", QOS_GUARANTEED, uid).unwrap(), "/kubepods/pod4f6e-11aa");
        assert_eq!(node_pod_parent(false, "/kubepods/", QOS_BURSTABLE, uid).unwrap(), "/kubepods/burstable/pod4f6e-11aa");
        assert_eq!(node_pod_parent(false, "/kubepods", QOS_BESTEFFORT, uid).unwrap(), "/kubepods/besteffort/pod4f6e-11aa");
        assert_eq!(node_pod_parent(true, "/kubepods", QOS_GUARANTEED, uid).unwrap(), "kubepods-pod4f6e_11aa.slice");
        assert_eq!(node_pod_parent(true, "/kubepods", QOS_BURSTABLE, uid).unwrap(), "kubepods-burstable-pod4f6e_11aa.slice");
        assert_eq!(node_pod_parent(true, "/kubepods", QOS_BESTEFFORT, uid).unwrap(), "kubepods-besteffort-pod4f6e_11aa.slice");
        assert_eq!(node_pod_parent(true, "/berth-it-kubepods-7-1", QOS_BURSTABLE, "u").unwrap(), "berth_it_kubepods_7_1-burstable-podu.slice");
        assert_eq!(node_pod_parent(true, "/a/b", QOS_GUARANTEED, "u").unwrap(), "a-b-podu.slice");
        let pod = node_pod_cgroup(true, "/kubepods", QOS_BURSTABLE, uid).unwrap();
        assert_eq!(crate::runtime::cgroups::systemd_path(&pod.path), "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod4f6e_11aa.slice");
        // The runtime takes what the node gives, whatever the driver.
        let (rt_pod, _) = pod_cgroup(true, &node_pod_parent(true, "/kubepods", QOS_BURSTABLE, uid).unwrap(), None, "sb").unwrap();
        assert_eq!(rt_pod, pod);
        assert!(check_node_root(true, "/").is_err());
        assert!(check_node_root(true, "kubepods").is_err());
        assert!(check_node_root(false, "/kubepods").is_ok());
        assert!(check_node_root(false, "kubepods.slice").is_err());
    }
}
