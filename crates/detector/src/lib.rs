//! Listing Guard detector: what an image's bytes say about how it was made.
//!
//! The API is pure and synchronous. [`Detector::analyse_batch`] takes fetched image bytes and
//! returns, per image, the content hash, the provenance markers found in the file's metadata
//! (see [`provenance`]), the decoded dimensions (or a typed decode failure) and, when a
//! [`PixelModel`] is plugged in, its calibrated score. Callers run it off the async runtime.
//!
//! Decoding is bounded: dimensions are read from the header first and images over the pixel or
//! allocation limits are refused before any pixel buffer is allocated. It is also crop-first: a
//! model says which rectangles it reads ([`PixelModel::regions`]) and a JPEG is reconstructed
//! only there ([`decode_regions`]).

use std::io::Cursor;
use std::sync::Arc;

use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use lg_events::{ImageFailure, ModelScore, Provenance};

pub mod heif;
pub mod provenance;

pub use heif::HeifKind;

#[doc(hidden)]
pub mod fuzzing;

/// Version of the provenance reader and the decoding in front of the model; part of every
/// decision id and of the score cache's analysis version (with the C2PA trust list's hash where
/// one is configured, see [`Detector::provenance_version`]).
pub const PROVENANCE_VERSION: &str = "provenance@3";

/// Bounds on decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Most pixels (width × height) accepted.
    pub max_pixels: u64,
    /// Largest width or height accepted.
    pub max_dimension: u32,
    /// Smallest width or height accepted: a 1×1 "image" is a tracking pixel or a placeholder,
    /// not a product photo, and cannot be judged.
    pub min_dimension: u32,
    /// Largest allocation the decoder may make, in bytes.
    pub max_alloc_bytes: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_pixels: 64_000_000,
            max_dimension: 16_384,
            min_dimension: 16,
            max_alloc_bytes: 512 << 20,
        }
    }
}

/// A rectangle `(x, y, width, height)` in pixels.
pub type Rect = (u32, u32, u32, u32);

/// A learned pixel-level detector. Implemented by the model crate; absent by default.
pub trait PixelModel: Send + Sync {
    /// Model name and version, written on every decision.
    fn version(&self) -> &str;
    /// The rectangles of a `width × height` image (as shown, after the EXIF orientation) that
    /// [`Self::score_batch`] reads, or `None` (the default) when it may read any pixel. The
    /// detector then decodes only those where the format allows ([`decode_regions`]).
    fn regions(&self, width: u32, height: u32) -> Option<Vec<Rect>> {
        let _ = (width, height);
        None
    }
    /// Scores decoded images in one batch; one entry per input, in order (`None` where the
    /// model cannot score an image, e.g. one too small for it).
    fn score_batch(&self, images: &[&DynamicImage]) -> Result<Vec<Option<ModelScore>>, ModelError>;
    /// The model card's operating points: thresholds on the calibrated probability at
    /// false-positive rates on real photos, measured out of fold. Empty where the card has none.
    fn operating_points(&self) -> &[lg_events::ModelOperatingPoint] {
        &[]
    }
    /// Cumulative nanoseconds spent cropping and normalising, and in the network, since load
    /// (for the pipeline's stage metrics); `(0, 0)` where a model does not measure them.
    fn stage_nanos(&self) -> (u64, u64) {
        (0, 0)
    }
}

/// A pixel model failed.
#[derive(Debug, thiserror::Error)]
#[error("pixel model failed: {0}")]
pub struct ModelError(pub String);

/// Why an image could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// No bytes.
    #[error("image is empty (0 bytes)")]
    Empty,
    /// The bytes are no image format this build reads.
    #[error("unsupported or unrecognised image format{0}")]
    UnsupportedFormat(String),
    /// Over the pixel/dimension limits.
    #[error("image is {width}x{height}, over the limit ({limit})")]
    TooLarge {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// Which limit.
        limit: String,
    },
    /// Under the minimum size.
    #[error("image is {width}x{height}, under the minimum of {min} pixels per side")]
    TooSmall {
        /// Width.
        width: u32,
        /// Height.
        height: u32,
        /// The minimum.
        min: u32,
    },
    /// Corrupt or truncated data.
    #[error("image data is corrupt or truncated: {0}")]
    Corrupt(String),
}

impl DecodeError {
    /// Stable error class.
    pub fn class(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty_image",
            DecodeError::UnsupportedFormat(_) => "unsupported_format",
            DecodeError::TooLarge { .. } => "image_too_large",
            DecodeError::TooSmall { .. } => "image_too_small",
            DecodeError::Corrupt(_) => "decode_error",
        }
    }

    /// As a wire failure.
    pub fn to_failure(&self) -> ImageFailure {
        ImageFailure {
            class: self.class().to_owned(),
            message: self.to_string(),
        }
    }
}

/// An image for [`Detector::analyse_batch_timed`]: its bytes and, where the caller has already
/// computed it (the score cache's key), their SHA-256 in lower-case hex, which is then not
/// computed again.
#[derive(Debug, Clone, Copy)]
pub struct Image<'a> {
    /// The file's bytes.
    pub bytes: &'a [u8],
    /// `lg_events::sha256_hex(bytes)`, if known.
    pub sha256: Option<&'a str>,
}

impl<'a> Image<'a> {
    /// An image whose hash the detector computes.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            sha256: None,
        }
    }
}

/// What the detector found in one image.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// SHA-256 of the bytes (hex).
    pub sha256: String,
    /// Metadata markers. Read even when the pixels do not decode.
    pub provenance: Provenance,
    /// Decoded size, or why decoding failed.
    pub decoded: Result<DecodedInfo, DecodeError>,
    /// Pixel-model score, when a model is plugged in and the image decoded.
    pub model: Option<ModelScore>,
}

/// A decoded image.
#[derive(Debug)]
pub struct Decoded {
    /// What the header and decoder said.
    pub info: DecodedInfo,
    /// The pixels as stored (before the EXIF orientation).
    pub image: DynamicImage,
    /// Whether every pixel was reconstructed; if not, only the requested rectangles (and the
    /// pixels that could hold a stealth signature) are exact, the rest unspecified.
    pub whole: bool,
}

/// Facts about a decoded image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedInfo {
    /// Width in pixels, as shown (after the EXIF orientation).
    pub width: u32,
    /// Height in pixels, as shown (after the EXIF orientation).
    pub height: u32,
    /// Container format.
    pub format: Format,
    /// The EXIF orientation; the decoded image is as stored, the model scores it as shown.
    pub orientation: image::metadata::Orientation,
}

/// An image file's container format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A format the `image` crate decodes (JPEG, PNG, WebP, GIF).
    Image(ImageFormat),
    /// HEIC or AVIF, decoded by libheif ([`heif`]).
    Heif(HeifKind),
}

/// The detector: decode limits plus an optional pixel model.
#[derive(Clone, Default)]
pub struct Detector {
    limits: DecodeLimits,
    model: Option<Arc<dyn PixelModel>>,
    c2pa_trust: provenance::C2paTrust,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("limits", &self.limits)
            .field(
                "model",
                &self.model.as_ref().map(|m| m.version().to_owned()),
            )
            .finish()
    }
}

impl Detector {
    /// A detector with the given limits and no pixel model.
    pub fn new(limits: DecodeLimits) -> Self {
        Self {
            limits,
            model: None,
            c2pa_trust: provenance::C2paTrust::none(),
        }
    }

    /// Judges C2PA signers against `trust` (default: no trust list).
    pub fn with_c2pa_trust(mut self, trust: provenance::C2paTrust) -> Self {
        self.c2pa_trust = trust;
        self
    }

    /// [`PROVENANCE_VERSION`], with `+trust:<hash>` when a C2PA trust list is configured.
    pub fn provenance_version(&self) -> String {
        provenance_version(self.c2pa_trust.trust_list_id())
    }

    /// Plugs in a pixel model.
    pub fn with_model(mut self, model: Arc<dyn PixelModel>) -> Self {
        self.model = Some(model);
        self
    }

    /// The pixel model's version, if one is plugged in.
    pub fn model_version(&self) -> Option<&str> {
        self.model.as_deref().map(PixelModel::version)
    }

    /// The pixel model's operating points (empty without a model or where its card has none).
    pub fn model_operating_points(&self) -> &[lg_events::ModelOperatingPoint] {
        self.model
            .as_deref()
            .map_or(&[], PixelModel::operating_points)
    }

    /// Analyses one image.
    pub fn analyse(&self, bytes: &[u8]) -> Analysis {
        self.analyse_batch(&[bytes])
            .pop()
            .expect("one input gives one output")
    }

    /// Analyses a batch of images; the pixel model, if any, scores the decodable ones together.
    pub fn analyse_batch(&self, inputs: &[&[u8]]) -> Vec<Analysis> {
        let images: Vec<Image<'_>> = inputs.iter().map(|&bytes| Image::new(bytes)).collect();
        self.analyse_batch_timed(&images).0
    }

    /// [`Self::analyse_batch`], also returning the time spent decoding and reading provenance
    /// (the rest is the pixel model's, see [`PixelModel::stage_nanos`]).
    pub fn analyse_batch_timed(
        &self,
        inputs: &[Image<'_>],
    ) -> (Vec<Analysis>, std::time::Duration) {
        let started = std::time::Instant::now();
        let mut decoded_images: Vec<Option<DynamicImage>> = Vec::with_capacity(inputs.len());
        let mut out: Vec<Analysis> = Vec::with_capacity(inputs.len());
        let regions = |w: u32, h: u32| self.model.as_deref().and_then(|m| m.regions(w, h));
        let wanted: Option<&Wanted<'_>> = self.model.is_some().then_some(&regions);
        for &Image { bytes, sha256 } in inputs {
            let decoded = match decode_with(bytes, &self.limits, wanted) {
                // Stealth parameters can reach any pixel once their signature is there.
                Ok(d) if !d.whole && provenance::pixel_payload_present(&d.image) => {
                    decode_with(bytes, &self.limits, None)
                }
                other => other,
            };
            let (info, img) = match decoded {
                Ok(d) => (Ok(d.info), Some(d.image)),
                Err(e) => (Err(e), None),
            };
            // Metadata (and hidden parameters in the pixel bits) are read as stored; the model
            // sees the image as a viewer shows it.
            let provenance = provenance::read_with(bytes, img.as_ref(), Some(&self.c2pa_trust));
            let img = img.map(|mut i| {
                if let Ok(info) = &info {
                    i.apply_orientation(info.orientation);
                }
                i
            });
            debug_assert!(
                sha256.is_none_or(|h| h == lg_events::sha256_hex(bytes)),
                "the SHA-256 given is not the bytes'"
            );
            out.push(Analysis {
                sha256: sha256.map_or_else(|| lg_events::sha256_hex(bytes), str::to_owned),
                provenance,
                decoded: info,
                model: None,
            });
            decoded_images.push(img);
        }
        let decode_time = started.elapsed();
        if let Some(model) = &self.model {
            let refs: Vec<&DynamicImage> = decoded_images.iter().flatten().collect();
            if !refs.is_empty() {
                match model.score_batch(&refs) {
                    Ok(scores) => {
                        let mut scores = scores.into_iter();
                        for (a, img) in out.iter_mut().zip(&decoded_images) {
                            if img.is_some() {
                                a.model = scores.next().flatten();
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pixel model failed; decisions carry no model score")
                    }
                }
            }
        }
        (out, decode_time)
    }

    /// The pixel model's cumulative `(crop, inference)` nanoseconds.
    pub fn model_stage_nanos(&self) -> (u64, u64) {
        self.model
            .as_deref()
            .map_or((0, 0), PixelModel::stage_nanos)
    }
}

/// [`PROVENANCE_VERSION`] with a C2PA trust list's id (see
/// [`provenance::C2paTrust::trust_list_id`]).
pub fn provenance_version(trust_list_id: Option<&str>) -> String {
    match trust_list_id {
        Some(id) => format!("{PROVENANCE_VERSION}+trust:{id}"),
        None => PROVENANCE_VERSION.to_owned(),
    }
}

/// Decodes `bytes` within `limits`.
pub fn decode(
    bytes: &[u8],
    limits: &DecodeLimits,
) -> Result<(DecodedInfo, DynamicImage), DecodeError> {
    decode_with(bytes, limits, None).map(|d| (d.info, d.image))
}

/// Which rectangles of a `width × height` image (as shown) are wanted; `None`: all of it.
type Wanted<'a> = dyn Fn(u32, u32) -> Option<Vec<Rect>> + 'a;

/// [`decode`], reconstructing only the rectangles `wanted(width, height)` names (in the image
/// as shown, after its EXIF orientation; `None`: all of it) where the format allows: baseline
/// and progressive JPEGs in YCbCr, which are most photos. There the inverse DCT, chroma
/// up-sampling and colour conversion run only around the rectangles and the signature pixels of
/// [`provenance`]'s stealth reader; entropy decoding still covers the whole scan, so a corrupt
/// image fails (or not) exactly as it does whole. Inside those rectangles the pixels are the
/// whole decode's, bit for bit. Other images, and any JPEG the fast path does not take, decode
/// whole ([`Decoded::whole`]).
pub fn decode_regions(
    bytes: &[u8],
    limits: &DecodeLimits,
    wanted: &dyn Fn(u32, u32) -> Option<Vec<Rect>>,
) -> Result<Decoded, DecodeError> {
    decode_with(bytes, limits, Some(wanted))
}

/// [`decode_regions`], or [`decode`] without `wanted` (no JPEG header is read twice then).
fn decode_with(
    bytes: &[u8],
    limits: &DecodeLimits,
    wanted: Option<&Wanted<'_>>,
) -> Result<Decoded, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if let Some(kind) = heif::sniff(bytes) {
        // libheif applies the file's own rotation and mirroring: the pixels are as shown.
        let image = heif::decode(bytes, kind, limits)?;
        return Ok(Decoded {
            info: DecodedInfo {
                width: image.width(),
                height: image.height(),
                format: Format::Heif(kind),
                orientation: image::metadata::Orientation::NoTransforms,
            },
            image,
            whole: true,
        });
    }
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    let Some(format) = reader.format() else {
        return Err(DecodeError::UnsupportedFormat(String::new()));
    };
    if !format.reading_enabled() {
        return Err(DecodeError::UnsupportedFormat(format!(
            ": {format:?} is not supported by this build"
        )));
    }
    let (width, height) = reader.into_dimensions().map_err(map_image_error)?;
    check_dims(width, height, limits)?;
    if format == ImageFormat::Jpeg && !jpeg_has_end(bytes) {
        // The JPEG decoder pads a truncated scan with grey instead of failing; a half image
        // must not pass as a clean one.
        return Err(DecodeError::Corrupt(
            "JPEG is truncated (no end-of-image marker after the scan)".into(),
        ));
    }
    if let Some(wanted) = wanted.filter(|_| format == ImageFormat::Jpeg) {
        if let Some(d) = jpeg_regions(bytes, limits, (width, height), wanted) {
            return Ok(d);
        }
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut lim = Limits::default();
    lim.max_image_width = Some(limits.max_dimension);
    lim.max_image_height = Some(limits.max_dimension);
    lim.max_alloc = Some(limits.max_alloc_bytes);
    reader.limits(lim);
    let mut decoder = reader.into_decoder().map_err(map_image_error)?;
    // A phone photo stored sideways with an EXIF orientation is shown upright.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let img = DynamicImage::from_decoder(decoder).map_err(map_image_error)?;
    let (width, height) = oriented_size(orientation, img.width(), img.height());
    Ok(Decoded {
        info: DecodedInfo {
            width,
            height,
            format: Format::Image(format),
            orientation,
        },
        image: img,
        whole: true,
    })
}

/// The crop-first JPEG path of [`decode_regions`]: `None` where it does not apply (no
/// rectangles, not YCbCr, over the allocation limit) or the decoder reports an error, so that
/// the whole-image path decides, and words, the outcome exactly as before.
fn jpeg_regions(
    bytes: &[u8],
    limits: &DecodeLimits,
    (width, height): (u32, u32),
    wanted: &Wanted<'_>,
) -> Option<Decoded> {
    use zune_jpeg::zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options};
    let len = u64::from(width) * u64::from(height) * 3;
    if len > limits.max_alloc_bytes {
        return None;
    }
    // The options the `image` crate decodes JPEGs with, so that the pixels are the same.
    let opts = options::DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(limits.max_dimension as usize)
        .set_max_height(limits.max_dimension as usize)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    decoder.decode_headers().ok()?;
    if decoder.input_colorspace() != Some(ColorSpace::YCbCr)
        || decoder.dimensions() != Some((width as usize, height as usize))
    {
        return None;
    }
    let orientation = decoder
        .exif()
        .and_then(|exif| image::metadata::Orientation::from_exif_chunk(exif))
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let shown = oriented_size(orientation, width, height);
    let mut rects: Vec<(usize, usize, usize, usize)> = wanted(shown.0, shown.1)?
        .into_iter()
        .map(|r| stored_rect(orientation, clip(r, shown), (width, height)))
        .chain([provenance::pixel_payload_rect(width, height)])
        .map(|(x, y, w, h)| (x as usize, y as usize, w as usize, h as usize))
        .collect();
    rects.retain(|r| r.2 > 0 && r.3 > 0);
    decoder.set_region(&rects);
    let mut buf = vec![0u8; usize::try_from(len).ok()?];
    decoder.decode_into(&mut buf).ok()?;
    let image = DynamicImage::ImageRgb8(image::RgbImage::from_raw(width, height, buf)?);
    Some(Decoded {
        info: DecodedInfo {
            width: shown.0,
            height: shown.1,
            format: Format::Image(ImageFormat::Jpeg),
            orientation,
        },
        image,
        whole: false,
    })
}

/// The part of `r` inside a `w × h` image (empty when none is).
fn clip((x, y, rw, rh): Rect, (w, h): (u32, u32)) -> Rect {
    if x >= w || y >= h {
        return (0, 0, 0, 0);
    }
    (x, y, rw.min(w - x), rh.min(h - y))
}

/// The size of a `width × height` image as shown under `orientation`.
fn oriented_size(orientation: image::metadata::Orientation, width: u32, height: u32) -> (u32, u32) {
    use image::metadata::Orientation as O;
    match orientation {
        O::Rotate90 | O::Rotate270 | O::Rotate90FlipH | O::Rotate270FlipH => (height, width),
        _ => (width, height),
    }
}

/// The stored pixels under a rectangle of the image as shown, for a stored `w × h` image
/// (the inverse of `DynamicImage::apply_orientation`, tested against it).
fn stored_rect(
    orientation: image::metadata::Orientation,
    (x, y, rw, rh): Rect,
    (w, h): (u32, u32),
) -> Rect {
    use image::metadata::Orientation as O;
    // Where the shown pixel (sx, sy) is stored.
    let stored = |sx: u32, sy: u32| -> (u32, u32) {
        match orientation {
            O::NoTransforms => (sx, sy),
            O::Rotate90 => (sy, h - 1 - sx),
            O::Rotate180 => (w - 1 - sx, h - 1 - sy),
            O::Rotate270 => (w - 1 - sy, sx),
            O::FlipHorizontal => (w - 1 - sx, sy),
            O::FlipVertical => (sx, h - 1 - sy),
            O::Rotate90FlipH => (sy, sx),
            O::Rotate270FlipH => (w - 1 - sy, h - 1 - sx),
        }
    };
    if rw == 0 || rh == 0 {
        return (0, 0, 0, 0);
    }
    let (ax, ay) = stored(x, y);
    let (bx, by) = stored(x + rw - 1, y + rh - 1);
    let (x0, y0) = (ax.min(bx), ay.min(by));
    (x0, y0, ax.max(bx) - x0 + 1, ay.max(by) - y0 + 1)
}

/// Whether an end-of-image marker follows the first start-of-scan.
fn jpeg_has_end(bytes: &[u8]) -> bool {
    // An end-of-image marker anywhere after the first start-of-scan; searched from the end,
    // where a whole file has it.
    let sos = memchr::memmem::find(bytes, &[0xFF, 0xDA]);
    sos.is_some_and(|p| memchr::memmem::rfind(&bytes[p..], &[0xFF, 0xD9]).is_some())
}

pub(crate) fn check_dims(
    width: u32,
    height: u32,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Corrupt(format!(
            "image has zero size {width}x{height}"
        )));
    }
    if width < limits.min_dimension || height < limits.min_dimension {
        return Err(DecodeError::TooSmall {
            width,
            height,
            min: limits.min_dimension,
        });
    }
    if width > limits.max_dimension || height > limits.max_dimension {
        return Err(DecodeError::TooLarge {
            width,
            height,
            limit: format!("max dimension {}", limits.max_dimension),
        });
    }
    if u64::from(width) * u64::from(height) > limits.max_pixels {
        return Err(DecodeError::TooLarge {
            width,
            height,
            limit: format!("max {} pixels", limits.max_pixels),
        });
    }
    Ok(())
}

fn map_image_error(e: image::ImageError) -> DecodeError {
    match e {
        image::ImageError::Unsupported(u) => DecodeError::UnsupportedFormat(format!(": {u}")),
        image::ImageError::Limits(l) => DecodeError::TooLarge {
            width: 0,
            height: 0,
            limit: l.to_string(),
        },
        other => DecodeError::Corrupt(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_bytes(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn decode_outcomes() {
        let lim = DecodeLimits {
            max_pixels: 10_000,
            max_dimension: 200,
            min_dimension: 16,
            max_alloc_bytes: 1 << 24,
        };
        assert_eq!(decode(&png_bytes(50, 40), &lim).unwrap().0.width, 50);
        assert_eq!(decode(b"", &lim).unwrap_err().class(), "empty_image");
        assert_eq!(
            decode(b"hello world, not an image", &lim)
                .unwrap_err()
                .class(),
            "unsupported_format"
        );
        assert_eq!(
            decode(&png_bytes(150, 150), &lim).unwrap_err().class(),
            "image_too_large"
        );
        assert_eq!(
            decode(&png_bytes(300, 20), &lim).unwrap_err().class(),
            "image_too_large"
        );
        assert_eq!(
            decode(&png_bytes(1, 1), &lim).unwrap_err().class(),
            "image_too_small"
        );
        let mut truncated = png_bytes(60, 60);
        truncated.truncate(truncated.len() / 2);
        assert_eq!(
            decode(&truncated, &lim).unwrap_err().class(),
            "decode_error"
        );
        let img =
            image::RgbImage::from_fn(64, 64, |x, y| image::Rgb([x as u8 * 3, y as u8 * 3, 7]));
        let mut jpg = Vec::new();
        img.write_to(&mut Cursor::new(&mut jpg), ImageFormat::Jpeg)
            .unwrap();
        assert!(decode(&jpg, &lim).is_ok());
        jpg.truncate(jpg.len() * 2 / 3);
        assert_eq!(decode(&jpg, &lim).unwrap_err().class(), "decode_error");
    }

    #[test]
    fn jpeg_end_counts_only_after_the_first_scan() {
        // An EXIF thumbnail's end-of-image before the scan does not make a truncated file whole.
        assert!(!jpeg_has_end(&[0xFF, 0xD8, 0xFF, 0xD9, 0xFF, 0xDA, 1, 2]));
        assert!(jpeg_has_end(&[0xFF, 0xD8, 0xFF, 0xDA, 1, 0xFF, 0xD9]));
        // Trailing bytes after the marker (appended data) are allowed.
        assert!(jpeg_has_end(&[0xFF, 0xDA, 0xFF, 0xD9, 0, 0, 0xFF]));
        assert!(!jpeg_has_end(&[0xFF, 0xDA, 0xD9, 0xFF]));
        assert!(!jpeg_has_end(&[0xFF, 0xD9]));
        assert!(!jpeg_has_end(&[]));
    }

    #[test]
    fn header_says_huge_is_refused_before_allocation() {
        // A valid PNG header claiming 50,000 x 50,000 pixels with no data behind it.
        let mut png = png_bytes(1, 1);
        png[16..20].copy_from_slice(&50_000u32.to_be_bytes());
        png[20..24].copy_from_slice(&50_000u32.to_be_bytes());
        let mut crc = flate2::Crc::new();
        crc.update(&png[12..29]);
        png[29..33].copy_from_slice(&crc.sum().to_be_bytes());
        let e = decode(&png, &DecodeLimits::default()).unwrap_err();
        assert_eq!(e.class(), "image_too_large", "{e}");
    }

    #[test]
    fn stored_rect_inverts_apply_orientation() {
        use image::metadata::Orientation as O;
        let (w, h) = (13u32, 7u32);
        // Each stored pixel names its own coordinates.
        let stored = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, 0]));
        for o in [
            O::NoTransforms,
            O::Rotate90,
            O::Rotate180,
            O::Rotate270,
            O::FlipHorizontal,
            O::FlipVertical,
            O::Rotate90FlipH,
            O::Rotate270FlipH,
        ] {
            let mut shown = DynamicImage::ImageRgb8(stored.clone());
            shown.apply_orientation(o);
            let shown = shown.to_rgb8();
            assert_eq!(shown.dimensions(), oriented_size(o, w, h), "{o:?}");
            let (sw, sh) = shown.dimensions();
            for r in [
                (0, 0, sw, sh),
                (1, 2, 3, 4),
                (sw - 2, sh - 3, 2, 3),
                (4, 0, 1, 1),
            ] {
                let (x, y, rw, rh) = stored_rect(o, r, (w, h));
                assert_eq!(rw * rh, r.2 * r.3, "{o:?} {r:?}: same area");
                for sy in r.1..r.1 + r.3 {
                    for sx in r.0..r.0 + r.2 {
                        let [px, py, _] = shown.get_pixel(sx, sy).0;
                        let (px, py) = (u32::from(px), u32::from(py));
                        assert!(
                            (x..x + rw).contains(&px) && (y..y + rh).contains(&py),
                            "{o:?} {r:?}: shown ({sx}, {sy}) is stored at ({px}, {py}), \
                             outside {:?}",
                            (x, y, rw, rh)
                        );
                    }
                }
            }
        }
    }

    struct Fixed;
    impl PixelModel for Fixed {
        fn version(&self) -> &str {
            "fixed@1"
        }
        fn score_batch(
            &self,
            images: &[&DynamicImage],
        ) -> Result<Vec<Option<ModelScore>>, ModelError> {
            Ok(images
                .iter()
                .map(|i| {
                    Some(ModelScore {
                        model_version: "fixed@1".into(),
                        ai_probability: i.width() as f32 / 200.0,
                        max_crop_probability: 0.0,
                        mean_crop_probability: 0.0,
                        crop_probabilities: vec![],
                        operating_points: vec![],
                        crossed_fpr: None,
                    })
                })
                .collect())
        }
    }

    #[test]
    fn model_scores_only_decoded_images_in_order() {
        let d = Detector::new(DecodeLimits::default()).with_model(Arc::new(Fixed));
        assert_eq!(d.model_version(), Some("fixed@1"));
        let a = png_bytes(20, 20);
        let b = png_bytes(60, 20);
        let out = d.analyse_batch(&[&a, b"junk", &b]);
        assert_eq!(out[0].model.as_ref().unwrap().ai_probability, 0.1);
        assert!(out[1].model.is_none() && out[1].decoded.is_err());
        assert_eq!(out[2].model.as_ref().unwrap().ai_probability, 0.3);
        assert_eq!(out[1].sha256, lg_events::sha256_hex(b"junk"));
    }

    #[test]
    fn a_known_hash_is_taken_as_given() {
        let d = Detector::new(DecodeLimits::default());
        let a = png_bytes(20, 20);
        let hash = lg_events::sha256_hex(&a);
        let given = Image {
            bytes: &a,
            sha256: Some(&hash),
        };
        let (out, _) = d.analyse_batch_timed(&[given, Image::new(b"junk")]);
        assert_eq!(out[0].sha256, hash);
        assert_eq!(out[1].sha256, lg_events::sha256_hex(b"junk"));
        // Everything else as when the detector hashes the bytes itself.
        assert_eq!(format!("{:?}", out[0]), format!("{:?}", d.analyse(&a)));
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "not the bytes'")]
    fn a_wrong_hash_is_caught_in_debug_builds() {
        let d = Detector::new(DecodeLimits::default());
        let a = png_bytes(20, 20);
        let wrong = Image {
            bytes: &a,
            sha256: Some("00"),
        };
        d.analyse_batch_timed(&[wrong]);
    }
}
