//! The GB 45438 `TC260:AIGC` label value parser on arbitrary text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let value = String::from_utf8_lossy(data);
    let m = lg_detector::fuzzing::aigc_marker(&value, "XMP TC260:AIGC");
    assert!(
        m.evidence.len() <= 403,
        "evidence of {} bytes",
        m.evidence.len()
    );
    if let Some(g) = &m.generator {
        assert!(!g.is_empty());
    }
});
