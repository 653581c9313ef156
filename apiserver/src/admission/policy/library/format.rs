//! cel-go's `<string>.format(<list>)`: printf-style clauses `%s`, `%d`, `%f`, `%e` (with an
//! optional precision, `%.2f`), `%b`, `%x`, `%X`, `%o` and `%%`, each taking the next argument;
//! values print as CEL literals inside lists and maps (strings quoted, map keys sorted).

use cel::{ExecutionError, FunctionContext, ResolveResult, Value};

use super::{string, Call};

const DEFAULT_PRECISION: usize = 6;

pub(super) fn format(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    let Value::String(template) = call.receiver()? else { return Err(ExecutionError::NoSuchOverload) };
    let [Value::List(args)] = call.args.as_slice() else { return Err(ExecutionError::NoSuchOverload) };
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars().peekable();
    let mut next = 0;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        if chars.peek() == Some(&'%') {
            chars.next();
            out.push('%');
            continue;
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut digits = String::new();
            while let Some(d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                digits.push(*d);
                chars.next();
            }
            precision = Some(digits.parse::<usize>().map_err(|_| call.error("error during formatting: unable to convert precision specifier to integer"))?);
        }
        let Some(verb) = chars.next() else {
            return Err(call.error("error during formatting: unexpected end of string"));
        };
        let arg = args.get(next).ok_or_else(|| call.error(format!("error during formatting: index {next} out of range")))?;
        next += 1;
        let clause = match verb {
            's' => as_string(arg),
            'd' => decimal(arg),
            'f' => fixed(arg, precision.unwrap_or(DEFAULT_PRECISION)),
            'e' => scientific(arg, precision.unwrap_or(DEFAULT_PRECISION)),
            'b' => radix(arg, 2, false),
            'o' => radix(arg, 8, false),
            'x' => radix(arg, 16, false),
            'X' => radix(arg, 16, true),
            other => Err(format!("could not parse formatting clause: unrecognized formatting clause \"{other}\"")),
        };
        out.push_str(&clause.map_err(|e| call.error(format!("error during formatting: {e}")))?);
    }
    Ok(string(out))
}

fn type_name(v: &Value) -> String {
    match v {
        Value::Float(_) => "double".into(),
        other => other.type_of().to_string(),
    }
}

/// `%s`: the value as `string()` gives it; lists and maps as CEL literals.
fn as_string(v: &Value) -> Result<String, String> {
    match v {
        Value::List(_) | Value::Map(_) => literal(v),
        Value::Null => Ok("null".into()),
        Value::Opaque(_) | Value::Function(..) => Err(format!(
            "string clause can only be used on strings, bools, bytes, ints, doubles, maps, lists, types, durations, and timestamps, was given {}",
            type_name(v)
        )),
        other => Ok(plain(other)),
    }
}

/// A value as `string()` converts it (the text `%s` gives a scalar).
pub(super) fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.to_string(),
        Value::Int(i) => i.to_string(),
        Value::UInt(u) => u.to_string(),
        Value::Float(f) => float(*f),
        Value::Bool(b) => b.to_string(),
        Value::Bytes(b) => String::from_utf8_lossy(b).into_owned(),
        Value::Null => "null".into(),
        Value::Timestamp(t) => jiff::Timestamp::new(t.timestamp(), t.timestamp_subsec_nanos() as i32).map_or_else(|_| t.to_rfc3339(), |ts| ts.to_string()),
        Value::Duration(d) => duration(d.num_seconds(), d.subsec_nanos()),
        other => format!("{other:?}"),
    }
}

/// A double as cel-go prints it (Go's `%g`): the shortest form that reads back the same.
fn float(f: f64) -> String {
    if f.is_nan() {
        "NaN".into()
    } else if f.is_infinite() {
        if f > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        // Go's %g: the exponent form when the decimal exponent is below -4 or at least 6
        let e = format!("{f:e}");
        let (m, x) = e.split_once('e').unwrap_or((&e, "0"));
        let x: i32 = x.parse().unwrap_or(0);
        if f != 0.0 && !(-4..6).contains(&x) {
            return format!("{m}e{}{:02}", if x < 0 { '-' } else { '+' }, x.abs());
        }
        format!("{f}")
    }
}

/// A duration as CEL prints it: seconds with up to nine decimals (`6347s`, `1.5s`).
fn duration(secs: i64, subsec_nanos: i32) -> String {
    let nanos = subsec_nanos.abs();
    let sign = if secs < 0 || subsec_nanos < 0 { "-" } else { "" };
    if nanos == 0 {
        return format!("{sign}{}s", secs.abs());
    }
    let frac = format!("{nanos:09}");
    format!("{sign}{}.{}s", secs.abs(), frac.trim_end_matches('0'))
}

/// A value inside a list or map: strings and bytes quoted, timestamps and durations as their
/// constructor calls.
fn literal(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::String(s) => super::strings::quote(s),
        Value::Bytes(b) => format!("b{}", super::strings::quote(&String::from_utf8_lossy(b))),
        Value::Float(f) if !f.is_finite() => format!("\"{}\"", float(*f)),
        Value::Float(f) => format!("{f:.DEFAULT_PRECISION$}"),
        Value::Timestamp(_) => format!("timestamp({})", super::strings::quote(&plain(v))),
        Value::Duration(_) => format!("duration({})", super::strings::quote(&plain(v))),
        Value::List(items) => format!("[{}]", items.iter().map(literal).collect::<Result<Vec<_>, _>>()?.join(", ")),
        Value::Map(m) => {
            let mut pairs = m
                .map
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        cel::objects::Key::String(s) => super::strings::quote(s),
                        cel::objects::Key::Int(i) => i.to_string(),
                        cel::objects::Key::Uint(u) => u.to_string(),
                        cel::objects::Key::Bool(b) => b.to_string(),
                    };
                    Ok((key, literal(v)?))
                })
                .collect::<Result<Vec<_>, String>>()?;
            pairs.sort();
            format!("{{{}}}", pairs.into_iter().map(|(k, v)| format!("{k}:{v}")).collect::<Vec<_>>().join(", "))
        }
        other => as_string(other)?,
    })
}

fn decimal(v: &Value) -> Result<String, String> {
    match v {
        Value::Int(i) => Ok(i.to_string()),
        Value::UInt(u) => Ok(u.to_string()),
        other => Err(format!("decimal clause can only be used on integers, was given {}", type_name(other))),
    }
}

fn number(v: &Value, clause: &str) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::UInt(u) => Ok(*u as f64),
        Value::String(s) if s.as_str() == "NaN" => Ok(f64::NAN),
        Value::String(s) if s.as_str() == "Infinity" => Ok(f64::INFINITY),
        Value::String(s) if s.as_str() == "-Infinity" => Ok(f64::NEG_INFINITY),
        other => Err(format!("{clause} clause can only be used on doubles, was given {}", type_name(other))),
    }
}

fn special(f: f64) -> Option<String> {
    if f.is_nan() {
        Some("NaN".into())
    } else if f.is_infinite() {
        Some(if f > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        None
    }
}

fn fixed(v: &Value, precision: usize) -> Result<String, String> {
    let f = number(v, "fixed-point")?;
    Ok(special(f).unwrap_or_else(|| format!("{f:.precision$}")))
}

/// `%e` as Go's 'e' format: `2.718280e+00`.
fn scientific(v: &Value, precision: usize) -> Result<String, String> {
    let f = number(v, "scientific")?;
    if let Some(s) = special(f) {
        return Ok(s);
    }
    let e = format!("{f:.precision$e}");
    let (mantissa, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    Ok(format!("{mantissa}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs()))
}

/// `%b`, `%o`, `%x`, `%X`: integers (and bools for `%b`) in that base; strings and bytes in hex
/// byte by byte.
fn radix(v: &Value, base: u32, upper: bool) -> Result<String, String> {
    let digits = |n: u64| match (base, upper) {
        (2, _) => format!("{n:b}"),
        (8, _) => format!("{n:o}"),
        (_, false) => format!("{n:x}"),
        (_, true) => format!("{n:X}"),
    };
    match v {
        Value::Int(i) if *i < 0 => Ok(format!("-{}", digits(i.unsigned_abs()))),
        Value::Int(i) => Ok(digits(*i as u64)),
        Value::UInt(u) => Ok(digits(*u)),
        Value::Bool(b) if base == 2 => Ok(if *b { "1" } else { "0" }.into()),
        Value::String(s) if base == 16 => Ok(hex(s.as_bytes(), upper)),
        Value::Bytes(b) if base == 16 => Ok(hex(b, upper)),
        other => {
            let name = match base {
                2 => "binary clause can only be used on integers and bools",
                8 => "octal clause can only be used on integers",
                _ => "only integers, byte buffers, and strings can be formatted as hex",
            };
            Err(format!("{name}, was given {}", type_name(other)))
        }
    }
}

fn hex(b: &[u8], upper: bool) -> String {
    b.iter().map(|c| if upper { format!("{c:02X}") } else { format!("{c:02x}") }).collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use serde_json::json;

    #[test]
    fn format_substitutes_clauses_as_cel_go_does() {
        check(&[
            (r#""this is a string: %s\nand an integer: %d".format(["str", 42])"#, Ok(json!("this is a string: str\nand an integer: 42"))),
            (r#""a double substituted with %%s: %s".format([64.2])"#, Ok(json!("a double substituted with %s: 64.2"))),
            (r#""timestamp: %s".format([timestamp("2023-02-03T23:31:20+00:00")])"#, Ok(json!("timestamp: 2023-02-03T23:31:20Z"))),
            (r#""duration: %s".format([duration("1h45m47s")])"#, Ok(json!("duration: 6347s"))),
            (r#""%f".format([3.14])"#, Ok(json!("3.140000"))),
            (r#""%.2f".format([3.14159])"#, Ok(json!("3.14"))),
            (r#""%e".format([2.71828])"#, Ok(json!("2.718280e+00"))),
            (r#""5 in binary: %b".format([5])"#, Ok(json!("5 in binary: 101"))),
            (r#""26 in hex: %x".format([26])"#, Ok(json!("26 in hex: 1a"))),
            (r#""26 in hex (uppercase): %X".format([26])"#, Ok(json!("26 in hex (uppercase): 1A"))),
            (r#""30 in octal: %o".format([30])"#, Ok(json!("30 in octal: 36"))),
            (r#""hex of a string: %x".format(["Hi"])"#, Ok(json!("hex of a string: 4869"))),
            (
                r#""a map inside a list: %s".format([[1, 2, 3, {"a": "x", "b": "y", "c": "z"}]])"#,
                Ok(json!(r#"a map inside a list: [1, 2, 3, {"a":"x", "b":"y", "c":"z"}]"#)),
            ),
            (
                r#""true bool: %s - false bool: %s\nbinary bool: %b".format([true, false, true])"#,
                Ok(json!("true bool: true - false bool: false\nbinary bool: 1")),
            ),
            (r#""null: %s".format([null])"#, Ok(json!("null: null"))),
            (r#""%d %d".format([1])"#, Err("index 1 out of range")),
            (r#""%d".format(["x"])"#, Err("decimal clause can only be used on integers, was given string")),
            (r#""%z".format([1])"#, Err("unrecognized formatting clause")),
        ]);
    }
}
