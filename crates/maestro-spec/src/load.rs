//! Reading spec files: size limit, YAML parsing with a budget, and turning parser errors
//! into diagnostics that name the key and give a hint.

use std::io::Read;
use std::path::Path;

use serde::de::DeserializeOwned;

use crate::diag::{Code, Diagnostic, Pos, Source, closest};

/// Largest spec or module file Maestro reads.
pub const MAX_SPEC_BYTES: u64 = 4 * 1024 * 1024;

/// Reads a spec file, refusing files over [`MAX_SPEC_BYTES`] and non-UTF-8 text.
///
/// # Errors
/// A diagnostic naming the file when it cannot be read, is too large or is not UTF-8.
pub fn read_source(path: &Path) -> Result<Source, Box<Diagnostic>> {
    let io_err = |e: std::io::Error| {
        Box::new(
            Diagnostic::new(Code::Io, format!("cannot read {}: {e}", path.display())).hint(
                "check the path; `maestro run` looks for maestro.yaml in the current directory \
                 (or pass --file)",
            ),
        )
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    file.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(Box::new(
            Diagnostic::new(
                Code::FileTooLarge,
                format!(
                    "{} is larger than {} MiB",
                    path.display(),
                    MAX_SPEC_BYTES / 1024 / 1024
                ),
            )
            .hint("split the pipeline into modules (`uses:`)"),
        ));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        Box::new(Diagnostic::new(
            Code::YamlSyntax,
            format!(
                "{} is not UTF-8 text (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            ),
        ))
    })?;
    Ok(Source::new(path, text))
}

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_aliases = 1_000;
    budget.max_anchors = 1_000;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// Parses YAML into a file-format type.
///
/// # Errors
/// One diagnostic for the first syntax or shape problem, with its position and key.
pub fn parse<T: DeserializeOwned>(source: &Source) -> Result<T, Box<Diagnostic>> {
    serde_saphyr::from_str_with_options(&source.text, options())
        .map_err(|e| Box::new(diagnose(source, &e)))
}

fn strip_position_suffix(msg: &str) -> &str {
    match msg.rfind(" at line ") {
        Some(i) if msg[i..].contains(", column ") => &msg[..i],
        _ => msg,
    }
}

fn backticked(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let end = start + msg[start..].find('`')?;
    Some(&msg[start..end])
}

fn diagnose(source: &Source, err: &serde_saphyr::Error) -> Diagnostic {
    let raw = err.without_snippet().to_string();
    let msg = strip_position_suffix(&raw).trim().to_owned();
    let pos = err.location().as_ref().and_then(Pos::from_location);
    let path = pos.and_then(|p| key_path_at(&source.text, p.line, p.column));
    let mut d = if msg.starts_with("unknown field") {
        let field = backticked(&msg).unwrap_or("?").to_owned();
        let expected: Vec<&str> = msg
            .split_once("expected one of ")
            .or_else(|| msg.split_once("expected "))
            .map(|(_, list)| list.split(", ").map(|s| s.trim_matches('`')).collect())
            .unwrap_or_default();
        let key = match &path {
            Some(p) if !p.ends_with(&field) => format!("{p}.{field}"),
            Some(p) => p.clone(),
            None => field.clone(),
        };
        let hint = match closest(&field, expected.iter().copied()) {
            Some(c) => format!(
                "did you mean `{c}`? Allowed keys here: {}",
                expected.join(", ")
            ),
            None => format!("allowed keys here: {}", expected.join(", ")),
        };
        Diagnostic::new(Code::UnknownKey, format!("unknown key `{field}`"))
            .key(key)
            .hint(hint)
    } else if let Some(dup) = msg.strip_prefix("duplicate mapping key: ") {
        let dup = dup
            .split(", set DuplicateKeyPolicy")
            .next()
            .unwrap_or(dup)
            .to_owned();
        let parent = path
            .as_deref()
            .map(|p| {
                p.rsplit_once('.')
                    .map_or("", |(parent, _)| parent)
                    .to_owned()
            })
            .unwrap_or_default();
        if parent == "jobs" {
            Diagnostic::new(Code::DuplicateJob, format!("job `{dup}` is defined twice"))
                .key(format!("jobs.{dup}"))
                .hint("job names must be unique: rename or merge one of the two definitions")
        } else {
            Diagnostic::new(Code::DuplicateKey, format!("key `{dup}` appears twice"))
                .key(path.clone().unwrap_or(dup))
                .hint("remove one of the two entries")
        }
    } else if msg.starts_with("missing field") {
        let field = backticked(&msg).unwrap_or("?").to_owned();
        let key = match &path {
            Some(p) if !p.is_empty() && p != "version" && p != "jobs" => format!("{p}.{field}"),
            _ => field.clone(),
        };
        Diagnostic::new(Code::MissingKey, format!("missing required key `{field}`"))
            .key(key)
            .hint(missing_hint(&field))
    } else if is_type_error(&msg) {
        let key = path.clone().unwrap_or_default();
        let leaf = key.rsplit('.').next().unwrap_or("").to_owned();
        let mut d = Diagnostic::new(Code::WrongType, format!("wrong type: {msg}"));
        if !key.is_empty() {
            d = d.key(key);
        }
        d.hint(type_hint(&leaf))
    } else {
        let mut d = Diagnostic::new(Code::YamlSyntax, format!("invalid YAML: {msg}"))
            .hint("check indentation and quoting around this position");
        if let Some(k) = path {
            d = d.key(k);
        }
        d
    };
    d = d.at(source, pos);
    d
}

fn is_type_error(msg: &str) -> bool {
    msg.starts_with("invalid type")
        || msg.starts_with("invalid value")
        || msg.strip_prefix("invalid ").is_some_and(|rest| {
            let word = rest.split_whitespace().next().unwrap_or("");
            matches!(
                word,
                "u8" | "u16"
                    | "u32"
                    | "u64"
                    | "i8"
                    | "i16"
                    | "i32"
                    | "i64"
                    | "f32"
                    | "f64"
                    | "bool"
                    | "boolean"
            )
        })
        || msg.starts_with("expected ")
        || msg.starts_with("invalid length")
}

fn missing_hint(field: &str) -> String {
    match field {
        "version" => "add `version: 1` at the top of the file".to_owned(),
        "jobs" => "add a `jobs:` mapping with at least one job".to_owned(),
        "job" => "a module file needs a `job:` template".to_owned(),
        other => format!("add `{other}:`"),
    }
}

fn type_hint(key: &str) -> String {
    match key {
        "needs" | "inputs" | "outputs" | "reports" | "pass-env" | "toolchains" => {
            format!("`{key}` is a list, e.g. `{key}: [a, b]`")
        }
        "env" | "with" => {
            format!("`{key}` is a mapping of names to strings, e.g. `{key}: {{NAME: value}}`")
        }
        "jobs" => "`jobs` is a mapping from job names to jobs".to_owned(),
        "retries" => "`retries` is a whole number from 0 to 5".to_owned(),
        "shard" => "`shard` is a whole number from 1 to 64".to_owned(),
        "version" => "`version` is the number 1".to_owned(),
        "cache" => "`cache` is true or false".to_owned(),
        "run" | "uses" | "gate" | "timeout" | "dir" | "description" => {
            format!("`{key}` is a single string")
        }
        _ => "see the JSON Schema (`maestro schema`) for the expected shape".to_owned(),
    }
}

/// The dotted key path of the mapping key on, or governing, a position, found from the
/// block-style layout of the text (e.g. `jobs.unit.needs`).
#[must_use]
pub fn key_path_at(text: &str, line: u32, column: u32) -> Option<String> {
    let lines: Vec<&str> = text.lines().collect();
    let idx = usize::try_from(line).ok()?.checked_sub(1)?;
    let current = lines.get(idx)?;
    let (mut indent, mut path) = match line_key(current) {
        Some((ind, key)) => (ind, vec![key]),
        None => {
            // A bare value (list item or continuation): governed by the closest key above.
            let ind = current.len() - current.trim_start().len();
            let col = usize::try_from(column).unwrap_or(1).saturating_sub(1);
            (ind.min(col) + 1, Vec::new())
        }
    };
    for l in lines[..idx].iter().rev() {
        if indent == 0 {
            break;
        }
        if let Some((ind, key)) = line_key(l)
            && ind < indent
        {
            path.push(key);
            indent = ind;
        }
    }
    if path.is_empty() {
        return None;
    }
    path.reverse();
    Some(path.join("."))
}

/// `(indent, key)` when a line starts a block mapping entry (`key:` or `- key:`).
fn line_key(line: &str) -> Option<(usize, String)> {
    let trimmed = line.trim_start();
    if trimmed.starts_with('#') || trimmed.is_empty() {
        return None;
    }
    let indent = line.len() - trimmed.len();
    let (indent, rest) = match trimmed.strip_prefix("- ") {
        Some(r) => (indent, r.trim_start()),
        None => (indent, trimmed),
    };
    let (key, after) = if let Some(q) = rest.strip_prefix('"') {
        let end = q.find('"')?;
        (&q[..end], &q[end + 1..])
    } else if let Some(q) = rest.strip_prefix('\'') {
        let end = q.find('\'')?;
        (&q[..end], &q[end + 1..])
    } else {
        let colon = rest.find(':')?;
        (&rest[..colon], &rest[colon..])
    };
    let after = after.strip_prefix(':')?;
    if !(after.is_empty() || after.starts_with(' ') || after.starts_with('\t')) {
        return None;
    }
    if key.is_empty() || key.contains(['{', '[', ',', '#']) {
        return None;
    }
    Some((indent, key.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "version: 1\njobs:\n  unit:\n    needs: lint\n    env:\n      A: b\n  lint:\n    inputs:\n      - \"src/**\"\n";

    #[test]
    fn key_path_follows_indentation() {
        assert_eq!(key_path_at(DOC, 4, 12).as_deref(), Some("jobs.unit.needs"));
        assert_eq!(key_path_at(DOC, 6, 7).as_deref(), Some("jobs.unit.env.A"));
        assert_eq!(key_path_at(DOC, 9, 9).as_deref(), Some("jobs.lint.inputs"));
        assert_eq!(key_path_at(DOC, 1, 1).as_deref(), Some("version"));
        assert_eq!(key_path_at(DOC, 99, 1), None);
    }

    #[test]
    fn line_key_handles_quotes_and_urls() {
        assert_eq!(line_key("  \"a b\": 1"), Some((2, "a b".to_owned())));
        assert_eq!(line_key("  - run: x"), Some((2, "run".to_owned())));
        assert_eq!(line_key("  http://x"), None);
        assert_eq!(line_key("  # c: d"), None);
    }
}
