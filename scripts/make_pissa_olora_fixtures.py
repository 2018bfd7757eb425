#!/usr/bin/env python3
"""Reference fixtures for PiSSA and OLoRA initialisation (PEFT's `init_lora_weights`
"pissa", "pissa_niter_K", "olora") on one linear, made with PyTorch + PEFT, and PEFT's
conversion of such an adapter to plain LoRA (`save_pretrained(...,
path_initial_model_for_weight_conversion=...)`).

Writes under tests/fixtures/:
  pissa_olora.safetensors  per weight: <weight>.weight [out,in] (the base before); per
                           case: lora_A [r,in], lora_B [out,r], residual [out,in] (the base
                           after PEFT's init; not kept for the MiniLM weight, where it is
                           W - s B A by PEFT's formula);
                           for conversion cases also converted_A [2r,in], converted_B
                           [out,2r] (what PEFT saves after A <- 1.1 A, B <- 0.9 B)
  pissa_olora.json         the cases: init, r, lora_alpha, use_rslora, scaling, shape, the
                           converted adapter's r and lora_alpha

Weights: synthetic ones with a well separated spectrum (U diag(s) V^T, s_k = 8 * 0.7^k, so
singular vectors are well conditioned and comparable across LAPACK builds up to sign), in
both orientations (out < in, out > in), and the real MiniLM layer-0 query weight.

Run (outside CI, in a venv with torch, peft, safetensors; models/ fetched):
  python scripts/make_pissa_olora_fixtures.py
"""
import copy
import json
import os
import tempfile

import peft
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file, save_file

ROOT = os.path.join(os.path.dirname(__file__), "..")
OUT = os.path.join(ROOT, "tests", "fixtures")
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2", "model.safetensors")


class One(torch.nn.Module):
    def __init__(self, weight):
        super().__init__()
        out_f, in_f = weight.shape
        self.proj = torch.nn.Linear(in_f, out_f, bias=False)
        with torch.no_grad():
            self.proj.weight.copy_(weight)

    def forward(self, x):
        return self.proj(x)


def spectrum_weight(out_f, in_f, gen):
    k = min(out_f, in_f)
    u, _ = torch.linalg.qr(torch.randn(out_f, k, generator=gen, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(in_f, k, generator=gen, dtype=torch.float64))
    s = 8.0 * 0.7 ** torch.arange(k, dtype=torch.float64)
    return (u @ torch.diag(s) @ v.T).float()


def main():
    gen = torch.Generator().manual_seed(0)
    weights = {
        "wide": spectrum_weight(24, 40, gen),
        "tall": spectrum_weight(40, 24, gen),
    }
    if os.path.exists(MINILM):
        st = load_file(MINILM)
        key = next(k for k in st if k.endswith("layer.0.attention.self.query.weight"))
        weights["minilm_query"] = st[key].float()
    else:
        raise SystemExit(f"{MINILM} missing: run scripts/fetch-models.sh first")

    tensors, cases = {}, []
    i = 0
    for wname, weight in weights.items():
        for init in ("pissa", "olora", "pissa_niter_4"):
            for r, alpha, rslora in ((4, 8.0, False), (8, 16.0, True)):
                torch.manual_seed(i)
                cfg = LoraConfig(r=r, lora_alpha=alpha, use_rslora=rslora,
                                 target_modules=["proj"], init_lora_weights=init)
                model = get_peft_model(One(weight), cfg)
                layer = model.base_model.model.proj
                key = f"case{i}"
                tensors[f"{wname}.weight"] = weight.clone()
                tensors[f"{key}.lora_A"] = layer.lora_A["default"].weight.detach().clone()
                tensors[f"{key}.lora_B"] = layer.lora_B["default"].weight.detach().clone()
                if wname != "minilm_query":  # 590 kB each: the test recomputes it there
                    tensors[f"{key}.residual"] = layer.base_layer.weight.detach().clone()
                case = {"name": key, "weight": wname, "init": init, "r": r,
                        "lora_alpha": alpha, "use_rslora": rslora,
                        "scaling": layer.scaling["default"],
                        "out_features": weight.shape[0], "in_features": weight.shape[1]}
                if wname != "minilm_query":
                    case.update(convert(model, layer, tensors, key))
                cases.append(case)
                i += 1
    save_file({k: v.contiguous() for k, v in tensors.items()},
              os.path.join(OUT, "pissa_olora.safetensors"))
    with open(os.path.join(OUT, "pissa_olora.json"), "w") as f:
        json.dump({"peft_version": peft.__version__, "torch_version": torch.__version__,
                   "cases": cases}, f, indent=1)


def convert(model, layer, tensors, key):
    """PEFT's documented conversion: save the initial adapter (with init_lora_weights
    switched to True), "train" (A <- 1.1 A, B <- 0.9 B), save with
    path_initial_model_for_weight_conversion."""
    with tempfile.TemporaryDirectory() as tmp:
        init_dir = os.path.join(tmp, "initial")
        # As PEFT's PiSSA example: loading the initial adapter must not run the init again.
        model.peft_config["default"].init_lora_weights = True
        model.save_pretrained(init_dir)
        with torch.no_grad():
            layer.lora_A["default"].weight.mul_(1.1)
            layer.lora_B["default"].weight.mul_(0.9)
        out_dir = os.path.join(tmp, "converted")
        model.save_pretrained(out_dir, path_initial_model_for_weight_conversion=init_dir)
        st = load_file(os.path.join(out_dir, "adapter_model.safetensors"))
        with open(os.path.join(out_dir, "adapter_config.json")) as f:
            saved = json.load(f)
    a = next(v for k, v in st.items() if k.endswith("lora_A.weight"))
    b = next(v for k, v in st.items() if k.endswith("lora_B.weight"))
    tensors[f"{key}.converted_A"] = a
    tensors[f"{key}.converted_B"] = b
    return {"converted_r": saved["r"], "converted_lora_alpha": saved["lora_alpha"],
            "converted_init_lora_weights": saved["init_lora_weights"]}


if __name__ == "__main__":
    main()
