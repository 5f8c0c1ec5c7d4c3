//! A remote run's report as the conductor takes it: JSON into the store's report type.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<maestro_store::Report>(data);
});
