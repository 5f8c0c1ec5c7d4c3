//! SLOs to Prometheus rule groups.
//!
//! Per SLO, three groups:
//! - `slo:<name>:sli`: the error ratio over every window the alerts use,
//!   `slo:sli_error:ratio_rate<window>{slo, service}`;
//! - `slo:<name>:meta`: per objective, `slo:objective:ratio`, `slo:error_budget:ratio`, the
//!   error ratio over the whole period and `slo:error_budget_remaining:ratio` (what the
//!   release train reads);
//! - `slo:<name>:alerts`: per objective, the SRE workbook's multi-window, multi-burn-rate
//!   alert, `severity: page` (2% of the budget in 1h and 5% in 6h) and `severity: ticket`
//!   (10% in 1d and in 3d), each long window confirmed by a short one (1/12 of it) so that
//!   an alert stops soon after the burn does.

use std::fmt::Write as _;

use crate::yaml;
use crate::{Errors, Slo};

/// The 30-day period the workbook's table is written for, in minutes.
const BASE_PERIOD: u64 = 30 * 24 * 60;

/// The workbook's table for a 30-day SLO: (severity, long window, short window, share of
/// the budget spent in the long window). The burn factor is share × period ÷ long window:
/// 14.4, 6, 3 and 1.
const TABLE: [(&str, u64, u64, f64); 4] = [
    ("page", 60, 5, 0.02),
    ("page", 6 * 60, 30, 0.05),
    ("ticket", 24 * 60, 2 * 60, 0.10),
    ("ticket", 3 * 24 * 60, 6 * 60, 0.10),
];

/// One row of the alerting table, scaled to an SLO's period.
#[derive(Debug, Clone, PartialEq)]
pub struct BurnWindow {
    pub severity: &'static str,
    pub long_minutes: u64,
    pub short_minutes: u64,
    /// How many times faster than "exactly the budget over the period" errors arrive.
    pub factor: f64,
    /// The share of the period's budget spent when the long window fires.
    pub budget_share: f64,
}

/// The workbook's windows for a period: the 30-day table with every window scaled by
/// period ÷ 30 days (to whole minutes, at least 1), the factors recomputed from the scaled
/// long window so that each alert still fires on the same share of the budget.
#[must_use]
pub fn burn_windows(period_minutes: u64) -> Vec<BurnWindow> {
    let scale = |w: u64| -> u64 {
        let exact = u128::from(w) * u128::from(period_minutes);
        let base = u128::from(BASE_PERIOD);
        u64::try_from((exact + base / 2) / base)
            .unwrap_or(u64::MAX)
            .max(1)
    };
    TABLE
        .iter()
        .map(|&(severity, long, short, share)| {
            let long_minutes = scale(long);
            BurnWindow {
                severity,
                long_minutes,
                short_minutes: scale(short),
                factor: share * period_minutes as f64 / long_minutes as f64,
                budget_share: share,
            }
        })
        .collect()
}

/// A PromQL duration: whole days, hours or minutes (`3d`, `6h`, `84m`).
#[must_use]
pub fn duration(minutes: u64) -> String {
    if minutes.is_multiple_of(24 * 60) {
        format!("{}d", minutes / (24 * 60))
    } else if minutes.is_multiple_of(60) {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

/// A number as PromQL and humans write it: at most 12 decimals, no trailing zeros.
fn num(x: f64) -> String {
    let s = format!("{x:.12}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// One rule of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rule {
    Record {
        record: String,
        expr: String,
        labels: Vec<(String, String)>,
    },
    Alert {
        alert: String,
        expr: String,
        labels: Vec<(String, String)>,
        annotations: Vec<(String, String)>,
    },
}

/// A rule group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub(crate) name: String,
    pub(crate) rules: Vec<Rule>,
}

fn camel(name: &str) -> String {
    name.split(['-', '_'])
        .filter(|p| !p.is_empty())
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// The rule groups for these SLOs, in order.
#[must_use]
pub fn rules(slos: &[Slo]) -> Vec<Group> {
    let mut groups = Vec::with_capacity(slos.len() * 3);
    for slo in slos {
        let windows = burn_windows(slo.period_minutes);
        let mut ranges: Vec<u64> = windows
            .iter()
            .flat_map(|w| [w.short_minutes, w.long_minutes])
            .collect();
        ranges.sort_unstable();
        ranges.dedup();
        let base = vec![
            ("slo".to_owned(), slo.name.clone()),
            ("service".to_owned(), slo.service.clone()),
        ];
        let sel = format!("{{slo=\"{}\"}}", slo.name);

        let sli = ranges
            .iter()
            .map(|&m| {
                let w = duration(m);
                let total = slo.total.rate(&w);
                let expr = match &slo.errors {
                    Errors::Bad(bad) => format!("({})\n/\n({total})", bad.rate(&w)),
                    Errors::Good(good) => {
                        format!("1 - (\n  ({})\n  /\n  ({total})\n)", good.rate(&w))
                    }
                };
                Rule::Record {
                    record: format!("slo:sli_error:ratio_rate{w}"),
                    expr,
                    labels: base.clone(),
                }
            })
            .collect();
        groups.push(Group {
            name: format!("slo:{}:sli", slo.name),
            rules: sli,
        });

        let period = duration(slo.period_minutes);
        let shortest = duration(ranges.first().copied().unwrap_or(5));
        let mut meta = vec![Rule::Record {
            record: format!("slo:sli_error:ratio_rate{period}"),
            expr: format!(
                "sum_over_time(slo:sli_error:ratio_rate{shortest}{sel}[{period}])\n/ count_over_time(slo:sli_error:ratio_rate{shortest}{sel}[{period}])"
            ),
            labels: base.clone(),
        }];
        let mut alerts = Vec::new();
        for (target, display) in &slo.objectives {
            let budget = num(1.0 - target);
            let mut labels = base.clone();
            labels.push(("objective".to_owned(), num(*target)));
            meta.push(Rule::Record {
                record: "slo:objective:ratio".to_owned(),
                expr: format!("vector({})", num(*target)),
                labels: labels.clone(),
            });
            meta.push(Rule::Record {
                record: "slo:error_budget:ratio".to_owned(),
                expr: format!("vector({budget})"),
                labels: labels.clone(),
            });
            meta.push(Rule::Record {
                record: "slo:error_budget_remaining:ratio".to_owned(),
                expr: format!("1 - slo:sli_error:ratio_rate{period}{sel} / {budget}"),
                labels: labels.clone(),
            });
            for severity in ["page", "ticket"] {
                let rows: Vec<&BurnWindow> =
                    windows.iter().filter(|w| w.severity == severity).collect();
                let expr = rows
                    .iter()
                    .map(|w| {
                        let threshold = format!("({} * {budget})", num(w.factor));
                        format!(
                            "(\n  slo:sli_error:ratio_rate{long}{sel} > {threshold}\n  and\n  slo:sli_error:ratio_rate{short}{sel} > {threshold}\n)",
                            long = duration(w.long_minutes),
                            short = duration(w.short_minutes),
                        )
                    })
                    .collect::<Vec<_>>()
                    .join("\nor\n");
                let mut description = String::new();
                for w in &rows {
                    let _ = write!(
                        description,
                        "{}× the sustainable error rate over {} and {} ({}% of the {period} budget in {}); ",
                        num(w.factor),
                        duration(w.long_minutes),
                        duration(w.short_minutes),
                        num(w.budget_share * 100.0),
                        duration(w.long_minutes),
                    );
                }
                let description = format!(
                    "{}: errors are burning the error budget at {}",
                    display.as_deref().unwrap_or(&slo.name),
                    description.trim_end_matches("; ")
                );
                let mut labels = labels.clone();
                labels.push(("severity".to_owned(), severity.to_owned()));
                alerts.push(Rule::Alert {
                    alert: format!("{}ErrorBudgetBurn", camel(&slo.name)),
                    expr,
                    labels,
                    annotations: vec![
                        (
                            "summary".to_owned(),
                            format!(
                                "{} is burning its error budget ({} SLO {}%)",
                                slo.service,
                                slo.display_name.as_deref().unwrap_or(&slo.name),
                                num(target * 100.0)
                            ),
                        ),
                        ("description".to_owned(), description),
                    ],
                });
            }
        }
        groups.push(Group {
            name: format!("slo:{}:meta", slo.name),
            rules: meta,
        });
        groups.push(Group {
            name: format!("slo:{}:alerts", slo.name),
            rules: alerts,
        });
    }
    groups
}

/// A Prometheus rule file (YAML) with these groups, headed by a comment naming the SLOs'
/// sources.
#[must_use]
pub fn render(slos: &[Slo], groups: &[Group]) -> String {
    let mut out = String::from(
        "# Generated by `maestro slo rules` from OpenSLO v1 definitions; do not edit.\n",
    );
    for slo in slos {
        let _ = writeln!(
            out,
            "# {} ({}, {} rolling, objectives {}) from {}",
            slo.name,
            slo.service,
            duration(slo.period_minutes),
            slo.objectives
                .iter()
                .map(|(t, _)| num(*t))
                .collect::<Vec<_>>()
                .join(", "),
            slo.source
        );
    }
    out.push_str(&yaml::groups(groups));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workbook_table_for_thirty_days() {
        let w = burn_windows(BASE_PERIOD);
        let rows: Vec<(&str, String, String, String)> = w
            .iter()
            .map(|w| {
                (
                    w.severity,
                    duration(w.long_minutes),
                    duration(w.short_minutes),
                    num(w.factor),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                ("page", "1h".into(), "5m".into(), "14.4".into()),
                ("page", "6h".into(), "30m".into(), "6".into()),
                ("ticket", "1d".into(), "2h".into(), "3".into()),
                ("ticket", "3d".into(), "6h".into(), "1".into()),
            ]
        );
    }

    #[test]
    fn other_periods_scale_the_windows_and_keep_the_budget_shares() {
        let w = burn_windows(7 * 24 * 60);
        assert_eq!(
            w.iter()
                .map(|w| (w.long_minutes, w.short_minutes))
                .collect::<Vec<_>>(),
            [(14, 1), (84, 7), (336, 28), (1008, 84)]
        );
        // 2% of a 7-day budget in 14 minutes is still a 14.4× burn.
        assert_eq!(num(w[0].factor), "14.4");
        let w = burn_windows(28 * 24 * 60);
        assert_eq!(duration(w[0].long_minutes), "56m");
        assert_eq!(num(w[0].factor), "14.4");
    }

    #[test]
    fn numbers_and_durations() {
        assert_eq!(num(1.0 - 0.999), "0.001");
        assert_eq!(num(14.4), "14.4");
        assert_eq!(num(6.0), "6");
        assert_eq!(num(99.95), "99.95");
        assert_eq!(duration(84), "84m");
        assert_eq!(duration(4320), "3d");
        assert_eq!(camel("checkout-availability"), "CheckoutAvailability");
    }
}
