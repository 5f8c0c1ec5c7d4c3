//! Generates the persisted-operations manifest from `console/operations/*.graphql`: each
//! document's id is the SHA-256 of its exact bytes (as Apollo's and Relay's persisted
//! queries define it), so the console can only send operations that were here at build
//! time.

use std::fmt::Write as _;
use std::path::Path;

use sha2::{Digest, Sha256};

fn main() {
    let dir = Path::new("console/operations");
    println!("cargo::rerun-if-changed={}", dir.display());
    let mut ops: Vec<(String, String)> = Vec::new();
    let entries = std::fs::read_dir(dir).expect("console/operations is part of the crate");
    for entry in entries {
        let path = entry.expect("console/operations is readable").path();
        if path.extension().and_then(|e| e.to_str()) != Some("graphql") {
            continue;
        }
        println!("cargo::rerun-if-changed={}", path.display());
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("operation file names are UTF-8")
            .to_owned();
        let body = std::fs::read_to_string(&path).expect("operation documents are UTF-8");
        ops.push((name, body));
    }
    ops.sort();
    let mut out = String::from(
        "/// The persisted operations: (id = sha256 of the document, file name, document).\n\
         pub(super) const OPERATIONS: &[(&str, &str, &str)] = &[\n",
    );
    for (name, body) in &ops {
        let id = hex(&Sha256::digest(body.as_bytes()));
        writeln!(out, "    ({id:?}, {name:?}, {body:?}),").expect("writing to a String");
    }
    out.push_str("];\n");
    let dest =
        Path::new(&std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("persisted.rs");
    std::fs::write(dest, out).expect("OUT_DIR is writable");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        write!(s, "{b:02x}").expect("writing to a String");
        s
    })
}
