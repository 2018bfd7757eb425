//! Small building blocks shared by the backbones: frozen embeddings and norms, and
//! multi-head attention plumbing.

use burn::module::{Module, Param};
use burn::tensor::{Bool, Int, Tensor};

/// A frozen embedding table `[vocab, dim]`.
#[derive(Module, Debug)]
pub struct FrozenEmbedding {
    /// Table `[vocab, dim]`.
    pub weight: Param<Tensor<2>>,
}

/// Wrap a tensor as a parameter that never receives a gradient.
pub fn frozen<const D: usize>(t: Tensor<D>) -> Param<Tensor<D>> {
    Param::from_tensor(t.detach()).set_require_grad(false)
}

impl FrozenEmbedding {
    /// New table from a `[vocab, dim]` tensor, kept in its dtype (f32, or a
    /// half-precision base's f16/bf16).
    pub fn new(weight: Tensor<2>) -> Self {
        FrozenEmbedding {
            weight: frozen(weight),
        }
    }

    /// Look up `[batch, seq]` ids → `[batch, seq, dim]`, in f32 (a half-precision table's
    /// rows widen exactly).
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        to_f32(burn::tensor::module::embedding(self.weight.val(), ids))
    }

    /// The table in f32.
    pub fn table_f32(&self) -> Tensor<2> {
        to_f32(self.weight.val())
    }
}

/// `t` in f32 (a no-op when it is).
fn to_f32<const D: usize>(t: Tensor<D>) -> Tensor<D> {
    if t.dtype() == burn::tensor::DType::F32 {
        t
    } else {
        t.cast(burn::tensor::FloatDType::F32)
    }
}

/// LayerNorm over the last dimension (biased variance, as PyTorch), frozen.
#[derive(Module, Debug)]
pub struct LayerNorm {
    /// Scale `[dim]`.
    pub gamma: Param<Tensor<1>>,
    /// Shift `[dim]`.
    pub beta: Param<Tensor<1>>,
    /// Epsilon added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// New norm from its weight and bias.
    pub fn new(gamma: Tensor<1>, beta: Tensor<1>, eps: f64) -> Self {
        LayerNorm {
            gamma: frozen(gamma),
            beta: frozen(beta),
            eps,
        }
    }

    /// Normalise `[..., dim]`: burn's layer-norm op, one fused pass on backends that have
    /// one (burn-flex), the same steps written out elsewhere and under autodiff.
    pub fn forward<const D: usize>(&self, x: Tensor<D>) -> Tensor<D> {
        burn::tensor::module::layer_norm(x, self.gamma.val(), Some(self.beta.val()), self.eps)
    }
}

/// `[batch, seq, heads·dim]` → `[batch, heads, seq, dim]`.
pub fn split_heads(x: Tensor<3>, heads: usize, head_dim: usize) -> Tensor<4> {
    let [b, s, _] = x.dims();
    x.reshape([b, s, heads, head_dim]).swap_dims(1, 2)
}

/// `[batch, heads, seq, dim]` → `[batch, seq, heads·dim]`.
pub fn merge_heads(x: Tensor<4>) -> Tensor<3> {
    let [b, h, s, d] = x.dims();
    x.swap_dims(1, 2).reshape([b, s, h * d])
}

/// Additive attention bias from a key padding mask: 0 where `mask` is 1, a large
/// negative number where it is 0. Shape `[batch, 1, 1, seq]`.
pub fn padding_bias(attention_mask: Tensor<2, Int>) -> Tensor<4> {
    let [b, s] = attention_mask.dims();
    let masked: Tensor<2, Bool> = attention_mask.equal_elem(0);
    let zeros = Tensor::<2>::zeros([b, s], &masked.device());
    zeros.mask_fill(masked, MASK_VALUE).reshape([b, 1, 1, s])
}

/// The additive mask value: large enough that `exp` underflows to exactly 0, small
/// enough that adding a score can't overflow.
pub const MASK_VALUE: f32 = -1.0e30;
