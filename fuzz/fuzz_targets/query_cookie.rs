//! `cargo +nightly fuzz run query_cookie`: see `pointsman::fuzzing::query_cookie`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| pointsman::fuzzing::query_cookie(data));
