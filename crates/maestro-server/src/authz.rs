//! Authorization: one Rego decision (`data.maestro.authz.allow`) over the actor, the
//! action and the resource, for every endpoint. Deny by default: anything but `true` —
//! undefined, false, an evaluation error — denies.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

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

/// Tells policy instances apart in the per-thread engines and memo.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A loaded policy.
#[derive(Clone)]
pub struct Policy {
    /// Prepared (analysed and scheduled) once; each worker thread clones it once.
    engine: regorus::Engine,
    id: u64,
    /// What the policy can read of the input; `None` when its decisions must not be
    /// memoized (see [`crate::memo`]).
    reads: Option<crate::memo::Reads>,
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
        // A policy without the decision rule would deny everything: say so at start. The
        // probe also prepares the engine, so the copies made from it start prepared.
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
        decide(&mut engine, &nobody, "probe", &probe).map_err(|e| ServerError::Config {
            source_name: format!("policy {shown}"),
            message: e,
        })?;
        Ok(Policy {
            engine,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            reads: crate::memo::Reads::of(sources),
            source: shown.to_owned(),
            bypass: false,
        })
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

    /// The input paths the policy reads, or `None` when it calls an impure built-in and
    /// every decision is evaluated afresh.
    #[must_use]
    pub fn reads(&self) -> Option<Vec<String>> {
        self.reads.as_ref().map(crate::memo::Reads::shown)
    }

    fn evaluate(&self, actor: &Actor, action: &str, resource: &Resource) -> Result<bool, String> {
        let key = self.reads.as_ref().map(|r| r.key(actor, action, resource));
        crate::memo::with_engine(self.id, &self.engine, key, |engine| {
            decide(engine, actor, action, resource)
        })
    }
}

/// One evaluation of the decision rule.
fn decide(
    engine: &mut regorus::Engine,
    actor: &Actor,
    action: &str,
    resource: &Resource,
) -> Result<bool, String> {
    let input = serde_json::to_value(Input {
        actor,
        action,
        resource,
    })
    .map_err(|e| e.to_string())?;
    let value =
        <regorus::Value as serde::Deserialize>::deserialize(&input).map_err(|e| e.to_string())?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(text: &str) -> Policy {
        Policy::from_sources(&[("t.rego".to_owned(), text.to_owned())], "test").expect("loads")
    }

    fn actor(roles: &[&str]) -> Actor {
        Actor {
            id: "ana".to_owned(),
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
            teams: Vec::new(),
            tenant: "acme".to_owned(),
            scopes: vec!["*".to_owned()],
            via: "token:tok_1".to_owned(),
        }
    }

    fn run(id: &str, tenant: &str) -> Resource {
        Resource {
            kind: "run",
            id: Some(id.to_owned()),
            service: None,
            environment: None,
            tenant: tenant.to_owned(),
        }
    }

    #[test]
    fn memoized_decisions_still_follow_every_value_the_policy_reads() {
        // Reads the id: two runs of one tenant get different answers, in any order and
        // asked again and again (the second round comes from the memo).
        let p = policy(
            "package maestro.authz\nimport rego.v1\ndefault allow := false\nallow if input.resource.id == \"r1\"\n",
        );
        assert_eq!(p.reads().expect("pure"), ["input.resource.id"]);
        for _ in 0..3 {
            assert!(p.allows(&actor(&[]), "runs.read", &run("r1", "acme")));
            assert!(!p.allows(&actor(&[]), "runs.read", &run("r2", "acme")));
        }
        // The built-in policy reads roles and tenants, not ids.
        let b = Policy::builtin().expect("loads");
        for _ in 0..3 {
            assert!(b.allows(&actor(&["viewer"]), "runs.read", &run("r1", "acme")));
            assert!(b.allows(&actor(&["viewer"]), "runs.read", &run("r2", "acme")));
            assert!(!b.allows(&actor(&["viewer"]), "runs.read", &run("r1", "other")));
            assert!(!b.allows(&actor(&[]), "runs.read", &run("r1", "acme")));
            assert!(!b.allows(&actor(&["viewer"]), "runs.create", &run("r1", "acme")));
        }
    }

    #[test]
    fn two_policies_on_one_thread_do_not_share_engines_or_answers() {
        let yes = policy("package maestro.authz\nallow := true\n");
        let no = policy("package maestro.authz\nallow := false\n");
        for _ in 0..3 {
            assert!(yes.allows(&actor(&[]), "runs.read", &run("r1", "acme")));
            assert!(!no.allows(&actor(&[]), "runs.read", &run("r1", "acme")));
        }
    }

    #[test]
    fn a_policy_that_reads_the_clock_is_evaluated_every_time() {
        let p = policy("package maestro.authz\nimport rego.v1\nallow if time.now_ns() > 0\n");
        assert_eq!(p.reads(), None);
        assert!(p.allows(&actor(&[]), "runs.read", &run("r1", "acme")));
    }

    #[test]
    fn an_evaluation_error_denies_and_is_not_remembered() {
        // Conflicting values for a complete rule are an evaluation error: deny.
        let p = policy(
            "package maestro.authz\nimport rego.v1\nallow := true if input.resource.id == \"r1\"\nallow := false if input.resource.tenant == \"acme\"\n",
        );
        for _ in 0..2 {
            assert!(!p.allows(&actor(&[]), "runs.read", &run("r1", "acme")));
            assert!(p.allows(&actor(&[]), "runs.read", &run("r1", "other")));
        }
    }
}
