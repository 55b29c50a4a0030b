//! `listing-guard`: run the pipeline, the demo, score files, or write the JSON Schemas.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use listing_guard::config::Settings;

#[derive(Parser)]
#[command(
    name = "listing-guard",
    version,
    about = "Keeps undeclared AI-generated product images off a marketplace, and labels declared ones."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the live pipeline (consume listings, produce decisions, labels and dead letters).
    Run {
        /// Config file (TOML), layered over the defaults and under LISTING_GUARD__* variables.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Zero-setup demo: in-process mock Kafka, local image server, sample listings.
    Demo,
    /// The demo's sample listings against a real broker: serves the images over HTTP and
    /// produces the listings (for docker compose and load demos).
    Feed(listing_guard::demo::FeedArgs),
    /// Print provenance findings for image files, one JSON object per line.
    Score {
        /// Image files.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Learned model directory (overrides detector.model_dir; default: the shipped model).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Metadata only: do not run the learned model.
        #[arg(long, conflicts_with = "model")]
        no_model: bool,
        /// Config file (for decode limits and detector.model_dir).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Train the learned detector on a folder with real/ and ai/ subfolders.
    Train(listing_guard::modelcmd::TrainArgs),
    /// Leave-source-out cross-validation: whole sources and families held out per fold; the
    /// pooled out-of-fold figures, per-group table, calibration and operating points.
    CrossValidate(listing_guard::modelcmd::CrossValidateArgs),
    /// Cross-validate (the same folds) and train the residual-feature model: statistics of the
    /// high-frequency residual and a logistic regression, in plain Rust (a few minutes).
    TrainFeatures(listing_guard::modelcmd::TrainFeaturesArgs),
    /// Write B-Free-style pairs: each real/ photo reconstructed by a self-trained decoder, into ai/bfree/.
    MakePairs {
        /// Folder with real/ (and ai/) subfolders.
        #[arg(long)]
        data: PathBuf,
        /// Decoder training steps.
        #[arg(long, default_value_t = 300)]
        steps: usize,
        /// Seed.
        #[arg(long, default_value_t = 17)]
        seed: u64,
    },
    /// Evaluate a model on a labelled folder (real/, ai/[generator/]); prints and writes a JSON report.
    Eval {
        /// Folder with real/ and ai/ subfolders.
        #[arg(long)]
        data: PathBuf,
        /// Model directory (either kind).
        #[arg(long, default_value = "models/residual-lr")]
        model: PathBuf,
        /// Where to write the JSON report.
        #[arg(long)]
        report: Option<PathBuf>,
        /// The CPU engine's arithmetic: auto, bf16, int8 or f32 (as `detector.precision`).
        #[arg(long, default_value = "auto")]
        precision: String,
    },
    /// Re-audit historical listings of a time window under the current or a candidate policy
    /// and model; decisions go to a re-audit topic, never to the live ones.
    Replay {
        /// Window start (RFC 3339), by record timestamp, inclusive.
        #[arg(long)]
        from: chrono::DateTime<chrono::Utc>,
        /// Window end (RFC 3339), exclusive.
        #[arg(long)]
        to: chrono::DateTime<chrono::Utc>,
        /// Candidate policy file (default: policy.file of the config).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Candidate model directory (default: detector.model_dir of the config).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Where the re-audit decisions go.
        #[arg(long, default_value = listing_guard::replay::REAUDIT_TOPIC)]
        output_topic: String,
        /// Records per second at most.
        #[arg(long)]
        max_rate: Option<f64>,
        /// Run id; an interrupted run resumes when started again with the same id.
        #[arg(long)]
        run_id: Option<String>,
        /// Fetch every image even when its URL is in the score cache.
        #[arg(long)]
        refetch: bool,
        /// Where run checkpoints are kept.
        #[arg(long, default_value = "replay-checkpoints")]
        checkpoint_dir: PathBuf,
        /// When the run completes, join it with the live decisions and write the diff report.
        #[arg(long)]
        compare: bool,
        /// Where the diff report goes.
        #[arg(long, default_value = "reaudit-report")]
        report_dir: PathBuf,
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Diff report of a replay run against the live decisions (transitions, per marketplace and
    /// category, reason codes, sample; JSON, CSV and an SVG chart).
    ReauditReport {
        /// The replay run.
        #[arg(long)]
        run_id: String,
        /// The re-audit topic.
        #[arg(long, default_value = listing_guard::replay::REAUDIT_TOPIC)]
        reaudit_topic: String,
        /// Output directory.
        #[arg(long, default_value = "reaudit-report")]
        out: PathBuf,
        /// Config file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate a config file (and the policy and model it names) without connecting anywhere.
    CheckConfig {
        /// Config file (TOML), layered over the defaults and under LISTING_GUARD__* variables.
        file: PathBuf,
        /// Print the effective configuration, secrets masked.
        #[arg(long)]
        print: bool,
    },
    /// Write the GB 45438 implicit label (XMP `TC260:AIGC`) into a JPEG or PNG without touching
    /// its pixels or other metadata; `--visible` also writes a copy with the visible label.
    Stamp(listing_guard::stamping::StampArgs),
    /// Write the JSON Schemas of the wire contracts.
    Schemas {
        /// Output directory.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The long-running consumers stop cleanly on SIGTERM/SIGINT, even one sent during start-up;
    // every other command keeps the default (terminate at once).
    if matches!(cli.command, Command::Run { .. } | Command::Replay { .. }) {
        listing_guard::pipeline::catch_early_signals();
    }
    // `run` exports spans when its config says so; every other command only logs.
    let run_settings = match &cli.command {
        Command::Run { config } => Some(Settings::load(config.as_deref())?),
        _ => None,
    };
    let _telemetry = listing_guard::otel::init(run_settings.as_ref().map(|s| &s.telemetry))?;
    match cli.command {
        Command::Run { .. } => {
            let settings = run_settings.expect("loaded above");
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(async {
                let shutdown = listing_guard::pipeline::shutdown_on_signals();
                listing_guard::pipeline::run(&settings, shutdown).await
            })?;
        }
        Command::Demo => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(listing_guard::demo::run())?;
        }
        Command::Feed(args) => {
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(listing_guard::demo::feed(&args))?;
        }
        Command::Score {
            files,
            model,
            no_model,
            config,
        } => {
            let mut settings = Settings::load(config.as_deref())?;
            if no_model {
                listing_guard::config::NO_MODEL.clone_into(&mut settings.detector.model_dir);
            } else if let Some(m) = model {
                settings.detector.model_dir = m.display().to_string();
            }
            let detector = settings.detector()?;
            let mut out = std::io::stdout().lock();
            for f in files {
                let line = listing_guard::score::score_file(&detector, &f);
                serde_json::to_writer(&mut out, &line)?;
                out.write_all(b"\n")?;
            }
        }
        Command::Train(args) => listing_guard::modelcmd::train(&args)?,
        Command::CrossValidate(args) => {
            listing_guard::modelcmd::cross_validate(&args)?;
        }
        Command::TrainFeatures(args) => {
            listing_guard::modelcmd::train_features(&args)?;
        }
        Command::MakePairs { data, steps, seed } => {
            listing_guard::modelcmd::make_pairs(&data, steps, seed)?
        }
        Command::Eval {
            data,
            model,
            report,
            precision,
        } => {
            let precision =
                listing_guard::config::parse_precision(&precision).context("--precision")?;
            listing_guard::modelcmd::eval(&data, &model, report.as_deref(), precision)?;
        }
        Command::Replay {
            from,
            to,
            policy,
            model,
            output_topic,
            max_rate,
            run_id,
            refetch,
            checkpoint_dir,
            compare,
            report_dir,
            config,
        } => {
            let mut settings = Settings::load(config.as_deref())?;
            if let Some(p) = policy {
                settings.policy.file = p.display().to_string();
            }
            if let Some(m) = model {
                settings.detector.model_dir = m.display().to_string();
            }
            let args = listing_guard::replay::ReplayArgs {
                from,
                to,
                output_topic,
                max_rate,
                run_id: run_id.unwrap_or_else(listing_guard::replay::new_run_id),
                refetch,
                checkpoint_dir,
            };
            let rt = tokio::runtime::Runtime::new()?;
            let complete = rt.block_on(listing_guard::replay::command(
                &settings,
                &args,
                compare.then_some(report_dir.as_path()),
            ))?;
            if !complete {
                eprintln!(
                    "replay {} interrupted; run again with --run-id {} to resume",
                    args.run_id, args.run_id
                );
                std::process::exit(3);
            }
        }
        Command::ReauditReport {
            run_id,
            reaudit_topic,
            out,
            config,
        } => {
            let settings = Settings::load(config.as_deref())?;
            let rt = tokio::runtime::Runtime::new()?;
            rt.block_on(listing_guard::replay::report_command(
                &settings,
                &run_id,
                &reaudit_topic,
                &out,
            ))?;
        }
        Command::CheckConfig { file, print } => {
            let settings = Settings::load(Some(&file))?;
            let policy = settings.load_policy()?;
            let detector = settings.detector()?;
            listing_guard::pipeline::check_operating_points(&policy, &detector)?;
            if print {
                print!("{}", settings.masked_toml()?);
            }
            println!(
                "config OK: {} (policy {}, model {}{})",
                file.display(),
                policy.version(),
                detector.model_version().unwrap_or("none"),
                settings
                    .model_dir()
                    .map(|d| format!(" from {}", d.display()))
                    .unwrap_or_default()
            );
        }
        Command::Stamp(args) => {
            let summary = listing_guard::stamping::run(&args)?;
            println!("{}", serde_json::to_string_pretty(&summary)?);
        }
        Command::Schemas { out } => {
            std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
            for (name, text) in lg_events::schemas() {
                let path = out.join(name);
                std::fs::write(&path, text)
                    .with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
    }
    Ok(())
}
