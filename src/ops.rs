//! Fast paths for the element-wise work of a training step on burn-flex.
//!
//! Profiled on MiniLM training (BENCHMARKS.md, "Speed vs PyTorch + PEFT"), two thirds of a
//! step's wall time was single-threaded element-wise work beside multi-threaded matmuls:
//! the dropout masks (one Bernoulli draw from a ChaCha generator per element), GELU's `erf`
//! forward and backward, and softmax, which burn 0.22's autodiff decomposes into max, subtract, exp,
//! sum and divide, each a pass over the `[b, h, s, s]` scores with a backward of twice as
//! many. Here:
//! - [`softmax_last`], [`gelu`] and [`silu`] are single differentiable nodes (burn's
//!   backend-extension API, with a backward written here): softmax forward is burn-flex's
//!   fused kernel and its backward `dx = y⊙g − y⊙Σ(y⊙g)` four passes; GELU, SiLU and
//!   their derivatives run on all cores.
//! - [`dropout`] draws its keep-mask from a counter-based generator on all cores, seeded by
//!   one draw from the device's seeded generator, so runs stay reproducible.
//!
//! Only burn-flex takes these paths; other backends (GPUs, where burn fuses element-wise
//! work itself) run burn's own ops unchanged. The results are the same functions: exact
//! `erf` GELU, softmax, inverted dropout with rate `p`.

use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::backend::flex::{FlexTensor, Layout};
use burn::backend::ops::ActivationOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Autodiff, Backend, Dispatch, Flex, TensorMetadata, backend_extension};
use burn::nn::Dropout;
use burn::tensor::{Bytes, DType, Device, Distribution, Tensor, TensorData};
use burn_lora_kernels as kernels;

/// The extension: ops that burn-flex runs as one (parallel) pass and autodiff as one node.
#[backend_extension(Flex, Autodiff)]
pub trait FastOps: Backend {
    /// Softmax over the last dimension.
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let last = x.shape().num_dims() - 1;
        Self::softmax(x, last)
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
    kernel: fn(&[f32], &[f32]) -> Vec<f32>,
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

/// A contiguous f32 tensor of `x`'s shape.
fn shaped_like(x: &FlexTensor, data: Vec<f32>) -> FlexTensor {
    let shape = x.layout().shape().clone();
    FlexTensor::new(
        Bytes::from_elems(data),
        Layout::contiguous(shape),
        DType::F32,
    )
}

impl FastOps for Flex {
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

impl<B: Backend + FastOps, C: CheckpointStrategy> FastOps for Autodiff<B, C> {
    fn softmax_last(x: FloatTensor<Self>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct SoftmaxLast;

        impl<B: Backend> Backward<B, 1> for SoftmaxLast {
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
                    let last = y.shape().num_dims() - 1;
                    let yg = B::float_mul(y.clone(), grad);
                    let sum = B::float_sum_dim(yg.clone(), last);
                    B::float_sub(yg, B::float_mul(y, sum))
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

    // `gelu_erf_backward` and `silu_backward` keep the default bodies: only backward passes
    // call them, on the inner backend.
}

/// The backward of an element-wise `y = f(x)`: `grad · f'(x)`, from the saved input.
#[derive(Debug)]
struct ElementwiseBackward<B: Backend> {
    derivative: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: Backend> Backward<B, 1> for ElementwiseBackward<B> {
    // The forward's input.
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let x = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            (self.derivative)(x, grad)
        });
    }
}

/// `forward(x)` as one autodiff node whose backward is `derivative(x, grad)`.
fn elementwise<B: Backend, C: CheckpointStrategy>(
    x: FloatTensor<Autodiff<B, C>>,
    forward: fn(FloatTensor<B>) -> FloatTensor<B>,
    derivative: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
) -> FloatTensor<Autodiff<B, C>> {
    // Compute-bound: the input is kept, not recomputed, under gradient checkpointing.
    let node = ElementwiseBackward { derivative };
    match node.prepare::<C>([x.node()]).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let x = x.into_primitive();
            prep.finish(x.clone(), forward(x))
        }
        OpsKind::UnTracked(prep) => prep.finish(forward(x.into_primitive())),
    }
}

/// Whether `device` runs on burn-flex (with or without autodiff): the devices these fast
/// paths serve.
fn is_flex(device: &Device) -> bool {
    device.clone().inner() == Device::flex()
}

/// Softmax over the last dimension: one fused, differentiable node on burn-flex, burn's
/// `softmax` elsewhere.
pub fn softmax_last<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !is_flex(&x.device()) {
        return burn::tensor::activation::softmax(x, D - 1);
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::softmax_last(x.into_dispatch()))
}

/// Exact GELU, `x·Φ(x)` (`0.5·x·(1 + erf(x/√2))`, transformers' `gelu`): one parallel,
/// differentiable node on burn-flex, burn's `gelu` elsewhere.
pub fn gelu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !is_flex(&x.device()) {
        return burn::tensor::activation::gelu(x);
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::gelu_erf(x.into_dispatch()))
}

/// SiLU, `x·σ(x)`: one parallel, differentiable node on burn-flex, burn's `silu` elsewhere.
pub fn silu<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    if !is_flex(&x.device()) {
        return burn::tensor::activation::silu(x);
    }
    Tensor::from_dispatch(<Dispatch as FastOps>::silu(x.into_dispatch()))
}

/// `layer`'s dropout (rate `p`, kept values scaled by `1/(1-p)`, active only while training
/// on an autodiff device, as `nn::Dropout::forward`), with the keep-mask drawn on all cores
/// on burn-flex.
pub fn dropout<const D: usize>(layer: &Dropout, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    if !layer.training.is_enabled() || !device.is_autodiff() || layer.prob == 0.0 {
        return x;
    }
    if !is_flex(&device) {
        return layer.forward(x);
    }
    let keep = 1.0 - layer.prob;
    let shape = x.shape();
    let mask = kernels::keep_mask(shape.num_elements(), keep, draw_seed(&device));
    x * Tensor::from_data(TensorData::new(mask, shape), &device)
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
