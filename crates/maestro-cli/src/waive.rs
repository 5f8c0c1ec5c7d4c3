//! Applying waivers in a gate and recording every use in the store.

use std::path::{Path, PathBuf};

use maestro_store::{Store as _, WaiverUseRow};
use maestro_waiver::{Subject, WaiverError, Waivers};

use crate::exit::Failure;
use crate::settings::Paths;

/// What a waiver did to one finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// No waiver names it: it counts.
    None,
    /// Waived: it does not count. The text says by whom, why and until when.
    Waived(String),
    /// A waiver named it but has expired: it counts, and the text says so.
    Expired(String),
}

impl Verdict {
    pub(crate) fn waived(&self) -> bool {
        matches!(self, Verdict::Waived(_))
    }

    pub(crate) fn note(&self) -> Option<&str> {
        match self {
            Verdict::None => None,
            Verdict::Waived(s) | Verdict::Expired(s) => Some(s),
        }
    }
}

/// The waivers of one gate run and the uses it made of them.
#[derive(Debug)]
pub(crate) struct Waiving {
    gate: &'static str,
    waivers: Waivers,
    now: jiff::Timestamp,
    uses: Vec<WaiverUseRow>,
}

pub(crate) fn waiver_failure(e: WaiverError) -> Failure {
    match e {
        WaiverError::Io { .. } => Failure::env(e, "check the --waivers path"),
        _ => Failure::usage(
            e.to_string(),
            "a waiver has rule, resource, reason, approver and expires (docs/policy.md#waivers)",
        ),
    }
}

impl Waiving {
    /// `explicit`: a file named on the command line (must exist); otherwise
    /// `.ci/waivers.yaml` when present.
    pub(crate) fn load(gate: &'static str, explicit: Option<&Path>) -> Result<Waiving, Failure> {
        let waivers = match explicit {
            Some(p) => Waivers::load(p, true),
            None => Waivers::load(Path::new(maestro_waiver::DEFAULT_PATH), false),
        }
        .map_err(waiver_failure)?;
        Ok(Waiving {
            gate,
            waivers,
            now: jiff::Timestamp::now(),
            uses: Vec::new(),
        })
    }

    /// Looks a finding up; a waiver that matched, active or expired, is a recorded use.
    pub(crate) fn check(&mut self, subject: &Subject<'_>) -> Verdict {
        let Some(hit) = self.waivers.find(subject, self.now) else {
            return Verdict::None;
        };
        let w = hit.waiver;
        self.uses.push(WaiverUseRow {
            run_id: run_id(),
            job: std::env::var("MAESTRO_JOB").ok(),
            gate: self.gate.to_owned(),
            rule: subject.ids.first().copied().unwrap_or_default().to_owned(),
            subject: subject.resource.unwrap_or(subject.message).to_owned(),
            source: self.waivers.source.display().to_string(),
            waiver_index: i64::try_from(w.index).unwrap_or(i64::MAX),
            reason: w.reason.clone(),
            approver: w.approver.clone(),
            expires: w.expires.clone(),
            expired: hit.expired,
            created_at_ms: self.now.as_millisecond(),
            ..WaiverUseRow::default()
        });
        let text = hit.describe(&self.waivers.source);
        if hit.expired {
            Verdict::Expired(text)
        } else {
            Verdict::Waived(text)
        }
    }

    /// Records a finding let through by an approval label (audited like a waiver).
    pub(crate) fn record_label(&mut self, rule: &str, subject: &str, label: &str) {
        self.uses.push(WaiverUseRow {
            run_id: run_id(),
            job: std::env::var("MAESTRO_JOB").ok(),
            gate: self.gate.to_owned(),
            rule: rule.to_owned(),
            subject: subject.to_owned(),
            source: format!("label {label}"),
            waiver_index: -1,
            reason: format!("the change carries the `{label}` label"),
            approver: "label".to_owned(),
            expires: String::new(),
            expired: false,
            created_at_ms: self.now.as_millisecond(),
            ..WaiverUseRow::default()
        });
    }

    /// Writes the uses to the audit log (`waive` entries: the waiver's reason, approver
    /// and expiry; an expired waiver's hit as `denied`) and to the store, all or none
    /// each. A gate that waived something and cannot record it fails: an unrecorded
    /// waiver is not a waiver.
    pub(crate) fn record(self, paths: &Paths) -> Result<usize, Failure> {
        if self.uses.is_empty() {
            return Ok(0);
        }
        let entries: Vec<maestro_audit::NewEntry> = self
            .uses
            .iter()
            .map(|u| maestro_audit::NewEntry {
                actor: crate::audit::actor(),
                action: "waive".to_owned(),
                target: u.subject.clone(),
                params: serde_json::json!({
                    "gate": u.gate,
                    "rule": u.rule,
                    "source": u.source,
                    "approver": u.approver,
                    "expires": u.expires,
                }),
                reason: Some(u.reason.clone()),
                result: if u.expired {
                    maestro_audit::Outcome::Denied
                } else {
                    maestro_audit::Outcome::Success
                },
                links: maestro_audit::Links {
                    run: u.run_id,
                    job: u.job.clone(),
                    ..maestro_audit::Links::default()
                },
                tenant: None,
            })
            .collect();
        let mut log = crate::audit::open(paths, None)?;
        let key = crate::audit::key(paths, &mut log, true)?;
        log.append_batch(&key, &entries)
            .map_err(|e| Failure::env(e, "waiver uses must be recorded in the audit log"))?;
        let mut store = crate::open_store(paths)?;
        store.waiver_record(&self.uses).map_err(|e| {
            Failure::env(
                e,
                "waiver uses must be recorded: check that .maestro/store.db is writable",
            )
        })?;
        Ok(self.uses.len())
    }
}

fn run_id() -> Option<i64> {
    std::env::var("MAESTRO_RUN_ID")
        .ok()
        .and_then(|v| v.parse().ok())
}

/// The store of the repository a gate runs in.
pub(crate) fn gate_paths(home: Option<PathBuf>) -> Paths {
    crate::settings::paths(&crate::args::Common {
        file: PathBuf::from("maestro.yaml"),
        home,
    })
}
