//! The LoRA core: configuration, the adapted linear layer, initialisation and
//! name-based injection into a model.

pub mod base;
pub mod config;
pub mod init;
pub mod linear;
pub mod wrap;

pub use base::{DenseBase, FrozenBase};
pub use config::{
    InitLoraWeights, LayerIndices, LayersPattern, LoraConfig, ModuleLoraParams, ModuleSelector,
    scaling,
};
pub use linear::{LoraAdapter, LoraLinear};
pub use wrap::{
    InjectionReport, LinearVisitor, LoraTargets, for_each_adapted, inject_adapters, join_path,
    with_adapters,
};
