//! The deploy gate end to end: a job that `deploys` an artifact starts only when the
//! artifact carries a signature, provenance and a signed SBOM from a trusted key, and a
//! refusal says which piece of evidence is missing or wrong.

mod common;

use common::Repo;

/// `EVIDENCE` is the job that produces the evidence; `TAMPER` a job between it and the
/// deploy.
fn pipeline(evidence: &str, tamper: &str) -> String {
    format!(
        r#"
version: 1
name: shop
trust:
  keys: [.maestro/keys/dev.pub]
jobs:
  sbom:
    uses: maestro/sbom@1
  package:
    gate: package
    run: mkdir -p dist && cp app.py dist/app.tar
    inputs: [app.py]
    outputs: [dist/app.tar]
{evidence}
{tamper}
  deploy:
    gate: deploy
    deploys: [dist/app.tar]
    run: cp dist/app.tar deployed.tar
"#
    )
}

const FULL_EVIDENCE: &str = r"
  evidence:
    uses: maestro/evidence@1
    needs: [package, sbom]
    with:
      artifact: dist/app.tar
      key: .maestro/keys/dev.key
      dev-key: 'true'
";

/// Signature and provenance, but no SBOM attestation.
const NO_SBOM: &str = r#"
  evidence:
    gate: package
    needs: [package]
    env: { MAESTRO_KEY_PASSWORD: "" }
    run: |
      "$MAESTRO_EXE" keys generate --if-missing --output-key-prefix .maestro/keys/dev &&
      "$MAESTRO_EXE" sign dist/app.tar --key .maestro/keys/dev.key &&
      "$MAESTRO_EXE" attest dist/app.tar --key .maestro/keys/dev.key
    cache: false
"#;

const TAMPER: &str = r"
  tamper:
    gate: publish
    run: echo 'one more line' >> dist/app.tar
";

fn repo(spec: &str) -> Repo {
    let repo = Repo::new();
    repo.write("maestro.yaml", spec);
    repo.write("app.py", "print('shop')\n");
    repo.write("requirements.txt", "flask==3.0.3\nwerkzeug==3.0.4\n");
    repo
}

fn log_of(job: &serde_json::Value) -> String {
    std::fs::read_to_string(job["log_path"].as_str().expect("log path")).expect("log")
}

#[test]
fn a_deploy_with_full_evidence_runs_and_logs_what_was_verified() {
    let repo = repo(&pipeline(FULL_EVIDENCE, ""));
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
    let jobs = repo.latest_jobs();
    assert_eq!(jobs["deploy"]["status"], "succeeded", "{out}");
    assert_eq!(repo.read("deployed.tar"), "print('shop')\n");
    let log = log_of(&jobs["deploy"]);
    for kind in ["signature", "provenance", "SBOM"] {
        assert!(
            log.contains(&format!("maestro: ok dist/app.tar: {kind} verified")),
            "{log}"
        );
    }
    // The SBOM attested is the pipeline's own, with the lockfile's packages.
    let sbom = repo.read("dist/sbom.cdx.json");
    assert!(sbom.contains("pkg:pypi/flask@3.0.3"), "{sbom}");
    // A second run re-signs (the evidence job is never cached) and deploys again.
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_deploy_without_an_sbom_is_refused_and_says_so() {
    let repo = repo(&pipeline(NO_SBOM, ""));
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 1, "{out}");
    let jobs = repo.latest_jobs();
    let deploy = &jobs["deploy"];
    assert_eq!(deploy["status"], "failed");
    let note = deploy["note"].as_str().expect("note");
    assert!(
        note.contains(
            "deploy refused: dist/app.tar: no SBOM (expected dist/app.tar.sbom.sigstore.json"
        ),
        "{note}"
    );
    assert!(note.contains("maestro attest ARTIFACT --sbom"), "{note}");
    assert!(
        out.contains("deploy — did not start (deploy refused: dist/app.tar: no SBOM"),
        "{out}"
    );
    // The job never started.
    assert!(!repo.path().join("deployed.tar").exists());
    // The log has what verified and what did not.
    let log = log_of(deploy);
    assert!(log.contains("ok dist/app.tar: signature verified"), "{log}");
    assert!(
        log.contains("ok dist/app.tar: provenance verified"),
        "{log}"
    );
    assert!(log.contains("refused: dist/app.tar: no SBOM"), "{log}");
}

#[test]
fn an_artifact_changed_after_signing_is_refused() {
    let repo = repo(&pipeline(FULL_EVIDENCE, TAMPER));
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 1, "{out}");
    let jobs = repo.latest_jobs();
    let note = jobs["deploy"]["note"].as_str().expect("note");
    assert!(
        note.contains("dist/app.tar: signature does not verify"),
        "{note}"
    );
    assert!(note.contains("artifact:"), "{note}");
    assert!(!repo.path().join("deployed.tar").exists());
}

#[test]
fn evidence_from_an_untrusted_key_is_refused() {
    // The pipeline trusts another key than the one that signs.
    let spec = pipeline(FULL_EVIDENCE, "").replace(".maestro/keys/dev.pub", "release.pub");
    let repo = repo(&spec);
    let keygen = repo
        .cmd(&["keys", "generate", "--output-key-prefix", "release"])
        .env("MAESTRO_KEY_PASSWORD", "")
        .output()
        .expect("spawn");
    assert!(keygen.status.success());
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 1, "{out}");
    let note = repo.latest_jobs()["deploy"]["note"]
        .as_str()
        .expect("note")
        .to_owned();
    assert!(
        note.contains("bundle: signed by the key with hint"),
        "{note}"
    );
}

#[test]
fn maestro_verify_requires_what_it_is_told() {
    let repo = repo(&pipeline(NO_SBOM, ""));
    let (code, out) = repo.maestro_run(&[]);
    assert_eq!(code, 1, "{out}");
    let verify = |require: &str| {
        repo.run(&[
            "verify",
            "dist/app.tar",
            "--key",
            ".maestro/keys/dev.pub",
            "--require",
            require,
        ])
    };
    let ok = verify("signature,provenance");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let stdout = String::from_utf8_lossy(&ok.stdout);
    assert!(stdout.contains("ok signature"), "{stdout}");
    assert!(stdout.contains("ok provenance: built by"), "{stdout}");
    let refused = verify("signature,provenance,sbom");
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("no SBOM (expected"), "{err}");
    let bad = verify("sbom,vibes");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown evidence `vibes`"));
}
