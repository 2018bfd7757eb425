//! A `tokenizers::Tokenizer` rebuilt from a GGUF file's tokenizer metadata, the way
//! transformers' GGUF loader rebuilds it: byte-level BPE (`tokenizer.ggml.model = gpt2`)
//! over the file's vocabulary and merges; the split regex named by `tokenizer.ggml.pre`
//! where transformers knows one (otherwise GPT-2's byte-level split, which is what
//! transformers uses for `smollm`); control tokens as special tokens, user-defined
//! tokens as added tokens.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use serde_json::{Value, json};
use tokenizers::Tokenizer;

use crate::error::{Error, Result};
use crate::io::gguf::{GgufFile, GgufValue};

/// llama.cpp token types (`tokenizer.ggml.token_type`).
const CONTROL: u64 = 3;
const USER_DEFINED: u64 = 4;

/// Llama-3-style split (also `llama-bpe`, `smaug-bpe`, `dbrx`, …).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2-style split: digits one by one.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn split_regex(pre: &str) -> Option<&'static str> {
    match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "smaug-bpe" | "dbrx" | "pixtral" => {
            Some(LLAMA3_SPLIT)
        }
        "qwen2" | "deepseek-r1-qwen" | "megrez" => Some(QWEN2_SPLIT),
        _ => None,
    }
}

/// GPT-2's reversible byte → printable character table.
fn byte_alphabet() -> [char; 256] {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut table = ['\0'; 256];
    let mut extra = 0;
    for b in 0..256u32 {
        table[b as usize] = if printable(b) {
            char::from_u32(b).unwrap_or('\0')
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap_or('\0')
        };
    }
    table
}

fn strings(file: &GgufFile, key: &str) -> Result<Vec<String>> {
    let values = file
        .meta(key)
        .and_then(GgufValue::as_array)
        .ok_or_else(|| Error::Format {
            path: file.path().to_path_buf(),
            message: format!("metadata `{key}` missing or not an array"),
        })?;
    values
        .iter()
        .map(|v| {
            v.as_str().map(str::to_string).ok_or_else(|| Error::Format {
                path: file.path().to_path_buf(),
                message: format!("metadata `{key}` holds a non-string"),
            })
        })
        .collect()
}

/// A special-token id from `tokenizer.ggml.<key>` (`bos_token_id`, `padding_token_id`, …).
pub(crate) fn token_id(file: &GgufFile, key: &str) -> Option<u32> {
    file.meta(&format!("tokenizer.ggml.{key}"))
        .and_then(GgufValue::as_u64)
        .map(|v| v as u32)
}

/// The tokenizer a GGUF file describes, plus its padding id (the file's, else its eos
/// with a warning on stderr).
pub fn tokenizer_from_gguf(file: &GgufFile) -> Result<(Tokenizer, u32)> {
    let model = file
        .meta("tokenizer.ggml.model")
        .and_then(GgufValue::as_str)
        .unwrap_or("<missing>");
    if model != "gpt2" {
        return Err(Error::Unsupported {
            what: "GGUF tokenizer",
            detail: format!("tokenizer.ggml.model `{model}` (byte-level BPE `gpt2`)"),
        });
    }
    let tokens = strings(file, "tokenizer.ggml.tokens")?;
    let merges = strings(file, "tokenizer.ggml.merges")?;
    let types: Vec<u64> = file
        .meta("tokenizer.ggml.token_type")
        .and_then(GgufValue::as_array)
        .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
        .unwrap_or_default();

    let alphabet = byte_alphabet();
    let spelled: HashSet<char> = alphabet.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| spelled.contains(&c));
    let mut vocab = serde_json::Map::with_capacity(tokens.len());
    let mut spelled_tokens = Vec::with_capacity(tokens.len());
    for (id, t) in tokens.iter().enumerate() {
        let s = if in_alphabet(t) {
            t.clone()
        } else {
            t.bytes().map(|b| alphabet[b as usize]).collect()
        };
        vocab.insert(s.clone(), json!(id));
        spelled_tokens.push(s);
    }
    let mut added = Vec::new();
    let known: HashMap<&str, usize> = spelled_tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.as_str(), i))
        .collect();
    for (id, (t, &ty)) in tokens.iter().zip(&types).enumerate() {
        // A control token outside the byte alphabet is a llama.cpp mislabel; skipped
        // (transformers does the same).
        let special = ty == CONTROL && in_alphabet(t);
        let user = ty == USER_DEFINED && known.get(t.as_str()) == Some(&id);
        if special || user {
            added.push(json!({
                "id": id, "content": t, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            }));
        }
    }

    let byte_level = |use_regex: bool| {
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
               "use_regex": use_regex})
    };
    let pre = file
        .meta("tokenizer.ggml.pre")
        .and_then(GgufValue::as_str)
        .unwrap_or("default");
    let pre_tokenizer = match split_regex(pre) {
        Some(regex) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated",
             "invert": false},
            byte_level(false),
        ]}),
        None => byte_level(true),
    };
    let bos = token_id(file, "bos_token_id");
    let add_bos = matches!(
        file.meta("tokenizer.ggml.add_bos_token"),
        Some(GgufValue::Bool(true))
    );
    let post_processor = match (add_bos, bos) {
        (true, Some(bos)) => {
            let bos_token = tokens.get(bos as usize).cloned().unwrap_or_default();
            json!({"type": "TemplateProcessing",
                "single": [{"SpecialToken": {"id": bos_token, "type_id": 0}},
                           {"Sequence": {"id": "A", "type_id": 0}}],
                "pair": [{"SpecialToken": {"id": bos_token, "type_id": 0}},
                         {"Sequence": {"id": "A", "type_id": 0}},
                         {"Sequence": {"id": "B", "type_id": 1}}],
                "special_tokens": {bos_token.clone(): {"id": bos_token, "ids": [bos],
                                                       "tokens": [bos_token]}}})
        }
        _ => Value::Null,
    };
    let spec = json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": post_processor,
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
                  "byte_fallback": false, "ignore_merges": false, "vocab": vocab,
                  "merges": merges},
    });
    let tokenizer = Tokenizer::from_str(&spec.to_string()).map_err(|e| Error::Format {
        path: file.path().to_path_buf(),
        message: format!("GGUF tokenizer metadata: {e}"),
    })?;
    let pad = super::pad_or_eos(
        token_id(file, "padding_token_id"),
        token_id(file, "eos_token_id"),
        file.path(),
    )
    .ok_or_else(|| {
        Error::Tokenizer(format!(
            "{}: no padding or eos token id in the tokenizer metadata",
            file.path().display()
        ))
    })?;
    Ok((tokenizer, pad))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_is_gpt2s() {
        let a = byte_alphabet();
        assert_eq!(a[b'!' as usize], '!');
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        assert_eq!(a.iter().collect::<HashSet<_>>().len(), 256);
    }
}
