//! Llama-family decoders from llama.cpp GGUF files: the architecture config from the
//! metadata, the tensors renamed to Hugging Face names and dequantised, and llama.cpp's
//! q/k row permutation undone, as transformers' GGUF loader does.

use std::path::Path;

use burn::tensor::{Device, Tensor, TensorData};

use super::config::HiddenAct;
use super::llama::{EosTokenId, LINEARS, LlamaConfig, RopeParameters};
use super::source::TensorSource;
use crate::error::{Error, Result};
use crate::io::gguf::{GgufFile, GgufValue};
use crate::lora::{GgufBlocks, PackedWeight};

/// Architectures whose q/k rows llama.cpp's converter permutes for its rotary layout.
const PERMUTED_ARCHS: [&str; 2] = ["llama", "mistral"];

fn format_err(file: &GgufFile, message: String) -> Error {
    Error::Format {
        path: file.path().to_path_buf(),
        message,
    }
}

/// `general.architecture`, checked against the registry.
pub(crate) fn gguf_architecture(file: &GgufFile) -> Result<String> {
    let arch = file
        .meta("general.architecture")
        .and_then(GgufValue::as_str)
        .ok_or_else(|| format_err(file, "metadata `general.architecture` missing".into()))?;
    super::family::gguf_family(arch)?;
    Ok(arch.to_string())
}

impl TryFrom<&GgufFile> for LlamaConfig {
    type Error = Error;

    /// The config transformers derives from a GGUF file's metadata.
    fn try_from(file: &GgufFile) -> Result<Self> {
        let arch = gguf_architecture(file)?;
        let key = |k: &str| format!("{arch}.{k}");
        let int = |k: &str| -> Result<usize> { Ok(file.meta_u64(&key(k))? as usize) };
        let opt_int = |k: &str| file.meta(&key(k)).and_then(GgufValue::as_u64);
        let opt_f = |k: &str| file.meta(&key(k)).and_then(GgufValue::as_f64);
        let heads = int("attention.head_count")?;
        let hidden = int("embedding_length")?;
        if heads == 0 || hidden == 0 {
            return Err(format_err(file, "zero heads or hidden size".into()));
        }
        let embed = file
            .tensors
            .get("token_embd.weight")
            .ok_or_else(|| Error::MissingTensor {
                name: "token_embd.weight".into(),
                path: file.path().to_path_buf(),
            })?;
        let vocab = match opt_int("vocab_size") {
            Some(v) => v as usize,
            None => embed.torch_shape()[0],
        };
        // transformers reads head_dim from rope.dimension_count for llama/mistral only.
        let head_dim = opt_int("attention.key_length").or(match arch.as_str() {
            "llama" | "mistral" => opt_int("rope.dimension_count"),
            _ => None,
        });
        let rope_scaling = match file
            .meta(&key("rope.scaling.type"))
            .and_then(GgufValue::as_str)
        {
            None | Some("none") => None,
            Some("linear") => Some(RopeParameters {
                rope_type: Some("linear".into()),
                factor: opt_f("rope.scaling.factor"),
                ..Default::default()
            }),
            Some(other) => {
                return Err(Error::Unsupported {
                    what: "GGUF rope scaling",
                    detail: format!("`{other}` (none, linear)"),
                });
            }
        };
        if file.tensors.contains_key("rope_freqs.weight") {
            return Err(Error::Unsupported {
                what: "GGUF rope scaling",
                detail: "per-frequency factors (`rope_freqs.weight`, llama3 scaling)".into(),
            });
        }
        let token_id = |k: &str| crate::tokenize::gguf::token_id(file, k);
        LlamaConfig {
            model_type: arch.clone(),
            vocab_size: vocab,
            hidden_size: hidden,
            intermediate_size: int("feed_forward_length")?,
            num_hidden_layers: int("block_count")?,
            num_attention_heads: heads,
            num_key_value_heads: opt_int("attention.head_count_kv").map(|v| v as usize),
            head_dim: head_dim.map(|v| v as usize),
            rms_norm_eps: opt_f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5),
            rope_theta: Some(opt_f("rope.freq_base").unwrap_or(10000.0)),
            rope_scaling,
            rope_parameters: None,
            attention_bias: false,
            tie_word_embeddings: !file.tensors.contains_key("output.weight"),
            pad_token_id: token_id("padding_token_id"),
            eos_token_id: token_id("eos_token_id").map(EosTokenId::One),
            partial_rotary_factor: None,
            // llama.cpp's llama, mistral and qwen graphs are SwiGLU.
            hidden_act: HiddenAct::Silu,
        }
        .checked()
    }
}

/// The GGUF tensor name of a Hugging Face Llama-family parameter name.
fn gguf_name(hf: &str) -> Option<String> {
    match hf {
        "embed_tokens.weight" => return Some("token_embd.weight".into()),
        "norm.weight" => return Some("output_norm.weight".into()),
        "lm_head.weight" => return Some("output.weight".into()),
        _ => {}
    }
    let rest = hf.strip_prefix("layers.")?;
    let (layer, param) = rest.split_once('.')?;
    let (module, kind) = param.rsplit_once('.')?;
    let mapped = match module {
        "input_layernorm" => "attn_norm",
        "post_attention_layernorm" => "ffn_norm",
        "self_attn.q_norm" => "attn_q_norm",
        "self_attn.k_norm" => "attn_k_norm",
        linear => LINEARS.iter().find(|s| s.hf == linear)?.gguf?,
    };
    Some(format!("blk.{layer}.{mapped}.{kind}"))
}

/// Undo llama.cpp's rotary row permutation of a q/k weight (or bias) with `rows` rows of
/// `cols` values (or bytes of blocks): GGUF row `h·2d + i·2 + t` holds Hugging Face row
/// `h·2d + t·d + i`.
fn unpermute_rows<T: Copy + Default>(
    values: &[T],
    rows: usize,
    cols: usize,
    heads: usize,
) -> Vec<T> {
    let half = rows / heads / 2;
    let mut out = vec![T::default(); values.len()];
    for h in 0..heads {
        for i in 0..half {
            for t in 0..2 {
                let src = (h * 2 * half + i * 2 + t) * cols;
                let dst = (h * 2 * half + t * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&values[src..src + cols]);
            }
        }
    }
    out
}

/// A GGUF file seen as a [`TensorSource`] with Hugging Face names.
#[derive(Debug)]
pub struct GgufWeights<'a> {
    file: &'a GgufFile,
    permuted: bool,
    heads: usize,
    kv_heads: usize,
}

impl<'a> GgufWeights<'a> {
    /// Tensors of `file` for a model with `config`.
    pub fn new(file: &'a GgufFile, config: &LlamaConfig) -> Self {
        GgufWeights {
            file,
            permuted: PERMUTED_ARCHS.contains(&config.model_type.as_str()),
            heads: config.num_attention_heads,
            kv_heads: config.kv_heads(),
        }
    }

    fn mapped(&self, name: &str) -> Result<String> {
        gguf_name(name).ok_or_else(|| Error::MissingTensor {
            name: format!("{name} (no GGUF counterpart)"),
            path: self.file.path().to_path_buf(),
        })
    }

    /// The head count whose rotary row permutation llama.cpp applied to `gguf` (a q or k
    /// tensor of a permuted architecture), checked against its `rows`.
    fn permuted_heads(&self, gguf: &str, rows: usize, cols: usize) -> Result<Option<usize>> {
        let heads = if !self.permuted {
            None
        } else if gguf.contains(".attn_q.") {
            Some(self.heads)
        } else if gguf.contains(".attn_k.") {
            Some(self.kv_heads)
        } else {
            None
        };
        match heads {
            Some(h) if !rows.is_multiple_of(2 * h) => Err(Error::ShapeMismatch {
                name: gguf.to_string(),
                expected: vec![2 * h, cols],
                actual: vec![rows, cols],
            }),
            _ => Ok(heads),
        }
    }
}

impl TensorSource for GgufWeights<'_> {
    fn origin(&self) -> &Path {
        self.file.path()
    }

    fn contains(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|n| self.file.tensors.contains_key(&n))
    }

    fn tensor<const D: usize>(
        &self,
        name: &str,
        shape: [usize; D],
        device: &Device,
    ) -> Result<Tensor<D>> {
        let gguf = self.mapped(name)?;
        let (mut values, actual) = self.file.dequantize(&gguf)?;
        if actual != shape {
            return Err(Error::ShapeMismatch {
                name: gguf,
                expected: shape.to_vec(),
                actual,
            });
        }
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::InvalidState(format!(
                "{gguf} in {}: value {i} dequantises to {}: a block is corrupt",
                self.file.path().display(),
                values[i]
            )));
        }
        let rows = shape[0];
        let cols = values.len() / rows.max(1);
        if let Some(heads) = self.permuted_heads(&gguf, rows, cols)? {
            values = unpermute_rows(&values, rows, cols, heads);
        }
        Ok(Tensor::from_data(TensorData::new(values, shape), device))
    }

    fn stored_blocks(&self, name: &str, shape: [usize; 2]) -> Result<Option<PackedWeight>> {
        let gguf = self.mapped(name)?;
        let (ty, bytes, actual) = self.file.raw(&gguf)?;
        if actual != shape {
            return Err(Error::ShapeMismatch {
                name: gguf,
                expected: shape.to_vec(),
                actual,
            });
        }
        if !ty.is_quantized() {
            return Ok(None);
        }
        let [rows, cols] = shape;
        let row_bytes = bytes.len() / rows;
        let bytes = match self.permuted_heads(&gguf, rows, cols)? {
            Some(heads) => unpermute_rows(bytes, rows, row_bytes, heads),
            None => bytes.to_vec(),
        };
        Ok(Some(PackedWeight::Gguf(GgufBlocks::new(
            ty, bytes, rows, cols,
        )?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_llama_cpp() {
        assert_eq!(
            gguf_name("layers.3.self_attn.q_proj.weight").as_deref(),
            Some("blk.3.attn_q.weight")
        );
        assert_eq!(
            gguf_name("layers.0.post_attention_layernorm.weight").as_deref(),
            Some("blk.0.ffn_norm.weight")
        );
        assert_eq!(gguf_name("layers.0.mystery.weight"), None);
    }

    #[test]
    fn unpermute_inverts_llama_cpp_permute() {
        // llama.cpp: reshape(n, 2, d, cols).swapaxes(1, 2); 2 heads, d = 2, 1 column.
        let hf: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let (heads, half) = (2, 2);
        let mut gguf = vec![0f32; 8];
        for h in 0..heads {
            for t in 0..2 {
                for i in 0..half {
                    gguf[h * 4 + i * 2 + t] = hf[h * 4 + t * half + i];
                }
            }
        }
        assert_eq!(gguf, vec![0., 2., 1., 3., 4., 6., 5., 7.]);
        assert_eq!(unpermute_rows(&gguf, 8, 1, heads), hf);
    }
}
