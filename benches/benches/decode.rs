//! `make bench-decode`: JPEG decoding whole (as the `image` crate does it) against crop-first
//! (`lg_detector::decode_regions` with the shipped model's crop grid, what the detector does),
//! side by side, alternating, on two sets: the end-to-end bench's synthetic photos (800–1600 px,
//! quality 80–95, noisy, so entropy decoding weighs more) and the shared corpus's YCbCr JPEGs
//! (real photos, 1024–3000 px). Prints ms/image for each and the ratio whole / crop-first of
//! the medians of five rounds, and checks on every image that the crops' pixels are the same.

use std::path::PathBuf;
use std::time::Instant;

use lg_detector::{decode, decode_regions, DecodeLimits, Rect};
use lg_model::card::ModelCard;
use lg_model::infer::crop_boxes;
use listing_guard::fixtures;
use rand::{Rng, SeedableRng};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let (card, _) = ModelCard::load(&root.join("models/npr-small")).expect("model card");
    let (size, n) = (card.input.crop_size, card.input.crops_per_image);
    let crops = |w: u32, h: u32| -> Option<Vec<Rect>> { Some(crop_boxes(w, h, size, n)) };
    let limits = DecodeLimits::default();

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    let synthetic: Vec<Vec<u8>> = (0..24)
        .map(|i| {
            let (w, h) = (rng.gen_range(800..=1600), rng.gen_range(800..=1600));
            let mut b = Vec::new();
            image::codecs::jpeg::JpegEncoder::new_with_quality(&mut b, rng.gen_range(80..=95))
                .encode_image(&fixtures::photo(w, h, i))
                .unwrap();
            b
        })
        .collect();
    let mut sets = vec![("synthetic (e2e bench mix)", synthetic)];
    if let Some(corpus) = fixtures::shared_corpus() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(corpus.join("c2pa-rs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        files.sort();
        let photos = files
            .iter()
            .map(|f| std::fs::read(f).unwrap())
            // Photos the crop-first path takes (YCbCr), at least one crop wide.
            .filter(|b| {
                decode_regions(b, &limits, &crops)
                    .is_ok_and(|d| !d.whole && d.info.width.min(d.info.height) >= size)
            })
            .collect();
        sets.push(("shared corpus photos", photos));
    }

    println!("JPEG decode, ms/image on one core (median of 5 alternating rounds)");
    println!(
        "{:<28} {:>7} {:>10} {:>12} {:>8}",
        "set", "images", "whole", "crop-first", "ratio"
    );
    for (name, images) in &sets {
        // The same pixels where the model reads them, on every image.
        for b in images {
            let (info, mut whole) = decode(b, &limits).unwrap();
            let mut part = decode_regions(b, &limits, &crops).unwrap().image;
            whole.apply_orientation(info.orientation);
            part.apply_orientation(info.orientation);
            let (whole, part) = (whole.to_rgb8(), part.to_rgb8());
            for (x, y, w, h) in crop_boxes(info.width, info.height, size, n) {
                for yy in y..y + h {
                    for xx in x..x + w {
                        assert_eq!(whole.get_pixel(xx, yy), part.get_pixel(xx, yy));
                    }
                }
            }
        }
        let (mut whole, mut crop_first) = (Vec::new(), Vec::new());
        for _ in 0..5 {
            let t = Instant::now();
            for b in images {
                std::hint::black_box(image::load_from_memory(b).unwrap());
            }
            whole.push(t.elapsed().as_secs_f64() * 1e3 / images.len() as f64);
            let t = Instant::now();
            for b in images {
                std::hint::black_box(decode_regions(b, &limits, &crops).unwrap());
            }
            crop_first.push(t.elapsed().as_secs_f64() * 1e3 / images.len() as f64);
        }
        let (w, c) = (median(whole), median(crop_first));
        println!(
            "{name:<28} {:>7} {w:>10.2} {c:>12.2} {:>8.2}",
            images.len(),
            w / c
        );
    }
}
