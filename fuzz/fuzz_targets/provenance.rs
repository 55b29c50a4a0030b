//! Every provenance reader together, as the detector runs them (no decoded image).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let p = lg_detector::fuzzing::provenance(data);
    assert_eq!(p.declared_ai, p.markers.iter().any(|m| m.declares_ai));
    for m in &p.markers {
        assert!(
            m.evidence.len() <= 403,
            "evidence of {} bytes",
            m.evidence.len()
        );
    }
});
