//! `MultiLabelClassifier`: backbone (+ LoRA) → pooling → dropout → linear head.

use std::path::Path;

use burn::module::{Module, ModuleVisitor, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Distribution, Int, Tensor};
use serde::{Deserialize, Serialize};

use crate::data::EncodedSet;
use crate::error::{Error, Result};
use crate::lora::base::{replace_value, transpose_contiguous};
use crate::lora::{LinearReader, LinearVisitor, LoraTargets, ModuleSelector};
use crate::models::{Backbone, EncoderInput};

/// How token states become one vector per example.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Pooling {
    /// The checkpoint's pooler, `tanh(W·h[CLS] + b)` (BertForSequenceClassification).
    Pooler,
    /// The first token's state.
    Cls,
    /// Mean over non-padding tokens (sentence-transformers' mean pooling).
    Mean,
    /// The last token that is not padding (decoder classification, as
    /// LlamaForSequenceClassification).
    LastToken,
}

impl Pooling {
    /// Parse `pooler | cls | mean | last-token`.
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "pooler" => Ok(Pooling::Pooler),
            "cls" => Ok(Pooling::Cls),
            "mean" => Ok(Pooling::Mean),
            "last-token" | "last" => Ok(Pooling::LastToken),
            other => Err(Error::Unsupported {
                what: "pooling",
                detail: format!("`{other}` (pooler, cls, mean, last-token)"),
            }),
        }
    }

    /// The pooling a checkpoint was trained with: a sentence-transformers folder's
    /// `1_Pooling/config.json` when present (all-MiniLM-L6-v2: mean), else the pooler for
    /// encoders that have one, CLS for those that don't, and the last token for decoders.
    pub fn default_for(model_dir: Option<&Path>, backbone: &impl Backbone) -> Self {
        model_dir
            .and_then(sentence_transformers_pooling)
            .unwrap_or_else(|| Self::task_default(backbone))
    }

    /// What transformers' `…ForSequenceClassification` of the family pools: the last real
    /// token for decoders, the pooler where the checkpoint has one, else `[CLS]` (the
    /// pooling of an adapter written by Python PEFT, which records none).
    pub fn task_default(backbone: &impl Backbone) -> Self {
        if backbone.is_decoder() {
            Pooling::LastToken
        } else if backbone.has_pooler() {
            Pooling::Pooler
        } else {
            Pooling::Cls
        }
    }
}

/// Read the pooling mode of a sentence-transformers folder (`modules.json` → Pooling module).
fn sentence_transformers_pooling(dir: &Path) -> Option<Pooling> {
    let modules: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("modules.json")).ok()?).ok()?;
    let pooling_path = modules.as_array()?.iter().find_map(|m| {
        let ty = m.get("type")?.as_str()?;
        ty.ends_with("Pooling")
            .then(|| m.get("path")?.as_str().map(String::from))?
    })?;
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(pooling_path).join("config.json")).ok()?,
    )
    .ok()?;
    let on = |k: &str| cfg.get(k).and_then(|v| v.as_bool()).unwrap_or(false);
    if on("pooling_mode_mean_tokens") {
        Some(Pooling::Mean)
    } else if on("pooling_mode_cls_token") {
        Some(Pooling::Cls)
    } else if on("pooling_mode_lasttoken") {
        Some(Pooling::LastToken)
    } else {
        None
    }
}

/// The trainable linear head (PEFT `modules_to_save`), stored `[hidden, labels]`.
#[derive(Module, Debug)]
pub struct ClassificationHead {
    /// Weight `[hidden, labels]`.
    pub weight: Param<Tensor<2>>,
    /// Bias `[labels]` (`classifier` has one, Llama's `score` has none).
    pub bias: Option<Param<Tensor<1>>>,
    /// Dropout before the head.
    pub dropout: Dropout,
}

impl ClassificationHead {
    /// transformers' init: weight ~ N(0, 0.02), bias 0. A `dropout` outside [0, 1) (or
    /// NaN) is [`Error::InvalidSetting`].
    pub fn init(
        hidden: usize,
        labels: usize,
        bias: bool,
        dropout: f64,
        device: &Device,
    ) -> Result<Self> {
        // burn-nn's Dropout asserts its probability: checked here instead.
        if !(0.0..1.0).contains(&dropout) {
            return Err(Error::InvalidSetting {
                name: "head dropout",
                message: format!("{dropout} is not in [0, 1)"),
            });
        }
        Ok(ClassificationHead {
            weight: Param::from_tensor(Tensor::random(
                [hidden, labels],
                Distribution::Normal(0.0, 0.02),
                device,
            )),
            bias: bias.then(|| Param::from_tensor(Tensor::zeros([labels], device))),
            dropout: DropoutConfig::new(dropout).init(),
        })
    }

    /// Replace the weights with PyTorch-oriented `[labels, hidden]` and bias.
    pub fn set_weights(&mut self, weight_out_in: Tensor<2>, bias: Option<Tensor<1>>) -> Result<()> {
        let [hidden, labels] = self.weight.shape().dims::<2>();
        if weight_out_in.dims() != [labels, hidden] {
            return Err(Error::ShapeMismatch {
                name: "head weight".into(),
                expected: vec![labels, hidden],
                actual: weight_out_in.dims().to_vec(),
            });
        }
        replace_value(&mut self.weight, transpose_contiguous(weight_out_in));
        match (bias, self.bias.as_mut()) {
            (Some(b), Some(p)) => {
                if b.dims() != [labels] {
                    return Err(Error::ShapeMismatch {
                        name: "head bias".into(),
                        expected: vec![labels],
                        actual: b.dims().to_vec(),
                    });
                }
                replace_value(p, b);
            }
            (None, None) => {}
            (Some(_), None) | (None, Some(_)) => {
                return Err(Error::InvalidState("head bias presence differs".into()));
            }
        }
        Ok(())
    }

    /// Set the bias to the logit of each label's training frequency, so training starts at
    /// the label priors. Adam moves a bias by about `lr` per step: from 0 it would take
    /// thousands of steps to reach `logit(0.04) ≈ −3.2` for a rare label.
    pub fn init_bias_from_priors(&mut self, positives: &[usize], examples: usize) -> Result<()> {
        let labels = self.num_labels();
        if positives.len() != labels || examples == 0 {
            return Err(Error::ShapeMismatch {
                name: "label counts".into(),
                expected: vec![labels],
                actual: vec![positives.len()],
            });
        }
        let Some(bias) = self.bias.as_mut() else {
            return Ok(());
        };
        let logits: Vec<f32> = positives
            .iter()
            .map(|&p| {
                let f = (p as f64 / examples as f64).clamp(1e-4, 1.0 - 1e-4);
                (f / (1.0 - f)).ln() as f32
            })
            .collect();
        let device = bias.val().device();
        let t = Tensor::<1>::from_data(burn::tensor::TensorData::new(logits, [labels]), &device);
        replace_value(bias, t);
        Ok(())
    }

    /// Logits from pooled states `[batch, hidden]`.
    pub fn forward(&self, pooled: Tensor<2>) -> Tensor<2> {
        burn::tensor::module::linear(
            crate::nn::dropout(&self.dropout, pooled),
            self.weight.val(),
            self.bias.as_ref().map(|b| b.val()),
        )
    }

    /// Number of labels.
    pub fn num_labels(&self) -> usize {
        self.weight.shape().dims::<2>()[1]
    }

    /// Whether the head has a bias (encoders' `classifier`; decoders' `score` has none).
    pub fn has_bias(&self) -> bool {
        self.bias.is_some()
    }

    /// Trainable parameters.
    pub fn num_params(&self) -> usize {
        let [h, l] = self.weight.shape().dims::<2>();
        h * l + self.bias.as_ref().map_or(0, |_| l)
    }
}

impl std::str::FromStr for Pooling {
    type Err = Error;

    /// [`Pooling::parse`].
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// A multi-label classifier over any [`Backbone`].
#[derive(Module, Debug)]
pub struct MultiLabelClassifier<B: Backbone> {
    /// The pretrained model with its adapters.
    pub backbone: B,
    /// The linear head.
    pub head: ClassificationHead,
    /// Pooling.
    #[module(skip)]
    pub pooling: Pooling,
    /// The head's Hugging Face name (`classifier` or `score`).
    pub head_name: String,
}

impl<B: Backbone> MultiLabelClassifier<B> {
    /// Check that every row of `set` fits the backbone: token ids below its vocabulary
    /// size, lengths within its position table. [`predict_probs`](crate::classify::predict_probs)
    /// and the ready trainer's loop call it before any batch.
    pub fn check_inputs(&self, set: &EncodedSet) -> Result<()> {
        let vocab = self.backbone.vocab_size();
        let longest = set.ids.iter().map(Vec::len).max().unwrap_or(0);
        crate::models::check_max_len(&self.backbone, longest)?;
        // Shorter rows are padded with this id: it is looked up like any other.
        if set.pad_id as usize >= vocab {
            return Err(Error::InputOutOfRange(format!(
                "padding id {}, but the vocabulary has {vocab} entries (the tokenizer's pad \
                 token does not belong to this model?)",
                set.pad_id
            )));
        }
        let beyond = set.ids.iter().enumerate().find_map(|(row, ids)| {
            ids.iter()
                .find(|&&id| id as usize >= vocab)
                .map(|&id| (row, id))
        });
        match beyond {
            Some((row, id)) => Err(Error::InputOutOfRange(format!(
                "token id {id} in row {row}, but the vocabulary has {vocab} entries \
                 (a tokenizer that does not belong to this model?)"
            ))),
            None => Ok(()),
        }
    }

    /// A fresh head of `num_labels` on `backbone`.
    pub fn new(
        backbone: B,
        num_labels: usize,
        pooling: Pooling,
        dropout: f64,
        device: &Device,
    ) -> Result<Self> {
        if num_labels == 0 {
            return Err(Error::InvalidState("num_labels must be >= 1".into()));
        }
        if pooling == Pooling::Pooler && !backbone.has_pooler() {
            return Err(Error::Unsupported {
                what: "pooling",
                detail: format!(
                    "`pooler`: this {} checkpoint has no pooler",
                    backbone.model_type()
                ),
            });
        }
        let head_name = backbone.head_name();
        let head = ClassificationHead::init(
            backbone.hidden_size(),
            num_labels,
            // transformers' decoder `score` heads have no bias.
            !backbone.is_decoder(),
            dropout,
            device,
        )?;
        Ok(MultiLabelClassifier {
            backbone,
            head,
            pooling,
            head_name: head_name.to_string(),
        })
    }

    /// Pool hidden states `[b, s, h]` into `[b, h]`.
    pub fn pool(&self, hidden: Tensor<3>, input: &EncoderInput) -> Tensor<2> {
        let [b, s, h] = hidden.dims();
        match self.pooling {
            Pooling::Pooler => self
                .backbone
                .pooler_output(hidden.clone())
                .unwrap_or_else(|| hidden.slice([0..b, 0..1]).reshape([b, h])),
            Pooling::Cls => hidden.slice([0..b, 0..1]).reshape([b, h]),
            Pooling::Mean => {
                let mask = input.attention_mask.clone().float().reshape([b, s, 1]);
                let summed = (hidden * mask.clone()).sum_dim(1).reshape([b, h]);
                let counts = mask.sum_dim(1).reshape([b, 1]).clamp_min(1e-9);
                summed / counts
            }
            Pooling::LastToken => {
                // transformers: argmax over positions·(ids != pad) — the last non-pad token,
                // for left and right padding alike. Also masked by the attention mask: a
                // tokenizer that pads with another id than the config's `pad_token_id`
                // would otherwise have its padding pooled.
                let device = hidden.device();
                let not_pad = input
                    .input_ids
                    .clone()
                    .not_equal_elem(self.backbone.pad_token_id() as i64)
                    .int()
                    * input.attention_mask.clone();
                let positions = Tensor::<1, Int>::arange(0..s as i64, &device)
                    .reshape([1, s])
                    .repeat_dim(0, b);
                let last = (positions.clone() * not_pad).argmax(1); // [b, 1]
                // Compared as floats: argmax and arange may use different int widths.
                let one_hot = positions
                    .float()
                    .equal(last.float().repeat_dim(1, s))
                    .float()
                    .reshape([b, 1, s]);
                one_hot.matmul(hidden).reshape([b, h])
            }
        }
    }

    /// Logits `[batch, labels]`.
    pub fn forward(&self, input: &EncoderInput) -> Tensor<2> {
        let hidden = self.backbone.forward(input);
        let pooled = self.pool(hidden, input);
        self.head.forward(pooled)
    }

    /// Probabilities `[batch, labels]` (sigmoid of the logits).
    pub fn probabilities(&self, input: &EncoderInput) -> Tensor<2> {
        sigmoid(self.forward(input))
    }

    /// Number of labels.
    pub fn num_labels(&self) -> usize {
        self.head.num_labels()
    }

    /// Parameters that receive gradients (adapters and head; the frozen base is not counted).
    pub fn trainable_params(&self) -> usize {
        struct Count(usize);
        impl ModuleVisitor for Count {
            fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
                if param.is_require_grad() {
                    self.0 += param.shape().num_elements();
                }
            }
        }
        let mut count = Count(0);
        self.visit(&mut count);
        count.0
    }
}

impl<B: Backbone> LoraTargets for MultiLabelClassifier<B> {
    /// The backbone's linears (the head is trained in full, never adapted).
    fn visit_linears(&mut self, prefix: &str, visitor: &mut LinearVisitor<'_>) -> Result<()> {
        self.backbone.visit_linears(prefix, visitor)
    }

    fn read_linears(&self, prefix: &str, reader: &mut LinearReader<'_>) -> Result<()> {
        self.backbone.read_linears(prefix, reader)
    }

    fn default_targets(&self) -> ModuleSelector {
        self.backbone.default_targets()
    }
}
