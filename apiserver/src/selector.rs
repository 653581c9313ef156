//! Label and field selectors: the one parser of the `labelSelector` / `fieldSelector` query
//! grammar (upstream's labels.Parse and fields.ParseSelector), matching, the conversion from a
//! metav1 LabelSelector object, and its printed form (`app=web,tier in (a,b)`). Label keys and
//! values are checked with the `berth-names` grammars.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector as ApiSelector;

/// How one requirement compares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
    Gt,
    Lt,
}

/// One requirement: `key op values`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub key: String,
    pub op: Op,
    pub values: Vec<String>,
}

impl Requirement {
    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.key);
        match self.op {
            Op::Equals | Op::In => v.is_some_and(|v| self.values.contains(v)),
            Op::NotEquals | Op::NotIn => v.is_none_or(|v| !self.values.contains(v)),
            Op::Exists => v.is_some(),
            Op::DoesNotExist => v.is_none(),
            Op::Gt | Op::Lt => {
                let (Some(Ok(have)), Some(Ok(want))) = (v.map(|v| v.parse::<i64>()), self.values.first().map(|w| w.parse::<i64>())) else {
                    return false;
                };
                if self.op == Op::Gt {
                    have > want
                } else {
                    have < want
                }
            }
        }
    }
}

/// A label selector: every requirement must hold. Empty selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector {
    pub requirements: Vec<Requirement>,
}

fn check_key(key: &str) -> Result<(), String> {
    match berth_names::qualified_name(key).first() {
        Some(why) => Err(format!("unable to parse requirement: invalid label key {key:?}: {why}")),
        None => Ok(()),
    }
}

fn check_value(value: &str) -> Result<(), String> {
    match berth_names::label_value(value).first() {
        Some(why) => Err(format!("unable to parse requirement: invalid label value: {value:?}: at key: {why}")),
        None => Ok(()),
    }
}

/// Splits at commas outside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (vec![], 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn parse_set(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner =
        rest.strip_prefix('(').and_then(|r| r.strip_suffix(')')).ok_or_else(|| format!("unable to parse requirement: found '{rest}', expected: '('"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    for v in &values {
        check_value(v)?;
    }
    Ok(values)
}

fn parse_requirement(part: &str) -> Result<Requirement, String> {
    let p = part.trim();
    if p.is_empty() {
        return Err("found '', expected: !, identifier, or 'end of string'".into());
    }
    if let Some(key) = p.strip_prefix('!') {
        let key = key.trim();
        check_key(key)?;
        return Ok(Requirement { key: key.into(), op: Op::DoesNotExist, values: vec![] });
    }
    for (sym, op) in [("==", Op::Equals), ("!=", Op::NotEquals), ("=", Op::Equals), (">", Op::Gt), ("<", Op::Lt)] {
        if let Some((k, v)) = p.split_once(sym) {
            let (k, v) = (k.trim(), v.trim());
            check_key(k)?;
            if matches!(op, Op::Gt | Op::Lt) {
                v.parse::<i64>().map_err(|_| format!("unable to parse requirement: for 'Gt', 'Lt' operators, the value must be an integer: {v:?}"))?;
            } else {
                check_value(v)?;
            }
            return Ok(Requirement { key: k.into(), op, values: vec![v.into()] });
        }
    }
    let mut words = p.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or("").trim();
    let rest = words.next().unwrap_or("").trim();
    check_key(key)?;
    if rest.is_empty() {
        return Ok(Requirement { key: key.into(), op: Op::Exists, values: vec![] });
    }
    if let Some(set) = rest.strip_prefix("notin") {
        return Ok(Requirement { key: key.into(), op: Op::NotIn, values: parse_set(set)? });
    }
    if let Some(set) = rest.strip_prefix("in") {
        return Ok(Requirement { key: key.into(), op: Op::In, values: parse_set(set)? });
    }
    Err(format!("unable to parse requirement: found '{rest}', expected: in, notin, =, ==, !=, gt, lt"))
}

impl LabelSelector {
    /// Parses the `labelSelector` query grammar.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let requirements = split_top(s).into_iter().map(parse_requirement).collect::<Result<Vec<_>, _>>()?;
        Ok(LabelSelector { requirements })
    }

    /// From a metav1 LabelSelector object (matchLabels and matchExpressions).
    pub fn from_api(sel: &ApiSelector) -> Result<Self, String> {
        let mut requirements = vec![];
        for (k, v) in sel.match_labels.iter().flatten() {
            requirements.push(Requirement { key: k.clone(), op: Op::Equals, values: vec![v.clone()] });
        }
        for e in sel.match_expressions.iter().flatten() {
            let op = match e.operator.as_str() {
                "In" => Op::In,
                "NotIn" => Op::NotIn,
                "Exists" => Op::Exists,
                "DoesNotExist" => Op::DoesNotExist,
                other => return Err(format!("{other:?} is not a valid label selector operator")),
            };
            requirements.push(Requirement { key: e.key.clone(), op, values: e.values.clone().unwrap_or_default() });
        }
        Ok(LabelSelector { requirements })
    }

    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

/// A metav1 LabelSelector as upstream prints it (`<none>` when empty).
pub fn format_label_selector(sel: &ApiSelector) -> String {
    let mut parts: Vec<String> = sel.match_labels.iter().flatten().map(|(k, v)| format!("{k}={v}")).collect();
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.clone().unwrap_or_default().join(",");
        parts.push(match e.operator.as_str() {
            "In" => format!("{} in ({values})", e.key),
            "NotIn" => format!("{} notin ({values})", e.key),
            "Exists" => e.key.clone(),
            "DoesNotExist" => format!("!{}", e.key),
            other => format!("{} {other} ({values})", e.key),
        });
    }
    if parts.is_empty() {
        "<none>".into()
    } else {
        parts.join(",")
    }
}

/// One field requirement: `field=value` or `field!=value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    pub equal: bool,
}

/// A field selector; which fields exist is the resource's business.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector {
    pub requirements: Vec<FieldRequirement>,
}

/// Splits at unescaped commas and unescapes `\,`, `\=`, `\\`.
fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let (mut out, mut cur, mut esc) = (vec![], String::new(), false);
    for c in s.chars() {
        if esc {
            cur.push('\\');
            cur.push(c);
            esc = false;
        } else if c == '\\' {
            esc = true;
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    let (mut out, mut esc) = (String::new(), false);
    for c in s.chars() {
        if esc || c != '\\' {
            out.push(c);
            esc = false;
        } else {
            esc = true;
        }
    }
    out
}

impl FieldSelector {
    /// Parses the `fieldSelector` query grammar.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut requirements = vec![];
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        for part in split_escaped(s, ',') {
            let (field, value, equal) = if let Some((f, v)) = part.split_once("!=") {
                (f, v, false)
            } else if let Some((f, v)) = part.split_once("==") {
                (f, v, true)
            } else if let Some((f, v)) = part.split_once('=') {
                (f, v, true)
            } else {
                return Err(format!("invalid selector: '{s}'; can't understand '{part}'"));
            };
            requirements.push(FieldRequirement { field: field.trim().to_string(), value: unescape(value.trim()), equal });
        }
        Ok(FieldSelector { requirements })
    }

    /// True when every requirement holds; `value` gives a field's value (None: not a field of this kind).
    pub fn matches(&self, value: impl Fn(&str) -> Option<String>) -> bool {
        self.requirements.iter().all(|r| value(&r.field).is_some_and(|v| (v == r.value) == r.equal))
    }

    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selectors_with_every_operator() {
        let l = labels(&[("app", "web"), ("tier", "front"), ("n", "5")]);
        for (sel, want) in [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app!=db", true),
            ("missing!=x", true),
            ("app in (web, db)", true),
            ("app notin (web)", false),
            ("app,tier", true),
            ("!app", false),
            ("!missing", true),
            ("n>4", true),
            ("n<4", false),
            ("app=web,tier in (front,back),!missing", true),
        ] {
            assert_eq!(LabelSelector::parse(sel).unwrap().matches(&l), want, "{sel}");
        }
        for bad in ["app=web,", "bad key=x", "app in web", "app=-x-", "n>x"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_split_and_unescape() {
        let f = FieldSelector::parse(r"metadata.name=a\,b,status.phase!=Running").unwrap();
        assert_eq!(f.requirements[0].value, "a,b");
        assert!(!f.requirements[1].equal);
        let get = |field: &str| match field {
            "metadata.name" => Some("a,b".to_string()),
            "status.phase" => Some("Pending".to_string()),
            _ => None,
        };
        assert!(f.matches(get));
        assert!(FieldSelector::parse("nonsense").is_err());
    }
}
