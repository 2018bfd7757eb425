//! DoRA (PEFT's `use_dora`) on one linear against PEFT's fixtures
//! (`scripts/make_dora_fixtures.py`): the magnitude's initial value, the forward through
//! both of PEFT's branches, the gradients of A, B and the magnitude, merge and unmerge.
//! Tolerances: 1e-5 relative to the reference's largest magnitude (f32 products in another
//! order); every device compiled in (flex; Vulkan through lavapipe in CI).

mod common;

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::{Device, Tensor};
use burn_lora::io::SafetensorsFile;
use burn_lora::lora::{InitLoraWeights, LoraConfig, LoraLinear};
use common::{devices, fixture, max_abs_diff, max_rel_err, values};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture("dora_linear.json")).unwrap();
    let meta: Value = serde_json::from_str(&text).unwrap();
    meta["cases"].as_array().unwrap().clone()
}

/// The case's layer with PEFT's A and B, DoRA on, `dropout` on its adapter; the magnitude
/// still the one `attach_adapter` drew for random factors.
fn layer(st: &SafetensorsFile, case: &Value, dropout: f64, device: &Device) -> LoraLinear {
    let name = case["name"].as_str().unwrap();
    let t2 = |key: &str| {
        st.tensor::<2>(&format!("{name}.{key}"), None, device)
            .unwrap()
    };
    let bias = case["bias"].as_bool().unwrap().then(|| {
        st.tensor::<1>(&format!("{name}.bias"), None, device)
            .unwrap()
    });
    let mut layer = LoraLinear::from_out_in(t2("weight"), bias).unwrap();
    let mut config = LoraConfig::new(
        case["r"].as_u64().unwrap() as usize,
        case["lora_alpha"].as_f64().unwrap(),
        &["proj"],
    );
    config.use_rslora = case["use_rslora"].as_bool().unwrap();
    config.use_dora = true;
    let params = config.params_for("proj").unwrap();
    assert!(params.dora);
    assert!((params.scaling - case["scaling"].as_f64().unwrap()).abs() < 1e-12);
    layer
        .attach_adapter(params, dropout, &InitLoraWeights::Random, device)
        .unwrap();
    layer.set_lora_weights(t2("lora_A"), t2("lora_B")).unwrap();
    layer
}

fn reference(st: &SafetensorsFile, case: &Value, key: &str) -> Vec<f32> {
    let name = case["name"].as_str().unwrap();
    st.read_f32(&format!("{name}.{key}")).unwrap().0
}

fn input<const D: usize>(
    st: &SafetensorsFile,
    case: &Value,
    key: &str,
    device: &Device,
) -> Tensor<D> {
    let name = case["name"].as_str().unwrap();
    st.tensor::<D>(&format!("{name}.{key}"), None, device)
        .unwrap()
}

/// Gradients of every parameter that has one, with its shape, in visiting order.
struct Grads<'a> {
    grads: &'a GradientsParams,
    found: Vec<(Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Grads<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.found.push((g.dims().to_vec(), values(g)));
        }
    }
}

#[test]
fn dora_matches_peft() {
    let st = SafetensorsFile::open(fixture("dora_linear.safetensors")).unwrap();
    let cases = cases();
    assert_eq!(cases.len(), 8, "r in {{2,8}} x rslora x bias");
    for (dev_name, device) in devices() {
        for case in &cases {
            let name = case["name"].as_str().unwrap();
            let what = format!("{dev_name} {name}");
            let mut layer = layer(&st, case, 0.0, &device);

            // Init: m = ||W + s BA|| per row, from PEFT's W, A and B.
            layer.reset_dora_magnitude().unwrap();
            let m0 = values(layer.lora_magnitude().unwrap());
            let err = max_rel_err(&m0, &reference(&st, case, "magnitude_init"));
            assert!(err <= 1e-5, "{what}: initial magnitude rel err {err}");

            // Forward (no dropout branch) with a magnitude off the norm.
            layer
                .set_lora_magnitude(input::<1>(&st, case, "magnitude", &device))
                .unwrap();
            let x = input::<3>(&st, case, "x", &device);
            let y = values(layer.forward(x.clone()));
            let y_ref = reference(&st, case, "y");
            let err = max_rel_err(&y, &y_ref);
            assert!(err <= 1e-5, "{what}: forward rel err {err}");
            // The magnitude matters: the plain-LoRA output differs.
            let mut plain = layer.clone();
            plain.reset_dora_magnitude().unwrap();
            assert!(max_abs_diff(&values(plain.forward(x.clone())), &y_ref) > 1e-3);

            // Merge: W' = m / ||W + s BA|| (W + s BA); the merged layer gives the same
            // output; unmerge restores W.
            let w0 = values(layer.base.dense().unwrap().weight.val());
            layer.merge().unwrap();
            let merged = values(layer.base.dense().unwrap().weight.val().transpose());
            let err = max_rel_err(&merged, &reference(&st, case, "merged_weight"));
            assert!(err <= 1e-5, "{what}: merged weight rel err {err}");
            let err = max_rel_err(&values(layer.forward(x.clone())), &y_ref);
            assert!(err <= 1e-5, "{what}: merged forward rel err {err}");
            layer.unmerge().unwrap();
            let err = max_rel_err(&values(layer.base.dense().unwrap().weight.val()), &w0);
            assert!(err <= 1e-5, "{what}: unmerge left W off by {err}");
            let err = max_rel_err(&values(layer.forward(x.clone())), &y_ref);
            assert!(err <= 1e-5, "{what}: unmerged forward rel err {err}");

            // Training: gradients of sum(y * gy) for A, B and m (the norm held constant).
            let train_device = device.clone().autodiff();
            let mut layer = self::layer(&st, case, 0.0, &train_device);
            layer
                .set_lora_magnitude(input::<1>(&st, case, "magnitude", &train_device))
                .unwrap();
            let x = input::<3>(&st, case, "x", &train_device);
            let gy = input::<3>(&st, case, "gy", &train_device);
            let loss = (layer.forward(x.clone()) * gy).sum();
            let grads = GradientsParams::from_grads(loss.backward(), &layer);
            let mut visitor = Grads {
                grads: &grads,
                found: Vec::new(),
            };
            layer.visit(&mut visitor);
            let r = case["r"].as_u64().unwrap() as usize;
            let grad_of = |shape: &[usize]| {
                let found: Vec<_> = visitor.found.iter().filter(|(s, _)| s == shape).collect();
                assert_eq!(found.len(), 1, "{what}: one gradient of shape {shape:?}");
                found[0].1.clone()
            };
            // A and B are stored transposed ([in, r], [r, out]).
            let transpose = |v: &[f32], rows: usize, cols: usize| -> Vec<f32> {
                (0..cols)
                    .flat_map(|c| (0..rows).map(move |r| v[r * cols + c]))
                    .collect()
            };
            for (key, got) in [
                ("grad_A", transpose(&grad_of(&[32, r]), 32, r)),
                ("grad_B", transpose(&grad_of(&[r, 24]), r, 24)),
                ("grad_magnitude", grad_of(&[24])),
            ] {
                let err = max_rel_err(&got, &reference(&st, case, key));
                assert!(err <= 1e-5, "{what}: {key} rel err {err}");
            }
            assert_eq!(visitor.found.len(), 3, "{what}: only A, B and m train");

            // PEFT's dropout branch (the base product of the dropped-out input), at a rate
            // too small to drop anything: the same output by the other formula.
            let layer = self::layer(&st, case, 1e-12, &train_device);
            let mut layer = layer;
            layer
                .set_lora_magnitude(input::<1>(&st, case, "magnitude", &train_device))
                .unwrap();
            let y = values(layer.forward(x));
            let err = max_rel_err(&y, &reference(&st, case, "y_dropout_path"));
            assert!(err <= 1e-5, "{what}: dropout-branch forward rel err {err}");
        }
    }
}
