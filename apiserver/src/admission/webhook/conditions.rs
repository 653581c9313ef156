//! A webhook's matchConditions: CEL expressions over `object`, `oldObject`, `request` (the
//! AdmissionRequest) and `authorizer`, all of which must be true for the webhook to be called. As upstream's
//! matcher: one false condition means no match whatever the others gave; otherwise errors make
//! the outcome a failure (the errors aggregated as Go's `[a, b]`), which the failure policy then
//! turns into a refusal (Fail) or a skipped webhook (Ignore).

use serde_json::Value;

use super::matching::Webhook;
use crate::admission::policy::expr::Bindings;
use crate::admission::{request_variable, Attributes};
use crate::api::Api;

/// What a webhook's conditions say about a request.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Match,
    NoMatch,
    /// No condition was false but some failed to evaluate: the errors.
    Failed(String),
}

pub fn evaluate(api: &Api, hook: &Webhook, a: &Attributes) -> Outcome {
    if hook.match_conditions.is_empty() {
        return Outcome::Match;
    }
    let authorizer = crate::admission::policy::authorizer(api, a);
    let mut b = Bindings::new(authorizer.as_ref());
    b.set("object", a.object.clone().unwrap_or(Value::Null));
    b.set("oldObject", a.old_object.clone().unwrap_or(Value::Null));
    b.set("request", request_variable(a));
    judge(hook.match_conditions.iter().map(|(_, expression)| (expression.as_str(), b.eval_bool(expression))))
}

/// The outcome of conditions already evaluated: (expression, result).
fn judge<'a>(results: impl Iterator<Item = (&'a str, Result<bool, String>)>) -> Outcome {
    let mut errors = vec![];
    for (expression, result) in results {
        match result {
            Ok(true) => {}
            Ok(false) => return Outcome::NoMatch,
            Err(e) => errors.push(format!("expression '{expression}' resulted in error: {e}")),
        }
    }
    match errors.len() {
        0 => Outcome::Match,
        1 => Outcome::Failed(errors.remove(0)),
        _ => Outcome::Failed(format!("[{}]", errors.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn false_beats_errors_and_errors_beat_true() {
        let err = || Err("no such key: x".to_string());
        assert_eq!(judge([("a", Ok(true)), ("b", Ok(true))].into_iter()), Outcome::Match);
        assert_eq!(judge([("a", err()), ("b", Ok(true)), ("c", Ok(false)), ("d", err())].into_iter()), Outcome::NoMatch);
        assert_eq!(judge([("a", err()), ("b", Ok(true))].into_iter()), Outcome::Failed("expression 'a' resulted in error: no such key: x".into()));
        assert_eq!(
            judge([("a", err()), ("b", err())].into_iter()),
            Outcome::Failed("[expression 'a' resulted in error: no such key: x, expression 'b' resulted in error: no such key: x]".into())
        );
    }
}
