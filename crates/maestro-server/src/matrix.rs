//! The policy's allow/deny matrix, checked in as data (`policy/matrix.toml` for the
//! built-in policy): roles × own/other tenant × actions. Every cell is evaluated against
//! a policy; a cell the policy decides differently is a [`Flip`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use crate::ServerError;
use crate::auth::Actor;
use crate::authz::{Policy, Resource};

/// The built-in policy's matrix.
pub const BUILTIN: &str = include_str!("../policy/matrix.toml");

/// A matrix file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Matrix {
    /// Every action the grid covers.
    pub actions: Vec<String>,
    /// What each role may do.
    pub roles: BTreeMap<String, RoleCells>,
}

/// One role's allowed cells.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleCells {
    pub own_tenant: Vec<String>,
    pub other_tenant: Vec<String>,
}

/// A cell the policy decides otherwise than the matrix says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flip {
    /// The role, or `(none)` for an actor without one.
    pub role: String,
    /// `own` or `other`.
    pub tenant: &'static str,
    pub action: String,
    /// What the matrix says.
    pub expected: bool,
}

impl std::fmt::Display for Flip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let say = |b: bool| if b { "allow" } else { "deny" };
        write!(
            f,
            "role {} × {} tenant × {}: the matrix says {}, the policy says {}",
            self.role,
            self.tenant,
            self.action,
            say(self.expected),
            say(!self.expected)
        )
    }
}

/// The role name that stands for an actor with no role.
pub const NO_ROLE: &str = "(none)";

impl Matrix {
    /// Parses a matrix; `shown` names it in errors.
    ///
    /// # Errors
    /// [`ServerError::Config`] naming the file, the field and what is wrong.
    pub fn parse(text: &str, shown: &str) -> Result<Matrix, ServerError> {
        let bad = |message: String| ServerError::Config {
            source_name: shown.to_owned(),
            message,
        };
        let m: Matrix = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        for (role, cells) in &m.roles {
            for (field, list) in [
                ("own_tenant", &cells.own_tenant),
                ("other_tenant", &cells.other_tenant),
            ] {
                if let Some(a) = list.iter().find(|a| !m.actions.contains(a)) {
                    return Err(bad(format!(
                        "roles.{role}.{field}: `{a}` is not in `actions`; add it there"
                    )));
                }
            }
        }
        Ok(m)
    }

    /// Reads a matrix file.
    ///
    /// # Errors
    /// When it cannot be read or is not a matrix.
    pub fn load(path: &Path) -> Result<Matrix, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServerError::Config {
            source_name: path.display().to_string(),
            message: format!("cannot be read: {e}"),
        })?;
        Matrix::parse(&text, &path.display().to_string())
    }

    /// The built-in policy's matrix.
    ///
    /// # Errors
    /// Never in a released build (a test parses it).
    pub fn builtin() -> Result<Matrix, ServerError> {
        Matrix::parse(BUILTIN, "builtin:matrix.toml")
    }

    /// Whether the matrix has a row for `action`.
    #[must_use]
    pub fn covers(&self, action: &str) -> bool {
        self.actions.iter().any(|a| a == action)
    }

    /// Number of cells: (roles + no role) × 2 tenants × actions.
    #[must_use]
    pub fn cells(&self) -> usize {
        (self.roles.len() + 1) * 2 * self.actions.len()
    }

    /// Evaluates every cell against `policy`; the cells it decides otherwise.
    #[must_use]
    pub fn check(&self, policy: &Policy) -> Vec<Flip> {
        let none = RoleCells {
            own_tenant: Vec::new(),
            other_tenant: Vec::new(),
        };
        let rows = self
            .roles
            .iter()
            .map(|(r, c)| (r.as_str(), c))
            .chain(std::iter::once((NO_ROLE, &none)));
        let mut flips = Vec::new();
        for (role, cells) in rows {
            let actor = Actor {
                id: format!("matrix:{role}"),
                roles: if role == NO_ROLE {
                    Vec::new()
                } else {
                    vec![role.to_owned()]
                },
                teams: Vec::new(),
                tenant: "tenant-a".to_owned(),
                scopes: vec!["*".to_owned()],
                via: "matrix".to_owned(),
            };
            for (tenant, resource_tenant, allowed) in [
                ("own", "tenant-a", &cells.own_tenant),
                ("other", "tenant-b", &cells.other_tenant),
            ] {
                for action in &self.actions {
                    let resource = Resource {
                        kind: kind_of(action),
                        id: Some("1".to_owned()),
                        service: Some("checkout".to_owned()),
                        environment: None,
                        tenant: resource_tenant.to_owned(),
                    };
                    let expected = allowed.contains(action);
                    if policy.allows(&actor, action, &resource) != expected {
                        flips.push(Flip {
                            role: role.to_owned(),
                            tenant,
                            action: action.clone(),
                            expected,
                        });
                    }
                }
            }
        }
        flips
    }
}

/// The resource kind an action is about (`runs.read` → `run`), from the endpoint and
/// field tables where they name it.
fn kind_of(action: &str) -> &'static str {
    crate::api::ENDPOINTS
        .iter()
        .map(|e| (e.action, e.kind))
        .chain(crate::graphql::FIELDS.iter().map(|f| (f.action, f.kind)))
        .find(|(a, _)| *a == action)
        .map_or("resource", |(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_policy_matches_its_matrix_cell_by_cell() {
        let m = Matrix::builtin().expect("the matrix parses");
        let policy = Policy::builtin().expect("the policy loads");
        let flips = m.check(&policy);
        assert!(
            flips.is_empty(),
            "policy/authz.rego and policy/matrix.toml disagree:\n{}",
            flips
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(m.cells() >= 60, "{}", m.cells());
    }

    #[test]
    fn every_action_in_use_has_a_row() {
        let m = Matrix::builtin().expect("matrix");
        for a in crate::api::ENDPOINTS
            .iter()
            .map(|e| e.action)
            .chain(crate::graphql::FIELDS.iter().map(|f| f.action))
        {
            assert!(m.covers(a), "{a} has no row in policy/matrix.toml");
        }
    }

    #[test]
    fn a_flipped_cell_is_reported_by_role_tenant_and_action() {
        let m = Matrix::builtin().expect("matrix");
        let src = crate::authz::BUILTIN.replace(
            "readers := {\"viewer\",",
            "readers := {\"auditor\", \"viewer\",",
        );
        assert_ne!(src, crate::authz::BUILTIN, "the edit applies");
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("authz.rego"), src).expect("write");
        let policy = Policy::load(dir.path()).expect("loads");
        let flips = m.check(&policy);
        assert!(!flips.is_empty());
        assert!(
            flips
                .iter()
                .all(|f| f.role == "auditor" && f.tenant == "own" && !f.expected)
        );
        assert_eq!(
            flips[0].to_string(),
            format!(
                "role auditor × own tenant × {}: the matrix says deny, the policy says allow",
                flips[0].action
            )
        );
    }

    #[test]
    fn a_matrix_naming_an_unlisted_action_is_refused_with_its_field() {
        let e = Matrix::parse(
            "actions = [\"runs.read\"]\n[roles.viewer]\nown_tenant = [\"runs.lst\"]\nother_tenant = []\n",
            "m.toml",
        )
        .expect_err("typo");
        assert_eq!(
            e.to_string(),
            "m.toml: roles.viewer.own_tenant: `runs.lst` is not in `actions`; add it there"
        );
    }
}
