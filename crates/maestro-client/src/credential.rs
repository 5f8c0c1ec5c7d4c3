//! What a client presents to the conductor: an API token, or an OIDC ID token of the CI
//! system the job runs in — given in `MAESTRO_TOKEN`, or on GitHub Actions fetched from
//! the runner's token service (`ACTIONS_ID_TOKEN_REQUEST_URL`, with the job's
//! `permissions: id-token: write`) for the conductor's audience. Values are never shown:
//! not in `Debug`, not in errors.

use base64::Engine as _;
use zeroize::Zeroizing;

use crate::ClientError;

/// The most of a token-service answer that is read.
const MAX_ANSWER: u64 = 64 * 1024;
/// A cached ID token is fetched again this long before it expires.
const REFRESH_MARGIN_S: i64 = 60;

/// A credential for the conductor.
pub enum Credential {
    /// A secret given as is (`MAESTRO_TOKEN`): an API token (`mst_…`) or an ID token.
    Static(Zeroizing<String>),
    /// GitHub Actions' OIDC token service: an ID token for `audience`, fetched when
    /// needed and again shortly before it expires.
    GitHubActions {
        url: String,
        request_token: Zeroizing<String>,
        audience: String,
        cached: Option<(Zeroizing<String>, i64)>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.source())
    }
}

impl Credential {
    /// The credential the environment offers: `MAESTRO_TOKEN`, else GitHub Actions' token
    /// service for `audience`.
    ///
    /// # Errors
    /// [`ClientError::NoCredential`] when there is neither.
    pub fn from_env(
        get: impl Fn(&str) -> Option<String>,
        audience: &str,
    ) -> Result<Credential, ClientError> {
        if let Some(t) = get("MAESTRO_TOKEN").filter(|t| !t.trim().is_empty()) {
            return Ok(Credential::Static(Zeroizing::new(t.trim().to_owned())));
        }
        let url = get("ACTIONS_ID_TOKEN_REQUEST_URL").filter(|v| !v.is_empty());
        let token = get("ACTIONS_ID_TOKEN_REQUEST_TOKEN").filter(|v| !v.is_empty());
        match (url, token) {
            (Some(url), Some(token)) => Ok(Credential::GitHubActions {
                url,
                request_token: Zeroizing::new(token),
                audience: audience.to_owned(),
                cached: None,
            }),
            _ => Err(ClientError::NoCredential),
        }
    }

    /// Where the credential comes from, for messages.
    #[must_use]
    pub fn source(&self) -> &'static str {
        match self {
            Credential::Static(_) => "MAESTRO_TOKEN",
            Credential::GitHubActions { .. } => "the GitHub Actions OIDC token service",
        }
    }

    /// The secret to send now (`now_s`: Unix seconds).
    ///
    /// # Errors
    /// [`ClientError::Credential`] when the token service fails.
    pub fn bearer(
        &mut self,
        agent: &ureq::Agent,
        now_s: i64,
    ) -> Result<Zeroizing<String>, ClientError> {
        match self {
            Credential::Static(t) => Ok(t.clone()),
            Credential::GitHubActions {
                url,
                request_token,
                audience,
                cached,
            } => {
                if let Some((token, exp)) = cached.as_ref()
                    && now_s < exp - REFRESH_MARGIN_S
                {
                    return Ok(token.clone());
                }
                let token = fetch_github(agent, url, request_token, audience)?;
                // Until it expires, or a minute when the token says nothing.
                let exp = expiry(&token).unwrap_or(now_s + 2 * REFRESH_MARGIN_S);
                *cached = Some((token.clone(), exp));
                Ok(token)
            }
        }
    }
}

/// `GET <request URL>&audience=<aud>` with the request token, as GitHub documents for
/// custom OIDC clients; the answer is `{"value": "<ID token>"}`.
fn fetch_github(
    agent: &ureq::Agent,
    url: &str,
    request_token: &str,
    audience: &str,
) -> Result<Zeroizing<String>, ClientError> {
    let sep = if url.contains('?') { '&' } else { '?' };
    let full = format!("{url}{sep}audience={}", encode_component(audience));
    let shown = url.split('?').next().unwrap_or(url).to_owned();
    let fail = |message: String| ClientError::Credential {
        source_name: "the GitHub Actions OIDC token service".to_owned(),
        message,
    };
    let mut resp = agent
        .get(&full)
        .header("Authorization", format!("Bearer {request_token}"))
        .header("Accept", "application/json")
        .call()
        .map_err(|e| fail(format!("{shown} could not be reached: {e}")))?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(fail(format!(
            "{shown} answered {status}; does the job have `permissions: id-token: write`?"
        )));
    }
    let answer: serde_json::Value = resp
        .body_mut()
        .with_config()
        .limit(MAX_ANSWER)
        .read_json()
        .map_err(|e| fail(format!("{shown} answered something that is not JSON: {e}")))?;
    let value = answer["value"]
        .as_str()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| fail(format!("{shown} answered without a `value`")))?;
    Ok(Zeroizing::new(value.to_owned()))
}

/// The `exp` claim of a JWT, read without verifying it: only to know when to fetch a
/// new one (the conductor verifies).
fn expiry(jwt: &str) -> Option<i64> {
    let payload = jwt.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    claims["exp"].as_i64()
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn maestro_token_wins_then_github_actions_then_nothing() {
        let both = [
            ("MAESTRO_TOKEN", "mst_abc"),
            (
                "ACTIONS_ID_TOKEN_REQUEST_URL",
                "https://x/token?api-version=2.0",
            ),
            ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "req"),
        ];
        let c = Credential::from_env(env(&both), "maestro").expect("credential");
        assert_eq!(c.source(), "MAESTRO_TOKEN");
        let c = Credential::from_env(env(&both[1..]), "maestro").expect("credential");
        assert_eq!(c.source(), "the GitHub Actions OIDC token service");
        let half = [("ACTIONS_ID_TOKEN_REQUEST_URL", "https://x/token")];
        assert!(matches!(
            Credential::from_env(env(&half), "maestro"),
            Err(ClientError::NoCredential)
        ));
    }

    #[test]
    fn debug_shows_the_source_never_the_secret() {
        let c = Credential::Static(Zeroizing::new("mst_supersecret".to_owned()));
        assert_eq!(format!("{c:?}"), "MAESTRO_TOKEN");
    }

    #[test]
    fn the_expiry_is_read_from_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"sub":"repo:acme/shop:ref:refs/heads/main","exp":1700000300}"#);
        assert_eq!(expiry(&format!("h.{payload}.s")), Some(1_700_000_300));
        assert_eq!(expiry("not-a-jwt"), None);
        assert_eq!(expiry("mst_abc"), None);
    }

    #[test]
    fn audiences_are_encoded() {
        assert_eq!(
            encode_component("https://maestro.acme.dev"),
            "https%3A%2F%2Fmaestro.acme.dev"
        );
        assert_eq!(encode_component("maestro"), "maestro");
    }
}
