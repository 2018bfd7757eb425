#!/usr/bin/env python3
"""Rust -> Python: an adapter written by burn-lora's finetune example loads with
`PeftModel.from_pretrained` and gives the probabilities burn-lora's predict example printed.

The base is built as transformers' `AutoModelForSequenceClassification` (the adapter's
`modules_to_save` head, `classifier` or `score`, is restored by PEFT). The pooling comes
from the adapter's `burn_lora.json`: `pooler` (BERT) and `last-token` (decoders) are the task
model's own forward; `mean` is computed from PEFT's adapted trunk and the restored head,
since no transformers class pools that way. Tokenisation as the adapter says (max_len,
right padding); the template must be the identity (`--template '{text}'` at training).

  python scripts/check_rust_adapter_in_peft.py --model models/all-MiniLM-L6-v2 \
      --adapter runs/x/adapter --texts texts.jsonl --rust-probs probs.jsonl [--gguf-file F]

Exits 1 when the largest difference is above --tol (default 1e-4).
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
    p.add_argument("--model", required=True, help="model folder (or the folder of --gguf-file)")
    p.add_argument("--gguf-file", help="a GGUF file inside --model to load the base from")
    p.add_argument("--adapter", required=True)
    p.add_argument("--texts", required=True, help="JSON lines with a `text` field")
    p.add_argument("--rust-probs", required=True, help="predict --format jsonl output")
    p.add_argument("--tol", type=float, default=1e-4)
    a = p.parse_args()
    torch.set_num_threads(2)

    meta = json.load(open(os.path.join(a.adapter, "burn_lora.json")))
    if meta.get("template") not in (None, "{text}"):
        sys.exit("train with --template '{text}': this check does not apply templates")
    labels = [l for l in open(os.path.join(a.adapter, "labels.txt")).read().split("\n") if l]
    texts = [json.loads(l)["text"] for l in open(a.texts) if l.strip()]
    rust = [json.loads(l)["probs"] for l in open(a.rust_probs) if l.strip()]
    assert len(texts) == len(rust), "one probability row per text"

    kw = {"gguf_file": a.gguf_file} if a.gguf_file else {}
    tok = AutoTokenizer.from_pretrained(a.model, **kw)
    base = AutoModelForSequenceClassification.from_pretrained(
        a.model, num_labels=len(labels), problem_type="multi_label_classification",
        torch_dtype=torch.float32, **kw)
    if base.config.pad_token_id is None:
        # burn-lora pads decoders with eos when the config has no pad id (as transformers).
        base.config.pad_token_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    if tok.pad_token_id is None:
        tok.pad_token_id = base.config.pad_token_id
    model = PeftModel.from_pretrained(base, a.adapter).eval()

    enc = tok(texts, truncation=True, max_length=meta["max_len"], padding=True, return_tensors="pt")
    with torch.no_grad():
        if meta["pooling"] == "mean":
            trunk = model.base_model.model.base_model  # the adapted BertModel
            hidden = trunk(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                           token_type_ids=enc.get("token_type_ids")).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            head = model.base_model.model.classifier
            logits = head(pooled)
        elif meta["pooling"] in ("pooler", "last-token"):
            logits = model(**enc).logits
        else:
            sys.exit(f"pooling {meta['pooling']!r}: this check covers pooler, last-token and mean")
    probs = torch.sigmoid(logits)
    diff = (probs - torch.tensor(rust)).abs().max().item()
    print(f"{a.adapter}: {len(texts)} texts x {len(labels)} labels, pooling {meta['pooling']}: "
          f"max |PEFT - burn-lora| = {diff:.2e} (tolerance {a.tol:g})")
    sys.exit(0 if diff <= a.tol else 1)


if __name__ == "__main__":
    main()
