//! Turning examples into padded tensor batches: tokenise once, truncate to `max_len`,
//! pad each batch to its longest row, bucket by length, shuffle deterministically.

use burn::tensor::{Device, Int, Tensor, TensorData};

use super::dataset::Example;
use crate::error::Result;
use crate::models::EncoderInput;
use crate::tokenize::PromptTemplate;
use crate::tokenize::TextTokenizer;

/// Examples after tokenisation (truncated, unpadded).
#[derive(Debug, Clone)]
pub struct EncodedSet {
    /// Token ids per example.
    pub ids: Vec<Vec<u32>>,
    /// Label indices per example.
    pub labels: Vec<Vec<usize>>,
    /// Number of labels.
    pub num_labels: usize,
    /// Padding id.
    pub pad_id: u32,
}

impl EncodedSet {
    /// Tokenise `examples` (through `template` when given).
    pub fn encode(
        examples: &[Example],
        tokenizer: &TextTokenizer,
        template: Option<&PromptTemplate>,
        num_labels: usize,
    ) -> Result<Self> {
        let mut ids = Vec::with_capacity(examples.len());
        for e in examples {
            ids.push(match template {
                Some(t) => tokenizer.encode_with_template(t, &e.text)?,
                None => tokenizer.encode_ids(&e.text)?,
            });
        }
        Ok(EncodedSet {
            ids,
            labels: examples.iter().map(|e| e.labels.clone()).collect(),
            num_labels,
            pad_id: tokenizer.pad_id(),
        })
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when there are no examples.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Multi-hot targets of every example (`n × labels`, 0/1).
    pub fn multi_hot(&self) -> Vec<u8> {
        let mut out = vec![0u8; self.len() * self.num_labels];
        for (i, labels) in self.labels.iter().enumerate() {
            for &j in labels {
                out[i * self.num_labels + j] = 1;
            }
        }
        out
    }

    /// Run `score` over length-sorted batches (less padding) and put each row of its output
    /// (`rows × num_labels`) back at its example's place: `n × num_labels` in set order.
    pub fn map_batches(
        &self,
        batch_size: usize,
        device: &Device,
        mut score: impl FnMut(&Batch) -> Result<Vec<f32>>,
    ) -> Result<Vec<f32>> {
        let l = self.num_labels;
        let lengths: Vec<usize> = self.ids.iter().map(Vec::len).collect();
        let mut out = vec![0f32; self.len() * l];
        for indices in epoch_batches(&lengths, batch_size, false, true, 0, 0) {
            let batch = self.batch(&indices, device);
            let rows = score(&batch)?;
            for (row, &i) in indices.iter().enumerate() {
                out[i * l..(i + 1) * l].copy_from_slice(&rows[row * l..(row + 1) * l]);
            }
        }
        Ok(out)
    }

    /// Build the batch of the given example indices.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Batch {
        pad_batch(
            indices
                .iter()
                .map(|&i| (i, self.ids[i].as_slice(), self.labels[i].as_slice())),
            self.pad_id,
            self.num_labels,
            device,
        )
    }

    /// Example `index` as a dataset item (ids and labels copied).
    pub fn example(&self, index: usize) -> Option<EncodedExample> {
        Some(EncodedExample {
            index,
            ids: self.ids.get(index)?.clone(),
            labels: self.labels.get(index)?.clone(),
        })
    }
}

/// One tokenised example, the item a data loader hands to [`ExampleBatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedExample {
    /// Position in its [`EncodedSet`].
    pub index: usize,
    /// Token ids (truncated, unpadded).
    pub ids: Vec<u32>,
    /// Label indices.
    pub labels: Vec<usize>,
}

/// Pads [`EncodedExample`]s into a [`Batch`]; the batcher for burn's data loaders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExampleBatcher {
    /// Padding id.
    pub pad_id: u32,
    /// Number of labels.
    pub num_labels: usize,
}

impl ExampleBatcher {
    /// The batcher matching `set` (its pad id and label count).
    pub fn for_set(set: &EncodedSet) -> Self {
        ExampleBatcher {
            pad_id: set.pad_id,
            num_labels: set.num_labels,
        }
    }

    /// Pad `items` into one batch on `device`.
    pub fn pad(&self, items: &[EncodedExample], device: &Device) -> Batch {
        pad_batch(
            items
                .iter()
                .map(|e| (e.index, e.ids.as_slice(), e.labels.as_slice())),
            self.pad_id,
            self.num_labels,
            device,
        )
    }
}

/// Right-pad `(index, ids, labels)` rows to the longest one. Label indices at or past
/// `num_labels` are ignored (a [`LabelSet`](super::LabelSet) never produces them).
fn pad_batch<'a>(
    rows: impl ExactSizeIterator<Item = (usize, &'a [u32], &'a [usize])> + Clone,
    pad_id: u32,
    num_labels: usize,
    device: &Device,
) -> Batch {
    let b = rows.len();
    let seq = rows
        .clone()
        .map(|(_, ids, _)| ids.len())
        .max()
        .unwrap_or(1)
        .max(1);
    let mut ids = vec![i64::from(pad_id); b * seq];
    let mut mask = vec![0i64; b * seq];
    let mut targets = vec![0f32; b * num_labels];
    let mut indices = Vec::with_capacity(b);
    let mut tokens = 0;
    for (row, (index, src, labels)) in rows.enumerate() {
        for (dst, &id) in ids[row * seq..].iter_mut().zip(src) {
            *dst = i64::from(id);
        }
        mask[row * seq..row * seq + src.len()].fill(1);
        tokens += src.len();
        for &j in labels.iter().filter(|&&j| j < num_labels) {
            targets[row * num_labels + j] = 1.0;
        }
        indices.push(index);
    }
    let int = |v: Vec<i64>| Tensor::<2, Int>::from_data(TensorData::new(v, [b, seq]), device);
    Batch {
        input: EncoderInput {
            input_ids: int(ids),
            attention_mask: int(mask),
            token_type_ids: None,
        },
        targets: Tensor::from_data(TensorData::new(targets, [b, num_labels]), device),
        indices,
        tokens,
    }
}

/// A padded batch with its multi-hot targets.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Model input.
    pub input: EncoderInput,
    /// Multi-hot targets `[batch, labels]`.
    pub targets: Tensor<2>,
    /// Which examples.
    pub indices: Vec<usize>,
    /// Real tokens in the batch.
    pub tokens: usize,
}

/// SplitMix64: a tiny, fully specified generator, so data order is the same on every
/// platform and version (resume depends on it).
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Fisher–Yates shuffle.
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            let j = self.below(i + 1);
            v.swap(i, j);
        }
    }
}

/// The batches of one epoch, as example indices.
///
/// With `shuffle`, the order depends only on `(seed, epoch)`. With `bucket`, examples
/// are sorted by length inside windows of 50 batches before batching (less padding),
/// and the batches themselves are then shuffled.
pub fn epoch_batches(
    lengths: &[usize],
    batch_size: usize,
    shuffle: bool,
    bucket: bool,
    seed: u64,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let batch_size = batch_size.max(1);
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    let mut rng = SplitMix64::new(seed ^ (epoch as u64).wrapping_mul(0xA24B_AED4_963E_E407));
    if shuffle {
        rng.shuffle(&mut order);
    }
    if bucket {
        for window in order.chunks_mut(batch_size.saturating_mul(50)) {
            window.sort_by_key(|&i| lengths[i]);
        }
    }
    let mut batches: Vec<Vec<usize>> = order.chunks(batch_size).map(|c| c.to_vec()).collect();
    if shuffle && bucket {
        rng.shuffle(&mut batches);
    }
    batches
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_are_deterministic_and_cover_everything() {
        let lengths: Vec<usize> = (0..103).map(|i| (i * 37) % 50 + 1).collect();
        let a = epoch_batches(&lengths, 8, true, true, 42, 1);
        let b = epoch_batches(&lengths, 8, true, true, 42, 1);
        let c = epoch_batches(&lengths, 8, true, true, 42, 2);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut all: Vec<usize> = a.iter().flatten().copied().collect();
        all.sort();
        assert_eq!(all, (0..103).collect::<Vec<_>>());
        // Bucketing lowers padding against unbucketed batches of the same data.
        let pad = |bs: &[Vec<usize>]| -> usize {
            bs.iter()
                .map(|b| {
                    let m = b.iter().map(|&i| lengths[i]).max().unwrap();
                    b.iter().map(|&i| m - lengths[i]).sum::<usize>()
                })
                .sum()
        };
        assert!(pad(&a) < pad(&epoch_batches(&lengths, 8, true, false, 42, 1)));
    }
}
