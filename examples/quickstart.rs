//! The library's short path: load a checkpoint, attach LoRA, put a multi-label head on it,
//! train, save a PEFT adapter, predict. The same program is the README's quickstart.
//!
//! ```text
//! scripts/fetch-models.sh all-minilm
//! cargo run --release --example quickstart
//! ```
//!
//! It trains on 256 debtags examples for one epoch (a minute on a laptop CPU) and writes
//! the adapter to `runs/quickstart/`. `examples/finetune.rs` is the full program (flags,
//! threshold modes, checkpoints and resume, test metrics).

use burn_lora::models::{self, LoadOptions};
use burn_lora::prelude::*;

fn main() -> burn_lora::Result<()> {
    let device = parse_device("flex")?;
    let train_device = device.clone().autodiff();
    // A folder, a llama.cpp .gguf file, or (feature `hub`) a Hugging Face id.
    let Pretrained {
        backbone,
        tokenizer,
        ..
    } = models::load(
        "models/all-MiniLM-L6-v2",
        &LoadOptions::new(128),
        &train_device,
    )?;
    let data = DataSplits::load("data/debtags-min200", UnknownLabelPolicy::Error)?;
    let labels = data.labels.clone();
    let train = &data.train[..data.train.len().min(256)];
    let train = EncodedSet::encode(train, &tokenizer, None, labels.len())?;
    let valid = &data.valid[..data.valid.len().min(128)];
    let valid = EncodedSet::encode(valid, &tokenizer, None, labels.len())?;

    let lora = LoraConfig::new(8, 16.0, &["query", "value"]);
    let mut model =
        MultiLabelClassifier::new(backbone, labels.len(), Pooling::Mean, 0.1, &train_device)?;
    inject_adapters(&mut model, &lora, &train_device)?;
    let config = TrainConfig::default()
        .with_epochs(1)
        .with_lr(2e-3)
        .with_progress(false);
    let mut trainer = Trainer::new(model, MultiLabelLoss::new(LossKind::Bce), config, None);
    let state = trainer.fit(&train, &valid, &device, None)?;

    let best = trainer.best_model().expect("fit evaluates at least once");
    let thresholds = trainer.best_eval.as_ref().map(|e| &e.thresholds);
    let mut info = AdapterInfo::new(&lora, &labels, 128);
    info.thresholds = thresholds;
    best.save_adapter("runs/quickstart", &info)?; // a PEFT folder Python can load
    let probs = predict_probs(best, &valid, 64, &device)?; // valid rows × labels, sigmoid
    println!(
        "valid micro-F1 {:.3}; {} probabilities",
        state.best_micro_f1,
        probs.len()
    );
    Ok(())
}
