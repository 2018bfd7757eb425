//! The layer functions every model calls — linear products, attention, dropout,
//! activations, softmax — each picking burn-flex's fast path inside, so model code never
//! asks which backend it runs on.
//!
//! The fast paths, for the work of a training step on burn-flex:
//!
//! Profiled on MiniLM and SmolLM2 training (BENCHMARKS.md, "Speed vs PyTorch + PEFT"), a
//! step's wall time beside the multi-threaded matmul kernel was mostly single-threaded work:
//! dropout masks (one Bernoulli draw from a ChaCha generator per element), GELU's `erf`,
//! softmax decomposed into five passes by burn 0.22's autodiff, and around every matmul
//! burn-flex's output handling (a zero-filled buffer, then copied into an aligned one),
//! which cost a third of a feed-forward product on 2 cores. Here, each a single node of
//! burn's backend-extension API with its backward written here:
//! - [`linear_2d`]: `x·W + b` with the product written straight into a fresh buffer (the
//!   bias pre-filled), forward and backward; rank-r (LoRA) products split by rows.
//! - [`matmul_scaled`]: attention's `QKᵀ/√d + mask` and `P·V`, all matrices in parallel into
//!   one buffer, the scale inside the product, the broadcast mask pre-filled.
//! - [`matmul_packed`]: `x·Wᵀ` for a packed (NF4, int8) frozen weight; the graph keeps the
//!   packed handle and the backward dequantises again, so no f32 copy waits for it.
//!   [`matmul_cast`] does the same for a half-precision (f16, bf16) frozen weight.
//! - [`softmax_last`], [`gelu`], [`silu`]: softmax (in place over the scores, a vectorised
//!   `exp`) and its backward `dx = y⊙g − y⊙Σ(y⊙g)` in one pass per row; GELU, SiLU and
//!   their derivatives; all on all cores.
//! - [`dropout`] draws its keep-mask from a counter-based generator on all cores, seeded by
//!   one draw from the device's seeded generator, so runs stay reproducible; the training
//!   graph keeps the mask in one bit per element (1/32 of an f32 mask) for the backward.
//! - [`attention`] reads grouped-query K and V as they are (no repeated copies to keep).
//!
//! Under burn's gradient checkpointing the element-wise nodes (GELU, SiLU, SwiGLU, dropout)
//! are memory-bound with a retro-forward, and every node reads the tensors its backward needs
//! through the checkpointer, so a later node can have them computed again instead of kept.
//!
//! Only burn-flex takes these paths (the `flex` feature; they live in the private module
//! `flex`); other backends (GPUs, where burn fuses element-wise work itself), and every
//! backend of a build without `flex`, run burn's own ops unchanged. The results are the
//! same functions: exact `erf` GELU, softmax, inverted dropout with rate `p`, f32 products.

#[cfg(feature = "flex")]
mod flex;

use burn::nn::Dropout;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor, TensorData};
use burn_lora_kernels as kernels;
use std::sync::Arc;

#[cfg(feature = "flex")]
pub use flex::FastOps;

/// A frozen `[rows, cols]` weight held packed (NF4, int8, ...) outside any backend, as
/// [`matmul_packed`] takes it: the autodiff node keeps this handle, not a dequantised copy,
/// and dequantises again in the backward.
#[derive(Clone)]
pub struct PackedMatrix {
    /// The row-major values, computed on demand.
    dequantize: Arc<dyn Fn() -> Vec<f32> + Send + Sync>,
    rows: usize,
    cols: usize,
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedMatrix [{}, {}]", self.rows, self.cols)
    }
}

impl PackedMatrix {
    /// A `[rows, cols]` matrix whose row-major values `dequantize` returns.
    pub fn new(
        rows: usize,
        cols: usize,
        dequantize: impl Fn() -> Vec<f32> + Send + Sync + 'static,
    ) -> Self {
        Self {
            dequantize: Arc::new(dequantize),
            rows,
            cols,
        }
    }

    /// The dequantised `[rows, cols]` values.
    fn data(&self) -> TensorData {
        TensorData::new((self.dequantize)(), [self.rows, self.cols])
    }
}

/// The system BLAS library that burn-flex's large products (the linears) go through in
/// this process, or `None` when they use the built-in `gemm` kernel. With the `blas`
/// feature (on by default) one is loaded at run time when found — OpenBLAS, BLIS, Apple's
/// Accelerate; `BURN_LORA_BLAS` names another or turns it off (`none`) — because on CPUs
/// without AVX-512 they run the products faster than `gemm` (BENCHMARKS.md). No system
/// library is needed to build or run. [`crate::device::cpu_product_kernel`] also names the
/// `gemm` kernel set (AVX-512, AVX2+FMA).
pub fn blas_library() -> Option<&'static str> {
    kernels::matmul::blas_library()
}

/// Whether `device` runs on burn-flex (with or without autodiff): the devices these fast
/// paths serve.
#[cfg(feature = "flex")]
pub(crate) fn is_flex(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

/// Whether `device` runs on burn-flex: never, in a build without the `flex` feature.
#[cfg(not(feature = "flex"))]
pub(crate) fn is_flex(_device: &Device) -> bool {
    false
}

/// Softmax over the last dimension: one fused, differentiable node on burn-flex, burn's
/// `softmax` elsewhere.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if is_flex(&x.device()) {
        return flex::softmax_last(x);
    }
    burn::tensor::activation::softmax(x, D - 1)
}

/// `x·w + bias` for `x [m, k]`, `w [k, n]`, `bias [n]`: on burn-flex one differentiable
/// node whose products (forward and backward) are written straight into fresh buffers
/// (burn-flex's own matmul zero-fills and then copies each output); burn's `linear`
/// elsewhere.
pub fn linear_2d(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if is_flex(&x.device()) {
        return flex::linear_2d(x, weight, bias);
    }
    burn::tensor::module::linear(x, weight, bias)
}

/// `dropout(x)·w` for `x [m, k]` and `w [k, n]` (LoRA's dropout and `A` product). On
/// burn-flex, while the dropout is active, one differentiable node that keeps `x` and the
/// mask's bits rather than the dropped-out copy of `x`: the same values and gradients as
/// [`dropout`] then [`linear_2d`], bit for bit.
pub fn dropout_linear(layer: &Dropout, x: Tensor<2>, weight: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if is_flex(&x.device()) && dropout_is_active(layer, &x.device()) {
        return flex::dropout_linear(layer, x, weight);
    }
    linear_2d(dropout(layer, x), weight, None)
}

/// `base + scale·(h·b)` for `base [m, n]`, `h [m, r]`, `b [r, n]`: LoRA's update added onto
/// the frozen layer's output. On burn-flex one differentiable node in which gemm accumulates
/// onto `base`'s buffer (no separate product, scaling and addition passes); burn's ops
/// elsewhere.
pub fn add_product(base: Tensor<2>, h: Tensor<2>, b: Tensor<2>, scale: f32) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if is_flex(&base.device()) {
        return flex::add_product(base, h, b, scale);
    }
    base + h.matmul(b).mul_scalar(scale)
}

/// `scale·(a·b) + bias` over the last two dimensions (attention's `QKᵀ/√d + mask` and
/// `P·V`): on burn-flex one differentiable node whose matrices are computed in parallel
/// straight into one buffer, the mask pre-filled; burn's ops elsewhere, and where the
/// leading dimensions differ or the bias needs a gradient.
pub fn matmul_scaled<const D: usize>(
    a: Tensor<D>,
    b: Tensor<D>,
    scale: f32,
    bias: Option<Tensor<D>>,
) -> Tensor<D> {
    #[cfg(feature = "flex")]
    {
        let same_batch = a.dims()[..D - 2] == b.dims()[..D - 2];
        let bias_tracked = bias.as_ref().is_some_and(Tensor::is_require_grad);
        if is_flex(&a.device()) && same_batch && !bias_tracked {
            return flex::matmul_scaled(a, b, scale, bias);
        }
    }
    // Scaling `a` rather than the product touches fewer values in attention (s·d, not s·s).
    let a = if scale == 1.0 { a } else { a.mul_scalar(scale) };
    let y = a.matmul(b);
    match bias {
        Some(bias) => y + bias,
        None => y,
    }
}

/// `x·f32(w)` for `x [m, k]` and a frozen half-precision `w [k, n]` (f16, bf16), computed
/// in f32. On burn-flex the training graph keeps the half-precision weight and casts it
/// again in the backward, so no f32 copy of it waits from the forward to the backward;
/// elsewhere (and for a weight that needs a gradient) burn's cast and product.
pub fn matmul_cast(x: Tensor<2>, weight: Tensor<2>) -> Tensor<2> {
    #[cfg(feature = "flex")]
    if is_flex(&x.device()) && !weight.is_require_grad() {
        return flex::matmul_cast(x, weight);
    }
    x.matmul(weight.cast(burn::tensor::FloatDType::F32))
}

/// `x·Wᵀ` for `x [m, k]` and a packed `W [n, k]`. On burn-flex the training graph keeps the
/// packed handle and dequantises `W` again in the backward, so a packed base's f32 copy
/// lives only while its product runs; elsewhere `W` is dequantised into a tensor.
pub fn matmul_packed(x: Tensor<2>, weight: &PackedMatrix) -> Tensor<2> {
    let device = x.device();
    #[cfg(feature = "flex")]
    if is_flex(&device) {
        return flex::matmul_packed(x, weight);
    }
    x.matmul(Tensor::<2>::from_data(weight.data(), &device).transpose())
}

/// Exact GELU, `x·Φ(x)` (`0.5·x·(1 + erf(x/√2))`, transformers' `gelu`): one parallel,
/// differentiable node on burn-flex, burn's `gelu` elsewhere.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if is_flex(&x.device()) {
        return flex::gelu(x);
    }
    burn::tensor::activation::gelu(x)
}

/// SiLU, `x·σ(x)`: one parallel, differentiable node on burn-flex, burn's `silu` elsewhere.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if is_flex(&x.device()) {
        return flex::silu(x);
    }
    burn::tensor::activation::silu(x)
}

/// SwiGLU's `SiLU(gate) ⊙ up` (Llama's MLP): on burn-flex one differentiable node that keeps
/// `gate` and `up` and computes `SiLU(gate)` again in the backward (no third tensor of the
/// MLP's width waits for it), the same values and gradients as [`silu`] then `⊙`; burn's
/// ops elsewhere.
pub fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    #[cfg(feature = "flex")]
    if is_flex(&gate.device()) && gate.dims() == up.dims() {
        return flex::swiglu(gate, up);
    }
    silu(gate) * up
}

/// Whether [`dropout`] changes its input on `device`: training (an autodiff device, the
/// layer not frozen in place) with a rate above 0. PEFT's DoRA takes another path then.
pub fn dropout_is_active(layer: &Dropout, device: &Device) -> bool {
    layer.training.is_enabled() && device.is_autodiff() && layer.prob > 0.0
}

/// `layer`'s dropout (rate `p`, kept values scaled by `1/(1-p)`, active only while training
/// on an autodiff device, as `nn::Dropout::forward`), with the keep-mask drawn on all cores
/// on burn-flex.
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !dropout_is_active(layer, &device) {
        return x;
    }
    #[cfg(feature = "flex")]
    if is_flex(&device) {
        return flex::dropout(layer, x);
    }
    layer.forward(x)
}

/// Scaled dot-product attention `softmax(QKᵀ/√d + bias)·V` for `q [b, heads, s_q, d]` and
/// `k`, `v` `[b, kv_heads, s_k, d]`, with an additive bias broadcastable to
/// `[b, heads, s_q, s_k]`, and dropout on the probabilities while training.
///
/// Grouped-query attention (`kv_heads` dividing `heads`, query head `j` reading key/value
/// head `j / (heads / kv_heads)`, as transformers' `repeat_kv`) without repeating `k` and
/// `v`: each key/value head's queries are stacked into one `[group·s_q, d]` matrix, so the
/// products read `k` and `v` as they are and training keeps them unrepeated.
///
/// Without a backward pass (inference) on a backend other than burn-flex this is burn's
/// fused attention op, which a GPU backend can run as one kernel. Under autodiff burn
/// decomposes that op into these same steps anyway, so the explicit form stays there, where
/// the probabilities' dropout also lives; on burn-flex the explicit form with the fast
/// products of [`matmul_scaled`] is also the faster one for inference.
///
/// # Panics
/// When `kv_heads` does not divide `heads` (the model configs are checked for that).
pub fn attention(
    q: Tensor<4>,
    k: Tensor<4>,
    v: Tensor<4>,
    bias: Tensor<4>,
    probs_dropout: Option<&Dropout>,
) -> Tensor<4> {
    let device = q.device();
    let [b, heads, s_q, head_dim] = q.dims();
    let [_, kv_heads, s_k, _] = k.dims();
    assert!(
        kv_heads > 0 && heads.is_multiple_of(kv_heads),
        "{kv_heads} key/value heads for {heads} query heads"
    );
    let group = heads / kv_heads;
    if !device.is_autodiff() && !is_flex(&device) {
        let (k, v) = (repeat_heads(k, group), repeat_heads(v, group));
        // Full shape: not every backend broadcasts the bias of the fused op.
        let bias = bias.expand([b, heads, s_q, s_k]);
        return burn::tensor::module::attention(
            q,
            k,
            v,
            None,
            Some(bias),
            AttentionModuleOptions::default(),
        );
    }
    let [_, bias_heads, bias_rows, _] = bias.dims();
    if group > 1 && bias_heads != 1 {
        // A bias per query head cannot follow the stacked queries: repeat k and v instead.
        let (k, v) = (repeat_heads(k, group), repeat_heads(v, group));
        return attention(q, k, v, bias, probs_dropout);
    }
    // Query heads j·group … j·group + group − 1 share key/value head j: rows (r, i) of the
    // stacked matrix are query head j·group + r at position i.
    let q = q.reshape([b, kv_heads, group * s_q, head_dim]);
    let bias = if bias_rows > 1 {
        bias.repeat_dim(2, group)
    } else {
        bias
    };
    let scale = 1.0 / (head_dim as f32).sqrt();
    let scores = matmul_scaled(q, k.swap_dims(2, 3), scale, Some(bias));
    let probs = softmax_last(scores);
    let probs = match probs_dropout {
        Some(layer) => dropout(layer, probs),
        None => probs,
    };
    matmul_scaled(probs, v, 1.0, None).reshape([b, heads, s_q, head_dim])
}

/// `[b, kv_heads, s, d]` → `[b, kv_heads·group, s, d]`, each head repeated `group` times in
/// place (transformers' `repeat_kv`).
fn repeat_heads(x: Tensor<4>, group: usize) -> Tensor<4> {
    if group == 1 {
        return x;
    }
    let [b, kv_heads, s, d] = x.dims();
    x.reshape([b, kv_heads, 1, s, d])
        .repeat_dim(2, group)
        .reshape([b, kv_heads * group, s, d])
}
