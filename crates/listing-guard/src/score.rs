//! `listing-guard score FILE...`: one JSON object per file (JSON Lines).

use std::path::Path;

use lg_detector::Detector;
use lg_events::{ModelScore, Provenance};
use serde::Serialize;

/// One output line.
#[derive(Debug, Serialize)]
pub struct ScoreLine {
    /// The file as given.
    pub path: String,
    /// SHA-256 of its bytes, when it could be read.
    pub sha256: Option<String>,
    /// Metadata findings.
    pub provenance: Provenance,
    /// Width and height, when decoded.
    pub dimensions: Option<[u32; 2]>,
    /// Calibrated AI probability from the pixel model; null until a model is configured.
    pub ai_probability: Option<f32>,
    /// The full model score (crops, aggregates); null until a model is configured.
    pub model: Option<ModelScore>,
    /// Why the file could not be read or decoded.
    pub error: Option<String>,
}

/// Scores one file.
pub fn score_file(detector: &Detector, path: &Path) -> ScoreLine {
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return ScoreLine {
                path: shown,
                sha256: None,
                provenance: Provenance::default(),
                dimensions: None,
                ai_probability: None,
                model: None,
                error: Some(format!("cannot read file: {e}")),
            }
        }
    };
    let a = detector.analyse(&bytes);
    let (dimensions, error) = match &a.decoded {
        Ok(i) => (Some([i.width, i.height]), None),
        Err(e) => (None, Some(format!("{}: {e}", e.class()))),
    };
    ScoreLine {
        path: shown,
        sha256: Some(a.sha256),
        provenance: a.provenance,
        dimensions,
        ai_probability: a.model.as_ref().map(|m| m.ai_probability),
        model: a.model,
        error,
    }
}
