//! One type for every supported family, and the loader that tells them apart: a program
//! written against [`AnyBackbone`] serves BERT-family folders, Llama-family folders and
//! GGUF files without a dispatch of its own.

use std::path::{Path, PathBuf};

use burn::module::Module;
use burn::tensor::{Device, Tensor};

use super::{Backbone, BertModel, EncoderInput, LlamaModel, ModelFormat, check_max_len};
use crate::error::Result;
use crate::lora::{LinearReader, LinearVisitor, LoraTargets, ModuleSelector, Quantization};
use crate::tokenize::TextTokenizer;

/// A pretrained backbone of any supported family.
// One value per program, moved rarely: the variants' size difference (a few hundred bytes
// of handles; the weights live on the device) costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Module, Debug)]
#[non_exhaustive]
pub enum AnyBackbone {
    /// BERT, RoBERTa, DistilBERT.
    Bert(BertModel),
    /// Llama, Mistral, Qwen2, Qwen3, GLM, GLM-4 (safetensors), or a llama.cpp GGUF file.
    Llama(LlamaModel),
}

/// Run `$body` with `$m` bound to the family's model.
macro_rules! each_family {
    ($value:expr, $m:ident => $body:expr) => {
        match $value {
            AnyBackbone::Bert($m) => $body,
            AnyBackbone::Llama($m) => $body,
        }
    };
}

impl Backbone for AnyBackbone {
    fn forward(&self, input: &EncoderInput) -> Tensor<3> {
        each_family!(self, m => m.forward(input))
    }

    fn hidden_size(&self) -> usize {
        each_family!(self, m => m.hidden_size())
    }

    fn pad_token_id(&self) -> u32 {
        each_family!(self, m => m.pad_token_id())
    }

    fn model_type(&self) -> &str {
        each_family!(self, m => m.model_type())
    }

    fn is_decoder(&self) -> bool {
        each_family!(self, m => m.is_decoder())
    }

    fn task_prefix(&self) -> &'static str {
        each_family!(self, m => m.task_prefix())
    }

    fn task_class(&self) -> &'static str {
        each_family!(self, m => m.task_class())
    }

    fn head_name(&self) -> &'static str {
        each_family!(self, m => m.head_name())
    }

    fn vocab_size(&self) -> usize {
        each_family!(self, m => m.vocab_size())
    }

    fn max_positions(&self) -> Option<usize> {
        each_family!(self, m => m.max_positions())
    }

    fn has_pooler(&self) -> bool {
        each_family!(self, m => m.has_pooler())
    }

    fn pooler_output(&self, hidden: Tensor<3>) -> Option<Tensor<2>> {
        each_family!(self, m => m.pooler_output(hidden))
    }
}

impl LoraTargets for AnyBackbone {
    fn visit_linears(&mut self, prefix: &str, visitor: &mut LinearVisitor<'_>) -> Result<()> {
        each_family!(self, m => m.visit_linears(prefix, visitor))
    }

    fn read_linears(&self, prefix: &str, reader: &mut LinearReader<'_>) -> Result<()> {
        each_family!(self, m => m.read_linears(prefix, reader))
    }

    fn default_targets(&self) -> ModuleSelector {
        each_family!(self, m => m.default_targets())
    }
}

/// A loaded pretrained model: the backbone (without adapters), its tokenizer and where
/// it came from.
#[derive(Debug)]
pub struct Pretrained {
    /// The backbone, frozen, on the device it was loaded to.
    pub backbone: AnyBackbone,
    /// Its tokenizer, truncating to the `max_len` given to [`load`].
    pub tokenizer: TextTokenizer,
    /// The local folder or GGUF file (a model id resolves to its download folder).
    pub path: PathBuf,
    /// What the path held.
    pub format: ModelFormat,
}

/// Load a pretrained model from a folder (`config.json` + safetensors + `tokenizer.json`),
/// a GGUF file, or, with the `hub` feature, a Hugging Face model id; the family comes
/// from the files. `max_len` is the truncation length: one past the model's position
/// table is an error here, before any data is tokenised.
pub fn load(path_or_id: impl AsRef<Path>, max_len: usize, device: &Device) -> Result<Pretrained> {
    load_packed(path_or_id, max_len, None, device)
}

/// [`load`] with every linear's frozen weight packed as it is read (QLoRA's base: NF4;
/// [`Quantization::Keep`]: a GGUF file's own blocks): the float model is never whole in
/// memory.
pub fn load_packed(
    path_or_id: impl AsRef<Path>,
    max_len: usize,
    packing: Option<Quantization>,
    device: &Device,
) -> Result<Pretrained> {
    let path = super::resolve_model(path_or_id)?;
    let format = ModelFormat::detect(&path)?;
    // The tokenizer first: a bad one fails before the weights are read.
    let tokenizer = format.tokenizer(&path, max_len)?;
    let backbone = match format {
        ModelFormat::Encoder => AnyBackbone::Bert(BertModel::load_packed(&path, packing, device)?),
        ModelFormat::Decoder => {
            AnyBackbone::Llama(LlamaModel::load_packed(&path, packing, device)?)
        }
        ModelFormat::Gguf => {
            AnyBackbone::Llama(LlamaModel::load_gguf_packed(&path, packing, device)?)
        }
    };
    check_max_len(&backbone, max_len)?;
    Ok(Pretrained {
        backbone,
        tokenizer,
        path,
        format,
    })
}
