//! Fine-tune a pretrained model with LoRA for multi-label classification, tune the
//! decision thresholds on valid, evaluate on test, save a PEFT adapter.
//!
//! ```text
//! cargo run --release --example finetune -- --model models/all-MiniLM-L6-v2 \
//!     --data data/debtags-min200 --out runs/minilm --train-limit 4000 --epochs 3
//! ```
//!
//! Writes `OUT/adapter/` (PEFT `adapter_config.json` + `adapter_model.safetensors`,
//! `labels.txt`, `thresholds.json`, `burn_lora.json`), `OUT/best/` and `OUT/last/`
//! (checkpoints; `--resume` continues from `last`), `OUT/metrics.json`, and
//! `OUT/breakdown.json` (test F1 by label-frequency third and by gold labels per example).

use std::path::PathBuf;

use burn_lora::classify::{LossKind, Pooling, ThresholdMode};
use burn_lora::data::{EmptyTextPolicy, UnknownLabelPolicy};
use burn_lora::device::probe_device;
use burn_lora::finetune::HeadBiasInit;
use burn_lora::lora::{BaseDtype, InitLoraWeights, Quantization};
use burn_lora::train::Decay;
use burn_lora::{Error, Finetune, FinetuneReport};

#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/args.rs"]
mod args;

use args::{switch, value};

const FLAGS: &[args::Flag] = &[
    value(
        "model",
        "model: a Hugging Face folder (config.json + safetensors + tokenizer.json; BERT or Llama family), a llama.cpp .gguf file, or (feature `hub`) a model id",
    ),
    value(
        "data",
        "data folder: train/valid/test .jsonl(.gz) and optionally labels.txt",
    ),
    value("out", "output folder"),
    value(
        "device",
        "flex | ndarray | wgpu | vulkan | metal | cuda[:N] (default flex)",
    ),
    value("rank", "LoRA rank (default 16)"),
    value("alpha", "LoRA alpha (default 32)"),
    value("dropout", "LoRA dropout (default 0.1)"),
    value(
        "targets",
        "comma-separated target modules, all-linear, or peft (the family's PEFT default list, e.g. query,value) (default all-linear)",
    ),
    switch("rslora", "rank-stabilised scaling alpha/sqrt(r)"),
    switch(
        "dora",
        "DoRA (PEFT's use_dora): a trained magnitude per output row beside A and B",
    ),
    value(
        "init",
        "how A and B start: default (PEFT's true) | gaussian | pissa | pissa_niter_K | olora (PiSSA/OLoRA take them from the frozen weight, float bases only; the adapter is saved as plain LoRA of twice the rank)",
    ),
    value("epochs", "epochs (default 2)"),
    value("max-steps", "stop after N optimizer steps"),
    value("batch-size", "examples per batch (default 16)"),
    value("grad-accum", "micro-batches per optimizer step (default 1)"),
    value("lr", "peak learning rate (default 2e-3)"),
    value("weight-decay", "AdamW weight decay (default 0.01)"),
    value(
        "loraplus-lr-ratio",
        "LoRA+: B, DoRA magnitudes and the head bias learn at lr x RATIO (PEFT's loraplus_lr_ratio; off by default)",
    ),
    value(
        "warmup-ratio",
        "fraction of steps warming up (default 0.06)",
    ),
    value("schedule", "linear | cosine | constant (default linear)"),
    value("max-len", "truncation length in tokens (default 128)"),
    value("train-limit", "use only the first N training examples"),
    value(
        "valid-limit",
        "use only the first N validation examples (quick comparisons)",
    ),
    value(
        "test-limit",
        "use only the first N test examples (quick comparisons)",
    ),
    value("loss", "bce | focal | asl (default bce)"),
    value(
        "head-bias-init",
        "prior | zero: head bias at the label priors' logits (default prior)",
    ),
    switch(
        "pos-weight",
        "BCE pos_weight from training label frequencies (capped at 30)",
    ),
    value("threshold", "global | per-label (default global)"),
    switch(
        "at-least-one",
        "predict the top label when none passes its threshold",
    ),
    value(
        "template",
        "prompt template with {text} (and {labels}), or a file holding one; '{text}' = none (default: an instruction for decoders, none for encoders)",
    ),
    value(
        "quantize",
        "none | nf4 | nf4-dq | int8 | keep: store the frozen base packed (QLoRA: nf4; nf4-dq: with double-quantised scales; keep: a GGUF file's own blocks) and dequantise per layer in each forward (default none)",
    ),
    value(
        "pooling",
        "pooler | cls | mean | last-token (default: the checkpoint's own)",
    ),
    value(
        "eval-every",
        "evaluate every N optimizer steps (default: each epoch)",
    ),
    value(
        "patience",
        "early stopping after N evaluations without improvement",
    ),
    switch("resume", "continue from OUT/last"),
    switch(
        "overwrite",
        "write into an OUT folder that already holds files (refused otherwise)",
    ),
    value("seed", "seed (default 42)"),
    value(
        "unknown-labels",
        "error | drop: valid/test labels missing from labels.txt (default error; training labels outside it are always dropped and counted)",
    ),
    switch("skip-unknown-labels", "the same as --unknown-labels drop"),
    value(
        "empty-texts",
        "error | drop | keep: examples whose text is empty or only whitespace (default error, naming their lines)",
    ),
    switch(
        "gradient-checkpointing",
        "recompute element-wise activations in the backward (burn's balanced strategy; same results; measured: no gain on MiniLM, more memory on SmolLM2)",
    ),
    value(
        "base-dtype",
        "f32 | f16 | bf16: how the frozen base's linear weights are stored (default f32; half precision is cast to f32 per layer in each forward)",
    ),
    switch("no-progress", "no progress display"),
];

fn main() {
    allocator::keep_freed_memory();
    // Errors print with their message (Display), not as a debug dump.
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// The job the flags describe: each flag given sets the builder's method of the same name;
/// the others keep the library's defaults (`burn_lora::defaults`).
fn job(a: &args::Args) -> Finetune {
    let mut job = Finetune::new(
        a.required::<PathBuf>("model"),
        a.required::<PathBuf>("data"),
    )
    .out(a.required::<PathBuf>("out"))
    .rslora(a.flag("rslora"))
    .dora(a.flag("dora"))
    .gradient_checkpointing(a.flag("gradient-checkpointing"))
    .pos_weight(a.flag("pos-weight"))
    .at_least_one(a.flag("at-least-one"))
    .resume(a.flag("resume"))
    .overwrite(a.flag("overwrite"))
    .progress(!a.flag("no-progress"))
    .on_message(|line| println!("{line}"));
    macro_rules! set {
        ($($flag:literal => $method:ident: $ty:ty),* $(,)?) => {
            $(if let Some(v) = a.get::<$ty>($flag) {
                job = job.$method(v);
            })*
        };
    }
    set! {
        "rank" => rank: usize, "alpha" => alpha: f64, "dropout" => dropout: f64,
        "targets" => targets: String, "epochs" => epochs: usize, "max-steps" => max_steps: usize,
        "batch-size" => batch_size: usize, "grad-accum" => grad_accum: usize, "lr" => lr: f64,
        "weight-decay" => weight_decay: f64, "warmup-ratio" => warmup_ratio: f64,
        "loraplus-lr-ratio" => loraplus_lr_ratio: f64,
        "schedule" => schedule: Decay, "max-len" => max_len: usize,
        "train-limit" => train_limit: usize, "valid-limit" => valid_limit: usize,
        "test-limit" => test_limit: usize, "loss" => loss: LossKind,
        "head-bias-init" => head_bias_init: HeadBiasInit, "threshold" => threshold: ThresholdMode,
        "template" => template: String, "pooling" => pooling: Pooling,
        "eval-every" => eval_every: usize, "patience" => patience: usize, "seed" => seed: u64,
        "unknown-labels" => unknown_labels: UnknownLabelPolicy,
        "empty-texts" => empty_texts: EmptyTextPolicy,
        "base-dtype" => base_dtype: BaseDtype,
        "init" => init: InitLoraWeights,
    }
    // `none` is the float base, not a packing.
    if let Some(q) = a.get::<String>("quantize").filter(|q| q != "none") {
        match q.parse::<Quantization>() {
            Ok(q) => job = job.quantize(q),
            Err(e) => usage_error(&format!("--quantize: {e}")),
        }
    }
    if a.flag("skip-unknown-labels") {
        job = job.unknown_labels(UnknownLabelPolicy::Skip);
    }
    job
}

/// A usage error: the message, exit status 2 (as the flag parser's own).
fn usage_error(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(2)
}

/// The flag behind a setting the library refused.
fn flag_of(e: &Error) -> Option<String> {
    match e {
        Error::InvalidSetting { name, .. } => Some(name.replace('_', "-")),
        Error::InvalidRank { .. } | Error::RankTooLarge { .. } => Some("rank".into()),
        Error::InvalidAlpha { .. } => Some("alpha".into()),
        Error::InvalidDropout(_) => Some("dropout".into()),
        Error::NoTargetMatched { .. } | Error::InvalidRegex { .. } => Some("targets".into()),
        _ => None,
    }
}

/// burn builds a resumed optimizer state on its default device (`BURN_DEVICE`, else the
/// first GPU backend compiled in) before moving it to the parameters' device: with the
/// `wgpu` feature on a machine without a Vulkan driver, `--resume` on flex would start (or
/// fail to start) a GPU device it never uses. Pin the default to `--device`'s backend
/// unless the user set `BURN_DEVICE`.
fn pin_default_device(device: &str) {
    if std::env::var_os("BURN_DEVICE").is_some() {
        return;
    }
    let backend = device.split(':').next().unwrap_or("flex");
    if ["flex", "ndarray", "wgpu", "vulkan", "metal", "cuda"].contains(&backend) {
        // SAFETY: called before any burn device, thread pool or other thread exists.
        unsafe { std::env::set_var("BURN_DEVICE", backend) };
    }
}

fn run() -> burn_lora::Result<()> {
    let a = args::Args::parse(
        "LoRA fine-tuning for multi-label text classification",
        FLAGS,
    );
    let job = job(&a);
    // Every setting checked before any file is read or any model loads: a typo in a choice
    // or an out-of-range number must not cost a training run.
    if let Err(e) = job.validate() {
        match (flag_of(&e), &e) {
            (Some(flag), Error::InvalidSetting { message, .. }) => {
                usage_error(&format!("--{flag}: {message}"))
            }
            (Some(flag), _) => usage_error(&format!("--{flag}: {e}")),
            (None, _) => return Err(e),
        }
    }
    let device_name = a.get_or("device", "flex".to_string());
    pin_default_device(&device_name);
    let device = probe_device(&device_name)?;
    let report = job.run(&device)?;
    print_report(&report, &a.get_or("threshold", "global".to_string()));
    Ok(())
}

fn print_report(report: &FinetuneReport, threshold: &str) {
    let test = &report.test;
    println!(
        "\ntest metrics ({} examples, thresholds tuned on valid: {threshold})",
        report.test_examples
    );
    println!("| metric          | value  |");
    println!("|-----------------|--------|");
    for (name, v) in [
        ("micro-F1", test.micro_f1),
        ("macro-F1", test.macro_f1),
        ("samples-F1", test.samples_f1),
        ("micro-precision", test.micro_precision),
        ("micro-recall", test.micro_recall),
        ("hamming loss", test.hamming_loss),
        ("subset accuracy", test.subset_accuracy),
    ] {
        println!("| {name:<15} | {v:.4} |");
    }
    println!("\ntest micro-F1 by label frequency (thirds of the labels by training count):");
    for b in &report.breakdown.by_label_frequency {
        println!(
            "  {:<8} {:>3} labels ({}-{} train examples): micro-F1 {:.4}, macro-F1 {:.4}",
            b.bucket,
            b.labels,
            b.train_count_range[0],
            b.train_count_range[1],
            b.micro_f1,
            b.macro_f1
        );
    }
    println!("test by gold labels per example:");
    for g in &report.breakdown.by_gold_count {
        println!(
            "  {:<3} {:>5} examples: micro-F1 {:.4}, samples-F1 {:.4}, exact {:.4}",
            g.gold_labels, g.examples, g.micro_f1, g.samples_f1, g.subset_accuracy
        );
    }
    if let Some(mib) = report.peak_rss_mib {
        println!("peak memory (RSS): {mib:.0} MiB");
    }
    if let Some(dir) = &report.adapter_dir {
        println!("\nadapter: {}", dir.display());
    }
}
