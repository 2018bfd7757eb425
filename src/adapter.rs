//! Adapters in PEFT's on-disk format: `adapter_config.json` + `adapter_model.safetensors`
//! (keys `base_model.model.<HF module path>.lora_A.weight` / `.lora_B.weight`, the head
//! as a plain `base_model.model.<head>.weight` entry from `modules_to_save`), plus our
//! own side files: `labels.txt`, `thresholds.json`, `burn_lora.json`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::classify::{ClassificationHead, MultiLabelClassifier, Pooling, Thresholds};
use crate::data::LabelSet;
use crate::error::{Error, Result};
use crate::io::SafetensorsFile;
use crate::io::atomic::{replace_dir, write_atomic};
use crate::io::safetensors::{F32Tensors, serialize_f32};
use crate::lora::{
    BaseDtype, LoraConfig, Quantization, base_quantization, half_base_dtype, inject_adapters,
};
use crate::models::Backbone;

/// File names inside an adapter folder.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// The weights file.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// Label names, one per line, in logit order.
pub const LABELS_FILE: &str = "labels.txt";
/// Tuned thresholds.
pub const THRESHOLDS_FILE: &str = "thresholds.json";
/// What PEFT's format does not say: pooling, max length, template.
pub const META_FILE: &str = "burn_lora.json";

const PEFT_ROOT: &str = "base_model.model.";

/// Our side of an adapter: what a run needs besides the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterMeta {
    /// Pooling used by the head.
    pub pooling: Pooling,
    /// Truncation length used in training.
    pub max_len: usize,
    /// Prompt template (decoders), if any.
    #[serde(default)]
    pub template: Option<String>,
    /// The backbone's `model_type`.
    pub model_type: String,
    /// How the frozen base was stored in training (QLoRA: `nf4`); absent for a float
    /// base. Predicting with the same packing reproduces the training forward.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantize: Option<Quantization>,
    /// How a dense frozen base was stored in training (`--base-dtype`), where not f32;
    /// resuming checks it. Prediction runs on the f32 base (the more precise forward)
    /// unless told otherwise ([`crate::classifier::ClassifierBuilder::base_dtype`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_dtype: Option<BaseDtype>,
    /// PiSSA/OLoRA: the config the adapter was trained under, where the saved one is its
    /// conversion to plain LoRA (see [`save_adapter`]); set by `save_adapter` itself.
    /// Resuming a run reads it to put the adapter back as it was trained.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trained_config: Option<LoraConfig>,
}

/// A tensor's shape and f32 values, for writing.
pub(crate) fn f32_values<const D: usize>(t: Tensor<D>) -> Result<(Vec<usize>, Vec<f32>)> {
    let shape = t.dims().to_vec();
    let values = t
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .map_err(|e| Error::InvalidState(format!("reading a tensor to save: {e:?}")))?;
    Ok((shape, values))
}

/// The head as transformers stores it: `KEY.weight` `[labels, hidden]`, `KEY.bias`.
pub(crate) fn insert_head(
    tensors: &mut F32Tensors,
    key: &str,
    head: &ClassificationHead,
) -> Result<()> {
    tensors.insert(
        format!("{key}.weight"),
        f32_values(head.weight.val().transpose())?,
    );
    if let Some(b) = &head.bias {
        tensors.insert(format!("{key}.bias"), f32_values(b.val())?);
    }
    Ok(())
}

/// Everything written to an adapter folder.
pub struct AdapterContents<'a> {
    /// The LoRA config (targets, rank, ...).
    pub config: &'a LoraConfig,
    /// Label set.
    pub labels: &'a LabelSet,
    /// Tuned thresholds, if any.
    pub thresholds: Option<&'a Thresholds>,
    /// Pooling, max length, template.
    pub meta: &'a AdapterMeta,
    /// `base_model_name_or_path` to record.
    pub base_model: Option<String>,
}

/// What an adapter folder records that the model itself does not know. Built with
/// [`AdapterInfo::new`], then the optional fields set (new fields may come).
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct AdapterInfo<'a> {
    /// The LoRA config the adapters were injected with.
    pub lora: &'a LoraConfig,
    /// Label names, in logit order.
    pub labels: &'a LabelSet,
    /// Tuned thresholds, if any.
    pub thresholds: Option<&'a Thresholds>,
    /// Truncation length used in training.
    pub max_len: usize,
    /// Prompt template used in training, if any.
    pub template: Option<&'a str>,
    /// `base_model_name_or_path` to record.
    pub base_model: Option<&'a str>,
}

impl<'a> AdapterInfo<'a> {
    /// The record of a run with `lora` on `labels` at truncation length `max_len`, without
    /// thresholds, template or base model name.
    pub fn new(lora: &'a LoraConfig, labels: &'a LabelSet, max_len: usize) -> Self {
        AdapterInfo {
            lora,
            labels,
            thresholds: None,
            max_len,
            template: None,
            base_model: None,
        }
    }

    /// With tuned thresholds.
    pub fn with_thresholds(mut self, thresholds: &'a Thresholds) -> Self {
        self.thresholds = Some(thresholds);
        self
    }

    /// With the prompt template used in training.
    pub fn with_template(mut self, template: &'a str) -> Self {
        self.template = Some(template);
        self
    }

    /// With the `base_model_name_or_path` to record.
    pub fn with_base_model(mut self, base_model: &'a str) -> Self {
        self.base_model = Some(base_model);
        self
    }
}

impl<B: Backbone> MultiLabelClassifier<B> {
    /// Save the adapters and head as a PEFT `SEQ_CLS` adapter folder (see
    /// [`save_adapter`]); pooling and model type come from the model itself.
    pub fn save_adapter(&self, dir: impl AsRef<Path>, info: &AdapterInfo<'_>) -> Result<()> {
        let meta = AdapterMeta {
            pooling: self.pooling,
            max_len: info.max_len,
            template: info.template.map(str::to_string),
            model_type: self.backbone.model_type().to_string(),
            quantize: base_quantization(&self.backbone)?,
            base_dtype: half_base_dtype(&self.backbone)?,
            trained_config: None,
        };
        let contents = AdapterContents {
            config: info.lora,
            labels: info.labels,
            thresholds: info.thresholds,
            meta: &meta,
            base_model: info.base_model.map(str::to_string),
        };
        save_adapter(dir, self, &contents)
    }
}

/// Write `model`'s adapters and head as a PEFT `SEQ_CLS` adapter folder. The folder is
/// assembled next to `dir` and swapped in, so `dir` is never half-written.
///
/// Adapters whose factors came from the base (PiSSA, OLoRA: the base in memory is the
/// residual `W − s·B₀A₀`) are saved as PEFT's conversion to plain LoRA writes them: `A' =
/// [A; A₀]`, `B' = [B, −B₀]`, rank and alpha doubled ([`LoraConfig::converted_to_plain`]),
/// so `W + s·B'A' = W_res + s·BA` on the **original** base, the one every user has. The
/// config trained under is kept in `burn_lora.json` (`trained_config`) for resuming.
pub fn save_adapter<B: Backbone>(
    dir: impl AsRef<Path>,
    model: &MultiLabelClassifier<B>,
    contents: &AdapterContents<'_>,
) -> Result<()> {
    let dir = dir.as_ref();
    let prefix = format!("{PEFT_ROOT}{}", model.backbone.task_prefix());
    let mut tensors = F32Tensors::new();
    let mut adapted = Vec::new();
    let mut converted = 0usize;
    model.backbone.read_linears("", &mut |path, linear| {
        if let (Some(mut a), Some(mut b)) = (linear.lora_a(), linear.lora_b()) {
            if linear.is_merged() {
                return Err(Error::InvalidState(format!(
                    "{path}: unmerge adapters before saving them"
                )));
            }
            if let Some((a0, b0)) = linear.initial_factors() {
                a = Tensor::cat(vec![a, a0], 0);
                b = Tensor::cat(vec![b, b0.neg()], 1);
                converted += 1;
            }
            tensors.insert(format!("{prefix}{path}.lora_A.weight"), f32_values(a)?);
            tensors.insert(format!("{prefix}{path}.lora_B.weight"), f32_values(b)?);
            // PEFT saves DoRA's magnitude without a `.weight` suffix.
            if let Some(m) = linear.lora_magnitude() {
                tensors.insert(
                    format!("{prefix}{path}.lora_magnitude_vector"),
                    f32_values(m)?,
                );
            }
            adapted.push(path.to_string());
        }
        Ok(())
    })?;
    if adapted.is_empty() {
        return Err(Error::InvalidState("model has no adapters to save".into()));
    }
    insert_head(
        &mut tensors,
        &format!("{PEFT_ROOT}{}", model.head_name),
        &model.head,
    )?;
    if converted == 0 && contents.config.init_lora_weights.takes_base() {
        return Err(Error::InvalidState(format!(
            "the config says init_lora_weights {:?}, but no adapter took its factors from \
             the base",
            contents.config.init_lora_weights
        )));
    }
    if converted != 0 && converted != adapted.len() {
        return Err(Error::InvalidState(format!(
            "{converted} of {} adapters took their factors from the base (PiSSA/OLoRA): \
             one config cannot describe both kinds",
            adapted.len()
        )));
    }
    let weights = serialize_f32(&tensors)?;

    let mut meta = contents.meta.clone();
    let mut config = if converted > 0 {
        meta.trained_config = Some(contents.config.clone());
        contents.config.converted_to_plain()
    } else {
        contents.config.clone()
    };
    config.task_type = Some("SEQ_CLS".into());
    config.peft_type = "LORA".into();
    config.inference_mode = true;
    config.base_model_name_or_path = contents.base_model.clone();
    if config.target_modules.is_none() {
        config.target_modules = Some(model.backbone.default_targets());
    }
    let mut to_save = config.modules_to_save.clone().unwrap_or_default();
    if !to_save.contains(&model.head_name) {
        to_save.push(model.head_name.clone());
    }
    config.modules_to_save = Some(to_save);

    replace_dir(dir, |tmp| {
        write_atomic(tmp.join(ADAPTER_WEIGHTS), &weights)?;
        write_atomic(
            tmp.join(ADAPTER_CONFIG),
            serde_json::to_string_pretty(&config)?.as_bytes(),
        )?;
        write_atomic(tmp.join(LABELS_FILE), contents.labels.to_text().as_bytes())?;
        if let Some(t) = contents.thresholds {
            write_atomic(
                tmp.join(THRESHOLDS_FILE),
                serde_json::to_string_pretty(t)?.as_bytes(),
            )?;
        }
        write_atomic(
            tmp.join(META_FILE),
            serde_json::to_string_pretty(&meta)?.as_bytes(),
        )
    })
}

/// An adapter folder as read back.
#[derive(Debug, Clone)]
pub struct LoadedAdapter {
    /// The folder.
    pub dir: PathBuf,
    /// Its LoRA config.
    pub config: LoraConfig,
    /// Label names (`labels.txt`).
    pub labels: LabelSet,
    /// Thresholds (`thresholds.json`), if saved.
    pub thresholds: Option<Thresholds>,
    /// Our metadata (`burn_lora.json`), absent in adapters written by Python PEFT.
    pub meta: Option<AdapterMeta>,
}

impl LoadedAdapter {
    /// The pooling the adapter was trained with: its `burn_lora.json`'s, else (an adapter
    /// written by Python PEFT) the task model's own — BERT's pooler where the checkpoint
    /// has one, the last non-padding token on decoders, CLS otherwise.
    pub fn pooling(&self, backbone: &impl Backbone) -> Pooling {
        self.meta
            .as_ref()
            .map_or_else(|| Pooling::task_default(backbone), |m| m.pooling)
    }

    /// The truncation length it was trained with; 512 (transformers' usual limit) for one
    /// written by Python PEFT.
    pub fn max_len(&self) -> usize {
        self.meta.as_ref().map_or(512, |m| m.max_len)
    }
}

/// Read an adapter folder's config and side files (not the weights).
pub fn read_adapter(dir: impl AsRef<Path>) -> Result<LoadedAdapter> {
    let dir = dir.as_ref().to_path_buf();
    if !dir.join(ADAPTER_CONFIG).is_file() {
        // A missing folder, or one that is not an adapter (a model folder, a run folder).
        return Err(Error::Format {
            path: dir,
            message: format!("not an adapter folder: no {ADAPTER_CONFIG}"),
        });
    }
    let config = LoraConfig::from_json_file(dir.join(ADAPTER_CONFIG))?;
    let labels = LabelSet::from_file(dir.join(LABELS_FILE))?;
    let read_json = |name: &str| -> Result<Option<String>> {
        let p = dir.join(name);
        if p.exists() {
            Ok(Some(
                std::fs::read_to_string(&p).map_err(|e| Error::io(&p, e))?,
            ))
        } else {
            Ok(None)
        }
    };
    let parse = |name: &str, text: &str| -> Error {
        Error::Format {
            path: dir.join(name),
            message: text.to_string(),
        }
    };
    let thresholds: Option<Thresholds> = match read_json(THRESHOLDS_FILE)? {
        Some(t) => {
            Some(serde_json::from_str(&t).map_err(|e| parse(THRESHOLDS_FILE, &e.to_string()))?)
        }
        None => None,
    };
    let meta: Option<AdapterMeta> = match read_json(META_FILE)? {
        Some(t) => Some(serde_json::from_str(&t).map_err(|e| parse(META_FILE, &e.to_string()))?),
        None => None,
    };
    if let Some(t) = &thresholds {
        if t.per_label.len() != labels.len() {
            return Err(Error::ShapeMismatch {
                name: THRESHOLDS_FILE.into(),
                expected: vec![labels.len()],
                actual: vec![t.per_label.len()],
            });
        }
        // A threshold outside [0, 1] decides every label the same way whatever the text.
        if let Some(bad) = std::iter::once(&t.global)
            .chain(&t.per_label)
            .find(|x| !(0.0..=1.0).contains(*x))
        {
            return Err(parse(
                THRESHOLDS_FILE,
                &format!("threshold {bad} is outside [0, 1]"),
            ));
        }
    }
    Ok(LoadedAdapter {
        dir,
        config,
        labels,
        thresholds,
        meta,
    })
}

/// Put a saved adapter onto `model` (built with a head of the adapter's label count):
/// injects adapters per the adapter's config, then loads A, B and the head. Accepts keys
/// with or without the task prefix (`bert.`, `model.`, ...), as PEFT writes them for the
/// task model or the bare model.
///
/// A PiSSA/OLoRA adapter saved here (converted to plain LoRA, see [`save_adapter`]) loads
/// as the plain LoRA it is. One PEFT saved without that conversion (`init_lora_weights`
/// `"pissa"`/`"olora"`) belongs to a residual base this model is not, and is refused.
pub fn load_adapter_weights<B: Backbone>(
    adapter: &LoadedAdapter,
    model: &mut MultiLabelClassifier<B>,
    device: &Device,
) -> Result<()> {
    load_weights(adapter, model, device, false)
}

/// As [`load_adapter_weights`], but a PiSSA/OLoRA adapter saved here comes back as it was
/// trained: rank r, its starting factors taken out of the base again, A and B as trained
/// (what resuming a run needs). Other adapters load as [`load_adapter_weights`] loads them.
pub fn load_adapter_for_training<B: Backbone>(
    adapter: &LoadedAdapter,
    model: &mut MultiLabelClassifier<B>,
    device: &Device,
) -> Result<()> {
    load_weights(adapter, model, device, true)
}

fn load_weights<B: Backbone>(
    adapter: &LoadedAdapter,
    model: &mut MultiLabelClassifier<B>,
    device: &Device,
    as_trained: bool,
) -> Result<()> {
    // Weights of one family can have the shapes of another's (a BERT adapter on a Llama
    // base of the same width): the recorded model type decides, where there is one.
    if let Some(meta) = &adapter.meta
        && meta.model_type != model.backbone.model_type()
    {
        return Err(Error::AdapterBaseMismatch {
            adapter: adapter.dir.clone(),
            trained: meta.model_type.clone(),
            base: model.backbone.model_type().to_string(),
        });
    }
    let path = adapter.dir.join(ADAPTER_WEIGHTS);
    if adapter.config.init_lora_weights.takes_base() {
        return Err(Error::Unsupported {
            what: "init_lora_weights",
            detail: format!(
                "{} holds a {:?} adapter saved without conversion: it only fits the residual \
                 base it was trained on. Save it from PEFT with \
                 `save_pretrained(..., path_initial_model_for_weight_conversion=...)`",
                adapter.dir.display(),
                adapter.config.init_lora_weights
            ),
        });
    }
    let st = SafetensorsFile::open(&path)?;
    // Resuming a PiSSA/OLoRA run: inject the rank it trained at, with no init of its own
    // (the starting factors come from the file, not from a new decomposition).
    let trained = adapter
        .meta
        .as_ref()
        .and_then(|m| m.trained_config.as_ref())
        .filter(|_| as_trained);
    let mut config = match trained {
        Some(trained) => {
            let mut config = trained.clone();
            config.init_lora_weights = crate::lora::InitLoraWeights::Default;
            config
        }
        None => adapter.config.clone(),
    };
    if config.target_modules.is_none() {
        config.target_modules = Some(model.backbone.default_targets());
    }
    // The head is ours, not the backbone's: keep it out of target matching.
    let _ = inject_adapters(&mut model.backbone, &config, device)?;
    let task = model.backbone.task_prefix();
    let names: BTreeSet<String> = st.names().into_iter().collect();
    let resolve = |suffix: &str| -> Option<String> {
        [
            format!("{PEFT_ROOT}{task}{suffix}"),
            format!("{PEFT_ROOT}{suffix}"),
        ]
        .into_iter()
        .find(|k| names.contains(k))
    };
    let mut used = BTreeSet::new();
    model.backbone.visit_linears("", &mut |p, linear| {
        if linear.adapter.is_none() {
            return Ok(());
        }
        let mut get = |which: &str| -> Result<Tensor<2>> {
            let key =
                resolve(&format!("{p}.{which}.weight")).ok_or_else(|| Error::MissingTensor {
                    name: format!("{PEFT_ROOT}{task}{p}.{which}.weight"),
                    path: path.clone(),
                })?;
            used.insert(key.clone());
            st.finite_tensor::<2>(&key, None, device)
        };
        let a = get("lora_A")?;
        let b = get("lora_B")?;
        if trained.is_some() {
            // `[A; A₀]` and `[B, −B₀]` back into the trained factors and the starting ones.
            let r = linear.adapter.as_ref().map_or(0, |w| w.rank());
            let [rows, inp] = a.dims();
            let [out, cols] = b.dims();
            for (which, expected, actual) in [
                ("lora_A", [2 * r, inp], [rows, inp]),
                ("lora_B", [out, 2 * r], [out, cols]),
            ] {
                if expected != actual {
                    return Err(Error::ShapeMismatch {
                        name: format!("{p}.{which} (converted, twice the trained rank)"),
                        expected: expected.to_vec(),
                        actual: actual.to_vec(),
                    });
                }
            }
            linear.restore_taken_from_base(
                a.clone().slice([0..r, 0..inp]),
                b.clone().slice([0..out, 0..r]),
                a.slice([r..2 * r, 0..inp]),
                b.slice([0..out, r..2 * r]).neg(),
            )?;
        } else {
            linear.set_lora_weights(a, b)?;
        }
        if linear.adapter.as_ref().is_some_and(|a| a.is_dora()) {
            // PEFT writes `…lora_magnitude_vector`; `.weight` is its in-memory name.
            let suffix = format!("{p}.lora_magnitude_vector");
            let key = resolve(&suffix)
                .or_else(|| resolve(&format!("{suffix}.weight")))
                .ok_or_else(|| Error::MissingTensor {
                    name: format!("{PEFT_ROOT}{task}{suffix}"),
                    path: path.clone(),
                })?;
            used.insert(key.clone());
            linear.set_lora_magnitude(st.finite_tensor::<1>(&key, None, device)?)?;
        }
        Ok(())
    })?;
    let head = model.head_name.clone();
    let weight_key = resolve(&format!("{head}.weight")).ok_or_else(|| Error::MissingTensor {
        name: format!("{PEFT_ROOT}{head}.weight"),
        path: path.clone(),
    })?;
    used.insert(weight_key.clone());
    let weight = st.finite_tensor::<2>(&weight_key, None, device)?;
    let bias = match resolve(&format!("{head}.bias")) {
        Some(k) => {
            used.insert(k.clone());
            Some(st.finite_tensor::<1>(&k, None, device)?)
        }
        None => None,
    };
    model.head.set_weights(weight, bias)?;
    let unexpected: Vec<&String> = names.iter().filter(|n| !used.contains(*n)).collect();
    if !unexpected.is_empty() {
        return Err(Error::Format {
            path,
            message: format!(
                "tensors that match no adapted module of this model: {}",
                unexpected
                    .iter()
                    .take(5)
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(())
}
