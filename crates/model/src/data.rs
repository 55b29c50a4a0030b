//! Datasets on disk and the augmentation pipeline.
//!
//! A dataset is a folder with `real/` and `ai/` subfolders (any depth). Files under
//! `real/<source>/...` and `ai/<family>/...` are grouped by that first folder: per-generator
//! reports and the leave-source-out cross-validation hold out whole groups.
//!
//! Real and AI images go through the **same** augmentation, and every training crop is
//! re-encoded as JPEG, so the container format and its compression history cannot separate the
//! classes (a known shortcut of published detectors trained on PNG fakes and JPEG photos).

use std::io::Cursor;
use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};
use rand::rngs::StdRng;
use rand::Rng;

/// One labelled file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// The file.
    pub path: PathBuf,
    /// `true` for AI-generated.
    pub ai: bool,
    /// The first folder under `real/` or `ai/`: the source or generator family (`real` or
    /// `ai` when files sit directly in it).
    pub group: String,
}

const EXTENSIONS: [&str; 5] = ["jpg", "jpeg", "png", "webp", "gif"];

/// Lists `dir/real/**` and `dir/ai/**` image files, sorted for reproducibility.
pub fn list(dir: &Path) -> std::io::Result<Vec<Sample>> {
    let mut out = Vec::new();
    for (sub, ai) in [("real", false), ("ai", true)] {
        let root = dir.join(sub);
        if !root.is_dir() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "{} has no {sub}/ folder (expected real/ and ai/)",
                    dir.display()
                ),
            ));
        }
        let mut files = Vec::new();
        walk(&root, &mut files)?;
        files.sort();
        for path in files {
            let rel = path.strip_prefix(&root).unwrap_or(&path);
            let group = match rel.components().count() {
                0 | 1 => sub.to_owned(),
                _ => rel
                    .components()
                    .next()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .unwrap_or_default(),
            };
            out.push(Sample { path, ai, group });
        }
    }
    Ok(out)
}

/// Generator families of groups, for leave-family-out folds: `group[/subfolder] → family`
/// (`models/families.tsv`). A file goes to the family of its longest matching key; a group
/// with no key is its own family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Families(std::collections::BTreeMap<String, String>);

impl Families {
    /// Parses `key<TAB>family` lines (`#` comments and blank lines skipped).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut map = std::collections::BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end();
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, family) = line
                .split_once('\t')
                .filter(|(k, f)| !k.is_empty() && !f.trim().is_empty())
                .ok_or_else(|| {
                    format!("line {}: expected `group[/subfolder]<TAB>family`", n + 1)
                })?;
            if map
                .insert(key.to_owned(), family.trim().to_owned())
                .is_some()
            {
                return Err(format!("line {}: {key} is listed twice", n + 1));
            }
        }
        Ok(Self(map))
    }

    /// Replaces each sample's group by its family (`dir` is the folder `samples` were listed
    /// from). Refuses a key that matches no file (a typo would silently keep two folders of
    /// one family apart).
    pub fn apply(&self, dir: &Path, samples: &mut [Sample]) -> Result<(), String> {
        let mut used = std::collections::BTreeSet::new();
        for s in samples.iter_mut() {
            let class = if s.ai { "ai" } else { "real" };
            let rel = s.path.strip_prefix(dir.join(class)).unwrap_or(&s.path);
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let sub = (parts.len() >= 3).then(|| format!("{}/{}", parts[0], parts[1]));
            let key = sub
                .filter(|k| self.0.contains_key(k))
                .or_else(|| self.0.contains_key(&s.group).then(|| s.group.clone()));
            if let Some(key) = key {
                s.group.clone_from(&self.0[&key]);
                used.insert(key);
            }
        }
        if let Some(k) = self.0.keys().find(|k| !used.contains(*k)) {
            return Err(format!("family key {k} matches no file"));
        }
        // Folds are dealt per class: a group must hold one class only.
        let mut class_of = std::collections::BTreeMap::new();
        for s in samples.iter() {
            if *class_of.entry(s.group.as_str()).or_insert(s.ai) != s.ai {
                return Err(format!("family {} holds both real and AI files", s.group));
            }
        }
        Ok(())
    }
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let p = entry?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        {
            out.push(p);
        }
    }
    Ok(())
}

/// Deterministic split: a sample is in validation when a hash of its path and the seed falls in
/// the first `fraction` of the range, so adding files does not reshuffle the others. See
/// [`split`] for a whole dataset, which keeps B-Free pairs together.
pub fn is_validation(sample: &Sample, fraction: f64, seed: u64) -> bool {
    let h = lg_events::sha256_hex(format!("{seed}:{}", sample.path.display()).as_bytes());
    let v = u64::from_str_radix(&h[..12], 16).unwrap_or(0) as f64 / (1u64 << 48) as f64;
    v < fraction
}

/// Group of the B-Free reconstructions that `make-pairs` writes (`ai/bfree/<folder>-<stem>.png`).
pub const BFREE_GROUP: &str = "bfree";

/// The name a reconstruction of `real` gets under `ai/bfree/`: `<folder>-<stem>.png`.
pub fn pair_name(real: &Path) -> String {
    let name = |p: Option<&std::ffi::OsStr>| p.map(|s| s.to_string_lossy().into_owned());
    let folder = name(real.parent().and_then(Path::file_name)).unwrap_or_default();
    format!(
        "{folder}-{}.png",
        name(real.file_stem()).unwrap_or_default()
    )
}

/// `(validation, training)` by [`is_validation`], except that a B-Free reconstruction follows
/// the real photo it was made from, so that a pair never straddles the split (the other files
/// split exactly as without pairs).
pub fn split(samples: &[Sample], fraction: f64, seed: u64) -> (Vec<&Sample>, Vec<&Sample>) {
    let reals: std::collections::HashMap<String, &Sample> = samples
        .iter()
        .filter(|s| !s.ai)
        .map(|s| (pair_name(&s.path), s))
        .collect();
    samples.iter().partition(|s| {
        let pair = (s.ai && s.group == BFREE_GROUP)
            .then(|| s.path.file_name())
            .flatten()
            .and_then(|f| reals.get(f.to_string_lossy().as_ref()));
        is_validation(pair.copied().unwrap_or(s), fraction, seed)
    })
}

/// Re-encodes as JPEG at `quality` and decodes again.
pub fn jpeg_roundtrip(img: &RgbImage, quality: u8) -> RgbImage {
    let mut buf = Vec::new();
    let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut buf, quality);
    if img.write_with_encoder(enc).is_err() {
        return img.clone();
    }
    image::load_from_memory_with_format(&buf, image::ImageFormat::Jpeg)
        .map(|d| d.to_rgb8())
        .unwrap_or_else(|_| img.clone())
}

/// Downscales by `factor` (0 < factor ≤ 1) with a triangle filter.
pub fn downscale(img: &RgbImage, factor: f64) -> RgbImage {
    let w = ((f64::from(img.width()) * factor).round() as u32).max(1);
    let h = ((f64::from(img.height()) * factor).round() as u32).max(1);
    image::imageops::resize(img, w, h, image::imageops::FilterType::Triangle)
}

/// A random crop of `size` (or the whole image, trimmed even, when smaller).
pub fn random_crop(img: &RgbImage, size: u32, rng: &mut StdRng) -> RgbImage {
    let (w, h) = img.dimensions();
    let (cw, ch) = (w.min(size) & !1, h.min(size) & !1);
    let x = rng.gen_range(0..=w - cw);
    let y = rng.gen_range(0..=h - ch);
    image::imageops::crop_imm(img, x, y, cw, ch).to_image()
}

/// [`augment`] in words, for model cards.
pub const AUGMENTATION: &str = "same for both classes: random region; p=0.3 resize 0.5-1x; p=0.1 Gaussian blur sigma 0.1-1.0; p=0.3 colour jitter (brightness, contrast, saturation +-10%); JPEG re-encode q60-100 p=0.9; random crop; p=0.5 horizontal flip";

/// The probabilities of the training augmentation's steps ([`augment_with`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Augmentation {
    /// Probability of a downscale by 0.5–1×.
    pub resize: f64,
    /// Probability of a Gaussian blur (σ 0.1–1.0).
    pub blur: f64,
    /// Probability of a colour jitter.
    pub jitter: f64,
    /// Probability of a JPEG re-encode at quality 60–100.
    pub jpeg: f64,
}

impl Default for Augmentation {
    /// The network's recipe ([`AUGMENTATION`]).
    fn default() -> Self {
        Self {
            resize: 0.3,
            blur: 0.1,
            jitter: 0.3,
            jpeg: 0.9,
        }
    }
}

impl Augmentation {
    /// The recipe as written to cards and reports.
    pub fn describe(&self) -> String {
        format!(
            "same for both classes: random region; p={} resize 0.5-1x; p={} Gaussian blur sigma 0.1-1.0; p={} colour jitter (brightness, contrast, saturation +-10%); JPEG re-encode q60-100 p={}; random crop; p=0.5 horizontal flip",
            self.resize, self.blur, self.jitter, self.jpeg
        )
    }
}

/// The training augmentation, identical for both classes: a random region, then with some
/// probability a resize (0.5–1×), a Gaussian blur (σ 0.1–1.0) and a colour jitter, a JPEG
/// re-encode (quality 60–100, nine times in ten), a random crop of `size` and a horizontal
/// flip (see [`AUGMENTATION`]). Resizing and blurring weaken up-sampling traces, so they stay
/// occasional: most crops keep the pixels' own statistics.
pub fn augment(img: &RgbImage, size: u32, rng: &mut StdRng) -> RgbImage {
    augment_with(img, size, &Augmentation::default(), rng)
}

/// [`augment`] with the steps' probabilities of `p`.
pub fn augment_with(img: &RgbImage, size: u32, p: &Augmentation, rng: &mut StdRng) -> RgbImage {
    // Work on a region twice the crop (enough for a 0.5× downscale) to keep this cheap.
    let region = random_crop(img, size * 2, rng);
    let mut x = region;
    if rng.gen_bool(p.resize) {
        let f = rng.gen_range(0.5..1.0);
        let scaled = downscale(&x, f);
        if scaled.width() >= size.min(x.width()) / 2 && scaled.height() >= 32 {
            x = scaled;
        }
    }
    if rng.gen_bool(p.blur) {
        let sigma = rng.gen_range(0.1f32..1.0);
        x = image::imageops::blur(&x, sigma);
    }
    if rng.gen_bool(p.jitter) {
        colour_jitter(&mut x, rng);
    }
    if rng.gen_bool(p.jpeg) {
        x = jpeg_roundtrip(&x, rng.gen_range(60..=100));
    }
    let mut out = random_crop(&x, size, rng);
    if rng.gen_bool(0.5) {
        image::imageops::flip_horizontal_in_place(&mut out);
    }
    out
}

/// Brightness, contrast and saturation each scaled by up to ±10%.
fn colour_jitter(img: &mut RgbImage, rng: &mut StdRng) {
    let b: f32 = rng.gen_range(0.9..1.1);
    let c: f32 = rng.gen_range(0.9..1.1);
    let s: f32 = rng.gen_range(0.9..1.1);
    for p in img.pixels_mut() {
        let [r, g, bl] = p.0.map(f32::from);
        let grey = 0.299 * r + 0.587 * g + 0.114 * bl;
        p.0 = [r, g, bl].map(|v| {
            let v = grey + (v - grey) * s;
            let v = 128.0 + (v * b - 128.0) * c;
            v.round().clamp(0.0, 255.0) as u8
        });
    }
}

/// The robustness perturbation of the evaluation: JPEG quality 75 after a 0.5× downscale.
pub fn degrade(img: &DynamicImage) -> DynamicImage {
    DynamicImage::ImageRgb8(degrade_rgb(&img.to_rgb8()))
}

/// [`degrade`] of RGB pixels.
pub fn degrade_rgb(img: &RgbImage) -> RgbImage {
    jpeg_roundtrip(&downscale(img, 0.5), 75)
}

/// Decodes a file, dropping its metadata (only pixels reach the model).
pub fn load_rgb(path: &Path) -> Result<RgbImage, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let img = image::ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| format!("{}: {e}", path.display()))?
        .decode()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(img.to_rgb8())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_regroup_by_the_longest_key_and_refuse_unused_keys() {
        let dir = Path::new("/d");
        let s = |p: &str, ai: bool, g: &str| Sample {
            path: dir.join(p),
            ai,
            group: g.to_owned(),
        };
        let mut samples = vec![
            s("ai/mix/sdxl/a.png", true, "mix"),
            s("ai/mix/other/b.png", true, "mix"),
            s("ai/mix/c.png", true, "mix"),
            s("ai/sd15/d.png", true, "sd15"),
            s("ai/gan/e.png", true, "gan"),
            s("real/cam/f.jpg", false, "cam"),
        ];
        let f = Families::parse("# comment\n\nmix\tsd1\nmix/sdxl\tsdxl\nsd15\tsd1\n").unwrap();
        f.apply(dir, &mut samples).unwrap();
        let groups: Vec<&str> = samples.iter().map(|s| s.group.as_str()).collect();
        assert_eq!(groups, ["sdxl", "sd1", "sd1", "sd1", "gan", "cam"]);
        let typo = Families::parse("mix/sdx1\tsdxl\n").unwrap();
        assert!(typo
            .apply(dir, &mut samples.clone())
            .unwrap_err()
            .contains("mix/sdx1"));
        let mixed = Families::parse("cam\tsd1\n").unwrap();
        assert!(mixed
            .apply(dir, &mut samples.clone())
            .unwrap_err()
            .contains("both real and AI"));
        assert!(Families::parse("no tab here\n").is_err());
        assert!(Families::parse("a\tb\na\tc\n").is_err());
    }
    use rand::SeedableRng;

    #[test]
    fn augmentation_is_seeded_and_sized() {
        let img = RgbImage::from_fn(300, 200, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 9])
        });
        let a = augment(&img, 64, &mut StdRng::seed_from_u64(1));
        let b = augment(&img, 64, &mut StdRng::seed_from_u64(1));
        assert_eq!(a, b, "same seed, same crop");
        assert_eq!(a.dimensions(), (64, 64));
        let small = RgbImage::new(41, 50);
        assert_eq!(
            random_crop(&small, 64, &mut StdRng::seed_from_u64(2)).dimensions(),
            (40, 50)
        );
    }

    #[test]
    fn listing_groups_by_generator_and_split_is_stable() {
        let dir = std::env::temp_dir().join(format!("lg-data-{}", std::process::id()));
        for p in [
            "real/a.jpg",
            "real/x/b.png",
            "ai/sdxl/c.png",
            "ai/d.png",
            "ai/sdxl/notes.txt",
        ] {
            let f = dir.join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, b"x").unwrap();
        }
        let s = list(&dir).unwrap();
        let groups: Vec<(&str, bool)> = s.iter().map(|s| (s.group.as_str(), s.ai)).collect();
        assert_eq!(
            groups,
            vec![("real", false), ("x", false), ("ai", true), ("sdxl", true)]
        );
        let v1: Vec<bool> = s.iter().map(|x| is_validation(x, 0.5, 7)).collect();
        let v2: Vec<bool> = s.iter().map(|x| is_validation(x, 0.5, 7)).collect();
        assert_eq!(v1, v2);
        // The split hashes the whole path (this directory's name varies per run), so one seed
        // can put all four files on one side (1 in 8); over 16 seeds both sides must appear.
        let both = (0..16u64).any(|seed| {
            let v: Vec<bool> = s.iter().map(|x| is_validation(x, 0.5, seed)).collect();
            v.contains(&true) && v.contains(&false)
        });
        assert!(both, "some seed uses both sides");
        assert!(list(&dir.join("real")).is_err(), "needs real/ and ai/");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_photo_and_its_reconstruction_share_a_side_of_the_split() {
        let sample = |path: &str, ai: bool, group: &str| Sample {
            path: PathBuf::from(path),
            ai,
            group: group.to_owned(),
        };
        let real = sample("/d/real/skimage/coffee.png", false, "real");
        assert_eq!(pair_name(&real.path), "skimage-coffee.png");
        let fake = sample("/d/ai/bfree/skimage-coffee.png", true, BFREE_GROUP);
        let other = sample("/d/ai/sdxl/skimage-coffee.png", true, "sdxl");
        let all = vec![real.clone(), fake.clone(), other.clone()];
        let mut differs = false;
        for seed in 0..64 {
            let (val, _) = split(&all, 0.3, seed);
            assert_eq!(val.contains(&&real), val.contains(&&fake), "seed {seed}");
            differs |= val.contains(&&real) != val.contains(&&other);
            // Files outside pairs split as they always did.
            assert_eq!(val.contains(&&other), is_validation(&other, 0.3, seed));
            assert_eq!(val.contains(&&real), is_validation(&real, 0.3, seed));
        }
        assert!(differs, "unpaired files are split independently");
    }

    #[test]
    fn the_default_augmentation_is_the_documented_one() {
        assert_eq!(Augmentation::default().describe(), AUGMENTATION);
        let img = RgbImage::from_fn(300, 200, |x, y| image::Rgb([x as u8, y as u8, 7]));
        let rng = || StdRng::seed_from_u64(5);
        assert_eq!(
            augment(&img, 64, &mut rng()),
            augment_with(&img, 64, &Augmentation::default(), &mut rng())
        );
    }
}
