//! From the replica count the metrics ask for to the one the autoscaler sets, as upstream's
//! HPA controller normalizes it (pure: the autoscaler's history and the time are passed in).
//!
//! With `spec.behavior` (defaults filled): the recommendation is stabilized — not above the
//! lowest recommendation of the scale-up window, not below the highest of the scale-down
//! window — then limited by the scaling policies: each policy allows so many pods or percent
//! more (fewer) than the replicas at the start of its period (the scale events of that period
//! undone), `selectPolicy` picks the policy allowing the most change (Max), the least (Min),
//! or none (Disabled); and by min/maxReplicas.
//!
//! Without it (upstream's older rules): the highest recommendation of the downscale
//! stabilization window, at most twice the current replicas (at least 4), within
//! min/maxReplicas.
//!
//! Each result says why, in the words of the AbleToScale and ScalingLimited conditions.

use std::time::{Duration, Instant};

use k8s_openapi::api::autoscaling::v2::{HPAScalingRules, HorizontalPodAutoscalerBehavior};

/// A recommendation the metrics made, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recommendation {
    pub replicas: i32,
    pub at: Instant,
}

/// A change the autoscaler made (pods added or removed), and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScaleEvent {
    pub change: i32,
    pub at: Instant,
    pub outdated: bool,
}

/// What the autoscaler remembers of one HPA.
#[derive(Debug, Clone, Default)]
pub struct History {
    pub recommendations: Vec<Recommendation>,
    pub scale_ups: Vec<ScaleEvent>,
    pub scale_downs: Vec<ScaleEvent>,
}

/// The replica count to set, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub replicas: i32,
    /// AbleToScale's reason and message.
    pub able: (&'static str, &'static str),
    /// ScalingLimited: whether it is limited, its reason and message.
    pub limited: (bool, &'static str, &'static str),
}

/// The bounds of one normalization.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    pub current: i32,
    pub desired: i32,
    pub min: i32,
    pub max: i32,
}

const READY_FOR_NEW_SCALE: (&str, &str) = ("ReadyForNewScale", "recommended size matches current size");
const SCALE_DOWN_STABILIZED: (&str, &str) =
    ("ScaleDownStabilized", "recent recommendations were higher than current one, applying the highest recent recommendation");
const SCALE_UP_STABILIZED: (&str, &str) =
    ("ScaleUpStabilized", "recent recommendations were lower than current one, applying the lowest recent recommendation");
const WITHIN_RANGE: (&str, &str) = ("DesiredWithinRange", "the desired count is within the acceptable range");
const SCALE_UP_LIMIT: (&str, &str) = ("ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate");
const SCALE_DOWN_LIMIT: (&str, &str) = ("ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate");
const TOO_MANY: (&str, &str) = ("TooManyReplicas", "the desired replica count is more than the maximum replica count");
const TOO_FEW: (&str, &str) = ("TooFewReplicas", "the desired replica count is less than the minimum replica count");

/// The default scale-up rules (no stabilization; 4 pods or 100 % per 15 s).
fn default_scale_up() -> HPAScalingRules {
    defaulted(&HorizontalPodAutoscalerBehavior::default()).scale_up.unwrap_or_default()
}

/// The default scale-down rules (100 % per 15 s).
fn default_scale_down() -> HPAScalingRules {
    defaulted(&HorizontalPodAutoscalerBehavior::default()).scale_down.unwrap_or_default()
}

/// A behavior with upstream's defaults filled in (the API's defaulting of autoscaling/v2).
pub fn defaulted(b: &HorizontalPodAutoscalerBehavior) -> HorizontalPodAutoscalerBehavior {
    berth_apiserver::strategy::hpa::defaulted_behavior(b)
}

fn age(now: Instant, at: Instant) -> Duration {
    now.saturating_duration_since(at)
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

/// Pods changed by the events of the last `period_seconds`.
fn changed_within(events: &[ScaleEvent], period_seconds: i32, now: Instant) -> i32 {
    events.iter().filter(|e| age(now, e.at) < secs(period_seconds)).map(|e| e.change).sum()
}

/// Records `recommendation`, reusing the slot of one older than every window.
fn record(history: &mut History, recommendation: i32, reuse: Option<usize>, now: Instant) {
    let r = Recommendation { replicas: recommendation, at: now };
    match reuse {
        Some(i) => history.recommendations[i] = r,
        None => history.recommendations.push(r),
    }
}

/// The first recommendation of an autoscaler (its target's replicas when first seen).
pub fn record_initial(history: &mut History, current: i32, now: Instant) {
    if history.recommendations.is_empty() {
        history.recommendations.push(Recommendation { replicas: current, at: now });
    }
}

/// Upstream's rules without `spec.behavior`.
pub fn without_behavior(history: &mut History, downscale_window: Duration, b: Bounds, now: Instant) -> Normalized {
    let mut stabilized = b.desired;
    let mut old = None;
    for (i, r) in history.recommendations.iter().enumerate() {
        if age(now, r.at) > downscale_window {
            old = Some(i);
        } else if r.replicas > stabilized {
            stabilized = r.replicas;
        }
    }
    record(history, b.desired, old, now);
    let able = if stabilized != b.desired { SCALE_DOWN_STABILIZED } else { READY_FOR_NEW_SCALE };
    let scale_up_limit = (2 * b.current).max(4);
    let (max_allowed, over) = if b.max > scale_up_limit { (scale_up_limit, SCALE_UP_LIMIT) } else { (b.max, TOO_MANY) };
    let (replicas, why) = if stabilized < b.min {
        (b.min, TOO_FEW)
    } else if stabilized > max_allowed {
        (max_allowed, over)
    } else {
        (stabilized, WITHIN_RANGE)
    };
    Normalized { replicas, able, limited: (replicas != stabilized, why.0, why.1) }
}

/// Upstream's rules with `spec.behavior` (defaults filled, the scale-down window set).
pub fn with_behavior(history: &mut History, behavior: &HorizontalPodAutoscalerBehavior, b: Bounds, now: Instant) -> Normalized {
    let up = behavior.scale_up.clone().unwrap_or_else(default_scale_up);
    let down = behavior.scale_down.clone().unwrap_or_else(default_scale_down);
    // stabilize
    let up_window = secs(up.stabilization_window_seconds.unwrap_or(0));
    let down_window = secs(down.stabilization_window_seconds.unwrap_or(0));
    let (mut up_rec, mut down_rec) = (b.desired, b.desired);
    let mut old = None;
    for (i, r) in history.recommendations.iter().enumerate() {
        let a = age(now, r.at);
        if a < up_window {
            up_rec = up_rec.min(r.replicas);
        }
        if a < down_window {
            down_rec = down_rec.max(r.replicas);
        }
        if a > up_window && a > down_window {
            old = Some(i);
        }
    }
    let stabilized = b.current.max(up_rec).min(down_rec);
    record(history, b.desired, old, now);
    let able = if stabilized == b.desired {
        READY_FOR_NEW_SCALE
    } else if b.desired >= b.current {
        SCALE_UP_STABILIZED
    } else {
        SCALE_DOWN_STABILIZED
    };
    // limit by the policies and the bounds
    let (replicas, why) = if stabilized > b.current {
        let limit = scale_up_limit(b.current, &history.scale_ups, &history.scale_downs, &up, now).max(b.current);
        let (allowed, why) = if b.max > limit { (limit, SCALE_UP_LIMIT) } else { (b.max, TOO_MANY) };
        if stabilized > allowed {
            (allowed, why)
        } else {
            (stabilized, WITHIN_RANGE)
        }
    } else if stabilized < b.current {
        let limit = scale_down_limit(b.current, &history.scale_ups, &history.scale_downs, &down, now).min(b.current);
        let (allowed, why) = if b.min < limit { (limit, SCALE_DOWN_LIMIT) } else { (b.min, TOO_FEW) };
        if stabilized < allowed {
            (allowed, why)
        } else {
            (stabilized, WITHIN_RANGE)
        }
    } else {
        (stabilized, WITHIN_RANGE)
    };
    Normalized { replicas, able, limited: (replicas != stabilized, why.0, why.1) }
}

/// The most replicas the scale-up policies allow now.
fn scale_up_limit(current: i32, ups: &[ScaleEvent], downs: &[ScaleEvent], rules: &HPAScalingRules, now: Instant) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let mut result = if select == "Min" { i32::MAX } else { i32::MIN };
    for p in rules.policies.iter().flatten() {
        let start = current - changed_within(ups, p.period_seconds, now) + changed_within(downs, p.period_seconds, now);
        let proposed = match p.type_.as_str() {
            "Pods" => start + p.value,
            "Percent" => (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32,
            _ => continue,
        };
        result = if select == "Min" { result.min(proposed) } else { result.max(proposed) };
    }
    result
}

/// The fewest replicas the scale-down policies allow now.
fn scale_down_limit(current: i32, ups: &[ScaleEvent], downs: &[ScaleEvent], rules: &HPAScalingRules, now: Instant) -> i32 {
    let select = rules.select_policy.as_deref().unwrap_or("Max");
    if select == "Disabled" {
        return current;
    }
    let mut result = if select == "Min" { i32::MIN } else { i32::MAX };
    for p in rules.policies.iter().flatten() {
        let start = current - changed_within(ups, p.period_seconds, now) + changed_within(downs, p.period_seconds, now);
        let proposed = match p.type_.as_str() {
            "Pods" => start - p.value,
            "Percent" => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
            _ => continue,
        };
        result = if select == "Min" { result.max(proposed) } else { result.min(proposed) };
    }
    result
}

/// Records a scale from `prev` to `new` replicas (with a behavior only: the policies read them),
/// reusing the slot of an event older than the longest policy period.
pub fn record_scale(history: &mut History, behavior: Option<&HorizontalPodAutoscalerBehavior>, prev: i32, new: i32, now: Instant) {
    let Some(behavior) = behavior else { return };
    let (rules, events, change) = if new > prev {
        (behavior.scale_up.as_ref(), &mut history.scale_ups, new - prev)
    } else {
        (behavior.scale_down.as_ref(), &mut history.scale_downs, prev - new)
    };
    let longest = rules.and_then(|r| r.policies.as_ref()).into_iter().flatten().map(|p| p.period_seconds).max().unwrap_or(0);
    for e in events.iter_mut() {
        if age(now, e.at) > secs(longest) {
            e.outdated = true;
        }
    }
    let event = ScaleEvent { change, at: now, outdated: false };
    match events.iter().rposition(|e| e.outdated) {
        Some(i) => events[i] = event,
        None => events.push(event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::autoscaling::v2::HPAScalingPolicy;

    fn policy(kind: &str, value: i32, period: i32) -> HPAScalingPolicy {
        HPAScalingPolicy { type_: kind.into(), value, period_seconds: period }
    }

    fn rules(window: Option<i32>, select: &str, policies: Vec<HPAScalingPolicy>) -> HPAScalingRules {
        HPAScalingRules { stabilization_window_seconds: window, select_policy: Some(select.into()), policies: Some(policies), ..Default::default() }
    }

    fn behavior(up: Option<HPAScalingRules>, down: Option<HPAScalingRules>) -> HorizontalPodAutoscalerBehavior {
        let mut b = defaulted(&HorizontalPodAutoscalerBehavior { scale_up: up, scale_down: down });
        if let Some(d) = b.scale_down.as_mut() {
            d.stabilization_window_seconds.get_or_insert(300);
        }
        b
    }

    fn bounds(current: i32, desired: i32, min: i32, max: i32) -> Bounds {
        Bounds { current, desired, min, max }
    }

    #[test]
    fn defaults_are_upstreams() {
        let b = defaulted(&HorizontalPodAutoscalerBehavior::default());
        let up = b.scale_up.expect("up");
        assert_eq!(up.stabilization_window_seconds, Some(0));
        assert_eq!(up.policies, Some(vec![policy("Pods", 4, 15), policy("Percent", 100, 15)]));
        let down = b.scale_down.expect("down");
        assert_eq!((down.stabilization_window_seconds, down.select_policy.as_deref()), (None, Some("Max")));
        assert_eq!(down.policies, Some(vec![policy("Percent", 100, 15)]));
        let mine = defaulted(&HorizontalPodAutoscalerBehavior {
            scale_up: Some(HPAScalingRules { select_policy: Some("Min".into()), ..Default::default() }),
            scale_down: None,
        });
        assert_eq!(mine.scale_up.as_ref().and_then(|u| u.policies.as_ref()).map(Vec::len), Some(2), "only what is set replaces a default");
    }

    #[test]
    fn policies_limit_the_rate_as_documented() {
        let now = Instant::now() + Duration::from_secs(3600);
        // (what, behavior, current, desired, min, max) → replicas, limited, reason
        let cases: Vec<(&str, HorizontalPodAutoscalerBehavior, Bounds, i32, bool, &str)> = vec![
            ("default scale up: 4 pods or 100 %, the more", behavior(None, None), bounds(1, 10, 1, 20), 5, true, "ScaleUpLimit"),
            ("default scale up from 10: 100 %", behavior(None, None), bounds(10, 50, 1, 100), 20, true, "ScaleUpLimit"),
            (
                "selectPolicy Min: the smaller change",
                behavior(Some(rules(Some(0), "Min", vec![policy("Pods", 4, 60), policy("Percent", 100, 60)])), None),
                bounds(10, 50, 1, 100),
                14,
                true,
                "ScaleUpLimit",
            ),
            ("maxReplicas first", behavior(None, None), bounds(2, 10, 1, 3), 3, true, "TooManyReplicas"),
            (
                "scale down by 10 % a minute",
                behavior(None, Some(rules(Some(0), "Max", vec![policy("Percent", 10, 60)]))),
                bounds(100, 10, 1, 100),
                90,
                true,
                "ScaleDownLimit",
            ),
            (
                "scale down by 5 pods or 10 %, the more",
                behavior(None, Some(rules(Some(0), "Max", vec![policy("Pods", 5, 60), policy("Percent", 10, 60)]))),
                bounds(20, 1, 1, 100),
                15,
                true,
                "ScaleDownLimit",
            ),
            (
                "scale down disabled",
                behavior(None, Some(rules(Some(0), "Disabled", vec![policy("Percent", 100, 15)]))),
                bounds(5, 1, 1, 10),
                5,
                true,
                "ScaleDownLimit",
            ),
            (
                "within range",
                behavior(None, Some(rules(Some(0), "Max", vec![policy("Percent", 100, 15)]))),
                bounds(5, 3, 1, 10),
                3,
                false,
                "DesiredWithinRange",
            ),
            ("minReplicas", behavior(None, Some(rules(Some(0), "Max", vec![policy("Percent", 100, 15)]))), bounds(5, 1, 2, 10), 2, true, "TooFewReplicas"),
        ];
        for (what, b, bo, replicas, limited, reason) in cases {
            let mut h = History::default();
            let n = with_behavior(&mut h, &b, bo, now);
            assert_eq!((n.replicas, n.limited.0, n.limited.1), (replicas, limited, reason), "{what}");
        }
    }

    #[test]
    fn scale_events_within_a_period_count_against_its_policy() {
        let t0 = Instant::now() + Duration::from_secs(3600);
        let b = behavior(Some(rules(Some(0), "Max", vec![policy("Pods", 2, 60)])), None);
        let mut h = History::default();
        // 1 → 3 at t0; at t0+30 s the 60 s period started at 1: at most 3
        record_scale(&mut h, Some(&b), 1, 3, t0);
        let n = with_behavior(&mut h, &b, bounds(3, 10, 1, 10), t0 + Duration::from_secs(30));
        assert_eq!((n.replicas, n.limited.1), (3, "ScaleUpLimit"));
        // after the period: 2 more
        let n = with_behavior(&mut h, &b, bounds(3, 10, 1, 10), t0 + Duration::from_secs(61));
        assert_eq!(n.replicas, 5);
        // events older than the longest period are reused
        record_scale(&mut h, Some(&b), 3, 5, t0 + Duration::from_secs(62));
        assert_eq!(h.scale_ups.len(), 1);
    }

    #[test]
    fn stabilization_windows_hold_the_extremes() {
        let t0 = Instant::now() + Duration::from_secs(3600);
        let at = |s: u64| t0 + Duration::from_secs(s);
        // scale down: the highest recommendation of the last 300 s
        let b = behavior(None, None);
        let mut h = History::default();
        record_initial(&mut h, 5, at(0));
        let n = with_behavior(&mut h, &b, bounds(5, 2, 1, 10), at(100));
        assert_eq!((n.replicas, n.able.0), (5, "ScaleDownStabilized"));
        let n = with_behavior(&mut h, &b, bounds(5, 2, 1, 10), at(350));
        assert_eq!((n.replicas, n.able.0), (2, "ReadyForNewScale"), "the 5 is older than the window now");
        // scale up with a window: the lowest recommendation of the last 60 s
        let b = behavior(Some(rules(Some(60), "Max", vec![policy("Percent", 100, 15)])), None);
        let mut h = History::default();
        record_initial(&mut h, 2, at(0));
        let n = with_behavior(&mut h, &b, bounds(2, 6, 1, 10), at(30));
        assert_eq!((n.replicas, n.able.0), (2, "ScaleUpStabilized"));
        let n = with_behavior(&mut h, &b, bounds(2, 6, 1, 10), at(70));
        assert_eq!(n.replicas, 4, "the 6 of 40 s ago is the lowest now, then 100 %: 4");
    }

    #[test]
    fn without_behavior_upstreams_older_rules() {
        let t0 = Instant::now() + Duration::from_secs(3600);
        let window = Duration::from_secs(300);
        let mut h = History::default();
        let n = without_behavior(&mut h, window, bounds(1, 10, 1, 20), t0);
        assert_eq!((n.replicas, n.limited), (4, (true, "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")));
        let n = without_behavior(&mut h, window, bounds(10, 1, 1, 20), t0 + Duration::from_secs(10));
        assert_eq!((n.replicas, n.able.0), (10, "ScaleDownStabilized"), "the 10 of 10 s ago holds");
        let mut h = History::default();
        let n = without_behavior(&mut h, window, bounds(3, 0, 2, 20), t0);
        assert_eq!((n.replicas, n.limited.1), (2, "TooFewReplicas"));
    }
}
