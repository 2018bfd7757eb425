//! `LoraLinear`: a frozen linear plus a low-rank adapter, computed the way PEFT does.

use burn::module::{Module, Param};
use burn::nn::{Dropout, DropoutConfig};
use burn::tensor::{Device, Distribution, Tensor, TensorData};

use super::base::{
    DenseBase, FrozenBase, FrozenWeight, linear_rows, over_rows, replace_value,
    transpose_contiguous,
};
use super::config::{InitLoraWeights, ModuleLoraParams};
use super::decompose::{factor_job, run_job};
use super::init::init_factors;
use crate::error::{Error, Result};
use burn_lora_kernels::decompose::{FactorJob, Factors};

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
    /// DoRA's magnitude per output row, `[out]` (PEFT's `lora_magnitude_vector`); `None`
    /// for plain LoRA.
    pub(crate) magnitude: Option<Param<Tensor<1>>>,
    /// DoRA: the row norms `‖W + s·BA‖` a merge divided by, so unmerge undoes it exactly.
    pub(crate) merged_norm: Option<Tensor<1>>,
    /// PiSSA/OLoRA: the starting `A₀ [r, in]` and `B₀ [out, r]` (PEFT's orientation)
    /// whose `s·B₀A₀` was taken out of the base. Saving writes the adapter as the plain
    /// LoRA `[A; A₀]`, `[B, −B₀]` of rank 2r, which applies to the original base.
    pub(crate) initial: Option<InitialFactors>,
}

/// What a PiSSA/OLoRA adapter took out of its base (see [`LoraWeights`]).
#[derive(Module, Debug)]
pub struct InitialFactors {
    /// `A₀`, `[r, in]`.
    pub(crate) a: Tensor<2>,
    /// `B₀`, `[out, r]`.
    pub(crate) b: Tensor<2>,
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

    /// Whether this is a DoRA adapter (it carries a magnitude vector).
    pub fn is_dora(&self) -> bool {
        self.magnitude.is_some()
    }

    /// Whether the factors started from the base weight (PiSSA, OLoRA), which holds the
    /// residual.
    pub fn took_from_base(&self) -> bool {
        self.initial.is_some()
    }
}

/// A linear layer with an optional LoRA adapter:
/// `y = x Wᵀ + b + s · (dropout(x) Aᵀ) Bᵀ`.
///
/// With DoRA (PEFT's `use_dora`), each output row is rescaled by `g = m / ‖W + s·BA‖_row`
/// (the norm held constant for gradients, as PEFT detaches it), where `m` is a trained
/// magnitude: `y = g ⊙ (x Wᵀ + s·(x Aᵀ) Bᵀ) + b` without dropout, and while dropout is active
/// (`d = dropout(x)`) PEFT's `y = x Wᵀ + b + (g − 1) ⊙ d Wᵀ + g ⊙ s·(d Aᵀ) Bᵀ`.
///
/// Without an adapter it is exactly the frozen base: a [`FrozenWeight`], dense
/// ([`DenseBase`], f32 or half precision) or packed (NF4, int8, GGUF blocks).
#[derive(Module, Debug)]
pub struct LoraLinear {
    /// The frozen base layer.
    pub base: FrozenWeight,
    /// The adapter, when this layer is targeted.
    pub adapter: Option<LoraWeights>,
}

impl LoraLinear {
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

    /// Wrap a frozen base, with no adapter yet.
    pub fn new(base: FrozenWeight) -> Self {
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
        self.attach_adapter_with(params, dropout, init, None, device)
    }

    /// [`attach_adapter`](Self::attach_adapter), PiSSA's/OLoRA's factors given when they
    /// were computed ahead (`inject_adapters` runs the layers' decompositions in parallel).
    pub(crate) fn attach_adapter_with(
        &mut self,
        params: ModuleLoraParams,
        dropout: f64,
        init: &InitLoraWeights,
        precomputed: Option<Factors>,
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
        let (a, b, initial) = if init.takes_base() {
            let factors = match precomputed {
                Some(factors) => factors,
                None => run_job(init, &self.factor_job(init, &params, device)?)?,
            };
            let (a, b) = self.take_factors(factors, &params, device)?;
            let initial = InitialFactors {
                a: a.clone(),
                b: b.clone(),
            };
            (a, b, Some(initial))
        } else {
            let (a, b) = init_factors(
                init,
                params.r,
                self.in_features(),
                self.out_features(),
                device,
            );
            (a, b, None)
        };
        let mut adapter = LoraWeights {
            a: Param::from_tensor(transpose_contiguous(a)),
            b: Param::from_tensor(transpose_contiguous(b)),
            dropout: DropoutConfig::new(dropout).init(),
            rank: params.r,
            alpha: params.alpha,
            scaling: params.scaling,
            enabled: true,
            merged: false,
            magnitude: None,
            merged_norm: None,
            initial,
        };
        if params.dora {
            // PEFT's DoRA init: m = ‖W + s·BA‖ per row, after A and B are drawn (‖W‖
            // under the default B = 0).
            let norm = self.dora_weight_norm(&adapter);
            adapter.magnitude = Some(Param::from_tensor(norm.detach()));
        }
        self.adapter = Some(adapter);
        Ok(())
    }

    /// The decomposition PiSSA or OLoRA runs on this layer's weight (the weight copied to
    /// the host, `pissa_niter_K`'s random sketch drawn from the device's generator).
    pub(crate) fn factor_job(
        &self,
        init: &InitLoraWeights,
        params: &ModuleLoraParams,
        device: &Device,
    ) -> Result<FactorJob> {
        if self.base.packed().is_some() {
            return Err(Error::Unsupported {
                what: "init_lora_weights",
                detail: format!(
                    "{init:?} rewrites the frozen weight, which a packed (nf4/int8/GGUF) base \
                     cannot hold: initialise on a float base"
                ),
            });
        }
        let weight = self
            .base
            .weight_out_in()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::InvalidState(format!("reading a weight: {e:?}")))?;
        let gaussian = |rows: usize, cols: usize| -> Vec<f64> {
            Tensor::<2>::random([rows, cols], Distribution::Normal(0.0, 1.0), device)
                .into_data()
                .convert::<f64>()
                .try_into_vec::<f64>()
                .unwrap_or_default()
        };
        let dims = [self.out_features(), self.in_features()];
        factor_job(init, weight, dims, params.r, params.scaling, gaussian)
    }

    /// The computed factors as PEFT-oriented `(A [r, in], B [out, r])` tensors, taken out of
    /// the base (`W ← W − s·BA`).
    fn take_factors(
        &mut self,
        factors: Factors,
        params: &ModuleLoraParams,
        device: &Device,
    ) -> Result<(Tensor<2>, Tensor<2>)> {
        let (inp, out) = (self.in_features(), self.out_features());
        for (name, len, expected) in [
            ("lora_A", factors.a.len(), params.r * inp),
            ("lora_B", factors.b.len(), out * params.r),
        ] {
            if len != expected {
                return Err(Error::ShapeMismatch {
                    name: name.into(),
                    expected: vec![expected],
                    actual: vec![len],
                });
            }
        }
        let a = Tensor::<2>::from_data(TensorData::new(factors.a, [params.r, inp]), device);
        let b = Tensor::<2>::from_data(TensorData::new(factors.b, [out, params.r]), device);
        self.take_from_base(&a, &b, params.scaling)?;
        Ok((a, b))
    }

    /// `W ← W − s·BA` for PEFT-oriented factors, in f32 as PEFT computes it.
    fn take_from_base(&mut self, a: &Tensor<2>, b: &Tensor<2>, scaling: f64) -> Result<()> {
        let product = b.clone().matmul(a.clone()).mul_scalar(-scaling);
        self.base.add_delta(product.transpose())
    }

    /// DoRA's `‖W + s·BA‖` per output row, `[out]`, as a constant (no gradient).
    fn dora_weight_norm(&self, adapter: &LoraWeights) -> Tensor<1> {
        Self::dora_norm_of(self.base.weight_in_out().detach(), adapter)
    }

    /// [`dora_weight_norm`](Self::dora_weight_norm) for a frozen weight `[in, out]` already
    /// at hand (a packed base dequantises once per forward, not twice).
    fn dora_norm_of(weight_in_out: Tensor<2>, adapter: &LoraWeights) -> Tensor<1> {
        row_norms(weight_in_out + Self::delta_in_out(adapter))
    }

    /// The adapter, for replacing its weights: there must be one, and unmerged (new
    /// weights under a merged base would leave the base holding the old ones).
    fn replaceable_adapter(&mut self) -> Result<&mut LoraWeights> {
        let adapter = self
            .adapter
            .as_mut()
            .ok_or_else(|| Error::InvalidState("layer has no adapter".into()))?;
        if adapter.merged {
            return Err(Error::InvalidState(
                "cannot replace the weights of a merged adapter; unmerge first".into(),
            ));
        }
        Ok(adapter)
    }

    /// Replace a DoRA adapter's magnitude vector (`[out]`, PEFT's `lora_magnitude_vector`).
    pub fn set_lora_magnitude(&mut self, magnitude: Tensor<1>) -> Result<()> {
        let out = self.out_features();
        let adapter = self.replaceable_adapter()?;
        let Some(param) = adapter.magnitude.as_mut() else {
            return Err(Error::InvalidState(
                "a magnitude vector for an adapter without DoRA".into(),
            ));
        };
        if magnitude.dims() != [out] {
            return Err(Error::ShapeMismatch {
                name: "lora_magnitude_vector".into(),
                expected: vec![out],
                actual: magnitude.dims().to_vec(),
            });
        }
        replace_value(param, magnitude);
        Ok(())
    }

    /// Set a DoRA adapter's magnitude to its starting value for the current W, A and B:
    /// `m = ‖W + s·BA‖` per output row, as [`attach_adapter`](Self::attach_adapter) does
    /// (PEFT's `DoraLinearLayer.update_layer`). Useful after replacing A and B.
    pub fn reset_dora_magnitude(&mut self) -> Result<()> {
        let norm = match &self.adapter {
            Some(adapter) if adapter.is_dora() && !adapter.merged => self.dora_weight_norm(adapter),
            _ => {
                return Err(Error::InvalidState(
                    "no unmerged DoRA adapter on this layer".into(),
                ));
            }
        };
        self.set_lora_magnitude(norm)
    }

    /// DoRA's magnitude vector `[out]`, for a DoRA adapter.
    pub fn lora_magnitude(&self) -> Option<Tensor<1>> {
        self.adapter
            .as_ref()
            .and_then(|a| a.magnitude.as_ref())
            .map(|m| m.val())
    }

    /// PiSSA/OLoRA: the starting `(A₀ [r, in], B₀ [out, r])` taken out of the base.
    pub fn initial_factors(&self) -> Option<(Tensor<2>, Tensor<2>)> {
        let initial = self.adapter.as_ref()?.initial.as_ref()?;
        Some((initial.a.clone(), initial.b.clone()))
    }

    /// Put back a PiSSA/OLoRA adapter as it was while training, on the original base:
    /// take `s·B₀A₀` out of the base again and set the trained `A`, `B` (all PEFT-oriented).
    /// The layer must hold a fresh adapter of the same rank that took nothing yet (what
    /// resuming a run does with a saved, converted adapter).
    pub fn restore_taken_from_base(
        &mut self,
        a: Tensor<2>,
        b: Tensor<2>,
        a0: Tensor<2>,
        b0: Tensor<2>,
    ) -> Result<()> {
        let (r, scaling, took) = {
            let adapter = self.replaceable_adapter()?;
            (adapter.rank, adapter.scaling, adapter.took_from_base())
        };
        if took {
            return Err(Error::InvalidState(
                "the adapter already took its factors from the base".into(),
            ));
        }
        let (in_f, out_f) = (self.in_features(), self.out_features());
        check_factor_shapes(["A0", "B0"], &a0, &b0, r, in_f, out_f)?;
        self.set_lora_weights(a, b)?;
        self.take_from_base(&a0, &b0, scaling)?;
        if let Some(adapter) = self.adapter.as_mut() {
            adapter.initial = Some(InitialFactors { a: a0, b: b0 });
        }
        Ok(())
    }

    /// Replace the adapter's factors with PEFT-oriented `A [r, in]` and `B [out, r]`
    /// (e.g. loaded from `adapter_model.safetensors`).
    pub fn set_lora_weights(&mut self, a: Tensor<2>, b: Tensor<2>) -> Result<()> {
        let (in_f, out_f) = (self.in_features(), self.out_features());
        let adapter = self.replaceable_adapter()?;
        check_factor_shapes(["lora_A", "lora_B"], &a, &b, adapter.rank, in_f, out_f)?;
        replace_value(&mut adapter.a, transpose_contiguous(a));
        replace_value(&mut adapter.b, transpose_contiguous(b));
        Ok(())
    }

    /// Forward pass on `[..., in]`: the base output plus the scaled adapter path, as
    /// PEFT's `lora.Linear.forward` (dropout only while training, skipped when merged or disabled).
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        match &self.adapter {
            Some(adapter) if adapter.enabled && !adapter.merged && adapter.is_dora() => {
                let out = self.out_features();
                over_rows(x, out, |x| self.dora_forward(adapter, x))
            }
            Some(adapter) if adapter.enabled && !adapter.merged => {
                let base = self.base.forward(x.clone());
                let [rank, out] = adapter.b.dims();
                let h = over_rows(x, rank, |rows| {
                    crate::nn::dropout_linear(&adapter.dropout, rows, adapter.a.val())
                });
                // `base + s·(h·B)` as one product accumulating onto the base output.
                over_rows(base, out, |base| {
                    let rows = base.dims()[0];
                    let h = h.reshape([rows, rank]);
                    crate::nn::add_product(base, h, adapter.b.val(), adapter.scaling as f32)
                })
            }
            _ => self.base.forward(x),
        }
    }

    /// DoRA's forward on rows `[n, in]`, in PEFT's order of operations
    /// (`DoraLinearLayer.forward` and `DoraLinearVariant.forward`).
    fn dora_forward(&self, adapter: &LoraWeights, x: Tensor<2>) -> Tensor<2> {
        let out = self.out_features();
        let magnitude = adapter.magnitude.as_ref().expect("a DoRA adapter").val();
        let result = self.base.forward(x.clone());
        let dropout_active = crate::nn::dropout_is_active(&adapter.dropout, &x.device());
        let h = crate::nn::dropout(&adapter.dropout, x);
        let weight = self.base.weight_in_out().detach();
        let scale = magnitude
            .div(Self::dora_norm_of(weight.clone(), adapter))
            .reshape([1, out]);
        let lora = linear_rows(
            linear_rows(h.clone(), adapter.a.val(), None),
            adapter.b.val(),
            None,
        );
        // The base output without its bias: the dropped-out input's own product while
        // dropout is active, the layer's output less the bias otherwise.
        let base = if dropout_active {
            linear_rows(h, weight, None)
        } else {
            match self.base.bias() {
                Some(bias) => result.clone() - bias.reshape([1, out]),
                None => result.clone(),
            }
        };
        let dora = (scale.clone() - 1.0) * base + scale * lora.mul_scalar(adapter.scaling);
        result + dora
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
        let Some(magnitude) = &adapter.magnitude else {
            self.base.add_delta(delta)?;
            if let Some(adapter) = self.adapter.as_mut() {
                adapter.merged = true;
            }
            return Ok(());
        };
        // DoRA: W' = (m / ‖W + s·BA‖) ⊙ (W + s·BA) per output row (PEFT's merge).
        let out = self.out_features();
        let weight = self.base.weight_in_out().detach();
        let combined = weight.clone() + delta;
        let norm = row_norms(combined.clone());
        let scale = magnitude.val().detach().div(norm.clone()).reshape([1, out]);
        self.base.add_delta(combined * scale - weight)?;
        if let Some(adapter) = self.adapter.as_mut() {
            adapter.merged = true;
            adapter.merged_norm = Some(norm);
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
        let delta = Self::delta_in_out(adapter);
        match (&adapter.magnitude, &adapter.merged_norm) {
            // DoRA: W = W' / (m / n) − s·BA with the merge's own norms n.
            (Some(magnitude), Some(norm)) => {
                let out = self.out_features();
                let scale = magnitude.val().detach().div(norm.clone()).reshape([1, out]);
                let merged = self.base.weight_in_out().detach();
                let weight = merged.clone() / scale - delta;
                self.base.add_delta(weight - merged)?;
            }
            (Some(_), None) => {
                return Err(Error::InvalidState(
                    "unmerge: a DoRA merge without its norms".into(),
                ));
            }
            (None, _) => self.base.add_delta(delta.neg())?,
        }
        if let Some(adapter) = self.adapter.as_mut() {
            adapter.merged = false;
            adapter.merged_norm = None;
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

    /// Number of trainable parameters (A and B, and DoRA's magnitudes), 0 without an
    /// adapter.
    pub fn trainable_params(&self) -> usize {
        self.adapter.as_ref().map_or(0, |a| {
            let magnitudes = if a.is_dora() { self.out_features() } else { 0 };
            a.rank * (self.in_features() + self.out_features()) + magnitudes
        })
    }
}

/// PEFT-oriented factors of rank `r`: `A [r, in]` and `B [out, r]`, else a shape error
/// naming the one that is not.
fn check_factor_shapes(
    [name_a, name_b]: [&str; 2],
    a: &Tensor<2>,
    b: &Tensor<2>,
    r: usize,
    in_f: usize,
    out_f: usize,
) -> Result<()> {
    for (name, t, expected) in [(name_a, a, [r, in_f]), (name_b, b, [out_f, r])] {
        if t.dims() != expected {
            return Err(Error::ShapeMismatch {
                name: name.into(),
                expected: expected.to_vec(),
                actual: t.dims().to_vec(),
            });
        }
    }
    Ok(())
}

/// The L2 norm of each output row of a weight stored `[in, out]`: `[out]`.
fn row_norms(w_in_out: Tensor<2>) -> Tensor<1> {
    let out = w_in_out.dims()[1];
    w_in_out.powi_scalar(2).sum_dim(0).sqrt().reshape([out])
}
