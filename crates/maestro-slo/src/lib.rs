//! Service level objectives: OpenSLO v1 files in, Prometheus rule groups out.
//!
//! [`load`] reads `SLO` and `SLI` documents from YAML files and resolves each SLO to a
//! ratio of error events to all events over a rolling period; [`rules`] turns them into
//! recording rules for the error ratio over every window the alerts need, and the
//! multi-window, multi-burn-rate alerts of the Google SRE workbook (chapter 5, "Alerting
//! on SLOs"), with the windows scaled for periods other than 30 days.

mod openslo;
mod promql;
mod rules;
mod yaml;

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

pub use rules::{BurnWindow, Group, burn_windows, duration, render, rules};

/// The largest SLO file read.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Shortest and longest accepted SLO period, in minutes (1 day, 400 days).
pub const PERIOD_MINUTES: (u64, u64) = (24 * 60, 400 * 24 * 60);

/// A problem with an SLO file: where, which field, what, and how to fix it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{place}: {field}{message}{hint}", field = field_prefix(.field), hint = hint_suffix(.hint))]
pub struct SloError {
    /// `path:line` of the document (`path` alone when the whole file is concerned), and
    /// the document it is about: `slo/checkout.yaml:12 (SLO checkout-availability)`.
    pub place: String,
    /// The field path inside the document (`spec.objectives[0].target`), when known.
    pub field: Option<String>,
    pub message: String,
    pub hint: Option<String>,
}

fn field_prefix(f: &Option<String>) -> String {
    f.as_ref().map(|f| format!("{f}: ")).unwrap_or_default()
}

fn hint_suffix(h: &Option<String>) -> String {
    h.as_ref().map(|h| format!(" ({h})")).unwrap_or_default()
}

/// What counts as an event: a PromQL counter selector, or a query with a `{{.window}}`
/// range placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    pub query: String,
}

impl Events {
    /// The rate of these events over `window` (a PromQL duration), summed to one series.
    #[must_use]
    pub fn rate(&self, window: &str) -> String {
        if promql::has_window_placeholder(&self.query) {
            promql::fill_window(&self.query, window)
        } else {
            format!("sum(rate({}[{window}]))", self.query)
        }
    }
}

/// How the indicator counts errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Errors {
    /// Error events are total minus good events.
    Good(Events),
    /// Error events are counted directly.
    Bad(Events),
}

/// One SLO, resolved and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Slo {
    /// `metadata.name`: the `slo` label of every generated series.
    pub name: String,
    pub display_name: Option<String>,
    pub service: String,
    pub description: Option<String>,
    pub errors: Errors,
    pub total: Events,
    /// The rolling period, in minutes.
    pub period_minutes: u64,
    /// Targets (0 < target < 1), one per objective, with their display names.
    pub objectives: Vec<(f64, Option<String>)>,
    /// `path:line` of its document.
    pub source: String,
}

/// Reads SLOs from files; an `indicatorRef` may name an `SLI` in any of them.
///
/// # Errors
/// The first problem found, naming the file, the document and the field.
pub fn load(paths: &[&Path]) -> Result<Vec<Slo>, SloError> {
    let mut slos: Vec<(Place, openslo::Metadata, openslo::SloSpec)> = Vec::new();
    let mut slis: BTreeMap<String, (Place, openslo::SliSpec)> = BTreeMap::new();
    for path in paths {
        let text = read(path)?;
        for (n, (line, doc)) in documents(path, &text)?.into_iter().enumerate() {
            let mut place = Place {
                file: path.display().to_string(),
                line,
                what: format!("document {}", n + 1),
            };
            if doc.is_null() {
                continue;
            }
            let doc: openslo::Document = shaped(&place, doc)?;
            place.what = format!("{} {}", doc.kind, doc.metadata.name);
            if doc.api_version != "openslo/v1" {
                return Err(place.error(
                    Some("apiVersion"),
                    format!("`{}` is not supported", doc.api_version),
                    Some("Maestro reads OpenSLO v1: apiVersion: openslo/v1"),
                ));
            }
            check_name(&place, &doc.metadata.name)?;
            match doc.kind.as_str() {
                "SLO" => {
                    let spec: openslo::SloSpec = shaped_at(&place, "spec", doc.spec)?;
                    slos.push((place, doc.metadata, spec));
                }
                "SLI" => {
                    let spec: openslo::SliSpec = shaped_at(&place, "spec", doc.spec)?;
                    if let Some((first, _)) = slis.get(&doc.metadata.name) {
                        return Err(place.error(
                            Some("metadata.name"),
                            format!(
                                "SLI `{}` is also defined at {}",
                                doc.metadata.name,
                                first.at()
                            ),
                            Some("SLI names must be unique across the files given"),
                        ));
                    }
                    slis.insert(doc.metadata.name.clone(), (place, spec));
                }
                "Service"
                | "AlertPolicy"
                | "AlertCondition"
                | "AlertNotificationTarget"
                | "DataSource" => {}
                other => {
                    return Err(place.error(
                        Some("kind"),
                        format!("unknown kind `{other}`"),
                        Some("OpenSLO v1 kinds: SLO, SLI, Service, AlertPolicy, AlertCondition, AlertNotificationTarget, DataSource"),
                    ));
                }
            }
        }
    }
    let mut out = Vec::with_capacity(slos.len());
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (place, meta, spec) in slos {
        if let Some(first) = seen.insert(meta.name.clone(), place.at()) {
            return Err(place.error(
                Some("metadata.name"),
                format!("SLO `{}` is also defined at {first}", meta.name),
                Some("SLO names become the `slo` label: they must be unique"),
            ));
        }
        out.push(resolve(&place, meta, spec, &slis)?);
    }
    Ok(out)
}

/// Where a document is, for messages.
#[derive(Debug, Clone)]
struct Place {
    file: String,
    line: usize,
    what: String,
}

impl Place {
    fn at(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    fn error(&self, field: Option<&str>, message: String, hint: Option<&str>) -> SloError {
        SloError {
            place: format!("{} ({})", self.at(), self.what),
            field: field.map(str::to_owned),
            message,
            hint: hint.map(str::to_owned),
        }
    }
}

fn read(path: &Path) -> Result<String, SloError> {
    let whole = |message: String| SloError {
        place: path.display().to_string(),
        field: None,
        message,
        hint: None,
    };
    let meta = std::fs::metadata(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(whole(format!(
            "is {} bytes; SLO files are limited to {MAX_FILE_BYTES}",
            meta.len()
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| whole(format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        whole(format!(
            "is not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ))
    })
}

/// The documents of a YAML file with the line each starts on.
fn documents(path: &Path, text: &str) -> Result<Vec<(usize, Value)>, SloError> {
    let options = serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_documents: 10_000,
            max_aliases: 1_000,
            max_anchors: 1_000,
        },
    };
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple_with_options(text, options).map_err(|e| SloError {
            place: path.display().to_string(),
            field: None,
            message: format!("not YAML: {e}"),
            hint: None,
        })?;
    let starts = document_lines(text);
    Ok(docs
        .into_iter()
        .enumerate()
        .map(|(i, d)| (starts.get(i).copied().unwrap_or(1), d))
        .collect())
}

/// The line each document starts on: after each `---` marker, or line 1 for a first
/// document without one.
fn document_lines(text: &str) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut content_before_marker = false;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if line.starts_with("---") {
            if content_before_marker && starts.is_empty() {
                starts.push(1);
            }
            starts.push(i + 1);
            content_before_marker = false;
        } else if !trimmed.is_empty() && !trimmed.starts_with('#') {
            content_before_marker = true;
        }
    }
    if starts.is_empty() {
        starts.push(1);
    }
    starts
}

fn shaped<T: serde::de::DeserializeOwned>(place: &Place, v: Value) -> Result<T, SloError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        place.error(
            (path != ".").then_some(path.as_str()),
            e.inner().to_string(),
            None,
        )
    })
}

fn shaped_at<T: serde::de::DeserializeOwned>(
    place: &Place,
    at: &str,
    v: Value,
) -> Result<T, SloError> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        let field = if path == "." {
            at.to_owned()
        } else {
            format!("{at}.{path}")
        };
        place.error(Some(&field), e.inner().to_string(), None)
    })
}

/// RFC 1123 label names, as OpenSLO asks of `metadata.name`.
fn check_name(place: &Place, name: &str) -> Result<(), SloError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(place.error(
            Some("metadata.name"),
            format!("`{name}` is not a valid name"),
            Some("lowercase letters, digits and `-`, at most 63, not starting or ending with `-`"),
        ))
    }
}

fn resolve(
    place: &Place,
    meta: openslo::Metadata,
    spec: openslo::SloSpec,
    slis: &BTreeMap<String, (Place, openslo::SliSpec)>,
) -> Result<Slo, SloError> {
    if spec.service.trim().is_empty() {
        return Err(place.error(Some("spec.service"), "is empty".to_owned(), None));
    }
    let (sli, sli_field) = match (&spec.indicator, &spec.indicator_ref) {
        (Some(_), Some(_)) => {
            return Err(place.error(
                Some("spec"),
                "has both `indicator` and `indicatorRef`".to_owned(),
                Some("keep one: an inline SLI, or the name of an SLI document"),
            ));
        }
        (None, None) => {
            return Err(place.error(
                Some("spec"),
                "has neither `indicator` nor `indicatorRef`".to_owned(),
                Some("add an inline SLI under `indicator`, or name an SLI document in `indicatorRef`"),
            ));
        }
        (Some(inline), None) => {
            check_name(place, &inline.metadata.name).map_err(|mut e| {
                e.field = Some("spec.indicator.metadata.name".to_owned());
                e
            })?;
            (inline.spec.clone(), "spec.indicator.spec".to_owned())
        }
        (None, Some(name)) => match slis.get(name) {
            Some((_, s)) => (s.clone(), format!("SLI `{name}`: spec")),
            None => {
                return Err(place.error(
                    Some("spec.indicatorRef"),
                    format!("no SLI named `{name}` in the files given"),
                    Some("pass the file with the SLI document too, or inline it under `indicator`"),
                ));
            }
        },
    };
    let (errors, total) = ratio(place, &sli, &sli_field)?;
    if spec.budgeting_method != "Occurrences" {
        return Err(place.error(
            Some("spec.budgetingMethod"),
            format!("`{}` is not supported", spec.budgeting_method),
            Some("burn-rate alerts count events: use `Occurrences`"),
        ));
    }
    let period_minutes = period(place, &spec.time_window)?;
    if spec.objectives.is_empty() {
        return Err(place.error(
            Some("spec.objectives"),
            "is empty".to_owned(),
            Some("add one objective with `target: 0.999` (or `targetPercent: 99.9`)"),
        ));
    }
    let mut objectives = Vec::with_capacity(spec.objectives.len());
    for (i, o) in spec.objectives.iter().enumerate() {
        let field = format!("spec.objectives[{i}]");
        if o.indicator.is_some() || o.indicator_ref.is_some() || o.composite_weight.is_some() {
            return Err(place.error(
                Some(&field),
                "composite SLOs (an indicator per objective) are not supported".to_owned(),
                Some("write one SLO per indicator"),
            ));
        }
        if o.op.is_some() || o.value.is_some() {
            return Err(place.error(
                Some(&field),
                "`op`/`value` belong to threshold metrics, which are not supported".to_owned(),
                Some("express the threshold in the ratio's good events, e.g. a histogram bucket `le=\"0.3\"`"),
            ));
        }
        if o.time_slice_target.is_some() || o.time_slice_window.is_some() {
            return Err(place.error(
                Some(&field),
                "time slices need the `Timeslices` budgeting method, which is not supported"
                    .to_owned(),
                None,
            ));
        }
        let target = match (o.target, o.target_percent) {
            (Some(t), None) => t,
            (None, Some(p)) => p / 100.0,
            (Some(_), Some(_)) => {
                return Err(place.error(
                    Some(&field),
                    "has both `target` and `targetPercent`".to_owned(),
                    Some("keep one"),
                ));
            }
            (None, None) => {
                return Err(place.error(
                    Some(&field),
                    "has no target".to_owned(),
                    Some("add `target: 0.999` or `targetPercent: 99.9`"),
                ));
            }
        };
        if !(target > 0.0 && target < 1.0) {
            return Err(place.error(
                Some(&format!(
                    "{field}.{}",
                    if o.target.is_some() {
                        "target"
                    } else {
                        "targetPercent"
                    }
                )),
                format!("{target} is not between 0 and 1 (exclusive)"),
                Some("a target of 0.999 means 99.9% of events are good"),
            ));
        }
        objectives.push((target, o.display_name.clone()));
    }
    Ok(Slo {
        name: meta.name,
        display_name: meta.display_name,
        service: spec.service,
        description: spec.description,
        errors,
        total,
        period_minutes,
        objectives,
        source: place.at(),
    })
}

fn ratio(place: &Place, sli: &openslo::SliSpec, at: &str) -> Result<(Errors, Events), SloError> {
    if sli.threshold_metric.is_some() {
        return Err(place.error(
            Some(&format!("{at}.thresholdMetric")),
            "threshold metrics are not supported".to_owned(),
            Some("use a ratioMetric whose good events are those under the threshold, e.g. a histogram bucket `le=\"0.3\"` over `_count`"),
        ));
    }
    let Some(r) = &sli.ratio_metric else {
        return Err(place.error(
            Some(at),
            "has no `ratioMetric`".to_owned(),
            Some("give `ratioMetric` with `good` (or `bad`) and `total` event queries"),
        ));
    };
    let at = format!("{at}.ratioMetric");
    if r.raw.is_some() || r.raw_type.is_some() {
        return Err(place.error(
            Some(&at),
            "raw (precomputed) ratios are not supported".to_owned(),
            Some("give `good` (or `bad`) and `total` event counters"),
        ));
    }
    if !r.counter {
        return Err(place.error(
            Some(&format!("{at}.counter")),
            "must be true: the events must be counters".to_owned(),
            Some("burn rates are rates of event counters; set `counter: true`"),
        ));
    }
    let events = |h: &openslo::MetricHolder, name: &str| -> Result<Events, SloError> {
        let field = format!("{at}.{name}.metricSource");
        let src = &h.metric_source;
        if src.metric_source_ref.is_some() && src.kind.is_none() {
            return Err(place.error(
                Some(&format!("{field}.metricSourceRef")),
                "data source references are not supported".to_owned(),
                Some("set `type: Prometheus` and the query under `spec.query`"),
            ));
        }
        match src.kind.as_deref() {
            Some(k) if k.eq_ignore_ascii_case("prometheus") => {}
            Some(k) => {
                return Err(place.error(
                    Some(&format!("{field}.type")),
                    format!("`{k}` is not supported"),
                    Some("Maestro writes Prometheus rules: use `type: Prometheus`"),
                ));
            }
            None => {
                return Err(place.error(
                    Some(&format!("{field}.type")),
                    "is missing".to_owned(),
                    Some("set `type: Prometheus`"),
                ));
            }
        }
        let q = src.spec.query.trim().to_owned();
        promql::check_events(&q).map_err(|why| {
            place.error(
                Some(&format!("{field}.spec.query")),
                why,
                Some("give a counter selector such as `http_requests_total{job=\"checkout\",code=~\"5..\"}`, or a query with a `{{.window}}` range such as `sum(rate(x[{{.window}}]))`"),
            )
        })?;
        Ok(Events { query: q })
    };
    let total = r.total.as_ref().ok_or_else(|| {
        place.error(
            Some(&at),
            "has no `total`".to_owned(),
            Some("add the query counting all events under `total.metricSource.spec.query`"),
        )
    })?;
    let total = events(total, "total")?;
    let errors = match (&r.good, &r.bad) {
        (Some(g), None) => Errors::Good(events(g, "good")?),
        (None, Some(b)) => Errors::Bad(events(b, "bad")?),
        (Some(_), Some(_)) => {
            return Err(place.error(
                Some(&at),
                "has both `good` and `bad`".to_owned(),
                Some("keep one: errors are total − good, or bad"),
            ));
        }
        (None, None) => {
            return Err(place.error(
                Some(&at),
                "has neither `good` nor `bad`".to_owned(),
                Some("add the good (or bad) events' query"),
            ));
        }
    };
    Ok((errors, total))
}

/// The rolling period in minutes.
fn period(place: &Place, windows: &[openslo::TimeWindow]) -> Result<u64, SloError> {
    let [w] = windows else {
        return Err(place.error(
            Some("spec.timeWindow"),
            format!("has {} windows; one is needed", windows.len()),
            Some("timeWindow: [{duration: 30d, isRolling: true}]"),
        ));
    };
    if w.calendar.is_some() || w.is_rolling == Some(false) {
        return Err(place.error(
            Some("spec.timeWindow[0]"),
            "calendar windows are not supported".to_owned(),
            Some("burn-rate alerts need a rolling window: isRolling: true"),
        ));
    }
    let minutes = parse_duration(&w.duration).ok_or_else(|| {
        place.error(
            Some("spec.timeWindow[0].duration"),
            format!("`{}` is not a duration", w.duration),
            Some("a number and a unit: m, h, d or w (e.g. 30d, 4w)"),
        )
    })?;
    if !(PERIOD_MINUTES.0..=PERIOD_MINUTES.1).contains(&minutes) {
        return Err(place.error(
            Some("spec.timeWindow[0].duration"),
            format!("`{}` is outside 1d to 400d", w.duration),
            None,
        ));
    }
    Ok(minutes)
}

/// `30d`, `4w`, `12h`, `90m` in minutes.
#[must_use]
pub fn parse_duration(s: &str) -> Option<u64> {
    let s = s.trim();
    let unit = s.chars().last()?;
    let n: u64 = s[..s.len() - unit.len_utf8()].parse().ok()?;
    let per = match unit {
        'm' => 1,
        'h' => 60,
        'd' => 24 * 60,
        'w' => 7 * 24 * 60,
        _ => return None,
    };
    n.checked_mul(per).filter(|&m| m > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Some(43_200));
        assert_eq!(parse_duration("4w"), Some(40_320));
        assert_eq!(parse_duration("90m"), Some(90));
        assert_eq!(parse_duration("1M"), None);
        assert_eq!(parse_duration("0d"), None);
        assert_eq!(parse_duration("d"), None);
    }

    #[test]
    fn document_start_lines() {
        assert_eq!(document_lines("a: 1\n"), [1]);
        assert_eq!(document_lines("---\na: 1\n---\nb: 2\n"), [1, 3]);
        assert_eq!(document_lines("# c\n---\na: 1\n---\nb: 2\n"), [2, 4]);
        assert_eq!(document_lines("a: 1\n---\nb: 2\n"), [1, 2]);
    }
}
