//! The fixed gate order every pipeline follows.

use std::fmt;

/// A quality gate. Gates run in the order of [`Gate::ALL`]; a red gate cancels every job
/// of every later gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gate {
    Lint,
    Unit,
    Contract,
    E2eSmoke,
    Sca,
    Sast,
    Sbom,
    InfraPlan,
    Migration,
    Package,
    Publish,
    Deploy,
}

impl Gate {
    /// Every gate, in execution order.
    pub const ALL: [Gate; 12] = [
        Gate::Lint,
        Gate::Unit,
        Gate::Contract,
        Gate::E2eSmoke,
        Gate::Sca,
        Gate::Sast,
        Gate::Sbom,
        Gate::InfraPlan,
        Gate::Migration,
        Gate::Package,
        Gate::Publish,
        Gate::Deploy,
    ];

    /// The spelling used in `maestro.yaml` and in every output.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Gate::Lint => "lint",
            Gate::Unit => "unit",
            Gate::Contract => "contract",
            Gate::E2eSmoke => "e2e-smoke",
            Gate::Sca => "sca",
            Gate::Sast => "sast",
            Gate::Sbom => "sbom",
            Gate::InfraPlan => "infra-plan",
            Gate::Migration => "migration",
            Gate::Package => "package",
            Gate::Publish => "publish",
            Gate::Deploy => "deploy",
        }
    }

    /// Position in the gate order (0 = lint).
    #[must_use]
    pub fn index(self) -> usize {
        Gate::ALL
            .iter()
            .position(|g| *g == self)
            .unwrap_or(usize::MAX)
    }

    /// Parses the `maestro.yaml` spelling.
    #[must_use]
    pub fn parse(s: &str) -> Option<Gate> {
        Gate::ALL.into_iter().find(|g| g.as_str() == s)
    }

    /// Gates with side effects outside the repository. Their jobs start only after every
    /// job of every earlier gate has succeeded (no speculative start), and they are not
    /// cached unless a job opts in.
    #[must_use]
    pub const fn is_barrier(self) -> bool {
        matches!(self, Gate::Publish | Gate::Deploy)
    }
}

impl fmt::Display for Gate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_spelling_round_trip() {
        for (i, g) in Gate::ALL.iter().enumerate() {
            assert_eq!(g.index(), i);
            assert_eq!(Gate::parse(g.as_str()), Some(*g));
        }
        assert_eq!(Gate::parse("e2e_smoke"), None);
        assert!(Gate::Lint < Gate::Deploy);
    }
}
