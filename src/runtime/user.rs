//! Who a container runs as: the image's USER and the CRI security context resolved against
//! the rootfs's /etc/passwd and /etc/group, the way Docker and containerd resolve them.
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub username: Option<String>,
    pub home: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("no user {0:?} in the image's /etc/passwd")]
    UnknownUser(String),
    #[error("no group {0:?} in the image's /etc/group")]
    UnknownGroup(String),
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn read_passwd(rootfs: &Path) -> Vec<PasswdEntry> {
    let text = read_in_root(rootfs, "/etc/passwd");
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 6 {
                return None;
            }
            Some(PasswdEntry { name: f[0].to_string(), uid: f[2].parse().ok()?, gid: f[3].parse().ok()?, home: f[5].to_string() })
        })
        .collect()
}

fn read_group(rootfs: &Path) -> Vec<GroupEntry> {
    let text = read_in_root(rootfs, "/etc/group");
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            Some(GroupEntry { name: f[0].to_string(), gid: f[2].parse().ok()?, members: f[3].split(',').filter(|m| !m.is_empty()).map(String::from).collect() })
        })
        .collect()
}

fn read_in_root(rootfs: &Path, path: &str) -> String {
    match crate::runtime::process::mounts::secure_join(rootfs, Path::new(path)) {
        Ok(p) => std::fs::read_to_string(p).unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// The user spec: "", "uid", "name", "uid:gid", "name:group" (image USER or run_as_username),
/// with an explicit gid and supplemental groups from the CRI on top.
pub fn resolve(rootfs: &Path, user: &str, group_override: Option<u32>, supplemental: &[u32], groups_from_image: bool) -> Result<ResolvedUser, UserError> {
    let passwd = read_passwd(rootfs);
    let (user_part, group_part) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let entry = match user_part.parse::<u32>() {
        Ok(uid) => passwd.iter().find(|p| p.uid == uid),
        Err(_) => Some(passwd.iter().find(|p| p.name == user_part).ok_or_else(|| UserError::UnknownUser(user_part.to_string()))?),
    };
    let uid = match user_part.parse::<u32>() {
        Ok(uid) => uid,
        Err(_) => entry.map(|e| e.uid).unwrap_or(0),
    };
    let groups = read_group(rootfs);
    let mut gid = entry.map(|e| e.gid).unwrap_or(0);
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups.iter().find(|e| e.name == g).map(|e| e.gid).ok_or_else(|| UserError::UnknownGroup(g.to_string()))?,
        };
    }
    if let Some(g) = group_override {
        gid = g;
    }
    // The primary group first, then (unless the Strict policy says otherwise) the groups the
    // image's /etc/group lists the user in, then the ones asked for.
    let mut additional = vec![gid];
    if let Some(e) = entry.filter(|_| groups_from_image) {
        for g in groups.iter().filter(|g| g.members.contains(&e.name)) {
            if !additional.contains(&g.gid) {
                additional.push(g.gid);
            }
        }
    }
    for g in supplemental {
        if !additional.contains(g) {
            additional.push(*g);
        }
    }
    Ok(ResolvedUser { uid, gid, additional_gids: additional, username: entry.map(|e| e.name.clone()), home: entry.map(|e| e.home.clone()) })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001::/home/web:/bin/sh\n").unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nwebg:x:1001:\nextra:x:2000:web,other\n").unwrap();
        d
    }

    #[test]
    fn resolves_names_numbers_and_groups() {
        let d = rootfs();
        let u = resolve(d.path(), "web", None, &[], true).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids.clone()), (1000, 1001, vec![1001, 2000]));
        assert_eq!(u.home.as_deref(), Some("/home/web"));
        // SupplementalGroupsPolicy Strict: not the image's memberships.
        let u = resolve(d.path(), "web", None, &[42], false).unwrap();
        assert_eq!(u.additional_gids, vec![1001, 42]);
        let u = resolve(d.path(), "1234:5678", None, &[42], true).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1234, 5678, vec![5678, 42]));
        let u = resolve(d.path(), "", Some(7), &[], true).unwrap();
        assert_eq!((u.uid, u.gid), (0, 7));
        let u = resolve(d.path(), "root:webg", None, &[], true).unwrap();
        assert_eq!(u.gid, 1001);
        assert_eq!(resolve(d.path(), "nobody", None, &[], true), Err(UserError::UnknownUser("nobody".into())));
    }
}
