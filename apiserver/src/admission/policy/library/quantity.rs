//! Kubernetes' quantity library: `quantity(s)`, `isQuantity(s)` and a Quantity's `sign`,
//! `isInteger`, `asInteger`, `asApproximateFloat`, `add`, `sub`, `compareTo`, `isGreaterThan`
//! and `isLessThan`, over the code base's one quantity parser (exact to the billionth; values
//! beyond about 1.7e29 units are refused as too large, where upstream's arbitrary precision
//! takes them). Quantities are equal when their values are (`quantity('1Gi') ==
//! quantity('1073741824')`); like upstream's they have no `string()` form.

use berth_names::quantity::Quantity;
use cel::objects::Opaque;
use cel::{Context, ExecutionError, FunctionContext, ResolveResult, Value};

use super::{opaque, wrap, Call};

/// A Quantity as a CEL value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Q(pub Quantity);

impl Opaque for Q {
    fn runtime_type_name(&self) -> &str {
        "kubernetes.Quantity"
    }
}

const NANO: i128 = 1_000_000_000;

pub(super) fn register(ctx: &mut Context<'static>) {
    ctx.add_function("quantity", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        Quantity::parse(call.global_string()?).map(|q| wrap(Q(q))).map_err(|e| call.error(e))
    });
    ctx.add_function("isQuantity", |ftx: &FunctionContext| -> ResolveResult {
        let call = Call::of(ftx)?;
        Ok(Value::Bool(Quantity::parse(call.global_string()?).is_ok()))
    });
    // `sign` is a global function upstream (`sign(q)`); the member form works too
    ctx.add_function("sign", |ftx: &FunctionContext| unary(ftx, |_, q| Ok(Value::Int(q.nanos().signum() as i64))));
    ctx.add_function("isInteger", |ftx: &FunctionContext| unary(ftx, |_, q| Ok(Value::Bool(as_integer(q).is_some()))));
    ctx.add_function("asInteger", |ftx: &FunctionContext| {
        unary(ftx, |call, q| as_integer(q).map(Value::Int).ok_or_else(|| call.error("cannot convert value to integer")))
    });
    ctx.add_function("asApproximateFloat", |ftx: &FunctionContext| unary(ftx, |_, q| Ok(Value::Float(q.nanos() as f64 / NANO as f64))));
    ctx.add_function("add", |ftx: &FunctionContext| binary(ftx, |a, b| Ok(wrap(Q(a + b)))));
    ctx.add_function("sub", |ftx: &FunctionContext| binary(ftx, |a, b| Ok(wrap(Q(a - b)))));
    ctx.add_function("compareTo", |ftx: &FunctionContext| {
        compare(ftx, |o| {
            Value::Int(match o {
                std::cmp::Ordering::Less => -1,
                std::cmp::Ordering::Equal => 0,
                std::cmp::Ordering::Greater => 1,
            })
        })
    });
    ctx.add_function("isGreaterThan", |ftx: &FunctionContext| compare(ftx, |o| Value::Bool(o.is_gt())));
    ctx.add_function("isLessThan", |ftx: &FunctionContext| compare(ftx, |o| Value::Bool(o.is_lt())));
}

/// The value as an int64 when it is a whole number that fits one (upstream's AsInt64).
fn as_integer(q: Quantity) -> Option<i64> {
    let n = q.nanos();
    if n % NANO != 0 {
        return None;
    }
    i64::try_from(n / NANO).ok()
}

fn unary(ftx: &FunctionContext, f: impl Fn(&Call, Quantity) -> ResolveResult) -> ResolveResult {
    let call = Call::of(ftx)?;
    match call.subject()? {
        (v, []) => match opaque::<Q>(v) {
            Some(q) => f(&call, q.0),
            None => Err(ExecutionError::NoSuchOverload),
        },
        _ => Err(ExecutionError::NoSuchOverload),
    }
}

/// The receiver and the operand (a Quantity; `add` and `sub` also take an int).
fn operands(call: &Call, ints: bool) -> Result<(Quantity, Quantity), ExecutionError> {
    let this = opaque::<Q>(call.receiver()?).ok_or(ExecutionError::NoSuchOverload)?;
    match call.args.as_slice() {
        [Value::Int(i)] if ints => Ok((this.0, Quantity::from_units(*i))),
        [other] => opaque::<Q>(other).map(|q| (this.0, q.0)).ok_or(ExecutionError::NoSuchOverload),
        _ => Err(ExecutionError::NoSuchOverload),
    }
}

fn binary(ftx: &FunctionContext, f: impl Fn(Quantity, Quantity) -> ResolveResult) -> ResolveResult {
    let call = Call::of(ftx)?;
    let (a, b) = operands(&call, true)?;
    f(a, b)
}

fn compare(ftx: &FunctionContext, f: impl Fn(std::cmp::Ordering) -> Value) -> ResolveResult {
    let call = Call::of(ftx)?;
    let (a, b) = operands(&call, false)?;
    Ok(f(a.cmp(&b)))
}

#[cfg(test)]
mod tests {
    use super::super::testing::check;
    use serde_json::json;

    #[test]
    fn quantities_parse_compare_and_add_as_upstream_documents() {
        check(&[
            ("isQuantity('1.3G')", Ok(json!(true))),
            ("isQuantity('1.3Gi')", Ok(json!(true))),
            ("isQuantity('1,3G')", Ok(json!(false))),
            ("isQuantity('10000k')", Ok(json!(true))),
            ("isQuantity('200K')", Ok(json!(false))),
            ("isQuantity('Three')", Ok(json!(false))),
            ("isQuantity('Mi')", Ok(json!(false))),
            ("quantity('200K')", Err("unable to parse quantity's suffix")),
            ("quantity('Three')", Err("quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'")),
            ("quantity('Mi')", Err("quantities must match the regular expression")),
            ("quantity('50000000G').isInteger()", Ok(json!(true))),
            ("quantity('50k').isInteger()", Ok(json!(true))),
            ("quantity('1.5').isInteger()", Ok(json!(false))),
            ("quantity('50000000000G').isInteger()", Ok(json!(false))),
            ("quantity('50000000000G').asInteger()", Err("cannot convert value to integer")),
            ("quantity('50k').asInteger()", Ok(json!(50000))),
            ("quantity('50k').asInteger() == 50000", Ok(json!(true))),
            ("quantity('50k').sub(20000).asApproximateFloat() == 30000.0", Ok(json!(true))),
            ("quantity('1.5Gi').asApproximateFloat()", Ok(json!(1610612736.0))),
            ("quantity('50k').add(quantity('20k')) == quantity('70k')", Ok(json!(true))),
            ("quantity('50k').add(20) == quantity('50020')", Ok(json!(true))),
            ("quantity('50k').sub(quantity('20k')) == quantity('30k')", Ok(json!(true))),
            ("quantity('50k').sub(20000) == quantity('30k')", Ok(json!(true))),
            ("quantity('50k').add(20).sub(quantity('100k')).sub(-50000) == quantity('20')", Ok(json!(true))),
            ("quantity('200M').compareTo(quantity('0.2G'))", Ok(json!(0))),
            ("quantity('50M').compareTo(quantity('50Mi'))", Ok(json!(-1))),
            ("quantity('50Mi').compareTo(quantity('50M'))", Ok(json!(1))),
            ("quantity('150Mi').isGreaterThan(quantity('100Mi'))", Ok(json!(true))),
            ("quantity('50Mi').isGreaterThan(quantity('100Mi'))", Ok(json!(false))),
            ("quantity('50M').isLessThan(quantity('100M'))", Ok(json!(true))),
            ("quantity('100M').isLessThan(quantity('50M'))", Ok(json!(false))),
            ("quantity('1Gi') == quantity('1073741824')", Ok(json!(true))),
            ("quantity('1Gi') != quantity('1G')", Ok(json!(true))),
            ("sign(quantity('-50k'))", Ok(json!(-1))),
            ("quantity('0').sign()", Ok(json!(0))),
            ("quantity('50k').sign()", Ok(json!(1))),
            ("quantity('1G') < quantity('2G')", Err("no such overload")),
            ("quantity('1G').isLessThan(1)", Err("no such overload")),
            ("string(quantity('1G'))", Err("no such overload")),
        ]);
    }
}
