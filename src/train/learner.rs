//! burn-train integration (feature `learner`): the classifier as a model burn-train's
//! `Learner` can drive, with its single-device, multi-device and DDP strategies.
//!
//! [`LearnerClassifier`] pairs a [`MultiLabelClassifier`] with its [`MultiLabelLoss`] and
//! implements `TrainStep` / `InferenceStep` on [`Batch`]es. An [`EncodedSet`] is a burn
//! `Dataset` of [`EncodedExample`]s and [`ExampleBatcher`] pads them, so burn's
//! `DataLoaderBuilder` builds the loaders:
//!
//! ```no_run
//! # use std::sync::Arc;
//! # use burn::data::dataloader::DataLoaderBuilder;
//! # use burn_lora::data::{EncodedSet, ExampleBatcher};
//! # fn demo(train: EncodedSet) {
//! let loader = DataLoaderBuilder::new(ExampleBatcher::for_set(&train))
//!     .batch_size(16)
//!     .shuffle(42)
//!     .build(train);
//! # }
//! ```
//!
//! The step outputs are burn-train's `MultiLabelClassificationOutput` with sigmoid
//! *probabilities* as `output`, so its multi-label metrics (Hamming score, F-beta with
//! a threshold) apply without a sigmoid of their own.
//!
//! burn-train's `Learner` owns the optimizer, schedule and checkpoints in its own formats;
//! the ready [`Trainer`](super::Trainer) is the path that writes PEFT adapters, tunes
//! thresholds and resumes exactly. After a `Learner` run, save the classifier with
//! [`save_adapter`](crate::adapter::save_adapter).

use burn::data::dataloader::batcher::Batcher;
use burn::data::dataset::{Dataset, DatasetError};
use burn::module::Module;
use burn::tensor::Device;
use burn::tensor::activation::sigmoid;
use burn_train::{InferenceStep, MultiLabelClassificationOutput, TrainOutput, TrainStep};

use crate::classify::{MultiLabelClassifier, MultiLabelLoss};
use crate::data::{Batch, EncodedExample, EncodedSet, ExampleBatcher};
use crate::models::Backbone;

/// A classifier with the loss it trains on: the model type for burn-train's `Learner`.
#[derive(Module, Debug)]
pub struct LearnerClassifier<B: Backbone> {
    /// The classifier (backbone with adapters, head).
    pub model: MultiLabelClassifier<B>,
    /// The training loss (also reported on validation batches).
    #[module(skip)]
    pub loss: MultiLabelLoss,
}

impl<B: Backbone> LearnerClassifier<B> {
    /// Pair `model` with `loss`.
    pub fn new(model: MultiLabelClassifier<B>, loss: MultiLabelLoss) -> Self {
        LearnerClassifier { model, loss }
    }

    /// The classifier, for saving or prediction.
    pub fn into_model(self) -> MultiLabelClassifier<B> {
        self.model
    }

    /// Loss and metric inputs of one batch.
    fn output(&self, batch: Batch) -> MultiLabelClassificationOutput {
        let logits = self.model.forward(&batch.input);
        let loss = self.loss.forward(logits.clone(), batch.targets.clone());
        MultiLabelClassificationOutput::new(loss, sigmoid(logits), batch.targets.int())
    }
}

impl<B: Backbone + 'static> TrainStep for LearnerClassifier<B> {
    type Input = Batch;
    type Output = MultiLabelClassificationOutput;

    fn step(&self, batch: Batch) -> TrainOutput<MultiLabelClassificationOutput> {
        let output = self.output(batch);
        // Gradients of frozen parameters are never tracked, so only adapters and head
        // reach the optimizer.
        let grads = output.loss.backward();
        TrainOutput::new(self, grads, output)
    }
}

impl<B: Backbone + 'static> InferenceStep for LearnerClassifier<B> {
    type Input = Batch;
    type Output = MultiLabelClassificationOutput;

    fn step(&self, batch: Batch) -> MultiLabelClassificationOutput {
        self.output(batch)
    }
}

impl Dataset<EncodedExample> for EncodedSet {
    fn get(&self, index: usize) -> Result<EncodedExample, DatasetError> {
        self.example(index).ok_or_else(|| {
            DatasetError::new(crate::Error::InvalidState(format!(
                "example {index} is out of range: the set has {}",
                self.len()
            )))
        })
    }

    fn len(&self) -> usize {
        self.ids.len()
    }
}

impl Batcher<EncodedExample, Batch> for ExampleBatcher {
    fn batch(&self, items: Vec<EncodedExample>, device: &Device) -> Batch {
        self.pad(&items, device)
    }
}
