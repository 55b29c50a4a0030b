//! Training with candle's autograd and AdamW (cosine learning-rate decay after a short warm-up).
//! Calibration comes from a cross-validation ([`crate::cv`]), or, for quick experiments, from a
//! validation split ([`fit_and_save`]).
//!
//! Seeded end to end: the weight initialisation (device seed), batch sampling and
//! augmentations (a `StdRng` from the same seed), and the validation split (a hash of path and
//! seed). Batches are class-balanced, and within a class balanced over groups (sources or
//! generator families), so that one big family does not stand for all of AI.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarBuilder, VarMap};
use image::{DynamicImage, RgbImage};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::arch::{parameter_count, Npr, DTYPE};
use crate::calibrate::Platt;
use crate::card::{InputSpec, ModelCard, Normalisation, WeightsRef, ARCHITECTURE};
use crate::data::{augment, jpeg_roundtrip, random_crop};
use crate::eval::{threshold_at_fpr, Scored};
use crate::infer::{crop_tensor, NprDetector};

/// Training settings.
#[derive(Debug, Clone)]
pub struct TrainConfig {
    /// Model name for the card.
    pub name: String,
    /// Side of the training crops.
    pub train_crop: u32,
    /// Side of the inference crops written to the card.
    pub crop_size: u32,
    /// Inference crops per image written to the card.
    pub crops_per_image: u32,
    /// Images per step (half real, half AI).
    pub batch: usize,
    /// Optimisation steps.
    pub steps: usize,
    /// AdamW learning rate.
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
    /// Seed for everything random.
    pub seed: u64,
    /// Apply the augmentation pipeline (off only for tests on synthetic data).
    pub augment: bool,
}

impl TrainConfig {
    /// The recipe as written to model cards and cross-validation reports.
    pub fn recipe(&self) -> serde_json::Value {
        serde_json::json!({
            "steps": self.steps, "batch": self.batch, "train_crop": self.train_crop,
            "optimizer": "AdamW", "lr": self.lr, "lr_schedule": "linear warm-up (5%), cosine decay",
            "weight_decay": self.weight_decay, "seed": self.seed,
            "sampling": "class-balanced; within a class, groups (sources, families) uniformly",
            "augmentation": if self.augment { crate::data::AUGMENTATION } else { "none" },
        })
    }
}

/// One training image and its group (source or generator family).
#[derive(Debug, Clone, Copy)]
pub struct TrainImage<'a> {
    /// The pixels.
    pub image: &'a RgbImage,
    /// `true` for AI-generated.
    pub ai: bool,
    /// Source or family; sampling is uniform over the groups of a class.
    pub group: &'a str,
}

impl<'a> TrainImage<'a> {
    /// Images without groups: each class one group.
    pub fn ungrouped(images: &'a [(RgbImage, bool)]) -> Vec<Self> {
        images
            .iter()
            .map(|(image, ai)| Self {
                image,
                ai: *ai,
                group: if *ai { "ai" } else { "real" },
            })
            .collect()
    }
}

/// The learning rate at `step`: linear warm-up over the first 5% of steps, then cosine decay
/// to 5% of the peak.
fn learning_rate(peak: f64, step: usize, steps: usize) -> f64 {
    let warm = (steps / 20).max(1);
    if step < warm {
        return peak * (step + 1) as f64 / warm as f64;
    }
    let t = (step - warm) as f64 / (steps - warm).max(1) as f64;
    peak * (0.05 + 0.95 * 0.5 * (1.0 + (std::f64::consts::PI * t).cos()))
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            name: "npr".into(),
            train_crop: 96,
            crop_size: 224,
            crops_per_image: 5,
            batch: 16,
            steps: 300,
            lr: 1e-3,
            weight_decay: 1e-4,
            seed: 17,
            augment: true,
        }
    }
}

/// Errors while training.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// Not enough data.
    #[error("need at least one real and one AI training image (have {real} real, {ai} AI)")]
    NotEnoughData {
        /// Real images.
        real: usize,
        /// AI images.
        ai: usize,
    },
    /// Tensor maths failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Writing the model failed.
    #[error("writing the model: {0}")]
    Io(#[from] std::io::Error),
    /// Reading back the model failed.
    #[error(transparent)]
    Load(#[from] crate::card::ModelLoadError),
}

/// The trained network and its loss curve.
pub struct Trained {
    /// Variables (weights and BatchNorm statistics).
    pub varmap: VarMap,
    /// Loss per step.
    pub losses: Vec<f32>,
}

/// Trains on decoded images. `on_step(step, loss)` reports progress.
pub fn train(
    images: &[TrainImage<'_>],
    cfg: &TrainConfig,
    device: &Device,
    on_step: &mut dyn FnMut(usize, f32),
) -> Result<Trained, TrainError> {
    // Per class: its groups (sorted, for reproducibility), each with its images.
    let pools = |ai: bool| -> Vec<Vec<&RgbImage>> {
        let mut by: BTreeMap<&str, Vec<&RgbImage>> = BTreeMap::new();
        for t in images.iter().filter(|t| t.ai == ai) {
            by.entry(t.group).or_default().push(t.image);
        }
        by.into_values().collect()
    };
    let (real, ai) = (pools(false), pools(true));
    if real.is_empty() || ai.is_empty() {
        return Err(TrainError::NotEnoughData {
            real: real.iter().map(Vec::len).sum(),
            ai: ai.iter().map(Vec::len).sum(),
        });
    }
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let mut varmap = VarMap::new();
    let net = Npr::train(&VarBuilder::from_varmap(&varmap, DTYPE, device))?;
    seeded_init(&varmap, &mut rng, device)?;
    let params = ParamsAdamW {
        lr: cfg.lr,
        weight_decay: cfg.weight_decay,
        ..Default::default()
    };
    let trainable: Vec<_> = {
        let data = varmap.data().lock().expect("varmap lock");
        data.iter()
            .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
            .map(|(_, v)| v.clone())
            .collect()
    };
    let mut opt = AdamW::new(trainable, params)?;
    let norm = Normalisation::default();
    let mut losses = Vec::with_capacity(cfg.steps);
    for step in 0..cfg.steps {
        opt.set_learning_rate(learning_rate(cfg.lr, step, cfg.steps));
        let mut xs = Vec::with_capacity(cfg.batch);
        let mut ys = Vec::with_capacity(cfg.batch);
        for k in 0..cfg.batch.max(2) {
            let is_ai = k % 2 == 1;
            let groups = if is_ai { &ai } else { &real };
            let pool = &groups[rng.gen_range(0..groups.len())];
            let img = pool[rng.gen_range(0..pool.len())];
            let crop = if cfg.augment {
                augment(img, cfg.train_crop, &mut rng)
            } else {
                random_crop(img, cfg.train_crop, &mut rng)
            };
            // Crops from small images can be smaller; bring all to one size by centre-cropping
            // the batch to its smallest member.
            xs.push(crop);
            ys.push(if is_ai { 1f32 } else { 0f32 });
        }
        let side = xs
            .iter()
            .map(|c| c.width().min(c.height()))
            .min()
            .unwrap_or(cfg.train_crop)
            & !1;
        let tensors = xs
            .iter()
            .map(|c| {
                crop_tensor(
                    c,
                    ((c.width() - side) / 2, (c.height() - side) / 2, side, side),
                    norm.mean,
                    norm.std,
                    device,
                )
            })
            .collect::<candle_core::Result<Vec<_>>>()?;
        let x = Tensor::stack(&tensors, 0)?;
        let y = Tensor::from_vec(ys, cfg.batch.max(2), device)?;
        let logits = net.forward_t(&x, true)?;
        let loss = candle_nn::loss::binary_cross_entropy_with_logit(&logits, &y)?;
        opt.backward_step(&loss)?;
        let l = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        losses.push(l);
        on_step(step, l);
    }
    // BatchNorm keeps its running statistics in its own variables; copy them into the map.
    for (name, bn) in net.batch_norms() {
        varmap.set_one(format!("{name}.running_mean"), bn.running_mean().copy()?)?;
        varmap.set_one(format!("{name}.running_var"), bn.running_var().copy()?)?;
    }
    Ok(Trained { varmap, losses })
}

/// Re-initialises the weights from `rng` (candle's CPU generator cannot be seeded): He-uniform
/// for convolutions, PyTorch's default uniform for the classifier; BatchNorm keeps 1/0.
pub(crate) fn seeded_init(
    varmap: &VarMap,
    rng: &mut StdRng,
    device: &Device,
) -> candle_core::Result<()> {
    let fc_fan_in = {
        let data = varmap.data().lock().expect("varmap lock");
        data.get("fc1.weight").map(|v| v.dims()[1]).unwrap_or(1)
    };
    seeded_uniform(varmap, rng, device, |name, dims| match (dims.len(), name) {
        (4, _) => Some((6.0 / (dims[1] * dims[2] * dims[3]) as f64).sqrt()),
        (_, "fc1.weight" | "fc1.bias") => Some(1.0 / (fc_fan_in as f64).sqrt()),
        _ => None,
    })
}

/// Sets every variable, in name order, to uniform values in `±bound(name, dims)` drawn from
/// `rng` (zeros for a bound of 0; untouched for `None`).
pub(crate) fn seeded_uniform(
    varmap: &VarMap,
    rng: &mut StdRng,
    device: &Device,
    bound: impl Fn(&str, &[usize]) -> Option<f64>,
) -> candle_core::Result<()> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    for name in names {
        let var = &data[name];
        let Some(b) = bound(name, var.dims()) else {
            continue;
        };
        let values: Vec<f32> = if b > 0.0 {
            (0..var.elem_count())
                .map(|_| rng.gen_range(-b..b) as f32)
                .collect()
        } else {
            vec![0.0; var.elem_count()]
        };
        var.set(&Tensor::from_vec(values, var.shape(), device)?)?;
    }
    Ok(())
}

/// What [`fit_and_save`] measured on the validation split.
#[derive(Debug, Clone)]
pub struct Validation {
    /// Per image: calibrated probability and label.
    pub scored: Vec<Scored>,
    /// Fitted calibration.
    pub calibration: Platt,
    /// Chosen threshold.
    pub threshold: f32,
}

/// Saves the weights and a card with identity calibration (the caller calibrates).
pub fn save(
    trained: &Trained,
    cfg: &TrainConfig,
    training_summary: BTreeMap<String, serde_json::Value>,
    out: &Path,
) -> Result<ModelCard, TrainError> {
    std::fs::create_dir_all(out)?;
    let weights_file = "model.safetensors";
    trained.varmap.save(out.join(weights_file))?;
    let sha = lg_events::sha256_hex(&std::fs::read(out.join(weights_file))?);
    let card = ModelCard {
        name: cfg.name.clone(),
        architecture: ARCHITECTURE.into(),
        parameters: parameter_count(&trained.varmap),
        input: InputSpec {
            crop_size: cfg.crop_size,
            crops_per_image: cfg.crops_per_image,
        },
        normalisation: Normalisation::default(),
        calibration: Platt::default(),
        threshold: 0.5,
        operating_points: Vec::new(),
        weights: WeightsRef {
            file: weights_file.into(),
            sha256: sha,
        },
        training: training_summary,
        metrics: BTreeMap::new(),
    };
    card.save(out)?;
    Ok(card)
}

/// Saves the weights, fits calibration and the threshold on `val` (pre-processed like the
/// training inputs: one JPEG re-encode at quality 90), and writes the model card. For quick
/// experiments: a validation split shares sources with training, so its figures are not
/// quality figures ([`crate::cv`] gives those).
pub fn fit_and_save(
    trained: &Trained,
    cfg: &TrainConfig,
    val: &[(RgbImage, bool)],
    training_summary: BTreeMap<String, serde_json::Value>,
    out: &Path,
    device: &Device,
) -> Result<(ModelCard, Validation), TrainError> {
    let mut card = save(trained, cfg, training_summary, out)?;
    // Score the validation split with the folded inference graph, read back from disk.
    // Calibrated in f32, the reference arithmetic the card describes.
    let det = NprDetector::load_with(out, device.clone(), crate::cpu::Precision::F32)?;
    let imgs: Vec<DynamicImage> = val
        .iter()
        .map(|(i, _)| DynamicImage::ImageRgb8(jpeg_roundtrip(i, 90)))
        .collect();
    let refs: Vec<&DynamicImage> = imgs.iter().collect();
    let logits = det.crop_logits(&refs)?;
    let mut zs = Vec::new();
    let mut ls = Vec::new();
    for (l, (_, ai)) in logits.iter().zip(val) {
        if !l.is_empty() {
            zs.push(l.iter().map(|&z| f64::from(z)).sum::<f64>() / l.len() as f64);
            ls.push(*ai);
        }
    }
    let calibration = Platt::fit(&zs, &ls);
    let scored: Vec<Scored> = zs
        .iter()
        .zip(&ls)
        .map(|(&z, &ai)| Scored {
            probability: calibration.probability(z),
            ai,
            group: String::new(),
        })
        .collect();
    // Operating point: the highest TPR at ≤ 1% FPR on validation, else 0.5.
    let threshold = threshold_at_fpr(&scored, 0.01).unwrap_or(0.5) as f32;
    card.calibration = calibration;
    card.threshold = threshold;
    // The same rates as a cross-validation writes, here on the validation split (which shares
    // sources with training: `train --cv-report` gives out-of-fold points instead).
    let probs: Vec<f64> = scored.iter().map(|s| s.probability).collect();
    card.operating_points = crate::cv::OPERATING_FPRS
        .iter()
        .filter_map(|&fpr| {
            let (t, _) = crate::metrics::operating_point_or_above(&probs, &ls, fpr)?;
            Some(lg_events::ModelOperatingPoint {
                fpr: fpr as f32,
                threshold: t as f32,
            })
        })
        .collect();
    card.save(out)?;
    Ok((
        card,
        Validation {
            scored,
            calibration,
            threshold,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real: smooth noise. AI: the same kind of noise at half resolution, up-sampled 2× with
    /// nearest neighbour: exactly the trace NPR looks for.
    fn toy_set(n: usize) -> Vec<(RgbImage, bool)> {
        let mut rng = StdRng::seed_from_u64(3);
        let mut noise = |w: u32, h: u32| {
            RgbImage::from_fn(w, h, |_, _| image::Rgb([rng.gen(), rng.gen(), rng.gen()]))
        };
        (0..n)
            .flat_map(|_| {
                let real = noise(32, 32);
                let small = noise(16, 16);
                let ai =
                    image::imageops::resize(&small, 32, 32, image::imageops::FilterType::Nearest);
                [(real, false), (ai, true)]
            })
            .collect()
    }

    #[test]
    fn a_tiny_training_run_lowers_the_loss_and_round_trips() {
        let data = toy_set(6);
        // Without augmentation the toy classes differ exactly by the NPR trace.
        let cfg = TrainConfig {
            train_crop: 32,
            crop_size: 32,
            crops_per_image: 1,
            batch: 8,
            steps: 30,
            lr: 1e-3,
            augment: false,
            ..Default::default()
        };
        let dev = Device::Cpu;
        let trained = train(&TrainImage::ungrouped(&data), &cfg, &dev, &mut |_, _| {}).unwrap();
        let first: f32 = trained.losses[..5].iter().sum::<f32>() / 5.0;
        let last: f32 = trained.losses[cfg.steps - 5..].iter().sum::<f32>() / 5.0;
        assert!(
            last < first * 0.8,
            "loss did not drop: first {first:.4}, last {last:.4}"
        );

        let dir = std::env::temp_dir().join(format!("lg-train-{}", std::process::id()));
        let (card, val) =
            fit_and_save(&trained, &cfg, &toy_set(3), BTreeMap::new(), &dir, &dev).unwrap();
        assert_eq!(val.scored.len(), 6);
        assert!(card.calibration.a > 0.0);
        assert!(val
            .scored
            .iter()
            .all(|s| (0.0..=1.0).contains(&s.probability)));
        // Reloads with the hash check, and a tampered file is refused.
        NprDetector::load(&dir, dev.clone()).unwrap();
        let w = dir.join(&card.weights.file);
        let mut bytes = std::fs::read(&w).unwrap();
        let last_byte = bytes.len() - 1;
        bytes[last_byte] ^= 1;
        std::fs::write(&w, bytes).unwrap();
        let err = NprDetector::load(&dir, dev).unwrap_err().to_string();
        assert!(err.contains("do not match the model card"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn training_is_reproducible() {
        let data = toy_set(2);
        let cfg = TrainConfig {
            train_crop: 32,
            batch: 4,
            steps: 3,
            ..Default::default()
        };
        let losses = || {
            train(
                &TrainImage::ungrouped(&data),
                &cfg,
                &Device::Cpu,
                &mut |_, _| {},
            )
            .unwrap()
            .losses
        };
        let (a, b) = (losses(), losses());
        assert_eq!(a, b);
    }

    #[test]
    fn the_learning_rate_warms_up_then_decays() {
        let lr = |s| learning_rate(1.0, s, 100);
        assert!(lr(0) < lr(4));
        assert!((lr(5) - 1.0).abs() < 1e-9);
        assert!(lr(50) < lr(5) && lr(99) < lr(50));
        assert!((lr(99) - 0.05).abs() < 0.01);
    }

    #[test]
    fn refuses_one_class() {
        let data: Vec<(RgbImage, bool)> = toy_set(2).into_iter().filter(|(_, ai)| !ai).collect();
        let e = train(
            &TrainImage::ungrouped(&data),
            &TrainConfig::default(),
            &Device::Cpu,
            &mut |_, _| {},
        )
        .err()
        .unwrap();
        assert!(matches!(e, TrainError::NotEnoughData { real: 2, ai: 0 }));
    }
}
