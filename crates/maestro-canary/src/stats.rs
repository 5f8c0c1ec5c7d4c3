//! The statistics of canary analysis, as Kayenta's judge uses them: a one-sided
//! two-proportion z-test for rates (errors, denials) and a one-sided Mann-Whitney U test
//! for latency distributions, each with its effect size, so a verdict needs both a
//! significant difference and a material one.

/// √2.
const SQRT_2: f64 = std::f64::consts::SQRT_2;

/// The complementary error function, Chebyshev fit (Numerical Recipes' `erfcc`): fractional
/// error under 1.2 × 10⁻⁷ everywhere, which is far below any significance level used.
#[must_use]
pub fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let poly = -z * z - 1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    let ans = t * poly.exp();
    if x >= 0.0 { ans } else { 2.0 - ans }
}

/// P(Z > z) for a standard normal Z.
#[must_use]
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / SQRT_2)
}

/// A one-sided test's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Test {
    /// The probability of a difference at least this large in the direction tested if
    /// there were none (small = significant).
    pub p_value: f64,
    pub z: f64,
}

/// Whether the canary's rate `x1/n1` is higher than stable's `x2/n2`: the pooled
/// two-proportion z-test, one-sided. No events or only events on both sides give p = 1.
#[must_use]
pub fn two_proportion(x1: u64, n1: u64, x2: u64, n2: u64) -> Test {
    if n1 == 0 || n2 == 0 {
        return Test {
            p_value: 1.0,
            z: 0.0,
        };
    }
    let (x1f, n1f, x2f, n2f) = (x1 as f64, n1 as f64, x2 as f64, n2 as f64);
    let pooled = (x1f + x2f) / (n1f + n2f);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1f + 1.0 / n2f)).sqrt();
    if se == 0.0 || !se.is_finite() {
        return Test {
            p_value: 1.0,
            z: 0.0,
        };
    }
    let z = (x1f / n1f - x2f / n2f) / se;
    Test {
        p_value: normal_sf(z),
        z,
    }
}

/// Whether the true rate behind `x` events in `n` exceeds `p0`: the one-sample proportion
/// z-test, one-sided (an absolute limit judged on evidence, not on a noisy estimate).
#[must_use]
pub fn one_proportion(x: u64, n: u64, p0: f64) -> Test {
    if n == 0 || !(p0 > 0.0 && p0 < 1.0) {
        return Test {
            p_value: if n > 0 && p0 <= 0.0 && x > 0 {
                0.0
            } else {
                1.0
            },
            z: 0.0,
        };
    }
    let nf = n as f64;
    let z = (x as f64 / nf - p0) / (p0 * (1.0 - p0) / nf).sqrt();
    Test {
        p_value: normal_sf(z),
        z,
    }
}

/// ln(n!): exact sums below 256, Stirling's series above (error < 10⁻¹⁵ there).
#[must_use]
pub fn ln_factorial(n: u64) -> f64 {
    if n < 256 {
        return (2..=n).map(|k| (k as f64).ln()).sum();
    }
    let x = n as f64;
    x * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI * x).ln() + 1.0 / (12.0 * x)
        - 1.0 / (360.0 * x * x * x)
        + 1.0 / (1260.0 * x.powi(5))
}

/// Counts up to which the exact tests are used; the normal approximations beyond.
const EXACT_UP_TO: u64 = 20_000;

/// Whether the canary's rate `x1/n1` is higher than stable's `x2/n2`: Fisher's exact test
/// (one-sided) while events are few — rare events are where the normal approximation
/// fails, 4 errors in 50 requests against a 2% base rate is not a 10⁻⁴ event — and the
/// two-proportion z-test beyond [`EXACT_UP_TO`] events.
#[must_use]
pub fn rate_increase(x1: u64, n1: u64, x2: u64, n2: u64) -> Test {
    let events = x1 + x2;
    if n1 == 0 || n2 == 0 || events > EXACT_UP_TO {
        return two_proportion(x1, n1, x2, n2);
    }
    // X ~ Hypergeometric(N = n1 + n2, K = events, draws = n1); p = P(X ≥ x1).
    let (n, k) = (n1 + n2, events);
    let ln_choose = |a: u64, b: u64| ln_factorial(a) - ln_factorial(b) - ln_factorial(a - b);
    let top = k.min(n1);
    if x1 > top {
        return Test {
            p_value: 0.0,
            z: two_proportion(x1, n1, x2, n2).z,
        };
    }
    let ln_total = ln_choose(n, n1);
    let mut term = (ln_choose(k, x1) + ln_choose(n - k, n1 - x1) - ln_total).exp();
    let mut sum = term;
    for j in x1..top {
        // P(j+1) / P(j) = (K−j)(n1−j) / ((j+1)(N−K−n1+j+1))
        let (kf, nf, n1f, jf) = (k as f64, n as f64, n1 as f64, j as f64);
        term *= (kf - jf) * (n1f - jf) / ((jf + 1.0) * (nf - kf - n1f + jf + 1.0));
        sum += term;
        if term < sum * 1e-17 {
            break;
        }
    }
    Test {
        p_value: sum.min(1.0),
        z: two_proportion(x1, n1, x2, n2).z,
    }
}

/// Whether the true rate behind `x` events in `n` exceeds `p0`: the exact binomial tail
/// P(X ≥ x) while `n` is at most [`EXACT_UP_TO`], the one-sample z-test beyond.
#[must_use]
pub fn rate_over(x: u64, n: u64, p0: f64) -> Test {
    if n == 0 || n > EXACT_UP_TO || !(p0 > 0.0 && p0 < 1.0) {
        return one_proportion(x, n, p0);
    }
    let z = one_proportion(x, n, p0).z;
    if x == 0 {
        return Test { p_value: 1.0, z };
    }
    let (nf, ln_p, ln_q) = (n as f64, p0.ln(), (1.0 - p0).ln());
    let mut term = (ln_factorial(n) - ln_factorial(x) - ln_factorial(n - x)
        + x as f64 * ln_p
        + (n - x) as f64 * ln_q)
        .exp();
    let mut sum = term;
    for k in x..n {
        let kf = k as f64;
        term *= (nf - kf) / (kf + 1.0) * p0 / (1.0 - p0);
        sum += term;
        if term < sum * 1e-17 && kf > nf * p0 {
            break;
        }
    }
    Test {
        p_value: sum.min(1.0),
        z,
    }
}

/// The Mann-Whitney U test's outcome.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankTest {
    pub test: Test,
    /// The common-language effect size: the probability that a canary sample exceeds a
    /// stable one (ties count half); 0.5 = no difference.
    pub effect: f64,
}

/// Whether the canary's samples `x` tend to be larger than stable's `y`: the Mann-Whitney
/// U test, one-sided, normal approximation with tie and continuity corrections (exact
/// enough from about 20 samples a side, which the minimum request count ensures).
#[must_use]
pub fn mann_whitney(x: &[f64], y: &[f64]) -> RankTest {
    let (n1, n2) = (x.len(), y.len());
    if n1 == 0 || n2 == 0 {
        return RankTest {
            test: Test {
                p_value: 1.0,
                z: 0.0,
            },
            effect: 0.5,
        };
    }
    let mut all: Vec<(f64, bool)> = x
        .iter()
        .map(|&v| (v, true))
        .chain(y.iter().map(|&v| (v, false)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    let n = all.len();
    let mut rank_sum_x = 0.0;
    let mut ties = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i + 1;
        while j < n && all[j].0 == all[i].0 {
            j += 1;
        }
        // Ranks i+1 ..= j share their mean.
        let mean_rank = (i + 1 + j) as f64 / 2.0;
        let in_x = all[i..j].iter().filter(|(_, is_x)| *is_x).count();
        rank_sum_x += mean_rank * in_x as f64;
        let t = (j - i) as f64;
        ties += t * t * t - t;
        i = j;
    }
    let (n1f, n2f, nf) = (n1 as f64, n2 as f64, n as f64);
    let u1 = rank_sum_x - n1f * (n1f + 1.0) / 2.0;
    let mean = n1f * n2f / 2.0;
    let var = n1f * n2f / 12.0 * ((nf + 1.0) - ties / (nf * (nf - 1.0)));
    let effect = u1 / (n1f * n2f);
    if var <= 0.0 {
        return RankTest {
            test: Test {
                p_value: 1.0,
                z: 0.0,
            },
            effect,
        };
    }
    let z = (u1 - mean - 0.5) / var.sqrt();
    RankTest {
        test: Test {
            p_value: normal_sf(z),
            z,
        },
        effect,
    }
}

/// The `q` quantile (0–1) by nearest rank; NaN of nothing.
#[must_use]
pub fn quantile(samples: &[f64], q: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    let rank = (q.clamp(0.0, 1.0) * s.len() as f64).ceil() as usize;
    s[rank.clamp(1, s.len()) - 1]
}

/// At most `cap` of `samples`, evenly spaced (deterministic): the rank test is O(n log n)
/// and a few thousand samples a side already detect any difference worth a rollback.
#[must_use]
pub fn thin(samples: &[f64], cap: usize) -> Vec<f64> {
    if samples.len() <= cap || cap == 0 {
        return samples.to_vec();
    }
    (0..cap).map(|i| samples[i * samples.len() / cap]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn the_normal_tail_matches_tables() {
        assert!(close(erfc(0.0), 1.0, 1e-7));
        assert!(close(erfc(1.0), 0.157_299_207, 1e-7));
        assert!(close(erfc(-1.0), 1.842_700_793, 1e-7));
        assert!(close(normal_sf(1.959_964), 0.025, 1e-6));
        assert!(close(normal_sf(2.326_348), 0.01, 1e-6));
        assert!(close(normal_sf(3.090_232), 0.001, 1e-7));
    }

    /// Reference values from SciPy 1.18 (`scipy.stats.mannwhitneyu(x, y,
    /// alternative="greater", use_continuity=True, method="asymptotic")`, and the pooled
    /// z statistic with `scipy.stats.norm.sf`).
    #[test]
    fn the_tests_agree_with_scipy() {
        let x = [
            12.0, 15.0, 15.0, 18.0, 20.0, 22.0, 22.0, 25.0, 30.0, 31.0, 35.0, 40.0, 41.0, 41.0,
            50.0,
        ];
        let y = [
            10.0, 11.0, 12.0, 12.0, 14.0, 15.0, 15.0, 16.0, 18.0, 19.0, 20.0, 20.0, 21.0, 25.0,
            26.0, 28.0,
        ];
        let r = mann_whitney(&x, &y);
        assert!(
            close(r.test.p_value, 0.004_731_252_597_925_933, 1e-7),
            "{r:?}"
        );
        assert!(close(r.effect, 186.0 / (15.0 * 16.0), 1e-12));
        let r = mann_whitney(&y, &x);
        assert!(
            close(r.test.p_value, 0.995_786_840_769_628_1, 1e-7),
            "{r:?}"
        );

        let t = two_proportion(30, 1000, 12, 1000);
        assert!(close(t.z, 2.807_091_143_648_430_3, 1e-9));
        assert!(close(t.p_value, 0.002_499_554_752_232_309_6, 1e-8), "{t:?}");
        let t = two_proportion(5, 200, 400, 20_000);
        assert!(close(t.p_value, 0.307_847_296_824_888_54, 1e-7), "{t:?}");
        assert_eq!(two_proportion(0, 100, 0, 100).p_value, 1.0);
        assert_eq!(two_proportion(3, 0, 0, 100).p_value, 1.0);
    }

    /// SciPy 1.18: `fisher_exact([[x1, n1-x1], [x2, n2-x2]], alternative="greater")` and
    /// `binomtest(x, n, p, alternative="greater")`.
    #[test]
    fn the_exact_tests_agree_with_scipy() {
        for (x1, n1, x2, n2, want) in [
            (4, 50, 19, 950, 0.024_218_732_607_597_55),
            (30, 1000, 12, 1000, 0.003_643_976_753_584_297_6),
            (3, 20, 0, 40, 0.033_313_851_548_801_87),
        ] {
            let got = rate_increase(x1, n1, x2, n2).p_value;
            assert!(
                close(got, want, want * 1e-9),
                "{x1}/{n1} vs {x2}/{n2}: {got} != {want}"
            );
        }
        for (x, n, p, want) in [
            (8, 50, 0.05, 0.003_188_343_222_297_589),
            (4, 50, 0.05, 0.239_592_039_049_899_92),
            (30, 200, 0.05, 8.709_270_943_980_009e-8),
        ] {
            let got = rate_over(x, n, p).p_value;
            assert!(
                close(got, want, want * 1e-9),
                "{x}/{n} over {p}: {got} != {want}"
            );
        }
        assert!(close(ln_factorial(300), 1_414.905_849_945_068, 1e-9));
    }

    #[test]
    fn quantiles_and_thinning() {
        let s: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&s, 0.95), 95.0);
        assert_eq!(quantile(&s, 0.5), 50.0);
        assert!(quantile(&[], 0.5).is_nan());
        assert_eq!(
            thin(&s, 10),
            [1.0, 11.0, 21.0, 31.0, 41.0, 51.0, 61.0, 71.0, 81.0, 91.0]
        );
    }
}
