//! Pretrained backbones loaded from Hugging Face checkpoints and GGUF files.
//!
//! [`load`] is the one entry for model files; each family has one constructor,
//! `from_source(config, &impl TensorSource, &LoadOptions, device)`. Which family loads a
//! `model_type` is the registry's answer ([`FAMILIES`]): adding a family is one file
//! (config, model, `from_source`, its [`Family`]) and one registry line, plus a variant of
//! [`AnyBackbone`] when it brings a model of its own (GLM, [`glm`], is a family of the
//! Llama model: its file is its registry entry and its config defaults).

pub mod any;
pub mod bert;
pub mod config;
pub mod family;
pub mod glm;
pub mod layers;
pub mod llama;
pub mod llama_gguf;
pub mod loader;
pub mod pretrained;
pub mod source;

use burn::module::{Module, ModuleDisplay};
use burn::tensor::{Device, Int, Tensor, TensorData};

pub use any::AnyBackbone;
pub use bert::{BertConfig, BertModel};
pub use config::HiddenAct;
pub use family::{FAMILIES, Family, ModelType, supported_model_types};
pub use llama::{EosTokenId, LlamaConfig, LlamaModel};
pub use llama_gguf::GgufWeights;
pub use loader::{LoadOptions, Pretrained, load};
pub use pretrained::{ModelFormat, resolve_model};
pub use source::TensorSource;

use crate::error::{Error, Result};
use crate::lora::LoraTargets;

/// A padded batch of token ids for a backbone.
#[derive(Debug, Clone)]
pub struct EncoderInput {
    /// Token ids `[batch, seq]`.
    pub input_ids: Tensor<2, Int>,
    /// 1 for real tokens, 0 for padding, `[batch, seq]`.
    pub attention_mask: Tensor<2, Int>,
    /// Segment ids `[batch, seq]` (BERT pair inputs); zeros when `None`.
    pub token_type_ids: Option<Tensor<2, Int>>,
}

impl EncoderInput {
    /// Build from row-major host data of shape `[batch, seq]`.
    pub fn new(
        ids: &[u32],
        mask: &[u32],
        type_ids: Option<&[u32]>,
        batch: usize,
        seq: usize,
        device: &Device,
    ) -> Result<Self> {
        let n = batch * seq;
        for (what, len) in [("input_ids", ids.len()), ("attention_mask", mask.len())]
            .into_iter()
            .chain(type_ids.map(|t| ("token_type_ids", t.len())))
        {
            if len != n {
                return Err(Error::ShapeMismatch {
                    name: what.into(),
                    expected: vec![batch, seq],
                    actual: vec![len],
                });
            }
        }
        let to_tensor = |v: &[u32]| {
            let data: Vec<i64> = v.iter().map(|&x| x as i64).collect();
            Tensor::<2, Int>::from_data(TensorData::new(data, [batch, seq]), device)
        };
        Ok(EncoderInput {
            input_ids: to_tensor(ids),
            attention_mask: to_tensor(mask),
            token_type_ids: type_ids.map(to_tensor),
        })
    }
}

/// Refuse a truncation length longer than `backbone`'s position table (before any
/// tokenising or training, so a bad `--max-len` costs nothing).
pub fn check_max_len(backbone: &impl Backbone, max_len: usize) -> Result<()> {
    match backbone.max_positions() {
        Some(max) if max_len > max => Err(Error::InputOutOfRange(format!(
            "sequences of up to {max_len} tokens, but {} has {max} positions (lower --max-len)",
            backbone.model_type()
        ))),
        _ => Ok(()),
    }
}

/// What a classification head needs from a pretrained model: hidden states for a batch,
/// plus the facts about the model that pooling depends on.
pub trait Backbone: Module + ModuleDisplay + LoraTargets {
    /// Last hidden states `[batch, seq, hidden]`.
    fn forward(&self, input: &EncoderInput) -> Tensor<3>;
    /// Hidden size.
    fn hidden_size(&self) -> usize;
    /// Padding token id.
    fn pad_token_id(&self) -> u32;
    /// Hugging Face `model_type`.
    fn model_type(&self) -> &str;
    /// Whether the model is a decoder (causal attention): pooling on the last token,
    /// prompt templates, and a bias-free `score` head in transformers.
    fn is_decoder(&self) -> bool;
    /// The prefix of the backbone's weights inside transformers'
    /// `…ForSequenceClassification` (`bert.`, `roberta.`, `model.`), which PEFT
    /// `SEQ_CLS` adapters carry in their keys.
    fn task_prefix(&self) -> &'static str;
    /// transformers' sequence-classification class of the family
    /// (`BertForSequenceClassification`, `Qwen2ForSequenceClassification`, ...).
    fn task_class(&self) -> &'static str;
    /// The name transformers gives the classification head: `score` on decoders,
    /// `classifier` on encoders.
    fn head_name(&self) -> &'static str {
        if self.is_decoder() {
            "score"
        } else {
            "classifier"
        }
    }
    /// Vocabulary size: every token id must be below it.
    fn vocab_size(&self) -> usize;
    /// The longest sequence the position table covers; `None` where positions are
    /// computed (RoPE), which has no hard limit.
    fn max_positions(&self) -> Option<usize> {
        None
    }
    /// Whether [`pooler_output`](Backbone::pooler_output) is available.
    fn has_pooler(&self) -> bool {
        false
    }
    /// The checkpoint's own pooled output (BERT's `tanh(W·h[CLS] + b)`), if it has one.
    fn pooler_output(&self, _hidden: Tensor<3>) -> Option<Tensor<2>> {
        None
    }
}
