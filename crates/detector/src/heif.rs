//! HEIF-family images: HEIC (HEVC, as phones shoot them) and AVIF (AV1, as CDNs serve them),
//! decoded by the system `libheif` through `libheif-rs`.
//!
//! The file type comes from the ISO-BMFF `ftyp` box. Dimensions are read from the primary
//! image's header (`ispe`, after the file's own rotation and mirroring) and checked against the
//! [`DecodeLimits`] before any pixels are decoded; libheif's own security limits stay on. The
//! decoded image is as shown (libheif applies the `irot`/`imir`/`clap` transformations), 8 bits
//! per channel (HDR files are converted), alpha dropped.
//!
//! Metadata (EXIF, XMP, C2PA in BMFF boxes) is not read here: [`crate::provenance`] reads it from
//! the bytes, decodable or not.

use std::sync::OnceLock;

use image::{DynamicImage, RgbImage};
use libheif_rs::{ColorSpace, DecodingOptions, HeifContext, LibHeif, RgbChroma};

use crate::{check_dims, DecodeError, DecodeLimits};

/// Which HEIF-family file this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeifKind {
    /// HEIC/HEIF: HEVC-coded images (iPhone and most Android cameras).
    Heic,
    /// AVIF: AV1-coded images.
    Avif,
}

impl HeifKind {
    /// The MIME type.
    pub fn mime(self) -> &'static str {
        match self {
            HeifKind::Heic => "image/heic",
            HeifKind::Avif => "image/avif",
        }
    }
}

/// Brands of still images (major or compatible) that name HEVC or AV1 coding.
const HEIC_BRANDS: [&[u8; 4]; 6] = [b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx"];
const AVIF_BRANDS: [&[u8; 4]; 2] = [b"avif", b"avis"];
/// Generic HEIF brands: the coding is then found in the image items.
const GENERIC_BRANDS: [&[u8; 4]; 3] = [b"mif1", b"msf1", b"miaf"];

/// The HEIF kind of `bytes`, from its `ftyp` box (major brand first, then the compatible
/// brands); `None` for anything else.
pub fn sniff(bytes: &[u8]) -> Option<HeifKind> {
    if bytes.len() < 12 || &bytes[4..8] != b"ftyp" {
        return None;
    }
    let size = u32::from_be_bytes(bytes[..4].try_into().ok()?) as usize;
    let ftyp = bytes.get(8..size.clamp(12, bytes.len()))?;
    let major: &[u8] = &ftyp[..4];
    // Compatible brands follow the major brand and the 4-byte minor version.
    let compatible = ftyp.get(8..).unwrap_or_default().chunks_exact(4);
    let brands = std::iter::once(major).chain(compatible);
    let mut generic = false;
    for b in brands {
        if AVIF_BRANDS.iter().any(|x| x.as_slice() == b) {
            return Some(HeifKind::Avif);
        }
        if HEIC_BRANDS.iter().any(|x| x.as_slice() == b) {
            return Some(HeifKind::Heic);
        }
        generic |= GENERIC_BRANDS.iter().any(|x| x.as_slice() == b);
    }
    // A generic HEIF file: libheif finds the coding from its items.
    generic.then_some(HeifKind::Heic)
}

/// libheif's process-wide initialisation (its decoder registry is global to the C library),
/// done once and kept for the life of the process.
fn lib() -> &'static LibHeif {
    static LIB: OnceLock<LibHeif> = OnceLock::new();
    LIB.get_or_init(LibHeif::new)
}

fn corrupt(kind: HeifKind, e: impl std::fmt::Display) -> DecodeError {
    DecodeError::Corrupt(format!("{kind:?}: {e}"))
}

/// Decodes the primary image within `limits` (checked on the header before decoding).
pub fn decode(
    bytes: &[u8],
    kind: HeifKind,
    limits: &DecodeLimits,
) -> Result<DynamicImage, DecodeError> {
    let ctx = HeifContext::read_from_bytes(bytes).map_err(|e| corrupt(kind, e))?;
    let handle = ctx.primary_image_handle().map_err(|e| corrupt(kind, e))?;
    let (width, height) = (handle.width(), handle.height());
    check_dims(width, height, limits)?;
    let bytes_needed = u64::from(width) * u64::from(height) * 3;
    if bytes_needed > limits.max_alloc_bytes {
        return Err(DecodeError::TooLarge {
            width,
            height,
            limit: format!("max allocation {} bytes", limits.max_alloc_bytes),
        });
    }
    let mut options = DecodingOptions::new()
        .ok_or_else(|| corrupt(kind, "libheif could not allocate decoding options"))?;
    options.set_convert_hdr_to_8bit(true);
    let decoded = lib()
        .decode(&handle, ColorSpace::Rgb(RgbChroma::Rgb), Some(options))
        .map_err(|e| match e.code {
            libheif_rs::HeifErrorCode::UnsupportedFeature
            | libheif_rs::HeifErrorCode::UnsupportedFileType => {
                DecodeError::UnsupportedFormat(format!(": {kind:?} {e}"))
            }
            _ => corrupt(kind, e),
        })?;
    let planes = decoded.planes();
    let plane = planes
        .interleaved
        .ok_or_else(|| corrupt(kind, "no interleaved RGB plane after decoding"))?;
    let (w, h) = (plane.width, plane.height);
    if (w, h) != (width, height) || plane.storage_bits_per_pixel != 24 {
        return Err(corrupt(
            kind,
            format!(
                "decoded {w}x{h} at {} bits per pixel, header says {width}x{height}",
                plane.storage_bits_per_pixel
            ),
        ));
    }
    let row = w as usize * 3;
    let mut rgb = Vec::with_capacity(row * h as usize);
    for y in 0..h as usize {
        let start = y * plane.stride;
        let line = plane
            .data
            .get(start..start + row)
            .ok_or_else(|| corrupt(kind, "decoded plane shorter than its size"))?;
        rgb.extend_from_slice(line);
    }
    let img = RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| corrupt(kind, "decoded plane does not fill the image"))?;
    Ok(DynamicImage::ImageRgb8(img))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ftyp(major: &[u8; 4], compatible: &[&[u8; 4]]) -> Vec<u8> {
        let mut b = Vec::new();
        let size = 16 + 4 * compatible.len();
        b.extend_from_slice(&(size as u32).to_be_bytes());
        b.extend_from_slice(b"ftyp");
        b.extend_from_slice(major);
        b.extend_from_slice(&[0; 4]);
        for c in compatible {
            b.extend_from_slice(*c);
        }
        b
    }

    #[test]
    fn brands() {
        assert_eq!(sniff(&ftyp(b"heic", &[b"mif1"])), Some(HeifKind::Heic));
        assert_eq!(sniff(&ftyp(b"avif", &[b"mif1"])), Some(HeifKind::Avif));
        assert_eq!(sniff(&ftyp(b"mif1", &[b"avif"])), Some(HeifKind::Avif));
        assert_eq!(sniff(&ftyp(b"mif1", &[b"heic"])), Some(HeifKind::Heic));
        assert_eq!(sniff(&ftyp(b"mif1", &[])), Some(HeifKind::Heic));
        // MP4 video and other ISO-BMFF files are not images.
        assert_eq!(sniff(&ftyp(b"isom", &[b"mp41"])), None);
        assert_eq!(sniff(b"\0\0\0\x08ftyp"), None);
        // A size that runs past the end reads what is there.
        let mut cut = ftyp(b"mif1", &[b"avif"]);
        cut[3] = 200;
        assert_eq!(sniff(&cut), Some(HeifKind::Avif));
        assert_eq!(sniff(b""), None);
    }

    #[test]
    fn garbage_after_a_heic_ftyp_is_a_clear_error() {
        let mut b = ftyp(b"heic", &[b"mif1"]);
        b.extend_from_slice(b"\0\0\0\x10meta garbage");
        let e = decode(&b, HeifKind::Heic, &DecodeLimits::default()).unwrap_err();
        assert_eq!(e.class(), "decode_error", "{e}");
    }
}
