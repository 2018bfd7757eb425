//! Dequantisation of every quantised type against gguf-py's reference dequantiser
//! (`scripts/make_gguf_quant_fixtures.py`): random raw blocks `T`, reference values
//! `T.expected` (F32) in the same file.

use std::path::PathBuf;

use burn_lora_gguf::GgufFile;

#[test]
fn every_quant_type_matches_the_reference() {
    // Run-time path (cargo sets it for test runs): a binary built from another checkout
    // sharing the target dir keeps that checkout's compile-time path.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let path = root.join("tests/fixtures/quants.gguf");
    let file = GgufFile::open(&path).unwrap();
    let types = [
        "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q4_K", "Q5_K", "Q6_K",
    ];
    for name in types {
        let (values, shape) = file.dequantize(name).unwrap();
        let (expected, expected_shape) = file.dequantize(&format!("{name}.expected")).unwrap();
        assert_eq!(shape, expected_shape, "{name}: shape");
        // Both sides compute d·scale·q in f32 from the same f16 fields; allow rounding only.
        let worst = values
            .iter()
            .zip(&expected)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1e-3))
            .fold(0f32, f32::max);
        assert!(worst <= 1e-5, "{name}: relative error {worst}");
    }
}
