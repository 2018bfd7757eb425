//! Memory of loading a model: peak RSS while it is built with the given storage
//! (`--dtype f32|f16|bf16`, `--quantize nf4|int8|keep`), next to the size of the weight
//! files. A checkpoint folder's backbone alone by default (its family's `from_source`: the
//! weights' cost), or `--with-tokenizer`: all of `models::load`. Prints one JSON line.
//!
//! `cargo run --release --example load_memory -- --model DIR --dtype bf16`

use std::path::{Path, PathBuf};

use burn_lora::device::probe_device;
use burn_lora::io::Checkpoint;
use burn_lora::lora::{BaseDtype, Quantization};
use burn_lora::models::{BertModel, LlamaModel, LoadOptions, ModelFormat, load};

#[path = "../examples/common/allocator.rs"]
mod allocator;
#[path = "../examples/common/args.rs"]
mod args;
#[path = "../examples/common/memory.rs"]
mod memory;

fn main() {
    allocator::keep_freed_memory();
    if let Err(e) = run() {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

/// Bytes of the weight files at `path` (a GGUF file, or a folder's `*.safetensors`).
fn weight_bytes(path: &Path) -> u64 {
    if path.is_file() {
        return path.metadata().map_or(0, |m| m.len());
    }
    std::fs::read_dir(path)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "safetensors"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn run() -> burn_lora::Result<()> {
    let a = args::Args::parse(
        "peak RSS while loading a model",
        &[
            args::value("model", "model folder or GGUF file"),
            args::value("dtype", "frozen storage f32|f16|bf16 (default f32)"),
            args::value("quantize", "packing nf4|nf4-dq|int8|keep (default none)"),
            args::value("device", "device (default flex)"),
            args::switch("with-tokenizer", "measure all of models::load"),
        ],
    );
    let model: PathBuf = a.required("model");
    let dtype: BaseDtype = a.get_or("dtype", BaseDtype::F32);
    let quantize: Option<Quantization> = a.get("quantize");
    let device = probe_device(&a.get_or("device", "flex".to_string()))?;
    let options = LoadOptions::new(128).dtype(dtype).packing(quantize);
    let format = ModelFormat::detect(&model)?;
    let whole = a.flag("with-tokenizer") || format == ModelFormat::Gguf;
    let read = |name: &str| {
        let path = model.join(name);
        std::fs::read_to_string(&path).map_err(|e| burn_lora::Error::io(&path, e))
    };
    // Peak RSS (MiB) so far: before the load, the process's ordinary footprint.
    let peak = || memory::peak_rss_mib().unwrap_or(0.0);
    let before = peak();
    if whole {
        drop(load(&model, &options, &device)?);
    } else {
        let ckpt = Checkpoint::open(&model)?;
        let config = read("config.json")?;
        if format.is_decoder() {
            drop(LlamaModel::from_source(
                &config.parse()?,
                &ckpt,
                &options,
                &device,
            )?);
        } else {
            drop(BertModel::from_source(
                &config.parse()?,
                &ckpt,
                &options,
                &device,
            )?);
        }
    }
    let after = peak();
    let files = weight_bytes(&model) as f64 / 1048576.0;
    println!(
        "{}",
        serde_json::json!({
            "model": model.display().to_string(),
            "measured": if whole { "models::load" } else { "from_source" },
            "dtype": dtype.to_string(),
            "quantize": quantize.map(|q| q.to_string()),
            "weight_files_mib": files,
            "peak_rss_before_mib": before,
            "peak_rss_mib": after,
            "peak_growth_over_files": (after - before) / files.max(f64::MIN_POSITIVE),
        })
    );
    Ok(())
}
