//! Frozen weights kept packed — NF4 as QLoRA (bitsandbytes' `quantize_4bit`, blocks of
//! 64), int8 with one absmax per row, or a GGUF file's own llama.cpp blocks — and
//! dequantised per forward.
//!
//! The packed bytes stay in host memory beside the module (they are not parameters: the
//! base never trains and is never saved with an adapter); each forward dequantises the
//! layer's weight on all cores for its product ([`crate::nn::matmul_packed`], which reads
//! it transposed in place). The dense copy lives only while that product runs: on burn-flex
//! the training graph keeps the packed handle and the backward dequantises again; on other
//! backends autodiff keeps the dense copy until the backward.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{Device, Tensor, TensorData};
use burn_lora_kernels as kernels;

use crate::io::gguf::{GgmlType, dequantize as dequantize_ggml};

use super::base::{DenseBase, FrozenBase, over_rows};
use crate::error::{Error, Result};
use crate::nn::PackedMatrix;

/// How to store a frozen weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Quantization {
    /// 4-bit NormalFloat in blocks of 64 with an f32 absmax each (4.5 bits per weight).
    Nf4,
    /// NF4 with QLoRA's double quantisation (bitsandbytes' `compress_statistics`,
    /// transformers' `bnb_4bit_use_double_quant`): the absmax in 8 bits (≈ 4.13 bits per
    /// weight).
    #[serde(rename = "nf4-dq")]
    Nf4Double,
    /// 8-bit, one f32 absmax per output row (≈ 8 bits per weight).
    Int8,
    /// A GGUF checkpoint's own quantised blocks (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, ...) kept as
    /// stored, instead of dequantised at load; its float tensors stay float.
    Keep,
}

impl std::str::FromStr for Quantization {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "nf4" => Ok(Quantization::Nf4),
            "nf4-dq" => Ok(Quantization::Nf4Double),
            "int8" => Ok(Quantization::Int8),
            "keep" => Ok(Quantization::Keep),
            other => Err(Error::Unsupported {
                what: "quantization",
                detail: format!("`{other}` (nf4, nf4-dq, int8, keep)"),
            }),
        }
    }
}

impl std::fmt::Display for Quantization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Quantization::Nf4 => "nf4",
            Quantization::Nf4Double => "nf4-dq",
            Quantization::Int8 => "int8",
            Quantization::Keep => "keep",
        })
    }
}

/// The NF4 block size QLoRA uses.
pub const NF4_BLOCKSIZE: usize = 64;

/// A weight `[out, in]` in packed form.
#[derive(Debug, Clone)]
pub enum PackedWeight {
    /// NF4 blocks of the row-major `[out, in]` values.
    Nf4(kernels::nf4::Nf4),
    /// NF4 blocks with double-quantised scales.
    Nf4Double(kernels::nf4::Nf4Double),
    /// Int8 rows of `[out, in]`.
    Int8(kernels::int8::Int8Rows),
    /// The llama.cpp blocks a GGUF file stores `[out, in]` in.
    Gguf(GgufBlocks),
}

impl PackedWeight {
    /// Pack the row-major `[out, in]` values of a weight. Non-finite values are refused:
    /// their block's scale would turn every value of the block into NaN.
    /// [`Quantization::Keep`] packs nothing (it keeps blocks a file already has): an error.
    pub fn pack(values: &[f32], out: usize, r#in: usize, how: Quantization) -> Result<Self> {
        if how == Quantization::Keep {
            return Err(Error::Unsupported {
                what: "quantization",
                detail: "`keep` keeps the quantised blocks a GGUF checkpoint stores; this \
                         weight is float (use nf4 or int8 to quantise it)"
                    .into(),
            });
        }
        if values.len() != out * r#in || out == 0 || r#in == 0 {
            return Err(Error::ShapeMismatch {
                name: "weight to quantise".into(),
                expected: vec![out, r#in],
                actual: vec![values.len()],
            });
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidState(format!(
                "weight value {i} is {}: cannot quantise a non-finite weight",
                values[i]
            )));
        }
        Ok(match how {
            Quantization::Nf4 => PackedWeight::Nf4(kernels::nf4::quantize(values, NF4_BLOCKSIZE)),
            Quantization::Nf4Double => PackedWeight::Nf4Double(
                kernels::nf4::quantize(values, NF4_BLOCKSIZE).compress_statistics(),
            ),
            Quantization::Int8 => PackedWeight::Int8(kernels::int8::quantize(values, r#in)),
            Quantization::Keep => unreachable!("refused above"),
        })
    }

    /// Which format.
    pub fn quantization(&self) -> Quantization {
        match self {
            PackedWeight::Nf4(_) => Quantization::Nf4,
            PackedWeight::Nf4Double(_) => Quantization::Nf4Double,
            PackedWeight::Int8(_) => Quantization::Int8,
            PackedWeight::Gguf(_) => Quantization::Keep,
        }
    }

    /// The dequantised row-major `[out, in]` values.
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            PackedWeight::Nf4(q) => q.dequantize(),
            PackedWeight::Nf4Double(q) => q.dequantize(),
            PackedWeight::Int8(q) => q.dequantize(),
            PackedWeight::Gguf(q) => q.dequantize(),
        }
    }

    /// Bytes held at rest (packed values and scales).
    pub fn stored_bytes(&self) -> usize {
        match self {
            PackedWeight::Nf4(q) => q.stored_bytes(),
            PackedWeight::Nf4Double(q) => q.stored_bytes(),
            PackedWeight::Int8(q) => q.stored_bytes(),
            PackedWeight::Gguf(q) => q.bytes.len(),
        }
    }

    /// Check that the parts fit together and every scale is a finite, non-negative
    /// number (a corrupt block otherwise dequantises to NaN or garbage silently); GGUF
    /// blocks, whose scales sit inside each block, must dequantise to finite values.
    pub fn validate(&self, out: usize, r#in: usize) -> Result<()> {
        let n = out * r#in;
        if let PackedWeight::Gguf(q) = self {
            if [q.rows, q.cols] != [out, r#in] {
                return Err(Error::ShapeMismatch {
                    name: format!("{:?} weight", q.ty),
                    expected: vec![out, r#in],
                    actual: vec![q.rows, q.cols],
                });
            }
            return match q.dequantize().iter().position(|v| !v.is_finite()) {
                Some(i) => Err(Error::InvalidState(format!(
                    "{:?} weight value {i} (row {}) dequantises to a non-finite number: a \
                     block is corrupt",
                    q.ty,
                    i / r#in
                ))),
                None => Ok(()),
            };
        }
        let (ok, scales) = match self {
            PackedWeight::Nf4(q) => (
                q.len == n
                    && q.blocksize > 0
                    && q.packed.len() == n.div_ceil(2)
                    && q.absmax.len() == n.div_ceil(q.blocksize),
                &q.absmax,
            ),
            PackedWeight::Nf4Double(q) => {
                if !q.absmax.offset.is_finite() {
                    return Err(Error::InvalidState(format!(
                        "nf4-dq scale offset is {}: the weight is corrupt",
                        q.absmax.offset
                    )));
                }
                let blocks = n.div_ceil(q.blocksize.max(1));
                (
                    q.len == n
                        && q.blocksize > 0
                        && q.packed.len() == n.div_ceil(2)
                        && q.absmax.codes.len() == blocks
                        && q.absmax.scales.len() == blocks.div_ceil(kernels::nf4::ABSMAX_BLOCKSIZE),
                    &q.absmax.scales,
                )
            }
            PackedWeight::Int8(q) => (
                q.cols == r#in && q.values.len() == n && q.absmax.len() == out,
                &q.absmax,
            ),
            PackedWeight::Gguf(_) => unreachable!("checked above"),
        };
        if !ok {
            return Err(Error::ShapeMismatch {
                name: format!("{} weight", self.quantization()),
                expected: vec![out, r#in],
                actual: vec![self.dequantize_len()],
            });
        }
        if let Some(i) = scales.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
            return Err(Error::InvalidState(format!(
                "{} block {i} has scale {}: the weight is corrupt",
                self.quantization(),
                scales[i]
            )));
        }
        Ok(())
    }

    fn dequantize_len(&self) -> usize {
        match self {
            PackedWeight::Nf4(q) => q.len,
            PackedWeight::Nf4Double(q) => q.len,
            PackedWeight::Int8(q) => q.values.len(),
            PackedWeight::Gguf(q) => q.rows * q.cols,
        }
    }
}

/// A `[rows, cols]` weight in the llama.cpp blocks a GGUF file stores it in (each row a
/// whole number of blocks), dequantised by the GGUF reader's dequantiser, rows in parallel.
#[derive(Debug, Clone)]
pub struct GgufBlocks {
    ty: GgmlType,
    bytes: Vec<u8>,
    rows: usize,
    cols: usize,
}

impl GgufBlocks {
    /// `rows` rows of `cols` values stored as `ty` in `bytes`, which must hold exactly
    /// that many whole blocks per row.
    pub fn new(ty: GgmlType, bytes: Vec<u8>, rows: usize, cols: usize) -> Result<Self> {
        let (per_block, block_bytes) = ty.block_layout();
        let fits = rows > 0
            && cols > 0
            && cols.is_multiple_of(per_block)
            && Some(bytes.len()) == (cols / per_block * block_bytes).checked_mul(rows);
        if !fits {
            return Err(Error::ShapeMismatch {
                name: format!("{ty:?} blocks ({} bytes)", bytes.len()),
                expected: vec![rows, cols],
                actual: vec![bytes.len() / block_bytes * per_block],
            });
        }
        Ok(GgufBlocks {
            ty,
            bytes,
            rows,
            cols,
        })
    }

    /// The block type.
    pub fn ggml_type(&self) -> GgmlType {
        self.ty
    }

    /// The row-major `[rows, cols]` values.
    pub fn dequantize(&self) -> Vec<f32> {
        let (per_block, block_bytes) = self.ty.block_layout();
        let row_bytes = self.cols / per_block * block_bytes;
        let rows_per_task = kernels::CHUNK / self.cols + 1;
        kernels::rows_parallel(self.rows, self.cols, rows_per_task, |first, n| {
            dequantize_ggml(
                self.ty,
                &self.bytes[first * row_bytes..(first + n) * row_bytes],
            )
        })
    }
}

/// A frozen linear whose weight is stored packed and dequantised in each forward.
#[derive(Module, Debug)]
pub struct PackedBase {
    /// The packed `[out, in]` weight (host memory, shared by clones of the module).
    #[module(skip)]
    weight: Arc<PackedWeight>,
    /// `[out, in]`.
    #[module(skip)]
    shape: [usize; 2],
    /// Where dequantised weights go outside a forward (`weight_out_in`). (Not named
    /// `device`: the derive's generated methods take a parameter of that name.)
    #[module(skip)]
    home: Device,
    /// Bias `[out]` (frozen, kept in float as bitsandbytes does).
    pub bias: Option<Param<Tensor<1>>>,
}

impl PackedBase {
    /// From a packed `[out, in]` weight and an optional bias `[out]`; the parts are
    /// checked against the shape.
    pub fn new(
        weight: PackedWeight,
        shape: [usize; 2],
        bias: Option<Tensor<1>>,
        device: &Device,
    ) -> Result<Self> {
        weight.validate(shape[0], shape[1])?;
        if let Some(b) = &bias
            && b.dims() != [shape[0]]
        {
            return Err(Error::ShapeMismatch {
                name: "bias".into(),
                expected: vec![shape[0]],
                actual: b.dims().to_vec(),
            });
        }
        Ok(PackedBase {
            weight: Arc::new(weight),
            shape,
            home: device.clone(),
            bias: bias.map(|b| Param::from_tensor(b.detach()).set_require_grad(false)),
        })
    }

    /// Pack a dense base.
    pub fn from_dense(dense: &DenseBase, how: Quantization) -> Result<Self> {
        let [out, r#in] = [dense.out_features(), dense.in_features()];
        let values = dense
            .weight_out_in()
            .into_data()
            .convert::<f32>()
            .try_into_vec::<f32>()
            .map_err(|e| Error::InvalidState(format!("reading a weight to quantise: {e:?}")))?;
        let packed = PackedWeight::pack(&values, out, r#in, how)?;
        Self::new(
            packed,
            [out, r#in],
            dense.bias(),
            &dense.weight.val().device(),
        )
    }

    /// The packed weight.
    pub fn packed(&self) -> &PackedWeight {
        &self.weight
    }
}

impl FrozenBase for PackedBase {
    fn in_features(&self) -> usize {
        self.shape[1]
    }

    fn out_features(&self) -> usize {
        self.shape[0]
    }

    fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        let [out, r#in] = self.shape;
        let packed = Arc::clone(&self.weight);
        let weight = PackedMatrix::new(out, r#in, move || packed.dequantize());
        over_rows(x, out, |rows| {
            let y = crate::nn::matmul_packed(rows, &weight);
            match &self.bias {
                Some(bias) => y + bias.val().unsqueeze::<2>(),
                None => y,
            }
        })
    }

    fn weight_out_in(&self) -> Tensor<2> {
        Tensor::from_data(
            TensorData::new(self.weight.dequantize(), self.shape),
            &self.home,
        )
    }

    fn bias(&self) -> Option<Tensor<1>> {
        self.bias.as_ref().map(|b| b.val())
    }

    /// Merging into a packed weight would requantise it (PEFT warns that this loses
    /// precision); burn-lora refuses: merge on the dense base, or keep the adapter apart.
    fn add_delta(&mut self, _delta_in_out: Tensor<2>) -> Result<()> {
        Err(Error::Unsupported {
            what: "merge",
            detail: format!(
                "into a {} weight (requantising would lose the adapter's precision); \
                 keep the adapter unmerged or load the base unquantised",
                self.weight.quantization()
            ),
        })
    }
}

/// What [`quantize_frozen`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QuantizeReport {
    /// Linears packed.
    pub layers: usize,
    /// Weights packed.
    pub params: usize,
    /// Bytes of those weights in f32.
    pub dense_bytes: usize,
    /// Bytes of those weights packed (values and scales).
    pub packed_bytes: usize,
}

impl QuantizeReport {
    /// Count one packed linear.
    fn count(&mut self, packed: &PackedBase) {
        let params = packed.in_features() * packed.out_features();
        self.layers += 1;
        self.params += params;
        self.dense_bytes += 4 * params;
        self.packed_bytes += packed.packed().stored_bytes();
    }

    /// Bits per packed weight, scales included.
    pub fn bits_per_param(&self) -> f64 {
        8.0 * self.packed_bytes as f64 / self.params.max(1) as f64
    }
}

/// Pack the frozen weight of every linear of `model` (QLoRA's frozen base): the
/// backbone's linears, not the embeddings, norms or a classification head. Adapters,
/// attached before or after, stay in f32. A linear already packed, or one with a merged
/// adapter (its weight holds `s·BA`), is an error.
pub fn quantize_frozen<M: super::LoraTargets>(
    model: &mut M,
    how: Quantization,
) -> Result<QuantizeReport> {
    let mut report = QuantizeReport::default();
    model.visit_linears("", &mut |path, linear| {
        if linear.is_merged() {
            return Err(Error::InvalidState(format!(
                "{path}: unmerge the adapter before quantising the base"
            )));
        }
        let packed = match &linear.base {
            super::FrozenWeight::Dense(dense) => PackedBase::from_dense(dense, how)?,
            super::FrozenWeight::Packed(p) => {
                return Err(Error::InvalidState(format!(
                    "{path}: already packed as {}",
                    p.packed().quantization()
                )));
            }
        };
        report.count(&packed);
        linear.base = super::FrozenWeight::Packed(packed);
        Ok(())
    })?;
    Ok(report)
}

/// How `model`'s frozen linears are stored: the packing of the first packed one, `None`
/// when all are float.
pub fn base_quantization<M: super::LoraTargets>(model: &M) -> Result<Option<Quantization>> {
    let mut found = None;
    model.read_linears("", &mut |_, linear| {
        if let (None, Some(p)) = (found, linear.base.packed()) {
            found = Some(p.packed().quantization());
        }
        Ok(())
    })?;
    Ok(found)
}

/// The packed linears of `model` as a [`QuantizeReport`] (e.g. after
/// [`LoadOptions::packing`](crate::models::LoadOptions::packing), which packs while
/// loading).
pub fn packing_report<M: super::LoraTargets>(model: &M) -> Result<QuantizeReport> {
    let mut report = QuantizeReport::default();
    model.read_linears("", &mut |_, linear| {
        if let Some(p) = linear.base.packed() {
            report.count(p);
        }
        Ok(())
    })?;
    Ok(report)
}
