//! `maestro keys|sign|attest|verify` end to end, with the real binary.

mod common;

use std::process::Output;

use common::{Repo, text};

const PASSWORD: &str = "correct horse battery staple";

fn with_password(repo: &Repo, args: &[&str]) -> Output {
    repo.cmd(args)
        .env("MAESTRO_KEY_PASSWORD", PASSWORD)
        .env_remove("COSIGN_PASSWORD")
        .env_remove("MAESTRO_RUN_ID")
        .output()
        .expect("spawn maestro")
}

fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}", text(out));
    text(out)
}

fn fails(out: &Output, code: i32, needle: &str) {
    let t = text(out);
    assert_eq!(out.status.code(), Some(code), "{t}");
    assert!(t.contains(needle), "expected `{needle}` in:\n{t}");
}

#[test]
fn sign_and_verify_with_both_algorithms() {
    let repo = Repo::new();
    repo.write("app.bin", "release 1.0\n");
    for alg in ["ecdsa-p256", "ed25519"] {
        ok(&with_password(
            &repo,
            &[
                "keys",
                "generate",
                "--algorithm",
                alg,
                "--output-key-prefix",
                alg,
            ],
        ));
        let key = format!("{alg}.key");
        let public = format!("{alg}.pub");
        let bundle = format!("app.bin.{alg}.json");
        ok(&with_password(
            &repo,
            &["sign", "app.bin", "--key", &key, "--bundle", &bundle],
        ));
        let out = ok(&repo.run(&["verify", "app.bin", "--key", &public, "--bundle", &bundle]));
        assert!(out.contains("ok signature"), "{out}");
        assert!(out.contains(alg), "{out}");
    }
    // A bundle made with one key does not verify with the other.
    fails(
        &repo.run(&[
            "verify",
            "app.bin",
            "--key",
            "ed25519.pub",
            "--bundle",
            "app.bin.ecdsa-p256.json",
        ]),
        1,
        "bundle:",
    );
}

#[test]
fn private_key_is_encrypted_and_private() {
    use std::os::unix::fs::PermissionsExt as _;
    let repo = Repo::new();
    ok(&with_password(&repo, &["keys", "generate"]));
    let pem = repo.read("maestro.key");
    assert!(pem.starts_with("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----"));
    let mode = std::fs::metadata(repo.path().join("maestro.key"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // No overwrite without --force.
    fails(
        &with_password(&repo, &["keys", "generate"]),
        2,
        "already exists",
    );
    // The wrong password is named as such, and never echoed.
    let out = repo
        .cmd(&["sign", "maestro.pub", "--key", "maestro.key"])
        .env("MAESTRO_KEY_PASSWORD", "hunter2")
        .output()
        .expect("spawn");
    fails(&out, 2, "wrong password");
    assert!(!text(&out).contains("hunter2"));
    // No password at all.
    let out = repo
        .cmd(&["sign", "maestro.pub", "--key", "maestro.key"])
        .env_remove("MAESTRO_KEY_PASSWORD")
        .env_remove("COSIGN_PASSWORD")
        .output()
        .expect("spawn");
    fails(&out, 2, "MAESTRO_KEY_PASSWORD");
    // Export to PKCS#8, import again under a new password: the same public key.
    ok(&with_password(
        &repo,
        &["keys", "export", "maestro.key", "--output", "plain.pem"],
    ));
    assert!(
        repo.read("plain.pem")
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let out = repo
        .cmd(&[
            "keys",
            "import",
            "plain.pem",
            "--output-key-prefix",
            "again",
        ])
        .env("MAESTRO_KEY_PASSWORD", "another")
        .output()
        .expect("spawn");
    ok(&out);
    assert_eq!(repo.read("again.pub"), repo.read("maestro.pub"));
}

#[test]
fn cosign_generated_key_signs() {
    let repo = Repo::new();
    let vector = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../maestro-sign/tests/data/cosign-generated-empty-password.key");
    std::fs::copy(vector, repo.path().join("cosign.key")).expect("copy");
    repo.write("app.bin", "x");
    let out = repo
        .cmd(&["sign", "app.bin", "--key", "cosign.key"])
        .env_remove("MAESTRO_KEY_PASSWORD")
        .env("COSIGN_PASSWORD", "")
        .output()
        .expect("spawn");
    ok(&out);
    let public = repo
        .cmd(&["keys", "public", "cosign.key"])
        .env("COSIGN_PASSWORD", "")
        .env_remove("MAESTRO_KEY_PASSWORD")
        .output()
        .expect("spawn");
    ok(&public);
    std::fs::write(repo.path().join("cosign.pub"), &public.stdout).expect("write");
    ok(&repo.run(&["verify", "app.bin", "--key", "cosign.pub"]));
}

#[test]
fn a_changed_artifact_or_bundle_is_refused_and_named() {
    let repo = Repo::new();
    repo.write("app.bin", "release 1.0\n");
    ok(&with_password(&repo, &["keys", "generate"]));
    ok(&with_password(
        &repo,
        &["sign", "app.bin", "--key", "maestro.key"],
    ));
    let bundle = repo.read("app.bin.sigstore.json");

    repo.write("app.bin", "release 1.1\n");
    fails(
        &repo.run(&["verify", "app.bin", "--key", "maestro.pub"]),
        1,
        "artifact:",
    );
    repo.write("app.bin", "release 1.0\n");

    let v: serde_json::Value = serde_json::from_str(&bundle).expect("json");
    let sig = v["messageSignature"]["signature"].as_str().expect("sig");
    let flipped = if sig.starts_with('A') { "B" } else { "A" };
    repo.write(
        "app.bin.sigstore.json",
        &bundle.replacen(sig, &format!("{flipped}{}", &sig[1..]), 1),
    );
    fails(
        &repo.run(&["verify", "app.bin", "--key", "maestro.pub"]),
        1,
        "signature:",
    );
    std::fs::remove_file(repo.path().join("app.bin.sigstore.json")).expect("rm");
    fails(
        &repo.run(&["verify", "app.bin", "--key", "maestro.pub"]),
        1,
        "no signature (expected app.bin.sigstore.json",
    );
}

const PIPELINE: &str = r#"
version: 1
name: attest-me
jobs:
  package:
    gate: package
    run: mkdir -p dist && printf 'built from %s\n' "$(cat src.txt)" > dist/app.tar
    inputs: [src.txt]
    outputs: [dist/app.tar]
"#;

#[test]
fn provenance_of_a_pipeline_job_verifies_against_builder_and_source() {
    let repo = Repo::new();
    repo.write("maestro.yaml", PIPELINE);
    repo.write("src.txt", "v1");
    repo.git(&["init", "-q", "-b", "main"]);
    repo.git(&[
        "remote",
        "add",
        "origin",
        "git@github.com:acme/attest-me.git",
    ]);
    repo.git(&["add", "."]);
    repo.git(&["commit", "-qm", "init"]);
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    ok(&with_password(&repo, &["keys", "generate"]));
    let out = ok(&with_password(
        &repo,
        &[
            "attest",
            "dist/app.tar",
            "--key",
            "maestro.key",
            "--builder-id",
            "https://ci.example.com/runners/1",
        ],
    ));
    assert!(out.contains("job `package`"), "{out}");
    ok(&with_password(
        &repo,
        &["sign", "dist/app.tar", "--key", "maestro.key"],
    ));

    // The statement says what was built, from what, by whom.
    let bundle: serde_json::Value =
        serde_json::from_str(&repo.read("dist/app.tar.intoto.sigstore.json")).expect("json");
    let payload = bundle["dsseEnvelope"]["payload"].as_str().expect("payload");
    let statement = decode_b64(payload);
    let st: serde_json::Value = serde_json::from_slice(&statement).expect("statement");
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
    assert_eq!(st["subject"][0]["name"], "app.tar");
    let deps = st["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .expect("deps");
    assert!(
        deps.iter().any(|d| d["name"] == "src.txt"),
        "inputs are resolved dependencies: {deps:?}"
    );
    assert!(deps.iter().any(|d| d["digest"]["gitCommit"].is_string()));
    assert_eq!(
        st["predicate"]["buildDefinition"]["externalParameters"]["source"]["uri"],
        "git+git@github.com:acme/attest-me.git@refs/heads/main"
    );

    let verify = |extra: &[&str]| {
        let mut args = vec!["verify", "dist/app.tar", "--key", "maestro.pub"];
        args.extend_from_slice(extra);
        repo.run(&args)
    };
    let out = ok(&verify(&[
        "--builder-id",
        "https://ci.example.com/runners/1",
        "--source-uri",
        "https://github.com/acme/attest-me",
    ]));
    assert!(out.contains("provenance: built by https://ci.example.com/runners/1"));
    fails(
        &verify(&["--builder-id", "https://ci.example.com/runners/2"]),
        1,
        "policy:",
    );
    fails(
        &verify(&["--source-uri", "github.com/acme/other"]),
        1,
        "policy:",
    );

    // A file the pipeline did not build gets no provenance.
    repo.write("dist/other.tar", "not built here");
    fails(
        &with_password(&repo, &["attest", "dist/other.tar", "--key", "maestro.key"]),
        1,
        "not among the outputs",
    );
}

fn decode_b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .expect("base64")
}

const IN_PIPELINE: &str = r#"
version: 1
name: evidence
pass-env: [PATH, MAESTRO_KEY_PASSWORD]
jobs:
  package:
    gate: package
    run: mkdir -p dist && cp src.txt dist/app.tar
    inputs: [src.txt]
    outputs: [dist/app.tar]
  evidence:
    gate: publish
    needs: [package]
    run: |
      "$MAESTRO_EXE" sign dist/app.tar --key maestro.key &&
      "$MAESTRO_EXE" attest dist/app.tar --key maestro.key --job package
  deploy:
    gate: publish
    needs: [evidence]
    run: '"$MAESTRO_EXE" verify dist/app.tar --key maestro.pub --builder-id https://maestro.invalid/builders/local/v1'
"#;

#[test]
fn a_pipeline_signs_attests_and_verifies_its_own_artifact() {
    let repo = Repo::new();
    repo.write("maestro.yaml", IN_PIPELINE);
    repo.write("src.txt", "v1");
    ok(&with_password(&repo, &["keys", "generate"]));
    let out = repo
        .cmd(&["run", "--log-format", "plain", "--reason", "ship v1"])
        .env("MAESTRO_KEY_PASSWORD", PASSWORD)
        .output()
        .expect("spawn");
    ok(&out);
    let jobs = repo.latest_jobs();
    assert_eq!(jobs["deploy"]["status"], "succeeded");
    // The attestation names the run that built the artifact.
    let run = repo.json(&["runs", "show", "--json"])["run"]["id"]
        .as_i64()
        .expect("id");
    let bundle: serde_json::Value =
        serde_json::from_str(&repo.read("dist/app.tar.intoto.sigstore.json")).expect("json");
    let st: serde_json::Value = serde_json::from_slice(&decode_b64(
        bundle["dsseEnvelope"]["payload"].as_str().expect("payload"),
    ))
    .expect("statement");
    assert_eq!(
        st["predicate"]["runDetails"]["metadata"]["invocationId"],
        format!("maestro-run-{run}/package")
    );
}
