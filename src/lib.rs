//! # burn-lora
//!
//! LoRA fine-tuning of pretrained transformers for multi-label text classification,
//! on any backend [burn](https://burn.dev) supports (CPU `flex`, Vulkan/Metal/WebGPU
//! through `wgpu`, CUDA).
//!
//! The LoRA math matches Hugging Face PEFT exactly:
//! `y = x Wᵀ + b + s · (dropout(x) Aᵀ) Bᵀ` with `s = α/r` (or `α/√r` for rsLoRA),
//! A `[r, in]` kaiming-uniform, B `[out, r]` zero, merge `W += s·BA`.
//!
//! ```
//! use burn::tensor::{Distribution, Tensor};
//! use burn_lora::prelude::*;
//!
//! # fn main() -> burn_lora::Result<()> {
//! let device = parse_device("flex")?;
//! // A frozen 16 -> 8 linear (PyTorch orientation [out, in]) with a rank-4 adapter.
//! let weight = Tensor::<2>::random([8, 16], Distribution::Default, &device);
//! let mut layer = LoraLinear::from_out_in(weight, None)?;
//! let config = LoraConfig::new(4, 8.0, &["query"]);
//! layer.attach_adapter(config.params_for("query")?, 0.0, &config.init_lora_weights, &device)?;
//! let x = Tensor::<3>::random([2, 5, 16], Distribution::Default, &device);
//! let y = layer.forward(x);
//! assert_eq!(y.dims(), [2, 5, 8]);
//! assert_eq!(layer.trainable_params(), 4 * (16 + 8));
//! # Ok(())
//! # }
//! ```
//!
//! ## Layers
//!
//! Each module imports only from those before it in this order (checked by
//! `tests/layers.rs`), so a change in a higher layer never reaches a lower one:
//!
//! 1. [`error`], [`device`], [`defaults`], the size limits and `nn` (the layer functions
//!    models call, burn-flex's fast paths inside: an implementation detail, hidden from the
//!    docs);
//! 2. [`io`]: file formats (safetensors, GGUF, checkpoint folders, atomic writes, the hub);
//! 3. [`lora`]: `LoraLinear`, its config and the injection into any [`lora::LoraTargets`];
//! 4. [`tokenize`]: tokenizers, prompt templates and the pad-or-eos rule (the GGUF
//!    tokenizer needs it, so it sits below the models that also use it);
//! 5. [`models`]: the backbones, each family's facts, where their tensors come from
//!    ([`models::TensorSource`]: a checkpoint folder, a GGUF file) and [`models::load`];
//! 6. [`data`]: examples, label sets, encoded sets and batches;
//! 7. [`classify`]: the multi-label head, losses, metrics and thresholds;
//! 8. [`adapter`]: a classifier's adapters as PEFT folders, then [`export`]: a merged
//!    Hugging Face checkpoint;
//! 9. [`train`]: the loop trait, its driver, the ready `Trainer` (and burn-train's `Learner`);
//! 10. the jobs: [`Finetune`] (the whole fine-tuning run in one call) and [`Classifier`]
//!     (saved adapters serving texts).
#![deny(missing_docs)]

pub mod adapter;
pub mod classifier;
pub mod classify;
pub mod data;
pub mod defaults;
pub mod device;
pub mod error;
pub mod export;
pub mod finetune;
pub mod io;
mod limits;
pub mod lora;
pub mod models;
#[doc(hidden)]
pub mod nn;
pub mod tokenize;
pub mod train;

/// The burn this crate is built on: use it (`burn_lora::burn`) rather than a burn of your
/// own, so tensors and devices are the same types.
pub use burn;
pub use classifier::{Classifier, Prediction};
pub use error::{Error, Result};
pub use finetune::{Finetune, FinetuneReport};

/// The names most programs need.
pub mod prelude {
    pub use crate::adapter::{
        AdapterContents, AdapterInfo, AdapterMeta, LoadedAdapter, load_adapter_weights,
        read_adapter, save_adapter,
    };
    pub use crate::classify::{
        LossKind, MultiLabelClassifier, MultiLabelLoss, Pooling, Thresholds, predict_probs,
    };
    pub use crate::data::{DataSplits, EncodedSet, Example, LabelSet, UnknownLabelPolicy};
    pub use crate::device::parse_device;
    pub use crate::error::{Error, Result};
    pub use crate::lora::{
        DenseBase, FrozenBase, InitLoraWeights, LoraConfig, LoraLinear, LoraTargets,
        ModuleSelector, inject_adapters,
    };
    pub use crate::models::{AnyBackbone, Backbone, BertModel, LlamaModel, Pretrained};
    pub use crate::tokenize::{PromptTemplate, TextTokenizer};
    pub use crate::train::{TrainConfig, Trainer, TrainingLoop, run_loop};
    pub use crate::{Classifier, Finetune, Prediction};
}

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
