//! `Detector::analyse` (decode, provenance, stealth parameters) on arbitrary bytes.
#![no_main]

use lg_detector::fuzzing::fuzz_limits;
use lg_detector::Detector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = fuzz_limits();
    let a = Detector::new(limits).analyse(data);
    assert_eq!(a.sha256, lg_events::sha256_hex(data));
    assert!(a.model.is_none());
    if let Ok(info) = &a.decoded {
        assert!(info.width <= limits.max_dimension && info.height <= limits.max_dimension);
        assert!(u64::from(info.width) * u64::from(info.height) <= limits.max_pixels);
    }
    for m in &a.provenance.markers {
        assert!(
            m.evidence.len() <= 403,
            "evidence of {} bytes",
            m.evidence.len()
        );
    }
});
