//! `maestro.yaml`: parsed with positions, then validated and sealed (modules included).
#![no_main]
use std::sync::OnceLock;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"));
    let path = dir.path().join("maestro.yaml");
    if std::fs::write(&path, data).is_ok() {
        let _ = maestro_spec::load_pipeline(&path);
    }
});
