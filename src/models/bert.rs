//! BERT-family encoders (BERT, RoBERTa, DistilBERT) loaded from Hugging Face checkpoints,
//! computed as transformers does: post-LN, erf GELU, absolute positions (+ token types).

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Int, Tensor};

use serde::Deserialize;

use super::config::HiddenAct;
use super::family::{self, Family, ModelType};
use super::layers::{FrozenEmbedding, LayerNorm, merge_heads, padding_bias, split_heads};
use super::loader::LoadOptions;
use super::source::TensorSource;
use super::{AnyBackbone, Backbone, EncoderInput, check_max_len};
use crate::error::{Error, Result};
use crate::io::Checkpoint;
use crate::lora::{
    LinearReader, LinearVisitor, LoraLinear, LoraTargets, ModuleSelector, join_path,
};
use crate::nn::attention;

/// The BERT family's registry entry.
pub static FAMILY: Family = Family {
    name: "bert",
    decoder: false,
    model_types: &[
        ModelType {
            name: "bert",
            task_class: "BertForSequenceClassification",
            task_prefix: "bert.",
            default_targets: &["query", "value"],
        },
        ModelType {
            name: "roberta",
            task_class: "RobertaForSequenceClassification",
            task_prefix: "roberta.",
            default_targets: &["query", "value"],
        },
        ModelType {
            name: "distilbert",
            task_class: "DistilBertForSequenceClassification",
            task_prefix: "distilbert.",
            default_targets: &["q_lin", "v_lin"],
        },
    ],
    gguf_architectures: &[],
    config_defaults: family::no_defaults,
    load_folder: |dir, options, device| {
        let config: BertConfig = family::read_config(&dir.join("config.json"), false)?;
        let model = BertModel::from_source(&config, &Checkpoint::open(dir)?, options, device)?;
        Ok(AnyBackbone::Bert(model))
    },
    load_gguf: None,
};

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

impl BertConfig {
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

impl std::str::FromStr for BertConfig {
    type Err = Error;

    /// Parse and check a BERT-family `config.json` text.
    fn from_str(text: &str) -> Result<Self> {
        let config: BertConfig = family::parse_config(text, false)?;
        config.check()?;
        Ok(config)
    }
}

/// The Hugging Face module names of one model type's encoder layer.
#[derive(Debug, Clone, Copy)]
struct Names {
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

const DISTILBERT_NAMES: Names = Names {
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
    /// Build from a tensor source (an opened checkpoint, or any [`TensorSource`]); names
    /// may carry a `bert.`/`roberta.`/`distilbert.` prefix (as saved by the task heads) or
    /// none (as saved by the bare model).
    pub fn from_source(
        config: &BertConfig,
        ckpt: &impl TensorSource,
        options: &LoadOptions,
        device: &Device,
    ) -> Result<Self> {
        options.check(device)?;
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
        // Embedding tables, stored as the frozen linears are.
        let table = |name: &str, shape: [usize; 2]| {
            ckpt.tensor_as::<2>(&format!("{prefix}{name}"), shape, options.dtype, device)
                .map(FrozenEmbedding::new)
        };
        let linear = |name: &str, out_f: usize, in_f: usize| -> Result<LoraLinear> {
            let weight = ckpt.tensor_as::<2>(
                &format!("{prefix}{name}.weight"),
                [out_f, in_f],
                options.dtype,
                device,
            )?;
            LoraLinear::from_out_in_packed(
                weight,
                Some(t1(&format!("{name}.bias"), out_f)?),
                options.packing,
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
            Some(table(
                "embeddings.token_type_embeddings.weight",
                [config.type_vocab_size, h],
            )?)
        } else {
            None
        };
        let embeddings = BertEmbeddings {
            word: table("embeddings.word_embeddings.weight", [config.vocab_size, h])?,
            position: table(
                "embeddings.position_embeddings.weight",
                [config.max_position_embeddings, h],
            )?,
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
        let pooler = if ckpt.contains(&format!("{prefix}{POOLER}.weight")) {
            Some(BertPooler {
                dense: linear(POOLER, h, h)?,
            })
        } else {
            None
        };
        let model = BertModel {
            embeddings,
            layers,
            pooler,
            model_type: config.model_type.clone(),
            hidden: h,
        };
        check_max_len(&model, options.max_len)?;
        Ok(model)
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
        family::entry_or_first(&FAMILY, &self.model_type).task_prefix
    }

    fn task_class(&self) -> &'static str {
        family::entry_or_first(&FAMILY, &self.model_type).task_class
    }

    fn has_pooler(&self) -> bool {
        self.pooler.is_some()
    }

    fn pooler_output(&self, hidden: Tensor<3>) -> Option<Tensor<2>> {
        self.pool(hidden)
    }
}

/// One adaptable linear of an encoder layer: its name in the model type's [`Names`] and
/// its field. Both visitors read this one table (the loader reads the same [`Names`]).
struct LinearSlot {
    name: fn(&Names) -> &'static str,
    field: fn(&mut BertLayer) -> &mut LoraLinear,
    read: fn(&BertLayer) -> &LoraLinear,
}

/// Every linear of a layer, in transformers' module order.
const LINEARS: [LinearSlot; 6] = [
    LinearSlot {
        name: |n| n.query,
        field: |l| &mut l.attention.query,
        read: |l| &l.attention.query,
    },
    LinearSlot {
        name: |n| n.key,
        field: |l| &mut l.attention.key,
        read: |l| &l.attention.key,
    },
    LinearSlot {
        name: |n| n.value,
        field: |l| &mut l.attention.value,
        read: |l| &l.attention.value,
    },
    LinearSlot {
        name: |n| n.attn_out,
        field: |l| &mut l.attention_output,
        read: |l| &l.attention_output,
    },
    LinearSlot {
        name: |n| n.ffn_in,
        field: |l| &mut l.intermediate,
        read: |l| &l.intermediate,
    },
    LinearSlot {
        name: |n| n.ffn_out,
        field: |l| &mut l.output,
        read: |l| &l.output,
    },
];

/// The pooler's module name (every model type that has one).
const POOLER: &str = "pooler.dense";

impl LoraTargets for BertModel {
    fn visit_linears(&mut self, prefix: &str, visitor: &mut LinearVisitor<'_>) -> Result<()> {
        let names = self.names();
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let p = join_path(prefix, &format!("{}.{i}", names.layers));
            for slot in &LINEARS {
                visitor(&join_path(&p, (slot.name)(&names)), (slot.field)(layer))?;
            }
        }
        if let Some(pooler) = self.pooler.as_mut() {
            visitor(&join_path(prefix, POOLER), &mut pooler.dense)?;
        }
        Ok(())
    }

    fn read_linears(&self, prefix: &str, reader: &mut LinearReader<'_>) -> Result<()> {
        let names = self.names();
        for (i, layer) in self.layers.iter().enumerate() {
            let p = join_path(prefix, &format!("{}.{i}", names.layers));
            for slot in &LINEARS {
                reader(&join_path(&p, (slot.name)(&names)), (slot.read)(layer))?;
            }
        }
        if let Some(pooler) = self.pooler.as_ref() {
            reader(&join_path(prefix, POOLER), &pooler.dense)?;
        }
        Ok(())
    }

    fn default_targets(&self) -> ModuleSelector {
        ModuleSelector::names(family::entry_or_first(&FAMILY, &self.model_type).default_targets)
    }
}
