//! Crop-first decoding changes no score: the detector with the shipped model scores every image
//! exactly as it does when the whole image is decoded, on the shared corpus's photos and on
//! photos in all eight EXIF orientations, small and large.

mod common;

use std::path::Path;
use std::sync::Arc;

use image::DynamicImage;
use lg_detector::{DecodeLimits, Detector, ModelError, PixelModel};
use lg_events::ModelScore;
use lg_model::infer::NprDetector;
use listing_guard::fixtures;

/// The same model, but asking for every pixel (no regions): the detector decodes whole.
struct WholeImage(Arc<NprDetector>);

impl PixelModel for WholeImage {
    fn version(&self) -> &str {
        self.0.version()
    }
    fn score_batch(&self, images: &[&DynamicImage]) -> Result<Vec<Option<ModelScore>>, ModelError> {
        self.0.score_batch(images)
    }
}

#[test]
fn crop_first_decoding_scores_every_image_as_the_whole_decode_does() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/npr-small");
    let model = Arc::new(NprDetector::load(&dir, lg_model::device().unwrap()).unwrap());
    let limits = DecodeLimits::default();
    let crop_first = Detector::new(limits).with_model(model.clone());
    let whole = Detector::new(limits).with_model(Arc::new(WholeImage(model.clone())));

    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    for (w, h, seed) in [(1300, 1000, 1), (900, 700, 2), (230, 400, 3), (150, 100, 4)] {
        let jpeg = fixtures::jpeg(&fixtures::photo(w, h, seed));
        for orientation in 1..=8u16 {
            inputs.push((
                format!("{w}x{h} orientation {orientation}"),
                fixtures::with_jpeg_exif_orientation(&jpeg, orientation),
            ));
        }
    }
    if let Some(corpus) = common::corpus_dir() {
        let mut files: Vec<_> = std::fs::read_dir(corpus.join("c2pa-rs"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg" || e == "jpeg"))
            .collect();
        files.sort();
        for f in files {
            inputs.push((f.display().to_string(), std::fs::read(&f).unwrap()));
        }
    }

    let mut region_decoded = 0;
    for (name, bytes) in &inputs {
        let a = crop_first.analyse(bytes);
        let b = whole.analyse(bytes);
        assert_eq!(a.decoded, b.decoded, "{name}");
        assert_eq!(a.provenance, b.provenance, "{name}");
        assert_eq!(a.model, b.model, "{name}: the same score, bit for bit");
        let wanted = |w: u32, h: u32| model.regions(w, h);
        if let Ok(d) = lg_detector::decode_regions(bytes, &limits, &wanted) {
            region_decoded += usize::from(!d.whole);
            assert!(
                a.model.is_some() || d.info.width < 32 || d.info.height < 32,
                "{name}"
            );
        }
    }
    // Every generated photo is a YCbCr JPEG, so all 32 of them took the crop-first path.
    assert!(region_decoded >= 32, "{region_decoded} region decodes");
}
