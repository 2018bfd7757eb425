//! Serving in one call: a base model loaded once, one or more adapter folders on it, and
//! texts in, labels and scores out.
//!
//! ```no_run
//! # fn main() -> burn_lora::Result<()> {
//! let device = burn_lora::device::parse_device("flex")?;
//! let clf = burn_lora::Classifier::load("models/all-MiniLM-L6-v2", "runs/minilm/adapter", &device)?;
//! for p in clf.predict(&["Library for parsing XML documents"])? {
//!     println!("{:?}", p.labels);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Everything an adapter folder records is used as in training: its labels, tuned
//! thresholds, prompt template, pooling, truncation length (longer texts are cut at the
//! same length) and the packing of the base it was trained on (a QLoRA adapter gets its
//! NF4 base). Several adapters share one loaded base: each holds its own LoRA weights,
//! head and label set on a copy of the base's module tree whose tensors are the base's own
//! (no weight is copied).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::tensor::Device;

use crate::adapter::{LoadedAdapter, load_adapter_weights, read_adapter};
use crate::classify::{MultiLabelClassifier, Thresholds, predict_probs};
use crate::data::{EncodedSet, Example, PromptTemplate};
use crate::error::{Error, Result};
use crate::lora::{BaseDtype, Quantization};
use crate::models::{AnyBackbone, Pretrained};
use crate::tokenize::TextTokenizer;

/// One text's result.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Prediction {
    /// The labels whose score passes the adapter's threshold for it, in label order.
    pub labels: Vec<String>,
    /// One sigmoid probability per label, in [`Classifier::labels`] order.
    pub scores: Vec<f32>,
}

/// An adapter ready to predict on the shared base.
struct Served {
    name: String,
    model: MultiLabelClassifier<AnyBackbone>,
    labels: Vec<String>,
    thresholds: Thresholds,
    template: Option<PromptTemplate>,
    tokenizer: TextTokenizer,
}

/// Multi-label prediction with saved adapters (see the [module docs](self)).
pub struct Classifier {
    adapters: Vec<Served>,
    index: HashMap<String, usize>,
    batch_size: usize,
    device: Device,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("adapters", &self.adapter_names())
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

/// How to load a [`Classifier`]: the base, the adapters and what overrides their records.
#[derive(Debug, Clone)]
#[must_use = "a ClassifierBuilder does nothing until `load`"]
pub struct ClassifierBuilder {
    model: PathBuf,
    adapters: Vec<(String, PathBuf)>,
    quantize: Option<Option<Quantization>>,
    base_dtype: BaseDtype,
    template: Option<String>,
    threshold: Option<f32>,
    batch_size: usize,
}

impl ClassifierBuilder {
    /// Add an adapter folder, named by its path as given.
    pub fn adapter(self, dir: impl AsRef<Path>) -> Self {
        let name = dir.as_ref().display().to_string();
        self.adapter_named(name, dir)
    }

    /// Add an adapter folder under `name` (what [`Classifier::predict_with`] and
    /// [`Classifier::predict_mixed`] call it).
    pub fn adapter_named(mut self, name: impl Into<String>, dir: impl AsRef<Path>) -> Self {
        self.adapters
            .push((name.into(), dir.as_ref().to_path_buf()));
        self
    }

    /// The base's packing, instead of the one the adapters were trained with (`None`:
    /// float).
    pub fn quantize(mut self, packing: Option<Quantization>) -> Self {
        self.quantize = Some(packing);
        self
    }

    /// How a float base's frozen weights are stored (default f32, the more precise forward,
    /// whatever the adapters were trained on): f16/bf16 halve the base in memory, as
    /// `--base-dtype` did in training ([`crate::models::LoadOptions::dtype`]). A packed
    /// base or a device that cannot store the type is an [`Error::Unsupported`] before
    /// the base loads.
    pub fn base_dtype(mut self, dtype: BaseDtype) -> Self {
        self.base_dtype = dtype;
        self
    }

    /// A prompt template (or a file holding one) instead of the adapters' own; `{text}`
    /// alone means none.
    pub fn template(mut self, template: impl Into<String>) -> Self {
        self.template = Some(template.into());
        self
    }

    /// One global threshold, in (0, 1), instead of the adapters' tuned ones.
    pub fn threshold(mut self, threshold: f32) -> Self {
        self.threshold = Some(threshold);
        self
    }

    /// Texts per forward (default 32).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size;
        self
    }

    /// Read every adapter folder, then load the base once and put each adapter on it.
    /// Errors, each before the base loads: no adapter, a name given twice, a missing or
    /// foreign folder ([`Error::Format`]), a threshold outside (0, 1), adapters trained on
    /// differently packed bases without [`quantize`](ClassifierBuilder::quantize). An
    /// adapter of another model type than the base is [`Error::AdapterBaseMismatch`].
    pub fn load(self, device: &Device) -> Result<Classifier> {
        let bad = |name: &'static str, message: String| Error::InvalidSetting { name, message };
        if self.adapters.is_empty() {
            return Err(bad(
                "adapter",
                "at least one adapter folder is needed".into(),
            ));
        }
        if !(1..=crate::limits::MAX_COUNT).contains(&self.batch_size) {
            return Err(bad(
                "batch_size",
                format!(
                    "{} is not in 1..={}",
                    self.batch_size,
                    crate::limits::MAX_COUNT
                ),
            ));
        }
        if let Some(t) = self.threshold
            && !(t > 0.0 && t < 1.0)
        {
            return Err(bad("threshold", format!("{t} must be in (0, 1)")));
        }
        let mut index = HashMap::new();
        for (i, (name, _)) in self.adapters.iter().enumerate() {
            if index.insert(name.clone(), i).is_some() {
                return Err(bad("adapter", format!("`{name}` is named twice")));
            }
        }
        let read = self
            .adapters
            .iter()
            .map(|(_, dir)| read_adapter(dir))
            .collect::<Result<Vec<_>>>()?;
        // Templates (an override may name a file) are read before the base loads.
        let templates = read
            .iter()
            .map(|adapter| template_for(adapter, self.template.as_deref()))
            .collect::<Result<Vec<_>>>()?;
        let packing = match self.quantize {
            Some(packing) => packing,
            None => trained_packing(&read)?,
        };
        // Loaded at the longest length any adapter uses (checked against the model's
        // position table); each adapter then tokenises at its own.
        let longest = read.iter().map(LoadedAdapter::max_len).max().unwrap_or(512);
        let options = crate::models::LoadOptions::new(longest)
            .packing(packing)
            .dtype(self.base_dtype);
        let pretrained = crate::models::load(&self.model, &options, device)?;
        let adapters = self
            .adapters
            .iter()
            .zip(read.iter().zip(templates))
            .map(|((name, _), (adapter, template))| {
                serve(&pretrained, adapter, name, template, self.threshold, device)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Classifier {
            adapters,
            index,
            batch_size: self.batch_size,
            device: device.clone(),
        })
    }
}

/// The packing the adapters were trained with; all must agree.
fn trained_packing(adapters: &[LoadedAdapter]) -> Result<Option<Quantization>> {
    let trained: Vec<Option<Quantization>> = adapters
        .iter()
        .map(|a| a.meta.as_ref().and_then(|m| m.quantize))
        .collect();
    if trained.windows(2).any(|w| w[0] != w[1]) {
        return Err(Error::InvalidSetting {
            name: "quantize",
            message: format!(
                "the adapters were trained on differently packed bases ({trained:?}): choose one \
                 (`quantize`, the predict example's --quantize)"
            ),
        });
    }
    Ok(trained.first().copied().flatten())
}

/// The prompt template for `adapter`: the override, else its own. An override may name a
/// file; the adapter's own template is the template itself (a downloaded adapter must not
/// make us read a path of its choosing).
fn template_for(adapter: &LoadedAdapter, over: Option<&str>) -> Result<Option<PromptTemplate>> {
    let labels = adapter.labels.names();
    let own = adapter.meta.as_ref().and_then(|m| m.template.as_ref());
    Ok(match (over, own) {
        (Some(t), _) => Some(PromptTemplate::from_arg(t, labels)?),
        (None, Some(t)) => Some(PromptTemplate::new(t, labels)?),
        (None, None) => None,
    }
    .filter(|t| !t.is_identity()))
}

/// One adapter on a copy of the loaded base (the copy shares the base's tensors).
fn serve(
    pretrained: &Pretrained,
    adapter: &LoadedAdapter,
    name: &str,
    template: Option<PromptTemplate>,
    threshold: Option<f32>,
    device: &Device,
) -> Result<Served> {
    let backbone = pretrained.backbone.clone();
    let labels = &adapter.labels;
    let pooling = adapter.pooling(&backbone);
    let mut model = MultiLabelClassifier::new(backbone, labels.len(), pooling, 0.0, device)?;
    load_adapter_weights(adapter, &mut model, device)?;
    let thresholds = match (threshold, &adapter.thresholds) {
        (Some(t), _) => Thresholds::global(t, labels.len(), false),
        (None, Some(t)) => t.clone(),
        (None, None) => Thresholds::global(0.5, labels.len(), false),
    };
    Ok(Served {
        name: name.to_string(),
        model,
        labels: labels.names().to_vec(),
        thresholds,
        template,
        tokenizer: pretrained.tokenizer.with_max_len(adapter.max_len())?,
    })
}

impl Classifier {
    /// The base `model` (a Hugging Face folder, a GGUF file or, with the `hub` feature, a
    /// model id) with the adapter in `adapter_dir`, on `device`.
    pub fn load(
        model: impl AsRef<Path>,
        adapter_dir: impl AsRef<Path>,
        device: &Device,
    ) -> Result<Classifier> {
        Self::builder(model).adapter(adapter_dir).load(device)
    }

    /// A builder for several adapters on one base, or overrides of what they record.
    pub fn builder(model: impl AsRef<Path>) -> ClassifierBuilder {
        ClassifierBuilder {
            model: model.as_ref().to_path_buf(),
            adapters: Vec::new(),
            quantize: None,
            base_dtype: BaseDtype::F32,
            template: None,
            threshold: None,
            batch_size: 32,
        }
    }

    /// The first adapter's labels, in score order.
    pub fn labels(&self) -> &[String] {
        &self.adapters[0].labels
    }

    /// The labels of the adapter called `adapter`.
    pub fn labels_of(&self, adapter: &str) -> Result<&[String]> {
        Ok(&self.adapters[self.position(adapter)?].labels)
    }

    /// The adapters' names, in the order they were added.
    pub fn adapter_names(&self) -> Vec<&str> {
        self.adapters.iter().map(|a| a.name.as_str()).collect()
    }

    /// Predict with the first adapter; an empty slice gives an empty result.
    pub fn predict(&self, texts: &[&str]) -> Result<Vec<Prediction>> {
        self.run(&self.adapters[0], texts)
    }

    /// Predict with the adapter called `adapter` ([`Error::UnknownAdapter`] if none is).
    pub fn predict_with(&self, adapter: &str, texts: &[&str]) -> Result<Vec<Prediction>> {
        self.run(&self.adapters[self.position(adapter)?], texts)
    }

    /// Predict for requests that each name their adapter, `(adapter, text)`; results in
    /// request order, each in its adapter's label order. Every name is checked before any
    /// work. Each adapter's texts run as batches of their own over the shared base, so a
    /// result equals what [`predict_with`](Classifier::predict_with) gives for that text.
    pub fn predict_mixed(&self, requests: &[(&str, &str)]) -> Result<Vec<Prediction>> {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); self.adapters.len()];
        for (i, (adapter, _)) in requests.iter().enumerate() {
            groups[self.position(adapter)?].push(i);
        }
        let mut out: Vec<Option<Prediction>> = vec![None; requests.len()];
        for (adapter, members) in self.adapters.iter().zip(&groups) {
            if members.is_empty() {
                continue;
            }
            let texts: Vec<&str> = members.iter().map(|&i| requests[i].1).collect();
            for (&i, p) in members.iter().zip(self.run(adapter, &texts)?) {
                out[i] = Some(p);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    fn position(&self, adapter: &str) -> Result<usize> {
        self.index
            .get(adapter)
            .copied()
            .ok_or_else(|| Error::UnknownAdapter {
                name: adapter.to_string(),
                loaded: self.adapter_names().join(", "),
            })
    }

    fn run(&self, adapter: &Served, texts: &[&str]) -> Result<Vec<Prediction>> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let examples: Vec<Example> = texts
            .iter()
            .map(|t| Example {
                id: None,
                text: t.to_string(),
                labels: Vec::new(),
            })
            .collect();
        let l = adapter.labels.len();
        let set = EncodedSet::encode(&examples, &adapter.tokenizer, adapter.template.as_ref(), l)?;
        let probs = predict_probs(&adapter.model, &set, self.batch_size, &self.device)?;
        let decisions = adapter.thresholds.apply(&probs);
        Ok(probs
            .chunks(l)
            .zip(decisions.chunks(l))
            .map(|(scores, chosen)| Prediction {
                labels: (0..l)
                    .filter(|&j| chosen[j] == 1)
                    .map(|j| adapter.labels[j].clone())
                    .collect(),
                scores: scores.to_vec(),
            })
            .collect())
    }
}
