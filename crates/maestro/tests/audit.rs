//! `maestro audit` end to end: the demo (a changed byte is found), refusal without a
//! reason, offline verification of an export, crashes between write and acknowledgement,
//! concurrent appending processes, key rotation, and kept checkpoints against a fork.

mod common;

use std::process::Stdio;

use common::{Repo, text};

fn append(repo: &Repo, action: &str, target: &str, reason: Option<&str>) -> std::process::Output {
    let mut args = vec!["audit", "append", "--action", action, "--target", target];
    if let Some(r) = reason {
        args.extend(["--reason", r]);
    }
    repo.run(&args)
}

fn ok(repo: &Repo, args: &[&str]) -> String {
    let out = repo.run(args);
    assert!(out.status.success(), "maestro {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).expect("utf8")
}

fn store(repo: &Repo) -> rusqlite::Connection {
    rusqlite::Connection::open(repo.path().join(".maestro/store.db")).expect("store")
}

fn filled(n: usize) -> Repo {
    let repo = Repo::new();
    for i in 0..n {
        let out = append(
            &repo,
            if i % 2 == 0 { "deploy" } else { "note" },
            &format!("service/checkout@stage#{i}"),
            Some(&format!("release {i}: roll out the fix")),
        );
        assert!(out.status.success(), "{}", text(&out));
    }
    repo
}

#[test]
fn verify_names_the_entry_whose_byte_was_changed() {
    let repo = filled(8);
    let out = ok(&repo, &["audit", "verify"]);
    assert!(
        out.contains("8 entries, 8 signed checkpoints verified"),
        "{out}"
    );
    assert!(out.ends_with("OK\n"), "{out}");

    // Someone with write access to the store file removes the guard and edits one byte.
    let db = store(&repo);
    let err = db
        .execute(
            "UPDATE audit_entries SET actor = 'mallory' WHERE idx = 5",
            [],
        )
        .expect_err("append-only");
    assert!(err.to_string().contains("append-only"), "{err}");
    db.execute_batch("DROP TRIGGER audit_entries_no_update")
        .expect("drop");
    let body: Vec<u8> = db
        .query_row("SELECT body FROM audit_entries WHERE idx = 5", [], |r| {
            r.get(0)
        })
        .expect("body");
    let at = body
        .windows(7)
        .position(|w| w == b"release")
        .expect("reason in entry");
    let mut changed = body.clone();
    changed[at] = b'R';
    db.execute(
        "UPDATE audit_entries SET body = ?1 WHERE idx = 5",
        [&changed],
    )
    .expect("tamper");
    drop(db);

    let out = repo.run(&["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8(out.stdout).expect("utf8");
    assert!(
        stdout.contains("FAILED: the first bad entry is 5"),
        "{stdout}"
    );
    let json = repo.run(&["audit", "verify", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).expect("json");
    assert_eq!(v["problems"][0]["index"], 5, "{v}");
}

#[test]
fn a_privileged_action_without_a_reason_is_refused_and_nothing_is_written() {
    let repo = Repo::new();
    for reason in [None, Some(""), Some("  ")] {
        let out = append(&repo, "rollback", "service/checkout@prod", reason);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        assert!(text(&out).contains("needs a reason"), "{}", text(&out));
    }
    assert!(
        !repo.path().join(".maestro/audit/log.key").exists(),
        "a refused entry creates no key"
    );
    let out = ok(&repo, &["audit", "list"]);
    assert!(out.contains("no audit entries"), "{out}");
    // Not privileged: no reason needed.
    let out = append(&repo, "note", "repo", None);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn secrets_in_parameters_never_reach_the_log() {
    let repo = Repo::new();
    let out = repo.run(&[
        "audit",
        "append",
        "--action",
        "restore",
        "--target",
        "db/orders",
        "--reason",
        "restore after INC-9",
        "--param",
        "db_password=hunter2-hunter2",
        "--param",
        "snapshot=2026-11-20",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = ok(&repo, &["audit", "list", "--json"]);
    assert!(!listed.contains("hunter2"), "{listed}");
    assert!(
        listed.contains("[redacted]") && listed.contains("2026-11-20"),
        "{listed}"
    );
}

#[test]
fn an_export_verifies_offline_with_only_the_verifier_key() {
    let repo = filled(6);
    let vkey = ok(&repo, &["audit", "key"]).trim().to_owned();
    ok(&repo, &["audit", "export", "-o", "audit.jsonl"]);
    ok(
        &repo,
        &[
            "audit",
            "export",
            "-o",
            "part.jsonl",
            "--from",
            "2",
            "--to",
            "4",
        ],
    );
    // The auditor's machine: no store, no key file, only the export and the key.
    let auditor = Repo::new();
    for f in ["audit.jsonl", "part.jsonl"] {
        std::fs::copy(repo.path().join(f), auditor.path().join(f)).expect("copy");
        let out = ok(
            &auditor,
            &["audit", "verify", "--offline", f, "--key", &vkey],
        );
        assert!(out.ends_with("OK\n"), "{out}");
    }
    assert!(!auditor.path().join(".maestro").exists());
    let exported = auditor.read("audit.jsonl");
    auditor.write(
        "audit.jsonl",
        &exported.replacen("release 3", "release 9", 1),
    );
    let out = auditor.run(&[
        "audit",
        "verify",
        "--offline",
        "audit.jsonl",
        "--key",
        &vkey,
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("first bad entry is 3"),
        "{}",
        text(&out)
    );
    let out = auditor.run(&["audit", "verify", "--offline", "audit.jsonl"]);
    assert_eq!(out.status.code(), Some(2), "no key: {}", text(&out));
    assert!(text(&out).contains("--key"), "{}", text(&out));
}

#[test]
fn a_crash_before_commit_loses_only_the_unacknowledged_entry() {
    let repo = filled(3);
    let out = repo
        .cmd(&["audit", "append", "--action", "note", "--target", "lost"])
        .env("MAESTRO_AUDIT_FAILPOINT", "before-commit")
        .output()
        .expect("spawn");
    assert!(!out.status.success(), "aborted: {}", text(&out));
    let out = repo
        .cmd(&["audit", "append", "--action", "note", "--target", "kept"])
        .env("MAESTRO_AUDIT_FAILPOINT", "after-commit")
        .output()
        .expect("spawn");
    assert!(!out.status.success(), "aborted: {}", text(&out));
    let listed = ok(&repo, &["audit", "list"]);
    assert!(!listed.contains("lost"), "{listed}");
    assert!(
        listed.contains("#3") && listed.contains("kept"),
        "durable before the ack: {listed}"
    );
    let out = ok(&repo, &["audit", "verify"]);
    assert!(out.contains("4 entries") && out.ends_with("OK\n"), "{out}");
}

#[test]
fn processes_killed_mid_append_never_lose_an_acknowledged_entry() {
    let repo = filled(1);
    let mut acked = Vec::new();
    for round in 0..6u64 {
        let mut children: Vec<_> = (0..6)
            .map(|i| {
                repo.cmd(&[
                    "audit",
                    "append",
                    "--json",
                    "--action",
                    "note",
                    "--target",
                    &format!("round-{round}-{i}"),
                ])
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn")
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(5 + round * 7));
        // Kill every other process wherever it is: before, during or after its commit.
        for (i, c) in children.iter_mut().enumerate() {
            if i % 2 == 0 {
                let _ = c.kill();
            }
        }
        for c in children {
            let out = c.wait_with_output().expect("wait");
            if out.status.success() {
                let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("receipt");
                acked.push(r["index"].as_u64().expect("index"));
            }
        }
    }
    assert!(
        acked.len() >= 18,
        "the processes not killed were acknowledged"
    );
    let listed: serde_json::Value =
        serde_json::from_str(&ok(&repo, &["audit", "list", "--json", "--limit", "1000"]))
            .expect("json");
    let present: Vec<u64> = listed
        .as_array()
        .expect("array")
        .iter()
        .map(|e| e["index"].as_u64().expect("index"))
        .collect();
    for a in &acked {
        assert!(present.contains(a), "acknowledged entry {a} is in the log");
    }
    // No gaps, no duplicates: indexes are exactly 0..n.
    let mut sorted = present.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..present.len() as u64).collect::<Vec<_>>());
    let out = ok(&repo, &["audit", "verify"]);
    assert!(out.ends_with("OK\n"), "{out}");
}

#[test]
fn rotation_is_followed_from_the_first_key_and_a_kept_checkpoint_catches_a_fork() {
    let repo = filled(3);
    let first = ok(&repo, &["audit", "key"]).trim().to_owned();
    let kept = ok(&repo, &["audit", "checkpoint"]);
    repo.write("kept.checkpoint", &kept);
    let out = repo.run(&["audit", "rotate-key"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = ok(
        &repo,
        &["audit", "rotate-key", "--reason", "yearly rotation SEC-12"],
    );
    assert!(out.contains("key rotated"), "{out}");
    let out = append(&repo, "deploy", "svc@prod", Some("after rotation"));
    assert!(out.status.success(), "the new key signs: {}", text(&out));
    let second = ok(&repo, &["audit", "key"]).trim().to_owned();
    assert_ne!(first, second);
    let out = ok(
        &repo,
        &[
            "audit",
            "verify",
            "--key",
            &first,
            "--checkpoint",
            "kept.checkpoint",
        ],
    );
    assert!(
        out.contains("5 entries") && out.contains("1 kept checkpoints consistent"),
        "{out}"
    );
    assert!(out.ends_with("OK\n"), "{out}");

    // A fork: the same key signs a different history of the same length (replaying the
    // log's key from its file into a fresh store).
    let fork = Repo::new();
    std::fs::create_dir_all(fork.path().join(".maestro/audit")).expect("mkdir");
    std::fs::copy(
        repo.path().join(".maestro/audit/log.key"),
        fork.path().join(".maestro/audit/log.key"),
    )
    .expect("copy key");
    let kept_now = ok(&repo, &["audit", "checkpoint"]);
    fork.write("kept.checkpoint", &kept_now);
    for i in 0..5 {
        let out = append(&fork, "note", &format!("other-{i}"), None);
        assert!(out.status.success(), "{}", text(&out));
    }
    let out = fork.run(&[
        "audit",
        "verify",
        "--key",
        &second,
        "--checkpoint",
        "kept.checkpoint",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("fork"), "{}", text(&out));
}

#[test]
fn a_deploy_is_audited_before_and_after_with_the_commit_as_its_reason() {
    let repo = Repo::example();
    repo.git(&["init", "-q"]);
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-qm", "feat(greet): say hello in Welsh"]);
    let out = repo
        .cmd(&["run", "--log-format", "plain"])
        .output()
        .expect("spawn");
    assert!(out.status.success(), "{}", text(&out));
    let jobs = repo.latest_jobs();
    let link = &jobs["deploy"]["audit"];
    assert_eq!(link["started"], 0, "{jobs:?}");
    assert_eq!(link["outcome"], 1, "{jobs:?}");
    let shown = ok(&repo, &["runs", "show"]);
    assert!(shown.contains("audit #0 → #1"), "{shown}");
    let entries: serde_json::Value =
        serde_json::from_str(&ok(&repo, &["audit", "list", "--json", "--run", "1"])).expect("json");
    let (outcome, started) = (&entries[0], &entries[1]);
    assert_eq!(started["action"], "deploy");
    assert_eq!(started["result"], "started");
    assert_eq!(outcome["result"], "success");
    assert_eq!(outcome["links"]["parent"], 0);
    assert!(
        started["reason"]
            .as_str()
            .is_some_and(|r| r.ends_with("feat(greet): say hello in Welsh")),
        "{started}"
    );
    assert_eq!(started["params"]["reason_from"], "commit");
    let digest = format!(
        "sha256:{}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            std::fs::read(repo.path().join("dist/hello-service.tar.gz")).expect("tarball")
        ))
    );
    assert_eq!(started["links"]["artifact"], digest.as_str(), "{started}");
    assert_eq!(started["params"]["artifacts"][0]["digest"], digest.as_str());
    let out = ok(&repo, &["audit", "verify"]);
    assert!(out.ends_with("OK\n"), "{out}");
}

#[test]
fn a_deploy_without_a_reason_does_not_run() {
    // Not a git repository and no --reason: nothing to say why.
    let repo = Repo::example();
    let out = repo
        .cmd(&["run", "--log-format", "plain"])
        .output()
        .expect("spawn");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let jobs = repo.latest_jobs();
    assert_eq!(jobs["deploy"]["status"], "failed");
    let note = jobs["deploy"]["note"].as_str().unwrap_or_default();
    assert!(note.contains("needs a reason"), "{note}");
    assert!(
        !repo.path().join(".maestro/envs/local").exists(),
        "the deploy command never ran"
    );
    let listed = ok(&repo, &["audit", "list"]);
    assert!(listed.contains("no audit entries"), "{listed}");
}

#[test]
fn audit_key_never_makes_a_fresh_key_where_there_is_no_project() {
    // `verify bundle --key "$(maestro audit key)"` from the wrong directory must fail,
    // not verify against a key made up on the spot.
    let empty = Repo::new();
    let out = empty.run(&["audit", "key"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains("no Maestro project here"),
        "{}",
        text(&out)
    );
    assert!(out.stdout.is_empty(), "no key printed");
    assert!(!empty.path().join(".maestro").exists(), "nothing created");
    // In a project it creates (or prints) the log's key.
    empty.write("maestro.yaml", "version: 1\njobs:\n  a:\n    run: 'true'\n");
    let out = empty.run(&["audit", "key"]);
    assert!(out.status.success(), "{}", text(&out));
}
