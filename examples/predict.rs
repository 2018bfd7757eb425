//! Predict labels with a saved adapter (ours or one written by Python PEFT for
//! `BertForSequenceClassification`, with a `labels.txt` beside it).
//!
//! ```text
//! echo "Library for parsing XML documents" | cargo run --release --example predict -- \
//!     --model models/all-MiniLM-L6-v2 --adapter runs/minilm/adapter
//! cargo run --release --example predict -- --model DIR --adapter DIR --input texts.jsonl --format jsonl
//! ```
//! `--format jsonl` prints `{"id": ..., "labels": [...], "probs": [...]}` per input, the
//! probabilities in the order of the adapter's `labels.txt`.
//!
//! `--adapter` may be given several times: the base loads once and each adapter predicts
//! on it in turn (jsonl rows then carry `"adapter"`, the table a header per adapter).

use std::io::{BufRead, Read};
use std::path::PathBuf;

use burn_lora::data::Example;
use burn_lora::device::probe_device;
use burn_lora::lora::{BaseDtype, Quantization};
use burn_lora::models::LoadOptions;
use burn_lora::{Classifier, Prediction};
use serde_json::json;

#[path = "common/allocator.rs"]
mod allocator;
#[path = "common/args.rs"]
mod args;

use args::value;

const FLAGS: &[args::Flag] = &[
    value(
        "model",
        "base model: a Hugging Face folder (BERT or Llama family), a llama.cpp .gguf file, or (feature `hub`) a model id",
    ),
    value(
        "adapter",
        "adapter folder (adapter_config.json, adapter_model.safetensors, labels.txt); repeat for several on one base",
    ),
    value(
        "input",
        "JSON Lines with a `text` field (and optional `id`); default: text lines on stdin",
    ),
    value(
        "threshold",
        "one global threshold instead of the adapter's tuned ones",
    ),
    value("format", "table | jsonl (default table)"),
    value(
        "quantize",
        "none | nf4 | nf4-dq | int8 | keep: the frozen base's packing (default: the one the adapters were trained with)",
    ),
    value(
        "base-dtype",
        "f32 | f16 | bf16: how a float base's frozen weights are stored (default f32, whatever the adapters were trained with)",
    ),
    value(
        "template",
        "prompt template with {text}, or a file holding one; '{text}' = none (default: the one the adapter was trained with)",
    ),
    value(
        "device",
        "flex | ndarray | wgpu | vulkan | metal | cuda[:N] (default flex)",
    ),
];

struct Args {
    model: PathBuf,
    adapters: Vec<PathBuf>,
    input: Option<PathBuf>,
    threshold: Option<f32>,
    format: String,
    quantize: Option<String>,
    base_dtype: Option<String>,
    template: Option<String>,
    device: String,
}

impl Args {
    fn parse() -> Self {
        let a = args::Args::parse("Multi-label prediction with a LoRA adapter", FLAGS);
        Args {
            model: a.required("model"),
            adapters: a.get_all("adapter"),
            input: a.get("input"),
            threshold: a.get("threshold"),
            format: a.get_or("format", "table".to_string()),
            quantize: a.get("quantize"),
            base_dtype: a.get("base-dtype"),
            template: a.get("template"),
            device: a.get_or("device", "flex".to_string()),
        }
    }
}

fn main() {
    allocator::keep_freed_memory();
    // Errors print with their message (Display), not as a debug dump.
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Flags checked before the adapter or the model is read; usage errors exit with 2.
fn check_flags(a: &Args) -> Result<(), String> {
    if a.adapters.is_empty() {
        return Err("`--adapter` is required".into());
    }
    if !["table", "jsonl"].contains(&a.format.as_str()) {
        return Err(format!(
            "--format: `{}` is not one of table, jsonl",
            a.format
        ));
    }
    let packed = match &a.quantize {
        Some(q) => packing(q).map_err(|e| format!("--quantize: {e}"))?,
        None => None,
    };
    if let Some(d) = &a.base_dtype {
        let dtype: BaseDtype = d.parse().map_err(|e| format!("--base-dtype: {e}"))?;
        LoadOptions::new(1)
            .packing(packed)
            .dtype(dtype)
            .check_storage()
            .map_err(|e| format!("--base-dtype: {e}"))?;
    }
    match a.threshold {
        Some(t) if !(t > 0.0 && t < 1.0) => Err(format!("--threshold: {t} must be in (0, 1)")),
        _ => Ok(()),
    }
}

/// `--quantize`: `none` is the float base, anything else a packing.
fn packing(q: &str) -> burn_lora::Result<Option<Quantization>> {
    match q {
        "none" => Ok(None),
        q => q.parse().map(Some),
    }
}

fn run() -> burn_lora::Result<()> {
    let args = Args::parse();
    if let Err(message) = check_flags(&args) {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
    let device = probe_device(&args.device)?;
    // The adapters, then the input, are read before the base model loads (a mistyped
    // folder fails before stdin is waited on).
    for dir in &args.adapters {
        burn_lora::adapter::read_adapter(dir)?;
    }
    let examples = read_examples(args.input.as_ref())?;
    // One base serves every adapter, so it takes one packing: the flag's, else the one
    // the adapters were trained with (QLoRA adapters expect their NF4 base).
    let mut builder = Classifier::builder(&args.model);
    // Named by position: the same folder may be given twice.
    for (i, dir) in args.adapters.iter().enumerate() {
        builder = builder.adapter_named(i.to_string(), dir);
    }
    if let Some(q) = &args.quantize {
        builder = builder.quantize(packing(q)?);
    }
    if let Some(d) = &args.base_dtype {
        builder = builder.base_dtype(d.parse()?);
    }
    if let Some(t) = &args.template {
        builder = builder.template(t);
    }
    if let Some(t) = args.threshold {
        builder = builder.threshold(t);
    }
    let classifier = builder.load(&device)?;
    let texts: Vec<&str> = examples.iter().map(|e| e.text.as_str()).collect();
    let several = args.adapters.len() > 1;
    for (name, dir) in classifier.adapter_names().into_iter().zip(&args.adapters) {
        let shown = dir.display().to_string();
        if several && args.format == "table" {
            println!("== adapter {shown}");
        }
        let predictions = classifier.predict_with(name, &texts)?;
        let labels = classifier.labels_of(name)?;
        let tag = several.then_some(shown.as_str());
        print_predictions(&args.format, tag, labels, &examples, &predictions);
    }
    Ok(())
}

fn read_examples(input: Option<&PathBuf>) -> burn_lora::Result<Vec<Example>> {
    let mut examples = Vec::new();
    match input {
        Some(path) => {
            let text = std::fs::read_to_string(path).map_err(|e| burn_lora::Error::io(path, e))?;
            for (i, line) in text
                .lines()
                .enumerate()
                .filter(|(_, l)| !l.trim().is_empty())
            {
                let v: serde_json::Value =
                    serde_json::from_str(line).map_err(|e| burn_lora::Error::Format {
                        path: path.clone(),
                        message: format!("line {}: {e}", i + 1),
                    })?;
                let text = v["text"].as_str().ok_or_else(|| burn_lora::Error::Format {
                    path: path.clone(),
                    message: format!("line {}: no `text` string", i + 1),
                })?;
                let id = match &v["id"] {
                    serde_json::Value::Null => (i + 1).to_string(),
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                examples.push(Example {
                    id: Some(id),
                    text: text.to_string(),
                    labels: vec![],
                });
            }
        }
        None => {
            let mut input = String::new();
            std::io::stdin()
                .lock()
                .read_to_string(&mut input)
                .map_err(|e| burn_lora::Error::io("<stdin>", e))?;
            for (i, line) in input.as_bytes().lines().enumerate() {
                let line = line.map_err(|e| burn_lora::Error::io("<stdin>", e))?;
                if !line.trim().is_empty() {
                    examples.push(Example {
                        id: Some((i + 1).to_string()),
                        text: line,
                        labels: vec![],
                    });
                }
            }
        }
    }
    if examples.is_empty() {
        return Err(burn_lora::Error::EmptyData(
            input.cloned().unwrap_or_else(|| "<stdin>".into()),
        ));
    }
    Ok(examples)
}

fn print_predictions(
    format: &str,
    adapter: Option<&str>,
    labels: &[String],
    examples: &[Example],
    predictions: &[Prediction],
) {
    for (e, p) in examples.iter().zip(predictions) {
        match format {
            "jsonl" => {
                let mut line = json!({"id": e.id, "labels": p.labels, "probs": p.scores});
                if let Some(adapter) = adapter {
                    line["adapter"] = json!(adapter);
                }
                println!("{line}");
            }
            _ => {
                let preview: String = e.text.chars().take(60).collect();
                let mut top: Vec<usize> = (0..labels.len()).collect();
                top.sort_by(|&a, &b| p.scores[b].total_cmp(&p.scores[a]));
                println!("[{}] {preview}", e.id.as_deref().unwrap_or(""));
                println!(
                    "    labels: {}",
                    if p.labels.is_empty() {
                        "(none)".into()
                    } else {
                        p.labels.join(", ")
                    }
                );
                let best: Vec<String> = top
                    .iter()
                    .take(3)
                    .map(|&j| format!("{} {:.3}", labels[j], p.scores[j]))
                    .collect();
                println!("    top-3:  {}", best.join(", "));
            }
        }
    }
}
