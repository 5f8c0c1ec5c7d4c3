//! Policy as code: Rego policies evaluated by an embedded OPA-compatible engine
//! (regorus), with conftest's conventions so existing policies run unchanged.
//!
//! - A **bundle** is a directory of `*.rego` files (default `.ci/policies/`) and data files
//!   (`*.json`, `*.yaml`) beside them, merged into `data`. It is parsed once; each input
//!   is evaluated on a clone of the prepared engine.
//! - Rules named `deny`, `violation` (failures) and `warn` (warnings), or prefixed
//!   `deny_`, `violation_`, `warn_`, in the selected packages (conftest's namespaces,
//!   default `main`) are evaluated; their results are strings or objects with `msg`.
//! - Unlike conftest, a selection that evaluates **no rule** is an error, not a pass:
//!   the usual cause is a package name that does not match.
//! - `test_*` rules are Rego unit tests ([`Bundle::test`]).

use std::collections::BTreeMap;
pub mod fmt;

use std::path::{Path, PathBuf};

use regorus::unstable::Rule;
use serde::Serialize;

/// The starter bundle `maestro policy init` writes: (file name, contents).
pub const STARTER: &[(&str, &str)] = &[
    ("data.yaml", include_str!("../starter/data.yaml")),
    (
        "kubernetes.rego",
        include_str!("../starter/kubernetes.rego"),
    ),
    (
        "kubernetes_test.rego",
        include_str!("../starter/kubernetes_test.rego"),
    ),
    ("licenses.rego", include_str!("../starter/licenses.rego")),
    (
        "licenses_test.rego",
        include_str!("../starter/licenses_test.rego"),
    ),
    ("pipeline.rego", include_str!("../starter/pipeline.rego")),
    (
        "pipeline_test.rego",
        include_str!("../starter/pipeline_test.rego"),
    ),
    ("terraform.rego", include_str!("../starter/terraform.rego")),
    (
        "terraform_test.rego",
        include_str!("../starter/terraform_test.rego"),
    ),
];

/// Policy, data and input files larger than this are refused.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// A policy that does not parse or compile; regorus's message names line and column.
    #[error("{path}: {message}")]
    Policy { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Input { path: PathBuf, message: String },
    #[error("{0}")]
    Eval(String),
    #[error("no policies (*.rego) in {0}")]
    Empty(PathBuf),
}

fn read(path: &Path) -> Result<String, PolicyError> {
    let io = |source| PolicyError::Io {
        path: path.to_owned(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_FILE_BYTES {
        return Err(PolicyError::TooLarge {
            path: path.to_owned(),
            size,
            limit: MAX_FILE_BYTES,
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// Every file under `dir` (sorted), skipping hidden directories.
fn walk(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let rd = std::fs::read_dir(&d).map_err(|source| PolicyError::Io {
            path: d.clone(),
            source,
        })?;
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            let hidden = e.file_name().to_string_lossy().starts_with('.');
            match e.file_type() {
                Ok(t) if t.is_dir() && !hidden => stack.push(p),
                Ok(t) if t.is_file() => out.push(p),
                _ => {}
            }
        }
    }
    out.sort();
    Ok(out)
}

/// The `*.rego` files below `dir` (hidden directories skipped), sorted.
///
/// # Errors
/// An unreadable directory.
pub fn rego_files(dir: &Path) -> Result<Vec<PathBuf>, PolicyError> {
    Ok(walk(dir)?
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "rego"))
        .collect())
}

/// How a rule's results count.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Deny,
    Violation,
    Warn,
}

impl Kind {
    /// The kind of a rule named `name`, conftest-style: `deny`, `deny_x`, ….
    #[must_use]
    pub fn of_rule(name: &str) -> Option<Kind> {
        [
            ("deny", Kind::Deny),
            ("violation", Kind::Violation),
            ("warn", Kind::Warn),
        ]
        .into_iter()
        .find(|(p, _)| name == *p || name.strip_prefix(p).is_some_and(|r| r.starts_with('_')))
        .map(|(_, k)| k)
    }

    #[must_use]
    pub fn fails(self) -> bool {
        self != Kind::Warn
    }
}

/// One result of a rule.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Message {
    pub kind: Kind,
    /// `package.rule`, e.g. `main.deny_public_bucket`.
    pub rule: String,
    pub msg: String,
    /// The whole result when it was an object (conftest's `{"msg": …, …}`).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

/// The evaluation of one input document.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    pub rules_evaluated: usize,
    pub failures: Vec<Message>,
    pub warnings: Vec<Message>,
}

/// One Rego unit test.
#[derive(Clone, Debug, Serialize)]
pub struct TestResult {
    pub package: String,
    pub name: String,
    pub passed: bool,
    /// Why it did not pass: false, undefined, or an evaluation error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Options for loading a bundle.
#[derive(Clone, Debug, Default)]
pub struct LoadOptions {
    /// Parse policies as Rego v0 (`deny[msg] { … }`) instead of v1.
    pub rego_v0: bool,
    /// More data files, merged into `data` after the bundle's own.
    pub data: Vec<PathBuf>,
}

/// A loaded, parsed policy bundle.
#[derive(Clone)]
pub struct Bundle {
    engine: regorus::Engine,
    /// Package → its rule names (each once, sorted).
    rules: BTreeMap<String, Vec<String>>,
    pub files: Vec<PathBuf>,
}

impl std::fmt::Debug for Bundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bundle")
            .field("rules", &self.rules)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The leading identifier of a rule head or package path (`deny[msg]` → `deny`).
fn ident(text: &str) -> &str {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .unwrap_or(text.len());
    text[..end].trim_start_matches("data.")
}

fn data_value(path: &Path) -> Result<regorus::Value, PolicyError> {
    let text = read(path)?;
    let bad = |message: String| PolicyError::Input {
        path: path.to_owned(),
        message,
    };
    let json: serde_json::Value = if is_yaml(path) {
        serde_saphyr::from_str(&text).map_err(|e| bad(format!("not YAML: {e}")))?
    } else {
        serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?
    };
    to_value(&json).map_err(bad)
}

fn is_yaml(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"))
}

/// A JSON value as an input or data value.
///
/// # Errors
/// Never for values serde_json produced; the engine's message otherwise.
pub fn to_value(json: &serde_json::Value) -> Result<regorus::Value, String> {
    // Straight from the tree: no JSON text in between.
    <regorus::Value as serde::Deserialize>::deserialize(json).map_err(|e| e.to_string())
}

impl Bundle {
    /// Loads every `*.rego` under `dir` and every `*.json`/`*.yaml` data file beside them.
    ///
    /// # Errors
    /// An unreadable or oversized file, a policy that does not parse (file, line and
    /// column named), a data file that does not parse, or no policy at all.
    pub fn load(dir: &Path, opts: &LoadOptions) -> Result<Bundle, PolicyError> {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(opts.rego_v0);
        let files = walk(dir)?;
        let mut policies = Vec::new();
        for f in &files {
            let ext = f.extension().and_then(|e| e.to_str()).unwrap_or_default();
            match ext {
                "rego" => {
                    let text = read(f)?;
                    engine
                        .add_policy(f.display().to_string(), text)
                        .map_err(|e| PolicyError::Policy {
                            path: f.clone(),
                            message: e.to_string(),
                        })?;
                    policies.push(f.clone());
                }
                "json" | "yaml" | "yml" => {
                    let v = data_value(f)?;
                    engine.add_data(v).map_err(|e| PolicyError::Input {
                        path: f.clone(),
                        message: format!("cannot be merged into data: {e}"),
                    })?;
                }
                _ => {}
            }
        }
        for f in &opts.data {
            let v = data_value(f)?;
            engine.add_data(v).map_err(|e| PolicyError::Input {
                path: f.clone(),
                message: format!("cannot be merged into data: {e}"),
            })?;
        }
        if policies.is_empty() {
            return Err(PolicyError::Empty(dir.to_owned()));
        }
        let mut rules: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in engine.get_modules() {
            let package = ident(m.package.refr.span().text()).to_owned();
            let names = rules.entry(package).or_default();
            for r in &m.policy {
                let head = match r.as_ref() {
                    Rule::Spec { head, .. } => match head {
                        regorus::unstable::RuleHead::Compr { refr, .. }
                        | regorus::unstable::RuleHead::Set { refr, .. }
                        | regorus::unstable::RuleHead::Func { refr, .. } => refr.span().text(),
                    },
                    Rule::Default { refr, .. } => refr.span().text(),
                };
                names.push(ident(head).to_owned());
            }
        }
        for names in rules.values_mut() {
            names.sort();
            names.dedup();
        }
        Ok(Bundle {
            engine,
            rules,
            files: policies,
        })
    }

    /// Packages and their rule names.
    #[must_use]
    pub fn packages(&self) -> &BTreeMap<String, Vec<String>> {
        &self.rules
    }

    /// The deny/violation/warn rules of the selected packages (`None`: every package).
    #[must_use]
    pub fn checks(&self, namespaces: Option<&[String]>) -> Vec<(String, String, Kind)> {
        self.rules
            .iter()
            .filter(|(p, _)| namespaces.is_none_or(|ns| ns.iter().any(|n| n == *p)))
            .flat_map(|(p, names)| {
                names
                    .iter()
                    .filter_map(move |n| Kind::of_rule(n).map(|k| (p.clone(), n.clone(), k)))
            })
            .collect()
    }

    /// [`Bundle::eval`] on a JSON value.
    ///
    /// # Errors
    /// As [`Bundle::eval`].
    pub fn eval_json(
        &self,
        namespaces: Option<&[String]>,
        input: &serde_json::Value,
    ) -> Result<Outcome, PolicyError> {
        self.eval(namespaces, &to_value(input).map_err(PolicyError::Eval)?)
    }

    /// Evaluates the checks of `namespaces` (`None`: all) against one input document.
    ///
    /// # Errors
    /// When no rule matches the selection (the package-name trap), or evaluation fails.
    pub fn eval(
        &self,
        namespaces: Option<&[String]>,
        input: &Value,
    ) -> Result<Outcome, PolicyError> {
        let checks = self.checks(namespaces);
        if checks.is_empty() {
            let found: Vec<&str> = self.rules.keys().map(String::as_str).collect();
            return Err(PolicyError::Eval(format!(
                "no deny, violation or warn rule in {} (packages in the bundle: {})",
                namespaces.map_or_else(
                    || "any package".to_owned(),
                    |ns| format!("package(s) {}", ns.join(", "))
                ),
                found.join(", ")
            )));
        }
        let mut engine = self.engine.clone();
        // A cheap clone: values share their contents.
        engine.set_input(input.clone());
        let mut out = Outcome {
            rules_evaluated: checks.len(),
            ..Outcome::default()
        };
        for (package, rule, kind) in checks {
            let path = format!("data.{package}.{rule}");
            let v = engine
                .eval_rule(path.clone())
                .map_err(|e| PolicyError::Eval(format!("{path}: {e}")))?;
            let json: serde_json::Value = serde_json::from_str(
                &v.to_json_str()
                    .map_err(|e| PolicyError::Eval(e.to_string()))?,
            )
            .unwrap_or(serde_json::Value::Null);
            let items: Vec<serde_json::Value> = match json {
                serde_json::Value::Array(a) => a,
                serde_json::Value::Null | serde_json::Value::Bool(false) => Vec::new(),
                serde_json::Value::String(s) if s == "undefined" => Vec::new(),
                serde_json::Value::Bool(true) => vec![serde_json::Value::String(rule.clone())],
                other => vec![other],
            };
            for item in items {
                let (msg, details) = match &item {
                    serde_json::Value::String(s) => (s.clone(), serde_json::Value::Null),
                    serde_json::Value::Object(o) => (
                        o.get("msg")
                            .and_then(serde_json::Value::as_str)
                            .map_or_else(|| item.to_string(), str::to_owned),
                        item.clone(),
                    ),
                    other => (other.to_string(), serde_json::Value::Null),
                };
                let m = Message {
                    kind,
                    rule: format!("{package}.{rule}"),
                    msg,
                    details,
                };
                if kind.fails() {
                    out.failures.push(m);
                } else {
                    out.warnings.push(m);
                }
            }
        }
        out.failures
            .sort_by(|a, b| (&a.rule, &a.msg).cmp(&(&b.rule, &b.msg)));
        out.warnings
            .sort_by(|a, b| (&a.rule, &a.msg).cmp(&(&b.rule, &b.msg)));
        Ok(out)
    }

    /// Runs every `test_*` rule; a test passes when it evaluates to `true`.
    #[must_use]
    pub fn test(&self) -> Vec<TestResult> {
        let mut out = Vec::new();
        for (package, names) in &self.rules {
            for name in names.iter().filter(|n| n.starts_with("test_")) {
                let mut engine = self.engine.clone();
                let path = format!("data.{package}.{name}");
                let (passed, error) = match engine.eval_rule(path) {
                    Ok(v) if v == regorus::Value::from(true) => (true, None),
                    Ok(regorus::Value::Undefined) => (
                        false,
                        Some("undefined: the rule body did not hold".to_owned()),
                    ),
                    Ok(v) => (false, Some(format!("evaluated to {v}, not true"))),
                    Err(e) => (false, Some(e.to_string())),
                };
                out.push(TestResult {
                    package: package.clone(),
                    name: name.clone(),
                    passed,
                    error,
                });
            }
        }
        out
    }
}

/// The documents of a multi-document YAML text, nulls included.
///
/// Rendered charts run to thousands of documents: the parser's default budget (1,024
/// documents, 250,000 nodes) is sized for configuration files. Inputs are already capped
/// at [`MAX_FILE_BYTES`]; the alias-expansion limits stay as they are.
///
/// # Errors
/// The parser's message, with line and column.
pub fn yaml_documents(text: &str) -> Result<Vec<Value>, String> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 1_000_000,
            max_nodes: 50_000_000,
            max_events: 100_000_000,
        },
    };
    serde_saphyr::from_str_multiple_with_options::<Value, _>(text, options)
        .map_err(|e| e.to_string())
}

/// A policy input or data value (the engine's own, so inputs are converted once).
pub use regorus::Value;

/// One input document: where it came from and its value.
#[derive(Clone, Debug)]
pub struct Input {
    pub path: PathBuf,
    /// 0-based index of the document in a multi-document YAML file.
    pub document: usize,
    pub value: Value,
}

/// Reads an input file: JSON (one document; a Terraform plan is plain JSON) or YAML (each
/// `---` document is its own input, as conftest evaluates them; empty documents are
/// skipped).
///
/// # Errors
/// Unreadable, oversized or unparsable files, with the path named.
pub fn read_inputs(path: &Path) -> Result<Vec<Input>, PolicyError> {
    let text = read(path)?;
    let bad = |message: String| PolicyError::Input {
        path: path.to_owned(),
        message,
    };
    let values: Vec<Value> = if is_yaml(path) {
        yaml_documents(&text).map_err(|e| bad(format!("not YAML: {e}")))?
    } else {
        // Straight into the engine's values; on failure, serde_json names the line.
        match Value::from_json_str(&text) {
            Ok(v) => vec![v],
            Err(e) => {
                let line = serde_json::from_str::<serde::de::IgnoredAny>(&text)
                    .err()
                    .map_or_else(|| e.to_string(), |e| format!("line {}: {e}", e.line()));
                return Err(bad(format!("not JSON: {line}")));
            }
        }
    };
    Ok(values
        .into_iter()
        .enumerate()
        .filter(|(_, v)| *v != Value::Null)
        .map(|(document, value)| Input {
            path: path.to_owned(),
            document,
            value,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_kinds_follow_conftest() {
        assert_eq!(Kind::of_rule("deny"), Some(Kind::Deny));
        assert_eq!(Kind::of_rule("deny_public_bucket"), Some(Kind::Deny));
        assert_eq!(Kind::of_rule("violation"), Some(Kind::Violation));
        assert_eq!(Kind::of_rule("warn_latest"), Some(Kind::Warn));
        assert_eq!(Kind::of_rule("denylist"), None);
        assert_eq!(Kind::of_rule("allow"), None);
    }

    #[test]
    fn idents_of_heads() {
        assert_eq!(ident("deny[msg]"), "deny");
        assert_eq!(ident("deny contains msg"), "deny");
        assert_eq!(ident("data.kubernetes.admission"), "kubernetes.admission");
    }
}
