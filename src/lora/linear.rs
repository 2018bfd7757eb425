//! `LoraLinear`: a frozen linear plus a low-rank adapter, computed the way PEFT does.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Tensor};

use super::base::{
    DenseBase, FrozenBase, FrozenWeight, linear_rows, over_rows, replace_value,
    transpose_contiguous,
};
use super::config::{InitLoraWeights, ModuleLoraParams};
use super::init::init_factors;
use crate::error::{Error, Result};

/// The trainable half of a [`LoraLinear`].
///
/// Factors are stored transposed for speed (A as `[in, r]`, B as `[r, out]`), so the
/// adapter path is two plain matmuls; [`LoraLinear::lora_a`] and [`LoraLinear::lora_b`]
/// return PEFT's orientation. The fields are private to the crate: changing them goes
/// through [`LoraLinear`]'s methods, which keep the merge rules (no new weights while
/// merged, no double merge).
#[derive(Module, Debug)]
pub struct LoraWeights {
    /// Aᵀ, `[in, r]`.
    pub(crate) a: Param<Tensor<2>>,
    /// Bᵀ, `[r, out]`.
    pub(crate) b: Param<Tensor<2>>,
    /// Dropout on the adapter's input (active only while training).
    pub(crate) dropout: Dropout,
    /// Rank.
    pub(crate) rank: usize,
    /// Alpha as configured.
    pub(crate) alpha: f64,
    /// The factor applied to the adapter output (`alpha/r` or `alpha/√r`).
    pub(crate) scaling: f64,
    /// Whether the adapter contributes to the forward.
    pub(crate) enabled: bool,
    /// Whether `s·BA` has been folded into the base weight.
    pub(crate) merged: bool,
}

impl LoraWeights {
    /// The rank r.
    pub fn rank(&self) -> usize {
        self.rank
    }

    /// `lora_alpha` as configured.
    pub fn alpha(&self) -> f64 {
        self.alpha
    }

    /// The factor on the adapter's output: `alpha / r`, or `alpha / √r` with rsLoRA.
    pub fn scaling(&self) -> f64 {
        self.scaling
    }

    /// Whether the adapter contributes to the forward.
    pub fn is_enabled(&self) -> bool {
        self.enabled
    }
}

/// A linear layer with an optional LoRA adapter:
/// `y = x Wᵀ + b + s · (dropout(x) Aᵀ) Bᵀ`.
///
/// Without an adapter it is exactly the frozen base. Generic over the base so a
/// quantised weight can stand in for [`DenseBase`].
#[derive(Module, Debug)]
pub struct LoraLinear<W: FrozenBase = FrozenWeight> {
    /// The frozen base layer.
    pub base: W,
    /// The adapter, when this layer is targeted.
    pub adapter: Option<LoraWeights>,
}

impl LoraLinear<FrozenWeight> {
    /// A plain (adapter-less) layer from a PyTorch-oriented weight `[out, in]` and bias.
    pub fn from_out_in(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Result<Self> {
        Ok(LoraLinear::new(FrozenWeight::Dense(
            DenseBase::from_out_in(weight, bias)?,
        )))
    }

    /// As [`from_out_in`](Self::from_out_in), the weight packed at once when `packing`
    /// says so: a loader that builds layer by layer this way never holds the whole float
    /// model (QLoRA's loading).
    pub fn from_out_in_packed(
        weight: Tensor<2>,
        bias: Option<Tensor<1>>,
        packing: Option<super::packed::Quantization>,
    ) -> Result<Self> {
        let dense = DenseBase::from_out_in(weight, bias)?;
        let base = match packing {
            Some(q) => FrozenWeight::Packed(super::packed::PackedBase::from_dense(&dense, q)?),
            None => FrozenWeight::Dense(dense),
        };
        Ok(LoraLinear::new(base))
    }
}

impl<W: FrozenBase> LoraLinear<W> {
    /// Wrap a frozen base, with no adapter yet.
    pub fn new(base: W) -> Self {
        LoraLinear {
            base,
            adapter: None,
        }
    }

    /// Input features.
    pub fn in_features(&self) -> usize {
        self.base.in_features()
    }

    /// Output features.
    pub fn out_features(&self) -> usize {
        self.base.out_features()
    }

    /// Attach a freshly initialised adapter (replacing any existing one).
    pub fn attach_adapter(
        &mut self,
        params: ModuleLoraParams,
        dropout: f64,
        init: &InitLoraWeights,
        device: &Device,
    ) -> Result<()> {
        if params.r == 0 {
            return Err(Error::InvalidRank {
                module: "<layer>".into(),
                rank: 0,
            });
        }
        // PEFT takes any rank; bound it only where no real config goes (see the error).
        let max = crate::limits::sizes::WIDTH;
        if params.r > max {
            return Err(Error::RankTooLarge {
                module: "<layer>".into(),
                rank: params.r,
                max,
            });
        }
        if !dropout.is_finite() || !(0.0..1.0).contains(&dropout) {
            return Err(Error::InvalidDropout(dropout));
        }
        let (a, b) = init_factors(
            init,
            params.r,
            self.in_features(),
            self.out_features(),
            device,
        );
        self.adapter = Some(LoraWeights {
            a: Param::from_tensor(transpose_contiguous(a)),
            b: Param::from_tensor(transpose_contiguous(b)),
            dropout: DropoutConfig::new(dropout).init(),
            rank: params.r,
            alpha: params.alpha,
            scaling: params.scaling,
            enabled: true,
            merged: false,
        });
        Ok(())
    }

    /// Replace the adapter's factors with PEFT-oriented `A [r, in]` and `B [out, r]`
    /// (e.g. loaded from `adapter_model.safetensors`).
    pub fn set_lora_weights(&mut self, a: Tensor<2>, b: Tensor<2>) -> Result<()> {
        let (in_f, out_f) = (self.in_features(), self.out_features());
        let adapter = self
            .adapter
            .as_mut()
            .ok_or_else(|| Error::InvalidState("layer has no adapter".into()))?;
        if adapter.merged {
            return Err(Error::InvalidState(
                "cannot replace the weights of a merged adapter; unmerge first".into(),
            ));
        }
        let r = adapter.rank;
        for (name, t, expected) in [("lora_A", &a, [r, in_f]), ("lora_B", &b, [out_f, r])] {
            if t.dims() != expected {
                return Err(Error::ShapeMismatch {
                    name: name.into(),
                    expected: expected.to_vec(),
                    actual: t.dims().to_vec(),
                });
            }
        }
        replace_value(&mut adapter.a, transpose_contiguous(a));
        replace_value(&mut adapter.b, transpose_contiguous(b));
        Ok(())
    }

    /// Forward pass on `[..., in]`: the base output plus the scaled adapter path, as
    /// PEFT's `lora.Linear.forward` (dropout only while training, skipped when merged or disabled).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.adapter {
            Some(adapter) if adapter.enabled && !adapter.merged => {
                let base = self.base.forward(x.clone());
                let h = crate::ops::dropout(&adapter.dropout, x);
                let h = linear_rows(h, adapter.a.val(), None);
                // `base + s·(h·B)` as one product accumulating onto the base output.
                let [rank, out] = adapter.b.dims();
                over_rows(base, out, |base| {
                    let rows = base.dims()[0];
                    let h = h.reshape([rows, rank]);
                    crate::ops::add_product(base, h, adapter.b.val(), adapter.scaling as f32)
                })
            }
            _ => self.base.forward(x),
        }
    }

    /// PEFT-oriented `lora_A` weight `[r, in]`.
    pub fn lora_a(&self) -> Option<Tensor<2>> {
        self.adapter.as_ref().map(|a| a.a.val().transpose())
    }

    /// PEFT-oriented `lora_B` weight `[out, r]`.
    pub fn lora_b(&self) -> Option<Tensor<2>> {
        self.adapter.as_ref().map(|a| a.b.val().transpose())
    }

    /// `s · Aᵀ Bᵀ`, the weight delta in the stored `[in, out]` layout.
    fn delta_in_out(adapter: &LoraWeights) -> Tensor<2> {
        adapter
            .a
            .val()
            .detach()
            .matmul(adapter.b.val().detach())
            .mul_scalar(adapter.scaling)
    }

    /// Fold the adapter into the base: `W ← W + s·BA`. Errors if already merged or no adapter.
    pub fn merge(&mut self) -> Result<()> {
        let adapter = self
            .adapter
            .as_ref()
            .ok_or_else(|| Error::InvalidState("merge: layer has no adapter".into()))?;
        if adapter.merged {
            return Err(Error::InvalidState("merge: adapter already merged".into()));
        }
        let delta = Self::delta_in_out(adapter);
        self.base.add_delta(delta)?;
        if let Some(adapter) = self.adapter.as_mut() {
            adapter.merged = true;
        }
        Ok(())
    }

    /// Undo [`merge`](Self::merge): `W ← W − s·BA`.
    pub fn unmerge(&mut self) -> Result<()> {
        let adapter = self
            .adapter
            .as_ref()
            .ok_or_else(|| Error::InvalidState("unmerge: layer has no adapter".into()))?;
        if !adapter.merged {
            return Err(Error::InvalidState("unmerge: adapter is not merged".into()));
        }
        let delta = Self::delta_in_out(adapter).neg();
        self.base.add_delta(delta)?;
        if let Some(adapter) = self.adapter.as_mut() {
            adapter.merged = false;
        }
        Ok(())
    }

    /// Whether the adapter is currently folded into the base weight.
    pub fn is_merged(&self) -> bool {
        self.adapter.as_ref().is_some_and(|a| a.merged)
    }

    /// Switch the adapter on or off. Disabling a merged adapter unmerges it first, so the
    /// output is then exactly the base's (as PEFT's `disable_adapter`).
    pub fn set_adapter_enabled(&mut self, enabled: bool) -> Result<()> {
        if !enabled && self.is_merged() {
            self.unmerge()?;
        }
        if let Some(adapter) = self.adapter.as_mut() {
            adapter.enabled = enabled;
        }
        Ok(())
    }

    /// Number of trainable parameters (A and B), 0 without an adapter.
    pub fn trainable_params(&self) -> usize {
        self.adapter
            .as_ref()
            .map_or(0, |a| a.rank * (self.in_features() + self.out_features()))
    }
}
