//! `Superblock::decode` on arbitrary bytes; what decodes must round-trip.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fs_core::fuzzing::superblock(data));
