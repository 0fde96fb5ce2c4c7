//! `cargo +nightly fuzz run host`: see `pointsman::fuzzing::host`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pointsman::fuzzing::host(data));
