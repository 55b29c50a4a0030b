//! The AVX512-VNNI int8 kernel, for [`super::Precision::Int8`] on CPUs without AMX-INT8 (AMD
//! Zen 4 and later, Intel Cascade Lake and later): the tile kernel's arithmetic on the vector
//! unit.
//!
//! `B` is quantised once per output column (largest magnitude → 127, as on the tiles) and
//! packed into panels of 32 columns, each column's depth quads interleaved (the four bytes
//! `vpdpbusd` multiplies into one 32-bit lane). `A` is quantised per row on each call
//! (`amx::quantise_rows`: to 0..=255 where all of it is non-negative, as after a ReLU, else to
//! −127..=127). `vpdpbusd` multiplies unsigned by signed bytes, so signed `A` is stored
//! offset by 128 and `128 · Σ B[·][c]` (kept per column at packing) taken off each sum: the
//! integer sums are exactly those of the tile kernel. Each block of 12 rows × 32 columns keeps
//! its 24 i32 sums in registers over the whole depth (per depth quad: two loads of `B`, one
//! broadcast per row, 24 `vpdpbusd` of 64 products each, four times an f32 FMA's), then scales
//! them back to f32 through the bf16 kernel's epilogue ([`super::avx512bf16::activate_row`]).
//!
//! `A` comes in f32 ([`matmul`]) or, where the CPU also has AVX512-BF16, in the bf16 kernels'
//! layout with the output f32 or bf16 ([`multiply`]): then the activations between the layers
//! are bf16, as at [`super::Precision::Bf16`], and are quantised from bf16 (half the bytes to
//! gather and read); int8 values are not kept between layers.

use super::amx::{quantise_rows, Lane};
use super::avx512bf16::{activate_row, store_partial, store_row};
use super::{grown, int8_scales, int8_weight, up, Epilogue, Out, TK};
use std::arch::x86_64::{
    __m512, __m512i, _mm512_cvtepi32_ps, _mm512_dpbusd_epi32, _mm512_loadu_ps, _mm512_loadu_si512,
    _mm512_mul_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_si512, _mm512_storeu_ps,
    _mm512_sub_epi32,
};
use std::cell::RefCell;
use std::sync::OnceLock;

/// Rows per register block.
const MR: usize = 12;
/// Columns per panel (two 16-lane registers).
const NR: usize = 32;
/// Depth per `vpdpbusd` lane.
const QUAD: usize = 4;

/// AVX-512F and AVX512-VNNI were detected, and AVX512BW (the quantiser's; every CPU with
/// AVX512-VNNI has it).
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512vnni")
            && std::arch::is_x86_feature_detected!("avx512bw")
    })
}

/// The weights for [`matmul`] and [`multiply`].
#[derive(Debug, Clone)]
pub(crate) struct Quads {
    /// Panel `p` (columns `32p..`) at `p · kp · 32`, its depth quad `q` holding
    /// `B[4q .. 4q+4][32p+c]` for each column `c`; zero past `k` and `n`.
    b: Vec<i8>,
    /// Per column (padded to a multiple of 32 with zeros): the weight scale.
    scales: Vec<f32>,
    /// Per column (padded likewise): `128 · Σ_k B[k][c]`, the signed-`A` offset's share.
    offset: Vec<i32>,
}

/// The row-major `k × n` weights quantised and packed for [`matmul`] and [`multiply`].
pub(super) fn pack(plain: &[f32], k: usize, n: usize) -> Quads {
    let (kp, np) = (up(k, QUAD), up(n, NR));
    // i32 sums: at most k · 255 · 127, inside 2³¹ up to this depth.
    assert!(k < 66_000, "depth {k} too deep for i32 sums");
    let mut scales = int8_scales(plain, k, n);
    scales.resize(np, 0.0);
    let q = |kk: usize, col: usize| {
        if kk < k && col < n {
            int8_weight(plain[kk * n + col], scales[col])
        } else {
            0
        }
    };
    let mut b = Vec::with_capacity(kp * np);
    for p in 0..np / NR {
        for d in 0..kp / QUAD {
            for c in 0..NR {
                for i in 0..QUAD {
                    b.push(q(QUAD * d + i, p * NR + c));
                }
            }
        }
    }
    let offset = (0..np)
        .map(|c| 128 * (0..k).map(|kk| i32::from(q(kk, c))).sum::<i32>())
        .collect();
    Quads { b, scales, offset }
}

thread_local! {
    /// Each thread's quantised `A` (rows of the padded depth) and each row's scale.
    static A8: RefCell<(Vec<u8>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// `dst[m×n] = act(A · B + bias + residual)` in int8 products with i32 sums, `A` in f32.
///
/// # Safety
/// [`available`] must have returned true; `dst` and `lhs` must hold `m×n` and `m×k` floats,
/// `w` must be [`pack`]'s output for `k × n`, and the epilogue's slices `n` and `m×n`.
#[target_feature(enable = "avx512f,avx512vnni,avx512bw")]
pub(super) unsafe fn matmul(
    dst: &mut [f32],
    lhs: &[f32],
    w: &Quads,
    (m, n, k): (usize, usize, usize),
    e: Epilogue<'_>,
) {
    assert!(lhs.len() == m * k, "matrix shapes");
    // The bytes' rows: the depth padded to whole quads.
    let lda = up(k, QUAD);
    A8.with_borrow_mut(|(a8, row_scale)| {
        // SAFETY: the caller's guarantees; `lhs` holds `m` rows of `k`.
        unsafe {
            let unsigned = quantise(lhs, k, lda, m, a8, row_scale);
            product(Out::F32(dst), a8, lda, row_scale, unsigned, w, (m, n, k), e);
        }
    });
}

/// [`matmul`] with `A` in bf16 (`a16`: rows of [`super::a16_shape`]'s depth stride, the depth
/// padding zero) and the output f32 or bf16: the layers between which the activations are
/// bf16 ([`super::bf16_rows`]).
///
/// # Safety
/// [`available`] and AVX512-BF16 (the bf16 output's rounding); `a16` must hold `m` rows at
/// the padded depth, the rest as for [`matmul`].
#[target_feature(enable = "avx512f,avx512vnni,avx512bf16,avx512bw")]
pub(super) unsafe fn multiply(
    dst: Out<'_>,
    a16: &[u16],
    w: &Quads,
    (m, n, k): (usize, usize, usize),
    e: Epilogue<'_>,
) {
    let stride = up(k, TK);
    assert!(a16.len() >= m * stride, "bf16 rows of A");
    A8.with_borrow_mut(|(a8, row_scale)| {
        // SAFETY: the caller's guarantees; `a16` holds `m` rows of `stride`. The padded rows
        // are quantised whole: their zeros change neither a row's largest magnitude nor the
        // sign test.
        unsafe {
            let lhs = &a16[..m * stride];
            let unsigned = quantise(lhs, stride, stride, m, a8, row_scale);
            product(dst, a8, stride, row_scale, unsigned, w, (m, n, k), e);
        }
    });
}

/// [`multiply`] with `A` already quantised unsigned: `a8` holds `m` rows of `lda` bytes, each
/// row's scale in `row_scale` (the 3×3 convolutions quantise their input runs straight into
/// the rows, [`super::quantise_run16`]).
///
/// # Safety
/// As for [`multiply`], with `a8` holding `m` rows of `lda ≥ up(k, 4)` bytes (zero past `k`)
/// and `row_scale` `m` scales.
#[target_feature(enable = "avx512f,avx512vnni,avx512bf16,avx512bw")]
pub(super) unsafe fn multiply_bytes(
    dst: Out<'_>,
    (a8, lda): (&[u8], usize),
    row_scale: &[f32],
    w: &Quads,
    (m, n, k): (usize, usize, usize),
    e: Epilogue<'_>,
) {
    // SAFETY: the caller's guarantees.
    unsafe { product(dst, a8, lda, row_scale, true, w, (m, n, k), e) }
}

/// `A`'s `m` rows of `stride` values quantised into `a8` (rows of `lda` bytes) with their
/// scales in `row_scale`; signed bytes stored offset by 128. True where they are unsigned.
///
/// # Safety
/// AVX-512F and AVX512BW.
#[inline(always)]
unsafe fn quantise<S: Lane>(
    lhs: &[S],
    stride: usize,
    lda: usize,
    m: usize,
    a8: &mut Vec<u8>,
    row_scale: &mut Vec<f32>,
) -> bool {
    row_scale.clear();
    row_scale.resize(m, 0.0);
    let a8 = grown(a8, m * lda);
    // SAFETY: AVX-512F is the caller's guarantee.
    let unsigned = unsafe { quantise_rows(lhs, stride, lda, a8, row_scale) };
    if !unsigned {
        // −127..=127 as two's complement bytes + 128: 1..=255 (the padding 0 → 128, which
        // meets zero weights).
        for v in a8.iter_mut() {
            *v ^= 0x80;
        }
    }
    unsigned
}

/// The product over quantised `A` (`a8`: rows of `lda ≥ up(k, 4)` bytes, each row's scale in
/// `row_scale`). Inlined (as everything it calls) into the closures that [`matmul`] and
/// [`multiply`] pass to their scratch buffer; a closure that is not `#[inline(always)]` takes on
/// its enclosing function's target features, so each copy is compiled with its entry point's
/// features (do not mark those closures `#[inline(always)]`: they would lose them). In
/// [`multiply`] the bf16 store ([`store_row`], AVX512-BF16) is thereby inlined into the epilogue
/// instead of being called once per row (measured: that call was 8% of the pipeline's CPU with
/// int8).
///
/// # Safety
/// [`available`]; AVX512-BF16 too where `dst` is bf16; `w` [`pack`]'s output for `k × n`;
/// `a8` `m × lda` bytes, `dst` `m × n` values and the epilogue's slices `n` and `m × n`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
unsafe fn product(
    mut dst: Out<'_>,
    a8: &[u8],
    lda: usize,
    row_scale: &[f32],
    unsigned: bool,
    w: &Quads,
    (m, n, k): (usize, usize, usize),
    e: Epilogue<'_>,
) {
    let (kp, np) = (up(k, QUAD), up(n, NR));
    assert!(w.b.len() == kp * np && w.scales.len() == np && w.offset.len() == np);
    assert!(dst.len() == m * n && e.bias.len() == n, "output shape");
    assert!(
        lda >= kp && a8.len() >= m * lda && row_scale.len() == m,
        "A's bytes"
    );
    let kq = kp / QUAD;
    for p in 0..np / NR {
        let c0 = p * NR;
        // SAFETY (the pointer offsets): panel `p` is `kq · 4NR` bytes inside `w.b`; rows
        // `r .. r + rows ≤ m` of `a8`, and columns `c0 .. c0 + 32 ≤ np` of the scales.
        let b = unsafe { w.b.as_ptr().add(p * kq * QUAD * NR) };
        let scale = unsafe {
            let s = w.scales.as_ptr().add(c0);
            (_mm512_loadu_ps(s), _mm512_loadu_ps(s.add(16)))
        };
        let offset = unsafe {
            let o = w.offset.as_ptr().add(c0);
            if unsigned {
                (_mm512_setzero_si512(), _mm512_setzero_si512())
            } else {
                (
                    _mm512_loadu_si512(o.cast()),
                    _mm512_loadu_si512(o.add(16).cast()),
                )
            }
        };
        let cols = Cols { c0, scale, offset };
        let mut r = 0;
        while r < m {
            let rows = MR.min(m - r);
            let a = unsafe { a8.as_ptr().add(r * lda) };
            let rs = &row_scale[r..r + rows];
            macro_rules! run {
                ($($i:literal)*) => {
                    match rows {
                        // SAFETY: `$i` rows of `kq ≤ lda / 4` quads at stride `lda` in `a`,
                        // `kq × 4NR` bytes in `b`; the block lies inside `dst`.
                        $($i => unsafe {
                            let acc = block::<$i>(kq, a, lda, b);
                            finish(&mut dst, &acc, rs, r, &cols, n, &e);
                        },)*
                        _ => unreachable!("at most MR rows"),
                    }
                };
            }
            run!(1 2 3 4 5 6 7 8 9 10 11 12);
            r += rows;
        }
    }
}

/// A panel's per-column factors, two registers each.
struct Cols {
    c0: usize,
    scale: (__m512, __m512),
    offset: (__m512i, __m512i),
}

/// `R` rows × 32 columns of `A[R × 4kq] · panel`, as 2 registers of i32 sums per row.
///
/// # Safety
/// AVX-512F and AVX512-VNNI; `a` holds `R` rows of `4kq` bytes at stride `lda`, `b` `kq × 128`
/// bytes.
#[target_feature(enable = "avx512f,avx512vnni")]
#[inline]
unsafe fn block<const R: usize>(
    kq: usize,
    a: *const u8,
    lda: usize,
    b: *const i8,
) -> [[__m512i; 2]; R] {
    let mut acc = [[_mm512_setzero_si512(); 2]; R];
    // SAFETY: the caller's bounds; every quad of `A` is read as one unaligned 4-byte value.
    unsafe {
        for q in 0..kq {
            let bq = b.add(q * QUAD * NR);
            let b0 = _mm512_loadu_si512(bq.cast());
            let b1 = _mm512_loadu_si512(bq.add(64).cast());
            for (i, row) in acc.iter_mut().enumerate() {
                let quad = a.add(i * lda + QUAD * q).cast::<i32>().read_unaligned();
                let av = _mm512_set1_epi32(quad);
                row[0] = _mm512_dpbusd_epi32(row[0], av, b0);
                row[1] = _mm512_dpbusd_epi32(row[1], av, b1);
            }
        }
    }
    acc
}

/// The block's sums back in f32 (less the offset's share, times the row's and the column's
/// scales), through the epilogue into rows `r0 ..` of the `· × n` output.
///
/// # Safety
/// AVX-512F, and AVX512-BF16 where `dst` is bf16; rows `r0 .. r0 + R` are inside `dst` and the
/// epilogue's slices.
#[inline(always)]
unsafe fn finish<const R: usize>(
    dst: &mut Out<'_>,
    acc: &[[__m512i; 2]; R],
    row_scale: &[f32],
    r0: usize,
    cols: &Cols,
    n: usize,
    e: &Epilogue<'_>,
) {
    let c0 = cols.c0;
    let width = NR.min(n - c0);
    // SAFETY: the caller's bounds; 32 biases at `c0 + 32 ≤ n` on the full path.
    unsafe {
        let bias = (width == NR).then(|| {
            let b = e.bias.as_ptr().add(c0);
            (_mm512_loadu_ps(b), _mm512_loadu_ps(b.add(16)))
        });
        for (i, (row, &rs)) in acc.iter().zip(row_scale).enumerate() {
            let rs = _mm512_set1_ps(rs);
            let v = (
                back(row[0], cols.offset.0, cols.scale.0, rs),
                back(row[1], cols.offset.1, cols.scale.1, rs),
            );
            let at = (r0 + i) * n + c0;
            match (bias, &mut *dst) {
                (Some(b), Out::F32(d)) => {
                    let (v0, v1) = activate_row(at, v, b, e);
                    let o = d.as_mut_ptr().add(at);
                    _mm512_storeu_ps(o, v0);
                    _mm512_storeu_ps(o.add(16), v1);
                }
                // Rounded to bf16 by the bf16 kernel's store (AVX512-BF16: the caller's).
                (Some(b), out @ Out::Bf16(_)) => store_row(out, at, v, b, e),
                (None, out) => {
                    let mut sums = [0f32; NR];
                    _mm512_storeu_ps(sums.as_mut_ptr(), v.0);
                    _mm512_storeu_ps(sums.as_mut_ptr().add(16), v.1);
                    store_partial(out, at, &sums[..width], c0, e);
                }
            }
        }
    }
}

/// 16 i32 sums back in f32: less the offset's share, times the column's and the row's scales.
///
/// # Safety
/// AVX-512F.
#[inline(always)]
unsafe fn back(s: __m512i, offset: __m512i, scale: __m512, row_scale: __m512) -> __m512 {
    // SAFETY: the caller's.
    unsafe {
        let s = _mm512_sub_epi32(s, offset);
        _mm512_mul_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(s), row_scale), scale)
    }
}
