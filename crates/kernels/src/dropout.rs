//! Inverted-dropout keep-masks stored one bit per element.
//!
//! A training graph keeps the mask of every active dropout from the forward to the backward.
//! As an f32 tensor that is 4 bytes per element (a third of MiniLM's training peak); drawn
//! again from its seed in the backward it is nothing, but the draw (a 64-bit hash per two
//! elements) then runs twice, which cost MiniLM 15 % of its step. One bit per element keeps
//! 1/32 of the f32 mask and reads it back at the speed of a multiplication.

use std::sync::Arc;

use rayon::prelude::*;

use crate::{CHUNK, fill_parallel};

/// Mask bits per stored word.
const WORD_BITS: usize = u64::BITS as usize;

/// The odd constant SplitMix64 steps its counter by.
const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's output function: a well-mixed 64-bit hash of a counter.
fn splitmix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// An inverted-dropout keep-mask over `len` elements: element `i` is kept and scaled by
/// `1/keep` with probability `keep`, else zeroed.
///
/// Element `i` depends only on `(seed, i)` (SplitMix64 over a counter, two 32-bit draws per
/// hash), so the mask is the same however the work is split across threads. Cloning shares
/// the bits.
#[derive(Clone, Debug)]
pub struct KeepMask {
    words: Arc<[u64]>,
    len: usize,
    scale: f32,
}

impl KeepMask {
    /// The mask of `len` elements that `seed` draws, each kept with probability `keep`.
    pub fn draw(len: usize, keep: f64, seed: u64) -> Self {
        let threshold = (keep * 4_294_967_296.0) as u64; // keep · 2³²
        let kept = |draw: u64| u64::from(draw < threshold);
        let mut words = vec![0u64; len.div_ceil(WORD_BITS)];
        words
            .par_chunks_mut(CHUNK / WORD_BITS)
            .enumerate()
            .for_each(|(c, chunk)| {
                for (j, word) in chunk.iter_mut().enumerate() {
                    // Elements 2p and 2p + 1 share the hash of counter p + 1. (Bits past
                    // `len` in the last word are drawn too and never read.)
                    let first_pair = (c * CHUNK + j * WORD_BITS) / 2;
                    *word = (0..WORD_BITS / 2).fold(0, |w, p| {
                        let counter = (first_pair + p) as u64 + 1;
                        let bits =
                            splitmix64(seed.wrapping_add(counter.wrapping_mul(GOLDEN_GAMMA)));
                        w | kept(bits & 0xFFFF_FFFF) << (2 * p) | kept(bits >> 32) << (2 * p + 1)
                    });
                }
            });
        Self {
            words: words.into(),
            len,
            scale: (1.0 / keep) as f32,
        }
    }

    /// How many elements the mask covers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mask covers no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The mask's values `mᵢ` (`1/keep` or 0).
    pub fn values(&self) -> Vec<f32> {
        self.map(|_, m| m)
    }

    /// `x ⊙ m`, with `x` in the mask's (row-major) element order.
    ///
    /// # Panics
    /// When `x.len()` differs from the mask's length.
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        assert_eq!(
            x.len(),
            self.len,
            "dropout mask over a tensor of another size"
        );
        self.map(|i, m| x[i] * m)
    }

    /// `value(i, mᵢ)` for every element, on all cores.
    fn map(&self, value: impl Fn(usize, f32) -> f32 + Sync) -> Vec<f32> {
        let scale = self.scale.to_bits();
        fill_parallel(self.len, CHUNK, |c, out| {
            let start = c * CHUNK;
            let words = &self.words[start / WORD_BITS..];
            for (k, (out, &word)) in out.chunks_mut(WORD_BITS).zip(words).enumerate() {
                for (b, o) in out.iter_mut().enumerate() {
                    // All ones where kept: the scale's bits, else +0.0 (so `x · m` is
                    // `x · 0.0` where dropped, -0 or NaN included, as with an f32 mask).
                    let keep_bits = ((word >> b) & 1).wrapping_neg() as u32;
                    let m = f32::from_bits(scale & keep_bits);
                    o.write(value(start + k * WORD_BITS + b, m));
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask as first specified, one element at a time: `1/keep` where the element's
    /// 32-bit half of its pair's hash falls below `keep · 2³²`.
    fn reference(n: usize, keep: f64, seed: u64) -> Vec<f32> {
        (0..n)
            .map(|i| {
                let counter = (i / 2) as u64 + 1;
                let hash = splitmix64(seed.wrapping_add(counter.wrapping_mul(GOLDEN_GAMMA)));
                let draw = (hash >> (32 * (i % 2))) & 0xFFFF_FFFF;
                if draw < (keep * 4_294_967_296.0) as u64 {
                    (1.0 / keep) as f32
                } else {
                    0.0
                }
            })
            .collect()
    }

    #[test]
    fn the_bits_are_the_reference_draws() {
        // Across chunk and word boundaries and with a partial last word.
        for (n, keep, seed) in [
            (CHUNK * 2 + 7, 0.7, 11),
            (63, 0.9, 3),
            (1, 0.5, 0),
            (0, 0.5, 1),
        ] {
            let mask = KeepMask::draw(n, keep, seed);
            assert_eq!(mask.len(), n);
            assert_eq!(mask.values(), reference(n, keep, seed), "n {n}");
        }
    }

    #[test]
    fn applying_the_mask_equals_multiplying_by_it() {
        // Values whose product with 0 is -0 or NaN: the same bits as `x * mask`.
        let n = CHUNK * 2 + 7;
        let mut x: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        x[1] = f32::NAN;
        x[2] = f32::INFINITY;
        x[3] = -2.5;
        let mask = KeepMask::draw(n, 0.7, 11);
        let want: Vec<u32> = x
            .iter()
            .zip(reference(n, 0.7, 11))
            .map(|(a, m)| (a * m).to_bits())
            .collect();
        let got: Vec<u32> = mask.apply(&x).iter().map(|v| v.to_bits()).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_mask_keeps_the_requested_fraction_scaled() {
        let mask = KeepMask::draw(1 << 20, 0.9, 7).values();
        let kept = mask.iter().filter(|&&m| m != 0.0).count() as f64 / mask.len() as f64;
        // Binomial sd at n = 2²⁰, p = 0.9 is ~3e-4.
        assert!((kept - 0.9).abs() < 2e-3, "kept {kept}");
        assert!(
            mask.iter()
                .all(|&m| m == 0.0 || (m - 1.0 / 0.9).abs() < 1e-6)
        );
        assert_ne!(
            KeepMask::draw(64, 0.5, 1).values(),
            KeepMask::draw(64, 0.5, 2).values()
        );
    }

    #[test]
    fn draws_are_independent_of_neighbours() {
        // Adjacent elements (the two halves of one hash, and across hashes) agree about as
        // often as independent draws would: p² + (1-p)² = 0.5 at p = 0.5.
        let mask = KeepMask::draw(1 << 20, 0.5, 11).values();
        let same = mask
            .windows(2)
            .filter(|w| (w[0] == 0.0) == (w[1] == 0.0))
            .count() as f64
            / (mask.len() - 1) as f64;
        assert!((same - 0.5).abs() < 3e-3, "agreement {same}");
    }
}
