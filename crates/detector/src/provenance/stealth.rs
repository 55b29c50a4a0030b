//! "Stealth" generation parameters: text hidden by the A1111 stealth-pnginfo extension in the
//! least significant bits of the pixels, so that it survives metadata stripping.
//!
//! Layout: bits are read column by column (x outer, y inner). Alpha mode takes one bit per pixel
//! from alpha; RGB mode three (R, G, B). The first 15 bytes are a signature
//! (`stealth_pnginfo`/`stealth_pngcomp` for alpha, `stealth_rgbinfo`/`stealth_rgbcomp` for RGB;
//! `comp` means gzip), then a 32-bit big-endian bit count, then the payload.

use std::io::Read;

use image::DynamicImage;

const SIG_LEN: usize = 15;
/// Cap on the payload: parameters are text, not files.
const MAX_PAYLOAD_BYTES: usize = 1 << 20;

/// The pixels that hold the signature in either mode (column-major, at most one bit per
/// pixel): the rectangle `(x, y, width, height)` of a `w × h` image that [`signature_present`]
/// reads.
pub(crate) fn signature_rect(w: u32, h: u32) -> (u32, u32, u32, u32) {
    let bits = (SIG_LEN * 8) as u32;
    (0, 0, bits.div_ceil(h.max(1)).min(w), h.min(bits))
}

/// Whether the image starts with a stealth signature (its payload may then reach any pixel).
pub(crate) fn signature_present(img: &DynamicImage) -> bool {
    pixels(img).is_some_and(|p| modes(&p).any(|alpha| signature(&p, alpha).is_some()))
}

/// The hidden text, if the image carries any.
pub(crate) fn read(img: &DynamicImage) -> Option<String> {
    let pixels = pixels(img)?;
    for alpha_mode in modes(&pixels) {
        let Some((compressed, mut bits)) = signature(&pixels, alpha_mode) else {
            continue;
        };
        let len_bits = u32::from_be_bytes(bits.bytes(4)?.try_into().ok()?) as usize;
        let len = len_bits / 8;
        if len == 0 || len > MAX_PAYLOAD_BYTES {
            return None;
        }
        let payload = bits.bytes(len)?;
        let text = if compressed {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(&payload[..])
                .take(MAX_PAYLOAD_BYTES as u64)
                .read_to_end(&mut out)
                .ok()?;
            out
        } else {
            payload
        };
        return Some(String::from_utf8_lossy(&text).into_owned());
    }
    None
}

/// The extension writes 8-bit RGB(A) PNGs; other layouts cannot carry its payload intact.
fn pixels(img: &DynamicImage) -> Option<Pixels<'_>> {
    match img {
        DynamicImage::ImageRgba8(i) => Some(Pixels::Rgba(i)),
        DynamicImage::ImageRgb8(i) => Some(Pixels::Rgb(i)),
        _ => None,
    }
}

/// The modes an image can carry: alpha (only with an alpha channel), then RGB.
fn modes(pixels: &Pixels<'_>) -> impl Iterator<Item = bool> {
    let alpha = matches!(pixels, Pixels::Rgba(_));
    [true, false].into_iter().filter(move |&a| alpha || !a)
}

/// Reads the signature in one mode: whether the payload is gzip, and the bits after it.
fn signature<'a>(pixels: &'a Pixels<'a>, alpha_mode: bool) -> Option<(bool, BitIter<'a>)> {
    let mut bits = BitIter::new(pixels, alpha_mode);
    let sig = bits.bytes(SIG_LEN)?;
    let compressed = match (&sig[..], alpha_mode) {
        (b"stealth_pnginfo", true) | (b"stealth_rgbinfo", false) => false,
        (b"stealth_pngcomp", true) | (b"stealth_rgbcomp", false) => true,
        _ => return None,
    };
    Some((compressed, bits))
}

enum Pixels<'a> {
    Rgba(&'a image::RgbaImage),
    Rgb(&'a image::RgbImage),
}

impl Pixels<'_> {
    fn dimensions(&self) -> (u32, u32) {
        match self {
            Pixels::Rgba(i) => i.dimensions(),
            Pixels::Rgb(i) => i.dimensions(),
        }
    }

    fn channel(&self, x: u32, y: u32, c: usize) -> u8 {
        match self {
            Pixels::Rgba(i) => i.get_pixel(x, y).0[c],
            Pixels::Rgb(i) => i.get_pixel(x, y).0[c],
        }
    }
}

struct BitIter<'a> {
    img: &'a Pixels<'a>,
    w: u32,
    h: u32,
    alpha: bool,
    /// Index of the next channel bit.
    pos: u64,
}

impl<'a> BitIter<'a> {
    fn new(img: &'a Pixels<'a>, alpha: bool) -> Self {
        let (w, h) = img.dimensions();
        Self {
            img,
            w,
            h,
            alpha,
            pos: 0,
        }
    }

    fn bit(&mut self) -> Option<u8> {
        let per_pixel = if self.alpha { 1 } else { 3 };
        let pixel = self.pos / per_pixel;
        let channel = if self.alpha {
            3
        } else {
            (self.pos % per_pixel) as usize
        };
        let (x, y) = (pixel / u64::from(self.h), pixel % u64::from(self.h));
        if x >= u64::from(self.w) {
            return None;
        }
        self.pos += 1;
        Some(self.img.channel(x as u32, y as u32, channel) & 1)
    }

    fn bytes(&mut self, n: usize) -> Option<Vec<u8>> {
        (0..n)
            .map(|_| (0..8).try_fold(0u8, |acc, _| Some((acc << 1) | self.bit()?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `sig` + length + payload into the alpha LSBs, column-major, as the extension does.
    fn embed(w: u32, h: u32, sig: &[u8], payload: &[u8]) -> DynamicImage {
        let mut img = image::RgbaImage::from_pixel(w, h, image::Rgba([100, 150, 200, 254]));
        let mut data = sig.to_vec();
        data.extend(((payload.len() * 8) as u32).to_be_bytes());
        data.extend_from_slice(payload);
        let bits: Vec<u8> = data
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
            .collect();
        for (i, bit) in bits.iter().enumerate() {
            let (x, y) = ((i as u32) / h, (i as u32) % h);
            let p = img.get_pixel_mut(x, y);
            p.0[3] = (p.0[3] & !1) | bit;
        }
        DynamicImage::ImageRgba8(img)
    }

    #[test]
    fn round_trip_plain_and_gzip() {
        let text = b"a cat\nSteps: 20, Sampler: Euler a";
        assert_eq!(
            read(&embed(40, 30, b"stealth_pnginfo", text))
                .unwrap()
                .as_bytes(),
            text
        );
        let gz = {
            use std::io::Write;
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
            e.write_all(text).unwrap();
            e.finish().unwrap()
        };
        assert_eq!(
            read(&embed(40, 30, b"stealth_pngcomp", &gz))
                .unwrap()
                .as_bytes(),
            text
        );
    }

    #[test]
    fn the_signature_lies_inside_its_rectangle() {
        for (w, h) in [(40, 30), (300, 200), (20, 16)] {
            let mut img = embed(w, h, b"stealth_pnginfo", b"steps: 20").to_rgba8();
            // Scramble every low bit outside the rectangle: the signature is still found.
            let (rx, ry, rw, rh) = signature_rect(w, h);
            for (x, y, p) in img.enumerate_pixels_mut() {
                if !((rx..rx + rw).contains(&x) && (ry..ry + rh).contains(&y)) {
                    p.0[3] ^= ((x * 7 + y * 3) % 2) as u8;
                }
            }
            let img = DynamicImage::ImageRgba8(img);
            assert!(signature_present(&img), "{w}x{h}");
        }
        let plain =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(50, 50, image::Rgb([9, 9, 9])));
        assert!(!signature_present(&plain));
    }

    #[test]
    fn ordinary_images_have_none() {
        let img = DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            20,
            20,
            image::Rgba([1, 2, 3, 255]),
        ));
        assert_eq!(read(&img), None);
        // Too small to even hold the signature.
        let tiny = DynamicImage::ImageRgba8(image::RgbaImage::new(2, 2));
        assert_eq!(read(&tiny), None);
    }
}
