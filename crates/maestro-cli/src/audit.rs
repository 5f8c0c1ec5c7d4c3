//! Where the audit log, its key and the acting identity come from, for `maestro audit`
//! and for the privileged gates of `maestro run`.

use std::path::{Path, PathBuf};

use maestro_audit::{Actor, Log, LogKey};

use crate::exit::Failure;
use crate::settings::Paths;

/// The PostgreSQL store, when the log is not in the repository's SQLite file.
pub(crate) const DATABASE_ENV: &str = "MAESTRO_DATABASE_URL";
/// The log's private key itself (for CI secrets and conductors), instead of a file.
pub(crate) const KEY_ENV: &str = "MAESTRO_AUDIT_KEY";
/// The log's name, for a new log.
pub(crate) const ORIGIN_ENV: &str = "MAESTRO_AUDIT_ORIGIN";

/// Where the signing key file and its public half live.
pub(crate) fn key_file(paths: &Paths) -> PathBuf {
    paths.home.join("audit").join("log.key")
}

pub(crate) fn pub_file(paths: &Paths) -> PathBuf {
    paths.home.join("audit").join("log.pub")
}

/// Opens the log: PostgreSQL when `database` (or MAESTRO_DATABASE_URL) is set, else the
/// repository's store file.
pub(crate) fn open(paths: &Paths, database: Option<&str>) -> Result<Log, Failure> {
    let url = database
        .map(str::to_owned)
        .or_else(|| std::env::var(DATABASE_ENV).ok().filter(|s| !s.is_empty()));
    match url {
        Some(url) => Log::open_postgres(&url).map_err(|e| {
            Failure::env(
                e,
                "MAESTRO_DATABASE_URL (or --database) names the PostgreSQL store: postgres://user@host:5432/db",
            )
        }),
        None => Log::open_sqlite(&paths.store()).map_err(|e| {
            Failure::env(e, "the audit log is in .maestro/store.db (or set MAESTRO_DATABASE_URL)")
        }),
    }
}

/// The name a new log gets: MAESTRO_AUDIT_ORIGIN, else `maestro.local/<repository dir>`.
fn default_origin(paths: &Paths) -> String {
    if let Ok(o) = std::env::var(ORIGIN_ENV)
        && !o.is_empty()
    {
        return o;
    }
    let dir = paths
        .file
        .canonicalize()
        .ok()
        .and_then(|f| f.parent().map(Path::to_path_buf))
        .or_else(|| std::env::current_dir().ok())
        .and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "repo".to_owned());
    let clean: String = dir
        .chars()
        .map(|c| {
            if c.is_whitespace() || c == '+' {
                '-'
            } else {
                c
            }
        })
        .collect();
    format!("maestro.local/{clean}")
}

/// The signing key: MAESTRO_AUDIT_KEY, else `.maestro/audit/log.key`. With `create`, a
/// new log (one with no key yet) gets a new key file; a log that already has a key is
/// never given a second one silently.
pub(crate) fn key(paths: &Paths, log: &mut Log, create: bool) -> Result<LogKey, Failure> {
    if let Ok(text) = std::env::var(KEY_ENV)
        && !text.trim().is_empty()
    {
        return LogKey::parse(&text).map_err(|e| {
            Failure::usage(
                format!("{KEY_ENV}: {e}"),
                "set it to the contents of the log's key file (.maestro/audit/log.key where it was created), or unset it",
            )
        });
    }
    let file = key_file(paths);
    match std::fs::read_to_string(&file) {
        Ok(text) => LogKey::parse(&text).map_err(|e| {
            Failure::usage(
                format!("{}: {e}", file.display()),
                "the file holds the audit log's private key; restore it from your backup",
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let current = log
                .current_vkey()
                .map_err(|e| Failure::env(e, "the audit log could not be read"))?;
            if let Some(v) = current {
                return Err(Failure::usage(
                    format!(
                        "the audit log is signed by {v}, and this machine has no key for it ({} is missing)",
                        file.display()
                    ),
                    "set MAESTRO_AUDIT_KEY to the log's private key, or copy the key file here",
                ));
            }
            if !create {
                return Err(Failure::usage(
                    "the audit log has no key yet",
                    "the first privileged action or `maestro audit key` creates it",
                ));
            }
            let (key, secret) = LogKey::generate(&default_origin(paths)).map_err(|e| {
                Failure::usage(
                    e.to_string(),
                    "set MAESTRO_AUDIT_ORIGIN to a name like example.com/audit",
                )
            })?;
            maestro_sign::write_atomic(&file, secret.as_bytes(), 0o600)
                .map_err(|e| Failure::env(e, "the audit key could not be written"))?;
            maestro_sign::write_atomic(
                &pub_file(paths),
                format!("{}\n", key.vkey()).as_bytes(),
                0o644,
            )
            .map_err(|e| Failure::env(e, "the audit verifier key could not be written"))?;
            eprintln!(
                "maestro: created the audit log key {} (verifier key {}); keep a copy: checkpoints are signed with it",
                file.display(),
                key.vkey()
            );
            Ok(key)
        }
        Err(e) => Err(Failure::env(
            e,
            "the audit log key file could not be read; check its permissions",
        )),
    }
}

/// Who is acting: the CI run's actor on GitHub Actions, else the operating-system
/// account running the command (from the process's uid, not from the environment).
pub(crate) fn actor() -> Actor {
    if std::env::var("GITHUB_ACTIONS").as_deref() == Ok("true")
        && let Ok(a) = std::env::var("GITHUB_ACTOR")
        && !a.is_empty()
    {
        return Actor {
            id: format!("github:{a}"),
            via: "github-actions".to_owned(),
        };
    }
    let uid = nix::unistd::getuid();
    let name = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| format!("uid:{uid}"), |u| u.name);
    Actor {
        id: name,
        via: "os-user".to_owned(),
    }
}

/// Trusted verifier keys: each `--key` is a key (`name+id+base64`) or a file holding
/// keys, one per line; with none, the log's own `.maestro/audit/log.pub`.
pub(crate) fn trust(paths: &Paths, keys: &[String]) -> Result<maestro_audit::Trust, Failure> {
    let mut texts = Vec::new();
    let from_file = |p: &Path, texts: &mut Vec<String>| -> Result<(), Failure> {
        let meta = std::fs::metadata(p).map_err(|e| {
            Failure::usage(
                format!("{}: {e}", p.display()),
                "pass a verifier key or a file holding one",
            )
        })?;
        if meta.len() > 64 * 1024 {
            return Err(Failure::usage(
                format!("{} is larger than 64 KiB", p.display()),
                "a key file holds one verifier key per line",
            ));
        }
        let text = std::fs::read_to_string(p).map_err(|e| {
            Failure::usage(
                format!("{}: {e}", p.display()),
                "pass a verifier key or a file holding one",
            )
        })?;
        texts.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
        Ok(())
    };
    for k in keys {
        let p = Path::new(k);
        if k.matches('+').count() >= 2 && !p.exists() {
            texts.push(k.clone());
        } else {
            from_file(p, &mut texts)?;
        }
    }
    if keys.is_empty() {
        let p = pub_file(paths);
        if !p.exists() {
            return Err(Failure::usage(
                "no trusted key to verify the audit log with",
                "pass --key with the log's verifier key (`maestro audit key` prints it)",
            ));
        }
        from_file(&p, &mut texts)?;
    }
    maestro_audit::Trust::new(&texts).map_err(|e| {
        Failure::usage(
            e.to_string(),
            "a verifier key looks like name+1a2b3c4d+AbC…",
        )
    })
}

/// Writes publish and deploy jobs to the audit log. The log and its key are opened on the
/// first privileged job, so runs without one never touch them.
#[derive(Debug)]
pub(crate) struct Recorder {
    paths: Paths,
    root: PathBuf,
    reason: Option<String>,
    actor: Actor,
    open: std::sync::Mutex<Option<(Log, LogKey)>>,
    commit_reason: std::sync::OnceLock<Option<String>>,
}

impl Recorder {
    pub(crate) fn new(paths: Paths, root: PathBuf, reason: Option<String>) -> Recorder {
        Recorder {
            paths,
            root,
            reason: reason.filter(|r| !r.trim().is_empty()),
            actor: actor(),
            open: std::sync::Mutex::new(None),
            commit_reason: std::sync::OnceLock::new(),
        }
    }

    /// `--reason`/MAESTRO_REASON, else `<short sha> <subject>` of the checked-out commit.
    fn reason(&self) -> Option<(String, &'static str)> {
        if let Some(r) = &self.reason {
            return Some((r.clone(), "given"));
        }
        let commit = self.commit_reason.get_or_init(|| {
            let out = std::process::Command::new("git")
                .args(["log", "-1", "--format=%h %s"])
                .current_dir(&self.root)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            let s = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            (out.status.success() && !s.is_empty()).then_some(s)
        });
        commit.clone().map(|s| (s, "commit"))
    }

    fn append(&self, entry: &maestro_audit::NewEntry) -> Result<i64, String> {
        let mut guard = self
            .open
            .lock()
            .map_err(|_| "the audit log is unavailable".to_owned())?;
        if guard.is_none() {
            let mut log = open(&self.paths, None).map_err(|f| format!("{:?}", f.report))?;
            let key = key(&self.paths, &mut log, true).map_err(|f| format!("{:?}", f.report))?;
            *guard = Some((log, key));
        }
        let (log, key) = guard
            .as_mut()
            .ok_or_else(|| "the audit log is unavailable".to_owned())?;
        let r = log.append(key, entry).map_err(|e| e.to_string())?;
        i64::try_from(r.index).map_err(|e| e.to_string())
    }

    fn entry(
        &self,
        job: &maestro_engine::privileged::PrivilegedJob,
        result: maestro_audit::Outcome,
        params: serde_json::Value,
        parent: Option<u64>,
    ) -> Result<maestro_audit::NewEntry, String> {
        let action = job.gate.as_str();
        let Some((reason, source)) = self.reason() else {
            return Err(format!(
                "`{action}` is a privileged action and needs a reason for the audit log: pass --reason or set MAESTRO_REASON (in a git repository the commit's subject is used)"
            ));
        };
        let mut params = params;
        if let serde_json::Value::Object(m) = &mut params {
            m.insert("reason_from".into(), source.into());
        }
        Ok(maestro_audit::NewEntry {
            actor: self.actor.clone(),
            action: action.to_owned(),
            target: format!("{}/{}", job.pipeline, job.job),
            params,
            reason: Some(reason),
            result,
            links: maestro_audit::Links {
                run: Some(job.run_id),
                job: Some(job.job.clone()),
                artifact: job.artifacts.first().map(|(_, d)| d.clone()),
                trace: job.trace_id.clone(),
                parent,
                ..maestro_audit::Links::default()
            },
            tenant: None,
        })
    }
}

impl maestro_engine::privileged::Privileged for Recorder {
    fn before(&self, job: &maestro_engine::privileged::PrivilegedJob) -> Result<i64, String> {
        let artifacts: Vec<serde_json::Value> = job
            .artifacts
            .iter()
            .map(|(p, d)| serde_json::json!({"path": p, "digest": d}))
            .collect();
        let e = self.entry(
            job,
            maestro_audit::Outcome::Started,
            serde_json::json!({"artifacts": artifacts}),
            None,
        )?;
        self.append(&e)
    }

    fn after(
        &self,
        job: &maestro_engine::privileged::PrivilegedJob,
        started: i64,
        status: &str,
    ) -> Result<i64, String> {
        let result = if status == "succeeded" {
            maestro_audit::Outcome::Success
        } else {
            maestro_audit::Outcome::Failure
        };
        let e = self.entry(
            job,
            result,
            serde_json::json!({"status": status}),
            u64::try_from(started).ok(),
        )?;
        self.append(&e)
    }
}
