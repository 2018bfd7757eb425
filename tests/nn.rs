//! The fast paths of `burn_lora::nn` against burn's own ops: the same values and the same
//! gradients (burn's autodiff of its decomposed softmax / GELU / SiLU is the reference), and
//! dropout with PEFT's semantics (rate, scaling, training only).

mod common;

use burn::module::Module;
use burn::nn::DropoutConfig;
use burn::tensor::{Device, Distribution, Tensor, activation};
use burn_lora::device::parse_device;
use burn_lora::nn;
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
    check_against_burn(nn::softmax_last, |x| activation::softmax(x, 3), 3.0);
}

#[test]
fn gelu_matches_burn_with_gradient() {
    check_against_burn(nn::gelu, activation::gelu, 2.0);
}

#[test]
fn silu_matches_burn_with_gradient() {
    check_against_burn(nn::silu, activation::silu, 3.0);
}

#[test]
fn dropout_drops_at_its_rate_scales_and_only_trains() {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = flex_autodiff();
    let layer = DropoutConfig::new(0.25).init();
    let x = Tensor::<2>::ones([512, 512], &device);
    device.seed(5);
    let a = values(nn::dropout(&layer, x.clone()));
    let kept = a.iter().filter(|&&v| v != 0.0).count() as f64 / a.len() as f64;
    assert!((kept - 0.75).abs() < 5e-3, "kept fraction {kept}");
    assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.75).abs() < 1e-6));
    // Reproducible from the device seed; a new draw otherwise.
    device.seed(5);
    assert_eq!(a, values(nn::dropout(&layer, x.clone())));
    assert_ne!(a, values(nn::dropout(&layer, x.clone())));
    // The gradient goes through the kept places, scaled alike: d/dx Σ dropout(x)⊙w = mask⊙w.
    let tracked = x.clone().require_grad();
    let w = Tensor::<2>::random([512, 512], Distribution::Normal(0.0, 1.0), &device);
    let y = nn::dropout(&layer, tracked.clone());
    let grad = tracked
        .grad(&(y.clone() * w.clone()).sum().backward())
        .unwrap();
    // x is all ones, so y is the mask itself.
    assert!(max_abs_diff(&values(grad), &values(y * w)) < 1e-6);
    // Identity without autodiff and when the layer is frozen (evaluation).
    let plain = x.clone().inner();
    assert_eq!(values(nn::dropout(&layer, plain.clone())), values(plain));
    let frozen = layer.valid();
    assert_eq!(values(nn::dropout(&frozen, x.clone())), values(x));
}

/// `sum((x·w + b) ⊙ g)` and the gradients of `x`, `w`, `b` that are tracked.
fn linear_grads(
    linear: impl Fn(Tensor<2>, Tensor<2>, Option<Tensor<1>>) -> Tensor<2>,
    inputs: (&Tensor<2>, &Tensor<2>, Option<&Tensor<1>>),
    tracked: [bool; 3],
    g: &Tensor<2>,
) -> Vec<Vec<f32>> {
    let track = |t: Tensor<2>, on: bool| if on { t.require_grad() } else { t };
    let x = track(inputs.0.clone(), tracked[0]);
    let w = track(inputs.1.clone(), tracked[1]);
    let b = inputs.2.map(|b| {
        if tracked[2] {
            b.clone().require_grad()
        } else {
            b.clone()
        }
    });
    let y = linear(x.clone(), w.clone(), b.clone());
    let grads = (y.clone() * g.clone()).sum().backward();
    let mut out = vec![values(y)];
    out.extend(x.grad(&grads).map(values));
    out.extend(w.grad(&grads).map(values));
    out.extend(b.and_then(|b| b.grad(&grads)).map(values));
    out
}

#[test]
fn linear_2d_matches_burn_with_gradients() {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = flex_autodiff();
    device.seed(5);
    let normal = Distribution::Normal(0.0, 1.0);
    // Large enough to take the multi-threaded kernel, and a small one.
    for (m, k, n) in [(300, 200, 190), (3, 5, 4)] {
        let x = Tensor::<2>::random([m, k], normal, &device);
        let w = Tensor::<2>::random([k, n], normal, &device);
        // The same weight read through a transposed view, as models store some weights.
        let w_t = Tensor::<2>::random([n, k], normal, &device);
        let b = Tensor::<1>::random([n], normal, &device);
        let g = Tensor::<2>::random([m, n], normal, &device);
        for weight in [w.clone(), w_t.transpose()] {
            for bias in [None, Some(&b)] {
                for tracked in [
                    [true, true, true],
                    [true, false, false],
                    [false, true, true],
                ] {
                    let inputs = (&x, &weight, bias);
                    let fast = linear_grads(nn::linear_2d, inputs, tracked, &g);
                    let reference = linear_grads(burn::tensor::module::linear, inputs, tracked, &g);
                    assert_eq!(fast.len(), reference.len(), "same gradients present");
                    for (a, r) in fast.iter().zip(&reference) {
                        let scale = r.iter().fold(1f32, |s, v| s.max(v.abs()));
                        assert!(
                            max_abs_diff(a, r) <= 1e-5 * scale,
                            "{m}×{k}×{n} {tracked:?}"
                        );
                    }
                }
            }
        }
        // Without autodiff too.
        let plain = nn::linear_2d(
            x.clone().inner(),
            w.clone().inner(),
            Some(b.clone().inner()),
        );
        let reference = burn::tensor::module::linear(x.inner(), w.inner(), Some(b.inner()));
        assert!(max_abs_diff(&values(plain), &values(reference)) < 1e-4);
    }
}

#[test]
fn matmul_packed_matches_a_dense_product_with_gradient() {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = flex_autodiff();
    device.seed(6);
    let normal = Distribution::Normal(0.0, 1.0);
    let (m, k, n) = (40, 24, 16);
    let w = Tensor::<2>::random([n, k], normal, &device);
    let w_values = values(w.clone());
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = calls.clone();
    let packed = nn::PackedMatrix::new(n, k, move || {
        counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        w_values.clone()
    });
    let x = Tensor::<2>::random([m, k], normal, &device).require_grad();
    let g = Tensor::<2>::random([m, n], normal, &device);
    let y = nn::matmul_packed(x.clone(), &packed);
    let grads = (y.clone() * g.clone()).sum().backward();
    let dx = x.grad(&grads).expect("x is tracked");
    let y_ref = x.clone().inner().matmul(w.clone().inner().transpose());
    let dx_ref = g.inner().matmul(w.inner());
    assert!(max_abs_diff(&values(y), &values(y_ref)) < 1e-4);
    assert!(max_abs_diff(&values(dx), &values(dx_ref)) < 1e-4);
    // Dequantised once for the forward and once again for the backward: the graph keeps
    // the packed handle, not the f32 copy.
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// LoRA's dropout and `A` product as one node: the same output and the same gradients for
/// `x` and `w`, bit for bit, as dropout then the product (the node keeps `x` and the mask's
/// bits, not the dropped-out copy of `x`).
#[test]
fn dropout_linear_equals_dropout_then_product() {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = flex_autodiff();
    let layer = DropoutConfig::new(0.3).init();
    let normal = Distribution::Normal(0.0, 1.0);
    let (m, k, n) = (70, 48, 8);
    device.seed(9);
    let x = Tensor::<2>::random([m, k], normal, &device);
    let w = Tensor::<2>::random([k, n], normal, &device);
    let g = Tensor::<2>::random([m, n], normal, &device);
    let run = |fused: bool| {
        let (x, w) = (x.clone().require_grad(), w.clone().require_grad());
        device.seed(11);
        let y = if fused {
            nn::dropout_linear(&layer, x.clone(), w.clone())
        } else {
            nn::linear_2d(nn::dropout(&layer, x.clone()), w.clone(), None)
        };
        let grads = (y.clone() * g.clone()).sum().backward();
        let (dx, dw) = (x.grad(&grads).unwrap(), w.grad(&grads).unwrap());
        (values(y), values(dx), values(dw))
    };
    let (fused, plain) = (run(true), run(false));
    assert_eq!(fused, plain);
    // The mask is real: some inputs were dropped (their gradient rows are partly zero).
    assert!(fused.1.iter().filter(|v| **v == 0.0).count() > m * k / 10);
    // Without autodiff and in evaluation: the plain product.
    let frozen = layer.valid();
    assert_eq!(
        values(nn::dropout_linear(&frozen, x.clone(), w.clone())),
        values(nn::linear_2d(x.clone(), w.clone(), None))
    );
}

/// SwiGLU as one node (keeping `gate` and `up`, computing `SiLU(gate)` again in the
/// backward): the values and both gradients of SiLU then `⊙`, bit for bit.
#[test]
fn swiglu_equals_silu_times_up() {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = flex_autodiff();
    device.seed(13);
    let normal = Distribution::Normal(0.0, 2.0);
    let gate = Tensor::<3>::random([3, 5, 40], normal, &device);
    let up = Tensor::<3>::random([3, 5, 40], normal, &device);
    let w = Tensor::<3>::random([3, 5, 40], normal, &device);
    let run = |fused: bool| {
        let (gate, up) = (gate.clone().require_grad(), up.clone().require_grad());
        let y = if fused {
            nn::swiglu(gate.clone(), up.clone())
        } else {
            nn::silu(gate.clone()) * up.clone()
        };
        let grads = (y.clone() * w.clone()).sum().backward();
        let (d_gate, d_up) = (gate.grad(&grads).unwrap(), up.grad(&grads).unwrap());
        (values(y), values(d_gate), values(d_up))
    };
    assert_eq!(run(true), run(false));
    // And burn's own SiLU agrees (the reference the fast SiLU is checked against).
    let reference = values(activation::silu(gate.clone()) * up.clone());
    assert!(max_abs_diff(&run(true).0, &reference) < 1e-5);
}

/// `x·f32(w)` for a half-precision frozen `w`: the product and the input gradient of the
/// f32 product on the rounded weight; a weight that needs a gradient still gets one.
#[test]
fn matmul_cast_matches_the_f32_product_with_gradient() {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = flex_autodiff();
    device.seed(7);
    let normal = Distribution::Normal(0.0, 1.0);
    let (m, k, n) = (40, 24, 16);
    for dtype in [
        burn::tensor::FloatDType::F16,
        burn::tensor::FloatDType::BF16,
    ] {
        let w = Tensor::<2>::random([k, n], normal, &device).cast(dtype);
        let w32 = w.clone().inner().cast(burn::tensor::FloatDType::F32);
        let x = Tensor::<2>::random([m, k], normal, &device).require_grad();
        let g = Tensor::<2>::random([m, n], normal, &device);
        let y = nn::matmul_cast(x.clone(), w.clone());
        let grads = (y.clone() * g.clone()).sum().backward();
        let dx = x.grad(&grads).expect("x is tracked");
        let y_ref = x.clone().inner().matmul(w32.clone());
        let dx_ref = g.clone().inner().matmul(w32.transpose());
        assert!(max_abs_diff(&values(y), &values(y_ref)) < 1e-4, "{dtype:?}");
        assert!(
            max_abs_diff(&values(dx), &values(dx_ref)) < 1e-4,
            "{dtype:?}"
        );

        // A tracked weight is differentiated too (burn's cast and product).
        let w = w.require_grad();
        let y = nn::matmul_cast(x.clone(), w.clone());
        let grads = (y * g.clone()).sum().backward();
        let dw = w.grad(&grads).expect("w is tracked");
        let dw_ref = x.clone().inner().transpose().matmul(g.inner());
        let dw = dw.cast(burn::tensor::FloatDType::F32);
        let scale = values(dw_ref.clone())
            .iter()
            .fold(0f32, |a, v| a.max(v.abs()));
        assert!(
            max_abs_diff(&values(dw), &values(dw_ref)) <= 1e-2 * scale,
            "{dtype:?}"
        );
    }
}

#[test]
fn matmul_scaled_matches_burn_with_gradients() {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = flex_autodiff();
    device.seed(7);
    let normal = Distribution::Normal(0.0, 1.0);
    // Attention's shapes: scores = scale·q·kᵀ + mask (k read through a transposed view, the
    // mask [b, 1, 1, s] broadcast), then probabilities·v; and one large enough to split.
    for (b, h, s, d) in [(2, 3, 7, 4), (4, 6, 64, 32)] {
        let q = Tensor::<4>::random([b, h, s, d], normal, &device);
        let k = Tensor::<4>::random([b, h, s, d], normal, &device);
        let mask = Tensor::<4>::random([b, 1, 1, s], normal, &device);
        let g = Tensor::<4>::random([b, h, s, s], normal, &device);
        let scale = 0.3f32;
        let run = |fast: bool| {
            let (q, k) = (q.clone().require_grad(), k.clone().require_grad());
            let y = if fast {
                nn::matmul_scaled(
                    q.clone(),
                    k.clone().swap_dims(2, 3),
                    scale,
                    Some(mask.clone()),
                )
            } else {
                q.clone()
                    .matmul(k.clone().swap_dims(2, 3))
                    .mul_scalar(scale)
                    + mask.clone()
            };
            let grads = (y.clone() * g.clone()).sum().backward();
            [
                values(y),
                values(q.grad(&grads).expect("q tracked")),
                values(k.grad(&grads).expect("k tracked")),
            ]
        };
        for (fast, reference) in run(true).iter().zip(&run(false)) {
            let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(fast, reference) <= 1e-5 * scale,
                "[{b}, {h}, {s}, {d}]"
            );
        }
        // Unscaled, without a bias, only one side tracked.
        let p = Tensor::<4>::random([b, h, s, s], normal, &device).require_grad();
        let v = Tensor::<4>::random([b, h, s, d], normal, &device);
        let gv = Tensor::<4>::random([b, h, s, d], normal, &device);
        let fast = nn::matmul_scaled(p.clone(), v.clone(), 1.0, None);
        let reference = p.clone().matmul(v.clone());
        let df = p
            .grad(&(fast.clone() * gv.clone()).sum().backward())
            .unwrap();
        let dr = p.grad(&(reference.clone() * gv).sum().backward()).unwrap();
        assert!(max_abs_diff(&values(fast), &values(reference)) < 1e-4);
        assert!(max_abs_diff(&values(df), &values(dr)) < 1e-4);
    }
}

#[test]
fn add_product_matches_burn_with_gradients() {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = flex_autodiff();
    device.seed(8);
    let normal = Distribution::Normal(0.0, 1.0);
    // LoRA's shapes: rank-8 update onto a base output, small and large enough to split.
    for (m, r, n) in [(5, 2, 3), (2048, 8, 384)] {
        let base = Tensor::<2>::random([m, n], normal, &device);
        let h = Tensor::<2>::random([m, r], normal, &device);
        let b = Tensor::<2>::random([r, n], normal, &device);
        let g = Tensor::<2>::random([m, n], normal, &device);
        let run = |fast: bool| {
            let (base, h, b) = (
                base.clone().require_grad(),
                h.clone().require_grad(),
                b.clone().require_grad(),
            );
            let y = if fast {
                nn::add_product(base.clone(), h.clone(), b.clone(), 0.75)
            } else {
                base.clone() + h.clone().matmul(b.clone()).mul_scalar(0.75)
            };
            let grads = (y.clone() * g.clone()).sum().backward();
            [
                values(y),
                values(base.grad(&grads).unwrap()),
                values(h.grad(&grads).unwrap()),
                values(b.grad(&grads).unwrap()),
            ]
        };
        for (fast, reference) in run(true).iter().zip(&run(false)) {
            let scale = reference.iter().fold(1f32, |m, v| m.max(v.abs()));
            assert!(
                max_abs_diff(fast, reference) <= 1e-5 * scale,
                "[{m}, {r}, {n}]"
            );
        }
        // The base tensor itself is not changed by the in-place accumulation.
        let plain = base.clone().inner();
        let before = values(plain.clone());
        let _ = nn::add_product(plain.clone(), h.clone().inner(), b.clone().inner(), 0.75);
        assert_eq!(values(plain), before);
    }
}

/// Under burn's gradient checkpointing the nodes that may be recomputed (GELU, SiLU,
/// SwiGLU, dropout) give their outputs again in the backward, from parents kept or
/// recomputed themselves: the same values and gradients, bit for bit, as on the plain
/// autodiff device, through every node kind of `nn`.
#[test]
fn gradient_checkpointing_recomputes_the_same_bits() {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let run = |device: Device| {
        device.seed(21);
        let normal = Distribution::Normal(0.0, 1.0);
        let drop = DropoutConfig::new(0.2).init();
        let x = Tensor::<2>::random([24, 16], normal, &device).require_grad();
        let w1 = Tensor::<2>::random([16, 32], normal, &device);
        let b1 = Tensor::<1>::random([32], normal, &device);
        let a = Tensor::<2>::random([16, 4], normal, &device).require_grad();
        let b = Tensor::<2>::random([4, 32], normal, &device).require_grad();
        let w2 = Tensor::<2>::random([32, 16], normal, &device).require_grad();
        let g = Tensor::<4>::random([2, 2, 6, 16], normal, &device);
        // A frozen linear with a LoRA update, two activations, a gated product, dropout,
        // a tracked linear, then attention with dropout on its probabilities.
        let h = nn::linear_2d(x.clone(), w1, Some(b1));
        let h = nn::add_product(
            h,
            nn::dropout_linear(&drop, x.clone(), a.clone()),
            b.clone(),
            0.5,
        );
        let h = nn::swiglu(nn::gelu(h.clone()), nn::silu(h));
        let h = nn::dropout(&drop, h);
        let y = nn::linear_2d(h, w2.clone(), None).reshape([2, 2, 6, 16]);
        let bias = Tensor::<4>::zeros([2, 1, 1, 6], &device);
        let out = nn::attention(y.clone(), y.clone() * 0.5, y, bias, Some(&drop));
        let grads = (out.clone() * g).sum().backward();
        let grad = |t: &Tensor<2>| values(t.grad(&grads).expect("tracked"));
        (values(out), grad(&x), grad(&a), grad(&b), grad(&w2))
    };
    let plain = run(flex_autodiff());
    let checkpointing = run(flex_autodiff().gradient_checkpointing());
    assert_eq!(plain, checkpointing);
    // Dropout was active: some of x's gradient passed through dropped places only.
    assert!(plain.1.iter().all(|v| v.is_finite()));
    assert!(plain.2.iter().any(|v| *v != 0.0));
}

/// Grouped-query attention reads `k` and `v` with fewer heads as they are: the values and
/// the gradients of `q`, `k`, `v` equal attention over `k`, `v` repeated per query head
/// (transformers' `repeat_kv`), with a causal bias per row and a padding bias per key, on
/// burn-flex under autodiff and without it.
#[test]
fn grouped_query_attention_equals_repeated_heads() {
    let _seeded = SEEDED_RNG.lock().unwrap_or_else(|e| e.into_inner());
    let device = flex_autodiff();
    device.seed(31);
    let normal = Distribution::Normal(0.0, 1.0);
    let (b, heads, kv_heads, s, d) = (2, 6, 2, 5, 8);
    let q = Tensor::<4>::random([b, heads, s, d], normal, &device);
    let k = Tensor::<4>::random([b, kv_heads, s, d], normal, &device);
    let v = Tensor::<4>::random([b, kv_heads, s, d], normal, &device);
    let g = Tensor::<4>::random([b, heads, s, d], normal, &device);
    let causal: Vec<f32> = (0..s * s)
        .map(|i| if i % s > i / s { -1e9 } else { 0.0 })
        .collect();
    let causal = Tensor::<1>::from_floats(causal.as_slice(), &device).reshape([1, 1, s, s]);
    let padding = Tensor::<4>::random([b, 1, 1, s], normal, &device);
    let repeat = |t: Tensor<4>| {
        t.reshape([b, kv_heads, 1, s, d])
            .repeat_dim(2, heads / kv_heads)
            .reshape([b, heads, s, d])
    };
    for bias in [causal, padding] {
        let run = |grouped: bool| {
            let (q, k, v) = (
                q.clone().require_grad(),
                k.clone().require_grad(),
                v.clone().require_grad(),
            );
            let out = if grouped {
                nn::attention(q.clone(), k.clone(), v.clone(), bias.clone(), None)
            } else {
                nn::attention(
                    q.clone(),
                    repeat(k.clone()),
                    repeat(v.clone()),
                    bias.clone(),
                    None,
                )
            };
            let grads = (out.clone() * g.clone()).sum().backward();
            let grad = |t: &Tensor<4>| values(t.grad(&grads).expect("tracked"));
            [values(out), grad(&q), grad(&k), grad(&v)]
        };
        let (grouped, repeated) = (run(true), run(false));
        for (what, (a, b)) in ["output", "dq", "dk", "dv"]
            .iter()
            .zip(grouped.iter().zip(&repeated))
        {
            assert!(max_abs_diff(a, b) < 1e-5, "{what}: {}", max_abs_diff(a, b));
        }
        // Inference (no autodiff): the same output.
        let plain = |t: &Tensor<4>| t.clone().inner();
        let out = nn::attention(plain(&q), plain(&k), plain(&v), plain(&bias), None);
        assert!(max_abs_diff(&values(out), &repeated[0]) < 1e-5);
    }
}
