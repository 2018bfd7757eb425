//! GLM and GLM-4: computed by [`LlamaModel`](super::LlamaModel) (partial RoPE on
//! interleaved pairs, fused `gate_up_proj`, q/k/v bias without an o_proj bias, GLM-4's
//! extra norms: `LlamaConfig::is_glm`), registered as a family of their own because
//! transformers' config defaults for them differ from Llama's. The whole family is this
//! file and its line in [`FAMILIES`](super::FAMILIES).

use super::family::Family;
use super::llama::{decoder_type, load_folder};

/// The GLM family's registry entry. PEFT has no default targets for GLM (it asks for
/// `target_modules`); the Llama pair is used.
pub static FAMILY: Family = Family {
    name: "glm",
    decoder: true,
    model_types: &[
        decoder_type("glm", "GlmForSequenceClassification"),
        decoder_type("glm4", "Glm4ForSequenceClassification"),
    ],
    gguf_architectures: &[],
    config_defaults,
    load_folder,
    load_gguf: None,
};

/// transformers' defaults (`GlmConfig` / `Glm4Config`) for keys a GLM `config.json` may
/// leave out.
fn config_defaults() -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("head_dim", 128.into()),
        ("num_key_value_heads", 2.into()),
        ("rms_norm_eps", 1.5625e-7.into()),
        ("partial_rotary_factor", 0.5.into()),
        ("attention_bias", true.into()),
    ]
}
