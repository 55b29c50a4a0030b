//! Crop-first decoding: inside the requested rectangles a region decode is the whole decode,
//! bit for bit, over every JPEG layout the encoder can write (chroma sampling, progressive,
//! restart intervals, sizes that are not whole MCUs), and it really skips the rest.

use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
use lg_detector::{decode, decode_regions, DecodeLimits, Rect};

/// A textured pseudo-photo: gradients, edges and noise, so that every block has AC energy.
fn photo(w: u32, h: u32, seed: u32) -> Vec<u8> {
    let mut s = seed.wrapping_mul(2_654_435_761).max(1);
    let mut out = Vec::with_capacity((w * h * 3) as usize);
    for y in 0..h {
        for x in 0..w {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            let noise = (s % 24) as i32 - 12;
            let stripe = if (x / 9 + y / 13) % 2 == 0 { 40 } else { 0 };
            for c in 0..3i32 {
                let v = (x as i32 * (3 + c)) / 5 + (y as i32 * (5 - c)) / 7 + stripe + noise;
                out.push(v.rem_euclid(256) as u8);
            }
        }
    }
    out
}

fn jpeg(w: u32, h: u32, sampling: SamplingFactor, progressive: bool, restart: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let mut enc = Encoder::new(&mut out, 88);
    enc.set_sampling_factor(sampling);
    enc.set_progressive(progressive);
    if restart > 0 {
        enc.set_restart_interval(restart);
    }
    enc.encode(&photo(w, h, w ^ h), w as u16, h as u16, ColorType::Rgb)
        .expect("encode");
    out
}

/// Rectangles of every kind: the model's 5-crop grid, corners, thin strips, odd offsets.
fn rect_sets(w: u32, h: u32) -> Vec<Vec<Rect>> {
    let c = 64.min(w).min(h);
    let mut sets = vec![
        vec![(0, 0, c, c), (w - c, h - c, c, c)],
        vec![((w - c) / 2 + 3, (h - c) / 2 + 5, c - 7, c - 11)],
        vec![(w - 1, 0, 1, h), (0, h / 3, w, 1)],
        vec![(17, 9, 5, 3)],
    ];
    // A 3 x 2 grid of squares spread from edge to edge, as the model crops.
    let s = (w.min(h) / 3).max(16);
    let grid = (0..5)
        .map(|i| {
            let (col, row) = (i % 3, i / 3);
            ((w - s) * col / 2, (h - s) * row, s, s)
        })
        .collect();
    sets.push(grid);
    sets
}

fn assert_same_inside(whole: &image::RgbImage, part: &image::RgbImage, rects: &[Rect], what: &str) {
    for &(x, y, rw, rh) in rects {
        for yy in y..y + rh {
            for xx in x..x + rw {
                assert_eq!(
                    whole.get_pixel(xx, yy),
                    part.get_pixel(xx, yy),
                    "{what}: pixel ({xx}, {yy}) of rectangle {:?}",
                    (x, y, rw, rh)
                );
            }
        }
    }
}

#[test]
fn region_pixels_are_the_whole_decode_in_every_layout() {
    let limits = DecodeLimits::default();
    let samplings = [
        ("4:4:4", SamplingFactor::F_1_1),
        ("4:2:2", SamplingFactor::F_2_1),
        ("4:4:0", SamplingFactor::F_1_2),
        ("4:2:0", SamplingFactor::F_2_2),
        ("4:1:1", SamplingFactor::F_4_1),
        ("4:2:0 tall", SamplingFactor::F_2_4),
    ];
    let mut checked = 0;
    for (w, h) in [(301, 257), (640, 480), (203, 611)] {
        for (name, sampling) in samplings {
            for (progressive, restart) in [(false, 0), (false, 7), (true, 0)] {
                let bytes = jpeg(w, h, sampling, progressive, restart);
                let what = format!("{w}x{h} {name} progressive={progressive} restart={restart}");
                let (_, whole) = decode(&bytes, &limits).expect("whole decode");
                let whole = whole.to_rgb8();
                for rects in rect_sets(w, h) {
                    let d = decode_regions(&bytes, &limits, &|sw, sh| {
                        assert_eq!((sw, sh), (w, h), "asked with the shown size");
                        Some(rects.clone())
                    })
                    .expect("region decode");
                    assert!(!d.whole, "{what}: the crop-first path was taken");
                    assert_eq!((d.info.width, d.info.height), (w, h));
                    assert_same_inside(&whole, &d.image.to_rgb8(), &rects, &what);
                    checked += 1;
                }
            }
        }
    }
    assert_eq!(checked, 3 * 6 * 3 * 5);
}

#[test]
fn rows_far_from_every_rectangle_are_not_reconstructed() {
    let limits = DecodeLimits::default();
    for progressive in [false, true] {
        let bytes = jpeg(800, 1200, SamplingFactor::F_2_2, progressive, 0);
        let top = (0, 0, 224, 224);
        let d = decode_regions(&bytes, &limits, &|_, _| Some(vec![top])).unwrap();
        let img = d.image.to_rgb8();
        // Row 600 is far below the rectangle (and the stealth-signature strip): never written.
        assert!(
            (0..800).all(|x| img.get_pixel(x, 600).0 == [0, 0, 0]),
            "progressive={progressive}: row 600 was decoded"
        );
        let (_, whole) = decode(&bytes, &limits).unwrap();
        assert_ne!(whole.to_rgb8().get_pixel(400, 600).0, [0, 0, 0]);
        assert_same_inside(&whole.to_rgb8(), &img, &[top], "top crop");
    }
}

#[test]
fn rectangles_past_the_edge_are_clipped() {
    let limits = DecodeLimits::default();
    let bytes = jpeg(300, 200, SamplingFactor::F_2_2, false, 0);
    let (_, whole) = decode(&bytes, &limits).unwrap();
    let d = decode_regions(&bytes, &limits, &|_, _| {
        Some(vec![(290, 190, 100, 100), (400, 0, 10, 10), (0, 250, 5, 5)])
    })
    .unwrap();
    assert!(!d.whole);
    assert_same_inside(
        &whole.to_rgb8(),
        &d.image.to_rgb8(),
        &[(290, 190, 10, 10)],
        "clipped",
    );
}

#[test]
fn without_rectangles_or_outside_jpeg_the_image_decodes_whole() {
    let limits = DecodeLimits::default();
    let bytes = jpeg(320, 240, SamplingFactor::F_2_2, false, 0);
    let d = decode_regions(&bytes, &limits, &|_, _| None).unwrap();
    assert!(d.whole);
    let mut png = Vec::new();
    image::RgbImage::from_raw(64, 48, photo(64, 48, 3))
        .unwrap()
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    let d = decode_regions(&png, &limits, &|_, _| Some(vec![(0, 0, 8, 8)])).unwrap();
    assert!(d.whole, "PNG rows are filtered in sequence: decoded whole");
    // A grayscale JPEG is not YCbCr: whole, and still grayscale as before.
    let mut grey = Vec::new();
    Encoder::new(&mut grey, 90)
        .encode(&[128u8; 40 * 30], 40, 30, ColorType::Luma)
        .unwrap();
    let d = decode_regions(&grey, &limits, &|_, _| Some(vec![(0, 0, 8, 8)])).unwrap();
    assert!(d.whole);
    assert!(matches!(d.image, image::DynamicImage::ImageLuma8(_)));
}

#[test]
fn corrupt_jpegs_fail_as_they_do_whole() {
    let limits = DecodeLimits::default();
    let good = jpeg(256, 256, SamplingFactor::F_2_2, false, 0);
    let sos = good.windows(2).position(|w| w == [0xFF, 0xDA]).unwrap();
    // Damage the entropy-coded data in many places; whatever the whole decode says (an error,
    // or grey-filled pixels in lenient mode), the region decode says the same.
    for i in 0..40usize {
        let mut bad = good.clone();
        let at = sos + 20 + i * 97 % (good.len() - sos - 30);
        bad[at] ^= 0x5A;
        bad[at + 1] = 0xFF;
        let whole = decode(&bad, &limits);
        let rects = vec![(0, 0, 40, 40), (150, 190, 60, 66)];
        let part = decode_regions(&bad, &limits, &|_, _| Some(rects.clone()));
        match (whole, part) {
            (Ok((_, w)), Ok(p)) => {
                assert_same_inside(&w.to_rgb8(), &p.image.to_rgb8(), &rects, "damaged")
            }
            (Err(a), Err(b)) => assert_eq!(a, b, "damage at {at}"),
            (a, b) => panic!(
                "damage at {at}: whole {:?}, region {:?}",
                a.map(|_| ()),
                b.map(|_| ())
            ),
        }
    }
}
