//! The frozen half of a [`LoraLinear`](super::LoraLinear).
//!
//! [`FrozenBase`] is what a frozen weight provides; [`DenseBase`] is the plain float
//! weight, [`PackedBase`](super::packed::PackedBase) an NF4 or int8 one, and
//! [`FrozenWeight`] either of them — the base every model's linears use, so one model
//! type serves quantised and unquantised runs.

use burn::module::{Module, Param};
use burn::tensor::{DType, FloatDType, Tensor, TensorData};

use crate::error::{Error, Result};

/// A frozen linear map `x ↦ xWᵀ + b` that a LoRA adapter sits beside.
///
/// Implementations never expose trainable parameters: the base must not receive a
/// gradient. `add_delta` exists for merge/unmerge; a packed base that can't absorb a
/// float delta returns [`Error::Unsupported`].
pub trait FrozenBase: Module {
    /// Input features.
    fn in_features(&self) -> usize;
    /// Output features.
    fn out_features(&self) -> usize;
    /// `x Wᵀ + b` for an input `[..., in]`.
    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D>;
    /// The (dequantised) weight in PEFT/PyTorch orientation `[out, in]`.
    fn weight_out_in(&self) -> Tensor<2>;
    /// The (dequantised) weight as stored for the forward, `[in, out]`.
    fn weight_in_out(&self) -> Tensor<2> {
        self.weight_out_in().transpose()
    }
    /// The bias, if any.
    fn bias(&self) -> Option<Tensor<1>>;
    /// `W ← W + Δ`, with `delta` given as `[in, out]` (the transposed PEFT orientation).
    fn add_delta(&mut self, delta_in_out: Tensor<2>) -> Result<()>;
}

/// How a dense frozen weight is stored (`--base-dtype`): f32, or half precision cast to f32
/// layer by layer in each forward (adapters, head and optimizer state stay f32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum BaseDtype {
    /// 32-bit float (the default).
    #[default]
    F32,
    /// IEEE half precision.
    F16,
    /// bfloat16 (f32's range, 8 bits of mantissa).
    Bf16,
}

impl BaseDtype {
    /// burn's dtype for it.
    pub fn dtype(self) -> DType {
        match self {
            BaseDtype::F32 => DType::F32,
            BaseDtype::F16 => DType::F16,
            BaseDtype::Bf16 => DType::BF16,
        }
    }

    /// burn's float dtype of the same name.
    pub fn float_dtype(self) -> FloatDType {
        match self {
            BaseDtype::F32 => FloatDType::F32,
            BaseDtype::F16 => FloatDType::F16,
            BaseDtype::Bf16 => FloatDType::BF16,
        }
    }

    /// Bytes per stored value.
    pub fn bytes(self) -> usize {
        match self {
            BaseDtype::F32 => 4,
            BaseDtype::F16 | BaseDtype::Bf16 => 2,
        }
    }
}

impl std::str::FromStr for BaseDtype {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "f32" => Ok(BaseDtype::F32),
            "f16" => Ok(BaseDtype::F16),
            "bf16" => Ok(BaseDtype::Bf16),
            other => Err(Error::Unsupported {
                what: "base dtype",
                detail: format!("`{other}` (f32, f16, bf16)"),
            }),
        }
    }
}

impl std::fmt::Display for BaseDtype {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            BaseDtype::F32 => "f32",
            BaseDtype::F16 => "f16",
            BaseDtype::Bf16 => "bf16",
        })
    }
}

/// A dense float weight, stored `[in, out]` so the forward is one matmul with no transpose.
#[derive(Module, Debug)]
pub struct DenseBase {
    /// Weight `[in, out]` (frozen).
    pub weight: Param<Tensor<2>>,
    /// Bias `[out]` (frozen).
    pub bias: Option<Param<Tensor<1>>>,
}

/// Give `param` a new value, keeping its id and whether it trains. (Gradients are tracked
/// per tensor: a tensor made from data does not require them, so putting one into a
/// trainable parameter with a bare `Param::map` silently freezes it.)
pub(crate) fn replace_value<const D: usize>(param: &mut Param<Tensor<D>>, value: Tensor<D>) {
    let trainable = param.is_require_grad();
    *param = param
        .clone()
        .map(|_| value.detach().set_require_grad(trainable));
}

/// `x·W + b` on `[..., in]` for a weight stored `[in, out]` (PyTorch's `x Wᵀ + b`), as one
/// 2-D product over all rows ([`crate::nn::linear_2d`]). A 3-D input would otherwise reach
/// burn's batched matmul, which on burn-flex runs one single-threaded gemm per batch element
/// and re-packs the weight for each.
pub fn linear_rows<const D: usize>(
    x: Tensor<D>,
    weight: Tensor<2>,
    bias: Option<Tensor<1>>,
) -> Tensor<D> {
    let out = weight.dims()[1];
    over_rows(x, out, |rows| crate::nn::linear_2d(rows, weight, bias))
}

/// `f` applied to `x [..., in]` folded to 2-D rows `[n, in]`, its `[n, out]` result unfolded.
pub(crate) fn over_rows<const D: usize>(
    x: Tensor<D>,
    out: usize,
    f: impl FnOnce(Tensor<2>) -> Tensor<2>,
) -> Tensor<D> {
    let mut dims = x.dims();
    let rows = dims[..D - 1].iter().product::<usize>();
    let y = f(x.reshape([rows, dims[D - 1]]));
    dims[D - 1] = out;
    y.reshape(dims)
}

/// Copy a transposed 2-D tensor into contiguous storage (a one-off cost at load time,
/// so every forward afterwards reads the weight in order).
pub(crate) fn transpose_contiguous(t: Tensor<2>) -> Tensor<2> {
    let (device, dtype) = (t.device(), t.dtype());
    let data: TensorData = t.transpose().into_data();
    Tensor::from_data(data, (&device, dtype))
}

impl DenseBase {
    /// Build from a PyTorch/PEFT-oriented weight `[out, in]` and optional bias `[out]`.
    pub fn from_out_in(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Result<Self> {
        let [out, _] = weight.dims();
        if let Some(b) = &bias
            && b.dims() != [out]
        {
            return Err(Error::ShapeMismatch {
                name: "bias".into(),
                expected: vec![out],
                actual: b.dims().to_vec(),
            });
        }
        Ok(Self::from_in_out(transpose_contiguous(weight), bias))
    }

    /// Build from a weight already laid out `[in, out]`.
    pub fn from_in_out(weight: Tensor<2>, bias: Option<Tensor<1>>) -> Self {
        DenseBase {
            weight: Param::from_tensor(weight.detach()).set_require_grad(false),
            bias: bias.map(|b| Param::from_tensor(b.detach()).set_require_grad(false)),
        }
    }

    /// How the weight is stored.
    pub fn dtype(&self) -> BaseDtype {
        match self.weight.val().dtype() {
            DType::F16 => BaseDtype::F16,
            DType::BF16 => BaseDtype::Bf16,
            _ => BaseDtype::F32,
        }
    }

    /// Store the weight as `dtype` (rounded to nearest); the bias stays f32.
    pub fn cast_to(&mut self, dtype: BaseDtype) {
        let weight = self.weight.val().detach().cast(dtype.float_dtype());
        self.weight = Param::from_tensor(weight).set_require_grad(false);
    }

    /// The weight `[in, out]` in f32, cast from its storage when that is half precision.
    fn weight_f32(&self) -> Tensor<2> {
        let weight = self.weight.val();
        if weight.dtype() == DType::F32 {
            weight
        } else {
            weight.cast(FloatDType::F32)
        }
    }
}

impl FrozenBase for DenseBase {
    fn in_features(&self) -> usize {
        self.weight.shape().dims::<2>()[0]
    }

    fn out_features(&self) -> usize {
        self.weight.shape().dims::<2>()[1]
    }

    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let (weight, bias) = (self.weight.val(), self.bias.as_ref().map(|b| b.val()));
        if weight.dtype() == DType::F32 {
            return linear_rows(x, weight, bias);
        }
        // Half precision: cast inside the product, and again in its backward.
        over_rows(x, self.out_features(), |rows| {
            let y = crate::nn::matmul_cast(rows, weight);
            match bias {
                Some(bias) => y + bias.unsqueeze::<2>(),
                None => y,
            }
        })
    }

    fn weight_out_in(&self) -> Tensor<2> {
        self.weight_f32().transpose()
    }

    fn weight_in_out(&self) -> Tensor<2> {
        self.weight_f32()
    }

    fn bias(&self) -> Option<Tensor<1>> {
        self.bias.as_ref().map(|b| b.val())
    }

    fn add_delta(&mut self, delta_in_out: Tensor<2>) -> Result<()> {
        let expected = [self.in_features(), self.out_features()];
        if delta_in_out.dims() != expected {
            return Err(Error::ShapeMismatch {
                name: "merge delta".into(),
                expected: expected.to_vec(),
                actual: delta_in_out.dims().to_vec(),
            });
        }
        // In f32, stored back in the weight's own dtype (a half-precision base rounds the
        // merged weight, as PEFT's merge into a bf16 base does).
        let stored = self.dtype();
        let merged = (self.weight_f32() + delta_in_out.detach()).detach();
        self.weight = Param::from_tensor(merged).set_require_grad(false);
        self.cast_to(stored);
        Ok(())
    }
}

/// A frozen weight, dense or packed: the base of every model's linears.
#[derive(Module, Debug)]
pub enum FrozenWeight {
    /// Float weight.
    Dense(DenseBase),
    /// NF4 or int8, dequantised per forward.
    Packed(super::packed::PackedBase),
}

impl FrozenWeight {
    /// The dense base, unless the weight is packed.
    pub fn dense(&self) -> Option<&DenseBase> {
        match self {
            FrozenWeight::Dense(d) => Some(d),
            FrozenWeight::Packed(_) => None,
        }
    }

    /// The packed base, if the weight is packed.
    pub fn packed(&self) -> Option<&super::packed::PackedBase> {
        match self {
            FrozenWeight::Dense(_) => None,
            FrozenWeight::Packed(p) => Some(p),
        }
    }
}

/// Run `$body` with `$b` bound to the variant's base.
macro_rules! each_base {
    ($value:expr, $b:ident => $body:expr) => {
        match $value {
            FrozenWeight::Dense($b) => $body,
            FrozenWeight::Packed($b) => $body,
        }
    };
}

impl FrozenBase for FrozenWeight {
    fn in_features(&self) -> usize {
        each_base!(self, b => b.in_features())
    }

    fn out_features(&self) -> usize {
        each_base!(self, b => b.out_features())
    }

    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        each_base!(self, b => b.forward(x))
    }

    fn weight_out_in(&self) -> Tensor<2> {
        each_base!(self, b => b.weight_out_in())
    }

    fn weight_in_out(&self) -> Tensor<2> {
        each_base!(self, b => b.weight_in_out())
    }

    fn bias(&self) -> Option<Tensor<1>> {
        each_base!(self, b => b.bias())
    }

    fn add_delta(&mut self, delta_in_out: Tensor<2>) -> Result<()> {
        each_base!(self, b => b.add_delta(delta_in_out))
    }
}

/// What [`cast_frozen`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CastReport {
    /// Linears whose weight was cast.
    pub layers: usize,
    /// Their weights' bytes before.
    pub bytes_before: usize,
    /// Their weights' bytes after.
    pub bytes_after: usize,
}

/// The half-precision dtype `model`'s dense frozen weights are stored in, if any (what
/// [`cast_frozen`] set); `None` for an f32 (or packed) base.
pub fn half_base_dtype<M: super::LoraTargets>(model: &M) -> Result<Option<BaseDtype>> {
    let mut found = None;
    model.read_linears("", &mut |_, linear| {
        if let (None, FrozenWeight::Dense(dense)) = (found, &linear.base)
            && dense.dtype() != BaseDtype::F32
        {
            found = Some(dense.dtype());
        }
        Ok(())
    })?;
    Ok(found)
}

/// The dense frozen linears of `model` stored in half precision (what
/// [`LoadOptions::dtype`](crate::models::LoadOptions::dtype) loaded or [`cast_frozen`]
/// set): how many, their bytes as f32 (`bytes_before`) and as stored (`bytes_after`).
pub fn half_base_report<M: super::LoraTargets>(model: &M) -> Result<CastReport> {
    let mut report = CastReport::default();
    model.read_linears("", &mut |_, linear| {
        if let FrozenWeight::Dense(dense) = &linear.base
            && dense.dtype() != BaseDtype::F32
        {
            let values = dense.in_features() * dense.out_features();
            report.layers += 1;
            report.bytes_before += values * BaseDtype::F32.bytes();
            report.bytes_after += values * dense.dtype().bytes();
        }
        Ok(())
    })?;
    Ok(report)
}

/// Store every dense frozen linear weight of `model` as `dtype` (the `--base-dtype` of the
/// finetune example). Packed bases are refused: they have their own storage.
pub fn cast_frozen<M: super::LoraTargets>(model: &mut M, dtype: BaseDtype) -> Result<CastReport> {
    let mut report = CastReport::default();
    model.visit_linears("", &mut |path, linear| {
        let FrozenWeight::Dense(dense) = &mut linear.base else {
            return Err(Error::Unsupported {
                what: "base dtype",
                detail: format!("{path}: {dtype} over a packed (quantised) base"),
            });
        };
        let values = dense.in_features() * dense.out_features();
        report.layers += 1;
        report.bytes_before += values * dense.dtype().bytes();
        report.bytes_after += values * dtype.bytes();
        dense.cast_to(dtype);
        Ok(())
    })?;
    Ok(report)
}
