//! Parsers of outside input never panic: arbitrary text through the loader, the
//! expression expander and the key-path finder, and arbitrary well-formed pipelines
//! through validation.

use maestro_spec::diag::Source;
use maestro_spec::expr::{Lookup, expand};
use maestro_spec::load::{key_path_at, parse};
use maestro_spec::raw::RawPipeline;
use proptest::prelude::*;

/// YAML-ish text: keys, indentation, flow punctuation, quotes and expressions.
fn yamlish() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("version: 1\n".to_owned()),
        Just("jobs:\n".to_owned()),
        Just("  a:\n".to_owned()),
        Just("    run: x\n".to_owned()),
        Just("    needs: [a, b]\n".to_owned()),
        Just("    gate: lint\n".to_owned()),
        Just("    shard: 3\n".to_owned()),
        Just("    inputs: [\"src/**\"]\n".to_owned()),
        Just("${{ shard.index }}".to_owned()),
        Just("&x ".to_owned()),
        Just("*x".to_owned()),
        Just("{".to_owned()),
        Just("]".to_owned()),
        Just("\"".to_owned()),
        Just("- ".to_owned()),
        Just("\t".to_owned()),
        "[ -~]{0,12}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn loader_never_panics(text in yamlish()) {
        let source = Source::new("maestro.yaml", text.as_str());
        if let Err(d) = parse::<RawPipeline>(&source) {
            // Every parse error points somewhere inside the file (or at its end).
            if let Some(p) = d.pos {
                prop_assert!(p.offset <= text.len());
            }
        }
    }

    #[test]
    fn loader_never_panics_on_bytes(text in "\\PC{0,200}") {
        let source = Source::new("maestro.yaml", text.as_str());
        let _ = parse::<RawPipeline>(&source);
    }

    #[test]
    fn key_path_never_panics(text in yamlish(), line in 0u32..40, col in 0u32..40) {
        let _ = key_path_at(&text, line, col);
    }

    #[test]
    fn expand_never_panics_and_keeps_plain_text(text in "[a-z ${}.]{0,40}") {
        let out = expand(&text, &|_, _| Lookup::Keep);
        if !text.contains("${{") {
            prop_assert_eq!(out.ok(), Some(text.clone()));
        }
    }

    #[test]
    fn validation_never_panics(text in yamlish()) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("maestro.yaml");
        std::fs::write(&path, &text).expect("write");
        let _ = maestro_spec::load_pipeline(&path);
    }
}
