//! The EXIF reader (Software/Make/UserComment) on arbitrary bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for m in lg_detector::fuzzing::exif(data) {
        assert!(
            m.evidence.len() <= 403,
            "evidence of {} bytes",
            m.evidence.len()
        );
    }
});
