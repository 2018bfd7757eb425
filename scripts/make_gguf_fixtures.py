#!/usr/bin/env python3
"""Tiny GGUF files written the way llama.cpp's convert_hf_to_gguf.py writes them, from the
tiny random safetensors checkpoints of make_llama_fixtures.py (run that first):

- tests/fixtures/tiny-llama.gguf: `llama` architecture, q/k rows permuted for llama.cpp's
  rotary layout (the loader must undo it), F32 weights (exact, so the tolerance stays 1e-4);
- tests/fixtures/tiny-qwen2.gguf: `qwen2` architecture (not permuted), q/k/v biases.

The Rust tests compare a model loaded from each GGUF with the same checkpoint's
transformers reference (reference.safetensors beside the safetensors checkpoint).
Run: python scripts/make_gguf_fixtures.py   (gguf, numpy, safetensors)
"""
import json
import os

import gguf
import numpy as np
from safetensors.numpy import load_file

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def permute(w, n_head, n_head_kv):
    # llama.cpp convert_hf_to_gguf.py LlamaModel.permute
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


NAMES = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}


def convert(name):
    src = os.path.join(FIXTURES, name)
    cfg = json.load(open(os.path.join(src, "config.json")))
    arch = cfg["model_type"]
    weights = load_file(os.path.join(src, "model.safetensors"))
    w = gguf.GGUFWriter(os.path.join(FIXTURES, f"{name}.gguf"), arch)
    w.add_name(name)
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(cfg["vocab_size"])
    # Special ids as llama.cpp writes them (no vocabulary: the tiny models have no tokenizer).
    for key, add in [("bos_token_id", w.add_bos_token_id), ("eos_token_id", w.add_eos_token_id),
                     ("pad_token_id", w.add_pad_token_id)]:
        if cfg.get(key) is not None:
            add(cfg[key])
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    for key, t in weights.items():
        key = key.removeprefix("model.")
        if key == "embed_tokens.weight":
            w.add_tensor("token_embd.weight", t.astype(np.float32))
            continue
        if key == "norm.weight":
            w.add_tensor("output_norm.weight", t.astype(np.float32))
            continue
        _, layer, rest = key.split(".", 2)
        if arch == "llama" and rest == "self_attn.q_proj.weight":
            t = permute(t, nh, nh)
        if arch == "llama" and rest == "self_attn.k_proj.weight":
            t = permute(t, nh, nkv)
        w.add_tensor(f"blk.{layer}.{NAMES[rest]}", t.astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    convert("tiny-llama")
    convert("tiny-qwen2")
