//! gitleaks' configuration format (v8): rules, per-rule and global allowlists, `extend`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::bytes::Regex;
use serde::Deserialize;

use crate::SecretsError;

/// The rules that ship with Maestro (gitleaks format).
pub const DEFAULT_RULES: &str = include_str!("default.toml");

const MAX_CONFIG_BYTES: u64 = 4 << 20;
const MAX_EXTEND_DEPTH: usize = 2;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawConfig {
    #[serde(default)]
    #[expect(dead_code, reason = "part of the format, shown by nobody")]
    title: Option<String>,
    #[serde(default)]
    extend: Option<RawExtend>,
    #[serde(default)]
    rules: Vec<RawRule>,
    /// Before gitleaks 8.25: one global allowlist.
    allowlist: Option<RawAllowlist>,
    #[serde(default)]
    allowlists: Vec<RawAllowlist>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawExtend {
    #[serde(default)]
    use_default: bool,
    path: Option<String>,
    #[serde(default)]
    disabled_rules: Vec<String>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    id: String,
    description: Option<String>,
    regex: Option<String>,
    secret_group: Option<usize>,
    entropy: Option<f64>,
    path: Option<String>,
    keywords: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    /// Before gitleaks 8.21: one allowlist per rule.
    allowlist: Option<RawAllowlist>,
    #[serde(default)]
    allowlists: Vec<RawAllowlist>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawAllowlist {
    description: Option<String>,
    condition: Option<String>,
    regex_target: Option<String>,
    #[serde(default)]
    regexes: Vec<String>,
    #[serde(default)]
    paths: Vec<String>,
    #[serde(default)]
    commits: Vec<String>,
    #[serde(default)]
    stopwords: Vec<String>,
    #[serde(default)]
    target_rules: Vec<String>,
}

/// What an allowlist's `regexes` are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Secret,
    Match,
    Line,
}

#[derive(Debug, Clone)]
pub struct Allowlist {
    pub description: String,
    /// `condition = "AND"`: every criterion given must match; default OR.
    pub all: bool,
    pub target: Target,
    pub regexes: Vec<Regex>,
    pub paths: Vec<Regex>,
    pub commits: Vec<String>,
    /// Lowercased.
    pub stopwords: Vec<String>,
    /// Empty: every rule (a global allowlist) or the rule it belongs to.
    pub target_rules: Vec<String>,
}

impl Allowlist {
    /// Whether the allowlist accepts a finding. `commit` is `None` outside git history.
    pub fn allows(
        &self,
        path: &str,
        commit: Option<&str>,
        secret: &[u8],
        matched: &[u8],
        line: &[u8],
    ) -> bool {
        let target = match self.target {
            Target::Secret => secret,
            Target::Match => matched,
            Target::Line => line,
        };
        let mut checks: Vec<bool> = Vec::with_capacity(4);
        if !self.commits.is_empty() {
            checks.push(commit.is_some_and(|c| self.commits.iter().any(|x| x == c)));
        }
        if !self.paths.is_empty() {
            checks.push(self.paths.iter().any(|r| r.is_match(path.as_bytes())));
        }
        if !self.regexes.is_empty() {
            checks.push(self.regexes.iter().any(|r| r.is_match(target)));
        }
        if !self.stopwords.is_empty() {
            let lower = secret.to_ascii_lowercase();
            checks.push(
                self.stopwords.iter().any(|w| {
                    !w.is_empty() && lower.windows(w.len()).any(|win| win == w.as_bytes())
                }),
            );
        }
        if checks.is_empty() {
            return false;
        }
        if self.all {
            checks.iter().all(|c| *c)
        } else {
            checks.iter().any(|c| *c)
        }
    }

    /// A path-only allowlist skips whole files before they are read.
    pub fn skips_path(&self, path: &str) -> bool {
        !self.paths.is_empty()
            && self.regexes.is_empty()
            && self.stopwords.is_empty()
            && (self.commits.is_empty() || !self.all)
            && self.paths.iter().any(|r| r.is_match(path.as_bytes()))
    }
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    pub regex: Option<Regex>,
    pub secret_group: Option<usize>,
    pub entropy: Option<f64>,
    pub path: Option<Regex>,
    /// Lowercased.
    pub keywords: Vec<String>,
    pub tags: Vec<String>,
    pub allowlists: Vec<Allowlist>,
}

/// A compiled configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub rules: Vec<Rule>,
    pub allowlists: Vec<Allowlist>,
}

fn compile_regex(src: &str, what: &str, cfg: &str, text: &str) -> Result<Regex, SecretsError> {
    Regex::new(src).map_err(|e| SecretsError::Config {
        file: cfg.to_owned(),
        line: text
            .find(src)
            .map(|at| text[..at].matches('\n').count() + 1),
        message: format!(
            "{what}: the regular expression does not compile: {}",
            first_line(&e.to_string())
        ),
    })
}

fn first_line(s: &str) -> String {
    s.lines().last().unwrap_or(s).trim().to_owned()
}

fn compile_allowlist(
    a: &RawAllowlist,
    what: &str,
    cfg: &str,
    text: &str,
) -> Result<Allowlist, SecretsError> {
    let err = |message: String| SecretsError::Config {
        file: cfg.to_owned(),
        line: None,
        message,
    };
    let all = match a
        .condition
        .as_deref()
        .map(str::to_ascii_uppercase)
        .as_deref()
    {
        None | Some("OR") => false,
        Some("AND") => true,
        Some(other) => {
            return Err(err(format!(
                "{what}: condition = \"{other}\": use OR or AND"
            )));
        }
    };
    let target = match a.regex_target.as_deref() {
        None | Some("secret") => Target::Secret,
        Some("match") => Target::Match,
        Some("line") => Target::Line,
        Some(other) => {
            return Err(err(format!(
                "{what}: regexTarget = \"{other}\": use secret, match or line"
            )));
        }
    };
    Ok(Allowlist {
        description: a.description.clone().unwrap_or_default(),
        all,
        target,
        regexes: a
            .regexes
            .iter()
            .map(|r| compile_regex(r, &format!("{what} regexes"), cfg, text))
            .collect::<Result<_, _>>()?,
        paths: a
            .paths
            .iter()
            .map(|r| compile_regex(r, &format!("{what} paths"), cfg, text))
            .collect::<Result<_, _>>()?,
        commits: a.commits.clone(),
        stopwords: a.stopwords.iter().map(|s| s.to_ascii_lowercase()).collect(),
        target_rules: a.target_rules.clone(),
    })
}

fn parse_raw(cfg: &str, text: &str) -> Result<RawConfig, SecretsError> {
    toml::from_str(text).map_err(|e| SecretsError::Config {
        file: cfg.to_owned(),
        line: e
            .span()
            .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message: e.message().trim().to_owned(),
    })
}

/// Rules by id with extension applied: a rule with the same id as a base rule inherits
/// every attribute it does not set, and its allowlists are appended.
fn merge(base: Vec<RawRule>, overlay: Vec<RawRule>) -> Vec<RawRule> {
    let mut by_id: BTreeMap<String, usize> = BTreeMap::new();
    let mut out: Vec<RawRule> = Vec::new();
    for r in base.into_iter().chain(overlay) {
        match by_id.get(&r.id) {
            Some(&i) => {
                let b = &mut out[i];
                b.description = r.description.or(b.description.take());
                b.regex = r.regex.or(b.regex.take());
                b.secret_group = r.secret_group.or(b.secret_group);
                b.entropy = r.entropy.or(b.entropy);
                b.path = r.path.or(b.path.take());
                b.keywords = r.keywords.or(b.keywords.take());
                b.tags = r.tags.or(b.tags.take());
                if let Some(a) = r.allowlist {
                    b.allowlists.push(a);
                }
                b.allowlists.extend(r.allowlists);
            }
            None => {
                by_id.insert(r.id.clone(), out.len());
                out.push(r);
            }
        }
    }
    out
}

struct Loaded {
    rules: Vec<RawRule>,
    allowlists: Vec<(RawAllowlist, String, String)>,
}

fn load(cfg: &str, text: &str, depth: usize, base_dir: &Path) -> Result<Loaded, SecretsError> {
    let raw = parse_raw(cfg, text)?;
    let mut loaded = Loaded {
        rules: Vec::new(),
        allowlists: Vec::new(),
    };
    if let Some(ext) = &raw.extend {
        if ext.use_default && ext.path.is_some() {
            return Err(SecretsError::Config {
                file: cfg.to_owned(),
                line: None,
                message: "[extend]: useDefault and path cannot be used together; choose one".into(),
            });
        }
        if depth >= MAX_EXTEND_DEPTH {
            return Err(SecretsError::Config {
                file: cfg.to_owned(),
                line: None,
                message: format!("[extend] chains deeper than {MAX_EXTEND_DEPTH} files"),
            });
        }
        let base = if ext.use_default {
            Some(load("<default rules>", DEFAULT_RULES, depth + 1, base_dir)?)
        } else if let Some(p) = &ext.path {
            let path = base_dir.join(p);
            let t = read_limited(&path)?;
            Some(load(&path.display().to_string(), &t, depth + 1, base_dir)?)
        } else {
            None
        };
        if let Some(mut b) = base {
            b.rules.retain(|r| !ext.disabled_rules.contains(&r.id));
            loaded.rules = b.rules;
            loaded.allowlists = b.allowlists;
        }
    }
    loaded.rules = merge(std::mem::take(&mut loaded.rules), raw.rules);
    for a in raw.allowlist.into_iter().chain(raw.allowlists) {
        loaded.allowlists.push((a, cfg.to_owned(), text.to_owned()));
    }
    Ok(loaded)
}

pub(crate) fn read_limited(path: &Path) -> Result<String, SecretsError> {
    use std::io::Read as _;
    let io = |source| SecretsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut s = String::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_CONFIG_BYTES)
        .read_to_string(&mut s)
        .map_err(io)?;
    Ok(s)
}

impl Config {
    /// Maestro's default rules.
    pub fn default_rules() -> Config {
        Config::parse("<default rules>", DEFAULT_RULES, Path::new("."))
            .expect("the embedded default rules compile (a unit test checks it)")
    }

    /// Reads a gitleaks configuration file. `[extend] path` is relative to `base_dir`
    /// (where the scan was started, as gitleaks does).
    pub fn read(path: &Path, base_dir: &Path) -> Result<Config, SecretsError> {
        let text = read_limited(path)?;
        Config::parse(&path.display().to_string(), &text, base_dir)
    }

    pub fn parse(cfg: &str, text: &str, base_dir: &Path) -> Result<Config, SecretsError> {
        let loaded = load(cfg, text, 0, base_dir)?;
        let mut rules = Vec::with_capacity(loaded.rules.len());
        for r in &loaded.rules {
            let what = format!("rule {}", r.id);
            if r.regex.is_none() && r.path.is_none() {
                return Err(SecretsError::Config {
                    file: cfg.to_owned(),
                    line: text
                        .find(&format!("\"{}\"", r.id))
                        .map(|at| text[..at].matches('\n').count() + 1),
                    message: format!("{what}: needs a regex, a path, or both"),
                });
            }
            let regex = r
                .regex
                .as_deref()
                .map(|re| compile_regex(re, &what, cfg, text))
                .transpose()?;
            if let (Some(g), Some(re)) = (r.secret_group, &regex)
                && g >= re.captures_len()
            {
                return Err(SecretsError::Config {
                    file: cfg.to_owned(),
                    line: None,
                    message: format!(
                        "{what}: secretGroup = {g} but the regex has {} capture groups",
                        re.captures_len() - 1
                    ),
                });
            }
            let mut allowlists = Vec::new();
            for a in &r.allowlists {
                allowlists.push(compile_allowlist(
                    a,
                    &format!("{what} allowlist"),
                    cfg,
                    text,
                )?);
            }
            if let Some(a) = &r.allowlist {
                allowlists.push(compile_allowlist(
                    a,
                    &format!("{what} allowlist"),
                    cfg,
                    text,
                )?);
            }
            rules.push(Rule {
                id: r.id.clone(),
                description: r.description.clone().unwrap_or_default(),
                regex,
                secret_group: r.secret_group,
                entropy: r.entropy,
                path: r
                    .path
                    .as_deref()
                    .map(|p| compile_regex(p, &format!("{what} path"), cfg, text))
                    .transpose()?,
                keywords: r
                    .keywords
                    .iter()
                    .flatten()
                    .map(|k| k.to_ascii_lowercase())
                    .filter(|k| !k.is_empty())
                    .collect(),
                tags: r.tags.clone().unwrap_or_default(),
                allowlists,
            });
        }
        let mut global = Vec::new();
        for (a, file, t) in &loaded.allowlists {
            let al = compile_allowlist(a, "allowlist", file, t)?;
            if al.target_rules.is_empty() {
                global.push(al);
            } else {
                for r in rules.iter_mut().filter(|r| al.target_rules.contains(&r.id)) {
                    r.allowlists.push(al.clone());
                }
            }
        }
        Ok(Config {
            rules,
            allowlists: global,
        })
    }

    /// The configuration for a scan of `target`: `explicit`, else `$GITLEAKS_CONFIG`,
    /// else `$GITLEAKS_CONFIG_TOML`, else `.gitleaks.toml` in the target, else the defaults.
    pub fn resolve(
        explicit: Option<&Path>,
        target: &Path,
    ) -> Result<(Config, String), SecretsError> {
        let cwd = PathBuf::from(".");
        if let Some(p) = explicit {
            return Ok((Config::read(p, &cwd)?, p.display().to_string()));
        }
        if let Some(p) = std::env::var_os("GITLEAKS_CONFIG") {
            let p = PathBuf::from(p);
            return Ok((Config::read(&p, &cwd)?, p.display().to_string()));
        }
        if let Ok(t) = std::env::var("GITLEAKS_CONFIG_TOML") {
            return Ok((
                Config::parse("$GITLEAKS_CONFIG_TOML", &t, &cwd)?,
                "$GITLEAKS_CONFIG_TOML".into(),
            ));
        }
        let local = target.join(".gitleaks.toml");
        if local.is_file() {
            return Ok((Config::read(&local, &cwd)?, local.display().to_string()));
        }
        Ok((Config::default_rules(), "default rules".into()))
    }
}
