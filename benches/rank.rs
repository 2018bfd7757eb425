//! Which rank: a whole LoRA training step (forward, backward, clipping, AdamW; mean or
//! last-token pooling, BCE) at batch 16 × 128 and an inference batch at 32 × 128 on a real
//! checkpoint, for r ∈ {4, 8, 16, 32, 64} × targets {the family's PEFT default (BERT
//! query/value, Llama q_proj/v_proj), every linear}; α = 2r (α scales one factor: it moves
//! quality, not speed — the `sweep` example is the quality axis). Each configuration prints
//! its trainable parameters and the process's peak RSS so far.
//!
//! `scripts/fetch-models.sh all`, then, in the build the tests use:
//! `cargo bench --profile dev --features wgpu,learner,hub --bench rank`
//! (device from `BURN_LORA_DEVICE`, default `flex`; `BURN_LORA_BENCH_SMOLLM2=1` adds
//! SmolLM2-135M from its GGUF). A missing checkpoint stops the bench with an error.

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_lora::classify::{LossKind, MultiLabelClassifier, MultiLabelLoss, Pooling};
use burn_lora::data::Batch;
use burn_lora::device::parse_device;
use burn_lora::lora::{LoraConfig, ModuleSelector, inject_adapters};
use burn_lora::models::{AnyBackbone, Backbone, EncoderInput};
use burn_lora::train::{Decay, TrainConfig, Trainer, TrainingLoop};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

#[path = "../examples/common/allocator.rs"]
mod allocator;

const LABELS: usize = 32;
const SEQ: usize = 128;
const RANKS: [usize; 5] = [4, 8, 16, 32, 64];

fn device() -> Device {
    let name = std::env::var("BURN_LORA_DEVICE").unwrap_or_else(|_| "flex".into());
    parse_device(&name).expect("BURN_LORA_DEVICE names a compiled backend")
}

/// A full-length batch of deterministic ids inside the vocabulary, a few labels per row.
fn batch(rows: usize, vocab: usize, device: &Device) -> Batch {
    let ids: Vec<i64> = (0..rows * SEQ)
        .map(|i| (1000 + (i as i64 * 7919) % 20000) % vocab as i64)
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

fn load(model: &str, device: &Device) -> AnyBackbone {
    match burn_lora::models::load(model, &burn_lora::models::LoadOptions::new(SEQ), device) {
        Ok(pretrained) => pretrained.backbone,
        Err(e) => panic!("rank bench: {model}: {e} (run scripts/fetch-models.sh all)"),
    }
}

fn bench_model(c: &mut Criterion, name: &str, model: &str) {
    let plain = device();
    let train = plain.clone().autodiff();
    let train_base = load(model, &train);
    let infer_base = load(model, &plain);
    let pooling = if train_base.is_decoder() {
        Pooling::LastToken
    } else {
        Pooling::Mean
    };
    let vocab = train_base.vocab_size();
    let train_batch = batch(16, vocab, &train);
    let infer_batch = batch(32, vocab, &plain);
    let mut group = c.benchmark_group(name);
    group.sample_size(10);
    for targets in ["peft", "all-linear"] {
        for r in RANKS {
            let mut lora = LoraConfig::new(r, 2.0 * r as f64, &[] as &[&str]);
            lora.target_modules = (targets == "all-linear").then_some(ModuleSelector::AllLinear);
            // Clones share the loaded tensors: each configuration adds only its adapters.
            let mut model =
                MultiLabelClassifier::new(train_base.clone(), LABELS, pooling, 0.1, &train)
                    .expect("head");
            let report = inject_adapters(&mut model, &lora, &train).expect("adapters");
            let config = TrainConfig::default()
                .with_lr(5e-4)
                .with_decay(Decay::Constant)
                .with_progress(false);
            let mut trainer = Trainer::new(model, MultiLabelLoss::new(LossKind::Bce), config, None);
            let id = format!("{targets}/r{r}");
            group.bench_with_input(BenchmarkId::new("train_16x128", &id), &(), |b, _| {
                b.iter(|| {
                    trainer.train_step(&train_batch).expect("finite loss");
                    trainer.optimizer_step(5e-4).expect("step");
                })
            });
            let mut eval =
                MultiLabelClassifier::new(infer_base.clone(), LABELS, pooling, 0.0, &plain)
                    .expect("head");
            inject_adapters(&mut eval, &lora, &plain).expect("adapters");
            group.bench_with_input(BenchmarkId::new("infer_32x128", &id), &(), |b, _| {
                b.iter(|| eval.probabilities(&infer_batch.input).into_data())
            });
            println!(
                "{name} {id}: {} adapted linears, {} trainable parameters (adapters {} + head), \
                 peak RSS so far {:.0} MiB",
                report.adapted.len(),
                trainer.model().trainable_params(),
                report.trainable_params,
                burn_lora::finetune::peak_rss_mib().unwrap_or(f64::NAN)
            );
        }
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    allocator::keep_freed_memory();
    bench_model(c, "minilm", "models/all-MiniLM-L6-v2");
    if std::env::var_os("BURN_LORA_BENCH_SMOLLM2").is_some() {
        bench_model(c, "smollm2", "models/SmolLM2-135M-Instruct.Q4_1.gguf");
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
