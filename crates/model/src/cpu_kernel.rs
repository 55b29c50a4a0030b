//! The CPU engine's matrix product: `C[m×n] += A[m×k] · B[k×n]` (row-major), with an optional
//! ReLU applied as `C` is written back.
//!
//! The kernels, chosen when the weights are packed ([`PackedB::new`]):
//! - **AMX-BF16** ([`Precision::Bf16`], on CPUs with Intel AMX): `B` is packed once into bf16
//!   tiles of 32 deep × 16 columns, `A` is rounded to bf16 per call, and `tdpbf16ps` multiplies
//!   16×32 by 32×16 tiles into f32 accumulators (2×2 tiles of output at a time). The sums stay
//!   f32; only the inputs lose precision (8 mantissa bits, relative error ≤ 2⁻⁹ each).
//! - **AVX512-BF16** ([`Precision::Bf16`] on CPUs with `vdpbf16ps` but no AMX, such as AMD
//!   Zen 4): the same bf16 inputs and f32 sums on the vector unit ([`avx512bf16`]), 12×32
//!   blocks of `C` in registers; `A` comes in the tile kernel's layout, so the engine's bf16
//!   activations work the same on both.
//! - **AVX-512F** (f32): `B` is packed into panels of 32 columns, each 12-row block of `A` is
//!   multiplied against one panel slice of at most `KC` depth (32 KiB, stays in L1) with 24
//!   accumulator registers, and the ReLU is applied on the final store. The `gemm` crate's
//!   stable build only has AVX2 kernels, which leave half of such a CPU's floating-point width
//!   unused.
//! - everywhere else (no AVX-512, or `n` not a multiple of 32) the `gemm` crate (f32).
//!
//! At [`Precision::Int8`]: AMX-INT8 on the tiles (`tdpbusd`/`tdpbssd`), else AVX512-VNNI on
//! the vector unit ([`avx512vnni`], `vpdpbusd`), with the same integer sums; f32 elsewhere.
//! [`CpuFeatures::avx512`] off turns every AVX-512 vector kernel off (not the tiles).

/// Columns per packed panel (two 16-lane registers).
const NR: usize = 32;
/// Rows per register block.
const MR: usize = 12;
/// Depth per pass over a panel: `KC × NR` floats = 32 KiB.
const KC: usize = 256;

/// The arithmetic of the engine's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precision {
    /// f32 inputs and sums (AVX-512F kernel or the `gemm` crate).
    F32,
    /// bf16 inputs, f32 sums: on the AMX tile unit where the CPU has one, else with
    /// AVX512-BF16's `vdpbf16ps` where it has that; f32 elsewhere.
    Bf16,
    /// int8 inputs, i32 sums: on the AMX tile unit where the CPU has AMX-INT8, else with
    /// AVX512-VNNI's `vpdpbusd` where it has that; f32 elsewhere.
    /// Weights are quantised once per output channel, activations per row of `A` on each call
    /// (unsigned where the whole `A` is non-negative, as after a ReLU), and the sums scaled back
    /// to f32 before the bias, the residual and the ReLU.
    Int8,
}

/// Which of this CPU's instruction sets the engine may use: the binary's `[detector.cpu]`
/// settings, given once per process with [`configure`] before the first model loads. The
/// library reads no environment; by default everything the CPU has is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuFeatures {
    /// bf16 arithmetic for [`Precision::auto`]; off, `auto` is f32 (int8 included).
    pub bf16: bool,
    /// int8 arithmetic for [`Precision::auto`].
    pub int8: bool,
    /// The AVX-512 vector kernels (f32, bf16 and VNNI; not the AMX tiles); off, the `gemm`
    /// crate's kernels run.
    pub avx512: bool,
    /// bf16 activations between the layers on the VNNI int8 kernel (off: f32 activations
    /// between them, quantised from f32 on each call).
    pub int8_bf16_activations: bool,
}

impl Default for CpuFeatures {
    fn default() -> Self {
        Self {
            bf16: true,
            int8: true,
            avx512: true,
            int8_bf16_activations: true,
        }
    }
}

static FEATURES: std::sync::OnceLock<CpuFeatures> = std::sync::OnceLock::new();

/// Sets the process's [`CpuFeatures`]. The kernels' choices are made once, so the first
/// configuration (or the first use, which fixes the default) wins: a different one later is
/// refused with the one in force.
pub fn configure(features: CpuFeatures) -> Result<(), CpuFeatures> {
    let current = *FEATURES.get_or_init(|| features);
    if current == features {
        Ok(())
    } else {
        Err(current)
    }
}

/// The process's [`CpuFeatures`] (the default until [`configure`] is called).
pub fn features() -> CpuFeatures {
    *FEATURES.get_or_init(CpuFeatures::default)
}

impl Precision {
    /// The fastest arithmetic measured on this kind of machine, all within the model's accuracy
    /// (AP within 0.03 points of f32 on the model's images, BENCHMARKS.md), among those
    /// [`features`] allows:
    /// - int8 where the VNNI kernel runs with bf16 activations (AVX512-VNNI and AVX512-BF16, no
    ///   AMX-INT8: AMD Zen 4 and 5), unless [`CpuFeatures::int8`] is off;
    /// - else bf16 where the CPU has AMX or AVX512-BF16 (on AMX machines int8 measured no faster
    ///   end to end);
    /// - f32 otherwise, and everywhere when [`CpuFeatures::bf16`] is off.
    pub fn auto() -> Self {
        let allowed = features();
        if !allowed.bf16 {
            Precision::F32
        } else if int8_bf16_activations() && allowed.int8 {
            Precision::Int8
        } else if amx_available() || dpbf16_available() {
            Precision::Bf16
        } else {
            Precision::F32
        }
    }

    /// The kernel this precision runs on here: `amx-int8`, `avx512-vnni`, `amx-bf16`,
    /// `avx512-bf16`, `avx512-f32` or `gemm-f32`.
    pub fn kernel(self) -> &'static str {
        match self {
            Precision::Bf16 if amx_available() => "amx-bf16",
            Precision::Bf16 if dpbf16_available() => "avx512-bf16",
            Precision::Int8 if amx_int8_available() => "amx-int8",
            Precision::Int8 if vnni_available() => "avx512-vnni",
            _ => f32_kernel(),
        }
    }

    /// What the model version is marked with when this precision runs here (`bf16a`, `int8a`
    /// or `int8`), so scores of different arithmetic never share a cache entry or a decision
    /// id; `None` where the products are f32. `bf16a`: bf16 products and bf16 activations
    /// between the layers (until 2026-12 the activations between blocks were f32, marked
    /// `bf16`), on either bf16 kernel (they differ only in the order of the f32 sums, as the
    /// f32 kernels do). `int8a`: int8 products on the VNNI kernel with bf16 activations
    /// between the layers ([`int8_bf16_activations`]); `int8`: with f32 activations.
    pub fn version_mark(self) -> Option<&'static str> {
        match self.kernel() {
            "amx-bf16" | "avx512-bf16" => Some("bf16a"),
            "avx512-vnni" if int8_bf16_activations() => Some("int8a"),
            "amx-int8" | "avx512-vnni" => Some("int8"),
            _ => None,
        }
    }
}

fn f32_kernel() -> &'static str {
    if avx512() {
        "avx512-f32"
    } else {
        "gemm-f32"
    }
}

/// Whether the AMX-INT8 kernel can run.
pub(crate) fn amx_int8_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::int8_available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AMX-BF16 kernel can run (the CPU has it and the kernel let this process use it).
pub(crate) fn amx_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        amx::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX512-VNNI int8 kernel can run (and the AMX-INT8 one, preferred, cannot).
pub(crate) fn vnni_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !amx::int8_available() && avx512() && avx512vnni::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the AVX512-BF16 kernel can run (and the tile kernel, which is preferred, cannot).
pub(crate) fn dpbf16_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        !amx::available() && avx512() && avx512bf16::available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Each column's int8 weight scale: its largest magnitude over 127 (1 for an all-zero column).
fn int8_scales(plain: &[f32], k: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|c| {
            let amax = (0..k).map(|i| plain[i * n + c].abs()).fold(0f32, f32::max);
            if amax > 0.0 {
                amax / 127.0
            } else {
                1.0
            }
        })
        .collect()
}

/// One weight in int8 at its column's scale (−127..=127).
fn int8_weight(w: f32, scale: f32) -> i8 {
    (w / scale).round().clamp(-127.0, 127.0) as i8
}

/// Depth granularity of bf16 `A` rows: the tile's depth (32 values), which both bf16 kernels
/// read.
const TK: usize = 32;

/// `n` rounded up to a multiple of `m`.
fn up(n: usize, m: usize) -> usize {
    n.div_ceil(m) * m
}

/// Rows of bf16 `A` for the bf16 kernels: `(depth stride, rows)`, the depth padded to a
/// multiple of 32 and the `m` rows to a multiple of 32 (the tile kernel's 2×2 tiles).
fn a16_shape(m: usize, k: usize) -> (usize, usize) {
    (up(k, TK), up(m, 2 * 16))
}

/// Weights prepared for [`matmul_fused`].
#[derive(Debug, Clone)]
pub(crate) struct PackedB {
    k: usize,
    n: usize,
    /// Row-major `k × n` (the fallback's input).
    plain: Vec<f32>,
    /// `[n / NR][k][NR]` when the AVX-512 kernel applies.
    panels: Option<Vec<f32>>,
    /// bf16 tiles (see `amx::pack`) when the AMX kernel applies.
    tiles: Option<Vec<u16>>,
    /// bf16 panels (see `avx512bf16::pack`) when the AVX512-BF16 kernel applies.
    pairs: Option<Vec<u16>>,
    /// int8 tiles and per-column scales (see `amx::pack_i8`) when the AMX-INT8 kernel applies.
    tiles8: Option<(Vec<i8>, Vec<f32>)>,
    /// int8 panels (see `avx512vnni::pack`) when the AVX512-VNNI kernel applies.
    #[cfg(target_arch = "x86_64")]
    quads: Option<avx512vnni::Quads>,
}

impl PackedB {
    pub(crate) fn new(plain: Vec<f32>, k: usize, n: usize, precision: Precision) -> Self {
        assert_eq!(plain.len(), k * n, "k × n weights");
        #[cfg(target_arch = "x86_64")]
        let tiles =
            (precision == Precision::Bf16 && amx::available()).then(|| amx::pack(&plain, k, n));
        #[cfg(target_arch = "x86_64")]
        let pairs = (precision == Precision::Bf16 && dpbf16_available())
            .then(|| avx512bf16::pack(&plain, k, n));
        #[cfg(target_arch = "x86_64")]
        let tiles8 = (precision == Precision::Int8 && amx::int8_available())
            .then(|| amx::pack_i8(&plain, k, n));
        #[cfg(target_arch = "x86_64")]
        let quads = (precision == Precision::Int8 && vnni_available())
            .then(|| avx512vnni::pack(&plain, k, n));
        #[cfg(not(target_arch = "x86_64"))]
        let (tiles, pairs, tiles8) = {
            let _ = precision;
            (None, None, None)
        };
        #[cfg(target_arch = "x86_64")]
        let tiled = tiles.is_some() || pairs.is_some() || tiles8.is_some() || quads.is_some();
        #[cfg(not(target_arch = "x86_64"))]
        let tiled = false;
        let panels = (!tiled && avx512() && n.is_multiple_of(NR)).then(|| {
            let mut p = Vec::with_capacity(k * n);
            for panel in 0..n / NR {
                for row in plain.chunks_exact(n) {
                    p.extend_from_slice(&row[panel * NR..][..NR]);
                }
            }
            p
        });
        Self {
            k,
            n,
            plain,
            panels,
            tiles,
            pairs,
            tiles8,
            #[cfg(target_arch = "x86_64")]
            quads,
        }
    }
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && features().avx512
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The engine's matrix-product rate on this machine at `precision`, in GFLOP/s: `threads`
/// threads each multiplying 1024×256 by 256×1024 (the shape class of the network's 1×1
/// convolutions) for about `seconds`. The physical ceiling the model's FLOPs are measured
/// against. `A` is f32, so at bf16 and int8 its conversion (rounding, quantisation) is counted
/// in, as in the network's first layer.
pub fn peak_gflops(threads: usize, seconds: f64, precision: Precision) -> f64 {
    let (m, k, n) = (1024usize, 256usize, 1024usize);
    let b = PackedB::new(vec![0.5; k * n], k, n, precision);
    let bias = vec![0.0; n];
    let lhs = vec![1.0; m * k];
    let e = Epilogue {
        bias: &bias,
        residual: None,
        residual16: None,
        relu: false,
    };
    let started = std::time::Instant::now();
    let done: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads.max(1))
            .map(|_| {
                s.spawn(|| {
                    let mut dst = vec![0.0; m * n];
                    let mut reps = 0usize;
                    while reps == 0 || started.elapsed().as_secs_f64() < seconds {
                        matmul_fused(&mut dst, &lhs, &b, m, e);
                        reps += 1;
                    }
                    std::hint::black_box(&dst);
                    reps
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("gemm thread"))
            .sum()
    });
    2.0 * (m * k * n) as f64 * done as f64 / started.elapsed().as_secs_f64() / 1e9
}

/// Where a product's rows go: f32, or rounded to bf16 for a next layer that runs on a bf16
/// kernel.
#[derive(Debug)]
pub(crate) enum Out<'a> {
    F32(&'a mut [f32]),
    Bf16(&'a mut [u16]),
}

impl Out<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Out::F32(d) => d.len(),
            Out::Bf16(d) => d.len(),
        }
    }
}

/// What is added to the product, and the activation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    /// One value per output column.
    pub(crate) bias: &'a [f32],
    /// Laid out like the output (a residual branch), if any.
    pub(crate) residual: Option<&'a [f32]>,
    /// The same in bf16 (only for the bf16 kernels, and never with `residual`).
    pub(crate) residual16: Option<&'a [u16]>,
    /// Apply ReLU.
    pub(crate) relu: bool,
}

impl Epilogue<'_> {
    /// Panics unless the bias has `n` values and the residual (one at most) `m × n`.
    fn check(&self, m: usize, n: usize) {
        assert!(self.bias.len() == n && self.residual.is_none_or(|r| r.len() == m * n));
        assert!(
            self.residual16.is_none_or(|r| r.len() == m * n),
            "bf16 residual shape"
        );
        assert!(
            self.residual.is_none() || self.residual16.is_none(),
            "one residual"
        );
    }
}

/// `dst[m×n] = act(lhs[m×k] · b + bias + residual)`; `dst`'s previous contents are ignored.
pub(crate) fn matmul_fused(dst: &mut [f32], lhs: &[f32], b: &PackedB, m: usize, e: Epilogue<'_>) {
    let (k, n) = (b.k, b.n);
    assert!(dst.len() == m * n && lhs.len() == m * k, "matrix shapes");
    assert!(e.bias.len() == n && e.residual.is_none_or(|r| r.len() == m * n));
    assert!(e.residual16.is_none(), "a bf16 residual only with bf16 `A`");
    #[cfg(target_arch = "x86_64")]
    if let Some(quads) = &b.quads {
        // SAFETY: `quads` exists only when `avx512vnni::available()` saw its instructions; the
        // shapes were checked above. (f32 `A` straight to the bytes, not through bf16.)
        #[allow(unsafe_code)]
        unsafe {
            avx512vnni::matmul(dst, lhs, quads, (m, n, k), e)
        };
        return;
    }
    if let Some((kp, mp)) = bf16_rows(b, m) {
        // A bf16 kernel: `A` rounded into this thread's buffer in its layout.
        A16.with_borrow_mut(|a16| {
            let a16 = grown(a16, mp * kp);
            pack_a16(lhs, k, kp, a16, |d, s| to_bf16(s, d));
            matmul_fused_bf16(Out::F32(dst), a16, b, m, e);
        });
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some((tiles, scales)) = &b.tiles8 {
        // SAFETY: `tiles8` exists only when `amx::int8_available()` saw AMX-INT8 and got the
        // tile permission; the shapes were checked above.
        #[allow(unsafe_code)]
        unsafe {
            amx::matmul_i8(dst, lhs, tiles, scales, (m, n, k), e)
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(panels) = &b.panels {
        // SAFETY: `panels` exists only when AVX-512F was detected at run time; the shapes were
        // checked above and `x86::matmul` indexes only inside them.
        #[allow(unsafe_code)]
        unsafe {
            x86::matmul(dst, lhs, panels, (m, n, k), e)
        };
        return;
    }
    match e.residual {
        Some(r) => {
            for (d, r) in dst.chunks_exact_mut(n).zip(r.chunks_exact(n)) {
                for ((d, r), b) in d.iter_mut().zip(r).zip(e.bias) {
                    *d = r + b;
                }
            }
        }
        None => dst
            .chunks_exact_mut(n)
            .for_each(|d| d.copy_from_slice(e.bias)),
    }
    gemm_crate(dst, lhs, &b.plain, (m, n, k));
    if e.relu {
        dst.iter_mut().for_each(|v| *v = v.max(0.0));
    }
}

impl PackedB {
    /// Whether these are int8 weights for the VNNI kernel on a CPU that also has AVX512-BF16,
    /// so that the kernel takes bf16 `A` ([`bf16_rows`]) and gives bf16 out.
    fn quads16(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            self.quads.is_some() && vnni_bf16()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }
}

/// Whether `b`'s products can take `A` as unsigned bytes that the caller quantised into the
/// rows itself ([`quantise_run16`], [`matmul_fused_bytes`]): int8 weights on the VNNI kernel
/// with bf16 activations.
pub(crate) fn takes_bytes(b: &PackedB) -> bool {
    b.quads16()
}

/// Each pixel's largest magnitude among its `c` bf16 values (`x`: whole pixels), into `amax`;
/// false, with `amax` unspecified, where a value is below zero (−0 is not), as the
/// quantiser's statistics of a row ([`amx::Lane::stats`]).
pub(crate) fn pixel_amax16(x: &[u16], c: usize, amax: &mut Vec<f32>) -> bool {
    assert!(c > 0 && x.len().is_multiple_of(c), "whole pixels");
    amax.clear();
    #[cfg(target_arch = "x86_64")]
    if vnni_bf16() {
        for px in x.chunks_exact(c) {
            // SAFETY: `vnni_bf16` saw AVX-512F and AVX512BW (the VNNI kernel's check).
            #[allow(unsafe_code)]
            let (m, negative) = unsafe { <u16 as amx::Lane>::stats(px) };
            if negative {
                return false;
            }
            amax.push(m);
        }
        return true;
    }
    unreachable!("bytes for the products only where the VNNI kernel takes them")
}

/// The scale factors of a row of `A` whose largest magnitude is `amax`, quantised unsigned:
/// `(255 / amax, amax / 255)`, both 0 where `amax` is 0; [`quantise_run16`] multiplies by the
/// first, [`matmul_fused_bytes`] takes the second.
pub(crate) fn unsigned_factors(amax: f32) -> (f32, f32) {
    #[cfg(target_arch = "x86_64")]
    {
        (amx::inv_levels(amax, true), amx::row_scale(amax, true))
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = amax;
        unreachable!("bytes for the products only where the VNNI kernel takes them")
    }
}

/// `src` (bf16 values, each magnitude at most the row's `amax`) × `inv` ([`unsigned_factors`]
/// of that `amax`), rounded to nearest even into unsigned bytes: exactly what the quantiser
/// writes for those values of the row.
pub(crate) fn quantise_run16(dst: &mut [u8], src: &[u16], inv: f32) {
    #[cfg(target_arch = "x86_64")]
    if vnni_bf16() {
        // SAFETY: `vnni_bf16` saw AVX-512F and AVX512BW; the lengths are checked inside.
        #[allow(unsafe_code)]
        unsafe {
            amx::quantise_values(src, inv, true, dst)
        };
        return;
    }
    let _ = (dst, src, inv);
    unreachable!("bytes for the products only where the VNNI kernel takes them")
}

/// [`matmul_fused_bf16`] with `A` already quantised: `a8` holds `m` rows of `lda ≥ k` unsigned
/// bytes (zero from `k` up to a multiple of 4), `row_scale` each row's scale
/// ([`unsigned_factors`]). Only where [`takes_bytes`].
pub(crate) fn matmul_fused_bytes(
    dst: Out<'_>,
    (a8, lda): (&[u8], usize),
    row_scale: &[f32],
    b: &PackedB,
    m: usize,
    e: Epilogue<'_>,
) {
    let (k, n) = (b.k, b.n);
    assert!(
        dst.len() == m * n && lda >= up(k, 4) && a8.len() >= m * lda && row_scale.len() == m,
        "matrix shapes"
    );
    e.check(m, n);
    #[cfg(target_arch = "x86_64")]
    if let Some(quads) = b.quads.as_ref().filter(|_| b.quads16()) {
        // SAFETY: `quads16` holds only when the VNNI kernel and AVX512-BF16 were detected; the
        // shapes were checked above.
        #[allow(unsafe_code)]
        unsafe {
            avx512vnni::multiply_bytes(dst, (a8, lda), row_scale, quads, (m, n, k), e)
        };
        return;
    }
    unreachable!("bytes for the products only where the VNNI kernel takes them")
}

/// Whether the int8 VNNI kernel runs with bf16 activations between the layers: AVX512-BF16 is
/// there for the epilogue's rounding (every CPU with VNNI and BF16: Zen 4 and later, Cooper
/// Lake), unless [`CpuFeatures::int8_bf16_activations`] is off.
pub(crate) fn int8_bf16_activations() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        vnni_available() && vnni_bf16()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether the VNNI kernel, wherever it runs (also where AMX-INT8 is picked over it, as in the
/// kernel tests), can take bf16 `A` and give bf16 out: AVX512-VNNI and AVX512-BF16, AVX-512 not
/// switched off, [`CpuFeatures::int8_bf16_activations`] on.
#[cfg(target_arch = "x86_64")]
fn vnni_bf16() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        avx512()
            && avx512vnni::available()
            && avx512bf16::available()
            && features().int8_bf16_activations
    })
}

/// The first `len` values of `buf`, grown (never shrunk) to hold them: a reused per-thread
/// scratch buffer (im2col, a kernel's rounded or quantised `A`).
pub(crate) fn grown<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    if buf.len() < len {
        buf.resize(len, T::default());
    }
    &mut buf[..len]
}

thread_local! {
    /// Each thread's `A` in bf16 for [`matmul_fused`] on a bf16 kernel.
    static A16: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `A` in bf16 for [`matmul_fused_bf16`]: `Some((depth stride, rows))` for `m` rows when `b`
/// runs on a kernel that takes bf16 `A` (the AMX tiles, AVX512-BF16, or the int8 VNNI kernel
/// where the CPU also has AVX512-BF16). A caller that gathers `A` (im2col)
/// writes it in bf16 straight away, instead of writing f32 that the kernel then reads back and
/// rounds.
pub(crate) fn bf16_rows(b: &PackedB, m: usize) -> Option<(usize, usize)> {
    (b.tiles.is_some() || b.pairs.is_some() || b.quads16()).then(|| a16_shape(m, b.k))
}

/// `A` in the tile kernel's layout ([`bf16_rows`]: depth stride `stride`, rows padded) from
/// `src`'s rows of `k` values, each written by `put`; zero from `k` to `stride` and in the rows
/// past `src`'s up to `out`'s end, so that every value the tiles read is written.
pub(crate) fn pack_a16<S>(
    src: &[S],
    k: usize,
    stride: usize,
    out: &mut [u16],
    put: impl Fn(&mut [u16], &[S]),
) {
    let (body, pad_rows) = out.split_at_mut(src.len() / k * stride);
    if k == stride {
        put(body, src);
    } else {
        for (d, s) in body.chunks_exact_mut(stride).zip(src.chunks_exact(k)) {
            let (vals, pad) = d.split_at_mut(k);
            put(vals, s);
            pad.fill(0);
        }
    }
    pad_rows.fill(0);
}

/// `out[i] = bf16(src[i])`, rounding to nearest even: `A`'s values for [`matmul_fused_bf16`].
pub(crate) fn to_bf16(src: &[f32], out: &mut [u16]) {
    assert_eq!(src.len(), out.len(), "bf16 conversion lengths");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512f") {
        // SAFETY: AVX-512F was detected.
        #[allow(unsafe_code)]
        unsafe {
            amx::to_bf16(src, out)
        };
        return;
    }
    for (o, &v) in out.iter_mut().zip(src) {
        *o = bf16_scalar(v);
    }
}

/// f32 → bf16, rounding to nearest even (NaN stays a quiet NaN).
#[inline]
pub(crate) fn bf16_scalar(x: f32) -> u16 {
    let b = x.to_bits();
    if x.is_nan() {
        return ((b >> 16) | 0x40) as u16;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// [`matmul_fused`] with `A` given in bf16, laid out as [`bf16_rows`] says (every value past
/// `m × k` zero). Only for weights whose kernel takes bf16 `A` ([`bf16_rows`] is `Some`).
pub(crate) fn matmul_fused_bf16(dst: Out<'_>, a16: &[u16], b: &PackedB, m: usize, e: Epilogue<'_>) {
    let (k, n) = (b.k, b.n);
    let (kp, mp) = bf16_rows(b, m).expect("weights packed for a kernel that takes bf16 `A`");
    assert!(dst.len() == m * n && a16.len() >= mp * kp, "matrix shapes");
    e.check(m, n);
    #[cfg(target_arch = "x86_64")]
    if let Some(tiles) = &b.tiles {
        // SAFETY: `tiles` exists only when `amx::available()` saw the CPU's AMX-BF16 and got
        // the kernel's permission for this process; the shapes were checked above (`a16` holds
        // the padded rows) and `amx::multiply` indexes only inside them.
        #[allow(unsafe_code)]
        unsafe {
            amx::multiply(dst, a16, tiles, (m, n, k), e)
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(pairs) = &b.pairs {
        // SAFETY: `pairs` exists only when AVX-512F and AVX512-BF16 were detected; the shapes
        // were checked above.
        #[allow(unsafe_code)]
        unsafe {
            avx512bf16::multiply(dst, a16, pairs, (m, n, k), e)
        };
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if let Some(quads) = b.quads.as_ref().filter(|_| b.quads16()) {
        // SAFETY: `quads16` holds only when the VNNI kernel and AVX512-BF16 were detected; the
        // shapes were checked above.
        #[allow(unsafe_code)]
        unsafe {
            avx512vnni::multiply(dst, a16, quads, (m, n, k), e)
        };
        return;
    }
    unreachable!("bf16 `A` only for weights packed for a kernel that takes it");
}

/// The `gemm` crate, single-threaded, accumulating into `dst`.
#[allow(unsafe_code)]
fn gemm_crate(dst: &mut [f32], lhs: &[f32], rhs: &[f32], (m, n, k): (usize, usize, usize)) {
    assert!(dst.len() == m * n && lhs.len() == m * k && rhs.len() == k * n);
    // SAFETY: the three slices hold exactly the m×n, m×k and k×n row-major matrices described by
    // the strides below (checked above), `dst` is borrowed mutably so nothing aliases it, and
    // `Parallelism::None` keeps the call on this thread.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            true,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            1,
            n as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod x86 {
    use super::{Epilogue, KC, MR, NR};
    use std::arch::x86_64::{
        __m512, _mm512_add_ps, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_max_ps, _mm512_set1_ps,
        _mm512_setzero_ps, _mm512_storeu_ps,
    };
    use std::ptr::null;

    /// Where a block's accumulators start: the epilogue's bias (plus residual) on the first
    /// pass over the depth, the partial sums already in `C` on later ones.
    #[derive(Clone, Copy)]
    struct Start {
        bias: *const f32,
        residual: *const f32,
    }

    /// # Safety
    /// AVX-512F must be available; `dst`, `lhs` and `panels` must hold `m×n`, `m×k` and
    /// `(n/NR)×k×NR` floats with `n % NR == 0`, and the epilogue's slices `n` and `m×n`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn matmul(
        dst: &mut [f32],
        lhs: &[f32],
        panels: &[f32],
        (m, n, k): (usize, usize, usize),
        e: Epilogue<'_>,
    ) {
        debug_assert!(panels.len() == k * n && n % NR == 0);
        let (c, a, b) = (dst.as_mut_ptr(), lhs.as_ptr(), panels.as_ptr());
        let res = e.residual.map_or(null(), <[f32]>::as_ptr);
        let mut k0 = 0;
        while k0 < k {
            let kc = KC.min(k - k0);
            let act = e.relu && k0 + kc == k;
            for p in 0..n / NR {
                // SAFETY (all pointer offsets below): row r < m, column p·NR + 32 ≤ n, depth
                // k0 + kc ≤ k, so every block lies inside its slice.
                let bp = unsafe { b.add(p * k * NR + k0 * NR) };
                let start = |r: usize| match k0 {
                    0 => Start {
                        bias: unsafe { e.bias.as_ptr().add(p * NR) },
                        residual: if res.is_null() {
                            null()
                        } else {
                            unsafe { res.add(r * n + p * NR) }
                        },
                    },
                    _ => Start {
                        bias: null(),
                        residual: null(),
                    },
                };
                let mut r = 0;
                while r + MR <= m {
                    let (ar, cr) = unsafe { (a.add(r * k + k0), c.add(r * n + p * NR)) };
                    unsafe { block::<MR>(kc, ar, k, bp, cr, n, start(r), act) };
                    r += MR;
                }
                let (ar, cr, st) = unsafe { (a.add(r * k + k0), c.add(r * n + p * NR), start(r)) };
                macro_rules! rest {
                    ($($i:literal)*) => {
                        match m - r {
                            0 => {}
                            $($i => unsafe { block::<$i>(kc, ar, k, bp, cr, n, st, act) },)*
                            _ => unreachable!("fewer than MR rows remain"),
                        }
                    };
                }
                rest!(1 2 3 4 5 6 7 8 9 10 11);
            }
            k0 += kc;
        }
    }

    /// `R` rows × 32 columns of `C` = start + `A[R × kc] · Bpanel[kc × 32]`, ReLU on the way
    /// out when `relu`. Strides `lda` and `ldc` (also the residual's) in floats.
    #[target_feature(enable = "avx512f")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    unsafe fn block<const R: usize>(
        kc: usize,
        a: *const f32,
        lda: usize,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        start: Start,
        relu: bool,
    ) {
        let mut acc: [[__m512; 2]; R] = [[_mm512_setzero_ps(); 2]; R];
        // SAFETY: the caller guarantees R rows of kc values at stride lda in `a`, kc × 32 values
        // in `b`, R rows of 32 values at stride ldc in `c` (and in `start.residual` when not
        // null), and 32 values at `start.bias` when not null.
        unsafe {
            if start.bias.is_null() {
                for (i, row) in acc.iter_mut().enumerate() {
                    row[0] = _mm512_loadu_ps(c.add(i * ldc));
                    row[1] = _mm512_loadu_ps(c.add(i * ldc + 16));
                }
            } else {
                let (b0, b1) = (
                    _mm512_loadu_ps(start.bias),
                    _mm512_loadu_ps(start.bias.add(16)),
                );
                for (i, row) in acc.iter_mut().enumerate() {
                    row[0] = b0;
                    row[1] = b1;
                    if !start.residual.is_null() {
                        let r = start.residual.add(i * ldc);
                        row[0] = _mm512_add_ps(b0, _mm512_loadu_ps(r));
                        row[1] = _mm512_add_ps(b1, _mm512_loadu_ps(r.add(16)));
                    }
                }
            }
            for kk in 0..kc {
                let b0 = _mm512_loadu_ps(b.add(kk * NR));
                let b1 = _mm512_loadu_ps(b.add(kk * NR + 16));
                for (i, row) in acc.iter_mut().enumerate() {
                    let av = _mm512_set1_ps(*a.add(i * lda + kk));
                    row[0] = _mm512_fmadd_ps(av, b0, row[0]);
                    row[1] = _mm512_fmadd_ps(av, b1, row[1]);
                }
            }
            let zero = _mm512_setzero_ps();
            for (i, row) in acc.iter().enumerate() {
                let (mut v0, mut v1) = (row[0], row[1]);
                if relu {
                    v0 = _mm512_max_ps(v0, zero);
                    v1 = _mm512_max_ps(v1, zero);
                }
                _mm512_storeu_ps(c.add(i * ldc), v0);
                _mm512_storeu_ps(c.add(i * ldc + 16), v1);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512bf16;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod avx512vnni;

#[cfg(target_arch = "x86_64")]
#[allow(unsafe_code)]
mod amx {
    //! The AMX-BF16 kernel. Tiles are 16 rows × 64 bytes: an `A` tile is 16 rows × 32 bf16
    //! (depth), a `B` tile 16 depth pairs × 16 columns × 2 bf16 (the pairs interleaved, as
    //! `tdpbf16ps` wants them), a `C` tile 16 × 16 f32. Registers: `tmm0..3` accumulate a 32×32
    //! block of `C`, `tmm4/5` hold two `A` tiles, `tmm6/7` two `B` tiles.
    use super::{up, Epilogue, Out, TK};
    use std::arch::asm;
    use std::cell::RefCell;
    use std::sync::OnceLock;
    /// Rows (of `A` and `C`) and columns (of `B` and `C`) per tile.
    const T: usize = 16;
    /// bf16 values per tile.
    const TILE: usize = T * TK;

    /// Linux: `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` lets this process use the
    /// tile data registers (the kernel refuses the instructions until then).
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;

    /// CPUID leaf 7 says AMX-TILE and AMX-BF16, and the kernel granted the tile state.
    pub(super) fn available() -> bool {
        static OK: OnceLock<bool> = OnceLock::new();
        *OK.get_or_init(|| {
            // SAFETY: CPUID is available on every x86-64 CPU; leaf 7 exists where leaf 0 says so.
            #[allow(unused_unsafe)]
            let (max_leaf, edx) = unsafe {
                let max = std::arch::x86_64::__cpuid(0).eax;
                (max, std::arch::x86_64::__cpuid_count(7, 0).edx)
            };
            let (tile, bf16) = (edx & (1 << 24) != 0, edx & (1 << 22) != 0);
            // The epilogue rounds to bf16 with AVX512-BF16 (every CPU with AMX-BF16 has it).
            max_leaf >= 7
                && tile
                && bf16
                && std::arch::is_x86_feature_detected!("avx512f")
                && std::arch::is_x86_feature_detected!("avx512bf16")
                // The int8 quantiser's (`quantise_rows`); every CPU with AMX has it.
                && std::arch::is_x86_feature_detected!("avx512bw")
                && request_tile_permission()
        })
    }

    /// [`available`], and CPUID leaf 7 says AMX-INT8.
    pub(super) fn int8_available() -> bool {
        if !available() {
            return false;
        }
        // SAFETY: as in `available`, which has checked that leaf 7 exists.
        #[allow(unused_unsafe)]
        let edx = unsafe { std::arch::x86_64::__cpuid_count(7, 0).edx };
        edx & (1 << 25) != 0
    }

    #[cfg(target_os = "linux")]
    fn request_tile_permission() -> bool {
        // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM only changes this process's permitted
        // XSAVE features; it reads and writes no memory of ours.
        let r = unsafe {
            libc::syscall(
                libc::SYS_arch_prctl,
                ARCH_REQ_XCOMP_PERM,
                XFEATURE_XTILEDATA,
            )
        };
        r == 0
    }

    #[cfg(not(target_os = "linux"))]
    fn request_tile_permission() -> bool {
        false
    }

    pub(super) use super::bf16_scalar as bf16;

    /// The row-major `k × n` weights as bf16 `B` tiles, zero-padded to a depth of a multiple of
    /// 32 and a width of a multiple of 32: tile `(j, t)` (columns `16j..`, depth `32t..`) at
    /// `(j · KT + t) · 512`, its row `p` holding `[B[32t+2p][16j+c], B[32t+2p+1][16j+c]]` for
    /// each column `c`.
    pub(super) fn pack(plain: &[f32], k: usize, n: usize) -> Vec<u16> {
        let (kt, nb) = (up(k, TK) / TK, up(n, 2 * T) / T);
        let mut out = Vec::with_capacity(nb * kt * TILE);
        for j in 0..nb {
            for t in 0..kt {
                for p in 0..T {
                    for c in 0..T {
                        for q in 0..2 {
                            let (kk, col) = (t * TK + 2 * p + q, j * T + c);
                            let v = if kk < k && col < n {
                                plain[kk * n + col]
                            } else {
                                0.0
                            };
                            out.push(bf16(v));
                        }
                    }
                }
            }
        }
        out
    }

    /// The tile configuration: palette 1, all eight tiles 16 rows × 64 bytes.
    #[repr(C, align(64))]
    struct TileConfig([u8; 64]);

    impl TileConfig {
        fn new() -> Self {
            let mut c = [0u8; 64];
            c[0] = 1;
            for t in 0..8 {
                c[16 + 2 * t] = 64; // bytes per row (u16, little-endian)
                c[48 + t] = T as u8; // rows
            }
            Self(c)
        }
    }

    /// Depth per int8 tile (bytes per `A` row).
    const TK8: usize = 64;
    /// Bytes per int8 tile.
    const TILE8: usize = T * TK8;

    /// The row-major `k × n` weights as int8 `B` tiles, each column scaled by its largest
    /// magnitude over 127 (the scales are returned): zero-padded to a depth of a multiple of 64
    /// and a width of a multiple of 32; tile `(j, t)` at `(j · KT + t) · 1024`, its row `p`
    /// holding `B[64t+4p .. 64t+4p+4][16j+c]` for each column `c`.
    pub(super) fn pack_i8(plain: &[f32], k: usize, n: usize) -> (Vec<i8>, Vec<f32>) {
        let (kt, nb) = (up(k, TK8) / TK8, up(n, 2 * T) / T);
        let scales = super::int8_scales(plain, k, n);
        let mut out = Vec::with_capacity(nb * kt * TILE8);
        for j in 0..nb {
            for t in 0..kt {
                for p in 0..T {
                    for c in 0..T {
                        for q in 0..4 {
                            let (kk, col) = (t * TK8 + 4 * p + q, j * T + c);
                            out.push(if kk < k && col < n {
                                super::int8_weight(plain[kk * n + col], scales[col])
                            } else {
                                0
                            });
                        }
                    }
                }
            }
        }
        (out, scales)
    }

    thread_local! {
        /// Each thread's `A` in int8 (rows and depth zero-padded), and each row's scale.
        static A8: RefCell<(Vec<u8>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }

    /// The int8 kernel: `A` is quantised per row (its largest magnitude maps to 255 where all of
    /// `A` is non-negative, `tdpbusd`; else to 127, `tdpbssd`), multiplied on the tiles into i32
    /// sums, and each sum scaled back by its row's and column's scales before the epilogue.
    ///
    /// # Safety
    /// [`int8_available`] must have returned true; `dst` and `lhs` must hold `m×n` and `m×k`
    /// floats, `tiles` and `scales` must be [`pack_i8`]'s output for `k × n`, and the
    /// epilogue's slices `n` and `m×n`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn matmul_i8(
        dst: &mut [f32],
        lhs: &[f32],
        tiles: &[i8],
        scales: &[f32],
        (m, n, k): (usize, usize, usize),
        e: Epilogue<'_>,
    ) {
        let (kp, mp, np) = (up(k, TK8), up(m, 2 * T), up(n, 2 * T));
        let kt = kp / TK8;
        assert!(tiles.len() == (np / T) * kt * TILE8 && scales.len() == n);
        let mut out = Out::F32(dst);
        A8.with_borrow_mut(|(a8, row_scale)| {
            row_scale.clear();
            row_scale.resize(mp, 0.0);
            let a8 = super::grown(a8, mp * kp);
            // SAFETY: the caller guarantees `int8_available`, which checked AVX-512F and AVX512BW.
            let unsigned = unsafe { quantise_rows(lhs, k, kp, a8, row_scale) };
            a8[m * kp..].fill(0);
            let a8 = &*a8;
            let (sa, sb) = (kp, 64usize);
            let depth = |ib: usize, jb: usize| {
                // SAFETY: each tile load reads 16 rows of 64 bytes inside `a8` (mp × kp bytes)
                // or inside one packed tile of `tiles`; the tiles are configured by `blocks`.
                unsafe {
                    let b0 = tiles.as_ptr().add(jb * kt * TILE8);
                    let b1 = b0.add(kt * TILE8);
                    let a0 = a8.as_ptr().add(ib * T * kp);
                    let a1 = a0.add(T * kp);
                    for t in 0..kt {
                        macro_rules! step {
                            ($op:literal) => {
                                asm!(
                                    "tileloadd tmm4, [{a0} + {sa}*1]",
                                    "tileloadd tmm5, [{a1} + {sa}*1]",
                                    "tileloadd tmm6, [{b0} + {sb}*1]",
                                    "tileloadd tmm7, [{b1} + {sb}*1]",
                                    concat!($op, " tmm0, tmm4, tmm6"),
                                    concat!($op, " tmm1, tmm4, tmm7"),
                                    concat!($op, " tmm2, tmm5, tmm6"),
                                    concat!($op, " tmm3, tmm5, tmm7"),
                                    a0 = in(reg) a0.add(t * TK8),
                                    a1 = in(reg) a1.add(t * TK8),
                                    b0 = in(reg) b0.add(t * TILE8),
                                    b1 = in(reg) b1.add(t * TILE8),
                                    sa = in(reg) sa,
                                    sb = in(reg) sb,
                                    options(nostack, readonly)
                                )
                            };
                        }
                        if unsigned {
                            step!("tdpbusd");
                        } else {
                            step!("tdpbssd");
                        }
                    }
                }
            };
            let mut block = [0f32; 4 * T * T];
            let done = |acc: &[i32; 4 * T * T], r0: usize, c0: usize| {
                let cols = (2 * T).min(n - c0);
                let rows = (2 * T).min(m - r0);
                if cols == 2 * T {
                    // 16 lanes at a time (a scalar loop here took ~40% of the kernel).
                    use std::arch::x86_64::{
                        _mm512_cvtepi32_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mul_ps,
                        _mm512_set1_ps, _mm512_storeu_ps,
                    };
                    // SAFETY: AVX-512F is the caller's guarantee; loads and stores stay inside
                    // `scales` (columns c0 .. c0 + 32 ≤ n), `acc` and `block` (32 × 32).
                    unsafe {
                        let cs = [
                            _mm512_loadu_ps(scales.as_ptr().add(c0)),
                            _mm512_loadu_ps(scales.as_ptr().add(c0 + T)),
                        ];
                        for r in 0..rows {
                            let rs = _mm512_set1_ps(row_scale[r0 + r]);
                            for (h, c) in cs.iter().enumerate() {
                                let at = r * 2 * T + h * T;
                                let v = _mm512_cvtepi32_ps(_mm512_loadu_si512(
                                    acc.as_ptr().add(at).cast(),
                                ));
                                let v = _mm512_mul_ps(_mm512_mul_ps(v, rs), *c);
                                _mm512_storeu_ps(block.as_mut_ptr().add(at), v);
                            }
                        }
                    }
                } else {
                    for r in 0..rows {
                        let rs = row_scale[r0 + r];
                        for (cc, (o, &s)) in block[r * 2 * T..][..cols]
                            .iter_mut()
                            .zip(&acc[r * 2 * T..][..cols])
                            .enumerate()
                        {
                            *o = s as f32 * rs * scales[c0 + cc];
                        }
                    }
                }
                // SAFETY: `int8_available` implies `available`, which checked AVX512-BF16.
                unsafe { write_block(&mut out, &block, (r0, c0), (m, n), e) };
            };
            // SAFETY: `int8_available` (the caller's guarantee) implies `available`; `depth`
            // runs tile instructions only.
            unsafe { blocks::<i32>((mp, np), depth, done) };
        });
    }

    /// Rows per group in [`quantise_rows`]: 8 rows of the deepest `A` (1152 bf16 values) are
    /// 18 KiB, inside L1 between the group's two reads, and the rows' reductions overlap.
    pub(super) const QUANTISE_GROUP: usize = 8;

    /// The integer levels of quantised `A`: 255 where all of it is non-negative (unsigned
    /// bytes), else 127 (signed).
    fn levels(unsigned: bool) -> f32 {
        if unsigned {
            255.0
        } else {
            127.0
        }
    }

    /// A value of `A` that [`quantise_rows`] reads: f32, or bf16 bits.
    pub(super) trait Lane: Copy {
        /// 16 values from `p` as f32.
        ///
        /// # Safety
        /// AVX-512F; `p` holds 16 values.
        unsafe fn load16(p: *const Self) -> std::arch::x86_64::__m512;
        /// One value as f32.
        fn wide(self) -> f32;
        /// The largest magnitude among `row`'s values, and whether one of them is below zero
        /// (−0 is not). Both read off the bits: the magnitudes of floats (not NaN) order as
        /// their bits with the sign cleared, and a value is below zero when its bits, as an
        /// unsigned integer, exceed the sign bit alone.
        ///
        /// # Safety
        /// AVX-512F and AVX512BW.
        unsafe fn stats(row: &[Self]) -> (f32, bool);
        /// `row`'s leading whole chunks of 32 values times `inv`, rounded to integers, into
        /// `out` as bytes (the low 8 bits of each), where this lane has a faster way than 16 at
        /// a time; how many values were done. Every product must round into −128..=255 (the
        /// quantiser's: `inv` finite, every `|v| · inv` at most 255), so that those bits are the
        /// saturated byte.
        ///
        /// # Safety
        /// AVX-512F and AVX512BW; `out` at least as long as `row`.
        #[inline]
        unsafe fn bytes32(_row: &[Self], _inv: f32, _out: &mut [u8]) -> usize {
            0
        }
    }

    impl Lane for f32 {
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn load16(p: *const f32) -> std::arch::x86_64::__m512 {
            // SAFETY: the caller's.
            unsafe { std::arch::x86_64::_mm512_loadu_ps(p) }
        }
        fn wide(self) -> f32 {
            self
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        unsafe fn stats(row: &[f32]) -> (f32, bool) {
            use std::arch::x86_64::{
                _mm512_and_si512, _mm512_cmpgt_epu32_mask, _mm512_loadu_si512, _mm512_max_epu32,
                _mm512_reduce_max_epu32, _mm512_set1_epi32, _mm512_setzero_si512,
            };
            const SIGN: u32 = 0x8000_0000;
            // SAFETY: each load reads a chunk of 16 values; AVX-512F is the caller's.
            unsafe {
                let clear = _mm512_set1_epi32(!SIGN as i32);
                let (mut mag, mut raw) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                let mut chunks = row.chunks_exact(16);
                for c in chunks.by_ref() {
                    let v = _mm512_loadu_si512(c.as_ptr().cast());
                    mag = _mm512_max_epu32(mag, _mm512_and_si512(v, clear));
                    raw = _mm512_max_epu32(raw, v);
                }
                let mut mag = _mm512_reduce_max_epu32(mag);
                let mut negative =
                    _mm512_cmpgt_epu32_mask(raw, _mm512_set1_epi32(SIGN as i32)) != 0;
                for v in chunks.remainder() {
                    mag = mag.max(v.to_bits() & !SIGN);
                    negative |= v.to_bits() > SIGN;
                }
                (f32::from_bits(mag), negative)
            }
        }
    }

    impl Lane for u16 {
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn load16(p: *const u16) -> std::arch::x86_64::__m512 {
            use std::arch::x86_64::{
                _mm256_loadu_si256, _mm512_castsi512_ps, _mm512_cvtepu16_epi32, _mm512_slli_epi32,
            };
            // SAFETY: the caller's; bf16 → f32 is the 16 bits moved up.
            unsafe {
                let h = _mm256_loadu_si256(p.cast());
                _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(h)))
            }
        }
        fn wide(self) -> f32 {
            f32::from_bits(u32::from(self) << 16)
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        unsafe fn stats(row: &[u16]) -> (f32, bool) {
            use std::arch::x86_64::{
                _mm512_and_si512, _mm512_cmpgt_epu16_mask, _mm512_loadu_si512, _mm512_max_epu16,
                _mm512_max_epu32, _mm512_reduce_max_epu32, _mm512_set1_epi16, _mm512_set1_epi32,
                _mm512_setzero_si512, _mm512_srli_epi32,
            };
            const SIGN: u16 = 0x8000;
            // SAFETY: each load reads a chunk of 32 values; AVX-512F and AVX512BW are the
            // caller's.
            unsafe {
                let clear = _mm512_set1_epi16(!SIGN as i16);
                let (mut mag, mut raw) = (_mm512_setzero_si512(), _mm512_setzero_si512());
                let mut chunks = row.chunks_exact(32);
                for c in chunks.by_ref() {
                    let v = _mm512_loadu_si512(c.as_ptr().cast());
                    mag = _mm512_max_epu16(mag, _mm512_and_si512(v, clear));
                    raw = _mm512_max_epu16(raw, v);
                }
                // The 32 magnitudes as 16 lanes of two: the low halves' and the high halves'.
                let low = _mm512_and_si512(mag, _mm512_set1_epi32(0xffff));
                let mut mag =
                    _mm512_reduce_max_epu32(_mm512_max_epu32(low, _mm512_srli_epi32::<16>(mag)));
                let mut negative =
                    _mm512_cmpgt_epu16_mask(raw, _mm512_set1_epi16(SIGN as i16)) != 0;
                for &v in chunks.remainder() {
                    mag = mag.max(u32::from(v & !SIGN));
                    negative |= v > SIGN;
                }
                (f32::from_bits(mag << 16), negative)
            }
        }
        #[target_feature(enable = "avx512f,avx512bw")]
        #[inline]
        unsafe fn bytes32(row: &[u16], inv: f32, out: &mut [u8]) -> usize {
            use std::arch::x86_64::{
                _mm256_storeu_si256, _mm512_and_si512, _mm512_castsi512_ps, _mm512_cvtepi16_epi8,
                _mm512_cvtps_epi32, _mm512_loadu_si512, _mm512_mul_ps, _mm512_or_si512,
                _mm512_set1_epi32, _mm512_set1_ps, _mm512_slli_epi32,
            };
            assert!(out.len() >= row.len(), "a byte per value");
            let mut done = 0;
            // SAFETY: 32 values read and 32 bytes written at `done`, inside `row` and `out`;
            // AVX-512F and AVX512BW are the caller's. A 32-bit lane holds two bf16 values: the
            // even one moved up and the odd one with the even one cleared are both f32.
            unsafe {
                let (vinv, high, low) = (
                    _mm512_set1_ps(inv),
                    _mm512_set1_epi32(0xffff_0000_u32 as i32),
                    _mm512_set1_epi32(0xffff),
                );
                while done + 32 <= row.len() {
                    let v = _mm512_loadu_si512(row.as_ptr().add(done).cast());
                    let even = _mm512_castsi512_ps(_mm512_slli_epi32::<16>(v));
                    let odd = _mm512_castsi512_ps(_mm512_and_si512(v, high));
                    let even = _mm512_cvtps_epi32(_mm512_mul_ps(even, vinv));
                    let odd = _mm512_cvtps_epi32(_mm512_mul_ps(odd, vinv));
                    // The 32 integers as 16-bit lanes in the row's order, then their low bytes.
                    let pairs =
                        _mm512_or_si512(_mm512_and_si512(even, low), _mm512_slli_epi32::<16>(odd));
                    _mm256_storeu_si256(
                        out.as_mut_ptr().add(done).cast(),
                        _mm512_cvtepi16_epi8(pairs),
                    );
                    done += 32;
                }
            }
            done
        }
    }

    /// Quantises each of the `lhs.len() / k` rows into `out` (rows of `kp` bytes, the depth
    /// padding zeroed) with its scale in `scale`; true when every value is non-negative (the
    /// bytes are then unsigned, 0..=255), else they are signed (−127..=127).
    ///
    /// One pass over groups of [`QUANTISE_GROUP`] rows, each group read twice while it is in L1:
    /// each row's largest magnitude and sign ([`Lane::stats`]), then its bytes. The bytes are
    /// unsigned while no row so far has a value below zero; at the first such value the rows
    /// before its group are quantised again, signed. The result is that of a first pass over
    /// the whole of `A` for its sign (the bytes are the same): after a ReLU no row is done
    /// twice, and in a signed layer (the stem's residual input) the first negative value comes
    /// in the first rows.
    ///
    /// # Safety
    /// AVX-512F and AVX512BW must be available.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantise_rows<S: Lane>(
        lhs: &[S],
        k: usize,
        kp: usize,
        out: &mut [u8],
        scale: &mut [f32],
    ) -> bool {
        let rows = lhs.len() / k;
        assert!(
            out.len() >= rows * kp && scale.len() >= rows && kp >= k,
            "quantised rows"
        );
        let row = |r: usize| &lhs[r * k..][..k];
        let mut unsigned = true;
        let mut first = 0;
        while first < rows {
            let group = first..(first + QUANTISE_GROUP).min(rows);
            let mut negative = false;
            for r in group.clone() {
                // SAFETY: the caller's features.
                let (amax, below_zero) = unsafe { S::stats(row(r)) };
                scale[r] = amax;
                negative |= below_zero;
            }
            if negative && unsigned {
                unsigned = false;
                for done in 0..first {
                    // SAFETY: as above.
                    unsafe {
                        quantise_row(row(done), scale[done], false, &mut out[done * kp..][..kp])
                    };
                }
            }
            for r in group.clone() {
                // SAFETY: as above.
                unsafe { quantise_row(row(r), scale[r], unsigned, &mut out[r * kp..][..kp]) };
            }
            first = group.end;
        }
        for sc in &mut scale[..rows] {
            *sc = row_scale(*sc, unsigned);
        }
        unsigned
    }

    /// One row of `k` values quantised into `dst` (`kp ≥ k` bytes, the rest zeroed) at the
    /// levels of `amax`, its largest magnitude: 255 unsigned, 127 signed (two's complement).
    ///
    /// # Safety
    /// AVX-512F and AVX512BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    unsafe fn quantise_row<S: Lane>(row: &[S], amax: f32, unsigned: bool, dst: &mut [u8]) {
        let (vals, pad) = dst.split_at_mut(row.len());
        pad.fill(0);
        // SAFETY: the caller's features; `vals` is `row`'s length.
        unsafe { quantise_values(row, inv_levels(amax, unsigned), unsigned, vals) }
    }

    /// `amax / levels` (0 where `amax` is 0): the scale that takes a row's sums back to f32.
    pub(super) fn row_scale(amax: f32, unsigned: bool) -> f32 {
        if amax > 0.0 {
            amax / levels(unsigned)
        } else {
            0.0
        }
    }

    /// `levels / amax` (0 where `amax` is 0): what a row whose largest magnitude is `amax` is
    /// multiplied by before rounding.
    pub(super) fn inv_levels(amax: f32, unsigned: bool) -> f32 {
        if amax > 0.0 {
            levels(unsigned) / amax
        } else {
            0.0
        }
    }

    /// `row`'s values times `inv`, rounded to nearest even and saturated, into `vals` (as long
    /// as `row`): 0..=255 unsigned, −127..=127 signed (two's complement). Every `|v| · inv` must
    /// be at most the levels ([`inv_levels`] of a magnitude at least the row's largest).
    ///
    /// # Safety
    /// AVX-512F and AVX512BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    pub(super) unsafe fn quantise_values<S: Lane>(
        row: &[S],
        inv: f32,
        unsigned: bool,
        vals: &mut [u8],
    ) {
        use std::arch::x86_64::{
            _mm512_cvtps_epi32, _mm512_cvtsepi32_epi8, _mm512_cvtusepi32_epi8, _mm512_mul_ps,
            _mm512_set1_ps, _mm_storeu_si128,
        };
        let k = row.len();
        assert_eq!(vals.len(), k, "one byte per value");
        // |v| ≤ amax, so every |v · inv| rounds to at most the levels.
        // SAFETY: the caller's features; `vals` is `row`'s length.
        let mut done = if inv.is_finite() {
            unsafe { S::bytes32(row, inv, vals) }
        } else {
            0
        };
        // SAFETY: 16 values are read at `done` and 16 bytes written there, inside `row` and
        // `vals` (both `k` long); conversions round to nearest even (the default MXCSR mode)
        // and saturate.
        unsafe {
            let vinv = _mm512_set1_ps(inv);
            while done + 16 <= k {
                let q = _mm512_cvtps_epi32(_mm512_mul_ps(S::load16(row.as_ptr().add(done)), vinv));
                let b = if unsigned {
                    _mm512_cvtusepi32_epi8(q)
                } else {
                    _mm512_cvtsepi32_epi8(q)
                };
                _mm_storeu_si128(vals.as_mut_ptr().add(done).cast(), b);
                done += 16;
            }
        }
        for (o, v) in vals[done..].iter_mut().zip(&row[done..]) {
            let q = (v.wide() * inv).round_ties_even();
            *o = if unsigned {
                q.clamp(0.0, 255.0) as u8
            } else {
                q.clamp(-127.0, 127.0) as i8 as u8
            };
        }
    }

    /// `dst = act(A · B + bias + residual)` with `A` in bf16: `a16` holds
    /// [`super::a16_shape`]'s rows × depth stride, every value past `m × k` zero.
    ///
    /// # Safety
    /// [`available`] must have returned true (it has checked AVX512-BF16 as well); `tiles` must
    /// be [`pack`]'s output for `k × n`, `dst` (each of its outputs) must hold `m×n` values, and
    /// the epilogue's slices `n` and `m×n` (`residual16` too).
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn multiply(
        mut dst: Out<'_>,
        a16: &[u16],
        tiles: &[u16],
        (m, n, k): (usize, usize, usize),
        e: Epilogue<'_>,
    ) {
        let (kp, mp, np) = (up(k, TK), up(m, 2 * T), up(n, 2 * T));
        let kt = kp / TK;
        debug_assert_eq!(tiles.len(), (np / T) * kt * TILE);
        assert!(a16.len() >= mp * kp, "bf16 rows of A");
        let (sa, sb) = (kp * 2, 64usize);
        let depth = |ib: usize, jb: usize| {
            // SAFETY: each tile load reads 16 rows of 64 bytes inside `a16` (mp × kp) or inside
            // one packed tile of `tiles`; the tiles are configured by `blocks`.
            unsafe {
                let b0 = tiles.as_ptr().add(jb * kt * TILE);
                let b1 = b0.add(kt * TILE);
                let a0 = a16.as_ptr().add(ib * T * kp);
                let a1 = a0.add(T * kp);
                for t in 0..kt {
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}*1]",
                        "tileloadd tmm5, [{a1} + {sa}*1]",
                        "tileloadd tmm6, [{b0} + {sb}*1]",
                        "tileloadd tmm7, [{b1} + {sb}*1]",
                        "tdpbf16ps tmm0, tmm4, tmm6",
                        "tdpbf16ps tmm1, tmm4, tmm7",
                        "tdpbf16ps tmm2, tmm5, tmm6",
                        "tdpbf16ps tmm3, tmm5, tmm7",
                        a0 = in(reg) a0.add(t * TK),
                        a1 = in(reg) a1.add(t * TK),
                        b0 = in(reg) b0.add(t * TILE),
                        b1 = in(reg) b1.add(t * TILE),
                        sa = in(reg) sa,
                        sb = in(reg) sb,
                        options(nostack, readonly)
                    );
                }
            }
        };
        // SAFETY: the caller guarantees the tile state; `depth` runs tile instructions only.
        unsafe {
            blocks::<f32>((mp, np), depth, |acc, r0, c0| {
                // `available` (the caller's guarantee) checked AVX512-BF16; the shapes are the
                // caller's.
                write_block(&mut dst, acc, (r0, c0), (m, n), e)
            })
        };
    }

    /// The 2×2-tile loop both kernels share: for each 32×32 block of `C` (`mp × np`, multiples
    /// of 32), zero the accumulators `tmm0..3`, let `depth(ib, jb)` (the block's first row and
    /// column tile) multiply into them, store them as 32×32 four-byte sums (f32 or i32) and hand
    /// those to `done(sums, first row, first column)`.
    ///
    /// # Safety
    /// [`available`] must have returned true; `depth` may use `tmm0..7` as configured here
    /// (palette 1, every tile 16 rows × 64 bytes) and must leave its sums in `tmm0..3`.
    #[inline(always)]
    unsafe fn blocks<S: Copy + Default>(
        (mp, np): (usize, usize),
        mut depth: impl FnMut(usize, usize),
        mut done: impl FnMut(&[S; 4 * T * T], usize, usize),
    ) {
        assert_eq!(std::mem::size_of::<S>(), 4, "four-byte sums");
        let cfg = TileConfig::new();
        let mut acc = [S::default(); 4 * T * T];
        let sc = 2 * T * 4;
        // SAFETY: the configuration is a valid palette-1 layout; each store writes 16 rows of
        // 64 bytes inside `acc` (32 × 32 four-byte values).
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly));
            for jb in (0..np / T).step_by(2) {
                for ib in (0..mp / T).step_by(2) {
                    asm!(
                        "tilezero tmm0",
                        "tilezero tmm1",
                        "tilezero tmm2",
                        "tilezero tmm3",
                        options(nostack, nomem)
                    );
                    depth(ib, jb);
                    let c = acc.as_mut_ptr();
                    asm!(
                        "tilestored [{c0} + {sc}*1], tmm0",
                        "tilestored [{c1} + {sc}*1], tmm1",
                        "tilestored [{c2} + {sc}*1], tmm2",
                        "tilestored [{c3} + {sc}*1], tmm3",
                        c0 = in(reg) c,
                        c1 = in(reg) c.add(T),
                        c2 = in(reg) c.add(T * 2 * T),
                        c3 = in(reg) c.add(T * 2 * T + T),
                        sc = in(reg) sc,
                        options(nostack)
                    );
                    done(&acc, ib * T, jb * T);
                }
            }
            asm!("tilerelease", options(nostack, nomem));
        }
    }

    /// `out[i] = bf16(src[i])`: 16 at a time with AVX512-BF16's `vcvtneps2bf16` where the CPU has
    /// it (every CPU with AMX-BF16 so far; it rounds to nearest even, as [`bf16`] does, and
    /// treats subnormal inputs as zero), else one by one. Called once per run of values, not per
    /// 16: the check and the call are not free (per row of `A` they took a quarter of the
    /// model's time outside the tiles).
    ///
    /// # Safety
    /// AVX-512F must be available.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn to_bf16(src: &[f32], out: &mut [u16]) {
        debug_assert_eq!(src.len(), out.len());
        static BF16_INSNS: OnceLock<bool> = OnceLock::new();
        if *BF16_INSNS.get_or_init(|| std::arch::is_x86_feature_detected!("avx512bf16")) {
            // SAFETY: AVX512-BF16 (and AVX-512F) were detected.
            unsafe { to_bf16_insns(src, out) }
        } else {
            for (o, &v) in out.iter_mut().zip(src) {
                *o = bf16(v);
            }
        }
    }

    /// [`to_bf16`] with `vcvtneps2bf16`.
    ///
    /// # Safety
    /// AVX-512F and AVX512-BF16 must be available.
    #[target_feature(enable = "avx512bf16,avx512f")]
    unsafe fn to_bf16_insns(src: &[f32], out: &mut [u16]) {
        use std::arch::x86_64::{
            __m256i, _mm256_storeu_si256, _mm512_cvtneps_pbh, _mm512_loadu_ps,
        };
        let n = src.len().min(out.len());
        let mut done = 0;
        while done + 16 <= n {
            // SAFETY: 16 floats are read at `done` and 16 u16 written there, inside both
            // slices; the caller guarantees the instructions.
            unsafe {
                let v = _mm512_loadu_ps(src.as_ptr().add(done));
                let h: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v));
                _mm256_storeu_si256(out.as_mut_ptr().add(done).cast(), h);
            }
            done += 16;
        }
        for (o, &v) in out[done..n].iter_mut().zip(&src[done..n]) {
            *o = bf16(v);
        }
    }

    /// `dst[r0.., c0..]` (the part of the 32×32 block inside `m × n`) = act(acc + bias +
    /// residual), stored as f32 or rounded to bf16 ([`super::avx512bf16::store_row`]). A full
    /// 32-column block (every block of the network's layers) runs on AVX-512, two vectors per
    /// row; a partial one value by value.
    ///
    /// # Safety
    /// AVX-512F and AVX512-BF16 must be available ([`available`] checks both); `dst` must hold
    /// `m × n` values, and the epilogue's slices `n` and `m × n`.
    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn write_block(
        dst: &mut Out<'_>,
        acc: &[f32; 4 * T * T],
        (r0, c0): (usize, usize),
        (m, n): (usize, usize),
        e: Epilogue<'_>,
    ) {
        use super::avx512bf16::{store_partial, store_row};
        use std::arch::x86_64::_mm512_loadu_ps;
        let (rows, cols) = ((2 * T).min(m - r0), (2 * T).min(n - c0));
        debug_assert!(dst.len() == m * n && e.residual.is_none_or(|r| r.len() == m * n));
        debug_assert!(e.residual16.is_none_or(|r| r.len() == m * n));
        if cols < 2 * T {
            for r in 0..rows {
                let sums = &acc[r * 2 * T..][..cols];
                store_partial(dst, (r0 + r) * n + c0, sums, c0, &e);
            }
            return;
        }
        // SAFETY: the caller guarantees the instructions and the lengths: each row reads 32
        // sums inside `acc`, 32 biases at `c0 + 32 <= n`, and reads (residual) and writes
        // (`dst`) 32 values at `(r0 + r)·n + c0 .. + 32 <= m·n`.
        unsafe {
            let bias = e.bias.as_ptr().add(c0);
            let b = (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(T)));
            for r in 0..rows {
                let s = acc.as_ptr().add(r * 2 * T);
                let v = (_mm512_loadu_ps(s), _mm512_loadu_ps(s.add(T)));
                store_row(dst, (r0 + r) * n + c0, v, b, &e);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::bf16;

        #[test]
        fn bf16_rounds_to_nearest_even() {
            let back = |h: u16| f32::from_bits(u32::from(h) << 16);
            for (x, want) in [
                (1.0f32, 1.0f32),
                (-2.5, -2.5),
                (0.0, 0.0),
                (f32::from_bits(0x3f80_8000), 1.0), // a tie: down to even
                (f32::from_bits(0x3f81_8000), f32::from_bits(0x3f82_0000)), // a tie: up to even
                (f32::from_bits(0x3f80_8001), f32::from_bits(0x3f81_0000)),
            ] {
                assert_eq!(back(bf16(x)), want, "{x}");
            }
            assert!(back(bf16(f32::NAN)).is_nan());
            assert_eq!(back(bf16(f32::INFINITY)), f32::INFINITY);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value the kernel multiplies: `x` itself in f32, rounded to bf16 on a bf16 kernel.
    fn as_multiplied(x: f32, b: &PackedB) -> f32 {
        if bf16_rows(b, 1).is_some() {
            return f32::from_bits(u32::from(bf16_scalar(x)) << 16);
        }
        x
    }

    /// Every kernel this machine can run, with its weights: the one each precision picks, and
    /// the AVX512-BF16 kernel where the tile kernel is picked over it (so that it is checked on
    /// CPUs with AMX too).
    fn kernels(w: &[f32], k: usize, n: usize) -> Vec<(&'static str, PackedB)> {
        let mut all: Vec<_> = [Precision::F32, Precision::Bf16]
            .into_iter()
            .map(|p| (p.kernel(), PackedB::new(w.to_vec(), k, n, p)))
            .collect();
        #[cfg(target_arch = "x86_64")]
        if amx_available() && avx512bf16::available() {
            let mut b = PackedB::new(w.to_vec(), k, n, Precision::F32);
            (b.panels, b.pairs) = (None, Some(avx512bf16::pack(w, k, n)));
            all.push(("avx512-bf16", b));
        }
        all
    }

    /// `A · B` as the int8 kernel computes it: `A` quantised per row (to 0..=255 when all of it
    /// is non-negative, else −127..=127), `B` per column (−127..=127), integer sums scaled back.
    fn int8_product(a: &[f32], w: &[f32], (m, n, k): (usize, usize, usize)) -> Vec<f32> {
        let unsigned = a.iter().all(|&v| v >= 0.0);
        let levels = if unsigned { 255.0 } else { 127.0 };
        let col_scale: Vec<f32> = (0..n)
            .map(|c| {
                let amax = (0..k).map(|i| w[i * n + c].abs()).fold(0f32, f32::max);
                if amax > 0.0 {
                    amax / 127.0
                } else {
                    1.0
                }
            })
            .collect();
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            let row = &a[r * k..][..k];
            let amax = row.iter().fold(0f32, |x, v| x.max(v.abs()));
            let (scale, inv) = if amax > 0.0 {
                (amax / levels, levels / amax)
            } else {
                (0.0, 0.0)
            };
            for c in 0..n {
                let sum: i64 = (0..k)
                    .map(|i| {
                        let qa = (row[i] * inv).round_ties_even() as i64;
                        let qw = (w[i * n + c] / col_scale[c]).round().clamp(-127.0, 127.0) as i64;
                        qa * qw
                    })
                    .sum();
                out[r * n + c] = sum as f32 * scale * col_scale[c];
            }
        }
        out
    }

    /// `A`'s rows quantised as the int8 kernels define it: `(bytes, scales, unsigned)`, rows
    /// of `kp` bytes, the padding zero.
    #[cfg(target_arch = "x86_64")]
    fn quantised_definition(a: &[f32], k: usize, kp: usize) -> (Vec<u8>, Vec<f32>, bool) {
        let unsigned = a.iter().all(|&v| v >= 0.0);
        let levels = if unsigned { 255.0 } else { 127.0 };
        let (mut bytes, mut scales) = (Vec::new(), Vec::new());
        for row in a.chunks_exact(k) {
            let amax = row.iter().fold(0f32, |x, v| x.max(v.abs()));
            let inv = if amax > 0.0 { levels / amax } else { 0.0 };
            scales.push(if amax > 0.0 { amax / levels } else { 0.0 });
            for &v in row {
                let q = (v * inv).round_ties_even();
                bytes.push(if unsigned {
                    q.clamp(0.0, 255.0) as u8
                } else {
                    q.clamp(-127.0, 127.0) as i8 as u8
                });
            }
            bytes.resize(bytes.len() + kp - k, 0);
        }
        (bytes, scales, unsigned)
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn quantised_rows_are_the_definition_wherever_the_first_negative_value_is() {
        if !(std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw"))
        {
            eprintln!("no AVX-512F and AVX512BW here: the int8 kernels do not run");
            return;
        }
        let widen = |h: u16| f32::from_bits(u32::from(h) << 16);
        // Three groups of rows (the last one short).
        let m = 2 * amx::QUANTISE_GROUP + 3;
        for k in [7, 16, 27, 32, 33, 64, 130, 300] {
            let kp = up(k, 32);
            // No negative value (only −0, which counts as non-negative), then one in the first
            // value, in the first row of the second group (the first group quantised again),
            // and in the very last value (two groups again).
            let second = amx::QUANTISE_GROUP * k + k / 2;
            for negative_at in [None, Some(0), Some(second), Some(m * k - 1)] {
                let mut a: Vec<f32> = (0..m * k).map(|i| (i * 37 % 101) as f32 / 25.0).collect();
                a.iter_mut().step_by(5).for_each(|v| *v = -0.0);
                // An all-zero row (scale 0) and a row whose largest value is in its tail.
                a[2 * k..3 * k].fill(0.0);
                a[6 * k - 1] = 9.0;
                if let Some(at) = negative_at {
                    a[at] = -3.5;
                }
                let mut a16 = vec![0u16; m * k];
                to_bf16(&a, &mut a16);
                let a_rounded: Vec<f32> = a16.iter().map(|&h| widen(h)).collect();
                let cases = [
                    ("f32", quantised_definition(&a, k, kp), None),
                    ("bf16", quantised_definition(&a_rounded, k, kp), Some(&a16)),
                ];
                for (lane, (want, want_scales, want_unsigned), bits) in cases {
                    let mut got = vec![0xa5u8; m * kp];
                    let mut scales = vec![f32::NAN; m];
                    // SAFETY: AVX-512F and AVX512BW were detected.
                    #[allow(unsafe_code)]
                    let unsigned = unsafe {
                        match bits {
                            Some(a16) => amx::quantise_rows(a16, k, kp, &mut got, &mut scales),
                            None => amx::quantise_rows(&a, k, kp, &mut got, &mut scales),
                        }
                    };
                    let case = format!("{lane} k {k}, negative at {negative_at:?}");
                    assert_eq!(unsigned, want_unsigned, "{case}");
                    assert_eq!(unsigned, negative_at.is_none(), "{case}");
                    assert_eq!(scales, want_scales, "{case}");
                    assert_eq!(got, want, "{case}");
                }
            }
        }
    }

    #[test]
    fn int8_matches_its_quantised_definition_and_stays_near_f32() {
        if Precision::Int8.version_mark().is_none() {
            eprintln!("no AMX-INT8 or AVX512-VNNI here: the int8 precision runs the f32 kernel");
            return;
        }
        for (m, n, k, shift) in [
            (29, 64, 300, 0.0),
            (12, 32, 27, 0.0),
            (5, 96, 7, 1.0),
            (17, 20, 33, 1.0),
            (70, 48, 64, 0.0),
            (33, 40, 130, 1.0),
        ] {
            // `shift` 1.0 makes `A` non-negative (the unsigned path), 0.0 leaves it signed.
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0 + shift)
                .collect();
            let w: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 40.0)
                .collect();
            let res: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 - 3.0).collect();
            let bias: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
            let product = int8_product(&a, &w, (m, n, k));
            let mut packed = vec![(
                Precision::Int8.kernel(),
                PackedB::new(w.clone(), k, n, Precision::Int8),
            )];
            // The VNNI kernel on CPUs where the tiles are picked over it.
            #[cfg(target_arch = "x86_64")]
            if amx::int8_available() && avx512vnni::available() {
                let mut b = PackedB::new(w.clone(), k, n, Precision::F32);
                (b.panels, b.quads) = (None, Some(avx512vnni::pack(&w, k, n)));
                packed.push(("avx512-vnni", b));
            }
            for ((kernel, b), (relu, residual)) in packed
                .iter()
                .flat_map(|kb| [(kb, (false, None)), (kb, (true, Some(&res[..])))])
            {
                let mut got = vec![f32::NAN; m * n];
                let e = Epilogue {
                    bias: &bias,
                    residual,
                    residual16: None,
                    relu,
                };
                matmul_fused(&mut got, &a, b, m, e);
                for r in 0..m {
                    for c in 0..n {
                        let at = r * n + c;
                        let mut want = product[at] + bias[c] + residual.map_or(0.0, |x| x[at]);
                        let mut exact = bias[c] + residual.map_or(0.0, |x| x[at]);
                        let mut magnitude = 0.0;
                        for i in 0..k {
                            exact += a[r * k + i] * w[i * n + c];
                            magnitude += (a[r * k + i] * w[i * n + c]).abs();
                        }
                        if relu {
                            want = want.max(0.0);
                            exact = exact.max(0.0);
                        }
                        let g = got[at];
                        assert!(
                            (g - want).abs() < 1e-4 * want.abs().max(1.0),
                            "{kernel} {m}x{n}x{k} at ({r}, {c}): {g} vs quantised {want}"
                        );
                        // Quantisation error: at most half a step of each operand per product.
                        assert!(
                            (g - exact).abs() <= 0.02 * magnitude + 1e-4,
                            "{kernel} {m}x{n}x{k} at ({r}, {c}): {g} vs f32 {exact}"
                        );
                    }
                }
            }
            // The VNNI kernel's bf16 path (bf16 activations between layers): `A` in the bf16
            // layout, quantised from its bf16 values, out in f32 and, with a bf16 residual, in
            // bf16.
            let widen = |h: u16| f32::from_bits(u32::from(h) << 16);
            let mut a_rounded = vec![0u16; m * k];
            to_bf16(&a, &mut a_rounded);
            let a_rounded: Vec<f32> = a_rounded.into_iter().map(widen).collect();
            let product16 = int8_product(&a_rounded, &w, (m, n, k));
            let mut res16 = vec![0u16; m * n];
            to_bf16(&res, &mut res16);
            #[cfg(target_arch = "x86_64")]
            if vnni_bf16() && !packed.iter().any(|(_, b)| bf16_rows(b, m).is_some()) {
                panic!("the VNNI kernel can take bf16 `A` here, but no weights were packed for it");
            }
            for (kernel, b) in &packed {
                let Some((kp, mp)) = bf16_rows(b, m) else {
                    eprintln!("{kernel}: f32 `A` only here (no AVX512-BF16 beside the kernel)");
                    continue;
                };
                let mut a16 = vec![u16::MAX; mp * kp];
                pack_a16(&a, k, kp, &mut a16, |d, s| to_bf16(s, d));
                let mut got = vec![f32::NAN; m * n];
                let plain = Epilogue {
                    bias: &bias,
                    residual: None,
                    residual16: None,
                    relu: false,
                };
                matmul_fused_bf16(Out::F32(&mut got), &a16, b, m, plain);
                let mut got16 = vec![u16::MAX; m * n];
                let e = Epilogue {
                    residual16: Some(&res16),
                    relu: true,
                    ..plain
                };
                matmul_fused_bf16(Out::Bf16(&mut got16), &a16, b, m, e);
                for at in 0..m * n {
                    let want = product16[at] + bias[at % n];
                    let g = got[at];
                    assert!(
                        (g - want).abs() < 1e-4 * want.abs().max(1.0),
                        "{kernel} bf16 A {m}x{n}x{k} at {at}: {g} vs quantised {want}"
                    );
                    let want = (want + widen(res16[at])).max(0.0);
                    let g = widen(got16[at]);
                    // The rounding to bf16 (2⁻⁹ relative) on top.
                    assert!(
                        (g - want).abs() < 5e-3 * want.abs().max(1.0),
                        "{kernel} bf16 A, bf16 out {m}x{n}x{k} at {at}: {g} vs quantised {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn matches_the_definition_across_block_edges() {
        // m not a multiple of MR nor of the tiles' 32 rows, k across two KC passes and not a
        // multiple of the tiles' depth, n one and several panels, and n the f32 packed kernel
        // does not take (and not a multiple of the tiles' 16 columns).
        for (m, n, k) in [
            (29, 64, 300),
            (12, 32, 27),
            (5, 96, 7),
            (17, 20, 33),
            (70, 48, 64),
        ] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let w: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 40.0)
                .collect();
            let res: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 - 3.0).collect();
            let bias: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
            for (kernel, b) in kernels(&w, k, n) {
                for (relu, residual) in [(false, None), (true, Some(&res[..]))] {
                    let mut got = vec![f32::NAN; m * n];
                    let e = Epilogue {
                        bias: &bias,
                        residual,
                        residual16: None,
                        relu,
                    };
                    matmul_fused(&mut got, &a, &b, m, e);
                    for r in 0..m {
                        for c in 0..n {
                            let mut want = bias[c] + residual.map_or(0.0, |x| x[r * n + c]);
                            for i in 0..k {
                                want += as_multiplied(a[r * k + i], &b)
                                    * as_multiplied(w[i * n + c], &b);
                            }
                            if relu {
                                want = want.max(0.0);
                            }
                            let g = got[r * n + c];
                            assert!(
                                (g - want).abs() < 1e-3 * want.abs().max(1.0),
                                "{kernel} {m}x{n}x{k} at ({r}, {c}): {g} vs {want}"
                            );
                        }
                    }
                }
                // A bf16 kernel's own path: bf16 `A` in its layout, a bf16 residual, bf16 out
                // (the next layer's input), each value the definition rounded once.
                let Some((kp, mp)) = bf16_rows(&b, m) else {
                    continue;
                };
                let mut a16 = vec![u16::MAX; mp * kp];
                pack_a16(&a, k, kp, &mut a16, |d, s| to_bf16(s, d));
                let mut res16 = vec![0u16; m * n];
                to_bf16(&res, &mut res16);
                let widen = |h: u16| f32::from_bits(u32::from(h) << 16);
                let mut got16 = vec![u16::MAX; m * n];
                let e = Epilogue {
                    bias: &bias,
                    residual: None,
                    residual16: Some(&res16),
                    relu: true,
                };
                matmul_fused_bf16(Out::Bf16(&mut got16), &a16, &b, m, e);
                for r in 0..m {
                    for c in 0..n {
                        let mut want = bias[c] + widen(res16[r * n + c]);
                        for i in 0..k {
                            want +=
                                as_multiplied(a[r * k + i], &b) * as_multiplied(w[i * n + c], &b);
                        }
                        let want = want.max(0.0);
                        let g = widen(got16[r * n + c]);
                        // The rounding to bf16 (2⁻⁹ relative) on top of the sums' order.
                        assert!(
                            (g - want).abs() < 5e-3 * want.abs().max(1.0),
                            "{kernel} bf16 out {m}x{n}x{k} at ({r}, {c}): {g} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_kernel_named_is_the_one_packed() {
        let b = PackedB::new(vec![1.0; 64 * 32], 64, 32, Precision::Bf16);
        assert_eq!(
            b.tiles.is_some(),
            Precision::Bf16.kernel() == "amx-bf16",
            "{}",
            Precision::Bf16.kernel()
        );
        assert_eq!(
            b.pairs.is_some(),
            Precision::Bf16.kernel() == "avx512-bf16",
            "{}",
            Precision::Bf16.kernel()
        );
        assert!(b.tiles.is_none() || b.pairs.is_none());
        let q = PackedB::new(vec![1.0; 64 * 32], 64, 32, Precision::Int8);
        assert_eq!(
            q.tiles8.is_some(),
            Precision::Int8.kernel() == "amx-int8",
            "{}",
            Precision::Int8.kernel()
        );
        #[cfg(target_arch = "x86_64")]
        assert_eq!(
            q.quads.is_some(),
            Precision::Int8.kernel() == "avx512-vnni",
            "{}",
            Precision::Int8.kernel()
        );
        assert!(q.tiles.is_none() && q.pairs.is_none() && b.tiles8.is_none());
        let f = PackedB::new(vec![1.0; 64 * 32], 64, 32, Precision::F32);
        assert!(f.tiles.is_none() && f.pairs.is_none() && f.tiles8.is_none());
        assert!(Precision::F32.version_mark().is_none());
    }
}
