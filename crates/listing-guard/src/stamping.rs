//! `listing-guard stamp`: the GB 45438 labels a propagating platform adds to a file, the
//! implicit one (XMP `TC260:AIGC`, see [`lg_labeler::stamp`]) and, on request, a copy with the
//! visible one (see [`lg_labeler::visible`]).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use lg_events::Tc260Aigc;
use lg_labeler::visible::{self, Corner};

/// Arguments of `listing-guard stamp`.
#[derive(Debug, Clone, clap::Args)]
pub struct StampArgs {
    /// The original (JPEG or PNG).
    pub input: PathBuf,
    /// Where the stamped file goes (same format, same pixels).
    pub output: PathBuf,
    /// `ContentPropagator`: the platform's identifier.
    #[arg(long)]
    pub propagator: String,
    /// `PropagateID`: the platform's id for this content (e.g. listing/image).
    #[arg(long)]
    pub propagate_id: String,
    /// `Label` when the file carries none: 1 generated, 2 possibly, 3 suspected. An existing
    /// label's producer fields are always kept.
    #[arg(long, default_value = "3")]
    pub label: String,
    /// `ContentProducer` when the file carries no label.
    #[arg(long, default_value = "")]
    pub content_producer: String,
    /// `ReservedCode2`, the propagator's reserved field.
    #[arg(long, default_value = "")]
    pub reserved_code2: String,
    /// Also write a copy with the visible label drawn in.
    #[arg(long)]
    pub visible: bool,
    /// Where the visible copy goes; default: OUTPUT with `.visible` before the extension.
    #[arg(long)]
    pub visible_out: Option<PathBuf>,
    /// Visible text: `zh` (AI生成), `en` (AI-generated) or `zh+en`.
    #[arg(long, default_value = "zh+en")]
    pub locale: String,
    /// Corner for the visible label.
    #[arg(long, default_value = "bottom-right")]
    pub corner: Corner,
}

/// The visible text for a policy locale.
pub fn visible_text(locale: &str) -> anyhow::Result<String> {
    if !matches!(locale, "zh" | "en" | "zh+en") {
        bail!("locale {locale:?}: expected zh, en or zh+en");
    }
    let l = lg_labeler::visible_label_for(locale);
    Ok(visible::text_for(&l.zh, &l.en))
}

/// Runs the command; returns the JSON summary it prints.
pub fn run(a: &StampArgs) -> anyhow::Result<serde_json::Value> {
    if !matches!(a.label.as_str(), "1" | "2" | "3") {
        bail!("--label {:?}: expected 1, 2 or 3", a.label);
    }
    if a.propagator.trim().is_empty() || a.propagate_id.trim().is_empty() {
        bail!("--propagator and --propagate-id must not be empty");
    }
    let text = visible_text(&a.locale)?;
    let original =
        std::fs::read(&a.input).with_context(|| format!("reading {}", a.input.display()))?;
    let ours = Tc260Aigc {
        label: a.label.clone(),
        content_producer: a.content_producer.clone(),
        produce_id: String::new(),
        reserved_code1: String::new(),
        content_propagator: a.propagator.clone(),
        propagate_id: a.propagate_id.clone(),
        reserved_code2: a.reserved_code2.clone(),
    };
    let stamped = lg_labeler::stamp::stamp(&original, &ours)
        .with_context(|| format!("stamping {}", a.input.display()))?;
    write(&a.output, &stamped.bytes)?;
    let mut summary = serde_json::json!({
        "output": a.output,
        "had_label": stamped.had_label,
        "label": stamped.label,
    });
    if a.visible || a.visible_out.is_some() {
        // The copy carries the label the stamped file now has, producer fields included.
        let copy = visible::label_copy(&original, &text, a.corner, &stamped.label)
            .with_context(|| format!("visible label for {}", a.input.display()))?;
        let path = a
            .visible_out
            .clone()
            .unwrap_or_else(|| visible_path(&a.output, copy.extension));
        write(&path, &copy.bytes)?;
        let p = copy.placement;
        summary["visible"] = serde_json::json!({
            "output": path,
            "text": text,
            "plate": [p.plate.x, p.plate.y, p.plate.w, p.plate.h],
            "cap_height_px": p.cap_height_px,
        });
    }
    Ok(summary)
}

/// `dir/name.visible.ext` for `dir/name.ext`.
pub fn visible_path(output: &Path, extension: &str) -> PathBuf {
    let stem = output
        .file_stem()
        .map_or_else(|| "image".into(), |s| s.to_string_lossy().into_owned());
    output.with_file_name(format!("{stem}.visible.{extension}"))
}

fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}
