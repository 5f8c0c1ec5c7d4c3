//! Feature flags: a registry in flagd's flag-definition format (`flags`, `$evaluators`) with
//! Maestro's metadata on every flag — an owner, a safe default (`defaultVariant`), the
//! variant a kill switch serves, an expiry and a risk level — checked as a whole
//! ([`Registry::parse`]: every problem, each named by its JSON path), and evaluated as flagd
//! does ([`Registry::evaluate`]): JsonLogic targeting with flagd's `fractional` and `sem_ver`
//! (and `starts_with`, `ends_with`), `$flagd.flagKey` and `$flagd.timestamp` in the context,
//! OpenFeature reasons and error codes.

pub mod lint;
mod ops;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use datalogic_rs::{CompiledLogic, DataLogic};
use serde::Serialize;
use serde_json::{Map, Value, json};

/// Where the registry lives in a repository (the seeds' layout).
pub const DEFAULT_PATH: &str = "admin/feature-flags/flags.json";
/// Largest registry read.
pub const MAX_REGISTRY_BYTES: u64 = 4 << 20;

/// A problem with the registry.
#[derive(Debug, thiserror::Error)]
pub enum FlagsError {
    #[error("{file}: {message}")]
    Read { file: String, message: String },
    #[error("{file}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {}: {}", p.path, p.message)).collect::<Vec<_>>().join("\n"))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

/// One problem, at a JSON path (`flags.new-checkout.metadata.owner`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

/// How risky a flag's code path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Risk {
    Low,
    Medium,
    High,
}

/// One flag.
#[derive(Debug, Clone, Serialize)]
pub struct Flag {
    pub key: String,
    pub enabled: bool,
    pub variants: BTreeMap<String, Value>,
    /// The safe default.
    pub default_variant: String,
    pub owner: String,
    pub risk: Risk,
    /// The variant served while the flag is killed (default: the default variant).
    pub kill_variant: String,
    #[serde(serialize_with = "date")]
    pub expires: Option<jiff::civil::Date>,
    pub description: Option<String>,
    /// The targeting rule as written (`$ref`s resolved); `None` for a static flag.
    pub targeting: Option<Value>,
    /// The flag's metadata as written, returned with every evaluation.
    pub metadata: Map<String, Value>,
    #[serde(skip)]
    compiled: Option<Arc<CompiledLogic>>,
}

/// The outcome of one evaluation (OpenFeature's resolution details).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Resolution {
    pub key: String,
    pub value: Option<Value>,
    pub variant: Option<String>,
    /// `STATIC`, `TARGETING_MATCH`, `DEFAULT`, `DISABLED` (killed) or `ERROR`.
    pub reason: &'static str,
    /// `FLAG_NOT_FOUND`, `PARSE_ERROR`, `TARGETING_KEY_MISSING`, `INVALID_CONTEXT`,
    /// `GENERAL`.
    pub error_code: Option<&'static str>,
    pub error_message: Option<String>,
    pub metadata: Map<String, Value>,
}

/// Where a flag's expiry stands on a day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "status", content = "days")]
pub enum Expiry {
    /// No expiry, or not yet.
    Live,
    /// Expired this many days ago, within the grace period: a warning.
    Warn(i64),
    /// Expired past the grace period: the lint fails.
    Fail(i64),
}

/// A checked registry, ready to evaluate.
#[derive(Clone)]
pub struct Registry {
    pub flags: BTreeMap<String, Flag>,
    engine: Arc<DataLogic>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("flags", &self.flags.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn date<S: serde::Serializer>(d: &Option<jiff::civil::Date>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_str(&d.to_string()),
        None => s.serialize_none(),
    }
}

fn engine() -> DataLogic {
    let mut e = DataLogic::new();
    e.add_operator("fractional".to_owned(), Box::new(ops::Fractional));
    e.add_operator("sem_ver".to_owned(), Box::new(ops::SemVer));
    e
}

/// `{"$ref": "name"}` replaced by `$evaluators.name`, recursively (a cycle is a problem).
fn resolve_refs(v: &Value, evaluators: &Map<String, Value>, depth: usize) -> Result<Value, String> {
    if depth > 32 {
        return Err("`$ref`s nest deeper than 32 (a cycle?)".to_owned());
    }
    Ok(match v {
        Value::Object(o) if o.len() == 1 && o.contains_key("$ref") => {
            let name = o["$ref"].as_str().ok_or("`$ref` must name an evaluator")?;
            let target = evaluators.get(name).ok_or_else(|| {
                format!("`$ref` to `{name}`, which `$evaluators` does not define")
            })?;
            resolve_refs(target, evaluators, depth + 1)?
        }
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), resolve_refs(x, evaluators, depth)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| resolve_refs(x, evaluators, depth))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// The operators a targeting rule may use: JsonLogic's and flagd's.
const OPERATORS: &[&str] = &[
    "var",
    "missing",
    "missing_some",
    "if",
    "?:",
    "==",
    "===",
    "!=",
    "!==",
    "!",
    "!!",
    "or",
    "and",
    ">",
    ">=",
    "<",
    "<=",
    "max",
    "min",
    "+",
    "-",
    "*",
    "/",
    "%",
    "map",
    "reduce",
    "filter",
    "all",
    "none",
    "some",
    "merge",
    "in",
    "cat",
    "substr",
    "fractional",
    "sem_ver",
    "starts_with",
    "ends_with",
];

/// The first operator of `rule` that is neither JsonLogic's nor flagd's.
fn unknown_op(rule: &Value) -> Option<String> {
    match rule {
        Value::Object(o) if o.len() == 1 => {
            let (op, args) = o.iter().next()?;
            if OPERATORS.contains(&op.as_str()) {
                unknown_op(args)
            } else {
                Some(op.clone())
            }
        }
        Value::Object(o) => o.values().find_map(unknown_op),
        Value::Array(a) => a.iter().find_map(unknown_op),
        _ => None,
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Bool(_) => "boolean",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Object(_) => "object",
        Value::Array(_) => "array",
        Value::Null => "null",
    }
}

fn is_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 128
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Registry {
    /// Reads and checks the registry at `path`.
    ///
    /// # Errors
    /// [`FlagsError::Read`] (missing, too large, not JSON — with its line and column) or
    /// [`FlagsError::Invalid`] with every problem.
    pub fn load(path: &Path) -> Result<Registry, FlagsError> {
        use std::io::Read as _;
        let file = path.display().to_string();
        let read = |message: String| FlagsError::Read {
            file: file.clone(),
            message,
        };
        let mut bytes = Vec::new();
        std::fs::File::open(path)
            .map_err(|e| {
                read(format!(
                    "{e} (the flag registry; create it, or give its path)"
                ))
            })?
            .take(MAX_REGISTRY_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| read(e.to_string()))?;
        if bytes.len() as u64 > MAX_REGISTRY_BYTES {
            return Err(read(format!("larger than {MAX_REGISTRY_BYTES} bytes")));
        }
        Registry::parse(&bytes).map_err(|e| match e {
            FlagsError::Read { message, .. } => FlagsError::Read {
                file: file.clone(),
                message,
            },
            FlagsError::Invalid { problems, .. } => FlagsError::Invalid {
                file: file.clone(),
                problems,
            },
        })
    }

    /// Checks a registry's text.
    ///
    /// # Errors
    /// As [`Registry::load`], with `file` empty.
    pub fn parse(bytes: &[u8]) -> Result<Registry, FlagsError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|e| FlagsError::Read {
            file: String::new(),
            message: format!("not JSON at line {}, column {}: {e}", e.line(), e.column()),
        })?;
        let mut problems = Vec::new();
        let mut bad = |path: String, message: String| problems.push(Problem { path, message });
        let evaluators = doc
            .get("$evaluators")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for k in doc.as_object().map(|o| o.keys()).into_iter().flatten() {
            if !matches!(k.as_str(), "$schema" | "flags" | "$evaluators" | "metadata") {
                bad(
                    k.clone(),
                    "is not a field of a flagd flag definition".to_owned(),
                );
            }
        }
        let engine = engine();
        let mut flags = BTreeMap::new();
        let Some(defs) = doc.get("flags").and_then(Value::as_object) else {
            bad(
                "flags".to_owned(),
                "missing: an object of flags by key".to_owned(),
            );
            return Err(FlagsError::Invalid {
                file: String::new(),
                problems,
            });
        };
        for (key, def) in defs {
            let at = |f: &str| format!("flags.{key}{}{f}", if f.is_empty() { "" } else { "." });
            if !is_key(key) {
                bad(
                    at(""),
                    "a flag key is letters, digits, -, _ and . (at most 128)".to_owned(),
                );
            }
            let Some(def) = def.as_object() else {
                bad(at(""), "must be an object".to_owned());
                continue;
            };
            for k in def.keys() {
                if !matches!(
                    k.as_str(),
                    "state" | "variants" | "defaultVariant" | "targeting" | "metadata"
                ) {
                    bad(at(k), "is not a field of a flagd flag".to_owned());
                }
            }
            let enabled = match def.get("state").and_then(Value::as_str) {
                Some("ENABLED") => true,
                Some("DISABLED") => false,
                _ => {
                    bad(at("state"), "must be ENABLED or DISABLED".to_owned());
                    false
                }
            };
            let variants: BTreeMap<String, Value> = def
                .get("variants")
                .and_then(Value::as_object)
                .map(|o| o.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            if variants.is_empty() {
                bad(at("variants"), "must name at least one variant".to_owned());
            }
            let kinds: Vec<&str> = {
                let mut k: Vec<&str> = variants.values().map(kind).collect();
                k.sort_unstable();
                k.dedup();
                k
            };
            if kinds.len() > 1 {
                bad(
                    at("variants"),
                    format!(
                        "mixes {}: a flag's variants share one type",
                        kinds.join(" and ")
                    ),
                );
            }
            let default_variant = def
                .get("defaultVariant")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            if !variants.contains_key(&default_variant) {
                bad(
                    at("defaultVariant"),
                    format!(
                        "`{default_variant}` is not one of the variants (the safe default must be)"
                    ),
                );
            }
            let metadata = def
                .get("metadata")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let owner = metadata
                .get("owner")
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or_default()
                .to_owned();
            if owner.is_empty() {
                bad(
                    at("metadata.owner"),
                    "missing: every flag has an owner (a team or a person)".to_owned(),
                );
            }
            let risk = match metadata.get("risk").and_then(Value::as_str) {
                None | Some("low") => Risk::Low,
                Some("medium") => Risk::Medium,
                Some("high") => Risk::High,
                Some(other) => {
                    bad(
                        at("metadata.risk"),
                        format!("`{other}` is not low, medium or high"),
                    );
                    Risk::Low
                }
            };
            let kill_variant = match metadata.get("killSwitch") {
                None => default_variant.clone(),
                Some(Value::String(v)) if variants.contains_key(v) => v.clone(),
                Some(v) => {
                    bad(
                        at("metadata.killSwitch"),
                        format!("{v} is not one of the variants"),
                    );
                    default_variant.clone()
                }
            };
            let expires = match metadata.get("expires") {
                None => None,
                Some(Value::String(d)) => match d.parse::<jiff::civil::Date>() {
                    Ok(d) => Some(d),
                    Err(_) => {
                        bad(
                            at("metadata.expires"),
                            format!("`{d}` is not a date (YYYY-MM-DD)"),
                        );
                        None
                    }
                },
                Some(v) => {
                    bad(
                        at("metadata.expires"),
                        format!("{v} is not a date (YYYY-MM-DD)"),
                    );
                    None
                }
            };
            if risk == Risk::High && expires.is_none() {
                bad(
                    at("metadata.expires"),
                    "missing: a high-risk flag says when it goes away (YYYY-MM-DD)".to_owned(),
                );
            }
            let targeting = match def.get("targeting") {
                None => None,
                Some(Value::Object(o)) if o.is_empty() => None,
                Some(t) => match resolve_refs(t, &evaluators, 0) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        bad(at("targeting"), e);
                        None
                    }
                },
            };
            if let Some(op) = targeting.as_ref().and_then(unknown_op) {
                bad(
                    at("targeting"),
                    format!("`{op}` is not a JsonLogic or flagd operator"),
                );
            }
            let compiled = match &targeting {
                None => None,
                Some(t) => match engine.compile(t) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        bad(at("targeting"), format!("not a JsonLogic rule: {e}"));
                        None
                    }
                },
            };
            flags.insert(
                key.clone(),
                Flag {
                    key: key.clone(),
                    enabled,
                    variants,
                    default_variant,
                    owner,
                    risk,
                    kill_variant,
                    expires,
                    description: metadata
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    targeting,
                    metadata,
                    compiled,
                },
            );
        }
        if !problems.is_empty() {
            return Err(FlagsError::Invalid {
                file: String::new(),
                problems,
            });
        }
        Ok(Registry {
            flags,
            engine: Arc::new(engine),
        })
    }

    /// Evaluates `key` for `context` (an object; `targetingKey` among its fields) at
    /// `now_s` (Unix seconds, `$flagd.timestamp`). A killed flag serves its kill variant
    /// with reason `DISABLED`; a flag whose `state` is `DISABLED` is not found, as in flagd.
    #[must_use]
    pub fn evaluate(&self, key: &str, context: &Value, killed: bool, now_s: i64) -> Resolution {
        let error =
            |code: &'static str, message: String, metadata: Map<String, Value>| Resolution {
                key: key.to_owned(),
                value: None,
                variant: None,
                reason: "ERROR",
                error_code: Some(code),
                error_message: Some(message),
                metadata,
            };
        let Some(flag) = self.flags.get(key).filter(|f| f.enabled) else {
            return error(
                "FLAG_NOT_FOUND",
                format!("flag `{key}` is not in the registry, or disabled"),
                Map::new(),
            );
        };
        let served = |variant: &str, reason: &'static str| Resolution {
            key: key.to_owned(),
            value: flag.variants.get(variant).cloned(),
            variant: Some(variant.to_owned()),
            reason,
            error_code: None,
            error_message: None,
            metadata: flag.metadata.clone(),
        };
        if killed {
            return served(&flag.kill_variant, "DISABLED");
        }
        let Some(rule) = &flag.compiled else {
            return served(&flag.default_variant, "STATIC");
        };
        let mut data = match context {
            Value::Object(o) => o.clone(),
            Value::Null => Map::new(),
            _ => {
                return error(
                    "INVALID_CONTEXT",
                    "the context must be an object".to_owned(),
                    flag.metadata.clone(),
                );
            }
        };
        data.insert(
            "$flagd".to_owned(),
            json!({"flagKey": key, "timestamp": now_s}),
        );
        match self.engine.evaluate_owned(rule, Value::Object(data)) {
            Ok(Value::Null) => served(&flag.default_variant, "DEFAULT"),
            Ok(v) => {
                let name = match &v {
                    Value::String(s) => s.clone(),
                    Value::Bool(b) => b.to_string(),
                    other => other.to_string(),
                };
                if flag.variants.contains_key(&name) {
                    served(&name, "TARGETING_MATCH")
                } else {
                    error(
                        "GENERAL",
                        format!("targeting chose `{name}`, which is not a variant of `{key}`"),
                        flag.metadata.clone(),
                    )
                }
            }
            Err(e) => {
                let message = format!("targeting failed: {e}");
                let code = if message.contains("targetingKey") {
                    "TARGETING_KEY_MISSING"
                } else {
                    "PARSE_ERROR"
                };
                error(code, message, flag.metadata.clone())
            }
        }
    }
}

impl Flag {
    /// Where its expiry stands on `today`, with `grace_days` of warnings before it fails.
    #[must_use]
    pub fn expiry(&self, today: jiff::civil::Date, grace_days: i64) -> Expiry {
        let Some(expires) = self.expires else {
            return Expiry::Live;
        };
        let days = expires.until(today).map_or(0, |s| i64::from(s.get_days()));
        if days <= 0 {
            Expiry::Live
        } else if days <= grace_days {
            Expiry::Warn(days)
        } else {
            Expiry::Fail(days)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r##"{
      "$schema": "https://flagd.dev/schema/v0/flags.json",
      "flags": {
        "welsh-greetings": {
          "state": "ENABLED",
          "variants": {"on": true, "off": false},
          "defaultVariant": "off",
          "targeting": {"if": [{"$ref": "in-wales"}, "on", null]},
          "metadata": {"owner": "team-greet", "risk": "high", "expires": "2027-03-01", "killSwitch": "off"}
        },
        "banner-colour": {
          "state": "ENABLED",
          "variants": {"red": "#c00", "blue": "#00c"},
          "defaultVariant": "red",
          "targeting": {"fractional": [["red", 50], ["blue", 50]]},
          "metadata": {"owner": "team-web"}
        },
        "new-api": {
          "state": "ENABLED",
          "variants": {"on": true, "off": false},
          "defaultVariant": "off",
          "targeting": {"if": [{"sem_ver": [{"var": "appVersion"}, ">=", "2.1.0"]}, "on", "off"]},
          "metadata": {"owner": "team-api"}
        },
        "retired": {
          "state": "DISABLED",
          "variants": {"on": true},
          "defaultVariant": "on",
          "metadata": {"owner": "team-api"}
        }
      },
      "$evaluators": {"in-wales": {"==": [{"var": "region"}, "GB-WLS"]}}
    }"##;

    #[test]
    fn flags_evaluate_as_flagd_does() {
        let r = Registry::parse(GOOD.as_bytes()).expect("valid");
        let wales = r.evaluate("welsh-greetings", &json!({"region": "GB-WLS"}), false, 0);
        assert_eq!(
            (wales.value, wales.variant.as_deref(), wales.reason),
            (Some(json!(true)), Some("on"), "TARGETING_MATCH")
        );
        let elsewhere = r.evaluate("welsh-greetings", &json!({"region": "FR"}), false, 0);
        assert_eq!(
            (elsewhere.value, elsewhere.reason),
            (Some(json!(false)), "DEFAULT")
        );
        let killed = r.evaluate("welsh-greetings", &json!({"region": "GB-WLS"}), true, 0);
        assert_eq!(
            (killed.value, killed.reason),
            (Some(json!(false)), "DISABLED")
        );
        assert_eq!(killed.metadata["owner"], "team-greet");
        let old = r.evaluate("new-api", &json!({"appVersion": "2.0.9"}), false, 0);
        let new = r.evaluate("new-api", &json!({"appVersion": "v2.1.0"}), false, 0);
        assert_eq!(
            (old.value, new.value),
            (Some(json!(false)), Some(json!(true)))
        );
        let gone = r.evaluate("retired", &json!({}), false, 0);
        assert_eq!(gone.error_code, Some("FLAG_NOT_FOUND"));
        assert_eq!(
            r.evaluate("nope", &json!({}), false, 0).error_code,
            Some("FLAG_NOT_FOUND")
        );
        assert_eq!(
            r.evaluate("new-api", &json!([1]), false, 0).error_code,
            Some("INVALID_CONTEXT")
        );
    }

    #[test]
    fn fractional_splits_are_stable_and_close_to_their_weights() {
        let r = Registry::parse(GOOD.as_bytes()).expect("valid");
        let mut blue = 0;
        for i in 0..10_000 {
            let ctx = json!({"targetingKey": format!("user-{i}")});
            let a = r.evaluate("banner-colour", &ctx, false, 0);
            assert_eq!(
                a,
                r.evaluate("banner-colour", &ctx, false, 0),
                "the same user, the same colour"
            );
            if a.variant.as_deref() == Some("blue") {
                blue += 1;
            }
        }
        assert!((4_700..=5_300).contains(&blue), "{blue} of 10,000");
        let anonymous = r.evaluate("banner-colour", &json!({}), false, 0);
        assert_eq!(anonymous.error_code, Some("TARGETING_KEY_MISSING"));
    }

    #[test]
    fn every_problem_is_named_by_its_path() {
        let bad = r#"{"flags": {
            "a": {"state": "ON", "variants": {"x": 1, "y": "two"}, "defaultVariant": "z",
                  "metadata": {"risk": "extreme", "expires": "soon", "killSwitch": "w"}},
            "b": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                  "metadata": {"owner": "t", "risk": "high"}, "targeting": {"$ref": "missing"}},
            "c": {"state": "ENABLED", "variants": {"on": true}, "defaultVariant": "on",
                  "metadata": {"owner": "t"}, "targeting": {"no_such_op": [1]}, "colour": 1}
        }, "flagz": {}}"#;
        let Err(FlagsError::Invalid { problems, .. }) = Registry::parse(bad.as_bytes()) else {
            panic!("invalid");
        };
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for want in [
            "flagz",
            "flags.a.state",
            "flags.a.variants",
            "flags.a.defaultVariant",
            "flags.a.metadata.owner",
            "flags.a.metadata.risk",
            "flags.a.metadata.killSwitch",
            "flags.a.metadata.expires",
            "flags.b.metadata.expires",
            "flags.b.targeting",
            "flags.c.targeting",
            "flags.c.colour",
        ] {
            assert!(paths.contains(&want), "{want} in {problems:#?}");
        }
        let e = Registry::parse(b"{\"flags\": {,}}").expect_err("syntax");
        assert!(e.to_string().contains("line 1, column 12"), "{e}");
    }

    #[test]
    fn expiry_warns_then_fails() {
        let r = Registry::parse(GOOD.as_bytes()).expect("valid");
        let f = &r.flags["welsh-greetings"];
        let day = |s: &str| s.parse::<jiff::civil::Date>().expect("date");
        assert_eq!(f.expiry(day("2027-03-01"), 14), Expiry::Live);
        assert_eq!(f.expiry(day("2027-03-05"), 14), Expiry::Warn(4));
        assert_eq!(f.expiry(day("2027-04-01"), 14), Expiry::Fail(31));
        assert_eq!(
            r.flags["banner-colour"].expiry(day("2030-01-01"), 14),
            Expiry::Live
        );
    }
}
