//! `cargo +nightly fuzz run rule_file`: see `pointsman::fuzzing::rule_file`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pointsman::fuzzing::rule_file(data));
