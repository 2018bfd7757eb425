//! The LoRA core against PEFT: forward parity, init/merge semantics, training only
//! touches A and B, and `LoraConfig` round trips. Every test runs on each compiled
//! backend (flex; Vulkan through lavapipe in CI).

mod common;

use burn::module::Module;
use burn::optim::{AdamWConfig, GradientsParams};
use burn::tensor::{Distribution, Tensor};
use burn_lora::Error;
use burn_lora::io::SafetensorsFile;
use burn_lora::lora::{
    InitLoraWeights, LinearReader, LinearVisitor, LoraConfig, LoraLinear, LoraTargets,
    ModuleSelector, inject_adapters, join_path, scaling,
};
use burn_lora::models::AnyBackbone;
use common::{devices, fixture, load_bert, load_llama, max_abs_diff, max_rel_err, values};
use serde_json::Value;

fn cases() -> Vec<Value> {
    let text = std::fs::read_to_string(fixture("lora_linear.json")).unwrap();
    let meta: Value = serde_json::from_str(&text).unwrap();
    meta["cases"].as_array().unwrap().clone()
}

fn layer_from_case(
    st: &SafetensorsFile,
    case: &Value,
    device: &burn::tensor::Device,
) -> (LoraLinear, Tensor<3>) {
    let name = case["name"].as_str().unwrap();
    let r = case["r"].as_u64().unwrap() as usize;
    let alpha = case["lora_alpha"].as_f64().unwrap();
    let rslora = case["use_rslora"].as_bool().unwrap();
    let weight = st
        .tensor::<2>(&format!("{name}.weight"), None, device)
        .unwrap();
    let bias = if case["bias"].as_bool().unwrap() {
        Some(
            st.tensor::<1>(&format!("{name}.bias"), None, device)
                .unwrap(),
        )
    } else {
        None
    };
    let mut layer = LoraLinear::from_out_in(weight, bias).unwrap();
    let mut config = LoraConfig::new(r, alpha, &["proj"]);
    config.use_rslora = rslora;
    let params = config.params_for("proj").unwrap();
    assert!(
        (params.scaling - case["scaling"].as_f64().unwrap()).abs() < 1e-12,
        "scaling differs from PEFT's for {name}"
    );
    layer
        .attach_adapter(params, 0.0, &InitLoraWeights::Default, device)
        .unwrap();
    let a = st
        .tensor::<2>(&format!("{name}.lora_A"), None, device)
        .unwrap();
    let b = st
        .tensor::<2>(&format!("{name}.lora_B"), None, device)
        .unwrap();
    layer.set_lora_weights(a, b).unwrap();
    let x = st.tensor::<3>(&format!("{name}.x"), None, device).unwrap();
    (layer, x)
}

/// Must-show 1: forward parity with PEFT's `lora.Linear` (max relative error ≤ 1e-5,
/// relative to the reference output's largest magnitude).
#[test]
fn forward_matches_peft() {
    let st = SafetensorsFile::open(fixture("lora_linear.safetensors")).unwrap();
    let cases = cases();
    assert_eq!(cases.len(), 12, "r in {{1,8,64}} x rslora x bias");
    for (dev_name, device) in devices() {
        for case in &cases {
            let name = case["name"].as_str().unwrap();
            let (layer, x) = layer_from_case(&st, case, &device);
            let y = values(layer.forward(x));
            let y_ref = values(st.tensor::<3>(&format!("{name}.y"), None, &device).unwrap());
            let err = max_rel_err(&y, &y_ref);
            assert!(err <= 1e-5, "{dev_name} {case}: rel err {err}");
            // The fixture's adapter is not a no-op, so this comparison can fail.
            let y_base = values(
                st.tensor::<3>(&format!("{name}.y_base"), None, &device)
                    .unwrap(),
            );
            assert!(max_abs_diff(&y_ref, &y_base) > 1e-3);
        }
    }
}

/// Must-show 2: merge matches PEFT's `merge_and_unload`, merged forward = unmerged
/// forward, unmerge restores W, and default init is an exact no-op.
#[test]
fn merge_unmerge_and_default_init() {
    let st = SafetensorsFile::open(fixture("lora_linear.safetensors")).unwrap();
    for (dev_name, device) in devices() {
        for case in cases() {
            let name = case["name"].as_str().unwrap();
            let (mut layer, x) = layer_from_case(&st, &case, &device);
            let w0 = values(layer.base.dense().unwrap().weight.val());
            let y_unmerged = values(layer.forward(x.clone()));
            layer.merge().unwrap();
            assert!(matches!(layer.merge(), Err(Error::InvalidState(_))));
            let merged_w = values(layer.base.dense().unwrap().weight.val().transpose());
            let merged_ref = values(
                st.tensor::<2>(&format!("{name}.merged_weight"), None, &device)
                    .unwrap(),
            );
            let err = max_abs_diff(&merged_w, &merged_ref);
            assert!(
                err <= 1e-5,
                "{dev_name} {name}: merged W differs from PEFT by {err}"
            );
            let y_merged = values(layer.forward(x.clone()));
            let err = max_rel_err(&y_merged, &y_unmerged);
            assert!(
                err <= 1e-5,
                "{dev_name} {name}: merged forward rel err {err}"
            );
            layer.unmerge().unwrap();
            let err = max_abs_diff(&values(layer.base.dense().unwrap().weight.val()), &w0);
            assert!(
                err <= 1e-6,
                "{dev_name} {name}: unmerge left W off by {err}"
            );
            // Disabling the adapter gives exactly the base output.
            layer.set_adapter_enabled(false).unwrap();
            let y_off = values(layer.forward(x.clone()));
            let y_base = values(
                st.tensor::<3>(&format!("{name}.y_base"), None, &device)
                    .unwrap(),
            );
            assert!(max_rel_err(&y_off, &y_base) <= 1e-5);
        }

        // Default init: B = 0, so the adapted output equals the base output bit for bit.
        let weight = Tensor::<2>::random([24, 32], Distribution::Default, &device);
        let bias = Tensor::<1>::random([24], Distribution::Default, &device);
        let mut layer = LoraLinear::from_out_in(weight, Some(bias)).unwrap();
        let x = Tensor::<3>::random([2, 3, 32], Distribution::Default, &device);
        let y_base = values(layer.forward(x.clone()));
        let config = LoraConfig::new(8, 16.0, &["proj"]);
        layer
            .attach_adapter(
                config.params_for("proj").unwrap(),
                0.0,
                &config.init_lora_weights,
                &device,
            )
            .unwrap();
        assert_eq!(
            values(layer.forward(x)),
            y_base,
            "{dev_name}: default init must be a no-op"
        );
        let a = values(layer.lora_a().unwrap());
        let bound = 1.0 / 32f32.sqrt();
        assert!(
            a.iter().all(|v| v.abs() <= bound),
            "A outside kaiming bound"
        );
        assert!(a.iter().any(|v| *v != 0.0));
        assert!(values(layer.lora_b().unwrap()).iter().all(|v| *v == 0.0));
    }
}

/// Must-show 3: AdamW on a random target changes only A and B; W and b stay
/// bit-identical; the loss goes down.
#[test]
fn training_updates_only_adapter() {
    for (dev_name, plain) in devices() {
        let device = plain.clone().autodiff();
        device.seed(7);
        let weight = Tensor::<2>::random([6, 10], Distribution::Default, &device);
        let bias = Tensor::<1>::random([6], Distribution::Default, &device);
        let mut layer = LoraLinear::from_out_in(weight, Some(bias)).unwrap();
        let mut config = LoraConfig::new(4, 8.0, &["proj"]);
        config.lora_dropout = 0.1;
        layer
            .attach_adapter(
                config.params_for("proj").unwrap(),
                0.1,
                &config.init_lora_weights,
                &device,
            )
            .unwrap();
        let w0 = values(layer.base.dense().unwrap().weight.val());
        let b0 = values(layer.base.dense().unwrap().bias.as_ref().unwrap().val());
        let a0 = values(layer.lora_a().unwrap());
        let bb0 = values(layer.lora_b().unwrap());
        let x = Tensor::<2>::random([16, 10], Distribution::Default, &device);
        let target = Tensor::<2>::random([16, 6], Distribution::Default, &device);
        let mut optim = AdamWConfig::new().init();
        let mut losses = Vec::new();
        for _ in 0..30 {
            let diff = layer.forward(x.clone()) - target.clone();
            let loss = (diff.clone() * diff).mean();
            losses.push(values(loss.clone())[0]);
            let grads = GradientsParams::from_grads(loss.backward(), &layer);
            layer = optim.step(1e-2, layer, grads);
        }
        assert_eq!(
            values(layer.base.dense().unwrap().weight.val()),
            w0,
            "{dev_name}: W changed"
        );
        assert_eq!(
            values(layer.base.dense().unwrap().bias.as_ref().unwrap().val()),
            b0,
            "{dev_name}: b changed"
        );
        assert_ne!(
            values(layer.lora_a().unwrap()),
            a0,
            "{dev_name}: A did not train"
        );
        assert_ne!(
            values(layer.lora_b().unwrap()),
            bb0,
            "{dev_name}: B did not train"
        );
        let (first, last) = (losses[0], *losses.last().unwrap());
        assert!(last < first * 0.9, "{dev_name}: loss {first} -> {last}");
        assert_eq!(layer.trainable_params(), 4 * (10 + 6));
        // Training mode applies LoRA dropout (two forwards differ); the evaluation copy
        // has it off: its forward equals the merged layer's, which has no dropout path.
        assert_ne!(
            values(layer.forward(x.clone())),
            values(layer.forward(x.clone())),
            "{dev_name}: no dropout in training mode"
        );
        let eval = layer.valid();
        let x_plain = x.clone().without_autodiff();
        let mut merged = layer.valid();
        merged.merge().unwrap();
        let diff = max_abs_diff(
            &values(eval.forward(x_plain.clone())),
            &values(merged.forward(x_plain)),
        );
        assert!(
            diff < 1e-5,
            "{dev_name}: evaluation forward off the merged one by {diff}"
        );
    }
}

/// A miniature of PEFT's test model: `encoder.layer.{0,1,2}.attention.self.{query,key,value}`
/// and a `classifier`, to check injection by name against what PEFT adapted.
struct TinyEncoder {
    layers: Vec<[LoraLinear; 3]>,
    classifier: LoraLinear,
}

impl TinyEncoder {
    fn new(device: &burn::tensor::Device) -> Self {
        let lin = |o, i| {
            LoraLinear::from_out_in(Tensor::random([o, i], Distribution::Default, device), None)
                .unwrap()
        };
        TinyEncoder {
            layers: (0..3).map(|_| [lin(8, 8), lin(8, 8), lin(8, 8)]).collect(),
            classifier: lin(3, 8),
        }
    }
}

impl LoraTargets for TinyEncoder {
    fn visit_linears(
        &mut self,
        prefix: &str,
        visitor: &mut LinearVisitor<'_>,
    ) -> burn_lora::Result<()> {
        for (i, layer) in self.layers.iter_mut().enumerate() {
            let p = join_path(prefix, &format!("encoder.layer.{i}.attention.self"));
            for (name, lin) in ["query", "key", "value"].iter().zip(layer.iter_mut()) {
                visitor(&join_path(&p, name), lin)?;
            }
        }
        visitor(&join_path(prefix, "classifier"), &mut self.classifier)
    }

    fn read_linears(&self, prefix: &str, reader: &mut LinearReader<'_>) -> burn_lora::Result<()> {
        for (i, layer) in self.layers.iter().enumerate() {
            let p = join_path(prefix, &format!("encoder.layer.{i}.attention.self"));
            for (name, lin) in ["query", "key", "value"].iter().zip(layer.iter()) {
                reader(&join_path(&p, name), lin)?;
            }
        }
        reader(&join_path(prefix, "classifier"), &self.classifier)
    }

    fn default_targets(&self) -> ModuleSelector {
        ModuleSelector::names(&["query", "value"])
    }
}

/// Must-show 4: a real PEFT `adapter_config.json` round-trips, and injection by name
/// adapts exactly the modules PEFT adapted, with PEFT's ranks and scalings.
#[test]
fn peft_adapter_config_round_trip_and_matching() {
    let text = std::fs::read_to_string(fixture("peft_adapter_config.json")).unwrap();
    let original: Value = serde_json::from_str(&text).unwrap();
    let config: LoraConfig = serde_json::from_str(&text).unwrap();
    config.validate().unwrap();
    assert_eq!(serde_json::to_value(&config).unwrap(), original);
    assert_eq!(config.init_lora_weights, InitLoraWeights::Gaussian);
    assert!(config.use_rslora);

    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("peft_adapter_config.targets.json")).unwrap(),
    )
    .unwrap();
    let (_, device) = devices().remove(0);
    let mut model = TinyEncoder::new(&device);
    let report = inject_adapters(&mut model, &config, &device).unwrap();
    let mut adapted = report.adapted.clone();
    adapted.sort();
    let peft_adapted: Vec<String> = expected["adapted"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(adapted, peft_adapted);
    for path in &adapted {
        let p = config.params_for(path).unwrap();
        assert_eq!(
            p.r as u64,
            expected["ranks"][path].as_u64().unwrap(),
            "{path}"
        );
        let s = expected["scalings"][path].as_f64().unwrap();
        assert!(
            (p.scaling - s).abs() < 1e-12,
            "{path}: {} vs {s}",
            p.scaling
        );
    }
}

/// Must-show 4 (rejections): each invalid field gives its own error variant.
#[test]
fn invalid_configs_are_rejected_specifically() {
    let base = LoraConfig::new(8, 16.0, &["query"]);
    let mut c = base.clone();
    c.r = 0;
    assert!(matches!(
        c.validate(),
        Err(Error::InvalidRank { rank: 0, .. })
    ));
    let mut c = base.clone();
    c.lora_alpha = 0.0;
    assert!(matches!(c.validate(), Err(Error::InvalidAlpha { .. })));
    c.lora_alpha = -1.0;
    assert!(matches!(c.validate(), Err(Error::InvalidAlpha { .. })));
    for d in [1.0, -0.1, f64::NAN] {
        let mut c = base.clone();
        c.lora_dropout = d;
        assert!(matches!(c.validate(), Err(Error::InvalidDropout(_))), "{d}");
    }
    let mut c = base.clone();
    c.target_modules = Some(ModuleSelector::Regex("(unclosed".into()));
    assert!(matches!(
        c.validate(),
        Err(Error::InvalidRegex {
            field: "target_modules",
            ..
        })
    ));
    let mut c = base.clone();
    c.rank_pattern.insert("[".into(), 4);
    assert!(matches!(
        c.validate(),
        Err(Error::InvalidRegex {
            field: "rank_pattern",
            ..
        })
    ));
    let mut c = base.clone();
    c.rank_pattern.insert("query".into(), 0);
    assert!(matches!(c.validate(), Err(Error::InvalidRank { .. })));
    let mut c = base.clone();
    c.bias = burn_lora::lora::LoraBias::All;
    assert!(matches!(
        c.validate(),
        Err(Error::Unsupported { what: "bias", .. })
    ));
    // An initialisation not built here (PiSSA and OLoRA are: tests/pissa_olora.rs).
    let json = r#"{"peft_type": "LORA", "r": 4, "init_lora_weights": "loftq"}"#;
    let c: LoraConfig = serde_json::from_str(json).unwrap();
    assert!(matches!(
        c.validate(),
        Err(Error::Unsupported {
            what: "init_lora_weights",
            ..
        })
    ));

    let (_, device) = devices().remove(0);
    let mut model = TinyEncoder::new(&device);
    let c = LoraConfig::new(8, 16.0, &["q_proj"]);
    let err = inject_adapters(&mut model, &c, &device).unwrap_err();
    assert!(matches!(err, Error::NoTargetMatched { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("encoder.layer.0.attention.self.query")
    );
}

/// `"all-linear"` adapts every linear but the head; scaling follows rsLoRA.
#[test]
fn all_linear_and_rslora_scaling() {
    let (_, device) = devices().remove(0);
    let mut model = TinyEncoder::new(&device);
    let mut c = LoraConfig::new(4, 8.0, &["x"]);
    c.target_modules = Some(ModuleSelector::AllLinear);
    let report = inject_adapters(&mut model, &c, &device).unwrap();
    assert_eq!(report.adapted.len(), 9);
    assert!(model.classifier.adapter.is_none());
    assert_eq!(report.trainable_params, 9 * 4 * 16);
    assert_eq!(scaling(16.0, 64, true), 2.0);
    assert_eq!(scaling(16.0, 8, false), 2.0);
}

/// The read-only visitor sees what the mutable one sees: the same paths in the same order,
/// the same layers (shapes and adapters), for every family.
#[test]
fn read_linears_matches_visit_linears() {
    let (_, device) = devices().remove(0);
    for name in ["tiny-bert", "tiny-distilbert", "tiny-llama", "tiny-glm4"] {
        // Weights only (the fixtures carry no tokenizer); through the one family type.
        let path = fixture(name);
        let mut model = if name.contains("bert") {
            AnyBackbone::Bert(load_bert(&path, &device).unwrap())
        } else {
            AnyBackbone::Llama(load_llama(&path, &device).unwrap())
        };
        // The family's PEFT default targets.
        let mut config = LoraConfig::new(2, 4.0, &[] as &[&str]);
        config.target_modules = None;
        inject_adapters(&mut model, &config, &device).unwrap();
        let seen = |path: &str, l: &LoraLinear| {
            let shape = (l.in_features(), l.out_features());
            (path.to_string(), shape, l.adapter.is_some())
        };
        let mut visited = Vec::new();
        model
            .visit_linears("m", &mut |path, l| {
                visited.push(seen(path, l));
                Ok(())
            })
            .unwrap();
        let mut read = Vec::new();
        model
            .read_linears("m", &mut |path, l| {
                read.push(seen(path, l));
                Ok(())
            })
            .unwrap();
        assert!(visited.len() > 4, "{name}");
        assert!(visited.iter().any(|v| v.2), "{name}: nothing adapted");
        assert_eq!(read, visited, "{name}");
    }
}
