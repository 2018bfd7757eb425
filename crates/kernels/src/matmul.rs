//! f32 matrix products straight into a fresh output buffer.
//!
//! burn-flex's matmul zero-fills a byte vector for every output and then copies it into an
//! aligned buffer; at a MiniLM feed-forward shape that costs about a third of the product's
//! time on a 2-core machine (BENCHMARKS.md, "Speed vs PyTorch + PEFT"). Here the same `gemm`
//! kernel writes into uninitialised memory, or into a buffer pre-filled with the bias, which
//! also saves the separate bias pass of `x·W + b`.

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

/// `lhs · rhs`, plus `bias` added to every row when given, as a row-major `lhs.rows ×
/// rhs.cols` vector. `None` when the shapes disagree (`lhs.cols ≠ rhs.rows`, a bias of
/// another length) or a view reaches outside its buffer.
pub fn matmul(lhs: MatrixView, rhs: MatrixView, bias: Option<&[f32]>) -> Option<Vec<f32>> {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    if rhs.rows != k || !lhs.fits() || !rhs.fits() || bias.is_some_and(|b| b.len() != n) {
        return None;
    }
    let len = m.checked_mul(n)?;
    if k == 0 || len == 0 {
        // Nothing to multiply: the sum over an empty k is zero.
        let mut out = vec![0f32; len];
        if let Some(bias) = bias {
            out.chunks_mut(n.max(1))
                .for_each(|row| row.copy_from_slice(bias));
        }
        return Some(out);
    }
    let (mut out, read_dst) = match bias {
        Some(bias) => (bias.repeat(m), true),
        None => (Vec::with_capacity(len), false),
    };
    let parallelism = if m.saturating_mul(n).saturating_mul(k) >= PARALLEL_WORK {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: both views were checked to lie inside their buffers (`fits`), strides are
    // non-negative, and `out` has room for `m × n` elements written row-major (column
    // stride 1, row stride n). With `read_dst` false gemm only writes `out`, every element
    // of it, so the length can then be set; with `read_dst` it reads the bias already there.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            read_dst,
            lhs.data.as_ptr().add(lhs.offset),
            lhs.col_stride as isize,
            lhs.row_stride as isize,
            rhs.data.as_ptr().add(rhs.offset),
            rhs.col_stride as isize,
            rhs.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
        if !read_dst {
            out.set_len(len);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The textbook triple loop over two views.
    fn naive(lhs: MatrixView, rhs: MatrixView, bias: Option<&[f32]>) -> Vec<f32> {
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

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 1000)
            .map(|v| v as f32 / 500.0 - 1.0)
            .collect()
    }

    fn close(a: &[f32], b: &[f32]) {
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
            let lhs = MatrixView {
                data: &a,
                offset: 7,
                rows: m,
                cols: k,
                row_stride: k,
                col_stride: 1,
            };
            // `b` read as the transpose of an `[n, k]` matrix.
            let rhs_t = MatrixView {
                data: &b,
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
            for r in [rhs, rhs_t] {
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
        let empty = MatrixView {
            data: &data,
            offset: 0,
            rows: 2,
            cols: 0,
            row_stride: 0,
            col_stride: 1,
        };
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
}
