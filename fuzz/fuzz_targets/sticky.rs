//! `cargo +nightly fuzz run sticky`: see `pointsman::fuzzing::sticky`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pointsman::fuzzing::sticky(data));
