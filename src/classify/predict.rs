//! Batched inference: probabilities for a whole encoded set.

use burn::tensor::Device;

use super::MultiLabelClassifier;
use crate::data::EncodedSet;
use crate::error::{Error, Result};
use crate::models::Backbone;

/// Sigmoid probabilities (`n × labels`, in set order) from a model in evaluation mode
/// (call `.valid()` on a training model first).
pub fn predict_probs<B: Backbone>(
    model: &MultiLabelClassifier<B>,
    set: &EncodedSet,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    predict_probs_observed(model, set, batch_size, device, || {})
}

/// [`predict_probs`], calling `after_batch` once each batch is scored (to show progress;
/// there are `set.len().div_ceil(batch_size)` batches).
pub fn predict_probs_observed<B: Backbone>(
    model: &MultiLabelClassifier<B>,
    set: &EncodedSet,
    batch_size: usize,
    device: &Device,
    mut after_batch: impl FnMut(),
) -> Result<Vec<f32>> {
    model.check_inputs(set)?;
    set.map_batches(batch_size, device, |batch| {
        let rows = model
            .probabilities(&batch.input)
            .into_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_err(|e| Error::InvalidState(format!("{e:?}")))?;
        after_batch();
        Ok(rows)
    })
}
