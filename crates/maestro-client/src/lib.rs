//! The conductor's client. `maestro run --server URL` opens a run on the conductor with
//! [`Conductor::open_run`], and a [`report::Reporter`] thread sends each finished job with
//! the tail of its log while the pipeline goes on, retrying through outages and closing
//! the run with its status at the end.
//!
//! The conductor is reached over HTTPS, or plain HTTP only on loopback; credentials come
//! from [`credential::Credential`] and never appear in messages.

pub mod credential;
pub mod report;

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;

pub use credential::Credential;

/// The most of a conductor's answer that is read.
const MAX_ANSWER: u64 = 1024 * 1024;

/// Client failures.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Url(String),
    #[error(
        "no credential for the conductor: set MAESTRO_TOKEN (an API token from `maestro token create`, or your CI's OIDC ID token), or on GitHub Actions give the job `permissions: id-token: write`"
    )]
    NoCredential,
    #[error("{source_name}: {message}")]
    Credential {
        source_name: String,
        message: String,
    },
    /// The conductor refused the request; retrying will not help.
    #[error("the conductor refused {what}: {status} {code}: {message}")]
    Refused {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The conductor could not be reached or failed; retrying may help.
    #[error("the conductor at {base} is unavailable ({what}): {message}")]
    Unavailable {
        base: String,
        what: String,
        message: String,
    },
}

impl ClientError {
    /// Whether trying again later may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, ClientError::Unavailable { .. })
    }
}

/// A conductor: its base URL and the credential to present.
#[derive(Debug)]
pub struct Conductor {
    base: String,
    agent: ureq::Agent,
    credential: Credential,
}

/// What opening a run sends.
#[derive(Clone, Debug, Serialize)]
pub struct OpenRun {
    pub pipeline: String,
    pub commit: Option<String>,
    pub branch: Option<String>,
    pub args: String,
    pub trace_id: Option<String>,
    /// This invocation's own key: a retried open returns the same run.
    pub key: String,
}

impl OpenRun {
    /// A fresh random key for a new invocation.
    #[must_use]
    pub fn new_key() -> String {
        let mut b = [0u8; 16];
        // Without randomness the time is unique enough for one reporter.
        if getrandom::fill(&mut b).is_err() {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos());
            b = t.to_le_bytes();
        }
        hex::encode(b)
    }
}

/// A run the conductor opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Opened {
    pub id: i64,
    /// The run's page on the conductor's console.
    pub url: String,
}

/// Checks a conductor URL: `https://host[:port][/prefix]`, or `http://` to loopback;
/// no user or password in it (it would end up in logs). Returns it without a trailing
/// slash.
///
/// # Errors
/// [`ClientError::Url`] saying what is wrong.
pub fn check_url(url: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::Url(format!("--server `{url}` {why}"));
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("is not a URL: write https://conductor.example.com"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(bad("has no host"));
    }
    if authority.contains('@') {
        // Not echoed: the part before `@` is a secret.
        return Err(ClientError::Url(
            "--server holds a user or password: give the credential in MAESTRO_TOKEN instead"
                .to_owned(),
        ));
    }
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    match scheme {
        "https" => {}
        "http" if matches!(host, "localhost" | "::1") || host.starts_with("127.") => {}
        "http" => {
            return Err(bad(
                "is plain HTTP to another machine: use https:// (the token would travel in clear)",
            ));
        }
        _ => return Err(bad("is not an http(s) URL")),
    }
    if rest.contains(['?', '#']) {
        return Err(bad(
            "has a query or fragment: give the conductor's base URL",
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// Unix seconds now.
pub(crate) fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Conductor {
    /// A client for the conductor at `url`.
    ///
    /// # Errors
    /// [`ClientError::Url`] when the URL is not acceptable ([`check_url`]).
    pub fn new(url: &str, credential: Credential) -> Result<Conductor, ClientError> {
        let base = check_url(url)?;
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(20)))
            .user_agent(concat!("maestro/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        Ok(Conductor {
            base,
            agent,
            credential,
        })
    }

    /// The conductor's base URL.
    #[must_use]
    pub fn base(&self) -> &str {
        &self.base
    }

    /// One `POST` of JSON; `what` names the request in errors.
    ///
    /// # Errors
    /// [`ClientError::Refused`] for answers retrying cannot change (4xx but 408/429),
    /// [`ClientError::Unavailable`] otherwise.
    pub fn post(
        &mut self,
        path: &str,
        what: &str,
        body: &impl Serialize,
    ) -> Result<Value, ClientError> {
        let body = serde_json::to_value(body).map_err(|e| ClientError::Url(e.to_string()))?;
        self.request("POST", path, what, Some(&body), None)
    }

    /// One `GET`.
    ///
    /// # Errors
    /// As [`Conductor::post`].
    pub fn get(&mut self, path: &str, what: &str) -> Result<Value, ClientError> {
        self.request("GET", path, what, None, None)
    }

    /// One `GET` of a file (a release's evidence bundle), at most `limit` bytes.
    ///
    /// # Errors
    /// As [`Conductor::post`]; a larger answer is refused.
    pub fn download(&mut self, path: &str, what: &str, limit: u64) -> Result<Vec<u8>, ClientError> {
        let unavailable = |message: String| ClientError::Unavailable {
            base: self.base.clone(),
            what: what.to_owned(),
            message,
        };
        let bearer = self.credential.bearer(&self.agent, now_s())?;
        let sent = self
            .agent
            .get(format!("{}{path}", self.base))
            .header("Authorization", format!("Bearer {}", bearer.as_str()))
            .call();
        drop(bearer);
        let mut resp = sent.map_err(|e| unavailable(e.to_string()))?;
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return resp
                .body_mut()
                .with_config()
                .limit(limit)
                .read_to_vec()
                .map_err(|e| unavailable(e.to_string()));
        }
        let answer: Value = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_json()
            .unwrap_or(Value::Null);
        Err(self.failed(what, status, &answer))
    }

    /// One `POST` of a sensitive action, with its reason (`X-Maestro-Reason`).
    ///
    /// # Errors
    /// As [`Conductor::post`].
    pub fn post_reasoned(
        &mut self,
        path: &str,
        what: &str,
        body: &Value,
        reason: &str,
    ) -> Result<Value, ClientError> {
        self.request("POST", path, what, Some(body), Some(reason))
    }

    fn request(
        &mut self,
        method: &str,
        path: &str,
        what: &str,
        body: Option<&Value>,
        reason: Option<&str>,
    ) -> Result<Value, ClientError> {
        let unavailable = |message: String| ClientError::Unavailable {
            base: self.base.clone(),
            what: what.to_owned(),
            message,
        };
        let bearer = self.credential.bearer(&self.agent, now_s())?;
        let url = format!("{}{path}", self.base);
        let auth = format!("Bearer {}", bearer.as_str());
        let sent = if method == "GET" {
            self.agent.get(&url).header("Authorization", &auth).call()
        } else {
            let mut req = self.agent.post(&url).header("Authorization", &auth);
            if let Some(r) = reason {
                req = req.header("X-Maestro-Reason", r);
            }
            req.send_json(body.cloned().unwrap_or(Value::Null))
        };
        drop(auth);
        drop(bearer);
        let mut resp = sent.map_err(|e| unavailable(e.to_string()))?;
        let status = resp.status().as_u16();
        let answer: Value = resp
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_json()
            .unwrap_or(Value::Null);
        if (200..300).contains(&status) {
            return Ok(answer);
        }
        Err(self.failed(what, status, &answer))
    }

    /// The error for a non-2xx answer: unavailable (5xx, 408, 429: worth retrying) or
    /// refused, with the conductor's code and message.
    fn failed(&self, what: &str, status: u16, answer: &Value) -> ClientError {
        let code = answer["error"]["code"].as_str().unwrap_or("").to_owned();
        let message = answer["error"]["message"]
            .as_str()
            .unwrap_or("no message")
            .to_owned();
        if status >= 500 || status == 408 || status == 429 {
            return ClientError::Unavailable {
                base: self.base.clone(),
                what: what.to_owned(),
                message: format!("{status} {code}: {message}"),
            };
        }
        ClientError::Refused {
            what: what.to_owned(),
            status,
            code,
            message,
        }
    }

    /// Opens a run, trying up to `attempts` times (1 s, 2 s, … apart) while the conductor
    /// is unavailable; the run's key makes the retries safe.
    ///
    /// # Errors
    /// The last failure.
    pub fn open_run(&mut self, run: &OpenRun, attempts: u32) -> Result<Opened, ClientError> {
        let mut wait = Duration::from_secs(1);
        let mut tries = 0;
        loop {
            tries += 1;
            match self.post("/api/v1/runs", "opening the run", run) {
                Ok(v) => {
                    let id = v["id"].as_i64().ok_or_else(|| ClientError::Unavailable {
                        base: self.base.clone(),
                        what: "opening the run".to_owned(),
                        message: "the answer has no run id".to_owned(),
                    })?;
                    let page = v["url"].as_str().unwrap_or_default();
                    return Ok(Opened {
                        id,
                        url: format!("{}{page}", self.base),
                    });
                }
                Err(e) if e.is_transient() && tries < attempts => {
                    std::thread::sleep(wait);
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_or_loopback_and_hold_no_credentials() {
        assert_eq!(
            check_url("https://maestro.acme.dev/").expect("ok"),
            "https://maestro.acme.dev"
        );
        assert!(check_url("https://maestro.acme.dev:8443/conductor").is_ok());
        for ok in [
            "http://127.0.0.1:7070",
            "http://localhost:7070",
            "http://[::1]:7070",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("http://maestro.acme.dev", "plain HTTP"),
            ("https://user:pw@maestro.acme.dev", "user or password"),
            ("maestro.acme.dev", "not a URL"),
            ("ftp://maestro.acme.dev", "not an http(s) URL"),
            ("https://", "no host"),
            ("https://m.acme.dev/?x=1", "query"),
        ] {
            let e = check_url(bad).expect_err(bad).to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(!e.contains("pw"), "the password is not echoed: {e}");
        }
    }

    #[test]
    fn keys_are_random_hex() {
        let (a, b) = (OpenRun::new_key(), OpenRun::new_key());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
