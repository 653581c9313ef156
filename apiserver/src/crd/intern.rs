//! Interned strings for the resource table: each distinct string (or list of strings) is leaked
//! once and handed out again after, so the `&'static str` fields of custom resources cost memory
//! bounded by the distinct names ever served (see the module docs of `crd`).

use std::collections::HashSet;
use std::sync::{Mutex, OnceLock};

/// `s` as a string that lives as long as the process.
pub fn str(s: &str) -> &'static str {
    static STRINGS: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    let mut set = STRINGS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(s) {
        return found;
    }
    let leaked: &'static str = Box::leak(s.to_string().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// `list` as a slice that lives as long as the process.
pub fn list(list: &[String]) -> &'static [&'static str] {
    static LISTS: OnceLock<Mutex<HashSet<&'static [&'static str]>>> = OnceLock::new();
    let items: Vec<&'static str> = list.iter().map(|s| str(s)).collect();
    let mut set = LISTS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = set.get(items.as_slice()) {
        return found;
    }
    let leaked: &'static [&'static str] = Box::leak(items.into_boxed_slice());
    set.insert(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_string_is_leaked_once() {
        let a = super::str(&String::from("crontabs"));
        let b = super::str("crontabs");
        assert!(std::ptr::eq(a, b));
        let l1 = super::list(&["ct".to_string()]);
        let l2 = super::list(&["ct".to_string()]);
        assert!(std::ptr::eq(l1, l2));
    }
}
