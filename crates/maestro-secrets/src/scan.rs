//! Matching rules against one fragment of text (a file, or the added lines of one file in
//! one commit).

use aho_corasick::AhoCorasick;

use crate::config::{Config, Rule};
use crate::{Finding, redact};

/// Where a fragment came from.
#[derive(Debug, Clone, Default)]
pub struct Origin<'a> {
    pub path: &'a str,
    pub commit: Option<&'a crate::Commit>,
}

/// A compiled rule set with its keyword prefilter.
#[derive(Debug)]
pub struct Scanner {
    config: Config,
    keywords: Option<AhoCorasick>,
    /// For each keyword pattern, the rules that list it.
    keyword_rules: Vec<Vec<usize>>,
    /// Rules without keywords run on every fragment.
    always: Vec<usize>,
}

/// Shannon entropy in bits per character.
pub fn entropy(s: &[u8]) -> f64 {
    if s.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in s {
        counts[usize::from(b)] += 1;
    }
    let n = f64::from(u32::try_from(s.len()).unwrap_or(u32::MAX));
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

impl Scanner {
    pub fn new(config: Config) -> Scanner {
        let mut patterns: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<usize>> = Vec::new();
        let mut always = Vec::new();
        for (i, r) in config.rules.iter().enumerate() {
            if r.keywords.is_empty() {
                always.push(i);
            }
            for k in &r.keywords {
                match patterns.iter().position(|p| p == k) {
                    Some(j) => keyword_rules[j].push(i),
                    None => {
                        patterns.push(k.clone());
                        keyword_rules.push(vec![i]);
                    }
                }
            }
        }
        let keywords = (!patterns.is_empty())
            .then(|| {
                AhoCorasick::builder()
                    .ascii_case_insensitive(true)
                    .build(&patterns)
                    .ok()
            })
            .flatten();
        Scanner {
            config,
            keywords,
            keyword_rules,
            always,
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Whether a global allowlist skips this path entirely.
    pub fn skips_path(&self, path: &str) -> bool {
        self.config.allowlists.iter().any(|a| a.skips_path(path))
    }

    /// The rules whose keywords occur in `text` (or that have none), in rule order.
    fn candidates(&self, text: &[u8]) -> Vec<usize> {
        let mut on = vec![false; self.config.rules.len()];
        for &i in &self.always {
            on[i] = true;
        }
        if let Some(ac) = &self.keywords {
            let mut seen = vec![false; self.keyword_rules.len()];
            let mut left = self.keyword_rules.len();
            for m in ac.find_overlapping_iter(text) {
                let k = m.pattern().as_usize();
                if !seen[k] {
                    seen[k] = true;
                    for &r in &self.keyword_rules[k] {
                        on[r] = true;
                    }
                    left -= 1;
                    if left == 0 {
                        break;
                    }
                }
            }
        }
        on.iter()
            .enumerate()
            .filter(|(_, o)| **o)
            .map(|(i, _)| i)
            .collect()
    }

    /// Scans one fragment. `line_of` maps a byte offset to its line number (for git
    /// fragments, where the added lines are not contiguous in the file).
    pub fn scan(
        &self,
        text: &[u8],
        origin: &Origin<'_>,
        line_of: &dyn Fn(usize) -> usize,
    ) -> Vec<Finding> {
        let mut out = Vec::new();
        let mut spans: Vec<(usize, usize)> = Vec::new();
        let commit = origin.commit.map(|c| c.sha.as_str());
        if commit.is_some_and(|c| {
            self.config
                .allowlists
                .iter()
                .any(|a| a.commits.iter().any(|x| x == c) && !a.all)
        }) {
            return out;
        }
        for i in self.candidates(text) {
            let rule = &self.config.rules[i];
            if let Some(p) = &rule.path
                && !p.is_match(origin.path.as_bytes())
            {
                continue;
            }
            let Some(re) = &rule.regex else {
                // A path-only rule: the file itself is the finding.
                out.push(self.finding(rule, origin, 0, 0, b"", b"", 0.0));
                spans.push((0, 0));
                continue;
            };
            for caps in re.captures_iter(text) {
                let Some(whole) = caps.get(0) else { continue };
                let secret = match rule.secret_group {
                    Some(g) => caps.get(g),
                    None => (1..caps.len()).find_map(|g| caps.get(g)).or(Some(whole)),
                };
                let Some(secret) = secret else { continue };
                let s = secret.as_bytes();
                if s.is_empty() {
                    continue;
                }
                let e = entropy(s);
                if rule.entropy.is_some_and(|min| e < min) {
                    continue;
                }
                let line_start = text[..whole.start()]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |p| p + 1);
                let line_end = text[whole.end()..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(text.len(), |p| whole.end() + p);
                let line = &text[line_start..line_end];
                if contains(line, b"gitleaks:allow") {
                    continue;
                }
                let allowed = rule
                    .allowlists
                    .iter()
                    .chain(&self.config.allowlists)
                    .any(|a| a.allows(origin.path, commit, s, whole.as_bytes(), line));
                if allowed {
                    continue;
                }
                let column = whole.start() - line_start + 1;
                let mut f = self.finding(
                    rule,
                    origin,
                    line_of(whole.start()),
                    column,
                    s,
                    whole.as_bytes(),
                    e,
                );
                f.end_line = line_of(whole.end().saturating_sub(1).max(whole.start()));
                f.end_column = whole.end()
                    - text[..whole.end()]
                        .iter()
                        .rposition(|&b| b == b'\n')
                        .map_or(0, |p| p + 1);
                out.push(f);
                spans.push((secret.start(), secret.end()));
            }
        }
        // A generic rule that found the same secret as a specific one adds nothing.
        let generic = |f: &Finding| f.tags.iter().any(|t| t == "generic");
        let keep: Vec<bool> = (0..out.len())
            .map(|i| {
                !generic(&out[i])
                    || !(0..out.len()).any(|j| {
                        j != i
                            && !generic(&out[j])
                            && spans[j].0 < spans[i].1
                            && spans[i].0 < spans[j].1
                    })
            })
            .collect();
        let mut k = keep.into_iter();
        out.retain(|_| k.next().unwrap_or(true));
        out
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "one constructor for the two kinds of findings"
    )]
    fn finding(
        &self,
        rule: &Rule,
        origin: &Origin<'_>,
        line: usize,
        column: usize,
        secret: &[u8],
        matched: &[u8],
        entropy: f64,
    ) -> Finding {
        let secret_text = String::from_utf8_lossy(secret);
        let match_text = String::from_utf8_lossy(matched);
        let redacted = redact(&secret_text);
        let redacted_match = if secret_text.is_empty() {
            String::new()
        } else {
            // Every occurrence: a private key's match is the secret itself.
            let m = match_text.replace(secret_text.as_ref(), &redacted);
            if m.chars().count() > 200 {
                format!("{}…", m.chars().take(200).collect::<String>())
            } else {
                m
            }
        };
        let fingerprint = match origin.commit {
            Some(c) => format!("{}:{}:{}:{line}", c.sha, origin.path, rule.id),
            None => format!("{}:{}:{line}", origin.path, rule.id),
        };
        Finding {
            rule_id: rule.id.clone(),
            description: rule.description.clone(),
            file: origin.path.to_owned(),
            line,
            end_line: line,
            column,
            end_column: column,
            secret: redacted,
            matched: redacted_match,
            entropy,
            tags: rule.tags.clone(),
            commit: origin.commit.cloned(),
            fingerprint,
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
