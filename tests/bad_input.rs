//! Bad input gets a clear `Error` before any work: token ids past the vocabulary and rows
//! longer than the position table (flex would panic on the index, a GPU backend would
//! read out of range silently).

mod common;

use burn::tensor::Device;
use burn_lora::Error;
use burn_lora::classify::{LossKind, MultiLabelClassifier, MultiLabelLoss, Pooling, predict_probs};
use burn_lora::data::EncodedSet;
use burn_lora::lora::with_adapters;
use burn_lora::models::{Backbone, check_max_len};
use burn_lora::train::{TrainConfig, Trainer, run_loop};
use common::{fixture, fixture_options, load_bert, load_bert_with, load_llama};

fn device() -> Device {
    burn_lora::device::parse_device("flex").unwrap()
}

fn set(ids: Vec<Vec<u32>>) -> EncodedSet {
    EncodedSet {
        labels: vec![vec![0]; ids.len()],
        ids,
        num_labels: 2,
        pad_id: 0,
    }
}

#[test]
fn token_ids_past_the_vocabulary_are_refused() {
    let device = device();
    let bert = load_bert(fixture("tiny-bert"), &device).unwrap();
    let vocab = bert.vocab_size() as u32;
    let clf = MultiLabelClassifier::new(bert, 2, Pooling::Mean, 0.0, &device).unwrap();
    let bad = set(vec![vec![2, 5, 3], vec![2, vocab, 3]]);
    let err = predict_probs(&clf, &bad, 8, &device).unwrap_err();
    assert!(
        matches!(&err, Error::InputOutOfRange(m) if m.contains(&format!("token id {vocab} in row 1"))),
        "{err}"
    );
    // The highest valid id passes.
    let ok = set(vec![vec![2, vocab - 1, 3]]);
    assert_eq!(predict_probs(&clf, &ok, 8, &device).unwrap().len(), 2);

    let llama = load_llama(fixture("tiny-llama"), &device).unwrap();
    let vocab = llama.vocab_size() as u32;
    let clf = MultiLabelClassifier::new(llama, 2, Pooling::LastToken, 0.0, &device).unwrap();
    let err = predict_probs(&clf, &set(vec![vec![5, vocab + 7]]), 8, &device).unwrap_err();
    assert!(matches!(err, Error::InputOutOfRange(_)), "{err}");
}

#[test]
fn rows_longer_than_the_position_table_are_refused_before_training() {
    let device = device();
    let train_device = device.clone().autodiff();
    let bert = load_bert(fixture("tiny-bert"), &train_device).unwrap();
    let max = bert.max_positions().expect("BERT has a position table");
    assert!(check_max_len(&bert, max).is_ok());
    let err = check_max_len(&bert, max + 1).unwrap_err();
    assert!(matches!(err, Error::InputOutOfRange(_)), "{err}");

    let clf = MultiLabelClassifier::new(bert, 2, Pooling::Mean, 0.0, &train_device).unwrap();
    let mut trainer = Trainer::new(
        clf,
        MultiLabelLoss::new(LossKind::Bce),
        TrainConfig::default(),
        None,
    );
    let long = set(vec![vec![5; max + 1], vec![5; 4]]);
    let short = set(vec![vec![5; 4]]);
    let config = TrainConfig::default().with_lr(5e-4).with_progress(false);
    let err = run_loop(&mut trainer, &long, &short, &config, &device, None).unwrap_err();
    assert!(matches!(err, Error::InputOutOfRange(_)), "{err}");
    let err = run_loop(&mut trainer, &short, &long, &config, &device, None).unwrap_err();
    assert!(matches!(err, Error::InputOutOfRange(_)), "{err}");

    // RoPE decoders have no table: no limit.
    let llama = load_llama(fixture("tiny-llama"), &device).unwrap();
    assert_eq!(llama.max_positions(), None);
    assert!(check_max_len(&llama, 100_000).is_ok());
}

/// A gzip of several members (`cat a.gz b.gz`, parallel compressors) is read whole, not
/// cut after its first member.
#[test]
fn multi_member_gzip_is_read_whole() {
    use burn_lora::data::{LabelSet, UnknownLabelPolicy, load_jsonl};
    use std::io::Write;

    let member = |line: &str| {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(line.as_bytes()).unwrap();
        gz.finish().unwrap()
    };
    let path =
        std::env::temp_dir().join(format!("burn-lora-multi-{}.jsonl.gz", std::process::id()));
    let mut bytes = member("{\"text\": \"first\", \"labels\": [\"a\"]}\n");
    bytes.extend(member("{\"text\": \"second\", \"labels\": [\"b\"]}\n"));
    std::fs::write(&path, bytes).unwrap();
    let labels = LabelSet::new(vec!["a".into(), "b".into()]).unwrap();
    let (examples, _) = load_jsonl(&path, &labels, UnknownLabelPolicy::Error).unwrap();
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    assert_eq!(texts, ["first", "second"]);
    std::fs::remove_file(&path).unwrap();
}

/// Labels that cannot train anything are errors, not a silent run on empty targets: a
/// misspelt `labels` key, a `labels.txt` that matches no training label, a training file
/// with no labels at all; unknown labels in valid/test are errors unless dropped (and
/// then counted).
#[test]
fn labels_that_match_nothing_are_errors() {
    use burn_lora::data::{DataSplits, UnknownLabelPolicy};

    let dir = std::env::temp_dir().join(format!("burn-lora-labels-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, body: &str| std::fs::write(dir.join(name), body).unwrap();
    let good = "{\"text\": \"x\", \"labels\": [\"a\"]}\n{\"text\": \"y\", \"labels\": [\"b\"]}\n";
    write("valid.jsonl", good);
    write("test.jsonl", good);

    // `label` instead of `labels`: named with the line and the keys the record has.
    write("train.jsonl", "{\"text\": \"x\", \"label\": [\"a\"]}\n");
    match DataSplits::load(&dir, UnknownLabelPolicy::Error) {
        Err(Error::Format { message, .. }) => {
            assert!(
                message.contains("line 1") && message.contains("`label`"),
                "{message}"
            )
        }
        other => panic!("expected Format, got {:?}", other.err()),
    }

    // No example has a label: no label set can be inferred.
    write("train.jsonl", "{\"text\": \"x\", \"labels\": []}\n");
    assert!(matches!(
        DataSplits::load(&dir, UnknownLabelPolicy::Error),
        Err(Error::NoLabels { .. })
    ));

    // A labels.txt of another data set: every training label would be dropped.
    write("train.jsonl", good);
    write("labels.txt", "c\nd\n");
    match DataSplits::load(&dir, UnknownLabelPolicy::Skip) {
        Err(Error::NoLabels { path, message }) => {
            assert!(path.ends_with("labels.txt"), "{}", path.display());
            assert!(message.contains("2 label occurrences"), "{message}");
        }
        other => panic!("expected NoLabels, got {:?}", other.err()),
    }

    // Valid/test labels outside labels.txt: an error by default, dropped and counted on
    // request; training labels outside it are dropped and counted.
    write("labels.txt", "a\n");
    assert!(matches!(
        DataSplits::load(&dir, UnknownLabelPolicy::Error),
        Err(Error::UnknownLabel { line: 2, .. })
    ));
    let splits = DataSplits::load(&dir, UnknownLabelPolicy::Skip).unwrap();
    assert_eq!(splits.skipped, [1, 1, 1]);
    // A label name labels.txt could not hold as itself (it is read trimmed, by line).
    for name in [" a", "b ", "c\nd", "  "] {
        assert!(
            burn_lora::data::LabelSet::new(vec![name.into()]).is_err(),
            "{name:?}"
        );
    }
    assert_eq!(splits.train[1].labels, Vec::<usize>::new());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An earlier run's folder is neither overwritten nor mixed into: without `--resume` or
/// `--overwrite`, finetune stops before any work, and the old files are intact.
#[test]
fn finetune_keeps_an_existing_run_folder() {
    let out = std::env::temp_dir().join(format!("burn-lora-oldrun-{}", std::process::id()));
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("metrics.json"), "{\"old\": true}").unwrap();
    let run = |extra: &[&str]| {
        std::process::Command::new(common::example_binary("finetune"))
            .args([
                "--model",
                "no-such-model",
                "--data",
                "no-such-data",
                "--out",
            ])
            .arg(&out)
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = run(&[]);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(stderr.contains("already holds a run"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(out.join("metrics.json")).unwrap(),
        "{\"old\": true}"
    );
    // With --overwrite the run goes on (and fails later, on the missing data).
    let stderr = String::from_utf8_lossy(&run(&["--overwrite"]).stderr).to_string();
    assert!(!stderr.contains("already holds a run"), "{stderr}");
    std::fs::remove_dir_all(&out).unwrap();
}

/// `--resume=false` means false, and a switch given a non-boolean value is refused.
#[test]
fn switches_take_explicit_booleans() {
    let out = std::env::temp_dir().join(format!("burn-lora-switch-{}", std::process::id()));
    let run = |flag: &str| {
        std::process::Command::new(common::example_binary("finetune"))
            .arg("--model")
            .arg(fixture("tiny-bert"))
            .args(["--data", "no-such-data", "--out"])
            .arg(&out)
            .arg(flag)
            .output()
            .unwrap()
    };
    let bad = run("--resume=maybe");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("is a switch"));
    // Explicitly false: not a resume (which would fail on the missing OUT/last), so the
    // run fails on the missing data instead.
    let off = String::from_utf8_lossy(&run("--resume=false").stderr).to_string();
    assert!(!off.contains("last"), "{off}");
}

/// Every flag is checked before any file is read: a bad choice or number exits with
/// status 2 and names the flag (the threshold mode used to be read only after training).
#[test]
fn bad_flags_stop_the_examples_before_any_work() {
    let finetune_with = |flags: &[&str]| {
        std::process::Command::new(common::example_binary("finetune"))
            .args([
                "--model",
                "no-such-model",
                "--data",
                "no-such-data",
                "--out",
            ])
            .arg(std::env::temp_dir().join("burn-lora-never-written"))
            .args(flags)
            .output()
            .unwrap()
    };
    let finetune = |flag: &str, value: &str| finetune_with(&[flag, value]);
    for (flag, value) in [
        ("--threshold", "perlabel"),
        ("--schedule", "cosin"),
        ("--head-bias-init", "priors"),
        ("--loss", "hinge"),
        ("--pooling", "max"),
        ("--lr", "0"),
        ("--lr", "nan"),
        ("--weight-decay", "-1"),
        ("--warmup-ratio", "1.5"),
        ("--dropout", "1"),
        ("--alpha", "-2"),
        ("--rank", "0"),
        ("--batch-size", "0"),
        ("--epochs", "0"),
        // Past any real run: refused instead of overflowing a product later.
        ("--batch-size", "18446744073709551615"),
        ("--epochs", "18446744073709551615"),
        ("--grad-accum", "18446744073709551615"),
        ("--max-len", "0"),
        ("--patience", "0"),
        ("--unknown-labels", "ignore"),
        ("--quantize", "nf2"),
        ("--targets", ""),
        ("--targets", "q_proj,,v_proj"),
        ("--targets", "q_proj,"),
        ("--init", "pisa"),
        ("--init", "pissa_niter_x"),
    ] {
        refused_naming(finetune(flag, value), flag, value);
    }
    // A combination: PiSSA rewrites the frozen weights, which a packed base cannot hold.
    refused_naming(
        finetune_with(&["--init", "pissa", "--quantize", "nf4"]),
        "--init",
        "pissa",
    );
    assert!(
        !std::env::temp_dir()
            .join("burn-lora-never-written")
            .exists()
    );

    let predict = |flag: &str, value: &str| {
        std::process::Command::new(common::example_binary("predict"))
            .args(["--model", "no-such-model", "--adapter", "no-such-adapter"])
            .args([flag, value])
            .output()
            .unwrap()
    };
    for (flag, value) in [
        ("--format", "csv"),
        ("--threshold", "1.5"),
        ("--threshold", "0"),
        ("--quantize", "q4"),
        ("--base-dtype", "f64"),
    ] {
        refused_naming(predict(flag, value), flag, value);
    }
    // A half-precision base is for float bases: refused beside a packing.
    let both = std::process::Command::new(common::example_binary("predict"))
        .args(["--model", "no-such-model", "--adapter", "no-such-adapter"])
        .args(["--quantize", "nf4", "--base-dtype", "bf16"])
        .output()
        .unwrap();
    refused_naming(both, "--base-dtype", "bf16");
}

/// A usage error: exit status 2 and a message naming the flag.
fn refused_naming(out: std::process::Output, flag: &str, value: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{flag} {value}: {stderr}");
    assert!(stderr.contains(flag), "{flag} {value}: {stderr}");
}

/// Sizes no real model has are refused before they size an allocation (a capacity
/// overflow or an out-of-memory abort otherwise); a LoRA rank no real adapter has too.
#[test]
fn absurd_config_sizes_and_ranks_are_errors() {
    let device = device();
    for (name, key, value) in [
        ("tiny-bert", "num_hidden_layers", 1u64 << 40),
        ("tiny-bert", "vocab_size", 1 << 40),
        ("tiny-llama", "num_hidden_layers", 1 << 40),
        ("tiny-llama", "intermediate_size", 1 << 40),
        // Zero widths: a division by zero or empty layers further on.
        ("tiny-llama", "intermediate_size", 0),
        ("tiny-llama", "hidden_size", 0),
        ("tiny-llama", "head_dim", 0),
        ("tiny-llama", "num_key_value_heads", 0),
        ("tiny-llama", "vocab_size", 0),
    ] {
        let dir = std::env::temp_dir().join(format!("burn-lora-huge-{key}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            fixture(name).join("model.safetensors"),
            dir.join("model.safetensors"),
        )
        .unwrap();
        let mut config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(name).join("config.json")).unwrap(),
        )
        .unwrap();
        config[key] = serde_json::json!(value);
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let load_error = || {
            if name == "tiny-bert" {
                load_bert(&dir, &device).map(|_| ()).unwrap_err()
            } else {
                load_llama(&dir, &device).map(|_| ()).unwrap_err()
            }
        };
        let err = load_error();
        assert!(
            matches!(&err, Error::Unsupported { .. }) && err.to_string().contains(key),
            "{name} {key} = {value}: {err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    // A dropout probability burn-nn's Dropout would assert on (1.0 drops everything).
    let dir = std::env::temp_dir().join(format!("burn-lora-dropout-one-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("tiny-bert").join("model.safetensors"),
        dir.join("model.safetensors"),
    )
    .unwrap();
    for key in ["hidden_dropout_prob", "attention_probs_dropout_prob"] {
        let mut config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("tiny-bert").join("config.json")).unwrap(),
        )
        .unwrap();
        config[key] = serde_json::json!(1.0);
        std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
        let err = load_bert(&dir, &device).map(|_| ()).unwrap_err();
        assert!(
            matches!(&err, Error::Unsupported { .. }) && err.to_string().contains(key),
            "{key}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();

    // A rank from a corrupt config is refused before its factors are allocated; r 64 on
    // tiny-bert's 32 x 32 query (past its sides, which PEFT allows) loads.
    let lora = |r: usize| burn_lora::lora::LoraConfig::new(r, 8.0, &["query"]);
    let err = with_adapters(
        load_bert(fixture("tiny-bert"), &device).unwrap(),
        &lora(1 << 40),
        &device,
    )
    .unwrap_err();
    assert!(
        matches!(&err, Error::RankTooLarge { rank, module, .. } if *rank == 1 << 40 && module.ends_with("query")),
        "{err}"
    );
    assert!(
        with_adapters(
            load_bert(fixture("tiny-bert"), &device).unwrap(),
            &lora(64),
            &device
        )
        .is_ok()
    );
}

/// An adapter holding a NaN (saved from a diverged run) is refused at load, naming the
/// tensor, instead of turning every prediction into NaN.
#[test]
fn nan_weights_in_an_adapter_are_refused() {
    use burn_lora::adapter::{load_adapter_weights, read_adapter};

    let device = device();
    let dir = std::env::temp_dir().join(format!("burn-lora-nan-adapter-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(fixture("peft_seqcls_tiny_llama")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let mut poisoned = None;
    common::rewrite_values(&dir.join("adapter_model.safetensors"), |name, values| {
        if poisoned.is_none() && name.contains("lora_B") {
            values[0] = f32::NAN;
            poisoned = Some(name.to_string());
        }
    });
    let poisoned = poisoned.expect("the fixture has a lora_B");
    let adapter = read_adapter(&dir).unwrap();
    let base = load_llama(fixture("tiny-llama"), &device).unwrap();
    let mut model =
        MultiLabelClassifier::new(base, adapter.labels.len(), Pooling::LastToken, 0.0, &device)
            .unwrap();
    let err = load_adapter_weights(&adapter, &mut model, &device).unwrap_err();
    assert!(
        matches!(&err, Error::Format { message, .. } if message.contains(&poisoned)),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An adapter trained on another base (MiniLM's, 384 wide) put on tiny BERT (32 wide), on a
/// float and on an NF4-packed base: a shape error naming the tensor, before any forward.
#[test]
fn an_adapter_for_another_base_is_a_shape_error() {
    use burn_lora::adapter::{load_adapter_weights, read_adapter};
    use burn_lora::lora::Quantization;

    let device = device();
    let adapter = read_adapter(fixture("peft_seqcls_minilm")).unwrap();
    for packing in [None, Some(Quantization::Nf4)] {
        let base = load_bert_with(
            fixture("tiny-bert"),
            &fixture_options().packing(packing),
            &device,
        )
        .unwrap();
        let mut model =
            MultiLabelClassifier::new(base, adapter.labels.len(), Pooling::Pooler, 0.0, &device)
                .unwrap();
        let err = load_adapter_weights(&adapter, &mut model, &device).unwrap_err();
        assert!(
            matches!(&err, Error::ShapeMismatch { name, .. } if name.contains("lora")),
            "{packing:?}: {err}"
        );
    }
}

/// One export per output folder: an export whose folder another process holds stops before
/// reading anything, naming the holder and the lock file (beside the folder, since the
/// export swaps the folder in whole).
#[test]
fn an_export_to_a_held_folder_is_refused() {
    let parent = std::env::temp_dir().join(format!("burn-lora-export-lock-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&parent);
    let out = parent.join("merged");
    let lock = burn_lora::io::RunLock::acquire_beside(&out).unwrap();
    let output = std::process::Command::new(common::example_binary("export"))
        .args([
            "--model",
            "no-such-model",
            "--adapter",
            "no-such-adapter",
            "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(&format!(
            "in use by another run (process {})",
            std::process::id()
        )) && stderr.contains(".merged.burn_lora.lock"),
        "{stderr}"
    );
    assert!(!out.exists(), "a refused export wrote its folder");
    drop(lock);
    std::fs::remove_dir_all(&parent).unwrap();
}

/// Numbers that reach the library without a flag parser in between: a training config
/// with an absurd count, a head dropout burn-nn would assert on, a padding id past the
/// vocabulary. Each is a typed error before any work.
#[test]
fn library_numbers_are_checked_before_work() {
    let device = device();
    let train_device = device.clone().autodiff();
    for (config, name) in [
        (TrainConfig::default().with_epochs(usize::MAX), "epochs"),
        (TrainConfig::default().with_batch_size(0), "batch_size"),
        (
            TrainConfig::default().with_eval_batch_size(0),
            "eval_batch_size",
        ),
        (
            TrainConfig::default().with_grad_accum(1 << 30),
            "grad_accum",
        ),
        (
            TrainConfig::default().with_max_grad_norm(Some(f64::NAN)),
            "max_grad_norm",
        ),
        (TrainConfig::default().with_lr(-1.0), "lr"),
    ] {
        let err = config.validate().unwrap_err();
        assert!(
            matches!(err, Error::InvalidSetting { name: n, .. } if n == name),
            "{name}: {err}"
        );
    }
    // run_loop checks before the first batch.
    let backbone = load_bert(fixture("tiny-bert"), &train_device).unwrap();
    let model = MultiLabelClassifier::new(backbone, 2, Pooling::Mean, 0.0, &train_device).unwrap();
    let config = TrainConfig::default()
        .with_epochs(usize::MAX)
        .with_progress(false);
    let mut trainer = Trainer::new(
        model,
        MultiLabelLoss::new(LossKind::Bce),
        config.clone(),
        None,
    );
    let data = set(vec![vec![2, 5, 3]]);
    let err = run_loop(&mut trainer, &data, &data, &config, &device, None).unwrap_err();
    assert!(
        matches!(err, Error::InvalidSetting { name: "epochs", .. }),
        "{err}"
    );

    for dropout in [1.0, -0.1, f64::NAN] {
        let backbone = load_bert(fixture("tiny-bert"), &device).unwrap();
        let err = MultiLabelClassifier::new(backbone, 2, Pooling::Mean, dropout, &device)
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidSetting {
                    name: "head dropout",
                    ..
                }
            ),
            "{dropout}: {err}"
        );
    }

    let backbone = load_bert(fixture("tiny-bert"), &device).unwrap();
    let vocab = backbone.vocab_size() as u32;
    let model = MultiLabelClassifier::new(backbone, 2, Pooling::Mean, 0.0, &device).unwrap();
    let mut rows = set(vec![vec![2, 5, 3], vec![2, 3]]);
    rows.pad_id = vocab;
    let err = model.check_inputs(&rows).unwrap_err();
    assert!(
        matches!(err, Error::InputOutOfRange(ref m) if m.contains("padding id")),
        "{err}"
    );
}

/// Two finetune processes on one output folder: the second, started while the first runs,
/// fails at once naming the first's process; the first finishes and its folder holds its
/// own run (its seed in the recipe) and no lock.
#[test]
fn a_second_finetune_on_a_running_folder_fails_and_the_first_finishes() {
    let out = std::env::temp_dir().join(format!("burn-lora-two-runs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let model = common::repo_root().join("models/all-MiniLM-L6-v2");
    let data = common::repo_root().join("data/debtags-min200");
    let run = |seed: &str| {
        let mut cmd = std::process::Command::new(common::example_binary("finetune"));
        cmd.arg("--model")
            .arg(&model)
            .arg("--data")
            .arg(&data)
            .arg("--out")
            .arg(&out)
            .args([
                "--train-limit",
                "64",
                "--valid-limit",
                "16",
                "--test-limit",
                "16",
            ])
            .args([
                "--epochs",
                "1",
                "--max-len",
                "32",
                "--no-progress",
                "--seed",
                seed,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        cmd
    };
    let mut first = run("1").spawn().unwrap();
    let lock = out.join("burn_lora.lock");
    let started = std::time::Instant::now();
    while !lock.exists() {
        assert!(
            started.elapsed().as_secs() < 120 && first.try_wait().unwrap().is_none(),
            "the first run never took its lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let second = run("2").output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(
        stderr.contains(&format!("in use by another run (process {})", first.id())),
        "{stderr}"
    );
    let status = first.wait().unwrap();
    assert!(status.success(), "the first run failed");
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).unwrap()).unwrap();
    assert_eq!(metrics["recipe"]["seed"], 1);
    assert!(out.join("adapter/adapter_model.safetensors").is_file());
    assert!(!lock.exists(), "the lock outlived its run");
    std::fs::remove_dir_all(&out).unwrap();
}

/// Typed config values: an activation, a LoRA bias mode or an eos id the crate does not know
/// is an error naming the value when the file is read; one it knows but does not compute
/// (a GELU Llama, PEFT's `bias: all`) is refused, not silently replaced.
#[test]
fn config_values_are_typed_and_unknown_ones_named() {
    let scratch = std::env::temp_dir().join(format!("burn-lora-typed-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).unwrap();
    let with = |fixture_name: &str, key: &str, value: serde_json::Value| {
        let mut config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(fixture_name).join("config.json")).unwrap(),
        )
        .unwrap();
        config[key] = value;
        config.to_string()
    };
    // BERT: an unknown activation, named.
    let err = with("tiny-bert", "hidden_act", "quick_gelu".into())
        .parse::<burn_lora::models::BertConfig>()
        .unwrap_err();
    assert!(err.to_string().contains("quick_gelu"), "{err}");
    let ok = with("tiny-bert", "hidden_act", "gelu_new".into())
        .parse::<burn_lora::models::BertConfig>()
        .unwrap();
    assert_eq!(ok.hidden_act, burn_lora::models::HiddenAct::GeluNew);

    // Llama: a known activation its SwiGLU MLP does not compute; several eos ids.
    let err = with("tiny-llama", "hidden_act", "gelu".into())
        .parse::<burn_lora::models::LlamaConfig>()
        .unwrap_err();
    assert!(
        matches!(err, Error::Unsupported { .. }) && err.to_string().contains("gelu"),
        "{err}"
    );
    let config = with("tiny-llama", "eos_token_id", serde_json::json!([7, 9]))
        .parse::<burn_lora::models::LlamaConfig>()
        .unwrap();
    assert_eq!(
        config.eos_token_id.as_ref().and_then(|e| e.first()),
        Some(7)
    );

    // PEFT's bias: `lora_only` is refused, an unknown mode named.
    let adapter = |bias: &str| {
        let mut config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("peft_seqcls_minilm/adapter_config.json")).unwrap(),
        )
        .unwrap();
        config["bias"] = bias.into();
        let path = scratch.join("adapter_config.json");
        std::fs::write(&path, config.to_string()).unwrap();
        burn_lora::lora::LoraConfig::from_json_file(&path)
    };
    assert!(adapter("none").is_ok());
    assert!(matches!(
        adapter("lora_only"),
        Err(Error::Unsupported { what: "bias", .. })
    ));
    let err = adapter("some").unwrap_err();
    assert!(
        matches!(err, Error::Format { ref message, .. } if message.contains("some")),
        "{err}"
    );
    std::fs::remove_dir_all(&scratch).unwrap();
}
