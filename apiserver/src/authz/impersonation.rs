//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the `Impersonate-User`,
//! `Impersonate-Group`, `Impersonate-Uid` and `Impersonate-Extra-<key>` headers make a request
//! run as another user, when the caller may `impersonate` each part: users (or, for a service
//! account's name, serviceaccounts in its namespace), groups, uids and userextras/<key>, as
//! upstream checks them. A refused part is a 403 naming it (`users "bob" is forbidden: User
//! "alice" cannot impersonate resource "users" in API group "" at the cluster scope`).
//! The impersonated user gets `system:authenticated` (or, as `system:anonymous`,
//! `system:unauthenticated`) unless it names one of them itself, and a service account without
//! groups gets its fixed ones.

use std::collections::BTreeMap;

use axum::http::HeaderMap;

use super::attributes::{Attributes, ResourceTarget};
use crate::api::Api;
use crate::status::ApiError;
use crate::User;

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA: &str = "impersonate-extra-";

/// Whether a request asks to impersonate.
pub fn requested(headers: &HeaderMap) -> bool {
    headers.keys().any(|k| k.as_str().starts_with("impersonate-"))
}

/// The user the request runs as, when `caller` may impersonate everything the headers name.
pub async fn impersonate(api: &Api, caller: &User, headers: &HeaderMap) -> Result<User, ApiError> {
    let values = |name: &str| -> Vec<String> { headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).map(String::from).collect() };
    let name = values(USER).into_iter().next().unwrap_or_default();
    let groups = values(GROUP);
    let uid = values(UID).into_iter().next().unwrap_or_default();
    let mut extra: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in headers {
        if let Some(key) = k.as_str().strip_prefix(EXTRA) {
            let key = percent_decode(key).to_lowercase();
            if let Ok(v) = v.to_str() {
                extra.entry(key).or_default().push(v.to_string());
            }
        }
    }
    if name.is_empty() {
        let mut what = vec![];
        if !groups.is_empty() {
            what.push(format!("groups={}", berth_names::go_quote_list(&groups)));
        }
        if !extra.is_empty() {
            what.push("extra".to_string());
        }
        if !uid.is_empty() {
            what.push(format!("uid={uid}"));
        }
        return Err(ApiError::bad_request(format!("requested {} without impersonating a user", what.join(" "))));
    }
    let check = |verb_target: ResourceTarget| Attributes::resource(caller, "impersonate", verb_target);
    let mut checks = vec![];
    let service_account = name.strip_prefix("system:serviceaccount:").and_then(|rest| rest.split_once(':')).filter(|(ns, n)| !ns.is_empty() && !n.is_empty());
    checks.push(match service_account {
        Some((ns, n)) => check(ResourceTarget { resource: "serviceaccounts".into(), namespace: ns.into(), name: n.into(), ..Default::default() }),
        None => check(ResourceTarget { resource: "users".into(), name: name.clone(), ..Default::default() }),
    });
    for g in &groups {
        checks.push(check(ResourceTarget { resource: "groups".into(), name: g.clone(), ..Default::default() }));
    }
    for (k, vs) in &extra {
        for v in vs {
            checks.push(check(ResourceTarget {
                group: "authentication.k8s.io".into(),
                resource: "userextras".into(),
                subresource: k.clone(),
                name: v.clone(),
                ..Default::default()
            }));
        }
    }
    if !uid.is_empty() {
        checks.push(check(ResourceTarget { group: "authentication.k8s.io".into(), resource: "uids".into(), name: uid.clone(), ..Default::default() }));
    }
    for a in &checks {
        super::require(api, a).await?;
    }
    let mut groups = groups;
    if groups.is_empty() {
        if let Some((ns, _)) = service_account {
            groups = vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}")];
        }
    }
    if name == "system:anonymous" {
        if !groups.iter().any(|g| g == "system:unauthenticated") {
            groups.push("system:unauthenticated".into());
        }
    } else if !groups.iter().any(|g| g == "system:authenticated" || g == "system:unauthenticated") {
        groups.push("system:authenticated".into());
    }
    Ok(User { name, uid, groups, extra })
}

/// Undoes the percent-encoding of an extra's key in a header name.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            if let Some(Ok(b)) = s.get(i + 1..i + 3).map(|hex| u8::from_str_radix(hex, 16)) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_keys_are_percent_decoded() {
        assert_eq!(percent_decode("example.com%2fscopes"), "example.com/scopes");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
        assert_eq!(percent_decode("end%2"), "end%2");
    }
}
