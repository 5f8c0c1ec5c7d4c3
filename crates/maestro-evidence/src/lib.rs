//! Release evidence bundles: one gzip-compressed tar per release holding everything an
//! auditor needs to check it offline — the release record and notes, the commit's gate
//! results and test reports, waivers used, the artifact's signature, provenance and signed
//! SBOM with the keys they verify against, the canary reports, and the release's audit log
//! entries with inclusion proofs against a signed checkpoint — and a manifest of every
//! file's SHA-256, signed by the conductor's audit log key as a C2SP signed note.
//!
//! [`write`] builds a bundle (deterministic: sorted entries, fixed modes and times);
//! [`read`] opens one with limits on every size; [`verify`] checks it against the log's
//! verifier key and says, check by check, what holds.

use std::collections::BTreeMap;
use std::io::{Read as _, Write as _};
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest as _, Sha256};

/// The bundle format, first line of the signed manifest note.
pub const FORMAT: &str = "maestro.evidence/v1";
/// The largest bundle read (compressed).
pub const MAX_BUNDLE_BYTES: u64 = 256 << 20;
/// The largest file inside, and all of them together, uncompressed.
pub const MAX_FILE_BYTES: u64 = 64 << 20;
pub const MAX_TOTAL_BYTES: u64 = 512 << 20;
/// The most files a bundle holds.
pub const MAX_FILES: usize = 10_000;

pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
/// The SBOM itself, as the signed SBOM attestation carries it (for auditors' tools).
pub const SBOM: &str = "sbom.json";

/// The SBOM document inside a signed SBOM attestation (a Sigstore bundle holding a DSSE
/// envelope whose in-toto statement's predicate is the SBOM). Reads only: the signature is
/// checked by [`verify`].
///
/// # Errors
/// When the bundle does not hold such a statement.
pub fn sbom_of(attestation: &[u8]) -> Result<Value, String> {
    use base64::Engine as _;
    let bundle = maestro_sign::bundle::Bundle::parse(attestation).map_err(|e| e.to_string())?;
    let envelope = bundle
        .dsse_envelope
        .ok_or("the SBOM attestation holds no DSSE envelope")?;
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope.payload.as_bytes())
        .map_err(|e| format!("the envelope's payload is not base64: {e}"))?;
    let statement: Value =
        serde_json::from_slice(&payload).map_err(|e| format!("the statement: {e}"))?;
    match statement.get("predicate") {
        Some(p) if p.is_object() => Ok(p.clone()),
        _ => Err("the statement has no predicate".to_owned()),
    }
}

/// A problem writing or reading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error("{0}")]
    Format(String),
    #[error("{0}")]
    Sign(String),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// What the bundle is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub service: String,
    pub version: String,
    pub commit: String,
    /// `sha256:<hex>` of the released artifact.
    pub artifact: String,
    /// The release's status when the bundle was made (`released`, `rolled_back`, …).
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
}

/// The manifest: the header and every other file's digest and size.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    #[serde(flatten)]
    pub header: Header,
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub path: String,
    /// Lowercase hex.
    pub sha256: String,
    pub size: u64,
}

/// A bundle read back.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub signature: String,
    /// Every file but the manifest and its signature.
    pub files: BTreeMap<String, Vec<u8>>,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// The text the conductor signs: the format, what it is about, and the manifest's digest.
#[must_use]
pub fn signed_text(header: &Header, manifest: &[u8]) -> String {
    format!(
        "{FORMAT}\n{} {} {}\nsha256:{}\n",
        header.service,
        header.version,
        header.artifact,
        sha256_hex(manifest)
    )
}

/// A path inside a bundle: relative, `/`-separated, plain components.
fn check_path(p: &str) -> Result<(), String> {
    let ok = !p.is_empty()
        && p.len() <= 255
        && !p.contains('\\')
        && Path::new(p)
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(format!("`{p}` is not a relative path of plain components"))
    }
}

/// Builds the bundle: `files` (path, bytes), a manifest of them, and the manifest's
/// signature by `sign` (text → signed note).
///
/// # Errors
/// A bad or repeated path, a file over the limits, or a signing failure.
pub fn write(
    header: Header,
    files: Vec<(String, Vec<u8>)>,
    sign: impl FnOnce(&str) -> Result<String, String>,
) -> Result<Vec<u8>, EvidenceError> {
    let mut sorted: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (path, bytes) in files {
        check_path(&path).map_err(EvidenceError::Format)?;
        if path == MANIFEST || path == SIGNATURE {
            return Err(EvidenceError::Format(format!("`{path}` is reserved")));
        }
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(EvidenceError::Format(format!(
                "`{path}` is larger than {MAX_FILE_BYTES} bytes"
            )));
        }
        if sorted.insert(path.clone(), bytes).is_some() {
            return Err(EvidenceError::Format(format!("`{path}` is there twice")));
        }
    }
    if sorted.len() > MAX_FILES {
        return Err(EvidenceError::Format(format!(
            "more than {MAX_FILES} files"
        )));
    }
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        files: sorted
            .iter()
            .map(|(path, b)| FileEntry {
                path: path.clone(),
                sha256: sha256_hex(b),
                size: b.len() as u64,
            })
            .collect(),
        header,
    };
    let mut manifest_bytes =
        serde_json::to_vec_pretty(&manifest).map_err(|e| EvidenceError::Format(e.to_string()))?;
    manifest_bytes.push(b'\n');
    let signature =
        sign(&signed_text(&manifest.header, &manifest_bytes)).map_err(EvidenceError::Sign)?;
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let io = |source| EvidenceError::Io {
        path: "bundle".to_owned(),
        source,
    };
    let mut add = |path: &str, bytes: &[u8]| -> Result<(), EvidenceError> {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, path, bytes).map_err(io)
    };
    add(MANIFEST, &manifest_bytes)?;
    add(SIGNATURE, signature.as_bytes())?;
    for (path, bytes) in &sorted {
        add(path, bytes)?;
    }
    let gz = tar.into_inner().map_err(io)?;
    gz.finish().map_err(io)
}

/// Writes `bytes` to `path` atomically (a temporary file beside it, synced, renamed).
///
/// # Errors
/// When the directory cannot be written.
pub fn write_file(path: &Path, bytes: &[u8]) -> Result<(), EvidenceError> {
    let io = |source| EvidenceError::Io {
        path: path.display().to_string(),
        source,
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."));
    let mut tmp = tempfile_in(dir).map_err(io)?;
    tmp.1.write_all(bytes).map_err(io)?;
    tmp.1.sync_all().map_err(io)?;
    std::fs::rename(&tmp.0, path).map_err(io)?;
    Ok(())
}

fn tempfile_in(dir: &Path) -> std::io::Result<(std::path::PathBuf, std::fs::File)> {
    for i in 0..100u32 {
        let p = dir.join(format!(".evidence-{}-{i}.tmp", std::process::id()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
        {
            Ok(f) => return Ok((p, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("no temporary file name is free"))
}

/// Opens a bundle: regular files only, safe paths, each path once, every size limited.
///
/// # Errors
/// Names what is wrong with the archive.
pub fn read(bytes: &[u8]) -> Result<Bundle, EvidenceError> {
    let bad = |m: String| EvidenceError::Format(m);
    if bytes.len() as u64 > MAX_BUNDLE_BYTES {
        return Err(bad(format!("larger than {MAX_BUNDLE_BYTES} bytes")));
    }
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    let mut files: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut total = 0u64;
    for entry in archive
        .entries()
        .map_err(|e| bad(format!("not a gzip'd tar: {e}")))?
    {
        let entry = entry.map_err(|e| bad(format!("not a gzip'd tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("an entry's path: {e}")))?
            .to_string_lossy()
            .into_owned();
        check_path(&path).map_err(bad)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(bad(format!("`{path}` is not a regular file")));
        }
        let size = entry.header().size().map_err(|e| bad(e.to_string()))?;
        total = total.saturating_add(size);
        if size > MAX_FILE_BYTES || total > MAX_TOTAL_BYTES || files.len() >= MAX_FILES {
            return Err(bad(format!(
                "`{path}`: over the limits ({MAX_FILE_BYTES} bytes a file, {MAX_TOTAL_BYTES} in all, {MAX_FILES} files)"
            )));
        }
        let mut buf = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        entry
            .take(size)
            .read_to_end(&mut buf)
            .map_err(|e| bad(format!("`{path}`: {e}")))?;
        if files.insert(path.clone(), buf).is_some() {
            return Err(bad(format!("`{path}` is in the archive twice")));
        }
    }
    let manifest_bytes = files
        .remove(MANIFEST)
        .ok_or_else(|| bad(format!("no {MANIFEST}: not an evidence bundle")))?;
    let signature = files
        .remove(SIGNATURE)
        .ok_or_else(|| bad(format!("no {SIGNATURE}: the manifest is not signed")))?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|e| bad(format!("{MANIFEST}: {e}")))?;
    if manifest.format != FORMAT {
        return Err(bad(format!(
            "{MANIFEST}: format `{}` is not {FORMAT}",
            manifest.format
        )));
    }
    Ok(Bundle {
        manifest,
        manifest_bytes,
        signature: String::from_utf8(signature)
            .map_err(|_| bad(format!("{SIGNATURE} is not UTF-8")))?,
        files,
    })
}

/// One check of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub service: String,
    pub version: String,
    pub commit: String,
    pub artifact: String,
    pub status: String,
    pub checks: Vec<Check>,
}

impl Report {
    #[must_use]
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

fn check(name: &str, r: Result<String, String>) -> Check {
    match r {
        Ok(detail) => Check {
            name: name.to_owned(),
            ok: true,
            detail,
        },
        Err(detail) => Check {
            name: name.to_owned(),
            ok: false,
            detail,
        },
    }
}

fn json_file(b: &Bundle, path: &str) -> Result<Value, String> {
    let bytes = b
        .files
        .get(path)
        .ok_or_else(|| format!("{path} is missing"))?;
    serde_json::from_slice(bytes).map_err(|e| format!("{path}: {e}"))
}

/// Checks a bundle offline against the conductor's audit log verifier key(s) `trust`:
/// the manifest's signature, every file's digest, the artifact's signature, provenance and
/// SBOM against the keys in the bundle (vouched for by the signed manifest), the gates, the
/// audit entries' inclusion proofs against the signed checkpoint, and the canary reports.
/// With `artifact`, also that it is the artifact the bundle is about.
#[must_use]
pub fn verify(b: &Bundle, trust: &maestro_audit::Trust, artifact: Option<&[u8]>) -> Report {
    let h = &b.manifest.header;
    let mut checks = Vec::new();
    let signed = trust.verify_note(&b.signature).and_then(|text| {
        if text == signed_text(h, &b.manifest_bytes) {
            Ok(format!(
                "the manifest is signed by a trusted key ({} files)",
                b.manifest.files.len()
            ))
        } else {
            Err("the signature is for another manifest".to_owned())
        }
    });
    let signed_ok = signed.is_ok();
    checks.push(check("manifest signature", signed));
    checks.push(check("file digests", digests(b)));
    if !signed_ok {
        // Nothing inside is vouched for: the other checks would trust what nobody signed.
        return report(b, checks);
    }
    checks.push(check("artifact evidence", artifact_evidence(b, artifact)));
    checks.push(check("sbom document", sbom_document(b)));
    checks.push(check("gates", gates(b)));
    checks.push(check("audit entries", audit(b, trust)));
    checks.push(check("canary reports", canaries(b)));
    report(b, checks)
}

fn report(b: &Bundle, checks: Vec<Check>) -> Report {
    let h = &b.manifest.header;
    Report {
        service: h.service.clone(),
        version: h.version.clone(),
        commit: h.commit.clone(),
        artifact: h.artifact.clone(),
        status: h.status.clone(),
        checks,
    }
}

fn digests(b: &Bundle) -> Result<String, String> {
    let mut problems = Vec::new();
    for f in &b.manifest.files {
        match b.files.get(&f.path) {
            None => problems.push(format!("{} is missing", f.path)),
            Some(bytes) if sha256_hex(bytes) != f.sha256 || bytes.len() as u64 != f.size => {
                problems.push(format!("{} does not match its digest", f.path));
            }
            Some(_) => {}
        }
    }
    for p in b.files.keys() {
        if !b.manifest.files.iter().any(|f| f.path == *p) {
            problems.push(format!("{p} is not in the manifest"));
        }
    }
    if problems.is_empty() {
        Ok(format!("{} files match", b.manifest.files.len()))
    } else {
        Err(problems.join("; "))
    }
}

fn artifact_evidence(b: &Bundle, artifact: Option<&[u8]>) -> Result<String, String> {
    use maestro_sign::evidence::{Kind, Trust};
    let hex_digest = b
        .manifest
        .header
        .artifact
        .strip_prefix("sha256:")
        .ok_or_else(|| {
            format!(
                "artifact `{}` is not sha256:<hex>",
                b.manifest.header.artifact
            )
        })?;
    let digest: [u8; 32] = hex::decode(hex_digest)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| format!("artifact `{hex_digest}` is not a SHA-256"))?;
    if let Some(bytes) = artifact
        && Sha256::digest(bytes).as_slice() != digest
    {
        return Err(format!(
            "the given artifact is sha256:{}, not the released {}",
            sha256_hex(bytes),
            b.manifest.header.artifact
        ));
    }
    let mut keys = Vec::new();
    let mut bundles = Vec::new();
    let mut name = String::new();
    for (path, bytes) in b.files.range("artifact/".to_owned()..) {
        let Some(rest) = path.strip_prefix("artifact/") else {
            break;
        };
        if let Some(key) = rest.strip_prefix("keys/") {
            let k = maestro_sign::PublicKey::from_pem(bytes)
                .map_err(|e| format!("artifact/keys/{key}: {e}"))?;
            keys.push(k);
        } else if let Some(n) = rest.strip_suffix(Kind::Provenance.suffix()) {
            bundles.push((Kind::Provenance, bytes.clone()));
            name = n.to_owned();
        } else if let Some(n) = rest.strip_suffix(Kind::Sbom.suffix()) {
            bundles.push((Kind::Sbom, bytes.clone()));
            name = n.to_owned();
        } else if let Some(n) = rest.strip_suffix(Kind::Signature.suffix()) {
            bundles.push((Kind::Signature, bytes.clone()));
            name = n.to_owned();
        }
    }
    if keys.is_empty() {
        return Err("no trusted key under artifact/keys/".to_owned());
    }
    let trust = Trust {
        keys,
        policy: maestro_sign::verify::Policy::default(),
    };
    let report = maestro_sign::evidence::check_digest(digest, artifact, &name, &trust, &bundles);
    let problems = report.describe_problems();
    if problems.is_empty() {
        Ok(format!(
            "signature, provenance and SBOM attestation of {name} verify for {}",
            b.manifest.header.artifact
        ))
    } else {
        Err(problems.join("; "))
    }
}

/// `sbom.json` is the predicate of the SBOM attestation [`artifact_evidence`] verified.
fn sbom_document(b: &Bundle) -> Result<String, String> {
    let attestation = b
        .files
        .iter()
        .find(|(p, _)| {
            p.starts_with("artifact/") && p.ends_with(maestro_sign::evidence::Kind::Sbom.suffix())
        })
        .map(|(_, bytes)| bytes)
        .ok_or("no SBOM attestation under artifact/")?;
    let signed = sbom_of(attestation)?;
    let shown = json_file(b, SBOM)?;
    if shown != signed {
        return Err(format!("{SBOM} is not the SBOM the attestation signs"));
    }
    let components = signed["components"]
        .as_array()
        .or_else(|| signed["packages"].as_array())
        .map_or(0, Vec::len);
    let format = signed["bomFormat"]
        .as_str()
        .or_else(|| signed["spdxVersion"].as_str())
        .unwrap_or("SBOM");
    Ok(format!(
        "{SBOM} is the signed {format} document ({components} components)"
    ))
}

fn gates(b: &Bundle) -> Result<String, String> {
    let g = json_file(b, "gates.json")?;
    let gates = g["gates"].as_array().ok_or("gates.json: no `gates` list")?;
    if gates.is_empty() && g["run"]["run"]["status"] != "succeeded" {
        return Err("no gate was checked and the run did not succeed".to_owned());
    }
    let red: Vec<String> = gates
        .iter()
        .filter(|x| x["green"] != true)
        .map(|x| x["gate"].as_str().unwrap_or("?").to_owned())
        .collect();
    if red.is_empty() {
        Ok(format!(
            "{} gate(s) green at {} (run {})",
            gates.len(),
            b.manifest.header.commit.get(..12).unwrap_or_default(),
            g["run"]["run"]["id"]
        ))
    } else {
        Err(format!("not green: {}", red.join(", ")))
    }
}

/// One audit entry in `audit/entries.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuditItem {
    pub index: u64,
    /// The entry's canonical JSON, exactly as the log hashed it.
    pub body: String,
    pub proof: maestro_audit::InclusionProof,
}

fn audit(b: &Bundle, trust: &maestro_audit::Trust) -> Result<String, String> {
    let bytes = b
        .files
        .get("audit/entries.json")
        .ok_or("audit/entries.json is missing")?;
    let items: Vec<AuditItem> =
        serde_json::from_slice(bytes).map_err(|e| format!("audit/entries.json: {e}"))?;
    if items.is_empty() {
        return Err("no audit entry".to_owned());
    }
    for it in &items {
        if it.proof.index != it.index {
            return Err(format!(
                "entry {}: the proof is for entry {}",
                it.index, it.proof.index
            ));
        }
        maestro_audit::check_inclusion(&it.proof, it.body.as_bytes(), trust)
            .map_err(|e| format!("entry {}: {e}", it.index))?;
    }
    Ok(format!(
        "{} entries, each proven in the signed log",
        items.len()
    ))
}

fn canaries(b: &Bundle) -> Result<String, String> {
    let r = json_file(b, "release.json")?;
    let mut n = 0;
    for s in r["progress"]["stages"].as_array().into_iter().flatten() {
        if s["deployment"].is_null() {
            continue;
        }
        let env = s["environment"].as_str().unwrap_or("?");
        let report = json_file(b, &format!("canary/{env}.json"))?;
        if report["id"] != s["deployment"] {
            return Err(format!(
                "canary/{env}.json is deployment {}, the release's is {}",
                report["id"], s["deployment"]
            ));
        }
        n += 1;
    }
    Ok(format!("{n} canary report(s)"))
}
