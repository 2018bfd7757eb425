//! BERT-family encoders (BERT, RoBERTa, DistilBERT) loaded from Hugging Face checkpoints,
//! computed as transformers does: post-LN, erf GELU, absolute positions (+ token types).

use std::path::Path;

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Int, Tensor};

use super::config::{BertConfig, HiddenAct};
use super::layers::{FrozenEmbedding, LayerNorm, merge_heads, padding_bias, split_heads};
use super::source::TensorSource;
use super::{Backbone, EncoderInput};
use crate::error::{Error, Result};
use crate::io::Checkpoint;
use crate::lora::{
    InjectionReport, LinearReader, LinearVisitor, LoraConfig, LoraLinear, LoraTargets,
    ModuleSelector, Quantization, join_path, with_adapters,
};
use crate::nn::attention;

/// The Hugging Face module names of one family's encoder layer, and the prefix its
/// `…ForSequenceClassification` puts before them.
#[derive(Debug, Clone, Copy)]
struct Names {
    task_prefix: &'static str,
    task_class: &'static str,
    layers: &'static str,
    query: &'static str,
    key: &'static str,
    value: &'static str,
    attn_out: &'static str,
    attn_norm: &'static str,
    ffn_in: &'static str,
    ffn_out: &'static str,
    out_norm: &'static str,
}

const BERT_NAMES: Names = Names {
    task_prefix: "bert.",
    task_class: "BertForSequenceClassification",
    layers: "encoder.layer",
    query: "attention.self.query",
    key: "attention.self.key",
    value: "attention.self.value",
    attn_out: "attention.output.dense",
    attn_norm: "attention.output.LayerNorm",
    ffn_in: "intermediate.dense",
    ffn_out: "output.dense",
    out_norm: "output.LayerNorm",
};

const ROBERTA_NAMES: Names = Names {
    task_prefix: "roberta.",
    task_class: "RobertaForSequenceClassification",
    ..BERT_NAMES
};

const DISTILBERT_NAMES: Names = Names {
    task_prefix: "distilbert.",
    task_class: "DistilBertForSequenceClassification",
    layers: "transformer.layer",
    query: "attention.q_lin",
    key: "attention.k_lin",
    value: "attention.v_lin",
    attn_out: "attention.out_lin",
    attn_norm: "sa_layer_norm",
    ffn_in: "ffn.lin1",
    ffn_out: "ffn.lin2",
    out_norm: "output_layer_norm",
};

fn names_for(model_type: &str) -> Names {
    match model_type {
        "distilbert" => DISTILBERT_NAMES,
        "roberta" => ROBERTA_NAMES,
        _ => BERT_NAMES,
    }
}

/// Word + position (+ token type) embeddings, LayerNorm, dropout.
#[derive(Module, Debug)]
pub struct BertEmbeddings {
    /// `word_embeddings`.
    pub word: FrozenEmbedding,
    /// `position_embeddings`.
    pub position: FrozenEmbedding,
    /// `token_type_embeddings` (absent in DistilBERT).
    pub token_type: Option<FrozenEmbedding>,
    /// `LayerNorm`.
    pub norm: LayerNorm,
    /// Hidden dropout.
    pub dropout: Dropout,
    /// RoBERTa numbers positions from `pad + 1` and skips padding.
    pub roberta_positions: bool,
    /// Padding id (RoBERTa position numbering).
    pub pad_token_id: usize,
}

impl BertEmbeddings {
    fn forward(&self, ids: Tensor<2, Int>, token_types: Option<Tensor<2, Int>>) -> Tensor<3> {
        let [b, s] = ids.dims();
        let device = ids.device();
        let positions = if self.roberta_positions {
            // transformers' create_position_ids_from_input_ids.
            let mask = ids.clone().not_equal_elem(self.pad_token_id as i64).int();
            (mask.clone().cumsum(1) * mask).add_scalar(self.pad_token_id as i64)
        } else {
            Tensor::<1, Int>::arange(0..s as i64, &device)
                .reshape([1, s])
                .repeat_dim(0, b)
        };
        let mut h = self.word.forward(ids) + self.position.forward(positions);
        if let Some(tt) = &self.token_type {
            let types = token_types.unwrap_or_else(|| Tensor::<2, Int>::zeros([b, s], &device));
            h = h + tt.forward(types);
        }
        crate::nn::dropout(&self.dropout, self.norm.forward(h))
    }
}

/// Multi-head self-attention with adaptable `query`, `key`, `value`.
#[derive(Module, Debug)]
pub struct BertSelfAttention {
    /// Query projection.
    pub query: LoraLinear,
    /// Key projection.
    pub key: LoraLinear,
    /// Value projection.
    pub value: LoraLinear,
    /// Dropout on the attention probabilities (training only).
    pub probs_dropout: Dropout,
    /// Heads.
    pub heads: usize,
    /// Per-head size.
    pub head_dim: usize,
}

/// One post-LN encoder layer.
#[derive(Module, Debug)]
pub struct BertLayer {
    /// Self-attention.
    pub attention: BertSelfAttention,
    /// `attention.output.dense`.
    pub attention_output: LoraLinear,
    /// `attention.output.LayerNorm`.
    pub attention_norm: LayerNorm,
    /// `intermediate.dense`.
    pub intermediate: LoraLinear,
    /// `output.dense`.
    pub output: LoraLinear,
    /// `output.LayerNorm`.
    pub output_norm: LayerNorm,
    /// Hidden dropout.
    pub dropout: Dropout,
    /// `true` for ReLU (some DistilBERT configs), else erf GELU.
    pub relu: bool,
    /// `true` for `gelu_new` (tanh approximation).
    pub gelu_tanh: bool,
}

impl BertLayer {
    fn forward(&self, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let a = &self.attention;
        let q = split_heads(a.query.forward(x.clone()), a.heads, a.head_dim);
        let k = split_heads(a.key.forward(x.clone()), a.heads, a.head_dim);
        let v = split_heads(a.value.forward(x.clone()), a.heads, a.head_dim);
        let ctx = merge_heads(attention(q, k, v, bias, Some(&a.probs_dropout)));
        let h = crate::nn::dropout(&self.dropout, self.attention_output.forward(ctx));
        let h = self.attention_norm.forward(h + x);
        let inner = self.intermediate.forward(h.clone());
        let inner = if self.relu {
            burn::tensor::activation::relu(inner)
        } else if self.gelu_tanh {
            burn::tensor::activation::gelu_approximate(inner)
        } else {
            crate::nn::gelu(inner)
        };
        let out = crate::nn::dropout(&self.dropout, self.output.forward(inner));
        self.output_norm.forward(out + h)
    }
}

/// `pooler`: `tanh(W · h[CLS] + b)`.
#[derive(Module, Debug)]
pub struct BertPooler {
    /// `pooler.dense`.
    pub dense: LoraLinear,
}

/// A BERT-family encoder.
#[derive(Module, Debug)]
pub struct BertModel {
    /// Embeddings.
    pub embeddings: BertEmbeddings,
    /// Encoder layers.
    pub layers: Vec<BertLayer>,
    /// The pooler, when the checkpoint has one (not DistilBERT).
    pub pooler: Option<BertPooler>,
    /// `bert`, `roberta` or `distilbert`.
    pub model_type: String,
    /// Hidden size.
    pub hidden: usize,
}

impl BertModel {
    /// Load a checkpoint folder (`config.json` + safetensors), without adapters.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        Self::load_packed(dir, None, device)
    }

    /// [`load`](Self::load) with every linear's weight packed as it is read (`None`: float).
    pub fn load_packed(
        dir: impl AsRef<Path>,
        packing: Option<Quantization>,
        device: &Device,
    ) -> Result<Self> {
        let dir = dir.as_ref();
        let config = BertConfig::from_file(dir.join("config.json"))?;
        let checkpoint = Checkpoint::open(dir)?;
        Self::from_checkpoint(&config, &checkpoint, packing, device)
    }

    /// Load a checkpoint and put adapters on the linears `lora` targets
    /// (PEFT default for BERT-family: `query`, `value`).
    pub fn from_pretrained(
        dir: impl AsRef<Path>,
        lora: &LoraConfig,
        device: &Device,
    ) -> Result<(Self, InjectionReport)> {
        with_adapters(Self::load(dir, device)?, lora, device)
    }

    /// Build from a tensor source (an opened checkpoint, or any [`TensorSource`]); names
    /// may carry a `bert.`/`roberta.`/`distilbert.` prefix (as saved by the task heads) or
    /// none (as saved by the bare model).
    /// `packing` packs every linear's weight as it is read (`None`: float).
    pub fn from_checkpoint(
        config: &BertConfig,
        ckpt: &impl TensorSource,
        packing: Option<Quantization>,
        device: &Device,
    ) -> Result<Self> {
        let names = names_for(&config.model_type);
        let prefix = ["", "bert.", "roberta.", "distilbert."]
            .into_iter()
            .find(|p| ckpt.contains(&format!("{p}embeddings.word_embeddings.weight")))
            .ok_or_else(|| Error::MissingTensor {
                name: "embeddings.word_embeddings.weight".into(),
                path: ckpt.origin().to_path_buf(),
            })?;
        let h = config.hidden_size;
        let t1 = |name: &str, n: usize| ckpt.tensor::<1>(&format!("{prefix}{name}"), [n], device);
        let t2 = |name: &str, shape: [usize; 2]| {
            ckpt.tensor::<2>(&format!("{prefix}{name}"), shape, device)
        };
        let linear = |name: &str, out_f: usize, in_f: usize| -> Result<LoraLinear> {
            LoraLinear::from_out_in_packed(
                t2(&format!("{name}.weight"), [out_f, in_f])?,
                Some(t1(&format!("{name}.bias"), out_f)?),
                packing,
            )
        };
        let norm = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm::new(
                t1(&format!("{name}.weight"), h)?,
                t1(&format!("{name}.bias"), h)?,
                config.layer_norm_eps,
            ))
        };
        let token_type = if config.type_vocab_size > 0 {
            Some(FrozenEmbedding::new(t2(
                "embeddings.token_type_embeddings.weight",
                [config.type_vocab_size, h],
            )?))
        } else {
            None
        };
        let embeddings = BertEmbeddings {
            word: FrozenEmbedding::new(t2(
                "embeddings.word_embeddings.weight",
                [config.vocab_size, h],
            )?),
            position: FrozenEmbedding::new(t2(
                "embeddings.position_embeddings.weight",
                [config.max_position_embeddings, h],
            )?),
            token_type,
            norm: norm("embeddings.LayerNorm")?,
            dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
            roberta_positions: config.model_type == "roberta",
            pad_token_id: config.pad_token_id.unwrap_or(0) as usize,
        };
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("{}.{i}", names.layers);
            let n = |leaf: &str| format!("{p}.{leaf}");
            layers.push(BertLayer {
                attention: BertSelfAttention {
                    query: linear(&n(names.query), h, h)?,
                    key: linear(&n(names.key), h, h)?,
                    value: linear(&n(names.value), h, h)?,
                    probs_dropout: DropoutConfig::new(config.attention_probs_dropout_prob).init(),
                    heads: config.num_attention_heads,
                    head_dim: config.head_dim(),
                },
                attention_output: linear(&n(names.attn_out), h, h)?,
                attention_norm: norm(&n(names.attn_norm))?,
                intermediate: linear(&n(names.ffn_in), config.intermediate_size, h)?,
                output: linear(&n(names.ffn_out), h, config.intermediate_size)?,
                output_norm: norm(&n(names.out_norm))?,
                dropout: DropoutConfig::new(config.hidden_dropout_prob).init(),
                relu: config.hidden_act == HiddenAct::Relu,
                gelu_tanh: config.hidden_act == HiddenAct::GeluNew,
            });
        }
        let pooler = if ckpt.contains(&format!("{prefix}pooler.dense.weight")) {
            Some(BertPooler {
                dense: linear("pooler.dense", h, h)?,
            })
        } else {
            None
        };
        Ok(BertModel {
            embeddings,
            layers,
            pooler,
            model_type: config.model_type.clone(),
            hidden: h,
        })
    }

    /// The pooler output `tanh(W·h[CLS] + b)` from last hidden states, if this model has a pooler.
    pub fn pool(&self, hidden: Tensor<3>) -> Option<Tensor<2>> {
        let pooler = self.pooler.as_ref()?;
        let [b, _, h] = hidden.dims();
        let cls = hidden.slice([0..b, 0..1]).reshape([b, h]);
        Some(pooler.dense.forward(cls).tanh())
    }

    fn names(&self) -> Names {
        names_for(&self.model_type)
    }
}

impl Backbone for BertModel {
    fn forward(&self, input: &EncoderInput) -> Tensor<3> {
        let bias = padding_bias(input.attention_mask.clone());
        let mut h = self
            .embeddings
            .forward(input.input_ids.clone(), input.token_type_ids.clone());
        for layer in &self.layers {
            h = layer.forward(h, bias.clone());
        }
        h
    }

    fn hidden_size(&self) -> usize {
        self.hidden
    }

    fn pad_token_id(&self) -> u32 {
        self.embeddings.pad_token_id as u32
    }

    fn vocab_size(&self) -> usize {
        self.embeddings.word.weight.val().dims()[0]
    }

    /// RoBERTa spends the first `pad + 1` rows of its table on its position offset.
    fn max_positions(&self) -> Option<usize> {
        let rows = self.embeddings.position.weight.val().dims()[0];
        let offset = match self.embeddings.roberta_positions {
            true => self.embeddings.pad_token_id + 1,
            false => 0,
        };
        Some(rows.saturating_sub(offset))
    }

    fn model_type(&self) -> &str {
        &self.model_type
    }

    fn is_decoder(&self) -> bool {
        false
    }

    fn task_prefix(&self) -> &'static str {
        names_for(&self.model_type).task_prefix
    }

    fn task_class(&self) -> &'static str {
        names_for(&self.model_type).task_class
    }

    fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    fn pooler_output(&self, hidden: Tensor<3>) -> Option<Tensor<2>> {
        self.pool(hidden)
    }
}

impl LoraTargets for BertModel {
    fn visit_linears(&mut self, prefix: &str, visitor: &mut LinearVisitor<'_>) -> Result<()> {
        let names = self.names();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let p = join_path(prefix, &format!("{}.{i}", names.layers));
            visitor(&join_path(&p, names.query), &mut layer.attention.query)?;
            visitor(&join_path(&p, names.key), &mut layer.attention.key)?;
            visitor(&join_path(&p, names.value), &mut layer.attention.value)?;
            visitor(&join_path(&p, names.attn_out), &mut layer.attention_output)?;
            visitor(&join_path(&p, names.ffn_in), &mut layer.intermediate)?;
            visitor(&join_path(&p, names.ffn_out), &mut layer.output)?;
        }
        if let Some(pooler) = self.pooler.as_mut() {
            visitor(&join_path(prefix, "pooler.dense"), &mut pooler.dense)?;
        }
        Ok(())
    }

    fn read_linears(&self, prefix: &str, reader: &mut LinearReader<'_>) -> Result<()> {
        let names = self.names();
        for (i, layer) in self.layers.iter().enumerate() {
            let p = join_path(prefix, &format!("{}.{i}", names.layers));
            reader(&join_path(&p, names.query), &layer.attention.query)?;
            reader(&join_path(&p, names.key), &layer.attention.key)?;
            reader(&join_path(&p, names.value), &layer.attention.value)?;
            reader(&join_path(&p, names.attn_out), &layer.attention_output)?;
            reader(&join_path(&p, names.ffn_in), &layer.intermediate)?;
            reader(&join_path(&p, names.ffn_out), &layer.output)?;
        }
        if let Some(pooler) = self.pooler.as_ref() {
            reader(&join_path(prefix, "pooler.dense"), &pooler.dense)?;
        }
        Ok(())
    }

    fn default_targets(&self) -> ModuleSelector {
        // PEFT's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.
        if self.model_type == "distilbert" {
            ModuleSelector::names(&["q_lin", "v_lin"])
        } else {
            ModuleSelector::names(&["query", "value"])
        }
    }
}
