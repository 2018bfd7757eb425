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

use burn::tensor::Device;
use burn_lora::adapter::{LoadedAdapter, load_adapter_weights, read_adapter};
use burn_lora::classify::{MultiLabelClassifier, Thresholds, predict_probs};
use burn_lora::data::{EncodedSet, Example, PromptTemplate};
use burn_lora::device::parse_device;
use burn_lora::lora::Quantization;
use burn_lora::models::Pretrained;
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
    if let Some(q) = &a.quantize
        && !["none", "nf4", "int8", "keep"].contains(&q.as_str())
    {
        return Err(format!(
            "--quantize: `{q}` is not one of none, nf4, nf4-dq, int8, keep"
        ));
    }
    match a.threshold {
        Some(t) if !(t > 0.0 && t < 1.0) => Err(format!("--threshold: {t} must be in (0, 1)")),
        _ => Ok(()),
    }
}

fn run() -> burn_lora::Result<()> {
    let mut args = Args::parse();
    if let Err(message) = check_flags(&args) {
        eprintln!("error: {message}");
        std::process::exit(2);
    }
    args.model = burn_lora::models::resolve_model(&args.model)?;
    let device = parse_device(&args.device)?;
    // Every adapter and the input are read before the base model loads.
    let adapters = args
        .adapters
        .iter()
        .map(read_adapter)
        .collect::<burn_lora::Result<Vec<_>>>()?;
    let examples = read_examples(args.input.as_ref())?;
    // Load at the longest length any adapter uses (checked against the model's
    // position table); each adapter then tokenises at its own.
    let longest = adapters
        .iter()
        .map(LoadedAdapter::max_len)
        .max()
        .unwrap_or(512);
    // One base serves every adapter, so it takes one packing: the flag's, else the one
    // the adapters were trained with (QLoRA adapters expect their NF4 base).
    let quantize = match args.quantize.as_deref() {
        Some("none") => None,
        Some(q) => Some(q.parse::<Quantization>()?),
        None => {
            let trained: Vec<Option<Quantization>> = adapters
                .iter()
                .map(|a| a.meta.as_ref().and_then(|m| m.quantize))
                .collect();
            if trained.windows(2).any(|w| w[0] != w[1]) {
                return Err(burn_lora::Error::InvalidState(format!(
                    "the adapters were trained on differently packed bases ({trained:?}): choose one with --quantize"
                )));
            }
            trained.first().copied().flatten()
        }
    };
    let pretrained = burn_lora::models::load_packed(&args.model, longest, quantize, &device)?;
    let several = adapters.len() > 1;
    for adapter in &adapters {
        if several && args.format == "table" {
            println!("== adapter {}", adapter.dir.display());
        }
        // Each adapter goes on a copy of the one loaded base: the copy shares the base's
        // weights, and attaching adapters to it leaves the base as loaded.
        predict(&pretrained, &args, adapter, several, &examples, &device)?;
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

fn predict(
    pretrained: &Pretrained,
    args: &Args,
    adapter: &LoadedAdapter,
    tag: bool,
    examples: &[Example],
    device: &Device,
) -> burn_lora::Result<()> {
    let backbone = pretrained.backbone.clone();
    let labels = adapter.labels.clone();
    // `--template` may name a file; the adapter's template is the template itself (a
    // downloaded adapter must not make predict read a path of its choosing).
    let template = match (
        &args.template,
        adapter.meta.as_ref().and_then(|m| m.template.as_ref()),
    ) {
        (Some(t), _) => Some(PromptTemplate::from_arg(t, labels.names())?),
        (None, Some(t)) => Some(PromptTemplate::new(t, labels.names())?),
        (None, None) => None,
    }
    .filter(|t| !t.is_identity());
    let pooling = adapter.pooling(&backbone);
    let mut model = MultiLabelClassifier::new(backbone, labels.len(), pooling, 0.0, device)?;
    load_adapter_weights(adapter, &mut model, device)?;
    let tokenizer = pretrained.tokenizer.with_max_len(adapter.max_len())?;
    let set = EncodedSet::encode(examples, &tokenizer, template.as_ref(), labels.len())?;
    let probs = predict_probs(&model, &set, 32, device)?;
    let thresholds = match (args.threshold, &adapter.thresholds) {
        (Some(t), _) => Thresholds::global(t, labels.len(), false),
        (None, Some(t)) => t.clone(),
        (None, None) => Thresholds::global(0.5, labels.len(), false),
    };
    let decisions = thresholds.apply(&probs);
    let l = labels.len();
    for (i, e) in examples.iter().enumerate() {
        let row = &probs[i * l..(i + 1) * l];
        let chosen: Vec<&str> = (0..l)
            .filter(|&j| decisions[i * l + j] == 1)
            .map(|j| labels.name(j))
            .collect();
        match args.format.as_str() {
            "jsonl" => {
                let mut line = json!({"id": e.id, "labels": chosen, "probs": row});
                if tag {
                    line["adapter"] = json!(adapter.dir.display().to_string());
                }
                println!("{line}");
            }
            _ => {
                let preview: String = e.text.chars().take(60).collect();
                let mut top: Vec<usize> = (0..l).collect();
                top.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
                println!("[{}] {preview}", e.id.as_deref().unwrap_or(""));
                println!(
                    "    labels: {}",
                    if chosen.is_empty() {
                        "(none)".into()
                    } else {
                        chosen.join(", ")
                    }
                );
                let best: Vec<String> = top
                    .iter()
                    .take(3)
                    .map(|&j| format!("{} {:.3}", labels.name(j), row[j]))
                    .collect();
                println!("    top-3:  {}", best.join(", "));
            }
        }
    }
    Ok(())
}
