//! The family registry: every `model_type` (and GGUF architecture) this crate loads, the
//! family that computes it, and the facts a program needs before a model exists. Format
//! detection, config parsing, loading, PEFT's default LoRA targets and transformers' class
//! names all read [`FAMILIES`]; nothing else lists model types.
//!
//! Adding a family: one file (its config, its model with `from_source`, its [`Family`]),
//! one line in [`FAMILIES`] and, when it brings a new model type (not a variant of an
//! existing one, as GLM is of Llama), one variant of [`AnyBackbone`].

use std::path::Path;

use burn::tensor::Device;

use super::loader::LoadOptions;
use super::{AnyBackbone, bert, glm, llama};
use crate::error::{Error, Result};
use crate::io::gguf::GgufFile;

/// One Hugging Face `model_type` of a family.
#[derive(Debug)]
pub struct ModelType {
    /// The `config.json` value (`bert`, `qwen2`, ...).
    pub name: &'static str,
    /// transformers' sequence-classification class (`BertForSequenceClassification`).
    pub task_class: &'static str,
    /// Where that class keeps the backbone's weights (`bert.`, `model.`), as PEFT `SEQ_CLS`
    /// adapters name them.
    pub task_prefix: &'static str,
    /// PEFT's default `target_modules` (`TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING`).
    pub default_targets: &'static [&'static str],
}

/// Builds a family's backbone from a checkpoint folder (`config.json` + safetensors).
pub(crate) type FolderLoader = fn(&Path, &LoadOptions, &Device) -> Result<AnyBackbone>;
/// Builds a family's backbone from a GGUF file.
pub(crate) type GgufLoader = fn(&GgufFile, &LoadOptions, &Device) -> Result<AnyBackbone>;

/// A family: model types computed by one model, and how to build it.
#[derive(Debug)]
pub struct Family {
    /// Short name (`bert`, `llama`, `glm`).
    pub name: &'static str,
    /// A decoder (causal attention, last-token pooling, a bias-free `score` head) or an
    /// encoder.
    pub decoder: bool,
    /// Its `config.json` model types.
    pub model_types: &'static [ModelType],
    /// llama.cpp's `general.architecture` values it reads from GGUF files.
    pub gguf_architectures: &'static [&'static str],
    /// transformers' config defaults of the family that its config parser's own defaults
    /// do not give (GLM's differ from Llama's), applied to keys `config.json` leaves out.
    pub(crate) config_defaults: fn() -> Vec<(&'static str, serde_json::Value)>,
    pub(crate) load_folder: FolderLoader,
    pub(crate) load_gguf: Option<GgufLoader>,
}

impl Family {
    /// The name transformers gives the classification head: `score` on decoders,
    /// `classifier` on encoders.
    pub fn head_name(&self) -> &'static str {
        if self.decoder { "score" } else { "classifier" }
    }
}

/// Every family this crate loads.
pub static FAMILIES: [&Family; 3] = [&bert::FAMILY, &llama::FAMILY, &glm::FAMILY];

/// Every supported `model_type`, in registry order.
pub fn supported_model_types() -> impl Iterator<Item = &'static str> {
    FAMILIES
        .iter()
        .flat_map(|f| f.model_types.iter().map(|t| t.name))
}

/// The family and entry of `model_type`; an unknown one is an error listing the supported.
pub fn model_type(name: &str) -> Result<(&'static Family, &'static ModelType)> {
    FAMILIES
        .iter()
        .find_map(|f| {
            f.model_types
                .iter()
                .find(|t| t.name == name)
                .map(|t| (*f, t))
        })
        .ok_or_else(|| Error::Unsupported {
            what: "model_type",
            detail: format!(
                "`{name}` (supported: {})",
                supported_model_types().collect::<Vec<_>>().join(", ")
            ),
        })
}

/// The family that reads GGUF architecture `arch`.
pub fn gguf_family(arch: &str) -> Result<&'static Family> {
    FAMILIES
        .iter()
        .find(|f| f.gguf_architectures.contains(&arch))
        .copied()
        .ok_or_else(|| {
            let known: Vec<&str> = FAMILIES
                .iter()
                .flat_map(|f| f.gguf_architectures.iter().copied())
                .collect();
            Error::Unsupported {
                what: "GGUF architecture",
                detail: format!("`{arch}` (GGUF decoders: {})", known.join(", ")),
            }
        })
}

/// The registry entry of a loaded model's `model_type`: a model built by `from_source` has
/// a registered one; a hand-edited one falls back to `family`'s first.
pub(crate) fn entry_or_first(family: &'static Family, name: &str) -> &'static ModelType {
    family
        .model_types
        .iter()
        .find(|t| t.name == name)
        .unwrap_or(&family.model_types[0])
}

/// Parse a `config.json` text into the family config `C`, after filling in the defaults
/// of the family its `model_type` belongs to; `decoder` says which kind `C` describes (a
/// model type of the other kind is refused, naming it).
pub(crate) fn parse_config<C: serde::de::DeserializeOwned>(text: &str, decoder: bool) -> Result<C> {
    let mut value: serde_json::Value = serde_json::from_str(text)?;
    let name = value
        .get("model_type")
        .and_then(|t| t.as_str())
        .unwrap_or_default()
        .to_string();
    let (family, _) = model_type(&name)?;
    if family.decoder != decoder {
        let want = if decoder { "a decoder" } else { "an encoder" };
        return Err(Error::Unsupported {
            what: "model_type",
            detail: format!("`{name}` is not {want}, which this config describes"),
        });
    }
    if let Some(fields) = value.as_object_mut() {
        for (key, default) in (family.config_defaults)() {
            fields.entry(key).or_insert(default);
        }
    }
    Ok(serde_json::from_value(value)?)
}

/// [`parse_config`] on a file, errors naming it.
pub(crate) fn read_config<C: serde::de::DeserializeOwned>(path: &Path, decoder: bool) -> Result<C> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_config(&text, decoder).map_err(|e| match e {
        Error::Json(j) => Error::Format {
            path: path.to_path_buf(),
            message: j.to_string(),
        },
        other => other,
    })
}

/// No defaults beyond the config parser's own.
pub(crate) fn no_defaults() -> Vec<(&'static str, serde_json::Value)> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_model_type_and_architecture_belongs_to_one_family() {
        let types: Vec<&str> = supported_model_types().collect();
        let mut unique = types.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), types.len(), "a model_type in two families");
        for arch in FAMILIES.iter().flat_map(|f| f.gguf_architectures) {
            let owners = FAMILIES
                .iter()
                .filter(|f| f.gguf_architectures.contains(arch))
                .count();
            assert_eq!(owners, 1, "GGUF architecture {arch}");
        }
    }

    #[test]
    fn unknown_names_are_refused_by_name() {
        let err = model_type("gpt2").unwrap_err().to_string();
        assert!(err.contains("`gpt2`") && err.contains("bert") && err.contains("glm4"));
        let err = gguf_family("falcon").unwrap_err().to_string();
        assert!(err.contains("`falcon`") && err.contains("qwen2"), "{err}");
    }
}
