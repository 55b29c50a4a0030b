//! Entry points for the fuzz targets under `fuzz/` and for the regression tests that replay
//! their inputs (`tests/fuzz_regressions.rs`).
//!
//! These are thin wrappers around crate-internal parsers so that each one can be fuzzed on its
//! own. They exist for the fuzz targets and regression tests only: they are hidden from the
//! documentation, are not part of the supported API and may change without notice.

use image::DynamicImage;
use lg_events::{Marker, Provenance};

use crate::provenance::{c2pa_reader, container, exif_reader, xmp};
use crate::{DecodeError, DecodeLimits, DecodedInfo};

/// Metadata the container walker found: XMP packets and PNG text chunks.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ContainerMetadata {
    /// Raw XMP packets.
    pub xmp: Vec<String>,
    /// PNG text chunks as (keyword, text).
    pub texts: Vec<(String, String)>,
}

/// Most bytes one inflated PNG text chunk may yield (the walker's cap).
pub const MAX_INFLATED_TEXT: usize = container::MAX_INFLATED as usize;

/// Walks PNG chunks / JPEG segments (and scans other containers) for XMP and text metadata.
pub fn container(bytes: &[u8]) -> ContainerMetadata {
    let e = container::extract(bytes);
    ContainerMetadata {
        xmp: e.xmp,
        texts: e.texts,
    }
}

/// Reads the IPTC and `TC260:AIGC` properties of one XMP packet.
pub fn xmp(packet: &str) -> Vec<Marker> {
    let mut markers = Vec::new();
    xmp::read(packet, &mut markers);
    markers
}

/// Builds the marker for a `TC260:AIGC` label value found at `location`.
pub fn aigc_marker(value: &str, location: &str) -> Marker {
    xmp::aigc_marker(value, location)
}

/// Reads the EXIF markers of a file (any container `kamadak-exif` reads).
pub fn exif(bytes: &[u8]) -> Vec<Marker> {
    let mut markers = Vec::new();
    exif_reader::read(bytes, &mut markers);
    markers
}

/// Detects and reads C2PA/JUMBF manifests, walking the manifest chain.
pub fn c2pa(bytes: &[u8]) -> Vec<Marker> {
    let mut markers = Vec::new();
    c2pa_reader::read(bytes, &crate::provenance::C2paTrust::none(), &mut markers);
    markers
}

/// Walks the manifest chain of a manifest store given as the `c2pa` crate's JSON report
/// (`Reader::json`): arbitrary ingredient graphs (cycles, depth, missing manifests) without
/// the signing that real files need.
pub fn c2pa_chain_json(json: &str) -> Vec<Marker> {
    c2pa_reader::chain_from_json(json)
}

/// Every provenance marker, as [`crate::provenance::read`] with no decoded image.
pub fn provenance(bytes: &[u8]) -> Provenance {
    crate::provenance::read(bytes, None)
}

/// Small decode limits for fuzzing: big enough for any seed, small enough that the fuzzer does
/// not spend its time on huge (legitimately bounded) allocations.
pub fn fuzz_limits() -> DecodeLimits {
    DecodeLimits {
        max_pixels: 1 << 20,
        max_dimension: 2048,
        min_dimension: 16,
        max_alloc_bytes: 64 << 20,
    }
}

/// [`crate::decode`] that also checks the decoder kept to `limits`, and that crop-first
/// decoding ([`crate::decode_regions`]) agrees with it.
///
/// # Panics
///
/// When a decoded image is over the limits or its reported size disagrees with its pixels, or
/// when the crop-first decode has another outcome or other pixels inside its rectangles: that
/// is the bug a fuzzer should report.
pub fn decode_checked(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<(DecodedInfo, DynamicImage), DecodeError> {
    let out = crate::decode(bytes, limits);
    // Two rectangles of the image as shown: a corner and an off-centre strip.
    let rects = |w: u32, h: u32| -> Vec<crate::Rect> {
        vec![
            (0, 0, w.min(24), h.min(24)),
            (w / 2, h / 3, w - w / 2, (h - h / 3).min(17)),
        ]
    };
    let part = crate::decode_regions(bytes, limits, &|w, h| Some(rects(w, h)));
    if let Ok((info, img)) = &out {
        let mut shown = img.clone();
        shown.apply_orientation(info.orientation);
        assert_eq!((info.width, info.height), (shown.width(), shown.height()));
        let part = part.expect("the crop-first decode fails where the whole decode does not");
        assert_eq!(*info, part.info);
        let mut part_shown = part.image;
        part_shown.apply_orientation(part.info.orientation);
        let (whole, part) = (shown.to_rgb8(), part_shown.to_rgb8());
        for (x, y, w, h) in rects(info.width, info.height) {
            for (xx, yy) in (y..y + h).flat_map(|yy| (x..x + w).map(move |xx| (xx, yy))) {
                assert_eq!(
                    whole.get_pixel(xx, yy),
                    part.get_pixel(xx, yy),
                    "({xx}, {yy})"
                );
            }
        }
        assert!(
            info.width <= limits.max_dimension && info.height <= limits.max_dimension,
            "{}x{} over max dimension {}",
            info.width,
            info.height,
            limits.max_dimension
        );
        assert!(
            info.width >= limits.min_dimension && info.height >= limits.min_dimension,
            "{}x{} under min dimension {}",
            info.width,
            info.height,
            limits.min_dimension
        );
        assert!(
            u64::from(info.width) * u64::from(info.height) <= limits.max_pixels,
            "{}x{} over {} pixels",
            info.width,
            info.height,
            limits.max_pixels
        );
    } else {
        assert_eq!(out.as_ref().err(), part.err().as_ref(), "the same failure");
    }
    out
}
