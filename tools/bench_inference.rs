//! Inference throughput of a BERT-family checkpoint: batch × seq tokens per forward,
//! timed over several runs after a warm-up. Prints one JSON line.
//!
//! `cargo run --release --example bench_inference -- --model models/all-MiniLM-L6-v2`

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Int, Tensor, TensorData};
use burn_lora::device::probe_device;
use burn_lora::models::{Backbone, BertModel, EncoderInput};

#[path = "../examples/common/allocator.rs"]
mod allocator;
#[path = "../examples/common/args.rs"]
mod args;

struct Args {
    model: PathBuf,
    device: String,
    batch: usize,
    seq: usize,
    runs: usize,
}

impl Args {
    fn parse() -> Self {
        let a = args::Args::parse(
            "MiniLM inference throughput",
            &[
                args::value("model", "model folder"),
                args::value("device", "device (default flex)"),
                args::value("batch", "batch size (default 32)"),
                args::value("seq", "sequence length (default 128)"),
                args::value("runs", "timed runs (default 5)"),
            ],
        );
        Args {
            model: a.required("model"),
            device: a.get_or("device", "flex".to_string()),
            batch: a.get_or("batch", 32),
            seq: a.get_or("seq", 128),
            runs: a.get_or("runs", 5),
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

fn run() -> burn_lora::Result<()> {
    let args = Args::parse();
    let device = probe_device(&args.device)?;
    // Sizes a model can take: no empty batch, no row past the position table.
    for (flag, value) in [
        ("batch", args.batch),
        ("seq", args.seq),
        ("runs", args.runs),
    ] {
        if !(1..=1 << 16).contains(&value) {
            return Err(burn_lora::Error::InvalidSetting {
                name: flag,
                message: format!("{value} is not in 1..=65536"),
            });
        }
    }
    let options = burn_lora::models::LoadOptions::new(args.seq);
    let model =
        BertModel::try_from(burn_lora::models::load(&args.model, &options, &device)?.backbone)?;
    let n = args.batch * args.seq;
    // Deterministic ids in the vocabulary's ordinary range (any vocabulary), no padding.
    let vocab = model.vocab_size() as i64;
    let ids: Vec<i64> = (0..n)
        .map(|i| (1000 + (i as i64 * 7919) % 20000) % vocab)
        .collect();
    let input = EncoderInput {
        input_ids: Tensor::<2, Int>::from_data(
            TensorData::new(ids, [args.batch, args.seq]),
            &device,
        ),
        attention_mask: Tensor::<2, Int>::ones([args.batch, args.seq], &device),
        token_type_ids: None,
    };
    let run = || {
        let h = model.forward(&input);
        let _ = h.slice([0..1, 0..1, 0..1]).into_data();
    };
    run();
    let start = Instant::now();
    for _ in 0..args.runs {
        run();
    }
    let secs = start.elapsed().as_secs_f64() / args.runs as f64;
    println!(
        "{{\"impl\": \"burn-lora\", \"device\": \"{}\", \"batch\": {}, \"seq\": {}, \"seconds_per_batch\": {:.4}, \"tokens_per_second\": {:.1}}}",
        args.device,
        args.batch,
        args.seq,
        secs,
        n as f64 / secs
    );
    Ok(())
}
