//! Training or inference throughput on a fixed workload, the burn-lora half of
//! `scripts/bench_vs_pytorch.sh`: the same token batches the PyTorch side ran
//! (`scripts/bench_pytorch.py prepare` writes them), through the library's own
//! `Trainer` (forward, backward, global-norm clipping, AdamW) or the classifier's
//! `probabilities`. Prints one JSON line.
//!
//! ```text
//! cargo run --example bench_workload -- --workload /tmp/wl.json --mode train
//! cargo run --example bench_workload -- --workload /tmp/wl.json --mode train \
//!     --rank 16 --alpha 32 --targets all-linear
//! ```

use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::Device;
use burn_lora::Result;
use burn_lora::classify::{LossKind, MultiLabelClassifier, MultiLabelLoss, Pooling};
use burn_lora::data::EncodedSet;
use burn_lora::device::parse_device;
use burn_lora::lora::{LoraConfig, ModuleSelector, inject_adapters};
use burn_lora::models::Backbone;
use burn_lora::train::{Decay, TrainConfig, Trainer, TrainingLoop};
use serde::Deserialize;

#[path = "../examples/common/allocator.rs"]
mod allocator;
#[path = "../examples/common/args.rs"]
mod args;
#[path = "../examples/common/memory.rs"]
mod memory;

/// The workload file's schema (written by `scripts/bench_pytorch.py prepare`).
#[derive(Deserialize)]
struct Workload {
    model: PathBuf,
    num_labels: usize,
    pad_id: u32,
    warmup: usize,
    examples: Vec<WorkloadExample>,
    train_batches: Vec<Vec<usize>>,
    infer_batches: Vec<Vec<usize>>,
    /// Estimated floating-point work of the timed batches (see bench_pytorch.py).
    train_gflop: Option<f64>,
    infer_gflop: Option<f64>,
}

#[derive(Deserialize)]
struct WorkloadExample {
    ids: Vec<u32>,
    labels: Vec<usize>,
}

/// What to time (`--mode`).
#[derive(Clone, Copy, PartialEq, Debug)]
enum Mode {
    Train,
    Infer,
    Gemm,
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "train" => Ok(Mode::Train),
            "infer" => Ok(Mode::Infer),
            "gemm" => Ok(Mode::Gemm),
            other => Err(format!("`{other}`: train, infer or gemm")),
        }
    }
}

/// Which linears get adapters (`--targets`), spelled as the finetune example's
/// `--targets` (`Finetune::lora_config`): `peft` leaves the list unset, so the model
/// family's PEFT default applies (BERT `query,value`, llama `q_proj,v_proj`);
/// `all-linear` is PEFT's shorthand for every linear but the output head; anything else
/// is a comma-separated list of module names.
#[derive(Clone, Debug)]
struct Targets(Option<ModuleSelector>);

impl std::str::FromStr for Targets {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.trim() {
            "peft" => Ok(Targets(None)),
            "all-linear" => Ok(Targets(Some(ModuleSelector::AllLinear))),
            names => {
                if names.split(',').any(|name| name.trim().is_empty()) {
                    return Err(format!(
                        "`{s}` has an empty module name; give comma-separated names, \
                         `all-linear` or `peft`"
                    ));
                }
                Ok(Targets(Some(ModuleSelector::names(
                    &names.split(',').map(str::trim).collect::<Vec<_>>(),
                ))))
            }
        }
    }
}

struct Args {
    workload: Option<PathBuf>,
    mode: Mode,
    device: String,
    rank: usize,
    alpha: f64,
    lora_dropout: f64,
    targets: Targets,
    /// `--targets` as given, for the JSON line.
    targets_spec: String,
    dora: bool,
    gradient_checkpointing: bool,
    base_dtype: burn_lora::lora::BaseDtype,
}

impl Args {
    fn parse() -> Self {
        let a = args::Args::parse(
            "throughput of LoRA training or inference on a fixed workload",
            &[
                args::value(
                    "workload",
                    "workload JSON (scripts/bench_pytorch.py prepare)",
                ),
                args::value("mode", "train | infer | gemm (the matmul rate alone)"),
                args::value("device", "device (default flex)"),
                args::value("rank", "LoRA rank (default 8)"),
                args::value("alpha", "LoRA alpha (default 16)"),
                args::value("lora-dropout", "LoRA dropout (default 0.1)"),
                args::value(
                    "targets",
                    "LoRA target modules: peft (the family's PEFT default: BERT query,value, \
                     llama q_proj,v_proj), all-linear (every linear but the head) or \
                     comma-separated names (default peft)",
                ),
                args::switch("dora", "DoRA adapters (use_dora)"),
                args::switch(
                    "gradient-checkpointing",
                    "train on burn's checkpointing autodiff device",
                ),
                args::value(
                    "base-dtype",
                    "storage of the frozen linears and embeddings: f32, f16, bf16 (default f32)",
                ),
            ],
        );
        let targets_spec = a.get_or("targets", "peft".to_string());
        Args {
            workload: a.get("workload"),
            mode: a.required("mode"),
            device: a.get_or("device", "flex".to_string()),
            rank: a.get_or("rank", 8),
            alpha: a.get_or("alpha", 16.0),
            lora_dropout: a.get_or("lora-dropout", 0.1),
            targets: a.get_or("targets", Targets(None)),
            targets_spec: targets_spec.trim().to_string(),
            dora: a.flag("dora"),
            gradient_checkpointing: a.flag("gradient-checkpointing"),
            base_dtype: a.get_or("base-dtype", burn_lora::lora::BaseDtype::F32),
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

fn read_workload(path: &Path) -> Result<Workload> {
    let text = std::fs::read_to_string(path).map_err(|e| burn_lora::Error::io(path, e))?;
    let workload: Workload = serde_json::from_str(&text)?;
    let batches = workload.train_batches.iter().chain(&workload.infer_batches);
    if workload.examples.is_empty() {
        return Err(burn_lora::Error::EmptyData(path.to_path_buf()));
    }
    if batches.flatten().any(|&i| i >= workload.examples.len()) {
        return Err(burn_lora::Error::InvalidState(format!(
            "{}: a batch names an example that is not there",
            path.display()
        )));
    }
    Ok(workload)
}

fn run() -> Result<()> {
    let args = Args::parse();
    let device = parse_device(&args.device)?;
    if args.mode == Mode::Gemm {
        return gemm(&device);
    }
    let workload = read_workload(&args.workload.clone().ok_or_else(|| {
        burn_lora::Error::InvalidState("--workload is required for train and infer".into())
    })?)?;
    device.seed(42);
    let train_device = train_config(&args).train_device(&device);
    let model_device = if args.mode == Mode::Train {
        &train_device
    } else {
        &device
    };
    let longest = workload
        .examples
        .iter()
        .map(|e| e.ids.len())
        .max()
        .unwrap_or(1);
    let backbone = burn_lora::models::load(
        &workload.model,
        &burn_lora::models::LoadOptions::new(longest).dtype(args.base_dtype),
        model_device,
    )?
    .backbone;
    bench(backbone, &workload, &args, &device)
}

fn bench<B: Backbone>(
    backbone: B,
    workload: &Workload,
    args: &Args,
    device: &Device,
) -> Result<()> {
    let train_device = train_config(args).train_device(device);
    // The head the finetune example puts on this checkpoint (pooling, bias or not).
    let pooling = Pooling::default_for(Some(&workload.model), &backbone);
    let set = EncodedSet {
        ids: workload.examples.iter().map(|e| e.ids.clone()).collect(),
        labels: workload.examples.iter().map(|e| e.labels.clone()).collect(),
        num_labels: workload.num_labels,
        pad_id: workload.pad_id,
    };
    check_workload(workload, &set)?;
    let mut lora = LoraConfig::new(args.rank, args.alpha, &[] as &[&str]);
    lora.lora_dropout = args.lora_dropout;
    lora.use_dora = args.dora;
    lora.target_modules = args.targets.0.clone(); // None: the family's PEFT default
    let (batches, seconds, tokens, trainable, gflop) = match args.mode {
        Mode::Train => {
            let mut model = MultiLabelClassifier::new(
                backbone,
                workload.num_labels,
                pooling,
                0.1,
                &train_device,
            )?;
            inject_adapters(&mut model, &lora, &train_device)?;
            model.check_inputs(&set)?;
            let trainable = model.trainable_params();
            let config = train_config(args);
            let mut trainer = Trainer::new(model, MultiLabelLoss::new(LossKind::Bce), config, None);
            let (seconds, tokens) = timed(&workload.train_batches, workload.warmup, |indices| {
                let batch = set.batch(indices, &train_device);
                trainer.train_step(&batch)?;
                trainer.optimizer_step(5e-4)?;
                Ok(batch.tokens)
            })?;
            (
                workload.train_batches.len() - workload.warmup,
                seconds,
                tokens,
                trainable,
                workload.train_gflop,
            )
        }
        // `run` answers gemm before any model loads.
        Mode::Infer | Mode::Gemm => {
            // With its (unmerged) adapters, as a PEFT model predicts.
            let mut model =
                MultiLabelClassifier::new(backbone, workload.num_labels, pooling, 0.1, device)?;
            inject_adapters(&mut model, &lora, device)?;
            model.check_inputs(&set)?;
            let (seconds, tokens) = timed(&workload.infer_batches, workload.warmup, |indices| {
                let batch = set.batch(indices, device);
                // Reading the result back waits for the whole forward.
                let _ = model.probabilities(&batch.input).into_data();
                Ok(batch.tokens)
            })?;
            (
                workload.infer_batches.len() - workload.warmup,
                seconds,
                tokens,
                0,
                workload.infer_gflop,
            )
        }
    };
    println!(
        "{}",
        serde_json::json!({
            "impl": "burn-lora", "mode": format!("{:?}", args.mode).to_lowercase(), "device": args.device,
            "steps": batches, "tokens": tokens, "seconds": seconds,
            "tokens_per_second": tokens as f64 / seconds, "peak_rss_mib": memory::peak_rss_mib(),
            "gflops": gflop.map(|g| g / seconds), "trainable_params": trainable,
            "blas": burn_lora::nn::blas_library(),
            "rank": args.rank, "alpha": args.alpha, "targets": args.targets_spec,
            "dora": args.dora, "gradient_checkpointing": args.gradient_checkpointing,
            "base_dtype": args.base_dtype.to_string(),
        })
    );
    Ok(())
}

/// The training settings of the timed steps.
fn train_config(args: &Args) -> TrainConfig {
    TrainConfig::default()
        .with_lr(5e-4)
        .with_decay(Decay::Constant)
        .with_progress(false)
        .with_gradient_checkpointing(args.gradient_checkpointing)
}

/// A workload file whose batches name examples it lacks, or whose labels pass its label
/// count, is refused (it would index out of range mid-run).
fn check_workload(workload: &Workload, set: &EncodedSet) -> Result<()> {
    let bad = |message: String| {
        Err(burn_lora::Error::Format {
            path: PathBuf::from("<workload>"),
            message,
        })
    };
    if let Some(l) = set.labels.iter().flatten().find(|&&l| l >= set.num_labels) {
        return bad(format!("label {l} past num_labels {}", set.num_labels));
    }
    let batches = workload.train_batches.iter().chain(&workload.infer_batches);
    if let Some(i) = batches.flatten().find(|&&i| i >= set.ids.len()) {
        return bad(format!("a batch names example {i} of {}", set.ids.len()));
    }
    Ok(())
}

/// Run `step` on every batch; time all but the first `warmup`. Returns (seconds, tokens).
fn timed(
    batches: &[Vec<usize>],
    warmup: usize,
    mut step: impl FnMut(&[usize]) -> Result<usize>,
) -> Result<(f64, usize)> {
    if batches.len() <= warmup {
        return Err(burn_lora::Error::InvalidState(format!(
            "the workload has {} batches, no more than its {warmup} warm-up ones",
            batches.len()
        )));
    }
    for indices in &batches[..warmup] {
        step(indices)?;
    }
    let start = Instant::now();
    let mut tokens = 0;
    for indices in &batches[warmup..] {
        tokens += step(indices)?;
    }
    Ok((start.elapsed().as_secs_f64(), tokens))
}

/// The f32 matmul rate through burn on `device` at the FFN shape of a MiniLM batch
/// (`[2048, 384] x [384, 1536]`), the ceiling the training step is measured against.
fn gemm(device: &Device) -> Result<()> {
    use burn::tensor::{Distribution, Tensor};
    let (m, k, n) = (2048, 384, 1536);
    let x = Tensor::<2>::random([m, k], Distribution::Default, device);
    let w = Tensor::<2>::random([k, n], Distribution::Default, device);
    let (seconds, _) = timed(&vec![Vec::new(); 53], 3, |_| {
        let _ = x.clone().matmul(w.clone()).slice([0..1, 0..1]).into_data();
        Ok(0)
    })?;
    let gflops = 2.0 * (m * k * n) as f64 * 50.0 / seconds / 1e9;
    // The same product through the path the model's linears take (`ops::linear_2d`: the
    // system BLAS when one is loaded).
    let (seconds, _) = timed(&vec![Vec::new(); 53], 3, |_| {
        let y = burn_lora::nn::linear_2d(x.clone(), w.clone(), None);
        let _ = y.slice([0..1, 0..1]).into_data();
        Ok(0)
    })?;
    let linear_gflops = 2.0 * (m * k * n) as f64 * 50.0 / seconds / 1e9;
    println!(
        "{}",
        serde_json::json!({"impl": "burn-lora", "mode": "gemm", "shape": [m, k, n], "gflops": gflops,
            "linear_gflops": linear_gflops, "blas": burn_lora::nn::blas_library(),
            "kernel": burn_lora::device::cpu_product_kernel()})
    );
    Ok(())
}
