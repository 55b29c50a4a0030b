//! Bounded image decoding on arbitrary bytes: never panics, never returns an image over the
//! limits (checked inside `decode_checked`).
#![no_main]

use lg_detector::fuzzing::{decode_checked, fuzz_limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = decode_checked(data, &fuzz_limits()) {
        let _ = (e.class(), e.to_string(), e.to_failure());
    }
});
