//! The judge on simulated traffic: noise alone never rolls a canary back (thousands of
//! intervals of identical versions), real regressions fail, too little traffic is
//! inconclusive, and the poison signals are conclusive on few requests.

use maestro_canary::{Limits, Observation, Status, Streak, Verdict, judge};

/// xorshift64*: a small deterministic generator, so every run sees the same traffic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Log-normal latency around `median_ms` (σ = 0.5), like real services'.
    fn latency(&mut self, median_ms: f64) -> f64 {
        let (u1, u2) = (self.unit().max(1e-12), self.unit());
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        median_ms * (0.5 * z).exp()
    }
}

fn traffic(rng: &mut Rng, requests: u64, error_rate: f64, median_ms: f64) -> Observation {
    let mut o = Observation {
        requests,
        ..Observation::default()
    };
    for _ in 0..requests {
        if rng.unit() < error_rate {
            o.errors += 1;
        }
        o.latencies_ms.push(rng.latency(median_ms));
    }
    o
}

#[test]
fn noise_alone_never_rolls_a_canary_back() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let l = Limits::default();
    let (mut failed, mut streak, mut rollbacks) = (0, Streak::default(), 0);
    for _ in 0..5_000 {
        // A 5% canary: 50 requests against stable's 950, same 2% errors, same latency.
        let canary = traffic(&mut rng, 50, 0.02, 40.0);
        let stable = traffic(&mut rng, 950, 0.02, 40.0);
        let j = judge(&canary, &stable, 0, &l);
        assert_ne!(j.verdict, Verdict::Inconclusive, "{j:?}");
        if j.verdict == Verdict::Fail {
            failed += 1;
        }
        if streak.record(j.verdict, 2) {
            rollbacks += 1;
            streak = Streak::default();
        }
    }
    // Each check errs with probability under alpha (0.1%; the exact tests are
    // conservative), and two failed intervals in a row are needed to roll back.
    assert!(
        failed <= 10,
        "{failed} of 5,000 intervals failed on noise alone"
    );
    assert_eq!(rollbacks, 0);
}

#[test]
fn a_streak_needs_consecutive_failures() {
    let mut s = Streak::default();
    assert!(!s.record(Verdict::Fail, 2));
    assert!(
        !s.record(Verdict::Inconclusive, 2),
        "no evidence either way"
    );
    assert!(s.record(Verdict::Fail, 2));
    let mut s = Streak::default();
    assert!(!s.record(Verdict::Fail, 2));
    assert!(!s.record(Verdict::Pass, 2));
    assert!(!s.record(Verdict::Fail, 2), "a pass in between resets");
    assert!(Streak::default().record(Verdict::Fail, 1));
}

#[test]
fn an_error_regression_fails_and_says_why() {
    let mut rng = Rng(7);
    let canary = traffic(&mut rng, 100, 0.20, 40.0);
    let stable = traffic(&mut rng, 1_900, 0.01, 40.0);
    let j = judge(&canary, &stable, 0, &Limits::default());
    assert_eq!(j.verdict, Verdict::Fail);
    let check = j
        .checks
        .iter()
        .find(|c| c.name == "error rate")
        .expect("check");
    assert_eq!(check.status, Status::Fail);
    assert!(check.p_value.is_some_and(|p| p < 1e-6), "{check:?}");
    assert!(j.why().contains("error rate: canary 2"), "{}", j.why());
}

#[test]
fn a_latency_regression_fails() {
    let mut rng = Rng(11);
    let canary = traffic(&mut rng, 100, 0.0, 240.0);
    let stable = traffic(&mut rng, 1_900, 0.0, 40.0);
    let j = judge(&canary, &stable, 0, &Limits::default());
    assert_eq!(j.verdict, Verdict::Fail, "{j:?}");
    assert!(j.why().starts_with("latency p95:"), "{}", j.why());
    // The same shift under the tolerance (5%) passes: significant is not material.
    let canary = traffic(&mut rng, 20_000, 0.0, 42.0);
    let stable = traffic(&mut rng, 20_000, 0.0, 40.0);
    let j = judge(&canary, &stable, 0, &Limits::default());
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.why());
}

#[test]
fn a_small_significant_error_difference_at_high_traffic_is_not_material() {
    let canary = Observation {
        requests: 1_000_000,
        errors: 12_000,
        ..Observation::default()
    };
    let stable = Observation {
        requests: 1_000_000,
        errors: 10_000,
        ..Observation::default()
    };
    let j = judge(&canary, &stable, 0, &Limits::default());
    let check = j
        .checks
        .iter()
        .find(|c| c.name == "error rate")
        .expect("check");
    assert!(check.p_value.is_some_and(|p| p < 1e-10));
    assert_eq!(
        check.status,
        Status::Pass,
        "0.2 points over stable, tolerance 1"
    );
}

#[test]
fn too_little_traffic_is_inconclusive_not_a_verdict() {
    let mut rng = Rng(3);
    // Even a bad canary: 2 of 8 requests failed is no evidence either way.
    let mut canary = traffic(&mut rng, 8, 0.0, 40.0);
    canary.errors = 2;
    let stable = traffic(&mut rng, 500, 0.0, 40.0);
    let j = judge(&canary, &stable, 0, &Limits::default());
    assert_eq!(j.verdict, Verdict::Inconclusive, "{j:?}");
    let error_rate = j
        .checks
        .iter()
        .find(|c| c.name == "error rate")
        .expect("check");
    assert_eq!(error_rate.status, Status::NoData);
    assert!(
        error_rate
            .detail
            .contains("8 canary and 500 stable requests; 50 each needed")
    );
}

#[test]
fn poison_signals_are_conclusive_on_few_requests() {
    let mut rng = Rng(5);
    let mut canary = traffic(&mut rng, 12, 0.0, 40.0);
    canary.errors = 12;
    let stable = traffic(&mut rng, 200, 0.0, 40.0);
    let j = judge(&canary, &stable, 0, &Limits::default());
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(j.why().starts_with("5xx spike: 12 of 12"), "{}", j.why());

    let mut canary = traffic(&mut rng, 200, 0.0, 40.0);
    canary.in_flight = 150;
    let j = judge(&canary, &stable, 120, &Limits::default());
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(j.why().contains("backlog"), "{}", j.why());
    // Over the limit but draining is not a failure.
    let j = judge(&canary, &stable, 180, &Limits::default());
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.why());

    let mut canary = traffic(&mut rng, 200, 0.0, 40.0);
    canary.denied = 40;
    let j = judge(&canary, &stable, 0, &Limits::default());
    assert_eq!(j.verdict, Verdict::Fail);
    assert!(j.why().starts_with("authz denials"), "{}", j.why());
}

#[test]
fn limits_are_checked() {
    assert_eq!(Limits::default().check(), Ok(()));
    let bad = Limits {
        alpha: 0.7,
        ..Limits::default()
    };
    assert!(bad.check().expect_err("refused").starts_with("alpha: 0.7"));
    let bad = Limits {
        min_requests: 5,
        ..Limits::default()
    };
    assert!(bad.check().expect_err("refused").contains("at least 20"));
}

/// A bug once: an interval without latency samples put NaN in the checks, which JSON
/// writes as null and cannot read back, so a restarted controller could not load the
/// canary's state.
#[test]
fn a_judgement_without_samples_survives_a_round_trip_through_json() {
    let j = judge(
        &Observation::default(),
        &Observation::default(),
        0,
        &Limits::default(),
    );
    assert_eq!(j.verdict, Verdict::Inconclusive);
    let text = serde_json::to_string(&j).expect("json");
    let back: maestro_canary::Judgement = serde_json::from_str(&text).expect("read back");
    assert_eq!(back.checks.len(), j.checks.len());
}

#[test]
fn against_a_baseline_latency_is_held_to_the_limit_not_to_stable() {
    let mut rng = Rng(13);
    // At the last step the canary carries all the load: slower than stable was at half.
    let canary = traffic(&mut rng, 500, 0.0, 60.0);
    let baseline = traffic(&mut rng, 500, 0.0, 20.0);
    let l = Limits::default();
    assert_eq!(judge(&canary, &baseline, 0, &l).verdict, Verdict::Fail);
    let j =
        maestro_canary::judge_against(&canary, &baseline, 0, &l, maestro_canary::Against::Baseline);
    assert_eq!(j.verdict, Verdict::Pass, "{}", j.why());
    assert!(j.checks.iter().all(|c| c.name != "latency p95"));
    // Rates still compare, and the absolute latency limit still holds.
    let mut failing = canary.clone();
    failing.errors = 100;
    let j = maestro_canary::judge_against(
        &failing,
        &baseline,
        0,
        &l,
        maestro_canary::Against::Baseline,
    );
    assert_eq!(j.verdict, Verdict::Fail);
    let limited = Limits {
        max_p95_ms: Some(50.0),
        ..Limits::default()
    };
    let j = maestro_canary::judge_against(
        &canary,
        &baseline,
        0,
        &limited,
        maestro_canary::Against::Baseline,
    );
    assert_eq!(j.verdict, Verdict::Fail, "{}", j.why());
    assert!(j.why().starts_with("latency p95 limit"), "{}", j.why());
}
