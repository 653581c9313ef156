//! Service account tokens: who issues them (the TokenRequest subresource is `token_request`) and
//! the authenticator that accepts them (and the legacy tokens of
//! `kubernetes.io/service-account-token` Secrets). A token names objects by name and uid; it is
//! good while its signature, issuer, audience and time window hold and every object it names
//! still exists with that uid, as upstream checks them on each request.

use std::sync::Arc;

use serde_json::Value;

use super::jwt::{Claims, Ref, SigningKey};
use crate::api::Api;
use crate::User;

/// The issuer of legacy Secret tokens.
pub const LEGACY_ISSUER: &str = "kubernetes/serviceaccount";
/// The issuer when `--service-account-issuer` is not given.
pub const DEFAULT_ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// Clock skew allowed on exp/nbf/iat, and how long an object being deleted still counts.
const LEEWAY: i64 = 60;

/// Who issues and accepts service account tokens.
#[derive(Debug, Clone)]
pub struct Issuer {
    /// The issuer of new tokens.
    pub issuer: String,
    /// The issuers whose tokens are accepted (the first is `issuer`).
    pub accepted: Vec<String>,
    /// What the API accepts tokens for (default: the issuer).
    pub audiences: Vec<String>,
    pub key: Arc<SigningKey>,
}

/// The user name of a service account.
pub fn user_name(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// The user a service account's tokens authenticate as (`uid` empty when unknown).
pub(crate) fn user_of(namespace: &str, name: &str, uid: &str) -> User {
    User {
        name: user_name(namespace, name),
        uid: uid.to_string(),
        groups: vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{namespace}")],
        ..Default::default()
    }
}

pub(super) fn uid(obj: &Value) -> &str {
    obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or("")
}

impl Issuer {
    /// The user of service account token `token` for `audiences` (and the audiences it is good
    /// for); Ok(None) when the token is not one of ours.
    pub async fn authenticate(&self, api: &Arc<Api>, token: &str, audiences: &[String]) -> Result<Option<(User, Vec<String>)>, String> {
        let Ok(unverified) = super::jwt::unverified_claims(token) else {
            return Ok(None);
        };
        if !self.accepted.contains(&unverified.iss) && unverified.iss != LEGACY_ISSUER {
            return Ok(None);
        }
        let claims = self.key.verify(token).map_err(|e| e.to_string())?;
        if claims.iss == LEGACY_ISSUER {
            let user = legacy_user(api, &claims, token).await?;
            let auds = super::intersect(&self.audiences, audiences);
            if auds.is_empty() {
                return Err(audience_error(&self.audiences, audiences));
            }
            return Ok(Some((user, auds)));
        }
        check_time(&claims, jiff::Timestamp::now().as_second())?;
        let auds = super::intersect(&claims.aud, audiences);
        if auds.is_empty() {
            return Err(audience_error(&claims.aud, audiences));
        }
        let private = claims.kubernetes.as_ref().ok_or("service account token has no kubernetes.io claim")?;
        let ns = private.namespace.as_str();
        let sa = service_account(api, ns, &private.serviceaccount).await?;
        let mut user = user_of(ns, &private.serviceaccount.name, uid(&sa));
        if let Some(secret) = &private.secret {
            bound_alive(api, "secret", Some(ns), secret).await?;
        }
        if let Some(pod) = &private.pod {
            bound_alive(api, "pod", Some(ns), pod).await?;
            user.extra.insert("authentication.kubernetes.io/pod-name".into(), vec![pod.name.clone()]);
            user.extra.insert("authentication.kubernetes.io/pod-uid".into(), vec![pod.uid.clone()]);
        } else if let Some(node) = &private.node {
            // a token bound to the node itself lives with it; a pod's node is only reported
            bound_alive(api, "node", None, node).await?;
        }
        if let Some(node) = &private.node {
            user.extra.insert("authentication.kubernetes.io/node-name".into(), vec![node.name.clone()]);
            if !node.uid.is_empty() {
                user.extra.insert("authentication.kubernetes.io/node-uid".into(), vec![node.uid.clone()]);
            }
        }
        if let Some(jti) = claims.jti.as_deref().filter(|j| !j.is_empty()) {
            user.extra.insert("authentication.kubernetes.io/credential-id".into(), vec![format!("JTI={jti}")]);
        }
        Ok(Some((user, auds)))
    }
}

/// upstream's message for a token meant for others (lists as Go's %q prints them).
fn audience_error(token: &[String], target: &[String]) -> String {
    let go = |v: &[String]| format!("[{}]", v.iter().map(|a| serde_json::Value::String(a.clone()).to_string()).collect::<Vec<_>>().join(" "));
    format!("token audiences {} is invalid for the target audiences {}", go(token), go(target))
}

/// exp, nbf and iat against `now` (seconds), with upstream's one minute of leeway.
pub fn check_time(claims: &Claims, now: i64) -> Result<(), String> {
    if claims.exp.is_some_and(|exp| now - LEEWAY > exp) {
        return Err("service account token has expired".into());
    }
    if claims.nbf.is_some_and(|nbf| now + LEEWAY < nbf) {
        return Err("service account token is not valid yet".into());
    }
    if claims.iat.is_some_and(|iat| now + LEEWAY < iat) {
        return Err("service account token issued in the future".into());
    }
    Ok(())
}

/// The service account `r` in `ns` when it exists with the claimed uid (and is not deleted for
/// longer than the leeway), with upstream's messages.
async fn service_account(api: &Arc<Api>, ns: &str, r: &Ref) -> Result<Value, String> {
    let sa = super::lookup(api, "serviceaccounts", Some(ns), &r.name).await?.ok_or_else(|| format!("serviceaccounts \"{}\" not found", r.name))?;
    if deleted_before_leeway(&sa) {
        return Err(format!("service account {ns}/{} has been deleted", r.name));
    }
    if uid(&sa) != r.uid {
        return Err(format!("service account UID ({}) does not match claim ({})", uid(&sa), r.uid));
    }
    Ok(sa)
}

/// Whether `obj` has been marked for deletion for longer than the leeway.
fn deleted_before_leeway(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp")
        .and_then(Value::as_str)
        .and_then(|at| at.parse::<jiff::Timestamp>().ok())
        .is_some_and(|at| at.as_second() < jiff::Timestamp::now().as_second() - LEEWAY)
}

/// Checks the object a token is bound to (`kind`: pod, secret or node): it exists, is not being
/// deleted (beyond the leeway) and has the claimed uid.
async fn bound_alive(api: &Arc<Api>, kind: &str, ns: Option<&str>, r: &Ref) -> Result<(), String> {
    const INVALIDATED: &str = "service account token has been invalidated";
    let obj = super::lookup(api, &format!("{kind}s"), ns, &r.name).await?.ok_or(INVALIDATED)?;
    if deleted_before_leeway(&obj) {
        return Err(INVALIDATED.into());
    }
    if uid(&obj) != r.uid {
        return Err(format!("{kind} UID ({}) does not match service account {kind} ref claim ({})", uid(&obj), r.uid));
    }
    Ok(())
}

/// The user of a legacy Secret token: the Secret holds exactly this token and the service
/// account it names still has the claimed uid.
async fn legacy_user(api: &Arc<Api>, claims: &Claims, token: &str) -> Result<User, String> {
    let (Some(ns), Some(secret_name), Some(sa_name), Some(sa_uid)) =
        (&claims.legacy_namespace, &claims.legacy_secret_name, &claims.legacy_sa_name, &claims.legacy_sa_uid)
    else {
        return Err("legacy service account token is missing claims".into());
    };
    let secret = super::lookup(api, "secrets", Some(ns), secret_name).await?.ok_or_else(|| format!("secret \"{ns}/{secret_name}\" not found"))?;
    if secret.pointer("/metadata/deletionTimestamp").is_some_and(|d| !d.is_null()) {
        return Err(format!("secret \"{ns}/{secret_name}\" is marked for deletion"));
    }
    let stored = secret.pointer("/data/token").and_then(Value::as_str).and_then(|b| base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b).ok());
    if !stored.is_some_and(|s| super::constant_time_eq(&s, token.as_bytes())) {
        return Err("token does not match the secret's token".into());
    }
    let sa = service_account(api, ns, &Ref { name: sa_name.clone(), uid: sa_uid.clone() }).await?;
    Ok(user_of(ns, sa_name, uid(&sa)))
}

/// The legacy token of Secret `secret_name` for service account `sa` (name, uid) in `ns`.
pub fn legacy_token(key: &SigningKey, ns: &str, secret_name: &str, sa: &Ref) -> Result<String, super::jwt::JwtError> {
    key.sign(&Claims {
        iss: LEGACY_ISSUER.into(),
        sub: user_name(ns, &sa.name),
        legacy_namespace: Some(ns.into()),
        legacy_secret_name: Some(secret_name.into()),
        legacy_sa_name: Some(sa.name.clone()),
        legacy_sa_uid: Some(sa.uid.clone()),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn audience_errors_print_lists_as_upstream() {
        assert_eq!(
            audience_error(&["vault".into()], &["api".into(), "https://x".into()]),
            r#"token audiences ["vault"] is invalid for the target audiences ["api" "https://x"]"#
        );
    }

    #[test]
    fn expiry_and_not_before_have_a_minute_of_leeway() {
        let c = Claims { exp: Some(1000), nbf: Some(400), iat: Some(400), ..Default::default() };
        assert!(check_time(&c, 1000).is_ok());
        assert!(check_time(&c, 1060).is_ok());
        assert_eq!(check_time(&c, 1061), Err("service account token has expired".into()));
        assert!(check_time(&c, 340).is_ok());
        assert_eq!(check_time(&c, 339), Err("service account token is not valid yet".into()));
    }

    #[test]
    fn legacy_tokens_carry_the_four_legacy_claims() {
        let (_, key) = SigningKey::generate().unwrap();
        let t = legacy_token(&key, "default", "builder-token", &Ref { name: "builder".into(), uid: "u".into() }).unwrap();
        let c = key.verify(&t).unwrap();
        assert_eq!(c.iss, LEGACY_ISSUER);
        assert_eq!(c.sub, "system:serviceaccount:default:builder");
        assert_eq!((c.legacy_namespace.as_deref(), c.legacy_secret_name.as_deref()), (Some("default"), Some("builder-token")));
        assert_eq!((c.legacy_sa_name.as_deref(), c.legacy_sa_uid.as_deref()), (Some("builder"), Some("u")));
        assert!(c.exp.is_none() && c.kubernetes.is_none());
    }
}
