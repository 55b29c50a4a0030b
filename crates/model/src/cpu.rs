//! The inference path on the CPU: the folded network in NHWC layout, every convolution one GEMM
//! with the bias, the residual and the ReLU fused around it.
//!
//! candle's CPU `conv2d` works in NCHW and re-lays the input out for every call with strided
//! scalar loops, then adds the bias and applies ReLU as separate passes over memory; on this
//! network that made it ~8× slower than ONNX Runtime. Here activations stay NHWC from the crop to
//! the pooling, so:
//! - a 1×1 stride-1 convolution is a GEMM on the activation rows: in place where they are
//!   already in the kernel's type and layout, else copied (rounded to bf16 for the tiles) one
//!   tile of rows at a time;
//! - a 3×3 (or strided) convolution gathers each output pixel's input runs (one per window
//!   row where the row is inside the image; im2col) one tile of output pixels at a time, so the
//!   tile stays in cache;
//! - the bias, the residual branch (for a bottleneck's last convolution) and ReLU are applied
//!   to the tile's sums while they are still hot: by the f32 kernel, which starts its sums from
//!   them, or by the tile kernel's epilogue.
//!
//! The product itself is [`crate::cpu_kernel`]'s: at [`Precision::Bf16`] bf16 on the AMX tile
//! unit or with AVX512-BF16 where the CPU has either (both read the same bf16 `A` layout, so
//! "the tiles" below means either), at [`Precision::Int8`] int8 (AMX-INT8 with f32 in and out;
//! AVX512-VNNI, which where the CPU also has AVX512-BF16 reads and writes the same bf16 `A`
//! layout and so counts as "the tiles" too), else f32 (an AVX-512 kernel where the CPU has it).
//! On a bf16 kernel, every activation after the max-pool is bf16 (sums in f32): the epilogue
//! rounds them as it writes them, which is where the next layer would have rounded them
//! anyway, and they take half the memory traffic.
//! Tiles of output pixels run in parallel on rayon's pool (`RAYON_NUM_THREADS`), each GEMM
//! single-threaded. The weights are the same folded weights as [`crate::arch::Npr::folded`]; a
//! test checks both give the same logits. Training and the CUDA path use the candle graph.

use rayon::prelude::*;

use crate::cpu_kernel::{
    bf16_rows, grown, matmul_fused, matmul_fused_bf16, matmul_fused_bytes, pack_a16, pixel_amax16,
    quantise_run16, takes_bytes, to_bf16, unsigned_factors, Epilogue, Out, PackedB,
};
pub use crate::cpu_kernel::{configure, features, CpuFeatures, Precision};

/// Activations in NHWC order, contiguous: f32, or (between layers that run on the tiles) bf16
/// bits.
#[derive(Debug, Clone, PartialEq)]
pub struct Nhwc<T = f32> {
    /// `n · h · w · c` values.
    pub data: Vec<T>,
    /// Batch.
    pub n: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels.
    pub c: usize,
}

impl<T> Nhwc<T> {
    /// Wraps `data`, checking its length.
    pub fn new(data: Vec<T>, n: usize, h: usize, w: usize, c: usize) -> Self {
        assert_eq!(data.len(), n * h * w * c, "NHWC buffer length");
        Self { data, n, h, w, c }
    }
}

/// Reused activation buffers: one forward pass allocates ~30 MB at batch 8, and fresh
/// allocations of that size come from the kernel page by page on every pass.
#[derive(Debug)]
struct Pool<T = f32>(std::sync::Mutex<Vec<Vec<T>>>);

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Self(std::sync::Mutex::new(Vec::new()))
    }
}

impl<T: Act> Pool<T> {
    /// A buffer of `len` values (contents unspecified): a free one of exactly `len` values,
    /// else a new one. A pass asks for the same few sizes every time, so after the first passes
    /// every size has its own buffers and nothing is written before the layer writes it. (Taking
    /// a buffer of another size instead and resizing it made the sizes trade buffers all the
    /// time: most takes zero-filled a tail or grew the allocation, ~2% of the pipeline's CPU.)
    fn take(&self, len: usize) -> Vec<T> {
        let mut free = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut v = match (0..free.len()).find(|&i| free[i].len() == len) {
            Some(i) => free.swap_remove(i),
            None => Vec::new(),
        };
        drop(free);
        v.resize(len, T::default());
        v
    }

    fn give(&self, v: Vec<T>) {
        let mut free = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // Enough for the live buffers of several concurrent passes (two passes at a time
        // keep ~14 bf16 buffers at 224×224).
        if free.len() < 64 {
            free.push(v);
        }
    }
}

thread_local! {
    static IM2COL: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The same in bf16, for the tile kernel.
    static IM2COL16: std::cell::RefCell<Vec<u16>> = const { std::cell::RefCell::new(Vec::new()) };
    /// The same quantised straight into bytes for the VNNI kernel, with each row's scale and
    /// its inverse.
    static IM2COL8: std::cell::RefCell<(Vec<u8>, Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new(), Vec::new())) };
}

/// An activation value: f32, or bf16 (its bits) between layers that both run on the tiles.
trait Act: Copy + Default + Send + Sync + 'static {
    /// The pass's pool of buffers of this type.
    fn pool<'a>(cx: &Cx<'a>) -> &'a Pool<Self>;
    /// These values as a product's destination.
    fn out(d: &mut [Self]) -> Out<'_>;
    /// `s` written into `d` as the tile kernel's bf16 `A`.
    fn put_bf16(d: &mut [u16], s: &[Self]);
    /// The values, if they are f32 (the f32 kernels' input).
    fn f32s(s: &[Self]) -> Option<&[f32]>;
    /// The values, if they are bf16 already.
    fn bits(s: &[Self]) -> Option<&[u16]>;
    /// The values as an epilogue's residual.
    fn res(s: &[Self]) -> Res<'_>;
    /// One value as f32.
    fn to_f32(v: Self) -> f32;
    /// The least value (the max-pool's start).
    const LOWEST: Self;
    /// The larger of two values.
    fn max(a: Self, b: Self) -> Self;
}

/// A residual branch, f32 or bf16.
#[derive(Clone, Copy)]
enum Res<'a> {
    F32(&'a [f32]),
    Bf16(&'a [u16]),
}

impl Res<'_> {
    fn len(&self) -> usize {
        match self {
            Res::F32(r) => r.len(),
            Res::Bf16(r) => r.len(),
        }
    }
}

impl Act for f32 {
    fn pool<'a>(cx: &Cx<'a>) -> &'a Pool<f32> {
        cx.pool
    }
    fn out(d: &mut [f32]) -> Out<'_> {
        Out::F32(d)
    }
    fn put_bf16(d: &mut [u16], s: &[f32]) {
        to_bf16(s, d);
    }
    fn f32s(s: &[f32]) -> Option<&[f32]> {
        Some(s)
    }
    fn bits(_: &[f32]) -> Option<&[u16]> {
        None
    }
    fn res(s: &[f32]) -> Res<'_> {
        Res::F32(s)
    }
    fn to_f32(v: f32) -> f32 {
        v
    }
    const LOWEST: f32 = f32::NEG_INFINITY;
    fn max(a: f32, b: f32) -> f32 {
        a.max(b)
    }
}

impl Act for u16 {
    fn pool<'a>(cx: &Cx<'a>) -> &'a Pool<u16> {
        cx.pool16
    }
    fn out(d: &mut [u16]) -> Out<'_> {
        Out::Bf16(d)
    }
    fn put_bf16(d: &mut [u16], s: &[u16]) {
        d.copy_from_slice(s);
    }
    fn f32s(_: &[u16]) -> Option<&[f32]> {
        None
    }
    fn bits(s: &[u16]) -> Option<&[u16]> {
        Some(s)
    }
    fn res(s: &[u16]) -> Res<'_> {
        Res::Bf16(s)
    }
    fn to_f32(v: u16) -> f32 {
        f32::from_bits(u32::from(v) << 16)
    }
    /// bf16 −∞.
    const LOWEST: u16 = 0xFF80;
    /// Compared as the values they are (not as bits: −0 and the negatives would win), so
    /// that the larger of two rounded values is the rounding of the larger one.
    fn max(a: u16, b: u16) -> u16 {
        if Self::to_f32(b) > Self::to_f32(a) {
            b
        } else {
            a
        }
    }
}

/// How a pass runs: its buffer pools, and whether the work inside each layer is spread over
/// rayon's threads (one image at a time) or stays on the calling thread (images in parallel).
#[derive(Clone, Copy)]
struct Cx<'a> {
    pool: &'a Pool,
    pool16: &'a Pool<u16>,
    parallel: bool,
    /// Whether the 3×3 convolutions may quantise their input straight into bytes where the
    /// products take them (off only to compare with the bf16 rows in tests).
    bytes: bool,
}

impl<'a> Cx<'a> {
    #[cfg(test)]
    fn serial(pool: &'a Pool, pool16: &'a Pool<u16>) -> Self {
        Self {
            pool,
            pool16,
            parallel: false,
            bytes: true,
        }
    }

    /// `f(index, chunk)` over `out` in chunks of `size`.
    fn for_each_chunk<T: Send>(
        &self,
        out: &mut [T],
        size: usize,
        f: impl Fn(usize, &mut [T]) + Send + Sync,
    ) {
        if self.parallel {
            out.par_chunks_mut(size)
                .enumerate()
                .for_each(|(i, c)| f(i, c));
        } else {
            out.chunks_mut(size).enumerate().for_each(|(i, c)| f(i, c));
        }
    }
}

/// A convolution with BatchNorm folded in: `k×k`, padding `k/2`, any stride.
#[derive(Debug, Clone)]
pub struct Conv {
    k: usize,
    stride: usize,
    cin: usize,
    cout: usize,
    /// `[(ky·k + kx)·cin + ci][cout]`: the GEMM's right-hand side.
    weight: PackedB,
    bias: Vec<f32>,
}

impl Conv {
    /// From PyTorch/candle layout: `weight` is `(cout, cin, k, k)` flattened; the GEMM runs at
    /// `precision`.
    pub fn from_oihw(
        weight: &[f32],
        bias: Vec<f32>,
        (cout, cin, k): (usize, usize, usize),
        stride: usize,
        precision: Precision,
    ) -> Self {
        assert_eq!(weight.len(), cout * cin * k * k, "weight length");
        assert_eq!(bias.len(), cout, "bias length");
        let mut w = vec![0f32; weight.len()];
        for co in 0..cout {
            for ci in 0..cin {
                for ky in 0..k {
                    for kx in 0..k {
                        w[((ky * k + kx) * cin + ci) * cout + co] =
                            weight[((co * cin + ci) * k + ky) * k + kx];
                    }
                }
            }
        }
        Self {
            k,
            stride,
            cin,
            cout,
            weight: PackedB::new(w, k * k * cin, cout, precision),
            bias,
        }
    }

    fn out_side(&self, side: usize) -> usize {
        (side + 2 * (self.k / 2) - self.k) / self.stride + 1
    }

    /// Whether the products run on the tiles, so that bf16 activations can come in.
    fn tiled(&self) -> bool {
        bf16_rows(&self.weight, 1).is_some()
    }

    /// `act(conv(x) + bias + residual)`, with `residual` (if any) laid out like the output.
    /// Input and output are f32 or bf16 ([`Act`]); bf16 on either side only where the
    /// products run on the tiles ([`Conv::tiled`]).
    fn forward<I: Act, O: Act>(
        &self,
        x: &Nhwc<I>,
        residual: Option<Res<'_>>,
        relu: bool,
        cx: Cx<'_>,
    ) -> Nhwc<O> {
        assert_eq!(x.c, self.cin, "input channels");
        let (oh, ow) = (self.out_side(x.h), self.out_side(x.w));
        let (m, n, kdim) = (x.n * oh * ow, self.cout, self.k * self.k * self.cin);
        if let Some(r) = residual {
            assert_eq!(r.len(), m * n, "residual shape");
        }
        let direct = self.k == 1 && self.stride == 1;
        // Where the products take bytes and the input is bf16 with no value below zero (after
        // a ReLU), each pixel's largest magnitude, for the rows' scales.
        let pixel_amax = (!direct && cx.bytes && takes_bytes(&self.weight))
            .then(|| I::bits(&x.data))
            .flatten()
            .and_then(|bits| {
                let mut amax = Vec::new();
                pixel_amax16(bits, x.c, &mut amax).then_some(amax)
            });
        let tile = tile_rows(m);
        let mut out = O::pool(&cx).take(m * n);
        cx.for_each_chunk(&mut out, tile * n, |t, dst| {
            let (row0, rows) = (t * tile, dst.len() / n);
            let span = row0 * n..(row0 + rows) * n;
            let (res32, res16) = match residual {
                Some(Res::F32(r)) => (Some(&r[span]), None),
                Some(Res::Bf16(r)) => (None, Some(&r[span])),
                None => (None, None),
            };
            let e = Epilogue {
                bias: &self.bias,
                residual: res32,
                residual16: res16,
                relu,
            };
            let Some((stride, padded_rows)) = bf16_rows(&self.weight, rows) else {
                // The f32 kernels: f32 in and out.
                let (Some(data), Out::F32(dst)) = (I::f32s(&x.data), O::out(dst)) else {
                    panic!("bf16 activations only between layers on a bf16 kernel");
                };
                if direct {
                    let lhs = &data[row0 * kdim..(row0 + rows) * kdim];
                    matmul_fused(dst, lhs, &self.weight, rows, e);
                } else {
                    // One im2col buffer per worker thread, reused across tiles and passes.
                    IM2COL.with_borrow_mut(|col| {
                        let col = grown(col, rows * kdim);
                        let put = |_, d: &mut [f32], s: &[f32]| d.copy_from_slice(s);
                        self.gather(data, (x.h, x.w), (oh, ow), row0, col, kdim, put);
                        matmul_fused(dst, col, &self.weight, rows, e);
                    });
                }
                return;
            };
            // A 1×1 stride-1 convolution's `A` is its input's rows.
            let lhs = || &x.data[row0 * kdim..(row0 + rows) * kdim];
            let in_layout = direct && stride == kdim && rows == padded_rows;
            if let Some(a16) = I::bits(&x.data).filter(|_| in_layout) {
                let a16 = &a16[row0 * kdim..(row0 + rows) * kdim];
                // bf16 rows already in the kernel's layout: no copy at all.
                matmul_fused_bf16(O::out(dst), a16, &self.weight, rows, e);
                return;
            }
            if let (Some(amax), Some(bits)) = (pixel_amax.as_deref(), I::bits(&x.data)) {
                // Straight into bytes: each row's scale from its window's pixels, each input
                // run quantised as it is gathered (no bf16 rows written and read back).
                IM2COL8.with_borrow_mut(|(col, scale, invs)| {
                    let lda = kdim.next_multiple_of(4);
                    let col = grown(col, rows * lda);
                    let (img, out) = ((x.h, x.w), (oh, ow));
                    scale.clear();
                    invs.clear();
                    for g in row0..row0 + rows {
                        let (inv, sc) = unsigned_factors(self.window_amax(amax, img, out, g));
                        scale.push(sc);
                        invs.push(inv);
                    }
                    let put = |r: usize, d: &mut [u8], s: &[u16]| quantise_run16(d, s, invs[r]);
                    self.gather(bits, img, out, row0, col, lda, put);
                    matmul_fused_bytes(O::out(dst), (col, lda), scale, &self.weight, rows, e);
                });
                return;
            }
            // The tiles take bf16 rows padded to the kernel's layout: gather the input runs
            // (im2col) or copy the rows, rounding f32 straight into it (one pass instead of an
            // f32 copy that the kernel then reads back to round).
            IM2COL16.with_borrow_mut(|col| {
                let col = grown(col, padded_rows * stride);
                if direct {
                    pack_a16(lhs(), kdim, stride, col, I::put_bf16);
                } else {
                    let (body, pad_rows) = col.split_at_mut(rows * stride);
                    let (img, out) = ((x.h, x.w), (oh, ow));
                    let put = |_, d: &mut [u16], s: &[I]| I::put_bf16(d, s);
                    self.gather(&x.data, img, out, row0, body, stride, put);
                    pad_rows.fill(0);
                }
                matmul_fused_bf16(O::out(dst), col, &self.weight, rows, e);
            });
        });
        Nhwc::new(out, x.n, oh, ow, n)
    }

    /// The largest of the per-pixel magnitudes `amax` over output pixel `g`'s window: the
    /// largest magnitude of its im2col row (the padding's zeros change nothing).
    fn window_amax(
        &self,
        amax: &[f32],
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        g: usize,
    ) -> f32 {
        let pad = self.k / 2;
        let (b, rem) = (g / (oh * ow), g % (oh * ow));
        let (oy, ox) = (rem / ow * self.stride, rem % ow * self.stride);
        let (x0, x1) = (ox.saturating_sub(pad), (ox + self.k - pad).min(w));
        let mut m = 0f32;
        for iy in oy.saturating_sub(pad)..(oy + self.k - pad).min(h) {
            for &v in &amax[(b * h + iy) * w..][x0..x1] {
                m = m.max(v);
            }
        }
        m
    }

    /// im2col over `x` (`h × w` images of `cin` channels): the input runs of output pixels
    /// `row0 ..` (as many as `col` holds at `stride` values per row), each run written by
    /// `put(row within col, destination, run)`,
    /// zero where the window hangs over the padding and from the row's `k·k·cin` values up to
    /// `stride`.
    #[allow(clippy::too_many_arguments)]
    fn gather<S: Copy, T: Copy + Default>(
        &self,
        x: &[S],
        (h, w): (usize, usize),
        (oh, ow): (usize, usize),
        row0: usize,
        col: &mut [T],
        stride: usize,
        put: impl Fn(usize, &mut [T], &[S]),
    ) {
        let (k, cin) = (self.k, self.cin);
        let pad = (k / 2) as isize;
        for (r, dst) in col.chunks_exact_mut(stride).enumerate() {
            let g = row0 + r;
            let (b, rem) = (g / (oh * ow), g % (oh * ow));
            let (oy, ox) = (rem / ow, rem % ow);
            let (runs, tail) = dst.split_at_mut(k * k * cin);
            tail.fill(T::default());
            let ix0 = (ox * self.stride) as isize - pad;
            for ky in 0..k {
                let iy = (oy * self.stride + ky) as isize - pad;
                let row = &mut runs[ky * k * cin..][..k * cin];
                if !(0..h as isize).contains(&iy) {
                    row.fill(T::default());
                    continue;
                }
                let line = (b * h + iy as usize) * w;
                if ix0 >= 0 && ix0 as usize + k <= w {
                    // The window's row inside the image: its `k` pixels are one run (one
                    // call instead of `k`; the stem's runs are 3 values each).
                    let at = (line + ix0 as usize) * cin;
                    put(r, row, &x[at..at + k * cin]);
                    continue;
                }
                for (kx, d) in row.chunks_exact_mut(cin).enumerate() {
                    let ix = ix0 + kx as isize;
                    if (0..w as isize).contains(&ix) {
                        let at = (line + ix as usize) * cin;
                        put(r, d, &x[at..at + cin]);
                    } else {
                        d.fill(T::default());
                    }
                }
            }
        }
    }
}

/// Output pixels per tile: large enough for an efficient GEMM, small enough to keep the tile in
/// cache and to give every thread several tiles; a multiple of 32, the tile kernel's block of
/// rows (at 28×28 pixels an unrounded 98 made it compute 128 rows per tile, 30% of them
/// padding).
fn tile_rows(m: usize) -> usize {
    let per_thread = m / (4 * rayon::current_num_threads()).max(1);
    per_thread.clamp(32, 256) / 32 * 32
}

/// A ResNet bottleneck block.
#[derive(Debug, Clone)]
pub struct Block {
    /// 1×1 reduce.
    pub c1: Conv,
    /// 3×3 (carries the block's stride).
    pub c2: Conv,
    /// 1×1 expand.
    pub c3: Conv,
    /// Projection of the identity when the shape changes.
    pub downsample: Option<Conv>,
}

impl Block {
    /// Whether all of the block's convolutions run on the tiles.
    fn tiled(&self) -> bool {
        [&self.c1, &self.c2, &self.c3]
            .into_iter()
            .chain(&self.downsample)
            .all(Conv::tiled)
    }

    /// The block, from `I` to `O` (bf16 on either side only where it is [`Block::tiled`]).
    fn forward<I: Act, O: Act>(&self, x: &Nhwc<I>, cx: Cx<'_>) -> Nhwc<O> {
        // Where the convolutions run on the tiles, the activations between them are bf16: the
        // epilogue rounds them as it writes them, which is what the next layer would otherwise
        // do in a pass of its own, and they take half the memory.
        if self.tiled() {
            self.forward_via::<I, u16, O>(x, cx)
        } else {
            self.forward_via::<I, f32, O>(x, cx)
        }
    }

    /// [`Block::forward`] with the activations between the convolutions in `T`.
    fn forward_via<I: Act, T: Act, O: Act>(&self, x: &Nhwc<I>, cx: Cx<'_>) -> Nhwc<O> {
        let y1: Nhwc<T> = self.c1.forward(x, None, true, cx);
        let y2: Nhwc<T> = self.c2.forward(&y1, None, true, cx);
        T::pool(&cx).give(y1.data);
        let out = match &self.downsample {
            Some(d) => {
                let identity: Nhwc<O> = d.forward(x, None, false, cx);
                let out = self.c3.forward(&y2, Some(O::res(&identity.data)), true, cx);
                O::pool(&cx).give(identity.data);
                out
            }
            None => self.c3.forward(&y2, Some(I::res(&x.data)), true, cx),
        };
        T::pool(&cx).give(y2.data);
        out
    }
}

/// The folded NPR network for the CPU.
#[derive(Debug)]
pub struct CpuNpr {
    stem: Conv,
    blocks: Vec<Block>,
    fc_weight: Vec<f32>,
    fc_bias: f32,
    pool: Pool,
    pool16: Pool<u16>,
}

impl CpuNpr {
    /// From the folded layers: the 3×3 stride-2 stem, the blocks of `layer1` and `layer2`, and
    /// the final linear layer (`cin` weights and a bias).
    pub fn new(stem: Conv, blocks: Vec<Block>, fc_weight: Vec<f32>, fc_bias: f32) -> Self {
        Self {
            stem,
            blocks,
            fc_weight,
            fc_bias,
            pool: Pool::default(),
            pool16: Pool::default(),
        }
    }

    /// Logits, one per image, for normalised NHWC input with 3 channels and even sides.
    pub fn forward(&self, x: &Nhwc) -> Vec<f32> {
        assert!(
            x.c == 3 && x.h.is_multiple_of(2) && x.w.is_multiple_of(2),
            "NHWC RGB, even sides"
        );
        // Image by image: a whole batch's activations would not stay in cache (measured: batch 8
        // in one pass ~10% slower). With at least as many images as threads, each thread runs
        // whole images on its own (no synchronisation inside the network); otherwise the tiles
        // of each layer are spread over the threads.
        let image = x.h * x.w * x.c;
        let across_images = x.n >= rayon::current_num_threads();
        let cx = Cx {
            pool: &self.pool,
            pool16: &self.pool16,
            parallel: !across_images,
            bytes: true,
        };
        let one = |data: &[f32]| self.forward_one(data, x.h, x.w, cx);
        if across_images {
            x.data.par_chunks(image).flat_map_iter(one).collect()
        } else {
            x.data.chunks(image).flat_map(one).collect()
        }
    }

    fn forward_one(&self, data: &[f32], h: usize, w: usize, cx: Cx<'_>) -> Vec<f32> {
        self.forward_one_via(data, (h, w), self.bf16_stem(), cx)
    }

    /// Whether the stem can write bf16 for the max-pool and the first block without changing
    /// a bit: every convolution runs on the tiles, and the first block reads the max-pool's
    /// output only through its products (a projection, not the identity, on its residual
    /// branch), which round it to bf16 anyway. The max of rounded values is the rounding of
    /// the max (rounding is monotonic), so only where the rounding happens moves: half the
    /// bytes written and pooled, and the first block's 1×1 products read the rows in place.
    fn bf16_stem(&self) -> bool {
        self.stem.tiled()
            && self.blocks.iter().all(Block::tiled)
            && self.blocks.first().is_some_and(|b| b.downsample.is_some())
    }

    fn forward_one_via(
        &self,
        data: &[f32],
        (h, w): (usize, usize),
        bf16_stem: bool,
        cx: Cx<'_>,
    ) -> Vec<f32> {
        let r = npr_residual(data, (1, h, w, 3), cx);
        if bf16_stem {
            return self.stem_and_rest::<u16, u16>(r, cx);
        }
        // Where every block runs on the tiles, the activations between the blocks (each
        // block's output, the next one's input and residual) are bf16 too, as in bf16
        // inference elsewhere: sums in f32, activations stored in bf16.
        if self.blocks.iter().all(Block::tiled) {
            self.stem_and_rest::<f32, u16>(r, cx)
        } else {
            self.stem_and_rest::<f32, f32>(r, cx)
        }
    }

    /// The stem (output in `S`) on the NPR residual `r`, the max-pool, the blocks (outputs in
    /// `T`) and the head.
    fn stem_and_rest<S: Act, T: Act>(&self, r: Nhwc, cx: Cx<'_>) -> Vec<f32> {
        let s: Nhwc<S> = self.stem.forward(&r, None, true, cx);
        cx.pool.give(r.data);
        let x = max_pool_3s2(&s, cx);
        S::pool(&cx).give(s.data);
        self.blocks_and_head::<S, T>(x, cx)
    }

    /// The blocks on `x` (the max-pool's output), with their outputs in `T`, then the head.
    fn blocks_and_head<I: Act, T: Act>(&self, x: Nhwc<I>, cx: Cx<'_>) -> Vec<f32> {
        let Some((first, rest)) = self.blocks.split_first() else {
            let logits = self.head(&x);
            I::pool(&cx).give(x.data);
            return logits;
        };
        let mut y: Nhwc<T> = first.forward(&x, cx);
        I::pool(&cx).give(x.data);
        for b in rest {
            let next = b.forward(&y, cx);
            T::pool(&cx).give(std::mem::replace(&mut y, next).data);
        }
        let logits = self.head(&y);
        T::pool(&cx).give(y.data);
        logits
    }

    /// Global average pooling and the final linear layer.
    fn head<T: Act>(&self, x: &Nhwc<T>) -> Vec<f32> {
        let pixels = (x.h * x.w) as f32;
        x.data
            .chunks_exact(x.h * x.w * x.c)
            .map(|img| {
                let mut mean = vec![0f32; x.c];
                for px in img.chunks_exact(x.c) {
                    mean.iter_mut()
                        .zip(px)
                        .for_each(|(m, &v)| *m += T::to_f32(v));
                }
                let dot: f32 = mean.iter().zip(&self.fc_weight).map(|(m, w)| m * w).sum();
                dot / pixels + self.fc_bias
            })
            .collect()
    }
}

/// `(x − x[y & !1, x & !1]) · ⅔`: the neighbouring-pixel residual (nearest down- then
/// up-sampling by 2), scaled as in [`crate::arch::Npr`]. RGB input (`c` = 3).
fn npr_residual(data: &[f32], (n, h, w, c): (usize, usize, usize, usize), cx: Cx<'_>) -> Nhwc {
    const C: usize = 3;
    assert_eq!(c, C, "RGB");
    let mut out = cx.pool.take(data.len());
    let image = h * w * C;
    cx.for_each_chunk(&mut out, w * C, |row, dst| {
        let (b, y) = (row / h, row % h);
        let src = &data[b * image + y * w * C..][..w * C];
        let anchor = &data[b * image + (y & !1) * w * C..][..w * C];
        // Pixel pairs of known size, both taking the first one's value in the anchor row.
        let mut d = dst.chunks_exact_mut(2 * C);
        let (s, a) = (src.chunks_exact(2 * C), anchor.chunks_exact(2 * C));
        for ((d, s), a) in d.by_ref().zip(s.clone()).zip(a.clone()) {
            for i in 0..2 * C {
                d[i] = (s[i] - a[i % C]) * (2.0 / 3.0);
            }
        }
        // A lone last pixel (odd width) is its own anchor.
        let lone = d.into_remainder().iter_mut().zip(s.remainder());
        for ((d, s), a) in lone.zip(a.remainder()) {
            *d = (s - a) * (2.0 / 3.0);
        }
    });
    Nhwc::new(out, n, h, w, C)
}

/// Max-pool 3×3, stride 2, padding 1 (padding never wins).
fn max_pool_3s2<T: Act>(x: &Nhwc<T>, cx: Cx<'_>) -> Nhwc<T> {
    let (oh, ow, c) = ((x.h - 1) / 2 + 1, (x.w - 1) / 2 + 1, x.c);
    let mut out = T::pool(&cx).take(x.n * oh * ow * c);
    cx.for_each_chunk(&mut out, ow * c, |row, dst| {
        let (b, oy) = (row / oh, row % oh);
        dst.fill(T::LOWEST);
        for iy in (2 * oy).saturating_sub(1)..(2 * oy + 2).min(x.h) {
            let src = &x.data[(b * x.h + iy) * x.w * c..][..x.w * c];
            for ox in 0..ow {
                let d = &mut dst[ox * c..][..c];
                for ix in (2 * ox).saturating_sub(1)..(2 * ox + 2).min(x.w) {
                    d.iter_mut()
                        .zip(&src[ix * c..][..c])
                        .for_each(|(d, s)| *d = T::max(*d, *s));
                }
            }
        }
    });
    Nhwc::new(out, x.n, oh, ow, c)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass's context on the calling thread and spread over rayon's, over the same pools.
    fn serial_and_parallel<'a>(pool: &'a Pool, pool16: &'a Pool<u16>) -> [Cx<'a>; 2] {
        [false, true].map(|parallel| Cx {
            pool,
            pool16,
            parallel,
            bytes: true,
        })
    }

    /// Direct convolution, the definition.
    fn reference_conv(x: &Nhwc, w_oihw: &[f32], bias: &[f32], k: usize, s: usize) -> Nhwc {
        let cout = bias.len();
        let p = (k / 2) as isize;
        let (oh, ow) = (
            (x.h + 2 * (k / 2) - k) / s + 1,
            (x.w + 2 * (k / 2) - k) / s + 1,
        );
        let mut out = vec![0f32; x.n * oh * ow * cout];
        for b in 0..x.n {
            for oy in 0..oh {
                for ox in 0..ow {
                    for co in 0..cout {
                        let mut acc = bias[co];
                        for ky in 0..k {
                            for kx in 0..k {
                                let iy = (oy * s + ky) as isize - p;
                                let ix = (ox * s + kx) as isize - p;
                                if iy < 0 || ix < 0 || iy >= x.h as isize || ix >= x.w as isize {
                                    continue;
                                }
                                for ci in 0..x.c {
                                    acc += x.data
                                        [((b * x.h + iy as usize) * x.w + ix as usize) * x.c + ci]
                                        * w_oihw[((co * x.c + ci) * k + ky) * k + kx];
                                }
                            }
                        }
                        out[((b * oh + oy) * ow + ox) * cout + co] = acc;
                    }
                }
            }
        }
        Nhwc::new(out, x.n, oh, ow, cout)
    }

    fn ramp(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) % 1000) as f32 / 500.0 - 1.0
            })
            .collect()
    }

    /// A `k×k` convolution with ramp weights (scaled to keep activations in range) and biases.
    fn ramp_conv(
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        seed: u32,
        precision: Precision,
    ) -> Conv {
        let w: Vec<f32> = ramp(cout * cin * k * k, seed)
            .iter()
            .map(|v| v * 0.2)
            .collect();
        Conv::from_oihw(&w, ramp(cout, seed + 1), (cout, cin, k), stride, precision)
    }

    #[test]
    fn conv_matches_the_definition_for_every_shape_used() {
        // (k, stride, cin, cout, h, w): odd sides exercise the padding on both edges.
        for (k, s, cin, cout, h, w) in [
            (3, 2, 3, 8, 10, 14),
            (3, 1, 5, 7, 9, 6),
            (3, 2, 4, 4, 7, 7),
            (1, 1, 6, 3, 5, 4),
            (1, 2, 6, 9, 7, 8),
        ] {
            for precision in [Precision::F32, Precision::Bf16] {
                let x = Nhwc::new(ramp(2 * h * w * cin, 7), 2, h, w, cin);
                let wt = ramp(cout * cin * k * k, 3);
                let bias = ramp(cout, 11);
                let conv = Conv::from_oihw(&wt, bias.clone(), (cout, cin, k), s, precision);
                // Where the tiles run, the products are of bf16-rounded inputs (summed in f32).
                let tiles = crate::cpu_kernel::bf16_rows(&conv.weight, 1).is_some();
                let rounded = |v: &[f32]| -> Vec<f32> {
                    v.iter()
                        .map(|&x| {
                            if tiles {
                                f32::from_bits(u32::from(crate::cpu_kernel::bf16_scalar(x)) << 16)
                            } else {
                                x
                            }
                        })
                        .collect()
                };
                let xr = Nhwc::new(rounded(&x.data), x.n, x.h, x.w, x.c);
                let want = reference_conv(&xr, &rounded(&wt), &bias, k, s);
                let res = ramp(want.data.len(), 5);
                let (pool, pool16) = (Pool::default(), Pool::default());
                for cx in serial_and_parallel(&pool, &pool16) {
                    let got: Nhwc = conv.forward(&x, None, false, cx);
                    assert_eq!((got.h, got.w, got.c), (want.h, want.w, want.c));
                    for (g, w) in got.data.iter().zip(&want.data) {
                        assert!((g - w).abs() < 1e-4, "{precision:?} k{k} s{s}: {g} vs {w}");
                    }
                    // Residual and ReLU fused.
                    let got: Nhwc = conv.forward(&x, Some(Res::F32(&res)), true, cx);
                    for ((g, w), r) in got.data.iter().zip(&want.data).zip(&res) {
                        assert!((g - (w + r).max(0.0)).abs() < 1e-4);
                    }
                }
            }
        }
    }

    #[test]
    fn bf16_between_and_inside_blocks_is_the_rounding_of_f32() {
        // Rounding in the epilogue (bf16 activations) or in the next layer's gather or copy
        // (f32 activations) is the same rounding of the same sums: the outputs are identical.
        let conv =
            |cin, cout, k, stride, seed| ramp_conv(cin, cout, k, stride, seed, Precision::Bf16);
        // 2 × 9 × 9 pixels: 162 rows, so the last tile of rows is a partial block (copied and
        // padded) and the others are read in place.
        let plain = Block {
            c1: conv(64, 32, 1, 1, 1),
            c2: conv(32, 32, 3, 1, 2),
            c3: conv(32, 64, 1, 1, 3),
            downsample: None,
        };
        let strided = Block {
            c1: conv(64, 32, 1, 1, 4),
            c2: conv(32, 32, 3, 2, 5),
            c3: conv(32, 128, 1, 1, 6),
            downsample: Some(conv(64, 128, 1, 2, 7)),
        };
        // Widths that are not multiples of 32: depth-padded copies of `A` and a partial block
        // of columns in the epilogue (bf16 out, bf16 residual), value by value.
        let narrow = Block {
            c1: conv(64, 24, 1, 1, 8),
            c2: conv(24, 24, 3, 1, 9),
            c3: conv(24, 40, 1, 1, 10),
            downsample: Some(conv(64, 40, 1, 1, 11)),
        };
        if !plain.c1.tiled() {
            eprintln!(
                "no bf16 kernel (AMX or AVX512-BF16) on this CPU: the blocks run in f32 only"
            );
            return;
        }
        let x = Nhwc::new(ramp(2 * 9 * 9 * 64, 9), 2, 9, 9, 64);
        let (pool, pool16) = (Pool::default(), Pool::default());
        for cx in serial_and_parallel(&pool, &pool16) {
            let mut x16 = vec![0u16; x.data.len()];
            to_bf16(&x.data, &mut x16);
            let x16 = Nhwc::new(x16, x.n, x.h, x.w, x.c);
            let xr = Nhwc::new(
                x16.data.iter().map(|&v| u16::to_f32(v)).collect(),
                2,
                9,
                9,
                64,
            );
            let round = |y: &Nhwc| {
                y.data
                    .iter()
                    .map(|&v| crate::cpu_kernel::bf16_scalar(v))
                    .collect::<Vec<_>>()
            };
            for block in [&plain, &strided, &narrow] {
                let via_f32: Nhwc = block.forward_via::<f32, f32, f32>(&x, cx);
                let via_bf16: Nhwc = block.forward_via::<f32, u16, f32>(&x, cx);
                assert_eq!(via_bf16, via_f32);
                assert!(
                    via_f32.data.iter().any(|&v| v > 0.0),
                    "a block that computes"
                );
                // The block runs the bf16 path where its convolutions are on the tiles.
                assert_eq!(block.forward::<f32, f32>(&x, cx), via_bf16);
                // bf16 in and out (between blocks): the f32 path on the rounded input, rounded
                // once at the end; exactly so where the residual is the input itself, within
                // bf16's precision where it is a projection (rounded to bf16 before the add).
                let want = round(&block.forward_via::<f32, u16, f32>(&xr, cx));
                let got: Nhwc<u16> = block.forward(&x16, cx);
                if block.downsample.is_none() {
                    assert_eq!(got.data, want);
                } else {
                    for (&g, &w) in got.data.iter().zip(&want) {
                        let (g, w) = (u16::to_f32(g), u16::to_f32(w));
                        assert!((g - w).abs() <= 0.02 * w.abs().max(1.0), "{g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn npr_residual_is_its_definition_at_odd_sides() {
        for (n, h, w) in [(2, 5, 7), (1, 4, 6), (1, 1, 1)] {
            let data = ramp(n * h * w * 3, 13);
            let want: Vec<f32> = (0..data.len())
                .map(|i| {
                    let (ch, px) = (i % 3, i / 3);
                    let (b, y, x) = (px / (h * w), px / w % h, px % w);
                    let a = ((b * h + (y & !1)) * w + (x & !1)) * 3 + ch;
                    (data[i] - data[a]) * (2.0 / 3.0)
                })
                .collect();
            let (pool, pool16) = (Pool::default(), Pool::default());
            for cx in serial_and_parallel(&pool, &pool16) {
                let got = npr_residual(&data, (n, h, w, 3), cx);
                assert_eq!(got.data, want, "{n}×{h}×{w}");
            }
        }
    }

    #[test]
    fn max_pool_in_bf16_is_the_rounding_of_the_f32_max_pool() {
        // Signed values, −0 and values that round together: compared as values, not bits.
        let mut data = ramp(2 * 7 * 9 * 5, 21);
        data[0] = -0.0;
        data[1] = 1.0 + 1.0 / 512.0;
        data[2] = 1.0 + 1.0 / 256.0;
        let x = Nhwc::new(data, 2, 7, 9, 5);
        let mut bits = vec![0u16; x.data.len()];
        to_bf16(&x.data, &mut bits);
        let x16 = Nhwc::new(bits, x.n, x.h, x.w, x.c);
        let (pool, pool16) = (Pool::default(), Pool::default());
        let cx = Cx::serial(&pool, &pool16);
        let want: Vec<f32> = max_pool_3s2(&x, cx)
            .data
            .iter()
            .map(|&v| u16::to_f32(crate::cpu_kernel::bf16_scalar(v)))
            .collect();
        let got: Vec<f32> = max_pool_3s2(&x16, cx)
            .data
            .into_iter()
            .map(u16::to_f32)
            .collect();
        assert_eq!(got, want);
        assert!(got.iter().any(|&v| v < 0.0) && got.iter().any(|&v| v > 0.0));
    }

    #[test]
    fn the_bf16_stem_changes_no_logit_bit() {
        for precision in [Precision::Bf16, Precision::Int8] {
            let block = |seed, downsample: bool| Block {
                c1: ramp_conv(64, 32, 1, 1, seed, precision),
                c2: ramp_conv(32, 32, 3, 1, seed + 2, precision),
                c3: ramp_conv(32, 64, 1, 1, seed + 4, precision),
                downsample: downsample.then(|| ramp_conv(64, 64, 1, 1, seed + 6, precision)),
            };
            let net = CpuNpr::new(
                ramp_conv(3, 64, 3, 2, 1, precision),
                vec![block(10, true), block(20, false)],
                ramp(64, 5),
                0.25,
            );
            if !net.bf16_stem() {
                eprintln!("{precision:?}: no tile kernel on this CPU, the stem writes f32 only");
                continue;
            }
            // Without a projection on the first block's residual branch, the stem stays f32.
            let plain = CpuNpr::new(
                ramp_conv(3, 64, 3, 2, 1, precision),
                vec![block(20, false)],
                ramp(64, 5),
                0.25,
            );
            assert!(!plain.bf16_stem());
            let (h, w) = (30, 26);
            let data = ramp(h * w * 3, 3);
            let cx = Cx::serial(&net.pool, &net.pool16);
            let via_f32 = net.forward_one_via(&data, (h, w), false, cx);
            let via_bf16 = net.forward_one_via(&data, (h, w), true, cx);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&via_bf16), bits(&via_f32), "{precision:?}");
            assert!(
                via_f32[0].is_finite() && via_f32[0] != 0.25,
                "a network that computes"
            );
        }
    }

    #[test]
    fn quantising_while_gathering_changes_no_bit() {
        let conv = |cin, stride| ramp_conv(cin, 48, 3, stride, 7, Precision::Int8);
        if !takes_bytes(&conv(64, 1).weight) {
            eprintln!("no VNNI kernel with bf16 activations here: the 3x3 products read bf16 rows");
            return;
        }
        let (pool, pool16) = (Pool::default(), Pool::default());
        for (cin, stride, (h, w)) in [(64, 1, (9, 7)), (128, 2, (10, 7)), (128, 1, (5, 6))] {
            // Two images of non-negative bf16 (after a ReLU) with some all-zero pixels, whose
            // windows give rows of scale 0 at the corners.
            let len = 2 * h * w * cin;
            let f: Vec<f32> = ramp(len, 11)
                .iter()
                .enumerate()
                .map(|(i, &v)| {
                    if (i / cin) % 5 == 0 {
                        0.0
                    } else {
                        v.max(0.0) * 3.0
                    }
                })
                .collect();
            let mut bits = vec![0u16; len];
            to_bf16(&f, &mut bits);
            let x = Nhwc::new(bits, 2, h, w, cin);
            let c = conv(cin, stride);
            for cx in serial_and_parallel(&pool, &pool16) {
                let rows_first = Cx { bytes: false, ..cx };
                let want: Nhwc<u16> = c.forward(&x, None, true, rows_first);
                let got: Nhwc<u16> = c.forward(&x, None, true, cx);
                assert_eq!(got, want, "cin {cin}, stride {stride}");
                assert!(
                    got.data.iter().any(|&v| v != 0),
                    "a convolution that computes"
                );
            }
            // A value below zero anywhere: the rows are signed, and the bf16 rows are read.
            let mut signed = x.clone();
            let nonzero = signed.data.iter().position(|&v| v != 0).unwrap();
            signed.data[nonzero] |= 0x8000;
            let mut amax = Vec::new();
            assert!(!pixel_amax16(&signed.data, cin, &mut amax));
            let cx = Cx::serial(&pool, &pool16);
            let rows_first = Cx { bytes: false, ..cx };
            let want: Nhwc<u16> = c.forward(&signed, None, true, rows_first);
            assert_eq!(c.forward::<u16, u16>(&signed, None, true, cx), want);
        }
    }

    #[test]
    fn the_pool_keeps_each_size_its_own_buffers() {
        let pool = Pool::<u16>::default();
        let (big, small) = (vec![7u16; 64], vec![5u16; 16]);
        let (big_at, small_at) = (big.as_ptr(), small.as_ptr());
        pool.give(big);
        pool.give(small);
        // A size with no free buffer gets a new one, not one of the others resized.
        let other = pool.take(32);
        assert_eq!(other, vec![0; 32]);
        assert!(other.as_ptr() != big_at && other.as_ptr() != small_at);
        // Each size gets its own buffer back, as it was left (nothing written).
        let small = pool.take(16);
        assert_eq!((small.as_ptr(), small[0]), (small_at, 5));
        let big = pool.take(64);
        assert_eq!((big.as_ptr(), big.len(), big[63]), (big_at, 64, 7));
    }

    #[test]
    fn max_pool_takes_the_window_maximum() {
        let x = Nhwc::new((0..25).map(|v| v as f32).collect(), 1, 5, 5, 1);
        let y = max_pool_3s2(&x, Cx::serial(&Pool::default(), &Pool::default()));
        assert_eq!((y.h, y.w), (3, 3));
        // Output (oy, ox) covers rows 2oy-1..=2oy+1 clipped; the bottom-right of the window wins.
        assert_eq!(y.data, vec![6., 8., 9., 16., 18., 19., 21., 23., 24.]);
    }
}
