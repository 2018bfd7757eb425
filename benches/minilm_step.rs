//! One full MiniLM training step (forward, backward, clipping, AdamW; LoRA r 8 on
//! query/value, mean pooling, BCE) at batch 16×128, and one inference batch at 32×128,
//! on the real all-MiniLM-L6-v2 checkpoint, so a speed regression in any layer shows.
//!
//! `scripts/fetch-models.sh all-minilm`, then, in the build the tests use:
//! `cargo bench --profile dev --features wgpu,learner,hub --bench minilm_step`
//! (device from `BURN_LORA_DEVICE`, default `flex`). Without the checkpoint it says so
//! and measures nothing.

use std::path::Path;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_lora::classify::{LossKind, MultiLabelClassifier, MultiLabelLoss, Pooling};
use burn_lora::data::Batch;
use burn_lora::device::parse_device;
use burn_lora::lora::{LoraConfig, inject_adapters};
use burn_lora::models::{BertModel, EncoderInput};
use burn_lora::train::{Decay, TrainConfig, Trainer, TrainingLoop};
use criterion::{Criterion, criterion_group, criterion_main};

#[path = "../examples/common/allocator.rs"]
mod allocator;

const MODEL: &str = "models/all-MiniLM-L6-v2";
const LABELS: usize = 32;
const SEQ: usize = 128;

fn device() -> Device {
    let name = std::env::var("BURN_LORA_DEVICE").unwrap_or_else(|_| "flex".into());
    parse_device(&name).expect("BURN_LORA_DEVICE names a compiled backend")
}

/// A full-length batch of deterministic ids in the vocabulary's ordinary range, with a
/// few labels per row.
fn batch(rows: usize, device: &Device) -> Batch {
    let ids: Vec<i64> = (0..rows * SEQ)
        .map(|i| 1000 + (i as i64 * 7919) % 20000)
        .collect();
    let targets: Vec<f32> = (0..rows * LABELS)
        .map(|i| if i % 7 == 0 { 1.0 } else { 0.0 })
        .collect();
    Batch {
        input: EncoderInput {
            input_ids: Tensor::<2, Int>::from_data(TensorData::new(ids, [rows, SEQ]), device),
            attention_mask: Tensor::<2, Int>::ones([rows, SEQ], device),
            token_type_ids: None,
        },
        targets: Tensor::from_data(TensorData::new(targets, [rows, LABELS]), device),
        indices: (0..rows).collect(),
        tokens: rows * SEQ,
    }
}

fn bench(c: &mut Criterion) {
    allocator::keep_freed_memory();
    if !Path::new(MODEL).join("model.safetensors").exists() {
        eprintln!(
            "minilm_step: {MODEL} missing (scripts/fetch-models.sh all-minilm); nothing measured"
        );
        return;
    }
    let plain = device();
    let train = plain.clone().autodiff();

    let backbone = BertModel::load(MODEL, &train).expect("checkpoint loads");
    let mut model =
        MultiLabelClassifier::new(backbone, LABELS, Pooling::Mean, 0.1, &train).expect("head");
    inject_adapters(
        &mut model,
        &LoraConfig::new(8, 16.0, &["query", "value"]),
        &train,
    )
    .expect("adapters");
    let config = TrainConfig::default()
        .with_lr(5e-4)
        .with_decay(Decay::Constant)
        .with_progress(false);
    let mut trainer = Trainer::new(model, MultiLabelLoss::new(LossKind::Bce), config, None);
    let train_batch = batch(16, &train);
    let mut group = c.benchmark_group("minilm");
    group.sample_size(10);
    group.bench_function("train_step_16x128", |b| {
        b.iter(|| {
            trainer.train_step(&train_batch).expect("finite loss");
            trainer.optimizer_step(5e-4).expect("step");
        })
    });

    let eval = MultiLabelClassifier::new(
        BertModel::load(MODEL, &plain).expect("checkpoint loads"),
        LABELS,
        Pooling::Mean,
        0.1,
        &plain,
    )
    .expect("head");
    let infer_batch = batch(32, &plain);
    group.bench_function("inference_32x128", |b| {
        b.iter(|| eval.probabilities(&infer_batch.input).into_data())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
