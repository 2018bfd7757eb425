//! A training loop of one's own, through the `TrainingLoop` trait: SGD with Nesterov
//! momentum instead of the ready `Trainer`'s AdamW, the asymmetric loss for the many
//! negatives of multi-label data, the model chosen by validation **macro**-F1 (the rare
//! labels count as much as the frequent ones), and a checkpoint hook that saves a PEFT
//! adapter each time that choice changes. `run_loop` still drives it: warmup and decay,
//! accumulation, periodic evaluation, early stopping, the NaN-loss check (the NaN-gradient
//! check is this loop's own, as the trait asks).
//!
//! ```text
//! scripts/fetch-models.sh all-minilm
//! cargo run --release --example custom_loop -- [MODEL] [DATA] [OUT] [TRAIN_EXAMPLES]
//! cargo run --release --example custom_loop -- --model M --data D --out O --train-examples N
//! ```
//!
//! Defaults: `models/all-MiniLM-L6-v2`, `data/debtags-min200`, `runs/custom-loop`, 512.
//!
//! When to write a loop like this: a different optimizer, loss, selection metric or hook.
//! When to use burn-train's `Learner` (feature `learner`) instead: its dashboard, metric
//! loggers and multi-device strategies. When neither: the ready `Trainer`.

use burn::module::Module;
use burn::optim::momentum::MomentumConfig;
use burn::optim::{GradientsAccumulator, GradientsParams, ModuleOptimizer, SgdConfig};
use burn_lora::data::Batch;
use burn_lora::models::{self, LoadOptions};
use burn_lora::prelude::*;
use burn_lora::train::trainer::global_grad_norm;
use burn_lora::train::{EvalResult, LoopState};

#[path = "common/allocator.rs"]
mod allocator;

/// SGD + asymmetric loss, selection by macro-F1, an adapter saved on each new best.
struct MacroF1Loop<'a> {
    model: Option<MultiLabelClassifier<AnyBackbone>>,
    optim: ModuleOptimizer,
    accum: GradientsAccumulator<MultiLabelClassifier<AnyBackbone>>,
    loss: MultiLabelLoss,
    best_macro_f1: f64,
    save: AdapterInfo<'a>,
    out: std::path::PathBuf,
}

impl TrainingLoop for MacroF1Loop<'_> {
    fn train_step(&mut self, batch: &Batch) -> Result<f32> {
        let model = self.model.as_ref().expect("model between steps");
        let loss = self
            .loss
            .forward(model.forward(&batch.input), batch.targets.clone());
        let value = loss
            .to_data()
            .convert::<f32>()
            .try_to_vec::<f32>()
            .map_or(f32::NAN, |v| v[0]);
        // Summed over the micro-batches of a step (TrainConfig::grad_accum).
        let grads = GradientsParams::from_grads(loss.backward(), model);
        self.accum.accumulate(model, grads);
        Ok(value)
    }

    fn optimizer_step(&mut self, lr: f64) -> Result<()> {
        let grads = self.accum.grads();
        let model = self.model.take().expect("model between steps");
        // As the trait asks: no step from NaN/inf gradients (run_loop fills in the step).
        let norm = global_grad_norm(&grads, &model);
        if !norm.is_finite() {
            self.model = Some(model);
            return Err(Error::NonFiniteGradient { norm, step: 0 });
        }
        self.model = Some(self.optim.step(lr, model, grads));
        Ok(())
    }

    fn eval_step(&mut self, batch: &Batch) -> Result<Vec<f32>> {
        let model = self.model.as_ref().expect("model between steps").valid();
        let probs = model
            .probabilities(&batch.input)
            .into_data()
            .convert::<f32>();
        probs
            .try_to_vec::<f32>()
            .map_err(|e| Error::InvalidState(format!("{e:?}")))
    }

    /// `run_loop` marks a new best by micro-F1; this loop keeps its own, by macro-F1.
    fn on_evaluation(&mut self, state: &LoopState, eval: &EvalResult, _: bool) -> Result<()> {
        let macro_f1 = eval.metrics.macro_f1;
        println!("step {}: valid macro-F1 {macro_f1:.4}", state.step);
        if macro_f1 > self.best_macro_f1 {
            self.best_macro_f1 = macro_f1;
            let info = self.save.with_thresholds(&eval.thresholds);
            let model = self.model.as_ref().expect("model between steps");
            model.save_adapter(&self.out, &info)?;
            println!("  new best: adapter saved to {}", self.out.display());
        }
        Ok(())
    }
}

const USAGE: &str = "usage: custom_loop [MODEL] [DATA] [OUT] [TRAIN_EXAMPLES]
   or: custom_loop --model MODEL --data DATA --out OUT --train-examples N
defaults: models/all-MiniLM-L6-v2 data/debtags-min200 runs/custom-loop 512";

/// MODEL, DATA, OUT and TRAIN_EXAMPLES, given in that order or by name (`lexopt`).
fn settings() -> std::result::Result<[String; 4], lexopt::Error> {
    use lexopt::prelude::*;
    const NAMES: [&str; 4] = ["model", "data", "out", "train-examples"];
    let mut values = [
        "models/all-MiniLM-L6-v2",
        "data/debtags-min200",
        "runs/custom-loop",
        "512",
    ]
    .map(String::from);
    let mut position = 0;
    let mut parser = lexopt::Parser::from_env();
    while let Some(arg) = parser.next()? {
        match arg {
            Short('h') | Long("help") => {
                println!("{USAGE}");
                std::process::exit(0)
            }
            Long(name) if NAMES.contains(&name) => {
                let i = NAMES.iter().position(|n| *n == name).unwrap_or(0);
                values[i] = parser.value()?.string()?;
            }
            Value(v) if position < NAMES.len() => {
                values[position] = v.string()?;
                position += 1;
            }
            _ => return Err(arg.unexpected()),
        }
    }
    Ok(values)
}

fn main() -> Result<()> {
    allocator::keep_freed_memory();
    let [model_path, data_path, out, n] = settings().unwrap_or_else(|e| {
        eprintln!("error: {e}\n\n{USAGE}");
        std::process::exit(2)
    });
    let out = std::path::PathBuf::from(out);
    let n: usize = n.parse().unwrap_or_else(|e| {
        eprintln!("error: bad value `{n}` for TRAIN_EXAMPLES: {e}");
        std::process::exit(2)
    });

    let device = parse_device("flex")?;
    let train_device = device.clone().autodiff();
    let Pretrained {
        backbone,
        tokenizer,
        ..
    } = models::load(&model_path, &LoadOptions::new(128), &train_device)?;
    let data = DataSplits::load(&data_path, UnknownLabelPolicy::Error)?;
    let labels = data.labels.clone();
    let train = EncodedSet::encode(
        &data.train[..n.min(data.train.len())],
        &tokenizer,
        None,
        labels.len(),
    )?;
    let valid = EncodedSet::encode(
        &data.valid[..256.min(data.valid.len())],
        &tokenizer,
        None,
        labels.len(),
    )?;

    let lora = LoraConfig::new(8, 16.0, &["query", "key", "value", "dense"]);
    let pooling = Pooling::default_for(Some(std::path::Path::new(&model_path)), &backbone);
    let mut model = MultiLabelClassifier::new(backbone, labels.len(), pooling, 0.1, &train_device)?;
    inject_adapters(&mut model, &lora, &train_device)?;
    let momentum = MomentumConfig::new()
        .with_nesterov(true)
        .with_dampening(0.0);
    let mut run = MacroF1Loop {
        model: Some(model),
        optim: SgdConfig::new().with_momentum(Some(momentum)).init(),
        loss: MultiLabelLoss::new(LossKind::asl()),
        best_macro_f1: f64::NEG_INFINITY,
        save: AdapterInfo::new(&lora, &labels, 128).with_base_model(&model_path),
        accum: GradientsAccumulator::new(),
        out,
    };
    let config = TrainConfig::default()
        .with_epochs(2)
        .with_lr(5e-2)
        .with_eval_every(Some(16))
        .with_progress(false);
    let state = run_loop(&mut run, &train, &valid, &config, &device, None)?;
    println!(
        "{} steps; best valid macro-F1 {:.4}",
        state.step, run.best_macro_f1
    );
    Ok(())
}
