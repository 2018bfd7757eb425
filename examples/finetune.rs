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
use std::time::Instant;

use burn::tensor::Device;
use burn_lora::adapter::{AdapterInfo, AdapterMeta};
use burn_lora::classify::{
    LossKind, MultiLabelClassifier, MultiLabelLoss, MultiLabelMetrics, Pooling, Scores,
    ThresholdMode, Thresholds, breakdown, evaluate, predict_probs_observed, tune_thresholds,
};
use burn_lora::data::{DataSplits, EncodedSet, PromptTemplate, UnknownLabelPolicy, label_counts};
use burn_lora::device::parse_device;
use burn_lora::lora::{LoraConfig, ModuleSelector, Quantization, packing_report};
use burn_lora::models::{Backbone, Pretrained};
use burn_lora::train::{Decay, Progress, TrainConfig, Trainer, TrainerCheckpoint};
use serde_json::json;

#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/args.rs"]
mod args;
#[path = "common/memory.rs"]
mod memory;

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
    value("epochs", "epochs (default 2)"),
    value("max-steps", "stop after N optimizer steps"),
    value("batch-size", "examples per batch (default 16)"),
    value("grad-accum", "micro-batches per optimizer step (default 1)"),
    value("lr", "peak learning rate (default 2e-3)"),
    value("weight-decay", "AdamW weight decay (default 0.01)"),
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
    switch("no-progress", "no progress display"),
];

struct Args {
    model: PathBuf,
    data: PathBuf,
    out: PathBuf,
    device: String,
    rank: usize,
    alpha: f64,
    dropout: f64,
    targets: String,
    rslora: bool,
    epochs: usize,
    max_steps: Option<usize>,
    batch_size: usize,
    grad_accum: usize,
    lr: f64,
    weight_decay: f64,
    warmup_ratio: f64,
    schedule: String,
    max_len: usize,
    train_limit: Option<usize>,
    valid_limit: Option<usize>,
    test_limit: Option<usize>,
    loss: String,
    pos_weight: bool,
    head_bias_init: String,
    threshold: String,
    at_least_one: bool,
    template: Option<String>,
    pooling: Option<String>,
    quantize: String,
    eval_every: Option<usize>,
    patience: Option<usize>,
    resume: bool,
    overwrite: bool,
    seed: u64,
    unknown_labels: String,
    no_progress: bool,
}

impl Args {
    fn parse() -> Self {
        let a = args::Args::parse(
            "LoRA fine-tuning for multi-label text classification",
            FLAGS,
        );
        Args {
            model: a.required("model"),
            data: a.required("data"),
            out: a.required("out"),
            device: a.get_or("device", "flex".to_string()),
            rank: a.get_or("rank", 16),
            alpha: a.get_or("alpha", 32.0),
            dropout: a.get_or("dropout", 0.1),
            targets: a.get_or("targets", "all-linear".to_string()),
            rslora: a.flag("rslora"),
            epochs: a.get_or("epochs", 2),
            max_steps: a.get("max-steps"),
            batch_size: a.get_or("batch-size", 16),
            grad_accum: a.get_or("grad-accum", 1),
            lr: a.get_or("lr", 2e-3),
            weight_decay: a.get_or("weight-decay", 0.01),
            warmup_ratio: a.get_or("warmup-ratio", 0.06),
            schedule: a.get_or("schedule", "linear".to_string()),
            max_len: a.get_or("max-len", 128),
            train_limit: a.get("train-limit"),
            valid_limit: a.get("valid-limit"),
            test_limit: a.get("test-limit"),
            loss: a.get_or("loss", "bce".to_string()),
            pos_weight: a.flag("pos-weight"),
            head_bias_init: a.get_or("head-bias-init", "prior".to_string()),
            threshold: a.get_or("threshold", "global".to_string()),
            at_least_one: a.flag("at-least-one"),
            template: a.get("template"),
            pooling: a.get("pooling"),
            quantize: a.get_or("quantize", "none".to_string()),
            eval_every: a.get("eval-every"),
            patience: a.get("patience"),
            resume: a.flag("resume"),
            overwrite: a.flag("overwrite"),
            seed: a.get_or("seed", 42),
            unknown_labels: if a.flag("skip-unknown-labels") {
                "drop".to_string()
            } else {
                a.get_or("unknown-labels", "error".to_string())
            },
            no_progress: a.flag("no-progress"),
        }
    }
}

/// Every flag checked before any file is read or any model loads: a typo in a choice or
/// an out-of-range number must not cost a training run (the threshold mode was only read
/// after training). Usage errors exit with status 2, as the parser's do.
fn check_flags(a: &Args) -> Result<(), String> {
    let choice = |flag: &str, value: &str, choices: &[&str]| {
        if choices.contains(&value) {
            Ok(())
        } else {
            Err(format!(
                "--{flag}: `{value}` is not one of {}",
                choices.join(", ")
            ))
        }
    };
    choice("schedule", &a.schedule, &["linear", "cosine", "constant"])?;
    choice("head-bias-init", &a.head_bias_init, &["prior", "zero"])?;
    choice("threshold", &a.threshold, &["global", "per-label"])?;
    choice("unknown-labels", &a.unknown_labels, &["error", "drop"])?;
    choice(
        "quantize",
        &a.quantize,
        &["none", "nf4", "nf4-dq", "int8", "keep"],
    )?;
    LossKind::parse(&a.loss).map_err(|e| format!("--loss: {e}"))?;
    // An empty name matches no layer: refused here rather than after tokenising and loading.
    if a.targets.split(',').any(|name| name.trim().is_empty()) {
        return Err(format!(
            "--targets: `{}` has an empty module name; give comma-separated names, \
             `all-linear` or `peft`",
            a.targets
        ));
    }
    if let Some(p) = &a.pooling {
        Pooling::parse(p).map_err(|e| format!("--pooling: {e}"))?;
    }
    let positive = |flag: &str, v: f64| match v.is_finite() && v > 0.0 {
        true => Ok(()),
        false => Err(format!("--{flag}: {v} must be a finite number > 0")),
    };
    positive("lr", a.lr)?;
    positive("alpha", a.alpha)?;
    if !(a.weight_decay.is_finite() && a.weight_decay >= 0.0) {
        return Err(format!(
            "--weight-decay: {} must be finite and >= 0",
            a.weight_decay
        ));
    }
    if !(0.0..=1.0).contains(&a.warmup_ratio) {
        return Err(format!(
            "--warmup-ratio: {} must be in [0, 1]",
            a.warmup_ratio
        ));
    }
    if !(0.0..1.0).contains(&a.dropout) {
        return Err(format!("--dropout: {} must be in [0, 1)", a.dropout));
    }
    for (flag, v) in [
        ("rank", Some(a.rank)),
        ("epochs", Some(a.epochs)),
        ("batch-size", Some(a.batch_size)),
        ("grad-accum", Some(a.grad_accum)),
        ("max-len", Some(a.max_len)),
        ("max-steps", a.max_steps),
        ("eval-every", a.eval_every),
        ("patience", a.patience),
        ("train-limit", a.train_limit),
        ("valid-limit", a.valid_limit),
        ("test-limit", a.test_limit),
    ] {
        if v == Some(0) {
            return Err(format!("--{flag} must be at least 1"));
        }
    }
    Ok(())
}

fn metrics_json(m: &MultiLabelMetrics, t: &Thresholds) -> serde_json::Value {
    json!({
        "micro_f1": m.micro_f1, "macro_f1": m.macro_f1, "samples_f1": m.samples_f1,
        "micro_precision": m.micro_precision, "micro_recall": m.micro_recall,
        "hamming_loss": m.hamming_loss, "subset_accuracy": m.subset_accuracy,
        "threshold": if t.per_label.iter().all(|&x| x == t.global) { json!(t.global) } else { json!("per-label") },
    })
}

fn main() {
    allocator::keep_freed_memory();
    // Errors print with their message (Display), not as a debug dump.
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
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
    let mut args = Args::parse();
    if let Err(message) = check_flags(&args) {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
    pin_default_device(&args.device);
    refuse_to_clobber(&args.out, args.resume, args.overwrite)?;
    args.model = burn_lora::models::resolve_model(&args.model)?;
    let device = parse_device(&args.device)?;
    device.seed(args.seed);
    let train_device = device.clone().autodiff();

    let policy = if args.unknown_labels == "drop" {
        UnknownLabelPolicy::Skip
    } else {
        UnknownLabelPolicy::Error
    };
    let mut data = DataSplits::load(&args.data, policy)?;
    for (split, limit) in [
        (&mut data.train, args.train_limit),
        (&mut data.valid, args.valid_limit),
        (&mut data.test, args.test_limit),
    ] {
        if let Some(n) = limit {
            split.truncate(n);
        }
    }
    let labels = data.labels.clone();
    for (split, dropped) in ["train", "valid", "test"].iter().zip(data.skipped) {
        if dropped > 0 {
            println!("{split}: {dropped} label occurrences not in the label set dropped");
        }
    }
    println!(
        "data: {} train / {} valid / {} test, {} labels",
        data.train.len(),
        data.valid.len(),
        data.test.len(),
        labels.len()
    );

    let mut lora = LoraConfig::new(8, 16.0, &[] as &[&str]);
    lora.r = args.rank;
    lora.lora_alpha = args.alpha;
    lora.lora_dropout = args.dropout;
    lora.use_rslora = args.rslora;
    // PEFT's spelling: `all-linear` is every linear but the head, not a module name; `peft`
    // leaves the list unset, so the model family's PEFT default applies (as in PEFT itself).
    lora.target_modules = match args.targets.trim() {
        "peft" => None,
        "all-linear" => Some(ModuleSelector::AllLinear),
        t => Some(ModuleSelector::names(
            &t.split(',').map(str::trim).collect::<Vec<_>>(),
        )),
    };
    lora.validate()?;

    let quantize = match args.quantize.as_str() {
        "none" => None,
        q => Some(q.parse::<Quantization>()?),
    };
    // Packed while loading: the float base is never whole in memory.
    let Pretrained {
        mut backbone,
        tokenizer,
        ..
    } = burn_lora::models::load_packed(&args.model, args.max_len, quantize, &train_device)?;
    if let Some(q) = quantize {
        let r = packing_report(&mut backbone)?;
        println!(
            "frozen base: {} linears as {q}, {:.1} MiB -> {:.1} MiB ({:.2} bits per weight)",
            r.layers,
            r.dense_bytes as f64 / 1048576.0,
            r.packed_bytes as f64 / 1048576.0,
            r.bits_per_param()
        );
    }
    let template = match &args.template {
        Some(t) => Some(PromptTemplate::from_arg(t, labels.names())?).filter(|t| !t.is_identity()),
        None if backbone.is_decoder() => Some(PromptTemplate::default_instruction(
            tokenizer.inner().token_to_id("<|im_start|>").is_some(),
        )),
        None => None,
    };
    let pooling = match &args.pooling {
        Some(p) => Pooling::parse(p)?,
        None => Pooling::default_for(Some(&args.model), &backbone),
    };
    let mut model = MultiLabelClassifier::new(backbone, labels.len(), pooling, 0.1, &train_device)?;
    if args.head_bias_init == "prior" && !model.head.has_bias() {
        println!("head without bias (transformers' `score` for decoders): no prior init");
    }
    if args.head_bias_init == "prior" {
        model
            .head
            .init_bias_from_priors(&label_counts(&data.train, labels.len()), data.train.len())?;
    }
    let checkpoint = TrainerCheckpoint {
        dir: args.out.clone(),
        lora: lora.clone(),
        labels: labels.clone(),
        meta: AdapterMeta {
            pooling,
            max_len: args.max_len,
            template: template.as_ref().map(|t| t.as_str().to_string()),
            model_type: model.backbone.model_type().to_string(),
            quantize,
        },
        base_model: Some(args.model.display().to_string()),
    };
    let mut loss = MultiLabelLoss::new(LossKind::parse(&args.loss)?);
    if args.pos_weight {
        loss = loss.with_pos_weight_from_counts(
            &label_counts(&data.train, labels.len()),
            data.train.len(),
            30.0,
            &train_device,
        );
    }
    let config = TrainConfig {
        epochs: args.epochs,
        max_steps: args.max_steps,
        batch_size: args.batch_size,
        grad_accum: args.grad_accum,
        lr: args.lr,
        weight_decay: args.weight_decay,
        warmup_ratio: args.warmup_ratio,
        decay: match args.schedule.as_str() {
            "cosine" => Decay::Cosine,
            "constant" => Decay::Constant,
            _ => Decay::Linear,
        },
        max_grad_norm: Some(1.0),
        eval_every: args.eval_every,
        patience: args.patience,
        seed: args.seed,
        bucket: true,
        eval_batch_size: 64,
        progress: !args.no_progress,
    };

    let t0 = Instant::now();
    let train = EncodedSet::encode(&data.train, &tokenizer, template.as_ref(), labels.len())?;
    let valid = EncodedSet::encode(&data.valid, &tokenizer, template.as_ref(), labels.len())?;
    let test = EncodedSet::encode(&data.test, &tokenizer, template.as_ref(), labels.len())?;
    println!(
        "tokenised in {:.1}s; pooling {pooling:?}; template {:?}",
        t0.elapsed().as_secs_f64(),
        template.as_ref().map(|t| t.as_str())
    );
    if args.device.starts_with("flex") {
        match burn_lora::ops::blas_library() {
            Some(library) => println!("large products on flex: system BLAS {library}"),
            None => println!("large products on flex: built-in gemm kernel"),
        }
    }

    let (mut trainer, state) = if args.resume {
        let (t, s) = Trainer::resume(model, loss, config.clone(), checkpoint, &device)?;
        println!("resumed at step {} (epoch {})", s.step, s.epoch);
        (t, Some(s))
    } else {
        let report = burn_lora::lora::inject_adapters(&mut model, &lora, &train_device)?;
        println!(
            "LoRA r={} alpha={} on {} modules: {} adapter + {} head = {} trainable parameters",
            lora.r,
            lora.lora_alpha,
            report.adapted.len(),
            report.trainable_params,
            model.head.num_params(),
            report.trainable_params + model.head.num_params()
        );
        (
            Trainer::new(model, loss, config.clone(), Some(checkpoint.clone())),
            None,
        )
    };
    let trainable = trainer.model().trainable_params();
    let state = trainer.fit(&train, &valid, &device, state)?;
    println!(
        "trained {} steps in {:.1}s ({:.0} tokens/s); best valid micro-F1 {:.4} at step {}",
        state.step,
        state.train_seconds,
        state.tokens as f64 / state.train_seconds.max(1e-9),
        state.best_micro_f1,
        state.best_step
    );

    let best = trainer
        .best_model()
        .ok_or_else(|| burn_lora::Error::InvalidState("no evaluation ran".into()))?
        .clone();
    // The evaluation that chose the best model already scored valid with it.
    let valid_probs = match trainer.best_eval.take() {
        Some(eval) if eval.probs.len() == valid.len() * labels.len() => eval.probs,
        _ => predict_with_progress(
            &best,
            &valid,
            config.eval_batch_size,
            "valid",
            !args.no_progress,
            &device,
        )?,
    };
    let valid_targets = valid.multi_hot();
    let valid_scores = Scores::new(&valid_probs, &valid_targets, labels.len())?;
    let mode = match args.threshold.as_str() {
        "per-label" => ThresholdMode::PerLabel,
        "global" => ThresholdMode::Global,
        other => {
            return Err(burn_lora::Error::Unsupported {
                what: "threshold",
                detail: format!("`{other}` (global or per-label)"),
            });
        }
    };
    let thresholds = tune_thresholds(valid_scores, mode, 5, args.at_least_one);
    let valid_metrics = evaluate(valid_scores, &thresholds);
    let test_probs = predict_with_progress(
        &best,
        &test,
        config.eval_batch_size,
        "test",
        !args.no_progress,
        &device,
    )?;
    let test_targets = test.multi_hot();
    let test_metrics = evaluate(
        Scores::new(&test_probs, &test_targets, labels.len())?,
        &thresholds,
    );

    best.save_adapter(
        args.out.join("adapter"),
        &AdapterInfo {
            lora: &lora,
            labels: &labels,
            thresholds: Some(&thresholds),
            max_len: args.max_len,
            template: template.as_ref().map(|t| t.as_str()),
            base_model: args.model.to_str(),
        },
    )?;
    let report = json!({
        "valid": metrics_json(&valid_metrics, &thresholds),
        "test": metrics_json(&test_metrics, &thresholds),
        "train_seconds": state.train_seconds,
        "train_tokens_per_second": state.tokens as f64 / state.train_seconds.max(1e-9),
        "trainable_params": trainable,
        "peak_rss_mib": memory::peak_rss_mib(),
        "steps": state.step,
        "best_step": state.best_step,
        "recipe": {
            "rank": args.rank, "alpha": args.alpha, "dropout": args.dropout,
            "targets": args.targets, "rslora": args.rslora, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "max_len": args.max_len,
            "train_limit": args.train_limit, "valid_limit": args.valid_limit,
            "test_limit": args.test_limit, "loss": args.loss, "pooling": pooling,
            "threshold": args.threshold, "seed": args.seed, "device": args.device,
            "head_bias_init": args.head_bias_init,
            "template": template.as_ref().map(|t| t.as_str()),
            "quantize": args.quantize,
        },
    });
    burn_lora::io::write_atomic(
        args.out.join("metrics.json"),
        serde_json::to_string_pretty(&report)?.as_bytes(),
    )?;
    // Test scores by label frequency (thirds by training count) and by gold labels per
    // example, under the tuned thresholds.
    let test_breakdown = breakdown(
        &thresholds.apply(&test_probs),
        &test_targets,
        labels.len(),
        &label_counts(&data.train, labels.len()),
    );
    burn_lora::io::write_atomic(
        args.out.join("breakdown.json"),
        serde_json::to_string_pretty(&json!({ "test": test_breakdown }))?.as_bytes(),
    )?;

    println!(
        "\ntest metrics ({} examples, thresholds tuned on valid: {})",
        data.test.len(),
        args.threshold
    );
    println!("| metric          | value  |");
    println!("|-----------------|--------|");
    for (name, v) in [
        ("micro-F1", test_metrics.micro_f1),
        ("macro-F1", test_metrics.macro_f1),
        ("samples-F1", test_metrics.samples_f1),
        ("micro-precision", test_metrics.micro_precision),
        ("micro-recall", test_metrics.micro_recall),
        ("hamming loss", test_metrics.hamming_loss),
        ("subset accuracy", test_metrics.subset_accuracy),
    ] {
        println!("| {name:<15} | {v:.4} |");
    }
    println!("\ntest micro-F1 by label frequency (thirds of the labels by training count):");
    for b in &test_breakdown.by_label_frequency {
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
    for g in &test_breakdown.by_gold_count {
        println!(
            "  {:<3} {:>5} examples: micro-F1 {:.4}, samples-F1 {:.4}, exact {:.4}",
            g.gold_labels, g.examples, g.micro_f1, g.samples_f1, g.subset_accuracy
        );
    }
    if let Some(mib) = memory::peak_rss_mib() {
        println!("peak memory (RSS): {mib:.0} MiB");
    }
    println!("\nadapter: {}", args.out.join("adapter").display());
    Ok(())
}

/// Probabilities for a whole set with the best model, showing progress (the test set of
/// the main command takes minutes on a CPU).
fn predict_with_progress<B: Backbone>(
    model: &MultiLabelClassifier<B>,
    set: &EncodedSet,
    batch_size: usize,
    what: &str,
    progress: bool,
    device: &Device,
) -> burn_lora::Result<Vec<f32>> {
    let mut bar = Progress::new(set.len().div_ceil(batch_size), progress);
    bar.println(&format!("predicting {what} ({} examples)", set.len()));
    let mut done = 0;
    let probs = predict_probs_observed(model, set, batch_size, device, || {
        done += 1;
        bar.update(done, what);
    });
    bar.finish();
    probs
}

/// An earlier run's folder is kept unless the command says what to do with it:
/// `--resume` continues it, `--overwrite` writes over it.
fn refuse_to_clobber(
    out: &std::path::Path,
    resume: bool,
    overwrite: bool,
) -> burn_lora::Result<()> {
    let has_files = std::fs::read_dir(out).is_ok_and(|mut entries| entries.next().is_some());
    if has_files && !resume && !overwrite {
        return Err(burn_lora::Error::InvalidState(format!(
            "{} already holds a run: pass --resume to continue it or --overwrite to replace it",
            out.display()
        )));
    }
    Ok(())
}
