//! cel-go's strings extension as Kubernetes 1.29+ enables it (version 2), and Kubernetes' regex
//! library (`find`, `findAll`). Positions count characters (Unicode code points), as cel-go's
//! do; out-of-range positions are errors in cel-go's words (`index out of range: 7`).
//! `reverse` (version 3) is not there: Kubernetes does not enable it.

use std::sync::Arc;

use cel::{Context, ExecutionError, FunctionContext, ResolveResult, Value};

use super::{string, Call};

pub(super) fn register(ctx: &mut Context<'static>) {
    ctx.add_function("charAt", char_at);
    ctx.add_function("indexOf", index_of);
    ctx.add_function("lastIndexOf", last_index_of);
    ctx.add_function("lowerAscii", |ftx: &FunctionContext| map_string(ftx, |s| s.to_ascii_lowercase()));
    ctx.add_function("upperAscii", |ftx: &FunctionContext| map_string(ftx, |s| s.to_ascii_uppercase()));
    ctx.add_function("trim", |ftx: &FunctionContext| map_string(ftx, |s| s.trim().to_string()));
    ctx.add_function("replace", replace);
    ctx.add_function("split", split);
    ctx.add_function("substring", substring);
    ctx.add_function("join", join);
    ctx.add_function("format", super::format::format);
    ctx.add_function("strings.quote", quote_fn);
    ctx.add_function("find", find);
    ctx.add_function("findAll", find_all);
}

/// The receiver of a string member function.
fn text<'v>(call: &'v Call) -> Result<&'v str, ExecutionError> {
    match call.receiver()? {
        Value::String(s) => Ok(s),
        _ => Err(ExecutionError::NoSuchOverload),
    }
}

fn out_of_range(call: &Call, i: i64) -> ExecutionError {
    call.error(format!("index out of range: {i}"))
}

fn map_string(ftx: &FunctionContext, f: impl Fn(&str) -> String) -> ResolveResult {
    let call = Call::of(ftx)?;
    if !call.args.is_empty() {
        return Err(ExecutionError::NoSuchOverload);
    }
    Ok(string(f(text(&call)?)))
}

fn char_at(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    let s = text(&call)?;
    let [Value::Int(i)] = call.args.as_slice() else { return Err(ExecutionError::NoSuchOverload) };
    let chars: Vec<char> = s.chars().collect();
    match usize::try_from(*i) {
        Ok(n) if n < chars.len() => Ok(string(chars[n].to_string())),
        Ok(n) if n == chars.len() => Ok(string("")),
        _ => Err(out_of_range(&call, *i)),
    }
}

/// `indexOf` of a string (optionally from a position), or of a list (the lists library).
fn index_of(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    match (call.receiver()?, call.args.as_slice()) {
        (Value::List(list), [item]) => Ok(Value::Int(super::lists::position(list, item, false))),
        (Value::String(s), [Value::String(sub)]) => Ok(Value::Int(find_from(s, sub, 0).map_err(|i| out_of_range(&call, i))?)),
        (Value::String(s), [Value::String(sub), Value::Int(from)]) => Ok(Value::Int(find_from(s, sub, *from).map_err(|i| out_of_range(&call, i))?)),
        _ => Err(ExecutionError::NoSuchOverload),
    }
}

fn last_index_of(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    match (call.receiver()?, call.args.as_slice()) {
        (Value::List(list), [item]) => Ok(Value::Int(super::lists::position(list, item, true))),
        (Value::String(s), [Value::String(sub)]) => {
            let len = s.chars().count() as i64;
            if sub.is_empty() {
                return Ok(Value::Int(len));
            }
            Ok(Value::Int(rfind_from(s, sub, len - 1).map_err(|i| out_of_range(&call, i))?))
        }
        (Value::String(s), [Value::String(sub), Value::Int(from)]) => Ok(Value::Int(rfind_from(s, sub, *from).map_err(|i| out_of_range(&call, i))?)),
        _ => Err(ExecutionError::NoSuchOverload),
    }
}

/// The character position of the first `sub` at or after `from`; -1 when none or `from` is
/// past the end; Err(from) when it is negative.
fn find_from(s: &str, sub: &str, from: i64) -> Result<i64, i64> {
    if sub.is_empty() {
        return Ok(from);
    }
    if from < 0 {
        return Err(from);
    }
    let chars: Vec<char> = s.chars().collect();
    let needle: Vec<char> = sub.chars().collect();
    let start = from as usize;
    if start >= chars.len() || needle.len() > chars.len() {
        return Ok(-1);
    }
    Ok((start..=chars.len() - needle.len()).find(|&i| chars[i..i + needle.len()] == needle[..]).map_or(-1, |i| i as i64))
}

/// The character position of the last `sub` starting at or before `from`.
fn rfind_from(s: &str, sub: &str, from: i64) -> Result<i64, i64> {
    if sub.is_empty() {
        return Ok(from);
    }
    if from < 0 {
        return Err(from);
    }
    let chars: Vec<char> = s.chars().collect();
    let needle: Vec<char> = sub.chars().collect();
    if from as usize >= chars.len() || needle.len() > chars.len() {
        return Ok(-1);
    }
    let last = (from as usize).min(chars.len() - needle.len());
    Ok((0..=last).rev().find(|&i| chars[i..i + needle.len()] == needle[..]).map_or(-1, |i| i as i64))
}

/// Go's strings.Replace: at most `n` replacements (all when negative); an empty `old` matches
/// before every character and at the end.
fn replace(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    let s = text(&call)?;
    let (old, new, n) = match call.args.as_slice() {
        [Value::String(o), Value::String(w)] => (o, w, -1),
        [Value::String(o), Value::String(w), Value::Int(n)] => (o, w, *n),
        _ => return Err(ExecutionError::NoSuchOverload),
    };
    Ok(string(match usize::try_from(n) {
        Ok(n) => s.replacen(old.as_str(), new, n),
        Err(_) => s.replace(old.as_str(), new),
    }))
}

/// Go's strings.SplitN: `n` pieces at most, the last the rest (all when negative, none when 0);
/// an empty separator splits between characters.
fn split(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    let s = text(&call)?;
    let (sep, n) = match call.args.as_slice() {
        [Value::String(sep)] => (sep.as_str(), -1),
        [Value::String(sep), Value::Int(n)] => (sep.as_str(), *n),
        _ => return Err(ExecutionError::NoSuchOverload),
    };
    let pieces: Vec<String> = match (usize::try_from(n), sep) {
        (Ok(0), _) => vec![],
        (Ok(n), "") => {
            let chars: Vec<char> = s.chars().collect();
            let whole = n.min(chars.len());
            let mut out: Vec<String> = chars.iter().take(whole.saturating_sub(1)).map(|c| c.to_string()).collect();
            if whole > 0 {
                out.push(chars[whole - 1..].iter().collect());
            }
            out
        }
        (Err(_), "") => s.chars().map(|c| c.to_string()).collect(),
        (Ok(n), sep) => s.splitn(n, sep).map(String::from).collect(),
        (Err(_), sep) => s.split(sep).map(String::from).collect(),
    };
    Ok(Value::List(Arc::new(pieces.into_iter().map(string).collect())))
}

fn substring(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    let s = text(&call)?;
    let chars: Vec<char> = s.chars().collect();
    let len = chars.len() as i64;
    let (start, end) = match call.args.as_slice() {
        [Value::Int(a)] => (*a, len),
        [Value::Int(a), Value::Int(b)] => (*a, *b),
        _ => return Err(ExecutionError::NoSuchOverload),
    };
    if start > end {
        return Err(call.error(format!("invalid substring range. start: {start}, end: {end}")));
    }
    for i in [start, end] {
        if !(0..=len).contains(&i) {
            return Err(out_of_range(&call, i));
        }
    }
    Ok(string(chars[start as usize..end as usize].iter().collect::<String>()))
}

fn join(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    let Value::List(list) = call.receiver()? else { return Err(ExecutionError::NoSuchOverload) };
    let sep = match call.args.as_slice() {
        [] => "",
        [Value::String(s)] => s.as_str(),
        _ => return Err(ExecutionError::NoSuchOverload),
    };
    let mut parts = Vec::with_capacity(list.len());
    for v in list.iter() {
        match v {
            Value::String(s) => parts.push(s.as_str()),
            other => return Err(call.error(format!("join: invalid input: {}", super::format::plain(other)))),
        }
    }
    Ok(string(parts.join(sep)))
}

fn quote_fn(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    Ok(string(quote(call.global_string()?)))
}

/// cel-go's `strings.quote`: in double quotes, with CEL's escapes for the characters that have one.
pub(super) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\u{07}' => out.push_str("\\a"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{0b}' => out.push_str("\\v"),
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The compiled pattern, or upstream's error.
fn regex(call: &Call, pattern: &str) -> Result<Arc<regex::Regex>, ExecutionError> {
    super::standard::regex(pattern).map_err(|e| call.error(e))
}

/// The first match ('' when none).
fn find(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    let s = text(&call)?;
    let [Value::String(pattern)] = call.args.as_slice() else { return Err(ExecutionError::NoSuchOverload) };
    Ok(string(regex(&call, pattern)?.find(s).map_or("", |m| m.as_str())))
}

/// The matches, at most `n` (all when negative), as Go's FindAllString: an empty match right
/// after a match is not one.
fn find_all(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    let s = text(&call)?;
    let (pattern, n) = match call.args.as_slice() {
        [Value::String(p)] => (p, -1),
        [Value::String(p), Value::Int(n)] => (p, *n),
        _ => return Err(ExecutionError::NoSuchOverload),
    };
    let re = regex(&call, pattern)?;
    let limit = usize::try_from(n).unwrap_or(usize::MAX);
    Ok(Value::List(Arc::new(re.find_iter(s).take(limit).map(|m| string(m.as_str())).collect())))
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use serde_json::json;

    #[test]
    fn the_strings_extension_behaves_as_cel_go_documents() {
        check(&[
            ("'hello'.charAt(4)", Ok(json!("o"))),
            ("'hello'.charAt(5)", Ok(json!(""))),
            ("'hello'.charAt(-1)", Err("index out of range: -1")),
            ("'héllo'.charAt(1)", Ok(json!("é"))),
            ("'hello mellow'.indexOf('')", Ok(json!(0))),
            ("'hello mellow'.indexOf('ello')", Ok(json!(1))),
            ("'hello mellow'.indexOf('jello')", Ok(json!(-1))),
            ("'hello mellow'.indexOf('', 2)", Ok(json!(2))),
            ("'hello mellow'.indexOf('ello', 2)", Ok(json!(7))),
            ("'hello mellow'.indexOf('ello', 20)", Ok(json!(-1))),
            ("'hello mellow'.indexOf('ello', -1)", Err("index out of range: -1")),
            ("'héllo wörld'.indexOf('wö')", Ok(json!(6))),
            ("'hello mellow'.lastIndexOf('')", Ok(json!(12))),
            ("'hello mellow'.lastIndexOf('ello')", Ok(json!(7))),
            ("'hello mellow'.lastIndexOf('jello')", Ok(json!(-1))),
            ("'hello mellow'.lastIndexOf('ello', 6)", Ok(json!(1))),
            ("'hello mellow'.lastIndexOf('ello', 20)", Ok(json!(-1))),
            ("'hello mellow'.lastIndexOf('ello', -1)", Err("index out of range: -1")),
            ("'TacoCat'.lowerAscii()", Ok(json!("tacocat"))),
            ("'TacoCÆt Xii'.lowerAscii()", Ok(json!("tacocÆt xii"))),
            ("'TacoCat'.upperAscii()", Ok(json!("TACOCAT"))),
            ("'TacoCÆt Xii'.upperAscii()", Ok(json!("TACOCÆT XII"))),
            ("'hello hello'.replace('he', 'we')", Ok(json!("wello wello"))),
            ("'hello hello'.replace('he', 'we', -1)", Ok(json!("wello wello"))),
            ("'hello hello'.replace('he', 'we', 1)", Ok(json!("wello hello"))),
            ("'hello hello'.replace('he', 'we', 0)", Ok(json!("hello hello"))),
            ("'hello hello'.replace('', '_')", Ok(json!("_h_e_l_l_o_ _h_e_l_l_o_"))),
            ("'hello hello'.replace('h', '')", Ok(json!("ello ello"))),
            ("'hello hello hello'.split(' ')", Ok(json!(["hello", "hello", "hello"]))),
            ("'hello hello hello'.split(' ', 0)", Ok(json!([]))),
            ("'hello hello hello'.split(' ', 1)", Ok(json!(["hello hello hello"]))),
            ("'hello hello hello'.split(' ', 2)", Ok(json!(["hello", "hello hello"]))),
            ("'hello hello hello'.split(' ', -1)", Ok(json!(["hello", "hello", "hello"]))),
            ("'abc'.split('')", Ok(json!(["a", "b", "c"]))),
            ("'abc'.split('', 2)", Ok(json!(["a", "bc"]))),
            ("''.split(',')", Ok(json!([""]))),
            ("'tacocat'.substring(4)", Ok(json!("cat"))),
            ("'tacocat'.substring(0, 4)", Ok(json!("taco"))),
            ("'tacocat'.substring(-1)", Err("index out of range: -1")),
            ("'tacocat'.substring(2, 1)", Err("invalid substring range. start: 2, end: 1")),
            ("'tacocat'.substring(1, 8)", Err("index out of range: 8")),
            ("'  \\ttrim\\n    '.trim()", Ok(json!("trim"))),
            ("['hello', 'mellow'].join()", Ok(json!("hellomellow"))),
            ("['hello', 'mellow'].join(' ')", Ok(json!("hello mellow"))),
            ("[].join()", Ok(json!(""))),
            ("[].join('/')", Ok(json!(""))),
            ("['a', 1].join()", Err("join: invalid input: 1")),
            (r#"strings.quote('single-quote with "double quote"')"#, Ok(json!(r#""single-quote with \"double quote\"""#))),
            (r#"strings.quote("two escape sequences \a\n")"#, Ok(json!(r#""two escape sequences \a\n""#))),
            ("'abc'.charAt('x')", Err("no such overload")),
            ("'abc'.reverse()", Err("undeclared reference to 'reverse'")),
        ]);
    }

    #[test]
    fn the_regex_library_finds_as_go_does() {
        check(&[
            ("'abc 123'.find('[0-9]+')", Ok(json!("123"))),
            // Go's leftmost match of '[0-9]*' in "abc 123" is the empty one at the start (the
            // library's documentation says '123'; upstream's code gives '')
            ("'abc 123'.find('[0-9]*')", Ok(json!(""))),
            ("'abc 123'.find('xyz')", Ok(json!(""))),
            ("'123 abc 456'.findAll('[0-9]+')", Ok(json!(["123", "456"]))),
            ("'123 abc 456'.findAll('[0-9]+', 1)", Ok(json!(["123"]))),
            ("'123 abc 456'.findAll('[0-9]+', 0)", Ok(json!([]))),
            ("'123 abc 456'.findAll('xyz')", Ok(json!([]))),
            ("'123 abc'.findAll('[0-9]*')", Ok(json!(["123", "", "", "", ""]))),
            ("'1, 2, 3, 4'.findAll('[0-9]+').map(x, int(x)).sum() < 100", Ok(json!(true))),
            ("'abc'.find('[')", Err("Illegal regex: ")),
            ("'abc'.matches('^a') && !'abc'.matches('^b')", Ok(json!(true))),
        ]);
    }
}
