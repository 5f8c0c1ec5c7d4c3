//! A repository's `.gitleaks.toml`, compiled into rules.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = maestro_secrets::Config::parse(".gitleaks.toml", text, std::path::Path::new("."));
    }
});
