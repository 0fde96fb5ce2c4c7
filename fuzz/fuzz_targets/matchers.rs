//! `cargo +nightly fuzz run matchers`: see `pointsman::fuzzing::matchers`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pointsman::fuzzing::matchers(data));
