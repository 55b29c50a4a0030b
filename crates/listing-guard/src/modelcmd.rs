//! `listing-guard train`, `cross-validate` and `eval`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use image::RgbImage;
use lg_model::cv::{self, CvConfig, CvReport};
use lg_model::data::{self, Sample};
use lg_model::eval::{self, Metrics};
use lg_model::train::{self, TrainConfig, TrainImage};

/// The file beside a model's card listing the SHA-256 of every file it trained on, one per
/// line: `eval` refuses to call figures on those files quality figures.
pub const TRAINED_ON: &str = "trained-on.sha256";

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
    /// A `cross-validate` report of the same recipe: train on every file (no split) and take
    /// the calibration, the operating points and the quality figures from the report's
    /// out-of-fold predictions.
    #[arg(long)]
    pub cv_report: Option<PathBuf>,
}

impl TrainArgs {
    fn config(&self) -> TrainConfig {
        let name = self.name.clone().unwrap_or_else(|| {
            self.out
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "npr".into())
        });
        TrainConfig {
            name,
            train_crop: self.train_crop,
            crop_size: self.crop,
            crops_per_image: self.crops,
            batch: self.batch,
            steps: self.steps,
            lr: self.lr,
            seed: self.seed,
            ..TrainConfig::default()
        }
    }
}

/// Options of `cross-validate`.
#[derive(Debug, Clone, clap::Args)]
pub struct CrossValidateArgs {
    /// The recipe, as for `train` (`--out` is the work folder: fold models, report, scores).
    #[command(flatten)]
    pub train: TrainArgs,
    /// Folds (at least 2); whole sources and families are dealt to them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..))]
    pub folds: u16,
    /// Real sources that are e-commerce-like (garments, people, products), reported apart;
    /// comma-separated group names.
    #[arg(long, value_delimiter = ',')]
    pub ecommerce: Vec<String>,
    /// Reuse fold models already in the work folder when their cards name the same fold and
    /// recipe (resumes an interrupted run; the scoring is redone).
    #[arg(long)]
    pub resume: bool,
}

/// Options of `train-features`.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainFeaturesArgs {
    /// Folder with real/ and ai/ subfolders.
    #[arg(long)]
    pub data: PathBuf,
    /// Output model directory (model.json, cv-report.json, trained-on.sha256).
    #[arg(long)]
    pub out: PathBuf,
    /// Work folder of the cross-validation (report.json, oof.json, ensemble-report.json).
    #[arg(long, default_value = "target/cv-features")]
    pub work: PathBuf,
    /// Folds (at least 2); whole sources and families are dealt to them, as `cross-validate`
    /// deals them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(2..))]
    pub folds: u16,
    /// Real sources that are e-commerce-like, reported apart; comma-separated group names.
    #[arg(long, value_delimiter = ',')]
    pub ecommerce: Vec<String>,
    /// Augmented training crops per image.
    #[arg(long, default_value_t = 8)]
    pub train_crops: usize,
    /// Inverse L2 strength of the logistic regression.
    #[arg(long, default_value_t = 0.1)]
    pub c: f64,
    /// Seed of the augmentation.
    #[arg(long, default_value_t = 17)]
    pub seed: u64,
    /// The calibration saturates the mean logit to `s·tanh(z/s)` before Platt's map (0: no
    /// saturation).
    #[arg(long, default_value_t = 3.0)]
    pub saturation: f64,
    /// Out-of-fold scores of a `cross-validate` run on the same data (its `oof.json`): also
    /// report the two models combined (the folds must be the same: not with `--families`).
    #[arg(long, conflicts_with = "families")]
    pub npr_oof: Option<PathBuf>,
    /// Generator families (`models/families.tsv`): folds hold out whole families instead of
    /// whole folders, and the report's groups are the families.
    #[arg(long)]
    pub families: Option<PathBuf>,
    /// Also write every file's feature rows (training crops and clean scoring crops) with its
    /// group, label and fold, one JSON object per line, for analysis outside the project.
    #[arg(long)]
    pub dump_rows: Option<PathBuf>,
}

/// Runs `train-features`: the feature model's cross-validation (whole folders, dealt as
/// `cross-validate` deals them, or whole families with `--families`), then the fit on every
/// file, calibrated and given operating points from the out-of-fold scores.
pub fn train_features(a: &TrainFeaturesArgs) -> anyhow::Result<CvReport> {
    use lg_model::features::{self, FeatureCard, FeatureRecipe};
    let mut samples = data::list(&a.data)?;
    if let Some(p) = &a.families {
        let text =
            std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
        data::Families::parse(&text)
            .and_then(|f| f.apply(&a.data, &mut samples))
            .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
    }
    let refs: Vec<&Sample> = samples.iter().collect();
    let (loaded, skipped) = load_all(&refs);
    let recipe = FeatureRecipe {
        crops_per_image: a.train_crops,
        c: a.c,
        seed: a.seed,
        saturation: (a.saturation > 0.0).then_some(a.saturation),
        ..FeatureRecipe::default()
    };
    let cfg = CvConfig {
        folds: usize::from(a.folds),
        ecommerce_groups: a.ecommerce.clone(),
        saturation: recipe.saturation,
        ..CvConfig::default()
    };
    let kept: Vec<Sample> = loaded.iter().map(|l| l.sample.clone()).collect();
    let fold_of = cv::assign_folds(&kept, cfg.folds, cfg.seed)?;
    eprintln!(
        "feature model: cross-validating on {} images ({} groups, {} skipped), {} folds of whole groups",
        loaded.len(),
        fold_of.len(),
        skipped.len(),
        cfg.folds
    );
    let t0 = std::time::Instant::now();
    let images: Vec<&RgbImage> = loaded.iter().map(|l| &l.image).collect();
    let rows = features::training_rows_all(&recipe, &images);
    if let Some(p) = &a.dump_rows {
        dump_rows(p, &loaded, &rows, &fold_of, &recipe)?;
    }
    let (oof, _) = cv::run_features(&loaded, &rows, &fold_of, &recipe, &cfg)?;
    let mut report = cv::report(&oof, &cfg, &fold_of);
    report.recipe = recipe.describe();
    report.recipe["grouping"] = serde_json::json!(match &a.families {
        Some(p) => format!("leave-family-out: the families of {}", p.display()),
        None => "leave-source-out: the first folder under real/ or ai/".to_owned(),
    });
    std::fs::create_dir_all(&a.work)?;
    let write = |name: &str, json: String| -> anyhow::Result<()> {
        std::fs::write(a.work.join(name), json + "\n")?;
        Ok(())
    };
    write("oof.json", serde_json::to_string_pretty(&oof)?)?;
    write("report.json", serde_json::to_string_pretty(&report)?)?;
    print_cv(&report);
    eprintln!("cross-validation took {:.0} s", t0.elapsed().as_secs_f64());
    if let Some(p) = &a.npr_oof {
        let npr: Vec<cv::OofScore> = serde_json::from_str(
            &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
        )
        .with_context(|| format!("{} is not a cross-validate oof.json", p.display()))?;
        let (combined, platts) = cv::ensemble(&[&npr, &oof])
            .with_context(|| format!("{} was not made on the same files and folds", p.display()))?;
        let mut er = cv::report(&combined, &cfg, &fold_of);
        er.recipe = serde_json::json!({
            "ensemble": "sum of the members' calibrated log-odds (each fold's member Platts fitted on the other folds' scores), Platt on top",
            "members": [p.display().to_string(), recipe.describe()],
            "member_calibrations": platts,
        });
        write("ensemble-report.json", serde_json::to_string_pretty(&er)?)?;
        println!("\nensemble (NPR + features):");
        print_cv(&er);
    }
    // The shipped fit: every file, on the rows the folds used.
    let rows: Vec<&[Vec<f32>]> = rows.iter().map(Vec::as_slice).collect();
    let labels: Vec<bool> = loaded.iter().map(|l| l.sample.ai).collect();
    let model = features::fit_images(&rows, &labels, recipe.c)?;
    let name = a.out.file_name().map_or_else(
        || "residual-lr".into(),
        |n| n.to_string_lossy().into_owned(),
    );
    let card = FeatureCard {
        name,
        architecture: features::FEATURE_ARCHITECTURE.into(),
        input: lg_model::card::InputSpec {
            crop_size: recipe.crop_size,
            crops_per_image: recipe.score_crops,
        },
        model,
        calibration: report.calibration,
        operating_points: card_operating_points(&report),
        training: BTreeMap::from([
            (
                "data".into(),
                serde_json::json!(a.data.display().to_string()),
            ),
            (
                "train_files".into(),
                counts(&loaded.iter().map(|l| l.sample).collect::<Vec<_>>()),
            ),
            ("skipped".into(), serde_json::json!(skipped)),
            ("recipe".into(), report.recipe.clone()),
        ]),
        metrics: BTreeMap::from([("cross_validation".into(), card_figures(&report))]),
    };
    card.save(&a.out)?;
    std::fs::write(
        a.out.join("cv-report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    write_trained_on(&a.out, &loaded)?;
    println!("wrote {}", a.out.display());
    Ok(report)
}

fn dump_rows(
    path: &std::path::Path,
    loaded: &[cv::Loaded<'_>],
    rows: &[Vec<Vec<f32>>],
    fold_of: &BTreeMap<String, usize>,
    recipe: &lg_model::features::FeatureRecipe,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
    );
    for (l, r) in loaded.iter().zip(rows) {
        let line = serde_json::json!({
            "path": l.sample.path,
            "group": l.sample.group,
            "ai": l.sample.ai,
            "fold": fold_of[&l.sample.group],
            "train": r,
            "score": recipe.scoring_rows(&l.image),
        });
        writeln!(w, "{line}")?;
    }
    w.flush()?;
    Ok(())
}

fn load_all<'a>(samples: &[&'a Sample]) -> (Vec<cv::Loaded<'a>>, Vec<String>) {
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for s in samples {
        match data::load_rgb(&s.path) {
            Ok(image) if image.width() >= 32 && image.height() >= 32 => {
                ok.push(cv::Loaded { sample: s, image })
            }
            Ok(_) => skipped.push(format!("{}: smaller than 32 px", s.path.display())),
            Err(e) => skipped.push(e),
        }
    }
    for e in &skipped {
        tracing::warn!("skipping {e}");
    }
    (ok, skipped)
}

fn train_images<'a>(loaded: &'a [cv::Loaded<'_>]) -> Vec<TrainImage<'a>> {
    loaded
        .iter()
        .map(|l| TrainImage {
            image: &l.image,
            ai: l.sample.ai,
            group: &l.sample.group,
        })
        .collect()
}

fn progress_bar(steps: usize) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(steps as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} steps  loss {msg}  {per_sec}  eta {eta}",
        )
        .expect("valid template"),
    );
    bar
}

/// Mean of the last 20 losses, shown on the bar.
fn loss_reporter(bar: &indicatif::ProgressBar) -> impl FnMut(usize, f32) -> f32 + '_ {
    let mut recent: Vec<f32> = Vec::new();
    move |_, loss| {
        recent.push(loss);
        if recent.len() > 20 {
            recent.remove(0);
        }
        let mean = recent.iter().sum::<f32>() / recent.len() as f32;
        bar.set_message(format!("{mean:.4}"));
        bar.inc(1);
        mean
    }
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
    let cfg = a.config();
    let report: Option<CvReport> = match &a.cv_report {
        Some(p) => {
            let r: CvReport = serde_json::from_str(
                &std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?,
            )
            .with_context(|| format!("{} is not a cross-validate report", p.display()))?;
            anyhow::ensure!(
                r.recipe == cfg.recipe(),
                "{} was made with another recipe ({}); cross-validate with the same options",
                p.display(),
                r.recipe
            );
            Some(r)
        }
        None => None,
    };
    // With a cross-validation report every file trains; otherwise a validation split
    // calibrates (quick experiments: its figures share sources with training).
    let (val, tr) = if report.is_some() {
        (Vec::new(), samples.iter().collect())
    } else {
        data::split(&samples, a.val_fraction, a.seed)
    };
    let (train_set, mut skipped) = load_all(&tr);
    let (val_set, skipped_val) = load_all(&val);
    skipped.extend(skipped_val);
    eprintln!(
        "training {} on {} images ({} real, {} AI, {} groups), validating on {}; {} steps of {}",
        cfg.name,
        train_set.len(),
        train_set.iter().filter(|l| !l.sample.ai).count(),
        train_set.iter().filter(|l| l.sample.ai).count(),
        counts(&tr).as_object().map_or(0, |m| m.len()),
        val_set.len(),
        cfg.steps,
        cfg.batch
    );
    let bar = progress_bar(cfg.steps);
    let mut report_loss = loss_reporter(&bar);
    let mut last_loss = 0.0;
    let device = lg_model::device()?;
    let trained = train::train(
        &train_images(&train_set),
        &cfg,
        &device,
        &mut |step, loss| {
            last_loss = report_loss(step, loss);
        },
    )?;
    bar.finish();
    let mut summary = BTreeMap::new();
    summary.insert(
        "data".into(),
        serde_json::json!(a.data.display().to_string()),
    );
    summary.insert("train_files".into(), counts(&tr));
    summary.insert("skipped".into(), serde_json::json!(skipped));
    let mut recipe = cfg.recipe();
    recipe["final_loss_mean_last_20"] = serde_json::json!(last_loss);
    summary.insert("recipe".into(), recipe);
    let card = match &report {
        Some(r) => {
            let mut card = train::save(&trained, &cfg, summary, &a.out)?;
            card.calibration = r.calibration;
            card.operating_points = card_operating_points(r);
            // The card's single threshold: the 1% FPR operating point.
            card.threshold = r
                .operating_points
                .iter()
                .find(|op| (op.fpr - 0.01).abs() < 1e-9)
                .map_or(0.5, |op| op.threshold as f32);
            card.metrics
                .insert("leave_source_out".into(), card_figures(r));
            card
        }
        None => {
            let val_pairs: Vec<(RgbImage, bool)> = val_set
                .into_iter()
                .map(|l| (l.image, l.sample.ai))
                .collect();
            let mut summary = summary;
            summary.insert("validation_files".into(), counts(&val));
            let (mut card, validation) =
                train::fit_and_save(&trained, &cfg, &val_pairs, summary, &a.out, &device)?;
            let m = Metrics::of(&validation.scored, f64::from(validation.threshold));
            card.metrics.insert(
                "validation_split_not_quality".into(),
                serde_json::to_value(&m)?,
            );
            card
        }
    };
    card.save(&a.out)?;
    write_trained_on(&a.out, &train_set)?;
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

/// A report's operating points as a card records them.
fn card_operating_points(r: &CvReport) -> Vec<lg_events::ModelOperatingPoint> {
    r.operating_points
        .iter()
        .map(|op| lg_events::ModelOperatingPoint {
            fpr: op.fpr as f32,
            threshold: op.threshold as f32,
        })
        .collect()
}

/// A report's figures as a card records them.
fn card_figures(r: &CvReport) -> serde_json::Value {
    serde_json::json!({
        "folds": r.folds,
        "clean": r.clean,
        "confound_matched": r.confound_matched,
        "jpeg75_half": r.degraded,
        "operating_points": r.operating_points,
        "ecommerce_real": { "files": r.ecommerce_real_files, "flagged_at_fpr": r.ecommerce_real },
        "precision_vs_f32": r.precision,
        "ece_cross_fitted": r.ece_cross_fitted,
        "groups": r.groups,
    })
}

fn write_trained_on(out: &Path, set: &[cv::Loaded<'_>]) -> anyhow::Result<()> {
    let mut lines: Vec<String> = set
        .iter()
        .filter_map(|l| std::fs::read(&l.sample.path).ok())
        .map(|b| lg_events::sha256_hex(&b))
        .collect();
    lines.sort();
    lines.dedup();
    std::fs::write(out.join(TRAINED_ON), lines.join("\n") + "\n")?;
    Ok(())
}

/// Runs `cross-validate`: trains each fold, scores the held-out groups, pools, writes
/// `<out>/report.json` and `<out>/oof.json`, and prints the table.
pub fn cross_validate(a: &CrossValidateArgs) -> anyhow::Result<CvReport> {
    let samples = data::list(&a.train.data)?;
    let refs: Vec<&Sample> = samples.iter().collect();
    let (loaded, skipped) = load_all(&refs);
    let cfg = CvConfig {
        folds: usize::from(a.folds),
        train: a.train.config(),
        ecommerce_groups: a.ecommerce.clone(),
        reuse_folds: a.resume,
        ..CvConfig::default()
    };
    let kept: Vec<Sample> = loaded.iter().map(|l| l.sample.clone()).collect();
    let fold_of = cv::assign_folds(&kept, cfg.folds, cfg.seed)?;
    eprintln!(
        "cross-validating on {} images ({} groups, {} skipped), {} folds of whole groups; {} steps of {} per fold",
        loaded.len(),
        fold_of.len(),
        skipped.len(),
        cfg.folds,
        cfg.train.steps,
        cfg.train.batch
    );
    let device = lg_model::device()?;
    let bar = progress_bar(cfg.train.steps * cfg.folds);
    let mut report_loss = loss_reporter(&bar);
    let work = &a.train.out;
    std::fs::create_dir_all(work)?;
    let oof = cv::run(&loaded, &cfg, &device, work, &mut |_, step, loss| {
        report_loss(step, loss);
    })?;
    bar.finish();
    let mut report = cv::report(&oof, &cfg, &fold_of);
    // The engine's reduced-precision arithmetics against the f32 the report is computed in.
    report.precision = cv::precision_check(
        &loaded,
        &oof,
        &report,
        &device,
        work,
        &[
            lg_model::cpu::Precision::Bf16,
            lg_model::cpu::Precision::Int8,
        ],
    )?;
    std::fs::write(
        work.join("oof.json"),
        serde_json::to_string_pretty(&oof)? + "\n",
    )?;
    std::fs::write(
        work.join("report.json"),
        serde_json::to_string_pretty(&report)? + "\n",
    )?;
    print_cv(&report);
    println!("report: {}", work.join("report.json").display());
    Ok(report)
}

fn fmt(v: Option<f64>) -> String {
    v.map_or_else(|| "  n/a".to_owned(), |x| format!("{x:.3}"))
}

/// Prints a cross-validation report as tables.
pub fn print_cv(r: &CvReport) {
    let grouping = r.recipe["grouping"]
        .as_str()
        .map_or("leave-source-out", |g| g.split(':').next().unwrap_or(g));
    println!("{grouping}, {} folds, pooled out of fold:", r.folds);
    for (name, f) in [
        ("clean", &r.clean),
        ("confound-matched", &r.confound_matched),
        ("jpeg75+0.5x", &r.degraded),
    ] {
        println!(
            "  {name:<17} real {:>4} ai {:>4}  AP {}  ROC-AUC {}  TPR@1%FPR {}  ECE {}",
            f.real,
            f.ai,
            fmt(f.ap),
            fmt(f.roc_auc),
            fmt(f.tpr_at_1pct_fpr),
            fmt(f.ece)
        );
    }
    println!(
        "  calibration a={:.3} b={:.3} (ECE with each fold calibrated on the others: {}); operating points:",
        r.calibration.a,
        r.calibration.b,
        fmt(r.ece_cross_fitted)
    );
    for op in &r.operating_points {
        println!(
            "    FPR {:>5.1}%: threshold {:.4} (real flagged {:.2}%, AI caught {:.1}%)",
            op.fpr * 100.0,
            op.threshold,
            op.fpr_reached * 100.0,
            op.tpr * 100.0
        );
    }
    println!(
        "  e-commerce-like real photos ({} files) flagged: {}",
        r.ecommerce_real_files,
        r.ecommerce_real
            .iter()
            .map(|(f, x)| format!("{:.2}% at the {}% point", x * 100.0, f * 100.0))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for p in &r.precision {
        println!(
            "  {:<17} AP {} (Δ vs f32 {:+.4}), max |Δ probability| {:.4}, {} flips at the 1% point",
            p.kernel,
            fmt(p.ap),
            p.ap_delta.unwrap_or(f64::NAN),
            p.max_probability_delta,
            p.flips_at_1pct
        );
    }
    println!(
        "  {:<28} {:>4} {:>4} {:>4}  {:>5}  {:>7}  {:>9}  {:>9}  {:>5}",
        "held-out group", "cls", "n", "fold", "AP", "ROC-AUC", "TPR@1%", "FPR@1%pt", "ECE"
    );
    for g in &r.groups {
        println!(
            "  {:<28} {:>4} {:>4} {:>4}  {:>5}  {:>7}  {:>9}  {:>9}  {:.3}",
            g.group,
            g.class,
            g.n,
            g.fold,
            fmt(g.ap),
            fmt(g.roc_auc),
            fmt(g.tpr_at_1pct_fpr),
            fmt(g.fpr_at_1pct_point),
            g.ece
        );
    }
}

/// Runs `eval`; returns the report's path.
pub fn eval(
    data_dir: &Path,
    model_dir: &Path,
    report: Option<&Path>,
    precision: lg_model::cpu::Precision,
) -> anyhow::Result<PathBuf> {
    let (det, kernel) = lg_model::load_any(model_dir, lg_model::device()?, precision)
        .with_context(|| format!("loading {}", model_dir.display()))?;
    let samples = data::list(data_dir)?;
    println!("engine: {kernel}");
    // Figures on files the model trained on are training-set figures, not quality.
    let trained_on: std::collections::HashSet<String> =
        std::fs::read_to_string(model_dir.join(TRAINED_ON))
            .map(|t| t.lines().map(str::to_owned).collect())
            .unwrap_or_default();
    let seen = samples
        .iter()
        .filter(|s| {
            std::fs::read(&s.path).is_ok_and(|b| trained_on.contains(&lg_events::sha256_hex(&b)))
        })
        .count();
    if seen > 0 {
        println!(
            "WARNING: the model trained on {seen} of these {} files: these are training-set figures, not quality figures (see `cross-validate`)",
            samples.len()
        );
    }
    let mut r = eval::evaluate(det.as_ref(), &samples);
    r.trained_on_files = seen;
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
