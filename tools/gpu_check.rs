//! The checks `scripts/gpu-check.sh` runs on a borrowed GPU machine, as one binary that
//! needs no checkpoint files (only what the work tree carries):
//!
//! 1. parity: the tiny BERT-family and Llama-family fixtures on `--device` against their
//!    transformers references (`tests/fixtures/*/reference.safetensors`, max abs diff at
//!    non-padding positions ≤ 1e-4, the tests' tolerance);
//! 2. a tiny training run: loss goes down, the frozen base stays bit-identical;
//! 3. throughput of LoRA training (batch 16 × 128) and inference (32 × 128) at the shapes
//!    of MiniLM-L6 and SmolLM2-135M, with random weights (the arithmetic does not depend
//!    on the values; the real checkpoints are too big to carry).
//!
//! Run from the repository root. Exits non-zero when a parity or training check fails.
//!
//! ```text
//! cargo run --features wgpu,learner,hub --example gpu_check -- --device wgpu --steps 10
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use burn_lora::Result;
use burn_lora::classify::{LossKind, MultiLabelClassifier, MultiLabelLoss, Pooling};
use burn_lora::data::{EncodedSet, SplitMix64};
use burn_lora::device::probe_device;
use burn_lora::io::SafetensorsFile;
use burn_lora::lora::FrozenBase;
use burn_lora::lora::{LoraConfig, inject_adapters};
use burn_lora::models::TensorSource;
use burn_lora::models::{
    Backbone, BertConfig, BertModel, EncoderInput, LlamaConfig, LlamaModel, LoadOptions,
};
use burn_lora::train::{Decay, TrainConfig, Trainer, TrainingLoop};

#[path = "../examples/common/allocator.rs"]
mod allocator;
#[path = "../examples/common/args.rs"]
mod args;

/// MiniLM-L6 (`sentence-transformers/all-MiniLM-L6-v2`)'s `config.json`, as shipped.
const MINILM_CONFIG: &str = r#"{"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6,
  "num_attention_heads": 12, "intermediate_size": 1536, "hidden_act": "gelu",
  "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.1, "max_position_embeddings": 512,
  "type_vocab_size": 2, "vocab_size": 30522, "layer_norm_eps": 1e-12, "pad_token_id": 0}"#;

/// SmolLM2-135M-Instruct's `config.json` (the fields the decoder reads).
const SMOLLM2_CONFIG: &str = r#"{"model_type": "llama", "hidden_size": 576, "num_hidden_layers": 30,
  "num_attention_heads": 9, "num_key_value_heads": 3, "intermediate_size": 1536,
  "vocab_size": 49152, "rms_norm_eps": 1e-5, "rope_theta": 100000.0,
  "tie_word_embeddings": true, "pad_token_id": 2, "eos_token_id": 2}"#;

fn main() {
    allocator::keep_freed_memory();
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let a = args::Args::parse(
        "parity, training and throughput checks on one device (scripts/gpu-check.sh)",
        &[
            args::value("device", "device (default wgpu)"),
            args::value("steps", "timed steps per throughput figure (default 10)"),
            args::switch("skip-throughput", "only the parity and training checks"),
        ],
    );
    let spec: String = a.get_or("device", "wgpu".to_string());
    let steps: usize = a.get_or("steps", 10);
    let device = probe_device(&spec)?;
    println!("device {spec}: answers");

    let mut failures = parity(&device);
    failures += tiny_training(&device)?;
    if !a.flag("skip-throughput") {
        throughput(&device, steps)?;
    }
    if failures > 0 {
        return Err(burn_lora::Error::InvalidState(format!(
            "{failures} check(s) failed on {spec}"
        )));
    }
    println!("all checks passed on {spec}");
    Ok(())
}

/// A committed fixture, relative to the working directory (the repository root: the
/// binary runs on another machine, where the build's path does not exist).
fn fixture(name: &str) -> PathBuf {
    Path::new("tests/fixtures").join(name)
}

/// Each fixture's last hidden state against transformers'; returns the failures.
fn parity(device: &Device) -> usize {
    let mut failures = 0;
    let fixtures = [
        ("tiny-bert", false),
        ("tiny-roberta", false),
        ("tiny-distilbert", false),
        ("tiny-llama", true),
        ("tiny-mistral", true),
        ("tiny-qwen2", true),
        ("tiny-qwen3", true),
    ];
    for (name, decoder) in fixtures {
        match hidden_state_error(&fixture(name), decoder, device) {
            Ok(err) if err <= 1e-4 => println!("parity {name}: max abs diff {err:.2e} (ok)"),
            Ok(err) => {
                println!("parity {name}: max abs diff {err:.2e} > 1e-4 (FAIL)");
                failures += 1;
            }
            Err(e) => {
                println!("parity {name}: {e} (FAIL)");
                failures += 1;
            }
        }
    }
    failures
}

fn hidden_state_error(dir: &Path, decoder: bool, device: &Device) -> Result<f32> {
    let reference = SafetensorsFile::open(dir.join("reference.safetensors"))?;
    let ints = |name: &str| -> Result<(Vec<u32>, Vec<usize>)> {
        let (values, shape) = reference.read_i64(name)?;
        Ok((values.into_iter().map(|v| v as u32).collect(), shape))
    };
    let (ids, shape) = ints("input_ids")?;
    let (mask, _) = ints("attention_mask")?;
    let types = match reference.contains("token_type_ids") {
        true => Some(ints("token_type_ids")?.0),
        false => None,
    };
    let input = EncoderInput::new(&ids, &mask, types.as_deref(), shape[0], shape[1], device)?;
    let (ours, hidden) = if decoder {
        let model = load_llama(dir, device)?;
        (model.forward(&input), model.hidden_size())
    } else {
        let model = load_bert(dir, device)?;
        (model.forward(&input), model.hidden_size())
    };
    let ours = ours
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| burn_lora::Error::InvalidState(format!("reading the output: {e:?}")))?;
    let (expected, _) = reference.read_f32("last_hidden_state")?;
    let mut worst = 0f32;
    for (position, _) in mask.iter().enumerate().filter(|(_, m)| **m == 1) {
        let span = position * hidden..(position + 1) * hidden;
        for (a, b) in ours[span.clone()].iter().zip(&expected[span]) {
            worst = worst.max((a - b).abs());
        }
    }
    Ok(worst)
}

/// Eight AdamW steps of tiny BERT with LoRA on one fixed batch; returns the failures.
fn tiny_training(device: &Device) -> Result<usize> {
    let train_device = device.clone().autodiff();
    device.seed(3);
    let backbone = load_bert(fixture("tiny-bert"), &train_device)?;
    let mut model = MultiLabelClassifier::new(backbone, 3, Pooling::Mean, 0.0, &train_device)?;
    inject_adapters(
        &mut model,
        &LoraConfig::new(4, 8.0, &["query", "value"]),
        &train_device,
    )?;
    let base_weight = |m: &MultiLabelClassifier<BertModel>| {
        m.backbone.layers[0]
            .attention
            .value
            .base
            .weight_out_in()
            .into_data()
    };
    let before = base_weight(&model);
    let vocab = read_config::<BertConfig>(&fixture("tiny-bert"))?.vocab_size;
    let set = random_set(16, 12, 3, vocab, 1);
    let batch = set.batch(&(0..16).collect::<Vec<_>>(), device);
    let mut trainer = Trainer::new(model, MultiLabelLoss::new(LossKind::Bce), config(), None);
    let mut losses = Vec::new();
    for _ in 0..8 {
        losses.push(trainer.train_step(&batch)?);
        trainer.optimizer_step(3e-2)?;
    }
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    let base_kept = base_weight(trainer.model()) == before;
    let ok = last < 0.8 * first && base_kept;
    println!(
        "training tiny-bert: loss {first:.4} -> {last:.4}, base {} ({})",
        if base_kept { "unchanged" } else { "CHANGED" },
        if ok { "ok" } else { "FAIL" }
    );
    Ok(usize::from(!ok))
}

fn config() -> TrainConfig {
    TrainConfig::default()
        .with_lr(5e-4)
        .with_decay(Decay::Constant)
        .with_progress(false)
}

/// `n` rows of `len` random token ids below `vocab` (id 0 left for padding), with random
/// label sets: the shapes of a full-length batch.
fn random_set(n: usize, len: usize, labels: usize, vocab: usize, seed: u64) -> EncodedSet {
    let mut rng = SplitMix64::new(seed);
    EncodedSet {
        ids: (0..n)
            .map(|_| (0..len).map(|_| 1 + rng.below(vocab - 1) as u32).collect())
            .collect(),
        labels: (0..n)
            .map(|_| (0..labels).filter(|_| rng.below(4) == 0).collect())
            .collect(),
        num_labels: labels,
        pad_id: 0,
    }
}

/// Weights drawn at random (normal, σ 0.02; norm scales 1, biases 0), for throughput.
struct RandomWeights;

impl TensorSource for RandomWeights {
    fn origin(&self) -> &Path {
        Path::new("<random weights>")
    }

    fn contains(&self, name: &str) -> bool {
        // The bare model's names (no task prefix), a pooler, no separate output head.
        !name.starts_with("bert.")
            && !name.starts_with("roberta.")
            && !name.starts_with("distilbert.")
            && !name.starts_with("lm_head")
    }

    fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        Ok(match (D, name.ends_with(".bias")) {
            (1, true) => Tensor::zeros(shape, device),
            (1, false) => Tensor::ones(shape, device),
            _ => Tensor::random(shape, Distribution::Normal(0.0, 0.02), device),
        })
    }
}

fn throughput(device: &Device, steps: usize) -> Result<()> {
    let minilm: BertConfig = MINILM_CONFIG.parse()?;
    let smollm2: LlamaConfig = SMOLLM2_CONFIG.parse()?;
    let (vocab_bert, vocab_llama) = (minilm.vocab_size, smollm2.vocab_size);
    let load_bert =
        |d: &Device| BertModel::from_source(&minilm, &RandomWeights, &LoadOptions::new(128), d);
    let load_llama =
        |d: &Device| LlamaModel::from_source(&smollm2, &RandomWeights, &LoadOptions::new(128), d);
    let train = device.clone().autodiff();
    measure(
        "MiniLM-L6",
        load_bert(&train)?,
        load_bert(device)?,
        vocab_bert,
        device,
        steps,
    )?;
    measure(
        "SmolLM2-135M",
        load_llama(&train)?,
        load_llama(device)?,
        vocab_llama,
        device,
        steps,
    )
}

/// Tokens/s of LoRA training (r 8, the family's PEFT targets, 16 × 128) and of inference
/// (32 × 128), after two warm-up steps each (kernel compilation, autotuning).
fn measure<B: Backbone>(
    name: &str,
    train_backbone: B,
    infer_backbone: B,
    vocab: usize,
    device: &Device,
    steps: usize,
) -> Result<()> {
    let train_device = device.clone().autodiff();
    let labels = 20;
    let mut lora = LoraConfig::new(8, 16.0, &[] as &[&str]);
    lora.target_modules = None;
    let pooling = Pooling::default_for(None, &train_backbone);

    let mut model = MultiLabelClassifier::new(train_backbone, labels, pooling, 0.1, &train_device)?;
    inject_adapters(&mut model, &lora, &train_device)?;
    let mut trainer = Trainer::new(model, MultiLabelLoss::new(LossKind::Bce), config(), None);
    let set = random_set(16, 128, labels, vocab, 7);
    let batch = set.batch(&(0..16).collect::<Vec<_>>(), device);
    let train_rate = timed(steps, batch.tokens, || {
        trainer.train_step(&batch)?;
        trainer.optimizer_step(5e-4)
    })?;
    drop(trainer);

    let mut model = MultiLabelClassifier::new(infer_backbone, labels, pooling, 0.1, device)?;
    inject_adapters(&mut model, &lora, device)?;
    let set = random_set(32, 128, labels, vocab, 8);
    let batch = set.batch(&(0..32).collect::<Vec<_>>(), device);
    let infer_rate = timed(steps, batch.tokens, || {
        // Reading the result back waits for the whole forward.
        model.probabilities(&batch.input).into_data();
        Ok(())
    })?;
    println!(
        "throughput {name}: training {train_rate:.0} tokens/s (16 x 128), inference {infer_rate:.0} tokens/s (32 x 128)"
    );
    Ok(())
}

fn timed(steps: usize, tokens: usize, mut step: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..2 {
        step()?;
    }
    let start = Instant::now();
    for _ in 0..steps.max(1) {
        step()?;
    }
    Ok((steps.max(1) * tokens) as f64 / start.elapsed().as_secs_f64())
}

/// A fixture folder's `config.json` (fixtures carry no tokenizer: they are built through
/// their family's `from_source`, not `models::load`).
fn read_config<C: std::str::FromStr<Err = burn_lora::Error>>(dir: &Path) -> Result<C> {
    let path = dir.join("config.json");
    std::fs::read_to_string(&path)
        .map_err(|e| burn_lora::Error::io(&path, e))?
        .parse()
}

fn load_bert(dir: impl AsRef<Path>, device: &Device) -> Result<BertModel> {
    let dir = dir.as_ref();
    let ckpt = burn_lora::io::Checkpoint::open(dir)?;
    BertModel::from_source(&read_config(dir)?, &ckpt, &LoadOptions::new(32), device)
}

fn load_llama(dir: impl AsRef<Path>, device: &Device) -> Result<LlamaModel> {
    let dir = dir.as_ref();
    let ckpt = burn_lora::io::Checkpoint::open(dir)?;
    LlamaModel::from_source(&read_config(dir)?, &ckpt, &LoadOptions::new(32), device)
}
