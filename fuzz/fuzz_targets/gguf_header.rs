//! Any byte string given to the GGUF reader must parse or be rejected with an error,
//! never panic; and every tensor a parsed header describes must lie inside the input
//! and dequantise without panicking.
#![no_main]

use std::path::Path;

use burn_lora_gguf::{dequantize, parse_header};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((_, _, tensors)) = parse_header(data, Path::new("fuzz.gguf")) {
        for info in tensors.values() {
            let start = usize::try_from(info.offset).expect("offset fits");
            let end = start + usize::try_from(info.size).expect("size fits");
            assert!(end <= data.len(), "tensor `{}` past the end", info.name);
            let values = dequantize(info.ggml_type, &data[start..end]);
            let elements: u64 = info.dims.iter().product();
            assert_eq!(values.len() as u64, elements, "tensor `{}`", info.name);
        }
    }
});
