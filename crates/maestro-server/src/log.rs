//! JSON log lines on standard error: one object per event, never a secret (callers pass
//! identifiers, not credentials).

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
    for (k, v) in fields {
        o.insert((*k).to_owned(), v.clone());
    }
    eprintln!("{}", Value::Object(o));
}
