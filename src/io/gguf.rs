//! llama.cpp GGUF files: the reader lives in the burn-free `burn-lora-gguf` crate (so it
//! can be fuzzed alone) and is re-exported here; its errors convert into [`crate::Error`].

pub use burn_lora_gguf::*;
