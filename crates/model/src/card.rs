//! The model card (`model.json`) next to the weights, and loading with an integrity check.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::calibrate::Platt;

/// Card file name inside a model directory.
pub const CARD_FILE: &str = "model.json";

/// Errors loading a model.
#[derive(Debug, thiserror::Error)]
pub enum ModelLoadError {
    /// A file is missing or unreadable.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The card does not parse.
    #[error("model card {path} is invalid: {source}")]
    Card {
        /// The file.
        path: PathBuf,
        /// Why.
        source: serde_json::Error,
    },
    /// The weights do not match the card's hash.
    #[error("weights {path} do not match the model card: sha256 is {actual}, the card says {expected}; refusing to load")]
    HashMismatch {
        /// The weights file.
        path: PathBuf,
        /// From the card.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// An architecture this build does not implement.
    #[error("unsupported architecture {0:?} (this build implements {ARCHITECTURE:?})")]
    Architecture(String),
    /// A model's parameters do not fit what this build computes.
    #[error("model does not fit this build: {0}")]
    Shape(String),
    /// The tensors do not fit the architecture.
    #[error("weights do not fit the architecture: {0}")]
    Tensors(#[from] candle_core::Error),
}

/// The architecture id this crate implements.
pub const ARCHITECTURE: &str = "npr-resnet50-layer2";

/// Input settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputSpec {
    /// Side of the square crops, in pixels (even).
    pub crop_size: u32,
    /// Crops scored per image (a grid over the image, never resized).
    pub crops_per_image: u32,
}

impl InputSpec {
    /// The crops of a `width × height` image ([`crate::infer::crop_boxes`]).
    pub fn crops(&self, width: u32, height: u32) -> Vec<crate::infer::CropBox> {
        crate::infer::crop_boxes(width, height, self.crop_size, self.crops_per_image)
    }
}

/// Per-channel normalisation applied to RGB values in [0, 1].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    /// Channel means.
    pub mean: [f32; 3],
    /// Channel standard deviations.
    pub std: [f32; 3],
}

impl Default for Normalisation {
    fn default() -> Self {
        Self {
            mean: [0.485, 0.456, 0.406],
            std: [0.229, 0.224, 0.225],
        }
    }
}

/// The weights file and its hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WeightsRef {
    /// File name inside the model directory.
    pub file: String,
    /// SHA-256 of the file (hex), checked at load.
    pub sha256: String,
}

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelCard {
    /// Model name.
    pub name: String,
    /// Architecture id.
    pub architecture: String,
    /// Parameter count.
    pub parameters: usize,
    /// Input settings.
    pub input: InputSpec,
    /// Normalisation.
    pub normalisation: Normalisation,
    /// Calibration from image logit to probability.
    pub calibration: Platt,
    /// Operating-point threshold on the calibrated probability.
    pub threshold: f32,
    /// Thresholds on the calibrated probability at false-positive rates on real photos,
    /// measured out of fold (leave-source-out); the policy names one per action.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operating_points: Vec<lg_events::ModelOperatingPoint>,
    /// Weights.
    pub weights: WeightsRef,
    /// What the model was trained on (free text and counts).
    pub training: BTreeMap<String, serde_json::Value>,
    /// Measured metrics (validation split and any evaluations).
    pub metrics: BTreeMap<String, serde_json::Value>,
}

impl ModelCard {
    /// `name@sha256:<first 12 hex of the weights>`.
    pub fn version(&self) -> String {
        format!(
            "{}@sha256:{}",
            self.name,
            &self.weights.sha256[..12.min(self.weights.sha256.len())]
        )
    }

    /// Reads the card and the weights from `dir`, checking the hash and the architecture.
    pub fn load(dir: &Path) -> Result<(Self, Vec<u8>), ModelLoadError> {
        let card_path = dir.join(CARD_FILE);
        let text = std::fs::read(&card_path).map_err(|source| ModelLoadError::Io {
            path: card_path.clone(),
            source,
        })?;
        let card: ModelCard =
            serde_json::from_slice(&text).map_err(|source| ModelLoadError::Card {
                path: card_path,
                source,
            })?;
        if card.architecture != ARCHITECTURE {
            return Err(ModelLoadError::Architecture(card.architecture));
        }
        let wpath = dir.join(&card.weights.file);
        let weights = std::fs::read(&wpath).map_err(|source| ModelLoadError::Io {
            path: wpath.clone(),
            source,
        })?;
        let actual = lg_events::sha256_hex(&weights);
        if actual != card.weights.sha256 {
            return Err(ModelLoadError::HashMismatch {
                path: wpath,
                expected: card.weights.sha256,
                actual,
            });
        }
        Ok((card, weights))
    }

    /// Writes the card as pretty JSON.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        let mut s = serde_json::to_string_pretty(self).expect("cards serialise");
        s.push('\n');
        std::fs::write(dir.join(CARD_FILE), s)
    }
}
