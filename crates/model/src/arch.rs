//! The NPR network (Tan et al., CVPR 2024): the neighbouring-pixel residual
//! `x − up(down(x, ½), nearest)` fed to a ResNet-50 stem, `layer1` and `layer2`, global average
//! pooling and one logit. About 1.44 M parameters.
//!
//! Parameter names follow torchvision's ResNet (`conv1`, `bn1`, `layer1.0.conv1`, ...,
//! `layer1.0.downsample.{0,1}`, `fc1`), so a PyTorch NPR checkpoint converts by renaming nothing.
//!
//! Two builds of the same graph:
//! - [`Npr::train`]: convolutions and BatchNorm as separate layers, for training with autograd;
//! - [`Npr::folded`]: every BatchNorm folded into the preceding convolution's weights and a
//!   bias, for inference (one convolution instead of convolution + four elementwise passes).

use candle_core::{DType, Module, ModuleT, Result, Tensor, D};
use candle_nn::{BatchNorm, BatchNormConfig, Conv2d, Conv2dConfig, Linear, VarBuilder};

/// BatchNorm epsilon (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;

/// (planes, blocks, stride) of `layer1` and `layer2`.
const LAYERS: [(usize, usize, usize); 2] = [(64, 3, 1), (128, 4, 2)];
const EXPANSION: usize = 4;

/// A convolution followed by BatchNorm, separate or folded.
#[derive(Debug, Clone)]
enum ConvBn {
    Train {
        conv: Conv2d,
        bn: BatchNorm,
        name: String,
    },
    Folded(Conv2d),
}

fn conv_cfg(stride: usize, padding: usize) -> Conv2dConfig {
    Conv2dConfig {
        stride,
        padding,
        ..Default::default()
    }
}

impl ConvBn {
    /// `conv` and `bn` are the parameter prefixes (e.g. `layer1.0.conv1`, `layer1.0.bn1`).
    #[allow(clippy::too_many_arguments)]
    fn new(
        vb: &VarBuilder,
        conv: &str,
        bn: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        fold: bool,
    ) -> Result<Self> {
        let cfg = conv_cfg(stride, k / 2);
        if fold {
            let w = vb.pp(conv).get((cout, cin, k, k), "weight")?;
            let b = vb.pp(bn);
            let gamma = b.get(cout, "weight")?;
            let beta = b.get(cout, "bias")?;
            let mean = b.get(cout, "running_mean")?;
            let var = b.get(cout, "running_var")?;
            let scale = (gamma / (var + BN_EPS)?.sqrt()?)?;
            let w = w.broadcast_mul(&scale.reshape((cout, 1, 1, 1))?)?;
            let bias = (beta - (mean * &scale)?)?;
            Ok(ConvBn::Folded(Conv2d::new(w, Some(bias), cfg)))
        } else {
            let c = candle_nn::conv2d_no_bias(cin, cout, k, cfg, vb.pp(conv))?;
            let bnc = BatchNormConfig {
                eps: BN_EPS,
                remove_mean: true,
                affine: true,
                momentum: 0.1,
            };
            let n = candle_nn::batch_norm(cout, bnc, vb.pp(bn))?;
            Ok(ConvBn::Train {
                conv: c,
                bn: n,
                name: bn.to_owned(),
            })
        }
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        match self {
            ConvBn::Folded(c) => c.forward(x),
            ConvBn::Train { conv, bn, .. } => bn.forward_t(&conv.forward(x)?, train),
        }
    }

    /// The folded convolution in the CPU engine's layout.
    fn to_cpu(&self, precision: crate::cpu::Precision) -> Result<crate::cpu::Conv> {
        let ConvBn::Folded(c) = self else {
            candle_core::bail!("only a folded network converts to the CPU engine")
        };
        let (cout, cin, k, _) = c.weight().dims4()?;
        let bias = match c.bias() {
            Some(b) => b.to_vec1()?,
            None => vec![0.0; cout],
        };
        let w: Vec<f32> = c.weight().flatten_all()?.to_vec1()?;
        Ok(crate::cpu::Conv::from_oihw(
            &w,
            bias,
            (cout, cin, k),
            c.config().stride,
            precision,
        ))
    }

    fn batch_norms<'a>(&'a self, out: &mut Vec<(&'a str, &'a BatchNorm)>) {
        if let ConvBn::Train { bn, name, .. } = self {
            out.push((name, bn));
        }
    }
}

#[derive(Debug, Clone)]
struct Bottleneck {
    c1: ConvBn,
    c2: ConvBn,
    c3: ConvBn,
    downsample: Option<ConvBn>,
}

impl Bottleneck {
    fn new(
        vb: &VarBuilder,
        prefix: &str,
        cin: usize,
        planes: usize,
        stride: usize,
        fold: bool,
    ) -> Result<Self> {
        let p = |s: &str| format!("{prefix}.{s}");
        let out = planes * EXPANSION;
        let downsample = if stride != 1 || cin != out {
            Some(ConvBn::new(
                vb,
                &p("downsample.0"),
                &p("downsample.1"),
                cin,
                out,
                1,
                stride,
                fold,
            )?)
        } else {
            None
        };
        Ok(Self {
            c1: ConvBn::new(vb, &p("conv1"), &p("bn1"), cin, planes, 1, 1, fold)?,
            c2: ConvBn::new(vb, &p("conv2"), &p("bn2"), planes, planes, 3, stride, fold)?,
            c3: ConvBn::new(vb, &p("conv3"), &p("bn3"), planes, out, 1, 1, fold)?,
            downsample,
        })
    }

    fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let y = self.c1.forward_t(x, train)?.relu()?;
        let y = self.c2.forward_t(&y, train)?.relu()?;
        let y = self.c3.forward_t(&y, train)?;
        let identity = match &self.downsample {
            Some(d) => d.forward_t(x, train)?,
            None => x.clone(),
        };
        (y + identity)?.relu()
    }
}

/// The network.
#[derive(Debug, Clone)]
pub struct Npr {
    stem: ConvBn,
    blocks: Vec<Bottleneck>,
    fc: Linear,
}

impl Npr {
    fn build(vb: &VarBuilder, fold: bool) -> Result<Self> {
        // NPR's stem: a 3x3 stride-2 convolution (ResNet-50 uses 7x7), then BN, ReLU, max-pool.
        let stem = ConvBn::new(vb, "conv1", "bn1", 3, 64, 3, 2, fold)?;
        let mut blocks = Vec::new();
        let mut cin = 64;
        for (li, (planes, n, stride)) in LAYERS.iter().enumerate() {
            for bi in 0..*n {
                let s = if bi == 0 { *stride } else { 1 };
                blocks.push(Bottleneck::new(
                    vb,
                    &format!("layer{}.{bi}", li + 1),
                    cin,
                    *planes,
                    s,
                    fold,
                )?);
                cin = planes * EXPANSION;
            }
        }
        let fc = candle_nn::linear(cin, 1, vb.pp("fc1"))?;
        Ok(Self { stem, blocks, fc })
    }

    /// Trainable graph (BatchNorm separate).
    pub fn train(vb: &VarBuilder) -> Result<Self> {
        Self::build(vb, false)
    }

    /// Inference graph with BatchNorm folded into the convolutions.
    pub fn folded(vb: &VarBuilder) -> Result<Self> {
        Self::build(vb, true)
    }

    /// The same folded network for the CPU engine ([`crate::cpu`]) at `precision`; fails on a
    /// trainable graph.
    pub fn to_cpu(&self, precision: crate::cpu::Precision) -> Result<crate::cpu::CpuNpr> {
        let blocks = self
            .blocks
            .iter()
            .map(|b| {
                Ok(crate::cpu::Block {
                    c1: b.c1.to_cpu(precision)?,
                    c2: b.c2.to_cpu(precision)?,
                    c3: b.c3.to_cpu(precision)?,
                    downsample: b
                        .downsample
                        .as_ref()
                        .map(|d| d.to_cpu(precision))
                        .transpose()?,
                })
            })
            .collect::<Result<_>>()?;
        let fc_bias = match self.fc.bias() {
            Some(b) => b.to_vec1::<f32>()?[0],
            None => 0.0,
        };
        Ok(crate::cpu::CpuNpr::new(
            self.stem.to_cpu(precision)?,
            blocks,
            self.fc.weight().flatten_all()?.to_vec1()?,
            fc_bias,
        ))
    }

    /// The BatchNorm layers of a trainable graph with their parameter prefixes (their running
    /// statistics live outside the VarMap and must be copied back before saving).
    pub fn batch_norms(&self) -> Vec<(&str, &BatchNorm)> {
        let mut out = Vec::new();
        self.stem.batch_norms(&mut out);
        for b in &self.blocks {
            for c in [&b.c1, &b.c2, &b.c3]
                .into_iter()
                .chain(b.downsample.as_ref())
            {
                c.batch_norms(&mut out);
            }
        }
        out
    }

    /// Logits, shape `(batch,)`, for an input of shape `(batch, 3, h, w)` with even `h`, `w`,
    /// already normalised.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = npr_residual(x)?;
        let x = (x * (2.0 / 3.0))?;
        let x = self.stem.forward_t(&x, train)?.relu()?;
        // Max-pool 3x3, stride 2, padding 1. Inputs are post-ReLU (>= 0), so zero padding is
        // the same as PyTorch's -inf padding.
        let padded = x.pad_with_zeros(2, 1, 1)?.pad_with_zeros(3, 1, 1)?;
        let mut x = if train {
            max_pool_3s2_differentiable(&padded)?
        } else {
            padded.max_pool2d_with_stride(3, 2)?
        };
        for b in &self.blocks {
            x = b.forward_t(&x, train)?;
        }
        let x = x.mean(D::Minus1)?.mean(D::Minus1)?;
        self.fc.forward(&x)?.squeeze(1)
    }
}

/// 3×3 stride-2 max-pool of an already padded input, built from slices and `maximum` so that
/// autograd can differentiate it (candle's pooling backward needs kernel = stride).
fn max_pool_3s2_differentiable(padded: &Tensor) -> Result<Tensor> {
    let (b, c, hp, wp) = padded.dims4()?;
    let (ho, wo) = ((hp - 3) / 2 + 1, (wp - 3) / 2 + 1);
    let mut out: Option<Tensor> = None;
    for dy in 0..3 {
        for dx in 0..3 {
            // Rows dy, dy+2, ..., dy+2(ho-1): take 2*ho rows from dy and keep every other one.
            let rows = (2 * ho).min(hp - dy);
            let cols = (2 * wo).min(wp - dx);
            let mut v = padded.narrow(2, dy, rows)?.narrow(3, dx, cols)?;
            if rows < 2 * ho {
                v = v.pad_with_zeros(2, 0, 2 * ho - rows)?;
            }
            if cols < 2 * wo {
                v = v.pad_with_zeros(3, 0, 2 * wo - cols)?;
            }
            let v = v
                .reshape((b, c, ho, 2, wo, 2))?
                .narrow(3, 0, 1)?
                .narrow(5, 0, 1)?
                .reshape((b, c, ho, wo))?;
            out = Some(match out {
                None => v,
                Some(m) => m.maximum(&v)?,
            });
        }
    }
    Ok(out.expect("nine windows"))
}

/// `x − up(down(x, ½))` with nearest-neighbour resampling: the neighbouring-pixel residual that
/// exposes the local correlations up-sampling layers leave behind.
pub fn npr_residual(x: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    let down = x.upsample_nearest2d(h / 2, w / 2)?;
    let up = down.upsample_nearest2d(h, w)?;
    x - up
}

/// Number of trainable parameters (BatchNorm running statistics excluded).
pub fn parameter_count(varmap: &candle_nn::VarMap) -> usize {
    let data = varmap.data().lock().expect("varmap lock");
    data.iter()
        .filter(|(k, _)| !k.ends_with("running_mean") && !k.ends_with("running_var"))
        .map(|(_, v)| v.as_tensor().elem_count())
        .sum()
}

/// The dtype used everywhere.
pub const DTYPE: DType = DType::F32;

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    #[test]
    fn zero_weights_give_batch_of_logits() {
        let vb = VarBuilder::zeros(DTYPE, &Device::Cpu);
        let x = Tensor::zeros((2, 3, 64, 64), DTYPE, &Device::Cpu).unwrap();
        let train = Npr::train(&vb).unwrap();
        assert_eq!(train.forward_t(&x, false).unwrap().dims(), &[2]);
        assert_eq!(
            train.batch_norms().len(),
            1 + 3 * 7 + 2,
            "stem + 3 per block + 2 downsamples"
        );
        // Folding needs running_var > 0; zeros would divide by sqrt(eps) but stay finite.
        let folded = Npr::folded(&vb).unwrap();
        assert_eq!(folded.forward_t(&x, false).unwrap().dims(), &[2]);
    }

    #[test]
    fn parameter_count_matches_npr() {
        let vm = VarMap::new();
        let vb = VarBuilder::from_varmap(&vm, DTYPE, &Device::Cpu);
        Npr::train(&vb).unwrap();
        let n = parameter_count(&vm);
        // NPR's reference figure is about 1.44 M trainable parameters.
        assert!((1_400_000..1_460_000).contains(&n), "{n}");
    }

    #[test]
    fn folded_equals_unfolded_in_eval_mode() {
        use rand::{rngs::StdRng, Rng, SeedableRng};
        let vm = VarMap::new();
        let dev = Device::Cpu;
        Npr::train(&VarBuilder::from_varmap(&vm, DTYPE, &dev)).unwrap();
        // Seeded weights and input (candle's CPU generator cannot be seeded): the same network
        // and image on every run, so the tolerances below are checked, not sampled.
        let mut rng = StdRng::seed_from_u64(1);
        crate::train::seeded_init(&vm, &mut rng, &dev).unwrap();
        // Give BatchNorm non-trivial statistics, then build both graphs from them.
        for (name, v) in vm.data().lock().unwrap().iter() {
            if name.ends_with("running_mean") || name.ends_with("bias") {
                v.set(&(v.as_tensor().ones_like().unwrap() * 0.05).unwrap())
                    .unwrap();
            } else if name.ends_with("running_var") {
                v.set(&(v.as_tensor().ones_like().unwrap() * 1.7).unwrap())
                    .unwrap();
            }
        }
        let net = Npr::train(&VarBuilder::from_varmap(&vm, DTYPE, &dev)).unwrap();
        let pixels: Vec<f32> = (0..2 * 3 * 48 * 40)
            .map(|_| rng.gen_range(-1.7f32..1.7))
            .collect();
        let x = Tensor::from_vec(pixels, (2, 3, 48, 40), &dev).unwrap();
        let a = net.forward_t(&x, false).unwrap();
        let folded = Npr::folded(&VarBuilder::from_varmap(&vm, DTYPE, &dev)).unwrap();
        let b = folded.forward_t(&x, false).unwrap();
        let diff = (&a - &b)
            .unwrap()
            .abs()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(diff < 1e-3, "folded and unfolded differ by {diff}");

        // The CPU engine (NHWC, fused GEMMs) computes the same logits from the same weights.
        let nhwc = x
            .permute((0, 2, 3, 1))
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let engine = folded.to_cpu(crate::cpu::Precision::F32).unwrap();
        let cpu = engine.forward(&crate::cpu::Nhwc::new(nhwc.clone(), 2, 48, 40, 3));
        // One image alone takes the other schedule (layers split across threads); same logit.
        let one = engine.forward(&crate::cpu::Nhwc::new(
            nhwc[..48 * 40 * 3].to_vec(),
            1,
            48,
            40,
            3,
        ));
        assert!((one[0] - cpu[0]).abs() < 1e-5, "{one:?} vs {cpu:?}");
        let b: Vec<f32> = b.to_vec1().unwrap();
        assert!(
            (b[0] - b[1]).abs() > 1e-3,
            "inputs must give distinct logits: {b:?}"
        );
        for (c, f) in cpu.iter().zip(&b) {
            assert!(
                (c - f).abs() < 1e-3 * f.abs().max(1.0),
                "cpu {cpu:?} vs candle {b:?}"
            );
        }
        // In bf16 (AMX or AVX512-BF16) the logits move by the rounding of inputs and
        // activations; in int8 (AMX-INT8 or AVX512-VNNI) by the quantisation of weights and
        // activations (here at most 1.1% over seeds 1 to 30; with candle's own unseeded
        // initialisation the int8 error passed 5% about one run in 40). Both are f32 where the CPU has neither.
        for (precision, tolerance) in [
            (crate::cpu::Precision::Bf16, 2e-2),
            (crate::cpu::Precision::Int8, 5e-2),
        ] {
            let engine = folded.to_cpu(precision).unwrap();
            let low = engine.forward(&crate::cpu::Nhwc::new(nhwc.clone(), 2, 48, 40, 3));
            for (l, f) in low.iter().zip(&b) {
                assert!(
                    (l - f).abs() < tolerance * f.abs().max(1.0),
                    "{precision:?} {low:?} vs candle {b:?}"
                );
            }
        }
        assert!(
            net.to_cpu(crate::cpu::Precision::F32).is_err(),
            "a trainable graph has no folded weights"
        );
    }

    /// Sum of absolute values.
    fn abs_sum(t: &Tensor) -> f32 {
        t.abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    #[test]
    fn differentiable_pool_matches_native() {
        let dev = Device::Cpu;
        for (h, w) in [(8, 8), (16, 12), (7, 9)] {
            let x = Tensor::randn(0f32, 1.0, (2, 3, h, w), &dev)
                .unwrap()
                .relu()
                .unwrap();
            let p = x
                .pad_with_zeros(2, 1, 1)
                .unwrap()
                .pad_with_zeros(3, 1, 1)
                .unwrap();
            let a = p.max_pool2d_with_stride(3, 2).unwrap();
            let b = max_pool_3s2_differentiable(&p).unwrap();
            assert_eq!(a.dims(), b.dims());
            assert_eq!(abs_sum(&(a - b).unwrap()), 0.0, "{h}x{w}");
        }
    }

    #[test]
    fn residual_of_blocky_image_is_zero() {
        // A 2x2-block image is unchanged by down/up-sampling: its NPR is zero.
        let dev = Device::Cpu;
        let base = Tensor::randn(0f32, 1.0, (1, 3, 4, 4), &dev).unwrap();
        let blocky = base.upsample_nearest2d(8, 8).unwrap();
        assert_eq!(abs_sum(&npr_residual(&blocky).unwrap()), 0.0);
        let noisy = Tensor::randn(0f32, 1.0, (1, 3, 8, 8), &dev).unwrap();
        assert!(abs_sum(&npr_residual(&noisy).unwrap()) > 0.0);
    }
}
