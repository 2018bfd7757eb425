//! The library's two jobs as a dependent uses them: `Finetune` (the whole run in one call)
//! and `Classifier` (saved adapters serving texts), their agreement with the examples,
//! mixed-adapter batches, and the bad inputs of both (each a typed `Error`, before work).

mod common;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::Device;
use burn_lora::data::{DataSplits, Example, LabelSet, UnknownLabelPolicy};
use burn_lora::{Classifier, Error, Finetune};
use common::{fixture, repo_root};

fn minilm() -> PathBuf {
    repo_root().join("models/all-MiniLM-L6-v2")
}

fn data_dir() -> PathBuf {
    repo_root().join("data/debtags-min200")
}

fn device() -> Device {
    burn_lora::device::parse_device("flex").unwrap()
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-lora-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A short run on the bundled data (all its labels), saved once for the tests below.
fn adapter_all_labels() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let out = temp("all-labels");
        Finetune::new(minilm(), data_dir())
            .train_limit(48)
            .valid_limit(24)
            .test_limit(16)
            .epochs(1)
            .batch_size(16)
            .max_len(48)
            .seed(3)
            .progress(false)
            .out(&out)
            .run(&device())
            .unwrap();
        out.join("adapter")
    })
}

/// A run on three labels of the bundled data, from examples in memory.
fn adapter_three_labels() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let data = DataSplits::load(data_dir(), UnknownLabelPolicy::Error).unwrap();
        let keep: Vec<usize> = (0..3).collect();
        let names: Vec<String> = keep
            .iter()
            .map(|&j| data.labels.name(j).to_string())
            .collect();
        let project = |examples: &[Example], n: usize| -> Vec<Example> {
            examples
                .iter()
                .take(n)
                .map(|e| Example {
                    labels: e
                        .labels
                        .iter()
                        .copied()
                        .filter(|j| keep.contains(j))
                        .collect(),
                    ..e.clone()
                })
                .collect()
        };
        let out = temp("three-labels");
        Finetune::from_examples(
            minilm(),
            LabelSet::new(names).unwrap(),
            project(&data.train, 48),
            project(&data.valid, 24),
            project(&data.test, 16),
        )
        .epochs(1)
        .max_len(40)
        .seed(5)
        .progress(false)
        .out(&out)
        .run(&device())
        .unwrap();
        out.join("adapter")
    })
}

const TEXTS: [&str; 3] = [
    "Library for parsing XML documents",
    "A fast 3D first-person shooter game with network play",
    "GNOME applet showing the battery charge of a laptop",
];

/// The run writes what the example always wrote, and the report holds its numbers.
#[test]
fn finetune_writes_the_run_folder_and_reports_its_metrics() {
    let adapter = adapter_all_labels();
    let out = adapter.parent().unwrap();
    for file in [
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "adapter/labels.txt",
        "adapter/thresholds.json",
        "adapter/burn_lora.json",
        "best/adapter_model.safetensors",
        "last/adapter_model.safetensors",
        "metrics.json",
        "breakdown.json",
    ] {
        assert!(out.join(file).is_file(), "{file} missing");
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["recipe"]["rank"], 16);
    assert_eq!(metrics["recipe"]["targets"], "all-linear");
    assert_eq!(metrics["recipe"]["lr"], 2e-3);
    assert_eq!(metrics["recipe"]["device"], "flex");
    let micro = metrics["test"]["micro_f1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&micro));
}

/// The README's consumer program: `Classifier` scores equal the predict example's
/// probabilities for the same adapter and texts (both run the same forward: ≤ 1e-6).
#[test]
fn classifier_scores_equal_the_predict_examples_probabilities() {
    let adapter = adapter_all_labels();
    let clf = Classifier::load(minilm(), adapter, &device()).unwrap();
    let preds = clf.predict(&TEXTS).unwrap();
    assert_eq!(preds.len(), TEXTS.len());
    assert_eq!(clf.labels().len(), 71);

    let input = temp("predict-input.jsonl");
    common::write_texts_jsonl(&input, &TEXTS);
    let model = minilm();
    let rows = common::predict_jsonl(&[
        "--model".as_ref(),
        model.as_os_str(),
        "--adapter".as_ref(),
        adapter.as_os_str(),
        "--input".as_ref(),
        input.as_os_str(),
    ]);
    assert_eq!(rows.len(), TEXTS.len());
    for (row, pred) in rows.iter().zip(&preds) {
        let probs: Vec<f32> = serde_json::from_value(row["probs"].clone()).unwrap();
        assert!(common::max_abs_diff(&probs, &pred.scores) <= 1e-6);
        let labels: Vec<String> = serde_json::from_value(row["labels"].clone()).unwrap();
        assert_eq!(labels, pred.labels);
    }
}

/// Texts for two adapters with different label counts, interleaved in one call, equal
/// each adapter run alone (≤ 1e-6), in request order.
#[test]
fn a_mixed_adapter_batch_equals_each_adapter_alone() {
    let clf = Classifier::builder(minilm())
        .adapter_named("all", adapter_all_labels())
        .adapter_named("three", adapter_three_labels())
        .load(&device())
        .unwrap();
    assert_eq!(clf.labels_of("all").unwrap().len(), 71);
    assert_eq!(clf.labels_of("three").unwrap().len(), 3);
    let requests = [
        ("three", TEXTS[0]),
        ("all", TEXTS[1]),
        ("three", TEXTS[2]),
        ("all", TEXTS[0]),
        ("all", TEXTS[2]),
    ];
    let mixed = clf.predict_mixed(&requests).unwrap();
    assert_eq!(mixed.len(), requests.len());
    for ((adapter, text), got) in requests.iter().zip(&mixed) {
        let alone = &clf.predict_with(adapter, &[text]).unwrap()[0];
        assert_eq!(got.scores.len(), clf.labels_of(adapter).unwrap().len());
        assert!(common::max_abs_diff(&got.scores, &alone.scores) <= 1e-6);
        assert_eq!(got.labels, alone.labels);
    }
    // The first adapter added is the one `predict` uses.
    let first = clf.predict(&[TEXTS[1]]).unwrap();
    assert!(common::max_abs_diff(&first[0].scores, &mixed[1].scores) <= 1e-6);
}

#[test]
fn classifier_edge_inputs() {
    let clf = Classifier::load(minilm(), adapter_all_labels(), &device()).unwrap();
    // No texts: no predictions (and no error).
    assert!(clf.predict(&[]).unwrap().is_empty());
    assert!(clf.predict_mixed(&[]).unwrap().is_empty());
    // A text far past max_len is cut at the adapter's length, as in training.
    let long = "package ".repeat(2000);
    let preds = clf.predict(&[long.as_str(), ""]).unwrap();
    assert_eq!(preds[0].scores.len(), 71);
    assert!(preds.iter().flat_map(|p| &p.scores).all(|s| s.is_finite()));
    // An adapter name that is not loaded, even beside good ones: nothing runs.
    let err = clf
        .predict_mixed(&[(adapter_all_labels().to_str().unwrap(), "x"), ("nope", "y")])
        .unwrap_err();
    assert!(
        matches!(err, Error::UnknownAdapter { ref name, .. } if name == "nope"),
        "{err}"
    );
    assert!(matches!(
        clf.predict_with("nope", &["x"]),
        Err(Error::UnknownAdapter { .. })
    ));
}

#[test]
fn classifier_refuses_missing_foreign_and_mismatched_adapters() {
    let device = device();
    // A folder that does not exist, and one that is no adapter (a model folder).
    for dir in [PathBuf::from("no-such-adapter-folder"), minilm()] {
        let err = Classifier::load(minilm(), &dir, &device).unwrap_err();
        assert!(
            matches!(err, Error::Format { .. }),
            "{}: {err}",
            dir.display()
        );
    }
    // A BERT adapter on a Llama base: refused by model type, before any weight is read.
    let llama = temp("llama-base");
    std::fs::create_dir_all(&llama).unwrap();
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture("tiny-llama").join(file), llama.join(file)).unwrap();
    }
    std::fs::copy(
        minilm().join("tokenizer.json"),
        llama.join("tokenizer.json"),
    )
    .unwrap();
    let err = Classifier::load(&llama, adapter_all_labels(), &device).unwrap_err();
    assert!(
        matches!(err, Error::AdapterBaseMismatch { ref trained, ref base, .. } if trained == "bert" && base == "llama"),
        "{err}"
    );
    // Settings of the builder.
    let builder = Classifier::builder(minilm()).adapter(adapter_all_labels());
    for (err, setting) in [
        (
            Classifier::builder(minilm()).load(&device).unwrap_err(),
            "adapter",
        ),
        (
            builder.clone().threshold(1.5).load(&device).unwrap_err(),
            "threshold",
        ),
        (
            builder.clone().batch_size(0).load(&device).unwrap_err(),
            "batch_size",
        ),
        (
            builder
                .clone()
                .batch_size(usize::MAX)
                .load(&device)
                .unwrap_err(),
            "batch_size",
        ),
        (
            builder
                .clone()
                .adapter(adapter_all_labels())
                .load(&device)
                .unwrap_err(),
            "adapter",
        ),
    ] {
        assert!(
            matches!(err, Error::InvalidSetting { name, .. } if name == setting),
            "{setting}: {err}"
        );
    }
    std::fs::remove_dir_all(&llama).unwrap();
}

/// Every out-of-range setting is a typed error from `run`, before anything is read or
/// written (the model and data paths do not even exist).
#[test]
fn finetune_refuses_bad_settings_before_any_work() {
    let out = temp("never-written");
    let job = || Finetune::new("no-such-model", "no-such-data").out(&out);
    let setting = |job: Finetune, name: &str| {
        let err = job.run(&device()).unwrap_err();
        assert!(
            matches!(err, Error::InvalidSetting { name: n, .. } if n == name),
            "{name}: {err}"
        );
    };
    setting(job().lr(0.0), "lr");
    setting(job().lr(f64::NAN), "lr");
    setting(job().weight_decay(-1.0), "weight_decay");
    setting(job().warmup_ratio(1.5), "warmup_ratio");
    setting(job().epochs(0), "epochs");
    setting(job().epochs(usize::MAX), "epochs");
    setting(job().batch_size(usize::MAX), "batch_size");
    setting(job().grad_accum(0), "grad_accum");
    setting(job().max_len(0), "max_len");
    setting(job().targets(""), "targets");
    setting(job().targets("query,,value"), "targets");
    setting(Finetune::new("m", "d").resume(true), "resume");
    // The variants' settings (issue 28).
    setting(job().loraplus_lr_ratio(0.0), "loraplus_lr_ratio");
    setting(job().loraplus_lr_ratio(f64::NAN), "loraplus_lr_ratio");
    setting(
        job()
            .quantize(burn_lora::lora::Quantization::Nf4)
            .base_dtype(burn_lora::lora::BaseDtype::Bf16),
        "base_dtype",
    );
    assert!(matches!(
        job().rank(0).run(&device()),
        Err(Error::InvalidRank { .. })
    ));
    assert!(matches!(
        job().alpha(-1.0).run(&device()),
        Err(Error::InvalidAlpha { .. })
    ));
    assert!(matches!(
        job().dropout(1.0).run(&device()),
        Err(Error::InvalidDropout(_))
    ));
    // In-memory data: empty splits and label indices past the label set.
    let labels = LabelSet::new(vec!["a".into(), "b".into()]).unwrap();
    let example = |labels: Vec<usize>| Example {
        id: None,
        text: "text".into(),
        labels,
    };
    let err = Finetune::from_examples(
        "m",
        labels.clone(),
        vec![],
        vec![example(vec![0])],
        vec![example(vec![1])],
    )
    .run(&device())
    .unwrap_err();
    assert!(matches!(err, Error::EmptyData(_)), "{err}");
    let err = Finetune::from_examples(
        "m",
        labels,
        vec![example(vec![0, 2])],
        vec![example(vec![0])],
        vec![example(vec![1])],
    )
    .run(&device())
    .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidSetting {
                name: "examples",
                ..
            }
        ),
        "{err}"
    );
    assert!(!out.exists(), "a refused job wrote {}", out.display());
}

/// Input classes that used to pass silently: a target name that adapts nothing, a data
/// folder with two files for one split, an adapter threshold outside [0, 1].
#[test]
fn silent_outcomes_are_errors() {
    let device = device();
    // `valeu` is a typo: the run stops before training instead of adapting `query` alone.
    let err = Finetune::new(minilm(), data_dir())
        .targets("query,valeu,kye")
        .train_limit(16)
        .valid_limit(8)
        .test_limit(8)
        .progress(false)
        .run(&device)
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidSetting { name: "targets", ref message }
            if message.contains("`valeu`, `kye`") && message.contains("query, key, value, dense")),
        "{err}"
    );

    // train.jsonl beside train.jsonl.gz: which one is meant cannot be guessed.
    let dir = temp("two-train-files");
    std::fs::create_dir_all(&dir).unwrap();
    for file in [
        "train.jsonl.gz",
        "valid.jsonl.gz",
        "test.jsonl.gz",
        "labels.txt",
    ] {
        std::fs::copy(data_dir().join(file), dir.join(file)).unwrap();
    }
    std::fs::write(
        dir.join("train.jsonl"),
        "{\"text\": \"x\", \"labels\": []}\n",
    )
    .unwrap();
    let err = DataSplits::load(&dir, UnknownLabelPolicy::Error).unwrap_err();
    assert!(
        matches!(err, Error::Format { ref message, .. } if message.contains("both")),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();

    // An adapter whose thresholds say 5.0 would predict no label for any text.
    let adapter = temp("threshold-five");
    std::fs::create_dir_all(&adapter).unwrap();
    for entry in std::fs::read_dir(adapter_three_labels()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), adapter.join(entry.file_name())).unwrap();
    }
    let thresholds = r#"{"per_label": [0.5, 5.0, 0.5], "global": 0.5, "at_least_one": false}"#;
    std::fs::write(adapter.join("thresholds.json"), thresholds).unwrap();
    let err = Classifier::load(minilm(), &adapter, &device).unwrap_err();
    assert!(
        matches!(err, Error::Format { ref message, .. } if message.contains("5")),
        "{err}"
    );
    std::fs::remove_dir_all(&adapter).unwrap();
}

/// One writer per output folder: a run on a folder another run holds fails at once, naming
/// the holder, and writes nothing there.
#[test]
fn a_second_run_on_a_held_folder_is_refused() {
    let out = temp("held");
    let lock = burn_lora::io::RunLock::acquire(&out).unwrap();
    let err = Finetune::new(minilm(), data_dir())
        .train_limit(16)
        .out(&out)
        .run(&device())
        .unwrap_err();
    assert!(
        matches!(err, Error::RunFolderLocked { pid: Some(p), .. } if p == std::process::id()),
        "{err}"
    );
    let entries: Vec<_> = std::fs::read_dir(&out).unwrap().flatten().collect();
    assert_eq!(entries.len(), 1, "only the holder's lock file");
    drop(lock);
    std::fs::remove_dir_all(&out).unwrap();
}

/// Examples whose text is empty or only whitespace: an error naming the file and lines by
/// default; dropped from the split (and said) or kept (and said) when asked.
#[test]
fn empty_texts_are_an_error_naming_their_lines_or_dropped_or_kept() {
    use burn_lora::data::EmptyTextPolicy;
    let dir = temp("empty-texts");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("labels.txt"), "a\nb\n").unwrap();
    let line =
        |text: &str, label: &str| format!("{{\"text\": {text:?}, \"labels\": [{label:?}]}}\n");
    let mut train = String::new();
    for i in 0..12 {
        // Lines 3 and 8 are empty and whitespace-only.
        let text = match i {
            2 => String::new(),
            7 => " \t ".into(),
            _ => format!("package number {i} for tool {}", i % 3),
        };
        train.push_str(&line(&text, if i % 2 == 0 { "a" } else { "b" }));
    }
    std::fs::write(dir.join("train.jsonl"), train).unwrap();
    let plain: String = (0..4).map(|i| line(&format!("text {i}"), "a")).collect();
    std::fs::write(dir.join("valid.jsonl"), &plain).unwrap();
    std::fs::write(dir.join("test.jsonl"), &plain).unwrap();

    let job = |policy: Option<EmptyTextPolicy>,
               messages: std::sync::Arc<std::sync::Mutex<Vec<String>>>| {
        let mut job = Finetune::new(minilm(), &dir)
            .epochs(1)
            .batch_size(8)
            .max_len(16)
            .progress(false)
            .on_message(move |l| messages.lock().unwrap().push(l.to_string()));
        if let Some(p) = policy {
            job = job.empty_texts(p);
        }
        job.run(&device())
    };
    let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let err = job(None, said.clone()).unwrap_err();
    match &err {
        Error::EmptyText { split, count, at } => {
            assert_eq!((split.as_str(), *count), ("train", 2), "{err}");
            assert!(at.contains("train.jsonl") && at.contains("3, 8"), "{err}");
        }
        other => panic!("expected EmptyText, got {other}"),
    }

    let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    job(Some(EmptyTextPolicy::Drop), said.clone()).unwrap();
    let lines = said.lock().unwrap().join("\n");
    assert!(
        lines.contains("train: 2 examples with an empty text dropped"),
        "{lines}"
    );
    assert!(
        lines.contains("data: 10 train / 4 valid / 4 test"),
        "{lines}"
    );

    let said = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    job(Some(EmptyTextPolicy::Keep), said.clone()).unwrap();
    let lines = said.lock().unwrap().join("\n");
    assert!(
        lines.contains("train: 2 examples with an empty text kept"),
        "{lines}"
    );
    assert!(
        lines.contains("data: 12 train / 4 valid / 4 test"),
        "{lines}"
    );
    assert!("skip".parse::<EmptyTextPolicy>().is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A DoRA run (`dora(true)`) saves PEFT's DoRA adapter (`use_dora`, one
/// `lora_magnitude_vector` per adapted linear) and `Classifier` serves it with the run's own
/// best model's probabilities (≤ 1e-6): the trained magnitudes went to disk and came back.
#[test]
fn a_dora_run_saves_and_serves_its_magnitudes() {
    let out = temp("dora-run");
    let report = Finetune::new(minilm(), data_dir())
        .dora(true)
        .targets("query,value")
        .train_limit(32)
        .valid_limit(16)
        .test_limit(8)
        .epochs(1)
        .batch_size(16)
        .max_len(48)
        .seed(5)
        .progress(false)
        .out(&out)
        .run(&device())
        .unwrap();
    let adapter = out.join("adapter");
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(config["use_dora"], true);
    let st =
        burn_lora::io::SafetensorsFile::open(adapter.join("adapter_model.safetensors")).unwrap();
    let magnitudes = st
        .names()
        .into_iter()
        .filter(|n| n.ends_with(".lora_magnitude_vector"))
        .count();
    assert_eq!(magnitudes, 12, "query and value of 6 layers");

    let clf = Classifier::load(minilm(), &adapter, &device()).unwrap();
    let served: Vec<f32> = clf
        .predict(&TEXTS)
        .unwrap()
        .into_iter()
        .flat_map(|p| p.scores)
        .collect();
    let tokenizer =
        burn_lora::tokenize::TextTokenizer::from_file(minilm().join("tokenizer.json"), 48).unwrap();
    let examples: Vec<Example> = TEXTS
        .iter()
        .map(|t| Example {
            id: None,
            text: t.to_string(),
            labels: vec![],
        })
        .collect();
    let set = burn_lora::data::EncodedSet::encode(&examples, &tokenizer, None, clf.labels().len())
        .unwrap();
    let own = burn_lora::classify::predict_probs(&report.model, &set, 8, &device()).unwrap();
    let diff = common::max_abs_diff(&served, &own);
    assert!(diff <= 1e-6, "served DoRA probabilities differ by {diff}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// `ClassifierBuilder::base_dtype`: a bf16 base serves an adapter trained on f32 within
/// bf16's rounding (8 bits of mantissa in every frozen weight: probabilities within 2e-2),
/// and it did change the forward; with a packed base it is refused before the base loads.
#[test]
fn a_half_precision_base_serves_the_adapter() {
    use burn_lora::lora::BaseDtype;
    let device = device();
    let f32_base = Classifier::load(minilm(), adapter_all_labels(), &device).unwrap();
    let builder = Classifier::builder(minilm()).adapter(adapter_all_labels());
    let bf16_base = builder
        .clone()
        .base_dtype(BaseDtype::Bf16)
        .load(&device)
        .unwrap();
    let (exact, rounded) = (
        f32_base.predict(&TEXTS).unwrap(),
        bf16_base.predict(&TEXTS).unwrap(),
    );
    let diffs: Vec<f32> = exact
        .iter()
        .zip(&rounded)
        .map(|(a, b)| common::max_abs_diff(&a.scores, &b.scores))
        .collect();
    assert!(diffs.iter().all(|d| *d < 2e-2), "{diffs:?}");
    assert!(
        diffs.iter().any(|d| *d > 0.0),
        "the bf16 base changed nothing"
    );
    let err = builder
        .quantize(Some("nf4".parse().unwrap()))
        .base_dtype(BaseDtype::Bf16)
        .load(&device)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Unsupported {
                what: "base dtype",
                ..
            }
        ),
        "{err}"
    );
}
