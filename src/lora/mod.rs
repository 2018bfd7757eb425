//! The LoRA core: configuration, the adapted linear layer, initialisation and
//! name-based injection into a model.

pub mod base;
pub mod config;
mod decompose;
pub mod init;
pub mod linear;
pub mod packed;
pub mod wrap;

pub use base::{
    BaseDtype, CastReport, DenseBase, FrozenBase, FrozenWeight, cast_frozen, half_base_dtype,
    half_base_report,
};
pub use config::{
    InitLoraWeights, LayerIndices, LayersPattern, LoraBias, LoraConfig, ModuleLoraParams,
    ModuleSelector, scaling,
};
pub use linear::{LoraLinear, LoraWeights};

/// The old name of [`LoraWeights`] (it clashed with burn's own `burn::module::LoraAdapter`).
#[deprecated(since = "0.1.0", note = "renamed `LoraWeights`")]
pub type LoraAdapter = LoraWeights;
pub use packed::{
    GgufBlocks, PackedBase, PackedWeight, Quantization, QuantizeReport, base_quantization,
    packing_report, quantize_frozen,
};
pub use wrap::{
    InjectionReport, LinearReader, LinearVisitor, LoraTargets, for_each_adapted, inject_adapters,
    join_path, with_adapters,
};
