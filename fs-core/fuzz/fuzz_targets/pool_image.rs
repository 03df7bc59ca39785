//! Open, fsck and mount of a small pool damaged as the input says; errors are fine, a panic
//! that escapes is a bug.
#![no_main]

libfuzzer_sys::fuzz_target!(
    init: {
        // libfuzzer-sys installs a panic hook that aborts at every panic, even one fs-core
        // contains (redb asserting on a damaged page, reported as corruption). This hook only
        // prints the panic's message and place: a panic that escapes still aborts, because
        // libfuzzer-sys catches it at the end of the input. Replay a crash with
        // `cargo test -p fs-core --test fuzz_regressions` for its backtrace.
        std::panic::set_hook(Box::new(|info| eprintln!("{info}")));
    },
    |data: &[u8]| fs_core::fuzzing::pool_image(data)
);
