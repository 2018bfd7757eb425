//! The fast paths of `burn_lora::ops` against burn's own ops: the same values and the same
//! gradients (burn's autodiff of its decomposed softmax / GELU / SiLU is the reference), and
//! dropout with PEFT's semantics (rate, scaling, training only).

mod common;

use burn::module::Module;
use burn::nn::DropoutConfig;
use burn::tensor::{Device, Distribution, Tensor, activation};
use burn_lora::device::parse_device;
use burn_lora::ops;
use common::{max_abs_diff, values};

/// Tests that seed the process-wide generator run one at a time.
static SEEDED_RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn flex_autodiff() -> Device {
    parse_device("flex").expect("flex").autodiff()
}

/// Value and input gradient of `sum(f(x) ⊙ w)` for a fixed random `x` and `w`.
fn value_and_grad(
    f: impl Fn(Tensor<4>) -> Tensor<4>,
    x: &Tensor<4>,
    w: &Tensor<4>,
) -> (Vec<f32>, Vec<f32>) {
    let x = x.clone().require_grad();
    let y = f(x.clone());
    let grads = (y.clone() * w.clone()).sum().backward();
    let grad = x.grad(&grads).expect("x is tracked");
    (values(y), values(grad))
}

fn check_against_burn(
    fast: impl Fn(Tensor<4>) -> Tensor<4>,
    reference: impl Fn(Tensor<4>) -> Tensor<4>,
    scale: f64,
) {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = flex_autodiff();
    device.seed(3);
    let x = Tensor::<4>::random([2, 3, 5, 37], Distribution::Normal(0.0, scale), &device);
    let w = Tensor::<4>::random([2, 3, 5, 37], Distribution::Normal(0.0, 1.0), &device);
    let (y_fast, g_fast) = value_and_grad(&fast, &x, &w);
    let (y_ref, g_ref) = value_and_grad(&reference, &x, &w);
    assert!(max_abs_diff(&y_fast, &y_ref) < 1e-5, "values differ");
    assert!(max_abs_diff(&g_fast, &g_ref) < 1e-5, "gradients differ");
    // Without autodiff the fast path gives the same values too.
    let plain = x.clone().inner();
    assert!(max_abs_diff(&values(fast(plain.clone())), &y_ref) < 1e-5);
}

#[test]
fn softmax_last_matches_burn_with_gradient() {
    check_against_burn(ops::softmax_last, |x| activation::softmax(x, 3), 3.0);
}

#[test]
fn gelu_matches_burn_with_gradient() {
    check_against_burn(ops::gelu, activation::gelu, 2.0);
}

#[test]
fn silu_matches_burn_with_gradient() {
    check_against_burn(ops::silu, activation::silu, 3.0);
}

#[test]
fn dropout_drops_at_its_rate_scales_and_only_trains() {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = flex_autodiff();
    let layer = DropoutConfig::new(0.25).init();
    let x = Tensor::<2>::ones([512, 512], &device);
    device.seed(5);
    let a = values(ops::dropout(&layer, x.clone()));
    let kept = a.iter().filter(|&&v| v != 0.0).count() as f64 / a.len() as f64;
    assert!((kept - 0.75).abs() < 5e-3, "kept fraction {kept}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    // Reproducible from the device seed; a new draw otherwise.
    device.seed(5);
    assert_eq!(a, values(ops::dropout(&layer, x.clone())));
    assert_ne!(a, values(ops::dropout(&layer, x.clone())));
    // Identity without autodiff and when the layer is frozen (evaluation).
    let plain = x.clone().inner();
    assert_eq!(values(ops::dropout(&layer, plain.clone())), values(plain));
    let frozen = layer.valid();
    assert_eq!(values(ops::dropout(&frozen, x.clone())), values(x));
}
