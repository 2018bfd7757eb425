#!/usr/bin/env python3
"""Reference fixtures for the LoRA core, made with PyTorch + PEFT.

Writes under tests/fixtures/:
  lora_linear.safetensors  per case: weight [out,in], bias, lora_A [r,in], lora_B [out,r],
                           x [2,5,in], y (PEFT forward), y_base (base only), merged_weight
                           (PEFT merge_and_unload)
  lora_linear.json         the cases: r, lora_alpha, use_rslora, bias, scaling (PEFT's)
  peft_adapter_config.json an adapter_config.json written by PEFT's save_pretrained

Run (outside CI, in a venv with torch, peft, safetensors):
  python scripts/make_lora_fixtures.py
"""
import json
import os
import shutil
import tempfile

import peft
import torch
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
IN_F, OUT_F = 32, 24


class One(torch.nn.Module):
    def __init__(self, bias):
        super().__init__()
        self.proj = torch.nn.Linear(IN_F, OUT_F, bias=bias)

    def forward(self, x):
        return self.proj(x)


def linear_cases():
    tensors, cases = {}, []
    torch.manual_seed(0)
    i = 0
    for r in (1, 8, 64):
        for rslora in (False, True):
            for bias in (False, True):
                alpha = 2.0 * r if not rslora else 16.0
                base = One(bias)
                cfg = LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora,
                                 target_modules=["proj"], init_lora_weights=False)
                model = get_peft_model(base, cfg).eval()
                layer = model.base_model.model.proj
                x = torch.randn(2, 5, IN_F)
                with torch.no_grad():
                    y = model(x)
                    with model.disable_adapter():
                        y_base = model(x)
                key = f"case{i}"
                tensors[f"{key}.weight"] = layer.base_layer.weight.detach().clone()
                if bias:
                    tensors[f"{key}.bias"] = layer.base_layer.bias.detach().clone()
                tensors[f"{key}.lora_A"] = layer.lora_A["default"].weight.detach().clone()
                tensors[f"{key}.lora_B"] = layer.lora_B["default"].weight.detach().clone()
                tensors[f"{key}.x"] = x
                tensors[f"{key}.y"] = y
                tensors[f"{key}.y_base"] = y_base
                merged = model.merge_and_unload()
                tensors[f"{key}.merged_weight"] = merged.proj.weight.detach().clone()
                cases.append({"name": key, "r": r, "lora_alpha": alpha, "use_rslora": rslora,
                              "bias": bias, "scaling": layer.scaling["default"]})
                i += 1
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(OUT, "lora_linear.safetensors"))
    with open(os.path.join(OUT, "lora_linear.json"), "w") as f:
        json.dump({"peft_version": peft.__version__, "torch_version": torch.__version__,
                   "in_features": IN_F, "out_features": OUT_F, "cases": cases}, f, indent=1)


class Attn(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.query = torch.nn.Linear(8, 8)
        self.key = torch.nn.Linear(8, 8)
        self.value = torch.nn.Linear(8, 8)


class Layer(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = torch.nn.Module()
        self.attention.self = Attn()


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder = torch.nn.Module()
        self.encoder.layer = torch.nn.ModuleList([Layer() for _ in range(3)])
        self.classifier = torch.nn.Linear(8, 3)


def adapter_config():
    cfg = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["query", "value"],
                     exclude_modules=["encoder.layer.2.attention.self.value"],
                     layers_to_transform=[0, 2], layers_pattern="layer", use_rslora=True,
                     rank_pattern={"query": 4}, alpha_pattern={"value": 32},
                     modules_to_save=["classifier"], init_lora_weights="gaussian")
    model = get_peft_model(Tiny(), cfg)
    tmp = tempfile.mkdtemp()
    model.save_pretrained(tmp)
    shutil.copy(os.path.join(tmp, "adapter_config.json"),
                os.path.join(OUT, "peft_adapter_config.json"))
    # The modules PEFT adapted, for the matching test.
    adapted = sorted(n[len("base_model.model."):] for n, m in model.named_modules()
                     if hasattr(m, "lora_A") and n.startswith("base_model.model."))
    with open(os.path.join(OUT, "peft_adapter_config.targets.json"), "w") as f:
        json.dump({"adapted": adapted,
                   "ranks": {n: model.base_model.model.get_submodule(n).r["default"] for n in adapted},
                   "scalings": {n: model.base_model.model.get_submodule(n).scaling["default"]
                                for n in adapted}}, f, indent=1)
    shutil.rmtree(tmp)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    linear_cases()
    adapter_config()
    print("fixtures written to", os.path.abspath(OUT))
