//! Llama-family decoders and their tokenizer from llama.cpp GGUF files, against
//! transformers loading the same files.
//!
//! - Tiny GGUFs written like llama.cpp's converter (`scripts/make_gguf_fixtures.py`: q/k
//!   rows permuted for `llama`, not for `qwen2`) must reproduce the transformers reference
//!   of the safetensors checkpoint they came from: max abs 1e-4.
//! - SmolLM2-135M-Instruct Q4_1 (`scripts/make_smollm2_fixtures.py`): final hidden states
//!   of a right-padded batch of 4 prompts within 1e-3 max abs at every non-padding
//!   position, greedy next-token ids for 20 steps equal, and token ids of the GGUF-built
//!   tokenizer equal on 24 strings.
//! - The same SmolLM2 with its Q4_1 blocks kept packed (`Quantization::Keep`): the same
//!   hidden states as the dequantised load (max abs 1e-4; only the product's summation
//!   order differs) at 5 bits per weight; a corrupt block is an error on both paths.

mod common;

use std::path::PathBuf;

use burn::tensor::{Device, Int, Tensor, TensorData};
use burn_lora::Error;
use burn_lora::io::SafetensorsFile;
use burn_lora::io::gguf::GgufFile;
use burn_lora::lora::{Quantization, packing_report};
use burn_lora::models::{Backbone, EncoderInput, LlamaModel};
use burn_lora::tokenize::TextTokenizer;
use common::{
    fixture, fixture_options, load_gguf, load_gguf_with, load_llama_with, max_abs_diff, values,
};

fn device() -> Device {
    burn_lora::device::parse_device("flex").unwrap()
}

fn smollm2() -> PathBuf {
    let path = common::repo_root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} missing: run scripts/fetch-models.sh smollm2",
        path.display()
    );
    path
}

fn ints(st: &SafetensorsFile, name: &str) -> (Vec<u32>, Vec<usize>) {
    let (v, shape) = st.read_i64(name).unwrap();
    (v.into_iter().map(|x| x as u32).collect(), shape)
}

/// Largest |ours − reference| over the non-padding positions of a `[b, s, h]` batch.
fn masked_diff(model: &LlamaModel, reference: &SafetensorsFile, device: &Device) -> f32 {
    let (ids, shape) = ints(reference, "input_ids");
    let (mask, _) = ints(reference, "attention_mask");
    let input = EncoderInput::new(&ids, &mask, None, shape[0], shape[1], device).unwrap();
    let ours = values(model.forward(&input));
    let (theirs, _) = reference.read_f32("last_hidden_state").unwrap();
    let h = model.hidden_size();
    mask.iter()
        .enumerate()
        .filter(|(_, m)| **m == 1)
        .map(|(pos, _)| {
            max_abs_diff(
                &ours[pos * h..(pos + 1) * h],
                &theirs[pos * h..(pos + 1) * h],
            )
        })
        .fold(0.0, f32::max)
}

#[test]
fn tiny_gguf_decoders_match_transformers() {
    let device = device();
    for name in ["tiny-llama", "tiny-qwen2"] {
        let model = load_gguf(fixture(&format!("{name}.gguf")), &device).unwrap();
        assert_eq!(model.model_type(), &name["tiny-".len()..]);
        let reference = SafetensorsFile::open(fixture(name).join("reference.safetensors")).unwrap();
        let worst = masked_diff(&model, &reference, &device);
        assert!(worst <= 1e-4, "{name}.gguf: off by {worst}");
    }
}

fn greedy(model: &LlamaModel, prompt: &[u32], steps: usize, device: &Device) -> Vec<u32> {
    let mut ids = prompt.to_vec();
    for _ in 0..steps {
        let s = ids.len();
        let input = EncoderInput {
            input_ids: Tensor::<2, Int>::from_data(
                TensorData::new(ids.iter().map(|&v| v as i64).collect::<Vec<_>>(), [1, s]),
                device,
            ),
            attention_mask: Tensor::<2, Int>::ones([1, s], device),
            token_type_ids: None,
        };
        let last = model.forward(&input).slice([0..1, s - 1..s]);
        let logits = values(model.logits(last));
        let next = logits
            .iter()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                if v > best.1 { (i, v) } else { best }
            })
            .0;
        ids.push(next as u32);
    }
    ids[prompt.len()..].to_vec()
}

#[test]
fn smollm2_gguf_matches_transformers() {
    let device = device();
    let model = load_gguf(smollm2(), &device).unwrap();
    assert_eq!((model.hidden_size(), model.layers.len()), (576, 30));
    let reference = SafetensorsFile::open(fixture("smollm2_reference.safetensors")).unwrap();
    let worst = masked_diff(&model, &reference, &device);
    eprintln!("SmolLM2 final hidden states: max abs diff {worst:.2e}");
    assert!(worst <= 1e-3, "SmolLM2 hidden states off by {worst}");
    for i in 0..2 {
        let (prompt, _) = ints(&reference, &format!("greedy_{i}_prompt"));
        let (expected, _) = ints(&reference, &format!("greedy_{i}_new"));
        assert_eq!(
            greedy(&model, &prompt, expected.len(), &device),
            expected,
            "greedy continuation of prompt {i}"
        );
    }
}

#[test]
fn smollm2_with_its_blocks_kept_matches_the_dequantised_load() {
    let device = device();
    let reference = SafetensorsFile::open(fixture("smollm2_reference.safetensors")).unwrap();
    let (ids, shape) = ints(&reference, "input_ids");
    let (mask, _) = ints(&reference, "attention_mask");
    let input = EncoderInput::new(&ids, &mask, None, shape[0], shape[1], &device).unwrap();
    let dense = values(load_gguf(smollm2(), &device).unwrap().forward(&input));
    let kept = load_gguf_with(
        smollm2(),
        &fixture_options().packing(Some(Quantization::Keep)),
        &device,
    )
    .unwrap();
    let report = packing_report(&kept).unwrap();
    // 30 layers × 7 linears, each in Q4_1 blocks (32 values in 20 bytes: 5 bits per weight).
    assert_eq!(report.layers, 210);
    assert!(
        (report.bits_per_param() - 5.0).abs() < 1e-9,
        "{}",
        report.bits_per_param()
    );
    let diff = max_abs_diff(&values(kept.forward(&input)), &dense);
    eprintln!("SmolLM2 keep vs dequantised: max abs diff {diff:.2e}");
    assert!(diff <= 1e-4, "kept blocks off by {diff}");
    assert!(masked_diff(&kept, &reference, &device) <= 1e-3);
}

#[test]
fn a_corrupt_gguf_block_is_an_error() {
    // SmolLM2 with one Q4_1 block's scale (its first f16) set to NaN.
    let file = GgufFile::open(smollm2()).unwrap();
    let info = &file.tensors["blk.1.ffn_down.weight"];
    let offset = info.offset as usize + 20 * 5; // the sixth block
    drop(file);
    let mut bytes = std::fs::read(smollm2()).unwrap();
    bytes[offset..offset + 2].copy_from_slice(&0x7E00u16.to_le_bytes());
    let dir = tempfile_dir("corrupt-gguf");
    let path = dir.join("corrupt.gguf");
    std::fs::write(&path, bytes).unwrap();
    let device = device();
    for packing in [None, Some(Quantization::Keep), Some(Quantization::Nf4)] {
        let err = load_gguf_with(&path, &fixture_options().packing(packing), &device).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidState(m) | Error::Format { message: m, .. } if m.contains("corrupt")),
            "{packing:?}: {err}"
        );
    }
    // `keep` is for GGUF files: a safetensors checkpoint has no blocks to keep.
    let err = load_llama_with(
        fixture("tiny-llama"),
        &fixture_options().packing(Some(Quantization::Keep)),
        &device,
    )
    .unwrap_err();
    assert!(err.to_string().contains("keep"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// A fresh directory under the system's temp dir.
fn tempfile_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burn-lora-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[derive(serde::Deserialize)]
struct TokenCase {
    text: String,
    ids: Vec<u32>,
}

#[derive(serde::Deserialize)]
struct TokenFixture {
    pad_token_id: u32,
    tokens: Vec<TokenCase>,
}

#[test]
fn gguf_tokenizer_matches_transformers() {
    let fixture: TokenFixture =
        serde_json::from_str(&std::fs::read_to_string(fixture("smollm2_tokens.json")).unwrap())
            .unwrap();
    assert!(fixture.tokens.len() >= 20);
    let tokenizer = TextTokenizer::from_gguf(smollm2(), 512).unwrap();
    assert_eq!(tokenizer.pad_id(), fixture.pad_token_id);
    for case in &fixture.tokens {
        assert_eq!(
            tokenizer.encode_ids(&case.text).unwrap(),
            case.ids,
            "text {:?}",
            case.text
        );
    }
}

/// A prompt longer than `max_len` loses text, not the template's ending: the decoder's
/// pooled last token must still be the assistant turn's start.
#[test]
fn template_truncation_keeps_the_prompt_ending() {
    use burn_lora::data::PromptTemplate;
    let tokenizer = TextTokenizer::from_gguf(smollm2(), 48).unwrap();
    let template = PromptTemplate::default_instruction(true);
    let ending = tokenizer
        .encode_ids("<|im_end|>\n<|im_start|>assistant\n")
        .unwrap();
    let long = "a library for parsing XML documents with bindings ".repeat(20);
    let ids = tokenizer.encode_with_template(&template, &long).unwrap();
    assert!(ids.len() <= 48, "{} tokens", ids.len());
    assert!(ids.ends_with(&ending), "{ids:?}");
    let short = tokenizer.encode_with_template(&template, "XML").unwrap();
    assert_eq!(
        short,
        tokenizer.encode_ids(&template.render("XML")).unwrap()
    );
}
