//! Training: the loop trait, its driver, and a ready [`Trainer`].
//!
//! [`TrainingLoop`] names the steps a loop calls (train step, optimizer step, eval step,
//! evaluation/epoch hooks); [`run_loop`] drives any implementation through epochs with
//! warmup/decay, accumulation, periodic evaluation, early stopping and a progress bar.
//!
//! Which to use: the ready [`Trainer`] (AdamW, clipping, PEFT checkpoints, exact resume)
//! for the usual run; your own [`TrainingLoop`] to change the optimizer, the loss, the
//! model-selection metric or add checkpoint hooks while keeping the driver
//! (`examples/custom_loop.rs`: SGD with Nesterov momentum, the asymmetric loss, selection
//! by macro-F1); burn-train's `Learner` (feature `learner`, `LearnerClassifier` when
//! enabled) for its dashboard, metric loggers and multi-device strategies.

#[cfg(feature = "learner")]
pub mod learner;
pub mod progress;
pub mod schedule;
pub mod trainer;

use std::time::Instant;

use burn::tensor::Device;
use serde::{Deserialize, Serialize};

#[cfg(feature = "learner")]
pub use learner::LearnerClassifier;
pub use progress::Progress;
pub use schedule::{Decay, LrSchedule};
pub use trainer::{Trainer, TrainerCheckpoint};

use crate::classify::{
    MultiLabelMetrics, Scores, ThresholdMode, Thresholds, evaluate, tune_thresholds,
};
use crate::data::{Batch, EncodedSet, SplitMix64, epoch_batches};
use crate::error::{Error, Result};

/// Where a run's lines go (evaluations, progress notes): a shared callback.
pub type MessageSink = std::sync::Arc<dyn Fn(&str) + Send + Sync>;

/// Settings of a training run: [`TrainConfig::default`] (the crate's [`defaults`](crate::defaults)),
/// then `with_*` for the fields to change (new fields may come, so it is not built as a
/// literal outside the crate).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct TrainConfig {
    /// Passes over the training data.
    pub epochs: usize,
    /// Stop after this many optimizer steps (overrides `epochs` when smaller).
    pub max_steps: Option<usize>,
    /// Examples per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// AdamW decoupled weight decay (not applied to biases).
    pub weight_decay: f64,
    /// LoRA+ (PEFT's `create_loraplus_optimizer`): B, DoRA's magnitudes and the head's bias
    /// learn at `lr × ratio`, A and the head's weight at `lr`. `None`: one rate for all.
    pub loraplus_lr_ratio: Option<f64>,
    /// Fraction of optimizer steps spent warming up.
    pub warmup_ratio: f64,
    /// Decay after warmup.
    pub decay: Decay,
    /// Clip the global gradient norm to this value.
    pub max_grad_norm: Option<f64>,
    /// Gradient checkpointing: burn's balanced strategy recomputes memory-bound
    /// activations in the backward instead of keeping them (here the element-wise nodes of
    /// [`crate::nn`] and burn's own ops; the results are the same bits). The model and the
    /// batches must live on [`train_device`](TrainConfig::train_device). Measured on CPU
    /// (BENCHMARKS.md): no gain on MiniLM, +40 % peak memory on SmolLM2-135M, because burn
    /// 0.22's op-level strategy keeps the inputs of what it would recompute; off by default.
    pub gradient_checkpointing: bool,
    /// Evaluate every N optimizer steps (`None`: at the end of each epoch).
    pub eval_every: Option<usize>,
    /// Stop after this many evaluations without a better validation micro-F1.
    pub patience: Option<usize>,
    /// Seed for data order and the dropout masks of each micro-batch (and, through the
    /// caller, initialisation).
    pub seed: u64,
    /// Batch examples of similar length together.
    pub bucket: bool,
    /// Batch size for evaluation.
    pub eval_batch_size: usize,
    /// Draw a progress bar.
    pub progress: bool,
}

impl Default for TrainConfig {
    /// The [`defaults`](crate::defaults) the `finetune` example and
    /// [`Finetune`](crate::Finetune) share (lr 2e-3, 2 epochs, batch 16, ...).
    fn default() -> Self {
        use crate::defaults;
        TrainConfig {
            epochs: defaults::EPOCHS,
            max_steps: None,
            batch_size: defaults::BATCH_SIZE,
            grad_accum: defaults::GRAD_ACCUM,
            lr: defaults::LR,
            weight_decay: defaults::WEIGHT_DECAY,
            loraplus_lr_ratio: None,
            warmup_ratio: defaults::WARMUP_RATIO,
            decay: Decay::Linear,
            max_grad_norm: Some(defaults::MAX_GRAD_NORM),
            gradient_checkpointing: false,
            eval_every: None,
            patience: None,
            seed: defaults::SEED,
            bucket: true,
            eval_batch_size: defaults::EVAL_BATCH_SIZE,
            progress: true,
        }
    }
}

/// `with_<field>(value)` for each named field, in burn's `Config` style.
macro_rules! with_fields {
    ($($method:ident => $field:ident: $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("With `", stringify!($field), "` set.")]
            pub fn $method(mut self, $field: $ty) -> Self {
                self.$field = $field;
                self
            }
        )*
    };
}

impl TrainConfig {
    with_fields! {
        with_epochs => epochs: usize,
        with_max_steps => max_steps: Option<usize>,
        with_batch_size => batch_size: usize,
        with_grad_accum => grad_accum: usize,
        with_lr => lr: f64,
        with_weight_decay => weight_decay: f64,
        with_warmup_ratio => warmup_ratio: f64,
        with_decay => decay: Decay,
        with_max_grad_norm => max_grad_norm: Option<f64>,
        with_loraplus_lr_ratio => loraplus_lr_ratio: Option<f64>,
        with_gradient_checkpointing => gradient_checkpointing: bool,
        with_eval_every => eval_every: Option<usize>,
        with_patience => patience: Option<usize>,
        with_seed => seed: u64,
        with_bucket => bucket: bool,
        with_eval_batch_size => eval_batch_size: usize,
        with_progress => progress: bool,
    }

    /// Check every setting: [`Error::InvalidSetting`] naming the field. [`run_loop`] does
    /// this first, so no setting reaches an overflow or a division by zero.
    pub fn validate(&self) -> Result<()> {
        let bad =
            |name: &'static str, message: String| Err(Error::InvalidSetting { name, message });
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return bad("lr", format!("{} must be a finite number > 0", self.lr));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return bad(
                "weight_decay",
                format!("{} must be finite and >= 0", self.weight_decay),
            );
        }
        if !(0.0..=1.0).contains(&self.warmup_ratio) {
            return bad(
                "warmup_ratio",
                format!("{} must be in [0, 1]", self.warmup_ratio),
            );
        }
        if let Some(ratio) = self.loraplus_lr_ratio
            && !(ratio.is_finite() && ratio > 0.0)
        {
            return bad(
                "loraplus_lr_ratio",
                format!("{ratio} must be a finite number > 0"),
            );
        }
        if let Some(norm) = self.max_grad_norm
            && !(norm.is_finite() && norm > 0.0)
        {
            return bad(
                "max_grad_norm",
                format!("{norm} must be a finite number > 0"),
            );
        }
        // Counts must be at least 1; those that size loops and products also at most
        // MAX_COUNT (a step cap only shortens a run).
        let max = crate::limits::MAX_COUNT;
        for (name, value, bounded) in [
            ("epochs", Some(self.epochs), true),
            ("batch_size", Some(self.batch_size), true),
            ("grad_accum", Some(self.grad_accum), true),
            ("eval_batch_size", Some(self.eval_batch_size), true),
            ("eval_every", self.eval_every, true),
            ("patience", self.patience, true),
            ("max_steps", self.max_steps, false),
        ] {
            match value {
                Some(0) => return bad(name, "must be at least 1".into()),
                Some(v) if bounded && v > max => {
                    return bad(name, format!("{v} is more than {max}"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The autodiff twin of the plain `device` that training runs on: with
    /// [`gradient_checkpointing`](TrainConfig::gradient_checkpointing), burn's checkpointing
    /// autodiff device. Put the model there ([`run_loop`] puts the batches there).
    pub fn train_device(&self, device: &Device) -> Device {
        let autodiff = device.clone().autodiff();
        if self.gradient_checkpointing {
            autodiff.gradient_checkpointing()
        } else {
            autodiff
        }
    }

    /// Optimizer steps the run will take for `examples` training examples.
    pub fn total_steps(&self, examples: usize) -> usize {
        let micro = examples.div_ceil(self.batch_size.max(1));
        let per_epoch = micro.div_ceil(self.grad_accum.max(1));
        let total = per_epoch * self.epochs;
        self.max_steps.map_or(total, |m| m.min(total))
    }
}

/// Where a run stands; saved with checkpoints so a resumed run continues exactly.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimizer steps done.
    pub step: usize,
    /// Current epoch (0-based).
    pub epoch: usize,
    /// Micro-batches of the current epoch already consumed.
    pub batch_in_epoch: usize,
    /// Best validation micro-F1 so far.
    pub best_micro_f1: f64,
    /// Step of the best evaluation.
    pub best_step: usize,
    /// Evaluations since the best one.
    pub evals_without_improvement: usize,
    /// Real tokens processed in training.
    pub tokens: usize,
    /// Seconds spent in training steps.
    pub train_seconds: f64,
    /// Loss of the last optimizer step.
    pub last_loss: f32,
    /// Whether early stopping ended the run.
    pub stopped_early: bool,
    /// Training examples of the run (0 in states saved before this was recorded).
    #[serde(default)]
    pub train_examples: usize,
}

/// One evaluation on validation data.
#[derive(Debug, Clone)]
pub struct EvalResult {
    /// Validation probabilities (`n × labels`).
    pub probs: Vec<f32>,
    /// Thresholds tuned on them (global, for monitoring).
    pub thresholds: Thresholds,
    /// Metrics under those thresholds.
    pub metrics: MultiLabelMetrics,
}

/// The steps a training loop calls. [`Trainer`] implements it; implement it yourself to
/// change what a step does and keep [`run_loop`]'s schedule, evaluation and stopping.
pub trait TrainingLoop {
    /// Forward and backward on one micro-batch, accumulating gradients; returns the
    /// (unscaled) loss value.
    fn train_step(&mut self, batch: &Batch) -> Result<f32>;
    /// Apply the accumulated gradients with learning rate `lr`. Gradients with a NaN or
    /// infinite norm should be refused with [`Error::NonFiniteGradient`] (any `step`).
    fn optimizer_step(&mut self, lr: f64) -> Result<()>;
    /// Sigmoid probabilities for a batch, without gradients (`rows × labels`, row-major).
    fn eval_step(&mut self, batch: &Batch) -> Result<Vec<f32>>;
    /// After each evaluation; `improved` marks a new best (checkpoint it here).
    fn on_evaluation(
        &mut self,
        _state: &LoopState,
        _eval: &EvalResult,
        _improved: bool,
    ) -> Result<()> {
        Ok(())
    }
    /// At the end of each epoch.
    fn on_epoch_end(&mut self, _state: &LoopState) -> Result<()> {
        Ok(())
    }
    /// A line from the driver (each evaluation's score); printed on stderr unless the loop
    /// sends it elsewhere (the ready [`Trainer`] to its [`with_messages`](Trainer::with_messages) sink).
    fn on_message(&mut self, line: &str) {
        eprintln!("{line}");
    }
    /// Before the first batch, for the training and the validation set: refuse rows the
    /// model cannot take (see [`MultiLabelClassifier::check_inputs`](crate::classify::MultiLabelClassifier::check_inputs)).
    fn check_inputs(&self, _set: &EncodedSet) -> Result<()> {
        Ok(())
    }
}

/// Probabilities for a whole set through `eval_step`, in set order.
pub fn predict_set<L: TrainingLoop>(
    l: &mut L,
    set: &EncodedSet,
    batch_size: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    set.map_batches(batch_size, device, |batch| l.eval_step(batch))
}

/// Evaluate on `valid`: tune one global threshold for micro-F1 and score with it.
pub fn evaluate_loop<L: TrainingLoop>(
    l: &mut L,
    valid: &EncodedSet,
    targets: &[u8],
    batch_size: usize,
    device: &Device,
) -> Result<EvalResult> {
    let probs = predict_set(l, valid, batch_size, device)?;
    let scores = Scores::new(&probs, targets, valid.num_labels)?;
    let thresholds = tune_thresholds(scores, ThresholdMode::Global, 0, false);
    let metrics = evaluate(scores, &thresholds);
    Ok(EvalResult {
        probs,
        thresholds,
        metrics,
    })
}

/// The device seed for one micro-batch: a function of the run's seed and the batch's place
/// (epoch, index in the epoch) alone, so a resumed run draws the masks it would have drawn.
fn micro_batch_seed(seed: u64, epoch: usize, batch_in_epoch: usize) -> u64 {
    let mut rng = SplitMix64::new(seed);
    let mut rng = SplitMix64::new(rng.next_u64() ^ epoch as u64);
    let mut rng = SplitMix64::new(rng.next_u64() ^ batch_in_epoch as u64);
    rng.next_u64()
}

/// Drive `l` through training on `train`, evaluating on `valid`.
///
/// `device` is the plain (non-autodiff) device; training batches go to its autodiff
/// twin. Starting from `state` resumes a run: the same epoch, the same batch order, the
/// same optimizer step, the same dropout masks (the device's generator is seeded before
/// each micro-batch from the seed and the batch's place in the run, so nothing random is
/// carried from one step to the next). The device's generator is shared by everything on
/// it in the process: two runs training at once on one device do not get their own
/// streams. A NaN or infinite loss stops the run with
/// [`Error::NonFiniteLoss`]; a [`TrainingLoop::optimizer_step`] that returns
/// [`Error::NonFiniteGradient`] gets the step number filled in here. Resuming with another
/// number of training examples is [`Error::ResumeMismatch`] (the batch order would differ).
pub fn run_loop<L: TrainingLoop>(
    l: &mut L,
    train: &EncodedSet,
    valid: &EncodedSet,
    config: &TrainConfig,
    device: &Device,
    state: Option<LoopState>,
) -> Result<LoopState> {
    config.validate()?;
    if train.is_empty() || valid.is_empty() {
        return Err(Error::InvalidState(
            "training and validation data must be non-empty".into(),
        ));
    }
    l.check_inputs(train)?;
    l.check_inputs(valid)?;
    let train_device = config.train_device(device);
    let mut state = state.unwrap_or_default();
    if state.train_examples != 0 && state.train_examples != train.len() {
        return Err(Error::ResumeMismatch {
            what: "the number of training examples".into(),
            saved: state.train_examples.to_string(),
            now: train.len().to_string(),
        });
    }
    state.train_examples = train.len();
    let total = config.total_steps(train.len());
    let schedule = LrSchedule {
        peak: config.lr,
        warmup: (config.warmup_ratio * total as f64).round() as usize,
        total,
        decay: config.decay,
    };
    let lengths: Vec<usize> = train.ids.iter().map(Vec::len).collect();
    let valid_targets = valid.multi_hot();
    let accum = config.grad_accum.max(1);
    let bar = std::cell::RefCell::new(Progress::new(total, config.progress));

    let evaluate_now = |l: &mut L, state: &mut LoopState| -> Result<bool> {
        let eval = evaluate_loop(l, valid, &valid_targets, config.eval_batch_size, device)?;
        let f1 = eval.metrics.micro_f1;
        let improved = f1 > state.best_micro_f1 || state.best_step == 0;
        if improved {
            state.best_micro_f1 = f1;
            state.best_step = state.step;
            state.evals_without_improvement = 0;
        } else {
            state.evals_without_improvement = state.evals_without_improvement.saturating_add(1);
        }
        // The progress line is cleared first; its next update draws it again.
        bar.borrow_mut().finish();
        l.on_message(&format!(
            "step {}: valid micro-F1 {:.4} (threshold {:.2}){}",
            state.step,
            f1,
            eval.thresholds.global,
            if improved { " *" } else { "" }
        ));
        l.on_evaluation(state, &eval, improved)?;
        Ok(config
            .patience
            .is_some_and(|p| state.evals_without_improvement >= p))
    };

    'epochs: while state.epoch < config.epochs && state.step < total {
        let batches = epoch_batches(
            &lengths,
            config.batch_size,
            true,
            config.bucket,
            config.seed,
            state.epoch,
        );
        let mut loss_sum = 0f32;
        let mut micro_in_step = 0usize;
        while state.batch_in_epoch < batches.len() {
            let started = Instant::now();
            let batch = train.batch(&batches[state.batch_in_epoch], &train_device);
            device.seed(micro_batch_seed(
                config.seed,
                state.epoch,
                state.batch_in_epoch,
            ));
            let loss = l.train_step(&batch)?;
            state.batch_in_epoch += 1;
            state.tokens = state.tokens.saturating_add(batch.tokens);
            if !loss.is_finite() {
                bar.borrow_mut().finish();
                return Err(Error::NonFiniteLoss {
                    step: state.step + 1,
                    value: loss,
                });
            }
            loss_sum += loss;
            micro_in_step += 1;
            let last_of_epoch = state.batch_in_epoch == batches.len();
            if micro_in_step == accum || last_of_epoch {
                let lr = schedule.lr(state.step);
                l.optimizer_step(lr).map_err(|e| match e {
                    Error::NonFiniteGradient { norm, .. } => Error::NonFiniteGradient {
                        norm,
                        step: state.step + 1,
                    },
                    e => e,
                })?;
                state.step += 1;
                state.last_loss = loss_sum / micro_in_step as f32;
                loss_sum = 0.0;
                micro_in_step = 0;
                state.train_seconds += started.elapsed().as_secs_f64();
                bar.borrow_mut().update(
                    state.step,
                    &format!(
                        "loss {:.4} lr {:.2e} {:.0} tok/s",
                        state.last_loss,
                        lr,
                        state.tokens as f64 / state.train_seconds.max(1e-9)
                    ),
                );
                if config
                    .eval_every
                    .is_some_and(|n| state.step.is_multiple_of(n))
                    && evaluate_now(l, &mut state)?
                {
                    state.stopped_early = true;
                    break 'epochs;
                }
                if state.step >= total {
                    break;
                }
            } else {
                state.train_seconds += started.elapsed().as_secs_f64();
            }
        }
        state.epoch += 1;
        state.batch_in_epoch = 0;
        l.on_epoch_end(&state)?;
        if config.eval_every.is_none() && evaluate_now(l, &mut state)? {
            state.stopped_early = true;
            break;
        }
    }
    // A run that ended between evaluations gets a final one.
    if config
        .eval_every
        .is_some_and(|n| !state.step.is_multiple_of(n))
        && !state.stopped_early
    {
        evaluate_now(l, &mut state)?;
    }
    bar.borrow_mut().finish();
    Ok(state)
}
