#!/usr/bin/env python3
"""Reference fixtures for DoRA (PEFT's `use_dora`) on one linear, made with PyTorch + PEFT.

Writes under tests/fixtures/:
  dora_linear.safetensors  per case: weight [out,in], bias, lora_A [r,in], lora_B [out,r],
                           magnitude_init (PEFT's init from W, A, B), magnitude (perturbed, so
                           m != ||W + s BA|| and the rescaling shows), x [2,5,in], y (eval
                           forward), y_dropout_path (the training forward through PEFT's
                           dropout branch with a rate-0 dropout: the same values by another
                           formula), gy (an output gradient) and grad_A, grad_B,
                           grad_magnitude (of sum(y * gy)), merged_weight (merge_and_unload)
  dora_linear.json         the cases: r, lora_alpha, use_rslora, bias, scaling

Run (outside CI, in a venv with torch, peft, safetensors):
  python scripts/make_dora_fixtures.py
"""
import json
import os

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


def main():
    tensors, cases = {}, []
    torch.manual_seed(0)
    i = 0
    for r in (2, 8):
        for rslora in (False, True):
            for bias in (False, True):
                alpha = 2.0 * r if not rslora else 16.0
                cfg = LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora, use_dora=True,
                                 target_modules=["proj"], init_lora_weights=False)
                model = get_peft_model(One(bias), cfg)
                layer = model.base_model.model.proj
                key = f"case{i}"
                mag = layer.lora_magnitude_vector["default"].weight
                tensors[f"{key}.magnitude_init"] = mag.detach().clone()
                with torch.no_grad():
                    mag.mul_(torch.empty_like(mag).uniform_(0.5, 1.5))
                x = torch.randn(2, 5, IN_F)
                gy = torch.randn(2, 5, OUT_F)
                model.eval()
                with torch.no_grad():
                    y = model(x)
                # Training mode through PEFT's dropout branch (a module that is not
                # nn.Identity), at rate 0 so the values are comparable.
                model.train()
                layer.lora_dropout["default"] = torch.nn.Dropout(0.0)
                y_dropout = model(x)
                # Gradients: the no-dropout branch, as an adapter without dropout trains.
                layer.lora_dropout["default"] = torch.nn.Identity()
                y_train = model(x)
                (y_train * gy).sum().backward()
                tensors[f"{key}.weight"] = layer.base_layer.weight.detach().clone()
                if bias:
                    tensors[f"{key}.bias"] = layer.base_layer.bias.detach().clone()
                tensors[f"{key}.lora_A"] = layer.lora_A["default"].weight.detach().clone()
                tensors[f"{key}.lora_B"] = layer.lora_B["default"].weight.detach().clone()
                tensors[f"{key}.magnitude"] = mag.detach().clone()
                tensors[f"{key}.x"] = x
                tensors[f"{key}.y"] = y
                tensors[f"{key}.y_dropout_path"] = y_dropout.detach()
                tensors[f"{key}.gy"] = gy
                tensors[f"{key}.grad_A"] = layer.lora_A["default"].weight.grad.clone()
                tensors[f"{key}.grad_B"] = layer.lora_B["default"].weight.grad.clone()
                tensors[f"{key}.grad_magnitude"] = mag.grad.clone()
                with torch.no_grad():
                    merged = model.merge_and_unload()
                tensors[f"{key}.merged_weight"] = merged.proj.weight.detach().clone()
                cases.append({"name": key, "r": r, "lora_alpha": alpha, "use_rslora": rslora,
                              "bias": bias, "scaling": layer.scaling["default"]})
                i += 1
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(OUT, "dora_linear.safetensors"))
    with open(os.path.join(OUT, "dora_linear.json"), "w") as f:
        json.dump({"peft_version": peft.__version__, "torch_version": torch.__version__,
                   "in_features": IN_F, "out_features": OUT_F, "cases": cases}, f, indent=1)


if __name__ == "__main__":
    main()
