//! A fine-tuned classifier as a plain Hugging Face checkpoint: the adapters merged into the
//! base weights (`W + s·BA`), the head as the `…ForSequenceClassification` head, a
//! `config.json` with `problem_type: "multi_label_classification"` and the labels, and the
//! tokenizer files — what `AutoModelForSequenceClassification.from_pretrained` loads.
//!
//! Only heads that transformers' class computes the same way are exported: decoders with
//! last-token pooling (`LlamaForSequenceClassification` and its siblings) and BERT with
//! its pooler (`BertForSequenceClassification`). Mean or CLS pooling, RoBERTa's and
//! DistilBERT's two-layer heads would change the predictions silently, so they are
//! refused with [`Error::Unsupported`]; keep the PEFT adapter for those.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::adapter::{f32_values, insert_head};
use crate::classify::{MultiLabelClassifier, Pooling};
use crate::data::LabelSet;
use crate::error::{Error, Result};
use crate::io::safetensors::{F32Tensors, serialize_f32};
use crate::io::{Checkpoint, replace_dir, write_atomic};
use crate::lora::FrozenBase;
use crate::models::Backbone;

/// Tokenizer files copied beside the weights when the base folder has them.
const TOKENIZER_FILES: [&str; 7] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
];

/// What [`export_merged`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportReport {
    /// transformers' class in `config.json`'s `architectures`.
    pub architecture: String,
    /// Linears whose adapter was merged.
    pub merged: usize,
    /// Tensors written.
    pub tensors: usize,
}

/// Write `model` (adapters unmerged, base unquantised, loaded from the safetensors folder
/// `base_dir`) to `out` as a merged `…ForSequenceClassification` checkpoint. `out` is
/// replaced as a unit.
pub fn export_merged<B: Backbone>(
    model: &MultiLabelClassifier<B>,
    base_dir: impl AsRef<Path>,
    labels: &LabelSet,
    out: impl AsRef<Path>,
) -> Result<ExportReport> {
    let base_dir = base_dir.as_ref();
    let backbone = &model.backbone;
    let class = backbone.task_class();
    let expected = if backbone.is_decoder() {
        Some(Pooling::LastToken)
    } else if class == "BertForSequenceClassification" {
        Some(Pooling::Pooler)
    } else {
        None
    };
    if expected != Some(model.pooling) {
        return Err(Error::Unsupported {
            what: "export",
            detail: format!(
                "{class} pools {}, this classifier pools {:?}: a merged checkpoint would predict \
                 differently (keep the PEFT adapter)",
                expected.map_or("with its own two-layer head".into(), |p| format!("{p:?}")),
                model.pooling
            ),
        });
    }
    let num_labels = model.num_labels();
    if labels.len() != num_labels {
        return Err(Error::ShapeMismatch {
            name: "labels".into(),
            expected: vec![num_labels],
            actual: vec![labels.len()],
        });
    }
    if base_dir.is_file() {
        return Err(Error::Unsupported {
            what: "export",
            detail: format!(
                "from the GGUF file {}: export needs the base as a safetensors folder",
                base_dir.display()
            ),
        });
    }
    let ckpt = Checkpoint::open(base_dir)?;

    // Merged weights of every adapted linear, by module path.
    let mut merged_model = model.clone();
    let mut merged = BTreeMap::new();
    merged_model
        .backbone
        .visit_linears("", &mut |path, linear| {
            if linear.adapter.is_some() {
                linear.merge()?;
                merged.insert(
                    format!("{path}.weight"),
                    f32_values(linear.base.weight_out_in())?,
                );
            }
            Ok(())
        })?;

    let merged_count = merged.len();
    // The base's tensors under the task model's prefix, merged where adapted; the base's
    // own heads (lm_head, BERT's pre-training heads) are left out.
    let task_prefix = backbone.task_prefix();
    let mut tensors = F32Tensors::new();
    let names: Vec<String> = ckpt.names().map(str::to_string).collect();
    for name in &names {
        let bare = name.strip_prefix(task_prefix).unwrap_or(name);
        if bare.starts_with("lm_head.") || bare.starts_with("cls.") {
            continue;
        }
        let value = match merged.remove(bare) {
            // A base folder other than the one the model was loaded from would mix two
            // models' weights: the shapes at least must agree.
            Some(v) => match ckpt.shape(name) {
                Some(shape) if shape != v.0 => {
                    return Err(Error::ShapeMismatch {
                        name: name.clone(),
                        expected: v.0,
                        actual: shape,
                    });
                }
                _ => v,
            },
            None => match ckpt.read_f32(name) {
                Ok((values, shape)) => (shape, values),
                // Integer buffers (BERT's `position_ids`) are rebuilt by transformers.
                Err(Error::UnsupportedDtype { .. }) => continue,
                Err(e) => return Err(e),
            },
        };
        tensors.insert(format!("{task_prefix}{bare}"), value);
    }
    if let Some(missing) = merged.keys().next() {
        return Err(Error::MissingTensor {
            name: missing.clone(),
            path: base_dir.to_path_buf(),
        });
    }
    insert_head(&mut tensors, backbone.head_name(), &model.head)?;
    let weights = serialize_f32(&tensors)?;

    let config_path = base_dir.join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let mut config: Value = serde_json::from_str(&text).map_err(|e| Error::Format {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    if !config.is_object() {
        return Err(Error::Format {
            path: config_path,
            message: "not a JSON object".into(),
        });
    }
    let id2label: serde_json::Map<String, Value> = (0..labels.len())
        .map(|j| (j.to_string(), json!(labels.name(j))))
        .collect();
    let label2id: serde_json::Map<String, Value> = (0..labels.len())
        .map(|j| (labels.name(j).to_string(), json!(j)))
        .collect();
    config["architectures"] = json!([class]);
    config["problem_type"] = json!("multi_label_classification");
    config["id2label"] = Value::Object(id2label);
    config["label2id"] = Value::Object(label2id);
    // The weights are written in f32; a bf16 base's dtype would make transformers load
    // them in bf16 and move the logits.
    config["torch_dtype"] = json!("float32");
    config["dtype"] = json!("float32");
    // The decoder classes find the last token through `pad_token_id`.
    config["pad_token_id"] = json!(backbone.pad_token_id());

    let out = out.as_ref();
    replace_dir(out, |dir| {
        write_atomic(dir.join("model.safetensors"), &weights)?;
        write_atomic(
            dir.join("config.json"),
            serde_json::to_string_pretty(&config)?.as_bytes(),
        )?;
        for file in TOKENIZER_FILES {
            let src = base_dir.join(file);
            if src.exists() {
                let bytes = std::fs::read(&src).map_err(|e| Error::io(&src, e))?;
                write_atomic(dir.join(file), &bytes)?;
            }
        }
        Ok(())
    })?;
    Ok(ExportReport {
        architecture: class.to_string(),
        merged: merged_count,
        tensors: tensors.len(),
    })
}
