#!/usr/bin/env python3
"""A bf16 safetensors checkpoint of SmolLM2-135M-Instruct, for measurements that need a float
decoder checkpoint (the project fetches only the Q4_1 GGUF): transformers' GGUF loader
dequantises the file, the state dict is saved in bf16 with its config and tokenizer.

    ~/.cache/burn-lora-venv/bin/python scripts/make_smollm2_bf16_checkpoint.py OUT_DIR

(BENCHMARKS.md: "Loading a half-precision base without an f32 model".) The tied `lm_head`
is left out, as transformers saves tied weights.
"""
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer

MODELS, GGUF = "models", "SmolLM2-135M-Instruct.Q4_1.gguf"


def main(out: str) -> None:
    tokenizer = AutoTokenizer.from_pretrained(MODELS, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(MODELS, gguf_file=GGUF, torch_dtype=torch.bfloat16)
    os.makedirs(out, exist_ok=True)
    state = {
        name: tensor.to(torch.bfloat16).contiguous()
        for name, tensor in model.state_dict().items()
        if name != "lm_head.weight"
    }
    save_file(state, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    config = model.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the GGUF's, not this checkpoint's
    config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    print(f"{out}: {sum(t.numel() for t in state.values())} parameters in bf16")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
