//! PEFT's initialisations of the adapter factors.
//!
//! All shapes here are PEFT's: A `[r, in]`, B `[out, r]`.

use burn::tensor::{Device, Distribution, Tensor};

use super::config::InitLoraWeights;

/// `nn.init.kaiming_uniform_(w, a=√5)` on a `[fan_out, fan_in]` weight: the gain
/// `√(2/(1+a²)) = √(1/3)` makes the bound exactly `1/√fan_in`. This is also what
/// `nn.Linear` does by default.
pub fn kaiming_uniform_sqrt5(rows: usize, fan_in: usize, device: &Device) -> Tensor<2> {
    let bound = 1.0 / (fan_in as f64).sqrt();
    Tensor::random([rows, fan_in], Distribution::Uniform(-bound, bound), device)
}

/// Initial `(A [r, in], B [out, r])` for `init_lora_weights`.
///
/// * `Default` (`true`): A kaiming-uniform(a = √5), B = 0.
/// * `Gaussian`: A ~ N(0, σ = 1/r), B = 0.
/// * `Random` (`false`): both as `nn.Linear` defaults, so B ≠ 0 and the adapter is not a no-op.
pub fn init_factors(
    init: &InitLoraWeights,
    r: usize,
    in_features: usize,
    out_features: usize,
    device: &Device,
) -> (Tensor<2>, Tensor<2>) {
    match init {
        InitLoraWeights::Gaussian => (
            Tensor::random(
                [r, in_features],
                Distribution::Normal(0.0, 1.0 / r as f64),
                device,
            ),
            Tensor::zeros([out_features, r], device),
        ),
        InitLoraWeights::Random => (
            kaiming_uniform_sqrt5(r, in_features, device),
            kaiming_uniform_sqrt5(out_features, r, device),
        ),
        // `Other` is rejected by `LoraConfig::validate`, and the methods that take their
        // factors from the weight never come here (`LoraLinear::attach_adapter`); PEFT's
        // default for both.
        InitLoraWeights::Default
        | InitLoraWeights::Other(_)
        | InitLoraWeights::Pissa
        | InitLoraWeights::PissaNiter(_)
        | InitLoraWeights::Olora => (
            kaiming_uniform_sqrt5(r, in_features, device),
            Tensor::zeros([out_features, r], device),
        ),
    }
}
