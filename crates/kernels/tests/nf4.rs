//! NF4 against bitsandbytes 0.50 itself (`scripts/make_nf4_fixtures.py`, CPU): the levels,
//! the packed bytes and absmax of each case bit for bit, and the dequantised values within
//! 1e-6 (bitsandbytes computes them the same way, so they agree exactly here). Double
//! quantisation (`compress_statistics=True`): the 8-bit dynamic map bit for bit, the mean
//! offset within 1 ulp (PyTorch's f32 `mean` sums in its own order; here in f64), the
//! absmax codes and their scales equal, the dequantised absmax within 1e-6 relative.

use burn_lora_kernels::nf4::{CompressedAbsmax, NF4_LEVELS, dynamic_map, quantize};
use serde_json::Value;

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| f32::from_bits(b.as_u64().unwrap() as u32))
        .collect()
}

fn fixture() -> Value {
    let path = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .join("tests/fixtures/nf4.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_u64().unwrap() as u8)
        .collect()
}

#[test]
fn nf4_matches_bitsandbytes() {
    let fixture = fixture();
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

#[test]
fn double_quantisation_matches_bitsandbytes() {
    let fixture = fixture();
    assert_eq!(
        dynamic_map().map(f32::to_bits),
        floats(&fixture["dynamic_map_bits"])
            .iter()
            .map(|v| v.to_bits())
            .collect::<Vec<_>>()[..],
        "dynamic map differs"
    );
    for case in fixture["double_quant"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let q = quantize(&floats(&case["input_bits"]), 64);
        assert_eq!(
            q.absmax,
            floats(&case["plain_absmax_bits"]),
            "{name}: absmax"
        );
        assert_eq!(q.packed, bytes(&case["packed"]), "{name}: packed");
        let plain = q.absmax.clone();
        let dq = q.compress_statistics();
        let offset = floats(&case["offset_bits"])[0];
        assert!(
            dq.absmax.offset.to_bits().abs_diff(offset.to_bits()) <= 1,
            "{name}: offset {} vs {offset}",
            dq.absmax.offset
        );
        assert_eq!(dq.absmax.codes, bytes(&case["codes"]), "{name}: codes");
        assert_eq!(
            dq.absmax.scales,
            floats(&case["scales_bits"]),
            "{name}: scales"
        );
        let want = floats(&case["absmax_dequantized_bits"]);
        let got = dq.absmax.decompress();
        for (g, w) in got.iter().zip(&want) {
            assert!((g - w).abs() <= 1e-6 * w.abs(), "{name}: absmax {g} vs {w}");
        }
        // Each scale is off by at most half the map's widest gap times its block's scale
        // (plus rounding), and it saves ~0.37 bits per value.
        let map = dynamic_map();
        let widest = map.windows(2).map(|p| p[1] - p[0]).fold(0f32, f32::max);
        for (i, (g, p)) in got.iter().zip(&plain).enumerate() {
            let bound = widest / 2.0 * dq.absmax.scales[i / 256] * 1.0001 + 1e-6;
            assert!((g - p).abs() <= bound, "{name}: {g} vs {p} (bound {bound})");
        }
        let bits = 8.0 * dq.stored_bytes() as f64 / dq.len as f64;
        assert!(bits < 4.2, "{name}: {bits} bits per value");
        if let Some(values) = case.get("dequantized_bits") {
            let want = floats(values);
            let worst = dq
                .dequantize()
                .iter()
                .zip(&want)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(worst <= 1e-6, "{name}: dequantised values off by {worst}");
        }
    }
    // A block of equal scales (all at the mean) decompresses to exactly that scale.
    let flat = CompressedAbsmax::compress(&[0.25; 10]);
    assert_eq!(flat.decompress(), vec![0.25; 10]);
}
