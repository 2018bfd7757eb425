//! Batched inference: probabilities for a whole encoded set.

use burn::tensor::Device;

use super::MultiLabelClassifier;
use crate::data::{EncodedSet, epoch_batches};
use crate::error::{Error, Result};
use crate::models::Backbone;

/// Sigmoid probabilities (`n × labels`, in set order) from a model in evaluation mode
/// (call `.valid()` on a training model first). Batches are length-sorted to limit padding.
pub fn predict_probs<B: Backbone>(
    model: &MultiLabelClassifier<B>,
    set: &EncodedSet,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    let l = model.num_labels();
    let lengths: Vec<usize> = set.ids.iter().map(Vec::len).collect();
    let mut probs = vec![0f32; set.len() * l];
    for indices in epoch_batches(&lengths, batch_size, false, true, 0, 0) {
        let batch = set.batch(&indices, device)?;
        let p = model
            .probabilities(&batch.input)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| Error::InvalidState(format!("{e:?}")))?;
        for (row, &i) in indices.iter().enumerate() {
            probs[i * l..(i + 1) * l].copy_from_slice(&p[row * l..(row + 1) * l]);
        }
    }
    Ok(probs)
}
