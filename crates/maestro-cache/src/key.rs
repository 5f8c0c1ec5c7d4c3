//! Cache keys. A key is the sha256 of the canonical JSON of a job's [`Ingredients`]: the
//! command, working directory, explicit environment, input file contents, declared
//! toolchains, declared outputs and the digests of upstream outputs. Keeping the
//! ingredients (not just the key) lets Maestro say which one changed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bumped whenever the key recipe changes, so old entries stop matching.
pub const KEY_VERSION: u32 = 1;

/// Everything a job's result depends on. Environment values are stored as digests so
/// that secrets never land in the store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ingredients {
    pub version: u32,
    pub command: String,
    pub dir: String,
    /// Variable name → sha256 of its value.
    pub env: BTreeMap<String, String>,
    /// Input path → sha256 of its content.
    pub inputs: BTreeMap<String, String>,
    pub toolchains: BTreeMap<String, String>,
    /// Declared outputs and reports (a job that produces more is a different job).
    pub outputs: Vec<String>,
    /// Upstream job name → digest of its outputs.
    pub upstream: BTreeMap<String, String>,
}

/// One difference between two sets of ingredients.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Change {
    KeyVersion,
    Command,
    Dir,
    EnvAdded {
        name: String,
    },
    EnvRemoved {
        name: String,
    },
    EnvChanged {
        name: String,
    },
    FileAdded {
        path: String,
    },
    FileRemoved {
        path: String,
    },
    FileChanged {
        path: String,
    },
    ToolchainChanged {
        name: String,
        before: Option<String>,
        after: Option<String>,
    },
    OutputsChanged,
    UpstreamAdded {
        job: String,
    },
    UpstreamRemoved {
        job: String,
    },
    UpstreamChanged {
        job: String,
    },
}

impl std::fmt::Display for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Change::KeyVersion => write!(f, "the cache key recipe changed (new Maestro version)"),
            Change::Command => write!(f, "command changed"),
            Change::Dir => write!(f, "working directory changed"),
            Change::EnvAdded { name } => write!(f, "env {name} added"),
            Change::EnvRemoved { name } => write!(f, "env {name} removed"),
            Change::EnvChanged { name } => write!(f, "env {name} changed"),
            Change::FileAdded { path } => write!(f, "file {path} added"),
            Change::FileRemoved { path } => write!(f, "file {path} removed"),
            Change::FileChanged { path } => write!(f, "file {path} changed"),
            Change::ToolchainChanged {
                name,
                before,
                after,
            } => write!(
                f,
                "toolchain {name} changed ({} → {})",
                before.as_deref().unwrap_or("none"),
                after.as_deref().unwrap_or("none")
            ),
            Change::OutputsChanged => write!(f, "declared outputs changed"),
            Change::UpstreamAdded { job } => write!(f, "upstream {job} added"),
            Change::UpstreamRemoved { job } => write!(f, "upstream {job} removed"),
            Change::UpstreamChanged { job } => {
                write!(f, "upstream {job} produced different outputs")
            }
        }
    }
}

impl Ingredients {
    /// The cache key: sha256 of the canonical JSON (sorted maps, fixed field order).
    #[must_use]
    pub fn key(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        crate::sha256_hex(&json)
    }

    /// What changed from `before` to `self`, in a stable order.
    #[must_use]
    pub fn diff(&self, before: &Ingredients) -> Vec<Change> {
        let mut out = Vec::new();
        if self.version != before.version {
            out.push(Change::KeyVersion);
        }
        if self.command != before.command {
            out.push(Change::Command);
        }
        if self.dir != before.dir {
            out.push(Change::Dir);
        }
        map_diff(
            &before.inputs,
            &self.inputs,
            &mut out,
            |p| Change::FileAdded { path: p },
            |p| Change::FileRemoved { path: p },
            |p| Change::FileChanged { path: p },
        );
        map_diff(
            &before.env,
            &self.env,
            &mut out,
            |n| Change::EnvAdded { name: n },
            |n| Change::EnvRemoved { name: n },
            |n| Change::EnvChanged { name: n },
        );
        let names: std::collections::BTreeSet<&String> = before
            .toolchains
            .keys()
            .chain(self.toolchains.keys())
            .collect();
        for n in names {
            let (b, a) = (before.toolchains.get(n), self.toolchains.get(n));
            if b != a {
                out.push(Change::ToolchainChanged {
                    name: n.clone(),
                    before: b.cloned(),
                    after: a.cloned(),
                });
            }
        }
        if self.outputs != before.outputs {
            out.push(Change::OutputsChanged);
        }
        map_diff(
            &before.upstream,
            &self.upstream,
            &mut out,
            |j| Change::UpstreamAdded { job: j },
            |j| Change::UpstreamRemoved { job: j },
            |j| Change::UpstreamChanged { job: j },
        );
        out
    }
}

fn map_diff(
    before: &BTreeMap<String, String>,
    after: &BTreeMap<String, String>,
    out: &mut Vec<Change>,
    added: impl Fn(String) -> Change,
    removed: impl Fn(String) -> Change,
    changed: impl Fn(String) -> Change,
) {
    for (k, v) in after {
        match before.get(k) {
            None => out.push(added(k.clone())),
            Some(old) if old != v => out.push(changed(k.clone())),
            Some(_) => {}
        }
    }
    for k in before.keys() {
        if !after.contains_key(k) {
            out.push(removed(k.clone()));
        }
    }
}

/// Digest of a set of outputs: what downstream keys see of this job.
#[must_use]
pub fn outputs_digest(outputs: &[(String, String)]) -> String {
    let mut text = String::new();
    for (path, digest) in outputs {
        text.push_str(path);
        text.push('\0');
        text.push_str(digest);
        text.push('\n');
    }
    crate::sha256_hex(text.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Ingredients {
        Ingredients {
            version: KEY_VERSION,
            command: "make test".into(),
            dir: String::new(),
            env: [("A".to_owned(), "x".to_owned())].into(),
            inputs: [("src/a.py".to_owned(), "d1".to_owned())].into(),
            toolchains: [("python".to_owned(), "3.11".to_owned())].into(),
            outputs: vec!["out".into()],
            upstream: [("build".to_owned(), "u1".to_owned())].into(),
        }
    }

    /// Changing any one ingredient changes the key, and the diff names exactly it.
    #[test]
    fn every_ingredient_changes_the_key_and_is_explained() {
        let b = base();
        type Change = Box<dyn Fn(&mut Ingredients)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|i| i.command = "make check".into()),
                "command changed",
            ),
            (
                Box::new(|i| i.dir = "svc".into()),
                "working directory changed",
            ),
            (
                Box::new(|i| {
                    i.env.insert("A".into(), "y".into());
                }),
                "env A changed",
            ),
            (
                Box::new(|i| {
                    i.env.insert("B".into(), "y".into());
                }),
                "env B added",
            ),
            (
                Box::new(|i| {
                    i.inputs.insert("src/a.py".into(), "d2".into());
                }),
                "file src/a.py changed",
            ),
            (
                Box::new(|i| {
                    i.inputs.insert("src/b.py".into(), "d2".into());
                }),
                "file src/b.py added",
            ),
            (
                Box::new(|i| {
                    i.inputs.clear();
                }),
                "file src/a.py removed",
            ),
            (
                Box::new(|i| {
                    i.toolchains.insert("python".into(), "3.12".into());
                }),
                "toolchain python changed (3.11 → 3.12)",
            ),
            (
                Box::new(|i| i.outputs.push("more".into())),
                "declared outputs changed",
            ),
            (
                Box::new(|i| {
                    i.upstream.insert("build".into(), "u2".into());
                }),
                "upstream build produced different outputs",
            ),
            (
                Box::new(|i| i.version += 1),
                "the cache key recipe changed (new Maestro version)",
            ),
        ];
        for (change, expected) in cases {
            let mut a = base();
            change(&mut a);
            assert_ne!(a.key(), b.key(), "{expected}: key must change");
            let diff: Vec<String> = a.diff(&b).iter().map(ToString::to_string).collect();
            assert_eq!(diff, vec![expected.to_owned()]);
        }
        assert_eq!(base().key(), b.key(), "the key is deterministic");
        assert!(base().diff(&b).is_empty());
    }
}
