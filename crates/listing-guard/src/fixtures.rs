//! Image fixtures the project makes itself: clean synthetic photos, and copies carrying each kind
//! of AI marker, written the way the real tools write them. Used by `demo` and by the tests.

use std::io::Cursor;

use image::{ImageFormat, RgbImage};

/// A marker kind a fixture can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fixture {
    /// A clean JPEG photo.
    CleanJpeg,
    /// A clean PNG.
    CleanPng,
    /// JPEG with XMP `Iptc4xmpExt:DigitalSourceType = trainedAlgorithmicMedia`.
    XmpTrainedAlgorithmic,
    /// JPEG with XMP `Iptc4xmpExt:DigitalSourceType = algorithmicMedia` (not generative AI).
    XmpAlgorithmic,
    /// PNG with an A1111 `parameters` text chunk.
    PngA1111,
    /// PNG with ComfyUI `prompt`/`workflow` chunks.
    PngComfyUi,
    /// JPEG with EXIF `Software = Midjourney`.
    ExifMidjourney,
    /// JPEG with the GB 45438 `TC260:AIGC` label in XMP.
    XmpTc260,
    /// PNG with the `TC260:AIGC` label as a raw `AIGC` text chunk.
    PngAigcChunk,
    /// A truncated JPEG.
    BrokenJpeg,
}

impl Fixture {
    /// Every fixture.
    pub const ALL: [Fixture; 10] = [
        Fixture::CleanJpeg,
        Fixture::CleanPng,
        Fixture::XmpTrainedAlgorithmic,
        Fixture::XmpAlgorithmic,
        Fixture::PngA1111,
        Fixture::PngComfyUi,
        Fixture::ExifMidjourney,
        Fixture::XmpTc260,
        Fixture::PngAigcChunk,
        Fixture::BrokenJpeg,
    ];

    /// Short name (used in URLs and file names).
    pub fn name(self) -> &'static str {
        match self {
            Fixture::CleanJpeg => "clean.jpg",
            Fixture::CleanPng => "clean.png",
            Fixture::XmpTrainedAlgorithmic => "xmp-trained-algorithmic.jpg",
            Fixture::XmpAlgorithmic => "xmp-algorithmic.jpg",
            Fixture::PngA1111 => "a1111.png",
            Fixture::PngComfyUi => "comfyui.png",
            Fixture::ExifMidjourney => "exif-midjourney.jpg",
            Fixture::XmpTc260 => "tc260-xmp.jpg",
            Fixture::PngAigcChunk => "tc260-aigc-chunk.png",
            Fixture::BrokenJpeg => "broken.jpg",
        }
    }

    /// Whether the fixture's metadata declares AI generation.
    pub fn declares_ai(self) -> bool {
        matches!(
            self,
            Fixture::XmpTrainedAlgorithmic
                | Fixture::PngA1111
                | Fixture::PngComfyUi
                | Fixture::ExifMidjourney
                | Fixture::XmpTc260
                | Fixture::PngAigcChunk
        )
    }

    /// The bytes, deterministic for a given `seed`.
    pub fn bytes(self, seed: u32) -> Vec<u8> {
        let img = photo(256, 192, seed);
        match self {
            Fixture::CleanJpeg => jpeg(&img),
            Fixture::CleanPng => png(&img),
            Fixture::XmpTrainedAlgorithmic => with_jpeg_xmp(&jpeg(&img), &xmp_iptc("trainedAlgorithmicMedia")),
            Fixture::XmpAlgorithmic => with_jpeg_xmp(&jpeg(&img), &xmp_iptc("algorithmicMedia")),
            Fixture::PngA1111 => with_png_text(
                &png(&img),
                "parameters",
                "studio photo of a leather handbag\nNegative prompt: blurry\nSteps: 30, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1234, Size: 512x512, Model: sd_xl_base_1.0",
            ),
            Fixture::PngComfyUi => {
                let p = with_png_text(&png(&img), "prompt", r#"{"3": {"inputs": {"seed": 5, "steps": 20}, "class_type": "KSampler"}}"#);
                with_png_text(&p, "workflow", r#"{"last_node_id": 9, "nodes": []}"#)
            }
            Fixture::ExifMidjourney => with_jpeg_exif_software(&jpeg(&img), "Midjourney v6"),
            Fixture::XmpTc260 => with_jpeg_xmp(&jpeg(&img), &xmp_tc260(&aigc_json())),
            Fixture::PngAigcChunk => with_png_text(&png(&img), "AIGC", &aigc_json()),
            Fixture::BrokenJpeg => {
                let mut b = jpeg(&img);
                b.truncate(b.len() / 3);
                b
            }
        }
    }
}

/// The shared conformance corpus (`../shared/corpus` beside the repository), if present. Absent
/// with `CI=true` is a failure, not a skip.
pub fn shared_corpus() -> Option<std::path::PathBuf> {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    if d.join("MANIFEST.tsv").exists() {
        return Some(d);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but the shared corpus is missing at {}",
        d.display()
    );
    eprintln!("skipping: shared corpus not found at {}", d.display());
    None
}

/// A GB 45438 implicit label value as a producer writes it.
pub fn aigc_json() -> String {
    r#"{"Label":"1","ContentProducer":"001191110108MA01KP2T5U00000","ProduceID":"gen-2026-0001","ReservedCode1":"","ContentPropagator":"","PropagateID":"","ReservedCode2":""}"#.to_owned()
}

/// A smooth synthetic "photo" with texture, different per seed.
pub fn photo(w: u32, h: u32, seed: u32) -> RgbImage {
    let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    RgbImage::from_fn(w, h, |x, y| {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let noise = (state % 17) as i32 - 8;
        let base = |k: u32| ((x * k + y * (k + 1) + seed * 37) % 256) as i32;
        let c = |v: i32| (v + noise).clamp(0, 255) as u8;
        image::Rgb([c(base(1)), c(base(2) / 2 + 60), c(255 - base(1))])
    })
}

/// Encodes as JPEG (quality 85).
pub fn jpeg(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 85)
        .encode_image(img)
        .expect("JPEG encodes");
    out
}

/// Encodes as PNG.
pub fn png(img: &RgbImage) -> Vec<u8> {
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
        .expect("PNG encodes");
    out
}

/// Inserts a `tEXt` chunk before `IEND`.
pub fn with_png_text(png: &[u8], keyword: &str, text: &str) -> Vec<u8> {
    let mut data = keyword.as_bytes().to_vec();
    data.push(0);
    data.extend_from_slice(text.as_bytes());
    insert_png_chunk(png, b"tEXt", &data)
}

fn insert_png_chunk(png: &[u8], kind: &[u8; 4], data: &[u8]) -> Vec<u8> {
    let iend = png.len() - 12;
    let mut out = png[..iend].to_vec();
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    let mut crc = flate2::Crc::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    out.extend_from_slice(&crc.sum().to_be_bytes());
    out.extend_from_slice(&png[iend..]);
    out
}

/// Inserts an APP1 segment right after SOI.
fn with_jpeg_app1(jpeg: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&((payload.len() + 2) as u16).to_be_bytes());
    out.extend_from_slice(payload);
    out.extend_from_slice(&jpeg[2..]);
    out
}

/// Adds an XMP packet to a JPEG.
pub fn with_jpeg_xmp(jpeg: &[u8], xmp: &str) -> Vec<u8> {
    let mut p = b"http://ns.adobe.com/xap/1.0/\0".to_vec();
    p.extend_from_slice(xmp.as_bytes());
    with_jpeg_app1(jpeg, &p)
}

/// Adds an EXIF block with IFD0 `Software`.
pub fn with_jpeg_exif_software(jpeg: &[u8], software: &str) -> Vec<u8> {
    let mut s = software.as_bytes().to_vec();
    s.push(0);
    // ASCII, the value right after the one-entry IFD.
    let offset = (8u32 + 2 + 12 + 4).to_be_bytes();
    with_jpeg_app1(jpeg, &exif_one_entry(0x0131, 2, s.len() as u32, offset, &s))
}

/// Adds an EXIF block with IFD0 `Orientation` (1–8; 6: stored rotated 90° counter-clockwise,
/// shown after a 90° clockwise turn).
pub fn with_jpeg_exif_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
    let mut value = orientation.to_be_bytes().to_vec();
    value.extend_from_slice(&[0, 0]);
    let value: [u8; 4] = value.try_into().expect("4 bytes");
    with_jpeg_app1(jpeg, &exif_one_entry(0x0112, 3, 1, value, &[]))
}

/// Adds an EXIF block whose Exif IFD holds `UserComment` = `text` (ASCII character code), where
/// GB 45438's practice guide lets a label be written as `{"AIGC":{...}}`.
pub fn with_jpeg_exif_user_comment(jpeg: &[u8], text: &str) -> Vec<u8> {
    with_jpeg_app1(jpeg, &exif_user_comment(text))
}

/// An APP1 `Exif` payload (also the body of a HEIF `Exif` item after its 4-byte offset):
/// IFD0 points to an Exif IFD with one `UserComment` entry.
pub fn exif_user_comment(text: &str) -> Vec<u8> {
    let mut comment = b"ASCII\0\0\0".to_vec();
    comment.extend_from_slice(text.as_bytes());
    // TIFF header (8) + IFD0 with one entry (2 + 12 + 4) = 26: the Exif IFD; its one entry's
    // value follows it at 26 + 18 = 44.
    let exif_ifd = 8u32 + 2 + 12 + 4;
    let value_at = exif_ifd + 2 + 12 + 4;
    let mut p = exif_one_entry(0x8769, 4, 1, exif_ifd.to_be_bytes(), &[]);
    p.extend_from_slice(&1u16.to_be_bytes());
    p.extend_from_slice(&0x9286u16.to_be_bytes()); // UserComment
    p.extend_from_slice(&7u16.to_be_bytes()); // UNDEFINED
    p.extend_from_slice(&(comment.len() as u32).to_be_bytes());
    p.extend_from_slice(&value_at.to_be_bytes());
    p.extend_from_slice(&0u32.to_be_bytes());
    p.extend_from_slice(&comment);
    p
}

/// An APP1 `Exif` payload: a big-endian TIFF with one IFD0 entry, `extra` after the IFD.
fn exif_one_entry(tag: u16, kind: u16, count: u32, value: [u8; 4], extra: &[u8]) -> Vec<u8> {
    let mut p = b"Exif\0\0MM\0\x2A\0\0\0\x08".to_vec();
    p.extend_from_slice(&1u16.to_be_bytes()); // one entry
    p.extend_from_slice(&tag.to_be_bytes());
    p.extend_from_slice(&kind.to_be_bytes());
    p.extend_from_slice(&count.to_be_bytes());
    p.extend_from_slice(&value);
    p.extend_from_slice(&0u32.to_be_bytes()); // no next IFD
    p.extend_from_slice(extra);
    p
}

fn xmp_wrap(ns: &str, body: &str) -> String {
    format!(
        r#"<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" {ns}>{body}</rdf:Description></rdf:RDF></x:xmpmeta><?xpacket end="w"?>"#
    )
}

/// XMP with an IPTC digital source type.
pub fn xmp_iptc(term: &str) -> String {
    xmp_wrap(
        r#"xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/""#,
        &format!("<Iptc4xmpExt:DigitalSourceType>http://cv.iptc.org/newscodes/digitalsourcetype/{term}</Iptc4xmpExt:DigitalSourceType>"),
    )
}

/// XMP with a `TC260:AIGC` value.
pub fn xmp_tc260(json: &str) -> String {
    let escaped = json.replace('&', "&amp;").replace('<', "&lt;");
    xmp_wrap(
        r#"xmlns:TC260="http://www.tc260.org.cn/ns/AIGC/1.0/""#,
        &format!("<TC260:AIGC>{escaped}</TC260:AIGC>"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exif_orientation_is_applied_before_scoring() {
        let sideways = with_jpeg_exif_orientation(&jpeg(&photo(64, 32, 1)), 6);
        let limits = lg_detector::DecodeLimits::default();
        let (info, img) = lg_detector::decode(&sideways, &limits).unwrap();
        assert_eq!((info.width, info.height), (32, 64), "reported as shown");
        assert_eq!((img.width(), img.height()), (64, 32), "decoded as stored");
        assert_eq!(
            info.orientation,
            image::metadata::Orientation::Rotate90,
            "the model turns it before scoring"
        );
        let upright = jpeg(&photo(64, 32, 1));
        let (info, _) = lg_detector::decode(&upright, &limits).unwrap();
        assert_eq!((info.width, info.height), (64, 32));
    }
}
