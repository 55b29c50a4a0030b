//! Listing Guard learned detector: an NPR-style forensic CNN in candle.
//!
//! - [`arch`]: the network, trainable or with BatchNorm folded for inference.
//! - [`cpu`]: the CPU inference path (NHWC, one fused GEMM per convolution).
//! - [`infer`]: crops, batching, calibrated scores; implements [`lg_detector::PixelModel`].
//! - [`card`]: `model.json` and hash-checked loading.
//! - [`calibrate`]: Platt scaling.
//! - [`metrics`]: AP, ROC-AUC, TPR at a fixed FPR, accuracy, ECE.
//! - [`data`]: datasets on disk and the augmentation pipeline.
//! - [`train`]: seeded training with AdamW, calibration and the model card.
//! - [`eval`]: evaluation reports, clean and perturbed, per generator.
//! - [`cv`]: leave-source-out cross-validation, the figures reported as quality.
//! - [`features`]: residual statistics and a logistic regression, in plain Rust.
//! - [`bfree`]: B-Free-style pairs: real photos reconstructed through a self-trained decoder.

pub mod arch;
pub mod bfree;
pub mod calibrate;
pub mod card;
pub mod cpu;
mod cpu_kernel;
pub use cpu_kernel::peak_gflops;
pub mod cv;
pub mod data;
pub mod eval;
pub mod features;
pub mod infer;
pub mod metrics;
pub mod train;

/// The device models run on: CUDA device 0 when built with the `cuda` feature, else the CPU.
pub fn device() -> candle_core::Result<candle_core::Device> {
    #[cfg(feature = "cuda")]
    {
        candle_core::Device::new_cuda(0)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Ok(candle_core::Device::Cpu)
    }
}

/// A model directory loaded by its card's `architecture`: the residual-feature model
/// ([`features::FEATURE_ARCHITECTURE`]) or the NPR network (anything else, which
/// [`infer::NprDetector`] checks). Returns the detector's pixel model and what computes its
/// scores (the network's kernel, or `residual-features`); `precision` applies to the network.
pub fn load_any(
    dir: &std::path::Path,
    device: candle_core::Device,
    precision: cpu::Precision,
) -> Result<(std::sync::Arc<dyn lg_detector::PixelModel>, &'static str), card::ModelLoadError> {
    #[derive(serde::Deserialize)]
    struct Peek {
        architecture: String,
    }
    let path = dir.join(card::CARD_FILE);
    let text = std::fs::read(&path).map_err(|source| card::ModelLoadError::Io {
        path: path.clone(),
        source,
    })?;
    let peek: Peek = serde_json::from_slice(&text)
        .map_err(|source| card::ModelLoadError::Card { path, source })?;
    if peek.architecture == features::FEATURE_ARCHITECTURE {
        let m = features::FeatureDetector::load(dir)?;
        return Ok((std::sync::Arc::new(m), "residual-features"));
    }
    let m = infer::NprDetector::load_with(dir, device, precision)?;
    let kernel = m.kernel();
    Ok((std::sync::Arc::new(m), kernel))
}
