//! Llama-family decoders (Llama, Mistral, Qwen2, Qwen3, SmolLM, GLM, GLM-4) from Hugging
//! Face safetensors checkpoints, computed as transformers does: RMSNorm, rotate_half RoPE
//! (default / linear / llama3 scaling), grouped-query attention with an explicit
//! `head_dim`, causal + padding mask, SwiGLU; Qwen2's q/k/v bias; Qwen3's per-head q/k norm;
//! GLM's partial RoPE on interleaved pairs, fused `gate_up_proj` and q/k/v bias without an
//! o_proj bias; GLM-4's extra norms on the attention and MLP outputs.

use std::path::Path;

use burn::module::{Module, Param};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::Deserialize;

use super::config::HiddenAct;
use super::family::{self, Family, ModelType};
use super::layers::{FrozenEmbedding, MASK_VALUE, frozen, merge_heads, split_heads};
use super::llama_gguf::GgufWeights;
use super::loader::LoadOptions;
use super::source::TensorSource;
use super::{AnyBackbone, Backbone, EncoderInput, check_max_len};
use crate::error::{Error, Result};
use crate::io::Checkpoint;
use crate::lora::{
    FrozenWeight, LinearReader, LinearVisitor, LoraLinear, LoraTargets, ModuleSelector, PackedBase,
    Quantization, join_path,
};
use crate::nn::attention;

/// PEFT's default targets for Llama, Mistral and Qwen.
pub(crate) const DEFAULT_TARGETS: &[&str] = &["q_proj", "v_proj"];

/// A decoder model type of the Llama layout (its `…ForSequenceClassification` keeps the
/// backbone under `model.`).
pub(crate) const fn decoder_type(name: &'static str, task_class: &'static str) -> ModelType {
    ModelType {
        name,
        task_class,
        task_prefix: "model.",
        default_targets: DEFAULT_TARGETS,
    }
}

/// Build a [`LlamaModel`] from a folder whose `config.json` names a decoder model type.
pub(crate) fn load_folder(
    dir: &Path,
    options: &LoadOptions,
    device: &Device,
) -> Result<AnyBackbone> {
    let config: LlamaConfig = family::read_config(&dir.join("config.json"), true)?;
    let model = LlamaModel::from_source(&config, &Checkpoint::open(dir)?, options, device)?;
    Ok(AnyBackbone::Llama(model))
}

/// The Llama family's registry entry (Llama, Mistral, Qwen2, Qwen3, SmolLM).
pub static FAMILY: Family = Family {
    name: "llama",
    decoder: true,
    model_types: &[
        decoder_type("llama", "LlamaForSequenceClassification"),
        decoder_type("mistral", "MistralForSequenceClassification"),
        decoder_type("qwen2", "Qwen2ForSequenceClassification"),
        decoder_type("qwen3", "Qwen3ForSequenceClassification"),
    ],
    // llama.cpp's `glm4` is not one yet: its fused `ffn_up`, extra norms, NORM-type RoPE
    // and ChatGLM pre-tokenizer are unmapped.
    gguf_architectures: &["llama", "mistral", "qwen2", "qwen3"],
    config_defaults: family::no_defaults,
    load_folder,
    load_gguf: Some(|file, options, device| {
        let config = LlamaConfig::try_from(file)?;
        let weights = GgufWeights::new(file, &config);
        let model = LlamaModel::from_source(&config, &weights, options, device)?;
        Ok(AnyBackbone::Llama(model))
    }),
};

/// RoPE parameters, in either the transformers 4 (`rope_theta` + `rope_scaling`) or the
/// transformers 5 (`rope_parameters`) spelling.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct RopeParameters {
    /// `default`, `linear` or `llama3`.
    #[serde(default, alias = "type")]
    pub rope_type: Option<String>,
    /// Base θ.
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// Scaling factor (linear, llama3).
    #[serde(default)]
    pub factor: Option<f64>,
    /// llama3: low-frequency factor.
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    /// llama3: high-frequency factor.
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    /// llama3: original context length.
    #[serde(default)]
    pub original_max_position_embeddings: Option<f64>,
    /// Share of each head's channels that RoPE rotates (GLM; transformers 5 spelling).
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
}

/// A config's `eos_token_id`: one id or several (transformers accepts both).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum EosTokenId {
    /// One id.
    One(u32),
    /// Several; the first pads when there is no pad id.
    Many(Vec<u32>),
}

impl EosTokenId {
    /// The id that pads a batch when the config has no `pad_token_id`.
    pub fn first(&self) -> Option<u32> {
        match self {
            EosTokenId::One(id) => Some(*id),
            EosTokenId::Many(ids) => ids.first().copied(),
        }
    }
}

/// The fields of a Llama-family `config.json` the decoder needs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct LlamaConfig {
    /// `llama`, `mistral`, `qwen2` or `qwen3`.
    pub model_type: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Hidden size.
    pub hidden_size: usize,
    /// MLP inner size.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_hidden_layers: usize,
    /// Query heads.
    pub num_attention_heads: usize,
    /// Key/value heads (GQA); defaults to the query heads.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    /// Per-head size; defaults to `hidden_size / num_attention_heads`.
    #[serde(default)]
    pub head_dim: Option<usize>,
    /// RMSNorm epsilon.
    #[serde(default = "default_rms_eps")]
    pub rms_norm_eps: f64,
    /// RoPE base (transformers 4).
    #[serde(default)]
    pub rope_theta: Option<f64>,
    /// RoPE scaling (transformers 4).
    #[serde(default)]
    pub rope_scaling: Option<RopeParameters>,
    /// RoPE parameters (transformers 5).
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    /// q/k/v (and o) bias for `llama`/`mistral` configs that ask for it.
    #[serde(default)]
    pub attention_bias: bool,
    /// Output embedding tied to the input embedding.
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Padding id, if the model has one.
    #[serde(default)]
    pub pad_token_id: Option<u32>,
    /// End-of-sequence id(s).
    #[serde(default)]
    pub eos_token_id: Option<EosTokenId>,
    /// The MLP's activation: this decoder computes SwiGLU, so `silu` (the default) only;
    /// another is refused rather than silently replaced.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: HiddenAct,
    /// Share of each head's channels that RoPE rotates (GLM; transformers 4 spelling).
    #[serde(default)]
    pub partial_rotary_factor: Option<f64>,
}

fn default_hidden_act() -> HiddenAct {
    HiddenAct::Silu
}

fn default_rms_eps() -> f64 {
    1e-6
}

impl LlamaConfig {
    /// GLM or GLM-4: partial interleaved RoPE, fused `gate_up_proj`, no o_proj bias.
    pub fn is_glm(&self) -> bool {
        matches!(self.model_type.as_str(), "glm" | "glm4")
    }

    /// Reject a family or head layout this module does not implement, and sizes no real
    /// checkpoint has (before they size an allocation).
    pub fn checked(self) -> Result<Self> {
        use crate::limits::{check_size, sizes as limits};
        check_size("num_hidden_layers", self.num_hidden_layers, limits::LAYERS)?;
        check_size("vocab_size", self.vocab_size, limits::VOCAB)?;
        check_size("hidden_size", self.hidden_size, limits::WIDTH)?;
        check_size("intermediate_size", self.intermediate_size, limits::WIDTH)?;
        check_size("head_dim", self.head_dim(), limits::WIDTH)?;
        check_size(
            "num_attention_heads",
            self.num_attention_heads,
            limits::HEADS,
        )?;
        check_size("num_key_value_heads", self.kv_heads(), limits::HEADS)?;
        // A zero size builds layers of no width: a division by zero or an empty tensor
        // further on, never a model.
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("head_dim", self.head_dim()),
            ("num_key_value_heads", self.num_key_value_heads.unwrap_or(1)),
        ] {
            if value == 0 {
                return Err(Error::Unsupported {
                    what: "model config",
                    detail: format!("{name} = 0: every size must be at least 1"),
                });
            }
        }
        if self.hidden_act != HiddenAct::Silu {
            return Err(Error::Unsupported {
                what: "model config",
                detail: format!(
                    "hidden_act `{}` (this decoder's MLP is SwiGLU: silu)",
                    serde_json::to_value(self.hidden_act)
                        .ok()
                        .and_then(|v| v.as_str().map(String::from))
                        .unwrap_or_default()
                ),
            });
        }
        if !family::model_type(&self.model_type)?.0.decoder {
            return Err(Error::Unsupported {
                what: "model_type",
                detail: format!("`{}` is an encoder, not a decoder", self.model_type),
            });
        }
        if self.num_attention_heads == 0
            || !self.num_attention_heads.is_multiple_of(self.kv_heads())
        {
            return Err(Error::Unsupported {
                what: "model config",
                detail: "num_attention_heads must be a positive multiple of num_key_value_heads"
                    .into(),
            });
        }
        let (factor, head_dim) = (self.partial_rotary_factor(), self.head_dim());
        let rotary = factor * head_dim as f64;
        if !(factor > 0.0 && factor <= 1.0)
            || (rotary - rotary.round()).abs() > 1e-9
            || !(rotary.round() as usize).is_multiple_of(2)
        {
            return Err(Error::Unsupported {
                what: "model config",
                detail: format!(
                    "partial_rotary_factor {factor} with head_dim {head_dim} gives {rotary} \
                     rotary channels: it must be an even whole number in (0, head_dim]"
                ),
            });
        }
        Ok(self)
    }

    /// Share of each head's channels that RoPE rotates (1 outside GLM).
    pub fn partial_rotary_factor(&self) -> f64 {
        self.rope()
            .partial_rotary_factor
            .or(self.partial_rotary_factor)
            .unwrap_or(if self.is_glm() { 0.5 } else { 1.0 })
    }

    /// Channels per head that RoPE rotates (the first ones; the rest pass through).
    pub fn rotary_dim(&self) -> usize {
        (self.head_dim() as f64 * self.partial_rotary_factor()).round() as usize
    }

    /// Key/value heads.
    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads
            .unwrap_or(self.num_attention_heads)
            .max(1)
    }

    /// Per-head size.
    pub fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads.max(1))
    }

    fn rope(&self) -> RopeParameters {
        let mut p = self
            .rope_parameters
            .clone()
            .or_else(|| self.rope_scaling.clone())
            .unwrap_or_default();
        if p.rope_theta.is_none() {
            p.rope_theta = self.rope_theta.or(Some(10000.0));
        }
        p
    }

    /// Inverse frequencies `[rotary_dim/2]` after scaling, as transformers computes them.
    pub fn inv_freq(&self) -> Result<Vec<f64>> {
        let p = self.rope();
        let dim = self.rotary_dim();
        let base = p.rope_theta.unwrap_or(10000.0);
        let inv: Vec<f64> = (0..dim / 2)
            .map(|i| {
                // transformers computes this in f32.
                let e = (2 * i) as f32 / dim as f32;
                (1.0 / (base as f32).powf(e)) as f64
            })
            .collect();
        match p.rope_type.as_deref().unwrap_or("default") {
            "default" => Ok(inv),
            "linear" => {
                let f = p.factor.unwrap_or(1.0);
                Ok(inv.iter().map(|x| x / f).collect())
            }
            "llama3" => {
                let missing = |k: &str| Error::Unsupported {
                    what: "rope_scaling",
                    detail: format!("llama3 scaling without `{k}`"),
                };
                let factor = p.factor.ok_or_else(|| missing("factor"))?;
                let low = p
                    .low_freq_factor
                    .ok_or_else(|| missing("low_freq_factor"))?;
                let high = p
                    .high_freq_factor
                    .ok_or_else(|| missing("high_freq_factor"))?;
                let old = p
                    .original_max_position_embeddings
                    .ok_or_else(|| missing("original_max_position_embeddings"))?;
                let (low_wl, high_wl) = (old / low, old / high);
                Ok(inv
                    .iter()
                    .map(|&f| {
                        let wl = 2.0 * std::f64::consts::PI / f;
                        if wl < high_wl {
                            f
                        } else if wl > low_wl {
                            f / factor
                        } else {
                            let smooth = (old / wl - low) / (high - low);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect())
            }
            other => Err(Error::Unsupported {
                what: "rope_scaling",
                detail: format!("rope type `{other}` (default, linear, llama3)"),
            }),
        }
    }
}

/// RMSNorm `x · rsqrt(mean(x²) + eps) · w`, frozen.
#[derive(Module, Debug)]
pub struct RmsNorm {
    /// Weight.
    pub weight: Param<Tensor<1>>,
    /// Epsilon.
    pub eps: f64,
}

impl RmsNorm {
    /// Norm from its weight.
    pub fn new(weight: Tensor<1>, eps: f64) -> Self {
        RmsNorm {
            weight: frozen(weight),
            eps,
        }
    }

    /// Normalise the last dimension.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let rms = x
            .clone()
            .powi_scalar(2)
            .mean_dim(D - 1)
            .add_scalar(self.eps)
            .sqrt();
        (x / rms) * self.weight.val().unsqueeze::<D>()
    }
}

/// One decoder layer.
#[derive(Module, Debug)]
pub struct LlamaLayer {
    /// `input_layernorm`.
    pub input_norm: RmsNorm,
    /// `self_attn.q_proj`.
    pub q_proj: LoraLinear,
    /// `self_attn.k_proj`.
    pub k_proj: LoraLinear,
    /// `self_attn.v_proj`.
    pub v_proj: LoraLinear,
    /// `self_attn.o_proj`.
    pub o_proj: LoraLinear,
    /// Qwen3 `self_attn.q_norm`.
    pub q_norm: Option<RmsNorm>,
    /// Qwen3 `self_attn.k_norm`.
    pub k_norm: Option<RmsNorm>,
    /// GLM-4 `post_self_attn_layernorm`, on the attention output before the residual.
    pub attn_out_norm: Option<RmsNorm>,
    /// `post_attention_layernorm`.
    pub post_norm: RmsNorm,
    /// `mlp.gate_proj` (absent in GLM, which fuses it into `gate_up_proj`).
    pub gate_proj: Option<LoraLinear>,
    /// `mlp.up_proj` (absent in GLM).
    pub up_proj: Option<LoraLinear>,
    /// GLM `mlp.gate_up_proj` `[2·intermediate, hidden]`: gate rows first, then up.
    pub gate_up_proj: Option<LoraLinear>,
    /// `mlp.down_proj`.
    pub down_proj: LoraLinear,
    /// GLM-4 `post_mlp_layernorm`, on the MLP output before the residual.
    pub mlp_out_norm: Option<RmsNorm>,
}

/// Hugging Face module names of a layer's linears (after `layers.N.`).
mod hf {
    pub const Q_PROJ: &str = "self_attn.q_proj";
    pub const K_PROJ: &str = "self_attn.k_proj";
    pub const V_PROJ: &str = "self_attn.v_proj";
    pub const O_PROJ: &str = "self_attn.o_proj";
    pub const GATE_PROJ: &str = "mlp.gate_proj";
    pub const UP_PROJ: &str = "mlp.up_proj";
    pub const GATE_UP_PROJ: &str = "mlp.gate_up_proj";
    pub const DOWN_PROJ: &str = "mlp.down_proj";
}

/// One linear of a Llama-family layer: its Hugging Face module name (after `layers.N.`),
/// its llama.cpp GGUF name (after `blk.N.`; `None` where llama.cpp has no tensor of that
/// layout) and its field. The loader, the LoRA visitor and the GGUF name map all read
/// this one table.
pub(crate) struct LinearSlot {
    /// Hugging Face module name.
    pub hf: &'static str,
    /// GGUF tensor name.
    pub gguf: Option<&'static str>,
    /// The field, when the layer has it.
    pub field: fn(&mut LlamaLayer) -> Option<&mut LoraLinear>,
    /// The same field, read-only.
    pub read: fn(&LlamaLayer) -> Option<&LoraLinear>,
}

/// Every linear of a layer, in Hugging Face's module order.
pub(crate) const LINEARS: [LinearSlot; 8] = [
    LinearSlot {
        hf: hf::Q_PROJ,
        gguf: Some("attn_q"),
        field: |l| Some(&mut l.q_proj),
        read: |l| Some(&l.q_proj),
    },
    LinearSlot {
        hf: hf::K_PROJ,
        gguf: Some("attn_k"),
        field: |l| Some(&mut l.k_proj),
        read: |l| Some(&l.k_proj),
    },
    LinearSlot {
        hf: hf::V_PROJ,
        gguf: Some("attn_v"),
        field: |l| Some(&mut l.v_proj),
        read: |l| Some(&l.v_proj),
    },
    LinearSlot {
        hf: hf::O_PROJ,
        gguf: Some("attn_output"),
        field: |l| Some(&mut l.o_proj),
        read: |l| Some(&l.o_proj),
    },
    LinearSlot {
        hf: hf::GATE_PROJ,
        gguf: Some("ffn_gate"),
        field: |l| l.gate_proj.as_mut(),
        read: |l| l.gate_proj.as_ref(),
    },
    LinearSlot {
        hf: hf::UP_PROJ,
        gguf: Some("ffn_up"),
        field: |l| l.up_proj.as_mut(),
        read: |l| l.up_proj.as_ref(),
    },
    // llama.cpp's glm4 `ffn_up` holds the fused pair in another layout: not mapped.
    LinearSlot {
        hf: hf::GATE_UP_PROJ,
        gguf: None,
        field: |l| l.gate_up_proj.as_mut(),
        read: |l| l.gate_up_proj.as_ref(),
    },
    LinearSlot {
        hf: hf::DOWN_PROJ,
        gguf: Some("ffn_down"),
        field: |l| Some(&mut l.down_proj),
        read: |l| Some(&l.down_proj),
    },
];

/// A Llama-family decoder (hidden states after the final norm).
#[derive(Module, Debug)]
pub struct LlamaModel {
    /// `embed_tokens`.
    pub embed: FrozenEmbedding,
    /// Layers.
    pub layers: Vec<LlamaLayer>,
    /// Final `norm`.
    pub norm: RmsNorm,
    /// `lm_head` weight `[vocab, hidden]` when not tied (for generation).
    pub lm_head: Option<Param<Tensor<2>>>,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Per-head size.
    pub head_dim: usize,
    /// RoPE inverse frequencies (`rotary_dim / 2` of them: RoPE turns the first
    /// `2 · inv_freq.len()` channels of each head, the rest pass through).
    pub inv_freq: Vec<f64>,
    /// GLM's RoPE layout: channel pairs `(2i, 2i+1)` turn together, instead of
    /// `(i, i + d/2)` (rotate_half).
    pub rope_interleaved: bool,
    /// Padding id used for last-token pooling.
    pub pad_id: u32,
    /// `model_type`.
    pub model_type: String,
    /// Hidden size.
    pub hidden: usize,
}

impl std::str::FromStr for LlamaConfig {
    type Err = Error;

    /// Parse and check a decoder's `config.json` text; keys it leaves out take the
    /// defaults of its model type's family (GLM's differ from Llama's).
    fn from_str(text: &str) -> Result<Self> {
        family::parse_config::<LlamaConfig>(text, true)?.checked()
    }
}

fn rotate_half(x: Tensor<4>) -> Tensor<4> {
    let [b, h, s, d] = x.dims();
    let x1 = x.clone().slice([0..b, 0..h, 0..s, 0..d / 2]);
    let x2 = x.slice([0..b, 0..h, 0..s, d / 2..d]);
    Tensor::cat(vec![x2.neg(), x1], 3)
}

/// GLM's pairwise rotation `(x0, x1, x2, x3, …) → (−x1, x0, −x3, x2, …)`.
fn rotate_pairs(x: Tensor<4>) -> Tensor<4> {
    let [b, h, s, d] = x.dims();
    let pairs = x.reshape([b * h * s, d / 2, 2]);
    let even = pairs.clone().slice([0..b * h * s, 0..d / 2, 0..1]);
    let odd = pairs.slice([0..b * h * s, 0..d / 2, 1..2]);
    Tensor::cat(vec![odd.neg(), even], 2).reshape([b, h, s, d])
}

impl LlamaModel {
    /// Build from a tensor source (a checkpoint folder, a GGUF file); Hugging Face names
    /// with or without the `model.` prefix.
    pub fn from_source(
        config: &LlamaConfig,
        ckpt: &impl TensorSource,
        options: &LoadOptions,
        device: &Device,
    ) -> Result<Self> {
        options.check(device)?;
        let packing = options.packing;
        let prefix = ["model.", ""]
            .into_iter()
            .find(|p| ckpt.contains(&format!("{p}embed_tokens.weight")))
            .ok_or_else(|| Error::MissingTensor {
                name: "model.embed_tokens.weight".into(),
                path: ckpt.origin().to_path_buf(),
            })?;
        let (h, hd) = (config.hidden_size, config.head_dim());
        let (nh, nkv) = (config.num_attention_heads, config.kv_heads());
        let qkv_bias = config.model_type == "qwen2" || config.attention_bias;
        // GLM's `attention_bias` covers q/k/v only; its o_proj never has one.
        let o_bias = config.attention_bias && !config.is_glm();
        let (fused_mlp, output_norms) = (config.is_glm(), config.model_type == "glm4");
        let inter = config.intermediate_size;
        let t1 = |n: &str, len: usize| ckpt.tensor::<1>(&format!("{prefix}{n}"), [len], device);
        let linear = |n: &str, out_f: usize, in_f: usize, bias: bool| -> Result<LoraLinear> {
            let name = format!("{prefix}{n}.weight");
            let b = if bias {
                Some(t1(&format!("{n}.bias"), out_f)?)
            } else {
                None
            };
            // `keep`: the file's own blocks, never dequantised as a whole; a float tensor
            // (some GGUF files keep a few) stays float.
            let keep = packing == Some(Quantization::Keep);
            if keep && let Some(blocks) = ckpt.stored_blocks(&name, [out_f, in_f])? {
                return PackedBase::new(blocks, [out_f, in_f], b, device)
                    .map(|base| LoraLinear::new(FrozenWeight::Packed(base)))
                    .map_err(|e| match e {
                        Error::InvalidState(m) => Error::InvalidState(format!("{name}: {m}")),
                        e => e,
                    });
            }
            let w = ckpt.tensor_as::<2>(&name, [out_f, in_f], options.dtype, device)?;
            LoraLinear::from_out_in_packed(w, b, packing.filter(|_| !keep))
        };
        let norm = |n: &str, len: usize| -> Result<RmsNorm> {
            Ok(RmsNorm::new(
                t1(&format!("{n}.weight"), len)?,
                config.rms_norm_eps,
            ))
        };
        // The largest tensor first, while little else is resident: its transient copies
        // then never add to a nearly whole model's memory.
        let embed = FrozenEmbedding::new(ckpt.tensor_as::<2>(
            &format!("{prefix}embed_tokens.weight"),
            [config.vocab_size, h],
            options.dtype,
            device,
        )?);
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("layers.{i}");
            let qk_norm = config.model_type == "qwen3";
            layers.push(LlamaLayer {
                input_norm: norm(&format!("{p}.input_layernorm"), h)?,
                q_proj: linear(&format!("{p}.{}", hf::Q_PROJ), nh * hd, h, qkv_bias)?,
                k_proj: linear(&format!("{p}.{}", hf::K_PROJ), nkv * hd, h, qkv_bias)?,
                v_proj: linear(&format!("{p}.{}", hf::V_PROJ), nkv * hd, h, qkv_bias)?,
                o_proj: linear(&format!("{p}.{}", hf::O_PROJ), h, nh * hd, o_bias)?,
                q_norm: if qk_norm {
                    Some(norm(&format!("{p}.self_attn.q_norm"), hd)?)
                } else {
                    None
                },
                k_norm: if qk_norm {
                    Some(norm(&format!("{p}.self_attn.k_norm"), hd)?)
                } else {
                    None
                },
                attn_out_norm: output_norms
                    .then(|| norm(&format!("{p}.post_self_attn_layernorm"), h))
                    .transpose()?,
                post_norm: norm(&format!("{p}.post_attention_layernorm"), h)?,
                gate_proj: (!fused_mlp)
                    .then(|| linear(&format!("{p}.{}", hf::GATE_PROJ), inter, h, false))
                    .transpose()?,
                up_proj: (!fused_mlp)
                    .then(|| linear(&format!("{p}.{}", hf::UP_PROJ), inter, h, false))
                    .transpose()?,
                gate_up_proj: fused_mlp
                    .then(|| linear(&format!("{p}.{}", hf::GATE_UP_PROJ), 2 * inter, h, false))
                    .transpose()?,
                down_proj: linear(&format!("{p}.{}", hf::DOWN_PROJ), h, inter, false)?,
                mlp_out_norm: output_norms
                    .then(|| norm(&format!("{p}.post_mlp_layernorm"), h))
                    .transpose()?,
            });
        }
        let lm_head = if !config.tie_word_embeddings && ckpt.contains("lm_head.weight") {
            Some(frozen(ckpt.tensor_as::<2>(
                "lm_head.weight",
                [config.vocab_size, h],
                options.dtype,
                device,
            )?))
        } else {
            None
        };
        let eos = config.eos_token_id.as_ref().and_then(EosTokenId::first);
        let pad_id = crate::tokenize::pad_or_eos(config.pad_token_id, eos, ckpt.origin())
            .ok_or_else(|| Error::Unsupported {
                what: "model config",
                detail: "neither pad_token_id nor eos_token_id is set: no padding id".into(),
            })?;
        let model = LlamaModel {
            embed,
            layers,
            norm: norm("norm", h)?,
            lm_head,
            heads: nh,
            kv_heads: nkv,
            head_dim: hd,
            inv_freq: config.inv_freq()?,
            rope_interleaved: config.is_glm(),
            pad_id,
            model_type: config.model_type.clone(),
            hidden: h,
        };
        check_max_len(&model, options.max_len)?;
        Ok(model)
    }

    /// `cos`, `sin` of shape `[1, 1, seq, rotary_dim]` for positions `0..seq`, laid out
    /// as the rotation pairs channels: `[c0‥cn, c0‥cn]` (rotate_half) or
    /// `[c0, c0, c1, c1, …]` (GLM's interleaved pairs).
    fn rope_tables(&self, seq: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(seq * half * 2);
        let mut sin = Vec::with_capacity(seq * half * 2);
        for pos in 0..seq {
            // Angles in f32 as transformers computes them; cos/sin of the f32 angle.
            let angles: Vec<f32> = self
                .inv_freq
                .iter()
                .map(|&f| pos as f32 * f as f32)
                .collect();
            if self.rope_interleaved {
                for a in &angles {
                    cos.extend([a.cos(); 2]);
                    sin.extend([a.sin(); 2]);
                }
            } else {
                for _ in 0..2 {
                    cos.extend(angles.iter().map(|a| a.cos()));
                    sin.extend(angles.iter().map(|a| a.sin()));
                }
            }
        }
        let shape = [1, 1, seq, half * 2];
        (
            Tensor::from_data(TensorData::new(cos, shape), device),
            Tensor::from_data(TensorData::new(sin, shape), device),
        )
    }

    /// Causal + key-padding additive bias `[batch, 1, seq, seq]`.
    fn attention_bias(mask: &Tensor<2, Int>) -> Tensor<4> {
        let [b, s] = mask.dims();
        let device = mask.device();
        let keys = mask.clone().equal_elem(0).float().reshape([b, 1, 1, s]);
        let causal: Vec<f32> = (0..s)
            .flat_map(|i| (0..s).map(move |j| if j > i { 1.0 } else { 0.0 }))
            .collect();
        let causal = Tensor::<4>::from_data(TensorData::new(causal, [1, 1, s, s]), &device);
        // 1 wherever either mask blocks; then scale to the additive mask value.
        (keys + causal).clamp_max(1.0).mul_scalar(MASK_VALUE)
    }

    fn layer_forward(
        &self,
        layer: &LlamaLayer,
        x: Tensor<3>,
        cos: &Tensor<4>,
        sin: &Tensor<4>,
        bias: &Tensor<4>,
    ) -> Tensor<3> {
        let normed = layer.input_norm.forward(x.clone());
        let mut q = split_heads(
            layer.q_proj.forward(normed.clone()),
            self.heads,
            self.head_dim,
        );
        let mut k = split_heads(
            layer.k_proj.forward(normed.clone()),
            self.kv_heads,
            self.head_dim,
        );
        let v = split_heads(layer.v_proj.forward(normed), self.kv_heads, self.head_dim);
        if let (Some(qn), Some(kn)) = (&layer.q_norm, &layer.k_norm) {
            q = qn.forward(q);
            k = kn.forward(k);
        }
        let (q, k) = (self.rope(q, cos, sin), self.rope(k, cos, sin));
        // Grouped-query attention: `attention` reads the kv heads as they are.
        let ctx = merge_heads(attention(q, k, v, bias.clone(), None));
        let mut attn = layer.o_proj.forward(ctx);
        if let Some(norm) = &layer.attn_out_norm {
            attn = norm.forward(attn);
        }
        let h = x + attn;
        let normed = layer.post_norm.forward(h.clone());
        let (gate, up) = match (&layer.gate_up_proj, &layer.gate_proj, &layer.up_proj) {
            (Some(gate_up), _, _) => {
                let fused = gate_up.forward(normed);
                let [b, s, two_i] = fused.dims();
                let gate = fused.clone().slice([0..b, 0..s, 0..two_i / 2]);
                (gate, fused.slice([0..b, 0..s, two_i / 2..two_i]))
            }
            (None, Some(gate), Some(up)) => (gate.forward(normed.clone()), up.forward(normed)),
            _ => unreachable!("the loader sets gate_up_proj or both gate_proj and up_proj"),
        };
        let mut mlp = layer.down_proj.forward(crate::nn::swiglu(gate, up));
        if let Some(norm) = &layer.mlp_out_norm {
            mlp = norm.forward(mlp);
        }
        h + mlp
    }

    /// RoPE on the first `cos.dims()[3]` channels of each head; the rest pass through.
    fn rope(&self, x: Tensor<4>, cos: &Tensor<4>, sin: &Tensor<4>) -> Tensor<4> {
        let [b, h, s, d] = x.dims();
        let rotary = cos.dims()[3];
        let (turned, kept) = if rotary < d {
            let kept = x.clone().slice([0..b, 0..h, 0..s, rotary..d]);
            (x.slice([0..b, 0..h, 0..s, 0..rotary]), Some(kept))
        } else {
            (x, None)
        };
        let rotated = if self.rope_interleaved {
            rotate_pairs(turned.clone())
        } else {
            rotate_half(turned.clone())
        };
        let out = turned * cos.clone() + rotated * sin.clone();
        match kept {
            Some(kept) => Tensor::cat(vec![out, kept], 3),
            None => out,
        }
    }

    /// Next-token logits `[batch, seq, vocab]` from hidden states (tied or `lm_head`).
    pub fn logits(&self, hidden: Tensor<3>) -> Tensor<3> {
        let w = match &self.lm_head {
            Some(w) if w.val().dtype() == burn::tensor::DType::F32 => w.val(),
            Some(w) => w.val().cast(burn::tensor::FloatDType::F32),
            None => self.embed.table_f32(),
        };
        crate::lora::base::linear_rows(hidden, w.transpose(), None)
    }
}

impl Backbone for LlamaModel {
    fn forward(&self, input: &EncoderInput) -> Tensor<3> {
        let [_, s] = input.input_ids.dims();
        let device = input.input_ids.device();
        let (cos, sin) = self.rope_tables(s, &device);
        let bias = Self::attention_bias(&input.attention_mask);
        let mut h = self.embed.forward(input.input_ids.clone());
        for layer in &self.layers {
            h = self.layer_forward(layer, h, &cos, &sin, &bias);
        }
        self.norm.forward(h)
    }

    fn hidden_size(&self) -> usize {
        self.hidden
    }

    fn pad_token_id(&self) -> u32 {
        self.pad_id
    }

    fn vocab_size(&self) -> usize {
        self.embed.weight.val().dims()[0]
    }

    fn model_type(&self) -> &str {
        &self.model_type
    }

    fn is_decoder(&self) -> bool {
        true
    }

    /// `LlamaForSequenceClassification` and its siblings keep the backbone under `model.`.
    fn task_prefix(&self) -> &'static str {
        self.registry_entry().task_prefix
    }

    fn task_class(&self) -> &'static str {
        self.registry_entry().task_class
    }
}

impl LlamaModel {
    /// This model type's entry in the family registry (GLM's family for GLM types).
    fn registry_entry(&self) -> &'static family::ModelType {
        let family = family::model_type(&self.model_type).map_or(&FAMILY, |(f, _)| f);
        family::entry_or_first(family, &self.model_type)
    }
}

impl LoraTargets for LlamaModel {
    fn visit_linears(&mut self, prefix: &str, visitor: &mut LinearVisitor<'_>) -> Result<()> {
        for (i, l) in self.layers.iter_mut().enumerate() {
            let p = join_path(prefix, &format!("layers.{i}"));
            for slot in &LINEARS {
                if let Some(linear) = (slot.field)(l) {
                    visitor(&join_path(&p, slot.hf), linear)?;
                }
            }
        }
        Ok(())
    }

    fn read_linears(&self, prefix: &str, reader: &mut LinearReader<'_>) -> Result<()> {
        for (i, l) in self.layers.iter().enumerate() {
            let p = join_path(prefix, &format!("layers.{i}"));
            for slot in &LINEARS {
                if let Some(linear) = (slot.read)(l) {
                    reader(&join_path(&p, slot.hf), linear)?;
                }
            }
        }
        Ok(())
    }

    /// The registry's targets of the model type (PEFT's pair for Llama, Mistral, Qwen).
    fn default_targets(&self) -> ModuleSelector {
        let family = family::model_type(&self.model_type).map_or(&FAMILY, |(f, _)| f);
        ModuleSelector::names(family::entry_or_first(family, &self.model_type).default_targets)
    }
}
