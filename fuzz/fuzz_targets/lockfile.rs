//! Every lockfile reader: the first byte picks the file name (and so the reader), the rest
//! is the file.
#![no_main]
use std::sync::OnceLock;

static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
const NAMES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "requirements.txt",
    "poetry.lock",
    "go.sum",
];

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let dir = DIR.get_or_init(|| tempfile::tempdir().expect("tempdir"));
    let path = dir.path().join(NAMES[usize::from(pick) % NAMES.len()]);
    if std::fs::write(&path, body).is_ok() {
        let opts = maestro_sbom::ReadOptions::default();
        let _ = maestro_sbom::read_lockfile(&path, &opts);
    }
});
