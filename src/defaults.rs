//! The one set of defaults: [`Finetune`](crate::Finetune), the `finetune` example and
//! [`TrainConfig::default`](crate::train::TrainConfig) all take theirs from here. They are
//! the best recipe measured on the bundled data (BENCHMARKS.md: the rank/alpha sweep and the
//! full-data run): LoRA r 16, α 32 on every linear, lr 2e-3.

/// LoRA rank.
pub const RANK: usize = 16;
/// LoRA alpha (scaling α/r = 2).
pub const ALPHA: f64 = 32.0;
/// LoRA dropout.
pub const DROPOUT: f64 = 0.1;
/// Target modules: PEFT's `all-linear` (every linear but the head).
pub const TARGETS: &str = "all-linear";
/// Epochs.
pub const EPOCHS: usize = 2;
/// Examples per batch.
pub const BATCH_SIZE: usize = 16;
/// Micro-batches per optimizer step.
pub const GRAD_ACCUM: usize = 1;
/// Peak learning rate.
pub const LR: f64 = 2e-3;
/// AdamW weight decay.
pub const WEIGHT_DECAY: f64 = 0.01;
/// Fraction of the steps warming up.
pub const WARMUP_RATIO: f64 = 0.06;
/// Truncation length in tokens.
pub const MAX_LEN: usize = 128;
/// Seed.
pub const SEED: u64 = 42;
/// Gradient-norm clipping.
pub const MAX_GRAD_NORM: f64 = 1.0;
/// Batch size of evaluation and prediction.
pub const EVAL_BATCH_SIZE: usize = 64;
/// Cap of BCE's `pos_weight` from label frequencies.
pub const POS_WEIGHT_CAP: f32 = 30.0;
/// Dropout of the classification head.
pub const HEAD_DROPOUT: f64 = 0.1;
/// Fewest validation positives for a label's own threshold (per-label tuning).
pub const MIN_POSITIVES_PER_LABEL: usize = 5;
