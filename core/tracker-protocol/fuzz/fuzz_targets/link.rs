#![no_main]
//! Arbitrary bytes into `tracker_protocol::fuzzing::link`: must never panic.
libfuzzer_sys::fuzz_target!(|data: &[u8]| tracker_protocol::fuzzing::link(data));
