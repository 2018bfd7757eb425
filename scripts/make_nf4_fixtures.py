#!/usr/bin/env python3
"""NF4 reference values from bitsandbytes itself (CPU), for burn-lora's NF4 codec.

For fixed inputs: `bitsandbytes.functional.quantize_4bit(x, blocksize=64, quant_type="nf4")`
(packed bytes, two indices per byte, the first in the high nibble; one absmax per block of
64) and `dequantize_4bit` of that. Cases: normal weights of a linear, a length that leaves
a partial last block, an all-zero block, values on the codebook's decision midpoints, and
outliers. Floats are stored as their IEEE-754 bit patterns so the comparison is exact.

Writes crates/kernels/tests/fixtures/nf4.json.
Run: python scripts/make_nf4_fixtures.py   (needs torch and bitsandbytes >= 0.46, CPU is fine)
"""
import json
import os

import numpy as np
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "crates", "kernels",
                   "tests", "fixtures", "nf4.json")


def bits(t):
    return np.asarray(t.detach().float().numpy(), dtype=np.float32).view(np.uint32).ravel().tolist()


def main():
    torch.manual_seed(0)
    code = F.get_4bit_type("nf4", device="cpu").float()
    mids = ((code[:-1] + code[1:]) / 2).tolist()
    cases = {
        "linear_64x96": torch.randn(64, 96) * 0.05,
        "partial_block_150": torch.randn(150),
        "zeros_then_values_128": torch.cat([torch.zeros(64), torch.randn(64)]),
        # Exactly on the decision midpoints once scaled by the block's absmax (1.0 here).
        "midpoints_64": torch.tensor(([1.0] + mids + [-m for m in mids])[:64]
                                     + [0.0] * max(0, 64 - len(mids) * 2 - 1)),
        "outliers_256": torch.randn(256) * torch.where(torch.rand(256) < 0.02, 50.0, 1.0),
    }
    out = {"bitsandbytes": bnb.__version__, "blocksize": 64, "code_bits": bits(code), "cases": []}
    for name, x in cases.items():
        x = x.float().contiguous()
        packed, state = F.quantize_4bit(x, blocksize=64, quant_type="nf4")
        deq = F.dequantize_4bit(packed, state)
        out["cases"].append({
            "name": name,
            "shape": list(x.shape),
            "input_bits": bits(x),
            "packed": packed.reshape(-1).tolist(),
            "absmax_bits": bits(state.absmax),
            "dequantized_bits": bits(deq),
        })
    with open(OUT, "w") as f:
        json.dump(out, f)
    print("written", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
