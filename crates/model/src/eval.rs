//! Evaluation reports: metrics at the card's 1% FPR operating point, clean and under a robustness
//! perturbation (JPEG q75 after a 0.5× downscale), overall and per AI generator subfolder.

use std::collections::BTreeMap;

use image::DynamicImage;
use serde::Serialize;

use crate::data::{degrade, Sample};
use crate::metrics;
use lg_detector::PixelModel;

/// One scored image.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Calibrated AI probability.
    pub probability: f64,
    /// Ground truth.
    pub ai: bool,
    /// Generator group (`real` for real images).
    pub group: String,
}

/// Metrics of one set.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Metrics {
    /// Real images.
    pub real: usize,
    /// AI images.
    pub ai: usize,
    /// Average precision.
    pub ap: Option<f64>,
    /// ROC AUC.
    pub roc_auc: Option<f64>,
    /// Accuracy at the card's 1% FPR operating point.
    pub accuracy: Option<f64>,
    /// TPR at 1% FPR.
    pub tpr_at_1pct_fpr: Option<f64>,
    /// Expected calibration error (10 bins).
    pub ece: Option<f64>,
}

impl Metrics {
    /// Computes the metrics of `scored` at `threshold`.
    pub fn of(scored: &[Scored], threshold: f64) -> Self {
        let p: Vec<f64> = scored.iter().map(|s| s.probability).collect();
        let l: Vec<bool> = scored.iter().map(|s| s.ai).collect();
        Self {
            real: l.iter().filter(|a| !**a).count(),
            ai: l.iter().filter(|a| **a).count(),
            ap: metrics::average_precision(&p, &l),
            roc_auc: metrics::roc_auc(&p, &l),
            accuracy: metrics::accuracy_at(&p, &l, threshold),
            tpr_at_1pct_fpr: metrics::tpr_at_fpr(&p, &l, 0.01),
            ece: metrics::expected_calibration_error(&p, &l, 10),
        }
    }
}

/// A full report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Model version.
    pub model: String,
    /// Threshold used for accuracy.
    pub threshold: f64,
    /// Clean images.
    pub clean: Metrics,
    /// JPEG q75 + 0.5× downscale.
    pub robust_jpeg75_half: Metrics,
    /// Per AI subfolder (each against all real images), clean.
    pub per_generator: BTreeMap<String, Metrics>,
    /// Files that could not be decoded or were too small to score.
    pub skipped: Vec<String>,
    /// How many of the files the model trained on (its `trained-on.sha256`): when not zero,
    /// these are training-set figures, not quality figures.
    pub trained_on_files: usize,
}

/// The probability threshold with the highest TPR whose FPR is at most `max_fpr` (the lowest
/// such threshold; see [`metrics::operating_point`]).
pub fn threshold_at_fpr(scored: &[Scored], max_fpr: f64) -> Option<f64> {
    let p: Vec<f64> = scored.iter().map(|s| s.probability).collect();
    let l: Vec<bool> = scored.iter().map(|s| s.ai).collect();
    metrics::operating_point(&p, &l, max_fpr).map(|(t, _)| t)
}

/// Scores files with `det`, each as read and after [`degrade`]; each file is read once.
/// Files it cannot read or score are listed in the third value.
pub fn score_samples(
    det: &dyn PixelModel,
    samples: &[Sample],
) -> (Vec<Scored>, Vec<Scored>, Vec<String>) {
    let (mut clean, mut robust, mut skipped) = (Vec::new(), Vec::new(), Vec::new());
    let score = |img: &DynamicImage| {
        det.score_batch(&[img])
            .ok()
            .and_then(|mut v| v.pop().flatten())
            .map(|s| f64::from(s.ai_probability))
    };
    for s in samples {
        let img = match crate::data::load_rgb(&s.path) {
            Ok(i) => DynamicImage::ImageRgb8(i),
            Err(e) => {
                skipped.push(e);
                continue;
            }
        };
        let scored = |probability| Scored {
            probability,
            ai: s.ai,
            group: s.group.clone(),
        };
        match score(&img) {
            Some(p) => clean.push(scored(p)),
            None => skipped.push(format!("{}: too small to score", s.path.display())),
        }
        if let Some(p) = score(&degrade(&img)) {
            robust.push(scored(p));
        }
    }
    (clean, robust, skipped)
}

/// Evaluates `det` on `samples`, at its 1% FPR operating point (0.5 where the card has none).
pub fn evaluate(det: &dyn PixelModel, samples: &[Sample]) -> Report {
    let threshold = det
        .operating_points()
        .iter()
        .find(|op| (op.fpr - 0.01).abs() < 1e-6)
        .map_or(0.5, |op| f64::from(op.threshold));
    let (clean, robust, mut skipped) = score_samples(det, samples);
    let mut per_generator = BTreeMap::new();
    let groups: std::collections::BTreeSet<&str> = clean
        .iter()
        .filter(|s| s.ai)
        .map(|s| s.group.as_str())
        .collect();
    if groups.len() > 1 {
        for g in groups {
            let subset: Vec<Scored> = clean
                .iter()
                .filter(|s| !s.ai || s.group == g)
                .cloned()
                .collect();
            per_generator.insert(g.to_owned(), Metrics::of(&subset, threshold));
        }
    }
    skipped.sort();
    Report {
        model: det.version().to_owned(),
        threshold,
        clean: Metrics::of(&clean, threshold),
        robust_jpeg75_half: Metrics::of(&robust, threshold),
        per_generator,
        skipped,
        trained_on_files: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(p: f64, ai: bool) -> Scored {
        Scored {
            probability: p,
            ai,
            group: String::new(),
        }
    }

    #[test]
    fn threshold_respects_the_fpr_budget() {
        let set = vec![s(0.9, true), s(0.8, false), s(0.7, true), s(0.2, false)];
        // FPR 0: threshold above 0.8 -> 0.9 catches one of two positives.
        assert_eq!(threshold_at_fpr(&set, 0.0), Some(0.9));
        // FPR 0.5 allows 0.7.
        assert_eq!(threshold_at_fpr(&set, 0.5), Some(0.7));
        assert_eq!(threshold_at_fpr(&[s(0.5, true)], 0.1), None);
        let m = Metrics::of(&set, 0.75);
        assert_eq!((m.real, m.ai), (2, 2));
        assert_eq!(m.accuracy, Some(0.5));
    }
}
