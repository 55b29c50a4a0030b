//! The AVX512-BF16 kernel, for CPUs with `vdpbf16ps` but no AMX tile unit (AMD Zen 4 and later,
//! Intel Cooper Lake), and the bf16-aware epilogue it shares with the tile kernel.
//!
//! `B` is packed once into panels of 32 columns, each column's depth pairs interleaved
//! (`[B[2q][c], B[2q+1][c]]`, the pairs `vdpbf16ps` multiplies); `A` is in the tile kernel's
//! bf16 layout ([`super::a16_shape`]), so every caller that writes bf16 rows for the tiles
//! writes them for this kernel too. Each block of 12 rows × 32 columns keeps its 24 sums in
//! registers over the whole depth: per depth pair, two loads of `B`, one broadcast of a pair of
//! `A` per row and 24 `vdpbf16ps` (16 columns × 2 depths each; twice the products per
//! instruction of an f32 FMA). The sums are f32; the epilogue adds the bias and the residual,
//! applies the ReLU and stores f32 or bf16 straight from the registers.
//!
//! The depth is not split into passes (as the f32 kernel's is): with a bf16 output the sums
//! must be complete when they are stored. A panel over the network's deepest product (3×3×128)
//! is 72 KiB, which stays in L2 while every row block passes over it.

use super::amx::Lane;
use super::{bf16_scalar as bf16, up, Epilogue, Out, TK};
use std::arch::x86_64::{
    __m256i, __m512, __m512bh, _mm256_storeu_si256, _mm512_add_ps, _mm512_cvtneps_pbh,
    _mm512_dpbf16_ps, _mm512_loadu_ps, _mm512_loadu_si512, _mm512_max_ps, _mm512_set1_epi32,
    _mm512_setzero_ps, _mm512_storeu_ps,
};
use std::sync::OnceLock;

/// Rows per register block.
const MR: usize = 12;
/// Columns per panel (two 16-lane registers).
const NR: usize = 32;

/// AVX-512F, AVX512-BW and AVX512-BF16 were detected (rustc lets code compiled for
/// AVX512-BF16 use BW instructions; every CPU with BF16 has BW).
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    })
}

/// The row-major `k × n` weights as bf16 panels, zero-padded to a depth of a multiple of 32
/// (the `A` layout's) and a width of a multiple of 32: panel `p` (columns `32p..`) at
/// `p · kp · 32`, its depth pair `q` holding `[B[2q][32p+c], B[2q+1][32p+c]]` for each column
/// `c`.
pub(super) fn pack(plain: &[f32], k: usize, n: usize) -> Vec<u16> {
    let (kp, np) = (up(k, TK), up(n, NR));
    let mut out = Vec::with_capacity(kp * np);
    for p in 0..np / NR {
        for q in 0..kp / 2 {
            for c in 0..NR {
                for d in 0..2 {
                    let (kk, col) = (2 * q + d, p * NR + c);
                    out.push(if kk < k && col < n {
                        bf16(plain[kk * n + col])
                    } else {
                        0
                    });
                }
            }
        }
    }
    out
}

/// `dst = act(A · B + bias + residual)` with `A` in bf16 (`a16`: rows of [`super::a16_shape`]'s
/// depth stride, the depth padding zero) and `B` [`pack`]ed.
///
/// # Safety
/// [`available`] must have returned true; `pairs` must be [`pack`]'s output for `k × n`, `a16`
/// must hold `m` rows at the padded depth, `dst` `m × n` values, and the epilogue's slices `n`
/// and `m × n`.
#[target_feature(enable = "avx512f,avx512bf16")]
pub(super) unsafe fn multiply(
    mut dst: Out<'_>,
    a16: &[u16],
    pairs: &[u16],
    (m, n, k): (usize, usize, usize),
    e: Epilogue<'_>,
) {
    let (kp, np) = (up(k, TK), up(n, NR));
    assert!(
        pairs.len() == kp * np && a16.len() >= m * kp,
        "bf16 operands"
    );
    assert!(dst.len() == m * n && e.bias.len() == n, "output shape");
    let kq = kp / 2;
    for p in 0..np / NR {
        let c0 = p * NR;
        // SAFETY (the pointer offsets): panel `p` is `kq · 2NR` values inside `pairs`; rows
        // `r .. r + rows ≤ m` of `a16` are inside it (checked above).
        let b = unsafe { pairs.as_ptr().add(p * kq * 2 * NR) };
        let mut r = 0;
        while r < m {
            let rows = MR.min(m - r);
            let a = unsafe { a16.as_ptr().add(r * kp) };
            macro_rules! run {
                ($($i:literal)*) => {
                    match rows {
                        // SAFETY: `$i` rows of `kq` pairs at stride `kp` in `a`, `kq × 2NR`
                        // values in `b`; the block lies inside `dst` (rows r.., columns c0..).
                        $($i => unsafe {
                            let acc = block::<$i>(kq, a, kp, b);
                            finish(&mut dst, &acc, (r, c0), n, &e);
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

/// `R` rows × 32 columns of `A[R × 2kq] · panel`, as 2 registers of sums per row.
///
/// # Safety
/// AVX-512F and AVX512-BF16; `a` holds `R` rows of `2kq` values at stride `lda`, `b` `kq × 64`
/// values.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn block<const R: usize>(
    kq: usize,
    a: *const u16,
    lda: usize,
    b: *const u16,
) -> [[__m512; 2]; R] {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    // SAFETY: the caller's bounds; every `A` pair is read as one unaligned 4-byte value.
    unsafe {
        for q in 0..kq {
            let bq = b.add(q * 2 * NR);
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(bq.cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(bq.add(NR).cast()));
            for (i, row) in acc.iter_mut().enumerate() {
                let pair = a.add(i * lda + 2 * q).cast::<i32>().read_unaligned();
                let av: __m512bh = std::mem::transmute(_mm512_set1_epi32(pair));
                row[0] = _mm512_dpbf16_ps(row[0], av, b0);
                row[1] = _mm512_dpbf16_ps(row[1], av, b1);
            }
        }
    }
    acc
}

/// Stores a register block's `R` rows at `(r0, c0)` of the `· × n` output through the
/// epilogue: from the registers where all 32 columns are inside `n`, else value by value.
///
/// # Safety
/// AVX-512F and AVX512-BF16; rows `r0 .. r0 + R` are inside `dst` and the epilogue's slices.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
unsafe fn finish<const R: usize>(
    dst: &mut Out<'_>,
    acc: &[[__m512; 2]; R],
    (r0, c0): (usize, usize),
    n: usize,
    e: &Epilogue<'_>,
) {
    let cols = NR.min(n - c0);
    // SAFETY: the caller's bounds; 32 biases at `c0 + 32 ≤ n` on the full path.
    unsafe {
        if cols == NR {
            let bias = e.bias.as_ptr().add(c0);
            let b = (_mm512_loadu_ps(bias), _mm512_loadu_ps(bias.add(16)));
            for (i, row) in acc.iter().enumerate() {
                store_row(dst, (r0 + i) * n + c0, (row[0], row[1]), b, e);
            }
        } else {
            let mut sums = [0f32; NR];
            for (i, row) in acc.iter().enumerate() {
                _mm512_storeu_ps(sums.as_mut_ptr(), row[0]);
                _mm512_storeu_ps(sums.as_mut_ptr().add(16), row[1]);
                store_partial(dst, (r0 + i) * n + c0, &sums[..cols], c0, e);
            }
        }
    }
}

/// One row of 32 sums (`v0`, then `v1`) of a product into `dst[at .. at + 32]`:
/// act(sums + bias + residual) ([`activate_row`]), stored as f32 or rounded to bf16 (to
/// nearest even; `vcvtneps2bf16` flushes subnormals to zero).
///
/// # Safety
/// AVX-512F and AVX512-BF16; `dst` and the epilogue's residual hold `at + 32` values.
#[target_feature(enable = "avx512f,avx512bf16")]
#[inline]
pub(super) unsafe fn store_row(
    dst: &mut Out<'_>,
    at: usize,
    v: (__m512, __m512),
    b: (__m512, __m512),
    e: &Epilogue<'_>,
) {
    // SAFETY: the caller's bounds.
    unsafe {
        let (v0, v1) = activate_row(at, v, b, e);
        match dst {
            Out::F32(d) => {
                let o = d.as_mut_ptr().add(at);
                _mm512_storeu_ps(o, v0);
                _mm512_storeu_ps(o.add(16), v1);
            }
            Out::Bf16(d) => {
                let o = d.as_mut_ptr().add(at);
                let h0: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v0));
                let h1: __m256i = std::mem::transmute(_mm512_cvtneps_pbh(v1));
                _mm256_storeu_si256(o.cast(), h0);
                _mm256_storeu_si256(o.add(16).cast(), h1);
            }
        }
    }
}

/// act(sums + bias + residual) for one row of 32 sums (`v0`, then `v1`) that go to
/// `[at .. at + 32]` of the output; `b0`, `b1`: the columns' 32 biases.
///
/// # Safety
/// AVX-512F; the epilogue's residual holds `at + 32` values.
#[target_feature(enable = "avx512f")]
#[inline]
pub(super) unsafe fn activate_row(
    at: usize,
    (v0, v1): (__m512, __m512),
    (b0, b1): (__m512, __m512),
    e: &Epilogue<'_>,
) -> (__m512, __m512) {
    // SAFETY: the caller's bounds.
    unsafe {
        let mut v0 = _mm512_add_ps(v0, b0);
        let mut v1 = _mm512_add_ps(v1, b1);
        if let Some(res) = e.residual {
            let x = res.as_ptr().add(at);
            v0 = _mm512_add_ps(v0, _mm512_loadu_ps(x));
            v1 = _mm512_add_ps(v1, _mm512_loadu_ps(x.add(16)));
        }
        if let Some(res) = e.residual16 {
            let x = res.as_ptr().add(at);
            v0 = _mm512_add_ps(v0, u16::load16(x));
            v1 = _mm512_add_ps(v1, u16::load16(x.add(16)));
        }
        if e.relu {
            let zero = _mm512_setzero_ps();
            v0 = _mm512_max_ps(v0, zero);
            v1 = _mm512_max_ps(v1, zero);
        }
        (v0, v1)
    }
}

/// [`store_row`] for a row of fewer than 32 columns (`sums`, from column `c0`), value by value
/// (this path keeps subnormals).
pub(super) fn store_partial(
    dst: &mut Out<'_>,
    at: usize,
    sums: &[f32],
    c0: usize,
    e: &Epilogue<'_>,
) {
    for (c, &s) in sums.iter().enumerate() {
        let mut v = s + e.bias[c0 + c];
        if let Some(res) = e.residual {
            v += res[at + c];
        }
        if let Some(res) = e.residual16 {
            v += f32::from_bits(u32::from(res[at + c]) << 16);
        }
        if e.relu {
            v = v.max(0.0);
        }
        match dst {
            Out::F32(d) => d[at + c] = v,
            Out::Bf16(d) => d[at + c] = bf16(v),
        }
    }
}
