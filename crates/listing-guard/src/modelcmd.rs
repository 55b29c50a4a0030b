//! `listing-guard train` and `listing-guard eval`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use image::RgbImage;
use lg_model::data::{self, Sample};
use lg_model::eval::{self, Metrics};
use lg_model::train::{self, TrainConfig};

/// Options of `train`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainArgs {
    /// Folder with real/ and ai/ subfolders.
    #[arg(long)]
    pub data: PathBuf,
    /// Output model directory (model.json + model.safetensors).
    #[arg(long)]
    pub out: PathBuf,
    /// Model name written to the card (default: the output folder's name).
    #[arg(long)]
    pub name: Option<String>,
    /// Optimisation steps.
    #[arg(long, default_value_t = 300)]
    pub steps: usize,
    /// Images per step (half real, half AI).
    #[arg(long, default_value_t = 16)]
    pub batch: usize,
    /// Training crop side.
    #[arg(long, default_value_t = 96)]
    pub train_crop: u32,
    /// Inference crop side written to the card.
    #[arg(long, default_value_t = 224)]
    pub crop: u32,
    /// Inference crops per image written to the card.
    #[arg(long, default_value_t = 5)]
    pub crops: u32,
    /// AdamW learning rate.
    #[arg(long, default_value_t = 1e-3)]
    pub lr: f64,
    /// Fraction of files held out for validation and calibration.
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Seed for initialisation, sampling, augmentation and the split.
    #[arg(long, default_value_t = 17)]
    pub seed: u64,
}

fn load_all(samples: &[&Sample]) -> (Vec<(RgbImage, bool)>, Vec<String>) {
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for s in samples {
        match data::load_rgb(&s.path) {
            Ok(img) if img.width() >= 32 && img.height() >= 32 => ok.push((img, s.ai)),
            Ok(_) => skipped.push(format!("{}: smaller than 32 px", s.path.display())),
            Err(e) => skipped.push(e),
        }
    }
    (ok, skipped)
}

fn counts(samples: &[&Sample]) -> serde_json::Value {
    let mut m: BTreeMap<String, usize> = BTreeMap::new();
    for s in samples {
        *m.entry(s.group.clone()).or_default() += 1;
    }
    serde_json::to_value(m).expect("counts serialise")
}

/// Runs `train`.
pub fn train(a: &TrainArgs) -> anyhow::Result<()> {
    let samples = data::list(&a.data)?;
    let (val, tr) = data::split(&samples, a.val_fraction, a.seed);
    let (train_imgs, mut skipped) = load_all(&tr);
    let (val_imgs, skipped_val) = load_all(&val);
    skipped.extend(skipped_val);
    for s in &skipped {
        tracing::warn!("skipping {s}");
    }
    let name = a.name.clone().unwrap_or_else(|| {
        a.out
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "npr".into())
    });
    let cfg = TrainConfig {
        name,
        train_crop: a.train_crop,
        crop_size: a.crop,
        crops_per_image: a.crops,
        batch: a.batch,
        steps: a.steps,
        lr: a.lr,
        seed: a.seed,
        ..TrainConfig::default()
    };
    eprintln!(
        "training {} on {} images ({} real, {} AI), validating on {}; {} steps of {}",
        cfg.name,
        train_imgs.len(),
        train_imgs.iter().filter(|(_, ai)| !ai).count(),
        train_imgs.iter().filter(|(_, ai)| *ai).count(),
        val_imgs.len(),
        cfg.steps,
        cfg.batch
    );
    let bar = indicatif::ProgressBar::new(cfg.steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps  loss {msg}  {per_sec}  eta {eta}",
        )
        .expect("valid template"),
    );
    let device = lg_model::device()?;
    let mut recent = Vec::new();
    let trained = train::train(&train_imgs, &cfg, &device, &mut |_, loss| {
        recent.push(loss);
        if recent.len() > 20 {
            recent.remove(0);
        }
        bar.set_message(format!(
            "{:.4}",
            recent.iter().sum::<f32>() / recent.len() as f32
        ));
        bar.inc(1);
    })?;
    bar.finish();
    let mut summary = BTreeMap::new();
    summary.insert(
        "data".into(),
        serde_json::json!(a.data.display().to_string()),
    );
    summary.insert("train_files".into(), counts(&tr));
    summary.insert("validation_files".into(), counts(&val));
    summary.insert("skipped".into(), serde_json::json!(skipped));
    summary.insert(
        "recipe".into(),
        serde_json::json!({
            "steps": cfg.steps, "batch": cfg.batch, "train_crop": cfg.train_crop, "optimizer": "AdamW",
            "lr": cfg.lr, "weight_decay": cfg.weight_decay, "seed": cfg.seed, "val_fraction": a.val_fraction,
            "augmentation": "same for both classes: random region; p=0.5 downscale 0.5-1x; p=0.3 Gaussian blur sigma 0.1-1.5; JPEG re-encode q60-100 always; random crop",
            "final_loss_mean_last_20": recent.iter().sum::<f32>() / recent.len().max(1) as f32,
        }),
    );
    let (mut card, validation) =
        train::fit_and_save(&trained, &cfg, &val_imgs, summary, &a.out, &device)?;
    let m = Metrics::of(&validation.scored, f64::from(validation.threshold));
    card.metrics
        .insert("validation".into(), serde_json::to_value(&m)?);
    card.save(&a.out)?;
    println!("{}", serde_json::to_string_pretty(&card.metrics)?);
    println!(
        "wrote {} (threshold {:.3}, calibration a={:.3} b={:.3})",
        a.out.display(),
        card.threshold,
        card.calibration.a,
        card.calibration.b
    );
    Ok(())
}

/// Runs `eval`; returns the report's path.
pub fn eval(
    data_dir: &Path,
    model_dir: &Path,
    report: Option<&Path>,
    precision: lg_model::cpu::Precision,
) -> anyhow::Result<PathBuf> {
    let det = lg_model::infer::NprDetector::load_with(model_dir, lg_model::device()?, precision)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let samples = data::list(data_dir)?;
    println!("engine: {}", det.kernel());
    let r = eval::evaluate(&det, &samples);
    let fmt = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.4}"));
    for (name, m) in [("clean", &r.clean), ("jpeg75+0.5x", &r.robust_jpeg75_half)] {
        println!(
            "{name:<12} real {:>4}  ai {:>4}  AP {}  ROC-AUC {}  acc@{:.3} {}  TPR@1%FPR {}  ECE {}",
            m.real, m.ai, fmt(m.ap), fmt(m.roc_auc), r.threshold, fmt(m.accuracy), fmt(m.tpr_at_1pct_fpr), fmt(m.ece)
        );
    }
    for (g, m) in &r.per_generator {
        println!(
            "  ai/{g:<20} n {:>4}  AP {}  TPR@1%FPR {}",
            m.ai,
            fmt(m.ap),
            fmt(m.tpr_at_1pct_fpr)
        );
    }
    if !r.skipped.is_empty() {
        println!("skipped {} files", r.skipped.len());
    }
    let path = report
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target/eval-report.json"));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, serde_json::to_string_pretty(&r)? + "\n")?;
    println!("report: {}", path.display());
    Ok(path)
}

/// Runs `make-pairs`: trains the generator-style decoder on `data/real/**` and writes each real
/// photo's reconstruction to `data/ai/bfree/`.
pub fn make_pairs(data_dir: &Path, steps: usize, seed: u64) -> anyhow::Result<()> {
    let reals: Vec<Sample> = data::list(data_dir)?
        .into_iter()
        .filter(|s| !s.ai)
        .collect();
    let mut images = Vec::new();
    for s in &reals {
        match data::load_rgb(&s.path) {
            Ok(i) => images.push((s.path.clone(), i)),
            Err(e) => tracing::warn!("skipping {e}"),
        }
    }
    let dev = lg_model::device()?;
    let only: Vec<RgbImage> = images.iter().map(|(_, i)| i.clone()).collect();
    let (dec, losses) = lg_model::bfree::train_decoder(&only, steps, seed, &dev)?;
    let mean = |l: &[f32]| l.iter().sum::<f32>() / l.len().max(1) as f32;
    let k = (losses.len() / 10).max(1);
    eprintln!(
        "decoder: mean L1 loss {:.4} (first {k} steps) -> {:.4} (last {k}) over {steps} steps",
        mean(&losses[..k.min(losses.len())]),
        mean(&losses[losses.len().saturating_sub(k)..])
    );
    let out = data_dir.join("ai").join(data::BFREE_GROUP);
    std::fs::create_dir_all(&out)?;
    for (path, img) in &images {
        let rec = lg_model::bfree::reconstruct(&dec, img, &dev)?;
        rec.save(out.join(data::pair_name(path)))?;
    }
    println!(
        "wrote {} reconstructions to {}",
        images.len(),
        out.display()
    );
    Ok(())
}
