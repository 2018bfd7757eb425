//! Bad input gets a clear `Error` before any work: token ids past the vocabulary and rows
//! longer than the position table (flex would panic on the index, a GPU backend would
//! read out of range silently).

mod common;

use burn::tensor::Device;
use burn_lora::Error;
use burn_lora::classify::{LossKind, MultiLabelClassifier, MultiLabelLoss, Pooling, predict_probs};
use burn_lora::data::EncodedSet;
use burn_lora::models::{Backbone, BertModel, LlamaModel, check_max_len};
use burn_lora::train::{TrainConfig, Trainer, run_loop};
use common::fixture;

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
    let bert = BertModel::load(fixture("tiny-bert"), &device).unwrap();
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

    let llama = LlamaModel::load(fixture("tiny-llama"), &device).unwrap();
    let vocab = llama.vocab_size() as u32;
    let clf = MultiLabelClassifier::new(llama, 2, Pooling::LastToken, 0.0, &device).unwrap();
    let err = predict_probs(&clf, &set(vec![vec![5, vocab + 7]]), 8, &device).unwrap_err();
    assert!(matches!(err, Error::InputOutOfRange(_)), "{err}");
}

#[test]
fn rows_longer_than_the_position_table_are_refused_before_training() {
    let device = device();
    let train_device = device.clone().autodiff();
    let bert = BertModel::load(fixture("tiny-bert"), &train_device).unwrap();
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
    let config = TrainConfig {
        progress: false,
        ..TrainConfig::default()
    };
    let err = run_loop(&mut trainer, &long, &short, &config, &device, None).unwrap_err();
    assert!(matches!(err, Error::InputOutOfRange(_)), "{err}");
    let err = run_loop(&mut trainer, &short, &long, &config, &device, None).unwrap_err();
    assert!(matches!(err, Error::InputOutOfRange(_)), "{err}");

    // RoPE decoders have no table: no limit.
    let llama = LlamaModel::load(fixture("tiny-llama"), &device).unwrap();
    assert_eq!(llama.max_positions(), None);
    assert!(check_max_len(&llama, 100_000).is_ok());
}
