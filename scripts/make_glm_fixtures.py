#!/usr/bin/env python3
"""Tiny random GLM-family checkpoints (`glm`: GLM-4-9B-chat-hf layout; `glm4`: GLM-4-0414
layout with the two extra "sandwich" norms), made with transformers, plus references.

Both use what sets the family apart from Llama: partial rotary (partial_rotary_factor 0.5
of an explicit head_dim) with GLM's interleaved pairs (x[2i], x[2i+1]), q/k/v bias without
an o_proj bias (attention_bias=True, the GLM-4 default), and a fused `mlp.gate_up_proj`
(gate = first half of the rows, up = second half). Weights are drawn with a wide init
(initializer_range 0.2) so that attention is far from uniform and a wrong rotary layout
shows; norm weights and biases are randomised too (transformers initialises them to 1/0,
which would hide a missing bias or a swapped norm).

Writes, for NAME in tiny-glm, tiny-glm4:
  tests/fixtures/NAME/config.json, model.safetensors   (GlmModel / Glm4Model, no lm_head)
  tests/fixtures/NAME/reference.safetensors:
      input_ids [3, 7] i64, attention_mask [3, 7] i64 (right-padded, pad id 0),
      last_hidden_state [3, 7, 32] (after the final norm),
      score.weight [3, 32]        (the ...ForSequenceClassification head, no bias),
      seq_cls_logits [3, 3]       (that head on the last non-pad token, no adapter)
  tests/fixtures/peft_seqcls_NAME/ (adapter_config.json, adapter_model.safetensors,
      labels.txt): a PEFT SEQ_CLS LoRA adapter written by Python PEFT for
      Glm(4)ForSequenceClassification (PEFT has no default target_modules for glm/glm4,
      so they are given: q_proj, v_proj, gate_up_proj, down_proj), head `score` in
      modules_to_save;
  tests/fixtures/peft_seqcls_NAME.reference.json: PEFT's sigmoid probabilities for a
      right-padded batch of token ids (as make_peft_llama_adapter_fixture.py).

Run: python scripts/make_glm_fixtures.py
"""
import json
import os

import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import (Glm4Config, Glm4ForSequenceClassification, Glm4Model, GlmConfig,
                          GlmForSequenceClassification, GlmModel)

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")
COMMON = dict(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
              pad_token_id=0, eos_token_id=[1, 2], tie_word_embeddings=True,
              initializer_range=0.2, attention_bias=True, partial_rotary_factor=0.5)
LABELS = ["alpha", "beta", "gamma"]
ROWS = [[5, 17, 42, 8, 91, 33], [12, 7, 64], [88, 3, 29, 50]]
TARGETS = ["q_proj", "v_proj", "gate_up_proj", "down_proj"]


def clear(d):
    os.makedirs(d, exist_ok=True)
    for f in os.listdir(d):
        os.remove(os.path.join(d, f))


def randomise(model, seed):
    """Norm weights 1 + N(0, 0.1²), biases N(0, 0.1²); the rest keeps the (wide) init."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))


def make(name, base_cls, seq_cls, config, seed):
    d = os.path.join(FIXTURES, name)
    clear(d)
    torch.manual_seed(seed)
    model = base_cls(config).eval()
    randomise(model, seed + 100)
    model.save_pretrained(d)

    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, config.vocab_size, (3, 7), generator=g)
    mask = torch.ones(3, 7, dtype=torch.int64)
    mask[1, 5:] = 0
    mask[2, 2:] = 0
    ids = ids.masked_fill(mask == 0, 0)
    with torch.no_grad():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state

    # Sequence classification from the same base weights: a random `score` head.
    torch.manual_seed(seed + 200)
    clf = seq_cls.from_pretrained(d, num_labels=len(LABELS),
                                  problem_type="multi_label_classification").eval()
    with torch.no_grad():
        clf.score.weight.normal_(0, 0.5)
        logits = clf(input_ids=ids, attention_mask=mask).logits
        # Same trunk as the base model: the hidden states must agree.
        again = clf.model(input_ids=ids, attention_mask=mask).last_hidden_state
    assert torch.equal(again, hidden), "seq-cls trunk differs from the base model"
    assert clf.score.bias is None
    save_file({"input_ids": ids.contiguous(), "attention_mask": mask.contiguous(),
               "last_hidden_state": hidden.contiguous(),
               "score.weight": clf.score.weight.detach().contiguous(),
               "seq_cls_logits": logits.contiguous()},
              os.path.join(d, "reference.safetensors"))

    # A PEFT SEQ_CLS adapter on that checkpoint (mirrors make_peft_llama_adapter_fixture.py).
    out = os.path.join(FIXTURES, "peft_seqcls_" + name.replace("-", "_"))
    clear(out)
    torch.manual_seed(seed + 300)
    clf = seq_cls.from_pretrained(d, num_labels=len(LABELS),
                                  problem_type="multi_label_classification")
    cfg = LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=TARGETS,
                     init_lora_weights=False)
    peft_model = get_peft_model(clf, cfg)
    with torch.no_grad():
        peft_model.base_model.model.score.modules_to_save["default"].weight.normal_(0, 0.5)
    peft_model.eval()
    peft_model.save_pretrained(out)
    # Keep the machine's absolute path out of the committed config.
    cfg_path = os.path.join(out, "adapter_config.json")
    adapter_cfg = json.load(open(cfg_path))
    adapter_cfg["base_model_name_or_path"] = name
    # PEFT writes target_modules from a set: sort it so reruns give the same file.
    adapter_cfg["target_modules"] = sorted(adapter_cfg["target_modules"])
    with open(cfg_path, "w") as f:
        json.dump(adapter_cfg, f, indent=2)
    readme = os.path.join(out, "README.md")
    if os.path.exists(readme):
        os.remove(readme)
    with open(os.path.join(out, "labels.txt"), "w") as f:
        f.write("\n".join(LABELS) + "\n")
    pad = peft_model.config.pad_token_id
    width = max(map(len, ROWS))
    pids = torch.tensor([r + [pad] * (width - len(r)) for r in ROWS])
    pmask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in ROWS])
    with torch.no_grad():
        probs = torch.sigmoid(peft_model(input_ids=pids, attention_mask=pmask).logits)
    with open(out + ".reference.json", "w") as f:
        json.dump({"input_ids": ROWS, "pad_token_id": pad, "probs": probs.tolist()}, f, indent=1)


if __name__ == "__main__":
    torch.set_num_threads(1)
    # glm: head_dim 8 (= hidden / heads, but written out), rotary on the first 4 channels.
    make("tiny-glm", GlmModel, GlmForSequenceClassification,
         GlmConfig(**COMMON, head_dim=8, rope_theta=10000.0), seed=10)
    # glm4: head_dim 16 (≠ hidden / heads), rotary on the first 8 channels.
    make("tiny-glm4", Glm4Model, Glm4ForSequenceClassification,
         Glm4Config(**COMMON, head_dim=16, rope_theta=10000.0), seed=11)
    print("written")
