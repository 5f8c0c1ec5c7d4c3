//! Secret scanning: what must be found, what allowlists must pass, redaction, config
//! errors and git history. Secrets are assembled at run time so that this file itself
//! holds none.

use std::path::Path;
use std::process::Command;

use maestro_secrets::git::scan_history;
use maestro_secrets::tree::{TreeOptions, scan_tree};
use maestro_secrets::{Config, Finding, Scanner};

/// A value that looks like a real credential of the given prefix and length.
fn token(prefix: &str, len: usize, alphabet: &[u8]) -> String {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    let mut s = String::from(prefix);
    while s.len() < prefix.len() + len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        s.push(char::from(alphabet[(x % alphabet.len() as u64) as usize]));
    }
    s
}

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const B32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const HEX: &[u8] = b"0123456789abcdef";

fn aws() -> String {
    token(&["AK", "IA"].concat(), 16, B32)
}
fn ghp() -> String {
    token(&["gh", "p_"].concat(), 36, ALNUM)
}

fn scan_dir(dir: &Path, config: Config) -> Vec<Finding> {
    let opts = TreeOptions {
        threads: 2,
        ..TreeOptions::default()
    };
    scan_tree(&Scanner::new(config), dir, &opts, &[])
        .expect("scan")
        .findings
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

#[test]
fn default_rules_find_real_looking_secrets_and_redact_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (a, g) = (aws(), ghp());
    let generic = token("", 32, HEX);
    let pem_body = token("", 64 * 4, ALNUM);
    write(
        dir.path(),
        "deploy/env.sh",
        &format!("export AWS_ACCESS_KEY_ID={a}\nexport GH={g}\n"),
    );
    write(
        dir.path(),
        "src/config.py",
        &format!("API_KEY = \"{generic}\"\n"),
    );
    write(
        dir.path(),
        "keys/id.pem",
        &format!(
            "-----BEGIN {} KEY-----\n{pem_body}\n-----END {} KEY-----\n",
            "PRIVATE", "PRIVATE"
        ),
    );
    let found = scan_dir(dir.path(), Config::default_rules());
    let ids: Vec<(&str, &str, usize)> = found
        .iter()
        .map(|f| (f.file.as_str(), f.rule_id.as_str(), f.line))
        .collect();
    assert_eq!(
        ids,
        [
            ("deploy/env.sh", "aws-access-token", 1),
            ("deploy/env.sh", "github-pat", 2),
            ("keys/id.pem", "private-key", 1),
            ("src/config.py", "generic-api-key", 1),
        ]
    );
    assert_eq!(found[0].column, 26);
    assert_eq!(found[2].end_line, 3);
    for f in &found {
        let shown = format!("{f:?}");
        for secret in [&a, &g, &generic, &pem_body] {
            assert!(
                !shown.contains(secret.as_str()),
                "a finding leaks its secret: {shown}"
            );
        }
        assert!(f.secret.contains("[REDACTED]"));
    }
    assert_eq!(found[0].secret, "AKIA…[REDACTED]");
    assert_eq!(found[0].fingerprint, "deploy/env.sh:aws-access-token:1");
}

#[test]
fn default_allowlists_pass_placeholders_identifiers_and_lockfiles() {
    let dir = tempfile::tempdir().expect("tempdir");
    let example = format!("{}IOSFODNN7EXAMPLE", ["AK", "IA"].concat());
    write(
        dir.path(),
        "src/lib.rs",
        &format!(
            "let k = \"{example}\";\nlet token = self.next_token();\npub token: D3DKMT_PRESENT_TOKEN,\npassword = \"${{DB_PASSWORD}}\"\napi_key = \"your_api_key_here_123\"\nsecret = fts5V1toV2Tokenize;\n"
        ),
    );
    write(
        dir.path(),
        "Cargo.lock",
        &format!("checksum = \"{}\"\n", token("", 64, HEX)),
    );
    write(
        dir.path(),
        "inline.env",
        &format!("TOKEN={} # gitleaks:allow\n", ghp()),
    );
    let found = scan_dir(dir.path(), Config::default_rules());
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn a_configured_allowlist_passes_what_it_names_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (kept, allowed) = (
        ghp(),
        token(&["gh", "p_"].concat(), 36, b"xyzXYZ0123456789"),
    );
    write(dir.path(), "a.txt", &format!("one {kept}\ntwo {allowed}\n"));
    write(dir.path(), "fixtures/b.txt", &format!("three {kept}\n"));
    let cfg = format!(
        "[extend]\nuseDefault = true\n\n[[rules]]\nid = \"github-pat\"\n[[rules.allowlists]]\nregexes = ['''^{}$''']\n\n[[allowlists]]\npaths = ['''^fixtures/''']\n",
        regex_escape(&allowed)
    );
    let config = Config::parse("x.toml", &cfg, Path::new(".")).expect("config");
    let found = scan_dir(dir.path(), config);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].file.as_str(), found[0].line), ("a.txt", 1));

    // AND needs every criterion; OR any.
    let and = "[[rules]]\nid = \"t\"\nregex = '''tok_[a-z0-9]{12}'''\n[[rules.allowlists]]\ncondition = \"AND\"\npaths = ['''a\\.txt''']\nstopwords = [\"zzz\"]\n";
    write(dir.path(), "a.txt", "tok_abcdef123456\ntok_zzzdef123456\n");
    let found = scan_dir(
        dir.path(),
        Config::parse("and.toml", and, Path::new(".")).expect("config"),
    );
    let lines: Vec<usize> = found
        .iter()
        .filter(|f| f.file == "a.txt")
        .map(|f| f.line)
        .collect();
    assert_eq!(lines, [1]);
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c.to_string()
            } else {
                format!("\\{c}")
            }
        })
        .collect()
}

#[test]
fn keywords_are_case_insensitive_and_entropy_is_a_floor() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = "[[rules]]\nid = \"k\"\nregex = '''(?i)mykey=([a-z0-9]{8,})'''\nkeywords = [\"MYKEY\"]\nentropy = 2.5\n";
    write(dir.path(), "x", "MyKey=a8b7c6d5e4\nmykey=aaaaaaaaaa\n");
    let found = scan_dir(
        dir.path(),
        Config::parse("k.toml", cfg, Path::new(".")).expect("cfg"),
    );
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(found[0].line, 1);
}

#[test]
fn extend_inherits_disables_and_overrides() {
    let cfg = "[extend]\nuseDefault = true\ndisabledRules = [\"jwt\"]\n\n[[rules]]\nid = \"gitlab-pat\"\nkeywords = [\"mytoken-\"]\nregex = '''mytoken-[a-z]{10}'''\n";
    let c = Config::parse("e.toml", cfg, Path::new(".")).expect("cfg");
    let d = Config::default_rules();
    assert_eq!(c.rules.len(), d.rules.len() - 1);
    assert!(!c.rules.iter().any(|r| r.id == "jwt"));
    let gl = c.rules.iter().find(|r| r.id == "gitlab-pat").expect("kept");
    assert_eq!(gl.keywords, ["mytoken-"]);
    assert_eq!(gl.description, "GitLab personal access token", "inherited");
}

#[test]
fn config_errors_name_the_file_the_line_and_the_rule() {
    for (text, expect) in [
        (
            "[[rules]]\nid = \"r\"\nregex = '''(unclosed'''\n",
            "bad.toml:3: rule r: the regular expression does not compile",
        ),
        (
            "[[rules]]\nid = \"r\"\n",
            "bad.toml:2: rule r: needs a regex, a path, or both",
        ),
        (
            "[[rules]]\nid = \"r\"\nregex = '''a(b)'''\nsecretGroup = 2\n",
            "bad.toml: rule r: secretGroup = 2 but the regex has 1 capture groups",
        ),
        (
            "[[rules]]\nid = \"r\"\nregex = '''a'''\n[[rules.allowlists]]\ncondition = \"XOR\"\n",
            "bad.toml: rule r allowlist: condition = \"XOR\"",
        ),
        ("[[rules]]\nid = 5\n", "bad.toml:2:"),
        (
            "[extend]\nuseDefault = true\npath = \"x.toml\"\n",
            "bad.toml: [extend]: useDefault and path",
        ),
    ] {
        let err = Config::parse("bad.toml", text, Path::new("."))
            .expect_err(text)
            .to_string();
        assert!(err.starts_with(expect), "{text}\n→ {err}");
    }
}

fn git(dir: &Path, args: &[&str]) {
    let ok = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Dev",
            "-c",
            "user.email=dev@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .status()
        .expect("git runs")
        .success();
    assert!(ok, "git {args:?}");
}

#[test]
fn history_finds_a_secret_that_was_removed_from_the_tree() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    write(d, "app/settings.py", "DEBUG = True\nNAME = 'svc'\n");
    git(d, &["add", "."]);
    git(d, &["commit", "-q", "-m", "init"]);
    let secret = ghp();
    write(
        d,
        "app/settings.py",
        &format!("DEBUG = True\nGITHUB = '{secret}'\nNAME = 'svc'\n"),
    );
    git(d, &["commit", "-q", "-am", "wire github"]);
    write(d, "app/settings.py", "DEBUG = True\nNAME = 'svc'\n");
    git(d, &["commit", "-q", "-am", "remove token"]);

    let scanner = Scanner::new(Config::default_rules());
    assert!(
        scan_tree(&scanner, d, &TreeOptions::default(), &[])
            .expect("tree")
            .findings
            .is_empty()
    );
    let (found, stats) = scan_history(&scanner, d, &[]).expect("history");
    assert_eq!(stats.commits, 3);
    assert_eq!(found.len(), 1, "{found:#?}");
    let f = &found[0];
    assert_eq!(
        (f.file.as_str(), f.line, f.rule_id.as_str()),
        ("app/settings.py", 2, "github-pat")
    );
    let c = f.commit.as_ref().expect("commit");
    assert_eq!(c.message, "wire github");
    assert_eq!(c.author, "Dev");
    assert_eq!(
        f.fingerprint,
        format!("{}:app/settings.py:github-pat:2", c.sha)
    );
    assert!(!format!("{f:?}").contains(&secret));

    // A fingerprint in the ignore list accepts exactly that finding.
    let (found, _) =
        scan_history(&scanner, d, std::slice::from_ref(&f.fingerprint)).expect("history");
    assert!(found.is_empty());
}

#[test]
fn history_of_a_non_repository_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let err = scan_history(&Scanner::new(Config::default_rules()), dir.path(), &[])
        .expect_err("not a repo");
    assert!(err.to_string().contains("git log failed"), "{err}");
}

#[test]
fn gitignored_files_are_skipped_unless_asked_and_hidden_files_are_scanned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    write(d, ".gitignore", "build/\n");
    write(d, "build/out.txt", &format!("{}\n", ghp()));
    write(d, ".env", &format!("GH={}\n", ghp()));
    let scanner = Scanner::new(Config::default_rules());
    let found = scan_tree(&scanner, d, &TreeOptions::default(), &[])
        .expect("scan")
        .findings;
    let files: Vec<&str> = found.iter().map(|f| f.file.as_str()).collect();
    assert_eq!(files, [".env"]);
    let all = TreeOptions {
        respect_gitignore: false,
        ..TreeOptions::default()
    };
    let found = scan_tree(&scanner, d, &all, &[]).expect("scan").findings;
    assert_eq!(found.len(), 2);
}
