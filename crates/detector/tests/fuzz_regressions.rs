//! Replays the fuzz targets' committed inputs on stable, without libFuzzer: every file under
//! `fuzz/seeds/<target>/` and `fuzz/regressions/<target>/` goes through the same function as the
//! fuzz target (`fuzz/fuzz_targets/<target>.rs`) and must return without panicking, keeping the
//! same invariants. Seeds additionally have known, meaningful outcomes. The `event_parse`
//! target (`lg-events`) is replayed here too, beside the other parsers.

use std::fs;
use std::path::{Path, PathBuf};

use lg_detector::fuzzing::{self, fuzz_limits, MAX_INFLATED_TEXT};
use lg_detector::Detector;
use lg_events::{ListingEvent, Marker, MarkerKind, ValidationLimits};

/// Longest evidence string: 400 bytes plus an ellipsis.
const MAX_EVIDENCE: usize = 403;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

fn files_in(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p, bytes)
        })
        .collect();
    out.sort();
    out
}

/// The committed seeds of a target; there must be some, so a moved folder cannot pass silently.
fn seeds(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = fuzz_dir().join("seeds").join(target);
    let files = files_in(&dir);
    assert!(!files.is_empty(), "no seeds under {}", dir.display());
    files
}

/// Minimised crashing inputs found by the fuzzer, if any (the folder may not exist).
fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    files_in(&fuzz_dir().join("regressions").join(target))
}

fn all_inputs(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v = seeds(target);
    v.extend(regressions(target));
    v
}

fn name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("?")
}

fn check_markers(path: &Path, markers: &[Marker]) {
    for m in markers {
        assert!(
            m.evidence.len() <= MAX_EVIDENCE,
            "{}: evidence of {} bytes",
            path.display(),
            m.evidence.len()
        );
    }
}

#[test]
fn xmp() {
    for (path, bytes) in all_inputs("xmp") {
        check_markers(&path, &fuzzing::xmp(&String::from_utf8_lossy(&bytes)));
    }
    for (path, bytes) in seeds("xmp") {
        let m = fuzzing::xmp(&String::from_utf8_lossy(&bytes));
        assert!(m.iter().any(|m| m.declares_ai), "{}: {m:?}", path.display());
    }
}

#[test]
fn aigc_label() {
    for (path, bytes) in all_inputs("aigc_label") {
        let m = fuzzing::aigc_marker(&String::from_utf8_lossy(&bytes), "XMP TC260:AIGC");
        check_markers(&path, std::slice::from_ref(&m));
        assert_eq!(m.kind, MarkerKind::Tc260Aigc);
        if name(&path).ends_with(".json") && name(&path).starts_with("label") {
            // Every label seed carries a value the standard defines; 1 and 2 declare AI, 3
            // ("suspected") is reported for the policy to map.
            let label = m.aigc_label.as_deref();
            assert!(
                matches!(label, Some("1" | "2" | "3")),
                "{}: {m:?}",
                path.display()
            );
            assert_eq!(
                m.declares_ai,
                label != Some("3"),
                "{}: {m:?}",
                path.display()
            );
        }
    }
}

#[test]
fn c2pa_chain() {
    for (path, bytes) in all_inputs("c2pa_chain") {
        let m = fuzzing::c2pa_chain_json(&String::from_utf8_lossy(&bytes));
        check_markers(&path, &m);
    }
    // The seeds walk: an ingredient-only, a component and a nested declaration are found; a
    // cycle ends; a capture claim is flagged.
    for (path, bytes) in seeds("c2pa_chain") {
        let m = fuzzing::c2pa_chain_json(&String::from_utf8_lossy(&bytes));
        let store = m
            .iter()
            .find(|m| m.kind == MarkerKind::C2paManifest)
            .unwrap_or_else(|| panic!("{}: no manifest marker in {m:?}", path.display()));
        let declares = !matches!(name(&path), "cycle.json" | "capture.json");
        assert_eq!(store.declares_ai, declares, "{}: {store:?}", path.display());
        assert_eq!(
            store.capture_claim,
            name(&path) == "capture.json",
            "{}",
            path.display()
        );
    }
}

#[test]
fn container() {
    for (path, bytes) in all_inputs("container") {
        let meta = fuzzing::container(&bytes);
        let bound = 3 * MAX_INFLATED_TEXT.max(bytes.len());
        assert!(
            meta.xmp.iter().all(|p| p.len() <= bound),
            "{}",
            path.display()
        );
        assert!(
            meta.texts.iter().all(|(_, v)| v.len() <= bound),
            "{}",
            path.display()
        );
    }
    for (path, bytes) in seeds("container") {
        let meta = fuzzing::container(&bytes);
        assert_eq!(meta.xmp.len(), 1, "{}: {meta:?}", path.display());
    }
}

#[test]
fn exif() {
    for (path, bytes) in all_inputs("exif") {
        check_markers(&path, &fuzzing::exif(&bytes));
    }
    for (path, bytes) in seeds("exif") {
        let m = fuzzing::exif(&bytes);
        assert!(
            m.iter()
                .any(|m| m.kind == MarkerKind::ExifSoftware && m.declares_ai),
            "{}: {m:?}",
            path.display()
        );
    }
}

#[test]
fn c2pa() {
    for (path, bytes) in all_inputs("c2pa") {
        check_markers(&path, &fuzzing::c2pa(&bytes));
    }
    for (path, bytes) in seeds("c2pa") {
        // The signed seeds (a JPEG with an AI component, an AVIF) declare AI; the hand-made
        // JUMBF fragments hold no valid manifest and must not.
        let m = fuzzing::c2pa(&bytes);
        let signed = matches!(
            name(&path),
            "avif-c2pa.avif" | "c2pa-composite-component.jpg"
        );
        assert_eq!(
            m.iter().any(|m| m.declares_ai),
            signed,
            "{}: {m:?}",
            path.display()
        );
        if name(&path).contains("remote") {
            assert!(
                m.iter().any(|m| m.kind == MarkerKind::C2paRemoteManifest),
                "{}: {m:?}",
                path.display()
            );
        }
    }
}

#[test]
fn provenance() {
    for (path, bytes) in all_inputs("provenance") {
        let p = fuzzing::provenance(&bytes);
        assert_eq!(p.declared_ai, p.markers.iter().any(|m| m.declares_ai));
        check_markers(&path, &p.markers);
    }
    for seed in [
        "png_text_chunks.png",
        "heic-xmp-tc260.heic",
        "exif-usercomment-aigc.jpg",
    ] {
        let p =
            fuzzing::provenance(&fs::read(fuzz_dir().join("seeds/provenance").join(seed)).unwrap());
        assert!(p.declared_ai, "{seed}: {p:?}");
    }
}

#[test]
fn decode() {
    let limits = fuzz_limits();
    for (_, bytes) in all_inputs("decode") {
        // `decode_checked` panics when a decoded image is over the limits.
        if let Err(e) = fuzzing::decode_checked(&bytes, &limits) {
            let _ = (e.class(), e.to_failure());
        }
    }
    for (path, bytes) in seeds("decode") {
        let (info, _) = fuzzing::decode_checked(&bytes, &limits)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(info.width >= 16 && info.height >= 16, "{}", path.display());
    }
    // The YCbCr seeds take the crop-first path, which `decode_checked` compared with the whole
    // decode above, and their scans are valid: varied pixels, not a broken scan's grey fill.
    for name in ["jpeg_ycbcr420.jpg", "jpeg_ycbcr420_restart_rotated.jpg"] {
        let bytes = fs::read(fuzz_dir().join("seeds/decode").join(name)).unwrap();
        let d = lg_detector::decode_regions(&bytes, &limits, &|_, _| Some(vec![(0, 0, 16, 16)]))
            .unwrap();
        assert!(!d.whole, "{name}: decoded crop-first");
        let (_, whole) = lg_detector::decode(&bytes, &limits).unwrap();
        let mut values: Vec<[u8; 3]> = whole.to_rgb8().pixels().map(|p| p.0).collect();
        values.sort_unstable();
        values.dedup();
        assert!(
            values.len() > 50,
            "{name}: {} distinct colours",
            values.len()
        );
    }
}

#[test]
fn analyse() {
    let limits = fuzz_limits();
    let detector = Detector::new(limits);
    for (path, bytes) in all_inputs("analyse") {
        let a = detector.analyse(&bytes);
        assert_eq!(a.sha256, lg_events::sha256_hex(&bytes));
        if let Ok(info) = &a.decoded {
            assert!(info.width <= limits.max_dimension && info.height <= limits.max_dimension);
            assert!(u64::from(info.width) * u64::from(info.height) <= limits.max_pixels);
        }
        check_markers(&path, &a.provenance.markers);
    }
    for (path, bytes) in seeds("analyse") {
        let a = detector.analyse(&bytes);
        assert!(a.decoded.is_ok(), "{}: {:?}", path.display(), a.decoded);
    }
    let stealth = fs::read(fuzz_dir().join("seeds/analyse/png_stealth_rgba.png")).unwrap();
    let a = detector.analyse(&stealth);
    assert!(
        a.provenance
            .markers
            .iter()
            .any(|m| m.kind == MarkerKind::GeneratorParameters
                && m.generator.as_deref() == Some("AUTOMATIC1111")),
        "{:?}",
        a.provenance
    );
}

/// What the fuzz target checks, returning whether the payload was accepted.
fn parse_event_like_the_fuzz_target(path: &Path, bytes: &[u8]) -> bool {
    let limits = ValidationLimits::default();
    match ListingEvent::parse(Some(bytes), &limits) {
        Ok(event) => {
            let again = serde_json::to_vec(&event).expect("an event serialises");
            let reparsed = ListingEvent::parse(Some(&again), &limits)
                .unwrap_or_else(|e| panic!("{}: round trip fails: {e}", path.display()));
            assert_eq!(event, reparsed, "{}", path.display());
            true
        }
        Err(e) => {
            let _ = (e.class(), e.to_string());
            false
        }
    }
}

#[test]
fn event_parse_seeds_and_regressions() {
    for (path, bytes) in &seeds("event_parse") {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        let accepted = parse_event_like_the_fuzz_target(path, bytes);
        // Seeds are named for their outcome: `valid_*` parse, `invalid_*` are refused.
        assert_eq!(accepted, name.starts_with("valid_"), "{}", path.display());
    }
    for (path, bytes) in regressions("event_parse") {
        parse_event_like_the_fuzz_target(&path, &bytes);
    }
}
