//! A release's evidence bundle (gzip'd tar), read with its limits before verification.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = maestro_evidence::read(data);
});
