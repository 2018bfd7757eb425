//! The crate's single error type.

use std::path::PathBuf;

/// Everything that can go wrong in burn-lora.
///
/// Variants are specific so callers (and tests) can tell a bad rank from a bad regex
/// without parsing messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// LoRA rank `r` must be at least 1.
    #[error("invalid LoRA rank r = {rank} for `{module}`: r must be >= 1")]
    InvalidRank {
        /// Module path (or `"<config>"` for the global value).
        module: String,
        /// The rejected rank.
        rank: usize,
    },
    /// A LoRA rank no real config has. PEFT accepts any rank, even past the layer's sides
    /// (its own tests use r 64 on a 24-wide layer), so the bound is absolute: a rank past
    /// it can only come from a corrupt config and would size an allocation of any size.
    #[error("LoRA rank r = {rank} for `{module}` is beyond any real adapter (at most {max})")]
    RankTooLarge {
        /// Module path.
        module: String,
        /// Requested rank.
        rank: usize,
        /// The bound.
        max: usize,
    },
    /// `lora_alpha` must be finite and strictly positive.
    #[error("invalid lora_alpha = {alpha} for `{module}`: alpha must be finite and > 0")]
    InvalidAlpha {
        /// Module path (or `"<config>"` for the global value).
        module: String,
        /// The rejected alpha.
        alpha: f64,
    },
    /// `lora_dropout` must lie in `[0, 1)`.
    #[error("invalid lora_dropout = {0}: must be in [0, 1)")]
    InvalidDropout(f64),
    /// A regular expression in the config (target, exclude or pattern keys) does not compile.
    #[error("invalid regular expression `{pattern}` in `{field}`: {message}")]
    InvalidRegex {
        /// The config field holding the pattern.
        field: &'static str,
        /// The pattern as written.
        pattern: String,
        /// The regex compiler's message.
        message: String,
    },
    /// `target_modules` matched no linear layer of the model.
    #[error("target_modules {targets} matched no linear layer; available: {available}")]
    NoTargetMatched {
        /// The targets as written in the config.
        targets: String,
        /// A short list of the model's linear module paths.
        available: String,
    },
    /// A config value is valid PEFT but not implemented here.
    #[error("unsupported {what}: {detail}")]
    Unsupported {
        /// Which option.
        what: &'static str,
        /// What was asked for.
        detail: String,
    },
    /// The `--device` string names a backend that is unknown or not compiled in.
    #[error("device `{device}`: {reason}")]
    Device {
        /// The string as given.
        device: String,
        /// Why it can't be used.
        reason: String,
    },
    /// Two tensors (or a tensor and a module) disagree on shape.
    #[error("shape mismatch for `{name}`: expected {expected:?}, got {actual:?}")]
    ShapeMismatch {
        /// Tensor or module name.
        name: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Actual shape.
        actual: Vec<usize>,
    },
    /// A tensor the model needs is absent from the checkpoint or adapter.
    #[error("missing tensor `{name}` in {}", path.display())]
    MissingTensor {
        /// Tensor name as looked up.
        name: String,
        /// File searched.
        path: PathBuf,
    },
    /// A tensor has a dtype we can't use.
    #[error("tensor `{name}` has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// Tensor name.
        name: String,
        /// The dtype as the file spells it.
        dtype: String,
    },
    /// A file's content is malformed (truncated safetensors, bad JSON, ...).
    #[error("malformed file {}: {message}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A label in a data file is not in the label set.
    #[error("{}:{line}: unknown label `{label}`", path.display())]
    UnknownLabel {
        /// The data file.
        path: PathBuf,
        /// 1-based line (record) number.
        line: usize,
        /// The label.
        label: String,
    },
    /// Token ids or a sequence length the model cannot take (an added token, a mismatched
    /// tokenizer, `--max-len` past the position table): refused before any forward, since
    /// a CPU backend would panic on the index and a GPU backend read out of range silently.
    #[error("input out of the model's range: {0}")]
    InputOutOfRange(String),
    /// Training data where no example carries a label of the label set.
    #[error("{}: {message}", path.display())]
    NoLabels {
        /// The label set's file (or the training file when the set is inferred from it).
        path: PathBuf,
        /// What was found instead.
        message: String,
    },
    /// A gradient norm that is NaN or infinite: the optimizer step was not taken.
    #[error("gradient norm is {norm} at optimizer step {step}; the weights were not updated")]
    NonFiniteGradient {
        /// The global L2 norm of the accumulated gradients.
        norm: f64,
        /// The optimizer step (1-based) that would have applied them.
        step: usize,
    },
    /// A resumed run (`--resume`, `Trainer::resume`) with settings other than the saved run's.
    #[error("cannot resume: {what} is {now} now but {saved} in the saved run")]
    ResumeMismatch {
        /// The setting that differs.
        what: String,
        /// Its value in the saved run.
        saved: String,
        /// Its value now.
        now: String,
    },
    /// Examples whose text is empty or only whitespace, under [`EmptyTextPolicy::Error`](crate::data::EmptyTextPolicy).
    #[error(
        "{count} {split} example(s) with an empty or whitespace-only text: {at} \
         (drop or keep them: EmptyTextPolicy, finetune's --empty-texts drop|keep)"
    )]
    EmptyText {
        /// `train`, `valid` or `test`.
        split: String,
        /// How many.
        count: usize,
        /// Where: the file and its first lines, or example numbers.
        at: String,
    },
    /// A data file holds no examples.
    #[error("{}: no examples", .0.display())]
    EmptyData(PathBuf),
    /// Training diverged: the loss is NaN or infinite.
    #[error("loss is {value} at optimizer step {step}")]
    NonFiniteLoss {
        /// The optimizer step (1-based).
        step: usize,
        /// The value seen.
        value: f32,
    },
    /// The tokenizer failed to load or encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// JSON (de)serialisation failed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// An I/O operation failed.
    #[error("i/o error on {}: {source}", path.display())]
    Io {
        /// The file or folder involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A download from a model hub failed.
    #[error("download of {url} failed: {message}")]
    Download {
        /// What was requested.
        url: String,
        /// Why it failed.
        message: String,
    },
    /// A setting of a job ([`Finetune`](crate::Finetune), [`Classifier`](crate::Classifier))
    /// out of its range, refused before any file is read or written.
    #[error("invalid setting `{name}`: {message}")]
    InvalidSetting {
        /// The setting (the builder method's name).
        name: &'static str,
        /// What is wrong with it.
        message: String,
    },
    /// An adapter trained on another kind of base model than the one it is put on.
    #[error("adapter {} was trained on a `{trained}` base, not on this `{base}` model", adapter.display())]
    AdapterBaseMismatch {
        /// The adapter folder.
        adapter: PathBuf,
        /// The `model_type` its `burn_lora.json` records.
        trained: String,
        /// The base model's `model_type`.
        base: String,
    },
    /// Another run holds the output folder (its lock file names the process).
    #[error("{} is in use by another run{}; if none runs, remove {}", dir.display(), pid.map(|p| format!(" (process {p})")).unwrap_or_default(), lock.display())]
    RunFolderLocked {
        /// The run folder.
        dir: PathBuf,
        /// The holder's process id, when the lock file says.
        pid: Option<u32>,
        /// The lock file.
        lock: PathBuf,
    },
    /// A prediction named an adapter the classifier does not hold.
    #[error("no adapter named `{name}` (loaded: {loaded})")]
    UnknownAdapter {
        /// The name asked for.
        name: String,
        /// The names loaded, comma-separated.
        loaded: String,
    },
    /// An operation was called in a state that doesn't allow it (merge twice, unmerge unmerged).
    #[error("invalid state: {0}")]
    InvalidState(String),
}

impl Error {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

impl From<burn_lora_gguf::GgufError> for Error {
    fn from(e: burn_lora_gguf::GgufError) -> Self {
        use burn_lora_gguf::GgufError as G;
        match e {
            G::Format { path, message } => Error::Format { path, message },
            G::MissingTensor { name, path } => Error::MissingTensor { name, path },
            G::Io { path, source } => Error::Io { path, source },
            other => Error::Format {
                path: PathBuf::new(),
                message: other.to_string(),
            },
        }
    }
}

/// `Result` with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
