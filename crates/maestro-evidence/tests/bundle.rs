//! A release evidence bundle built from real parts — an artifact signed, attested and with
//! a signed SBOM by a P-256 key, audit entries appended to a real log and proven against
//! its signed checkpoint — verifies offline; every kind of tampering is named.

use maestro_audit::{Log, LogKey, NewEntry, Trust};
use maestro_evidence::{AuditItem, Header, read, verify, write};
use maestro_sign::bundle::Bundle;
use maestro_sign::dsse::IN_TOTO_PAYLOAD_TYPE;
use maestro_sign::evidence;
use maestro_sign::provenance::{
    BuildDefinition, BuildMetadata, Builder, Provenance, RunDetails, Statement, subject,
};
use maestro_sign::{Algorithm, SecretKey};
use serde_json::json;
use sha2::{Digest as _, Sha256};

const ARTIFACT: &[u8] = b"hello-service 1.1.0\n";

type Files = Vec<(String, Vec<u8>)>;

struct Parts {
    files: Files,
    header: Header,
    log_key: LogKey,
}

fn envelope(key: &SecretKey, statement: &Statement) -> Vec<u8> {
    let payload = serde_json::to_vec(statement).expect("json");
    Bundle::sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, &payload)
        .expect("sign")
        .to_json()
        .into_bytes()
}

fn parts() -> Parts {
    let key = SecretKey::generate(Algorithm::EcdsaP256).expect("key");
    let digest: [u8; 32] = Sha256::digest(ARTIFACT).into();
    let sha = hex::encode(digest);
    let name = "hello-service.tar.gz";
    let provenance = Statement::slsa(
        vec![subject(name, &sha)],
        &Provenance {
            build_definition: BuildDefinition {
                build_type: maestro_sign::provenance::MAESTRO_BUILD_TYPE.into(),
                external_parameters: json!({}),
                internal_parameters: serde_json::Value::Null,
                resolved_dependencies: vec![],
            },
            run_details: RunDetails {
                builder: Builder {
                    id: "https://ci.example.com/1".into(),
                    version: Default::default(),
                },
                metadata: BuildMetadata::default(),
                byproducts: vec![],
            },
        },
    );
    let sbom = evidence::sbom_statement(
        vec![subject(name, &sha)],
        json!({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": []}),
    )
    .expect("sbom");
    let (log_key, _) = LogKey::generate("conductor.example/audit").expect("log key");
    let mut log = Log::open_in_memory().expect("log");
    let mut items = Vec::new();
    for action in ["release.cut", "deploy.promoted", "release.released"] {
        let r = log
            .append(
                &log_key,
                &NewEntry {
                    actor: maestro_audit::Actor {
                        id: "conductor".into(),
                        via: "controller".into(),
                    },
                    action: action.into(),
                    target: "release:hello-service/1.1.0".into(),
                    params: json!({}),
                    reason: Some("weekly".into()),
                    result: maestro_audit::Outcome::Success,
                    links: maestro_audit::Links::default(),
                    tenant: None,
                },
            )
            .expect("append");
        items.push(r.index);
    }
    let size = log.size().expect("size");
    let audit: Vec<AuditItem> = items
        .iter()
        .map(|&i| {
            let (_, body) = log.entry(i).expect("entry");
            AuditItem {
                index: i,
                body: String::from_utf8(body).expect("utf-8"),
                proof: log.prove(i, Some(size)).expect("proof"),
            }
        })
        .collect();
    let release = json!({"status": "released", "progress": {"stages": [
        {"environment": "stage", "deployment": 3}, {"environment": "prod", "deployment": 4}]}});
    let files = vec![
        ("release.json".to_owned(), serde_json::to_vec(&release).expect("json")),
        ("notes.md".to_owned(), b"## 1.1.0\n".to_vec()),
        (
            "gates.json".to_owned(),
            serde_json::to_vec(&json!({"run": {"run": {"id": 7, "status": "succeeded"}}, "gates": [{"gate": "test", "green": true, "jobs": [["unit", "succeeded"]]}]})).expect("json"),
        ),
        (
            format!("artifact/{name}.sigstore.json"),
            Bundle::sign_artifact(&key, &digest, None).expect("sign").to_json().into_bytes(),
        ),
        (format!("artifact/{name}.intoto.sigstore.json"), envelope(&key, &provenance)),
        (format!("artifact/{name}.sbom.sigstore.json"), envelope(&key, &sbom)),
        ("artifact/keys/0.pub".to_owned(), key.public().to_pem().into_bytes()),
        (
            "sbom.json".to_owned(),
            serde_json::to_vec(&json!({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": []})).expect("json"),
        ),
        ("canary/stage.json".to_owned(), br#"{"id": 3}"#.to_vec()),
        ("canary/prod.json".to_owned(), br#"{"id": 4}"#.to_vec()),
        ("audit/entries.json".to_owned(), serde_json::to_vec(&audit).expect("json")),
    ];
    Parts {
        files,
        header: Header {
            service: "hello-service".into(),
            version: "1.1.0".into(),
            commit: "a".repeat(40),
            artifact: format!("sha256:{sha}"),
            status: "released".into(),
            created_at: "2026-12-03T10:00:00Z".into(),
        },
        log_key,
    }
}

fn build(p: &Parts) -> Vec<u8> {
    write(p.header.clone(), p.files.clone(), |text| {
        p.log_key.sign_note(text).map_err(|e| e.to_string())
    })
    .expect("write")
}

fn failing(report: &maestro_evidence::Report) -> Vec<(String, String)> {
    report
        .checks
        .iter()
        .filter(|c| !c.ok)
        .map(|c| (c.name.clone(), c.detail.clone()))
        .collect()
}

#[test]
fn a_complete_bundle_verifies_offline_with_the_log_key() {
    let p = parts();
    let bytes = build(&p);
    assert_eq!(bytes, build(&p), "deterministic");
    let trust = Trust::new(&[p.log_key.vkey()]).expect("trust");
    let b = read(&bytes).expect("read");
    let report = verify(&b, &trust, Some(ARTIFACT));
    assert!(report.ok(), "{:?}", failing(&report));
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "manifest signature",
            "file digests",
            "artifact evidence",
            "sbom document",
            "gates",
            "audit entries",
            "canary reports"
        ]
    );
    assert!(
        report.checks[5].detail.starts_with("3 entries"),
        "{:?}",
        report.checks[5]
    );
}

#[test]
fn each_kind_of_tampering_is_named() {
    let p = parts();
    let trust = Trust::new(&[p.log_key.vkey()]).expect("trust");
    let bundle = read(&build(&p)).expect("read");

    // Another key: nothing inside is trusted, and the report stops there.
    let (stranger, _) = LogKey::generate("other.example/audit").expect("key");
    let r = verify(
        &bundle,
        &Trust::new(&[stranger.vkey()]).expect("trust"),
        None,
    );
    assert_eq!(failing(&r)[0].0, "manifest signature");
    assert_eq!(r.checks.len(), 2);

    // A file changed after signing.
    let mut b = bundle.clone();
    b.files
        .insert("notes.md".into(), b"## 1.1.0 (edited)\n".to_vec());
    assert_eq!(
        failing(&verify(&b, &trust, None)),
        [(
            "file digests".to_owned(),
            "notes.md does not match its digest".to_owned()
        )]
    );

    // A manifest rewritten to match: its signature no longer does.
    let mut b = bundle.clone();
    b.manifest_bytes.extend_from_slice(b" ");
    assert!(
        failing(&verify(&b, &trust, None))[0]
            .1
            .contains("another manifest")
    );

    // A gate that was red, an audit entry edited, a canary report missing — each signed
    // consistently by the key (as a compromised writer would), each still named.
    let resign = |change: &dyn Fn(&mut Files)| {
        let mut q = Parts {
            files: p.files.clone(),
            header: p.header.clone(),
            log_key: p.log_key.clone(),
        };
        change(&mut q.files);
        verify(&read(&build(&q)).expect("read"), &trust, None)
    };
    let r = resign(&|f| {
        f[2].1 = serde_json::to_vec(&json!({"gates": [{"gate": "test", "green": false}]}))
            .expect("json");
    });
    assert_eq!(
        failing(&r),
        [("gates".to_owned(), "not green: test".to_owned())]
    );
    let r = resign(&|f| {
        let text = String::from_utf8(f[10].1.clone())
            .expect("utf-8")
            .replace("weekly", "Weekly");
        f[10].1 = text.into_bytes();
    });
    assert!(
        failing(&r)[0]
            .1
            .contains("the entry's hash is not the proof's leaf"),
        "{:?}",
        failing(&r)
    );
    let r = resign(&|f| {
        f[7].1 = br#"{"bomFormat": "CycloneDX", "components": [{"name": "left-pad"}]}"#.to_vec();
    });
    assert_eq!(
        failing(&r),
        [(
            "sbom document".to_owned(),
            "sbom.json is not the SBOM the attestation signs".to_owned()
        )]
    );
    let r = resign(&|f| f.retain(|(path, _)| path != "canary/prod.json"));
    assert_eq!(
        failing(&r),
        [(
            "canary reports".to_owned(),
            "canary/prod.json is missing".to_owned()
        )]
    );
    let r = resign(&|f| f.retain(|(path, _)| !path.ends_with(".sbom.sigstore.json")));
    assert!(failing(&r)[0].1.contains("sbom"), "{:?}", failing(&r));

    // The artifact given is not the one released.
    let r = verify(&bundle, &trust, Some(b"something else"));
    assert!(
        failing(&r)[0]
            .1
            .starts_with("the given artifact is sha256:"),
        "{:?}",
        failing(&r)
    );
}

#[test]
fn unsafe_or_oversized_archives_are_refused() {
    let p = parts();
    let bad = write(p.header.clone(), vec![("../x".into(), vec![])], |t| {
        Ok(t.to_owned())
    });
    assert!(
        bad.expect_err("refused")
            .to_string()
            .contains("`../x` is not a relative path")
    );
    assert!(read(b"not a gzip").is_err());
    let mut tampered = build(&p);
    tampered.truncate(tampered.len() / 2);
    assert!(read(&tampered).is_err());
}
