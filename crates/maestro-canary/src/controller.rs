//! The canary as a state machine: pure, deterministic, every input a method call with the
//! time it happened. The caller persists the state after each call (it is serde) and
//! carries out the actions (route weights, promotion, stopping the canary), so a
//! controller that restarts reloads the state, re-applies [`Canary::weight`], and goes on —
//! a canary never stays half-promoted with nobody watching.

use serde::{Deserialize, Serialize};

use crate::judge::{Check, Judgement, Observation, Status, Streak, Verdict};
use crate::strategy::Plan;

/// Where a canary is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// At a step, analysed every interval.
    Progressing,
    /// Held by hand at its step; still analysed, and still rolled back on failure.
    Paused,
    /// All traffic on the canary, which is now stable.
    Promoted,
    /// Traffic back on stable after a failed analysis, a silent metrics source or the
    /// progress deadline.
    RolledBack,
    /// Stopped by hand; traffic back on stable.
    Aborted,
}

/// What the caller must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Send this share of new requests to the canary (basis points).
    Route(u32),
    /// All traffic to the canary, which becomes stable; the old stable may then stop.
    Finalize,
    /// All traffic to stable at once; stop the canary. Stable is never touched.
    Stop,
}

/// A manual command (the caller authenticates, asks for a reason and audits it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    Pause,
    Resume,
    Abort,
    /// Promote now, whatever the analysis says: the way to ship a fix when stable itself
    /// is broken (and so fails every comparison), reasoned and audited like every command.
    Promote,
}

impl Command {
    /// `pause`, `resume`, `abort`, `promote`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Pause => "pause",
            Command::Resume => "resume",
            Command::Abort => "abort",
            Command::Promote => "promote",
        }
    }
}

/// One line of the canary's timeline (its report).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub at_ms: u64,
    /// `started`, `analysis`, `step`, `blind`, `sighted`, `paused`, `resumed`, `promoted`,
    /// `rolled_back`, `aborted`.
    pub kind: String,
    /// The canary's weight after the event, basis points.
    pub weight: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    pub detail: String,
    /// The checks of a failed (or the first inconclusive) analysis.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
}

/// A canary's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub phase: Phase,
    /// Index into the plan's steps.
    pub step: usize,
    pub started_ms: u64,
    pub step_started_ms: u64,
    /// Passed intervals at this step.
    pub passes: u32,
    pub streak: Streak,
    /// The canary's requests in flight at the last analysis.
    pub backlog: i64,
    /// Since when the metrics source has not answered.
    pub blind_since_ms: Option<u64>,
    pub paused_since_ms: Option<u64>,
    /// Time held by hand, not counted against the progress deadline.
    pub paused_total_ms: u64,
    /// Why it ended, for a rollback or an abort.
    pub reason: Option<String>,
    /// Stable's last interval with enough traffic: what the canary is compared with at the
    /// last step, where stable gets no traffic (kept here so a restart keeps it too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<Observation>,
    pub timeline: Vec<Event>,
}

/// Timeline entries kept: the first ones and the newest (a long canary at a short interval
/// would otherwise grow without bound).
const TIMELINE_MAX: usize = 2_000;

impl Canary {
    /// A canary starting now at the first step.
    #[must_use]
    pub fn start(plan: &Plan, now_ms: u64) -> (Canary, Vec<Action>) {
        let mut c = Canary {
            phase: Phase::Progressing,
            step: 0,
            started_ms: now_ms,
            step_started_ms: now_ms,
            passes: 0,
            streak: Streak::default(),
            backlog: 0,
            blind_since_ms: None,
            paused_since_ms: None,
            paused_total_ms: 0,
            reason: None,
            baseline: None,
            timeline: Vec::new(),
        };
        let w = plan.steps[0];
        c.event(
            now_ms,
            "started",
            w,
            None,
            format!("step 1 of {}: {}", plan.steps.len(), pct(w)),
            Vec::new(),
        );
        (c, vec![Action::Route(w)])
    }

    /// Whether it has ended (promoted, rolled back or aborted).
    #[must_use]
    pub fn done(&self) -> bool {
        matches!(
            self.phase,
            Phase::Promoted | Phase::RolledBack | Phase::Aborted
        )
    }

    /// The canary weight the route must have in this state (what a restarted controller
    /// re-applies).
    #[must_use]
    pub fn weight(&self, plan: &Plan) -> u32 {
        match self.phase {
            Phase::Progressing | Phase::Paused => plan.steps[self.step.min(plan.steps.len() - 1)],
            Phase::Promoted => crate::ALL,
            Phase::RolledBack | Phase::Aborted => 0,
        }
    }

    fn event(
        &mut self,
        at_ms: u64,
        kind: &str,
        weight: u32,
        verdict: Option<Verdict>,
        detail: String,
        checks: Vec<Check>,
    ) {
        if self.timeline.len() >= TIMELINE_MAX {
            // Keep the first hundred (how it began) and drop the oldest of the rest.
            self.timeline.remove(100);
        }
        self.timeline.push(Event {
            at_ms,
            kind: kind.to_owned(),
            weight,
            verdict,
            detail,
            checks,
        });
    }

    fn promote(&mut self, now_ms: u64, detail: String) -> Vec<Action> {
        self.phase = Phase::Promoted;
        self.event(now_ms, "promoted", crate::ALL, None, detail, Vec::new());
        vec![Action::Finalize]
    }

    fn end(&mut self, now_ms: u64, phase: Phase, kind: &str, reason: String) -> Vec<Action> {
        self.phase = phase;
        self.reason = Some(reason.clone());
        self.event(now_ms, kind, 0, None, reason, Vec::new());
        vec![Action::Stop]
    }

    fn active_ms(&self, now_ms: u64) -> u64 {
        let paused_now = self.paused_since_ms.map_or(0, |p| now_ms.saturating_sub(p));
        now_ms
            .saturating_sub(self.started_ms)
            .saturating_sub(self.paused_total_ms + paused_now)
    }

    /// One analysis interval ended at `now_ms`: `Some` judgement of its traffic, or `None`
    /// when the metrics source did not answer.
    pub fn analysed(
        &mut self,
        plan: &Plan,
        now_ms: u64,
        judgement: Option<Judgement>,
    ) -> Vec<Action> {
        if self.done() {
            return Vec::new();
        }
        let w = self.weight(plan);
        if self.phase == Phase::Progressing && self.active_ms(now_ms) >= plan.progress_deadline_ms {
            let last = self.timeline.iter().rev().find_map(|e| e.verdict).map_or(
                "no analysis",
                |v| match v {
                    Verdict::Inconclusive => "too little traffic to judge",
                    Verdict::Pass => "the step's window had not passed",
                    Verdict::Fail => "failing",
                },
            );
            return self.end(
                now_ms,
                Phase::RolledBack,
                "rolled_back",
                format!(
                    "progress deadline of {} s passed at step {} ({}; last analysis: {last})",
                    plan.progress_deadline_ms / 1000,
                    self.step + 1,
                    pct(w)
                ),
            );
        }
        let Some(j) = judgement else {
            let since = *self.blind_since_ms.get_or_insert(now_ms);
            if since == now_ms {
                self.event(
                    now_ms,
                    "blind",
                    w,
                    None,
                    format!(
                        "the metrics source did not answer: holding at {} (never promoted blind); rolling back after {} s",
                        pct(w),
                        plan.metrics_timeout_ms / 1000
                    ),
                    Vec::new(),
                );
            }
            if now_ms - since >= plan.metrics_timeout_ms {
                return self.end(
                    now_ms,
                    Phase::RolledBack,
                    "rolled_back",
                    format!(
                        "the metrics source has not answered for {} s",
                        (now_ms - since) / 1000
                    ),
                );
            }
            return Vec::new();
        };
        if let Some(since) = self.blind_since_ms.take() {
            self.event(
                now_ms,
                "sighted",
                w,
                None,
                format!(
                    "the metrics source answers again after {} s",
                    (now_ms - since) / 1000
                ),
                Vec::new(),
            );
            // The step's window starts again: the blind time proved nothing.
            self.step_started_ms = now_ms;
            self.passes = 0;
        }
        let backlog = j
            .checks
            .iter()
            .find(|c| c.name == "backlog")
            .map_or(0, |c| c.canary as i64);
        self.backlog = backlog;
        let breach = self.streak.record(j.verdict, plan.failure_threshold);
        let first_inconclusive = j.verdict == Verdict::Inconclusive
            && self.timeline.last().and_then(|e| e.verdict) != Some(Verdict::Inconclusive);
        let keep_checks = j.verdict == Verdict::Fail || first_inconclusive;
        let detail = match j.verdict {
            Verdict::Pass => "healthy".to_owned(),
            Verdict::Fail => j.why(),
            Verdict::Inconclusive => j
                .checks
                .iter()
                .find(|c| c.status == Status::NoData)
                .map_or_else(String::new, |c| c.detail.clone()),
        };
        self.event(
            now_ms,
            "analysis",
            w,
            Some(j.verdict),
            detail,
            if keep_checks {
                j.checks.clone()
            } else {
                Vec::new()
            },
        );
        if breach {
            return self.end(
                now_ms,
                Phase::RolledBack,
                "rolled_back",
                format!(
                    "{} failed analyses in a row at step {} ({}): {}",
                    self.streak.failures,
                    self.step + 1,
                    pct(w),
                    j.why()
                ),
            );
        }
        if j.verdict == Verdict::Pass {
            self.passes += 1;
        }
        let window_passed = now_ms.saturating_sub(self.step_started_ms) >= plan.window_ms;
        if self.phase != Phase::Progressing
            || !window_passed
            || self.passes == 0
            || self.streak.failures > 0
        {
            return Vec::new();
        }
        if self.step + 1 == plan.steps.len() {
            let detail = format!(
                "every step healthy: promoted after {} s",
                self.active_ms(now_ms) / 1000
            );
            return self.promote(now_ms, detail);
        }
        self.step += 1;
        self.step_started_ms = now_ms;
        self.passes = 0;
        let w = plan.steps[self.step];
        self.event(
            now_ms,
            "step",
            w,
            None,
            format!("step {} of {}: {}", self.step + 1, plan.steps.len(), pct(w)),
            Vec::new(),
        );
        vec![Action::Route(w)]
    }

    /// A manual command at `now_ms`; `why` is the actor and reason, for the timeline.
    ///
    /// # Errors
    /// When the command does not apply in the current phase (nothing changes).
    pub fn command(
        &mut self,
        plan: &Plan,
        now_ms: u64,
        cmd: Command,
        why: &str,
    ) -> Result<Vec<Action>, String> {
        if self.done() {
            return Err(format!(
                "the canary is already {}",
                match self.phase {
                    Phase::Promoted => "promoted",
                    Phase::RolledBack => "rolled back",
                    _ => "aborted",
                }
            ));
        }
        let w = self.weight(plan);
        Ok(match cmd {
            Command::Pause => {
                if self.phase == Phase::Paused {
                    return Err("the canary is already paused".to_owned());
                }
                self.phase = Phase::Paused;
                self.paused_since_ms = Some(now_ms);
                self.event(
                    now_ms,
                    "paused",
                    w,
                    None,
                    format!("held at {}: {why}", pct(w)),
                    Vec::new(),
                );
                Vec::new()
            }
            Command::Resume => {
                if self.phase != Phase::Paused {
                    return Err("the canary is not paused".to_owned());
                }
                let since = self.paused_since_ms.take().unwrap_or(now_ms);
                self.paused_total_ms += now_ms.saturating_sub(since);
                self.phase = Phase::Progressing;
                // A fresh health window before the next step.
                self.step_started_ms = now_ms;
                self.passes = 0;
                self.event(now_ms, "resumed", w, None, why.to_owned(), Vec::new());
                Vec::new()
            }
            Command::Abort => self.end(
                now_ms,
                Phase::Aborted,
                "aborted",
                format!("aborted by hand: {why}"),
            ),
            Command::Promote => {
                let detail = format!(
                    "promoted by hand at step {} ({}), analysis overridden: {why}",
                    self.step + 1,
                    pct(w)
                );
                self.promote(now_ms, detail)
            }
        })
    }
}

fn pct(bp: u32) -> String {
    if bp.is_multiple_of(100) {
        format!("{}%", bp / 100)
    } else {
        format!("{:.2}%", f64::from(bp) / 100.0)
    }
}
