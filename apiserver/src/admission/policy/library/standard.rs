//! Two standard functions the `cel` crate implements unlike cel-go, replaced: `size` of a
//! string counts characters (Unicode code points, as cel-go does; the crate counts bytes), and
//! `matches` keeps its compiled pattern (the crate compiles it on every call, some microseconds
//! each). The crate's own overloads win over registered functions, so [`rewrite`] renames the
//! parser's calls to them, once per compiled expression, to names no expression can spell;
//! this module registers those.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cel::common::ast::{EntryExpr, Expr};
use cel::common::types::{CelInt, CelString};
use cel::parser::Expression;
use cel::{Context, ExecutionError, FunctionContext, ResolveResult, Value};

const SIZE: &str = "\u{0}size";
const MATCHES: &str = "\u{0}matches";

pub(super) fn register(ctx: &mut Context<'static>) {
    ctx.add_function(SIZE, size);
    ctx.add_function(MATCHES, matches);
}

/// Renames the calls of `size` and `matches` in `e` to this module's functions.
pub(crate) fn rewrite(e: &mut Expression) {
    match &mut e.expr {
        Expr::Call(call) => {
            let arity = call.args.len() + usize::from(call.target.is_some());
            match (call.func_name.as_str(), arity) {
                ("size", 1) => call.func_name = SIZE.into(),
                ("matches", 2) => call.func_name = MATCHES.into(),
                _ => {}
            }
            if let Some(t) = call.target.as_mut() {
                rewrite(t);
            }
            call.args.iter_mut().for_each(rewrite);
        }
        Expr::Comprehension(c) => {
            for part in [&mut c.iter_range, &mut c.accu_init, &mut c.loop_cond, &mut c.loop_step, &mut c.result] {
                rewrite(part);
            }
        }
        Expr::List(l) => l.elements.iter_mut().for_each(rewrite),
        Expr::Map(m) => {
            for entry in &mut m.entries {
                match &mut entry.expr {
                    EntryExpr::MapEntry(me) => {
                        rewrite(&mut me.key);
                        rewrite(&mut me.value);
                    }
                    EntryExpr::StructField(f) => rewrite(&mut f.value),
                }
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                match &mut entry.expr {
                    EntryExpr::MapEntry(me) => {
                        rewrite(&mut me.key);
                        rewrite(&mut me.value);
                    }
                    EntryExpr::StructField(f) => rewrite(&mut f.value),
                }
            }
        }
        Expr::Select(s) => rewrite(&mut s.operand),
        Expr::Unspecified | Expr::Ident(_) | Expr::Literal(_) => {}
    }
}

/// `size(x)` / `x.size()`: characters of a string, else what the value's size is (list, map,
/// bytes), without converting it.
fn size(ftx: &FunctionContext) -> ResolveResult {
    let v = match (&ftx.this, ftx.args.as_slice()) {
        (Some(t), []) => t,
        (None, [a]) => a,
        _ => return Err(ExecutionError::NoSuchOverload),
    };
    if let Some(s) = v.downcast_ref::<CelString>() {
        return Ok(Value::Int(s.inner().chars().count() as i64));
    }
    let n: CelInt = v.as_sizer().ok_or(ExecutionError::NoSuchOverload)?.size();
    Ok(Value::Int(*n.inner()))
}

/// `s.matches(re)` (also `matches(s, re)`): whether RE2 pattern `re` matches somewhere in `s`.
fn matches(ftx: &FunctionContext) -> ResolveResult {
    let (s, re) = match (&ftx.this, ftx.args.as_slice()) {
        (Some(t), [re]) => (t, re),
        (None, [s, re]) => (s, re),
        _ => return Err(ExecutionError::NoSuchOverload),
    };
    let (Some(s), Some(re)) = (s.downcast_ref::<CelString>(), re.downcast_ref::<CelString>()) else {
        return Err(ExecutionError::NoSuchOverload);
    };
    let re = regex(re.inner()).map_err(|e| ftx.error(e))?;
    Ok(Value::Bool(re.is_match(s.inner())))
}

/// Compiled patterns kept at most (the cache is emptied when full).
const KEEP: usize = 256;

/// The compiled pattern (RE2 syntax, which the regex crate shares), kept for the next calls,
/// or upstream's `Illegal regex: ...` error.
pub(super) fn regex(pattern: &str) -> Result<Arc<regex::Regex>, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<regex::Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(re) = cache.lock().unwrap_or_else(|e| e.into_inner()).get(pattern) {
        return Ok(re.clone());
    }
    let re = Arc::new(regex::Regex::new(pattern).map_err(|e| format!("Illegal regex: {}", e.to_string().split_whitespace().collect::<Vec<_>>().join(" ")))?);
    let mut c = cache.lock().unwrap_or_else(|e| e.into_inner());
    if c.len() >= KEEP {
        c.clear();
    }
    c.insert(pattern.to_string(), re.clone());
    Ok(re)
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use serde_json::json;

    #[test]
    fn size_counts_characters_and_matches_keeps_its_patterns() {
        check(&[
            ("size('héllo')", Ok(json!(5))),
            ("'héllo'.size()", Ok(json!(5))),
            ("size([1, 2, 3])", Ok(json!(3))),
            ("{'a': 1}.size()", Ok(json!(1))),
            ("size(b'ab')", Ok(json!(2))),
            ("size(1)", Err("no such overload")),
            ("['ab', 'cde'].all(s, size(s) >= 2) && [[1], [2, 3]].map(l, l.size()) == [1, 2]", Ok(json!(true))),
            ("'abc'.matches('^a') && !'abc'.matches('^b') && matches('abc', 'b')", Ok(json!(true))),
            ("{'k': 'v1'}.all(k, k.matches('^k$'))", Ok(json!(true))),
            ("'abc'.matches('[')", Err("Illegal regex: ")),
            ("'abc'.matches(1)", Err("no such overload")),
        ]);
    }
}
