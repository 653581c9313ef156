//! Key grammar of the store: which keys and list/watch prefixes are accepted under the store's
//! prefix, and the end of a prefix range. The only place keys are checked; both backends call it
//! before touching anything, so bad input is refused with nothing written.

use crate::error::{Result, StoreError};

/// The longest key accepted, in bytes (Kubernetes keys are a resource path plus a namespace and a
/// name of at most 253 bytes each).
pub const MAX_KEY_BYTES: usize = 4096;

/// The default value size limit: 1.5 MiB, etcd's default request limit.
pub const DEFAULT_MAX_VALUE_BYTES: usize = 1536 * 1024;

/// The default key prefix, where the Kubernetes apiserver lays out its objects.
pub const DEFAULT_PREFIX: &str = "/registry/";

/// Checks a store prefix and gives it with exactly one trailing '/': "/registry" → "/registry/".
pub fn normalize_prefix(prefix: &str) -> Result<String> {
    let trimmed = prefix.trim_end_matches('/');
    if !prefix.starts_with('/') || trimmed.is_empty() {
        return Err(StoreError::invalid_key(prefix, "the store prefix must be an absolute path below '/', like /registry"));
    }
    check_chars(prefix)?;
    check_segments(prefix, &trimmed[1..])?;
    Ok(format!("{trimmed}/"))
}

/// Checks one object key: non-empty, under `store_prefix` (which ends with '/'), naming
/// something below it, no empty, "." or ".." path segments, no control characters, bounded.
pub fn check_key(store_prefix: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(StoreError::invalid_key(key, "empty key"));
    }
    if !key.starts_with(store_prefix) {
        return Err(StoreError::invalid_key(key, format!("outside the store prefix {store_prefix:?}")));
    }
    if key.len() == store_prefix.len() {
        return Err(StoreError::invalid_key(key, "names no object below the store prefix"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(StoreError::invalid_key(short(key), format!("{} bytes long, over the limit of {MAX_KEY_BYTES}", key.len())));
    }
    if key.ends_with('/') {
        return Err(StoreError::invalid_key(key, "ends with '/' (that is a prefix, not a key)"));
    }
    check_chars(key)?;
    check_segments(key, &key[1..])
}

/// Checks a list, count or watch prefix: under (or equal to) the store prefix, same character
/// and segment rules as keys. A prefix may end with '/'.
pub fn check_prefix(store_prefix: &str, prefix: &str) -> Result<()> {
    if prefix.is_empty() {
        return Err(StoreError::invalid_key(prefix, "empty prefix"));
    }
    if !prefix.starts_with(store_prefix) && prefix != store_prefix.trim_end_matches('/') {
        return Err(StoreError::invalid_key(prefix, format!("outside the store prefix {store_prefix:?}")));
    }
    if prefix.len() > MAX_KEY_BYTES {
        return Err(StoreError::invalid_key(short(prefix), format!("{} bytes long, over the limit of {MAX_KEY_BYTES}", prefix.len())));
    }
    check_chars(prefix)?;
    check_segments(prefix, prefix[1..].trim_end_matches('/'))
}

/// Checks a value's size against the limit.
pub fn check_value(key: &str, size: usize, limit: usize) -> Result<()> {
    if size > limit {
        return Err(StoreError::ValueTooLarge { key: key.to_string(), size, limit });
    }
    Ok(())
}

/// The first key after every key that starts with `prefix` (the exclusive end of the prefix's
/// range): the last byte below 0xff incremented, what follows dropped. None when there is no
/// such key (a prefix of only 0xff bytes, which valid UTF-8 keys never reach).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// The first bytes of an over-long key, for the error message.
fn short(key: &str) -> &str {
    let mut end = key.len().min(64);
    while !key.is_char_boundary(end) {
        end -= 1;
    }
    &key[..end]
}

fn check_chars(key: &str) -> Result<()> {
    if key.chars().any(char::is_control) {
        return Err(StoreError::invalid_key(key, "contains a control character"));
    }
    Ok(())
}

/// `path` is `key` without its leading '/' (and, for prefixes, trailing '/').
fn check_segments(key: &str, path: &str) -> Result<()> {
    for segment in path.split('/') {
        match segment {
            "" => return Err(StoreError::invalid_key(key, "contains an empty path segment")),
            "." | ".." => return Err(StoreError::invalid_key(key, "contains a '.' or '..' path segment")),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/registry/";

    #[test]
    fn keys_under_the_prefix_are_accepted() {
        check_key(P, "/registry/pods/default/web-0").unwrap();
        check_key(P, "/registry/x").unwrap();
    }

    #[test]
    fn bad_keys_are_refused_with_a_reason() {
        for key in [
            "",
            "/registry/",
            "/registry",
            "/other/pods/a",
            "registry/pods/a",
            "/registry/pods/../secrets/a",
            "/registry/pods/./a",
            "/registry/pods//a",
            "/registry/pods/a/",
            "/registry/pods/a\0b",
            "/registry/pods/a\nb",
        ] {
            let err = check_key(P, key).unwrap_err();
            assert!(matches!(err, StoreError::InvalidKey { .. }), "{key:?}: {err}");
        }
        let long = format!("/registry/{}", "a".repeat(MAX_KEY_BYTES));
        assert!(matches!(check_key(P, &long), Err(StoreError::InvalidKey { .. })));
    }

    #[test]
    fn prefixes_may_equal_the_store_prefix_or_end_with_a_slash() {
        check_prefix(P, "/registry/").unwrap();
        check_prefix(P, "/registry").unwrap();
        check_prefix(P, "/registry/pods/").unwrap();
        check_prefix(P, "/registry/pods").unwrap();
        assert!(check_prefix(P, "/regis").is_err());
        assert!(check_prefix(P, "/registry/../x").is_err());
        assert!(check_prefix(P, "").is_err());
    }

    #[test]
    fn store_prefix_is_normalized() {
        assert_eq!(normalize_prefix("/registry").unwrap(), "/registry/");
        assert_eq!(normalize_prefix("/registry/").unwrap(), "/registry/");
        assert_eq!(normalize_prefix("/a/b").unwrap(), "/a/b/");
        assert!(normalize_prefix("/").is_err());
        assert!(normalize_prefix("registry").is_err());
        assert!(normalize_prefix("/a/../b").is_err());
    }

    #[test]
    fn prefix_end_is_the_first_key_after_the_range() {
        assert_eq!(prefix_end(b"/registry/").unwrap(), b"/registry0");
        assert_eq!(prefix_end(b"a\xff\xff").unwrap(), b"b");
        assert_eq!(prefix_end(b"\xff"), None);
    }

    #[test]
    fn values_over_the_limit_are_refused() {
        check_value("/registry/a", 10, 10).unwrap();
        assert!(matches!(check_value("/registry/a", 11, 10), Err(StoreError::ValueTooLarge { size: 11, limit: 10, .. })));
    }
}
