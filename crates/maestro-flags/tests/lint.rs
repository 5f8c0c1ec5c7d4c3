//! The flag lint on a real git repository built here: a change to a risky path (by glob or
//! by annotation) without a registered flag fails, with one passes, other paths are free,
//! and an expired flag warns within its grace period and fails after it.

use std::path::Path;
use std::process::Command;

use maestro_flags::Registry;
use maestro_flags::lint::{Level, LintConfig, lint};

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=T", "-c", "user.email=t@example.com"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn write(dir: &Path, rel: &str, text: &str) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
    std::fs::write(p, text).expect("write");
}

const REGISTRY: &str = r#"{"flags": {
  "new-checkout": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                   "metadata": {"owner": "team-pay", "risk": "high", "expires": "2027-01-10"}},
  "old-banner": {"state": "ENABLED", "variants": {"on": true, "off": false}, "defaultVariant": "off",
                 "metadata": {"owner": "team-web", "expires": "2026-11-01"}}
}}"#;

fn day(s: &str) -> jiff::civil::Date {
    s.parse().expect("date")
}

#[test]
fn risky_changes_need_a_flag_and_expired_flags_warn_then_fail() {
    let dir = tempfile::tempdir().expect("tmp");
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    write(d, "app/payments/charge.py", "def charge():\n    return 1\n");
    write(d, "app/audit.py", "# maestro:risky\ndef log():\n    pass\n");
    write(d, "docs/readme.md", "hello\n");
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "base"]);
    git(d, &["branch", "base"]);
    let registry = Registry::parse(REGISTRY.as_bytes()).expect("registry");
    let config = LintConfig {
        risky: vec!["app/payments/**".into()],
        ..LintConfig::default()
    };

    // Unflagged changes to a risky glob and to an annotated file fail; docs are free.
    write(d, "app/payments/charge.py", "def charge():\n    return 2\n");
    write(
        d,
        "app/audit.py",
        "# maestro:risky\ndef log():\n    print('x')\n",
    );
    write(d, "docs/readme.md", "hello again\n");
    git(d, &["commit", "-q", "-am", "unflagged"]);
    let found = lint(d, "base", &registry, &config, day("2026-11-05")).expect("lint");
    let failing: Vec<(Option<&str>, Option<u32>)> = found
        .iter()
        .filter(|f| f.level == Level::Failure)
        .map(|f| (f.file.as_deref(), f.line))
        .collect();
    assert_eq!(
        failing,
        [
            (Some("app/audit.py"), Some(3)),
            (Some("app/payments/charge.py"), Some(2))
        ],
        "{found:#?}"
    );
    let warning = found
        .iter()
        .find(|f| f.level == Level::Warning)
        .expect("old-banner warns");
    assert_eq!(warning.flag.as_deref(), Some("old-banner"));
    assert!(
        warning.message.contains("expired 4 day(s) ago"),
        "{}",
        warning.message
    );

    // Behind a registered flag: passes. Past the grace period the expired flag fails.
    write(
        d,
        "app/payments/charge.py",
        "def charge():\n    if flags.on(\"new-checkout\"):\n        return 3\n    return 2\n",
    );
    write(
        d,
        "app/audit.py",
        "# maestro:risky\ndef log():\n    if flags.on('new-checkout'):\n        print('y')\n",
    );
    git(d, &["commit", "-q", "-am", "flagged"]);
    let found = lint(d, "HEAD~1", &registry, &config, day("2026-12-03")).expect("lint");
    assert!(found.iter().all(|f| f.file.is_none()), "{found:#?}");
    let expired = found
        .iter()
        .find(|f| f.flag.as_deref() == Some("old-banner"))
        .expect("expired");
    assert_eq!(expired.level, Level::Failure, "{expired:?}");

    // A key that only starts with a registered one is no reference.
    write(
        d,
        "app/payments/charge.py",
        "def charge():\n    return flags.on('new-checkout-v2')\n",
    );
    git(d, &["commit", "-q", "-am", "wrong key"]);
    let found = lint(d, "HEAD~1", &registry, &config, day("2026-11-01")).expect("lint");
    assert_eq!(
        found.iter().filter(|f| f.level == Level::Failure).count(),
        1,
        "{found:#?}"
    );

    let e = lint(d, "no-such-base", &registry, &config, day("2026-11-01")).expect_err("bad base");
    assert!(e.to_string().contains("no-such-base"), "{e}");
    let bad = LintConfig {
        risky: vec!["app/[".into()],
        ..LintConfig::default()
    };
    let e = lint(d, "base", &registry, &bad, day("2026-11-01")).expect_err("glob");
    assert!(e.to_string().contains("app/["), "{e}");
}
