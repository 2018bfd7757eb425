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
    let mut absmax = crate::block_absmax(values, blocksize);
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
        dequantize_levels(&self.packed, &self.absmax, self.blocksize, self.len)
    }

    /// Bytes held: packed indices plus f32 scales (4.5 bits per value at blocksize 64).
    pub fn stored_bytes(&self) -> usize {
        self.packed.len() + 4 * self.absmax.len()
    }

    /// Double quantisation (QLoRA's, bitsandbytes' `compress_statistics=True`): the absmax
    /// stored as 8-bit codes ([`CompressedAbsmax`]).
    pub fn compress_statistics(self) -> Nf4Double {
        Nf4Double {
            absmax: CompressedAbsmax::compress(&self.absmax),
            packed: self.packed,
            blocksize: self.blocksize,
            len: self.len,
        }
    }
}

/// `len` values from packed level indices and one scale per block of `blocksize`.
fn dequantize_levels(packed: &[u8], absmax: &[f32], blocksize: usize, len: usize) -> Vec<f32> {
    crate::fill_parallel(len, blocksize, |b, block| {
        // (A block without its absmax reads as zeros; constructors don't allow one.)
        let scale = absmax.get(b).copied().unwrap_or(0.0);
        let start = b * blocksize;
        for (i, v) in block.iter_mut().enumerate() {
            let at = start + i;
            let byte = packed[at / 2];
            let index = if at.is_multiple_of(2) {
                byte >> 4
            } else {
                byte & 0x0f
            };
            v.write(NF4_LEVELS[index as usize] * scale);
        }
    })
}

/// NF4 whose block scales are themselves quantised ([`Nf4::compress_statistics`]):
/// ≈ 4.127 bits per value at blocksize 64 instead of 4.5.
#[derive(Debug, Clone, PartialEq)]
pub struct Nf4Double {
    /// Two 4-bit level indices per byte, as [`Nf4::packed`].
    pub packed: Vec<u8>,
    /// The block scales, compressed.
    pub absmax: CompressedAbsmax,
    /// Values per block.
    pub blocksize: usize,
    /// Number of values.
    pub len: usize,
}

impl Nf4Double {
    /// The values back, from the decompressed block scales.
    pub fn dequantize(&self) -> Vec<f32> {
        dequantize_levels(
            &self.packed,
            &self.absmax.decompress(),
            self.blocksize,
            self.len,
        )
    }

    /// Bytes held: packed indices plus the compressed scales.
    pub fn stored_bytes(&self) -> usize {
        self.packed.len() + self.absmax.stored_bytes()
    }
}

/// NF4's block scales quantised as bitsandbytes' `quantize_4bit(compress_statistics=True)`
/// does: their mean subtracted, then `quantize_blockwise` in blocks of 256 — each block
/// divided by its largest magnitude and every value replaced by the index of the nearest
/// entry of the signed 8-bit dynamic map ([`dynamic_map`]; ties to the lower entry).
#[derive(Debug, Clone, PartialEq)]
pub struct CompressedAbsmax {
    /// The mean of the scales, subtracted before quantising.
    pub offset: f32,
    /// One dynamic-map index per scale.
    pub codes: Vec<u8>,
    /// The largest magnitude of each block of [`ABSMAX_BLOCKSIZE`] codes.
    pub scales: Vec<f32>,
}

/// Scales per block of the second quantisation (bitsandbytes' fixed 256).
pub const ABSMAX_BLOCKSIZE: usize = 256;

impl CompressedAbsmax {
    /// Compress the scales `absmax`.
    pub fn compress(absmax: &[f32]) -> Self {
        let map = dynamic_map();
        // The mean as PyTorch's f32 `mean` rounds it, near enough: summed in f64.
        let offset =
            (absmax.iter().map(|&v| v as f64).sum::<f64>() / absmax.len().max(1) as f64) as f32;
        let centred: Vec<f32> = absmax.iter().map(|&v| v - offset).collect();
        let scales = crate::block_absmax(&centred, ABSMAX_BLOCKSIZE);
        let codes = centred
            .chunks(ABSMAX_BLOCKSIZE)
            .zip(&scales)
            .flat_map(|(block, &scale)| block.iter().map(move |&v| nearest(&map, v / scale)))
            .collect();
        CompressedAbsmax {
            offset,
            codes,
            scales,
        }
    }

    /// The scales back: `map[code] × scale of its block + offset`.
    pub fn decompress(&self) -> Vec<f32> {
        let map = dynamic_map();
        self.codes
            .chunks(ABSMAX_BLOCKSIZE)
            .zip(&self.scales)
            .flat_map(|(codes, &scale)| codes.iter().map(move |&c| map[c as usize] * scale))
            .map(|v| v + self.offset)
            .collect()
    }

    /// Bytes held: one per code, an f32 per block of codes, and the offset.
    pub fn stored_bytes(&self) -> usize {
        self.codes.len() + 4 * self.scales.len() + 4
    }
}

/// The index of the entry of the ascending `map` nearest to `x`: the last entry ≤ `x`,
/// or the next one if strictly nearer (bitsandbytes' CPU `quantize_blockwise`).
fn nearest(map: &[f32; 256], x: f32) -> u8 {
    let below = map.partition_point(|&m| m <= x).saturating_sub(1);
    let right = (below + 1).min(255);
    let pick = if (x - map[right]).abs() < (x - map[below]).abs() {
        right
    } else {
        below
    };
    pick as u8
}

/// bitsandbytes' signed 8-bit dynamic quantisation map (`create_dynamic_map()`: for
/// exponents 10⁻⁶ … 10⁰, the midpoints of `2ⁱ + 1` evenly spaced fractions in [0.1, 1],
/// both signs; plus 0 and 1), ascending, computed in f32 as PyTorch does.
pub fn dynamic_map() -> [f32; 256] {
    let mut data = Vec::with_capacity(256);
    for i in 0..7 {
        let steps = (1usize << i) + 1;
        let boundaries = linspace_f32(0.1, 1.0, steps);
        let power = 10f64.powi(i - 6) as f32;
        for pair in boundaries.windows(2) {
            let mean = (pair[0] + pair[1]) / 2.0;
            data.push(power * mean);
            data.push(-(power * mean));
        }
    }
    data.push(0.0);
    data.push(1.0);
    data.sort_by(f32::total_cmp);
    let mut map = [0f32; 256];
    map.copy_from_slice(&data);
    map
}

/// `torch.linspace(start, end, steps)` in f32 as PyTorch's CPU kernel computes it: the
/// first half counted up from `start`, the second down from `end`, each a fused
/// multiply-add (its AVX2 build contracts `start + step·i`; plain products differ by an ulp).
fn linspace_f32(start: f32, end: f32, steps: usize) -> Vec<f32> {
    let step = (end - start) / (steps - 1) as f32;
    let half = steps / 2;
    (0..steps)
        .map(|i| {
            if i < half {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((steps - 1 - i) as f32, end)
            }
        })
        .collect()
}
