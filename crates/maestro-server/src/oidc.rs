//! OIDC: a JWT from a trusted issuer (a CI system's workload identity, a company IdP) is
//! a credential, verified against the issuer's JWKS (a file, or a URL fetched and kept
//! fresh), and mapped to an [`Actor`] by the issuer's configuration.
//!
//! What is checked, in order: the token's size and shape; its `iss` names a configured
//! issuer; the key its header names (`kid`) is in that issuer's key set (an unknown `kid`
//! refetches the set, at most every 30 s, so key rotation just works); the algorithm is
//! one the key's type signs with — never `none`, never HMAC (a public key set has no
//! shared secrets, which closes the classic RS256→HS256 confusion) and, when the key
//! states `alg`, exactly that; the signature; `iss`, `aud`, `exp` (required) and `nbf`
//! with the configured leeway; the claims the issuer's `require` table pins. Only then are
//! claims mapped to the actor.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::ServerError;
use crate::auth::{Actor, AuthError};

/// The longest JWT accepted (bytes).
pub const MAX_TOKEN: usize = 8 * 1024;

/// The largest key set read from a file or URL.
const MAX_JWKS: u64 = 256 * 1024;

/// How long a JWKS fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One `[[oidc]]` table as written.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IssuerSettings {
    pub issuer: Option<String>,
    pub audience: Option<String>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub refresh_seconds: Option<u64>,
    pub refetch_seconds: Option<u64>,
    pub leeway_seconds: Option<u64>,
    pub actor_claim: Option<String>,
    pub actor_prefix: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    pub roles_claim: Option<String>,
    #[serde(default)]
    pub teams: Vec<String>,
    pub teams_claim: Option<String>,
    pub tenant: Option<String>,
    pub tenant_claim: Option<String>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub require: BTreeMap<String, String>,
}

/// Where an issuer's keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    File(PathBuf),
    Url(String),
}

/// Where the actor's tenant comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tenant {
    Fixed(String),
    Claim(String),
}

/// A validated issuer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issuer {
    pub issuer: String,
    pub audience: String,
    pub keys: KeySource,
    /// How old the key set may get before it is fetched again.
    pub refresh: Duration,
    /// The least time between two fetches (an unknown `kid`, a failed fetch).
    pub refetch: Duration,
    pub leeway_seconds: u64,
    pub actor_claim: String,
    pub actor_prefix: String,
    pub roles: Vec<String>,
    pub roles_claim: Option<String>,
    pub teams: Vec<String>,
    pub teams_claim: Option<String>,
    pub tenant: Tenant,
    pub scopes: Vec<String>,
    pub require: BTreeMap<String, String>,
}

/// `https://…`, or `http://` to a loopback host (a local IdP in development and tests),
/// judged on the parsed URL: its scheme and host, never its text. A URL with a user or
/// password (`http://127.0.0.1:80@idp.example/…` names the host `idp.example`) is refused.
fn secure_url(text: &str) -> bool {
    // A backslash is a slash to a WHATWG parser and not to every HTTP client: refused, as
    // is anything a parser would strip (spaces, control characters).
    if text
        .chars()
        .any(|c| c == '\\' || c.is_whitespace() || c.is_control())
    {
        return false;
    }
    let Ok(url) = url::Url::parse(text) else {
        return false;
    };
    if !url.username().is_empty() || url.password().is_some() {
        return false;
    }
    match (url.scheme(), url.host()) {
        ("https", Some(_)) => true,
        ("http", Some(url::Host::Domain(d))) => d.eq_ignore_ascii_case("localhost"),
        ("http", Some(url::Host::Ipv4(ip))) => ip.is_loopback(),
        ("http", Some(url::Host::Ipv6(ip))) => ip.is_loopback(),
        _ => false,
    }
}

impl IssuerSettings {
    /// Checks every field of `oidc[index]`; a relative `jwks_file` is relative to `base`.
    ///
    /// # Errors
    /// [`ServerError::Config`] naming `oidc[index].field` and how to fix it.
    pub fn validate(self, index: usize, base: &std::path::Path) -> Result<Issuer, ServerError> {
        let bad = |field: &str, message: String| ServerError::Config {
            source_name: format!("oidc[{index}].{field}"),
            message,
        };
        let nonempty = |field: &str, v: Option<String>| {
            v.filter(|s| !s.trim().is_empty())
                .ok_or_else(|| bad(field, "is missing".to_owned()))
        };
        let issuer = nonempty("issuer", self.issuer)?;
        if !secure_url(&issuer) {
            return Err(bad(
                "issuer",
                format!(
                    "`{issuer}` is not an https:// URL (http:// only to 127.0.0.1 or localhost)"
                ),
            ));
        }
        let audience = nonempty("audience", self.audience)?;
        let keys = match (self.jwks_file, self.jwks_url) {
            (Some(f), None) => KeySource::File(if f.is_relative() { base.join(f) } else { f }),
            (None, Some(u)) if secure_url(&u) => KeySource::Url(u),
            (None, Some(u)) => {
                return Err(bad(
                    "jwks_url",
                    format!(
                        "`{u}` is not an https:// URL (http:// only to 127.0.0.1 or localhost)"
                    ),
                ));
            }
            _ => {
                return Err(bad(
                    "jwks_file",
                    "give exactly one of jwks_file (a JWKS document) and jwks_url".to_owned(),
                ));
            }
        };
        let tenant = match (self.tenant, self.tenant_claim) {
            (Some(t), None) if !t.is_empty() => Tenant::Fixed(t),
            (None, Some(c)) if !c.is_empty() => Tenant::Claim(c),
            _ => {
                return Err(bad(
                    "tenant",
                    "give exactly one of tenant (every actor's) and tenant_claim (the claim that names it)"
                        .to_owned(),
                ));
            }
        };
        if self.scopes.is_empty() {
            return Err(bad(
                "scopes",
                "is empty: list what these tokens may be used for, e.g. [\"runs:read\"] (deny by default)"
                    .to_owned(),
            ));
        }
        let refresh = self.refresh_seconds.unwrap_or(900);
        if !(60..=86_400).contains(&refresh) {
            return Err(bad(
                "refresh_seconds",
                format!("{refresh} is out of range: use 60 to 86400"),
            ));
        }
        let refetch = self.refetch_seconds.unwrap_or(30);
        if !(1..=3600).contains(&refetch) {
            return Err(bad(
                "refetch_seconds",
                format!("{refetch} is out of range: use 1 to 3600"),
            ));
        }
        let leeway_seconds = self.leeway_seconds.unwrap_or(60);
        if leeway_seconds > 300 {
            return Err(bad(
                "leeway_seconds",
                format!("{leeway_seconds} is more than 300"),
            ));
        }
        Ok(Issuer {
            issuer,
            audience,
            keys,
            refresh: Duration::from_secs(refresh),
            refetch: Duration::from_secs(refetch),
            leeway_seconds,
            actor_claim: self.actor_claim.unwrap_or_else(|| "sub".to_owned()),
            actor_prefix: self.actor_prefix.unwrap_or_else(|| "oidc:".to_owned()),
            roles: self.roles,
            roles_claim: self.roles_claim,
            teams: self.teams,
            teams_claim: self.teams_claim,
            tenant,
            scopes: self.scopes,
            require: self.require,
        })
    }
}

/// An issuer's current keys.
#[derive(Default)]
struct Keys {
    set: Option<Arc<JwkSet>>,
    fetched: Option<Instant>,
    attempted: Option<Instant>,
}

struct Trusted {
    issuer: Issuer,
    keys: Mutex<Keys>,
    /// One fetch at a time per issuer.
    fetching: tokio::sync::Mutex<()>,
}

/// The configured issuers and their keys.
pub struct Oidc {
    trusted: Vec<Trusted>,
}

impl std::fmt::Debug for Oidc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.trusted.iter().map(|t| &t.issuer.issuer))
            .finish()
    }
}

fn jwt_error(message: impl Into<String>) -> AuthError {
    AuthError::Jwt(message.into())
}

/// Reads a key set, keeping only signing keys of the types we verify.
fn parse_jwks(text: &str, origin: &str) -> Result<JwkSet, String> {
    let mut set: JwkSet = serde_json::from_str(text)
        .map_err(|e| format!("{origin} is not a JWKS document ({{\"keys\": [...]}}): {e}"))?;
    set.keys.retain(|k| {
        !matches!(k.algorithm, AlgorithmParameters::OctetKey(_))
            && k.common
                .public_key_use
                .as_ref()
                .is_none_or(|u| *u == PublicKeyUse::Signature)
    });
    Ok(set)
}

fn fetch(url: &str) -> Result<JwkSet, String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(FETCH_TIMEOUT))
        .max_redirects(0)
        .build()
        .into();
    let mut resp = agent
        .get(url)
        .header("Accept", "application/json")
        .call()
        .map_err(|e| format!("fetching {url}: {e}"))?;
    let text = resp
        .body_mut()
        .with_config()
        .limit(MAX_JWKS)
        .read_to_string()
        .map_err(|e| format!("reading {url}: {e}"))?;
    parse_jwks(&text, url)
}

/// The algorithms a key may sign with: by its type, narrowed to its `alg` when it has one.
fn algorithms_of(jwk: &Jwk) -> Vec<Algorithm> {
    use Algorithm::{ES256, ES384, EdDSA, PS256, PS384, PS512, RS256, RS384, RS512};
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![RS256, RS384, RS512, PS256, PS384, PS512],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![ES256],
            EllipticCurve::P384 => vec![ES384],
            _ => Vec::new(),
        },
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => vec![EdDSA],
        _ => Vec::new(),
    };
    match jwk.common.key_algorithm {
        Some(stated) => {
            let stated = Algorithm::from_str(&stated.to_string()).ok();
            by_type.into_iter().filter(|a| Some(*a) == stated).collect()
        }
        None => by_type,
    }
}

/// A claim as a list of strings: an array of strings, or a space-separated string (as
/// OAuth's `scope`).
fn strings(claims: &Map<String, Value>, name: &str) -> Result<Vec<String>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) => Ok(s.split_whitespace().map(str::to_owned).collect()),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| jwt_error(format!("claim `{name}` is not a list of strings")))
            })
            .collect(),
        Some(_) => Err(jwt_error(format!(
            "claim `{name}` is not a string or a list of strings"
        ))),
    }
}

fn text_claim(claims: &Map<String, Value>, name: &str) -> Result<String, AuthError> {
    match claims.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::Number(n)) => Ok(n.to_string()),
        _ => Err(jwt_error(format!("claim `{name}` is missing or empty"))),
    }
}

#[derive(Deserialize)]
struct Unverified {
    iss: Option<String>,
}

impl Oidc {
    /// The issuers, with file key sets read now (a bad file fails the start). URL key sets
    /// are fetched at the first token from that issuer.
    ///
    /// # Errors
    /// [`ServerError::Config`] naming the issuer and the file.
    pub fn load(issuers: &[Issuer]) -> Result<Oidc, ServerError> {
        let mut trusted = Vec::new();
        for (i, issuer) in issuers.iter().enumerate() {
            let mut keys = Keys::default();
            if let KeySource::File(path) = &issuer.keys {
                let bad = |message: String| ServerError::Config {
                    source_name: format!("oidc[{i}].jwks_file"),
                    message,
                };
                let meta = std::fs::metadata(path)
                    .map_err(|e| bad(format!("{} cannot be read: {e}", path.display())))?;
                if meta.len() > MAX_JWKS {
                    return Err(bad(format!(
                        "{} is larger than {MAX_JWKS} bytes",
                        path.display()
                    )));
                }
                let text = std::fs::read_to_string(path)
                    .map_err(|e| bad(format!("{} cannot be read: {e}", path.display())))?;
                let set = parse_jwks(&text, &path.display().to_string()).map_err(bad)?;
                if set.keys.is_empty() {
                    return Err(bad(format!("{} holds no signing key", path.display())));
                }
                keys.set = Some(Arc::new(set));
                keys.fetched = Some(Instant::now());
            }
            trusted.push(Trusted {
                issuer: issuer.clone(),
                keys: Mutex::new(keys),
                fetching: tokio::sync::Mutex::new(()),
            });
        }
        Ok(Oidc { trusted })
    }

    /// Whether any issuer is configured.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.trusted.is_empty()
    }

    /// The actor a JWT stands for.
    ///
    /// # Errors
    /// [`AuthError::Jwt`] saying which check failed (never the token itself).
    pub async fn verify(&self, token: &str) -> Result<Actor, AuthError> {
        if token.len() > MAX_TOKEN {
            return Err(jwt_error(format!(
                "the token is longer than {MAX_TOKEN} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| jwt_error(format!("the token's header is not a JWT header: {e}")))?;
        let iss = jsonwebtoken::dangerous::insecure_decode_claims::<Unverified>(token)
            .map_err(|e| jwt_error(format!("the token's claims are not JSON: {e}")))?
            .iss
            .ok_or_else(|| jwt_error("the token has no `iss` claim"))?;
        let trusted = self
            .trusted
            .iter()
            .find(|t| t.issuer.issuer == iss)
            .ok_or_else(|| jwt_error(format!("issuer `{iss}` is not trusted by this conductor")))?;
        let jwk = trusted.key(header.kid.as_deref()).await?;
        let allowed = algorithms_of(&jwk);
        if !allowed.contains(&header.alg) {
            return Err(jwt_error(format!(
                "algorithm {:?} is not one key {} signs with ({allowed:?})",
                header.alg,
                jwk.common.key_id.as_deref().unwrap_or("(no kid)")
            )));
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| jwt_error(format!("the issuer's key cannot be used: {e}")))?;
        let i = &trusted.issuer;
        let mut v = Validation::new(header.alg);
        v.algorithms = vec![header.alg];
        v.set_issuer(&[&i.issuer]);
        v.set_audience(&[&i.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud"]);
        v.leeway = i.leeway_seconds;
        v.validate_nbf = true;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            jwt_error(match e.kind() {
                K::ExpiredSignature => "the token expired".to_owned(),
                K::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
                K::InvalidAudience => {
                    format!("the token's audience does not include `{}`", i.audience)
                }
                K::InvalidIssuer => format!("the token's issuer is not `{}`", i.issuer),
                K::InvalidSignature => "the signature does not verify".to_owned(),
                K::MissingRequiredClaim(c) => format!("the token has no `{c}` claim"),
                other => format!("the token is not valid: {other:?}"),
            })
        })?;
        self::actor(i, &data.claims)
    }
}

impl Trusted {
    /// The key named `kid` (or the only key, when the token names none), fetching the set
    /// when there is none yet, it is older than `refresh`, or `kid` is unknown — each at
    /// most once per `refetch`.
    async fn key(&self, kid: Option<&str>) -> Result<Jwk, AuthError> {
        let pick = |set: &JwkSet| -> Option<Jwk> {
            match kid {
                Some(k) => set.find(k).cloned(),
                None if set.keys.len() == 1 => set.keys.first().cloned(),
                None => None,
            }
        };
        let (current, stale, may_retry) = {
            let k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            (
                k.set.clone(),
                k.fetched.is_none_or(|t| t.elapsed() > self.issuer.refresh),
                k.attempted
                    .is_none_or(|t| t.elapsed() > self.issuer.refetch),
            )
        };
        let found = current.as_deref().and_then(pick);
        let url = match &self.issuer.keys {
            KeySource::Url(u) => Some(u.clone()),
            KeySource::File(_) => None,
        };
        // Every fetch, whatever its reason, waits `refetch` after the last attempt: an
        // issuer that is down or a flood of unknown kids cannot turn into a fetch storm.
        let must_fetch = may_retry && (current.is_none() || found.is_none() || stale);
        if let (true, Some(url)) = (must_fetch, url) {
            let _one = self.fetching.lock().await;
            // Another request may have fetched while this one waited.
            let again = self
                .keys
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .attempted
                .is_none_or(|t| t.elapsed() > self.issuer.refetch);
            if again {
                let fetched = tokio::task::spawn_blocking({
                    let url = url.clone();
                    move || fetch(&url)
                })
                .await
                .unwrap_or_else(|e| Err(format!("the fetch task failed: {e}")));
                let mut k = self.keys.lock().unwrap_or_else(|e| e.into_inner());
                k.attempted = Some(Instant::now());
                match fetched {
                    Ok(set) => {
                        crate::log::event(
                            "info",
                            "oidc keys fetched",
                            &[
                                ("issuer", serde_json::json!(self.issuer.issuer)),
                                ("keys", serde_json::json!(set.keys.len())),
                            ],
                        );
                        k.set = Some(Arc::new(set));
                        k.fetched = Some(Instant::now());
                    }
                    // The old keys stay in use; the next attempt waits `refetch`.
                    Err(e) => crate::log::event(
                        "warn",
                        "oidc keys not fetched",
                        &[
                            ("issuer", serde_json::json!(self.issuer.issuer)),
                            ("error", serde_json::json!(e)),
                        ],
                    ),
                }
            }
        }
        let set = self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .set
            .clone()
            .ok_or_else(|| {
                jwt_error(format!(
                    "the keys of issuer `{}` could not be fetched; try again later",
                    self.issuer.issuer
                ))
            })?;
        pick(&set).ok_or_else(|| match kid {
            Some(k) => jwt_error(format!("issuer `{}` has no key `{k}`", self.issuer.issuer)),
            None => jwt_error(format!(
                "the token names no key (kid) and issuer `{}` has {} keys",
                self.issuer.issuer,
                set.keys.len()
            )),
        })
    }
}

/// Verified claims → the actor, after the issuer's `require` table.
fn actor(i: &Issuer, claims: &Map<String, Value>) -> Result<Actor, AuthError> {
    for (name, want) in &i.require {
        let got = claims.get(name).and_then(Value::as_str);
        if got != Some(want.as_str()) {
            return Err(jwt_error(format!(
                "claim `{name}` must be `{want}` for issuer `{}`",
                i.issuer
            )));
        }
    }
    let mut roles = i.roles.clone();
    if let Some(c) = &i.roles_claim {
        roles.extend(strings(claims, c)?);
    }
    roles.sort();
    roles.dedup();
    let mut teams = i.teams.clone();
    if let Some(c) = &i.teams_claim {
        teams.extend(strings(claims, c)?);
    }
    teams.sort();
    teams.dedup();
    let tenant = match &i.tenant {
        Tenant::Fixed(t) => t.clone(),
        Tenant::Claim(c) => text_claim(claims, c)?,
    };
    let name = format!("{}{}", i.actor_prefix, text_claim(claims, &i.actor_claim)?);
    Ok(Actor {
        id: crate::auth::actor_id(&tenant, &name),
        roles,
        teams,
        tenant,
        scopes: i.scopes.clone(),
        via: format!("oidc:{}", i.issuer),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const RSA_A: &str = include_str!("../tests/fixtures/oidc/rsa-a.pem");
    const RSA_B: &str = include_str!("../tests/fixtures/oidc/rsa-b.pem");
    const EC_A: &str = include_str!("../tests/fixtures/oidc/ec-a.pem");
    const ISS: &str = "https://token.actions.githubusercontent.com";

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn issuer(dir: &std::path::Path) -> Issuer {
        let jwks = dir.join("jwks.json");
        std::fs::write(&jwks, include_str!("../tests/fixtures/oidc/jwks.json")).expect("write");
        IssuerSettings {
            issuer: Some(ISS.to_owned()),
            audience: Some("maestro".to_owned()),
            jwks_file: Some(jwks),
            tenant_claim: Some("repository_owner".to_owned()),
            roles: vec!["developer".to_owned()],
            scopes: vec!["runs:read".to_owned(), "runs:write".to_owned()],
            require: BTreeMap::from([("repository_owner".to_owned(), "octo-org".to_owned())]),
            ..IssuerSettings::default()
        }
        .validate(0, dir)
        .expect("valid")
    }

    /// GitHub Actions' documented OIDC claims for a workflow on main.
    fn github_claims() -> Value {
        json!({
            "jti": "example-id", "sub": "repo:octo-org/octo-repo:ref:refs/heads/main",
            "environment": "prod", "aud": "maestro", "ref": "refs/heads/main",
            "sha": "example-sha", "repository": "octo-org/octo-repo",
            "repository_owner": "octo-org", "actor_id": "12", "repository_visibility": "private",
            "repository_id": "74", "repository_owner_id": "65", "run_id": "example-run-id",
            "run_number": "10", "run_attempt": "2", "runner_environment": "github-hosted",
            "actor": "octocat", "workflow": "example-workflow", "head_ref": "", "base_ref": "",
            "event_name": "workflow_dispatch", "ref_type": "branch",
            "job_workflow_ref": "octo-org/octo-automation/.github/workflows/oidc.yml@refs/heads/main",
            "iss": ISS, "nbf": now() - 5, "exp": now() + 300, "iat": now() - 5
        })
    }

    fn sign(alg: Algorithm, kid: Option<&str>, pem: &str, claims: &Value) -> String {
        let key = match alg {
            Algorithm::ES256 => EncodingKey::from_ec_pem(pem.as_bytes()),
            _ => EncodingKey::from_rsa_pem(pem.as_bytes()),
        }
        .expect("key");
        let mut h = Header::new(alg);
        h.kid = kid.map(str::to_owned);
        encode(&h, claims, &key).expect("sign")
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn verify(o: &Oidc, token: &str) -> Result<Actor, String> {
        rt().block_on(o.verify(token)).map_err(|e| e.to_string())
    }

    #[test]
    fn a_github_actions_token_becomes_an_actor() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Oidc::load(&[issuer(dir.path())]).expect("load");
        let a = verify(
            &o,
            &sign(Algorithm::RS256, Some("rsa-a"), RSA_A, &github_claims()),
        )
        .expect("valid");
        // Namespaced by its tenant, as every actor outside the default tenant.
        assert_eq!(
            a.id,
            "octo-org/oidc:repo:octo-org/octo-repo:ref:refs/heads/main"
        );
        assert_eq!(a.tenant, "octo-org");
        assert_eq!(a.roles, ["developer"]);
        assert_eq!(a.scopes, ["runs:read", "runs:write"]);
        assert_eq!(a.via, format!("oidc:{ISS}"));
        // ES256 with the set's EC key works too.
        verify(
            &o,
            &sign(Algorithm::ES256, Some("ec-a"), EC_A, &github_claims()),
        )
        .expect("ec");
    }

    #[test]
    fn each_failed_check_is_named_and_never_shows_the_token() {
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Oidc::load(&[issuer(dir.path())]).expect("load");
        let with = |k: &str, v: Value| {
            let mut c = github_claims();
            c[k] = v;
            c
        };
        let mut no_exp = github_claims();
        no_exp.as_object_mut().expect("object").remove("exp");
        let cases: Vec<(String, &str)> = vec![
            (
                sign(
                    Algorithm::RS256,
                    Some("rsa-a"),
                    RSA_A,
                    &with("aud", json!("other")),
                ),
                "audience does not include `maestro`",
            ),
            (
                sign(
                    Algorithm::RS256,
                    Some("rsa-a"),
                    RSA_A,
                    &with("exp", json!(now() - 3600)),
                ),
                "expired",
            ),
            (
                sign(
                    Algorithm::RS256,
                    Some("rsa-a"),
                    RSA_A,
                    &with("nbf", json!(now() + 3600)),
                ),
                "not valid yet",
            ),
            (
                sign(Algorithm::RS256, Some("rsa-a"), RSA_A, &no_exp),
                "no `exp` claim",
            ),
            (
                sign(
                    Algorithm::RS256,
                    Some("rsa-a"),
                    RSA_A,
                    &with("iss", json!("https://evil.example")),
                ),
                "issuer `https://evil.example` is not trusted",
            ),
            (
                sign(
                    Algorithm::RS256,
                    Some("rsa-a"),
                    RSA_A,
                    &with("repository_owner", json!("someone-else")),
                ),
                "claim `repository_owner` must be `octo-org`",
            ),
            // Signed by a key the issuer does not have, under the name of one it does.
            (
                sign(Algorithm::RS256, Some("rsa-a"), RSA_B, &github_claims()),
                "signature does not verify",
            ),
            (
                sign(Algorithm::RS256, Some("rsa-b"), RSA_B, &github_claims()),
                "has no key `rsa-b`",
            ),
            // The key says RS256; RS512 with the same key is refused.
            (
                sign(Algorithm::RS512, Some("rsa-a"), RSA_A, &github_claims()),
                "algorithm RS512 is not one key rsa-a signs with",
            ),
            (
                sign(Algorithm::RS256, None, RSA_A, &github_claims()),
                "names no key (kid) and issuer",
            ),
            ("x".repeat(MAX_TOKEN + 1), "longer than"),
        ];
        for (token, want) in cases {
            let err = verify(&o, &token).expect_err(want);
            assert!(err.contains(want), "{want}: {err}");
            assert!(!err.contains(&token[..token.len().min(40)]), "{err}");
        }
    }

    #[test]
    fn alg_none_and_hmac_with_the_public_key_are_refused() {
        use base64::Engine as _;
        let dir = tempfile::tempdir().expect("tempdir");
        let o = Oidc::load(&[issuer(dir.path())]).expect("load");
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = b64(&github_claims());
        let none = format!("{}.{claims}.", b64(&json!({"alg": "none", "kid": "rsa-a"})));
        assert!(verify(&o, &none).expect_err("none").contains("header"));
        // HS256 keyed with the issuer's public JWK: the classic confusion.
        let jwks: Value =
            serde_json::from_str(include_str!("../tests/fixtures/oidc/jwks.json")).expect("json");
        let public = jwks["keys"][0].to_string();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some("rsa-a".to_owned());
        let forged = encode(
            &h,
            &github_claims(),
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .expect("sign");
        let err = verify(&o, &forged).expect_err("hs256");
        assert!(
            err.contains("algorithm HS256 is not one key rsa-a signs with"),
            "{err}"
        );
    }

    #[test]
    fn settings_errors_name_the_field() {
        let dir = std::path::Path::new(".");
        let ok = IssuerSettings {
            issuer: Some(ISS.to_owned()),
            audience: Some("maestro".to_owned()),
            jwks_url: Some(
                "https://token.actions.githubusercontent.com/.well-known/jwks".to_owned(),
            ),
            tenant: Some("acme".to_owned()),
            scopes: vec!["runs:read".to_owned()],
            ..IssuerSettings::default()
        };
        assert!(ok.clone().validate(0, dir).is_ok());
        let cases = [
            (
                IssuerSettings {
                    issuer: Some("http://idp.example".into()),
                    ..ok.clone()
                },
                "oidc[2].issuer",
            ),
            (
                IssuerSettings {
                    audience: None,
                    ..ok.clone()
                },
                "oidc[2].audience",
            ),
            (
                IssuerSettings {
                    jwks_url: Some("http://idp.example/jwks".into()),
                    ..ok.clone()
                },
                "oidc[2].jwks_url",
            ),
            (
                IssuerSettings {
                    jwks_file: Some("k.json".into()),
                    ..ok.clone()
                },
                "oidc[2].jwks_file",
            ),
            (
                IssuerSettings {
                    tenant_claim: Some("org".into()),
                    ..ok.clone()
                },
                "oidc[2].tenant",
            ),
            (
                IssuerSettings {
                    scopes: Vec::new(),
                    ..ok.clone()
                },
                "oidc[2].scopes",
            ),
            (
                IssuerSettings {
                    refresh_seconds: Some(1),
                    ..ok.clone()
                },
                "oidc[2].refresh_seconds",
            ),
        ];
        for (s, field) in cases {
            let err = s.validate(2, dir).expect_err(field).to_string();
            assert!(err.starts_with(field), "{err}");
        }
        assert!(secure_url("http://127.0.0.1:8080/jwks") && secure_url("http://localhost/x"));
        assert!(!secure_url("http://127.0.0.1.evil.example/jwks"));
        // Userinfo that looks like a loopback host: the host is the one after `@`.
        assert!(!secure_url("http://127.0.0.1:80@idp.example.com/jwks"));
        assert!(!secure_url("http://localhost@idp.example.com/jwks"));
        assert!(!secure_url("https://user:pass@idp.example.com/jwks"));
        assert!(!secure_url("HTTP://idp.example.com/jwks"));
        assert!(!secure_url("ftp://127.0.0.1/jwks") && !secure_url("not a url"));
        assert!(!secure_url("http://127.0.0.1\\@idp.example.com/"));
        assert!(secure_url("HTTPS://IDP.example.com/jwks") && secure_url("http://[::1]:9000/jwks"));
    }
}
