//! Llama-family decoders against transformers: tiny random llama (GQA), mistral, qwen2
//! (q/k/v bias), qwen3 (q/k norm, explicit head_dim) and a sharded bf16 llama with llama3
//! RoPE scaling. Reference: `scripts/make_llama_fixtures.py`; tolerance 1e-4 max abs at
//! every non-padding position.

mod common;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_lora::classify::{MultiLabelClassifier, Pooling};
use burn_lora::io::SafetensorsFile;
use burn_lora::lora::LoraConfig;
use burn_lora::models::{Backbone, EncoderInput, LlamaModel};
use common::{fixture, max_abs_diff, values};

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
    let device = device();
    for name in [
        "tiny-llama",
        "tiny-mistral",
        "tiny-qwen2",
        "tiny-qwen3",
        "tiny-llama-bf16-sharded",
    ] {
        let dir = fixture(name);
        let model = LlamaModel::load(&dir, &device).unwrap();
        let st = SafetensorsFile::open(dir.join("reference.safetensors")).unwrap();
        let (ids, [b, s]) = ints(&st, "input_ids");
        let (mask, _) = ints(&st, "attention_mask");
        let input = EncoderInput::from_rows(&ids, &mask, None, b, s, &device).unwrap();
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
        assert!(worst <= 1e-4, "{name}: off by {worst}");
    }
}

#[test]
fn peft_default_targets_and_all_linear() {
    let device = device();
    let mut lora = LoraConfig::new(4, 8.0, &[] as &[&str]);
    lora.target_modules = None;
    let (_, report) = LlamaModel::from_pretrained(fixture("tiny-llama"), &lora, &device).unwrap();
    // q_proj 32->32 and v_proj 32->16 per layer, 2 layers, r = 4.
    assert_eq!(report.adapted.len(), 4);
    assert_eq!(report.trainable_params, 2 * (4 * (32 + 32) + 4 * (32 + 16)));
    assert!(
        report
            .adapted
            .contains(&"layers.1.self_attn.v_proj".to_string())
    );
    lora.target_modules = Some(burn_lora::lora::ModuleSelector::AllLinear);
    let (_, report) = LlamaModel::from_pretrained(fixture("tiny-llama"), &lora, &device).unwrap();
    assert_eq!(report.adapted.len(), 14);
}

/// Last-token pooling picks the last non-pad token for right and left padding alike.
#[test]
fn last_token_pooling_handles_both_paddings() {
    let device = device();
    let model = LlamaModel::load(fixture("tiny-llama"), &device).unwrap();
    let clf = MultiLabelClassifier::new(model, 3, Pooling::LastToken, 0.0, &device).unwrap();
    let pad = clf.backbone.pad_token_id() as i64;
    // Row 0 right-padded (last real token at 2), row 1 left-padded (last real at 4).
    let ids = vec![5, 6, 7, pad, pad, pad, pad, 8, 9, 10];
    let mask = vec![1, 1, 1, 0, 0, 0, 0, 1, 1, 1];
    let input = EncoderInput {
        input_ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [2, 5]), &device),
        attention_mask: Tensor::<2, Int>::from_data(TensorData::new(mask, [2, 5]), &device),
        token_type_ids: None,
    };
    let hidden = Tensor::<3>::from_data(
        TensorData::new(
            (0..2 * 5 * 32).map(|i| i as f32).collect::<Vec<_>>(),
            [2, 5, 32],
        ),
        &device,
    );
    let pooled = values(clf.pool(hidden.clone(), &input));
    let all = values(hidden);
    assert_eq!(&pooled[..32], &all[2 * 32..3 * 32]);
    assert_eq!(&pooled[32..], &all[(5 + 4) * 32..(5 + 5) * 32]);
}

/// A PEFT `SEQ_CLS` adapter written by Python PEFT for `LlamaForSequenceClassification`
/// (`scripts/make_peft_llama_adapter_fixture.py`) gives PEFT's probabilities (≤ 1e-5) on
/// the safetensors base and on the GGUF written from the same weights.
#[test]
fn peft_llama_seq_cls_adapter_matches_on_safetensors_and_gguf() {
    use burn_lora::classify::predict_probs;
    use burn_lora::data::EncodedSet;
    use burn_lora::io::peft::{load_adapter_weights, read_adapter};

    let device = device();
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("peft_seqcls_tiny_llama.reference.json")).unwrap(),
    )
    .unwrap();
    let rows: Vec<Vec<u32>> = serde_json::from_value(reference["input_ids"].clone()).unwrap();
    let want: Vec<f32> = serde_json::from_value::<Vec<Vec<f32>>>(reference["probs"].clone())
        .unwrap()
        .concat();
    let adapter = read_adapter(fixture("peft_seqcls_tiny_llama")).unwrap();
    assert!(adapter.meta.is_none());
    let set = EncodedSet {
        labels: vec![vec![]; rows.len()],
        ids: rows,
        num_labels: adapter.labels.len(),
        pad_id: reference["pad_token_id"].as_u64().unwrap() as u32,
    };
    for base in [
        LlamaModel::load(fixture("tiny-llama"), &device).unwrap(),
        LlamaModel::load_gguf(fixture("tiny-llama.gguf"), &device).unwrap(),
    ] {
        let mut model =
            MultiLabelClassifier::new(base, adapter.labels.len(), Pooling::LastToken, 0.0, &device)
                .unwrap();
        assert_eq!(model.head_name, "score");
        load_adapter_weights(&adapter, &mut model, &device).unwrap();
        let probs = predict_probs(&model, &set, 8, &device).unwrap();
        let err = max_abs_diff(&probs, &want);
        assert!(err <= 1e-5, "PEFT probabilities differ by {err}");
    }
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
    assert_eq!(LlamaModel::load(&dir, &device).unwrap().pad_token_id(), 2);
    config["eos_token_id"] = serde_json::Value::Null;
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    let err = LlamaModel::load(&dir, &device).unwrap_err();
    assert!(matches!(err, burn_lora::Error::Unsupported { .. }), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
