//! Table output of custom resources: a version's `additionalPrinterColumns` (Name first; an Age
//! column only when the version defines none, as upstream serves them), cells found by the
//! columns' JSONPath (`.spec.replicas`, `.status.conditions[0].type`, `.metadata.labels['app']`)
//! and typed as upstream's CRD table convertor types them.

use jiff::Timestamp;
use serde_json::Value;

use super::intern;
use crate::strategy::{Column, NAME_COLUMN};

/// One printer column: its Table column and where its cells come from.
#[derive(Debug, Clone)]
pub struct PrinterColumn {
    pub column: Column,
    pub path: Vec<Step>,
}

/// One step of a simple JSONPath.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// Parses a printer column's JSONPath (`.a.b[0]['c.d']`, optionally in `{...}`).
pub fn parse_path(path: &str) -> Result<Vec<Step>, String> {
    let p = path.trim();
    let p = p.strip_prefix('{').and_then(|p| p.strip_suffix('}')).unwrap_or(p);
    let mut steps = vec![];
    let mut chars = p.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '.' => {
                let mut key = String::new();
                while let Some(&n) = chars.peek() {
                    if n == '.' || n == '[' {
                        break;
                    }
                    if n == '\\' {
                        chars.next();
                        if let Some(e) = chars.next() {
                            key.push(e);
                        }
                        continue;
                    }
                    key.push(n);
                    chars.next();
                }
                if !key.is_empty() {
                    steps.push(Step::Key(key));
                }
            }
            '[' => {
                let mut inner = String::new();
                for n in chars.by_ref() {
                    if n == ']' {
                        break;
                    }
                    inner.push(n);
                }
                let inner = inner.trim();
                if let Some(k) =
                    inner.strip_prefix('\'').and_then(|k| k.strip_suffix('\'')).or_else(|| inner.strip_prefix('"').and_then(|k| k.strip_suffix('"')))
                {
                    steps.push(Step::Key(k.to_string()));
                } else {
                    steps.push(Step::Index(inner.parse().map_err(|_| format!("unsupported JSONPath step [{inner}] in {path}"))?));
                }
            }
            c if c.is_whitespace() => {}
            other => return Err(format!("unexpected {other:?} in JSONPath {path}")),
        }
    }
    Ok(steps)
}

/// The value at `path` in `obj`.
pub fn lookup<'a>(obj: &'a Value, path: &[Step]) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, step| match step {
        Step::Key(k) => v.get(k),
        Step::Index(i) => v.get(*i),
    })
}

/// The printer columns of a CRD version (`additionalPrinterColumns` as JSON).
pub fn printer_columns(defs: Option<&Value>) -> Vec<PrinterColumn> {
    let mut out = vec![];
    for d in defs.and_then(Value::as_array).into_iter().flatten() {
        let path_text = d.get("jsonPath").and_then(Value::as_str).unwrap_or("");
        let Ok(path) = parse_path(path_text) else { continue };
        let description = d
            .get("description")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .unwrap_or_else(|| format!("Custom resource definition column (in JSONPath format): {path_text}"));
        let column = Column {
            name: intern::str(d.get("name").and_then(Value::as_str).unwrap_or("")),
            kind: intern::str(d.get("type").and_then(Value::as_str).unwrap_or("string")),
            format: intern::str(d.get("format").and_then(Value::as_str).unwrap_or("")),
            description: intern::str(&description),
            priority: d.get("priority").and_then(Value::as_i64).unwrap_or(0).clamp(0, 255) as u8,
        };
        out.push(PrinterColumn { column, path });
    }
    if out.is_empty() {
        out.push(PrinterColumn { column: age_column(), path: vec![Step::Key("metadata".into()), Step::Key("creationTimestamp".into())] });
    }
    out
}

/// The column upstream serves for versions without printer columns.
fn age_column() -> Column {
    Column { name: "Age", kind: "date", format: "", description: crate::strategy::AGE_COLUMN.description, priority: 0 }
}

/// All Table columns: Name, then the printer columns.
pub fn columns(printer: &[PrinterColumn]) -> Vec<Column> {
    std::iter::once(NAME_COLUMN).chain(printer.iter().map(|p| p.column)).collect()
}

/// The cells of one object.
pub fn cells(printer: &[PrinterColumn], obj: &Value, now: Timestamp) -> Vec<Value> {
    let name = obj.pointer("/metadata/name").cloned().unwrap_or(Value::String(String::new()));
    std::iter::once(name).chain(printer.iter().map(|p| cell(p.column.kind, lookup(obj, &p.path), now))).collect()
}

/// A cell as upstream's convertor types it: a value of the wrong type is empty (`<none>`),
/// a date is an age.
fn cell(kind: &str, v: Option<&Value>, now: Timestamp) -> Value {
    let Some(v) = v.filter(|v| !v.is_null()) else { return Value::Null };
    match kind {
        "integer" => v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)).map(Value::from).unwrap_or(Value::Null),
        "number" => v.as_f64().map(Value::from).unwrap_or(Value::Null),
        "boolean" => v.as_bool().map(Value::from).unwrap_or(Value::Null),
        "date" => match v.as_str() {
            Some(s) => match s.parse::<Timestamp>() {
                Ok(t) => Value::from(crate::table::human_duration(now.duration_since(t))),
                Err(_) => Value::from("<invalid>"),
            },
            None => Value::Null,
        },
        _ => match v {
            Value::String(s) => Value::from(s.clone()),
            other => Value::from(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn paths_and_cells() {
        assert_eq!(parse_path(".spec.replicas").unwrap(), vec![Step::Key("spec".into()), Step::Key("replicas".into())]);
        assert_eq!(
            parse_path("{.metadata.labels['app.kubernetes.io/name']}").unwrap(),
            vec![Step::Key("metadata".into()), Step::Key("labels".into()), Step::Key("app.kubernetes.io/name".into())]
        );
        let cols = printer_columns(Some(&json!([
            {"name": "Replicas", "type": "integer", "jsonPath": ".spec.replicas"},
            {"name": "Image", "type": "string", "jsonPath": ".spec.image", "priority": 1},
            {"name": "First", "type": "string", "jsonPath": ".spec.list[0].name"}
        ])));
        assert_eq!(columns(&cols).iter().map(|c| c.name).collect::<Vec<_>>(), vec!["Name", "Replicas", "Image", "First"]);
        let obj = json!({"metadata": {"name": "a"}, "spec": {"replicas": 3, "list": [{"name": "x"}]}});
        assert_eq!(cells(&cols, &obj, Timestamp::now()), vec![json!("a"), json!(3), Value::Null, json!("x")]);
        let default = printer_columns(None);
        assert_eq!(columns(&default).iter().map(|c| c.name).collect::<Vec<_>>(), vec!["Name", "Age"]);
    }
}
