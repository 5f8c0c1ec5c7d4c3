//! `maestro secrets` end to end: exit codes, redaction in every output, config discovery.

mod common;

use common::Repo;

fn pat() -> String {
    // Assembled at run time: this file holds no token.
    let body: String = "Zq8Lm2Xw7Rt4Kp9Vb3Nc6Hd1Fg5Js0Ya8Ue2Wi"
        .chars()
        .take(36)
        .collect();
    format!("{}{}", ["gh", "p_"].concat(), body)
}

#[test]
fn a_leak_exits_1_and_is_redacted_in_text_and_json() {
    let repo = Repo::new();
    let secret = pat();
    repo.write("config/app.env", &format!("GITHUB_TOKEN={secret}\n"));
    let out = repo.run(&["secrets"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains("config/app.env:1:14 github-pat ghp_…[REDACTED]"),
        "{stdout}"
    );
    assert!(stderr.contains("secrets: 1 finding"), "{stderr}");
    let out = repo.run(&["secrets", "--json"]);
    let json = String::from_utf8_lossy(&out.stdout);
    for text in [&stdout, &stderr, &json] {
        assert!(!text.contains(&secret), "the secret leaked: {text}");
    }
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v[0]["RuleID"], "github-pat");
    assert_eq!(v[0]["StartLine"], 1);
    assert_eq!(v[0]["Fingerprint"], "config/app.env:github-pat:1");

    // Accepting it by fingerprint makes the scan clean.
    repo.write(".gitleaksignore", "config/app.env:github-pat:1\n");
    assert_eq!(repo.run(&["secrets"]).status.code(), Some(0));
}

#[test]
fn a_repository_gitleaks_toml_is_used_and_bad_config_exits_2() {
    let repo = Repo::new();
    repo.write("notes.txt", "internal-token: itk_0123456789abcdef\n");
    assert_eq!(repo.run(&["secrets"]).status.code(), Some(0));
    repo.write(
        ".gitleaks.toml",
        "[extend]\nuseDefault = true\n\n[[rules]]\nid = \"internal-token\"\ndescription = \"our token\"\nregex = '''itk_[0-9a-f]{16}'''\nkeywords = [\"itk_\"]\n",
    );
    let out = repo.run(&["secrets"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("notes.txt:1:17 internal-token itk_…[REDACTED]")
    );

    repo.write(
        ".gitleaks.toml",
        "[[rules]]\nid = \"x\"\nregex = '''(['''\n",
    );
    let out = repo.run(&["secrets"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(".gitleaks.toml:3: rule x: the regular expression does not compile"),
        "{stderr}"
    );
}

#[test]
fn git_mode_outside_a_repository_exits_3() {
    let repo = Repo::new();
    let out = repo.run(&["secrets", "--git"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
