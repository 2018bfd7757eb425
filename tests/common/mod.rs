//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use burn::tensor::{Device, Tensor};
use burn_lora::device::{compiled_devices, parse_device, probe_device};

/// The crate's folder. Read at run time (cargo sets it for every test run): a test binary
/// that cargo finds fresh may have been built from another checkout sharing the target
/// dir, whose compile-time path may be gone.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// An example binary built beside the running test binary (a plain `cargo test` builds
/// the examples; `cargo test --test NAME` alone does not, so build them first then).
pub fn example_binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let deps = exe.parent().expect("target/<profile>/deps");
    let profile = deps.parent().expect("target/<profile>");
    profile
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX))
}

/// Path of a committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

/// The devices the per-device tests run on: flex, plus every GPU backend compiled in
/// whose device answers [`burn_lora::device::probe_device`] (on a GPU-less machine
/// with Mesa's lavapipe, `wgpu`). `BURN_LORA_TEST_GPU=off` keeps them to flex;
/// `BURN_LORA_TEST_GPU=required` fails when no GPU device is usable, so CI cannot
/// pass without running them.
pub fn devices() -> Vec<(&'static str, Device)> {
    static DEVICES: OnceLock<Vec<(&'static str, Device)>> = OnceLock::new();
    DEVICES
        .get_or_init(|| {
            let mode = std::env::var("BURN_LORA_TEST_GPU").unwrap_or_default();
            let mut found = vec![("flex", parse_device("flex").expect("flex is compiled"))];
            if mode != "off" {
                for name in compiled_devices() {
                    if matches!(name, "flex" | "ndarray") {
                        continue;
                    }
                    match probe_device(name) {
                        Ok(device) => found.push((name, device)),
                        Err(e) => eprintln!("per-device tests skip {name}: {e}"),
                    }
                }
            }
            if mode == "required" {
                assert!(
                    found.len() > 1,
                    "BURN_LORA_TEST_GPU=required but no GPU device is usable (compiled: {:?})",
                    compiled_devices()
                );
            }
            found
        })
        .clone()
}

/// A tensor's values as f32.
pub fn values<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 data")
}

/// `max|a−b|`.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// `max|a−b| / max|b|`: the error relative to the reference's scale (elementwise
/// relative error is meaningless where the reference crosses zero).
pub fn max_rel_err(actual: &[f32], reference: &[f32]) -> f32 {
    let scale = reference
        .iter()
        .map(|v| v.abs())
        .fold(0.0, f32::max)
        .max(1e-12);
    max_abs_diff(actual, reference) / scale
}

/// Rewrite `dir/model.safetensors` (f32 tensors) without the tensor `unwanted`.
pub fn rewrite_without(dir: &Path, unwanted: &str) {
    rewrite(&dir.join("model.safetensors"), |name, _| name != unwanted);
}

/// Rewrite the f32 safetensors file `path`, letting `edit` change each tensor's values.
pub fn rewrite_values(path: &Path, mut edit: impl FnMut(&str, &mut Vec<f32>)) {
    rewrite(path, |name, values| {
        edit(name, values);
        true
    });
}

/// Rewrite the f32 safetensors file `path` without the tensor `unwanted`.
pub fn rewrite_file_without(path: &Path, unwanted: &str) {
    rewrite(path, |name, _| name != unwanted);
}

/// Rewrite an f32 safetensors file, keeping the tensors for which `keep` (which may
/// change the values) says true.
fn rewrite(path: &Path, mut keep: impl FnMut(&str, &mut Vec<f32>) -> bool) {
    let st = burn_lora::io::SafetensorsFile::open(path).unwrap();
    let mut tensors = Vec::new();
    for name in st.names() {
        let (mut v, shape) = st.read_f32(&name).unwrap();
        if keep(&name, &mut v) {
            let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            tensors.push((name, shape, bytes));
        }
    }
    drop(st);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, b)| {
            let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b);
            (n.clone(), view.unwrap())
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// Write `texts` as predict's JSON-lines input (`{"text": ...}` per line).
pub fn write_texts_jsonl<T: serde::Serialize>(path: &Path, texts: &[T]) {
    let lines: Vec<String> = texts
        .iter()
        .map(|t| serde_json::json!({ "text": t }).to_string())
        .collect();
    std::fs::write(path, lines.join("\n")).unwrap();
}

/// Run the predict example with `args` plus `--format jsonl`; its output rows (the run
/// must succeed).
pub fn predict_jsonl<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Vec<serde_json::Value> {
    let out = std::process::Command::new(example_binary("predict"))
        .args(args)
        .args(["--format", "jsonl"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Options for the tiny fixtures: their position tables hold 64 tokens, fewer than the
/// crate's default length.
pub fn fixture_options() -> burn_lora::models::LoadOptions {
    burn_lora::models::LoadOptions::new(32)
}

/// A BERT-family folder's backbone through the family's `from_source` (the fixtures have
/// no tokenizer, so not through `models::load`).
pub fn load_bert_with(
    dir: impl AsRef<Path>,
    options: &burn_lora::models::LoadOptions,
    device: &Device,
) -> burn_lora::Result<burn_lora::models::BertModel> {
    let dir = dir.as_ref();
    let config = read_text(&dir.join("config.json"))?.parse()?;
    let ckpt = burn_lora::io::Checkpoint::open(dir)?;
    burn_lora::models::BertModel::from_source(&config, &ckpt, options, device)
}

/// [`load_bert_with`] at [`fixture_options`].
pub fn load_bert(
    dir: impl AsRef<Path>,
    device: &Device,
) -> burn_lora::Result<burn_lora::models::BertModel> {
    load_bert_with(dir, &fixture_options(), device)
}

/// A Llama-family folder's backbone through `from_source`.
pub fn load_llama_with(
    dir: impl AsRef<Path>,
    options: &burn_lora::models::LoadOptions,
    device: &Device,
) -> burn_lora::Result<burn_lora::models::LlamaModel> {
    let dir = dir.as_ref();
    let config = read_text(&dir.join("config.json"))?.parse()?;
    let ckpt = burn_lora::io::Checkpoint::open(dir)?;
    burn_lora::models::LlamaModel::from_source(&config, &ckpt, options, device)
}

/// [`load_llama_with`] at [`fixture_options`].
pub fn load_llama(
    dir: impl AsRef<Path>,
    device: &Device,
) -> burn_lora::Result<burn_lora::models::LlamaModel> {
    load_llama_with(dir, &fixture_options(), device)
}

/// A GGUF file's backbone through `from_source`.
pub fn load_gguf_with(
    path: impl AsRef<Path>,
    options: &burn_lora::models::LoadOptions,
    device: &Device,
) -> burn_lora::Result<burn_lora::models::LlamaModel> {
    let file = burn_lora::io::gguf::GgufFile::open(path)?;
    let config = burn_lora::models::LlamaConfig::try_from(&file)?;
    let weights = burn_lora::models::GgufWeights::new(&file, &config);
    burn_lora::models::LlamaModel::from_source(&config, &weights, options, device)
}

/// [`load_gguf_with`] at [`fixture_options`].
pub fn load_gguf(
    path: impl AsRef<Path>,
    device: &Device,
) -> burn_lora::Result<burn_lora::models::LlamaModel> {
    load_gguf_with(path, &fixture_options(), device)
}

fn read_text(path: &Path) -> burn_lora::Result<String> {
    std::fs::read_to_string(path).map_err(|e| burn_lora::Error::io(path, e))
}
