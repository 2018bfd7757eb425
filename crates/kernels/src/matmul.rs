//! f32 matrix products straight into a fresh output buffer.
//!
//! burn-flex's matmul zero-fills a byte vector for every output and then copies it into an
//! aligned buffer; at a MiniLM feed-forward shape that costs about a third of the product's
//! time on a 2-core machine (BENCHMARKS.md, "Speed vs PyTorch + PEFT"). Here the same `gemm`
//! kernel writes into uninitialised memory, or into a buffer pre-filled with the bias, which
//! also saves the separate bias pass of `x·W + b`. [`matmul_batched`] does the same for
//! stacks of matrices (attention's `QKᵀ` and `PV`), with a scale and an additive bias.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A read-only, possibly strided view of a row-major-addressed f32 matrix inside a buffer:
/// element `(r, c)` is `data[offset + r·row_stride + c·col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct MatrixView<'a> {
    /// The whole buffer the view points into.
    pub data: &'a [f32],
    /// Index of element `(0, 0)`.
    pub offset: usize,
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// Distance between consecutive rows, in elements.
    pub row_stride: usize,
    /// Distance between consecutive columns, in elements.
    pub col_stride: usize,
}

impl MatrixView<'_> {
    /// Whether every element of the view lies inside the buffer.
    fn fits(&self) -> bool {
        if self.rows == 0 || self.cols == 0 {
            return true;
        }
        let last = (self.rows - 1)
            .checked_mul(self.row_stride)
            .zip((self.cols - 1).checked_mul(self.col_stride))
            .and_then(|(r, c)| r.checked_add(c))
            .and_then(|rc| rc.checked_add(self.offset));
        last.is_some_and(|last| last < self.data.len())
    }
}

/// Work (`m·n·k`) from which a product is split across threads, as burn-flex does (192³).
const PARALLEL_WORK: usize = 192 * 192 * 192;

/// Below this many columns or inner products, gemm keeps a product on the calling thread;
/// such products (LoRA's rank-r factors) are split by rows here instead.
const SKINNY: usize = 64;

/// `lhs · rhs`, plus `bias` added to every row when given, as a row-major `lhs.rows ×
/// rhs.cols` vector. `None` when the shapes disagree (`lhs.cols ≠ rhs.rows`, a bias of
/// another length) or a view reaches outside its buffer.
pub fn matmul(lhs: MatrixView, rhs: MatrixView, bias: Option<&[f32]>) -> Option<Vec<f32>> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || !lhs.fits() || !rhs.fits() || bias.is_some_and(|b| b.len() != n) {
        return None;
    }
    let mut out = uninit(m.checked_mul(n)?);
    if let (Some(bias), true) = (bias, n > 0) {
        out.par_chunks_mut(n * 64).for_each(|rows| {
            for row in rows.chunks_mut(n) {
                for (o, b) in row.iter_mut().zip(bias) {
                    o.write(*b);
                }
            }
        });
    }
    product_rows(&mut out, lhs, rhs, bias.is_some(), 1.0);
    Some(finish(out))
}

/// `out ← out + scale·(lhs · rhs)` for a row-major `lhs.rows × rhs.cols` `out` (LoRA's
/// update `s·(xA)B` added onto the base layer's output in place). `None`, leaving `out`
/// untouched, when the shapes disagree or a view reaches outside its buffer.
pub fn add_product(out: &mut [f32], lhs: MatrixView, rhs: MatrixView, scale: f32) -> Option<()> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || !lhs.fits() || !rhs.fits() || m.checked_mul(n)? != out.len() {
        return None;
    }
    // SAFETY: `MaybeUninit<f32>` has `f32`'s layout, and only initialised values are
    // written through the view (`product_rows` accumulates onto the values there).
    let out = unsafe { &mut *(std::ptr::from_mut(out) as *mut [MaybeUninit<f32>]) };
    product_rows(out, lhs, rhs, true, scale);
    Some(())
}

/// The system BLAS the large products go through (the `blas` feature, loaded at run time:
/// see the module `blas`), or `None` when they go through the built-in `gemm` kernel.
pub fn blas_library() -> Option<&'static str> {
    #[cfg(feature = "blas")]
    return crate::blas::library();
    #[cfg(not(feature = "blas"))]
    None
}

/// The SIMD kernel set `gemm` runs on this CPU, chosen as gemm's `init_gemm_fn` chooses it
/// at run time: its AVX-512 kernels (compiled in by the `x86-v4` feature) where `avx512f`
/// is detected, else its AVX2/FMA (x86-64-v3) ones where `fma` is, else its scalar ones; on
/// aarch64 NEON where detected.
fn gemm_kernel_set() -> &'static str {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    {
        if std::arch::is_x86_feature_detected!("avx512f") {
            "AVX-512"
        } else if std::arch::is_x86_feature_detected!("fma") {
            "AVX2+FMA"
        } else {
            "generic"
        }
    }
    #[cfg(target_arch = "aarch64")]
    {
        if std::arch::is_aarch64_feature_detected!("neon") {
            "NEON"
        } else {
            "generic"
        }
    }
    #[cfg(not(any(target_arch = "x86", target_arch = "x86_64", target_arch = "aarch64")))]
    {
        "generic"
    }
}

/// `system BLAS <library>` when one runs the large products, else `built-in gemm kernel
/// (<kernel set>)`.
fn describe_product_kernel(blas: Option<&str>, kernel_set: &str) -> String {
    match blas {
        Some(library) => format!("system BLAS {library}"),
        None => format!("built-in gemm kernel ({kernel_set})"),
    }
}

/// What runs the large f32 products in this process: `system BLAS <library>` when one is
/// loaded ([`blas_library`], e.g. `system BLAS libopenblas.so.0 (Haswell kernels)`), else
/// the built-in `gemm` kernel with the SIMD kernel set it picks at run time on this CPU:
/// `built-in gemm kernel (AVX-512)` where `avx512f` is detected, `(AVX2+FMA)` on other
/// x86-64 CPUs with FMA, `(NEON)` on aarch64, `(generic)` otherwise. Decided (and a BLAS
/// loaded, as [`blas_library`] does) on the first call.
pub fn product_kernel() -> &'static str {
    static KERNEL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    KERNEL.get_or_init(|| {
        #[allow(unused_mut)]
        let mut kernel = describe_product_kernel(blas_library(), gemm_kernel_set());
        // Why a library found was passed over: said here, since library code prints nothing.
        #[cfg(feature = "blas")]
        for note in crate::blas::notes() {
            kernel.push_str(&format!("; {note}"));
        }
        kernel
    })
}

/// [`product_into`] with the work shared out: large products through the system BLAS when
/// one is loaded, else gemm's own threads; skinny ones (a side under [`SKINNY`]) split by
/// rows here, small ones on this thread.
fn product_rows(
    out: &mut [MaybeUninit<f32>],
    lhs: MatrixView,
    rhs: MatrixView,
    accumulate: bool,
    scale: f32,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    let work = m.saturating_mul(n).saturating_mul(k);
    if work < PARALLEL_WORK || n == 0 {
        product_into(out, lhs, rhs, accumulate, scale, gemm::Parallelism::None);
    } else if n.min(k) >= SKINNY {
        #[cfg(feature = "blas")]
        if crate::blas::loaded()
            .is_some_and(|blas| blas.product_into(out, lhs, rhs, accumulate, scale))
        {
            return;
        }
        product_into(
            out,
            lhs,
            rhs,
            accumulate,
            scale,
            gemm::Parallelism::Rayon(0),
        );
    } else {
        let rows_per_task = m.div_ceil(2 * rayon::current_num_threads()).max(1);
        out.par_chunks_mut(rows_per_task * n)
            .enumerate()
            .for_each(|(task, chunk)| {
                let lhs = MatrixView {
                    offset: lhs.offset + task * rows_per_task * lhs.row_stride,
                    rows: chunk.len() / n,
                    ..lhs
                };
                product_into(chunk, lhs, rhs, accumulate, scale, gemm::Parallelism::None);
            });
    }
}

/// An N-dimensional strided view (N ≥ 2) of an f32 buffer, read as a stack of matrices
/// over its last two dimensions: element `[i₀, …, iₙ₋₁]` is `data[offset + Σ iⱼ·strides[j]]`.
/// A broadcast dimension has stride 0.
#[derive(Debug, Clone, Copy)]
pub struct StackView<'a> {
    /// The whole buffer the view points into.
    pub data: &'a [f32],
    /// Index of the first element.
    pub offset: usize,
    /// Dimensions, matrices last.
    pub shape: &'a [usize],
    /// Distance between consecutive indices of each dimension, in elements.
    pub strides: &'a [usize],
}

impl<'a> StackView<'a> {
    /// Whether the view is well formed (rank ≥ 2, one stride per dimension) and every
    /// element lies inside the buffer.
    fn fits(&self) -> bool {
        if self.shape.len() < 2 || self.strides.len() != self.shape.len() {
            return false;
        }
        if self.shape.contains(&0) {
            return true;
        }
        let last = self
            .shape
            .iter()
            .zip(self.strides)
            .try_fold(self.offset, |acc, (&len, &stride)| {
                (len - 1).checked_mul(stride)?.checked_add(acc)
            });
        last.is_some_and(|last| last < self.data.len())
    }

    fn batch_shape(&self) -> &[usize] {
        &self.shape[..self.shape.len() - 2]
    }

    /// The matrix at flat batch index `index` (row-major over the batch dimensions).
    fn matrix(&self, mut index: usize) -> MatrixView<'a> {
        let r = self.shape.len();
        let mut offset = self.offset;
        for d in (0..r - 2).rev() {
            offset += (index % self.shape[d]) * self.strides[d];
            index /= self.shape[d];
        }
        MatrixView {
            data: self.data,
            offset,
            rows: self.shape[r - 2],
            cols: self.shape[r - 1],
            row_stride: self.strides[r - 2],
            col_stride: self.strides[r - 1],
        }
    }
}

/// `scale · (lhs · rhs)` for each matrix of two stacks with the same batch dimensions,
/// plus `bias` (a stack of the output's shape, typically a broadcast view) when given; the
/// result contiguous, row-major, of shape `[batch…, lhs rows, rhs cols]`. The matrices are
/// shared out across threads. `None` when the shapes disagree or a view reaches outside
/// its buffer.
pub fn matmul_batched(
    lhs: StackView,
    rhs: StackView,
    scale: f32,
    bias: Option<StackView>,
) -> Option<Vec<f32>> {
    if !lhs.fits() || !rhs.fits() || lhs.shape.len() != rhs.shape.len() {
        return None;
    }
    if lhs.batch_shape() != rhs.batch_shape() {
        return None;
    }
    let r = lhs.shape.len();
    let (m, k, n) = (lhs.shape[r - 2], lhs.shape[r - 1], rhs.shape[r - 1]);
    if rhs.shape[r - 2] != k {
        return None;
    }
    if let Some(bias) = &bias {
        let matrix = [m, n];
        let expected = lhs.batch_shape().iter().chain(&matrix);
        if !bias.fits() || !bias.shape.iter().eq(expected) {
            return None;
        }
    }
    let batch: usize = lhs.batch_shape().iter().product();
    let size = m.checked_mul(n)?;
    let mut out = uninit(batch.checked_mul(size)?);
    if size == 0 {
        return Some(finish(out));
    }
    let run = |index: usize, chunk: &mut [MaybeUninit<f32>]| {
        if let Some(bias) = &bias {
            let b = bias.matrix(index);
            for (r, row) in chunk.chunks_mut(n).enumerate() {
                for (c, o) in row.iter_mut().enumerate() {
                    o.write(b.data[b.offset + r * b.row_stride + c * b.col_stride]);
                }
            }
        }
        let (a, w) = (lhs.matrix(index), rhs.matrix(index));
        product_into(chunk, a, w, bias.is_some(), scale, gemm::Parallelism::None);
    };
    if batch.saturating_mul(size).saturating_mul(k) < PARALLEL_WORK {
        out.chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| run(i, c));
    } else {
        out.par_chunks_mut(size)
            .enumerate()
            .for_each(|(i, c)| run(i, c));
    }
    Some(finish(out))
}

/// A vector of `len` uninitialised values.
pub(crate) fn uninit(len: usize) -> Vec<MaybeUninit<f32>> {
    let mut out = Vec::with_capacity(len);
    // SAFETY: `MaybeUninit` needs no initialisation.
    unsafe { out.set_len(len) };
    out
}

/// The values of a vector every element of which has been written.
///
/// # Safety
/// Every element of `out` must have been written.
pub(crate) unsafe fn assume_init(out: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    let mut out = std::mem::ManuallyDrop::new(out);
    // SAFETY: the caller wrote every element; `MaybeUninit<f32>` has `f32`'s layout.
    unsafe { Vec::from_raw_parts(out.as_mut_ptr().cast::<f32>(), out.len(), out.capacity()) }
}

/// [`assume_init`] for the products here: `product_into` writes all of its output unless
/// it accumulates onto a bias written before.
fn finish(out: Vec<MaybeUninit<f32>>) -> Vec<f32> {
    // SAFETY: see above; every caller passes a fully written output.
    unsafe { assume_init(out) }
}

/// `out ← scale·(lhs·rhs)`, or `out ← out + scale·(lhs·rhs)` with `accumulate` (`out`
/// already written), for views checked by their `fits` and `out` of `lhs.rows × rhs.cols`.
fn product_into(
    out: &mut [MaybeUninit<f32>],
    lhs: MatrixView,
    rhs: MatrixView,
    accumulate: bool,
    scale: f32,
    parallelism: gemm::Parallelism,
) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    debug_assert_eq!(out.len(), m * n);
    if k == 0 {
        // The sum over an empty k is zero.
        if !accumulate {
            out.iter_mut().for_each(|o| {
                o.write(0.0);
            });
        }
        return;
    }
    if m == 0 || n == 0 {
        return;
    }
    // SAFETY: both views lie inside their buffers (checked by the callers through
    // `fits`; a sub-range of rows of a fitting view fits), strides are non-negative, and
    // `out` holds `m × n` elements written row-major (column stride 1, row stride n). gemm
    // reads `out` only with `accumulate`, when it has been written; otherwise it writes
    // every element.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr().cast::<f32>(),
            1,
            n as isize,
            accumulate,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An `m × k` view of `a` from element 7 on, and `b` read both as a row-major `k × n`
    /// matrix and as the transpose of a row-major `[n, k]` one.
    pub(crate) fn offset_and_transposed_views<'a>(
        a: &'a [f32],
        b: &'a [f32],
        (m, k, n): (usize, usize, usize),
    ) -> (MatrixView<'a>, [MatrixView<'a>; 2]) {
        let lhs = MatrixView {
            data: a,
            offset: 7,
            rows: m,
            cols: k,
            row_stride: k,
            col_stride: 1,
        };
        let rhs_t = MatrixView {
            data: b,
            offset: 0,
            rows: k,
            cols: n,
            row_stride: 1,
            col_stride: k,
        };
        let rhs = MatrixView {
            row_stride: n,
            col_stride: 1,
            ..rhs_t
        };
        (lhs, [rhs, rhs_t])
    }

    /// The textbook triple loop over two views.
    pub(crate) fn naive(lhs: MatrixView, rhs: MatrixView, bias: Option<&[f32]>) -> Vec<f32> {
        let at = |v: &MatrixView, r: usize, c: usize| {
            f64::from(v.data[v.offset + r * v.row_stride + c * v.col_stride])
        };
        let mut out = Vec::new();
        for r in 0..lhs.rows {
            for c in 0..rhs.cols {
                let dot: f64 = (0..lhs.cols).map(|i| at(&lhs, r, i) * at(&rhs, i, c)).sum();
                out.push((dot + bias.map_or(0.0, |b| f64::from(b[c]))) as f32);
            }
        }
        out
    }

    /// A contiguous row-major `rows × cols` view of `data`.
    fn row_major(data: &[f32], rows: usize, cols: usize) -> MatrixView<'_> {
        MatrixView {
            data,
            offset: 0,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000)
            .map(|v| v as f32 / 500.0 - 1.0)
            .collect()
    }

    pub(crate) fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= 1e-4 * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    #[test]
    fn contiguous_transposed_and_offset_views_match_the_triple_loop() {
        // Shapes on both sides of the parallel threshold.
        for &(m, k, n) in &[(3, 5, 4), (200, 190, 210)] {
            let a = values(m * k + 7, 1);
            let b = values(k * n, 2);
            let bias = values(n, 3);
            let (lhs, rhs_both) = offset_and_transposed_views(&a, &b, (m, k, n));
            for r in rhs_both {
                close(&matmul(lhs, r, None).unwrap(), &naive(lhs, r, None));
                close(
                    &matmul(lhs, r, Some(&bias)).unwrap(),
                    &naive(lhs, r, Some(&bias)),
                );
            }
        }
    }

    #[test]
    fn empty_inner_dimension_gives_the_bias_and_bad_views_are_refused() {
        let data = [1.0f32; 6];
        let empty = row_major(&data, 2, 0);
        let rhs = MatrixView {
            rows: 0,
            cols: 3,
            ..empty
        };
        assert_eq!(
            matmul(empty, rhs, Some(&[1.0, 2.0, 3.0])).unwrap(),
            [1.0, 2.0, 3.0, 1.0, 2.0, 3.0]
        );
        let outside = MatrixView {
            data: &data,
            offset: 1,
            rows: 2,
            cols: 3,
            row_stride: 3,
            col_stride: 1,
        };
        let square = MatrixView {
            rows: 3,
            cols: 2,
            row_stride: 2,
            offset: 0,
            ..outside
        };
        assert!(matmul(outside, square, None).is_none());
        assert!(matmul(square, square, None).is_none(), "3×2 · 3×2");
        let fine = MatrixView {
            offset: 0,
            ..outside
        };
        assert!(
            matmul(fine, square, Some(&[0.0; 3])).is_none(),
            "bias length"
        );
        assert!(matmul(fine, square, None).is_some());
    }

    #[test]
    fn skinny_products_split_by_rows_match_the_triple_loop() {
        // LoRA's shapes: a rank-8 factor on either side, large enough to go parallel.
        for &(m, k, n) in &[(4096, 384, 8), (4096, 8, 384), (384, 4096, 8)] {
            let a = values(m * k, 4);
            let b = values(k * n, 5);
            let lhs = row_major(&a, m, k);
            let rhs = row_major(&b, k, n);
            close(&matmul(lhs, rhs, None).unwrap(), &naive(lhs, rhs, None));
        }
    }

    #[test]
    fn batched_products_with_scale_transposes_and_a_broadcast_bias() {
        // Attention's shapes: [b, h, s, d]·[b, h, d, s] with k read through a transposed
        // view, a bias [b, 1, 1, s] broadcast with zero strides, then probabilities·v.
        let (b, h, s, d) = (2, 3, 17, 8);
        let q = values(b * h * s * d, 6);
        let k = values(b * h * s * d, 7);
        let mask = values(b * s, 8);
        let shape_q = [b, h, s, d];
        let strides_q = [h * s * d, s * d, d, 1];
        let shape_kt = [b, h, d, s];
        let strides_kt = [h * s * d, s * d, 1, d];
        let shape_out = [b, h, s, s];
        let strides_bias = [s, 0, 0, 1];
        let view = |data, shape, strides| StackView {
            data,
            offset: 0,
            shape,
            strides,
        };
        let scale = 0.25f32;
        let lhs = view(&q, &shape_q, &strides_q);
        let rhs = view(&k, &shape_kt, &strides_kt);
        let bias = view(&mask, &shape_out, &strides_bias);
        let got = matmul_batched(lhs, rhs, scale, Some(bias)).unwrap();
        let mut expected = Vec::new();
        for i in 0..b * h {
            let (a, w, bm) = (lhs.matrix(i), rhs.matrix(i), bias.matrix(i));
            let bias_row: Vec<f32> = (0..s).map(|c| bm.data[bm.offset + c]).collect();
            let plain = naive(a, w, None);
            expected.extend(
                plain
                    .chunks(s)
                    .flat_map(|row| row.iter().zip(&bias_row).map(|(v, b)| scale * v + b)),
            );
        }
        close(&got, &expected);
        // Without bias and scale, against the same loop.
        let got = matmul_batched(lhs, rhs, 1.0, None).unwrap();
        let expected: Vec<f32> = (0..b * h)
            .flat_map(|i| naive(lhs.matrix(i), rhs.matrix(i), None))
            .collect();
        close(&got, &expected);
        // Mismatched batch dimensions and a view outside its buffer are refused.
        let other = [b, h + 1, d, s];
        assert!(matmul_batched(lhs, view(&k, &other, &strides_kt), 1.0, None).is_none());
        let too_far = StackView { offset: 1, ..lhs };
        assert!(matmul_batched(too_far, rhs, 1.0, None).is_none());
    }

    #[test]
    fn product_kernel_names_the_path_this_cpu_takes() {
        let description = product_kernel();
        if let Some(library) = blas_library() {
            assert!(
                description.starts_with(&format!("system BLAS {library}")),
                "{description}"
            );
            return;
        }
        assert!(
            description.starts_with("built-in gemm kernel ("),
            "{description}"
        );
        // The kernel set, before any note about a library passed over.
        let head = description.split(';').next().unwrap_or_default();
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        {
            let expected = if std::arch::is_x86_feature_detected!("avx512f") {
                "AVX-512"
            } else if std::arch::is_x86_feature_detected!("fma") {
                "AVX2+FMA"
            } else {
                "generic"
            };
            assert!(
                head.contains(expected),
                "{description}, expected {expected}"
            );
            if !std::arch::is_x86_feature_detected!("avx512f") {
                assert!(!head.contains("AVX-512"), "{description}");
            }
        }
        #[cfg(target_arch = "aarch64")]
        assert!(
            head.contains(if std::arch::is_aarch64_feature_detected!("neon") {
                "NEON"
            } else {
                "generic"
            }),
            "{description}"
        );
    }

    #[test]
    fn product_kernel_descriptions() {
        assert_eq!(
            describe_product_kernel(Some("libopenblas.so.0 (Haswell kernels)"), "AVX-512"),
            "system BLAS libopenblas.so.0 (Haswell kernels)"
        );
        assert_eq!(
            describe_product_kernel(None, "AVX2+FMA"),
            "built-in gemm kernel (AVX2+FMA)"
        );
    }

    #[test]
    fn add_product_accumulates_a_scaled_product_in_place() {
        for &(m, k, n) in &[(5, 3, 4), (4096, 8, 384)] {
            let a = values(m * k, 9);
            let b = values(k * n, 10);
            let base = values(m * n, 11);
            let lhs = row_major(&a, m, k);
            let rhs = row_major(&b, k, n);
            let mut out = base.clone();
            add_product(&mut out, lhs, rhs, 0.5).unwrap();
            let expected: Vec<f32> = naive(lhs, rhs, None)
                .iter()
                .zip(&base)
                .map(|(p, b)| b + 0.5 * p)
                .collect();
            close(&out, &expected);
            assert!(
                add_product(&mut out[1..], lhs, rhs, 0.5).is_none(),
                "output size"
            );
        }
    }
}
