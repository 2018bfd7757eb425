//! Multi-threaded f32 element-wise kernels behind burn-lora's fast paths on burn-flex
//! (`burn_lora::nn`): exact GELU, SiLU and their derivatives, and dropout keep-masks stored
//! one bit per element ([`dropout`]); and NF4 block quantisation ([`nf4`]) for QLoRA-style frozen weights; f32 matrix products
//! into fresh output buffers ([`matmul`]), the large ones through a system CBLAS loaded at
//! run time when the `blas` feature is on and finds one (module `blas`); and the SVD/QR
//! factors of PiSSA and OLoRA initialisation ([`decompose`]).
//!
//! A crate of their own, free of burn, so that they are compiled optimised in every build
//! profile (the workspace's dev profile optimises this package): their loops are the hot
//! part of a training step, and unoptimised they cost more than they save.
#![deny(missing_docs)]

#[cfg(feature = "blas")]
pub mod blas;
pub mod decompose;
pub mod dropout;
pub mod int8;
pub mod matmul;
pub mod nf4;

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// Elements per parallel task: large enough to amortise the task, small enough to split.
pub const CHUNK: usize = 1 << 15;

const FRAC_1_SQRT_2: f32 = std::f32::consts::FRAC_1_SQRT_2;
/// 1/√(2π).
const INV_SQRT_2PI: f32 = 0.398_942_3;

/// A vector of `len` values written by `fill(chunk index, chunk)` over chunks of `chunk`
/// elements on all cores, which must write every element of its chunk. (No zero-filling
/// first: on 2 cores that serial pass cost as much as a parallel kernel's own work.)
pub(crate) fn fill_parallel(
    len: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [MaybeUninit<f32>]) + Sync,
) -> Vec<f32> {
    let mut out = matmul::uninit(len);
    out.par_chunks_mut(chunk.max(1))
        .enumerate()
        .for_each(|(i, c)| fill(i, c));
    // SAFETY: `fill` writes every element of every chunk (its contract).
    unsafe { matmul::assume_init(out) }
}

/// Evaluates `$kernel` (an expression over `#[inline(always)]` code) in a copy compiled for
/// AVX2 + FMA when the CPU has them (detected once, then cached by std), else as written, so
/// that its loops vectorise as wide as the CPU allows. The wide copy is a closure with that
/// one caller, so it is inlined there; the plain path is the expression itself. Both compute
/// the same values: Rust never contracts `a * b + c` into an FMA by itself.
macro_rules! on_widest_simd {
    ($kernel:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx2,fma")]
            fn wide<R>(kernel: impl FnOnce() -> R) -> R {
                kernel()
            }
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: the CPU has the features `wide` is compiled for.
                unsafe { wide(|| $kernel) }
            } else {
                $kernel
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $kernel
        }
    }};
}

/// The largest magnitude of each block of `block` values (the last may be partial), on all
/// cores: the scale of every block quantiser here.
pub(crate) fn block_absmax(values: &[f32], block: usize) -> Vec<f32> {
    values
        .par_chunks(block)
        .map(|b| b.iter().fold(0f32, |m, v| m.max(v.abs())))
        .collect()
}

/// A row-major `[rows, cols]` matrix made on all cores, `rows_per_task` rows at a time:
/// `part(first, n)` returns the `n · cols` values of rows `first..first + n`.
///
/// # Panics
/// When `part` returns another number of values.
pub fn rows_parallel(
    rows: usize,
    cols: usize,
    rows_per_task: usize,
    part: impl Fn(usize, usize) -> Vec<f32> + Sync,
) -> Vec<f32> {
    let rows_per_task = rows_per_task.max(1);
    fill_parallel(rows * cols, rows_per_task * cols, |task, out| {
        let n = out.len() / cols.max(1);
        let values = part(task * rows_per_task, n);
        assert_eq!(
            values.len(),
            out.len(),
            "rows {} + {n}",
            task * rows_per_task
        );
        write_all(out, &values);
    })
}

/// `out ← values`. Not generic, so that it is compiled (optimised) here rather than in a
/// caller built at opt-level 0, where this copy cost more than the dequantisation feeding it.
fn write_all(out: &mut [MaybeUninit<f32>], values: &[f32]) {
    for (o, v) in out.iter_mut().zip(values) {
        o.write(*v);
    }
}

/// `f` of every element, on all cores.
fn map(x: &[f32], f: impl Fn(f32) -> f32 + Sync) -> Vec<f32> {
    fill_parallel(x.len(), CHUNK, |c, o| {
        let x = &x[c * CHUNK..][..o.len()];
        on_widest_simd!(for (o, &x) in o.iter_mut().zip(x) {
            o.write(f(x));
        })
    })
}

/// `f` of every pair of elements, on all cores.
///
/// # Panics
/// When `x` and `y` differ in length.
fn zip_map(x: &[f32], y: &[f32], f: impl Fn(f32, f32) -> f32 + Sync) -> Vec<f32> {
    assert_eq!(x.len(), y.len(), "element-wise inputs differ in length");
    fill_parallel(x.len(), CHUNK, |c, o| {
        let (x, y) = (&x[c * CHUNK..][..o.len()], &y[c * CHUNK..][..o.len()]);
        on_widest_simd!(for ((o, &x), &y) in o.iter_mut().zip(x).zip(y) {
            o.write(f(x, y));
        })
    })
}

/// `eˣ` in f32 (Cephes' `expf`: range reduction by ln 2, degree-5 polynomial, 2ⁿ put
/// into the exponent bits), relative error ≤ 3e-7 on [-87, 87]; 0 below -87.3 (where eˣ
/// leaves the normal floats), and inputs above 88.3 are clamped to it. Written without
/// branches or library calls so that loops over it vectorise.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Round to nearest by the 1.5·2²³ trick (no `round` call, which SSE2 lacks).
    const ROUND: f32 = 12_582_912.0;
    const LOW: f32 = -87.3;
    // Zero, not the smallest normal value the clamp would give: a masked attention score
    // must get probability 0, and values near 2⁻¹²⁶ turn subnormal once scaled, which
    // Intel cores multiply 10–100× slower (the attention products of a causal model).
    let underflow = x < LOW;
    let x = x.clamp(LOW, 88.3);
    let n = (x * LOG2E + ROUND) - ROUND;
    let r = x - n * LN2_HI - n * LN2_LO;
    let p = 1.987_569_1e-4f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let y = e * f32::from_bits(((n as i32 + 127) as u32) << 23);
    if underflow { 0.0 } else { y }
}

/// `v`, or 0 where it is subnormal (|v| < 2⁻¹²⁶): an absolute change below 1.2e-38 that
/// keeps later products off the slow subnormal path of Intel cores.
#[inline(always)]
fn flush_subnormal(v: f32) -> f32 {
    if v.abs() < f32::MIN_POSITIVE { 0.0 } else { v }
}

/// `erf(x)` by Abramowitz & Stegun 7.1.26 (absolute error ≤ 1.5e-7, 6e-7 in f32), the formula of
/// PyTorch's vectorised CPU `erf` (and so of its exact GELU).
#[inline(always)]
fn erf(x: f32) -> f32 {
    const P: f32 = 0.327_591_1;
    const A: [f32; 5] = [
        0.254_829_6,
        -0.284_496_74,
        1.421_413_7,
        -1.453_152,
        1.061_405_4,
    ];
    let a = x.abs();
    let t = 1.0 / (1.0 + P * a);
    let poly = ((((A[4] * t + A[3]) * t + A[2]) * t + A[1]) * t + A[0]) * t;
    (1.0 - poly * exp(-a * a)).copysign(x)
}

/// Exact GELU, `0.5·x·(1 + erf(x/√2))` (transformers' `gelu`), of every element.
pub fn gelu_erf(x: &[f32]) -> Vec<f32> {
    map(x, |x| 0.5 * x * (1.0 + erf(x * FRAC_1_SQRT_2)))
}

/// `grad · GELU'(x)`, with `GELU'(x) = Φ(x) + x·φ(x)`, element by element.
///
/// # Panics
/// When `x` and `grad` differ in length.
pub fn gelu_erf_backward(x: &[f32], grad: &[f32]) -> Vec<f32> {
    zip_map(x, grad, |x, g| {
        let cdf = 0.5 * (1.0 + erf(x * FRAC_1_SQRT_2));
        let pdf = INV_SQRT_2PI * exp(-0.5 * x * x);
        g * (cdf + x * pdf)
    })
}

/// SiLU, `x·σ(x)` (Llama's MLP activation), of every element.
pub fn silu(x: &[f32]) -> Vec<f32> {
    map(x, |x| x / (1.0 + exp(-x)))
}

/// `grad · SiLU'(x)`, with `SiLU'(x) = σ(x)·(1 + x·(1 − σ(x)))`, element by element.
///
/// # Panics
/// When `x` and `grad` differ in length.
pub fn silu_backward(x: &[f32], grad: &[f32]) -> Vec<f32> {
    zip_map(x, grad, |x, g| {
        let s = 1.0 / (1.0 + exp(-x));
        g * s * (1.0 + x * (1.0 - s))
    })
}

/// `x ⊙ y` (a dropout mask applied, or its gradient).
///
/// # Panics
/// When `x` and `y` differ in length.
pub fn mul(x: &[f32], y: &[f32]) -> Vec<f32> {
    zip_map(x, y, |x, y| x * y)
}

/// Softmax of every row of `values` (row-major rows of `row_len` values), in place, on all
/// cores: `exp(x - max)` through `exp` (vectorised; with AVX2 + FMA where the CPU has them,
/// same results either way), normalised by the row's sum.
///
/// # Panics
/// When `row_len` is 0 or does not divide `values.len()`.
pub fn softmax_rows(values: &mut [f32], row_len: usize) {
    values
        .par_chunks_mut(row_chunk(values.len(), row_len))
        .for_each(|rows| {
            for row in rows.chunks_exact_mut(row_len) {
                on_widest_simd!(softmax_row(row));
            }
        });
}

/// Softmax's backward over every row: `dx = y⊙g − y·Σ(y⊙g)` from the forward's output `y`
/// and the incoming gradient `g` (row-major rows of `row_len` values), on all cores.
///
/// # Panics
/// When `y` and `grad` differ in length, or `row_len` does not tile them.
pub fn softmax_rows_backward(y: &[f32], grad: &[f32], row_len: usize) -> Vec<f32> {
    assert_eq!(
        y.len(),
        grad.len(),
        "softmax backward inputs differ in length"
    );
    let chunk = row_chunk(y.len(), row_len);
    fill_parallel(y.len(), chunk, |c, out| {
        let (y, g) = (
            &y[c * chunk..][..out.len()],
            &grad[c * chunk..][..out.len()],
        );
        for ((out, y), g) in out
            .chunks_exact_mut(row_len)
            .zip(y.chunks_exact(row_len))
            .zip(g.chunks_exact(row_len))
        {
            on_widest_simd!(softmax_row_backward(y, g, out));
        }
    })
}

/// Values per parallel task for rows of `row_len` over `len` values: whole rows, about
/// [`CHUNK`] values.
///
/// # Panics
/// When `row_len` is 0 or does not divide `len`.
fn row_chunk(len: usize, row_len: usize) -> usize {
    assert!(
        row_len > 0 && len.is_multiple_of(row_len),
        "softmax rows of {row_len} do not tile {len} values"
    );
    (CHUNK / row_len).max(1) * row_len
}

/// Lanes of the row kernels' partial maxima and sums: eight independent accumulators let
/// the loops vectorise (one float add chain would not) and fix the summation order.
const LANES: usize = 8;

/// One row's softmax, in place.
#[inline(always)]
fn softmax_row(row: &mut [f32]) {
    let mut maxima = [f32::NEG_INFINITY; LANES];
    let mut chunks = row.chunks_exact(LANES);
    for c in &mut chunks {
        for (m, &v) in maxima.iter_mut().zip(c) {
            *m = m.max(v);
        }
    }
    let max = chunks
        .remainder()
        .iter()
        .chain(&maxima)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sums = [0f32; LANES];
    let mut chunks = row.chunks_exact_mut(LANES);
    for c in &mut chunks {
        for (s, v) in sums.iter_mut().zip(c) {
            *v = exp(*v - max);
            *s += *v;
        }
    }
    let mut sum = 0f32;
    for v in chunks.into_remainder() {
        *v = exp(*v - max);
        sum += *v;
    }
    let inv = 1.0 / (sum + sums.iter().sum::<f32>());
    for v in row {
        *v = flush_subnormal(*v * inv);
    }
}

/// One row of softmax's backward into `out`.
#[inline(always)]
fn softmax_row_backward(y: &[f32], g: &[f32], out: &mut [MaybeUninit<f32>]) {
    let mut sums = [0f32; LANES];
    let (y_chunks, g_chunks) = (y.chunks_exact(LANES), g.chunks_exact(LANES));
    let tail = y_chunks
        .remainder()
        .iter()
        .zip(g_chunks.remainder())
        .fold(0f32, |s, (y, g)| s + y * g);
    for (yc, gc) in y_chunks.zip(g_chunks) {
        for ((s, y), g) in sums.iter_mut().zip(yc).zip(gc) {
            *s += y * g;
        }
    }
    let dot = tail + sums.iter().sum::<f32>();
    for ((o, &y), &g) in out.iter_mut().zip(y).zip(g) {
        o.write(flush_subnormal(y * (g - dot)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows of awkward lengths (shorter than, equal to, and not a multiple of the lanes) with
    /// masked positions, compared with softmax in f64.
    fn softmax_cases() -> Vec<(usize, Vec<f32>)> {
        [1usize, 3, 8, 13, 128, 301]
            .into_iter()
            .map(|len| {
                let rows = 5;
                let values = (0..rows * len)
                    .map(|i| {
                        let v = ((i * 7919 % 1013) as f32 / 1013.0 - 0.5) * 24.0;
                        // Every row keeps its first value; some others are masked.
                        if i % len != 0 && i % 5 == 2 {
                            -1.0e30
                        } else {
                            v
                        }
                    })
                    .collect();
                (len, values)
            })
            .collect()
    }

    fn softmax_f64(row: &[f32]) -> Vec<f64> {
        let max = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let e: Vec<f64> = row.iter().map(|&v| libm::exp(v as f64 - max)).collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| v / sum).collect()
    }

    #[test]
    fn softmax_rows_match_f64_softmax() {
        for (len, values) in softmax_cases() {
            let mut got = values.clone();
            softmax_rows(&mut got, len);
            for (row, got) in values.chunks(len).zip(got.chunks(len)) {
                let want = softmax_f64(row);
                for (g, w) in got.iter().zip(&want) {
                    // exp's 3e-7 relative error, plus rounding of the sum.
                    assert!(
                        (*g as f64 - w).abs() <= 1e-6 * w.max(1e-3),
                        "len {len}: {g} vs {w}"
                    );
                }
                let total: f64 = got.iter().map(|&v| v as f64).sum();
                assert!((total - 1.0).abs() < 1e-5, "len {len}: sums to {total}");
            }
        }
    }

    #[test]
    fn softmax_rows_backward_matches_its_formula_in_f64() {
        for (len, values) in softmax_cases() {
            let mut y = values.clone();
            softmax_rows(&mut y, len);
            let grad: Vec<f32> = (0..y.len())
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 4.0)
                .collect();
            let got = softmax_rows_backward(&y, &grad, len);
            for ((y, g), d) in y.chunks(len).zip(grad.chunks(len)).zip(got.chunks(len)) {
                let dot: f64 = y.iter().zip(g).map(|(&y, &g)| y as f64 * g as f64).sum();
                for ((&y, &g), &d) in y.iter().zip(g).zip(d) {
                    let want = y as f64 * (g as f64 - dot);
                    assert!((d as f64 - want).abs() < 1e-6, "len {len}: {d} vs {want}");
                }
            }
        }
    }

    #[test]
    fn softmax_gives_masked_scores_zero_and_writes_no_subnormals() {
        // The awkward rows above (masked at -1e30), plus scores 88–104 below the row's
        // maximum, whose true probabilities are subnormal or zero in f32.
        let mut cases = softmax_cases();
        cases.push((6, vec![0.0, -88.0, -90.5, -95.0, -100.0, -104.0]));
        for (len, values) in cases {
            let mut y = values.clone();
            softmax_rows(&mut y, len);
            for (&x, &p) in values.iter().zip(&y) {
                assert!(!p.is_subnormal(), "len {len}: {x} gave subnormal {p:e}");
                if x == -1.0e30 {
                    assert_eq!(p, 0.0, "len {len}: a masked score got {p:e}");
                }
            }
            let grad: Vec<f32> = (0..y.len()).map(|i| (i % 7) as f32 * 1e-3).collect();
            let d = softmax_rows_backward(&y, &grad, len);
            assert!(d.iter().all(|v| !v.is_subnormal()), "len {len}: {d:?}");
        }
    }

    #[test]
    #[should_panic(expected = "do not tile")]
    fn softmax_rows_refuse_a_ragged_buffer() {
        softmax_rows(&mut [0.0; 10], 3);
    }

    #[test]
    fn exp_and_erf_match_libm() {
        let (mut worst_exp, mut worst_erf) = (0f64, 0f64);
        for i in -400_000..=400_000 {
            let x = i as f32 * 2.175e-4; // [-87, 87]
            let rel = ((exp(x) as f64 - libm::exp(x as f64)) / libm::exp(x as f64)).abs();
            worst_exp = worst_exp.max(rel);
            let y = i as f32 * 2.5e-5; // [-10, 10]
            worst_erf = worst_erf.max((erf(y) as f64 - libm::erf(y as f64)).abs());
        }
        assert!(worst_exp < 3e-7, "exp: relative error {worst_exp}");
        // Below the normal range: zero, never a subnormal or the clamp's 2⁻¹²⁶.
        for x in [-87.4f32, -88.0, -103.0, -1.0e30, f32::NEG_INFINITY] {
            assert_eq!(exp(x), 0.0, "exp({x})");
        }
        assert!(exp(-87.2).is_normal());
        // The formula's 1.5e-7 plus f32 rounding of `1 - poly·exp`.
        assert!(worst_erf < 1e-6, "erf: absolute error {worst_erf}");
    }

    #[test]
    fn silu_matches_its_definition_and_derivative() {
        let x: Vec<f32> = (-80..=80).map(|i| i as f32 * 0.125).collect();
        for (&v, got) in x.iter().zip(silu(&x)) {
            let want = v as f64 / (1.0 + libm::exp(-v as f64));
            assert!(
                (got as f64 - want).abs() < 1e-6 * want.abs().max(1.0),
                "{v}: {got} vs {want}"
            );
        }
        let grad = vec![1.0f32; x.len()];
        for (&v, d) in x.iter().zip(silu_backward(&x, &grad)) {
            let s = 1.0 / (1.0 + libm::exp(-v as f64));
            let want = s * (1.0 + v as f64 * (1.0 - s));
            assert!((d as f64 - want).abs() < 1e-6, "{v}: {d} vs {want}");
        }
    }

    #[test]
    fn gelu_matches_its_definition_and_derivative() {
        // Values of 0.5·x·(1 + erf(x/√2)) from tables of erf (Abramowitz & Stegun 7.1).
        let x = [-3.0f32, -1.0, -0.5, 0.0, 0.5, 1.0, 3.0];
        let expected = [
            -0.004_049_7f32,
            -0.158_655_25,
            -0.154_268_5,
            0.0,
            0.345_731_5,
            0.841_344_7,
            2.995_950_3,
        ];
        for (got, want) in gelu_erf(&x).iter().zip(expected) {
            assert!((got - want).abs() < 1e-6, "{got} vs {want}");
        }
        // The derivative against central differences of the forward, at several points.
        let h = 1e-3f32;
        let grad = vec![1.0f32; x.len()];
        let plus: Vec<f32> = x.iter().map(|v| v + h).collect();
        let minus: Vec<f32> = x.iter().map(|v| v - h).collect();
        let (fp, fm) = (gelu_erf(&plus), gelu_erf(&minus));
        for (i, d) in gelu_erf_backward(&x, &grad).iter().enumerate() {
            let numeric = (fp[i] - fm[i]) / (2.0 * h);
            assert!(
                (d - numeric).abs() < 2e-3,
                "x={} analytic {d} numeric {numeric}",
                x[i]
            );
        }
    }
}
