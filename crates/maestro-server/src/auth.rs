//! API tokens: `mst_` followed by 32 random bytes (base64url). Only the SHA-256 of a
//! secret is stored; a request presents it as `Authorization: Bearer mst_…`.

use base64::Engine as _;
use maestro_store::TokenRow;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The longest a token may live: 400 days (create a new one to rotate).
pub const MAX_TOKEN_LIFETIME_MS: i64 = 400 * 86_400 * 1000;

/// Prefix of every secret, so secret scanners (ours included) recognise a leaked one.
pub const PREFIX: &str = "mst_";

/// The tenant whose actors keep their bare names.
pub const DEFAULT_TENANT: &str = "default";

/// The roles the built-in policy knows; a token may hold only configured roles (these,
/// unless the configuration's `roles` says otherwise).
pub const BUILTIN_ROLES: &[&str] = &["viewer", "developer", "operator", "admin", "auditor"];

/// The id an actor has everywhere it is recorded (audit entries, deployments, releases):
/// the name it was given in the default tenant, `<tenant>/<name>` in any other, so no
/// tenant's admin can mint a name another tenant's actor has. Names given over the API
/// may not contain `/` (see [`check_actor_name`]).
#[must_use]
pub fn actor_id(tenant: &str, name: &str) -> String {
    if tenant == DEFAULT_TENANT {
        name.to_owned()
    } else {
        format!("{tenant}/{name}")
    }
}

/// Whether `name` may be a new token's actor: no `/` (the tenant separator of
/// [`actor_id`]) and none of the conductor's own actors (`conductor`, `train:…`).
///
/// # Errors
/// Why not, for a person.
pub fn check_actor_name(name: &str) -> Result<(), String> {
    if name.contains('/') {
        return Err(format!(
            "actor `{name}` contains `/`, which separates a tenant from a name: use e.g. user:alice or ci:shop"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if lower == "conductor" || lower.starts_with("conductor:") || lower.starts_with("train:") {
        return Err(format!(
            "actor `{name}` is reserved for the conductor's own actions: use e.g. user:alice or ci:shop"
        ));
    }
    Ok(())
}

/// Who a request acts as, and what it may be used for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    pub id: String,
    pub roles: Vec<String>,
    pub teams: Vec<String>,
    pub tenant: String,
    pub scopes: Vec<String>,
    /// How it authenticated (`token:tok_…`).
    pub via: String,
}

impl Actor {
    /// Whether the credential allows `scope` (`runs:read`); `*` allows everything.
    #[must_use]
    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == "*" || s == scope)
    }
}

/// Why a request is not authenticated. The message never contains the secret.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error(
        "no credentials: send `Authorization: Bearer <token>` (create one with `maestro token create`)"
    )]
    Missing,
    #[error("the Authorization header is not `Bearer mst_…` nor `Bearer <JWT>`")]
    Malformed,
    #[error("the token is not known to this conductor")]
    Unknown,
    #[error("token {0} was revoked")]
    Revoked(String),
    #[error("token {0} expired")]
    Expired(String),
    #[error("OIDC token refused: {0}")]
    Jwt(String),
}

/// What a request presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Credential<'a> {
    /// An API token secret (`mst_…`).
    Token(&'a str),
    /// A JWT from an OIDC issuer.
    Jwt(&'a str),
}

/// The stored form of a secret.
#[must_use]
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// A new secret and the row to store for it: `template`'s name, actor and attributes,
/// with a fresh id and hash, created now and expiring after `ttl_ms`. The secret is shown
/// once and never again.
///
/// # Errors
/// When the operating system has no randomness to give.
pub fn issue(
    template: &TokenRow,
    ttl_ms: i64,
    now_ms: i64,
) -> Result<(String, TokenRow), getrandom::Error> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)?;
    let mut id = [0u8; 8];
    getrandom::fill(&mut id)?;
    let secret = format!(
        "{PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let row = TokenRow {
        id: format!("tok_{}", hex::encode(id)),
        hash: hash_secret(&secret),
        created_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(ttl_ms),
        revoked_at_ms: None,
        ..template.clone()
    };
    Ok((secret, row))
}

/// The credential of an `Authorization` header value: an API token, or something shaped
/// like a JWT (three base64url parts, at most [`crate::oidc::MAX_TOKEN`] bytes).
///
/// # Errors
/// [`AuthError::Missing`] or [`AuthError::Malformed`].
pub fn bearer(header: Option<&str>) -> Result<Credential<'_>, AuthError> {
    let h = header.ok_or(AuthError::Missing)?;
    let (scheme, rest) = h.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Malformed);
    }
    credential(rest.trim())
}

/// What kind of credential `secret` is (a header's or the console's sign-in form's).
///
/// # Errors
/// [`AuthError::Malformed`] for anything else.
pub fn credential(secret: &str) -> Result<Credential<'_>, AuthError> {
    if secret.starts_with(PREFIX) && secret.len() <= 128 {
        return Ok(Credential::Token(secret));
    }
    let b64url = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    let parts: Vec<&str> = secret.split('.').collect();
    if secret.len() <= crate::oidc::MAX_TOKEN
        && parts.len() == 3
        && !parts[0].is_empty()
        && !parts[1].is_empty()
        && parts.iter().all(|p| b64url(p))
    {
        return Ok(Credential::Jwt(secret));
    }
    Err(AuthError::Malformed)
}

/// The actor of a stored token, if it is still valid at `now_ms`.
///
/// # Errors
/// [`AuthError::Unknown`], [`AuthError::Revoked`] or [`AuthError::Expired`].
pub fn actor_of(row: Option<TokenRow>, now_ms: i64) -> Result<Actor, AuthError> {
    let t = row.ok_or(AuthError::Unknown)?;
    if t.revoked_at_ms.is_some() {
        return Err(AuthError::Revoked(t.id));
    }
    if t.expires_at_ms <= now_ms {
        return Err(AuthError::Expired(t.id));
    }
    Ok(Actor {
        id: actor_id(&t.tenant, &t.actor),
        roles: t.roles,
        teams: t.teams,
        tenant: t.tenant,
        scopes: t.scopes,
        via: format!("token:{}", t.id),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_stored_only_as_its_hash() {
        let (secret, row) = issue(&TokenRow::default(), 10, 5).expect("issue");
        assert!(
            secret.starts_with(PREFIX) && secret.len() == 4 + 43,
            "{secret}"
        );
        assert_eq!(row.hash, hash_secret(&secret));
        assert!(!row.hash.contains(&secret[4..]));
        assert_eq!(row.expires_at_ms, 15);
        let (other, _) = issue(&TokenRow::default(), 10, 5).expect("issue");
        assert_ne!(secret, other);
    }

    #[test]
    fn headers_are_parsed_strictly() {
        assert_eq!(bearer(None), Err(AuthError::Missing));
        assert_eq!(bearer(Some("Basic abc")), Err(AuthError::Malformed));
        assert_eq!(bearer(Some("Bearer abc")), Err(AuthError::Malformed));
        assert_eq!(bearer(Some("bearer mst_x")), Ok(Credential::Token("mst_x")));
        assert_eq!(
            bearer(Some("Bearer eyJh.eyJi.sig-_")),
            Ok(Credential::Jwt("eyJh.eyJi.sig-_"))
        );
        assert_eq!(bearer(Some("Bearer a.b")), Err(AuthError::Malformed));
        assert_eq!(bearer(Some("Bearer a.b.c d")), Err(AuthError::Malformed));
        assert_eq!(bearer(Some("Bearer a.b+.c")), Err(AuthError::Malformed));
        let long = format!("Bearer a.{}.c", "b".repeat(crate::oidc::MAX_TOKEN));
        assert_eq!(bearer(Some(&long)), Err(AuthError::Malformed));
    }

    #[test]
    fn actors_of_other_tenants_are_namespaced_and_reserved_names_refused() {
        let row = |tenant: &str| TokenRow {
            actor: "user:alice".into(),
            tenant: tenant.into(),
            expires_at_ms: 100,
            ..TokenRow::default()
        };
        assert_eq!(
            actor_of(Some(row("default")), 1).expect("valid").id,
            "user:alice"
        );
        assert_eq!(
            actor_of(Some(row("globex")), 1).expect("valid").id,
            "globex/user:alice"
        );
        for bad in ["acme/user:alice", "conductor", "Conductor:x", "train:hello"] {
            assert!(check_actor_name(bad).is_err(), "{bad}");
        }
        assert!(check_actor_name("user:alice@example.com").is_ok());
    }

    #[test]
    fn revoked_and_expired_tokens_are_refused_by_id() {
        let row = TokenRow {
            id: "tok_1".into(),
            expires_at_ms: 100,
            ..TokenRow::default()
        };
        assert!(actor_of(Some(row.clone()), 99).is_ok());
        assert_eq!(
            actor_of(Some(row.clone()), 100),
            Err(AuthError::Expired("tok_1".into()))
        );
        let revoked = TokenRow {
            revoked_at_ms: Some(1),
            ..row
        };
        assert_eq!(
            actor_of(Some(revoked), 50),
            Err(AuthError::Revoked("tok_1".into()))
        );
        assert_eq!(actor_of(None, 50), Err(AuthError::Unknown));
    }
}
