//! The conductor's configuration: a TOML file, then environment variables, then flags
//! (the CLI merges them), validated before anything listens.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::ServerError;

/// How strict the server is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Local use: every documented query is accepted.
    #[default]
    Development,
    /// Shared deployments: only persisted operations, no introspection.
    Production,
}

impl Mode {
    /// `development` or `production`.
    ///
    /// # Errors
    /// Any other word, with the two that are accepted.
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "development" | "dev" => Ok(Mode::Development),
            "production" | "prod" => Ok(Mode::Production),
            other => Err(format!(
                "`{other}` is not a mode: use `development` or `production`"
            )),
        }
    }
}

/// The file as written (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    listen: Option<String>,
    database: Option<String>,
    mode: Option<String>,
    policy: Option<PathBuf>,
    max_connections: Option<usize>,
    remote_run_timeout_seconds: Option<u64>,
    #[serde(default)]
    oidc: Vec<crate::oidc::IssuerSettings>,
    #[serde(default)]
    environments: Vec<crate::environments::EnvironmentSettings>,
    flags: Option<crate::flags::FlagsSettings>,
    #[serde(default)]
    trains: Vec<crate::train::TrainSettings>,
    roles: Option<Vec<String>>,
    max_clients: Option<usize>,
    header_timeout_seconds: Option<u64>,
    body_timeout_seconds: Option<u64>,
    tls_proxy: Option<bool>,
    artifact_roots: Option<Vec<PathBuf>>,
    artifact_store: Option<PathBuf>,
}

/// A validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:7070`).
    pub listen: SocketAddr,
    /// `postgres://…` or the path of an SQLite file.
    pub database: String,
    pub mode: Mode,
    /// A directory of Rego files whose `data.maestro.authz.allow` decides every request;
    /// `None`: the built-in policy.
    pub policy: Option<PathBuf>,
    /// Store connections kept at most (bounds PostgreSQL connections per replica).
    pub max_connections: usize,
    /// Trusted OIDC issuers (`[[oidc]]` tables of the file).
    pub oidc: Vec<crate::oidc::Issuer>,
    /// When a quiet remote run is interrupted.
    pub reaper: crate::remote::Reaper,
    /// The audit log's signing key for sensitive actions (never from the file: the CLI
    /// reads `MAESTRO_AUDIT_KEY` or the key file).
    pub audit_key: Option<std::sync::Arc<maestro_audit::LogKey>>,
    /// Where request spans are exported (the CLI reads `OTEL_EXPORTER_OTLP_*`).
    pub exporter: Option<maestro_telemetry::otlp::Exporter>,
    /// The longest a finished span waits for export (`OTEL_BSP_SCHEDULE_DELAY`).
    pub span_delay: std::time::Duration,
    /// `[[environments]]`: what this conductor deploys to (process driver).
    pub environments: Vec<crate::environments::EnvConfig>,
    /// `[flags]`: the feature-flag registry it evaluates.
    pub flags: Option<std::sync::Arc<crate::flags::FlagsConfig>>,
    /// `[[trains]]`: release trains through the environments.
    pub trains: Vec<crate::train::Train>,
    /// The roles a token may hold (a custom policy's; default [`crate::auth::BUILTIN_ROLES`]).
    pub roles: Vec<String>,
    /// Connections and how long a request may take to arrive.
    pub limits: crate::listen::Limits,
    /// Served to browsers over TLS by a proxy in front (`tls_proxy = true`): the console's
    /// cookie is `Secure`.
    pub tls_proxy: bool,
    /// The directories an artifact a deploy or a cut names may be read from (real paths);
    /// none: no artifact is read from the host.
    pub artifact_roots: Vec<PathBuf>,
    /// Where the conductor keeps the artifacts releases are cut from, by digest (default:
    /// `artifacts/` beside an SQLite store; required with PostgreSQL to cut releases).
    pub artifact_store: Option<PathBuf>,
}

/// Unvalidated settings, as strings, from wherever they came.
#[derive(Clone, Debug, Default)]
pub struct Settings {
    pub listen: Option<String>,
    pub database: Option<String>,
    pub mode: Option<String>,
    pub policy: Option<PathBuf>,
    pub max_connections: Option<usize>,
    /// Seconds a remote run may go without a report before it is interrupted.
    pub remote_run_timeout_seconds: Option<u64>,
    /// `[[oidc]]` tables: only a file sets them.
    pub oidc: Vec<crate::oidc::IssuerSettings>,
    /// `[[environments]]` tables: only a file sets them.
    pub environments: Vec<crate::environments::EnvironmentSettings>,
    /// `[flags]`: only a file sets it.
    pub flags: Option<crate::flags::FlagsSettings>,
    /// `[[trains]]` tables: only a file sets them.
    pub trains: Vec<crate::train::TrainSettings>,
    /// `roles`: the roles a custom policy knows.
    pub roles: Option<Vec<String>>,
    /// HTTP connections served at once (default 512).
    pub max_clients: Option<usize>,
    /// Seconds a client has to send a request's headers, and the longest a connection
    /// stays idle between requests (default 10).
    pub header_timeout_seconds: Option<u64>,
    /// Seconds a client has to send a request's body after its headers (default 30).
    pub body_timeout_seconds: Option<u64>,
    /// A TLS-terminating proxy serves this conductor to browsers.
    pub tls_proxy: Option<bool>,
    /// `artifact_roots`: where artifacts may be read from (relative to the file).
    pub artifact_roots: Option<Vec<PathBuf>>,
    /// `artifact_store`: where released artifacts are kept (relative to the file).
    pub artifact_store: Option<PathBuf>,
    /// The directory a relative `jwks_file` is relative to.
    pub base: Option<PathBuf>,
}

impl Settings {
    /// Reads a configuration file; unknown keys are refused (a typo must not silently
    /// fall back to a default).
    ///
    /// # Errors
    /// [`ServerError::Config`] naming the file and, where TOML says, the line.
    pub fn from_file(path: &Path) -> Result<Settings, ServerError> {
        let text = std::fs::read_to_string(path).map_err(|e| ServerError::Config {
            source_name: path.display().to_string(),
            message: format!("cannot be read: {e}"),
        })?;
        if text.len() > 1 << 20 {
            return Err(ServerError::Config {
                source_name: path.display().to_string(),
                message: "is larger than 1 MiB".to_owned(),
            });
        }
        let f: File = toml::from_str(&text).map_err(|e| ServerError::Config {
            source_name: path.display().to_string(),
            message: e.to_string().trim_end().to_owned(),
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Ok(Settings {
            listen: f.listen,
            database: f.database,
            mode: f.mode,
            // A relative policy directory is relative to the file that names it.
            policy: f
                .policy
                .map(|p| if p.is_relative() { base.join(p) } else { p }),
            max_connections: f.max_connections,
            remote_run_timeout_seconds: f.remote_run_timeout_seconds,
            oidc: f.oidc,
            environments: f.environments,
            flags: f.flags,
            trains: f.trains,
            roles: f.roles,
            max_clients: f.max_clients,
            header_timeout_seconds: f.header_timeout_seconds,
            body_timeout_seconds: f.body_timeout_seconds,
            tls_proxy: f.tls_proxy,
            artifact_roots: f.artifact_roots,
            artifact_store: f.artifact_store,
            base: Some(base.to_path_buf()),
        })
    }

    /// `over`'s values where it has them, ours otherwise.
    #[must_use]
    pub fn overridden_by(self, over: Settings) -> Settings {
        Settings {
            listen: over.listen.or(self.listen),
            database: over.database.or(self.database),
            mode: over.mode.or(self.mode),
            policy: over.policy.or(self.policy),
            max_connections: over.max_connections.or(self.max_connections),
            remote_run_timeout_seconds: over
                .remote_run_timeout_seconds
                .or(self.remote_run_timeout_seconds),
            oidc: if over.oidc.is_empty() {
                self.oidc
            } else {
                over.oidc
            },
            environments: if over.environments.is_empty() {
                self.environments
            } else {
                over.environments
            },
            flags: over.flags.or(self.flags),
            trains: if over.trains.is_empty() {
                self.trains
            } else {
                over.trains
            },
            roles: over.roles.or(self.roles),
            max_clients: over.max_clients.or(self.max_clients),
            header_timeout_seconds: over.header_timeout_seconds.or(self.header_timeout_seconds),
            body_timeout_seconds: over.body_timeout_seconds.or(self.body_timeout_seconds),
            tls_proxy: over.tls_proxy.or(self.tls_proxy),
            artifact_roots: over.artifact_roots.or(self.artifact_roots),
            artifact_store: over.artifact_store.or(self.artifact_store),
            base: over.base.or(self.base),
        }
    }

    /// Checks every field; `default_database` is used when none is set.
    ///
    /// # Errors
    /// [`ServerError::Config`] naming the field and how to fix it.
    pub fn validate(self, default_database: &str) -> Result<Config, ServerError> {
        let bad = |field: &str, message: String| ServerError::Config {
            source_name: field.to_owned(),
            message,
        };
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:7070".to_owned());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            bad(
                "listen",
                format!("`{listen_text}` is not an address: write HOST:PORT, e.g. 127.0.0.1:7070 or 0.0.0.0:7070"),
            )
        })?;
        let database = self.database.unwrap_or_else(|| default_database.to_owned());
        if database.trim().is_empty() {
            return Err(bad(
                "database",
                "is empty: give a postgres:// URL or the path of an SQLite file".to_owned(),
            ));
        }
        if database.contains("://") && !maestro_store::is_postgres(&database) {
            return Err(bad(
                "database",
                "only postgres:// URLs and SQLite file paths are supported".to_owned(),
            ));
        }
        // Development mode (GraphiQL, introspection, no query cost limits beyond the
        // production ones) only where nobody else can reach it, unless asked for.
        let mode = match self.mode {
            None if listen.ip().is_loopback() => Mode::Development,
            None => Mode::Production,
            Some(m) => Mode::parse(&m).map_err(|e| bad("mode", e))?,
        };
        let roles = match self.roles {
            None => crate::auth::BUILTIN_ROLES
                .iter()
                .map(|r| (*r).to_owned())
                .collect(),
            Some(r) if r.is_empty() => {
                return Err(bad(
                    "roles",
                    "is empty: list the roles your policy grants (or leave it out for the built-in ones)".to_owned(),
                ));
            }
            Some(r) => {
                if let Some(w) = r.iter().find(|w| {
                    w.is_empty()
                        || w.len() > 64
                        || !w
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
                }) {
                    return Err(bad(
                        "roles",
                        format!("`{w}` is not a role name: 1 to 64 letters, digits or - _ . :"),
                    ));
                }
                r
            }
        };
        if let Some(p) = &self.policy
            && !p.is_dir()
        {
            return Err(bad(
                "policy",
                format!(
                    "{} is not a directory of Rego files (leave it out to use the built-in policy)",
                    p.display()
                ),
            ));
        }
        let max_connections = self.max_connections.unwrap_or(16);
        if !(1..=1024).contains(&max_connections) {
            return Err(bad(
                "max_connections",
                format!("{max_connections} is out of range: use 1 to 1024"),
            ));
        }
        let mut limits = crate::listen::Limits::default();
        if let Some(n) = self.max_clients {
            if !(8..=65_536).contains(&n) {
                return Err(bad(
                    "max_clients",
                    format!(
                        "{n} is out of range: use 8 to 65536 (keep it under the open-files limit)"
                    ),
                ));
            }
            limits.max_clients = n;
        }
        for (field, value, slot) in [
            (
                "header_timeout_seconds",
                self.header_timeout_seconds,
                &mut limits.header_timeout,
            ),
            (
                "body_timeout_seconds",
                self.body_timeout_seconds,
                &mut limits.body_timeout,
            ),
        ] {
            if let Some(t) = value {
                if !(1..=3_600).contains(&t) {
                    return Err(bad(field, format!("{t} is out of range: use 1 to 3600")));
                }
                *slot = std::time::Duration::from_secs(t);
            }
        }
        let mut artifact_roots = Vec::new();
        for (i, r) in self.artifact_roots.iter().flatten().enumerate() {
            let path = if r.is_relative() {
                self.base
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("."))
                    .join(r)
            } else {
                r.clone()
            };
            let real = path
                .canonicalize()
                .ok()
                .filter(|p| p.is_dir())
                .ok_or_else(|| {
                    bad(
                        &format!("artifact_roots[{i}]"),
                        format!("{} is not a directory", path.display()),
                    )
                })?;
            if real == Path::new("/") {
                return Err(bad(
                    &format!("artifact_roots[{i}]"),
                    "is the root of the file system: name the directories CI writes artifacts to"
                        .to_owned(),
                ));
            }
            artifact_roots.push(real);
        }
        let mut reaper = crate::remote::Reaper::default();
        if let Some(t) = self.remote_run_timeout_seconds {
            // A client reports at least every 30 s; a shorter timeout would interrupt
            // runs that are alive.
            if !(60..=86_400).contains(&t) {
                return Err(bad(
                    "remote_run_timeout_seconds",
                    format!("{t} is out of range: use 60 (a minute) to 86400 (a day)"),
                ));
            }
            reaper.quiet = std::time::Duration::from_secs(t);
        }
        let base = self.base.unwrap_or_else(|| PathBuf::from("."));
        let mut oidc = Vec::new();
        for (i, o) in self.oidc.into_iter().enumerate() {
            let issuer = o.validate(i, &base)?;
            if oidc
                .iter()
                .any(|x: &crate::oidc::Issuer| x.issuer == issuer.issuer)
            {
                return Err(bad(
                    &format!("oidc[{i}].issuer"),
                    format!("`{}` is configured twice", issuer.issuer),
                ));
            }
            oidc.push(issuer);
        }
        let store_dir = (!maestro_store::is_postgres(&database)).then(|| {
            Path::new(&database)
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        });
        let mut environments = Vec::new();
        for (i, e) in self.environments.into_iter().enumerate() {
            let env = e.validate(i, &base, store_dir.as_deref())?;
            if environments
                .iter()
                .any(|x: &crate::environments::EnvConfig| x.spec.name == env.spec.name)
            {
                return Err(bad(
                    &format!("environments[{i}].name"),
                    format!("`{}` is configured twice", env.spec.name),
                ));
            }
            environments.push(env);
        }
        let flags = self
            .flags
            .map(|f| f.validate(&base).map(std::sync::Arc::new))
            .transpose()?;
        let mut trains = Vec::new();
        for (i, t) in self.trains.into_iter().enumerate() {
            let train = t.validate(i, &base, &environments)?;
            if trains
                .iter()
                .any(|x: &crate::train::Train| x.service == train.service)
            {
                return Err(bad(
                    &format!("trains[{i}].service"),
                    format!("`{}` has two trains", train.service),
                ));
            }
            trains.push(train);
        }
        let artifact_store = match self.artifact_store {
            Some(p) if p.is_relative() => Some(base.join(p)),
            Some(p) => Some(p),
            None => store_dir.as_ref().map(|d| d.join("artifacts")),
        }
        .map(|p| std::path::absolute(&p).unwrap_or(p));
        Ok(Config {
            artifact_store,
            artifact_roots,
            tls_proxy: self.tls_proxy.unwrap_or(false),
            limits,
            roles,
            environments,
            flags,
            trains,
            listen,
            database,
            mode,
            policy: self.policy,
            max_connections,
            oidc,
            reaper,
            audit_key: None,
            exporter: None,
            span_delay: crate::tracing::DEFAULT_DELAY,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conductor_others_can_reach_runs_in_production_mode_unless_told() {
        let open = |listen: &str, mode: Option<&str>| {
            Settings {
                listen: Some(listen.to_owned()),
                mode: mode.map(str::to_owned),
                ..Settings::default()
            }
            .validate("store.db")
            .expect("valid")
            .mode
        };
        assert_eq!(open("0.0.0.0:7070", None), Mode::Production);
        assert_eq!(open("192.0.2.7:7070", None), Mode::Production);
        assert_eq!(open("[::1]:7070", None), Mode::Development);
        assert_eq!(open("0.0.0.0:7070", Some("development")), Mode::Development);
    }

    #[test]
    fn defaults_are_loopback_development_and_the_given_database() {
        let c = Settings::default().validate("store.db").expect("valid");
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(
            (c.database.as_str(), c.mode),
            ("store.db", Mode::Development)
        );
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases = [
            (
                Settings {
                    listen: Some("localhost".into()),
                    ..Settings::default()
                },
                "listen",
            ),
            (
                Settings {
                    database: Some("mysql://x/y".into()),
                    ..Settings::default()
                },
                "database",
            ),
            (
                Settings {
                    mode: Some("staging".into()),
                    ..Settings::default()
                },
                "mode",
            ),
            (
                Settings {
                    policy: Some("/nonexistent".into()),
                    ..Settings::default()
                },
                "policy",
            ),
            (
                Settings {
                    max_connections: Some(0),
                    ..Settings::default()
                },
                "max_connections",
            ),
            (
                Settings {
                    remote_run_timeout_seconds: Some(10),
                    ..Settings::default()
                },
                "remote_run_timeout_seconds",
            ),
        ];
        for (s, field) in cases {
            let err = s.validate("store.db").expect_err(field).to_string();
            assert!(err.starts_with(&format!("{field}:")), "{err}");
        }
    }

    #[test]
    fn a_file_with_an_unknown_key_is_refused_with_its_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("conductor.toml");
        std::fs::write(&p, "listen = \"127.0.0.1:0\"\nlisten_port = 80\n").expect("write");
        let err = Settings::from_file(&p)
            .expect_err("unknown key")
            .to_string();
        assert!(
            err.contains("conductor.toml") && err.contains("listen_port") && err.contains("line 2"),
            "{err}"
        );
    }

    #[test]
    fn flags_override_the_environment_which_overrides_the_file() {
        let file = Settings {
            listen: Some("a".into()),
            mode: Some("production".into()),
            ..Settings::default()
        };
        let env = Settings {
            listen: Some("b".into()),
            ..Settings::default()
        };
        let merged = file.overridden_by(env);
        assert_eq!(
            (merged.listen.as_deref(), merged.mode.as_deref()),
            (Some("b"), Some("production"))
        );
    }

    /// `text` as the configuration file `p`, checked with the SQLite store in `dir`.
    fn check_text(
        dir: &std::path::Path,
        p: &std::path::Path,
        text: &str,
    ) -> Result<Config, String> {
        std::fs::write(p, text).expect("write");
        Settings::from_file(p)
            .and_then(|s| s.validate(&dir.join("store.db").display().to_string()))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn trains_are_checked_against_the_environments_with_their_field_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("conductor.toml");
        let env = "[[environments]]\nname = \"stage\"\nservice = \"hello\"\nlisten = \"127.0.0.1:8600\"\ncommand = [\"app\"]\ntrust_keys = [\"k.pub\"]\n";
        let train = "[[trains]]\nservice = \"hello\"\nstages = [\"stage\"]\nsoak = \"5m\"\n[[trains.smoke]]\nname = \"http\"\ncommand = [\"curl\", \"-f\"]\n";
        let check = |text: &str| check_text(dir.path(), &p, text);
        let c = check(&format!("{env}{train}")).expect("valid");
        let t = &c.trains[0];
        assert_eq!((t.soak.as_secs(), t.verify.as_secs()), (300, 30));
        assert_eq!(
            t.smoke[0].workdir,
            dir.path(),
            "relative to the file, absolute"
        );
        for (from, to, want) in [
            (
                "stages = [\"stage\"]",
                "stages = [\"prod\"]",
                "trains[0].stages[0]: `prod` is not an environment of this conductor",
            ),
            (
                "stages = [\"stage\"]",
                "stages = []",
                "trains[0].stages: is empty",
            ),
            (
                "service = \"hello\"\nstages",
                "service = \"other\"\nstages",
                "trains[0].stages[0]: environment `stage` runs service `hello`, not `other`",
            ),
            (
                "soak = \"5m\"",
                "soak = \"5 minutes\"",
                "trains[0].soak: `5 minutes` is not a duration",
            ),
            (
                "command = [\"curl\", \"-f\"]",
                "command = []",
                "trains[0].smoke[0].command: is empty",
            ),
            (
                "soak = \"5m\"",
                "migration_paths = [\"db/**\"]",
                "trains[0].migration_gate: is missing",
            ),
            (
                "soak = \"5m\"",
                "[trains.slo]\nobjective = 1.5",
                "trains[0].slo.objective: 1.5 is not a share",
            ),
        ] {
            let err = check(&format!("{env}{}", train.replace(from, to))).expect_err(want);
            assert!(err.contains(want), "{err}");
        }
        let err = check(&format!("{env}{train}{train}")).expect_err("twice");
        assert!(
            err.contains("trains[1].service: `hello` has two trains"),
            "{err}"
        );
    }

    #[test]
    fn environments_are_checked_with_their_field_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("conductor.toml");
        let good = "[[environments]]\nname = \"stage\"\nservice = \"hello\"\nlisten = \"127.0.0.1:8600\"\ncommand = [\"python3\", \"-m\", \"app.server\", \"{port}\"]\ntrust_keys = [\"keys/dev.pub\"]\n";
        let check = |text: &str| check_text(dir.path(), &p, text);
        let c = check(good).expect("valid");
        let env = &c.environments[0];
        assert_eq!(
            env.spec.state_dir,
            dir.path().join("envs/stage"),
            "beside the store"
        );
        assert_eq!(
            env.trust_keys,
            [dir.path().join("keys/dev.pub")],
            "relative to the file"
        );
        assert_eq!(env.spec.plan.steps, [500, 2_500, 5_000, 10_000]);
        for (change, want) in [
            (
                "trust_keys = [\"keys/dev.pub\"]",
                "environments[0].trust_keys: is empty",
            ),
            (
                "listen = \"127.0.0.1:8600\"",
                "environments[0].listen: `8600` is not an address",
            ),
            (
                "name = \"stage\"",
                "environments[0].name: `Stage` is not a name",
            ),
        ] {
            let replacement = match want {
                w if w.contains("trust_keys") => "trust_keys = []",
                w if w.contains("listen") => "listen = \"8600\"",
                _ => "name = \"Stage\"",
            };
            let err = check(&good.replace(change, replacement)).expect_err(want);
            assert!(err.contains(want), "{err}");
        }
        let err =
            check(&format!("{good}[environments.canary]\nwindow = \"1s\"\n")).expect_err("window");
        assert!(
            err.contains("environments[0].canary.window: `1s` is shorter than the interval"),
            "{err}"
        );
        let err =
            check(&format!("{good}[environments.canary]\nwindw = \"1s\"\n")).expect_err("typo");
        assert!(err.contains("unknown field `windw`"), "{err}");
        let err = check(&format!("{good}{good}")).expect_err("twice");
        assert!(
            err.contains("environments[1].name: `stage` is configured twice"),
            "{err}"
        );
    }

    #[test]
    fn a_kubernetes_environment_is_checked_with_its_field_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("conductor.toml");
        std::fs::write(
            dir.path().join("kubeconfig"),
            "current-context: prod\ncontexts:\n- name: prod\n  context:\n    cluster: c\n    namespace: shop\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:6443\n",
        )
        .expect("write");
        let good = "[[environments]]\nname = \"prod\"\nservice = \"hello\"\ndriver = \"kubernetes\"\nprometheus = \"http://127.0.0.1:9090\"\ntrust_keys = [\"keys/dev.pub\"]\n[environments.kubernetes]\nkubeconfig = \"kubeconfig\"\nport = 8080\ngateway = \"gateways/public\"\n";
        let check = |text: &str| check_text(dir.path(), &p, text);
        let c = check(good).expect("valid");
        let maestro_deliver::Driver::Kubernetes(k) = &c.environments[0].spec.driver else {
            panic!("the kubernetes driver");
        };
        assert_eq!(k.spec.namespace, "shop", "the context's namespace");
        assert_eq!(k.spec.gateway, ("public".to_owned(), "gateways".to_owned()));
        assert_eq!(k.spec.replicas, 2);
        for (change, replacement, want) in [
            (
                "prometheus = \"http://127.0.0.1:9090\"\n",
                "",
                "environments[0].prometheus: is needed with the kubernetes driver",
            ),
            (
                "gateway = \"gateways/public\"\n",
                "",
                "environments[0].kubernetes.gateway: is needed with traffic = \"gateway-api\"",
            ),
            (
                "gateway = \"gateways/public\"\n",
                "traffic = \"replica-ratio\"\n",
                "",
            ),
            (
                "port = 8080",
                "port = 8080\ntraffic = \"mesh\"",
                "environments[0].kubernetes.traffic: `mesh` is not a split",
            ),
            (
                "kubeconfig = \"kubeconfig\"",
                "kubeconfig = \"missing\"",
                "environments[0].kubernetes.kubeconfig: kubeconfig",
            ),
            (
                "driver = \"kubernetes\"",
                "driver = \"kubernetes\"\ncommand = [\"x\"]",
                "environments[0].command: is for the process driver",
            ),
            (
                "driver = \"kubernetes\"",
                "driver = \"nomad\"",
                "environments[0].driver: `nomad` is not a driver",
            ),
            (
                "port = 8080",
                "port = 8080\nnamespace = \"Shop\"",
                "environments[0].kubernetes.namespace: `Shop` is not a namespace",
            ),
        ] {
            let got = check(&good.replace(change, replacement));
            if want.is_empty() {
                got.expect("valid");
            } else {
                let err = got.expect_err(want);
                assert!(err.contains(want), "{err}");
            }
        }
        let err = check(&format!(
            "{good}[environments.prometheus_queries]\nerrors = \"sum(rate(http_5xx_total[1m]))\"\n"
        ))
        .expect_err("no version");
        assert!(
            err.contains("environments[0].prometheus_queries.errors: `sum(rate(http_5xx_total[1m]))` does not use {version}"),
            "{err}"
        );
        let c = check(&format!(
            "{good}[environments.prometheus_queries]\nrequests = 'sum(increase(istio_requests_total{{destination_version=\"{{version}}\"}}[{{window}}]))'\nlatency_unit = \"milliseconds\"\n"
        ))
        .expect("custom queries");
        let maestro_deliver::MetricsSource::Prometheus(p) = &c.environments[0].spec.metrics else {
            panic!("prometheus");
        };
        assert!(
            p.queries
                .requests
                .starts_with("sum(increase(istio_requests_total")
        );
        assert!((p.queries.latency_unit_seconds - 0.001).abs() < f64::EPSILON);
    }
}
