//! The canary state machine driven through whole canaries: healthy promotion step by step,
//! rollback on consecutive failures (at the last step too), inconclusive traffic holding
//! the step until the progress deadline, a silent metrics source holding then rolling back,
//! manual pause/resume/abort/promote, and a restart from the persisted state.

use maestro_canary::{
    Action, Canary, Check, Command, Judgement, Phase, Plan, Status, Strategy, Verdict,
};

fn plan() -> Plan {
    Strategy::default().plan().expect("the default strategy")
}

fn judged(verdict: Verdict) -> Option<Judgement> {
    let status = match verdict {
        Verdict::Pass => Status::Pass,
        Verdict::Fail => Status::Fail,
        Verdict::Inconclusive => Status::NoData,
    };
    Some(Judgement {
        verdict,
        checks: vec![Check {
            name: "error rate".into(),
            status,
            canary: 0.2,
            stable: Some(0.01),
            p_value: Some(1e-9),
            detail: "canary 20.00% vs stable 1.00%".into(),
        }],
    })
}

/// Analyses every 5 s from `from` to `to` (seconds), all with `verdict`; the actions taken.
fn run(
    c: &mut Canary,
    p: &Plan,
    from: u64,
    to: u64,
    verdict: Option<Verdict>,
) -> Vec<(u64, Action)> {
    let mut out = Vec::new();
    let mut t = from;
    while t <= to {
        for a in c.analysed(p, t * 1000, verdict.and_then(judged)) {
            out.push((t, a));
        }
        t += 5;
    }
    out
}

#[test]
fn a_healthy_canary_promotes_through_every_step() {
    let p = plan();
    let (mut c, first) = Canary::start(&p, 0);
    assert_eq!(first, [Action::Route(500)]);
    let actions = run(&mut c, &p, 5, 200, Some(Verdict::Pass));
    assert_eq!(
        actions,
        [
            (30, Action::Route(2_500)),
            (60, Action::Route(5_000)),
            (90, Action::Route(10_000)),
            (120, Action::Finalize),
        ]
    );
    assert_eq!(c.phase, Phase::Promoted);
    assert_eq!(c.weight(&p), 10_000);
    let kinds: Vec<&str> = c
        .timeline
        .iter()
        .filter(|e| e.kind != "analysis")
        .map(|e| e.kind.as_str())
        .collect();
    assert_eq!(kinds, ["started", "step", "step", "step", "promoted"]);
}

#[test]
fn consecutive_failures_roll_back_and_say_why() {
    let p = plan();
    let (mut c, _) = Canary::start(&p, 0);
    run(&mut c, &p, 5, 30, Some(Verdict::Pass));
    assert_eq!(c.weight(&p), 2_500);
    // One failed interval alone does not roll back; a pass resets the streak.
    assert!(c.analysed(&p, 35_000, judged(Verdict::Fail)).is_empty());
    assert!(c.analysed(&p, 40_000, judged(Verdict::Pass)).is_empty());
    assert!(c.analysed(&p, 45_000, judged(Verdict::Fail)).is_empty());
    assert_eq!(
        c.analysed(&p, 50_000, judged(Verdict::Fail)),
        [Action::Stop]
    );
    assert_eq!(c.phase, Phase::RolledBack);
    assert_eq!(c.weight(&p), 0);
    let reason = c.reason.clone().expect("reason");
    assert!(
        reason.starts_with("2 failed analyses in a row at step 2 (25%): error rate: canary 20.00%"),
        "{reason}"
    );
    let failed = c
        .timeline
        .iter()
        .filter(|e| e.verdict == Some(Verdict::Fail))
        .collect::<Vec<_>>();
    assert!(
        failed.iter().all(|e| !e.checks.is_empty()),
        "failed analyses keep their figures"
    );
    assert!(
        c.analysed(&p, 55_000, judged(Verdict::Pass)).is_empty(),
        "over is over"
    );
    assert!(c.command(&p, 56_000, Command::Resume, "x").is_err());
}

#[test]
fn a_failure_at_the_last_step_returns_traffic_to_the_old_stable() {
    let p = plan();
    let (mut c, _) = Canary::start(&p, 0);
    run(&mut c, &p, 5, 90, Some(Verdict::Pass));
    assert_eq!(c.weight(&p), 10_000, "at the last step");
    let actions = run(&mut c, &p, 95, 100, Some(Verdict::Fail));
    assert_eq!(
        actions,
        [(100, Action::Stop)],
        "stop the canary, never finalize"
    );
    assert_eq!(c.phase, Phase::RolledBack);
}

#[test]
fn too_little_traffic_holds_the_step_until_the_deadline() {
    let p = plan();
    let (mut c, _) = Canary::start(&p, 0);
    let actions = run(&mut c, &p, 5, 899, Some(Verdict::Inconclusive));
    assert!(
        actions.is_empty(),
        "no step, no rollback, no promotion: {actions:?}"
    );
    assert_eq!((c.phase, c.weight(&p)), (Phase::Progressing, 500));
    let inconclusive = c
        .timeline
        .iter()
        .filter(|e| e.verdict == Some(Verdict::Inconclusive))
        .count();
    assert!(inconclusive > 170);
    assert_eq!(
        c.timeline.iter().filter(|e| !e.checks.is_empty()).count(),
        1,
        "the figures of the first inconclusive analysis only"
    );
    assert_eq!(
        c.analysed(&p, 900_000, judged(Verdict::Inconclusive)),
        [Action::Stop]
    );
    let reason = c.reason.clone().expect("reason");
    assert!(reason.contains("progress deadline of 900 s passed at step 1 (5%; last analysis: too little traffic to judge)"), "{reason}");
}

#[test]
fn a_silent_metrics_source_holds_then_rolls_back() {
    let p = plan();
    let (mut c, _) = Canary::start(&p, 0);
    run(&mut c, &p, 5, 25, Some(Verdict::Pass));
    // Blind from 30 s: the window has passed, but nothing is promoted blind.
    assert!(run(&mut c, &p, 30, 60, None).is_empty());
    assert_eq!(c.weight(&p), 500);
    // Back at 65 s: the window starts again.
    assert!(run(&mut c, &p, 65, 90, Some(Verdict::Pass)).is_empty());
    assert_eq!(
        run(&mut c, &p, 95, 95, Some(Verdict::Pass)),
        [(95, Action::Route(2_500))]
    );
    let kinds: Vec<&str> = c
        .timeline
        .iter()
        .map(|e| e.kind.as_str())
        .filter(|k| *k != "analysis")
        .collect();
    assert_eq!(kinds, ["started", "blind", "sighted", "step"]);
    // Silent for 60 s: rolled back.
    let actions = run(&mut c, &p, 100, 160, None);
    assert_eq!(actions, [(160, Action::Stop)]);
    assert!(
        c.reason
            .clone()
            .unwrap_or_default()
            .contains("has not answered for 60 s")
    );
}

#[test]
fn manual_commands() {
    let p = plan();
    let (mut c, _) = Canary::start(&p, 0);
    assert!(
        c.command(&p, 1_000, Command::Resume, "x").is_err(),
        "not paused"
    );
    assert_eq!(
        c.command(&p, 1_000, Command::Pause, "alice: checking the dashboards"),
        Ok(vec![])
    );
    assert!(c.command(&p, 2_000, Command::Pause, "x").is_err());
    // Paused: analysed, never advanced…
    assert!(run(&mut c, &p, 5, 100, Some(Verdict::Pass)).is_empty());
    assert_eq!(
        c.command(&p, 600_000, Command::Resume, "alice: looks fine"),
        Ok(vec![])
    );
    // …and the paused time does not count against the deadline; the window starts again.
    assert!(c.analysed(&p, 610_000, judged(Verdict::Pass)).is_empty());
    assert_eq!(
        c.analysed(&p, 630_000, judged(Verdict::Pass)),
        [Action::Route(2_500)]
    );
    // A failing canary is rolled back even while paused.
    c.command(&p, 631_000, Command::Pause, "bob")
        .expect("pause");
    assert!(c.analysed(&p, 635_000, judged(Verdict::Fail)).is_empty());
    assert_eq!(
        c.analysed(&p, 640_000, judged(Verdict::Fail)),
        [Action::Stop]
    );

    let (mut c, _) = Canary::start(&p, 0);
    assert_eq!(
        c.command(&p, 10_000, Command::Abort, "carol: wrong build"),
        Ok(vec![Action::Stop])
    );
    assert_eq!((c.phase, c.weight(&p)), (Phase::Aborted, 0));
    assert_eq!(
        c.reason.as_deref(),
        Some("aborted by hand: carol: wrong build")
    );
    assert_eq!(
        c.command(&p, 11_000, Command::Promote, "x"),
        Err("the canary is already aborted".into())
    );

    // Stable itself broken: every comparison fails, and a reasoned promote ships the fix.
    let (mut c, _) = Canary::start(&p, 0);
    assert!(c.analysed(&p, 5_000, judged(Verdict::Fail)).is_empty());
    assert_eq!(
        c.command(
            &p,
            6_000,
            Command::Promote,
            "dave: stable is the broken one, INC-7"
        ),
        Ok(vec![Action::Finalize])
    );
    let last = c.timeline.last().expect("event");
    assert!(
        last.detail
            .contains("analysis overridden: dave: stable is the broken one"),
        "{}",
        last.detail
    );
}

#[test]
fn a_restarted_controller_goes_on_from_the_persisted_state() {
    let p = plan();
    let (mut c, _) = Canary::start(&p, 0);
    run(&mut c, &p, 5, 40, Some(Verdict::Pass));
    let saved = serde_json::to_string(&c).expect("persist");
    // The process dies here; a new one reloads the state and re-applies its weight.
    let mut again: Canary = serde_json::from_str(&saved).expect("reload");
    assert_eq!(again, c);
    assert_eq!(again.weight(&p), 2_500);
    let a = run(&mut again, &p, 45, 200, Some(Verdict::Pass));
    let b = run(&mut c, &p, 45, 200, Some(Verdict::Pass));
    assert_eq!(a, b);
    assert_eq!(again.phase, Phase::Promoted);
}
