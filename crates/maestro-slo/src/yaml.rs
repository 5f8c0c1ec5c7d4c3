//! The rule file's YAML, written directly: block mappings and sequences, every scalar a
//! double-quoted string (a JSON string is a valid YAML double-quoted scalar) and every
//! expression a literal block, so nothing is ever read back as a number, a boolean or a
//! comment.

use crate::rules::{Group, Rule};

fn q(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// A `key: value` line, the value as a literal block when it spans lines.
fn field(out: &mut String, indent: &str, key: &str, value: &str) {
    if value.contains('\n') {
        out.push_str(&format!("{indent}{key}: |-\n"));
        for line in value.lines() {
            if line.is_empty() {
                out.push('\n');
            } else {
                out.push_str(&format!("{indent}  {line}\n"));
            }
        }
    } else {
        out.push_str(&format!("{indent}{key}: {}\n", q(value)));
    }
}

fn map(out: &mut String, indent: &str, key: &str, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        return;
    }
    out.push_str(&format!("{indent}{key}:\n"));
    for (k, v) in pairs {
        out.push_str(&format!("{indent}  {}: {}\n", q(k), q(v)));
    }
}

pub(crate) fn groups(groups: &[Group]) -> String {
    let mut out = String::from("groups:\n");
    for g in groups {
        out.push_str(&format!("  - name: {}\n    rules:\n", q(&g.name)));
        for r in &g.rules {
            match r {
                Rule::Record {
                    record,
                    expr,
                    labels,
                } => {
                    out.push_str(&format!("      - record: {}\n", q(record)));
                    field(&mut out, "        ", "expr", expr);
                    map(&mut out, "        ", "labels", labels);
                }
                Rule::Alert {
                    alert,
                    expr,
                    labels,
                    annotations,
                } => {
                    out.push_str(&format!("      - alert: {}\n", q(alert)));
                    field(&mut out, "        ", "expr", expr);
                    map(&mut out, "        ", "labels", labels);
                    map(&mut out, "        ", "annotations", annotations);
                }
            }
        }
    }
    out
}
