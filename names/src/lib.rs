//! Kubernetes names (RFC 1123 labels and subdomains, RFC 1035 labels, qualified names and label
//! values) checked as the apiserver checks them, with its messages. The one place these grammars
//! live: the node and the apiserver both call it. Every name that becomes a file path, a cgroup name or a netns name goes
//! through here first: a name that passes has no '/', no "..", no NUL and a bounded length.

pub mod duration;
pub mod quantity;

pub const DNS1123_LABEL_MAX: usize = 63;
pub const DNS1123_SUBDOMAIN_MAX: usize = 253;

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";

fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty() && alnum(&b[0]) && alnum(&b[b.len() - 1]) && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// The reasons `s` is not a DNS-1123 label (empty when it is one).
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    if !is_label(s) {
        errs.push(LABEL_MSG.to_string());
    }
    errs
}

/// The reasons `s` is not a DNS-1123 subdomain (empty when it is one).
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        errs.push(format!("must be no more than {DNS1123_SUBDOMAIN_MAX} characters"));
    }
    if s.is_empty() || !s.split('.').all(is_label) {
        errs.push(SUBDOMAIN_MSG.to_string());
    }
    errs
}

const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// The reasons `s` is not a DNS-1035 label (service names): a DNS-1123 label starting with a letter.
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    if !is_label(s) || !s.as_bytes()[0].is_ascii_lowercase() {
        errs.push(DNS1035_MSG.to_string());
    }
    errs
}

/// `[A-Za-z0-9][-A-Za-z0-9_.]*[A-Za-z0-9]` or one alphanumeric character.
fn is_qualified_part(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    !b.is_empty() && alnum(&b[0]) && alnum(&b[b.len() - 1]) && b.iter().all(|c| alnum(c) || matches!(c, b'-' | b'_' | b'.'))
}

/// The reasons `s` is not a qualified name (label and annotation keys): an optional DNS-1123
/// subdomain prefix and '/', then a name of at most 63 characters.
pub fn qualified_name(s: &str) -> Vec<String> {
    let mut errs = vec![];
    let (prefix, name) = match s.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, s),
    };
    if let Some(p) = prefix {
        if p.is_empty() {
            errs.push("prefix part must be non-empty".to_string());
        } else {
            errs.extend(dns1123_subdomain(p).into_iter().map(|e| format!("prefix part {e}")));
        }
    }
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else {
        if name.len() > DNS1123_LABEL_MAX {
            errs.push(format!("name part must be no more than {DNS1123_LABEL_MAX} characters"));
        }
        if !is_qualified_part(name) {
            errs.push(QUALIFIED_NAME_MSG.to_string());
        }
    }
    errs
}

/// The reasons `s` is not a label value: empty, or at most 63 characters of the qualified-name
/// alphabet.
pub fn label_value(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s.len() > DNS1123_LABEL_MAX {
        errs.push(format!("must be no more than {DNS1123_LABEL_MAX} characters"));
    }
    if !s.is_empty() && !is_qualified_part(s) {
        errs.push(LABEL_VALUE_MSG.to_string());
    }
    errs
}

/// One field error in the apiserver's words: `path: Invalid value: "x": reason`.
pub fn invalid(path: &str, value: &str, reason: &str) -> String {
    format!("{path}: Invalid value: {}: {reason}", go_quote(value))
}

/// A string quoted as Go's %q quotes it (the apiserver's messages are made that way).
/// A list of strings as Go prints a `[]string` with `%q`: `["a" "b"]`.
pub fn go_quote_list(items: &[String]) -> String {
    format!("[{}]", items.iter().map(|s| go_quote(s)).collect::<Vec<_>>().join(" "))
}

pub fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\u{0b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `path: Required value`.
pub fn required(path: &str) -> String {
    format!("{path}: Required value")
}

/// Field errors for `value` at `path` checked by `check` (one of the functions above).
pub fn check(path: &str, value: &str, check: fn(&str) -> Vec<String>) -> Vec<String> {
    if value.is_empty() {
        return vec![required(path)];
    }
    check(value).iter().map(|r| invalid(path, value, r)).collect()
}

/// The reasons `s` is not a path segment name (RBAC objects: `system:node` is one): not `.` or
/// `..`, no `/` or `%` (upstream's `path.ValidatePathSegmentName`), and here also no NUL. Such
/// names are for API objects only: they may hold ':' and so never become file or cgroup names.
pub fn path_segment_name(s: &str) -> Vec<String> {
    let mut errs = vec![];
    if s == "." || s == ".." {
        errs.push(format!("may not be '{s}'"));
    }
    for bad in ["/", "%"] {
        if s.contains(bad) {
            errs.push(format!("may not contain '{bad}'"));
        }
    }
    if s.contains('\0') {
        errs.push("may not contain NUL".into());
    }
    errs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_print_as_go_string_slices() {
        assert_eq!(go_quote_list(&["a".into(), "b c".into()]), r#"["a" "b c"]"#);
        assert_eq!(go_quote_list(&[]), "[]");
    }

    #[test]
    fn labels_and_subdomains() {
        assert!(dns1123_label("my-name").is_empty() && dns1123_label("123-abc").is_empty());
        for bad in ["", "-a", "a-", "A", "a.b", "a/b", "..", "a\0b", &"a".repeat(64)] {
            assert!(!dns1123_label(bad).is_empty(), "{bad:?}");
        }
        assert!(dns1123_subdomain("example.com").is_empty() && dns1123_subdomain("web-0").is_empty());
        for bad in ["", ".", "..", "../etc", "a/b", "a..b", "a.", "Web", &"a".repeat(254)] {
            assert!(!dns1123_subdomain(bad).is_empty(), "{bad:?}");
        }
        assert_eq!(dns1123_label(&"a".repeat(64)), vec!["must be no more than 63 characters".to_string()]);
        assert_eq!(check("metadata.name", "", dns1123_subdomain), vec!["metadata.name: Required value".to_string()]);
        let e = check("spec.containers[0].name", "Web", dns1123_label);
        assert!(e[0].starts_with("spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label"), "{e:?}");
        assert_eq!(go_quote("a\0b\"c\\\n"), r#""a\x00b\"c\\\n""#);
    }

    #[test]
    fn dns1035_qualified_names_and_label_values() {
        assert!(dns1035_label("web").is_empty());
        assert!(!dns1035_label("1web").is_empty());
        assert!(qualified_name("app").is_empty() && qualified_name("example.com/App_1.x").is_empty());
        for bad in ["", "/a", "a/", "-a", "a b", "Ex.com/a", &"a".repeat(64)] {
            assert!(!qualified_name(bad).is_empty(), "{bad:?}");
        }
        assert!(label_value("").is_empty() && label_value("My_value.1").is_empty());
        assert!(!label_value("-x").is_empty() && !label_value(&"a".repeat(64)).is_empty());
    }
}
