//! 8-bit absmax quantisation per row, as bitsandbytes' `int8_vectorwise_quant` stores an
//! LLM.int8 weight (without the outlier columns kept in 16 bits): each row scaled by its
//! largest magnitude to [-127, 127] and rounded to nearest (ties to even, as `torch.round`).

use rayon::prelude::*;

/// Int8 rows with one f32 scale (the row's absmax) each.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Rows {
    /// `rows × cols` values, row-major.
    pub values: Vec<i8>,
    /// Per row: the largest magnitude (the value 127 stands for).
    pub absmax: Vec<f32>,
    /// Row length.
    pub cols: usize,
}

/// Quantise a row-major `rows × cols` matrix (`cols > 0`).
pub fn quantize(values: &[f32], cols: usize) -> Int8Rows {
    assert!(
        cols > 0 && values.len().is_multiple_of(cols),
        "values must be whole rows"
    );
    let absmax = crate::block_absmax(values, cols);
    let values = values
        .par_chunks(cols)
        .zip(&absmax)
        .flat_map_iter(|(row, &max)| {
            let scale = if max > 0.0 { 127.0 / max } else { 0.0 };
            row.iter()
                .map(move |v| (v * scale).round_ties_even().clamp(-127.0, 127.0) as i8)
        })
        .collect();
    Int8Rows {
        values,
        absmax,
        cols,
    }
}

impl Int8Rows {
    /// The values back, row-major: `q · absmax / 127`.
    pub fn dequantize(&self) -> Vec<f32> {
        crate::fill_parallel(self.values.len(), self.cols, |row, o| {
            let scale = self.absmax.get(row).copied().unwrap_or(0.0) / 127.0;
            let q = &self.values[row * self.cols..][..o.len()];
            o.iter_mut().zip(q).for_each(|(o, &q)| {
                o.write(f32::from(q) * scale);
            });
        })
    }

    /// Bytes held: one per value plus an f32 per row.
    pub fn stored_bytes(&self) -> usize {
        self.values.len() + 4 * self.absmax.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_round_trip_within_half_a_step() {
        let values: Vec<f32> = (0..96)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.17)
            .collect();
        let q = quantize(&values, 32);
        assert_eq!((q.values.len(), q.absmax.len()), (96, 3));
        let back = q.dequantize();
        for (r, row) in values.chunks(32).enumerate() {
            let step = q.absmax[r] / 127.0;
            // The row's largest magnitude maps to ±127 exactly.
            assert!(row.iter().any(|v| v.abs() == q.absmax[r]));
            for (a, b) in row.iter().zip(&back[r * 32..(r + 1) * 32]) {
                assert!((a - b).abs() <= step / 2.0 + 1e-6, "{a} vs {b}");
            }
        }
        // An all-zero row stays zero (no division by zero).
        let zeros = quantize(&[0.0; 8], 4);
        assert_eq!(zeros.dequantize(), vec![0.0; 8]);
    }
}
