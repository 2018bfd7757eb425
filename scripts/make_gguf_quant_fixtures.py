#!/usr/bin/env python3
"""Reference dequantisation for every quantised ggml type burn-lora-gguf reads.

Writes crates/gguf/tests/fixtures/quants.gguf: for each type T in Q8_0, Q4_0, Q4_1, Q5_0, Q5_1,
Q4_K, Q5_K, Q6_K a tensor `T` holding random raw blocks (random bit patterns, with every f16
scale field set to a finite random value) and a tensor `T.expected` (F32) holding what
gguf-py's reference dequantiser (`gguf.quants.dequantize`, the numpy port of ggml's C code)
makes of them. Random bits exercise every nibble, high-bit and packed-scale path, which real
quantiser output would cover only partly. The Rust test dequantises `T` and compares.
Run: python scripts/make_gguf_quant_fixtures.py   (gguf 0.19, numpy)
"""
import os

import gguf
import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "gguf", "tests",
                   "fixtures", "quants.gguf")

# Byte offsets of the f16 scale fields inside one block of each type.
F16_FIELDS = {
    Q.Q8_0: [0], Q.Q4_0: [0], Q.Q4_1: [0, 2], Q.Q5_0: [0], Q.Q5_1: [0, 2],
    Q.Q4_K: [0, 2], Q.Q5_K: [0, 2], Q.Q6_K: [208],
}

rng = np.random.default_rng(7)
writer = gguf.GGUFWriter(OUT, "quant-reference")
for qtype, fields in F16_FIELDS.items():
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    n_blocks = 4
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint8)
    for off in fields:
        scale = rng.uniform(-0.1, 0.1, size=n_blocks).astype(np.float16)
        raw[:, off:off + 2] = scale.view(np.uint8).reshape(n_blocks, 2)
    # Two rows of two blocks: a 2-D tensor like a weight matrix.
    raw = raw.reshape(2, -1)
    expected = gguf.quants.dequantize(raw, qtype).astype(np.float32)
    assert np.isfinite(expected).all()
    writer.add_tensor(qtype.name, raw, raw_dtype=qtype)
    writer.add_tensor(qtype.name + ".expected", expected)
    print(qtype.name, raw.shape, "->", expected.shape)
writer.write_header_to_file()
writer.write_kv_data_to_file()
writer.write_tensors_to_file()
writer.close()
print("wrote", OUT, os.path.getsize(OUT), "bytes")
