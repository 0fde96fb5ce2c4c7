//! `cargo +nightly fuzz run path`: see `pointsman::fuzzing::path`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pointsman::fuzzing::path(data));
