//! The log's signing key and checkpoints in the C2SP signed-note format.
//!
//! Keys are Ed25519 in the signed-note text encodings that transparency-log tooling and
//! witnesses read: the private key `PRIVATE+KEY+<name>+<id>+<base64>` and the verifier key
//! `<name>+<id>+<base64>`; the key name is the log's origin.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};
use zeroize::Zeroizing;

use crate::AuditError;

/// Whether `origin` can name a log (and its key): non-empty, no spaces or `+`.
#[must_use]
pub fn valid_origin(origin: &str) -> bool {
    signed_note::is_key_name_valid(origin) && origin.len() <= 256
}

/// A signing key for one log.
#[derive(Clone)]
pub struct LogKey {
    signer: StandardSigner,
    vkey: String,
    origin: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogKey").field("vkey", &self.vkey).finish()
    }
}

impl LogKey {
    /// A new key for the log named `origin`; returns it with its private encoding (write
    /// that to a file only the log's writer can read).
    ///
    /// # Errors
    /// When `origin` is not a valid key name, or randomness is unavailable.
    pub fn generate(origin: &str) -> Result<(LogKey, Zeroizing<String>), AuditError> {
        if !valid_origin(origin) {
            return Err(AuditError::Key(format!(
                "`{origin}` cannot name a log: use a non-empty name without spaces or `+`, like `example.com/audit`"
            )));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice())
            .map_err(|e| AuditError::Key(format!("no randomness for a key: {e}")))?;
        let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
        let mut public = vec![1u8];
        public.extend_from_slice(sk.verifying_key().as_bytes());
        let id = signed_note::key_id(origin, &public);
        let mut private = Zeroizing::new(vec![1u8]);
        private.extend_from_slice(seed.as_slice());
        let skey = Zeroizing::new(format!(
            "PRIVATE+KEY+{origin}+{id:08x}+{}",
            B64.encode(private.as_slice())
        ));
        let key = LogKey::parse(&skey)?;
        Ok((key, skey))
    }

    /// Reads a private key in signed-note encoding.
    ///
    /// # Errors
    /// When the text is not such a key (the error never contains the text).
    pub fn parse(skey: &str) -> Result<LogKey, AuditError> {
        let skey = skey.trim();
        let signer = StandardSigner::new(skey).map_err(|e| {
            AuditError::Key(format!(
                "not a signed-note private key ({e}); expected `PRIVATE+KEY+<name>+<id>+<base64>`"
            ))
        })?;
        let origin = signed_note::Signer::name(&signer).to_owned();
        // The verifier key is the public half: derive it from the seed.
        let rest = skey.splitn(5, '+').nth(4).unwrap_or_default();
        let raw = Zeroizing::new(
            B64.decode(rest)
                .map_err(|_| AuditError::Key("malformed private key".to_owned()))?,
        );
        let seed: [u8; 32] = raw
            .get(1..)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| AuditError::Key("malformed private key".to_owned()))?;
        let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
        let mut public = vec![1u8];
        public.extend_from_slice(sk.verifying_key().as_bytes());
        let vkey = format!(
            "{origin}+{:08x}+{}",
            signed_note::key_id(&origin, &public),
            B64.encode(&public)
        );
        Ok(LogKey {
            signer,
            vkey,
            origin,
        })
    }

    /// The verifier (public) key, `<name>+<id>+<base64>`.
    #[must_use]
    pub fn vkey(&self) -> &str {
        &self.vkey
    }

    /// The log this key signs for.
    #[must_use]
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// Signs a checkpoint for a tree of `size` leaves with head `root`, with this key and
    /// any `also` (during a key rotation, old and new key both sign).
    ///
    /// # Errors
    /// When signing fails.
    pub fn sign_checkpoint(
        &self,
        size: u64,
        root: Hash,
        also: &[&LogKey],
    ) -> Result<String, AuditError> {
        let cp = Checkpoint::new(&self.origin, size, root, "")
            .map_err(|e| AuditError::Key(e.to_string()))?;
        let mut note =
            Note::new(&cp.to_bytes(), &[]).map_err(|e| AuditError::Key(e.to_string()))?;
        let mut signers: Vec<&dyn signed_note::Signer> = vec![&self.signer];
        signers.extend(also.iter().map(|k| &k.signer as &dyn signed_note::Signer));
        note.add_sigs(&signers)
            .map_err(|e| AuditError::Key(e.to_string()))?;
        String::from_utf8(note.to_bytes()).map_err(|e| AuditError::Key(e.to_string()))
    }
}

impl LogKey {
    /// Signs `text` (lines ending in `\n`, not a checkpoint) as a C2SP signed note: how
    /// the conductor vouches for other documents, such as a release's evidence manifest,
    /// with the key auditors already trust for the log.
    ///
    /// # Errors
    /// When `text` cannot be a note's text.
    pub fn sign_note(&self, text: &str) -> Result<String, AuditError> {
        if Checkpoint::from_bytes(text.as_bytes()).is_ok() {
            return Err(AuditError::Key(
                "a document signed with the log key must not read as a checkpoint".to_owned(),
            ));
        }
        let mut note =
            Note::new(text.as_bytes(), &[]).map_err(|e| AuditError::Key(e.to_string()))?;
        note.add_sigs(&[&self.signer as &dyn signed_note::Signer])
            .map_err(|e| AuditError::Key(e.to_string()))?;
        String::from_utf8(note.to_bytes()).map_err(|e| AuditError::Key(e.to_string()))
    }
}

/// Verifier keys an auditor trusts.
#[derive(Clone, Default)]
pub struct Trust {
    keys: Vec<StandardVerifier>,
    texts: Vec<String>,
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.texts).finish()
    }
}

/// A verified checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// `name+id` of each key whose signature verified.
    pub signers: Vec<String>,
}

impl Trust {
    /// Trust in the given verifier keys.
    ///
    /// # Errors
    /// Names the first key that is not a signed-note verifier key.
    pub fn new<S: AsRef<str>>(vkeys: &[S]) -> Result<Trust, AuditError> {
        let mut t = Trust::default();
        for k in vkeys {
            t.add(k.as_ref())?;
        }
        Ok(t)
    }

    /// Adds a verifier key.
    ///
    /// # Errors
    /// When `vkey` is not a signed-note Ed25519 verifier key.
    pub fn add(&mut self, vkey: &str) -> Result<(), AuditError> {
        let vkey = vkey.trim();
        if self.texts.iter().any(|t| t == vkey) {
            return Ok(());
        }
        let v = StandardVerifier::new(vkey).map_err(|e| {
            AuditError::Key(format!(
                "`{vkey}` is not a verifier key ({e}); expected `<name>+<id>+<base64>` as `maestro audit key` prints"
            ))
        })?;
        self.keys.push(v);
        self.texts.push(vkey.to_owned());
        Ok(())
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The trusted keys, as given.
    #[must_use]
    pub fn keys(&self) -> &[String] {
        &self.texts
    }

    /// Checks a signed checkpoint: at least one trusted key signed it, every signature
    /// by a trusted key is valid, and the text is a checkpoint.
    ///
    /// # Errors
    /// Says which of these failed.
    pub fn verify(&self, note: &str) -> Result<Verified, String> {
        let parsed =
            Note::from_bytes(note.as_bytes()).map_err(|e| format!("not a signed note: {e}"))?;
        let list = self.verifiers();
        let (ok, _) = parsed.verify(&list).map_err(|e| match e {
            signed_note::NoteError::UnverifiedNote => {
                "no signature by a trusted key (was the log key rotated without a `key.rotate` entry, or is this another log?)".to_owned()
            }
            other => other.to_string(),
        })?;
        let cp = Checkpoint::from_bytes(parsed.text())
            .map_err(|e| format!("the signed text is not a checkpoint: {e}"))?;
        let signers = ok
            .iter()
            .map(|s| format!("{}+{:08x}", s.name(), s.id()))
            .collect();
        Ok(Verified {
            origin: cp.origin().to_owned(),
            size: cp.size(),
            root: *cp.hash(),
            signers,
        })
    }
}

impl Trust {
    fn verifiers(&self) -> VerifierList {
        VerifierList::new(
            self.keys
                .iter()
                .map(|k| Box::new(k.clone()) as Box<dyn signed_note::Verifier>)
                .collect(),
        )
    }

    /// Checks a signed note that is not a checkpoint (see [`LogKey::sign_note`]): a trusted
    /// key signed it and every trusted signature is valid. Returns its text.
    ///
    /// # Errors
    /// Says what failed.
    pub fn verify_note(&self, note: &str) -> Result<String, String> {
        let parsed =
            Note::from_bytes(note.as_bytes()).map_err(|e| format!("not a signed note: {e}"))?;
        let list = self.verifiers();
        parsed.verify(&list).map_err(|e| match e {
            signed_note::NoteError::UnverifiedNote => "no signature by a trusted key".to_owned(),
            other => other.to_string(),
        })?;
        String::from_utf8(parsed.text().to_vec()).map_err(|e| e.to_string())
    }
}

/// Parses an unsigned checkpoint's text out of a signed note (no verification).
///
/// # Errors
/// When it is not a note holding a checkpoint.
pub fn peek(note: &str) -> Result<(u64, Hash), String> {
    let parsed =
        Note::from_bytes(note.as_bytes()).map_err(|e| format!("not a signed note: {e}"))?;
    let cp = Checkpoint::from_bytes(parsed.text()).map_err(|e| e.to_string())?;
    Ok((cp.size(), *cp.hash()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_are_signed_as_notes_and_never_as_checkpoints() {
        let (key, _) = LogKey::generate("example.com/audit").expect("key");
        let (other, _) = LogKey::generate("example.com/other").expect("key");
        let note = key
            .sign_note("maestro.evidence/v1\nsha256:00\n")
            .expect("sign");
        let trust = Trust::new(&[key.vkey()]).expect("trust");
        assert_eq!(
            trust.verify_note(&note).expect("verifies"),
            "maestro.evidence/v1\nsha256:00\n"
        );
        let tampered = note.replace("sha256:00", "sha256:01");
        assert!(trust.verify_note(&tampered).is_err());
        let stranger = Trust::new(&[other.vkey()]).expect("trust");
        assert!(
            stranger
                .verify_note(&note)
                .expect_err("untrusted")
                .contains("no signature by a trusted key")
        );
        // A checkpoint's text is refused: a signed document can never pass for one.
        assert!(
            key.sign_note("example.com/audit\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n")
                .is_err()
        );
        // And a signed document is not a checkpoint.
        assert!(trust.verify(&note).is_err());
    }

    #[test]
    fn generated_keys_round_trip_and_sign() {
        let (key, skey) = LogKey::generate("example.com/audit").expect("key");
        assert!(skey.starts_with("PRIVATE+KEY+example.com/audit+"));
        let again = LogKey::parse(&skey).expect("parse");
        assert_eq!(again.vkey(), key.vkey());
        let root = tlog_tiles::record_hash(b"x");
        let note = key.sign_checkpoint(1, root, &[]).expect("sign");
        assert!(note.starts_with("example.com/audit\n1\n"));
        assert!(note.contains("\n\n\u{2014} example.com/audit "));
        let trust = Trust::new(&[key.vkey()]).expect("trust");
        let v = trust.verify(&note).expect("verify");
        assert_eq!((v.size, v.root), (1, root));

        let (other, _) = LogKey::generate("example.com/audit").expect("key");
        let err = Trust::new(&[other.vkey()])
            .expect("trust")
            .verify(&note)
            .expect_err("untrusted");
        assert!(err.contains("trusted key"), "{err}");

        let tampered = note.replacen("\n1\n", "\n2\n", 1);
        assert!(trust.verify(&tampered).is_err());
    }

    #[test]
    fn rotation_checkpoints_carry_both_signatures() {
        let (old, _) = LogKey::generate("log").expect("key");
        let (new, _) = LogKey::generate("log").expect("key");
        let note = new
            .sign_checkpoint(3, tlog_tiles::EMPTY_HASH, &[&old])
            .expect("sign");
        for k in [&old, &new] {
            let v = Trust::new(&[k.vkey()])
                .expect("trust")
                .verify(&note)
                .expect("verify");
            assert_eq!(v.signers.len(), 1);
        }
    }

    #[test]
    fn bad_keys_are_explained_without_echoing_secrets() {
        let err = LogKey::parse("PRIVATE+KEY+x+00000000+c2VjcmV0").expect_err("bad");
        assert!(!err.to_string().contains("c2VjcmV0"), "{err}");
        let err = Trust::new(&["nonsense"]).expect_err("bad");
        assert!(err.to_string().contains("maestro audit key"), "{err}");
        assert!(LogKey::generate("has space").is_err());
    }
}
