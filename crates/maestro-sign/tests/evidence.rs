//! The evidence a deploy requires: signature, provenance and SBOM bundles beside an
//! artifact, checked against a set of trusted keys.

use std::path::{Path, PathBuf};

use maestro_sign::bundle::Bundle;
use maestro_sign::dsse::IN_TOTO_PAYLOAD_TYPE;
use maestro_sign::evidence::{self, Kind, Outcome, SBOM_CYCLONEDX, SBOM_SPDX, Trust};
use maestro_sign::provenance::{
    BuildDefinition, BuildMetadata, Builder, Provenance, RunDetails, STATEMENT_TYPE, Statement,
    subject,
};
use maestro_sign::verify::Policy;
use maestro_sign::{Algorithm, SecretKey};
use sha2::{Digest, Sha256};

const ARTIFACT: &[u8] = b"hello-service 1.0.0\n";

fn cyclonedx() -> serde_json::Value {
    serde_json::json!({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": []})
}

fn provenance(sha: &str, builder: &str) -> Statement {
    Statement::slsa(
        vec![subject("app.tar", sha)],
        &Provenance {
            build_definition: BuildDefinition {
                build_type: maestro_sign::provenance::MAESTRO_BUILD_TYPE.into(),
                external_parameters: serde_json::json!({"source": {"uri": "git+https://github.com/acme/app.git"}}),
                internal_parameters: serde_json::Value::Null,
                resolved_dependencies: vec![],
            },
            run_details: RunDetails {
                builder: Builder {
                    id: builder.into(),
                    version: Default::default(),
                },
                metadata: BuildMetadata::default(),
                byproducts: vec![],
            },
        },
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    artifact: PathBuf,
    key: SecretKey,
    sha: String,
}

fn attest(key: &SecretKey, path: &Path, statement: &Statement) {
    let payload = serde_json::to_vec(statement).expect("json");
    let bundle = Bundle::sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, &payload).expect("sign");
    std::fs::write(path, bundle.to_json()).expect("write");
}

/// An artifact with all three bundles, signed by one P-256 key.
fn complete() -> Fixture {
    let dir = tempfile::tempdir().expect("tmp");
    let artifact = dir.path().join("app.tar");
    std::fs::write(&artifact, ARTIFACT).expect("write");
    let key = SecretKey::generate(Algorithm::EcdsaP256).expect("key");
    let digest: [u8; 32] = Sha256::digest(ARTIFACT).into();
    let sha = hex::encode(digest);
    let sig = Bundle::sign_artifact(&key, &digest, None).expect("sign");
    std::fs::write(Kind::Signature.bundle_path(&artifact), sig.to_json()).expect("write");
    attest(
        &key,
        &Kind::Provenance.bundle_path(&artifact),
        &provenance(&sha, "https://ci.example.com/1"),
    );
    let sbom = evidence::sbom_statement(vec![subject("app.tar", &sha)], cyclonedx()).expect("sbom");
    attest(&key, &Kind::Sbom.bundle_path(&artifact), &sbom);
    Fixture {
        _dir: dir,
        artifact,
        key,
        sha,
    }
}

fn trust(keys: &[&SecretKey]) -> Trust {
    Trust {
        keys: keys.iter().map(|k| k.public()).collect(),
        policy: Policy::default(),
    }
}

fn outcome(f: &Fixture, trust: &Trust, kind: Kind) -> Outcome {
    let report = evidence::check(&f.artifact, "app.tar", trust).expect("check");
    report
        .evidence
        .into_iter()
        .find(|e| e.kind == kind)
        .expect("kind checked")
        .outcome
}

#[test]
fn complete_evidence_verifies() {
    let f = complete();
    let report = evidence::check(&f.artifact, "app.tar", &trust(&[&f.key])).expect("check");
    assert!(report.ok(), "{:?}", report.describe_problems());
    assert_eq!(report.sha256, f.sha);
    assert_eq!(report.evidence.len(), 3);
    let Outcome::Verified(v) = &report.evidence[2].outcome else {
        panic!("sbom not verified");
    };
    assert_eq!(v.predicate_type.as_deref(), Some(SBOM_CYCLONEDX));
}

#[test]
fn each_missing_bundle_is_named_with_how_to_produce_it() {
    for kind in Kind::ALL {
        let f = complete();
        std::fs::remove_file(kind.bundle_path(&f.artifact)).expect("rm");
        let report = evidence::check(&f.artifact, "app.tar", &trust(&[&f.key])).expect("check");
        let problems = report.describe_problems();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].contains(&format!("no {kind} (expected ")),
            "{problems:?}"
        );
        assert!(problems[0].contains(kind.how()), "{problems:?}");
    }
}

#[test]
fn a_key_outside_the_trusted_set_is_refused() {
    let f = complete();
    let other = SecretKey::generate(Algorithm::Ed25519).expect("key");
    for kind in Kind::ALL {
        let Outcome::Invalid { error } = outcome(&f, &trust(&[&other]), kind) else {
            panic!("{kind} verified with an untrusted key");
        };
        assert!(error.starts_with("bundle:"), "{error}");
    }
    // The right key among several trusted ones is found.
    let report = evidence::check(&f.artifact, "app.tar", &trust(&[&other, &f.key])).expect("check");
    assert!(report.ok(), "{:?}", report.describe_problems());
}

#[test]
fn the_bundles_must_be_about_this_artifact() {
    let f = complete();
    std::fs::write(&f.artifact, b"hello-service 1.0.1\n").expect("write");
    let report = evidence::check(&f.artifact, "app.tar", &trust(&[&f.key])).expect("check");
    let problems = report.describe_problems();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems.iter().all(|p| p.contains("artifact:")),
        "{problems:?}"
    );
}

#[test]
fn a_provenance_bundle_must_carry_provenance_and_meet_the_policy() {
    let f = complete();
    // The SBOM attestation in the provenance's place.
    std::fs::copy(
        Kind::Sbom.bundle_path(&f.artifact),
        Kind::Provenance.bundle_path(&f.artifact),
    )
    .expect("copy");
    let Outcome::Invalid { error } = outcome(&f, &trust(&[&f.key]), Kind::Provenance) else {
        panic!("an SBOM passed as provenance");
    };
    assert!(error.starts_with("policy:"), "{error}");

    let f = complete();
    let mut t = trust(&[&f.key]);
    t.policy.builder_id = Some("https://ci.example.com/2".into());
    let Outcome::Invalid { error } = outcome(&f, &t, Kind::Provenance) else {
        panic!("wrong builder accepted");
    };
    assert!(error.contains("https://ci.example.com/2"), "{error}");
    // The SBOM is not judged by the provenance policy.
    assert!(matches!(outcome(&f, &t, Kind::Sbom), Outcome::Verified(_)));
}

#[test]
fn an_sbom_bundle_must_carry_an_sbom_of_the_type_it_claims() {
    let f = complete();
    let path = Kind::Sbom.bundle_path(&f.artifact);
    // Provenance in the SBOM's place.
    attest(&f.key, &path, &provenance(&f.sha, "b"));
    let Outcome::Invalid { error } = outcome(&f, &trust(&[&f.key]), Kind::Sbom) else {
        panic!("provenance passed as an SBOM");
    };
    assert!(error.contains("not an SBOM"), "{error}");
    // A CycloneDX document labelled SPDX.
    let lying = Statement {
        type_: STATEMENT_TYPE.into(),
        subject: vec![subject("app.tar", &f.sha)],
        predicate_type: SBOM_SPDX.into(),
        predicate: cyclonedx(),
    };
    attest(&f.key, &path, &lying);
    let Outcome::Invalid { error } = outcome(&f, &trust(&[&f.key]), Kind::Sbom) else {
        panic!("mislabelled SBOM accepted");
    };
    assert!(error.contains("predicateType"), "{error}");
}

#[test]
fn sbom_statements_know_both_formats() {
    let spdx = serde_json::json!({"spdxVersion": "SPDX-2.3", "SPDXID": "SPDXRef-DOCUMENT"});
    let s = evidence::sbom_statement(vec![], spdx).expect("spdx");
    assert_eq!(s.predicate_type, SBOM_SPDX);
    let s = evidence::sbom_statement(vec![], cyclonedx()).expect("cdx");
    assert_eq!(s.predicate_type, SBOM_CYCLONEDX);
    let err =
        evidence::sbom_statement(vec![], serde_json::json!({"name": "x"})).expect_err("other");
    assert!(err.contains("neither"), "{err}");
}
