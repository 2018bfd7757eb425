//! Hugging Face `config.json` for the supported model families.

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, Result};

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

/// `model_type` values this crate can load.
pub const SUPPORTED_MODEL_TYPES: [&str; 3] = ["bert", "roberta", "distilbert"];

/// The fields of a BERT-family `config.json` that the encoder needs. Unknown fields are
/// ignored; DistilBERT's own names (`dim`, `n_layers`, ...) are accepted as aliases.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BertConfig {
    /// `bert`, `roberta` or `distilbert`.
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    #[serde(alias = "dim")]
    pub hidden_size: usize,
    /// Number of encoder layers.
    #[serde(alias = "n_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    #[serde(alias = "n_heads")]
    pub num_attention_heads: usize,
    /// Feed-forward inner size.
    #[serde(alias = "hidden_dim")]
    pub intermediate_size: usize,
    /// Activation of the feed-forward block (`gelu` = erf GELU).
    #[serde(default = "default_act", alias = "activation")]
    pub hidden_act: HiddenAct,
    /// Learned absolute positions.
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    /// Token-type (segment) vocabulary; 0 for DistilBERT.
    #[serde(default)]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon (DistilBERT fixes 1e-12).
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Padding token id.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// Dropout on hidden states.
    #[serde(default = "default_dropout", alias = "dropout")]
    pub hidden_dropout_prob: f64,
    /// Dropout on attention probabilities.
    #[serde(default = "default_dropout", alias = "attention_dropout")]
    pub attention_probs_dropout_prob: f64,
    /// Only `absolute` is supported.
    #[serde(default = "default_pos_type")]
    pub position_embedding_type: String,
}

fn default_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_max_pos() -> usize {
    512
}
fn default_eps() -> f64 {
    1e-12
}
fn default_dropout() -> f64 {
    0.1
}
fn default_pos_type() -> String {
    "absolute".into()
}

/// Just enough of any `config.json` to dispatch on `model_type`.
#[derive(Debug, Deserialize)]
struct ModelTypeOnly {
    model_type: Option<String>,
}

impl BertConfig {
    /// Parse and check a BERT-family `config.json`.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| match e {
            Error::Json(j) => Error::Format {
                path: path.to_path_buf(),
                message: j.to_string(),
            },
            other => other,
        })
    }

    /// Parse and check a BERT-family config from JSON text.
    pub fn from_json(text: &str) -> Result<Self> {
        let probe: ModelTypeOnly = serde_json::from_str(text)?;
        let model_type = probe.model_type.unwrap_or_default();
        if !SUPPORTED_MODEL_TYPES.contains(&model_type.as_str()) {
            return Err(Error::Unsupported {
                what: "model_type",
                detail: format!(
                    "`{model_type}` (supported: {})",
                    SUPPORTED_MODEL_TYPES.join(", ")
                ),
            });
        }
        let config: BertConfig = serde_json::from_str(text)?;
        config.check()?;
        Ok(config)
    }

    fn check(&self) -> Result<()> {
        let bad = |detail: String| Error::Unsupported {
            what: "model config",
            detail,
        };
        if self.hidden_size == 0 || self.num_attention_heads == 0 {
            return Err(bad("hidden_size and num_attention_heads must be > 0".into()));
        }
        use crate::limits::{check_size, sizes as limits};
        check_size("num_hidden_layers", self.num_hidden_layers, limits::LAYERS)?;
        check_size("vocab_size", self.vocab_size, limits::VOCAB)?;
        check_size("hidden_size", self.hidden_size, limits::WIDTH)?;
        check_size("intermediate_size", self.intermediate_size, limits::WIDTH)?;
        check_size(
            "num_attention_heads",
            self.num_attention_heads,
            limits::HEADS,
        )?;
        check_size(
            "max_position_embeddings",
            self.max_position_embeddings,
            limits::POSITIONS,
        )?;
        check_size("type_vocab_size", self.type_vocab_size, limits::VOCAB)?;
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            )));
        }
        if self.hidden_act == HiddenAct::Silu {
            return Err(bad("hidden_act `silu` in a BERT-family encoder".into()));
        }
        // burn-nn's Dropout asserts its probability; a config's is checked here instead.
        for (name, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(bad(format!("{name} {p} is not in [0, 1)")));
            }
        }
        if self.position_embedding_type != "absolute" {
            return Err(bad(format!(
                "position_embedding_type `{}` (only absolute)",
                self.position_embedding_type
            )));
        }
        Ok(())
    }

    /// Per-head size.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// RoBERTa numbers positions from `pad_token_id + 1`, BERT from 0.
    pub fn position_offset(&self) -> usize {
        if self.model_type == "roberta" {
            self.pad_token_id.unwrap_or(1) as usize + 1
        } else {
            0
        }
    }
}
