//! NF4 against bitsandbytes 0.50 itself (`scripts/make_nf4_fixtures.py`, CPU): the levels,
//! the packed bytes and absmax of each case bit for bit, and the dequantised values within
//! 1e-6 (bitsandbytes computes them the same way, so they agree exactly here).

use burn_lora_kernels::nf4::{NF4_LEVELS, quantize};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| f32::from_bits(b.as_u64().unwrap() as u32))
        .collect()
}

#[test]
fn nf4_matches_bitsandbytes() {
    let path = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .join("tests/fixtures/nf4.json");
    let fixture: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(
        floats(&fixture["code_bits"]),
        NF4_LEVELS,
        "NF4 levels differ"
    );
    let blocksize = fixture["blocksize"].as_u64().unwrap() as usize;
    for case in fixture["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let input = floats(&case["input_bits"]);
        let q = quantize(&input, blocksize);
        let packed: Vec<u8> = case["packed"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        assert_eq!(q.absmax, floats(&case["absmax_bits"]), "{name}: absmax");
        assert_eq!(q.packed, packed, "{name}: packed indices");
        let want = floats(&case["dequantized_bits"]);
        let got = q.dequantize();
        let worst = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-6, "{name}: dequantised values off by {worst}");
        assert_eq!(got.len(), input.len());
    }
}

/// The round trip error is at most half the widest gap between levels, times the
/// block's scale; and an all-zero block stays zero.
#[test]
fn round_trip_error_is_bounded() {
    let values: Vec<f32> = (0..1000)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0)
        .collect();
    let q = quantize(&values, 64);
    let back = q.dequantize();
    let widest = NF4_LEVELS
        .windows(2)
        .map(|p| p[1] - p[0])
        .fold(0f32, f32::max);
    for (b, block) in values.chunks(64).enumerate() {
        for (i, v) in block.iter().enumerate() {
            let err = (back[b * 64 + i] - v).abs();
            assert!(
                err <= widest / 2.0 * q.absmax[b] * 1.0001,
                "{v}: error {err}"
            );
        }
    }
    assert_eq!(quantize(&[0.0; 64], 64).dequantize(), vec![0.0; 64]);
    assert_eq!(q.stored_bytes(), 500 + 4 * 16);
}
