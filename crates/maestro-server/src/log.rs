//! JSON log lines on standard error: one object per event, never a secret (callers pass
//! identifiers, not credentials); a line written while serving a request carries its
//! `trace_id` and `span_id`.

use serde_json::{Map, Value, json};

/// Writes `{"time":…,"level":…,"msg":…, …fields}`.
#[expect(
    clippy::print_stderr,
    reason = "the server's log is its standard error"
)]
pub fn event(level: &str, msg: &str, fields: &[(&str, Value)]) {
    let mut o = Map::new();
    o.insert("time".into(), json!(crate::now_ms()));
    o.insert("level".into(), json!(level));
    o.insert("msg".into(), json!(msg));
    // Written while serving a request: its trace, to find the line from the span.
    if let Some(t) = crate::tracing::current() {
        o.insert("trace_id".into(), json!(t.trace_id.to_string()));
        o.insert("span_id".into(), json!(t.span_id.to_string()));
    }
    for (k, v) in fields {
        o.insert((*k).to_owned(), v.clone());
    }
    eprintln!("{}", Value::Object(o));
}
