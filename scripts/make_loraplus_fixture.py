#!/usr/bin/env python3
"""LoRA+ parameter groups as PEFT builds them (`peft.optimizers.create_loraplus_optimizer`)
for a DoRA SEQ_CLS adapter on tests/fixtures/tiny-bert: the learning rate and weight decay
each kind of trainable parameter gets (lora_A, lora_B, lora_magnitude_vector, the head's
weight and bias), for lr 1e-3, ratio 16 and loraplus_weight_decay 0.01.

Writes tests/fixtures/loraplus_groups.json.
Run (outside CI, in a venv with torch, transformers, peft): python scripts/make_loraplus_fixture.py
"""
import json
import os

import peft
import torch
from peft import LoraConfig, get_peft_model
from peft.optimizers import create_loraplus_optimizer
from transformers import BertForSequenceClassification

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
FIX = os.path.join(ROOT, "tests", "fixtures")
LR, RATIO, WD = 1e-3, 16.0, 0.01


def kind(name):
    for k in ("lora_A", "lora_B", "lora_magnitude_vector"):
        if k in name:
            return k
    if "classifier" in name:
        return "head." + name.rsplit(".", 1)[1]
    raise ValueError(name)


if __name__ == "__main__":
    torch.manual_seed(0)
    model = BertForSequenceClassification.from_pretrained(os.path.join(FIX, "tiny-bert"), num_labels=3)
    cfg = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query", "value"],
                     use_dora=True)
    model = get_peft_model(model, cfg)
    optim = create_loraplus_optimizer(model, torch.optim.AdamW, lr=LR, loraplus_lr_ratio=RATIO,
                                      loraplus_weight_decay=WD)
    group_of = {}
    for group in optim.param_groups:
        for p in group["params"]:
            group_of[id(p)] = (group["lr"], group["weight_decay"])
    kinds = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            lr, wd = group_of[id(p)]
            k = kind(name)
            assert kinds.setdefault(k, (lr, wd)) == (lr, wd), f"{k}: two groups"
    with open(os.path.join(FIX, "loraplus_groups.json"), "w") as f:
        json.dump({"peft_version": peft.__version__, "lr": LR, "loraplus_lr_ratio": RATIO,
                   "loraplus_weight_decay": WD,
                   "groups": {k: {"lr": lr, "weight_decay": wd} for k, (lr, wd) in sorted(kinds.items())}},
                  f, indent=1)
    print(json.dumps(kinds, indent=1))
