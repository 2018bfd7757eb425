//! 4-bit NormalFloat (NF4) block quantisation, as bitsandbytes stores QLoRA's frozen
//! weights: blocks of `blocksize` values (64 in QLoRA) scaled by their absolute maximum,
//! each value replaced by the index of the nearest of 16 NF4 levels, two indices per byte
//! (the first in the high nibble). Bit-exact with `bitsandbytes.functional.quantize_4bit` /
//! `dequantize_4bit` (checked against bitsandbytes 0.50 in `tests/nf4.rs`).

use rayon::prelude::*;

/// The 16 NF4 levels (quantiles of a standard normal, rescaled to [-1, 1]), as f32.
pub const NF4_LEVELS: [f32; 16] = [
    -1.0,
    -0.696_192_8,
    -0.525_073_05,
    -0.394_917_5,
    -0.284_441_38,
    -0.184_773_43,
    -0.091_050_036,
    0.0,
    0.079_580_3,
    0.160_930_2,
    0.246_112_3,
    0.337_915_24,
    0.440_709_83,
    0.562_617,
    0.722_956_84,
    1.0,
];

/// Packed NF4 data: `packed[i]` holds values `2i` (high nibble) and `2i + 1` (low).
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4 {
    /// Two 4-bit level indices per byte.
    pub packed: Vec<u8>,
    /// One scale per block (the block's largest magnitude; the last block may be partial).
    pub absmax: Vec<f32>,
    /// Values per block.
    pub blocksize: usize,
    /// Number of values.
    pub len: usize,
}

/// The level index of a value already scaled into [-1, 1]: how many decision midpoints
/// (computed in f32, as bitsandbytes does) lie strictly below it, i.e. `torch.bucketize`
/// with `right=False` — a value exactly on a midpoint takes the lower level.
fn level_index(scaled: f32) -> u8 {
    let mut index = 0u8;
    for pair in NF4_LEVELS.windows(2) {
        if (pair[0] + pair[1]) / 2.0 < scaled {
            index += 1;
        }
    }
    index
}

/// Quantise `values` in blocks of `blocksize` (`blocksize` must be even and > 0).
pub fn quantize(values: &[f32], blocksize: usize) -> Nf4 {
    assert!(
        blocksize > 0 && blocksize.is_multiple_of(2),
        "blocksize must be even and > 0"
    );
    let mut absmax: Vec<f32> = values
        .par_chunks(blocksize)
        .map(|block| block.iter().fold(0f32, |m, v| m.max(v.abs())))
        .collect();
    if !values.len().is_multiple_of(blocksize)
        && let Some(last) = absmax.last_mut()
    {
        // bitsandbytes stores a partial last block's scale already guarded.
        *last = last.max(1e-38);
    }
    let mut indices: Vec<u8> = values
        .par_chunks(blocksize)
        .zip(&absmax)
        .flat_map_iter(|(block, &max)| {
            // As bitsandbytes, to the bit: full blocks multiply by the reciprocal of their
            // absmax, a partial last block divides by it; an all-zero block is guarded.
            let max = max.max(1e-38);
            let (inverse, partial) = (1.0 / max, block.len() < blocksize);
            block.iter().map(move |v| {
                let scaled = if partial { v / max } else { v * inverse };
                level_index(scaled.clamp(-1.0, 1.0))
            })
        })
        .collect();
    if !indices.len().is_multiple_of(2) {
        // An odd count pads with a scaled 0, as bitsandbytes pads before packing.
        indices.push(level_index(0.0));
    }
    let packed = indices.chunks(2).map(|p| (p[0] << 4) | p[1]).collect();
    Nf4 {
        packed,
        absmax,
        blocksize,
        len: values.len(),
    }
}

impl Nf4 {
    /// The values back: `level × absmax` of their block, in f32.
    pub fn dequantize(&self) -> Vec<f32> {
        crate::fill_parallel(self.len, self.blocksize, |b, block| {
            // (A block without its absmax reads as zeros; constructors don't allow one.)
            let scale = self.absmax.get(b).copied().unwrap_or(0.0);
            let start = b * self.blocksize;
            for (i, v) in block.iter_mut().enumerate() {
                let at = start + i;
                let byte = self.packed[at / 2];
                let index = if at.is_multiple_of(2) {
                    byte >> 4
                } else {
                    byte & 0x0f
                };
                v.write(NF4_LEVELS[index as usize] * scale);
            }
        })
    }

    /// Bytes held: packed indices plus f32 scales (4.5 bits per value at blocksize 64).
    pub fn stored_bytes(&self) -> usize {
        self.packed.len() + 4 * self.absmax.len()
    }
}
