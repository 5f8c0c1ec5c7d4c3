//! `go.sum`, with `go.mod` beside it for the module's own path and direct requirements.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use crate::inventory::{Component, Ecosystem, Inventory, Subject};
use crate::{SbomError, purl, read_text};

/// Reads `go.sum`. A module whose source is in the build has a line without the `/go.mod`
/// suffix; modules only consulted for their `go.mod` during version selection are not
/// built and are left out. The `h1:` hash (a hash over the module's file tree, not over
/// an archive) is kept as the property `maestro:go:h1`.
pub fn read(path: &Path) -> Result<Inventory, SbomError> {
    let text = read_text(path)?;
    let mut modules: BTreeMap<(String, String), String> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [module, version, hash] = fields[..] else {
            return Err(SbomError::parse(
                path,
                Some(i + 1),
                "expected `MODULE VERSION h1:HASH`; regenerate the file with `go mod tidy`",
            ));
        };
        if !version.starts_with('v') || !hash.contains(':') {
            return Err(SbomError::parse(
                path,
                Some(i + 1),
                format!("\"{line}\" is not `MODULE vVERSION[/go.mod] h1:HASH`"),
            ));
        }
        if version.ends_with("/go.mod") {
            continue;
        }
        modules.insert((module.to_owned(), version.to_owned()), hash.to_owned());
    }

    let mut inv = Inventory {
        sources: vec![path.to_owned()],
        ..Inventory::default()
    };
    for ((module, version), h1) in &modules {
        let mut c = Component::new(
            Ecosystem::Go,
            module,
            Some(version),
            purl::golang(module, Some(version)),
        );
        c.properties.insert("maestro:go:h1".into(), h1.clone());
        c.download = Some(format!(
            "https://proxy.golang.org/{}/@v/{version}.zip",
            escape(module)
        ));
        inv.components.push(c);
    }

    let dir = path.parent().unwrap_or(Path::new("."));
    let gomod = read_text(&dir.join("go.mod"))
        .ok()
        .map(|t| parse_go_mod(&t));
    inv.subject = match gomod {
        Some(m) if m.module.is_some() => {
            let name = m.module.unwrap_or_default();
            let direct: BTreeSet<String> = m
                .requires
                .iter()
                .filter(|(_, _, indirect)| !indirect)
                .filter(|(p, v, _)| modules.contains_key(&(p.clone(), v.clone())))
                .map(|(p, v, _)| purl::golang(p, Some(v)))
                .collect();
            Subject {
                purl: Some(purl::golang(&name, None)),
                name,
                version: None,
                depends_on: direct,
            }
        }
        _ => Subject {
            name: crate::cargo::dir_name(dir),
            depends_on: inv.components.iter().map(|c| c.purl.clone()).collect(),
            ..Subject::default()
        },
    };
    inv.finish();
    Ok(inv)
}

/// The module proxy's case encoding: `A` → `!a`.
fn escape(module: &str) -> String {
    let mut out = String::with_capacity(module.len());
    for c in module.chars() {
        if c.is_ascii_uppercase() {
            out.push('!');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[derive(Default)]
struct GoMod {
    module: Option<String>,
    /// (path, version, indirect)
    requires: Vec<(String, String, bool)>,
}

fn parse_go_mod(text: &str) -> GoMod {
    let mut m = GoMod::default();
    let mut in_require = false;
    for line in text.lines() {
        let indirect = line.contains("// indirect");
        let line = line.split("//").next().unwrap_or("").trim();
        if in_require {
            if line == ")" {
                in_require = false;
            } else if let [p, v, ..] = line.split_whitespace().collect::<Vec<_>>()[..] {
                m.requires.push((p.to_owned(), v.to_owned(), indirect));
            }
            continue;
        }
        if let Some(rest) = line.strip_prefix("module ") {
            m.module = Some(rest.trim().trim_matches('"').to_owned());
        } else if line == "require (" || line == "require(" {
            in_require = true;
        } else if let Some(rest) = line.strip_prefix("require ")
            && let [p, v, ..] = rest.split_whitespace().collect::<Vec<_>>()[..]
        {
            m.requires.push((p.to_owned(), v.to_owned(), indirect));
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_mod_requires() {
        let m = parse_go_mod(
            "module example.com/hello\n\ngo 1.22\n\nrequire github.com/a/b v1.0.0\nrequire (\n\tgithub.com/c/d v0.3.0 // indirect\n\tgolang.org/x/text v0.14.0\n)\n",
        );
        assert_eq!(m.module.as_deref(), Some("example.com/hello"));
        assert_eq!(m.requires.len(), 3);
        assert!(m.requires[1].2);
        assert!(!m.requires[2].2);
    }

    #[test]
    fn proxy_case_escape() {
        assert_eq!(escape("github.com/Azure/go"), "github.com/!azure/go");
    }
}
