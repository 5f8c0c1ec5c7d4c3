//! OpenSLO v1 documents, as far as Maestro reads them: `SLO` (with an inline indicator or an
//! `indicatorRef`) and `SLI`, ratio metrics from a Prometheus source, rolling time windows
//! and the `Occurrences` budgeting method. Other kinds (`Service`, `AlertPolicy`,
//! `DataSource`, …) are accepted and skipped.
//!
//! Shapes follow the published v1 specification; fields Maestro does not use are accepted
//! where the specification has them and refused where it does not (a typo never passes).

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Document {
    pub api_version: String,
    pub kind: String,
    pub metadata: Metadata,
    #[serde(default)]
    pub spec: Value,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Metadata {
    pub name: String,
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    #[allow(dead_code, clippy::allow_attributes, reason = "accepted, not used")]
    pub labels: Option<Value>,
    #[serde(default)]
    #[allow(dead_code, clippy::allow_attributes, reason = "accepted, not used")]
    pub annotations: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SloSpec {
    #[serde(default)]
    pub description: Option<String>,
    pub service: String,
    #[serde(default)]
    pub indicator: Option<InlineSli>,
    #[serde(default)]
    pub indicator_ref: Option<String>,
    #[serde(default)]
    pub time_window: Vec<TimeWindow>,
    pub budgeting_method: String,
    pub objectives: Vec<Objective>,
    /// Maestro writes its own multi-window, multi-burn-rate alerts.
    #[serde(default)]
    #[allow(dead_code, clippy::allow_attributes, reason = "accepted, not used")]
    pub alert_policies: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct InlineSli {
    pub metadata: Metadata,
    pub spec: SliSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct SliSpec {
    #[serde(default)]
    #[allow(dead_code, clippy::allow_attributes, reason = "accepted, not used")]
    pub description: Option<String>,
    #[serde(default)]
    pub ratio_metric: Option<RatioMetric>,
    #[serde(default)]
    pub threshold_metric: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RatioMetric {
    #[serde(default)]
    pub counter: bool,
    #[serde(default)]
    pub good: Option<MetricHolder>,
    #[serde(default)]
    pub bad: Option<MetricHolder>,
    #[serde(default)]
    pub total: Option<MetricHolder>,
    #[serde(default)]
    pub raw_type: Option<Value>,
    #[serde(default)]
    pub raw: Option<Value>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MetricHolder {
    pub metric_source: MetricSource,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MetricSource {
    #[serde(default)]
    pub metric_source_ref: Option<String>,
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
    pub spec: MetricSpec,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricSpec {
    /// PromQL. `promql` is accepted as another name for it.
    #[serde(alias = "promql")]
    pub query: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct TimeWindow {
    pub duration: String,
    #[serde(default)]
    pub is_rolling: Option<bool>,
    #[serde(default)]
    pub calendar: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Objective {
    #[serde(default)]
    pub display_name: Option<String>,
    #[serde(default)]
    pub op: Option<String>,
    #[serde(default)]
    pub value: Option<f64>,
    #[serde(default)]
    pub target: Option<f64>,
    #[serde(default)]
    pub target_percent: Option<f64>,
    #[serde(default)]
    pub time_slice_target: Option<f64>,
    #[serde(default)]
    pub time_slice_window: Option<String>,
    #[serde(default)]
    pub indicator: Option<Value>,
    #[serde(default)]
    pub indicator_ref: Option<String>,
    #[serde(default)]
    pub composite_weight: Option<f64>,
}
