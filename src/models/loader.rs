//! The one entry for model files: [`load`] finds the family of a folder or GGUF file in the
//! registry and builds it with [`LoadOptions`]; each family's `from_source` takes the same
//! options.

use std::path::{Path, PathBuf};

use burn::tensor::Device;

use super::{AnyBackbone, ModelFormat, family};
use crate::defaults;
use crate::error::{Error, Result};
use crate::io::gguf::GgufFile;
use crate::lora::{BaseDtype, Quantization};
use crate::tokenize::TextTokenizer;

/// How to build a backbone: truncation length, and how the frozen weights are stored
/// (packed, or dense in f32/f16/bf16).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct LoadOptions {
    /// The longest sequence in tokens: the tokenizer truncates to it, and a model whose
    /// position table is shorter is refused before any data is tokenised.
    pub max_len: usize,
    /// Every linear's frozen weight packed as it is read (QLoRA's base: NF4;
    /// [`Quantization::Keep`]: a GGUF file's own blocks), so the float model is never
    /// whole in memory; `None`: dense.
    pub packing: Option<Quantization>,
    /// How the dense frozen linear weights and the embedding tables are stored. A
    /// half-precision weight is read into its dtype tensor by tensor (a bf16 checkpoint
    /// loaded as bf16 is never widened to f32 on the way); norms and biases (a few
    /// thousand values) stay f32, and every layer computes in f32.
    pub dtype: BaseDtype,
}

impl Default for LoadOptions {
    /// [`defaults::MAX_LEN`] tokens, dense f32 linears.
    fn default() -> Self {
        LoadOptions::new(defaults::MAX_LEN)
    }
}

impl LoadOptions {
    /// Dense f32 linears, sequences of up to `max_len` tokens.
    pub fn new(max_len: usize) -> Self {
        LoadOptions {
            max_len,
            packing: None,
            dtype: BaseDtype::F32,
        }
    }

    /// With the frozen linears packed as `packing` (`None`: dense).
    pub fn packing(mut self, packing: Option<Quantization>) -> Self {
        self.packing = packing;
        self
    }

    /// With dense frozen linears and embedding tables stored as `dtype`.
    pub fn dtype(mut self, dtype: BaseDtype) -> Self {
        self.dtype = dtype;
        self
    }

    /// Refuse what cannot be built, before any file is read: no sequence length, a
    /// half-precision packed base (packing has its own storage), a dtype `device` cannot
    /// hold.
    pub fn check(&self, device: &Device) -> Result<()> {
        if self.max_len == 0 {
            return Err(Error::InputOutOfRange("max_len must be at least 1".into()));
        }
        self.check_storage()?;
        if self.dtype != BaseDtype::F32 && !device.supports_dtype(self.dtype.dtype()) {
            return Err(Error::Unsupported {
                what: "base dtype",
                detail: format!("{} on {device:?}, which cannot store it", self.dtype),
            });
        }
        Ok(())
    }

    /// The part of [`check`](LoadOptions::check) that needs no device: a half-precision
    /// base cannot also be packed (packing has its own storage). Jobs and tools check
    /// their flags with it before they know the device.
    pub fn check_storage(&self) -> Result<()> {
        match self.packing {
            Some(q) if self.dtype != BaseDtype::F32 => Err(Error::Unsupported {
                what: "base dtype",
                detail: format!("{} with a packed ({q}) base", self.dtype),
            }),
            _ => Ok(()),
        }
    }
}

/// A loaded pretrained model: the backbone (without adapters), its tokenizer and where
/// it came from.
#[derive(Debug)]
pub struct Pretrained {
    /// The backbone, frozen, on the device it was loaded to.
    pub backbone: AnyBackbone,
    /// Its tokenizer, truncating to [`LoadOptions::max_len`].
    pub tokenizer: TextTokenizer,
    /// The local folder or GGUF file (a model id resolves to its download folder).
    pub path: PathBuf,
    /// What the path held.
    pub format: ModelFormat,
}

/// Load a pretrained model and its tokenizer from a folder (`config.json` + safetensors +
/// `tokenizer.json`), a GGUF file, or, with the `hub` feature, a Hugging Face model id; the
/// family comes from the files (the registry, [`FAMILIES`](super::FAMILIES)).
pub fn load(
    path_or_id: impl AsRef<Path>,
    options: &LoadOptions,
    device: &Device,
) -> Result<Pretrained> {
    options.check(device)?;
    let path = super::resolve_model(path_or_id)?;
    let format = ModelFormat::detect(&path)?;
    // The tokenizer first: a bad one fails before the weights are read.
    let tokenizer = format.tokenizer(&path, options.max_len)?;
    let backbone = match format {
        ModelFormat::Gguf => {
            let file = GgufFile::open(&path)?;
            let arch = super::llama_gguf::gguf_architecture(&file)?;
            let load = family::gguf_family(&arch)?
                .load_gguf
                .ok_or_else(|| Error::Unsupported {
                    what: "GGUF architecture",
                    detail: format!("`{arch}` has no GGUF loader"),
                })?;
            load(&file, options, device)?
        }
        ModelFormat::Encoder | ModelFormat::Decoder => {
            let (family, _) = family::model_type(&super::pretrained::config_model_type(&path)?)?;
            (family.load_folder)(&path, options, device)?
        }
    };
    Ok(Pretrained {
        backbone,
        tokenizer,
        path,
        format,
    })
}
