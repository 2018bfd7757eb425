#!/usr/bin/env python3
"""A PEFT SEQ_CLS adapter written by Python PEFT for BertForSequenceClassification on
all-MiniLM-L6-v2, with a labels.txt beside it and PEFT's probabilities for a few texts.

Writes tests/fixtures/peft_seqcls_minilm/ (adapter_config.json, adapter_model.safetensors,
labels.txt) and tests/fixtures/peft_seqcls_minilm.reference.json.
With --dora: a DoRA adapter (use_dora, lora_magnitude_vector), trained a few AdamW steps so
every part (A, B, magnitudes, head) is off its initial value, as
tests/fixtures/peft_seqcls_minilm_dora/ and its .reference.json.
Needs models/all-MiniLM-L6-v2 (scripts/fetch-models.sh).

Run: python scripts/make_peft_adapter_fixture.py [--dora]
"""
import json
import os
import sys

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoTokenizer, BertForSequenceClassification

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
DORA = "--dora" in sys.argv[1:]
OUT = os.path.join(ROOT, "tests", "fixtures", "peft_seqcls_minilm" + ("_dora" if DORA else ""))
LABELS = ["devel::library", "role::program", "interface::x11", "game::strategy", "works-with::xml"]
TEXTS = [
    "Library for parsing XML documents, with bindings for Python.",
    "Real-time strategy game of ancient warfare",
    "X11 window manager",
]

if __name__ == "__main__":
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(
        MINILM, num_labels=len(LABELS), problem_type="multi_label_classification")
    cfg = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"],
                     init_lora_weights=False, use_dora=DORA)
    model = get_peft_model(model, cfg)
    with torch.no_grad():
        head = model.base_model.model.classifier.modules_to_save["default"]
        head.weight.normal_(0, 0.5)
        head.bias.normal_(0, 0.5)
    tok = AutoTokenizer.from_pretrained(MINILM)
    if DORA:
        # A few training steps: the magnitudes move off their initial norms.
        enc = tok(TEXTS, padding=True, return_tensors="pt")
        targets = torch.tensor([[1.0, 0, 0, 0, 1], [0, 1, 0, 1, 0], [0, 1, 1, 0, 0]])
        optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        model.train()
        for _ in range(5):
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                model(**enc).logits, targets)
            optim.zero_grad()
            loss.backward()
            optim.step()
    model.eval()
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(OUT)
    with open(os.path.join(OUT, "labels.txt"), "w") as f:
        f.write("\n".join(LABELS) + "\n")
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.sigmoid(model(**enc).logits)
    with open(OUT + ".reference.json", "w") as f:
        json.dump({"texts": TEXTS, "probs": probs.tolist()}, f, indent=1)
    print(sorted(os.listdir(OUT)))
