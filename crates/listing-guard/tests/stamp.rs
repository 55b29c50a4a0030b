//! GB 45438 labelling: the implicit label written by `stamp` keeps pixels and every other
//! metadata block, is read back by the detector and by ExifTool; the visible label is big enough
//! and stays in its corner.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use lg_events::{MarkerKind, Tc260Aigc};
use lg_labeler::stamp::stamp;
use lg_labeler::visible::{self, Corner, MIN_GLYPH_FRACTION};
use listing_guard::fixtures::{self, Fixture};

fn ours() -> Tc260Aigc {
    Tc260Aigc {
        label: "3".into(),
        content_producer: String::new(),
        produce_id: String::new(),
        reserved_code1: String::new(),
        content_propagator: "taobao-test".into(),
        propagate_id: "listing-7/main".into(),
        reserved_code2: "c0ffee".into(),
    }
}

/// The metadata blocks of a file other than its XMP packet, in order, as raw bytes: JPEG marker
/// segments before the scan plus everything from the scan on; PNG chunks.
fn other_blocks(b: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    if b.starts_with(b"\x89PNG") {
        let mut i = 8;
        while i + 12 <= b.len() {
            let len = u32::from_be_bytes(b[i..i + 4].try_into().unwrap()) as usize;
            let chunk = &b[i..i + 12 + len];
            let is_xmp = &chunk[4..8] == b"iTXt" && chunk[8..].starts_with(b"XML:com.adobe.xmp\0");
            if !is_xmp {
                out.push(chunk.to_vec());
            }
            if &chunk[4..8] == b"IEND" {
                break;
            }
            i += 12 + len;
        }
    } else {
        let mut i = 2;
        while i + 4 <= b.len() {
            let marker = b[i + 1];
            let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
            if marker == 0xDA {
                out.push(b[i..].to_vec());
                break;
            }
            let seg = &b[i..i + 2 + len];
            if !(marker == 0xE1 && seg[4..].starts_with(b"http://ns.adobe.com/xap/1.0/\0")) {
                out.push(seg.to_vec());
            }
            i += 2 + len;
        }
    }
    out
}

fn pixels(b: &[u8]) -> Option<image::RgbaImage> {
    image::load_from_memory(b).ok().map(|i| i.to_rgba8())
}

/// The `TC260:AIGC` marker the detector reads from `bytes`.
fn detector_label(bytes: &[u8]) -> String {
    let p = lg_detector::provenance::read(bytes, None);
    let m: Vec<_> = p
        .markers
        .iter()
        .filter(|m| m.kind == MarkerKind::Tc260Aigc && m.evidence.starts_with("XMP"))
        .collect();
    assert_eq!(m.len(), 1, "one XMP label: {:?}", p.markers);
    m[0].evidence.clone()
}

/// Stamps `original` and checks everything the issue asks of the implicit label.
fn check_stamp(name: &str, original: &[u8]) -> Tc260Aigc {
    let out = stamp(original, &ours()).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(
        pixels(original),
        pixels(&out.bytes),
        "{name}: pixels changed"
    );
    assert!(pixels(&out.bytes).is_some(), "{name}: stamped file decodes");
    assert_eq!(
        other_blocks(original),
        other_blocks(&out.bytes),
        "{name}: a metadata block changed, moved or went missing"
    );
    let evidence = detector_label(&out.bytes);
    for want in [
        "ContentPropagator=taobao-test",
        "PropagateID=listing-7/main",
        &format!("Label={}", out.label.label),
    ] {
        assert!(evidence.contains(want), "{name}: {evidence}");
    }
    // Stamping again is a fixed point: same label, one packet.
    let again = stamp(&out.bytes, &ours()).unwrap();
    assert_eq!(again.bytes, out.bytes, "{name}: not idempotent");
    assert!(again.had_label);
    out.label
}

#[test]
fn fixtures_keep_pixels_blocks_and_the_producers_label() {
    for f in Fixture::ALL {
        if f == Fixture::BrokenJpeg {
            continue;
        }
        let label = check_stamp(f.name(), &f.bytes(3));
        if f == Fixture::XmpTc260 {
            // The producer's label stays; only the propagator's fields are ours.
            assert_eq!(label.label, "1");
            assert_eq!(label.content_producer, "001191110108MA01KP2T5U00000");
            assert_eq!(label.produce_id, "gen-2026-0001");
            assert_eq!(label.content_propagator, "taobao-test");
        } else {
            assert_eq!(label, ours(), "{}", f.name());
        }
    }
    // A truncated JPEG still has its headers: it is stamped, its (broken) scan kept as is.
    let broken = Fixture::BrokenJpeg.bytes(3);
    let out = stamp(&broken, &ours()).unwrap();
    assert_eq!(other_blocks(&broken), other_blocks(&out.bytes));
}

#[test]
fn corpus_jpegs_and_pngs_keep_pixels_and_every_block_including_c2pa() {
    let Some(dir) = common::corpus_dir() else {
        return;
    };
    let mut files = Vec::new();
    walk(&dir, &mut files);
    let mut stamped = 0;
    let mut with_c2pa = 0;
    let mut refused = 0;
    let mut with_icc = 0;
    for path in files {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !matches!(ext.to_ascii_lowercase().as_str(), "jpg" | "jpeg" | "png") {
            continue;
        }
        let original = std::fs::read(&path).unwrap();
        let name = path.display().to_string();
        if let Err(e) = stamp(&original, &ours()) {
            // Only files that are not images at all (the corpus has empty and garbage files
            // named .png) are refused, with an error rather than a panic or a bad write.
            assert!(
                pixels(&original).is_none(),
                "{name} decodes but is refused: {e}"
            );
            refused += 1;
            continue;
        }
        check_stamp(&name, &original);
        stamped += 1;
        // A colour profile travels into the visible copy.
        let has_icc = |b: &[u8]| {
            other_blocks(b)
                .iter()
                .any(|s| s.get(4..15) == Some(b"ICC_PROFILE"))
        };
        if ext != "png" && has_icc(&original) && with_icc < 3 {
            if let Ok(copy) = visible::label_copy(&original, "AI生成", Corner::BottomRight, &ours())
            {
                assert!(
                    has_icc(&copy.bytes),
                    "{name}: the copy lost its ICC profile"
                );
                with_icc += 1;
            }
        }
        // C2PA: JPEG APP11 (JUMBF) or PNG caBX, carried over byte for byte (checked above).
        if other_blocks(&original)
            .iter()
            .any(|b| b.starts_with(&[0xFF, 0xEB]) || b.get(4..8) == Some(b"caBX"))
        {
            with_c2pa += 1;
        }
    }
    assert!(stamped >= 20, "only {stamped} JPEG/PNG files in the corpus");
    assert!(with_c2pa >= 5, "only {with_c2pa} files with C2PA blocks");
    assert!(
        with_icc >= 1,
        "no corpus JPEG with an ICC profile was labelled"
    );
    eprintln!("stamped {stamped} corpus files ({with_c2pa} with C2PA), refused {refused}; {with_icc} visible copies kept ICC");
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            walk(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// ExifTool (Debian's libimage-exiftool-perl, unpacked by `scripts/exiftool.sh`) reads the
/// label `stamp` wrote, as the same JSON, from JPEG and PNG. Under `CI=true` it must be there.
#[test]
fn exiftool_reads_the_stamped_label() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("scripts/exiftool.sh");
    let exiftool = Command::new(&script)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let Some(exiftool) = exiftool else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and scripts/exiftool.sh could not provide exiftool"
        );
        eprintln!("skipped: no exiftool (scripts/exiftool.sh failed)");
        return;
    };
    let dir = std::env::temp_dir().join(format!("lg-exiftool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for f in [Fixture::CleanJpeg, Fixture::CleanPng, Fixture::XmpTc260] {
        let out = stamp(&f.bytes(5), &ours()).unwrap();
        let path = dir.join(f.name());
        std::fs::write(&path, &out.bytes).unwrap();
        let o = Command::new(&exiftool)
            .args(["-j", "-G1", "-XMP-TC260:AIGC", "-warning"])
            .arg(&path)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let obj = &v[0];
        assert!(obj.get("ExifTool:Warning").is_none(), "{}: {obj}", f.name());
        let text = obj["XMP-TC260:Aigc"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: exiftool sees no TC260:AIGC: {obj}", f.name()));
        let read: Tc260Aigc = serde_json::from_str(text).unwrap();
        assert_eq!(read, out.label, "{}", f.name());
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// A flat image of one colour, PNG-encoded.
fn flat_png(w: u32, h: u32, rgb: [u8; 3]) -> Vec<u8> {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
    let mut out = Vec::new();
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

/// Bounding box `(x0, y0, x1, y1)` (inclusive) of the pixels where `pred` holds.
fn bbox(img: &image::RgbaImage, pred: impl Fn(u32, u32) -> bool) -> Option<(u32, u32, u32, u32)> {
    let mut b: Option<(u32, u32, u32, u32)> = None;
    for (x, y, _) in img.enumerate_pixels() {
        if pred(x, y) {
            b = Some(match b {
                None => (x, y, x, y),
                Some((a, c, d, e)) => (a.min(x), c.min(y), d.max(x), e.max(y)),
            });
        }
    }
    b
}

/// On light, dark and mid-grey images, in landscape and portrait: the label changes only a
/// corner, the text in it is at least 5% of the shortest side tall, and the text stands out
/// from its plate.
#[test]
fn the_visible_label_is_big_enough_and_stays_in_its_corner() {
    for (w, h, rgb) in [
        (1200, 800, [250, 250, 250]),
        (800, 1200, [8, 8, 8]),
        (1000, 1000, [128, 128, 128]),
        (640, 480, [200, 40, 40]),
    ] {
        let original = flat_png(w, h, rgb);
        let copy = visible::label_copy(
            &original,
            "AI生成 AI-generated",
            Corner::BottomRight,
            &ours(),
        )
        .unwrap();
        let before = pixels(&original).unwrap();
        let after = pixels(&copy.bytes).unwrap();
        assert_eq!(after.dimensions(), (w, h));
        let changed = bbox(&after, |x, y| {
            after.get_pixel(x, y) != before.get_pixel(x, y)
        })
        .expect("the label changed something");
        let (x0, y0, x1, y1) = changed;
        // Only a band at the bottom, against the right edge, changed.
        assert!(y0 > h * 3 / 4, "{w}x{h}: changed {changed:?}");
        assert!(
            x1 >= w * 9 / 10 && y1 >= h * 9 / 10,
            "{w}x{h}: changed {changed:?}"
        );
        assert!(x0 > w / 10, "{w}x{h}: changed {changed:?}");
        // Text pixels: those far from the plate's own colour (the commonest in the region).
        let mut counts = std::collections::HashMap::new();
        for y in y0..=y1 {
            for x in x0..=x1 {
                *counts.entry(after.get_pixel(x, y).0).or_insert(0u32) += 1;
            }
        }
        let plate = counts.into_iter().max_by_key(|(_, n)| *n).unwrap().0;
        let luma = |p: [u8; 4]| 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32;
        let text = bbox(&after, |x, y| {
            x >= x0
                && x <= x1
                && y >= y0
                && y <= y1
                && (luma(after.get_pixel(x, y).0) - luma(plate)).abs() > 60.0
        })
        .expect("text pixels");
        let text_h = (text.3 - text.1 + 1) as f32;
        let short = w.min(h) as f32;
        assert!(
            text_h >= MIN_GLYPH_FRACTION * short,
            "{w}x{h}: text {text_h}px < 5% of {short}"
        );
        // Legible on light and dark: white text on a plate darker than a light background.
        assert!(luma(plate) < 110.0, "plate {plate:?}");
        // The copy carries the implicit label too.
        assert!(detector_label(&copy.bytes).contains("PropagateID=listing-7/main"));
    }
}

/// The rendered sample: a JPEG photo, labelled through the CLI. Its size is the original's, the
/// bottom-right corner differs clearly and the rest only by re-encoding noise.
#[test]
fn stamp_command_writes_the_labelled_files() {
    let dir = std::env::temp_dir().join(format!("lg-stamp-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let input = dir.join("photo.jpg");
    let photo = fixtures::photo(1280, 960, 11);
    let mut jpeg = Vec::new();
    image::DynamicImage::ImageRgb8(photo)
        .write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
    std::fs::write(&input, &jpeg).unwrap();
    let out = dir.join("out/photo.jpg");
    let o = Command::new(env!("CARGO_BIN_EXE_listing-guard"))
        .args(["stamp"])
        .arg(&input)
        .arg(&out)
        .args([
            "--propagator",
            "xianyu",
            "--propagate-id",
            "L9/main",
            "--visible",
            "--locale",
            "zh",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(summary["label"]["ContentPropagator"], "xianyu");
    assert_eq!(summary["visible"]["text"], "AI生成");
    let stamped = std::fs::read(&out).unwrap();
    assert_eq!(pixels(&stamped), pixels(&jpeg));
    let vis_path = dir.join("out/photo.visible.jpg");
    assert_eq!(summary["visible"]["output"], vis_path.display().to_string());
    let vis = pixels(&std::fs::read(&vis_path).unwrap()).unwrap();
    let orig = pixels(&jpeg).unwrap();
    assert_eq!(vis.dimensions(), orig.dimensions());
    let (w, h) = orig.dimensions();
    let mean_diff = |x0: u32, y0: u32, x1: u32, y1: u32| {
        let mut s = 0f64;
        let mut n = 0f64;
        for y in y0..y1 {
            for x in x0..x1 {
                let (a, b) = (orig.get_pixel(x, y).0, vis.get_pixel(x, y).0);
                s += (0..3)
                    .map(|c| (a[c] as f64 - b[c] as f64).abs())
                    .sum::<f64>()
                    / 3.0;
                n += 1.0;
            }
        }
        s / n
    };
    let corner = mean_diff(w - w / 6, h - h / 12, w, h);
    let rest = mean_diff(0, 0, w, h * 3 / 4);
    assert!(corner > 40.0, "corner barely changed: {corner}");
    assert!(rest < 3.0, "the rest changed: {rest}");
    // A bad locale is refused with a clear error.
    let o = Command::new(env!("CARGO_BIN_EXE_listing-guard"))
        .args(["stamp"])
        .arg(&input)
        .arg(dir.join("x.jpg"))
        .args(["--propagator", "x", "--propagate-id", "y", "--locale", "fr"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("locale \"fr\""));
    std::fs::remove_dir_all(&dir).ok();
}
