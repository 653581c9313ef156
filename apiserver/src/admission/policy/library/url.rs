//! Kubernetes' URL library: `url(s)`, `isURL(s)` and a URL's `getScheme`, `getHost`,
//! `getHostname`, `getPort`, `getEscapedPath`, `getQuery`. Upstream reads URLs with Go's
//! net/url (a URL must pass `ParseRequestURI`: an absolute URL or an absolute path; the parts
//! then come from `Parse`), whose results differ from WHATWG parsing (the `url` crate) in the
//! cases users see: `getHost()` keeps the port as written (`https://example.com:443/` gives
//! `example.com:443`), `getEscapedPath()` of `https://example.com` is '' (not '/'), `/path`
//! alone is a URL, hosts are not lower-cased nor IDNA-mapped. So this module reads them as Go
//! does: the grammar below follows net/url's parse, not the WHATWG standard.

use std::collections::HashMap;
use std::sync::Arc;

use cel::objects::{Key, Map, Opaque};
use cel::{Context, ExecutionError, FunctionContext, ResolveResult, Value};

use super::{opaque, string, wrap, Call};

/// A URL as Go's url.URL holds it (what the accessors need).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(super) struct Url {
    scheme: String,
    opaque: String,
    /// The host or host:port, unescaped.
    host: String,
    /// The path, unescaped, and its original escaping when that differs from the default.
    path: String,
    raw_path: String,
    raw_query: String,
    fragment: String,
}

impl Opaque for Url {
    fn runtime_type_name(&self) -> &str {
        "kubernetes.URL"
    }
}

pub(super) fn register(ctx: &mut Context<'static>) {
    ctx.add_function("url", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        let s = call.global_string()?;
        let error = |e: String| call.error(format!("URL parse error during conversion from string: {e}"));
        parse_request_uri(s).map_err(error)?;
        parse(s).map(wrap).map_err(error)
    });
    ctx.add_function("isURL", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        Ok(Value::Bool(parse_request_uri(call.global_string()?).is_ok()))
    });
    ctx.add_function("getScheme", |ftx: &FunctionContext| accessor(ftx, |u| string(u.scheme.clone())));
    ctx.add_function("getHost", |ftx: &FunctionContext| accessor(ftx, |u| string(u.host.clone())));
    ctx.add_function("getHostname", |ftx: &FunctionContext| accessor(ftx, |u| string(split_host_port(&u.host).0)));
    ctx.add_function("getPort", |ftx: &FunctionContext| accessor(ftx, |u| string(split_host_port(&u.host).1)));
    ctx.add_function("getEscapedPath", |ftx: &FunctionContext| accessor(ftx, |u| string(u.escaped_path())));
    ctx.add_function("getQuery", |ftx: &FunctionContext| accessor(ftx, |u| query(&u.raw_query)));
}

fn accessor(ftx: &FunctionContext, f: impl Fn(&Url) -> Value) -> ResolveResult {
    let call = Call::of(ftx)?;
    if !call.args.is_empty() {
        return Err(ExecutionError::NoSuchOverload);
    }
    opaque::<Url>(call.receiver()?).map(f).ok_or(ExecutionError::NoSuchOverload)
}

/// net/url's Error text: `parse "<url>": <why>`.
fn parse_error(raw: &str, why: impl std::fmt::Display) -> String {
    format!("parse {}: {why}", berth_names::go_quote(raw))
}

/// Go's url.ParseRequestURI: the whole string, no fragment, an absolute URL or path.
fn parse_request_uri(raw: &str) -> Result<Url, String> {
    parse_raw(raw, true).map_err(|e| parse_error(raw, e))
}

/// Go's url.Parse: the fragment split off first.
fn parse(raw: &str) -> Result<Url, String> {
    let (u, frag) = raw.split_once('#').map_or((raw, None), |(u, f)| (u, Some(f)));
    let mut url = parse_raw(u, false).map_err(|e| parse_error(u, e))?;
    if let Some(f) = frag {
        url.fragment = unescape(f, Mode::Fragment).map_err(|e| parse_error(raw, e))?;
    }
    Ok(url)
}

fn parse_raw(raw: &str, via_request: bool) -> Result<Url, String> {
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    if raw.is_empty() && via_request {
        return Err("empty url".into());
    }
    let mut url = Url::default();
    if raw == "*" {
        url.path = "*".into();
        return Ok(url);
    }
    let (scheme, mut rest) = scheme(raw)?;
    url.scheme = scheme.to_ascii_lowercase();
    if rest.ends_with('?') && rest.matches('?').count() == 1 {
        rest = &rest[..rest.len() - 1];
    } else if let Some((r, q)) = rest.split_once('?') {
        url.raw_query = q.to_string();
        rest = r;
    }
    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            // a rootless path is opaque (mailto:x)
            url.opaque = rest.to_string();
            return Ok(url);
        }
        if via_request {
            return Err("invalid URI for request".into());
        }
        if rest.split('/').next().is_some_and(|seg| seg.contains(':')) {
            return Err("first path segment in URL cannot contain colon".into());
        }
    }
    if (!url.scheme.is_empty() || !via_request && !rest.starts_with("///")) && rest.starts_with("//") {
        let (authority, path) = rest[2..].split_at(rest[2..].find('/').unwrap_or(rest.len() - 2));
        url.host = authority_host(authority)?;
        rest = path;
    }
    url.path = unescape(rest, Mode::Path)?;
    if escape(&url.path, Mode::Path) != rest {
        url.raw_path = rest.to_string();
    }
    Ok(url)
}

/// The scheme and the rest; no scheme when the text before ':' cannot be one.
fn scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

/// The host of an authority (`user:pass@host:port`), checked and unescaped as net/url does.
fn authority_host(authority: &str) -> Result<String, String> {
    let (userinfo, host) = match authority.rfind('@') {
        Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
        None => (None, authority),
    };
    let host = parse_host(host)?;
    if let Some(u) = userinfo {
        let valid = u.chars().all(|c| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c));
        if !valid {
            return Err("net/url: invalid userinfo".into());
        }
        unescape(u, Mode::UserPassword)?;
    }
    Ok(host)
}

fn parse_host(host: &str) -> Result<String, String> {
    if host.starts_with('[') {
        let i = host.rfind(']').ok_or("missing ']' in host")?;
        let port = &host[i + 1..];
        if !valid_optional_port(port) {
            return Err(format!("invalid port {} after host", berth_names::go_quote(port)));
        }
    } else if let Some(i) = host.rfind(':') {
        let port = &host[i..];
        if !valid_optional_port(port) {
            return Err(format!("invalid port {} after host", berth_names::go_quote(port)));
        }
    }
    unescape(host, Mode::Host)
}

/// "" or ":" followed by digits.
fn valid_optional_port(port: &str) -> bool {
    port.is_empty() || port.strip_prefix(':').is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
}

/// Go's url.splitHostPort: (hostname without IPv6 brackets, port).
fn split_host_port(host_port: &str) -> (String, String) {
    let (mut host, port) = match host_port.rfind(':') {
        Some(i) if valid_optional_port(&host_port[i..]) => (&host_port[..i], &host_port[i + 1..]),
        _ => (host_port, ""),
    };
    if host.starts_with('[') && host.ends_with(']') && host.len() >= 2 {
        host = &host[1..host.len() - 1];
    }
    (host.to_string(), port.to_string())
}

/// The parts of a URL net/url escapes differently.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    UserPassword,
    QueryComponent,
    Fragment,
}

/// Whether net/url escapes byte `c` in `mode`.
fn should_escape(c: u8, mode: Mode) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if mode == Mode::Host && b"!$&'()*+,;=:[]<>\"".contains(&c) {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            Mode::Path => c == b'?',
            Mode::UserPassword => matches!(c, b'@' | b'/' | b'?' | b':'),
            Mode::QueryComponent => true,
            Mode::Fragment | Mode::Host => false,
        },
        b'!' | b'(' | b')' | b'*' if mode == Mode::Fragment => false,
        _ => true,
    }
}

fn escape(s: &str, mode: Mode) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if should_escape(b, mode) {
            if b == b' ' && mode == Mode::QueryComponent {
                out.push('+');
            } else {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(b as char);
        }
    }
    out
}

/// net/url's unescape: `%XX` decoded (and `+` as a space in query components); bad escapes and,
/// in a host, characters that must be escaped are errors in net/url's words.
fn unescape(s: &str, mode: Mode) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = |c: u8| (c as char).to_digit(16);
                let (Some(h), Some(l)) = (b.get(i + 1).and_then(|c| hex(*c)), b.get(i + 2).and_then(|c| hex(*c))) else {
                    let bad: String = s[i..].chars().take(3).collect();
                    return Err(format!("invalid URL escape {}", berth_names::go_quote(&bad)));
                };
                if mode == Mode::Host && h < 8 && &s[i..i + 3] != "%25" {
                    return Err(format!("invalid URL escape {}", berth_names::go_quote(&s[i..i + 3])));
                }
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            b'+' if mode == Mode::QueryComponent => {
                out.push(b' ');
                i += 1;
            }
            c => {
                if mode == Mode::Host && c < 0x80 && should_escape(c, mode) {
                    return Err(format!("invalid character {} in host name", berth_names::go_quote(&(c as char).to_string())));
                }
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

impl Url {
    /// Go's URL.EscapedPath: the path as written when that is a valid escaping of it, else the
    /// default escaping.
    fn escaped_path(&self) -> String {
        if !self.raw_path.is_empty() && valid_encoded_path(&self.raw_path) && unescape(&self.raw_path, Mode::Path).ok().as_deref() == Some(&self.path) {
            return self.raw_path.clone();
        }
        if self.path == "*" {
            return "*".into();
        }
        escape(&self.path, Mode::Path)
    }
}

fn valid_encoded_path(s: &str) -> bool {
    s.bytes().all(|c| b"!$&'()*+,;=:@[]%".contains(&c) || !should_escape(c, Mode::Path))
}

/// Go's URL.Query: the keys and values unescaped, repeated keys' values in order; pairs that
/// fail to unescape or hold a ';' left out.
fn query(raw: &str) -> Value {
    let mut m: HashMap<Key, Vec<Value>> = HashMap::new();
    for pair in raw.split('&') {
        if pair.is_empty() || pair.contains(';') {
            continue;
        }
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Ok(k), Ok(v)) = (unescape(k, Mode::QueryComponent), unescape(v, Mode::QueryComponent)) else { continue };
        m.entry(Key::String(Arc::new(k))).or_default().push(string(v));
    }
    let map: HashMap<Key, Value> = m.into_iter().map(|(k, v)| (k, Value::List(Arc::new(v)))).collect();
    Value::Map(Map { map: Arc::new(map) })
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use serde_json::json;

    #[test]
    fn urls_as_upstream_documents_them() {
        check(&[
            ("isURL('https://user:pass@example.com:80/path?query=val#fragment')", Ok(json!(true))),
            ("isURL('/absolute-path')", Ok(json!(true))),
            ("isURL('https://a:b:c/')", Ok(json!(false))),
            ("isURL('../relative-path')", Ok(json!(false))),
            ("isURL('')", Ok(json!(false))),
            ("isURL('mailto:someone@example.com')", Ok(json!(true))),
            ("isURL('https://exa mple.com/')", Ok(json!(false))),
            ("url('https://a:b:c/')", Err(r#"URL parse error during conversion from string: parse "https://a:b:c/": invalid port ":c" after host"#)),
            ("url('../relative-path')", Err(r#"parse "../relative-path": invalid URI for request"#)),
            ("url('/path').getScheme()", Ok(json!(""))),
            ("url('https://example.com/').getScheme()", Ok(json!("https"))),
            ("url('HTTPS://example.com/').getScheme()", Ok(json!("https"))),
            ("url('https://example.com:80/').getHost()", Ok(json!("example.com:80"))),
            ("url('https://example.com:443/').getHost()", Ok(json!("example.com:443"))),
            ("url('https://example.com/').getHost()", Ok(json!("example.com"))),
            ("url('https://[::1]:80/').getHost()", Ok(json!("[::1]:80"))),
            ("url('https://[::1]/').getHost()", Ok(json!("[::1]"))),
            ("url('/path').getHost()", Ok(json!(""))),
            ("url('https://example.com:80/').getHostname()", Ok(json!("example.com"))),
            ("url('https://127.0.0.1:80/').getHostname()", Ok(json!("127.0.0.1"))),
            ("url('https://[::1]:80/').getHostname()", Ok(json!("::1"))),
            ("url('/path').getHostname()", Ok(json!(""))),
            ("url('https://example.com:80/').getPort()", Ok(json!("80"))),
            ("url('https://example.com/').getPort()", Ok(json!(""))),
            ("url('/path').getPort()", Ok(json!(""))),
            ("url('https://example.com/path').getEscapedPath()", Ok(json!("/path"))),
            ("url('https://example.com/path with spaces/').getEscapedPath()", Ok(json!("/path%20with%20spaces/"))),
            ("url('https://example.com/a%2Fb').getEscapedPath()", Ok(json!("/a%2Fb"))),
            ("url('https://example.com').getEscapedPath()", Ok(json!(""))),
            ("url('https://example.com/p#frag').getEscapedPath()", Ok(json!("/p"))),
            ("url('https://example.com/path?k1=a&k2=b&k2=c').getQuery()", Ok(json!({"k1": ["a"], "k2": ["b", "c"]}))),
            ("url('https://example.com/path?key with spaces=value with spaces').getQuery()", Ok(json!({"key with spaces": ["value with spaces"]}))),
            ("url('https://example.com/path?a=1+2&b=%41&bad=%zz&c').getQuery()", Ok(json!({"a": ["1 2"], "b": ["A"], "c": [""]}))),
            ("url('https://example.com/path?').getQuery()", Ok(json!({}))),
            ("url('https://example.com/path').getQuery()", Ok(json!({}))),
            ("url('https://example.com/a') == url('https://example.com/a')", Ok(json!(true))),
            ("url('https://example.com/a') == url('https://example.com/b')", Ok(json!(false))),
            ("url('https://user@example.com/').getHost()", Ok(json!("example.com"))),
            ("url('https://example.com/%zz')", Err(r#"invalid URL escape "%zz""#)),
        ]);
    }
}
