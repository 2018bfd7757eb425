//! Tokenisation through the `tokenizers` crate, with truncation and batch padding set
//! here (a `tokenizer.json` may ship fixed padding/truncation, as all-MiniLM-L6-v2's
//! does at 128: those are overridden).

use std::path::Path;

use tokenizers::{
    EncodeInput, PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationParams,
    TruncationStrategy,
};

use crate::error::{Error, Result};

pub mod gguf;
pub mod template;

pub use template::PromptTemplate;

/// A padded batch of encodings, row-major `[batch, seq]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenBatch {
    /// Token ids.
    pub ids: Vec<u32>,
    /// 1 = token, 0 = padding.
    pub attention_mask: Vec<u32>,
    /// Segment ids.
    pub type_ids: Vec<u32>,
    /// Rows.
    pub batch: usize,
    /// Columns (longest row after truncation).
    pub seq: usize,
}

/// A Hugging Face tokenizer with our truncation length and dynamic (longest-in-batch) padding.
#[derive(Debug, Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_len: usize,
    pad_id: u32,
}

/// The padding id a model uses, as transformers decides it: its own pad id, else its eos id
/// (with a warning naming `origin`); `None` when it has neither.
pub(crate) fn pad_or_eos(pad: Option<u32>, eos: Option<u32>, origin: &Path) -> Option<u32> {
    match (pad, eos) {
        (Some(pad), _) => Some(pad),
        (None, Some(eos)) => {
            eprintln!(
                "warning: {} names no padding token; padding with eos ({eos})",
                origin.display()
            );
            Some(eos)
        }
        (None, None) => None,
    }
}

fn tok_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Load `tokenizer.json`; sequences are truncated to `max_len` tokens (specials included).
    pub fn from_file(path: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let path = path.as_ref();
        if !path.exists() {
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "tokenizer.json not found"),
            ));
        }
        let inner = Tokenizer::from_file(path).map_err(|e| Error::Format {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        Self::from_tokenizer(inner, max_len)
    }

    /// The tokenizer described by a llama.cpp GGUF file's metadata (see [`gguf`]).
    pub fn from_gguf(path: impl AsRef<Path>, max_len: usize) -> Result<Self> {
        let file = crate::io::gguf::GgufFile::open(path)?;
        let (inner, pad_id) = gguf::tokenizer_from_gguf(&file)?;
        Self::with_pad(inner, pad_id, max_len)
    }

    /// Wrap an already-built tokenizer; the padding id is the tokenizer's own, else the
    /// first of `[PAD]`, `<pad>`, `<|endoftext|>`, `<|im_end|>`, `</s>` it knows.
    pub fn from_tokenizer(inner: Tokenizer, max_len: usize) -> Result<Self> {
        let pad_id = match inner.get_padding() {
            Some(p) => p.pad_id,
            None => ["[PAD]", "<pad>", "<|endoftext|>", "<|im_end|>", "</s>"]
                .iter()
                .find_map(|t| inner.token_to_id(t))
                .ok_or_else(|| {
                    Error::Tokenizer("the tokenizer has no padding token; name one".into())
                })?,
        };
        Self::with_pad(inner, pad_id, max_len)
    }

    /// Wrap a tokenizer and pad with `pad_id`.
    pub fn with_pad(mut inner: Tokenizer, pad_id: u32, max_len: usize) -> Result<Self> {
        if max_len == 0 {
            return Err(Error::Tokenizer("max_len must be >= 1".into()));
        }
        let pad_token = inner.id_to_token(pad_id).ok_or_else(|| {
            Error::Tokenizer(format!("padding id {pad_id} is not in the vocabulary"))
        })?;
        inner
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                ..Default::default()
            }))
            .map_err(tok_err)?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token,
        }));
        Ok(TextTokenizer {
            inner,
            max_len,
            pad_id,
        })
    }

    /// The same tokenizer truncating to `max_len` instead (an adapter trained at
    /// another length).
    pub fn with_max_len(&self, max_len: usize) -> Result<Self> {
        Self::with_pad(self.inner.clone(), self.pad_id, max_len)
    }

    /// The truncation length.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// The padding id.
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The wrapped tokenizer.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// Ids of one text with special tokens, truncated, unpadded.
    pub fn encode_ids(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, true).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// Ids of `text` rendered through `template`. When the prompt would be cut at
    /// `max_len`, the text is shortened instead, so the template's ending (where a
    /// decoder's pooled last token sits) survives.
    pub fn encode_with_template(&self, template: &PromptTemplate, text: &str) -> Result<Vec<u32>> {
        let ids = self.encode_ids(&template.render(text))?;
        if ids.len() < self.max_len || template.is_identity() {
            return Ok(ids);
        }
        let overhead = self.encode_ids(&template.render(""))?.len();
        let text_ids = self.inner.encode(text, false).map_err(tok_err)?;
        let text_ids = text_ids.get_ids();
        let mut budget = self.max_len.saturating_sub(overhead).min(text_ids.len());
        // Tokens merge differently across the text/template seams, so the re-encoded prompt
        // can still be a token or two too long (then cut at its end): shrink until it fits.
        loop {
            let shortened = self
                .inner
                .decode(&text_ids[..budget], false)
                .map_err(tok_err)?;
            let ids = self.encode_ids(&template.render(&shortened))?;
            if ids.len() < self.max_len || budget == 0 {
                return Ok(ids);
            }
            budget -= 1;
        }
    }

    /// Encode texts into one padded batch.
    pub fn encode_batch(&self, texts: &[&str]) -> Result<TokenBatch> {
        let inputs: Vec<EncodeInput> = texts.iter().map(|t| (*t).into()).collect();
        self.batch(inputs)
    }

    /// Encode `(first, second)` pairs (BERT sentence pairs: segment ids 0 then 1).
    pub fn encode_pairs(&self, pairs: &[(&str, &str)]) -> Result<TokenBatch> {
        let inputs: Vec<EncodeInput> = pairs.iter().map(|&(a, b)| (a, b).into()).collect();
        self.batch(inputs)
    }

    fn batch(&self, inputs: Vec<EncodeInput>) -> Result<TokenBatch> {
        if inputs.is_empty() {
            return Err(Error::Tokenizer("empty batch".into()));
        }
        let encodings = self.inner.encode_batch(inputs, true).map_err(tok_err)?;
        let batch = encodings.len();
        let seq = encodings.first().map_or(0, |e| e.get_ids().len());
        let mut out = TokenBatch {
            ids: Vec::with_capacity(batch * seq),
            attention_mask: Vec::with_capacity(batch * seq),
            type_ids: Vec::with_capacity(batch * seq),
            batch,
            seq,
        };
        for e in &encodings {
            out.ids.extend_from_slice(e.get_ids());
            out.attention_mask.extend_from_slice(e.get_attention_mask());
            out.type_ids.extend_from_slice(e.get_type_ids());
        }
        Ok(out)
    }
}
