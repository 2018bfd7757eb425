//! Multi-label losses on logits `[batch, labels]` and multi-hot targets, each reduced to
//! the mean over all elements (so learning rates carry over between them).

use burn::tensor::activation::{relu, sigmoid};
use burn::tensor::{Device, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which loss to train with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
#[non_exhaustive]
pub enum LossKind {
    /// Binary cross-entropy with logits (PyTorch `BCEWithLogitsLoss`), optional `pos_weight`.
    Bce,
    /// Focal loss (Lin et al. 2017; torchvision's `sigmoid_focal_loss`):
    /// `BCE · (1 − p_t)^γ`, weighted by `α_t` when `alpha` is set.
    Focal {
        /// Focusing parameter γ.
        gamma: f64,
        /// Class balance α in `[0, 1]` for positives (`1 − α` for negatives).
        alpha: Option<f64>,
    },
    /// Asymmetric loss (Ridnik et al. 2021): separate focusing for positives and
    /// negatives, plus a probability margin that discards easy negatives.
    Asl {
        /// γ₊ (positives).
        gamma_pos: f64,
        /// γ₋ (negatives).
        gamma_neg: f64,
        /// Probability margin `m` (shifts negative probabilities down by `m`).
        clip: f64,
        /// Floor inside the logs.
        eps: f64,
    },
}

impl LossKind {
    /// Focal loss with γ = 2 and no α weighting.
    pub fn focal() -> Self {
        LossKind::Focal {
            gamma: 2.0,
            alpha: None,
        }
    }

    /// ASL with the paper's defaults: γ₊ = 0, γ₋ = 4, m = 0.05.
    pub fn asl() -> Self {
        LossKind::Asl {
            gamma_pos: 0.0,
            gamma_neg: 4.0,
            clip: 0.05,
            eps: 1e-8,
        }
    }

    /// Parse `bce | focal | asl` (the example's `--loss`).
    pub fn parse(name: &str) -> Result<Self> {
        match name {
            "bce" => Ok(LossKind::Bce),
            "focal" => Ok(LossKind::focal()),
            "asl" => Ok(LossKind::asl()),
            other => Err(Error::Unsupported {
                what: "loss",
                detail: format!("`{other}` (expected bce, focal or asl)"),
            }),
        }
    }
}

impl std::str::FromStr for LossKind {
    type Err = Error;

    /// [`LossKind::parse`].
    fn from_str(s: &str) -> Result<Self> {
        Self::parse(s)
    }
}

/// `softplus(−x) = −log σ(x)`, computed stably: `log1p(e^{−|x|}) + relu(−x)`.
fn neg_log_sigmoid(x: Tensor<2>) -> Tensor<2> {
    x.clone().abs().neg().exp().log1p() + relu(x.neg())
}

/// Elementwise BCE-with-logits as PyTorch computes it:
/// `(1 − y)·x + (1 + (p − 1)·y) · softplus(−x)`, with `p = pos_weight` per label.
pub fn bce_with_logits_elementwise(
    logits: Tensor<2>,
    targets: Tensor<2>,
    pos_weight: Option<Tensor<1>>,
) -> Tensor<2> {
    let sp = neg_log_sigmoid(logits.clone());
    let linear = targets.clone().neg().add_scalar(1.0) * logits;
    match pos_weight {
        None => linear + sp,
        Some(p) => {
            let coef = targets * p.unsqueeze::<2>().sub_scalar(1.0);
            linear + coef.add_scalar(1.0) * sp
        }
    }
}

/// A multi-label loss with its optional per-label positive weights.
#[derive(Debug, Clone)]
pub struct MultiLabelLoss {
    /// The loss.
    pub kind: LossKind,
    /// `pos_weight` per label (BCE only).
    pub pos_weight: Option<Tensor<1>>,
}

impl MultiLabelLoss {
    /// A loss without positive weights.
    pub fn new(kind: LossKind) -> Self {
        MultiLabelLoss {
            kind,
            pos_weight: None,
        }
    }

    /// Positive weights `negatives / positives` per label from training counts, capped
    /// at `max_weight` (labels with no positives get the cap).
    pub fn with_pos_weight_from_counts(
        mut self,
        positives: &[usize],
        examples: usize,
        max_weight: f32,
        device: &Device,
    ) -> Self {
        let w: Vec<f32> = positives
            .iter()
            .map(|&p| {
                if p == 0 {
                    max_weight
                } else {
                    (examples.saturating_sub(p) as f32 / p as f32).min(max_weight)
                }
            })
            .collect();
        let n = w.len();
        self.pos_weight = Some(Tensor::from_data(TensorData::new(w, [n]), device));
        self
    }

    /// Mean loss over all elements.
    pub fn forward(&self, logits: Tensor<2>, targets: Tensor<2>) -> Tensor<1> {
        match self.kind {
            LossKind::Bce => {
                // The weights follow the logits: a model forked to another device (burn-train's
                // multi-device strategies) keeps this loss as it was built.
                let device = logits.device();
                let pos_weight = self.pos_weight.clone().map(|w| w.to_device(&device));
                bce_with_logits_elementwise(logits, targets, pos_weight).mean()
            }
            LossKind::Focal { gamma, alpha } => {
                let ce = bce_with_logits_elementwise(logits.clone(), targets.clone(), None);
                let p = sigmoid(logits);
                let one_minus_y = targets.clone().neg().add_scalar(1.0);
                let p_t =
                    p.clone() * targets.clone() + p.neg().add_scalar(1.0) * one_minus_y.clone();
                let mut loss = ce * p_t.neg().add_scalar(1.0).powf_scalar(gamma);
                if let Some(a) = alpha {
                    let alpha_t = targets.mul_scalar(a) + one_minus_y.mul_scalar(1.0 - a);
                    loss = loss * alpha_t;
                }
                loss.mean()
            }
            LossKind::Asl {
                gamma_pos,
                gamma_neg,
                clip,
                eps,
            } => {
                let p = sigmoid(logits);
                let one_minus_y = targets.clone().neg().add_scalar(1.0);
                let mut p_neg = p.clone().neg().add_scalar(1.0);
                if clip > 0.0 {
                    p_neg = p_neg.add_scalar(clip).clamp_max(1.0);
                }
                let los_pos = targets.clone() * p.clone().clamp_min(eps).log();
                let los_neg = one_minus_y.clone() * p_neg.clone().clamp_min(eps).log();
                let mut loss = los_pos + los_neg;
                if gamma_pos > 0.0 || gamma_neg > 0.0 {
                    // As in the paper's reference code (default settings), the focusing
                    // weight takes part in the gradient.
                    let p_t = p * targets.clone() + p_neg * one_minus_y.clone();
                    let gamma = targets.mul_scalar(gamma_pos) + one_minus_y.mul_scalar(gamma_neg);
                    let w = p_t.neg().add_scalar(1.0).clamp_min(0.0).powf(gamma);
                    loss = loss * w;
                }
                loss.neg().mean()
            }
        }
    }
}
