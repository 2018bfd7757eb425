#!/usr/bin/env python3
"""NF4 reference values from bitsandbytes itself (CPU), for burn-lora's NF4 codec.

For fixed inputs: `bitsandbytes.functional.quantize_4bit(x, blocksize=64, quant_type="nf4")`
(packed bytes, two indices per byte, the first in the high nibble; one absmax per block of
64) and `dequantize_4bit` of that. Cases: normal weights of a linear, a length that leaves
a partial last block, an all-zero block, values on the codebook's decision midpoints, and
outliers. Floats are stored as their IEEE-754 bit patterns so the comparison is exact.

Also double quantisation (`compress_statistics=True`): the dynamic 8-bit map, the mean
offset, the absmax codes and their per-256 scales, the dequantised absmax (and for the first
case the dequantised values).

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
    # Double quantisation (QLoRA's, `compress_statistics=True`): the absmax of every block
    # minus their mean, quantised with the 8-bit dynamic map in blocks of 256. Cases with
    # one partial block of scales (96) and with several (520: two full, one partial).
    out["dynamic_map_bits"] = bits(F.create_dynamic_map())
    out["double_quant"] = []
    for name, x in {"linear_64x96": cases["linear_64x96"],
                    "outliers_520x64": torch.randn(520, 64) * torch.where(torch.rand(520, 64) < 0.01, 20.0, 1.0)}.items():
        x = x.float().contiguous()
        packed, state = F.quantize_4bit(x, blocksize=64, quant_type="nf4", compress_statistics=True)
        plain_absmax = F.quantize_4bit(x, blocksize=64, quant_type="nf4")[1].absmax
        out["double_quant"].append({
            "name": name,
            "input_bits": bits(x),
            "packed": packed.reshape(-1).tolist(),
            "plain_absmax_bits": bits(plain_absmax),
            "offset_bits": bits(state.offset.reshape(1)),
            "codes": state.absmax.reshape(-1).tolist(),
            "scales_bits": bits(state.state2.absmax),
            "absmax_dequantized_bits": bits(F.dequantize_blockwise(state.absmax, state.state2) + state.offset),
        })
        if name == "linear_64x96":
            out["double_quant"][-1]["dequantized_bits"] = bits(F.dequantize_4bit(packed, state))
    with open(OUT, "w") as f:
        json.dump(out, f)
    print("written", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
