//! Llama-family decoders against transformers: tiny random llama (GQA), mistral, qwen2
//! (q/k/v bias), qwen3 (q/k norm, explicit head_dim) and a sharded bf16 llama with llama3
//! RoPE scaling. Reference: `scripts/make_llama_fixtures.py`; tolerance 1e-4 max abs at
//! every non-padding position.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_lora::classify::{MultiLabelClassifier, Pooling};
use burn_lora::io::SafetensorsFile;
use burn_lora::lora::LoraConfig;
use burn_lora::lora::with_adapters;
use burn_lora::models::{Backbone, EncoderInput, LlamaModel};
use common::{devices, fixture, load_gguf, load_llama, max_abs_diff, values};

fn device() -> Device {
    burn_lora::device::parse_device("flex").unwrap()
}

fn ints(st: &SafetensorsFile, name: &str) -> (Vec<u32>, [usize; 2]) {
    let (v, shape) = st.read_i64(name).unwrap();
    (
        v.into_iter().map(|x| x as u32).collect(),
        [shape[0], shape[1]],
    )
}

#[test]
fn tiny_decoders_match_transformers() {
    // On every usable device (flex, and wgpu on lavapipe in CI): same tolerance.
    for (dev_name, device) in devices() {
        tiny_decoders_match_on(dev_name, &device);
    }
}

fn tiny_decoders_match_on(dev_name: &str, device: &Device) {
    for name in [
        "tiny-llama",
        "tiny-mistral",
        "tiny-qwen2",
        "tiny-qwen3",
        "tiny-llama-bf16-sharded",
        "tiny-glm",
        "tiny-glm4",
    ] {
        let dir = fixture(name);
        let model = load_llama(&dir, device).unwrap();
        let st = SafetensorsFile::open(dir.join("reference.safetensors")).unwrap();
        let (ids, [b, s]) = ints(&st, "input_ids");
        let (mask, _) = ints(&st, "attention_mask");
        let input = EncoderInput::new(&ids, &mask, None, b, s, device).unwrap();
        let ours = values(model.forward(&input));
        let (reference, _) = st.read_f32("last_hidden_state").unwrap();
        let h = model.hidden_size();
        let mut worst = 0f32;
        for (pos, &m) in mask.iter().enumerate() {
            if m == 1 {
                let r = pos * h..(pos + 1) * h;
                worst = worst.max(max_abs_diff(&ours[r.clone()], &reference[r]));
            }
        }
        assert!(worst <= 1e-4, "{name} on {dev_name}: off by {worst}");
    }
}

#[test]
fn peft_default_targets_and_all_linear() {
    let device = device();
    let mut lora = LoraConfig::new(4, 8.0, &[] as &[&str]);
    lora.target_modules = None;
    let (_, report) = with_adapters(
        load_llama(fixture("tiny-llama"), &device).unwrap(),
        &lora,
        &device,
    )
    .unwrap();
    // q_proj 32->32 and v_proj 32->16 per layer, 2 layers, r = 4.
    assert_eq!(report.adapted.len(), 4);
    assert_eq!(report.trainable_params, 2 * (4 * (32 + 32) + 4 * (32 + 16)));
    assert!(
        report
            .adapted
            .contains(&"layers.1.self_attn.v_proj".to_string())
    );
    lora.target_modules = Some(burn_lora::lora::ModuleSelector::AllLinear);
    let (_, report) = with_adapters(
        load_llama(fixture("tiny-llama"), &device).unwrap(),
        &lora,
        &device,
    )
    .unwrap();
    assert_eq!(report.adapted.len(), 14);
    // GLM: q, k, v, o, the fused gate_up_proj and down_proj per layer.
    let (_, report) = with_adapters(
        load_llama(fixture("tiny-glm"), &device).unwrap(),
        &lora,
        &device,
    )
    .unwrap();
    assert_eq!(report.adapted.len(), 12);
    assert!(
        report
            .adapted
            .contains(&"layers.0.mlp.gate_up_proj".to_string())
    );
}

/// `GlmForSequenceClassification` / `Glm4ForSequenceClassification`: the `score` head on
/// the last non-pad token gives transformers' logits (≤ 1e-4), right-padded batch.
#[test]
fn glm_sequence_classification_logits_match_transformers() {
    let device = device();
    for name in ["tiny-glm", "tiny-glm4"] {
        let dir = fixture(name);
        let st = SafetensorsFile::open(dir.join("reference.safetensors")).unwrap();
        let (ids, [b, s]) = ints(&st, "input_ids");
        let (mask, _) = ints(&st, "attention_mask");
        let input = EncoderInput::new(&ids, &mask, None, b, s, &device).unwrap();
        let model = load_llama(&dir, &device).unwrap();
        let hidden = model.hidden_size();
        let mut clf =
            MultiLabelClassifier::new(model, 3, Pooling::LastToken, 0.0, &device).unwrap();
        let (score, _) = st.read_f32("score.weight").unwrap();
        let score = Tensor::<2>::from_data(TensorData::new(score, [3, hidden]), &device);
        clf.head.set_weights(score, None).unwrap();
        let logits = values(clf.forward(&input));
        let (want, _) = st.read_f32("seq_cls_logits").unwrap();
        let err = max_abs_diff(&logits, &want);
        assert!(err <= 1e-4, "{name}: logits off by {err}");
    }
}

/// Last-token pooling picks the last non-pad token for right and left padding alike, and
/// for a batch padded with another id than the config's `pad_token_id` (a tokenizer with
/// its own padding token), where only the attention mask tells the padding.
#[test]
fn last_token_pooling_handles_both_paddings() {
    let device = device();
    let model = load_llama(fixture("tiny-llama"), &device).unwrap();
    let clf = MultiLabelClassifier::new(model, 3, Pooling::LastToken, 0.0, &device).unwrap();
    let pad = clf.backbone.pad_token_id() as i64;
    let other = pad + 1;
    // Row 0 right-padded (last real token at 2), row 1 left-padded (last real at 4), row 2
    // right-padded with another id (last real at 1).
    let ids = vec![
        5, 6, 7, pad, pad, pad, pad, 8, 9, 10, 11, 12, other, other, other,
    ];
    let mask = vec![1, 1, 1, 0, 0, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0];
    let input = EncoderInput {
        input_ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [3, 5]), &device),
        attention_mask: Tensor::<2, Int>::from_data(TensorData::new(mask, [3, 5]), &device),
        token_type_ids: None,
    };
    let hidden = Tensor::<3>::from_data(
        TensorData::new(
            (0..3 * 5 * 32).map(|i| i as f32).collect::<Vec<_>>(),
            [3, 5, 32],
        ),
        &device,
    );
    let pooled = values(clf.pool(hidden.clone(), &input));
    let all = values(hidden);
    assert_eq!(&pooled[..32], &all[2 * 32..3 * 32]);
    assert_eq!(&pooled[32..64], &all[(5 + 4) * 32..(5 + 5) * 32]);
    assert_eq!(&pooled[64..], &all[(10 + 1) * 32..(10 + 2) * 32]);
}

/// A PEFT `SEQ_CLS` adapter written by Python PEFT for `LlamaForSequenceClassification`
/// (`scripts/make_peft_llama_adapter_fixture.py`) gives PEFT's probabilities (≤ 1e-5) on
/// the safetensors base and on the GGUF written from the same weights.
#[test]
fn peft_llama_seq_cls_adapter_matches_on_safetensors_and_gguf() {
    let device = device();
    let bases = [
        load_llama(fixture("tiny-llama"), &device).unwrap(),
        load_gguf(fixture("tiny-llama.gguf"), &device).unwrap(),
    ];
    for base in bases {
        check_peft_seq_cls(base, "peft_seqcls_tiny_llama", &device);
    }
}

/// The same for GLM and GLM-4 (`scripts/make_glm_fixtures.py`): LoRA on q_proj, v_proj,
/// the fused gate_up_proj and down_proj, `score` kept.
#[test]
fn peft_glm_seq_cls_adapters_match() {
    let device = device();
    for name in ["tiny-glm", "tiny-glm4"] {
        let base = load_llama(fixture(name), &device).unwrap();
        check_peft_seq_cls(
            base,
            &format!("peft_seqcls_{}", name.replace('-', "_")),
            &device,
        );
    }
}

/// Load the PEFT adapter `adapter` (and `{adapter}.reference.json`) onto `base` and
/// compare the probabilities with PEFT's.
fn check_peft_seq_cls(base: LlamaModel, adapter: &str, device: &Device) {
    use burn_lora::adapter::{load_adapter_weights, read_adapter};
    use burn_lora::classify::predict_probs;
    use burn_lora::data::EncodedSet;

    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(&format!("{adapter}.reference.json"))).unwrap(),
    )
    .unwrap();
    let rows: Vec<Vec<u32>> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    let want: Vec<f32> = serde_json::from_value::<Vec<Vec<f32>>>(reference["probs"].clone())
        .unwrap()
        .concat();
    let adapter_files = read_adapter(fixture(adapter)).unwrap();
    assert!(adapter_files.meta.is_none());
    let set = EncodedSet {
        labels: vec![vec![]; rows.len()],
        ids: rows,
        num_labels: adapter_files.labels.len(),
        pad_id: reference["pad_token_id"].as_u64().unwrap() as u32,
    };
    let labels = adapter_files.labels.len();
    let mut model =
        MultiLabelClassifier::new(base, labels, Pooling::LastToken, 0.0, device).unwrap();
    assert_eq!(model.head_name, "score");
    load_adapter_weights(&adapter_files, &mut model, device).unwrap();
    let probs = predict_probs(&model, &set, 8, device).unwrap();
    let err = max_abs_diff(&probs, &want);
    assert!(err <= 1e-5, "{adapter}: PEFT probabilities differ by {err}");
}

/// GLM bad input: a `partial_rotary_factor` that leaves a fractional or odd number of
/// rotary channels, and a checkpoint without its fused MLP weight, fail with clear errors.
#[test]
fn glm_bad_configs_and_missing_fused_weight_are_errors() {
    let device = device();
    let dir = std::env::temp_dir().join(format!("burn-lora-badglm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-glm").join(f), dir.join(f)).unwrap();
    }
    let original = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut config: serde_json::Value = serde_json::from_str(&original).unwrap();
    // head_dim 8: 0.3 gives 2.4 channels, 0.375 gives 3 (odd).
    for factor in [0.3, 0.375, 1.5] {
        config["rope_parameters"]["partial_rotary_factor"] = factor.into();
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let err = load_llama(&dir, &device).unwrap_err();
        assert!(
            matches!(err, burn_lora::Error::Unsupported { .. })
                && err.to_string().contains("partial_rotary_factor"),
            "{factor}: {err}"
        );
    }
    // Without head_dim, GLM's default (128, not hidden / heads) applies: the checkpoint's
    // 8-wide heads then do not fit, which the loader says by name.
    let mut no_head_dim: serde_json::Value = serde_json::from_str(&original).unwrap();
    no_head_dim.as_object_mut().unwrap().remove("head_dim");
    std::fs::write(dir.join("config.json"), no_head_dim.to_string()).unwrap();
    let err = load_llama(&dir, &device).unwrap_err();
    assert!(
        matches!(&err, burn_lora::Error::ShapeMismatch { expected, .. } if expected[0] == 4 * 128),
        "{err}"
    );
    std::fs::write(dir.join("config.json"), &original).unwrap();
    common::rewrite_without(&dir, "layers.1.mlp.gate_up_proj.weight");
    let err = load_llama(&dir, &device).unwrap_err();
    assert!(
        matches!(&err, burn_lora::Error::MissingTensor { name, .. } if name.contains("layers.1.mlp.gate_up_proj")),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// No pad id and no eos id: loading fails with a clear error instead of padding with 0;
/// with only eos, eos pads (transformers' fallback).
#[test]
fn padding_id_falls_back_to_eos_and_errors_without_either() {
    let device = device();
    let dir = std::env::temp_dir().join(format!("burn-lora-nopad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("tiny-llama").join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("tiny-llama").join("config.json")).unwrap(),
    )
    .unwrap();
    config["pad_token_id"] = serde_json::Value::Null;
    config["eos_token_id"] = serde_json::json!(2);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    assert_eq!(load_llama(&dir, &device).unwrap().pad_token_id(), 2);
    config["eos_token_id"] = serde_json::Value::Null;
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = load_llama(&dir, &device).unwrap_err();
    assert!(matches!(err, burn_lora::Error::Unsupported { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A few AdamW steps of GLM-4 with LoRA on every linear (the fused gate_up_proj too):
/// the loss on a fixed batch goes down, the frozen weights stay bit-identical.
#[test]
fn glm4_trains_with_lora_on_every_linear() {
    use burn_lora::classify::{LossKind, MultiLabelLoss};
    use burn_lora::data::EncodedSet;
    use burn_lora::lora::{ModuleSelector, inject_adapters};
    use burn_lora::train::{Decay, TrainConfig, Trainer, TrainingLoop};

    let device = device();
    let train_device = device.clone().autodiff();
    device.seed(11);
    let base = load_llama(fixture("tiny-glm4"), &train_device).unwrap();
    let mut model =
        MultiLabelClassifier::new(base, 3, Pooling::LastToken, 0.0, &train_device).unwrap();
    let mut lora = LoraConfig::new(4, 8.0, &[] as &[&str]);
    lora.target_modules = Some(ModuleSelector::AllLinear);
    inject_adapters(&mut model, &lora, &train_device).unwrap();
    let fused = |m: &MultiLabelClassifier<LlamaModel>| {
        let l = m.backbone.layers[1].gate_up_proj.as_ref().unwrap();
        (
            values(l.base.dense().unwrap().weight.val()),
            values(l.lora_b().unwrap()),
        )
    };
    let (w0, b0) = fused(&model);
    // Label j is on when token 10 + j occurs in the row.
    let ids: Vec<Vec<u32>> = (0..8u32)
        .map(|i| (0..6).map(|j| 10 + (i * 7 + j * 5) % 40).collect())
        .collect();
    let labels = ids
        .iter()
        .map(|row| (0..3).filter(|j| row.contains(&(10 + *j as u32))).collect())
        .collect();
    let set = EncodedSet {
        ids,
        labels,
        num_labels: 3,
        pad_id: 0,
    };
    let config = TrainConfig::default()
        .with_lr(5e-4)
        .with_decay(Decay::Constant)
        .with_progress(false);
    let mut trainer = Trainer::new(model, MultiLabelLoss::new(LossKind::Bce), config, None);
    let batch = set.batch(&(0..8).collect::<Vec<_>>(), &device);
    let losses: Vec<f32> = (0..10)
        .map(|_| {
            let loss = trainer.train_step(&batch).unwrap();
            trainer.optimizer_step(1e-2).unwrap();
            loss
        })
        .collect();
    assert!(
        losses[9] < 0.8 * losses[0],
        "loss did not go down: {losses:?}"
    );
    let (w1, b1) = fused(trainer.model());
    assert_eq!(w1, w0, "the frozen gate_up_proj weight changed");
    assert_ne!(b1, b0, "the gate_up_proj adapter did not train");
}
