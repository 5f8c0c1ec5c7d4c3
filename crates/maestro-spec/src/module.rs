//! Reusable, versioned job modules: `uses: name@version` resolves to
//! `<modules-dir>/<name>/<version>.yaml`. A version prefix (`@1`, `@1.2`) selects the
//! highest matching version present. `uses: maestro/NAME@version` names a module built
//! into Maestro ([`BUILTIN`]): the supply-chain gate jobs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use crate::diag::{Code, Diagnostic, Source, closest};
use crate::load;
use crate::raw::{At, RawModule};

/// Modules built into Maestro: (name after `maestro/`, version, text).
pub const BUILTIN: &[(&str, &str, &str)] = &[
    (
        "evidence",
        "1.0.0",
        include_str!("builtin/evidence-1.0.0.yaml"),
    ),
    (
        "infra-plan",
        "1.0.0",
        include_str!("builtin/infra-plan-1.0.0.yaml"),
    ),
    (
        "licenses",
        "1.0.0",
        include_str!("builtin/licenses-1.0.0.yaml"),
    ),
    (
        "migration",
        "1.0.0",
        include_str!("builtin/migration-1.0.0.yaml"),
    ),
    ("repro", "1.0.0", include_str!("builtin/repro-1.0.0.yaml")),
    ("sbom", "1.0.0", include_str!("builtin/sbom-1.0.0.yaml")),
    ("sca", "1.0.0", include_str!("builtin/sca-1.0.0.yaml")),
    (
        "secrets",
        "1.0.0",
        include_str!("builtin/secrets-1.0.0.yaml"),
    ),
];

/// A module file, parsed.
#[derive(Debug)]
pub struct LoadedModule {
    pub name: String,
    pub version: String,
    pub source: Source,
    pub raw: RawModule,
}

/// The modules directory, with the modules loaded so far.
#[derive(Debug)]
pub struct ModuleRepo {
    dir: PathBuf,
    /// The directory as written (relative to the pipeline), for messages.
    shown: String,
    loaded: HashMap<(String, String), Rc<LoadedModule>>,
}

fn version_key(v: &str) -> Vec<u64> {
    v.split(['.', '-', '+'])
        .map(|p| p.parse::<u64>().unwrap_or(0))
        .collect()
}

impl ModuleRepo {
    #[must_use]
    pub fn new(dir: PathBuf, shown: impl Into<String>) -> ModuleRepo {
        ModuleRepo {
            dir,
            shown: shown.into(),
            loaded: HashMap::new(),
        }
    }

    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn list(dir: &Path, want_dirs: bool) -> Vec<String> {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out: Vec<String> = rd
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir() == want_dirs))
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| {
                if want_dirs {
                    Some(n)
                } else {
                    n.strip_suffix(".yaml").map(str::to_owned)
                }
            })
            .collect();
        out.sort();
        out
    }

    /// Resolves `uses` (written in `caller`) to a module.
    ///
    /// # Errors
    /// `bad-uses`, `missing-module`, `missing-module-version`, or a diagnostic inside the
    /// module file.
    pub fn resolve(
        &mut self,
        uses: &At<String>,
        caller: &Source,
        key: &str,
    ) -> Result<Rc<LoadedModule>, Vec<Diagnostic>> {
        let at = |d: Diagnostic| vec![d.at(caller, uses.pos).key(key)];
        let Some((name, version)) = uses.value.split_once('@') else {
            return Err(at(Diagnostic::new(
                Code::BadUses,
                format!("`uses: {}` has no version", uses.value),
            )
            .hint("write `uses: <module>@<version>`, e.g. `uses: python-test@1`")));
        };
        if let Some(short) = name.strip_prefix("maestro/") {
            return self.resolve_builtin(short, version).map_err(|d| at(*d));
        }
        if name.is_empty()
            || version.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            || version.contains(['/', '\\'])
            || version.starts_with('.')
        {
            return Err(at(Diagnostic::new(
                Code::BadUses,
                format!("`uses: {}` is not of the form module@version", uses.value),
            )
            .hint("module names use letters, digits, `-` and `_`; versions look like `1`, `1.2` or `1.2.3`")));
        }
        let module_dir = self.dir.join(name);
        if !module_dir.is_dir() {
            let available = Self::list(&self.dir, true);
            let hint = match closest(name, available.iter().map(String::as_str)) {
                Some(c) => format!("did you mean `{c}`? Modules live in {}", self.shown),
                None if available.is_empty() => format!(
                    "no modules found in {}; create {}/{name}/<version>.yaml or set `modules-dir`",
                    self.shown, self.shown
                ),
                None => format!("available modules: {}", available.join(", ")),
            };
            return Err(at(Diagnostic::new(
                Code::MissingModule,
                format!("module `{name}` not found in {}", self.shown),
            )
            .hint(hint)));
        }
        let versions = Self::list(&module_dir, false);
        let chosen = if versions.iter().any(|v| v == version) {
            Some(version.to_owned())
        } else {
            let prefix = format!("{version}.");
            versions
                .iter()
                .filter(|v| v.starts_with(&prefix))
                .max_by_key(|v| version_key(v))
                .cloned()
        };
        let Some(chosen) = chosen else {
            return Err(at(Diagnostic::new(
                Code::MissingModuleVersion,
                format!("module `{name}` has no version `{version}`"),
            )
            .hint(if versions.is_empty() {
                format!("{}/{name} holds no <version>.yaml files", self.shown)
            } else {
                format!("available versions: {}", versions.join(", "))
            })));
        };
        let cache_key = (name.to_owned(), chosen.clone());
        if let Some(m) = self.loaded.get(&cache_key) {
            return Ok(Rc::clone(m));
        }
        let path = module_dir.join(format!("{chosen}.yaml"));
        let source = load::read_source(&path).map_err(|d| vec![*d])?;
        self.load(name, chosen, source)
    }

    /// `maestro/NAME@version`: a module shipped inside Maestro.
    fn resolve_builtin(
        &mut self,
        short: &str,
        version: &str,
    ) -> Result<Rc<LoadedModule>, Box<Diagnostic>> {
        let name = format!("maestro/{short}");
        let versions: Vec<&str> = BUILTIN
            .iter()
            .filter(|(n, _, _)| *n == short)
            .map(|(_, v, _)| *v)
            .collect();
        if versions.is_empty() {
            let names: Vec<String> = BUILTIN
                .iter()
                .map(|(n, _, _)| format!("maestro/{n}"))
                .collect();
            let hint = match closest(&name, names.iter().map(String::as_str)) {
                Some(c) => format!("did you mean `{c}`? Built-in modules: {}", names.join(", ")),
                None => format!("built-in modules: {}", names.join(", ")),
            };
            return Err(Box::new(
                Diagnostic::new(
                    Code::MissingModule,
                    format!("Maestro has no built-in module `{name}`"),
                )
                .hint(hint),
            ));
        }
        let prefix = format!("{version}.");
        let Some(chosen) = versions
            .iter()
            .filter(|v| **v == version || v.starts_with(&prefix))
            .max_by_key(|v| version_key(v))
            .map(|v| (*v).to_owned())
        else {
            return Err(Box::new(
                Diagnostic::new(
                    Code::MissingModuleVersion,
                    format!("built-in module `{name}` has no version `{version}`"),
                )
                .hint(format!("available versions: {}", versions.join(", "))),
            ));
        };
        if let Some(m) = self.loaded.get(&(name.clone(), chosen.clone())) {
            return Ok(Rc::clone(m));
        }
        let text = BUILTIN
            .iter()
            .find(|(n, v, _)| *n == short && *v == chosen)
            .map_or("", |(_, _, t)| *t);
        let source = Source::new(format!("<maestro>/{name}/{chosen}.yaml"), text);
        self.load(&name, chosen, source)
            .map_err(|mut ds| Box::new(ds.remove(0)))
    }

    fn load(
        &mut self,
        name: &str,
        chosen: String,
        source: Source,
    ) -> Result<Rc<LoadedModule>, Vec<Diagnostic>> {
        let cache_key = (name.to_owned(), chosen.clone());
        let raw: RawModule = load::parse(&source).map_err(|d| vec![*d])?;
        if let Some(u) = &raw.job.value.uses {
            return Err(vec![
                Diagnostic::new(Code::BadUses, "a module's job cannot itself use a module")
                    .at(&source, u.pos)
                    .key("job.uses")
                    .hint("inline the other module's job here"),
            ]);
        }
        let loaded = Rc::new(LoadedModule {
            name: name.to_owned(),
            version: chosen,
            source,
            raw,
        });
        self.loaded.insert(cache_key, Rc::clone(&loaded));
        Ok(loaded)
    }
}

#[cfg(test)]
mod tests {
    use super::{BUILTIN, ModuleRepo, version_key};
    use crate::diag::Source;
    use crate::raw::At;

    #[test]
    fn every_builtin_module_parses() {
        let mut repo = ModuleRepo::new("/nonexistent".into(), "ci/modules");
        let caller = Source::new("maestro.yaml", "");
        for (name, _, _) in BUILTIN {
            let uses = At {
                value: format!("maestro/{name}@1"),
                pos: None,
            };
            let m = repo
                .resolve(&uses, &caller, "uses")
                .unwrap_or_else(|d| panic!("maestro/{name}: {d:?}"));
            assert_eq!(m.version, "1.0.0");
            assert!(m.raw.job.value.gate.is_some(), "{name} has a gate");
        }
        let uses = At {
            value: "maestro/sbomb@1".to_owned(),
            pos: None,
        };
        let err = repo.resolve(&uses, &caller, "uses").expect_err("unknown");
        assert!(format!("{err:?}").contains("maestro/sbom"), "{err:?}");
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(version_key("1.10.0") > version_key("1.9.3"));
        assert!(version_key("2") > version_key("1.99"));
    }
}
