//! Platt scaling: `p = σ(a·z + b)` from the image logit `z`, fitted on a validation split.
//!
//! `a` is kept strictly positive, so the calibrated probability is monotonic in the logit (a
//! fit that comes out non-positive means the model ranks the split backwards; it is clamped and
//! reported by the caller). Temperature scaling is the special case `b = 0`, `a = 1/T`.

use serde::{Deserialize, Serialize};

/// Smallest slope kept.
const MIN_A: f64 = 1e-3;
/// Largest slope kept: beyond this a small split is being separated, not calibrated.
const MAX_A: f64 = 1e3;
/// Weak Gaussian prior on (a, b) around (1, 0): keeps the fit finite on separable splits.
const PRIOR: f64 = 1e-3;

/// Calibration parameters.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Platt {
    /// Slope.
    pub a: f64,
    /// Offset.
    pub b: f64,
    /// When set to `s`, the score is saturated to `s·tanh(z/s)` before the linear map: a
    /// score far outside the training range (an image unlike anything seen) then counts as
    /// a strong score, not as an extreme one that flattens the fitted slope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub saturation: Option<f64>,
}

impl Default for Platt {
    fn default() -> Self {
        Self {
            a: 1.0,
            b: 0.0,
            saturation: None,
        }
    }
}

fn saturate(z: f64, saturation: Option<f64>) -> f64 {
    match saturation {
        Some(s) => s * (z / s).tanh(),
        None => z,
    }
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

impl Platt {
    /// Calibrated probability for a logit; always in [0, 1].
    pub fn probability(&self, logit: f64) -> f64 {
        sigmoid(self.log_odds(logit))
    }

    /// The calibrated log-odds of a logit: `a·z + b`, `z` saturated first when set.
    pub fn log_odds(&self, logit: f64) -> f64 {
        self.a * saturate(logit, self.saturation) + self.b
    }

    /// [`Platt::fit`] on the scores saturated at `saturation` (see [`Platt::saturation`]).
    pub fn fit_saturated(logits: &[f64], labels: &[bool], saturation: Option<f64>) -> Self {
        let z: Vec<f64> = logits.iter().map(|&z| saturate(z, saturation)).collect();
        Self {
            saturation,
            ..Self::fit(&z, labels)
        }
    }

    /// Fits `a`, `b` by Newton's method on the log loss, with Platt's smoothed targets
    /// `(N₊+1)/(N₊+2)` and `1/(N₋+2)` against over-confidence on small splits.
    pub fn fit(logits: &[f64], labels: &[bool]) -> Self {
        let pos = labels.iter().filter(|&&l| l).count() as f64;
        let neg = labels.len() as f64 - pos;
        if pos == 0.0 || neg == 0.0 {
            return Self::default();
        }
        let t_pos = (pos + 1.0) / (pos + 2.0);
        let t_neg = 1.0 / (neg + 2.0);
        let targets: Vec<f64> = labels
            .iter()
            .map(|&l| if l { t_pos } else { t_neg })
            .collect();
        let loss = |a: f64, b: f64| -> f64 {
            let nll: f64 = logits
                .iter()
                .zip(&targets)
                .map(|(&z, &t)| {
                    let p = sigmoid(a * z + b).clamp(1e-12, 1.0 - 1e-12);
                    -(t * p.ln() + (1.0 - t) * (1.0 - p).ln())
                })
                .sum();
            nll + PRIOR * ((a - 1.0).powi(2) + b * b)
        };
        let (mut a, mut b) = (1.0, 0.0);
        let mut current = loss(a, b);
        for _ in 0..100 {
            let (mut ga, mut gb) = (2.0 * PRIOR * (a - 1.0), 2.0 * PRIOR * b);
            let (mut haa, mut hab, mut hbb) = (2.0 * PRIOR, 0.0, 2.0 * PRIOR);
            for (&z, &t) in logits.iter().zip(&targets) {
                let p = sigmoid(a * z + b);
                let d = p - t;
                let w = p * (1.0 - p);
                ga += d * z;
                gb += d;
                haa += w * z * z;
                hab += w * z;
                hbb += w;
            }
            let det = haa * hbb - hab * hab;
            if det.abs() < 1e-18 {
                break;
            }
            let da = (hbb * ga - hab * gb) / det;
            let db = (haa * gb - hab * ga) / det;
            // Backtracking: take the largest step (1, 1/2, 1/4, ...) that lowers the loss.
            let mut step = 1.0;
            let mut improved = false;
            while step > 1e-6 {
                let (na, nb) = (a - step * da, b - step * db);
                let l = loss(na, nb);
                if l < current {
                    (a, b, current, improved) = (na, nb, l, true);
                    break;
                }
                step /= 2.0;
            }
            if !improved || (da.abs() < 1e-10 && db.abs() < 1e-10) {
                break;
            }
        }
        Self {
            a: a.clamp(MIN_A, MAX_A),
            b,
            saturation: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probabilities_are_bounded_and_monotonic() {
        let p = Platt {
            a: 2.5,
            b: -0.7,
            saturation: None,
        };
        let mut last = -1.0;
        for i in -2000..=2000 {
            let z = f64::from(i) / 10.0;
            let q = p.probability(z);
            assert!((0.0..=1.0).contains(&q), "{z} -> {q}");
            assert!(q >= last, "not monotonic at {z}");
            last = q;
        }
        assert!(p.probability(1e6) <= 1.0 && p.probability(-1e6) >= 0.0);
    }

    #[test]
    fn fit_recovers_a_known_logistic_and_stays_monotonic() {
        // Labels drawn deterministically from σ(2z − 1): fraction of positives matches the curve.
        let mut logits = Vec::new();
        let mut labels = Vec::new();
        for i in 0..200 {
            let z = f64::from(i) / 50.0 - 2.0;
            let positives = (sigmoid(2.0 * z - 1.0) * 50.0).round();
            for k in 0..50 {
                logits.push(z);
                labels.push(f64::from(k) < positives);
            }
        }
        let fit = Platt::fit(&logits, &labels);
        assert!(
            (fit.a - 2.0).abs() < 0.15 && (fit.b + 1.0).abs() < 0.15,
            "{fit:?}"
        );
        // A split ranked backwards still yields a monotonic (clamped) calibration.
        let backwards: Vec<bool> = labels.iter().map(|l| !l).collect();
        assert!(Platt::fit(&logits, &backwards).a > 0.0);
        assert_eq!(Platt::fit(&[1.0, 2.0], &[true, true]), Platt::default());
        // A perfectly separable split stays finite and monotonic.
        let sep = Platt::fit(
            &[-3.0, -2.0, -1.0, 1.0, 2.0, 3.0],
            &[false, false, false, true, true, true],
        );
        assert!(
            sep.a.is_finite() && sep.a > 0.0 && sep.a <= 1e3 && sep.b.is_finite(),
            "{sep:?}"
        );
    }

    #[test]
    fn a_saturated_calibration_bounds_extreme_scores_and_round_trips() {
        let logits: Vec<f64> = (0..60).map(|i| f64::from(i) / 3.0 - 10.0).collect();
        let labels: Vec<bool> = logits.iter().map(|&z| z > 0.5).collect();
        let sat = Platt::fit_saturated(&logits, &labels, Some(3.0));
        assert_eq!(sat.saturation, Some(3.0));
        let squashed: Vec<f64> = logits.iter().map(|&z| 3.0 * (z / 3.0).tanh()).collect();
        let plain = Platt::fit(&squashed, &labels);
        assert_eq!((sat.a, sat.b), (plain.a, plain.b));
        // However far out the score, the log-odds stay within a·s + |b|.
        let cap = sat.a * 3.0 + sat.b.abs();
        assert!(sat.log_odds(1e6) <= cap + 1e-9 && sat.log_odds(-1e6) >= -cap - 1e-9);
        assert!(sat.probability(2.0) > sat.probability(1.0));
        // Serialised with its saturation; a card without the field has none.
        let back: Platt = serde_json::from_str(&serde_json::to_string(&sat).unwrap()).unwrap();
        assert_eq!(back, sat);
        let old: Platt = serde_json::from_str(r#"{"a": 2.0, "b": 0.5}"#).unwrap();
        assert_eq!(old.saturation, None);
        assert_eq!(old.log_odds(1e3), 2.0 * 1e3 + 0.5);
    }
}
