//! The feature-flag registry (flagd's JSON format with Maestro's metadata), as the
//! conductor and `maestro flags validate` read it from a file.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = maestro_flags::Registry::parse(data);
});
