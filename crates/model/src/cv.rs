//! Leave-source-out cross-validation: the only figures this project reports as a model's
//! quality.
//!
//! Every file belongs to a group: its source (a real photo collection) or its generator family
//! (the first folder under `real/` or `ai/`). Whole groups are assigned to folds, so a held-out
//! file's group was never seen in training; a family split over two folders is two groups. Each fold trains on the other folds and
//! scores its own files as the pipeline does (the decoded file, full-resolution crops, mean
//! crop logit), plus two variants:
//!
//! - **confound-matched**: every image centre-cropped to one size and JPEG-encoded at one
//!   quality, so neither container, compression history nor size can tell the classes apart;
//! - **degraded**: a 0.5× downscale and JPEG quality 75 (uploads are often re-compressed).
//!
//! The out-of-fold logits are pooled; the calibration (Platt) and the operating points (the
//! probability thresholds at chosen false-positive rates on real photos) are fitted on them,
//! never on a training fit. [`CvReport`] holds the pooled figures, each held-out group's, and
//! the e-commerce-like real sources on their own.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use image::{DynamicImage, RgbImage};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::calibrate::Platt;
use crate::data::{degrade_rgb, jpeg_roundtrip, Sample};
use crate::infer::NprDetector;
use crate::metrics;
use crate::train::{self, TrainConfig, TrainError, TrainImage};

/// Cross-validation settings.
#[derive(Debug, Clone)]
pub struct CvConfig {
    /// Folds; groups are dealt to them (real and AI groups separately, so every fold holds
    /// both). At most the number of groups of the smaller class.
    pub folds: usize,
    /// Seed of the deal (training uses its own config's seed).
    pub seed: u64,
    /// The recipe each fold trains with.
    pub train: TrainConfig,
    /// Side of the centre crop of the confound-matched variant.
    pub confound_crop: u32,
    /// JPEG quality of the confound-matched variant.
    pub confound_quality: u8,
    /// The false-positive rates whose thresholds become operating points.
    pub fprs: Vec<f64>,
    /// Real groups that are e-commerce-like (garments, people wearing them, products),
    /// reported on their own.
    pub ecommerce_groups: Vec<String>,
    /// Reuse a fold's model already in `work/fold-<k>/` when its card names the same fold and
    /// recipe (an interrupted run resumes; only the scoring is redone).
    pub reuse_folds: bool,
    /// The saturation of the fitted calibration ([`Platt::saturation`]).
    pub saturation: Option<f64>,
}

impl Default for CvConfig {
    fn default() -> Self {
        Self {
            folds: 5,
            seed: 7,
            train: TrainConfig::default(),
            confound_crop: 256,
            confound_quality: 85,
            fprs: OPERATING_FPRS.to_vec(),
            ecommerce_groups: Vec::new(),
            reuse_folds: false,
            saturation: None,
        }
    }
}

/// The false-positive rates on real photos at which a model card records thresholds.
pub const OPERATING_FPRS: [f64; 4] = [0.001, 0.005, 0.01, 0.05];

/// One held-out file's scores: raw mean crop logits (before calibration).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OofScore {
    /// The file.
    pub path: PathBuf,
    /// Its source or family.
    pub group: String,
    /// Ground truth.
    pub ai: bool,
    /// The fold that held it out.
    pub fold: usize,
    /// As uploaded.
    pub clean: f64,
    /// Centre-cropped and JPEG-encoded at one quality.
    pub confound: f64,
    /// Downscaled 0.5× and JPEG quality 75.
    pub degraded: f64,
}

impl OofScore {
    fn new(sample: &Sample, fold: usize, [clean, confound, degraded]: [f64; 3]) -> Self {
        Self {
            path: sample.path.clone(),
            group: sample.group.clone(),
            ai: sample.ai,
            fold,
            clean,
            confound,
            degraded,
        }
    }
}

/// Errors of a cross-validation.
#[derive(Debug, thiserror::Error)]
pub enum CvError {
    /// Fewer groups than folds in a class.
    #[error("{class} has {groups} groups; {folds} folds need at least that many in each class")]
    TooFewGroups {
        /// `real` or `ai`.
        class: &'static str,
        /// Its groups.
        groups: usize,
        /// Folds asked for.
        folds: usize,
    },
    /// Training a fold failed.
    #[error("fold {fold}: {source}")]
    Train {
        /// The fold.
        fold: usize,
        /// Why.
        source: TrainError,
    },
    /// Scoring failed.
    #[error("scoring: {0}")]
    Score(#[from] candle_core::Error),
    /// Reading back a fold's model failed.
    #[error(transparent)]
    Load(#[from] crate::card::ModelLoadError),
}

/// Deals whole groups to `folds` folds: the real and the AI groups each shuffled with `seed`,
/// then sorted by size (largest first, a stable sort keeps the shuffle among equals) and each
/// given to the fold with the fewest files of that class so far.
pub fn assign_folds(
    samples: &[Sample],
    folds: usize,
    seed: u64,
) -> Result<BTreeMap<String, usize>, CvError> {
    let mut out = BTreeMap::new();
    for (ai, class) in [(false, "real"), (true, "ai")] {
        let mut sizes: BTreeMap<&str, usize> = BTreeMap::new();
        for s in samples.iter().filter(|s| s.ai == ai) {
            *sizes.entry(s.group.as_str()).or_default() += 1;
        }
        if sizes.len() < folds {
            return Err(CvError::TooFewGroups {
                class,
                groups: sizes.len(),
                folds,
            });
        }
        let mut groups: Vec<(&str, usize)> = sizes.into_iter().collect();
        groups.shuffle(&mut StdRng::seed_from_u64(seed ^ u64::from(ai)));
        groups.sort_by_key(|&(_, n)| std::cmp::Reverse(n));
        let mut load = vec![0usize; folds];
        for (g, n) in groups {
            let f = (0..folds).min_by_key(|&f| (load[f], f)).expect("folds > 0");
            load[f] += n;
            out.insert(g.to_owned(), f);
        }
    }
    Ok(out)
}

/// A decoded file.
pub struct Loaded<'a> {
    /// The listing entry.
    pub sample: &'a Sample,
    /// Its pixels.
    pub image: RgbImage,
}

/// Runs the folds: trains each (its model written to `work/fold-<k>/`), scores its held-out
/// files. `progress(fold, step, loss)` reports training.
pub fn run(
    files: &[Loaded<'_>],
    cfg: &CvConfig,
    device: &candle_core::Device,
    work: &Path,
    progress: &mut dyn FnMut(usize, usize, f32),
) -> Result<Vec<OofScore>, CvError> {
    let samples: Vec<Sample> = files.iter().map(|f| f.sample.clone()).collect();
    let fold_of = assign_folds(&samples, cfg.folds, cfg.seed)?;
    let mut out = Vec::with_capacity(files.len());
    for fold in 0..cfg.folds {
        let train_set: Vec<TrainImage<'_>> = files
            .iter()
            .filter(|f| fold_of[&f.sample.group] != fold)
            .map(|f| TrainImage {
                image: &f.image,
                ai: f.sample.ai,
                group: &f.sample.group,
            })
            .collect();
        let dir = fold_dir(work, fold);
        let summary = BTreeMap::from([
            (
                "cross_validation_fold".to_owned(),
                serde_json::json!({ "fold": fold, "of": cfg.folds }),
            ),
            ("recipe".to_owned(), cfg.train.recipe()),
        ]);
        let done = cfg.reuse_folds
            && crate::card::ModelCard::load(&dir).is_ok_and(|(card, _)| {
                summary.iter().all(|(k, v)| card.training.get(k) == Some(v))
            });
        if !done {
            let trained = train::train(&train_set, &cfg.train, device, &mut |step, loss| {
                progress(fold, step, loss)
            })
            .map_err(|source| CvError::Train { fold, source })?;
            train::save(&trained, &cfg.train, summary, &dir)
                .map_err(|source| CvError::Train { fold, source })?;
        }
        // Scored in f32, the reference arithmetic.
        let det = NprDetector::load_with(&dir, device.clone(), crate::cpu::Precision::F32)?;
        for f in files.iter().filter(|f| fold_of[&f.sample.group] == fold) {
            let Some(scores) = score_variants(&det, &f.image, cfg)? else {
                continue;
            };
            out.push(OofScore::new(f.sample, fold, scores));
        }
    }
    Ok(out)
}

/// The feature model's cross-validation: each file's training rows (`train_rows[i]` for
/// `files[i]`, [`crate::features::training_rows_all`]) and its three variants' scoring rows are
/// extracted once, then each fold fits a logistic regression
/// on the other folds' rows and scores its own files. Returns the out-of-fold scores and each
/// fold's model.
pub fn run_features(
    files: &[Loaded<'_>],
    train_rows: &[Vec<Vec<f32>>],
    fold_of: &BTreeMap<String, usize>,
    recipe: &crate::features::FeatureRecipe,
    cfg: &CvConfig,
) -> Result<(Vec<OofScore>, Vec<crate::features::Logistic>), crate::features::FitError> {
    use crate::features::{fit_images, mean_logit};
    use rayon::prelude::*;
    let images: Vec<&RgbImage> = files.iter().map(|f| &f.image).collect();
    let variant_rows: Vec<[Vec<Vec<f32>>; 3]> = images
        .par_iter()
        .map(|img| {
            let [confound, degraded] = altered(img, cfg);
            [*img, &confound, &degraded].map(|v| recipe.scoring_rows(v))
        })
        .collect();
    let mut out = Vec::with_capacity(files.len());
    let mut models = Vec::with_capacity(cfg.folds);
    for fold in 0..cfg.folds {
        let (rows, labels): (Vec<&[Vec<f32>]>, Vec<bool>) = files
            .iter()
            .zip(train_rows)
            .filter(|(f, _)| fold_of[&f.sample.group] != fold)
            .map(|(f, r)| (r.as_slice(), f.sample.ai))
            .unzip();
        let model = fit_images(&rows, &labels, recipe.c)?;
        for (f, v) in files.iter().zip(&variant_rows) {
            if fold_of[&f.sample.group] != fold {
                continue;
            }
            let [Some(clean), Some(confound), Some(degraded)] =
                v.each_ref().map(|r| mean_logit(&model, r))
            else {
                continue;
            };
            out.push(OofScore::new(f.sample, fold, [clean, confound, degraded]));
        }
        models.push(model);
    }
    Ok((out, models))
}

/// Why two models' out-of-fold scores cannot be combined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnsembleError {
    /// A file scored by one model is missing from the other, or held out by another fold.
    #[error("{0}: not scored by both models in the same fold")]
    Unmatched(PathBuf),
}

/// One member's calibration per fold (fitted without that fold's files).
pub type FoldPlatts = BTreeMap<usize, Platt>;

/// The members' calibrated log-odds summed, per file and variant: `Σ (aₖ·zₖ + bₖ)` (a product of
/// experts). Cross-fitted: a file held out by fold `f` gets each member's Platt fitted on that
/// member's clean out-of-fold scores of the other folds only, so no file's label sets the
/// weights it is combined with. Every file must be scored by every member, held out by the
/// same fold. Returns the combined scores and, per member, the Platt of each fold.
pub fn ensemble(
    members: &[&[OofScore]],
) -> Result<(Vec<OofScore>, Vec<FoldPlatts>), EnsembleError> {
    let folds: BTreeSet<usize> = members
        .iter()
        .flat_map(|m| m.iter().map(|o| o.fold))
        .collect();
    let platts: Vec<FoldPlatts> = members
        .iter()
        .map(|m| {
            folds
                .iter()
                .map(|&f| (f, platt_without_fold(m, f, None)))
                .collect()
        })
        .collect();
    let index: Vec<BTreeMap<&Path, &OofScore>> = members
        .iter()
        .map(|m| m.iter().map(|o| (o.path.as_path(), o)).collect())
        .collect();
    let Some(first) = members.first() else {
        return Ok((Vec::new(), platts));
    };
    let mut out = Vec::with_capacity(first.len());
    for o in *first {
        let mut sum = OofScore {
            clean: 0.0,
            confound: 0.0,
            degraded: 0.0,
            ..o.clone()
        };
        for (m, p) in index.iter().zip(&platts) {
            let x = m
                .get(o.path.as_path())
                .filter(|x| x.fold == o.fold && x.ai == o.ai)
                .ok_or_else(|| EnsembleError::Unmatched(o.path.clone()))?;
            let p = p[&o.fold];
            sum.clean += p.log_odds(x.clean);
            sum.confound += p.log_odds(x.confound);
            sum.degraded += p.log_odds(x.degraded);
        }
        out.push(sum);
    }
    if let Some(extra) = index
        .iter()
        .flat_map(|m| m.keys())
        .find(|p| !index[0].contains_key(*p))
    {
        return Err(EnsembleError::Unmatched(extra.to_path_buf()));
    }
    Ok((out, platts))
}

/// Platt fitted on the clean scores of every fold but `fold`.
fn platt_without_fold(scores: &[OofScore], fold: usize, saturation: Option<f64>) -> Platt {
    let (z, l): (Vec<f64>, Vec<bool>) = scores
        .iter()
        .filter(|o| o.fold != fold)
        .map(|o| (o.clean, o.ai))
        .unzip();
    Platt::fit_saturated(&z, &l, saturation)
}

/// Where fold `fold`'s model is written under `work`.
pub fn fold_dir(work: &Path, fold: usize) -> PathBuf {
    work.join(format!("fold-{fold}"))
}

/// How far one of the CPU engine's arithmetics moves the pooled out-of-fold figures against
/// f32 (the reference the report is computed in).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PrecisionRow {
    /// The kernel that ran (`amx-bf16`, `avx512-vnni`, ...).
    pub kernel: String,
    /// Pooled AP of the clean out-of-fold scores.
    pub ap: Option<f64>,
    /// `ap` minus the f32 AP.
    pub ap_delta: Option<f64>,
    /// The largest change of a calibrated probability.
    pub max_probability_delta: f64,
    /// Files whose side of the 1% FPR operating point changed.
    pub flips_at_1pct: usize,
}

/// Scores every out-of-fold file again with its fold's model (from `work`) at each of
/// `precisions`, and compares with the f32 scores in `oof` under the report's calibration.
pub fn precision_check(
    files: &[Loaded<'_>],
    oof: &[OofScore],
    report: &CvReport,
    device: &candle_core::Device,
    work: &Path,
    precisions: &[crate::cpu::Precision],
) -> Result<Vec<PrecisionRow>, CvError> {
    let by_path: BTreeMap<&Path, &Loaded<'_>> =
        files.iter().map(|f| (f.sample.path.as_path(), f)).collect();
    let at_1pct = report
        .operating_points
        .iter()
        .find(|p| (p.fpr - 0.01).abs() < 1e-9)
        .map(|p| p.threshold);
    let labels: Vec<bool> = oof.iter().map(|o| o.ai).collect();
    let reference: Vec<f64> = oof
        .iter()
        .map(|o| report.calibration.probability(o.clean))
        .collect();
    let ap_f32 = metrics::average_precision(&reference, &labels);
    let mut rows = Vec::new();
    for &precision in precisions {
        let mut probs = vec![f64::NAN; oof.len()];
        let mut kernel = String::new();
        for fold in 0..report.folds {
            let det = NprDetector::load_with(&fold_dir(work, fold), device.clone(), precision)?;
            kernel = det.kernel().to_owned();
            for (i, o) in oof.iter().enumerate().filter(|(_, o)| o.fold == fold) {
                let Some(f) = by_path.get(o.path.as_path()) else {
                    continue;
                };
                let img = DynamicImage::ImageRgb8(f.image.clone());
                let l = det.crop_logits(&[&img])?;
                if !l[0].is_empty() {
                    let z = l[0].iter().map(|&z| f64::from(z)).sum::<f64>() / l[0].len() as f64;
                    probs[i] = report.calibration.probability(z);
                }
            }
        }
        let scored: Vec<(f64, f64, bool)> = probs
            .iter()
            .zip(&reference)
            .zip(&labels)
            .filter(|((p, _), _)| !p.is_nan())
            .map(|((&p, &r), &l)| (p, r, l))
            .collect();
        let ps: Vec<f64> = scored.iter().map(|s| s.0).collect();
        let ls: Vec<bool> = scored.iter().map(|s| s.2).collect();
        let ap = metrics::average_precision(&ps, &ls);
        rows.push(PrecisionRow {
            kernel,
            ap,
            ap_delta: ap.zip(ap_f32).map(|(a, b)| a - b),
            max_probability_delta: scored.iter().map(|s| (s.0 - s.1).abs()).fold(0.0, f64::max),
            flips_at_1pct: at_1pct.map_or(0, |t| {
                scored.iter().filter(|s| (s.0 >= t) != (s.1 >= t)).count()
            }),
        });
    }
    Ok(rows)
}

/// The mean crop logit of an image as uploaded, confound-matched and degraded; `None` when it
/// is too small to score.
fn score_variants(
    det: &NprDetector,
    img: &RgbImage,
    cfg: &CvConfig,
) -> candle_core::Result<Option<[f64; 3]>> {
    let clean = DynamicImage::ImageRgb8(img.clone());
    let [confound, degraded] = altered(img, cfg).map(DynamicImage::ImageRgb8);
    let logits = det.crop_logits(&[&clean, &confound, &degraded])?;
    let mean = |l: &[f32]| {
        (!l.is_empty()).then(|| l.iter().map(|&z| f64::from(z)).sum::<f64>() / l.len() as f64)
    };
    Ok(
        match (mean(&logits[0]), mean(&logits[1]), mean(&logits[2])) {
            (Some(a), Some(b), Some(c)) => Some([a, b, c]),
            _ => None,
        },
    )
}

/// The confound-matched and the degraded variants of an image.
fn altered(img: &RgbImage, cfg: &CvConfig) -> [RgbImage; 2] {
    [
        confound_matched(img, cfg.confound_crop, cfg.confound_quality),
        degrade_rgb(img),
    ]
}

/// The centre `side`×`side` crop (the whole image where smaller), JPEG-encoded at `quality`.
pub fn confound_matched(img: &RgbImage, side: u32, quality: u8) -> RgbImage {
    let (w, h) = img.dimensions();
    let (cw, ch) = (w.min(side), h.min(side));
    let crop = image::imageops::crop_imm(img, (w - cw) / 2, (h - ch) / 2, cw, ch).to_image();
    jpeg_roundtrip(&crop, quality)
}

/// Figures of one set of calibrated scores.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Figures {
    /// Real images.
    pub real: usize,
    /// AI images.
    pub ai: usize,
    /// Average precision.
    pub ap: Option<f64>,
    /// ROC AUC.
    pub roc_auc: Option<f64>,
    /// True-positive rate at 1% false-positive rate on real photos.
    pub tpr_at_1pct_fpr: Option<f64>,
    /// Expected calibration error (10 bins).
    pub ece: Option<f64>,
}

impl Figures {
    fn of(p: &[f64], l: &[bool]) -> Self {
        Self {
            real: l.iter().filter(|a| !**a).count(),
            ai: l.iter().filter(|a| **a).count(),
            ap: metrics::average_precision(p, l),
            roc_auc: metrics::roc_auc(p, l),
            tpr_at_1pct_fpr: metrics::tpr_at_fpr(p, l, 0.01),
            ece: metrics::expected_calibration_error(p, l, 10),
        }
    }
}

/// One held-out group.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct GroupRow {
    /// Source or family.
    pub group: String,
    /// `ai` or `real`.
    pub class: String,
    /// Files.
    pub n: usize,
    /// The fold that held it out.
    pub fold: usize,
    /// AI groups: average precision of the group against every real photo (pooled).
    pub ap: Option<f64>,
    /// AI groups: ROC AUC against every real photo.
    pub roc_auc: Option<f64>,
    /// AI groups: share flagged at the pooled 1% FPR operating point.
    pub tpr_at_1pct_fpr: Option<f64>,
    /// Real groups: share flagged at the pooled 1% FPR operating point.
    pub fpr_at_1pct_point: Option<f64>,
    /// Calibration error within the group: |mean probability − its label|.
    pub ece: f64,
    /// Mean calibrated probability.
    pub mean_probability: f64,
}

/// A threshold on the calibrated probability at a false-positive rate on real photos.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct OperatingPoint {
    /// The false-positive rate asked for.
    pub fpr: f64,
    /// Probability at or above which an image is flagged.
    pub threshold: f64,
    /// The false-positive rate reached on the pooled real photos.
    pub fpr_reached: f64,
    /// The true-positive rate there.
    pub tpr: f64,
}

/// The report of a cross-validation.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CvReport {
    /// Folds, and how groups were dealt.
    pub folds: usize,
    /// Group → fold.
    pub fold_of: BTreeMap<String, usize>,
    /// The training recipe of every fold.
    pub recipe: serde_json::Value,
    /// Platt calibration fitted on the pooled out-of-fold logits (clean).
    pub calibration: Platt,
    /// Pooled out-of-fold, as uploaded.
    pub clean: Figures,
    /// Pooled, confound-matched (one size, one JPEG quality).
    pub confound_matched: Figures,
    /// Pooled, after a 0.5× downscale and JPEG quality 75.
    pub degraded: Figures,
    /// Thresholds at the configured false-positive rates (clean).
    pub operating_points: Vec<OperatingPoint>,
    /// Every held-out group.
    pub groups: Vec<GroupRow>,
    /// The e-commerce-like real sources together: share flagged at each operating point.
    pub ecommerce_real: Vec<(f64, f64)>,
    /// Files in the e-commerce-like real sources.
    pub ecommerce_real_files: usize,
    /// The reduced-precision arithmetics against f32 ([`precision_check`]; empty until run).
    #[serde(default)]
    pub precision: Vec<PrecisionRow>,
    /// ECE of the clean scores with each fold calibrated by a Platt fitted on the other folds'
    /// out-of-fold scores only: what calibration is worth on a model whose scores it never
    /// saw (the pooled `clean.ece` reuses the scores its calibration was fitted on).
    #[serde(default)]
    pub ece_cross_fitted: Option<f64>,
}

/// Pools out-of-fold scores into the report.
pub fn report(oof: &[OofScore], cfg: &CvConfig, fold_of: &BTreeMap<String, usize>) -> CvReport {
    let labels: Vec<bool> = oof.iter().map(|o| o.ai).collect();
    let logits = |f: fn(&OofScore) -> f64| oof.iter().map(f).collect::<Vec<f64>>();
    let clean_z = logits(|o| o.clean);
    let calibration = Platt::fit_saturated(&clean_z, &labels, cfg.saturation);
    let probs = |z: &[f64]| -> Vec<f64> { z.iter().map(|&z| calibration.probability(z)).collect() };
    let clean = probs(&clean_z);
    let confound = probs(&logits(|o| o.confound));
    let degraded = probs(&logits(|o| o.degraded));

    let operating_points: Vec<OperatingPoint> = cfg
        .fprs
        .iter()
        .filter_map(|&fpr| {
            let (threshold, tpr) = metrics::operating_point_or_above(&clean, &labels, fpr)?;
            Some(OperatingPoint {
                fpr,
                threshold,
                fpr_reached: flagged(&clean, &labels, false, threshold),
                tpr,
            })
        })
        .collect();
    let at_1pct = operating_points
        .iter()
        .find(|p| (p.fpr - 0.01).abs() < 1e-9)
        .map(|p| p.threshold);

    let reals: Vec<f64> = clean
        .iter()
        .zip(&labels)
        .filter(|(_, &ai)| !ai)
        .map(|(&p, _)| p)
        .collect();
    let group_names: BTreeSet<&str> = oof.iter().map(|o| o.group.as_str()).collect();
    let mut groups = Vec::new();
    for g in group_names {
        let idx: Vec<usize> = (0..oof.len()).filter(|&i| oof[i].group == g).collect();
        let ai = oof[idx[0]].ai;
        let p: Vec<f64> = idx.iter().map(|&i| clean[i]).collect();
        let mean = p.iter().sum::<f64>() / p.len() as f64;
        let share_over = |t: Option<f64>| {
            t.map(|t| p.iter().filter(|&&x| x >= t).count() as f64 / p.len() as f64)
        };
        let (ap, auc) = if ai {
            let mut s = reals.clone();
            s.extend(&p);
            let mut l = vec![false; reals.len()];
            l.extend(std::iter::repeat_n(true, p.len()));
            (metrics::average_precision(&s, &l), metrics::roc_auc(&s, &l))
        } else {
            (None, None)
        };
        groups.push(GroupRow {
            group: g.to_owned(),
            class: if ai { "ai" } else { "real" }.into(),
            n: p.len(),
            fold: fold_of.get(g).copied().unwrap_or(0),
            ap,
            roc_auc: auc,
            tpr_at_1pct_fpr: if ai { share_over(at_1pct) } else { None },
            fpr_at_1pct_point: if ai { None } else { share_over(at_1pct) },
            ece: (mean - if ai { 1.0 } else { 0.0 }).abs(),
            mean_probability: mean,
        });
    }
    let ecommerce: Vec<f64> = oof
        .iter()
        .zip(&clean)
        .filter(|(o, _)| !o.ai && cfg.ecommerce_groups.contains(&o.group))
        .map(|(_, &p)| p)
        .collect();
    let ecommerce_real = operating_points
        .iter()
        .map(|op| {
            let n = ecommerce.iter().filter(|&&p| p >= op.threshold).count();
            (op.fpr, n as f64 / ecommerce.len().max(1) as f64)
        })
        .collect();
    CvReport {
        folds: cfg.folds,
        fold_of: fold_of.clone(),
        recipe: cfg.train.recipe(),
        calibration,
        clean: Figures::of(&clean, &labels),
        confound_matched: Figures::of(&confound, &labels),
        degraded: Figures::of(&degraded, &labels),
        operating_points,
        groups,
        ecommerce_real,
        ecommerce_real_files: ecommerce.len(),
        precision: Vec::new(),
        ece_cross_fitted: cross_fitted_ece(oof, cfg.saturation),
    }
}

/// See [`CvReport::ece_cross_fitted`]; `None` with fewer than two folds.
fn cross_fitted_ece(oof: &[OofScore], saturation: Option<f64>) -> Option<f64> {
    let folds: BTreeSet<usize> = oof.iter().map(|o| o.fold).collect();
    if folds.len() < 2 {
        return None;
    }
    let (mut probs, mut labels) = (Vec::new(), Vec::new());
    for f in folds {
        let platt = platt_without_fold(oof, f, saturation);
        for o in oof.iter().filter(|o| o.fold == f) {
            probs.push(platt.probability(o.clean));
            labels.push(o.ai);
        }
    }
    metrics::expected_calibration_error(&probs, &labels, 10)
}

/// The share of one class at or above `threshold`.
fn flagged(p: &[f64], l: &[bool], class: bool, threshold: f64) -> f64 {
    let of_class: Vec<f64> = p
        .iter()
        .zip(l)
        .filter(|(_, &c)| c == class)
        .map(|(&x, _)| x)
        .collect();
    of_class.iter().filter(|&&x| x >= threshold).count() as f64 / of_class.len().max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(group: &str, ai: bool, i: usize) -> Sample {
        Sample {
            path: PathBuf::from(format!("/{group}/{i}.png")),
            ai,
            group: group.to_owned(),
        }
    }

    #[test]
    fn whole_groups_go_to_one_fold_and_every_fold_has_both_classes() {
        let mut s = Vec::new();
        for (g, ai, n) in [
            ("a", false, 50),
            ("b", false, 10),
            ("c", false, 7),
            ("x", true, 30),
            ("y", true, 30),
            ("z", true, 2),
        ] {
            s.extend((0..n).map(|i| sample(g, ai, i)));
        }
        let f = assign_folds(&s, 3, 1).unwrap();
        assert_eq!(f.len(), 6);
        for fold in 0..3 {
            for ai in [false, true] {
                assert!(
                    s.iter().any(|x| x.ai == ai && f[&x.group] == fold),
                    "fold {fold} lacks ai={ai}"
                );
            }
        }
        assert_eq!(f, assign_folds(&s, 3, 1).unwrap(), "seeded");
        assert!(matches!(
            assign_folds(&s, 4, 1),
            Err(CvError::TooFewGroups { .. })
        ));
    }

    fn oof(group: &str, ai: bool, z: f64) -> OofScore {
        OofScore {
            path: PathBuf::from(group),
            group: group.to_owned(),
            ai,
            fold: 0,
            clean: z,
            confound: z,
            degraded: z - 1.0,
        }
    }

    #[test]
    fn report_pools_calibrates_and_sets_operating_points() {
        let mut v = Vec::new();
        // 200 real logits spread over [-4, 0), AI family "g1" well above, "g2" mixed.
        for i in 0..200 {
            v.push(oof(
                if i % 2 == 0 { "r1" } else { "shop" },
                false,
                -4.0 + i as f64 * 0.02,
            ));
        }
        for i in 0..50 {
            v.push(oof("g1", true, 1.0 + i as f64 * 0.02));
            v.push(oof("g2", true, -2.0 + i as f64 * 0.05));
        }
        let cfg = CvConfig {
            ecommerce_groups: vec!["shop".into()],
            ..CvConfig::default()
        };
        let folds = BTreeMap::from([("r1".to_owned(), 0), ("g1".to_owned(), 1)]);
        let r = report(&v, &cfg, &folds);
        assert_eq!((r.clean.real, r.clean.ai), (200, 100));
        let g1 = r.groups.iter().find(|g| g.group == "g1").unwrap();
        assert_eq!(g1.ap, Some(1.0));
        assert_eq!(g1.tpr_at_1pct_fpr, Some(1.0));
        let g2 = r.groups.iter().find(|g| g.group == "g2").unwrap();
        assert!(g2.ap.unwrap() < 1.0 && g2.tpr_at_1pct_fpr.unwrap() < 1.0);
        // Each operating point keeps its false-positive budget on the pooled reals.
        assert_eq!(r.operating_points.len(), 4);
        for op in &r.operating_points {
            assert!(op.fpr_reached <= op.fpr + 1e-12, "{op:?}");
        }
        let p1 = r.operating_points.iter().find(|p| p.fpr == 0.01).unwrap();
        let real_flagged = r
            .groups
            .iter()
            .filter(|g| g.class == "real")
            .map(|g| g.fpr_at_1pct_point.unwrap() * g.n as f64)
            .sum::<f64>();
        assert!(real_flagged / 200.0 <= 0.01);
        assert!(p1.threshold > 0.0 && p1.threshold < 1.0);
        assert_eq!(r.ecommerce_real_files, 100);
        // One fold only: nothing to cross-fit.
        assert_eq!(r.ece_cross_fitted, None);
        let mut two = v.clone();
        two.iter_mut().step_by(2).for_each(|o| o.fold = 1);
        let e = report(&two, &cfg, &folds).ece_cross_fitted.unwrap();
        assert!((0.0..=1.0).contains(&e));
        assert_eq!(r.ecommerce_real.len(), 4);
        // The degraded variant is scored lower here: its AP cannot be higher than clean's.
        assert!(r.degraded.ap.unwrap() <= r.clean.ap.unwrap() + 1e-12);
    }

    #[test]
    fn a_real_photo_on_top_still_gives_every_operating_point() {
        // The highest score is a real photo: no threshold flags AI without it, so each point
        // that allows less than one of the 51 real photos sits just above it and flags
        // nothing; the 5% point may flag two of them, and with them every AI image.
        let mut v: Vec<OofScore> = (0..50)
            .map(|i| oof("r", false, -2.0 + f64::from(i) * 0.01))
            .collect();
        v.push(oof("r", false, 3.0));
        v.extend((0..50).map(|i| oof("g", true, 1.0 + f64::from(i) * 0.01)));
        let folds = BTreeMap::from([("r".to_owned(), 0), ("g".to_owned(), 1)]);
        let r = report(&v, &CvConfig::default(), &folds);
        assert_eq!(r.operating_points.len(), 4);
        let top_real = r.calibration.probability(3.0);
        for op in &r.operating_points {
            if op.fpr * 51.0 < 1.0 {
                assert!(op.threshold > top_real, "{op:?}");
                assert_eq!((op.tpr, op.fpr_reached), (0.0, 0.0));
            } else {
                assert!(op.fpr_reached <= op.fpr, "{op:?}");
                assert_eq!((op.tpr, op.fpr_reached), (1.0, 2.0 / 51.0), "{op:?}");
            }
        }
    }

    #[test]
    fn ensemble_sums_calibrated_log_odds_and_refuses_unmatched_files() {
        let a: Vec<OofScore> = (0..40)
            .map(|i| {
                let mut o = oof(
                    &format!("f{i}"),
                    i % 2 == 0,
                    if i % 2 == 0 { 1.0 } else { -1.0 },
                );
                o.path = PathBuf::from(format!("/x/{i}.png"));
                o.clean += f64::from(i % 7) * 0.1;
                o.fold = (i % 3) as usize;
                o
            })
            .collect();
        let b: Vec<OofScore> = a
            .iter()
            .map(|o| OofScore {
                clean: o.clean * 3.0 + 1.0,
                ..o.clone()
            })
            .collect();
        let (sum, platts) = ensemble(&[&a, &b]).unwrap();
        assert_eq!(sum.len(), a.len());
        // Each fold's weights come from the other folds' files only.
        assert_eq!(platts[0].len(), 3);
        for f in 0..3 {
            assert_eq!(platts[0][&f], platt_without_fold(&a, f, None));
        }
        for (i, s) in sum.iter().enumerate() {
            let (p0, p1) = (platts[0][&a[i].fold], platts[1][&a[i].fold]);
            let want = p0.a * a[i].clean + p0.b + p1.a * b[i].clean + p1.b;
            assert!((s.clean - want).abs() < 1e-12);
            assert_eq!((&s.path, s.ai, s.fold), (&a[i].path, a[i].ai, a[i].fold));
        }
        // A file held out by another fold in one member, or missing from one, is refused.
        let mut moved = b.clone();
        moved[3].fold = 1;
        assert_eq!(
            ensemble(&[&a, &moved]),
            Err(EnsembleError::Unmatched(a[3].path.clone()))
        );
        assert!(ensemble(&[&a, &b[1..]]).is_err());
        assert!(ensemble(&[&a[1..], &b]).is_err());
    }

    #[test]
    fn the_feature_model_cross_validates_on_whole_groups() {
        // Real groups: noise photos; AI groups: the same kind of noise up-sampled 2× (nearest),
        // the trace the residual features are built to see. Out of fold, the AI images rank
        // above the real ones.
        let noise = |w: u32, seed: u64| crate::features::noise(w, w, seed);
        let mut samples = Vec::new();
        let mut images = Vec::new();
        for g in 0..4 {
            for i in 0..6 {
                let seed = (g * 100 + i) as u64;
                samples.push(sample(&format!("real{g}"), false, i));
                images.push(noise(96, seed));
                samples.push(sample(&format!("ai{g}"), true, i));
                let small = noise(48, seed + 5000);
                images.push(image::imageops::resize(
                    &small,
                    96,
                    96,
                    image::imageops::FilterType::Nearest,
                ));
            }
        }
        let files: Vec<Loaded<'_>> = samples
            .iter()
            .zip(images)
            .map(|(sample, image)| Loaded { sample, image })
            .collect();
        let cfg = CvConfig {
            folds: 2,
            confound_crop: 64,
            ..CvConfig::default()
        };
        let recipe = crate::features::FeatureRecipe {
            crops_per_image: 2,
            crop_size: 64,
            score_crops: 2,
            c: 1.0,
            seed: 3,
            saturation: None,
            augmentation: Default::default(),
        };
        let fold_of = assign_folds(&samples, 2, 1).unwrap();
        let images: Vec<&RgbImage> = files.iter().map(|f| &f.image).collect();
        let rows = crate::features::training_rows_all(&recipe, &images);
        let (scores, models) = run_features(&files, &rows, &fold_of, &recipe, &cfg).unwrap();
        assert_eq!((scores.len(), models.len()), (48, 2));
        for s in &scores {
            assert_eq!(
                s.fold, fold_of[&s.group],
                "scored by the fold that held it out"
            );
        }
        let z: Vec<f64> = scores.iter().map(|s| s.clean).collect();
        let l: Vec<bool> = scores.iter().map(|s| s.ai).collect();
        assert!(metrics::roc_auc(&z, &l).unwrap() > 0.95);
        // Seeded: the same rows, the same models.
        let again = crate::features::training_rows_all(&recipe, &images);
        assert_eq!(again, rows);
        assert_eq!(
            run_features(&files, &again, &fold_of, &recipe, &cfg)
                .unwrap()
                .1,
            models
        );
    }

    #[test]
    fn the_confound_variant_is_one_size_and_quality() {
        let img = RgbImage::from_fn(400, 300, |x, y| image::Rgb([x as u8, y as u8, 3]));
        assert_eq!(confound_matched(&img, 256, 85).dimensions(), (256, 256));
        let small = RgbImage::new(100, 90);
        assert_eq!(confound_matched(&small, 256, 85).dimensions(), (100, 90));
    }
}
