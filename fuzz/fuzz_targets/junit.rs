//! JUnit XML reports a job writes, as the engine reads them after the job.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = maestro_engine::junit::parse(data);
});
