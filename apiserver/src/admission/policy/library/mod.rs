//! Kubernetes' CEL libraries on the `cel` crate: the functions upstream's apiserver adds to every
//! CEL environment (its `library` package and the cel-go extensions it enables), registered once
//! into the root context that every evaluation's context is a child of ([`root`]):
//! - [`strings`]: cel-go's strings extension at the version Kubernetes 1.29+ enables (2):
//!   `charAt`, `indexOf`, `lastIndexOf`, `lowerAscii`, `upperAscii`, `replace`, `split`,
//!   `substring`, `trim`, `join`, `format` ([`format`]), `strings.quote`; and the regex library
//!   (`find`, `findAll`);
//! - [`lists`]: `isSorted`, `sum`, `min`, `max`, `indexOf`, `lastIndexOf` on lists, and the sets
//!   extension (`sets.contains`, `sets.equivalent`, `sets.intersects`);
//! - [`url`]: `url`, `isURL` and the accessors, with Go's net/url semantics;
//! - [`quantity`]: `quantity`, `isQuantity` and the Quantity members, over the one quantity
//!   parser (`berth_names::quantity`);
//! - [`net`]: `ip`, `isIP`, `ip.isCanonical`, `cidr`, `isCIDR` and their members;
//! - [`authz`]: the `authorizer` variable and its checks, answered by the API's authorization;
//! - [`standard`]: `size` and `matches` in cel-go's manner where the crate differs (the
//!   compiled expression's calls to them renamed by [`rewrite`]).
//!
//! Values of the library's own types (Quantity, URL, IP, CIDR, the authorizer's checks) are
//! opaque CEL values: they compare with `==` as upstream's do, and IP and CIDR convert to
//! strings with `string()`. This module only computes values; what the variables are and how
//! errors read to the user is [`super::expr`]'s business.

pub mod authz;
mod format;
mod lists;
mod net;
mod quantity;
mod standard;
mod strings;
mod url;

pub(crate) use standard::rewrite;

use std::sync::{Arc, OnceLock};

use cel::objects::Opaque;
use cel::{Context, ExecutionError, FunctionContext, ResolveResult, Value};

/// The context every evaluation's context is a child of: the standard library and Kubernetes'.
pub(crate) fn root() -> &'static Context<'static> {
    static ROOT: OnceLock<Context<'static>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mut ctx = Context::default();
        standard::register(&mut ctx);
        strings::register(&mut ctx);
        lists::register(&mut ctx);
        url::register(&mut ctx);
        quantity::register(&mut ctx);
        net::register(&mut ctx);
        authz::register(&mut ctx);
        ctx.add_function("string", to_string);
        ctx
    })
}

/// The receiver and arguments of one call, as values.
pub(crate) struct Call<'f, 'c, 'n> {
    ftx: &'f FunctionContext<'c, 'n>,
    /// The receiver (`x` of `x.f(...)`), None for a global call.
    pub this: Option<Value>,
    pub args: Vec<Value>,
}

impl<'f, 'c, 'n> Call<'f, 'c, 'n> {
    pub fn of(ftx: &'f FunctionContext<'c, 'n>) -> Result<Self, ExecutionError> {
        let this = ftx.this.as_ref().map(|t| Value::try_from(t.as_ref())).transpose()?;
        let args = ftx.args.iter().map(|a| Value::try_from(a.as_ref())).collect::<Result<Vec<_>, _>>()?;
        Ok(Call { ftx, this, args })
    }

    /// An error of this function, in `message`'s words.
    pub fn error(&self, message: impl ToString) -> ExecutionError {
        self.ftx.error(message)
    }

    /// The receiver of a member function (which upstream declares only as a member).
    pub fn receiver(&self) -> Result<&Value, ExecutionError> {
        self.this.as_ref().ok_or(ExecutionError::NoSuchOverload)
    }

    /// The receiver of a function declared both ways (`f(x)` and `x.f()`): the target or the
    /// first argument; the rest are the arguments.
    pub fn subject(&self) -> Result<(&Value, &[Value]), ExecutionError> {
        match &self.this {
            Some(t) => Ok((t, &self.args)),
            None => self.args.split_first().ok_or(ExecutionError::NoSuchOverload),
        }
    }

    /// The single string argument of a global function like `ip(s)`.
    pub fn global_string(&self) -> Result<&str, ExecutionError> {
        match (&self.this, self.args.as_slice()) {
            (None, [Value::String(s)]) => Ok(s),
            _ => Err(ExecutionError::NoSuchOverload),
        }
    }
}

/// The library value of type `T` in `v`, if it is one.
pub(crate) fn opaque<T: Opaque>(v: &Value) -> Option<&T> {
    match v {
        Value::Opaque(o) => o.downcast_ref::<T>(),
        _ => None,
    }
}

pub(crate) fn wrap<T: Opaque>(v: T) -> Value {
    Value::Opaque(Arc::new(v))
}

pub(crate) fn string(s: impl Into<String>) -> Value {
    Value::String(Arc::new(s.into()))
}

/// `string(x)` for what the standard library does not convert: bools (as cel-go does), IP
/// addresses and CIDRs (as upstream's libraries do). Quantities and URLs have no string form
/// upstream either.
fn to_string(ftx: &FunctionContext) -> ResolveResult {
    let call = Call::of(ftx)?;
    let (v, []) = call.subject()? else { return Err(ExecutionError::NoSuchOverload) };
    match v {
        Value::Bool(b) => Ok(string(b.to_string())),
        v => net::to_string(v).map(string).ok_or(ExecutionError::NoSuchOverload),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Evaluating expressions in the library's context, for the libraries' tests.

    use serde_json::Value as Json;

    /// The value of `expression` as JSON (library values, which have none, as null), or the error.
    pub fn eval(expression: &str) -> Result<Json, String> {
        let b = crate::admission::policy::expr::Bindings::default();
        b.eval(expression)
    }

    /// Checks each (expression, expected) pair: a JSON value, or `Err(substring of the error)`.
    pub fn check(cases: &[(&str, Result<Json, &str>)]) {
        for (expression, want) in cases {
            let got = eval(expression);
            match (want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(g, w, "{expression}"),
                (Err(w), Err(g)) => assert!(g.contains(w), "{expression}: error {g:?} lacks {w:?}"),
                _ => panic!("{expression}: got {got:?}, want {want:?}"),
            }
        }
    }
}
