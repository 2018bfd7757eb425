#!/usr/bin/env python3
"""A PEFT SEQ_CLS adapter written by Python PEFT for LlamaForSequenceClassification on the
tiny random llama of make_llama_fixtures.py (keys `base_model.model.model.layers.N.self_attn.
q_proj.lora_A.weight`, head `score` in modules_to_save), a labels.txt beside it, and PEFT's
probabilities for a right-padded batch of token ids (the tiny model has no tokenizer).

Writes tests/fixtures/peft_seqcls_tiny_llama/ and tests/fixtures/peft_seqcls_tiny_llama.reference.json.
The Rust test loads it on the safetensors folder and on tiny-llama.gguf (same weights).
Run: python scripts/make_peft_llama_adapter_fixture.py
"""
import json
import os

import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaForSequenceClassification

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
BASE = os.path.join(FIXTURES, "tiny-llama")
OUT = os.path.join(FIXTURES, "peft_seqcls_tiny_llama")
LABELS = ["alpha", "beta", "gamma"]
ROWS = [[5, 17, 42, 8, 91, 33], [12, 7, 64], [88, 3, 29, 50]]

if __name__ == "__main__":
    torch.manual_seed(0)
    model = LlamaForSequenceClassification.from_pretrained(
        BASE, num_labels=len(LABELS), problem_type="multi_label_classification")
    cfg = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8,
                     target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    model = get_peft_model(model, cfg)
    with torch.no_grad():
        model.base_model.model.score.modules_to_save["default"].weight.normal_(0, 0.5)
    model.eval()
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT)
    # Keep the machine's absolute path out of the committed config.
    cfg_path = os.path.join(OUT, "adapter_config.json")
    adapter_cfg = json.load(open(cfg_path))
    adapter_cfg["base_model_name_or_path"] = "tiny-llama"
    with open(cfg_path, "w") as f:
        json.dump(adapter_cfg, f, indent=2)
    with open(os.path.join(OUT, "labels.txt"), "w") as f:
        f.write("\n".join(LABELS) + "\n")
    pad = model.config.pad_token_id
    width = max(map(len, ROWS))
    ids = torch.tensor([r + [pad] * (width - len(r)) for r in ROWS])
    mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ROWS])
    with torch.no_grad():
        probs = torch.sigmoid(model(input_ids=ids, attention_mask=mask).logits)
    with open(OUT + ".reference.json", "w") as f:
        json.dump({"input_ids": ROWS, "pad_token_id": pad, "probs": probs.tolist()}, f, indent=1)
    print(sorted(os.listdir(OUT)))
