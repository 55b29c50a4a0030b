//! The visible label: "AI生成" and/or "AI-generated" drawn into a corner of a copy of the image,
//! on a backing plate, with a glyph height of at least 5% of the image's shortest side.
//!
//! Text is laid out with `ab_glyph` in a subset of Noto Sans CJK SC Bold that ships with the
//! crate (`assets/fonts`, SIL OFL 1.1). Sizing is measured, not assumed: the scale is chosen so
//! that the *smallest* glyph that matters, the Latin capital `A`, has an ink height of
//! [`MIN_GLYPH_FRACTION`] plus a margin of the shortest side; CJK glyphs come out taller.
//!
//! [`label_copy`] decodes the original (applying its EXIF orientation, since the copy carries no
//! EXIF), draws the label, re-encodes in the original's format (JPEG quality 92, or PNG) and
//! writes the implicit label into the copy with [`crate::stamp::stamp`].

use ab_glyph::{Font as _, FontRef, GlyphId, OutlinedGlyph, PxScale, ScaleFont as _};
use image::{DynamicImage, ImageDecoder as _, ImageEncoder, ImageFormat, Rgba, RgbaImage};
use lg_events::Tc260Aigc;

use crate::stamp::{stamp, StampError};

/// The font: a subset of Noto Sans CJK SC Bold (SIL OFL 1.1).
pub static FONT_OTF: &[u8] = include_bytes!("../assets/fonts/NotoSansSC-Bold-subset.otf");
/// The minimum glyph height the standard asks for, as a fraction of the shortest side.
pub const MIN_GLYPH_FRACTION: f32 = 0.05;
/// What the renderer aims for, leaving room for anti-aliasing and rounding.
const TARGET_FRACTION: f32 = 0.056;
/// Below this many pixels a glyph is not legible, whatever the image size.
const MIN_GLYPH_PX: f32 = 10.0;
/// Largest image decoded for labelling, per side.
const MAX_SIDE: u32 = 16_384;

/// Which corner the label goes into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Corner {
    /// Top left.
    TopLeft,
    /// Top right.
    TopRight,
    /// Bottom left.
    BottomLeft,
    /// Bottom right (the default: least likely to cover the product).
    #[default]
    BottomRight,
}

impl std::str::FromStr for Corner {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "top-left" => Ok(Self::TopLeft),
            "top-right" => Ok(Self::TopRight),
            "bottom-left" => Ok(Self::BottomLeft),
            "bottom-right" => Ok(Self::BottomRight),
            _ => Err(format!(
                "{s:?}: expected top-left, top-right, bottom-left or bottom-right"
            )),
        }
    }
}

/// Pixel rectangle: `x..x+w`, `y..y+h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub w: u32,
    /// Height.
    pub h: u32,
}

/// Where the label was drawn.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Placement {
    /// The backing plate (everything the label changed lies inside it).
    pub plate: Rect,
    /// The ink height of a capital `A`, in pixels.
    pub cap_height_px: f32,
}

/// Why a visible label could not be made.
#[derive(Debug, thiserror::Error)]
pub enum VisibleError {
    /// The text has a character the shipped font lacks.
    #[error("the label font has no glyph for {0:?}")]
    MissingGlyph(char),
    /// The image is too small to hold the label at the required size.
    #[error("a {w}x{h} image is too small for a legible label {text:?}")]
    TooSmall {
        /// Width.
        w: u32,
        /// Height.
        h: u32,
        /// The text.
        text: String,
    },
    /// The original could not be decoded or the copy encoded.
    #[error("image: {0}")]
    Image(#[from] image::ImageError),
    /// Only JPEG and PNG originals are labelled.
    #[error("visible labels are written for JPEG and PNG only")]
    UnsupportedFormat,
    /// Writing the implicit label into the copy failed.
    #[error("implicit label on the copy: {0}")]
    Stamp(#[from] StampError),
}

/// The label text for a policy's locale (`zh`, `en` or `zh+en`): the non-empty texts joined.
pub fn text_for(zh: &str, en: &str) -> String {
    [zh, en]
        .iter()
        .filter(|t| !t.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ")
}

fn font() -> FontRef<'static> {
    FontRef::try_from_slice(FONT_OTF).expect("the shipped font parses")
}

/// Lays `text` out on one line at `scale`, baseline at y = 0; returns the outlined glyphs.
fn layout(
    font: &FontRef<'_>,
    text: &str,
    scale: PxScale,
) -> Result<Vec<OutlinedGlyph>, VisibleError> {
    let scaled = font.as_scaled(scale);
    let mut x = 0.0f32;
    let mut prev: Option<GlyphId> = None;
    let mut out = Vec::new();
    for c in text.chars() {
        let id = font.glyph_id(c);
        if id.0 == 0 && !c.is_whitespace() {
            return Err(VisibleError::MissingGlyph(c));
        }
        if let Some(p) = prev {
            x += scaled.kern(p, id);
        }
        let glyph = id.with_scale_and_position(scale, ab_glyph::point(x, 0.0));
        x += scaled.h_advance(id);
        prev = Some(id);
        if let Some(o) = font.outline_glyph(glyph) {
            out.push(o);
        }
    }
    Ok(out)
}

/// The ink bounds `(min_x, min_y, max_x, max_y)` of laid-out glyphs.
fn ink(glyphs: &[OutlinedGlyph]) -> (f32, f32, f32, f32) {
    glyphs.iter().fold(
        (f32::MAX, f32::MAX, f32::MIN, f32::MIN),
        |(a, b, c, d), g| {
            let r = g.px_bounds();
            (
                a.min(r.min.x),
                b.min(r.min.y),
                c.max(r.max.x),
                d.max(r.max.y),
            )
        },
    )
}

/// Draws the label into `img` (RGBA) and says where.
pub fn draw(img: &mut RgbaImage, text: &str, corner: Corner) -> Result<Placement, VisibleError> {
    let (w, h) = img.dimensions();
    let short = w.min(h) as f32;
    let font = font();
    // Measure a capital A at 100 px, then scale so its ink reaches the target height.
    let probe = layout(&font, "A", PxScale::from(100.0))?;
    let (_, a_top, _, a_bottom) = ink(&probe);
    let cap_per_px = (a_bottom - a_top) / 100.0;
    let cap_target = (short * TARGET_FRACTION).ceil().max(MIN_GLYPH_PX);
    let scale = PxScale::from(cap_target / cap_per_px);
    let glyphs = layout(&font, text, scale)?;
    let (x0, y0, x1, y1) = ink(&glyphs);
    let (ink_w, ink_h) = (x1 - x0, y1 - y0);
    let pad = (cap_target * 0.45).ceil();
    let margin = (short * 0.02).round();
    let plate_w = (ink_w + 2.0 * pad).ceil();
    let plate_h = (ink_h + 2.0 * pad).ceil();
    if plate_w + 2.0 * margin > w as f32 || plate_h + 2.0 * margin > h as f32 {
        return Err(VisibleError::TooSmall {
            w,
            h,
            text: text.to_owned(),
        });
    }
    let px = match corner {
        Corner::TopLeft | Corner::BottomLeft => margin,
        Corner::TopRight | Corner::BottomRight => w as f32 - margin - plate_w,
    };
    let py = match corner {
        Corner::TopLeft | Corner::TopRight => margin,
        Corner::BottomLeft | Corner::BottomRight => h as f32 - margin - plate_h,
    };
    let plate = Rect {
        x: px as u32,
        y: py as u32,
        w: plate_w as u32,
        h: plate_h as u32,
    };
    // The plate: black at 62% over whatever is there, so white text reads on light and dark.
    for y in plate.y..plate.y + plate.h {
        for x in plate.x..plate.x + plate.w {
            blend(img.get_pixel_mut(x, y), [0, 0, 0], 0.62);
        }
    }
    // Text origin so the ink box sits `pad` inside the plate.
    let ox = plate.x as f32 + pad - x0;
    let oy = plate.y as f32 + pad - y0;
    for g in &glyphs {
        let b = g.px_bounds();
        g.draw(|gx, gy, coverage| {
            let x = (ox + b.min.x).floor() as i64 + i64::from(gx);
            let y = (oy + b.min.y).floor() as i64 + i64::from(gy);
            if let (Ok(x), Ok(y)) = (u32::try_from(x), u32::try_from(y)) {
                if x < w && y < h {
                    blend(img.get_pixel_mut(x, y), [255, 255, 255], coverage.min(1.0));
                }
            }
        });
    }
    Ok(Placement {
        plate,
        cap_height_px: cap_target,
    })
}

fn blend(p: &mut Rgba<u8>, rgb: [u8; 3], alpha: f32) {
    for (c, t) in p.0.iter_mut().zip(rgb) {
        *c = (f32::from(*c) * (1.0 - alpha) + f32::from(t) * alpha).round() as u8;
    }
    // An (even partly) transparent pixel under the label becomes opaque enough to show it.
    p.0[3] = (f32::from(p.0[3]) + (255.0 - f32::from(p.0[3])) * alpha).round() as u8;
}

/// Encodes `img` with the original's colour profile when it is an RGB profile and the encoder
/// takes one (otherwise only colour accuracy is lost).
fn encode<E: ImageEncoder>(
    mut encoder: E,
    icc: Option<Vec<u8>>,
    img: &DynamicImage,
) -> image::ImageResult<()> {
    // The copy is RGB(A): a profile for another colour space (grey, CMYK) would misdescribe it.
    if let Some(icc) = icc.filter(|p| p.get(16..20) == Some(b"RGB ")) {
        let _ = encoder.set_icc_profile(icc);
    }
    encoder.write_image(
        img.as_bytes(),
        img.width(),
        img.height(),
        img.color().into(),
    )
}

/// A labelled copy of an image file.
#[derive(Debug, Clone)]
pub struct LabelledCopy {
    /// The encoded copy, with the implicit label.
    pub bytes: Vec<u8>,
    /// `jpeg` or `png`.
    pub extension: &'static str,
    /// Where the label was drawn (in the upright image).
    pub placement: Placement,
}

/// Decodes `original` (JPEG or PNG), draws the label, re-encodes and writes the implicit label.
pub fn label_copy(
    original: &[u8],
    text: &str,
    corner: Corner,
    implicit: &Tc260Aigc,
) -> Result<LabelledCopy, VisibleError> {
    let format = image::guess_format(original)?;
    let extension = match format {
        ImageFormat::Jpeg => "jpg",
        ImageFormat::Png => "png",
        _ => return Err(VisibleError::UnsupportedFormat),
    };
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(original), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation()?;
    // The colour profile travels with the copy, so its colours match the original's.
    let icc = decoder.icc_profile()?;
    let mut img = DynamicImage::from_decoder(decoder)?;
    img.apply_orientation(orientation);
    let had_alpha = img.color().has_alpha();
    let mut rgba = img.to_rgba8();
    let placement = draw(&mut rgba, text, corner)?;
    let mut encoded = Vec::new();
    let mut out = std::io::Cursor::new(&mut encoded);
    let img = if had_alpha && format == ImageFormat::Png {
        DynamicImage::ImageRgba8(rgba)
    } else {
        DynamicImage::ImageRgb8(DynamicImage::ImageRgba8(rgba).to_rgb8())
    };
    match format {
        ImageFormat::Jpeg => encode(
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 92),
            icc,
            &img,
        )?,
        _ => encode(image::codecs::png::PngEncoder::new(&mut out), icc, &img)?,
    }
    let stamped = stamp(&encoded, implicit)?;
    Ok(LabelledCopy {
        bytes: stamped.bytes,
        extension,
        placement,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_policy_text_has_glyphs() {
        let f = font();
        for t in [
            "AI生成",
            "AI-generated",
            "AI合成",
            "人工智能生成",
            "AI生成 AI-generated",
        ] {
            assert!(layout(&f, t, PxScale::from(40.0)).is_ok(), "{t}");
        }
        assert!(matches!(
            layout(&f, "AI產生", PxScale::from(40.0)),
            Err(VisibleError::MissingGlyph('產'))
        ));
    }

    #[test]
    fn corners_parse() {
        assert_eq!("top-left".parse::<Corner>(), Ok(Corner::TopLeft));
        assert!("middle".parse::<Corner>().is_err());
        assert_eq!(text_for("AI生成", ""), "AI生成");
        assert_eq!(text_for("AI生成", "AI-generated"), "AI生成 AI-generated");
    }

    #[test]
    fn a_tiny_image_is_refused_not_mislabelled() {
        let mut img = RgbaImage::new(40, 40);
        assert!(matches!(
            draw(&mut img, "AI生成 AI-generated", Corner::BottomRight),
            Err(VisibleError::TooSmall { .. })
        ));
    }
}
