//! Detector evaluation metrics over (score, label) pairs. Pure functions; label `true` = AI.
//!
//! - [`average_precision`]: area under the precision-recall curve as the mean of precision at
//!   each positive's rank (ties broken pessimistically: negatives first among equal scores).
//! - [`roc_auc`]: probability that a random positive outscores a random negative (ties count
//!   one half), i.e. the Mann-Whitney U statistic normalised.
//! - [`tpr_at_fpr`]: the highest true-positive rate whose false-positive rate does not exceed
//!   the target, over all thresholds.
//! - [`expected_calibration_error`]: equal-width bins over [0, 1], weighted mean of
//!   |accuracy − confidence| where confidence is the mean predicted probability of "AI".

/// Sorts indices by descending score, negatives first among equal scores.
fn ranked(scores: &[f64], labels: &[bool]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        scores[b]
            .total_cmp(&scores[a])
            .then(labels[a].cmp(&labels[b]))
    });
    idx
}

/// Average precision; `None` without positives.
pub fn average_precision(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len());
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return None;
    }
    let mut tp = 0usize;
    let mut sum = 0.0;
    for (rank, &i) in ranked(scores, labels).iter().enumerate() {
        if labels[i] {
            tp += 1;
            sum += tp as f64 / (rank + 1) as f64;
        }
    }
    Some(sum / positives as f64)
}

/// ROC AUC; `None` unless both classes are present.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Option<f64> {
    assert_eq!(scores.len(), labels.len());
    let class = |want: bool| {
        scores
            .iter()
            .zip(labels)
            .filter(move |(_, &l)| l == want)
            .map(|(&s, _)| s)
    };
    let (mut wins, mut pairs) = (0.0, 0.0);
    for p in class(true) {
        for n in class(false) {
            pairs += 1.0;
            wins += if p > n {
                1.0
            } else if p == n {
                0.5
            } else {
                0.0
            };
        }
    }
    (pairs > 0.0).then(|| wins / pairs)
}

/// Best TPR with FPR ≤ `max_fpr`; `None` unless both classes are present.
pub fn tpr_at_fpr(scores: &[f64], labels: &[bool], max_fpr: f64) -> Option<f64> {
    let both = labels.iter().any(|&l| l) && labels.iter().any(|&l| !l);
    // No score threshold within budget: only "nothing is AI" is, with TPR 0.
    both.then(|| operating_point(scores, labels, max_fpr).map_or(0.0, |(_, tpr)| tpr))
}

/// The lowest score threshold (score ≥ threshold means AI) whose FPR is at most `max_fpr`,
/// with its TPR, which is the highest TPR within that budget. `None` unless both classes are
/// present and some threshold fits the budget.
pub fn operating_point(scores: &[f64], labels: &[bool], max_fpr: f64) -> Option<(f64, f64)> {
    let pos = labels.iter().filter(|&&l| l).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return None;
    }
    let order = ranked(scores, labels);
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut best = None;
    let mut k = 0;
    while k < order.len() {
        // Move the threshold past every sample with this score at once.
        // The first sample always moves, so a NaN score (never equal to itself) cannot stall it.
        let (s, start) = (scores[order[k]], k);
        while k < order.len() && (k == start || scores[order[k]] == s) {
            if labels[order[k]] {
                tp += 1.0;
            } else {
                fp += 1.0;
            }
            k += 1;
        }
        if fp / neg <= max_fpr {
            best = Some((s, tp / pos));
        }
    }
    best
}

/// [`operating_point`], or where no threshold fits the budget (the top-scored image is real)
/// [`above_every_real`]. `None` unless both classes are present.
pub fn operating_point_or_above(
    scores: &[f64],
    labels: &[bool],
    max_fpr: f64,
) -> Option<(f64, f64)> {
    if !(labels.iter().any(|&l| l) && labels.iter().any(|&l| !l)) {
        return None;
    }
    operating_point(scores, labels, max_fpr).or_else(|| above_every_real(scores, labels))
}

/// The operating point that flags no real photo: just above the highest real score (in `f32`,
/// the precision of the card), with TPR 0. The rate asked for is below the resolution of the
/// pooled real photos when even the top-scored image is real.
pub fn above_every_real(scores: &[f64], labels: &[bool]) -> Option<(f64, f64)> {
    let top = scores
        .iter()
        .zip(labels)
        .filter(|(_, &ai)| !ai)
        .map(|(&s, _)| s as f32)
        .max_by(f32::total_cmp)?;
    let above = f32::from_bits(top.to_bits() + 1);
    let tpr = scores
        .iter()
        .zip(labels)
        .filter(|(&s, &ai)| ai && s as f32 >= above)
        .count() as f64
        / labels.iter().filter(|&&ai| ai).count().max(1) as f64;
    Some((f64::from(above), tpr))
}

/// Accuracy at a threshold (score ≥ threshold means AI).
pub fn accuracy_at(scores: &[f64], labels: &[bool], threshold: f64) -> Option<f64> {
    if scores.is_empty() {
        return None;
    }
    let right = scores
        .iter()
        .zip(labels)
        .filter(|(s, l)| (**s >= threshold) == **l)
        .count();
    Some(right as f64 / scores.len() as f64)
}

/// Expected calibration error with `bins` equal-width bins of the predicted AI probability.
pub fn expected_calibration_error(probs: &[f64], labels: &[bool], bins: usize) -> Option<f64> {
    if probs.is_empty() || bins == 0 {
        return None;
    }
    let mut count = vec![0usize; bins];
    let mut conf = vec![0.0; bins];
    let mut hits = vec![0.0; bins];
    for (&p, &l) in probs.iter().zip(labels) {
        let b = ((p * bins as f64) as usize).min(bins - 1);
        count[b] += 1;
        conf[b] += p;
        hits[b] += if l { 1.0 } else { 0.0 };
    }
    let n = probs.len() as f64;
    Some(
        (0..bins)
            .filter(|&b| count[b] > 0)
            .map(|b| {
                (count[b] as f64 / n)
                    * (hits[b] / count[b] as f64 - conf[b] / count[b] as f64).abs()
            })
            .sum(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: Option<f64>, b: f64) {
        let a = a.expect("defined");
        assert!((a - b).abs() < 1e-9, "{a} != {b}");
    }

    // Toy set, worked by hand:
    // scores 0.9(+) 0.8(-) 0.7(+) 0.6(+) 0.5(-) 0.4(-)
    const S: [f64; 6] = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4];
    const L: [bool; 6] = [true, false, true, true, false, false];

    #[test]
    fn average_precision_by_hand() {
        // Positives at ranks 1, 3, 4: (1/1 + 2/3 + 3/4) / 3.
        close(average_precision(&S, &L), (1.0 + 2.0 / 3.0 + 0.75) / 3.0);
        close(average_precision(&[0.3, 0.2], &[true, true]), 1.0);
        assert_eq!(average_precision(&[0.3], &[false]), None);
        // Ties are pessimistic: a tied negative ranks first.
        close(average_precision(&[0.5, 0.5], &[true, false]), 0.5);
    }

    #[test]
    fn roc_auc_by_hand() {
        // Pairs (pos, neg): 9 in all; wins: 0.9 beats 3, 0.7 beats 2, 0.6 beats 2 = 7.
        close(roc_auc(&S, &L), 7.0 / 9.0);
        close(roc_auc(&[0.5, 0.5], &[true, false]), 0.5);
        assert_eq!(roc_auc(&[0.1], &[true]), None);
    }

    #[test]
    fn tpr_at_fpr_by_hand() {
        // FPR 0 allows only the threshold above 0.8: TPR 1/3.
        close(tpr_at_fpr(&S, &L, 0.0), 1.0 / 3.0);
        // FPR 1/3 allows down to 0.6: TPR 1.
        close(tpr_at_fpr(&S, &L, 1.0 / 3.0), 1.0);
        close(tpr_at_fpr(&S, &L, 0.01), 1.0 / 3.0);
        assert_eq!(operating_point(&S, &L, 1.0 / 3.0), Some((0.6, 1.0)));
        // The top score is negative: no threshold has FPR 0, so TPR at 0% FPR is 0.
        close(tpr_at_fpr(&[0.9, 0.1], &[false, true], 0.0), 0.0);
        assert_eq!(operating_point(&[0.9, 0.1], &[false, true], 0.0), None);
    }

    #[test]
    fn a_nan_score_does_not_stall_the_operating_point() {
        // total_cmp ranks NaN first; it must be passed like any other score, not looped on.
        let p = operating_point(&[f64::NAN, 0.9, 0.1], &[true, true, false], 0.0);
        assert_eq!(p.map(|(t, _)| t), Some(0.9));
    }

    #[test]
    fn accuracy_and_ece_by_hand() {
        // Threshold 0.65 calls 0.9, 0.8, 0.7 AI: right on 0.9, 0.7, 0.5, 0.4; wrong on 0.8, 0.6.
        close(accuracy_at(&S, &L, 0.65), 4.0 / 6.0);
        // Two bins: [0, .5): p=0.4(-) ; [.5, 1]: 0.9+,0.8-,0.7+,0.6+,0.5-.
        // Bin 0: acc 0, conf 0.4 -> |0-0.4|*1/6. Bin 1: acc 3/5, conf 0.7 -> |0.6-0.7|*5/6.
        close(
            expected_calibration_error(&S, &L, 2),
            0.4 / 6.0 + 0.1 * 5.0 / 6.0,
        );
        close(
            expected_calibration_error(&[1.0, 0.0], &[true, false], 10),
            0.0,
        );
    }
}
