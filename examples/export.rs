//! Merge a trained adapter into its base and save a Hugging Face checkpoint that
//! transformers loads with `AutoModelForSequenceClassification` (`problem_type:
//! multi_label_classification`, the labels as `id2label`, the tokenizer files).
//!
//! ```text
//! cargo run --release --example finetune -- --model models/all-MiniLM-L6-v2 \
//!     --data data/debtags-min200 --out runs/minilm --pooling pooler
//! cargo run --release --example export -- --model models/all-MiniLM-L6-v2 \
//!     --adapter runs/minilm/adapter --out runs/minilm/merged
//! ```
//!
//! (MiniLM pools by mean by default, which `BertForSequenceClassification` does not:
//! train with its pooler to export.)
//!
//! Heads that transformers' class computes differently are refused (BERT with mean or CLS
//! pooling, RoBERTa, DistilBERT, a GGUF or quantised base): the PEFT adapter stays the way
//! to share those. See `burn_lora::export`.

use std::path::PathBuf;

use burn_lora::adapter::{load_adapter_weights, read_adapter};
use burn_lora::classify::MultiLabelClassifier;
use burn_lora::device::parse_device;
use burn_lora::export::export_merged;
use burn_lora::models::Pretrained;

#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/args.rs"]
mod args;

use args::{switch, value};

const FLAGS: &[args::Flag] = &[
    value(
        "model",
        "the base model folder the adapter was trained on (safetensors)",
    ),
    value(
        "adapter",
        "adapter folder (adapter_config.json, adapter_model.safetensors, labels.txt)",
    ),
    value("out", "folder to write the merged checkpoint to"),
    switch(
        "overwrite",
        "replace an OUT folder that already holds files (refused otherwise)",
    ),
];

fn main() {
    allocator::keep_freed_memory();
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

fn run() -> burn_lora::Result<()> {
    let a = args::Args::parse(
        "Merge an adapter into its base and save a Hugging Face checkpoint",
        FLAGS,
    );
    let (model, adapter_dir, out): (PathBuf, PathBuf, PathBuf) = (
        a.required("model"),
        a.required("adapter"),
        a.required("out"),
    );
    // One writer per output: a second export to the same folder fails at once.
    let _lock = burn_lora::io::RunLock::acquire_beside(&out)?;
    let has_files = std::fs::read_dir(&out).is_ok_and(|mut e| e.next().is_some());
    if has_files && !a.flag("overwrite") {
        return Err(burn_lora::Error::InvalidState(format!(
            "{} already holds files: pass --overwrite to replace them",
            out.display()
        )));
    }
    let device = parse_device("flex")?;
    let adapter = read_adapter(&adapter_dir)?;
    let model = burn_lora::models::resolve_model(&model)?;
    let Pretrained { backbone, .. } = burn_lora::models::load(
        &model,
        &burn_lora::models::LoadOptions::new(adapter.max_len()),
        &device,
    )?;
    let pooling = adapter.pooling(&backbone);
    let mut classifier =
        MultiLabelClassifier::new(backbone, adapter.labels.len(), pooling, 0.0, &device)?;
    load_adapter_weights(&adapter, &mut classifier, &device)?;
    let report = export_merged(&classifier, &model, &adapter.labels, &out)?;
    println!(
        "{}: {} adapted linears merged, {} tensors written to {}",
        report.architecture,
        report.merged,
        report.tensors,
        out.display()
    );
    Ok(())
}
