//! Completion indexes of Indexed Jobs: the sets written as upstream writes `completedIndexes`
//! and `failedIndexes` ("1,3-5,7": sorted, runs of three or more... any run of consecutive
//! indexes as `a-b`), and the index a pod carries.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Pod;

pub const INDEX_ANNOTATION: &str = "batch.kubernetes.io/job-completion-index";

/// The completion index of a pod (its annotation, or the label of the same name).
pub fn of(pod: &Pod) -> Option<i32> {
    let m = &pod.metadata;
    m.annotations
        .as_ref()
        .and_then(|a| a.get(INDEX_ANNOTATION))
        .or_else(|| m.labels.as_ref().and_then(|l| l.get(INDEX_ANNOTATION)))
        .and_then(|v| v.parse().ok())
}

/// Parses "1,3-5" (ignoring what is out of `0..completions` or malformed).
pub fn parse(s: &str, completions: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.parse::<i32>(), b.parse::<i32>()),
            None => (part.parse::<i32>(), part.parse::<i32>()),
        };
        if let (Ok(a), Ok(b)) = (a, b) {
            out.extend((a.max(0)..=b.min(completions - 1)).filter(|i| *i >= 0));
        }
    }
    out
}

/// Writes a set as upstream does: consecutive indexes as ranges.
pub fn format(set: &BTreeSet<i32>) -> String {
    let mut parts: Vec<String> = vec![];
    let mut run: Option<(i32, i32)> = None;
    for &i in set {
        run = match run {
            Some((a, b)) if b + 1 == i => Some((a, i)),
            Some((a, b)) => {
                parts.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some((a, b)) = run {
        parts.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_round_trip() {
        let set: BTreeSet<i32> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(format(&set), "0-2,4,6-7");
        assert_eq!(parse("0-2,4,6-7", 10), set);
        assert_eq!(parse("3-20", 5), [3, 4].into_iter().collect());
        assert_eq!(format(&BTreeSet::new()), "");
    }
}
