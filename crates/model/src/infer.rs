//! Inference: crops (never resized), a folded network, calibrated probabilities.
//!
//! Up-sampling traces live at the pixel level and resizing destroys them, so an image is scored
//! on up to `crops_per_image` full-resolution crops of `crop_size` (a grid spread over the
//! image). An image smaller than one crop is scored whole (trimmed to even sides). The image
//! logit is the mean crop logit; its calibrated probability is the image's `ai_probability`.
//! Per-crop probabilities are kept as a coarse heatmap.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use candle_core::{Device, Tensor};
use candle_nn::VarBuilder;
use image::DynamicImage;
use lg_detector::{ModelError, PixelModel};
use lg_events::ModelScore;

use crate::arch::{Npr, DTYPE};
use crate::card::{ModelCard, ModelLoadError};
use crate::cpu::{CpuNpr, Nhwc, Precision};

/// Smallest side scored (the network downsamples 16×).
pub const MIN_SIDE: u32 = 32;

/// A crop rectangle `(x, y, w, h)`.
pub type CropBox = (u32, u32, u32, u32);

/// Crop rectangles for an image of `w × h`.
pub fn crop_boxes(w: u32, h: u32, size: u32, n: u32) -> Vec<CropBox> {
    if w < size || h < size {
        let (cw, ch) = (w.min(size) & !1, h.min(size) & !1);
        if cw < MIN_SIDE || ch < MIN_SIDE {
            return Vec::new();
        }
        return vec![((w - cw) / 2, (h - ch) / 2, cw, ch)];
    }
    // A near-square grid of n positions spread from edge to edge (centre first when n = 1).
    let n = n.max(1);
    let cols = (f64::from(n).sqrt().ceil() as u32).max(1);
    let rows = n.div_ceil(cols);
    let pos = |i: u32, k: u32, span: u32| if k == 1 { span / 2 } else { span * i / (k - 1) };
    let mut out = Vec::with_capacity(n as usize);
    for r in 0..rows {
        for c in 0..cols {
            if out.len() as u32 == n {
                break;
            }
            out.push((pos(c, cols, w - size), pos(r, rows, h - size), size, size));
        }
    }
    out
}

/// Normalised CHW tensor of one crop.
pub fn crop_tensor(
    img: &image::RgbImage,
    b: (u32, u32, u32, u32),
    mean: [f32; 3],
    std: [f32; 3],
    dev: &Device,
) -> candle_core::Result<Tensor> {
    let (x0, y0, w, h) = b;
    let mut data = vec![0f32; (3 * w * h) as usize];
    let plane = (w * h) as usize;
    for y in 0..h {
        for x in 0..w {
            let p = img.get_pixel(x0 + x, y0 + y).0;
            let i = (y * w + x) as usize;
            for c in 0..3 {
                data[c * plane + i] = (f32::from(p[c]) / 255.0 - mean[c]) / std[c];
            }
        }
    }
    Tensor::from_vec(data, (3, h as usize, w as usize), dev)
}

/// Normalised HWC values of one crop, appended to `out` (the CPU engine's input layout).
pub fn crop_hwc(
    img: &image::RgbImage,
    (x0, y0, w, h): (u32, u32, u32, u32),
    mean: [f32; 3],
    std: [f32; 3],
    out: &mut Vec<f32>,
) {
    let scale: [f32; 3] = std::array::from_fn(|c| 1.0 / (255.0 * std[c]));
    let shift: [f32; 3] = std::array::from_fn(|c| mean[c] / std[c]);
    let stride = img.width() as usize * 3;
    let raw = img.as_raw();
    out.reserve((w * h * 3) as usize);
    for y in y0..y0 + h {
        let row = &raw[y as usize * stride + x0 as usize * 3..][..w as usize * 3];
        // A row at a time into place (no capacity check per value).
        let at = out.len();
        out.resize(at + row.len(), 0.0);
        for (d, px) in out[at..].chunks_exact_mut(3).zip(row.chunks_exact(3)) {
            for c in 0..3 {
                d[c] = f32::from(px[c]) * scale[c] - shift[c];
            }
        }
    }
}

/// The loaded detector.
#[derive(Debug)]
pub struct NprDetector {
    net: Npr,
    /// The same network for the CPU engine, when running on the CPU.
    cpu: Option<CpuNpr>,
    /// The CPU engine's arithmetic.
    precision: Precision,
    card: ModelCard,
    version: String,
    device: Device,
    /// Crops per forward pass.
    pub max_batch: usize,
    /// The CPU engine's input buffer, reused across calls: a batch of crops is megabytes, and
    /// a fresh allocation that size comes from the kernel page by page each time.
    crop_buf: std::sync::Mutex<Vec<f32>>,
    /// Cumulative nanoseconds cropping+normalising and in the network.
    crop_ns: AtomicU64,
    infer_ns: AtomicU64,
}

impl NprDetector {
    /// Loads `dir/model.json` and its weights (hash-checked), folding BatchNorm; on the CPU the
    /// engine runs at [`Precision::auto`].
    pub fn load(dir: &Path, device: Device) -> Result<Self, ModelLoadError> {
        Self::load_with(dir, device, Precision::auto())
    }

    /// [`Self::load`] with the CPU engine at `precision`.
    pub fn load_with(
        dir: &Path,
        device: Device,
        precision: Precision,
    ) -> Result<Self, ModelLoadError> {
        let (card, weights) = ModelCard::load(dir)?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DTYPE, &device)?;
        Ok(Self::from_parts(
            Npr::folded(&vb)?,
            card,
            device,
            precision,
        )?)
    }

    /// From an already built (folded) network; on the CPU it is converted for the CPU engine at
    /// `precision`.
    pub fn from_parts(
        net: Npr,
        card: ModelCard,
        device: Device,
        precision: Precision,
    ) -> candle_core::Result<Self> {
        let cpu = device.is_cpu().then(|| net.to_cpu(precision)).transpose()?;
        // Another arithmetic gives (slightly) other scores: the version says which.
        let version = match (&cpu, precision.version_mark()) {
            (Some(_), Some(mark)) => format!("{}+{mark}", card.version()),
            _ => card.version(),
        };
        Ok(Self {
            precision,
            version,
            net,
            cpu,
            card,
            device,
            max_batch: 32,
            crop_buf: Default::default(),
            crop_ns: AtomicU64::new(0),
            infer_ns: AtomicU64::new(0),
        })
    }

    /// Logits for a normalised batch `(n, 3, h, w)`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.cpu {
            Some(cpu) => {
                let (n, c, h, w) = x.dims4()?;
                let data = x.permute((0, 2, 3, 1))?.flatten_all()?.to_vec1()?;
                let logits = cpu.forward(&Nhwc::new(data, n, h, w, c));
                Tensor::from_vec(logits, n, &self.device)
            }
            None => self.net.forward_t(x, false),
        }
    }

    /// The kernel the convolutions run on: the CPU engine's (`amx-int8`, `avx512-vnni`,
    /// `amx-bf16`, `avx512-bf16`, `avx512-f32`, `gemm-f32`), or `candle` on another device.
    pub fn kernel(&self) -> &'static str {
        match &self.cpu {
            Some(_) => self.precision.kernel(),
            None => "candle",
        }
    }

    /// Logits from the candle graph whatever the device (the CPU engine's reference; benches).
    pub fn forward_candle(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.net.forward_t(x, false)
    }

    /// Logits for a normalised NHWC batch on the CPU engine (`None` off the CPU).
    pub fn forward_nhwc(&self, x: &Nhwc) -> Option<Vec<f32>> {
        self.cpu.as_ref().map(|cpu| cpu.forward(x))
    }

    /// The model card.
    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// Raw crop logits per image, in order (empty for images too small to score).
    pub fn crop_logits(&self, images: &[&DynamicImage]) -> candle_core::Result<Vec<Vec<f32>>> {
        let spec = &self.card.input;
        let norm = &self.card.normalisation;
        // Crops of the same size go through the network together.
        let t0 = Instant::now();
        let mut infer = std::time::Duration::ZERO;
        // Decoded JPEGs are RGB8 already: borrowed, not copied (a 1600×1200 copy is ~6 MB).
        let rgb: Vec<std::borrow::Cow<'_, image::RgbImage>> = images
            .iter()
            .map(|img| match img.as_rgb8() {
                Some(rgb) => std::borrow::Cow::Borrowed(rgb),
                None => std::borrow::Cow::Owned(img.to_rgb8()),
            })
            .collect();
        let mut groups: std::collections::BTreeMap<(u32, u32), Vec<(usize, CropBox)>> =
            Default::default();
        for (i, img) in rgb.iter().enumerate() {
            for b in crop_boxes(
                img.width(),
                img.height(),
                spec.crop_size,
                spec.crops_per_image,
            ) {
                groups.entry((b.2, b.3)).or_default().push((i, b));
            }
        }
        let mut out: Vec<Vec<f32>> = vec![Vec::new(); images.len()];
        // Taken, not held: a concurrent call allocates its own.
        let mut buf = std::mem::take(&mut *self.crop_buffer());
        for (&(w, h), crops) in &groups {
            for chunk in crops.chunks(self.max_batch.max(1)) {
                let logits = match &self.cpu {
                    Some(cpu) => {
                        let mut data = std::mem::take(&mut buf);
                        data.clear();
                        for &(i, b) in chunk {
                            crop_hwc(&rgb[i], b, norm.mean, norm.std, &mut data);
                        }
                        let x = Nhwc::new(data, chunk.len(), h as usize, w as usize, 3);
                        let t = Instant::now();
                        let l = cpu.forward(&x);
                        infer += t.elapsed();
                        buf = x.data;
                        l
                    }
                    None => {
                        let crops = chunk
                            .iter()
                            .map(|&(i, b)| {
                                crop_tensor(&rgb[i], b, norm.mean, norm.std, &self.device)
                            })
                            .collect::<candle_core::Result<Vec<_>>>()?;
                        let t = Instant::now();
                        let l = self
                            .net
                            .forward_t(&Tensor::stack(&crops, 0)?, false)?
                            .to_vec1()?;
                        infer += t.elapsed();
                        l
                    }
                };
                for ((i, _), l) in chunk.iter().zip(logits) {
                    out[*i].push(l);
                }
            }
        }
        *self.crop_buffer() = buf;
        let total = t0.elapsed();
        let nanos = |d: std::time::Duration| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.infer_ns.fetch_add(nanos(infer), Ordering::Relaxed);
        self.crop_ns
            .fetch_add(nanos(total.saturating_sub(infer)), Ordering::Relaxed);
        Ok(out)
    }

    fn crop_buffer(&self) -> std::sync::MutexGuard<'_, Vec<f32>> {
        self.crop_buf.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Turns crop logits into a score.
    pub fn score_from_logits(&self, logits: &[f32]) -> Option<ModelScore> {
        calibrated_score(
            &self.version,
            &self.card.calibration,
            &self.card.operating_points,
            logits,
        )
    }
}

/// A model's score from its crop logits: the calibrated mean logit, each crop's probability,
/// and the strictest operating point crossed; `None` without crops.
pub fn calibrated_score(
    version: &str,
    cal: &crate::calibrate::Platt,
    operating_points: &[lg_events::ModelOperatingPoint],
    logits: &[f32],
) -> Option<ModelScore> {
    if logits.is_empty() {
        return None;
    }
    let probs: Vec<f32> = logits
        .iter()
        .map(|&z| cal.probability(f64::from(z)) as f32)
        .collect();
    let mean_logit = logits.iter().map(|&z| f64::from(z)).sum::<f64>() / logits.len() as f64;
    let ai_probability = cal.probability(mean_logit) as f32;
    Some(ModelScore {
        model_version: version.to_owned(),
        ai_probability,
        max_crop_probability: probs.iter().copied().fold(0.0, f32::max),
        mean_crop_probability: probs.iter().sum::<f32>() / probs.len() as f32,
        crop_probabilities: probs,
        operating_points: operating_points.to_vec(),
        crossed_fpr: lg_events::ModelOperatingPoint::crossed(operating_points, ai_probability),
    })
}

impl PixelModel for NprDetector {
    fn version(&self) -> &str {
        &self.version
    }

    fn regions(&self, width: u32, height: u32) -> Option<Vec<lg_detector::Rect>> {
        Some(self.card.input.crops(width, height))
    }

    fn operating_points(&self) -> &[lg_events::ModelOperatingPoint] {
        &self.card.operating_points
    }

    fn stage_nanos(&self) -> (u64, u64) {
        (
            self.crop_ns.load(Ordering::Relaxed),
            self.infer_ns.load(Ordering::Relaxed),
        )
    }

    fn score_batch(&self, images: &[&DynamicImage]) -> Result<Vec<Option<ModelScore>>, ModelError> {
        let logits = self
            .crop_logits(images)
            .map_err(|e| ModelError(e.to_string()))?;
        Ok(logits.iter().map(|l| self.score_from_logits(l)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crops_cover_the_image_without_resizing() {
        let b = crop_boxes(1000, 600, 224, 5);
        assert_eq!(b.len(), 5);
        for &(x, y, w, h) in &b {
            assert_eq!((w, h), (224, 224));
            assert!(x + w <= 1000 && y + h <= 600);
        }
        assert_eq!(b[0], (0, 0, 224, 224), "grid starts at a corner");
        assert!(
            b.iter().any(|&(x, _, _, _)| x == 1000 - 224),
            "and reaches the far edge"
        );
        assert_eq!(crop_boxes(224, 224, 224, 1), vec![(0, 0, 224, 224)]);
        assert_eq!(
            crop_boxes(101, 77, 224, 5),
            vec![(0, 0, 100, 76)],
            "small images whole, even sides"
        );
        assert!(crop_boxes(20, 500, 224, 5).is_empty(), "too small to score");
    }
}
