//! What a `--model` path holds: a BERT-family folder, a Llama-family folder, or a
//! llama.cpp GGUF file; and the tokenizer that goes with it.

use std::path::{Path, PathBuf};

use super::family;
use crate::error::{Error, Result};
use crate::tokenize::TextTokenizer;

/// The kind of pretrained model at a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ModelFormat {
    /// A BERT-family folder (`config.json` + safetensors + `tokenizer.json`).
    Encoder,
    /// A Llama-family folder (`config.json` + safetensors + `tokenizer.json`).
    Decoder,
    /// A llama.cpp GGUF file (weights and tokenizer in one file).
    Gguf,
}

/// Where a `--model` argument points: the path itself when it exists; otherwise, with the
/// `hub` feature, the folder a Hugging Face model id (`owner/name`) downloads to
/// (`io::hub`). Without the feature a missing path is an error.
pub fn resolve_model(arg: impl AsRef<Path>) -> Result<PathBuf> {
    let path = arg.as_ref();
    if path.exists() {
        return Ok(path.to_path_buf());
    }
    #[cfg(feature = "hub")]
    if let Some(id) = path.to_str() {
        return crate::io::hub::HubRepo::new(id)?.download_model();
    }
    Err(Error::io(
        path,
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no such model file or folder (model ids need the `hub` feature)",
        ),
    ))
}

impl ModelFormat {
    /// Look at `path`: a file starting with the GGUF magic, or a folder whose
    /// `config.json` names a `model_type` of the registry ([`FAMILIES`](super::FAMILIES)).
    pub fn detect(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_file() {
            let mut magic = [0u8; 4];
            let read = std::fs::File::open(path)
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic));
            return match read {
                Ok(()) if &magic == b"GGUF" => Ok(ModelFormat::Gguf),
                Ok(()) => Err(Error::Format {
                    path: path.to_path_buf(),
                    message: "not a GGUF file (a model is a GGUF file or a folder)".into(),
                }),
                Err(e) => Err(Error::io(path, e)),
            };
        }
        let (family, _) = family::model_type(&config_model_type(path)?)?;
        Ok(if family.decoder {
            ModelFormat::Decoder
        } else {
            ModelFormat::Encoder
        })
    }

    /// Whether the model is a decoder (last-token pooling, prompt templates).
    pub fn is_decoder(self) -> bool {
        self != ModelFormat::Encoder
    }

    /// The model's tokenizer, truncating to `max_len`.
    pub fn tokenizer(self, path: impl AsRef<Path>, max_len: usize) -> Result<TextTokenizer> {
        let path = path.as_ref();
        match self {
            ModelFormat::Gguf => TextTokenizer::from_gguf(path, max_len),
            _ => TextTokenizer::from_file(path.join("tokenizer.json"), max_len),
        }
    }
}

/// The `model_type` of the `config.json` in folder `dir`.
pub(crate) fn config_model_type(dir: &Path) -> Result<String> {
    let config = dir.join("config.json");
    let text = std::fs::read_to_string(&config).map_err(|e| Error::io(&config, e))?;
    #[derive(serde::Deserialize)]
    struct ModelType {
        model_type: String,
    }
    let ty: ModelType = serde_json::from_str(&text).map_err(|e| Error::Format {
        path: config.clone(),
        message: e.to_string(),
    })?;
    Ok(ty.model_type)
}
