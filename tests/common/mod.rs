//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use burn::tensor::{Device, Tensor};
use burn_lora::device::{compiled_devices, parse_device};

/// Path of a committed fixture.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// The backends the LoRA tests run on: flex, plus the GPU backends compiled in when
/// `BURN_LORA_TEST_GPU=1` (Mesa's lavapipe crashes in `vkCreateComputePipelines` on
/// burn 0.22's kernels, so a software-Vulkan machine can't run them; see BENCHMARKS.md).
pub fn devices() -> Vec<(&'static str, Device)> {
    let gpu = std::env::var("BURN_LORA_TEST_GPU").is_ok_and(|v| v == "1");
    compiled_devices()
        .into_iter()
        .filter(|name| *name == "flex" || gpu)
        .map(|name| (name, parse_device(name).expect("compiled device parses")))
        .collect()
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
