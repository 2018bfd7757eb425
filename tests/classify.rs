//! Multi-label head pieces against references: losses (PyTorch / formula), metrics
//! (scikit-learn, zero_division=0), threshold tuning, data loading errors, and adapters
//! in PEFT's format both ways (ours round-trips; Python PEFT's loads and matches its
//! probabilities within 1e-4). References: `scripts/make_head_fixtures.py`,
//! `scripts/make_peft_adapter_fixture.py`.

mod common;

use std::path::PathBuf;

use burn::tensor::{Device, Tensor, TensorData};
use burn_lora::Error;
use burn_lora::adapter::{
    AdapterContents, AdapterMeta, load_adapter_weights, read_adapter, save_adapter,
};
use burn_lora::classify::{
    LossKind, MultiLabelClassifier, MultiLabelLoss, Pooling, Scores, ThresholdMode, Thresholds,
    evaluate, predict_probs, tune_thresholds,
};
use burn_lora::data::{
    DataSplits, EncodedSet, Example, LabelSet, UnknownLabelPolicy, load_csv, load_jsonl,
};
use burn_lora::lora::{InitLoraWeights, LoraConfig, inject_adapters};
use burn_lora::models::Backbone;
use burn_lora::tokenize::TextTokenizer;
use common::{fixture, load_bert, max_abs_diff, values};
use serde_json::Value;

fn device() -> Device {
    burn_lora::device::parse_device("flex").unwrap()
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("multilabel_reference.json")).unwrap())
        .unwrap()
}

fn matrix(v: &Value) -> (Vec<f32>, [usize; 2]) {
    let rows = v.as_array().unwrap();
    let cols = rows[0].as_array().unwrap().len();
    let flat = rows
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
        })
        .collect();
    (flat, [rows.len(), cols])
}

/// Losses equal PyTorch's (BCE, pos_weight) and the reference formulas (focal, ASL)
/// within 1e-5 relative.
#[test]
fn losses_match_references() {
    let r = &reference()["losses"];
    let device = device();
    let (logits, shape) = matrix(&r["logits"]);
    let (targets, _) = matrix(&r["targets"]);
    let logits = Tensor::<2>::from_data(TensorData::new(logits, shape), &device);
    let targets = Tensor::<2>::from_data(TensorData::new(targets, shape), &device);
    let pw: Vec<f32> = r["pos_weight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    let check = |loss: MultiLabelLoss, key: &str| {
        let got = values(loss.forward(logits.clone(), targets.clone()))[0] as f64;
        let want = r[key].as_f64().unwrap();
        assert!(
            ((got - want) / want).abs() < 1e-5,
            "{key}: got {got}, want {want}"
        );
    };
    check(MultiLabelLoss::new(LossKind::Bce), "bce");
    let mut weighted = MultiLabelLoss::new(LossKind::Bce);
    weighted.pos_weight = Some(Tensor::from_data(TensorData::new(pw, [shape[1]]), &device));
    check(weighted, "bce_pos_weight");
    check(MultiLabelLoss::new(LossKind::focal()), "focal_g2");
    check(
        MultiLabelLoss::new(LossKind::Focal {
            gamma: 2.0,
            alpha: Some(0.25),
        }),
        "focal_g2_a025",
    );
    check(MultiLabelLoss::new(LossKind::asl()), "asl_default");
    check(
        MultiLabelLoss::new(LossKind::Asl {
            gamma_pos: 1.0,
            gamma_neg: 2.0,
            clip: 0.0,
            eps: 1e-8,
        }),
        "asl_g1_g2_noclip",
    );
    assert!(matches!(
        LossKind::parse("hinge"),
        Err(Error::Unsupported { .. })
    ));
}

/// Metrics equal scikit-learn's (zero_division=0) to 1e-12.
#[test]
fn metrics_match_sklearn() {
    let r = &reference()["metrics"];
    let (probs, [_, l]) = matrix(&r["probs"]);
    let (targets, _) = matrix(&r["targets"]);
    let targets: Vec<u8> = targets.iter().map(|&v| v as u8).collect();
    let scores = Scores::new(&probs, &targets, l).unwrap();
    for at in r["at"].as_array().unwrap() {
        let t = at["threshold"].as_f64().unwrap() as f32;
        let m = evaluate(scores, &Thresholds::global(t, l, false));
        let pairs = [
            ("micro_precision", m.micro_precision),
            ("micro_recall", m.micro_recall),
            ("micro_f1", m.micro_f1),
            ("macro_precision", m.macro_precision),
            ("macro_recall", m.macro_recall),
            ("macro_f1", m.macro_f1),
            ("samples_precision", m.samples_precision),
            ("samples_recall", m.samples_recall),
            ("samples_f1", m.samples_f1),
            ("hamming_loss", m.hamming_loss),
            ("subset_accuracy", m.subset_accuracy),
        ];
        for (k, got) in pairs {
            let want = at[k].as_f64().unwrap();
            assert!((got - want).abs() < 1e-12, "t={t} {k}: {got} vs {want}");
        }
        for (j, s) in m.per_label.iter().enumerate() {
            let pl = &at["per_label"];
            assert!((s.precision - pl["precision"][j].as_f64().unwrap()).abs() < 1e-12);
            assert!((s.recall - pl["recall"][j].as_f64().unwrap()).abs() < 1e-12);
            assert!((s.f1 - pl["f1"][j].as_f64().unwrap()).abs() < 1e-12);
            assert_eq!(s.support as u64, pl["support"][j].as_u64().unwrap());
        }
    }
}

/// Tuning: the tuned global threshold beats every grid point; per-label thresholds never
/// lower a label's F1; labels with too few positives fall back; top-1 fills empty rows.
#[test]
fn threshold_tuning() {
    let r = &reference()["metrics"];
    let (probs, [n, l]) = matrix(&r["probs"]);
    let (targets, _) = matrix(&r["targets"]);
    let targets: Vec<u8> = targets.iter().map(|&v| v as u8).collect();
    let scores = Scores::new(&probs, &targets, l).unwrap();
    let global = tune_thresholds(scores, ThresholdMode::Global, 3, false);
    let best = evaluate(scores, &global).micro_f1;
    for i in 1..100 {
        let t = i as f32 / 100.0;
        assert!(evaluate(scores, &Thresholds::global(t, l, false)).micro_f1 <= best + 1e-12);
    }
    let per = tune_thresholds(scores, ThresholdMode::PerLabel, 3, false);
    let mg = evaluate(scores, &global);
    let mp = evaluate(scores, &per);
    for j in 0..l {
        assert!(
            mp.per_label[j].f1 >= mg.per_label[j].f1 - 1e-12,
            "label {j}"
        );
    }
    assert_eq!(
        per.per_label[5], global.global,
        "label without positives keeps global"
    );
    let top1 = Thresholds::global(0.999, l, true);
    let pred = top1.apply(&probs);
    for row in pred.chunks(l) {
        assert_eq!(row.iter().map(|&v| v as usize).sum::<usize>(), 1);
    }
    assert_eq!(pred.len(), n * l);
    assert!(Scores::new(&probs[..5], &targets[..5], l).is_err());
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-lora-data-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn data_loading_errors_and_formats() {
    let dir = scratch("jsonl");
    let labels = LabelSet::new(vec!["a".into(), "b".into()]).unwrap();
    let p = dir.join("valid.jsonl");
    std::fs::write(
        &p,
        "{\"text\": \"x\", \"labels\": [\"a\"]}\n{\"text\": \"y\", \"labels\": [\"zz\", \"b\"]}\n",
    )
    .unwrap();
    match load_jsonl(&p, &labels, UnknownLabelPolicy::Error) {
        Err(Error::UnknownLabel { line, label, .. }) => {
            assert_eq!((line, label.as_str()), (2, "zz"))
        }
        other => panic!("expected UnknownLabel, got {other:?}"),
    }
    let (ex, stats) = load_jsonl(&p, &labels, UnknownLabelPolicy::Skip).unwrap();
    assert_eq!((ex.len(), stats.unknown_labels_skipped), (2, 1));
    assert_eq!(ex[1].labels, vec![1]);
    std::fs::write(&p, "\n\n").unwrap();
    assert!(matches!(
        load_jsonl(&p, &labels, UnknownLabelPolicy::Error),
        Err(Error::EmptyData(_))
    ));
    std::fs::write(&p, "{\"text\": 3}\n").unwrap();
    assert!(matches!(
        load_jsonl(&p, &labels, UnknownLabelPolicy::Error),
        Err(Error::Format { .. })
    ));

    let csv = dir.join("d.csv");
    std::fs::write(&csv, "id,text,labels\n1,\"hello, world\",a|b\n2,bye,\n").unwrap();
    let (ex, _) = load_csv(
        &csv,
        &labels,
        &Default::default(),
        UnknownLabelPolicy::Error,
    )
    .unwrap();
    assert_eq!(ex[0].text, "hello, world");
    assert_eq!(ex[0].labels, vec![0, 1]);
    assert!(ex[1].labels.is_empty());

    // The bundled data set loads (gzip) and its label set is the 71-label min200 one.
    let data = common::repo_root().join("data/debtags-min200");
    let splits = DataSplits::load(&data, UnknownLabelPolicy::Error).unwrap();
    assert_eq!(splits.labels.len(), 71);
    assert_eq!(
        (splits.train.len(), splits.valid.len(), splits.test.len()),
        (23339, 2853, 2844)
    );
}

/// Our adapter folder round-trips: saved, reloaded onto a fresh model, same probabilities.
#[test]
fn adapter_round_trip() {
    let device = device();
    let dir = fixture("tiny-bert");
    let labels = LabelSet::new(vec!["x".into(), "y".into(), "z".into()]).unwrap();
    let mut lora = LoraConfig::new(4, 8.0, &["query", "value"]);
    lora.init_lora_weights = InitLoraWeights::Random;
    let backbone = load_bert(&dir, &device).unwrap();
    let mut model = MultiLabelClassifier::new(backbone, 3, Pooling::Mean, 0.0, &device).unwrap();
    inject_adapters(&mut model, &lora, &device).unwrap();
    // A set of ids within the tiny vocabulary.
    let set = EncodedSet {
        ids: vec![vec![2, 5, 9, 3], vec![2, 7, 3], vec![2, 11, 12, 13, 14, 3]],
        labels: vec![vec![0], vec![1], vec![2]],
        num_labels: 3,
        pad_id: 0,
    };
    let before = predict_probs(&model, &set, 2, &device).unwrap();
    let out = std::env::temp_dir().join(format!("burn-lora-adapter-{}", std::process::id()));
    let thresholds = Thresholds::global(0.4, 3, true);
    let meta = AdapterMeta {
        pooling: Pooling::Mean,
        max_len: 32,
        template: None,
        model_type: "bert".into(),
        quantize: None,
        base_dtype: None,
        trained_config: None,
    };
    let contents = AdapterContents {
        config: &lora,
        labels: &labels,
        thresholds: Some(&thresholds),
        meta: &meta,
        base_model: Some("tiny-bert".into()),
    };
    save_adapter(&out, &model, &contents).unwrap();
    // Saving again over an existing folder works (atomic swap).
    save_adapter(&out, &model, &contents).unwrap();
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(saved["task_type"], "SEQ_CLS");
    assert_eq!(saved["modules_to_save"], serde_json::json!(["classifier"]));
    let st = burn_lora::io::SafetensorsFile::open(out.join("adapter_model.safetensors")).unwrap();
    assert!(
        st.contains("base_model.model.bert.encoder.layer.0.attention.self.query.lora_A.weight")
    );
    assert!(st.contains("base_model.model.classifier.weight"));

    let loaded = read_adapter(&out).unwrap();
    assert_eq!(loaded.labels, labels);
    assert_eq!(loaded.thresholds.as_ref(), Some(&thresholds));
    assert_eq!(loaded.meta.as_ref(), Some(&meta));
    let backbone = load_bert(&dir, &device).unwrap();
    let mut fresh = MultiLabelClassifier::new(backbone, 3, Pooling::Mean, 0.0, &device).unwrap();
    load_adapter_weights(&loaded, &mut fresh, &device).unwrap();
    let after = predict_probs(&fresh, &set, 2, &device).unwrap();
    assert!(max_abs_diff(&before, &after) < 1e-6);

    // A head of the wrong size is a shape error, not a panic.
    let backbone = load_bert(&dir, &device).unwrap();
    let mut wrong = MultiLabelClassifier::new(backbone, 4, Pooling::Mean, 0.0, &device).unwrap();
    assert!(matches!(
        load_adapter_weights(&loaded, &mut wrong, &device),
        Err(Error::ShapeMismatch { .. })
    ));
}

/// A SEQ_CLS adapter written by Python PEFT for BertForSequenceClassification loads on the
/// plain BertModel checkpoint and reproduces PEFT's probabilities within 1e-4.
#[test]
fn python_peft_seq_cls_adapter_matches() {
    let device = device();
    let model_dir = common::repo_root().join("models/all-MiniLM-L6-v2");
    assert!(model_dir.exists(), "run scripts/fetch-models.sh");
    let reference: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("peft_seqcls_minilm.reference.json")).unwrap(),
    )
    .unwrap();
    let adapter = read_adapter(fixture("peft_seqcls_minilm")).unwrap();
    assert!(adapter.meta.is_none());
    let backbone = load_bert(&model_dir, &device).unwrap();
    let mut model = MultiLabelClassifier::new(
        backbone,
        adapter.labels.len(),
        Pooling::Pooler,
        0.0,
        &device,
    )
    .unwrap();
    load_adapter_weights(&adapter, &mut model, &device).unwrap();
    let tokenizer = TextTokenizer::from_file(model_dir.join("tokenizer.json"), 512).unwrap();
    let examples: Vec<Example> = reference["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| Example {
            id: None,
            text: t.as_str().unwrap().to_string(),
            labels: vec![],
        })
        .collect();
    let set = EncodedSet::encode(&examples, &tokenizer, None, adapter.labels.len()).unwrap();
    let probs = predict_probs(&model, &set, 8, &device).unwrap();
    let (want, _) = matrix(&reference["probs"]);
    let err = max_abs_diff(&probs, &want);
    assert!(err <= 1e-4, "PEFT probabilities differ by {err}");
}

/// Replacing the head's values (prior bias, loaded weights) keeps them trainable on an
/// autodiff device: the trainable count is PEFT's before and after (a fresh tensor made
/// from data does not track gradients, so a naive replacement froze the bias).
#[test]
fn replaced_head_values_stay_trainable() {
    let device = device().autodiff();
    let backbone = load_bert(fixture("tiny-bert"), &device).unwrap();
    let mut model = MultiLabelClassifier::new(backbone, 3, Pooling::Cls, 0.0, &device).unwrap();
    let before = model.trainable_params();
    assert_eq!(before, model.head.num_params());
    model.head.init_bias_from_priors(&[1, 5, 9], 10).unwrap();
    assert_eq!(model.trainable_params(), before, "after the prior bias");
    let hidden = model.backbone.hidden_size();
    model
        .head
        .set_weights(
            Tensor::<2>::zeros([3, hidden], &device),
            Some(Tensor::<1>::zeros([3], &device)),
        )
        .unwrap();
    assert_eq!(model.trainable_params(), before, "after set_weights");
}

/// Several adapters on one loaded base (issue 13): predict gives each adapter's own
/// probabilities, and an adapter used after another one sees the base as loaded.
#[test]
fn predict_serves_several_adapters_on_one_base() {
    let scratch =
        std::env::temp_dir().join(format!("burn-lora-multi-adapter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let other = scratch.join("other");
    std::fs::create_dir_all(&other).unwrap();
    for entry in std::fs::read_dir(fixture("peft_seqcls_minilm")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), other.join(entry.file_name())).unwrap();
    }
    // A different adapter: every LoRA B doubled.
    common::rewrite_values(&other.join("adapter_model.safetensors"), |name, values| {
        if name.contains("lora_B") {
            values.iter_mut().for_each(|v| *v *= 2.0);
        }
    });
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("peft_seqcls_minilm.reference.json")).unwrap(),
    )
    .unwrap();
    let input = scratch.join("texts.jsonl");
    common::write_texts_jsonl(&input, reference["texts"].as_array().unwrap());
    let model = common::repo_root().join("models/all-MiniLM-L6-v2");
    let minilm_adapter = fixture("peft_seqcls_minilm");
    let rows = common::predict_jsonl(&[
        "--model".as_ref(),
        model.as_os_str(),
        "--adapter".as_ref(),
        minilm_adapter.as_os_str(),
        "--adapter".as_ref(),
        other.as_os_str(),
        "--adapter".as_ref(),
        minilm_adapter.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
    ]);
    assert_eq!(rows.len(), 9, "three texts for each of three adapters");
    let probs = |range: std::ops::Range<usize>| -> Vec<f32> {
        rows[range]
            .iter()
            .flat_map(|r| serde_json::from_value::<Vec<f32>>(r["probs"].clone()).unwrap())
            .collect()
    };
    let want: Vec<f32> = serde_json::from_value::<Vec<Vec<f32>>>(reference["probs"].clone())
        .unwrap()
        .concat();
    assert!(common::max_abs_diff(&probs(0..3), &want) <= 1e-5);
    assert!(
        common::max_abs_diff(&probs(6..9), &want) <= 1e-5,
        "the base changed"
    );
    assert!(
        common::max_abs_diff(&probs(3..6), &want) > 1e-3,
        "the second adapter did not apply"
    );
    assert_eq!(
        rows[3]["adapter"],
        serde_json::json!(other.display().to_string())
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}

/// A DoRA SEQ_CLS adapter written by Python PEFT (`use_dora`, trained five AdamW steps, so
/// A, B, the magnitudes and the head are all off their initial values) gives PEFT's
/// probabilities through the predict example within 1e-4; without its magnitudes the
/// adapter is refused, not run as plain LoRA.
#[test]
fn python_peft_dora_adapter_matches_through_predict() {
    let reference: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("peft_seqcls_minilm_dora.reference.json")).unwrap(),
    )
    .unwrap();
    let scratch = std::env::temp_dir().join(format!("burn-lora-dora-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let input = scratch.join("texts.jsonl");
    common::write_texts_jsonl(&input, reference["texts"].as_array().unwrap());
    let model = common::repo_root().join("models/all-MiniLM-L6-v2");
    let adapter = fixture("peft_seqcls_minilm_dora");
    let rows = common::predict_jsonl(&[
        "--model".as_ref(),
        model.as_os_str(),
        "--adapter".as_ref(),
        adapter.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
    ]);
    let probs: Vec<f32> = rows
        .iter()
        .flat_map(|r| serde_json::from_value::<Vec<f32>>(r["probs"].clone()).unwrap())
        .collect();
    let want: Vec<f32> = serde_json::from_value::<Vec<Vec<f32>>>(reference["probs"].clone())
        .unwrap()
        .concat();
    let err = common::max_abs_diff(&probs, &want);
    assert!(err <= 1e-4, "PEFT's DoRA probabilities differ by {err}");

    // The same folder without the magnitudes: a missing tensor, named.
    let stripped = scratch.join("no-magnitudes");
    std::fs::create_dir_all(&stripped).unwrap();
    for entry in std::fs::read_dir(&adapter).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), stripped.join(entry.file_name())).unwrap();
    }
    common::rewrite_file_without(
        &stripped.join("adapter_model.safetensors"),
        "base_model.model.bert.encoder.layer.0.attention.self.query.lora_magnitude_vector",
    );
    let device = device();
    let err = burn_lora::Classifier::load(&model, &stripped, &device).unwrap_err();
    assert!(
        matches!(err, burn_lora::Error::MissingTensor { ref name, .. } if name.ends_with("query.lora_magnitude_vector")),
        "{err}"
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}
