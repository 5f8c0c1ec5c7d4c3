//! Bundles against the official Sigstore schema, a key written by cosign itself, and every
//! single-byte tamper of artifact and bundle.

use std::path::PathBuf;

use maestro_sign::bundle::Bundle;
use maestro_sign::dsse::IN_TOTO_PAYLOAD_TYPE;
use maestro_sign::provenance::{
    BuildDefinition, BuildMetadata, Builder, Provenance, RunDetails, Statement, subject,
};
use maestro_sign::verify::{Artifact, Policy, verify_attestation, verify_signature};
use maestro_sign::{Algorithm, PublicKey, SecretKey, SignError};
use sha2::{Digest, Sha256};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// protobuf's JSON mapping: `message_signature` → `messageSignature`.
fn lower_camel(s: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in s.chars() {
        if c == '_' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

fn camel_required(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if k == "required" {
                    if let serde_json::Value::Array(names) = child {
                        for n in names.iter_mut() {
                            if let Some(s) = n.as_str() {
                                *n = serde_json::Value::String(lower_camel(s));
                            }
                        }
                    }
                } else {
                    camel_required(child);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(camel_required),
        _ => {}
    }
}

fn assert_valid_bundle(json: &str) {
    let path = repo_root().join("schema/external/sigstore/Bundle.schema.json");
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("test setup"))
            .expect("test setup");
    camel_required(&mut schema);
    let validator = jsonschema::draft4::new(&schema).expect("test setup");
    let instance: serde_json::Value = serde_json::from_str(json).expect("test setup");
    let errors: Vec<String> = validator
        .iter_errors(&instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{json}\n{errors:#?}");
}

fn sha(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

const ARTIFACT: &[u8] = b"hello-service 1.0.0 release tarball\n";

fn signed(alg: Algorithm) -> (SecretKey, String) {
    let key = SecretKey::generate(alg).expect("test setup");
    let bundle = Bundle::sign_artifact(&key, &sha(ARTIFACT), Some(ARTIFACT)).expect("test setup");
    (key, bundle.to_json())
}

fn provenance_statement(artifact_sha: &str) -> Statement {
    let provenance = Provenance {
        build_definition: BuildDefinition {
            build_type: maestro_sign::provenance::MAESTRO_BUILD_TYPE.into(),
            external_parameters: serde_json::json!({
                "job": "package",
                "source": {"uri": "git+https://example.com/acme/hello-service.git@refs/heads/main"}
            }),
            internal_parameters: serde_json::Value::Null,
            resolved_dependencies: vec![subject("src/app.py", &"ab".repeat(32))],
        },
        run_details: RunDetails {
            builder: Builder {
                id: "https://ci.example.com/maestro".into(),
                version: Default::default(),
            },
            metadata: BuildMetadata {
                invocation_id: "run-7".into(),
                ..Default::default()
            },
            byproducts: vec![],
        },
    };
    Statement::slsa(
        vec![subject("dist/hello.tar.gz", artifact_sha)],
        &provenance,
    )
}

fn attested(alg: Algorithm) -> (SecretKey, String) {
    let key = SecretKey::generate(alg).expect("test setup");
    let statement = provenance_statement(&hex::encode(sha(ARTIFACT)));
    let payload = serde_json::to_vec(&statement).expect("test setup");
    let bundle = Bundle::sign_envelope(&key, IN_TOTO_PAYLOAD_TYPE, &payload).expect("test setup");
    (key, bundle.to_json())
}

fn artifact(bytes: &[u8]) -> Artifact<'_> {
    Artifact {
        name: "dist/hello.tar.gz",
        sha256: sha(bytes),
        bytes: Some(bytes),
    }
}

#[test]
fn signature_and_attestation_bundles_validate_against_the_official_schema() {
    for alg in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
        let (key, json) = signed(alg);
        assert_valid_bundle(&json);
        assert!(json.contains("\"mediaType\": \"application/vnd.dev.sigstore.bundle.v0.3+json\""));
        assert!(json.contains("\"tlogEntries\": []"), "{json}");
        verify_signature(json.as_bytes(), &artifact(ARTIFACT), &key.public()).expect("test setup");

        let (key, json) = attested(alg);
        assert_valid_bundle(&json);
        let (verified, statement) = verify_attestation(
            json.as_bytes(),
            &artifact(ARTIFACT),
            &key.public(),
            &Policy {
                builder_id: Some("https://ci.example.com/maestro".into()),
                source_uri: Some("https://example.com/acme/hello-service".into()),
                predicate_type: None,
            },
        )
        .expect("test setup");
        assert_eq!(
            verified.builder_id.as_deref(),
            Some("https://ci.example.com/maestro")
        );
        assert_eq!(statement.subject[0].name, "dist/hello.tar.gz");
    }
}

#[test]
fn the_schema_check_itself_rejects_a_broken_bundle() {
    // The validator must be able to fail: a bundle without its content is invalid.
    let (_, json) = signed(Algorithm::EcdsaP256);
    let mut v: serde_json::Value = serde_json::from_str(&json).expect("test setup");
    v.as_object_mut()
        .expect("test setup")
        .remove("messageSignature");
    let path = repo_root().join("schema/external/sigstore/Bundle.schema.json");
    let mut schema: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("test setup"))
            .expect("test setup");
    camel_required(&mut schema);
    assert!(
        !jsonschema::draft4::new(&schema)
            .expect("test setup")
            .is_valid(&v)
    );
}

#[test]
fn a_key_written_by_cosign_is_read_and_signs() {
    // `cosign generate-key-pair` with an empty password (scrypt N = 65536, r = 8, p = 1).
    let pem = std::fs::read(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/cosign-generated-empty-password.key"),
    )
    .expect("test setup");
    let key = SecretKey::from_pem(&pem, Some(b"")).expect("test setup");
    assert_eq!(key.algorithm(), Algorithm::EcdsaP256);
    assert!(matches!(
        SecretKey::from_pem(&pem, Some(b"x")),
        Err(SignError::WrongPassword)
    ));
    assert!(matches!(
        SecretKey::from_pem(&pem, None),
        Err(SignError::PasswordRequired)
    ));
    // Re-exported in cosign's format and read back, it is the same key.
    let again = key.to_encrypted_pem(b"pw").expect("test setup");
    let body: String = again.lines().filter(|l| !l.starts_with("-----")).collect();
    let json: serde_json::Value = {
        use base64::Engine as _;
        serde_json::from_slice(
            &base64::engine::general_purpose::STANDARD
                .decode(body)
                .expect("test setup"),
        )
        .expect("test setup")
    };
    assert_eq!(json["kdf"]["name"], "scrypt");
    assert_eq!(
        json["kdf"]["params"],
        serde_json::json!({"N": 65536, "r": 8, "p": 1})
    );
    assert_eq!(json["cipher"]["name"], "nacl/secretbox");
    assert_eq!(
        SecretKey::from_pem(again.as_bytes(), Some(b"pw"))
            .expect("test setup")
            .public(),
        key.public()
    );
}

fn flips(len: usize) -> impl Iterator<Item = (usize, u8)> {
    (0..len).flat_map(|i| [0x01u8, 0x20, 0x80].into_iter().map(move |m| (i, m)))
}

#[test]
fn every_single_byte_tamper_of_a_signature_bundle_fails() {
    for alg in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
        let (key, json) = signed(alg);
        let public = key.public();
        for (i, mask) in flips(json.len()) {
            let mut bytes = json.clone().into_bytes();
            bytes[i] ^= mask;
            let result = verify_signature(&bytes, &artifact(ARTIFACT), &public);
            assert!(
                result.is_err(),
                "{alg}: flipping byte {i} ({:?}) with {mask:#04x} still verified",
                json.as_bytes()[i] as char
            );
        }
        // The signature itself: the message names it.
        let mut v: serde_json::Value = serde_json::from_str(&json).expect("test setup");
        let sig = v["messageSignature"]["signature"]
            .as_str()
            .expect("test setup")
            .to_string();
        let other =
            Bundle::sign_artifact(&key, &sha(b"other"), Some(b"other")).expect("test setup");
        v["messageSignature"]["signature"] =
            serde_json::Value::String(other.message_signature.expect("test setup").signature);
        assert_ne!(v["messageSignature"]["signature"], sig);
        let err =
            verify_signature(v.to_string().as_bytes(), &artifact(ARTIFACT), &public).unwrap_err();
        assert!(err.to_string().starts_with("signature:"), "{err}");
    }
}

#[test]
fn every_single_byte_tamper_of_the_artifact_fails_and_says_artifact() {
    for alg in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
        let (key, json) = signed(alg);
        let (akey, ajson) = attested(alg);
        for (i, mask) in flips(ARTIFACT.len()) {
            let mut bytes = ARTIFACT.to_vec();
            bytes[i] ^= mask;
            let err =
                verify_signature(json.as_bytes(), &artifact(&bytes), &key.public()).unwrap_err();
            assert!(err.to_string().starts_with("artifact:"), "{err}");
            let err = verify_attestation(
                ajson.as_bytes(),
                &artifact(&bytes),
                &akey.public(),
                &Policy::default(),
            )
            .unwrap_err();
            assert!(err.to_string().starts_with("artifact:"), "{err}");
        }
    }
}

#[test]
fn every_single_byte_tamper_of_an_attestation_bundle_and_its_envelope_fails() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    for alg in [Algorithm::EcdsaP256, Algorithm::Ed25519] {
        let (key, json) = attested(alg);
        let public = key.public();
        for (i, mask) in flips(json.len()) {
            let mut bytes = json.clone().into_bytes();
            bytes[i] ^= mask;
            assert!(
                verify_attestation(&bytes, &artifact(ARTIFACT), &public, &Policy::default())
                    .is_err(),
                "{alg}: flipping bundle byte {i} with {mask:#04x} still verified"
            );
        }
        // Every byte of the decoded statement, re-encoded as valid base64: the envelope's
        // signature catches it.
        let v: serde_json::Value = serde_json::from_str(&json).expect("test setup");
        let payload = b64
            .decode(v["dsseEnvelope"]["payload"].as_str().expect("test setup"))
            .expect("test setup");
        for i in 0..payload.len() {
            let mut p = payload.clone();
            p[i] ^= 0x01;
            let mut t = v.clone();
            t["dsseEnvelope"]["payload"] = serde_json::Value::String(b64.encode(&p));
            let err = verify_attestation(
                t.to_string().as_bytes(),
                &artifact(ARTIFACT),
                &public,
                &Policy::default(),
            )
            .unwrap_err();
            assert!(err.to_string().starts_with("signature:"), "byte {i}: {err}");
        }
    }
}

#[test]
fn policy_failures_name_the_builder_or_source() {
    let (key, json) = attested(Algorithm::EcdsaP256);
    let check = |policy: Policy| {
        verify_attestation(json.as_bytes(), &artifact(ARTIFACT), &key.public(), &policy)
            .unwrap_err()
            .to_string()
    };
    let msg = check(Policy {
        builder_id: Some("https://other.example/builder".into()),
        ..Policy::default()
    });
    assert!(
        msg.starts_with("policy: built by `https://ci.example.com/maestro`"),
        "{msg}"
    );
    let msg = check(Policy {
        source_uri: Some("github.com/evil/fork".into()),
        ..Policy::default()
    });
    assert!(msg.starts_with("policy: built from"), "{msg}");
    assert!(msg.contains("github.com/evil/fork"), "{msg}");
}

#[test]
fn another_key_is_named_in_the_error() {
    let (_, json) = signed(Algorithm::EcdsaP256);
    let other = SecretKey::generate(Algorithm::EcdsaP256)
        .expect("test setup")
        .public();
    let err = verify_signature(json.as_bytes(), &artifact(ARTIFACT), &other).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("bundle: signed by the key with hint"),
        "{err}"
    );
    // With the hint removed (it is unauthenticated), the signature check still fails.
    let mut v: serde_json::Value = serde_json::from_str(&json).expect("test setup");
    v["verificationMaterial"]["publicKey"]["hint"] = serde_json::Value::String(String::new());
    let err = verify_signature(v.to_string().as_bytes(), &artifact(ARTIFACT), &other).unwrap_err();
    assert!(err.to_string().starts_with("signature:"), "{err}");
}

#[test]
fn keyless_bundles_are_refused_with_a_reason() {
    let json = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"certificate": {"rawBytes": "AAAA"}, "tlogEntries": []},
        "messageSignature": {"messageDigest": {"algorithm": "SHA2_256", "digest": "AAAA"}, "signature": "AAAA"}
    });
    let key: PublicKey = SecretKey::generate(Algorithm::EcdsaP256)
        .expect("test setup")
        .public();
    let err = verify_signature(json.to_string().as_bytes(), &artifact(ARTIFACT), &key).unwrap_err();
    assert!(
        err.to_string().contains("certificate-based (keyless)"),
        "{err}"
    );
}
