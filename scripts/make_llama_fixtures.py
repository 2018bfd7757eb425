#!/usr/bin/env python3
"""Tiny random Llama-family checkpoints (llama with GQA, mistral, qwen2, qwen3, and a
sharded bf16 llama with llama3 RoPE scaling), made with transformers, plus reference
last hidden states (after the final norm) for a right-padded batch.

Writes tests/fixtures/tiny-{llama,mistral,qwen2,qwen3,llama-bf16-sharded}/ with
config.json, safetensors and reference.safetensors.

Run: python scripts/make_llama_fixtures.py
"""
import os

import torch
from safetensors.torch import save_file
from transformers import (LlamaConfig, LlamaModel, MistralConfig, MistralModel, Qwen2Config,
                          Qwen2Model, Qwen3Config, Qwen3Model)

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
COMMON = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              pad_token_id=0, tie_word_embeddings=True)


def make(name, model, bf16_shards=None):
    d = os.path.join(OUT, name)
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))
    model = model.eval()
    if bf16_shards:
        model = model.to(torch.bfloat16)
        model.save_pretrained(d, max_shard_size=bf16_shards)
        model = model.to(torch.float32)
    else:
        model.save_pretrained(d)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, model.config.vocab_size, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.int64)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    with torch.no_grad():
        out = model(input_ids=ids, attention_mask=mask)
    save_file({"input_ids": ids.contiguous(), "attention_mask": mask.contiguous(),
               "last_hidden_state": out.last_hidden_state.contiguous()},
              os.path.join(d, "reference.safetensors"))


if __name__ == "__main__":
    torch.manual_seed(0)
    make("tiny-llama", LlamaModel(LlamaConfig(**COMMON, rope_theta=10000.0, rms_norm_eps=1e-5)))
    torch.manual_seed(1)
    make("tiny-mistral", MistralModel(MistralConfig(**COMMON, rope_theta=1e6, sliding_window=None)))
    torch.manual_seed(2)
    make("tiny-qwen2", Qwen2Model(Qwen2Config(**COMMON, rope_theta=1e6)))
    torch.manual_seed(3)
    make("tiny-qwen3", Qwen3Model(Qwen3Config(**COMMON, head_dim=16, rope_theta=1e6)))
    torch.manual_seed(4)
    scaled = LlamaConfig(**COMMON, rope_theta=500000.0, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 16})
    make("tiny-llama-bf16-sharded", LlamaModel(scaled), bf16_shards="20KB")
    print("written")
