//! What every family's `config.json` may share: transformers' activation names.

use serde::Deserialize;

/// A `config.json`'s `hidden_act` (transformers' `ACT2FN` names this crate computes); any
/// other name is an error naming it when the config is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HiddenAct {
    /// Exact GELU (erf).
    Gelu,
    /// GELU's tanh approximation (`gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`).
    #[serde(alias = "gelu_pytorch_tanh", alias = "gelu_fast")]
    GeluNew,
    /// ReLU.
    Relu,
    /// SiLU (`swish`).
    #[serde(alias = "swish")]
    Silu,
}
