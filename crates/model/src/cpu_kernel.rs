//! The CPU engine's matrix product: `C[m×n] += A[m×k] · B[k×n]` (row-major), with an optional
//! ReLU applied as `C` is written back.
//!
//! On x86-64 with AVX-512F an own register-blocked kernel runs: `B` (the weights) is packed once
//! at load time into panels of 32 columns, each 12-row block of `A` is multiplied against one
//! panel slice of at most `KC` depth (32 KiB, stays in L1) with 24 accumulator registers, and the
//! ReLU is applied on the final store. The `gemm` crate's stable build only has AVX2 kernels,
//! which leave half of such a CPU's floating-point width unused. Everywhere else (no AVX-512, or
//! `n` not a multiple of 32) the `gemm` crate does the work.

/// Columns per packed panel (two 16-lane registers).
const NR: usize = 32;
/// Rows per register block.
const MR: usize = 12;
/// Depth per pass over a panel: `KC × NR` floats = 32 KiB.
const KC: usize = 256;

/// Weights prepared for [`matmul_acc`].
#[derive(Debug, Clone)]
pub(crate) struct PackedB {
    k: usize,
    n: usize,
    /// Row-major `k × n` (the fallback's input).
    plain: Vec<f32>,
    /// `[n / NR][k][NR]` when the AVX-512 kernel applies.
    panels: Option<Vec<f32>>,
}

impl PackedB {
    pub(crate) fn new(plain: Vec<f32>, k: usize, n: usize) -> Self {
        assert_eq!(plain.len(), k * n, "k × n weights");
        let panels = (avx512() && n.is_multiple_of(NR)).then(|| {
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
        }
    }
}

fn avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::env::var_os("LISTING_GUARD_NO_AVX512").is_none()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The engine's f32 matrix-product rate on this machine, in GFLOP/s: `threads` threads each
/// multiplying 1024×256 by 256×1024 (the shape class of the network's 1×1 convolutions) for
/// about `seconds`. The physical ceiling the model's FLOPs are measured against.
pub fn peak_gflops(threads: usize, seconds: f64) -> f64 {
    let (m, k, n) = (1024usize, 256usize, 1024usize);
    let b = PackedB::new(vec![0.5; k * n], k, n);
    let bias = vec![0.0; n];
    let lhs = vec![1.0; m * k];
    let e = Epilogue {
        bias: &bias,
        residual: None,
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

/// What is added to the product, and the activation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Epilogue<'a> {
    /// One value per output column.
    pub(crate) bias: &'a [f32],
    /// Laid out like the output (a residual branch), if any.
    pub(crate) residual: Option<&'a [f32]>,
    /// Apply ReLU.
    pub(crate) relu: bool,
}

/// `dst[m×n] = act(lhs[m×k] · b + bias + residual)`; `dst`'s previous contents are ignored.
pub(crate) fn matmul_fused(dst: &mut [f32], lhs: &[f32], b: &PackedB, m: usize, e: Epilogue<'_>) {
    let (k, n) = (b.k, b.n);
    assert!(dst.len() == m * n && lhs.len() == m * k, "matrix shapes");
    assert!(e.bias.len() == n && e.residual.is_none_or(|r| r.len() == m * n));
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_definition_across_block_edges() {
        // m not a multiple of MR, k across two KC passes, n one and several panels, and an n the
        // packed kernel does not take.
        for (m, n, k) in [(29, 64, 300), (12, 32, 27), (5, 96, 7), (17, 20, 33)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 25.0)
                .collect();
            let w: Vec<f32> = (0..k * n)
                .map(|i| ((i * 53 % 97) as f32 - 48.0) / 40.0)
                .collect();
            let res: Vec<f32> = (0..m * n).map(|i| (i % 7) as f32 - 3.0).collect();
            let bias: Vec<f32> = (0..n).map(|i| (i % 5) as f32 * 0.5 - 1.0).collect();
            let b = PackedB::new(w.clone(), k, n);
            for (relu, residual) in [(false, None), (true, Some(&res[..]))] {
                let mut got = vec![f32::NAN; m * n];
                let e = Epilogue {
                    bias: &bias,
                    residual,
                    relu,
                };
                matmul_fused(&mut got, &a, &b, m, e);
                for r in 0..m {
                    for c in 0..n {
                        let mut want = bias[c] + residual.map_or(0.0, |x| x[r * n + c]);
                        for i in 0..k {
                            want += a[r * k + i] * w[i * n + c];
                        }
                        if relu {
                            want = want.max(0.0);
                        }
                        let g = got[r * n + c];
                        assert!((g - want).abs() < 1e-3 * want.abs().max(1.0), "{m}x{n}x{k}");
                    }
                }
            }
        }
    }
}
