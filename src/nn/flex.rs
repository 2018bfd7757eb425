//! The burn-flex side of [`super`] (the `flex` feature): the [`FastOps`] backend
//! extension, its burn-flex implementation over [`FlexTensor`]s with the kernels of
//! `burn_lora_kernels`, its autodiff implementation (one node per op, backward written
//! here), and the `Tensor`-level entry points the public functions of [`super`] call on a
//! burn-flex device.

use burn::backend::autodiff::NodeId;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::retro_forward::RetroForward;
use burn::backend::autodiff::checkpoint::state::BackwardStates;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, OpsPrep, Tracked, unary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::{ActivationOps, FloatTensorOps};
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::Dropout;
use burn::tensor::{Bytes, DType, Device, Distribution, FloatDType, Shape, Tensor, TensorData};
use burn_lora_kernels as kernels;
use kernels::dropout::KeepMask;

use super::PackedMatrix;

/// The extension: ops that burn-flex runs as one (parallel) pass and autodiff as one node.
#[backend_extension(Flex, Autodiff)]
pub trait FastOps: Backend {
    /// Softmax over the last dimension.
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let last = x.shape().num_dims() - 1;
        Self::softmax(x, last)
    }
    /// Softmax's backward over the last dimension from its output `y`:
    /// `y⊙grad − y⊙Σ(y⊙grad)`.
    fn softmax_last_backward(y: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        softmax_backward_composed::<Self>(y, grad)
    }
    /// Exact (`erf`) GELU.
    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu(x)
    }
    /// `grad · GELU'(x)`.
    fn gelu_erf_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::gelu_backward(x, grad)
    }
    /// SiLU, `x·σ(x)`.
    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        silu_composed::<Self>(x)
    }
    /// `grad · SiLU'(x)`.
    fn silu_backward(x: FloatTensor<Self>, grad: FloatTensor<Self>) -> FloatTensor<Self> {
        silu_backward_composed::<Self>(x, grad)
    }
    /// SwiGLU's `SiLU(gate) ⊙ up` (same shapes).
    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_mul(Self::silu(gate), up)
    }
    /// `x·w` for `x [m, k]` and `w [k, n]`.
    fn matmul_2d(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::float_matmul(x, weight)
    }
    /// `x·w + bias` for `x [m, k]`, `w [k, n]` and `bias [n]`.
    fn linear_2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        add_bias::<Self>(Self::matmul_2d(x, weight), bias)
    }
    /// `base + scale·(h·b)` for `base [m, n]`, `h [m, r]` and `b [r, n]` (LoRA's update
    /// added onto the frozen layer's output).
    fn add_product(
        base: FloatTensor<Self>,
        h: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        Self::float_add(base, scaled::<Self>(Self::float_matmul(h, b), scale))
    }
    /// `x ⊙ m` for an inverted-dropout keep-mask `m` over `x`'s elements (row-major).
    fn dropout_masked(x: FloatTensor<Self>, mask: KeepMask) -> FloatTensor<Self> {
        dropout_composed::<Self>(x, &mask)
    }
    /// `(x ⊙ m)·w` for `x [m, k]`, `w [k, n]` and a keep-mask `m` over `x` (LoRA's dropout
    /// followed by its `A` product).
    fn dropout_matmul(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        mask: KeepMask,
    ) -> FloatTensor<Self> {
        Self::matmul_2d(Self::dropout_masked(x, mask), weight)
    }
    /// `scale·(a·b)` over the last two dimensions of `a [.., m, k]` and `b [.., k, n]`
    /// (same leading dimensions).
    fn batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        scaled::<Self>(Self::float_matmul(a, b), scale)
    }
    /// `scale·(a·b) + bias`, `bias` broadcastable to the product's shape (and not
    /// differentiated: an attention mask).
    fn batched_matmul_add(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        Self::float_add(Self::batched_matmul(a, b, scale), bias)
    }
    /// `x·f32(w)` for `x [m, k]` (f32) and `w [k, n]` in half precision.
    fn matmul_cast(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        Self::matmul_2d(x, Self::float_cast(weight, FloatDType::F32))
    }
    /// `x·Wᵀ` for `x [m, k]` and a packed `W [n, k]`, dequantised for the product.
    fn matmul_packed(x: FloatTensor<Self>, weight: PackedMatrix) -> FloatTensor<Self> {
        let w = weight.dequantized::<Self>(&x.device());
        Self::matmul_2d(x, Self::float_transpose(w))
    }
}

impl PackedMatrix {
    /// The dequantised `[rows, cols]` matrix on `device`.
    fn dequantized<B: Backend>(&self, device: &B::Device) -> FloatTensor<B> {
        B::float_from_data(self.data(), device)
    }
}

/// `x ⊙ m` from the backend's own ops (the mask's values built on the host).
fn dropout_composed<B: Backend>(x: FloatTensor<B>, mask: &KeepMask) -> FloatTensor<B> {
    let mask = TensorData::new(mask.values(), x.shape());
    let mask = B::float_from_data(mask, &x.device());
    B::float_mul(x, mask)
}

/// `y + bias` for `y [m, n]` and `bias [n]`, from the backend's own ops.
fn add_bias<B: Backend>(y: FloatTensor<B>, bias: FloatTensor<B>) -> FloatTensor<B> {
    let n = bias.shape().num_elements();
    B::float_add(y, B::float_reshape(bias, Shape::new([1, n])))
}

/// Softmax's backward over the last dimension, `y⊙g − y⊙Σ(y⊙g)`, from the backend's own ops.
fn softmax_backward_composed<B: Backend>(
    y: FloatTensor<B>,
    grad: FloatTensor<B>,
) -> FloatTensor<B> {
    let last = y.shape().num_dims() - 1;
    let yg = B::float_mul(y.clone(), grad);
    let sum = B::float_sum_dim(yg.clone(), last);
    B::float_sub(yg, B::float_mul(y, sum))
}

/// `x·σ(x)` from the backend's own ops.
fn silu_composed<B: Backend>(x: FloatTensor<B>) -> FloatTensor<B> {
    B::float_mul(x.clone(), B::sigmoid(x))
}

/// `grad·σ(x)·(1 + x·(1 − σ(x)))` from the backend's own ops.
fn silu_backward_composed<B: Backend>(x: FloatTensor<B>, grad: FloatTensor<B>) -> FloatTensor<B> {
    let s = B::sigmoid(x.clone());
    let one_minus = B::float_add_scalar(B::float_neg(s.clone()), 1.0.into());
    let inner = B::float_add_scalar(B::float_mul(x, one_minus), 1.0.into());
    B::float_mul(grad, B::float_mul(s, inner))
}

/// `kernel` over the values of an f32 tensor, as a contiguous tensor of its shape;
/// `fallback` (the backend's own ops) for other dtypes.
fn unary_f32(
    x: FlexTensor,
    kernel: fn(&[f32]) -> Vec<f32>,
    fallback: fn(FlexTensor) -> FlexTensor,
) -> FlexTensor {
    if x.dtype() != DType::F32 {
        return fallback(x);
    }
    let contiguous = x.to_contiguous();
    let out = kernel(contiguous.as_slice::<f32>().expect("contiguous f32"));
    shaped_like(&x, out)
}

/// [`unary_f32`] for a derivative: `kernel(x, grad)` on two tensors of one shape.
fn binary_f32(
    x: FlexTensor,
    grad: FlexTensor,
    kernel: impl FnOnce(&[f32], &[f32]) -> Vec<f32>,
    fallback: fn(FlexTensor, FlexTensor) -> FlexTensor,
) -> FlexTensor {
    if x.dtype() != DType::F32 || grad.dtype() != DType::F32 {
        return fallback(x, grad);
    }
    let (xc, gc) = (x.to_contiguous(), grad.to_contiguous());
    let out = kernel(
        xc.as_slice::<f32>().expect("contiguous f32"),
        gc.as_slice::<f32>().expect("contiguous f32"),
    );
    shaped_like(&x, out)
}

/// `t` itself when it is contiguous from the start of its buffer (ready to be written in
/// place: `storage_mut` copies first if another tensor shares the buffer), else a contiguous
/// copy.
fn owned_contiguous(t: FlexTensor) -> FlexTensor {
    if t.is_contiguous() && t.layout().start_offset() == 0 {
        t
    } else {
        t.to_contiguous()
    }
}

/// A contiguous f32 tensor of `x`'s shape.
fn shaped_like(x: &FlexTensor, data: Vec<f32>) -> FlexTensor {
    let shape = x.layout().shape().clone();
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        DType::F32,
    )
}

/// `scale·y`, skipping the pass when `scale` is 1.
fn scaled<B: Backend>(y: FloatTensor<B>, scale: f32) -> FloatTensor<B> {
    if scale == 1.0 {
        y
    } else {
        B::float_mul_scalar(y, scale.into())
    }
}

/// Whether every given tensor holds f32 values (the kernels' element type).
fn all_f32<const N: usize>(tensors: [Option<&FlexTensor>; N]) -> bool {
    tensors
        .into_iter()
        .flatten()
        .all(|t| t.dtype() == DType::F32)
}

/// A tensor's shape and (non-negative) strides, for [`kernels::matmul::StackView`].
fn shape_strides(t: &FlexTensor) -> Option<(Vec<usize>, Vec<usize>)> {
    let layout = t.layout();
    let strides = layout
        .strides()
        .iter()
        .map(|&s| usize::try_from(s).ok())
        .collect::<Option<Vec<_>>>()?;
    Some((layout.shape().to_vec(), strides))
}

/// `t`'s values as a [`kernels::matmul::StackView`] of the given layout.
fn stack_view<'a>(
    t: &'a FlexTensor,
    shape: &'a [usize],
    strides: &'a [usize],
) -> kernels::matmul::StackView<'a> {
    kernels::matmul::StackView {
        data: t.storage::<f32>(),
        offset: t.layout().start_offset(),
        shape,
        strides,
    }
}

/// Whether `bias`'s shape broadcasts to `out` (dimensions aligned on the right, each equal
/// or 1, no more dimensions than `out`).
fn broadcasts_to(bias: &[usize], out: &[usize]) -> bool {
    bias.len() <= out.len()
        && bias
            .iter()
            .rev()
            .zip(out.iter().rev())
            .all(|(&b, &o)| b == o || b == 1)
}

/// [`FastOps::batched_matmul_add`] on burn-flex: all matrices written straight into one
/// fresh buffer, the bias (a zero-stride view when broadcast) pre-filled; `None` where the
/// kernel does not apply (not f32, other leading dimensions, negative strides).
fn batched_flex(
    a: &FlexTensor,
    b: &FlexTensor,
    scale: f32,
    bias: Option<&FlexTensor>,
) -> Option<FlexTensor> {
    if !all_f32([Some(a), Some(b), bias]) {
        return None;
    }
    let (a_shape, a_strides) = shape_strides(a)?;
    let (b_shape, b_strides) = shape_strides(b)?;
    let r = a_shape.len();
    if r < 2 || b_shape.len() != r {
        return None;
    }
    let mut out_shape = a_shape[..r - 2].to_vec();
    out_shape.extend([a_shape[r - 2], b_shape[r - 1]]);
    let bias = match bias {
        Some(bias) if broadcasts_to(bias.layout().shape(), &out_shape) => Some(Flex::float_expand(
            bias.clone(),
            Shape::from(out_shape.clone()),
        )),
        Some(_) => return None,
        None => None,
    };
    let bias_layout = match &bias {
        Some(t) => Some(shape_strides(t)?),
        None => None,
    };
    let lhs = stack_view(a, &a_shape, &a_strides);
    let rhs = stack_view(b, &b_shape, &b_strides);
    let bias_view = match (&bias, &bias_layout) {
        (Some(t), Some((shape, strides))) => Some(stack_view(t, shape, strides)),
        _ => None,
    };
    let out = kernels::matmul::matmul_batched(lhs, rhs, scale, bias_view)?;
    Some(FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::from(out_shape)),
        DType::F32,
    ))
}

/// A 2-D f32 tensor as a strided view for the matmul kernel, unless it has negative strides.
fn matrix_view(t: &FlexTensor) -> Option<kernels::matmul::MatrixView<'_>> {
    let layout = t.layout();
    let (&[rows, cols], &[row_stride, col_stride]) = (&layout.shape()[..], layout.strides()) else {
        return None;
    };
    Some(kernels::matmul::MatrixView {
        data: t.storage::<f32>(),
        offset: layout.start_offset(),
        rows,
        cols,
        row_stride: usize::try_from(row_stride).ok()?,
        col_stride: usize::try_from(col_stride).ok()?,
    })
}

/// [`FastOps::linear_2d`] on burn-flex: the product written straight into its output
/// (bias pre-filled), or `None` where the kernel does not apply (not f32, not 2-D).
fn linear_flex(
    x: &FlexTensor,
    weight: &FlexTensor,
    bias: Option<&FlexTensor>,
) -> Option<FlexTensor> {
    if !all_f32([Some(x), Some(weight), bias]) {
        return None;
    }
    let bias = bias.map(FlexTensor::to_contiguous);
    let bias_values = match &bias {
        Some(b) => Some(b.as_slice::<f32>()?),
        None => None,
    };
    let (lhs, rhs) = (matrix_view(x)?, matrix_view(weight)?);
    let out = kernels::matmul::matmul(lhs, rhs, bias_values)?;
    Some(FlexTensor::new(
        Bytes::from_elems(out),
        Layout::contiguous(Shape::new([lhs.rows, rhs.cols])),
        DType::F32,
    ))
}

/// [`FastOps::add_product`] on burn-flex: gemm accumulates `scale·(h·b)` onto `base`'s own
/// buffer (copied first only when shared or strided); `Err` gives the inputs back where
/// the kernel does not apply.
#[allow(clippy::result_large_err)]
fn add_product_flex(
    base: FlexTensor,
    h: FlexTensor,
    b: FlexTensor,
    scale: f32,
) -> Result<FlexTensor, (FlexTensor, FlexTensor, FlexTensor)> {
    let views = match all_f32([Some(&base), Some(&h), Some(&b)]) {
        true => matrix_view(&h).zip(matrix_view(&b)),
        false => None,
    };
    let Some((lhs, rhs)) = views.filter(|(lhs, rhs)| {
        [lhs.rows, rhs.cols] == base.layout().shape()[..] && lhs.cols == rhs.rows
    }) else {
        return Err((base, h, b));
    };
    let mut out = owned_contiguous(base);
    let len = out.layout().num_elements();
    // `storage_mut` copies the buffer first if another tensor shares it.
    match kernels::matmul::add_product(&mut out.storage_mut::<f32>()[..len], lhs, rhs, scale) {
        Some(()) => Ok(out),
        None => Err((out, h, b)),
    }
}

impl FastOps for Flex {
    fn softmax_last(x: FlexTensor) -> FlexTensor {
        let last = x.layout().shape().num_dims() - 1;
        let row_len = x.layout().shape()[last];
        if x.dtype() != DType::F32 || row_len == 0 {
            return Flex::softmax(x, last);
        }
        // In place: the scores are a fresh product nobody else holds.
        let mut out = owned_contiguous(x);
        let len = out.layout().num_elements();
        kernels::softmax_rows(&mut out.storage_mut::<f32>()[..len], row_len);
        out
    }

    fn softmax_last_backward(y: FlexTensor, grad: FlexTensor) -> FlexTensor {
        let shape = y.layout().shape();
        let row_len = shape[shape.num_dims() - 1];
        if grad.layout().shape() != shape || row_len == 0 {
            return softmax_backward_composed::<Flex>(y, grad);
        }
        binary_f32(
            y,
            grad,
            |y, g| kernels::softmax_rows_backward(y, g, row_len),
            softmax_backward_composed::<Flex>,
        )
    }

    fn add_product(base: FlexTensor, h: FlexTensor, b: FlexTensor, scale: f32) -> FlexTensor {
        add_product_flex(base, h, b, scale).unwrap_or_else(|(base, h, b)| {
            Flex::float_add(base, scaled::<Flex>(Flex::float_matmul(h, b), scale))
        })
    }

    fn dropout_masked(x: FlexTensor, mask: KeepMask) -> FlexTensor {
        if x.dtype() != DType::F32 {
            return dropout_composed::<Flex>(x, &mask);
        }
        let contiguous = x.to_contiguous();
        let values = contiguous.as_slice::<f32>().expect("contiguous f32");
        shaped_like(&x, mask.apply(values))
    }

    fn batched_matmul(a: FlexTensor, b: FlexTensor, scale: f32) -> FlexTensor {
        batched_flex(&a, &b, scale, None)
            .unwrap_or_else(|| scaled::<Flex>(Flex::float_matmul(a, b), scale))
    }

    fn batched_matmul_add(
        a: FlexTensor,
        b: FlexTensor,
        bias: FlexTensor,
        scale: f32,
    ) -> FlexTensor {
        batched_flex(&a, &b, scale, Some(&bias)).unwrap_or_else(|| {
            Flex::float_add(scaled::<Flex>(Flex::float_matmul(a, b), scale), bias)
        })
    }

    fn matmul_2d(x: FlexTensor, weight: FlexTensor) -> FlexTensor {
        linear_flex(&x, &weight, None).unwrap_or_else(|| Flex::float_matmul(x, weight))
    }

    fn linear_2d(x: FlexTensor, weight: FlexTensor, bias: FlexTensor) -> FlexTensor {
        linear_flex(&x, &weight, Some(&bias))
            .unwrap_or_else(|| add_bias::<Flex>(Flex::float_matmul(x, weight), bias))
    }

    fn gelu_erf(x: FlexTensor) -> FlexTensor {
        unary_f32(x, kernels::gelu_erf, Flex::gelu)
    }

    fn gelu_erf_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        binary_f32(x, grad, kernels::gelu_erf_backward, Flex::gelu_backward)
    }

    fn silu(x: FlexTensor) -> FlexTensor {
        unary_f32(x, kernels::silu, silu_composed::<Flex>)
    }

    fn silu_backward(x: FlexTensor, grad: FlexTensor) -> FlexTensor {
        binary_f32(
            x,
            grad,
            kernels::silu_backward,
            silu_backward_composed::<Flex>,
        )
    }
}

/// Register each `(node, gradient)` pair whose parent is tracked and whose gradient was
/// computed (autodiff's node type is private to burn, so this is a macro, not a function).
macro_rules! register_grads {
    ($grads:expr, $(($node:expr, $grad:expr)),+ $(,)?) => {
        $(
            if let (Some(node), Some(grad)) = ($node, $grad) {
                $grads.register::<B>(node.id, grad);
            }
        )+
    };
}

/// Finish a prepared node: its output `$forward` (an expression over the inner backend's
/// tensors), and, when a parent is tracked, the state `$state` its backward reads, evaluated
/// before the forward with `$prep` at hand to checkpoint tensors.
macro_rules! finish {
    ($prepared:expr, |$prep:ident| $state:expr, forward: $forward:expr $(,)?) => {
        match $prepared {
            #[allow(unused_mut)]
            OpsKind::Tracked(mut $prep) => {
                let state = $state;
                $prep.finish(state, $forward)
            }
            OpsKind::UnTracked(prep) => prep.finish($forward),
        }
    };
}

/// Record one compute-bound node `$op` over the given autodiff parents (see [`finish!`]):
/// under gradient checkpointing its output is kept, never computed again.
macro_rules! record {
    ($op:expr, [$($parent:ident),+], $($rest:tt)+) => {
        finish!(
            $op.prepare::<C>([$($parent.node()),+]).compute_bound().stateful(),
            $($rest)+
        )
    };
}

/// Record one memory-bound node `$op` (see [`finish!`]): under gradient checkpointing a
/// later node that asks for its output gets it computed again by `$retro` (a
/// [`Recompute`]) from the parents, instead of kept from the forward.
macro_rules! record_recomputable {
    ($op:expr, [$($parent:ident),+], retro: $retro:expr, $($rest:tt)+) => {
        finish!(
            $op.prepare::<C>([$($parent.node()),+])
                .memory_bound()
                .retro_forward($retro)
                .parents([$(&$parent),+])
                .stateful(),
            $($rest)+
        )
    };
}

impl<B: Backend + FastOps, C: CheckpointStrategy> FastOps for Autodiff<B, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SoftmaxLast;

        impl<B: Backend + FastOps> Backward<B, 1> for SoftmaxLast {
            // The forward's output: the backward needs nothing else.
            type State = FloatTensor<B>;

            fn backward(
                self,
                ops: Ops<Self::State, 1>,
                grads: &mut Gradients,
                _checkpointer: &mut Checkpointer,
            ) {
                let y = ops.state;
                unary::<B, _>(ops.parents, ops.node, grads, |grad| {
                    B::softmax_last_backward(y, grad)
                });
            }
        }

        // Compute-bound: kept, not recomputed, under gradient checkpointing.
        match SoftmaxLast
            .prepare::<C>([x.node()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let y = B::softmax_last(x.into_primitive());
                prep.finish(y.clone(), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::softmax_last(x.into_primitive())),
        }
    }

    fn gelu_erf(x: FloatTensor<Self>) -> FloatTensor<Self> {
        elementwise::<B, C>(x, B::gelu_erf, B::gelu_erf_backward)
    }

    fn silu(x: FloatTensor<Self>) -> FloatTensor<Self> {
        elementwise::<B, C>(x, B::silu, B::silu_backward)
    }

    fn swiglu(gate: FloatTensor<Self>, up: FloatTensor<Self>) -> FloatTensor<Self> {
        /// `SiLU(gate) ⊙ up`: the node keeps `gate` and `up`, not `SiLU(gate)`, which the
        /// backward computes again (`d up = grad ⊙ SiLU(gate)`,
        /// `d gate = SiLU'(gate) ⊙ grad ⊙ up`).
        #[derive(Debug)]
        struct SwiGlu;

        impl<B: Backend + FastOps> Backward<B, 2> for SwiGlu {
            type State = (NodeId, NodeId);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_gate, node_up] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (gate, up) = ops.state;
                let gate: FloatTensor<B> = checkpointer.retrieve_node_output(gate);
                let up: FloatTensor<B> = checkpointer.retrieve_node_output(up);
                let d_up = node_up
                    .is_some()
                    .then(|| B::float_mul(grad.clone(), B::silu(gate.clone())));
                let d_gate = node_gate
                    .is_some()
                    .then(|| B::silu_backward(gate, B::float_mul(grad, up)));
                register_grads!(grads, (node_gate, d_gate), (node_up, d_up));
            }
        }

        record_recomputable!(
            SwiGlu,
            [gate, up],
            retro: Recompute::<B, (), 2>::new([gate.id(), up.id()], (), |_, [gate, up]| {
                B::swiglu(gate, up)
            }),
            |prep| (prep.checkpoint(&gate), prep.checkpoint(&up)),
            forward: B::swiglu(gate.into_primitive(), up.into_primitive()),
        )
    }

    fn matmul_2d(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        /// `x·w`: the backward needs `w` for `x`'s gradient and `x` for `w`'s.
        #[derive(Debug)]
        struct Product;

        impl<B: Backend + FastOps> Backward<B, 2> for Product {
            type State = Operands;

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_w] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (dx, dw) = product_grads::<B>(checkpointer, ops.state, grad);
                register_grads!(grads, (node_x, dx), (node_w, dw));
            }
        }

        record!(
            Product,
            [x, weight],
            |prep| operands(&mut prep, &x, &weight),
            forward: B::matmul_2d(x.into_primitive(), weight.into_primitive()),
        )
    }

    fn linear_2d(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        /// `x·w + b`.
        #[derive(Debug)]
        struct ProductBias;

        impl<B: Backend + FastOps> Backward<B, 3> for ProductBias {
            type State = Operands;

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_w, node_b] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                if let Some(node) = node_b {
                    let n = grad.shape().dims::<2>()[1];
                    let sum = B::float_sum_dim(grad.clone(), 0);
                    grads.register::<B>(node.id, B::float_reshape(sum, Shape::new([n])));
                }
                let (dx, dw) = product_grads::<B>(checkpointer, ops.state, grad);
                register_grads!(grads, (node_x, dx), (node_w, dw));
            }
        }

        record!(
            ProductBias,
            [x, weight, bias],
            |prep| operands(&mut prep, &x, &weight),
            forward: B::linear_2d(
                x.into_primitive(),
                weight.into_primitive(),
                bias.into_primitive(),
            ),
        )
    }

    fn add_product(
        base: FloatTensor<Self>,
        h: FloatTensor<Self>,
        b: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        /// `base + scale·(h·b)`: `base`'s gradient is the incoming one; `h`'s and `b`'s those
        /// of a scaled product.
        #[derive(Debug)]
        struct AddProduct;

        impl<B: Backend + FastOps> Backward<B, 3> for AddProduct {
            type State = (Operands, f32);

            fn backward(
                self,
                ops: Ops<Self::State, 3>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_base, node_h, node_b] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (operands, scale) = ops.state;
                let (dh, db) = product_grads::<B>(checkpointer, operands, grad.clone());
                register_grads!(
                    grads,
                    (node_h, dh.map(|d| scaled::<B>(d, scale))),
                    (node_b, db.map(|d| scaled::<B>(d, scale))),
                    (node_base, Some(grad)),
                );
            }
        }

        record!(
            AddProduct,
            [base, h, b],
            |prep| (operands(&mut prep, &h, &b), scale),
            forward: B::add_product(
                base.into_primitive(),
                h.into_primitive(),
                b.into_primitive(),
                scale,
            ),
        )
    }

    fn dropout_masked(x: FloatTensor<Self>, mask: KeepMask) -> FloatTensor<Self> {
        // The gradient is `grad ⊙ m`: the node keeps the mask's bits (1/32 of an f32 mask),
        // not the input.
        record_recomputable!(
            InputGrad::<B, KeepMask> {
                grad_of: |mask, grad| B::dropout_masked(grad, mask),
            },
            [x],
            retro: Recompute::<B, _, 1>::new([x.id()], mask.clone(), |mask, [x]| {
                B::dropout_masked(x, mask.clone())
            }),
            |_prep| mask.clone(),
            forward: B::dropout_masked(x.into_primitive(), mask),
        )
    }

    fn batched_matmul(a: FloatTensor<Self>, b: FloatTensor<Self>, scale: f32) -> FloatTensor<Self> {
        scaled_product::<B, C>(a, b, scale, None)
    }

    fn batched_matmul_add(
        a: FloatTensor<Self>,
        b: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        scale: f32,
    ) -> FloatTensor<Self> {
        scaled_product::<B, C>(a, b, scale, Some(bias))
    }

    fn dropout_matmul(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        mask: KeepMask,
    ) -> FloatTensor<Self> {
        /// `(x ⊙ m)·w`: the node keeps `x` (which the layer's other products share) and the
        /// mask's bits, not the dropped-out copy of `x`.
        #[derive(Debug)]
        struct DropoutProduct;

        impl<B: Backend + FastOps> Backward<B, 2> for DropoutProduct {
            type State = (Operands, KeepMask);

            fn backward(
                self,
                ops: Ops<Self::State, 2>,
                grads: &mut Gradients,
                checkpointer: &mut Checkpointer,
            ) {
                let [node_x, node_w] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (operands, mask) = ops.state;
                let (x, w) = retrieve::<B>(checkpointer, operands);
                // dx = (grad·wᵀ) ⊙ m; dw = (x ⊙ m)ᵀ·grad.
                let dx = w.map(|w| {
                    let dh = B::matmul_2d(grad.clone(), B::float_transpose(w));
                    B::dropout_masked(dh, mask.clone())
                });
                let dw = x.map(|x| {
                    let h = B::dropout_masked(x, mask);
                    B::matmul_2d(B::float_transpose(h), grad)
                });
                register_grads!(grads, (node_x, dx), (node_w, dw));
            }
        }

        record!(
            DropoutProduct,
            [x, weight],
            |prep| (operands(&mut prep, &x, &weight), mask.clone()),
            forward: B::dropout_matmul(x.into_primitive(), weight.into_primitive(), mask),
        )
    }

    fn matmul_cast(x: FloatTensor<Self>, weight: FloatTensor<Self>) -> FloatTensor<Self> {
        // `x·f32(w)` for a frozen half-precision `w` (the public function sends a tracked
        // one elsewhere): the state is the half-precision handle the model holds, cast again
        // in the backward instead of an f32 copy kept alive from the forward.
        let weight = weight.into_primitive();
        record!(
            InputGrad::<B, _> {
                grad_of: |w, grad| {
                    B::matmul_2d(grad, B::float_transpose(B::float_cast(w, FloatDType::F32)))
                },
            },
            [x],
            |_prep| weight.clone(),
            forward: B::matmul_cast(x.into_primitive(), weight),
        )
    }

    fn matmul_packed(x: FloatTensor<Self>, weight: PackedMatrix) -> FloatTensor<Self> {
        // `x·Wᵀ` for a frozen packed `W`: the backward dequantises `W` again instead of
        // keeping the dequantised copy alive from the forward to the backward.
        record!(
            InputGrad::<B, PackedMatrix> {
                grad_of: |w, grad| {
                    let device = grad.device();
                    B::matmul_2d(grad, w.dequantized::<B>(&device))
                },
            },
            [x],
            |_prep| weight.clone(),
            forward: B::matmul_packed(x.into_primitive(), weight),
        )
    }

    // `gelu_erf_backward` and `silu_backward` keep the default bodies: only backward passes
    // call them, on the inner backend.
}

/// `scale·(a·b) (+ bias)` as one autodiff node over `a` and `b` (the bias, an attention
/// mask, is not differentiated; the public function sends a tracked bias elsewhere).
fn scaled_product<B: Backend + FastOps, C: CheckpointStrategy>(
    a: FloatTensor<Autodiff<B, C>>,
    b: FloatTensor<Autodiff<B, C>>,
    scale: f32,
    bias: Option<FloatTensor<Autodiff<B, C>>>,
) -> FloatTensor<Autodiff<B, C>> {
    /// `scale·(a·b)`: the backward needs `b` for `a`'s gradient and `a` for `b`'s.
    #[derive(Debug)]
    struct ScaledProduct;

    impl<B: Backend + FastOps> Backward<B, 2> for ScaledProduct {
        type State = (Operands, f32);

        fn backward(
            self,
            ops: Ops<Self::State, 2>,
            grads: &mut Gradients,
            checkpointer: &mut Checkpointer,
        ) {
            let [node_a, node_b] = ops.parents;
            let grad = grads.consume::<B>(&ops.node);
            let (operands, scale) = ops.state;
            let (a, b) = retrieve::<B>(checkpointer, operands);
            let last_two = |t: FloatTensor<B>| {
                let r = t.shape().num_dims();
                B::float_swap_dims(t, r - 2, r - 1)
            };
            let da = b.map(|b| B::batched_matmul(grad.clone(), last_two(b), scale));
            let db = a.map(|a| B::batched_matmul(last_two(a), grad, scale));
            register_grads!(grads, (node_a, da), (node_b, db));
        }
    }

    let forward = |a, b, bias: Option<FloatTensor<B>>| match bias {
        Some(bias) => B::batched_matmul_add(a, b, bias, scale),
        None => B::batched_matmul(a, b, scale),
    };
    let bias = bias.map(|t| t.into_primitive());
    record!(
        ScaledProduct,
        [a, b],
        |prep| (operands(&mut prep, &a, &b), scale),
        forward: forward(a.into_primitive(), b.into_primitive(), bias),
    )
}

/// The operands the backward of `x·w` needs, checkpointed: `x` when `w` is tracked, `w`
/// when `x` is. (Through the checkpointer, not kept as tensors: under gradient checkpointing
/// an operand that a recomputable node produced is computed again rather than kept.)
type Operands = (Option<NodeId>, Option<NodeId>);

/// [`Operands`] of a product about to be recorded by `prep`.
fn operands<BO, B, S, C, const N: usize>(
    prep: &mut OpsPrep<BO, B, S, C, N, Tracked>,
    x: &FloatTensor<Autodiff<B, C>>,
    w: &FloatTensor<Autodiff<B, C>>,
) -> Operands
where
    B: Backend,
    BO: Backward<B, N, State = S>,
    S: Clone + Send + std::fmt::Debug + 'static,
    C: CheckpointStrategy,
{
    (
        w.is_tracked().then(|| prep.checkpoint(x)),
        x.is_tracked().then(|| prep.checkpoint(w)),
    )
}

/// The tensors of checkpointed [`Operands`], in the backward.
fn retrieve<B: Backend>(
    checkpointer: &mut Checkpointer,
    (x, w): Operands,
) -> (Option<FloatTensor<B>>, Option<FloatTensor<B>>) {
    (
        x.map(|id| checkpointer.retrieve_node_output(id)),
        w.map(|id| checkpointer.retrieve_node_output(id)),
    )
}

/// The gradients of `x·w` with respect to `x` (`grad·wᵀ`) and `w` (`xᵀ·grad`), each where
/// its operand was kept.
fn product_grads<B: Backend + FastOps>(
    checkpointer: &mut Checkpointer,
    operands: Operands,
    grad: FloatTensor<B>,
) -> (Option<FloatTensor<B>>, Option<FloatTensor<B>>) {
    let (x, w) = retrieve::<B>(checkpointer, operands);
    let dx = w.map(|w| B::matmul_2d(grad.clone(), B::float_transpose(w)));
    let dw = x.map(|x| B::matmul_2d(B::float_transpose(x), grad));
    (dx, dw)
}

/// A one-parent node whose input gradient is `grad_of(state, grad)`: a constant mask, and
/// products with a frozen weight kept as stored (state: the packed or half-precision
/// weight, rebuilt in the backward).
#[derive(Debug)]
struct InputGrad<B: Backend, S> {
    grad_of: fn(S, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: Backend, S: Clone + Send + std::fmt::Debug + 'static> Backward<B, 1> for InputGrad<B, S> {
    type State = S;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let state = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            (self.grad_of)(state, grad)
        });
    }
}

/// An element-wise node whose input gradient is `derivative(x, grad)`; `x` is checkpointed.
#[derive(Debug)]
struct Elementwise<B: Backend> {
    derivative: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: Backend> Backward<B, 1> for Elementwise<B> {
    type State = NodeId;

    fn backward(
        self,
        ops: Ops<Self::State, 1>,
        grads: &mut Gradients,
        checkpointer: &mut Checkpointer,
    ) {
        let x = checkpointer.retrieve_node_output(ops.state);
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            (self.derivative)(x, grad)
        });
    }
}

/// `forward(x)` as one recomputable autodiff node whose backward is `derivative(x, grad)`.
fn elementwise<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>) -> FloatTensor<B>,
    derivative: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    record_recomputable!(
        Elementwise::<B> { derivative },
        [x],
        retro: Recompute::<B, _, 1>::new([x.id()], forward, |forward, [x]| forward(x)),
        |prep| prep.checkpoint(&x),
        forward: forward(x.into_primitive()),
    )
}

/// The forward of a recomputable node, `forward(state, inputs)`, which the backward runs
/// again (from its parents' outputs, themselves kept or recomputed) when a later node asks
/// for this node's output under gradient checkpointing.
struct Recompute<B: Backend, S, const N: usize> {
    inputs: [NodeId; N],
    state: S,
    forward: fn(&S, [FloatTensor<B>; N]) -> FloatTensor<B>,
}

impl<B: Backend, S, const N: usize> Recompute<B, S, N> {
    fn new(
        inputs: [NodeId; N],
        state: S,
        forward: fn(&S, [FloatTensor<B>; N]) -> FloatTensor<B>,
    ) -> Self {
        Self {
            inputs,
            state,
            forward,
        }
    }
}

impl<B: Backend, S, const N: usize> std::fmt::Debug for Recompute<B, S, N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Recompute {:?}", self.inputs)
    }
}

impl<B: Backend, S: Send + Sync + 'static, const N: usize> RetroForward for Recompute<B, S, N> {
    fn forward(&self, states: &mut BackwardStates, out_node: NodeId) {
        let inputs = self
            .inputs
            .map(|id| states.get_state::<FloatTensor<B>>(&id));
        states.save(out_node, (self.forward)(&self.state, inputs));
    }
}

// The public functions of `super` on a burn-flex device (which they have checked).

/// [`super::softmax_last`] on burn-flex.
pub(super) fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FastOps>::softmax_last(x.into_dispatch()))
}

/// [`super::linear_2d`] on burn-flex.
pub(super) fn linear_2d(x: Tensor<2>, weight: Tensor<2>, bias: Option<Tensor<1>>) -> Tensor<2> {
    let (x, weight) = (x.into_dispatch(), weight.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(bias) => <Dispatch as FastOps>::linear_2d(x, weight, bias.into_dispatch()),
        None => <Dispatch as FastOps>::matmul_2d(x, weight),
    })
}

/// [`super::dropout_linear`] on burn-flex, while the dropout is active.
pub(super) fn dropout_linear(layer: &Dropout, x: Tensor<2>, weight: Tensor<2>) -> Tensor<2> {
    let mask = draw_mask(layer, &x);
    Tensor::from_dispatch(<Dispatch as FastOps>::dropout_matmul(
        x.into_dispatch(),
        weight.into_dispatch(),
        mask,
    ))
}

/// [`super::add_product`] on burn-flex.
pub(super) fn add_product(base: Tensor<2>, h: Tensor<2>, b: Tensor<2>, scale: f32) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FastOps>::add_product(
        base.into_dispatch(),
        h.into_dispatch(),
        b.into_dispatch(),
        scale,
    ))
}

/// [`super::matmul_scaled`] on burn-flex, for operands of the same leading dimensions and
/// an untracked bias.
pub(super) fn matmul_scaled<const D: usize>(
    a: Tensor<D>,
    b: Tensor<D>,
    scale: f32,
    bias: Option<Tensor<D>>,
) -> Tensor<D> {
    let (a, b) = (a.into_dispatch(), b.into_dispatch());
    Tensor::from_dispatch(match bias {
        Some(bias) => <Dispatch as FastOps>::batched_matmul_add(a, b, bias.into_dispatch(), scale),
        None => <Dispatch as FastOps>::batched_matmul(a, b, scale),
    })
}

/// [`super::matmul_cast`] on burn-flex.
pub(super) fn matmul_cast(x: Tensor<2>, weight: Tensor<2>) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FastOps>::matmul_cast(
        x.into_dispatch(),
        weight.into_dispatch(),
    ))
}

/// [`super::matmul_packed`] on burn-flex.
pub(super) fn matmul_packed(x: Tensor<2>, weight: &PackedMatrix) -> Tensor<2> {
    Tensor::from_dispatch(<Dispatch as FastOps>::matmul_packed(
        x.into_dispatch(),
        weight.clone(),
    ))
}

/// [`super::gelu`] on burn-flex.
pub(super) fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FastOps>::gelu_erf(x.into_dispatch()))
}

/// [`super::silu`] on burn-flex.
pub(super) fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FastOps>::silu(x.into_dispatch()))
}

/// [`super::swiglu`] on burn-flex.
pub(super) fn swiglu<const D: usize>(gate: Tensor<D>, up: Tensor<D>) -> Tensor<D> {
    Tensor::from_dispatch(<Dispatch as FastOps>::swiglu(
        gate.into_dispatch(),
        up.into_dispatch(),
    ))
}

/// [`super::dropout`] on burn-flex, while it is active: the keep-mask drawn on all cores.
pub(super) fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let mask = draw_mask(layer, &x);
    Tensor::from_dispatch(<Dispatch as FastOps>::dropout_masked(
        x.into_dispatch(),
        mask,
    ))
}

/// `layer`'s keep-mask over `x`'s elements, seeded by the device's generator.
fn draw_mask<const D: usize>(layer: &Dropout, x: &Tensor<D>) -> KeepMask {
    KeepMask::draw(
        x.shape().num_elements(),
        1.0 - layer.prob,
        draw_seed(&x.device()),
    )
}

/// A mask seed from two draws of the device's seeded generator (≈ 48 random bits: two f32
/// uniforms), so the masks follow `Device::seed`.
fn draw_seed(device: &Device) -> u64 {
    let bits = Tensor::<1>::random([2], Distribution::Default, &device.clone().inner())
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .unwrap_or_default();
    bits.iter()
        .fold(0u64, |acc, v| (acc << 32) | u64::from(v.to_bits()))
}
