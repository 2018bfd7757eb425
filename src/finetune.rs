//! The whole fine-tuning job in one call: load a checkpoint, inject LoRA, train with the
//! ready [`Trainer`], tune thresholds on valid, score test, save a PEFT adapter folder.
//!
//! [`Finetune`] is what the `finetune` example runs: one method per flag (same name,
//! underscores), the same defaults ([`crate::defaults`]), the same files in the output folder:
//! `adapter/` (PEFT adapter + `labels.txt`, `thresholds.json`, `burn_lora.json`), `best/`
//! and `last/` (checkpoints; [`Finetune::resume`] continues from `last`), `metrics.json`,
//! `breakdown.json`.
//!
//! ```no_run
//! # fn main() -> burn_lora::Result<()> {
//! let device = burn_lora::device::parse_device("flex")?;
//! let report = burn_lora::Finetune::new("models/all-MiniLM-L6-v2", "data/debtags-min200")
//!     .train_limit(256)
//!     .epochs(1)
//!     .out("runs/minilm")
//!     .on_message(|line| println!("{line}"))
//!     .run(&device)?;
//! println!("test micro-F1 {:.4}", report.test.micro_f1);
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Instant;

use burn::tensor::Device;
use serde_json::json;

use crate::adapter::{AdapterInfo, AdapterMeta};
use crate::classify::{
    Breakdown, LossKind, MultiLabelClassifier, MultiLabelLoss, MultiLabelMetrics, Pooling, Scores,
    ThresholdMode, Thresholds, breakdown, evaluate, predict_probs_observed, tune_thresholds,
};
use crate::data::{
    DataSplits, EmptyTextPolicy, EmptyTexts, EncodedSet, Example, LabelSet, PromptTemplate,
    UnknownLabelPolicy, is_empty_text, label_counts,
};
use crate::defaults;
use crate::error::{Error, Result};
use crate::io::RunLock;
use crate::lora::{
    BaseDtype, InitLoraWeights, InjectionReport, LoraConfig, ModuleSelector, Quantization,
    half_base_report, inject_adapters, packing_report,
};
use crate::models::{AnyBackbone, Backbone, LoadOptions, Pretrained};
use crate::train::{Decay, MessageSink, Progress, TrainConfig, Trainer, TrainerCheckpoint};

/// How the head's bias starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum HeadBiasInit {
    /// At the logits of the labels' training frequencies (a head without bias — decoders'
    /// `score` — stays without).
    #[default]
    Prior,
    /// At zero.
    Zero,
}

impl FromStr for HeadBiasInit {
    type Err = Error;

    /// `prior | zero` (the example's `--head-bias-init`).
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "prior" => Ok(HeadBiasInit::Prior),
            "zero" => Ok(HeadBiasInit::Zero),
            other => Err(Error::Unsupported {
                what: "head bias init",
                detail: format!("`{other}` (prior, zero)"),
            }),
        }
    }
}

impl HeadBiasInit {
    fn name(self) -> &'static str {
        match self {
            HeadBiasInit::Prior => "prior",
            HeadBiasInit::Zero => "zero",
        }
    }
}

/// Where the examples come from.
#[derive(Debug, Clone)]
enum DataSource {
    /// A data folder (`train`/`valid`/`test` `.jsonl(.gz)` and optionally `labels.txt`).
    Folder(PathBuf),
    /// Examples given in memory.
    Examples(Box<DataSplits>),
}

/// The fine-tuning job (see the [module docs](self)). Every setting is checked by
/// [`validate`](Finetune::validate) before [`run`](Finetune::run) reads a file or writes one.
#[derive(Clone)]
#[must_use = "a Finetune does nothing until `run`"]
pub struct Finetune {
    model: PathBuf,
    /// The training loop's settings (epochs, batch size, lr, schedule, seed, ...).
    train: TrainConfig,
    data: DataSource,
    out: Option<PathBuf>,
    rank: usize,
    alpha: f64,
    dropout: f64,
    targets: String,
    rslora: bool,
    dora: bool,
    init: InitLoraWeights,
    max_len: usize,
    train_limit: Option<usize>,
    valid_limit: Option<usize>,
    test_limit: Option<usize>,
    loss: LossKind,
    pos_weight: bool,
    head_bias_init: HeadBiasInit,
    threshold: ThresholdMode,
    at_least_one: bool,
    template: Option<String>,
    quantize: Option<Quantization>,
    base_dtype: BaseDtype,
    pooling: Option<Pooling>,
    resume: bool,
    overwrite: bool,
    unknown_labels: UnknownLabelPolicy,
    empty_texts: EmptyTextPolicy,
    messages: Option<MessageSink>,
}

impl std::fmt::Debug for Finetune {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Finetune")
            .field("model", &self.model)
            .field("data", &self.data)
            .field("out", &self.out)
            .field("recipe", &self.recipe())
            .finish_non_exhaustive()
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.$name = value.into();
                self
            }
        )*
    };
}

/// Setters of the training loop's settings, kept in the job's [`TrainConfig`].
macro_rules! train_setters {
    ($($(#[$doc:meta])* $name:ident => $field:ident: $ty:ty),* $(,)?) => {
        $(
            $(#[$doc])*
            pub fn $name(mut self, value: $ty) -> Self {
                self.train.$field = value.into();
                self
            }
        )*
    };
}

impl Finetune {
    /// The job on a model (a Hugging Face folder, a GGUF file or, with the `hub` feature,
    /// a model id) and a data folder, with the [`defaults`].
    pub fn new(model: impl AsRef<Path>, data_dir: impl AsRef<Path>) -> Self {
        Self::with_data(
            model.as_ref(),
            DataSource::Folder(data_dir.as_ref().to_path_buf()),
        )
    }

    /// The job on examples in memory (label indices into `labels`; a repeated index counts
    /// once, as in a data file).
    pub fn from_examples(
        model: impl AsRef<Path>,
        labels: LabelSet,
        mut train: Vec<Example>,
        mut valid: Vec<Example>,
        mut test: Vec<Example>,
    ) -> Self {
        for example in train.iter_mut().chain(&mut valid).chain(&mut test) {
            example.labels.sort_unstable();
            example.labels.dedup();
        }
        let splits = DataSplits {
            empty_texts: [
                EmptyTexts::in_memory(&train),
                EmptyTexts::in_memory(&valid),
                EmptyTexts::in_memory(&test),
            ],
            labels,
            train,
            valid,
            test,
            skipped: [0; 3],
        };
        Self::with_data(model.as_ref(), DataSource::Examples(Box::new(splits)))
    }

    fn with_data(model: &Path, data: DataSource) -> Self {
        Finetune {
            model: model.to_path_buf(),
            train: TrainConfig::default(),
            data,
            out: None,
            rank: defaults::RANK,
            alpha: defaults::ALPHA,
            dropout: defaults::DROPOUT,
            targets: defaults::TARGETS.to_string(),
            rslora: false,
            dora: false,
            init: InitLoraWeights::Default,
            max_len: defaults::MAX_LEN,
            train_limit: None,
            valid_limit: None,
            test_limit: None,
            loss: LossKind::Bce,
            pos_weight: false,
            head_bias_init: HeadBiasInit::Prior,
            threshold: ThresholdMode::Global,
            at_least_one: false,
            template: None,
            quantize: None,
            base_dtype: BaseDtype::F32,
            pooling: None,
            resume: false,
            overwrite: false,
            unknown_labels: UnknownLabelPolicy::Error,
            empty_texts: EmptyTextPolicy::Error,
            messages: None,
        }
    }

    /// The output folder (files in the [module docs](self)); without one nothing is written
    /// and the report alone holds the result.
    pub fn out(mut self, dir: impl AsRef<Path>) -> Self {
        self.out = Some(dir.as_ref().to_path_buf());
        self
    }

    /// Target modules: comma-separated names (PEFT's suffix match), `all-linear` (every
    /// linear but the head) or `peft` (the model family's PEFT default, e.g. query,value).
    pub fn targets(mut self, targets: impl Into<String>) -> Self {
        self.targets = targets.into();
        self
    }

    /// A prompt template with `{text}` (and `{labels}`), or a file holding one; `{text}`
    /// alone means none. Default: an instruction for decoders, none for encoders.
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.template = Some(template.into());
        self
    }

    /// Lines for the caller (data sizes, evaluations, results); none are printed without
    /// one. The progress display ([`progress`](Finetune::progress)) draws on stderr.
    pub fn on_message(mut self, sink: impl Fn(&str) + Send + Sync + 'static) -> Self {
        self.messages = Some(Arc::new(sink));
        self
    }

    setters! {
        /// LoRA rank (default 16).
        rank: usize,
        /// LoRA alpha (default 32).
        alpha: f64,
        /// LoRA dropout, in `[0, 1)` (default 0.1).
        dropout: f64,
        /// Rank-stabilised scaling `α/√r`.
        rslora: bool,
        /// DoRA (PEFT's `use_dora`): a trained magnitude per output row of every adapted
        /// linear, beside A and B.
        dora: bool,
        /// How A and B start (PEFT's `init_lora_weights`; default PEFT's `true`). `Pissa`,
        /// `PissaNiter(K)` and `Olora` take them from the frozen weight, which keeps the
        /// residual (not with [`quantize`](Self::quantize)); the saved adapter is
        /// converted to plain LoRA of twice the rank, for the original base.
        init: InitLoraWeights,
        /// Truncation length in tokens (default 128); longer texts are cut, in training and
        /// in prediction alike.
        max_len: usize,
        /// Use only the first N training examples.
        train_limit: usize,
        /// Use only the first N validation examples.
        valid_limit: usize,
        /// Use only the first N test examples.
        test_limit: usize,
        /// The loss (default BCE).
        loss: LossKind,
        /// BCE `pos_weight` from the training label frequencies (capped at 30).
        pos_weight: bool,
        /// How the head's bias starts (default at the label priors).
        head_bias_init: HeadBiasInit,
        /// Threshold tuning on valid (default one global threshold).
        threshold: ThresholdMode,
        /// Predict the top label when none passes its threshold.
        at_least_one: bool,
        /// Store the frozen base packed (QLoRA: NF4), dequantised per layer in each forward.
        quantize: Quantization,
        /// Store the frozen base's linear weights in half precision (`f16`, `bf16`), cast
        /// to f32 layer by layer in each forward; adapters, head and optimizer state stay
        /// f32. Not with [`quantize`](Self::quantize); the device must store the dtype.
        base_dtype: BaseDtype,
        /// Pooling (default: the checkpoint's own).
        pooling: Pooling,
        /// Continue the run in the output folder from its `last` checkpoint. burn rebuilds
        /// the optimizer state on its default device first: in a build with a GPU backend
        /// and no GPU, set `BURN_DEVICE` to the training backend (the example does).
        resume: bool,
        /// Write into an output folder that already holds files (refused otherwise).
        overwrite: bool,
        /// Valid/test labels missing from the label set: an error (default) or dropped.
        unknown_labels: UnknownLabelPolicy,
        /// Examples with an empty or whitespace-only text: an error naming their lines
        /// (default), dropped from every split, or kept.
        empty_texts: EmptyTextPolicy,
    }

    train_setters! {
        /// Epochs (default 2).
        epochs => epochs: usize,
        /// Stop after this many optimizer steps.
        max_steps => max_steps: usize,
        /// Examples per batch (default 16).
        batch_size => batch_size: usize,
        /// Micro-batches per optimizer step (default 1).
        grad_accum => grad_accum: usize,
        /// Peak learning rate (default 2e-3).
        lr => lr: f64,
        /// AdamW weight decay (default 0.01).
        weight_decay => weight_decay: f64,
        /// Gradient checkpointing (burn's balanced strategy): less activation memory in
        /// training for some recomputation. Default: off.
        gradient_checkpointing => gradient_checkpointing: bool,
        /// LoRA+: B, DoRA's magnitudes and the head's bias learn at `lr × ratio` (PEFT's
        /// `loraplus_lr_ratio`; its paper suggests 16). Default: off.
        loraplus_lr_ratio => loraplus_lr_ratio: f64,
        /// Fraction of the steps warming up, in `[0, 1]` (default 0.06).
        warmup_ratio => warmup_ratio: f64,
        /// Learning-rate decay after warmup (default linear).
        schedule => decay: Decay,
        /// Evaluate every N optimizer steps (default: each epoch).
        eval_every => eval_every: usize,
        /// Early stopping after N evaluations without improvement.
        patience => patience: usize,
        /// Seed of initialisation, dropout and data order (default 42).
        seed => seed: u64,
        /// Draw the progress display on stderr (default on).
        progress => progress: bool,
    }

    /// Check every setting; [`run`](Finetune::run) does this before it reads or writes a
    /// file. Errors: [`Error::InvalidSetting`] naming the setting, or the LoRA config's own
    /// ([`Error::InvalidRank`], [`Error::InvalidAlpha`], [`Error::InvalidDropout`], ...).
    pub fn validate(&self) -> Result<()> {
        let bad =
            |name: &'static str, message: String| Err(Error::InvalidSetting { name, message });
        self.train.validate()?;
        // The job's own counts: at least 1; max_len also at most MAX_COUNT (limits only
        // shorten a run).
        for (name, value, bounded) in [
            ("max_len", Some(self.max_len), true),
            ("train_limit", self.train_limit, false),
            ("valid_limit", self.valid_limit, false),
            ("test_limit", self.test_limit, false),
        ] {
            match value {
                Some(0) => return bad(name, "must be at least 1".into()),
                Some(v) if bounded && v > crate::limits::MAX_COUNT => {
                    return bad(
                        name,
                        format!("{v} is more than {}", crate::limits::MAX_COUNT),
                    );
                }
                _ => {}
            }
        }
        if let Err(e) = self.load_options().check_storage() {
            return bad("base_dtype", e.to_string());
        }
        if self.init.takes_base() && self.quantize.is_some() {
            return bad(
                "init",
                format!(
                    "{:?} rewrites the frozen weights, which a quantised base cannot hold: \
                     initialise on the float base",
                    self.init
                ),
            );
        }
        if self.resume && self.out.is_none() {
            return bad(
                "resume",
                "needs an output folder (`out`) holding the run".into(),
            );
        }
        if let DataSource::Examples(splits) = &self.data {
            check_examples(splits)?;
        }
        self.lora_config()?.validate()
    }

    /// The LoRA config the settings describe.
    fn lora_config(&self) -> Result<LoraConfig> {
        let mut lora = LoraConfig::new(self.rank, self.alpha, &[] as &[&str]);
        lora.lora_dropout = self.dropout;
        lora.use_rslora = self.rslora;
        lora.use_dora = self.dora;
        lora.init_lora_weights = self.init.clone();
        // PEFT's spelling: `all-linear` is every linear but the head, not a module name;
        // `peft` leaves the list unset, so the model family's PEFT default applies.
        lora.target_modules = match self.targets.trim() {
            "peft" => None,
            "all-linear" => Some(ModuleSelector::AllLinear),
            names => {
                if names.split(',').any(|name| name.trim().is_empty()) {
                    return Err(Error::InvalidSetting {
                        name: "targets",
                        message: format!(
                            "`{}` has an empty module name; give comma-separated names, \
                             `all-linear` or `peft`",
                            self.targets
                        ),
                    });
                }
                Some(ModuleSelector::names(
                    &names.split(',').map(str::trim).collect::<Vec<_>>(),
                ))
            }
        };
        Ok(lora)
    }

    fn say(&self, line: &str) {
        if let Some(sink) = &self.messages {
            sink(line);
        }
    }

    /// The settings as recorded in `metrics.json` (`recipe`).
    fn recipe(&self) -> serde_json::Value {
        json!({
            "rank": self.rank, "alpha": self.alpha, "dropout": self.dropout,
            "targets": self.targets, "rslora": self.rslora, "dora": self.dora,
            "init": self.init, "epochs": self.train.epochs,
            "batch_size": self.train.batch_size, "lr": self.train.lr,
            "loraplus_lr_ratio": self.train.loraplus_lr_ratio,
            "gradient_checkpointing": self.train.gradient_checkpointing, "max_len": self.max_len,
            "train_limit": self.train_limit, "valid_limit": self.valid_limit,
            "test_limit": self.test_limit, "loss": loss_name(&self.loss),
            "threshold": self.threshold, "seed": self.train.seed,
            "head_bias_init": self.head_bias_init.name(),
            "quantize": self.quantize.map_or_else(|| "none".to_string(), |q| q.to_string()),
            "base_dtype": self.base_dtype.to_string(),
        })
    }

    /// How the base loads: the length, packing and storage type of this job.
    fn load_options(&self) -> LoadOptions {
        LoadOptions::new(self.max_len)
            .packing(self.quantize)
            .dtype(self.base_dtype)
    }

    /// Run the job on `device` (training on its autodiff twin): see the [module docs](self).
    /// Nothing is read or written before [`validate`](Finetune::validate) passes; an output
    /// folder that already holds files is refused unless [`resume`](Finetune::resume) or
    /// [`overwrite`](Finetune::overwrite) says what to do with it.
    pub fn run(&self, device: &Device) -> Result<FinetuneReport> {
        self.validate()?;
        // Before the folder is taken: a refused run writes nothing (e.g. a base dtype the
        // device cannot store).
        self.load_options().check(device)?;
        // One writer per output folder, from before anything is written until the report.
        let _lock = match &self.out {
            Some(out) => {
                let lock = RunLock::acquire(out)?;
                refuse_to_clobber(out, self.resume, self.overwrite)?;
                Some(lock)
            }
            None => None,
        };
        let model_path = crate::models::resolve_model(&self.model)?;
        device.seed(self.train.seed);
        let train_device = self.train.train_device(device);

        let mut data = match &self.data {
            DataSource::Folder(dir) => DataSplits::load(dir, self.unknown_labels)?,
            DataSource::Examples(splits) => (**splits).clone(),
        };
        self.handle_empty_texts(&mut data)?;
        for (split, limit) in [
            (&mut data.train, self.train_limit),
            (&mut data.valid, self.valid_limit),
            (&mut data.test, self.test_limit),
        ] {
            if let Some(n) = limit {
                split.truncate(n);
            }
        }
        let labels = data.labels.clone();
        for (split, dropped) in ["train", "valid", "test"].iter().zip(data.skipped) {
            if dropped > 0 {
                self.say(&format!(
                    "{split}: {dropped} label occurrences not in the label set dropped"
                ));
            }
        }
        self.say(&format!(
            "data: {} train / {} valid / {} test, {} labels",
            data.train.len(),
            data.valid.len(),
            data.test.len(),
            labels.len()
        ));

        let lora = self.lora_config()?;
        // Packed while loading: the float base is never whole in memory.
        let Pretrained {
            backbone,
            tokenizer,
            ..
        } = crate::models::load(&model_path, &self.load_options(), &train_device)?;
        if self.base_dtype != BaseDtype::F32 {
            let r = half_base_report(&backbone)?;
            self.say(&format!(
                "frozen base: {} linears as {}, {:.1} MiB -> {:.1} MiB",
                r.layers,
                self.base_dtype,
                r.bytes_before as f64 / 1048576.0,
                r.bytes_after as f64 / 1048576.0,
            ));
        }
        if let Some(q) = self.quantize {
            let r = packing_report(&backbone)?;
            self.say(&format!(
                "frozen base: {} linears as {q}, {:.1} MiB -> {:.1} MiB ({:.2} bits per weight)",
                r.layers,
                r.dense_bytes as f64 / 1048576.0,
                r.packed_bytes as f64 / 1048576.0,
                r.bits_per_param()
            ));
        }
        let template = match &self.template {
            Some(t) => {
                Some(PromptTemplate::from_arg(t, labels.names())?).filter(|t| !t.is_identity())
            }
            None if backbone.is_decoder() => Some(PromptTemplate::default_instruction(
                tokenizer.inner().token_to_id("<|im_start|>").is_some(),
            )),
            None => None,
        };
        let pooling = self
            .pooling
            .unwrap_or_else(|| Pooling::default_for(Some(&model_path), &backbone));
        let mut model = MultiLabelClassifier::new(
            backbone,
            labels.len(),
            pooling,
            defaults::HEAD_DROPOUT,
            &train_device,
        )?;
        let train_counts = label_counts(&data.train, labels.len());
        if self.head_bias_init == HeadBiasInit::Prior {
            if !model.head.has_bias() {
                self.say("head without bias (transformers' `score` for decoders): no prior init");
            }
            model
                .head
                .init_bias_from_priors(&train_counts, data.train.len())?;
        }
        let checkpoint = self.out.as_ref().map(|dir| TrainerCheckpoint {
            dir: dir.clone(),
            lora: lora.clone(),
            labels: labels.clone(),
            meta: AdapterMeta {
                pooling,
                max_len: self.max_len,
                template: template.as_ref().map(|t| t.as_str().to_string()),
                model_type: model.backbone.model_type().to_string(),
                quantize: self.quantize,
                base_dtype: (self.base_dtype != BaseDtype::F32).then_some(self.base_dtype),
                trained_config: None,
            },
            base_model: Some(model_path.display().to_string()),
        });
        let mut loss = MultiLabelLoss::new(self.loss);
        if self.pos_weight {
            loss = loss.with_pos_weight_from_counts(
                &train_counts,
                data.train.len(),
                defaults::POS_WEIGHT_CAP,
                &train_device,
            );
        }

        let t0 = Instant::now();
        let encode = |examples: &[Example]| {
            EncodedSet::encode(examples, &tokenizer, template.as_ref(), labels.len())
        };
        let (train, valid, test) = (
            encode(&data.train)?,
            encode(&data.valid)?,
            encode(&data.test)?,
        );
        self.say(&format!(
            "tokenised in {:.1}s; pooling {pooling:?}; template {:?}",
            t0.elapsed().as_secs_f64(),
            template.as_ref().map(|t| t.as_str())
        ));
        if crate::nn::is_flex(device) {
            let kernel = crate::device::cpu_product_kernel();
            self.say(&format!("large products on flex: {kernel}"));
        }

        let (trainer, state) = match (self.resume, checkpoint) {
            (true, Some(checkpoint)) => {
                let (t, s) = Trainer::resume(model, loss, self.train.clone(), checkpoint, device)?;
                self.say(&format!("resumed at step {} (epoch {})", s.step, s.epoch));
                (t, Some(s))
            }
            (_, checkpoint) => {
                let report = inject_adapters(&mut model, &lora, &train_device)?;
                check_every_target_matched(&report)?;
                self.say(&format!(
                    "LoRA r={} alpha={} on {} modules: {} adapter + {} head = {} trainable parameters",
                    lora.r,
                    lora.lora_alpha,
                    report.adapted.len(),
                    report.trainable_params,
                    model.head.num_params(),
                    report.trainable_params + model.head.num_params()
                ));
                (
                    Trainer::new(model, loss, self.train.clone(), checkpoint),
                    None,
                )
            }
        };
        let mut trainer = match &self.messages {
            Some(sink) => trainer.with_messages(sink.clone()),
            None => trainer.with_messages(Arc::new(|_: &str| {})),
        };
        let trainable = trainer.model().trainable_params();
        let state = trainer.fit(&train, &valid, device, state)?;
        let tokens_per_second = state.tokens as f64 / state.train_seconds.max(1e-9);
        self.say(&format!(
            "trained {} steps in {:.1}s ({:.0} tokens/s); best valid micro-F1 {:.4} at step {}",
            state.step,
            state.train_seconds,
            tokens_per_second,
            state.best_micro_f1,
            state.best_step
        ));

        let best = trainer
            .best_model()
            .ok_or_else(|| Error::InvalidState("no evaluation ran".into()))?
            .clone();
        // The evaluation that chose the best model already scored valid with it.
        let valid_probs = match trainer.best_eval.take() {
            Some(eval) if eval.probs.len() == valid.len() * labels.len() => eval.probs,
            _ => self.predict_with_progress(&best, &valid, "valid", device)?,
        };
        let valid_targets = valid.multi_hot();
        let valid_scores = Scores::new(&valid_probs, &valid_targets, labels.len())?;
        let thresholds = tune_thresholds(
            valid_scores,
            self.threshold,
            defaults::MIN_POSITIVES_PER_LABEL,
            self.at_least_one,
        );
        let valid_metrics = evaluate(valid_scores, &thresholds);
        let test_probs = self.predict_with_progress(&best, &test, "test", device)?;
        let test_targets = test.multi_hot();
        let test_metrics = evaluate(
            Scores::new(&test_probs, &test_targets, labels.len())?,
            &thresholds,
        );
        // Test scores by label frequency (thirds by training count) and by gold labels per
        // example, under the tuned thresholds.
        let test_breakdown = breakdown(
            &thresholds.apply(&test_probs),
            &test_targets,
            labels.len(),
            &train_counts,
        );
        let report = FinetuneReport {
            valid: valid_metrics,
            test: test_metrics,
            thresholds,
            threshold_mode: self.threshold,
            breakdown: test_breakdown,
            steps: state.step,
            best_step: state.best_step,
            best_valid_micro_f1: state.best_micro_f1,
            train_seconds: state.train_seconds,
            train_tokens_per_second: tokens_per_second,
            trainable_params: trainable,
            peak_rss_mib: peak_rss_mib(),
            test_examples: test.len(),
            labels: labels.clone(),
            adapter_dir: self.out.as_ref().map(|dir| dir.join("adapter")),
            model: best,
        };
        if let Some(out) = &self.out {
            let template = template.as_ref().map(PromptTemplate::as_str);
            let mut info = AdapterInfo::new(&lora, &report.labels, self.max_len)
                .with_thresholds(&report.thresholds);
            info.template = template;
            info.base_model = model_path.to_str();
            let mut recipe = self.recipe();
            recipe["pooling"] = json!(pooling);
            recipe["device"] = json!(crate::device::device_name(device));
            recipe["template"] = json!(template);
            write_outputs(out, &report, &info, recipe)?;
        }
        Ok(report)
    }

    /// Apply the [`EmptyTextPolicy`] to every split, before the limits (a dropped example
    /// does not count against `--train-limit`).
    fn handle_empty_texts(&self, data: &mut DataSplits) -> Result<()> {
        let DataSplits {
            train,
            valid,
            test,
            empty_texts,
            ..
        } = data;
        for ((split, examples), empty) in ["train", "valid", "test"]
            .into_iter()
            .zip([train, valid, test])
            .zip(empty_texts.iter())
        {
            if empty.positions.is_empty() {
                continue;
            }
            let count = empty.positions.len();
            match self.empty_texts {
                EmptyTextPolicy::Error => {
                    return Err(Error::EmptyText {
                        split: split.to_string(),
                        count,
                        at: empty.describe(),
                    });
                }
                EmptyTextPolicy::Drop => {
                    examples.retain(|e| !is_empty_text(&e.text));
                    self.say(&format!(
                        "{split}: {count} examples with an empty text dropped ({})",
                        empty.describe()
                    ));
                }
                EmptyTextPolicy::Keep => self.say(&format!(
                    "{split}: {count} examples with an empty text kept: the model sees only \
                     its special tokens ({})",
                    empty.describe()
                )),
            }
        }
        Ok(())
    }

    /// Probabilities for a whole set with the best model, showing progress (the test set
    /// of the main command takes minutes on a CPU).
    fn predict_with_progress(
        &self,
        model: &MultiLabelClassifier<AnyBackbone>,
        set: &EncodedSet,
        what: &str,
        device: &Device,
    ) -> Result<Vec<f32>> {
        let batch_size = self.train.eval_batch_size;
        let mut bar = Progress::new(set.len().div_ceil(batch_size), self.train.progress);
        self.say(&format!("predicting {what} ({} examples)", set.len()));
        let mut done = 0;
        let probs = predict_probs_observed(model, set, batch_size, device, || {
            done += 1;
            bar.update(done, what);
        });
        bar.finish();
        probs
    }
}

/// What a finished [`Finetune::run`] measured, and the model it chose.
#[derive(Debug)]
#[non_exhaustive]
pub struct FinetuneReport {
    /// Validation metrics under the tuned thresholds.
    pub valid: MultiLabelMetrics,
    /// Test metrics under the thresholds tuned on valid.
    pub test: MultiLabelMetrics,
    /// The thresholds tuned on valid.
    pub thresholds: Thresholds,
    /// How they were tuned.
    pub threshold_mode: ThresholdMode,
    /// Test F1 by label-frequency third and by gold labels per example.
    pub breakdown: Breakdown,
    /// Optimizer steps taken.
    pub steps: usize,
    /// The step of the best validation micro-F1 (the model kept).
    pub best_step: usize,
    /// Validation micro-F1 at that step (one global threshold, as monitored in training).
    pub best_valid_micro_f1: f64,
    /// Seconds in training steps.
    pub train_seconds: f64,
    /// Training tokens (padding excluded) per second.
    pub train_tokens_per_second: f64,
    /// LoRA + head parameters trained.
    pub trainable_params: usize,
    /// Peak resident memory of the process (Linux), in MiB.
    pub peak_rss_mib: Option<f64>,
    /// Test examples scored.
    pub test_examples: usize,
    /// The labels, in score order.
    pub labels: LabelSet,
    /// The adapter folder written (`OUT/adapter`), when the job had an output folder.
    pub adapter_dir: Option<PathBuf>,
    /// The model of the best validation micro-F1, in evaluation mode.
    pub model: MultiLabelClassifier<AnyBackbone>,
}

/// Peak resident memory of this process (Linux `VmHWM`), in MiB; `None` elsewhere.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// `adapter/`, `metrics.json` and `breakdown.json` of a finished run, each written
/// atomically.
fn write_outputs(
    out: &Path,
    report: &FinetuneReport,
    info: &AdapterInfo<'_>,
    recipe: serde_json::Value,
) -> Result<()> {
    report.model.save_adapter(out.join("adapter"), info)?;
    let metrics = json!({
        "valid": metrics_json(&report.valid, &report.thresholds),
        "test": metrics_json(&report.test, &report.thresholds),
        "train_seconds": report.train_seconds,
        "train_tokens_per_second": report.train_tokens_per_second,
        "trainable_params": report.trainable_params,
        "peak_rss_mib": report.peak_rss_mib,
        "steps": report.steps,
        "best_step": report.best_step,
        "recipe": recipe,
    });
    crate::io::write_atomic(
        out.join("metrics.json"),
        serde_json::to_string_pretty(&metrics)?.as_bytes(),
    )?;
    crate::io::write_atomic(
        out.join("breakdown.json"),
        serde_json::to_string_pretty(&json!({ "test": report.breakdown }))?.as_bytes(),
    )
}

/// A name in an explicit target list that adapts nothing is a typo (`valeu`): PEFT only
/// refuses a list that matches nothing at all, but a job that silently trains fewer modules
/// than asked for is worse than one that stops.
fn check_every_target_matched(report: &InjectionReport) -> Result<()> {
    if report.unmatched_targets.is_empty() {
        return Ok(());
    }
    Err(Error::InvalidSetting {
        name: "targets",
        message: format!(
            "{} match(es) no linear layer of this model (its linears: {}; adapted: {} modules)",
            report
                .unmatched_targets
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", "),
            report.linear_names.join(", "),
            report.adapted.len()
        ),
    })
}

/// In-memory splits: non-empty, label indices inside the label set.
fn check_examples(splits: &DataSplits) -> Result<()> {
    for (name, split) in [
        ("train", &splits.train),
        ("valid", &splits.valid),
        ("test", &splits.test),
    ] {
        if split.is_empty() {
            return Err(Error::EmptyData(PathBuf::from(format!(
                "<{name} examples>"
            ))));
        }
        if let Some((i, &label)) = split.iter().enumerate().find_map(|(i, e)| {
            e.labels
                .iter()
                .find(|&&l| l >= splits.labels.len())
                .map(|l| (i, l))
        }) {
            return Err(Error::InvalidSetting {
                name: "examples",
                message: format!(
                    "{name} example {i} has label index {label}, past the {} labels",
                    splits.labels.len()
                ),
            });
        }
    }
    Ok(())
}

fn loss_name(loss: &LossKind) -> &'static str {
    match loss {
        LossKind::Bce => "bce",
        LossKind::Focal { .. } => "focal",
        LossKind::Asl { .. } => "asl",
    }
}

fn metrics_json(m: &MultiLabelMetrics, t: &Thresholds) -> serde_json::Value {
    json!({
        "micro_f1": m.micro_f1, "macro_f1": m.macro_f1, "samples_f1": m.samples_f1,
        "micro_precision": m.micro_precision, "micro_recall": m.micro_recall,
        "hamming_loss": m.hamming_loss, "subset_accuracy": m.subset_accuracy,
        "threshold": if t.per_label.iter().all(|&x| x == t.global) { json!(t.global) } else { json!("per-label") },
    })
}

/// An earlier run's folder is kept unless the job says what to do with it: `resume`
/// continues it, `overwrite` writes over it.
fn refuse_to_clobber(out: &Path, resume: bool, overwrite: bool) -> Result<()> {
    // The run's own lock file does not count.
    let has_files = std::fs::read_dir(out).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name() != crate::io::run_lock::LOCK_FILE)
    });
    if has_files && !resume && !overwrite {
        return Err(Error::InvalidState(format!(
            "{} already holds a run: resume it (--resume) or replace it (--overwrite)",
            out.display()
        )));
    }
    Ok(())
}
