//! Provenance markers: what an image file's own metadata says about how it was made.
//!
//! No network access, ever: a C2PA manifest referenced only by URL is reported as a reference
//! and not fetched.
//!
//! | marker | where it is read | declares AI when |
//! |---|---|---|
//! | C2PA manifest store | JUMBF in JPEG APP11, PNG `caBX`, WebP, HEIF/AVIF `uuid` boxes, ... (via the `c2pa` crate), the active manifest and its ingredients' manifests | any manifest of the chain has a `digitalSourceType` of `trainedAlgorithmicMedia` or `compositeWithTrainedAlgorithmicMedia` |
//! | IPTC DigitalSourceType | XMP `Iptc4xmpExt:DigitalSourceType` | same two values (plus `compositeSynthetic` is reported, not declared) |
//! | GB 45438 `TC260:AIGC` | XMP, PNG `AIGC` text chunk, EXIF UserComment (`{"AIGC":{...}}` or the bare object), in any container | `Label` is 1 or 2 (3, "suspected", is reported with its value; the policy maps each) |
//! | generator parameters | PNG text chunks, EXIF UserComment, alpha-channel "stealth" text | always |
//! | EXIF Software/Make | EXIF IFD0 | the value names a known generator |
//! | generator hints | C2PA claims by AI products without a source type, xAI's EXIF signature | never (shown for analytics) |

use image::DynamicImage;
use lg_events::{Marker, MarkerKind, Provenance};

pub(crate) mod c2pa_reader;
pub use c2pa_reader::{C2paTrust, TrustListError};
pub(crate) mod container;
pub(crate) mod exif_reader;
mod generators;
mod stealth;
pub(crate) mod xmp;

/// IPTC NewsCodes digital source types that declare generative AI.
const AI_SOURCE_TYPES: [&str; 2] = [
    "trainedAlgorithmicMedia",
    "compositeWithTrainedAlgorithmicMedia",
];

/// Longest evidence string kept in a marker.
const MAX_EVIDENCE: usize = 400;

/// Reads every provenance marker in `bytes`, judging C2PA signers against no trust list.
/// `decoded` enables pixel-embedded metadata (A1111 "stealth" parameters in the alpha channel).
pub fn read(bytes: &[u8], decoded: Option<&DynamicImage>) -> Provenance {
    read_with(bytes, decoded, None)
}

/// [`read`], with C2PA signers judged by `trust` (`None`: no trust list).
pub fn read_with(
    bytes: &[u8],
    decoded: Option<&DynamicImage>,
    trust: Option<&C2paTrust>,
) -> Provenance {
    let mut markers = Vec::new();
    if c2pa_reader::may_hold_c2pa(bytes) {
        match trust {
            Some(t) => c2pa_reader::read(bytes, t, &mut markers),
            None => c2pa_reader::read(bytes, &C2paTrust::none(), &mut markers),
        }
    }
    let meta = container::extract(bytes);
    for packet in &meta.xmp {
        xmp::read(packet, &mut markers);
    }
    for (keyword, text) in &meta.texts {
        generators::read_text_chunk(keyword, text, &mut markers);
    }
    exif_reader::read(bytes, &mut markers);
    if let Some(img) = decoded {
        if let Some(text) = stealth::read(img) {
            generators::read_stealth(&text, &mut markers);
        }
    }
    dedupe(&mut markers);
    let declared_ai = markers.iter().any(|m| m.declares_ai);
    Provenance {
        declared_ai,
        markers,
    }
}

/// The pixels of a stored `width × height` image that pixel-embedded metadata starts in: a
/// decode that reconstructs only some rectangles includes this one, and checks it with
/// [`pixel_payload_present`].
pub(crate) fn pixel_payload_rect(width: u32, height: u32) -> crate::Rect {
    stealth::signature_rect(width, height)
}

/// Whether the image carries pixel-embedded metadata (a stealth signature), whose payload may
/// reach any pixel: then [`read`] needs the whole image.
pub(crate) fn pixel_payload_present(img: &DynamicImage) -> bool {
    stealth::signature_present(img)
}

/// Whether a digital source type (URI or bare term) declares generative AI.
pub(crate) fn source_type_declares_ai(value: &str) -> bool {
    let term = value.rsplit('/').next().unwrap_or(value).trim();
    AI_SOURCE_TYPES.contains(&term)
}

pub(crate) fn marker(
    kind: MarkerKind,
    declares_ai: bool,
    generator: Option<String>,
    evidence: String,
) -> Marker {
    Marker::new(kind, declares_ai, generator, clip(&evidence, MAX_EVIDENCE))
}

pub(crate) fn clip(s: &str, max: usize) -> String {
    let s = s.trim();
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The same fact can be reachable twice (e.g. an XMP packet both structurally and by scan).
fn dedupe(markers: &mut Vec<Marker>) {
    let mut seen = Vec::<(MarkerKind, Option<String>, String)>::new();
    markers.retain(|m| {
        let key = (m.kind, m.generator.clone(), m.evidence.clone());
        if seen.contains(&key) {
            false
        } else {
            seen.push(key);
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_types() {
        for (v, ai) in [
            ("http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia", true),
            ("https://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia", true),
            ("http://cv.iptc.org/newscodes/digitalsourcetype/algorithmicMedia", false),
            ("http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture", false),
            ("trainedAlgorithmicMedia", true),
        ] {
            assert_eq!(source_type_declares_ai(v), ai, "{v}");
        }
    }
}
