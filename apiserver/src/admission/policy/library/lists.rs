//! Kubernetes' list library (`isSorted`, `sum`, `min`, `max`, `indexOf`, `lastIndexOf` on lists;
//! `indexOf` and `lastIndexOf` are registered with the strings library, which shares their
//! names) and cel-go's sets extension (`sets.contains`, `sets.equivalent`, `sets.intersects`).
//! Elements compare and equal as CEL's operators do (numbers across int, uint and double).

use std::cmp::Ordering;
use std::sync::Arc;

use cel::{Context, ExecutionError, FunctionContext, ResolveResult, Value};

use super::Call;

pub(super) fn register(ctx: &mut Context<'static>) {
    ctx.add_function("isSorted", is_sorted);
    ctx.add_function("sum", sum);
    ctx.add_function("min", |ftx: &FunctionContext| extreme(ftx, Ordering::Less));
    ctx.add_function("max", |ftx: &FunctionContext| extreme(ftx, Ordering::Greater));
    ctx.add_function("sets.contains", |ftx: &FunctionContext| sets(ftx, contains_all));
    ctx.add_function("sets.equivalent", |ftx: &FunctionContext| sets(ftx, |a, b| contains_all(a, b) && contains_all(b, a)));
    ctx.add_function("sets.intersects", |ftx: &FunctionContext| sets(ftx, |a, b| b.iter().any(|x| a.contains(x))));
}

/// The receiver of a list member function that takes no argument.
fn list<'v>(call: &'v Call) -> Result<&'v Arc<Vec<Value>>, ExecutionError> {
    match (call.receiver()?, call.args.as_slice()) {
        (Value::List(l), []) => Ok(l),
        _ => Err(ExecutionError::NoSuchOverload),
    }
}

/// CEL's ordering of two values (numbers across types, strings, bools, bytes, durations,
/// timestamps), or no such overload.
fn compare(a: &Value, b: &Value) -> Result<Ordering, ExecutionError> {
    match (a, b) {
        (Value::Bytes(x), Value::Bytes(y)) => Ok(x.cmp(y)),
        _ => a.partial_cmp(b).ok_or(ExecutionError::NoSuchOverload),
    }
}

fn is_sorted(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    for pair in list(&call)?.windows(2) {
        if compare(&pair[0], &pair[1])? == Ordering::Greater {
            return Ok(Value::Bool(false));
        }
    }
    Ok(Value::Bool(true))
}

/// The sum of numbers of one type or of durations; 0 for an empty list.
fn sum(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    let items = list(&call)?;
    let Some((first, rest)) = items.split_first() else { return Ok(Value::Int(0)) };
    let overflow = || call.error("integer overflow");
    rest.iter().try_fold(first.clone(), |acc, v| match (&acc, v) {
        (Value::Int(a), Value::Int(b)) => a.checked_add(*b).map(Value::Int).ok_or_else(overflow),
        (Value::UInt(a), Value::UInt(b)) => a.checked_add(*b).map(Value::UInt).ok_or_else(overflow),
        (Value::Float(a), Value::Float(b)) => Ok(Value::Float(a + b)),
        (Value::Duration(a), Value::Duration(b)) => a.checked_add(b).map(Value::Duration).ok_or_else(|| call.error("duration overflow")),
        _ => Err(ExecutionError::NoSuchOverload),
    })
}

/// The least (`Less`) or greatest (`Greater`) element, the first of equal ones.
fn extreme(ftx: &FunctionContext, want: Ordering) -> ResolveResult {
    let call = Call::of(ftx)?;
    let name = if want == Ordering::Less { "min" } else { "max" };
    let items = list(&call)?;
    let Some((first, rest)) = items.split_first() else { return Err(call.error(format!("{name} called on empty list"))) };
    let mut best = first;
    for v in rest {
        if compare(v, best)? == want {
            best = v;
        }
    }
    Ok(best.clone())
}

/// The position of the first (last) element equal to `item`, -1 when none.
pub(super) fn position(list: &[Value], item: &Value, last: bool) -> i64 {
    let found = if last { list.iter().rposition(|v| v == item) } else { list.iter().position(|v| v == item) };
    found.map_or(-1, |i| i as i64)
}

fn contains_all(a: &[Value], b: &[Value]) -> bool {
    b.iter().all(|x| a.contains(x))
}

fn sets(ftx: &FunctionContext, f: impl Fn(&[Value], &[Value]) -> bool) -> ResolveResult {
    let call = Call::of(ftx)?;
    match (&call.this, call.args.as_slice()) {
        (None, [Value::List(a), Value::List(b)]) => Ok(Value::Bool(f(a, b))),
        _ => Err(ExecutionError::NoSuchOverload),
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use serde_json::json;

    #[test]
    fn the_list_library_behaves_as_documented() {
        check(&[
            ("[1, 2, 3].isSorted()", Ok(json!(true))),
            ("['a', 'b', 'b', 'c'].isSorted()", Ok(json!(true))),
            ("[2.0, 1.0].isSorted()", Ok(json!(false))),
            ("[1].isSorted()", Ok(json!(true))),
            ("[].isSorted()", Ok(json!(true))),
            ("[1, 'a'].isSorted()", Err("no such overload")),
            ("[1, 3].sum()", Ok(json!(4))),
            ("[1.0, 3.0].sum()", Ok(json!(4.0))),
            ("[duration('1m'), duration('1s')].sum() == duration('1m1s')", Ok(json!(true))),
            ("[].sum()", Ok(json!(0))),
            ("[9223372036854775807, 1].sum()", Err("integer overflow")),
            ("[1, 3].min()", Ok(json!(1))),
            ("[1, 3].max()", Ok(json!(3))),
            ("[].min()", Err("min called on empty list")),
            ("[].max()", Err("max called on empty list")),
            ("[1].min()", Ok(json!(1))),
            ("([0] + []).min()", Ok(json!(0))),
            ("['b', 'a', 'c'].max()", Ok(json!("c"))),
            ("[1, 2, 2, 3].indexOf(2)", Ok(json!(1))),
            ("['a', 'b', 'b', 'c'].lastIndexOf('b')", Ok(json!(2))),
            ("[1.0].indexOf(1.1)", Ok(json!(-1))),
            ("[].indexOf('string')", Ok(json!(-1))),
            ("[1, 2].indexOf(2.0)", Ok(json!(1))),
            // the documentation's examples over objects
            ("[{'weight': 0.25}, {'weight': 0.75}].map(x, x.weight).sum() == 1.0", Ok(json!(true))),
            ("[{'priority': 1}, {'priority': 2}].map(x, x.priority).max() < [{'priority': 5}].map(x, x.priority).min()", Ok(json!(true))),
            ("['first', 'should-be-first'].indexOf('should-be-first') == 1", Ok(json!(true))),
        ]);
    }

    #[test]
    fn the_sets_extension_compares_as_sets() {
        check(&[
            ("sets.contains([], [])", Ok(json!(true))),
            ("sets.contains([], [1])", Ok(json!(false))),
            ("sets.contains([1, 2, 3, 4], [2, 3])", Ok(json!(true))),
            ("sets.contains([1, 2, 3], [3, 2, 1])", Ok(json!(true))),
            ("sets.contains([2], [2.0])", Ok(json!(true))),
            ("sets.contains([[1], [2, 3]], [[2, 3]])", Ok(json!(true))),
            ("sets.equivalent([], [])", Ok(json!(true))),
            ("sets.equivalent([1], [1, 1])", Ok(json!(true))),
            ("sets.equivalent([1], [1u, 1.0])", Ok(json!(true))),
            ("sets.equivalent([1, 2, 3], [3u, 2.0, 1])", Ok(json!(true))),
            ("sets.equivalent([1, 2], [2, 2, 2])", Ok(json!(false))),
            ("sets.intersects([1], [1])", Ok(json!(true))),
            ("sets.intersects([1], [1, 1])", Ok(json!(true))),
            ("sets.intersects([1], [2])", Ok(json!(false))),
            ("sets.intersects([], [])", Ok(json!(false))),
            ("sets.intersects([1, 2], ['a', 2.0])", Ok(json!(true))),
        ]);
    }
}
