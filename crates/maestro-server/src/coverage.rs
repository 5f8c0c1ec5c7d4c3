//! The API's coverage reports (`maestro api coverage`): the share of the console's
//! operations that are persisted, and the share of REST endpoints and GraphQL fields
//! that are under the authorization wrapper and have their action in the policy matrix.

use serde::Serialize;
use serde_json::Value;

use crate::matrix::Matrix;
use crate::{Mode, api, graphql, persisted};

/// A share: `part` of `whole`, and what falls outside.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Share {
    pub part: usize,
    pub whole: usize,
    /// What is not in `part`.
    pub outside: Vec<String>,
}

impl Share {
    fn of(items: impl IntoIterator<Item = (String, bool)>) -> Share {
        let mut part = 0;
        let mut whole = 0;
        let mut outside = Vec::new();
        for (name, inside) in items {
            whole += 1;
            if inside {
                part += 1;
            } else {
                outside.push(name);
            }
        }
        Share {
            part,
            whole,
            outside,
        }
    }

    /// The share in percent (100 for an empty whole).
    #[must_use]
    pub fn percent(&self) -> f64 {
        if self.whole == 0 {
            100.0
        } else {
            #[expect(clippy::cast_precision_loss, reason = "counts are small")]
            let p = self.part as f64 * 100.0 / self.whole as f64;
            p
        }
    }
}

/// Every coverage figure.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Operations the console runs that are in the persisted manifest.
    pub console_persisted: Share,
    /// REST endpoints routed through the wrapper (the router is built from the table).
    pub rest_wrapped: Share,
    /// REST endpoints whose action has a row in the policy matrix.
    pub rest_tested: Share,
    /// GraphQL `Query` fields (from the schema itself) that have a wrapper row.
    pub graphql_wrapped: Share,
    /// GraphQL fields whose action has a row in the policy matrix.
    pub graphql_tested: Share,
    /// Cells in the matrix.
    pub matrix_cells: usize,
}

/// The fields of `Query`, read from the schema by introspection.
///
/// # Panics
/// Never: introspection of our own schema answers.
pub async fn query_fields() -> Vec<String> {
    let resp = graphql::schema(Mode::Development)
        .execute("{ __schema { queryType { fields { name } } } }")
        .await;
    let v = serde_json::to_value(&resp).unwrap_or(Value::Null);
    v["data"]["__schema"]["queryType"]["fields"]
        .as_array()
        .map(|fs| {
            fs.iter()
                .filter_map(|f| f["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Builds the report: `console_ops` are the operation names the console's pages run,
/// `fields` the schema's `Query` fields ([`query_fields`]).
#[must_use]
pub fn report(console_ops: &[&str], fields: &[String], matrix: &Matrix) -> Report {
    let console_persisted = Share::of(
        console_ops
            .iter()
            .map(|n| ((*n).to_owned(), persisted::by_name(n).is_some())),
    );
    let rest = || api::ENDPOINTS.iter();
    let rest_wrapped = Share::of(rest().map(|e| (format!("{} {}", e.method, e.path), true)));
    let rest_tested = Share::of(rest().map(|e| {
        (
            format!("{} {} ({})", e.method, e.path, e.action),
            matrix.covers(e.action),
        )
    }));
    let row = |f: &str| graphql::FIELDS.iter().find(|r| r.name == f);
    let graphql_wrapped = Share::of(
        fields
            .iter()
            .map(|f| (format!("Query.{f}"), row(f).is_some())),
    );
    let graphql_tested = Share::of(fields.iter().map(|f| {
        let covered = row(f).is_some_and(|r| matrix.covers(r.action));
        (format!("Query.{f}"), covered)
    }));
    Report {
        console_persisted,
        rest_wrapped,
        rest_tested,
        graphql_wrapped,
        graphql_tested,
        matrix_cells: matrix.cells(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ours_is_complete_and_a_gap_is_named() {
        let m = Matrix::builtin().expect("matrix");
        let fields = query_fields().await;
        let r = report(&["RunList", "RunDetail"], &fields, &m);
        for s in [
            &r.console_persisted,
            &r.rest_wrapped,
            &r.rest_tested,
            &r.graphql_wrapped,
            &r.graphql_tested,
        ] {
            assert!(s.outside.is_empty() && s.whole > 0, "{r:?}");
        }
        let mut more = fields.clone();
        more.push("secrets".into());
        let r = report(&["RunList", "AdHoc"], &more, &m);
        assert_eq!(r.console_persisted.outside, vec!["AdHoc".to_owned()]);
        assert!((r.console_persisted.percent() - 50.0).abs() < 1e-9);
        assert_eq!(r.graphql_wrapped.outside, vec!["Query.secrets".to_owned()]);
        assert_eq!(r.graphql_tested.outside, vec!["Query.secrets".to_owned()]);
    }
}
