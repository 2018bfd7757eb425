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
#![deny(missing_docs)]

pub mod classify;
pub mod data;
pub mod device;
pub mod error;
pub mod io;
pub mod lora;
pub mod models;
pub mod ops;
pub mod tokenize;
pub mod train;

pub use error::{Error, Result};

/// The names most programs need.
pub mod prelude {
    pub use crate::classify::{
        LossKind, MultiLabelClassifier, MultiLabelLoss, Pooling, Thresholds, predict_probs,
    };
    pub use crate::data::{EncodedSet, LabelSet};
    pub use crate::device::parse_device;
    pub use crate::error::{Error, Result};
    pub use crate::io::peft::{AdapterContents, AdapterMeta, read_adapter, save_adapter};
    pub use crate::lora::{
        DenseBase, FrozenBase, InitLoraWeights, LoraConfig, LoraLinear, LoraTargets,
        ModuleSelector, inject_adapters,
    };
    pub use crate::models::{Backbone, BertModel, LlamaModel};
    pub use crate::train::{TrainConfig, Trainer, TrainingLoop, run_loop};
}

/// The README's code blocks, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
