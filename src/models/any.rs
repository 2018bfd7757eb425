//! One type for every supported family: a program written against [`AnyBackbone`] serves
//! BERT-family folders, Llama-family folders and GGUF files without a dispatch of its own.

use burn::module::Module;
use burn::tensor::Tensor;

use super::{Backbone, BertModel, EncoderInput, LlamaModel};
use crate::error::{Error, Result};
use crate::lora::{LinearReader, LinearVisitor, LoraTargets, ModuleSelector};

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

impl TryFrom<AnyBackbone> for BertModel {
    type Error = Error;

    /// The BERT-family model inside, or an error naming the family it is.
    fn try_from(backbone: AnyBackbone) -> Result<Self> {
        match backbone {
            AnyBackbone::Bert(m) => Ok(m),
            other => Err(wrong_family(&other, "BERT-family")),
        }
    }
}

impl TryFrom<AnyBackbone> for LlamaModel {
    type Error = Error;

    /// The Llama-family model inside, or an error naming the family it is.
    fn try_from(backbone: AnyBackbone) -> Result<Self> {
        match backbone {
            AnyBackbone::Llama(m) => Ok(m),
            other => Err(wrong_family(&other, "Llama-family")),
        }
    }
}

fn wrong_family(backbone: &AnyBackbone, wanted: &str) -> Error {
    Error::Unsupported {
        what: "model_type",
        detail: format!(
            "`{}` where a {wanted} model was asked for",
            backbone.model_type()
        ),
    }
}
