//! Persisted operations: the GraphQL documents the console runs, fixed at build time.
//!
//! `build.rs` reads `console/operations/*.graphql` and names each document by the SHA-256
//! of its bytes. A client sends the id (`{"id": …}` or Apollo's
//! `extensions.persistedQuery.sha256Hash`) instead of the document; in production mode a
//! document that is not in this manifest is refused.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

mod generated {
    include!(concat!(env!("OUT_DIR"), "/persisted.rs"));
}

/// One persisted operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// `sha256` of [`Operation::document`], lowercase hex.
    pub id: &'static str,
    /// The file name it came from (`RunDetail` for `RunDetail.graphql`).
    pub name: &'static str,
    pub document: &'static str,
}

/// Every persisted operation, sorted by name.
pub fn operations() -> impl Iterator<Item = Operation> {
    generated::OPERATIONS
        .iter()
        .map(|&(id, name, document)| Operation { id, name, document })
}

static BY_ID: LazyLock<HashMap<&'static str, Operation>> =
    LazyLock::new(|| operations().map(|o| (o.id, o)).collect());

/// The operation with this id.
#[must_use]
pub fn by_id(id: &str) -> Option<Operation> {
    BY_ID.get(id).copied()
}

/// The operation with this name.
#[must_use]
pub fn by_name(name: &str) -> Option<Operation> {
    operations().find(|o| o.name == name)
}

/// The id a document would have.
#[must_use]
pub fn id_of(document: &str) -> String {
    hex::encode(Sha256::digest(document.as_bytes()))
}

/// The manifest in Apollo's persisted-query manifest format, for gateways and clients.
#[must_use]
pub fn manifest() -> Value {
    let ops: Vec<Value> = operations()
        .map(|o| {
            json!({
                "id": o.id,
                "name": o.name,
                "type": operation_type(o.document),
                "body": o.document,
            })
        })
        .collect();
    json!({
        "format": "apollo-persisted-query-manifest",
        "version": 1,
        "operations": ops,
    })
}

fn operation_type(document: &str) -> &'static str {
    let first = document.split_whitespace().next().unwrap_or_default();
    match first {
        "mutation" => "mutation",
        "subscription" => "subscription",
        _ => "query",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_the_sha256_of_each_document() {
        let mut n = 0;
        for o in operations() {
            assert_eq!(o.id, id_of(o.document), "{}", o.name);
            assert_eq!(by_id(o.id).map(|x| x.name), Some(o.name));
            n += 1;
        }
        assert!(n >= 4, "console/operations holds the console's documents");
    }

    #[test]
    fn the_manifest_names_every_operation_once() {
        let m = manifest();
        let ops = m["operations"].as_array().expect("operations");
        assert_eq!(ops.len(), operations().count());
        assert_eq!(m["format"], "apollo-persisted-query-manifest");
        assert!(ops.iter().all(|o| o["type"] == "query"));
    }
}
