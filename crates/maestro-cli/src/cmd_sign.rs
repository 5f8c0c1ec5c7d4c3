//! `maestro keys|sign|attest|verify`.

use std::path::{Path, PathBuf};

use maestro_sign::bundle::Bundle;
use maestro_sign::dsse::IN_TOTO_PAYLOAD_TYPE;
use maestro_sign::evidence::{self, Kind, Outcome, Trust, Wanted};
use maestro_sign::keys::{MAX_ED25519_MESSAGE, MAX_KEY_FILE};
use maestro_sign::provenance::{DEFAULT_BUILDER_ID, ResourceDescriptor, Statement, subject};
use maestro_sign::verify::Policy;
use maestro_sign::{Algorithm, PublicKey, SecretKey, SignError};
use maestro_store::{JobRow, Store as _};
use zeroize::Zeroizing;

use crate::args::{AttestArgs, KeyAlgorithm, KeysCommand, SignArgs, VerifyArgs};
use crate::exit::{self, Failure};
use crate::settings;

const PASSWORD_VARS: [&str; 2] = ["MAESTRO_KEY_PASSWORD", "COSIGN_PASSWORD"];

/// The key password from the environment; `None` when neither variable is set.
fn password() -> Option<Zeroizing<String>> {
    PASSWORD_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok())
        .map(Zeroizing::new)
}

fn sign_failure(err: SignError, what: &Path) -> Failure {
    let hint = match &err {
        SignError::PasswordRequired => {
            "set MAESTRO_KEY_PASSWORD (or COSIGN_PASSWORD) to the key's password".to_owned()
        }
        SignError::WrongPassword => {
            "check MAESTRO_KEY_PASSWORD (or COSIGN_PASSWORD); it takes precedence in that order"
                .to_owned()
        }
        SignError::KeyFormat(_) | SignError::UnsupportedKey(_) => format!(
            "{} must be a key written by `maestro keys generate`, cosign, or a PKCS#8 PEM",
            what.display()
        ),
        _ => format!("while reading {}", what.display()),
    };
    let mut f = Failure::env(err, &hint);
    f.code = exit::USAGE;
    f
}

fn verify_failure(err: &SignError, artifact: &Path) -> Failure {
    Failure {
        code: exit::PIPELINE_FAILED,
        report: miette::miette!(
            help = "do not deploy this artifact; rebuild and sign it in the pipeline, or check the key and bundle paths",
            "verification of {} failed: {err}",
            artifact.display()
        ),
    }
}

fn load_secret(path: &Path) -> Result<SecretKey, Failure> {
    let pem = maestro_sign::read_limited(path, MAX_KEY_FILE).map_err(|e| sign_failure(e, path))?;
    let pass = password();
    SecretKey::from_pem(&pem, pass.as_ref().map(|p| p.as_bytes()))
        .map_err(|e| sign_failure(e, path))
}

fn load_public(path: &Path) -> Result<PublicKey, Failure> {
    let pem = maestro_sign::read_limited(path, MAX_KEY_FILE).map_err(|e| sign_failure(e, path))?;
    PublicKey::from_pem(&pem).map_err(|e| sign_failure(e, path))
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), Failure> {
    maestro_sign::write_atomic(path, bytes, mode)
        .map_err(|e| Failure::env(e, "check that the directory exists and is writable"))
}

fn refuse_overwrite(paths: &[&Path], force: bool) -> Result<(), Failure> {
    if force {
        return Ok(());
    }
    if let Some(p) = paths.iter().find(|p| p.exists()) {
        return Err(Failure::usage(
            format!("{} already exists", p.display()),
            "pass --force to replace it, or choose another --output-key-prefix",
        ));
    }
    Ok(())
}

/// Writes PREFIX.key (encrypted) and PREFIX.pub.
fn write_key_pair(key: &SecretKey, prefix: &str, force: bool) -> Result<u8, Failure> {
    let private = PathBuf::from(format!("{prefix}.key"));
    let public = PathBuf::from(format!("{prefix}.pub"));
    refuse_overwrite(&[&private, &public], force)?;
    if let Some(dir) = private.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Failure::env(
                e,
                &format!(
                    "cannot create {}; choose a writable --output-key-prefix",
                    dir.display()
                ),
            )
        })?;
    }
    let Some(pass) = password() else {
        return Err(Failure::usage(
            "no password for the private key",
            "set MAESTRO_KEY_PASSWORD (or COSIGN_PASSWORD); an empty value encrypts with the empty password, as cosign does",
        ));
    };
    let pem = key
        .to_encrypted_pem(pass.as_bytes())
        .map_err(|e| sign_failure(e, &private))?;
    write(&private, pem.as_bytes(), 0o600)?;
    write(&public, key.public().to_pem().as_bytes(), 0o644)?;
    println!(
        "wrote {} (private, encrypted) and {} ({}, key id {})",
        private.display(),
        public.display(),
        key.algorithm(),
        key.public().key_id()
    );
    Ok(exit::OK)
}

pub(crate) fn keys(command: &KeysCommand) -> Result<u8, Failure> {
    match command {
        KeysCommand::Generate {
            algorithm,
            output_key_prefix,
            force,
            if_missing,
        } => {
            let existing = PathBuf::from(format!("{output_key_prefix}.key"));
            if *if_missing && existing.is_file() {
                eprintln!("{} exists; keeping it", existing.display());
                return Ok(exit::OK);
            }
            let alg = match algorithm {
                KeyAlgorithm::EcdsaP256 => Algorithm::EcdsaP256,
                KeyAlgorithm::Ed25519 => Algorithm::Ed25519,
            };
            let key = SecretKey::generate(alg)
                .map_err(|e| Failure::env(e, "the system's random source is unavailable"))?;
            write_key_pair(&key, output_key_prefix, *force)
        }
        KeysCommand::Import {
            key,
            output_key_prefix,
            force,
        } => write_key_pair(&load_secret(key)?, output_key_prefix, *force),
        KeysCommand::Export { key, output } => {
            let pem = load_secret(key)?
                .to_pkcs8_pem()
                .map_err(|e| sign_failure(e, key))?;
            match output {
                Some(out) => {
                    write(out, pem.as_bytes(), 0o600)?;
                    eprintln!("wrote {} (unencrypted PKCS#8)", out.display());
                }
                None => print!("{}", pem.as_str()),
            }
            Ok(exit::OK)
        }
        KeysCommand::Public { key } => {
            let public = match load_public(key) {
                Ok(k) => k,
                Err(_) => load_secret(key)?.public(),
            };
            print!("{}", public.to_pem());
            eprintln!("{} key id {}", public.algorithm(), public.key_id());
            Ok(exit::OK)
        }
    }
}

/// An artifact's digest and, when the key needs the whole message, its bytes.
struct Loaded {
    path: PathBuf,
    sha256: [u8; 32],
    bytes: Option<Vec<u8>>,
}

fn load_artifact(path: &Path, needs_bytes: bool) -> Result<Loaded, Failure> {
    let usage = |e: SignError| {
        let mut f = Failure::env(e, "pass the path of an existing, readable file");
        f.code = exit::USAGE;
        f
    };
    if !path.is_file() {
        return Err(Failure::usage(
            format!("no file at {}", path.display()),
            "pass the path of the artifact to sign or verify",
        ));
    }
    let (sha256, _) = maestro_sign::sha256_file(path).map_err(usage)?;
    let bytes = if needs_bytes {
        Some(maestro_sign::read_limited(path, MAX_ED25519_MESSAGE).map_err(usage)?)
    } else {
        None
    };
    Ok(Loaded {
        path: path.to_owned(),
        sha256,
        bytes,
    })
}

pub(crate) fn sign(args: &SignArgs) -> Result<u8, Failure> {
    if args.bundle.is_some() && args.artifacts.len() > 1 {
        return Err(Failure::usage(
            "--bundle names one file, but several artifacts were given",
            "drop --bundle to write ARTIFACT.sigstore.json beside each artifact",
        ));
    }
    let key = load_secret(&args.key)?;
    let needs_bytes = key.algorithm() == Algorithm::Ed25519;
    for path in &args.artifacts {
        let a = load_artifact(path, needs_bytes)?;
        let bundle = Bundle::sign_artifact(&key, &a.sha256, a.bytes.as_deref())
            .map_err(|e| sign_failure(e, &args.key))?;
        let out = args
            .bundle
            .clone()
            .unwrap_or_else(|| Kind::Signature.bundle_path(path));
        write(&out, bundle.to_json().as_bytes(), 0o644)?;
        println!(
            "signed {} sha256:{} -> {}",
            a.path.display(),
            hex::encode(a.sha256),
            out.display()
        );
    }
    Ok(exit::OK)
}

/// The job of `run` that recorded every artifact among its outputs, or the named job
/// (which must have recorded them).
fn building_job<'a>(
    jobs: &'a [JobRow],
    named: Option<&str>,
    digests: &[(String, String)],
    run: i64,
) -> Result<&'a JobRow, Failure> {
    let has_all = |j: &JobRow| {
        digests
            .iter()
            .all(|(_, d)| j.artifacts.iter().any(|a| &a.digest == d))
    };
    let found = match named {
        Some(name) => {
            let Some(job) = jobs.iter().find(|j| j.name == name) else {
                return Err(Failure::usage(
                    format!("run {run} has no job `{name}`"),
                    format!(
                        "its jobs: {}",
                        jobs.iter()
                            .map(|j| j.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            has_all(job).then_some(job)
        }
        None => jobs.iter().find(|j| has_all(j)),
    };
    let Some(job) = found else {
        let list = digests
            .iter()
            .map(|(p, d)| format!("{p} (sha256:{d})"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Failure {
            code: exit::PIPELINE_FAILED,
            report: miette::miette!(
                help = "attest only what the pipeline built: declare the file in the job's `outputs`, and attest it before anything modifies it",
                "{list}: not among the outputs {} recorded in run {run}",
                named.map_or_else(|| "any job".to_owned(), |n| format!("job `{n}`"))
            ),
        });
    };
    if job.status != "succeeded" {
        return Err(Failure {
            code: exit::PIPELINE_FAILED,
            report: miette::miette!(
                help = "only a succeeded job's outputs get provenance",
                "job `{}` of run {run} {}",
                job.name,
                job.status
            ),
        });
    }
    Ok(job)
}

/// The largest SBOM attested: its base64 in a bundle stays under the bundle limit.
const MAX_SBOM_BYTES: u64 = 11 * 1024 * 1024;

/// The statement's subjects: each artifact's file name and sha256.
fn subjects(artifacts: &[PathBuf], digests: &[(String, String)]) -> Vec<ResourceDescriptor> {
    artifacts
        .iter()
        .zip(digests)
        .map(|(p, (_, d))| {
            let name = p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            );
            subject(&name, d)
        })
        .collect()
}

/// Signs `statement` and writes the bundle to `output`, or beside every artifact.
fn write_statement(
    key: &SecretKey,
    key_path: &Path,
    statement: &Statement,
    artifacts: &[PathBuf],
    output: Option<&Path>,
    kind: Kind,
) -> Result<Vec<PathBuf>, Failure> {
    let payload = serde_json::to_vec(statement).unwrap_or_default();
    let bundle = Bundle::sign_envelope(key, IN_TOTO_PAYLOAD_TYPE, &payload)
        .map_err(|e| sign_failure(e, key_path))?;
    let json = bundle.to_json();
    let outs: Vec<PathBuf> = match output {
        Some(o) => vec![o.to_owned()],
        None => artifacts.iter().map(|a| kind.bundle_path(a)).collect(),
    };
    for out in &outs {
        write(out, json.as_bytes(), 0o644)?;
    }
    Ok(outs)
}

fn shown(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn attest_sbom(
    args: &AttestArgs,
    sbom: &Path,
    key: &SecretKey,
    digests: &[(String, String)],
) -> Result<u8, Failure> {
    let bytes = maestro_sign::read_limited(sbom, MAX_SBOM_BYTES).map_err(|e| {
        Failure::usage(
            e.to_string(),
            "pass the SBOM `maestro sbom` wrote (at most 11 MiB)",
        )
    })?;
    let document: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
        Failure::usage(
            format!("{}: not JSON: {e}", sbom.display()),
            "pass a CycloneDX or SPDX JSON document, e.g. from `maestro sbom`",
        )
    })?;
    let statement = evidence::sbom_statement(subjects(&args.artifacts, digests), document)
        .map_err(|e| {
            Failure::usage(
                format!("{}: {e}", sbom.display()),
                "pass a CycloneDX or SPDX JSON document, e.g. from `maestro sbom`",
            )
        })?;
    let outs = write_statement(
        key,
        &args.key,
        &statement,
        &args.artifacts,
        args.output.as_deref(),
        Kind::Sbom,
    )?;
    println!(
        "attested the SBOM {} ({}) of {} artifact(s) -> {}",
        sbom.display(),
        statement.predicate_type,
        args.artifacts.len(),
        shown(&outs)
    );
    Ok(exit::OK)
}

pub(crate) fn attest(args: &AttestArgs) -> Result<u8, Failure> {
    let key = load_secret(&args.key)?;
    let mut digests = Vec::new();
    for path in &args.artifacts {
        let a = load_artifact(path, false)?;
        digests.push((path.display().to_string(), hex::encode(a.sha256)));
    }
    if let Some(sbom) = &args.sbom {
        return attest_sbom(args, sbom, &key, &digests);
    }
    let paths = settings::paths(&args.common);
    let mut store = crate::open_store(&paths)?;
    let env = |e| Failure::env(e, "the store is .maestro/store.db");
    let run = match args.run {
        Some(r) => r,
        None => store.latest_run().map_err(env)?.ok_or_else(|| {
            Failure::usage(
                "no run recorded yet",
                "`maestro run` builds the artifacts first",
            )
        })?,
    };
    let detail = store.run_detail(run).map_err(env)?;
    let job = building_job(&detail.jobs, args.job.as_deref(), &digests, run)?;
    let ingredients = match &job.cache_key {
        Some(k) => store
            .cache_get(k)
            .map_err(env)?
            .and_then(|e| serde_json::from_str::<maestro_cache::Ingredients>(&e.ingredients).ok()),
        None => None,
    };
    let root = Path::new(&detail.root);
    let source = maestro_engine::evidence::source(
        root,
        detail.run.commit.as_deref(),
        detail.run.branch.as_deref(),
    );
    let builder = args.builder_id.as_deref().unwrap_or(DEFAULT_BUILDER_ID);
    let mut provenance = maestro_engine::evidence::job_provenance(
        &detail,
        job,
        ingredients.as_ref(),
        &source,
        builder,
    );
    // Inside `maestro run --server`, the run as the conductor knows it: a release cut
    // trusts the gates of exactly this run, which the signature binds to the artifact.
    if let Some(id) = std::env::var("MAESTRO_CONDUCTOR_RUN")
        .ok()
        .and_then(|v| v.parse::<i64>().ok())
    {
        provenance.build_definition.internal_parameters["conductorRun"] =
            serde_json::Value::from(id);
    }
    let statement = Statement::slsa(subjects(&args.artifacts, &digests), &provenance);
    let outs = write_statement(
        &key,
        &args.key,
        &statement,
        &args.artifacts,
        args.output.as_deref(),
        Kind::Provenance,
    )?;
    println!(
        "attested {} artifact(s) built by job `{}` of run {run} -> {}",
        args.artifacts.len(),
        job.name,
        shown(&outs)
    );
    Ok(exit::OK)
}

pub(crate) fn verify(args: &VerifyArgs) -> Result<u8, Failure> {
    let keys = args
        .key
        .iter()
        .map(|k| load_public(k))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(artifact) = args.artifact.as_deref() else {
        return Err(Failure::usage(
            "no artifact to verify",
            "maestro verify ARTIFACT --key KEY, or maestro verify bundle FILE --key VKEY",
        ));
    };
    load_artifact(artifact, false)?;
    let mut required = Vec::new();
    for r in &args.require {
        required.push(
            Kind::parse(r)
                .map_err(|e| Failure::usage(e, "e.g. --require signature,provenance,sbom"))?,
        );
    }
    let policy = Policy {
        builder_id: args.builder_id.clone(),
        source_uri: args.source_uri.clone(),
        predicate_type: None,
    };
    let policy_set = policy.builder_id.is_some() || policy.source_uri.is_some();
    let explicit = |k: Kind| match k {
        Kind::Signature => args.bundle.clone(),
        Kind::Provenance => args.attestation.clone(),
        Kind::Sbom => args.sbom_bundle.clone(),
    };
    let wanted: Vec<Wanted> = Kind::ALL
        .iter()
        .map(|&kind| {
            let given = explicit(kind);
            let required = required.contains(&kind)
                || given.is_some()
                || (required.is_empty() && kind == Kind::Signature)
                || (kind == Kind::Provenance && policy_set);
            Wanted {
                kind,
                bundle: given.unwrap_or_else(|| kind.bundle_path(artifact)),
                required,
            }
        })
        .collect();
    let name = artifact.display().to_string();
    let trust = Trust { keys, policy };
    let report = evidence::check_bundles(artifact, &name, &trust, &wanted)
        .map_err(|e| verify_failure(&e, artifact))?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        for e in &report.evidence {
            if let Outcome::Verified(v) = &e.outcome {
                let what = match (e.kind, &v.builder_id) {
                    (Kind::Provenance, Some(b)) => format!("provenance: built by {b}"),
                    (Kind::Sbom, _) => {
                        format!("SBOM: {}", v.predicate_type.as_deref().unwrap_or_default())
                    }
                    (k, _) => k.to_string(),
                };
                println!(
                    "ok {what}: {} sha256:{} ({} key {})",
                    v.artifact,
                    v.sha256,
                    v.algorithm,
                    &v.key_id[..16.min(v.key_id.len())]
                );
            }
        }
    }
    if report.ok() {
        return Ok(exit::OK);
    }
    Err(Failure {
        code: exit::PIPELINE_FAILED,
        report: miette::miette!(
            help = "do not deploy this artifact; rebuild, sign and attest it in the pipeline, or check the key and bundle paths",
            "verification of {} failed:\n  {}",
            artifact.display(),
            report.describe_problems().join("\n  ")
        ),
    })
}
