//! Audit entries: who did what, to what, why, when, with what result, and what it links to.
//!
//! An entry is stored and hashed as its canonical JSON (RFC 8785, JCS): keys sorted, no
//! insignificant whitespace, numbers in their shortest form, so the same entry always has
//! the same bytes and the same leaf hash whoever encodes it.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::AuditError;

/// The entry format version written into every entry (`"v": 1`).
pub const ENTRY_VERSION: u32 = 1;
/// The largest canonical entry accepted, parameters included.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// The longest reason accepted.
pub const MAX_REASON_BYTES: usize = 4096;
/// The tenant of an entry that names none.
pub const DEFAULT_TENANT: &str = "default";
/// What a redacted parameter value becomes.
pub const REDACTED: &str = "[redacted]";

/// Actions that need an authenticated actor and a reason: an entry for one of them without
/// a reason is refused.
pub const PRIVILEGED: &[&str] = &[
    "deploy",
    "publish",
    "promote",
    "rollback",
    "waive",
    "flag.kill",
    "restore",
    "key.use",
    "key.rotate",
];

/// Actions only the log's own commands write (`Log::rotate`): an append of one of them
/// is refused, so nobody holding the key can plant a key introduction.
pub const RESERVED: &[&str] = &["key.rotate"];

/// Whether `action` is privileged (needs a reason).
#[must_use]
pub fn is_privileged(action: &str) -> bool {
    PRIVILEGED.contains(&action)
}

/// Who acted, and how that identity was established.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    /// `alice`, `github:octocat`, `token:deploy-bot`.
    pub id: String,
    /// How the identity was established: `os-user` (the local account running the
    /// command), `github-actions` (the CI run's actor), `env` (`MAESTRO_ACTOR`), `token`.
    pub via: String,
}

/// The outcome recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Authorised and about to happen (written before a privileged action starts, so the
    /// action cannot happen unrecorded).
    Started,
    Success,
    Failure,
    /// Refused (by policy, a missing reason, failed verification).
    Denied,
}

impl Outcome {
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Started => "started",
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Denied => "denied",
        }
    }

    /// Parses `started|success|failure|denied`.
    ///
    /// # Errors
    /// Names the accepted values.
    pub fn parse(s: &str) -> Result<Outcome, String> {
        Ok(match s {
            "started" => Outcome::Started,
            "success" => Outcome::Success,
            "failure" => Outcome::Failure,
            "denied" => Outcome::Denied,
            other => {
                return Err(format!(
                    "unknown result `{other}`: use started, success, failure or denied"
                ));
            }
        })
    }
}

/// What the entry is about, for navigation from the entry to the thing and back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// Fields are declared in alphabetical order: serde writes them in declaration order, which
// is then already the canonical (sorted) order.
pub struct Links {
    /// `sha256:<hex>` of the artifact concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The entry this one completes (the `started` entry of the same action).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<i64>,
    /// W3C trace id (32 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// An entry to append; the log assigns its index and time.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEntry {
    pub actor: Actor,
    pub action: String,
    pub target: String,
    /// A JSON object; values under secret-looking names, and strings that look like
    /// credentials, are redacted before the entry is written.
    pub params: Value,
    pub reason: Option<String>,
    pub result: Outcome,
    pub links: Links,
    /// The tenant the action belongs to (a conductor's actor's tenant); `None` for local
    /// commands, which belong to the default tenant.
    pub tenant: Option<String>,
}

/// A written entry, exactly as hashed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
// Alphabetical, like `Links`.
pub struct Entry {
    pub action: String,
    pub actor: Actor,
    pub index: u64,
    pub links: Links,
    pub params: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub result: Outcome,
    pub target: String,
    /// Absent on entries written before tenants were recorded, and on local commands':
    /// both are the default tenant's ([`DEFAULT_TENANT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// UTC, microseconds, RFC 3339: `2026-11-23T09:14:03.120456Z`. Never earlier than the
    /// entry before it.
    pub time: String,
    pub v: u32,
}

impl Entry {
    /// The tenant the entry belongs to.
    #[must_use]
    pub fn tenant(&self) -> &str {
        self.tenant.as_deref().unwrap_or(DEFAULT_TENANT)
    }

    /// The canonical (JCS) bytes: what is stored and hashed.
    ///
    /// # Errors
    /// Only if serialisation fails, which a well-formed entry never does.
    pub fn canonical(&self) -> Result<Vec<u8>, AuditError> {
        // Fast path: with the struct fields declared in sorted order, parameters whose
        // objects are sorted with ASCII keys (UTF-8 and UTF-16 orders agree) and numbers
        // that are all integers (formatted the same by ECMAScript and serde_json), plain
        // serde_json output *is* RFC 8785. Anything else goes through `serde_jcs`.
        if fast_canonical(&self.params, 0) {
            serde_json::to_vec(self).map_err(|e| AuditError::Encoding(e.to_string()))
        } else {
            serde_jcs::to_vec(self).map_err(|e| AuditError::Encoding(e.to_string()))
        }
    }

    /// Parses stored bytes and checks they are canonical: the same bytes come back when
    /// the entry is encoded again.
    ///
    /// # Errors
    /// When the bytes are not an entry, or not in canonical form.
    pub fn parse(bytes: &[u8]) -> Result<Entry, String> {
        let e: Entry = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let again = e.canonical().map_err(|e| e.to_string())?;
        if again != bytes {
            return Err("not in canonical (RFC 8785) form".to_owned());
        }
        Ok(e)
    }

    /// The time in microseconds since the Unix epoch.
    ///
    /// # Errors
    /// When `time` is not an RFC 3339 timestamp.
    pub fn time_us(&self) -> Result<i64, String> {
        let ts: jiff::Timestamp = self
            .time
            .parse()
            .map_err(|e| format!("time `{}`: {e}", self.time))?;
        Ok(ts.as_microsecond())
    }
}

/// Largest integer ECMAScript prints exactly like serde_json (2^53).
const MAX_SAFE: u64 = 1 << 53;

/// Whether `v` can take the serde_json fast path: objects already sorted with ASCII keys,
/// integers only (within ±2^53).
fn fast_canonical(v: &Value, depth: usize) -> bool {
    if depth > MAX_DEPTH + 1 {
        return false;
    }
    match v {
        Value::Object(m) => {
            let mut prev: Option<&String> = None;
            for (k, val) in m {
                if !k.is_ascii() || prev.is_some_and(|p| p.as_str() >= k.as_str()) {
                    return false;
                }
                prev = Some(k);
                if !fast_canonical(val, depth + 1) {
                    return false;
                }
            }
            true
        }
        Value::Array(a) => a.iter().all(|x| fast_canonical(x, depth + 1)),
        Value::Number(n) => n
            .as_u64()
            .map(|u| u <= MAX_SAFE)
            .or_else(|| n.as_i64().map(|i| i.unsigned_abs() <= MAX_SAFE))
            .unwrap_or(false),
        _ => true,
    }
}

/// Sorts every object's keys (the canonical order, for the fast path).
fn sort_keys(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.sort_keys();
            m.values_mut().for_each(sort_keys);
        }
        Value::Array(a) => a.iter_mut().for_each(sort_keys),
        _ => {}
    }
}

/// Formats microseconds since the epoch as the entry time.
#[must_use]
pub fn format_time(us: i64) -> String {
    jiff::Timestamp::from_microsecond(us)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
        .unwrap_or_else(|_| "1970-01-01T00:00:00.000000Z".to_owned())
}

fn valid_action(a: &str) -> bool {
    let mut chars = a.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && a.len() <= 64
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c))
}

impl NewEntry {
    /// Checks the fields and redacts secrets from the parameters, then builds the entry
    /// for position `index` at time `time_us`.
    ///
    /// # Errors
    /// [`AuditError::Invalid`] naming the field, or [`AuditError::ReasonRequired`].
    pub fn seal(&self, index: u64, time_us: i64) -> Result<(Entry, Vec<u8>), AuditError> {
        let invalid = |field: &str, why: String| AuditError::Invalid {
            field: field.to_owned(),
            why,
        };
        if !valid_action(&self.action) {
            return Err(invalid(
                "action",
                format!(
                    "`{}` is not an action name: lowercase letters, digits and . _ - (e.g. `deploy`, `flag.kill`), at most 64",
                    self.action
                ),
            ));
        }
        for (field, value, max) in [
            ("actor.id", self.actor.id.as_str(), 256),
            ("actor.via", self.actor.via.as_str(), 64),
            ("target", self.target.as_str(), 1024),
            (
                "tenant",
                self.tenant.as_deref().unwrap_or(DEFAULT_TENANT),
                128,
            ),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(field, "is empty".to_owned()));
            }
            if value.len() > max {
                return Err(invalid(field, format!("is longer than {max} bytes")));
            }
        }
        let reason = self
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        if is_privileged(&self.action) && reason.is_none() {
            return Err(AuditError::ReasonRequired {
                action: self.action.clone(),
            });
        }
        if reason.is_some_and(|r| r.len() > MAX_REASON_BYTES) {
            return Err(invalid(
                "reason",
                format!("is longer than {MAX_REASON_BYTES} bytes"),
            ));
        }
        if !self.params.is_object() {
            return Err(invalid(
                "params",
                "must be a JSON object (`{\"key\": value}`)".to_owned(),
            ));
        }
        let mut params = self.params.clone();
        redact(&mut params, 0).map_err(|why| invalid("params", why))?;
        sort_keys(&mut params);
        let entry = Entry {
            v: ENTRY_VERSION,
            index,
            time: format_time(time_us),
            actor: self.actor.clone(),
            action: self.action.clone(),
            target: self.target.clone(),
            params,
            reason: reason.map(str::to_owned),
            result: self.result,
            links: self.links.clone(),
            tenant: self.tenant.clone(),
        };
        let bytes = entry.canonical()?;
        if bytes.len() > MAX_ENTRY_BYTES {
            return Err(invalid(
                "params",
                format!(
                    "the entry is {} bytes, over the {MAX_ENTRY_BYTES}-byte limit: record large data as an artifact and link its digest",
                    bytes.len()
                ),
            ));
        }
        Ok((entry, bytes))
    }
}

const MAX_DEPTH: usize = 16;

/// Whether a parameter name says its value is a secret.
fn secret_name(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    const WORDS: &[&str] = &[
        "password",
        "passwd",
        "secret",
        "token",
        "apikey",
        "api_key",
        "api-key",
        "private",
        "credential",
        "authorization",
        "cookie",
        "session",
        "signature",
    ];
    WORDS.iter().any(|w| k.contains(w)) || k == "key" || k.ends_with("_key") || k.ends_with("-key")
}

fn scanner() -> &'static maestro_secrets::Scanner {
    static SCANNER: OnceLock<maestro_secrets::Scanner> = OnceLock::new();
    SCANNER.get_or_init(|| {
        maestro_secrets::Scanner::new(maestro_secrets::config::Config::default_rules())
    })
}

/// Whether a string value looks like a credential (the secret scanner's rules).
fn looks_secret(s: &str) -> bool {
    s.len() >= 12
        && !scanner()
            .scan(
                s.as_bytes(),
                &maestro_secrets::scan::Origin::default(),
                &|_| 1,
            )
            .is_empty()
}

/// Replaces secret values in place; refuses nesting deeper than [`MAX_DEPTH`].
fn redact(v: &mut Value, depth: usize) -> Result<(), String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    match v {
        Value::Object(map) => {
            for (k, val) in map.iter_mut() {
                if secret_name(k) && !val.is_null() {
                    *val = Value::String(REDACTED.to_owned());
                } else {
                    redact(val, depth + 1)?;
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                redact(item, depth + 1)?;
            }
        }
        Value::String(s) if looks_secret(s) => *s = REDACTED.to_owned(),
        Value::Number(n) if n.as_f64().is_none_or(|_| !n.is_f64()) && !fast_canonical(v, 0) => {
            return Err(format!(
                "the number {v} is beyond ±2^53, which canonical JSON (RFC 8785) cannot keep exact: pass it as a string"
            ));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn new(action: &str, reason: Option<&str>, params: Value) -> NewEntry {
        NewEntry {
            actor: Actor {
                id: "alice".into(),
                via: "os-user".into(),
            },
            action: action.into(),
            target: "service/checkout@stage".into(),
            params,
            reason: reason.map(str::to_owned),
            result: Outcome::Success,
            links: Links::default(),
            tenant: None,
        }
    }

    #[test]
    fn canonical_form_is_sorted_and_compact() {
        let (_, bytes) = new("note", None, json!({"z": 1, "a": [1.5, "x"]}))
            .seal(7, 1_700_000_000_123_456)
            .expect("seal");
        let text = String::from_utf8(bytes.clone()).expect("utf8");
        assert_eq!(
            text,
            r#"{"action":"note","actor":{"id":"alice","via":"os-user"},"index":7,"links":{},"params":{"a":[1.5,"x"],"z":1},"result":"success","target":"service/checkout@stage","time":"2023-11-14T22:13:20.123456Z","v":1}"#
        );
        let back = Entry::parse(&bytes).expect("parse");
        assert_eq!(back.index, 7);
        assert_eq!(back.time_us().expect("time"), 1_700_000_000_123_456);
    }

    #[test]
    fn non_canonical_bytes_are_refused() {
        let e = Entry::parse(br#"{"v":1, "index":0}"#);
        assert!(e.is_err());
        let (_, bytes) = new("note", None, json!({})).seal(0, 0).expect("seal");
        let mut spaced = String::from_utf8(bytes).expect("utf8");
        spaced = spaced.replacen(':', ": ", 1);
        assert!(
            Entry::parse(spaced.as_bytes())
                .expect_err("spaced")
                .contains("canonical")
        );
    }

    #[test]
    fn privileged_actions_need_a_reason() {
        for reason in [None, Some(""), Some("   ")] {
            let err = new("deploy", reason, json!({}))
                .seal(0, 0)
                .expect_err("no reason");
            assert!(matches!(err, AuditError::ReasonRequired { ref action } if action == "deploy"));
            assert!(err.to_string().contains("needs a reason"), "{err}");
        }
        assert!(
            new("deploy", Some("ship fix for INC-42"), json!({}))
                .seal(0, 0)
                .is_ok()
        );
        assert!(new("note", None, json!({})).seal(0, 0).is_ok());
    }

    #[test]
    fn secrets_are_redacted_by_name_and_by_shape() {
        // Built at run time so the source holds no token-shaped string.
        let token = format!("ghp_{}", "R8x2Kq9ZbN4mT7vW1cY6pL3sJ0dF5hGaE2uQ");
        let (entry, bytes) = new(
            "note",
            None,
            json!({
                "password": "hunter2",
                "db": {"api_key": "abc", "host": "db.internal"},
                "args": ["--token", token],
                "keys": 3
            }),
        )
        .seal(0, 0)
        .expect("seal");
        assert_eq!(entry.params["password"], REDACTED);
        assert_eq!(entry.params["db"]["api_key"], REDACTED);
        assert_eq!(entry.params["db"]["host"], "db.internal");
        assert_eq!(entry.params["args"][1], REDACTED);
        assert_eq!(entry.params["keys"], 3);
        let text = String::from_utf8(bytes).expect("utf8");
        assert!(!text.contains("hunter2") && !text.contains("ghp_"));
    }

    #[test]
    fn bad_fields_are_named() {
        let err = new("Deploy Now", None, json!({}))
            .seal(0, 0)
            .expect_err("action");
        assert!(err.to_string().contains("action"), "{err}");
        let err = new("note", None, json!([1]))
            .seal(0, 0)
            .expect_err("params");
        assert!(err.to_string().contains("params"), "{err}");
        let big = "x".repeat(MAX_ENTRY_BYTES);
        let err = new("note", None, json!({"blob": big}))
            .seal(0, 0)
            .expect_err("size");
        assert!(err.to_string().contains("limit"), "{err}");
        let mut deep = json!(1);
        for _ in 0..40 {
            deep = json!([deep]);
        }
        let err = new("note", None, json!({"d": deep}))
            .seal(0, 0)
            .expect_err("deep");
        assert!(err.to_string().contains("deeper"), "{err}");
    }

    fn json_value() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|i| json!(i)),
            any::<u64>().prop_map(|i| json!(i)),
            (-1e12f64..1e12).prop_map(|f| json!(f)),
            prop_oneof![Just(1e21), Just(1e-7), Just(-0.0), Just(5e-324), Just(0.1)]
                .prop_map(|f| json!(f)),
            "(?s).{0,12}".prop_map(Value::String),
            "[\\x00-\\x1f\"\\\\/\u{7f}\u{2028}\u{e9}\u{1f600}a]{0,6}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                proptest::collection::vec(("[a-zA-Z_\u{e9}\u{10000}\u{ff61}]{0,4}", inner), 0..5)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest::proptest! {
        /// The fast encoder and `serde_jcs` agree on every entry, whatever its parameters.
        #[test]
        fn canonical_form_is_rfc8785(params in proptest::collection::vec(("[a-z\u{e9}\u{1f600}]{1,4}", json_value()), 0..6)) {
            let params = Value::Object(params.into_iter().collect());
            let sealed = new("note", Some("why"), params).seal(3, 1_000_000);
            if let Err(err) = &sealed {
                proptest::prop_assert!(err.to_string().contains("2^53"), "{err}");
                return Ok(());
            }
            let mut e = sealed.expect("sealed").0;
            let fast = e.canonical().expect("canonical");
            proptest::prop_assert_eq!(&fast, &serde_jcs::to_vec(&e).expect("jcs"));
            // What was written reads back as canonical (numbers may normalise: -0 is 0).
            proptest::prop_assert!(Entry::parse(&fast).is_ok());
            // Unsorted input is never taken as canonical.
            if let Value::Object(m) = &mut e.params && m.len() > 1 {
                let mut v: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
                v.reverse();
                *m = v.into_iter().collect();
                let unsorted = serde_json::to_vec(&e).expect("json");
                if unsorted != fast {
                    proptest::prop_assert!(Entry::parse(&unsorted).is_err());
                }
            }
        }
    }
}
