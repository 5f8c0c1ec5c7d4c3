//! Authorization: one Rego decision (`data.maestro.authz.allow`) over the actor, the
//! action and the resource, for every endpoint. Deny by default: anything but `true` —
//! undefined, false, an evaluation error — denies.

use std::path::Path;

use serde::Serialize;

use crate::ServerError;
use crate::auth::Actor;

/// The built-in policy.
pub const BUILTIN: &str = include_str!("../policy/authz.rego");

/// The rule that decides.
const DECISION: &str = "data.maestro.authz.allow";

/// What is acted on.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Resource {
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<String>,
    pub tenant: String,
}

#[derive(Serialize)]
struct Input<'a> {
    actor: &'a Actor,
    action: &'a str,
    resource: &'a Resource,
}

/// A loaded policy.
#[derive(Clone)]
pub struct Policy {
    engine: regorus::Engine,
    source: String,
    /// Only the `bench` feature's [`Policy::bypass_for_benchmark`] sets it: the shipped
    /// binary cannot turn authorization off.
    bypass: bool,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

impl Policy {
    /// The built-in policy.
    ///
    /// # Errors
    /// Never in a released build (a test parses it).
    pub fn builtin() -> Result<Policy, ServerError> {
        Self::from_sources(
            &[("builtin:authz.rego".to_owned(), BUILTIN.to_owned())],
            "built-in",
        )
    }

    /// Every `.rego` file of a directory (not recursive).
    ///
    /// # Errors
    /// An unreadable directory or file, or a policy that does not parse (file and line).
    pub fn load(dir: &Path) -> Result<Policy, ServerError> {
        let bad = |message: String| ServerError::Config {
            source_name: format!("policy {}", dir.display()),
            message,
        };
        let mut sources = Vec::new();
        let entries = std::fs::read_dir(dir).map_err(|e| bad(format!("cannot be read: {e}")))?;
        for e in entries {
            let p = e.map_err(|e| bad(format!("cannot be read: {e}")))?.path();
            if p.extension().is_some_and(|x| x == "rego") {
                let text = std::fs::read_to_string(&p)
                    .map_err(|e| bad(format!("{} cannot be read: {e}", p.display())))?;
                sources.push((p.display().to_string(), text));
            }
        }
        sources.sort();
        if sources.is_empty() {
            return Err(bad("holds no .rego file".to_owned()));
        }
        Self::from_sources(&sources, &dir.display().to_string())
    }

    fn from_sources(sources: &[(String, String)], shown: &str) -> Result<Policy, ServerError> {
        let mut engine = regorus::Engine::new();
        engine.set_rego_v0(false);
        for (name, text) in sources {
            engine
                .add_policy(name.clone(), text.clone())
                .map_err(|e| ServerError::Config {
                    source_name: name.clone(),
                    message: e.to_string(),
                })?;
        }
        let p = Policy {
            engine,
            source: shown.to_owned(),
            bypass: false,
        };
        // A policy without the decision rule would deny everything: say so at start.
        let probe = Resource {
            kind: "probe",
            tenant: String::new(),
            ..Resource::default()
        };
        let nobody = Actor {
            id: String::new(),
            roles: Vec::new(),
            teams: Vec::new(),
            tenant: String::new(),
            scopes: Vec::new(),
            via: String::new(),
        };
        p.evaluate(&nobody, "probe", &probe)
            .map_err(|e| ServerError::Config {
                source_name: format!("policy {shown}"),
                message: e,
            })?;
        Ok(p)
    }

    /// Where the policy came from.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// A policy that allows everything without evaluating anything, so the benchmark can
    /// put a number on what authorization costs. Only in builds with the `bench` feature.
    ///
    /// # Errors
    /// Never.
    #[cfg(feature = "bench")]
    pub fn bypass_for_benchmark() -> Result<Policy, ServerError> {
        let mut p = Policy::builtin()?;
        p.bypass = true;
        p.source = "bypass (benchmark build)".to_owned();
        Ok(p)
    }

    /// Whether `actor` may do `action` on `resource`. Errors deny.
    #[must_use]
    pub fn allows(&self, actor: &Actor, action: &str, resource: &Resource) -> bool {
        if self.bypass {
            return true;
        }
        matches!(self.evaluate(actor, action, resource), Ok(true))
    }

    fn evaluate(&self, actor: &Actor, action: &str, resource: &Resource) -> Result<bool, String> {
        let input = serde_json::to_value(Input {
            actor,
            action,
            resource,
        })
        .map_err(|e| e.to_string())?;
        let value = <regorus::Value as serde::Deserialize>::deserialize(&input)
            .map_err(|e| e.to_string())?;
        let mut engine = self.engine.clone();
        engine.set_input(value);
        match engine.eval_rule(DECISION.to_owned()) {
            Ok(v) => Ok(v == regorus::Value::from(true)),
            Err(e) => {
                let text = e.to_string();
                if text.contains("not a valid rule path") || text.contains("not found") {
                    Err(format!("defines no rule {DECISION}: {text}"))
                } else {
                    Err(text)
                }
            }
        }
    }
}
