//! A small forensic feature model in plain Rust: statistics of an image's high-frequency
//! residual, where up-sampling layers and decoders leave their traces, and a standardised,
//! L2-regularised logistic regression on them. It needs little data, no network and about a
//! millisecond per crop.
//!
//! The features of one crop ([`extract`], [`FEATURES`] values):
//!
//! - **co-occurrences** (98): joint histograms of neighbouring first and second differences of
//!   the luma, quantised to −3…3 (SPAM-style), horizontal and vertical averaged;
//! - **residual spectrum** (24): the mean power spectrum of 64×64 Hann-windowed tiles of the
//!   residual after a 3×3 box filter, as 16 radial bands (log power, mean removed) and the
//!   peaks at 1/8, 1/4, 3/8 and 1/2 of the sampling rate along each axis, where the periodic
//!   traces of 2×, 4× and 8× up-sampling sit;
//! - **colour residuals** (7): correlations of the channels' Laplacian residuals, their log
//!   standard deviations and the green residual's log kurtosis (demosaicing correlates them);
//! - **neighbouring-pixel relations** (6): within each 2×2 block, the spread of the three
//!   pixels' differences from the first and the share of near-zero differences (NPR's cue);
//! - **third-order co-occurrences** (125): three consecutive luma first differences
//!   quantised to −2…2, horizontal and vertical pooled;
//! - **diagonal co-occurrences** (49): neighbouring first differences along both diagonals;
//! - **chroma co-occurrences** (2 × (49 + 125)): the pairs and triplets of first differences
//!   of the Cb and Cr planes, where a generator's decoder and a camera's demosaicing and
//!   chroma subsampling leave different correlations.
//!
//! An image is scored as the pipeline scores it: the model card's grid of crops
//! ([`crate::infer::crop_boxes`]), one logit per crop, the mean logit calibrated (saturated
//! first, [`crate::calibrate::Platt::saturation`]).

use std::collections::BTreeMap;
use std::path::Path;

use image::{DynamicImage, RgbImage};
use rand::rngs::StdRng;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::calibrate::Platt;
use crate::card::{InputSpec, ModelLoadError, CARD_FILE};
use crate::infer::crop_boxes;

/// The architecture id of a feature model's card.
pub const FEATURE_ARCHITECTURE: &str = "residual-features-lr";

/// Values per crop.
pub const FEATURES: usize = 2 * 49 + 16 + 8 + 7 + 6 + 125 + 49 + 2 * (49 + 125);

/// Quantisation bound of the co-occurrences.
const T: i32 = 3;
/// Spectrum tile side (a power of two).
const TILE: usize = 64;
/// Features are clipped to ± this (log of a zero variance, a constant tile).
const CLIP: f32 = 50.0;

/// The features of one crop (any size; tiles of the spectrum need 64×64, smaller crops give
/// a flat spectrum).
pub fn extract(img: &RgbImage) -> Vec<f32> {
    let (w, h) = (img.width() as usize, img.height() as usize);
    let planes: [Vec<f32>; 3] = std::array::from_fn(|c| {
        img.as_raw()
            .chunks_exact(3)
            .map(|p| f32::from(p[c]))
            .collect()
    });
    let grey: Vec<f32> = (0..w * h)
        .map(|i| 0.299 * planes[0][i] + 0.587 * planes[1][i] + 0.114 * planes[2][i])
        .collect();
    let mut out = Vec::with_capacity(FEATURES);
    let luma_first = DifferenceCodes::new(&grey, w, h, 1);
    out.extend(cooccurrences(&luma_first, &grey, w, h));
    out.extend(spectrum(&grey, w, h));
    out.extend(colour(&planes, w, h));
    out.extend(pixel_relations(&grey, w, h));
    out.extend(luma_first.triplets());
    out.extend(diagonal_pairs(&grey, w, h));
    let chroma = chroma(&planes).map(|p| DifferenceCodes::new(&p, w, h, 1));
    for codes in &chroma {
        out.extend(normalised(&codes.pairs()));
    }
    for codes in &chroma {
        out.extend(codes.triplets());
    }
    debug_assert_eq!(out.len(), FEATURES);
    out.iter_mut().for_each(|v| {
        *v = if v.is_finite() {
            v.clamp(-CLIP, CLIP)
        } else {
            0.0
        }
    });
    out
}

/// `v` rounded half away from zero (ties are common: grey pixels have integer luma) and
/// clamped to ±`t`, shifted to 0…2`t`; a float-to-int cast rather than a call to `roundf`, as
/// this runs several times per pixel.
fn quantise(v: f32, t: i32) -> u8 {
    let m = ((v.abs().min(t as f32 + 1.0) + 0.5) as i32).min(t);
    (if v < 0.0 { t - m } else { t + m }) as u8
}

/// A histogram scaled to sum to one (all zeros when empty).
fn normalised(h: &[f64]) -> Vec<f32> {
    let s: f64 = h.iter().sum::<f64>().max(1.0);
    h.iter().map(|v| (v / s) as f32).collect()
}

/// A plane's differences of one order quantised to ±[`T`], along its rows and along its
/// columns: `along_rows` holds `h` rows of `w − order` codes, `along_columns` `h − order`
/// rows of `w` codes (the difference between a pixel and those below it). A direction shorter
/// than 3 pixels is left empty, as it has no neighbouring differences to pair.
struct DifferenceCodes {
    w: usize,
    order: usize,
    along_rows: Vec<u8>,
    along_columns: Vec<u8>,
}

impl DifferenceCodes {
    /// First differences (`order` 1) or halved second differences (`order` 2).
    fn new(g: &[f32], w: usize, h: usize, order: usize) -> Self {
        let diff = |p0: f32, p1: f32, p2: f32| {
            if order == 1 {
                p1 - p0
            } else {
                (p2 - 2.0 * p1 + p0) / 2.0
            }
        };
        let mut along_rows = Vec::new();
        if w >= 3 {
            along_rows.reserve(h * (w - order));
            for r in g.chunks_exact(w) {
                along_rows.extend(
                    r.windows(order + 1)
                        .map(|p| quantise(diff(p[0], p[1], p.get(2).copied().unwrap_or(0.0)), T)),
                );
            }
        }
        let mut along_columns = Vec::new();
        if h >= 3 {
            along_columns.reserve((h - order) * w);
            for y in 0..h - order {
                let (r0, r1) = (&g[y * w..][..w], &g[(y + 1) * w..][..w]);
                if order == 1 {
                    along_columns.extend(r0.iter().zip(r1).map(|(&a, &b)| quantise(b - a, T)));
                } else {
                    let r2 = &g[(y + 2) * w..][..w];
                    along_columns.extend(
                        r0.iter()
                            .zip(r1)
                            .zip(r2)
                            .map(|((&a, &b), &c)| quantise(diff(a, b, c), T)),
                    );
                }
            }
        }
        Self {
            w,
            order,
            along_rows,
            along_columns,
        }
    }

    /// The codes along the rows, one slice per image row.
    fn row_runs(&self) -> std::slice::ChunksExact<'_, u8> {
        self.along_rows
            .chunks_exact(self.w.saturating_sub(self.order).max(1))
    }

    /// The codes along the columns, one slice per image row: a run down the columns is the
    /// same position in consecutive slices.
    fn column_rows(&self) -> Vec<&[u8]> {
        self.along_columns.chunks_exact(self.w.max(1)).collect()
    }

    /// 7×7 histogram (counts) of neighbouring codes, both directions pooled.
    fn pairs(&self) -> [f64; 49] {
        let mut hist = [0u32; 49];
        for row in self.row_runs() {
            for p in row.windows(2) {
                hist[usize::from(p[0]) * 7 + usize::from(p[1])] += 1;
            }
        }
        for rows in self.column_rows().windows(2) {
            for (&a, &b) in rows[0].iter().zip(rows[1]) {
                hist[usize::from(a) * 7 + usize::from(b)] += 1;
            }
        }
        hist.map(f64::from)
    }

    /// 5×5×5 histogram of three neighbouring codes quantised to ±2, both directions pooled,
    /// normalised: the third-order SPAM co-occurrence.
    fn triplets(&self) -> Vec<f32> {
        // Codes 0…6 (±3) to 0…4 (±2).
        const TO2: [usize; 7] = [0, 0, 1, 2, 3, 4, 4];
        let mut hist = [0u32; 125];
        let bin = |a: u8, b: u8, c: u8| {
            (TO2[usize::from(a)] * 5 + TO2[usize::from(b)]) * 5 + TO2[usize::from(c)]
        };
        for row in self.row_runs() {
            for p in row.windows(3) {
                hist[bin(p[0], p[1], p[2])] += 1;
            }
        }
        for rows in self.column_rows().windows(3) {
            for ((&a, &b), &c) in rows[0].iter().zip(rows[1]).zip(rows[2]) {
                hist[bin(a, b, c)] += 1;
            }
        }
        normalised(&hist.map(f64::from))
    }
}

fn cooccurrences(first: &DifferenceCodes, g: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut out = normalised(&first.pairs());
    out.extend(normalised(&DifferenceCodes::new(g, w, h, 2).pairs()));
    out
}

/// 7×7 histogram of neighbouring diagonal first differences along both diagonals, pooled and
/// normalised.
fn diagonal_pairs(g: &[f32], w: usize, h: usize) -> Vec<f32> {
    let mut hist = [0f64; 49];
    if w >= 3 && h >= 3 {
        // d(y, x) = g(y+1, x+1) − g(y, x), paired with d(y+1, x+1); the anti-diagonal
        // e(y, x) = g(y+1, x) − g(y, x+1), paired with e(y+1, x−1).
        let (cw, ch) = (w - 1, h - 1);
        let d: Vec<u8> = (0..ch * cw)
            .map(|i| {
                let (y, x) = (i / cw, i % cw);
                quantise(g[(y + 1) * w + x + 1] - g[y * w + x], T)
            })
            .collect();
        let e: Vec<u8> = (0..ch * cw)
            .map(|i| {
                let (y, x) = (i / cw, i % cw);
                quantise(g[(y + 1) * w + x] - g[y * w + x + 1], T)
            })
            .collect();
        for y in 0..ch - 1 {
            for x in 0..cw - 1 {
                let (d0, d1) = (d[y * cw + x], d[(y + 1) * cw + x + 1]);
                let (e0, e1) = (e[y * cw + x + 1], e[(y + 1) * cw + x]);
                hist[usize::from(d0) * 7 + usize::from(d1)] += 1.0;
                hist[usize::from(e0) * 7 + usize::from(e1)] += 1.0;
            }
        }
    }
    normalised(&hist)
}

/// The Cb and Cr planes (BT.601, no offset).
fn chroma(planes: &[Vec<f32>; 3]) -> [Vec<f32>; 2] {
    let mix = |k: [f32; 3]| -> Vec<f32> {
        (0..planes[0].len())
            .map(|i| k[0] * planes[0][i] + k[1] * planes[1][i] + k[2] * planes[2][i])
            .collect()
    };
    [
        mix([-0.168_736, -0.331_264, 0.5]),
        mix([0.5, -0.418_688, -0.081_312]),
    ]
}

/// The twiddle factors `e^(−2πik/n)` for `k < n/2`, as (cos, sin).
fn twiddles(n: usize) -> Vec<(f64, f64)> {
    (0..n / 2)
        .map(|k| {
            let (s, c) = (-2.0 * std::f64::consts::PI * k as f64 / n as f64).sin_cos();
            (c, s)
        })
        .collect()
}

/// In-place radix-2 FFT of `re + i·im` (length a power of two, `tw` = [`twiddles`] of it).
fn fft(re: &mut [f64], im: &mut [f64], tw: &[(f64, f64)]) {
    let n = re.len();
    let mut j = 0;
    for i in 1..n {
        let mut bit = n >> 1;
        while j & bit != 0 {
            j ^= bit;
            bit >>= 1;
        }
        j |= bit;
        if i < j {
            re.swap(i, j);
            im.swap(i, j);
        }
    }
    let mut len = 2;
    while len <= n {
        let stride = n / len;
        for start in (0..n).step_by(len) {
            for k in 0..len / 2 {
                let (c, s) = tw[k * stride];
                let (a, b) = (start + k, start + k + len / 2);
                let (vr, vi) = (re[b] * c - im[b] * s, re[b] * s + im[b] * c);
                re[b] = re[a] - vr;
                im[b] = im[a] - vi;
                re[a] += vr;
                im[a] += vi;
            }
        }
        len <<= 1;
    }
}

/// `g` minus its 3×3 box mean (edges repeated): column sums of three rows, then row sums.
fn box_residual(g: &[f32], w: usize, h: usize) -> Vec<f32> {
    let row = |y: isize| &g[y.clamp(0, h as isize - 1) as usize * w..][..w];
    let mut r = vec![0f32; w * h];
    let mut col = vec![0f32; w];
    for y in 0..h {
        let (up, mid, down) = (row(y as isize - 1), row(y as isize), row(y as isize + 1));
        for x in 0..w {
            col[x] = up[x] + mid[x] + down[x];
        }
        let out = &mut r[y * w..][..w];
        for x in 0..w {
            let s = col[x.saturating_sub(1)] + col[x] + col[(x + 1).min(w - 1)];
            out[x] = mid[x] - s / 9.0;
        }
    }
    r
}

/// Adds the 2-D power spectrum `|F(u, v)|²` of the real TILE×TILE tile in `re` (row-major) to
/// `power` (`u` the column frequency); `re` and `im` are scratch afterwards.
fn add_tile_power(re: &mut [f64], im: &mut [f64], tw: &[(f64, f64)], power: &mut [f64]) {
    im.fill(0.0);
    for y in 0..TILE {
        fft(&mut re[y * TILE..][..TILE], &mut im[y * TILE..][..TILE], tw);
    }
    // The input is real: column TILE − x is the conjugate mirror of column x, so only columns
    // 0…TILE/2 are transformed and their power is mirrored.
    let (mut cr, mut ci) = ([0f64; TILE], [0f64; TILE]);
    for x in 0..=TILE / 2 {
        for y in 0..TILE {
            cr[y] = re[y * TILE + x];
            ci[y] = im[y * TILE + x];
        }
        fft(&mut cr, &mut ci, tw);
        for y in 0..TILE {
            let p = cr[y] * cr[y] + ci[y] * ci[y];
            power[y * TILE + x] += p;
            if x != 0 && x != TILE / 2 {
                power[((TILE - y) % TILE) * TILE + TILE - x] += p;
            }
        }
    }
}

fn spectrum(g: &[f32], w: usize, h: usize) -> Vec<f32> {
    let r = box_residual(g, w, h);
    let hann: Vec<f64> = (0..TILE)
        .map(|n| 0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / (TILE - 1) as f64).cos())
        .collect();
    let mut power = vec![0f64; TILE * TILE];
    let mut tiles = 0usize;
    let (mut re, mut im) = (vec![0f64; TILE * TILE], vec![0f64; TILE * TILE]);
    let tw = twiddles(TILE);
    for ty in (0..h.saturating_sub(TILE - 1)).step_by(TILE) {
        for tx in (0..w.saturating_sub(TILE - 1)).step_by(TILE) {
            let mean = (0..TILE)
                .flat_map(|y| r[(ty + y) * w + tx..][..TILE].iter())
                .map(|&v| f64::from(v))
                .sum::<f64>()
                / (TILE * TILE) as f64;
            for y in 0..TILE {
                for x in 0..TILE {
                    re[y * TILE + x] =
                        (f64::from(r[(ty + y) * w + tx + x]) - mean) * hann[y] * hann[x];
                }
            }
            add_tile_power(&mut re, &mut im, &tw, &mut power);
            tiles += 1;
        }
    }
    let log: Vec<f64> = power
        .iter()
        .map(|&p| (p / tiles.max(1) as f64 + 1e-6).ln())
        .collect();
    // Radial bands over |f| in [0, 0.71) cycles per pixel (frequencies as numpy's fftfreq).
    let freq = |k: usize| {
        if k < TILE / 2 {
            k as f64
        } else {
            k as f64 - TILE as f64
        }
    } / TILE as f64;
    let (mut sum, mut n) = ([0f64; 16], [0usize; 16]);
    for y in 0..TILE {
        for x in 0..TILE {
            let rad = freq(x).hypot(freq(y));
            let band = (rad / (0.71 / 16.0)) as usize;
            if band < 16 {
                sum[band] += log[y * TILE + x];
                n[band] += 1;
            }
        }
    }
    let radial: Vec<f64> = (0..16).map(|b| sum[b] / n[b].max(1) as f64).collect();
    let centre = radial.iter().sum::<f64>() / 16.0;
    let mut out: Vec<f32> = radial.iter().map(|v| (v - centre) as f32).collect();
    let row = |k: usize| (0..TILE).map(|x| log[k * TILE + x]).sum::<f64>() / TILE as f64;
    let col = |k: usize| (0..TILE).map(|y| log[y * TILE + k]).sum::<f64>() / TILE as f64;
    for k in [TILE / 8, TILE / 4, 3 * TILE / 8, TILE / 2] {
        let (up, down) = (k - 1, (k + 1) % TILE);
        out.push((row(k) - (row(up) + row(down)) / 2.0) as f32);
        out.push((col(k) - (col(up) + col(down)) / 2.0) as f32);
    }
    out
}

fn colour(planes: &[Vec<f32>; 3], w: usize, h: usize) -> Vec<f32> {
    if w < 3 || h < 3 {
        return vec![0.0; 7];
    }
    let lap = |p: &[f32]| -> Vec<f64> {
        let mut out = Vec::with_capacity((w - 2) * (h - 2));
        for y in 1..h - 1 {
            for x in 1..w - 1 {
                let i = y * w + x;
                out.push(f64::from(
                    (4.0 * p[i] - p[i - 1] - p[i + 1] - p[i - w] - p[i + w]) / 4.0,
                ));
            }
        }
        out
    };
    let rs: Vec<Vec<f64>> = planes.iter().map(|p| lap(p)).collect();
    let n = rs[0].len() as f64;
    let mean: Vec<f64> = rs.iter().map(|r| r.iter().sum::<f64>() / n).collect();
    let var: Vec<f64> = rs
        .iter()
        .zip(&mean)
        .map(|(r, m)| r.iter().map(|v| (v - m).powi(2)).sum::<f64>() / n)
        .collect();
    let corr = |a: usize, b: usize| {
        let cov = rs[a]
            .iter()
            .zip(&rs[b])
            .map(|(x, y)| (x - mean[a]) * (y - mean[b]))
            .sum::<f64>()
            / n;
        let d = (var[a] * var[b]).sqrt();
        if d > 0.0 {
            cov / d
        } else {
            0.0
        }
    };
    let kurt =
        rs[1].iter().map(|v| (v - mean[1]).powi(4)).sum::<f64>() / n / (var[1].powi(2) + 1e-9);
    let mut out = vec![corr(0, 1), corr(1, 2), corr(0, 2)];
    out.extend(var.iter().map(|v| (v.sqrt() + 1e-3).ln()));
    out.push(kurt.max(1e-6).ln());
    out.into_iter().map(|v| v as f32).collect()
}

fn pixel_relations(g: &[f32], w: usize, h: usize) -> Vec<f32> {
    let (bw, bh) = (w / 2, h / 2);
    let mut out = Vec::with_capacity(6);
    for (dy, dx) in [(0, 1), (1, 0), (1, 1)] {
        let v: Vec<f64> = (0..bh)
            .flat_map(|by| (0..bw).map(move |bx| (by, bx)))
            .map(|(by, bx)| {
                let at = |y: usize, x: usize| f64::from(g[(2 * by + y) * w + 2 * bx + x]);
                at(dy, dx) - at(0, 0)
            })
            .collect();
        let n = v.len().max(1) as f64;
        let m = v.iter().sum::<f64>() / n;
        let sd = (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / n).sqrt();
        out.push((sd + 1e-3).ln() as f32);
        out.push((v.iter().filter(|x| x.abs() < 0.5).count() as f64 / n) as f32);
    }
    out
}

/// A standardised linear model on the features: `logit = bias + Σ wᵢ·(xᵢ − meanᵢ)/scaleᵢ`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    /// Training means of the features.
    pub mean: Vec<f64>,
    /// Training standard deviations (floored).
    pub scale: Vec<f64>,
    /// Weights on the standardised features.
    pub weights: Vec<f64>,
    /// Intercept.
    pub bias: f64,
}

/// Why a logistic regression cannot be fitted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FitError {
    /// One class is missing, or rows differ in length.
    #[error("cannot fit: {0}")]
    Data(&'static str),
}

impl Logistic {
    /// The logit of one feature vector.
    pub fn logit(&self, x: &[f32]) -> f64 {
        self.bias
            + x.iter()
                .zip(&self.mean)
                .zip(&self.scale)
                .zip(&self.weights)
                .map(|(((&v, m), s), w)| w * (f64::from(v) - m) / s)
                .sum::<f64>()
    }

    /// Fits by Newton's method (with step halving) the class-balanced log loss plus
    /// `‖w‖² / (2c)` (the intercept is not penalised), on standardised features.
    pub fn fit(rows: &[Vec<f32>], labels: &[bool], c: f64) -> Result<Self, FitError> {
        let d = rows.first().map_or(0, Vec::len);
        if rows.len() != labels.len() || rows.iter().any(|r| r.len() != d) || d == 0 {
            return Err(FitError::Data("rows and labels differ in shape"));
        }
        let pos = labels.iter().filter(|&&l| l).count();
        let neg = labels.len() - pos;
        if pos == 0 || neg == 0 {
            return Err(FitError::Data("both classes are needed"));
        }
        let n = rows.len() as f64;
        let mean: Vec<f64> = (0..d)
            .map(|j| rows.iter().map(|r| f64::from(r[j])).sum::<f64>() / n)
            .collect();
        let scale: Vec<f64> = (0..d)
            .map(|j| {
                let v = rows
                    .iter()
                    .map(|r| (f64::from(r[j]) - mean[j]).powi(2))
                    .sum::<f64>()
                    / n;
                v.sqrt().max(1e-6)
            })
            .collect();
        // Standardised rows with a trailing 1 for the intercept.
        let x: Vec<Vec<f64>> = rows
            .iter()
            .map(|r| {
                let mut z: Vec<f64> = (0..d)
                    .map(|j| (f64::from(r[j]) - mean[j]) / scale[j])
                    .collect();
                z.push(1.0);
                z
            })
            .collect();
        let sw: Vec<f64> = labels
            .iter()
            .map(|&l| n / (2.0 * if l { pos } else { neg } as f64))
            .collect();
        let y: Vec<f64> = labels.iter().map(|&l| f64::from(u8::from(l))).collect();
        let k = d + 1;
        let ridge = |j: usize| if j < d { 1.0 / c } else { 0.0 };
        let objective = |beta: &[f64]| {
            let mut s = 0.0;
            for ((xi, &yi), &wi) in x.iter().zip(&y).zip(&sw) {
                let z: f64 = xi.iter().zip(beta).map(|(a, b)| a * b).sum();
                // log(1 + e^z) − y·z, stably.
                s += wi * (z.max(0.0) + (-z.abs()).exp().ln_1p() - yi * z);
            }
            s + (0..k)
                .map(|j| 0.5 * ridge(j) * beta[j] * beta[j])
                .sum::<f64>()
        };
        let mut beta = vec![0f64; k];
        let mut current = objective(&beta);
        for _ in 0..100 {
            let mut grad: Vec<f64> = (0..k).map(|j| ridge(j) * beta[j]).collect();
            let mut hess = vec![0f64; k * k];
            for j in 0..k {
                hess[j * k + j] = ridge(j) + 1e-9;
            }
            for ((xi, &yi), &wi) in x.iter().zip(&y).zip(&sw) {
                let z: f64 = xi.iter().zip(&beta).map(|(a, b)| a * b).sum();
                let p = 1.0 / (1.0 + (-z).exp());
                let (g, h) = (wi * (p - yi), wi * p * (1.0 - p));
                for a in 0..k {
                    grad[a] += g * xi[a];
                    let hx = h * xi[a];
                    for b in 0..=a {
                        hess[a * k + b] += hx * xi[b];
                    }
                }
            }
            let step = cholesky_solve(&mut hess, &grad, k);
            let mut t = 1.0;
            let improved = loop {
                let trial: Vec<f64> = beta.iter().zip(&step).map(|(b, s)| b - t * s).collect();
                let o = objective(&trial);
                if o <= current {
                    break Some((trial, o));
                }
                t /= 2.0;
                if t < 1e-6 {
                    break None;
                }
            };
            let Some((next, o)) = improved else { break };
            let moved = current - o;
            beta = next;
            current = o;
            if moved < 1e-10 * current.max(1.0) {
                break;
            }
        }
        let bias = beta[d];
        beta.truncate(d);
        Ok(Self {
            mean,
            scale,
            weights: beta,
            bias,
        })
    }
}

/// Solves `A·x = b` for a symmetric positive-definite `A` of which the lower triangle is
/// filled (row-major, `k × k`); `A` is overwritten by its Cholesky factor.
fn cholesky_solve(a: &mut [f64], b: &[f64], k: usize) -> Vec<f64> {
    for j in 0..k {
        let mut s = a[j * k + j];
        for p in 0..j {
            s -= a[j * k + p] * a[j * k + p];
        }
        let l = s.max(1e-12).sqrt();
        a[j * k + j] = l;
        for i in j + 1..k {
            let mut s = a[i * k + j];
            for p in 0..j {
                s -= a[i * k + p] * a[j * k + p];
            }
            a[i * k + j] = s / l;
        }
    }
    let mut y = b.to_vec();
    for i in 0..k {
        for p in 0..i {
            y[i] -= a[i * k + p] * y[p];
        }
        y[i] /= a[i * k + i];
    }
    for i in (0..k).rev() {
        for p in i + 1..k {
            y[i] -= a[p * k + i] * y[p];
        }
        y[i] /= a[i * k + i];
    }
    y
}

/// How a feature model is trained.
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureRecipe {
    /// Augmented training crops per image ([`crate::data::augment`], as the network's).
    pub crops_per_image: usize,
    /// Side of the training and scoring crops.
    pub crop_size: u32,
    /// Crops scored per image.
    pub score_crops: u32,
    /// Inverse L2 strength.
    pub c: f64,
    /// Seed of the augmentation.
    pub seed: u64,
    /// Saturation of the calibration ([`crate::calibrate::Platt::saturation`]).
    pub saturation: Option<f64>,
    /// The training crops' augmentation.
    pub augmentation: crate::data::Augmentation,
}

impl Default for FeatureRecipe {
    fn default() -> Self {
        Self {
            crops_per_image: 8,
            crop_size: 224,
            score_crops: 5,
            c: 0.1,
            seed: 17,
            saturation: Some(3.0),
            augmentation: crate::data::Augmentation::default(),
        }
    }
}

impl FeatureRecipe {
    /// The recipe as written to cards and reports.
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "model": "logistic regression (Newton, class-balanced, L2) on standardised residual features",
            "features": FEATURES,
            "c": self.c,
            "train_crops_per_image": self.crops_per_image,
            "crop_size": self.crop_size,
            "seed": self.seed,
            "calibration_saturation": self.saturation,
            "augmentation": self.augmentation.describe(),
        })
    }

    /// The augmented training crops' features of image `index` (seeded by the recipe's seed
    /// and the index, so a file gets the same crops in every fold).
    pub fn training_rows(&self, index: usize, img: &RgbImage) -> Vec<Vec<f32>> {
        let mut rng =
            StdRng::seed_from_u64(self.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        (0..self.crops_per_image)
            .map(|_| {
                extract(&crate::data::augment_with(
                    img,
                    self.crop_size,
                    &self.augmentation,
                    &mut rng,
                ))
            })
            .collect()
    }

    /// The features of each scoring crop of an image (empty when it is too small).
    pub fn scoring_rows(&self, img: &RgbImage) -> Vec<Vec<f32>> {
        crop_rows(
            img,
            crop_boxes(img.width(), img.height(), self.crop_size, self.score_crops),
        )
    }
}

/// The features of each crop box of `img`.
fn crop_rows(img: &RgbImage, boxes: Vec<crate::infer::CropBox>) -> Vec<Vec<f32>> {
    boxes
        .into_iter()
        .map(|(x, y, w, h)| extract(&image::imageops::crop_imm(img, x, y, w, h).to_image()))
        .collect()
}

/// Fits a model on the training rows of the given images (`rows[i]` belongs to `labels[i]`).
pub fn fit_images(rows: &[&[Vec<f32>]], labels: &[bool], c: f64) -> Result<Logistic, FitError> {
    let mut x = Vec::new();
    let mut y = Vec::new();
    for (r, &l) in rows.iter().zip(labels) {
        x.extend(r.iter().cloned());
        y.extend(std::iter::repeat_n(l, r.len()));
    }
    Logistic::fit(&x, &y, c)
}

/// The mean crop logit of scoring rows (`None` without rows).
pub fn mean_logit(model: &Logistic, rows: &[Vec<f32>]) -> Option<f64> {
    (!rows.is_empty()).then(|| rows.iter().map(|r| model.logit(r)).sum::<f64>() / rows.len() as f64)
}

/// Training rows of many images in parallel.
pub fn training_rows_all(recipe: &FeatureRecipe, images: &[&RgbImage]) -> Vec<Vec<Vec<f32>>> {
    images
        .par_iter()
        .enumerate()
        .map(|(i, img)| recipe.training_rows(i, img))
        .collect()
}

/// A feature model's card: everything it needs in one JSON file (`model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeatureCard {
    /// Model name.
    pub name: String,
    /// [`FEATURE_ARCHITECTURE`].
    pub architecture: String,
    /// Crops scored per image and their side.
    pub input: InputSpec,
    /// The linear model.
    pub model: Logistic,
    /// Calibration from the mean crop logit to a probability (out of fold).
    pub calibration: Platt,
    /// Thresholds on the calibrated probability at false-positive rates on real photos.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operating_points: Vec<lg_events::ModelOperatingPoint>,
    /// What it was trained on and how.
    pub training: BTreeMap<String, serde_json::Value>,
    /// Measured figures (out of fold).
    pub metrics: BTreeMap<String, serde_json::Value>,
}

impl FeatureCard {
    /// The card as written to `model.json`.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).expect("cards serialise");
        s.push('\n');
        s
    }

    /// Reads `dir/model.json`, checking the architecture and the model's shape; with the
    /// version, `name@sha256:<first 12 hex of the file>`.
    pub fn load(dir: &Path) -> Result<(Self, String), ModelLoadError> {
        let path = dir.join(CARD_FILE);
        let text = std::fs::read(&path).map_err(|source| ModelLoadError::Io {
            path: path.clone(),
            source,
        })?;
        let card: Self = serde_json::from_slice(&text)
            .map_err(|source| ModelLoadError::Card { path, source })?;
        if card.architecture != FEATURE_ARCHITECTURE {
            return Err(ModelLoadError::Architecture(card.architecture));
        }
        let m = &card.model;
        let finite = |v: &[f64]| v.iter().all(|x| x.is_finite());
        if !(finite(&m.mean) && finite(&m.weights) && m.bias.is_finite())
            || m.scale.iter().any(|s| !(s.is_finite() && *s > 0.0))
        {
            return Err(ModelLoadError::Shape(
                "the linear model has a non-finite value or a scale that is not positive".into(),
            ));
        }
        let cal = &card.calibration;
        if !(cal.a.is_finite()
            && cal.b.is_finite()
            && cal.saturation.is_none_or(|s| s.is_finite() && s > 0.0))
        {
            return Err(ModelLoadError::Shape(
                "the calibration has a non-finite value or a saturation that is not positive"
                    .into(),
            ));
        }
        if [m.mean.len(), m.scale.len(), m.weights.len()] != [FEATURES; 3] {
            return Err(ModelLoadError::Shape(format!(
                "the linear model has {}/{}/{} values; this build extracts {FEATURES} features",
                m.mean.len(),
                m.scale.len(),
                m.weights.len()
            )));
        }
        let version = format!(
            "{}@sha256:{}",
            card.name,
            &lg_events::sha256_hex(&text)[..12]
        );
        Ok((card, version))
    }

    /// Writes the card as pretty JSON.
    pub fn save(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join(CARD_FILE), self.to_json())
    }
}

/// The loaded feature model, a [`lg_detector::PixelModel`].
#[derive(Debug)]
pub struct FeatureDetector {
    card: FeatureCard,
    version: String,
    /// Nanoseconds spent scoring since load (the pipeline's model stage metric).
    score_ns: std::sync::atomic::AtomicU64,
}

impl FeatureDetector {
    /// Loads `dir/model.json`.
    pub fn load(dir: &Path) -> Result<Self, ModelLoadError> {
        let (card, version) = FeatureCard::load(dir)?;
        Ok(Self {
            card,
            version,
            score_ns: 0.into(),
        })
    }

    /// The card.
    pub fn card(&self) -> &FeatureCard {
        &self.card
    }

    /// The crop logits of one image.
    pub fn crop_logits(&self, img: &RgbImage) -> Vec<f32> {
        crop_rows(img, self.card.input.crops(img.width(), img.height()))
            .iter()
            .map(|row| self.card.model.logit(row) as f32)
            .collect()
    }
}

impl lg_detector::PixelModel for FeatureDetector {
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
        // Cropping is part of the feature extraction: all of it counts as the model's.
        (0, self.score_ns.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn score_batch(
        &self,
        images: &[&DynamicImage],
    ) -> Result<Vec<Option<lg_events::ModelScore>>, lg_detector::ModelError> {
        let t0 = std::time::Instant::now();
        let out = images
            .par_iter()
            .map(|img| {
                let logits = match img.as_rgb8() {
                    Some(rgb) => self.crop_logits(rgb),
                    None => self.crop_logits(&img.to_rgb8()),
                };
                crate::infer::calibrated_score(
                    &self.version,
                    &self.card.calibration,
                    &self.card.operating_points,
                    &logits,
                )
            })
            .collect();
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.score_ns
            .fetch_add(ns, std::sync::atomic::Ordering::Relaxed);
        Ok(out)
    }
}

/// A seeded noise image (tests).
#[cfg(test)]
pub(crate) fn noise(w: u32, h: u32, seed: u64) -> RgbImage {
    let mut s = seed;
    RgbImage::from_fn(w, h, |_, _| {
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 56) as u8
        };
        image::Rgb([next(), next(), next()])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fft_matches_the_definition() {
        let n = 16;
        let xr: Vec<f64> = (0..n).map(|i| ((i * 7) % 5) as f64 - 1.5).collect();
        let xi: Vec<f64> = (0..n).map(|i| ((i * 3) % 4) as f64 * 0.5).collect();
        let (mut re, mut im) = (xr.clone(), xi.clone());
        fft(&mut re, &mut im, &twiddles(n));
        for k in 0..n {
            let (mut sr, mut si) = (0.0, 0.0);
            for t in 0..n {
                let a = -2.0 * std::f64::consts::PI * (k * t) as f64 / n as f64;
                sr += xr[t] * a.cos() - xi[t] * a.sin();
                si += xr[t] * a.sin() + xi[t] * a.cos();
            }
            assert!(
                (re[k] - sr).abs() < 1e-9 && (im[k] - si).abs() < 1e-9,
                "bin {k}"
            );
        }
    }

    #[test]
    fn co_occurrences_round_half_away_from_zero() {
        // One row 0, 0.5, 1.5, 1, 0.5, −1.5 (first differences 0.5, 1, −0.5, −0.5, −2):
        // quantised 1, 1, −1, −1, −2, as `f32::round` does. One row: no column differences.
        let codes = DifferenceCodes::new(&[0.0, 0.5, 1.5, 1.0, 0.5, -1.5], 6, 1, 1);
        let hist = codes.pairs();
        let at = |a: i32, b: i32| hist[((a + T) * 7 + b + T) as usize];
        assert_eq!(
            (at(1, 1), at(1, -1), at(-1, -1), at(-1, -2)),
            (1.0, 1.0, 1.0, 1.0)
        );
        assert_eq!(hist.iter().sum::<f64>(), 4.0);
        // Triplets clamp to ±2: (1, 1, −1), (1, −1, −1), (−1, −1, −2).
        let tri = codes.triplets();
        let at3 = |a: usize, b: usize, c: usize| tri[(a * 5 + b) * 5 + c];
        assert_eq!(
            (at3(3, 3, 1), at3(3, 1, 1), at3(1, 1, 0)),
            (1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0)
        );
        // Beyond ±T clamps; a NaN (never produced from pixels) lands on an edge bin.
        for (v, t, code) in [
            (9.0, 3, 6),
            (-3.5, 3, 0),
            (3.49, 3, 6),
            (2.5, 2, 4),
            (f32::NAN, 3, 6),
        ] {
            assert_eq!(quantise(v, t), code, "{v} at ±{t}");
        }
        // Down a column the same as along a row.
        let column = DifferenceCodes::new(&[0.0, 0.5, 1.5, 1.0, 0.5, -1.5], 1, 6, 1);
        assert_eq!(column.pairs(), hist);
    }

    #[test]
    fn tile_power_is_the_squared_2d_dft() {
        let tile: Vec<f64> = (0..TILE * TILE)
            .map(|i| ((i * 7919) % 257) as f64 / 257.0 - 0.5)
            .collect();
        let mut power = vec![0f64; TILE * TILE];
        let (mut re, mut im) = (tile.clone(), vec![0f64; TILE * TILE]);
        add_tile_power(&mut re, &mut im, &twiddles(TILE), &mut power);
        for (u, v) in [
            (0, 0),
            (1, 0),
            (0, 5),
            (3, 60),
            (33, 7),
            (63, 63),
            (32, 32),
            (40, 1),
        ] {
            let (mut sr, mut si) = (0.0, 0.0);
            for y in 0..TILE {
                for x in 0..TILE {
                    let a = -2.0 * std::f64::consts::PI * ((u * x + v * y) as f64) / TILE as f64;
                    sr += tile[y * TILE + x] * a.cos();
                    si += tile[y * TILE + x] * a.sin();
                }
            }
            let want = sr * sr + si * si;
            let got = power[v * TILE + u];
            assert!(
                (got - want).abs() < 1e-6 * want.max(1.0),
                "({u}, {v}): {got} vs {want}"
            );
        }
    }

    #[test]
    fn box_residual_is_the_pixel_minus_its_clamped_neighbourhood_mean() {
        let (w, h) = (7, 5);
        let g: Vec<f32> = (0..w * h).map(|i| ((i * 37) % 11) as f32).collect();
        let r = box_residual(&g, w, h);
        for y in 0..h as isize {
            for x in 0..w as isize {
                let mut s = 0.0;
                for dy in -1..=1 {
                    for dx in -1..=1 {
                        let (cx, cy) = (
                            (x + dx).clamp(0, w as isize - 1),
                            (y + dy).clamp(0, h as isize - 1),
                        );
                        s += g[cy as usize * w + cx as usize];
                    }
                }
                let i = y as usize * w + x as usize;
                assert!((r[i] - (g[i] - s / 9.0)).abs() < 1e-5, "({x}, {y})");
            }
        }
    }

    #[test]
    fn features_have_a_fixed_length_and_are_finite_on_any_crop() {
        for img in [
            noise(224, 224, 1),
            noise(40, 33, 2),
            RgbImage::from_pixel(100, 100, image::Rgb([9, 9, 9])),
            RgbImage::new(1, 1),
        ] {
            let f = extract(&img);
            assert_eq!(f.len(), FEATURES);
            assert!(f.iter().all(|v| v.is_finite() && v.abs() <= CLIP), "{f:?}");
        }
    }

    #[test]
    fn higher_order_diagonal_and_chroma_co_occurrences_place_a_ramp() {
        // A grey horizontal ramp (+1 per column): horizontal first differences are +1,
        // vertical ones 0; the diagonal difference is +1, the anti-diagonal −1; no chroma.
        let ramp = RgbImage::from_fn(64, 64, |x, _| image::Rgb([x as u8; 3]));
        let f = extract(&ramp);
        let start = 2 * 49 + 24 + 7 + 6;
        let (tri, diag, chroma) = (
            &f[start..start + 125],
            &f[start + 125..start + 174],
            &f[start + 174..],
        );
        // Triplets: (+1, +1, +1) = bin (3·5 + 3)·5 + 3 horizontally, (0, 0, 0) vertically.
        assert!(
            (tri[93] - 0.5).abs() < 1e-6 && (tri[62] - 0.5).abs() < 1e-6,
            "{tri:?}"
        );
        // Diagonal pairs: (+1, +1) = bin 4·7 + 4, anti-diagonal (−1, −1) = bin 2·7 + 2.
        assert!(
            (diag[32] - 0.5).abs() < 1e-6 && (diag[16] - 0.5).abs() < 1e-6,
            "{diag:?}"
        );
        // Cb and Cr are flat: all mass at the centre bins (pairs 24, triplets 62).
        assert_eq!(chroma.len(), 2 * (49 + 125));
        for (offset, centre) in [(0, 24), (49, 24), (98, 62), (223, 62)] {
            assert!((chroma[offset + centre] - 1.0).abs() < 1e-6, "{offset}");
        }
        // Every histogram is normalised, on the ramp and on noise.
        let n = extract(&noise(96, 80, 5));
        for v in [&f, &n] {
            for (a, b) in [
                (0, 125),
                (125, 174),
                (174, 223),
                (223, 272),
                (272, 397),
                (397, 522),
            ] {
                let sum: f32 = v[start + a..start + b].iter().sum();
                assert!((sum - 1.0).abs() < 1e-4, "{a}..{b}: {sum}");
            }
        }
    }

    #[test]
    fn nearest_neighbour_upsampling_shows_in_the_features() {
        // A 2× nearest-neighbour upsample copies every pixel into its 2×2 block: the NPR
        // relations go to zero spread, and the spectrum gets a peak at half the sampling rate.
        let small = noise(112, 112, 3);
        let up = image::imageops::resize(&small, 224, 224, image::imageops::FilterType::Nearest);
        let (a, b) = (extract(&noise(224, 224, 4)), extract(&up));
        let npr_zero_share = 2 * 49 + 24 + 7 + 1;
        assert!(b[npr_zero_share] > 0.99 && a[npr_zero_share] < 0.1);
    }

    #[test]
    fn logistic_regression_separates_and_ranks() {
        // Label = x0 + 0.5·x1 > 0 with a nuisance feature.
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..200 {
            let x0 = (i as f32 * 0.37).sin() * 3.0;
            let x1 = (i as f32 * 0.11).cos() * 2.0;
            rows.push(vec![x0, x1, 5.0 + (i % 3) as f32]);
            labels.push(x0 + 0.5 * x1 > 0.3);
        }
        let m = Logistic::fit(&rows, &labels, 10.0).unwrap();
        let right = rows
            .iter()
            .zip(&labels)
            .filter(|(r, &l)| (m.logit(r) > 0.0) == l)
            .count();
        assert!(right >= 195, "{right}/200");
        assert!(m.weights[0] > m.weights[1] && m.weights[1] > 0.0);
        assert!(m.weights[2].abs() < m.weights[1]);
        // A stronger penalty shrinks the weights.
        let strong = Logistic::fit(&rows, &labels, 0.001).unwrap();
        assert!(strong.weights[0].abs() < m.weights[0].abs());
        assert!(Logistic::fit(&rows, &[true; 200], 1.0).is_err());
    }

    #[test]
    fn a_card_round_trips_and_scores_crops() {
        let mut rows = Vec::new();
        let mut labels = Vec::new();
        for i in 0..20 {
            let img = noise(64, 64, i);
            let up = image::imageops::resize(
                &noise(32, 32, 100 + i),
                64,
                64,
                image::imageops::FilterType::Nearest,
            );
            rows.push(extract(&img));
            labels.push(false);
            rows.push(extract(&up));
            labels.push(true);
        }
        let card = FeatureCard {
            name: "t".into(),
            architecture: FEATURE_ARCHITECTURE.into(),
            input: InputSpec {
                crop_size: 64,
                crops_per_image: 2,
            },
            model: Logistic::fit(&rows, &labels, 1.0).unwrap(),
            calibration: Platt::default(),
            operating_points: Vec::new(),
            training: BTreeMap::new(),
            metrics: BTreeMap::new(),
        };
        let dir = std::env::temp_dir().join(format!("lg-feature-card-{}", std::process::id()));
        card.save(&dir).unwrap();
        let det = FeatureDetector::load(&dir).unwrap();
        let mut bad = card.clone();
        bad.model.scale[3] = 0.0;
        bad.save(&dir).unwrap();
        assert!(matches!(
            FeatureDetector::load(&dir),
            Err(ModelLoadError::Shape(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
        let (a, b) = (&det.card().model, &card.model);
        assert_eq!(det.card().input, card.input);
        assert!(a
            .weights
            .iter()
            .zip(&b.weights)
            .all(|(x, y)| (x - y).abs() < 1e-12));
        assert!(lg_detector::PixelModel::version(&det).starts_with("t@sha256:"));
        let up = image::imageops::resize(
            &noise(64, 64, 999),
            128,
            128,
            image::imageops::FilterType::Nearest,
        );
        let scores = lg_detector::PixelModel::score_batch(
            &det,
            &[
                &DynamicImage::ImageRgb8(noise(128, 128, 998)),
                &DynamicImage::ImageRgb8(up),
                &DynamicImage::ImageRgb8(noise(8, 8, 1)),
            ],
        )
        .unwrap();
        let p = |i: usize| scores[i].as_ref().unwrap().ai_probability;
        assert!(p(1) > 0.5 && p(0) < 0.5, "{} {}", p(0), p(1));
        assert_eq!(scores[0].as_ref().unwrap().crop_probabilities.len(), 2);
        assert!(scores[2].is_none(), "too small to score");
        assert!(
            lg_detector::PixelModel::stage_nanos(&det).1 > 0,
            "scoring time counted"
        );
    }
}
