//! The XMP packet reader (IPTC DigitalSourceType, TC260:AIGC) on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let packet = String::from_utf8_lossy(data);
    for m in lg_detector::fuzzing::xmp(&packet) {
        // Evidence is clipped to 300 bytes plus an ellipsis.
        assert!(
            m.evidence.len() <= 403,
            "evidence of {} bytes",
            m.evidence.len()
        );
    }
});
