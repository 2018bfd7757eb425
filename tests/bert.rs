//! BERT-family backbones against transformers: real all-MiniLM-L6-v2 (fetched by
//! `scripts/fetch-models.sh`), tiny random BERT / RoBERTa (sharded) / DistilBERT
//! checkpoints, tokenisation, loader errors and PEFT's trainable-parameter count.
//! Reference values: `scripts/make_bert_fixtures.py`. Tolerance: max abs diff ≤ 1e-4 at
//! every non-padding position.

mod common;

use burn_lora::lora::with_adapters;
use std::path::{Path, PathBuf};

use burn::tensor::Device;
use burn_lora::Error;
use burn_lora::io::SafetensorsFile;
use burn_lora::lora::LoraConfig;
use burn_lora::models::{Backbone, BertConfig, EncoderInput};
use burn_lora::tokenize::TextTokenizer;
use common::{devices, fixture, load_bert, max_abs_diff, rewrite_without, values};
use serde_json::Value;

fn device() -> Device {
    burn_lora::device::parse_device("flex").unwrap()
}

fn minilm_dir() -> PathBuf {
    let dir = common::repo_root().join("models/all-MiniLM-L6-v2");
    assert!(
        dir.join("model.safetensors").exists(),
        "{} missing: run scripts/fetch-models.sh",
        dir.display()
    );
    dir
}

fn ints(st: &SafetensorsFile, name: &str) -> (Vec<u32>, [usize; 2]) {
    let (v, shape) = st.read_i64(name).unwrap();
    (
        v.into_iter().map(|x| x as u32).collect(),
        [shape[0], shape[1]],
    )
}

fn input_from(st: &SafetensorsFile, device: &Device) -> (EncoderInput, Vec<u32>, [usize; 2]) {
    let (ids, [b, s]) = ints(st, "input_ids");
    let (mask, _) = ints(st, "attention_mask");
    let types = st
        .contains("token_type_ids")
        .then(|| ints(st, "token_type_ids").0);
    let input = EncoderInput::new(&ids, &mask, types.as_deref(), b, s, device).unwrap();
    (input, mask, [b, s])
}

/// Max abs diff over non-padding positions of `[b, s, h]` tensors.
fn masked_diff(ours: &[f32], reference: &[f32], mask: &[u32], hidden: usize) -> f32 {
    let mut worst = 0f32;
    for (pos, &m) in mask.iter().enumerate() {
        if m == 1 {
            let r = pos * hidden..(pos + 1) * hidden;
            worst = worst.max(max_abs_diff(&ours[r.clone()], &reference[r]));
        }
    }
    worst
}

fn check_parity(dir: &Path, reference: &Path, device: &Device) {
    let device = device.clone();
    let model = load_bert(dir, &device).unwrap();
    let st = SafetensorsFile::open(reference).unwrap();
    let (input, mask, _) = input_from(&st, &device);
    let hidden = model.forward(&input);
    let h = model.hidden_size();
    let ours = values(hidden.clone());
    let (reference_h, _) = st.read_f32("last_hidden_state").unwrap();
    let err = masked_diff(&ours, &reference_h, &mask, h);
    assert!(
        err <= 1e-4,
        "{} on {device:?}: last hidden state off by {err}",
        dir.display()
    );
    if st.contains("pooler_output") {
        let pooled = values(model.pool(hidden).expect("model has a pooler"));
        let (reference_p, _) = st.read_f32("pooler_output").unwrap();
        let err = max_abs_diff(&pooled, &reference_p);
        assert!(err <= 1e-4, "{}: pooler output off by {err}", dir.display());
    }
}

#[test]
fn minilm_matches_transformers() {
    check_parity(
        &minilm_dir(),
        &fixture("minilm_reference.safetensors"),
        &device(),
    );
}

#[test]
fn tiny_random_bert_family_matches_transformers() {
    // On every usable device (flex, and wgpu on lavapipe in CI): same tolerance.
    for (_, device) in devices() {
        for name in ["tiny-bert", "tiny-roberta", "tiny-distilbert"] {
            let dir = fixture(name);
            check_parity(&dir, &dir.join("reference.safetensors"), &device);
        }
    }
}

#[test]
fn tokenizer_matches_transformers() {
    let data: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("minilm_tokens.json")).unwrap())
            .unwrap();
    let tok = TextTokenizer::from_file(
        minilm_dir().join("tokenizer.json"),
        data["max_len"].as_u64().unwrap() as usize,
    )
    .unwrap();
    let strings = data["strings"].as_array().unwrap();
    assert!(strings.len() >= 20);
    for s in strings {
        let text = s["text"].as_str().unwrap();
        let expected: Vec<u32> = serde_json::from_value(s["ids"].clone()).unwrap();
        assert_eq!(tok.encode_ids(text).unwrap(), expected, "text {text:?}");
    }
    let pair = &data["pair"];
    let batch = tok
        .encode_pairs(&[(pair["a"].as_str().unwrap(), pair["b"].as_str().unwrap())])
        .unwrap();
    let ids: Vec<u32> = serde_json::from_value(pair["ids"].clone()).unwrap();
    let types: Vec<u32> = serde_json::from_value(pair["type_ids"].clone()).unwrap();
    assert_eq!((batch.ids, batch.type_ids), (ids, types));

    // Our dynamic padding reproduces transformers' padded batch (not the baked-in 128).
    let st = SafetensorsFile::open(fixture("minilm_reference.safetensors")).unwrap();
    let (ids, [b, s]) = ints(&st, "input_ids");
    let (mask, _) = ints(&st, "attention_mask");
    let texts: Vec<&str> = strings
        .iter()
        .take(b)
        .map(|v| v["text"].as_str().unwrap())
        .collect();
    let batch = tok.encode_batch(&texts).unwrap();
    assert_eq!((batch.batch, batch.seq), (b, s));
    assert_eq!(batch.ids, ids);
    assert_eq!(batch.attention_mask, mask);
}

#[test]
fn lora_trainable_params_match_peft() {
    let counts: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("minilm_peft_counts.json")).unwrap())
            .unwrap();
    let device = device();
    let config = LoraConfig::new(8, 16.0, &["query", "value"]);
    let (_, report) =
        with_adapters(load_bert(minilm_dir(), &device).unwrap(), &config, &device).unwrap();
    // The LoRA part only (PEFT on BertModel); the 71-label head adds 71·384 + 71.
    assert_eq!(
        report.trainable_params as u64,
        counts["bert_model_lora_only"].as_u64().unwrap()
    );
    assert_eq!(report.adapted.len(), 12);
    assert_eq!(
        (report.trainable_params + 71 * 384 + 71) as u64,
        counts["seq_cls_71_labels_with_classifier"]
            .as_u64()
            .unwrap()
    );
}

/// A scratch copy of the tiny BERT checkpoint to break.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-lora-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-bert").join(f), dir.join(f)).unwrap();
    }
    dir
}

#[test]
fn broken_checkpoints_give_specific_errors() {
    let device = device();

    let dir = scratch("missing");
    rewrite_without(&dir, "encoder.layer.1.attention.self.value.weight");
    match load_bert(&dir, &device) {
        Err(Error::MissingTensor { name, .. }) => {
            assert_eq!(name, "encoder.layer.1.attention.self.value.weight")
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }

    let dir = scratch("shape");
    let cfg = std::fs::read_to_string(dir.join("config.json")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        cfg.replace("\"intermediate_size\": 37", "\"intermediate_size\": 38"),
    )
    .unwrap();
    match load_bert(&dir, &device) {
        Err(Error::ShapeMismatch {
            name,
            expected,
            actual,
        }) => {
            assert_eq!(name, "encoder.layer.0.intermediate.dense.weight");
            assert_eq!((expected, actual), (vec![38, 32], vec![37, 32]));
        }
        other => panic!("expected ShapeMismatch, got {other:?}"),
    }

    let dir = scratch("truncated");
    let bytes = std::fs::read(dir.join("model.safetensors")).unwrap();
    std::fs::write(dir.join("model.safetensors"), &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        load_bert(&dir, &device),
        Err(Error::Format { .. })
    ));
    std::fs::write(dir.join("model.safetensors"), &bytes[..5]).unwrap();
    assert!(matches!(
        load_bert(&dir, &device),
        Err(Error::Format { .. })
    ));

    // A broken config.json, through the entry users call (`models::load` reads the config
    // before the tokenizer, so these fixtures need none).
    let dir = scratch("config");
    let load = |dir: &std::path::Path| {
        burn_lora::models::load(dir, &burn_lora::models::LoadOptions::new(32), &device)
    };
    std::fs::write(dir.join("config.json"), "{ not json").unwrap();
    let err = load(&dir).unwrap_err();
    assert!(
        matches!(&err, Error::Format { path, .. } if path.ends_with("config.json")),
        "{err}"
    );
    std::fs::write(dir.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap();
    let err = load(&dir).unwrap_err();
    assert!(matches!(
        err,
        Error::Unsupported {
            what: "model_type",
            ..
        }
    ));
    assert!(
        err.to_string().contains("bert, roberta, distilbert"),
        "{err}"
    );
    let e = r#"{"model_type": "bert", "vocab_size": 10}"#.parse::<BertConfig>().unwrap_err();
    assert!(matches!(e, Error::Json(_)), "{e}");
    std::fs::remove_file(dir.join("config.json")).unwrap();
    assert!(matches!(load(&dir), Err(Error::Io { .. })));
}

#[test]
fn lora_on_bert_starts_as_a_no_op_and_can_be_merged() {
    let device = device();
    let dir = fixture("tiny-bert");
    let st = SafetensorsFile::open(dir.join("reference.safetensors")).unwrap();
    let (input, _, _) = input_from(&st, &device);
    let base = values(load_bert(&dir, &device).unwrap().forward(&input));
    let mut config = LoraConfig::new(4, 8.0, &["query", "value", "intermediate.dense"]);
    let (model, report) =
        with_adapters(load_bert(&dir, &device).unwrap(), &config, &device).unwrap();
    assert_eq!(report.adapted.len(), 6);
    assert_eq!(values(model.forward(&input)), base);
    config.init_lora_weights = burn_lora::lora::InitLoraWeights::Random;
    let (mut model, _) =
        with_adapters(load_bert(&dir, &device).unwrap(), &config, &device).unwrap();
    let adapted = values(model.forward(&input));
    assert!(max_abs_diff(&adapted, &base) > 1e-3);
    burn_lora::lora::for_each_adapted(&mut model, |_, l| l.merge()).unwrap();
    let merged = values(model.forward(&input));
    assert!(max_abs_diff(&merged, &adapted) < 1e-4);
}
