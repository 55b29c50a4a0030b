//! The C2PA manifest-chain walk on arbitrary manifest stores given as the `c2pa` crate's JSON
//! report: ingredient graphs with cycles, missing manifests and odd shapes, without the signing
//! that real files need (the `c2pa` target covers the bytes).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(json) = std::str::from_utf8(data) else {
        return;
    };
    for m in lg_detector::fuzzing::c2pa_chain_json(json) {
        assert!(
            m.evidence.len() <= 403,
            "evidence of {} bytes",
            m.evidence.len()
        );
    }
});
