#!/usr/bin/env python3
"""A merged export (examples/export.rs) loads in transformers and gives the unmerged
adapter's outputs: `AutoModelForSequenceClassification.from_pretrained(merged)` against
(1) the same adapter unmerged in PEFT on the original base and (2) burn-lora's predict
probabilities with the adapter unmerged. Also checks the config's multi-label fields.

  python scripts/check_export_in_transformers.py --merged DIR --base DIR --adapter DIR \
      --texts texts.jsonl --rust-probs probs.jsonl

Exits 1 when a difference is above --tol (default 1e-4) or a config field is wrong.
"""
import argparse
import json
import os
import sys

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--merged", required=True)
    p.add_argument("--base", required=True)
    p.add_argument("--adapter", required=True)
    p.add_argument("--texts", required=True)
    p.add_argument("--rust-probs", required=True)
    p.add_argument("--tol", type=float, default=1e-4)
    a = p.parse_args()
    torch.set_num_threads(2)

    meta = json.load(open(os.path.join(a.adapter, "burn_lora.json")))
    labels = [l for l in open(os.path.join(a.adapter, "labels.txt")).read().split("\n") if l]
    texts = [json.loads(l)["text"] for l in open(a.texts) if l.strip()]
    rust = torch.tensor([json.loads(l)["probs"] for l in open(a.rust_probs) if l.strip()])

    merged = AutoModelForSequenceClassification.from_pretrained(a.merged, torch_dtype=torch.float32).eval()
    cfg = merged.config
    ok = (cfg.problem_type == "multi_label_classification"
          and [cfg.id2label[i] for i in range(len(labels))] == labels
          and all(cfg.label2id[l] == i for i, l in enumerate(labels)))
    print(f"{a.merged}: {type(merged).__name__}, problem_type {cfg.problem_type}, "
          f"{cfg.num_labels} labels in order: {ok}")

    tok = AutoTokenizer.from_pretrained(a.merged)
    enc = tok(texts, truncation=True, max_length=meta["max_len"], padding=True, return_tensors="pt")
    base = AutoModelForSequenceClassification.from_pretrained(
        a.base, num_labels=len(labels), problem_type="multi_label_classification",
        torch_dtype=torch.float32)
    unmerged = PeftModel.from_pretrained(base, a.adapter).eval()
    with torch.no_grad():
        lm = merged(**enc).logits
        lu = unmerged(**enc).logits
    d_logits = (lm - lu).abs().max().item()
    d_rust = (torch.sigmoid(lm) - rust).abs().max().item()
    print(f"max |merged - PEFT unmerged| logits = {d_logits:.2e}; "
          f"max |merged - burn-lora unmerged| probabilities = {d_rust:.2e} (tolerance {a.tol:g})")
    sys.exit(0 if ok and d_logits <= a.tol and d_rust <= a.tol else 1)


if __name__ == "__main__":
    main()
